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
 *     a budget below the all-2-bit average is refused.
 * (4) The sensitivities and the choice against an independent computation,
 *     end to end on the tiny llama (no rotate; RTN without clip search, so
 *     Ŵ_l(b) depends on W_l alone and the test can make it): the test
 *     recomputes the calibration windows (the driver's documented seeded
 *     choice), runs the whole model on them capturing every linear's inputs
 *     X, and computes hessian: e_l(b) = ‖X ΔWᵀ‖² / ‖X Wᵀ‖² from X itself (the
 *     pass uses H = XᵀX/N), and kl: the KL divergence of the whole model with
 *     Ŵ_l(b) in place of W_l (tests/kl_ref.h), 8 bits extrapolated as
 *     KL(3)·e(8)/e(3). The pass's widths must be optimal for these errors:
 *     its summed error equals the optimum found by brute force over all
 *     3^14 choices, with costs rounded up to the DP's units (0.004/n bits
 *     per weight) as the pass does, to 1e-3 relative (the pass's f32
 *     products and log-softmax vs f64 here: measured ~1e-4 on the KLs of
 *     test_kl_probe). */
#include "compiler/allocate.h"
#include "compiler/calibrate.h"
#include "compiler/model.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "compiler/tokenizer.h"
#include "runtime/forward.h"
#include "tests/check.h"
#include "tests/kl_ref.h"
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

/* ---- (4) sensitivities end to end ---- */

enum { E_SAMPLES = 2, E_TOKENS = 40, E_ITEMS = 14, E_OPTS = 3 };
static const char *const e_kinds[7][2] = {
    {"q_proj", "self_attn.q_proj"}, {"k_proj", "self_attn.k_proj"}, {"v_proj", "self_attn.v_proj"},
    {"o_proj", "self_attn.o_proj"}, {"gate_proj", "mlp.gate_proj"}, {"up_proj", "mlp.up_proj"},
    {"down_proj", "mlp.down_proj"}};

/* The driver's calibration windows (compiler/calibrate.c make_samples:
 * splitmix64 from the seed, start = next % span). */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A linear that records its inputs (up to cap rows) and runs the inner one. */
typedef struct capture {
    qcrt_linear *inner;
    float *x;
    int64_t n, cap;
} capture;

static void capture_forward(const qcrt_linear *l, const float *x, int64_t n, float *y) {
    capture *c = l->impl;
    c->inner->forward(c->inner, x, n, y);
    for (int64_t t = 0; t < n && c->n < c->cap; t++, c->n++)
        memcpy(c->x + c->n * l->in, x + t * l->in, (size_t)l->in * sizeof(float));
}

typedef struct e_item {
    int64_t rows, cols;
    double cost[E_OPTS], herr[E_OPTS], rel[E_OPTS], kl[E_OPTS];
} e_item;

/* Brute force: the least summed error (err[i·E_OPTS + o]) with cost ≤ budget
 * (its cost into *best_cost when not NULL). With unit > 0, costs are first
 * rounded up to units and the budget down, as the pass's DP does. */
static double e_best(const e_item *it, const double *err, double budget, double unit,
                     double *best_cost) {
    double best = INFINITY, bc = 0, cost[E_ITEMS * E_OPTS];
    for (int i = 0; i < E_ITEMS * E_OPTS; i++)
        cost[i] = unit > 0 ? ceil(it[i / E_OPTS].cost[i % E_OPTS] / unit - 1e-9)
                           : it[i / E_OPTS].cost[i % E_OPTS];
    if (unit > 0) budget = floor(budget / unit);
    for (long v0 = 0; v0 < 4782969; v0++) { /* 3^14 */
        long v = v0;
        double c = 0, e = 0;
        for (int i = 0; i < E_ITEMS; i++, v /= E_OPTS) {
            c += cost[i * E_OPTS + v % E_OPTS];
            e += err[i * E_OPTS + v % E_OPTS];
        }
        if (c <= budget && e < best) best = e, bc = c;
    }
    if (best_cost) *best_cost = bc;
    return best;
}

static void test_estimates(void) {
    const char *path = "tests/data/tiny/llama", *text = "tests/data/tok_sample.txt";
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m && m->tok && m->cfg.n_layers * 7 == E_ITEMS);
    /* The calibration samples. */
    FILE *f = fopen(text, "rb");
    CHECK_FATAL(f);
    char buf[8192];
    size_t len = fread(buf, 1, sizeof buf, f), n_ids;
    fclose(f);
    int32_t *all = NULL, ids[E_SAMPLES * E_TOKENS];
    CHECK_FATAL(qc_tokenizer_encode(m->tok, buf, len, 0, &all, &n_ids, &err) == 0);
    CHECK_FATAL(n_ids > E_TOKENS);
    uint64_t seed = 0;
    for (int s = 0; s < E_SAMPLES; s++)
        memcpy(ids + s * E_TOKENS, all + splitmix64(&seed) % (n_ids - E_TOKENS + 1),
               E_TOKENS * sizeof(int32_t));
    free(all);
    /* Every linear's inputs X over the samples. */
    qcrt_model *r = qcrt_model_from_ir(m, &err);
    CHECK_FATAL(r);
    qcrt_state *st = qcrt_state_new(r, E_TOKENS, E_TOKENS, &err);
    CHECK_FATAL(st);
    capture caps[E_ITEMS];
    qcrt_linear wrap[E_ITEMS];
    for (int i = 0; i < E_ITEMS; i++) {
        qcrt_linear **sl = kl_ref_slot(&r->blocks[i / 7], e_kinds[i % 7][0]);
        caps[i] = (capture){*sl, malloc((size_t)(E_SAMPLES * E_TOKENS * (*sl)->in) * sizeof(float)),
                            0, E_SAMPLES * E_TOKENS};
        wrap[i] = (qcrt_linear){(*sl)->out, (*sl)->in, capture_forward, NULL, &caps[i]};
        *sl = &wrap[i];
    }
    for (int s = 0; s < E_SAMPLES; s++) {
        qcrt_state_reset(st);
        CHECK_FATAL(qcrt_forward(r, st, ids + s * E_TOKENS, E_TOKENS, NULL, 0, &err) == 0);
    }
    for (int i = 0; i < E_ITEMS; i++)
        *kl_ref_slot(&r->blocks[i / 7], e_kinds[i % 7][0]) = caps[i].inner;
    /* Errors of RTN g32 (asymmetric, no clip search) at 2, 3, 4 and 8 bits. */
    static const int widths[E_OPTS + 1] = {2, 3, 4, 8};
    double *ref = kl_ref_log_probs(r, st, ids, E_SAMPLES, E_TOKENS, E_TOKENS);
    e_item it[E_ITEMS];
    double herr8[E_ITEMS], params = 0;
    for (int i = 0; i < E_ITEMS; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", i / 7, e_kinds[i % 7][1]);
        int64_t rows = caps[i].inner->out, cols = caps[i].inner->in, N = caps[i].n;
        CHECK_FATAL(N == E_SAMPLES * E_TOKENS);
        float *w = qcrt_load_tensor(m, name, rows, cols, &err), *deq = malloc(rows * cols * 4);
        CHECK_FATAL(w && deq);
        it[i].rows = rows, it[i].cols = cols;
        params += (double)(rows * cols);
        double energy = 0;
        for (int o = -1; o <= E_OPTS; o++) { /* -1: W itself */
            if (o >= 0) {
                qc_quant_format fmt = {widths[o], 32, 0};
                qc_clip_search none = {0, 1, 1};
                qc_quant_state *q = qc_quant_state_new(&fmt, rows, cols, &err);
                CHECK_FATAL(q && qc_quant_rtn(w, NULL, &none, q, deq, &err) == 0);
                qc_quant_state_free(q);
            }
            double e = 0; /* Σ_t ‖(W − Ŵ) x_t‖² (or ‖W x_t‖²) */
            for (int64_t t = 0; t < N; t++)
                for (int64_t a = 0; a < rows; a++) {
                    double y = 0;
                    for (int64_t c = 0; c < cols; c++)
                        y += ((double)w[a * cols + c] - (o >= 0 ? deq[a * cols + c] : 0)) *
                             caps[i].x[t * cols + c];
                    e += y * y;
                }
            if (o < 0) {
                energy = e;
            } else if (o == E_OPTS) {
                herr8[i] = e;
            } else {
                double groups = (double)rows * (double)((cols + 31) / 32);
                it[i].cost[o] = (double)(rows * cols) * widths[o] + groups * (16 + widths[o]);
                it[i].herr[o] = e;
                it[i].rel[o] = e / energy;
                it[i].kl[o] = kl_ref_replaced(r, st, i / 7, e_kinds[i % 7][0], deq, NULL, ids,
                                              E_SAMPLES, E_TOKENS, E_TOKENS, ref);
            }
        }
        free(w), free(deq), free(caps[i].x);
    }
    free(ref);
    qcrt_state_free(st);
    qcrt_model_free(r);
    qc_model_free(m);
    /* The pass: hessian with candidates 2, 3, 4; kl with 2, 3, 8 (8
     * extrapolated from 3); kl with 2, 3, 8 measuring only 3 (2 and 8
     * extrapolated from it). Each at the cost of the best choice within the
     * all-3-bit average plus 0.1 bits (kl: 1.5, so that some layers take 8
     * bits), plus 0.002: a budget the pass can meet within 0.01 on a model
     * this small (a 32 × 64 layer moves the average by 0.03 bits per bit). */
    static const char *const mode_name[3] = {"hessian", "kl", "kl, 3 measured"};
    double all3 = 0;
    for (int i = 0; i < E_ITEMS; i++)
        all3 += it[i].cost[1];
    for (int mode = 0; mode < 3; mode++) {
        int bits[E_OPTS] = {2, 3, mode ? 8 : 4};
        double budget, e[E_ITEMS * E_OPTS];
        e_item its[E_ITEMS];
        memcpy(its, it, sizeof its);
        for (int i = 0; i < E_ITEMS; i++) {
            for (int o = 0; o < E_OPTS; o++)
                e[i * E_OPTS + o] = mode == 0 ? it[i].rel[o] : it[i].kl[o];
            if (mode == 0) continue;
            double groups = (double)its[i].rows * (double)((its[i].cols + 31) / 32);
            its[i].cost[2] = (double)(its[i].rows * its[i].cols) * 8 + groups * 24;
            e[i * E_OPTS + 2] = it[i].kl[1] * herr8[i] / it[i].herr[1];
            if (mode == 2) e[i * E_OPTS] = it[i].kl[1] * it[i].herr[0] / it[i].herr[1];
        }
        e_best(its, e, all3 + (mode ? 1.5 : 0.1) * params, 0, &budget);
        budget = budget / params + 0.002;
        char y[1024];
        snprintf(y, sizeof y,
                 "quantc: 1\ncalibration: { text: %s, samples: %d, tokens: %d, seed: 0 }\n"
                 "passes:\n  - allocate: { budget_bits: %.6f, sensitivity: %s, candidates: [%d, "
                 "%d, %d], kl_samples: %d, kl_tokens: %d, kl_bits: %s }\n"
                 "  - quantize: { method: rtn, bits: 4, group_size: 32, clip_search: false }\n",
                 text, E_SAMPLES, E_TOKENS, budget, mode ? "kl" : "hessian", bits[0], bits[1],
                 bits[2], E_SAMPLES, E_TOKENS, mode == 2 ? "[3]" : "[2, 3, 4, 5]");
        qc_recipe *rc = qc_recipe_parse(y, strlen(y), "test", NULL, &err);
        qc_model *mm = rc ? qc_model_load(path, &err) : NULL;
        qc_calib_report rep;
        CHECK_FATAL(mm);
        if (qc_calibrate(mm, rc, NULL, NULL, NULL, &rep, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            qc_model_free(mm), qc_recipe_free(rc);
            continue;
        }
        double got = 0, cost = 0;
        for (int i = 0; i < E_ITEMS; i++) {
            int o = 0;
            while (o < E_OPTS && bits[o] != rep.layers[i].bits)
                o++;
            CHECK_FATAL(o < E_OPTS);
            got += e[i * E_OPTS + o];
            cost += its[i].cost[o];
        }
        /* The pass's DP: costs in units of 0.004/n bits per weight. */
        double opt = e_best(its, e, budget * params, params * 0.004 / E_ITEMS, NULL);
        fprintf(stderr, "%s: budget %.4f, chose %.4f bits, error %.6e; optimum %.6e\n",
                mode_name[mode], budget, cost / params, got, opt);
        CHECK_MSG(cost <= budget * params, "cost %.4f over budget %.4f", cost / params, budget);
        CHECK_MSG(fabs(got - opt) <= 1e-3 * opt, "error %.8e, optimum %.8e", got, opt);
        qc_calib_report_free(&rep);
        qc_model_free(mm);
        qc_recipe_free(rc);
    }
}

int main(void) {
    const char *const raq[] = {"rotate", "allocate", "quantize"};
    check_recipe("recipes/allocate-3.0.yaml", raq, 3, 3);
    check_recipe("recipes/allocate-2.5.yaml", raq, 3, 3);
    test_solver();
    test_model();
    test_estimates();
    TEST_END();
}
