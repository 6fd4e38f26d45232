/* Kernel specs (DESIGN.md, "Kernels"): the key of one generated kernel. Layers
 * whose specs are equal share one kernel; every field is a compile-time
 * constant of the generated code. The spec also fixes the packed-weight
 * layout the kernel reads (codegen/pack.h) and the kernel ABI below. */
#ifndef QC_KERNEL_SPEC_H
#define QC_KERNEL_SPEC_H

#include "../compiler/err.h"

#include <stddef.h>
#include <stdint.h>

struct qc_quant_state;

enum { QC_KFMT_INT = 1 }; /* group-wise integer (compiler/quant.h) */
enum { QC_KTRANSFORM_NONE = 0, QC_KTRANSFORM_HADAMARD = 1 }; /* online transform of the input */
enum { QC_KACT_F32 = 0 };                                    /* activation type */

typedef struct qc_kernel_spec {
    int format;         /* QC_KFMT_INT */
    int bits;           /* 2..8 */
    int group_size;     /* columns per group (a multiple of 8); 0 = per-channel */
    int symmetric;      /* 1: zero fixed at 2^(bits-1); 0: per-group u8 zero point */
    int64_t out, in;    /* weight is out × in */
    int act_order;      /* 1: columns permuted at pack time (a permutation is packed) */
    int outliers;       /* 1: sparse f16 CSR outliers are added */
    int rank;           /* low-rank correction rank r (0: none) */
    int transform;      /* QC_KTRANSFORM_* on the input */
    int transform_size; /* Hadamard size n (0 when none) */
    int act;            /* QC_KACT_F32 */
} qc_kernel_spec;

/* Largest out/in a kernel accepts: offsets inside a packed weight stay
 * below 2^62 and row/column indices fit int32 (CSR columns, permutation). */
#define QC_KERNEL_MAX_DIM ((int64_t)1 << 30)

/* Checks that a spec is well-formed and that codegen supports it. An online
 * Hadamard (x ← H_n x / sqrt(n) before the product, compiler/hadamard.h) must
 * have n = in and a supported order; the CPU and CUDA kernels apply it, and
 * neither packed layout depends on it (blobs are packed for the spec
 * without it; qc_cuda_spec_check adds the CUDA generator's limits). */
int qc_kernel_spec_check(const qc_kernel_spec *s, qc_err *err);

/* The spec of a quantized linear: format, bits, group size, zero points and
 * shape from q; act_order is set when q's g_idx does not list the groups in
 * column order (the packer then permutes columns so groups are contiguous);
 * has_outliers and rank describe the sparse and low-rank parts. Fails when
 * the grouping cannot be made contiguous (a group with more or fewer than
 * group_size columns) or the spec is unsupported. */
int qc_kernel_spec_from_quant(const struct qc_quant_state *q, int has_outliers, int rank,
                              qc_kernel_spec *s, qc_err *err);

/* Stable identifier of a spec, usable inside a C symbol, e.g.
 * "i4g128a_o576_i1536_p_s_r16" (bits, group (c = per-channel), s/a
 * = symmetric/asymmetric, shape, then p = act-order, s = outliers, rN =
 * rank, hN = Hadamard). Equal specs give equal ids and vice versa. Returns
 * the length, or -1 when buf (size n) is too small (64 bytes always suffice). */
int qc_kernel_spec_id(const qc_kernel_spec *s, char *buf, size_t n);

/* "qck_<id>_gemv" / "qck_<id>_gemm": the symbols of the two kernels of a spec
 * in a generated shared object. Same return as qc_kernel_spec_id. */
int qc_kernel_spec_symbol(const qc_kernel_spec *s, const char *kind, char *buf, size_t n);

/* 64-bit hash of the id (XXH64, seed 0): stored in packed weights so a
 * kernel is never run on weights packed for another spec. */
uint64_t qc_kernel_spec_hash(const qc_kernel_spec *s);

int qc_kernel_spec_equal(const qc_kernel_spec *a, const qc_kernel_spec *b);

/* Dedup: writes to idx[i] the index into the returned list of distinct specs
 * (in first-seen order) of specs[i], and returns the number of distinct
 * specs, which are stored in uniq (room for n). */
int qc_kernel_specs_dedup(const qc_kernel_spec *specs, int n, qc_kernel_spec *uniq, int *idx);

/* Kernel ABI (both kernels are pure functions of their arguments):
 *   gemv: y[o] = Σ_c Ŵ[o][c]·x[c]                      for o in [r0, r1)
 *   gemm: y[i·out + o] = Σ_c Ŵ[o][c]·x[i·in + c]       for i < m, o in [r0, r1)
 * Ŵ = dequantized codes + sparse outliers + A·B (low-rank). w is the packed
 * weight (codegen/pack.h, needs no alignment); ws is scratch of
 * qc_kernel_ws_floats(spec, m) floats owned by the caller (one per thread;
 * 32-byte alignment recommended, not required).
 * Outputs outside [r0, r1) are not touched, and each output row's value does
 * not depend on r0/r1, so rows can be split across threads freely. */
typedef void (*qc_gemv_fn)(const uint8_t *w, const float *x, float *y, int64_t r0, int64_t r1,
                           float *ws);
/* gemv split in two (same results): gemv_prep(w, x, prep) writes the
 * x-dependent part of a workspace once per call; gemv_rows(w, x, y, r0, r1,
 * prep, ws) computes rows [r0, r1) from it with its own scratch ws (one per
 * thread; prep is only read, so threads share it). gemv(w, x, y, r0, r1, ws)
 * is gemv_prep(w, x, ws) then gemv_rows(w, x, y, r0, r1, ws, ws). */
typedef void (*qc_gemv_prep_fn)(const uint8_t *w, const float *x, float *prep);
typedef void (*qc_gemv_rows_fn)(const uint8_t *w, const float *x, float *y, int64_t r0, int64_t r1,
                                const float *prep, float *ws);
typedef void (*qc_gemm_fn)(const uint8_t *w, const float *x, int64_t m, float *y, int64_t r0,
                           int64_t r1, float *ws);

/* Rows of Ŵ the GEMM kernel dequantizes at once (its reuse tile); callers
 * splitting rows across threads keep boundaries multiples of this so a row
 * always takes the same code path. */
#define QC_GEMM_ROW_TILE 4
#define QC_GEMV_ROW_BLOCK 64

/* Workspace layout (offsets in floats). gemv: xs = x permuted, scaled per
 * slot and zero-padded (in8 = in rounded up to 8; room for in rounded up to
 * 64: the AVX-512 VNNI gemv's bytes of x and per-tile scales), xsum = per-group sums of
 * x, srow = one row's scales, t = B·x, rv/rc = per-row vector sums and
 * zero-point corrections of a block of QC_GEMV_ROW_BLOCK rows, xt/xh (online
 * transform only, in8 each) = the transformed x and its scratch. gemm: wt =
 * QC_GEMM_ROW_TILE dequantized rows (packed column order), t = m × rank,
 * then (act-order) x gathered into packed order, m × in8, at t_gemm +
 * m·rank rounded up to 8, then (online transform) the transformed x, m ×
 * in8, and in8 of scratch. */
typedef struct qc_kernel_ws {
    int64_t in8;
    int64_t xs, xsum, srow, t_gemv, rv, rc, xt, xh, gemv_total;
    int64_t wt, t_gemm;
} qc_kernel_ws;
void qc_kernel_ws_layout(const qc_kernel_spec *s, qc_kernel_ws *l);

/* Workspace (floats) enough for the gemv kernel of spec s and for its gemm
 * kernel on up to m rows of x. */
size_t qc_kernel_ws_floats(const qc_kernel_spec *s, int64_t m);

#endif
