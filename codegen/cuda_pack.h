/* Packed weights for the generated CUDA kernels (codegen/cuda_src.h): the
 * bytes a GPU GEMV kernel reads for one linear layer, produced at compile
 * time from the same quantized state as the CPU blob (codegen/pack.h) but
 * laid out for tensor-core fragments and 16-byte coalesced loads.
 *
 * The kernel multiplies with mma.m16n8k16 (f16 in, f32 accumulate), the
 * weight being the A operand: a row tile is 16 output rows, an mma covers 16
 * packed columns, and one K tile is 256 packed columns (16 mmas). In an mma,
 * lane t (g = t/4, q = t%4) holds four f16 pairs (registers r = 0..3):
 *     r = 0: row g,   columns 2q, 2q+1       r = 1: row g+8, columns 2q, 2q+1
 *     r = 2: row g,   columns 2q+8, 2q+9     r = 3: row g+8, columns 2q+8, 2q+9
 * (the element with the lower column is the low half of the pair), where
 * "column" is the mma's K index, not the packed column: in each 32 packed
 * columns, column 32·b + 8·q + 4·j + e sits in mma 2b + j at K index 2q + e
 * (e < 2) or 2q + 8 + e − 2, so lane q finds the x values of both mmas in
 * 8 contiguous f16 (one 16-byte load). Over a K tile lane t holds 64 pairs,
 * pair P = 4·mma + r.
 *
 * A code of `bits` bits is split into planes of 4/2/1/8 bits (2: [2],
 * 3: [2,1], 4: [4], 5: [4,1], 6: [4,2], 7: [4,2,1], 8: [8]); plane π holds
 * bits [off_π, off_π + w_π) of each code. Plane π of a lane is 4·w_π u32
 * words (w_π uint4s) per K tile: word m holds pairs P = m·n .. m·n + n − 1
 * (n = 16 / w_π), pair P's low element at bit w_π·(P mod n) and its high
 * element at bit 16 + w_π·(P mod n). So one shift and one mask put a pair of
 * code pieces in both f16 halves at once, and OR-ing 0x6400 (f16 1024) into
 * each half turns the code c into the f16 1024 + c exactly (no int→float
 * conversion).
 *
 * The blob (little-endian, sections 256-byte aligned):
 *   header   64 bytes: "QCCUDA1\0", u64 spec hash, u64 nnz, u64 total size, zero
 *   codes    [row tile][K tile][uint4 u < bits][lane < 32] 16 bytes each,
 *            uint4 u counting through the planes in order; row tiles padded
 *            to a multiple of QC_CUDA_ROW_TILE_PAD (rows ≥ out and
 *            columns ≥ in have code 0)
 *   sz       [row tile][group][g < 8] records: f16 scale of row 16·rt + g,
 *            f16 scale of row 16·rt + g + 8, and (asymmetric) f16 1024 + zero
 *            of each of the two rows: 4 or 8 bytes. Padding rows: scale 0,
 *            zero 0.
 *   perm     i32, in (act-order): packed column p holds original column perm[p]
 *   lr_a     f16, out × rank; lr_b f16, rank × in (original column order)
 *   row_ptr  i32, out + 1; col i32, nnz; val f16, nnz (outliers, CSR)
 *
 * Bits per weight: bits + 16/group (scale) + 16/group (asymmetric: the zero
 * as an f16, twice the CPU blob's byte, so that it needs no conversion) +
 * padding of out to the row tiles and of in to 256. */
#ifndef QC_CUDA_PACK_H
#define QC_CUDA_PACK_H

#include "kernel_spec.h"
#include "pack.h"

#include <stddef.h>
#include <stdint.h>

struct qc_quant_state;

#define QC_CUDA_PACK_MAGIC "QCCUDA1"
#define QC_CUDA_PACK_ALIGN 256
#define QC_CUDA_KTILE 256 /* packed columns per K tile */

/* Planes of a code (see above): widths and bit offsets; returns the count. */
int qc_cuda_planes(int bits, int width[3], int offset[3]);

/* Row tiles are padded to a multiple of this, so kernels may handle 1 or 2
 * row tiles per block on the same blob. */
#define QC_CUDA_ROW_TILE_PAD 2

typedef struct qc_cuda_layout {
    int64_t row_tiles; /* padded to a multiple of QC_CUDA_ROW_TILE_PAD */
    int64_t k_tiles, n_groups;
    int sz_bytes; /* 4 (symmetric) or 8 */
    size_t codes, sz, perm, lr_a, lr_b, row_ptr, col, val, total;
} qc_cuda_layout;

/* Fills l for spec s and nnz outliers; fails on specs the CUDA generator
 * does not support (qc_cuda_spec_check) and on sizes that overflow. */
int qc_cuda_layout_get(const qc_kernel_spec *s, int64_t nnz, qc_cuda_layout *l, qc_err *err);

/* What the CUDA generator supports on top of qc_kernel_spec_check: group
 * sizes 32, 64, 128 or multiples of 256 (a scale period never splits 32
 * packed columns), or per-channel; an online Hadamard whose base order
 * (compiler/hadamard.h) is at most QC_CUDA_HAD_MAX_BASE (the base mix keeps
 * one column of the p blocks in registers) and whose GEMV shared memory
 * (qc_cuda_had_smem) is at most QC_CUDA_HAD_MAX_SMEM (an H100 block has 227
 * KiB, an A100's 163 KiB). The transform does not change the layout below:
 * a blob is packed and checked with the spec without it. Returns 0 or -1
 * with err. */
int qc_cuda_spec_check(const qc_kernel_spec *s, qc_err *err);

#define QC_CUDA_HAD_MAX_BASE 256
#define QC_CUDA_HAD_MAX_SMEM (160 * 1024)

/* Dynamic shared memory (bytes) of the GEMV of a spec with an online
 * Hadamard: x transformed in f32 (in floats) and as f16 in packed column
 * order (k_tiles·256 values). */
size_t qc_cuda_had_smem(const qc_kernel_spec *s);

size_t qc_cuda_pack_size(const qc_kernel_spec *s, int64_t nnz, qc_err *err);

/* Packs q (+ outliers and low-rank factors as in qc_pack; NULL when absent)
 * into dst (dst_size >= qc_cuda_pack_size). Checks every input like
 * qc_pack. Returns 0 or -1 with err. */
int qc_cuda_pack(const qc_kernel_spec *s, const struct qc_quant_state *q, const qc_pack_sparse *sp,
                 const qc_pack_lowrank *lr, uint8_t *dst, size_t dst_size, qc_err *err);

/* Checks that blob (size bytes, untrusted) is a CUDA packed weight for spec
 * s: magic, spec hash, size, CSR structure and columns, permutation. A blob
 * that passes cannot make the kernel read or write out of bounds. */
int qc_cuda_pack_check(const qc_kernel_spec *s, const uint8_t *blob, size_t size, qc_err *err);

/* Code of row o, packed column p, read back from a blob (tests). */
unsigned qc_cuda_pack_code(const qc_kernel_spec *s, const uint8_t *blob, int64_t o, int64_t p);

#endif
