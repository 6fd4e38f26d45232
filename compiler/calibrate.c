#include "calibrate.h"
#include "limits.h"

#include "checkpoint.h"

#include "dequant.h"
#include "ggml_quant.h"
#include "quant.h"
#include "runtime/forward.h"
#include "runtime/linear.h"
#include "runtime/par_blas.h"
#include "spill.h"
#include "tokenizer.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>


static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* splitmix64 (Steele et al. 2014): the seeded choice of sample windows. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- statistics capture: a linear wrapper that accumulates Σ x xᵀ ---- */

/* Adds the upper triangle of xᵀx (x: n × in) to H and folds |x| into absmax.
 * One call holds at most a sample's tokens, so f32 sums of n products are
 * accurate; the running total across samples is kept in f64. */
static void accumulate_stats(const float *x, int64_t n, int64_t in, float *tmp, double *H,
                             float *absmax) {
    qcrt_ssyrk_upper((int)n, (int)in, x, tmp);
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = i; j < in; j++)
            H[i * in + j] += tmp[i * in + j];
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < in; j++) {
            float a = fabsf(x[t * in + j]);
            if (a > absmax[j]) absmax[j] = a;
        }
}

/* Makes H (n × n) the symmetric mean (1/count) Σ x xᵀ from its upper half. */
static void finish_gram(double *H, int64_t n, int64_t count) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            H[i * n + j] /= (double)count;
            H[j * n + i] = H[i * n + j];
        }
}

/* A NaN/Inf activation shows on H's diagonal (x_j² summed) or in absmax:
 * the model itself misbehaves on the calibration data, and every statistic
 * after it would be garbage, so this is an error, not a warning. */
static int check_stats(const double *H, const float *absmax, int64_t n, const char *where,
                       qc_err *err) {
    for (int64_t j = 0; j < n; j++)
        if (!isfinite(H[j * n + j]) || !isfinite(absmax[j]))
            return qc_err_set(err,
                              "non-finite activation (or x² overflow) at the input of %s, channel "
                              "%lld, on the calibration data",
                              where, (long long)j);
    return 0;
}

typedef struct capture {
    qcrt_linear *inner;
    double *H;     /* in × in, upper triangle accumulated */
    float *absmax; /* in */
    float *tmp;    /* in × in scratch for one call's XᵀX */
    int64_t count; /* rows seen */
} capture;

static void capture_forward(const qcrt_linear *l, const float *x, int64_t n, float *y) {
    capture *c = l->impl;
    int64_t in = l->in;
    c->inner->forward(c->inner, x, n, y);
    accumulate_stats(x, n, in, c->tmp, c->H, c->absmax);
    c->count += n;
}

static void capture_free(qcrt_linear *l) {
    capture *c = l->impl;
    qcrt_linear_free(c->inner);
    free(c->tmp);
    free(c);
    free(l);
}

/* Wraps *slot in a capture that fills H/absmax (owned by the caller). */
static int capture_wrap(qcrt_linear **slot, double *H, float *absmax, qc_err *err) {
    qcrt_linear *inner = *slot;
    qcrt_linear *l = qc_calloc(1, sizeof *l, err);
    capture *c = qc_calloc(1, sizeof *c, err);
    float *tmp = c ? qc_malloc((size_t)inner->in * (size_t)inner->in * sizeof(float), err) : NULL;
    if (!l || !c || !tmp) {
        free(l);
        free(c);
        free(tmp);
        return -1;
    }
    c->inner = inner;
    c->H = H;
    c->absmax = absmax;
    c->tmp = tmp;
    l->out = inner->out;
    l->in = inner->in;
    l->forward = capture_forward;
    l->free = capture_free;
    l->impl = c;
    *slot = l;
    return 0;
}

/* ---- the block's linears ---- */

enum { N_LIN = QC_CALIB_MAX_LINEARS, N_GROUPS = 4 };
static const struct {
    const char *module; /* under model.layers.N. */
    const char *kind;
    int group; /* which input statistics it shares */
} lin_desc[N_LIN] = {
    {"self_attn.q_proj", "q_proj", 0}, {"self_attn.k_proj", "k_proj", 0},
    {"self_attn.v_proj", "v_proj", 0}, {"self_attn.o_proj", "o_proj", 1},
    {"mlp.gate_proj", "gate_proj", 2}, {"mlp.up_proj", "up_proj", 2},
    {"mlp.down_proj", "down_proj", 3},
};

typedef struct calib_stats {
    double *H[N_GROUPS];
    float *absmax[N_GROUPS];
    int64_t dim[N_GROUPS];
} calib_stats;

/* Where linear i of a block sits; for a linear with an online transform
 * (runtime/linear_online.c), the inner linear, which reads the transformed
 * input: its statistics are the ones the stored weight is quantized with. */
static qcrt_linear **block_slot(qcrt_block *b, int i) {
    qcrt_linear **slots[N_LIN] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    qcrt_linear **inner = qcrt_linear_online_inner(*slots[i]);
    return inner ? inner : slots[i];
}

static void free_calib_block(qc_calib_block *cb) {
    for (int i = 0; i < cb->n_linears; i++) {
        qc_calib_linear *l = &cb->linears[i];
        free((char *)l->name);
        free(l->w);
        free(l->bias);
        free(l->deq);
        free(l->blocks);
        free(l->outliers);
        qc_quant_state_free(l->q);
    }
    free(cb->linears);
    cb->linears = NULL;
    cb->n_linears = 0;
}

static int load_calib_block(const qc_model *m, int b, calib_stats *st, qc_calib_block *cb,
                            qc_err *err) {
    const qc_config *c = &m->cfg;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t shapes[N_LIN][2] = {
        {qd, c->dim},         {kvd, c->dim},        {kvd, c->dim},       {c->dim, qd},
        {c->ffn_dim, c->dim}, {c->ffn_dim, c->dim}, {c->dim, c->ffn_dim}};
    cb->index = b;
    cb->linears = qc_calloc(N_LIN, sizeof *cb->linears, err);
    if (!cb->linears) return -1;
    cb->n_linears = N_LIN;
    char name[192];
    for (int i = 0; i < N_LIN; i++) {
        qc_calib_linear *l = &cb->linears[i];
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", b, lin_desc[i].module);
        l->name = strdup(name);
        l->kind = lin_desc[i].kind;
        l->rows = shapes[i][0];
        l->cols = shapes[i][1];
        if (!l->name) return qc_err_set(err, "out of memory");
        if (!(l->w = qcrt_load_tensor(m, name, l->rows, l->cols, err))) return -1;
        if (c->attn_bias && i < 3) {
            snprintf(name, sizeof name, "model.layers.%d.%s.bias", b, lin_desc[i].module);
            if (!(l->bias = qcrt_load_tensor(m, name, l->rows, 0, err))) return -1;
        }
        int g = lin_desc[i].group;
        l->H = st->H[g];
        l->act_absmax = st->absmax[g];
        for (int64_t k = 0; k < l->rows * l->cols; k++)
            if (!isfinite(l->w[k]))
                return qc_err_set(err, "%s: non-finite weight at row %lld, column %lld", l->name,
                                  (long long)(k / l->cols), (long long)(k % l->cols));
    }
    return 0;
}

static int stats_alloc(const qc_config *c, calib_stats *st, qc_err *err) {
    int64_t dims[N_GROUPS] = {c->dim, (int64_t)c->n_heads * c->head_dim, c->dim, c->ffn_dim};
    for (int g = 0; g < N_GROUPS; g++) {
        st->dim[g] = dims[g];
        st->H[g] = qc_calloc((size_t)(dims[g] * dims[g]), sizeof(double), err);
        st->absmax[g] = qc_calloc((size_t)dims[g], sizeof(float), err);
        if (!st->H[g] || !st->absmax[g]) return -1;
    }
    return 0;
}

static void stats_reset(calib_stats *st) {
    for (int g = 0; g < N_GROUPS; g++) {
        memset(st->H[g], 0, (size_t)(st->dim[g] * st->dim[g]) * sizeof(double));
        memset(st->absmax[g], 0, (size_t)st->dim[g] * sizeof(float));
    }
}

static void stats_free(calib_stats *st) {
    for (int g = 0; g < N_GROUPS; g++) {
        free(st->H[g]);
        free(st->absmax[g]);
    }
}

static int stats_finish(calib_stats *st, int64_t count, int b, qc_err *err) {
    static const char *const group_name[N_GROUPS] = {"q/k/v_proj", "o_proj", "gate/up_proj",
                                                     "down_proj"};
    char where[64];
    for (int g = 0; g < N_GROUPS; g++) {
        finish_gram(st->H[g], st->dim[g], count);
        snprintf(where, sizeof where, "block %d %s", b, group_name[g]);
        if (check_stats(st->H[g], st->absmax[g], st->dim[g], where, err)) return -1;
    }
    return 0;
}

/* ‖W − Ŵ‖²/‖W‖² and tr(ΔW H ΔWᵀ)/tr(W H Wᵀ): the relative output error on
 * the calibration inputs, since ‖XΔWᵀ‖² = N·tr(ΔW H ΔWᵀ) with H = XᵀX/N.
 * The weight error uses every row. The output error costs rows·cols² per
 * term (3·10¹² flops for a Llama-3-8B block, most of its compile time), so
 * a layer over OUT_BUDGET gets it from evenly spaced rows (at least CHUNK):
 * a ratio of sums over the same rows, an estimate for a report line. */
static int layer_errors(const qc_calib_linear *l, double *werr, double *oerr, qc_err *err) {
    /* In chunks of rows, so the f64 temporaries stay small next to the
     * layer (a 14336-wide down_proj would otherwise need 3 × 470 MB). */
    enum { CHUNK = 256 };
    const double OUT_BUDGET = 8e9; /* multiply-adds per term */
    int64_t rows = l->rows, cols = l->cols, cr = rows < CHUNK ? rows : CHUNK;
    int64_t used = rows;
    if ((double)rows * (double)cols * (double)cols > OUT_BUDGET) {
        used = (int64_t)(OUT_BUDGET / ((double)cols * (double)cols));
        used = used < CHUNK ? CHUNK : used > rows ? rows : used;
    }
    size_t n = (size_t)(cr * cols);
    double *d = qc_malloc(n * sizeof(double), err), *t = qc_malloc(n * sizeof(double), err);
    if (!d || !t) {
        free(d), free(t);
        return -1;
    }
    double dw = 0, ww = 0, num = 0, den = 0;
    for (size_t i = 0; i < (size_t)(rows * cols); i++) {
        double w = l->w[i], e = w - (double)l->deq[i];
        ww += w * w;
        dw += e * e;
    }
    for (int64_t i0 = 0; i0 < used; i0 += CHUNK) {
        int64_t m = used - i0 < CHUNK ? used - i0 : CHUNK;
        for (int pass = 0; pass < 2; pass++) { /* ΔW, then W */
            for (int64_t i = 0; i < m; i++) {
                size_t off = (size_t)((i0 + i) * rows / used * cols);
                for (int64_t c = 0; c < cols; c++) {
                    double w = l->w[off + (size_t)c];
                    d[i * cols + c] = pass ? w : w - (double)l->deq[off + (size_t)c];
                }
            }
            qcrt_dgemm(CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)cols, 1.0, d, (int)cols,
                       l->H, (int)cols, 0.0, t, (int)cols);
            double acc = 0;
            for (size_t i = 0; i < (size_t)(m * cols); i++)
                acc += t[i] * d[i];
            if (pass)
                den += acc;
            else
                num += acc;
        }
    }
    *werr = ww > 0 ? dw / ww : 0;
    *oerr = den > 0 ? num / den : 0;
    free(d), free(t);
    return 0;
}

/* ---- samples ---- */

static int embed_row(const qc_tensor *t, int64_t dim, int32_t id, float *out, qc_err *err) {
    size_t rb;
    if (qc_dtype_nbytes(t->dtype, dim, &rb) || (size_t)(id + 1) * rb > t->nbytes)
        return qc_err_set(err, "%s: cannot read embedding row %d", t->name, id);
    qc_dequantize(t->dtype, t->data + (size_t)id * rb, out, dim);
    return 0;
}

/* Tokenizes the calibration text and cuts `samples` windows of `tokens`
 * tokens at seeded random offsets (windows may overlap when the text is short). */
static int32_t *make_samples(const qc_model *m, const char *path, int samples, int tokens,
                             uint64_t seed, qc_err *err) {
    if (!m->tok) {
        qc_err_set(err, "%s: the model has no tokenizer to encode calibration text", m->path);
        return NULL;
    }
    size_t len, n_ids;
    char *text = qc_read_limited(path, QC_LIMIT_TEXT_BYTES, &len, err);
    if (!text) return NULL;
    int32_t *ids = NULL, *out = NULL;
    if (qc_tokenizer_encode(m->tok, text, len, 0, &ids, &n_ids, err)) {
        qc_err_prefix(err, "%s", path);
        goto done;
    }
    if (n_ids < (size_t)tokens + 1) {
        qc_err_set(err, "%s: calibration text has %zu tokens, fewer than one sample of %d", path,
                   n_ids, tokens);
        goto done;
    }
    if (!(out = qc_malloc((size_t)samples * (size_t)tokens * sizeof *out, err))) goto done;
    uint64_t s = seed;
    uint64_t span = n_ids - (size_t)tokens + 1;
    for (int i = 0; i < samples; i++) {
        uint64_t start = splitmix64(&s) % span;
        memcpy(out + (size_t)i * tokens, ids + start, (size_t)tokens * sizeof *out);
    }
done:
    free(text);
    free(ids);
    return out;
}

/* ---- the driver ---- */

static char *module_name(const char *weight_name) {
    size_t n = strlen(weight_name);
    if (n > 7 && !strcmp(weight_name + n - 7, ".weight")) n -= 7;
    return strndup(weight_name, n);
}

/* Every linear the recipe could target, for glob validation. */
char **qc_calib_linear_names(const qc_config *c, int *n_out) {
    int n = c->n_layers * N_LIN + 1;
    char **names = calloc((size_t)n, sizeof *names), buf[192];
    if (!names) return NULL;
    for (int b = 0; b < c->n_layers; b++)
        for (int i = 0; i < N_LIN; i++) {
            snprintf(buf, sizeof buf, "model.layers.%d.%s", b, lin_desc[i].module);
            names[b * N_LIN + i] = strdup(buf);
        }
    names[n - 1] = strdup("lm_head");
    *n_out = n;
    return names;
}

void qc_calib_names_free(char **names, int n) {
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

typedef struct driver {
    qc_model *m;
    const qc_recipe *r;
    const int32_t *ids; /* samples × tokens calibration token ids */
    void **pass_state;  /* per recipe pass (qc_pass_ctx.state) */
    qc_calib_progress progress;
    void *ud;
    qcrt_model *shell;
    qcrt_state *st;
    float *X;   /* samples × tokens × dim: the current block's inputs */
    float *tmp; /* tokens × dim */
    int samples, tokens;
    calib_stats stats;
} driver;

static int run_samples(driver *d, const qcrt_block *blk, int b, float *X, qc_err *err) {
    size_t per = (size_t)d->tokens * (size_t)d->m->cfg.dim;
    for (int s = 0; s < d->samples; s++) {
        float *x = X ? X + (size_t)s * per : d->tmp;
        if (!X) memcpy(d->tmp, d->X + (size_t)s * per, per * sizeof(float));
        qcrt_state_reset(d->st);
        if (qcrt_block_forward(d->shell, blk, d->st, b, x, d->tokens, err)) return -1;
    }
    return 0;
}

static int report_layer(qc_calib_report *rep, const qc_calib_linear *l, const char *method,
                        qc_err *err) {
    qc_layer_report *nl = realloc(rep->layers, (size_t)(rep->n_layers + 1) * sizeof *nl);
    if (!nl) return qc_err_set(err, "out of memory");
    rep->layers = nl;
    qc_layer_report *lr = &rep->layers[rep->n_layers++];
    memset(lr, 0, sizeof *lr);
    lr->name = module_name(l->name);
    lr->rows = l->rows;
    lr->cols = l->cols;
    lr->seconds = l->seconds;
    snprintf(lr->note, sizeof lr->note, "%s", l->note);
    rep->total_linear_params += l->rows * l->cols;
    if (l->blocks) { /* a ggml block type: its own block/sub-block layout */
        int block = 0, bits = 0;
        size_t rb = 0;
        qc_ggml_type_shape((qc_dtype)l->blocks_dtype, &block, NULL, &bits, NULL);
        qc_dtype_nbytes((qc_dtype)l->blocks_dtype, l->cols, &rb);
        lr->method = method ? method : "quantized";
        lr->format = qc_dtype_name((qc_dtype)l->blocks_dtype);
        lr->bits = bits;
        lr->group_size = block;
        lr->bits_per_weight = 8.0 * (double)rb / (double)l->cols;
        rep->quantized_params += l->rows * l->cols;
        return layer_errors(l, &lr->weight_err, &lr->output_err, err);
    }
    if (!l->q) {
        lr->method = "none";
        lr->bits_per_weight = 32;
        return 0;
    }
    lr->method = method ? method : "quantized";
    lr->bits = l->q->fmt.bits;
    lr->group_size = l->q->fmt.group_size;
    lr->symmetric = l->q->fmt.symmetric;
    lr->act_order = l->q->perm != NULL;
    lr->bits_per_weight = qc_quant_storage_bits(l->q) / (double)(l->rows * l->cols);
    rep->quantized_params += l->rows * l->cols;
    return layer_errors(l, &lr->weight_err, &lr->output_err, err);
}

static int walk_fp(const qc_pass_ctx *ctx, qc_block_visit visit, void *ud, qc_err *err);

/* The context recipe pass p runs with. */
static qc_pass_ctx pass_ctx(driver *d, int p) {
    qc_pass_ctx ctx = {.seed = d->r->calib.seed,
                       .quiet = 1,
                       .state = &d->pass_state[p],
                       .walk_fp = walk_fp,
                       .calib_ids = d->ids,
                       .calib_samples = d->samples,
                       .calib_tokens = d->tokens,
                       .driver = d,
                       .recipe_pass = &d->r->passes[p]};
    for (int i = 0; i < d->r->n_passes && !ctx.quantize; i++)
        if (strcmp(d->r->passes[i].pass->name, "quantize") == 0)
            ctx.quantize = &d->r->passes[i].params;
    return ctx;
}

/* Sets each linear's `targeted` from rp's globs; returns whether any is. */
static int mark_targets(const qc_recipe_pass *rp, qc_calib_block *cb) {
    int any = 0;
    for (int i = 0; i < cb->n_linears; i++) {
        char *mod = module_name(cb->linears[i].name);
        cb->linears[i].targeted = mod && qc_recipe_pass_matches(rp, mod);
        any |= cb->linears[i].targeted;
        free(mod);
    }
    return any;
}

/* Runs the recipe's block-level passes in order over cb's linears; method[i]
 * names the quantizer that produced linear i's state. */
static int run_block_passes(driver *d, qc_calib_block *cb, qc_calib_progress progress, void *ud,
                            const char **method, qc_err *err) {
    int n_layers = d->m->cfg.n_layers;
    for (int p = 0; p < d->r->n_passes; p++) {
        const qc_recipe_pass *rp = &d->r->passes[p];
        if (!rp->pass->run_block) continue;
        qc_pass_ctx ctx = pass_ctx(d, p);
        if (progress)
            progress(ud, cb->index < n_layers ? cb->index : n_layers - 1, n_layers, rp->pass->name);
        if (!mark_targets(rp, cb)) continue;
        if (rp->pass->run_block(&ctx, &rp->params, cb, err)) {
            if (cb->index < n_layers)
                qc_err_prefix(err, "block %d: %s", cb->index, rp->pass->name);
            else
                qc_err_prefix(err, "lm_head: %s", rp->pass->name);
            return -1;
        }
        /* The quantizer names the state; a later pass that amends it (lowrank)
         * says so in the layer's note instead. */
        const qc_param_value *mv = qc_params_get(&rp->params, "method");
        for (int i = 0; i < cb->n_linears; i++)
            if (cb->linears[i].targeted && (cb->linears[i].q || cb->linears[i].blocks) &&
                (!method[i] || strcmp(rp->pass->name, "quantize") == 0))
                method[i] = mv && mv->s ? mv->s : rp->pass->name;
    }
    return 0;
}

/* Moves cb's quantized states onto the model under their weight names; a
 * weight quantized into a ggml block type replaces the weight tensor
 * itself (what the forward pass, the artifact and a GGUF export read). */
static int attach_states(qc_model *m, qc_calib_block *cb, qc_err *err) {
    for (int i = 0; i < cb->n_linears; i++) {
        qc_calib_linear *l = &cb->linears[i];
        if (l->blocks) {
            if (qc_model_online_hadamard(m, l->name))
                return qc_err_set(err,
                                  "%s: an online Hadamard (rotate's online transform) cannot be "
                                  "expressed in GGUF; use rotate without it with format %s",
                                  l->name, qc_dtype_name((qc_dtype)l->blocks_dtype));
            if (!strcmp(l->name, "lm_head.weight") && m->cfg.tied_embeddings)
                return qc_err_set(err,
                                  "lm_head: tied to the embedding, which the model reads for it; "
                                  "a ggml block type (%s) needs its own weight: ignore lm_head",
                                  qc_dtype_name((qc_dtype)l->blocks_dtype));
            uint8_t *b = l->blocks;
            l->blocks = NULL;
            if (qc_model_set_blocks(m, l->name, (qc_dtype)l->blocks_dtype, l->rows, l->cols, b,
                                    err))
                return -1;
            continue;
        }
        if (!l->q) continue;
        char *name = strdup(l->name);
        qc_quant_state *q = l->q;
        l->q = NULL;
        if (!name) {
            qc_quant_state_free(q);
            return qc_err_set(err, "out of memory");
        }
        if (qc_model_add_quant(m, name, q, err)) return -1;
    }
    return 0;
}

/* Writes what the passes changed back to the IR: the block's norms (always:
 * cheap, and a pass may have folded scales into them) and the full-precision
 * weights and biases a pass modified (quantized or not, so that the IR stays
 * the full-precision model the quantized one approximates). Takes the
 * modified arrays from cb. */
static int write_back(qc_model *m, qc_calib_block *cb, qc_err *err) {
    char name[192];
    if (cb->attn_norm) {
        const char *norms[2] = {"input_layernorm", "post_attention_layernorm"};
        const float *src[2] = {cb->attn_norm, cb->ffn_norm};
        for (int k = 0; k < 2; k++) {
            float *v = qc_malloc((size_t)cb->dim * sizeof(float), err);
            if (!v) return -1;
            memcpy(v, src[k], (size_t)cb->dim * sizeof(float));
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", cb->index, norms[k]);
            if (qc_model_set_f32(m, name, cb->dim, 0, v, err)) return -1;
        }
    }
    for (int i = 0; i < cb->n_linears; i++) {
        qc_calib_linear *l = &cb->linears[i];
        if (!l->modified) continue;
        /* A weight in a ggml block type is its tensor (attach_states). */
        if (!l->blocks && qc_model_set_f32(m, l->name, l->rows, l->cols, l->w, err)) return -1;
        if (!l->blocks) l->w = NULL;
        if (l->bias) {
            size_t n = strlen(l->name);
            snprintf(name, sizeof name, "%.*s.bias", (int)(n > 7 ? n - 7 : n), l->name);
            if (qc_model_set_f32(m, name, l->rows, 0, l->bias, err)) return -1;
            l->bias = NULL;
        }
    }
    return 0;
}

/* Calibrates, quantizes and propagates block b. */
static int do_block(driver *d, int b, qc_calib_progress progress, void *ud, qc_calib_report *rep,
                    qc_err *err) {
    qc_model *m = d->m;
    qcrt_block blk;
    qc_calib_block cb = {0};
    int rc = -1;
    if (progress) progress(ud, b, m->cfg.n_layers, "statistics");
    if (qcrt_block_load(m, b, &blk, err)) goto out;
    stats_reset(&d->stats);
    /* q/k/v read one input, gate/up another: capture once per input group. */
    const int capture_at[N_GROUPS] = {0, 3, 4, 6};
    for (int g = 0; g < N_GROUPS; g++)
        if (capture_wrap(block_slot(&blk, capture_at[g]), d->stats.H[g], d->stats.absmax[g], err))
            goto out;
    if (run_samples(d, &blk, b, NULL, err)) goto out;
    if (stats_finish(&d->stats, (int64_t)d->samples * d->tokens, b, err)) goto out;
    if (load_calib_block(m, b, &d->stats, &cb, err)) goto out;
    /* The passes work on cb's copies; the block's f32 linears (a second copy
     * of the block's weights: 0.87 GB at Llama-3-8B shapes) are replaced by
     * the compressed ones below, so they go now, before the quantizers'
     * working memory. */
    for (int i = 0; i < cb.n_linears; i++) {
        qcrt_linear **slot = block_slot(&blk, i);
        qcrt_linear_free(*slot);
        *slot = NULL;
    }
    for (int i = 0; i < cb.n_linears; i++)
        cb.linears[i].n_tokens = (int64_t)d->samples * d->tokens;
    /* Passes edit the norms the propagation below runs with. */
    cb.attn_norm = blk.attn_norm;
    cb.ffn_norm = blk.ffn_norm;
    cb.dim = m->cfg.dim;
    cb.head_dim = m->cfg.head_dim;

    const char *method[N_LIN] = {0}; /* which quantizer produced each linear's state */
    if (run_block_passes(d, &cb, progress, ud, method, err)) goto out;
    /* The compressed block: fake-quant linears where a pass quantized. */
    for (int i = 0; i < cb.n_linears; i++) {
        qc_calib_linear *l = &cb.linears[i];
        if (report_layer(rep, l, method[i], err)) goto out;
        qcrt_linear **slot = block_slot(&blk, i), *nl;
        if (l->q) {
            nl = qcrt_linear_fq_new(l->q, l->bias, err);
        } else { /* full precision, or a ggml block type's exact decoding */
            size_t n = (size_t)(l->rows * l->cols) * sizeof(float);
            float *w = qc_malloc(n, err), *bias = NULL;
            if (w) memcpy(w, l->blocks ? l->deq : l->w, n);
            if (w && l->bias && (bias = qc_malloc((size_t)l->rows * sizeof(float), err)))
                memcpy(bias, l->bias, (size_t)l->rows * sizeof(float));
            nl = w && (!l->bias || bias) ? qcrt_linear_f32_new(w, bias, l->rows, l->cols, err)
                                         : NULL;
            if (!nl) free(w), free(bias);
        }
        if (!nl) goto out;
        qcrt_linear_free(*slot);
        *slot = nl;
    }
    if (progress) progress(ud, b, m->cfg.n_layers, "propagate");
    if (run_samples(d, &blk, b, d->X, err) || write_back(m, &cb, err) || attach_states(m, &cb, err))
        goto out;
    rc = 0;
out:
    qcrt_block_free(&blk);
    free_calib_block(&cb);
    return rc;
}

/* Fills X with the embeddings of the calibration tokens (of the current
 * IR: a model-level pass may have rotated them). */
static int embed_samples(driver *d, qc_err *err) {
    const qc_tensor *emb = qc_model_find(d->m, "model.embed_tokens.weight");
    if (!emb) return qc_err_set(err, "%s: missing tensor 'model.embed_tokens.weight'", d->m->path);
    size_t dim = (size_t)d->m->cfg.dim;
    for (size_t i = 0; i < (size_t)d->samples * (size_t)d->tokens; i++)
        if (embed_row(emb, (int64_t)dim, d->ids[i], d->X + i * dim, err)) return -1;
    return 0;
}

/* qc_pass_ctx.walk_fp: the full-precision model over the calibration
 * samples, block by block, statistics captured and the residual stream
 * propagated in one pass (nothing is quantized, so the inputs of block b+1
 * are block b's full-precision outputs). Leaves X dirty: the caller
 * re-embeds before the block loop. */
static int walk_fp(const qc_pass_ctx *ctx, qc_block_visit visit, void *ud, qc_err *err) {
    driver *d = ctx->driver;
    qc_model *m = d->m;
    const int capture_at[N_GROUPS] = {0, 3, 4, 6};
    if (embed_samples(d, err)) return -1;
    for (int b = 0; b < m->cfg.n_layers; b++) {
        qcrt_block blk;
        qc_calib_block cb = {0};
        int rc = -1;
        if (d->progress) d->progress(d->ud, b, m->cfg.n_layers, "fp stats");
        if (qcrt_block_load(m, b, &blk, err)) goto next;
        stats_reset(&d->stats);
        for (int g = 0; g < N_GROUPS; g++)
            if (capture_wrap(block_slot(&blk, capture_at[g]), d->stats.H[g], d->stats.absmax[g],
                             err))
                goto next;
        if (run_samples(d, &blk, b, d->X, err) ||
            stats_finish(&d->stats, (int64_t)d->samples * d->tokens, b, err) ||
            load_calib_block(m, b, &d->stats, &cb, err))
            goto next;
        for (int i = 0; i < cb.n_linears; i++)
            cb.linears[i].n_tokens = (int64_t)d->samples * d->tokens;
        cb.attn_norm = blk.attn_norm;
        cb.ffn_norm = blk.ffn_norm;
        cb.dim = m->cfg.dim;
        cb.head_dim = m->cfg.head_dim;
        mark_targets(ctx->recipe_pass, &cb);
        rc = visit(ud, &cb, err);
    next:
        qcrt_block_free(&blk);
        free_calib_block(&cb);
        if (rc) return -1;
    }
    return 0;
}

/* Runs the recipe's model-level passes in recipe order. */
static int run_model_passes(driver *d, qc_err *err) {
    for (int p = 0; p < d->r->n_passes; p++) {
        const qc_recipe_pass *rp = &d->r->passes[p];
        if (!rp->pass->run_model) continue;
        if (d->progress) d->progress(d->ud, 0, d->m->cfg.n_layers, rp->pass->name);
        qc_pass_ctx ctx = pass_ctx(d, p);
        if (rp->pass->run_model(&ctx, &rp->params, d->m, err))
            return qc_err_prefix(err, "%s", rp->pass->name);
    }
    return 0;
}

/* Does any block-level pass of the recipe target lm_head? */
static int lm_head_targeted(const qc_recipe *r) {
    for (int p = 0; p < r->n_passes; p++)
        if (r->passes[p].pass->run_block && qc_recipe_pass_matches(&r->passes[p], "lm_head"))
            return 1;
    return 0;
}

/* lm_head after the last block: its input is the final RMSNorm of the
 * (compressed) model's residual stream, so its statistics come from d->X
 * normalised in place (X is not needed afterwards). A tied lm_head is
 * quantized as its own weight "lm_head.weight"; the embedding stays. */
static int do_lm_head(driver *d, qc_calib_progress progress, void *ud, qc_calib_report *rep,
                      qc_err *err) {
    qc_model *m = d->m;
    const qc_config *c = &m->cfg;
    int64_t dim = c->dim, n = (int64_t)d->samples * d->tokens;
    qc_calib_block cb = {.index = c->n_layers};
    const char *method[1] = {0};
    int rc = -1;
    float *norm = qcrt_load_tensor(m, "model.norm.weight", dim, 0, err);
    double *H = qc_calloc((size_t)(dim * dim), sizeof *H, err);
    float *absmax = qc_calloc((size_t)dim, sizeof *absmax, err);
    float *tmp = qc_malloc((size_t)(dim * dim) * sizeof *tmp, err);
    if (!norm || !H || !absmax || !tmp) goto out;
    if (progress) progress(ud, c->n_layers - 1, c->n_layers, "lm_head");
    for (int64_t t = 0; t < n; t++) {
        float *x = d->X + t * dim;
        double ss = 0;
        for (int64_t j = 0; j < dim; j++)
            ss += (double)x[j] * x[j];
        float inv = 1.0f / sqrtf((float)(ss / (double)dim) + c->norm_eps);
        for (int64_t j = 0; j < dim; j++)
            x[j] = x[j] * inv * norm[j];
    }
    for (int s = 0; s < d->samples; s++)
        accumulate_stats(d->X + (size_t)s * (size_t)d->tokens * (size_t)dim, d->tokens, dim, tmp, H,
                         absmax);
    finish_gram(H, dim, n);
    if (check_stats(H, absmax, dim, "lm_head", err)) goto out;
    if (!(cb.linears = qc_calloc(1, sizeof *cb.linears, err))) goto out;
    cb.n_linears = 1;
    qc_calib_linear *l = &cb.linears[0];
    l->kind = "lm_head";
    l->rows = c->vocab;
    l->cols = dim;
    l->H = H;
    l->act_absmax = absmax;
    l->n_tokens = n;
    if (!(l->name = strdup("lm_head.weight"))) {
        qc_err_set(err, "out of memory");
        goto out;
    }
    const char *src = c->tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    if (!(l->w = qcrt_load_tensor(m, src, l->rows, l->cols, err))) goto out;
    if (run_block_passes(d, &cb, progress, ud, method, err) ||
        report_layer(rep, l, method[0], err) || attach_states(m, &cb, err))
        goto out;
    rc = 0;
out:
    free_calib_block(&cb);
    free(norm);
    free(H);
    free(absmax);
    free(tmp);
    return rc;
}

/* Moves the model's finished quantized states into the spill file (none:
 * they stay on the heap). */
static int spill_states(qc_model *m, qc_spill *spill, qc_err *err) {
    for (int i = 0; spill && i < m->n_quant; i++)
        if (qc_spill_state(spill, m->quant[i].q, err)) return -1;
    return 0;
}

int qc_calibrate(qc_model *m, const qc_recipe *r, const qc_calib_overrides *ov,
                 qc_calib_progress progress, void *ud, qc_calib_report *rep, qc_err *err) {
    memset(rep, 0, sizeof *rep);
    double t0 = now_s();
    driver d = {.m = m, .r = r};
    const char *text = ov && ov->text ? ov->text : r->calib.text;
    d.samples = ov && ov->samples > 0 ? ov->samples : r->calib.samples;
    d.tokens = ov && ov->tokens > 0 ? ov->tokens : r->calib.tokens;
    uint64_t seed = ov && ov->seed >= 0 ? (uint64_t)ov->seed : r->calib.seed;
    rep->samples = d.samples;
    rep->tokens = d.tokens;
    rep->seed = seed;
    rep->text = text;
    if (m->n_quant > 0) return qc_err_set(err, "%s: the model is already quantized", m->path);
    if (m->cfg.max_pos > 0 && d.tokens > m->cfg.max_pos)
        return qc_err_set(err, "calibration tokens per sample (%d) exceed the model's context (%d)",
                          d.tokens, m->cfg.max_pos);
    int n_names = 0, rc = -1;
    qc_ckpt *ck = NULL;
    qc_spill *spill = NULL;
    char **names = qc_calib_linear_names(&m->cfg, &n_names);
    int32_t *ids = NULL;
    d.progress = progress;
    d.ud = ud;
    if (!names) return qc_err_set(err, "out of memory");
    if (!(d.pass_state = qc_calloc((size_t)r->n_passes + 1, sizeof *d.pass_state, err))) goto out;
    if (qc_recipe_check_targets(r, (const char *const *)names, n_names, err)) goto out;
    if (!(ids = make_samples(m, text, d.samples, d.tokens, seed, err))) goto out;
    d.ids = ids;
    size_t per = (size_t)d.tokens * (size_t)m->cfg.dim, total;
    if (qc_mul_size(per, (size_t)d.samples, &total) || qc_mul_size(total, sizeof(float), &total)) {
        qc_err_set(err, "calibration activations do not fit in memory");
        goto out;
    }
    if (!(d.shell = qcrt_model_shell(m, err)) ||
        !(d.st = qcrt_state_new(d.shell, d.tokens, d.tokens, err)) ||
        !(d.X = qc_malloc(total, err)) || !(d.tmp = qc_malloc(per * sizeof(float), err)) ||
        stats_alloc(&m->cfg, &d.stats, err))
        goto out;
    if (ov && ov->checkpoint_dir &&
        !(ck = qc_ckpt_open(ov->checkpoint_dir, ov->checkpoint_key,
                            ov->checkpoint_what ? ov->checkpoint_what : "", err)))
        goto out;
    /* Model-level passes are deterministic: a resumed compile runs them again
     * and then restores what the finished blocks changed. */
    if (run_model_passes(&d, err) || embed_samples(&d, err)) goto out;
    int start = ck ? qc_ckpt_restore(ck, m, r, rep, d.X, total / sizeof(float), err) : 0;
    if (start < 0) goto out;
    rep->resumed_blocks = start;
    if (ov && ov->spill_dir &&
        !(spill =
              qc_spill_open(ov->spill_dir, ov->spill_what ? ov->spill_what : ov->spill_dir, err)))
        goto out;
    if (spill_states(m, spill, err)) goto out;
    for (int b = start; b < m->cfg.n_layers; b++) {
        int from = rep->n_layers;
        if ((ck && qc_ckpt_mark(ck, m, b, err)) || do_block(&d, b, progress, ud, rep, err) ||
            (ck && qc_ckpt_save_block(ck, m, b, rep, from, d.X, total / sizeof(float), err)) ||
            spill_states(m, spill, err))
            goto out;
    }
    if (lm_head_targeted(r) &&
        (do_lm_head(&d, progress, ud, rep, err) || spill_states(m, spill, err)))
        goto out;
    if (progress) progress(ud, m->cfg.n_layers, m->cfg.n_layers, "done");
    double bits = 0;
    for (int i = 0; i < rep->n_layers; i++)
        if (strcmp(rep->layers[i].method, "none"))
            bits += rep->layers[i].bits_per_weight *
                    (double)(rep->layers[i].rows * rep->layers[i].cols);
    rep->avg_bits = rep->quantized_params ? bits / (double)rep->quantized_params : 0;
    rc = 0;
out : {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) rep->peak_rss_kb = ru.ru_maxrss;
}
    rep->seconds = now_s() - t0;
    qc_calib_names_free(names, n_names);
    for (int p = 0; d.pass_state && p < r->n_passes; p++)
        if (d.pass_state[p] && r->passes[p].pass->free_state)
            r->passes[p].pass->free_state(d.pass_state[p]);
    free(d.pass_state);
    qc_ckpt_free(ck);
    qc_spill_free(spill);
    free(ids);
    free(d.X);
    free(d.tmp);
    stats_free(&d.stats);
    qcrt_state_free(d.st);
    qcrt_model_free(d.shell);
    return rc;
}

void qc_calib_report_free(qc_calib_report *rep) {
    for (int i = 0; i < rep->n_layers; i++)
        free(rep->layers[i].name);
    free(rep->layers);
    memset(rep, 0, sizeof *rep);
}

char *qc_calib_report_json(const qc_calib_report *rep) {
    json_t *layers = json_array();
    for (int i = 0; i < rep->n_layers; i++) {
        const qc_layer_report *l = &rep->layers[i];
        json_t *e = json_pack(
            "{s:s, s:s, s:i, s:i, s:b, s:b, s:I, s:I, s:f, s:f, s:f, s:f}", "name", l->name,
            "method", l->method, "bits", l->bits, "group_size", l->group_size, "symmetric",
            l->symmetric, "act_order", l->act_order, "rows", (json_int_t)l->rows, "cols",
            (json_int_t)l->cols, "bits_per_weight", l->bits_per_weight, "weight_rel_err",
            l->weight_err, "output_rel_err", l->output_err, "seconds", l->seconds);
        if (e && l->note[0]) json_object_set_new(e, "note", json_string(l->note));
        if (e && l->format) json_object_set_new(e, "format", json_string(l->format));
        json_array_append_new(layers, e);
    }
    json_t *o =
        json_pack("{s:{s:s, s:i, s:i, s:I}, s:f, s:f, s:I, s:I, s:I, s:o}", "calibration", "text",
                  rep->text ? rep->text : "", "samples", rep->samples, "tokens", rep->tokens,
                  "seed", (json_int_t)rep->seed, "seconds", rep->seconds, "avg_bits_per_weight",
                  rep->avg_bits, "quantized_params", (json_int_t)rep->quantized_params,
                  "linear_params", (json_int_t)rep->total_linear_params, "peak_rss_kb",
                  (json_int_t)rep->peak_rss_kb, "layers", layers);
    char *s = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(8));
    json_decref(o);
    return s;
}
