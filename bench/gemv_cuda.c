/* Decode GEMV (batch 1) on a CUDA GPU: the generated kernels
 * (codegen/cuda_src.h) at w4 g128 and w3 g128 (asymmetric) on Llama-style
 * shapes, against a device-to-device copy of the same bytes and cuBLAS f16
 * GEMV (cublasGemmEx, n = 1), all measured in this run. Prints ratios.
 *
 * Timing: batches of 20 back-to-back launches between two CUDA events,
 * after warmup; the median over batches of the mean launch time. Each
 * kernel launch shape in `variants` is timed; the table shows the default
 * (qc_cuda_gemv_default_opts) and the best. Inputs rotate over enough
 * copies of the weights (> 200 MB together, 4× the H100's 50 MB L2) that no
 * launch finds its weights in L2.
 * Bandwidth counts the bytes a launch must move: GEMV = packed weight bytes
 * read; copy = bytes read + bytes written (so copy GB/s is the device's
 * streaming ceiling, as METHOD.md measures it).
 *
 * The weight codes are random bytes (speed does not depend on them; the
 * kernels' correctness is tests/test_codegen_cuda.c's job).
 * Usage: gemv_cuda_bench [batches]   (needs libcublas.so.13 or .12 on
 * the library path for the cuBLAS column; without it that column is "-").
 *
 * gemv_cuda_bench [batches] gemm: the prefill GEMM instead (the gemmT entry
 * points, T as the runtime picks it: the fewest tokens per block covering
 * the batch, at most 64), batches of 16, 64 and 256 tokens, against cuBLAS
 * f16 GemmEx (f32 accumulation) on the same shapes, each timed as above. */
#include "../codegen/cuda_nvrtc.h"
#include "../codegen/cuda_pack.h"
#include "../compiler/dequant.h"
#include "../runtime/cuda_driver.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static int die(const char *what, const qc_err *err) {
    fprintf(stderr, "gemv_cuda_bench: %s: %s\n", what, err->msg);
    exit(1);
}

/* cuBLAS through dlopen: only the three entry points used. */
typedef struct cublas {
    void *lib, *handle;
    int (*create)(void **);
    int (*destroy)(void *);
    int (*gemm_ex)(void *, int, int, int, int, int, const void *, const void *, int, int,
                   const void *, int, int, const void *, void *, int, int, int, int);
} cublas;

static int cublas_open(cublas *b) {
    const char *names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    memset(b, 0, sizeof *b);
    for (int i = 0; i < 3 && !b->lib; i++)
        b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) return -1;
    *(void **)&b->create = dlsym(b->lib, "cublasCreate_v2");
    *(void **)&b->destroy = dlsym(b->lib, "cublasDestroy_v2");
    *(void **)&b->gemm_ex = dlsym(b->lib, "cublasGemmEx");
    if (!b->create || !b->destroy || !b->gemm_ex || b->create(&b->handle)) return -1;
    return 0;
}

/* Median of n floats (sorts them). */
static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static float median(float *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmpf);
    return v[n / 2];
}

typedef struct timer {
    qcrt_cuda *cu;
    qcrt_cuda_event a, b;
    float *ms;
    int batches;
} timer;

/* Op i of a rotation: launches one kernel / copy / cuBLAS call. */
typedef int (*op_fn)(void *ctx, int i, qc_err *err);

#define BATCH 20 /* launches between two events: the queue never runs dry */

/* Median over batches of the mean time of one op (ms). */
static float time_op(timer *t, op_fn op, void *ctx, int copies) {
    qc_err err = {{0}};
    for (int i = 0; i < 2 * BATCH; i++)
        if (op(ctx, i % copies, &err)) die("warmup", &err);
    for (int i = 0, n = 0; i < t->batches; i++) {
        if (qcrt_cuda_event_record(t->cu, t->a, &err)) die("event", &err);
        for (int j = 0; j < BATCH; j++, n++)
            if (op(ctx, n % copies, &err)) die("timed run", &err);
        if (qcrt_cuda_event_record(t->cu, t->b, &err) ||
            qcrt_cuda_event_ms(t->cu, t->a, t->b, &t->ms[i], &err))
            die("timed run", &err);
        t->ms[i] /= BATCH;
    }
    if (qcrt_cuda_sync(t->cu, &err)) die("sync", &err);
    return median(t->ms, t->batches);
}

typedef struct gemv_ctx {
    qcrt_cuda *cu;
    qcrt_cuda_fn fn;
    const qc_cuda_kernel *k;
    qcrt_dptr *w, x, y, ws, dst;
    size_t bytes;
    cublas *blas;
    int out, in;
} gemv_ctx;

static int op_gemv(void *p, int i, qc_err *err) {
    gemv_ctx *c = p;
    void *args[] = {&c->w[i], &c->x, &c->y, &c->ws};
    return qcrt_cuda_launch(c->cu, c->fn, c->k->grid, c->k->block, 0, args, err);
}

/* GEMM context: the same, plus the batch and the gemmT function. */
typedef struct gemm_ctx {
    gemv_ctx g;
    int n;
} gemm_ctx;

static int op_gemm(void *p, int i, qc_err *err) {
    gemm_ctx *c = p;
    int T = c->n <= 8 ? 8 : c->n <= 16 ? 16 : c->n <= 32 ? 32 : 64;
    void *args[] = {&c->g.w[i], &c->g.x, &c->g.y, &c->g.ws, &c->n};
    return qcrt_cuda_launch2(c->g.cu, c->g.fn, c->g.k->gemm_grid, (unsigned)((c->n + T - 1) / T),
                             c->g.k->block, 0, args, err);
}

static int op_cublas_gemm(void *p, int i, qc_err *err) {
    gemm_ctx *c = p;
    float alpha = 1, beta = 0;
    /* Y (out × n, column-major) = Wᵀ-as-stored · X (in × n) */
    int r = c->g.blas->gemm_ex(c->g.blas->handle, 1, 0, c->g.out, c->n, c->g.in, &alpha,
                               (const void *)(uintptr_t)c->g.w[i], 2, c->g.in,
                               (const void *)(uintptr_t)c->g.x, 2, c->g.in, &beta,
                               (void *)(uintptr_t)c->g.y, 2, c->g.out, 68, -1);
    return r ? qc_err_set(err, "cublasGemmEx: status %d", r) : 0;
}

static uint8_t *random_blob(const qc_kernel_spec *s, size_t *size);
static qcrt_dptr *upload_copies(qcrt_cuda *cu, const void *host, size_t bytes, int copies);
static void free_copies(qcrt_cuda *cu, qcrt_dptr *d, int copies);
static int n_copies(size_t bytes);
static qc_nvrtc_cache *cache;

/* The GEMM table (see the top comment). */
static void gemm_table(qcrt_cuda *cu, timer *t, cublas *blas, int have_blas) {
    qc_err err = {{0}};
    const int shapes[4][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}};
    const int batches[3] = {16, 64, 256};
    printf("%-6s %-13s %5s %10s %10s %10s %9s %6s\n", "format", "out x in", "batch", "gemm us",
           "TFLOP/s", "cuBLAS us", "speedup", "regs");
    for (int bits = 4; bits >= 3; bits--)
        for (int si = 0; si < 4; si++) {
            qc_kernel_spec s = {.format = QC_KFMT_INT,
                                .bits = bits,
                                .group_size = 128,
                                .out = shapes[si][0],
                                .in = shapes[si][1]};
            const qc_cuda_kernel *k;
            const qc_cuda_binary *bin =
                qc_nvrtc_cache_get(cache, &s, qcrt_cuda_device(cu)->arch, &k, NULL, &err);
            qcrt_cuda_module *m;
            if (!bin || qcrt_cuda_module_load(cu, bin->cubin, &m, &err)) die("NVRTC/module", &err);
            gemm_ctx c = {
                .g = {.cu = cu, .k = k, .out = (int)s.out, .in = (int)s.in, .blas = blas}};
            uint8_t *blob = random_blob(&s, &c.g.bytes);
            int copies = n_copies(c.g.bytes);
            c.g.w = upload_copies(cu, blob, c.g.bytes, copies);
            size_t xb = (size_t)s.in * 256 * 2, yb = (size_t)s.out * 256 * 4;
            uint16_t *xh = malloc(xb);
            for (size_t i = 0; i < xb / 2; i++)
                xh[i] = qc_f32_to_f16((float)((int)(next() % 2001) - 1000) * 1e-3f);
            size_t wb = (size_t)s.out * (size_t)s.in * 2;
            int bc = n_copies(wb);
            qcrt_dptr *wf = NULL;
            if (have_blas) {
                uint16_t *wh = malloc(wb);
                for (size_t i = 0; i < wb / 2; i++)
                    wh[i] = qc_f32_to_f16((float)((int)(next() % 2001) - 1000) * 1e-4f);
                wf = upload_copies(cu, wh, wb, bc);
                free(wh);
            }
            if (qcrt_cuda_alloc(cu, xb, &c.g.x, &err) ||
                qcrt_cuda_upload(cu, c.g.x, xh, xb, &err) ||
                qcrt_cuda_alloc(cu, yb, &c.g.y, &err) || qcrt_cuda_alloc(cu, 64, &c.g.ws, &err))
                die("alloc", &err);
            for (int bi = 0; bi < 3; bi++) {
                c.n = batches[bi];
                char name[160];
                int T = c.n <= 8 ? 8 : c.n <= 16 ? 16 : c.n <= 32 ? 32 : 64, regs = 0, local = 0;
                snprintf(name, sizeof name, "%s%d", k->gemm, T);
                if (qcrt_cuda_function(cu, m, name, &c.g.fn, &err) ||
                    qcrt_cuda_fn_resources(cu, c.g.fn, &regs, &local, &err))
                    die("function", &err);
                float ms = time_op(t, op_gemm, &c, copies), mb = 0;
                if (have_blas) {
                    gemm_ctx cb = c;
                    cb.g.w = wf;
                    mb = time_op(t, op_cublas_gemm, &cb, bc);
                }
                char shape[32], bus[16] = "-", sp[16] = "-";
                snprintf(shape, sizeof shape, "%dx%d", (int)s.out, (int)s.in);
                if (have_blas) {
                    snprintf(bus, sizeof bus, "%.1f", (double)mb * 1e3);
                    snprintf(sp, sizeof sp, "%.2fx", (double)(mb / ms));
                }
                printf("w%dg128 %-13s %5d %10.1f %10.1f %10s %9s %4d%s\n", bits, shape, c.n,
                       (double)ms * 1e3, 2.0 * s.out * s.in * c.n / (ms * 1e-3) / 1e12, bus, sp,
                       regs, local ? " spills" : "");
                fflush(stdout);
            }
            free_copies(cu, c.g.w, copies);
            if (wf) free_copies(cu, wf, bc);
            qcrt_cuda_free(cu, c.g.x), qcrt_cuda_free(cu, c.g.y), qcrt_cuda_free(cu, c.g.ws);
            qcrt_cuda_module_free(cu, m);
            free(blob), free(xh);
        }
}

static int op_copy(void *p, int i, qc_err *err) {
    gemv_ctx *c = p;
    return qcrt_cuda_copy(c->cu, c->dst, c->w[i], c->bytes, err);
}

static int op_cublas(void *p, int i, qc_err *err) {
    gemv_ctx *c = p;
    float alpha = 1, beta = 0;
    /* y (out) = Wᵀ-as-stored · x: W is out × in row-major = in × out column-major */
    int r =
        c->blas->gemm_ex(c->blas->handle, 1 /* T */, 0 /* N */, c->out, 1, c->in, &alpha,
                         (const void *)(uintptr_t)c->w[i], 2 /* CUDA_R_16F */, c->in,
                         (const void *)(uintptr_t)c->x, 2, c->in, &beta, (void *)(uintptr_t)c->y, 2,
                         c->out, 68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */);
    return r ? qc_err_set(err, "cublasGemmEx: status %d", r) : 0;
}

/* Launch shapes tried: {row tiles per block, max warps, prefetch, min
 * blocks per SM}; [0] is
 * replaced by the default. */
static qc_cuda_gemv_opts variants[] = {
    {0, 0, 0, 0, 0}, {1, 16, 0, 0, 0}, {1, 8, 0, 0, 0},
    {1, 8, 1, 0, 0}, {1, 4, 0, 0, 0},  {2, 8, 0, 0, 0},
};
#define NVARIANTS (int)(sizeof variants / sizeof variants[0])

/* Times the GEMV of spec s with launch shape o (NULL: the default); *regs gets its registers per
 * thread (negative: spills). */
static float time_variant(timer *t, gemv_ctx *c, int copies, const qc_kernel_spec *s,
                          const qc_cuda_gemv_opts *o, int *regs) {
    qc_err err = {{0}};
    const qc_cuda_kernel *k;
    const qc_cuda_binary *bin =
        qc_nvrtc_cache_get_opts(cache, s, o, qcrt_cuda_device(c->cu)->arch, &k, NULL, &err);
    if (!bin) die("NVRTC", &err);
    qcrt_cuda_module *m;
    int local = 0;
    if (qcrt_cuda_module_load(c->cu, bin->cubin, &m, &err) ||
        qcrt_cuda_function(c->cu, m, k->gemv, &c->fn, &err) ||
        qcrt_cuda_fn_resources(c->cu, c->fn, regs, &local, &err))
        die("module", &err);
    if (local) *regs = -*regs;
    c->k = k;
    float ms = time_op(t, op_gemv, c, copies);
    qcrt_cuda_module_free(c->cu, m);
    return ms;
}

/* copies × bytes > 200 MB, at least 2. */
static int n_copies(size_t bytes) {
    size_t c = (200u << 20) / bytes + 1;
    return c < 2 ? 2 : (int)c;
}

static qcrt_dptr *upload_copies(qcrt_cuda *cu, const void *host, size_t bytes, int copies) {
    qc_err err = {{0}};
    qcrt_dptr *d = calloc((size_t)copies, sizeof *d);
    for (int i = 0; i < copies; i++)
        if (qcrt_cuda_alloc(cu, bytes, &d[i], &err) ||
            qcrt_cuda_upload(cu, d[i], host, bytes, &err))
            die("upload", &err);
    return d;
}

static void free_copies(qcrt_cuda *cu, qcrt_dptr *d, int copies) {
    for (int i = 0; i < copies; i++)
        qcrt_cuda_free(cu, d[i]);
    free(d);
}

/* A CUDA blob with random codes and valid f16 scales / zero points. */
static uint8_t *random_blob(const qc_kernel_spec *s, size_t *size) {
    qc_err err = {{0}};
    qc_cuda_layout l;
    if (qc_cuda_layout_get(s, 0, &l, &err)) die("layout", &err);
    uint8_t *b = calloc(1, l.total);
    memcpy(b, QC_CUDA_PACK_MAGIC, 8);
    uint64_t h = qc_kernel_spec_hash(s), total = l.total;
    memcpy(b + 8, &h, 8), memcpy(b + 24, &total, 8);
    for (size_t i = l.codes; i + 8 <= l.sz; i += 8) {
        uint64_t v = next();
        memcpy(b + i, &v, 8);
    }
    for (size_t i = l.sz; i + 8 <= l.sz + (size_t)(l.row_tiles * l.n_groups * 8 * l.sz_bytes);
         i += 8) {
        uint16_t v[4] = {qc_f32_to_f16(0.01f + (float)(next() % 100) * 1e-4f), qc_f32_to_f16(0.01f),
                         qc_f32_to_f16(1024.0f + (float)(next() % 8)), qc_f32_to_f16(1027.0f)};
        memcpy(b + i, v, l.sz_bytes == 8 ? 8 : 4);
        if (l.sz_bytes == 4) memcpy(b + i + 4, v, 4);
    }
    if (qc_cuda_pack_check(s, b, l.total, &err)) die("random blob", &err);
    *size = l.total;
    return b;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 50;
    if (iters < 5) iters = 5;
    qc_err err = {{0}};
    qcrt_cuda *cu;
    int rc = qcrt_cuda_open(0, &cu, &err);
    if (rc == QCRT_CUDA_NO_DEVICE) {
        printf("SKIP: no CUDA device (%s)\n", err.msg);
        return 77;
    }
    if (rc) die("open", &err);
    const qcrt_cuda_info *d = qcrt_cuda_device(cu);
    cublas blas;
    int have_blas = cublas_open(&blas) == 0;
    printf("device: %s (%s), %d SMs, L2 %d MB; cuBLAS: %s; median of %d batches of %d\n", d->name,
           d->arch, d->sm_count, d->l2_bytes >> 20, have_blas ? "yes" : "not found", iters, BATCH);
    cache = qc_nvrtc_cache_new(&err);

    timer t = {cu, NULL, NULL, malloc((size_t)iters * sizeof(float)), iters};
    if (!cache || qcrt_cuda_event_new(cu, &t.a, &err) || qcrt_cuda_event_new(cu, &t.b, &err))
        die("setup", &err);
    if (argc > 2 && !strcmp(argv[2], "gemm")) {
        gemm_table(cu, &t, &blas, have_blas);
        argc = 0; /* skip the GEMV table */
    }
    const int shapes[4][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}};
    const int bits[2] = {4, 3};
    if (argc)
        printf("%-6s %-13s %9s %9s %9s %8s %8s %9s %9s %8s %5s\n", "format", "out x in", "MB",
               "gemv us", "GB/s", "copy us", "copyGB/s", "bw/copy", "cuBLAS us", "speedup", "regs");
    if (argc)
        printf("(bw/copy = GEMV weight bytes/s over copy (read+write) bytes/s; best = the fastest "
               "launch shape rtb/warps/prefetch/minblocks)\n");
    for (int bi = 0; bi < 2 && argc; bi++)
        for (int si = 0; si < 4; si++) {
            qc_kernel_spec s = {.format = QC_KFMT_INT,
                                .bits = bits[bi],
                                .group_size = 128,
                                .symmetric = 0,
                                .out = shapes[si][0],
                                .in = shapes[si][1]};
            gemv_ctx c = {.cu = cu, .out = (int)s.out, .in = (int)s.in, .blas = &blas};
            uint8_t *blob = random_blob(&s, &c.bytes);
            int copies = n_copies(c.bytes);
            c.w = upload_copies(cu, blob, c.bytes, copies);
            uint16_t *xh = malloc((size_t)s.in * 2);
            for (int64_t i = 0; i < s.in; i++)
                xh[i] = qc_f32_to_f16((float)((int)(next() % 2001) - 1000) * 1e-3f);
            if (qcrt_cuda_alloc(cu, (size_t)s.in * 2, &c.x, &err) ||
                qcrt_cuda_upload(cu, c.x, xh, (size_t)s.in * 2, &err) ||
                qcrt_cuda_alloc(cu, (size_t)s.out * 4, &c.y, &err) ||
                qcrt_cuda_alloc(cu, 64, &c.ws, &err) || qcrt_cuda_alloc(cu, c.bytes, &c.dst, &err))
                die("alloc", &err);
            /* variant 0 is the default shape; the best one is reported too */
            float t_gemv = 0, t_best = 0;
            int regs = 0, best = 0;
            for (int v = 0; v < NVARIANTS; v++) {
                int r;
                if (!v) qc_cuda_gemv_default_opts(&s, &variants[0]), variants[0].gemm = 0;
                float ms = time_variant(&t, &c, copies, &s, &variants[v], &r);
                if (!v) t_gemv = ms, regs = r;
                if (!v || ms < t_best) t_best = ms, best = v;
                fprintf(stderr,
                        "  w%d %dx%d variant rtb %d warps %d prefetch %d minblocks %d: %.2f us, "
                        "regs %d\n",
                        s.bits, (int)s.out, (int)s.in, variants[v].rtb, variants[v].max_warps,
                        variants[v].prefetch, variants[v].min_blocks, (double)ms * 1e3, r);
            }
            float t_copy = time_op(&t, op_copy, &c, copies);
            float t_blas = 0;
            if (have_blas) { /* f16 weights of the same shape, rotated likewise */
                size_t wb = (size_t)s.out * (size_t)s.in * 2;
                uint16_t *wh = malloc(wb);
                for (size_t i = 0; i < wb / 2; i++)
                    wh[i] = qc_f32_to_f16((float)((int)(next() % 2001) - 1000) * 1e-4f);
                int bc = n_copies(wb);
                gemv_ctx cb = c;
                cb.w = upload_copies(cu, wh, wb, bc);
                free(wh);
                t_blas = time_op(&t, op_cublas, &cb, bc);
                free_copies(cu, cb.w, bc);
            }
            double gb = (double)c.bytes / (t_gemv * 1e-3) / 1e9;
            double cgb = 2.0 * (double)c.bytes / (t_copy * 1e-3) / 1e9;
            char shape[32], blas_us[16] = "-", speed[16] = "-";
            snprintf(shape, sizeof shape, "%dx%d", (int)s.out, (int)s.in);
            if (have_blas) {
                snprintf(blas_us, sizeof blas_us, "%.1f", (double)t_blas * 1e3);
                snprintf(speed, sizeof speed, "%.2fx", (double)(t_blas / t_gemv));
            }
            printf("w%dg128 %-13s %9.1f %9.1f %9.0f %8.1f %8.0f %8.1f%% %9s %8s %5d | best "
                   "%d/%d/%d/%d %.1f us %.1f%%\n",
                   s.bits, shape, (double)c.bytes / 1e6, (double)t_gemv * 1e3, gb,
                   (double)t_copy * 1e3, cgb, 100 * gb / cgb, blas_us, speed, regs,
                   variants[best].rtb, variants[best].max_warps, variants[best].prefetch,
                   variants[best].min_blocks, (double)t_best * 1e3,
                   100 * ((double)c.bytes / (t_best * 1e-3) / 1e9) / cgb);
            fflush(stdout);
            free_copies(cu, c.w, copies);
            qcrt_cuda_free(cu, c.x), qcrt_cuda_free(cu, c.y), qcrt_cuda_free(cu, c.ws);
            qcrt_cuda_free(cu, c.dst);
            free(blob), free(xh);
        }
    int compiles;
    double secs;
    qc_nvrtc_cache_stats(cache, &compiles, &secs);
    printf("NVRTC: %d kernels, %.2f s\n", compiles, secs);
    qcrt_cuda_event_free(cu, t.a), qcrt_cuda_event_free(cu, t.b);
    qc_nvrtc_cache_free(cache);
    if (have_blas) blas.destroy(blas.handle);
    qcrt_cuda_close(cu);
    free(t.ms);
    return 0;
}
