#include "hcache.h"

#include <stdlib.h>

const double *qc_hcache_get(qc_hcache *c, const double *H, int64_t n, size_t count, qc_err *err) {
    for (int i = 0; i < c->n; i++)
        if (c->H[i] == H) return c->v[i];
    if (c->n == QC_HCACHE_MAX) {
        qc_err_set(err, "more than %d distinct input statistics in a block", QC_HCACHE_MAX);
        return NULL;
    }
    double *v = count <= SIZE_MAX / sizeof *v ? qc_malloc(count * sizeof *v, err) : NULL;
    if (!v) {
        if (count > SIZE_MAX / sizeof *v) qc_err_set(err, "derived matrix too large");
        return NULL;
    }
    if (c->derive(H, n, v, c->ud, err)) {
        free(v);
        return NULL;
    }
    c->H[c->n] = H;
    c->v[c->n++] = v;
    return v;
}

void qc_hcache_free(qc_hcache *c) {
    for (int i = 0; i < c->n; i++)
        free(c->v[i]);
    c->n = 0;
}
