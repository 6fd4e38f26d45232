/* Generated CPU kernels (codegen/cpu_llvm.h, runtime/cpu_kernels.h,
 * runtime/linear_cpu.c) against a plain reference: dequantize with
 * qc_quant_dequantize, add the outliers and A·B, multiply in double.
 *
 * Tolerance: a reduction of K terms in f32 has a worst-case error of
 * γ_K·Σ|terms| (γ_K = K·u/(1 − K·u), u = 2^-24; Higham, Accuracy and
 * Stability, §3.1), but with rounding errors of random sign the error stays
 * below λ·√K·u·Σ|terms| except with probability ≤ 2·exp(−λ²/2) (Higham &
 * Mary 2019, Thm 3.1); with λ = 8 that is 1e-14 per output, and the bound is
 * tight enough that one wrong code (an error of |scale·x_c|) exceeds it even
 * on 1536-long rows, which the worst-case bound would not catch. The gemv
 * kernel sums scale·code·x and scale·zero·x separately, so the terms are
 * bounded by B = Σ_c (|s|·(code + zero) + |S_oc| + Σ_k |A_ok·B_kc|)·|x_c|;
 * K = in + rank + 16 covers the group and final combines; the low-rank part
 * is two chained reductions, hence a factor 2: tol = 2·8·√K·u·B. The
 * corrupted-code check at the end shows the comparison catches one).
 *
 * On hosts with AVX512-VNNI + VBMI, gemv of 2..8-bit codes in whole
 * 64-column groups quantizes x per 64-column tile to X·xs_t with
 * |x − X·xs_t| ≤ max|x_t| / 65024 and sums code·X exactly in integers
 * (codegen/cpu_ir.c), which adds at most Σ_c |w_c|·max|x| / 65024 (max over
 * the row of x: a bound for every tile's max; counted in tol). */
#include "../codegen/cpu_llvm.h"
#include "../codegen/pack.h"
#include "../compiler/hadamard.h"
#include "../compiler/dequant.h"
#include "../compiler/quant.h"
#include "../runtime/cpu_kernels.h"
#include "../runtime/linear.h"
#include "../runtime/pool.h"
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64, [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* aligned_alloc needs a size that is a multiple of the alignment. */
static void *alloc64(size_t n) {
    return aligned_alloc(64, (n + 63) / 64 * 64);
}

typedef struct tcase {
    int bits, group, sym, act_order, outliers, rank;
    int hadamard; /* 1: the kernels apply x ← H_in x / sqrt(in) first */
    int64_t out, in;
    qc_quant_state *q;
    int32_t *row_ptr, *col;
    uint16_t *val, *a, *b;
    int64_t nnz;
    qc_kernel_spec spec;
    uint8_t *packed;
    size_t packed_size;
} tcase;

static uint16_t rand_f16(double scale) {
    return qc_f32_to_f16((float)((urand() * 2 - 1) * scale));
}

/* Random codes, f16 scales, zeros, act-order grouping, outliers, low-rank. */
static void make_case(tcase *t) {
    qc_quant_format f = {t->bits, t->group, t->sym};
    qc_err err = {{0}};
    t->q = qc_quant_state_new(&f, t->out, t->in, &err);
    CHECK_FATAL(t->q);
    qc_quant_state *q = t->q;
    int maxq = (1 << t->bits) - 1;
    for (int64_t i = 0; i < t->out * t->in; i++)
        q->codes[i] = (uint8_t)(urand() * (maxq + 1));
    for (int64_t i = 0; i < t->out * q->n_groups; i++) {
        q->scales[i] = qc_f16_to_f32(qc_f32_to_f16((float)(0.001 + 0.05 * urand())));
        q->zeros[i] = t->sym ? (float)(1 << (t->bits - 1)) : (float)(int)(urand() * (maxq + 1));
    }
    if (t->act_order && t->group) { /* groups as GPTQ act-order leaves them */
        int32_t *perm = malloc((size_t)t->in * sizeof *perm);
        for (int64_t c = 0; c < t->in; c++)
            perm[c] = (int32_t)c;
        for (int64_t c = t->in - 1; c > 0; c--) {
            int64_t k = (int64_t)(urand() * (double)(c + 1));
            int32_t tmp = perm[c];
            perm[c] = perm[k], perm[k] = tmp;
        }
        for (int64_t p = 0; p < t->in; p++)
            q->g_idx[perm[p]] = (int32_t)(p / t->group);
        q->perm = perm;
    }
    if (t->outliers) {
        t->row_ptr = calloc((size_t)t->out + 1, sizeof *t->row_ptr);
        t->col = malloc((size_t)(t->out * 3 + 1) * sizeof *t->col);
        t->val = malloc((size_t)(t->out * 3 + 1) * sizeof *t->val);
        for (int64_t o = 0; o < t->out; o++) {
            int n = (int)(urand() * 4); /* 0..3 per row, some rows empty */
            for (int k = 0; k < n; k++) {
                t->col[t->nnz] = (int32_t)(urand() * (double)t->in);
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
    t->packed_size = qc_pack_size(&t->spec, t->nnz, &err);
    t->packed = alloc64(t->packed_size);
    int rc = qc_pack(&t->spec, q, t->outliers ? &sp : NULL, t->rank ? &lr : NULL, t->packed,
                     t->packed_size, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (t->hadamard) /* the kernels' spec; the packed layout is the same */
        t->spec.transform = QC_KTRANSFORM_HADAMARD, t->spec.transform_size = (int)t->in;
}

/* The x the weight multiplies: x itself, or with an online Hadamard H x /
 * sqrt(in) from the dense matrix in double (m rows). */
static float *effective_x(const tcase *t, const float *x, int64_t m) {
    float *xe = malloc((size_t)(m * t->in) * sizeof *xe);
    if (!t->hadamard) {
        memcpy(xe, x, (size_t)(m * t->in) * sizeof *xe);
        return xe;
    }
    qc_err err = {{0}};
    qc_hadamard *h = qc_hadamard_new((int)t->in, &err);
    float *H = malloc((size_t)(t->in * t->in) * sizeof *H);
    CHECK_FATAL(h && H && !qc_hadamard_dense(h, H, &err));
    for (int64_t i = 0; i < m; i++)
        for (int64_t r = 0; r < t->in; r++) {
            double acc = 0;
            for (int64_t c = 0; c < t->in; c++)
                acc += (double)H[r * t->in + c] * x[i * t->in + c];
            xe[i * t->in + r] = (float)(acc / sqrt((double)t->in));
        }
    free(H);
    qc_hadamard_free(h);
    return xe;
}

static void free_case(tcase *t) {
    qc_quant_state_free(t->q);
    free(t->row_ptr), free(t->col), free(t->val), free(t->a), free(t->b), free(t->packed);
}

static int vnni_host; /* the host kernels have the VNNI gemv (target features) */

static int vnni_gemv(const tcase *t) {
    return vnni_host && t->bits >= 2 && t->bits <= 8 && t->group % 64 == 0;
}

/* Reference Ŵ (double) and the per-entry magnitude bound used by tol. */
static void reference_w(const tcase *t, double *w, double *wabs) {
    int64_t n = t->out * t->in;
    float *deq = malloc((size_t)n * sizeof *deq);
    qc_quant_dequantize(t->q, deq);
    const qc_quant_state *q = t->q;
    for (int64_t o = 0; o < t->out; o++)
        for (int64_t c = 0; c < t->in; c++) {
            int64_t g = o * q->n_groups + q->g_idx[c];
            w[o * t->in + c] = deq[o * t->in + c];
            wabs[o * t->in + c] = q->scales[g] * (q->codes[o * t->in + c] + q->zeros[g]);
        }
    for (int64_t o = 0; o < t->out && t->outliers; o++)
        for (int32_t k = t->row_ptr[o]; k < t->row_ptr[o + 1]; k++) {
            double v = qc_f16_to_f32(t->val[k]);
            w[o * t->in + t->col[k]] += v;
            wabs[o * t->in + t->col[k]] += fabs(v);
        }
    for (int64_t o = 0; o < t->out && t->rank; o++)
        for (int64_t c = 0; c < t->in; c++)
            for (int k = 0; k < t->rank; k++) {
                double ab = (double)qc_f16_to_f32(t->a[o * t->rank + k]) *
                            qc_f16_to_f32(t->b[k * t->in + c]);
                w[o * t->in + c] += ab;
                wabs[o * t->in + c] += fabs(ab);
            }
    free(deq);
}

/* Compares y (m × out) with the reference; returns the number of misses. */
/* x0: the kernels' input when they apply an online Hadamard (else NULL),
 * x: the x the weights multiply (effective_x). The f32 transform (log2(m)
 * butterfly stages, then p terms; compiler/hadamard.h) errs by at most
 * γ_k·‖x0‖₁/√in per element with k = log2(in) + p (γ_k ≤ 1.01·k·u), adding
 * Σ_c |w_c| times that. */
static int compare(const tcase *t, const double *w, const double *wabs, const float *x0,
                   const float *x, int64_t m, const float *y, const char *what) {
    int vnni = !strcmp(what, "gemv") || !strcmp(what, "corrupt") ? vnni_gemv(t) : 0;
    double K = (double)(t->in + t->rank + 16), u = 0x1p-24, lambda = 8;
    int bad = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t o = 0; o < t->out; o++) {
            double ref = 0, bound = 0, wsum = 0, xmax = 0;
            for (int64_t c = 0; c < t->in; c++) {
                ref += w[o * t->in + c] * x[i * t->in + c];
                bound += wabs[o * t->in + c] * fabs(x[i * t->in + c]);
                wsum += fabs(w[o * t->in + c]);
                xmax = fmax(xmax, fabs(x[i * t->in + c]));
            }
            double htol = 0;
            if (x0) {
                double l1 = 0;
                for (int64_t c = 0; c < t->in; c++)
                    l1 += fabs(x0[i * t->in + c]);
                htol = wsum * 1.01 * (log2((double)t->in) + qc_hadamard_base_order((int)t->in)) *
                       u * l1 / sqrt((double)t->in);
            }
            double tol = 2 * lambda * sqrt(K) * u * bound + (vnni ? wsum * xmax / 65024 : 0) +
                         htol + 1e-30;
            double got = y[i * t->out + o];
            if (!(fabs(got - ref) <= tol)) {
                if (bad++ < 3)
                    fprintf(stderr,
                            "  %s m=%lld row %lld out %lld: got %.9g want %.9g (tol %.3g)\n", what,
                            (long long)m, (long long)i, (long long)o, got, ref, tol);
            }
        }
    return bad;
}

static void case_name(const tcase *t, char *buf, size_t n) {
    qc_kernel_spec_id(&t->spec, buf, n);
}

/* Runs both kernels of case t (functions from k) and checks them. */
static void check_case(const tcase *t, const qcrt_cpu_kernels *k) {
    char name[128];
    case_name(t, name, sizeof name);
    qc_err err = {{0}};
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    if (qcrt_cpu_kernels_find(k, &t->spec, &gemv, &gemm, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    int64_t n = t->out * t->in, mmax = 17;
    double *w = malloc((size_t)n * sizeof *w), *wabs = malloc((size_t)n * sizeof *wabs);
    reference_w(t, w, wabs);
    float *x = malloc((size_t)(mmax * t->in) * sizeof *x);
    float *y = malloc((size_t)(mmax * t->out) * sizeof *y);
    float *ws = alloc64((qc_kernel_ws_floats(&t->spec, mmax) + 16) * sizeof(float));
    for (int64_t i = 0; i < mmax * t->in; i++)
        x[i] = (float)(urand() * 2 - 1);
    for (int64_t o = 0; o < t->out; o++)
        y[o] = NAN;
    float *xe = effective_x(t, x, mmax), *x0 = t->hadamard ? x : NULL;
    gemv(t->packed, x, y, 0, t->out, ws);
    CHECK_MSG(compare(t, w, wabs, x0, xe, 1, y, "gemv") == 0, "%s: gemv", name);
    int64_t ms[3] = {1, 3, 17};
    for (int mi = 0; mi < 3; mi++) {
        for (int64_t o = 0; o < ms[mi] * t->out; o++)
            y[o] = NAN;
        gemm(t->packed, x, ms[mi], y, 0, t->out, ws);
        CHECK_MSG(compare(t, w, wabs, x0, xe, ms[mi], y, "gemm") == 0, "%s: gemm m=%lld", name,
                  (long long)ms[mi]);
    }
    free(xe);
    /* Row ranges: a sub-range writes exactly its rows. */
    if (t->out > 2) {
        for (int64_t o = 0; o < t->out; o++)
            y[o] = -7.0f;
        gemv(t->packed, x, y, 1, t->out - 1, ws);
        CHECK(y[0] == -7.0f && y[t->out - 1] == -7.0f && y[1] != -7.0f);
    }
    free(w), free(wabs), free(x), free(y), free(ws);
}

/* Thread counts 1, 2, 3 give bit-identical outputs through linear_cpu
 * (which runs the split gemv: x prepared once, rows in parts), equal to the
 * whole gemv. */
static void check_threads(const tcase *t, const qcrt_cpu_kernels *k) {
    qc_err err = {{0}};
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    qc_gemv_prep_fn prep;
    qc_gemv_rows_fn rows;
    CHECK_FATAL(!qcrt_cpu_kernels_find(k, &t->spec, &gemv, &gemm, &err));
    CHECK_FATAL(qcrt_cpu_kernels_find_split(k, &t->spec, &prep, &rows) == 0);
    int64_t m = 70; /* crosses the 64-row chunk */
    float *x = malloc((size_t)(m * t->in) * sizeof *x), *bias = malloc((size_t)t->out * 4);
    float *y[3];
    for (int64_t i = 0; i < m * t->in; i++)
        x[i] = (float)(urand() * 2 - 1);
    for (int64_t o = 0; o < t->out; o++)
        bias[o] = (float)o;
    for (int th = 1; th <= 3; th++) {
        qcrt_pool *pool = qcrt_pool_new(th, &err);
        CHECK_FATAL(pool);
        qcrt_linear *l =
            qcrt_linear_cpu_new(&t->spec, gemv, gemm, prep, rows, t->packed, t->packed_size, bias,
                                pool, &err);
        CHECK_FATAL(l);
        y[th - 1] = malloc((size_t)((m + 1) * t->out) * sizeof(float));
        l->forward(l, x, 1, y[th - 1]);
        l->forward(l, x, m, y[th - 1] + t->out);
        qcrt_linear_free(l);
        qcrt_pool_free(pool);
    }
    size_t bytes = (size_t)((m + 1) * t->out) * sizeof(float);
    CHECK_MSG(!memcmp(y[0], y[1], bytes) && !memcmp(y[0], y[2], bytes),
              "thread counts 1/2/3 differ");
    /* bias added: gemv row 0 equals kernel + bias */
    float *ws = alloc64((qc_kernel_ws_floats(&t->spec, 1) + 16) * sizeof(float));
    float *y1 = malloc((size_t)t->out * sizeof *y1);
    gemv(t->packed, x, y1, 0, t->out, ws);
    CHECK(y1[t->out - 1] + bias[t->out - 1] == y[0][t->out - 1]);
    for (int i = 0; i < 3; i++)
        free(y[i]);
    free(x), free(bias), free(ws), free(y1);
}

/* With the caller's MXCSR set to flush subnormals (DAZ/FTZ, as -ffast-math
 * programs do) the kernels compute the same result on normal inputs and
 * leave MXCSR as they found it. */
static void check_daz(const tcase *t, const qcrt_cpu_kernels *k) {
#if defined(__x86_64__)
    qc_err err = {{0}};
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    CHECK_FATAL(!qcrt_cpu_kernels_find(k, &t->spec, &gemv, &gemm, &err));
    float *x = malloc((size_t)t->in * sizeof *x), *y0 = malloc((size_t)t->out * sizeof *y0);
    float *y1 = malloc((size_t)t->out * sizeof *y1);
    float *ws = alloc64((qc_kernel_ws_floats(&t->spec, 1) + 16) * sizeof(float));
    for (int64_t i = 0; i < t->in; i++)
        x[i] = (float)(urand() * 2 - 1);
    gemv(t->packed, x, y0, 0, t->out, ws);
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
    gemv(t->packed, x, y1, 0, t->out, ws);
    unsigned after = _mm_getcsr();
    _mm_setcsr(csr);
    CHECK(after == (csr | 0x8040));
    CHECK(!memcmp(y0, y1, (size_t)t->out * sizeof *y0));
    free(x), free(y0), free(y1), free(ws);
#else
    (void)t, (void)k;
#endif
}

/* Objects for another target fail to load with a message. */
static void check_foreign(tcase *t) {
    qc_err err = {{0}};
    qc_cpu_object obj;
    int rc = qc_cpu_codegen(&t->spec, 1, "aarch64", &obj, &err);
    CHECK_MSG(rc == 0, "aarch64 codegen: %s", err.msg);
    if (rc) return;
    CHECK(strstr(obj.target, "triple=aarch64") != NULL);
    qcrt_cpu_kernels *k = qcrt_cpu_kernels_load(obj.so, obj.so_size, obj.target, &err);
#if defined(__x86_64__)
    CHECK(k == NULL);
    CHECK_MSG(strstr(err.msg, "aarch64") != NULL, "message: %s", err.msg);
    /* A forged x86 descriptor: the ELF header check still refuses. */
    err.msg[0] = 0;
    char host[512];
    CHECK_FATAL(!qc_cpu_target_describe("host", host, sizeof host, &err));
    k = qcrt_cpu_kernels_load(obj.so, obj.so_size, host, &err);
    CHECK(k == NULL);
    CHECK_MSG(strstr(err.msg, "ELF machine") != NULL, "message: %s", err.msg);
    /* Truncated bytes. */
    k = qcrt_cpu_kernels_load(obj.so, 40, host, &err);
    CHECK(k == NULL);
#endif
    qcrt_cpu_kernels_free(k);
    qc_cpu_object_free(&obj);
    /* Descriptors: malformed, unknown feature, missing feature. */
    CHECK(qcrt_cpu_target_check("cpu=x", &err) < 0 && strstr(err.msg, "malformed"));
#if defined(__x86_64__)
    CHECK(qcrt_cpu_target_check("triple=x86_64-linux;cpu=x;features=avx2,warp9", &err) < 0 &&
          strstr(err.msg, "warp9"));
    CHECK(qcrt_cpu_target_check("triple=x86_64-linux;cpu=x;features=", &err) == 0);
#endif
    /* Unknown target, unsupported transform. */
    CHECK(qc_cpu_codegen(&t->spec, 1, "sparc", &obj, &err) < 0 && strstr(err.msg, "sparc"));
    qc_kernel_spec h = t->spec;
    h.transform = QC_KTRANSFORM_HADAMARD;
    h.transform_size = 64;
    CHECK(qc_cpu_codegen(&h, 1, NULL, &obj, &err) < 0 && strstr(err.msg, "Hadamard"));
}

/* x86-64-v3 / v4 objects: run where the host has the features, otherwise
 * refused with the missing feature named. */
static void check_x86_levels(tcase *t) {
#if defined(__x86_64__)
    const char *levels[2] = {"x86-64-v3", "x86-64-v4"};
    for (int i = 0; i < 2; i++) {
        qc_err err = {{0}};
        qc_cpu_object obj;
        int rc = qc_cpu_codegen(&t->spec, 1, levels[i], &obj, &err);
        CHECK_MSG(rc == 0, "%s: %s", levels[i], err.msg);
        if (rc) continue;
        qc_err herr;
        int supported = qcrt_cpu_target_check(obj.target, &herr) == 0;
        qcrt_cpu_kernels *k = qcrt_cpu_kernels_load(obj.so, obj.so_size, obj.target, &err);
        if (supported) {
            CHECK_MSG(k != NULL, "%s: %s", levels[i], err.msg);
            if (k) check_case(t, k);
        } else {
            CHECK(k == NULL && strstr(err.msg, "lacks"));
            printf("%s: refused on this host as expected: %s\n", levels[i], err.msg);
        }
        qcrt_cpu_kernels_free(k);
        qc_cpu_object_free(&obj);
    }
#else
    (void)t;
#endif
}

static void check_corrupt(tcase *t, const qcrt_cpu_kernels *k) {
    qc_err err = {{0}};
    qc_pack_layout l;
    CHECK_FATAL(!qc_pack_layout_get(&t->spec, t->nnz, &l, &err));
    t->packed[l.codes + 5] ^= 0x10; /* one bit of one code in row 0 */
    double *w = malloc((size_t)(t->out * t->in) * sizeof *w);
    double *wabs = malloc((size_t)(t->out * t->in) * sizeof *wabs);
    reference_w(t, w, wabs);
    float *x = malloc((size_t)t->in * sizeof *x), *y = malloc((size_t)t->out * sizeof *y);
    float *ws = alloc64((qc_kernel_ws_floats(&t->spec, 1) + 16) * sizeof(float));
    for (int64_t i = 0; i < t->in; i++)
        x[i] = (float)(urand() + 0.5);
    qc_gemv_fn gemv;
    qc_gemm_fn gemm;
    CHECK_FATAL(!qcrt_cpu_kernels_find(k, &t->spec, &gemv, &gemm, &err));
    gemv(t->packed, x, y, 0, t->out, ws);
    fprintf(stderr, "expected mismatch (corrupted code):\n");
    CHECK(compare(t, w, wabs, NULL, x, 1, y, "corrupt") > 0);
    t->packed[l.codes + 5] ^= 0x10;
    free(w), free(wabs), free(x), free(y), free(ws);
}

int main(void) {
    if (!qc_cpu_codegen_available()) {
        printf("skip: quantc was built without LLVM (CPU codegen unavailable)\n");
        return 77;
    }
    enum { NC = 64 + 16 };
    static tcase cs[NC];
    int n = 0;
    const int64_t shapes[4][2] = {{7, 33}, {100, 96}, {13, 200}, {5, 130}};
    const int groups[4] = {32, 64, 128, 0};
    int idx = 0;
    for (int bits = 2; bits <= 8; bits++)
        for (int gi = 0; gi < 4; gi++)
            for (int sym = 0; sym < 2; sym++, idx++) {
                tcase *t = &cs[n++];
                t->bits = bits, t->group = groups[gi], t->sym = sym;
                t->out = shapes[idx % 4][0], t->in = shapes[idx % 4][1];
                t->act_order = idx % 2, t->outliers = idx % 3 == 0, t->rank = idx % 4 == 1 ? 3 : 0;
            }
    /* Online Hadamards: pure Sylvester (64), Paley bases 12 (96 = 12·8, 1536
     * = 12·128) and 36 (576 = 36·16), with act-order, outliers, low-rank. */
    cs[n++] = (tcase){.bits = 4, .group = 64, .sym = 1, .out = 10, .in = 64, .hadamard = 1};
    cs[n++] = (tcase){.bits = 3, .group = 32, .sym = 0, .out = 7, .in = 96, .act_order = 1,
                      .outliers = 1, .hadamard = 1};
    cs[n++] = (tcase){.bits = 4, .group = 128, .sym = 0, .out = 70, .in = 576, .act_order = 1,
                      .rank = 4, .hadamard = 1};
    cs[n++] = (tcase){.bits = 4, .group = 128, .sym = 0, .out = 100, .in = 1536, .act_order = 1,
                      .outliers = 1, .hadamard = 1};
    int nh = n;
    /* 1×1, ragged groups on a long row, the demo model's shapes. */
    cs[n++] = (tcase){.bits = 4, .group = 0, .sym = 0, .out = 1, .in = 1, .outliers = 1};
    cs[n++] = (tcase){.bits = 3, .group = 32, .sym = 1, .out = 1, .in = 1, .rank = 1};
    cs[n++] = (tcase){.bits = 5, .group = 64, .sym = 0, .out = 9, .in = 1000, .act_order = 1};
    cs[n++] = (tcase){.bits = 4,
                      .group = 128,
                      .sym = 0,
                      .out = 576,
                      .in = 1536,
                      .act_order = 1,
                      .outliers = 1,
                      .rank = 8};
    cs[n++] = (tcase){.bits = 3, .group = 128, .sym = 1, .out = 576, .in = 1536};
    cs[n++] = (tcase){.bits = 4, .group = 32, .sym = 1, .out = 64, .in = 576};
    cs[n++] = (tcase){.bits = 8, .group = 0, .sym = 0, .out = 33, .in = 577, .outliers = 1};
    for (int i = 0; i < n; i++)
        make_case(&cs[i]);

    qc_kernel_spec *specs = malloc((size_t)n * sizeof *specs);
    for (int i = 0; i < n; i++)
        specs[i] = cs[i].spec;
    qc_err err = {{0}};
    qc_cpu_object obj;
    int rc = qc_cpu_codegen(specs, n, "host", &obj, &err);
    CHECK_MSG(rc == 0, "codegen: %s", err.msg);
    if (rc) TEST_END();
    printf("codegen: %d kernels for %d specs, IR %.2f s, O3 %.2f s, emit %.2f s, link %.2f s, "
           "%zu bytes; target %s\n",
           obj.n_kernels, obj.n_specs, obj.ir_seconds, obj.opt_seconds, obj.emit_seconds,
           obj.link_seconds, obj.so_size, obj.target);
    CHECK(!strcmp(obj.symbols[2 * (n - 1) + 1], "qck_i8ca_o33_i577_s_gemm"));
    vnni_host = strstr(obj.target, "avx512vnni") && strstr(obj.target, "avx512vbmi");
    printf("gemv of 2..8-bit codes in 64-column groups: %s\n",
           vnni_host ? "AVX512-VNNI, x in 16-bit fixed point per tile" : "f32 FMA");
    qcrt_cpu_kernels *k = qcrt_cpu_kernels_load(obj.so, obj.so_size, obj.target, &err);
    CHECK_MSG(k != NULL, "load: %s", err.msg);
    if (!k) TEST_END();
    for (int i = 0; i < n; i++)
        check_case(&cs[i], k);
    check_threads(&cs[n - 4], k); /* 576 × 1536, act-order, outliers, low-rank */
    check_threads(&cs[1], k);
    check_threads(&cs[nh - 1], k); /* online Hadamard through linear_cpu */
    check_daz(&cs[n - 4], k);
    check_daz(&cs[5], k);

    /* A kernel reading one corrupted code is caught by the tolerance, on a
     * short row and on a 1536-long 3-bit row. */
    check_corrupt(&cs[1], k);
    check_corrupt(&cs[n - 3], k);
    /* Missing kernel. */
    qc_kernel_spec other = cs[0].spec;
    other.out += 1;
    qc_gemv_fn gv;
    qc_gemm_fn gm;
    CHECK(qcrt_cpu_kernels_find(k, &other, &gv, &gm, &err) < 0 && strstr(err.msg, "no kernel"));
    qcrt_cpu_kernels_free(k);
    qc_cpu_object_free(&obj);

    check_foreign(&cs[3]);
    check_x86_levels(&cs[n - 2]);
    for (int i = 0; i < n; i++)
        free_case(&cs[i]);
    free(specs);
    TEST_END();
}
