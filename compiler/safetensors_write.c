/* safetensors writer (see safetensors_write.h). */
#include "safetensors_write.h"
#include "atomic_file.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

size_t qc_stw_dtype_size(const char *d) {
    static const struct {
        const char *name;
        size_t size;
    } t[] = {{"F64", 8}, {"I64", 8}, {"F32", 4}, {"I32", 4}, {"F16", 2},
             {"BF16", 2}, {"I16", 2}, {"I8", 1},  {"U8", 1}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(d, t[i].name)) return t[i].size;
    return 0;
}

/* The JSON header, padded with spaces to a multiple of 8; *len its size. */
static char *header(const qc_stw_entry *e, int first, int n, size_t *len, qc_err *err) {
    json_t *h = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    int bad = !h || !meta || json_object_set_new(h, "__metadata__", meta);
    size_t off = 0;
    for (int i = first; !bad && i < first + n; i++) {
        json_t *shape = json_array();
        for (int d = 0; shape && d < e[i].n_dims; d++)
            bad |= json_array_append_new(shape, json_integer(e[i].shape[d]));
        json_t *t = json_pack("{s:s, s:o, s:[I, I]}", "dtype", e[i].dtype, "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + e[i].nbytes));
        bad |= !t || json_object_set_new(h, e[i].name, t);
        off += e[i].nbytes;
    }
    char *s = bad ? NULL : json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!s) {
        qc_err_set(err, "out of memory building a safetensors header");
        return NULL;
    }
    size_t n0 = strlen(s), n8 = (n0 + 7) / 8 * 8;
    char *p = realloc(s, n8 + 1);
    if (!p) {
        free(s);
        qc_err_set(err, "out of memory building a safetensors header");
        return NULL;
    }
    memset(p + n0, ' ', n8 - n0);
    p[n8] = 0;
    *len = n8;
    return p;
}

int qc_stw_write(const char *path, const qc_stw_entry *e, int first, int n, qc_stw_fill_fn fill,
                 void *ud, qc_err *err) {
    size_t hlen, biggest = 1;
    for (int i = first; i < first + n; i++)
        if (e[i].nbytes > biggest) biggest = e[i].nbytes;
    char *h = header(e, first, n, &hlen, err);
    if (!h) return -1;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    qc_atomic_file f;
    uint8_t *buf = NULL;
    int rc = qc_atomic_open(&f, path, err);
    if (rc == 0)
        rc = qc_atomic_write(&f, len8, 8, err) || qc_atomic_write(&f, h, hlen, err) ? -1 : 0;
    free(h);
    if (rc == 0 && !(buf = qc_malloc(biggest, err))) rc = -1;
    for (int i = first; rc == 0 && i < first + n; i++) {
        if (fill(ud, i, &e[i], buf, err))
            rc = qc_err_prefix(err, "%s: tensor '%s'", path, e[i].name);
        else
            rc = qc_atomic_write(&f, buf, e[i].nbytes, err);
    }
    free(buf);
    if (rc == 0) return qc_atomic_commit(&f, err);
    qc_atomic_abort(&f);
    return -1;
}
