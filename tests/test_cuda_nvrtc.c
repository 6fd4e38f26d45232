/* CUDA codegen without a GPU (runs in CI, which has NVRTC): the GEMV source
 * of a set of specs compiles to PTX and CUBIN for sm_80 and sm_90a with no
 * NVRTC error or warning; equal specs compile once; bad architectures,
 * unsupported specs, broken sources and warnings fail with a message. */
#include "../codegen/cuda_codegen.h"
#include "../codegen/cuda_forward.h"
#include "../codegen/cuda_nvrtc.h"
#include "../codegen/cuda_pack.h"
#include "../codegen/cuda_src.h"
#include "../compiler/quant.h"
#include "check.h"

#include <stdlib.h>

#include <string.h>

static qc_kernel_spec spec(int bits, int group, int sym, int64_t out, int64_t in, int act_order,
                           int outliers, int rank) {
    qc_kernel_spec s = {.format = QC_KFMT_INT,
                        .bits = bits,
                        .group_size = group,
                        .symmetric = sym,
                        .out = out,
                        .in = in,
                        .act_order = act_order,
                        .outliers = outliers,
                        .rank = rank};
    return s;
}

/* s with the online Hadamard of its input width. */
static qc_kernel_spec hspec(qc_kernel_spec s) {
    s.transform = QC_KTRANSFORM_HADAMARD, s.transform_size = (int)s.in;
    return s;
}

/* Packing without a GPU: every code reads back from the CUDA blob, the blob
 * passes its checker, and corrupted headers, permutations and CSR do not. */
static void check_pack(void) {
    qc_err err = {{0}};
    int64_t out = 37, in = 300;
    for (int bits = 2; bits <= 8; bits++) {
        qc_quant_state q = {.fmt = {bits, 32, 0}, .rows = out, .cols = in};
        q.n_groups = (in + 31) / 32;
        uint8_t *codes = malloc((size_t)(out * in));
        float *scales = malloc((size_t)(out * q.n_groups) * sizeof(float));
        float *zeros = malloc((size_t)(out * q.n_groups) * sizeof(float));
        int32_t *g_idx = malloc((size_t)in * sizeof(int32_t)), *perm = malloc((size_t)in * 4);
        for (int64_t i = 0; i < out * in; i++)
            codes[i] = (uint8_t)((i * 2654435761u >> 7) & ((1u << bits) - 1));
        for (int64_t i = 0; i < out * q.n_groups; i++)
            scales[i] = 0.125f, zeros[i] = (float)(i % (1 << bits));
        for (int64_t c = 0; c < in; c++) /* act-order: columns reversed */
            perm[c] = (int32_t)(in - 1 - c), g_idx[in - 1 - c] = (int32_t)(c / 32);
        q.codes = codes, q.scales = scales, q.zeros = zeros, q.g_idx = g_idx, q.perm = perm;
        qc_kernel_spec s;
        CHECK_FATAL(!qc_kernel_spec_from_quant(&q, 0, 0, &s, &err));
        CHECK(s.act_order == 1);
        size_t n = qc_cuda_pack_size(&s, 0, &err);
        uint8_t *blob = malloc(n);
        CHECK_MSG(!qc_cuda_pack(&s, &q, NULL, NULL, blob, n, &err), "%s", err.msg);
        CHECK_MSG(!qc_cuda_pack_check(&s, blob, n, &err), "%s", err.msg);
        int bad = 0;
        int32_t *order = malloc((size_t)in * 4);
        CHECK_FATAL(!qc_pack_column_order(&s, &q, order));
        for (int64_t o = 0; o < out; o++)
            for (int64_t p = 0; p < in; p++) /* packed column p holds column order[p] */
                bad += qc_cuda_pack_code(&s, blob, o, p) != codes[o * in + order[p]];
        free(order);
        CHECK_MSG(bad == 0, "%d-bit: %d codes differ", bits, bad);
        CHECK(qc_cuda_pack_check(&s, blob, n - 1, &err) < 0);
        blob[0] ^= 1;
        CHECK(qc_cuda_pack_check(&s, blob, n, &err) < 0 && strstr(err.msg, "magic"));
        blob[0] ^= 1;
        qc_cuda_layout l;
        CHECK_FATAL(!qc_cuda_layout_get(&s, 0, &l, &err));
        blob[l.perm] = 1, blob[l.perm + 1] = 0, blob[l.perm + 2] = 0, blob[l.perm + 3] = 0;
        CHECK(qc_cuda_pack_check(&s, blob, n, &err) < 0 && strstr(err.msg, "permutation"));
        if (bits < 8) {
            codes[0] = (uint8_t)(1 << bits); /* out of range */
            CHECK(qc_cuda_pack(&s, &q, NULL, NULL, blob, n, &err) < 0);
        }
        free(codes), free(scales), free(zeros), free(g_idx), free(perm), free(blob);
    }
}

int main(void) {
    check_pack();
    qc_err err = {{0}};
    qc_cuda_binary b;
    if (!qc_nvrtc_available()) {
        CHECK(qc_nvrtc_compile("", "x.cu", "sm_80", &b, &err) < 0 &&
              strstr(err.msg, "without NVRTC"));
        printf("SKIP: quantc was built without NVRTC\n");
        return 77;
    }
    qc_kernel_spec specs[] = {
        spec(4, 128, 1, 4096, 4096, 0, 0, 0), spec(3, 128, 0, 4096, 4096, 1, 0, 0),
        spec(2, 32, 0, 100, 96, 0, 1, 3), spec(8, 0, 0, 33, 577, 0, 1, 0),
        spec(5, 64, 1, 7, 33, 1, 0, 2), spec(6, 256, 0, 13, 200, 0, 0, 0),
        spec(7, 512, 1, 576, 1536, 0, 0, 0), spec(4, 32, 0, 1, 1, 0, 0, 0),
        /* online Hadamard: Paley I base 12, Paley II 36, Sylvester, base 28 at 14336 */
        hspec(spec(4, 128, 0, 576, 1536, 1, 1, 8)), hspec(spec(3, 32, 1, 40, 576, 0, 0, 0)),
        hspec(spec(4, 0, 0, 33, 128, 0, 1, 0)), hspec(spec(4, 128, 0, 4096, 14336, 0, 0, 0)),
        spec(4, 128, 1, 4096, 4096, 0, 0, 0), /* repeat of [0]: a cache hit */
    };
    int n = (int)(sizeof specs / sizeof specs[0]);
    const char *archs[2] = {"sm_80", "sm_90a"};
    qc_nvrtc_cache *cache = qc_nvrtc_cache_new(&err);
    CHECK_FATAL(cache);
    for (int a = 0; a < 2; a++)
        for (int i = 0; i < n; i++) {
            int hit = -1;
            const qc_cuda_kernel *k = NULL;
            qc_cuda_gemv_opts o; /* GEMM entry points: in qc_cuda_codegen below */
            qc_cuda_gemv_default_opts(&specs[i], &o);
            o.gemm = 0;
            const qc_cuda_binary *b =
                qc_nvrtc_cache_get_opts(cache, &specs[i], &o, archs[a], &k, &hit, &err);
            CHECK_MSG(b != NULL, "%s", err.msg);
            if (!b) continue;
            CHECK(hit == (i == n - 1));
            CHECK(b->ptx_size > 1 && b->ptx[b->ptx_size - 1] == 0 && b->cubin_size > 64);
            CHECK(!memcmp(b->cubin, "\177ELF", 4));
            CHECK(strstr(b->ptx, k->gemv) != NULL);
            CHECK(strstr(b->ptx, "mma.sync.aligned.m16n8k16") != NULL);
            if (specs[i].rank) CHECK(k->lrt[0] && strstr(b->ptx, k->lrt));
            if (specs[i].transform)
                CHECK(k->had[0] && strstr(b->ptx, k->had) && k->gemv_smem > 0 &&
                      strstr(k->gemv, "_h"));
            if (!hit)
                printf("%-8s %-40s %6.2f s  PTX %7zu B  CUBIN %7zu B\n", archs[a], k->gemv,
                       b->seconds, b->ptx_size, b->cubin_size);
        }
    int compiles;
    double seconds;
    qc_nvrtc_cache_stats(cache, &compiles, &seconds);
    printf("%d NVRTC compiles, %.2f s in total\n", compiles, seconds);
    CHECK(compiles == 2 * (n - 1));
    qc_nvrtc_cache_free(cache);

    /* A model's kernel set: the forward module (every kernel the runtime
     * launches by name) plus one module per distinct spec, equal specs
     * once. */
    for (int a = 0; a < 2; a++) {
        /* every spec's GEMM entry points on sm_90a; three specs (one repeated) on sm_80 */
        int ns = a ? n : 3, nu = a ? n - 1 : 3;
        qc_cuda_object o;
        CHECK_MSG(!qc_cuda_codegen(a ? specs : specs + n - 3, ns, archs[a], &o, &err), "%s",
                  err.msg);
        CHECK(o.n_mods == 1 + nu && o.mods[0].is_forward && !strcmp(o.arch, archs[a]));
        static const char *const fwd[] = {"qcf_embed",   "qcf_rmsnorm",   "qcf_qprep",
                                          "qcf_kvstore", "qcf_attention", "qcf_swiglu",
                                          "qcf_bias",    "qcf_dense1",    "qcf_dense8"};
        for (size_t i = 0; o.n_mods > 0 && i < sizeof fwd / sizeof *fwd; i++)
            CHECK_MSG(strstr(o.mods[0].bin.ptx, fwd[i]), "forward module lacks %s", fwd[i]);
        for (int i = 1; i < o.n_mods; i++)
            CHECK(!memcmp(o.mods[i].bin.cubin, "\177ELF", 4) &&
                  strstr(o.mods[i].bin.ptx, o.mods[i].gemv) &&
                  strstr(o.mods[i].gemv, o.mods[i].name));
        printf("%s: forward module %.2f s, %d modules %.2f s in all\n", archs[a],
               o.n_mods ? o.mods[0].bin.seconds : 0, o.n_mods, o.seconds);
        qc_cuda_object_free(&o);
    }
    qc_cuda_object o;
    CHECK(qc_cuda_codegen(specs, n, "sm_8", &o, &err) < 0 && strstr(err.msg, "sm_8"));
    qc_cuda_object_free(&o);

    /* Failures: arch names, unsupported group size, transform, source
     * errors and warnings. */
    CHECK(qc_nvrtc_compile("", "x.cu", "compute_90", &b, &err) < 0 &&
          strstr(err.msg, "compute_90"));
    CHECK(qc_nvrtc_arch_check("sm_9", &err) < 0 && qc_nvrtc_arch_check("sm_90x", &err) < 0);
    CHECK(!qc_nvrtc_arch_check("sm_100f", &err) && !qc_nvrtc_arch_check("sm_90a", &err));
    qc_cuda_kernel k;
    qc_kernel_spec bad = spec(4, 48, 1, 64, 64, 0, 0, 0);
    CHECK(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "group size 48"));
    bad = spec(4, 16, 1, 64, 64, 0, 0, 0);
    CHECK(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "group size 16"));
    bad = spec(4, 8, 1, 64, 64, 0, 0, 0);
    CHECK(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "group size 8"));
    bad = hspec(spec(4, 128, 1, 64, 524, 0, 0, 0)); /* base order 524 */
    CHECK_MSG(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "base order 524"), "%s",
              err.msg);
    bad = hspec(spec(4, 128, 1, 64, 32768, 0, 0, 0)); /* 192 KiB of shared memory */
    CHECK_MSG(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "shared memory"), "%s",
              err.msg);
    bad = hspec(spec(4, 128, 1, 64, 96, 0, 0, 0));
    bad.transform_size = 64; /* not the input width */
    CHECK(qc_cuda_src_gemv(&bad, &k, &err) < 0 && strstr(err.msg, "Hadamard"));
    CHECK(qc_nvrtc_compile("extern \"C\" __global__ void f( {", "broken.cu", "sm_80", &b, &err) <
          0);
    CHECK_MSG(strstr(err.msg, "broken.cu") && strstr(err.msg, "NVRTC_ERROR_COMPILATION"), "%s",
              err.msg);
    CHECK(qc_nvrtc_compile("extern \"C\" __global__ void f(float *y) { int unused = 3; y[0] = 1; }",
                           "warn.cu", "sm_80", &b, &err) < 0);
    CHECK_MSG(strstr(err.msg, "warning"), "%s", err.msg);
    TEST_END();
}
