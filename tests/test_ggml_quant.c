/* Quantization into ggml block formats (compiler/ggml_quant.h):
 * - representability: the values the fit claims (scale·(level − zero) of the
 *   chosen codes) equal what the block decoder (compiler/dequant_blocks.c,
 *   itself bit-exact against the gguf package) reconstructs from the bytes,
 *   to 1e-6 of the block's largest weight (they differ only in f32 rounding
 *   order: d·sc·q − dmin·m versus d·sc·(q − zero));
 * - quality: relative RMS error on Gaussian rows with a few outliers below
 *   a per-type bound: for Q8_0/Q4_0/Q4_1 just above what gguf.quants.quantize
 *   (llama.cpp's reference rounding) reaches on such data (0.0092, 0.136,
 *   0.098; Q5_0/Q5_1 likewise), for the others about 1.3x what this search reaches, so a
 *   broken search or layout fails it;
 * - importance: weighting half the columns 100× lowers their error;
 * - GPTQ onto a type's grid (qc_ggml_gptq): with H = I nothing is spread, so
 *   it writes exactly the bytes of round-to-nearest (qc_ggml_rtn) with unit
 *   importance; with a correlated H (low rank plus diagonal, uneven channel
 *   scales) its output error tr(ΔW H ΔWᵀ) is below 0.5x RTN's (about 0.2x here; importance
 *   diag H) for every type, with blocks fitted at their first column or up
 *   front (act-order), and its deq is exactly the decoding of its bytes;
 * - bad input: unsupported type, ragged row, NaN.
 * With `--dump DIR` it also writes DIR/input.f32 and DIR/<TYPE>.bin for
 * tests/test_ggml_quant.py to decode with the gguf package. */
#include "../compiler/dequant.h"
#include "../compiler/ggml_quant.h"
#include "check.h"

#include <stdint.h>
#include <string.h>

enum { ROWS = 8, COLS = 1024 };

static uint64_t rng = 88172645463325252ull;
static double uni(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float gauss(void) {
    double u = uni() + 1e-12, v = uni();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static const struct {
    qc_dtype t;
    double bound; /* relative RMS error */
} types[] = {
    {QC_DT_Q8_0, 0.0095}, {QC_DT_Q4_0, 0.137},  {QC_DT_Q5_0, 0.074},  {QC_DT_Q5_1, 0.05},
    {QC_DT_Q4_1, 0.11},   {QC_DT_IQ4_NL, 0.12}, {QC_DT_Q4_K, 0.11},   {QC_DT_Q5_K, 0.055},
    {QC_DT_Q6_K, 0.03},   {QC_DT_Q3_K, 0.2},    {QC_DT_IQ4_XS, 0.12},
};

static double rel_rms(const float *a, const float *b, const float *w, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double wi = w ? w[i] : 1;
        e += wi * (a[i] - b[i]) * (a[i] - b[i]);
        s += wi * (double)a[i] * a[i];
    }
    return sqrt(e / s);
}

/* tr(ΔW H ΔWᵀ) for rows × n weights. */
static double out_err(const float *w, const float *q, const double *H, int rows, int n) {
    double e = 0;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) {
            double di = (double)w[r * n + i] - q[r * n + i], acc = 0;
            for (int j = 0; j < n; j++)
                acc += H[i * n + j] * ((double)w[r * n + j] - q[r * n + j]);
            e += di * acc;
        }
    return e;
}

static void gptq_checks(const float *x) {
    enum { K = 48 };
    static double H[COLS * COLS], Hc[COLS * COLS], B[COLS * K], diag[COLS], s[COLS];
    static float y[ROWS * COLS], yr[ROWS * COLS], yd[ROWS * COLS];
    static uint8_t bg[ROWS * COLS * 2], br[ROWS * COLS * 2];
    qc_err err;
    for (int i = 0; i < COLS; i++) {
        s[i] = i % 37 == 0 ? 8.0 : 0.5 + uni(); /* a few large input channels */
        for (int k = 0; k < K; k++)
            B[i * K + k] = gauss();
    }
    for (int i = 0; i < COLS; i++)
        for (int j = 0; j < COLS; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++)
                acc += B[i * K + k] * B[j * K + k];
            H[i * COLS + j] = s[i] * s[j] * (acc / K + (i == j ? 0.2 : 0));
        }
    for (int i = 0; i < COLS; i++)
        diag[i] = H[i * COLS + i];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        qc_dtype t = types[ti].t;
        size_t n = sizeof bg;
        /* H = I: GPTQ is round-to-nearest. */
        memset(Hc, 0, sizeof Hc);
        for (int i = 0; i < COLS; i++)
            Hc[i * COLS + i] = 1;
        static double ones[COLS];
        for (int i = 0; i < COLS; i++)
            ones[i] = 1;
        qc_gptq_opts o = {.damp = 0.01, .block = 128};
        memset(bg, 0, n), memset(br, 0, n);
        CHECK_MSG(qc_ggml_gptq(t, x, Hc, &o, ROWS, COLS, bg, y, &err) == 0, "%s", err.msg);
        CHECK_MSG(qc_ggml_rtn(t, x, ones, ROWS, COLS, br, yr, &err) == 0, "%s", err.msg);
        CHECK_MSG(memcmp(bg, br, n) == 0, "%s: GPTQ with H = I differs from RTN", qc_dtype_name(t));
        /* Correlated H: less output error than RTN; deq is the decoding. */
        CHECK_MSG(qc_ggml_rtn(t, x, diag, ROWS, COLS, br, yr, &err) == 0, "%s", err.msg);
        double er = out_err(x, yr, H, ROWS, COLS);
        for (int act = 0; act < 2; act++) {
            memcpy(Hc, H, sizeof H);
            o.act_order = act;
            CHECK_MSG(qc_ggml_gptq(t, x, Hc, &o, ROWS, COLS, bg, y, &err) == 0, "%s", err.msg);
            double eg = out_err(x, y, H, ROWS, COLS);
            printf("%-7s GPTQ%s output error %.3g, RTN %.3g (ratio %.3f)\n", qc_dtype_name(t),
                   act ? " act-order" : "", eg, er, eg / er);
            CHECK_MSG(eg < 0.5 * er, "%s: GPTQ%s output error %.4g not below 0.5x RTN's %.4g",
                      qc_dtype_name(t), act ? " act-order" : "", eg, er);
            int block;
            qc_ggml_type_shape(t, &block, NULL, NULL, NULL);
            size_t rb = (size_t)(COLS / block) * qc_dtype_block_bytes(t);
            for (int r = 0; r < ROWS; r++)
                qc_dequantize(t, bg + r * rb, yd + r * COLS, COLS);
            CHECK_MSG(memcmp(y, yd, sizeof y) == 0, "%s: GPTQ deq is not its decoding",
                      qc_dtype_name(t));
        }
    }
    memcpy(Hc, H, sizeof H);
    qc_gptq_opts o = {.damp = 0.01, .block = 128};
    CHECK(qc_ggml_gptq(QC_DT_Q4_K, x, Hc, &o, ROWS, 200, bg, y, &err) == -1 &&
          strstr(err.msg, "whole number of 256-weight blocks"));
    CHECK(qc_ggml_gptq(QC_DT_F16, x, Hc, &o, ROWS, 256, bg, y, &err) == -1 &&
          strstr(err.msg, "cannot quantize to F16"));
    int fb;
    CHECK(qc_ggml_row_type(QC_DT_Q4_K, 576, &fb) == QC_DT_Q5_0 && fb);
    CHECK(qc_ggml_row_type(QC_DT_Q3_K, 576, &fb) == QC_DT_Q4_0 && fb);
    CHECK(qc_ggml_row_type(QC_DT_IQ4_XS, 576, &fb) == QC_DT_IQ4_NL && fb);
    CHECK(qc_ggml_row_type(QC_DT_Q6_K, 1536, &fb) == QC_DT_Q6_K && !fb);
    CHECK(qc_ggml_row_type(QC_DT_Q4_0, 16, &fb) == QC_DT_F16 && fb);
}

int main(int argc, char **argv) {
    const char *dump = argc > 2 && !strcmp(argv[1], "--dump") ? argv[2] : NULL;
    static float x[ROWS * COLS], y[ROWS * COLS], imp[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) {
        x[i] = 0.02f * gauss();
        if (uni() < 0.004) x[i] *= 12; /* outliers, as in real weights */
        imp[i] = (i % COLS) < COLS / 2 ? 100.0f : 1.0f;
    }
    if (dump) {
        char p[512];
        snprintf(p, sizeof p, "%s/input.f32", dump);
        FILE *f = fopen(p, "wb");
        CHECK_FATAL(f && fwrite(x, sizeof x, 1, f) == 1);
        fclose(f);
    }
    static uint8_t buf[ROWS * COLS * 2];
    qc_err err;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        qc_dtype t = types[ti].t;
        int block, sub, bits, nl;
        CHECK_FATAL(qc_ggml_type_shape(t, &block, &sub, &bits, &nl) == 0);
        size_t rb = (size_t)(COLS / block) * qc_dtype_block_bytes(t);
        for (int r = 0; r < ROWS; r++)
            CHECK_MSG(qc_ggml_quantize_row(t, x + r * COLS, NULL, COLS, buf + r * rb, &err) == 0,
                      "%s", err.msg);
        for (int r = 0; r < ROWS; r++)
            qc_dequantize(t, buf + r * rb, y + r * COLS, COLS);
        double e = rel_rms(x, y, NULL, ROWS * COLS);
        printf("%-7s relative RMS error %.4f (bound %.3f)\n", qc_dtype_name(t), e, types[ti].bound);
        CHECK_MSG(e < types[ti].bound, "%s: error %.4f", qc_dtype_name(t), e);
        if (dump) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s.bin", dump, qc_dtype_name(t));
            FILE *f = fopen(p, "wb");
            CHECK_FATAL(f && fwrite(buf, rb * ROWS, 1, f) == 1);
            fclose(f);
        }

        /* The fit's own values are the decoder's. */
        double worst = 0;
        for (int r = 0; r < ROWS; r++)
            for (int b0 = 0; b0 < COLS; b0 += block) {
                const float *xb = x + r * COLS + b0;
                qc_ggml_block b;
                uint8_t codes[256], bytes[256];
                float dec[256];
                qc_ggml_fit(t, xb, NULL, &b);
                for (int e2 = 0; e2 < block; e2++)
                    codes[e2] = qc_ggml_code(t, &b, e2 / sub, xb[e2]);
                qc_ggml_encode(t, &b, codes, bytes);
                qc_dequantize(t, bytes, dec, block);
                double amax = 0;
                for (int e2 = 0; e2 < block; e2++)
                    amax = fmax(amax, fabs(xb[e2]));
                for (int e2 = 0; e2 < block; e2++) {
                    double v = qc_ggml_value(t, &b, e2 / sub, codes[e2]);
                    double d = fabs(v - dec[e2]) / amax;
                    if (d > worst) worst = d;
                }
            }
        CHECK_MSG(worst < 1e-6, "%s: fit values differ from decoded by %.3g of the block max",
                  qc_dtype_name(t), worst);

        /* Importance moves error away from the weighted half. */
        for (int r = 0; r < ROWS; r++)
            qc_ggml_quantize_row(t, x + r * COLS, imp + r * COLS, COLS, buf + r * rb, &err);
        static float yw[ROWS * COLS];
        for (int r = 0; r < ROWS; r++)
            qc_dequantize(t, buf + r * rb, yw + r * COLS, COLS);
        double ew = rel_rms(x, yw, imp, ROWS * COLS), eu = rel_rms(x, y, imp, ROWS * COLS);
        CHECK_MSG(ew <= eu * 1.0001,
                  "%s: importance-weighted error %.5f above unweighted fit's %.5f",
                  qc_dtype_name(t), ew, eu);
    }

    gptq_checks(x);

    /* Bad input. */
    CHECK(qc_ggml_quantize_row(QC_DT_F16, x, NULL, 256, buf, &err) == -1 &&
          strstr(err.msg, "cannot quantize to F16"));
    CHECK(qc_ggml_quantize_row(QC_DT_Q4_K, x, NULL, 200, buf, &err) == -1 &&
          strstr(err.msg, "multiple of the block (256)"));
    x[77] = NAN;
    CHECK(qc_ggml_quantize_row(QC_DT_Q4_0, x, NULL, 256, buf, &err) == -1 &&
          strstr(err.msg, "column 77"));
    TEST_END();
}
