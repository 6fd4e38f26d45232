#include "sample.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float p;
    int id;
} prob_id;

struct qcrt_sampler {
    int vocab;
    float temperature, top_p;
    uint64_t state;
    prob_id *buf;
};

qcrt_sampler *qcrt_sampler_new(int vocab, float temperature, float top_p, uint64_t seed,
                               qc_err *err) {
    if (!(temperature >= 0) || !(top_p > 0 && top_p <= 1)) {
        qc_err_set(err, "temperature must be ≥ 0 and top-p in (0, 1] (got %g, %g)", temperature,
                   top_p);
        return NULL;
    }
    qcrt_sampler *s = qc_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    s->state = seed;
    s->buf = qc_malloc((size_t)vocab * sizeof *s->buf, err);
    if (!s->buf) {
        free(s);
        return NULL;
    }
    return s;
}

void qcrt_sampler_free(qcrt_sampler *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

/* splitmix64 (Steele et al. 2014): a small, well-mixed seeded generator. */
static double next_uniform(qcrt_sampler *s) {
    uint64_t z = (s->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_prob_desc(const void *a, const void *b) {
    const prob_id *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

int qcrt_sample(qcrt_sampler *s, const float *logits) {
    int n = s->vocab, best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temperature == 0) return best;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->buf[i].p = (float)exp((logits[i] - logits[best]) / s->temperature);
        s->buf[i].id = i;
        sum += s->buf[i].p;
    }
    qsort(s->buf, (size_t)n, sizeof *s->buf, by_prob_desc);
    /* Keep the smallest prefix whose mass reaches top_p, then sample in it. */
    double mass = 0;
    int keep = 0;
    while (keep < n && mass < s->top_p * sum) mass += s->buf[keep++].p;
    double r = next_uniform(s) * mass, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += s->buf[i].p;
        if (r < acc) return s->buf[i].id;
    }
    return s->buf[keep - 1].id;
}
