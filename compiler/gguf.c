#include "gguf.h"

#include "dequant.h"

#include <stdlib.h>
#include <string.h>

/* Nested arrays deeper than this are rejected (bounds the parser's recursion). */
#define GGUF_MAX_DEPTH 8
#define GGUF_MAX_DIMS 4

/* Smallest encodings, used to bound counts by the bytes left before any
 * allocation: a kv is a key length, a type and at least one value byte; a
 * tensor info is a name length, n_dims, one dim, a type and an offset. */
#define GGUF_MIN_KV_BYTES (8 + 4 + 1)
#define GGUF_MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8)

typedef struct cursor {
    const uint8_t *d;
    size_t size, pos;
    const char *path;
    qc_err *err;
} cursor;

static const char *const type_names[QC_GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Encoded size of a fixed-size value type; 0 for string and array. */
static size_t fixed_size(qc_gguf_type t) {
    static const size_t sz[QC_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return sz[t];
}

const char *qc_gguf_type_name(qc_gguf_type t) {
    return (unsigned)t < QC_GGUF_TYPE_COUNT ? type_names[t] : "?";
}

static const char *const ggml_names[] = {
    [0] = "F32",     [1] = "F16",      [2] = "Q4_0",   [3] = "Q4_1",    [6] = "Q5_0",
    [7] = "Q5_1",    [8] = "Q8_0",     [9] = "Q8_1",   [10] = "Q2_K",   [11] = "Q3_K",
    [12] = "Q4_K",   [13] = "Q5_K",    [14] = "Q6_K",  [15] = "Q8_K",   [16] = "IQ2_XXS",
    [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",
    [22] = "IQ2_S",  [23] = "IQ4_XS",  [24] = "I8",    [25] = "I16",    [26] = "I32",
    [27] = "I64",    [28] = "F64",     [29] = "IQ1_M", [30] = "BF16",   [34] = "TQ1_0",
    [35] = "TQ2_0",  [39] = "MXFP4",
};

const char *qc_gguf_ggml_type_name(uint32_t t) {
    if (t < sizeof ggml_names / sizeof ggml_names[0] && ggml_names[t]) return ggml_names[t];
    return "?";
}

int qc_gguf_dtype_from_ggml(uint32_t t, qc_dtype *out) {
    switch (t) {
    case 0:
        *out = QC_DT_F32;
        return 0;
    case 1:
        *out = QC_DT_F16;
        return 0;
    case 2:
        *out = QC_DT_Q4_0;
        return 0;
    case 3:
        *out = QC_DT_Q4_1;
        return 0;
    case 6:
        *out = QC_DT_Q5_0;
        return 0;
    case 7:
        *out = QC_DT_Q5_1;
        return 0;
    case 8:
        *out = QC_DT_Q8_0;
        return 0;
    case 12:
        *out = QC_DT_Q4_K;
        return 0;
    case 13:
        *out = QC_DT_Q5_K;
        return 0;
    case 14:
        *out = QC_DT_Q6_K;
        return 0;
    case 11:
        *out = QC_DT_Q3_K;
        return 0;
    case 20:
        *out = QC_DT_IQ4_NL;
        return 0;
    case 23:
        *out = QC_DT_IQ4_XS;
        return 0;
    case 30:
        *out = QC_DT_BF16;
        return 0;
    default:
        return -1;
    }
}

static uint16_t le16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) {
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

static size_t left(const cursor *c) {
    return c->size - c->pos;
}

static int need(cursor *c, size_t n, const char *what) {
    if (n > left(c))
        return qc_err_set(c->err,
                          "%s: byte %zu: unexpected end of file reading %s (%zu bytes left)",
                          c->path, c->pos, what, left(c));
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = le32(c->d + c->pos);
    c->pos += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = le64(c->d + c->pos);
    c->pos += 8;
    return 0;
}

/* Reads a string header and checks its bytes lie in the file; *s points at them. */
static int rd_str(cursor *c, const uint8_t **s, size_t *len, const char *what) {
    size_t at = c->pos;
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > left(c))
        return qc_err_set(c->err,
                          "%s: byte %zu: %s length %llu runs past end of file (%zu bytes left)",
                          c->path, at, what, (unsigned long long)n, left(c));
    *s = c->d + c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return 0;
}

/* NUL-terminated copy of a name; names holding NUL bytes are rejected so that
 * lookups by C string are unambiguous. */
static char *dup_name(cursor *c, size_t at, const uint8_t *s, size_t len, const char *what) {
    if (memchr(s, 0, len)) {
        qc_err_set(c->err, "%s: byte %zu: %s contains a NUL byte", c->path, at, what);
        return NULL;
    }
    char *p = qc_malloc(len + 1, c->err);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = 0;
    return p;
}

static int rd_type(cursor *c, qc_gguf_type *t, const char *what) {
    size_t at = c->pos;
    uint32_t v;
    if (rd_u32(c, &v, what)) return -1;
    if (v >= QC_GGUF_TYPE_COUNT)
        return qc_err_set(c->err, "%s: byte %zu: unknown %s %u", c->path, at, what, v);
    *t = (qc_gguf_type)v;
    return 0;
}

static int skip_value(cursor *c, qc_gguf_type t, int depth);

/* Validates an array body (element type, count, elements) and skips it. */
static int skip_array(cursor *c, int depth, qc_gguf_type *elem, uint64_t *count) {
    size_t at = c->pos;
    if (depth >= GGUF_MAX_DEPTH)
        return qc_err_set(c->err, "%s: byte %zu: arrays nested deeper than %d", c->path, at,
                          GGUF_MAX_DEPTH);
    qc_gguf_type et = QC_GGUF_U8;
    uint64_t n;
    if (rd_type(c, &et, "array element type") || rd_u64(c, &n, "array length")) return -1;
    size_t fs = fixed_size(et), min = fs ? fs : et == QC_GGUF_STRING ? 8 : 12;
    if (n > left(c) / min)
        return qc_err_set(
            c->err, "%s: byte %zu: array of %llu %s values does not fit in the %zu bytes left",
            c->path, at, (unsigned long long)n, type_names[et], left(c));
    if (elem) *elem = et;
    if (count) *count = n;
    if (fs && et != QC_GGUF_BOOL) {
        c->pos += (size_t)n * fs;
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        if (skip_value(c, et, depth + 1)) return -1;
    return 0;
}

static int skip_value(cursor *c, qc_gguf_type t, int depth) {
    if (t == QC_GGUF_STRING) {
        const uint8_t *s;
        size_t len;
        return rd_str(c, &s, &len, "string");
    }
    if (t == QC_GGUF_ARRAY) return skip_array(c, depth, NULL, NULL);
    if (need(c, fixed_size(t), type_names[t])) return -1;
    if (t == QC_GGUF_BOOL && c->d[c->pos] > 1)
        return qc_err_set(c->err, "%s: byte %zu: bool value %u is not 0 or 1", c->path, c->pos,
                          c->d[c->pos]);
    c->pos += fixed_size(t);
    return 0;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp((*(const qc_gguf_kv *const *)a)->key, (*(const qc_gguf_kv *const *)b)->key);
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const qc_gguf_tensor *const *)a)->name,
                  (*(const qc_gguf_tensor *const *)b)->name);
}

static int parse_kvs(qc_gguf *g, cursor *c, uint64_t n_kv) {
    g->kvs = qc_calloc((size_t)n_kv, sizeof *g->kvs, c->err);
    g->kv_by_key = qc_calloc((size_t)n_kv, sizeof *g->kv_by_key, c->err);
    if (!g->kvs || !g->kv_by_key) return -1;
    for (uint64_t i = 0; i < n_kv; i++) {
        qc_gguf_kv *kv = &g->kvs[i];
        const uint8_t *s;
        size_t len;
        kv->key_offset = c->pos;
        if (rd_str(c, &s, &len, "key")) return -1;
        if (!(kv->key = dup_name(c, kv->key_offset, s, len, "key"))) return -1;
        g->n_kv++;
        size_t at = c->pos;
        uint32_t type;
        if (rd_u32(c, &type, "value type")) return -1;
        if (type >= QC_GGUF_TYPE_COUNT)
            return qc_err_set(c->err, "%s: byte %zu: key '%s': unknown value type %u", c->path, at,
                              kv->key, type);
        kv->type = (qc_gguf_type)type;
        kv->offset = c->pos;
        if (kv->type == QC_GGUF_ARRAY) {
            if (skip_array(c, 0, &kv->arr_type, &kv->arr_n)) return -1;
            kv->offset += 4 + 8;
        } else if (skip_value(c, kv->type, 0)) {
            return -1;
        }
        g->kv_by_key[i] = kv;
    }
    qsort(g->kv_by_key, (size_t)g->n_kv, sizeof *g->kv_by_key, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv_by_key[i - 1]->key, g->kv_by_key[i]->key) == 0) {
            const qc_gguf_kv *a = g->kv_by_key[i - 1], *b = g->kv_by_key[i];
            if (a->key_offset > b->key_offset) {
                const qc_gguf_kv *t = a;
                a = b;
                b = t;
            }
            return qc_err_set(c->err, "%s: byte %zu: duplicate key '%s' (first at byte %zu)",
                              c->path, b->key_offset, b->key, a->key_offset);
        }
    return 0;
}

static int parse_tensor_info(qc_gguf *g, cursor *c, qc_gguf_tensor *t) {
    const uint8_t *s;
    size_t len;
    t->info_offset = c->pos;
    if (rd_str(c, &s, &len, "tensor name")) return -1;
    if (!(t->name = dup_name(c, t->info_offset, s, len, "tensor name"))) return -1;
    g->n_tensors++;
    size_t at = c->pos;
    uint32_t nd, type;
    if (rd_u32(c, &nd, "tensor n_dims")) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return qc_err_set(c->err, "%s: byte %zu: tensor '%s': n_dims %u is not in 1..%d", c->path,
                          at, t->name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    t->numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        at = c->pos;
        if (rd_u64(c, &ne, "tensor dimension")) return -1;
        if (ne == 0 || ne > (uint64_t)INT64_MAX || (uint64_t)t->numel > (uint64_t)INT64_MAX / ne)
            return qc_err_set(c->err,
                              "%s: byte %zu: tensor '%s': dimension %u of %llu is zero or "
                              "overflows the element count",
                              c->path, at, t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    at = c->pos;
    if (rd_u32(c, &type, "tensor type")) return -1;
    t->ggml_type = type;
    if (qc_gguf_dtype_from_ggml(type, &t->dtype) != 0) {
        const char *nm = qc_gguf_ggml_type_name(type);
        if (nm[0] == '?')
            return qc_err_set(c->err, "%s: byte %zu: tensor '%s': unknown type id %u", c->path, at,
                              t->name, type);
        return qc_err_set(c->err, "%s: byte %zu: tensor '%s': type %s (%u) is not supported",
                          c->path, at, t->name, nm, type);
    }
    uint64_t off;
    if (rd_u64(c, &off, "tensor offset")) return -1;
    if (off > SIZE_MAX)
        return qc_err_set(c->err, "%s: byte %zu: tensor '%s': offset %llu too large", c->path,
                          c->pos - 8, t->name, (unsigned long long)off);
    t->offset = (size_t)off; /* relative to the data section until placed */
    return 0;
}

/* Checks a tensor's data lies inside the file, aligned, a whole number of blocks. */
static int place_tensor(qc_gguf *g, cursor *c, qc_gguf_tensor *t) {
    int64_t be = qc_dtype_block_elems(t->dtype);
    if (t->ne[0] % be)
        return qc_err_set(c->err,
                          "%s: byte %zu: tensor '%s': row of %lld elements is not a multiple of "
                          "the %s block size %lld",
                          c->path, t->info_offset, t->name, (long long)t->ne[0],
                          qc_dtype_name(t->dtype), (long long)be);
    if (qc_dtype_nbytes(t->dtype, t->numel, &t->nbytes) != 0)
        return qc_err_set(c->err, "%s: byte %zu: tensor '%s': data size overflows", c->path,
                          t->info_offset, t->name);
    if (t->offset % g->alignment)
        return qc_err_set(c->err,
                          "%s: byte %zu: tensor '%s': data offset %zu is not a multiple of the "
                          "alignment %zu",
                          c->path, t->info_offset, t->name, t->offset, g->alignment);
    size_t start, end;
    if (qc_add_size(g->data_offset, t->offset, &start) || qc_add_size(start, t->nbytes, &end) ||
        end > g->size)
        return qc_err_set(c->err,
                          "%s: byte %zu: tensor '%s': data at offset %zu + %zu bytes runs past "
                          "end of file (size %zu)",
                          c->path, t->info_offset, t->name, t->offset, t->nbytes, g->size);
    t->offset = start;
    t->data = g->data + start;
    return 0;
}

static int parse_alignment(qc_gguf *g, cursor *c) {
    g->alignment = 32;
    const qc_gguf_kv *kv = qc_gguf_find(g, "general.alignment");
    if (!kv) return 0;
    int64_t a;
    if (qc_gguf_get_int(g, "general.alignment", &a, c->err) < 0) return -1;
    if (a <= 0 || (a & (a - 1)) || a > (1 << 30))
        return qc_err_set(c->err,
                          "%s: byte %zu: general.alignment %lld is not a power of two up to 2^30",
                          c->path, kv->offset, (long long)a);
    g->alignment = (size_t)a;
    return 0;
}

static int parse(qc_gguf *g, cursor *c) {
    if (g->size < 4 || memcmp(g->data, "GGUF", 4) != 0)
        return qc_err_set(c->err, "%s: byte 0: not a GGUF file (bad magic)", c->path);
    c->pos = 4;
    if (rd_u32(c, &g->version, "version")) return -1;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return qc_err_set(c->err, "%s: byte 4: big-endian GGUF files are not supported", c->path);
    if (g->version != 2 && g->version != 3)
        return qc_err_set(c->err, "%s: byte 4: GGUF version %u is not supported (2 or 3)", c->path,
                          g->version);
    uint64_t n_tensors, n_kv;
    if (rd_u64(c, &n_tensors, "tensor count") || rd_u64(c, &n_kv, "kv count")) return -1;
    if (n_tensors > left(c) / GGUF_MIN_TENSOR_BYTES)
        return qc_err_set(c->err, "%s: byte 8: tensor count %llu does not fit in a %zu-byte file",
                          c->path, (unsigned long long)n_tensors, g->size);
    if (n_kv > left(c) / GGUF_MIN_KV_BYTES)
        return qc_err_set(c->err, "%s: byte 16: kv count %llu does not fit in a %zu-byte file",
                          c->path, (unsigned long long)n_kv, g->size);
    if (parse_kvs(g, c, n_kv) || parse_alignment(g, c)) return -1;

    g->tensors = qc_calloc((size_t)n_tensors, sizeof *g->tensors, c->err);
    g->tensor_by_name = qc_calloc((size_t)n_tensors, sizeof *g->tensor_by_name, c->err);
    if (!g->tensors || !g->tensor_by_name) return -1;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (parse_tensor_info(g, c, &g->tensors[i])) return -1;
        g->tensor_by_name[i] = &g->tensors[i];
    }
    size_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (qc_add_size(c->pos, pad, &g->data_offset)) return qc_err_set(c->err, "size overflow");
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (place_tensor(g, c, &g->tensors[i])) return -1;
    qsort(g->tensor_by_name, (size_t)g->n_tensors, sizeof *g->tensor_by_name, cmp_tensor);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const qc_gguf_tensor *a = g->tensor_by_name[i - 1], *b = g->tensor_by_name[i];
        if (strcmp(a->name, b->name) == 0) {
            if (a->info_offset > b->info_offset) {
                const qc_gguf_tensor *t = a;
                a = b;
                b = t;
            }
            return qc_err_set(c->err,
                              "%s: byte %zu: duplicate tensor name '%s' (first at byte %zu)",
                              c->path, b->info_offset, b->name, a->info_offset);
        }
    }
    return 0;
}

qc_gguf *qc_gguf_parse(const uint8_t *data, size_t size, const char *name, qc_err *err) {
    qc_gguf *g = qc_calloc(1, sizeof *g, err);
    if (!g) return NULL;
    char *path = strdup(name);
    if (!path) {
        free(g);
        qc_err_set(err, "out of memory");
        return NULL;
    }
    g->path = path;
    g->data = data;
    g->size = data ? size : 0;
    g->alignment = 32;
    cursor c = {g->data, g->size, 0, g->path, err};
    if (parse(g, &c) != 0) {
        qc_gguf_free(g);
        return NULL;
    }
    return g;
}

qc_gguf *qc_gguf_open(const char *path, qc_err *err) {
    qc_mapfile *f = qc_mapfile_open(path, err);
    if (!f) return NULL;
    qc_gguf *g = qc_gguf_parse(f->data, f->size, path, err);
    if (!g) {
        qc_mapfile_free(f);
        return NULL;
    }
    g->file = f;
    return g;
}

void qc_gguf_free(qc_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++)
        free(g->kvs[i].key);
    for (int64_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_by_key);
    free(g->tensor_by_name);
    qc_mapfile_free(g->file);
    free((char *)g->path);
    free(g);
}

qc_mapfile *qc_gguf_take_file(qc_gguf *g) {
    qc_mapfile *f = g->file;
    g->file = NULL;
    return f;
}

const qc_gguf_kv *qc_gguf_find(const qc_gguf *g, const char *key) {
    qc_gguf_kv probe = {.key = (char *)key};
    const qc_gguf_kv *pp = &probe;
    const qc_gguf_kv **hit =
        bsearch(&pp, g->kv_by_key, (size_t)g->n_kv, sizeof *g->kv_by_key, cmp_kv);
    return hit ? *hit : NULL;
}

const qc_gguf_tensor *qc_gguf_find_tensor(const qc_gguf *g, const char *name) {
    qc_gguf_tensor probe = {.name = (char *)name};
    const qc_gguf_tensor *pp = &probe;
    const qc_gguf_tensor **hit = bsearch(&pp, g->tensor_by_name, (size_t)g->n_tensors,
                                         sizeof *g->tensor_by_name, cmp_tensor);
    return hit ? *hit : NULL;
}

static int is_int_type(qc_gguf_type t) {
    return t <= QC_GGUF_I32 || t == QC_GGUF_BOOL || t == QC_GGUF_U64 || t == QC_GGUF_I64;
}

/* Reads one integer of type t at p; -1 for a u64 above INT64_MAX. */
static int read_int(qc_gguf_type t, const uint8_t *p, int64_t *v) {
    switch (t) {
    case QC_GGUF_U8:
    case QC_GGUF_BOOL:
        *v = p[0];
        return 0;
    case QC_GGUF_I8:
        *v = (int8_t)p[0];
        return 0;
    case QC_GGUF_U16:
        *v = le16(p);
        return 0;
    case QC_GGUF_I16:
        *v = (int16_t)le16(p);
        return 0;
    case QC_GGUF_U32:
        *v = le32(p);
        return 0;
    case QC_GGUF_I32:
        *v = (int32_t)le32(p);
        return 0;
    case QC_GGUF_I64:
        *v = (int64_t)le64(p);
        return 0;
    case QC_GGUF_U64: {
        uint64_t u = le64(p);
        if (u > (uint64_t)INT64_MAX) return -1;
        *v = (int64_t)u;
        return 0;
    }
    default:
        return -1;
    }
}

static float read_f32(const uint8_t *p) {
    uint32_t b = le32(p);
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static double read_f64(const uint8_t *p) {
    uint64_t b = le64(p);
    double f;
    memcpy(&f, &b, 8);
    return f;
}

static int wrong_type(const qc_gguf *g, const qc_gguf_kv *kv, const char *want, qc_err *err) {
    if (kv->type == QC_GGUF_ARRAY)
        return qc_err_set(err, "%s: byte %zu: key '%s' is an array of %s, expected %s", g->path,
                          kv->key_offset, kv->key, type_names[kv->arr_type], want);
    return qc_err_set(err, "%s: byte %zu: key '%s' has type %s, expected %s", g->path,
                      kv->key_offset, kv->key, type_names[kv->type], want);
}

int qc_gguf_get_int(const qc_gguf *g, const char *key, int64_t *out, qc_err *err) {
    const qc_gguf_kv *kv = qc_gguf_find(g, key);
    if (!kv) return 1;
    if (!is_int_type(kv->type)) return wrong_type(g, kv, "an integer", err);
    if (read_int(kv->type, g->data + kv->offset, out))
        return qc_err_set(err, "%s: byte %zu: key '%s': value out of range", g->path, kv->offset,
                          key);
    return 0;
}

static int get_ranged(const qc_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *v,
                      qc_err *err) {
    int rc = qc_gguf_get_int(g, key, v, err);
    if (rc != 0) return rc;
    if (*v < lo || *v > hi)
        return qc_err_set(err, "%s: byte %zu: key '%s': value %lld out of range", g->path,
                          qc_gguf_find(g, key)->offset, key, (long long)*v);
    return 0;
}

int qc_gguf_get_u32(const qc_gguf *g, const char *key, uint32_t *out, qc_err *err) {
    int64_t v;
    int rc = get_ranged(g, key, 0, UINT32_MAX, &v, err);
    if (rc == 0) *out = (uint32_t)v;
    return rc;
}

int qc_gguf_get_i32(const qc_gguf *g, const char *key, int32_t *out, qc_err *err) {
    int64_t v;
    int rc = get_ranged(g, key, INT32_MIN, INT32_MAX, &v, err);
    if (rc == 0) *out = (int32_t)v;
    return rc;
}

int qc_gguf_get_f32(const qc_gguf *g, const char *key, float *out, qc_err *err) {
    const qc_gguf_kv *kv = qc_gguf_find(g, key);
    if (!kv) return 1;
    const uint8_t *p = g->data + kv->offset;
    int64_t v;
    if (kv->type == QC_GGUF_F32)
        *out = read_f32(p);
    else if (kv->type == QC_GGUF_F64)
        *out = (float)read_f64(p);
    else if (kv->type != QC_GGUF_BOOL && is_int_type(kv->type) && read_int(kv->type, p, &v) == 0)
        *out = (float)v;
    else
        return wrong_type(g, kv, "a number", err);
    return 0;
}

int qc_gguf_get_bool(const qc_gguf *g, const char *key, int *out, qc_err *err) {
    const qc_gguf_kv *kv = qc_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->type != QC_GGUF_BOOL) return wrong_type(g, kv, "bool", err);
    *out = g->data[kv->offset] != 0;
    return 0;
}

int qc_gguf_get_str(const qc_gguf *g, const char *key, const char **s, size_t *len, qc_err *err) {
    const qc_gguf_kv *kv = qc_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->type != QC_GGUF_STRING) return wrong_type(g, kv, "string", err);
    *len = (size_t)le64(g->data + kv->offset);
    *s = (const char *)g->data + kv->offset + 8;
    return 0;
}

/* Finds an array key and checks its element type with `ok`. */
static const qc_gguf_kv *find_array(const qc_gguf *g, const char *key, int (*ok)(qc_gguf_type),
                                    const char *want, int *rc, qc_err *err) {
    const qc_gguf_kv *kv = qc_gguf_find(g, key);
    *rc = 1;
    if (!kv) return NULL;
    if (kv->type != QC_GGUF_ARRAY || !ok(kv->arr_type)) {
        *rc = wrong_type(g, kv, want, err);
        return NULL;
    }
    *rc = 0;
    return kv;
}

static int is_string(qc_gguf_type t) {
    return t == QC_GGUF_STRING;
}
static int is_float(qc_gguf_type t) {
    return t == QC_GGUF_F32 || t == QC_GGUF_F64;
}
static int is_intlike(qc_gguf_type t) {
    return t != QC_GGUF_BOOL && is_int_type(t);
}

int qc_gguf_get_str_array(const qc_gguf *g, const char *key, const char ***strs, size_t **lens,
                          size_t *n, qc_err *err) {
    int rc;
    const qc_gguf_kv *kv = find_array(g, key, is_string, "an array of strings", &rc, err);
    if (!kv) return rc;
    /* The count was bounded by the file size (8 bytes per string) when parsed. */
    size_t cnt = (size_t)kv->arr_n;
    const char **s = qc_calloc(cnt, sizeof *s, err);
    size_t *l = qc_calloc(cnt, sizeof *l, err);
    if (!s || !l) {
        free(s);
        free(l);
        return -1;
    }
    size_t pos = kv->offset;
    for (size_t i = 0; i < cnt; i++) {
        l[i] = (size_t)le64(g->data + pos);
        s[i] = (const char *)g->data + pos + 8;
        pos += 8 + l[i];
    }
    *strs = s;
    *lens = l;
    *n = cnt;
    return 0;
}

int qc_gguf_get_f32_array(const qc_gguf *g, const char *key, float **out, size_t *n, qc_err *err) {
    int rc;
    const qc_gguf_kv *kv = find_array(g, key, is_float, "an array of floats", &rc, err);
    if (!kv) return rc;
    size_t cnt = (size_t)kv->arr_n;
    float *v = qc_calloc(cnt, sizeof *v, err);
    if (!v) return -1;
    const uint8_t *p = g->data + kv->offset;
    for (size_t i = 0; i < cnt; i++)
        v[i] = kv->arr_type == QC_GGUF_F32 ? read_f32(p + 4 * i) : (float)read_f64(p + 8 * i);
    *out = v;
    *n = cnt;
    return 0;
}

int qc_gguf_get_i32_array(const qc_gguf *g, const char *key, int32_t **out, size_t *n,
                          qc_err *err) {
    int rc;
    const qc_gguf_kv *kv = find_array(g, key, is_intlike, "an array of integers", &rc, err);
    if (!kv) return rc;
    size_t cnt = (size_t)kv->arr_n, es = fixed_size(kv->arr_type);
    int32_t *v = qc_calloc(cnt, sizeof *v, err);
    if (!v) return -1;
    const uint8_t *p = g->data + kv->offset;
    for (size_t i = 0; i < cnt; i++) {
        int64_t x;
        if (read_int(kv->arr_type, p + es * i, &x) || x < INT32_MIN || x > INT32_MAX) {
            free(v);
            return qc_err_set(err, "%s: byte %zu: key '%s': element %zu out of int32 range",
                              g->path, kv->offset + es * i, key, i);
        }
        v[i] = (int32_t)x;
    }
    *out = v;
    *n = cnt;
    return 0;
}
