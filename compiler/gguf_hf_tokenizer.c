/* GGUF tokenizer metadata -> Hugging Face tokenizer.json (see
 * gguf_hf_tokenizer.h). */
#include "gguf_hf_tokenizer.h"
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vocab {
    const char **tok, **merge;
    size_t *tok_len, *merge_len, n_tok, n_merge;
    int32_t *type; /* may be NULL */
} vocab;

static void vocab_free(vocab *v) {
    free(v->tok);
    free(v->tok_len);
    free(v->merge);
    free(v->merge_len);
    free(v->type);
}

/* A token id key, or -1 when absent; -1 with err out of range. */
static int token_id(const qc_gguf *g, const char *key, size_t n, int *id, qc_err *err) {
    int64_t v;
    int rc = qc_gguf_get_int(g, key, &v, err);
    *id = -1;
    if (rc < 0) return -1;
    if (rc == 0 && (v < 0 || (uint64_t)v >= n))
        return qc_err_set(err, "%s: %s = %lld is not a token id", g->path, key, (long long)v);
    if (rc == 0) *id = (int)v;
    return 0;
}

/* The pre-tokenizer Hugging Face's tokenizer.json uses for tokenizer.ggml.pre
 * p, or NULL when not converted. */
static json_t *pre_tokenizer(const char *p, size_t n) {
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1);
    if ((n == 7 && !memcmp(p, "default", 7)) || (n == 4 && !memcmp(p, "gpt2", 4)) ||
        (n == 5 && !memcmp(p, "gpt-2", 5)))
        return bl;
    if (n == 6 && !memcmp(p, "smollm", 6))
        return json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                         "Digits", "individual_digits", 1, bl);
    json_decref(bl);
    return NULL;
}

static int read_vocab(const qc_gguf *g, vocab *v, qc_err *err) {
    int rc = qc_gguf_get_str_array(g, "tokenizer.ggml.tokens", &v->tok, &v->tok_len, &v->n_tok,
                                   err);
    if (rc) return rc < 0 ? -1 : qc_err_set(err, "%s: no tokenizer.ggml.tokens", g->path);
    rc = qc_gguf_get_str_array(g, "tokenizer.ggml.merges", &v->merge, &v->merge_len, &v->n_merge,
                               err);
    if (rc) return rc < 0 ? -1 : qc_err_set(err, "%s: no tokenizer.ggml.merges", g->path);
    size_t nt = 0;
    if ((rc = qc_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &v->type, &nt, err)) < 0)
        return -1;
    if (rc == 0 && nt != v->n_tok)
        return qc_err_set(err, "%s: %zu token types for %zu tokens", g->path, nt, v->n_tok);
    return 0;
}

/* The BPE model: vocab (text -> id) and merges in rank order. 1 with why
 * when a token text repeats or is not UTF-8 (JSON cannot hold it). */
static int bpe_model(const vocab *v, json_t **out, char *why, size_t why_len) {
    json_t *voc = json_object(), *merges = json_array();
    int rc = voc && merges ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < v->n_tok; i++) {
        json_t *id = json_integer((json_int_t)i);
        char *key = malloc(v->tok_len[i] + 1);
        if (!key || memchr(v->tok[i], 0, v->tok_len[i])) {
            snprintf(why, why_len, "token %zu %s", i, key ? "holds a NUL byte" : "(out of memory)");
            rc = 1;
        } else {
            memcpy(key, v->tok[i], v->tok_len[i]);
            key[v->tok_len[i]] = 0;
            if (json_object_get(voc, key)) {
                snprintf(why, why_len, "token %zu repeats an earlier token's text", i);
                rc = 1;
            } else if (json_object_set_new(voc, key, id)) {
                snprintf(why, why_len, "token %zu is not valid UTF-8", i);
                id = NULL;
                rc = 1;
            } else {
                id = NULL;
            }
        }
        json_decref(id);
        free(key);
    }
    for (size_t i = 0; rc == 0 && i < v->n_merge; i++) {
        json_t *m = json_stringn(v->merge[i], v->merge_len[i]);
        if (!m || json_array_append_new(merges, m)) {
            snprintf(why, why_len, "merge %zu is not valid UTF-8", i);
            rc = 1;
        }
    }
    if (rc) {
        json_decref(voc);
        json_decref(merges);
        return rc;
    }
    *out = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                     "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                     "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", voc, "merges",
                     merges);
    return *out ? 0 : -1;
}

/* Control (3, special) and user-defined (4) tokens, matched before
 * pre-tokenization; control tokens outside the byte alphabet are skipped as
 * quantc's tokenizer skips them. */
static json_t *added_tokens(const vocab *v) {
    json_t *a = json_array();
    for (size_t i = 0; a && v->type && i < v->n_tok; i++) {
        int ty = v->type[i];
        if (ty != 3 && ty != 4) continue;
        if (ty == 3 && !qc_tok_in_byte_alphabet(v->tok[i], v->tok_len[i])) continue;
        json_array_append_new(
            a, json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content",
                         v->tok[i], v->tok_len[i], "single_word", 0, "lstrip", 0, "rstrip", 0,
                         "normalized", 0, "special", ty == 3));
    }
    return a;
}

static json_t *token_text(const vocab *v, int id) {
    return id < 0 ? json_null() : json_stringn(v->tok[id], v->tok_len[id]);
}

int qc_gguf_hf_tokenizer(const qc_gguf *g, int model_max_length, json_t **tok, json_t **cfg,
                         char *why, size_t why_len, qc_err *err) {
    *tok = *cfg = NULL;
    const char *model, *pre = "default", *tmpl = NULL;
    size_t model_len, pre_len = 7, tmpl_len = 0;
    int rc = qc_gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len, err);
    if (rc) {
        snprintf(why, why_len, "the GGUF file has no tokenizer");
        return rc < 0 ? -1 : 1;
    }
    if (model_len != 4 || memcmp(model, "gpt2", 4)) {
        snprintf(why, why_len, "converting a '%.*s' (not byte-level BPE) tokenizer is not "
                 "implemented", (int)(model_len > 32 ? 32 : model_len), model);
        return 1;
    }
    if ((rc = qc_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len, err)) < 0) return -1;
    if (rc == 1) pre = "default", pre_len = 7;
    json_t *pt = pre_tokenizer(pre, pre_len);
    if (!pt) {
        snprintf(why, why_len, "converting pre-tokenizer '%.*s' is not implemented (converted: "
                 "default, gpt2, smollm)", (int)(pre_len > 32 ? 32 : pre_len), pre);
        return 1;
    }
    vocab v = {0};
    json_t *bpe = NULL;
    int bos, eos, unk, pad, add_bos = 0, add_eos = 0;
    rc = read_vocab(g, &v, err);
    if (rc == 0 && (token_id(g, "tokenizer.ggml.bos_token_id", v.n_tok, &bos, err) ||
                    token_id(g, "tokenizer.ggml.eos_token_id", v.n_tok, &eos, err) ||
                    token_id(g, "tokenizer.ggml.unknown_token_id", v.n_tok, &unk, err) ||
                    token_id(g, "tokenizer.ggml.padding_token_id", v.n_tok, &pad, err) ||
                    qc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, err) < 0 ||
                    qc_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, err) < 0 ||
                    qc_gguf_get_str(g, "tokenizer.chat_template", &tmpl, &tmpl_len, err) < 0))
        rc = -1;
    if (rc == 0 && add_bos && bos < 0) rc = qc_err_set(err, "%s: add_bos_token without a BOS id",
                                                       g->path);
    if (rc == 0) rc = bpe_model(&v, &bpe, why, why_len);
    if (rc) {
        json_decref(pt);
        vocab_free(&v);
        return rc;
    }
    /* BOS first when add_bos_token, as llama.cpp's tokenizer adds it. */
    json_t *post = json_null();
    if (add_bos) {
        json_t *b = token_text(&v, bos), *special = json_object();
        const char *bt = json_string_value(b);
        if (special && bt)
            json_object_set_new(special, bt, json_pack("{s:O, s:[I], s:[O]}", "id", b, "ids",
                                                       (json_int_t)bos, b));
        post = json_pack("{s:s, s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:O, s:i}}, "
                         "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:o}",
                         "type", "TemplateProcessing", "single", "SpecialToken", "id", b,
                         "type_id", 0, "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken",
                         "id", b, "type_id", 0, "Sequence", "id", "A", "type_id", 0, "Sequence",
                         "id", "B", "type_id", 1, "special_tokens", special);
        json_decref(b);
    }
    *tok = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:{s:s, s:b, s:b, s:b}, s:o}", "version",
                     "1.0", "truncation", "padding", "added_tokens", added_tokens(&v), "normalizer",
                     "pre_tokenizer", pt, "post_processor", post, "decoder", "type", "ByteLevel",
                     "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", bpe);
    *cfg = json_pack("{s:s, s:b, s:b, s:o, s:o, s:o, s:o, s:b, s:i}", "tokenizer_class",
                     "PreTrainedTokenizerFast", "add_bos_token", add_bos, "add_eos_token", add_eos,
                     "bos_token", token_text(&v, bos), "eos_token", token_text(&v, eos),
                     "unk_token", token_text(&v, unk), "pad_token", token_text(&v, pad),
                     "clean_up_tokenization_spaces", 0, "model_max_length", model_max_length);
    if (*cfg && tmpl)
        json_object_set_new(*cfg, "chat_template", json_stringn(tmpl, tmpl_len));
    vocab_free(&v);
    if (!*tok || !*cfg) {
        json_decref(*tok);
        json_decref(*cfg);
        *tok = *cfg = NULL;
        return qc_err_set(err, "%s: out of memory converting the tokenizer", g->path);
    }
    return 0;
}
