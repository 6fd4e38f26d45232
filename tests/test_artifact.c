/* The artifact container (runtime/artifact.h, codegen/artifact_write.h) and
 * the model <-> artifact mapping (compiler/artifact_model.h):
 *  - a container with every section kind round-trips, uncompressed and zstd,
 *    with the documented alignment; writing twice gives identical bytes;
 *  - every single-byte change anywhere in a small artifact (header, each
 *    section, padding, table) is detected, with a message naming the header,
 *    the table or the section (index and name) it hit; every truncation and
 *    an appended byte are detected; wrong magic and version say so;
 *  - codes pack/unpack for every bit width on odd shapes;
 *  - the tiny llama with quantized linears (incl. act-order perm/g_idx,
 *    sparse outliers, low-rank factors, an online Hadamard) round-trips
 *    exactly: config, tensors, codes, scales, zeros, CSR, factors, tokenizer;
 *  - GGUF sources round-trip to the same floats and token ids;
 *  - manifests that disagree with their sections are refused with a message.
 * `test_artifact --seeds DIR` writes the fuzz seeds of tests/fuzz/corpus/artifact.
 * Exact comparisons throughout: nothing here is approximate. */
#include "codegen/artifact_write.h"
#include "compiler/artifact_model.h"
#include "compiler/quant.h"
#include "compiler/tokenizer.h"
#include "runtime/artifact.h"

#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static char tmpdir[64];

static void path_in(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    CHECK_FATAL(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    CHECK_FATAL(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* Section payloads of the container test: a compressible tensor, an
 * incompressible one, a tiny one, a manifest, a tokenizer, kernels. */
#define N_SEC 6
static uint8_t payload_big[10000], payload_rand[5000], payload_small[3] = {1, 2, 3};
static const char manifest_text[] = "{\"format\": \"test\"}";
static const char tok_text[] = "tokenizer bytes";
static const uint8_t kernel_blob[] = {0x7f, 'E', 'L', 'F', 0, 1, 2};

static const struct {
    qcrt_section_kind kind;
    const char *name, *target;
    const void *data;
    size_t size;
} secs[N_SEC] = {
    {QCRT_SEC_MANIFEST, "manifest.json", NULL, manifest_text, sizeof manifest_text - 1},
    {QCRT_SEC_TOKENIZER, "tokenizer.json", NULL, tok_text, sizeof tok_text - 1},
    {QCRT_SEC_TENSOR, "model.layers.0.mlp.up_proj.qweight", NULL, payload_big, sizeof payload_big},
    {QCRT_SEC_TENSOR, "rand", NULL, payload_rand, sizeof payload_rand},
    {QCRT_SEC_TENSOR, "small", NULL, payload_small, sizeof payload_small},
    {QCRT_SEC_KERNELS, "k0", "cpu:x86-64-v3", kernel_blob, sizeof kernel_blob},
};

static int write_container(const char *path, qcrt_compression comp) {
    qc_err err = {{0}};
    qc_artifact_compress c = {comp, 3};
    qc_artifact_writer *w = qc_artifact_writer_new(path, &c, &err);
    CHECK_MSG(w, "%s", err.msg);
    if (!w) return -1;
    int rc = 0;
    for (int i = 0; i < N_SEC && rc == 0; i++)
        rc = qc_artifact_writer_add(w, secs[i].kind, secs[i].name, secs[i].target, secs[i].data,
                                    secs[i].size, &err);
    if (rc == 0) rc = qc_artifact_writer_finish(w, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    qc_artifact_writer_free(w);
    return rc;
}

static void test_round_trip(qcrt_compression comp) {
    char path[128];
    path_in(path, sizeof path, comp ? "c_zstd.qc" : "c_none.qc");
    if (write_container(path, comp)) return;
    qc_err err = {{0}};
    qcrt_artifact *a = qcrt_artifact_open(path, &err);
    CHECK_MSG(a, "%s", err.msg);
    if (!a) return;
    CHECK(a->n_sections == N_SEC && a->version == 1);
    for (int i = 0; i < N_SEC && i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        CHECK(s->kind == secs[i].kind && !strcmp(s->name, secs[i].name));
        CHECK(!strcmp(s->target, secs[i].target ? secs[i].target : ""));
        CHECK(s->raw_size == secs[i].size && s->offset % 64 == 0);
        if (s->kind == QCRT_SEC_TENSOR && s->compression == QCRT_COMP_NONE &&
            s->stored_size >= 4096)
            CHECK(s->offset % 4096 == 0);
        void *owned;
        const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, &err);
        CHECK_MSG(d && !memcmp(d, secs[i].data, secs[i].size), "section %d: %s", i, err.msg);
        free(owned);
        CHECK(qcrt_artifact_find(a, secs[i].kind, secs[i].name) == s);
    }
    /* zstd shrinks the repetitive tensor; sections it cannot shrink stay raw. */
    if (comp == QCRT_COMP_ZSTD) {
        CHECK(a->sections[2].compression == QCRT_COMP_ZSTD && a->sections[2].stored_size < 1000);
        CHECK(a->sections[3].compression == QCRT_COMP_NONE); /* incompressible */
        CHECK(a->sections[4].compression == QCRT_COMP_NONE);
        CHECK(a->sections[5].compression == QCRT_COMP_NONE);
    } else {
        for (int i = 0; i < a->n_sections; i++)
            CHECK(a->sections[i].compression == QCRT_COMP_NONE);
    }
    qcrt_artifact_free(a);

    /* Determinism: the same sections give the same bytes. */
    char again[128];
    path_in(again, sizeof again, "again.qc");
    if (write_container(again, comp) == 0) {
        size_t n1, n2;
        uint8_t *b1 = slurp(path, &n1), *b2 = slurp(again, &n2);
        CHECK(n1 == n2 && !memcmp(b1, b2, n1));
        free(b1);
        free(b2);
    }
    unlink(again);
}

/* What a change at byte p must be reported as. */
static void expect_named(const qcrt_artifact *ok, const char *msg, size_t p, size_t size) {
    uint64_t table_off = qcrt_le64(ok->data + 24);
    char want[256];
    if (p < 8)
        snprintf(want, sizeof want, "bad magic");
    else if (p < 12)
        snprintf(want, sizeof want, "unsupported format version");
    else if (p < 64)
        snprintf(want, sizeof want, "header");
    else if (p >= table_off)
        snprintf(want, sizeof want, "section table");
    else {
        snprintf(want, sizeof want, "padding");
        for (int i = 0; i < ok->n_sections; i++) {
            const qcrt_section *s = &ok->sections[i];
            if (p >= s->offset && p < s->offset + s->stored_size)
                snprintf(want, sizeof want, "section %d '%s' (%s): checksum mismatch", i, s->name,
                         qcrt_section_kind_name(s->kind));
        }
    }
    CHECK_MSG(strstr(msg, want), "byte %zu of %zu: '%s' does not say '%s'", p, size, msg, want);
}

/* Every byte changed, one at a time; every shorter length; one extra byte. */
static void test_damage(qcrt_compression comp) {
    char path[128];
    path_in(path, sizeof path, comp ? "c_zstd.qc" : "c_none.qc");
    size_t size;
    uint8_t *orig = slurp(path, &size), *buf = malloc(size + 1);
    CHECK_FATAL(buf);
    qc_err err = {{0}};
    qcrt_artifact *ok = qcrt_artifact_parse(orig, size, "m.qc", &err);
    CHECK_FATAL(ok);
    int undetected = 0;
    for (size_t p = 0; p < size; p++) {
        memcpy(buf, orig, size);
        buf[p] ^= 0xff;
        qcrt_artifact *a = qcrt_artifact_parse(buf, size, "m.qc", &err);
        if (a) {
            undetected++;
            qcrt_artifact_free(a);
            continue;
        }
        CHECK(!strncmp(err.msg, "m.qc: ", 6));
        expect_named(ok, err.msg, p, size);
    }
    CHECK_MSG(undetected == 0, "%d of %zu byte changes went undetected", undetected, size);
    for (size_t n = 0; n < size; n++) {
        qcrt_artifact *a = qcrt_artifact_parse(orig, n, "m.qc", &err);
        CHECK_MSG(!a && (strstr(err.msg, "truncated") || (n < 8 && strstr(err.msg, "bad magic"))),
                  "length %zu: %s", n, a ? "accepted" : err.msg);
        qcrt_artifact_free(a);
    }
    uint64_t table_off = qcrt_le64(orig + 24);
    qcrt_artifact_parse(orig, table_off + 10, "m.qc", &err);
    char want[128];
    snprintf(want, sizeof want, "truncated: section table ends at byte %llu past end of file",
             (unsigned long long)size);
    CHECK_MSG(strstr(err.msg, want), "%s", err.msg);
    memcpy(buf, orig, size);
    buf[size] = 0;
    CHECK(!qcrt_artifact_parse(buf, size + 1, "m.qc", &err) && strstr(err.msg, "appended"));
    printf("%s: %zu bytes: all %zu single-byte changes and %zu truncations detected\n",
           qcrt_compression_name(comp), size, size, size);
    qcrt_artifact_free(ok);
    free(orig);
    free(buf);
}

/* Re-seals table and header checksums after an edit, as a crafted file would. */
static void reseal(uint8_t *b) {
    uint64_t off = qcrt_le64(b + 24), len = qcrt_le64(b + 32);
    qcrt_put64(b + 48, XXH3_64bits(b + off, (size_t)len));
    qcrt_put64(b + 56, XXH3_64bits(b, 56));
}

static void test_crafted(void) {
    char path[128];
    path_in(path, sizeof path, "c_zstd.qc");
    size_t size;
    uint8_t *b = slurp(path, &size);
    qc_err err = {{0}};
    /* A future version: the message names both versions. */
    qcrt_put32(b + 8, 3);
    reseal(b);
    CHECK(!qcrt_artifact_parse(b, size, "m.qc", &err));
    CHECK_MSG(!strcmp(err.msg, "m.qc: unsupported format version 3 (this quantc reads 1)"), "%s",
              err.msg);
    qcrt_put32(b + 8, 1);
    memcpy(b, "GGUF", 4);
    CHECK(!qcrt_artifact_parse(b, size, "m.qc", &err) && strstr(err.msg, "not a quantc artifact"));
    memcpy(b, QCRT_ARTIFACT_MAGIC, 8);
    reseal(b);
    qcrt_artifact *a = qcrt_artifact_parse(b, size, "m.qc", &err);
    CHECK_FATAL(a);
    uint64_t e2 = qcrt_le64(b + 24) + 2 * QCRT_ARTIFACT_ENTRY_SIZE; /* the zstd tensor */
    qcrt_artifact_free(a);
    struct {
        int field;
        uint64_t value;
        const char *want;
    } cases[] = {
        {24, 10001,
         "not one zstd frame of 10001 bytes"},   /* raw size: one byte more than the frame holds */
        {24, (uint64_t)1 << 39, "does not fit"}, /* an absurd expansion, refused on open */
        {0, 9, "unknown kind"},
        {4, 2, "unknown compression"},
        {8, 64 * 80 + 1, "aligned"},
        {16, (uint64_t)-1, "aligned"}, /* stored size past the table */
        {44, 100000, "bad name"},
        {56, 1, "reserved"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = malloc(size);
        memcpy(c, b, size);
        if (cases[i].field == 0 || cases[i].field == 4 || cases[i].field == 44)
            qcrt_put32(c + e2 + cases[i].field, (uint32_t)cases[i].value);
        else
            qcrt_put64(c + e2 + cases[i].field, cases[i].value);
        reseal(c);
        a = qcrt_artifact_parse(c, size, "m.qc", &err);
        if (a) {
            void *owned = NULL;
            const uint8_t *d = qcrt_artifact_section_data(a, &a->sections[2], &owned, &err);
            CHECK(!d);
            free(owned);
            qcrt_artifact_free(a);
        }
        CHECK_MSG(strstr(err.msg, cases[i].want), "case %zu: '%s' lacks '%s'", i, err.msg,
                  cases[i].want);
        free(c);
    }
    free(b);
}

static void test_writer_refusals(void) {
    char path[128], tmp[160];
    path_in(path, sizeof path, "notours.txt");
    FILE *f = fopen(path, "w");
    fputs("keep me", f);
    fclose(f);
    qc_err err = {{0}};
    CHECK(!qc_artifact_writer_new(path, NULL, &err) && strstr(err.msg, "not a quantc artifact"));
    /* An abandoned writer leaves neither the destination nor its temp file. */
    path_in(path, sizeof path, "abandoned.qc");
    qc_artifact_writer *w = qc_artifact_writer_new(path, NULL, &err);
    CHECK_FATAL(w);
    CHECK(qc_artifact_writer_add(w, QCRT_SEC_TENSOR, "t", NULL, "x", 1, &err) == 0);
    CHECK(qc_artifact_writer_add(w, QCRT_SEC_TENSOR, "t", NULL, "x", 1, &err) != 0);
    CHECK(qc_artifact_writer_add(w, QCRT_SEC_KERNELS, "k", NULL, "x", 1, &err) != 0);
    qc_artifact_writer_free(w);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0);
    qc_artifact_compress bad = {QCRT_COMP_ZSTD, 99};
    CHECK(!qc_artifact_writer_new(path, &bad, &err) && strstr(err.msg, "level"));
}

static void test_pack(void) {
    for (int bits = 2; bits <= 8; bits++) {
        int64_t rows = 3, cols = 37;
        uint8_t codes[3 * 37], back[3 * 37], packed[3 * 37];
        for (int i = 0; i < rows * cols; i++)
            codes[i] = (uint8_t)((i * 7 + bits) % (1 << bits));
        qc_artifact_pack_codes(codes, rows, cols, bits, packed);
        qc_artifact_unpack_codes(packed, rows, cols, bits, back);
        CHECK_MSG(!memcmp(codes, back, sizeof codes), "bits %d", bits);
        CHECK(qc_artifact_row_bytes(cols, bits) == (cols * bits + 7) / 8);
    }
    /* The documented layout: LSB first, rows byte-aligned. */
    uint8_t c[4] = {1, 2, 3, 0}, p[2];
    qc_artifact_pack_codes(c, 2, 2, 3, p);
    CHECK(p[0] == (1 | 2 << 3) && p[1] == 3);
}

/* Quantizes some linears of the tiny llama (RTN 4-bit g32 asymmetric, one
 * symmetric 3-bit per-channel, one with a fake act-order perm/g_idx). */
static qc_model *tiny_quantized(void) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load("tests/data/tiny/llama", &err);
    CHECK_MSG(m, "%s", err.msg);
    if (!m) return NULL;
    const char *names[] = {"model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.mlp.down_proj.weight",
                           "model.layers.1.mlp.up_proj.weight"};
    qc_quant_format fmts[] = {{4, 32, 0}, {3, 0, 1}, {4, 32, 0}};
    for (int i = 0; i < 3; i++) {
        const qc_tensor *t = qc_model_find(m, names[i]);
        CHECK_FATAL(t);
        float *w = malloc((size_t)qc_tensor_numel(t) * 4);
        CHECK_FATAL(w && qc_tensor_to_f32(t, w, &err) == 0);
        qc_quant_state *q = qc_quant_state_new(&fmts[i], t->shape[0], t->shape[1], &err);
        qc_clip_search clip = {0, 1, 1};
        CHECK_FATAL(q);
        if (i == 1) { /* sparse outliers and low-rank factors */
            uint8_t *mask = calloc((size_t)(q->rows * q->cols), 1);
            for (int64_t k = 0; k < q->rows * q->cols; k += 37)
                mask[k] = 1;
            CHECK_FATAL(qc_quant_set_outliers(q, mask, w, &err) == 0);
            free(mask);
        }
        CHECK_FATAL(qc_quant_rtn(w, NULL, &clip, q, NULL, &err) == 0);
        if (i == 1) {
            float a[64 * 2], b[2 * 128];
            for (int k = 0; k < 64 * 2; k++)
                a[k] = 0.01f * (float)(k % 7 - 3);
            for (int k = 0; k < 2 * 128; k++)
                b[k] = 0.02f * (float)(k % 5 - 2);
            CHECK_FATAL(q->rows == 64 && q->cols == 128);
            CHECK_FATAL(qc_quant_set_lowrank(q, 2, a, b, &err) == 0);
        }
        if (i == 2) {
            q->perm = malloc((size_t)q->cols * 4);
            for (int64_t c = 0; c < q->cols; c++) {
                q->perm[c] = (int32_t)(q->cols - 1 - c);
                q->g_idx[c] = (int32_t)((q->cols - 1 - c) / 32);
            }
        }
        free(w);
        CHECK_FATAL(qc_model_add_quant(m, strdup(names[i]), q, &err) == 0);
    }
    CHECK_FATAL(qc_model_set_online_hadamard(m, "model.layers.0.mlp.down_proj.weight", 128, &err) ==
                0);
    return m;
}

static void same_state(const qc_quant_state *a, const qc_quant_state *b) {
    CHECK(a->fmt.bits == b->fmt.bits && a->fmt.group_size == b->fmt.group_size &&
          a->fmt.symmetric == b->fmt.symmetric);
    CHECK(a->rows == b->rows && a->cols == b->cols && a->n_groups == b->n_groups);
    size_t cells = (size_t)(a->rows * a->cols), groups = (size_t)(a->rows * a->n_groups);
    CHECK(!memcmp(a->codes, b->codes, cells));
    /* Packed (qcpack1) layers come back with the packer's column order as
     * perm (GPTQ's processing order is not kept) and may number groups in
     * packed order; what must survive exactly is the dequantized weight. */
    float *wa = malloc(cells * 4), *wb = malloc(cells * 4);
    CHECK_FATAL(wa && wb);
    qc_quant_dequantize(a, wa);
    qc_quant_dequantize(b, wb);
    CHECK(!memcmp(wa, wb, cells * 4));
    free(wa);
    free(wb);
    if (!a->perm) {
        CHECK(!memcmp(a->scales, b->scales, groups * 4) &&
              !memcmp(a->zeros, b->zeros, groups * 4));
        CHECK(!memcmp(a->g_idx, b->g_idx, (size_t)a->cols * 4));
    }
    CHECK(a->nnz == b->nnz && a->rank == b->rank);
    if (a->nnz == b->nnz && a->nnz > 0)
        CHECK(!memcmp(a->row_ptr, b->row_ptr, (size_t)(a->rows + 1) * 4) &&
              !memcmp(a->col, b->col, (size_t)a->nnz * 4) &&
              !memcmp(a->val, b->val, (size_t)a->nnz * 2));
    if (a->rank == b->rank && a->rank > 0)
        CHECK(!memcmp(a->lr_a, b->lr_a, (size_t)(a->rows * a->rank) * 2) &&
              !memcmp(a->lr_b, b->lr_b, (size_t)(a->rank * a->cols) * 2));
}

static void test_model(qcrt_compression comp) {
    qc_model *m = tiny_quantized();
    if (!m) return;
    char path[128], path2[128];
    path_in(path, sizeof path, "tiny.qc");
    path_in(path2, sizeof path2, "tiny2.qc");
    qc_err err = {{0}};
    qc_artifact_model_opts o = {.compress = {comp, 5}};
    qc_artifact_stats st;
    CHECK_MSG(qc_artifact_write_model(m, path, &o, &st, &err) == 0, "%s", err.msg);
    qc_model *r = qc_model_load(path, &err);
    CHECK_MSG(r, "%s", err.msg);
    if (r) {
        CHECK(!strcmp(r->format, "artifact") && !memcmp(&r->cfg, &m->cfg, sizeof r->cfg));
        CHECK(r->n_quant == 3 && r->n_tensors == m->n_tensors - 3);
        CHECK(qc_model_quant(r, "model.layers.0.mlp.down_proj.weight")->nnz > 0);
        CHECK(qc_model_online_hadamard(r, "model.layers.0.mlp.down_proj.weight") == 128 &&
              r->n_online == 1);
        for (int i = 0; i < m->n_tensors; i++) {
            const qc_tensor *t = &m->tensors[i], *u = qc_model_find(r, t->name);
            if (qc_model_quant(m, t->name)) {
                CHECK(!u);
                continue;
            }
            CHECK_MSG(u && u->dtype == t->dtype && u->nbytes == t->nbytes &&
                          !memcmp(u->data, t->data, t->nbytes),
                      "%s", t->name);
        }
        for (int i = 0; i < m->n_quant; i++) {
            const qc_quant_state *q = qc_model_quant(r, m->quant[i].name);
            CHECK_MSG(q, "%s", m->quant[i].name);
            if (q) same_state(m->quant[i].q, q);
        }
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        CHECK(r->tok && qc_tokenizer_encode(m->tok, "Hello, world", 12, 1, &a, &na, &err) == 0 &&
              qc_tokenizer_encode(r->tok, "Hello, world", 12, 1, &b, &nb, &err) == 0 && na == nb &&
              !memcmp(a, b, na * 4));
        free(a);
        free(b);
        /* Re-saving the loaded artifact gives the same bytes except for the
         * provenance (its source is now the artifact). Its sections match. */
        CHECK_MSG(qc_artifact_write_model(r, path2, &o, NULL, &err) == 0, "%s", err.msg);
        qcrt_artifact *a1 = qcrt_artifact_open(path, &err), *a2 = qcrt_artifact_open(path2, &err);
        CHECK(a1 && a2 && a1->n_sections == a2->n_sections);
        for (int i = 1; a1 && a2 && i < a1->n_sections && i < a2->n_sections; i++)
            CHECK_MSG(a1->sections[i].checksum == a2->sections[i].checksum &&
                          !strcmp(a1->sections[i].name, a2->sections[i].name),
                      "section %d", i);
        qcrt_artifact_free(a1);
        qcrt_artifact_free(a2);
        qc_model_free(r);
    }
    /* Determinism at the model level. */
    CHECK(qc_artifact_write_model(m, path2, &o, NULL, &err) == 0);
    size_t n1, n2;
    uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
    CHECK(n1 == n2 && !memcmp(b1, b2, n1));
    printf("tiny llama, %s: %llu bytes, %d sections, raw %llu -> stored %llu\n",
           qcrt_compression_name(comp), (unsigned long long)st.file_bytes, st.n_sections,
           (unsigned long long)st.raw_bytes, (unsigned long long)st.stored_bytes);
    free(b1);
    free(b2);
    qc_model_free(m);
}

/* GGUF sources: block-quantized tensors are stored as they are, q/k rows
 * that GGUF permutes are stored un-permuted in F32, the tokenizer is carried
 * as a tensor-less GGUF; every tensor dequantizes to the same floats. */
static void test_gguf_source(const char *src) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(src, &err);
    CHECK_MSG(m, "%s", err.msg);
    if (!m) return;
    char path[128];
    path_in(path, sizeof path, "gguf.qc");
    CHECK_MSG(qc_artifact_write_model(m, path, NULL, NULL, &err) == 0, "%s", err.msg);
    qc_model *r = qc_model_load(path, &err);
    CHECK_MSG(r, "%s: %s", src, err.msg);
    if (!r) {
        qc_model_free(m);
        return;
    }
    CHECK(!memcmp(&r->cfg, &m->cfg, sizeof r->cfg) && r->n_tensors == m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++) {
        const qc_tensor *t = &m->tensors[i], *u = qc_model_find(r, t->name);
        CHECK_MSG(u && (t->unpermute_heads ? u->dtype == QC_DT_F32 : u->dtype == t->dtype),
                  "%s: %s", src, t->name);
        if (!u) continue;
        int64_t n = qc_tensor_numel(t);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        CHECK(qc_tensor_to_f32(t, a, &err) == 0 && qc_tensor_to_f32(u, b, &err) == 0);
        CHECK_MSG(!memcmp(a, b, (size_t)n * 4), "%s: %s values differ", src, t->name);
        free(a);
        free(b);
    }
    CHECK(!m->tok == !r->tok);
    if (m->tok && r->tok) {
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        const char *text = "Hello, world! The quick brown fox.";
        CHECK(qc_tokenizer_encode(m->tok, text, strlen(text), 1, &a, &na, &err) == 0 &&
              qc_tokenizer_encode(r->tok, text, strlen(text), 1, &b, &nb, &err) == 0 && na == nb &&
              !memcmp(a, b, na * 4));
        free(a);
        free(b);
    }
    qc_model_free(r);
    qc_model_free(m);
}

/* Writes an artifact with a hand-made manifest and one tensor section. */
static void bad_manifest(const char *manifest, const char *tensor, size_t tsize, const char *want) {
    char path[128];
    path_in(path, sizeof path, "bad.qc");
    qc_err err = {{0}};
    qc_artifact_writer *w = qc_artifact_writer_new(path, NULL, &err);
    CHECK_FATAL(w);
    CHECK(qc_artifact_writer_add(w, QCRT_SEC_MANIFEST, "manifest.json", NULL, manifest,
                                 strlen(manifest), &err) == 0);
    if (tensor) {
        static uint8_t zeros[64];
        CHECK(qc_artifact_writer_add(w, QCRT_SEC_TENSOR, tensor, NULL, zeros, tsize, &err) == 0);
    }
    CHECK(qc_artifact_writer_finish(w, &err) == 0);
    qc_artifact_writer_free(w);
    qc_model *m = qc_model_load(path, &err);
    CHECK_MSG(!m && strstr(err.msg, want), "'%s' lacks '%s'", m ? "loaded" : err.msg, want);
    qc_model_free(m);
}

static void test_bad_manifests(void) {
    const char *cfg = "\"config\": {\"arch\": \"llama\", \"arch_name\": \"x\", \"n_layers\": 1, "
                      "\"dim\": 8, \"n_heads\": 1, \"n_kv_heads\": 1, \"head_dim\": 8, "
                      "\"ffn_dim\": 8, \"vocab\": 4, \"max_pos\": 8, \"rope_theta\": 1e4, "
                      "\"norm_eps\": 1e-5, \"rope_scaling\": \"none\", \"rope_factor\": 1, "
                      "\"rope_low_freq_factor\": 1, \"rope_high_freq_factor\": 1, "
                      "\"rope_orig_max_pos\": 0, \"tied_embeddings\": true, \"qk_norm\": false, "
                      "\"attn_bias\": false, \"bos_id\": -1, \"eos_id\": -1}";
    char m[2048];
    bad_manifest("{\"format_version\": 1,", NULL, 0, "manifest.json:1:");
    snprintf(m, sizeof m, "{\"format_version\": 2, %s, \"tensors\": {}, \"layers\": []}", cfg);
    bad_manifest(m, NULL, 0, "unsupported format_version 2");
    snprintf(m, sizeof m, "{\"format_version\": 1, %s, \"tensors\": {}, \"layers\": []}", cfg);
    bad_manifest(m, "t", 16, "lists 0 tensors but the file has 1");
    snprintf(m, sizeof m,
             "{\"format_version\": 1, %s, \"tensors\": {\"t\": {\"dtype\": \"F32\", "
             "\"shape\": [3, 2]}}, \"layers\": []}",
             cfg);
    bad_manifest(m, "t", 16, "F32 [3, 2] does not fill the section's 16 bytes");
    snprintf(m, sizeof m,
             "{\"format_version\": 1, %s, \"tensors\": {\"t\": {\"dtype\": \"Q4_0\", "
             "\"shape\": [4]}}, \"layers\": []}",
             cfg);
    bad_manifest(m, "t", 16, "Q4_0 [4, 1] does not fill"); /* not a whole block */
    snprintf(m, sizeof m,
             "{\"format_version\": 1, %s, \"tensors\": {\"t\": {\"dtype\": \"Q9_9\", "
             "\"shape\": [4]}}, \"layers\": []}",
             cfg);
    bad_manifest(m, "t", 16, "needs a dtype");
    snprintf(m, sizeof m,
             "{\"format_version\": 1, %s, \"tensors\": {\"x.qweight\": {\"dtype\": \"U8\", "
             "\"shape\": [8, 4]}}, \"layers\": [{\"name\": \"x\", \"weight\": \"x.weight\", "
             "\"rows\": 8, \"cols\": 8, \"format\": \"int\", \"bits\": 4, \"group_size\": 0, "
             "\"symmetric\": true, \"act_order\": false, \"layout\": \"rowmajor-lsb\", "
             "\"tensors\": {\"qweight\": \"x.qweight\", \"scales\": \"x.scales\"}}]}",
             cfg);
    bad_manifest(m, "x.qweight", 32, "layer 'x': tensor 'scales' is missing");
    snprintf(m, sizeof m, "{\"format_version\": 1, %s, \"tensors\": {}, \"layers\": []}", cfg);
    bad_manifest(m, NULL, 0, "missing tensor 'model.embed_tokens.weight'");
}

/* ---- seeds for tests/fuzz/corpus/artifact (test_artifact --seeds DIR) ---- */

static void write_file(const char *dir, const char *name, const uint8_t *b, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK_FATAL(f && fwrite(b, 1, n, f) == n && fclose(f) == 0);
}

/* A one-block model small enough to fuzz: dim 8, 2 heads of 4, 1 kv head,
 * ffn 16, vocab 16, tied embeddings; q_proj 4-bit g4 asymmetric with a perm,
 * down_proj 3-bit symmetric per channel. Patterned weights so zstd shrinks
 * every section (compressed tensors are 64-aligned, keeping the file small). */
static qc_model *seed_model(float *store) {
    qc_err err = {{0}};
    qc_model *m = calloc(1, sizeof *m);
    m->path = strdup("seed");
    m->format = "gguf";
    qc_config *c = &m->cfg;
    *c = (qc_config){.arch = QC_ARCH_LLAMA,
                     .arch_name = "llama",
                     .n_layers = 1,
                     .dim = 8,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .head_dim = 4,
                     .ffn_dim = 16,
                     .vocab = 16,
                     .max_pos = 64,
                     .rope_theta = 10000,
                     .norm_eps = 1e-5f,
                     .tied_embeddings = 1,
                     .bos_id = -1,
                     .eos_id = -1};
    static const struct {
        const char *name;
        int rows, cols;
    } ts[] = {{"model.embed_tokens.weight", 16, 8},
              {"model.norm.weight", 8, 0},
              {"model.layers.0.input_layernorm.weight", 8, 0},
              {"model.layers.0.post_attention_layernorm.weight", 8, 0},
              {"model.layers.0.self_attn.q_proj.weight", 8, 8},
              {"model.layers.0.self_attn.k_proj.weight", 4, 8},
              {"model.layers.0.self_attn.v_proj.weight", 4, 8},
              {"model.layers.0.self_attn.o_proj.weight", 8, 8},
              {"model.layers.0.mlp.gate_proj.weight", 16, 8},
              {"model.layers.0.mlp.up_proj.weight", 16, 8},
              {"model.layers.0.mlp.down_proj.weight", 8, 16}};
    float *p = store;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t n = (int64_t)ts[i].rows * (ts[i].cols ? ts[i].cols : 1);
        for (int64_t j = 0; j < n; j++)
            p[j] = 0.125f * (float)((j % 5) - 2);
        qc_tensor t = {.name = strdup(ts[i].name),
                       .dtype = QC_DT_F32,
                       .n_dims = ts[i].cols ? 2 : 1,
                       .shape = {ts[i].rows, ts[i].cols ? ts[i].cols : 1},
                       .data = (const uint8_t *)p,
                       .nbytes = (size_t)n * 4};
        CHECK_FATAL(qc_model_add_tensor(m, &t, &err) == 0);
        p += n;
    }
    qc_quant_format f1 = {4, 4, 0}, f2 = {3, 0, 1};
    const char *qn[] = {"model.layers.0.self_attn.q_proj.weight",
                        "model.layers.0.mlp.down_proj.weight"};
    for (int i = 0; i < 2; i++) {
        const qc_tensor *t = qc_model_find(m, qn[i]);
        qc_quant_state *q = qc_quant_state_new(i ? &f2 : &f1, t->shape[0], t->shape[1], &err);
        qc_clip_search clip = {0, 1, 1};
        CHECK_FATAL(q && qc_quant_rtn((const float *)t->data, NULL, &clip, q, NULL, &err) == 0);
        if (i == 0) {
            q->perm = malloc((size_t)q->cols * 4);
            for (int64_t k = 0; k < q->cols; k++)
                q->perm[k] = (int32_t)(q->cols - 1 - k), q->g_idx[k] = (int32_t)(q->perm[k] / 4);
        }
        CHECK_FATAL(qc_model_add_quant(m, strdup(qn[i]), q, &err) == 0);
    }
    return m;
}

static void write_seeds(const char *dir) {
    char path[512];
    qc_err err = {{0}};
    size_t n;
    /* Every section kind, uncompressed and zstd (small payloads). */
    for (int z = 0; z < 2; z++) {
        snprintf(path, sizeof path, "%s/kinds%s.qc", dir, z ? "_zstd" : "");
        qc_artifact_compress c = {z ? QCRT_COMP_ZSTD : QCRT_COMP_NONE, 3};
        qc_artifact_writer *w = qc_artifact_writer_new(path, &c, &err);
        CHECK_FATAL(w);
        static const uint8_t zeros[200];
        CHECK(qc_artifact_writer_add(w, QCRT_SEC_MANIFEST, "manifest.json", NULL, manifest_text,
                                     sizeof manifest_text - 1, &err) == 0);
        CHECK(qc_artifact_writer_add(w, QCRT_SEC_TOKENIZER, "tokenizer.json", NULL, tok_text,
                                     sizeof tok_text - 1, &err) == 0);
        CHECK(qc_artifact_writer_add(w, QCRT_SEC_TENSOR, "t", NULL, zeros, sizeof zeros, &err) ==
              0);
        CHECK(qc_artifact_writer_add(w, QCRT_SEC_KERNELS, "k0", "cpu:x86-64-v3", kernel_blob,
                                     sizeof kernel_blob, &err) == 0);
        CHECK(qc_artifact_writer_finish(w, &err) == 0);
        qc_artifact_writer_free(w);
    }
    /* A loadable model, and damaged copies of it. */
    static float store[1024];
    qc_model *m = seed_model(store);
    snprintf(path, sizeof path, "%s/model_zstd.qc", dir);
    qc_artifact_model_opts o = {.compress = {QCRT_COMP_ZSTD, 19}};
    CHECK_MSG(qc_artifact_write_model(m, path, &o, NULL, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model_none.qc", dir);
    CHECK_MSG(qc_artifact_write_model(m, path, NULL, NULL, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model_zstd.qc", dir);
    qc_model_free(m);
    qc_model *back = qc_model_load(path, &err);
    CHECK_MSG(back && back->n_quant == 2, "seed model does not load: %s", err.msg);
    qc_model_free(back);
    /* The same with the manifest stored raw, so that mutations reach the
     * JSON and the loader instead of breaking a zstd frame. */
    qcrt_artifact *a = qcrt_artifact_open(path, &err);
    CHECK_FATAL(a);
    snprintf(path, sizeof path, "%s/model_raw_manifest.qc", dir);
    qc_artifact_compress none = {QCRT_COMP_NONE, 3};
    qc_artifact_writer *w = qc_artifact_writer_new(path, &none, &err);
    CHECK_FATAL(w);
    for (int i = 0; i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        void *owned;
        const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, &err);
        CHECK_FATAL(d);
        if (i == 1) CHECK(qc_artifact_writer_set_compress(w, &o.compress, &err) == 0);
        CHECK(qc_artifact_writer_add(w, s->kind, s->name, s->target, d, s->raw_size, &err) == 0);
        free(owned);
    }
    CHECK(qc_artifact_writer_finish(w, &err) == 0);
    qc_artifact_writer_free(w);
    qcrt_artifact_free(a);
    snprintf(path, sizeof path, "%s/model_zstd.qc", dir);
    uint8_t *b = slurp(path, &n);
    uint8_t *d = malloc(n);
    memcpy(d, b, n);
    d[0] ^= 1;
    write_file(dir, "bad_magic.qc", d, n);
    memcpy(d, b, n);
    qcrt_put32(d + 8, 2);
    reseal(d);
    write_file(dir, "version2.qc", d, n);
    write_file(dir, "truncated.qc", b, n / 2);
    memcpy(d, b, n);
    d[n / 3] ^= 0x10;
    write_file(dir, "flipped.qc", d, n);
    free(d);
    free(b);
    printf("seeds written to %s\n", dir);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--seeds")) {
        for (size_t i = 0; i < sizeof payload_big; i++)
            payload_big[i] = (uint8_t)(i % 7);
        write_seeds(argv[2]);
        TEST_END();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qc_test_artifact_%ld", (long)getpid());
    CHECK_FATAL(mkdir(tmpdir, 0700) == 0);
    for (size_t i = 0; i < sizeof payload_big; i++)
        payload_big[i] = (uint8_t)(i % 7);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof payload_rand; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64: incompressible */
        payload_rand[i] = (uint8_t)x;
    }
    test_round_trip(QCRT_COMP_NONE);
    test_round_trip(QCRT_COMP_ZSTD);
    test_damage(QCRT_COMP_NONE);
    test_damage(QCRT_COMP_ZSTD);
    test_crafted();
    test_writer_refusals();
    test_pack();
    test_model(QCRT_COMP_NONE);
    test_model(QCRT_COMP_ZSTD);
    test_bad_manifests();
    test_gguf_source("tests/data/gguf_tiny_llama.gguf");
    test_gguf_source("tests/data/gguf_tiny_qwen3.gguf");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    TEST_END();
}
