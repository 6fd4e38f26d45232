#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct qc_spill {
    char *dir, *what;
    int fd;
    uint64_t end; /* file size: every state starts on a page boundary */
};

qc_spill *qc_spill_open(const char *dir, const char *what, qc_err *err) {
    qc_spill *s = qc_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    s->dir = strdup(dir);
    s->what = strdup(what);
    if (!path || !s->dir || !s->what) {
        free(path);
        free(s->dir);
        free(s->what);
        free(s);
        qc_err_set(err, "out of memory");
        return NULL;
    }
    snprintf(path, n, "%s/.quantc-spill-XXXXXX", dir);
    s->fd = mkstemp(path);
    if (s->fd < 0) {
        qc_err_set(err, "%s: cannot create a spill file in %s: %s", what, dir, strerror(errno));
        free(path);
        free(s->dir);
        free(s->what);
        free(s);
        return NULL;
    }
    unlink(path);
    free(path);
    return s;
}

void qc_spill_free(qc_spill *s) {
    if (!s) return;
    close(s->fd);
    free(s->dir);
    free(s->what);
    free(s);
}

uint64_t qc_spill_bytes(const qc_spill *s) {
    return s ? s->end : 0;
}

enum { N_ARRAYS = 10, ALIGN = 64 };

/* The state's arrays and their sizes, in file order. */
static void arrays(qc_quant_state *q, void ***slot, size_t *size) {
    size_t rc = (size_t)q->rows * (size_t)q->cols, ng = (size_t)q->rows * (size_t)q->n_groups;
    size_t nnz = (size_t)q->nnz, r = (size_t)q->rank;
    void **s[N_ARRAYS] = {(void **)&q->codes, (void **)&q->scales, (void **)&q->zeros,
                          (void **)&q->g_idx, (void **)&q->perm,   (void **)&q->row_ptr,
                          (void **)&q->col,   (void **)&q->val,    (void **)&q->lr_a,
                          (void **)&q->lr_b};
    size_t n[N_ARRAYS] = {rc,
                          ng * sizeof(float),
                          ng * sizeof(float),
                          (size_t)q->cols * sizeof(int32_t),
                          q->perm ? (size_t)q->cols * sizeof(int32_t) : 0,
                          q->row_ptr ? ((size_t)q->rows + 1) * sizeof(int32_t) : 0,
                          nnz * sizeof(int32_t),
                          nnz * sizeof(uint16_t),
                          (size_t)q->rows * r * sizeof(uint16_t),
                          r * (size_t)q->cols * sizeof(uint16_t)};
    for (int i = 0; i < N_ARRAYS; i++) {
        slot[i] = s[i];
        size[i] = *s[i] ? n[i] : 0;
    }
}

static int write_all(qc_spill *s, const void *p, size_t n, uint64_t off, qc_err *err) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pwrite(s->fd, b, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return qc_err_set(err, "%s: writing the spill file of finished layers in %s failed: %s",
                              s->what, s->dir, k < 0 ? strerror(errno) : "no progress");
        b += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

int qc_spill_state(qc_spill *s, qc_quant_state *q, qc_err *err) {
    if (q->map) return 0;
    void **slot[N_ARRAYS];
    size_t size[N_ARRAYS], at[N_ARRAYS], len = 0;
    arrays(q, slot, size);
    for (int i = 0; i < N_ARRAYS; i++) {
        at[i] = len;
        len += (size[i] + ALIGN - 1) / ALIGN * ALIGN;
    }
    if (len == 0) return 0;
    uint64_t base = s->end;
    for (int i = 0; i < N_ARRAYS; i++)
        if (size[i] && write_all(s, *slot[i], size[i], base + at[i], err)) return -1;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, s->fd, (off_t)base);
    if (map == MAP_FAILED)
        return qc_err_set(err, "%s: mapping the spill file in %s failed: %s", s->what, s->dir,
                          strerror(errno));
    long page = sysconf(_SC_PAGESIZE);
    s->end = (base + len + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    for (int i = 0; i < N_ARRAYS; i++) {
        if (!*slot[i]) continue;
        free(*slot[i]);
        *slot[i] = size[i] ? (uint8_t *)map + at[i] : NULL;
    }
    q->map = map;
    q->map_len = len;
    /* Written pages are in the page cache; the mapping has touched none. */
    return 0;
}
