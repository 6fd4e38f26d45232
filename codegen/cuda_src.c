/* CUDA C source generator for the decode GEMV (see cuda_src.h; the weight
 * layout it reads is codegen/cuda_pack.h).
 *
 * The kernel: a block owns RTB row tiles of 16 rows; its KW warps split the
 * K tiles (256 columns) of those rows round-robin, so neighbouring warps
 * stream neighbouring bytes. Per K tile a lane loads its `bits` uint4s of
 * codes per row tile with L1-bypassing 16-byte loads (one load instruction
 * of a warp reads 512 contiguous bytes), turns each pair of codes into two
 * f16 values 1024 + c with a shift, a mask and an OR of 0x6400, subtracts
 * 1024 + zero with one f16x2 subtraction (exact: code − zero is a small
 * integer), and feeds mma.m16n8k16 with x as all eight B columns. Each scale
 * period (a group, at most one K tile) accumulates into fresh f32 registers
 * that are then scaled by the row's f32 scale and added to the row sum. The
 * warps' sums meet in shared memory; the block's rows then add outliers
 * (CSR) and A·t (t = B·x from the lrt kernel) and store y. */
#include "cuda_src.h"

#include "../compiler/dequant.h"
#include "../compiler/hadamard.h"
#include "cuda_pack.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void emit(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
}

/* Helpers every kernel uses: types, loads, f16 conversions, the mma. */
static const char *prelude =
    "typedef unsigned int u32;\n"
    "typedef unsigned short u16;\n"
    "typedef unsigned char u8;\n"
    "typedef unsigned long long u64;\n"
    "\n"
    "/* 16 bytes of codes, read once: bypass L1 so x stays there. */\n"
    "__device__ __forceinline__ void ld_stream(const u8 *p, u32 *v) {\n"
    "    asm(\"ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\"\n"
    "        : \"=r\"(v[0]), \"=r\"(v[1]), \"=r\"(v[2]), \"=r\"(v[3]) : \"l\"(p));\n"
    "}\n"
    "__device__ __forceinline__ float h2f(u32 h) {\n"
    "    float f;\n"
    "    asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"((u16)h));\n"
    "    return f;\n"
    "}\n"
    "__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {\n"
    "    u32 d;\n"
    "    asm(\"fma.rn.f16x2 %0, %1, %2, %3;\" : \"=r\"(d) : \"r\"(a), \"r\"(b), \"r\"(c));\n"
    "    return d;\n"
    "}\n"
    "__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {\n"
    "    u32 d;\n"
    "    asm(\"sub.rn.f16x2 %0, %1, %2;\" : \"=r\"(d) : \"r\"(a), \"r\"(b));\n"
    "    return d;\n"
    "}\n"

    "/* d += A·B, A 16x16 (4 regs of f16x2), B 16x8 (2 regs), d f32. */\n"
    "__device__ __forceinline__ void mma(float *d, const u32 *a, u32 b0, u32 b1) {\n"
    "    asm(\"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, \"\n"
    "        \"{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\"\n"
    "        : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
    "        : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b0), \"r\"(b1));\n"
    "}\n";

/* The spec's constants and the kernel's shape. */
static void emit_constants(sbuf *b, const qc_kernel_spec *s, const qc_cuda_layout *l,
                           const qc_cuda_gemv_opts *o, int kw) {
    int period = s->group_size && s->group_size < QC_CUDA_KTILE ? s->group_size : QC_CUDA_KTILE;
    emit(b, "#define OUT %lld\n#define IN %lld\n#define BITS %d\n", (long long)s->out,
         (long long)s->in, s->bits);
    emit(b, "#define XS %lld /* f16 between tokens of x */\n", (long long)qc_cuda_x_stride(s));
    emit(b, "#define KT %lld /* K tiles of 256 packed columns */\n", (long long)l->k_tiles);
    emit(b, "#define RTB %d /* row tiles (16 rows) per block */\n#define KW %d /* warps */\n",
         o->rtb, kw);
    emit(b, "#define PREFETCH %d /* load the next K tile before computing this one */\n",
         o->prefetch);
    emit(b, "#define MINB %d /* blocks per SM the register budget must allow */\n",
         o->min_blocks ? o->min_blocks : 1);
    emit(b, "#define NG %lld\n#define GROUP %d\n#define PERIOD %d /* columns per scale */\n",
         (long long)l->n_groups, s->group_size, period);
    emit(b, "#define NPER (256 / PERIOD)\n#define SZB %d\n#define SZW %d\n#define RANK %d\n",
         l->sz_bytes, l->sz_bytes / 4, s->rank);
    emit(b, "#define CODES_OFF %zuull\n#define SZ_OFF %zuull\n#define PERM_OFF %zuull\n", l->codes,
         l->sz, l->perm);
    emit(b, "#define LRA_OFF %zuull\n#define LRB_OFF %zuull\n", l->lr_a, l->lr_b);
    emit(b, "#define ROWPTR_OFF %zuull\n#define COL_OFF %zuull\n", l->row_ptr, l->col);
    /* symmetric: every zero is 2^(bits-1); the f16 pair of 1024 + zero */
    unsigned zm = qc_f32_to_f16(1024.0f + (float)(1 << (s->bits - 1)));
    emit(b, "#define ZSYM 0x%08xu\n\n", zm * 0x10001u);
}

/* dequant(c, P, zb): pair P of a lane's codes as two f16 values code − zero.
 * The codes' pieces (cuda_pack.h: plane word m = P / n holds the pair at bit
 * w·(P mod n)) are masked into the mantissa of 0x6400 (f16 1024).
 * One plane: piece at bit 0, giving 1024 + code; zb = 1024 + zero, and one
 * f16x2 subtraction is exact. Several planes: every piece is moved left, to
 * bit 10 − bits + off, from the word or the word shifted right by 8 (which
 * the compiler computes once per word), giving 1024 + code·2^s, s = 10 −
 * bits; left shifts by constants can run as IMAD.SHL beside the integer
 * pipe, where right shifts queue behind the masks. One f16x2 FMA with 2^-s
 * and zb = 1024 − 2^(10−s) − zero (exact: small integers) gives code − zero. */
static void emit_decode(sbuf *b, int bits) {
    int width[3], offset[3], np = qc_cuda_planes(bits, width, offset);
    int top = np > 1 ? 10 - bits : 0; /* where the code's bit 0 lands */
    emit(b, "__device__ __forceinline__ u32 dequant(const u32 *c, int P, u32 zb) {\n");
    emit(b, "    u32 v = 0x64006400u;\n");
    for (int k = 0, ubase = 0; k < np; ubase += width[k], k++) {
        int n = 16 / width[k], t = top + offset[k];
        unsigned mask = (((1u << width[k]) - 1) << t) * 0x10001u;
        emit(b,
             "    {\n        const u32 word = c[%d + P / %d];\n        const int p = %d * (P %% "
             "%d);\n",
             4 * ubase, n, width[k], n);
        if (np > 1)
            emit(b,
                 "        if (p <= %d) v |= (word << (%d - p)) & 0x%08xu;\n"
                 "        else if (p - 8 >= 0 && p - 8 <= %d) v |= ((word >> 8) << (%d - (p - 8))) "
                 "& 0x%08xu;\n"
                 "        else v |= (word >> (p - %d)) & 0x%08xu;\n",
                 t, t, mask, t, t, mask, t, mask);
        else
            emit(b, "        v |= (word >> p) & 0x%08xu;\n", mask);
        emit(b, "    }\n");
    }
    if (np > 1) {
        unsigned scale = qc_f32_to_f16(1.0f / (float)(1 << top));
        emit(b, "    return hfma2(v, 0x%08xu, zb);\n}\n", scale * 0x10001u);
        unsigned cb = qc_f32_to_f16(1024.0f - (float)(1 << (10 - top)));
        emit(b,
             "/* zb of a row from its 1024 + zero */\n"
             "__device__ __forceinline__ u32 zbias(u32 zm) { return hsub2(0x%08xu, zm); }\n\n",
             cb * 0x10001u);
    } else {
        emit(b, "    return hsub2(v, zb);\n}\n"
                "__device__ __forceinline__ u32 zbias(u32 zm) { return zm; }\n\n");
    }
}

/* ldx8(k, v): x[k .. k+7] in packed column order (act-order gathers through
 * perm) as four f16 pairs; past `in` reads 0 (k is a multiple of 8). */
static void emit_ldx(sbuf *b, const qc_kernel_spec *s) {
    emit(b, "__device__ __forceinline__ void ldx8(const u16 *__restrict__ x, "
            "const int *__restrict__ perm, int k, bool tail, u32 *v) {\n"
            "    if (!tail) {\n");
    if (s->act_order)
        emit(b,
             "        int p[8];\n"
             "        asm(\"ld.global.nc.v4.s32 {%%0,%%1,%%2,%%3}, [%%4];\" : \"=r\"(p[0]), "
             "\"=r\"(p[1]), \"=r\"(p[2]), \"=r\"(p[3]) : \"l\"(perm + k));\n"
             "        asm(\"ld.global.nc.v4.s32 {%%0,%%1,%%2,%%3}, [%%4];\" : \"=r\"(p[4]), "
             "\"=r\"(p[5]), \"=r\"(p[6]), \"=r\"(p[7]) : \"l\"(perm + k + 4));\n"
             "#pragma unroll\n"
             "        for (int i = 0; i < 4; i++) v[i] = (u32)x[p[2 * i]] | (u32)x[p[2 * i + 1]] "
             "<< 16;\n");
    else
        emit(b, "        (void)perm;\n"
                "        asm(\"ld.global.nc.v4.u32 {%%0,%%1,%%2,%%3}, [%%4];\" : \"=r\"(v[0]), "
                "\"=r\"(v[1]), \"=r\"(v[2]), \"=r\"(v[3]) : \"l\"(x + k));\n");
    emit(b,
         "        return;\n"
         "    }\n"
         "#pragma unroll\n"
         "    for (int i = 0; i < 4; i++) {\n"
         "        const int c = k + 2 * i;\n"
         "        u32 lo = c < IN ? x[%s] : 0, hi = c + 1 < IN ? x[%s] : 0;\n"
         "        v[i] = lo | hi << 16;\n"
         "    }\n"
         "}\n\n",
         s->act_order ? "perm[c]" : "c", s->act_order ? "perm[c + 1]" : "c + 1");
}

/* load_tile: a lane's codes and scale/zero records of K tile kt (records
 * of periods past `in` are not read). */
static void emit_load_tile(sbuf *b, const qc_kernel_spec *s) {
    emit(b,
         "template <int R>\n"
         "__device__ __forceinline__ void load_tile(const u8 *__restrict__ w, long long rt0, "
         "int kt, int lane,\n"
         "    u32 (&c)[R][4 * BITS], u32 (&sz)[R][NPER][SZW]) {\n"
         "#pragma unroll\n"
         "    for (int r = 0; r < R; r++) {\n"
         "        const u8 *base = w + CODES_OFF + ((rt0 + r) * KT + kt) * (BITS * 512ull) + "
         "lane * 16;\n"
         "#pragma unroll\n"
         "        for (int u = 0; u < BITS; u++) ld_stream(base + u * 512, &c[r][4 * u]);\n"
         "#pragma unroll\n"
         "        for (int pi = 0; pi < NPER; pi++) {\n"
         "            const int col0 = kt * 256 + pi * PERIOD;\n"
         "            if ((IN %% 256) != 0 && col0 >= IN) break;\n"
         "            const long long grp = %s;\n"
         "            const u8 *rec = w + SZ_OFF + (((rt0 + r) * NG + grp) * 8 + (lane >> 2)) * "
         "SZB;\n"
         "#pragma unroll\n"
         "            for (int i = 0; i < SZW; i++) sz[r][pi][i] = ((const u32 *)rec)[i];\n"
         "        }\n"
         "    }\n"
         "}\n\n",
         s->group_size ? "col0 / GROUP" : "0");
}

/* The sparse outlier and low-rank terms of output row o for the token whose
 * x and t = B·x are at xexpr and wsexpr (inside the final loops of both
 * kernels); xf32: x is f32 (the fused transform's shared memory), else f16. */
static void emit_extras(sbuf *b, const qc_kernel_spec *s, const char *indent, const char *xexpr,
                        int xf32, const char *wsexpr) {
    if (s->outliers)
        emit(b,
             "%sconst %s *xt = %s;\n"
             "%sconst int *row_ptr = (const int *)(w + ROWPTR_OFF);\n"
             "%sconst int *col = (const int *)(w + COL_OFF);\n"
             "%sconst u64 nnz = *(const u64 *)(w + 16);\n"
             "%sconst u16 *val = (const u16 *)(w + ((COL_OFF + 4 * nnz + 255) & ~255ull));\n"
             "%sfor (int k = row_ptr[o]; k < row_ptr[o + 1]; k++) sum += h2f(val[k]) * "
             "%s;\n",
             indent, xf32 ? "float" : "u16", xexpr, indent, indent, indent, indent, indent,
             xf32 ? "xt[col[k]]" : "h2f(xt[col[k]])");
    if (s->rank)
        emit(b,
             "%sconst float *wst = %s;\n"
             "%sconst u16 *lra = (const u16 *)(w + LRA_OFF) + o * RANK;\n"
             "%sfor (int k = 0; k < RANK; k++) sum += h2f(lra[k]) * wst[k];\n",
             indent, wsexpr, indent, indent);
    else
        emit(b, "%s(void)ws;\n", indent);
}

/* The online Hadamard of a spec with a transform (compiler/hadamard.h):
 * hadamard(x, xf) sets xf (n floats of shared memory) to H_n·x / sqrt(n),
 * H_n = H_p ⊗ S_m (n = p·m): a fast Walsh–Hadamard transform of each of the
 * p blocks of m values (log2 m butterfly stages, each a pass of the whole
 * block of threads over shared memory), then per column j < m the p × p
 * base mix y[a·m + j] = Σ_b base[a][b]·v[b·m + j] with the column in
 * registers and the base's signs as bits in constant memory, and the scale
 * 1/sqrt(n) — the operations of qc_hadamard_apply in the same order up to
 * the mix's summation. The GEMV calls it per block before its K loop; the
 * "had" kernel writes H x as f16 for the GEMM and the low-rank t = B·(H x). */
static int emit_transform(sbuf *b, const qc_kernel_spec *s, const char *had, qc_err *err) {
    qc_hadamard *h = qc_hadamard_new((int)s->in, err);
    if (!h) return -1;
    int p = h->p, m = h->pow2, hw = (p + 31) / 32;
    emit(b,
         "/* online Hadamard: H_n = H_p (x) S_m, n = %d = %d x %d */\n"
         "#define HN %d\n#define HP %d\n#define HM %d\n#define HW %d\n"
         "#define HSCALE %.9ef /* 1 / sqrt(n) */\n",
         h->n, p, m, h->n, p, m, hw, 1.0 / sqrt((double)h->n));
    if (p > 1) { /* bit b % 32 of word a·HW + b / 32: base[a][b] is -1 */
        emit(b, "__constant__ u32 hsign[HP * HW] = {");
        for (int a = 0; a < p; a++)
            for (int w = 0; w < hw; w++) {
                unsigned bits = 0;
                for (int c = 32 * w; c < p && c < 32 * w + 32; c++)
                    bits |= (h->base[a * p + c] < 0 ? 1u : 0u) << (c - 32 * w);
                emit(b, "%s0x%08xu", a + w ? ", " : "", bits);
            }
        emit(b, "};\n");
    }
    qc_hadamard_free(h);
    emit(b, "extern __shared__ __attribute__((aligned(16))) u8 hsm[];\n"
            "__device__ __forceinline__ u16 f2h(float f) {\n"
            "    u16 h;\n"
            "    asm(\"cvt.rn.f16.f32 %%0, %%1;\" : \"=h\"(h) : \"f\"(f));\n"
            "    return h;\n"
            "}\n"
            "/* 8 f16 of shared memory (16-byte aligned) as four pairs */\n"
            "__device__ __forceinline__ void ldxs(const u16 *p, u32 *v) {\n"
            "    struct __attribute__((aligned(16))) v4 { u32 a, b, c, d; };\n"
            "    const v4 t = *(const v4 *)p;\n"
            "    v[0] = t.a, v[1] = t.b, v[2] = t.c, v[3] = t.d;\n"
            "}\n"
            "__device__ void hadamard(const u16 *__restrict__ x, float *xf) {\n"
            "    const int nt = blockDim.x, tid = threadIdx.x;\n"
            "    for (int i = tid; i < HN; i += nt) xf[i] = h2f(x[i]);\n"
            "    __syncthreads();\n");
    if (m > 1)
        emit(b, "    for (int len = 1; len < HM; len <<= 1) { /* butterflies (j, j + len) */\n"
                "        for (int i = tid; i < HN / 2; i += nt) {\n"
                "            const int j = ((i & ~(len - 1)) << 1) | (i & (len - 1));\n"
                "            const float a = xf[j], b = xf[j + len];\n"
                "            xf[j] = a + b, xf[j + len] = a - b;\n"
                "        }\n"
                "        __syncthreads();\n"
                "    }\n");
    if (p > 1)
        emit(b, "    for (int j = tid; j < HM; j += nt) {\n"
                "        float v[HP];\n"
                "#pragma unroll\n"
                "        for (int k = 0; k < HP; k++) v[k] = xf[k * HM + j];\n"
                "#pragma unroll 1\n"
                "        for (int a = 0; a < HP; a++) {\n"
                "            float sum = 0;\n"
                "#pragma unroll\n"
                "            for (int k = 0; k < HP; k++)\n"
                "                sum += (hsign[a * HW + k / 32] >> (k %% 32)) & 1 ? -v[k] : v[k];\n"
                "            xf[a * HM + j] = sum * HSCALE;\n"
                "        }\n"
                "    }\n");
    else
        emit(b, "    for (int i = tid; i < HN; i += nt) xf[i] *= HSCALE;\n");
    emit(b,
         "    __syncthreads();\n"
         "}\n"
         "/* H x / sqrt(n) as f16 (zero padded to XS) for token blockIdx.y */\n"
         "extern \"C\" __global__ void __launch_bounds__(%d)\n"
         "%s(const u16 *__restrict__ x, u16 *__restrict__ xt) {\n"
         "    float *xf = (float *)hsm;\n"
         "    x += (long long)blockIdx.y * XS, xt += (long long)blockIdx.y * XS;\n"
         "    hadamard(x, xf);\n"
         "    for (int i = threadIdx.x; i < XS; i += blockDim.x) xt[i] = i < IN ? f2h(xf[i]) : 0;\n"
         "}\n\n",
         QC_CUDA_HAD_THREADS, had);
    return 0;
}

/* The loop over this warp's K tiles (each: per scale period, fresh mma
 * accumulators, then scaled into the row sums), then the block's reduction
 * and the outlier and low-rank additions. */
static void emit_gemv(sbuf *b, const qc_kernel_spec *s, const char *name, int min_blocks) {
    emit(b,
         "extern \"C\" __global__ void %s\n"
         "%s(const u8 *__restrict__ w, const u16 *__restrict__ x, float *__restrict__ y,\n"
         "    const float *__restrict__ ws) {\n"
         "    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, "
         "q = lane & 3;\n"
         "    x += (long long)blockIdx.y * XS, y += (long long)blockIdx.y * OUT; /* token */\n"
         "    ws += (long long)blockIdx.y * RANK;\n"
         "    const long long rt0 = (long long)blockIdx.x * RTB;\n"
         "%s"
         "    float acc[RTB][2] = {};\n"
         "    u32 c[RTB][4 * BITS], sz[RTB][NPER][SZW];\n"
         "    if (warp < KT) load_tile<RTB>(w, rt0, warp, lane, c, sz);\n",
         min_blocks ? "__launch_bounds__(KW * 32, MINB)" : "__launch_bounds__(KW * 32)", name,
         s->transform && !s->act_order ? "" /* x is read from shared memory, in packed order */
                                       : "    const int *perm = (const int *)(w + PERM_OFF);\n");
    if (s->transform) /* while the first codes load: x ← H x / sqrt(n) in shared memory */
        emit(
            b,
            "    u16 *xh = (u16 *)hsm; /* KT·256 f16: H x in packed column order, zero past IN */\n"
            "    float *xf = (float *)(hsm + KT * 512); /* IN floats: H x / sqrt(n) */\n"
            "    hadamard(x, xf);\n"
            "    for (int i = threadIdx.x; i < KT * 256; i += KW * 32)\n"
            "        xh[i] = i < IN ? f2h(xf[%s]) : 0;\n"
            "    __syncthreads();\n",
            s->act_order ? "perm[i]" : "i");
    emit(b,
         "#pragma unroll 1\n"
         "    for (int kt = warp; kt < KT; kt += KW) {\n"
         "        u32 cn[RTB][4 * BITS], szn[RTB][NPER][SZW];\n"
         "        if (PREFETCH && kt + KW < KT) load_tile<RTB>(w, rt0, kt + KW, lane, cn, szn);\n"
         "%s"
         "#pragma unroll\n"
         "        for (int pi = 0; pi < NPER; pi++) {\n"
         "            if ((IN %% 256) != 0 && kt * 256 + pi * PERIOD >= IN) break;\n"
         "            float d[RTB][2][4] = {}; /* even and odd mmas: two shorter chains */\n"
         "            u32 zb[RTB][2];\n"
         "#pragma unroll\n"
         "            for (int r = 0; r < RTB; r++)\n"
         "#pragma unroll\n"
         "                for (int i = 0; i < 2; i++) zb[r][i] = zbias(%s);\n"
         "#pragma unroll\n"
         "            for (int jj = 0; jj < PERIOD / 32; jj++) {\n"
         "                /* 32 packed columns: mmas j and j + 1 (cuda_pack.h) */\n"
         "                const int j = pi * (PERIOD / 16) + 2 * jj;\n"
         "                u32 xv[4];\n"
         "                %s\n"
         "#pragma unroll\n"
         "                for (int h = 0; h < 2; h++)\n"
         "#pragma unroll\n"
         "                    for (int r = 0; r < RTB; r++) {\n"
         "                        u32 a[4];\n"
         "#pragma unroll\n"
         "                        for (int i = 0; i < 4; i++)\n"
         "                            a[i] = dequant(c[r], 4 * (j + h) + i, zb[r][i & 1]);\n"
         "                        mma(d[r][h], a, xv[2 * h], xv[2 * h + 1]);\n"
         "                    }\n"
         "            }\n"
         "#pragma unroll\n"
         "            for (int r = 0; r < RTB; r++) {\n"
         "                acc[r][0] += h2f(sz[r][pi][0] & 0xffff) * (d[r][0][0] + d[r][1][0]);\n"
         "                acc[r][1] += h2f(sz[r][pi][0] >> 16) * (d[r][0][2] + d[r][1][2]);\n"
         "            }\n"
         "        }\n"
         "        if (PREFETCH) {\n"
         "#pragma unroll\n"
         "            for (int r = 0; r < RTB; r++) {\n"
         "#pragma unroll\n"
         "                for (int i = 0; i < 4 * BITS; i++) c[r][i] = cn[r][i];\n"
         "#pragma unroll\n"
         "                for (int pi = 0; pi < NPER; pi++)\n"
         "#pragma unroll\n"
         "                    for (int i = 0; i < SZW; i++) sz[r][pi][i] = szn[r][pi][i];\n"
         "            }\n"
         "        } else if (kt + KW < KT) {\n"
         "            load_tile<RTB>(w, rt0, kt + KW, lane, c, sz);\n"
         "        }\n"
         "    }\n",
         s->transform ? "" : "        const bool tail = (IN % 256) != 0 && kt == KT - 1;\n",
         s->symmetric ? "ZSYM" : "(i ? sz[r][pi][1] >> 16 : sz[r][pi][1] & 0xffff) * 0x10001u",
         s->transform ? "ldxs(xh + kt * 256 + j * 16 + 8 * q, xv);"
                      : "ldx8(x, perm, kt * 256 + j * 16 + 8 * q, tail, xv);");
    emit(b, "    /* the four lanes of a quad hold equal sums (B's columns are all x) */\n"
            "    __shared__ float red[KW][RTB * 16];\n"
            "    if (q == 0) {\n"
            "#pragma unroll\n"
            "        for (int r = 0; r < RTB; r++) {\n"
            "            red[warp][r * 16 + g] = acc[r][0];\n"
            "            red[warp][r * 16 + g + 8] = acc[r][1];\n"
            "        }\n"
            "    }\n"
            "    __syncthreads();\n"
            "    for (int i = threadIdx.x; i < RTB * 16; i += KW * 32) {\n"
            "        const long long o = rt0 * 16 + i;\n"
            "        if (o >= OUT) break;\n"
            "        float sum = 0;\n"
            "        for (int v = 0; v < KW; v++) sum += red[v][i];\n");
    emit_extras(b, s, "        ", s->transform ? "xf" : "x", s->transform, "ws");
    emit(b, "        y[o] = sum;\n"
            "    }\n"
            "}\n");
}

/* The prefill GEMM: like the GEMV, but the mma's 8 B columns are 8 tokens
 * (lane g loads token g's x where the GEMV loads x for every lane), and each
 * decoded weight fragment is applied to NT such tiles of 8 tokens, so the
 * weights are read and decoded once per NT·8 tokens. One row tile per
 * block; lane (g, q) accumulates rows g, g + 8 × tokens 2q, 2q + 1 of each
 * tile. Entry points for NT = 1, 2, 4, 8 (8 .. 64 tokens per block). */
static void emit_gemm(sbuf *b, const qc_kernel_spec *s, const char *name) {
    emit(b,
         "\ntemplate <int NT>\n"
         "__device__ __forceinline__ void gemm_body(const u8 *__restrict__ w, const u16 "
         "*__restrict__ x,\n"
         "    float *__restrict__ y, const float *__restrict__ ws, int n) {\n"
         "    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, "
         "q = lane & 3;\n"
         "    const long long rt0 = blockIdx.x, t0 = (long long)blockIdx.y * NT * 8;\n"
         "    const int *perm = (const int *)(w + PERM_OFF);\n"
         "    float acc[NT][4] = {};\n"
         "    u32 c[1][4 * BITS], sz[1][NPER][SZW];\n"
         "#pragma unroll 1\n"
         "    for (int kt = warp; kt < KT; kt += KW) {\n"
         "        load_tile<1>(w, rt0, kt, lane, c, sz);\n"
         "        const bool tail = (IN %% 256) != 0 && kt == KT - 1;\n"
         "#pragma unroll\n"
         "        for (int pi = 0; pi < NPER; pi++) {\n"
         "            if ((IN %% 256) != 0 && kt * 256 + pi * PERIOD >= IN) break;\n"
         "            float d[NT][4] = {};\n"
         "            u32 zb[2];\n"
         "#pragma unroll\n"
         "            for (int i = 0; i < 2; i++) zb[i] = zbias(%s);\n"
         "#pragma unroll\n"
         "            for (int jj = 0; jj < PERIOD / 32; jj++) {\n"
         "                const int j = pi * (PERIOD / 16) + 2 * jj;\n"
         "                u32 a[2][4];\n"
         "#pragma unroll\n"
         "                for (int h = 0; h < 2; h++)\n"
         "#pragma unroll\n"
         "                    for (int i = 0; i < 4; i++) a[h][i] = dequant(c[0], 4 * (j + h) + i, "
         "zb[i & 1]);\n"
         "#pragma unroll\n"
         "                for (int t = 0; t < NT; t++) {\n"
         "                    const long long tok = t0 + t * 8 + g;\n"
         "                    u32 xv[4] = {0, 0, 0, 0};\n"
         "                    if (tok < n) ldx8(x + tok * XS, perm, kt * 256 + j * 16 + 8 * q, "
         "tail, xv);\n"
         "                    mma(d[t], a[0], xv[0], xv[1]);\n"
         "                    mma(d[t], a[1], xv[2], xv[3]);\n"
         "                }\n"
         "            }\n"
         "            const float s0 = h2f(sz[0][pi][0] & 0xffff), s1 = h2f(sz[0][pi][0] >> 16);\n"
         "#pragma unroll\n"
         "            for (int t = 0; t < NT; t++) {\n"
         "                acc[t][0] += s0 * d[t][0], acc[t][1] += s0 * d[t][1];\n"
         "                acc[t][2] += s1 * d[t][2], acc[t][3] += s1 * d[t][3];\n"
         "            }\n"
         "        }\n"
         "    }\n"
         "    __shared__ float red[KW][16][NT * 8];\n"
         "#pragma unroll\n"
         "    for (int t = 0; t < NT; t++) {\n"
         "        red[warp][g][t * 8 + 2 * q] = acc[t][0], red[warp][g][t * 8 + 2 * q + 1] = "
         "acc[t][1];\n"
         "        red[warp][g + 8][t * 8 + 2 * q] = acc[t][2], red[warp][g + 8][t * 8 + 2 * q + 1] "
         "= acc[t][3];\n"
         "    }\n"
         "    __syncthreads();\n"
         "    for (int i = threadIdx.x; i < 16 * NT * 8; i += KW * 32) {\n"
         "        const long long o = rt0 * 16 + i / (NT * 8), tt = t0 + i %% (NT * 8);\n"
         "        if (o >= OUT || tt >= n) continue;\n"
         "        float sum = 0;\n"
         "        for (int v = 0; v < KW; v++) sum += red[v][i / (NT * 8)][i %% (NT * 8)];\n",
         s->symmetric ? "ZSYM" : "(i ? sz[0][pi][1] >> 16 : sz[0][pi][1] & 0xffff) * 0x10001u");
    emit_extras(b, s, "        ", "x + tt * XS", 0, "ws + tt * RANK");
    emit(b, "        y[tt * OUT + o] = sum;\n"
            "    }\n"
            "}\n");
    for (int nt = 1; nt <= 8; nt *= 2)
        emit(b,
             "extern \"C\" __global__ void __launch_bounds__(KW * 32)\n"
             "%s%d(const u8 *__restrict__ w, const u16 *__restrict__ x, float *__restrict__ y,\n"
             "    const float *__restrict__ ws, int n) {\n"
             "    gemm_body<%d>(w, x, y, ws, n);\n"
             "}\n",
             name, 8 * nt, nt);
}

/* t = B·x for the low-rank correction: one block per rank index. */
static void emit_lrt(sbuf *b, const char *name) {
    emit(b,
         "\nextern \"C\" __global__ void __launch_bounds__(256)\n"
         "%s(const u8 *__restrict__ w, const u16 *__restrict__ x, float *__restrict__ ws) {\n"
         "    const u16 *row = (const u16 *)(w + LRB_OFF) + (long long)blockIdx.x * IN;\n"
         "    x += (long long)blockIdx.y * XS, ws += (long long)blockIdx.y * RANK; /* token */\n"
         "    float sum = 0;\n"
         "    for (long long c = threadIdx.x; c < IN; c += 256) sum += h2f(row[c]) * h2f(x[c]);\n"
         "    __shared__ float part[256];\n"
         "    part[threadIdx.x] = sum;\n"
         "    __syncthreads();\n"
         "    for (int h = 128; h > 0; h >>= 1) {\n"
         "        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];\n"
         "        __syncthreads();\n"
         "    }\n"
         "    if (threadIdx.x == 0) ws[blockIdx.x] = part[0];\n"
         "}\n",
         name);
}

/* From H100 runs of bench/gemv_cuda.c (bench/gemv_cuda.md): one row tile
 * and 8 warps per block was the fastest shape or within 6% of it at w4 and
 * w3 g128 on the four Llama shapes (two row tiles cost registers, hence
 * resident warps; 4 warps won on tall matrices but lost 25-45% on wide
 * ones). Prefetching the next K tile paid 1-7% for codes of several planes
 * (3, 5, 6, 7 bits), whose decode is longer, and cost 5-10% at 4 bits. */
void qc_cuda_gemv_default_opts(const qc_kernel_spec *s, qc_cuda_gemv_opts *o) {
    int width[3], offset[3];
    o->rtb = 1;
    o->max_warps = 8;
    o->prefetch = s && qc_cuda_planes(s->bits, width, offset) > 1;
    o->min_blocks = 0;
    o->gemm = 1;
}

int qc_cuda_src_gemv_opts(const qc_kernel_spec *s, const qc_cuda_gemv_opts *o, qc_cuda_kernel *k,
                          qc_err *err) {
    memset(k, 0, sizeof *k);
    qc_cuda_layout l;
    if (qc_cuda_layout_get(s, 0, &l, err)) return -1;
    if ((o->rtb != 1 && o->rtb != 2) || o->max_warps < 1 || o->max_warps > 32 ||
        o->min_blocks < 0 || o->min_blocks > 32 || (o->gemm != 0 && o->gemm != 1))
        return qc_err_set(err,
                          "CUDA codegen: %d row tiles per block, %d warps, %d blocks per SM "
                          "(1..2, 1..32, 0..32)",
                          o->rtb, o->max_warps, o->min_blocks);
    char id[96];
    if (qc_kernel_spec_id(s, id, sizeof id) < 0) return qc_err_set(err, "CUDA codegen: spec id");
    snprintf(k->gemv, sizeof k->gemv, "qck_%s_cuda_gemv", id);
    if (o->gemm) snprintf(k->gemm, sizeof k->gemm, "qck_%s_cuda_gemm", id);
    if (s->rank) snprintf(k->lrt, sizeof k->lrt, "qck_%s_cuda_lrt", id);
    if (s->transform) {
        snprintf(k->had, sizeof k->had, "qck_%s_cuda_had", id);
        k->had_block = QC_CUDA_HAD_THREADS;
        k->had_smem = (size_t)s->in * 4;
        k->gemv_smem = qc_cuda_had_smem(s);
    }
    int kw = l.k_tiles < o->max_warps ? (int)l.k_tiles : o->max_warps;
    k->grid = (unsigned)(l.row_tiles / o->rtb);
    k->gemm_grid = (unsigned)((s->out + 15) / 16);
    k->block = 32u * (unsigned)kw;
    k->lrt_grid = (unsigned)s->rank;
    k->lrt_block = s->rank ? 256 : 0;
    k->ws_floats = (size_t)s->rank;

    sbuf b = {0};
    emit(&b, "/* quantc: decode GEMV for kernel spec %s (generated by codegen/cuda_src.c) */\n",
         id);
    emit_constants(&b, s, &l, o, kw);
    emit(&b, "%s\n", prelude);
    emit_decode(&b, s->bits);
    emit_ldx(&b, s);
    emit_load_tile(&b, s);
    if (s->transform && emit_transform(&b, s, k->had, err)) {
        free(b.p);
        memset(k, 0, sizeof *k);
        return -1;
    }
    emit_gemv(&b, s, k->gemv, o->min_blocks);
    if (o->gemm) emit_gemm(&b, s, k->gemm);
    if (s->rank) emit_lrt(&b, k->lrt);
    if (b.oom) {
        free(b.p);
        return qc_err_set(err, "CUDA codegen: out of memory");
    }
    k->src = b.p;
    k->src_len = b.n;
    return 0;
}

int qc_cuda_src_gemv(const qc_kernel_spec *s, qc_cuda_kernel *k, qc_err *err) {
    qc_cuda_gemv_opts o;
    qc_cuda_gemv_default_opts(s, &o);
    return qc_cuda_src_gemv_opts(s, &o, k, err);
}

int64_t qc_cuda_x_stride(const qc_kernel_spec *s) {
    return (s->in + 7) / 8 * 8;
}

void qc_cuda_kernel_free(qc_cuda_kernel *k) {
    free(k->src);
    memset(k, 0, sizeof *k);
}
