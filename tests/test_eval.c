/* Eval arithmetic and the sampler against direct computations. */
#include "runtime/eval.h"
#include "runtime/sample.h"
#include "tests/check.h"

#include <math.h>
#include <string.h>

static void test_log_softmax(void) {
    /* Large offsets would overflow a naive exp; log-softmax subtracts the max.
     * Compare with the same sum in long double (tolerance 1e-12: both are
     * double computations of well-conditioned values). */
    float x[5] = {1000.0f, 999.0f, 998.5f, -3.0f, 1000.25f};
    double out[5];
    double lse = qcrt_log_softmax(x, 5, out);
    long double s = 0;
    for (int i = 0; i < 5; i++) s += expl((long double)x[i] - 1000.25L);
    long double want = 1000.25L + logl(s);
    CHECK_MSG(fabs(lse - (double)want) < 1e-12, "lse %.15f want %.15Lf", lse, want);
    double total = 0;
    for (int i = 0; i < 5; i++) total += exp(out[i]);
    CHECK(fabs(total - 1) < 1e-12);
    x[2] = NAN;
    CHECK(isnan(qcrt_log_softmax(x, 5, out)));
    x[2] = INFINITY;
    CHECK(isnan(qcrt_log_softmax(x, 5, out)));
}

static void test_sampler(void) {
    qc_err err;
    float logits[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 1.5f};
    qcrt_sampler *g = qcrt_sampler_new(6, 0, 0.9f, 1, &err);
    CHECK_FATAL(g);
    CHECK(qcrt_sample(g, logits) == 1);
    qcrt_sampler_free(g);

    /* Same seed → same sequence; top-p 0.5 keeps only the tokens whose sorted
     * mass first reaches half: with these logits at T=1, tokens 1 and 3. */
    qcrt_sampler *a = qcrt_sampler_new(6, 1.0f, 0.5f, 42, &err);
    qcrt_sampler *b = qcrt_sampler_new(6, 1.0f, 0.5f, 42, &err);
    CHECK_FATAL(a && b);
    int seen[6] = {0};
    for (int i = 0; i < 2000; i++) {
        int ta = qcrt_sample(a, logits), tb = qcrt_sample(b, logits);
        CHECK(ta == tb);
        seen[ta]++;
    }
    CHECK(seen[1] > 0 && seen[3] > 0);
    CHECK(seen[0] == 0 && seen[2] == 0 && seen[4] == 0 && seen[5] == 0);
    /* P(1)/P(3) = e^0.1 ≈ 1.105; 2000 draws put the ratio within ±0.15 of it
     * with overwhelming probability (binomial sd of the fraction ≈ 0.011). */
    double ratio = (double)seen[1] / seen[3];
    CHECK_MSG(fabs(ratio - exp(0.1)) < 0.15, "ratio %.3f", ratio);
    qcrt_sampler_free(a);
    qcrt_sampler_free(b);

    CHECK(qcrt_sampler_new(6, -1.0f, 0.9f, 0, &err) == NULL);
    CHECK(strstr(err.msg, "temperature") != NULL);
    CHECK(qcrt_sampler_new(6, 1.0f, 0.0f, 0, &err) == NULL);
    CHECK(qcrt_sampler_new(6, 1.0f, NAN, 0, &err) == NULL);
}

int main(void) {
    test_log_softmax();
    test_sampler();
    TEST_END();
}
