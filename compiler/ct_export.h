/* Export of a compiled model (an artifact) as a Hugging Face model directory
 * in the compressed-tensors "pack-quantized" format (issue 7), which
 * transformers (with the compressed-tensors package) and vLLM load:
 *
 *   DIR/config.json         the architecture (generated from the model's
 *                           config) + quantization_config
 *   DIR/model.safetensors   (or model-0000K-of-0000N.safetensors + index)
 *   DIR/tokenizer.json, tokenizer_config.json   from the artifact (HF source)
 *   DIR/generation_config.json, special_tokens_map.json, ...   copied from
 *                           the source directory when it still exists
 *
 * Per quantized linear MOD (Ŵ = scale·(code − zero), quantc's codes are
 * unsigned in [0, 2^b)):
 *   MOD.weight_packed      I32 rows × ceil(cols·b/32): row r's codes as one
 *                          bit string, code c at bits [c·b, c·b + b), 32 bits
 *                          per little-endian word (compressed-tensors stores
 *                          the signed value q = code − 2^(b−1) offset by
 *                          2^(b−1): the same bits)
 *   MOD.weight_scale       rows × groups (groups = 1 per-channel): F32 in an
 *                          F32 model (the loader dequantizes in the scale's
 *                          dtype, so the weights stay exactly quantc's),
 *                          else F16 (F32 when a scale is not an f16 value)
 *   MOD.weight_zero_point  asymmetric only: I32 ceil(rows·b/32) × groups,
 *                          each column's zeros packed as above along rows
 *   MOD.weight_shape       I64 [rows, cols]
 * Any width 2..8 is written (3, 5, 6, 7 bits straddle words: the dense
 * packing of compressed-tensors 0.20; older releases read only widths that
 * divide 32 the same way, and vLLM's WNA16 kernels take 4 and 8 bits).
 * Other tensors keep the dtype the artifact stores (F32/F16/BF16); GGUF
 * block types of a GGUF source that the compile did not quantize (its
 * embedding, linears the recipe left out) are written as F32, exactly.
 *
 * The format cannot express, and the export refuses with the layer and
 * feature named: online transforms (rotate's online Hadamard), sparse
 * outliers, low-rank factors, GGUF block-typed linears (quantize format
 * gguf:*), groups that do not divide the row, and act-order groups that are
 * not contiguous (g_idx: compressed-tensors 0.20 removed actorder "group";
 * compile with static_groups: true, written as actorder "weight"). With
 * fallback_dequantize such a layer is written as a dense F32 weight
 * holding exactly the weight quantc evaluates (online transform folded
 * in), listed in quantization_config.ignore. A rotation absorbed into the
 * weights needs nothing: the graph is the standard one.
 *
 * The directory is written under DIR.tmp.XXXXXX beside DIR and renamed into
 * place; DIR must not exist or be an empty directory. */
#ifndef QC_CT_EXPORT_H
#define QC_CT_EXPORT_H

#include "model.h"

typedef struct qc_ct_export_opts {
    int fallback_dequantize; /* write inexpressible layers dense instead of refusing */
    size_t max_shard_bytes;  /* per safetensors file; 0 = 4 GiB */
} qc_ct_export_opts;

typedef struct qc_ct_export_stats {
    int tensors, files;  /* safetensors tensors; safetensors files */
    int packed;          /* linears written pack-quantized */
    int dense;           /* linears written dense by the fallback */
    double bytes;        /* all safetensors data */
    double dense_bytes;  /* of which dense fallback weights */
    double bits_per_weight; /* packed linears: codes + scales + zero points */
    char tokenizer[512]; /* what was written for the tokenizer, one sentence */
    char notes[1024];    /* other notes ("; "-separated), "" when none */
} qc_ct_export_stats;

/* Writes the artifact-loaded model m to dir. Returns 0, or -1 with err
 * (nothing left under dir's name or beside it). */
int qc_ct_export(const qc_model *m, const qc_ct_export_opts *o, const char *dir,
                 qc_ct_export_stats *st, qc_err *err);

#endif
