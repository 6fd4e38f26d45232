/* Format-specific loaders behind qc_model_load. Each fills an empty model
 * (config, tensors, files, tokenizer) and returns 0, or -1 with err set; on
 * failure the caller frees the partly filled model. */
#ifndef QC_LOADERS_H
#define QC_LOADERS_H

#include "model.h"

/* Hugging Face directory: config.json, model.safetensors or
 * model.safetensors.index.json + shards, tokenizer.json when present. */
int qc_hf_load(qc_model *m, const char *dir, qc_err *err);

/* GGUF v2/v3 file: config and tokenizer from metadata, tensors renamed to HF
 * names and shapes reversed to row-major (out, in). */
int qc_gguf_load(qc_model *m, const char *path, qc_err *err);

#endif
