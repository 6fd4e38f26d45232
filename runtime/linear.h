/* Linear layers are the seam between the forward pass and how weights are
 * stored (DESIGN.md): f32 BLAS now; fake-quant, generated CPU and CUDA
 * kernels later. The forward pass only calls forward(). */
#ifndef QCRT_LINEAR_H
#define QCRT_LINEAR_H

#include "../codegen/kernel_spec.h"
#include "../compiler/err.h"

#include <stdint.h>

typedef struct qcrt_linear qcrt_linear;

struct qcrt_linear {
    int64_t out, in;
    /* y[n][out] = x[n][in] · Wᵀ (+ bias). x and y do not alias. */
    void (*forward)(const qcrt_linear *l, const float *x, int64_t n, float *y);
    void (*free)(qcrt_linear *l);
    void *impl;
};

/* f32 weight (out × in, row-major) and optional bias (out), both owned by the
 * returned linear (on failure they stay the caller's). Products go through
 * BLAS sgemm/sgemv. */
qcrt_linear *qcrt_linear_f32_new(float *w, float *bias, int64_t out, int64_t in, qc_err *err);

void qcrt_linear_free(qcrt_linear *l);

struct qc_quant_state;

/* Fake-quant linear: computes with exactly the weights a quantized layer
 * stands for, Ŵ = dequantize(q) (compiler/quant.h), in f32 through BLAS, so
 * `quantc eval` measures the compiled model. q is not retained; bias (out,
 * may be NULL) is copied. */
qcrt_linear *qcrt_linear_fq_new(const struct qc_quant_state *q, const float *bias, qc_err *err);

/* Online input transform (QuaRot R4): forward(x) = inner(T x) with
 * T = H_n/sqrt(n) (compiler/hadamard.h), n = inner->in. Takes ownership of
 * inner (on failure it stays the caller's). */
qcrt_linear *qcrt_linear_online_new(qcrt_linear *inner, int hadamard_n, qc_err *err);
/* The slot holding the inner linear of an online linear (to wrap or replace
 * it), or NULL when l is not one. */
qcrt_linear **qcrt_linear_online_inner(qcrt_linear *l);

struct qcrt_pool;
/* Generated-kernel linear (runtime/cpu_kernels.h): y = x·Ŵᵀ (+ bias) with
 * the gemv kernel when n == 1, else the gemm kernel (x in chunks of 64
 * rows). packed (packed_size bytes, codegen/pack.h) is checked against spec
 * and must outlive the linear (e.g. the mapped artifact); bias (out, may be
 * NULL) is copied. Output rows are cut into parts of 64 that the pool's
 * threads claim as they come free (runtime/pool.h); every output row is
 * computed by one thread in a fixed order whatever the part boundaries
 * (kernel ABI), so results depend neither on T nor on scheduling.
 * pool may be NULL (one thread) and must outlive the linear; forward() is
 * not reentrant (per-thread scratch lives in the linear). With the split
 * gemv (prep and rows non-NULL, qcrt_cpu_kernels_find_split) x is prepared
 * once per call instead of once per part. */
qcrt_linear *qcrt_linear_cpu_new(const qc_kernel_spec *spec, qc_gemv_fn gemv, qc_gemm_fn gemm,
                                 qc_gemv_prep_fn prep, qc_gemv_rows_fn rows,
                                 const uint8_t *packed, size_t packed_size, const float *bias,
                                 struct qcrt_pool *pool, qc_err *err);

#endif
