/* Weight packing for the generated CUDA kernels (layout: cuda_pack.h). */
#include "cuda_pack.h"

#include "../compiler/dequant.h"
#include "../compiler/hadamard.h"
#include "../compiler/quant.h"

#include <stdlib.h>
#include <string.h>

int qc_cuda_planes(int bits, int width[3], int offset[3]) {
    static const int table[9][4] = {
        {0}, {0}, {1, 2}, {2, 2, 1}, {1, 4}, {2, 4, 1}, {2, 4, 2}, {3, 4, 2, 1}, {1, 8},
    };
    int n = bits >= 2 && bits <= 8 ? table[bits][0] : 0, off = 0;
    for (int i = 0; i < n; i++) {
        width[i] = table[bits][1 + i];
        offset[i] = off;
        off += width[i];
    }
    return n;
}

size_t qc_cuda_had_smem(const qc_kernel_spec *s) {
    int64_t k_tiles = (s->in + QC_CUDA_KTILE - 1) / QC_CUDA_KTILE;
    return (size_t)(k_tiles * QC_CUDA_KTILE * 2 + s->in * 4);
}

int qc_cuda_spec_check(const qc_kernel_spec *s, qc_err *err) {
    if (qc_kernel_spec_check(s, err)) return -1;
    int g = s->group_size;
    if (g && (g % 32 || (QC_CUDA_KTILE % g && g % QC_CUDA_KTILE)))
        return qc_err_set(err,
                          "kernel spec: group size %d is not supported by the CUDA generator "
                          "(32, 64, 128, a multiple of 256, or per-channel)",
                          g);
    if (s->transform == QC_KTRANSFORM_HADAMARD) {
        int p = qc_hadamard_base_order((int)s->in);
        if (p > QC_CUDA_HAD_MAX_BASE)
            return qc_err_set(err,
                              "kernel spec: online Hadamard of order %lld has base order %d; the "
                              "CUDA generator mixes bases up to %d",
                              (long long)s->in, p, QC_CUDA_HAD_MAX_BASE);
        if (qc_cuda_had_smem(s) > QC_CUDA_HAD_MAX_SMEM)
            return qc_err_set(err,
                              "kernel spec: online Hadamard of order %lld needs %zu bytes of "
                              "shared memory per block in the CUDA GEMV (at most %d)",
                              (long long)s->in, qc_cuda_had_smem(s), QC_CUDA_HAD_MAX_SMEM);
    }
    return 0;
}

static size_t align256(size_t v) {
    return (v + QC_CUDA_PACK_ALIGN - 1) / QC_CUDA_PACK_ALIGN * QC_CUDA_PACK_ALIGN;
}

/* Appends a section of a × b × elem bytes at *off (aligned); -1 on overflow. */
static int section(size_t *off, int64_t a, int64_t b, size_t elem, size_t *at) {
    size_t n, bytes;
    *at = align256(*off);
    if (*at < *off || qc_mul_size((size_t)a, (size_t)b, &n) || qc_mul_size(n, elem, &bytes) ||
        qc_add_size(*at, bytes, off))
        return -1;
    return 0;
}

int qc_cuda_layout_get(const qc_kernel_spec *s, int64_t nnz, qc_cuda_layout *l, qc_err *err) {
    if (qc_cuda_spec_check(s, err)) return -1;
    if (nnz < 0 || (!s->outliers && nnz) || nnz > INT32_MAX)
        return qc_err_set(err, "CUDA packed weight: %lld outliers for a spec %s outliers",
                          (long long)nnz, s->outliers ? "with" : "without");
    memset(l, 0, sizeof *l);
    l->row_tiles = ((s->out + 15) / 16 + QC_CUDA_ROW_TILE_PAD - 1) / QC_CUDA_ROW_TILE_PAD *
                   QC_CUDA_ROW_TILE_PAD;
    l->k_tiles = (s->in + QC_CUDA_KTILE - 1) / QC_CUDA_KTILE;
    l->n_groups = s->group_size ? (s->in + s->group_size - 1) / s->group_size : 1;
    l->sz_bytes = s->symmetric ? 4 : 8;
    size_t off = 64;
    int bad = section(&off, l->row_tiles * l->k_tiles, s->bits, 512, &l->codes);
    bad |= section(&off, l->row_tiles * l->n_groups, 8, (size_t)l->sz_bytes, &l->sz);
    bad |= section(&off, s->act_order ? s->in : 0, 1, 4, &l->perm);
    bad |= section(&off, s->out, s->rank, 2, &l->lr_a);
    bad |= section(&off, s->in, s->rank, 2, &l->lr_b);
    bad |= section(&off, s->outliers ? s->out + 1 : 0, 1, 4, &l->row_ptr);
    bad |= section(&off, nnz, 1, 4, &l->col);
    bad |= section(&off, nnz, 1, 2, &l->val);
    l->total = align256(off);
    if (bad || l->total < off)
        return qc_err_set(err, "CUDA packed weight: %lld x %lld layer too large", (long long)s->out,
                          (long long)s->in);
    return 0;
}

size_t qc_cuda_pack_size(const qc_kernel_spec *s, int64_t nnz, qc_err *err) {
    qc_cuda_layout l;
    return qc_cuda_layout_get(s, nnz, &l, err) ? 0 : l.total;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Where bit b of plane π of row o, packed column p lives: the byte offset of
 * its u32 word in the blob and the bit inside it (layout: cuda_pack.h). */
static size_t code_word(const qc_kernel_spec *s, const qc_cuda_layout *l, int w, int ubase,
                        int64_t o, int64_t p, int *bit) {
    int64_t rt = o / 16, rr = o % 16, kt = p / QC_CUDA_KTILE, kk = p % QC_CUDA_KTILE;
    /* column 32·b + 8·q + 4·j + e is in mma 2b + j at the B row lane q reads
     * as element e of its b0 (e < 2: rows 2q, 2q+1) or b1 (rows 2q+8, 2q+9) */
    int within = (int)(kk % 32), e = within % 4;
    int mma = (int)(kk / 32) * 2 + (within % 8) / 4;
    int c16 = 2 * (within / 8) + (e < 2 ? e : 8 + e - 2);
    int g = (int)(rr % 8), r = (int)(rr / 8) + 2 * (c16 / 8), q = (c16 % 8) / 2, hi = c16 % 2;
    int lane = 4 * g + q, P = 4 * mma + r, n = 16 / w;
    int m = P / n, u = ubase + m / 4, v = m % 4;
    *bit = w * (P % n) + 16 * hi;
    return l->codes + (size_t)((rt * l->k_tiles + kt) * s->bits + u) * 512 + (size_t)lane * 16 +
           (size_t)v * 4;
}

static void write_codes(const qc_kernel_spec *s, const qc_quant_state *q, const int32_t *perm,
                        const qc_cuda_layout *l, uint8_t *dst) {
    int width[3], offset[3], np = qc_cuda_planes(s->bits, width, offset);
    for (int64_t o = 0; o < s->out; o++)
        for (int64_t p = 0; p < s->in; p++) {
            unsigned code = q->codes[o * s->in + perm[p]];
            for (int k = 0, ubase = 0; k < np; ubase += width[k], k++) {
                int bit;
                size_t at = code_word(s, l, width[k], ubase, o, p, &bit);
                uint32_t word = (uint32_t)get_le(dst + at, 4);
                word |= ((code >> offset[k]) & ((1u << width[k]) - 1)) << bit;
                put_le(dst + at, word, 4);
            }
        }
}

unsigned qc_cuda_pack_code(const qc_kernel_spec *s, const uint8_t *blob, int64_t o, int64_t p) {
    qc_cuda_layout l;
    if (qc_cuda_layout_get(s, (int64_t)get_le(blob + 16, 8), &l, NULL)) return 0;
    int width[3], offset[3], np = qc_cuda_planes(s->bits, width, offset);
    unsigned code = 0;
    for (int k = 0, ubase = 0; k < np; ubase += width[k], k++) {
        int bit;
        uint32_t word = (uint32_t)get_le(blob + code_word(s, &l, width[k], ubase, o, p, &bit), 4);
        code |= ((word >> bit) & ((1u << width[k]) - 1)) << offset[k];
    }
    return code;
}

/* Scale/zero records: [row tile][group][g] = s(16rt+g), s(16rt+g+8), and
 * (asymmetric) 1024 + z of each, all f16. */
static void write_sz(const qc_kernel_spec *s, const qc_quant_state *q, const qc_cuda_layout *l,
                     uint8_t *dst) {
    for (int64_t o = 0; o < s->out; o++)
        for (int64_t gi = 0; gi < l->n_groups; gi++) {
            int64_t rt = o / 16, g = o % 8, hi = (o % 16) / 8;
            uint8_t *rec = dst + l->sz + (size_t)((rt * l->n_groups + gi) * 8 + g) * l->sz_bytes;
            put_le(rec + 2 * hi, qc_f32_to_f16(q->scales[o * l->n_groups + gi]), 2);
            if (!s->symmetric)
                put_le(rec + 4 + 2 * hi, qc_f32_to_f16(1024.0f + q->zeros[o * l->n_groups + gi]),
                       2);
        }
}

int qc_cuda_pack(const qc_kernel_spec *s, const qc_quant_state *q, const qc_pack_sparse *sp,
                 const qc_pack_lowrank *lr, uint8_t *dst, size_t dst_size, qc_err *err) {
    qc_cuda_layout l;
    int64_t nnz = sp ? sp->nnz : 0;
    if (qc_cuda_layout_get(s, nnz, &l, err)) return qc_err_prefix(err, "CUDA pack");
    if (dst_size < l.total)
        return qc_err_set(err, "CUDA pack: buffer of %zu bytes, need %zu", dst_size, l.total);
    if (qc_pack_check_inputs(s, q, sp, lr, err)) return qc_err_prefix(err, "CUDA");
    int32_t *perm = malloc((size_t)s->in * sizeof *perm);
    if (!perm || qc_pack_column_order(s, q, perm)) {
        free(perm);
        return qc_err_set(err, "CUDA pack: out of memory");
    }
    memset(dst, 0, l.total);
    memcpy(dst, QC_CUDA_PACK_MAGIC, 8);
    put_le(dst + 8, qc_kernel_spec_hash(s), 8);
    put_le(dst + 16, (uint64_t)nnz, 8);
    put_le(dst + 24, (uint64_t)l.total, 8);
    write_codes(s, q, perm, &l, dst);
    write_sz(s, q, &l, dst);
    if (s->act_order)
        for (int64_t c = 0; c < s->in; c++)
            put_le(dst + l.perm + 4 * c, (uint32_t)perm[c], 4);
    free(perm);
    for (int64_t i = 0; lr && i < s->out * s->rank; i++)
        put_le(dst + l.lr_a + 2 * i, lr->a[i], 2);
    for (int64_t i = 0; lr && i < s->in * s->rank; i++)
        put_le(dst + l.lr_b + 2 * i, lr->b[i], 2);
    if (sp) {
        for (int64_t o = 0; o <= s->out; o++)
            put_le(dst + l.row_ptr + 4 * o, (uint32_t)sp->row_ptr[o], 4);
        for (int64_t k = 0; k < nnz; k++) {
            put_le(dst + l.col + 4 * k, (uint32_t)sp->col[k], 4);
            put_le(dst + l.val + 2 * k, sp->val[k], 2);
        }
    }
    return 0;
}

int qc_cuda_pack_check(const qc_kernel_spec *s, const uint8_t *blob, size_t size, qc_err *err) {
    qc_cuda_layout l;
    if (size < 64 || memcmp(blob, QC_CUDA_PACK_MAGIC, 8) != 0)
        return qc_err_set(err, "CUDA packed weight: bad magic or shorter than its 64-byte header");
    if (get_le(blob + 8, 8) != qc_kernel_spec_hash(s))
        return qc_err_set(err,
                          "CUDA packed weight: packed for another kernel spec (hash mismatch)");
    uint64_t nnz = get_le(blob + 16, 8), total = get_le(blob + 24, 8);
    if (nnz > INT32_MAX || qc_cuda_layout_get(s, (int64_t)nnz, &l, err))
        return qc_err_set(err, "CUDA packed weight: bad outlier count %llu",
                          (unsigned long long)nnz);
    if (total != l.total || size < l.total)
        return qc_err_set(err, "CUDA packed weight: %zu bytes (header says %llu), layout needs %zu",
                          size, (unsigned long long)total, l.total);
    if (s->act_order && qc_pack_check_perm(blob + l.perm, s->in, err))
        return qc_err_prefix(err, "CUDA");
    if (s->outliers && qc_pack_check_csr(s, blob + l.row_ptr, blob + l.col, (int64_t)nnz, err))
        return qc_err_prefix(err, "CUDA packed weight");
    return 0;
}
