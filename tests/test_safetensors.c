/* safetensors reader and HF directory loader: the tiny models load with the
 * config and tensor values the generator recorded in expected.json, and
 * malformed files fail with one line naming the file. */
#include "compiler/hf_config.h"
#include "compiler/model.h"
#include "compiler/safetensors.h"

#include "check.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *models[] = {"llama", "llama3_sharded", "mistral", "qwen2", "qwen3"};

static int jint(json_t *o, const char *k) {
    return (int)json_integer_value(json_object_get(o, k));
}

static void check_model(const char *name) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "tests/data/tiny/%s", name);
    snprintf(path, sizeof path, "%s/expected.json", dir);
    json_error_t je;
    json_t *exp = json_load_file(path, 0, &je);
    CHECK_FATAL(exp);
    qc_err err = {{0}};
    qc_model *m = qc_model_load(dir, &err);
    CHECK_MSG(m, "%s: %s", name, err.msg);
    if (!m) {
        json_decref(exp);
        return;
    }
    json_t *c = json_object_get(exp, "config");
    const qc_config *g = &m->cfg;
    CHECK(g->n_layers == jint(c, "n_layers") && g->dim == jint(c, "dim"));
    CHECK(g->n_heads == jint(c, "n_heads") && g->n_kv_heads == jint(c, "n_kv_heads"));
    CHECK_MSG(g->head_dim == jint(c, "head_dim"), "%s head_dim %d", name, g->head_dim);
    CHECK(g->ffn_dim == jint(c, "ffn_dim") && g->vocab == jint(c, "vocab"));
    CHECK(g->max_pos == jint(c, "max_pos"));
    CHECK(g->tied_embeddings == jint(c, "tied") && g->qk_norm == jint(c, "qk_norm"));
    CHECK(g->attn_bias == jint(c, "attn_bias"));
    CHECK(g->bos_id == jint(c, "bos_id") && g->eos_id == jint(c, "eos_id"));
    CHECK(fabsf(g->rope_theta - (float)json_number_value(json_object_get(c, "rope_theta"))) <
          1e-3f * g->rope_theta);
    CHECK(g->norm_eps == (float)json_number_value(json_object_get(c, "norm_eps")));
    CHECK(strcmp(g->arch_name, json_string_value(json_object_get(c, "arch_name"))) == 0);
    int llama3 = strcmp(json_string_value(json_object_get(c, "rope_scaling")), "llama3") == 0;
    CHECK(g->rope_scaling == (llama3 ? QC_ROPE_LLAMA3 : QC_ROPE_NONE));
    if (llama3)
        CHECK(g->rope_factor == 8.0f && g->rope_low_freq_factor == 1.0f &&
              g->rope_high_freq_factor == 4.0f && g->rope_orig_max_pos == 64);
    CHECK(m->n_files == jint(c, "n_files"));
    /* llama and qwen3 carry a byte-level tokenizer.json (for compile tests). */
    CHECK(strcmp(m->format, "safetensors") == 0);
    CHECK((m->tok != NULL) == (!strcmp(name, "llama") || !strcmp(name, "qwen3")));

    json_t *ts = json_object_get(exp, "tensors");
    CHECK_MSG((int)json_object_size(ts) == m->n_tensors, "%s: %d tensors", name, m->n_tensors);
    const char *tn;
    json_t *te;
    json_object_foreach(ts, tn, te) {
        const qc_tensor *t = qc_model_find(m, tn);
        CHECK_MSG(t, "%s: missing %s", name, tn);
        if (!t) continue;
        json_t *shape = json_object_get(te, "shape");
        int nd = (int)json_array_size(shape);
        CHECK(t->n_dims == nd);
        CHECK(t->shape[0] == json_integer_value(json_array_get(shape, 0)));
        CHECK(t->shape[1] == (nd == 2 ? json_integer_value(json_array_get(shape, 1)) : 1));
        int64_t n = qc_tensor_numel(t);
        float *v = malloc((size_t)n * sizeof *v);
        CHECK_FATAL(v);
        CHECK(qc_tensor_to_f32(t, v, &err) == 0);
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += v[i];
        /* numpy sums float32 pairwise in float32: allow a few ulps of the
         * magnitude sum. */
        double want = json_number_value(json_object_get(te, "sum"));
        double tol = 1e-5 * json_number_value(json_object_get(te, "abs_sum")) + 1e-6;
        CHECK_MSG(fabs(sum - want) <= tol, "%s %s: sum %.9g, want %.9g", name, tn, sum, want);
        json_t *first = json_object_get(te, "first");
        for (size_t i = 0; i < json_array_size(first); i++)
            CHECK_MSG(v[i] == (float)json_number_value(json_array_get(first, i)),
                      "%s %s[%zu] = %.9g", name, tn, i, v[i]);
        free(v);
    }
    qc_model_free(m);
    json_decref(exp);
}

/* Builds a safetensors file image: 8-byte length, header, data. */
static uint8_t *st_image(const char *header, size_t data_bytes, size_t *size) {
    size_t hl = strlen(header);
    *size = 8 + hl + data_bytes;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_bytes; i++)
        b[8 + hl + i] = (uint8_t)(i * 7);
    return b;
}

/* Expects parsing to fail with a one-line message naming the file and
 * containing `want`. */
static void expect_fail(const char *what, const uint8_t *img, size_t size, const char *want) {
    qc_err err = {{0}};
    qc_safetensors *st = qc_safetensors_parse("bad.safetensors", img, size, &err);
    CHECK_MSG(!st, "%s: parsed", what);
    qc_safetensors_free(st);
    CHECK_MSG(strncmp(err.msg, "bad.safetensors: ", 17) == 0, "%s: '%s'", what, err.msg);
    CHECK_MSG(!strchr(err.msg, '\n'), "%s: multi-line '%s'", what, err.msg);
    CHECK_MSG(strstr(err.msg, want), "%s: '%s' lacks '%s'", what, err.msg, want);
}

static void expect_header_fail(const char *what, const char *header, size_t data,
                               const char *want) {
    size_t size;
    uint8_t *img = st_image(header, data, &size);
    expect_fail(what, img, size, want);
    free(img);
}

static void test_parser(void) {
    size_t size;
    uint8_t *img = st_image("{\"__metadata__\":{\"format\":\"pt\"},"
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                            "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                            "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[32,34]},"
                            "\"z\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[34,34]}}  ",
                            34, &size);
    qc_err err = {{0}};
    qc_safetensors *st = qc_safetensors_parse("ok.safetensors", img, size, &err);
    CHECK_MSG(st, "%s", err.msg);
    if (st) {
        CHECK(st->n_tensors == 4);
        const qc_st_tensor *a = qc_safetensors_find(st, "a");
        CHECK(a && a->dtype == QC_DT_F32 && a->n_dims == 2 && a->shape[1] == 3 && a->nbytes == 24 &&
              a->offset == st->data_start);
        const qc_st_tensor *b = qc_safetensors_find(st, "b");
        CHECK(b && b->dtype == QC_DT_BF16 && b->offset == st->data_start + 24 &&
              b->data == img + st->data_start + 24);
        const qc_st_tensor *s = qc_safetensors_find(st, "s");
        CHECK(s && s->n_dims == 0 && s->nbytes == 2);
        CHECK(!qc_safetensors_find(st, "__metadata__"));
    }
    qc_safetensors_free(st);
    expect_fail("truncated length", img, 5, "too short");
    expect_fail("truncated data", img, size - 1, "past the data area");
    img[0] = 0xff, img[1] = 0xff;
    expect_fail("header length past EOF", img, size, "past the end of the file");
    memset(img, 0xff, 8);
    expect_fail("huge header length", img, size, "over the 100000000-byte limit");
    free(img);

    expect_header_fail("invalid JSON", "{\"a\": {\"dtype\": \"F32\",, }}", 0, "header byte 23");
    expect_header_fail("not an object", "[1, 2]", 0, "not a JSON object");
    expect_header_fail("unknown dtype",
                       "{\"w\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                       "tensor 'w': dtype 'I8' is not supported");
    expect_header_fail("size mismatch",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16,
                       "tensor 'w': F32 shape needs 16 bytes but data_offsets [0, 12] hold 12");
    expect_header_fail("offset past data",
                       "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[8,16]}}", 12,
                       "tensor 'w': data_offsets [8, 16] end past the data area");
    expect_header_fail("begin after end",
                       "{\"w\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12,
                       "bad data_offsets [8, 4]");
    expect_header_fail("negative offset",
                       "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[-4,0]}}", 12,
                       "bad data_offsets");
    expect_header_fail("negative shape",
                       "{\"w\":{\"dtype\":\"F16\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 12,
                       "shape[0] is not a non-negative integer");
    expect_header_fail(
        "huge shape",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
        "element count overflows");
    expect_header_fail(
        "huge bytes",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
        "byte size overflows");
    expect_header_fail("float shape",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                       "shape[0]");
    expect_header_fail("missing offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                       "'data_offsets' must be");
    expect_header_fail("entry not object", "{\"w\":3}", 0, "not a JSON object");
    expect_header_fail("bad metadata", "{\"__metadata__\":{\"format\":1}}", 0, "__metadata__");
    expect_header_fail("duplicate",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                       4, "duplicate");
}

/* --- directory-level failures, built in a temporary directory ------------- */

static char tmpdir[64];

static void write_file(const char *name, const void *data, size_t n) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    CHECK_FATAL(f);
    CHECK_FATAL(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static void write_text(const char *name, const char *s) {
    write_file(name, s, strlen(s));
}

static void copy_from(const char *model, const char *name, const char *as) {
    char p[256];
    snprintf(p, sizeof p, "tests/data/tiny/%s/%s", model, name);
    size_t n;
    qc_err err;
    char *b = qc_read_file(p, 64u << 20, &n, &err);
    CHECK_FATAL(b);
    write_file(as ? as : name, b, n);
    free(b);
}

static void remove_file(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    unlink(p);
}

static void expect_load_fail(const char *what, const char *file, const char *want) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(tmpdir, &err);
    CHECK_MSG(!m, "%s: loaded", what);
    qc_model_free(m);
    CHECK_MSG(strstr(err.msg, file), "%s: '%s' does not name %s", what, err.msg, file);
    CHECK_MSG(strstr(err.msg, want), "%s: '%s' lacks '%s'", what, err.msg, want);
    CHECK_MSG(!strchr(err.msg, '\n'), "%s: multi-line '%s'", what, err.msg);
}

static void test_directory(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qc_test_st_XXXXXX");
    CHECK_FATAL(mkdtemp(tmpdir));
    expect_load_fail("empty dir", "config.json", "config.json");
    copy_from("llama", "config.json", NULL);
    expect_load_fail("no weights", tmpdir, "no model.safetensors");
    copy_from("llama", "model.safetensors", NULL);
    qc_err err = {{0}};
    qc_model *m = qc_model_load(tmpdir, &err);
    CHECK_MSG(m, "%s", err.msg);
    qc_model_free(m);

    /* A tokenizer.json that exists must load; a broken one fails the load. */
    write_text("tokenizer.json", "{\"model\": ");
    expect_load_fail("broken tokenizer", "tokenizer.json", "tokenizer.json");
    remove_file("tokenizer.json");

    /* Untied config over weights without lm_head: missing tensor. */
    copy_from("qwen2", "config.json", NULL);
    expect_load_fail("missing lm_head", "lm_head.weight", "missing tensor");
    remove_file("model.safetensors");

    /* Sharded: missing shard, '..' in a shard name, tensor not in its shard. */
    copy_from("llama3_sharded", "config.json", NULL);
    copy_from("llama3_sharded", "model.safetensors.index.json", NULL);
    copy_from("llama3_sharded", "model-00001-of-00002.safetensors", NULL);
    expect_load_fail("missing shard", "model-00002-of-00002.safetensors", "No such file");
    copy_from("llama3_sharded", "model-00002-of-00002.safetensors", NULL);
    m = qc_model_load(tmpdir, &err);
    CHECK_MSG(m && m->n_files == 2, "%s", err.msg);
    qc_model_free(m);
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}");
    expect_load_fail("dotdot shard", "model.safetensors.index.json", "not a file name");
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"/etc/passwd\"}}");
    expect_load_fail("absolute shard", "model.safetensors.index.json", "not a file name");
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"model.nope.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_load_fail("missing tensor", "model.safetensors.index.json",
                     "tensor 'model.nope.weight' is listed in shard");
    write_text("model.safetensors.index.json", "{\"weight_map\": [1]}");
    expect_load_fail("bad weight_map", "model.safetensors.index.json", "weight_map");
    write_text("model.safetensors.index.json", "{\"weight_map\": \n {,}}");
    expect_load_fail("bad index JSON", "model.safetensors.index.json", "line 2, column");
    /* The same tensor in two shards. */
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
               "\"b\": \"copy.safetensors\"}}");
    copy_from("llama3_sharded", "model-00001-of-00002.safetensors", "copy.safetensors");
    expect_load_fail("duplicate across shards", "copy.safetensors", "also appears");
    remove_file("copy.safetensors");
    remove_file("model-00001-of-00002.safetensors");
    remove_file("model-00002-of-00002.safetensors");
    remove_file("model.safetensors.index.json");

    /* Rank-3 tensor, and a truncated weights file. */
    copy_from("llama", "config.json", NULL);
    size_t size;
    uint8_t *img = st_image(
        "{\"model.x\":{\"dtype\":\"F32\",\"shape\":[1,2,2],\"data_offsets\":[0,16]}}", 16, &size);
    write_file("model.safetensors", img, size);
    free(img);
    expect_load_fail("rank 3", "model.safetensors", "3 dimensions");
    copy_from("llama", "model.safetensors", NULL);
    char p[256];
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    CHECK(truncate(p, 3000) == 0);
    expect_load_fail("truncated", "model.safetensors", "past the data area");
    CHECK(truncate(p, 4) == 0);
    expect_load_fail("truncated header", "model.safetensors", "too short");
    remove_file("model.safetensors");
    remove_file("config.json");
    rmdir(tmpdir);
}

int main(void) {
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        check_model(models[i]);
    test_parser();
    test_directory();
    TEST_END();
}
