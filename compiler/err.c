#include "err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qc_err_set(qc_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int qc_err_prefix(qc_err *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        size_t np = strlen(prefix);
        if (np > sizeof err->msg - 3) np = sizeof err->msg - 3;
        memcpy(err->msg, prefix, np);
        memcpy(err->msg + np, ": ", 2);
        size_t room = sizeof err->msg - np - 3, no = strnlen(old, room);
        memcpy(err->msg + np + 2, old, no);
        err->msg[np + 2 + no] = 0;
    }
    return -1;
}

int qc_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int qc_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

void *qc_malloc(size_t n, qc_err *err) {
    void *p = malloc(n ? n : 1);
    if (!p) qc_err_set(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *qc_calloc(size_t count, size_t size, qc_err *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) qc_err_set(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
