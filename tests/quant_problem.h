/* Random test problems for the quantizer tests (test_quant, test_outliers,
 * test_lowrank): a seeded xorshift generator, Gaussian fills, correlated
 * LLM-like inputs and their Gram matrix, raw file I/O for the --run modes
 * that numpy tests drive. Header-only; each test is one
 * translation unit. */
#ifndef QC_TESTS_QUANT_PROBLEM_H
#define QC_TESTS_QUANT_PROBLEM_H

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1p-53;
}
static inline double nrand(void) {
    double u = urand() + 1e-300, v = urand();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static inline void fill_normal(float *x, int64_t n, double sd) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(sd * nrand());
}

/* X (n × d): correlated inputs, Z·A with a random mixing A, plus a few heavy
 * channels (×8), like LLM activations with outlier features. */
static inline float *correlated_x(int64_t n, int64_t d) {
    float *z = malloc(sizeof(float) * n * d), *a = malloc(sizeof(float) * d * d);
    float *x = malloc(sizeof(float) * n * d);
    fill_normal(z, n * d, 1);
    for (int64_t i = 0; i < d * d; i++)
        a[i] = (float)(0.3 * nrand()) + ((i / d == i % d) ? 1.0f : 0.0f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)d, 1, z, (int)d, a,
                (int)d, 0, x, (int)d);
    for (int64_t j = 0; j < d; j += 13)
        for (int64_t i = 0; i < n; i++)
            x[i * d + j] *= 8;
    free(z);
    free(a);
    return x;
}

static inline double *gram(const float *x, int64_t n, int64_t d) {
    double *h = calloc((size_t)(d * d), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++)
                h[a * d + b] += (double)x[i * d + a] * x[i * d + b];
    return h;
}

/* ‖X Wᵀ − X Ŵᵀ‖_F² / ‖X Wᵀ‖_F² */
static inline double out_err(const float *x, int64_t n, int64_t d, const float *w, const float *wq,
                             int64_t rows) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            double y = 0, yq = 0;
            for (int64_t c = 0; c < d; c++) {
                y += (double)x[i * d + c] * w[r * d + c];
                yq += (double)x[i * d + c] * wq[r * d + c];
            }
            num += (y - yq) * (y - yq);
            den += y * y;
        }
    return num / den;
}

static inline int read_file(const char *path, void *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

static inline int write_file(const char *path, const char *suffix, const void *buf, size_t n) {
    char name[4096];
    snprintf(name, sizeof name, "%s%s", path, suffix);
    FILE *f = fopen(name, "wb");
    if (!f) return -1;
    size_t put = fwrite(buf, 1, n, f);
    return fclose(f) == 0 && put == n ? 0 : -1;
}

#endif
