/* Reader for the safetensors format (huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of JSON mapping tensor names to
 * {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data
 * area that follows the header) plus an optional "__metadata__" object of
 * strings, then the tensor bytes. Only F32, F16 and BF16 tensors are
 * accepted; everything is validated before a tensor is handed out. */
#ifndef QC_SAFETENSORS_H
#define QC_SAFETENSORS_H

#include "err.h"
#include "mapfile.h"
#include "model.h"

#include <stddef.h>
#include <stdint.h>

#define QC_ST_MAX_DIMS 8
/* Largest JSON header accepted (the reference implementation's limit). */
#define QC_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct qc_st_tensor {
    char *name;     /* owned */
    qc_dtype dtype; /* QC_DT_F32, QC_DT_F16 or QC_DT_BF16 */
    int n_dims;     /* 0 (scalar) .. QC_ST_MAX_DIMS */
    int64_t shape[QC_ST_MAX_DIMS];
    const uint8_t *data; /* into the parsed buffer; nbytes are in bounds */
    size_t offset;       /* byte offset of data from the start of the file */
    size_t nbytes;       /* = numel * element size */
} qc_st_tensor;

typedef struct qc_safetensors {
    qc_st_tensor *tensors; /* owned array, in header order */
    int n_tensors;
    size_t data_start; /* file offset of the data area (8 + header length) */
} qc_safetensors;

/* Parses size bytes at data (a whole .safetensors file, usually a
 * qc_mapfile's mapping); `name` is used in error messages. The tensors point
 * into `data`, which must outlive the result. Returns a new qc_safetensors
 * (free with qc_safetensors_free) or NULL with err set to one line naming the
 * file, the tensor and the byte offsets involved. */
qc_safetensors *qc_safetensors_parse(const char *name, const uint8_t *data, size_t size,
                                     qc_err *err);

/* Same over a mapped file (name = f->path). */
qc_safetensors *qc_safetensors_parse_file(const qc_mapfile *f, qc_err *err);

void qc_safetensors_free(qc_safetensors *st);

/* Fills *t as the model IR's view of s: 2-D stays {rows, cols}, 1-D becomes
 * {n, 1} and a scalar {1, 1}, both with n_dims 1. t->name borrows s->name.
 * Returns -1 (t untouched) for tensors of more than 2 dimensions. */
int qc_st_tensor_view(const qc_st_tensor *s, qc_tensor *t);

/* Finds a tensor by name; NULL when absent. */
const qc_st_tensor *qc_safetensors_find(const qc_safetensors *st, const char *name);

#endif
