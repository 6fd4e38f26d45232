/* Linear layer on generated CPU kernels (see qcrt_linear_cpu_new in
 * linear.h). */
#include "../codegen/pack.h"
#include "linear.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#define M_CHUNK 64 /* rows of x per gemm call: bounds the scratch */

typedef struct cpu_linear {
    qc_kernel_spec spec;
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    qc_gemv_prep_fn prep; /* NULL: gemv per part */
    qc_gemv_rows_fn rows;
    const uint8_t *w;
    float *bias;
    qcrt_pool *pool;
    int threads;
    size_t ws_floats;
    float *ws;   /* threads × ws_floats */
    float *xws;  /* the split gemv's prepared x (ws_floats) */
} cpu_linear;

typedef struct job {
    const cpu_linear *c;
    const float *x;
    float *y;
    int64_t m; /* 0: gemv */
} job;

/* Rows per part: parts are claimed one at a time by whichever thread is
 * free (runtime/pool.h), so several per thread balance uneven progress;
 * a multiple of QC_GEMM_ROW_TILE so a row always takes the same path. */
#define PART_ROWS 64
/* gemv parts are shorter: a decode linear is only a few parts long (k_proj
 * of the demo: 192 rows), so 64-row parts leave a thread idle for a third
 * of it; 32 rows still keep the kernels' 64-row blocks' benefit within a
 * part. Env QC_GEMV_PART_ROWS overrides (benchmarking). */
static int64_t gemv_part_rows(void) {
    static int64_t v;
    if (!v) {
        const char *e = getenv("QC_GEMV_PART_ROWS");
        long n = e ? atol(e) : 0;
        v = n >= 4 && n <= 4096 ? n : 32;
    }
    return v;
}

static void run_part(void *arg, int p, int n, int slot) {
    (void)n;
    const job *j = arg;
    const cpu_linear *c = j->c;
    int64_t pr = j->m == 0 ? gemv_part_rows() : PART_ROWS;
    int64_t out = c->spec.out, r0 = (int64_t)p * pr;
    int64_t r1 = r0 + pr < out ? r0 + pr : out;
    float *ws = c->ws + (size_t)slot * c->ws_floats;
    if (j->m == 0 && c->rows)
        c->rows(c->w, j->x, j->y, r0, r1, c->xws, ws);
    else if (j->m == 0)
        c->gemv(c->w, j->x, j->y, r0, r1, ws);
    else
        c->gemm(c->w, j->x, j->m, j->y, r0, r1, ws);
    if (c->bias)
        for (int64_t i = 0; i < (j->m ? j->m : 1); i++)
            for (int64_t o = r0; o < r1; o++)
                j->y[i * out + o] += c->bias[o];
}

static void cpu_forward(const qcrt_linear *l, const float *x, int64_t n, float *y) {
    const cpu_linear *c = l->impl;
    for (int64_t i = 0; i < n; i += M_CHUNK) {
        int64_t m = n - i < M_CHUNK ? n - i : M_CHUNK;
        int64_t pr = n == 1 ? gemv_part_rows() : PART_ROWS;
        int parts = (int)((c->spec.out + pr - 1) / pr);
        job j = {c, x + i * c->spec.in, y + i * c->spec.out, n == 1 ? 0 : m};
        if (n == 1 && c->prep) c->prep(c->w, j.x, c->xws);
        qcrt_pool_run(c->pool, parts, run_part, &j);
    }
}

static void cpu_free(qcrt_linear *l) {
    cpu_linear *c = l->impl;
    free(c->bias);
    free(c->ws);
    free(c->xws);
    free(c);
    free(l);
}

qcrt_linear *qcrt_linear_cpu_new(const qc_kernel_spec *spec, qc_gemv_fn gemv, qc_gemm_fn gemm,
                                 qc_gemv_prep_fn prep, qc_gemv_rows_fn rows,
                                 const uint8_t *packed, size_t packed_size, const float *bias,
                                 qcrt_pool *pool, qc_err *err) {
    if (!gemv || !gemm) {
        qc_err_set(err, "CPU linear: missing kernel");
        return NULL;
    }
    qc_kernel_spec layout = *spec; /* an online transform does not change the layout */
    layout.transform = QC_KTRANSFORM_NONE, layout.transform_size = 0;
    if (qc_pack_check(&layout, packed, packed_size, err)) return NULL;
    qcrt_linear *l = qc_calloc(1, sizeof *l, err);
    cpu_linear *c = l ? qc_calloc(1, sizeof *c, err) : NULL;
    if (!c) {
        free(l);
        return NULL;
    }
    c->spec = *spec;
    c->gemv = gemv;
    c->gemm = gemm;
    if (prep && rows) c->prep = prep, c->rows = rows;
    c->w = packed;
    c->pool = pool;
    c->threads = qcrt_pool_threads(pool);
    /* Round each thread's scratch to 64 bytes (no false sharing, aligned). */
    c->ws_floats = (qc_kernel_ws_floats(spec, M_CHUNK) + 15) / 16 * 16;
    size_t n = 0;
    if (qc_mul_size(c->ws_floats, (size_t)c->threads * sizeof(float), &n) ||
        !(c->ws = aligned_alloc(64, n)) ||
        (c->prep && !(c->xws = aligned_alloc(64, c->ws_floats * sizeof(float))))) {
        qc_err_set(err, "CPU linear: out of memory for %zu bytes of scratch", n);
        goto fail;
    }
    if (bias) {
        if (!(c->bias = qc_malloc((size_t)spec->out * sizeof(float), err))) goto fail;
        memcpy(c->bias, bias, (size_t)spec->out * sizeof(float));
    }
    l->out = spec->out;
    l->in = spec->in;
    l->forward = cpu_forward;
    l->free = cpu_free;
    l->impl = c;
    return l;
fail:
    free(c->ws);
    free(c->xws);
    free(c);
    free(l);
    return NULL;
}
