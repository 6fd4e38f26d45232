/* Output files that appear complete or not at all: written under a
 * temporary name in the destination's directory, fsync'd, renamed over the
 * destination, then the directory fsync'd. */
#ifndef QC_ATOMIC_FILE_H
#define QC_ATOMIC_FILE_H

#include "err.h"

#include <stddef.h>

typedef struct qc_atomic_file {
    int fd;
    char *tmp;  /* owned: DEST.tmp.XXXXXX */
    char *dest; /* owned */
} qc_atomic_file;

/* Creates the temporary file (mkstemp: mode 0600 until the commit).
 * Returns 0 or -1 with err (e.g. the directory does not exist or is not
 * writable). */
int qc_atomic_open(qc_atomic_file *f, const char *dest, qc_err *err);

/* Writes all of buf (retrying short writes); -1 with err (e.g. ENOSPC). */
int qc_atomic_write(qc_atomic_file *f, const void *buf, size_t n, qc_err *err);

/* Gives the file the mode a plain creat would (0666 less the umask), fsync,
 * close, rename into place. On failure the temporary is removed. */
int qc_atomic_commit(qc_atomic_file *f, qc_err *err);

/* Removes the temporary (after an error); safe after commit and twice. */
void qc_atomic_abort(qc_atomic_file *f);

/* The process's umask, read without changing it where /proc allows
 * (umask(2) sets it for every thread). */
unsigned qc_umask(void);

#endif
