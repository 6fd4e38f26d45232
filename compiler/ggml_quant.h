/* Quantization *into* ggml's block formats, for GGUF export (issue 7).
 *
 * Every supported type stores, per block of `block` weights, sub-blocks of
 * `sub` weights whose values are an affine function of a small code:
 *     x = scale[s] · (level(code) − zero[s])
 * with level(code) = code for the integer types and qc_iq4_levels[code] for
 * IQ4_NL / IQ4_XS (Q5_0 and Q5_1 too: the fallbacks llama.cpp uses for rows not a
 * multiple of 256). What differs between types is which (scale, zero) pairs
 * are representable (f16 block scales, 6- or 8-bit sub-block scales, ...).
 * qc_ggml_fit chooses representable parameters for one block (a weighted
 * search, importance = e.g. the Hessian diagonal, like an imatrix) and
 * returns both the encoded fields and the per-sub-block (scale, zero) they
 * decode to, so a quantizer (RTN here, GPTQ in compiler/quant.c) can round
 * weights to exactly the values llama.cpp will reconstruct; qc_ggml_encode
 * then writes the block bytes from the fields and the codes.
 *
 * Layouts are ggml's (compiler/dequant_blocks.c documents each one). */
#ifndef QC_GGML_QUANT_H
#define QC_GGML_QUANT_H

#include "model.h"
#include "quant.h"

#include <stdint.h>

enum { QC_GGML_MAX_SUB = 16 };

/* The encoded fields of one block, as stored in the file. */
typedef struct qc_ggml_block {
    uint16_t d, dmin;             /* f16 block scale(s) (dmin: Q4_1 m, K-quant mins) */
    int16_t sc[QC_GGML_MAX_SUB];  /* sub-block scales (type-specific range) */
    int16_t mn[QC_GGML_MAX_SUB];  /* sub-block mins (Q4_K / Q5_K) */
    float scale[QC_GGML_MAX_SUB]; /* what they decode to: x = scale·(level − zero) */
    float zero[QC_GGML_MAX_SUB];
} qc_ggml_block;

/* Shape of a type: weights per block, per sub-block, code bits, whether the
 * levels are IQ4's non-linear table. Returns 0, or -1 for types that cannot
 * be written (F32/F16/BF16 are not block-quantized here; the
 * rest are not supported). */
int qc_ggml_type_shape(qc_dtype t, int *block, int *sub, int *bits, int *nonlinear);

/* Level of a code (the integer multiplied by the sub-block scale). */
float qc_ggml_level(qc_dtype t, int code);

/* Fits one block of x (block weights) with importance imp (block weights,
 * >= 0; NULL = uniform): chooses fields minimising Σ imp (x − x̂)² over a
 * search of scales, and fills b (fields and decoded scale/zero). */
void qc_ggml_fit(qc_dtype t, const float *x, const float *imp, qc_ggml_block *b);

/* The nearest representable code of x in sub-block s of b. */
uint8_t qc_ggml_code(qc_dtype t, const qc_ggml_block *b, int s, float x);

/* Its value: b->scale[s] · (level(code) − b->zero[s]). */
static inline float qc_ggml_value(qc_dtype t, const qc_ggml_block *b, int s, uint8_t code) {
    return b->scale[s] * (qc_ggml_level(t, code) - b->zero[s]);
}

/* Writes the block's bytes (qc_dtype_block_bytes(t)) from its fields and its
 * codes (block entries). */
void qc_ggml_encode(qc_dtype t, const qc_ggml_block *b, const uint8_t *codes, uint8_t *out);

/* Round-to-nearest of a row of n weights (a multiple of the block size)
 * into out (n / block · block bytes): fit, code, encode. imp may be NULL.
 * Returns 0, or -1 with err for unsupported types, ragged rows or
 * non-finite weights. */
int qc_ggml_quantize_row(qc_dtype t, const float *x, const float *imp, int64_t n, uint8_t *out,
                         qc_err *err);

/* The type a row of `cols` weights is written in when `want` is asked for:
 * want itself when its block divides cols, else llama-quantize's substitute
 * (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q3_K -> Q4_0, IQ4_XS -> IQ4_NL:
 * llama.cpp 0.3.36's src/llama-quant.cpp tensor_type_fallback),
 * repeated; F16 when nothing fits. *fell_back (may be NULL) says whether it
 * changed. */
qc_dtype qc_ggml_row_type(qc_dtype want, int64_t cols, int *fell_back);

/* GPTQ (compiler/quant.h qc_quant_gptq_grid) onto type t's grid (issue 7):
 * each block's fields are fitted with qc_ggml_fit (importance diag H) on
 * the current, error-compensated weights when GPTQ reaches the block's
 * first column (with o->act_order: up front, on the original weights), each
 * weight is rounded to the nearest value the block can represent, and the
 * error is spread as usual. Writes the rows × cols weight (cols a multiple
 * of t's block) to out (rows × row bytes, ggml layout) and, when non-NULL,
 * its decoding (exactly what llama.cpp reconstructs) to deq. H is
 * overwritten as by qc_quant_gptq. Returns 0, or -1 with err. */
int qc_ggml_gptq(qc_dtype t, const float *w, double *H, const qc_gptq_opts *o, int64_t rows,
                 int64_t cols, uint8_t *out, float *deq, qc_err *err);

/* Round-to-nearest of a whole rows × cols weight into t (qc_ggml_quantize_row
 * per row, importance diag (cols, may be NULL)), decoded into deq when
 * non-NULL. Returns 0, or -1 with err. */
int qc_ggml_rtn(qc_dtype t, const float *w, const double *diag, int64_t rows, int64_t cols,
                uint8_t *out, float *deq, qc_err *err);

#endif
