/* Kernel specs: checks, construction from a quantized linear, ids, dedup
 * (see kernel_spec.h). */
#include "kernel_spec.h"

#include "../compiler/hadamard.h"
#include "../compiler/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int qc_kernel_spec_check(const qc_kernel_spec *s, qc_err *err) {
    if (s->format != QC_KFMT_INT)
        return qc_err_set(err, "kernel spec: unknown weight format %d", s->format);
    if (s->bits < 2 || s->bits > 8)
        return qc_err_set(err, "kernel spec: %d-bit codes (supported: 2..8)", s->bits);
    if (s->group_size < 0 || s->group_size % 8 != 0 || s->group_size > 65536)
        return qc_err_set(err,
                          "kernel spec: group size %d (kernels need a multiple of 8 up to 65536, "
                          "or 0 for per-channel)",
                          s->group_size);
    if (s->out <= 0 || s->in <= 0 || s->out > QC_KERNEL_MAX_DIM || s->in > QC_KERNEL_MAX_DIM)
        return qc_err_set(err, "kernel spec: shape %lld x %lld (each side 1..%lld)",
                          (long long)s->out, (long long)s->in, (long long)QC_KERNEL_MAX_DIM);
    if (s->symmetric != 0 && s->symmetric != 1)
        return qc_err_set(err, "kernel spec: symmetric flag %d", s->symmetric);
    if ((s->act_order != 0 && s->act_order != 1) || (s->outliers != 0 && s->outliers != 1))
        return qc_err_set(err, "kernel spec: act_order/outliers flags must be 0 or 1");
    if (s->rank < 0 || s->rank > 4096 || s->rank > s->in || s->rank > s->out)
        return qc_err_set(err, "kernel spec: low-rank rank %d for a %lld x %lld weight", s->rank,
                          (long long)s->out, (long long)s->in);
    if (s->act != QC_KACT_F32)
        return qc_err_set(err, "kernel spec: activation type %d (supported: f32)", s->act);
    if (s->transform == QC_KTRANSFORM_HADAMARD) {
        if (s->transform_size != s->in)
            return qc_err_set(err,
                              "kernel spec: online Hadamard of size %d on a linear with %lld inputs",
                              s->transform_size, (long long)s->in);
        if (s->in > 1 << 24 || !qc_hadamard_base_order((int)s->in))
            return qc_err_set(err, "kernel spec: no Hadamard matrix of order %lld (compiler/hadamard.h)",
                              (long long)s->in);
        return 0;
    }
    if (s->transform != QC_KTRANSFORM_NONE || s->transform_size != 0)
        return qc_err_set(err, "kernel spec: unknown online transform %d", s->transform);
    return 0;
}

/* Whether g_idx can be made contiguous by a column permutation: every group
 * except the last has exactly group_size columns. Sets *identity when the
 * columns already are in group order. */
static int grouping_ok(const qc_quant_state *q, int *identity) {
    int64_t gs = q->fmt.group_size, ng = q->n_groups;
    *identity = 1;
    if (gs == 0) {
        for (int64_t c = 0; c < q->cols; c++)
            if (q->g_idx[c] != 0) return 0;
        return 1;
    }
    int64_t count[2] = {0, 0}; /* columns in groups < ng-1, in the last group */
    for (int64_t c = 0; c < q->cols; c++) {
        int64_t g = q->g_idx[c];
        if (g < 0 || g >= ng) return 0;
        if (g != c / gs) *identity = 0;
        count[g == ng - 1]++;
    }
    /* With counts right and every index in range, groups of equal size must
     * each hold exactly gs columns only if no group is over-full: check. */
    if (count[1] != q->cols - (ng - 1) * gs) return 0;
    if (*identity) return 1;
    int64_t *per = calloc((size_t)ng, sizeof *per);
    if (!per) return 0;
    int ok = 1;
    for (int64_t c = 0; c < q->cols; c++)
        per[q->g_idx[c]]++;
    for (int64_t g = 0; g + 1 < ng; g++)
        ok &= per[g] == gs;
    free(per);
    return ok;
}

int qc_kernel_spec_from_quant(const qc_quant_state *q, int has_outliers, int rank,
                              qc_kernel_spec *s, qc_err *err) {
    memset(s, 0, sizeof *s);
    s->format = QC_KFMT_INT;
    s->bits = q->fmt.bits;
    s->group_size = q->fmt.group_size;
    s->symmetric = q->fmt.symmetric ? 1 : 0;
    s->out = q->rows;
    s->in = q->cols;
    s->outliers = has_outliers ? 1 : 0;
    s->rank = rank;
    s->act = QC_KACT_F32;
    if (s->group_size >= s->in) s->group_size = 0; /* one group per row: per-channel */
    int identity;
    if (!grouping_ok(q, &identity))
        return qc_err_set(err,
                          "kernel spec: the group index of a %lld x %lld weight does not "
                          "split the columns into groups of %d",
                          (long long)q->rows, (long long)q->cols, q->fmt.group_size);
    s->act_order = !identity;
    return qc_kernel_spec_check(s, err);
}

int qc_kernel_spec_id(const qc_kernel_spec *s, char *buf, size_t n) {
    char g[16];
    if (s->group_size)
        snprintf(g, sizeof g, "g%d", s->group_size);
    else
        snprintf(g, sizeof g, "c");
    int len = snprintf(buf, n, "i%d%s%c_o%lld_i%lld%s%s", s->bits, g, s->symmetric ? 's' : 'a',
                       (long long)s->out, (long long)s->in, s->act_order ? "_p" : "",
                       s->outliers ? "_s" : "");
    if (len < 0 || (size_t)len >= n) return -1;
    if (s->rank) {
        int k = snprintf(buf + len, n - (size_t)len, "_r%d", s->rank);
        if (k < 0 || (size_t)k >= n - (size_t)len) return -1;
        len += k;
    }
    if (s->transform) {
        int k = snprintf(buf + len, n - (size_t)len, "_h%d", s->transform_size);
        if (k < 0 || (size_t)k >= n - (size_t)len) return -1;
        len += k;
    }
    return len;
}

int qc_kernel_spec_symbol(const qc_kernel_spec *s, const char *kind, char *buf, size_t n) {
    char id[96];
    if (qc_kernel_spec_id(s, id, sizeof id) < 0) return -1;
    int len = snprintf(buf, n, "qck_%s_%s", id, kind);
    return len < 0 || (size_t)len >= n ? -1 : len;
}

uint64_t qc_kernel_spec_hash(const qc_kernel_spec *s) {
    char id[96];
    int len = qc_kernel_spec_id(s, id, sizeof id);
    return XXH64(id, len > 0 ? (size_t)len : 0, 0);
}

int qc_kernel_spec_equal(const qc_kernel_spec *a, const qc_kernel_spec *b) {
    return a->format == b->format && a->bits == b->bits && a->group_size == b->group_size &&
           a->symmetric == b->symmetric && a->out == b->out && a->in == b->in &&
           a->act_order == b->act_order && a->outliers == b->outliers && a->rank == b->rank &&
           a->transform == b->transform && a->transform_size == b->transform_size &&
           a->act == b->act;
}

int qc_kernel_specs_dedup(const qc_kernel_spec *specs, int n, qc_kernel_spec *uniq, int *idx) {
    int nu = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < nu && !qc_kernel_spec_equal(&uniq[j], &specs[i]))
            j++;
        if (j == nu) uniq[nu++] = specs[i];
        idx[i] = j;
    }
    return nu;
}

static int64_t n_groups_of(const qc_kernel_spec *s) {
    return s->group_size ? (s->in + s->group_size - 1) / s->group_size : 1;
}

/* Offsets are rounded to 8 floats (32 bytes) so vector loads stay aligned
 * when ws is. */
static int64_t round8(int64_t v) {
    return (v + 7) / 8 * 8;
}

void qc_kernel_ws_layout(const qc_kernel_spec *s, qc_kernel_ws *l) {
    l->in8 = round8(s->in);
    l->xs = 0;
    /* whole 64-column tiles: the bf16 gemv stores x as 64 bf16 pairs per tile */
    l->xsum = l->xs + (s->in + 63) / 64 * 64;
    l->srow = l->xsum + round8(n_groups_of(s));
    l->t_gemv = l->srow + round8(n_groups_of(s));
    l->rv = l->t_gemv + round8(s->rank);
    l->rc = l->rv + 8 * QC_GEMV_ROW_BLOCK;
    l->xt = l->rc + QC_GEMV_ROW_BLOCK;
    l->xh = l->xt + (s->transform ? l->in8 : 0);
    l->gemv_total = l->xh + (s->transform ? l->in8 : 0);
    l->wt = 0;
    l->t_gemm = l->wt + QC_GEMM_ROW_TILE * l->in8;
}

size_t qc_kernel_ws_floats(const qc_kernel_spec *s, int64_t m) {
    qc_kernel_ws l;
    qc_kernel_ws_layout(s, &l);
    int64_t mm = m > 0 ? m : 1;
    int64_t gemm = l.t_gemm + round8(mm * s->rank) + (s->act_order ? mm * l.in8 : 0) +
                   (s->transform ? (mm + 1) * l.in8 : 0);
    return (size_t)(gemm > l.gemv_total ? gemm : l.gemv_total);
}
