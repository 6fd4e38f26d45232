/* The `allocate` pass (mixed precision: HAWQ-V3, Yao et al. 2021; SliM-LLM,
 * Huang et al. 2024): choose a bit width (and group size) per linear under
 * an average budget, then let quantize use it (qc_calib_linear.bits_override,
 * group_override).
 *
 * Each option b of linear l, a candidate width (× a group size from
 * group_sizes, else quantize's), is quantized as the quantize pass would
 * (its method, GPTQ or RTN, symmetry, clip search, act order; `quantizer:
 * rtn` forces round-to-nearest) on the full-precision model's statistics,
 * giving Ŵ_l(b), and its sensitivity e_l(b) is one of:
 *   kl (the default): the loss increase measured on the model itself: the
 *     mean KL divergence of the next-token distribution when only Ŵ_l(b)
 *     replaces W_l in the full-precision model (compiler/kl_probe.h), on
 *     kl_samples calibration samples of kl_tokens tokens. This weighs each
 *     layer's error by its effect downstream. Only the widths in kl_bits
 *     are run (by default 3), in quantize's group size: another option's
 *     KL is the nearest (in bits) measured one's scaled by the ratio of
 *     their Hessian errors (second order, KL ≈ ½δᵀFδ with δ ∝ the output
 *     error). Measured on SmolLM2-135M (rotate, GPTQ g128, every layer at
 *     2, 3 and 4 bits): KL(2)/KL(3) over e(2)/e(3) has median 1.00 (10th-
 *     90th percentile 0.84-1.26), KL(4)/KL(3) over e(4)/e(3) 0.98
 *     (0.83-1.21); per weight, v_proj is the most sensitive linear (5-20×
 *     q_proj), then k_proj and the MLP of the first and last blocks. At
 *     3.21 bits (rotate, GPTQ w3 g128 otherwise) this allocation beats
 *     uniform 3 bits: PPL 39.40 measuring 3 bits only, 40.16 measuring 2,
 *     3 and 4, vs 42.31; hessian loses (51.37).
 *   hessian: the output error on the calibration inputs, tr(ΔW H ΔWᵀ) =
 *     ‖XΔWᵀ‖²/N, relative to the layer's output energy tr(W H Wᵀ) (error:
 *     relative, the default) or absolute. Errors are summed over layers as
 *     the loss proxy, which treats every layer's relative error as equally
 *     harmful: on SmolLM2-135M (rotate, budget 3.21) it put 2 bits on the
 *     down_proj of blocks 0-2 and lost to uniform 3 bits (PPL 51.4 vs 42.3).
 *     Absolute errors grow with the residual stream, i.e. with depth, and
 *     starve the early blocks further.
 * The sum Σ_l e_l(b_l) is the loss model (additive: interactions between
 * layers are ignored).
 *
 * Global, not per block: the budget is shared by all targeted linears, so
 * every sensitivity must be known before block 0 is quantized. run_model
 * runs a full-precision statistics pre-pass (ctx->walk_fp: one extra
 * forward over the calibration samples, H per block, freed after its
 * sensitivities are computed; the KL probe adds its streams) and solves
 *     min Σ_l e_l(b_l)  s.t.  Σ_l bits_l(b_l) ≤ budget · Σ_l rows·cols
 * exactly by dynamic programming (compiler/allocate.h), where bits_l counts
 * what qc_quant_storage_bits counts: codes, f16 scales, zero points when
 * asymmetric, and a 32-bit g_idx per column under act-order (none with
 * static groups, which keep the groups in column order). The result
 * must lie within 0.01 bits of the budget. A per-block budget would avoid
 * the pre-pass but cannot move bits between blocks (e.g. to the first and
 * last, which are usually the most sensitive). lm_head is never allocated.
 *
 * types: [gguf:q3_k, gguf:q4_k, ...] chooses among ggml block types instead
 * (for a GGUF export, issue 7). Option o of linear l is the type its rows
 * are written in: the listed type, or llama-quantize's fallback when the
 * type's block does not divide the rows (qc_ggml_row_type: q4_k -> q5_0 on
 * 576-wide rows), quantized onto that type's grid as quantize's gguf
 * formats do (qc_ggml_gptq / qc_ggml_rtn) and counted at its true size
 * (block scales included: Q3_K 3.4375, Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625, Q8_0
 * 8.5 bits per weight). The chosen type goes to quantize as
 * qc_calib_linear.dtype_override, so the types solved for are the ones
 * written and exported. kl_bits refers to the types' code widths (Q3_K 3,
 * Q4_K and Q4_0 4, ...). */
#include "compiler/allocate.h"
#include "compiler/dequant.h"
#include "compiler/ggml_quant.h"
#include "compiler/gguf_export.h"
#include "compiler/kl_probe.h"
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 16

static const char *const error_kinds[] = {"relative", "absolute", NULL};
static const char *const sensitivity_kinds[] = {"hessian", "kl", NULL};
static const char *const quantizers[] = {"quantize", "rtn", NULL};

static const qc_param_spec params[] = {
    {"budget_bits", QC_PARAM_FLOAT, NULL, 1, 16, NULL,
     "average bits per weight over the targeted linears, overheads included (met within 0.01)"},
    {"candidates", QC_PARAM_INT_LIST, "[2, 3, 4, 8]", 2, 8, NULL,
     "bit widths to choose from (symmetry: the quantize pass's)"},
    {"group_sizes", QC_PARAM_INT_LIST, "[]", 0, 65536, NULL,
     "group sizes to choose from with each width (0 = per output channel); [] = the quantize "
     "pass's group size"},
    {"types", QC_PARAM_STRING_LIST, "[]", 1, 0, NULL,
     "ggml block types to choose from instead of widths ([gguf:q3_k, gguf:q4_k, gguf:q5_k, "
     "gguf:q6_k, gguf:q8_0], any type quantize's format takes); a type whose block does not "
     "divide a linear's rows is counted and written as its fallback (q4_k -> q5_0, ...); "
     "quantize writes the chosen type"},
    {"sensitivity", QC_PARAM_STRING, "kl", 1, 0, sensitivity_kinds,
     "kl: the KL divergence of the model's next-token distribution with only that layer "
     "quantized, measured (costs about n_layers/2 block forwards and one lm_head over kl_samples "
     "× kl_tokens per layer and measured width); hessian: each layer's output error "
     "tr(ΔW H ΔWᵀ) (see error), cheap but blind to how much each layer's error matters"},
    {"error", QC_PARAM_STRING, "relative", 1, 0, error_kinds,
     "hessian: output error relative to the layer's output energy, or absolute"},
    {"quantizer", QC_PARAM_STRING, "quantize", 1, 0, quantizers,
     "how candidates are quantized for the estimate: as the quantize pass does (GPTQ or RTN), "
     "or round-to-nearest (cheaper)"},
    {"kl_samples", QC_PARAM_INT, "4", 1, 4096, NULL,
     "kl: calibration samples the KL is measured on (the first ones; at most all of them)"},
    {"kl_tokens", QC_PARAM_INT, "128", 8, 1 << 20, NULL,
     "kl: tokens of each of those samples (the first ones; at most all of them)"},
    {"kl_bits", QC_PARAM_INT_LIST, "[3]", 2, 8, NULL,
     "kl: the candidates whose KL is measured (those listed that are candidates, or else the "
     "narrowest); the others' is the nearest measured one's times the ratio of Hessian errors"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct item {
    char *name; /* weight name */
    int64_t rows, cols;
    double cost[MAX_OPTS], error[MAX_OPTS];
    double herr[MAX_OPTS]; /* tr(ΔW H ΔWᵀ) */
    int stream[MAX_OPTS];  /* kl: the probe's stream of each option, or -1 */
    int dtype[MAX_OPTS];   /* types: the ggml type option o writes these rows in */
    int bits, group, type; /* chosen (type: with types, else 0) */
} item;

typedef struct alloc_state {
    item *items;
    int n;
    int opts[MAX_OPTS], groups[MAX_OPTS], n_opts; /* option o: opts[o] bits, groups[o] */
    qc_quant_format fmt; /* symmetry; bits and group size filled per option */
    qc_clip_search clip;
    int act_order;
    qc_gptq_opts gptq; /* set when candidates are quantized with GPTQ */
    int use_gptq;
    int relative;         /* hessian errors relative to the layer's output energy */
    int probed[MAX_OPTS]; /* kl: options measured (the others extrapolated) */
    qc_kl_probe *probe;   /* kl: measures the probed options */
    double achieved;      /* average bits of the choice */
    int types[MAX_OPTS];  /* types: option o's ggml type as listed, else 0 */
} alloc_state;

static void free_state(void *p) {
    alloc_state *s = p;
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        free(s->items[i].name);
    free(s->items);
    qc_kl_probe_free(s->probe);
    free(s);
}

/* Storage bits of a rows × cols linear at b bits in groups of gs columns
 * (qc_quant_storage_bits). */
static double storage_bits(const alloc_state *s, int64_t rows, int64_t cols, int b, int gs) {
    int64_t g = gs ? (cols + gs - 1) / gs : 1;
    double groups = (double)rows * (double)g;
    double bits = (double)rows * (double)cols * b + groups * 16;
    if (!s->fmt.symmetric) bits += groups * b;
    if (s->act_order && !s->gptq.static_groups && gs) bits += 32.0 * (double)cols;
    return bits;
}

/* tr(D H Dᵀ) for D rows × c (f32), hf = H in f32; t: rows × c scratch. */
static double hessian_norm(const float *d, const float *hf, int64_t rows, int64_t c, float *t) {
    qcrt_sgemm(CblasNoTrans, CblasNoTrans, (int)rows, (int)c, (int)c, 1.0f, d, (int)c, hf, (int)c,
               0.0f, t, (int)c);
    double e = 0;
    for (size_t i = 0; i < (size_t)(rows * c); i++)
        e += (double)t[i] * d[i];
    return e;
}

/* Ŵ of l at the format f, into deq, as the estimate's quantizer does it. */
static int quantize_candidate(const alloc_state *s, const qc_calib_linear *l,
                              const qc_quant_format *f, const double *diag, float *deq,
                              qc_err *err) {
    qc_quant_state *q = qc_quant_state_new(f, l->rows, l->cols, err);
    if (!q) return -1;
    int rc;
    if (s->use_gptq) {
        size_t hn = (size_t)l->cols * (size_t)l->cols;
        double *h = qc_malloc(hn * sizeof(double), err);
        rc = h ? 0 : -1;
        if (h) {
            memcpy(h, l->H, hn * sizeof(double));
            qc_gptq_info info = {0};
            qc_gptq_opts o = s->gptq;
            o.info = &info;
            rc = qc_quant_gptq(l->w, h, &o, q, deq, err);
            free(h);
        }
    } else {
        rc = qc_quant_rtn(l->w, diag, &s->clip, q, deq, err);
    }
    qc_quant_state_free(q);
    return rc;
}

/* Ŵ of l in the ggml type t (one its rows take), into deq, as quantize's
 * gguf formats write it. */
static int ggml_candidate(const alloc_state *s, const qc_calib_linear *l, qc_dtype t,
                          const double *diag, float *deq, qc_err *err) {
    size_t rb;
    if (qc_dtype_nbytes(t, l->cols, &rb)) return qc_err_set(err, "%s: bad row", qc_dtype_name(t));
    uint8_t *blocks = qc_malloc(rb * (size_t)l->rows, err);
    double *h =
        s->use_gptq && blocks ? qc_malloc((size_t)(l->cols * l->cols) * sizeof *h, err) : NULL;
    int rc = -1;
    if (s->use_gptq && h) {
        memcpy(h, l->H, (size_t)(l->cols * l->cols) * sizeof *h);
        qc_gptq_info info = {0};
        qc_gptq_opts o = s->gptq;
        o.info = &info;
        rc = qc_ggml_gptq(t, l->w, h, &o, l->rows, l->cols, blocks, deq, err);
    } else if (!s->use_gptq && blocks) {
        rc = qc_ggml_rtn(t, l->w, diag, l->rows, l->cols, blocks, deq, err);
    }
    free(blocks), free(h);
    return rc;
}

/* types: option o of l is the type its rows take (it->dtype[o]); one that
 * an earlier option already takes copies that option (returns 1) unless
 * only this one is probed. Returns 0 (quantize it), 1, or -1 with err. */
static int ggml_option(const alloc_state *s, const qc_calib_linear *l, item *it, int o,
                       qc_err *err) {
    qc_dtype t = qc_ggml_row_type((qc_dtype)s->types[o], l->cols, NULL);
    if (t == QC_DT_F16)
        return qc_err_set(err, "no ggml block type fits rows of %lld weights", (long long)l->cols);
    it->dtype[o] = (int)t;
    for (int k = 0; k < o; k++)
        if (it->dtype[k] == (int)t && (it->stream[k] >= 0 || !s->probed[o])) {
            it->herr[o] = it->herr[k];
            it->error[o] = it->error[k];
            it->cost[o] = it->cost[k];
            it->stream[o] = it->stream[k];
            return 1;
        }
    size_t rb;
    qc_dtype_nbytes(t, l->cols, &rb);
    it->cost[o] = 8.0 * (double)rb * (double)l->rows;
    return 0;
}

/* types: options writing the same type (after fallbacks) take one error,
 * the measured one's where only one was measured. */
static void same_type_errors(alloc_state *s) {
    for (int i = 0; i < s->n; i++) {
        item *it = &s->items[i];
        for (int o = 0; o < s->n_opts; o++)
            for (int k = 0; k < o; k++)
                if (it->dtype[k] == it->dtype[o]) {
                    int from = it->stream[o] >= 0 && it->stream[k] < 0 ? o : k;
                    it->error[o] = it->error[k] = it->error[from];
                }
    }
}

/* Fills it's costs and Hessian errors, and for kl the perturbations of the
 * probed options (pert[*np...], their weights in deqs[o], owned by the
 * caller; NULL for the other options). */
static int sensitivities(alloc_state *s, const qc_calib_linear *l, item *it, float **deqs,
                         qc_kl_perturb *pert, int *np, qc_err *err) {
    size_t n = (size_t)(l->rows * l->cols), c = (size_t)l->cols;
    float *d = qc_malloc(n * sizeof(float), err), *t = qc_malloc(n * sizeof(float), err);
    float *hf = qc_malloc(c * c * sizeof(float), err);
    double *diag = qc_malloc(c * sizeof(double), err);
    int rc = -1;
    if (!d || !t || !hf || !diag) goto out;
    for (size_t i = 0; i < c * c; i++)
        hf[i] = (float)l->H[i];
    for (size_t j = 0; j < c; j++)
        diag[j] = l->H[j * c + j];
    double energy = 1; /* tr(W H Wᵀ) when errors are relative */
    if (s->relative) {
        double e = hessian_norm(l->w, hf, l->rows, (int64_t)c, t);
        energy = e > 0 ? e : 1;
    }
    for (int o = 0; o < s->n_opts; o++) {
        qc_quant_format f = s->fmt;
        f.bits = s->opts[o];
        f.group_size = s->groups[o];
        it->stream[o] = -1;
        int copied = s->types[o] ? ggml_option(s, l, it, o, err) : 0;
        if (copied < 0) goto out;
        if (copied) continue;
        if (!(deqs[o] = qc_malloc(n * sizeof(float), err)) ||
            (s->types[o] ? ggml_candidate(s, l, (qc_dtype)it->dtype[o], diag, deqs[o], err)
                         : quantize_candidate(s, l, &f, diag, deqs[o], err)))
            goto out;
        for (size_t i = 0; i < n; i++)
            d[i] = l->w[i] - deqs[o][i];
        it->herr[o] = hessian_norm(d, hf, l->rows, (int64_t)c, t);
        it->error[o] = it->herr[o] / energy;
        if (!s->types[o]) it->cost[o] = storage_bits(s, l->rows, l->cols, s->opts[o], s->groups[o]);
        if (s->probe && s->probed[o]) {
            it->stream[o] = qc_kl_probe_count(s->probe) + *np;
            pert[(*np)++] = (qc_kl_perturb){l->kind, deqs[o], l->bias};
        } else { /* only the probe needs Ŵ after this */
            free(deqs[o]);
            deqs[o] = NULL;
        }
    }
    rc = 0;
out:
    free(d), free(t), free(hf), free(diag);
    return rc;
}

static int visit(void *ud, qc_calib_block *b, qc_err *err) {
    alloc_state *s = ud;
    float *deqs[7 * MAX_OPTS] = {0};
    qc_kl_perturb pert[7 * MAX_OPTS];
    int np = 0, nd = 0, rc = -1;
    if (b->n_linears > 7) return qc_err_set(err, "block %d: %d linears", b->index, b->n_linears);
    for (int i = 0; i < b->n_linears; i++) {
        const qc_calib_linear *l = &b->linears[i];
        if (!l->targeted) continue;
        item *ni = realloc(s->items, (size_t)(s->n + 1) * sizeof *ni);
        if (!ni) {
            qc_err_set(err, "out of memory");
            goto out;
        }
        s->items = ni;
        item *it = &s->items[s->n];
        memset(it, 0, sizeof *it);
        if (!(it->name = strdup(l->name))) {
            qc_err_set(err, "out of memory");
            goto out;
        }
        s->n++;
        it->rows = l->rows;
        it->cols = l->cols;
        int r = sensitivities(s, l, it, deqs + nd, pert, &np, err);
        nd += s->n_opts;
        if (r) {
            qc_err_prefix(err, "%s", l->name);
            goto out;
        }
    }
    rc = s->probe ? qc_kl_probe_block(s->probe, b->index, pert, np, err) : 0;
out:
    for (int i = 0; i < nd; i++)
        free(deqs[i]);
    return rc;
}

/* kl: each option's error is its measured KL; an unprobed option's is the
 * nearest probed one's (in bits; the wider on a tie) times the ratio of
 * their Hessian errors. */
static int kl_errors(alloc_state *s, qc_err *err) {
    int n = qc_kl_probe_count(s->probe);
    double *kl = qc_malloc((size_t)(n ? n : 1) * sizeof *kl, err);
    if (!kl || qc_kl_probe_finish(s->probe, kl, err)) {
        free(kl);
        return -1;
    }
    for (int i = 0; i < s->n; i++) {
        item *it = &s->items[i];
        int ref[MAX_OPTS];
        for (int o = 0; o < s->n_opts; o++) {
            ref[o] = -1;
            for (int k = 0; k < s->n_opts; k++) {
                if (it->stream[k] < 0) continue;
                int dk = abs(s->opts[k] - s->opts[o]),
                    dr = ref[o] < 0 ? 99 : abs(s->opts[ref[o]] - s->opts[o]);
                if (dk < dr || (dk == dr && s->opts[k] > s->opts[ref[o]])) ref[o] = k;
            }
        }
        for (int o = 0; o < s->n_opts; o++)
            if (it->stream[o] >= 0)
                it->error[o] = kl[it->stream[o]];
            else
                it->error[o] = it->herr[ref[o]] > 0
                                   ? kl[it->stream[ref[o]]] * it->herr[o] / it->herr[ref[o]]
                                   : 0;
    }
    free(kl);
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

/* types: one option per listed ggml type, its code width as opts[o] (what
 * kl_bits names). candidates and group_sizes must not be given too. */
static int type_options(alloc_state *s, const qc_params *p, qc_err *err) {
    const qc_param_value *tv = qc_params_get(p, "types");
    if (qc_params_get(p, "candidates")->line > 0 || qc_params_get(p, "group_sizes")->line > 0)
        return qc_err_set(
            err, "types (line %d): give types, or candidates and group_sizes, not both", tv->line);
    if (tv->n > MAX_OPTS)
        return qc_err_set(err, "types (line %d): 1 to %d types, got %d", tv->line, MAX_OPTS, tv->n);
    for (int o = 0; o < tv->n; o++, s->n_opts++) {
        const char *name = tv->slist[o];
        qc_dtype t;
        if (strncmp(name, "gguf:", 5) || qc_dtype_from_name(name + 5, &t) ||
            qc_ggml_type_shape(t, NULL, NULL, &s->opts[o], NULL))
            return qc_err_set(err,
                              "types (line %d): '%s' is not a ggml block type quantize writes "
                              "(gguf:q8_0, gguf:q4_0, gguf:q4_1, gguf:q5_0, gguf:q5_1, "
                              "gguf:iq4_nl, gguf:q3_k, gguf:q4_k, gguf:q5_k, gguf:q6_k, "
                              "gguf:iq4_xs)",
                              tv->line, name);
        for (int k = 0; k < o; k++)
            if (s->types[k] == (int)t)
                return qc_err_set(err, "types (line %d): %s listed twice", tv->line, name);
        s->types[o] = (int)t;
    }
    return 0;
}

static int run_model(const qc_pass_ctx *ctx, const qc_params *p, struct qc_model *m, qc_err *err) {
    const qc_params *qp = ctx->quantize;
    if (!qp) return qc_err_set(err, "needs a quantize pass in the recipe (its format)");
    if (!ctx->walk_fp || !ctx->state) return qc_err_set(err, "needs the calibration driver");
    const qc_param_value *cands = qc_params_get(p, "candidates");
    const qc_param_value *gsv = qc_params_get(p, "group_sizes");
    double budget = qc_params_float(p, "budget_bits");
    int qgroup = (int)qc_params_int(qp, "group_size"), n_groups = gsv->n ? gsv->n : 1;
    int typed = qc_params_get(p, "types")->n > 0;
    if (!typed && (cands->n < 1 || cands->n * n_groups > MAX_OPTS))
        return qc_err_set(err, "candidates × group_sizes: 1 to %d options, got %d × %d", MAX_OPTS,
                          cands->n, n_groups);
    for (int k = 0; k < gsv->n; k++)
        if (gsv->ilist[k] != 0 && gsv->ilist[k] < 8)
            return qc_err_set(err, "group_sizes: %lld: use 0 (per-channel) or at least 8",
                              (long long)gsv->ilist[k]);
    alloc_state *s = qc_calloc(1, sizeof *s, err);
    if (!s) return -1;
    *ctx->state = s; /* freed by the driver, also on error */
    if (typed && type_options(s, p, err)) return -1;
    for (int c = 0; c < cands->n && !typed; c++)
        for (int g = 0; g < n_groups; g++, s->n_opts++) {
            s->opts[s->n_opts] = (int)cands->ilist[c];
            s->groups[s->n_opts] = gsv->n ? (int)gsv->ilist[g] : qgroup;
        }
    /* kl probes the group size quantize has (if listed, else the first). */
    int pgroup = s->groups[0];
    for (int o = 0; o < s->n_opts; o++)
        if (s->groups[o] == qgroup) pgroup = qgroup;
    s->fmt = (qc_quant_format){4, qgroup, qc_params_bool(qp, "symmetric")};
    s->clip =
        (qc_clip_search){qc_params_bool(qp, "clip_search"), (float)qc_params_float(qp, "clip_min"),
                         (int)qc_params_int(qp, "clip_steps")};
    s->act_order =
        strcmp(qc_params_str(qp, "method"), "gptq") == 0 && qc_params_bool(qp, "act_order");
    s->relative = strcmp(qc_params_str(p, "error"), "relative") == 0;
    s->use_gptq = strcmp(qc_params_str(qp, "method"), "gptq") == 0 &&
                  strcmp(qc_params_str(p, "quantizer"), "quantize") == 0;
    s->gptq = (qc_gptq_opts){qc_params_float(qp, "damp"),
                             (int)qc_params_int(qp, "block_size"),
                             qc_params_bool(qp, "act_order"),
                             qc_params_bool(qp, "static_groups"),
                             s->clip,
                             NULL};
    const qc_param_value *kb = qc_params_get(p, "kl_bits");
    int min_o = -1, any = 0;
    for (int o = 0; o < s->n_opts; o++) {
        for (int k = 0; k < o; k++)
            if (!typed && s->opts[k] == s->opts[o] && s->groups[k] == s->groups[o])
                return qc_err_set(err, "%d bits in groups of %d listed twice", s->opts[o],
                                  s->groups[o]);
        if (s->groups[o] != pgroup) continue;
        if (min_o < 0 || s->opts[o] < s->opts[min_o]) min_o = o;
        for (int k = 0; k < kb->n; k++)
            s->probed[o] |= kb->ilist[k] == s->opts[o];
        any |= s->probed[o];
    }
    if (!any) s->probed[min_o] = 1;
    if (strcmp(qc_params_str(p, "sensitivity"), "kl") == 0) {
        if (!ctx->calib_ids) return qc_err_set(err, "sensitivity kl needs calibration samples");
        int ks = (int)qc_params_int(p, "kl_samples"), kt = (int)qc_params_int(p, "kl_tokens");
        ks = ks < ctx->calib_samples ? ks : ctx->calib_samples;
        kt = kt < ctx->calib_tokens ? kt : ctx->calib_tokens;
        if (!(s->probe = qc_kl_probe_new(m, ctx->calib_ids, ctx->calib_tokens, ks, kt, err)))
            return -1;
    }
    if (ctx->walk_fp(ctx, visit, s, err)) return -1;
    if (s->n == 0) return qc_err_set(err, "no linear is targeted");
    if (s->probe && kl_errors(s, err)) return -1;
    if (typed) same_type_errors(s);
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
        s->items[i].group = s->groups[choice[i]];
        s->items[i].type = s->items[i].dtype[choice[i]];
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
            if (strcmp(s->items[k].name, l->name) == 0) {
                l->bits_override = s->items[k].type ? 0 : s->items[k].bits;
                l->group_override = s->items[k].group;
                l->dtype_override = s->items[k].type;
            }
    }
    return 0;
}

const qc_pass qc_pass_allocate = {
    .name = "allocate",
    .doc = "choose a bit width (and group size) per linear under an average bit budget "
           "(overheads included) from each option's measured KL divergence or Hessian-weighted "
           "output error on a full-precision pre-pass, solved exactly (knapsack DP); quantize "
           "uses the chosen formats",
    .params = params,
    .run_block = run_block,
    .run_model = run_model,
    .free_state = free_state,
};
