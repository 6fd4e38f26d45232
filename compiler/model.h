/* Model IR: config + named source tensors (views into mmap'd files) +
 * tokenizer. Tensors use Hugging Face names and row-major (out, in) order
 * whatever the source format; loaders translate. Weights stay mmap'd; callers
 * dequantize one tensor at a time with qc_tensor_to_f32. */
#ifndef QC_MODEL_H
#define QC_MODEL_H

#include "err.h"
#include "mapfile.h"

#include <stddef.h>
#include <stdint.h>

struct qc_tokenizer;
struct qc_quant_state;

/* A linear layer stored quantized (a compiled model): its weight name and
 * compressed state (compiler/quant.h). */
typedef struct qc_qlinear {
    char *name;                /* weight name, e.g. "model.layers.0.mlp.up_proj.weight" */
    struct qc_quant_state *q;  /* owned */
    /* The same weight packed in the layout the generated kernels read
     * (codegen/pack.h), when loaded from an artifact that stores it: points
     * into a mapping the model owns; NULL otherwise. */
    const uint8_t *packed;
    size_t packed_size;
    /* The same weight in the generated CUDA kernels' layout
     * (codegen/cuda_pack.h), checked against its spec on load, when the
     * artifact stores one (compiled with a cuda: target); NULL otherwise. */
    const uint8_t *cuda_packed;
    size_t cuda_packed_size;
} qc_qlinear;

/* Generated CPU kernels stored in an artifact for one target: a shared
 * object (codegen/cpu_llvm.h) and the target descriptor it was built for. */
typedef struct qc_kernel_obj {
    char *name;          /* the target as requested, e.g. "x86-64-v3" (owned) */
    char *target;        /* descriptor "triple=...;cpu=...;features=..." (owned) */
    const uint8_t *data; /* shared-object bytes, into a mapping the model owns */
    size_t size;
} qc_kernel_obj;

/* Generated CUDA kernels stored in an artifact for one architecture: per
 * module (the forward-pass kernels, or the kernels of one linear spec) its
 * PTX and CUBIN from one NVRTC compile (codegen/cuda_codegen.h). */
typedef struct qc_cuda_module_ref {
    char *name;             /* "forward", or a kernel spec id (owned) */
    const uint8_t *ptx;     /* NUL-terminated PTX, into a mapping the model owns */
    size_t ptx_size;        /* including the NUL */
    const uint8_t *cubin;   /* ELF for the set's arch */
    size_t cubin_size;
    int rtb, warps, prefetch, min_blocks, gemm; /* launch shape (qc_cuda_gemv_opts) */
} qc_cuda_module_ref;

typedef struct qc_cuda_kernel_set {
    char arch[16];           /* "sm_90a", "sm_80", ... */
    qc_cuda_module_ref *mods; /* owned */
    int n_mods;
} qc_cuda_kernel_set;

typedef enum qc_arch {
    QC_ARCH_LLAMA,   /* llama, incl. SmolLM */
    QC_ARCH_MISTRAL, /* same graph as llama (no sliding window support) */
    QC_ARCH_QWEN2,   /* bias on q/k/v */
    QC_ARCH_QWEN3,   /* RMSNorm on q and k per head */
} qc_arch;

typedef enum qc_rope_scaling {
    QC_ROPE_NONE,
    QC_ROPE_LLAMA3, /* Llama 3.1 frequency-dependent scaling */
    QC_ROPE_LINEAR, /* positions divided by factor */
} qc_rope_scaling;

typedef struct qc_config {
    qc_arch arch;
    char arch_name[32]; /* as the source spelled it, e.g. "LlamaForCausalLM" or "llama" */
    int n_layers;
    int dim;        /* hidden size */
    int n_heads;
    int n_kv_heads;
    int head_dim;   /* usually dim / n_heads; qwen3 sets it explicitly */
    int ffn_dim;    /* intermediate size */
    int vocab;
    int max_pos;    /* max_position_embeddings / context_length */
    float rope_theta;
    float norm_eps;
    qc_rope_scaling rope_scaling;
    float rope_factor;
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int rope_orig_max_pos;
    int tied_embeddings; /* lm_head shares model.embed_tokens.weight */
    int qk_norm;         /* qwen3 */
    int attn_bias;       /* qwen2: bias on q, k, v */
    int bos_id, eos_id;  /* -1 when unknown */
} qc_config;

typedef enum qc_dtype {
    QC_DT_F32,
    QC_DT_F16,
    QC_DT_BF16,
    QC_DT_Q8_0,
    QC_DT_Q4_0,
    QC_DT_Q4_1,
    QC_DT_Q5_0,
    QC_DT_Q5_1,
    QC_DT_Q4_K,
    QC_DT_Q5_K,
    QC_DT_Q6_K,
    QC_DT_U8,  /* integer tensors of quantized models (codes, group index) */
    QC_DT_I32,
    QC_DT_Q3_K,   /* further ggml block types (GGUF sources and exports) */
    QC_DT_IQ4_NL,
    QC_DT_IQ4_XS,
    QC_DT_COUNT
} qc_dtype;

const char *qc_dtype_name(qc_dtype t);

typedef struct qc_tensor {
    char *name;          /* Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    qc_dtype dtype;
    int n_dims;          /* 1 or 2 */
    int64_t shape[2];    /* row-major: shape[0] rows (out features), shape[1] columns
                            (in); 1-D tensors have shape[1] = 1 */
    const uint8_t *data; /* into a mapped file; validated to hold nbytes */
    size_t nbytes;
    /* GGUF llama q/k rows are permuted for interleaved RoPE; when > 0 the rows
     * are un-permuted back to HF order (heads of this count) on dequantize. */
    int unpermute_heads;
    void *owned; /* non-NULL when a pass replaced the data (qc_model_set_f32 / _set_blocks):
                    data points here */
} qc_tensor;

/* An online transform a linear applies to its input at run time (the
 * weight stored in the IR already carries the inverse): y = W'·(T x) with
 * W' = W·Tᵀ. Kernels and the fake-quant runtime must apply it, and the
 * compiled model must store it (per weight: its name and hadamard_n). */
typedef struct qc_online {
    char *name;     /* weight name, e.g. "model.layers.3.mlp.down_proj.weight" */
    int hadamard_n; /* T = H_n / sqrt(n), the deterministic Hadamard matrix of
                       compiler/hadamard.h (no random signs) */
} qc_online;

typedef struct qc_model {
    qc_config cfg;
    qc_tensor *tensors; /* owned array */
    int n_tensors;
    qc_mapfile **files; /* owned mappings the tensors point into */
    int n_files;
    struct qc_tokenizer *tok; /* owned; NULL when the source has none */
    qc_qlinear *quant;        /* owned; quantized linears (compiled models), else NULL */
    int n_quant;
    qc_online *online;        /* owned; online input transforms (rotate pass), else NULL */
    int n_online;
    qc_kernel_obj *kernels;   /* owned; generated CPU kernels (artifacts), else NULL */
    int n_kernels;
    qc_cuda_kernel_set *cuda; /* owned; generated CUDA kernels per arch (artifacts), else NULL */
    int n_cuda;
    char *path;               /* owned copy of the path it was loaded from */
    char *format;             /* "safetensors", "gguf" or "artifact" (static string) */
} qc_model;

/* Loads a Hugging Face directory (config.json + safetensors), a .gguf file,
 * or a quantc artifact (recognised by its magic; compiler/artifact_model.h).
 * Returns a new model (free with qc_model_free) or NULL with err set. Checks
 * that every tensor the architecture needs is present with the right shape. */
qc_model *qc_model_load(const char *path, qc_err *err);
void qc_model_free(qc_model *m);

/* Finds a tensor by HF name; NULL when absent. */
const qc_tensor *qc_model_find(const qc_model *m, const char *name);

/* Dequantizes the whole tensor into out (shape[0]*shape[1] floats, row-major,
 * HF order). Returns 0 or -1 with err set. */
int qc_tensor_to_f32(const qc_tensor *t, float *out, qc_err *err);

/* The quantized state of weight `name`, or NULL when it is stored plainly. */
const struct qc_quant_state *qc_model_quant(const qc_model *m, const char *name);
/* The quantized linear of weight `name` (state and packed blob), or NULL. */
const qc_qlinear *qc_model_qlinear(const qc_model *m, const char *name);
/* Attaches a quantized state (takes ownership of name and q, also on error). */
int qc_model_add_quant(qc_model *m, char *name, struct qc_quant_state *q, qc_err *err);

/* Replaces the data of tensor `name` with data (rows × cols f32, row-major;
 * cols 0 for a 1-D tensor), taking ownership of data (also on error). The
 * tensor is created when absent; an existing one must have the same shape.
 * Everything that reads tensors (qc_tensor_to_f32, the forward pass, the
 * writers) then sees the new values; the source file is untouched. Passes
 * that change weights (rotate, smooth) go through this. Returns 0 or -1. */
int qc_model_set_f32(qc_model *m, const char *name, int64_t rows, int64_t cols, float *data,
                     qc_err *err);

/* Like qc_model_set_f32 for a 2-D weight in a ggml block type t (data:
 * rows × cols weights in ggml row layout, cols a multiple of t's block;
 * ownership taken, also on error): quantize format gguf:* stores a weight
 * this way, so the forward pass, the artifact and a GGUF export all read
 * the same blocks. Returns 0 or -1. */
int qc_model_set_blocks(qc_model *m, const char *name, qc_dtype t, int64_t rows, int64_t cols,
                        uint8_t *data, qc_err *err);

/* The online Hadamard size recorded for weight `name`, or 0 when none. */
int qc_model_online_hadamard(const qc_model *m, const char *name);
/* Records (or replaces) an online Hadamard of size n on weight `name`'s input. */
int qc_model_set_online_hadamard(qc_model *m, const char *name, int n, qc_err *err);

/* Gives back the resident pages of t's data when it lies in one of m's
 * file mappings (a reader that has converted or copied it calls this, so a
 * pass over a model larger than memory does not keep the whole file
 * resident); does nothing for data in memory. */
void qc_model_release_tensor(const qc_model *m, const qc_tensor *t);

/* Number of elements of t. */
int64_t qc_tensor_numel(const qc_tensor *t);

/* Checks the config for consistency (positive sizes, heads divide, ...) and
 * that every tensor the architecture needs exists with the expected shape.
 * `where` names the source in messages. Used by both loaders. */
int qc_model_validate(const qc_model *m, const char *where, qc_err *err);

/* Appends a tensor (takes ownership of name); used by loaders. */
int qc_model_add_tensor(qc_model *m, qc_tensor *t, qc_err *err);
/* Appends a mapping (takes ownership); used by loaders. */
int qc_model_add_file(qc_model *m, qc_mapfile *f, qc_err *err);

#endif
