#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

unsigned qc_umask(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    unsigned mask;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &mask) == 1) {
            fclose(f);
            return mask & 0777;
        }
    if (f) fclose(f);
    mode_t m = umask(0); /* no /proc (or a kernel before 4.7): set and restore */
    umask(m);
    return (unsigned)m & 0777;
}

int qc_atomic_open(qc_atomic_file *f, const char *dest, qc_err *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(dest) + 16;
    f->dest = strdup(dest);
    f->tmp = malloc(n);
    if (!f->dest || !f->tmp) {
        qc_atomic_abort(f);
        return qc_err_set(err, "out of memory");
    }
    snprintf(f->tmp, n, "%s.tmp.XXXXXX", dest);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp);
        f->tmp = NULL;
        qc_atomic_abort(f);
        return qc_err_set(err, "%s: cannot create a file there: %s", dest, strerror(e));
    }
    return 0;
}

int qc_atomic_write(qc_atomic_file *f, const void *buf, size_t n, qc_err *err) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return qc_err_set(err, "%s: write: %s", f->tmp,
                              w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int qc_atomic_commit(qc_atomic_file *f, qc_err *err) {
    int rc = 0;
    if (fchmod(f->fd, 0666 & ~qc_umask()) != 0)
        rc = qc_err_set(err, "%s: chmod: %s", f->tmp, strerror(errno));
    if (rc == 0 && fsync(f->fd) != 0)
        rc = qc_err_set(err, "%s: fsync: %s", f->tmp, strerror(errno));
    if (close(f->fd) != 0 && rc == 0)
        rc = qc_err_set(err, "%s: close: %s", f->tmp, strerror(errno));
    f->fd = -1;
    if (rc == 0 && rename(f->tmp, f->dest) != 0)
        rc = qc_err_set(err, "%s: rename to %s: %s", f->tmp, f->dest, strerror(errno));
    if (rc) {
        qc_atomic_abort(f);
        return -1;
    }
    const char *slash = strrchr(f->dest, '/');
    char *dir =
        slash ? strndup(f->dest, slash == f->dest ? 1 : (size_t)(slash - f->dest)) : strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        fsync(dfd); /* best effort: the rename has happened */
        close(dfd);
    }
    free(dir);
    free(f->tmp);
    f->tmp = NULL;
    free(f->dest);
    f->dest = NULL;
    return 0;
}

void qc_atomic_abort(qc_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->dest);
    f->tmp = f->dest = NULL;
}
