/* Sparse outliers: the CSR on the quantization state (compiler/quant.h),
 * RTN/GPTQ leaving them out of the dense codes, storage bits, and the
 * `outliers` pass (passes/outliers.c) with its recipe. GPTQ with outliers is
 * compared with numpy in tests/test_gptq.py; the pass's selection in
 * tests/test_saliency.py, through:
 *   test_outliers --run ROWS COLS W.f32 H.f64 CRITERION FRACTION THRESHOLD OUT
 *       runs the pass on one linear (H = XᵀX/N) and writes OUT.mask (u8 rows×cols) */
#include "compiler/dequant.h"
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "runtime/linear.h"
#include "tests/check.h"
#include "tests/quant_problem.h"

#include <string.h>

extern const qc_pass qc_pass_outliers, qc_pass_quantize;

/* The params of pass i of a recipe made of HEAD + passes_yaml (NULL with
 * err when the recipe is rejected). */
static qc_recipe *recipe(const char *passes_yaml, qc_err *err) {
    char text[1024];
    snprintf(text, sizeof text, "quantc: 1\ncalibration: { text: c.txt }\npasses:\n%s",
             passes_yaml);
    return qc_recipe_parse(text, strlen(text), "t.yaml", NULL, err);
}

static int64_t count_mask(const uint8_t *m, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        k += m[i] != 0;
    return k;
}

/* CSR layout, f16 values, codes at outliers, fits without them, dequantize,
 * storage bits; low-rank factors on the same state. */
static void test_state(void) {
    enum { R = 5, C = 16 };
    qc_err err;
    float w[R * C], deq[R * C], deq2[R * C];
    uint8_t mask[R * C] = {0};
    fill_normal(w, R * C, 0.05);
    mask[0 * C + 3] = mask[0 * C + 9] = 1; /* row 0: two, two groups */
    for (int c = 8; c < 16; c++)
        mask[2 * C + c] = 1; /* row 2: a whole group */
    mask[4 * C + 0] = 1;     /* row 4: one; rows 1, 3: none */
    w[0 * C + 3] = 3.0f, w[0 * C + 9] = -2.5f, w[4 * C] = 0.1234567f;
    qc_quant_format f = {3, 8, 0};
    qc_quant_state *q = qc_quant_state_new(&f, R, C, &err);
    CHECK_FATAL(q && q->nnz == 0 && !q->row_ptr && q->rank == 0);
    CHECK_MSG(qc_quant_set_outliers(q, mask, w, &err) == 0, "%s", err.msg);
    CHECK(q->nnz == 11);
    int32_t want_ptr[R + 1] = {0, 2, 2, 10, 10, 11};
    CHECK(memcmp(q->row_ptr, want_ptr, sizeof want_ptr) == 0);
    CHECK(q->col[0] == 3 && q->col[1] == 9 && q->col[2] == 8 && q->col[9] == 15 && q->col[10] == 0);
    CHECK(q->val[0] == qc_f32_to_f16(3.0f) && q->val[10] == qc_f32_to_f16(0.1234567f));
    double base_bits = qc_quant_storage_bits(q) - 48.0 * 11 - 32.0 * (R + 1);

    qc_clip_search clip = {1, 0.75f, 20};
    CHECK_MSG(qc_quant_rtn(w, NULL, &clip, q, deq, &err) == 0, "%s", err.msg);
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 2; g++) {
            float kept[8], s, z;
            int n = 0;
            for (int c = 8 * g; c < 8 * g + 8; c++)
                if (!mask[r * C + c]) kept[n++] = w[r * C + c];
            qc_quant_fit_group(&f, &clip, kept, NULL, n, &s, &z);
            CHECK(q->scales[r * 2 + g] == s && q->zeros[r * 2 + g] == z);
            for (int c = 8 * g; c < 8 * g + 8; c++) {
                if (!mask[r * C + c]) continue;
                CHECK(q->codes[r * C + c] == (uint8_t)z); /* dense part exactly 0 */
                CHECK(deq[r * C + c] == qc_f16_to_f32(qc_f32_to_f16(w[r * C + c])));
            }
        }
    CHECK(q->scales[0] < 0.5f); /* fitted without the 3.0 outlier */
    qc_quant_dequantize(q, deq2);
    CHECK(memcmp(deq, deq2, sizeof deq) == 0);
    /* storage: base + 16-bit value + 32-bit column per outlier + row_ptr */
    CHECK(qc_quant_storage_bits(q) == base_bits + 48.0 * 11 + 32.0 * (R + 1));
    CHECK(base_bits == 3.0 * R * C + (16.0 + 3.0) * R * 2);

    /* low-rank factors: Ŵ += A·B (f16), 16 bits per factor entry */
    float A[R * 2], B[2 * C], ab[R * C] = {0};
    fill_normal(A, R * 2, 0.1);
    fill_normal(B, 2 * C, 0.1);
    CHECK_MSG(qc_quant_set_lowrank(q, 2, A, B, &err) == 0, "%s", err.msg);
    qc_quant_dequantize(q, deq2);
    double maxd = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            for (int k = 0; k < 2; k++)
                ab[r * C + c] += qc_f16_to_f32(qc_f32_to_f16(A[r * 2 + k])) *
                                 qc_f16_to_f32(qc_f32_to_f16(B[k * C + c]));
            maxd = fmax(maxd, fabs(deq2[r * C + c] - (deq[r * C + c] + ab[r * C + c])));
        }
    CHECK_MSG(maxd < 1e-6, "%g", maxd); /* f32 sums of 3 terms of size < 1 */
    /* the fake-quant linear computes with all three parts: y = x·Ŵᵀ, Ŵ built
     * here from codes, CSR and factors without qc_quant_dequantize */
    float x[2 * C], y[2 * R], bias[R];
    fill_normal(x, 2 * C, 1);
    fill_normal(bias, R, 1);
    qcrt_linear *fq = qcrt_linear_fq_new(q, bias, &err);
    CHECK_FATAL(fq);
    fq->forward(fq, x, 2, y);
    double maxy = 0;
    for (int t = 0; t < 2; t++)
        for (int r = 0; r < R; r++) {
            double acc = bias[r];
            for (int c = 0; c < C; c++) {
                int g = r * 2 + q->g_idx[c];
                double wv =
                    qc_quant_value(q->codes[r * C + c], q->scales[g], q->zeros[g]) + ab[r * C + c];
                acc += wv * x[t * C + c];
            }
            for (int j = q->row_ptr[r]; j < q->row_ptr[r + 1]; j++)
                acc += qc_f16_to_f32(q->val[j]) * x[t * C + q->col[j]];
            maxy = fmax(maxy, fabs(acc - y[t * R + r]));
        }
    CHECK_MSG(maxy < 1e-4, "%g", maxy); /* f32 dot products of 16 terms of size < 4 */
    qcrt_linear_free(fq);
    CHECK(qc_quant_storage_bits(q) == base_bits + 48.0 * 11 + 32.0 * (R + 1) + 16.0 * 2 * (R + C));
    CHECK(qc_quant_set_lowrank(q, 6, A, B, &err) == -1 && strstr(err.msg, "rank 6"));
    A[3] = NAN;
    CHECK(qc_quant_set_lowrank(q, 2, A, B, &err) == -1 && strstr(err.msg, "A[3]"));
    A[3] = 1e6f;
    CHECK(qc_quant_set_lowrank(q, 2, A, B, &err) == -1 && strstr(err.msg, "not an f16"));
    CHECK(q->rank == 2); /* a failed call leaves the earlier factors */
    CHECK(qc_quant_set_lowrank(q, 0, NULL, NULL, &err) == 0 && q->rank == 0 && !q->lr_a);

    /* bad values and removal */
    w[0 * C + 3] = 1e6f;
    CHECK(qc_quant_set_outliers(q, mask, w, &err) == -1 && strstr(err.msg, "row 0, column 3"));
    CHECK(q->nnz == 0 && !q->row_ptr);
    memset(mask, 0, sizeof mask);
    CHECK(qc_quant_set_outliers(q, mask, w, &err) == 0 && q->nnz == 0);
    qc_quant_state_free(q);
}

/* Planted large weights wreck 3-bit group scales; keeping them sparse lets
 * GPTQ fit the rest: the output error must drop by a large factor. */
static void test_gptq_planted(void) {
    enum { N = 512, R = 32, C = 64 };
    qc_err err;
    float *x = correlated_x(N, C), w[R * C], deq[R * C], deq0[R * C];
    double *h = gram(x, N, C), *hc = malloc(sizeof(double) * C * C);
    uint8_t mask[R * C] = {0};
    fill_normal(w, R * C, 0.02);
    for (int i = 0; i < 20; i++) {
        int k = (int)(urand() * R * C);
        w[k] = urand() < 0.5 ? -0.6f : 0.6f;
        mask[k] = 1;
    }
    int64_t nnz = count_mask(mask, R * C);
    qc_quant_format f = {3, 32, 0};
    for (int ao = 0; ao < 2; ao++) {
        qc_gptq_opts o = {0.01, 16, ao, 0, {1, 0.75f, 20}, NULL};
        qc_quant_state *q0 = qc_quant_state_new(&f, R, C, &err),
                       *q = qc_quant_state_new(&f, R, C, &err);
        memcpy(hc, h, sizeof(double) * C * C);
        CHECK(qc_quant_gptq(w, hc, &o, q0, deq0, &err) == 0);
        memcpy(hc, h, sizeof(double) * C * C);
        CHECK(qc_quant_set_outliers(q, mask, w, &err) == 0 && q->nnz == nnz);
        CHECK_MSG(qc_quant_gptq(w, hc, &o, q, deq, &err) == 0, "%s", err.msg);
        for (int r = 0; r < R; r++)
            for (int k = q->row_ptr[r]; k < q->row_ptr[r + 1]; k++) {
                int c = q->col[k];
                float z = q->zeros[r * q->n_groups + q->g_idx[c]];
                CHECK(q->codes[r * C + c] == (uint8_t)z);
                CHECK(deq[r * C + c] == qc_f16_to_f32(q->val[k]));
                CHECK(fabsf(deq[r * C + c] - w[r * C + c]) < 0.1f); /* compensated, not lost */
            }
        double e0 = out_err(x, N, C, w, deq0, R), e1 = out_err(x, N, C, w, deq, R);
        CHECK_MSG(e1 < 0.25 * e0, "act-order %d: with outliers %g, without %g", ao, e1, e0);
        qc_quant_state_free(q0);
        qc_quant_state_free(q);
    }
    free(x), free(h), free(hc);
}

static qc_calib_linear linear(const char *name, int64_t rows, int64_t cols, float *w, double *h,
                              int targeted) {
    return (qc_calib_linear){.name = name,
                             .kind = "q_proj",
                             .rows = rows,
                             .cols = cols,
                             .w = w,
                             .H = h,
                             .n_tokens = 256,
                             .targeted = targeted};
}

static void free_linear(qc_calib_linear *l) {
    free(l->outliers);
    free(l->deq);
    qc_quant_state_free(l->q);
    l->outliers = NULL, l->deq = NULL, l->q = NULL;
}

static void test_pass(void) {
    enum { N = 256, R = 24, C = 64 };
    qc_err err;
    CHECK_MSG(qc_pass_check_schema(&qc_pass_outliers, &err) == 0, "%s", err.msg);
    float *x = correlated_x(N, C), w[R * C], w2[R * C];
    double *h = gram(x, N, C);
    for (int i = 0; i < C * C; i++)
        h[i] /= N;
    fill_normal(w, R * C, 0.05);
    fill_normal(w2, R * C, 0.05);
    qc_calib_linear ls[3] = {linear("model.layers.0.self_attn.q_proj.weight", R, C, w, h, 1),
                             linear("model.layers.0.self_attn.k_proj.weight", R, C, w2, h, 1),
                             linear("model.layers.0.self_attn.v_proj.weight", R, C, w2, h, 0)};
    qc_calib_block b = {.index = 0, .n_linears = 3, .linears = ls};
    qc_pass_ctx ctx = {.quiet = 1};
    qc_recipe *rc =
        recipe("  - outliers: {fraction: 0.01}\n  - quantize: {bits: 3, group_size: 32}\n", &err);
    CHECK_FATAL(rc);
    const qc_params *po = &rc->passes[0].params, *pq = &rc->passes[1].params;
    CHECK_MSG(qc_pass_outliers.run_block(&ctx, po, &b, &err) == 0, "%s", err.msg);
    int64_t k = (int64_t)floor(0.01 * R * C + 0.5); /* 15 */
    CHECK(ls[0].outliers && count_mask(ls[0].outliers, R * C) == k);
    CHECK(ls[1].outliers && count_mask(ls[1].outliers, R * C) == k && !ls[2].outliers);
    /* the selection: no unselected weight scores above a selected one */
    double hinv[C];
    CHECK(qc_quant_hinv_diag(h, C, 0.01, hinv, NULL, &err) == 0);
    double lo_sel = INFINITY, hi_rest = 0;
    for (int i = 0; i < R * C; i++) {
        double s = (double)w[i] * w[i] / hinv[i % C];
        if (ls[0].outliers[i])
            lo_sel = fmin(lo_sel, s);
        else
            hi_rest = fmax(hi_rest, s);
    }
    CHECK(lo_sel > hi_rest);
    /* quantize takes them over */
    CHECK_MSG(qc_pass_quantize.run_block(&ctx, pq, &b, &err) == 0, "%s", err.msg);
    CHECK(ls[0].q && ls[0].q->nnz == k && ls[1].q->nnz == k && !ls[2].q);
    const qc_quant_state *q0 = ls[0].q;
    for (int r = 0; r < R; r++)
        for (int j = q0->row_ptr[r]; j < q0->row_ptr[r + 1]; j++) {
            CHECK(ls[0].outliers[r * C + q0->col[j]]);
            CHECK(ls[0].deq[r * C + q0->col[j]] == qc_f16_to_f32(q0->val[j]));
        }
    /* after quantize: refused */
    CHECK(qc_pass_outliers.run_block(&ctx, po, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "q_proj") && strstr(err.msg, "before quantize"), "%s", err.msg);
    qc_recipe_free(rc);
    for (int i = 0; i < 3; i++)
        free_linear(&ls[i]);

    /* magnitude and threshold */
    rc = recipe("  - outliers: {criterion: magnitude, threshold: 3}\n", &err);
    CHECK_FATAL(rc);
    CHECK_MSG(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == 0, "%s",
              err.msg);
    double mean = 0;
    int64_t above = 0;
    for (int i = 0; i < R * C; i++)
        mean += fabs(w[i]) / (R * C);
    for (int i = 0; i < R * C; i++) {
        above += fabs(w[i]) > 3 * mean;
        CHECK((fabs(w[i]) > 3 * mean) == (ls[0].outliers && ls[0].outliers[i]));
    }
    CHECK(above > 0);
    qc_recipe_free(rc);
    /* a rerun replaces the choice (no leak under ASan); fraction 0 keeps none */
    rc = recipe("  - outliers: {fraction: 0}\n", &err);
    CHECK_FATAL(rc);
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == 0);
    CHECK(!ls[0].outliers && !ls[1].outliers);
    qc_recipe_free(rc);

    /* bad inputs */
    rc = recipe("  - outliers: {fraction: 0.01, threshold: 2}\n", &err);
    CHECK_FATAL(rc);
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "fraction (line 4) or threshold"), "%s", err.msg);
    qc_param_value *fv = (qc_param_value *)qc_params_get(&rc->passes[0].params, "fraction");
    fv->f = 0.5, fv->line = 0; /* out of range, bypassing recipe validation */
    ((qc_param_value *)qc_params_get(&rc->passes[0].params, "threshold"))->f = 0;
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "fraction 0.5 out of range"), "%s", err.msg);
    qc_recipe_free(rc);
    CHECK(!recipe("  - outliers: {fraction: 0.5}\n", &err));
    CHECK_MSG(strstr(err.msg, "t.yaml:4:26") && strstr(err.msg, "fraction"), "%s", err.msg);
    CHECK(!recipe("  - outliers: {fraction: -0.1}\n", &err));
    CHECK(!recipe("  - outliers: {criterion: hessian}\n", &err));
    CHECK_MSG(strstr(err.msg, "sensitivity"), "%s", err.msg);
    rc = recipe("  - outliers: {fraction: 0.01}\n", &err);
    CHECK_FATAL(rc);
    w[77] = NAN;
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "non-finite weight") && strstr(err.msg, "row 1, column 13"), "%s",
              err.msg);
    w[77] = 0;
    h[5 * C + 7] = NAN;
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "non-finite") && strstr(err.msg, "Hessian"), "%s", err.msg);
    h[5 * C + 7] = h[7 * C + 5];
    ls[0].H = NULL;
    CHECK(qc_pass_outliers.run_block(&ctx, &rc->passes[0].params, &b, &err) == -1);
    CHECK_MSG(strstr(err.msg, "no Hessian"), "%s", err.msg);
    qc_recipe_free(rc);
    for (int i = 0; i < 3; i++)
        free_linear(&ls[i]);
    free(x), free(h);
}

static void test_hinv_diag(void) {
    qc_err err;
    /* H = [[4, 2], [2, 3]] + damp: inverse diagonal 3/8, 4/8 (damp 0) */
    double h[4] = {4, 2, 2, 3}, d[2], used;
    CHECK(qc_quant_hinv_diag(h, 2, 0, d, &used, &err) == 0);
    CHECK(fabs(d[0] - 3.0 / 8) < 1e-15 && fabs(d[1] - 0.5) < 1e-15 && used == 0);
    /* singular: damp is raised until it factors */
    double s[4] = {1, 1, 1, 1};
    CHECK(qc_quant_hinv_diag(s, 2, 0, d, &used, &err) == 0 && used > 0);
    double neg[4] = {-1, 0, 0, 1};
    CHECK(qc_quant_hinv_diag(neg, 2, 0.01, d, NULL, &err) == -1 && strstr(err.msg, "negative"));
    CHECK(qc_quant_hinv_diag(h, 2, NAN, d, NULL, &err) == -1);
}

/* The committed recipe parses, in the order the pass needs. */
static void test_recipe_file(void) {
    qc_err err;
    qc_recipe *r = qc_recipe_load("recipes/outliers-w3a16-g128.yaml", &err);
    CHECK_MSG(r, "%s", err.msg);
    if (!r) return;
    CHECK(r->n_passes == 2 && strcmp(r->passes[0].pass->name, "outliers") == 0 &&
          strcmp(r->passes[1].pass->name, "quantize") == 0);
    CHECK(qc_params_float(&r->passes[0].params, "fraction") == 0.005);
    CHECK(strcmp(qc_params_str(&r->passes[0].params, "criterion"), "sensitivity") == 0);
    CHECK(qc_params_int(&r->passes[1].params, "bits") == 3 &&
          qc_params_int(&r->passes[1].params, "group_size") == 128);
    qc_recipe_free(r);
}

static int run_mode(char **a) {
    int64_t rows = atoll(a[0]), cols = atoll(a[1]);
    float *w = malloc(sizeof(float) * rows * cols);
    double *h = malloc(sizeof(double) * cols * cols);
    if (read_file(a[2], w, sizeof(float) * rows * cols) ||
        read_file(a[3], h, sizeof(double) * cols * cols)) {
        fprintf(stderr, "cannot read %s or %s\n", a[2], a[3]);
        return 1;
    }
    char yaml[256];
    snprintf(yaml, sizeof yaml, "  - outliers: {criterion: %s, %s: %s}\n", a[4],
             atof(a[6]) > 0 ? "threshold" : "fraction", atof(a[6]) > 0 ? a[6] : a[5]);
    qc_err err;
    qc_recipe *r = recipe(yaml, &err);
    qc_calib_linear l = linear("model.layers.0.mlp.up_proj.weight", rows, cols, w, h, 1);
    qc_calib_block b = {.n_linears = 1, .linears = &l};
    qc_pass_ctx ctx = {.quiet = 1};
    if (!r || qc_pass_outliers.run_block(&ctx, &r->passes[0].params, &b, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    uint8_t *m = l.outliers ? l.outliers : calloc((size_t)(rows * cols), 1);
    int rc = write_file(a[7], ".mask", m, (size_t)(rows * cols));
    if (m != l.outliers) free(m);
    free_linear(&l);
    qc_recipe_free(r);
    free(w), free(h);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--run") == 0) {
        if (argc != 10) {
            fprintf(stderr, "usage: test_outliers --run ROWS COLS W H CRITERION FRACTION "
                            "THRESHOLD OUT\n");
            return 2;
        }
        return run_mode(argv + 2);
    }
    test_state();
    test_gptq_planted();
    test_hinv_diag();
    test_pass();
    test_recipe_file();
    TEST_END();
}
