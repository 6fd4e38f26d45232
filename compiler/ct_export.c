/* Compiled model -> compressed-tensors pack-quantized directory (see
 * ct_export.h). */
#include "ct_export.h"
#include "artifact_model.h"
#include "atomic_file.h"
#include "dequant.h"
#include "ggml_quant.h"
#include "gguf_hf_tokenizer.h"
#include "dense_weight.h"
#include "limits.h"
#include "quant.h"
#include "safetensors_write.h"
#include "runtime/artifact.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SHARD ((size_t)1 << 32)

typedef enum kind {
    K_TENSOR, /* a full-precision tensor, as stored (or F32 when it is not F32/F16/BF16) */
    K_PACKED, /* weight_packed */
    K_SCALE,  /* weight_scale */
    K_ZERO,   /* weight_zero_point */
    K_SHAPE,  /* weight_shape */
    K_DENSE,  /* fallback: the weight quantc evaluates, dense F32 */
} kind;

typedef struct item {
    qc_stw_entry e;
    kind k;
    const qc_tensor *t;   /* K_TENSOR, K_DENSE of a block-typed weight */
    const qc_quant_state *q;
    int shard;
} item;

/* Why the fallback wrote layers dense: the first such layer and a count. */
typedef struct reason {
    char why[256], first[160];
    int n;
} reason;

/* One quantization scheme (compressed-tensors config group). */
typedef struct scheme {
    int bits, group, symmetric, act_order; /* group 0 = per channel */
    json_t *targets;                       /* module names */
} scheme;

typedef struct exporter {
    const qc_model *m;
    const qc_ct_export_opts *o;
    qc_ct_export_stats *st;
    item *items;
    int n, cap;
    scheme schemes[16];
    int n_schemes;
    json_t *ignore; /* linears written unquantized */
    qcrt_artifact *a;
    json_t *manifest;
    reason reasons[8];
    int n_reasons;
    int head_quantized;
    int f32_model; /* the full-precision tensors are (written as) F32 */
    double packed_bits, packed_params;
} exporter;

static void note(qc_ct_export_stats *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(qc_ct_export_stats *st, const char *fmt, ...) {
    size_t n = strlen(st->notes);
    if (n + 3 >= sizeof st->notes) return;
    if (n) n += (size_t)snprintf(st->notes + n, sizeof st->notes - n, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->notes + n, sizeof st->notes - n, fmt, ap);
    va_end(ap);
}

static int add_item(exporter *x, const char *name, const char *suffix, const char *dtype,
                    int n_dims, int64_t d0, int64_t d1, kind k, qc_err *err) {
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 256;
        item *p = realloc(x->items, (size_t)cap * sizeof *p);
        if (!p) return qc_err_set(err, "out of memory");
        x->items = p;
        x->cap = cap;
    }
    item *it = &x->items[x->n];
    memset(it, 0, sizeof *it);
    size_t len = strlen(name) + strlen(suffix) + 1;
    size_t nbytes;
    if (!(it->e.name = malloc(len))) return qc_err_set(err, "out of memory");
    snprintf(it->e.name, len, "%s%s", name, suffix);
    if (qc_mul_size((size_t)d0, (size_t)(n_dims > 1 ? d1 : 1), &nbytes) ||
        qc_mul_size(nbytes, qc_stw_dtype_size(dtype), &nbytes)) {
        qc_err_set(err, "%s: %lld x %lld too large", it->e.name, (long long)d0, (long long)d1);
        free(it->e.name);
        return -1;
    }
    it->e.dtype = dtype;
    it->e.n_dims = n_dims;
    it->e.shape[0] = d0;
    it->e.shape[1] = d1;
    it->e.nbytes = nbytes;
    it->k = k;
    x->n++;
    return 0;
}

static int is_block_type(qc_dtype t) {
    return qc_ggml_type_shape(t, NULL, NULL, NULL, NULL) == 0;
}

/* ---- what pack-quantized can express ---- */

static int groups_contiguous(const qc_quant_state *q) {
    if (q->n_groups == 1) return 1;
    for (int64_t c = 0; c < q->cols; c++)
        if (q->g_idx[c] != c / q->fmt.group_size) return 0;
    return 1;
}

/* What in weight `name` (state q, or block-typed tensor t) the format
 * cannot express, or NULL. */
static const char *inexpressible(const qc_model *m, const char *name, const qc_quant_state *q,
                                 const qc_tensor *t, char *buf, size_t n) {
    if (qc_model_online_hadamard(m, name) > 0)
        return "an online Hadamard on its input (rotate's online transform; compile with rotate "
               "without online:)";
    if (t) {
        snprintf(buf, n, "GGUF block type %s (quantize format gguf:*; export it as GGUF)",
                 qc_dtype_name(t->dtype));
        return buf;
    }
    if (q->nnz) return "sparse outliers (outliers pass)";
    if (q->rank) return "a low-rank correction (lowrank pass)";
    if (q->n_groups > 1 && q->cols % q->fmt.group_size) {
        snprintf(buf, n, "groups of %d that do not divide its %lld input columns",
                 q->fmt.group_size, (long long)q->cols);
        return buf;
    }
    if (!groups_contiguous(q))
        return "act-order groups that are not contiguous column ranges (g_idx; compressed-tensors "
               "0.20 removed actorder 'group': compile with static_groups: true, written as "
               "actorder 'weight')";
    for (int64_t i = 0; i < q->rows * q->n_groups; i++)
        if (q->zeros[i] != floorf(q->zeros[i])) return "a zero point that is not an integer";
    return NULL;
}

/* Whether the compile quantized module with act-order (its manifest entry
 * says; a layer whose groups stayed contiguous keeps no permutation). */
static int act_order(const exporter *x, const char *module) {
    json_t *layers = json_object_get(x->manifest, "layers"), *l;
    size_t i;
    json_array_foreach(layers, i, l) {
        const char *n = json_string_value(json_object_get(l, "name"));
        if (n && !strcmp(n, module)) return json_is_true(json_object_get(l, "act_order"));
    }
    return 0;
}

static int scheme_of(exporter *x, const qc_quant_state *q, const char *module, qc_err *err) {
    int group = q->n_groups == 1 ? 0 : q->fmt.group_size;
    int act = act_order(x, module);
    for (int i = 0; i < x->n_schemes; i++) {
        scheme *s = &x->schemes[i];
        if (s->bits == q->fmt.bits && s->group == group && s->symmetric == q->fmt.symmetric &&
            s->act_order == act)
            return json_array_append_new(s->targets, json_string(module)) ? -1 : 0;
    }
    if (x->n_schemes == (int)(sizeof x->schemes / sizeof *x->schemes))
        return qc_err_set(err, "%s: more than %d distinct quantization formats", module,
                          x->n_schemes);
    scheme *s = &x->schemes[x->n_schemes++];
    *s = (scheme){q->fmt.bits, group, q->fmt.symmetric, act, json_array()};
    return !s->targets || json_array_append_new(s->targets, json_string(module)) ? -1 : 0;
}

static int all_f16(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (qc_f16_to_f32(qc_f32_to_f16(v[i])) != v[i]) return 0;
    return 1;
}

/* The entries of quantized weight `name` (module = name less ".weight"). */
static int plan_packed(exporter *x, const char *module, const qc_quant_state *q, qc_err *err) {
    int b = q->fmt.bits;
    int64_t words = (q->cols * b + 31) / 32, zrows = (q->rows * b + 31) / 32;
    /* F32 scales in an F32 model: the loader dequantizes in the scale's
     * dtype, so an F32 model then holds exactly quantc's weights. */
    const char *sdt =
        x->f32_model || !all_f16(q->scales, q->rows * q->n_groups) ? "F32" : "F16";
    int first = x->n;
    if (add_item(x, module, ".weight_packed", "I32", 2, q->rows, words, K_PACKED, err) ||
        add_item(x, module, ".weight_scale", sdt, 2, q->rows, q->n_groups, K_SCALE, err) ||
        (!q->fmt.symmetric &&
         add_item(x, module, ".weight_zero_point", "I32", 2, zrows, q->n_groups, K_ZERO, err)) ||
        add_item(x, module, ".weight_shape", "I64", 1, 2, 0, K_SHAPE, err))
        return -1;
    double bytes = 0;
    for (int i = first; i < x->n; i++) {
        x->items[i].q = q;
        if (x->items[i].k != K_SHAPE) bytes += (double)x->items[i].e.nbytes;
    }
    x->packed_bits += 8 * bytes;
    x->packed_params += (double)(q->rows * q->cols);
    x->st->packed++;
    return scheme_of(x, q, module, err);
}

/* Tallies the fallback's reasons; notes say each once with a count. */
static void count_reason(exporter *x, const char *module, const char *why) {
    for (int i = 0; i < x->n_reasons; i++)
        if (!strcmp(x->reasons[i].why, why)) {
            x->reasons[i].n++;
            return;
        }
    if (x->n_reasons == (int)(sizeof x->reasons / sizeof *x->reasons)) return;
    reason *r = &x->reasons[x->n_reasons++];
    snprintf(r->why, sizeof r->why, "%s", why);
    snprintf(r->first, sizeof r->first, "%s", module);
    r->n = 1;
}

static int plan_dense(exporter *x, const char *name, const char *module, const qc_quant_state *q,
                      const qc_tensor *t, const char *why, qc_err *err) {
    int64_t rows = q ? q->rows : t->shape[0], cols = q ? q->cols : t->shape[1];
    if (add_item(x, name, "", "F32", 2, rows, cols, K_DENSE, err)) return -1;
    item *it = &x->items[x->n - 1];
    it->q = q;
    it->t = t;
    x->st->dense += why != NULL;
    x->st->dense_bytes += (double)it->e.nbytes;
    if (why) count_reason(x, module, why);
    return json_array_append_new(x->ignore, json_string(module)) ? -1 : 0;
}

/* A linear weight name: model.layers.N.{self_attn,mlp}.X_proj.weight or lm_head.weight. */
static int is_linear(const char *name) {
    static const char *const proj[] = {"q_proj.weight", "k_proj.weight",    "v_proj.weight",
                                       "o_proj.weight", "gate_proj.weight", "up_proj.weight",
                                       "down_proj.weight"};
    if (!strcmp(name, "lm_head.weight")) return 1;
    if (strncmp(name, "model.layers.", 13)) return 0;
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof proj / sizeof *proj; i++) {
        size_t k = strlen(proj[i]);
        if (n > k && !strcmp(name + n - k, proj[i]) && name[n - k - 1] == '.') return 1;
    }
    return 0;
}

static int plan_weight(exporter *x, const char *name, const qc_quant_state *q, const qc_tensor *t,
                       qc_err *err) {
    char module[256], buf[256];
    size_t n = strlen(name);
    if (n < 8 || n - 7 >= sizeof module) return qc_err_set(err, "%s: bad weight name", name);
    memcpy(module, name, n - 7);
    module[n - 7] = 0;
    const char *why = inexpressible(x->m, name, q, t, buf, sizeof buf);
    if (!strcmp(name, "lm_head.weight")) x->head_quantized = 1;
    if (!why) return plan_packed(x, module, q, err);
    if (x->o->fallback_dequantize) return plan_dense(x, name, module, q, t, why, err);
    return qc_err_set(err,
                      "%s: %s: %s cannot be expressed in compressed-tensors pack-quantized "
                      "(fallback: dequantize, or --fallback dequantize, writes it dense)",
                      x->m->path, module, why);
}

/* Is block-typed linear weight `name` quantc's compile (quantize format
 * gguf:*), not a GGUF source's weight the recipe left alone (the compile
 * report says method "none")? Without a report: assume compiled. */
static int compiled_block(const exporter *x, const char *name) {
    json_t *cal = json_object_get(json_object_get(x->manifest, "metrics"), "calibration");
    json_t *layers = json_object_get(cal, "layers"), *l;
    if (!json_is_array(layers)) return 1;
    size_t i, n = strlen(name) - 7; /* less ".weight" */
    json_array_foreach(layers, i, l) {
        const char *ln = json_string_value(json_object_get(l, "name"));
        const char *method = json_string_value(json_object_get(l, "method"));
        if (ln && strlen(ln) == n && !strncmp(ln, name, n)) return !method || strcmp(method, "none");
    }
    return 0;
}

static int plan(exporter *x, qc_err *err) {
    const qc_model *m = x->m;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].dtype != QC_DT_F16 && m->tensors[i].dtype != QC_DT_BF16)
            x->f32_model = 1;
    for (int i = 0; i < m->n_quant; i++)
        if (plan_weight(x, m->quant[i].name, m->quant[i].q, NULL, err)) return -1;
    for (int i = 0; i < m->n_tensors; i++) {
        const qc_tensor *t = &m->tensors[i];
        if (qc_model_quant(m, t->name)) continue;
        if (is_block_type(t->dtype) && t->n_dims == 2 && is_linear(t->name) &&
            compiled_block(x, t->name)) {
            if (plan_weight(x, t->name, NULL, t, err)) return -1;
            continue;
        }
        if (is_linear(t->name)) {
            char module[256];
            snprintf(module, sizeof module, "%.*s", (int)strlen(t->name) - 7, t->name);
            /* A full-precision weight with an online transform: folding T in is exact. */
            if (qc_model_online_hadamard(m, t->name) > 0) {
                if (plan_dense(x, t->name, module, NULL, t, NULL, err)) return -1;
                continue;
            }
            if (json_array_append_new(x->ignore, json_string(module))) return -1;
        }
        const char *dt = t->dtype == QC_DT_F16    ? "F16"
                         : t->dtype == QC_DT_BF16 ? "BF16"
                                                  : "F32";
        int raw = t->dtype == QC_DT_F32 || t->dtype == QC_DT_F16 || t->dtype == QC_DT_BF16;
        if (add_item(x, t->name, "", raw && !t->unpermute_heads ? dt : "F32", t->n_dims,
                     t->shape[0], t->shape[1], K_TENSOR, err))
            return -1;
        x->items[x->n - 1].t = t;
    }
    if (!x->head_quantized && !qc_model_find(m, "lm_head.weight") && m->cfg.tied_embeddings &&
        json_array_append_new(x->ignore, json_string("lm_head")))
        return -1;
    return 0;
}

/* ---- tensor bytes ---- */

/* Row-wise dense bit strings of b-bit values in 32-bit little-endian words:
 * value c of a row at bits [c·b, c·b + b) (compressed-tensors pack_to_int32,
 * which is quantc's "rowmajor-lsb" row padded to whole words). */
static void pack_rows(const uint8_t *v, int64_t rows, int64_t cols, int b, uint8_t *out) {
    size_t rb = (size_t)((cols * b + 31) / 32) * 4;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *o = out + (size_t)r * rb;
        memset(o, 0, rb);
        qc_artifact_pack_codes(v + r * cols, 1, cols, b, o);
    }
}

static int fill_zero(const qc_quant_state *q, uint8_t *buf, qc_err *err) {
    int b = q->fmt.bits;
    int64_t ng = q->n_groups, words = (q->rows * b + 31) / 32;
    uint8_t *col = qc_malloc((size_t)q->rows, err), *packed = qc_malloc((size_t)words * 4, err);
    if (!col || !packed) {
        free(col);
        free(packed);
        return -1;
    }
    /* Column g's zeros, packed along the rows (packed_dim 0). */
    for (int64_t g = 0; g < ng; g++) {
        for (int64_t r = 0; r < q->rows; r++)
            col[r] = (uint8_t)q->zeros[r * ng + g];
        pack_rows(col, 1, q->rows, b, packed);
        for (int64_t w = 0; w < words; w++)
            memcpy(buf + (size_t)(w * ng + g) * 4, packed + w * 4, 4);
    }
    free(col);
    free(packed);
    return 0;
}

static int fill(void *ud, int i, const qc_stw_entry *e, uint8_t *buf, qc_err *err) {
    const exporter *x = ud;
    const item *it = &x->items[i];
    const qc_quant_state *q = it->q;
    switch (it->k) {
    case K_TENSOR:
        if (!strcmp(e->dtype, qc_dtype_name(it->t->dtype)) && !it->t->unpermute_heads) {
            memcpy(buf, it->t->data, e->nbytes);
            return 0;
        }
        return qc_tensor_to_f32(it->t, (float *)buf, err);
    case K_PACKED:
        pack_rows(q->codes, q->rows, q->cols, q->fmt.bits, buf);
        return 0;
    case K_SCALE:
        for (int64_t j = 0; j < q->rows * q->n_groups; j++) {
            if (!strcmp(e->dtype, "F16")) {
                uint16_t h = qc_f32_to_f16(q->scales[j]);
                memcpy(buf + 2 * j, &h, 2);
            } else {
                memcpy(buf + 4 * j, &q->scales[j], 4);
            }
        }
        return 0;
    case K_ZERO:
        return fill_zero(q, buf, err);
    case K_SHAPE: {
        int64_t s[2] = {q->rows, q->cols};
        memcpy(buf, s, sizeof s);
        return 0;
    }
    case K_DENSE:
        return qc_dense_weight(x->m, it->e.name, it->e.shape[0], it->e.shape[1], (float *)buf,
                               err);
    }
    return qc_err_set(err, "unknown entry kind");
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const item *)a)->e.name, ((const item *)b)->e.name);
}

/* ---- config.json ---- */

/* f as the shortest decimal that reads back as the same float. */
static json_t *json_f32(float f) {
    char s[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)f);
        if ((float)strtod(s, NULL) == f) break;
    }
    return json_real(strtod(s, NULL));
}

static json_t *quantization_config(const exporter *x) {
    json_t *groups = json_object();
    for (int i = 0; groups && i < x->n_schemes; i++) {
        const scheme *s = &x->schemes[i];
        json_t *w = json_pack("{s:i, s:s, s:b, s:s, s:o, s:b}", "num_bits", s->bits, "type", "int",
                              "symmetric", s->symmetric, "strategy", s->group ? "group" : "channel",
                              "group_size", s->group ? json_integer(s->group) : json_null(),
                              "dynamic", 0);
        if (w && s->act_order) json_object_set_new(w, "actorder", json_string("weight"));
        /* One format: every Linear not ignored; several: each by name. */
        json_t *targets = x->n_schemes == 1 ? json_pack("[s]", "Linear") : json_incref(s->targets);
        char key[32];
        snprintf(key, sizeof key, "group_%d", i);
        json_object_set_new(groups, key,
                            json_pack("{s:o, s:o, s:n, s:n, s:s}", "targets", targets, "weights", w,
                                      "input_activations", "output_activations", "format",
                                      "pack-quantized"));
    }
    return json_pack("{s:s, s:s, s:s, s:o, s:O, s:n, s:n}", "quant_method", "compressed-tensors",
                     "format", "pack-quantized", "quantization_status", "compressed",
                     "config_groups", groups, "ignore", x->ignore, "kv_cache_scheme",
                     "global_compression_ratio");
}

static const char *torch_dtype(const exporter *x) {
    const char *d = NULL;
    for (int i = 0; i < x->n; i++) {
        if (x->items[i].k != K_TENSOR && x->items[i].k != K_DENSE) continue;
        const char *t = x->items[i].e.dtype;
        if (d && strcmp(d, t)) return "float32";
        d = t;
    }
    return !d || !strcmp(d, "F32") ? "float32" : !strcmp(d, "F16") ? "float16" : "bfloat16";
}

static json_t *model_config(const exporter *x) {
    const qc_config *c = &x->m->cfg;
    static const char *const types[] = {"llama", "mistral", "qwen2", "qwen3"};
    static const char *const archs[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                        "Qwen2ForCausalLM", "Qwen3ForCausalLM"};
    int tied = c->tied_embeddings && !x->head_quantized;
    json_t *j = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:b, s:s, s:s, s:b}",
        "architectures", archs[c->arch], "model_type", types[c->arch], "hidden_size", c->dim,
        "intermediate_size", c->ffn_dim, "num_hidden_layers", c->n_layers, "num_attention_heads",
        c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_dim, "vocab_size",
        c->vocab, "max_position_embeddings", c->max_pos, "rms_norm_eps", json_f32(c->norm_eps),
        "rope_theta", json_f32(c->rope_theta), "tie_word_embeddings", tied, "hidden_act", "silu",
        "torch_dtype", torch_dtype(x), "use_cache", 1);
    if (!j) return NULL;
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    if (c->arch == QC_ARCH_LLAMA || c->arch == QC_ARCH_QWEN3)
        json_object_set_new(j, "attention_bias", json_false());
    if (c->arch == QC_ARCH_LLAMA) json_object_set_new(j, "mlp_bias", json_false());
    if (c->arch == QC_ARCH_QWEN2 || c->arch == QC_ARCH_QWEN3)
        json_object_set_new(j, "use_sliding_window", json_false());
    if (c->arch == QC_ARCH_MISTRAL) json_object_set_new(j, "sliding_window", json_null());
    json_t *rs = json_null();
    if (c->rope_scaling == QC_ROPE_LINEAR)
        rs = json_pack("{s:s, s:o}", "rope_type", "linear", "factor", json_f32(c->rope_factor));
    else if (c->rope_scaling == QC_ROPE_LLAMA3)
        rs = json_pack("{s:s, s:o, s:o, s:o, s:i}", "rope_type", "llama3", "factor",
                       json_f32(c->rope_factor), "low_freq_factor",
                       json_f32(c->rope_low_freq_factor), "high_freq_factor",
                       json_f32(c->rope_high_freq_factor), "original_max_position_embeddings",
                       c->rope_orig_max_pos);
    json_object_set_new(j, "rope_scaling", rs);
    if (x->n_schemes) json_object_set_new(j, "quantization_config", quantization_config(x));
    return j;
}

/* ---- the directory ---- */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int write_bytes(const char *dir, const char *name, const void *data, size_t n,
                       qc_err *err) {
    char *path = join(dir, name);
    if (!path) return qc_err_set(err, "out of memory");
    qc_atomic_file f;
    int rc = qc_atomic_open(&f, path, err);
    if (rc == 0 && qc_atomic_write(&f, data, n, err)) {
        qc_atomic_abort(&f);
        rc = -1;
    } else if (rc == 0) {
        rc = qc_atomic_commit(&f, err);
    }
    free(path);
    return rc;
}

static int write_json(const char *dir, const char *name, json_t *j, qc_err *err) {
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
    if (!s) return qc_err_set(err, "%s: out of memory", name);
    size_t n = strlen(s);
    int rc = write_bytes(dir, name, s, n, err);
    free(s);
    return rc;
}

static int write_shards(exporter *x, const char *dir, qc_err *err) {
    size_t max = x->o->max_shard_bytes ? x->o->max_shard_bytes : DEFAULT_SHARD, cur = 0;
    int shards = 0;
    for (int i = 0; i < x->n; i++) {
        if (i == 0 || (cur + x->items[i].e.nbytes > max && cur > 0)) {
            shards++;
            cur = 0;
        }
        x->items[i].shard = shards - 1;
        cur += x->items[i].e.nbytes;
        x->st->bytes += (double)x->items[i].e.nbytes;
    }
    qc_stw_entry *e = qc_malloc((size_t)x->n * sizeof *e, err);
    json_t *map = json_object();
    if (!e || !map) {
        free(e);
        json_decref(map);
        return -1;
    }
    for (int i = 0; i < x->n; i++)
        e[i] = x->items[i].e;
    int rc = 0;
    for (int s = 0, first = 0; rc == 0 && s < shards; s++) {
        int n = 0;
        while (first + n < x->n && x->items[first + n].shard == s)
            n++;
        char name[64];
        if (shards == 1)
            snprintf(name, sizeof name, "model.safetensors");
        else
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
        char *path = join(dir, name);
        rc = path ? qc_stw_write(path, e, first, n, fill, x, err) : qc_err_set(err, "out of memory");
        free(path);
        for (int i = first; rc == 0 && i < first + n; i++)
            json_object_set_new(map, e[i].name, json_string(name));
        first += n;
    }
    free(e);
    x->st->files = shards;
    x->st->tensors = x->n;
    if (rc == 0 && shards > 1) {
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size",
                                (json_int_t)x->st->bytes, "weight_map", map);
        rc = write_json(dir, "model.safetensors.index.json", idx, err);
        json_decref(idx);
    }
    json_decref(map);
    return rc;
}

/* A GGUF source's tokenizer (the artifact's tokenizer.gguf section) as
 * tokenizer.json + tokenizer_config.json where gguf_hf_tokenizer.h converts
 * it, and generation_config.json with its BOS/EOS ids. */
static int write_gguf_tokenizer(exporter *x, const qcrt_section *s, const char *dir, qc_err *err) {
    qc_ct_export_stats *st = x->st;
    void *owned = NULL;
    const uint8_t *d = qcrt_artifact_section_data(x->a, s, &owned, err);
    qc_gguf *g = d ? qc_gguf_parse(d, s->raw_size, "tokenizer.gguf", err) : NULL;
    json_t *tok = NULL, *cfg = NULL;
    char why[256] = "";
    int rc = g ? qc_gguf_hf_tokenizer(g, x->m->cfg.max_pos, &tok, &cfg, why, sizeof why, err) : -1;
    if (rc == 1) {
        snprintf(st->tokenizer, sizeof st->tokenizer,
                 "none written (the source is a GGUF file: %s); copy the tokenizer files of the "
                 "Hugging Face model it was made from into the directory",
                 why);
        rc = 0;
    } else if (rc == 0) {
        rc = write_json(dir, "tokenizer.json", tok, err) ||
                     write_json(dir, "tokenizer_config.json", cfg, err)
                 ? -1
                 : 0;
        snprintf(st->tokenizer, sizeof st->tokenizer,
                 "tokenizer.json and tokenizer_config.json converted from the GGUF metadata "
                 "(byte-level BPE)");
    }
    const qc_config *c = &x->m->cfg;
    json_t *gen = rc == 0 ? json_object() : NULL;
    if (gen && c->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(c->bos_id));
    if (gen && c->eos_id >= 0) json_object_set_new(gen, "eos_token_id", json_integer(c->eos_id));
    if (gen && json_object_size(gen)) {
        rc = write_json(dir, "generation_config.json", gen, err);
        if (rc == 0) note(st, "generation_config.json holds the GGUF's BOS/EOS ids");
    }
    json_decref(gen);
    json_decref(tok);
    json_decref(cfg);
    qc_gguf_free(g);
    free(owned);
    return rc;
}

/* Copies the artifact's tokenizer sections, and tokenizer/generation files
 * from the source directory recorded in its provenance when it still
 * exists. */
static int write_tokenizer(exporter *x, const char *dir, qc_err *err) {
    qc_ct_export_stats *st = x->st;
    const qcrt_artifact *a = x->a;
    int rc = 0, n_tok = 0;
    for (int i = 0; rc == 0 && i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        if (s->kind != QCRT_SEC_TOKENIZER || !strcmp(s->name, "tokenizer.gguf")) continue;
        if (strchr(s->name, '/') || s->name[0] == '.') continue;
        void *owned = NULL;
        const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, err);
        rc = d ? write_bytes(dir, s->name, d, s->raw_size, err) : -1;
        free(owned);
        n_tok++;
    }
    json_t *prov = json_object_get(x->manifest, "provenance");
    const char *src = json_string_value(json_object_get(prov, "source"));
    const char *fmt = json_string_value(json_object_get(prov, "source_format"));
    const qcrt_section *gs = qcrt_artifact_find(a, QCRT_SEC_TOKENIZER, "tokenizer.gguf");
    if (n_tok)
        snprintf(st->tokenizer, sizeof st->tokenizer,
                 "the source's tokenizer files, from the artifact");
    else if (gs && rc == 0)
        rc = write_gguf_tokenizer(x, gs, dir, err);
    else
        snprintf(st->tokenizer, sizeof st->tokenizer, "none: the artifact has none");
    static const char *const aux[] = {"generation_config.json", "special_tokens_map.json",
                                      "chat_template.jinja", "tokenizer.model", "vocab.json",
                                      "merges.txt", "added_tokens.json"};
    struct stat sb;
    int from_dir = rc == 0 && src && fmt && !strcmp(fmt, "safetensors") &&
                   stat(src, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (rc == 0 && fmt && !strcmp(fmt, "safetensors") && !from_dir)
        note(st, "generation_config.json not copied: the source directory %s is gone",
             src ? src : "?");
    char copied[512] = "";
    for (size_t i = 0; from_dir && rc == 0 && i < sizeof aux / sizeof *aux; i++) {
        char *p = join(src, aux[i]);
        if (!p) return qc_err_set(err, "out of memory");
        size_t len;
        char *data = access(p, F_OK) == 0 ? qc_read_limited(p, QC_LIMIT_JSON_BYTES, &len, err)
                                          : NULL;
        if (access(p, F_OK) == 0 && !data) rc = -1;
        if (data && (rc = write_bytes(dir, aux[i], data, len, err)) == 0)
            snprintf(copied + strlen(copied), sizeof copied - strlen(copied), "%s%s",
                     copied[0] ? ", " : "", aux[i]);
        free(data);
        free(p);
    }
    if (copied[0]) note(st, "copied from %s: %s", src, copied);
    return rc;
}

/* mkdtemp and mkstemp create 0700 / 0600: give the directory and its files
 * the modes a plain mkdir / creat would (umask applied). */
static void publish_modes(const char *dir) {
    mode_t mask = (mode_t)qc_umask();
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = join(dir, de->d_name);
        if (p) chmod(p, 0666 & ~mask);
        free(p);
    }
    if (d) closedir(d);
    chmod(dir, 0777 & ~mask);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = join(dir, de->d_name);
        if (p) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* 0 when dir does not exist or is an empty directory. */
static int check_destination(const char *dir, qc_err *err) {
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return errno == ENOENT ? 0 : qc_err_set(err, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return qc_err_set(err, "%s: exists and is not a directory (the export writes a directory)",
                          dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    int empty = 1;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    if (d) closedir(d);
    return empty ? 0
                 : qc_err_set(err, "%s: directory exists and is not empty; remove it or choose "
                                   "another output",
                              dir);
}

int qc_ct_export(const qc_model *m, const qc_ct_export_opts *o, const char *dir,
                 qc_ct_export_stats *st, qc_err *err) {
    memset(st, 0, sizeof *st);
    if (strcmp(m->format, "artifact"))
        return qc_err_set(err,
                          "%s: compressed-tensors export writes a compiled model: compile this "
                          "%s model first (quantc compile MODEL -r RECIPE -o OUT.qc)",
                          m->path, m->format);
    if (check_destination(dir, err)) return -1;
    exporter x = {.m = m, .o = o, .st = st, .ignore = json_array()};
    int rc = x.ignore ? 0 : qc_err_set(err, "out of memory");
    const qcrt_section *ms = NULL;
    if (rc == 0 && (x.a = qcrt_artifact_open(m->path, err)) &&
        (ms = qcrt_artifact_find(x.a, QCRT_SEC_MANIFEST, QC_ARTIFACT_MANIFEST))) {
        void *owned = NULL;
        const uint8_t *md = qcrt_artifact_section_data(x.a, ms, &owned, err);
        x.manifest = md ? json_loadb((const char *)md, ms->raw_size, 0, NULL) : NULL;
        free(owned);
    }
    if (rc == 0 && !x.manifest)
        rc = x.a ? qc_err_set(err, "%s: unreadable manifest", m->path) : -1;
    if (rc == 0) rc = plan(&x, err);
    for (int i = 0; rc == 0 && i < x.n_reasons; i++)
        note(st, "%d layer%s written dense F32 by the fallback (%s%s): %s", x.reasons[i].n,
             x.reasons[i].n > 1 ? "s" : "", x.reasons[i].n > 1 ? "first " : "",
             x.reasons[i].first, x.reasons[i].why);
    if (rc == 0 && x.n_schemes == 0)
        note(st, "no linear is pack-quantized: config.json has no quantization_config (a dense "
                 "model)");
    if (rc == 0) qsort(x.items, (size_t)x.n, sizeof *x.items, by_name);
    st->bits_per_weight = x.packed_params > 0 ? x.packed_bits / x.packed_params : 0;
    size_t n = strlen(dir) + 16;
    char *tmp = rc == 0 ? malloc(n) : NULL;
    if (rc == 0 && !tmp) rc = qc_err_set(err, "out of memory");
    if (tmp) {
        size_t l = strlen(dir);
        while (l > 1 && dir[l - 1] == '/')
            l--;
        snprintf(tmp, n, "%.*s.tmp.XXXXXX", (int)l, dir);
        if (!mkdtemp(tmp)) {
            rc = qc_err_set(err, "%s: cannot create a directory beside it: %s", dir,
                            strerror(errno));
            free(tmp);
            tmp = NULL;
        }
    }
    if (rc == 0) rc = write_shards(&x, tmp, err);
    if (rc == 0) {
        json_t *cfg = model_config(&x);
        rc = write_json(tmp, "config.json", cfg, err);
        json_decref(cfg);
    }
    if (rc == 0) rc = write_tokenizer(&x, tmp, err);
    if (rc == 0) publish_modes(tmp);
    if (rc == 0 && rename(tmp, dir) != 0)
        rc = qc_err_set(err, "%s: rename from %s: %s", dir, tmp, strerror(errno));
    if (rc && tmp) remove_tree(tmp);
    free(tmp);
    for (int i = 0; i < x.n; i++)
        free(x.items[i].e.name);
    free(x.items);
    for (int i = 0; i < x.n_schemes; i++)
        json_decref(x.schemes[i].targets);
    json_decref(x.ignore);
    json_decref(x.manifest);
    qcrt_artifact_free(x.a);
    return rc;
}
