/* Decode GEMV of the demo model's layer shapes (SmolLM2-135M) with the
 * generated CPU kernels, against (a) memcpy of the same byte count and (b)
 * OpenBLAS f32 sgemv of the same shape, all measured in this run.
 *
 * Weights are random codes in the demo recipe's format (asymmetric, g128,
 * act-order); timing does not depend on values. Each measured operation
 * cycles through enough copies of its buffers (>= 64 MiB) that every call
 * streams from DRAM, as decode does (the whole model does not fit in the
 * caches). Bytes/s = bytes of packed weight read (codes + scales + zeros +
 * permutation) / time; memcpy bytes/s = bytes copied / time.
 *
 * Our kernel, memcpy and sgemv are timed in interleaved windows (best of 7
 * each), so that load from elsewhere hits all three alike.
 *
 * Usage: gemv_cpu_bench [threads...] (default 1 2). */
#include "../codegen/cpu_llvm.h"
#include "../codegen/pack.h"
#include "../compiler/dequant.h"
#include "../compiler/quant.h"
#include "../runtime/cpu_kernels.h"
#include "../runtime/linear.h"
#include "../runtime/pool.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STREAM_BYTES (64u << 20)
static int hot; /* --hot: one copy of each buffer (cache-resident: compute speed) */

typedef struct shape {
    const char *name;
    int64_t out, in;
    int per_token; /* occurrences per token: 30 blocks, lm_head once */
} shape;

static const shape shapes[] = {
    {"q_proj", 576, 576, 30},     {"k_proj", 192, 576, 30},     {"v_proj", 192, 576, 30},
    {"o_proj", 576, 576, 30},     {"gate_proj", 1536, 576, 30}, {"up_proj", 1536, 576, 30},
    {"down_proj", 576, 1536, 30}, {"lm_head", 49152, 576, 1},
};
#define NSHAPES (int)(sizeof shapes / sizeof *shapes)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 1;
static unsigned urand_u(unsigned n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)((rng >> 33) % n);
}

static qc_quant_state *random_state(int bits, int64_t out, int64_t in) {
    qc_quant_format f = {bits, 128, 0};
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, out, in, &err);
    if (!q) return NULL;
    for (int64_t i = 0; i < out * in; i++)
        q->codes[i] = (uint8_t)urand_u(1u << bits);
    for (int64_t i = 0; i < out * q->n_groups; i++) {
        q->scales[i] = qc_f16_to_f32(qc_f32_to_f16(0.01f + 0.001f * (float)urand_u(100)));
        q->zeros[i] = (float)urand_u(1u << bits);
    }
    /* act-order: a random column order, as GPTQ leaves it */
    for (int64_t c = in - 1; c > 0; c--) {
        int64_t k = urand_u((unsigned)c + 1);
        int32_t t = q->g_idx[c];
        q->g_idx[c] = q->g_idx[k], q->g_idx[k] = t;
    }
    return q;
}

typedef struct memjob {
    uint8_t *dst;
    const uint8_t *src;
    size_t n;
} memjob;

static void memcpy_part(void *arg, int p, int n, int slot) {
    (void)slot;
    memjob *j = arg;
    size_t a = j->n * (size_t)p / (size_t)n, b = j->n * (size_t)(p + 1) / (size_t)n;
    memcpy(j->dst + a, j->src + a, b - a);
}

/* Seconds per call of one window of op(ctx, i), cycling i over copies, of
 * at least 0.1 s. */
static double time_window(int copies, void (*op)(void *ctx, int i), void *ctx) {
    long it = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < copies; i++, it++)
            op(ctx, i);
    } while ((t = now() - t0) < 0.1);
    return t / (double)it;
}

/* Seconds per call of each of n ops (after one warm-up round each): the
 * best of 7 windows per op, the ops' windows interleaved (a, b, c, a, b,
 * c, ...) so that load from elsewhere on the machine, which comes and goes,
 * reaches every op alike and their ratios stay fair. */
typedef struct timed {
    int copies;
    void (*op)(void *ctx, int i);
    void *ctx;
    double best;
} timed;

static void time_interleaved(timed *t, int n) {
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < t[k].copies; i++)
            t[k].op(t[k].ctx, i);
        t[k].best = 1e30;
    }
    for (int rep = 0; rep < 7; rep++)
        for (int k = 0; k < n; k++) {
            double s = time_window(t[k].copies, t[k].op, t[k].ctx);
            if (s < t[k].best) t[k].best = s;
        }
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    uint8_t *b = NULL;
    long n;
    if (f && !fseek(f, 0, SEEK_END) && (n = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET) &&
        (b = malloc((size_t)n + 1)) && fread(b, 1, (size_t)n, f) == (size_t)n) {
        b[n] = 0;
        *size = (size_t)n;
    } else {
        free(b);
        b = NULL;
    }
    if (f) fclose(f);
    return b;
}

typedef struct ctx {
    qcrt_linear **l;
    uint8_t **w, *dst;
    float **f, *x, *y;
    size_t size;
    int64_t out, in;
    int threads;
    qcrt_pool *pool;
} ctx;

static void op_ours(void *c, int i) {
    ctx *x = c;
    x->l[i]->forward(x->l[i], x->x, 1, x->y);
}

static void op_memcpy(void *c, int i) {
    ctx *x = c;
    memjob j = {x->dst, x->w[i], x->size};
    qcrt_pool_run(x->pool, x->threads, memcpy_part, &j);
}

static void op_sgemv(void *c, int i) {
    ctx *x = c;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)x->out, (int)x->in, 1.0f, x->f[i], (int)x->in,
                x->x, 1, 0.0f, x->y, 1);
}

typedef struct result {
    double ours, mem, blas, bytes;
} result;

static int bench_shape(const shape *sh, int bits, const qcrt_cpu_kernels *k, int threads,
                       qcrt_pool *pool, result *r) {
    qc_err err;
    qc_quant_state *q = random_state(bits, sh->out, sh->in);
    qc_kernel_spec s;
    if (!q || qc_kernel_spec_from_quant(q, 0, 0, &s, &err)) return -1;
    size_t size = qc_pack_size(&s, 0, &err);
    int copies = hot ? 1 : (int)(STREAM_BYTES / size) + 1;
    uint8_t **w = calloc((size_t)copies, sizeof *w);
    qcrt_linear **l = calloc((size_t)copies, sizeof *l);
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    qc_gemv_prep_fn prep;
    qc_gemv_rows_fn rows;
    if (qcrt_cpu_kernels_find(k, &s, &gemv, &gemm, &err)) return -1;
    if (qcrt_cpu_kernels_find_split(k, &s, &prep, &rows)) prep = NULL, rows = NULL;
    for (int i = 0; i < copies; i++) {
        w[i] = aligned_alloc(64, size);
        if (!w[i] || qc_pack(&s, q, NULL, NULL, w[i], size, &err)) return -1;
        l[i] = qcrt_linear_cpu_new(&s, gemv, gemm, prep, rows, w[i], size, NULL, pool, &err);
        if (!l[i]) return -1;
    }
    float *x = malloc((size_t)sh->in * sizeof *x), *y = malloc((size_t)sh->out * sizeof *y);
    for (int64_t c = 0; c < sh->in; c++)
        x[c] = (float)urand_u(1000) / 500.0f - 1.0f;
    r->bytes = (double)size - 64;
    ctx c = {l, w, aligned_alloc(64, size), NULL, x, y, size, sh->out, sh->in, threads, pool};
    size_t fbytes = (size_t)(sh->out * sh->in) * sizeof(float);
    int fcopies = hot ? 1 : (int)(STREAM_BYTES / fbytes) + 1;
    float **f = calloc((size_t)fcopies, sizeof *f);
    for (int i = 0; i < fcopies; i++) {
        f[i] = malloc(fbytes);
        if (!f[i]) return -1;
        for (int64_t e = 0; e < sh->out * sh->in; e++)
            f[i][e] = 0.001f * (float)(e % 7);
    }
    openblas_set_num_threads(threads);
    c.f = f;
    timed t[3] = {{copies, op_ours, &c, 0}, {copies, op_memcpy, &c, 0}, {fcopies, op_sgemv, &c, 0}};
    time_interleaved(t, 3);
    r->ours = t[0].best, r->mem = t[1].best, r->blas = t[2].best;
    free(c.dst);
    for (int i = 0; i < copies; i++)
        qcrt_linear_free(l[i]), free(w[i]);
    free(w), free(l);
    for (int i = 0; i < fcopies; i++)
        free(f[i]);
    free(f), free(x), free(y);
    qc_quant_state_free(q);
    return 0;
}

int main(int argc, char **argv) {
    /* gemv_cpu_bench [--target T] [--hot] [--emit FILE | --so FILE] [threads...]:
     * --emit writes the kernels (FILE, FILE.target) and exits; --so runs
     * kernels emitted earlier (e.g. on a machine without LLVM). */
    const char *target = "host", *emit = NULL, *so = NULL;
    int nth = 0, th[8] = {1, 2};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--target") && i + 1 < argc)
            target = argv[++i];
        else if (!strcmp(argv[i], "--hot"))
            hot = 1;
        else if (!strcmp(argv[i], "--emit") && i + 1 < argc)
            emit = argv[++i];
        else if (!strcmp(argv[i], "--so") && i + 1 < argc)
            so = argv[++i];
        else if (nth < 8)
            th[nth++] = atoi(argv[i]);
    }
    if (!nth) nth = 2;
    qc_err err;
    const int bits_list[2] = {4, 3};
    qc_kernel_spec specs[2 * NSHAPES];
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < NSHAPES; i++) {
            specs[b * NSHAPES + i] = (qc_kernel_spec){.format = QC_KFMT_INT,
                                                      .bits = bits_list[b],
                                                      .group_size = 128,
                                                      .symmetric = 0,
                                                      .out = shapes[i].out,
                                                      .in = shapes[i].in,
                                                      .act_order = 1,
                                                      .act = QC_KACT_F32};
        }
    qc_cpu_object obj = {0};
    if (so) {
        char path[4096];
        snprintf(path, sizeof path, "%s.target", so);
        size_t n;
        uint8_t *t = read_all(path, &n);
        if (!t || !(obj.so = read_all(so, &obj.so_size))) {
            fprintf(stderr, "gemv_cpu_bench: cannot read %s and %s\n", so, path);
            return 1;
        }
        snprintf(obj.target, sizeof obj.target, "%s", (char *)t);
        free(t);
    } else if (qc_cpu_codegen(specs, 2 * NSHAPES, target, &obj, &err)) {
        fprintf(stderr, "gemv_cpu_bench: %s\n", err.msg);
        return 1;
    } else {
        printf("codegen: %d kernels in %.2f s (IR %.2f, O3 %.2f, emit %.2f, link %.2f); %s\n",
               obj.n_kernels,
               obj.ir_seconds + obj.opt_seconds + obj.emit_seconds + obj.link_seconds,
               obj.ir_seconds, obj.opt_seconds, obj.emit_seconds, obj.link_seconds, obj.target);
    }
    if (emit) {
        char path[4096];
        snprintf(path, sizeof path, "%s.target", emit);
        FILE *f = fopen(emit, "wb"), *g = fopen(path, "wb");
        int ok =
            f && g && fwrite(obj.so, 1, obj.so_size, f) == obj.so_size && fputs(obj.target, g) >= 0;
        if (f) ok &= !fclose(f);
        if (g) ok &= !fclose(g);
        qc_cpu_object_free(&obj);
        return ok ? 0 : 1;
    }
    qcrt_cpu_kernels *k = qcrt_cpu_kernels_load(obj.so, obj.so_size, obj.target, &err);
    if (!k) {
        fprintf(stderr, "gemv_cpu_bench: %s\n", err.msg);
        return 1;
    }
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < nth; t++) {
            qcrt_pool *pool = qcrt_pool_new(th[t], &err);
            if (!pool) return 1;
            printf("\nw%d g128 asym act-order, %d thread(s); %s\n",
                   bits_list[b], th[t], hot ? "one copy of each buffer (cache-resident)" : "weights stream from DRAM");
            printf("%-10s %6s %6s %9s %8s %8s %8s %7s %9s %7s\n", "layer", "out", "in", "KiB", "us",
                   "GB/s", "memcpy", "%mem", "sgemv us", "x BLAS");
            double tok_ours = 0, tok_mem = 0, tok_blas = 0;
            for (int i = 0; i < NSHAPES; i++) {
                result r;
                if (bench_shape(&shapes[i], bits_list[b], k, th[t], pool, &r)) {
                    fprintf(stderr, "gemv_cpu_bench: %s failed: %s\n", shapes[i].name, err.msg);
                    return 1;
                }
                printf("%-10s %6lld %6lld %9.1f %8.1f %8.2f %8.2f %6.0f%% %9.1f %6.1fx\n",
                       shapes[i].name, (long long)shapes[i].out, (long long)shapes[i].in,
                       r.bytes / 1024, r.ours * 1e6, r.bytes / r.ours / 1e9, r.bytes / r.mem / 1e9,
                       100 * r.mem / r.ours, r.blas * 1e6, r.blas / r.ours);
                tok_ours += shapes[i].per_token * r.ours;
                tok_mem += shapes[i].per_token * r.mem;
                tok_blas += shapes[i].per_token * r.blas;
            }
            printf("per token (30 blocks + lm_head): %.2f ms (%.0f tok/s linears only), memcpy "
                   "%.2f ms, sgemv %.2f ms: %.0f%% of memcpy bandwidth, %.1fx sgemv\n",
                   tok_ours * 1e3, 1 / tok_ours, tok_mem * 1e3, tok_blas * 1e3,
                   100 * tok_mem / tok_ours, tok_blas / tok_ours);
            qcrt_pool_free(pool);
        }
    qcrt_cpu_kernels_free(k);
    qc_cpu_object_free(&obj);
    return 0;
}
