/* A small pthread pool for splitting one kernel call across threads. A call
 * is cut into parts; the caller and the workers claim parts one at a time
 * from a shared counter until none is left, and run() returns when every
 * part is done. A worker the OS has not scheduled (other processes on the
 * cores) therefore delays nothing: the threads that run take its share.
 * Workers spin briefly before sleeping, so back-to-back calls (one per
 * linear layer while decoding) do not pay a wake-up each. */
#ifndef QCRT_POOL_H
#define QCRT_POOL_H

#include "../compiler/err.h"

typedef struct qcrt_pool qcrt_pool;

/* threads >= 1 (1: no workers; run() calls fn inline). */
qcrt_pool *qcrt_pool_new(int threads, qc_err *err);
int qcrt_pool_threads(const qcrt_pool *p);

/* Calls fn(arg, part, parts, slot) once for each part = 0..parts-1 (parts
 * >= 1, any number), in parallel. slot (0..threads-1) names the thread that
 * runs it, for per-thread scratch; which thread runs which part varies from
 * call to call, so results must not depend on it. Not reentrant: one run at
 * a time per pool. */
void qcrt_pool_run(qcrt_pool *p, int parts, void (*fn)(void *arg, int part, int parts, int slot),
                   void *arg);

void qcrt_pool_free(qcrt_pool *p);

#endif
