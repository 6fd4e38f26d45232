/* CUDA C source for the decode GEMV (batch 1) of a kernel spec (DESIGN.md,
 * "Kernels"; issue 6). The source is self-contained (no #include: NVRTC
 * needs no CUDA headers) and every spec field is a compile-time constant.
 *
 * Kernel ABI (extern "C", packed weight w from codegen/cuda_pack.h, 256-byte
 * aligned; x 16-byte aligned):
 *   gemv: void <gemv>(const u8 *w, const u16 *x, float *y, const float *ws)
 *         y[o] = Σ_c Ŵ[o][c]·x[c] for all o < out; x is f16 (`in` values,
 *         whatever spec->act says: that field describes the CPU kernels' x),
 *         y f32, accumulation f32 (tensor-core mma.m16n8k16, f16 operands:
 *         the products (code − zero)·x are exact in f32).
 *   lrt:  void <lrt>(const u8 *w, const u16 *x, float *ws)   (rank > 0 only)
 *         ws[k] = Σ_c B[k][c]·x[c]; launched before gemv, which adds A·ws.
 * Ŵ = scale·(code − zero) + sparse outliers + A·B as in compiler/quant.h.
 * Launch: gemv on `grid` blocks of `block` threads (no dynamic shared
 * memory without a transform), lrt on lrt_grid × lrt_block; ws holds ws_floats floats.
 * Several tokens in one launch: a grid of (grid, n) blocks (lrt: (lrt_grid,
 * n)) applies the kernel to token t = blockIdx.y at x + t·XS, y + t·out and
 * ws + t·rank, XS = qc_cuda_x_stride (in rounded up to 8, so every token's
 * x stays 16-byte aligned); ws then holds n·ws_floats floats.
 *   gemmT: void <gemm>T(const u8 *w, const u16 *x, float *y, const float *ws, int n)
 *         T = 8, 16, 32, 64: the same products for n tokens (x, y, ws as
 *         above) on a (gemm_grid, ceil(n / T)) grid of `block` threads: a
 *         tensor-core GEMM whose B columns are 8 tokens, each decoded weight
 *         fragment applied to T tokens (lrt first when rank > 0).
 * Online Hadamard (spec transform, x ← H_n x / sqrt(n) before the product,
 * compiler/hadamard.h; the blob is the plain spec's):
 *   gemv: fused: each block transforms its token's x in shared memory
 *         before its K loop, so it takes x as it comes; gemv_smem
 *         (qc_cuda_had_smem) bytes of dynamic shared memory, above the
 *         default 48 KiB limit from n ≈ 8192 on (the launcher raises it);
 *   had:  void <had>(const u16 *x, u16 *xt), grid (1, n), had_block
 *         threads, had_smem bytes of dynamic shared memory: xt = f16(H x /
 *         sqrt(n)) per token (stride XS, zero padded). The GEMM entry points
 *         and lrt take xt (they do not transform); so does the GEMV's
 *         low-rank term: with rank > 0, run had and lrt on xt before the
 *         fused gemv on x. */
#ifndef QC_CUDA_SRC_H
#define QC_CUDA_SRC_H

#include "kernel_spec.h"

#include <stddef.h>

typedef struct qc_cuda_kernel {
    char *src; /* NUL-terminated CUDA C source, owned */
    size_t src_len;
    char gemv[128], lrt[128]; /* entry points; lrt is "" without low-rank */
    char gemm[128];           /* prefix of the GEMM entry points gemm8, gemm16, gemm32, gemm64 */
    unsigned grid, block, lrt_grid, lrt_block;
    unsigned gemm_grid; /* GEMM blocks along the rows (block: `block` threads) */
    size_t ws_floats;
    char had[128];      /* online Hadamard kernel; "" without a transform */
    unsigned had_block; /* its threads per block */
    size_t had_smem;    /* its dynamic shared memory (bytes) */
    size_t gemv_smem;   /* the GEMV's dynamic shared memory (0 without a transform) */
} qc_cuda_kernel;

#define QC_CUDA_HAD_THREADS 256

/* The kernel's shape: row tiles of 16 rows per block (1 or 2: 2 reuses each
 * x fragment for 32 rows), warps per block splitting K (at most max_warps,
 * at most the K tiles), and whether a warp loads its next K tile's codes
 * before computing the current one (more bytes in flight); min_blocks > 0
 * caps registers so that many blocks fit on one multiprocessor; gemm: also
 * emit the GEMM entry points (k->gemm is "" without them; they triple the
 * NVRTC time of a spec). */
typedef struct qc_cuda_gemv_opts {
    int rtb, max_warps, prefetch, min_blocks, gemm;
} qc_cuda_gemv_opts;

/* The shape qc_cuda_src_gemv uses (chosen from H100 measurements,
 * bench/gemv_cuda.c). */
void qc_cuda_gemv_default_opts(const qc_kernel_spec *s, qc_cuda_gemv_opts *o);
int qc_cuda_src_gemv_opts(const qc_kernel_spec *s, const qc_cuda_gemv_opts *o, qc_cuda_kernel *k,
                          qc_err *err);

/* Generates the kernels of spec s (qc_cuda_spec_check decides what is
 * supported). Returns 0, or -1 with err. Free with qc_cuda_kernel_free. */
int qc_cuda_src_gemv(const qc_kernel_spec *s, qc_cuda_kernel *k, qc_err *err);
void qc_cuda_kernel_free(qc_cuda_kernel *k);

/* f16 elements between consecutive tokens' x in a batched launch. */
int64_t qc_cuda_x_stride(const qc_kernel_spec *s);

#endif
