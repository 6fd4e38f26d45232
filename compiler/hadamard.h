/* Hadamard matrices for rotations (QuaRot, Ashkboos et al. 2024; SpinQuant,
 * Liu et al. 2024): H_n with entries ±1 and H Hᵀ = n·I, applied in
 * O(n log n) as H_n = H_p ⊗ H_{2^k} (n = p·2^k): a fast Walsh-Hadamard
 * transform over the Sylvester factor and a dense p × p mix over the base.
 *
 * Supported sizes n = p·2^k where the base order p is 1, 2, or a Paley
 * order built from a prime q (generated from the definition, Paley 1933):
 *   Paley I:  p = q + 1 for prime q ≡ 3 (mod 4)    (4, 8, 12, 20, 24, 32, 44, 48, 60, 68, 72, ...)
 *   Paley II: p = 2(q + 1) for prime q ≡ 1 (mod 4) (12, 28, 36, 60, 76, 84, 108, 124, ...)
 * up to p ≤ QC_HADAMARD_MAX_BASE. The smallest base that works is used, so
 * 576 = 36·16 (Paley II, q = 17), 1536 = 12·128 (Paley I, q = 11),
 * 896 = 28·32, 4864 = 76·64, 8960 = 140·64, 14336 = 28·512; powers of two
 * are pure Sylvester. Sizes with no such base (e.g. 11008 = 2^8·43: 172 and
 * 344 need Paley over prime powers) are refused with a message. */
#ifndef QC_HADAMARD_H
#define QC_HADAMARD_H

#include "err.h"

#include <stdint.h>

#define QC_HADAMARD_MAX_BASE 1024

typedef struct qc_hadamard {
    int n;        /* order */
    int p;        /* base order (1 = pure Sylvester) */
    int pow2;     /* n / p, a power of two */
    float *base;  /* p × p, entries ±1, row-major */
    float *baseT; /* its transpose */
    float *tmp;   /* n scratch */
} qc_hadamard;

/* The base order a Hadamard matrix of order n would use, or 0 when n is
 * not supported. */
int qc_hadamard_base_order(int n);

/* Builds H_n (tests/test_hadamard.c checks H Hᵀ = n·I for every base). Returns NULL with err
 * naming the size when unsupported. Free with qc_hadamard_free. */
qc_hadamard *qc_hadamard_new(int n, qc_err *err);
void qc_hadamard_free(qc_hadamard *h);

/* x ← H x (transpose: Hᵀ x) for each of the `count` rows of x (count × n,
 * row-major), scaled by `scale` (1/sqrt(n) makes it orthogonal). Uses h's
 * scratch: one thread per qc_hadamard. */
void qc_hadamard_apply(qc_hadamard *h, float *x, int64_t count, int transpose, float scale);

/* The dense matrix (n × n floats, row-major, unscaled), for tests.
 * Returns 0 or -1 with err. */
int qc_hadamard_dense(qc_hadamard *h, float *out, qc_err *err);

#endif
