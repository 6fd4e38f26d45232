/* A small pthread pool for splitting one kernel call across threads: the
 * caller runs part 0, workers parts 1..n-1; run() returns when all parts
 * are done. Workers spin briefly before sleeping, so back-to-back calls
 * (one per linear layer while decoding) do not pay a wake-up each. */
#ifndef QCRT_POOL_H
#define QCRT_POOL_H

#include "../compiler/err.h"

typedef struct qcrt_pool qcrt_pool;

/* threads >= 1 (1: no workers; run() calls fn inline). */
qcrt_pool *qcrt_pool_new(int threads, qc_err *err);
int qcrt_pool_threads(const qcrt_pool *p);

/* Calls fn(arg, part, parts) for part = 0..parts-1, parts <= threads, in
 * parallel. Not reentrant: one run at a time per pool. */
void qcrt_pool_run(qcrt_pool *p, int parts, void (*fn)(void *arg, int part, int parts), void *arg);

void qcrt_pool_free(qcrt_pool *p);

#endif
