/* The demo GGUF model (Q4_1/Q8_0 weights, llama q/k un-permuted on load)
 * truncated to its first 2 blocks against Hugging Face transformers on the
 * same truncated file (tests/gen/make_gguf_subset.py + hf_reference.py, run
 * with transformers 5.17 / torch 2.11 on a GPU machine; packed by
 * pack_hf_logits.py). Checks the log-sum-exp and 64 logits per position
 * (the 32 largest and 32 across the vocabulary) for 64 positions.
 *
 * Tolerance 5e-4 absolute: we measured at most 4.6e-5 over all 64 × 49152
 * logits (largest |logit| 78); both sides dequantize exactly and compute in
 * f32, so the difference is summation order over 576/1536-long dot products.
 * 10× headroom keeps BLAS kernel changes from failing it while a wrong
 * dequantization, permutation or RoPE (errors of order 1) cannot pass. */
#include "compiler/model.h"
#include "runtime/forward.h"
#include "tests/check.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define REF "tests/data/hf_smollm2_2layer_logits.bin"

int main(void) {
    const char *path = getenv("QC_DEMO_MODEL");
    char buf[1024];
    if (!path) {
        snprintf(buf, sizeof buf, "%s/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
        path = buf;
    }
    if (access(path, R_OK) != 0) {
        printf("SKIP: demo model not found at %s (scripts/fetch-demo gets it)\n", path);
        return 77;
    }
    FILE *f = fopen(REF, "rb");
    CHECK_FATAL(f);
    int32_t hdr[3];
    CHECK_FATAL(fread(hdr, 4, 3, f) == 3);
    int n = hdr[0], vocab = hdr[1], k2 = 2 * hdr[2];
    CHECK_FATAL(n > 0 && n <= 512 && k2 > 0 && k2 <= 1024);
    int32_t *ids = malloc((size_t)n * 4);
    CHECK_FATAL(fread(ids, 4, (size_t)n, f) == (size_t)n);

    qc_err err;
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    CHECK_FATAL(m->cfg.vocab == vocab && m->cfg.n_layers >= 2);
    m->cfg.n_layers = 2; /* the reference ran the first two blocks only */
    qcrt_model *rm = qcrt_model_from_ir(m, &err);
    CHECK_FATAL(rm);
    qcrt_state *st = qcrt_state_new(rm, n, n, &err);
    float *lg = malloc((size_t)n * (size_t)vocab * sizeof(float));
    CHECK_FATAL(st && lg);
    CHECK_FATAL(qcrt_forward(rm, st, ids, n, lg, 1, &err) == 0);

    double worst = 0, worst_lse = 0;
    int argmax_ok = 0;
    int32_t *idx = malloc((size_t)k2 * 4);
    float *val = malloc((size_t)k2 * 4);
    for (int t = 0; t < n; t++) {
        double lse_ref;
        CHECK_FATAL(fread(&lse_ref, 8, 1, f) == 1);
        CHECK_FATAL(fread(idx, 4, (size_t)k2, f) == (size_t)k2);
        CHECK_FATAL(fread(val, 4, (size_t)k2, f) == (size_t)k2);
        const float *row = lg + (size_t)t * vocab;
        double mx = row[0], s = 0;
        int am = 0;
        for (int v = 1; v < vocab; v++)
            if (row[v] > mx) mx = row[v], am = v;
        for (int v = 0; v < vocab; v++) s += exp(row[v] - mx);
        double lse = mx + log(s);
        if (fabs(lse - lse_ref) > worst_lse) worst_lse = fabs(lse - lse_ref);
        for (int i = 0; i < k2; i++) {
            CHECK_FATAL(idx[i] >= 0 && idx[i] < vocab);
            double d = fabs(row[idx[i]] - val[i]);
            if (d > worst) worst = d;
        }
        argmax_ok += am == idx[0];
    }
    fclose(f);
    printf("2-block demo model vs transformers: %d positions, max |logit diff| %.3g, "
           "max |lse diff| %.3g, argmax agrees %d/%d\n",
           n, worst, worst_lse, argmax_ok, n);
    CHECK_MSG(worst < 5e-4, "max logit difference %g", worst);
    CHECK_MSG(worst_lse < 5e-4, "max lse difference %g", worst_lse);
    CHECK(argmax_ok == n);
    free(idx);
    free(val);
    free(lg);
    free(ids);
    qcrt_state_free(st);
    qcrt_model_free(rm);
    qc_model_free(m);
    TEST_END();
}
