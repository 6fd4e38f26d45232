/* Eval arithmetic and the sampler against direct computations. */
#include "runtime/eval.h"
#include "runtime/sample.h"
#include "tests/check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Reads tests/data/tiny/<name>/{golden,numpy_logits}.bin: int32 n, int32
 * vocab, int32 ids[n], float32 logits[n × vocab]. */
static float *read_ref(const char *dir, int32_t **ids, int *n, int *vocab, const char **which) {
    static const char *names[] = {"golden.bin", "numpy_logits.bin"};
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        int32_t hdr[2];
        float *lg = NULL;
        if (fread(hdr, 4, 2, f) == 2 && hdr[0] > 0 && hdr[0] < 4096 && hdr[1] > 0 &&
            hdr[1] < (1 << 20)) {
            *n = hdr[0];
            *vocab = hdr[1];
            *ids = malloc((size_t)*n * 4);
            lg = malloc((size_t)*n * (size_t)*vocab * 4);
            if (fread(*ids, 4, (size_t)*n, f) != (size_t)*n ||
                fread(lg, 4, (size_t)*n * (size_t)*vocab, f) != (size_t)*n * (size_t)*vocab) {
                free(*ids);
                free(lg);
                lg = NULL;
            }
        }
        fclose(f);
        if (lg) {
            *which = names[k];
            return lg;
        }
    }
    return NULL;
}

/* Perplexity of one window equals exp(mean −log p(next)) computed directly
 * from the reference logits (HF transformers or numpy) of the same tokens.
 * Tolerance 1e-4 on the mean NLL: the forward pass matches the reference
 * logits to ~1e-5 and log-softmax is 1-Lipschitz in the max norm. */
static void test_eval_tiny(const char *dir) {
    qc_err err;
    int32_t *ids = NULL;
    int n = 0, vocab = 0;
    const char *which = NULL;
    float *ref = read_ref(dir, &ids, &n, &vocab, &which);
    CHECK_MSG(ref != NULL, "%s: no reference logits (tests/gen/make_tiny_models.py)", dir);
    if (!ref) return;
    qc_model *m = qc_model_load(dir, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    qcrt_model *rm = m ? qcrt_model_from_ir(m, &err) : NULL;
    CHECK_MSG(!m || rm != NULL, "%s", err.msg);
    if (rm) {
        double *lp = malloc((size_t)vocab * sizeof(double)), want = 0;
        for (int i = 0; i + 1 < n; i++) {
            qcrt_log_softmax(ref + (size_t)i * vocab, vocab, lp);
            want -= lp[ids[i + 1]];
        }
        want /= n - 1;
        free(lp);
        qcrt_eval_opts o = {.ctx = n};
        qcrt_eval_result r;
        CHECK_MSG(qcrt_eval_ppl(rm, NULL, ids, (size_t)n, &o, &r, &err) == 0, "%s", err.msg);
        CHECK_MSG(fabs(r.nll - want) < 1e-4, "%s: nll %.6f vs %s %.6f", dir, r.nll, which, want);
        CHECK(r.windows == 1 && r.scored == n - 1);
        printf("%s: eval nll %.6f, from %s %.6f\n", dir, r.nll, which, want);

        /* Against itself: KL 0, full top-1 agreement; two windows of n/2. */
        o.ctx = n / 2;
        CHECK_MSG(qcrt_eval_ppl(rm, rm, ids, (size_t)n, &o, &r, &err) == 0, "%s", err.msg);
        CHECK(r.windows == 2 && r.scored == 2 * (n / 2 - 1));
        CHECK_MSG(fabs(r.kl) < 1e-9 && r.top1 == 1.0, "kl %g top1 %g", r.kl, r.top1);
        CHECK(fabs(r.ref_ppl - r.ppl) < 1e-9 * r.ppl);

        o.ctx = n + 1; /* one window needs more tokens than there are */
        CHECK(qcrt_eval_ppl(rm, NULL, ids, (size_t)n, &o, &r, &err) != 0);
        CHECK(strstr(err.msg, "fewer than one window") != NULL);
        o.ctx = 1;
        CHECK(qcrt_eval_ppl(rm, NULL, ids, (size_t)n, &o, &r, &err) != 0);
    }
    qcrt_model_free(rm);
    qc_model_free(m);
    free(ids);
    free(ref);
}

int main(void) {
    test_log_softmax();
    test_sampler();
    test_eval_tiny("tests/data/tiny/llama");
    test_eval_tiny("tests/data/tiny/qwen3");
    TEST_END();
}
