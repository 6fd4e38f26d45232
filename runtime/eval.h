/* Perplexity and agreement with a reference model over a token stream. */
#ifndef QCRT_EVAL_H
#define QCRT_EVAL_H

#include "forward.h"

#include <stddef.h>

typedef struct qcrt_eval_opts {
    int ctx;         /* window length in tokens (≥ 2) */
    int max_windows; /* 0: every whole window of the text */
    int decode;      /* 1: one token per forward call (batch-1 decode path) */
    /* Called after each window (may be NULL): windows done, total, running
     * mean negative log-likelihood. */
    void (*progress)(void *ud, int done, int total, double nll_mean);
    void *ud;
} qcrt_eval_opts;

typedef struct qcrt_eval_result {
    int windows;         /* windows evaluated */
    long long scored;    /* tokens scored: windows × (ctx − 1) */
    long long text_tokens;
    double nll;          /* mean negative log-likelihood (nats) */
    double ppl;          /* exp(nll) */
    int has_ref;
    double kl;           /* mean KL(ref ‖ model) of next-token distributions (nats) */
    double top1;         /* fraction of positions where both argmaxes agree */
    double ref_ppl;      /* perplexity of the reference on the same windows */
} qcrt_eval_result;

/* Splits ids into non-overlapping windows of opts->ctx tokens (a tail
 * shorter than ctx is dropped) and scores every token after the first in each
 * window given the tokens before it in the same window. With ref non-NULL also
 * computes KL and top-1 agreement against it (vocabularies must match).
 * Returns 0, or -1 with err set. */
int qcrt_eval_ppl(const qcrt_model *m, const qcrt_model *ref, const int32_t *ids, size_t n_ids,
                  const qcrt_eval_opts *opts, qcrt_eval_result *res, qc_err *err);

/* log-softmax of one row of logits into out (double precision). Returns the
 * log-sum-exp. Non-finite logits make it return NAN. */
double qcrt_log_softmax(const float *logits, int n, double *out);

#endif
