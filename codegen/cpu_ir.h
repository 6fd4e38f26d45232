/* LLVM IR of the CPU kernels of one spec (used by cpu_llvm.c; needs LLVM).
 *
 * gemv (decode): per output row, walks the packed codes tile by tile; each
 * slot's 8 codes come out of the lane words with a mask (or shift), are
 * converted to f32 and multiplied into x, which the prologue stored
 * permuted (act-order), zero-padded and pre-scaled by 2^-shift per slot so
 * the kernel needs no shift (code·2^s · x·2^-s = code·x exactly). Per group:
 *     y += scale_g · Σ_{c∈g} code_c·x_c − scale_g·zero_g · Σ_{c∈g} x_c
 * with Σ x per group computed once per call. Then the CSR outliers and
 * A·(B·x) are added. Row sums are reduced in blocks of rows, after the
 * block, and the codes are prefetched 1 KiB ahead.
 *
 * gemm (prefill): dequantizes QC_GEMM_ROW_TILE rows of Ŵ at once into f32
 * (packed column order; with act-order x is gathered into that order once
 * per call) and multiplies them with every row of x (register tile: 4 rows
 * of Ŵ × 2 vector accumulators), so each weight is unpacked once per call,
 * not once per row of x; outliers and A·(B·x) are added per output.
 *
 * Reductions run in a fixed order (no fast-math reassociation), so results
 * do not depend on how rows are split across threads. */
#ifndef QC_CPU_IR_H
#define QC_CPU_IR_H

#include "kernel_spec.h"

#include <llvm-c/Core.h>

/* Adds the gemv and gemm kernels of s (named qc_kernel_spec_symbol) to M. */
typedef struct qc_cpu_ir_target {
    int vector_f16; /* the target converts <8 x half> natively (F16C, NEON) */
    int vnni;       /* x86 with AVX512-VNNI, -VBMI and -BW (vpdpbusd, vpermb,
                       vpmultishiftqb): gemv of 2..8-bit codes in whole
                       64-column groups runs on integer dot products with x
                       in 16-bit fixed point per tile (cpu_ir.c) */
} qc_cpu_ir_target;
int qc_cpu_ir_emit(LLVMModuleRef M, const qc_kernel_spec *s, const qc_cpu_ir_target *t,
                   qc_err *err);

#endif
