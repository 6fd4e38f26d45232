/* A GGUF file's tokenizer (its tokenizer.* metadata) as Hugging Face
 * tokenizer.json + tokenizer_config.json, for exports of models compiled
 * from a GGUF source (issue 7).
 *
 * Converted: byte-level BPE vocabularies (tokenizer.ggml.model "gpt2") whose
 * pre-tokenizer (tokenizer.ggml.pre) is "default"/"gpt2" (ByteLevel with
 * GPT-2's regex) or "smollm" (Digits(individual) then ByteLevel): the BPE
 * model gets the token texts as they are (already in GPT-2's byte alphabet),
 * ids in file order, the merges in rank order; control (3) and user-defined
 * (4) tokens become added tokens (special for control), so they are matched
 * before pre-tokenization as quantc and llama.cpp match them; BOS is
 * prepended by the post-processor when add_bos_token says so. These are the
 * vocabularies tests/test_ct_export_tokenizer.py checks against quantc's own
 * tokenizer through the `tokenizers` package. Other pre-tokenizers (llama3,
 * qwen2, ...) and SentencePiece vocabularies are not converted: without a
 * real vocabulary of that kind to test on, a tokenizer.json that might split
 * text differently would be worse than none. */
#ifndef QC_GGUF_HF_TOKENIZER_H
#define QC_GGUF_HF_TOKENIZER_H

#include "gguf.h"

#include <jansson.h>

/* Returns 0 with *tok and *cfg new JSON objects; 1 when g's tokenizer is not
 * one this converts (why, a sentence, says which); -1 with err on a
 * malformed tokenizer. model_max_length goes into the config. */
int qc_gguf_hf_tokenizer(const qc_gguf *g, int model_max_length, json_t **tok, json_t **cfg,
                         char *why, size_t why_len, qc_err *err);

#endif
