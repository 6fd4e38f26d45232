/* Rotary position embeddings (RoFormer, Su et al. 2021) in Hugging Face's
 * rotate_half layout: within a head, dimension i pairs with i + head_dim/2 and
 * both rotate by the angle pos · inv_freq[i]. */
#ifndef QCRT_ROPE_H
#define QCRT_ROPE_H

#include "../compiler/model.h"

/* Fills inv_freq[head_dim/2] from the config: θ^(-2i/head_dim), then the
 * configured scaling (linear: / factor; llama3: Llama 3.1 frequency-dependent
 * rule). Returns 0, or -1 with err set for inconsistent scaling parameters. */
int qcrt_rope_inv_freq(const qc_config *c, float *inv_freq, qc_err *err);

/* Fills cos/sin tables [n_pos][half] for positions 0..n_pos-1. */
void qcrt_rope_tables(const float *inv_freq, int half, int n_pos, float *cos_t, float *sin_t);

/* Rotates n_heads heads of head_dim floats (contiguous, x[h*head_dim + i]) in
 * place with one position's cos/sin rows (head_dim/2 each). */
void qcrt_rope_apply(float *x, int n_heads, int head_dim, const float *cos_p, const float *sin_p);

#endif
