/* Model -> GGUF for llama.cpp (see gguf_export.h). */
#include "gguf_export.h"
#include "dense_weight.h"
#include "dequant.h"
#include "ggml_quant.h"
#include "gguf_write.h"
#include "quant.h"
#include "runtime/artifact.h"
#include "runtime/rope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int qc_dtype_from_name(const char *s, qc_dtype *out) {
    for (int t = 0; t < QC_DT_COUNT; t++)
        if (!strcasecmp(s, qc_dtype_name((qc_dtype)t)) && qc_gguf_ggml_from_dtype(t) >= 0) {
            *out = (qc_dtype)t;
            return 0;
        }
    return -1;
}

typedef struct exporter {
    const qc_model *m;
    const qc_gguf_export_opts *o;
    qc_gguf_writer *w;
    qc_gguf_export_stats *st;
    double linear_bits, linear_params;
    int compiled; /* an artifact: its block-typed tensors are what quantc evaluated */
} exporter;

/* Is t a tensor of a compiled model stored in a ggml block type (quantize
 * format gguf:*, or kept from a GGUF source)? Such a tensor is written
 * unchanged. */
static int copy_as_compiled(const exporter *e, const qc_tensor *t) {
    return e->compiled && t && t->unpermute_heads == 0 &&
           qc_ggml_type_shape(t->dtype, NULL, NULL, NULL, NULL) == 0;
}

/* Adds t's blocks unchanged as `gname`, rows permuted for llama q/k
 * (permute_heads > 0) as whole rows of blocks. */
static int add_blocks(exporter *e, const qc_tensor *t, const char *gname, int permute_heads,
                      int linear, qc_err *err) {
    int64_t rows = t->shape[0], cols = t->shape[1];
    size_t rb = t->nbytes / (size_t)rows;
    uint8_t *out = qc_malloc(t->nbytes, err);
    if (!out) return -1;
    if (permute_heads) {
        int64_t hd = rows / permute_heads, half = hd / 2;
        for (int h = 0; h < permute_heads; h++)
            for (int64_t i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    memcpy(out + (size_t)(h * hd + i * 2 + j) * rb,
                           t->data + (size_t)(h * hd + j * half + i) * rb, rb);
    } else {
        memcpy(out, t->data, t->nbytes);
    }
    if (linear) {
        e->linear_bits += 8.0 * (double)t->nbytes;
        e->linear_params += (double)(rows * cols);
    }
    e->st->file_bytes += (double)t->nbytes;
    e->st->tensors++;
    e->st->copied++;
    int64_t ne[2] = {cols, rows};
    return qc_gguf_w_tensor(e->w, gname, (uint32_t)qc_gguf_ggml_from_dtype(t->dtype), 2, ne, out,
                            t->nbytes, err);
}

/* GGUF llama q/k order (llama.cpp's converter): within each head, row
 * i·2 + j holds HF row j·(hd/2) + i, so RoPE pairs become adjacent. */
static void permute_rows(float *w, int64_t rows, int64_t cols, int heads, float *tmp) {
    int64_t hd = rows / heads, half = hd / 2;
    memcpy(tmp, w, (size_t)(rows * cols) * sizeof *w);
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(w + (h * hd + i * 2 + j) * cols, tmp + (h * hd + j * half + i) * cols,
                       (size_t)cols * sizeof *w);
}

/* Quantizes rows × cols f32 (takes ownership of x) into the chosen type
 * and adds it as `gname`. */
static int add_matrix(exporter *e, const char *src, const char *gname, float *x, int64_t rows,
                      int64_t cols, qc_dtype want, int linear, qc_err *err) {
    int fell_back;
    qc_dtype t = qc_ggml_row_type(want, cols, &fell_back);
    e->st->fallbacks += fell_back;
    size_t rb, nb;
    if (qc_dtype_nbytes(t, cols, &rb) || qc_mul_size(rb, (size_t)rows, &nb)) {
        free(x);
        return qc_err_set(err, "%s: %lld x %lld too large", src, (long long)rows, (long long)cols);
    }
    uint8_t *out = qc_malloc(nb ? nb : 1, err);
    if (!out) {
        free(x);
        return -1;
    }
    const float *imp = linear && e->o->importance ? e->o->importance(e->o->ud, src, cols) : NULL;
    int rc = 0;
    for (int64_t r = 0; rc == 0 && r < rows; r++) {
        const float *xr = x + r * cols;
        uint8_t *o = out + (size_t)r * rb;
        if (t == QC_DT_F32) {
            memcpy(o, xr, (size_t)cols * 4);
        } else if (t == QC_DT_F16) {
            for (int64_t c = 0; c < cols; c++) {
                uint16_t h = qc_f32_to_f16(xr[c]);
                memcpy(o + 2 * c, &h, 2);
            }
        } else if (qc_ggml_quantize_row(t, xr, imp, cols, o, err)) {
            rc = qc_err_prefix(err, "%s: row %lld", src, (long long)r);
        }
    }
    free(x);
    if (rc) {
        free(out);
        return -1;
    }
    if (linear) {
        e->linear_bits += 8.0 * (double)nb;
        e->linear_params += (double)(rows * cols);
    }
    e->st->file_bytes += (double)nb;
    e->st->tensors++;
    int64_t ne[2] = {cols, rows};
    return qc_gguf_w_tensor(e->w, gname, (uint32_t)qc_gguf_ggml_from_dtype(t), 2, ne, out, nb, err);
}

static float *load(const qc_model *m, const char *name, int64_t n, qc_err *err) {
    const qc_tensor *t = qc_model_find(m, name);
    if (!t || qc_tensor_numel(t) != n) {
        qc_err_set(err, "%s: tensor '%s' missing or of the wrong size", m->path, name);
        return NULL;
    }
    float *x = qc_malloc((size_t)n * sizeof *x, err);
    if (x && qc_tensor_to_f32(t, x, err)) {
        free(x);
        return NULL;
    }
    return x;
}

static int add_vector(exporter *e, const char *src, const char *gname, int64_t n, qc_err *err) {
    float *x = load(e->m, src, n, err);
    if (!x) return -1;
    e->st->tensors++;
    e->st->file_bytes += 4.0 * (double)n;
    return qc_gguf_w_tensor(e->w, gname, 0, 1, &n, x, (size_t)n * 4, err);
}

/* Is `name` a weight GGUF cannot hold as compiled (the fallback writes it dense)? */
static int needs_dense(const qc_model *m, const char *name) {
    return qc_model_quant(m, name) || qc_model_online_hadamard(m, name) > 0;
}

static int add_linear(exporter *e, int l, const char *hf, const char *gg, int64_t rows,
                      int64_t cols, int permute_heads, qc_err *err) {
    char src[192], dst[96];
    snprintf(src, sizeof src, "model.layers.%d.%s.weight", l, hf);
    snprintf(dst, sizeof dst, "blk.%d.%s.weight", l, gg);
    const qc_tensor *t = qc_model_find(e->m, src);
    if (copy_as_compiled(e, t) && t->shape[0] == rows && t->shape[1] == cols)
        return add_blocks(e, t, dst, permute_heads, 1, err);
    int dense = needs_dense(e->m, src);
    float *x = dense ? qc_malloc((size_t)(rows * cols) * sizeof *x, err)
                     : load(e->m, src, rows * cols, err);
    if (!x) return -1;
    if (dense && qc_dense_weight(e->m, src, rows, cols, x, err)) {
        free(x);
        return -1;
    }
    if (dense) {
        e->st->dense++;
        e->st->dense_bytes += 4.0 * (double)(rows * cols);
    }
    if (permute_heads) {
        float *tmp = qc_malloc((size_t)(rows * cols) * sizeof *tmp, err);
        if (!tmp) {
            free(x);
            return -1;
        }
        permute_rows(x, rows, cols, permute_heads, tmp);
        free(tmp);
    }
    return add_matrix(e, src, dst, x, rows, cols, dense ? QC_DT_F32 : e->o->linear, 1, err);
}

static int add_block(exporter *e, int l, const char *arch, qc_err *err) {
    const qc_config *c = &e->m->cfg;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int llama = !strcmp(arch, "llama");
    char src[192], dst[96];
    static const struct {
        const char *hf, *gg;
    } norms[] = {{"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "model.layers.%d.%s.weight", l, norms[i].hf);
        snprintf(dst, sizeof dst, "blk.%d.%s.weight", l, norms[i].gg);
        if (add_vector(e, src, dst, c->dim, err)) return -1;
    }
    if (c->qk_norm) {
        const char *hf[2] = {"self_attn.q_norm", "self_attn.k_norm"},
                   *gg[2] = {"attn_q_norm", "attn_k_norm"};
        for (int i = 0; i < 2; i++) {
            snprintf(src, sizeof src, "model.layers.%d.%s.weight", l, hf[i]);
            snprintf(dst, sizeof dst, "blk.%d.%s.weight", l, gg[i]);
            if (add_vector(e, src, dst, c->head_dim, err)) return -1;
        }
    }
    if (add_linear(e, l, "self_attn.q_proj", "attn_q", qd, c->dim, llama ? c->n_heads : 0, err) ||
        add_linear(e, l, "self_attn.k_proj", "attn_k", kvd, c->dim, llama ? c->n_kv_heads : 0,
                   err) ||
        add_linear(e, l, "self_attn.v_proj", "attn_v", kvd, c->dim, 0, err) ||
        add_linear(e, l, "self_attn.o_proj", "attn_output", c->dim, qd, 0, err) ||
        add_linear(e, l, "mlp.gate_proj", "ffn_gate", c->ffn_dim, c->dim, 0, err) ||
        add_linear(e, l, "mlp.up_proj", "ffn_up", c->ffn_dim, c->dim, 0, err) ||
        add_linear(e, l, "mlp.down_proj", "ffn_down", c->dim, c->ffn_dim, 0, err))
        return -1;
    if (c->attn_bias) {
        const char *hf[3] = {"q_proj", "k_proj", "v_proj"}, *gg[3] = {"attn_q", "attn_k", "attn_v"};
        int64_t n[3] = {qd, kvd, kvd};
        for (int i = 0; i < 3; i++) {
            snprintf(src, sizeof src, "model.layers.%d.self_attn.%s.bias", l, hf[i]);
            snprintf(dst, sizeof dst, "blk.%d.%s.bias", l, gg[i]);
            if (add_vector(e, src, dst, n[i], err)) return -1;
        }
    }
    return 0;
}

static int add_metadata(exporter *e, const char *arch, qc_err *err) {
    const qc_config *c = &e->m->cfg;
    qc_gguf_writer *w = e->w;
    char k[96];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    if (qc_gguf_w_str(w, "general.architecture", arch, err) ||
        qc_gguf_w_str(w, "general.name", c->arch_name, err) ||
        qc_gguf_w_u32(w, "general.quantization_version", 2, err) ||
        qc_gguf_w_u32(w, KEY("context_length"), (uint32_t)c->max_pos, err) ||
        qc_gguf_w_u32(w, KEY("embedding_length"), (uint32_t)c->dim, err) ||
        qc_gguf_w_u32(w, KEY("block_count"), (uint32_t)c->n_layers, err) ||
        qc_gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)c->ffn_dim, err) ||
        qc_gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads, err) ||
        qc_gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads, err) ||
        qc_gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps, err) ||
        qc_gguf_w_f32(w, KEY("rope.freq_base"), c->rope_theta, err) ||
        qc_gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim, err) ||
        qc_gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim, err) ||
        qc_gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim, err) ||
        qc_gguf_w_u32(w, KEY("vocab_size"), (uint32_t)c->vocab, err))
        return -1;
    if (c->rope_scaling == QC_ROPE_LINEAR &&
        (qc_gguf_w_str(w, KEY("rope.scaling.type"), "linear", err) ||
         qc_gguf_w_f32(w, KEY("rope.scaling.factor"), c->rope_factor, err)))
        return -1;
#undef KEY
    return 0;
}

/* Llama 3 scaling as llama.cpp stores it: per-frequency divisors. */
static int add_rope_freqs(exporter *e, qc_err *err) {
    const qc_config *c = &e->m->cfg;
    int64_t half = c->head_dim / 2;
    qc_config plain = *c;
    plain.rope_scaling = QC_ROPE_NONE;
    float *f = qc_malloc((size_t)half * sizeof *f, err), *g = qc_malloc((size_t)half * 4, err);
    if (!f || !g || qcrt_rope_inv_freq(&plain, f, err) || qcrt_rope_inv_freq(c, g, err)) {
        free(f), free(g);
        return -1;
    }
    for (int64_t i = 0; i < half; i++)
        f[i] = f[i] / g[i];
    free(g);
    e->st->tensors++;
    return qc_gguf_w_tensor(e->w, "rope_freqs.weight", 0, 1, &half, f, (size_t)half * 4, err);
}

/* The GGUF tokenizer an artifact compiled from a GGUF source carries (its
 * "tokenizer.gguf" section), parsed; *owned gets a buffer to free after g. */
static qc_gguf *artifact_tokenizer(const qc_model *m, qcrt_artifact **a, void **owned,
                                   qc_err *err) {
    *owned = NULL;
    if (!(*a = qcrt_artifact_open(m->path, err))) return NULL;
    const qcrt_section *s = qcrt_artifact_find(*a, QCRT_SEC_TOKENIZER, "tokenizer.gguf");
    if (!s) {
        qc_err_set(err,
                   "%s: the artifact has no GGUF tokenizer (compiled from a %s source); "
                   "converting a tokenizer.json to GGUF metadata is not implemented",
                   m->path,
                   qcrt_artifact_find(*a, QCRT_SEC_TOKENIZER, "tokenizer.json") ? "Hugging Face"
                                                                                : "tokenizer-less");
        return NULL;
    }
    const uint8_t *d = qcrt_artifact_section_data(*a, s, owned, err);
    return d ? qc_gguf_parse(d, s->raw_size, m->path, err) : NULL;
}

static int copy_tokenizer(exporter *e, qc_err *err) {
    const qc_model *m = e->m;
    qcrt_artifact *a = NULL;
    void *owned = NULL;
    qc_gguf *g = NULL;
    if (e->compiled) {
        g = artifact_tokenizer(m, &a, &owned, err);
    } else if (strcmp(m->format, "gguf")) {
        return qc_err_set(err,
                          "%s: GGUF export needs a GGUF source for now (its tokenizer.* metadata "
                          "is copied); converting a %s model's tokenizer is not implemented",
                          m->path, m->format);
    } else {
        g = qc_gguf_open(m->path, err);
    }
    int rc = g ? 0 : -1;
    for (int64_t i = 0; rc == 0 && i < g->n_kv; i++)
        if (!strncmp(g->kvs[i].key, "tokenizer.", 10))
            rc = qc_gguf_w_copy(e->w, g, &g->kvs[i], err);
    qc_gguf_free(g);
    free(owned);
    qcrt_artifact_free(a);
    return rc;
}

/* A compiled model's compression GGUF cannot hold: group-wise integer
 * codes (quantize format int), their sparse outliers and low-rank factors,
 * online transforms. The message names the first layer and the feature. */
static int refuse_inexpressible(const qc_model *m, const qc_gguf_export_opts *o, qc_err *err) {
    if (o->fallback_dequantize) return 0;
    for (int i = 0; i < m->n_quant; i++) {
        const qc_quant_state *q = m->quant[i].q;
        const char *what = q->nnz    ? "sparse outliers (outliers pass)"
                           : q->rank ? "a low-rank correction (lowrank pass)"
                                     : "group-wise integer codes (quantize format int)";
        return qc_err_set(err,
                          "%s: %s: %s cannot be written to GGUF; compile with quantize format "
                          "gguf:TYPE (e.g. recipes/gguf-q4_k.yaml) and without outliers/lowrank, "
                          "or export with --fallback dequantize (dense F32)",
                          m->path, m->quant[i].name, what);
    }
    if (m->n_online > 0)
        return qc_err_set(err,
                          "%s: %s: an online Hadamard (rotate's online transform) cannot be "
                          "expressed in GGUF; compile with rotate without online transforms, or "
                          "export with --fallback dequantize (dense F32, the transform folded in)",
                          m->path, m->online[0].name);
    return 0;
}

int qc_gguf_export(const qc_model *m, const qc_gguf_export_opts *o, const char *path,
                   qc_gguf_export_stats *st, qc_err *err) {
    memset(st, 0, sizeof *st);
    const qc_config *c = &m->cfg;
    const char *arch = c->arch == QC_ARCH_QWEN2   ? "qwen2"
                       : c->arch == QC_ARCH_QWEN3 ? "qwen3"
                                                  : "llama";
    if (refuse_inexpressible(m, o, err)) return -1;
    exporter e = {.m = m, .o = o, .st = st, .compiled = !strcmp(m->format, "artifact")};
    if (!(e.w = qc_gguf_writer_new(err))) return -1;
    int rc = add_metadata(&e, arch, err) || copy_tokenizer(&e, err);
    float *emb = rc ? NULL : load(m, "model.embed_tokens.weight", (int64_t)c->vocab * c->dim, err);
    if (!rc && !emb) rc = -1;
    const qc_tensor *et = qc_model_find(m, "model.embed_tokens.weight");
    if (!rc && copy_as_compiled(&e, et)) {
        free(emb);
        rc = add_blocks(&e, et, "token_embd.weight", 0, 0, err);
    } else if (!rc) {
        rc = add_matrix(&e, "model.embed_tokens.weight", "token_embd.weight", emb, c->vocab, c->dim,
                        o->embed, 0, err);
    }
    if (!rc && c->rope_scaling == QC_ROPE_LLAMA3) rc = add_rope_freqs(&e, err);
    for (int l = 0; !rc && l < c->n_layers; l++)
        rc = add_block(&e, l, arch, err);
    if (!rc) rc = add_vector(&e, "model.norm.weight", "output_norm.weight", c->dim, err);
    if (!rc) {
        /* A tied head is written too when its type differs from the embedding's. */
        const char *src = c->tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        const qc_tensor *ht = qc_model_find(m, "lm_head.weight");
        if (needs_dense(m, "lm_head.weight")) {
            /* The fallback: a quantized head (tied or not) as its dense weight. */
            float *h = qc_malloc((size_t)c->vocab * (size_t)c->dim * sizeof *h, err);
            rc = h && !qc_dense_weight(m, "lm_head.weight", c->vocab, c->dim, h, err)
                     ? add_matrix(&e, "lm_head.weight", "output.weight", h, c->vocab, c->dim,
                                  QC_DT_F32, 0, err)
                     : (free(h), -1);
            st->dense++;
            st->dense_bytes += 4.0 * (double)c->vocab * c->dim;
        } else if (!c->tied_embeddings && copy_as_compiled(&e, ht)) {
            rc = add_blocks(&e, ht, "output.weight", 0, 0, err);
        } else if (c->tied_embeddings && e.compiled && !o->output_given) {
            /* llama.cpp then reads token_embd, as quantc did. */
        } else if (!c->tied_embeddings || o->output != o->embed) {
            float *h = load(m, src, (int64_t)c->vocab * c->dim, err);
            rc = h ? add_matrix(&e, src, "output.weight", h, c->vocab, c->dim, o->output, 0, err)
                   : -1;
        }
    }
    if (!rc) rc = qc_gguf_w_write(e.w, path, err);
    st->bits_per_weight = e.linear_params > 0 ? e.linear_bits / e.linear_params : 0;
    qc_gguf_writer_free(e.w);
    return rc ? -1 : 0;
}
