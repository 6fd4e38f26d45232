#include "loaders.h"

int qc_gguf_load(qc_model *m, const char *path, qc_err *err) {
    (void)m;
    return qc_err_set(err, "%s: GGUF loading is not implemented yet", path);
}
