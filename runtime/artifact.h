/* The quantc artifact container (docs/artifact-format.md): one file holding a
 * JSON manifest, the tokenizer, tensors and generated kernels as checksummed
 * sections. This is the reader; codegen/artifact_write.h writes it.
 *
 *   header (64 bytes, little-endian)
 *     0  magic "\x89QCA\r\n\x1a\n"     8  u32 format version (1)
 *    12  u32 header size (64)          16  u32 section count
 *    20  u32 table entry size (64)     24  u64 table offset
 *    32  u64 table size (entries + string pool)
 *    40  u64 file size                 48  u64 XXH3-64 of the table
 *    56  u64 XXH3-64 of header bytes 0..55
 *   sections, each at a multiple of 64 (uncompressed tensors of 4096 bytes or
 *   more: of 4096, so they can be mapped and used in place), with
 *   zero bytes between them; the section table last: fixed 64-byte entries,
 *   then a pool of NUL-terminated names and targets.
 *
 * Opening validates everything before it is used: every offset, size and
 * count (overflow-checked), that sections lie between the header and the
 * table without overlapping, that padding is zero, and the checksum of every
 * section. Checksums are verified on open, not lazily: a damaged artifact
 * then fails at once with the section it is in, instead of at the first use
 * of that tensor in the middle of a run; the cost is one sequential XXH3 pass
 * (>10 GB/s) over pages that loading reads anyway. After a successful open,
 * any single changed byte anywhere in the file has been reported. */
#ifndef QCRT_ARTIFACT_H
#define QCRT_ARTIFACT_H

#include "../compiler/err.h"
#include "../compiler/mapfile.h"

#include <stddef.h>
#include <stdint.h>

#define QCRT_ARTIFACT_MAGIC "\x89QCA\r\n\x1a\n"
#define QCRT_ARTIFACT_VERSION 1u
#define QCRT_ARTIFACT_HEADER_SIZE 64u
#define QCRT_ARTIFACT_ENTRY_SIZE 64u
#define QCRT_ARTIFACT_ALIGN 64u          /* every section */
#define QCRT_ARTIFACT_TENSOR_ALIGN 4096u /* uncompressed tensors of at least this many bytes */
#define QCRT_ARTIFACT_MAX_SECTIONS (1u << 24)
#define QCRT_ARTIFACT_MAX_NAME 4096u
/* Largest decompressed section accepted (a zstd frame cannot make us
 * allocate more than this). */
#define QCRT_ARTIFACT_MAX_RAW ((uint64_t)1 << 40)

typedef enum qcrt_section_kind {
    QCRT_SEC_MANIFEST = 1,
    QCRT_SEC_TOKENIZER = 2,
    QCRT_SEC_TENSOR = 3,
    QCRT_SEC_KERNELS = 4,
} qcrt_section_kind;

typedef enum qcrt_compression {
    QCRT_COMP_NONE = 0,
    QCRT_COMP_ZSTD = 1,
} qcrt_compression;

typedef struct qcrt_section {
    int index; /* position in the table */
    qcrt_section_kind kind;
    qcrt_compression compression;
    const char *name;   /* into the table's string pool, NUL-terminated */
    const char *target; /* "" when the section has none */
    uint64_t offset, stored_size, raw_size;
    uint64_t checksum;     /* XXH3-64 (seed 0) of the stored bytes */
    const uint8_t *stored; /* the stored bytes, inside the file */
} qcrt_section;

typedef struct qcrt_artifact {
    char *path;          /* name used in messages (owned) */
    const uint8_t *data; /* the whole file */
    size_t size;
    qc_mapfile *file; /* owned mapping, or NULL (parsed from memory / taken) */
    uint32_t version;
    qcrt_section *sections; /* in table order (owned) */
    int n_sections;
} qcrt_artifact;

/* 1 when the bytes start with the artifact magic. */
int qcrt_artifact_has_magic(const uint8_t *data, size_t size);

/* Maps and validates `path` (checksums included). Returns a new artifact
 * (free with qcrt_artifact_free) or NULL with err, e.g.
 * "m.qc: section 7 'model.layers.3.mlp.up_proj.qweight' (tensor): checksum
 * mismatch". */
qcrt_artifact *qcrt_artifact_open(const char *path, qc_err *err);

/* The same on an image in memory; data is borrowed and must outlive the
 * result. name is used in messages. */
qcrt_artifact *qcrt_artifact_parse(const uint8_t *data, size_t size, const char *name, qc_err *err);

void qcrt_artifact_free(qcrt_artifact *a);

/* Hands the mapping to the caller (e.g. to a qc_model whose tensors point into
 * it); the artifact's pointers stay valid while the caller keeps it. */
qc_mapfile *qcrt_artifact_take_file(qcrt_artifact *a);

/* The first section of `kind` named `name` (any name when NULL); NULL when
 * absent. */
const qcrt_section *qcrt_artifact_find(const qcrt_artifact *a, qcrt_section_kind kind,
                                       const char *name);

/* A section's raw bytes: for an uncompressed section a pointer into the file
 * (*owned = NULL); for a compressed one a new buffer of raw_size bytes that
 * *owned also points to and the caller frees. NULL with err when the data
 * does not decompress to exactly raw_size bytes or memory runs out. */
const uint8_t *qcrt_artifact_section_data(const qcrt_artifact *a, const qcrt_section *s,
                                          void **owned, qc_err *err);

/* Writes a section's raw_size raw bytes to dst (decompressing), or returns -1
 * with err. */
int qcrt_artifact_section_read(const qcrt_artifact *a, const qcrt_section *s, void *dst,
                               qc_err *err);

/* "manifest", "tokenizer", "tensor", "kernels", or "unknown". */
const char *qcrt_section_kind_name(qcrt_section_kind k);
const char *qcrt_compression_name(qcrt_compression c);

/* Where a section must start: a multiple of this. */
static inline uint64_t qcrt_artifact_alignment(qcrt_section_kind kind, qcrt_compression c,
                                               uint64_t stored_size) {
    return kind == QCRT_SEC_TENSOR && c == QCRT_COMP_NONE &&
                   stored_size >= QCRT_ARTIFACT_TENSOR_ALIGN
               ? QCRT_ARTIFACT_TENSOR_ALIGN
               : QCRT_ARTIFACT_ALIGN;
}

/* Little-endian field access shared with the writer. */
static inline uint32_t qcrt_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t qcrt_le64(const uint8_t *p) {
    return (uint64_t)qcrt_le32(p) | (uint64_t)qcrt_le32(p + 4) << 32;
}
static inline void qcrt_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void qcrt_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

#endif
