/* Thread pool (see pool.h). A run publishes its parts as one 64-bit atomic
 * word, generation << 32 | next part: claiming a part is a compare-and-swap
 * that also checks the generation, so a worker that wakes late for an
 * earlier run can never claim a part of a later one. A counter of parts
 * done announces completion. Both waits spin for a short while (yielding
 * the core now and then, in case the thread they wait for is queued
 * behind us), then sleep on condition variables. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define SPIN 20000
#define YIELD_EVERY 256

struct qcrt_pool {
    int threads;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
    _Atomic uint64_t work;  /* generation << 32 | next unclaimed part */
    atomic_int done;        /* parts finished in this generation */
    int stop, parts;
    void (*fn)(void *, int, int, int);
    void *arg;
};

typedef struct worker_arg {
    qcrt_pool *p;
    int id;
} worker_arg;

static void relax(int spins) {
    if (spins % YIELD_EVERY == YIELD_EVERY - 1) {
        sched_yield();
        return;
    }
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

/* Claims and runs parts of generation gen until none is left. */
static void run_parts(qcrt_pool *p, uint32_t gen, int slot) {
    uint64_t w = atomic_load_explicit(&p->work, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(w >> 32) != gen || (int)(uint32_t)w >= p->parts) return;
        if (!atomic_compare_exchange_weak_explicit(&p->work, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* w reloaded */
        p->fn(p->arg, (int)(uint32_t)w, p->parts, slot);
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == p->parts) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        w = atomic_load_explicit(&p->work, memory_order_acquire);
    }
}

static void *worker(void *a) {
    qcrt_pool *p = ((worker_arg *)a)->p;
    int id = ((worker_arg *)a)->id;
    free(a);
    uint32_t seen = 0;
    for (;;) {
        int spins = 0;
        while ((uint32_t)(atomic_load_explicit(&p->work, memory_order_acquire) >> 32) == seen &&
               spins < SPIN)
            relax(spins++);
        pthread_mutex_lock(&p->mu);
        while ((uint32_t)(atomic_load(&p->work) >> 32) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) return NULL;
        seen = (uint32_t)(atomic_load_explicit(&p->work, memory_order_acquire) >> 32);
        run_parts(p, seen, id);
    }
}

qcrt_pool *qcrt_pool_new(int threads, qc_err *err) {
    if (threads < 1 || threads > 1024) {
        qc_err_set(err, "thread pool: %d threads (1..1024)", threads);
        return NULL;
    }
    qcrt_pool *p = qc_calloc(1, sizeof *p, err);
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (threads == 1) return p;
    p->th = qc_calloc((size_t)threads, sizeof *p->th, err);
    if (!p->th) {
        qcrt_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a || (a->p = p, a->id = i, pthread_create(&p->th[i], NULL, worker, a))) {
            free(a);
            p->threads = i; /* workers 1..i-1 exist */
            qcrt_pool_free(p);
            qc_err_set(err, "thread pool: cannot start thread %d", i);
            return NULL;
        }
    }
    return p;
}

int qcrt_pool_threads(const qcrt_pool *p) {
    return p ? p->threads : 1;
}

void qcrt_pool_run(qcrt_pool *p, int parts, void (*fn)(void *, int, int, int), void *arg) {
    if (!p || p->threads == 1 || parts <= 1) {
        for (int i = 0; i < parts; i++)
            fn(arg, i, parts, 0);
        return;
    }
    /* Every part of the previous run is done (run() waited for them), so no
     * thread reads fn/arg/parts now; workers that wake late see the new
     * generation. */
    p->fn = fn;
    p->arg = arg;
    p->parts = parts;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = (uint32_t)(atomic_load(&p->work) >> 32) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->work, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_parts(p, gen, 0);
    for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < parts && spins < SPIN;
         spins++)
        relax(spins);
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->done) < parts)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void qcrt_pool_free(qcrt_pool *p) {
    if (!p) return;
    if (p->th) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->threads; i++)
            pthread_join(p->th[i], NULL);
    }
    free(p->th);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->wake);
    free(p);
}
