/* The forward pass on a CUDA GPU (issue 6): the model of an artifact
 * compiled with cuda: targets, its weights uploaded once, run with the
 * kernels NVRTC compiled at artifact-compile time (codegen/cuda_codegen.h;
 * nothing is compiled here). runtime/forward.c dispatches to it when a model
 * is built for QCRT_DEVICE_CUDA, so eval, run and sampling are shared with
 * the CPU runtime; the steps per block are those of forward.c's
 * block_forward.
 *
 * Precision: the residual stream, norms, attention, softmax, the KV cache
 * and logits are f32 as on the CPU; the inputs of linears are rounded to f16
 * (the generated kernels' ABI), products accumulate in f32. Quantized layers
 * run their generated kernel on the CUDA blob (qccuda1); quantized layers
 * without one, unquantized linears and the lm_head run a dense kernel on f16
 * weights (Ŵ dequantized at load). A linear with an online Hadamard
 * (rotate's online: [down_proj]) runs the kernel of its spec with the
 * transform, which applies H_n/sqrt(n) to x itself (codegen/cuda_src.h); on
 * the dense path the transform is folded into the f16 weight (W·T).
 *
 * Code: the kernel set whose architecture matches the GPU (its CUBIN), else
 * one of the same major version and lower minor (binary compatible), else
 * the PTX of an older plain architecture, which the driver JIT-compiles;
 * QUANTC_CUDA_PTX=1 in the environment forces the PTX.
 *
 * Decode steps (one token, its logits) are captured once per state as a
 * CUDA graph and replayed: every launch reads the position from device
 * memory, so the graph stays valid; QUANTC_CUDA_NO_GRAPH=1 launches them one
 * by one instead (for comparison). */
#ifndef QCRT_CUDA_MODEL_H
#define QCRT_CUDA_MODEL_H

#include "../compiler/model.h"
#include "cuda_driver.h"

typedef struct qcrt_cuda_model qcrt_cuda_model;
typedef struct qcrt_cuda_state qcrt_cuda_state;

/* Opens CUDA device 0 and uploads m. Returns 0; QCRT_CUDA_NO_DEVICE when
 * there is no driver or GPU (err says why); -1 on other errors (no CUDA
 * kernels in m, none for this GPU, out of memory). */
int qcrt_cuda_model_new(const qc_model *m, qcrt_cuda_model **out, qc_err *err);
void qcrt_cuda_model_free(qcrt_cuda_model *g);

/* One line: GPU name, kernel set and how it was loaded, linear counts. */
const char *qcrt_cuda_model_describe(const qcrt_cuda_model *g);

/* KV cache for max_ctx positions and scratch for max_batch tokens on the
 * GPU; cos/sin: the RoPE tables, max_ctx × head_dim/2 each (copied). */
qcrt_cuda_state *qcrt_cuda_state_new(qcrt_cuda_model *g, int max_ctx, int max_batch,
                                     const float *cos_t, const float *sin_t, qc_err *err);
void qcrt_cuda_state_free(qcrt_cuda_state *s);

/* Runs tokens[0..n) at positions pos..pos+n-1 (already checked by the
 * caller: in the vocabulary, n ≤ max_batch, pos + n ≤ max_ctx) and copies
 * the logits (n × vocab when all_logits, else the last token's) to logits
 * when non-NULL. Returns 0 or -1 with err. */
int qcrt_cuda_forward(qcrt_cuda_state *s, int pos, const int32_t *tokens, int n, float *logits,
                      int all_logits, qc_err *err);

#endif
