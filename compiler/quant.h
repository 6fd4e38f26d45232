/* Group-wise integer weight quantization: formats, scale/zero search, RTN,
 * and the compressed state of one linear layer (codes + scales + zeros +
 * group index). Dequantized weight:
 *     Ŵ[r][c] = scale[r][g] · (code[r][c] − zero[r][g]),  g = g_idx[c]
 * Symmetric formats use zero = 2^(bits−1) (codes are offset so they stay
 * unsigned); asymmetric ones store a per-group integer zero in [0, 2^bits−1]. */
#ifndef QC_QUANT_H
#define QC_QUANT_H

#include "err.h"

#include <stdint.h>

typedef struct qc_quant_format {
    int bits;       /* 2..8 */
    int group_size; /* columns per group; 0 = one group per output row (per-channel) */
    int symmetric;  /* 1: zero fixed at 2^(bits-1); 0: per-group zero point */
} qc_quant_format;

/* Scale search for a group: try clip ratios 1, 1 - step, ... down to
 * min_ratio of the (asymmetric: min/max, symmetric: abs-max) range and keep
 * the one with the smallest weighted squared error Σ d_j (w_j − ŵ_j)². */
typedef struct qc_clip_search {
    int enabled;
    float min_ratio; /* e.g. 0.75 */
    int steps;       /* grid points, e.g. 20 */
} qc_clip_search;

/* The compressed state of one linear (rows = out features, cols = in). */
typedef struct qc_quant_state {
    qc_quant_format fmt;
    int64_t rows, cols;
    int64_t n_groups; /* per row */
    uint8_t *codes;   /* rows × cols, original column order */
    float *scales;    /* rows × n_groups */
    float *zeros;     /* rows × n_groups (integer-valued; 2^(bits-1) when symmetric) */
    int32_t *g_idx;   /* cols: group of each column (act-order reorders groups) */
    int32_t *perm;    /* cols: GPTQ column order when act-order was used, else NULL */
} qc_quant_state;

/* Allocates an empty state for a rows × cols weight in fmt (g_idx set to
 * c / group_size). Returns NULL with err on bad format or allocation. */
qc_quant_state *qc_quant_state_new(const qc_quant_format *fmt, int64_t rows, int64_t cols,
                                   qc_err *err);
void qc_quant_state_free(qc_quant_state *q);

/* Checks a format: bits 2..8, group size 0 or a positive divisor-friendly
 * value (groups may be ragged at the end: n_groups = ceil(cols / group)). */
int qc_quant_format_check(const qc_quant_format *fmt, int64_t cols, qc_err *err);

/* Fits scale and zero for one group of n weights w (weights d for the clip
 * search error; NULL = uniform). */
void qc_quant_fit_group(const qc_quant_format *fmt, const qc_clip_search *clip, const float *w,
                        const float *d, int64_t n, float *scale, float *zero);

/* Quantizes one value with a fitted (scale, zero): the integer code. */
static inline uint8_t qc_quant_code(float w, float scale, float zero, int bits) {
    float q = scale > 0 ? w / scale + zero : zero;
    float hi = (float)((1 << bits) - 1);
    q = q < 0 ? 0 : (q > hi ? hi : q);
    return (uint8_t)(q + 0.5f);
}

static inline float qc_quant_value(uint8_t code, float scale, float zero) {
    return scale * ((float)code - zero);
}

/* Round-to-nearest of a whole weight (rows × cols, row-major) into q; diag
 * (cols, may be NULL) weights the clip search error per column (e.g. H's
 * diagonal). Writes the dequantized weight to deq when non-NULL. */
int qc_quant_rtn(const float *w, const double *diag, const qc_clip_search *clip, qc_quant_state *q,
                 float *deq, qc_err *err);

/* GPTQ (Frantar et al. 2022, Alg. 1) with lazy batch updates: quantizes w
 * (rows × cols) column by column using H = 2XᵀX (cols × cols, f64, modified:
 * dampened in place), spreading each column's error over the columns not yet
 * quantized through the Cholesky factor of H⁻¹. */
/* What GPTQ had to do about a degenerate Hessian, for the report. */
typedef struct qc_gptq_info {
    double damp_used;    /* the dampening that made H positive definite */
    int damp_retries;    /* times damp was raised tenfold after a failed Cholesky */
    int64_t dead_inputs; /* columns with H_jj = 0 (never-active inputs), zeroed */
} qc_gptq_info;

typedef struct qc_gptq_opts {
    double damp;       /* fraction of mean(diag H) added to the diagonal (0.01) */
    int block;         /* lazy-update block width (128) */
    int act_order;     /* quantize columns by decreasing diag(H) */
    int static_groups; /* fit group scales on the unmodified weight before GPTQ */
    qc_clip_search clip;
    qc_gptq_info *info; /* optional out: degenerate-Hessian handling */
} qc_gptq_opts;

/* Fills q (already allocated with qc_quant_state_new) and, when deq is
 * non-NULL, the dequantized weight. H is overwritten (dampened, factored).
 * Columns whose H diagonal is zero (dead inputs) get weight 0 and no error
 * spreading. When H + damp·mean(diag)·I is not positive definite (a singular
 * Hessian: collinear or too few calibration tokens), damp is raised tenfold
 * up to 1 and opts->info says so. Returns 0, or -1 with err (non-finite H,
 * or not positive definite even at damp 1). */
int qc_quant_gptq(const float *w, double *H, const qc_gptq_opts *opts, qc_quant_state *q,
                  float *deq, qc_err *err);

/* Dequantizes q into w (rows × cols). */
void qc_quant_dequantize(const qc_quant_state *q, float *w);

/* Storage cost in bits of q: codes + f16 scales + zeros (bits each, when
 * asymmetric) + g_idx (32 bits per column when act-order reorders groups). */
double qc_quant_storage_bits(const qc_quant_state *q);

#endif
