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
#include "cuda_pack.h"

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
    "__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {\n"
    "    u32 d;\n"
    "    asm(\"sub.rn.f16x2 %0, %1, %2;\" : \"=r\"(d) : \"r\"(a), \"r\"(b));\n"
    "    return d;\n"
    "}\n"
    "/* Constant shift: right for s > 0, left for s < 0. */\n"
    "__device__ __forceinline__ u32 shr(u32 v, int s) { return s >= 0 ? v >> s : v << -s; }\n"
    "/* d += A·B, A 16x16 (4 regs of f16x2), B 16x8 (2 regs), d f32. */\n"
    "__device__ __forceinline__ void mma(float *d, const u32 *a, u32 b0, u32 b1) {\n"
    "    asm(\"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, \"\n"
    "        \"{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\"\n"
    "        : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
    "        : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b0), \"r\"(b1));\n"
    "}\n";

/* The spec's constants. */
static void emit_constants(sbuf *b, const qc_kernel_spec *s, const qc_cuda_layout *l, int kw) {
    int rtb = qc_cuda_row_tiles_per_block(s->bits);
    int period = s->group_size && s->group_size < QC_CUDA_KTILE ? s->group_size : QC_CUDA_KTILE;
    emit(b, "#define OUT %lld\n#define IN %lld\n#define BITS %d\n", (long long)s->out,
         (long long)s->in, s->bits);
    emit(b, "#define KT %lld /* K tiles of 256 packed columns */\n", (long long)l->k_tiles);
    emit(b, "#define RTB %d /* row tiles (16 rows) per block */\n#define KW %d /* warps */\n", rtb,
         kw);
    emit(b, "#define NG %lld\n#define GROUP %d\n#define PERIOD %d /* columns per scale */\n",
         (long long)l->n_groups, s->group_size, period);
    emit(b, "#define SZB %d\n#define RANK %d\n", l->sz_bytes, s->rank);
    emit(b, "#define CODES_OFF %zuull\n#define SZ_OFF %zuull\n#define PERM_OFF %zuull\n",
         l->codes, l->sz, l->perm);
    emit(b, "#define LRA_OFF %zuull\n#define LRB_OFF %zuull\n", l->lr_a, l->lr_b);
    emit(b, "#define ROWPTR_OFF %zuull\n#define COL_OFF %zuull\n", l->row_ptr, l->col);
    /* symmetric: every zero is 2^(bits-1); the f16 pair of 1024 + zero */
    unsigned zm = qc_f32_to_f16(1024.0f + (float)(1 << (s->bits - 1)));
    emit(b, "#define ZSYM 0x%08xu\n\n", zm * 0x10001u);
}

/* decode(c, P): pair P of a lane's codes as two f16 values 1024 + code, one
 * term per plane (cuda_pack.h: plane word m = P / n holds the pair at bit
 * w·(P mod n); its bits go to offset off of the code). */
static void emit_decode(sbuf *b, int bits) {
    int width[3], offset[3], np = qc_cuda_planes(bits, width, offset);
    emit(b, "__device__ __forceinline__ u32 decode(const u32 *c, int P) {\n");
    emit(b, "    u32 v = 0x64006400u;\n");
    for (int k = 0, ubase = 0; k < np; ubase += width[k], k++) {
        int n = 16 / width[k];
        unsigned mask = ((1u << width[k]) - 1) << offset[k];
        emit(b, "    v |= shr(c[%d + P / %d], %d * (P %% %d) - %d) & 0x%08xu;\n", 4 * ubase, n,
             width[k], n, offset[k], mask * 0x10001u);
    }
    emit(b, "    return v;\n}\n\n");
}

/* ldx2(k): f16 pair x[k], x[k+1] in packed column order (act-order gathers
 * through perm); past `in` reads 0 (k is even). */
static void emit_ldx(sbuf *b, const qc_kernel_spec *s) {
    emit(b, "__device__ __forceinline__ u32 ldx2(const u16 *__restrict__ x, "
            "const int *__restrict__ perm, int k, bool tail) {\n");
    if (s->act_order) {
        emit(b, "    if (!tail) {\n"
                "        u64 p = *(const u64 *)(perm + k);\n"
                "        return (u32)x[(u32)p] | (u32)x[(u32)(p >> 32)] << 16;\n"
                "    }\n"
                "    u32 lo = k < IN ? x[perm[k]] : 0, hi = k + 1 < IN ? x[perm[k + 1]] : 0;\n"
                "    return lo | hi << 16;\n");
    } else {
        emit(b, "    (void)perm;\n"
                "    if (!tail) return *(const u32 *)(x + k);\n"
                "    u32 lo = k < IN ? x[k] : 0, hi = k + 1 < IN ? x[k + 1] : 0;\n"
                "    return lo | hi << 16;\n");
    }
    emit(b, "}\n\n");
}

/* The main loop over this warp's K tiles, then the block's reduction and
 * the outlier and low-rank additions. */
static void emit_gemv(sbuf *b, const qc_kernel_spec *s, const char *name) {
    emit(b,
         "extern \"C\" __global__ void __launch_bounds__(KW * 32)\n"
         "%s(const u8 *__restrict__ w, const u16 *__restrict__ x, float *__restrict__ y,\n"
         "    const float *__restrict__ ws) {\n"
         "    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, "
         "q = lane & 3;\n"
         "    const long long rt0 = (long long)blockIdx.x * RTB;\n"
         "    const int *perm = (const int *)(w + PERM_OFF);\n"
         "    float acc[RTB][2] = {};\n"
         "    for (int kt = warp; kt < KT; kt += KW) {\n"
         "        u32 c[RTB][4 * BITS];\n"
         "#pragma unroll\n"
         "        for (int r = 0; r < RTB; r++) {\n"
         "            const u8 *base = w + CODES_OFF + ((rt0 + r) * KT + kt) * (BITS * 512ull) "
         "+ lane * 16;\n"
         "#pragma unroll\n"
         "            for (int u = 0; u < BITS; u++) ld_stream(base + u * 512, &c[r][4 * u]);\n"
         "        }\n"
         "        const bool tail = (IN %% 256) != 0 && kt == KT - 1;\n"
         "#pragma unroll\n"
         "        for (int pi = 0; pi < 256 / PERIOD; pi++) {\n"
         "            const int col0 = kt * 256 + pi * PERIOD;\n"
         "            if ((IN %% 256) != 0 && col0 >= IN) break;\n"
         "            const long long grp = %s;\n"
         "            float sc[RTB][2];\n"
         "            u32 zm[RTB][2];\n"
         "#pragma unroll\n"
         "            for (int r = 0; r < RTB; r++) {\n"
         "                const u8 *rec = w + SZ_OFF + (((rt0 + r) * NG + grp) * 8 + g) * SZB;\n"
         "                u32 sv = *(const u32 *)rec;\n"
         "                sc[r][0] = h2f(sv & 0xffff), sc[r][1] = h2f(sv >> 16);\n",
         name, s->group_size ? "col0 / GROUP" : "0");
    if (s->symmetric)
        emit(b, "                zm[r][0] = zm[r][1] = ZSYM;\n");
    else
        emit(b, "                u32 zv = *(const u32 *)(rec + 4);\n"
                "                zm[r][0] = (zv & 0xffff) * 0x10001u, zm[r][1] = (zv >> 16) * "
                "0x10001u;\n");
    emit(b, "            }\n"
            "            float d[RTB][4] = {};\n"
            "#pragma unroll\n"
            "            for (int jj = 0; jj < PERIOD / 16; jj++) {\n"
            "                const int j = pi * (PERIOD / 16) + jj, k0 = kt * 256 + j * 16;\n"
            "                u32 b0 = ldx2(x, perm, k0 + 2 * q, tail);\n"
            "                u32 b1 = ldx2(x, perm, k0 + 2 * q + 8, tail);\n"
            "#pragma unroll\n"
            "                for (int r = 0; r < RTB; r++) {\n"
            "                    u32 a[4];\n"
            "#pragma unroll\n"
            "                    for (int i = 0; i < 4; i++) a[i] = hsub2(decode(c[r], 4 * j + i), "
            "zm[r][i & 1]);\n"
            "                    mma(d[r], a, b0, b1);\n"
            "                }\n"
            "            }\n"
            "#pragma unroll\n"
            "            for (int r = 0; r < RTB; r++) {\n"
            "                acc[r][0] += sc[r][0] * d[r][0];\n"
            "                acc[r][1] += sc[r][1] * d[r][2];\n"
            "            }\n"
            "        }\n"
            "    }\n"
            "    /* the four lanes of a quad hold equal sums (B's columns are all x) */\n"
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
    if (s->outliers)
        emit(b, "        const int *row_ptr = (const int *)(w + ROWPTR_OFF);\n"
                "        const int *col = (const int *)(w + COL_OFF);\n"
                "        const u64 nnz = *(const u64 *)(w + 16);\n"
                "        const u16 *val = (const u16 *)(w + ((COL_OFF + 4 * nnz + 255) & "
                "~255ull));\n"
                "        for (int k = row_ptr[o]; k < row_ptr[o + 1]; k++) sum += h2f(val[k]) * "
                "h2f(x[col[k]]);\n");
    if (s->rank)
        emit(b, "        const u16 *lra = (const u16 *)(w + LRA_OFF) + o * RANK;\n"
                "        for (int k = 0; k < RANK; k++) sum += h2f(lra[k]) * ws[k];\n");
    else
        emit(b, "        (void)ws;\n");
    emit(b, "        y[o] = sum;\n"
            "    }\n"
            "}\n");
}

/* t = B·x for the low-rank correction: one block per rank index. */
static void emit_lrt(sbuf *b, const char *name) {
    emit(b,
         "\nextern \"C\" __global__ void __launch_bounds__(256)\n"
         "%s(const u8 *__restrict__ w, const u16 *__restrict__ x, float *__restrict__ ws) {\n"
         "    const u16 *row = (const u16 *)(w + LRB_OFF) + (long long)blockIdx.x * IN;\n"
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

int qc_cuda_src_gemv(const qc_kernel_spec *s, qc_cuda_kernel *k, qc_err *err) {
    memset(k, 0, sizeof *k);
    qc_cuda_layout l;
    if (qc_cuda_layout_get(s, 0, &l, err)) return -1;
    char id[96];
    if (qc_kernel_spec_id(s, id, sizeof id) < 0) return qc_err_set(err, "CUDA codegen: spec id");
    snprintf(k->gemv, sizeof k->gemv, "qck_%s_cuda_gemv", id);
    if (s->rank) snprintf(k->lrt, sizeof k->lrt, "qck_%s_cuda_lrt", id);
    int kw = l.k_tiles < 8 ? (int)l.k_tiles : 8;
    int rtb = qc_cuda_row_tiles_per_block(s->bits);
    k->grid = (unsigned)(l.row_tiles / rtb);
    k->block = 32u * (unsigned)kw;
    k->lrt_grid = (unsigned)s->rank;
    k->lrt_block = s->rank ? 256 : 0;
    k->ws_floats = (size_t)s->rank;

    sbuf b = {0};
    emit(&b, "/* quantc: decode GEMV for kernel spec %s (generated by codegen/cuda_src.c) */\n",
         id);
    emit_constants(&b, s, &l, kw);
    emit(&b, "%s\n", prelude);
    emit_decode(&b, s->bits);
    emit_ldx(&b, s);
    emit_gemv(&b, s, k->gemv);
    if (s->rank) emit_lrt(&b, k->lrt);
    if (b.oom) {
        free(b.p);
        return qc_err_set(err, "CUDA codegen: out of memory");
    }
    k->src = b.p;
    k->src_len = b.n;
    return 0;
}

void qc_cuda_kernel_free(qc_cuda_kernel *k) {
    free(k->src);
    memset(k, 0, sizeof *k);
}
