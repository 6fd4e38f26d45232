/* Packed weights: the exact bytes a generated CPU kernel reads for one linear
 * layer, produced at compile time (DESIGN.md, "Kernels").
 *
 * A packed weight is one little-endian blob. Its sections start at offsets
 * that are multiples of 64; all offsets except the last two follow from the
 * kernel spec alone (they are compile-time constants of the kernel):
 *
 *   header   64 bytes at 0:
 *              0  8  magic "QCPACK1\0"
 *              8  8  u64 spec hash (qc_kernel_spec_hash)
 *             16  8  u64 nnz (number of sparse outliers; 0 without outliers)
 *             24  8  u64 total size of the blob in bytes
 *             32 32  zero
 *   codes    out rows × row_bytes, row_bytes = tiles · 8 · bits,
 *            tiles = ceil(in / 64)
 *   scales   f16, out × n_groups (row-major), n_groups = ceil(in / group_size)
 *            (1 when per-channel), then 16 zero bytes (kernels load scales 8
 *            groups at a time)
 *   zeros    u8, out × n_groups, then 8 zero bytes; asymmetric formats only
 *   perm     i32, in; act-order only: packed column p holds original column
 *            perm[p]
 *   lr_a     f16, out × rank (A); low-rank only
 *   lr_b     f16, rank × in (B, original column order); low-rank only
 *   row_ptr  i32, out + 1 (CSR, row_ptr[0] = 0, non-decreasing, row_ptr[out] =
 *            nnz); outliers only
 *   col      i32, nnz (original column index, < in); outliers only
 *   val      f16, nnz; outliers only (offset = align64(col + 4·nnz))
 *
 * Ŵ[o][c] = scale[o][g]·(code[o][c] − zero[o][g]) + S[o][c] + Σ_k A[o][k]·B[k][c]
 * with g the group of packed column p (g = p / group_size, 0 per-channel),
 * zero = 2^(bits−1) when symmetric, S the CSR outliers (added, not replacing
 * the quantized value). Scales must be exact f16 values (compiler/quant.c
 * rounds them so); zero points integers in [0, 2^bits − 1].
 *
 * Codes, row by row, in tiles of 64 packed columns. In tile t, packed column
 * p = 64t + 8j + l is slot j (0..7), lane l (0..7): one slot is 8 adjacent
 * columns, so one slot of codes multiplies one 8-float vector of x. Lane l's
 * eight codes form a little bit stream of 8·bits bits,
 *     S_l = Σ_j code(j, l) << (j·bits),
 * i.e. `bits` bytes per lane, 8·bits bytes per tile. The stream bytes are
 * split into chunks of 4, 2 or 1 bytes (bits 2: [2]; 3: [2,1]; 4: [4];
 * 5: [4,1]; 6: [4,2]; 7: [4,2,1]; 8: [4,4]); a chunk of K bytes starting at
 * stream byte b is stored at tile offset 8·b with lane l's K bytes at
 * 8·b + K·l (little-endian). So one vector load of a chunk (<8 x iK>) gives
 * every lane its part of the stream, and slot j's codes come out of the
 * lanes with a shift and a mask (e.g. 4-bit: one 32-byte load = 64 codes,
 * code j = (word >> 4j) & 15). Columns p ≥ in (the last tile's padding)
 * have code 0.
 *
 * Bits per weight: bits + 16/group_size (scales) + 8/group_size (zeros,
 * asymmetric) + 32/out (perm, act-order) + padding of in to a multiple of
 * 64; counted exactly by qc_pack_bits_per_weight.
 */
#ifndef QC_PACK_H
#define QC_PACK_H

#include "kernel_spec.h"

#include <stddef.h>
#include <stdint.h>

struct qc_quant_state;

#define QC_PACK_MAGIC "QCPACK1"
#define QC_PACK_ALIGN 64

/* Sparse outliers in CSR form (row_ptr: out + 1, col/val: nnz, val f16 bits). */
typedef struct qc_pack_sparse {
    int64_t nnz;
    const int32_t *row_ptr, *col;
    const uint16_t *val;
} qc_pack_sparse;

/* Low-rank factors, f16 bits: A is out × rank, B is rank × in. */
typedef struct qc_pack_lowrank {
    int rank;
    const uint16_t *a, *b;
} qc_pack_lowrank;

/* Section offsets of a packed weight with nnz outliers. */
typedef struct qc_pack_layout {
    int64_t tiles, row_bytes, n_groups;
    size_t codes, scales, zeros, perm, lr_a, lr_b, row_ptr, col, val, total;
} qc_pack_layout;

/* Fills l for spec s (checked with qc_kernel_spec_check) and nnz outliers.
 * Fails on sizes that overflow. */
int qc_pack_layout_get(const qc_kernel_spec *s, int64_t nnz, qc_pack_layout *l, qc_err *err);

/* Packed size in bytes (0 with err on overflow). */
size_t qc_pack_size(const qc_kernel_spec *s, int64_t nnz, qc_err *err);

/* Bits per weight of a packed weight, counting everything but the header. */
double qc_pack_bits_per_weight(const qc_kernel_spec *s, int64_t nnz);

/* Packs q (+ optional sparse outliers and low-rank factors, NULL when absent;
 * they must agree with spec s, which normally comes from
 * qc_kernel_spec_from_quant) into dst of dst_size >= qc_pack_size bytes.
 * Checks every input (codes in range, exact f16 scales, integer zeros, CSR
 * structure and columns). Returns 0 or -1 with err. */
int qc_pack(const qc_kernel_spec *s, const struct qc_quant_state *q, const qc_pack_sparse *sp,
            const qc_pack_lowrank *lr, uint8_t *dst, size_t dst_size, qc_err *err);

/* Checks that blob (size bytes, from an untrusted file) is a packed weight
 * for spec s: magic, spec hash, size, CSR structure and column bounds, zero
 * points and permutation in range. A blob that passes cannot make the kernel
 * read or write out of bounds. Returns 0 or -1 with err. */
int qc_pack_check(const qc_kernel_spec *s, const uint8_t *blob, size_t size, qc_err *err);

/* Unpacks the codes back into original column order (out × in, row-major),
 * and when non-NULL the scales and zeros as f32 (out × n_groups, indexed by
 * the packed group) and g_idx (in: group of each original column). For tests
 * and for anyone who needs the integer codes back. blob must have passed
 * qc_pack_check. */
void qc_unpack(const qc_kernel_spec *s, const uint8_t *blob, uint8_t *codes, float *scales,
               float *zeros, int32_t *g_idx);

/* Pieces shared with other packers (codegen/cuda_pack.c). */
/* Checks the inputs of qc_pack (spec match, codes, f16 scales, zero points,
 * CSR) without packing. */
int qc_pack_check_inputs(const qc_kernel_spec *s, const struct qc_quant_state *q,
                         const qc_pack_sparse *sp, const qc_pack_lowrank *lr, qc_err *err);
/* Packed column order (in entries): columns sorted by group, stable; the
 * identity without act-order. Returns -1 on allocation failure. */
int qc_pack_column_order(const qc_kernel_spec *s, const struct qc_quant_state *q, int32_t *perm);
/* CSR structure and column bounds of row_ptr (out + 1) and col (nnz), both
 * little-endian i32 arrays that need no alignment. */
int qc_pack_check_csr(const qc_kernel_spec *s, const uint8_t *row_ptr, const uint8_t *col,
                      int64_t nnz, qc_err *err);
/* A little-endian i32 permutation of 0..in-1 (each value once). */
int qc_pack_check_perm(const uint8_t *perm, int64_t in, qc_err *err);

/* Chunking of a lane's bit stream (see the comment at the top): widths in
 * bytes, in stream order; returns the number of chunks. Shared with the
 * code generator. */
int qc_pack_chunks(int bits, int widths[3]);

#endif
