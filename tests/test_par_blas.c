/* runtime/par_blas: every product equals a plain double-precision triple
 * loop (the independent reference) to float/double rounding, for every
 * transposition, for shapes on both sides of the part boundaries (128
 * columns, 64 rows) and with leading dimensions wider than the matrices;
 * and the result is bit for bit the same on 1, 3 and 8 threads, which is
 * what the wrappers exist for. */
#include "check.h"
#include "runtime/par_blas.h"

#include <string.h>

static unsigned long long rng = 88172645463325252ull;

static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}

/* op(X)[i][j] of a row-major X with leading dimension ld. */
static double at(const double *x, int ld, CBLAS_TRANSPOSE t, int i, int j) {
    return t == CblasNoTrans ? x[(size_t)i * ld + j] : x[(size_t)j * ld + i];
}

/* Relative tolerance: sums of k products of values in [-1, 1]; float
 * accumulation errs by about k·2^-24 of the sum of magnitudes. */
static void one(int dbl, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k) {
    int lda = (ta == CblasNoTrans ? k : m) + 3, ldb = (tb == CblasNoTrans ? n : k) + 5, ldc = n + 7;
    size_t na = (size_t)lda * (ta == CblasNoTrans ? m : k),
           nb = (size_t)ldb * (tb == CblasNoTrans ? k : n);
    size_t nc = (size_t)ldc * m;
    double *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c0 = malloc(nc * sizeof *c0);
    double *ref = malloc(nc * sizeof *ref);
    void *got[3];
    CHECK_FATAL(a && b && c0 && ref);
    for (size_t i = 0; i < na; i++)
        a[i] = urand();
    for (size_t i = 0; i < nb; i++)
        b[i] = urand();
    for (size_t i = 0; i < nc; i++)
        c0[i] = urand();
    double alpha = 0.75, beta = -0.5;
    float *af = malloc(na * sizeof *af), *bf = malloc(nb * sizeof *bf);
    CHECK_FATAL(af && bf);
    for (size_t i = 0; i < na; i++)
        af[i] = (float)a[i], a[i] = af[i];
    for (size_t i = 0; i < nb; i++)
        bf[i] = (float)b[i], b[i] = bf[i];
    for (size_t i = 0; i < nc; i++)
        c0[i] = (float)c0[i];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            if (j >= n) {
                ref[(size_t)i * ldc + j] = c0[(size_t)i * ldc + j]; /* untouched */
                continue;
            }
            double s = 0;
            for (int p = 0; p < k; p++)
                s += at(a, lda, ta, i, p) * at(b, ldb, tb, p, j);
            ref[(size_t)i * ldc + j] = alpha * s + beta * c0[(size_t)i * ldc + j];
        }
    const int threads[3] = {1, 3, 8};
    qc_err err = {{0}};
    for (int t = 0; t < 3; t++) {
        CHECK_FATAL(qcrt_blas_set_threads(threads[t], &err) == 0);
        if (dbl) {
            double *c = malloc(nc * sizeof *c);
            CHECK_FATAL(c);
            memcpy(c, c0, nc * sizeof *c);
            qcrt_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            got[t] = c;
        } else {
            float *c = malloc(nc * sizeof *c);
            CHECK_FATAL(c);
            for (size_t i = 0; i < nc; i++)
                c[i] = (float)c0[i];
            qcrt_sgemm(ta, tb, m, n, k, (float)alpha, af, lda, bf, ldb, (float)beta, c, ldc);
            got[t] = c;
        }
    }
    double worst = 0, tol = (dbl ? 1e-13 : 2e-6) * (k + 1);
    for (size_t i = 0; i < nc; i++) {
        double v = dbl ? ((double *)got[0])[i] : ((float *)got[0])[i];
        double e = fabs(v - ref[i]);
        if (e > worst) worst = e;
    }
    size_t es = dbl ? sizeof(double) : sizeof(float);
    CHECK_MSG(worst <= tol, "%s ta %d tb %d %dx%dx%d: max error %g > %g", dbl ? "dgemm" : "sgemm",
              ta == CblasTrans, tb == CblasTrans, m, n, k, worst, tol);
    CHECK_MSG(!memcmp(got[0], got[1], nc * es) && !memcmp(got[0], got[2], nc * es),
              "%s %dx%dx%d: results differ between 1, 3 and 8 threads", dbl ? "dgemm" : "sgemm", m,
              n, k);
    for (int t = 0; t < 3; t++)
        free(got[t]);
    free(a), free(b), free(c0), free(ref), free(af), free(bf);
}

static void syrk(int rows, int cols) {
    float *x = malloc((size_t)rows * cols * sizeof *x);
    float *c[2] = {calloc((size_t)cols * cols, sizeof(float)),
                   calloc((size_t)cols * cols, sizeof(float))};
    CHECK_FATAL(x && c[0] && c[1]);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        x[i] = (float)urand();
    qc_err err = {{0}};
    const int threads[2] = {1, 8};
    for (int t = 0; t < 2; t++) {
        CHECK_FATAL(qcrt_blas_set_threads(threads[t], &err) == 0);
        qcrt_ssyrk_upper(rows, cols, x, c[t]);
    }
    double worst = 0;
    for (int i = 0; i < cols; i++)
        for (int j = i; j < cols; j++) {
            double s = 0;
            for (int p = 0; p < rows; p++)
                s += (double)x[(size_t)p * cols + i] * x[(size_t)p * cols + j];
            double e = fabs(c[0][(size_t)i * cols + j] - s);
            if (e > worst) worst = e;
        }
    CHECK_MSG(worst <= 2e-6 * (rows + 1), "syrk %dx%d: max error %g", rows, cols, worst);
    CHECK_MSG(!memcmp(c[0], c[1], (size_t)cols * cols * sizeof(float)),
              "syrk %dx%d: results differ between 1 and 8 threads", rows, cols);
    free(x), free(c[0]), free(c[1]);
}

int main(void) {
    const int ms[] = {1, 63, 64, 129, 200}, ns[] = {1, 127, 255, 256, 300}, ks[] = {1, 37};
    const CBLAS_TRANSPOSE tr[2] = {CblasNoTrans, CblasTrans};
    int cases = 0;
    for (int dbl = 0; dbl < 2; dbl++)
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
                for (int p = 0; p < 2; p++)
                    for (int x = 0; x < 4; x++, cases++)
                        one(dbl, tr[x & 1], tr[x >> 1], ms[i], ns[j], ks[p]);
    syrk(50, 1);
    syrk(17, 300);
    syrk(64, 129);
    printf("par_blas: %d products and 3 Gram matrices vs a double triple loop, identical on 1, 3 "
           "and 8 threads\n",
           cases);
    TEST_END();
}
