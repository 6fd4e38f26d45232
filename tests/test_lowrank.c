/* Low-rank compensation: the factors (compiler/lowrank.h), the `lowrank`
 * pass (passes/lowrank.c) on quantized linears, and its recipe. The
 * optimality of EoRA and SVD factors is checked against numpy in
 * tests/test_lowrank.py, through:
 *   test_lowrank --run ROWS COLS W.f32 H.f64 METHOD RANK BITS OUT
 *       RTN-quantizes W (BITS, groups of 32), runs the pass (H = XᵀX/N) and
 *       writes OUT.deq0 (Ŵ before, f32 rows×cols), OUT.deq (after), OUT.a
 *       (f32 rows×rank) and OUT.b (f32 rank×cols), the f16 factors widened */
#include "compiler/dequant.h"
#include "compiler/lowrank.h"
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "tests/check.h"
#include "tests/quant_problem.h"

#include <string.h>

extern const qc_pass qc_pass_lowrank, qc_pass_quantize;

static qc_recipe *recipe(const char *passes_yaml, qc_err *err) {
    char text[1024];
    snprintf(text, sizeof text, "quantc: 1\ncalibration: { text: c.txt }\npasses:\n%s",
             passes_yaml);
    return qc_recipe_parse(text, strlen(text), "t.yaml", NULL, err);
}

/* H = XᵀX/N of correlated inputs (d × d). */
static double *mean_gram(int64_t n, int64_t d) {
    float *x = correlated_x(n, d);
    double *h = gram(x, n, d);
    for (int64_t i = 0; i < d * d; i++)
        h[i] /= (double)n;
    free(x);
    return h;
}

static void test_hsqrt(void) {
    enum { D = 40 };
    qc_err err;
    double *h = mean_gram(200, D), S[D * D], SS[D * D];
    CHECK_MSG(qc_lowrank_hsqrt(h, D, S, &err) == 0, "%s", err.msg);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, D, D, 1, S, D, S, D, 0, SS, D);
    double md = 0, mh = 0;
    for (int i = 0; i < D * D; i++)
        md = fmax(md, fabs(SS[i] - h[i])), mh = fmax(mh, fabs(h[i]));
    CHECK_MSG(md < 1e-12 * mh, "|SSᵀ − H| %g of %g", md, mh); /* f64 eigensolver: ~1e-15 */
    h[3] = INFINITY;
    CHECK(qc_lowrank_hsqrt(h, D, S, &err) == -1 && strstr(err.msg, "non-finite"));
    free(h);
}

/* E H-error and Frobenius error of A·B (f32 factors) against E. */
static void residual_errs(const double *E, const float *A, const float *B, int64_t rows,
                          int64_t cols, int r, const double *h, double *eh, double *ef) {
    double *R = malloc(sizeof(double) * rows * cols);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++) {
            double s = 0;
            for (int k = 0; k < r; k++)
                s += (double)A[i * r + k] * B[k * cols + c];
            R[i * cols + c] = E[i * cols + c] - s;
        }
    *eh = qc_lowrank_err(R, rows, cols, h);
    *ef = qc_lowrank_err(R, rows, cols, NULL);
    free(R);
}

static void test_fit(void) {
    enum { R = 48, C = 64, K = 6 };
    qc_err err;
    double *h = mean_gram(400, C), *S = malloc(sizeof(double) * C * C), E[R * C], opt_e, opt_s;
    float e32[R * C], Ae[R * K], Be[K * C], As[R * K], Bs[K * C];
    fill_normal(e32, R * C, 0.01);
    for (int i = 0; i < R * C; i++)
        E[i] = e32[i];
    CHECK(qc_lowrank_hsqrt(h, C, S, &err) == 0);
    CHECK_MSG(qc_lowrank_fit(E, R, C, S, K, Ae, Be, &opt_e, &err) == 0, "%s", err.msg);
    CHECK_MSG(qc_lowrank_fit(E, R, C, NULL, K, As, Bs, &opt_s, &err) == 0, "%s", err.msg);
    for (int i = 0; i < R * K; i++)
        CHECK(qc_f16_to_f32(qc_f32_to_f16(Ae[i])) == Ae[i]); /* A is exactly f16 */
    double eh_e, ef_e, eh_s, ef_s;
    residual_errs(E, Ae, Be, R, C, K, h, &eh_e, &ef_e);
    residual_errs(E, As, Bs, R, C, K, h, &eh_s, &ef_s);
    /* each is optimal in its own norm (f32 B: 1e-6 relative slack), and
     * beats the other there */
    CHECK_MSG(fabs(eh_e / opt_e - 1) < 1e-6, "eora %g vs optimum %g", eh_e, opt_e);
    CHECK_MSG(fabs(ef_s / opt_s - 1) < 1e-6, "svd %g vs optimum %g", ef_s, opt_s);
    CHECK_MSG(eh_e < eh_s && ef_s < ef_e, "H: %g %g, F: %g %g", eh_e, eh_s, ef_e, ef_s);
    /* bad inputs */
    CHECK(qc_lowrank_fit(E, R, C, S, 0, Ae, Be, NULL, &err) == -1 && strstr(err.msg, "rank 0"));
    CHECK(qc_lowrank_fit(E, R, C, S, R + 1, Ae, Be, NULL, &err) == -1 &&
          strstr(err.msg, "rank 49 out of range 1..48"));
    E[100] = NAN;
    CHECK(qc_lowrank_fit(E, R, C, NULL, K, Ae, Be, NULL, &err) == -1 &&
          strstr(err.msg, "non-finite") && strstr(err.msg, "row 1, column 36"));
    free(h), free(S);
}

static void free_linear(qc_calib_linear *l) {
    free(l->deq);
    qc_quant_state_free(l->q);
    l->deq = NULL, l->q = NULL;
}

static void test_pass(void) {
    enum { R = 24, C = 64 };
    qc_err err;
    CHECK_MSG(qc_pass_check_schema(&qc_pass_lowrank, &err) == 0, "%s", err.msg);
    double *h = mean_gram(300, C);
    float w[R * C], deq[R * C];
    fill_normal(w, R * C, 0.05);
    qc_calib_linear l = {.name = "model.layers.0.mlp.up_proj.weight",
                         .kind = "up_proj",
                         .rows = R,
                         .cols = C,
                         .w = w,
                         .H = h,
                         .n_tokens = 300,
                         .targeted = 1};
    qc_calib_block b = {.n_linears = 1, .linears = &l};
    qc_pass_ctx ctx = {.quiet = 1};
    qc_recipe *r = recipe("  - quantize: {method: rtn, bits: 3, group_size: 32}\n"
                          "  - lowrank: {rank: 4}\n",
                          &err);
    CHECK_FATAL(r);
    const qc_params *pq = &r->passes[0].params, *pl = &r->passes[1].params;
    /* before quantize: refused */
    CHECK(qc_pass_lowrank.run_block(&ctx, pl, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "up_proj") && strstr(err.msg, "after quantize"), "%s", err.msg);
    CHECK(qc_pass_quantize.run_block(&ctx, pq, &b, &err) == 0);
    float deq0[R * C];
    memcpy(deq0, l.deq, sizeof deq0);
    CHECK_MSG(qc_pass_lowrank.run_block(&ctx, pl, &b, &err) == 0, "%s", err.msg);
    CHECK(l.q->rank == 4 && l.q->lr_a && l.q->lr_b && strstr(l.note, "eora rank 4"));
    /* the driver propagates dequantize(q): it must be exactly the pass's Ŵ */
    qc_quant_dequantize(l.q, deq);
    CHECK(memcmp(deq, l.deq, sizeof deq) == 0);
    /* and it lowers the output error */
    double *d0 = malloc(sizeof(double) * R * C), *d1 = malloc(sizeof(double) * R * C);
    for (int i = 0; i < R * C; i++)
        d0[i] = (double)w[i] - deq0[i], d1[i] = (double)w[i] - deq[i];
    CHECK(qc_lowrank_err(d1, R, C, h) < 0.9 * qc_lowrank_err(d0, R, C, h));
    /* a rerun replaces the factors instead of compounding them */
    CHECK(qc_pass_lowrank.run_block(&ctx, pl, &b, &err) == 0);
    CHECK(memcmp(deq, l.deq, sizeof deq) == 0);
    qc_recipe_free(r);

    /* budget: 16·r·(24 + 64) ≤ 1.5·24·64 → r = 1 */
    r = recipe("  - lowrank: {budget_bits: 1.5, method: svd}\n", &err);
    CHECK_FATAL(r);
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == 0);
    CHECK(l.q->rank == 1 && strstr(l.note, "svd rank 1"));
    qc_recipe_free(r);
    r = recipe("  - lowrank: {budget_bits: 0.5, method: svd}\n", &err); /* affords rank 0 */
    CHECK_FATAL(r);
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == 0);
    CHECK(l.q->rank == 0 && memcmp(deq0, l.deq, sizeof deq0) == 0); /* factors gone from Ŵ */
    qc_recipe_free(r);
    r = recipe("  - lowrank: {budget_bits: 1.5, rank: 2}\n", &err);
    CHECK_FATAL(r);
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "rank (line 4) or budget_bits"), "%s", err.msg);
    qc_recipe_free(r);

    /* bad inputs */
    r = recipe("  - lowrank: {rank: 25}\n", &err); /* valid in the schema, > min(24, 64) */
    CHECK_FATAL(r);
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "rank 25 out of range 1..24"), "%s", err.msg);
    qc_recipe_free(r);
    CHECK(!recipe("  - lowrank: {rank: 0}\n", &err));
    CHECK_MSG(strstr(err.msg, "t.yaml:4:21") && strstr(err.msg, "rank"), "%s", err.msg);
    CHECK(!recipe("  - lowrank: {method: pca}\n", &err));
    CHECK_MSG(strstr(err.msg, "eora"), "%s", err.msg);
    r = recipe("  - lowrank: {rank: 2}\n", &err);
    CHECK_FATAL(r);
    h[3 * C + 3] = NAN;
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "non-finite"), "%s", err.msg);
    l.H = NULL;
    CHECK(qc_pass_lowrank.run_block(&ctx, &r->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "no Hessian"), "%s", err.msg);
    qc_recipe_free(r);
    free_linear(&l);
    free(h), free(d0), free(d1);
}

static void test_recipe_file(void) {
    qc_err err;
    qc_recipe *r = qc_recipe_load("recipes/lowrank-w3a16-g128.yaml", &err);
    CHECK_MSG(r, "%s", err.msg);
    if (!r) return;
    CHECK(r->n_passes == 2 && strcmp(r->passes[0].pass->name, "quantize") == 0 &&
          strcmp(r->passes[1].pass->name, "lowrank") == 0);
    CHECK(qc_params_int(&r->passes[0].params, "bits") == 3);
    CHECK(qc_params_int(&r->passes[1].params, "rank") == 32 &&
          strcmp(qc_params_str(&r->passes[1].params, "method"), "eora") == 0);
    qc_recipe_free(r);
}

static int run_mode(char **a) {
    int64_t rows = atoll(a[0]), cols = atoll(a[1]);
    size_t n = (size_t)(rows * cols);
    float *w = malloc(sizeof(float) * n), *deq0 = malloc(sizeof(float) * n);
    double *h = malloc(sizeof(double) * cols * cols);
    if (read_file(a[2], w, sizeof(float) * n) || read_file(a[3], h, sizeof(double) * cols * cols)) {
        fprintf(stderr, "cannot read %s or %s\n", a[2], a[3]);
        return 1;
    }
    char yaml[256];
    snprintf(yaml, sizeof yaml,
             "  - quantize: {method: rtn, bits: %s, group_size: 32}\n"
             "  - lowrank: {method: %s, rank: %s}\n",
             a[6], a[4], a[5]);
    qc_err err;
    qc_recipe *r = recipe(yaml, &err);
    qc_calib_linear l = {.name = "model.layers.0.mlp.up_proj.weight",
                         .kind = "up_proj",
                         .rows = rows,
                         .cols = cols,
                         .w = w,
                         .H = h,
                         .targeted = 1};
    qc_calib_block b = {.n_linears = 1, .linears = &l};
    qc_pass_ctx ctx = {.quiet = 1};
    if (!r || qc_pass_quantize.run_block(&ctx, &r->passes[0].params, &b, &err) ||
        !memcpy(deq0, l.deq, sizeof(float) * n) ||
        qc_pass_lowrank.run_block(&ctx, &r->passes[1].params, &b, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    int k = l.q->rank;
    float *A = malloc(sizeof(float) * rows * k), *B = malloc(sizeof(float) * k * cols);
    for (int64_t i = 0; i < rows * k; i++)
        A[i] = qc_f16_to_f32(l.q->lr_a[i]);
    for (int64_t i = 0; i < k * cols; i++)
        B[i] = qc_f16_to_f32(l.q->lr_b[i]);
    int rc = write_file(a[7], ".deq0", deq0, sizeof(float) * n) ||
             write_file(a[7], ".deq", l.deq, sizeof(float) * n) ||
             write_file(a[7], ".a", A, sizeof(float) * rows * k) ||
             write_file(a[7], ".b", B, sizeof(float) * k * cols);
    printf("%s\n", l.note);
    free_linear(&l);
    qc_recipe_free(r);
    free(w), free(h), free(deq0), free(A), free(B);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--run") == 0) {
        if (argc != 10) {
            fprintf(stderr, "usage: test_lowrank --run ROWS COLS W H METHOD RANK BITS OUT\n");
            return 2;
        }
        return run_mode(argv + 2);
    }
    test_hsqrt();
    test_fit();
    test_pass();
    test_recipe_file();
    TEST_END();
}
