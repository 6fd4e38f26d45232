/* Internals shared by tokenizer.c (encoding, GGUF vocabularies) and
 * tokenizer_json.c (Hugging Face tokenizer.json). Not a public API. */
#ifndef QC_TOKENIZER_IMPL_H
#define QC_TOKENIZER_IMPL_H

/* Largest vocabulary (and merge list) accepted: 8x the largest real ones
 * (~262k), small enough that a hostile file cannot make us allocate much. */
#define QC_TOK_MAX_VOCAB (1 << 21)

#include "tokenizer.h"

#include <stdint.h>

/* One pre-tokenizer step, applied in order to every piece the previous
 * steps produced (as Hugging Face's pre_tokenizers.Sequence does). */
typedef enum qc_pre_kind {
    QC_PRE_SPLIT,     /* split on a regex with a Split behavior */
    QC_PRE_BYTELEVEL, /* optional prefix space, then GPT-2's regex (use_regex) */
} qc_pre_kind;

typedef enum qc_split_behavior {
    QC_SPLIT_ISOLATED,    /* matches and gaps both become pieces */
    QC_SPLIT_REMOVED,     /* matches are dropped */
    QC_SPLIT_MERGED_PREV, /* each match joins the piece before it */
    QC_SPLIT_MERGED_NEXT, /* each match joins the piece after it */
} qc_split_behavior;

typedef struct qc_pre_step {
    qc_pre_kind kind;
    const char *regex; /* QC_PRE_SPLIT: PCRE2 pattern (UTF + UCP) */
    int literal;       /* QC_PRE_SPLIT: regex is a plain string, not a pattern */
    qc_split_behavior behavior;
    int invert;           /* QC_PRE_SPLIT: the pattern marks the pieces, not the separators */
    int add_prefix_space; /* QC_PRE_BYTELEVEL */
    int use_regex;        /* QC_PRE_BYTELEVEL */
} qc_pre_step;

/* A tokenizer.json added token: matched literally before pre-tokenization. */
typedef struct qc_added_token {
    int id;
    const char *content;
    size_t len;
    int special;
} qc_added_token;

/* Everything needed to build a tokenizer, whatever file it came from. */
typedef struct qc_tok_spec {
    qc_vocab_desc v;                /* vocabulary, merges, special ids; v.pre is unused here */
    int byte_level;                 /* tokens are written in GPT-2's byte alphabet */
    int byte_fallback;              /* unknown characters become <0xNN> tokens */
    int ignore_merges;              /* a whole word found in the vocabulary is kept as is */
    const char *const *merge_pairs; /* when non-NULL: 2 * v.n_merges strings, left then right,
                                       used instead of v.merges */
    int n_pre;
    const qc_pre_step *pre;
    int n_added; /* when > 0, replaces the added tokens implied by v.types */
    const qc_added_token *added;
} qc_tok_spec;

qc_tokenizer *qc_tokenizer_build(const qc_tok_spec *s, qc_err *err);

/* 1 when every character of the UTF-8 text s (n bytes) is in GPT-2's byte
 * alphabet (a GGUF control token spelled otherwise is a mislabel). */
int qc_tok_in_byte_alphabet(const char *s, size_t n);

#endif
