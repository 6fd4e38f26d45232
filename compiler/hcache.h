/* A block's linears that read the same input (q/k/v; gate/up) share one H
 * (compiler/pass.h); a pass that derives something costly from H (its
 * inverse's diagonal, its square root) computes it once per distinct H with
 * this cache. */
#ifndef QC_HCACHE_H
#define QC_HCACHE_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

/* Fills out (count doubles) from H (n × n); ud is the cache's. Returns 0
 * or -1 with err. */
typedef int (*qc_hcache_derive)(const double *H, int64_t n, double *out, const void *ud,
                                qc_err *err);

enum { QC_HCACHE_MAX = 8 };

typedef struct qc_hcache {
    qc_hcache_derive derive;
    const void *ud; /* passed to derive (e.g. parameters) */
    const double *H[QC_HCACHE_MAX];
    double *v[QC_HCACHE_MAX];
    int n;
} qc_hcache;

/* derive(H, n) for H (n × n), computed on first use and owned by c: count
 * doubles. NULL with err when derive fails or on allocation failure. */
const double *qc_hcache_get(qc_hcache *c, const double *H, int64_t n, size_t count, qc_err *err);

void qc_hcache_free(qc_hcache *c);

#endif
