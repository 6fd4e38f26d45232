/* The KL probe (compiler/kl_probe.h) against a direct computation.
 *
 * For the tiny llama, qwen2 (q/k/v biases) and qwen3 (q/k norms), with an
 * online Hadamard on every down_proj's input for llama (the probe must
 * replace the inner linear): random perturbations of several linears in
 * the first, a middle and the last block, measured by the probe in one
 * streamed pass, are compared with the whole-model forward (qcrt_forward,
 * itself checked against numpy and Hugging Face in test_forward) run once
 * per perturbation with that one linear replaced, and the KL divergence
 * computed here in f64 from the logits (log-softmax, Σ p (log p − log q)).
 *
 * Tolerance: both sides run the same f32 blocks; they differ in the final
 * RMSNorm (the probe's own), f32 vs f64 log-softmax and summation order:
 * ~1e-6 relative on logits of magnitude ≤ 30, which moves a KL by at most
 * ~1e-6 · Σ|p − q| · |logit|. We allow 1e-6 + 1e-3 · KL (the KLs here are
 * 1e-4 to 1e-1); a wrong block, a stream swapped or a perturbation applied
 * to the wrong linear changes them by factors. An unperturbed linear (the
 * weight itself) must give exactly 0: the stream then runs the same
 * arithmetic as the reference stream. Bad calls (block out of order, an
 * unknown linear, finishing early) fail with a message. */
#include "compiler/kl_probe.h"
#include "compiler/model.h"
#include "runtime/forward.h"
#include "tests/check.h"
#include "tests/kl_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SAMPLES = 2, TOKENS = 12, STRIDE = 15, MAX_PERT = 16 };

static uint64_t rng = 777;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

typedef struct pert {
    int block;
    const char *kind, *module; /* "q_proj", "self_attn.q_proj" */
    float scale;               /* relative noise; 0 = the weight itself */
    float *w, *bias;
    int64_t rows, cols;
} pert;

static void test_model(const char *path, int online) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    const qc_config *c = &m->cfg;
    char name[192];
    if (online)
        for (int b = 0; b < c->n_layers; b++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", b);
            CHECK_FATAL(qc_model_set_online_hadamard(m, name, (int)c->ffn_dim, &err) == 0);
        }
    int32_t ids[SAMPLES * STRIDE];
    for (int i = 0; i < SAMPLES * STRIDE; i++)
        ids[i] = (int32_t)(urand() * c->vocab);
    static const char *const kinds[7][2] = {
        {"q_proj", "self_attn.q_proj"}, {"k_proj", "self_attn.k_proj"},
        {"v_proj", "self_attn.v_proj"}, {"o_proj", "self_attn.o_proj"},
        {"gate_proj", "mlp.gate_proj"}, {"up_proj", "mlp.up_proj"},
        {"down_proj", "mlp.down_proj"}};
    int blocks[3] = {0, c->n_layers / 2, c->n_layers - 1};
    pert p[MAX_PERT];
    int n = 0;
    for (int bi = 0; bi < 3; bi++) {
        if (bi && blocks[bi] == blocks[bi - 1]) continue;
        for (int k = 0; k < 7 && n < MAX_PERT; k += 1 + bi) {
            pert *q = &p[n++];
            q->block = blocks[bi];
            q->kind = kinds[k][0];
            q->module = kinds[k][1];
            q->scale = n % 5 == 0 ? 0.0f : 0.05f * (float)(1 + n % 3);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", q->block, q->module);
            const qc_tensor *t = qc_model_find(m, name);
            CHECK_FATAL(t && t->n_dims == 2);
            q->rows = t->shape[0];
            q->cols = t->shape[1];
            q->w = qcrt_load_tensor(m, name, q->rows, q->cols, &err);
            CHECK_FATAL(q->w);
            double ss = 0;
            for (int64_t i = 0; i < q->rows * q->cols; i++)
                ss += (double)q->w[i] * q->w[i];
            float sd = (float)sqrt(ss / (double)(q->rows * q->cols));
            for (int64_t i = 0; i < q->rows * q->cols; i++)
                q->w[i] += q->scale * sd * (float)(2 * urand() - 1) * 1.7320508f;
            q->bias = NULL;
            snprintf(name, sizeof name, "model.layers.%d.%s.bias", q->block, q->module);
            if (qc_model_find(m, name)) q->bias = qcrt_load_tensor(m, name, q->rows, 0, &err);
        }
    }
    /* The probe, in one streamed pass. */
    qc_kl_probe *pr = qc_kl_probe_new(m, ids, STRIDE, SAMPLES, TOKENS, &err);
    CHECK_FATAL(pr);
    for (int b = 0; b < c->n_layers; b++) {
        qc_kl_perturb kp[MAX_PERT];
        int k = 0;
        for (int i = 0; i < n; i++)
            if (p[i].block == b) kp[k++] = (qc_kl_perturb){p[i].kind, p[i].w, p[i].bias};
        CHECK_MSG(qc_kl_probe_block(pr, b, kp, k, &err) == 0, "%s", err.msg);
    }
    CHECK(qc_kl_probe_count(pr) == n);
    double kl[MAX_PERT];
    CHECK_MSG(qc_kl_probe_finish(pr, kl, &err) == 0, "%s", err.msg);
    qc_kl_probe_free(pr);
    /* Directly. */
    qcrt_model *r = qcrt_model_from_ir(m, &err);
    CHECK_FATAL(r);
    qcrt_state *st = qcrt_state_new(r, TOKENS, TOKENS, &err);
    CHECK_FATAL(st);
    double *ref = kl_ref_log_probs(r, st, ids, SAMPLES, TOKENS, STRIDE);
    for (int i = 0; i < n; i++) {
        double want = kl_ref_replaced(r, st, p[i].block, p[i].kind, p[i].w, p[i].bias, ids, SAMPLES,
                                      TOKENS, STRIDE, ref);
        fprintf(stderr, "%s block %d %-9s noise %.2f: KL probe %.6e, direct %.6e\n", path,
                p[i].block, p[i].kind, p[i].scale, kl[i], want);
        if (p[i].scale == 0)
            CHECK_MSG(kl[i] == 0, "unperturbed: KL %g", kl[i]);
        else
            CHECK_MSG(want > 1e-6 && fabs(kl[i] - want) <= 1e-6 + 1e-3 * want,
                      "%s block %d %s: probe %.8e vs direct %.8e", path, p[i].block, p[i].kind,
                      kl[i], want);
        free(p[i].w);
        free(p[i].bias);
    }
    free(ref);
    qcrt_state_free(st);
    qcrt_model_free(r);
    qc_model_free(m);
}

static void test_misuse(void) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load("tests/data/tiny/llama", &err);
    CHECK_FATAL(m);
    int32_t ids[STRIDE] = {0};
    CHECK(qc_kl_probe_new(m, ids, STRIDE, 1, STRIDE + 1, &err) == NULL);
    CHECK(strstr(err.msg, "not a measurement") != NULL);
    ids[3] = m->cfg.vocab;
    CHECK(qc_kl_probe_new(m, ids, STRIDE, 1, TOKENS, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "embedding row") != NULL, "%s", err.msg);
    ids[3] = 1;
    qc_kl_probe *pr = qc_kl_probe_new(m, ids, STRIDE, 1, TOKENS, &err);
    CHECK_FATAL(pr);
    double kl[1];
    CHECK(qc_kl_probe_block(pr, 1, NULL, 0, &err) == -1);
    CHECK(strstr(err.msg, "out of order") != NULL);
    float w[1] = {0};
    qc_kl_perturb bad = {"x_proj", w, NULL};
    CHECK(qc_kl_probe_block(pr, 0, &bad, 1, &err) == -1);
    CHECK(strstr(err.msg, "no linear 'x_proj'") != NULL);
    CHECK(qc_kl_probe_finish(pr, kl, &err) == -1);
    CHECK(strstr(err.msg, "finished after") != NULL);
    qc_kl_probe_free(pr);
    qc_model_free(m);
}

int main(void) {
    test_model("tests/data/tiny/llama", 1);
    test_model("tests/data/tiny/qwen2", 0);
    test_model("tests/data/tiny/qwen3", 0);
    test_misuse();
    TEST_END();
}
