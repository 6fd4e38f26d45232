#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double qcrt_log_softmax(const float *logits, int n, double *out) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (!isfinite(logits[i])) return NAN;
        if (logits[i] > mx) mx = logits[i];
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    if (out)
        for (int i = 0; i < n; i++) out[i] = (double)logits[i] - lse;
    return lse;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Chunk size for a window: the forward pass runs this many tokens per call
 * so the logits buffer stays chunk × vocab. */
enum { EVAL_CHUNK = 128 };

typedef struct eval_run {
    const qcrt_model *m;
    qcrt_state *st;
    float *logits; /* EVAL_CHUNK × vocab */
} eval_run;

static int eval_run_init(eval_run *r, const qcrt_model *m, int ctx, qc_err *err) {
    r->m = m;
    r->st = qcrt_state_new(m, ctx, EVAL_CHUNK, err);
    if (!r->st) return -1;
    r->logits = qc_malloc((size_t)EVAL_CHUNK * (size_t)m->cfg.vocab * sizeof(float), err);
    return r->logits ? 0 : -1;
}

static void eval_run_free(eval_run *r) {
    qcrt_state_free(r->st);
    free(r->logits);
}

int qcrt_eval_ppl(const qcrt_model *m, const qcrt_model *ref, const int32_t *ids, size_t n_ids,
                  const qcrt_eval_opts *opts, qcrt_eval_result *res, qc_err *err) {
    memset(res, 0, sizeof *res);
    int ctx = opts->ctx, vocab = m->cfg.vocab;
    if (ctx < 2) return qc_err_set(err, "context length must be at least 2 (got %d)", ctx);
    if (ctx > m->cfg.max_pos && m->cfg.max_pos > 0)
        return qc_err_set(err, "context length %d exceeds the model's maximum of %d", ctx,
                          m->cfg.max_pos);
    if (ref && ref->cfg.vocab != vocab)
        return qc_err_set(err, "reference vocabulary (%d) differs from the model's (%d)",
                          ref->cfg.vocab, vocab);
    long long total = (long long)(n_ids / (size_t)ctx);
    if (opts->max_windows > 0 && total > opts->max_windows) total = opts->max_windows;
    if (total == 0)
        return qc_err_set(err, "text has %zu tokens, fewer than one window of %d", n_ids, ctx);
    res->text_tokens = (long long)n_ids;
    res->has_ref = ref != NULL;

    eval_run a = {0}, b = {0};
    double *lp = NULL, *lq = NULL;
    int rc = -1;
    if (eval_run_init(&a, m, ctx, err) || (ref && eval_run_init(&b, ref, ctx, err))) goto done;
    lp = qc_malloc((size_t)vocab * sizeof(double), err);
    lq = qc_malloc((size_t)vocab * sizeof(double), err);
    if (!lp || !lq) goto done;

    double nll = 0, ref_nll = 0, kl = 0;
    long long agree = 0, scored = 0;
    for (long long w = 0; w < total; w++) {
        const int32_t *win = ids + w * ctx;
        qcrt_state_reset(a.st);
        if (ref) qcrt_state_reset(b.st);
        int chunk = opts->decode ? 1 : EVAL_CHUNK;
        for (int c0 = 0; c0 < ctx; c0 += chunk) {
            int n = ctx - c0 < chunk ? ctx - c0 : chunk;
            if (qcrt_forward(m, a.st, win + c0, n, a.logits, 1, err)) goto done;
            if (ref && qcrt_forward(ref, b.st, win + c0, n, b.logits, 1, err)) goto done;
            for (int i = 0; i < n; i++) {
                int pos = c0 + i; /* logits at pos predict token pos + 1 */
                if (pos + 1 >= ctx) break;
                const float *row = a.logits + (size_t)i * vocab;
                int next = win[pos + 1];
                if (isnan(qcrt_log_softmax(row, vocab, lp))) {
                    qc_err_set(err, "window %lld position %d: non-finite logits", w, pos);
                    goto done;
                }
                nll -= lp[next];
                if (ref) {
                    const float *rrow = b.logits + (size_t)i * vocab;
                    if (isnan(qcrt_log_softmax(rrow, vocab, lq))) {
                        qc_err_set(err, "reference: window %lld position %d: non-finite logits",
                                   w, pos);
                        goto done;
                    }
                    ref_nll -= lq[next];
                    double k = 0; /* KL(ref ‖ model) = Σ q (log q − log p) */
                    for (int v = 0; v < vocab; v++) k += exp(lq[v]) * (lq[v] - lp[v]);
                    kl += k;
                    agree += argmax(row, vocab) == argmax(rrow, vocab);
                }
                scored++;
            }
        }
        if (opts->progress) opts->progress(opts->ud, (int)w + 1, (int)total, nll / scored);
    }
    res->windows = (int)total;
    res->scored = scored;
    res->nll = nll / scored;
    res->ppl = exp(res->nll);
    if (ref) {
        res->kl = kl / scored;
        res->top1 = (double)agree / scored;
        res->ref_ppl = exp(ref_nll / scored);
    }
    rc = 0;
done:
    free(lp);
    free(lq);
    eval_run_free(&a);
    if (ref) eval_run_free(&b);
    return rc;
}
