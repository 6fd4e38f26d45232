/* compiler/hadamard: every supported order up to 1024 (and the model sizes
 * 576 and 1536) gives H Hᵀ = n·I exactly, the fast transform equals the
 * dense matrix built independently (Sylvester by its recursive definition,
 * Paley bases by the Legendre symbol computed by brute-force squaring here),
 * transpose and scale work, and unsupported sizes fail with a message.
 *
 * Tolerance: entries are ±1 and n ≤ 4864, so H Hᵀ's entries are integers
 * below 2^24 and exact in f32: we require exact equality. The fast
 * transform of a random vector vs the dense product: both sum at most n
 * terms of size ≤ 1 in f32: |diff| ≤ 1e-4·sqrt(n) (measured ~1e-6). */
#include "compiler/hadamard.h"
#include "tests/check.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Quadratic character by brute force: 0, 1 when a is a nonzero square mod
 * q, else -1 (the table of squares is rebuilt when q changes). */
static int residue(int a, int q) {
    static int tq = 0;
    static signed char sq[QC_HADAMARD_MAX_BASE];
    if (q != tq) {
        memset(sq, -1, sizeof sq);
        for (int x = 1; x < q; x++)
            sq[x * x % q] = 1;
        tq = q;
    }
    a = ((a % q) + q) % q;
    return a == 0 ? 0 : sq[a];
}

static int prime(int q) {
    for (int d = 2; d * d <= q; d++)
        if (q % d == 0) return 0;
    return q > 1;
}

/* Sylvester H_{2^k}[i][j] = (-1)^popcount(i & j). */
static float sylvester(int i, int j) {
    return __builtin_popcount((unsigned)(i & j)) % 2 ? -1.f : 1.f;
}

/* Reference dense H_n = B ⊗ S (B the Paley or trivial base). */
static void reference(int n, int p, float *out) {
    float *b = calloc((size_t)p * p, sizeof *b);
    if (p == 1) {
        b[0] = 1;
    } else if ((p - 1) % 4 == 3 && prime(p - 1)) { /* Paley I */
        int q = p - 1;
        for (int i = 0; i < p; i++)
            for (int j = 0; j < p; j++)
                b[i * p + j] = (float)((i == j) + (i == 0   ? (j == 0 ? 0 : 1)
                                                   : j == 0 ? -1
                                                            : residue(j - i, q)));
    } else { /* Paley II */
        int q = p / 2 - 1, c = q + 1;
        for (int i = 0; i < c; i++)
            for (int j = 0; j < c; j++) {
                int s = i == 0 ? (j == 0 ? 0 : 1) : (j == 0 ? 1 : residue(j - i, q));
                float blk[2][2] = {{1, 1}, {1, -1}};
                if (s == 0) blk[0][1] = blk[1][0] = blk[1][1] = -1;
                for (int a = 0; a < 2; a++)
                    for (int d = 0; d < 2; d++)
                        b[(2 * i + a) * p + 2 * j + d] = s == 0 ? blk[a][d] : (float)s * blk[a][d];
            }
    }
    int m = n / p;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            out[(size_t)i * n + j] = b[(i / m) * p + j / m] * sylvester(i % m, j % m);
    free(b);
}

static void check_order(int n) {
    qc_err err = {{0}};
    qc_hadamard *h = qc_hadamard_new(n, &err);
    CHECK_MSG(h != NULL, "n %d: %s", n, err.msg);
    if (!h) return;
    float *d = calloc((size_t)n * n, sizeof *d), *r = calloc((size_t)n * n, sizeof *r);
    float *g = calloc((size_t)n * n, sizeof *g);
    CHECK_FATAL(d && r && g);
    if (h->p == n) /* the base itself */
        memcpy(d, h->base, (size_t)n * n * sizeof *d);
    else
        CHECK(qc_hadamard_dense(h, d, &err) == 0);
    reference(n, h->p, r);
    CHECK_MSG(memcmp(d, r, (size_t)n * n * sizeof *d) == 0, "n %d (base %d) differs from reference",
              n, h->p);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, d, n, d, n, 0.f, g, n);
    int exact = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            exact &= g[(size_t)i * n + j] == (i == j ? (float)n : 0.f);
    CHECK_MSG(exact, "n %d: H Hᵀ != n I", n);
    /* Fast transform (and transpose, scaled) vs dense products, 3 rows. */
    float *x = malloc(3 * (size_t)n * sizeof *x), *y = malloc(3 * (size_t)n * sizeof *y);
    CHECK_FATAL(x && y);
    for (int i = 0; i < 3 * n; i++)
        x[i] = (float)((i * 7919) % 201) / 100.f - 1.f;
    for (int tr = 0; tr < 2; tr++) {
        float s = 1.f / sqrtf((float)n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tr ? CblasNoTrans : CblasTrans, 3, n, n, s, x, n,
                    d, n, 0.f, y, n); /* y = s·x·Dᵀ (rows: s·D x) or s·x·D (rows: s·Dᵀ x) */
        float *z = malloc(3 * (size_t)n * sizeof *z);
        CHECK_FATAL(z);
        memcpy(z, x, 3 * (size_t)n * sizeof *z);
        qc_hadamard_apply(h, z, 3, tr, s);
        double md = 0;
        for (int i = 0; i < 3 * n; i++)
            md = fmax(md, fabs((double)z[i] - y[i]));
        CHECK_MSG(md < 1e-4 * sqrt(n), "n %d transpose %d: fast vs dense %g", n, tr, md);
        free(z);
    }
    free(x), free(y), free(d), free(r), free(g);
    qc_hadamard_free(h);
}

int main(void) {
    /* Every supported order up to 1024 has an exactly orthogonal base that
     * matches the reference (checked on the smallest n using each base: the
     * base alone, n = p); the full transform on every n ≤ 256 and on the
     * model widths below. */
    int supported = 0, odd_bases = 0;
    for (int n = 1; n <= 1024; n++) {
        int p = qc_hadamard_base_order(n);
        if (!p) continue;
        supported++;
        odd_bases += p > 1;
        if (n <= 256 || n == p) check_order(n);
    }
    /* Model widths: SmolLM2 576 = 36·16 and 1536 = 12·128, Qwen2.5-0.5B 4864 = 76·64. */
    CHECK(qc_hadamard_base_order(576) == 36);
    CHECK(qc_hadamard_base_order(1536) == 12);
    CHECK(qc_hadamard_base_order(896) == 28);
    CHECK(qc_hadamard_base_order(4864) == 76);
    CHECK(qc_hadamard_base_order(8960) == 140);
    CHECK(qc_hadamard_base_order(1024) == 1);
    check_order(576);
    check_order(1536);
    fprintf(stderr, "%d supported orders ≤ 1024 (%d with a Paley base)\n", supported, odd_bases);
    CHECK(odd_bases > 30);
    /* Unsupported: odd orders, 2·odd, and 11008 = 2^8·43 (needs a prime-power Paley). */
    const int bad[] = {0, -4, 3, 6, 9, 18, 11008, 43 * 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qc_err err = {{0}};
        CHECK(qc_hadamard_base_order(bad[i]) == 0);
        CHECK(qc_hadamard_new(bad[i], &err) == NULL);
        CHECK(strstr(err.msg, "no Hadamard matrix of order") != NULL);
    }
    TEST_END();
}
