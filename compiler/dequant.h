/* Element types of source tensors and their conversion to f32. Block layouts
 * are ggml's (llama.cpp ggml-common.h): e.g. Q4_0 stores 32 weights as an f16
 * scale and 16 bytes of nibbles. */
#ifndef QC_DEQUANT_H
#define QC_DEQUANT_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>

/* Weights per block (1 for F32/F16/BF16, 32 for Q*_0/Q*_1, 256 for K-quants). */
int64_t qc_dtype_block_elems(qc_dtype t);
/* Bytes per block. */
size_t qc_dtype_block_bytes(qc_dtype t);
/* Bytes needed for n elements; -1 when n is not a whole number of blocks or
 * the size overflows. */
int qc_dtype_nbytes(qc_dtype t, int64_t n, size_t *out);

/* Converts n elements (a whole number of blocks) starting at src to f32. src
 * needs no alignment. */
void qc_dequantize(qc_dtype t, const void *src, float *dst, int64_t n);

/* The 16 non-linear levels of IQ4_NL / IQ4_XS codes. */
extern const int8_t qc_iq4_levels[16];

/* Scalar conversions. */
float qc_f16_to_f32(uint16_t h);
uint16_t qc_f32_to_f16(float f);
float qc_bf16_to_f32(uint16_t h);

#endif
