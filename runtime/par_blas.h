/* Matrix products split over threads in a way that does not depend on the
 * thread count.
 *
 * OpenBLAS splits a product across its threads by the thread count, and
 * on some CPUs (its Haswell kernels, which it also picks for CPUs it does
 * not know, such as AMD Zen 5) the edge tiles of each thread's share are
 * summed in another order: the last bits of a result then depend on the
 * number of threads, and a compile's artifact on the machine it ran on.
 * These wrappers cut a product into parts whose shapes depend only on the
 * product's shape, run each part as a single-threaded BLAS call, and
 * spread the parts over quantc's own threads: every element is computed
 * by the same call whatever the thread count. OpenBLAS itself is kept at
 * one thread (so LAPACK and the other BLAS calls are serial and
 * deterministic too). */
#ifndef QCRT_PAR_BLAS_H
#define QCRT_PAR_BLAS_H

#include "../compiler/err.h"

#include <cblas.h>

/* Sets the threads the products below use (n >= 1) and pins OpenBLAS to one
 * thread. Called once by the command line before any work; without it the
 * products run on the calling thread. Returns 0 or -1 with err. */
int qcrt_blas_set_threads(int n, qc_err *err);
int qcrt_blas_threads(void);

/* C = alpha·op(A)·op(B) + beta·C, row-major, as cblas_sgemm / cblas_dgemm. */
void qcrt_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void qcrt_dgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                const double *a, int lda, const double *b, int ldb, double beta, double *c,
                int ldc);

/* The upper triangle (with the diagonal) of C = XᵀX for X rows × cols
 * (row-major, leading dimension cols) into C (cols × cols, leading
 * dimension cols); the strict lower triangle is left as it was, except
 * inside diagonal blocks, which are written whole. */
void qcrt_ssyrk_upper(int rows, int cols, const float *x, float *c);

#endif
