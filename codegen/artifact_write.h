/* Writes the artifact container (runtime/artifact.h, docs/artifact-format.md)
 * section by section: each section is appended to a temporary file beside the
 * destination as soon as it is added (so only one tensor needs to be in
 * memory at a time), the table and header go last, then the file is fsync'd
 * and renamed over the destination. Until qc_artifact_writer_finish returns
 * 0, nothing exists under the destination's name that was not there before.
 * The output depends only on the sections added and their order: no
 * timestamps, no addresses. */
#ifndef QC_ARTIFACT_WRITE_H
#define QC_ARTIFACT_WRITE_H

#include "compiler/err.h"
#include "runtime/artifact.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_artifact_writer qc_artifact_writer;

/* Compression applied by qc_artifact_writer_add (per writer; a section that
 * zstd does not make smaller is stored uncompressed). */
typedef struct qc_artifact_compress {
    qcrt_compression method; /* QCRT_COMP_NONE or QCRT_COMP_ZSTD */
    int level;               /* zstd level 1..19 */
} qc_artifact_compress;

/* Creates DEST.tmp.PID beside dest. Refuses a dest that exists and is not a
 * quantc artifact (so a typo cannot overwrite someone's file). Returns NULL
 * with err on failure. */
qc_artifact_writer *qc_artifact_writer_new(const char *dest, const qc_artifact_compress *c,
                                           qc_err *err);

/* Appends a section. target must be non-empty for kernels sections and NULL
 * or "" otherwise; names are unique per (kind, target). */
int qc_artifact_writer_add(qc_artifact_writer *w, qcrt_section_kind kind, const char *name,
                           const char *target, const void *data, size_t size, qc_err *err);

/* Changes the compression of the sections added from now on. */
int qc_artifact_writer_set_compress(qc_artifact_writer *w, const qc_artifact_compress *c,
                                    qc_err *err);

/* Writes the table and header, fsyncs, renames onto dest and fsyncs the
 * directory. The writer must still be freed. */
int qc_artifact_writer_finish(qc_artifact_writer *w, qc_err *err);

/* Bytes added (raw) and written (stored) so far, for the compression ratio. */
void qc_artifact_writer_sizes(const qc_artifact_writer *w, uint64_t *raw, uint64_t *stored);

/* Frees the writer; an unfinished temporary file is removed. */
void qc_artifact_writer_free(qc_artifact_writer *w);

#endif
