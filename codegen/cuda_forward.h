/* CUDA C source of the forward-pass kernels other than the quantized
 * linears (issue 6): embedding lookup, RMSNorm, per-head RMSNorm (qk-norm),
 * RoPE, attention over the KV cache, SwiGLU, residual add, bias, and a dense
 * f16-weight linear (unquantized layers and the lm_head). Compiled with NVRTC
 * at artifact-compile time into the "forward" module of every CUDA kernel
 * set (codegen/cuda_codegen.h); runtime/cuda_model.c launches them.
 *
 * Conventions (all kernels extern "C", shapes as int parameters):
 *   - the residual stream, norms' weights, q/k/v, the KV cache and logits
 *     are f32; the inputs of linears are f16 rows of stride round8(width)
 *     elements (qc_cuda_x_stride), whose padding stays zero;
 *   - `meta` is a device int array: meta[0] = position of the first token of
 *     the batch (so a captured decode step reads the position from memory);
 *   - token t of a batch is blockIdx.y unless said otherwise; no parameter
 *     depends on the position, so one decode step can be captured in a CUDA
 *     graph and replayed for every token.
 *
 *   qcf_embed(const int *tok, const float *table, float *x, int dim)
 *       grid (1, n), x[t] = table[tok[t]]
 *   qcf_rmsnorm(float *x, const float *res, const float *w, u16 *y, int dim, int ys,
 *               float eps)
 *       grid (1, n), block 256: x[t] += res[t] when res is non-NULL (the
 *       residual add, fused), then y[t] = f16(x[t] / sqrt(mean(x[t]²) + eps) · w)
 *   qcf_qprep(float *q, const float *w, const float *cos, const float *sin,
 *             const int *meta, int heads, int hd, float eps)
 *       grid (heads, n), block 32: per head of q[t] in place, RMSNorm with w
 *       when non-NULL (qk-norm), then rotate-half RoPE at position meta[0] + t
 *   qcf_kvstore(const float *kn, const float *vn, float *kc, float *vc, const float *w,
 *               const float *cos, const float *sin, const int *meta, int kv_heads, int hd,
 *               float eps)
 *       grid (kv_heads, n), block 32: the new keys (qk-norm, RoPE) and values of
 *       token t into cache row meta[0] + t of the layer's kc/vc
 *   qcf_attention(const float *q, const float *kc, const float *vc, u16 *out,
 *                 const int *meta, int heads, int kv_heads, int hd, int os, float scale)
 *       grid (heads, n), block QCF_ATTN_THREADS: causal softmax(q·Kᵀ·scale)·V over
 *       cache rows 0 .. meta[0] + t (kc/vc: the layer's [ctx][kv_heads·hd])
 *   qcf_swiglu(const float *g, const float *u, u16 *h, int ffn, int hs)
 *       grid (ceil(ffn/256), n): h[t] = f16(silu(g[t]) ⊙ u[t])
 *   qcf_bias(float *y, const float *b, int out)            grid (ceil(out/256), n)
 *   qcf_dense1 / qcf_dense8(const u16 *w, const u16 *x, float *y, int out, int in,
 *                           int xs, int n)
 *       grid (ceil(out/8), ceil(n/T)), block 256 (T = 1 or 8 tokens per block):
 *       y[t][o] = Σ_c w[o][c]·x[t][c], w f16 with row stride xs (zero padded) */
#ifndef QC_CUDA_FORWARD_H
#define QC_CUDA_FORWARD_H

#define QCF_ATTN_THREADS 128
#define QCF_MAX_HEAD_DIM 256 /* head_dim must also be a multiple of 4 */

/* The NUL-terminated CUDA C source of the module (static storage). */
const char *qc_cuda_forward_src(void);

#endif
