/* The compiled-model directory `quantc compile` writes until the artifact
 * format lands (issue 5): a Hugging Face-style directory that quantc loads
 * back with fake-quant linears, so `quantc eval` measures exactly what was
 * compiled.
 *
 *   OUT/config.json        HF config of the architecture + quantization_config
 *                          {quant_method: "quantc", format_version: 1,
 *                           layers: {module: {bits, group_size, symmetric}}}
 *   OUT/model.safetensors  F32 tensors that stay in full precision, and per
 *                          quantized weight W: W.qcodes (U8 rows × cols),
 *                          W.qscales and W.qzeros (F32 rows × groups),
 *                          W.g_idx (I32 cols); Ŵ = qscales·(qcodes − qzeros)
 *   OUT/tokenizer.json     copied from an HF source (+ tokenizer_config.json), or
 *   OUT/tokenizer.gguf     the tokenizer.* metadata of a GGUF source
 *   OUT/quantc.json        provenance: quantc version, source, recipe text,
 *                          calibration report
 *
 * The directory is written beside OUT under a temporary name and renamed into
 * place, so OUT is never left half-written. */
#ifndef QC_QMODEL_H
#define QC_QMODEL_H

#include "model.h"

/* Writes m (with its quantized linears attached) to out_dir, replacing an
 * existing compiled-model directory there (but refusing to replace anything
 * else). provenance_json is stored as quantc.json (may be NULL). */
int qc_qmodel_write(const qc_model *m, const char *out_dir, const char *provenance_json,
                    qc_err *err);

/* Used by the safetensors loader for a directory whose config.json says
 * quant_method "quantc": turns the W.qcodes/... tensors into quantized
 * states on m (validated: codes < 2^bits, group index in range, scales
 * finite). */
int qc_qmodel_attach(qc_model *m, const char *dir, qc_err *err);

#endif
