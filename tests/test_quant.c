/* Quantizer tests (compiler/quant.h): formats, clip search, RTN, GPTQ.
 *
 * Extra modes used by tests/test_gptq.py and for measurements:
 *   test_quant --run METHOD ROWS COLS W.f32 H.f64 OUT BITS GROUP SYM ACT_ORDER STATIC CLIP BLOCK
 *              [MASK.u8]
 *       METHOD rtn|gptq; MASK (rows×cols, nonzero = sparse outlier) keeps weights out of the
 *       dense codes; writes OUT.deq (f32 rows×cols) and OUT.codes (u8), and fails when
 *       qc_quant_dequantize disagrees with the quantizer's own Ŵ
 *   test_quant --bench ROWS COLS   times GPTQ w4 g128 act-order on a random problem */
#include "compiler/dequant.h"
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "tests/check.h"
#include "tests/quant_problem.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static const qc_clip_search no_clip = {0, 1.0f, 1};
static const qc_clip_search clip20 = {1, 0.75f, 20};

static void test_roundtrip(void) {
    const int64_t rows = 7, cols = 200; /* 200 = ragged for groups 32, 64, 128 */
    float w[7 * 200], deq[7 * 200], deq2[7 * 200];
    fill_normal(w, rows * cols, 0.05);
    w[3] = 0.4f; /* an outlier */
    int groups[] = {32, 64, 128, 0};
    for (int bits = 2; bits <= 8; bits++)
        for (int sym = 0; sym < 2; sym++)
            for (int gi = 0; gi < 4; gi++) {
                qc_quant_format f = {bits, groups[gi], sym};
                qc_err err;
                qc_quant_state *q = qc_quant_state_new(&f, rows, cols, &err);
                CHECK_FATAL(q);
                int64_t gs = f.group_size ? f.group_size : cols;
                CHECK(q->n_groups == (cols + gs - 1) / gs);
                CHECK(qc_quant_rtn(w, NULL, &no_clip, q, deq, &err) == 0);
                qc_quant_dequantize(q, deq2);
                CHECK(memcmp(deq, deq2, sizeof deq) == 0);
                int bad = 0, out_of_range = 0;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++) {
                        int64_t g = r * q->n_groups + c / gs;
                        float s = q->scales[g], z = q->zeros[g];
                        /* s/2 from rounding, plus the f16 rounding of the
                         * scale (relative 2^-11) over the whole code range. */
                        double tol = s / 2 + s * ((1 << bits) - 1) * 0x1p-11 + 1e-7;
                        if (fabs(deq[r * cols + c] - w[r * cols + c]) > tol) bad++;
                        if (q->codes[r * cols + c] > (1 << bits) - 1) out_of_range++;
                        if (z < 0 || z > (1 << bits) - 1 || z != floorf(z)) out_of_range++;
                        if (sym && z != (float)(1 << (bits - 1))) out_of_range++;
                        if (qc_f16_to_f32(qc_f32_to_f16(s)) != s || !(s > 0)) out_of_range++;
                    }
                CHECK_MSG(bad == 0, "bits %d sym %d group %d: %d elements off by > s/2", bits, sym,
                          f.group_size, bad);
                CHECK_MSG(out_of_range == 0, "bits %d sym %d group %d: codes/zeros/scales bad",
                          bits, sym, f.group_size);
                double want = (double)rows * cols * bits + (double)rows * q->n_groups * 16 +
                              (sym ? 0 : (double)rows * q->n_groups * bits);
                CHECK(qc_quant_storage_bits(q) == want);
                qc_quant_state_free(q);
            }
}

/* Zero weights dequantize to exactly zero; an all-zero group keeps a positive scale. */
static void test_zeros(void) {
    float w[64] = {0}, deq[64];
    w[40] = 1.0f;
    w[41] = -0.5f;
    for (int sym = 0; sym < 2; sym++) {
        qc_quant_format f = {4, 32, sym};
        qc_err err;
        qc_quant_state *q = qc_quant_state_new(&f, 1, 64, &err);
        CHECK(qc_quant_rtn(w, NULL, &clip20, q, deq, &err) == 0);
        for (int c = 0; c < 64; c++)
            if (w[c] == 0) CHECK(deq[c] == 0);
        CHECK(q->scales[0] > 0);
        qc_quant_state_free(q);
    }
}

static double weighted_err(const qc_quant_format *f, const float *w, const float *d, int n, float s,
                           float z) {
    double e = 0;
    for (int j = 0; j < n; j++) {
        double r = w[j] - qc_quant_value(qc_quant_code(w[j], s, z, f->bits), s, z);
        e += d[j] * r * r;
    }
    return e;
}

static void test_clip_search(void) {
    float w[128], d[128];
    int better = 0;
    for (int trial = 0; trial < 200; trial++) {
        fill_normal(w, 128, 1);
        w[trial % 128] *= 6; /* outliers make clipping pay */
        for (int j = 0; j < 128; j++)
            d[j] = (float)(urand() * 2 + 0.01);
        qc_quant_format f = {2 + trial % 4, 128, trial % 2};
        float s0, z0, s1, z1;
        qc_quant_fit_group(&f, &no_clip, w, d, 128, &s0, &z0);
        qc_quant_fit_group(&f, &clip20, w, d, 128, &s1, &z1);
        double e0 = weighted_err(&f, w, d, 128, s0, z0), e1 = weighted_err(&f, w, d, 128, s1, z1);
        CHECK_MSG(e1 <= e0, "trial %d: clip search error %g > plain %g", trial, e1, e0);
        better += e1 < e0;
    }
    CHECK_MSG(better > 100, "clip search helped only %d of 200 groups", better);
}

/* RTN against a direct reading of the conventions in quant.c. */
static void test_rtn_reference(void) {
    const int64_t rows = 5, cols = 100, gs = 32;
    float w[5 * 100], deq[5 * 100];
    fill_normal(w, rows * cols, 0.02);
    for (int sym = 0; sym < 2; sym++) {
        qc_quant_format f = {3, (int)gs, sym};
        qc_err err;
        qc_quant_state *q = qc_quant_state_new(&f, rows, cols, &err);
        CHECK(qc_quant_rtn(w, NULL, &no_clip, q, deq, &err) == 0);
        int mism = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c0 = 0; c0 < cols; c0 += gs) {
                int64_t n = cols - c0 < gs ? cols - c0 : gs;
                float lo = 0, hi = 0;
                for (int64_t j = 0; j < n; j++) {
                    lo = fminf(lo, w[r * cols + c0 + j]);
                    hi = fmaxf(hi, w[r * cols + c0 + j]);
                }
                float s, z;
                if (sym) {
                    s = qc_f16_to_f32(qc_f32_to_f16(2 * fmaxf(-lo, hi) / 7));
                    z = 4;
                } else {
                    s = qc_f16_to_f32(qc_f32_to_f16((hi - lo) / 7));
                    z = fminf(7, fmaxf(0, floorf(-lo / s + 0.5f)));
                }
                for (int64_t j = 0; j < n; j++) {
                    float x = fminf(7, fmaxf(0, w[r * cols + c0 + j] / s + z));
                    float want = s * (floorf(x + 0.5f) - z);
                    mism += deq[r * cols + c0 + j] != want;
                }
            }
        CHECK_MSG(mism == 0, "sym %d: %d RTN values differ from the reference", sym, mism);
        qc_quant_state_free(q);
    }
}

typedef struct problem {
    int64_t n, rows, cols;
    float *x, *w;
    double *h;
} problem;

static problem make_problem(int64_t n, int64_t rows, int64_t cols) {
    problem p = {n, rows, cols, correlated_x(n, cols), malloc(sizeof(float) * rows * cols), NULL};
    fill_normal(p.w, rows * cols, 0.05);
    p.h = gram(p.x, n, cols);
    return p;
}

static void free_problem(problem *p) {
    free(p->x);
    free(p->w);
    free(p->h);
}

/* Runs GPTQ (copying H) and returns the relative output error. */
static double run_gptq(const problem *p, qc_quant_format f, qc_gptq_opts o, qc_quant_state **qout,
                       float *deq) {
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, p->rows, p->cols, &err);
    double *h = malloc(sizeof(double) * p->cols * p->cols);
    memcpy(h, p->h, sizeof(double) * p->cols * p->cols);
    int rc = qc_quant_gptq(p->w, h, &o, q, deq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    free(h);
    double e = out_err(p->x, p->n, p->cols, p->w, deq, p->rows);
    if (qout)
        *qout = q;
    else
        qc_quant_state_free(q);
    return e;
}

static double run_rtn(const problem *p, qc_quant_format f, float *deq) {
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, p->rows, p->cols, &err);
    double *diag = malloc(sizeof(double) * p->cols);
    for (int64_t c = 0; c < p->cols; c++)
        diag[c] = p->h[c * p->cols + c];
    CHECK(qc_quant_rtn(p->w, diag, &clip20, q, deq, &err) == 0);
    free(diag);
    qc_quant_state_free(q);
    return out_err(p->x, p->n, p->cols, p->w, deq, p->rows);
}

static void test_gptq_beats_rtn(void) {
    problem p = make_problem(512, 48, 64);
    float *deq = malloc(sizeof(float) * 48 * 64);
    int bits[] = {3, 4}, groups[] = {32, 0};
    for (int bi = 0; bi < 2; bi++)
        for (int gi = 0; gi < 2; gi++)
            for (int sym = 0; sym < 2; sym++)
                for (int ao = 0; ao < 2; ao++) {
                    qc_quant_format f = {bits[bi], groups[gi], sym};
                    qc_gptq_opts o = {0.01, 16, ao, 0, clip20, NULL};
                    double eg = run_gptq(&p, f, o, NULL, deq), er = run_rtn(&p, f, deq);
                    printf("w%d g%-2d sym %d act %d: rel. output error RTN %.4g GPTQ %.4g\n",
                           f.bits, f.group_size, sym, ao, er, eg);
                    CHECK_MSG(eg < 0.8 * er,
                              "w%d g%d sym %d act %d: GPTQ output error %.4g not below RTN %.4g",
                              f.bits, f.group_size, sym, ao, eg, er);
                }
    free(deq);
    free_problem(&p);
}

static void test_act_order(void) {
    problem p = make_problem(256, 16, 96);
    float *deq = malloc(sizeof(float) * 16 * 96), *deq2 = malloc(sizeof(float) * 16 * 96);
    qc_quant_state *q;
    qc_quant_format f = {4, 32, 0};
    qc_gptq_opts o = {0.01, 20, 1, 0, clip20, NULL}; /* block 20: groups straddle blocks */
    run_gptq(&p, f, o, &q, deq);
    CHECK_FATAL(q->perm);
    int seen[96] = {0}, bad = 0;
    for (int i = 0; i < 96; i++) {
        int c = q->perm[i];
        CHECK_FATAL(c >= 0 && c < 96);
        seen[c]++;
        if (q->g_idx[c] != i / 32) bad++;
        if (i && p.h[c * 96 + c] > p.h[q->perm[i - 1] * 97]) bad++;
    }
    for (int c = 0; c < 96; c++)
        CHECK(seen[c] == 1);
    CHECK_MSG(bad == 0, "%d g_idx/order mismatches", bad);
    qc_quant_dequantize(q, deq2);
    CHECK(memcmp(deq, deq2, sizeof(float) * 16 * 96) == 0);
    CHECK(qc_quant_storage_bits(q) == 16.0 * 96 * 4 + 16.0 * 3 * 20 + 32.0 * 96);
    qc_quant_state_free(q);

    /* static groups: fixed grouping, g_idx trivial, no g_idx storage */
    o.static_groups = 1;
    run_gptq(&p, f, o, &q, deq);
    for (int c = 0; c < 96; c++)
        CHECK(q->g_idx[c] == c / 32);
    qc_quant_dequantize(q, deq2);
    CHECK(memcmp(deq, deq2, sizeof(float) * 16 * 96) == 0);
    CHECK(qc_quant_storage_bits(q) == 16.0 * 96 * 4 + 16.0 * 3 * 20);
    qc_quant_state_free(q);
    free(deq);
    free(deq2);
    free_problem(&p);
}

/* The lazy-batch block width is an implementation detail: results agree up
 * to rounding (a few codes may flip where f64 summation order differs). */
static void test_block_invariance(void) {
    problem p = make_problem(256, 32, 100);
    float *d1 = malloc(sizeof(float) * 3200), *d2 = malloc(sizeof(float) * 3200);
    qc_quant_format f = {3, 32, 0};
    int blocks[] = {7, 32, 128};
    qc_gptq_opts o = {0.01, 1, 1, 0, clip20, NULL};
    run_gptq(&p, f, o, NULL, d1);
    for (int b = 0; b < 3; b++) {
        o.block = blocks[b];
        run_gptq(&p, f, o, NULL, d2);
        int diff = 0;
        for (int i = 0; i < 3200; i++)
            diff += d1[i] != d2[i];
        CHECK_MSG(diff <= 16, "block %d: %d of 3200 values differ from block 1", blocks[b], diff);
    }
    free(d1);
    free(d2);
    free_problem(&p);
}

static void test_singular_and_bad(void) {
    problem p = make_problem(128, 8, 40);
    /* input 5 never fires, input 9 duplicates input 8: H singular twice over */
    for (int64_t i = 0; i < p.n; i++) {
        p.x[i * 40 + 5] = 0;
        p.x[i * 40 + 9] = p.x[i * 40 + 8];
    }
    free(p.h);
    p.h = gram(p.x, p.n, 40);
    float deq[8 * 40];
    qc_quant_format f = {4, 0, 1};
    qc_gptq_opts o = {0.01, 16, 1, 0, clip20, NULL};
    double e = run_gptq(&p, f, o, NULL, deq);
    CHECK(isfinite(e) && e < 0.05);
    for (int r = 0; r < 8; r++)
        CHECK(deq[r * 40 + 5] == 0); /* dead input: weight 0 */

    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, 8, 40, &err);
    double *h = malloc(sizeof(double) * 1600);
    memcpy(h, p.h, sizeof(double) * 1600);
    /* Duplicate columns: singular without dampening. GPTQ raises damp
     * (0 -> 1e-4) and says so instead of failing. An exactly singular H
     * may factor with a tiny positive pivot or not, depending on the BLAS
     * kernel's rounding (it did on an AMD host's OpenBLAS): H_99 a hair
     * below H_88 = H_89 makes it indefinite by 1e-9 relative, far above
     * rounding (~1e-14) and far below damp 1e-4. */
    h[9 * 40 + 9] *= 1 - 1e-9;
    qc_gptq_info info = {0};
    o.damp = 0;
    o.info = &info;
    CHECK(qc_quant_gptq(p.w, h, &o, q, deq, &err) == 0);
    CHECK_MSG(info.damp_retries >= 1 && info.damp_used >= 1e-4 && info.dead_inputs == 1,
              "retries %d damp %g dead %lld", info.damp_retries, info.damp_used,
              (long long)info.dead_inputs);
    /* Not a Gram matrix at all (|H_89| > H_88, H_99): no dampening up to 1
     * makes it positive definite -- a clear error, not a wrong model. */
    memcpy(h, p.h, sizeof(double) * 1600);
    h[8 * 40 + 9] = h[9 * 40 + 8] = 10 * (h[8 * 40 + 8] + h[9 * 40 + 9]);
    CHECK(qc_quant_gptq(p.w, h, &o, q, deq, &err) == -1);
    CHECK_MSG(strstr(err.msg, "positive definite") && strstr(err.msg, "damp 1"), "%s", err.msg);
    o.info = NULL;

    o.damp = 0.01;
    memcpy(h, p.h, sizeof(double) * 1600);
    h[3 * 40 + 7] = NAN;
    CHECK(qc_quant_gptq(p.w, h, &o, q, deq, &err) == -1);
    CHECK_MSG(strstr(err.msg, "Hessian") && strstr(err.msg, "non-finite"), "%s", err.msg);

    memcpy(h, p.h, sizeof(double) * 1600);
    p.w[2 * 40 + 11] = INFINITY;
    CHECK(qc_quant_gptq(p.w, h, &o, q, deq, &err) == -1);
    CHECK_MSG(strstr(err.msg, "row 2, column 11"), "%s", err.msg);
    CHECK(qc_quant_rtn(p.w, NULL, &clip20, q, deq, &err) == -1);
    CHECK_MSG(strstr(err.msg, "non-finite"), "%s", err.msg);
    qc_quant_state_free(q);
    free(h);

    qc_quant_format bad = {9, 32, 0};
    CHECK(qc_quant_state_new(&bad, 4, 40, &err) == NULL && strstr(err.msg, "bits"));
    bad.bits = 1;
    CHECK(qc_quant_format_check(&bad, 40, &err) == -1);
    bad.bits = 4;
    bad.group_size = -1;
    CHECK(qc_quant_format_check(&bad, 40, &err) == -1);
    free_problem(&p);
}

extern const qc_pass qc_pass_quantize;

/* Parameters of the quantize pass at their schema defaults. */
static qc_params default_params(qc_param_value *v) {
    int n = 0;
    for (const qc_param_spec *sp = qc_pass_quantize.params; sp->name; sp++, n++) {
        memset(&v[n], 0, sizeof v[n]);
        v[n].spec = sp;
        if (sp->type == QC_PARAM_INT) v[n].i = atoll(sp->def);
        if (sp->type == QC_PARAM_FLOAT) v[n].f = atof(sp->def);
        if (sp->type == QC_PARAM_BOOL) v[n].i = strcmp(sp->def, "true") == 0;
        if (sp->type == QC_PARAM_STRING) v[n].s = (char *)sp->def;
    }
    return (qc_params){v, n};
}

static qc_param_value *param(qc_params *p, const char *name) {
    return (qc_param_value *)qc_params_get(p, name);
}

static void test_pass(void) {
    qc_err err;
    CHECK_MSG(qc_pass_check_schema(&qc_pass_quantize, &err) == 0, "%s", err.msg);
    qc_param_value v[32];
    qc_params p = default_params(v);
    CHECK(strcmp(qc_params_str(&p, "method"), "gptq") == 0 && qc_params_int(&p, "bits") == 4);
    problem pr = make_problem(256, 24, 64);
    double *h0 = malloc(sizeof(double) * 64 * 64);
    memcpy(h0, pr.h, sizeof(double) * 64 * 64);
    qc_calib_linear ls[2] = {
        {.name = "model.layers.0.mlp.gate_proj.weight",
         .kind = "gate_proj",
         .rows = 24,
         .cols = 64,
         .w = pr.w,
         .H = pr.h,
         .n_tokens = 256,
         .targeted = 1},
        {.name = "model.layers.0.mlp.up_proj.weight",
         .kind = "up_proj",
         .rows = 24,
         .cols = 64,
         .w = pr.w,
         .H = pr.h,
         .n_tokens = 256},
    };
    qc_calib_block b = {.index = 0, .n_linears = 2, .linears = ls};
    qc_pass_ctx ctx = {.quiet = 1};
    param(&p, "group_size")->i = 32;
    CHECK_MSG(qc_pass_quantize.run_block(&ctx, &p, &b, &err) == 0, "%s", err.msg);
    CHECK(ls[0].q && ls[0].deq && ls[0].q->perm && ls[0].seconds > 0);
    CHECK(!ls[1].q && !ls[1].deq);
    CHECK(memcmp(h0, pr.h, sizeof(double) * 64 * 64) == 0); /* shared H untouched */
    double eg = out_err(pr.x, 256, 64, pr.w, ls[0].deq, 24);

    /* a second run replaces the first (no leak under ASan) */
    param(&p, "method")->s = "rtn";
    param(&p, "bits")->i = 3;
    CHECK_MSG(qc_pass_quantize.run_block(&ctx, &p, &b, &err) == 0, "%s", err.msg);
    CHECK(ls[0].q && ls[0].q->fmt.bits == 3 && !ls[0].q->perm);
    CHECK(out_err(pr.x, 256, 64, pr.w, ls[0].deq, 24) > eg);

    param(&p, "group_size")->i = 4;
    CHECK(qc_pass_quantize.run_block(&ctx, &p, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "up_proj") == NULL && strstr(err.msg, "gate_proj") &&
                  strstr(err.msg, "group_size"),
              "%s", err.msg);
    CHECK(ls[0].q == NULL && ls[0].deq == NULL); /* failed run leaves no stale result */
    qc_quant_state_free(ls[0].q);
    free(ls[0].deq);
    free(h0);
    free_problem(&pr);
}

static int run_mode(char **a) {
    int gptq = strcmp(a[0], "gptq") == 0;
    int64_t rows = atoll(a[1]), cols = atoll(a[2]);
    qc_quant_format f = {atoi(a[6]), atoi(a[7]), atoi(a[8])};
    qc_gptq_opts o = {0.01, atoi(a[12]), atoi(a[9]), atoi(a[10]), {atoi(a[11]), 0.75f, 20}, NULL};
    float *w = malloc(sizeof(float) * rows * cols), *deq = malloc(sizeof(float) * rows * cols);
    double *h = malloc(sizeof(double) * cols * cols), *diag = malloc(sizeof(double) * cols);
    if (read_file(a[3], w, sizeof(float) * rows * cols) ||
        read_file(a[4], h, sizeof(double) * cols * cols)) {
        fprintf(stderr, "cannot read %s or %s\n", a[3], a[4]);
        return 1;
    }
    for (int64_t c = 0; c < cols; c++)
        diag[c] = h[c * cols + c];
    uint8_t *mask = a[13] ? malloc((size_t)(rows * cols)) : NULL;
    if (mask && read_file(a[13], mask, (size_t)(rows * cols))) {
        fprintf(stderr, "cannot read %s\n", a[13]);
        return 1;
    }
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, rows, cols, &err);
    if (!q || (mask && qc_quant_set_outliers(q, mask, w, &err)) ||
        (gptq ? qc_quant_gptq(w, h, &o, q, deq, &err)
              : qc_quant_rtn(w, diag, &o.clip, q, deq, &err))) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    float *deq2 = malloc(sizeof(float) * rows * cols);
    qc_quant_dequantize(q, deq2);
    if (memcmp(deq, deq2, sizeof(float) * rows * cols)) {
        fprintf(stderr, "qc_quant_dequantize differs from the quantizer's output\n");
        return 1;
    }
    free(deq2);
    free(mask);
    int rc = write_file(a[5], ".deq", deq, sizeof(float) * rows * cols) ||
             write_file(a[5], ".codes", q->codes, (size_t)(rows * cols));
    qc_quant_state_free(q);
    free(w);
    free(deq);
    free(h);
    free(diag);
    return rc ? 1 : 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int bench_mode(int64_t rows, int64_t cols) {
    int64_t n = 2 * cols;
    float *x = correlated_x(n, cols), *w = malloc(sizeof(float) * rows * cols);
    float *deq = malloc(sizeof(float) * rows * cols);
    fill_normal(w, rows * cols, 0.02);
    double *xd = malloc(sizeof(double) * n * cols), *h = malloc(sizeof(double) * cols * cols);
    for (int64_t i = 0; i < n * cols; i++)
        xd[i] = x[i];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)n, 1, xd, (int)cols, 0, h,
                (int)cols);
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = 0; b < a; b++)
            h[a * cols + b] = h[b * cols + a];
    qc_quant_format f = {4, 128, 0};
    qc_gptq_opts o = {0.01, 128, 1, 0, clip20, NULL};
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, rows, cols, &err);
    double t0 = now();
    int rc = qc_quant_gptq(w, h, &o, q, deq, &err);
    double t1 = now();
    if (rc) fprintf(stderr, "error: %s\n", err.msg);
    printf("gptq w4 g128 act-order clip %lld x %lld: %.3f s\n", (long long)rows, (long long)cols,
           t1 - t0);
    qc_quant_state_free(q);
    free(x);
    free(w);
    free(deq);
    free(xd);
    free(h);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--run") == 0) {
        if (argc != 15 && argc != 16) {
            fprintf(stderr, "usage: test_quant --run METHOD ROWS COLS W H OUT BITS GROUP SYM "
                            "ACT_ORDER STATIC CLIP BLOCK [MASK]\n");
            return 2;
        }
        return run_mode(argv + 2);
    }
    if (argc == 4 && strcmp(argv[1], "--bench") == 0)
        return bench_mode(atoll(argv[2]), atoll(argv[3]));
    test_roundtrip();
    test_zeros();
    test_clip_search();
    test_rtn_reference();
    test_gptq_beats_rtn();
    test_act_order();
    test_block_invariance();
    test_singular_and_bad();
    test_pass();
    TEST_END();
}
