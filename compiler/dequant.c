#include "dequant.h"

#include <string.h>

typedef struct {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} dtype_info;

/* Sizes from ggml's block structs: scale(s) in f16, then packed codes. */
static const dtype_info dtype_table[QC_DT_COUNT] = {
    [QC_DT_F32] = {"F32", 1, 4},
    [QC_DT_F16] = {"F16", 1, 2},
    [QC_DT_BF16] = {"BF16", 1, 2},
    [QC_DT_Q8_0] = {"Q8_0", 32, 2 + 32},
    [QC_DT_Q4_0] = {"Q4_0", 32, 2 + 16},
    [QC_DT_Q4_1] = {"Q4_1", 32, 2 + 2 + 16},
    [QC_DT_Q5_0] = {"Q5_0", 32, 2 + 4 + 16},
    [QC_DT_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16},
    [QC_DT_Q4_K] = {"Q4_K", 256, 2 + 2 + 12 + 128},
    [QC_DT_Q5_K] = {"Q5_K", 256, 2 + 2 + 12 + 32 + 128},
    [QC_DT_Q6_K] = {"Q6_K", 256, 128 + 64 + 16 + 2},
    [QC_DT_U8] = {"U8", 1, 1},
    [QC_DT_I32] = {"I32", 1, 4},
    [QC_DT_Q3_K] = {"Q3_K", 256, 32 + 64 + 12 + 2},
    [QC_DT_IQ4_NL] = {"IQ4_NL", 32, 2 + 16},
    [QC_DT_IQ4_XS] = {"IQ4_XS", 256, 2 + 2 + 4 + 128},
};

const char *qc_dtype_name(qc_dtype t) {
    return (unsigned)t < QC_DT_COUNT ? dtype_table[t].name : "?";
}

int64_t qc_dtype_block_elems(qc_dtype t) {
    return dtype_table[t].block_elems;
}

size_t qc_dtype_block_bytes(qc_dtype t) {
    return dtype_table[t].block_bytes;
}

int qc_dtype_nbytes(qc_dtype t, int64_t n, size_t *out) {
    if ((unsigned)t >= QC_DT_COUNT || n < 0 || n % dtype_table[t].block_elems) return -1;
    return qc_mul_size((size_t)(n / dtype_table[t].block_elems), dtype_table[t].block_bytes, out);
}

float qc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qc_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past max half */
    if (absx < 0x38800000u) { /* subnormal half or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;
        /* value = man * 2^(E-150); half subnormal unit is 2^-24 */
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23);
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float qc_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static void dequant_float(qc_dtype t, const uint8_t *src, float *dst, int64_t n) {
    if (t == QC_DT_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (t == QC_DT_F16) {
        for (int64_t i = 0; i < n; i++) dst[i] = qc_f16_to_f32(rd16(src + 2 * i));
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = qc_bf16_to_f32(rd16(src + 2 * i));
    }
}

/* Quantized block types: implemented in dequant_blocks (ggml layouts). */
void qc_dequantize_blocks(qc_dtype t, const uint8_t *src, float *dst, int64_t n);

void qc_dequantize(qc_dtype t, const void *src, float *dst, int64_t n) {
    if (t == QC_DT_F32 || t == QC_DT_F16 || t == QC_DT_BF16)
        dequant_float(t, src, dst, n);
    else if (t == QC_DT_U8)
        for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)src)[i];
    else if (t == QC_DT_I32)
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const uint8_t *)src + 4 * i, 4);
            dst[i] = (float)v;
        }
    else
        qc_dequantize_blocks(t, src, dst, n);
}
