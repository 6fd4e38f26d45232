/* GGUF v2/v3 reader (little-endian files only). The whole header (metadata
 * and tensor infos) is validated when the file is opened: every count,
 * length, dimension, tensor type and data range is checked against the file
 * size before anything is allocated or read, so the accessors below never
 * touch bytes outside the file. Errors read "PATH: byte OFFSET: what".
 *
 * Layout (ggml docs/gguf.md): magic "GGUF", u32 version, u64 tensor count,
 * u64 kv count, kvs {string key, u32 type, value}, tensor infos {string name,
 * u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset}, padding to
 * general.alignment (default 32), then the data section. Strings are a u64
 * length and bytes without a NUL. */
#ifndef QC_GGUF_H
#define QC_GGUF_H

#include "err.h"
#include "mapfile.h"
#include "model.h"

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, numbered as in the file. */
typedef enum qc_gguf_type {
    QC_GGUF_U8 = 0,
    QC_GGUF_I8 = 1,
    QC_GGUF_U16 = 2,
    QC_GGUF_I16 = 3,
    QC_GGUF_U32 = 4,
    QC_GGUF_I32 = 5,
    QC_GGUF_F32 = 6,
    QC_GGUF_BOOL = 7,
    QC_GGUF_STRING = 8,
    QC_GGUF_ARRAY = 9,
    QC_GGUF_U64 = 10,
    QC_GGUF_I64 = 11,
    QC_GGUF_F64 = 12,
    QC_GGUF_TYPE_COUNT
} qc_gguf_type;

typedef struct qc_gguf_kv {
    char *key; /* owned, NUL-terminated (keys holding NUL are rejected) */
    qc_gguf_type type;
    qc_gguf_type arr_type; /* element type when type is QC_GGUF_ARRAY */
    uint64_t arr_n;        /* element count when type is QC_GGUF_ARRAY */
    size_t offset;         /* file offset of the value (arrays: of the first element) */
    size_t key_offset;     /* file offset of the key, for messages */
} qc_gguf_kv;

typedef struct qc_gguf_tensor {
    char *name;    /* owned, NUL-terminated */
    int n_dims;    /* 1..4 */
    int64_t ne[4]; /* ggml order: ne[0] is the innermost (contiguous) dimension;
                      unused dimensions are 1 */
    int64_t numel;
    uint32_t ggml_type; /* as in the file */
    qc_dtype dtype;
    size_t offset;       /* file offset of the data (aligned, validated) */
    const uint8_t *data; /* into the file */
    size_t nbytes;
    size_t info_offset; /* file offset of the tensor info, for messages */
} qc_gguf_tensor;

typedef struct qc_gguf {
    const char *path;    /* name used in messages (owned copy) */
    const uint8_t *data; /* the whole file */
    size_t size;
    qc_mapfile *file; /* owned mapping, or NULL (parsed from memory / taken) */
    uint32_t version;
    qc_gguf_kv *kvs; /* in file order */
    int64_t n_kv;
    qc_gguf_tensor *tensors; /* in file order */
    int64_t n_tensors;
    size_t alignment;
    size_t data_offset;                    /* start of the data section */
    const qc_gguf_kv **kv_by_key;          /* kvs sorted by key, for lookup */
    const qc_gguf_tensor **tensor_by_name; /* tensors sorted by name */
} qc_gguf;

/* Maps and parses `path`. Returns a new reader (free with qc_gguf_free) or
 * NULL with err set. */
qc_gguf *qc_gguf_open(const char *path, qc_err *err);

/* Parses a GGUF image in memory; `data` is borrowed and must outlive the
 * reader. `name` is used in messages. */
qc_gguf *qc_gguf_parse(const uint8_t *data, size_t size, const char *name, qc_err *err);

void qc_gguf_free(qc_gguf *g);

/* Transfers ownership of the mapping to the caller (e.g. to a qc_model); the
 * reader's pointers stay valid as long as the caller keeps the mapping. */
qc_mapfile *qc_gguf_take_file(qc_gguf *g);

/* Looks up by exact key / tensor name; NULL when absent. */
const qc_gguf_kv *qc_gguf_find(const qc_gguf *g, const char *key);
const qc_gguf_tensor *qc_gguf_find_tensor(const qc_gguf *g, const char *name);

const char *qc_gguf_type_name(qc_gguf_type t);
/* Maps a ggml tensor type id to a qc_dtype; -1 when unsupported. */
int qc_gguf_dtype_from_ggml(uint32_t ggml_type, qc_dtype *out);
/* Name of a ggml tensor type id ("Q4_K", "IQ2_XS", ...; "?" when unknown). */
const char *qc_gguf_ggml_type_name(uint32_t ggml_type);

/* Typed getters. Each returns 0 and sets *out when the key is present with a
 * compatible type, 1 when the key is absent (*out untouched), and -1 with err
 * set when it has an incompatible type or an out-of-range value.
 * - int: any integer type (u8..i64) or bool.
 * - u32/i32: integers in range.
 * - f32: f32, f64 or any integer type.
 * - str: pointer into the file (not NUL-terminated) and its length. */
int qc_gguf_get_int(const qc_gguf *g, const char *key, int64_t *out, qc_err *err);
int qc_gguf_get_u32(const qc_gguf *g, const char *key, uint32_t *out, qc_err *err);
int qc_gguf_get_i32(const qc_gguf *g, const char *key, int32_t *out, qc_err *err);
int qc_gguf_get_f32(const qc_gguf *g, const char *key, float *out, qc_err *err);
int qc_gguf_get_bool(const qc_gguf *g, const char *key, int *out, qc_err *err);
int qc_gguf_get_str(const qc_gguf *g, const char *key, const char **s, size_t *len, qc_err *err);

/* Array getters (same return convention). The arrays are new allocations the
 * caller frees; string pointers point into the file. An empty array gives
 * n = 0 and a non-NULL pointer.
 * - str_array: array of strings.
 * - f32_array: array of f32 (or f64).
 * - i32_array: array of any integer type whose values fit in int32. */
int qc_gguf_get_str_array(const qc_gguf *g, const char *key, const char ***strs, size_t **lens,
                          size_t *n, qc_err *err);
int qc_gguf_get_f32_array(const qc_gguf *g, const char *key, float **out, size_t *n, qc_err *err);
int qc_gguf_get_i32_array(const qc_gguf *g, const char *key, int32_t **out, size_t *n, qc_err *err);

/* The GGUF model loader behind qc_gguf_load (compiler/gguf_load.c). With
 * with_tokenizer = 0 the tokenizer metadata is not read and m->tok stays
 * NULL (for tools and tests that only need the weights). */
int qc_gguf_load_model(qc_model *m, const char *path, int with_tokenizer, qc_err *err);

/* Loads only the tokenizer (and bos/eos ids) of a GGUF image in memory
 * (borrowed; name used in messages) into m->tok; an image without one is an
 * error. */
int qc_gguf_load_tokenizer_mem(qc_model *m, const uint8_t *data, size_t size, const char *name,
                               qc_err *err);

/* A GGUF image with no tensors holding the tokenizer.* metadata of the GGUF
 * file at path, copied byte for byte (for artifacts). *out is a new buffer of
 * *len bytes the caller frees. */
int qc_gguf_tokenizer_extract(const char *path, uint8_t **out, size_t *len, qc_err *err);

#endif
