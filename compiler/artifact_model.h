/* A compiled model as an artifact (docs/artifact-format.md): the model IR
 * with its quantized linears written to, and read back from, the container
 * of runtime/artifact.h.
 *
 * Sections written, in this order:
 *   manifest  "manifest.json"   config, tensors (dtype, shape), layers,
 *                               tokenizer, provenance, metrics
 *   tokenizer "tokenizer.json" (+ "tokenizer_config.json") from a Hugging
 *             Face source, or "tokenizer.gguf" (the source GGUF's
 *             tokenizer.* metadata as a GGUF without tensors)
 *   tensor    every full-precision tensor under its HF name: F32, F16 or BF16
 *             as the source stored it (GGUF block-quantized tensors are
 *             dequantized to F32), then per quantized weight MOD.weight:
 *             MOD.qweight (codes, bit-packed in the manifest's layout),
 *             MOD.scales (F16, or F32 when a scale is not an f16 value),
 *             MOD.zeros (asymmetric only: U8, or F32), MOD.g_idx (I32, only
 *             when act-order reordered the groups), MOD.perm (I32, act-order)
 *             -- layout "rowmajor-lsb"; or, for layers the kernels can run
 *             (layout "qcpack1"), one U8 tensor MOD.packed in the layout the
 *             generated kernels read (codegen/pack.h)
 *   kernels   per CPU target, "cpu/NAME.so": the generated kernels linked
 *             into one shared object, the section's target its descriptor
 *
 * Loading gives a qc_model whose full-precision tensors point into the
 * mapped file (uncompressed) or into decompressed copies it owns, with
 * the quantized states attached (qc_model_add_quant), so every command that
 * runs a qc_model runs an artifact with fake-quant linears. */
#ifndef QC_ARTIFACT_MODEL_H
#define QC_ARTIFACT_MODEL_H

#include "codegen/artifact_write.h"
#include "model.h"

#include <jansson.h>
#include <stdint.h>

/* Name of the layout the codes are stored in. "rowmajor-lsb": row r starts at
 * byte r·ceil(cols·bits/8); within a row, code c occupies bits
 * [c·bits, c·bits + bits) of the row's bytes read as one little-endian bit
 * string (bit k is bit k%8 of byte k/8); the row's last bits are zero. */
#define QC_ARTIFACT_CODES_LAYOUT "rowmajor-lsb"
/* The packed-weight layout of the generated kernels (codegen/pack.h). */
#define QC_ARTIFACT_PACK_LAYOUT "qcpack1"
/* The generated CUDA kernels' layout (codegen/cuda_pack.h), stored beside
 * the layer's other layout as part "cuda_packed" when compiled for CUDA. */
#define QC_ARTIFACT_CUDA_LAYOUT "qccuda1"
#define QC_ARTIFACT_MANIFEST "manifest.json"

typedef struct qc_artifact_model_opts {
    qc_artifact_compress compress;
    const json_t *provenance; /* merged into manifest.provenance; borrowed, may be NULL */
    const json_t *metrics;    /* stored as manifest.metrics; borrowed, may be NULL */
    /* CPU code generation targets (codegen/cpu_llvm.h: "host", "x86-64-v3",
     * "x86-64-v4", "aarch64"): one kernels section per target holding the
     * kernels of every packed layer. None: no kernels. */
    const char *const *cpu_targets;
    int n_cpu_targets;
    /* CUDA architectures ("sm_90a", "sm_80", ...): every layer the CUDA
     * generator supports is also stored in its layout, and one kernel set
     * per architecture (the forward module and one module per distinct
     * spec, PTX and CUBIN each) is compiled with NVRTC. */
    const char *const *cuda_archs;
    int n_cuda_archs;
} qc_artifact_model_opts;

typedef struct qc_artifact_stats {
    uint64_t raw_bytes, stored_bytes; /* sums over sections (before/after compression) */
    uint64_t file_bytes;
    int n_sections;
    int n_layers, n_packed;  /* quantized layers; of those stored in the kernel layout */
    int n_kernels;           /* distinct kernel specs (2 functions each, per target) */
    double codegen_seconds;  /* LLVM IR, optimisation, emission and linking, all targets */
    int n_cuda_packed;       /* quantized layers stored in the CUDA layout */
    int n_cuda_kernels;      /* distinct CUDA kernel specs (modules besides forward) */
    double nvrtc_seconds;    /* NVRTC, all CUDA modules and architectures */
} qc_artifact_stats;

/* Writes m (quantized linears attached) to path atomically. stats may be
 * NULL. Returns 0 or -1 with err. */
int qc_artifact_write_model(const qc_model *m, const char *path, const qc_artifact_model_opts *o,
                            qc_artifact_stats *stats, qc_err *err);

/* The loader behind qc_model_load for a file that starts with the artifact
 * magic: fills the empty model m (config, tensors, quantized states,
 * tokenizer; the mapping moves into m->files). */
int qc_artifact_load_model(qc_model *m, const char *path, qc_err *err);

/* Packs rows × cols codes (each < 2^bits) in QC_ARTIFACT_CODES_LAYOUT into
 * out (rows · qc_artifact_row_bytes bytes), and back. */
int64_t qc_artifact_row_bytes(int64_t cols, int bits);
void qc_artifact_pack_codes(const uint8_t *codes, int64_t rows, int64_t cols, int bits,
                            uint8_t *out);
void qc_artifact_unpack_codes(const uint8_t *packed, int64_t rows, int64_t cols, int bits,
                              uint8_t *codes);

/* XXH3-64 over the files the model was loaded from (for GGUF/artifacts the
 * file; for Hugging Face directories config.json, the safetensors shards and
 * the tokenizer files), each as name, NUL, u64 LE size, bytes. Returns a new
 * JSON object {"xxh3": "16 hex digits", "files": [{"name", "bytes"}]}, or
 * NULL with err. */
json_t *qc_artifact_source_hash(const qc_model *m, qc_err *err);

#endif
