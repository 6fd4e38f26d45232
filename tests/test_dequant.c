/* Dequantization of every supported GGUF tensor type against the gguf pip
 * package (gguf.quants.dequantize), from fixtures written by
 * tests/gen/make_gguf_fixtures.py.
 *
 *   test_dequant [TYPES.gguf EXPECTED.f32]
 *
 * Default: the committed tests/data/gguf_types.{gguf,f32}; test_gguf_dequant.py
 * passes freshly generated ones. Tolerance: bit-exact. The reference does the
 * same f32 operations in the same order (f16 scale widened exactly, d * q,
 * then + m or - dmin * m), so any difference is a layout bug. */
#include "check.h"
#include "compiler/dequant.h"
#include "compiler/gguf.h"

#include <stdint.h>
#include <string.h>

/* f16 <-> f32 conversions: exhaustive round trip over all finite halves. */
static void test_f16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue; /* inf / nan */
        float f = qc_f16_to_f32((uint16_t)h);
        if (qc_f32_to_f16(f) != h && !(f == 0.0f && (h & 0x7fff) == 0)) bad++;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
    CHECK(qc_f16_to_f32(0x3c00) == 1.0f);
    CHECK(qc_f16_to_f32(0xc000) == -2.0f);
    CHECK(qc_f16_to_f32(0x0001) == 5.9604644775390625e-8f); /* smallest subnormal */
    CHECK(qc_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(qc_f32_to_f16(65520.0f) == 0x7c00);           /* rounds to inf */
    CHECK(qc_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie to even */
    CHECK(qc_bf16_to_f32(0x3f80) == 1.0f);
}

int main(int argc, char **argv) {
    const char *gpath = argc > 2 ? argv[1] : "tests/data/gguf_types.gguf";
    const char *epath = argc > 2 ? argv[2] : "tests/data/gguf_types.f32";
    test_f16();

    qc_err err = {{0}};
    qc_gguf *g = qc_gguf_open(gpath, &err);
    CHECK_MSG(g != NULL, "%s", err.msg);
    if (!g) TEST_END();
    size_t elen = 0;
    char *expected = qc_read_file(epath, 1 << 26, &elen, &err);
    CHECK_MSG(expected != NULL, "%s", err.msg);
    if (!expected) TEST_END();

    int seen[QC_DT_COUNT] = {0};
    size_t at = 0; /* in floats */
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const qc_gguf_tensor *t = &g->tensors[i];
        CHECK_FATAL((at + (size_t)t->numel) * 4 <= elen);
        float *out = malloc((size_t)t->numel * sizeof *out);
        CHECK_FATAL(out != NULL);
        qc_dequantize(t->dtype, t->data, out, t->numel);
        int mismatches = 0;
        double maxdiff = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            float want;
            memcpy(&want, expected + (at + (size_t)j) * 4, 4);
            if (memcmp(&want, &out[j], 4) != 0) {
                double d = fabs((double)want - out[j]);
                if (d > maxdiff || mismatches == 0) maxdiff = d;
                mismatches++;
            }
        }
        CHECK_MSG(mismatches == 0, "tensor '%s' (%s): %d of %lld values differ, max |diff| %g",
                  t->name, qc_dtype_name(t->dtype), mismatches, (long long)t->numel, maxdiff);
        seen[t->dtype] = 1;
        at += (size_t)t->numel;
        free(out);
    }
    CHECK_MSG(at * 4 == elen, "expected file has %zu floats, tensors %zu", elen / 4, at);
    /* U8 and I32 are the integer parts of compiled models, not GGUF types. */
    for (int d = 0; d < QC_DT_U8; d++)
        CHECK_MSG(seen[d], "fixture has no %s tensor", qc_dtype_name((qc_dtype)d));
    printf("dequantized %lld tensors (%zu values) from %s: all bit-exact\n",
           (long long)g->n_tensors, at, gpath);
    free(expected);
    qc_gguf_free(g);
    TEST_END();
}
