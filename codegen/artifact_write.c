#include "artifact_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

typedef struct entry {
    qcrt_section_kind kind;
    qcrt_compression comp;
    char *name, *target;
    uint64_t offset, stored, raw, sum;
} entry;

struct qc_artifact_writer {
    char *dest, *tmp;
    int fd;
    qc_artifact_compress comp;
    uint64_t pos; /* end of what has been written */
    entry *entries;
    int n, cap;
    uint64_t raw_total, stored_total;
    int failed, finished;
};

static int write_at(qc_artifact_writer *w, const void *p, size_t n, uint64_t off, qc_err *err) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pwrite(w->fd, b, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            w->failed = 1;
            return qc_err_set(err, "%s: write failed: %s", w->tmp,
                              k < 0 ? strerror(errno) : "no progress");
        }
        b += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

/* Zero padding up to `to`. */
static int pad_to(qc_artifact_writer *w, uint64_t to, qc_err *err) {
    static const uint8_t zeros[4096];
    while (w->pos < to) {
        size_t n = to - w->pos > sizeof zeros ? sizeof zeros : (size_t)(to - w->pos);
        if (write_at(w, zeros, n, w->pos, err)) return -1;
        w->pos += n;
    }
    return 0;
}

static int is_artifact(const char *path) {
    uint8_t magic[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int ok = fread(magic, 1, 8, f) == 8 && qcrt_artifact_has_magic(magic, 8);
    fclose(f);
    return ok;
}

static int check_compress(const qc_artifact_compress *c, qc_err *err) {
    if (c && (c->method > QCRT_COMP_ZSTD ||
              (c->method == QCRT_COMP_ZSTD && (c->level < 1 || c->level > ZSTD_maxCLevel()))))
        return qc_err_set(err, "compression %d / zstd level %d out of range 1..%d", c->method,
                          c->level, ZSTD_maxCLevel());
    return 0;
}

int qc_artifact_writer_set_compress(qc_artifact_writer *w, const qc_artifact_compress *c,
                                    qc_err *err) {
    if (check_compress(c, err)) return -1;
    w->comp = *c;
    return 0;
}

qc_artifact_writer *qc_artifact_writer_new(const char *dest, const qc_artifact_compress *c,
                                           qc_err *err) {
    struct stat st;
    if (stat(dest, &st) == 0 && (!S_ISREG(st.st_mode) || (st.st_size > 0 && !is_artifact(dest)))) {
        qc_err_set(err, "%s: exists and is not a quantc artifact; not replacing it", dest);
        return NULL;
    }
    if (check_compress(c, err)) return NULL;
    qc_artifact_writer *w = qc_calloc(1, sizeof *w, err);
    if (!w) return NULL;
    w->fd = -1;
    if (c) w->comp = *c;
    size_t n = strlen(dest) + 32;
    w->dest = strdup(dest);
    w->tmp = malloc(n);
    if (!w->dest || !w->tmp) {
        qc_err_set(err, "out of memory");
        qc_artifact_writer_free(w);
        return NULL;
    }
    snprintf(w->tmp, n, "%s.tmp.%ld", dest, (long)getpid());
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        qc_err_set(err, "%s: cannot create %s: %s", dest, w->tmp, strerror(errno));
        free(w->tmp);
        w->tmp = NULL; /* nothing to remove */
        qc_artifact_writer_free(w);
        return NULL;
    }
    w->pos = QCRT_ARTIFACT_HEADER_SIZE; /* the header is written last */
    return w;
}

static int add_entry(qc_artifact_writer *w, entry e, qc_err *err) {
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        entry *ne = realloc(w->entries, (size_t)cap * sizeof *ne);
        if (!ne) return qc_err_set(err, "out of memory");
        w->entries = ne, w->cap = cap;
    }
    w->entries[w->n++] = e;
    return 0;
}

int qc_artifact_writer_add(qc_artifact_writer *w, qcrt_section_kind kind, const char *name,
                           const char *target, const void *data, size_t size, qc_err *err) {
    if (!target) target = "";
    if (w->failed || w->finished)
        return qc_err_set(err, "%s: writer is %s", w->dest, w->failed ? "in error" : "finished");
    size_t nl = strlen(name), tl = strlen(target);
    if (kind < QCRT_SEC_MANIFEST || kind > QCRT_SEC_KERNELS || nl == 0 ||
        nl > QCRT_ARTIFACT_MAX_NAME || tl > QCRT_ARTIFACT_MAX_NAME ||
        (kind == QCRT_SEC_KERNELS) != (tl > 0))
        return qc_err_set(err, "section '%.200s': bad kind, name or target", name);
    for (int i = 0; i < w->n; i++)
        if (w->entries[i].kind == kind && !strcmp(w->entries[i].name, name) &&
            !strcmp(w->entries[i].target, target))
            return qc_err_set(err, "section '%.200s' (%s) added twice", name,
                              qcrt_section_kind_name(kind));
    if (w->n >= (int)QCRT_ARTIFACT_MAX_SECTIONS) return qc_err_set(err, "too many sections");
    entry e = {.kind = kind, .comp = QCRT_COMP_NONE, .raw = size};
    const void *stored = data;
    void *zbuf = NULL;
    if (w->comp.method == QCRT_COMP_ZSTD && size > 0) {
        size_t bound = ZSTD_compressBound(size);
        if (!(zbuf = qc_malloc(bound, err))) return -1;
        size_t z = ZSTD_compress(zbuf, bound, data, size, w->comp.level);
        if (ZSTD_isError(z)) {
            free(zbuf);
            return qc_err_set(err, "section '%.200s': zstd: %s", name, ZSTD_getErrorName(z));
        }
        if (z < size) {
            stored = zbuf, size = z;
            e.comp = QCRT_COMP_ZSTD;
        }
    }
    uint64_t align = qcrt_artifact_alignment(kind, e.comp, size);
    e.offset = (w->pos + align - 1) / align * align;
    e.stored = size;
    e.sum = XXH3_64bits(stored, size);
    e.name = strdup(name);
    e.target = strdup(target);
    int rc = !e.name || !e.target ? qc_err_set(err, "out of memory") : 0;
    if (rc == 0) rc = pad_to(w, e.offset, err);
    if (rc == 0) rc = write_at(w, stored, size, e.offset, err);
    if (rc == 0) rc = add_entry(w, e, err);
    free(zbuf);
    if (rc) {
        free(e.name);
        free(e.target);
        w->failed = 1;
        return -1;
    }
    w->pos = e.offset + size;
    w->raw_total += e.raw;
    w->stored_total += size;
    return 0;
}

void qc_artifact_writer_sizes(const qc_artifact_writer *w, uint64_t *raw, uint64_t *stored) {
    *raw = w->raw_total;
    *stored = w->stored_total;
}

/* Table: n fixed entries, then the string pool (each name and target
 * followed by a NUL). */
static uint8_t *build_table(const qc_artifact_writer *w, size_t *len, qc_err *err) {
    size_t pool = 0;
    for (int i = 0; i < w->n; i++)
        pool += strlen(w->entries[i].name) + 1 +
                (w->entries[i].target[0] ? strlen(w->entries[i].target) + 1 : 0);
    size_t entries = (size_t)w->n * QCRT_ARTIFACT_ENTRY_SIZE;
    if (pool > UINT32_MAX) {
        qc_err_set(err, "section names too long");
        return NULL;
    }
    uint8_t *t = qc_calloc(entries + pool, 1, err);
    if (!t) return NULL;
    size_t at = entries;
    for (int i = 0; i < w->n; i++) {
        const entry *e = &w->entries[i];
        uint8_t *p = t + (size_t)i * QCRT_ARTIFACT_ENTRY_SIZE;
        size_t nl = strlen(e->name), tl = strlen(e->target);
        qcrt_put32(p + 0, (uint32_t)e->kind);
        qcrt_put32(p + 4, (uint32_t)e->comp);
        qcrt_put64(p + 8, e->offset);
        qcrt_put64(p + 16, e->stored);
        qcrt_put64(p + 24, e->raw);
        qcrt_put64(p + 32, e->sum);
        qcrt_put32(p + 40, (uint32_t)(at - entries));
        qcrt_put32(p + 44, (uint32_t)nl);
        memcpy(t + at, e->name, nl + 1);
        at += nl + 1;
        if (tl) {
            qcrt_put32(p + 48, (uint32_t)(at - entries));
            qcrt_put32(p + 52, (uint32_t)tl);
            memcpy(t + at, e->target, tl + 1);
            at += tl + 1;
        }
    }
    *len = entries + pool;
    return t;
}

static void fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fsync(fd); /* best effort: the rename itself has happened */
        close(fd);
    }
    free(dir);
}

int qc_artifact_writer_finish(qc_artifact_writer *w, qc_err *err) {
    if (w->failed || w->finished)
        return qc_err_set(err, "%s: writer is %s", w->dest, w->failed ? "in error" : "finished");
    size_t tlen;
    uint8_t *table = build_table(w, &tlen, err);
    if (!table) return -1;
    uint64_t table_off =
        (w->pos + QCRT_ARTIFACT_ALIGN - 1) / QCRT_ARTIFACT_ALIGN * QCRT_ARTIFACT_ALIGN;
    uint8_t h[QCRT_ARTIFACT_HEADER_SIZE] = {0};
    memcpy(h, QCRT_ARTIFACT_MAGIC, 8);
    qcrt_put32(h + 8, QCRT_ARTIFACT_VERSION);
    qcrt_put32(h + 12, QCRT_ARTIFACT_HEADER_SIZE);
    qcrt_put32(h + 16, (uint32_t)w->n);
    qcrt_put32(h + 20, QCRT_ARTIFACT_ENTRY_SIZE);
    qcrt_put64(h + 24, table_off);
    qcrt_put64(h + 32, tlen);
    qcrt_put64(h + 40, table_off + tlen);
    qcrt_put64(h + 48, XXH3_64bits(table, tlen));
    qcrt_put64(h + 56, XXH3_64bits(h, 56));
    int rc = pad_to(w, table_off, err);
    if (rc == 0) rc = write_at(w, table, tlen, table_off, err);
    if (rc == 0) rc = write_at(w, h, sizeof h, 0, err);
    free(table);
    if (rc == 0 && fsync(w->fd) != 0)
        rc = qc_err_set(err, "%s: fsync: %s", w->tmp, strerror(errno));
    if (rc == 0 && close(w->fd) != 0) rc = qc_err_set(err, "%s: %s", w->tmp, strerror(errno));
    if (rc == 0) w->fd = -1;
    if (rc == 0 && rename(w->tmp, w->dest) != 0)
        rc = qc_err_set(err, "%s: rename to %s: %s", w->tmp, w->dest, strerror(errno));
    if (rc) {
        w->failed = 1;
        return -1;
    }
    fsync_dir(w->dest);
    w->finished = 1;
    return 0;
}

void qc_artifact_writer_free(qc_artifact_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (!w->finished && w->tmp) unlink(w->tmp);
    for (int i = 0; i < w->n; i++) {
        free(w->entries[i].name);
        free(w->entries[i].target);
    }
    free(w->entries);
    free(w->dest);
    free(w->tmp);
    free(w);
}
