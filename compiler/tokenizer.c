/* Tokenizers: byte-level BPE (merges by rank, as Hugging Face tokenizers and
 * llama.cpp do for GPT-2 style vocabularies) and SentencePiece-style BPE
 * (merges by score, llama.cpp's "llama" vocabularies).
 *
 * Encoding: added/special tokens are matched literally first (special ones,
 * then the others in the gaps, as HF's AddedVocabulary does); the rest is cut
 * by the pre-tokenizer steps into pieces; each piece is merged by BPE. Results
 * per piece are cached for the duration of one encode call. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer_impl.h"
#include "limits.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* GPT-2's pre-tokenizer regex, as HF's ByteLevel(use_regex) writes it. */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_REGEX[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct pre_step {
    qc_pre_kind kind;
    pcre2_code *re; /* QC_PRE_SPLIT, or QC_PRE_BYTELEVEL with use_regex */
    qc_split_behavior behavior;
    int invert, add_prefix_space;
} pre_step;

typedef struct added {
    int id, special;
    char *text;
    size_t len;
} added;

struct qc_tokenizer {
    qc_tok_kind kind;
    int n_tokens;
    char **text;       /* vocabulary texts (NUL-terminated, in text_buf) */
    char *text_buf;    /* all of them back to back: one allocation, not one
                          per token (a sparse hostile vocabulary has 2^21) */
    size_t *text_len;  /* their lengths */
    float *scores;     /* SPM only */
    char *piece_buf;   /* decoded bytes of every token, back to back */
    size_t *piece_off; /* n_tokens + 1 offsets into piece_buf */
    int32_t *slots;    /* vocabulary hash: text -> id, -1 empty */
    uint32_t slot_mask;
    uint64_t *mkey; /* merge hash: (left << 32 | right) -> rank, merged id */
    int32_t *mrank, *mres;
    uint32_t mmask;
    int byte_level, byte_fallback, ignore_merges, add_space_prefix;
    int32_t byte_tok[256]; /* byte-level: id of the one-byte token; SPM: <0xNN> */
    int n_pre;
    pre_step *pre;
    int n_added;
    added *add;
    uint8_t *is_added;   /* per token: an added token (decodes to its own text) */
    int *add_first[256]; /* added-token indices by first byte, longest first */
    int add_first_n[256];
    int bos, eos, unk, add_bos;
};

static uint64_t hash_bytes(const void *p, size_t n) {
    return XXH3_64bits(p, n);
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n * 2 && c < (1u << 30))
        c <<= 1;
    return c;
}

/* ---- GPT-2 byte <-> unicode mapping ----
 * Printable bytes (33..126, 161..172, 174..255) stand for themselves; the
 * others are moved, in order, to code points 256, 257, ... */
static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) n++;
    return 256 + n;
}

static int utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 1 for an
 * invalid byte, which then counts as a character of its own. *cp gets the
 * code point (or the byte | 0x80000000 when invalid). */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0x80000000u | c;
        return 1;
    }
    if (len > n) {
        *cp = 0x80000000u | c;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0x80000000u | c;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0x80000000u | c;
        return 1;
    }
    *cp = v;
    return len;
}

/* ---- vocabulary and merge hashes ---- */

static int vocab_find(const qc_tokenizer *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->slot_mask;
    for (;;) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
        i = (i + 1) & t->slot_mask;
    }
}

static uint32_t merge_slot(const qc_tokenizer *t, uint64_t key) {
    uint32_t i = (uint32_t)(key * 0x9E3779B97F4A7C15ull >> 32) & t->mmask;
    while (t->mkey[i] != UINT64_MAX && t->mkey[i] != key)
        i = (i + 1) & t->mmask;
    return i;
}

/* Rank of merging tokens a and b (lower merges first) or -1; *res the result. */
static int merge_find(const qc_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    if (!t->mkey) return -1;
    uint32_t i = merge_slot(t, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
    if (t->mkey[i] == UINT64_MAX) return -1;
    *res = t->mres[i];
    return t->mrank[i];
}

/* ---- building ---- */

static int build_vocab(qc_tokenizer *t, const qc_vocab_desc *d, qc_err *err) {
    if (d->n_tokens <= 0 || (uint64_t)d->n_tokens > qc_limit(QC_LIMIT_VOCAB) ||
        d->n_tokens > QC_TOK_MAX_VOCAB)
        return qc_err_set(err, "tokenizer: vocabulary size %d out of range (1..%llu; %s raises it "
                               "up to %d)",
                          d->n_tokens, (unsigned long long)qc_limit(QC_LIMIT_VOCAB),
                          qc_limit_env(QC_LIMIT_VOCAB), QC_TOK_MAX_VOCAB);
    if (!d->tokens) return qc_err_set(err, "tokenizer: no token texts");
    t->n_tokens = d->n_tokens;
    t->text = qc_calloc((size_t)d->n_tokens, sizeof *t->text, err);
    t->text_len = qc_calloc((size_t)d->n_tokens, sizeof *t->text_len, err);
    if (!t->text || !t->text_len) return -1;
    size_t total = 0;
    for (int i = 0; i < d->n_tokens; i++) {
        const char *s = d->tokens[i];
        t->text_len[i] = !s ? 0 : d->token_lens ? d->token_lens[i] : strlen(s);
        if (t->text_len[i] >= SIZE_MAX / 2 - total)
            return qc_err_set(err, "tokenizer: token texts too long");
        total += t->text_len[i] + 1;
    }
    if (!(t->text_buf = qc_malloc(total ? total : 1, err))) return -1;
    for (size_t i = 0, at = 0; i < (size_t)d->n_tokens; i++) {
        t->text[i] = t->text_buf + at;
        if (t->text_len[i]) memcpy(t->text[i], d->tokens[i], t->text_len[i]);
        t->text[i][t->text_len[i]] = 0;
        at += t->text_len[i] + 1;
    }
    uint32_t cap = pow2_at_least((size_t)d->n_tokens);
    t->slot_mask = cap - 1;
    t->slots = qc_malloc(cap * sizeof *t->slots, err);
    if (!t->slots) return -1;
    memset(t->slots, 0xFF, cap * sizeof *t->slots);
    /* A text listed twice maps to its last id, as a Python dict built from the
     * list would (this is what HF's GGUF converter and llama.cpp do). */
    for (int i = 0; i < d->n_tokens; i++) {
        uint32_t h = (uint32_t)hash_bytes(t->text[i], t->text_len[i]) & t->slot_mask;
        for (;;) {
            int32_t id = t->slots[h];
            if (id < 0 || (t->text_len[id] == t->text_len[i] &&
                           memcmp(t->text[id], t->text[i], t->text_len[i]) == 0)) {
                t->slots[h] = i;
                break;
            }
            h = (h + 1) & t->slot_mask;
        }
    }
    return 0;
}

static int build_merges(qc_tokenizer *t, int n, const char *const *merges, const char *const *pairs,
                        qc_err *err) {
    if (n < 0) return qc_err_set(err, "tokenizer: negative merge count");
    if (n == 0) return 0;
    uint32_t cap = pow2_at_least((size_t)n);
    t->mmask = cap - 1;
    t->mkey = qc_malloc(cap * sizeof *t->mkey, err);
    t->mrank = qc_malloc(cap * sizeof *t->mrank, err);
    t->mres = qc_malloc(cap * sizeof *t->mres, err);
    if (!t->mkey || !t->mrank || !t->mres) return -1;
    memset(t->mkey, 0xFF, cap * sizeof *t->mkey);
    char *tmp = NULL;
    size_t tmp_cap = 0;
    for (int r = 0; r < n; r++) {
        const char *a, *b;
        size_t na, nb;
        if (pairs) {
            a = pairs[2 * r], b = pairs[2 * r + 1];
            if (!a || !b) {
                free(tmp);
                return qc_err_set(err, "tokenizer: merge %d is missing a side", r);
            }
            na = strlen(a), nb = strlen(b);
        } else {
            const char *m = merges[r];
            /* "left right": the separator is the first space after the first
             * byte (a left side is never empty). */
            const char *sp = m && m[0] ? strchr(m + 1, ' ') : NULL;
            if (!sp) {
                free(tmp);
                return qc_err_set(err, "tokenizer: merge %d ('%.40s') is not 'left right'", r,
                                  m ? m : "");
            }
            a = m, na = (size_t)(sp - m), b = sp + 1, nb = strlen(sp + 1);
        }
        int ia = vocab_find(t, a, na), ib = vocab_find(t, b, nb);
        if (na + nb + 1 > tmp_cap) {
            tmp_cap = 2 * (na + nb + 1);
            char *nt = realloc(tmp, tmp_cap);
            if (!nt) {
                free(tmp);
                return qc_err_set(err, "out of memory");
            }
            tmp = nt;
        }
        memcpy(tmp, a, na);
        memcpy(tmp + na, b, nb);
        int ic = vocab_find(t, tmp, na + nb);
        if (ia < 0 || ib < 0 || ic < 0) {
            qc_err_set(err, "tokenizer: merge %d ('%.40s' + '%.40s'): %s not in the vocabulary", r,
                       a, b,
                       ia < 0   ? "left side"
                       : ib < 0 ? "right side"
                                : "result");
            free(tmp);
            return -1;
        }
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        uint32_t s = merge_slot(t, key);
        if (t->mkey[s] == UINT64_MAX) { /* the first listing of a pair wins */
            t->mkey[s] = key;
            t->mrank[s] = r;
            t->mres[s] = ic;
        }
    }
    free(tmp);
    return 0;
}

static int compile_regex(const char *pattern, int literal, pcre2_code **out, qc_err *err) {
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
    *out = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return qc_err_set(err, "tokenizer: regex '%.80s': offset %zu: %s", pattern, (size_t)eo,
                          (const char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT fails */
    return 0;
}

static int cmp_added_len_desc(const void *x, const void *y, void *ctx) {
    const added *a = ctx;
    size_t lx = a[*(const int *)x].len, ly = a[*(const int *)y].len;
    return lx < ly ? 1 : lx > ly ? -1 : 0;
}

/* Records one added token; tokens with empty text are never matched. */
static int add_added(qc_tokenizer *t, int id, const char *s, size_t n, int special, qc_err *err) {
    if (n == 0) return 0;
    added *a = &t->add[t->n_added];
    a->id = id, a->special = special, a->len = n;
    a->text = qc_malloc(n + 1, err);
    if (!a->text) return -1;
    memcpy(a->text, s, n);
    a->text[n] = 0;
    t->is_added[id] = 1;
    t->n_added++;
    return 0;
}

/* Is every character of s one of the 256 characters of the byte alphabet? */
int qc_tok_in_byte_alphabet(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (cp >= 0x80000000u || cp > 323) return 0;
        if (cp < 256 && byte_to_cp((int)cp) != (int)cp) return 0;
    }
    return 1;
}

static int build_added(qc_tokenizer *t, const qc_tok_spec *s, qc_err *err) {
    const qc_vocab_desc *d = &s->v;
    int cap = s->n_added > 0 ? s->n_added : d->n_tokens;
    t->add = qc_calloc((size_t)cap, sizeof *t->add, err);
    t->is_added = qc_calloc((size_t)t->n_tokens, 1, err);
    if (!t->add || !t->is_added) return -1;
    if (s->n_added > 0) {
        for (int i = 0; i < s->n_added; i++) {
            const qc_added_token *a = &s->added[i];
            if (a->id < 0 || a->id >= t->n_tokens)
                return qc_err_set(err, "tokenizer: added token %d out of range", a->id);
            if (add_added(t, a->id, a->content, a->len, a->special, err)) return -1;
        }
    } else if (d->types) {
        /* GGUF: control (3) tokens are special, user-defined (4) ones are
         * plain added tokens. Like HF's GGUF converter, a byte-level control
         * token spelled outside the byte alphabet is a mislabel and is skipped. */
        for (int i = 0; i < d->n_tokens; i++) {
            int ty = d->types[i];
            if (ty != 3 && ty != 4) continue;
            if (ty == 3 && t->byte_level && !qc_tok_in_byte_alphabet(t->text[i], t->text_len[i]))
                continue;
            if (add_added(t, i, t->text[i], t->text_len[i], ty == 3, err)) return -1;
        }
    }
    for (int i = 0; i < t->n_added; i++)
        t->add_first_n[(unsigned char)t->add[i].text[0]]++;
    for (int b = 0; b < 256; b++) {
        if (!t->add_first_n[b]) continue;
        t->add_first[b] = qc_malloc((size_t)t->add_first_n[b] * sizeof(int), err);
        if (!t->add_first[b]) return -1;
        t->add_first_n[b] = 0;
    }
    for (int i = 0; i < t->n_added; i++) {
        int b = (unsigned char)t->add[i].text[0];
        t->add_first[b][t->add_first_n[b]++] = i;
    }
    for (int b = 0; b < 256; b++)
        if (t->add_first_n[b] > 1)
            qsort_r(t->add_first[b], (size_t)t->add_first_n[b], sizeof(int), cmp_added_len_desc,
                    t->add);
    return 0;
}

static int is_added_id(const qc_tokenizer *t, int id) {
    return t->is_added[id];
}

/* Parses "<0xNN>"; returns the byte or -1. */
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The bytes each token decodes to, stored once so qc_tokenizer_piece can
 * return pointers into them. */
static int build_pieces(qc_tokenizer *t, qc_err *err) {
    size_t total = 0;
    for (int i = 0; i < t->n_tokens; i++)
        if (qc_add_size(total, t->text_len[i], &total))
            return qc_err_set(err, "tokenizer: vocabulary too large");
    t->piece_buf = qc_malloc(total + 1, err);
    t->piece_off = qc_malloc(((size_t)t->n_tokens + 1) * sizeof *t->piece_off, err);
    if (!t->piece_buf || !t->piece_off) return -1;
    int cp_to_byte[324];
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++)
        cp_to_byte[byte_to_cp(b)] = b;
    size_t o = 0;
    for (int i = 0; i < t->n_tokens; i++) {
        const char *s = t->text[i];
        size_t n = t->text_len[i];
        t->piece_off[i] = o;
        int bt = parse_byte_token(s, n);
        if (is_added_id(t, i)) {
            memcpy(t->piece_buf + o, s, n), o += n;
        } else if (t->kind == QC_TOK_SPM && bt >= 0) {
            t->piece_buf[o++] = (char)bt;
        } else if (t->byte_level) {
            /* Undo the byte mapping; a character outside the alphabet is
             * kept as its own UTF-8 bytes. */
            for (size_t j = 0; j < n;) {
                uint32_t cp;
                size_t l = utf8_next((const unsigned char *)s + j, n - j, &cp);
                if (cp < 324 && cp_to_byte[cp] >= 0)
                    t->piece_buf[o++] = (char)cp_to_byte[cp];
                else
                    memcpy(t->piece_buf + o, s + j, l), o += l;
                j += l;
            }
        } else {
            /* SentencePiece: U+2581 stands for a space (3 bytes become 1). */
            for (size_t j = 0; j < n;) {
                if (j + 3 <= n && memcmp(s + j, "\xE2\x96\x81", 3) == 0)
                    t->piece_buf[o++] = ' ', j += 3;
                else
                    t->piece_buf[o++] = s[j++];
            }
        }
    }
    t->piece_off[t->n_tokens] = o;
    return 0;
}

static int build_pre(qc_tokenizer *t, const qc_tok_spec *s, qc_err *err) {
    if (s->n_pre <= 0) return 0;
    t->pre = qc_calloc((size_t)s->n_pre, sizeof *t->pre, err);
    if (!t->pre) return -1;
    for (int i = 0; i < s->n_pre; i++) {
        const qc_pre_step *p = &s->pre[i];
        pre_step *q = &t->pre[t->n_pre++];
        q->kind = p->kind;
        q->behavior = p->kind == QC_PRE_SPLIT ? p->behavior : QC_SPLIT_ISOLATED;
        q->invert = p->invert;
        q->add_prefix_space = p->add_prefix_space;
        const char *re = p->kind == QC_PRE_SPLIT ? p->regex : p->use_regex ? GPT2_REGEX : NULL;
        if (re && compile_regex(re, p->kind == QC_PRE_SPLIT && p->literal, &q->re, err)) return -1;
    }
    return 0;
}

void qc_tokenizer_free(qc_tokenizer *t) {
    if (!t) return;
    free(t->text_buf);
    free(t->text);
    free(t->text_len);
    free(t->scores);
    free(t->piece_buf);
    free(t->piece_off);
    free(t->slots);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    for (int i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (int i = 0; i < t->n_added; i++)
        free(t->add[i].text);
    free(t->add);
    free(t->is_added);
    for (int b = 0; b < 256; b++)
        free(t->add_first[b]);
    free(t);
}

static int check_id(int id, int n, const char *what, qc_err *err) {
    if (id < -1 || id >= n) return qc_err_set(err, "tokenizer: %s id %d out of range", what, id);
    return 0;
}

qc_tokenizer *qc_tokenizer_build(const qc_tok_spec *s, qc_err *err) {
    const qc_vocab_desc *d = &s->v;
    qc_tokenizer *t = qc_calloc(1, sizeof *t, err);
    if (!t) return NULL;
    t->kind = d->kind;
    t->byte_level = s->byte_level;
    t->byte_fallback = s->byte_fallback;
    t->ignore_merges = s->ignore_merges;
    t->add_space_prefix = d->add_space_prefix;
    if (build_vocab(t, d, err)) goto fail;
    if (check_id(d->bos_id, t->n_tokens, "BOS", err) ||
        check_id(d->eos_id, t->n_tokens, "EOS", err) ||
        check_id(d->unk_id, t->n_tokens, "unknown-token", err) ||
        check_id(d->pad_id, t->n_tokens, "padding", err))
        goto fail;
    t->bos = d->bos_id, t->eos = d->eos_id, t->unk = d->unk_id;
    t->add_bos = d->add_bos && d->bos_id >= 0;
    if (d->kind == QC_TOK_SPM) {
        if (d->scores) {
            t->scores = qc_malloc((size_t)t->n_tokens * sizeof *t->scores, err);
            if (!t->scores) goto fail;
            memcpy(t->scores, d->scores, (size_t)t->n_tokens * sizeof *t->scores);
        }
    } else if (build_merges(t, d->n_merges, d->merges, s->merge_pairs, err)) {
        goto fail;
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (t->byte_level) {
            int n = utf8_put((uint32_t)byte_to_cp(b), buf);
            t->byte_tok[b] = vocab_find(t, buf, (size_t)n);
        } else {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            t->byte_tok[b] = vocab_find(t, buf, 6);
        }
    }
    if (build_added(t, s, err) || build_pieces(t, err) || build_pre(t, s, err)) goto fail;
    return t;
fail:
    qc_tokenizer_free(t);
    return NULL;
}

qc_tokenizer *qc_tokenizer_new(const qc_vocab_desc *d, qc_err *err) {
    qc_tok_spec s;
    memset(&s, 0, sizeof s);
    s.v = *d;
    qc_pre_step steps[2];
    memset(steps, 0, sizeof steps);
    if (d->kind == QC_TOK_SPM) {
        s.byte_fallback = 1;
        return qc_tokenizer_build(&s, err);
    }
    if (d->kind != QC_TOK_BPE) {
        qc_err_set(err, "tokenizer: unknown tokenizer kind %d", (int)d->kind);
        return NULL;
    }
    /* Byte-level BPE: the regexes llama.cpp uses for each tokenizer.ggml.pre
     * (which are those of the models' own tokenizer.json files). */
    const char *pre = d->pre ? d->pre : "default";
    s.byte_level = 1;
    s.pre = steps;
    if (!strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2")) {
        steps[s.n_pre++] = (qc_pre_step){.kind = QC_PRE_BYTELEVEL, .use_regex = 1};
    } else if (!strcmp(pre, "smollm")) {
        /* SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel. */
        steps[s.n_pre++] = (qc_pre_step){.kind = QC_PRE_SPLIT, .regex = "\\p{N}"};
        steps[s.n_pre++] = (qc_pre_step){.kind = QC_PRE_BYTELEVEL, .use_regex = 1};
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3") ||
               !strcmp(pre, "smaug-bpe") || !strcmp(pre, "falcon3") || !strcmp(pre, "dbrx")) {
        steps[s.n_pre++] = (qc_pre_step){.kind = QC_PRE_SPLIT, .regex = LLAMA3_REGEX};
    } else if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen") ||
               !strcmp(pre, "megrez")) {
        steps[s.n_pre++] = (qc_pre_step){.kind = QC_PRE_SPLIT, .regex = QWEN2_REGEX};
    } else {
        qc_err_set(err, "tokenizer: unsupported pre-tokenizer '%s' (tokenizer.ggml.pre)", pre);
        return NULL;
    }
    return qc_tokenizer_build(&s, err);
}

/* ---- encoding ---- */

typedef struct ibuf {
    int32_t *v;
    size_t n, cap;
} ibuf;

static int ibuf_push(ibuf *b, int32_t x) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 256;
        int32_t *nv = realloc(b->v, nc * sizeof *nv);
        if (!nv) return -1;
        b->v = nv, b->cap = nc;
    }
    b->v[b->n++] = x;
    return 0;
}

/* Pieces: byte ranges of a growing buffer. */
typedef struct pieces {
    char *buf;
    size_t blen, bcap;
    size_t (*sp)[2]; /* offset, length */
    size_t n, cap;
} pieces;

static int pieces_add(pieces *p, const char *s, size_t n, const char *prefix, size_t np) {
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        void *ns = realloc(p->sp, nc * sizeof *p->sp);
        if (!ns) return -1;
        p->sp = ns, p->cap = nc;
    }
    if (!p->buf || p->blen + n + np > p->bcap) {
        size_t nc = 2 * (p->blen + n + np) + 256;
        char *nb = realloc(p->buf, nc);
        if (!nb) return -1;
        p->buf = nb, p->bcap = nc;
    }
    p->sp[p->n][0] = p->blen;
    p->sp[p->n][1] = n + np;
    p->n++;
    memcpy(p->buf + p->blen, prefix, np);
    memcpy(p->buf + p->blen + np, s, n);
    p->blen += n + np;
    return 0;
}

/* Extends the last piece by n bytes at its end (MergedWithPrevious). The
 * bytes must directly follow it in the source, so they are copied. */
static int pieces_extend(pieces *p, const char *s, size_t n) {
    if (!p->buf || p->blen + n > p->bcap) {
        size_t nc = 2 * (p->blen + n) + 256;
        char *nb = realloc(p->buf, nc);
        if (!nb) return -1;
        p->buf = nb, p->bcap = nc;
    }
    memcpy(p->buf + p->blen, s, n);
    p->blen += n;
    p->sp[p->n - 1][1] += n;
    return 0;
}

typedef struct span {
    size_t start, end;
    int match;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_push(spans *s, size_t a, size_t b, int match) {
    if (a == b) return 0;
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        span *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = (span){a, b, match};
    return 0;
}

/* Cuts s into spans that alternate between regex matches and the gaps
 * between them (HF's Split find_matches; empty matches are skipped). */
static int regex_spans(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                       int invert, spans *out, qc_err *err) {
    out->n = 0;
    size_t pos = 0, last = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return qc_err_set(err, "tokenizer: regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* empty match: step one character on */
            if (a >= n) break;
            uint32_t cp;
            pos = a + utf8_next((const unsigned char *)s + a, n - a, &cp);
            continue;
        }
        if (spans_push(out, last, a, invert) || spans_push(out, a, b, !invert))
            return qc_err_set(err, "out of memory");
        last = pos = b;
    }
    if (spans_push(out, last, n, invert)) return qc_err_set(err, "out of memory");
    return 0;
}

typedef struct enc_ctx {
    pcre2_match_data *md;
    spans sp;
    pieces a, b;
    /* per-call cache: piece bytes -> ids */
    char *ckey;
    size_t ckey_len, ckey_cap;
    size_t (*cent)[4]; /* key offset, key length, ids offset, ids count */
    size_t cn, ccap;
    int32_t *cslot;
    uint32_t cmask;
    ibuf cids;
    /* BPE work arrays */
    struct sym {
        int32_t id;
        int prev, next;
        size_t start, len;
    } * sym;
    size_t sym_cap;
    struct hent {
        double prio;
        int left, right;
        size_t llen, rlen;
        int32_t res;
    } * heap;
    size_t heap_n, heap_cap;
} enc_ctx;

static void enc_ctx_free(enc_ctx *c) {
    if (c->md) pcre2_match_data_free(c->md);
    free(c->sp.v);
    free(c->a.buf), free(c->a.sp), free(c->b.buf), free(c->b.sp);
    free(c->ckey), free(c->cent), free(c->cslot), free(c->cids.v);
    free(c->sym), free(c->heap);
}

/* Applies one split step to every piece of `in`, writing `out`. */
static int split_step(const pre_step *st, enc_ctx *c, const pieces *in, pieces *out, qc_err *err) {
    out->n = out->blen = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->buf + in->sp[i][0];
        size_t n = in->sp[i][1];
        if (st->kind == QC_PRE_BYTELEVEL && st->add_prefix_space && (n == 0 || s[0] != ' ')) {
            /* HF ByteLevel(add_prefix_space) prepends a space to each piece
             * that does not start with one. */
            if (!st->re) {
                if (pieces_add(out, s, n, " ", 1)) return qc_err_set(err, "out of memory");
                continue;
            }
            pieces tmp = {0};
            if (pieces_add(&tmp, s, n, " ", 1)) return qc_err_set(err, "out of memory");
            int rc = regex_spans(st->re, c->md, tmp.buf, tmp.blen, 0, &c->sp, err);
            for (size_t k = 0; rc == 0 && k < c->sp.n; k++)
                if (pieces_add(out, tmp.buf + c->sp.v[k].start, c->sp.v[k].end - c->sp.v[k].start,
                               "", 0))
                    rc = qc_err_set(err, "out of memory");
            free(tmp.buf), free(tmp.sp);
            if (rc) return -1;
            continue;
        }
        if (!st->re) {
            if (pieces_add(out, s, n, "", 0)) return qc_err_set(err, "out of memory");
            continue;
        }
        if (regex_spans(st->re, c->md, s, n, st->invert, &c->sp, err)) return -1;
        int prev_match = 0;
        size_t first_out = out->n;
        if (st->behavior == QC_SPLIT_MERGED_NEXT) {
            /* Walk backwards: a match joins the piece after it. */
            size_t lo = out->n;
            for (size_t k = c->sp.n; k-- > 0;) {
                span *sp = &c->sp.v[k];
                if (sp->match && !prev_match && out->n > lo) {
                    size_t *last = out->sp[out->n - 1];
                    /* prepend: rebuild the last piece from the source span */
                    size_t end = sp->end + last[1];
                    out->n--, out->blen = last[0];
                    if (pieces_add(out, s + sp->start, end - sp->start, "", 0))
                        return qc_err_set(err, "out of memory");
                } else if (pieces_add(out, s + sp->start, sp->end - sp->start, "", 0)) {
                    return qc_err_set(err, "out of memory");
                }
                prev_match = sp->match;
            }
            /* pieces were produced last-first; reverse them in place */
            for (size_t x = lo, y = out->n - 1; x < y && out->n > lo; x++, y--) {
                size_t t0 = out->sp[x][0], t1 = out->sp[x][1];
                out->sp[x][0] = out->sp[y][0], out->sp[x][1] = out->sp[y][1];
                out->sp[y][0] = t0, out->sp[y][1] = t1;
            }
            continue;
        }
        for (size_t k = 0; k < c->sp.n; k++) {
            span *sp = &c->sp.v[k];
            size_t len = sp->end - sp->start;
            int r = 0;
            if (st->behavior == QC_SPLIT_REMOVED) {
                if (!sp->match) r = pieces_add(out, s + sp->start, len, "", 0);
            } else if (st->behavior == QC_SPLIT_MERGED_PREV && sp->match && !prev_match &&
                       out->n > first_out) {
                r = pieces_extend(out, s + sp->start, len);
            } else {
                r = pieces_add(out, s + sp->start, len, "", 0);
            }
            if (r) return qc_err_set(err, "out of memory");
            prev_match = sp->match;
        }
    }
    return 0;
}

/* ---- BPE on one piece: a heap of candidate merges, lowest priority first,
 * leftmost on ties; stale entries are skipped when popped. */

static int heap_less(const struct hent *a, const struct hent *b) {
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(enc_ctx *c, struct hent e) {
    if (c->heap_n == c->heap_cap) {
        size_t nc = c->heap_cap ? 2 * c->heap_cap : 64;
        struct hent *nh = realloc(c->heap, nc * sizeof *nh);
        if (!nh) return -1;
        c->heap = nh, c->heap_cap = nc;
    }
    size_t i = c->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = e;
    return 0;
}

static struct hent heap_pop(enc_ctx *c) {
    struct hent top = c->heap[0], last = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct hent *best = &last;
        if (l < n && heap_less(&c->heap[l], best)) m = l, best = &c->heap[l];
        if (l + 1 < n && heap_less(&c->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

/* Pushes the candidate merge of symbols l and r, if there is one. */
static int try_pair(const qc_tokenizer *t, enc_ctx *c, const char *s, int l, int r) {
    if (l < 0 || r < 0) return 0;
    struct sym *a = &c->sym[l], *b = &c->sym[r];
    struct hent e = {0, l, r, a->len, b->len, -1};
    if (t->kind == QC_TOK_SPM) {
        int id = vocab_find(t, s + a->start, a->len + b->len);
        if (id < 0) return 0;
        e.prio = t->scores ? -(double)t->scores[id] : 0;
        e.res = id;
    } else {
        if (a->id < 0 || b->id < 0) return 0;
        int rank = merge_find(t, a->id, b->id, &e.res);
        if (rank < 0) return 0;
        e.prio = rank;
    }
    return heap_push(c, e);
}

static int sym_reserve(enc_ctx *c, size_t n) {
    if (n <= c->sym_cap) return 0;
    size_t nc = n < 64 ? 64 : 2 * n;
    struct sym *ns = realloc(c->sym, nc * sizeof *ns);
    if (!ns) return -1;
    c->sym = ns, c->sym_cap = nc;
    return 0;
}

/* Merges the linked symbols sym[0..count) until no candidate is left. */
static int merge_syms(const qc_tokenizer *t, enc_ctx *c, const char *s, int count) {
    c->sym[count - 1].next = -1;
    c->heap_n = 0;
    for (int i = 0; i + 1 < count; i++)
        if (try_pair(t, c, s, i, i + 1)) return -1;
    while (c->heap_n) {
        struct hent e = heap_pop(c);
        struct sym *a = &c->sym[e.left], *b = &c->sym[e.right];
        if (a->len == 0 || b->len == 0 || a->next != e.right || a->len != e.llen ||
            b->len != e.rlen)
            continue; /* stale: one side has been merged since */
        a->id = e.res;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (b->next >= 0) c->sym[b->next].prev = e.left;
        if (try_pair(t, c, s, a->prev, e.left) || try_pair(t, c, s, e.left, a->next)) return -1;
    }
    return 0;
}

/* Appends the initial symbol(s) of the character s[0..n): its token, or
 * byte-fallback tokens, or unk; a character with none of these is dropped
 * (HF BPE without unk_token does the same). */
static int add_char_syms(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t off, size_t n,
                         int *count) {
    int id = vocab_find(t, s + off, n);
    if (id >= 0) {
        if (sym_reserve(c, (size_t)*count + 1)) return -1;
        c->sym[*count] = (struct sym){id, *count - 1, *count + 1, off, n};
        (*count)++;
        return 0;
    }
    int all_bytes = t->byte_fallback;
    for (size_t k = 0; all_bytes && k < n; k++)
        if (t->byte_tok[(unsigned char)s[off + k]] < 0) all_bytes = 0;
    if (sym_reserve(c, (size_t)*count + n)) return -1;
    if (all_bytes) {
        for (size_t k = 0; k < n; k++) {
            c->sym[*count] = (struct sym){t->byte_tok[(unsigned char)s[off + k]], *count - 1,
                                          *count + 1, off + k, 1};
            (*count)++;
        }
    } else if (t->unk >= 0) {
        c->sym[*count] = (struct sym){t->unk, *count - 1, *count + 1, off, n};
        (*count)++;
    }
    return 0;
}

/* BPE-merges the piece s[0..n) and appends its ids to out. */
static int bpe_piece(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t n, ibuf *out,
                     qc_err *err) {
    int count = 0;
    if (t->ignore_merges && !t->byte_level) {
        int id = vocab_find(t, s, n);
        if (id >= 0) return ibuf_push(out, id) ? qc_err_set(err, "out of memory") : 0;
    }
    if (t->byte_level) {
        if (t->ignore_merges && n <= 256) {
            char tmp[1024];
            size_t m = 0;
            for (size_t k = 0; k < n; k++)
                m += (size_t)utf8_put((uint32_t)byte_to_cp((unsigned char)s[k]), tmp + m);
            int id = vocab_find(t, tmp, m);
            if (id >= 0) return ibuf_push(out, id) ? qc_err_set(err, "out of memory") : 0;
        }
        if (sym_reserve(c, n)) return qc_err_set(err, "out of memory");
        for (size_t k = 0; k < n; k++) {
            int32_t id = t->byte_tok[(unsigned char)s[k]];
            if (id < 0) continue; /* a byte the vocabulary lacks: dropped, as in HF */
            c->sym[count] = (struct sym){id, count - 1, count + 1, k, 1};
            count++;
        }
    } else {
        for (size_t k = 0; k < n;) {
            uint32_t cp;
            size_t l = utf8_next((const unsigned char *)s + k, n - k, &cp);
            if (add_char_syms(t, c, s, k, l, &count)) return qc_err_set(err, "out of memory");
            k += l;
        }
    }
    if (count == 0) return 0;
    if (merge_syms(t, c, s, count)) return qc_err_set(err, "out of memory");
    for (int i = 0; i >= 0; i = c->sym[i].next)
        if (ibuf_push(out, c->sym[i].id)) return qc_err_set(err, "out of memory");
    return 0;
}

/* SentencePiece BPE over one text segment (spaces already replaced). */
static int spm_piece(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t n, ibuf *out,
                     qc_err *err) {
    int count = 0;
    if (sym_reserve(c, n)) return qc_err_set(err, "out of memory");
    for (size_t k = 0; k < n;) {
        uint32_t cp;
        size_t l = utf8_next((const unsigned char *)s + k, n - k, &cp);
        c->sym[count] = (struct sym){vocab_find(t, s + k, l), count - 1, count + 1, k, l};
        count++;
        k += l;
    }
    if (count == 0) return 0;
    if (merge_syms(t, c, s, count)) return qc_err_set(err, "out of memory");
    for (int i = 0; i >= 0; i = c->sym[i].next) {
        struct sym *y = &c->sym[i];
        if (y->id >= 0) {
            if (ibuf_push(out, y->id)) return qc_err_set(err, "out of memory");
            continue;
        }
        /* byte fallback, else the unknown token */
        for (size_t k = 0; k < y->len; k++) {
            int32_t id = t->byte_tok[(unsigned char)s[y->start + k]];
            if (id < 0) {
                if (t->unk >= 0 && ibuf_push(out, t->unk)) return qc_err_set(err, "out of memory");
                break;
            }
            if (ibuf_push(out, id)) return qc_err_set(err, "out of memory");
        }
    }
    return 0;
}

/* Encodes one piece through the per-call cache. */
static int encode_piece(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t n, ibuf *out,
                        qc_err *err) {
    uint64_t h = hash_bytes(s, n);
    uint32_t i = (uint32_t)h & c->cmask;
    for (;;) {
        int32_t e = c->cslot[i];
        if (e < 0) break;
        size_t *en = c->cent[e];
        if (en[1] == n && memcmp(c->ckey + en[0], s, n) == 0) {
            for (size_t k = 0; k < en[3]; k++)
                if (ibuf_push(out, c->cids.v[en[2] + k])) return qc_err_set(err, "out of memory");
            return 0;
        }
        i = (i + 1) & c->cmask;
    }
    size_t before = out->n;
    if (bpe_piece(t, c, s, n, out, err)) return -1;
    /* Cache pieces of reasonable size while the table is below half full
     * (the table size is fixed per call, so memory stays bounded). */
    if (n > 256 || c->cn * 2 >= (size_t)c->cmask + 1) return 0;
    if (c->cn == c->ccap) {
        size_t nc = c->ccap ? 2 * c->ccap : 1024;
        void *ne = realloc(c->cent, nc * sizeof *c->cent);
        if (!ne) return 0;
        c->cent = ne, c->ccap = nc;
    }
    if (c->ckey_len + n > c->ckey_cap) {
        size_t nc = 2 * (c->ckey_len + n) + 4096;
        char *nk = realloc(c->ckey, nc);
        if (!nk) return 0;
        c->ckey = nk, c->ckey_cap = nc;
    }
    size_t ids_off = c->cids.n;
    for (size_t k = before; k < out->n; k++)
        if (ibuf_push(&c->cids, out->v[k])) return 0;
    memcpy(c->ckey + c->ckey_len, s, n);
    c->cent[c->cn][0] = c->ckey_len, c->cent[c->cn][1] = n;
    c->cent[c->cn][2] = ids_off, c->cent[c->cn][3] = out->n - before;
    c->ckey_len += n;
    c->cslot[i] = (int32_t)c->cn++;
    return 0;
}

/* Pre-tokenizes and BPE-encodes a text segment that holds no added token. */
static int encode_segment(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t n, int first,
                          ibuf *out, qc_err *err) {
    if (n == 0) return 0;
    if (t->kind == QC_TOK_SPM) {
        /* Spaces become U+2581; add_space_prefix puts one before the text. */
        pieces *p = &c->a;
        p->n = p->blen = 0;
        if (pieces_add(p, "", 0, "", 0)) return qc_err_set(err, "out of memory");
        if (first && t->add_space_prefix && pieces_extend(p, "\xE2\x96\x81", 3))
            return qc_err_set(err, "out of memory");
        for (size_t k = 0; k < n; k++) {
            int r = s[k] == ' ' ? pieces_extend(p, "\xE2\x96\x81", 3) : pieces_extend(p, s + k, 1);
            if (r) return qc_err_set(err, "out of memory");
        }
        return spm_piece(t, c, p->buf, p->blen, out, err);
    }
    pieces *cur = &c->a, *nxt = &c->b;
    cur->n = cur->blen = 0;
    if (pieces_add(cur, s, n, "", 0)) return qc_err_set(err, "out of memory");
    for (int k = 0; k < t->n_pre; k++) {
        if (split_step(&t->pre[k], c, cur, nxt, err)) return -1;
        pieces *tmp = cur;
        cur = nxt, nxt = tmp;
    }
    for (size_t k = 0; k < cur->n; k++)
        if (encode_piece(t, c, cur->buf + cur->sp[k][0], cur->sp[k][1], out, err)) return -1;
    return 0;
}

/* Longest added token (of the given kind) starting at s, or -1. */
static int match_added(const qc_tokenizer *t, const char *s, size_t n, int special) {
    int b = (unsigned char)s[0];
    for (int k = 0; k < t->add_first_n[b]; k++) {
        const added *a = &t->add[t->add_first[b][k]];
        if (a->special == special && a->len <= n && memcmp(a->text, s, a->len) == 0)
            return t->add_first[b][k];
    }
    return -1;
}

/* Splits on added tokens of one kind (special first, then the others inside
 * the gaps), encoding the text between them. */
static int encode_added(const qc_tokenizer *t, enc_ctx *c, const char *s, size_t n, int special,
                        size_t base, ibuf *out, qc_err *err) {
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        int a = t->n_added ? match_added(t, s + i, n - i, special) : -1;
        if (a < 0) {
            i++;
            continue;
        }
        int r = special ? encode_added(t, c, s + last, i - last, 0, base + last, out, err)
                        : encode_segment(t, c, s + last, i - last, base + last == 0, out, err);
        if (r) return -1;
        if (ibuf_push(out, t->add[a].id)) return qc_err_set(err, "out of memory");
        i += t->add[a].len;
        last = i;
    }
    return special ? encode_added(t, c, s + last, n - last, 0, base + last, out, err)
                   : encode_segment(t, c, s + last, n - last, base + last == 0, out, err);
}

int qc_tokenizer_encode(const qc_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, qc_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!t) return qc_err_set(err, "tokenizer: NULL tokenizer");
    if (len && !text) return qc_err_set(err, "tokenizer: NULL text");
    enc_ctx c;
    memset(&c, 0, sizeof c);
    ibuf out = {0};
    int rc = -1;
    /* Cache table: sized to the text, at most 2^20 slots. */
    uint32_t cap = 1024;
    while (cap < len / 2 && cap < (1u << 20))
        cap <<= 1;
    c.cmask = cap - 1;
    c.cslot = malloc(cap * sizeof *c.cslot);
    c.md = pcre2_match_data_create(4, NULL);
    if (!c.cslot || !c.md) {
        qc_err_set(err, "out of memory");
        goto done;
    }
    memset(c.cslot, 0xFF, cap * sizeof *c.cslot);
    if (add_special && t->add_bos && ibuf_push(&out, t->bos)) {
        qc_err_set(err, "out of memory");
        goto done;
    }
    if (len && encode_added(t, &c, text, len, 1, 0, &out, err)) goto done;
    *ids = out.v ? out.v : malloc(sizeof(int32_t));
    if (!*ids) {
        qc_err_set(err, "out of memory");
        goto done;
    }
    *n_ids = out.n;
    out.v = NULL;
    rc = 0;
done:
    free(out.v);
    enc_ctx_free(&c);
    return rc;
}

/* ---- decoding and lookups ---- */

const char *qc_tokenizer_piece(const qc_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_tokens) return NULL;
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece_buf + t->piece_off[id];
}

char *qc_tokenizer_decode(const qc_tokenizer *t, const int32_t *ids, size_t n, qc_err *err) {
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (!qc_tokenizer_piece(t, ids[i], &l)) {
            qc_err_set(err, "tokenizer: token id %d out of range (vocabulary %d)", (int)ids[i],
                       t ? t->n_tokens : 0);
            return NULL;
        }
        total += l;
    }
    char *s = qc_malloc(total, err);
    if (!s) return NULL;
    size_t o = 0;
    int seen_text = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        const char *p = qc_tokenizer_piece(t, ids[i], &l);
        int is_added = is_added_id(t, ids[i]);
        /* SentencePiece: the space add_space_prefix put in front of the text
         * is dropped from its first token, as SentencePiece does. */
        if (t->kind == QC_TOK_SPM && t->add_space_prefix && !seen_text && !is_added && l &&
            p[0] == ' ')
            p++, l--;
        if (!is_added) seen_text = 1;
        memcpy(s + o, p, l);
        o += l;
    }
    s[o] = 0;
    return s;
}

int qc_tokenizer_vocab_size(const qc_tokenizer *t) {
    return t ? t->n_tokens : 0;
}

int qc_tokenizer_bos(const qc_tokenizer *t) {
    return t ? t->bos : -1;
}

int qc_tokenizer_eos(const qc_tokenizer *t) {
    return t ? t->eos : -1;
}

int qc_tokenizer_find(const qc_tokenizer *t, const char *text) {
    if (!t || !text) return -1;
    return vocab_find(t, text, strlen(text));
}
