/* LLVM IR emission of the CPU kernels (see cpu_ir.h; packed layout: pack.h).
 * The generator mirrors the emitted code: prologue, row loop, unit loop
 * over packed tiles (straight-line inside a unit), group epilogues. Loop
 * variables and carried accumulators live in allocas that mem2reg turns
 * into SSA. */
#if QC_HAVE_LLVM
#include "cpu_ir.h"

#include "../compiler/hadamard.h"
#include "pack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cg {
    LLVMContextRef C;
    LLVMModuleRef M;
    LLVMBuilderRef B, AB; /* code, allocas (before the entry block's branch) */
    LLVMValueRef fn;
    const qc_kernel_spec *s;
    qc_pack_layout L; /* offsets valid up to the CSR columns (nnz = 0) */
    qc_kernel_ws W;
    int nch, widths[3];
    LLVMTypeRef i8, i16, i32, i64, f32, v8f32, v8i32, p8, pf32;
    LLVMValueRef fma_v, fma_s, prescale; /* intrinsics, gemv's x scale table */
    int vector_f16;                      /* <8 x half> -> <8 x float> is one instruction */
    LLVMTypeRef fma_v_ty, fma_s_ty;
    /* online Hadamard (emit_hadamard): base order p, block m = n / p, the
     * p × p base (±1, a constant global), the scale 1/sqrt(n) */
    int hp, hm;
    LLVMValueRef hbase;
    float hscale;
    /* AVX-512 VNNI gemv (vnni_row) */
    int vnni;
    LLVMTypeRef v16f32, v16i32, v64i8, dp_ty, ms_ty, ml_ty, fma16_ty, fabs16_ty, rint16_ty,
        fpsat16_ty;
    LLVMValueRef dp, ms, ml, fma16, fabs16, rint16, fpsat16;
} cg;

static LLVMValueRef ci64(cg *g, int64_t v) {
    return LLVMConstInt(g->i64, (unsigned long long)v, 1);
}

static LLVMValueRef ci32(cg *g, int64_t v) {
    return LLVMConstInt(g->i32, (unsigned long long)v, 1);
}

static LLVMValueRef cf32(cg *g, double v) {
    return LLVMConstReal(g->f32, v);
}

static LLVMValueRef splat_c(LLVMValueRef c) {
    LLVMValueRef e[8];
    for (int i = 0; i < 8; i++)
        e[i] = c;
    return LLVMConstVector(e, 8);
}

static LLVMValueRef splat(cg *g, LLVMValueRef v) {
    LLVMValueRef one =
        LLVMBuildInsertElement(g->B, LLVMGetUndef(LLVMVectorType(g->f32, 1)), v, ci32(g, 0), "");
    LLVMValueRef zero[8];
    for (int i = 0; i < 8; i++)
        zero[i] = ci32(g, 0);
    return LLVMBuildShuffleVector(g->B, one, one, LLVMConstVector(zero, 8), "splat");
}

static LLVMValueRef var(cg *g, LLVMTypeRef t, const char *name) {
    return LLVMBuildAlloca(g->AB, t, name);
}

static LLVMValueRef ld(cg *g, LLVMTypeRef t, LLVMValueRef p) {
    LLVMValueRef v = LLVMBuildLoad2(g->B, t, p, "");
    return v;
}

/* Pointer to element idx (i64) of type t at byte pointer base + off. */
static LLVMValueRef at(cg *g, LLVMValueRef base8, LLVMValueRef off, LLVMTypeRef t,
                       LLVMValueRef idx) {
    LLVMValueRef p = LLVMBuildGEP2(g->B, g->i8, base8, &off, 1, "");
    p = LLVMBuildBitCast(g->B, p, LLVMPointerType(t, 0), "");
    return idx ? LLVMBuildGEP2(g->B, t, p, &idx, 1, "") : p;
}

/* Unaligned load of t at byte pointer base + off. */
static LLVMValueRef load_bytes(cg *g, LLVMTypeRef t, LLVMValueRef base8, LLVMValueRef off) {
    LLVMValueRef v = LLVMBuildLoad2(g->B, t, at(g, base8, off, t, NULL), "");
    LLVMSetAlignment(v, 1);
    return v;
}

static LLVMValueRef fptr(cg *g, LLVMValueRef basef, LLVMValueRef idx) {
    return LLVMBuildGEP2(g->B, g->f32, basef, &idx, 1, "");
}

static LLVMValueRef vload(cg *g, LLVMValueRef basef, LLVMValueRef idx) {
    LLVMValueRef p = LLVMBuildBitCast(g->B, fptr(g, basef, idx), LLVMPointerType(g->v8f32, 0), "");
    LLVMValueRef v = LLVMBuildLoad2(g->B, g->v8f32, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}

static void vstore(cg *g, LLVMValueRef v, LLVMValueRef basef, LLVMValueRef idx) {
    LLVMValueRef p = LLVMBuildBitCast(g->B, fptr(g, basef, idx), LLVMPointerType(g->v8f32, 0), "");
    LLVMSetAlignment(LLVMBuildStore(g->B, v, p), 4);
}

static LLVMValueRef add(cg *g, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildAdd(g->B, a, b, "");
}

static LLVMValueRef mul(cg *g, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildMul(g->B, a, b, "");
}

/* a·b + c, fused where the target has FMA (llvm.fmuladd). */
static LLVMValueRef fma_v(cg *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef args[3] = {a, b, c};
    return LLVMBuildCall2(g->B, g->fma_v_ty, g->fma_v, args, 3, "");
}

static LLVMValueRef fma_s(cg *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef args[3] = {a, b, c};
    return LLVMBuildCall2(g->B, g->fma_s_ty, g->fma_s, args, 3, "");
}

/* f16 bits (i16) to f32 without a libcall or a float operation on a
 * subnormal (so MXCSR.DAZ cannot change it): normal halves by rebiasing the
 * exponent ((em << 13) + (127 − 15) << 23), subnormal ones as em·2^-24 (an
 * exact sitofp and multiply); not Inf/NaN, which scales never are. */
static LLVMValueRef h2f(cg *g, LLVMValueRef h) {
    LLVMValueRef u = LLVMBuildZExt(g->B, h, g->i32, "");
    LLVMValueRef em = LLVMBuildAnd(g->B, u, ci32(g, 0x7fff), "");
    LLVMValueRef sign =
        LLVMBuildShl(g->B, LLVMBuildAnd(g->B, u, ci32(g, 0x8000), ""), ci32(g, 16), "");
    LLVMValueRef norm = add(g, LLVMBuildShl(g->B, em, ci32(g, 13), ""), ci32(g, 112 << 23));
    LLVMValueRef sub =
        LLVMBuildFMul(g->B, LLVMBuildSIToFP(g->B, em, g->f32, ""), cf32(g, 0x1p-24), "");
    LLVMValueRef is_sub = LLVMBuildICmp(g->B, LLVMIntULT, em, ci32(g, 0x400), "");
    LLVMValueRef bits =
        LLVMBuildSelect(g->B, is_sub, LLVMBuildBitCast(g->B, sub, g->i32, ""), norm, "");
    return LLVMBuildBitCast(g->B, LLVMBuildOr(g->B, bits, sign, ""), g->f32, "");
}

static LLVMValueRef load_h2f(cg *g, LLVMValueRef base8, LLVMValueRef off) {
    return h2f(g, load_bytes(g, g->i16, base8, off));
}

static LLVMValueRef load_i32_sext(cg *g, LLVMValueRef base8, LLVMValueRef off) {
    return LLVMBuildSExt(g->B, load_bytes(g, g->i32, base8, off), g->i64, "");
}

/* Sum of the 8 lanes in a fixed tree order. */
static LLVMValueRef hsum(cg *g, LLVMValueRef v) {
    LLVMValueRef m[4];
    for (int i = 0; i < 4; i++)
        m[i] = ci32(g, i);
    LLVMValueRef lo = LLVMBuildShuffleVector(g->B, v, v, LLVMConstVector(m, 4), "");
    for (int i = 0; i < 4; i++)
        m[i] = ci32(g, 4 + i);
    LLVMValueRef hi = LLVMBuildShuffleVector(g->B, v, v, LLVMConstVector(m, 4), "");
    LLVMValueRef s4 = LLVMBuildFAdd(g->B, lo, hi, "");
    m[0] = ci32(g, 0), m[1] = ci32(g, 1);
    lo = LLVMBuildShuffleVector(g->B, s4, s4, LLVMConstVector(m, 2), "");
    m[0] = ci32(g, 2), m[1] = ci32(g, 3);
    hi = LLVMBuildShuffleVector(g->B, s4, s4, LLVMConstVector(m, 2), "");
    LLVMValueRef s2 = LLVMBuildFAdd(g->B, lo, hi, "");
    return LLVMBuildFAdd(g->B, LLVMBuildExtractElement(g->B, s2, ci32(g, 0), ""),
                         LLVMBuildExtractElement(g->B, s2, ci32(g, 1), ""), "");
}

/* Loops: for (i = start; i < end; i += step) with i in an alloca. */
typedef struct loop {
    LLVMValueRef var;
    LLVMBasicBlockRef cond, exit;
    int64_t step;
} loop;

static LLVMValueRef loop_begin(cg *g, loop *l, LLVMValueRef start, LLVMValueRef end, int64_t step) {
    l->var = var(g, g->i64, "i");
    l->step = step;
    LLVMBuildStore(g->B, start, l->var);
    l->cond = LLVMAppendBasicBlockInContext(g->C, g->fn, "cond");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->C, g->fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(g->C, g->fn, "exit");
    LLVMBuildBr(g->B, l->cond);
    LLVMPositionBuilderAtEnd(g->B, l->cond);
    LLVMValueRef i = ld(g, g->i64, l->var);
    LLVMBuildCondBr(g->B, LLVMBuildICmp(g->B, LLVMIntSLT, i, end, ""), body, l->exit);
    LLVMPositionBuilderAtEnd(g->B, body);
    return i;
}

static void loop_end(cg *g, loop *l, LLVMValueRef i) {
    LLVMBuildStore(g->B, add(g, i, ci64(g, l->step)), l->var);
    LLVMBuildBr(g->B, l->cond);
    LLVMPositionBuilderAtEnd(g->B, l->exit);
}

/* Where slot j's code sits in its lane's stream words (pack.h), and how
 * gemv extracts it: X_LOW (and), X_MASK (and in place: code·2^shift),
 * X_TOP (shift: the code ends its word), X_SHIFT
 * (shift and and), X_STRADDLE (two words). */
enum { X_LOW, X_MASK, X_TOP, X_SHIFT, X_STRADDLE };
typedef struct slot_pos {
    int kind, word, shift;
} slot_pos;

static slot_pos slot_at(int bits, int j) {
    slot_pos r = {X_MASK, j * bits / 32, j * bits % 32};
    int word_bits = 8 * bits - 32 * r.word < 32 ? 8 * bits - 32 * r.word : 32;
    if (bits <= 4 && j >= 4 && j < 7) {
        /* codes 4..6 from word 2 = word 0 >> 4·bits: slots 4..6 reuse the
         * masks of slots 0..2 (fewer constants held in registers) */
        r.word = 2;
        r.shift = (j - 4) * bits;
        r.kind = r.shift ? X_MASK : X_LOW;
        return r;
    }
    if (r.shift + bits > 32)
        r.kind = X_STRADDLE;
    else if (r.shift + bits == word_bits)
        r.kind = X_TOP;
    else if (r.shift == 0)
        r.kind = X_LOW;
    else if (r.shift + bits > 31) /* sitofp would see the sign bit */
        r.kind = X_SHIFT;
    return r;
}

/* gemv's multiplier of x for slot j: 2^-shift undoes an in-place code's
 * 2^shift (code·2^s · x·2^-s = code·x exactly). */
static double slot_prescale(const cg *g, int j) {
    slot_pos p = slot_at(g->s->bits, j);
    return ldexp(1.0, p.kind == X_MASK ? -p.shift : 0);
}

/* The lanes' stream words of the tile at byte pointer tile8 (and word 2 =
 * word 0 >> 4·bits for bits <= 4, see slot_at). */
static void tile_words(cg *g, LLVMValueRef tile8, LLVMValueRef words[3]) {
    words[0] = words[1] = words[2] = NULL;
    int b = 0;
    for (int k = 0; k < g->nch; k++) {
        int K = g->widths[k];
        LLVMTypeRef t = LLVMVectorType(LLVMIntTypeInContext(g->C, 8 * (unsigned)K), 8);
        LLVMValueRef v = load_bytes(g, t, tile8, ci64(g, 8 * b));
        if (K < 4) v = LLVMBuildZExt(g->B, v, g->v8i32, "");
        int w = b / 4, sh = 8 * (b - 4 * w);
        if (sh) v = LLVMBuildShl(g->B, v, splat_c(ci32(g, sh)), "");
        words[w] = words[w] ? LLVMBuildOr(g->B, words[w], v, "") : v;
        b += K;
    }
    if (g->s->bits <= 4)
        words[2] = LLVMBuildLShr(g->B, words[0], splat_c(ci32(g, 4 * g->s->bits)), "");
}

/* Slot j's 8 codes as i32 lanes: exact, or (exact = 0, X_MASK) code·2^shift,
 * which gemv compensates in its pre-scaled x. */
static LLVMValueRef slot_codes(cg *g, LLVMValueRef words[3], int j, int exact) {
    int bits = g->s->bits, mask = (1 << bits) - 1;
    slot_pos p = slot_at(bits, j);
    if (exact && p.kind == X_MASK) p.kind = X_SHIFT;
    LLVMValueRef w = words[p.word];
    switch (p.kind) {
    case X_LOW:
        return LLVMBuildAnd(g->B, w, splat_c(ci32(g, mask)), "");
    case X_MASK:
        return LLVMBuildAnd(g->B, w, splat_c(ci32(g, (int64_t)mask << p.shift)), "");
    case X_SHIFT:
        w = LLVMBuildLShr(g->B, w, splat_c(ci32(g, p.shift)), "");
        return LLVMBuildAnd(g->B, w, splat_c(ci32(g, mask)), "");
    case X_TOP:
        return LLVMBuildLShr(g->B, w, splat_c(ci32(g, p.shift)), "");
    default: {
        int lo_bits = 32 - p.shift;
        LLVMValueRef lo = LLVMBuildLShr(g->B, w, splat_c(ci32(g, p.shift)), "");
        LLVMValueRef hi = LLVMBuildAnd(g->B, words[p.word + 1],
                                       splat_c(ci32(g, (1 << (bits - lo_bits)) - 1)), "");
        hi = LLVMBuildShl(g->B, hi, splat_c(ci32(g, lo_bits)), "");
        return LLVMBuildOr(g->B, lo, hi, "");
    }
    }
}

#define PREFETCH 1024 /* bytes; 512..4096 measured within noise on a Xeon */

/* A read prefetch of the cache line at byte pointer p (never faults). */
static void prefetch(cg *g, LLVMValueRef p) {
    unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
    LLVMTypeRef pt = g->p8;
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(g->M, id, &pt, 1);
    LLVMValueRef args[4] = {p, ci32(g, 0), ci32(g, 3), ci32(g, 1)};
    LLVMBuildCall2(g->B, LLVMIntrinsicGetType(g->C, id, &pt, 1), f, args, 4, "");
}

/* Columns per unrolled unit: whole groups and whole tiles. */
static int64_t unit_cols(const qc_kernel_spec *s) {
    if (!s->group_size) return 128;
    int64_t a = s->group_size, b = 64;
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return (int64_t)s->group_size / a * 64;
}

/* One output row's walk over its packed codes: a loop over full units, then
 * the valid slots left (the tail), both through range(). */
typedef struct row_ctx {
    int gemm;                            /* 0: gemv dot product, 1: dequantize */
    LLVMValueRef rowc, rows, rowz;       /* byte pointers: codes, scales, zeros of the row */
    LLVMValueRef xs, xsum;               /* gemv: pre-scaled x, group sums of x */
    LLVMValueRef racc[2], corr, pacc[4]; /* gemv allocas: group / per-channel sums */
    LLVMValueRef srow;                   /* gemv: the row's scales as f32 */
    LLVMValueRef dst;                    /* gemm: f32 row in packed order */
    LLVMValueRef racc16[2], pacc16[2];   /* VNNI gemv allocas (<16 x float>) */
} row_ctx;

static LLVMValueRef group_scale(cg *g, row_ctx *r, LLVMValueRef gi) {
    return load_h2f(g, r->rows, mul(g, gi, ci64(g, 2)));
}

static LLVMValueRef group_zero(cg *g, row_ctx *r, LLVMValueRef gi) {
    if (g->s->symmetric) return cf32(g, (double)(1 << (g->s->bits - 1)));
    return LLVMBuildUIToFP(g->B, load_bytes(g, g->i8, r->rowz, gi), g->f32, "");
}

/* (a0 + a1) + (a2 + a3), fewer when the group has fewer slots. */
static LLVMValueRef tree(cg *g, LLVMValueRef *a, int n) {
    LLVMValueRef l = n > 1 ? LLVMBuildFAdd(g->B, a[0], a[1], "") : a[0];
    if (n < 3) return l;
    LLVMValueRef h = n > 3 ? LLVMBuildFAdd(g->B, a[2], a[3], "") : a[2];
    return LLVMBuildFAdd(g->B, l, h, "");
}

/* gemv group epilogue: racc += scale·Σcode·x, with the scale from the row
 * prologue (gemv_row_scales). */
static void gemv_group_end(cg *g, row_ctx *r, LLVMValueRef gi, LLVMValueRef t, int parity) {
    LLVMValueRef ra = ld(g, g->v8f32, r->racc[parity]);
    LLVMValueRef sc = ld(g, g->f32, fptr(g, r->srow, gi));
    LLVMBuildStore(g->B, fma_v(g, splat(g, sc), t, ra), r->racc[parity]);
}

/* gemv row prologue: srow[g] = scale_g and
 * corr = Σ_g scale_g·zero_g·Σx_g, eight groups per vector where f16 vectors
 * convert natively (F16C, NEON), the rest one by one. */
static void gemv_row_scales(cg *g, row_ctx *r) {
    const qc_kernel_spec *s = g->s;
    int64_t ng = g->L.n_groups, nv = g->vector_f16 ? (ng + 7) / 8 : 0;
    LLVMValueRef cv = splat_c(cf32(g, 0));
    LLVMTypeRef v8h = LLVMVectorType(LLVMHalfTypeInContext(g->C), 8);
    LLVMTypeRef v8i8 = LLVMVectorType(g->i8, 8);
    for (int64_t b = 0; b < nv; b++) {
        LLVMValueRef h = load_bytes(g, v8h, r->rows, ci64(g, 16 * b));
        LLVMValueRef sc = LLVMBuildFPExt(g->B, h, g->v8f32, "");
        vstore(g, sc, r->srow, ci64(g, 8 * b));
        LLVMValueRef z = splat_c(cf32(g, (double)(1 << (s->bits - 1))));
        if (!s->symmetric)
            z = LLVMBuildUIToFP(g->B, load_bytes(g, v8i8, r->rowz, ci64(g, 8 * b)), g->v8f32, "");
        LLVMValueRef sz = LLVMBuildFMul(g->B, sc, z, "");
        LLVMValueRef t = LLVMBuildFMul(g->B, sz, vload(g, r->xsum, ci64(g, 8 * b)), "");
        if (8 * b + 8 > ng) { /* lanes past the row's last group (pack.h slack) */
            LLVMValueRef keep[8];
            for (int i = 0; i < 8; i++)
                keep[i] = LLVMConstInt(LLVMInt1TypeInContext(g->C), 8 * b + i < ng, 0);
            t = LLVMBuildSelect(g->B, LLVMConstVector(keep, 8), t, splat_c(cf32(g, 0)), "");
        }
        cv = LLVMBuildFAdd(g->B, cv, t, "");
    }
    LLVMValueRef corr = hsum(g, cv);
    for (int64_t gi = nv * 8; gi < ng; gi++) {
        LLVMValueRef sc = group_scale(g, r, ci64(g, gi));
        LLVMBuildStore(g->B, sc, fptr(g, r->srow, ci64(g, gi)));
        LLVMValueRef sz = LLVMBuildFMul(g->B, sc, group_zero(g, r, ci64(g, gi)), "");
        corr = fma_s(g, sz, ld(g, g->f32, fptr(g, r->xsum, ci64(g, gi))), corr);
    }
    LLVMBuildStore(g->B, corr, r->corr);
}

/* n slots starting at tile t0 (a group boundary): gemv accumulates, gemm
 * writes scale·(code − zero) to dst. */
static void row_range(cg *g, row_ctx *r, LLVMValueRef t0, int64_t n) {
    const qc_kernel_spec *s = g->s;
    int64_t gslots = s->group_size / 8; /* 0: per-channel */
    LLVMValueRef words[3] = {0}, acc[4] = {0}, sc = NULL, zero = NULL;
    LLVMValueRef slot0 = mul(g, t0, ci64(g, 8));
    LLVMValueRef gbase = gslots ? LLVMBuildUDiv(g->B, slot0, ci64(g, gslots), "") : ci64(g, 0);
    int parity = 0;
    if (!gslots && !r->gemm)
        for (int a = 0; a < 4; a++)
            acc[a] = ld(g, g->v8f32, r->pacc[a]);
    for (int64_t k = 0; k < n; k++) {
        int j = (int)(k % 8);
        int64_t kg = gslots ? k % gslots : k;
        LLVMValueRef gi = add(g, gbase, ci64(g, gslots ? k / gslots : 0));
        if (j == 0) {
            LLVMValueRef tile = mul(g, add(g, t0, ci64(g, k / 8)), ci64(g, 8 * s->bits));
            tile_words(g, LLVMBuildGEP2(g->B, g->i8, r->rowc, &tile, 1, ""), words);
            if (!r->gemm && (k / 8 * 8 * s->bits) % 64 == 0) {
                /* codes stream from memory: ask for the line PREFETCH bytes
                 * ahead (the rows are contiguous, so this runs into the next
                 * rows); hardware prefetchers restart at every page */
                LLVMValueRef ahead = add(g, tile, ci64(g, PREFETCH));
                prefetch(g, LLVMBuildGEP2(g->B, g->i8, r->rowc, &ahead, 1, ""));
            }
        }
        LLVMValueRef slot = add(g, slot0, ci64(g, k));
        LLVMValueRef cv = slot_codes(g, words, j, r->gemm);
        LLVMValueRef fv = LLVMBuildSIToFP(g->B, cv, g->v8f32, "");
        if (r->gemm) {
            if (kg == 0) {
                sc = splat(g, group_scale(g, r, gi));
                zero = splat(g, group_zero(g, r, gi));
            }
            fv = LLVMBuildFMul(g->B, LLVMBuildFSub(g->B, fv, zero, ""), sc, "");
            vstore(g, fv, r->dst, mul(g, slot, ci64(g, 8)));
            continue;
        }
        LLVMValueRef xv = vload(g, r->xs, mul(g, slot, ci64(g, 8)));
        int a = (int)(kg % 4);
        if (!gslots)
            acc[a] = fma_v(g, fv, xv, acc[a]);
        else
            acc[a] = kg < 4 ? LLVMBuildFMul(g->B, fv, xv, "") : fma_v(g, fv, xv, acc[a]);
        if (gslots && (kg == gslots - 1 || k == n - 1)) {
            gemv_group_end(g, r, gi, tree(g, acc, kg + 1 < 4 ? (int)kg + 1 : 4), parity);
            parity ^= 1;
        }
    }
    if (!gslots && !r->gemm)
        for (int a = 0; a < 4; a++)
            LLVMBuildStore(g->B, acc[a], r->pacc[a]);
}

static void row_walk(cg *g, row_ctx *r) {
    int64_t U = unit_cols(g->s), slots = g->W.in8 / 8;
    int64_t nu = slots * 8 / U, tail = slots - nu * U / 8;
    if (nu > 0) {
        loop l;
        LLVMValueRef u = loop_begin(g, &l, ci64(g, 0), ci64(g, nu), 1);
        row_range(g, r, mul(g, u, ci64(g, U / 64)), U / 8);
        loop_end(g, &l, u);
    }
    if (tail > 0) row_range(g, r, ci64(g, nu * U / 64), tail);
}

/* Byte offset of the CSR values: after nnz columns, 64-aligned (pack.h). */
static LLVMValueRef csr_val_off(cg *g, LLVMValueRef w) {
    LLVMValueRef nnz = load_i32_sext(g, w, ci64(g, (int64_t)g->L.row_ptr + 4 * g->s->out));
    LLVMValueRef end = add(g, ci64(g, (int64_t)g->L.col + 63), mul(g, nnz, ci64(g, 4)));
    return LLVMBuildAnd(g->B, end, ci64(g, ~(int64_t)63), "");
}

static LLVMValueRef new_fn(cg *g, const char *kind, LLVMTypeRef *params, int np, int linkage) {
    char name[160];
    if (linkage)
        snprintf(name, sizeof name, "qck_%s", kind); /* internal helper, unique per module */
    else
        qc_kernel_spec_symbol(g->s, kind, name, sizeof name);
    LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->C), params, (unsigned)np, 0);
    g->fn = LLVMAddFunction(g->M, name, ft);
    if (linkage) LLVMSetLinkage(g->fn, LLVMInternalLinkage);
    LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(g->C, "no-builtins", 11, "", 0));
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(g->C, nounwind, 0));
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(g->C, g->fn, "entry");
    LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(g->C, g->fn, "start");
    LLVMPositionBuilderAtEnd(g->B, entry);
    LLVMValueRef br = LLVMBuildBr(g->B, start);
    LLVMPositionBuilderBefore(g->AB, br);
    LLVMPositionBuilderAtEnd(g->B, start);
    return g->fn;
}

static void noalias(cg *g, int param) {
    unsigned k = LLVMGetEnumAttributeKindForName("noalias", 7);
    LLVMAddAttributeAtIndex(g->fn, (unsigned)param + 1, LLVMCreateEnumAttribute(g->C, k, 0));
}

/* x[perm[p]] (x[p] without act-order) for p < in. */
static LLVMValueRef x_packed(cg *g, LLVMValueRef w, LLVMValueRef x, LLVMValueRef p) {
    if (g->s->act_order)
        p = load_i32_sext(g, w, add(g, ci64(g, (int64_t)g->L.perm), mul(g, p, ci64(g, 4))));
    return ld(g, g->f32, fptr(g, x, p));
}

/* t[k] = Σ_c B[k][c]·x[c] for k < rank, in a fixed order (8 lane sums, then
 * the columns left). */
static void lowrank_bx(cg *g, LLVMValueRef w, LLVMValueRef x, LLVMValueRef t) {
    const qc_kernel_spec *s = g->s;
    /* 8 columns per step where f16 vectors convert natively, then the rest */
    int64_t n8 = g->vector_f16 ? s->in / 8 * 8 : 0;
    LLVMTypeRef v8h = LLVMVectorType(LLVMHalfTypeInContext(g->C), 8);
    LLVMValueRef acc = var(g, g->f32, "bx"), vacc = var(g, g->v8f32, "bxv");
    loop lk, lv, lc;
    LLVMValueRef k = loop_begin(g, &lk, ci64(g, 0), ci64(g, s->rank), 1);
    LLVMValueRef row = add(g, ci64(g, (int64_t)g->L.lr_b), mul(g, k, ci64(g, 2 * s->in)));
    LLVMBuildStore(g->B, splat_c(cf32(g, 0)), vacc);
    if (n8) {
        LLVMValueRef c = loop_begin(g, &lv, ci64(g, 0), ci64(g, n8), 8);
        LLVMValueRef h = load_bytes(g, v8h, w, add(g, row, mul(g, c, ci64(g, 2))));
        LLVMValueRef b = LLVMBuildFPExt(g->B, h, g->v8f32, "");
        LLVMBuildStore(g->B, fma_v(g, b, vload(g, x, c), ld(g, g->v8f32, vacc)), vacc);
        loop_end(g, &lv, c);
    }
    LLVMBuildStore(g->B, hsum(g, ld(g, g->v8f32, vacc)), acc);
    LLVMValueRef c = loop_begin(g, &lc, ci64(g, n8), ci64(g, s->in), 1);
    LLVMValueRef b = load_h2f(g, w, add(g, row, mul(g, c, ci64(g, 2))));
    LLVMBuildStore(g->B, fma_s(g, b, ld(g, g->f32, fptr(g, x, c)), ld(g, g->f32, acc)), acc);
    loop_end(g, &lc, c);
    LLVMBuildStore(g->B, ld(g, g->f32, acc), fptr(g, t, k));
    loop_end(g, &lk, k);
}

/* res += Σ_k A[o][k]·t[k]. */
static LLVMValueRef lowrank_at(cg *g, LLVMValueRef w, LLVMValueRef o, LLVMValueRef t,
                               LLVMValueRef res) {
    int r = g->s->rank;
    LLVMValueRef acc = var(g, g->f32, "at");
    LLVMBuildStore(g->B, res, acc);
    loop l;
    LLVMValueRef k = loop_begin(g, &l, ci64(g, 0), ci64(g, r), 1);
    LLVMValueRef ai = add(g, mul(g, o, ci64(g, r)), k);
    LLVMValueRef a = load_h2f(g, w, add(g, ci64(g, (int64_t)g->L.lr_a), mul(g, ai, ci64(g, 2))));
    LLVMBuildStore(g->B, fma_s(g, a, ld(g, g->f32, fptr(g, t, k)), ld(g, g->f32, acc)), acc);
    loop_end(g, &l, k);
    return ld(g, g->f32, acc);
}

/* dst = H_n·src / sqrt(n) (n = in, the spec's online Hadamard) as
 * compiler/hadamard.c defines it: viewing the vector as p blocks of m, a
 * fast Walsh–Hadamard transform of each block (in tmp; stage by stage over
 * all blocks, the same butterflies in the same order per element), then
 * dst[a·m + j] = Σ_b (base[a][b]·scale)·tmp[b·m + j] (j innermost, so the
 * loop vectorizes). src, tmp and dst are n floats each, distinct. */
static void emit_hadamard(cg *g, LLVMValueRef src, LLVMValueRef tmp, LLVMValueRef dst) {
    int64_t n = g->s->in, p = g->hp, m = g->hm;
    loop lc, la, lk, lj, lb;
    LLVMValueRef i = loop_begin(g, &lc, ci64(g, 0), ci64(g, n), 1);
    LLVMBuildStore(g->B, ld(g, g->f32, fptr(g, src, i)), fptr(g, tmp, i));
    loop_end(g, &lc, i);
    for (int64_t len = 1, sh = 0; len < m; len <<= 1, sh++) {
        LLVMValueRef a = loop_begin(g, &la, ci64(g, 0), ci64(g, p), 1);
        LLVMValueRef blk = fptr(g, tmp, mul(g, a, ci64(g, m)));
        LLVMValueRef k = loop_begin(g, &lk, ci64(g, 0), ci64(g, m / 2), 1);
        LLVMValueRef hi = LLVMBuildShl(g->B, LLVMBuildLShr(g->B, k, ci64(g, sh), ""),
                                       ci64(g, sh + 1), "");
        LLVMValueRef j0 = add(g, hi, LLVMBuildAnd(g->B, k, ci64(g, len - 1), ""));
        LLVMValueRef p0 = fptr(g, blk, j0), p1 = fptr(g, blk, add(g, j0, ci64(g, len)));
        LLVMValueRef x0 = ld(g, g->f32, p0), x1 = ld(g, g->f32, p1);
        LLVMBuildStore(g->B, LLVMBuildFAdd(g->B, x0, x1, ""), p0);
        LLVMBuildStore(g->B, LLVMBuildFSub(g->B, x0, x1, ""), p1);
        loop_end(g, &lk, k);
        loop_end(g, &la, a);
    }
    LLVMValueRef a = loop_begin(g, &la, ci64(g, 0), ci64(g, p), 1);
    LLVMValueRef drow = fptr(g, dst, mul(g, a, ci64(g, m)));
    LLVMValueRef j = loop_begin(g, &lj, ci64(g, 0), ci64(g, m), 1);
    LLVMBuildStore(g->B, cf32(g, 0), fptr(g, drow, j));
    loop_end(g, &lj, j);
    LLVMValueRef b = loop_begin(g, &lb, ci64(g, 0), ci64(g, p), 1);
    LLVMValueRef idx[2] = {ci64(g, 0), add(g, mul(g, a, ci64(g, p)), b)};
    LLVMValueRef c = ld(g, g->f32,
                        LLVMBuildGEP2(g->B, LLVMArrayType(g->f32, (unsigned)(p * p)), g->hbase,
                                      idx, 2, ""));
    c = LLVMBuildFMul(g->B, c, cf32(g, g->hscale), "");
    LLVMValueRef trow = fptr(g, tmp, mul(g, b, ci64(g, m)));
    j = loop_begin(g, &lj, ci64(g, 0), ci64(g, m), 1);
    LLVMValueRef dp = fptr(g, drow, j);
    LLVMBuildStore(g->B, fma_s(g, c, ld(g, g->f32, fptr(g, trow, j)), ld(g, g->f32, dp)), dp);
    loop_end(g, &lj, j);
    loop_end(g, &lb, b);
    loop_end(g, &la, a);
}

/* gemv prologue: xs (pre-scaled, permuted, padded), xsum per group, B·x. */
static void gemv_prologue(cg *g, LLVMValueRef w, LLVMValueRef x, LLVMValueRef xs, LLVMValueRef xsum,
                          LLVMValueRef t) {
    const qc_kernel_spec *s = g->s;
    loop l;
    LLVMValueRef p = loop_begin(g, &l, ci64(g, 0), ci64(g, g->W.in8), 1);
    LLVMValueRef valid = LLVMBuildICmp(g->B, LLVMIntSLT, p, ci64(g, s->in), "");
    LLVMValueRef v = x_packed(g, w, x, LLVMBuildSelect(g->B, valid, p, ci64(g, 0), ""));
    v = LLVMBuildSelect(g->B, valid, v, cf32(g, 0), "");
    LLVMValueRef j = LLVMBuildAnd(g->B, LLVMBuildLShr(g->B, p, ci64(g, 3), ""), ci64(g, 7), "");
    LLVMValueRef idx[2] = {ci64(g, 0), j};
    LLVMTypeRef tab = LLVMArrayType(g->f32, 8);
    LLVMValueRef ps = ld(g, g->f32, LLVMBuildGEP2(g->B, tab, g->prescale, idx, 2, ""));
    LLVMBuildStore(g->B, LLVMBuildFMul(g->B, v, ps, ""), fptr(g, xs, p));
    loop_end(g, &l, p);

    int64_t G = s->group_size ? s->group_size : s->in, ng = g->L.n_groups;
    LLVMValueRef acc = var(g, g->f32, "xsum");
    loop lg, lc;
    LLVMValueRef gi = loop_begin(g, &lg, ci64(g, 0), ci64(g, ng), 1);
    LLVMBuildStore(g->B, cf32(g, 0), acc);
    LLVMValueRef c0 = mul(g, gi, ci64(g, G));
    LLVMValueRef c1 = add(g, c0, ci64(g, G));
    c1 = LLVMBuildSelect(g->B, LLVMBuildICmp(g->B, LLVMIntSLT, c1, ci64(g, s->in), ""), c1,
                         ci64(g, s->in), "");
    LLVMValueRef c = loop_begin(g, &lc, c0, c1, 1);
    LLVMBuildStore(g->B, LLVMBuildFAdd(g->B, ld(g, g->f32, acc), x_packed(g, w, x, c), ""), acc);
    loop_end(g, &lc, c);
    LLVMBuildStore(g->B, ld(g, g->f32, acc), fptr(g, xsum, gi));
    loop_end(g, &lg, gi);
    if (s->rank) lowrank_bx(g, w, x, t);
}

/* res += Σ_{k in row o} val[k]·x[col[k]] (CSR outliers). */
static LLVMValueRef outliers_dot(cg *g, LLVMValueRef w, LLVMValueRef o, LLVMValueRef x,
                                 LLVMValueRef res) {
    LLVMValueRef rp = ci64(g, (int64_t)g->L.row_ptr);
    LLVMValueRef a = load_i32_sext(g, w, add(g, rp, mul(g, o, ci64(g, 4))));
    LLVMValueRef b = load_i32_sext(g, w, add(g, rp, mul(g, add(g, o, ci64(g, 1)), ci64(g, 4))));
    LLVMValueRef voff = csr_val_off(g, w);
    LLVMValueRef acc = var(g, g->f32, "sp");
    LLVMBuildStore(g->B, res, acc);
    loop l;
    LLVMValueRef k = loop_begin(g, &l, a, b, 1);
    LLVMValueRef c = load_i32_sext(g, w, add(g, ci64(g, (int64_t)g->L.col), mul(g, k, ci64(g, 4))));
    LLVMValueRef v = load_h2f(g, w, add(g, voff, mul(g, k, ci64(g, 2))));
    LLVMBuildStore(g->B, fma_s(g, v, ld(g, g->f32, fptr(g, x, c)), ld(g, g->f32, acc)), acc);
    loop_end(g, &l, k);
    return ld(g, g->f32, acc);
}

static void row_pointers(cg *g, row_ctx *r, LLVMValueRef w, LLVMValueRef o) {
    LLVMValueRef off = add(g, ci64(g, (int64_t)g->L.codes), mul(g, o, ci64(g, g->L.row_bytes)));
    r->rowc = LLVMBuildGEP2(g->B, g->i8, w, &off, 1, "rowc");
    LLVMValueRef og = mul(g, o, ci64(g, g->L.n_groups));
    off = add(g, ci64(g, (int64_t)g->L.scales), mul(g, og, ci64(g, 2)));
    r->rows = LLVMBuildGEP2(g->B, g->i8, w, &off, 1, "rows");
    off = add(g, ci64(g, (int64_t)g->L.zeros), og);
    r->rowz = LLVMBuildGEP2(g->B, g->i8, w, &off, 1, "rowz");
}

/* ---- AVX-512 VNNI gemv (qc_cpu_ir_target.vnni) ----
 * x is quantized per 64-column tile to 16-bit fixed point, X = rint(x/xs_t)
 * with xs_t = max|x_t| / 32512, and split X = 256·hi + lo into signed bytes
 * (hi = floor((X + 128) / 256) in [−127, 127], lo in [−128, 127]); so
 * |x − xs_t·X| ≤ max|x_t| / 65024. Per tile: one masked load of the tile's
 * 8·bits code bytes; vpermb gathers lane l's bit stream (pack.h) into qword
 * l; vpmultishiftqb puts code j of lane l into byte 8l + j (masked to
 * `bits` bits); two vpdpbusd (u8 codes × s8 hi, × s8 lo, exact in i32) give
 * I = 256·I_hi + I_lo, which is exact and converted to f32 (|I| < 2^25) and
 * scaled by xs_t. Per group: y += scale_g·Σ_t xs_t·I_t − scale_g·zero_g·Σx_g
 * with Σx_g the sum of the same quantized x (Σ_t xs_t·ΣX_t). Needs whole
 * 64-column groups (or per-channel); 2..8 bits. */
#define VNNI_XMAX 32512.0 /* 127·256: hi stays within a signed byte */

static int use_vnni(const qc_cpu_ir_target *t, const qc_kernel_spec *s) {
    return t->vnni && s->bits >= 2 && s->bits <= 8 && s->group_size % 64 == 0;
}

static LLVMValueRef splat16(cg *g, LLVMValueRef s) {
    LLVMValueRef one = LLVMBuildInsertElement(g->B, LLVMGetUndef(g->v16f32), s, ci32(g, 0), "");
    return LLVMBuildShuffleVector(g->B, one, one, LLVMConstNull(g->v16i32), "");
}

/* Tile offset of byte b of lane l's bit stream (pack.h chunking). */
static int stream_byte_at(const cg *g, int l, int b) {
    for (int k = 0, sb = 0; k < g->nch; sb += g->widths[k], k++)
        if (b < sb + g->widths[k]) return 8 * sb + g->widths[k] * l + (b - sb);
    return 0;
}

/* Constant vector of n integers of type t. */
static LLVMValueRef const_ints(const int *v, int n, LLVMTypeRef t) {
    LLVMValueRef e[64];
    for (int i = 0; i < n; i++)
        e[i] = LLVMConstInt(t, (unsigned long long)v[i], 0);
    return LLVMConstVector(e, (unsigned)n);
}

static LLVMValueRef call_n(cg *g, LLVMTypeRef ft, LLVMValueRef f, LLVMValueRef *args, int n) {
    return LLVMBuildCall2(g->B, ft, f, args, (unsigned)n, "");
}

/* Byte pointer to the quantized x of tile t: [hi 64][lo 64], byte 8l + j
 * holding packed column 8j + l (the order the codes come out in). */
static LLVMValueRef vnni_xq(cg *g, row_ctx *r, LLVMValueRef t) {
    LLVMValueRef off = mul(g, t, ci64(g, 128));
    return LLVMBuildGEP2(g->B, g->i8, LLVMBuildBitCast(g->B, r->xs, g->p8, ""), &off, 1, "");
}

/* Per-tile x scales: after the quantized x (tiles·128 bytes = tiles·32
 * floats) in the xs region, which holds 64 floats per tile. */
static LLVMValueRef vnni_xt(cg *g, LLVMValueRef xs) {
    return fptr(g, xs, ci64(g, g->L.tiles * 32));
}

/* VNNI gemv prologue: per tile, xs_t and the bytes of X (zero-padded),
 * xsum[g] = Σ_t∈g xs_t·ΣX_t, then B·x. */
/* Lanes of a <16 x T> combined pairwise (halves, then quarters, ...) with
 * op: FADD (NaN propagates), FMAX (ordered greater-than select) or ADD. */
enum { R_FADD, R_FMAX, R_ADD };
static LLVMValueRef reduce16(cg *g, LLVMValueRef v, int op) {
    for (int n = 8; n >= 1; n /= 2) {
        int lo[8], hi[8];
        for (int i = 0; i < n; i++)
            lo[i] = i, hi[i] = n + i;
        LLVMValueRef u = LLVMGetUndef(LLVMTypeOf(v));
        LLVMValueRef a = LLVMBuildShuffleVector(g->B, v, u, const_ints(lo, n, g->i32), "");
        LLVMValueRef b = LLVMBuildShuffleVector(g->B, v, u, const_ints(hi, n, g->i32), "");
        v = op == R_FADD  ? LLVMBuildFAdd(g->B, a, b, "")
            : op == R_ADD ? LLVMBuildAdd(g->B, a, b, "")
                          : LLVMBuildSelect(g->B, LLVMBuildFCmp(g->B, LLVMRealOGT, a, b, ""), a, b, "");
    }
    return LLVMBuildExtractElement(g->B, v, ci32(g, 0), "");
}

static LLVMValueRef splat_n(cg *g, LLVMValueRef s, LLVMTypeRef vt) {
    LLVMValueRef one = LLVMBuildInsertElement(g->B, LLVMGetUndef(vt), s, ci32(g, 0), "");
    return LLVMBuildShuffleVector(g->B, one, one, LLVMConstNull(g->v16i32), "");
}

/* VNNI gemv prologue: per tile, xs_t and the bytes of X (zero-padded),
 * xsum[g] = Σ_t∈g xs_t·ΣX_t, then B·x. Vector code per tile: the tile's 64
 * x as four <16 x float>, max |x| (and nf = Σ 0·x, NaN when some x is not
 * finite: added to xs_t so that a non-finite x gives a non-finite y, as the
 * f32 kernels do), X, its bytes shuffled into the codes' order. */
static void gemv_prologue_vnni(cg *g, LLVMValueRef w, LLVMValueRef x, LLVMValueRef xs,
                               LLVMValueRef xsum, LLVMValueRef t) {
    const qc_kernel_spec *s = g->s;
    int64_t gt = s->group_size / 64; /* tiles per group, 0: one group */
    loop lz, lt;
    LLVMValueRef gi = loop_begin(g, &lz, ci64(g, 0), ci64(g, g->L.n_groups), 1);
    LLVMBuildStore(g->B, cf32(g, 0), fptr(g, xsum, gi));
    loop_end(g, &lz, gi);
    LLVMValueRef xt = vnni_xt(g, xs);
    LLVMValueRef tile = loop_begin(g, &lt, ci64(g, 0), ci64(g, g->L.tiles), 1);
    LLVMValueRef p0 = mul(g, tile, ci64(g, 64)), v[4], mv = NULL, nfv = NULL;
    for (int q = 0; q < 4; q++) {
        v[q] = LLVMGetUndef(g->v16f32);
        for (int i = 0; i < 16; i++) {
            LLVMValueRef p = add(g, p0, ci64(g, 16 * q + i));
            LLVMValueRef valid = LLVMBuildICmp(g->B, LLVMIntSLT, p, ci64(g, s->in), "");
            LLVMValueRef e = x_packed(g, w, x, LLVMBuildSelect(g->B, valid, p, ci64(g, 0), ""));
            e = LLVMBuildSelect(g->B, valid, e, cf32(g, 0), "");
            v[q] = LLVMBuildInsertElement(g->B, v[q], e, ci32(g, i), "");
        }
        LLVMValueRef av = call_n(g, g->fabs16_ty, g->fabs16, &v[q], 1);
        mv = mv ? LLVMBuildSelect(g->B, LLVMBuildFCmp(g->B, LLVMRealOGT, av, mv, ""), av, mv, "")
                : av;
        LLVMValueRef z = LLVMBuildFMul(g->B, v[q], LLVMConstNull(g->v16f32), "");
        nfv = nfv ? LLVMBuildFAdd(g->B, nfv, z, "") : z;
    }
    LLVMValueRef mx = reduce16(g, mv, R_FMAX), nf = reduce16(g, nfv, R_FADD);
    LLVMValueRef xsc = LLVMBuildFDiv(g->B, mx, cf32(g, VNNI_XMAX), "");
    xsc = LLVMBuildFAdd(g->B, xsc, nf, "");
    LLVMBuildStore(g->B, xsc, fptr(g, xt, tile));
    LLVMValueRef pos = LLVMBuildFCmp(g->B, LLVMRealOGT, mx, cf32(g, 0), "");
    LLVMValueRef inv = LLVMBuildSelect(
        g->B, pos, LLVMBuildFDiv(g->B, cf32(g, VNNI_XMAX), mx, ""), cf32(g, 0), "");
    LLVMValueRef invv = splat_n(g, inv, g->v16f32), isv = NULL, hb[4], lb[4];
    LLVMValueRef c128 = splat_n(g, ci32(g, 128), g->v16i32), c8 = splat_n(g, ci32(g, 8), g->v16i32);
    LLVMTypeRef v16i8 = LLVMVectorType(g->i8, 16);
    for (int q = 0; q < 4; q++) {
        LLVMValueRef e = LLVMBuildFMul(g->B, v[q], invv, "");
        e = call_n(g, g->rint16_ty, g->rint16, &e, 1);
        LLVMValueRef X = call_n(g, g->fpsat16_ty, g->fpsat16, &e, 1); /* NaN -> 0 */
        isv = isv ? LLVMBuildAdd(g->B, isv, X, "") : X;
        LLVMValueRef hi = LLVMBuildAShr(g->B, LLVMBuildAdd(g->B, X, c128, ""), c8, "");
        LLVMValueRef lo = LLVMBuildSub(g->B, X, LLVMBuildShl(g->B, hi, c8, ""), "");
        hb[q] = LLVMBuildTrunc(g->B, hi, v16i8, "");
        lb[q] = LLVMBuildTrunc(g->B, lo, v16i8, "");
    }
    /* columns c = 16q + i in order; byte b = 8l + j holds column 8j + l */
    int cat[32], ord[64];
    for (int i = 0; i < 32; i++)
        cat[i] = i;
    for (int b = 0; b < 64; b++)
        ord[b] = 8 * (b % 8) + b / 8;
    LLVMValueRef qp = vnni_xq(g, &(row_ctx){.xs = xs}, tile);
    for (int h = 0; h < 2; h++) {
        LLVMValueRef *y = h ? lb : hb;
        LLVMValueRef a = LLVMBuildShuffleVector(g->B, y[0], y[1], const_ints(cat, 32, g->i32), "");
        LLVMValueRef b = LLVMBuildShuffleVector(g->B, y[2], y[3], const_ints(cat, 32, g->i32), "");
        int cat64[64];
        for (int i = 0; i < 64; i++)
            cat64[i] = i;
        LLVMValueRef all = LLVMBuildShuffleVector(g->B, a, b, const_ints(cat64, 64, g->i32), "");
        all = LLVMBuildShuffleVector(g->B, all, LLVMGetUndef(g->v64i8), const_ints(ord, 64, g->i32),
                                     "");
        LLVMValueRef dst = LLVMBuildGEP2(g->B, g->i8, qp, (LLVMValueRef[]){ci64(g, 64 * h)}, 1, "");
        dst = LLVMBuildBitCast(g->B, dst, LLVMPointerType(g->v64i8, 0), "");
        LLVMSetAlignment(LLVMBuildStore(g->B, all, dst), 1);
    }
    LLVMValueRef is = reduce16(g, isv, R_ADD);
    LLVMValueRef ts = LLVMBuildFMul(g->B, xsc, LLVMBuildSIToFP(g->B, is, g->f32, ""), "");
    LLVMValueRef xp = fptr(g, xsum, gt ? LLVMBuildUDiv(g->B, tile, ci64(g, gt), "") : ci64(g, 0));
    LLVMBuildStore(g->B, LLVMBuildFAdd(g->B, ld(g, g->f32, xp), ts, ""), xp);
    loop_end(g, &lt, tile);
    if (s->rank) lowrank_bx(g, w, x, t);
}

/* acc[par] += xs_t·I_t for tile t (NULL acc: 0). */
static void vnni_tile(cg *g, row_ctx *r, LLVMValueRef tile, LLVMValueRef acc[2], int par) {
    int bits = g->s->bits, idx[64], ctl[64], mask[64];
    LLVMTypeRef i1 = LLVMInt1TypeInContext(g->C);
    LLVMValueRef mk[64];
    for (int i = 0; i < 64; i++) {
        mk[i] = LLVMConstInt(i1, i < 8 * bits, 0);
        idx[i] = i % 8 < bits ? stream_byte_at(g, i / 8, i % 8) : 0;
        ctl[i] = (i % 8) * bits;
        mask[i] = (1 << bits) - 1;
    }
    LLVMValueRef off = mul(g, tile, ci64(g, 8 * bits));
    LLVMValueRef p = LLVMBuildGEP2(g->B, g->i8, r->rowc, &off, 1, "");
    p = LLVMBuildBitCast(g->B, p, LLVMPointerType(g->v64i8, 0), "");
    LLVMValueRef args[4] = {p, ci32(g, 1), LLVMConstVector(mk, 64), LLVMConstNull(g->v64i8)};
    LLVMValueRef v = call_n(g, g->ml_ty, g->ml, args, 4);
    v = LLVMBuildShuffleVector(g->B, v, LLVMGetUndef(g->v64i8), const_ints(idx, 64, g->i32), "");
    LLVMValueRef ms[2] = {const_ints(ctl, 64, g->i8), v};
    v = call_n(g, g->ms_ty, g->ms, ms, 2);
    if (bits < 8) v = LLVMBuildAnd(g->B, v, const_ints(mask, 64, g->i8), "");
    v = LLVMBuildBitCast(g->B, v, g->v16i32, "");
    LLVMValueRef q = vnni_xq(g, r, tile), I[2];
    for (int h = 0; h < 2; h++) {
        LLVMValueRef d[3] = {LLVMConstNull(g->v16i32), v,
                             load_bytes(g, g->v16i32, q, ci64(g, 64 * h))};
        I[h] = call_n(g, g->dp_ty, g->dp, d, 3);
    }
    int eight[16];
    for (int i = 0; i < 16; i++)
        eight[i] = 8;
    LLVMValueRef it = add(g, LLVMBuildShl(g->B, I[0], const_ints(eight, 16, g->i32), ""), I[1]);
    LLVMValueRef f = LLVMBuildSIToFP(g->B, it, g->v16f32, "");
    LLVMValueRef xsv = splat16(g, ld(g, g->f32, fptr(g, vnni_xt(g, r->xs), tile)));
    LLVMValueRef fa[3] = {f, xsv, acc[par] ? acc[par] : LLVMConstNull(g->v16f32)};
    acc[par] = call_n(g, g->fma16_ty, g->fma16, fa, 3);
}

static LLVMValueRef sum2(cg *g, LLVMValueRef acc[2]) {
    if (!acc[1]) return acc[0];
    return LLVMBuildFAdd(g->B, acc[0], acc[1], "");
}

/* racc16 += scale_g·t */
static void vnni_group_end(cg *g, row_ctx *r, LLVMValueRef gi, LLVMValueRef t, int parity) {
    LLVMValueRef sv = splat16(g, ld(g, g->f32, fptr(g, r->srow, gi)));
    LLVMValueRef a[3] = {sv, t, ld(g, g->v16f32, r->racc16[parity])};
    LLVMBuildStore(g->B, call_n(g, g->fma16_ty, g->fma16, a, 3), r->racc16[parity]);
}

/* n tiles from tile t0 (a group boundary). */
static void vnni_range(cg *g, row_ctx *r, LLVMValueRef t0, int64_t n) {
    int bits = g->s->bits;
    int64_t gt = g->s->group_size / 64; /* tiles per group, 0: per-channel */
    LLVMValueRef acc[2] = {0};
    LLVMValueRef gbase = gt ? LLVMBuildUDiv(g->B, t0, ci64(g, gt), "") : NULL;
    if (!gt)
        for (int a = 0; a < 2; a++)
            acc[a] = ld(g, g->v16f32, r->pacc16[a]);
    int parity = 0;
    for (int64_t k = 0; k < n; k++) {
        LLVMValueRef tile = add(g, t0, ci64(g, k));
        if (k == 0 || (k * 8 * bits) / 64 != ((k - 1) * 8 * bits) / 64) {
            LLVMValueRef ahead = add(g, mul(g, tile, ci64(g, 8 * bits)), ci64(g, PREFETCH));
            prefetch(g, LLVMBuildGEP2(g->B, g->i8, r->rowc, &ahead, 1, ""));
        }
        vnni_tile(g, r, tile, acc, (int)(k % 2));
        if (gt && (k % gt == gt - 1 || k == n - 1)) {
            vnni_group_end(g, r, add(g, gbase, ci64(g, k / gt)), sum2(g, acc), parity);
            parity ^= 1;
            acc[0] = acc[1] = NULL;
        }
    }
    if (!gt)
        for (int a = 0; a < 2; a++)
            LLVMBuildStore(g->B, acc[a], r->pacc16[a]);
}

/* One row: units of whole groups (unit_cols), then the tiles left; returns
 * the row's 8-lane vector sum. */
static LLVMValueRef vnni_row(cg *g, row_ctx *r) {
    int64_t ut = unit_cols(g->s) / 64, tiles = g->L.tiles;
    int64_t nu = tiles / ut, tail = tiles - nu * ut;
    LLVMValueRef z = LLVMConstNull(g->v16f32);
    for (int p = 0; p < 2; p++)
        LLVMBuildStore(g->B, z, r->racc16[p]);
    if (!g->s->group_size)
        for (int a = 0; a < 2; a++)
            LLVMBuildStore(g->B, z, r->pacc16[a]);
    if (nu > 0) {
        loop l;
        LLVMValueRef u = loop_begin(g, &l, ci64(g, 0), ci64(g, nu), 1);
        vnni_range(g, r, mul(g, u, ci64(g, ut)), ut);
        loop_end(g, &l, u);
    }
    if (tail > 0) vnni_range(g, r, ci64(g, nu * ut), tail);
    if (!g->s->group_size) {
        LLVMValueRef acc[2];
        for (int a = 0; a < 2; a++)
            acc[a] = ld(g, g->v16f32, r->pacc16[a]);
        vnni_group_end(g, r, ci64(g, 0), sum2(g, acc), 0);
    }
    LLVMValueRef v = LLVMBuildFAdd(g->B, ld(g, g->v16f32, r->racc16[0]),
                                   ld(g, g->v16f32, r->racc16[1]), "");
    int lo[8], hi[8];
    for (int i = 0; i < 8; i++)
        lo[i] = i, hi[i] = 8 + i;
    LLVMValueRef u = LLVMGetUndef(g->v16f32);
    return LLVMBuildFAdd(g->B, LLVMBuildShuffleVector(g->B, v, u, const_ints(lo, 8, g->i32), ""),
                         LLVMBuildShuffleVector(g->B, v, u, const_ints(hi, 8, g->i32), ""), "");
}

/* gemv_prep(w, x, prep): the x-dependent part of the workspace (xs, xsum,
 * B·x), once per call. */
static LLVMValueRef emit_gemv_prep(cg *g) {
    LLVMTypeRef params[3] = {g->p8, g->pf32, g->pf32};
    LLVMValueRef fn = new_fn(g, "gemv_prep", params, 3, 0);
    LLVMValueRef w = LLVMGetParam(fn, 0), x = LLVMGetParam(fn, 1), ws = LLVMGetParam(fn, 2);
    LLVMValueRef xs = fptr(g, ws, ci64(g, g->W.xs)), xsum = fptr(g, ws, ci64(g, g->W.xsum));
    LLVMValueRef t = fptr(g, ws, ci64(g, g->W.t_gemv));
    if (g->s->transform) { /* x ← H x into xt; everything below reads xt */
        LLVMValueRef xt = fptr(g, ws, ci64(g, g->W.xt));
        emit_hadamard(g, x, fptr(g, ws, ci64(g, g->W.xh)), xt);
        x = xt;
    }
    if (g->vnni)
        gemv_prologue_vnni(g, w, x, xs, xsum, t);
    else
        gemv_prologue(g, w, x, xs, xsum, t);
    LLVMBuildRetVoid(g->B);
    return fn;
}

/* gemv(w, x, y, r0, r1, ws) = gemv_prep(w, x, ws), then gemv_rows(w, x, y,
 * r0, r1, ws, ws). */
static void emit_gemv(cg *g, LLVMValueRef prep, LLVMValueRef rows) {
    LLVMTypeRef params[6] = {g->p8, g->pf32, g->pf32, g->i64, g->i64, g->pf32};
    LLVMValueRef fn = new_fn(g, "gemv", params, 6, 0);
    LLVMValueRef a[7];
    for (int i = 0; i < 6; i++)
        a[i] = LLVMGetParam(fn, (unsigned)i);
    a[6] = a[5];
    LLVMValueRef pa[3] = {a[0], a[1], a[5]};
    LLVMBuildCall2(g->B, LLVMGlobalGetValueType(prep), prep, pa, 3, "");
    LLVMBuildCall2(g->B, LLVMGlobalGetValueType(rows), rows, a, 7, "");
    LLVMBuildRetVoid(g->B);
}

/* gemv_rows(w, x, y, r0, r1, prep, ws): rows [r0, r1) from the prepared x
 * in prep (gemv_prep) with scratch ws (srow, rv, rc; one per thread). */
static LLVMValueRef emit_gemv_rows(cg *g) {
    const qc_kernel_spec *s = g->s;
    LLVMTypeRef params[7] = {g->p8, g->pf32, g->pf32, g->i64, g->i64, g->pf32, g->pf32};
    LLVMValueRef fn = new_fn(g, "gemv_rows", params, 7, 0);
    /* No noalias on y and ws: loads of the pre-scaled x must stay inside the
     * row loop (as FMA memory operands) rather than be hoisted out of it into
     * more registers than there are. */
    LLVMValueRef w = LLVMGetParam(g->fn, 0), x = LLVMGetParam(g->fn, 1);
    LLVMValueRef y = LLVMGetParam(g->fn, 2), prep = LLVMGetParam(g->fn, 5);
    LLVMValueRef ws = LLVMGetParam(g->fn, 6);
    if (s->transform) x = fptr(g, prep, ci64(g, g->W.xt)); /* the outliers' x */
    row_ctx r = {0};
    r.xs = fptr(g, prep, ci64(g, g->W.xs));
    r.xsum = fptr(g, prep, ci64(g, g->W.xsum));
    r.srow = fptr(g, ws, ci64(g, g->W.srow));
    LLVMValueRef t = fptr(g, prep, ci64(g, g->W.t_gemv));

    r.racc[0] = var(g, g->v8f32, "racc0");
    r.racc[1] = var(g, g->v8f32, "racc1");
    r.corr = var(g, g->f32, "corr");
    for (int a = 0; a < 4; a++)
        r.pacc[a] = var(g, g->v8f32, "pacc");
    if (g->vnni) {
        for (int a = 0; a < 2; a++)
            r.pacc16[a] = var(g, g->v16f32, "pacc16");
        for (int p = 0; p < 2; p++)
            r.racc16[p] = var(g, g->v16f32, "racc16");
    }
    /* Rows in blocks: the row loop leaves each row's vector sum in rv, a
     * second loop reduces them, so no row waits for its own reduction chain
     * (an out-of-order window of one row is too short to hide it). */
    LLVMValueRef rv = fptr(g, ws, ci64(g, g->W.rv)), rc = fptr(g, ws, ci64(g, g->W.rc));
    LLVMValueRef zv = splat_c(cf32(g, 0)), r1 = LLVMGetParam(g->fn, 4);
    loop lb, l, le;
    LLVMValueRef b0 = loop_begin(g, &lb, LLVMGetParam(g->fn, 3), r1, QC_GEMV_ROW_BLOCK);
    LLVMValueRef b1 = add(g, b0, ci64(g, QC_GEMV_ROW_BLOCK));
    b1 = LLVMBuildSelect(g->B, LLVMBuildICmp(g->B, LLVMIntSLT, b1, r1, ""), b1, r1, "");
    LLVMValueRef o = loop_begin(g, &l, b0, b1, 1);
    LLVMValueRef ob = LLVMBuildSub(g->B, o, b0, "");
    row_pointers(g, &r, w, o);
    gemv_row_scales(g, &r);
    LLVMValueRef v;
    if (g->vnni) {
        v = vnni_row(g, &r);
    } else {
        LLVMBuildStore(g->B, zv, r.racc[0]);
        LLVMBuildStore(g->B, zv, r.racc[1]);
        for (int a = 0; a < 4; a++)
            LLVMBuildStore(g->B, zv, r.pacc[a]);
        row_walk(g, &r);
        if (!s->group_size) {
            LLVMValueRef acc[4];
            for (int a = 0; a < 4; a++)
                acc[a] = ld(g, g->v8f32, r.pacc[a]);
            gemv_group_end(g, &r, ci64(g, 0), tree(g, acc, 4), 0);
        }
        v = LLVMBuildFAdd(g->B, ld(g, g->v8f32, r.racc[0]), ld(g, g->v8f32, r.racc[1]), "");
    }
    vstore(g, v, rv, mul(g, ob, ci64(g, 8)));
    LLVMBuildStore(g->B, ld(g, g->f32, r.corr), fptr(g, rc, ob));
    loop_end(g, &l, o);
    o = loop_begin(g, &le, b0, b1, 1);
    ob = LLVMBuildSub(g->B, o, b0, "");
    LLVMValueRef res = hsum(g, vload(g, rv, mul(g, ob, ci64(g, 8))));
    res = LLVMBuildFSub(g->B, res, ld(g, g->f32, fptr(g, rc, ob)), "");
    if (s->outliers) res = outliers_dot(g, w, o, x, res);
    if (s->rank) res = lowrank_at(g, w, o, t, res);
    LLVMBuildStore(g->B, res, fptr(g, y, o));
    loop_end(g, &le, o);
    loop_end(g, &lb, b0);
    LLVMBuildRetVoid(g->B);
    return fn;
}

/* deqrow(w, o, dst): dst[p] = scale·(code − zero) of row o for the packed
 * columns p < in8 (act-order: packed order, which gemm's gathered x
 * follows). */
static LLVMValueRef emit_deqrow(cg *g) {
    LLVMTypeRef params[3] = {g->p8, g->i64, g->pf32};
    char kind[128], id[96];
    qc_kernel_spec_id(g->s, id, sizeof id);
    snprintf(kind, sizeof kind, "%s_deqrow", id);
    LLVMValueRef fn = new_fn(g, kind, params, 3, 1);
    noalias(g, 2);
    row_ctx r = {0};
    r.gemm = 1;
    r.dst = LLVMGetParam(fn, 2);
    row_pointers(g, &r, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1));
    row_walk(g, &r);
    LLVMBuildRetVoid(g->B);
    return fn;
}

/* R rows o0.. of Ŵ (dequantized into wt) times every row of x. Each row's
 * arithmetic is the same for R = QC_GEMM_ROW_TILE and R = 1. */
static void gemm_tile(cg *g, int R, LLVMValueRef o0, LLVMValueRef deqrow, LLVMValueRef *args) {
    const qc_kernel_spec *s = g->s;
    LLVMValueRef w = args[0], x = args[1], m = args[2], y = args[3], wt = args[4], xg = args[5],
                 t = args[6];
    LLVMTypeRef dt = LLVMGlobalGetValueType(deqrow);
    for (int rr = 0; rr < R; rr++) {
        LLVMValueRef a[3] = {w, add(g, o0, ci64(g, rr)), fptr(g, wt, ci64(g, rr * g->W.in8))};
        LLVMBuildCall2(g->B, dt, deqrow, a, 3, "");
    }
    LLVMValueRef acc[QC_GEMM_ROW_TILE][2];
    for (int rr = 0; rr < R; rr++)
        for (int h = 0; h < 2; h++)
            acc[rr][h] = var(g, g->v8f32, "acc");
    int64_t n8 = s->in / 8;
    loop li;
    LLVMValueRef i = loop_begin(g, &li, ci64(g, 0), m, 1);
    LLVMValueRef xorig = fptr(g, x, mul(g, i, ci64(g, s->in)));
    LLVMValueRef xrow = s->act_order ? fptr(g, xg, mul(g, i, ci64(g, g->W.in8))) : xorig;
    for (int rr = 0; rr < R; rr++)
        for (int h = 0; h < 2; h++)
            LLVMBuildStore(g->B, splat_c(cf32(g, 0)), acc[rr][h]);
    if (n8 >= 2) {
        loop lc;
        LLVMValueRef c = loop_begin(g, &lc, ci64(g, 0), ci64(g, n8 / 2 * 16), 16);
        for (int h = 0; h < 2; h++) {
            LLVMValueRef ch = add(g, c, ci64(g, 8 * h));
            LLVMValueRef xv = vload(g, xrow, ch);
            for (int rr = 0; rr < R; rr++) {
                LLVMValueRef wv = vload(g, wt, add(g, ch, ci64(g, rr * g->W.in8)));
                LLVMBuildStore(g->B, fma_v(g, wv, xv, ld(g, g->v8f32, acc[rr][h])), acc[rr][h]);
            }
        }
        loop_end(g, &lc, c);
    }
    if (n8 % 2) {
        LLVMValueRef ch = ci64(g, (n8 - 1) * 8);
        LLVMValueRef xv = vload(g, xrow, ch);
        for (int rr = 0; rr < R; rr++) {
            LLVMValueRef wv = vload(g, wt, add(g, ch, ci64(g, rr * g->W.in8)));
            LLVMBuildStore(g->B, fma_v(g, wv, xv, ld(g, g->v8f32, acc[rr][0])), acc[rr][0]);
        }
    }
    for (int rr = 0; rr < R; rr++) {
        LLVMValueRef v =
            LLVMBuildFAdd(g->B, ld(g, g->v8f32, acc[rr][0]), ld(g, g->v8f32, acc[rr][1]), "");
        LLVMValueRef res = hsum(g, v);
        for (int64_t c = n8 * 8; c < s->in; c++) {
            LLVMValueRef wv = ld(g, g->f32, fptr(g, wt, ci64(g, rr * g->W.in8 + c)));
            res = fma_s(g, wv, ld(g, g->f32, fptr(g, xrow, ci64(g, c))), res);
        }
        LLVMValueRef o = add(g, o0, ci64(g, rr));
        if (s->outliers) res = outliers_dot(g, w, o, xorig, res);
        if (s->rank) res = lowrank_at(g, w, o, fptr(g, t, mul(g, i, ci64(g, s->rank))), res);
        LLVMBuildStore(g->B, res, fptr(g, y, add(g, mul(g, i, ci64(g, s->out)), o)));
    }
    loop_end(g, &li, i);
}

static void emit_gemm(cg *g) {
    const qc_kernel_spec *s = g->s;
    LLVMValueRef deqrow = emit_deqrow(g);
    LLVMTypeRef params[7] = {g->p8, g->pf32, g->i64, g->pf32, g->i64, g->i64, g->pf32};
    new_fn(g, "gemm", params, 7, 0);
    noalias(g, 3), noalias(g, 6);
    LLVMValueRef w = LLVMGetParam(g->fn, 0), x = LLVMGetParam(g->fn, 1), m = LLVMGetParam(g->fn, 2);
    LLVMValueRef y = LLVMGetParam(g->fn, 3), r0 = LLVMGetParam(g->fn, 4),
                 r1 = LLVMGetParam(g->fn, 5);
    LLVMValueRef ws = LLVMGetParam(g->fn, 6);
    LLVMValueRef wt = fptr(g, ws, ci64(g, g->W.wt)), t = fptr(g, ws, ci64(g, g->W.t_gemm));
    /* act-order: x gathered once into packed column order (m × in8, zero
     * padded), so dequantized rows need no scatter */
    LLVMValueRef mr = mul(g, m, ci64(g, s->rank));
    LLVMValueRef xg =
        fptr(g, t, LLVMBuildAnd(g->B, add(g, mr, ci64(g, 7)), ci64(g, ~(int64_t)7), ""));
    if (s->transform) { /* every row of x ← H x (rows of in floats), after xg */
        LLVMValueRef xm = s->act_order ? fptr(g, xg, mul(g, m, ci64(g, g->W.in8))) : xg;
        LLVMValueRef tmp = fptr(g, xm, mul(g, m, ci64(g, g->W.in8)));
        loop lh;
        LLVMValueRef i = loop_begin(g, &lh, ci64(g, 0), m, 1);
        LLVMValueRef off = mul(g, i, ci64(g, s->in));
        emit_hadamard(g, fptr(g, x, off), tmp, fptr(g, xm, off));
        loop_end(g, &lh, i);
        x = xm;
    }
    if (s->act_order) {
        loop li, lp;
        LLVMValueRef i = loop_begin(g, &li, ci64(g, 0), m, 1);
        LLVMValueRef xi = fptr(g, x, mul(g, i, ci64(g, s->in)));
        LLVMValueRef gi = fptr(g, xg, mul(g, i, ci64(g, g->W.in8)));
        LLVMValueRef p = loop_begin(g, &lp, ci64(g, 0), ci64(g, g->W.in8), 1);
        LLVMValueRef valid = LLVMBuildICmp(g->B, LLVMIntSLT, p, ci64(g, s->in), "");
        LLVMValueRef v = x_packed(g, w, xi, LLVMBuildSelect(g->B, valid, p, ci64(g, 0), ""));
        LLVMBuildStore(g->B, LLVMBuildSelect(g->B, valid, v, cf32(g, 0), ""), fptr(g, gi, p));
        loop_end(g, &lp, p);
        loop_end(g, &li, i);
    }
    if (s->rank) {
        loop li;
        LLVMValueRef i = loop_begin(g, &li, ci64(g, 0), m, 1);
        lowrank_bx(g, w, fptr(g, x, mul(g, i, ci64(g, s->in))),
                   fptr(g, t, mul(g, i, ci64(g, s->rank))));
        loop_end(g, &li, i);
    }
    LLVMValueRef args[7] = {w, x, m, y, wt, xg, t};
    LLVMValueRef RT = ci64(g, QC_GEMM_ROW_TILE);
    LLVMValueRef full = LLVMBuildSDiv(g->B, LLVMBuildSub(g->B, r1, r0, ""), RT, "");
    LLVMValueRef mid = add(g, r0, mul(g, full, RT));
    loop lt, lr;
    LLVMValueRef o0 = loop_begin(g, &lt, r0, mid, QC_GEMM_ROW_TILE);
    gemm_tile(g, QC_GEMM_ROW_TILE, o0, deqrow, args);
    loop_end(g, &lt, o0);
    LLVMValueRef o = loop_begin(g, &lr, mid, r1, 1);
    gemm_tile(g, 1, o, deqrow, args);
    loop_end(g, &lr, o);
    LLVMBuildRetVoid(g->B);
}

static LLVMValueRef intrinsic(cg *g, const char *name, LLVMTypeRef t, LLVMTypeRef *ft) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    *ft = LLVMIntrinsicGetType(g->C, id, &t, 1);
    return LLVMGetIntrinsicDeclaration(g->M, id, &t, 1);
}

/* A declared function (target intrinsics without overloads). */
static LLVMValueRef named_fn(cg *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n,
                             LLVMTypeRef *ft) {
    *ft = LLVMFunctionType(ret, params, (unsigned)n, 0);
    LLVMValueRef f = LLVMGetNamedFunction(g->M, name);
    return f ? f : LLVMAddFunction(g->M, name, *ft);
}

int qc_cpu_ir_emit(LLVMModuleRef M, const qc_kernel_spec *s, const qc_cpu_ir_target *t,
                   qc_err *err) {
    cg g = {0};
    g.vector_f16 = t->vector_f16;
    g.C = LLVMGetModuleContext(M);
    g.M = M;
    g.s = s;
    if (qc_pack_layout_get(s, 0, &g.L, err)) return -1;
    if (unit_cols(s) > 2048)
        return qc_err_set(err,
                          "kernel spec: group size %d needs an unrolled unit of %lld columns "
                          "(lcm with 64; at most 2048 supported)",
                          s->group_size, (long long)unit_cols(s));
    qc_kernel_ws_layout(s, &g.W);
    g.nch = qc_pack_chunks(s->bits, g.widths);
    g.i8 = LLVMInt8TypeInContext(g.C);
    g.i16 = LLVMInt16TypeInContext(g.C);
    g.i32 = LLVMInt32TypeInContext(g.C);
    g.i64 = LLVMInt64TypeInContext(g.C);
    g.f32 = LLVMFloatTypeInContext(g.C);
    g.v8f32 = LLVMVectorType(g.f32, 8);
    g.v8i32 = LLVMVectorType(g.i32, 8);
    g.p8 = LLVMPointerType(g.i8, 0);
    g.pf32 = LLVMPointerType(g.f32, 0);
    g.fma_v = intrinsic(&g, "llvm.fmuladd", g.v8f32, &g.fma_v_ty);
    g.fma_s = intrinsic(&g, "llvm.fmuladd", g.f32, &g.fma_s_ty);
    if (use_vnni(t, s)) {
        g.vnni = 1;
        g.v16f32 = LLVMVectorType(g.f32, 16);
        g.v16i32 = LLVMVectorType(g.i32, 16);
        g.v64i8 = LLVMVectorType(g.i8, 64);
        g.fma16 = intrinsic(&g, "llvm.fmuladd", g.v16f32, &g.fma16_ty);
        g.fabs16 = intrinsic(&g, "llvm.fabs", g.v16f32, &g.fabs16_ty);
        g.rint16 = intrinsic(&g, "llvm.rint", g.v16f32, &g.rint16_ty);
        LLVMTypeRef st[2] = {g.v16i32, g.v16f32};
        unsigned id = LLVMLookupIntrinsicID("llvm.fptosi.sat", 15);
        g.fpsat16_ty = LLVMIntrinsicGetType(g.C, id, st, 2);
        g.fpsat16 = LLVMGetIntrinsicDeclaration(M, id, st, 2);
        LLVMTypeRef dpt[3] = {g.v16i32, g.v16i32, g.v16i32};
        g.dp = named_fn(&g, "llvm.x86.avx512.vpdpbusd.512", g.v16i32, dpt, 3, &g.dp_ty);
        LLVMTypeRef mst[2] = {g.v64i8, g.v64i8};
        g.ms = named_fn(&g, "llvm.x86.avx512.pmultishift.qb.512", g.v64i8, mst, 2, &g.ms_ty);
        LLVMTypeRef mt[2] = {g.v64i8, LLVMPointerType(g.v64i8, 0)};
        id = LLVMLookupIntrinsicID("llvm.masked.load", 16);
        g.ml_ty = LLVMIntrinsicGetType(g.C, id, mt, 2);
        g.ml = LLVMGetIntrinsicDeclaration(M, id, mt, 2);
    }

    /* gemv's per-slot x scale (slot_prescale). */
    LLVMValueRef ps[8];
    for (int j = 0; j < 8; j++)
        ps[j] = cf32(&g, slot_prescale(&g, j));
    char id[96], name[128];
    qc_kernel_spec_id(s, id, sizeof id);
    snprintf(name, sizeof name, "qck_%s_prescale", id);
    g.prescale = LLVMAddGlobal(M, LLVMArrayType(g.f32, 8), name);
    LLVMSetInitializer(g.prescale, LLVMConstArray(g.f32, ps, 8));
    LLVMSetGlobalConstant(g.prescale, 1);
    LLVMSetLinkage(g.prescale, LLVMInternalLinkage);

    if (s->transform) {
        qc_hadamard *h = qc_hadamard_new((int)s->in, err);
        if (!h) return -1;
        g.hp = h->p, g.hm = h->pow2, g.hscale = 1.0f / sqrtf((float)s->in);
        LLVMValueRef *e = malloc((size_t)h->p * (size_t)h->p * sizeof *e);
        if (!e) {
            qc_hadamard_free(h);
            return qc_err_set(err, "CPU codegen: out of memory");
        }
        for (int i = 0; i < h->p * h->p; i++)
            e[i] = cf32(&g, h->base[i]);
        snprintf(name, sizeof name, "qck_%s_hbase", id);
        LLVMTypeRef at = LLVMArrayType(g.f32, (unsigned)(h->p * h->p));
        g.hbase = LLVMAddGlobal(M, at, name);
        LLVMSetInitializer(g.hbase, LLVMConstArray(g.f32, e, (unsigned)(h->p * h->p)));
        LLVMSetGlobalConstant(g.hbase, 1);
        LLVMSetLinkage(g.hbase, LLVMInternalLinkage);
        free(e);
        qc_hadamard_free(h);
    }
    g.B = LLVMCreateBuilderInContext(g.C);
    g.AB = LLVMCreateBuilderInContext(g.C);
    LLVMValueRef prep = emit_gemv_prep(&g), rows = emit_gemv_rows(&g);
    emit_gemv(&g, prep, rows);
    emit_gemm(&g);
    LLVMDisposeBuilder(g.B);
    LLVMDisposeBuilder(g.AB);
    return 0;
}
#endif
