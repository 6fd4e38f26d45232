/* The rotate pass (passes/rotate.c): a rotated model computes the same
 * function. For every tiny model (safetensors llama/llama3/mistral/qwen2/
 * qwen3, GGUF llama/qwen2/qwen3 whose q/k rows are stored permuted) and the
 * demo model when present, the logits on real text (tests/data/tok_sample.txt
 * through the model's tokenizer) before and after rotate — with and without
 * the online down_proj Hadamard, two seeds — agree; norm weights are 1 after;
 * tied models are untied. Bad parameters fail without touching the model.
 *
 * Tolerance: rotation changes the f32 summation order of every product and
 * adds O(log n) roundings per transform; the function is the same. Measured
 * max |Δlogit| ≈ 1e-6·scale on the tiny models and ~2e-4 on the 30-layer
 * demo (logits up to ~30). We allow 2e-5·max(10, max|logit|) for tiny and
 * 1e-3·max(10, max|logit|) (0.03) for the demo — each far below what a
 * missed norm fold or a wrong side of a rotation gives (O(1) logit changes;
 * checked below by rotating without folding a norm). */
#include "compiler/hadamard.h"
#include "compiler/model.h"
#include "compiler/pass.h"
#include "compiler/recipe.h"
#include "compiler/tokenizer.h"
#include "runtime/forward.h"
#include "tests/check.h"
#include "tests/recipe_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int32_t *sample_ids(const qc_model *m, int max, int *n) {
    size_t len, n_ids = 0;
    qc_err err = {{0}};
    char *text = qc_read_file("tests/data/tok_sample.txt", 1 << 20, &len, &err);
    int32_t *ids = NULL;
    CHECK_FATAL(text);
    if (len > 2000) len = 2000;
    if (m->tok) {
        CHECK_FATAL(qc_tokenizer_encode(m->tok, text, len, 0, &ids, &n_ids, &err) == 0);
        for (size_t i = 0; i < n_ids; i++)
            ids[i] = ids[i] % m->cfg.vocab;
    } else { /* no tokenizer: the text's bytes */
        ids = malloc(len * sizeof *ids);
        for (size_t i = 0; i < len; i++)
            ids[i] = (unsigned char)text[i] % m->cfg.vocab;
        n_ids = len;
    }
    free(text);
    *n = (int)(n_ids < (size_t)max ? n_ids : (size_t)max);
    return ids;
}

static float *logits_of(const qc_model *m, const int32_t *ids, int n) {
    qc_err err = {{0}};
    qcrt_model *r = qcrt_model_from_ir(m, &err);
    CHECK_MSG(r, "%s", err.msg);
    if (!r) return NULL;
    qcrt_state *s = qcrt_state_new(r, n, n, &err);
    float *lg = malloc((size_t)n * (size_t)m->cfg.vocab * sizeof *lg);
    CHECK_FATAL(s && lg);
    CHECK_MSG(qcrt_forward(r, s, ids, n, lg, 1, &err) == 0, "%s", err.msg);
    qcrt_state_free(s);
    qcrt_model_free(r);
    return lg;
}

/* Runs the rotate pass with the given parameter text, e.g. "{ seed: 3 }". */
static int rotate(qc_model *m, const char *params, qc_err *err) {
    char y[512];
    snprintf(y, sizeof y, "quantc: 1\ncalibration: { text: x }\npasses:\n  - rotate: %s\n", params);
    qc_recipe *r = qc_recipe_parse(y, strlen(y), "test", NULL, err);
    if (!r) return -1;
    qc_pass_ctx ctx = {.recipe_pass = &r->passes[0]};
    int rc = r->passes[0].pass->run_model(&ctx, &r->passes[0].params, m, err);
    qc_recipe_free(r);
    return rc;
}

static double compare(const float *a, const float *b, size_t n, double *scale) {
    double md = 0, mx = 10;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(a[i]) > mx) mx = fabs(a[i]);
    }
    *scale = mx;
    return md;
}

static int all_ones(const qc_model *m, const char *name) {
    const qc_tensor *t = qc_model_find(m, name);
    float *v = malloc((size_t)t->shape[0] * sizeof *v);
    qc_err err = {{0}};
    int ok = v && qc_tensor_to_f32(t, v, &err) == 0;
    for (int64_t i = 0; ok && i < t->shape[0]; i++)
        ok = v[i] == 1.0f;
    free(v);
    return ok;
}

static void check_model(const char *path, int max_tokens, double tol) {
    const char *variants[] = {"{ seed: 0 }", "{ seed: 7, online: [down_proj] }"};
    for (int v = 0; v < 2; v++) {
        qc_err err = {{0}};
        qc_model *m = qc_model_load(path, &err);
        CHECK_MSG(m, "%s", err.msg);
        if (!m) return;
        int n;
        int32_t *ids = sample_ids(m, max_tokens, &n);
        int tied = m->cfg.tied_embeddings;
        float *ref = logits_of(m, ids, n);
        int ok = qc_hadamard_base_order(m->cfg.dim) &&
                 (v == 0 || qc_hadamard_base_order(m->cfg.ffn_dim));
        int rc = rotate(m, variants[v], &err);
        CHECK_MSG(rc == 0, "%s %s: %s", path, variants[v], err.msg);
        if (rc == 0 && ok) {
            float *got = logits_of(m, ids, n);
            double scale, md = compare(ref, got, (size_t)n * (size_t)m->cfg.vocab, &scale);
            fprintf(stderr, "%s %s: %d tokens, max |Δlogit| %.3g (scale %.3g)%s\n", path,
                    variants[v], n, md, scale, tied ? ", untied" : "");
            CHECK_MSG(md <= tol * scale, "%s %s: max |Δlogit| %g > %g", path, variants[v], md,
                      tol * scale);
            CHECK(m->cfg.tied_embeddings == 0);
            CHECK(qc_model_find(m, "lm_head.weight") != NULL);
            CHECK(all_ones(m, "model.norm.weight"));
            CHECK(all_ones(m, "model.layers.0.input_layernorm.weight"));
            CHECK(all_ones(m, "model.layers.0.post_attention_layernorm.weight"));
            CHECK((qc_model_online_hadamard(m, "model.layers.0.mlp.down_proj.weight") > 0) == v);
            free(got);
        }
        free(ref);
        free(ids);
        qc_model_free(m);
    }
}

/* A wrong rotation must show: scaling one norm (not folding it) changes
 * the logits by far more than the tolerance. */
static void check_sensitivity(const char *path) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    int n;
    int32_t *ids = sample_ids(m, 32, &n);
    float *ref = logits_of(m, ids, n);
    CHECK_FATAL(rotate(m, "{ seed: 1 }", &err) == 0);
    float *g = malloc((size_t)m->cfg.dim * sizeof *g);
    for (int i = 0; i < m->cfg.dim; i++)
        g[i] = i % 2 ? 1.0f : 1.5f;
    CHECK_FATAL(
        qc_model_set_f32(m, "model.layers.0.input_layernorm.weight", m->cfg.dim, 0, g, &err) == 0);
    float *got = logits_of(m, ids, n);
    double scale, md = compare(ref, got, (size_t)n * (size_t)m->cfg.vocab, &scale);
    CHECK_MSG(md > 1e-2 * scale, "an unfolded norm went unnoticed (%g)", md);
    free(ref), free(got), free(ids);
    qc_model_free(m);
}

static void check_bad(const char *path) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    const qc_tensor *t = qc_model_find(m, "model.embed_tokens.weight");
    const void *before = t->data;
    CHECK(rotate(m, "{ online: [gate_proj] }", &err) == -1);
    CHECK(strstr(err.msg, "gate_proj") != NULL);
    CHECK(qc_model_find(m, "model.embed_tokens.weight")->data == before);
    CHECK(rotate(m, "{ targets: [\"*.mlp.*\"] }", &err) == -1);
    CHECK(strstr(err.msg, "targets/ignore do not apply") != NULL);
    /* An unsupported hidden size fails before any weight changes. */
    m->cfg.dim = 86; /* 2·43: no Hadamard base */
    CHECK(rotate(m, "{ seed: 0 }", &err) == -1);
    CHECK(strstr(err.msg, "no Hadamard matrix of order 86") != NULL);
    CHECK(qc_model_find(m, "model.embed_tokens.weight")->data == before);
    qc_model_free(m);
}

static const char *demo_path(void) {
    static char home[512];
    const char *env = getenv("QC_DEMO_MODEL");
    if (env && *env) return env;
    snprintf(home, sizeof home, "%s/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf",
             getenv("HOME") ? getenv("HOME") : "");
    return home;
}


int main(void) {
    const char *const rq[] = {"rotate", "quantize"};
    check_recipe("recipes/rotate-w4a16-g128.yaml", rq, 2, 4);
    check_recipe("recipes/rotate-w3a16-g128.yaml", rq, 2, 3);
    check_recipe("recipes/rotate-w2a16-g64.yaml", rq, 2, 2);
    const char *tiny[] = {"tests/data/tiny/llama",           "tests/data/tiny/llama3_sharded",
                          "tests/data/tiny/mistral",         "tests/data/tiny/qwen2",
                          "tests/data/tiny/qwen3",           "tests/data/gguf_tiny_llama.gguf",
                          "tests/data/gguf_tiny_qwen2.gguf", "tests/data/gguf_tiny_qwen3.gguf"};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        check_model(tiny[i], 64, 2e-5);
    check_sensitivity("tests/data/tiny/llama");
    check_bad("tests/data/tiny/qwen2");
    struct stat st;
    if (stat(demo_path(), &st) == 0)
        check_model(demo_path(), 48, 1e-3);
    else
        fprintf(stderr, "demo model not found (%s): skipping its check\n", demo_path());
    TEST_END();
}
