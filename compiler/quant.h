/* Group-wise integer weight quantization: formats, scale/zero search, RTN,
 * GPTQ, and the compressed state of one linear layer: dense codes + scales +
 * zeros + group index, optional sparse outliers and optional low-rank
 * factors. Dequantized weight:
 *     Ŵ[r][c] = scale[r][g] · (code[r][c] − zero[r][g])        g = g_idx[c]
 *             + S[r][c]                   (sparse outliers, CSR, f16 values)
 *             + Σ_k A[r][k] · B[k][c]     (low-rank factors, f16)
 * Symmetric formats use zero = 2^(bits−1) (codes are offset so they stay
 * unsigned); asymmetric ones store a per-group integer zero in [0, 2^bits−1].
 * At an outlier position the dense code is the group's zero point, so the
 * dense part is exactly 0 there and Ŵ = S (+ A·B). */
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
    /* Sparse outliers (SpQR, Dettmers et al. 2023; SqueezeLLM dense-and-sparse,
     * Kim et al. 2023): CSR over rows; all NULL and nnz 0 when there are none.
     * Columns are original column indices, increasing within a row. Values
     * are f16 bits (compiler/dequant.h qc_f32_to_f16, round to nearest even):
     * the weight being quantized at that position (RTN: the original weight;
     * GPTQ: the weight after the compensation of earlier columns, which is
     * what GPTQ then represents exactly). */
    int64_t nnz;
    int32_t *row_ptr; /* rows + 1: row r's entries are [row_ptr[r], row_ptr[r+1]) */
    int32_t *col;     /* nnz */
    uint16_t *val;    /* nnz, f16 bits */
    /* Low-rank correction (EoRA, Liu et al. 2024; LoRC, Yao et al. 2023):
     * Ŵ += A·B, A rows × rank, B rank × cols (original column order), row-major
     * f16 bits; rank 0 and NULL when absent. */
    int rank;
    uint16_t *lr_a;
    uint16_t *lr_b;
    /* Non-NULL when every array above lives in one read-only file mapping
     * (compiler/spill.h) of map_len bytes: the state is then immutable, and
     * qc_quant_state_free unmaps it instead of freeing the arrays. */
    void *map;
    size_t map_len;
} qc_quant_state;

/* Allocates an empty state for a rows × cols weight in fmt (g_idx set to
 * c / group_size). Returns NULL with err on bad format or allocation. */
qc_quant_state *qc_quant_state_new(const qc_quant_format *fmt, int64_t rows, int64_t cols,
                                   qc_err *err);
void qc_quant_state_free(qc_quant_state *q);
/* For a state in a file mapping (q->map): drops its pages from this
 * process's resident memory (they are read back from the file when next
 * touched). A reader that streams over many states calls it after each, so
 * its resident memory stays at one state. No-op for a heap state. */
void qc_quant_state_release(const qc_quant_state *q);

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

/* A quantization grid GPTQ rounds onto instead of a group-wise integer
 * format: e.g. a ggml block type (compiler/ggml_quant.h), whose blocks of
 * `group` columns have parameters only that type can express. GPTQ calls
 * fit for row r's group g (columns g·group ...; x the group's current,
 * error-compensated weights, d their importance diag H, n of them) before
 * rounding any of its columns, then round for each weight: the value of the
 * nearest grid point (the grid keeps the codes). Without act-order groups
 * are fitted when GPTQ reaches their first column; with act-order (or
 * static_groups) all are fitted up front on the original weights, so a
 * group stays a contiguous block of columns either way. */
typedef struct qc_gptq_grid {
    int64_t group;
    void (*fit)(void *ud, int64_t r, int64_t g, const float *x, const float *d, int64_t n);
    float (*round)(void *ud, int64_t r, int64_t c, float x);
    void *ud;
} qc_gptq_grid;

/* qc_quant_gptq onto a grid for a rows × cols weight (no outliers). deq
 * (may be NULL) gets the values round returned. */
int qc_quant_gptq_grid(const float *w, double *H, const qc_gptq_opts *opts,
                       const qc_gptq_grid *grid, int64_t rows, int64_t cols, float *deq,
                       qc_err *err);

/* Makes the entries where mask (rows × cols, nonzero = outlier) is set the
 * sparse outliers of q, replacing earlier ones, with values f16(w) (w rows ×
 * cols, the weight about to be quantized). Call before qc_quant_rtn or
 * qc_quant_gptq: both leave these entries out of the dense quantization
 * (code = zero point, not counted when fitting group scales; GPTQ spreads
 * only their f16 rounding error) and keep them in q. An all-zero mask
 * removes the outliers. Returns 0, or -1 with err (value beyond f16 range,
 * more than INT32_MAX outliers, allocation). */
int qc_quant_set_outliers(qc_quant_state *q, const uint8_t *mask, const float *w, qc_err *err);

/* Sets q's low-rank factors from f32 A (rows × rank) and B (rank × cols),
 * rounded to f16 (rank 0 removes them). Returns 0, or -1 with err (rank out
 * of 0..min(rows, cols), non-finite value or one beyond f16 range). */
int qc_quant_set_lowrank(qc_quant_state *q, int rank, const float *A, const float *B, qc_err *err);

/* Adds A·B of q's low-rank factors to w (rows × cols); nothing without them.
 * Works on fixed-size tiles on the stack, so it cannot fail. */
void qc_quant_add_lowrank(const qc_quant_state *q, float *w);

/* Dequantizes q into w (rows × cols): dense codes + outliers + A·B. */
void qc_quant_dequantize(const qc_quant_state *q, float *w);

/* Storage cost in bits of q: codes + f16 scales + zeros (bits each, when
 * asymmetric) + g_idx (32 bits per column when act-order reorders groups)
 * + outliers (16-bit value + 32-bit column each, 32 bits per row_ptr entry:
 * rows + 1) + low-rank factors (16 bits per entry of A and B). */
double qc_quant_storage_bits(const qc_quant_state *q);

/* [H⁻¹]_jj of a Hessian (n × n, f64, read-only) after GPTQ's preparation:
 * dead inputs (H_jj = 0) get H_jj = 1, then damp · mean(diag) is added to
 * the diagonal (raised tenfold up to 1 when H is singular, as GPTQ does; the
 * damp used goes to *damp_used when non-NULL). The OBS saliency of weight
 * w_ij is w_ij² / [H⁻¹]_jj (Hassibi & Stork 1993; SpQR eq. 3). Returns 0, or
 * -1 with err (non-finite or negative diagonal, not positive definite). */
int qc_quant_hinv_diag(const double *H, int64_t n, double damp, double *out, double *damp_used,
                       qc_err *err);

#endif
