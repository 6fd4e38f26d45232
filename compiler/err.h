/* Error reporting for library code: functions that can fail fill a qc_err and
 * return a negative int or NULL. Library code never prints or exits. */
#ifndef QC_ERR_H
#define QC_ERR_H

#include <stddef.h>

typedef struct qc_err {
    char msg[1024];
} qc_err;

/* Sets err->msg (printf-style) and returns -1, so callers can write
 * `return qc_err_set(err, "...")`. err may be NULL. */
int qc_err_set(qc_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (adds context while unwinding). */
int qc_err_prefix(qc_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int qc_mul_size(size_t a, size_t b, size_t *out);
int qc_add_size(size_t a, size_t b, size_t *out);

/* malloc/calloc that fill err on failure. */
void *qc_malloc(size_t n, qc_err *err);
void *qc_calloc(size_t count, size_t size, qc_err *err);

#endif
