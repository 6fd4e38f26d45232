/* Group-wise integer quantization, RTN and GPTQ (see quant.h).
 *
 * Conventions (maxq = 2^bits − 1):
 *  - Symmetric (GPTQ's): scale = 2·a / maxq with a = clip·max|w|, zero fixed at
 *    2^(bits−1). Codes 0..maxq stand for −2^(bits−1)·s … (2^(bits−1) − 1)·s, so
 *    the largest positive weight may round down by at most s/2.
 *  - Asymmetric: the range [lo, hi] always contains 0 (lo = clip·min(0, min w),
 *    hi = clip·max(0, max w)), scale = (hi − lo) / maxq, zero = round(−lo /
 *    scale) (round half up), which then lies in [0, maxq] and w = 0 is exact.
 *  - A group of zeros gets the range [−1, 1] (symmetric: a = 1) so scales stay
 *    positive; its codes still dequantize to exactly 0.
 *  - Scales are rounded to f16 when fitted, so the 16-bit scales counted by
 *    qc_quant_storage_bits reproduce exactly the weights GPTQ compensated for.
 *  - Codes: code = floor(clamp(w / s + zero, 0, maxq) + 1/2) in f32
 *    (qc_quant_code). */
#include "quant.h"

#include "dequant.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int maxq_of(int bits) {
    return (1 << bits) - 1;
}

int qc_quant_format_check(const qc_quant_format *fmt, int64_t cols, qc_err *err) {
    if (!fmt) return qc_err_set(err, "quantization format missing");
    if (fmt->bits < 2 || fmt->bits > 8)
        return qc_err_set(err, "quantization: bits %d out of range 2..8", fmt->bits);
    if (fmt->group_size < 0)
        return qc_err_set(err, "quantization: group size %d is negative (0 = per-channel)",
                          fmt->group_size);
    if (cols <= 0 || cols > INT32_MAX)
        return qc_err_set(err, "quantization: %lld input columns out of range 1..%d",
                          (long long)cols, INT32_MAX);
    return 0;
}

static int64_t n_groups_of(const qc_quant_format *fmt, int64_t cols) {
    return fmt->group_size == 0 ? 1 : (cols + fmt->group_size - 1) / fmt->group_size;
}

/* g_idx[c] = c / group_size (0 for per-channel): the grouping without act-order. */
static void trivial_g_idx(const qc_quant_format *fmt, int64_t cols, int32_t *g_idx) {
    for (int64_t c = 0; c < cols; c++)
        g_idx[c] = fmt->group_size ? (int32_t)(c / fmt->group_size) : 0;
}

qc_quant_state *qc_quant_state_new(const qc_quant_format *fmt, int64_t rows, int64_t cols,
                                   qc_err *err) {
    if (qc_quant_format_check(fmt, cols, err)) return NULL;
    if (rows <= 0) {
        qc_err_set(err, "quantization: %lld output rows (must be positive)", (long long)rows);
        return NULL;
    }
    int64_t ng = n_groups_of(fmt, cols);
    size_t n_codes, n_scales;
    if (qc_mul_size((size_t)rows, (size_t)cols, &n_codes) ||
        qc_mul_size((size_t)rows, (size_t)ng, &n_scales) || n_scales > SIZE_MAX / sizeof(float)) {
        qc_err_set(err, "quantization: %lld x %lld weight too large", (long long)rows,
                   (long long)cols);
        return NULL;
    }
    qc_quant_state *q = qc_calloc(1, sizeof *q, err);
    if (!q) return NULL;
    q->fmt = *fmt;
    q->rows = rows;
    q->cols = cols;
    q->n_groups = ng;
    q->codes = qc_malloc(n_codes, err);
    q->scales = q->codes ? qc_malloc(n_scales * sizeof(float), err) : NULL;
    q->zeros = q->scales ? qc_malloc(n_scales * sizeof(float), err) : NULL;
    q->g_idx = q->zeros ? qc_malloc((size_t)cols * sizeof(int32_t), err) : NULL;
    if (!q->g_idx) {
        qc_quant_state_free(q);
        return NULL;
    }
    trivial_g_idx(fmt, cols, q->g_idx);
    return q;
}

void qc_quant_state_free(qc_quant_state *q) {
    if (!q) return;
    if (q->map) {
        munmap(q->map, q->map_len);
        free(q);
        return;
    }
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    free(q->g_idx);
    free(q->perm);
    free(q->row_ptr);
    free(q->col);
    free(q->val);
    free(q->lr_a);
    free(q->lr_b);
    free(q);
}

void qc_quant_state_release(const qc_quant_state *q) {
    if (q && q->map) madvise(q->map, q->map_len, MADV_DONTNEED);
}

/* ---- sparse outliers and low-rank factors ---- */

static void clear_outliers(qc_quant_state *q) {
    free(q->row_ptr);
    free(q->col);
    free(q->val);
    q->row_ptr = q->col = NULL;
    q->val = NULL;
    q->nnz = 0;
}

/* f16 bits of v, or -1 when v is not finite or rounds past f16's largest
 * finite value (65504). */
static int32_t to_f16(float v) {
    uint16_t h = qc_f32_to_f16(v);
    return (h & 0x7c00) == 0x7c00 ? -1 : (int32_t)h;
}

int qc_quant_set_outliers(qc_quant_state *q, const uint8_t *mask, const float *w, qc_err *err) {
    int64_t rows = q->rows, cols = q->cols, nnz = 0;
    clear_outliers(q);
    for (int64_t i = 0; i < rows * cols; i++)
        nnz += mask[i] != 0;
    if (nnz == 0) return 0;
    if (nnz > INT32_MAX)
        return qc_err_set(err, "%lld outliers: more than the %d a CSR with int32 indices holds",
                          (long long)nnz, INT32_MAX);
    q->row_ptr = qc_malloc((size_t)(rows + 1) * sizeof(int32_t), err);
    q->col = q->row_ptr ? qc_malloc((size_t)nnz * sizeof(int32_t), err) : NULL;
    q->val = q->col ? qc_malloc((size_t)nnz * sizeof(uint16_t), err) : NULL;
    if (!q->val) {
        clear_outliers(q);
        return -1;
    }
    int64_t k = 0;
    q->row_ptr[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            if (!mask[r * cols + c]) continue;
            int32_t h = to_f16(w[r * cols + c]);
            if (h < 0) {
                clear_outliers(q);
                return qc_err_set(err, "outlier at row %lld, column %lld: %g is not an f16 value",
                                  (long long)r, (long long)c, (double)w[r * cols + c]);
            }
            q->col[k] = (int32_t)c;
            q->val[k++] = (uint16_t)h;
        }
        q->row_ptr[r + 1] = (int32_t)k;
    }
    q->nnz = nnz;
    return 0;
}

/* Index into q->col/val of outlier (r, c); -1 when (r, c) is none. */
static int64_t outlier_index(const qc_quant_state *q, int64_t r, int64_t c) {
    if (!q->nnz) return -1;
    int64_t lo = q->row_ptr[r], hi = q->row_ptr[r + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (q->col[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < q->row_ptr[r + 1] && q->col[lo] == c ? lo : -1;
}

/* Marks row r's outlier columns in m (cols bytes). */
static void outlier_row_mask(const qc_quant_state *q, int64_t r, uint8_t *m) {
    memset(m, 0, (size_t)q->cols);
    for (int64_t k = q->nnz ? q->row_ptr[r] : 0; k < (q->nnz ? q->row_ptr[r + 1] : 0); k++)
        m[q->col[k]] = 1;
}

int qc_quant_set_lowrank(qc_quant_state *q, int rank, const float *A, const float *B, qc_err *err) {
    int64_t rows = q->rows, cols = q->cols;
    if (rank < 0 || rank > rows || rank > cols)
        return qc_err_set(err, "low-rank rank %d out of range 0..%lld for a %lld x %lld weight",
                          rank, (long long)(rows < cols ? rows : cols), (long long)rows,
                          (long long)cols);
    uint16_t *a = NULL, *b = NULL;
    if (rank > 0) {
        a = qc_malloc((size_t)(rows * rank) * sizeof *a, err);
        b = a ? qc_malloc((size_t)(rank * cols) * sizeof *b, err) : NULL;
        if (!b) {
            free(a);
            return -1;
        }
        for (int64_t i = 0; i < rows * rank + rank * cols; i++) {
            int in_a = i < rows * rank;
            float v = in_a ? A[i] : B[i - rows * rank];
            int32_t h = to_f16(v);
            if (h < 0) {
                free(a);
                free(b);
                return qc_err_set(err, "low-rank factor %s[%lld]: %g is not an f16 value",
                                  in_a ? "A" : "B", (long long)(in_a ? i : i - rows * rank),
                                  (double)v);
            }
            if (in_a)
                a[i] = (uint16_t)h;
            else
                b[i - rows * rank] = (uint16_t)h;
        }
    }
    free(q->lr_a);
    free(q->lr_b);
    q->lr_a = a;
    q->lr_b = b;
    q->rank = rank;
    return 0;
}

/* w += A·B in tiles of LR_TILE rows × LR_TILE columns × LR_TILE ranks,
 * converted from f16 on the stack and multiplied by one SGEMM each. */
enum { LR_TILE = 64 };
void qc_quant_add_lowrank(const qc_quant_state *q, float *w) {
    float a[LR_TILE * LR_TILE], b[LR_TILE * LR_TILE];
    int64_t rows = q->rows, cols = q->cols, rank = q->rank;
    if (rank <= 0 || !q->lr_a || !q->lr_b) return;
    for (int64_t r0 = 0; r0 < rows; r0 += LR_TILE) {
        int64_t nr = rows - r0 < LR_TILE ? rows - r0 : LR_TILE;
        for (int64_t k0 = 0; k0 < rank; k0 += LR_TILE) {
            int64_t nk = rank - k0 < LR_TILE ? rank - k0 : LR_TILE;
            for (int64_t i = 0; i < nr; i++)
                for (int64_t k = 0; k < nk; k++)
                    a[i * nk + k] = qc_f16_to_f32(q->lr_a[(r0 + i) * rank + k0 + k]);
            for (int64_t c0 = 0; c0 < cols; c0 += LR_TILE) {
                int64_t nc = cols - c0 < LR_TILE ? cols - c0 : LR_TILE;
                for (int64_t k = 0; k < nk; k++)
                    for (int64_t j = 0; j < nc; j++)
                        b[k * nc + j] = qc_f16_to_f32(q->lr_b[(k0 + k) * cols + c0 + j]);
                qcrt_sgemm(CblasNoTrans, CblasNoTrans, (int)nr, (int)nc, (int)nk, 1.0f, a, (int)nk,
                           b, (int)nc, 1.0f, w + r0 * cols + c0, (int)cols);
            }
        }
    }
}

/* Scales are stored as f16: keep the nearest f16 value, inside f16's
 * positive finite range. */
static float round_scale(float s) {
    float h = qc_f16_to_f32(qc_f32_to_f16(s));
    if (!(h > 0)) h = 0x1p-24f; /* smallest positive f16 */
    if (h > 65504.0f) h = 65504.0f;
    return h;
}

/* scale and zero for the range [lo, hi] shrunk by ratio (lo ≤ 0 ≤ hi). */
static void range_params(const qc_quant_format *fmt, float lo, float hi, float ratio, float *scale,
                         float *zero) {
    float mq = (float)maxq_of(fmt->bits);
    if (fmt->symmetric) {
        float a = fmaxf(-lo, hi) * ratio;
        if (a == 0) a = 1;
        *scale = round_scale(2 * a / mq);
        *zero = (float)(1 << (fmt->bits - 1));
        return;
    }
    float l = lo * ratio, h = hi * ratio;
    if (l == 0 && h == 0) l = -1, h = 1;
    float s = round_scale((h - l) / mq);
    float z = floorf(-l / s + 0.5f);
    *scale = s;
    *zero = z < 0 ? 0 : (z > mq ? mq : z);
}

/* Σ d_j (w_j − ŵ_j)² (d = NULL: unweighted). */
static double group_error(int bits, const float *w, const float *d, int64_t n, float scale,
                          float zero) {
    double acc = 0;
    for (int64_t j = 0; j < n; j++) {
        double e = (double)w[j] -
                   (double)qc_quant_value(qc_quant_code(w[j], scale, zero, bits), scale, zero);
        acc += (d ? (double)d[j] : 1.0) * e * e;
    }
    return acc;
}

void qc_quant_fit_group(const qc_quant_format *fmt, const qc_clip_search *clip, const float *w,
                        const float *d, int64_t n, float *scale, float *zero) {
    float lo = 0, hi = 0;
    for (int64_t j = 0; j < n; j++) {
        lo = fminf(lo, w[j]);
        hi = fmaxf(hi, w[j]);
    }
    int steps = clip && clip->enabled && clip->steps > 1 ? clip->steps : 1;
    range_params(fmt, lo, hi, 1.0f, scale, zero);
    if (steps == 1) return;
    double best = group_error(fmt->bits, w, d, n, *scale, *zero);
    /* ratio_k = 1 − (1 − min_ratio)·k / (steps − 1), k = 1 … steps − 1; the
     * first minimum wins ties. */
    float span = 1.0f - clip->min_ratio;
    for (int k = 1; k < steps; k++) {
        float ratio = 1.0f - span * (float)k / (float)(steps - 1), s, z;
        range_params(fmt, lo, hi, ratio, &s, &z);
        double e = group_error(fmt->bits, w, d, n, s, z);
        if (e < best) {
            best = e;
            *scale = s;
            *zero = z;
        }
    }
}

/* Copies the n entries of a group not marked in om (and their weights d,
 * when non-NULL) to wg/dg; returns how many. */
static int64_t gather_group(const float *w, const float *d, const uint8_t *om, int64_t n, float *wg,
                            float *dg) {
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        if (om[j]) continue;
        wg[m] = w[j];
        if (d) dg[m] = d[j];
        m++;
    }
    return m;
}

static int check_weight(const float *w, int64_t rows, int64_t cols, qc_err *err) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(w[r * cols + c]))
                return qc_err_set(err,
                                  "weight has a non-finite value (%g) at row %lld, column %lld",
                                  (double)w[r * cols + c], (long long)r, (long long)c);
    return 0;
}

static int check_state(const qc_quant_state *q, qc_err *err) {
    if (!q || !q->codes || !q->scales || !q->zeros || !q->g_idx)
        return qc_err_set(err, "quantization state not allocated");
    if (qc_quant_format_check(&q->fmt, q->cols, err)) return -1;
    if (q->n_groups != n_groups_of(&q->fmt, q->cols))
        return qc_err_set(err, "quantization state: %lld groups, format needs %lld",
                          (long long)q->n_groups, (long long)n_groups_of(&q->fmt, q->cols));
    return 0;
}

int qc_quant_rtn(const float *w, const double *diag, const qc_clip_search *clip, qc_quant_state *q,
                 float *deq, qc_err *err) {
    if (check_state(q, err) || check_weight(w, q->rows, q->cols, err)) return -1;
    int64_t rows = q->rows, cols = q->cols, ng = q->n_groups;
    int64_t gs = q->fmt.group_size ? q->fmt.group_size : cols;
    float *d = NULL;
    if (diag) {
        d = qc_malloc((size_t)cols * sizeof(float), err);
        if (!d) return -1;
        for (int64_t c = 0; c < cols; c++) {
            if (!isfinite(diag[c]) || diag[c] < 0) {
                free(d);
                return qc_err_set(err,
                                  "Hessian diagonal at column %lld is %g (must be finite, >= 0)",
                                  (long long)c, diag[c]);
            }
            d[c] = (float)diag[c];
        }
    }
    /* Outliers: a row mask, and the group's other weights gathered for the fit. */
    uint8_t *om = NULL;
    float *wg = NULL, *dg = NULL;
    if (q->nnz) {
        om = qc_malloc((size_t)cols, err);
        wg = om ? qc_malloc((size_t)gs * sizeof(float), err) : NULL;
        dg = wg ? qc_malloc((size_t)gs * sizeof(float), err) : NULL;
        if (!dg) {
            free(d), free(om), free(wg);
            return -1;
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        if (om) outlier_row_mask(q, r, om);
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * gs, n = cols - c0 < gs ? cols - c0 : gs;
            const float *wr = w + r * cols + c0;
            float s, z;
            if (om) {
                int64_t m = gather_group(wr, d ? d + c0 : NULL, om + c0, n, wg, dg);
                qc_quant_fit_group(&q->fmt, clip, wg, d ? dg : NULL, m, &s, &z);
            } else {
                qc_quant_fit_group(&q->fmt, clip, wr, d ? d + c0 : NULL, n, &s, &z);
            }
            q->scales[r * ng + g] = s;
            q->zeros[r * ng + g] = z;
            for (int64_t j = 0; j < n; j++) {
                int out = om && om[c0 + j];
                uint8_t code = out ? (uint8_t)z : qc_quant_code(wr[j], s, z, q->fmt.bits);
                q->codes[r * cols + c0 + j] = code;
                if (deq) deq[r * cols + c0 + j] = qc_quant_value(code, s, z);
            }
        }
        if (deq && om)
            for (int64_t k = q->row_ptr[r]; k < q->row_ptr[r + 1]; k++)
                deq[r * cols + q->col[k]] += qc_f16_to_f32(q->val[k]);
    }
    free(d), free(om), free(wg), free(dg);
    trivial_g_idx(&q->fmt, cols, q->g_idx);
    free(q->perm);
    q->perm = NULL;
    return 0;
}

void qc_quant_dequantize(const qc_quant_state *q, float *w) {
    for (int64_t r = 0; r < q->rows; r++)
        for (int64_t c = 0; c < q->cols; c++) {
            int64_t g = r * q->n_groups + q->g_idx[c];
            w[r * q->cols + c] =
                qc_quant_value(q->codes[r * q->cols + c], q->scales[g], q->zeros[g]);
        }
    for (int64_t r = 0; r < q->rows && q->nnz; r++)
        for (int64_t k = q->row_ptr[r]; k < q->row_ptr[r + 1]; k++)
            w[r * q->cols + q->col[k]] += qc_f16_to_f32(q->val[k]);
    qc_quant_add_lowrank(q, w);
}

double qc_quant_storage_bits(const qc_quant_state *q) {
    double cells = (double)q->rows * (double)q->cols,
           groups = (double)q->rows * (double)q->n_groups;
    double bits = cells * q->fmt.bits + groups * 16;
    if (!q->fmt.symmetric) bits += groups * q->fmt.bits;
    /* g_idx is needed only when act-order left groups out of column order. */
    int reordered = 0;
    if (q->perm && q->fmt.group_size)
        for (int64_t c = 0; c < q->cols && !reordered; c++)
            reordered = q->g_idx[c] != (int32_t)(c / q->fmt.group_size);
    if (reordered) bits += 32.0 * (double)q->cols;
    if (q->nnz) bits += (16.0 + 32.0) * (double)q->nnz + 32.0 * (double)(q->rows + 1);
    bits += 16.0 * (double)q->rank * (double)(q->rows + q->cols);
    return bits;
}

/* ---- GPTQ ---- */

typedef struct gptq_work {
    int64_t rows, n;
    double *Wt;   /* n × rows: the weight transposed, columns in GPTQ order */
    double *Err;  /* block × rows: scaled errors (w − q) / U_pp of the block */
    double *cur;  /* group × rows: current values of a group's columns */
    float *wg;    /* group: one row's group values */
    float *dg;    /* group: their clip-search weights */
    double *diag; /* n: diag H after the dead-column fix, original order */
    int32_t *perm;
    uint8_t *dead; /* n: H_jj was 0 (original order) */
    uint8_t *om;   /* rows × n, original order: sparse outlier (NULL without outliers) */
    double damp_used;
    int retries;
} gptq_work;

static void gptq_work_free(gptq_work *k) {
    free(k->Wt);
    free(k->Err);
    free(k->cur);
    free(k->wg);
    free(k->dg);
    free(k->diag);
    free(k->perm);
    free(k->dead);
    free(k->om);
}

/* Orders columns by decreasing diag, ties by increasing column (stable). */
static int cmp_diag_desc(const void *a, const void *b, void *key) {
    const double *d = key;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (d[i] != d[j]) return d[i] > d[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* Reverses the n² entries of H in place: H ← J H J, J the exchange matrix. */
static void reverse_square(double *H, int64_t n) {
    for (int64_t i = 0, j = n * n - 1; i < j; i++, j--) {
        double t = H[i];
        H[i] = H[j], H[j] = t;
    }
}

/* The upper Cholesky factor U of (H + damp·mean·I)⁻¹ = UᵀU, left in H's upper
 * triangle, with the dampening retries of damped_inverse. Through the
 * exchange matrix J: with J H J = L Lᵀ (lower L), H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)
 * and J L⁻¹ J is upper, so U costs a Cholesky and a triangular inverse
 * (2n³/3 flops) instead of a Cholesky, an inverse and a second Cholesky
 * (4n³/3): the larger part of GPTQ's time on a 14336-wide down_proj. The
 * strict lower triangle of H (J H J's strict upper, which LAPACK leaves
 * alone) keeps H for a retry, and holds H's strict lower part on return. */
static lapack_int inverse_factor(double *H, int64_t n, const double *d0, double mean,
                                 double *damp, int *retries) {
    reverse_square(H, n);
    lapack_int info = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            for (int64_t a = 0; a < n; a++)
                for (int64_t b = a + 1; b < n; b++)
                    H[b * n + a] = H[a * n + b];
        for (int64_t j = 0; j < n; j++)
            H[j * n + j] = d0[n - 1 - j] + *damp * mean;
        /* Row-major lower is column-major upper: no transposed copy. */
        info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)n, H, (lapack_int)n);
        if (info == 0)
            info = LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'U', 'N', (lapack_int)n, H, (lapack_int)n);
        if (info == 0 || *damp >= 1) break;
        *damp = *damp > 0 ? *damp * 10 : 1e-4;
        if (*damp > 1) *damp = 1;
        (*retries)++;
    }
    reverse_square(H, n);
    return info;
}

/* Inverts H + damp·mean·I (n × n, symmetric, its strict lower triangle the
 * original's; d0 the original diagonal) into its upper triangle, or with
 * refactor puts the inverse's upper Cholesky factor there (inverse_factor,
 * which does not form the inverse). The LAPACK
 * routines write only the upper triangle, so a failed attempt restarts from
 * the lower one with ten times the dampening, up to damp = 1, where H +
 * mean·I is positive definite for any positive semi-definite H. Returns the
 * LAPACK info (0 = success); *damp is the dampening used. */
static lapack_int damped_inverse(double *H, int64_t n, const double *d0, double mean, int refactor,
                                 double *damp, int *retries) {
    if (refactor) return inverse_factor(H, n, d0, mean, damp, retries);
    lapack_int info = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            for (int64_t a = 0; a < n; a++)
                for (int64_t b = a + 1; b < n; b++)
                    H[a * n + b] = H[b * n + a];
        for (int64_t j = 0; j < n; j++)
            H[j * n + j] = d0[j] + *damp * mean;
        /* Row-major upper is column-major lower: LAPACKE's row-major
         * wrappers would work on a transposed copy (n² doubles more). */
        info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)n, H, (lapack_int)n);
        if (info == 0)
            info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', (lapack_int)n, H, (lapack_int)n);
        if (info == 0 || *damp >= 1) return info;
        *damp = *damp > 0 ? *damp * 10 : 1e-4;
        if (*damp > 1) *damp = 1;
        (*retries)++;
    }
}

int qc_quant_hinv_diag(const double *H, int64_t n, double damp, double *out, double *damp_used,
                       qc_err *err) {
    if (!isfinite(damp) || damp < 0)
        return qc_err_set(err, "damp %g must be finite and >= 0", damp);
    size_t nn;
    if (n <= 0 || n > INT32_MAX || qc_mul_size((size_t)n, (size_t)n, &nn) ||
        nn > SIZE_MAX / sizeof(double))
        return qc_err_set(err, "Hessian of %lld columns: bad size", (long long)n);
    double *h = qc_malloc(nn * sizeof *h, err), mean = 0;
    if (!h) return -1;
    for (size_t i = 0; i < nn; i++) {
        if (!isfinite(H[i])) {
            free(h);
            return qc_err_set(err, "Hessian has a non-finite value (%g) at row %lld, column %lld",
                              H[i], (long long)(i / (size_t)n), (long long)(i % (size_t)n));
        }
        h[i] = H[i];
    }
    for (int64_t j = 0; j < n; j++) {
        double d = h[j * n + j];
        if (d < 0) {
            free(h);
            return qc_err_set(err, "Hessian diagonal at column %lld is negative (%g): not XᵀX",
                              (long long)j, d);
        }
        out[j] = d == 0 ? 1 : d; /* as GPTQ: a dead input gets H_jj = 1 */
        mean += out[j];
    }
    mean /= (double)n;
    int retries = 0;
    lapack_int info = damped_inverse(h, n, out, mean, 0, &damp, &retries);
    if (info == 0)
        for (int64_t j = 0; j < n; j++)
            out[j] = h[j * n + j];
    free(h);
    if (info != 0)
        return qc_err_set(err,
                          "Hessian (%lld x %lld) is not positive definite even with damp %g "
                          "(LAPACK info %d)",
                          (long long)n, (long long)n, damp, (int)info);
    if (damp_used) *damp_used = damp;
    return 0;
}

/* H ← P H Pᵀ in place, H[a][b] = H_old[perm[a]][perm[b]], with one row of
 * scratch instead of a second n × n matrix (1.6 GB for a 14336-wide
 * down_proj): columns within each row first, then whole rows along the
 * permutation's cycles. Returns -1 when the scratch cannot be allocated. */
static int permute_sym(double *H, int64_t n, const int32_t *perm) {
    double *row = malloc((size_t)n * sizeof *row);
    uint8_t *done = calloc((size_t)n, 1);
    if (!row || !done) {
        free(row);
        free(done);
        return -1;
    }
    for (int64_t a = 0; a < n; a++) {
        double *h = H + a * n;
        for (int64_t b = 0; b < n; b++)
            row[b] = h[perm[b]];
        memcpy(h, row, (size_t)n * sizeof *row);
    }
    for (int64_t a = 0; a < n; a++) {
        if (done[a]) continue;
        memcpy(row, H + a * n, (size_t)n * sizeof *row);
        int64_t j = a;
        for (; perm[j] != a; j = perm[j]) {
            memcpy(H + j * n, H + (int64_t)perm[j] * n, (size_t)n * sizeof *row);
            done[j] = 1;
        }
        memcpy(H + j * n, row, (size_t)n * sizeof *row);
        done[j] = 1;
    }
    free(row);
    free(done);
    return 0;
}

/* Dead columns, permutation, dampening, and the upper Cholesky factor U of
 * H⁻¹ (H⁻¹ = UᵀU) left in H's upper triangle, rows and columns in GPTQ order. */
static int gptq_prepare_h(double *H, const qc_gptq_opts *o, gptq_work *k, qc_err *err) {
    int64_t n = k->n;
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(H[i]))
            return qc_err_set(err, "Hessian has a non-finite value (%g) at row %lld, column %lld",
                              H[i], (long long)(i / n), (long long)(i % n));
    for (int64_t j = 0; j < n; j++) {
        double d = H[j * n + j];
        if (d < 0)
            return qc_err_set(err, "Hessian diagonal at column %lld is negative (%g): not XᵀX",
                              (long long)j, d);
        /* GPTQ: a dead input (H_jj = 0) gets H_jj = 1; its weights are zeroed. */
        k->dead[j] = d == 0;
        if (d == 0) H[j * n + j] = 1;
        k->diag[j] = H[j * n + j];
    }
    for (int64_t j = 0; j < n; j++)
        k->perm[j] = (int32_t)j;
    if (o->act_order) {
        qsort_r(k->perm, (size_t)n, sizeof *k->perm, cmp_diag_desc, k->diag);
        if (permute_sym(H, n, k->perm))
            return qc_err_set(err, "out of memory permuting a %lld x %lld Hessian", (long long)n,
                              (long long)n);
    }
    double mean = 0;
    for (int64_t j = 0; j < n; j++)
        mean += H[j * n + j];
    mean /= (double)n;
    /* The factorizations below write only the upper triangle; the strict
     * lower one and this copy of the diagonal let a failed attempt restart
     * with ten times the dampening (up to damp = 1, where H + mean·I is
     * positive definite for any positive semi-definite H). */
    double *d0 = calloc((size_t)n, sizeof *d0);
    if (!d0) return qc_err_set(err, "out of memory for a %lld-column Hessian", (long long)n);
    for (int64_t j = 0; j < n; j++)
        d0[j] = H[j * n + j];
    double damp = o->damp;
    /* H⁻¹ = U'ᵀU' (GPTQ's "Cholesky reformulation": row p of U' holds the
     * update coefficients of column p). */
    lapack_int info = damped_inverse(H, n, d0, mean, 1, &damp, &k->retries);
    free(d0);
    if (info != 0)
        return qc_err_set(err,
                          "Hessian (%lld x %lld) is not positive definite even with damp %g of "
                          "its mean diagonal %g (LAPACK info %d)",
                          (long long)n, (long long)n, damp, mean, (int)info);
    k->damp_used = damp;
    for (int64_t a = 1; a < n; a++)
        memset(H + a * n, 0, (size_t)a * sizeof *H);
    return 0;
}

/* Fits the scales of group g on the current weights of GPTQ positions
 * [p, e): positions before the block end i2 are current in Wt; later ones
 * still miss the block's first `done` errors, added here: cur = Wt −
 * U[i1:i1+done, i2:e]ᵀ · Err[0:done]. With a grid, the grid fits each row's
 * group (in original column order: with act-order a grid fits up front). */
static void gptq_fit_current(const qc_gptq_opts *o, qc_quant_state *q, const qc_gptq_grid *grid,
                             gptq_work *k, const double *U, int64_t p, int64_t e, int64_t i1,
                             int64_t i2, int64_t done, int64_t g) {
    int64_t rows = k->rows, n = k->n, m = e - p;
    memcpy(k->cur, k->Wt + p * rows, (size_t)(m * rows) * sizeof(double));
    if (e > i2 && done > 0)
        qcrt_dgemm(CblasTrans, CblasNoTrans, (int)(e - i2), (int)rows, (int)done, -1.0,
                   U + i1 * n + i2, (int)n, k->Err, (int)rows, 1.0, k->cur + (i2 - p) * rows,
                   (int)rows);
    for (int64_t r = 0; r < rows; r++) {
        int64_t kept = 0; /* outliers stay out of the fit */
        for (int64_t j = 0; j < m; j++) {
            int64_t c = k->perm[p + j];
            if (k->om && k->om[r * n + c]) continue;
            k->wg[kept] = (float)k->cur[j * rows + r];
            k->dg[kept++] = (float)k->diag[c];
        }
        if (grid)
            grid->fit(grid->ud, r, g, k->wg, k->dg, kept);
        else
            qc_quant_fit_group(&q->fmt, &o->clip, k->wg, k->dg, kept,
                               &q->scales[r * q->n_groups + g], &q->zeros[r * q->n_groups + g]);
    }
}

/* Static groups and per-channel scales: fitted before GPTQ on the (dead
 * columns zeroed) original weights, in the original column grouping. */
static void gptq_fit_upfront(const float *w, const qc_gptq_opts *o, qc_quant_state *q,
                             const qc_gptq_grid *grid, gptq_work *k) {
    int64_t rows = k->rows, n = k->n;
    int64_t gs = grid ? grid->group : q->fmt.group_size ? q->fmt.group_size : n;
    int64_t ng = (n + gs - 1) / gs;
    for (int64_t g = 0; g < ng; g++) {
        int64_t c0 = g * gs, m = n - c0 < gs ? n - c0 : gs;
        for (int64_t r = 0; r < rows; r++) {
            int64_t kept = 0; /* outliers stay out of the fit */
            for (int64_t c = c0; c < c0 + m; c++) {
                if (k->om && k->om[r * n + c]) continue;
                k->wg[kept] = k->dead[c] ? 0.0f : w[r * n + c];
                k->dg[kept++] = (float)k->diag[c];
            }
            if (grid)
                grid->fit(grid->ud, r, g, k->wg, k->dg, kept);
            else
                qc_quant_fit_group(&q->fmt, &o->clip, k->wg, k->dg, kept,
                                   &q->scales[r * q->n_groups + g], &q->zeros[r * q->n_groups + g]);
        }
    }
}

/* Stores GPTQ's current value x of outlier (r, c) as its f16 value; v gets
 * the value represented. */
static int gptq_keep_outlier(qc_quant_state *q, int64_t r, int64_t c, double x, float *v,
                             qc_err *err) {
    int32_t h = to_f16((float)x);
    if (h < 0)
        return qc_err_set(err,
                          "outlier at row %lld, column %lld: its GPTQ-compensated value %g is not "
                          "an f16 value",
                          (long long)r, (long long)c, x);
    q->val[outlier_index(q, r, c)] = (uint16_t)h;
    *v = qc_f16_to_f32((uint16_t)h);
    return 0;
}

/* Rounds GPTQ position p (original column c, group g) of every row of the
 * current weights wp into q's codes (or the grid) and deq; ep gets the
 * scaled errors (w − ŵ) / d. */
static int gptq_round_column(qc_quant_state *q, const qc_gptq_grid *grid, gptq_work *k, int64_t c,
                             int64_t g, double d, const double *wp, double *ep, float *deq,
                             qc_err *err) {
    int64_t n = k->n;
    for (int64_t r = 0; r < k->rows; r++) {
        float v = 0;
        if (grid) {
            v = grid->round(grid->ud, r, c, (float)wp[r]);
        } else {
            float s = q->scales[r * q->n_groups + g], z = q->zeros[r * q->n_groups + g];
            if (k->om && k->om[r * n + c]) {
                if (gptq_keep_outlier(q, r, c, wp[r], &v, err)) return -1;
                q->codes[r * n + c] = (uint8_t)z; /* the dense part is 0 here */
            } else {
                uint8_t code = qc_quant_code((float)wp[r], s, z, q->fmt.bits);
                v = qc_quant_value(code, s, z);
                q->codes[r * n + c] = code;
            }
        }
        if (deq) deq[r * n + c] = v;
        ep[r] = (wp[r] - (double)v) / d;
    }
    return 0;
}

/* GPTQ into q's group-wise integer format, or (q NULL) onto grid. */
static int gptq_run(const float *w, double *H, const qc_gptq_opts *o, qc_quant_state *q,
                    const qc_gptq_grid *grid, int64_t rows, int64_t n, float *deq, qc_err *err) {
    if (check_weight(w, rows, n, err)) return -1;
    if (!H) return qc_err_set(err, "GPTQ needs the input Hessian (none was collected)");
    if (!o || !isfinite(o->damp) || o->damp < 0)
        return qc_err_set(err, "GPTQ: damp %g must be finite and >= 0", o ? o->damp : 0.0);
    if (o->block < 1) return qc_err_set(err, "GPTQ: block size %d must be positive", o->block);
    int64_t gs = grid ? grid->group : q->fmt.group_size;
    int64_t B = o->block < n ? o->block : n, G = gs && gs < n ? gs : n;
    if (rows > INT32_MAX) /* BLAS takes int sizes */
        return qc_err_set(err, "GPTQ: %lld x %lld weight too large for BLAS", (long long)rows,
                          (long long)n);
    int has_outliers = q && q->nnz;
    gptq_work k = {.rows = rows, .n = n};
    size_t wt = (size_t)n * (size_t)rows;
    k.Wt = malloc(wt * sizeof(double));
    k.Err = malloc((size_t)B * (size_t)rows * sizeof(double));
    k.cur = malloc((size_t)G * (size_t)rows * sizeof(double));
    k.wg = malloc((size_t)G * sizeof(float));
    k.dg = malloc((size_t)G * sizeof(float));
    k.diag = malloc((size_t)n * sizeof(double));
    k.perm = malloc((size_t)n * sizeof(int32_t));
    k.dead = malloc((size_t)n);
    k.om = has_outliers ? calloc(wt, 1) : NULL;
    if (!k.Wt || !k.Err || !k.cur || !k.wg || !k.dg || !k.diag || !k.perm || !k.dead ||
        (has_outliers && !k.om)) {
        gptq_work_free(&k);
        return qc_err_set(err, "GPTQ: out of memory for a %lld x %lld weight", (long long)rows,
                          (long long)n);
    }
    if (gptq_prepare_h(H, o, &k, err)) {
        gptq_work_free(&k);
        return -1;
    }
    if (o->info) {
        o->info->damp_used = k.damp_used;
        o->info->damp_retries = k.retries;
        o->info->dead_inputs = 0;
        for (int64_t j = 0; j < n; j++)
            o->info->dead_inputs += k.dead[j];
    }
    for (int64_t r = 0; r < rows && k.om; r++)
        for (int64_t i = q->row_ptr[r]; i < q->row_ptr[r + 1]; i++)
            k.om[r * n + q->col[i]] = 1;
    const double *U = H;
    for (int64_t p = 0; p < n; p++) {
        int64_t c = k.perm[p];
        for (int64_t r = 0; r < rows; r++)
            k.Wt[p * rows + r] = k.dead[c] ? 0.0 : (double)w[r * n + c];
    }
    /* A grid's groups are column blocks; with act-order they are fitted up
     * front so that each stays contiguous. */
    int upfront = gs == 0 || o->static_groups || (grid && o->act_order);
    if (upfront) gptq_fit_upfront(w, o, q, grid, &k);
    /* Frantar et al. 2022, Alg. 1: quantize column p, spread its scaled error
     * over the block's remaining columns at once (rank-1), and over the
     * columns after the block lazily, once per block (one GEMM). A sparse
     * outlier is "quantized" to f16 instead (SpQR, Dettmers et al. 2023,
     * Alg. 1): its current, compensated value is kept, so only its f16
     * rounding error is spread. */
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        int64_t i2 = i1 + B < n ? i1 + B : n;
        for (int64_t p = i1; p < i2; p++) {
            int64_t c = k.perm[p], i = p - i1;
            if (!upfront && p % gs == 0)
                gptq_fit_current(o, q, grid, &k, U, p, p + gs < n ? p + gs : n, i1, i2, i, p / gs);
            int64_t g = upfront ? (gs ? c / gs : 0) : p / gs;
            double *wp = k.Wt + p * rows, *ep = k.Err + i * rows;
            if (gptq_round_column(q, grid, &k, c, g, U[p * n + p], wp, ep, deq, err)) {
                gptq_work_free(&k);
                return -1;
            }
            if (i2 - p > 1)
                cblas_dger(CblasRowMajor, (int)(i2 - p - 1), (int)rows, -1.0, U + p * n + p + 1, 1,
                           ep, 1, wp + rows, (int)rows);
        }
        if (i2 < n)
            qcrt_dgemm(CblasTrans, CblasNoTrans, (int)(n - i2), (int)rows, (int)(i2 - i1), -1.0,
                       U + i1 * n + i2, (int)n, k.Err, (int)rows, 1.0, k.Wt + i2 * rows, (int)rows);
    }
    if (q) {
        if (upfront)
            trivial_g_idx(&q->fmt, n, q->g_idx);
        else
            for (int64_t p = 0; p < n; p++)
                q->g_idx[k.perm[p]] = (int32_t)(p / gs);
        free(q->perm);
        q->perm = NULL;
        if (o->act_order) {
            q->perm = k.perm;
            k.perm = NULL;
        }
    }
    gptq_work_free(&k);
    return 0;
}

int qc_quant_gptq(const float *w, double *H, const qc_gptq_opts *o, qc_quant_state *q, float *deq,
                  qc_err *err) {
    if (check_state(q, err)) return -1;
    return gptq_run(w, H, o, q, NULL, q->rows, q->cols, deq, err);
}

int qc_quant_gptq_grid(const float *w, double *H, const qc_gptq_opts *o, const qc_gptq_grid *grid,
                       int64_t rows, int64_t cols, float *deq, qc_err *err) {
    if (!grid || grid->group < 1 || !grid->fit || !grid->round)
        return qc_err_set(err, "GPTQ: quantization grid missing or without a group width");
    if (rows <= 0 || cols <= 0 || cols > INT32_MAX)
        return qc_err_set(err, "GPTQ: bad weight shape %lld x %lld", (long long)rows,
                          (long long)cols);
    return gptq_run(w, H, o, NULL, grid, rows, cols, deq, err);
}
