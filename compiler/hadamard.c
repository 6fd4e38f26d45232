#include "hadamard.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

static int is_prime(int q) {
    if (q < 2) return 0;
    for (int d = 2; d * d <= q; d++)
        if (q % d == 0) return 0;
    return 1;
}

/* Legendre symbol χ(a) mod prime q: 0, 1 (a quadratic residue) or -1. */
static int legendre(int a, int q) {
    a %= q;
    if (a < 0) a += q;
    if (a == 0) return 0;
    int64_t r = 1, b = a, e = (q - 1) / 2;
    while (e) { /* a^((q-1)/2) mod q (Euler's criterion) */
        if (e & 1) r = r * b % q;
        b = b * b % q;
        e >>= 1;
    }
    return r == 1 ? 1 : -1;
}

/* Which Paley construction gives order p: 1 (type I), 2 (type II), 0 none. */
static int paley_type(int p) {
    if (p < 4 || p % 4) return 0;
    if (is_prime(p - 1) && (p - 1) % 4 == 3) return 1;
    if (p % 2 == 0 && is_prime(p / 2 - 1) && (p / 2 - 1) % 4 == 1) return 2;
    return 0;
}

int qc_hadamard_base_order(int n) {
    if (n <= 0) return 0;
    int odd = n;
    while (odd % 2 == 0)
        odd /= 2;
    if (odd == 1) return 1;
    for (int p = odd; p <= n && p <= QC_HADAMARD_MAX_BASE; p *= 2)
        if (paley_type(p)) return p;
    return 0;
}

/* Paley I (q ≡ 3 mod 4): H = I + S, S = [[0, 1ᵀ], [-1, Q]] with the
 * Jacobsthal matrix Q_ij = χ(j − i). */
static void paley1(int q, float *h) {
    int p = q + 1;
    for (int i = 0; i < p; i++)
        for (int j = 0; j < p; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : (j == 0 ? -1 : legendre(j - i, q));
            h[i * p + j] = (float)(s + (i == j));
        }
}

/* Paley II (q ≡ 1 mod 4): C = [[0, 1ᵀ], [1, Q]] (symmetric), each 0 entry
 * replaced by [[1, -1], [-1, -1]] and each ±1 by ±[[1, 1], [1, -1]]. */
static void paley2(int q, float *h) {
    int c = q + 1, p = 2 * c;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : (j == 0 ? 1 : legendre(j - i, q));
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    float v = s == 0 ? (a == 0 && b == 0 ? 1.f : -1.f)
                                     : (float)s * (a == 1 && b == 1 ? -1.f : 1.f);
                    h[(2 * i + a) * p + 2 * j + b] = v;
                }
        }
}

qc_hadamard *qc_hadamard_new(int n, qc_err *err) {
    int p = qc_hadamard_base_order(n);
    if (!p) {
        qc_err_set(err,
                   "no Hadamard matrix of order %d: supported orders are p·2^k with p = 1 or a "
                   "Paley order (q+1 for a prime q ≡ 3 mod 4, 2(q+1) for a prime q ≡ 1 mod 4) up "
                   "to %d",
                   n, QC_HADAMARD_MAX_BASE);
        return NULL;
    }
    qc_hadamard *h = qc_calloc(1, sizeof *h, err);
    if (!h) return NULL;
    h->n = n;
    h->p = p;
    h->pow2 = n / p;
    h->base = qc_malloc((size_t)p * (size_t)p * sizeof(float), err);
    h->baseT = h->base ? qc_malloc((size_t)p * (size_t)p * sizeof(float), err) : NULL;
    h->tmp = h->baseT ? qc_malloc((size_t)n * sizeof(float), err) : NULL;
    if (!h->tmp) {
        qc_hadamard_free(h);
        return NULL;
    }
    if (p == 1)
        h->base[0] = 1;
    else if (paley_type(p) == 1)
        paley1(p - 1, h->base);
    else
        paley2(p / 2 - 1, h->base);
    for (int i = 0; i < p; i++)
        for (int j = 0; j < p; j++)
            h->baseT[j * p + i] = h->base[i * p + j];
    return h;
}

void qc_hadamard_free(qc_hadamard *h) {
    if (!h) return;
    free(h->base);
    free(h->baseT);
    free(h->tmp);
    free(h);
}

/* In-place unnormalized fast Walsh-Hadamard transform of length m (a power
 * of two): the Sylvester matrix, which is symmetric. */
static void fwht(float *x, int m) {
    for (int len = 1; len < m; len <<= 1)
        for (int i = 0; i < m; i += 2 * len)
            for (int j = i; j < i + len; j++) {
                float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
}

/* (H_p ⊗ S_m) x: viewing x as p × m (row-major), Y = H_p · (X S_m). */
void qc_hadamard_apply(qc_hadamard *h, float *x, int64_t count, int transpose, float scale) {
    int p = h->p, m = h->pow2, n = h->n;
    const float *base = transpose ? h->baseT : h->base;
    for (int64_t r = 0; r < count; r++) {
        float *v = x + r * (int64_t)n;
        for (int a = 0; a < p; a++)
            fwht(v + (int64_t)a * m, m);
        if (p > 1) {
            qcrt_sgemm(CblasNoTrans, CblasNoTrans, p, m, p, scale, base, p, v, m, 0.0f, h->tmp, m);
            memcpy(v, h->tmp, (size_t)n * sizeof(float));
        } else if (scale != 1.0f) {
            for (int i = 0; i < n; i++)
                v[i] *= scale;
        }
    }
}

int qc_hadamard_dense(qc_hadamard *h, float *out, qc_err *err) {
    int n = h->n;
    float *col = qc_malloc((size_t)n * sizeof(float), err);
    if (!col) return -1;
    for (int j = 0; j < n; j++) { /* column j of H is H e_j */
        memset(col, 0, (size_t)n * sizeof(float));
        col[j] = 1;
        qc_hadamard_apply(h, col, 1, 0, 1.0f);
        for (int i = 0; i < n; i++)
            out[(int64_t)i * n + j] = col[i];
    }
    free(col);
    return 0;
}
