#include "forward.h"

#include "cpu_kernels.h"
#include "cuda_model.h"
#include "pool.h"
#include "rope.h"

#include "compiler/quant.h"

#include "par_blas.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Threads: all heavy work (linears and both attention products) is BLAS,
 * threaded by OpenBLAS; the element-wise steps run on the calling thread.
 * OpenMP regions are deliberately absent: with the pthreads OpenBLAS, libgomp
 * workers that keep spinning after a region starve OpenBLAS' threads, and
 * each region next to an sgemm cost ~20 ms on 2 cores (measured), i.e. a
 * 4-5× slower prefill. */

/* Query rows attended per score matrix: with a causal mask, a chunk of rows
 * only needs keys up to its last row, so prefill skips most of the masked
 * upper triangle while each product stays large enough for BLAS. */
#define ATTN_CHUNK 64

/* Dequantizes tensor `name`, checking its shape (cols = 0 for 1-D). The
 * caller owns the returned array. */
static float *load_tensor(const qc_model *m, const char *name, int64_t rows, int64_t cols,
                          qc_err *err) {
    const qc_tensor *t = qc_model_find(m, name);
    if (!t) {
        qc_err_set(err, "%s: missing tensor '%s'", m->path ? m->path : "model", name);
        return NULL;
    }
    int want_dims = cols ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        qc_err_set(err, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
                   m->path ? m->path : "model", name, (long long)t->shape[0],
                   (long long)(t->n_dims == 2 ? t->shape[1] : 0), (long long)rows, (long long)cols);
        return NULL;
    }
    size_t n;
    if (qc_mul_size((size_t)rows, (size_t)(cols ? cols : 1), &n) ||
        qc_mul_size(n, sizeof(float), &n)) {
        qc_err_set(err, "tensor '%s': size overflows", name);
        return NULL;
    }
    float *out = qc_malloc(n, err);
    if (!out) return NULL;
    if (qc_tensor_to_f32(t, out, err) != 0) {
        free(out);
        return NULL;
    }
    /* The f32 copy is what is used from now on: a compile that reads a
     * model larger than memory block by block keeps only that resident. */
    qc_model_release_tensor(m, t);
    return out;
}

/* The linear of a quantized weight: generated kernels when r has them and
 * the weight is stored packed, else the fake-quant reference. bias may be
 * NULL. online > 0: the weight reads H_online·x; when the kernels apply that
 * transform themselves (artifacts since the CPU codegen fuses it), *fused is
 * set and the caller must not add it. */
static qcrt_linear *quant_linear(const qc_model *m, qcrt_model *r, const qc_qlinear *ql,
                                 const float *bias, int online, int *fused, qc_err *err) {
    const qc_quant_state *q = ql->q;
    if (!r || !r->kernels || !ql->packed) {
        if (r) r->n_reference++;
        return qcrt_linear_fq_new(q, bias, err);
    }
    qc_kernel_spec spec;
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    qc_gemv_prep_fn prep = NULL;
    qc_gemv_rows_fn rows = NULL;
    if (qc_kernel_spec_from_quant(q, q->nnz > 0, q->rank, &spec, err) ||
        qcrt_cpu_kernels_find(r->kernels, &spec, &gemv, &gemm, err)) {
        qc_err_prefix(err, "%s: '%s'", m->path ? m->path : "model", ql->name);
        return NULL;
    }
    if (online > 0) {
        qc_kernel_spec t = spec;
        t.transform = QC_KTRANSFORM_HADAMARD, t.transform_size = online;
        qc_err e = {{0}};
        if (!qcrt_cpu_kernels_find(r->kernels, &t, &gemv, &gemm, &e)) spec = t, *fused = 1;
    }
    if (qcrt_cpu_kernels_find_split(r->kernels, &spec, &prep, &rows)) prep = NULL, rows = NULL;
    qcrt_linear *l = qcrt_linear_cpu_new(&spec, gemv, gemm, prep, rows, ql->packed,
                                         ql->packed_size, bias, r->pool, err);
    if (!l) qc_err_prefix(err, "%s: '%s'", m->path ? m->path : "model", ql->name);
    r->n_generated += l != NULL;
    r->n_fused_transform += l != NULL && spec.transform;
    return l;
}

/* Builds the linear model.layers.<layer>.<base>.weight (+ .bias): f32, or
 * quantized (quant_linear, with online and fused as there) in a compiled
 * model. */
static qcrt_linear *load_linear_t(const qc_model *m, qcrt_model *r, int layer, const char *base,
                                  int64_t rows, int64_t cols, int with_bias, int online,
                                  int *fused, qc_err *err) {
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, base);
    const qc_qlinear *ql = qc_model_qlinear(m, name);
    if (ql) { /* a compiled model */
        const qc_quant_state *q = ql->q;
        float *bq = NULL;
        if (q->rows != rows || q->cols != cols) {
            qc_err_set(err, "%s: quantized '%s' is %lld × %lld, expected %lld × %lld",
                       m->path ? m->path : "model", name, (long long)q->rows, (long long)q->cols,
                       (long long)rows, (long long)cols);
            return NULL;
        }
        if (with_bias) {
            snprintf(name, sizeof name, "model.layers.%d.%s.bias", layer, base);
            if (!(bq = load_tensor(m, name, rows, 0, err))) return NULL;
        }
        qcrt_linear *l = quant_linear(m, r, ql, bq, online, fused, err);
        free(bq);
        return l;
    }
    float *w = load_tensor(m, name, rows, cols, err), *b = NULL;
    if (!w) return NULL;
    if (with_bias) {
        snprintf(name, sizeof name, "model.layers.%d.%s.bias", layer, base);
        if (!(b = load_tensor(m, name, rows, 0, err))) {
            free(w);
            return NULL;
        }
    }
    qcrt_linear *l = qcrt_linear_f32_new(w, b, rows, cols, err);
    if (!l) {
        free(w);
        free(b);
    }
    return l;
}

static qcrt_linear *load_linear(const qc_model *m, qcrt_model *r, int layer, const char *base,
                                int64_t rows, int64_t cols, int with_bias, qc_err *err) {
    int fused = 0;
    return load_linear_t(m, r, layer, base, rows, cols, with_bias, 0, &fused, err);
}

/* load_linear plus the online input transform the IR records for it: in
 * the generated kernels when they apply it, else a wrapper
 * (runtime/linear_online.c). */
static qcrt_linear *load_linear_online(const qc_model *m, qcrt_model *r, int layer,
                                       const char *base, int64_t rows, int64_t cols,
                                       int with_bias, qc_err *err) {
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, base);
    int n = qc_model_online_hadamard(m, name), fused = 0;
    qcrt_linear *l = load_linear_t(m, r, layer, base, rows, cols, with_bias, n, &fused, err);
    if (!l || n <= 0 || fused) return l;
    qcrt_linear *o = qcrt_linear_online_new(l, n, err);
    if (!o) qcrt_linear_free(l);
    return o;
}

static float *load_norm(const qc_model *m, int layer, const char *base, int64_t n, qc_err *err) {
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, base);
    return load_tensor(m, name, n, 0, err);
}

static int block_load(const qc_model *m, qcrt_model *r, int l, qcrt_block *b, qc_err *err) {
    memset(b, 0, sizeof *b);
    const qc_config *c = &m->cfg;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int bias = c->attn_bias != 0;
    if (!(b->attn_norm = load_norm(m, l, "input_layernorm", c->dim, err)) ||
        !(b->ffn_norm = load_norm(m, l, "post_attention_layernorm", c->dim, err)))
        return -1;
    if (c->qk_norm && (!(b->q_norm = load_norm(m, l, "self_attn.q_norm", c->head_dim, err)) ||
                       !(b->k_norm = load_norm(m, l, "self_attn.k_norm", c->head_dim, err))))
        return -1;
    if (!(b->q = load_linear(m, r, l, "self_attn.q_proj", qd, c->dim, bias, err)) ||
        !(b->k = load_linear(m, r, l, "self_attn.k_proj", kvd, c->dim, bias, err)) ||
        !(b->v = load_linear(m, r, l, "self_attn.v_proj", kvd, c->dim, bias, err)) ||
        !(b->o = load_linear(m, r, l, "self_attn.o_proj", c->dim, qd, 0, err)) ||
        !(b->gate = load_linear(m, r, l, "mlp.gate_proj", c->ffn_dim, c->dim, 0, err)) ||
        !(b->up = load_linear(m, r, l, "mlp.up_proj", c->ffn_dim, c->dim, 0, err)) ||
        !(b->down = load_linear_online(m, r, l, "mlp.down_proj", c->dim, c->ffn_dim, 0, err)))
        return -1;
    return 0;
}

int qcrt_block_load(const qc_model *m, int l, qcrt_block *b, qc_err *err) {
    return block_load(m, NULL, l, b, err);
}

static int check_config(const qc_config *c, qc_err *err) {
    if (c->n_layers <= 0 || c->dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->head_dim % 2 || c->ffn_dim <= 0 || c->vocab <= 0 ||
        c->n_heads % c->n_kv_heads || !(c->norm_eps > 0))
        return qc_err_set(err,
                          "forward: unsupported config (layers %d, hidden %d, heads %d/%d, "
                          "head_dim %d, ffn %d, vocab %d)",
                          c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                          c->vocab);
    return 0;
}

qcrt_model *qcrt_model_shell(const qc_model *m, qc_err *err) {
    const qc_config *c = &m->cfg;
    if (check_config(c, err)) return NULL;
    qcrt_model *r = qc_calloc(1, sizeof *r, err);
    if (!r) return NULL;
    r->cfg = *c;
    if (!(r->blocks = qc_calloc((size_t)c->n_layers, sizeof *r->blocks, err))) goto fail;
    if (!(r->rope_inv_freq = qc_malloc((size_t)c->head_dim / 2 * sizeof(float), err)) ||
        qcrt_rope_inv_freq(c, r->rope_inv_freq, err))
        goto fail;
    return r;
fail:
    qcrt_model_free(r);
    return NULL;
}

float *qcrt_load_tensor(const qc_model *m, const char *name, int64_t rows, int64_t cols,
                        qc_err *err) {
    return load_tensor(m, name, rows, cols, err);
}

/* Picks and loads the kernel set for this host (see qcrt_model_from_ir_opts). */
static int load_kernels(const qc_model *m, qcrt_model *r, const qcrt_model_opts *o, qc_err *err) {
    const char *where = m->path ? m->path : "model";
    if (o->kernels == QCRT_KERNELS_REFERENCE || (m->n_kernels == 0 && o->kernels == QCRT_KERNELS_AUTO))
        return 0;
    if (m->n_kernels == 0)
        return qc_err_set(err, "%s: has no generated kernels (compile it with --target "
                               "cpu:host, or run with --kernels reference)",
                          where);
    char why[1024] = "";
    size_t used = 0;
    for (int i = 0; i < m->n_kernels; i++) {
        const qc_kernel_obj *k = &m->kernels[i];
        qc_err e = {{0}};
        if (qcrt_cpu_target_check(k->target, &e)) {
            int w = snprintf(why + used, sizeof why - used, "%s%s: %s", i ? "; " : "", k->name,
                             e.msg);
            used = w > 0 && used + (size_t)w < sizeof why ? used + (size_t)w : used;
            continue;
        }
        if (!(r->kernels = qcrt_cpu_kernels_load(k->data, k->size, k->target, err)))
            return qc_err_prefix(err, "%s: kernels '%s'", where, k->name);
        snprintf(r->kernels_name, sizeof r->kernels_name, "%s", k->name);
        int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (!(r->pool = qcrt_pool_new(threads > 0 ? threads : 1, err))) return -1;
        return 0;
    }
    return qc_err_set(err,
                      "%s: none of its generated CPU kernels run on this host (%s); recompile "
                      "with --target cpu:host here, or run with --kernels reference",
                      where, why);
}

qcrt_model *qcrt_model_from_ir(const qc_model *m, qc_err *err) {
    qcrt_model_opts o = {.kernels = QCRT_KERNELS_REFERENCE};
    return qcrt_model_from_ir_opts(m, &o, err);
}

qcrt_model *qcrt_model_from_ir_opts(const qc_model *m, const qcrt_model_opts *opts, qc_err *err) {
    int no_device;
    return qcrt_model_from_ir_dev(m, opts, &no_device, err);
}

qcrt_model *qcrt_model_from_ir_dev(const qc_model *m, const qcrt_model_opts *opts, int *no_device,
                                   qc_err *err) {
    const qc_config *c = &m->cfg;
    qcrt_model_opts o = opts ? *opts : (qcrt_model_opts){.kernels = QCRT_KERNELS_AUTO};
    *no_device = 0;
    qcrt_model *r = qcrt_model_shell(m, err);
    if (!r) return NULL;
    if (o.device == QCRT_DEVICE_CUDA) {
        int rc = qcrt_cuda_model_new(m, &r->cuda, err);
        *no_device = rc == QCRT_CUDA_NO_DEVICE;
        if (rc) goto fail;
        return r;
    }
    if (load_kernels(m, r, &o, err)) goto fail;
    if (!(r->embed = load_tensor(m, "model.embed_tokens.weight", c->vocab, c->dim, err)) ||
        !(r->final_norm = load_tensor(m, "model.norm.weight", c->dim, 0, err)))
        goto fail;
    for (int l = 0; l < c->n_layers; l++)
        if (block_load(m, r, l, &r->blocks[l], err)) goto fail;
    const qc_qlinear *hq = qc_model_qlinear(m, "lm_head.weight");
    if (hq) { /* quantized lm_head (tied or not: it has its own codes) */
        if (hq->q->rows != c->vocab || hq->q->cols != c->dim) {
            qc_err_set(err, "%s: quantized 'lm_head.weight' is %lld × %lld, expected %d × %d",
                       m->path ? m->path : "model", (long long)hq->q->rows,
                       (long long)hq->q->cols, c->vocab, c->dim);
            goto fail;
        }
        int fused = 0;
        if (!(r->lm_head = quant_linear(m, r, hq, NULL, 0, &fused, err))) goto fail;
        return r;
    }
    float *head;
    if (c->tied_embeddings) {
        size_t n = (size_t)c->vocab * (size_t)c->dim * sizeof(float);
        if (!(head = qc_malloc(n, err))) goto fail;
        memcpy(head, r->embed, n);
    } else if (!(head = load_tensor(m, "lm_head.weight", c->vocab, c->dim, err))) {
        goto fail;
    }
    if (!(r->lm_head = qcrt_linear_f32_new(head, NULL, c->vocab, c->dim, err))) {
        free(head);
        goto fail;
    }
    return r;
fail:
    qcrt_model_free(r);
    return NULL;
}

void qcrt_block_free(qcrt_block *b) {
    free(b->attn_norm);
    free(b->ffn_norm);
    free(b->q_norm);
    free(b->k_norm);
    qcrt_linear *ls[] = {b->q, b->k, b->v, b->o, b->gate, b->up, b->down};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++)
        qcrt_linear_free(ls[i]);
    memset(b, 0, sizeof *b);
}

void qcrt_model_free(qcrt_model *m) {
    if (!m) return;
    for (int l = 0; m->blocks && l < m->cfg.n_layers; l++)
        qcrt_block_free(&m->blocks[l]);
    free(m->blocks);
    free(m->embed);
    free(m->final_norm);
    qcrt_linear_free(m->lm_head);
    free(m->rope_inv_freq);
    qcrt_cuda_model_free(m->cuda);
    /* Linears above ran kernels from the object and the pool: free those last. */
    qcrt_pool_free(m->pool);
    qcrt_cpu_kernels_free(m->kernels);
    free(m);
}

struct qcrt_state {
    qc_config cfg; /* the model's, to check the state is used with it */
    int max_ctx, max_batch, pos;
    int qd, kvd, chunk;
    float *kcache, *vcache;     /* [layer][max_ctx][kvd] */
    float *rope_cos, *rope_sin; /* [max_ctx][head_dim/2] */
    float *x;                   /* residual stream, max_batch × dim */
    float *xb, *xb2;            /* normed input / linear output, max_batch × dim */
    float *q, *att;             /* max_batch × qd */
    float *hg, *hu;             /* max_batch × ffn */
    float *scores;              /* chunk × max_ctx attention weights */
    struct qcrt_cuda_state *gpu; /* all of the above on the GPU, for a CUDA model */
};

void qcrt_state_free(qcrt_state *s) {
    if (!s) return;
    float *bufs[] = {s->kcache, s->vcache, s->rope_cos, s->rope_sin, s->x,  s->xb,
                     s->xb2,    s->q,      s->att,      s->hg,       s->hu, s->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    qcrt_cuda_state_free(s->gpu);
    free(s);
}

/* Allocates a × b × c floats, overflow-checked. */
static float *alloc3(size_t a, size_t b, size_t c, qc_err *err) {
    size_t n;
    if (qc_mul_size(a, b, &n) || qc_mul_size(n, c, &n) || qc_mul_size(n, sizeof(float), &n)) {
        qc_err_set(err, "forward state: size overflows");
        return NULL;
    }
    return qc_malloc(n, err);
}

qcrt_state *qcrt_state_new(const qcrt_model *m, int max_ctx, int max_batch, qc_err *err) {
    const qc_config *c = &m->cfg;
    if (max_ctx <= 0 || max_batch <= 0) {
        qc_err_set(err, "forward state: max_ctx (%d) and max_batch (%d) must be positive", max_ctx,
                   max_batch);
        return NULL;
    }
    if (max_batch > max_ctx) max_batch = max_ctx;
    qcrt_state *s = qc_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    s->cfg = *c;
    s->max_ctx = max_ctx;
    s->max_batch = max_batch;
    s->qd = c->n_heads * c->head_dim;
    s->kvd = c->n_kv_heads * c->head_dim;
    s->chunk = max_batch < ATTN_CHUNK ? max_batch : ATTN_CHUNK;
    int half = c->head_dim / 2;
    size_t nb = (size_t)max_batch;
    if (m->cuda) { /* RoPE tables made here, everything else on the GPU */
        if (!(s->rope_cos = alloc3((size_t)max_ctx, (size_t)half, 1, err)) ||
            !(s->rope_sin = alloc3((size_t)max_ctx, (size_t)half, 1, err)))
            goto fail;
        qcrt_rope_tables(m->rope_inv_freq, half, max_ctx, s->rope_cos, s->rope_sin);
        if (!(s->gpu = qcrt_cuda_state_new(m->cuda, max_ctx, max_batch, s->rope_cos, s->rope_sin,
                                           err)))
            goto fail;
        return s;
    }
    if (!(s->kcache = alloc3((size_t)c->n_layers, (size_t)max_ctx, (size_t)s->kvd, err)) ||
        !(s->vcache = alloc3((size_t)c->n_layers, (size_t)max_ctx, (size_t)s->kvd, err)) ||
        !(s->rope_cos = alloc3((size_t)max_ctx, (size_t)half, 1, err)) ||
        !(s->rope_sin = alloc3((size_t)max_ctx, (size_t)half, 1, err)) ||
        !(s->x = alloc3(nb, (size_t)c->dim, 1, err)) ||
        !(s->xb = alloc3(nb, (size_t)c->dim, 1, err)) ||
        !(s->xb2 = alloc3(nb, (size_t)c->dim, 1, err)) ||
        !(s->q = alloc3(nb, (size_t)s->qd, 1, err)) ||
        !(s->att = alloc3(nb, (size_t)s->qd, 1, err)) ||
        !(s->hg = alloc3(nb, (size_t)c->ffn_dim, 1, err)) ||
        !(s->hu = alloc3(nb, (size_t)c->ffn_dim, 1, err)) ||
        !(s->scores = alloc3((size_t)s->chunk, (size_t)max_ctx, 1, err)))
        goto fail;
    qcrt_rope_tables(m->rope_inv_freq, half, max_ctx, s->rope_cos, s->rope_sin);
    return s;
fail:
    qcrt_state_free(s);
    return NULL;
}

void qcrt_state_reset(qcrt_state *s) {
    s->pos = 0;
}

int qcrt_state_pos(const qcrt_state *s) {
    return s->pos;
}

/* RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + eps) · w, per row. */
static void rmsnorm(float *y, const float *x, const float *w, int dim, float eps) {
    double ss = 0;
    for (int i = 0; i < dim; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++)
        y[i] = w[i] * (x[i] * inv);
}

static void rmsnorm_rows(float *y, const float *x, const float *w, int n, int dim, float eps) {
    for (int t = 0; t < n; t++)
        rmsnorm(y + (size_t)t * dim, x + (size_t)t * dim, w, dim, eps);
}

/* Softmax over the first `valid` scores of a row (the keys this query may see,
 * causal mask); the masked rest becomes 0 so the P·V product ignores it. */
static void softmax_masked(float *row, int valid, int len) {
    float mx = row[0];
    for (int j = 1; j < valid; j++)
        mx = row[j] > mx ? row[j] : mx;
    float sum = 0;
    for (int j = 0; j < valid; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < valid; j++)
        row[j] *= inv;
    for (int j = valid; j < len; j++)
        row[j] = 0;
}

/* Scaled dot-product attention (Vaswani et al. 2017) for `rows` queries
 * (row r at lda stride) against keys/values 0..len-1 of one kv head:
 * out = softmax(Q·Kᵀ/√d, causal) · V. Query row r sees valid0 + r·step keys. */
static void attend(const qcrt_state *s, const float *q, int lda, int rows, const float *k,
                   const float *v, int len, int valid0, int step, float *out, int ldc) {
    int hd = s->cfg.head_dim, kvd = s->kvd;
    float *S = s->scores;
    qcrt_sgemm(CblasNoTrans, CblasTrans, rows, len, hd, 1.0f / sqrtf((float)hd), q, lda, k, kvd,
               0.0f, S, len);
    for (int r = 0; r < rows; r++)
        softmax_masked(S + (size_t)r * len, valid0 + r * step, len);
    qcrt_sgemm(CblasNoTrans, CblasNoTrans, rows, hd, len, 1.0f, S, len, v, kvd, 0.0f, out, ldc);
}

/* Attention of the n new tokens (queries in s->q, keys/values already in the
 * cache at pos..pos+n-1) over cache positions [0, pos + i]. */
static void attention(qcrt_state *s, int layer, int n) {
    const qc_config *c = &s->cfg;
    int hd = c->head_dim, qd = s->qd, group = c->n_heads / c->n_kv_heads;
    size_t lofs = (size_t)layer * s->max_ctx * s->kvd;
    const float *kc = s->kcache + lofs, *vc = s->vcache + lofs;
    if (n == 1) {
        /* One token: matrix-vector products per head, scores = K·q/√d and
         * out = Vᵀ·p over the pos + 1 cached positions. */
        int len = s->pos + 1;
        for (int h = 0; h < c->n_heads; h++) {
            const float *k = kc + (size_t)(h / group) * hd, *v = vc + (size_t)(h / group) * hd;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, len, hd, 1.0f / sqrtf((float)hd), k, s->kvd,
                        s->q + (size_t)h * hd, 1, 0.0f, s->scores, 1);
            softmax_masked(s->scores, len, len);
            cblas_sgemv(CblasRowMajor, CblasTrans, len, hd, 1.0f, v, s->kvd, s->scores, 1, 0.0f,
                        s->att + (size_t)h * hd, 1);
        }
        return;
    }
    for (int r0 = 0; r0 < n; r0 += s->chunk) {
        int rows = n - r0 < s->chunk ? n - r0 : s->chunk;
        int len = s->pos + r0 + rows;
        for (int h = 0; h < c->n_heads; h++) {
            int kh = h / group;
            attend(s, s->q + (size_t)r0 * qd + (size_t)h * hd, qd, rows, kc + (size_t)kh * hd,
                   vc + (size_t)kh * hd, len, s->pos + r0 + 1, 1,
                   s->att + (size_t)r0 * qd + (size_t)h * hd, qd);
        }
    }
}

/* q/k/v for n tokens: k and v go straight into the cache rows pos..pos+n-1;
 * qwen3 normalises each head of q and k, then RoPE rotates both. */
static void qkv(const qcrt_model *m, qcrt_state *s, const qcrt_block *b, int layer, int n) {
    const qc_config *c = &m->cfg;
    int hd = c->head_dim, half = hd / 2, qd = s->qd, kvd = s->kvd;
    size_t row0 = ((size_t)layer * s->max_ctx + (size_t)s->pos) * kvd;
    float *k = s->kcache + row0, *v = s->vcache + row0;
    b->q->forward(b->q, s->xb, n, s->q);
    b->k->forward(b->k, s->xb, n, k);
    b->v->forward(b->v, s->xb, n, v);
    for (int t = 0; t < n; t++) {
        float *qt = s->q + (size_t)t * qd, *kt = k + (size_t)t * kvd;
        if (b->q_norm) {
            for (int h = 0; h < c->n_heads; h++)
                rmsnorm(qt + h * hd, qt + h * hd, b->q_norm, hd, c->norm_eps);
            for (int h = 0; h < c->n_kv_heads; h++)
                rmsnorm(kt + h * hd, kt + h * hd, b->k_norm, hd, c->norm_eps);
        }
        size_t p = (size_t)(s->pos + t) * half;
        qcrt_rope_apply(qt, c->n_heads, hd, s->rope_cos + p, s->rope_sin + p);
        qcrt_rope_apply(kt, c->n_kv_heads, hd, s->rope_cos + p, s->rope_sin + p);
    }
}

/* SwiGLU MLP (Shazeer 2020): down(silu(gate·x) ⊙ up·x), result in s->xb2. */
static void mlp(qcrt_state *s, const qcrt_block *b, int n) {
    b->gate->forward(b->gate, s->xb, n, s->hg);
    b->up->forward(b->up, s->xb, n, s->hu);
    int64_t total = (int64_t)n * s->cfg.ffn_dim;
    for (int64_t i = 0; i < total; i++) {
        float g = s->hg[i];
        s->hg[i] = g / (1.0f + expf(-g)) * s->hu[i];
    }
    b->down->forward(b->down, s->hg, n, s->xb2);
}

static void add_rows(float *x, const float *y, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        x[i] += y[i];
}

/* One transformer block on the residual stream x (n × dim, in place) for
 * tokens at positions pos..pos+n-1, using and filling layer l's cache. */
static void block_forward(const qcrt_model *m, const qcrt_block *b, qcrt_state *s, int l, float *x,
                          int n) {
    const qc_config *c = &m->cfg;
    int dim = c->dim;
    int64_t nd = (int64_t)n * dim;
    rmsnorm_rows(s->xb, x, b->attn_norm, n, dim, c->norm_eps);
    qkv(m, s, b, l, n);
    attention(s, l, n);
    b->o->forward(b->o, s->att, n, s->xb2);
    add_rows(x, s->xb2, nd);
    rmsnorm_rows(s->xb, x, b->ffn_norm, n, dim, c->norm_eps);
    mlp(s, b, n);
    add_rows(x, s->xb2, nd);
}

int qcrt_block_forward(const qcrt_model *m, const qcrt_block *b, qcrt_state *s, int layer, float *x,
                       int n, qc_err *err) {
    if (layer < 0 || layer >= m->cfg.n_layers)
        return qc_err_set(err, "forward: layer %d out of range", layer);
    if (m->cuda) return qc_err_set(err, "forward: single blocks run on the CPU only");
    if (n <= 0 || n > s->max_batch || n > s->max_ctx - s->pos)
        return qc_err_set(err,
                          "forward: %d tokens at position %d do not fit the state (batch %d, "
                          "context %d)",
                          n, s->pos, s->max_batch, s->max_ctx);
    block_forward(m, b, s, layer, x, n);
    return 0;
}

void qcrt_state_advance(qcrt_state *s, int n) {
    s->pos += n;
}

static int check_forward_args(const qcrt_model *m, const qcrt_state *s, const int32_t *tokens,
                              int n, qc_err *err) {
    const qc_config *c = &m->cfg, *sc = &s->cfg;
    if (sc->n_layers != c->n_layers || sc->dim != c->dim || sc->n_heads != c->n_heads ||
        sc->n_kv_heads != c->n_kv_heads || sc->head_dim != c->head_dim ||
        sc->ffn_dim != c->ffn_dim || sc->vocab != c->vocab)
        return qc_err_set(err, "forward: state was created for a different model");
    if (n <= 0 || !tokens) return qc_err_set(err, "forward: need at least one token (got %d)", n);
    if (n > s->max_batch)
        return qc_err_set(err, "forward: %d tokens exceed the batch limit of %d", n, s->max_batch);
    if (n > s->max_ctx - s->pos)
        return qc_err_set(err,
                          "forward: %d tokens at position %d exceed the context of %d positions", n,
                          s->pos, s->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return qc_err_set(err,
                              "forward: token %d at index %d is outside the vocabulary [0, %d)",
                              (int)tokens[i], i, c->vocab);
    return 0;
}

int qcrt_forward(const qcrt_model *m, qcrt_state *s, const int32_t *tokens, int n, float *logits,
                 int all_logits, qc_err *err) {
    if (check_forward_args(m, s, tokens, n, err)) return -1;
    if (m->cuda) {
        if (qcrt_cuda_forward(s->gpu, s->pos, tokens, n, logits, all_logits, err)) return -1;
        s->pos += n;
        return 0;
    }
    const qc_config *c = &m->cfg;
    int dim = c->dim;
    for (int t = 0; t < n; t++)
        memcpy(s->x + (size_t)t * dim, m->embed + (size_t)tokens[t] * dim,
               (size_t)dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        block_forward(m, &m->blocks[l], s, l, s->x, n);
    s->pos += n;
    if (!logits) return 0;
    int first = all_logits ? 0 : n - 1, rows = n - first;
    rmsnorm_rows(s->xb, s->x + (size_t)first * dim, m->final_norm, rows, dim, c->norm_eps);
    m->lm_head->forward(m->lm_head, s->xb, rows, logits);
    return 0;
}
