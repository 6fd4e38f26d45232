/* Checkpoints of the calibration driver (see checkpoint.h). */
#include "checkpoint.h"

#include "atomic_file.h"
#include "codegen/artifact_write.h"
#include "dequant.h"
#include "gguf_export.h"
#include "mapfile.h"
#include "pass.h"
#include "quant.h"
#include "runtime/artifact.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct mark {
    const char *name; /* the model's string */
    const void *data;
} mark;

struct qc_ckpt {
    char *dir;
    mark *marks;
    int n_marks;
};

static char *path_in(const qc_ckpt *c, const char *file) {
    size_t n = strlen(c->dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", c->dir, file);
    return p;
}

static void block_file(int b, char *buf, size_t n) {
    snprintf(buf, n, "block-%05d.qck", b);
}

void qc_ckpt_free(qc_ckpt *c) {
    if (!c) return;
    free(c->dir);
    free(c->marks);
    free(c);
}

qc_ckpt *qc_ckpt_open(const char *dir, const char *key, const char *what, qc_err *err) {
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        qc_err_set(err, "%s: cannot create the checkpoint directory: %s", dir, strerror(errno));
        return NULL;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        qc_err_set(err, "%s: checkpoint path is not a directory", dir);
        return NULL;
    }
    qc_ckpt *c = qc_calloc(1, sizeof *c, err);
    if (!c) return NULL;
    if (!(c->dir = strdup(dir))) goto oom;
    char *meta = path_in(c, "meta.json");
    if (!meta) goto oom;
    if (stat(meta, &sb) == 0) {
        size_t len;
        char *text = qc_read_file(meta, 1 << 20, &len, err);
        json_t *j = text ? json_loadb(text, len, 0, NULL) : NULL;
        const char *k = j ? json_string_value(json_object_get(j, "key")) : NULL;
        int same = k && !strcmp(k, key);
        free(text);
        json_decref(j);
        if (!same) {
            qc_err_set(err,
                       "%s holds the checkpoint of another compile (the recipe, the model, the "
                       "calibration data or the quantc version differ): delete it, or use "
                       "--checkpoint OTHER_DIR or --no-checkpoint",
                       dir);
            free(meta);
            qc_ckpt_free(c);
            return NULL;
        }
    } else {
        json_t *j = json_pack("{s:s, s:s}", "key", key, "what", what);
        char *text = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
        qc_atomic_file f;
        int rc = text ? 0 : qc_err_set(err, "out of memory");
        if (rc == 0 && (qc_atomic_open(&f, meta, err) || qc_atomic_write(&f, text, strlen(text), err) ||
                        qc_atomic_commit(&f, err))) {
            qc_atomic_abort(&f);
            rc = -1;
        }
        free(text);
        json_decref(j);
        if (rc) {
            free(meta);
            qc_ckpt_free(c);
            return NULL;
        }
    }
    free(meta);
    return c;
oom:
    qc_err_set(err, "out of memory");
    qc_ckpt_free(c);
    return NULL;
}

/* ---- saving ---- */

static int in_block(const char *name, int b) {
    char pre[32];
    int n = snprintf(pre, sizeof pre, "model.layers.%d.", b);
    return !strncmp(name, pre, (size_t)n);
}

int qc_ckpt_mark(qc_ckpt *c, const qc_model *m, int b, qc_err *err) {
    free(c->marks);
    c->n_marks = 0;
    if (!(c->marks = qc_calloc((size_t)m->n_tensors + 1, sizeof *c->marks, err))) return -1;
    for (int i = 0; i < m->n_tensors; i++)
        if (in_block(m->tensors[i].name, b))
            c->marks[c->n_marks++] = (mark){m->tensors[i].name, m->tensors[i].data};
    return 0;
}

static int changed(const qc_ckpt *c, const qc_tensor *t) {
    for (int i = 0; i < c->n_marks; i++)
        if (!strcmp(c->marks[i].name, t->name)) return c->marks[i].data != t->data;
    return 1; /* added by the block */
}

typedef struct saver {
    qc_artifact_writer *w;
    qc_err *err;
} saver;

static int add(saver *s, const char *prefix, const char *name, const char *part, const void *data,
               size_t size) {
    char sec[700];
    snprintf(sec, sizeof sec, "%s%s%s%s", prefix, name, part ? ":" : "", part ? part : "");
    return qc_artifact_writer_add(s->w, QCRT_SEC_TENSOR, sec, NULL, data, size, s->err);
}

static json_t *report_json(const qc_layer_report *l) {
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:s}",
                          "name", l->name, "method", l->method, "bits", l->bits, "group_size",
                          l->group_size, "symmetric", l->symmetric, "act_order", l->act_order,
                          "rows", (json_int_t)l->rows, "cols", (json_int_t)l->cols,
                          "bits_per_weight", l->bits_per_weight, "weight_err", l->weight_err,
                          "output_err", l->output_err, "seconds", l->seconds, "note", l->note);
    if (o && l->format) json_object_set_new(o, "format", json_string(l->format));
    return o;
}

static int save_state(saver *s, json_t *list, const char *name, const qc_quant_state *q) {
    json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:i, s:b}", "name", name,
                          "bits", q->fmt.bits, "group_size", q->fmt.group_size, "symmetric",
                          q->fmt.symmetric, "rows", (json_int_t)q->rows, "cols",
                          (json_int_t)q->cols, "n_groups", (json_int_t)q->n_groups, "nnz",
                          (json_int_t)q->nnz, "rank", q->rank, "perm", q->perm != NULL);
    if (!o || json_array_append_new(list, o)) return qc_err_set(s->err, "out of memory");
    if (!s->w) return 0;
    size_t cells = (size_t)(q->rows * q->cols), groups = (size_t)(q->rows * q->n_groups);
    int rc = add(s, "q:", name, "codes", q->codes, cells) ||
             add(s, "q:", name, "scales", q->scales, groups * 4) ||
             add(s, "q:", name, "zeros", q->zeros, groups * 4) ||
             add(s, "q:", name, "g_idx", q->g_idx, (size_t)q->cols * 4);
    if (!rc && q->perm) rc = add(s, "q:", name, "perm", q->perm, (size_t)q->cols * 4);
    if (!rc && q->nnz)
        rc = add(s, "q:", name, "row_ptr", q->row_ptr, (size_t)(q->rows + 1) * 4) ||
             add(s, "q:", name, "col", q->col, (size_t)q->nnz * 4) ||
             add(s, "q:", name, "val", q->val, (size_t)q->nnz * 2);
    if (!rc && q->rank)
        rc = add(s, "q:", name, "lr_a", q->lr_a, (size_t)(q->rows * q->rank) * 2) ||
             add(s, "q:", name, "lr_b", q->lr_b, (size_t)(q->rank * q->cols) * 2);
    return rc ? -1 : 0;
}

/* Writes file (in c->dir) as a container: manifest section `what` holding
 * the JSON from describe (called twice: without and with the writer, so the
 * manifest can go first), then the tensor sections it adds. */
static int write_container(const qc_ckpt *c, const char *file, const char *what,
                           int (*describe)(void *ud, saver *s, json_t *man), void *ud,
                           qc_err *err) {
    char *path = path_in(c, file), *text = NULL;
    json_t *man = json_object();
    saver s = {NULL, err};
    int rc = path && man ? describe(ud, &s, man) : qc_err_set(err, "out of memory");
    if (rc == 0 && !(text = json_dumps(man, JSON_SORT_KEYS | JSON_REAL_PRECISION(17))))
        rc = qc_err_set(err, "out of memory");
    qc_artifact_compress none = {QCRT_COMP_NONE, 0};
    if (rc == 0 && !(s.w = qc_artifact_writer_new(path, &none, err))) rc = -1;
    if (rc == 0)
        rc = qc_artifact_writer_add(s.w, QCRT_SEC_MANIFEST, what, NULL, text, strlen(text), err);
    json_t *again = json_object();
    if (rc == 0) rc = again ? describe(ud, &s, again) : qc_err_set(err, "out of memory");
    if (rc == 0) rc = qc_artifact_writer_finish(s.w, err);
    if (rc) qc_err_prefix(err, "checkpoint %s", path ? path : file);
    qc_artifact_writer_free(s.w);
    json_decref(again);
    json_decref(man);
    free(text);
    free(path);
    return rc;
}

typedef struct block_ctx {
    const qc_ckpt *c;
    const qc_model *m;
    int b;
    const qc_calib_report *rep;
    int rep_from;
} block_ctx;

static int describe_block(void *ud, saver *s, json_t *man) {
    block_ctx *bc = ud;
    const qc_model *m = bc->m;
    json_t *tensors = json_array(), *states = json_array(), *report = json_array();
    if (!tensors || !states || !report ||
        json_object_set_new(man, "block", json_integer(bc->b)) ||
        json_object_set_new(man, "tensors", tensors) || json_object_set_new(man, "states", states) ||
        json_object_set_new(man, "report", report))
        return qc_err_set(s->err, "out of memory");
    for (int i = 0; i < m->n_tensors; i++) {
        const qc_tensor *t = &m->tensors[i];
        if (!in_block(t->name, bc->b) || !changed(bc->c, t)) continue;
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i}", "name", t->name, "dtype",
                              qc_dtype_name(t->dtype), "rows", (json_int_t)t->shape[0], "cols",
                              (json_int_t)(t->n_dims == 2 ? t->shape[1] : 0), "unpermute_heads",
                              t->unpermute_heads);
        if (!o || json_array_append_new(tensors, o)) return qc_err_set(s->err, "out of memory");
        if (s->w && add(s, "t:", t->name, NULL, t->data, t->nbytes)) return -1;
    }
    for (int i = 0; i < m->n_quant; i++)
        if (in_block(m->quant[i].name, bc->b) &&
            save_state(s, states, m->quant[i].name, m->quant[i].q))
            return -1;
    for (int i = bc->rep_from; i < bc->rep->n_layers; i++) {
        json_t *o = report_json(&bc->rep->layers[i]);
        if (!o || json_array_append_new(report, o)) return qc_err_set(s->err, "out of memory");
    }
    return 0;
}

typedef struct inputs_ctx {
    int next;
    const float *X;
    size_t n;
} inputs_ctx;

static int describe_inputs(void *ud, saver *s, json_t *man) {
    inputs_ctx *ic = ud;
    if (json_object_set_new(man, "next_block", json_integer(ic->next)) ||
        json_object_set_new(man, "floats", json_integer((json_int_t)ic->n)))
        return qc_err_set(s->err, "out of memory");
    return s->w ? qc_artifact_writer_add(s->w, QCRT_SEC_TENSOR, "X", NULL, ic->X,
                                         ic->n * sizeof(float), s->err)
                : 0;
}

int qc_ckpt_save_block(qc_ckpt *c, const qc_model *m, int b, const qc_calib_report *rep,
                       int rep_from, const float *X, size_t x_floats, qc_err *err) {
    char file[64];
    block_file(b, file, sizeof file);
    block_ctx bc = {c, m, b, rep, rep_from};
    inputs_ctx ic = {b + 1, X, x_floats};
    if (write_container(c, file, "block.json", describe_block, &bc, err)) return -1;
    /* Test hook: die between the block's file and the inputs (the block is
     * then redone on resume). */
    const char *hook = getenv("QC_TEST_CHECKPOINT_KILL");
    if (hook && atoi(hook) == -(b + 1)) raise(SIGKILL);
    if (write_container(c, "inputs.qck", "state.json", describe_inputs, &ic, err)) return -1;
    if (hook && atoi(hook) == b + 1) raise(SIGKILL);
    return 0;
}

/* ---- restoring ---- */

typedef struct reader {
    qcrt_artifact *a;
    const char *path;
    qc_err *err;
} reader;

static json_t *open_container(reader *rd, const char *path, const char *what, qc_err *err) {
    rd->path = path;
    rd->err = err;
    if (!(rd->a = qcrt_artifact_open(path, err))) return NULL;
    const qcrt_section *s = qcrt_artifact_find(rd->a, QCRT_SEC_MANIFEST, what);
    void *owned = NULL;
    const uint8_t *d = s ? qcrt_artifact_section_data(rd->a, s, &owned, err) : NULL;
    json_t *j = d ? json_loadb((const char *)d, (size_t)s->raw_size, 0, NULL) : NULL;
    free(owned);
    if (!j) qc_err_set(err, "checkpoint %s: no readable %s", path, what);
    return j;
}

/* A tensor section's bytes into a new buffer of exactly size bytes. */
static void *take(reader *rd, const char *prefix, const char *name, const char *part,
                  size_t size) {
    char sec[700];
    snprintf(sec, sizeof sec, "%s%s%s%s", prefix, name, part ? ":" : "", part ? part : "");
    const qcrt_section *s = qcrt_artifact_find(rd->a, QCRT_SEC_TENSOR, sec);
    if (!s || s->raw_size != size) {
        qc_err_set(rd->err, "checkpoint %s: section '%s' is missing or has the wrong size",
                   rd->path, sec);
        return NULL;
    }
    void *p = qc_malloc(size ? size : 1, rd->err);
    if (p && qcrt_artifact_section_read(rd->a, s, p, rd->err)) {
        free(p);
        return NULL;
    }
    return p;
}

static int restore_tensor(reader *rd, qc_model *m, json_t *o) {
    const char *name, *dt;
    json_int_t rows, cols;
    int unperm;
    qc_dtype t;
    if (json_unpack(o, "{s:s, s:s, s:I, s:I, s:i}", "name", &name, "dtype", &dt, "rows", &rows,
                    "cols", &cols, "unpermute_heads", &unperm) != 0 ||
        qc_dtype_from_name(dt, &t) || rows <= 0 || cols < 0 || (t != QC_DT_F32 && cols == 0))
        return qc_err_set(rd->err, "checkpoint %s: bad tensor entry", rd->path);
    size_t size;
    if (qc_dtype_nbytes(t, rows * (cols ? cols : 1), &size))
        return qc_err_set(rd->err, "checkpoint %s: tensor '%s' too large", rd->path, name);
    void *data = take(rd, "t:", name, NULL, size);
    if (!data) return -1;
    int rc = t == QC_DT_F32 ? qc_model_set_f32(m, name, rows, cols, data, rd->err)
                            : qc_model_set_blocks(m, name, t, rows, cols, data, rd->err);
    if (rc) return -1;
    qc_tensor *tt = (qc_tensor *)qc_model_find(m, name);
    if (tt) tt->unpermute_heads = unperm;
    return 0;
}

static int restore_state(reader *rd, qc_model *m, json_t *o) {
    const char *name;
    json_int_t rows, cols, ng, nnz;
    int bits, group, sym, rank, perm;
    if (json_unpack(o, "{s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:i, s:b}", "name", &name,
                    "bits", &bits, "group_size", &group, "symmetric", &sym, "rows", &rows, "cols",
                    &cols, "n_groups", &ng, "nnz", &nnz, "rank", &rank, "perm", &perm) != 0)
        return qc_err_set(rd->err, "checkpoint %s: bad state entry", rd->path);
    qc_quant_format f = {bits, group, sym};
    qc_quant_state *q = qc_quant_state_new(&f, rows, cols, rd->err);
    if (!q) return qc_err_prefix(rd->err, "checkpoint %s: '%s'", rd->path, name);
    if (q->n_groups != ng || nnz < 0 || nnz > rows * cols || rank < 0 || rank > rows ||
        rank > cols) {
        qc_quant_state_free(q);
        return qc_err_set(rd->err, "checkpoint %s: '%s': inconsistent state", rd->path, name);
    }
    size_t cells = (size_t)(rows * cols), groups = (size_t)(rows * ng);
    void *codes = take(rd, "q:", name, "codes", cells);
    void *sc = codes ? take(rd, "q:", name, "scales", groups * 4) : NULL;
    void *ze = sc ? take(rd, "q:", name, "zeros", groups * 4) : NULL;
    void *gi = ze ? take(rd, "q:", name, "g_idx", (size_t)cols * 4) : NULL;
    int ok = gi != NULL;
    if (ok) {
        memcpy(q->codes, codes, cells);
        memcpy(q->scales, sc, groups * 4);
        memcpy(q->zeros, ze, groups * 4);
        memcpy(q->g_idx, gi, (size_t)cols * 4);
    }
    free(codes), free(sc), free(ze), free(gi);
    if (ok && perm) ok = (q->perm = take(rd, "q:", name, "perm", (size_t)cols * 4)) != NULL;
    if (ok && nnz) {
        q->nnz = nnz;
        ok = (q->row_ptr = take(rd, "q:", name, "row_ptr", (size_t)(rows + 1) * 4)) &&
             (q->col = take(rd, "q:", name, "col", (size_t)nnz * 4)) &&
             (q->val = take(rd, "q:", name, "val", (size_t)nnz * 2));
    }
    if (ok && rank) {
        q->rank = rank;
        ok = (q->lr_a = take(rd, "q:", name, "lr_a", (size_t)(rows * rank) * 2)) &&
             (q->lr_b = take(rd, "q:", name, "lr_b", (size_t)(rank * cols) * 2));
    }
    char *wname = ok ? strdup(name) : NULL;
    if (!wname) {
        if (ok) qc_err_set(rd->err, "out of memory");
        qc_quant_state_free(q);
        return -1;
    }
    return qc_model_add_quant(m, wname, q, rd->err);
}

/* The recipe's copy of a method name (report lines point at strings that
 * live as long as the recipe): a pass name or a pass's "method" value. */
static const char *method_string(const qc_recipe *r, const char *s) {
    for (int p = 0; p < r->n_passes; p++) {
        if (!strcmp(r->passes[p].pass->name, s)) return r->passes[p].pass->name;
        const qc_param_value *v = qc_params_get(&r->passes[p].params, "method");
        if (v && v->s && !strcmp(v->s, s)) return v->s;
    }
    return !strcmp(s, "none") ? "none" : "quantized";
}

static int restore_report(reader *rd, const qc_recipe *r, qc_calib_report *rep, json_t *o) {
    const char *name, *method, *note, *format = NULL;
    qc_layer_report l = {0};
    json_int_t rows, cols;
    if (json_unpack(o, "{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:F, s:F, s:F, s:F, s:s, s?s}",
                    "name", &name, "method", &method, "bits", &l.bits, "group_size",
                    &l.group_size, "symmetric", &l.symmetric, "act_order", &l.act_order, "rows",
                    &rows, "cols", &cols, "bits_per_weight", &l.bits_per_weight, "weight_err",
                    &l.weight_err, "output_err", &l.output_err, "seconds", &l.seconds, "note",
                    &note, "format", &format) != 0)
        return qc_err_set(rd->err, "checkpoint %s: bad report line", rd->path);
    qc_dtype t;
    l.rows = rows, l.cols = cols;
    l.method = method_string(r, method);
    l.format = format && qc_dtype_from_name(format, &t) == 0 ? qc_dtype_name(t) : NULL;
    snprintf(l.note, sizeof l.note, "%s", note);
    qc_layer_report *nl = realloc(rep->layers, (size_t)(rep->n_layers + 1) * sizeof *nl);
    if (!nl || !(l.name = strdup(name))) {
        if (nl) rep->layers = nl;
        return qc_err_set(rd->err, "out of memory");
    }
    rep->layers = nl;
    rep->layers[rep->n_layers++] = l;
    rep->total_linear_params += l.rows * l.cols;
    if (strcmp(l.method, "none")) rep->quantized_params += l.rows * l.cols;
    return 0;
}

int qc_ckpt_restore(qc_ckpt *c, qc_model *m, const qc_recipe *r, qc_calib_report *rep, float *X,
                    size_t x_floats, qc_err *err) {
    char *ip = path_in(c, "inputs.qck");
    struct stat sb;
    if (!ip) return qc_err_set(err, "out of memory");
    if (stat(ip, &sb) != 0) {
        free(ip);
        return 0;
    }
    reader rd = {0};
    json_t *st = open_container(&rd, ip, "state.json", err);
    json_int_t next = -1, floats = -1;
    int rc = st ? 0 : -1;
    if (rc == 0 &&
        (json_unpack(st, "{s:I, s:I}", "next_block", &next, "floats", &floats) != 0 ||
         next < 1 || next > m->cfg.n_layers || floats != (json_int_t)x_floats))
        rc = qc_err_set(err,
                        "checkpoint %s: inputs of block %lld with %lld values do not fit this "
                        "compile (%zu values)",
                        ip, (long long)next, (long long)floats, x_floats);
    float *x = rc == 0 ? take(&rd, "", "X", NULL, x_floats * sizeof(float)) : NULL;
    if (rc == 0 && !x) rc = -1;
    if (x) memcpy(X, x, x_floats * sizeof(float));
    free(x);
    json_decref(st);
    qcrt_artifact_free(rd.a);
    free(ip);
    for (int b = 0; rc == 0 && b < next; b++) {
        char file[64];
        block_file(b, file, sizeof file);
        char *bp = path_in(c, file);
        reader br = {0};
        json_t *man = bp ? open_container(&br, bp, "block.json", err) : NULL;
        json_t *v;
        size_t i;
        if (!bp) qc_err_set(err, "out of memory");
        if (!man || json_integer_value(json_object_get(man, "block")) != b) {
            if (man) qc_err_set(err, "checkpoint %s: not block %d", bp, b);
            rc = -1;
        }
        static const char *const lists[3] = {"tensors", "states", "report"};
        for (int k = 0; k < 3 && rc == 0; k++) {
            json_t *list = json_object_get(man, lists[k]);
            if (!json_is_array(list))
                rc = qc_err_set(err, "checkpoint %s: no %s list", bp, lists[k]);
            json_array_foreach(rc == 0 ? list : NULL, i, v) {
                rc = k == 0   ? restore_tensor(&br, m, v)
                     : k == 1 ? restore_state(&br, m, v)
                              : restore_report(&br, r, rep, v);
                if (rc) break;
            }
        }
        json_decref(man);
        qcrt_artifact_free(br.a);
        free(bp);
    }
    return rc ? -1 : (int)next;
}

/* Unlinks dir/name; a missing file is fine. */
static int unlink_in(const qc_ckpt *c, const char *name, qc_err *err) {
    char *p = path_in(c, name);
    int rc = p && (unlink(p) == 0 || errno == ENOENT)
                 ? 0
                 : qc_err_set(err, "%s/%s: cannot remove: %s", c->dir, name, strerror(errno));
    free(p);
    return rc;
}

int qc_ckpt_remove_dir(const char *dir, qc_err *err) {
    qc_ckpt cc = {.dir = (char *)dir}, *c = &cc;
    /* inputs.qck first (without it nothing is resumed, so a kill during the
     * removal cannot resume from a partial set of blocks), meta.json last
     * (leftover blocks always carry the key they belong to). */
    if (unlink_in(c, "inputs.qck", err)) return -1;
    DIR *d = opendir(c->dir);
    if (!d) return qc_err_set(err, "%s: %s", c->dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        /* block-*.qck, and the temporaries of every file */
        int ours = !strncmp(n, "block-", 6) || !strncmp(n, "inputs.qck.", 11) ||
                   !strncmp(n, "meta.json.", 10);
        if (ours && unlink_in(c, n, err)) rc = -1;
    }
    closedir(d);
    if (rc == 0 && unlink_in(c, "meta.json", err)) rc = -1;
    rmdir(c->dir); /* fails, harmlessly, when something else is inside */
    return rc;
}
