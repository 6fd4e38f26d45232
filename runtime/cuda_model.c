/* The GPU forward pass (cuda_model.h). */
#include "cuda_model.h"

#include "../codegen/cuda_codegen.h"
#include "../codegen/cuda_forward.h"
#include "../codegen/cuda_pack.h"
#include "../codegen/cuda_src.h"
#include "../compiler/dequant.h"
#include "../compiler/hadamard.h"
#include "../compiler/quant.h"
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A linear on the GPU: a generated kernel on a CUDA blob, or the dense
 * kernel on f16 weights (out × xs, zero padded). */
typedef struct glinear {
    int64_t out, in, xs;    /* xs: f16 elements between tokens of x (round8(in)) */
    qcrt_cuda_fn gemv, lrt; /* generated; NULL for dense */
    qcrt_cuda_fn gemm[4];   /* generated GEMM for 8, 16, 32, 64 tokens per block */
    qcrt_cuda_fn had;       /* online Hadamard (H x as f16 for lrt and the GEMM); NULL: none */
    unsigned grid, block, lrt_grid, lrt_block, gemm_grid, had_block;
    unsigned gemv_smem, had_smem; /* dynamic shared memory of gemv and had */
    int rank;
    qcrt_dptr w, bias; /* bias f32 (out) or 0 */
} glinear;

typedef struct gblock {
    qcrt_dptr attn_norm, ffn_norm, q_norm, k_norm;
    glinear q, k, v, o, gate, up, down;
} gblock;

enum { F_EMBED, F_RMSNORM, F_QPREP, F_KVSTORE, F_ATTN, F_SWIGLU, F_BIAS, F_DENSE1, F_DENSE8, F_N };
static const char *const fwd_names[F_N] = {"qcf_embed",   "qcf_rmsnorm",   "qcf_qprep",
                                           "qcf_kvstore", "qcf_attention", "qcf_swiglu",
                                           "qcf_bias",    "qcf_dense1",    "qcf_dense8"};

struct qcrt_cuda_model {
    qcrt_cuda *cu;
    qc_config cfg;
    const qc_cuda_kernel_set *set;
    qcrt_cuda_module **mods; /* loaded, parallel to set->mods */
    qcrt_cuda_fn f[F_N];
    qcrt_dptr embed, final_norm;
    gblock *blocks;
    glinear head;
    int max_rank, n_generated, n_dense;
    int n_fused, n_folded; /* online Hadamards in generated kernels, folded into dense weights */
    int64_t max_had_xs;    /* widest x (f16 stride) a had kernel writes */
    char desc[512];
};

struct qcrt_cuda_state {
    qcrt_cuda_model *g;
    int max_ctx, max_batch;
    qcrt_dptr kc, vc, cos, sin;        /* [layer][ctx][kvd] f32; [ctx][hd/2] */
    qcrt_dptr x, y, q, kn, vn, hg, hu; /* f32: n × dim, dim, qd, kvd, kvd, ffn, ffn */
    qcrt_dptr xd, xa, xf;              /* f16 linear inputs: n × round8(dim / qd / ffn) */
    qcrt_dptr ws, logits, tok, meta;
    qcrt_dptr xh;           /* f16 H x of a linear with an online Hadamard: n × max_had_xs */
    qcrt_cuda_graph decode; /* one token with logits, captured on first use */
};

static int64_t round8(int64_t v) {
    return (v + 7) / 8 * 8;
}

/* ---- choosing and loading the kernel set ---- */

/* "sm_90a" -> 90, suffix 'a' (0 when none). */
static int arch_number(const char *a, char *suffix) {
    int n = atoi(a + 3);
    size_t l = strlen(a);
    *suffix = l > 3 && (a[l - 1] == 'a' || a[l - 1] == 'f') ? a[l - 1] : 0;
    return n;
}

/* The set to load and whether to load its PTX (see cuda_model.h). */
static const qc_cuda_kernel_set *pick_set(const qc_model *m, const char *dev, int *use_ptx,
                                          qc_err *err) {
    char ds, ss;
    int dn = arch_number(dev, &ds),
        force_ptx = getenv("QUANTC_CUDA_PTX") && !strcmp(getenv("QUANTC_CUDA_PTX"), "1");
    const qc_cuda_kernel_set *best = NULL;
    for (int pass = 0; pass < 3 && !best; pass++)
        for (int i = 0; i < m->n_cuda && !best; i++) {
            const qc_cuda_kernel_set *s = &m->cuda[i];
            int sn = arch_number(s->arch, &ss);
            int exact = !strcmp(s->arch, dev) || (sn == dn && !ss);
            if (pass == 0 && !force_ptx && exact) best = s, *use_ptx = 0;
            if (pass == 1 && !force_ptx && !ss && sn / 10 == dn / 10 && sn <= dn)
                best = s, *use_ptx = 0;
            if (pass == 2 && sn <= dn && (!ss || exact)) best = s, *use_ptx = 1;
        }
    if (best) return best;
    char have[256] = "";
    for (int i = 0, at = 0; i < m->n_cuda && at < (int)sizeof have - 20; i++)
        at += snprintf(have + at, sizeof have - (size_t)at, "%s%s", i ? ", " : "", m->cuda[i].arch);
    qc_err_set(err,
               "%s: none of its CUDA kernel sets (%s) runs on this GPU (%s); recompile with "
               "--target cuda:%s",
               m->path ? m->path : "model", m->n_cuda ? have : "none", dev, dev);
    return NULL;
}

static int load_modules(qcrt_cuda_model *g, const qc_model *m, qc_err *err) {
    const char *dev = qcrt_cuda_device(g->cu)->arch;
    int use_ptx = 0;
    if (m->n_cuda == 0)
        return qc_err_set(err,
                          "%s: has no CUDA kernels (compile it with --target cuda:%s, e.g. "
                          "`quantc compile MODEL -r RECIPE -o OUT.qc --target cuda:%s`)",
                          m->path ? m->path : "model", dev, dev);
    if (!(g->set = pick_set(m, dev, &use_ptx, err))) return -1;
    if (!(g->mods = qc_calloc((size_t)g->set->n_mods + 1, sizeof *g->mods, err))) return -1;
    for (int i = 0; i < g->set->n_mods; i++) {
        const qc_cuda_module_ref *r = &g->set->mods[i];
        if (qcrt_cuda_module_load(g->cu, use_ptx ? (const void *)r->ptx : r->cubin, &g->mods[i],
                                  err))
            return qc_err_prefix(err, "%s: CUDA module '%s' (%s %s)", m->path, r->name,
                                 g->set->arch, use_ptx ? "PTX" : "CUBIN");
        if (!strcmp(r->name, QC_CUDA_FORWARD_MODULE))
            for (int f = 0; f < F_N; f++)
                if (qcrt_cuda_function(g->cu, g->mods[i], fwd_names[f], &g->f[f], err))
                    return qc_err_prefix(err, "%s: forward module", m->path);
    }
    const qcrt_cuda_info *d = qcrt_cuda_device(g->cu);
    snprintf(g->desc, sizeof g->desc, "%s (%s), kernels %s %s", d->name, d->arch, g->set->arch,
             use_ptx ? "PTX (JIT)" : "CUBIN");
    return 0;
}

/* ---- weights ---- */

static int upload(qcrt_cuda_model *g, const void *p, size_t bytes, qcrt_dptr *d, qc_err *err) {
    if (qcrt_cuda_alloc(g->cu, bytes, d, err)) return -1;
    return qcrt_cuda_upload(g->cu, *d, p, bytes, err);
}

/* An f32 tensor of the model to the GPU (cols 0: 1-D). */
static int upload_tensor(qcrt_cuda_model *g, const qc_model *m, const char *name, int64_t rows,
                         int64_t cols, qcrt_dptr *d, qc_err *err) {
    float *t = qcrt_load_tensor(m, name, rows, cols, err);
    if (!t) return -1;
    int rc = upload(g, t, (size_t)(rows * (cols ? cols : 1)) * sizeof(float), d, err);
    free(t);
    return rc;
}

/* Dense f16 weights from f32 w (out × in; consumed). online > 0: the layer
 * reads H_online·x / sqrt(online) (compiler/hadamard.h), folded into the
 * weight: W·(T x) = (W T) x, each row w ← Tᵀ w. */
static int dense_linear(qcrt_cuda_model *g, float *w, int64_t out, int64_t in, int online,
                        glinear *l, qc_err *err) {
    l->out = out, l->in = in, l->xs = round8(in);
    if (online > 0) {
        qc_hadamard *h = online == in ? qc_hadamard_new(online, err) : NULL;
        if (!h) {
            if (online != in)
                qc_err_set(err, "online Hadamard of size %d on a linear with %lld inputs", online,
                           (long long)in);
            free(w);
            return -1;
        }
        qc_hadamard_apply(h, w, out, 1, 1.0f / sqrtf((float)online));
        qc_hadamard_free(h);
        g->n_folded++;
    }
    size_t n = (size_t)out * (size_t)l->xs;
    uint16_t *h = qc_calloc(n, sizeof *h, err);
    int rc = -1;
    if (h) {
        for (int64_t o = 0; o < out; o++)
            for (int64_t c = 0; c < in; c++)
                h[o * l->xs + c] = qc_f32_to_f16(w[o * in + c]);
        rc = upload(g, h, n * sizeof *h, &l->w, err);
    }
    free(h);
    free(w);
    g->n_dense += rc == 0;
    return rc;
}

/* The generated kernel of a quantized linear with a CUDA blob; online > 0:
 * the kernel of its spec with that online Hadamard (the blob is the plain
 * spec's). Returns 1 when the kernel set has no module for a transform
 * (the caller folds the transform into a dense weight instead). */
static int generated_linear(qcrt_cuda_model *g, const qc_qlinear *ql, int online, glinear *l,
                            qc_err *err) {
    qc_kernel_spec spec;
    char id[96];
    if (qc_kernel_spec_from_quant(ql->q, ql->q->nnz > 0, ql->q->rank, &spec, err)) return -1;
    if (online > 0) spec.transform = QC_KTRANSFORM_HADAMARD, spec.transform_size = online;
    if (qc_kernel_spec_id(&spec, id, sizeof id) < 0) return qc_err_set(err, "kernel id too long");
    int mi = -1;
    for (int i = 0; i < g->set->n_mods && mi < 0; i++)
        if (!strcmp(g->set->mods[i].name, id)) mi = i;
    if (mi < 0 && online > 0) return 1;
    if (mi < 0) return qc_err_set(err, "no CUDA kernel %s in the %s kernel set", id, g->set->arch);
    const qc_cuda_module_ref *r = &g->set->mods[mi];
    qc_cuda_gemv_opts o = {r->rtb, r->warps, r->prefetch, r->min_blocks, r->gemm};
    qc_cuda_kernel k;
    if (qc_cuda_src_gemv_opts(&spec, &o, &k, err)) return -1;
    int rc = qcrt_cuda_function(g->cu, g->mods[mi], k.gemv, &l->gemv, err);
    if (rc == 0 && k.lrt[0]) rc = qcrt_cuda_function(g->cu, g->mods[mi], k.lrt, &l->lrt, err);
    for (int t = 0; rc == 0 && k.gemm[0] && t < 4; t++) {
        char name[160];
        snprintf(name, sizeof name, "%s%d", k.gemm, 8 << t);
        rc = qcrt_cuda_function(g->cu, g->mods[mi], name, &l->gemm[t], err);
    }
    if (rc == 0 && k.had[0]) {
        rc = qcrt_cuda_function(g->cu, g->mods[mi], k.had, &l->had, err);
        if (rc == 0) rc = qcrt_cuda_fn_set_shared(g->cu, l->gemv, k.gemv_smem, err);
        if (rc == 0) rc = qcrt_cuda_fn_set_shared(g->cu, l->had, k.had_smem, err);
        l->had_block = k.had_block;
        l->gemv_smem = (unsigned)k.gemv_smem, l->had_smem = (unsigned)k.had_smem;
        if (qc_cuda_x_stride(&spec) > g->max_had_xs) g->max_had_xs = qc_cuda_x_stride(&spec);
        g->n_fused += rc == 0;
    }
    l->out = spec.out, l->in = spec.in, l->xs = qc_cuda_x_stride(&spec);
    l->grid = k.grid, l->block = k.block, l->lrt_grid = k.lrt_grid, l->lrt_block = k.lrt_block;
    l->gemm_grid = k.gemm_grid;
    l->rank = spec.rank;
    qc_cuda_kernel_free(&k);
    if (rc == 0) rc = upload(g, ql->cuda_packed, ql->cuda_packed_size, &l->w, err);
    if (l->rank > g->max_rank) g->max_rank = l->rank;
    g->n_generated += rc == 0;
    return rc;
}

/* Weight `name` (+ bias) as a GPU linear: generated kernel, dequantized
 * dense, or the full-precision tensor as dense. */
static int load_linear(qcrt_cuda_model *g, const qc_model *m, const char *name, const char *bias,
                       int64_t rows, int64_t cols, glinear *l, qc_err *err) {
    const qc_qlinear *ql = qc_model_qlinear(m, name);
    int rc = 1, online = qc_model_online_hadamard(m, name);
    if (ql && (ql->q->rows != rows || ql->q->cols != cols))
        return qc_err_set(err, "%s: quantized '%s' is %lld × %lld, expected %lld × %lld", m->path,
                          name, (long long)ql->q->rows, (long long)ql->q->cols, (long long)rows,
                          (long long)cols);
    if (ql && ql->cuda_packed) rc = generated_linear(g, ql, online, l, err);
    if (rc == 1 && ql) {
        float *w = qc_malloc((size_t)(rows * cols) * sizeof(float), err);
        if (w) qc_quant_dequantize(ql->q, w);
        rc = w ? dense_linear(g, w, rows, cols, online, l, err) : -1;
    } else if (rc == 1) {
        float *w = qcrt_load_tensor(m, name, rows, cols, err);
        rc = w ? dense_linear(g, w, rows, cols, online, l, err) : -1;
    }
    if (rc) return qc_err_prefix(err, "%s: '%s'", m->path, name);
    return bias ? upload_tensor(g, m, bias, rows, 0, &l->bias, err) : 0;
}

static int load_block(qcrt_cuda_model *g, const qc_model *m, int i, gblock *b, qc_err *err) {
    const qc_config *c = &m->cfg;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    static const char *const lin[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
    glinear *ls[7] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    const int64_t shape[7][2] = {{qd, c->dim},        {kvd, c->dim},        {kvd, c->dim},
                                 {c->dim, qd},        {c->ffn_dim, c->dim}, {c->ffn_dim, c->dim},
                                 {c->dim, c->ffn_dim}};
    char name[192], bias[192];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
    if (upload_tensor(g, m, name, c->dim, 0, &b->attn_norm, err)) return -1;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
    if (upload_tensor(g, m, name, c->dim, 0, &b->ffn_norm, err)) return -1;
    if (c->qk_norm) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", i);
        if (upload_tensor(g, m, name, c->head_dim, 0, &b->q_norm, err)) return -1;
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", i);
        if (upload_tensor(g, m, name, c->head_dim, 0, &b->k_norm, err)) return -1;
    }
    for (int k = 0; k < 7; k++) {
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, lin[k]);
        snprintf(bias, sizeof bias, "model.layers.%d.%s.bias", i, lin[k]);
        if (load_linear(g, m, name, c->attn_bias && k < 3 ? bias : NULL, shape[k][0], shape[k][1],
                        ls[k], err))
            return -1;
    }
    return 0;
}

static void free_linear(qcrt_cuda *cu, glinear *l) {
    qcrt_cuda_free(cu, l->w);
    qcrt_cuda_free(cu, l->bias);
}

void qcrt_cuda_model_free(qcrt_cuda_model *g) {
    if (!g) return;
    for (int i = 0; g->blocks && i < g->cfg.n_layers; i++) {
        gblock *b = &g->blocks[i];
        qcrt_dptr p[] = {b->attn_norm, b->ffn_norm, b->q_norm, b->k_norm};
        for (size_t k = 0; k < sizeof p / sizeof *p; k++)
            qcrt_cuda_free(g->cu, p[k]);
        glinear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
        for (size_t k = 0; k < sizeof ls / sizeof *ls; k++)
            free_linear(g->cu, ls[k]);
    }
    free(g->blocks);
    free_linear(g->cu, &g->head);
    qcrt_cuda_free(g->cu, g->embed);
    qcrt_cuda_free(g->cu, g->final_norm);
    for (int i = 0; g->mods && i < g->set->n_mods; i++)
        qcrt_cuda_module_free(g->cu, g->mods[i]);
    free(g->mods);
    qcrt_cuda_close(g->cu);
    free(g);
}

int qcrt_cuda_model_new(const qc_model *m, qcrt_cuda_model **out, qc_err *err) {
    const qc_config *c = &m->cfg;
    *out = NULL;
    if (c->head_dim > QCF_MAX_HEAD_DIM || c->head_dim % 4)
        return qc_err_set(err, "CUDA runtime: head_dim %d (supported: multiples of 4 up to %d)",
                          c->head_dim, QCF_MAX_HEAD_DIM);
    qcrt_cuda_model *g = qc_calloc(1, sizeof *g, err);
    if (!g) return -1;
    g->cfg = *c;
    int rc = qcrt_cuda_open(0, &g->cu, err);
    if (rc) {
        free(g);
        return rc;
    }
    if (load_modules(g, m, err) ||
        !(g->blocks = qc_calloc((size_t)c->n_layers, sizeof *g->blocks, err)) ||
        upload_tensor(g, m, "model.embed_tokens.weight", c->vocab, c->dim, &g->embed, err) ||
        upload_tensor(g, m, "model.norm.weight", c->dim, 0, &g->final_norm, err))
        goto fail;
    for (int i = 0; i < c->n_layers; i++)
        if (load_block(g, m, i, &g->blocks[i], err)) goto fail;
    const char *head = c->tied_embeddings && !qc_model_qlinear(m, "lm_head.weight")
                           ? "model.embed_tokens.weight"
                           : "lm_head.weight";
    if (load_linear(g, m, head, NULL, c->vocab, c->dim, &g->head, err)) goto fail;
    size_t at = strlen(g->desc);
    snprintf(g->desc + at, sizeof g->desc - at, "; %d linears on generated kernels, %d dense f16",
             g->n_generated, g->n_dense);
    at = strlen(g->desc);
    if (g->n_fused + g->n_folded)
        snprintf(g->desc + at, sizeof g->desc - at,
                 "; online Hadamard: %d in generated kernels, %d folded into dense weights",
                 g->n_fused, g->n_folded);
    *out = g;
    return 0;
fail:
    qcrt_cuda_model_free(g);
    return -1;
}

const char *qcrt_cuda_model_describe(const qcrt_cuda_model *g) {
    return g->desc;
}

/* ---- state ---- */

void qcrt_cuda_state_free(qcrt_cuda_state *s) {
    if (!s) return;
    qcrt_cuda_graph_free(s->g->cu, s->decode);
    qcrt_dptr p[] = {s->kc, s->vc, s->cos, s->sin, s->x,  s->y,      s->q,   s->kn,   s->vn, s->hg,
                     s->hu, s->xd, s->xa,  s->xf,  s->ws, s->logits, s->tok, s->meta, s->xh};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        qcrt_cuda_free(s->g->cu, p[i]);
    free(s);
}

/* A zeroed device buffer of a × b × elem bytes (overflow-checked). */
static int zalloc(qcrt_cuda *cu, size_t a, size_t b, size_t elem, qcrt_dptr *d, qc_err *err) {
    size_t n;
    if (qc_mul_size(a, b, &n) || qc_mul_size(n, elem, &n))
        return qc_err_set(err, "CUDA state: size overflows");
    if (qcrt_cuda_alloc(cu, n, d, err)) return -1;
    return qcrt_cuda_memset(cu, *d, 0, n, err);
}

qcrt_cuda_state *qcrt_cuda_state_new(qcrt_cuda_model *g, int max_ctx, int max_batch,
                                     const float *cos_t, const float *sin_t, qc_err *err) {
    const qc_config *c = &g->cfg;
    if (max_batch > 65535) max_batch = 65535; /* grid.y */
    qcrt_cuda_state *s = qc_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    s->g = g, s->max_ctx = max_ctx, s->max_batch = max_batch;
    size_t nb = (size_t)max_batch, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t qd = (size_t)c->n_heads * c->head_dim, half = (size_t)c->head_dim / 2;
    qcrt_cuda *cu = g->cu;
    if (zalloc(cu, (size_t)c->n_layers * max_ctx, kvd, 4, &s->kc, err) ||
        zalloc(cu, (size_t)c->n_layers * max_ctx, kvd, 4, &s->vc, err) ||
        zalloc(cu, (size_t)max_ctx, half, 4, &s->cos, err) ||
        zalloc(cu, (size_t)max_ctx, half, 4, &s->sin, err) ||
        qcrt_cuda_upload(cu, s->cos, cos_t, (size_t)max_ctx * half * 4, err) ||
        qcrt_cuda_upload(cu, s->sin, sin_t, (size_t)max_ctx * half * 4, err) ||
        zalloc(cu, nb, (size_t)c->dim, 4, &s->x, err) ||
        zalloc(cu, nb, (size_t)c->dim, 4, &s->y, err) || zalloc(cu, nb, qd, 4, &s->q, err) ||
        zalloc(cu, nb, kvd, 4, &s->kn, err) || zalloc(cu, nb, kvd, 4, &s->vn, err) ||
        zalloc(cu, nb, (size_t)c->ffn_dim, 4, &s->hg, err) ||
        zalloc(cu, nb, (size_t)c->ffn_dim, 4, &s->hu, err) ||
        zalloc(cu, nb, (size_t)round8(c->dim), 2, &s->xd, err) ||
        zalloc(cu, nb, (size_t)round8((int64_t)qd), 2, &s->xa, err) ||
        zalloc(cu, nb, (size_t)round8(c->ffn_dim), 2, &s->xf, err) ||
        zalloc(cu, nb, (size_t)g->max_rank + 1, 4, &s->ws, err) ||
        zalloc(cu, nb, (size_t)c->vocab, 4, &s->logits, err) ||
        zalloc(cu, nb, 1, 4, &s->tok, err) || zalloc(cu, 4, 1, 4, &s->meta, err) ||
        (g->max_had_xs && zalloc(cu, nb, (size_t)g->max_had_xs, 2, &s->xh, err))) {
        qcrt_cuda_state_free(s);
        return NULL;
    }
    return s;
}

/* ---- forward ---- */

/* y (n × l->out f32) = x (n × l->xs f16) · Wᵀ (+ bias). */
static int linear(qcrt_cuda_state *s, const glinear *l, qcrt_dptr x, qcrt_dptr y, int n,
                  qc_err *err) {
    qcrt_cuda_model *g = s->g;
    int rc, gemv = n == 1 || !l->gemm[0];
    if (l->gemv) {
        /* an online Hadamard: the GEMV applies it itself; lrt and the GEMM
         * read H x from the had kernel (cuda_src.h) */
        qcrt_dptr xt = x;
        if (l->had && (l->lrt || !gemv)) {
            void *a[] = {&x, &s->xh};
            if (qcrt_cuda_launch2(g->cu, l->had, 1, (unsigned)n, l->had_block, l->had_smem, a, err))
                return -1;
            xt = s->xh;
        }
        if (l->lrt) {
            void *a[] = {(void *)&l->w, &xt, &s->ws};
            if (qcrt_cuda_launch2(g->cu, l->lrt, l->lrt_grid, (unsigned)n, l->lrt_block, 0, a, err))
                return -1;
        }
        if (gemv) { /* one launch, blockIdx.y = token */
            void *a[] = {(void *)&l->w, &x, &y, &s->ws};
            rc = qcrt_cuda_launch2(g->cu, l->gemv, l->grid, (unsigned)n, l->block, l->gemv_smem, a,
                                   err);
        } else { /* the GEMM with the fewest tokens per block that cover n, at most 64 */
            int t = n <= 8 ? 0 : n <= 16 ? 1 : n <= 32 ? 2 : 3;
            void *a[] = {(void *)&l->w, &xt, &y, &s->ws, &n};
            rc = qcrt_cuda_launch2(g->cu, l->gemm[t], l->gemm_grid,
                                   (unsigned)((n + (8 << t) - 1) / (8 << t)), l->block, 0, a, err);
        }
    } else {
        int out = (int)l->out, in = (int)l->in, xs = (int)l->xs;
        void *a[] = {(void *)&l->w, &x, &y, &out, &in, &xs, &n};
        rc =
            qcrt_cuda_launch2(g->cu, g->f[n == 1 ? F_DENSE1 : F_DENSE8], (unsigned)(l->out + 7) / 8,
                              n == 1 ? 1u : (unsigned)(n + 7) / 8, 256, 0, a, err);
    }
    if (rc == 0 && l->bias) {
        int out = (int)l->out;
        void *a[] = {&y, (void *)&l->bias, &out};
        rc = qcrt_cuda_launch2(g->cu, g->f[F_BIAS], (unsigned)(out + 255) / 256, (unsigned)n, 256,
                               0, a, err);
    }
    return rc;
}

/* x += res (when non-zero), then y = f16(RMSNorm(x)·w), n rows. */
static int rmsnorm(qcrt_cuda_state *s, qcrt_dptr res, qcrt_dptr w, int n, qc_err *err) {
    int dim = s->g->cfg.dim, ys = (int)round8(dim);
    float eps = s->g->cfg.norm_eps;
    void *a[] = {&s->x, &res, &w, &s->xd, &dim, &ys, &eps};
    return qcrt_cuda_launch2(s->g->cu, s->g->f[F_RMSNORM], 1, (unsigned)n, 256, 0, a, err);
}

/* One block as runtime/forward.c's block_forward, its input already normed
 * into xd; the residual adds are fused into the next RMSNorm (next: the
 * next block's input norm, or the final norm). New keys and values go to
 * the cache at the position in meta, so nothing here depends on it. */
static int block(qcrt_cuda_state *s, int l, int n, qcrt_dptr next, qc_err *err) {
    qcrt_cuda_model *g = s->g;
    const qc_config *c = &g->cfg;
    const gblock *b = &g->blocks[l];
    int heads = c->n_heads, kvh = c->n_kv_heads, hd = c->head_dim;
    int os = (int)round8((int64_t)heads * hd), ffn = c->ffn_dim, hs = (int)round8(ffn);
    size_t layer = (size_t)l * s->max_ctx * kvh * hd * 4;
    qcrt_dptr kl = s->kc + layer, vl = s->vc + layer;
    float scale = 1.0f / sqrtf((float)hd), eps = c->norm_eps;
    if (linear(s, &b->q, s->xd, s->q, n, err) || linear(s, &b->k, s->xd, s->kn, n, err) ||
        linear(s, &b->v, s->xd, s->vn, n, err))
        return -1;
    void *qp[] = {&s->q, (void *)&b->q_norm, &s->cos, &s->sin, &s->meta, &heads, &hd, &eps};
    void *kv[] = {&s->kn,   &s->vn, &kl, &vl, (void *)&b->k_norm, &s->cos, &s->sin,
                  &s->meta, &kvh,   &hd, &eps};
    void *at[] = {&s->q, &kl, &vl, &s->xa, &s->meta, &heads, &kvh, &hd, &os, &scale};
    void *sw[] = {&s->hg, &s->hu, &s->xf, &ffn, &hs};
    if (qcrt_cuda_launch2(g->cu, g->f[F_QPREP], (unsigned)heads, (unsigned)n, 32, 0, qp, err) ||
        qcrt_cuda_launch2(g->cu, g->f[F_KVSTORE], (unsigned)kvh, (unsigned)n, 32, 0, kv, err) ||
        qcrt_cuda_launch2(g->cu, g->f[F_ATTN], (unsigned)heads, (unsigned)n, QCF_ATTN_THREADS, 0,
                          at, err) ||
        linear(s, &b->o, s->xa, s->y, n, err) || rmsnorm(s, s->y, b->ffn_norm, n, err) ||
        linear(s, &b->gate, s->xd, s->hg, n, err) || linear(s, &b->up, s->xd, s->hu, n, err) ||
        qcrt_cuda_launch2(g->cu, g->f[F_SWIGLU], (unsigned)(ffn + 255) / 256, (unsigned)n, 256, 0,
                          sw, err) ||
        linear(s, &b->down, s->xf, s->y, n, err) || rmsnorm(s, s->y, next, n, err))
        return -1;
    return 0;
}

/* The launches of one forward pass of n tokens (tokens and position in
 * tok/meta); logits of the last `rows` tokens into s->logits (0: none). */
static int launches(qcrt_cuda_state *s, int n, int rows, qc_err *err) {
    qcrt_cuda_model *g = s->g;
    const qc_config *c = &g->cfg;
    int dim = c->dim;
    void *a[] = {&s->tok, &g->embed, &s->x, &dim};
    if (qcrt_cuda_launch2(g->cu, g->f[F_EMBED], 1, (unsigned)n, 256, 0, a, err) ||
        rmsnorm(s, 0, g->blocks[0].attn_norm, n, err))
        return -1;
    for (int l = 0; l < c->n_layers; l++)
        if (block(s, l, n, l + 1 < c->n_layers ? g->blocks[l + 1].attn_norm : g->final_norm, err))
            return -1;
    qcrt_dptr last = s->xd + (size_t)(n - rows) * (size_t)round8(dim) * 2;
    return rows ? linear(s, &g->head, last, s->logits, rows, err) : 0;
}

int qcrt_cuda_forward(qcrt_cuda_state *s, int pos, const int32_t *tokens, int n, float *logits,
                      int all_logits, qc_err *err) {
    qcrt_cuda_model *g = s->g;
    int meta[4] = {pos, n, 0, 0}, rows = !logits ? 0 : all_logits ? n : 1;
    if (n <= 0 || n > s->max_batch || pos < 0 || pos + n > s->max_ctx)
        return qc_err_set(err, "CUDA forward: %d tokens at position %d do not fit the state", n,
                          pos);
    if (qcrt_cuda_upload(g->cu, s->tok, tokens, (size_t)n * 4, err) ||
        qcrt_cuda_upload(g->cu, s->meta, meta, sizeof meta, err))
        return -1;
    const char *ng = getenv("QUANTC_CUDA_NO_GRAPH");
    if (n == 1 && rows == 1 && !(ng && !strcmp(ng, "1"))) {
        /* decode: the same launches every token, replayed as one graph */
        if (!s->decode) {
            if (qcrt_cuda_capture_begin(g->cu, err)) return -1;
            int rc = launches(s, 1, 1, err);
            if (qcrt_cuda_capture_end(g->cu, rc != 0, &s->decode, rc ? NULL : err) || rc) return -1;
        }
        if (qcrt_cuda_graph_launch(g->cu, s->decode, err)) return -1;
    } else if (launches(s, n, rows, err)) {
        return -1;
    }
    if (!rows) return qcrt_cuda_sync(g->cu, err);
    return qcrt_cuda_download(g->cu, logits, s->logits, (size_t)rows * g->cfg.vocab * 4, err);
}
