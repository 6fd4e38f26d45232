/* GGUF v3 writer (the format compiler/gguf.h reads): metadata key/values
 * and tensors collected in memory order, then written in one go to a
 * temporary file beside the destination, fsync'd and renamed into place, so
 * the destination never holds a partial file. Alignment 32 (the default,
 * not written as general.alignment unless set). Little-endian. */
#ifndef QC_GGUF_WRITE_H
#define QC_GGUF_WRITE_H

#include "err.h"
#include "gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_gguf_writer qc_gguf_writer;

qc_gguf_writer *qc_gguf_writer_new(qc_err *err);
void qc_gguf_writer_free(qc_gguf_writer *w);

/* Metadata, in the order added. Keys must be unique (checked at write).
 * Each returns 0 or -1 with err (allocation). */
int qc_gguf_w_u32(qc_gguf_writer *w, const char *key, uint32_t v, qc_err *err);
int qc_gguf_w_i32(qc_gguf_writer *w, const char *key, int32_t v, qc_err *err);
int qc_gguf_w_f32(qc_gguf_writer *w, const char *key, float v, qc_err *err);
int qc_gguf_w_bool(qc_gguf_writer *w, const char *key, int v, qc_err *err);
int qc_gguf_w_str(qc_gguf_writer *w, const char *key, const char *s, qc_err *err);
/* An array of n numbers of type elem (U8..F64 except STRING/ARRAY), data in
 * the machine's (little-endian) representation of that type. */
int qc_gguf_w_arr(qc_gguf_writer *w, const char *key, qc_gguf_type elem, const void *data,
                  uint64_t n, qc_err *err);
int qc_gguf_w_str_arr(qc_gguf_writer *w, const char *key, const char *const *s, const size_t *lens,
                      uint64_t n, qc_err *err);
/* Copies one key/value of a source file unchanged (e.g. the tokenizer.*
 * keys of the model being exported). */
int qc_gguf_w_copy(qc_gguf_writer *w, const qc_gguf *src, const qc_gguf_kv *kv, qc_err *err);

/* A tensor: ggml type id, dims in ggml order (ne[0] contiguous), data of
 * nbytes (checked against the type's block size). Takes ownership of data
 * (freed with the writer, also on error). */
int qc_gguf_w_tensor(qc_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims,
                     const int64_t *ne, void *data, size_t nbytes, qc_err *err);

/* Writes everything to path atomically. */
int qc_gguf_w_write(qc_gguf_writer *w, const char *path, qc_err *err);

/* ggml type id of a qc_dtype (-1 when it has none). */
int qc_gguf_ggml_from_dtype(qc_dtype t);

#endif
