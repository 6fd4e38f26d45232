/* GGUF v3 writer: key/values serialised into one buffer as they are added;
 * tensor infos and data written at the end (see gguf_write.h). */
#include "gguf_write.h"
#include "atomic_file.h"
#include "dequant.h"

#include <stdlib.h>
#include <string.h>

enum { ALIGN = 32 };

typedef struct wtensor {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    void *data;
    size_t nbytes;
} wtensor;

struct qc_gguf_writer {
    uint8_t *kv; /* serialised key/values */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys; /* for the uniqueness check */
    wtensor *t;
    int n_t;
};

qc_gguf_writer *qc_gguf_writer_new(qc_err *err) {
    return qc_calloc(1, sizeof(qc_gguf_writer), err);
}

void qc_gguf_writer_free(qc_gguf_writer *w) {
    if (!w) return;
    free(w->kv);
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (int i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
}

static int put(qc_gguf_writer *w, const void *p, size_t n, qc_err *err) {
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *nb = realloc(w->kv, cap);
        if (!nb) return qc_err_set(err, "out of memory");
        w->kv = nb;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return 0;
}

static int put_u32(qc_gguf_writer *w, uint32_t v, qc_err *err) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return put(w, b, 4, err);
}

static int put_u64(qc_gguf_writer *w, uint64_t v, qc_err *err) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return put(w, b, 8, err);
}

static int put_string(qc_gguf_writer *w, const char *s, size_t n, qc_err *err) {
    return put_u64(w, n, err) || put(w, s, n, err) ? -1 : 0;
}

/* Key and value type; the value follows. */
static int begin_kv(qc_gguf_writer *w, const char *key, qc_gguf_type type, qc_err *err) {
    char **nk = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *nk);
    if (!nk) return qc_err_set(err, "out of memory");
    w->keys = nk;
    if (!(w->keys[w->n_kv] = strdup(key))) return qc_err_set(err, "out of memory");
    w->n_kv++;
    return put_string(w, key, strlen(key), err) || put_u32(w, (uint32_t)type, err) ? -1 : 0;
}

int qc_gguf_w_u32(qc_gguf_writer *w, const char *key, uint32_t v, qc_err *err) {
    return begin_kv(w, key, QC_GGUF_U32, err) || put_u32(w, v, err) ? -1 : 0;
}

int qc_gguf_w_i32(qc_gguf_writer *w, const char *key, int32_t v, qc_err *err) {
    return begin_kv(w, key, QC_GGUF_I32, err) || put_u32(w, (uint32_t)v, err) ? -1 : 0;
}

int qc_gguf_w_f32(qc_gguf_writer *w, const char *key, float v, qc_err *err) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return begin_kv(w, key, QC_GGUF_F32, err) || put_u32(w, u, err) ? -1 : 0;
}

int qc_gguf_w_bool(qc_gguf_writer *w, const char *key, int v, qc_err *err) {
    uint8_t b = v != 0;
    return begin_kv(w, key, QC_GGUF_BOOL, err) || put(w, &b, 1, err) ? -1 : 0;
}

int qc_gguf_w_str(qc_gguf_writer *w, const char *key, const char *s, qc_err *err) {
    return begin_kv(w, key, QC_GGUF_STRING, err) || put_string(w, s, strlen(s), err) ? -1 : 0;
}

static size_t scalar_size(qc_gguf_type t) {
    switch (t) {
    case QC_GGUF_U8:
    case QC_GGUF_I8:
    case QC_GGUF_BOOL:
        return 1;
    case QC_GGUF_U16:
    case QC_GGUF_I16:
        return 2;
    case QC_GGUF_U32:
    case QC_GGUF_I32:
    case QC_GGUF_F32:
        return 4;
    case QC_GGUF_U64:
    case QC_GGUF_I64:
    case QC_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

int qc_gguf_w_arr(qc_gguf_writer *w, const char *key, qc_gguf_type elem, const void *data,
                  uint64_t n, qc_err *err) {
    size_t es = scalar_size(elem), bytes;
    if (!es)
        return qc_err_set(err, "%s: array of %s is not a numeric array", key,
                          qc_gguf_type_name(elem));
    if (qc_mul_size((size_t)n, es, &bytes)) return qc_err_set(err, "%s: array too large", key);
    return begin_kv(w, key, QC_GGUF_ARRAY, err) || put_u32(w, (uint32_t)elem, err) ||
                   put_u64(w, n, err) || put(w, data, bytes, err)
               ? -1
               : 0;
}

int qc_gguf_w_str_arr(qc_gguf_writer *w, const char *key, const char *const *s, const size_t *lens,
                      uint64_t n, qc_err *err) {
    if (begin_kv(w, key, QC_GGUF_ARRAY, err) || put_u32(w, QC_GGUF_STRING, err) ||
        put_u64(w, n, err))
        return -1;
    for (uint64_t i = 0; i < n; i++)
        if (put_string(w, s[i], lens ? lens[i] : strlen(s[i]), err)) return -1;
    return 0;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int qc_gguf_w_copy(qc_gguf_writer *w, const qc_gguf *src, const qc_gguf_kv *kv, qc_err *err) {
    const uint8_t *p = src->data + kv->offset, *end = src->data + src->size;
    size_t n;
    if (kv->type == QC_GGUF_STRING) {
        n = 8 + (size_t)rd64(p);
    } else if (kv->type == QC_GGUF_ARRAY) {
        p -= 12; /* element type and count precede the first element */
        if (kv->arr_type == QC_GGUF_STRING) {
            const uint8_t *q = p + 12;
            for (uint64_t i = 0; i < kv->arr_n; i++)
                q += 8 + (size_t)rd64(q); /* the reader validated every length */
            n = (size_t)(q - p);
        } else if (scalar_size(kv->arr_type)) {
            n = 12 + (size_t)kv->arr_n * scalar_size(kv->arr_type);
        } else {
            return qc_err_set(err, "%s: key '%s': nested arrays are not copied", src->path,
                              kv->key);
        }
    } else {
        n = scalar_size(kv->type);
    }
    if (n > (size_t)(end - p))
        return qc_err_set(err, "%s: key '%s': value runs past the end", src->path, kv->key);
    return begin_kv(w, kv->key, kv->type, err) || put(w, p, n, err) ? -1 : 0;
}

int qc_gguf_ggml_from_dtype(qc_dtype t) {
    switch (t) {
    case QC_DT_F32:
        return 0;
    case QC_DT_F16:
        return 1;
    case QC_DT_Q4_0:
        return 2;
    case QC_DT_Q4_1:
        return 3;
    case QC_DT_Q5_0:
        return 6;
    case QC_DT_Q5_1:
        return 7;
    case QC_DT_Q8_0:
        return 8;
    case QC_DT_Q3_K:
        return 11;
    case QC_DT_Q4_K:
        return 12;
    case QC_DT_Q5_K:
        return 13;
    case QC_DT_Q6_K:
        return 14;
    case QC_DT_IQ4_NL:
        return 20;
    case QC_DT_IQ4_XS:
        return 23;
    case QC_DT_BF16:
        return 30;
    default:
        return -1;
    }
}

int qc_gguf_w_tensor(qc_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims,
                     const int64_t *ne, void *data, size_t nbytes, qc_err *err) {
    qc_dtype dt;
    int64_t numel = 1;
    size_t want;
    if (n_dims < 1 || n_dims > 4) {
        free(data);
        return qc_err_set(err, "tensor '%s': %d dimensions", name, n_dims);
    }
    for (int i = 0; i < n_dims; i++)
        numel *= ne[i];
    if (qc_gguf_dtype_from_ggml(ggml_type, &dt) || qc_dtype_nbytes(dt, numel, &want) ||
        want != nbytes || ne[0] % qc_dtype_block_elems(dt)) {
        free(data);
        return qc_err_set(err, "tensor '%s': %zu bytes do not hold %lld values of type %s", name,
                          nbytes, (long long)numel, qc_gguf_ggml_type_name(ggml_type));
    }
    wtensor *nt = realloc(w->t, (size_t)(w->n_t + 1) * sizeof *nt);
    if (!nt) {
        free(data);
        return qc_err_set(err, "out of memory");
    }
    w->t = nt;
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        free(data);
        return qc_err_set(err, "out of memory");
    }
    t->type = ggml_type;
    t->n_dims = n_dims;
    memcpy(t->ne, ne, (size_t)n_dims * sizeof *ne);
    t->data = data;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
}

static int check_unique(const qc_gguf_writer *w, qc_err *err) {
    for (uint64_t i = 0; i < w->n_kv; i++)
        for (uint64_t j = i + 1; j < w->n_kv; j++)
            if (!strcmp(w->keys[i], w->keys[j]))
                return qc_err_set(err, "key '%s' added twice", w->keys[i]);
    for (int i = 0; i < w->n_t; i++)
        for (int j = i + 1; j < w->n_t; j++)
            if (!strcmp(w->t[i].name, w->t[j].name))
                return qc_err_set(err, "tensor '%s' added twice", w->t[i].name);
    return 0;
}

int qc_gguf_w_write(qc_gguf_writer *w, const char *path, qc_err *err) {
    if (check_unique(w, err)) return -1;
    /* Header, key/values and tensor infos go into w->kv's tail. */
    size_t kv_end = w->kv_len;
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        if (put_string(w, t->name, strlen(t->name), err) || put_u32(w, (uint32_t)t->n_dims, err))
            return -1;
        for (int d = 0; d < t->n_dims; d++)
            if (put_u64(w, (uint64_t)t->ne[d], err)) return -1;
        if (put_u32(w, t->type, err) || put_u64(w, off, err)) return -1;
        off += (t->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    uint8_t head[24] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)((uint64_t)w->n_t >> (8 * i));
        head[16 + i] = (uint8_t)(w->n_kv >> (8 * i));
    }
    static const uint8_t zeros[ALIGN];
    qc_atomic_file f;
    if (qc_atomic_open(&f, path, err)) {
        w->kv_len = kv_end;
        return -1;
    }
    size_t pos = sizeof head + w->kv_len;
    int rc = qc_atomic_write(&f, head, sizeof head, err) ||
             qc_atomic_write(&f, w->kv, w->kv_len, err) ||
             qc_atomic_write(&f, zeros, (ALIGN - pos % ALIGN) % ALIGN, err);
    for (int i = 0; rc == 0 && i < w->n_t; i++)
        rc = qc_atomic_write(&f, w->t[i].data, w->t[i].nbytes, err) ||
             qc_atomic_write(&f, zeros, (ALIGN - w->t[i].nbytes % ALIGN) % ALIGN, err);
    w->kv_len = kv_end;
    if (rc) {
        qc_atomic_abort(&f);
        return -1;
    }
    return qc_atomic_commit(&f, err);
}
