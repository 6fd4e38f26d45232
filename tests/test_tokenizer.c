/* Tokenizer tests: synthetic byte-level BPE and SentencePiece vocabularies,
 * tokenizer.json errors, raw bytes, and the committed SmolLM2 fixture (ids
 * from Hugging Face). With arguments it is a tool for test_tokenizer_hf.py:
 *   test_tokenizer --vocab DUMP TEXT   ids of TEXT (vocabulary dump, see
 *                                      tests/gen/make_tokenizer_fixture.py)
 *   test_tokenizer --json FILE TEXT    ids of TEXT with a tokenizer.json
 * printing the ids on stdout and the encoding speed on stderr. */
#include "check.h"
#include "compiler/mapfile.h"
#include "compiler/tokenizer.h"

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#define VOCAB_FIXTURE "tests/data/tok_smollm_vocab.txt.zst"

/* ---- vocabulary dumps ---- */

typedef struct dump {
    char *buf;
    char **tokens, **merges;
    size_t *lens;
    int32_t *types;
    float *scores;
    qc_vocab_desc d;
} dump;

static void unescape(char *s, size_t *len) {
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1]) {
            char c = s[++i];
            s[o++] = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = 0;
    *len = o;
}

static char *next_line(char **p) {
    char *s = *p, *e = strchr(s, '\n');
    if (!e) return NULL;
    *e = 0;
    *p = e + 1;
    return s;
}

static char *read_maybe_zst(const char *path, size_t *len) {
    qc_err err;
    char *raw = qc_read_file(path, 1u << 28, len, &err);
    if (!raw) return NULL;
    size_t n = strlen(path);
    if (n < 4 || strcmp(path + n - 4, ".zst")) return raw;
    unsigned long long size = ZSTD_getFrameContentSize(raw, *len);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1u << 28)) {
        free(raw);
        return NULL;
    }
    char *out = malloc(size + 1);
    size_t got = out ? ZSTD_decompress(out, size, raw, *len) : 0;
    free(raw);
    if (!out || ZSTD_isError(got)) {
        free(out);
        return NULL;
    }
    out[got] = 0;
    *len = got;
    return out;
}

static int load_dump(const char *path, dump *v) {
    memset(v, 0, sizeof *v);
    size_t len;
    if (!(v->buf = read_maybe_zst(path, &len))) return -1;
    char *p = v->buf, *l;
    static char kind[16], pre[64];
    int n = 0, m = 0, add_bos, asp;
    if (!(l = next_line(&p)) || strcmp(l, "qc-vocab 1")) return -1;
    if (!(l = next_line(&p)) || sscanf(l, "kind %15s", kind) != 1) return -1;
    if (!(l = next_line(&p)) || sscanf(l, "pre %63s", pre) != 1) return -1;
    if (!(l = next_line(&p)) || sscanf(l, "special %d %d %d %d %d %d", &v->d.bos_id, &v->d.eos_id,
                                       &v->d.unk_id, &v->d.pad_id, &add_bos, &asp) != 6)
        return -1;
    if (!(l = next_line(&p)) || sscanf(l, "tokens %d", &n) != 1 || n <= 0) return -1;
    v->tokens = calloc((size_t)n, sizeof *v->tokens);
    v->lens = calloc((size_t)n, sizeof *v->lens);
    v->types = calloc((size_t)n, sizeof *v->types);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    for (int i = 0; i < n; i++) {
        int off = 0;
        if (!(l = next_line(&p)) || sscanf(l, "%d %f %n", &v->types[i], &v->scores[i], &off) < 2)
            return -1;
        v->tokens[i] = l + off;
        unescape(v->tokens[i], &v->lens[i]);
    }
    if (!(l = next_line(&p)) || sscanf(l, "merges %d", &m) != 1 || m < 0) return -1;
    v->merges = calloc((size_t)m + 1, sizeof *v->merges);
    for (int i = 0; i < m; i++) {
        size_t ml;
        if (!(v->merges[i] = next_line(&p))) return -1;
        unescape(v->merges[i], &ml);
    }
    v->d.kind = strcmp(kind, "spm") ? QC_TOK_BPE : QC_TOK_SPM;
    v->d.n_tokens = n;
    v->d.tokens = (const char *const *)v->tokens;
    v->d.token_lens = v->lens;
    v->d.scores = v->scores;
    v->d.types = v->types;
    v->d.n_merges = m;
    v->d.merges = (const char *const *)v->merges;
    v->d.pre = pre;
    v->d.add_bos = add_bos;
    v->d.add_space_prefix = asp;
    return 0;
}

static void free_dump(dump *v) {
    free(v->buf), free(v->tokens), free(v->merges), free(v->lens), free(v->types);
    free(v->scores);
}

/* ---- tool mode ---- */

static int tool(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s (--vocab DUMP | --json FILE) TEXT\n", argv[0]);
        return 2;
    }
    qc_err err = {{0}};
    qc_tokenizer *t = NULL;
    dump v;
    int have_dump = 0;
    if (!strcmp(argv[1], "--vocab")) {
        if (load_dump(argv[2], &v)) {
            fprintf(stderr, "%s: bad vocabulary dump\n", argv[2]);
            return 1;
        }
        have_dump = 1;
        t = qc_tokenizer_new(&v.d, &err);
    } else {
        t = qc_tokenizer_from_json(argv[2], &err);
    }
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t len, n;
    char *text = qc_read_file(argv[3], 1u << 30, &len, &err);
    int32_t *ids;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (!text || qc_tokenizer_encode(t, text, len, 0, &ids, &n, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s: %.0f tokens/s\n", len, n, s,
            (double)n / s);
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    free(text);
    qc_tokenizer_free(t);
    if (have_dump) free_dump(&v);
    return 0;
}

/* ---- helpers ---- */

static int encode(const qc_tokenizer *t, const char *s, size_t n, int add, int32_t *out,
                  size_t max) {
    int32_t *ids;
    size_t k;
    qc_err err;
    if (qc_tokenizer_encode(t, s, n, add, &ids, &k, &err)) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        return -1;
    }
    for (size_t i = 0; i < k && i < max; i++)
        out[i] = ids[i];
    free(ids);
    return (int)k;
}

static int roundtrips(const qc_tokenizer *t, const char *s, size_t n) {
    int32_t *ids;
    size_t k;
    qc_err err;
    if (qc_tokenizer_encode(t, s, n, 0, &ids, &k, &err)) return 0;
    /* pieces concatenated (the text may hold NULs, which decode cannot show) */
    char *cat = malloc(n + 1);
    size_t o = 0;
    int ok = 1;
    for (size_t i = 0; i < k && ok; i++) {
        size_t l;
        const char *p = qc_tokenizer_piece(t, ids[i], &l);
        ok = p && o + l <= n;
        if (ok) memcpy(cat + o, p, l), o += l;
    }
    ok = ok && o == n && memcmp(cat, s, n) == 0;
    if (ok && !memchr(s, 0, n)) {
        char *back = qc_tokenizer_decode(t, ids, k, &err);
        ok = back && strlen(back) == n && memcmp(back, s, n) == 0;
        free(back);
    }
    free(cat);
    free(ids);
    return ok;
}

/* GPT-2's byte alphabet, written here independently of the library. */
static int byte_char(int b, char *out) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int n = 0;
        for (int i = 0; i < b; i++)
            if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---- synthetic byte-level BPE ---- */

static void test_bpe_synthetic(void) {
    static char texts[256][3];
    const char *tok[300];
    int32_t types[300];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        texts[b][byte_char(b, texts[b])] = 0;
        tok[n] = texts[b], types[n++] = 1;
    }
    /* 256 he, 257 ll, 258 hell, 259 hello, 260 Ġw, 261 Ġwo, 262 <|end|>, 263 Ġhello */
    const char *extra[] = {"he",        "ll",         "hell",    "hello",
                           "\xC4\xA0w", "\xC4\xA0wo", "<|end|>", "\xC4\xA0hello"};
    for (int i = 0; i < 8; i++)
        tok[n] = extra[i], types[n++] = i == 6 ? 3 : 1;
    const char *merges[] = {"h e",        "l l",         "he ll",         "hell o",
                            "\xC4\xA0 w", "\xC4\xA0w o", "\xC4\xA0 hello"};
    qc_vocab_desc d = {.kind = QC_TOK_BPE,
                       .n_tokens = n,
                       .tokens = tok,
                       .types = types,
                       .n_merges = 7,
                       .merges = merges,
                       .pre = "gpt2",
                       .bos_id = 262,
                       .eos_id = 262,
                       .unk_id = -1,
                       .pad_id = -1,
                       .add_bos = 1};
    qc_err err = {{0}};
    qc_tokenizer *t = qc_tokenizer_new(&d, &err);
    CHECK_MSG(t, "%s", err.msg);
    if (!t) return;
    int32_t ids[64];
    int k = encode(t, "hello world<|end|>hello", 23, 0, ids, 64);
    /* hello | Ġwo r l d | <|end|> | hello */
    int32_t want[] = {259, 261, 'r', 'l', 'd', 262, 259};
    CHECK(k == 7 && memcmp(ids, want, sizeof want) == 0);
    k = encode(t, " hello", 6, 1, ids, 64);
    CHECK(k == 2 && ids[0] == 262 && ids[1] == 263);
    CHECK(qc_tokenizer_find(t, "hell") == 258);
    CHECK(qc_tokenizer_bos(t) == 262 && qc_tokenizer_vocab_size(t) == 264);
    size_t pl;
    const char *p = qc_tokenizer_piece(t, 260, &pl);
    CHECK(p && pl == 2 && !memcmp(p, " w", 2));
    CHECK(!qc_tokenizer_piece(t, 264, &pl) && !qc_tokenizer_piece(t, -1, &pl));
    CHECK(encode(t, "", 0, 0, ids, 64) == 0);
    /* Raw bytes, invalid UTF-8 included, pass through byte-level BPE unchanged. */
    char raw[512];
    unsigned s = 12345;
    for (int i = 0; i < 512; i++)
        raw[i] = (char)((s = s * 1103515245u + 12345u) >> 16);
    CHECK(roundtrips(t, raw, sizeof raw));
    CHECK(roundtrips(t, "\xFF\xFE\xC3 \xE2\x82 x\x80", 9));
    int32_t bad = 9999;
    char *dec = qc_tokenizer_decode(t, &bad, 1, &err);
    CHECK(!dec && strstr(err.msg, "9999"));
    qc_tokenizer_free(t);

    d.pre = "no-such-pre";
    CHECK(!qc_tokenizer_new(&d, &err) && strstr(err.msg, "no-such-pre"));
    d.pre = "gpt2";
    const char *bad_merges[] = {"h q"};
    d.merges = bad_merges, d.n_merges = 1;
    tok[256] = "hq"; /* "h"+"q" exists, so only the result is missing: make it so */
    tok[256] = "he";
    CHECK(!qc_tokenizer_new(&d, &err) && strstr(err.msg, "merge 0"));
    d.merges = merges, d.n_merges = 7, d.bos_id = 5000;
    CHECK(!qc_tokenizer_new(&d, &err) && strstr(err.msg, "BOS"));
}

/* ---- synthetic SentencePiece ---- */

static void test_spm_synthetic(void) {
    static char bytes[256][8];
    const char *tok[300];
    float scores[300];
    int32_t types[300];
    int n = 0;
    tok[n] = "<unk>", types[n] = 2, scores[n++] = 0;
    tok[n] = "<s>", types[n] = 3, scores[n++] = 0;
    tok[n] = "</s>", types[n] = 3, scores[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tok[n] = bytes[b], types[n] = 6, scores[n++] = 0;
    }
    /* 259.. */
    const char *pieces[] = {"\xE2\x96\x81",
                            "h",
                            "e",
                            "l",
                            "o",
                            "w",
                            "r",
                            "d",
                            "he",
                            "ll",
                            "hell",
                            "hello",
                            "\xE2\x96\x81hello",
                            "\xE2\x96\x81w",
                            "or"};
    float sc[] = {-1, -2, -2, -2, -2, -2, -2, -2, -3, -3, -4, -5, -6, -3, -3.5f};
    for (int i = 0; i < 15; i++)
        tok[n] = pieces[i], types[n] = 1, scores[n++] = sc[i];
    qc_vocab_desc d = {.kind = QC_TOK_SPM,
                       .n_tokens = n,
                       .tokens = tok,
                       .scores = scores,
                       .types = types,
                       .bos_id = 1,
                       .eos_id = 2,
                       .unk_id = 0,
                       .pad_id = -1,
                       .add_bos = 1,
                       .add_space_prefix = 1};
    qc_err err = {{0}};
    qc_tokenizer *t = qc_tokenizer_new(&d, &err);
    CHECK_MSG(t, "%s", err.msg);
    if (!t) return;
    int32_t ids[64];
    /* "hello world é": ▁hello ▁w or l d ▁ <0xC3> <0xA9> */
    const char *text = "hello world \xC3\xA9";
    int k = encode(t, text, strlen(text), 1, ids, 64);
    int32_t want[] = {1, 271, 272, 273, 262, 266, 259, 3 + 0xC3, 3 + 0xA9};
    CHECK_MSG(k == 9 && memcmp(ids, want, sizeof want) == 0, "got %d ids", k);
    char *back = qc_tokenizer_decode(t, ids + 1, (size_t)k - 1, &err);
    CHECK(back && !strcmp(back, text));
    free(back);
    back = qc_tokenizer_decode(t, ids, (size_t)k, &err);
    CHECK(back && !strcmp(back, "<s>hello world \xC3\xA9"));
    free(back);
    /* a special token in the text is matched whole */
    k = encode(t, "</s>hello", 9, 0, ids, 64);
    CHECK(k == 2 && ids[0] == 2 && ids[1] == 270);
    size_t pl;
    const char *p = qc_tokenizer_piece(t, 3 + 'A', &pl);
    CHECK(p && pl == 1 && p[0] == 'A');
    CHECK(roundtrips(t, "\xFF\x80 ab\xC3", 6) == 0 || 1); /* must not crash */
    qc_tokenizer_free(t);
}

/* ---- tokenizer.json ---- */

static const char *JSON_OK =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":6,\"content\":\"<s>\",\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Digits\",\"individual_digits\":true},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}]},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
    "\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":"
    "{\"<s>\":{\"id\":\"<s>\",\"ids\":[6],\"tokens\":[\"<s>\"]}}},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120ab\":4,"
    "\"1\":5},\"merges\":[[\"a\",\"b\"],[\"\\u0120\",\"ab\"]]}}";

static void test_json(void) {
    qc_err err = {{0}};
    qc_tokenizer *t = qc_tokenizer_from_json_buffer(JSON_OK, strlen(JSON_OK), "ok.json", &err);
    CHECK_MSG(t, "%s", err.msg);
    if (t) {
        int32_t ids[16];
        int k = encode(t, "ab ab11<s>", 10, 1, ids, 16);
        int32_t want[] = {6, 2, 4, 5, 5, 6};
        CHECK_MSG(k == 6 && memcmp(ids, want, sizeof want) == 0, "got %d ids", k);
        qc_tokenizer_free(t);
    }
    struct {
        const char *json, *want;
    } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}}}", "bad.json:1:"},
        {"{\"model\":\n {\"vocab\": {\"a\": 0}, \"merges\": [\"a\"] ", "bad.json:2:"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "WordPiece"},
        {"{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"vocab\": {\"a\": 0}}}", "NFKC"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Metaspace\"}}",
         "Metaspace"},
        {"{\"model\": {\"vocab\": {\"a\": -4}}}", "bad id"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", "merge 0"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", "
         "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
         "regex"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 0, \"content\": "
         "\"a\", \"lstrip\": true}]}",
         "lstrip"},
        {"{\"model\": 3}", "model"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        t = qc_tokenizer_from_json_buffer(bad[i].json, strlen(bad[i].json), "bad.json", &err);
        CHECK_MSG(!t && strstr(err.msg, bad[i].want) && !strchr(err.msg, '\n'), "case %zu: '%s'", i,
                  err.msg);
        qc_tokenizer_free(t);
    }
    CHECK(!qc_tokenizer_from_json("tests/data/no-such-tokenizer.json", &err));
    CHECK(strstr(err.msg, "no-such-tokenizer.json"));
}

/* ---- the committed SmolLM2 fixture ---- */

static void test_fixture(void) {
    dump v;
    if (load_dump(VOCAB_FIXTURE, &v)) {
        CHECK_MSG(0, "cannot read %s", VOCAB_FIXTURE);
        return;
    }
    qc_err err = {{0}};
    qc_tokenizer *t = qc_tokenizer_new(&v.d, &err);
    CHECK_MSG(t, "%s", err.msg);
    size_t len, elen;
    char *text = qc_read_file("tests/data/tok_sample.txt", 1 << 20, &len, &err);
    char *want = qc_read_file("tests/data/tok_sample.ids", 1 << 20, &elen, &err);
    CHECK_FATAL(text && want);
    if (t) {
        int32_t *ids;
        size_t n;
        CHECK(qc_tokenizer_encode(t, text, len, 0, &ids, &n, &err) == 0);
        size_t k = 0, bad = 0;
        for (char *p = want, *e; *p; p = e, k++) {
            long id = strtol(p, &e, 10);
            if (e == p) break;
            if (k < n && ids[k] != id && bad++ < 5)
                fprintf(stderr, "token %zu: got %d, Hugging Face %ld\n", k, ids[k], id);
        }
        CHECK_MSG(k == n && bad == 0, "%zu ids, Hugging Face %zu, %zu differ", n, k, bad);
        char *back = qc_tokenizer_decode(t, ids, n, &err);
        CHECK(back && strlen(back) == len && !memcmp(back, text, len));
        free(back);
        free(ids);
        CHECK(qc_tokenizer_bos(t) == 1 && qc_tokenizer_eos(t) == 2);
        CHECK(qc_tokenizer_find(t, "<|im_start|>") == 1);
        /* no BOS: the GGUF says add_bos_token = false */
        CHECK(qc_tokenizer_encode(t, "Hi", 2, 1, &ids, &n, &err) == 0 && n == 1 && ids[0] != 1);
        free(ids);
        /* Raw bytes (mostly invalid UTF-8) come back unchanged, except the
         * six control bytes SmolLM2's vocabulary has no token for, which are
         * dropped, as Hugging Face's BPE without unk_token drops them. */
        char raw[4096], kept[4096];
        unsigned s = 7;
        size_t nk = 0;
        for (size_t i = 0; i < sizeof raw; i++) {
            raw[i] = (char)((s = s * 1103515245u + 12345u) >> 16);
            char bc[3];
            bc[byte_char((unsigned char)raw[i], bc)] = 0;
            if (qc_tokenizer_find(t, bc) >= 0) kept[nk++] = raw[i];
        }
        CHECK(nk < sizeof raw && nk > sizeof raw / 2);
        CHECK(qc_tokenizer_encode(t, raw, sizeof raw, 0, &ids, &n, &err) == 0);
        size_t o = 0, same = 1;
        for (size_t i = 0; i < n; i++) {
            size_t l;
            const char *p = qc_tokenizer_piece(t, ids[i], &l);
            same = same && o + l <= nk && !memcmp(p, kept + o, l);
            o += l;
        }
        CHECK(same && o == nk);
        free(ids);
        CHECK(roundtrips(t, kept, nk));
        qc_tokenizer_free(t);
    }
    free(text);
    free(want);
    free_dump(&v);
}

int main(int argc, char **argv) {
    if (argc > 1) return tool(argc, argv);
    test_bpe_synthetic();
    test_spm_synthetic();
    test_json();
    test_fixture();
    TEST_END();
}
