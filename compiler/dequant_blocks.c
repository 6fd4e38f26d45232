#include "dequant.h"

#include <string.h>

void qc_dequantize_blocks(qc_dtype t, const uint8_t *src, float *dst, int64_t n) {
    (void)t;
    (void)src;
    memset(dst, 0, (size_t)n * sizeof *dst);
}
