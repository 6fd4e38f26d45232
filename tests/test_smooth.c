/* The smooth pass (passes/smooth.c).
 *
 * (1) Math on a synthetic GQA block (8 heads of width 2 over 4 kv heads...):
 *     with α = 0.5 the scales equal s_j = a_j^½ / w_j^½ centred (computed
 *     here from the definition), the q/k/v/gate/up columns are multiplied and
 *     the norms divided by them, H becomes D⁻¹HD⁻¹, and every product the
 *     block computes (norm → q/k/v/gate/up, v → o through GQA head sharing,
 *     silu(gate)·up → down) is unchanged. Tolerance 1e-5 relative: a few f32
 *     roundings of products of O(1) values with scales in [1e-4, 1e4].
 * (2) α search: the chosen scales never give a larger proxy error than
 *     s = 1 (checked by recomputing both errors here with RTN).
 * (3) Whole models: qc_calibrate with a smooth-only recipe (search) on every
 *     tiny model with a tokenizer; the smoothed IR's logits on real text equal
 *     the original's within 2e-5·max(10, |logit|) (as test_rotate: f32
 *     reordering only; a missed fold changes logits by O(1)).
 * (4) Bad parameters and partial targets fail with a message. */
#include "compiler/calibrate.h"
#include "compiler/model.h"
#include "compiler/pass.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "compiler/tokenizer.h"
#include "runtime/forward.h"
#include "tests/check.h"
#include "tests/recipe_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const qc_pass qc_pass_smooth;

enum { DIM = 16, HEADS = 4, KV = 2, HD = 4, QD = HEADS * HD, KVD = KV * HD, FFN = 24, NT = 64 };

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* xorshift64, uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

typedef struct blk {
    qc_calib_linear l[7];
    qc_calib_block b;
    double *H[4];
    float *absmax[4];
    float attn[DIM], ffn[DIM];
    float x[NT][DIM];
} blk;

static const char *kinds[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                               "gate_proj", "up_proj", "down_proj"};

/* Statistics of input rows X (n × c): H = XᵀX/n, absmax. */
static void stats(const float *x, int n, int c, double *H, float *am) {
    for (int i = 0; i < c; i++) {
        am[i] = 0;
        for (int j = 0; j < c; j++) {
            double s = 0;
            for (int t = 0; t < n; t++)
                s += (double)x[t * c + i] * x[t * c + j];
            H[i * c + j] = s / n;
        }
        for (int t = 0; t < n; t++)
            am[i] = fmaxf(am[i], fabsf(x[t * c + i]));
    }
}

static void matvec(const float *w, int rows, int cols, const float *x, float *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)w[r * cols + c] * x[c];
        y[r] = (float)s;
    }
}

/* The block's products on token x (one position: attention output = v of
 * the query head's kv head): q, k, v, o, gate, up, down outputs. */
static void products(const blk *k, const float *x, float out[7][FFN > QD ? FFN : QD]) {
    float h[DIM], vv[KVD], oin[QD], g[FFN], u[FFN], act[FFN];
    for (int i = 0; i < DIM; i++)
        h[i] = x[i] * k->attn[i];
    matvec(k->l[0].w, QD, DIM, h, out[0]);
    matvec(k->l[1].w, KVD, DIM, h, out[1]);
    matvec(k->l[2].w, KVD, DIM, h, vv);
    for (int i = 0; i < KVD; i++)
        vv[i] += k->l[2].bias[i];
    memcpy(out[2], vv, sizeof vv);
    for (int hq = 0; hq < HEADS; hq++)
        for (int d = 0; d < HD; d++)
            oin[hq * HD + d] = vv[(hq / (HEADS / KV)) * HD + d];
    matvec(k->l[3].w, DIM, QD, oin, out[3]);
    for (int i = 0; i < DIM; i++)
        h[i] = x[i] * k->ffn[i];
    matvec(k->l[4].w, FFN, DIM, h, g);
    matvec(k->l[5].w, FFN, DIM, h, u);
    memcpy(out[4], g, sizeof g);
    memcpy(out[5], u, sizeof u);
    for (int i = 0; i < FFN; i++)
        act[i] = g[i] / (1 + expf(-g[i])) * u[i];
    matvec(k->l[6].w, DIM, FFN, act, out[6]);
}

static void make_block(blk *k) {
    memset(k, 0, sizeof *k);
    const int rows[7] = {QD, KVD, KVD, DIM, FFN, FFN, DIM},
              cols[7] = {DIM, DIM, DIM, QD, DIM, DIM, FFN};
    const int grp[7] = {0, 0, 0, 1, 2, 2, 3}, gdim[4] = {DIM, QD, DIM, FFN};
    for (int g = 0; g < 4; g++) {
        k->H[g] = calloc((size_t)gdim[g] * gdim[g], sizeof(double));
        k->absmax[g] = calloc((size_t)gdim[g], sizeof(float));
    }
    for (int i = 0; i < 7; i++) {
        qc_calib_linear *l = &k->l[i];
        l->name = kinds[i];
        l->kind = kinds[i];
        l->rows = rows[i];
        l->cols = cols[i];
        l->w = malloc(sizeof(float) * rows[i] * cols[i]);
        for (int j = 0; j < rows[i] * cols[i]; j++)
            l->w[j] = frand() * (j % 7 == 0 ? 3.0f : 0.5f);
        l->H = k->H[grp[i]];
        l->act_absmax = k->absmax[grp[i]];
        l->n_tokens = NT;
        l->targeted = 1;
    }
    k->l[2].bias = malloc(sizeof(float) * KVD);
    for (int i = 0; i < KVD; i++)
        k->l[2].bias[i] = frand();
    for (int i = 0; i < DIM; i++) {
        k->attn[i] = 1 + 0.5f * frand();
        k->ffn[i] = 1 + 0.5f * frand();
    }
    for (int t = 0; t < NT; t++) /* outlier channels 3 and 11 */
        for (int i = 0; i < DIM; i++)
            k->x[t][i] = frand() * (i == 3 || i == 11 ? 20.0f : 1.0f);
    /* Statistics of each input, from the block's own products. */
    static float in[4][NT * FFN];
    for (int t = 0; t < NT; t++) {
        float out[7][FFN > QD ? FFN : QD];
        products(k, k->x[t], out);
        for (int i = 0; i < DIM; i++) {
            in[0][t * DIM + i] = k->x[t][i] * k->attn[i];
            in[2][t * DIM + i] = k->x[t][i] * k->ffn[i];
        }
        for (int hq = 0; hq < HEADS; hq++)
            for (int d = 0; d < HD; d++)
                in[1][t * QD + hq * HD + d] = out[2][(hq / (HEADS / KV)) * HD + d];
        for (int i = 0; i < FFN; i++)
            in[3][t * FFN + i] = out[4][i] / (1 + expf(-out[4][i])) * out[5][i];
    }
    for (int g = 0; g < 4; g++)
        stats(in[g], NT, gdim[g], k->H[g], k->absmax[g]);
    k->b = (qc_calib_block){.index = 0,
                            .n_linears = 7,
                            .linears = k->l,
                            .attn_norm = k->attn,
                            .ffn_norm = k->ffn,
                            .dim = DIM,
                            .head_dim = HD};
}

static void free_block(blk *k) {
    for (int i = 0; i < 7; i++)
        free(k->l[i].w);
    free(k->l[2].bias);
    for (int g = 0; g < 4; g++)
        free(k->H[g]), free(k->absmax[g]);
}

static qc_recipe *recipe(const char *params, qc_err *err) {
    char y[512];
    snprintf(y, sizeof y,
             "quantc: 1\ncalibration: { text: tests/data/tok_sample.txt, samples: 4, tokens: 32 "
             "}\npasses:\n  - smooth: %s\n  - quantize: { method: rtn, bits: 3, group_size: 8 }\n",
             params);
    return qc_recipe_parse(y, strlen(y), "test", NULL, err);
}

static int run_smooth(blk *k, const char *params, qc_err *err) {
    qc_recipe *r = recipe(params, err);
    if (!r) return -1;
    qc_pass_ctx ctx = {.quantize = &r->passes[1].params};
    int rc = qc_pass_smooth.run_block(&ctx, &r->passes[0].params, &k->b, err);
    qc_recipe_free(r);
    return rc;
}

static void test_math(void) {
    blk k0, k;
    make_block(&k0);
    rng = 88172645463325252ull;
    make_block(&k);
    qc_err err = {{0}};
    CHECK_MSG(run_smooth(&k, "{ alpha: \"0.5\" }", &err) == 0, "%s", err.msg);
    /* q/k/v scales from the definition: s = sqrt(a_j / max_r |W_rj|) over q,k,v, centred. */
    float s[DIM], lo = INFINITY, hi = 0;
    for (int j = 0; j < DIM; j++) {
        float w = 0;
        for (int i = 0; i < 3; i++)
            for (int r = 0; r < k0.l[i].rows; r++)
                w = fmaxf(w, fabsf(k0.l[i].w[r * DIM + j]));
        s[j] = sqrtf(k0.absmax[0][j] / w);
        lo = fminf(lo, s[j]), hi = fmaxf(hi, s[j]);
    }
    double md = 0;
    for (int j = 0; j < DIM; j++)
        s[j] /= sqrtf(lo * hi);
    for (int j = 0; j < DIM; j++) {
        md = fmax(md, fabs(k.attn[j] - k0.attn[j] / s[j]) / fabs(k0.attn[j] / s[j]));
        for (int r = 0; r < QD; r++)
            md = fmax(md, fabs(k.l[0].w[r * DIM + j] - k0.l[0].w[r * DIM + j] * s[j]) /
                              (fabs(k0.l[0].w[r * DIM + j] * s[j]) + 1e-6));
        for (int i = 0; i < DIM; i++)
            md = fmax(md, fabs(k.H[0][j * DIM + i] - k0.H[0][j * DIM + i] / (s[i] * s[j])) /
                              (fabs(k0.H[0][j * DIM + i] / (s[i] * s[j])) + 1e-9));
    }
    CHECK_MSG(md < 1e-5, "q/k/v smoothing differs from the definition by %g", md);
    CHECK(fabsf(k.absmax[0][3] * s[3] - k0.absmax[0][3]) < 1e-4f * k0.absmax[0][3]);
    CHECK(k.l[0].modified && k.l[2].modified && k.l[3].modified && k.l[6].modified);
    /* The block computes the same products (v, o through GQA, up → down). */
    double worst = 0;
    for (int t = 0; t < 8; t++) {
        float a[7][FFN > QD ? FFN : QD], b[7][FFN > QD ? FFN : QD];
        products(&k0, k0.x[t], a);
        products(&k, k0.x[t], b);
        const int n[7] = {QD, KVD, 0, DIM, FFN, 0, DIM}; /* v and up are rescaled on purpose */
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < n[i]; j++)
                worst = fmax(worst, fabs(a[i][j] - b[i][j]) / (fabs(a[i][j]) + 1e-3));
    }
    CHECK_MSG(worst < 1e-4, "smoothed block computes different outputs (rel %g)", worst);
    free_block(&k0);
    free_block(&k);
}

/* Proxy error Σ tr(E H Eᵀ) of RTN(W) for q/k/v (3-bit, g8) on the block's current H. */
static double qkv_error(const blk *k) {
    double e = 0;
    for (int i = 0; i < 3; i++) {
        const qc_calib_linear *l = &k->l[i];
        qc_quant_format f = {3, 8, 0};
        qc_clip_search clip = {0, 1, 1};
        qc_err err;
        qc_quant_state *q = qc_quant_state_new(&f, l->rows, l->cols, &err);
        float *deq = malloc(sizeof(float) * l->rows * l->cols);
        qc_quant_rtn(l->w, NULL, &clip, q, deq, &err);
        for (int r = 0; r < l->rows; r++)
            for (int a = 0; a < DIM; a++)
                for (int b = 0; b < DIM; b++)
                    e += (double)(l->w[r * DIM + a] - deq[r * DIM + a]) * l->H[a * DIM + b] *
                         (l->w[r * DIM + b] - deq[r * DIM + b]);
        qc_quant_state_free(q);
        free(deq);
    }
    return e;
}

static void test_search(void) {
    blk k;
    rng = 7;
    make_block(&k);
    double before = qkv_error(&k);
    qc_err err = {{0}};
    CHECK_MSG(run_smooth(&k, "{ alpha: search, grid: 10 }", &err) == 0, "%s", err.msg);
    double after = qkv_error(&k); /* H was rescaled with the input: same units */
    fprintf(stderr, "search: q/k/v proxy error %.4g -> %.4g\n", before, after);
    CHECK(after <= before * (1 + 1e-6));
    free_block(&k);
}

static void test_bad(void) {
    blk k;
    make_block(&k);
    qc_err err = {{0}};
    CHECK(run_smooth(&k, "{ alpha: \"1.5\" }", &err) == -1 && strstr(err.msg, "alpha"));
    CHECK(run_smooth(&k, "{ alpha: fast }", &err) == -1 && strstr(err.msg, "search or a number"));
    k.l[1].targeted = 0; /* k_proj left out while q/v are smoothed */
    CHECK(run_smooth(&k, "{ alpha: \"0.5\" }", &err) == -1 && strstr(err.msg, "q/k/v together"));
    free_block(&k);
}

static float *logits_of(const qc_model *m, const int32_t *ids, int n) {
    qc_err err = {{0}};
    qcrt_model *r = qcrt_model_from_ir(m, &err);
    CHECK_FATAL(r);
    qcrt_state *s = qcrt_state_new(r, n, n, &err);
    float *lg = malloc((size_t)n * (size_t)m->cfg.vocab * sizeof *lg);
    CHECK_FATAL(s && lg && qcrt_forward(r, s, ids, n, lg, 1, &err) == 0);
    qcrt_state_free(s);
    qcrt_model_free(r);
    return lg;
}

static void test_model(const char *path) {
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    CHECK_FATAL(m);
    CHECK_MSG(m->tok, "%s: no tokenizer", path);
    if (!m->tok) {
        qc_model_free(m);
        return;
    }
    int32_t ids[48];
    for (int i = 0; i < 48; i++)
        ids[i] = (i * 37 + 11) % m->cfg.vocab;
    float *ref = logits_of(m, ids, 48);
    /* smooth only: drop the quantize pass so the IR stays full precision */
    const char *y = "quantc: 1\ncalibration: { text: tests/data/tok_sample.txt, samples: 4, "
                    "tokens: 32 }\npasses:\n  - smooth: { alpha: 0.5 }\n";
    float g0[4], g1[4];
    const qc_tensor *nt = qc_model_find(m, "model.layers.0.input_layernorm.weight");
    float *gfull = malloc((size_t)nt->shape[0] * sizeof *gfull);
    CHECK_FATAL(gfull && qc_tensor_to_f32(nt, gfull, &err) == 0);
    memcpy(g0, gfull, sizeof g0);
    qc_recipe *r = qc_recipe_parse(y, strlen(y), "test", NULL, &err);
    CHECK_FATAL(r);
    qc_calib_report rep;
    CHECK_MSG(qc_calibrate(m, r, NULL, NULL, NULL, &rep, &err) == 0, "%s: %s", path, err.msg);
    float *got = logits_of(m, ids, 48);
    nt = qc_model_find(m, "model.layers.0.input_layernorm.weight");
    CHECK_FATAL(qc_tensor_to_f32(nt, gfull, &err) == 0);
    memcpy(g1, gfull, sizeof g1);
    free(gfull);
    CHECK_MSG(memcmp(g0, g1, sizeof g0) != 0, "%s: the norm was not smoothed", path);
    double md = 0, mx = 10;
    for (size_t i = 0; i < (size_t)48 * m->cfg.vocab; i++) {
        md = fmax(md, fabs((double)ref[i] - got[i]));
        mx = fmax(mx, fabs(ref[i]));
    }
    fprintf(stderr, "%s: smoothed model, max |Δlogit| %.3g (scale %.3g)\n", path, md, mx);
    CHECK_MSG(md <= 2e-5 * mx, "%s: %g", path, md);
    qc_calib_report_free(&rep);
    qc_recipe_free(r);
    free(ref), free(got);
    qc_model_free(m);
}


int main(void) {
    const char *const sq[] = {"smooth", "quantize"};
    check_recipe("recipes/smooth-w4a16-g128.yaml", sq, 2, 4);
    check_recipe("recipes/smooth-w3a16-g128.yaml", sq, 2, 3);
    test_math();
    test_search();
    test_bad();
    /* Models with a tokenizer (the calibration text is tokenized). */
    const char *models[] = {"tests/data/tiny/llama", "tests/data/tiny/qwen3",
                            "tests/data/gguf_tiny_llama.gguf", "tests/data/gguf_tiny_qwen2.gguf",
                            "tests/data/gguf_tiny_qwen3.gguf"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        test_model(models[i]);
    TEST_END();
}
