/* Hugging Face config.json → qc_config, following transformers' defaults per
 * model type (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config).
 *
 * Supported: model_type llama (incl. SmolLM), mistral, qwen2, qwen3 (or, when
 * model_type is absent, architectures[0] = LlamaForCausalLM, ...). Rope
 * parameters are read from the transformers 4 spelling (rope_theta +
 * rope_scaling) or the transformers 5 one (rope_parameters {rope_theta,
 * rope_type, ...}); rope types default, llama3 and linear are supported.
 *
 * Sliding-window attention (mistral sliding_window, qwen2/qwen3
 * use_sliding_window) is accepted but quantc always evaluates with full
 * causal attention: identical for sequences no longer than the window. The
 * window is reported through qc_hf_config_info so callers can warn. */
#ifndef QC_HF_CONFIG_H
#define QC_HF_CONFIG_H

#include "err.h"
#include "model.h"

#include <stddef.h>

/* Facts from config.json that qc_config does not carry. */
typedef struct qc_hf_config_info {
    int sliding_window; /* window that transformers would apply; 0 when none */
} qc_hf_config_info;

/* Parses len bytes of config.json text (need not be NUL-terminated). `where`
 * names the file in messages ("DIR/config.json: line 3, column 5: ...").
 * Fills *cfg (every field) and *info when non-NULL. Returns 0 or -1 with err
 * set. */
int qc_hf_config_parse(const char *text, size_t len, const char *where, qc_config *cfg,
                       qc_hf_config_info *info, qc_err *err);

/* Reads and parses the file at path (at most 16 MB). */
int qc_hf_config_load(const char *path, qc_config *cfg, qc_hf_config_info *info, qc_err *err);

#endif
