/* The `outliers` pass (dense-and-sparse decomposition: SpQR, Dettmers et al.
 * 2023; SqueezeLLM, Kim et al. 2023): marks the most sensitive weights of
 * each targeted linear to be kept as sparse f16 values. It runs before
 * `quantize`, which leaves the marked weights out of the dense codes and of
 * the group scale fit and attaches them to the state as CSR outliers.
 *
 * Sensitivity of weight w_ij: the OBS saliency w_ij² / [H⁻¹]_jj (Hassibi &
 * Stork 1993; SpQR eq. 3), the increase of the output error ‖XΔWᵀ‖² when
 * w_ij alone is set to zero and the rest of row i re-optimised; [H⁻¹] from H
 * dampened as GPTQ does. `magnitude` ranks by |w_ij| instead. */
#include "compiler/hcache.h"
#include "compiler/pass.h"
#include "compiler/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const criteria[] = {"sensitivity", "magnitude", NULL};

static const qc_param_spec params[] = {
    {"fraction", QC_PARAM_FLOAT, "0.005", 0, 0.25, NULL,
     "share of each layer's weights kept as outliers (the round(fraction·rows·cols) highest "
     "scores)"},
    {"threshold", QC_PARAM_FLOAT, "0", 0, 1e12, NULL,
     "instead of fraction: keep weights whose score exceeds threshold × the layer's mean score "
     "(0 = use fraction)"},
    {"criterion", QC_PARAM_STRING, "sensitivity", 1, 0, criteria,
     "sensitivity: w² / [H⁻¹]_jj (OBS saliency); magnitude: |w|"},
    {"damp", QC_PARAM_FLOAT, "0.01", 0, 1, NULL,
     "sensitivity: fraction of the mean Hessian diagonal added before inverting (as GPTQ)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Orders flat indices by decreasing score, ties by increasing index. */
static int cmp_score_desc(const void *a, const void *b, void *key) {
    const double *s = key;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (s[i] != s[j]) return s[i] > s[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* The selection as a mask (rows × cols): the k highest scores, or those
 * above thr·mean when thr > 0. Returns the number selected, -1 on OOM. */
static int64_t select_top(const double *score, int64_t n, double fraction, double thr,
                          uint8_t *mask, qc_err *err) {
    memset(mask, 0, (size_t)n);
    int64_t k = 0;
    if (thr > 0) {
        double mean = 0;
        for (int64_t i = 0; i < n; i++)
            mean += score[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++)
            if (score[i] > thr * mean) mask[i] = 1, k++;
        return k;
    }
    k = (int64_t)floor(fraction * (double)n + 0.5);
    if (k == 0) return 0;
    int64_t *idx = qc_malloc((size_t)n * sizeof *idx, err);
    if (!idx) return -1;
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_score_desc, (void *)score);
    for (int64_t i = 0; i < k; i++)
        mask[idx[i]] = 1;
    free(idx);
    return k;
}

/* Scores of l's weights (rows × cols); hinv is [H⁻¹]_jj (NULL: magnitude). */
static int score_linear(const qc_calib_linear *l, const double *hinv, double *score, qc_err *err) {
    for (int64_t r = 0; r < l->rows; r++)
        for (int64_t c = 0; c < l->cols; c++) {
            double w = l->w[r * l->cols + c];
            if (!isfinite(w))
                return qc_err_set(err, "non-finite weight (%g) at row %lld, column %lld", w,
                                  (long long)r, (long long)c);
            score[r * l->cols + c] = hinv ? w * w / hinv[c] : fabs(w);
        }
    return 0;
}

static int check_params(const qc_params *p, qc_err *err) {
    double f = qc_params_float(p, "fraction"), t = qc_params_float(p, "threshold");
    const qc_param_value *fv = qc_params_get(p, "fraction");
    if (!(f >= 0 && f <= 0.25)) return qc_err_set(err, "fraction %g out of range [0, 0.25]", f);
    if (!(t >= 0) || !isfinite(t)) return qc_err_set(err, "threshold %g must be >= 0", t);
    if (t > 0 && fv && fv->line > 0)
        return qc_err_set(err, "give fraction (line %d) or threshold, not both", fv->line);
    return 0;
}

/* [H⁻¹]_jj with GPTQ's dampening (ud: the damp). */
static int hinv_derive(const double *H, int64_t n, double *out, const void *ud, qc_err *err) {
    return qc_quant_hinv_diag(H, n, *(const double *)ud, out, NULL, err);
}

static int mark_linear(const qc_params *p, qc_hcache *hc, qc_calib_linear *l, qc_err *err) {
    if (l->q)
        return qc_err_set(err, "already quantized: put outliers before quantize in the recipe");
    int sens = strcmp(qc_params_str(p, "criterion"), "sensitivity") == 0;
    if (sens && !l->H)
        return qc_err_set(err, "criterion sensitivity needs calibration statistics (no Hessian)");
    size_t n;
    if (qc_mul_size((size_t)l->rows, (size_t)l->cols, &n) || n > SIZE_MAX / sizeof(double))
        return qc_err_set(err, "%lld x %lld weight too large", (long long)l->rows,
                          (long long)l->cols);
    const double *hinv = sens ? qc_hcache_get(hc, l->H, l->cols, (size_t)l->cols, err) : NULL;
    if (sens && !hinv) return -1;
    double *score = qc_malloc(n * sizeof *score, err);
    uint8_t *mask = score ? qc_malloc(n, err) : NULL;
    int64_t k = -1;
    if (mask && score_linear(l, hinv, score, err) == 0)
        k = select_top(score, (int64_t)n, qc_params_float(p, "fraction"),
                       qc_params_float(p, "threshold"), mask, err);
    free(score);
    if (k < 0) {
        free(mask);
        return -1;
    }
    free(l->outliers); /* a rerun replaces the earlier choice */
    l->outliers = NULL;
    if (k > 0)
        l->outliers = mask;
    else
        free(mask);
    return 0;
}

static int run_block(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err) {
    (void)ctx;
    if (check_params(p, err)) return qc_err_prefix(err, "outliers");
    double damp = qc_params_float(p, "damp");
    qc_hcache hc = {.derive = hinv_derive, .ud = &damp};
    int rc = 0;
    for (int i = 0; i < b->n_linears && rc == 0; i++) {
        qc_calib_linear *l = &b->linears[i];
        if (!l->targeted) continue;
        if ((rc = mark_linear(p, &hc, l, err)))
            qc_err_prefix(err, "outliers: block %d: %s", b->index, l->name);
    }
    qc_hcache_free(&hc);
    return rc;
}

const qc_pass qc_pass_outliers = {
    .name = "outliers",
    .doc = "keep the most sensitive weights (w²/[H⁻¹]_jj or |w|) as sparse f16 outliers, "
           "outside the dense quantization (SpQR, SqueezeLLM); put it before quantize",
    .params = params,
    .run_block = run_block,
};
