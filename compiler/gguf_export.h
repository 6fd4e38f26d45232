/* Export of a model to GGUF for llama.cpp (issue 7): llama.cpp's tensor
 * names and metadata for the llama (incl. mistral), qwen2 and qwen3
 * architectures, llama q/k rows permuted back to GGUF order, Llama 3 RoPE
 * scaling as a rope_freqs.weight table, the tokenizer.* keys of a GGUF
 * source copied unchanged, and weights quantized into ggml block types by
 * compiler/ggml_quant.h.
 *
 * Type choice per tensor: linears get `linear`, the embedding `embed`, the
 * output projection `output`; norms and biases stay F32. A type whose block
 * does not divide the row length falls back as llama-quantize does (Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q3_K -> Q4_0, IQ4_XS -> IQ4_NL), and the summary
 * counts the fallbacks.
 *
 * A compiled artifact's tensors stored in ggml block types (quantize format
 * gguf:*; those it kept from a GGUF source) are written unchanged (llama
 * q/k rows permuted as whole rows of blocks), so llama.cpp reads exactly
 * the weights quantc evaluated; its other tensors (F32: e.g. a rotated
 * embedding) get the types asked for. A tied head of an artifact is not
 * written unless output_given (llama.cpp then reads the embedding, as
 * quantc does). Refused with the layer and the feature named: group-wise
 * integer codes (format int), sparse outliers, low-rank factors, online
 * transforms -- unless fallback_dequantize, which writes such layers as
 * dense F32 (online transform folded in). The tokenizer comes from the GGUF source, or from the
 * artifact's copy of it.
 *
 * Not yet: HF (tokenizer.json) sources -- their tokenizer would need
 * converting to GGUF metadata. A clear error. */
#ifndef QC_GGUF_EXPORT_H
#define QC_GGUF_EXPORT_H

#include "model.h"

typedef struct qc_gguf_export_opts {
    qc_dtype linear, embed, output;
    int output_given; /* output was chosen by the user (not a default) */
    /* Write layers GGUF cannot express (integer codes, outliers, low-rank,
     * online Hadamard) as dense F32 weights, exactly what quantc evaluates,
     * instead of refusing (compiler/dense_weight.h). */
    int fallback_dequantize;
    /* Per linear input column importance (e.g. diag XᵀX), or NULL: looked up
     * by weight name; returns NULL when none. */
    const float *(*importance)(void *ud, const char *weight_name, int64_t cols);
    void *ud;
} qc_gguf_export_opts;

typedef struct qc_gguf_export_stats {
    int tensors, fallbacks;
    int copied;             /* tensors of a compiled model written unchanged */
    int dense;              /* layers written dense F32 by the fallback */
    double dense_bytes;
    double bits_per_weight; /* over the linears (block scales included) */
    double file_bytes;
} qc_gguf_export_stats;

int qc_gguf_export(const qc_model *m, const qc_gguf_export_opts *o, const char *path,
                   qc_gguf_export_stats *st, qc_err *err);

/* The ggml block type named s ("Q4_K", "q4_k", "F16", ...); -1 if none. */
int qc_dtype_from_name(const char *s, qc_dtype *out);

#endif
