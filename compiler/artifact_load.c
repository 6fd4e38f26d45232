/* Artifact -> model IR (see artifact_model.h). The container has already
 * checked offsets and checksums; this checks that the manifest is consistent
 * with the sections (every tensor listed with a dtype and shape whose size
 * matches its section, layers referring to tensors of the right shapes) and
 * that quantized states are in range, before anything is used. Errors read
 * "PATH: manifest.json: ..." or "PATH: layer 'L': ...". */
#include "artifact_model.h"

#include "codegen/cuda_nvrtc.h"
#include "codegen/cuda_pack.h"
#include "codegen/pack.h"
#include "dequant.h"
#include "gguf.h"
#include "loaders.h"
#include "quant.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* One tensor section with its manifest dtype and shape. */
typedef struct view {
    const char *name;
    qc_dtype dtype;
    int n_dims;
    int64_t shape[2];
    const uint8_t *data;
    size_t nbytes;
    int used; /* claimed by a quantized layer */
} view;

typedef struct lctx {
    qc_model *m;
    const qcrt_artifact *a;
    const char *path;
    view *views;
    int n_views;
    qc_err *err;
} lctx;

/* A dtype by name (F32, F16, BF16, U8, I32 or a GGUF block type). */
static int dtype_of(const char *s, qc_dtype *out) {
    for (int t = 0; t < QC_DT_COUNT; t++)
        if (!strcmp(s, qc_dtype_name((qc_dtype)t))) {
            *out = (qc_dtype)t;
            return 0;
        }
    return -1;
}

/* Raw bytes of a section: in the mapping when stored plainly, else in an
 * anonymous mapping that the model owns from then on (so tensors may point
 * into it like into the file). */
static const uint8_t *section_bytes(lctx *c, const qcrt_section *s) {
    if (s->compression == QCRT_COMP_NONE || s->raw_size == 0) return s->stored;
    void *p =
        mmap(NULL, (size_t)s->raw_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        qc_err_set(c->err, "%s: section '%s': out of memory for %llu bytes", c->path, s->name,
                   (unsigned long long)s->raw_size);
        return NULL;
    }
    qc_mapfile *f = qc_calloc(1, sizeof *f, c->err);
    if (!f || !(f->path = strdup(s->name))) {
        if (f) qc_err_set(c->err, "out of memory");
        free(f);
        munmap(p, (size_t)s->raw_size);
        return NULL;
    }
    f->data = p;
    f->size = (size_t)s->raw_size;
    if (qc_model_add_file(c->m, f, c->err)) return NULL;
    if (qcrt_artifact_section_read(c->a, s, p, c->err)) return NULL;
    return p;
}

static int read_views(lctx *c, json_t *tensors) {
    int n = 0;
    for (int i = 0; i < c->a->n_sections; i++)
        n += c->a->sections[i].kind == QCRT_SEC_TENSOR;
    if ((size_t)n != json_object_size(tensors))
        return qc_err_set(c->err,
                          "%s: manifest.json lists %zu tensors but the file has %d tensor "
                          "sections",
                          c->path, json_object_size(tensors), n);
    if (!(c->views = qc_calloc((size_t)(n ? n : 1), sizeof *c->views, c->err))) return -1;
    for (int i = 0; i < c->a->n_sections; i++) {
        const qcrt_section *s = &c->a->sections[i];
        if (s->kind != QCRT_SEC_TENSOR) continue;
        view *v = &c->views[c->n_views++];
        v->name = s->name;
        json_t *t = json_object_get(tensors, s->name), *shape;
        const char *dt;
        if (json_unpack(t, "{s:s, s:o}", "dtype", &dt, "shape", &shape) != 0 ||
            !json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 2 ||
            dtype_of(dt, &v->dtype))
            return qc_err_set(c->err,
                              "%s: manifest.json: tensor '%s' needs a dtype (F32, F16, BF16, "
                              "U8, I32, or a GGUF type such as Q8_0) and a shape of 1 or 2 "
                              "dimensions",
                              c->path, s->name);
        v->n_dims = (int)json_array_size(shape);
        v->shape[1] = 1;
        uint64_t numel = 1;
        for (int d = 0; d < v->n_dims; d++) {
            json_t *x = json_array_get(shape, (size_t)d);
            json_int_t e = json_is_integer(x) ? json_integer_value(x) : -1;
            if (e <= 0 || e > ((json_int_t)1 << 40) || numel > UINT64_MAX / (uint64_t)e)
                return qc_err_set(c->err, "%s: manifest.json: tensor '%s': bad shape", c->path,
                                  s->name);
            v->shape[d] = e;
            numel *= (uint64_t)e;
        }
        size_t need;
        if (numel > (uint64_t)INT64_MAX || qc_dtype_nbytes(v->dtype, (int64_t)numel, &need) ||
            need != s->raw_size)
            return qc_err_set(c->err,
                              "%s: tensor '%s': %s [%lld, %lld] does not fill the section's "
                              "%llu bytes",
                              c->path, s->name, dt, (long long)v->shape[0], (long long)v->shape[1],
                              (unsigned long long)s->raw_size);
        v->nbytes = (size_t)s->raw_size;
        if (!(v->data = section_bytes(c, s))) return -1;
    }
    return 0;
}

static view *find_view(lctx *c, json_t *parts, const char *part) {
    const char *name = json_string_value(json_object_get(parts, part));
    for (int i = 0; name && i < c->n_views; i++)
        if (!strcmp(c->views[i].name, name)) return &c->views[i];
    return NULL;
}

/* The tensor parts[part] of a layer with the given dtypes allowed and shape
 * (cols 0: 1-D); NULL with err when it is missing or wrong. */
static view *layer_part(lctx *c, const char *mod, json_t *parts, const char *part,
                        const qc_dtype *ok, int n_ok, int64_t rows, int64_t cols) {
    view *v = find_view(c, parts, part);
    int dt_ok = 0;
    for (int i = 0; v && i < n_ok; i++)
        dt_ok |= v->dtype == ok[i];
    if (!v || !dt_ok || v->used || v->n_dims != (cols ? 2 : 1) || v->shape[0] != rows ||
        (cols && v->shape[1] != cols)) {
        qc_err_set(c->err,
                   "%s: layer '%s': tensor '%s' is missing, used twice, or not %s [%lld%s%lld]",
                   c->path, mod, part, qc_dtype_name(ok[0]), (long long)rows, cols ? ", " : "",
                   (long long)(cols ? cols : 0));
        return NULL;
    }
    v->used = 1;
    return v;
}

/* F16/F32 (or U8) values of a view into f32. */
static void to_f32(const view *v, float *out, int64_t n) {
    if (v->dtype == QC_DT_U8)
        for (int64_t i = 0; i < n; i++)
            out[i] = v->data[i];
    else
        qc_dequantize(v->dtype, v->data, out, n);
}

/* A copy of a view's bytes (the state owns its arrays). */
static void *copy_view(const view *v, qc_err *err) {
    void *p = qc_malloc(v->nbytes, err);
    if (p) memcpy(p, v->data, v->nbytes);
    return p;
}

/* f16 bits that are Inf or NaN (exponent all ones). */
static int f16_bad(uint16_t h) {
    return (h & 0x7c00) == 0x7c00;
}

/* CSR: row_ptr from 0 to nnz, non-decreasing; columns in range and
 * increasing within a row; finite values. Low-rank factors finite. */
static const char *check_sparse(const qc_quant_state *q) {
    if (q->nnz > 0) {
        if (q->row_ptr[0] != 0 || q->row_ptr[q->rows] != q->nnz)
            return "outlier row_ptr does not run from 0 to the outlier count";
        for (int64_t r = 0; r < q->rows; r++) {
            if (q->row_ptr[r + 1] < q->row_ptr[r]) return "outlier row_ptr decreases";
            for (int32_t k = q->row_ptr[r]; k < q->row_ptr[r + 1]; k++)
                if (q->col[k] < 0 || q->col[k] >= q->cols ||
                    (k > q->row_ptr[r] && q->col[k] <= q->col[k - 1]) || f16_bad(q->val[k]))
                    return "an outlier column is out of range or out of order, or its value is "
                           "not finite";
        }
    }
    for (int64_t i = 0; i < (q->rows + q->cols) * q->rank; i++)
        if (f16_bad(i < q->rows * q->rank ? q->lr_a[i] : q->lr_b[i - q->rows * q->rank]))
            return "a low-rank factor is not finite";
    return NULL;
}

static int check_state(lctx *c, const char *mod, const qc_quant_state *q) {
    const char *bad = NULL;
    float maxq = (float)((1 << q->fmt.bits) - 1);
    for (int64_t i = 0; i < q->rows * q->n_groups && !bad; i++)
        if (!isfinite(q->scales[i]) || !(q->zeros[i] >= 0 && q->zeros[i] <= maxq))
            bad = "a scale is not finite or a zero point is outside the code range";
    for (int64_t i = 0; i < q->cols && !bad; i++)
        if (q->g_idx[i] < 0 || q->g_idx[i] >= q->n_groups) bad = "a group index is out of range";
    if (q->perm && !bad) {
        /* cols <= INT32_MAX (qc_quant_format_check) */
        uint8_t *seen = qc_calloc((size_t)(uint32_t)q->cols, 1, c->err);
        if (!seen) return -1;
        for (int64_t i = 0; i < q->cols && !bad; i++) {
            int32_t p = q->perm[i];
            if (p < 0 || p >= q->cols || seen[p]++) bad = "perm is not a permutation";
        }
        free(seen);
    }
    if (!bad) bad = check_sparse(q);
    return bad ? qc_err_set(c->err, "%s: layer '%s': %s", c->path, mod, bad) : 0;
}

/* Checks q and attaches it to the model as weight's state (with its packed
 * blob when the layer has one). Takes q, also on error. */
static int attach_state(lctx *c, const char *mod, const char *weight, qc_quant_state *q,
                        const uint8_t *packed, size_t packed_size) {
    char *wname = strdup(weight);
    if (check_state(c, mod, q) || !wname) {
        if (!wname) qc_err_set(c->err, "out of memory");
        free(wname);
        qc_quant_state_free(q);
        return -1;
    }
    if (qc_model_quant(c->m, weight)) {
        free(wname);
        qc_quant_state_free(q);
        return qc_err_set(c->err, "%s: weight '%s' is quantized twice", c->path, weight);
    }
    if (qc_model_add_quant(c->m, wname, q, c->err)) return -1;
    c->m->quant[c->m->n_quant - 1].packed = packed;
    c->m->quant[c->m->n_quant - 1].packed_size = packed_size;
    return 0;
}

/* The packed blob parts[role] of layer mod (a 1-D U8 tensor), claimed for
 * the layer; NULL with err when missing, claimed already or not U8. */
static view *blob_view(lctx *c, json_t *parts, const char *role, const char *mod) {
    view *v = find_view(c, parts, role);
    if (!v || v->used || v->dtype != QC_DT_U8 || v->n_dims != 1) {
        qc_err_set(c->err, "%s: layer '%s': tensor '%s' is missing, used twice or not a 1-D U8 "
                           "tensor",
                   c->path, mod, role);
        return NULL;
    }
    v->used = 1;
    return v;
}

/* The layer's CUDA blob (part "cuda_packed", layout qccuda1), when it has
 * one: checked with qc_cuda_pack_check against the spec of the state just
 * attached (so a kernel can never read outside it) and recorded on the
 * model's last quantized linear. cuda_kernel names that spec, or that spec
 * with the online Hadamard of its input width (suffix _h<in>: the module
 * that runs a layer with an online transform reads the same blob). */
static int read_cuda_part(lctx *c, json_t *layer, const char *mod, json_t *parts) {
    if (!json_object_get(parts, "cuda_packed")) return 0;
    const char *lay = json_string_value(json_object_get(layer, "cuda_layout"));
    const char *kid = json_string_value(json_object_get(layer, "cuda_kernel"));
    if (!lay || strcmp(lay, QC_ARTIFACT_CUDA_LAYOUT) || !kid)
        return qc_err_set(c->err,
                          "%s: layer '%s': a cuda_packed tensor needs cuda_layout \"%s\" and "
                          "cuda_kernel",
                          c->path, mod, QC_ARTIFACT_CUDA_LAYOUT);
    view *v = blob_view(c, parts, "cuda_packed", mod);
    if (!v) return -1;
    qc_qlinear *ql = &c->m->quant[c->m->n_quant - 1];
    qc_kernel_spec spec;
    char id[96];
    if (qc_kernel_spec_from_quant(ql->q, ql->q->nnz > 0, ql->q->rank, &spec, c->err) ||
        qc_cuda_pack_check(&spec, v->data, v->nbytes, c->err))
        return qc_err_prefix(c->err, "%s: layer '%s': cuda_packed", c->path, mod);
    qc_kernel_spec hs = spec;
    char hid[96] = "";
    hs.transform = QC_KTRANSFORM_HADAMARD, hs.transform_size = (int)spec.in;
    qc_err e = {{0}};
    if (qc_kernel_spec_check(&hs, &e) || qc_kernel_spec_id(&hs, hid, sizeof hid) < 0) hid[0] = 0;
    if (qc_kernel_spec_id(&spec, id, sizeof id) < 0 || (strcmp(id, kid) && strcmp(hid, kid)))
        return qc_err_set(c->err, "%s: layer '%s': cuda_kernel '%.100s' is not the layer's spec %s",
                          c->path, mod, kid, id);
    ql->cuda_packed = v->data;
    ql->cuda_packed_size = v->nbytes;
    return 0;
}

/* A layer stored in the generated kernels' layout (qcpack1): the blob is
 * checked against the spec the manifest describes (qc_pack_check: magic,
 * spec hash, sizes, CSR structure, ranges), then unpacked into a quantized
 * state for every path that is not a generated kernel (fake-quant
 * reference, exporters). The blob itself stays in the mapping for the
 * kernels. */
static int read_packed_layer(lctx *c, json_t *layer, const char *mod, const char *weight,
                             const qc_quant_format *fmt, int64_t rows, int64_t cols,
                             json_t *parts) {
    json_t *jo = json_object_get(layer, "outliers"), *jr = json_object_get(layer, "rank");
    json_t *jp = json_object_get(layer, "permuted");
    if (!json_is_integer(jo) || !json_is_integer(jr) || !json_is_boolean(jp) ||
        json_integer_value(jo) < 0 || json_integer_value(jr) < 0 ||
        json_integer_value(jr) > 4096)
        return qc_err_set(c->err,
                          "%s: layer '%s': a qcpack1 layer needs outliers >= 0, rank 0..4096 "
                          "and permuted (true/false)",
                          c->path, mod);
    qc_kernel_spec spec = {.format = QC_KFMT_INT,
                           .bits = fmt->bits,
                           .group_size = fmt->group_size >= cols ? 0 : fmt->group_size,
                           .symmetric = fmt->symmetric ? 1 : 0,
                           .out = rows,
                           .in = cols,
                           .act_order = json_is_true(jp),
                           .outliers = json_integer_value(jo) > 0,
                           .rank = (int)json_integer_value(jr),
                           .act = QC_KACT_F32};
    view *v = blob_view(c, parts, "packed", mod);
    if (!v) return -1;
    qc_pack_layout l;
    if (qc_pack_check(&spec, v->data, v->nbytes, c->err) ||
        qc_pack_layout_get(&spec, json_integer_value(jo), &l, c->err))
        return qc_err_prefix(c->err, "%s: layer '%s'", c->path, mod);
    if (l.total != v->nbytes || qcrt_le64(v->data + 16) != (uint64_t)json_integer_value(jo))
        return qc_err_set(c->err, "%s: layer '%s': packed weight holds another outlier count "
                                  "than the manifest's %lld",
                          c->path, mod, (long long)json_integer_value(jo));
    qc_quant_state *q = qc_quant_state_new(fmt, rows, cols, c->err);
    if (!q) return qc_err_prefix(c->err, "%s: layer '%s'", c->path, mod);
    int64_t nnz = json_integer_value(jo), rank = spec.rank, rc = 0;
    if (spec.act_order && !(q->perm = qc_malloc((size_t)cols * 4, c->err))) rc = -1;
    if (rc == 0 && nnz > 0 &&
        (!(q->row_ptr = qc_malloc((size_t)(rows + 1) * 4, c->err)) ||
         !(q->col = qc_malloc((size_t)nnz * 4, c->err)) ||
         !(q->val = qc_malloc((size_t)nnz * 2, c->err))))
        rc = -1;
    if (rc == 0 && rank > 0 &&
        (!(q->lr_a = qc_malloc((size_t)(rows * rank) * 2, c->err)) ||
         !(q->lr_b = qc_malloc((size_t)(rank * cols) * 2, c->err))))
        rc = -1;
    if (rc) {
        qc_quant_state_free(q);
        return -1;
    }
    qc_unpack(&spec, v->data, q->codes, q->scales, q->zeros, q->g_idx);
    if (q->perm) memcpy(q->perm, v->data + l.perm, (size_t)cols * 4);
    if (nnz > 0) {
        memcpy(q->row_ptr, v->data + l.row_ptr, (size_t)(rows + 1) * 4);
        memcpy(q->col, v->data + l.col, (size_t)nnz * 4);
        memcpy(q->val, v->data + l.val, (size_t)nnz * 2);
    }
    if (rank > 0) {
        memcpy(q->lr_a, v->data + l.lr_a, (size_t)(rows * rank) * 2);
        memcpy(q->lr_b, v->data + l.lr_b, (size_t)(rank * cols) * 2);
    }
    q->nnz = nnz;
    q->rank = (int)rank;
    if (attach_state(c, mod, weight, q, v->data, v->nbytes)) return -1;
    return read_cuda_part(c, layer, mod, parts);
}

static int read_layer(lctx *c, json_t *layer, int index) {
    const char *mod, *weight, *format, *layout;
    json_int_t rows, cols;
    int bits, group, sym, act;
    json_t *parts;
    if (json_unpack(layer, "{s:s, s:s, s:I, s:I, s:s, s:i, s:i, s:b, s:b, s:s, s:o}", "name", &mod,
                    "weight", &weight, "rows", &rows, "cols", &cols, "format", &format, "bits",
                    &bits, "group_size", &group, "symmetric", &sym, "act_order", &act, "layout",
                    &layout, "tensors", &parts) != 0 ||
        !json_is_object(parts))
        return qc_err_set(c->err,
                          "%s: manifest.json: layers[%d] needs name, weight, rows, cols, format, "
                          "bits, group_size, symmetric, act_order, layout, tensors",
                          c->path, index);
    int packed = !strcmp(layout, QC_ARTIFACT_PACK_LAYOUT);
    if (strcmp(format, "int") || (!packed && strcmp(layout, QC_ARTIFACT_CODES_LAYOUT)))
        return qc_err_set(c->err,
                          "%s: layer '%s': format '%s' / layout '%s' not supported (this quantc "
                          "reads int / %s or %s)",
                          c->path, mod, format, layout, QC_ARTIFACT_CODES_LAYOUT,
                          QC_ARTIFACT_PACK_LAYOUT);
    qc_quant_format fmt = {bits, group, sym};
    if (rows <= 0 || rows > ((json_int_t)1 << 31) || qc_quant_format_check(&fmt, cols, c->err))
        return qc_err_prefix(c->err, "%s: layer '%s'", c->path, mod);
    if (packed) return read_packed_layer(c, layer, mod, weight, &fmt, rows, cols, parts);
    int64_t ng = group ? (cols + group - 1) / group : 1;
    static const qc_dtype u8[] = {QC_DT_U8}, i32[] = {QC_DT_I32};
    static const qc_dtype scale_t[] = {QC_DT_F16, QC_DT_F32}, zero_t[] = {QC_DT_U8, QC_DT_F32};
    /* Shapes are checked against the sections before the state is allocated. */
    view *vq = layer_part(c, mod, parts, "qweight", u8, 1, rows, qc_artifact_row_bytes(cols, bits));
    view *vs = vq ? layer_part(c, mod, parts, "scales", scale_t, 2, rows, ng) : NULL;
    view *vz = vs && !sym ? layer_part(c, mod, parts, "zeros", zero_t, 2, rows, ng) : NULL;
    if (!vs || (!sym && !vz)) return -1;
    view *vg = NULL, *vp = NULL;
    if (json_object_get(parts, "g_idx") &&
        !(vg = layer_part(c, mod, parts, "g_idx", i32, 1, cols, 0)))
        return -1;
    if (act && !(vp = layer_part(c, mod, parts, "perm", i32, 1, cols, 0))) return -1;
    /* Optional sparse outliers (CSR) and low-rank factors. */
    json_t *jo = json_object_get(layer, "outliers"), *jr = json_object_get(layer, "rank");
    json_int_t nnz = json_is_integer(jo) ? json_integer_value(jo) : jo ? -1 : 0;
    json_int_t rank = json_is_integer(jr) ? json_integer_value(jr) : jr ? -1 : 0;
    if (nnz < 0 || nnz > rows * cols || nnz > INT32_MAX || rank < 0 || rank > rows || rank > cols)
        return qc_err_set(c->err, "%s: layer '%s': outliers %lld / rank %lld out of range", c->path,
                          mod, (long long)nnz, (long long)rank);
    static const qc_dtype f16[] = {QC_DT_F16};
    view *vo[3] = {NULL, NULL, NULL}, *vl[2] = {NULL, NULL};
    if (nnz > 0 && (!(vo[0] = layer_part(c, mod, parts, "outlier_row_ptr", i32, 1, rows + 1, 0)) ||
                    !(vo[1] = layer_part(c, mod, parts, "outlier_col", i32, 1, nnz, 0)) ||
                    !(vo[2] = layer_part(c, mod, parts, "outlier_val", f16, 1, nnz, 0))))
        return -1;
    if (rank > 0 && (!(vl[0] = layer_part(c, mod, parts, "lowrank_a", f16, 1, rows, rank)) ||
                     !(vl[1] = layer_part(c, mod, parts, "lowrank_b", f16, 1, rank, cols))))
        return -1;
    qc_quant_state *q = qc_quant_state_new(&fmt, rows, cols, c->err);
    if (!q) return qc_err_prefix(c->err, "%s: layer '%s'", c->path, mod);
    if (nnz > 0 && (!(q->row_ptr = copy_view(vo[0], c->err)) ||
                    !(q->col = copy_view(vo[1], c->err)) || !(q->val = copy_view(vo[2], c->err)))) {
        qc_quant_state_free(q);
        return -1;
    }
    q->nnz = nnz;
    if (rank > 0 &&
        (!(q->lr_a = copy_view(vl[0], c->err)) || !(q->lr_b = copy_view(vl[1], c->err)))) {
        qc_quant_state_free(q);
        return -1;
    }
    q->rank = (int)rank;
    qc_artifact_unpack_codes(vq->data, rows, cols, bits, q->codes);
    to_f32(vs, q->scales, rows * ng);
    if (vz)
        to_f32(vz, q->zeros, rows * ng);
    else
        for (int64_t i = 0; i < rows * ng; i++)
            q->zeros[i] = (float)(1 << (bits - 1));
    if (vg) memcpy(q->g_idx, vg->data, (size_t)cols * 4);
    if (vp && !(q->perm = qc_malloc((size_t)cols * 4, c->err))) {
        qc_quant_state_free(q);
        return -1;
    }
    if (vp) memcpy(q->perm, vp->data, (size_t)cols * 4);
    if (attach_state(c, mod, weight, q, NULL, 0)) return -1;
    return read_cuda_part(c, layer, mod, parts);
}

static int read_config(lctx *c, json_t *cfg) {
    qc_config *k = &c->m->cfg;
    const char *arch, *arch_name, *rope;
    double theta, eps, f, lo, hi;
    if (json_unpack(cfg,
                    "{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:F, s:F, s:s, s:F, s:F, "
                    "s:F, s:i, s:b, s:b, s:b, s:i, s:i}",
                    "arch", &arch, "arch_name", &arch_name, "n_layers", &k->n_layers, "dim",
                    &k->dim, "n_heads", &k->n_heads, "n_kv_heads", &k->n_kv_heads, "head_dim",
                    &k->head_dim, "ffn_dim", &k->ffn_dim, "vocab", &k->vocab, "max_pos",
                    &k->max_pos, "rope_theta", &theta, "norm_eps", &eps, "rope_scaling", &rope,
                    "rope_factor", &f, "rope_low_freq_factor", &lo, "rope_high_freq_factor", &hi,
                    "rope_orig_max_pos", &k->rope_orig_max_pos, "tied_embeddings",
                    &k->tied_embeddings, "qk_norm", &k->qk_norm, "attn_bias", &k->attn_bias,
                    "bos_id", &k->bos_id, "eos_id", &k->eos_id) != 0)
        return qc_err_set(c->err, "%s: manifest.json: config lacks a field or has a wrong type",
                          c->path);
    static const char *const archs[] = {"llama", "mistral", "qwen2", "qwen3"};
    static const char *const ropes[] = {"none", "llama3", "linear"};
    int ai = -1, ri = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(arch, archs[i])) ai = i;
    for (int i = 0; i < 3; i++)
        if (!strcmp(rope, ropes[i])) ri = i;
    if (ai < 0 || ri < 0)
        return qc_err_set(c->err,
                          "%s: manifest.json: config: unknown arch '%.40s' or rope "
                          "scaling '%.40s'",
                          c->path, arch, rope);
    k->arch = (qc_arch)ai;
    k->rope_scaling = (qc_rope_scaling)ri;
    snprintf(k->arch_name, sizeof k->arch_name, "%s", arch_name);
    k->rope_theta = (float)theta, k->norm_eps = (float)eps, k->rope_factor = (float)f;
    k->rope_low_freq_factor = (float)lo, k->rope_high_freq_factor = (float)hi;
    return 0;
}

static int read_tokenizer(lctx *c) {
    const qcrt_section *tj = qcrt_artifact_find(c->a, QCRT_SEC_TOKENIZER, "tokenizer.json");
    const qcrt_section *tc = qcrt_artifact_find(c->a, QCRT_SEC_TOKENIZER, "tokenizer_config.json");
    const qcrt_section *tg = qcrt_artifact_find(c->a, QCRT_SEC_TOKENIZER, "tokenizer.gguf");
    if (!tj && !tg) return 0;
    void *o1 = NULL, *o2 = NULL;
    char name[512];
    int rc = -1;
    const uint8_t *d1 = qcrt_artifact_section_data(c->a, tj ? tj : tg, &o1, c->err);
    const uint8_t *d2 = tj && tc ? qcrt_artifact_section_data(c->a, tc, &o2, c->err) : NULL;
    snprintf(name, sizeof name, "%s: %s", c->path, tj ? tj->name : tg->name);
    if (d1 && (!tj || !tc || d2)) {
        if (tj) {
            char cname[512];
            snprintf(cname, sizeof cname, "%s: tokenizer_config.json", c->path);
            c->m->tok =
                qc_tokenizer_from_json_buffers((const char *)d1, tj->raw_size, (const char *)d2,
                                               d2 ? tc->raw_size : 0, cname, name, c->err);
            rc = c->m->tok ? 0 : -1;
        } else {
            /* The GGUF tokenizer also sets bos/eos; the manifest's config wins. */
            int bos = c->m->cfg.bos_id, eos = c->m->cfg.eos_id;
            rc = qc_gguf_load_tokenizer_mem(c->m, d1, tg->raw_size, name, c->err);
            c->m->cfg.bos_id = bos, c->m->cfg.eos_id = eos;
        }
    }
    free(o1);
    free(o2);
    return rc;
}

/* The kernels section `name` with `target`, or NULL. */
static const qcrt_section *kernels_section(lctx *c, const char *name, const char *target) {
    for (int k = 0; k < c->a->n_sections; k++)
        if (c->a->sections[k].kind == QCRT_SEC_KERNELS && !strcmp(c->a->sections[k].name, name) &&
            !strcmp(c->a->sections[k].target, target))
            return &c->a->sections[k];
    return NULL;
}

/* One module of a CUDA kernel set: its PTX must be one NUL-terminated
 * string, its CUBIN a 64-bit little-endian CUDA ELF (machine 190), its
 * launch shape in range (qc_cuda_src_gemv_opts). */
static int read_cuda_module(lctx *c, json_t *jm, const char *target, size_t i, size_t k,
                            qc_cuda_module_ref *md) {
    const char *name, *ptx, *cubin;
    json_t *launch = json_object_get(jm, "launch");
    md->rtb = 1, md->warps = 8;
    if (json_unpack(jm, "{s:s, s:s, s:s}", "name", &name, "ptx", &ptx, "cubin", &cubin) != 0 ||
        strlen(name) >= 96 ||
        (strcmp(name, "forward") &&
         json_unpack(launch, "{s:i, s:i, s:i, s:i, s?i}", "row_tiles", &md->rtb, "warps",
                     &md->warps, "prefetch", &md->prefetch, "min_blocks", &md->min_blocks,
                     "gemm", &md->gemm) != 0) ||
        md->rtb < 1 || md->rtb > 2 || md->warps < 1 || md->warps > 32 || md->prefetch < 0 ||
        md->prefetch > 1 || md->min_blocks < 0 || md->min_blocks > 32 || md->gemm < 0 ||
        md->gemm > 1)
        return qc_err_set(c->err,
                          "%s: manifest.json: kernels[%zu].modules[%zu] needs name, ptx, cubin and "
                          "(kernel modules) launch {row_tiles 1..2, warps 1..32, prefetch 0..1, "
                          "min_blocks 0..32, gemm 0..1}",
                          c->path, i, k);
    const qcrt_section *sp = kernels_section(c, ptx, target);
    const qcrt_section *sc = kernels_section(c, cubin, target);
    if (!sp || !sc)
        return qc_err_set(c->err, "%s: manifest.json: kernels[%zu]: no kernels section '%s' for "
                                  "target '%s'",
                          c->path, i, sp ? cubin : ptx, target);
    if (!(md->ptx = section_bytes(c, sp)) || !(md->cubin = section_bytes(c, sc))) return -1;
    md->ptx_size = (size_t)sp->raw_size, md->cubin_size = (size_t)sc->raw_size;
    if (md->ptx_size == 0 || md->ptx[md->ptx_size - 1] != 0 ||
        strlen((const char *)md->ptx) + 1 != md->ptx_size)
        return qc_err_set(c->err, "%s: kernels section '%s' (%s): PTX is not one NUL-terminated "
                                  "string",
                          c->path, ptx, target);
    if (md->cubin_size < 64 || memcmp(md->cubin, "\177ELF", 4) || md->cubin[4] != 2 ||
        md->cubin[5] != 1 || (md->cubin[18] | md->cubin[19] << 8) != 190)
        return qc_err_set(c->err, "%s: kernels section '%s' (%s): not a 64-bit CUDA ELF (CUBIN)",
                          c->path, cubin, target);
    if (!(md->name = strdup(name))) return qc_err_set(c->err, "out of memory");
    return 0;
}

/* A kernels entry of device "cuda": {name ARCH, target "cuda:ARCH",
 * modules [...]} with exactly one "forward" module. */
static int read_cuda_kernels(lctx *c, json_t *jk, size_t i) {
    const char *name, *target;
    json_t *mods;
    char want[32];
    if (json_unpack(jk, "{s:s, s:s, s:o}", "name", &name, "target", &target, "modules", &mods) !=
            0 ||
        !json_is_array(mods) || json_array_size(mods) > 4096 ||
        qc_nvrtc_arch_check(name, c->err) ||
        (snprintf(want, sizeof want, "cuda:%s", name), strcmp(target, want)))
        return qc_err_set(c->err,
                          "%s: manifest.json: kernels[%zu] (cuda) needs name sm_NN[a], target "
                          "cuda:NAME and modules []",
                          c->path, i);
    qc_cuda_kernel_set *set = &c->m->cuda[c->m->n_cuda];
    size_t n = json_array_size(mods);
    snprintf(set->arch, sizeof set->arch, "%s", name);
    if (!(set->mods = qc_calloc(n + 1, sizeof *set->mods, c->err))) return -1;
    c->m->n_cuda++;
    int forward = 0;
    for (size_t k = 0; k < n; k++) {
        if (read_cuda_module(c, json_array_get(mods, k), target, i, k, &set->mods[k])) return -1;
        set->n_mods++;
        forward += !strcmp(set->mods[k].name, "forward");
        for (size_t j = 0; j < k; j++)
            if (!strcmp(set->mods[j].name, set->mods[k].name))
                return qc_err_set(c->err, "%s: manifest.json: kernels[%zu]: module '%s' twice",
                                  c->path, i, set->mods[k].name);
    }
    if (forward != 1)
        return qc_err_set(c->err, "%s: manifest.json: kernels[%zu] (cuda) has %d forward modules "
                                  "(needs one)",
                          c->path, i, forward);
    return 0;
}

/* manifest.kernels: [{device "cpu", name, target, section}], each naming a
 * kernels section with that target, and [{device "cuda", ...}]
 * (read_cuda_kernels). Only recorded here (m->kernels, m->cuda); the
 * runtime checks the target against the host or GPU and loads the code when
 * it runs the model. */
static int read_kernels(lctx *c, json_t *kernels) {
    if (!kernels) return 0;
    if (!json_is_array(kernels))
        return qc_err_set(c->err, "%s: manifest.json: kernels must be an array", c->path);
    size_t n = json_array_size(kernels);
    if (n > 64) return qc_err_set(c->err, "%s: manifest.json: %zu kernel sets", c->path, n);
    if (n && (!(c->m->kernels = qc_calloc(n, sizeof *c->m->kernels, c->err)) ||
              !(c->m->cuda = qc_calloc(n, sizeof *c->m->cuda, c->err))))
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *dev, *name, *target, *sec;
        json_t *jk = json_array_get(kernels, i);
        if (json_unpack(jk, "{s:s}", "device", &dev) == 0 && !strcmp(dev, "cuda")) {
            if (read_cuda_kernels(c, jk, i)) return -1;
            continue;
        }
        if (json_unpack(jk, "{s:s, s:s, s:s, s:s}", "device", &dev, "name",
                        &name, "target", &target, "section", &sec) != 0 ||
            strcmp(dev, "cpu"))
            return qc_err_set(c->err,
                              "%s: manifest.json: kernels[%zu] needs device \"cpu\" (name, "
                              "target, section) or \"cuda\"",
                              c->path, i);
        const qcrt_section *s = kernels_section(c, sec, target);
        if (!s)
            return qc_err_set(c->err, "%s: manifest.json: kernels[%zu]: no kernels section '%s' "
                                      "for target '%s'",
                              c->path, i, sec, target);
        qc_kernel_obj *o = &c->m->kernels[c->m->n_kernels];
        if (!(o->data = section_bytes(c, s))) return -1;
        o->size = (size_t)s->raw_size;
        if (!(o->name = strdup(name)) || !(o->target = strdup(target))) {
            free(o->name);
            o->name = NULL;
            return qc_err_set(c->err, "out of memory");
        }
        c->m->n_kernels++;
    }
    return 0;
}

static int load(lctx *c) {
    const qcrt_section *ms = qcrt_artifact_find(c->a, QCRT_SEC_MANIFEST, QC_ARTIFACT_MANIFEST);
    if (!ms)
        return qc_err_set(c->err, "%s: no manifest section '%s'", c->path, QC_ARTIFACT_MANIFEST);
    void *owned;
    const uint8_t *text = qcrt_artifact_section_data(c->a, ms, &owned, c->err);
    if (!text) return -1;
    json_error_t je;
    json_t *man = json_loadb((const char *)text, (size_t)ms->raw_size, JSON_REJECT_DUPLICATES, &je);
    free(owned);
    if (!man)
        return qc_err_set(c->err, "%s: manifest.json:%d:%d: %s", c->path, je.line, je.column,
                          je.text);
    int rc = 0;
    json_int_t version = -1;
    json_t *cfg = NULL, *tensors = NULL, *layers = NULL;
    if (json_unpack(man, "{s:I, s:o, s:o, s:o}", "format_version", &version, "config", &cfg,
                    "tensors", &tensors, "layers", &layers) != 0 ||
        !json_is_object(tensors) || !json_is_array(layers))
        rc = qc_err_set(c->err,
                        "%s: manifest.json needs format_version, config, tensors {}, layers []",
                        c->path);
    else if (version != QCRT_ARTIFACT_VERSION)
        rc = qc_err_set(c->err,
                        "%s: manifest.json: unsupported format_version %lld (this quantc "
                        "reads %u)",
                        c->path, (long long)version, QCRT_ARTIFACT_VERSION);
    if (rc == 0) rc = read_config(c, cfg);
    if (rc == 0) rc = read_views(c, tensors);
    for (size_t i = 0; rc == 0 && i < json_array_size(layers); i++)
        rc = read_layer(c, json_array_get(layers, i), (int)i);
    for (int i = 0; rc == 0 && i < c->n_views; i++) {
        view *v = &c->views[i];
        if (v->used) continue;
        if (v->dtype == QC_DT_U8 || v->dtype == QC_DT_I32) {
            rc = qc_err_set(c->err, "%s: tensor '%s' (%s) belongs to no layer", c->path, v->name,
                            qc_dtype_name(v->dtype));
            break;
        }
        qc_tensor t = {.name = strdup(v->name),
                       .dtype = v->dtype,
                       .n_dims = v->n_dims,
                       .shape = {v->shape[0], v->shape[1]},
                       .data = v->data,
                       .nbytes = v->nbytes};
        rc = t.name ? qc_model_add_tensor(c->m, &t, c->err) : qc_err_set(c->err, "out of memory");
    }
    json_t *online = json_object_get(man, "online"), *spec;
    const char *wname;
    if (rc == 0 && online && !json_is_object(online))
        rc = qc_err_set(c->err, "%s: manifest.json: online must be an object", c->path);
    json_object_foreach(rc == 0 ? online : NULL, wname, spec) {
        int n = 0;
        if (json_unpack(spec, "{s:i}", "hadamard", &n) != 0 || n < 1 || n > (1 << 20)) {
            rc = qc_err_set(c->err, "%s: manifest.json: online '%s' needs hadamard 1..%d", c->path,
                            wname, 1 << 20);
            break;
        }
        if ((rc = qc_model_set_online_hadamard(c->m, wname, n, c->err))) break;
    }
    if (rc == 0) rc = read_tokenizer(c);
    if (rc == 0) rc = read_kernels(c, json_object_get(man, "kernels"));
    json_decref(man);
    return rc;
}

int qc_artifact_load_model(qc_model *m, const char *path, qc_err *err) {
    qcrt_artifact *a = qcrt_artifact_open(path, err);
    if (!a) return -1;
    /* The model keeps the mapping: its tensors point into it. */
    if (qc_model_add_file(m, qcrt_artifact_take_file(a), err)) {
        qcrt_artifact_free(a);
        return -1;
    }
    lctx c = {.m = m, .a = a, .path = path, .err = err};
    int rc = load(&c);
    free(c.views);
    qcrt_artifact_free(a);
    return rc;
}
