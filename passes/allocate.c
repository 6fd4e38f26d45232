/* The `allocate` pass (mixed precision: HAWQ-V3, Yao et al. 2021; SliM-LLM,
 * Huang et al. 2024): choose a bit width per linear under an average
 * budget, then let quantize use it (qc_calib_linear.bits_override).
 *
 * Sensitivity of linear l at b bits: the output error of round-to-nearest
 * at b bits on the calibration inputs, e_l(b) = tr(ΔW H ΔWᵀ) = ‖XΔWᵀ‖²/N,
 * in the quantize pass's group size, symmetry and clip search, relative to
 * the layer's output energy tr(W H Wᵀ) (error: relative, the default) or
 * absolute. Errors are summed over layers as the loss proxy. Absolute errors
 * grow with the residual stream, which grows with depth, so they starve the
 * early blocks, whose errors every later block carries: on SmolLM2-135M
 * (rotate, budget 3.0) absolute errors put 34% of the weights, most of the
 * first ten blocks, at 2 bits.
 *
 * Global, not per block: the budget is shared by all targeted linears, so
 * every sensitivity must be known before block 0 is quantized. run_model
 * runs a full-precision statistics pre-pass (ctx->walk_fp: one extra
 * forward over the calibration samples, H per block, freed after its
 * sensitivities are computed; a few MB held in all) and solves
 *     min Σ_l e_l(b_l)  s.t.  Σ_l bits_l(b_l) ≤ budget · Σ_l rows·cols
 * exactly by dynamic programming (compiler/allocate.h), where bits_l counts
 * what qc_quant_storage_bits counts: codes, f16 scales, zero points when
 * asymmetric, and a 32-bit g_idx per column under act-order. The result
 * must lie within 0.01 bits of the budget. A per-block budget would avoid
 * the pre-pass but cannot move bits between blocks (e.g. to the first and
 * last, which are usually the most sensitive). lm_head is never allocated. */
#include "compiler/allocate.h"
#include "compiler/pass.h"
#include "compiler/quant.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 8

static const char *const error_kinds[] = {"relative", "absolute", NULL};

static const qc_param_spec params[] = {
    {"budget_bits", QC_PARAM_FLOAT, NULL, 1, 16, NULL,
     "average bits per weight over the targeted linears, overheads included (met within 0.01)"},
    {"candidates", QC_PARAM_INT_LIST, "[2, 3, 4, 8]", 2, 8, NULL,
     "bit widths to choose from (group size and symmetry: the quantize pass's)"},
    {"error", QC_PARAM_STRING, "relative", 1, 0, error_kinds,
     "sensitivity: output error relative to the layer's output energy, or absolute"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct item {
    char *name; /* weight name */
    int64_t rows, cols;
    double cost[MAX_OPTS], error[MAX_OPTS];
    int bits; /* chosen */
} item;

typedef struct alloc_state {
    item *items;
    int n;
    int opts[MAX_OPTS], n_opts;
    qc_quant_format fmt; /* bits filled per option */
    qc_clip_search clip;
    int act_order;
    int relative;    /* errors relative to the layer's output energy */
    double achieved; /* average bits of the choice */
} alloc_state;

static void free_state(void *p) {
    alloc_state *s = p;
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        free(s->items[i].name);
    free(s->items);
    free(s);
}

/* Storage bits of a rows × cols linear at b bits (qc_quant_storage_bits). */
static double storage_bits(const alloc_state *s, int64_t rows, int64_t cols, int b) {
    int64_t g = s->fmt.group_size ? (cols + s->fmt.group_size - 1) / s->fmt.group_size : 1;
    double groups = (double)rows * (double)g;
    double bits = (double)rows * (double)cols * b + groups * 16;
    if (!s->fmt.symmetric) bits += groups * b;
    if (s->act_order && s->fmt.group_size) bits += 32.0 * (double)cols;
    return bits;
}

/* e(b) = tr(ΔW H ΔWᵀ) for RTN at each candidate width. */
static int sensitivities(alloc_state *s, const qc_calib_linear *l, item *it, qc_err *err) {
    size_t n = (size_t)(l->rows * l->cols), c = (size_t)l->cols;
    float *deq = qc_malloc(n * sizeof(float), err), *t = qc_malloc(n * sizeof(float), err);
    float *hf = qc_malloc(c * c * sizeof(float), err);
    double *diag = qc_malloc(c * sizeof(double), err);
    int rc = -1;
    if (!deq || !t || !hf || !diag) goto out;
    for (size_t i = 0; i < c * c; i++)
        hf[i] = (float)l->H[i];
    for (size_t j = 0; j < c; j++)
        diag[j] = l->H[j * c + j];
    double energy = 1; /* tr(W H Wᵀ) when errors are relative */
    if (s->relative) {
        for (size_t i = 0; i < n; i++)
            deq[i] = l->w[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->rows, (int)c, (int)c, 1.0f,
                    deq, (int)c, hf, (int)c, 0.0f, t, (int)c);
        double e = 0;
        for (size_t i = 0; i < n; i++)
            e += (double)t[i] * deq[i];
        energy = e > 0 ? e : 1;
    }
    for (int o = 0; o < s->n_opts; o++) {
        qc_quant_format f = s->fmt;
        f.bits = s->opts[o];
        qc_quant_state *q = qc_quant_state_new(&f, l->rows, l->cols, err);
        if (!q || qc_quant_rtn(l->w, diag, &s->clip, q, deq, err)) {
            qc_quant_state_free(q);
            goto out;
        }
        qc_quant_state_free(q);
        for (size_t i = 0; i < n; i++)
            deq[i] = l->w[i] - deq[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->rows, (int)c, (int)c, 1.0f,
                    deq, (int)c, hf, (int)c, 0.0f, t, (int)c);
        double e = 0;
        for (size_t i = 0; i < n; i++)
            e += (double)t[i] * deq[i];
        it->error[o] = e / energy;
        it->cost[o] = storage_bits(s, l->rows, l->cols, s->opts[o]);
    }
    rc = 0;
out:
    free(deq), free(t), free(hf), free(diag);
    return rc;
}

static int visit(void *ud, qc_calib_block *b, qc_err *err) {
    alloc_state *s = ud;
    for (int i = 0; i < b->n_linears; i++) {
        const qc_calib_linear *l = &b->linears[i];
        if (!l->targeted) continue;
        item *ni = realloc(s->items, (size_t)(s->n + 1) * sizeof *ni);
        if (!ni) return qc_err_set(err, "out of memory");
        s->items = ni;
        item *it = &s->items[s->n];
        memset(it, 0, sizeof *it);
        if (!(it->name = strdup(l->name))) return qc_err_set(err, "out of memory");
        s->n++;
        it->rows = l->rows;
        it->cols = l->cols;
        if (sensitivities(s, l, it, err)) return qc_err_prefix(err, "%s", l->name);
    }
    return 0;
}

int qc_allocate_solve(const double *cost, const double *error, int n_items, int n_opts,
                      double budget, double unit, int *choice, qc_err *err) {
    if (!(unit > 0) || !(budget >= 0) || budget / unit > 5e7)
        return qc_err_set(err, "allocate: budget %g in units of %g is out of range", budget, unit);
    int64_t K = (int64_t)floor(budget / unit);
    int64_t *c = qc_malloc((size_t)n_items * (size_t)n_opts * sizeof *c, err);
    double *dp = qc_malloc((size_t)(K + 1) * sizeof *dp, err);
    double *nx = qc_malloc((size_t)(K + 1) * sizeof *nx, err);
    unsigned char *pick = qc_malloc((size_t)n_items * (size_t)(K + 1), err);
    int rc = -1;
    if (!c || !dp || !nx || !pick) goto out;
    for (int i = 0; i < n_items * n_opts; i++)
        c[i] = (int64_t)ceil(cost[i] / unit - 1e-9);
    /* dp[k]: least error of the items so far with rounded cost ≤ k. */
    for (int64_t k = 0; k <= K; k++)
        dp[k] = 0;
    for (int i = 0; i < n_items; i++) {
        unsigned char *pi = pick + (size_t)i * (size_t)(K + 1);
        for (int64_t k = 0; k <= K; k++) {
            double best = INFINITY;
            int bo = 0;
            for (int o = 0; o < n_opts; o++) {
                int64_t ck = c[i * n_opts + o];
                if (ck > k) continue;
                double v = dp[k - ck] + error[i * n_opts + o];
                if (v < best) best = v, bo = o;
            }
            nx[k] = best;
            pi[k] = (unsigned char)bo;
        }
        double *sw = dp;
        dp = nx;
        nx = sw;
    }
    if (!isfinite(dp[K])) {
        qc_err_set(err, "allocate: no choice of widths fits the budget");
        goto out;
    }
    for (int64_t k = K, i = n_items - 1; i >= 0; i--) {
        int o = pick[(size_t)i * (size_t)(K + 1) + (size_t)k];
        choice[i] = o;
        k -= c[i * n_opts + o];
    }
    rc = 0;
out:
    free(c), free(dp), free(nx), free(pick);
    return rc;
}

static int run_model(const qc_pass_ctx *ctx, const qc_params *p, struct qc_model *m, qc_err *err) {
    (void)m;
    const qc_params *qp = ctx->quantize;
    if (!qp) return qc_err_set(err, "needs a quantize pass in the recipe (its format)");
    if (!ctx->walk_fp || !ctx->state) return qc_err_set(err, "needs the calibration driver");
    const qc_param_value *cands = qc_params_get(p, "candidates");
    double budget = qc_params_float(p, "budget_bits");
    if (cands->n < 1 || cands->n > MAX_OPTS)
        return qc_err_set(err, "candidates: 1 to %d bit widths, got %d", MAX_OPTS, cands->n);
    alloc_state *s = qc_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->n_opts = cands->n;
    for (int o = 0; o < s->n_opts; o++)
        s->opts[o] = (int)cands->ilist[o];
    s->fmt =
        (qc_quant_format){4, (int)qc_params_int(qp, "group_size"), qc_params_bool(qp, "symmetric")};
    s->clip =
        (qc_clip_search){qc_params_bool(qp, "clip_search"), (float)qc_params_float(qp, "clip_min"),
                         (int)qc_params_int(qp, "clip_steps")};
    s->act_order =
        strcmp(qc_params_str(qp, "method"), "gptq") == 0 && qc_params_bool(qp, "act_order");
    s->relative = strcmp(qc_params_str(p, "error"), "relative") == 0;
    *ctx->state = s; /* freed by the driver, also on error */
    if (ctx->walk_fp(ctx, visit, s, err)) return -1;
    if (s->n == 0) return qc_err_set(err, "no linear is targeted");
    double *cost = qc_malloc((size_t)s->n * MAX_OPTS * sizeof *cost, err);
    double *error = qc_malloc((size_t)s->n * MAX_OPTS * sizeof *error, err);
    int *choice = qc_malloc((size_t)s->n * sizeof *choice, err);
    double params = 0, lo = 0, hi = 0;
    int rc = -1;
    if (!cost || !error || !choice) goto out;
    for (int i = 0; i < s->n; i++) {
        double mn = INFINITY, mx = 0;
        params += (double)(s->items[i].rows * s->items[i].cols);
        for (int o = 0; o < s->n_opts; o++) {
            cost[i * s->n_opts + o] = s->items[i].cost[o];
            error[i * s->n_opts + o] = s->items[i].error[o];
            mn = fmin(mn, s->items[i].cost[o]);
            mx = fmax(mx, s->items[i].cost[o]);
        }
        lo += mn;
        hi += mx;
    }
    if (budget * params < lo - 1e-9 * lo || budget * params > hi + 0.01 * params) {
        qc_err_set(err,
                   "budget_bits %.3f is outside what the candidates reach with this format "
                   "(%.3f to %.3f bits per weight)",
                   budget, lo / params, hi / params);
        goto out;
    }
    /* Costs round up to units of 0.004/n bits per weight: the choice loses at
     * most 0.004 bits per weight to rounding (the DP table is n × budget/unit). */
    double unit = params * 0.004 / s->n;
    if (qc_allocate_solve(cost, error, s->n, s->n_opts, budget * params, unit, choice, err))
        goto out;
    double used = 0;
    for (int i = 0; i < s->n; i++) {
        s->items[i].bits = s->opts[choice[i]];
        used += cost[i * s->n_opts + choice[i]];
    }
    s->achieved = used / params;
    if (fabs(s->achieved - budget) > 0.01) {
        qc_err_set(err, "reached %.4f bits per weight, more than 0.01 from budget_bits %.3f",
                   s->achieved, budget);
        goto out;
    }
    rc = 0;
out:
    free(cost), free(error), free(choice);
    return rc;
}

static int run_block(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err) {
    (void)p;
    const alloc_state *s = ctx->state ? *ctx->state : NULL;
    if (!s) return qc_err_set(err, "no allocation (the model-level step did not run)");
    for (int i = 0; i < b->n_linears; i++) {
        qc_calib_linear *l = &b->linears[i];
        if (!l->targeted) continue;
        for (int k = 0; k < s->n; k++)
            if (strcmp(s->items[k].name, l->name) == 0) l->bits_override = s->items[k].bits;
    }
    return 0;
}

const qc_pass qc_pass_allocate = {
    .name = "allocate",
    .doc =
        "choose a bit width per linear under an average bit budget (overheads included) from "
        "Hessian-weighted RTN errors of a full-precision pre-pass, solved exactly (knapsack DP); "
        "quantize uses the chosen widths",
    .params = params,
    .run_block = run_block,
    .run_model = run_model,
    .free_state = free_state,
};
