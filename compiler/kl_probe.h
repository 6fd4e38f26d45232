/* The loss sensitivity of single-linear perturbations, measured: the mean
 * KL divergence KL(p ‖ p̃) of the next-token distribution of the
 * full-precision model p from the same model with one linear's weight
 * replaced (e.g. by a quantized one), p̃, on a few calibration samples
 * (allocate's `sensitivity: kl`; layer-wise sensitivity as in HAWQ-V3 and
 * SqueezeLLM's ablations, measured instead of approximated).
 *
 * Streaming, one block at a time, so that each block's weights are loaded
 * once: block b advances every perturbed residual stream started in blocks
 * < b through the full-precision block b, then starts one stream per
 * perturbation of block b (the fp input of block b run through block b with
 * that linear replaced), then advances the fp stream. After the last block
 * every stream goes through the final norm and lm_head. Memory: one stream
 * (samples × tokens × dim floats) per perturbation, plus the fp log-probs
 * (samples × tokens × vocab floats). Time: each perturbation of block b
 * costs n_layers − b block forwards and one lm_head over samples × tokens.
 * Deterministic: every stream runs the same sequence of BLAS calls whatever
 * the thread count. */
#ifndef QC_KL_PROBE_H
#define QC_KL_PROBE_H

#include "model.h"

typedef struct qc_kl_probe qc_kl_probe;

/* A perturbation of the current block: linear `kind` ("q_proj", ...,
 * "down_proj") gets weight w (rows × cols of that linear, read during the
 * call) and bias (rows, or NULL). For a linear with an online transform,
 * w replaces the inner linear (the stored weight). */
typedef struct qc_kl_perturb {
    const char *kind;
    const float *w, *bias;
} qc_kl_perturb;

/* Measures on `samples` sequences of `tokens` ids (ids[s · stride + t]) of
 * model m as it is now (m must outlive the probe). Returns NULL with err. */
qc_kl_probe *qc_kl_probe_new(const qc_model *m, const int32_t *ids, int64_t stride, int samples,
                             int tokens, qc_err *err);
void qc_kl_probe_free(qc_kl_probe *p);

/* Block b, called for b = 0, 1, ..., n_layers − 1 in order (also with n = 0):
 * starts one stream per perturbation, numbered in call order from 0 across
 * blocks. Returns 0 or -1 with err. */
int qc_kl_probe_block(qc_kl_probe *p, int b, const qc_kl_perturb *pert, int n, qc_err *err);

/* After the last block: kl[i] = the mean over samples × tokens positions of
 * KL(p ‖ p̃_i) in nats for each stream i (kl holds as many as were started).
 * Returns 0 or -1 with err. */
int qc_kl_probe_finish(qc_kl_probe *p, double *kl, qc_err *err);

/* Streams started so far. */
int qc_kl_probe_count(const qc_kl_probe *p);

#endif
