#include "par_blas.h"

#include "pool.h"

#include <pthread.h>

/* Parts: a product is cut along C's columns into blocks of PART_N when it
 * has at least two of them, else along its rows into blocks of PART_M, else
 * not at all; the choice depends on the shape alone. */
enum { PART_N = 128, PART_M = 64, PART_SYRK = 128 };

static qcrt_pool *g_pool;
static int g_threads = 1;
/* One product at a time on the pool (it is not reentrant); a product that
 * finds it busy runs its parts on its own thread, with the same results. */
static pthread_mutex_t g_busy = PTHREAD_MUTEX_INITIALIZER;

int qcrt_blas_set_threads(int n, qc_err *err) {
    if (n < 1) n = 1;
    openblas_set_num_threads(1);
    if (n == g_threads && (g_pool || n == 1)) return 0;
    qcrt_pool *p = n > 1 ? qcrt_pool_new(n, err) : NULL;
    if (n > 1 && !p) return -1;
    qcrt_pool_free(g_pool);
    g_pool = p;
    g_threads = n;
    return 0;
}

int qcrt_blas_threads(void) {
    return g_threads;
}

typedef struct product {
    int dbl; /* double (dgemm) or float (sgemm) */
    CBLAS_TRANSPOSE ta, tb;
    int m, n, k, lda, ldb, ldc;
    double alpha, beta;
    const void *a, *b;
    void *c;
    int parts;   /* 1: the whole product in one call */
    int split_n; /* parts along C's columns (else along its rows) */
    int syrk;    /* qcrt_ssyrk_upper: part p is row block p of C's upper triangle */
} product;

static void run_part(void *arg, int part, int parts, int slot) {
    (void)parts, (void)slot;
    const product *g = arg;
    int m = g->m, n = g->n;
    size_t ao = 0, bo = 0, co = 0, es = g->dbl ? sizeof(double) : sizeof(float);
    if (g->syrk) { /* rows i0..i1 of C, columns i0..cols: X[:, i0:i1]ᵀ · X[:, i0:] */
        int i0 = part * PART_SYRK;
        m = g->n - i0 < PART_SYRK ? g->n - i0 : PART_SYRK;
        n = g->n - i0;
        ao = bo = (size_t)i0;
        co = (size_t)i0 * (size_t)g->ldc + (size_t)i0;
    } else if (g->parts == 1) {
        /* the whole product */
    } else if (g->split_n) {
        int j0 = part * PART_N;
        n = g->n - j0 < PART_N ? g->n - j0 : PART_N;
        bo = g->tb == CblasNoTrans ? (size_t)j0 : (size_t)j0 * (size_t)g->ldb;
        co = (size_t)j0;
    } else {
        int i0 = part * PART_M;
        m = g->m - i0 < PART_M ? g->m - i0 : PART_M;
        ao = g->ta == CblasNoTrans ? (size_t)i0 * (size_t)g->lda : (size_t)i0;
        co = (size_t)i0 * (size_t)g->ldc;
    }
    const char *a = (const char *)g->a + ao * es, *b = (const char *)g->b + bo * es;
    char *c = (char *)g->c + co * es;
    if (g->dbl)
        cblas_dgemm(CblasRowMajor, g->ta, g->tb, m, n, g->k, g->alpha, (const double *)a, g->lda,
                    (const double *)b, g->ldb, g->beta, (double *)c, g->ldc);
    else
        cblas_sgemm(CblasRowMajor, g->ta, g->tb, m, n, g->k, (float)g->alpha, (const float *)a,
                    g->lda, (const float *)b, g->ldb, (float)g->beta, (float *)c, g->ldc);
}

static void run(product *g, int parts) {
    if (parts > 1 && g_pool && pthread_mutex_trylock(&g_busy) == 0) {
        qcrt_pool_run(g_pool, parts, run_part, g);
        pthread_mutex_unlock(&g_busy);
        return;
    }
    for (int p = 0; p < parts; p++)
        run_part(g, p, parts, 0);
}

static void gemm(int dbl, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                 const void *a, int lda, const void *b, int ldb, double beta, void *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    product g = {.dbl = dbl,
                 .ta = ta,
                 .tb = tb,
                 .m = m,
                 .n = n,
                 .k = k,
                 .lda = lda,
                 .ldb = ldb,
                 .ldc = ldc,
                 .alpha = alpha,
                 .beta = beta,
                 .a = a,
                 .b = b,
                 .c = c,
                 .parts = 1};
    if (n >= 2 * PART_N) {
        g.split_n = 1;
        g.parts = (n + PART_N - 1) / PART_N;
    } else if (m >= 2 * PART_M) {
        g.parts = (m + PART_M - 1) / PART_M;
    }
    run(&g, g.parts);
}

void qcrt_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    gemm(0, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void qcrt_dgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                const double *a, int lda, const double *b, int ldb, double beta, double *c,
                int ldc) {
    gemm(1, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void qcrt_ssyrk_upper(int rows, int cols, const float *x, float *c) {
    if (cols <= 0) return;
    product g = {.syrk = 1,
                 .ta = CblasTrans,
                 .tb = CblasNoTrans,
                 .n = cols,
                 .k = rows,
                 .lda = cols,
                 .ldb = cols,
                 .ldc = cols,
                 .alpha = 1,
                 .beta = 0,
                 .a = x,
                 .b = x,
                 .c = c};
    run(&g, (cols + PART_SYRK - 1) / PART_SYRK);
}
