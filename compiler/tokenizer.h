/* Tokenizers: byte-level BPE (GPT-2 / Llama-3 / Qwen / SmolLM style) and
 * SentencePiece-style BPE (llama / SPM vocabularies from GGUF). Built from a
 * Hugging Face tokenizer.json or from GGUF metadata (through qc_vocab_desc). */
#ifndef QC_TOKENIZER_H
#define QC_TOKENIZER_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_tokenizer qc_tokenizer;

typedef enum qc_tok_kind {
    QC_TOK_BPE, /* byte-level BPE: tokenizer.ggml.model = "gpt2" */
    QC_TOK_SPM, /* SentencePiece BPE over scores: tokenizer.ggml.model = "llama" */
} qc_tok_kind;

/* Everything a GGUF file says about its tokenizer. Arrays are borrowed for
 * the duration of qc_tokenizer_new only (it copies what it keeps). */
typedef struct qc_vocab_desc {
    qc_tok_kind kind;
    int n_tokens;
    const char *const *tokens; /* token texts (byte-level encoded for BPE) */
    const size_t *token_lens;  /* lengths of tokens[i] (texts may hold NULs) */
    const float *scores;       /* SPM merge scores; may be NULL */
    const int32_t *types;      /* GGUF token types (1 normal, 2 unknown, 3 control,
                                  4 user-defined, 5 unused, 6 byte); may be NULL */
    int n_merges;
    const char *const *merges; /* "left right", BPE only */
    const char *pre; /* tokenizer.ggml.pre, e.g. "smollm", "llama-bpe", "qwen2"; may be NULL */
    int bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos;                        /* prepend BOS when encoding with add_special */
    int add_space_prefix;               /* SPM: prepend a space to the text */
} qc_vocab_desc;

qc_tokenizer *qc_tokenizer_new(const qc_vocab_desc *d, qc_err *err);

/* Loads a Hugging Face tokenizer.json (with tokenizer_config.json beside it
 * when present, for add_bos). Errors name the file and line:column. */
qc_tokenizer *qc_tokenizer_from_json(const char *path, qc_err *err);

/* The same from a tokenizer.json held in memory (no tokenizer_config.json);
 * `name` is used in error messages. */
qc_tokenizer *qc_tokenizer_from_json_buffer(const char *data, size_t len, const char *name,
                                            qc_err *err);

/* The same with a tokenizer_config.json held in memory (config may be NULL);
 * config_name is used in messages about it. */
qc_tokenizer *qc_tokenizer_from_json_buffers(const char *data, size_t len, const char *config,
                                             size_t config_len, const char *config_name,
                                             const char *name, qc_err *err);

void qc_tokenizer_free(qc_tokenizer *t);

/* Encodes len bytes of text. With add_special, prepends BOS where the
 * tokenizer is configured to. *ids is a new array the caller frees. Special
 * tokens written in the text (e.g. "<|im_start|>") are matched as tokens. */
int qc_tokenizer_encode(const qc_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, qc_err *err);

/* The bytes token `id` stands for (byte-level and SPM escapes undone;
 * control tokens give their text). Returns a pointer valid until the
 * tokenizer is freed and sets *len; NULL for an id out of range. */
const char *qc_tokenizer_piece(const qc_tokenizer *t, int32_t id, size_t *len);

/* Decodes ids into a new NUL-terminated string (caller frees). */
char *qc_tokenizer_decode(const qc_tokenizer *t, const int32_t *ids, size_t n, qc_err *err);

int qc_tokenizer_vocab_size(const qc_tokenizer *t);
int qc_tokenizer_bos(const qc_tokenizer *t); /* -1 when none */
int qc_tokenizer_eos(const qc_tokenizer *t);
/* Looks up a token by its exact vocabulary text; -1 when absent. */
int qc_tokenizer_find(const qc_tokenizer *t, const char *text);

#endif
