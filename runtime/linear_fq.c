/* Fake-quant linear (linear.h): the f32 linear of Ŵ = qc_quant_dequantize(q),
 * which holds every part of the compressed weight: dense codes, sparse
 * outliers and the low-rank correction A·B. */
#include "compiler/quant.h"
#include "linear.h"

#include <stdlib.h>
#include <string.h>

qcrt_linear *qcrt_linear_fq_new(const qc_quant_state *q, const float *bias, qc_err *err) {
    size_t n;
    if (qc_mul_size((size_t)q->rows, (size_t)q->cols, &n) || qc_mul_size(n, sizeof(float), &n)) {
        qc_err_set(err, "fake-quant linear: size overflows");
        return NULL;
    }
    float *w = qc_malloc(n, err), *b = NULL;
    if (!w) return NULL;
    qc_quant_dequantize(q, w);
    if (bias) {
        if (!(b = qc_malloc((size_t)q->rows * sizeof(float), err))) {
            free(w);
            return NULL;
        }
        memcpy(b, bias, (size_t)q->rows * sizeof(float));
    }
    qcrt_linear *l = qcrt_linear_f32_new(w, b, q->rows, q->cols, err);
    if (!l) {
        free(w);
        free(b);
    }
    return l;
}
