/* The reference for measured KL divergences (test_kl_probe, test_allocate):
 * the whole-model forward (qcrt_forward, checked against numpy and Hugging
 * Face in test_forward) and the KL computed here in f64 from its logits.
 * Header-only; each test is one translation unit. */
#ifndef QC_TESTS_KL_REF_H
#define QC_TESTS_KL_REF_H

#include "runtime/forward.h"
#include "tests/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The slot of linear `kind` in b (the inner linear under an online
 * transform). */
static inline qcrt_linear **kl_ref_slot(qcrt_block *b, const char *kind) {
    qcrt_linear **s = !strcmp(kind, "q_proj")      ? &b->q
                      : !strcmp(kind, "k_proj")    ? &b->k
                      : !strcmp(kind, "v_proj")    ? &b->v
                      : !strcmp(kind, "o_proj")    ? &b->o
                      : !strcmp(kind, "gate_proj") ? &b->gate
                      : !strcmp(kind, "up_proj")   ? &b->up
                                                   : &b->down;
    qcrt_linear **in = qcrt_linear_online_inner(*s);
    return in ? in : s;
}

/* Log-probs (f64) of r on `samples` sequences ids[s·stride ...] of `tokens`
 * each: (samples·tokens) × vocab, caller frees. */
static inline double *kl_ref_log_probs(const qcrt_model *r, qcrt_state *st, const int32_t *ids,
                                       int samples, int tokens, int stride) {
    int V = r->cfg.vocab;
    double *lp = malloc((size_t)samples * tokens * V * sizeof(double));
    float *logits = malloc((size_t)tokens * V * sizeof(float));
    qc_err err = {{0}};
    CHECK_FATAL(lp && logits);
    for (int s = 0; s < samples; s++) {
        qcrt_state_reset(st);
        CHECK_FATAL(qcrt_forward(r, st, ids + (size_t)s * stride, tokens, logits, 1, &err) == 0);
        for (int t = 0; t < tokens; t++) {
            const float *z = logits + (size_t)t * V;
            double mx = z[0], sum = 0;
            for (int v = 1; v < V; v++)
                mx = fmax(mx, z[v]);
            for (int v = 0; v < V; v++)
                sum += exp(z[v] - mx);
            for (int v = 0; v < V; v++)
                lp[((size_t)s * tokens + t) * V + v] = z[v] - mx - log(sum);
        }
    }
    free(logits);
    return lp;
}

/* Mean over positions of KL(p ‖ q): p = ref (from kl_ref_log_probs), q = r now. */
static inline double kl_ref(const qcrt_model *r, qcrt_state *st, const int32_t *ids, int samples,
                            int tokens, int stride, const double *ref) {
    size_t n = (size_t)samples * tokens * r->cfg.vocab;
    double *lq = kl_ref_log_probs(r, st, ids, samples, tokens, stride), kl = 0;
    for (size_t i = 0; i < n; i++)
        kl += exp(ref[i]) * (ref[i] - lq[i]);
    free(lq);
    return kl / ((double)samples * tokens);
}

/* kl_ref with r's linear `kind` of block b replaced by weight w (out × in,
 * copied) and bias (may be NULL, copied); r is restored afterwards. */
static inline double kl_ref_replaced(qcrt_model *r, qcrt_state *st, int b, const char *kind,
                                     const float *w, const float *bias, const int32_t *ids,
                                     int samples, int tokens, int stride, const double *ref) {
    qcrt_linear **s = kl_ref_slot(&r->blocks[b], kind), *orig = *s;
    size_t nw = (size_t)(orig->out * orig->in) * sizeof(float);
    float *wc = malloc(nw), *bc = NULL;
    CHECK_FATAL(wc);
    memcpy(wc, w, nw);
    if (bias) {
        bc = malloc((size_t)orig->out * sizeof(float));
        CHECK_FATAL(bc);
        memcpy(bc, bias, (size_t)orig->out * sizeof(float));
    }
    qc_err err = {{0}};
    *s = qcrt_linear_f32_new(wc, bc, orig->out, orig->in, &err);
    CHECK_FATAL(*s);
    double kl = kl_ref(r, st, ids, samples, tokens, stride, ref);
    qcrt_linear_free(*s);
    *s = orig;
    return kl;
}

#endif
