/* The `smooth` pass (SmoothQuant, Xiao et al. 2023 §4; AWQ's scale search,
 * Lin et al. 2024 §3.2): per input channel j of a group of linears that read
 * the same input X,
 *     s_j = max|X_j|^α / max|W_:,j|^(1−α)      (max over the group's rows)
 * then X ← X·diag(s)⁻¹ is folded into what produces X and W ← W·diag(s), so
 * the product is unchanged while activation outliers move into the weights
 * (or, with α small, weight outliers into the activations). Producers:
 *     q/k/v      ← input_layernorm weight (g ← g/s)
 *     gate/up    ← post_attention_layernorm weight
 *     o_proj     ← v_proj rows (and bias): attention is linear in V, and with
 *                  GQA one s per kv head channel, shared by the query heads
 *                  that read it
 *     down_proj  ← up_proj rows: silu(gate)·(up/s) = (silu(gate)·up)/s.
 * Row scaling of v/up does not change their own group-wise quantization
 * (groups lie along rows; the scale absorbs it).
 *
 * alpha: search tries α = 0, 1/grid, ..., (grid−1)/grid and s = 1 and keeps
 * the one minimising the group's quantized output error on the calibration
 * inputs, Σ_l tr(E_l H E_lᵀ) with E_l = W_l − RTN(W_l·D)·D⁻¹ and H = XᵀX/N,
 * in the recipe's quantize format (bits (or allocate's override), group
 * size, symmetry; RTN as the proxy for the quantizer, as AWQ does). s = 1
 * is a candidate, so the search never increases that proxy error.
 *
 * The group's statistics are updated with its input (H ← D⁻¹HD⁻¹,
 * absmax ← absmax/s) and the changed weights marked modified, so the
 * quantizer after it sees the smoothed problem and the driver writes the
 * smoothed full-precision model back to the IR. */
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const qc_param_spec params[] = {
    {"alpha", QC_PARAM_STRING, "search", 1, 0, NULL,
     "migration strength: a number in [0, 1] (SmoothQuant uses 0.5), or search (per group, AWQ)"},
    {"grid", QC_PARAM_INT, "10", 2, 100, NULL, "search: α candidates 0, 1/grid, ..., 1 − 1/grid"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

enum { Q, K, V, O, GATE, UP, DOWN, N_KIND };
static const char *const kinds[N_KIND] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                          "gate_proj", "up_proj", "down_proj"};

typedef struct group {
    qc_calib_linear *lin[3]; /* the linears reading the input */
    int n;
    int64_t cols; /* input width */
    double *H;    /* shared statistics of the input */
    float *absmax;
    int heads, kv_heads, hd; /* o_proj: channels tied across the query heads of a kv head */
} group;

/* Per-column max |W_:,j| over the group's linears. */
static void weight_colmax(const group *g, float *out) {
    memset(out, 0, (size_t)g->cols * sizeof *out);
    for (int k = 0; k < g->n; k++) {
        const qc_calib_linear *l = g->lin[k];
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t j = 0; j < l->cols; j++)
                out[j] = fmaxf(out[j], fabsf(l->w[r * l->cols + j]));
    }
}

/* o_proj: column (h, d) of every query head h of kv head g gets one value,
 * the max over those heads (v_proj row g·hd + d is its single producer). */
static void tie_heads(const group *g, float *v) {
    if (!g->kv_heads) return;
    int per = g->heads / g->kv_heads;
    for (int kv = 0; kv < g->kv_heads; kv++)
        for (int d = 0; d < g->hd; d++) {
            float m = 0;
            for (int h = kv * per; h < (kv + 1) * per; h++)
                m = fmaxf(m, v[h * g->hd + d]);
            for (int h = kv * per; h < (kv + 1) * per; h++)
                v[h * g->hd + d] = m;
        }
}

/* s_j = a_j^α / w_j^(1−α), centred so that max·min = 1 (a global factor
 * changes nothing but the magnitudes stored) and clamped to [1e-4, 1e4];
 * channels with no activation or no weight keep s = 1. */
static void smooth_scales(const float *a, const float *w, int64_t n, double alpha, float *s) {
    double lo = INFINITY, hi = 0;
    for (int64_t j = 0; j < n; j++) {
        if (a[j] > 0 && w[j] > 0) {
            s[j] = (float)(pow(a[j], alpha) / pow(w[j], 1 - alpha));
            lo = fmin(lo, s[j]);
            hi = fmax(hi, s[j]);
        } else {
            s[j] = 0;
        }
    }
    float c = hi > 0 ? (float)sqrt(lo * hi) : 1.0f;
    for (int64_t j = 0; j < n; j++) {
        float v = s[j] > 0 ? s[j] / c : 1.0f;
        s[j] = fminf(fmaxf(v, 1e-4f), 1e4f);
    }
}

/* Σ_l tr(E_l H E_lᵀ), E_l = W_l − RTN(W_l·D)·D⁻¹: the group's quantized
 * output error (times 1/N) with scales s. hf: H in f32. */
static int group_error(const group *g, const float *s, const float *hf, const qc_params *qp,
                       double *out, qc_err *err) {
    *out = 0;
    for (int k = 0; k < g->n; k++) {
        const qc_calib_linear *l = g->lin[k];
        size_t n = (size_t)(l->rows * l->cols);
        int bits = l->bits_override > 0 ? l->bits_override
                   : qp                 ? (int)qc_params_int(qp, "bits")
                                        : 4;
        int gs = l->bits_override > 0 ? l->group_override
                 : qp                 ? (int)qc_params_int(qp, "group_size")
                                      : 128;
        qc_quant_format f = {bits, gs, qp ? qc_params_bool(qp, "symmetric") : 0};
        qc_clip_search clip = {0, 1, 1};
        float *ws = qc_malloc(n * sizeof(float), err), *deq = qc_malloc(n * sizeof(float), err);
        float *t = qc_malloc(n * sizeof(float), err);
        qc_quant_state *q = ws && deq && t ? qc_quant_state_new(&f, l->rows, l->cols, err) : NULL;
        int rc = -1;
        if (q) {
            for (size_t i = 0; i < n; i++)
                ws[i] = l->w[i] * s[i % (size_t)l->cols];
            rc = qc_quant_rtn(ws, NULL, &clip, q, deq, err);
        }
        if (rc == 0) {
            for (size_t i = 0; i < n; i++)
                ws[i] = l->w[i] - deq[i] / s[i % (size_t)l->cols];
            qcrt_sgemm(CblasNoTrans, CblasNoTrans, (int)l->rows, (int)l->cols, (int)l->cols, 1.0f,
                       ws, (int)l->cols, hf, (int)l->cols, 0.0f, t, (int)l->cols);
            double e = 0;
            for (size_t i = 0; i < n; i++)
                e += (double)t[i] * ws[i];
            *out += e;
        }
        qc_quant_state_free(q);
        free(ws), free(deq), free(t);
        if (rc) return -1;
    }
    return 0;
}

/* Chooses s for group g: fixed α, or the search. *chosen_alpha = -1 for s = 1. */
static int choose_scales(const group *g, double alpha, int grid, const qc_params *qp, float *s,
                         double *chosen_alpha, qc_err *err) {
    int64_t c = g->cols;
    float *a = qc_malloc((size_t)c * sizeof(float), err),
          *w = qc_malloc((size_t)c * sizeof(float), err);
    float *cand = qc_malloc((size_t)c * sizeof(float), err);
    float *hf = qc_malloc((size_t)(c * c) * sizeof(float), err);
    int rc = -1;
    if (!a || !w || !cand || !hf) goto out;
    memcpy(a, g->absmax, (size_t)c * sizeof(float));
    weight_colmax(g, w);
    tie_heads(g, a);
    tie_heads(g, w);
    if (alpha >= 0) {
        smooth_scales(a, w, c, alpha, s);
        *chosen_alpha = alpha;
        rc = 0;
        goto out;
    }
    for (int64_t i = 0; i < c * c; i++)
        hf[i] = (float)g->H[i];
    double best = INFINITY, e;
    for (int i = -1; i < grid; i++) { /* i = -1: s = 1 */
        double al = i < 0 ? -1 : (double)i / grid;
        if (i < 0)
            for (int64_t j = 0; j < c; j++)
                cand[j] = 1;
        else
            smooth_scales(a, w, c, al, cand);
        if (group_error(g, cand, hf, qp, &e, err)) goto out;
        if (e < best) {
            best = e;
            *chosen_alpha = al;
            memcpy(s, cand, (size_t)c * sizeof(float));
        }
    }
    rc = 0;
out:
    free(a), free(w), free(cand), free(hf);
    return rc;
}

/* The input of g becomes X·D⁻¹: W ← W·D for its linears, H ← D⁻¹HD⁻¹,
 * absmax ← absmax/s. The producer's side is the caller's. */
static void apply_input_side(const group *g, const float *s) {
    int64_t c = g->cols;
    for (int k = 0; k < g->n; k++) {
        qc_calib_linear *l = g->lin[k];
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t j = 0; j < c; j++)
                l->w[r * c + j] *= s[j];
        l->modified = 1;
    }
    for (int64_t i = 0; i < c; i++) {
        for (int64_t j = 0; j < c; j++)
            g->H[i * c + j] /= (double)s[i] * (double)s[j];
        g->absmax[i] /= s[i];
    }
}

/* Divides rows of a producer linear (and its bias) by s. */
static void scale_rows(qc_calib_linear *l, const float *s) {
    for (int64_t r = 0; r < l->rows; r++) {
        for (int64_t j = 0; j < l->cols; j++)
            l->w[r * l->cols + j] /= s[r];
        if (l->bias) l->bias[r] /= s[r];
    }
    l->modified = 1;
}

static int parse_alpha(const qc_params *p, double *alpha, qc_err *err) {
    const qc_param_value *v = qc_params_get(p, "alpha");
    if (strcmp(v->s, "search") == 0) {
        *alpha = -1;
        return 0;
    }
    char *end;
    *alpha = strtod(v->s, &end);
    if (end == v->s || *end || !(*alpha >= 0 && *alpha <= 1))
        return qc_err_set(err,
                          "alpha (line %d, column %d): expected search or a number in [0, 1], "
                          "got '%s'",
                          v->line, v->col, v->s);
    return 0;
}

static int run_block(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err) {
    double alpha, chosen = -1;
    if (parse_alpha(p, &alpha, err)) return -1;
    int grid = (int)qc_params_int(p, "grid");
    qc_calib_linear *by[N_KIND] = {0};
    for (int i = 0; i < b->n_linears; i++)
        for (int k = 0; k < N_KIND; k++)
            if (b->linears[i].kind && strcmp(b->linears[i].kind, kinds[k]) == 0)
                by[k] = &b->linears[i];
    for (int i = 0; i < b->n_linears; i++)
        if (b->linears[i].targeted && (!b->attn_norm || strcmp(b->linears[i].kind, "lm_head") == 0))
            return qc_err_set(err, "%s: smooth has no producer to fold into", b->linears[i].name);
    for (int k = 0; k < N_KIND; k++)
        if (!by[k]) return qc_err_set(err, "block %d: no %s", b->index, kinds[k]);
    /* The four inputs of a block, each with its producer. */
    struct {
        int lin[3], n;
        float *norm;           /* the norm producing the input, or NULL */
        qc_calib_linear *rows; /* the linear producing it, or NULL */
    } inputs[4] = {
        {{Q, K, V}, 3, b->attn_norm, NULL},
        {{GATE, UP}, 2, b->ffn_norm, NULL},
        {{O}, 1, NULL, by[V]},
        {{DOWN}, 1, NULL, by[UP]},
    };
    for (int in = 0; in < 4; in++) {
        group g = {.n = inputs[in].n};
        int targeted = 0;
        for (int k = 0; k < g.n; k++) {
            g.lin[k] = by[inputs[in].lin[k]];
            targeted += g.lin[k]->targeted;
        }
        if (!targeted) continue;
        if (targeted != g.n)
            return qc_err_set(err,
                              "%s: smooth must target all the linears reading its input "
                              "(q/k/v together, gate/up together)",
                              g.lin[0]->name);
        g.cols = g.lin[0]->cols;
        g.H = g.lin[0]->H;
        g.absmax = g.lin[0]->act_absmax;
        if (!g.H || !g.absmax)
            return qc_err_set(err, "%s: smooth needs calibration statistics", g.lin[0]->name);
        if (in == 2) { /* o_proj column h·hd + d reads v row (h / per)·hd + d */
            g.hd = b->head_dim;
            if (g.hd <= 0 || by[O]->cols % g.hd || by[V]->rows % g.hd)
                return qc_err_set(err, "block %d: head_dim %d does not split o_proj/v_proj",
                                  b->index, g.hd);
            g.heads = (int)(by[O]->cols / g.hd);
            g.kv_heads = (int)(by[V]->rows / g.hd);
            if (g.heads % g.kv_heads)
                return qc_err_set(err, "block %d: %d heads not a multiple of %d kv heads", b->index,
                                  g.heads, g.kv_heads);
        }
        float *s = qc_malloc((size_t)g.cols * sizeof(float), err);
        if (!s) return -1;
        if (choose_scales(&g, alpha, grid, ctx->quantize, s, &chosen, err)) {
            free(s);
            return -1;
        }
        if (chosen >= 0) {
            apply_input_side(&g, s);
            if (inputs[in].norm) {
                for (int64_t j = 0; j < g.cols; j++)
                    inputs[in].norm[j] /= s[j];
            } else if (in == 3) {
                scale_rows(inputs[in].rows, s); /* up rows ↔ down columns, one to one */
            } else {
                /* v row kv·hd + d ↔ o columns (h, d) of kv's query heads (tied). */
                int per = g.heads / g.kv_heads;
                float *rs = qc_malloc((size_t)by[V]->rows * sizeof(float), err);
                if (!rs) {
                    free(s);
                    return -1;
                }
                for (int kv = 0; kv < g.kv_heads; kv++)
                    for (int d = 0; d < g.hd; d++)
                        rs[kv * g.hd + d] = s[kv * per * g.hd + d];
                scale_rows(inputs[in].rows, rs);
                free(rs);
            }
        }
        free(s);
    }
    return 0;
}

const qc_pass qc_pass_smooth = {
    .name = "smooth",
    .doc = "per-channel scales s = max|X|^α / max|W|^(1−α) moved from activations into weights, "
           "folded into the previous RMSNorm (q/k/v, gate/up), v_proj (o_proj) or up_proj "
           "(down_proj); α fixed or searched per input group (AWQ)",
    .params = params,
    .run_block = run_block,
};
