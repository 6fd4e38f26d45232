/* A linear with an online transform on its input (QuaRot's R4 / SpinQuant's
 * R4 before down_proj): y = W'·(T x) with T = H_n/sqrt(n) and the stored
 * W' = W·Tᵀ, so y = W x in exact arithmetic while W' is easier to quantize.
 * Wraps any linear (f32, fake-quant, generated kernel); the codegen fuses
 * the transform into its kernels later. */
#include "linear.h"

#include "compiler/hadamard.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct online_impl {
    qcrt_linear *inner;
    qc_hadamard *h;
    float scale;
    float *xt;            /* cap × in: the transformed input */
    int64_t cap;          /* rows xt holds */
    pthread_mutex_t lock; /* forward is const and may be shared: xt is scratch */
} online_impl;

static void online_forward(const qcrt_linear *l, const float *x, int64_t n, float *y) {
    online_impl *im = l->impl;
    pthread_mutex_lock(&im->lock);
    if (n > im->cap) {
        float *nx = realloc(im->xt, (size_t)n * (size_t)l->in * sizeof(float));
        if (!nx) { /* cannot signal through forward(): fall back to one row at a time */
            for (int64_t t = 0; t < n && im->cap > 0; t++) {
                memcpy(im->xt, x + t * l->in, (size_t)l->in * sizeof(float));
                qc_hadamard_apply(im->h, im->xt, 1, 0, im->scale);
                im->inner->forward(im->inner, im->xt, 1, y + t * l->out);
            }
            pthread_mutex_unlock(&im->lock);
            return;
        }
        im->xt = nx;
        im->cap = n;
    }
    memcpy(im->xt, x, (size_t)n * (size_t)l->in * sizeof(float));
    qc_hadamard_apply(im->h, im->xt, n, 0, im->scale);
    im->inner->forward(im->inner, im->xt, n, y);
    pthread_mutex_unlock(&im->lock);
}

static void online_free(qcrt_linear *l) {
    online_impl *im = l->impl;
    qcrt_linear_free(im->inner);
    qc_hadamard_free(im->h);
    free(im->xt);
    pthread_mutex_destroy(&im->lock);
    free(im);
    free(l);
}

qcrt_linear *qcrt_linear_online_new(qcrt_linear *inner, int hadamard_n, qc_err *err) {
    if (!inner || inner->in != hadamard_n) {
        qc_err_set(err, "online Hadamard of size %d on a linear with %lld inputs", hadamard_n,
                   inner ? (long long)inner->in : 0LL);
        return NULL;
    }
    qcrt_linear *l = qc_calloc(1, sizeof *l, err);
    online_impl *im = qc_calloc(1, sizeof *im, err);
    qc_hadamard *h = im ? qc_hadamard_new(hadamard_n, err) : NULL;
    float *xt = h ? qc_malloc((size_t)hadamard_n * sizeof(float), err) : NULL;
    if (!l || !xt) {
        free(l);
        free(im);
        qc_hadamard_free(h);
        return NULL;
    }
    pthread_mutex_init(&im->lock, NULL);
    im->inner = inner;
    im->h = h;
    im->scale = 1.0f / sqrtf((float)hadamard_n);
    im->xt = xt;
    im->cap = 1;
    l->out = inner->out;
    l->in = inner->in;
    l->forward = online_forward;
    l->free = online_free;
    l->impl = im;
    return l;
}

qcrt_linear **qcrt_linear_online_inner(qcrt_linear *l) {
    if (!l || l->forward != online_forward) return NULL;
    return &((online_impl *)l->impl)->inner;
}
