/* Weight packing for the generated CPU kernels (layout: pack.h). */
#include "pack.h"

#include "../compiler/dequant.h"
#include "../compiler/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int qc_pack_chunks(int bits, int widths[3]) {
    static const int table[9][4] = {
        {0}, {0}, {1, 2}, {2, 2, 1}, {1, 4}, {2, 4, 1}, {2, 4, 2}, {3, 4, 2, 1}, {2, 4, 4},
    };
    int n = bits >= 2 && bits <= 8 ? table[bits][0] : 0;
    for (int i = 0; i < n; i++)
        widths[i] = table[bits][1 + i];
    return n;
}

static size_t align64(size_t v) {
    return (v + QC_PACK_ALIGN - 1) / QC_PACK_ALIGN * QC_PACK_ALIGN;
}

/* Appends a section of count × elem bytes at *off (64-aligned), returning its
 * offset; -1 on overflow. */
static int section(size_t *off, int64_t count, size_t elem, size_t *at) {
    size_t bytes;
    *at = align64(*off);
    if (*at < *off || qc_mul_size((size_t)count, elem, &bytes) || qc_add_size(*at, bytes, off))
        return -1;
    return 0;
}

int qc_pack_layout_get(const qc_kernel_spec *s, int64_t nnz, qc_pack_layout *l, qc_err *err) {
    if (qc_kernel_spec_check(s, err)) return -1;
    if (nnz < 0 || (!s->outliers && nnz) || nnz > INT32_MAX)
        return qc_err_set(err, "packed weight: %lld outliers for a spec %s outliers",
                          (long long)nnz, s->outliers ? "with" : "without");
    memset(l, 0, sizeof *l);
    l->tiles = (s->in + 63) / 64;
    l->row_bytes = l->tiles * 8 * s->bits;
    l->n_groups = s->group_size ? (s->in + s->group_size - 1) / s->group_size : 1;
    size_t off = 64, ng = (size_t)l->n_groups;
    size_t rowsng;
    int bad = qc_mul_size((size_t)s->out, ng, &rowsng);
    bad |= section(&off, s->out, (size_t)l->row_bytes, &l->codes);
    /* 16 / 8 bytes of slack: kernels read scales and zeros 8 groups at a time */
    bad |= section(&off, (int64_t)rowsng + 8, 2, &l->scales);
    bad |= section(&off, s->symmetric ? 0 : (int64_t)rowsng + 8, 1, &l->zeros);
    bad |= section(&off, s->act_order ? s->in : 0, 4, &l->perm);
    bad |= section(&off, s->rank ? s->out : 0, 2 * (size_t)s->rank, &l->lr_a);
    bad |= section(&off, s->rank ? s->in : 0, 2 * (size_t)s->rank, &l->lr_b);
    bad |= section(&off, s->outliers ? s->out + 1 : 0, 4, &l->row_ptr);
    bad |= section(&off, nnz, 4, &l->col);
    bad |= section(&off, nnz, 2, &l->val);
    l->total = align64(off);
    if (bad || l->total < off)
        return qc_err_set(err, "packed weight: %lld x %lld layer too large", (long long)s->out,
                          (long long)s->in);
    return 0;
}

size_t qc_pack_size(const qc_kernel_spec *s, int64_t nnz, qc_err *err) {
    qc_pack_layout l;
    return qc_pack_layout_get(s, nnz, &l, err) ? 0 : l.total;
}

double qc_pack_bits_per_weight(const qc_kernel_spec *s, int64_t nnz) {
    size_t size = qc_pack_size(s, nnz, NULL);
    return size ? 8.0 * (double)(size - 64) / ((double)s->out * (double)s->in) : 0;
}

/* Lane l's bit stream S_l of one tile <-> its bytes in the tile (pack.h). */
static void put_stream(uint8_t *tile, int bits, int l, uint64_t S) {
    int widths[3], nch = qc_pack_chunks(bits, widths), b = 0;
    for (int k = 0; k < nch; k++) {
        for (int i = 0; i < widths[k]; i++)
            tile[8 * b + widths[k] * l + i] = (uint8_t)(S >> (8 * (b + i)));
        b += widths[k];
    }
}

static uint64_t get_stream(const uint8_t *tile, int bits, int l) {
    int widths[3], nch = qc_pack_chunks(bits, widths), b = 0;
    uint64_t S = 0;
    for (int k = 0; k < nch; k++) {
        for (int i = 0; i < widths[k]; i++)
            S |= (uint64_t)tile[8 * b + widths[k] * l + i] << (8 * (b + i));
        b += widths[k];
    }
    return S;
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put_i32(uint8_t *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static int32_t get_i32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

int qc_pack_column_order(const qc_kernel_spec *s, const qc_quant_state *q, int32_t *perm) {
    if (!s->act_order) {
        for (int64_t c = 0; c < s->in; c++)
            perm[c] = (int32_t)c;
        return 0;
    }
    int64_t gs = s->group_size, ng = q->n_groups;
    int64_t *next = malloc((size_t)ng * sizeof *next);
    if (!next) return -1;
    for (int64_t g = 0; g < ng; g++)
        next[g] = g * gs;
    for (int64_t c = 0; c < s->in; c++)
        perm[next[q->g_idx[c]]++] = (int32_t)c;
    free(next);
    return 0;
}

static int check_state(const qc_kernel_spec *s, const qc_quant_state *q, qc_err *err) {
    if (q->rows != s->out || q->cols != s->in || q->fmt.bits != s->bits ||
        (q->fmt.symmetric != 0) != s->symmetric)
        return qc_err_set(err,
                          "pack: quantized %lld x %lld %d-bit weight does not match its "
                          "kernel spec",
                          (long long)q->rows, (long long)q->cols, q->fmt.bits);
    int64_t n = q->rows * q->n_groups;
    uint8_t maxq = (uint8_t)((1 << s->bits) - 1);
    for (int64_t i = 0; i < q->rows * q->cols; i++)
        if (q->codes[i] > maxq)
            return qc_err_set(err, "pack: code %u at row %lld column %lld exceeds %d bits",
                              q->codes[i], (long long)(i / q->cols), (long long)(i % q->cols),
                              s->bits);
    for (int64_t i = 0; i < n; i++) {
        float sc = q->scales[i], z = q->zeros[i];
        if (!isfinite(sc) || qc_f16_to_f32(qc_f32_to_f16(sc)) != sc)
            return qc_err_set(err, "pack: scale %g of row %lld group %lld is not an f16 value",
                              (double)sc, (long long)(i / q->n_groups),
                              (long long)(i % q->n_groups));
        if (s->symmetric ? z != (float)(1 << (s->bits - 1))
                         : !(z >= 0 && z <= maxq && z == floorf(z)))
            return qc_err_set(err,
                              "pack: zero point %g of row %lld group %lld invalid for %s "
                              "%d-bit codes",
                              (double)z, (long long)(i / q->n_groups), (long long)(i % q->n_groups),
                              s->symmetric ? "symmetric" : "asymmetric", s->bits);
    }
    return 0;
}

int qc_pack_check_csr(const qc_kernel_spec *s, const uint8_t *row_ptr, const uint8_t *col,
                      int64_t nnz, qc_err *err) {
    if (get_i32(row_ptr) != 0) return qc_err_set(err, "outliers: row_ptr[0] is not 0");
    for (int64_t o = 0; o < s->out; o++) {
        int32_t a = get_i32(row_ptr + 4 * o), b = get_i32(row_ptr + 4 * (o + 1));
        if (b < a || b > nnz)
            return qc_err_set(err, "outliers: row_ptr[%lld] = %d out of order or past nnz %lld",
                              (long long)(o + 1), b, (long long)nnz);
    }
    if (get_i32(row_ptr + 4 * s->out) != nnz)
        return qc_err_set(err, "outliers: row_ptr[out] = %d, expected nnz %lld",
                          get_i32(row_ptr + 4 * s->out), (long long)nnz);
    for (int64_t k = 0; k < nnz; k++) {
        int32_t c = get_i32(col + 4 * k);
        if (c < 0 || c >= s->in)
            return qc_err_set(err, "outliers: column %d of entry %lld outside 0..%lld", c,
                              (long long)k, (long long)(s->in - 1));
    }
    return 0;
}

int qc_pack_check_inputs(const qc_kernel_spec *s, const qc_quant_state *q, const qc_pack_sparse *sp,
                         const qc_pack_lowrank *lr, qc_err *err) {
    if ((sp != NULL) != (s->outliers != 0) || (lr ? lr->rank : 0) != s->rank)
        return qc_err_set(err, "pack: outliers/low-rank inputs do not match the kernel spec");
    qc_kernel_spec chk;
    if (qc_kernel_spec_from_quant(q, s->outliers, s->rank, &chk, err)) return -1;
    if (!qc_kernel_spec_equal(&chk, s))
        return qc_err_set(err, "pack: quantized weight does not match its kernel spec");
    if (check_state(s, q, err)) return -1;
    if (sp &&
        qc_pack_check_csr(s, (const uint8_t *)sp->row_ptr, (const uint8_t *)sp->col, sp->nnz, err))
        return qc_err_prefix(err, "pack");
    return 0;
}

static void write_codes(const qc_kernel_spec *s, const qc_quant_state *q, const int32_t *perm,
                        const qc_pack_layout *l, uint8_t *dst) {
    for (int64_t o = 0; o < s->out; o++) {
        const uint8_t *src = q->codes + o * s->in;
        for (int64_t t = 0; t < l->tiles; t++)
            for (int lane = 0; lane < 8; lane++) {
                uint64_t S = 0;
                for (int j = 0; j < 8; j++) {
                    int64_t p = 64 * t + 8 * j + lane;
                    if (p < s->in) S |= (uint64_t)src[perm[p]] << (j * s->bits);
                }
                put_stream(dst + l->codes + o * l->row_bytes + t * 8 * s->bits, s->bits, lane, S);
            }
    }
}

int qc_pack(const qc_kernel_spec *s, const qc_quant_state *q, const qc_pack_sparse *sp,
            const qc_pack_lowrank *lr, uint8_t *dst, size_t dst_size, qc_err *err) {
    qc_pack_layout l;
    int64_t nnz = sp ? sp->nnz : 0;
    if (qc_pack_layout_get(s, nnz, &l, err)) return -1;
    if (dst_size < l.total)
        return qc_err_set(err, "pack: buffer of %zu bytes, need %zu", dst_size, l.total);
    if (qc_pack_check_inputs(s, q, sp, lr, err)) return -1;
    int32_t *perm = malloc((size_t)s->in * sizeof *perm);
    if (!perm || qc_pack_column_order(s, q, perm)) {
        free(perm);
        return qc_err_set(err, "pack: out of memory");
    }
    memset(dst, 0, l.total);
    memcpy(dst, QC_PACK_MAGIC, 8);
    put_u64(dst + 8, qc_kernel_spec_hash(s));
    put_u64(dst + 16, (uint64_t)nnz);
    put_u64(dst + 24, (uint64_t)l.total);
    write_codes(s, q, perm, &l, dst);
    for (int64_t i = 0; i < s->out * l.n_groups; i++) {
        put_u16(dst + l.scales + 2 * i, qc_f32_to_f16(q->scales[i]));
        if (!s->symmetric) dst[l.zeros + i] = (uint8_t)q->zeros[i];
    }
    if (s->act_order)
        for (int64_t c = 0; c < s->in; c++)
            put_i32(dst + l.perm + 4 * c, perm[c]);
    free(perm);
    if (lr) {
        for (int64_t i = 0; i < s->out * s->rank; i++)
            put_u16(dst + l.lr_a + 2 * i, lr->a[i]);
        for (int64_t i = 0; i < s->in * s->rank; i++)
            put_u16(dst + l.lr_b + 2 * i, lr->b[i]);
    }
    if (sp) {
        for (int64_t o = 0; o <= s->out; o++)
            put_i32(dst + l.row_ptr + 4 * o, sp->row_ptr[o]);
        for (int64_t k = 0; k < nnz; k++) {
            put_i32(dst + l.col + 4 * k, sp->col[k]);
            put_u16(dst + l.val + 2 * k, sp->val[k]);
        }
    }
    return 0;
}

int qc_pack_check(const qc_kernel_spec *s, const uint8_t *blob, size_t size, qc_err *err) {
    qc_pack_layout l;
    if (size < 64 || memcmp(blob, QC_PACK_MAGIC, 8) != 0)
        return qc_err_set(err, "packed weight: bad magic or shorter than its 64-byte header");
    if (get_u64(blob + 8) != qc_kernel_spec_hash(s))
        return qc_err_set(err, "packed weight: packed for another kernel spec (hash mismatch)");
    uint64_t nnz = get_u64(blob + 16), total = get_u64(blob + 24);
    if (nnz > INT32_MAX || qc_pack_layout_get(s, (int64_t)nnz, &l, err))
        return qc_err_set(err, "packed weight: bad outlier count %llu", (unsigned long long)nnz);
    if (total != l.total || size < l.total)
        return qc_err_set(err, "packed weight: %zu bytes (header says %llu), layout needs %zu",
                          size, (unsigned long long)total, l.total);
    uint8_t maxq = (uint8_t)((1 << s->bits) - 1);
    if (!s->symmetric)
        for (int64_t i = 0; i < s->out * l.n_groups; i++)
            if (blob[l.zeros + i] > maxq)
                return qc_err_set(err, "packed weight: zero point %u exceeds %d bits",
                                  blob[l.zeros + i], s->bits);
    if (s->act_order && qc_pack_check_perm(blob + l.perm, s->in, err)) return -1;
    if (s->outliers && qc_pack_check_csr(s, blob + l.row_ptr, blob + l.col, (int64_t)nnz, err))
        return qc_err_prefix(err, "packed weight");
    return 0;
}

int qc_pack_check_perm(const uint8_t *perm, int64_t in, qc_err *err) {
    uint8_t *seen = calloc((size_t)in, 1);
    if (!seen) return qc_err_set(err, "packed weight: out of memory");
    for (int64_t c = 0; c < in; c++) {
        int32_t p = get_i32(perm + 4 * c);
        if (p < 0 || p >= in || seen[p]++) {
            free(seen);
            return qc_err_set(err, "packed weight: permutation entry %lld (%d) invalid",
                              (long long)c, p);
        }
    }
    free(seen);
    return 0;
}

void qc_unpack(const qc_kernel_spec *s, const uint8_t *blob, uint8_t *codes, float *scales,
               float *zeros, int32_t *g_idx) {
    qc_pack_layout l;
    if (qc_pack_layout_get(s, (int64_t)get_u64(blob + 16), &l, NULL)) return;
    unsigned mask = (1u << s->bits) - 1;
    for (int64_t o = 0; o < s->out; o++)
        for (int64_t t = 0; t < l.tiles; t++)
            for (int lane = 0; lane < 8; lane++) {
                uint64_t S =
                    get_stream(blob + l.codes + o * l.row_bytes + t * 8 * s->bits, s->bits, lane);
                for (int j = 0; j < 8; j++) {
                    int64_t p = 64 * t + 8 * j + lane;
                    if (p >= s->in) continue;
                    int64_t c = s->act_order ? get_i32(blob + l.perm + 4 * p) : p;
                    codes[o * s->in + c] = (uint8_t)(S >> (j * s->bits) & mask);
                }
            }
    if (g_idx)
        for (int64_t p = 0; p < s->in; p++) {
            int64_t c = s->act_order ? get_i32(blob + l.perm + 4 * p) : p;
            g_idx[c] = s->group_size ? (int32_t)(p / s->group_size) : 0;
        }
    for (int64_t i = 0; i < s->out * l.n_groups; i++) {
        if (scales) scales[i] = qc_f16_to_f32(get_u16(blob + l.scales + 2 * i));
        if (zeros) zeros[i] = s->symmetric ? (float)(1 << (s->bits - 1)) : (float)blob[l.zeros + i];
    }
}
