/* Writer for the safetensors format (the reader is safetensors.h): an 8-byte
 * little-endian header length N, N bytes of JSON (padded with spaces to a
 * multiple of 8 so every tensor starts 8-byte aligned) mapping each tensor
 * name to {dtype, shape, data_offsets}, plus "__metadata__": {"format":
 * "pt"} (Hugging Face transformers refuses files without it), then the
 * tensors' bytes back to back in the order given.
 *
 * The header is built from the sizes alone, then each tensor's bytes are
 * asked for one at a time, so a writer never holds more than one tensor. */
#ifndef QC_SAFETENSORS_WRITE_H
#define QC_SAFETENSORS_WRITE_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_stw_entry {
    char *name;        /* owned by whoever built the entry */
    const char *dtype; /* "F32", "F16", "BF16", "I32", "I64", ... (static) */
    int n_dims;        /* 1 or 2 */
    int64_t shape[2];
    size_t nbytes; /* = numel × element size */
} qc_stw_entry;

/* Fills buf (e->nbytes bytes) with entry index i's bytes; 0 or -1 with err. */
typedef int (*qc_stw_fill_fn)(void *ud, int i, const qc_stw_entry *e, uint8_t *buf, qc_err *err);

/* Writes entries [first, first + n) of e to path (atomically: temporary name,
 * fsync, rename). Returns 0 or -1 with err naming the file. */
int qc_stw_write(const char *path, const qc_stw_entry *e, int first, int n, qc_stw_fill_fn fill,
                 void *ud, qc_err *err);

/* Bytes of one element of a safetensors dtype name; 0 when unknown. */
size_t qc_stw_dtype_size(const char *dtype);

#endif
