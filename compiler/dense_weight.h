/* The weight a linear of a (compiled) model applies to its input, as one
 * dense f32 matrix: what an exporter writes for a layer whose compression
 * the target format cannot hold (fallback: dequantize). */
#ifndef QC_DENSE_WEIGHT_H
#define QC_DENSE_WEIGHT_H

#include "model.h"

/* Fills w (rows × cols, row-major, HF order) for weight `name` of m: its
 * quantized state dequantized (codes, sparse outliers, low-rank factors),
 * or its tensor in any dtype, then any online Hadamard on its input folded
 * in: y = W'·(T x) = (W'·T) x with T = H_n/sqrt(n). Returns 0 or -1 with
 * err (no such weight, wrong size). */
int qc_dense_weight(const qc_model *m, const char *name, int64_t rows, int64_t cols, float *w,
                    qc_err *err);

#endif
