/* Thread pool (see pool.h): a generation counter announces work, a counter
 * of remaining parts announces completion; both are spun on for a short
 * while, then waited for on condition variables. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SPIN 20000

struct qcrt_pool {
    int threads;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint gen;
    atomic_int remaining;
    int stop, parts;
    void (*fn)(void *, int, int);
    void *arg;
};

typedef struct worker_arg {
    qcrt_pool *p;
    int id;
} worker_arg;

static void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

static void *worker(void *a) {
    qcrt_pool *p = ((worker_arg *)a)->p;
    int id = ((worker_arg *)a)->id;
    free(a);
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen && spins < SPIN)
            relax(), spins++;
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->gen) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) return NULL;
        seen = atomic_load(&p->gen);
        if (id < p->parts) p->fn(p->arg, id, p->parts);
        if (atomic_fetch_sub(&p->remaining, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
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
    pthread_cond_init(&p->done, NULL);
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

void qcrt_pool_run(qcrt_pool *p, int parts, void (*fn)(void *, int, int), void *arg) {
    if (!p || p->threads == 1 || parts <= 1) {
        for (int i = 0; i < parts; i++)
            fn(arg, i, parts);
        return;
    }
    if (parts > p->threads) parts = p->threads;
    p->fn = fn;
    p->arg = arg;
    p->parts = parts;
    atomic_store(&p->remaining, p->threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, parts);
    for (int spins = 0; atomic_load(&p->remaining) > 0 && spins < SPIN; spins++)
        relax();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->remaining) > 0)
        pthread_cond_wait(&p->done, &p->mu);
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
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    free(p);
}
