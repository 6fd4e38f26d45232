/* Low-rank compensation factors (see lowrank.h). */
#include "lowrank.h"

#include "dequant.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's LAPACK (dsyevd, dgesdd) and some of its skinny products give
 * results that differ in the last bits between thread counts, which f16
 * factors then sometimes round differently: the artifact would depend on
 * the machine's cores. Both entry points run with one BLAS thread (the
 * compile's other BLAS work is thread-count invariant, test_determinism);
 * the cost is the eigendecomposition / SVD on one core. */
static int blas_serial_begin(void) {
    int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}

static void blas_serial_end(int n) {
    openblas_set_num_threads(n);
}

static int hsqrt_impl(const double *H, int64_t n, double *S, qc_err *err) {
    size_t nn;
    if (n <= 0 || n > INT32_MAX || qc_mul_size((size_t)n, (size_t)n, &nn) ||
        nn > SIZE_MAX / sizeof(double))
        return qc_err_set(err, "Hessian of %lld columns: bad size", (long long)n);
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(H[i]))
            return qc_err_set(err, "Hessian has a non-finite value (%g) at row %lld, column %lld",
                              H[i], (long long)(i / (size_t)n), (long long)(i % (size_t)n));
    double *lam = qc_malloc((size_t)n * sizeof *lam, err);
    if (!lam) return -1;
    memcpy(S, H, nn * sizeof *S);
    /* H = QΛQᵀ: eigenvectors in S's columns, eigenvalues ascending. */
    lapack_int info =
        LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, S, (lapack_int)n, lam);
    if (info != 0) {
        free(lam);
        return qc_err_set(err,
                          "eigendecomposition of the %lld x %lld Hessian failed (LAPACK info %d)",
                          (long long)n, (long long)n, (int)info);
    }
    for (int64_t j = 0; j < n; j++) {
        double s = lam[j] > 0 ? sqrt(lam[j]) : 0; /* H is PSD: a negative λ is rounding */
        for (int64_t i = 0; i < n; i++)
            S[i * n + j] *= s;
    }
    free(lam);
    return 0;
}

double qc_lowrank_err(const double *R, int64_t rows, int64_t cols, const double *H) {
    size_t n = (size_t)rows * (size_t)cols;
    double acc = 0;
    if (!H) {
        for (size_t i = 0; i < n; i++)
            acc += R[i] * R[i];
        return acc;
    }
    double *t = malloc(n * sizeof *t);
    if (!t) return -1;
    qcrt_dgemm(CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0, R, (int)cols, H,
               (int)cols, 0.0, t, (int)cols);
    for (size_t i = 0; i < n; i++)
        acc += t[i] * R[i];
    free(t);
    return acc;
}

/* The leading `rank` left singular vectors of M (rows × cols, destroyed)
 * into U (rows × rank); *tail = Σ_{i>rank} σ_i². */
static int left_singular(double *M, int64_t rows, int64_t cols, int rank, double *U, double *tail,
                         qc_err *err) {
    int64_t k = rows < cols ? rows : cols;
    double *sv = qc_malloc((size_t)k * sizeof *sv, err);
    double *u = sv ? qc_malloc((size_t)rows * (size_t)k * sizeof *u, err) : NULL;
    double *vt = u ? qc_malloc((size_t)k * (size_t)cols * sizeof *vt, err) : NULL;
    if (!vt) {
        free(sv), free(u);
        return -1;
    }
    /* Singular values come out in decreasing order. */
    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)rows, (lapack_int)cols, M,
                                     (lapack_int)cols, sv, u, (lapack_int)k, vt, (lapack_int)cols);
    *tail = 0;
    if (info == 0) {
        for (int64_t i = 0; i < rows; i++)
            memcpy(U + i * rank, u + i * k, (size_t)rank * sizeof *U);
        for (int64_t i = rank; i < k; i++)
            *tail += sv[i] * sv[i];
    }
    free(sv), free(u), free(vt);
    if (info != 0)
        return qc_err_set(err, "SVD of a %lld x %lld matrix failed (LAPACK info %d)",
                          (long long)rows, (long long)cols, (int)info);
    return 0;
}

/* B = (AᵀA)⁻¹AᵀE for A rows × r (f64 copy of the f16-rounded factor). */
static int refit_b(const double *A, const double *E, int64_t rows, int64_t cols, int r, double *B,
                   qc_err *err) {
    double *G = qc_malloc((size_t)r * (size_t)r * sizeof *G, err);
    if (!G) return -1;
    qcrt_dgemm(CblasTrans, CblasNoTrans, r, r, (int)rows, 1.0, A, r, A, r, 0.0, G, r);
    qcrt_dgemm(CblasTrans, CblasNoTrans, r, (int)cols, (int)rows, 1.0, A, r, E, (int)cols, 0.0, B,
               (int)cols);
    lapack_int info =
        LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', r, (lapack_int)cols, G, r, B, (lapack_int)cols);
    free(G);
    if (info != 0)
        return qc_err_set(err, "low-rank refit: AᵀA singular (LAPACK info %d)", (int)info);
    return 0;
}

static int fit_impl(const double *E, int64_t rows, int64_t cols, const double *S, int rank,
                    float *A, float *B, double *opt_err, qc_err *err) {
    int64_t k = rows < cols ? rows : cols;
    if (rank < 1 || rank > k)
        return qc_err_set(err, "rank %d out of range 1..%lld for a %lld x %lld weight", rank,
                          (long long)k, (long long)rows, (long long)cols);
    if (rows > INT32_MAX || cols > INT32_MAX)
        return qc_err_set(err, "%lld x %lld weight too large for BLAS", (long long)rows,
                          (long long)cols);
    size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(E[i]))
            return qc_err_set(err,
                              "quantization error has a non-finite value at row %lld, column %lld",
                              (long long)(i / (size_t)cols), (long long)(i % (size_t)cols));
    double *M = qc_malloc(n * sizeof *M, err);
    double *U = M ? qc_malloc((size_t)rows * (size_t)rank * sizeof *U, err) : NULL;
    double *Bd = U ? qc_malloc((size_t)rank * (size_t)cols * sizeof *Bd, err) : NULL;
    int rc = -1;
    if (!Bd) goto out;
    if (S)
        qcrt_dgemm(CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0, E, (int)cols,
                   S, (int)cols, 0.0, M, (int)cols);
    else
        memcpy(M, E, n * sizeof *M);
    double tail;
    if (left_singular(M, rows, cols, rank, U, &tail, err)) goto out;
    if (opt_err) *opt_err = tail;
    /* Balance component j for f16: A_j = s_j·u_j, B_j = u_jᵀE / s_j with
     * max|A_j| = max|B_j|. */
    qcrt_dgemm(CblasTrans, CblasNoTrans, rank, (int)cols, (int)rows, 1.0, U, rank, E, (int)cols,
               0.0, Bd, (int)cols);
    for (int j = 0; j < rank; j++) {
        double ma = 0, mb = 0;
        for (int64_t i = 0; i < rows; i++)
            ma = fmax(ma, fabs(U[i * rank + j]));
        for (int64_t c = 0; c < cols; c++)
            mb = fmax(mb, fabs(Bd[j * cols + c]));
        double s = ma > 0 && mb > 0 ? sqrt(mb / ma) : 1;
        for (int64_t i = 0; i < rows; i++) {
            uint16_t h = qc_f32_to_f16((float)(U[i * rank + j] * s));
            U[i * rank + j] = qc_f16_to_f32(h);
        }
    }
    if (refit_b(U, E, rows, cols, rank, Bd, err)) goto out;
    for (size_t i = 0; i < (size_t)rows * (size_t)rank; i++)
        A[i] = (float)U[i];
    for (size_t i = 0; i < (size_t)rank * (size_t)cols; i++)
        B[i] = (float)Bd[i];
    rc = 0;
out:
    free(M), free(U), free(Bd);
    return rc;
}

int qc_lowrank_hsqrt(const double *H, int64_t n, double *S, qc_err *err) {
    int t = blas_serial_begin();
    int rc = hsqrt_impl(H, n, S, err);
    blas_serial_end(t);
    return rc;
}

int qc_lowrank_fit(const double *E, int64_t rows, int64_t cols, const double *S, int rank, float *A,
                   float *B, double *opt_err, qc_err *err) {
    int t = blas_serial_begin();
    int rc = fit_impl(E, rows, cols, S, rank, A, B, opt_err, err);
    blas_serial_end(t);
    return rc;
}
