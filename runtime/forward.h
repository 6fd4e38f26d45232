/* The transformer forward pass shared by calibration and the runtime:
 * embeddings, RMSNorm, RoPE, grouped-query attention with a KV cache,
 * SwiGLU MLP, final norm, lm_head. Linears go through qcrt_linear. */
#ifndef QCRT_FORWARD_H
#define QCRT_FORWARD_H

#include "../compiler/model.h"
#include "linear.h"

typedef struct qcrt_block {
    float *attn_norm, *ffn_norm;  /* dim */
    float *q_norm, *k_norm;       /* head_dim, qwen3 only (else NULL) */
    qcrt_linear *q, *k, *v, *o;   /* q/k/v carry bias for qwen2 */
    qcrt_linear *gate, *up, *down;
} qcrt_block;

struct qcrt_cpu_kernels;
struct qcrt_pool;
struct qcrt_cuda_model;

typedef struct qcrt_model {
    qc_config cfg;
    float *embed;          /* vocab × dim */
    qcrt_block *blocks;    /* n_layers */
    float *final_norm;     /* dim */
    qcrt_linear *lm_head;  /* vocab × dim (a copy of embed when tied) */
    float *rope_inv_freq;  /* head_dim/2, scaling applied */
    /* Generated CPU kernels in use (NULL: every quantized linear runs the
     * fake-quant reference), the threads they split rows over, the kernel
     * set's name ("host", "x86-64-v3", ...), and how many linears run on
     * generated kernels / on the reference path, and of the generated ones
     * how many apply their online Hadamard inside the kernels. */
    struct qcrt_cpu_kernels *kernels;
    struct qcrt_pool *pool;
    char kernels_name[64];
    int n_generated, n_reference, n_fused_transform;
    /* The model on a CUDA GPU (runtime/cuda_model.h) when built for
     * QCRT_DEVICE_CUDA: then the fields above hold no weights (blocks are
     * zeroed, embed/final_norm/lm_head NULL) and qcrt_forward runs there. */
    struct qcrt_cuda_model *cuda;
} qcrt_model;

/* Which implementation quantized linears use. */
typedef enum qcrt_kernels_mode {
    QCRT_KERNELS_AUTO,      /* generated kernels when the model has some (they must
                               suit this host), else the reference */
    QCRT_KERNELS_GENERATED, /* generated kernels; an error when the model has none */
    QCRT_KERNELS_REFERENCE, /* fake-quant reference: Ŵ dequantized to f32, BLAS */
} qcrt_kernels_mode;

/* Where the model runs. */
typedef enum qcrt_device {
    QCRT_DEVICE_CPU,
    QCRT_DEVICE_CUDA, /* GPU 0 with the artifact's CUDA kernels (runtime/cuda_model.h) */
} qcrt_device;

typedef struct qcrt_model_opts {
    qcrt_kernels_mode kernels;
    int threads; /* threads of the generated kernels; 0: the online CPUs */
    qcrt_device device;
} qcrt_model_opts;

/* Builds an f32 model from the IR: dequantizes every tensor (the whole model
 * in f32; calibration instead works block by block). Returns NULL with err. */
qcrt_model *qcrt_model_from_ir(const qc_model *m, qc_err *err);
/* The same with options: quantized layers stored packed (artifacts) run on
 * the generated CPU kernels of the first kernel set whose target this host
 * supports (opts NULL: QCRT_KERNELS_AUTO, all CPUs). With kernels but none
 * for this host, AUTO and GENERATED fail with a message naming the targets
 * and what the host lacks. qcrt_model_from_ir uses the reference. */
qcrt_model *qcrt_model_from_ir_opts(const qc_model *m, const qcrt_model_opts *opts, qc_err *err);
/* The same; *no_device is set to 1 when the failure is that there is no CUDA
 * driver or GPU (device QCRT_DEVICE_CUDA), 0 otherwise. */
qcrt_model *qcrt_model_from_ir_dev(const qc_model *m, const qcrt_model_opts *opts, int *no_device,
                                   qc_err *err);
void qcrt_model_free(qcrt_model *m);

/* The parts of a model every block needs (config, RoPE frequencies) with no
 * weights loaded: blocks are zeroed, embed/final_norm/lm_head NULL. The
 * calibration driver loads one block at a time into it. */
qcrt_model *qcrt_model_shell(const qc_model *m, qc_err *err);

/* Loads block l of the IR in f32 (linears are f32 BLAS linears). On failure
 * b may be partly filled: free it with qcrt_block_free. */
int qcrt_block_load(const qc_model *m, int l, qcrt_block *b, qc_err *err);
void qcrt_block_free(qcrt_block *b);

/* Dequantizes tensor `name` to a new f32 array after checking its shape
 * (cols 0 for 1-D). Caller frees. */
float *qcrt_load_tensor(const qc_model *m, const char *name, int64_t rows, int64_t cols,
                        qc_err *err);

/* Per-sequence state: KV cache for up to max_ctx positions plus scratch for
 * max_batch tokens per qcrt_forward call (clamped to max_ctx), all allocated
 * here; qcrt_forward allocates nothing. */
typedef struct qcrt_state qcrt_state;
qcrt_state *qcrt_state_new(const qcrt_model *m, int max_ctx, int max_batch, qc_err *err);
void qcrt_state_free(qcrt_state *s);
/* Forgets the cached positions (start a new sequence). */
void qcrt_state_reset(qcrt_state *s);
/* Positions currently cached. */
int qcrt_state_pos(const qcrt_state *s);

/* Runs n tokens at positions pos..pos+n-1 (pos = qcrt_state_pos) and appends
 * them to the cache. logits: n × vocab floats when all_logits, else vocab
 * floats for the last token; may be NULL. n ≤ max_batch and the cache must
 * have room. Returns 0, or -1 with err set. */
int qcrt_forward(const qcrt_model *m, qcrt_state *s, const int32_t *tokens, int n,
                 float *logits, int all_logits, qc_err *err);

/* Runs block `layer` (weights b, which need not be m->blocks[layer]) on the
 * residual stream x (n × dim, updated in place) for positions pos..pos+n-1,
 * writing that layer's cache rows. Does not advance the position: call
 * qcrt_state_advance after the last block. */
int qcrt_block_forward(const qcrt_model *m, const qcrt_block *b, qcrt_state *s, int layer,
                       float *x, int n, qc_err *err);
void qcrt_state_advance(qcrt_state *s, int n);

#endif
