/* The `rotate` pass (QuaRot, Ashkboos et al. 2024 §4; SpinQuant R1, Liu et
 * al. 2024): a model-level pass that makes the residual stream
 * incoherent. First each RMSNorm's scale g is folded into the linears that
 * read the norm's output (W ← W·diag(g), g ← 1); RMSNorm without a scale
 * commutes with any orthogonal Q (‖Qᵀh‖ = ‖h‖), so with
 *     Q = H_n·diag(d)/sqrt(n),  d_i = ±1 (seeded),  n = hidden size,
 * the stream h becomes Qᵀh by rotating the weights:
 *     embeddings E ← E·Q, q/k/v/gate/up and lm_head W ← W·Q (inputs),
 *     o_proj and down_proj W ← Qᵀ·W (outputs),
 * and the model computes the same function in exact arithmetic, with
 * outlier channels spread over all of them. Biases of q/k/v and qwen3's
 * per-head q/k norms act on outputs and are unaffected. Folding the final
 * norm makes lm_head differ from the embedding, so a tied model is untied
 * (cfg.tied_embeddings = 0, lm_head.weight added to the IR).
 *
 * online: [down_proj] adds QuaRot's R4: W_down ← W_down·Tᵀ with T = H_f /
 * sqrt(f) (f = ffn width, no random signs) stored, and T applied to
 * down_proj's input at run time (qc_model_set_online_hadamard;
 * runtime/linear_online.c).
 *
 * Memory: weights are rotated one tensor at a time and stored back as
 * owned f32 (qc_model_set_f32), so after the pass the IR holds every
 * rotated weight in f32 (4 bytes per parameter: 0.54 GB for a 135M model). */
#include "compiler/hadamard.h"
#include "compiler/model.h"
#include "compiler/pass.h"
#include "compiler/recipe.h"
#include "runtime/forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kinds[] = {"hadamard", NULL};

static const qc_param_spec params[] = {
    {"kind", QC_PARAM_STRING, "hadamard", 1, 0, kinds,
     "randomized Hadamard Q = H·diag(±1)/sqrt(n) (sizes: see compiler/hadamard.h)"},
    {"seed", QC_PARAM_INT, "0", 0, 2147483647, NULL, "seed of the random signs"},
    {"online", QC_PARAM_STRING_LIST, "[]", 1, 0, NULL,
     "linears that also get an online Hadamard on their input at run time: [] or [down_proj]"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct rot {
    qc_model *m;
    qc_hadamard *h; /* hidden size */
    float *signs;   /* d */
    float *ones;    /* dim ones, the folded norms' new weight */
} rot;

/* W (rows × n) ← W·Q: each row w ← diag(d)·Hᵀw/sqrt(n). */
static void rotate_rows(rot *r, float *w, int64_t rows) {
    int n = r->h->n;
    qc_hadamard_apply(r->h, w, rows, 1, 1.0f / sqrtf((float)n));
    for (int64_t i = 0; i < rows; i++)
        for (int j = 0; j < n; j++)
            w[i * n + j] *= r->signs[j];
}

static void transpose(const float *a, int64_t rows, int64_t cols, float *out) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            out[j * rows + i] = a[i * cols + j];
}

/* Loads `name` (rows × cols), scales its columns by g (may be NULL),
 * applies W·Q (side 'i') or Qᵀ·W (side 'o', as (Wᵀ·Q)ᵀ) and stores it back. */
static int rotate_tensor(rot *r, const char *src, const char *dst, int64_t rows, int64_t cols,
                         const float *g, char side, qc_err *err) {
    float *w = qcrt_load_tensor(r->m, src, rows, cols, err), *t = NULL;
    if (!w) return -1;
    if (g)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                w[i * cols + j] *= g[j];
    if (side == 'i') {
        rotate_rows(r, w, rows);
    } else {
        if (!(t = qc_malloc((size_t)(rows * cols) * sizeof(float), err))) {
            free(w);
            return -1;
        }
        transpose(w, rows, cols, t);
        rotate_rows(r, t, cols);
        transpose(t, cols, rows, w);
        free(t);
    }
    return qc_model_set_f32(r->m, dst, rows, cols, w, err);
}

static int set_ones(rot *r, const char *name, qc_err *err) {
    float *v = qc_malloc((size_t)r->h->n * sizeof(float), err);
    if (!v) return -1;
    memcpy(v, r->ones, (size_t)r->h->n * sizeof(float));
    return qc_model_set_f32(r->m, name, r->h->n, 0, v, err);
}

/* W_down ← W_down·Tᵀ, T = H_f/sqrt(f): row w ← T w. */
static int online_down(qc_model *m, const char *name, qc_hadamard *hf, int64_t rows, qc_err *err) {
    int f = hf->n;
    float *w = qcrt_load_tensor(m, name, rows, f, err);
    if (!w) return -1;
    qc_hadamard_apply(hf, w, rows, 0, 1.0f / sqrtf((float)f));
    if (qc_model_set_f32(m, name, rows, f, w, err)) return -1;
    return qc_model_set_online_hadamard(m, name, f, err);
}

static int rotate_block(rot *r, int l, qc_hadamard *hf, qc_err *err) {
    qc_model *m = r->m;
    const qc_config *c = &m->cfg;
    int64_t dim = c->dim, qd = (int64_t)c->n_heads * c->head_dim,
            kvd = (int64_t)c->n_kv_heads * c->head_dim, ffn = c->ffn_dim;
    char name[192], nn[2][192];
    snprintf(nn[0], sizeof nn[0], "model.layers.%d.input_layernorm.weight", l);
    snprintf(nn[1], sizeof nn[1], "model.layers.%d.post_attention_layernorm.weight", l);
    float *ga = qcrt_load_tensor(m, nn[0], dim, 0, err);
    float *gm = ga ? qcrt_load_tensor(m, nn[1], dim, 0, err) : NULL;
    int rc = -1;
    if (!gm) goto out;
    const struct {
        const char *mod;
        int64_t rows, cols;
        const float *g;
        char side;
    } lin[] = {
        {"self_attn.q_proj", qd, dim, ga, 'i'},  {"self_attn.k_proj", kvd, dim, ga, 'i'},
        {"self_attn.v_proj", kvd, dim, ga, 'i'}, {"self_attn.o_proj", dim, qd, NULL, 'o'},
        {"mlp.gate_proj", ffn, dim, gm, 'i'},    {"mlp.up_proj", ffn, dim, gm, 'i'},
        {"mlp.down_proj", dim, ffn, NULL, 'o'},
    };
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lin[i].mod);
        if (rotate_tensor(r, name, name, lin[i].rows, lin[i].cols, lin[i].g, lin[i].side, err))
            goto out;
    }
    snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
    if (hf && online_down(m, name, hf, dim, err)) goto out;
    rc = set_ones(r, nn[0], err) || set_ones(r, nn[1], err) ? -1 : 0;
out:
    free(ga);
    free(gm);
    return rc;
}

/* splitmix64 (Steele et al. 2014) for the signs. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int run_model(const qc_pass_ctx *ctx, const qc_params *p, qc_model *m, qc_err *err) {
    const qc_recipe_pass *rp = ctx->recipe_pass;
    if (rp && (rp->n_ignore > 0 || (rp->n_targets > 0 && rp->targets[0].line > 0)))
        return qc_err_set(err,
                          "line %d: targets/ignore do not apply: the rotation is of the whole "
                          "residual stream",
                          rp->line);
    const qc_config *c = &m->cfg;
    const qc_param_value *on = qc_params_get(p, "online");
    int want_online = 0;
    for (int i = 0; on && i < on->n; i++) {
        if (strcmp(on->slist[i], "down_proj"))
            return qc_err_set(err, "online: '%s' is not supported (only down_proj)", on->slist[i]);
        want_online = 1;
    }
    if (m->n_quant > 0) return qc_err_set(err, "the model is already quantized");
    rot r = {.m = m};
    qc_hadamard *hf = NULL;
    float *g = NULL;
    int rc = -1;
    /* Check every size before touching a weight: a failure leaves the IR as it was. */
    if (!(r.h = qc_hadamard_new(c->dim, err))) return qc_err_prefix(err, "hidden size");
    if (want_online && !(hf = qc_hadamard_new(c->ffn_dim, err))) {
        qc_err_prefix(err, "online down_proj (ffn width)");
        goto out;
    }
    r.signs = qc_malloc((size_t)c->dim * sizeof(float), err);
    r.ones = qc_malloc((size_t)c->dim * sizeof(float), err);
    if (!r.signs || !r.ones) goto out;
    uint64_t s = (uint64_t)qc_params_int(p, "seed");
    for (int i = 0; i < c->dim; i++) {
        r.signs[i] = splitmix64(&s) >> 63 ? -1.0f : 1.0f;
        r.ones[i] = 1.0f;
    }
    /* lm_head reads the final norm: W_head·diag(g)·Q, untied from E·Q. */
    if (!(g = qcrt_load_tensor(m, "model.norm.weight", c->dim, 0, err))) goto out;
    const char *head = c->tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    if (rotate_tensor(&r, head, "lm_head.weight", c->vocab, c->dim, g, 'i', err) ||
        set_ones(&r, "model.norm.weight", err))
        goto out;
    m->cfg.tied_embeddings = 0;
    if (rotate_tensor(&r, "model.embed_tokens.weight", "model.embed_tokens.weight", c->vocab,
                      c->dim, NULL, 'i', err))
        goto out;
    for (int l = 0; l < c->n_layers; l++)
        if (rotate_block(&r, l, hf, err)) {
            qc_err_prefix(err, "block %d", l);
            goto out;
        }
    rc = 0;
out:
    free(g);
    free(r.signs);
    free(r.ones);
    qc_hadamard_free(r.h);
    qc_hadamard_free(hf);
    return rc;
}

const qc_pass qc_pass_rotate = {
    .name = "rotate",
    .doc = "fold RMSNorm scales into the next linears and rotate the residual stream by a "
           "seeded randomized Hadamard matrix (model-level; targets do not apply); optional "
           "online Hadamard on down_proj's input",
    .params = params,
    .run_model = run_model,
};
