/* Generated CUDA GEMV kernels (codegen/cuda_src.h) on the GPU against a
 * plain CPU reference of the same dequantize-and-multiply, in double:
 * y[o] = Σ_c (scale·(code − zero) + S + A·B)[o][c]·x[c] with x the same f16
 * values the kernel reads. Skips (exit 77) without NVRTC or a CUDA device.
 *
 * Tolerance. The kernel's products (code − zero)·x are exact in f32 (a
 * 9-bit integer times an 11-bit significand), so all error is accumulation:
 * (1) inside the tensor cores, a scale period of P ≤ 256 columns is summed
 * in f32 by chained mma instructions, whose accumulation truncates rather
 * than rounds (Fasi et al. 2021, "Numerical behavior of NVIDIA tensor
 * cores"), so no √n cancellation is assumed: at most P additions of
 * relative error 2^-23 each, bounded by P·2^-23·Σ|terms|; (2) the f32 scale
 * multiply, the sums over periods and warps, the outlier and low-rank terms
 * are rounded f32 operations: λ·√K·2^-24·Σ|terms| with λ = 8 and K = in +
 * rank + 16 as in tests/test_codegen_cpu.c (Higham & Mary 2019), doubled
 * for the two chained low-rank reductions. So
 *     tol = (1.1·P·2^-23 + 2·8·√K·2^-24)·B,  B = Σ_c |Ŵ-terms|·|x_c|
 * with |Ŵ-terms| = |scale·(code − zero)| + |S| + Σ_k |A·B|. One wrong code
 * on a short row exceeds it: check_corrupt shows the comparison catches it.
 *
 * Online Hadamard (spec transform): the reference multiplies by xt = H_n x /
 * sqrt(n) computed in double from the dense definition H_n[a·m + r][b·m + c]
 * = base[a][b]·(−1)^popcount(r & c) (compiler/hadamard.h; only the p × p
 * base comes from there). The kernels compute xt in f32 (log2 m butterfly
 * stages, a p-term base mix, the scale: |error| ≤ δ = 1.1·(log2 m + p +
 * 1)·2^-24·‖x‖₁/sqrt(n)) and round it to f16 (2^-11 relative, 2^-25
 * absolute among subnormals), so each x value is off by at most
 * 2^-11·|xt_c| + 2^-25 + 1.001·δ and the tolerance above gains 2^-11·B +
 * (2^-25 + 1.001·δ)·Σ_c |Ŵ-terms|. The had kernel's output is checked
 * element by element against 2^-11·|xt_c| + 2^-25 + 1.001·δ; a reference with the
 * transposed base (Paley I bases are not symmetric) must fail.
 *
 * `test_codegen_cuda transform` runs only the transform cases. */
#include "../codegen/cuda_nvrtc.h"
#include "../codegen/cuda_pack.h"
#include "../codegen/cuda_src.h"
#include "../compiler/dequant.h"
#include "../compiler/hadamard.h"
#include "../compiler/quant.h"
#include "../runtime/cuda_driver.h"
#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64, [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

typedef struct gcase {
    int bits, group, sym, act_order, outliers, rank, transform;
    int64_t out, in;
    qc_quant_state *q;
    int32_t *row_ptr, *col;
    uint16_t *val, *a, *b;
    int64_t nnz;
    qc_kernel_spec spec;  /* of the blob */
    qc_kernel_spec kspec; /* of the kernel: spec + the online Hadamard when transform */
    uint8_t *blob;
    size_t blob_size;
} gcase;

static uint16_t rand_f16(double scale) {
    return qc_f32_to_f16((float)((urand() * 2 - 1) * scale));
}

/* A quantized state filled by hand (not qc_quant_state_new, whose module
 * links LAPACK: this test's binary is carried to the GPU machine with the
 * few libraries it needs, see bench/cuda_device). */
static qc_quant_state *state_new(int bits, int group, int sym, int64_t out, int64_t in) {
    qc_quant_state *q = calloc(1, sizeof *q);
    q->fmt = (qc_quant_format){bits, group, sym};
    q->rows = out, q->cols = in;
    q->n_groups = group ? (in + group - 1) / group : 1;
    q->codes = malloc((size_t)(out * in));
    q->scales = malloc((size_t)(out * q->n_groups) * sizeof(float));
    q->zeros = malloc((size_t)(out * q->n_groups) * sizeof(float));
    q->g_idx = malloc((size_t)in * sizeof(int32_t));
    CHECK_FATAL(q->codes && q->scales && q->zeros && q->g_idx);
    for (int64_t c = 0; c < in; c++)
        q->g_idx[c] = group ? (int32_t)(c / group) : 0;
    return q;
}

static void state_free(qc_quant_state *q) {
    if (!q) return;
    free(q->codes), free(q->scales), free(q->zeros), free(q->g_idx), free(q->perm);
    free(q);
}

static void build_case(gcase *t) {
    qc_err err = {{0}};
    qc_quant_state *q = t->q = state_new(t->bits, t->group, t->sym, t->out, t->in);
    int maxq = (1 << t->bits) - 1;
    for (int64_t i = 0; i < t->out * t->in; i++)
        q->codes[i] = (uint8_t)(urand() * (maxq + 1));
    for (int64_t i = 0; i < t->out * q->n_groups; i++) {
        q->scales[i] = qc_f16_to_f32(qc_f32_to_f16((float)(0.001 + 0.05 * urand())));
        q->zeros[i] = t->sym ? (float)(1 << (t->bits - 1)) : (float)(int)(urand() * (maxq + 1));
    }
    if (t->act_order && t->group) { /* a random grouping, as GPTQ act-order leaves */
        int64_t n = t->in;
        int32_t *perm = malloc((size_t)n * sizeof *perm);
        for (int64_t c = 0; c < n; c++)
            perm[c] = (int32_t)c;
        for (int64_t c = n - 1; c > 0; c--) {
            int64_t k = (int64_t)(urand() * (double)(c + 1));
            int32_t v = perm[c];
            perm[c] = perm[k], perm[k] = v;
        }
        for (int64_t p = 0; p < n; p++)
            q->g_idx[perm[p]] = (int32_t)(p / t->group);
        q->perm = perm;
    }
    if (t->outliers) {
        t->row_ptr = calloc((size_t)t->out + 1, sizeof *t->row_ptr);
        t->col = malloc((size_t)(5 * t->out + 1) * sizeof *t->col);
        t->val = malloc((size_t)(5 * t->out + 1) * sizeof *t->val);
        for (int64_t o = 0; o < t->out; o++) {
            int n = (int)(urand() * 5); /* 0..4 per row, in increasing columns */
            int64_t c = 0;
            for (int k = 0; k < n && c < t->in; k++) {
                c += 1 + (int64_t)(urand() * (double)t->in / 4);
                if (c >= t->in) break;
                t->col[t->nnz] = (int32_t)c;
                t->val[t->nnz++] = rand_f16(0.5);
            }
            t->row_ptr[o + 1] = (int32_t)t->nnz;
        }
    }
    if (t->rank) {
        t->a = malloc((size_t)(t->out * t->rank) * sizeof *t->a);
        t->b = malloc((size_t)(t->in * t->rank) * sizeof *t->b);
        for (int64_t i = 0; i < t->out * t->rank; i++)
            t->a[i] = rand_f16(0.1);
        for (int64_t i = 0; i < t->in * t->rank; i++)
            t->b[i] = rand_f16(0.1);
    }
    CHECK_FATAL(!qc_kernel_spec_from_quant(q, t->outliers, t->rank, &t->spec, &err));
    qc_pack_sparse sp = {t->nnz, t->row_ptr, t->col, t->val};
    qc_pack_lowrank lr = {t->rank, t->a, t->b};
    t->blob_size = qc_cuda_pack_size(&t->spec, t->nnz, &err);
    CHECK_MSG(t->blob_size > 0, "%s", err.msg);
    t->blob = malloc(t->blob_size);
    int rc = qc_cuda_pack(&t->spec, q, t->outliers ? &sp : NULL, t->rank ? &lr : NULL, t->blob,
                          t->blob_size, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_MSG(!qc_cuda_pack_check(&t->spec, t->blob, t->blob_size, &err), "%s", err.msg);
    t->kspec = t->spec;
    if (t->transform)
        t->kspec.transform = QC_KTRANSFORM_HADAMARD, t->kspec.transform_size = (int)t->in;
}

static int ref_transpose; /* check: the reference with the transposed base */

/* xt = H_n x / sqrt(n) in double from the dense definition (see the top),
 * and the bound δ on the kernels' f32 error. Identity without a transform. */
static void transform_ref(const gcase *t, const float *x, double *xt, double *delta) {
    int64_t n = t->in;
    if (!t->transform) {
        for (int64_t c = 0; c < n; c++)
            xt[c] = x[c];
        *delta = 0;
        return;
    }
    qc_err err = {{0}};
    qc_hadamard *h = qc_hadamard_new((int)n, &err);
    CHECK_FATAL(h);
    int p = h->p, m = h->pow2, lg = 0;
    while ((1 << lg) < m)
        lg++;
    double l1 = 0, sc = 1 / sqrt((double)n);
    for (int64_t c = 0; c < n; c++)
        l1 += fabs(x[c]);
    for (int64_t i = 0; i < n; i++) {
        int a = (int)(i / m), r = (int)(i % m);
        double sum = 0;
        for (int64_t j = 0; j < n; j++) {
            int b = (int)(j / m), c = (int)(j % m);
            double sign = ref_transpose ? h->base[b * p + a] : h->base[a * p + b];
            sum += (__builtin_popcount((unsigned)(r & c)) & 1 ? -sign : sign) * x[j];
        }
        xt[i] = sum * sc;
    }
    *delta = 1.1 * (lg + p + 1) * 0x1p-24 * l1 * sc;
    qc_hadamard_free(h);
}

static void free_case(gcase *t) {
    state_free(t->q);
    free(t->row_ptr), free(t->col), free(t->val), free(t->a), free(t->b), free(t->blob);
    t->row_ptr = t->col = NULL, t->val = t->a = t->b = NULL, t->blob = NULL, t->q = NULL;
}

/* Reference row o: the exact value and B (tolerance bound). */
static void reference(const gcase *t, const double *x, int64_t o, double *ref, double *bound) {
    const qc_quant_state *q = t->q;
    double y = 0, b = 0;
    for (int64_t c = 0; c < t->in; c++) {
        int64_t g = o * q->n_groups + q->g_idx[c];
        double w = (double)q->scales[g] * ((double)q->codes[o * t->in + c] - q->zeros[g]);
        double wa = fabs(w);
        for (int k = 0; k < t->rank; k++) {
            double ab =
                (double)qc_f16_to_f32(t->a[o * t->rank + k]) * qc_f16_to_f32(t->b[k * t->in + c]);
            w += ab, wa += fabs(ab);
        }
        y += w * x[c], b += wa * fabs(x[c]);
    }
    for (int32_t k = t->outliers ? t->row_ptr[o] : 0; t->outliers && k < t->row_ptr[o + 1]; k++) {
        double v = qc_f16_to_f32(t->val[k]);
        y += v * x[t->col[k]], b += fabs(v * x[t->col[k]]);
    }
    *ref = y, *bound = b;
}

/* |got − want| / tolerance for output row o (see the top), the reference on
 * x values xt (after the transform, exact) and the transform's bound delta;
 * *want gets the reference. NaN gives infinity. */
static double row_ratio(const gcase *t, const double *xt, double delta, int64_t o, double got,
                        double *want) {
    double ref, bound;
    reference(t, xt, o, &ref, &bound);
    int P = t->spec.group_size && t->spec.group_size < 256 ? t->spec.group_size : 256;
    double K = (double)(t->in + t->rank + 16);
    double tol = (1.1 * P * 0x1p-23 + 2 * 8 * sqrt(K) * 0x1p-24) * bound + 1e-30;
    if (t->transform) { /* f16 rounding and f32 error of each transformed x value */
        double *ones = malloc((size_t)t->in * sizeof *ones), r1, w1;
        for (int64_t c = 0; c < t->in; c++)
            ones[c] = 1;
        reference(t, ones, o, &r1, &w1);
        free(ones);
        tol = tol * 1.001 + 0x1p-11 * bound + (0x1p-25 + 1.001 * delta) * w1;
    }
    *want = ref;
    double e = fabs(got - ref);
    return isnan(got) ? INFINITY : e / tol;
}

/* The kernels of case t from the cache (launch shape o, NULL: default),
 * loaded: gemv, or the GEMM entry point gemm<T> when T > 0, lrt and had
 * when the spec has them, with their shared memory allowed. */
typedef struct loaded {
    const qc_cuda_kernel *k;
    qcrt_cuda_module *m;
    qcrt_cuda_fn f, lrt, had;
} loaded;

static int load_kernels(qcrt_cuda *cu, qc_nvrtc_cache *cache, const gcase *t,
                        const qc_cuda_gemv_opts *o, int T, loaded *L, qc_err *err) {
    memset(L, 0, sizeof *L);
    const qc_cuda_binary *bin =
        qc_nvrtc_cache_get_opts(cache, &t->kspec, o, qcrt_cuda_device(cu)->arch, &L->k, NULL, err);
    if (!bin) return -1;
    char name[160];
    snprintf(name, sizeof name, T ? "%s%d" : "%s", T ? L->k->gemm : L->k->gemv, T);
    if (qcrt_cuda_module_load(cu, bin->cubin, &L->m, err) ||
        qcrt_cuda_function(cu, L->m, name, &L->f, err) ||
        (L->k->lrt[0] && qcrt_cuda_function(cu, L->m, L->k->lrt, &L->lrt, err)) ||
        (L->k->had[0] && (qcrt_cuda_function(cu, L->m, L->k->had, &L->had, err) ||
                          qcrt_cuda_fn_set_shared(cu, L->had, L->k->had_smem, err))) ||
        (!T && qcrt_cuda_fn_set_shared(cu, L->f, L->k->gemv_smem, err)))
        return -1;
    return 0;
}

/* had (when the spec transforms and `need`) on n tokens dx → dxt, then lrt on
 * the transformed x (cuda_src.h); *xin: what lrt and the GEMM read. */
static int run_prologue(qcrt_cuda *cu, const loaded *L, int need, qcrt_dptr *dw, qcrt_dptr *dx,
                        qcrt_dptr *dxt, qcrt_dptr *dws, int n, qcrt_dptr *xin, qc_err *err) {
    *xin = *dx;
    if (L->had && need) {
        void *args[] = {dx, dxt};
        if (qcrt_cuda_launch2(cu, L->had, 1, (unsigned)n, L->k->had_block, (unsigned)L->k->had_smem,
                              args, err))
            return -1;
        *xin = *dxt;
    }
    if (L->lrt) {
        void *args[] = {dw, xin, dws};
        if (qcrt_cuda_launch2(cu, L->lrt, L->k->lrt_grid, (unsigned)n, L->k->lrt_block, 0, args,
                              err))
            return -1;
    }
    return 0;
}

/* Runs case t's GEMV (launch shape o, NULL: the default) on x (f16
 * values); returns rows outside the tolerance, prints the worst ratio. */
static int run_case_opts(qcrt_cuda *cu, qc_nvrtc_cache *cache, const gcase *t, const float *x,
                         int verbose, const qc_cuda_gemv_opts *o) {
    qc_err err = {{0}};
    char id[96];
    qc_kernel_spec_id(&t->kspec, id, sizeof id);
    loaded L = {0};
    qcrt_dptr dw = 0, dx = 0, dxt = 0, dy = 0, dws = 0, xin;
    int bad = -1;
    int64_t xs = qc_cuda_x_stride(&t->spec);
    size_t ybytes = (size_t)(t->out + 64) * sizeof(float);
    uint16_t *xh = calloc((size_t)xs, sizeof *xh);
    float *y = malloc(ybytes);
    double *xt = malloc((size_t)t->in * sizeof *xt), delta;
    for (int64_t c = 0; c < t->in; c++)
        xh[c] = qc_f32_to_f16(x[c]);
    transform_ref(t, x, xt, &delta);
    if (load_kernels(cu, cache, t, o, 0, &L, &err) ||
        qcrt_cuda_alloc(cu, t->blob_size, &dw, &err) ||
        qcrt_cuda_alloc(cu, (size_t)xs * 2, &dx, &err) ||
        qcrt_cuda_alloc(cu, (size_t)xs * 2, &dxt, &err) || qcrt_cuda_alloc(cu, ybytes, &dy, &err) ||
        qcrt_cuda_alloc(cu, (L.k->ws_floats + 1) * sizeof(float), &dws, &err) ||
        qcrt_cuda_upload(cu, dw, t->blob, t->blob_size, &err) ||
        qcrt_cuda_upload(cu, dx, xh, (size_t)xs * 2, &err) ||
        qcrt_cuda_memset(cu, dy, 0xff, ybytes, &err) || /* NaN poison */
        run_prologue(cu, &L, L.lrt != NULL, &dw, &dx, &dxt, &dws, 1, &xin, &err))
        goto done;
    void *args[] = {&dw, &dx, &dy, &dws}; /* the GEMV takes x as it comes */
    if (qcrt_cuda_launch(cu, L.f, L.k->grid, L.k->block, (unsigned)L.k->gemv_smem, args, &err) ||
        qcrt_cuda_sync(cu, &err) || qcrt_cuda_download(cu, y, dy, ybytes, &err))
        goto done;
    bad = 0;
    double worst = 0;
    for (int64_t o = 0; o < t->out; o++) {
        double ref, r = row_ratio(t, xt, delta, o, y[o], &ref);
        if (r > worst) worst = r;
        if (!(r <= 1) && bad++ < 3)
            fprintf(stderr, "  %s row %lld: got %.9g want %.9g (err/tol %.3g)\n", id, (long long)o,
                    (double)y[o], ref, r);
    }
    uint32_t poison;
    memcpy(&poison, &y[t->out], 4);
    for (int i = 0; i < 64; i++) /* rows past out untouched */
        if (memcmp(&y[t->out + i], &poison, 4) || poison != 0xffffffffu) bad++;
    if (verbose) {
        int regs = 0, local = 0;
        qcrt_cuda_fn_resources(cu, L.f, &regs, &local, &err);
        printf("%-36s %s grid %5u x %3u  regs %3d local %3d  max err/tol %.3g  %s\n", id,
               o ? "opts" : "    ", L.k->grid, L.k->block, regs, local, worst, bad ? "FAIL" : "ok");
    }
done:
    if (bad < 0) CHECK_MSG(0, "%s: %s", id, err.msg);
    qcrt_cuda_free(cu, dw), qcrt_cuda_free(cu, dx), qcrt_cuda_free(cu, dxt);
    qcrt_cuda_free(cu, dy), qcrt_cuda_free(cu, dws);
    qcrt_cuda_module_free(cu, L.m);
    free(xh), free(y), free(xt);
    return bad < 0 ? 1 : bad;
}

static float *rand_x(int64_t n, double lo);

/* The GEMM entry point gemm<T> on n tokens of random x against the
 * reference of each token (the GEMV's tolerance); with a transform, had
 * first and the GEMM on its output, whose values are also checked against
 * the double transform. Returns bad rows. */
static int run_gemm(qcrt_cuda *cu, qc_nvrtc_cache *cache, const gcase *t, int n, int T) {
    qc_err err = {{0}};
    char id[96];
    qc_kernel_spec_id(&t->kspec, id, sizeof id);
    int64_t xs = qc_cuda_x_stride(&t->spec);
    float *x = rand_x(xs * n, 0);
    uint16_t *xh = calloc((size_t)(xs * n), sizeof *xh), *xth = malloc((size_t)(xs * n) * 2);
    size_t ybytes = (size_t)(t->out * n + 64) * sizeof(float);
    float *y = malloc(ybytes);
    double *xt = malloc((size_t)t->in * sizeof *xt), delta;
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < t->in; c++)
            xh[i * xs + c] = qc_f32_to_f16(x[i * xs + c]);
    loaded L = {0};
    qcrt_dptr dw = 0, dx = 0, dxt = 0, dy = 0, dws = 0, xin;
    int bad = -1, nn = n;
    if (load_kernels(cu, cache, t, NULL, T, &L, &err) ||
        qcrt_cuda_alloc(cu, t->blob_size, &dw, &err) ||
        qcrt_cuda_alloc(cu, (size_t)(xs * n) * 2, &dx, &err) ||
        qcrt_cuda_alloc(cu, (size_t)(xs * n) * 2, &dxt, &err) ||
        qcrt_cuda_alloc(cu, ybytes, &dy, &err) ||
        qcrt_cuda_alloc(cu, (L.k->ws_floats * n + 1) * sizeof(float), &dws, &err) ||
        qcrt_cuda_upload(cu, dw, t->blob, t->blob_size, &err) ||
        qcrt_cuda_upload(cu, dx, xh, (size_t)(xs * n) * 2, &err) ||
        qcrt_cuda_memset(cu, dxt, 0xff, (size_t)(xs * n) * 2, &err) ||
        qcrt_cuda_memset(cu, dy, 0xff, ybytes, &err) ||
        run_prologue(cu, &L, 1, &dw, &dx, &dxt, &dws, n, &xin, &err))
        goto done;
    void *args[] = {&dw, &xin, &dy, &dws, &nn};
    if (qcrt_cuda_launch2(cu, L.f, L.k->gemm_grid, (unsigned)((n + T - 1) / T), L.k->block, 0, args,
                          &err) ||
        qcrt_cuda_sync(cu, &err) || qcrt_cuda_download(cu, y, dy, ybytes, &err) ||
        qcrt_cuda_download(cu, xth, dxt, (size_t)(xs * n) * 2, &err))
        goto done;
    bad = 0;
    double worst = 0, worst_x = 0;
    for (int64_t i = 0; i < n; i++) {
        transform_ref(t, x + i * xs, xt, &delta);
        for (int64_t c = 0; t->transform && c < xs; c++) { /* had: H x as f16, zero padding */
            double got = qc_f16_to_f32(xth[i * xs + c]), want = c < t->in ? xt[c] : 0;
            double r = fabs(got - want) / (0x1p-11 * fabs(want) + 0x1p-25 + 1.001 * delta);
            if (r > worst_x || isnan(got)) worst_x = isnan(got) ? INFINITY : r;
            if (!(r <= 1) && bad++ < 3)
                fprintf(stderr, "  %s had token %lld x[%lld]: got %.9g want %.9g\n", id,
                        (long long)i, (long long)c, got, want);
        }
        for (int64_t o = 0; o < t->out; o++) {
            double ref, got = y[i * t->out + o], r = row_ratio(t, xt, delta, o, got, &ref);
            if (r > worst) worst = r;
            if (!(r <= 1) && bad++ < 3)
                fprintf(stderr, "  %s gemm%d token %lld row %lld: got %.9g want %.9g\n", id, T,
                        (long long)i, (long long)o, got, ref);
        }
    }
    for (int i = 0; i < 64; i++) { /* nothing written past n tokens */
        uint32_t v;
        memcpy(&v, &y[t->out * n + i], 4);
        bad += v != 0xffffffffu;
    }
    if (t->transform)
        printf("%-36s gemm%-2d %2d tokens  max err/tol %.3g, had x err/tol %.3g  %s\n", id, T, n,
               worst, worst_x, bad ? "FAIL" : "ok");
done:
    if (bad < 0) CHECK_MSG(0, "%s gemm%d: %s", id, T, err.msg);
    qcrt_cuda_free(cu, dw), qcrt_cuda_free(cu, dx), qcrt_cuda_free(cu, dxt);
    qcrt_cuda_free(cu, dy), qcrt_cuda_free(cu, dws);
    qcrt_cuda_module_free(cu, L.m);
    free(x), free(xh), free(xth), free(y), free(xt);
    return bad < 0 ? 1 : bad;
}

/* The default launch shape without the GEMM entry points (a third of the
 * NVRTC time; run_gemm compiles the default with them). */
static int run_case(qcrt_cuda *cu, qc_nvrtc_cache *cache, const gcase *t, const float *x,
                    int verbose) {
    qc_cuda_gemv_opts o;
    qc_cuda_gemv_default_opts(&t->spec, &o);
    o.gemm = 0;
    return run_case_opts(cu, cache, t, x, verbose, &o);
}

static float *rand_x(int64_t n, double lo) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t c = 0; c < n; c++) /* f16 values, so the reference sees what the kernel does */
        x[c] = qc_f16_to_f32(qc_f32_to_f16((float)(lo + (urand() * 2 - 1))));
    return x;
}

/* One flipped code bit must be caught by the tolerance. */
static void check_corrupt(qcrt_cuda *cu, qc_nvrtc_cache *cache, gcase *t) {
    float *x = rand_x(t->in, 1.5); /* all positive: the flipped code's term shows */
    int64_t o = t->out / 2, c = t->in / 3;
    uint8_t *code = &t->q->codes[o * t->in + c];
    unsigned old = *code;
    *code ^= 1; /* the reference changes, the packed blob does not */
    int bad = run_case(cu, cache, t, x, 0);
    fprintf(stderr, "expected mismatch (one code changed in the reference): %d rows\n", bad);
    CHECK(bad >= 1);
    *code = (uint8_t)old;
    CHECK(run_case(cu, cache, t, x, 0) == 0);
    free(x);
}

/* The reference with the transposed base must disagree with the kernel (so
 * the check sees the order of the base mix), the right one agree. */
static void check_transpose(qcrt_cuda *cu, qc_nvrtc_cache *cache, const gcase *t) {
    float *x = rand_x(t->in, 0);
    ref_transpose = 1;
    int bad = run_case(cu, cache, t, x, 0);
    ref_transpose = 0;
    fprintf(stderr, "expected mismatch (reference with the transposed Hadamard base): %d rows\n",
            bad);
    CHECK(bad >= t->out / 2);
    CHECK(run_case(cu, cache, t, x, 0) == 0);
    free(x);
}

int main(int argc, char **argv) {
    qc_err err = {{0}};
    int only_transform = argc > 1 && !strcmp(argv[1], "transform");
    if (!qc_nvrtc_available()) {
        printf("SKIP: quantc was built without NVRTC\n");
        return 77;
    }
    qcrt_cuda *cu = NULL;
    int rc = qcrt_cuda_open(0, &cu, &err);
    if (rc == QCRT_CUDA_NO_DEVICE) {
        printf("SKIP: no CUDA device (%s)\n", err.msg);
        return 77;
    }
    CHECK_FATAL(rc == 0 || (fprintf(stderr, "%s\n", err.msg), 0));
    const qcrt_cuda_info *d = qcrt_cuda_device(cu);
    printf("device: %s, sm_%d%d, %d SMs, L2 %d MB, driver %d; kernels built for %s\n", d->name,
           d->major, d->minor, d->sm_count, d->l2_bytes >> 20, d->driver_version, d->arch);
    qc_nvrtc_cache *cache = qc_nvrtc_cache_new(&err);
    CHECK_FATAL(cache);

    enum { NC = 7 * 6 * 2 + 20 };
    static gcase cs[NC];
    int n = 0, idx = 0;
    const int64_t shapes[5][2] = {{7, 33}, {100, 96}, {13, 200}, {40, 520}, {33, 1000}};
    const int groups[6] = {32, 64, 128, 0, 512, 256};
    for (int bits = 2; bits <= 8; bits++)
        for (int gi = 0; gi < 6; gi++)
            for (int sym = 0; sym < 2; sym++, idx++) {
                gcase *t = &cs[n++];
                t->bits = bits, t->group = groups[gi], t->sym = sym;
                t->out = shapes[idx % 5][0], t->in = shapes[idx % 5][1];
                t->act_order = idx % 2, t->outliers = idx % 3 == 0, t->rank = idx % 4 == 1 ? 3 : 0;
            }
    cs[n++] = (gcase){.bits = 4, .group = 0, .sym = 0, .out = 1, .in = 1, .outliers = 1};
    cs[n++] = (gcase){.bits = 3, .group = 32, .sym = 1, .out = 1, .in = 1, .rank = 1};
    cs[n++] = (gcase){.bits = 4, .group = 128, .sym = 1, .out = 4096, .in = 4096};
    cs[n++] = (gcase){.bits = 3, .group = 128, .sym = 0, .out = 4096, .in = 4096, .act_order = 1};
    cs[n++] = (gcase){.bits = 4,
                      .group = 128,
                      .sym = 0,
                      .out = 576,
                      .in = 1536,
                      .act_order = 1,
                      .outliers = 1,
                      .rank = 8};
    cs[n++] = (gcase){.bits = 2, .group = 64, .sym = 0, .out = 1000, .in = 2000};
    cs[n++] = (gcase){.bits = 8, .group = 128, .sym = 1, .out = 257, .in = 4111};
    cs[n++] = (gcase){.bits = 4, .group = 512, .sym = 0, .out = 17, .in = 1536};
    cs[n++] = (gcase){.bits = 4, .group = 32, .sym = 1, .out = 2, .in = 14336};
    cs[n++] = (gcase){.bits = 3, .group = 128, .sym = 1, .out = 100, .in = 96};
    int corrupt_a = n - 1, corrupt_b = n - 6; /* 100×96 w3, 576×1536 w4 */
    int nplain = n;
    /* online Hadamard: base orders 12 (Paley I) with act-order, outliers and
     * low-rank; 36 (Paley II); 1 (Sylvester); 28 at 14336 (86 KiB of shared
     * memory); 12 at m = 8 with low-rank; 20 with m = 1 (no butterfly); n = 1 */
    cs[n++] = (gcase){.bits = 4,
                      .group = 128,
                      .out = 576,
                      .in = 1536,
                      .act_order = 1,
                      .outliers = 1,
                      .rank = 8,
                      .transform = 1};
    cs[n++] = (gcase){.bits = 3, .group = 32, .sym = 1, .out = 40, .in = 576, .transform = 1};
    cs[n++] = (gcase){.bits = 4, .group = 0, .out = 33, .in = 128, .outliers = 1, .transform = 1};
    cs[n++] = (gcase){.bits = 4, .group = 128, .out = 4096, .in = 14336, .transform = 1};
    cs[n++] = (gcase){
        .bits = 2, .group = 32, .out = 100, .in = 96, .act_order = 1, .rank = 3, .transform = 1};
    cs[n++] = (gcase){.bits = 5, .group = 0, .sym = 1, .out = 7, .in = 20, .transform = 1};
    cs[n++] = (gcase){.bits = 4, .group = 0, .out = 3, .in = 1, .outliers = 1, .transform = 1};
    for (int i = 0; i < n; i++) {
        if (only_transform && !cs[i].transform) continue;
        build_case(&cs[i]);
        float *x = rand_x(cs[i].in, 0);
        char id[96];
        qc_kernel_spec_id(&cs[i].kspec, id, sizeof id);
        CHECK_MSG(run_case(cu, cache, &cs[i], x, 1) == 0, "%s", id);
        /* every launch shape the bench tries, on a third of the cases */
        const qc_cuda_gemv_opts shapes_[3] = {{2, 8, 1, 0, 0}, {2, 16, 0, 0, 0}, {1, 8, 1, 4, 0}};
        int all = i % 3 == 0 || i >= nplain - 10;
        if (all)
            for (int v = 0; v < 3; v++)
                CHECK_MSG(run_case_opts(cu, cache, &cs[i], x, 1, &shapes_[v]) == 0,
                          "%s with %d row tiles, %d warps, prefetch %d", id, shapes_[v].rtb,
                          shapes_[v].max_warps, shapes_[v].prefetch);
        free(x);
        /* the GEMM entry points: n not a multiple of T, one token, several blocks */
        const int ns[3] = {13, 1, 70};
        for (int T = 8; T <= 64 && all; T *= 2)
            for (int v = 0; v < 3; v++) {
                if (cs[i].out * cs[i].in > 1 << 22 && (v != 0 || T != 64)) continue;
                CHECK_MSG(run_gemm(cu, cache, &cs[i], ns[v], T) == 0, "%s: gemm%d on %d tokens", id,
                          T, ns[v]);
            }
    }
    if (!only_transform) {
        check_corrupt(cu, cache, &cs[corrupt_a]);
        check_corrupt(cu, cache, &cs[corrupt_b]);
    }
    check_transpose(cu, cache, &cs[nplain]); /* 576×1536: Paley I base of order 12 */
    int compiles;
    double secs;
    qc_nvrtc_cache_stats(cache, &compiles, &secs);
    printf("%d kernels compiled with NVRTC for %s in %.2f s\n", compiles, d->arch, secs);
    for (int i = 0; i < n; i++)
        free_case(&cs[i]);
    qc_nvrtc_cache_free(cache);
    qcrt_cuda_close(cu);
    TEST_END();
}
