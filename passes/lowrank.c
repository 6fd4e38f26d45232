/* The `lowrank` pass: rank-r compensation of each targeted linear's
 * quantization error E = W − Ŵ (Ŵ with its sparse outliers), stored as f16
 * factors on the quantized state, so Ŵ becomes dequant + outliers + A·B
 * (compiler/lowrank.h has the math: EoRA, or plain SVD as in LoRC). It runs
 * after quantize; the updated Ŵ is what the calibration driver propagates
 * (it builds the fake-quant linear from the state) and what the report
 * measures. Running it again replaces the earlier factors. */
#include "compiler/lowrank.h"
#include "compiler/hcache.h"
#include "compiler/pass.h"
#include "compiler/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const methods[] = {"eora", "svd", NULL};

static const qc_param_spec params[] = {
    {"method", QC_PARAM_STRING, "eora", 1, 0, methods,
     "eora: minimise the output error on the calibration inputs (eigenspace of XᵀX); svd: "
     "minimise ‖E − AB‖ (plain truncated SVD)"},
    {"rank", QC_PARAM_INT, "16", 1, 4096, NULL, "rank r of the correction (at most min(out, in))"},
    {"budget_bits", QC_PARAM_FLOAT, "0", 0, 16, NULL,
     "instead of rank: the largest rank whose f16 factors cost at most this many bits per "
     "weight of the layer, 16·r·(out + in) / (out · in) (0 = use rank)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* The rank for l: the fixed one, or the one the budget affords. */
static int rank_for(const qc_params *p, const qc_calib_linear *l, int *rank, qc_err *err) {
    int64_t rows = l->rows, cols = l->cols, k = rows < cols ? rows : cols;
    double budget = qc_params_float(p, "budget_bits");
    if (!(budget >= 0 && budget <= 16))
        return qc_err_set(err, "budget_bits %g out of range", budget);
    if (budget > 0) {
        const qc_param_value *rv = qc_params_get(p, "rank");
        if (rv && rv->line > 0)
            return qc_err_set(err, "give rank (line %d) or budget_bits, not both", rv->line);
        double r = floor(budget * (double)rows * (double)cols / (16.0 * (double)(rows + cols)));
        *rank = (int)(r < (double)k ? r : (double)k);
        return 0;
    }
    int64_t r = qc_params_int(p, "rank");
    if (r < 1 || r > k)
        return qc_err_set(err, "rank %lld out of range 1..%lld for a %lld x %lld weight",
                          (long long)r, (long long)k, (long long)rows, (long long)cols);
    *rank = (int)r;
    return 0;
}

static int hsqrt_derive(const double *H, int64_t n, double *S, const void *ud, qc_err *err) {
    (void)ud;
    return qc_lowrank_hsqrt(H, n, S, err);
}

/* Appends "; text" (or "text") to l's report note. */
static void note_add(qc_calib_linear *l, const char *text) {
    size_t n = strlen(l->note);
    if (n + 3 < sizeof l->note)
        snprintf(l->note + n, sizeof l->note - n, "%s%s", n ? "; " : "", text);
}

static int compensate(const qc_params *p, qc_hcache *hc, qc_calib_linear *l, qc_err *err) {
    if (l->blocks)
        return qc_err_set(err, "a low-rank correction cannot be stored with a GGUF block type "
                               "(quantize format gguf:*): llama.cpp has no such term");
    if (!l->q || !l->deq)
        return qc_err_set(err, "not quantized: put lowrank after quantize in the recipe");
    int eora = strcmp(qc_params_str(p, "method"), "eora") == 0, rank = 0;
    if (rank_for(p, l, &rank, err)) return -1;
    if (eora && !l->H) return qc_err_set(err, "eora needs calibration statistics (no Hessian)");
    if (rank == 0) { /* the budget affords none: drop earlier factors */
        if (qc_quant_set_lowrank(l->q, 0, NULL, NULL, err)) return -1;
        qc_quant_dequantize(l->q, l->deq);
        return 0;
    }
    int64_t rows = l->rows, cols = l->cols;
    size_t n = (size_t)rows * (size_t)cols;
    /* S = QΛ^{1/2}: one eigendecomposition per input group. */
    const double *S =
        eora ? qc_hcache_get(hc, l->H, l->cols, (size_t)l->cols * (size_t)l->cols, err) : NULL;
    if (eora && !S) return -1;
    double *E = qc_malloc(n * sizeof *E, err);
    float *A = E ? qc_malloc((size_t)rows * (size_t)rank * sizeof *A, err) : NULL;
    float *B = A ? qc_malloc((size_t)rank * (size_t)cols * sizeof *B, err) : NULL;
    int rc = -1;
    if (!B) goto out;
    /* Ŵ without earlier factors, exactly as the state dequantizes. */
    if (qc_quant_set_lowrank(l->q, 0, NULL, NULL, err)) goto out;
    qc_quant_dequantize(l->q, l->deq);
    for (size_t i = 0; i < n; i++)
        E[i] = (double)l->w[i] - (double)l->deq[i];
    /* before/after: output errors tr(E H Eᵀ) (weight errors without H); own:
     * the method's norm, against its exact optimum opt before f16 rounding. */
    double before = qc_lowrank_err(E, rows, cols, l->H), opt;
    if (qc_lowrank_fit(E, rows, cols, S, rank, A, B, &opt, err) ||
        qc_quant_set_lowrank(l->q, rank, A, B, err))
        goto out;
    qc_quant_add_lowrank(l->q, l->deq);
    for (size_t i = 0; i < n; i++)
        E[i] = (double)l->w[i] - (double)l->deq[i];
    double after = qc_lowrank_err(E, rows, cols, l->H);
    double own = eora ? after : qc_lowrank_err(E, rows, cols, NULL);
    char text[128];
    snprintf(text, sizeof text, "%s rank %d: %s error x%.4f (f16 factors: %+.2g%% vs exact)",
             eora ? "eora" : "svd", rank, l->H ? "output" : "weight",
             before > 0 ? after / before : 1.0, opt > 0 ? 100 * (own / opt - 1) : 0.0);
    note_add(l, text);
    rc = 0;
out:
    free(E), free(A), free(B);
    return rc;
}

static int run_block(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err) {
    (void)ctx;
    qc_hcache hc = {.derive = hsqrt_derive};
    int rc = 0;
    for (int i = 0; i < b->n_linears && rc == 0; i++) {
        qc_calib_linear *l = &b->linears[i];
        if (!l->targeted) continue;
        if ((rc = compensate(p, &hc, l, err)))
            qc_err_prefix(err, "lowrank: block %d: %s", b->index, l->name);
    }
    qc_hcache_free(&hc);
    return rc;
}

const qc_pass qc_pass_lowrank = {
    .name = "lowrank",
    .doc = "rank-r f16 correction A·B of the quantization error, fitted on the calibration "
           "inputs (EoRA) or by plain SVD (LoRC); put it after quantize",
    .params = params,
    .run_block = run_block,
};
