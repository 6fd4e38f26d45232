#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

qc_mapfile *qc_mapfile_open(const char *path, qc_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        qc_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        qc_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    qc_mapfile *f = qc_calloc(1, sizeof *f, err);
    if (!f) {
        close(fd);
        return NULL;
    }
    f->path = strdup(path);
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            qc_err_set(err, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            free(f->path);
            free(f);
            return NULL;
        }
        f->data = p;
        f->file_backed = 1;
    }
    close(fd);
    if (!f->path) {
        qc_mapfile_free(f);
        qc_err_set(err, "out of memory");
        return NULL;
    }
    return f;
}

void qc_mapfile_free(qc_mapfile *f) {
    if (!f) return;
    if (f->data) munmap((void *)f->data, f->size);
    free(f->path);
    free(f);
}

void qc_mapfile_release(const qc_mapfile *f, const void *p, size_t n) {
    if (!f || !f->file_backed || !f->data || n == 0) return;
    uintptr_t lo = (uintptr_t)p, hi = lo + n, base = (uintptr_t)f->data;
    if (lo < base || hi > base + f->size) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = lo / page * page; /* a shared edge page is only read back */
    hi = (hi + page - 1) / page * page;
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

char *qc_read_file(const char *path, size_t max_bytes, size_t *len, qc_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        qc_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                qc_err_set(err, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (n > max_bytes) {
            free(buf);
            fclose(fp);
            qc_err_set(err, "%s: larger than the limit of %zu bytes", path, max_bytes);
            return NULL;
        }
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        qc_err_set(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}
