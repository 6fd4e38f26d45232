/* Spilling finished quantized states to disk.
 *
 * A compile keeps every finished layer's quantized state until the
 * artifact is written: at one byte per weight for the codes, 7 GB for a
 * Llama-3-8B. A spill moves each state's arrays into an unlinked temporary
 * file and maps them back read-only, so the driver's heap holds one block
 * at a time and the states cost page cache, not resident memory, until a
 * reader touches them (qc_quant_state_release gives the pages back). */
#ifndef QC_SPILL_H
#define QC_SPILL_H

#include "err.h"
#include "quant.h"

typedef struct qc_spill qc_spill;

/* Creates the temporary file in directory dir (unlinked at once, so
 * nothing is left behind whatever happens to the process); `what` (the
 * output it serves, e.g. the artifact's path) starts its error messages.
 * Returns NULL with err ("WHAT: cannot create a spill file in DIR:
 * reason"). Free with qc_spill_free; mappings made from it stay valid
 * after that. */
qc_spill *qc_spill_open(const char *dir, const char *what, qc_err *err);
void qc_spill_free(qc_spill *s);

/* Moves q's arrays into the file and points q at a read-only mapping of
 * them (q->map); the values are unchanged. A state already in a mapping is
 * left as it is. On error (a full disk, say) q keeps its heap arrays and
 * err names the output and the directory. */
int qc_spill_state(qc_spill *s, qc_quant_state *q, qc_err *err);

/* Bytes written to the file so far. */
uint64_t qc_spill_bytes(const qc_spill *s);

#endif
