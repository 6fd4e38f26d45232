/* Fuzz target: arbitrary bytes as a .safetensors file. The parser must reject
 * or accept without reading outside the buffer; accepted tensors must lie in
 * bounds and convert to f32. */
#include "compiler/model.h"
#include "compiler/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy, so ASan catches reads past the end of the input. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    qc_err err;
    qc_safetensors *st = qc_safetensors_parse("fuzz.safetensors", buf, size, &err);
    if (st) {
        for (int i = 0; i < st->n_tensors; i++) {
            const qc_st_tensor *s = &st->tensors[i];
            if (s->offset + s->nbytes > size) abort();
            qc_tensor t;
            if (qc_st_tensor_view(s, &t)) continue;
            int64_t n = qc_tensor_numel(&t);
            if (n > 0 && n <= (1 << 20)) {
                float *out = malloc((size_t)n * sizeof *out);
                if (out && qc_tensor_to_f32(&t, out, &err) != 0) abort();
                free(out);
            }
        }
    }
    qc_safetensors_free(st);
    free(buf);
    return 0;
}
