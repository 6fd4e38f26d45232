/* Next-token sampling: greedy, or temperature + nucleus (top-p) with a
 * seeded generator so runs are reproducible. */
#ifndef QCRT_SAMPLE_H
#define QCRT_SAMPLE_H

#include "../compiler/err.h"

#include <stdint.h>

typedef struct qcrt_sampler qcrt_sampler;

/* temperature 0 means greedy (argmax); top_p in (0, 1]. */
qcrt_sampler *qcrt_sampler_new(int vocab, float temperature, float top_p, uint64_t seed,
                               qc_err *err);
void qcrt_sampler_free(qcrt_sampler *s);
/* Picks a token from vocab logits (logits are not modified). */
int qcrt_sample(qcrt_sampler *s, const float *logits);

#endif
