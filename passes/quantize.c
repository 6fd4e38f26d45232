/* The `quantize` pass: RTN or GPTQ of every targeted linear of a block into
 * group-wise integer codes (compiler/quant.h), or with `format: gguf:TYPE`
 * into a ggml block type (compiler/ggml_quant.h), so that a GGUF export holds
 * exactly the weights quantc evaluated (issue 7). Running it again over a
 * block replaces the earlier result. */
#include "compiler/dequant.h"
#include "compiler/ggml_quant.h"
#include "compiler/model.h"
#include "compiler/pass.h"
#include "compiler/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const methods[] = {"rtn", "gptq", NULL};

/* "int", the ggml block types by their GGUF names, then llama-quantize's
 * per-tensor mixes (type chosen per layer by mix_type). */
static const char *const formats[] = {
    "int",       "gguf:q8_0", "gguf:q4_0",   "gguf:q4_1",   "gguf:q5_0",   "gguf:q5_1",
    "gguf:iq4_nl", "gguf:q3_k", "gguf:q4_k", "gguf:q5_k",   "gguf:q6_k",   "gguf:iq4_xs",
    "gguf:q4_k_m", "gguf:q3_k_m", NULL};
enum { MIX_Q4_K_M = QC_DT_COUNT, MIX_Q3_K_M };
static const int format_dtype[] = {QC_DT_F32,    QC_DT_Q8_0, QC_DT_Q4_0, QC_DT_Q4_1, QC_DT_Q5_0,
                                   QC_DT_Q5_1,   QC_DT_IQ4_NL, QC_DT_Q3_K, QC_DT_Q4_K, QC_DT_Q5_K,
                                   QC_DT_Q6_K,   QC_DT_IQ4_XS, MIX_Q4_K_M, MIX_Q3_K_M};

static const qc_param_spec params[] = {
    {"method", QC_PARAM_STRING, "gptq", 1, 0, methods,
     "rtn: round to nearest; gptq: Hessian-based error compensation (Frantar et al. 2022)"},
    {"bits", QC_PARAM_INT, "4", 2, 8, NULL, "bits per weight"},
    {"group_size", QC_PARAM_INT, "128", 0, 65536, NULL,
     "columns sharing one scale/zero; 0 = per output channel; otherwise at least 8"},
    {"symmetric", QC_PARAM_BOOL, "false", 1, 0, NULL,
     "zero point fixed at 2^(bits-1) (true) or fitted per group (false)"},
    {"act_order", QC_PARAM_BOOL, "true", 1, 0, NULL,
     "gptq: quantize columns by decreasing Hessian diagonal (records the permutation)"},
    {"static_groups", QC_PARAM_BOOL, "false", 1, 0, NULL,
     "gptq: fit group scales on the original weights, in column order, before GPTQ"},
    {"damp", QC_PARAM_FLOAT, "0.01", 0, 1, NULL,
     "gptq: fraction of the mean Hessian diagonal added to the diagonal"},
    {"block_size", QC_PARAM_INT, "128", 1, 4096, NULL, "gptq: lazy-update block width"},
    {"clip_search", QC_PARAM_BOOL, "true", 1, 0, NULL,
     "search a shrunk range per group minimising the Hessian-diagonal-weighted error"},
    {"clip_min", QC_PARAM_FLOAT, "0.75", 0.5, 1, NULL, "smallest range ratio tried by the search"},
    {"clip_steps", QC_PARAM_INT, "20", 1, 100, NULL, "range ratios tried, from 1 to clip_min"},
    {"format", QC_PARAM_STRING, "int", 1, 0, formats,
     "int: group-wise integer codes (bits, group_size, symmetric); gguf:TYPE: that ggml block "
     "type, exactly as llama.cpp decodes it (its own blocks and scales: bits, group_size, "
     "symmetric and the clip search do not apply; a type whose block does not divide a row "
     "falls back as llama-quantize does, e.g. q4_k -> q5_0; with act_order or static_groups GPTQ "
     "fits the blocks up front); gguf:q4_k_m, gguf:q3_k_m: the type llama-quantize's Q4_K_M / "
     "Q3_K_M give each linear (by projection and layer index; lm_head Q6_K)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Says in the report what GPTQ did about a degenerate Hessian. */
static void note_hessian(qc_calib_linear *l, const qc_gptq_opts *o, const qc_gptq_info *info) {
    size_t n = strlen(l->note);
    if (info->damp_retries)
        n += (size_t)snprintf(l->note + n, sizeof l->note - n,
                              "%sHessian singular at damp %g; used damp %g", n ? "; " : "", o->damp,
                              info->damp_used);
    if (info->dead_inputs && n < sizeof l->note)
        snprintf(l->note + n, sizeof l->note - n, "%s%lld dead inputs (H_jj = 0) zeroed",
                 n ? "; " : "", (long long)info->dead_inputs);
}

/* A qc_dtype, or MIX_*. */
static int format_of(const qc_params *p) {
    const char *f = qc_params_str(p, "format");
    for (int i = 0; formats[i]; i++)
        if (!strcmp(f, formats[i])) return format_dtype[i];
    return QC_DT_F32;
}

/* llama.cpp's llama_tensor_get_type for Q4_K_M and Q3_K_M (src/llama-quant.cpp
 * as llama-cpp-python 0.3.36 vendors it; dense models other than Falcon and
 * 70B): linear `kind` of block i of n (i == n: lm_head, the output tensor). */
static int more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static qc_dtype mix_type(int mix, const char *kind, int i, int n) {
    if (i >= n) return QC_DT_Q6_K;
    int v = !strcmp(kind, "v_proj"), down = !strcmp(kind, "down_proj");
    if (mix == MIX_Q4_K_M) return (v || down) && more_bits(i, n) ? QC_DT_Q6_K : QC_DT_Q4_K;
    if (v) return i < 2 ? QC_DT_Q5_K : QC_DT_Q4_K;
    if (down) return i < n / 16 ? QC_DT_Q5_K : QC_DT_Q4_K;
    return !strcmp(kind, "o_proj") ? QC_DT_Q4_K : QC_DT_Q3_K;
}

/* A copy of l's Hessian for GPTQ to factor (H is shared by the linears
 * reading the same input), or NULL with err. */
static double *copy_h(const qc_calib_linear *l, qc_err *err) {
    size_t hn;
    if (qc_mul_size((size_t)l->cols, (size_t)l->cols, &hn) || hn > SIZE_MAX / sizeof(double)) {
        qc_err_set(err, "Hessian of %lld columns too large", (long long)l->cols);
        return NULL;
    }
    double *h = qc_malloc(hn * sizeof(double), err);
    if (h) memcpy(h, l->H, hn * sizeof(double));
    return h;
}

/* H's diagonal (the RTN fits' importance) into *out: NULL without H.
 * Returns 0 or -1 with err. */
static int h_diag(const qc_calib_linear *l, double **out, qc_err *err) {
    *out = NULL;
    if (!l->H) return 0;
    if (!(*out = qc_malloc((size_t)l->cols * sizeof(double), err))) return -1;
    for (int64_t c = 0; c < l->cols; c++)
        (*out)[c] = l->H[c * l->cols + c];
    return 0;
}

/* format gguf:TYPE: GPTQ or RTN onto the grid of the type a row takes. */
static int quantize_ggml(const qc_params *p, qc_calib_linear *l, qc_dtype want, qc_err *err) {
    int fell_back;
    qc_dtype t = qc_ggml_row_type(want, l->cols, &fell_back);
    if (t == QC_DT_F16)
        return qc_err_set(err, "no ggml block type fits rows of %lld weights", (long long)l->cols);
    if (l->outliers)
        return qc_err_set(err,
                          "sparse outliers (the outliers pass) cannot be stored in a GGUF "
                          "block type (format %s)",
                          qc_params_str(p, "format"));
    if (l->bits_override > 0)
        return qc_err_set(err,
                          "allocate chose %d bits, but format %s fixes the type (mapping "
                          "allocate's bits to ggml types is not implemented)",
                          l->bits_override, qc_params_str(p, "format"));
    int gptq = strcmp(qc_params_str(p, "method"), "gptq") == 0;
    if (gptq && !l->H) return qc_err_set(err, "gptq needs calibration statistics (no Hessian)");
    size_t rb, nb, n;
    if (qc_dtype_nbytes(t, l->cols, &rb) || qc_mul_size(rb, (size_t)l->rows, &nb) ||
        qc_mul_size((size_t)l->rows, (size_t)l->cols, &n) || n > SIZE_MAX / sizeof(float))
        return qc_err_set(err, "%lld x %lld weight too large", (long long)l->rows,
                          (long long)l->cols);
    uint8_t *blocks = qc_malloc(nb, err);
    float *deq = blocks ? qc_malloc(n * sizeof(float), err) : NULL;
    double *h = NULL, *diag = NULL;
    int rc = -1;
    if (!deq) goto done;
    if (gptq) {
        if (!(h = copy_h(l, err))) goto done;
        qc_gptq_info info = {0};
        qc_gptq_opts o = {.damp = qc_params_float(p, "damp"),
                          .block = (int)qc_params_int(p, "block_size"),
                          .act_order = qc_params_bool(p, "act_order"),
                          .static_groups = qc_params_bool(p, "static_groups"),
                          .info = &info};
        rc = qc_ggml_gptq(t, l->w, h, &o, l->rows, l->cols, blocks, deq, err);
        if (rc == 0) note_hessian(l, &o, &info);
    } else {
        if (h_diag(l, &diag, err)) goto done;
        rc = qc_ggml_rtn(t, l->w, diag, l->rows, l->cols, blocks, deq, err);
    }
    if (rc == 0 && fell_back) {
        size_t k = strlen(l->note);
        snprintf(l->note + k, sizeof l->note - k, "%s%s: rows of %lld are not whole %s blocks",
                 k ? "; " : "", qc_dtype_name(t), (long long)l->cols, qc_dtype_name(want));
    }
done:
    free(h);
    free(diag);
    if (rc) {
        free(blocks);
        free(deq);
        return -1;
    }
    l->blocks = blocks;
    l->blocks_dtype = (int)t;
    l->deq = deq;
    return 0;
}

/* block: the block index (n_layers for lm_head); n_layers: the model's. */
static int quantize_linear(const qc_params *p, qc_calib_linear *l, int block, int n_layers,
                           qc_err *err) {
    double t0 = now();
    /* A failed run leaves no earlier result behind to be taken for this one. */
    qc_quant_state_free(l->q);
    l->q = NULL;
    free(l->deq);
    l->deq = NULL;
    free(l->blocks);
    l->blocks = NULL;
    l->note[0] = 0;
    int gguf = format_of(p);
    if (gguf >= QC_DT_COUNT) gguf = mix_type(gguf, l->kind, block, n_layers);
    if (l->dtype_override > 0) gguf = l->dtype_override; /* allocate chose the type */
    if (gguf != QC_DT_F32) {
        if (quantize_ggml(p, l, (qc_dtype)gguf, err)) return -1;
        l->seconds = now() - t0;
        return 0;
    }
    /* allocate (mixed precision) may have chosen this linear's width and group. */
    int bits = l->bits_override > 0 ? l->bits_override : (int)qc_params_int(p, "bits");
    int group = l->bits_override > 0 ? l->group_override : (int)qc_params_int(p, "group_size");
    qc_quant_format fmt = {bits, group, qc_params_bool(p, "symmetric")};
    qc_clip_search clip = {qc_params_bool(p, "clip_search"), (float)qc_params_float(p, "clip_min"),
                           (int)qc_params_int(p, "clip_steps")};
    int gptq = strcmp(qc_params_str(p, "method"), "gptq") == 0;
    if (fmt.group_size != 0 && fmt.group_size < 8)
        return qc_err_set(err, "group_size %d: use 0 (per-channel) or at least 8", fmt.group_size);
    if (gptq && !l->H) return qc_err_set(err, "gptq needs calibration statistics (no Hessian)");

    size_t n;
    if (qc_mul_size((size_t)l->rows, (size_t)l->cols, &n) || n > SIZE_MAX / sizeof(float))
        return qc_err_set(err, "%lld x %lld weight too large", (long long)l->rows,
                          (long long)l->cols);
    qc_quant_state *q = qc_quant_state_new(&fmt, l->rows, l->cols, err);
    float *deq = q ? qc_malloc(n * sizeof(float), err) : NULL;
    double *h = NULL;
    int rc = -1;
    if (!deq) goto done;
    /* Weights the outliers pass kept in f16 stay out of the dense codes. */
    if (l->outliers && qc_quant_set_outliers(q, l->outliers, l->w, err)) goto done;
    if (gptq) {
        if (!(h = copy_h(l, err))) goto done;
        qc_gptq_info info = {0};
        qc_gptq_opts o = {qc_params_float(p, "damp"),
                          (int)qc_params_int(p, "block_size"),
                          qc_params_bool(p, "act_order"),
                          qc_params_bool(p, "static_groups"),
                          clip,
                          &info};
        rc = qc_quant_gptq(l->w, h, &o, q, deq, err);
        if (rc == 0) note_hessian(l, &o, &info);
    } else {
        double *diag = NULL;
        if (h_diag(l, &diag, err)) goto done;
        rc = qc_quant_rtn(l->w, diag, &clip, q, deq, err);
        free(diag);
    }
done:
    free(h);
    if (rc) {
        qc_quant_state_free(q);
        free(deq);
        return -1;
    }
    l->q = q;
    l->deq = deq;
    l->seconds = now() - t0;
    return 0;
}

/* The mixes need the layer count, which blocks do not carry: kept here. */
static int run_model(const qc_pass_ctx *ctx, const qc_params *p, struct qc_model *m, qc_err *err) {
    (void)p;
    int *n = qc_malloc(sizeof *n, err);
    if (!n) return -1;
    *n = m->cfg.n_layers;
    *ctx->state = n;
    return 0;
}

/* Bytes GPTQ holds for l beyond the block: Hessian copy, f64 transpose and
 * the f32 dequantized result. */
static double work_bytes(const qc_calib_linear *l) {
    return 8.0 * (double)l->cols * (double)l->cols + 12.0 * (double)l->rows * (double)l->cols;
}

static int run_block(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err) {
    const int *n_layers = ctx->state ? *ctx->state : NULL;
    if (format_of(p) >= QC_DT_COUNT && !n_layers)
        return qc_err_set(err, "quantize: format %s: layer count unknown",
                          qc_params_str(p, "format"));
    /* Largest working set first (GPTQ's Hessian copy and transposed f64
     * weight): each layer's result depends only on its own weight and
     * statistics, so the order changes nothing but the peak memory, which
     * otherwise has the block's earlier dequantized weights beside the
     * largest layer's (down_proj's 14336² Hessian at Llama-3-8B shapes). */
    int order[QC_CALIB_MAX_LINEARS], n = 0;
    if (b->n_linears > QC_CALIB_MAX_LINEARS)
        return qc_err_set(err, "quantize: block %d has %d linears", b->index, b->n_linears);
    for (int i = 0; i < b->n_linears; i++)
        if (b->linears[i].targeted) order[n++] = i;
    for (int i = 1; i < n; i++)
        for (int j = i;
             j > 0 && work_bytes(&b->linears[order[j]]) > work_bytes(&b->linears[order[j - 1]]);
             j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        qc_calib_linear *l = &b->linears[order[i]];
        if (quantize_linear(p, l, b->index, n_layers ? *n_layers : 0, err))
            return qc_err_prefix(err, "quantize: block %d: %s", b->index, l->name);
    }
    return 0;
}

const qc_pass qc_pass_quantize = {
    .name = "quantize",
    .doc = "round weights to group-wise integer codes (RTN or GPTQ), with a clip search for scales",
    .params = params,
    .run_block = run_block,
    .run_model = run_model,
    .free_state = free,
};
