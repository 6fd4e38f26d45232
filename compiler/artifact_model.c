/* Model IR -> artifact (see artifact_model.h); loading is in artifact_load.c. */
#include "artifact_model.h"
#include "limits.h"

#include "codegen/cpu_llvm.h"
#include "codegen/cuda_codegen.h"
#include "codegen/cuda_pack.h"
#include "codegen/pack.h"
#include "dequant.h"
#include "gguf.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

/* Tokenizer files read from a Hugging Face source, in section order. */
static const char *const hf_tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json"};

int64_t qc_artifact_row_bytes(int64_t cols, int bits) {
    return (cols * bits + 7) / 8;
}

void qc_artifact_pack_codes(const uint8_t *codes, int64_t rows, int64_t cols, int bits,
                            uint8_t *out) {
    int64_t rb = qc_artifact_row_bytes(cols, bits);
    memset(out, 0, (size_t)(rows * rb));
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = out + r * rb;
        for (int64_t c = 0; c < cols; c++) {
            uint32_t v = codes[r * cols + c];
            int64_t bit = c * bits;
            /* A code spans at most two bytes (bits <= 8). */
            row[bit / 8] |= (uint8_t)(v << (bit % 8));
            if (bit % 8 + bits > 8) row[bit / 8 + 1] |= (uint8_t)(v >> (8 - bit % 8));
        }
    }
}

void qc_artifact_unpack_codes(const uint8_t *packed, int64_t rows, int64_t cols, int bits,
                              uint8_t *codes) {
    int64_t rb = qc_artifact_row_bytes(cols, bits);
    uint32_t mask = (1u << bits) - 1;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = packed + r * rb;
        for (int64_t c = 0; c < cols; c++) {
            int64_t bit = c * bits;
            uint32_t v = row[bit / 8] >> (bit % 8);
            if (bit % 8 + bits > 8) v |= (uint32_t)row[bit / 8 + 1] << (8 - bit % 8);
            codes[r * cols + c] = (uint8_t)(v & mask);
        }
    }
}

/* ---- source hash ---- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Hashes f's bytes under name. In 64 MB steps whose pages are given back
 * after (qc_mapfile_release): hashing a 16 GB model must not leave it all
 * resident. */
static int hash_bytes(XXH3_state_t *st, json_t *files, const char *name, const qc_mapfile *f,
                      qc_err *err) {
    const size_t STEP = 64u << 20;
    uint8_t len[8];
    qcrt_put64(len, f->size);
    int bad = XXH3_64bits_update(st, name, strlen(name) + 1) == XXH_ERROR ||
              XXH3_64bits_update(st, len, 8) == XXH_ERROR;
    for (size_t o = 0; !bad && o < f->size; o += STEP) {
        size_t n = f->size - o < STEP ? f->size - o : STEP;
        bad = XXH3_64bits_update(st, f->data + o, n) == XXH_ERROR;
        qc_mapfile_release(f, f->data + o, n);
    }
    if (bad || json_array_append_new(files, json_pack("{s:s, s:I}", "name", name, "bytes",
                                                      (json_int_t)f->size)))
        return qc_err_set(err, "out of memory");
    return 0;
}

static int hash_file(XXH3_state_t *st, json_t *files, const char *path, qc_err *err) {
    qc_mapfile *f = qc_mapfile_open(path, err);
    if (!f) return -1;
    int rc = hash_bytes(st, files, base_name(path), f, err);
    qc_mapfile_free(f);
    return rc;
}

json_t *qc_artifact_source_hash(const qc_model *m, qc_err *err) {
    XXH3_state_t *st = XXH3_createState();
    json_t *files = json_array();
    int rc =
        st && files && XXH3_64bits_reset(st) != XXH_ERROR ? 0 : qc_err_set(err, "out of memory");
    int hf = !strcmp(m->format, "safetensors");
    if (rc == 0 && hf) {
        char *p = path_join(m->path, "config.json");
        rc = p ? hash_file(st, files, p, err) : qc_err_set(err, "out of memory");
        free(p);
    }
    for (int i = 0; rc == 0 && i < m->n_files; i++)
        rc = hash_bytes(st, files, base_name(m->files[i]->path), m->files[i], err);
    for (size_t i = 0; rc == 0 && hf && i < sizeof hf_tokenizer_files / sizeof *hf_tokenizer_files;
         i++) {
        struct stat sb;
        char *p = path_join(m->path, hf_tokenizer_files[i]);
        if (!p)
            rc = qc_err_set(err, "out of memory");
        else if (stat(p, &sb) == 0)
            rc = hash_file(st, files, p, err);
        free(p);
    }
    json_t *out = NULL;
    if (rc == 0) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
        out = json_pack("{s:s, s:O}", "xxh3", hex, "files", files);
        if (!out) qc_err_set(err, "out of memory");
    }
    json_decref(files);
    XXH3_freeState(st);
    return out;
}

/* ---- manifest ---- */

static const char *const arch_names[] = {"llama", "mistral", "qwen2", "qwen3"};
static const char *const rope_names[] = {"none", "llama3", "linear"};

static json_t *config_json(const qc_config *c) {
    return json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:f, s:f, "
        "s:f, s:i, s:b, s:b, s:b, s:i, s:i}",
        "arch", arch_names[c->arch], "arch_name", c->arch_name, "n_layers", c->n_layers, "dim",
        c->dim, "n_heads", c->n_heads, "n_kv_heads", c->n_kv_heads, "head_dim", c->head_dim,
        "ffn_dim", c->ffn_dim, "vocab", c->vocab, "max_pos", c->max_pos, "rope_theta",
        (double)c->rope_theta, "norm_eps", (double)c->norm_eps, "rope_scaling",
        rope_names[c->rope_scaling], "rope_factor", (double)c->rope_factor, "rope_low_freq_factor",
        (double)c->rope_low_freq_factor, "rope_high_freq_factor", (double)c->rope_high_freq_factor,
        "rope_orig_max_pos", c->rope_orig_max_pos, "tied_embeddings", c->tied_embeddings, "qk_norm",
        c->qk_norm, "attn_bias", c->attn_bias, "bos_id", c->bos_id, "eos_id", c->eos_id);
}

static char *module_of(const char *weight) {
    size_t n = strlen(weight);
    if (n > 7 && !strcmp(weight + n - 7, ".weight")) n -= 7;
    return strndup(weight, n);
}

/* ---- sections ---- */

typedef struct wctx {
    const qc_model *m;
    qc_artifact_writer *w;
    json_t *tensors; /* manifest.tensors: name -> {dtype, shape} */
    json_t *layers;  /* manifest.layers */
    qc_kernel_spec *specs; /* dry run: the spec of every packed layer (room for n_quant) */
    int n_specs;
    int n_packed; /* layers stored packed (specs also has transform variants) */
    int cuda;                   /* CUDA targets: also store each layer in the CUDA layout */
    qc_kernel_spec *cuda_specs; /* dry run: the spec of every layer with a CUDA blob */
    int n_cuda_specs;
    qc_err *err;
} wctx;

/* Records a tensor in manifest.tensors and, unless this is the dry run
 * (c->w == NULL) that lists the tensors for the manifest, writes it. */
static int add_tensor(wctx *c, const char *name, const char *dtype, int64_t r, int64_t cols,
                      int n_dims, const void *data, size_t size) {
    json_t *shape = n_dims == 1 ? json_pack("[I]", (json_int_t)r)
                                : json_pack("[I,I]", (json_int_t)r, (json_int_t)cols);
    if (json_object_set_new(c->tensors, name,
                            json_pack("{s:s, s:o}", "dtype", dtype, "shape", shape)))
        return qc_err_set(c->err, "out of memory");
    if (!c->w) return 0;
    return qc_artifact_writer_add(c->w, QCRT_SEC_TENSOR, name, NULL, data, size, c->err);
}

/* A tensor that is not quantized by the compile, stored as the source stored
 * it (F32/F16/BF16, or a GGUF block type such as Q8_0: lossless and as small
 * as the source), except GGUF q/k weights whose rows need un-permuting:
 * those are stored as F32 in HF order. */
static int write_plain_tensor(wctx *c, const qc_tensor *t) {
    int64_t n = qc_tensor_numel(t);
    int keep = t->unpermute_heads == 0 && t->dtype != QC_DT_U8 && t->dtype != QC_DT_I32;
    if (keep || !c->w)
        return add_tensor(c, t->name, keep ? qc_dtype_name(t->dtype) : "F32", t->shape[0],
                          t->shape[1], t->n_dims, t->data, t->nbytes);
    float *buf = qc_malloc((size_t)n * sizeof(float), c->err);
    int rc = buf ? qc_tensor_to_f32(t, buf, c->err) : -1;
    if (rc == 0)
        rc = add_tensor(c, t->name, "F32", t->shape[0], t->shape[1], t->n_dims, buf,
                        (size_t)n * sizeof(float));
    free(buf);
    return rc;
}

static int f16_exact(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (qc_f16_to_f32(qc_f32_to_f16(v[i])) != v[i]) return 0;
    return 1;
}

static int u8_exact(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(v[i] >= 0 && v[i] <= 255 && v[i] == (float)(int)v[i])) return 0;
    return 1;
}

/* An f32 array as F16 or U8 when every value converts exactly, else F32. */
static int write_small(wctx *c, const char *name, const float *v, int64_t rows, int64_t cols,
                       int allow_u8) {
    int64_t n = rows * cols;
    const char *dtype = allow_u8 && u8_exact(v, n) ? "U8" : f16_exact(v, n) ? "F16" : "F32";
    if (!c->w || !strcmp(dtype, "F32"))
        return add_tensor(c, name, dtype, rows, cols, 2, v, (size_t)n * 4);
    size_t item = dtype[0] == 'U' ? 1 : 2;
    uint8_t *buf = qc_malloc((size_t)n * item, c->err);
    if (!buf) return -1;
    for (int64_t i = 0; i < n; i++) {
        if (item == 1) {
            buf[i] = (uint8_t)v[i];
        } else {
            uint16_t h = qc_f32_to_f16(v[i]);
            buf[2 * i] = (uint8_t)h, buf[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
    int rc = add_tensor(c, name, dtype, rows, cols, 2, buf, (size_t)n * item);
    free(buf);
    return rc;
}

static int g_idx_trivial(const qc_quant_state *q) {
    for (int64_t i = 0; i < q->cols; i++)
        if (q->g_idx[i] != (q->fmt.group_size ? (int32_t)(i / q->fmt.group_size) : 0)) return 0;
    return 1;
}

/* One tensor of a quantized layer: section "MOD.ROLE", recorded under
 * parts[ROLE]. cols 0: a 1-D tensor of `rows` elements. */
static int add_part(wctx *c, json_t *parts, const char *mod, const char *role, const char *dtype,
                    int64_t rows, int64_t cols, const void *data, size_t size) {
    char name[600];
    snprintf(name, sizeof name, "%s.%s", mod, role);
    if (json_object_set_new(parts, role, json_string(name)))
        return qc_err_set(c->err, "out of memory");
    return add_tensor(c, name, dtype, rows, cols ? cols : 1, cols ? 2 : 1, data, size);
}

/* The packed weight of q in the CPU kernels' layout (codegen/pack.h) or,
 * with cuda, the CUDA kernels' (codegen/cuda_pack.h), and its kernel spec.
 * Returns 0; 1 when the generated kernels cannot run q (why in *why, e.g. a
 * group index that is not a permutation of whole groups); -1 with err on a
 * hard failure (out of memory). */
static int pack_layer(const qc_quant_state *q, int cuda, qc_kernel_spec *spec, uint8_t **blob,
                      size_t *size, char *why, size_t why_n, qc_err *err) {
    qc_err e = {{0}};
    *blob = NULL;
    if (qc_kernel_spec_from_quant(q, q->nnz > 0, q->rank, spec, &e) ||
        !(*size = (cuda ? qc_cuda_pack_size : qc_pack_size)(spec, q->nnz, &e))) {
        snprintf(why, why_n, "%s", e.msg);
        return 1;
    }
    if (!(*blob = qc_malloc(*size, err))) return -1;
    qc_pack_sparse sp = {q->nnz, q->row_ptr, q->col, q->val};
    qc_pack_lowrank lr = {q->rank, q->lr_a, q->lr_b};
    if ((cuda ? qc_cuda_pack : qc_pack)(spec, q, q->nnz ? &sp : NULL, q->rank ? &lr : NULL, *blob,
                                        *size, &e)) {
        snprintf(why, why_n, "%s", e.msg);
        free(*blob);
        *blob = NULL;
        return 1;
    }
    return 0;
}

/* With CUDA targets: the layer's CUDA blob as part "cuda_packed" (layout
 * qccuda1) and as layer.cuda_kernel the id of the module that runs it, or
 * layer.cuda_note saying why no CUDA kernel runs it (the GPU runtime then
 * dequantizes it to a dense f16 weight). A layer with an online Hadamard
 * (weight) is run by its spec's kernel with the transform, which reads the
 * same blob (packed for the plain spec). */
static int write_cuda_part(wctx *c, json_t *parts, json_t *layer, const char *mod,
                           const char *weight, const qc_quant_state *q) {
    if (!c->cuda) return 0;
    char why[sizeof(qc_err)] = "", kid[80] = "";
    qc_kernel_spec spec;
    uint8_t *blob = NULL;
    size_t size = 0;
    int rc = pack_layer(q, 1, &spec, &blob, &size, why, sizeof why, c->err);
    int hn = qc_model_online_hadamard(c->m, weight);
    if (rc == 0 && hn > 0) {
        qc_err e = {{0}};
        spec.transform = QC_KTRANSFORM_HADAMARD, spec.transform_size = hn;
        if (qc_cuda_spec_check(&spec, &e)) {
            snprintf(why, sizeof why, "%s", e.msg);
            free(blob);
            blob = NULL;
            rc = 1;
        }
    }
    if (rc == 0) {
        qc_kernel_spec_id(&spec, kid, sizeof kid);
        if (!c->w) c->cuda_specs[c->n_cuda_specs++] = spec;
        rc = add_part(c, parts, mod, "cuda_packed", "U8", (int64_t)size, 0, c->w ? blob : NULL,
                      size);
        if (rc == 0 &&
            (json_object_set_new(layer, "cuda_layout", json_string(QC_ARTIFACT_CUDA_LAYOUT)) ||
             json_object_set_new(layer, "cuda_kernel", json_string(kid)) ||
             json_object_set_new(layer, "permuted", json_boolean(spec.act_order))))
            rc = qc_err_set(c->err, "out of memory");
    } else if (rc == 1) {
        rc = json_object_set_new(layer, "cuda_note", json_string(why))
                 ? qc_err_set(c->err, "out of memory")
                 : 0;
    }
    free(blob);
    return rc;
}

/* The row-major tensors of a quantized weight (layout "rowmajor-lsb"):
 * codes, scales, zeros, group index, permutation, outliers, low-rank. */
static int write_rowmajor(wctx *c, json_t *parts, const char *mod, const qc_quant_state *q) {
    char name[600];
    int rc = 0;
    int64_t rb = qc_artifact_row_bytes(q->cols, q->fmt.bits);
    uint8_t *packed = c->w ? qc_malloc((size_t)(q->rows * rb), c->err) : NULL;
    if (c->w && !packed) rc = -1;
    if (packed) qc_artifact_pack_codes(q->codes, q->rows, q->cols, q->fmt.bits, packed);
    if (rc == 0)
        rc = add_part(c, parts, mod, "qweight", "U8", q->rows, rb, packed, (size_t)(q->rows * rb));
    free(packed);
    snprintf(name, sizeof name, "%s.scales", mod);
    if (rc == 0) rc = write_small(c, name, q->scales, q->rows, q->n_groups, 0);
    json_object_set_new(parts, "scales", json_string(name));
    if (!q->fmt.symmetric) {
        snprintf(name, sizeof name, "%s.zeros", mod);
        if (rc == 0) rc = write_small(c, name, q->zeros, q->rows, q->n_groups, 1);
        json_object_set_new(parts, "zeros", json_string(name));
    }
    size_t cb = (size_t)q->cols * 4;
    if (rc == 0 && !g_idx_trivial(q))
        rc = add_part(c, parts, mod, "g_idx", "I32", q->cols, 0, q->g_idx, cb);
    if (rc == 0 && q->perm) rc = add_part(c, parts, mod, "perm", "I32", q->cols, 0, q->perm, cb);
    /* Sparse outliers (CSR, f16 values) and low-rank factors (f16). */
    if (rc == 0 && q->nnz > 0)
        rc = add_part(c, parts, mod, "outlier_row_ptr", "I32", q->rows + 1, 0, q->row_ptr,
                      (size_t)(q->rows + 1) * 4);
    if (rc == 0 && q->nnz > 0)
        rc = add_part(c, parts, mod, "outlier_col", "I32", q->nnz, 0, q->col, (size_t)q->nnz * 4);
    if (rc == 0 && q->nnz > 0)
        rc = add_part(c, parts, mod, "outlier_val", "F16", q->nnz, 0, q->val, (size_t)q->nnz * 2);
    if (rc == 0 && q->rank > 0)
        rc = add_part(c, parts, mod, "lowrank_a", "F16", q->rows, q->rank, q->lr_a,
                      (size_t)(q->rows * q->rank) * 2);
    if (rc == 0 && q->rank > 0)
        rc = add_part(c, parts, mod, "lowrank_b", "F16", q->rank, q->cols, q->lr_b,
                      (size_t)(q->rank * q->cols) * 2);
    return rc;
}

/* Every tensor of one quantized weight, and its manifest.layers entry. This
 * is the one place that decides how quantized weights are stored: in the
 * generated kernels' layout when they can run the layer, else row-major. */
static int write_quant_tensors(wctx *c, const char *weight, const qc_quant_state *q) {
    char *mod = module_of(weight), why[sizeof(qc_err)] = "", kid[80] = "";
    if (!mod) return qc_err_set(c->err, "out of memory");
    json_t *parts = json_object();
    qc_kernel_spec spec;
    uint8_t *blob = NULL;
    size_t size = 0;
    int rc = pack_layer(q, 0, &spec, &blob, &size, why, sizeof why, c->err), packed = rc == 0;
    if (packed) {
        qc_kernel_spec_id(&spec, kid, sizeof kid);
        if (!c->w && c->specs) {
            c->specs[c->n_specs++] = spec;
            c->n_packed++;
            /* an online Hadamard on the input: the CPU kernels that apply it
             * (same packed layout, the spec with the transform) */
            int hn = qc_model_online_hadamard(c->m, weight);
            if (hn > 0) {
                qc_kernel_spec t = spec;
                t.transform = QC_KTRANSFORM_HADAMARD, t.transform_size = hn;
                qc_err e = {{0}};
                if (!qc_kernel_spec_check(&t, &e)) c->specs[c->n_specs++] = t;
            }
        }
        rc = add_part(c, parts, mod, "packed", "U8", (int64_t)size, 0, c->w ? blob : NULL, size);
    } else if (rc == 1) {
        rc = write_rowmajor(c, parts, mod, q);
    }
    free(blob);
    json_t *layer = json_pack(
        "{s:s, s:s, s:I, s:I, s:s, s:i, s:i, s:b, s:b, s:f, s:s, s:I, s:i, s:o, s:o}", "name", mod,
        "weight", weight, "rows", (json_int_t)q->rows, "cols", (json_int_t)q->cols, "format", "int",
        "bits", q->fmt.bits, "group_size", q->fmt.group_size, "symmetric", q->fmt.symmetric,
        "act_order", q->perm != NULL,
        "bits_per_weight", qc_quant_storage_bits(q) / ((double)q->rows * (double)q->cols),
        "layout", packed ? QC_ARTIFACT_PACK_LAYOUT : QC_ARTIFACT_CODES_LAYOUT, "outliers",
        (json_int_t)q->nnz, "rank", q->rank, "tensors", parts, "kernel",
        packed ? json_string(kid) : json_null());
    if (layer && packed) json_object_set_new(layer, "permuted", json_boolean(spec.act_order));
    if (layer && !packed) json_object_set_new(layer, "kernel_note", json_string(why));
    if (rc == 0 && layer) rc = write_cuda_part(c, parts, layer, mod, weight, q);
    if (rc == 0 && (!layer || json_array_append_new(c->layers, layer)))
        rc = qc_err_set(c->err, "out of memory");
    else if (rc)
        json_decref(layer);
    free(mod);
    return rc;
}

/* Each tensor and state is read once per pass over them and its pages given
 * back after (a mapped source or spilled states: resident memory stays at
 * one tensor, not the model). */
static int write_tensors(wctx *c) {
    const qc_model *m = c->m;
    for (int i = 0; i < m->n_tensors; i++) {
        const qc_tensor *t = &m->tensors[i];
        if (qc_model_quant(m, t->name)) continue;
        if (write_plain_tensor(c, t)) return -1;
        qc_model_release_tensor(m, t);
    }
    for (int i = 0; i < m->n_quant; i++) {
        if (write_quant_tensors(c, m->quant[i].name, m->quant[i].q)) return -1;
        qc_quant_state_release(m->quant[i].q);
    }
    return 0;
}

/* The source's tokenizer as named byte strings (each a section). */
typedef struct tok_part {
    char name[32];
    uint8_t *data;
    size_t size;
} tok_part;

static int collect_tokenizer(const qc_model *m, tok_part *parts, int *n, qc_err *err) {
    *n = 0;
    if (!m->tok) return 0;
    if (!strcmp(m->format, "gguf")) {
        snprintf(parts[0].name, sizeof parts[0].name, "tokenizer.gguf");
        if (qc_gguf_tokenizer_extract(m->path, &parts[0].data, &parts[0].size, err)) return -1;
        *n = 1;
        return 0;
    }
    if (!strcmp(m->format, "artifact")) {
        qcrt_artifact *a = qcrt_artifact_open(m->path, err);
        if (!a) return -1;
        int rc = 0;
        for (int i = 0; i < a->n_sections && rc == 0 && *n < 2; i++) {
            const qcrt_section *s = &a->sections[i];
            void *owned;
            if (s->kind != QCRT_SEC_TOKENIZER) continue;
            const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, err);
            tok_part *p = &parts[*n];
            if (!d || strlen(s->name) >= sizeof p->name) {
                rc = d ? qc_err_set(err, "%s: tokenizer section name too long", m->path) : -1;
            } else if (!(p->data = qc_malloc(s->raw_size, err))) {
                rc = -1;
            } else {
                memcpy(p->data, d, s->raw_size);
                p->size = s->raw_size;
                snprintf(p->name, sizeof p->name, "%s", s->name);
                (*n)++;
            }
            free(owned);
        }
        qcrt_artifact_free(a);
        return rc;
    }
    for (size_t i = 0; i < sizeof hf_tokenizer_files / sizeof *hf_tokenizer_files; i++) {
        struct stat sb;
        char *p = path_join(m->path, hf_tokenizer_files[i]);
        if (!p) return qc_err_set(err, "out of memory");
        if (stat(p, &sb) == 0) {
            tok_part *t = &parts[*n];
            t->data = (uint8_t *)qc_read_limited(p, QC_LIMIT_JSON_BYTES, &t->size, err);
            snprintf(t->name, sizeof t->name, "%s", hf_tokenizer_files[i]);
            if (!t->data) {
                free(p);
                return -1;
            }
            (*n)++;
        }
        free(p);
    }
    return 0;
}

static json_t *build_manifest(wctx *c, const tok_part *tok, int n_tok, json_t *kernels,
                              const qc_artifact_model_opts *o) {
    json_t *prov = qc_artifact_source_hash(c->m, c->err);
    if (!prov) return NULL;
    json_object_set_new(prov, "source", json_string(c->m->path));
    json_object_set_new(prov, "source_format", json_string(c->m->format));
    if (o && o->provenance) json_object_update(prov, (json_t *)o->provenance);
    json_t *tk = json_array();
    for (int i = 0; i < n_tok; i++)
        json_array_append_new(tk, json_string(tok[i].name));
    /* Online input transforms (rotate pass): {weight: {"hadamard": n}}. */
    json_t *online = json_object();
    for (int i = 0; online && i < c->m->n_online; i++)
        json_object_set_new(online, c->m->online[i].name,
                            json_pack("{s:i}", "hadamard", c->m->online[i].hadamard_n));
    json_t *man = json_pack("{s:s, s:i, s:o, s:O, s:O, s:o, s:o, s:o, s:O, s:O}", "format",
                            "quantc-artifact", "format_version", QCRT_ARTIFACT_VERSION, "config",
                            config_json(&c->m->cfg), "tensors", c->tensors, "layers", c->layers,
                            "online", online, "tokenizer", tk, "provenance", prov, "kernels",
                            kernels, "metrics",
                            o && o->metrics ? (json_t *)o->metrics : json_null());
    if (!man) qc_err_set(c->err, "out of memory");
    return man;
}

/* Generates the kernels of the packed layers' specs for every CPU target of
 * o: objs[i] for o->cpu_targets[i] (n_objs set to the number done, for
 * freeing), and their manifest.kernels entries. */
static int generate_kernels(wctx *c, const qc_artifact_model_opts *o, qc_cpu_object *objs,
                            int *n_objs, json_t *kernels, qc_artifact_stats *stats) {
    *n_objs = 0;
    for (int i = 0; o && c->n_specs > 0 && i < o->n_cpu_targets; i++) {
        const char *t = o->cpu_targets[i];
        char sec[160];
        if (strlen(t) > 100) return qc_err_set(c->err, "CPU target name too long: '%.40s...'", t);
        if (qc_cpu_codegen(c->specs, c->n_specs, t, &objs[i], c->err))
            return qc_err_prefix(c->err, "CPU kernels for target '%s'", t);
        *n_objs = i + 1;
        snprintf(sec, sizeof sec, "cpu/%s.so", t);
        json_t *k = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "device", "cpu", "name", t,
                              "target", objs[i].target, "section", sec, "kernels",
                              objs[i].n_kernels, "bytes", (json_int_t)objs[i].so_size);
        if (!k || json_array_append_new(kernels, k)) return qc_err_set(c->err, "out of memory");
        if (stats) {
            stats->n_kernels = objs[i].n_kernels;
            stats->codegen_seconds += objs[i].ir_seconds + objs[i].opt_seconds +
                                      objs[i].emit_seconds + objs[i].link_seconds;
        }
    }
    return 0;
}

/* Compiles the CUDA kernel set of every architecture of o (objs[i] for
 * o->cuda_archs[i]; *n_objs counts those done) and adds their
 * manifest.kernels entries. Section names: "cuda/MODULE.ptx" and
 * "cuda/MODULE.cubin", target "cuda:ARCH". */
static int generate_cuda(wctx *c, const qc_artifact_model_opts *o, qc_cuda_object *objs,
                         int *n_objs, json_t *kernels, qc_artifact_stats *stats) {
    *n_objs = 0;
    for (int i = 0; o && i < o->n_cuda_archs; i++) {
        qc_cuda_object *ob = &objs[i];
        int rc = qc_cuda_codegen(c->cuda_specs, c->n_cuda_specs, o->cuda_archs[i], ob, c->err);
        *n_objs = i + 1;
        if (rc) return qc_err_prefix(c->err, "CUDA kernels for cuda:%s", o->cuda_archs[i]);
        json_t *mods = json_array();
        size_t bytes = 0;
        for (int k = 0; mods && k < ob->n_mods; k++) {
            const qc_cuda_module *md = &ob->mods[k];
            char ptx[160], cubin[160];
            snprintf(ptx, sizeof ptx, "cuda/%s.ptx", md->name);
            snprintf(cubin, sizeof cubin, "cuda/%s.cubin", md->name);
            json_t *j = json_pack("{s:s, s:s, s:s}", "name", md->name, "ptx", ptx, "cubin", cubin);
            if (j && !md->is_forward)
                json_object_update_new(
                    j, json_pack("{s:s, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i}}", "gemv",
                                 md->gemv, "lrt", md->lrt, "gemm", md->gemm, "had", md->had,
                                 "launch", "row_tiles", md->opts.rtb, "warps", md->opts.max_warps,
                                 "prefetch", md->opts.prefetch, "min_blocks", md->opts.min_blocks,
                                 "gemm", md->opts.gemm));
            if (!j || json_array_append_new(mods, j)) {
                json_decref(mods);
                return qc_err_set(c->err, "out of memory");
            }
            bytes += md->bin.ptx_size + md->bin.cubin_size;
        }
        char target[32];
        snprintf(target, sizeof target, "cuda:%s", ob->arch);
        json_t *k = json_pack("{s:s, s:s, s:s, s:o, s:i, s:I}", "device", "cuda", "name", ob->arch,
                              "target", target, "modules", mods, "kernels", ob->n_mods - 1,
                              "bytes", (json_int_t)bytes);
        if (!k || json_array_append_new(kernels, k)) return qc_err_set(c->err, "out of memory");
        if (stats) {
            stats->n_cuda_kernels = ob->n_mods - 1;
            stats->nvrtc_seconds += ob->seconds;
        }
    }
    return 0;
}

static int write_cuda_sections(wctx *c, const qc_cuda_object *objs, int n_objs) {
    for (int i = 0; i < n_objs; i++) {
        char target[32];
        snprintf(target, sizeof target, "cuda:%s", objs[i].arch);
        for (int k = 0; k < objs[i].n_mods; k++) {
            const qc_cuda_module *md = &objs[i].mods[k];
            char ptx[160], cubin[160];
            snprintf(ptx, sizeof ptx, "cuda/%s.ptx", md->name);
            snprintf(cubin, sizeof cubin, "cuda/%s.cubin", md->name);
            if (qc_artifact_writer_add(c->w, QCRT_SEC_KERNELS, ptx, target, md->bin.ptx,
                                       md->bin.ptx_size, c->err) ||
                qc_artifact_writer_add(c->w, QCRT_SEC_KERNELS, cubin, target, md->bin.cubin,
                                       md->bin.cubin_size, c->err))
                return -1;
        }
    }
    return 0;
}

int qc_artifact_write_model(const qc_model *m, const char *path, const qc_artifact_model_opts *o,
                            qc_artifact_stats *stats, qc_err *err) {
    tok_part tok[2] = {{{0}, NULL, 0}, {{0}, NULL, 0}};
    int n_tok = 0, rc = -1, n_objs = 0;
    int n_targets = o && o->n_cpu_targets > 0 ? o->n_cpu_targets : 0;
    int n_archs = o && o->n_cuda_archs > 0 ? o->n_cuda_archs : 0, n_cuda_objs = 0;
    wctx c = {.m = m,
              .tensors = json_object(),
              .layers = json_array(),
              .cuda = n_archs > 0,
              .err = err};
    qc_cuda_object *cuda_objs = qc_calloc((size_t)n_archs + 1, sizeof *cuda_objs, err);
    json_t *man = NULL, *kernels = json_array();
    char *text = NULL;
    qc_cpu_object *objs = qc_calloc((size_t)n_targets + 1, sizeof *objs, err);
    if (stats) memset(stats, 0, sizeof *stats);
    if (!objs || !cuda_objs) goto out;
    if (!c.tensors || !c.layers || !kernels ||
        !(c.specs = qc_calloc(2 * (size_t)m->n_quant + 1, sizeof *c.specs, err)) ||
        !(c.cuda_specs = qc_calloc((size_t)m->n_quant + 1, sizeof *c.cuda_specs, err))) {
        qc_err_set(err, "out of memory");
        goto out;
    }
    /* Dry run for the manifest's tensor and layer lists, so the manifest can
     * be the first section without holding every tensor in memory; it also
     * collects the kernel specs to generate. */
    if (write_tensors(&c) || collect_tokenizer(m, tok, &n_tok, err)) goto out;
    if (generate_kernels(&c, o, objs, &n_objs, kernels, stats)) goto out;
    if (generate_cuda(&c, o, cuda_objs, &n_cuda_objs, kernels, stats)) goto out;
    if (!(man = build_manifest(&c, tok, n_tok, kernels, o))) goto out;
    text = json_dumps(man, JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!text) {
        qc_err_set(err, "out of memory");
        goto out;
    }
    if (!(c.w = qc_artifact_writer_new(path, o ? &o->compress : NULL, err))) goto out;
    if (stats) {
        stats->n_layers = m->n_quant;
        stats->n_packed = c.n_packed;
        stats->n_cuda_packed = c.n_cuda_specs;
    }
    json_object_clear(c.tensors);
    json_array_clear(c.layers);
    if (qc_artifact_writer_add(c.w, QCRT_SEC_MANIFEST, QC_ARTIFACT_MANIFEST, NULL, text,
                               strlen(text), err))
        goto out;
    for (int i = 0; i < n_tok; i++)
        if (qc_artifact_writer_add(c.w, QCRT_SEC_TOKENIZER, tok[i].name, NULL, tok[i].data,
                                   tok[i].size, err))
            goto out;
    if (write_tensors(&c)) goto out;
    for (int i = 0; i < n_objs; i++) {
        const char *sec = json_string_value(json_object_get(json_array_get(kernels, i), "section"));
        if (qc_artifact_writer_add(c.w, QCRT_SEC_KERNELS, sec, objs[i].target, objs[i].so,
                                   objs[i].so_size, err))
            goto out;
    }
    if (write_cuda_sections(&c, cuda_objs, n_cuda_objs)) goto out;
    if (stats) {
        qc_artifact_writer_sizes(c.w, &stats->raw_bytes, &stats->stored_bytes);
        stats->n_sections = 1 + n_tok + (int)json_object_size(c.tensors) + n_objs;
        for (int i = 0; i < n_cuda_objs; i++)
            stats->n_sections += 2 * cuda_objs[i].n_mods;
    }
    if (qc_artifact_writer_finish(c.w, err)) goto out;
    if (stats) {
        struct stat sb;
        stats->file_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    }
    rc = 0;
out:
    qc_artifact_writer_free(c.w);
    for (int i = 0; i < n_tok; i++)
        free(tok[i].data);
    for (int i = 0; i < n_objs; i++)
        qc_cpu_object_free(&objs[i]);
    free(objs);
    for (int i = 0; i < n_cuda_objs; i++)
        qc_cuda_object_free(&cuda_objs[i]);
    free(cuda_objs);
    free(c.specs);
    free(c.cuda_specs);
    free(text);
    json_decref(man);
    json_decref(kernels);
    json_decref(c.tensors);
    json_decref(c.layers);
    return rc;
}
