#include "loaders.h"

int qc_hf_load(qc_model *m, const char *dir, qc_err *err) {
    (void)m;
    return qc_err_set(err, "%s: safetensors loading is not implemented yet", dir);
}
