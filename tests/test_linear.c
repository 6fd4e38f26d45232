/* The f32 linear against a naive double-precision triple loop on odd shapes,
 * with and without bias, for n = 1 (sgemv path) and n > 1 (sgemm path).
 * Tolerance: inputs are uniform in [-1, 1], so each output sums at most 54
 * terms of magnitude ≤ 1; f32 accumulation in any order errs by at most
 * γ₅₄ · Σ|xw| ≤ 54 · 2⁻²⁴ · 54 ≈ 1.7e-4 (worst case; ~1e-6 typically). 2e-4
 * absolute sits above that bound and far below the order-1 errors of an
 * indexing or transpose mistake. */
#include "runtime/linear.h"
#include "tests/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static unsigned rng_state = 12345;
static float urand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) / 16777216.0 * 2.0 - 1.0);
}

static void check_shape(int64_t out, int64_t in, int with_bias) {
    float *w = malloc((size_t)(out * in) * sizeof(float));
    float *b = with_bias ? malloc((size_t)out * sizeof(float)) : NULL;
    for (int64_t i = 0; i < out * in; i++)
        w[i] = urand();
    for (int64_t i = 0; with_bias && i < out; i++)
        b[i] = urand();
    /* The linear owns w and b; keep copies for the reference. */
    float *wr = malloc((size_t)(out * in) * sizeof(float));
    memcpy(wr, w, (size_t)(out * in) * sizeof(float));
    float *br = NULL;
    if (with_bias) {
        br = malloc((size_t)out * sizeof(float));
        memcpy(br, b, (size_t)out * sizeof(float));
    }
    qc_err err = {{0}};
    qcrt_linear *l = qcrt_linear_f32_new(w, b, out, in, &err);
    CHECK_FATAL(l != NULL);
    CHECK(l->out == out && l->in == in);
    int ns[] = {1, 3, 17};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        float *x = malloc((size_t)(n * in) * sizeof(float));
        float *y = malloc((size_t)(n * out) * sizeof(float));
        for (int64_t i = 0; i < n * in; i++)
            x[i] = urand();
        for (int64_t i = 0; i < n * out; i++)
            y[i] = NAN; /* must be fully overwritten */
        l->forward(l, x, n, y);
        double maxerr = 0;
        for (int t = 0; t < n; t++)
            for (int64_t o = 0; o < out; o++) {
                double acc = br ? br[o] : 0.0;
                for (int64_t i = 0; i < in; i++)
                    acc += (double)x[t * in + i] * wr[o * in + i];
                double e = fabs(acc - y[t * out + o]);
                if (!(e <= maxerr)) maxerr = e; /* NaN propagates into maxerr */
            }
        printf("linear %lld x %lld, n = %d, bias %d: max abs error %.3g\n", (long long)out,
               (long long)in, n, with_bias, maxerr);
        CHECK_MSG(maxerr < 2e-4, "max abs error %g", maxerr);
        free(x);
        free(y);
    }
    qcrt_linear_free(l);
    free(wr);
    free(br);
}

int main(void) {
    check_shape(37, 53, 0);
    check_shape(37, 53, 1);
    check_shape(1, 7, 1);
    check_shape(64, 1, 0);

    /* Bad shapes are errors, and the weights stay the caller's. */
    qc_err err = {{0}};
    float w[4] = {0};
    CHECK(qcrt_linear_f32_new(w, NULL, 0, 4, &err) == NULL);
    CHECK(strstr(err.msg, "invalid shape") != NULL);
    CHECK(qcrt_linear_f32_new(w, NULL, 2, -1, &err) == NULL);
    CHECK(qcrt_linear_f32_new(NULL, NULL, 2, 2, &err) == NULL);
    CHECK(qcrt_linear_f32_new(w, NULL, (int64_t)1 << 40, 1, &err) == NULL);
    qcrt_linear_free(NULL);
    TEST_END();
}
