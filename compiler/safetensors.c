#include "safetensors.h"
#include "limits.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void qc_safetensors_free(qc_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st);
}

const qc_st_tensor *qc_safetensors_find(const qc_safetensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

int qc_st_tensor_view(const qc_st_tensor *s, qc_tensor *t) {
    if (s->n_dims > 2) return -1;
    memset(t, 0, sizeof *t);
    t->name = s->name;
    t->dtype = s->dtype;
    t->n_dims = s->n_dims == 2 ? 2 : 1;
    t->shape[0] = s->n_dims == 0 ? 1 : s->shape[0];
    t->shape[1] = s->n_dims == 2 ? s->shape[1] : 1;
    t->data = s->data;
    t->nbytes = s->nbytes;
    return 0;
}

static int parse_dtype(const char *s, qc_dtype *out, size_t *item) {
    if (strcmp(s, "F32") == 0)
        *out = QC_DT_F32, *item = 4;
    else if (strcmp(s, "F16") == 0)
        *out = QC_DT_F16, *item = 2;
    else if (strcmp(s, "BF16") == 0)
        *out = QC_DT_BF16, *item = 2;
    else if (strcmp(s, "U8") == 0)
        *out = QC_DT_U8, *item = 1;
    else if (strcmp(s, "I32") == 0)
        *out = QC_DT_I32, *item = 4;
    else
        return -1;
    return 0;
}

/* Validates one header entry {dtype, shape, data_offsets} and fills t
 * (except name). data_size is the size of the data area. */
static int parse_entry(const char *file, const char *name, json_t *e, size_t data_start,
                       size_t data_size, qc_st_tensor *t, qc_err *err) {
    if (!json_is_object(e))
        return qc_err_set(err, "%s: tensor '%s': header entry is not a JSON object", file, name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return qc_err_set(err, "%s: tensor '%s': missing or non-string 'dtype'", file, name);
    size_t item;
    if (parse_dtype(json_string_value(jd), &t->dtype, &item))
        return qc_err_set(err,
                          "%s: tensor '%s': dtype '%.32s' is not supported (supported: F32, "
                          "F16, BF16)",
                          file, name, json_string_value(jd));
    if (!json_is_array(js))
        return qc_err_set(err, "%s: tensor '%s': missing or non-array 'shape'", file, name);
    if (json_array_size(js) > QC_ST_MAX_DIMS)
        return qc_err_set(err, "%s: tensor '%s': %zu dimensions (at most %d supported)", file, name,
                          json_array_size(js), QC_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(js);
    size_t numel = 1;
    for (int d = 0; d < t->n_dims; d++) {
        json_t *v = json_array_get(js, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return qc_err_set(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", file,
                              name, d);
        t->shape[d] = (int64_t)json_integer_value(v);
        if (qc_mul_size(numel, (size_t)t->shape[d], &numel))
            return qc_err_set(err, "%s: tensor '%s': element count overflows", file, name);
    }
    if (qc_mul_size(numel, item, &t->nbytes))
        return qc_err_set(err, "%s: tensor '%s': byte size overflows", file, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return qc_err_set(err, "%s: tensor '%s': 'data_offsets' must be [begin, end] integers",
                          file, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < b)
        return qc_err_set(err, "%s: tensor '%s': bad data_offsets [%lld, %lld]", file, name,
                          (long long)b, (long long)en);
    if ((unsigned long long)en > data_size)
        return qc_err_set(err,
                          "%s: tensor '%s': data_offsets [%lld, %lld] end past the data area "
                          "(%zu bytes from file offset %zu)",
                          file, name, (long long)b, (long long)en, data_size, data_start);
    if ((size_t)(en - b) != t->nbytes)
        return qc_err_set(err,
                          "%s: tensor '%s': %s shape needs %zu bytes but data_offsets [%lld, "
                          "%lld] hold %lld",
                          file, name, json_string_value(jd), t->nbytes, (long long)b, (long long)en,
                          (long long)(en - b));
    t->offset = data_start + (size_t)b;
    return 0;
}

static int check_metadata(const char *file, json_t *md, qc_err *err) {
    if (!json_is_object(md))
        return qc_err_set(err, "%s: '__metadata__' is not a JSON object", file);
    const char *k;
    json_t *v;
    json_object_foreach(md, k, v) {
        if (!json_is_string(v))
            return qc_err_set(err, "%s: '__metadata__' value '%.64s' is not a string", file, k);
    }
    return 0;
}

qc_safetensors *qc_safetensors_parse(const char *file, const uint8_t *data, size_t size,
                                     qc_err *err) {
    if (size < 8) {
        qc_err_set(err, "%s: file of %zu bytes is too short for a safetensors header", file, size);
        return NULL;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    if (hlen > qc_limit(QC_LIMIT_SAFETENSORS_HEADER)) {
        qc_err_set(err, "%s: header length %llu at byte 0 is over the %llu-byte limit (%s raises it)",
                   file, (unsigned long long)hlen,
                   (unsigned long long)qc_limit(QC_LIMIT_SAFETENSORS_HEADER),
                   qc_limit_env(QC_LIMIT_SAFETENSORS_HEADER));
        return NULL;
    }
    if (hlen > size - 8) {
        qc_err_set(err, "%s: header length %llu at byte 0 is past the end of the file (size %zu)",
                   file, (unsigned long long)hlen, size);
        return NULL;
    }
    size_t data_start = 8 + (size_t)hlen, data_size = size - data_start;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        qc_err_set(err, "%s: header byte %d (file offset %d, line %d, column %d): %s", file,
                   jerr.position, jerr.position + 8, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    qc_safetensors *st = NULL;
    if (!json_is_object(root)) {
        qc_err_set(err, "%s: header at byte 8 is not a JSON object", file);
        goto fail;
    }
    st = qc_calloc(1, sizeof *st, err);
    if (!st) goto fail;
    st->data_start = data_start;
    st->tensors = qc_calloc(json_object_size(root), sizeof *st->tensors, err);
    if (!st->tensors) goto fail;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (check_metadata(file, val, err)) goto fail;
            continue;
        }
        if (!key[0]) {
            qc_err_set(err, "%s: header has an empty tensor name", file);
            goto fail;
        }
        qc_st_tensor *t = &st->tensors[st->n_tensors];
        if (parse_entry(file, key, val, data_start, data_size, t, err)) goto fail;
        t->data = data + t->offset;
        t->name = strdup(key);
        if (!t->name) {
            qc_err_set(err, "out of memory");
            goto fail;
        }
        st->n_tensors++;
    }
    json_decref(root);
    return st;
fail:
    json_decref(root);
    qc_safetensors_free(st);
    return NULL;
}

qc_safetensors *qc_safetensors_parse_file(const qc_mapfile *f, qc_err *err) {
    return qc_safetensors_parse(f->path, f->data, f->size, err);
}
