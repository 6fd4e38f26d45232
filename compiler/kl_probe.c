#include "kl_probe.h"

#include "dequant.h"
#include "runtime/forward.h"
#include "runtime/par_blas.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qc_kl_probe {
    const qc_model *m;
    qcrt_model *shell;
    qcrt_state *st;
    int samples, tokens, next_block;
    size_t per; /* floats of one stream: samples × tokens × dim */
    float *fp;  /* the full-precision stream */
    float **streams;
    int n, cap;
};

void qc_kl_probe_free(qc_kl_probe *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++)
        free(p->streams[i]);
    free(p->streams);
    free(p->fp);
    qcrt_state_free(p->st);
    qcrt_model_free(p->shell);
    free(p);
}

qc_kl_probe *qc_kl_probe_new(const qc_model *m, const int32_t *ids, int64_t stride, int samples,
                             int tokens, qc_err *err) {
    const qc_config *c = &m->cfg;
    if (samples < 1 || tokens < 1 || tokens > stride) {
        qc_err_set(err, "kl probe: %d samples of %d tokens (of %lld) is not a measurement", samples,
                   tokens, (long long)stride);
        return NULL;
    }
    const qc_tensor *emb = qc_model_find(m, "model.embed_tokens.weight");
    if (!emb) {
        qc_err_set(err, "%s: missing tensor 'model.embed_tokens.weight'", m->path);
        return NULL;
    }
    qc_kl_probe *p = qc_calloc(1, sizeof *p, err);
    if (!p) return NULL;
    p->m = m;
    p->samples = samples;
    p->tokens = tokens;
    size_t rb;
    if (qc_mul_size((size_t)samples * (size_t)tokens, (size_t)c->dim, &p->per) ||
        p->per > SIZE_MAX / sizeof(float) || qc_dtype_nbytes(emb->dtype, c->dim, &rb)) {
        qc_err_set(err, "kl probe: %d × %d tokens of width %d too large", samples, tokens, c->dim);
        goto fail;
    }
    if (!(p->shell = qcrt_model_shell(m, err)) ||
        !(p->st = qcrt_state_new(p->shell, tokens, tokens, err)) ||
        !(p->fp = qc_malloc(p->per * sizeof(float), err)))
        goto fail;
    for (int s = 0; s < samples; s++)
        for (int t = 0; t < tokens; t++) {
            int32_t id = ids[(size_t)s * (size_t)stride + (size_t)t];
            if (id < 0 || (size_t)(id + 1) * rb > emb->nbytes) {
                qc_err_set(err, "%s: cannot read embedding row %d", emb->name, id);
                goto fail;
            }
            qc_dequantize(emb->dtype, emb->data + (size_t)id * rb,
                          p->fp + ((size_t)s * tokens + (size_t)t) * (size_t)c->dim, c->dim);
        }
    return p;
fail:
    qc_kl_probe_free(p);
    return NULL;
}

int qc_kl_probe_count(const qc_kl_probe *p) {
    return p->n;
}

/* Runs block b (weights blk) over every sample of stream x in place. */
static int run_block(qc_kl_probe *p, const qcrt_block *blk, int b, float *x, qc_err *err) {
    size_t one = (size_t)p->tokens * (size_t)p->m->cfg.dim;
    for (int s = 0; s < p->samples; s++) {
        qcrt_state_reset(p->st);
        if (qcrt_block_forward(p->shell, blk, p->st, b, x + (size_t)s * one, p->tokens, err))
            return -1;
    }
    return 0;
}

/* Where linear `kind` sits in blk (the inner linear under an online
 * transform), or NULL. */
static qcrt_linear **slot_of(qcrt_block *blk, const char *kind) {
    static const char *const kinds[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
    qcrt_linear **slots[7] = {&blk->q, &blk->k, &blk->v, &blk->o, &blk->gate, &blk->up, &blk->down};
    for (int i = 0; i < 7; i++)
        if (!strcmp(kind, kinds[i])) {
            qcrt_linear **inner = qcrt_linear_online_inner(*slots[i]);
            return inner ? inner : slots[i];
        }
    return NULL;
}

/* A new f32 linear holding copies of w (out × in) and bias. */
static qcrt_linear *copy_linear(const float *w, const float *bias, int64_t out, int64_t in,
                                qc_err *err) {
    size_t n = (size_t)out * (size_t)in;
    float *wc = qc_malloc(n * sizeof(float), err);
    float *bc = bias && wc ? qc_malloc((size_t)out * sizeof(float), err) : NULL;
    if (!wc || (bias && !bc)) {
        free(wc);
        return NULL;
    }
    memcpy(wc, w, n * sizeof(float));
    if (bias) memcpy(bc, bias, (size_t)out * sizeof(float));
    qcrt_linear *l = qcrt_linear_f32_new(wc, bc, out, in, err);
    if (!l) free(wc), free(bc);
    return l;
}

int qc_kl_probe_block(qc_kl_probe *p, int b, const qc_kl_perturb *pert, int n, qc_err *err) {
    if (b != p->next_block || b >= p->m->cfg.n_layers)
        return qc_err_set(err, "kl probe: block %d out of order (expected %d)", b, p->next_block);
    qcrt_block blk;
    int rc = -1;
    if (qcrt_block_load(p->m, b, &blk, err)) goto out;
    for (int i = 0; i < p->n; i++)
        if (run_block(p, &blk, b, p->streams[i], err)) goto out;
    if (p->n + n > p->cap) {
        int cap = p->n + n + 64;
        float **ns = realloc(p->streams, (size_t)cap * sizeof *ns);
        if (!ns) {
            qc_err_set(err, "out of memory");
            goto out;
        }
        p->streams = ns;
        p->cap = cap;
    }
    for (int i = 0; i < n; i++) {
        qcrt_linear **slot = slot_of(&blk, pert[i].kind);
        if (!slot) {
            qc_err_set(err, "kl probe: block %d has no linear '%s'", b, pert[i].kind);
            goto out;
        }
        float *x = qc_malloc(p->per * sizeof(float), err);
        qcrt_linear *orig = *slot,
                    *l = x ? copy_linear(pert[i].w, pert[i].bias, orig->out, orig->in, err) : NULL;
        if (!l) {
            free(x);
            goto out;
        }
        memcpy(x, p->fp, p->per * sizeof(float));
        *slot = l;
        int r = run_block(p, &blk, b, x, err);
        *slot = orig;
        qcrt_linear_free(l);
        p->streams[p->n++] = x;
        if (r) goto out;
    }
    if (run_block(p, &blk, b, p->fp, err)) goto out;
    p->next_block++;
    rc = 0;
out:
    qcrt_block_free(&blk);
    return rc;
}

/* Log-softmax of logits x (n), in place; the normaliser summed in f64. */
static void log_softmax(float *x, int64_t n) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += expf(x[i] - mx);
    float lse = mx + (float)log(s);
    for (int64_t i = 0; i < n; i++)
        x[i] -= lse;
}

/* Log-probs of stream x, sample s, into lp (tokens × vocab): final RMSNorm,
 * lm_head (head, vocab × dim), log-softmax. xn: tokens × dim scratch. */
static void log_probs(const qc_kl_probe *p, const float *x, int s, const float *norm,
                      const float *head, float *xn, float *lp) {
    const qc_config *c = &p->m->cfg;
    int64_t dim = c->dim, T = p->tokens;
    for (int64_t t = 0; t < T; t++) {
        const float *r = x + ((size_t)s * (size_t)T + (size_t)t) * (size_t)dim;
        double ss = 0;
        for (int64_t j = 0; j < dim; j++)
            ss += (double)r[j] * r[j];
        float inv = 1.0f / sqrtf((float)(ss / (double)dim) + c->norm_eps);
        for (int64_t j = 0; j < dim; j++)
            xn[t * dim + j] = r[j] * inv * norm[j];
    }
    qcrt_sgemm(CblasNoTrans, CblasTrans, (int)T, c->vocab, (int)dim, 1.0f, xn, (int)dim, head,
               (int)dim, 0.0f, lp, c->vocab);
    for (int64_t t = 0; t < T; t++)
        log_softmax(lp + (size_t)t * (size_t)c->vocab, c->vocab);
}

int qc_kl_probe_finish(qc_kl_probe *p, double *kl, qc_err *err) {
    const qc_config *c = &p->m->cfg;
    if (p->next_block != c->n_layers)
        return qc_err_set(err, "kl probe: finished after %d of %d blocks", p->next_block,
                          c->n_layers);
    size_t V = (size_t)c->vocab, T = (size_t)p->tokens, n_lp;
    if (qc_mul_size(V * T, (size_t)p->samples, &n_lp) || n_lp > SIZE_MAX / sizeof(float))
        return qc_err_set(err, "kl probe: log-probs of %d × %d tokens too large", p->samples,
                          p->tokens);
    const char *head_name = c->tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    float *norm = qcrt_load_tensor(p->m, "model.norm.weight", c->dim, 0, err);
    float *head = norm ? qcrt_load_tensor(p->m, head_name, c->vocab, c->dim, err) : NULL;
    float *ref = head ? qc_malloc(n_lp * sizeof(float), err) : NULL;
    float *lq = ref ? qc_malloc(V * T * sizeof(float), err) : NULL;
    float *xn = lq ? qc_malloc(T * (size_t)c->dim * sizeof(float), err) : NULL;
    int rc = -1;
    if (!xn) goto out;
    /* ref: the fp probabilities p; KL(p ‖ q) = Σ p log p − Σ p log q, the
     * first sum (minus the entropy) once for all streams. */
    double neg_entropy = 0;
    for (int s = 0; s < p->samples; s++) {
        float *r = ref + (size_t)s * V * T;
        log_probs(p, p->fp, s, norm, head, xn, r);
        for (size_t k = 0; k < V * T; k++) {
            double lp = r[k];
            r[k] = expf(r[k]);
            neg_entropy += r[k] * lp;
        }
    }
    for (int i = 0; i < p->n; i++) {
        double cross = 0;
        for (int s = 0; s < p->samples; s++) {
            log_probs(p, p->streams[i], s, norm, head, xn, lq);
            const float *r = ref + (size_t)s * V * T;
            for (size_t k = 0; k < V * T; k++)
                cross += (double)r[k] * lq[k];
        }
        kl[i] = (neg_entropy - cross) / ((double)p->samples * (double)T);
    }
    rc = 0;
out:
    free(norm), free(head), free(ref), free(lq), free(xn);
    return rc;
}
