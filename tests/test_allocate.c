/* The allocate pass (passes/allocate.c).
 *
 * (1) The DP solver (compiler/allocate.h) against brute force over every
 *     combination of 7 items × 4 options, for random costs/errors and
 *     budgets: its error lies between the exact optimum under the budget
 *     and the optimum under budget − n·unit (costs round up to units), and
 *     its choice never exceeds the budget. Exact comparisons: both sides sum
 *     the same doubles.
 * (2) Budgets no choice fits fail with a message.
 * (3) End to end on the tiny llama (rotate + allocate + quantize RTN g32):
 *     with the budget at the all-3-bit average + 0.005 (attainable), the
 *     report's average bits lie within 0.01 of the budget (the pass's
 *     promise), every width is a candidate, and quantize used the widths;
 *     a budget below the all-2-bit average is refused. */
#include "compiler/allocate.h"
#include "compiler/calibrate.h"
#include "compiler/model.h"
#include "compiler/recipe.h"
#include "tests/check.h"
#include "tests/recipe_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 12345;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

enum { N = 7, O = 4 };

/* Best error over all combinations with cost ≤ budget (INFINITY if none). */
static double brute(const double *c, const double *e, double budget) {
    double best = INFINITY;
    int idx[N] = {0};
    for (long it = 0; it < 16384; it++) { /* 4^7 */
        long v = it;
        double cs = 0, es = 0;
        for (int i = 0; i < N; i++, v /= O) {
            idx[i] = (int)(v % O);
            cs += c[i * O + idx[i]];
            es += e[i * O + idx[i]];
        }
        if (cs <= budget && es < best) best = es;
    }
    return best;
}

static void test_solver(void) {
    for (int trial = 0; trial < 50; trial++) {
        double c[N * O], e[N * O], lo = 0, hi = 0;
        for (int i = 0; i < N; i++) {
            double size = 1 + 9 * urand(), sens = urand();
            for (int o = 0; o < O; o++) {
                int bits = o == 3 ? 8 : o + 2;
                c[i * O + o] = size * (bits + 0.25);
                e[i * O + o] = sens * size * pow(4.0, -bits) * (0.5 + urand());
            }
            lo += c[i * O], hi += c[i * O + 3];
        }
        double budget = lo + (hi - lo) * urand(), unit = budget * 1e-5;
        int choice[N];
        qc_err err = {{0}};
        CHECK_MSG(qc_allocate_solve(c, e, N, O, budget, unit, choice, &err) == 0, "%s", err.msg);
        double cs = 0, es = 0;
        for (int i = 0; i < N; i++)
            cs += c[i * O + choice[i]], es += e[i * O + choice[i]];
        double opt = brute(c, e, budget), opt_lo = brute(c, e, budget - N * unit);
        CHECK_MSG(cs <= budget, "trial %d: cost %g over budget %g", trial, cs, budget);
        CHECK_MSG(es >= opt - 1e-12 * opt && es <= opt_lo + 1e-12 * opt_lo,
                  "trial %d: error %g not in [%g, %g]", trial, es, opt, opt_lo);
    }
    double c[2] = {5, 6}, e[2] = {1, 0};
    int ch[1];
    qc_err err = {{0}};
    CHECK(qc_allocate_solve(c, e, 1, 2, 4.0, 0.01, ch, &err) == -1);
    CHECK(strstr(err.msg, "fits the budget") != NULL);
    CHECK(qc_allocate_solve(c, e, 1, 2, 5.5, 0.01, ch, &err) == 0 && ch[0] == 0);
    CHECK(qc_allocate_solve(c, e, 1, 2, 6.0, 0.01, ch, &err) == 0 && ch[0] == 1);
}

/* Storage bits per weight of the tiny llama at b bits, g32 asymmetric RTN. */
static double avg_bits(const qc_config *cfg, int b) {
    int64_t qd = (int64_t)cfg->n_heads * cfg->head_dim,
            kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    int64_t sh[7][2] = {{qd, cfg->dim},          {kvd, cfg->dim},          {kvd, cfg->dim},
                        {cfg->dim, qd},          {cfg->ffn_dim, cfg->dim}, {cfg->ffn_dim, cfg->dim},
                        {cfg->dim, cfg->ffn_dim}};
    double bits = 0, n = 0;
    for (int i = 0; i < 7; i++) {
        double groups = (double)sh[i][0] * (double)((sh[i][1] + 31) / 32);
        bits += (double)(sh[i][0] * sh[i][1]) * b + groups * (16 + b);
        n += (double)(sh[i][0] * sh[i][1]);
    }
    return bits / n;
}

static int compile(const char *path, double budget, qc_calib_report *rep, qc_err *err) {
    char y[1024];
    snprintf(y, sizeof y,
             "quantc: 1\ncalibration: { text: tests/data/tok_sample.txt, samples: 4, tokens: 32 }\n"
             "passes:\n  - rotate: { seed: 0 }\n  - allocate: { budget_bits: %.6f }\n"
             "  - quantize: { method: rtn, bits: 4, group_size: 32 }\n",
             budget);
    qc_recipe *r = qc_recipe_parse(y, strlen(y), "test", NULL, err);
    qc_model *m = r ? qc_model_load(path, err) : NULL;
    int rc = m ? qc_calibrate(m, r, NULL, NULL, NULL, rep, err) : -1;
    qc_model_free(m);
    qc_recipe_free(r);
    return rc;
}

static void test_model(void) {
    const char *path = "tests/data/tiny/llama";
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    qc_config cfg = m->cfg;
    qc_model_free(m);
    double budget = avg_bits(&cfg, 3) + 0.005;
    qc_calib_report rep;
    CHECK_MSG(compile(path, budget, &rep, &err) == 0, "%s", err.msg);
    int hist[9] = {0};
    for (int i = 0; i < rep.n_layers; i++) {
        int b = rep.layers[i].bits;
        CHECK(b == 2 || b == 3 || b == 4 || b == 8);
        if (b >= 0 && b <= 8) hist[b]++;
    }
    fprintf(stderr, "budget %.4f: average %.4f bits; layers at 2/3/4/8 bits: %d/%d/%d/%d\n", budget,
            rep.avg_bits, hist[2], hist[3], hist[4], hist[8]);
    CHECK_MSG(fabs(rep.avg_bits - budget) <= 0.01, "average %.4f vs budget %.4f", rep.avg_bits,
              budget);
    qc_calib_report_free(&rep);
    CHECK(compile(path, avg_bits(&cfg, 2) - 0.1, &rep, &err) == -1);
    CHECK_MSG(strstr(err.msg, "outside what the candidates reach") != NULL, "%s", err.msg);
}


int main(void) {
    const char *const raq[] = {"rotate", "allocate", "quantize"};
    check_recipe("recipes/allocate-3.0.yaml", raq, 3, 3);
    check_recipe("recipes/allocate-2.5.yaml", raq, 3, 3);
    test_solver();
    test_model();
    TEST_END();
}
