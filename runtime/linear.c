#include "linear.h"

#include "par_blas.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct f32_impl {
    float *w;    /* out × in, row-major */
    float *bias; /* out, or NULL */
} f32_impl;

/* y = x·Wᵀ + b. Row-major x (n × in) times Wᵀ is sgemm(NoTrans, Trans); with
 * a bias, y is first filled with b per row and accumulated into (beta = 1). */
static void f32_forward(const qcrt_linear *l, const float *x, int64_t n, float *y) {
    const f32_impl *im = l->impl;
    int out = (int)l->out, in = (int)l->in;
    float beta = 0.0f;
    if (n <= 0) return;
    if (im->bias) {
        for (int64_t t = 0; t < n; t++)
            memcpy(y + t * out, im->bias, (size_t)out * sizeof(float));
        beta = 1.0f;
    }
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, im->w, in, x, 1, beta, y, 1);
    else
        qcrt_sgemm(CblasNoTrans, CblasTrans, (int)n, out, in, 1.0f, x, in, im->w, in, beta, y, out);
}

static void f32_free(qcrt_linear *l) {
    f32_impl *im = l->impl;
    free(im->w);
    free(im->bias);
    free(im);
    free(l);
}

qcrt_linear *qcrt_linear_f32_new(float *w, float *bias, int64_t out, int64_t in, qc_err *err) {
    /* BLAS takes int dimensions (OpenBLAS' default 32-bit interface). */
    if (!w || out <= 0 || in <= 0 || out > INT_MAX || in > INT_MAX) {
        qc_err_set(err, "linear: invalid shape %lld × %lld", (long long)out, (long long)in);
        return NULL;
    }
    qcrt_linear *l = qc_calloc(1, sizeof *l, err);
    f32_impl *im = qc_calloc(1, sizeof *im, err);
    if (!l || !im) {
        free(l);
        free(im);
        return NULL;
    }
    im->w = w;
    im->bias = bias;
    l->out = out;
    l->in = in;
    l->forward = f32_forward;
    l->free = f32_free;
    l->impl = im;
    return l;
}

void qcrt_linear_free(qcrt_linear *l) {
    if (l) l->free(l);
}
