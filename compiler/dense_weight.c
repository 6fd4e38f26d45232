/* Dense effective weights (see dense_weight.h). */
#include "dense_weight.h"
#include "hadamard.h"
#include "quant.h"

#include <math.h>

int qc_dense_weight(const qc_model *m, const char *name, int64_t rows, int64_t cols, float *w,
                    qc_err *err) {
    const qc_quant_state *q = qc_model_quant(m, name);
    const qc_tensor *t = q ? NULL : qc_model_find(m, name);
    if (q ? q->rows != rows || q->cols != cols : !t || qc_tensor_numel(t) != rows * cols)
        return qc_err_set(err, "%s: weight '%s' missing or not %lld x %lld", m->path, name,
                          (long long)rows, (long long)cols);
    if (q)
        qc_quant_dequantize(q, w);
    else if (qc_tensor_to_f32(t, w, err))
        return -1;
    int n = qc_model_online_hadamard(m, name);
    if (n > 0) {
        if (n != cols)
            return qc_err_set(err, "%s: '%s': online Hadamard of size %d on %lld inputs", m->path,
                              name, n, (long long)cols);
        /* Row r of W'·T is Tᵀ applied to row r. */
        qc_hadamard *h = qc_hadamard_new(n, err);
        if (!h) return -1;
        qc_hadamard_apply(h, w, rows, 1, 1.0f / sqrtf((float)n));
        qc_hadamard_free(h);
    }
    return 0;
}
