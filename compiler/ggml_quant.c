/* Quantization into ggml block formats (see ggml_quant.h). The search is
 * ours: per sub-block, a weighted least-squares fit of (scale, zero) over a
 * small grid of starting ranges; per block, the sub-block scales rounded to
 * the type's integer grid under an f16 block scale, then each integer
 * refined by ±1 against the re-rounded codes. */
#include "ggml_quant.h"
#include "dequant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct type_shape {
    int block, sub, bits, nonlinear;
    int affine;         /* per-sub-block min (Q4_1, Q4_K, Q5_K) */
    int zero;           /* fixed zero of symmetric types (codes are unsigned) */
    int code_min;       /* lowest code used (Q8_0 avoids -128, see below) */
    int sc_min, sc_max; /* integer sub-block scale range (0, 0: the f16 d is the scale) */
} type_shape;

static int shape_of(qc_dtype t, type_shape *s) {
    memset(s, 0, sizeof *s);
    switch (t) {
    case QC_DT_Q8_0: /* int8 -128 breaks SIMD sign tricks in ggml's dot products */
        *s = (type_shape){32, 32, 8, 0, 0, 128, 1, 0, 0};
        return 0;
    case QC_DT_Q4_0:
        *s = (type_shape){32, 32, 4, 0, 0, 8, 0, 0, 0};
        return 0;
    case QC_DT_Q4_1:
        *s = (type_shape){32, 32, 4, 0, 1, 0, 0, 0, 0};
        return 0;
    case QC_DT_IQ4_NL:
        *s = (type_shape){32, 32, 4, 1, 0, 0, 0, 0, 0};
        return 0;
    case QC_DT_Q5_0:
        *s = (type_shape){32, 32, 5, 0, 0, 16, 0, 0, 0};
        return 0;
    case QC_DT_Q5_1:
        *s = (type_shape){32, 32, 5, 0, 1, 0, 0, 0, 0};
        return 0;
    case QC_DT_Q4_K:
        *s = (type_shape){256, 32, 4, 0, 1, 0, 0, 0, 63};
        return 0;
    case QC_DT_Q5_K:
        *s = (type_shape){256, 32, 5, 0, 1, 0, 0, 0, 63};
        return 0;
    case QC_DT_Q6_K:
        *s = (type_shape){256, 16, 6, 0, 0, 32, 0, -127, 127};
        return 0;
    case QC_DT_Q3_K:
        *s = (type_shape){256, 16, 3, 0, 0, 4, 0, -32, 31};
        return 0;
    case QC_DT_IQ4_XS:
        *s = (type_shape){256, 32, 4, 1, 0, 0, 0, -32, 31};
        return 0;
    default:
        return -1;
    }
}

int qc_ggml_type_shape(qc_dtype t, int *block, int *sub, int *bits, int *nonlinear) {
    type_shape s;
    if (shape_of(t, &s)) return -1;
    if (block) *block = s.block;
    if (sub) *sub = s.sub;
    if (bits) *bits = s.bits;
    if (nonlinear) *nonlinear = s.nonlinear;
    return 0;
}

float qc_ggml_level(qc_dtype t, int code) {
    return t == QC_DT_IQ4_NL || t == QC_DT_IQ4_XS ? (float)qc_iq4_levels[code & 15] : (float)code;
}

/* Nearest code of u = x / scale + zero (linear) or of x / scale (IQ4). */
static uint8_t nearest(const type_shape *s, float u) {
    if (s->nonlinear) {
        int best = 0;
        float bd = fabsf(u - (float)qc_iq4_levels[0]);
        for (int c = 1; c < 16; c++) {
            float dd = fabsf(u - (float)qc_iq4_levels[c]);
            if (dd < bd) bd = dd, best = c;
        }
        return (uint8_t)best;
    }
    float hi = (float)((1 << s->bits) - 1), lo = (float)s->code_min;
    if (!(u >= lo)) u = lo; /* also NaN */
    if (u > hi) u = hi;
    return (uint8_t)lrintf(u);
}

static uint8_t code_of(const type_shape *s, float x, float scale, float zero) {
    if (scale == 0) return nearest(s, s->nonlinear ? 0 : zero);
    return nearest(s, s->nonlinear ? x / scale : x / scale + zero);
}

static float level_of(const type_shape *s, uint8_t c) {
    return s->nonlinear ? (float)qc_iq4_levels[c] : (float)c;
}

/* Σ w (x − scale·(level − zero))² over n weights with codes re-rounded. */
static double sub_error(const type_shape *s, const float *x, const float *w, int n, float scale,
                        float zero) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        float v = scale * (level_of(s, code_of(s, x[i], scale, zero)) - zero);
        double d = (double)x[i] - v;
        e += (w ? w[i] : 1.0) * d * d;
    }
    return e;
}

/* Symmetric types: x̂ = a·ℓ with ℓ = level − zero over a fixed, asymmetric
 * range [lmin, lmax]. Starting from the largest |x| mapped to either end
 * (and a grid around them), each candidate's codes give the least-squares
 * a = Σ w x ℓ / Σ w ℓ²; keep the best. */
static float fit_symmetric(const type_shape *s, const float *x, const float *w, int n) {
    float xm = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
    if (xm == 0) return 0;
    float lmin = s->nonlinear ? (float)qc_iq4_levels[0] : (float)(s->code_min - s->zero);
    float lmax = s->nonlinear ? (float)qc_iq4_levels[15] : (float)((1 << s->bits) - 1 - s->zero);
    float zero = s->nonlinear ? 0 : (float)s->zero;
    float best_a = xm / lmax;
    double best = sub_error(s, x, w, n, best_a, zero);
    const float ends[2] = {lmin, lmax};
    for (int e = 0; e < 2; e++)
        for (int k = -6; k <= 6; k++) {
            float a = xm / (ends[e] + (float)k * 0.1f * (ends[e] < 0 ? -1.0f : 1.0f));
            double num = 0, den = 0;
            for (int i = 0; i < n; i++) {
                float l = level_of(s, code_of(s, x[i], a, zero)) - zero;
                double wi = w ? w[i] : 1.0;
                num += wi * x[i] * l;
                den += wi * (double)l * l;
            }
            if (den > 0) a = (float)(num / den);
            double err = sub_error(s, x, w, n, a, zero);
            if (err < best) best = err, best_a = a;
        }
    return best_a;
}

/* Affine types: x̂ = a·q + b, q in [0, 2^bits − 1]; K-quants need b <= 0
 * (b = −dmin·m with m >= 0). Starting ranges shrink the min and max
 * separately; each is refined by alternating code rounding with the
 * weighted least-squares (a, b) for those codes. */
static void fit_affine(const type_shape *s, const float *x, const float *w, int n, int b_nonpos,
                       float *a_out, float *b_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    if (b_nonpos && lo > 0) lo = 0;
    float Q = (float)((1 << s->bits) - 1);
    *a_out = (hi - lo) / Q;
    *b_out = lo;
    if (hi == lo) {
        *a_out = 0;
        return;
    }
    double best = 1e300;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            float l0 = lo * (1 - 0.06f * (float)i), h0 = hi * (1 - 0.06f * (float)j);
            if (h0 <= l0) continue;
            float a = (h0 - l0) / Q, b = l0;
            for (int it = 0; it < 3; it++) {
                double sw = 0, sq = 0, sqq = 0, sx = 0, sxq = 0;
                for (int k = 0; k < n; k++) {
                    double q = code_of(s, x[k] - b, a, 0), wk = w ? w[k] : 1.0;
                    sw += wk, sq += wk * q, sqq += wk * q * q, sx += wk * x[k],
                        sxq += wk * x[k] * q;
                }
                double det = sw * sqq - sq * sq;
                if (det <= 0) break;
                double na = (sw * sxq - sq * sx) / det, nb = (sqq * sx - sq * sxq) / det;
                if (b_nonpos && nb > 0) nb = 0, na = sqq > 0 ? sxq / sqq : na;
                if (!(na > 0)) break;
                a = (float)na, b = (float)nb;
            }
            /* x̂ = a q + b = a (q − zero) with zero = −b / a */
            double err = sub_error(s, x, w, n, a, -b / a);
            if (err < best) best = err, *a_out = a, *b_out = b;
        }
}

static float f16r(float v) {
    return qc_f16_to_f32(qc_f32_to_f16(v));
}

static int clampi(long v, int lo, int hi) {
    return v < lo ? lo : (v > hi ? hi : (int)v);
}

/* Decoded (scale, zero) of sub-block k from the block's fields. */
static void decode_sub(qc_dtype t, const type_shape *s, qc_ggml_block *b, int k) {
    float d = qc_f16_to_f32(b->d), dmin = qc_f16_to_f32(b->dmin);
    if (s->sc_max == 0) { /* one sub-block, f16 scale(s) */
        b->scale[k] = d;
        b->zero[k] = s->affine ? (d != 0 ? -dmin / d : 0) : (s->nonlinear ? 0 : (float)s->zero);
        return;
    }
    float sc = d * (float)b->sc[k];
    b->scale[k] = sc;
    if (s->affine)
        b->zero[k] = sc != 0 ? dmin * (float)b->mn[k] / sc : 0;
    else
        b->zero[k] = s->nonlinear ? 0 : (float)s->zero;
    (void)t;
}

void qc_ggml_fit(qc_dtype t, const float *x, const float *imp, qc_ggml_block *b) {
    type_shape s;
    memset(b, 0, sizeof *b);
    if (shape_of(t, &s)) return;
    int ns = s.block / s.sub;
    float a[QC_GGML_MAX_SUB], m[QC_GGML_MAX_SUB]; /* continuous scale and min per sub-block */
    for (int k = 0; k < ns; k++) {
        const float *xs = x + k * s.sub, *ws = imp ? imp + k * s.sub : NULL;
        m[k] = 0;
        if (s.affine) {
            float bb;
            fit_affine(&s, xs, ws, s.sub, s.sc_max > 0, &a[k], &bb);
            m[k] = -bb; /* >= 0 for K-quants; any sign for Q4_1 */
        } else {
            a[k] = fit_symmetric(&s, xs, ws, s.sub);
        }
    }
    if (s.sc_max == 0) { /* Q8_0, Q4_0, Q4_1, IQ4_NL: the fit is the f16 field */
        b->d = qc_f32_to_f16(a[0]);
        b->dmin = qc_f32_to_f16(-m[0]); /* Q4_1 stores the min itself */
        decode_sub(t, &s, b, 0);
        return;
    }
    /* Integer sub-block scales under f16 block scales. Signed ranges map the
     * sub-block scale of largest magnitude to the wider (negative) end. */
    float amax = 0, mmax = 0;
    for (int k = 0; k < ns; k++) {
        if (fabsf(a[k]) > fabsf(amax)) amax = a[k];
        if (m[k] > mmax) mmax = m[k];
    }
    float d = s.sc_min < 0 ? f16r(amax / (float)s.sc_min) : f16r(amax / (float)s.sc_max);
    float dmin = f16r(mmax / (float)s.sc_max);
    b->d = qc_f32_to_f16(d);
    b->dmin = qc_f32_to_f16(dmin);
    for (int k = 0; k < ns; k++) {
        const float *xs = x + k * s.sub, *ws = imp ? imp + k * s.sub : NULL;
        int sc0 = d != 0 ? clampi(lrintf(a[k] / d), s.sc_min, s.sc_max) : 0;
        int mn0 = dmin != 0 ? clampi(lrintf(m[k] / dmin), 0, s.sc_max) : 0;
        double best = 1e300;
        int bsc = sc0, bmn = mn0;
        for (int i = -1; i <= 1; i++)
            for (int j = s.affine ? -1 : 0; j <= (s.affine ? 1 : 0); j++) {
                int sc = clampi(sc0 + i, s.sc_min, s.sc_max), mn = clampi(mn0 + j, 0, s.sc_max);
                if (s.affine && mn > 0 && sc == 0) continue; /* x̂ = −dmin·m: not affine in q */
                b->sc[k] = (int16_t)sc;
                b->mn[k] = (int16_t)mn;
                decode_sub(t, &s, b, k);
                double e = sub_error(&s, xs, ws, s.sub, b->scale[k], b->zero[k]);
                if (e < best) best = e, bsc = sc, bmn = mn;
            }
        b->sc[k] = (int16_t)bsc;
        b->mn[k] = (int16_t)bmn;
        decode_sub(t, &s, b, k);
    }
}

uint8_t qc_ggml_code(qc_dtype t, const qc_ggml_block *b, int k, float x) {
    type_shape s;
    if (shape_of(t, &s)) return 0;
    return code_of(&s, x, b->scale[k], b->zero[k]);
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Q4_0 / IQ4_NL / IQ4_XS sub-block nibbles: element j low, j + 16 high. */
static void nibbles32(const uint8_t *c, uint8_t *qs) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((c[j] & 15) | (c[j + 16] << 4));
}

/* Q4_K / Q5_K scale bytes: the inverse of dequant_blocks.c's k_scale_min. */
static void k_scales(const qc_ggml_block *b, uint8_t *s) {
    for (int j = 0; j < 4; j++) {
        int sc_hi = b->sc[j + 4], mn_hi = b->mn[j + 4];
        s[j] = (uint8_t)((b->sc[j] & 63) | ((sc_hi >> 4) << 6));
        s[j + 4] = (uint8_t)((b->mn[j] & 63) | ((mn_hi >> 4) << 6));
        s[j + 8] = (uint8_t)((sc_hi & 15) | ((mn_hi & 15) << 4));
    }
}

void qc_ggml_encode(qc_dtype t, const qc_ggml_block *b, const uint8_t *c, uint8_t *out) {
    switch (t) {
    case QC_DT_Q8_0:
        put16(out, b->d);
        for (int j = 0; j < 32; j++)
            out[2 + j] = (uint8_t)(int8_t)((int)c[j] - 128);
        break;
    case QC_DT_Q4_0:
    case QC_DT_IQ4_NL:
        put16(out, b->d);
        nibbles32(c, out + 2);
        break;
    case QC_DT_Q4_1:
        put16(out, b->d);
        put16(out + 2, b->dmin);
        nibbles32(c, out + 4);
        break;
    case QC_DT_Q5_0:
    case QC_DT_Q5_1: {
        int one = t == QC_DT_Q5_1;
        uint32_t qh = 0;
        for (int e = 0; e < 32; e++)
            qh |= (uint32_t)((c[e] >> 4) & 1) << e;
        put16(out, b->d);
        if (one) put16(out + 2, b->dmin);
        uint8_t *p = out + (one ? 4 : 2);
        for (int i = 0; i < 4; i++)
            p[i] = (uint8_t)(qh >> (8 * i));
        uint8_t lo[32];
        for (int e = 0; e < 32; e++)
            lo[e] = c[e] & 15;
        nibbles32(lo, p + 4);
        break;
    }
    case QC_DT_Q4_K:
    case QC_DT_Q5_K: {
        int five = t == QC_DT_Q5_K;
        uint8_t *qh = out + 16, *qs = out + (five ? 48 : 16);
        put16(out, b->d);
        put16(out + 2, b->dmin);
        k_scales(b, out + 4);
        memset(qs, 0, 128);
        if (five) memset(qh, 0, 32);
        for (int e = 0; e < 256; e++) {
            int s = e / 32, l = e % 32;
            qs[32 * (s / 2) + l] |= (uint8_t)((c[e] & 15) << (4 * (s % 2)));
            if (five) qh[l] |= (uint8_t)(((c[e] >> 4) & 1) << s);
        }
        break;
    }
    case QC_DT_Q6_K: {
        uint8_t *ql = out, *qh = out + 128;
        memset(out, 0, 192);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            ql[64 * h + l + 32 * (k % 2)] |= (uint8_t)((c[e] & 15) << (4 * (k / 2)));
            qh[32 * h + l] |= (uint8_t)(((c[e] >> 4) & 3) << (2 * k));
        }
        for (int s = 0; s < 16; s++)
            out[192 + s] = (uint8_t)(int8_t)b->sc[s];
        put16(out + 208, b->d);
        break;
    }
    case QC_DT_Q3_K: {
        uint8_t *hmask = out, *qs = out + 32, *sc = out + 96;
        memset(out, 0, 108);
        for (int e = 0; e < 256; e++) {
            qs[32 * (e / 128) + e % 32] |= (uint8_t)((c[e] & 3) << (2 * ((e % 128) / 32)));
            hmask[e % 32] |= (uint8_t)(((c[e] >> 2) & 1) << (e / 32));
        }
        for (int s = 0; s < 16; s++) {
            int ls = b->sc[s] + 32;
            sc[s % 8] |= (uint8_t)((ls & 15) << (4 * (s / 8)));
            sc[8 + s % 4] |= (uint8_t)(((ls >> 4) & 3) << (2 * (s / 4)));
        }
        put16(out + 108, b->d);
        break;
    }
    case QC_DT_IQ4_XS: {
        unsigned sh = 0;
        put16(out, b->d);
        memset(out + 4, 0, 4);
        for (int s = 0; s < 8; s++) {
            int ls = b->sc[s] + 32;
            out[4 + s / 2] |= (uint8_t)((ls & 15) << (4 * (s % 2)));
            sh |= (unsigned)((ls >> 4) & 3) << (2 * s);
            nibbles32(c + 32 * s, out + 8 + 16 * s);
        }
        put16(out + 2, (uint16_t)sh);
        break;
    }
    default:
        break;
    }
}

int qc_ggml_quantize_row(qc_dtype t, const float *x, const float *imp, int64_t n, uint8_t *out,
                         qc_err *err) {
    type_shape s;
    if (shape_of(t, &s))
        return qc_err_set(err,
                          "cannot quantize to %s (supported: Q8_0, Q4_0, Q4_1, IQ4_NL, Q3_K, "
                          "Q4_K, Q5_K, Q6_K, IQ4_XS)",
                          qc_dtype_name(t));
    if (n % s.block)
        return qc_err_set(err, "%s: row of %lld weights is not a multiple of the block (%d)",
                          qc_dtype_name(t), (long long)n, s.block);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return qc_err_set(err, "non-finite weight at column %lld", (long long)i);
    size_t bb = qc_dtype_block_bytes(t);
    uint8_t codes[256];
    for (int64_t i = 0; i < n / s.block; i++) {
        const float *xb = x + i * s.block;
        qc_ggml_block b;
        qc_ggml_fit(t, xb, imp ? imp + i * s.block : NULL, &b);
        for (int e = 0; e < s.block; e++)
            codes[e] = code_of(&s, xb[e], b.scale[e / s.sub], b.zero[e / s.sub]);
        qc_ggml_encode(t, &b, codes, out + (size_t)i * bb);
    }
    return 0;
}

qc_dtype qc_ggml_row_type(qc_dtype want, int64_t cols, int *fell_back) {
    qc_dtype t = want;
    int block = 1;
    if (fell_back) *fell_back = 0;
    while (t != QC_DT_F32 && t != QC_DT_F16 && t != QC_DT_BF16 &&
           (qc_ggml_type_shape(t, &block, NULL, NULL, NULL) || cols % block)) {
        switch (t) {
        case QC_DT_Q4_K:
            t = QC_DT_Q5_0;
            break;
        case QC_DT_Q5_K:
            t = QC_DT_Q5_1;
            break;
        case QC_DT_Q6_K:
            t = QC_DT_Q8_0;
            break;
        case QC_DT_Q3_K:
            t = QC_DT_Q4_0;
            break;
        case QC_DT_IQ4_XS:
            t = QC_DT_IQ4_NL;
            break;
        default:
            t = QC_DT_F16;
            break;
        }
        if (fell_back) *fell_back = 1;
    }
    return t;
}

/* The GPTQ grid of a ggml type: every block's fields, and the codes. */
typedef struct ggml_grid {
    qc_dtype t;
    type_shape s;
    int64_t cols, nb;   /* blocks per row */
    qc_ggml_block *blk; /* rows × nb */
    uint8_t *codes;     /* rows × cols */
} ggml_grid;

static void grid_fit(void *ud, int64_t r, int64_t g, const float *x, const float *d, int64_t n) {
    ggml_grid *G = ud;
    (void)n; /* always a whole block: no outliers, and the block divides cols */
    qc_ggml_fit(G->t, x, d, &G->blk[r * G->nb + g]);
}

static float grid_round(void *ud, int64_t r, int64_t c, float x) {
    ggml_grid *G = ud;
    const qc_ggml_block *b = &G->blk[r * G->nb + c / G->s.block];
    int k = (int)(c % G->s.block) / G->s.sub;
    uint8_t code = code_of(&G->s, x, b->scale[k], b->zero[k]);
    G->codes[r * G->cols + c] = code;
    return b->scale[k] * (level_of(&G->s, code) - b->zero[k]);
}

/* Checks t and the shape; *rb gets the bytes per row. */
static int check_matrix(qc_dtype t, int64_t rows, int64_t cols, type_shape *s, size_t *rb,
                        qc_err *err) {
    size_t total;
    if (shape_of(t, s))
        return qc_err_set(err,
                          "cannot quantize to %s (supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                          "IQ4_NL, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)",
                          qc_dtype_name(t));
    if (rows <= 0 || cols <= 0 || cols % s->block)
        return qc_err_set(err,
                          "%s: %lld x %lld weight: rows are not a whole number of %d-weight "
                          "blocks",
                          qc_dtype_name(t), (long long)rows, (long long)cols, s->block);
    if (qc_dtype_nbytes(t, cols, rb) || qc_mul_size(*rb, (size_t)rows, &total))
        return qc_err_set(err, "%s: %lld x %lld weight too large", qc_dtype_name(t),
                          (long long)rows, (long long)cols);
    return 0;
}

static void decode_rows(qc_dtype t, const uint8_t *out, size_t rb, int64_t rows, int64_t cols,
                        float *deq) {
    for (int64_t r = 0; deq && r < rows; r++)
        qc_dequantize(t, out + (size_t)r * rb, deq + r * cols, cols);
}

int qc_ggml_gptq(qc_dtype t, const float *w, double *H, const qc_gptq_opts *o, int64_t rows,
                 int64_t cols, uint8_t *out, float *deq, qc_err *err) {
    ggml_grid G = {.t = t, .cols = cols};
    size_t rb, bb = qc_dtype_block_bytes(t);
    if (check_matrix(t, rows, cols, &G.s, &rb, err)) return -1;
    G.nb = cols / G.s.block;
    G.blk = calloc((size_t)rows * (size_t)G.nb, sizeof *G.blk);
    G.codes = malloc((size_t)rows * (size_t)cols);
    if (!G.blk || !G.codes) {
        free(G.blk), free(G.codes);
        return qc_err_set(err, "%s: out of memory for a %lld x %lld weight", qc_dtype_name(t),
                          (long long)rows, (long long)cols);
    }
    qc_gptq_grid grid = {G.s.block, grid_fit, grid_round, &G};
    int rc = qc_quant_gptq_grid(w, H, o, &grid, rows, cols, NULL, err);
    for (int64_t r = 0; rc == 0 && r < rows; r++)
        for (int64_t g = 0; g < G.nb; g++)
            qc_ggml_encode(t, &G.blk[r * G.nb + g], G.codes + r * cols + g * G.s.block,
                           out + (size_t)r * rb + (size_t)g * bb);
    if (rc == 0) decode_rows(t, out, rb, rows, cols, deq);
    free(G.blk), free(G.codes);
    return rc;
}

int qc_ggml_rtn(qc_dtype t, const float *w, const double *diag, int64_t rows, int64_t cols,
                uint8_t *out, float *deq, qc_err *err) {
    type_shape s;
    size_t rb;
    if (check_matrix(t, rows, cols, &s, &rb, err)) return -1;
    float *imp = NULL;
    if (diag) {
        if (!(imp = qc_malloc((size_t)cols * sizeof *imp, err))) return -1;
        for (int64_t c = 0; c < cols; c++) {
            if (!isfinite(diag[c]) || diag[c] < 0) {
                free(imp);
                return qc_err_set(err,
                                  "Hessian diagonal at column %lld is %g (must be finite, >= 0)",
                                  (long long)c, diag[c]);
            }
            imp[c] = (float)diag[c];
        }
    }
    int rc = 0;
    for (int64_t r = 0; rc == 0 && r < rows; r++)
        if (qc_ggml_quantize_row(t, w + r * cols, imp, cols, out + (size_t)r * rb, err))
            rc = qc_err_prefix(err, "row %lld", (long long)r);
    free(imp);
    if (rc == 0) decode_rows(t, out, rb, rows, cols, deq);
    return rc;
}
