/* Linear layers are the seam between the forward pass and how weights are
 * stored (DESIGN.md): f32 BLAS now; fake-quant, generated CPU and CUDA
 * kernels later. The forward pass only calls forward(). */
#ifndef QCRT_LINEAR_H
#define QCRT_LINEAR_H

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

#endif
