#include "artifact.h"
#include "../compiler/limits.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

/* A zstd frame regenerates at most 128 KiB per block and a block takes at
 * least 4 bytes (an RLE block), so no valid section expands more than this;
 * larger raw sizes are rejected on open, before anything is allocated. */
#define MAX_ZSTD_RATIO 32768u

/* Table entry fields (docs/artifact-format.md, "Section table"). */
enum {
    E_KIND = 0,
    E_COMP = 4,
    E_OFFSET = 8,
    E_STORED = 16,
    E_RAW = 24,
    E_SUM = 32,
    E_NAME_OFF = 40,
    E_NAME_LEN = 44,
    E_TARGET_OFF = 48,
    E_TARGET_LEN = 52,
    E_RESERVED = 56,
};

const char *qcrt_section_kind_name(qcrt_section_kind k) {
    switch (k) {
    case QCRT_SEC_MANIFEST:
        return "manifest";
    case QCRT_SEC_TOKENIZER:
        return "tokenizer";
    case QCRT_SEC_TENSOR:
        return "tensor";
    case QCRT_SEC_KERNELS:
        return "kernels";
    }
    return "unknown";
}

const char *qcrt_compression_name(qcrt_compression c) {
    return c == QCRT_COMP_NONE ? "none" : c == QCRT_COMP_ZSTD ? "zstd" : "unknown";
}

int qcrt_artifact_has_magic(const uint8_t *data, size_t size) {
    return size >= 8 && memcmp(data, QCRT_ARTIFACT_MAGIC, 8) == 0;
}

/* A name or target in the string pool: [off, off+len) inside the pool,
 * followed by a NUL, with no NUL inside. */
static const char *pool_string(const uint8_t *pool, uint64_t pool_size, uint32_t off,
                               uint32_t len) {
    if ((uint64_t)off + len >= pool_size) return NULL;
    if (memchr(pool + off, 0, len) || pool[off + len] != 0) return NULL;
    return (const char *)pool + off;
}

static int read_header(qcrt_artifact *a, uint64_t *table_off, uint64_t *table_size, uint32_t *count,
                       qc_err *err) {
    const uint8_t *h = a->data;
    if (a->size < 8 || !qcrt_artifact_has_magic(h, a->size))
        return qc_err_set(err, "%s: not a quantc artifact (bad magic at byte 0)", a->path);
    if (a->size < QCRT_ARTIFACT_HEADER_SIZE)
        return qc_err_set(err, "%s: truncated: %zu bytes, shorter than the %u-byte header", a->path,
                          a->size, QCRT_ARTIFACT_HEADER_SIZE);
    /* The version comes before the header checksum: a newer format may lay
     * out the rest of its header differently. */
    a->version = qcrt_le32(h + 8);
    if (a->version != QCRT_ARTIFACT_VERSION)
        return qc_err_set(err, "%s: unsupported format version %u (this quantc reads %u)", a->path,
                          a->version, QCRT_ARTIFACT_VERSION);
    uint64_t want = qcrt_le64(h + 56), got = XXH3_64bits(h, 56);
    if (want != got) return qc_err_set(err, "%s: header (bytes 0..63): checksum mismatch", a->path);
    if (qcrt_le32(h + 12) != QCRT_ARTIFACT_HEADER_SIZE ||
        qcrt_le32(h + 20) != QCRT_ARTIFACT_ENTRY_SIZE)
        return qc_err_set(err, "%s: byte 12: header size %u / entry size %u, expected %u / %u",
                          a->path, qcrt_le32(h + 12), qcrt_le32(h + 20), QCRT_ARTIFACT_HEADER_SIZE,
                          QCRT_ARTIFACT_ENTRY_SIZE);
    *count = qcrt_le32(h + 16);
    *table_off = qcrt_le64(h + 24);
    *table_size = qcrt_le64(h + 32);
    uint64_t file_size = qcrt_le64(h + 40), end;
    if (*table_off > UINT64_MAX - *table_size)
        return qc_err_set(err, "%s: byte 24: section table offset %llu + size %llu overflows",
                          a->path, (unsigned long long)*table_off, (unsigned long long)*table_size);
    end = *table_off + *table_size;
    if (end > a->size)
        return qc_err_set(err,
                          "%s: truncated: section table ends at byte %llu past end of file "
                          "(size %zu)",
                          a->path, (unsigned long long)end, a->size);
    if (file_size != a->size)
        return qc_err_set(err,
                          "%s: file is %zu bytes but its header says %llu (truncated or "
                          "appended to)",
                          a->path, a->size, (unsigned long long)file_size);
    if (end != a->size || *table_off < QCRT_ARTIFACT_HEADER_SIZE ||
        *table_off % QCRT_ARTIFACT_ALIGN)
        return qc_err_set(err,
                          "%s: byte 24: section table at %llu..%llu must be 64-byte aligned, "
                          "after the header, and end the file (size %zu)",
                          a->path, (unsigned long long)*table_off, (unsigned long long)end,
                          a->size);
    if (*count > QCRT_ARTIFACT_MAX_SECTIONS || *count > qc_limit(QC_LIMIT_ARTIFACT_SECTIONS) ||
        (uint64_t)*count * QCRT_ARTIFACT_ENTRY_SIZE > *table_size)
        return qc_err_set(err, "%s: byte 16: %u sections do not fit a %llu-byte table", a->path,
                          *count, (unsigned long long)*table_size);
    if (XXH3_64bits(a->data + *table_off, (size_t)*table_size) != qcrt_le64(h + 48))
        return qc_err_set(err, "%s: section table (bytes %llu..%llu): checksum mismatch", a->path,
                          (unsigned long long)*table_off, (unsigned long long)end);
    return 0;
}

/* Fills s from table entry e; `prev_end` is where the previous section ended. */
static int read_entry(qcrt_artifact *a, int i, const uint8_t *e, const uint8_t *pool,
                      uint64_t pool_size, uint64_t table_off, uint64_t prev_end, qc_err *err) {
    qcrt_section *s = &a->sections[i];
    uint64_t at = table_off + (uint64_t)i * QCRT_ARTIFACT_ENTRY_SIZE;
    s->index = i;
    uint32_t name_len = qcrt_le32(e + E_NAME_LEN), target_len = qcrt_le32(e + E_TARGET_LEN);
    if (name_len == 0 || name_len > QCRT_ARTIFACT_MAX_NAME || target_len > QCRT_ARTIFACT_MAX_NAME ||
        !(s->name = pool_string(pool, pool_size, qcrt_le32(e + E_NAME_OFF), name_len)))
        return qc_err_set(err, "%s: byte %llu: section %d: bad name (offset %u, length %u)",
                          a->path, (unsigned long long)at, i, qcrt_le32(e + E_NAME_OFF), name_len);
    s->target = "";
    if (target_len &&
        !(s->target = pool_string(pool, pool_size, qcrt_le32(e + E_TARGET_OFF), target_len)))
        return qc_err_set(err, "%s: section %d '%s': bad target (offset %u, length %u)", a->path, i,
                          s->name, qcrt_le32(e + E_TARGET_OFF), target_len);
    uint32_t kind = qcrt_le32(e + E_KIND), comp = qcrt_le32(e + E_COMP);
    s->kind = (qcrt_section_kind)kind;
    s->compression = (qcrt_compression)comp;
    s->offset = qcrt_le64(e + E_OFFSET);
    s->stored_size = qcrt_le64(e + E_STORED);
    s->raw_size = qcrt_le64(e + E_RAW);
    s->checksum = qcrt_le64(e + E_SUM);
    const char *kn = qcrt_section_kind_name(s->kind);
    if (kind < QCRT_SEC_MANIFEST || kind > QCRT_SEC_KERNELS)
        return qc_err_set(err, "%s: section %d '%s': unknown kind %u", a->path, i, s->name, kind);
    if (comp > QCRT_COMP_ZSTD)
        return qc_err_set(err, "%s: section %d '%s' (%s): unknown compression %u", a->path, i,
                          s->name, kn, comp);
    if (qcrt_le64(e + E_RESERVED) != 0 || (!target_len && qcrt_le32(e + E_TARGET_OFF)))
        return qc_err_set(err, "%s: section %d '%s' (%s): reserved fields are not zero", a->path, i,
                          s->name, kn);
    if ((s->kind == QCRT_SEC_KERNELS) != (target_len > 0))
        return qc_err_set(err, "%s: section %d '%s' (%s): %s", a->path, i, s->name, kn,
                          target_len ? "only kernels sections have a target"
                                     : "a kernels section needs a target");
    if (s->compression == QCRT_COMP_NONE
            ? s->raw_size != s->stored_size
            : s->raw_size > QCRT_ARTIFACT_MAX_RAW ||
                  s->raw_size > qc_limit(QC_LIMIT_SECTION_BYTES) || s->raw_size > SIZE_MAX ||
                  s->raw_size / MAX_ZSTD_RATIO > s->stored_size)
        return qc_err_set(err,
                          "%s: section %d '%s' (%s): raw size %llu does not fit stored "
                          "size %llu (%s)",
                          a->path, i, s->name, kn, (unsigned long long)s->raw_size,
                          (unsigned long long)s->stored_size,
                          qcrt_compression_name(s->compression));
    uint64_t align = qcrt_artifact_alignment(s->kind, s->compression, s->stored_size);
    if (s->offset % align || s->offset < prev_end || s->offset > table_off ||
        s->stored_size > table_off - s->offset)
        return qc_err_set(err,
                          "%s: section %d '%s' (%s): bytes %llu..+%llu are not %llu-aligned "
                          "between the previous section (ends at %llu) and the table (at %llu)",
                          a->path, i, s->name, kn, (unsigned long long)s->offset,
                          (unsigned long long)s->stored_size, (unsigned long long)align,
                          (unsigned long long)prev_end, (unsigned long long)table_off);
    s->stored = a->data + s->offset;
    return 0;
}

/* Bytes between sections must be zero, so that no byte of the file escapes
 * the checks. */
static int check_padding(const qcrt_artifact *a, uint64_t from, uint64_t to, int after,
                         qc_err *err) {
    for (uint64_t p = from; p < to; p++)
        if (a->data[p])
            return qc_err_set(err, "%s: byte %llu: padding after %s%s%s%s is not zero", a->path,
                              (unsigned long long)p, after < 0 ? "the header" : "section ",
                              after < 0 ? "" : a->sections[after].name, after < 0 ? "" : " '",
                              after < 0 ? "" : "'");
    return 0;
}

static int read_table(qcrt_artifact *a, qc_err *err) {
    uint64_t table_off = 0, table_size = 0;
    uint32_t count = 0;
    if (read_header(a, &table_off, &table_size, &count, err)) return -1;
    if (!(a->sections = qc_calloc(count ? count : 1, sizeof *a->sections, err))) return -1;
    const uint8_t *table = a->data + table_off;
    uint64_t entries = (uint64_t)count * QCRT_ARTIFACT_ENTRY_SIZE;
    uint64_t prev_end = QCRT_ARTIFACT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        if (read_entry(a, (int)i, table + (uint64_t)i * QCRT_ARTIFACT_ENTRY_SIZE, table + entries,
                       table_size - entries, table_off, prev_end, err))
            return -1;
        a->n_sections = (int)i + 1;
        if (check_padding(a, prev_end, a->sections[i].offset, (int)i - 1, err)) return -1;
        prev_end = a->sections[i].offset + a->sections[i].stored_size;
    }
    if (check_padding(a, prev_end, table_off, (int)count - 1, err)) return -1;
    for (int i = 0; i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        if (XXH3_64bits(s->stored, (size_t)s->stored_size) != s->checksum)
            return qc_err_set(err, "%s: section %d '%s' (%s): checksum mismatch", a->path, i,
                              s->name, qcrt_section_kind_name(s->kind));
        for (int j = 0; j < i; j++)
            if (a->sections[j].kind == s->kind && !strcmp(a->sections[j].name, s->name) &&
                !strcmp(a->sections[j].target, s->target))
                return qc_err_set(err, "%s: section %d '%s' (%s): same name as section %d", a->path,
                                  i, s->name, qcrt_section_kind_name(s->kind), j);
    }
    return 0;
}

qcrt_artifact *qcrt_artifact_parse(const uint8_t *data, size_t size, const char *name,
                                   qc_err *err) {
    qcrt_artifact *a = qc_calloc(1, sizeof *a, err);
    if (!a) return NULL;
    a->data = data;
    a->size = size;
    if (!(a->path = strdup(name ? name : "<artifact>"))) {
        qc_err_set(err, "out of memory");
        free(a);
        return NULL;
    }
    if (read_table(a, err)) {
        qcrt_artifact_free(a);
        return NULL;
    }
    return a;
}

qcrt_artifact *qcrt_artifact_open(const char *path, qc_err *err) {
    qc_mapfile *f = qc_mapfile_open(path, err);
    if (!f) return NULL;
    qcrt_artifact *a = qcrt_artifact_parse(f->data, f->size, path, err);
    if (!a) {
        qc_mapfile_free(f);
        return NULL;
    }
    a->file = f;
    return a;
}

void qcrt_artifact_free(qcrt_artifact *a) {
    if (!a) return;
    qc_mapfile_free(a->file);
    free(a->sections);
    free(a->path);
    free(a);
}

qc_mapfile *qcrt_artifact_take_file(qcrt_artifact *a) {
    qc_mapfile *f = a->file;
    a->file = NULL;
    return f;
}

const qcrt_section *qcrt_artifact_find(const qcrt_artifact *a, qcrt_section_kind kind,
                                       const char *name) {
    for (int i = 0; i < a->n_sections; i++)
        if (a->sections[i].kind == kind && (!name || !strcmp(a->sections[i].name, name)))
            return &a->sections[i];
    return NULL;
}

int qcrt_artifact_section_read(const qcrt_artifact *a, const qcrt_section *s, void *dst,
                               qc_err *err) {
    const char *kn = qcrt_section_kind_name(s->kind);
    if (s->compression == QCRT_COMP_NONE) {
        if (s->raw_size) memcpy(dst, s->stored, (size_t)s->raw_size);
        return 0;
    }
    unsigned long long fcs = ZSTD_getFrameContentSize(s->stored, (size_t)s->stored_size);
    size_t fsz = ZSTD_findFrameCompressedSize(s->stored, (size_t)s->stored_size);
    if (fcs != s->raw_size || ZSTD_isError(fsz) || fsz != s->stored_size)
        return qc_err_set(err, "%s: section %d '%s' (%s): not one zstd frame of %llu bytes",
                          a->path, s->index, s->name, kn, (unsigned long long)s->raw_size);
    size_t got = ZSTD_decompress(dst, (size_t)s->raw_size, s->stored, (size_t)s->stored_size);
    if (ZSTD_isError(got) || got != s->raw_size)
        return qc_err_set(err,
                          "%s: section %d '%s' (%s): zstd data does not decompress to %llu "
                          "bytes%s%s",
                          a->path, s->index, s->name, kn, (unsigned long long)s->raw_size,
                          ZSTD_isError(got) ? ": " : "",
                          ZSTD_isError(got) ? ZSTD_getErrorName(got) : "");
    return 0;
}

const uint8_t *qcrt_artifact_section_data(const qcrt_artifact *a, const qcrt_section *s,
                                          void **owned, qc_err *err) {
    *owned = NULL;
    if (s->compression == QCRT_COMP_NONE) return s->stored;
    uint8_t *buf = qc_malloc((size_t)s->raw_size, err);
    if (!buf) return NULL;
    if (qcrt_artifact_section_read(a, s, buf, err)) {
        free(buf);
        return NULL;
    }
    *owned = buf;
    return buf;
}
