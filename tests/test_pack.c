/* Weight packing (codegen/pack.h) and kernel specs (codegen/kernel_spec.h):
 * pack/unpack round trip for every bit width and grouping, the documented
 * byte layout on a hand-checked example, sizes and bits per weight, and bad
 * inputs (pack rejects them; qc_pack_check rejects corrupted blobs). Exact
 * comparisons: packing is lossless by construction. */
#include "../codegen/kernel_spec.h"
#include "../codegen/pack.h"
#include "../compiler/dequant.h"
#include "../compiler/quant.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static qc_quant_state *random_state(int bits, int group, int sym, int64_t rows, int64_t cols,
                                    int act_order) {
    qc_quant_format f = {bits, group, sym};
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, rows, cols, &err);
    CHECK_FATAL(q);
    int maxq = (1 << bits) - 1;
    for (int64_t i = 0; i < rows * cols; i++)
        q->codes[i] = (uint8_t)(urand() * (maxq + 1));
    for (int64_t i = 0; i < rows * q->n_groups; i++) {
        q->scales[i] = qc_f16_to_f32(qc_f32_to_f16((float)(0.01 + urand())));
        q->zeros[i] = sym ? (float)(1 << (bits - 1)) : (float)(int)(urand() * (maxq + 1));
    }
    if (act_order && group) {
        int32_t *perm = malloc((size_t)cols * sizeof *perm);
        for (int64_t c = 0; c < cols; c++)
            perm[c] = (int32_t)c;
        for (int64_t c = cols - 1; c > 0; c--) {
            int64_t k = (int64_t)(urand() * (double)(c + 1));
            int32_t t = perm[c];
            perm[c] = perm[k], perm[k] = t;
        }
        for (int64_t p = 0; p < cols; p++)
            q->g_idx[perm[p]] = (int32_t)(p / group);
        q->perm = perm;
    }
    return q;
}

static void round_trip(int bits, int group, int sym, int64_t rows, int64_t cols, int act) {
    qc_quant_state *q = random_state(bits, group, sym, rows, cols, act);
    qc_kernel_spec s;
    qc_err err;
    CHECK_FATAL(!qc_kernel_spec_from_quant(q, 0, 0, &s, &err));
    CHECK(s.act_order == (act && group && group < cols && cols > group));
    size_t size = qc_pack_size(&s, 0, &err);
    uint8_t *b = malloc(size);
    CHECK_FATAL(!qc_pack(&s, q, NULL, NULL, b, size, &err));
    CHECK_MSG(!qc_pack_check(&s, b, size, &err), "%s", err.msg);
    uint8_t *codes = malloc((size_t)(rows * cols));
    float *sc = malloc((size_t)(rows * q->n_groups) * sizeof *sc);
    float *zs = malloc((size_t)(rows * q->n_groups) * sizeof *zs);
    int32_t *gi = malloc((size_t)cols * sizeof *gi);
    qc_unpack(&s, b, codes, sc, zs, gi);
    CHECK_MSG(!memcmp(codes, q->codes, (size_t)(rows * cols)), "codes bits %d group %d act %d",
              bits, group, act);
    CHECK(!memcmp(sc, q->scales, (size_t)(rows * q->n_groups) * sizeof *sc));
    CHECK(!memcmp(zs, q->zeros, (size_t)(rows * q->n_groups) * sizeof *zs));
    CHECK(!memcmp(gi, q->g_idx, (size_t)cols * sizeof *gi));
    free(b), free(codes), free(sc), free(zs), free(gi);
    qc_quant_state_free(q);
}

/* The layout of pack.h on one 4-bit tile: lane l's word at bytes 4l..4l+3
 * holds code(j, l) (column 8j + l) in bits 4j..4j+3; and 3-bit: bytes 0..15
 * are 8 lanes × 16 stream bits, bytes 16..23 the lanes' stream bits 16..23. */
static void layout_example(void) {
    qc_quant_format f = {4, 64, 1};
    qc_err err;
    qc_quant_state *q = qc_quant_state_new(&f, 1, 64, &err);
    for (int c = 0; c < 64; c++)
        q->codes[c] = (uint8_t)(c % 16);
    q->scales[0] = 1, q->zeros[0] = 8;
    qc_kernel_spec s;
    CHECK_FATAL(!qc_kernel_spec_from_quant(q, 0, 0, &s, &err));
    uint8_t b[512];
    qc_pack_layout l;
    CHECK_FATAL(!qc_pack_layout_get(&s, 0, &l, &err) && l.total <= sizeof b);
    CHECK(l.codes == 64 && l.row_bytes == 32 && l.scales == 128);
    CHECK_FATAL(!qc_pack(&s, q, NULL, NULL, b, sizeof b, &err));
    /* lane 1, slot 2 = column 17 (code 1) at bits 8..11 of lane 1's word */
    CHECK((b[64 + 4 * 1 + 1] & 0x0f) == 1);
    /* lane 7, slot 7 = column 63 (code 15) at bits 28..31 */
    CHECK(b[64 + 4 * 7 + 3] >> 4 == 15);
    CHECK(b[l.scales] == 0x00 && b[l.scales + 1] == 0x3c); /* f16 1.0 */
    qc_quant_state_free(q);

    f.bits = 3;
    q = qc_quant_state_new(&f, 1, 64, &err);
    memset(q->codes, 0, 64);
    q->codes[8 * 7 + 2] = 5; /* slot 7, lane 2: stream bits 21..23 → byte 2 */
    q->codes[8 * 5 + 0] = 7; /* slot 5, lane 0: stream bits 15..17 straddle */
    q->scales[0] = 1, q->zeros[0] = 4;
    CHECK_FATAL(!qc_kernel_spec_from_quant(q, 0, 0, &s, &err));
    CHECK_FATAL(!qc_pack(&s, q, NULL, NULL, b, sizeof b, &err));
    CHECK(b[64 + 16 + 2] == 5 << 5);
    CHECK(b[64 + 1] == 0x80 && b[64 + 16] == 3);
    qc_quant_state_free(q);
}

static void sizes_and_ids(void) {
    qc_kernel_spec s = {.format = QC_KFMT_INT,
                        .bits = 4,
                        .group_size = 128,
                        .symmetric = 0,
                        .out = 576,
                        .in = 1536};
    qc_err err;
    double bpw = qc_pack_bits_per_weight(&s, 0);
    /* 4 + 16/128 (scales) + 8/128 (zeros), plus section alignment */
    CHECK_MSG(bpw >= 4.1875 && bpw < 4.19, "bpw %f", bpw);
    s.bits = 3, s.symmetric = 1;
    bpw = qc_pack_bits_per_weight(&s, 0);
    CHECK_MSG(bpw >= 3.125 && bpw < 3.13, "bpw %f", bpw);
    char id[96];
    s.rank = 16, s.outliers = 1, s.act_order = 1;
    CHECK(qc_kernel_spec_id(&s, id, sizeof id) > 0 && !strcmp(id, "i3g128s_o576_i1536_p_s_r16"));
    CHECK(qc_kernel_spec_id(&s, id, 8) < 0);
    qc_kernel_spec v[4] = {s, s, s, s};
    v[1].bits = 4, v[3].bits = 4;
    int idx[4];
    qc_kernel_spec u[4];
    CHECK(qc_kernel_specs_dedup(v, 4, u, idx) == 2 && idx[0] == 0 && idx[1] == 1 && idx[2] == 0 &&
          idx[3] == 1);
    CHECK(qc_kernel_spec_hash(&v[0]) == qc_kernel_spec_hash(&v[2]));
    CHECK(qc_kernel_spec_hash(&v[0]) != qc_kernel_spec_hash(&v[1]));
    /* unsupported specs */
    qc_kernel_spec b = s;
    b.bits = 9;
    CHECK(qc_kernel_spec_check(&b, &err) < 0);
    b = s, b.group_size = 100;
    CHECK(qc_kernel_spec_check(&b, &err) < 0 && strstr(err.msg, "multiple of 8"));
    /* online Hadamard: size must be in, and an order compiler/hadamard.h builds */
    b = s, b.transform = QC_KTRANSFORM_HADAMARD, b.transform_size = 64;
    CHECK(qc_kernel_spec_check(&b, &err) < 0 && strstr(err.msg, "1536 inputs"));
    b = s, b.transform = QC_KTRANSFORM_HADAMARD, b.transform_size = 1536;
    CHECK_MSG(qc_kernel_spec_check(&b, &err) == 0, "%s", err.msg);
    CHECK(qc_kernel_spec_id(&b, id, sizeof id) > 0 && !strcmp(id, "i3g128s_o576_i1536_p_s_r16_h1536"));
    b.in = b.transform_size = 11008; /* 2^8·43: no base */
    CHECK(qc_kernel_spec_check(&b, &err) < 0 && strstr(err.msg, "no Hadamard matrix of order 11008"));
    b = s, b.transform = 2, b.transform_size = 0;
    CHECK(qc_kernel_spec_check(&b, &err) < 0 && strstr(err.msg, "unknown online transform"));
    b = s, b.out = 0;
    CHECK(qc_kernel_spec_check(&b, &err) < 0);
}

static void bad_inputs(void) {
    qc_quant_state *q = random_state(4, 32, 0, 5, 70, 1);
    qc_kernel_spec s;
    qc_err err;
    CHECK_FATAL(!qc_kernel_spec_from_quant(q, 1, 0, &s, &err));
    int32_t row_ptr[6] = {0, 1, 1, 2, 2, 3}, col[3] = {0, 69, 5};
    uint16_t val[3] = {0x3c00, 0xbc00, 0x3800};
    qc_pack_sparse sp = {3, row_ptr, col, val};
    size_t size = qc_pack_size(&s, 3, &err);
    uint8_t *b = malloc(size), *c = malloc(size);
    CHECK_FATAL(!qc_pack(&s, q, &sp, NULL, b, size, &err));
    CHECK(!qc_pack_check(&s, b, size, &err));
    CHECK(qc_pack(&s, q, &sp, NULL, b, size - 1, &err) < 0); /* buffer too small */
    CHECK(qc_pack(&s, q, NULL, NULL, b, size, &err) < 0);    /* spec says outliers */
    col[1] = 70;
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0 && strstr(err.msg, "column 70"));
    col[1] = 69, row_ptr[2] = 0;
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0 && strstr(err.msg, "row_ptr"));
    row_ptr[2] = 1;
    q->codes[3] = 16;
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0 && strstr(err.msg, "exceeds 4 bits"));
    q->codes[3] = 1, q->scales[2] = 0.1f; /* not an f16 value */
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0 && strstr(err.msg, "f16"));
    q->scales[2] = 0.5f, q->zeros[1] = 2.5f;
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0 && strstr(err.msg, "zero point"));
    q->zeros[1] = 2;
    q->g_idx[0] = (q->g_idx[0] + 1) % 3; /* groups of 33 and 31 columns */
    CHECK(qc_pack(&s, q, &sp, NULL, b, size, &err) < 0);

    /* qc_pack_check on corrupted blobs (b is the good one from above) */
    CHECK(qc_pack_check(&s, b, size - 1, &err) < 0);
    CHECK(qc_pack_check(&s, b, 10, &err) < 0);
    qc_pack_layout l;
    CHECK_FATAL(!qc_pack_layout_get(&s, 3, &l, &err));
    size_t offs[] = {0, 8, 16, 24, l.zeros, l.perm, l.row_ptr + 4, l.col + 4};
    uint8_t vals[] = {'X', 1, 9, 1, 0xff, 0x7f, 0x7f, 0x7f};
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
        memcpy(c, b, size);
        c[offs[i] + (i >= 5 ? 3 : 0)] ^= vals[i]; /* high byte of i32s */
        CHECK_MSG(qc_pack_check(&s, c, size, &err) < 0, "corruption %zu not detected", i);
    }
    memcpy(c, b, size);
    memcpy(c + l.perm, c + l.perm + 4, 4); /* duplicate permutation entry */
    CHECK(qc_pack_check(&s, c, size, &err) < 0 && strstr(err.msg, "permutation"));
    qc_kernel_spec other = s;
    other.bits = 3;
    CHECK(qc_pack_check(&other, b, size, &err) < 0 && strstr(err.msg, "hash"));
    free(b), free(c);
    qc_quant_state_free(q);
}

int main(void) {
    const int groups[5] = {32, 64, 128, 0, 8};
    const int64_t shapes[3][2] = {{1, 1}, {7, 33}, {3, 200}};
    for (int bits = 2; bits <= 8; bits++)
        for (int g = 0; g < 5; g++)
            for (int sh = 0; sh < 3; sh++)
                for (int act = 0; act < 2; act++)
                    round_trip(bits, groups[g], (bits + g) % 2, shapes[sh][0], shapes[sh][1], act);
    layout_example();
    sizes_and_ids();
    bad_inputs();
    TEST_END();
}
