/* Read-only memory-mapped files. */
#ifndef QC_MAPFILE_H
#define QC_MAPFILE_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_mapfile {
    char *path;          /* owned copy of the path, used in error messages */
    const uint8_t *data; /* mapping of the whole file (NULL when size is 0) */
    size_t size;
    int file_backed; /* a mapping of a file (qc_mapfile_open), not anonymous memory */
} qc_mapfile;

/* Maps `path` read-only. Returns a new qc_mapfile (caller frees with
 * qc_mapfile_free) or NULL with err set ("PATH: reason"). */
qc_mapfile *qc_mapfile_open(const char *path, qc_err *err);
void qc_mapfile_free(qc_mapfile *f);

/* Drops the pages of [p, p + n) (inside f) from this process's resident
 * memory when f maps a file: they are read again from the file (or the
 * page cache) when next touched. Does nothing for anonymous memory, whose
 * contents exist nowhere else. */
void qc_mapfile_release(const qc_mapfile *f, const void *p, size_t n);

/* Reads a whole (small) file into a NUL-terminated heap buffer; *len gets the
 * size without the NUL. Caller frees. Files over max_bytes are an error. */
char *qc_read_file(const char *path, size_t max_bytes, size_t *len, qc_err *err);

#endif
