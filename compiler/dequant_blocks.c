/* Dequantization of ggml's block formats (layouts as in llama.cpp's
 * ggml-common.h and the gguf package's quants.py). Every block stores its
 * scales as f16; products and sums are kept as separate float operations in
 * the same order as the reference so results match it bit for bit (no FMA
 * contraction across statements). */
#include "dequant.h"

#include <string.h>

void qc_dequantize_blocks(qc_dtype t, const uint8_t *src, float *dst, int64_t n);

static float f16at(const uint8_t *p) {
    return qc_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static uint32_t u32at(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Q8_0: {f16 d; int8 q[32]}; x = d * q. */
static void q8_0(const uint8_t *b, float *y) {
    float d = f16at(b);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)(int8_t)b[2 + j];
}

/* Q4_0: {f16 d; u8 qs[16]}; element j is the low nibble of qs[j], element
 * j+16 the high nibble; x = d * (q - 8). */
static void q4_0(const uint8_t *b, float *y) {
    float d = f16at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0x0f) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1: {f16 d; f16 m; u8 qs[16]}; x = d * q + m. */
static void q4_1(const uint8_t *b, float *y) {
    float d = f16at(b), m = f16at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float lo = d * (float)(qs[j] & 0x0f), hi = d * (float)(qs[j] >> 4);
        y[j] = lo + m;
        y[j + 16] = hi + m;
    }
}

/* Q5_0: {f16 d; u32 qh; u8 qs[16]}; bit j of qh is the fifth bit of element j;
 * x = d * (q - 16). */
static void q5_0(const uint8_t *b, float *y) {
    float d = f16at(b);
    uint32_t qh = u32at(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1: {f16 d; f16 m; u32 qh; u8 qs[16]}; x = d * q + m. */
static void q5_1(const uint8_t *b, float *y) {
    float d = f16at(b), m = f16at(b + 2);
    uint32_t qh = u32at(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        float a = d * (float)lo, c = d * (float)hi;
        y[j] = a + m;
        y[j + 16] = c + m;
    }
}

/* The 12 scale bytes of Q4_K/Q5_K hold eight 6-bit scales and eight 6-bit
 * mins: sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7
 * (mins); sub-blocks 4-7 take their low 4 bits from bytes 8-11 (scale low
 * nibble, min high nibble) and their top 2 bits from the top of bytes 0-7. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32;
 * sub-block 2i uses the low nibbles of qs[32i..32i+31], 2i+1 the high ones;
 * x = (d * sc) * q - (dmin * m).
 * Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: the same,
 * plus bit s of qh[l] as the fifth bit of element l of sub-block s. */
static void q4_5_k(const uint8_t *b, float *y, int five) {
    float d = f16at(b), dmin = f16at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    for (int s = 0; s < 8; s++) {
        int sc, mn;
        k_scale_min(scales, s, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (s / 2);
        int shift = 4 * (s % 2);
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> shift) & 0x0f;
            if (five) v |= ((qh[l] >> s) & 1) << 4;
            float x = ds * (float)v;
            y[32 * s + l] = x - dm;
        }
    }
}

static void q4_k(const uint8_t *b, float *y) {
    q4_5_k(b, y, 0);
}

static void q5_k(const uint8_t *b, float *y) {
    q4_5_k(b, y, 1);
}

/* Q6_K: {u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d}: two halves of 128;
 * in half h, element 32k + l (k = 0..3, l = 0..31) takes its low 4 bits from
 * ql[64h + l + 32(k % 2)] (low nibble for k < 2, high for k >= 2) and its top
 * 2 bits from bits 2k of qh[32h + l]; x = (d * scale[e / 16]) * (q - 32). */
static void q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = f16at(b + 208);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (ql[64 * h + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0f;
        int hi = (qh[32 * h + l] >> (2 * k)) & 3;
        float ds = d * (float)scales[e / 16];
        y[e] = ds * (float)((lo | (hi << 4)) - 32);
    }
}

/* Q3_K: {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 16 sub-blocks of
 * 16. Element e takes its low 2 bits from qs[32(e / 128) + e % 32] at bit
 * 2((e % 128) / 32) and its third bit from bit e / 32 of hmask[e % 32];
 * x = (d * (sc - 32)) * (q - 4). Scale s is 6 bits: the low 4 from
 * scales[s % 8] (low nibble for s < 8, high for s >= 8), the top 2 from bits
 * 2(s / 4) of scales[8 + s % 4]. */
static void q3_k(const uint8_t *b, float *y) {
    const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    float d = f16at(b + 108);
    for (int e = 0; e < 256; e++) {
        int s = e / 16;
        int ls =
            ((sc[s % 8] >> (4 * (s / 8))) & 0x0f) | (((sc[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
        int lo = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        int hi = (hmask[e % 32] >> (e / 32)) & 1;
        float dl = d * (float)(ls - 32);
        y[e] = dl * (float)((lo | (hi << 2)) - 4);
    }
}

/* The non-linear 4-bit levels of IQ4_NL / IQ4_XS (part of the format). */
const int8_t qc_iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};

/* IQ4_NL: {f16 d; u8 qs[16]} with Q4_0's nibble order; x = d * level[q]. */
static void iq4_nl(const uint8_t *b, float *y) {
    float d = f16at(b);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)qc_iq4_levels[b[2 + j] & 0x0f];
        y[j + 16] = d * (float)qc_iq4_levels[b[2 + j] >> 4];
    }
}

/* IQ4_XS: {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}: 8 sub-blocks of
 * 32, each with IQ4_NL's nibble order in 16 bytes of qs and a 6-bit scale ls
 * (low 4 bits: nibble s % 2 of scales_l[s / 2]; top 2: bits 2s of
 * scales_h); x = (d * (ls - 32)) * level[q]. */
static void iq4_xs(const uint8_t *b, float *y) {
    float d = f16at(b);
    unsigned sh = (unsigned)(b[2] | (b[3] << 8));
    for (int s = 0; s < 8; s++) {
        int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 0x0f) | (int)(((sh >> (2 * s)) & 3) << 4);
        float dl = d * (float)(ls - 32);
        const uint8_t *q = b + 8 + 16 * s;
        for (int j = 0; j < 16; j++) {
            y[32 * s + j] = dl * (float)qc_iq4_levels[q[j] & 0x0f];
            y[32 * s + j + 16] = dl * (float)qc_iq4_levels[q[j] >> 4];
        }
    }
}

void qc_dequantize_blocks(qc_dtype t, const uint8_t *src, float *dst, int64_t n) {
    void (*block)(const uint8_t *, float *) = NULL;
    switch (t) {
    case QC_DT_Q8_0:
        block = q8_0;
        break;
    case QC_DT_Q4_0:
        block = q4_0;
        break;
    case QC_DT_Q4_1:
        block = q4_1;
        break;
    case QC_DT_Q5_0:
        block = q5_0;
        break;
    case QC_DT_Q5_1:
        block = q5_1;
        break;
    case QC_DT_Q4_K:
        block = q4_k;
        break;
    case QC_DT_Q5_K:
        block = q5_k;
        break;
    case QC_DT_Q6_K:
        block = q6_k;
        break;
    case QC_DT_Q3_K:
        block = q3_k;
        break;
    case QC_DT_IQ4_NL:
        block = iq4_nl;
        break;
    case QC_DT_IQ4_XS:
        block = iq4_xs;
        break;
    default:
        memset(dst, 0, (size_t)n * sizeof *dst);
        return;
    }
    int64_t be = qc_dtype_block_elems(t);
    size_t bb = qc_dtype_block_bytes(t);
    for (int64_t i = 0; i < n / be; i++)
        block(src + (size_t)i * bb, dst + i * be);
}
