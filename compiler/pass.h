/* Passes are table rows (STYLE.md "Passes"): a name, a one-line doc, a
 * parameter schema, and a run function. Recipes are validated against the
 * same schema, and `quantc passes` prints it. */
#ifndef QC_PASS_H
#define QC_PASS_H

#include "err.h"
#include "quant.h"

#include <stdint.h>

typedef enum qc_param_type {
    QC_PARAM_INT,
    QC_PARAM_FLOAT,
    QC_PARAM_BOOL,
    QC_PARAM_STRING, /* one of enum_values when that is non-NULL */
    QC_PARAM_INT_LIST,
    QC_PARAM_STRING_LIST,
} qc_param_type;

typedef struct qc_param_spec {
    const char *name;
    qc_param_type type;
    const char
        *def; /* default as YAML text ("4", "0.01", "true", "gptq", "[2, 3]"); NULL = required */
    double min, max; /* inclusive range for INT/FLOAT and INT_LIST items (min > max: no range) */
    const char *const *enum_values; /* NULL-terminated, for STRING */
    const char *doc;
} qc_param_spec;

/* A parsed, validated value. */
typedef struct qc_param_value {
    const qc_param_spec *spec;
    int64_t i;      /* INT, BOOL */
    double f;       /* FLOAT */
    char *s;        /* STRING */
    int64_t *ilist; /* INT_LIST */
    char **slist;   /* STRING_LIST */
    int n;          /* list length */
    int line, col;  /* where it was written in the recipe (0 when defaulted) */
} qc_param_value;

/* Every parameter of a pass invocation, defaults filled in. */
typedef struct qc_params {
    qc_param_value *v;
    int n;
} qc_params;

const qc_param_value *qc_params_get(const qc_params *p, const char *name);
int64_t qc_params_int(const qc_params *p, const char *name);
double qc_params_float(const qc_params *p, const char *name);
int qc_params_bool(const qc_params *p, const char *name);
const char *qc_params_str(const qc_params *p, const char *name);

/* What a block-level pass works on: one transformer block's linears in f32
 * with the calibration statistics of their inputs. Linears that read the
 * same input (q/k/v; gate/up) share one H. */
typedef struct qc_calib_linear {
    const char *name; /* HF weight name, e.g. "model.layers.3.self_attn.q_proj.weight" */
    const char
        *kind; /* "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" */
    int64_t rows, cols;
    float *w;          /* rows × cols, f32; a pass may modify it (e.g. smoothing scales) */
    float *bias;       /* rows or NULL */
    double *H;         /* cols × cols: (1/N) Σ x xᵀ over the calibration tokens (shared by the
                          linears of one input; copy before factoring). Only a pass that
                          rescales the input itself (smooth: x → x/s) updates it, to
                          D⁻¹HD⁻¹, so that it stays the statistics of what the linear reads */
    float *act_absmax; /* cols: max |x_j| over calibration tokens (rescaled likewise) */
    int64_t n_tokens;  /* calibration tokens behind H */
    int targeted;      /* does the current pass target this linear (targets/ignore globs)? */
    int modified;      /* set by a pass that changed w or bias: the driver writes them back to
                          the IR (qc_model_set_f32) so the model stays consistent */
    int bits_override; /* > 0: the bit width quantize uses instead of its `bits` (allocate) */
    /* With bits_override > 0: the group size quantize uses instead of its
     * `group_size` (0: per output channel). */
    int group_override;
    /* Outputs of quantizing passes: */
    qc_quant_state *q; /* owned; NULL until a quantizer runs */
    float *deq;        /* rows × cols dequantized weight (owned), or NULL */
    /* Or, quantized into a ggml block type (quantize format gguf:*): the
     * weight's blocks (rows × row bytes, ggml layout, owned) and their
     * qc_dtype; q stays NULL and deq is their exact decoding. The driver
     * stores them as the weight tensor itself (GGUF has no other form). */
    uint8_t *blocks;
    int blocks_dtype;
    /* > 0, a qc_dtype: the ggml block type quantize writes this linear in,
     * whatever its format says (allocate with types; one its rows take). */
    int dtype_override;
    double seconds;    /* time spent quantizing it */
    char note[160];    /* handled conditions worth reporting (e.g. singular Hessian), or "" */
    uint8_t *outliers; /* rows × cols, owned, or NULL: nonzero = kept as a sparse f16 outlier
                          (set by the outliers pass, before quantize, which leaves them out of
                          the dense codes and attaches them to q) */
} qc_calib_linear;

/* The most linears a block holds (q, k, v, o, gate, up, down). */
enum { QC_CALIB_MAX_LINEARS = 7 };

typedef struct qc_calib_block {
    int index; /* block number */
    int n_linears; /* at most QC_CALIB_MAX_LINEARS */
    qc_calib_linear *linears;
    /* The block's RMSNorm weights (dim floats), which the driver's forward
     * uses to propagate and writes back to the IR after the passes: a pass
     * that folds input scales into a norm (smooth) edits them here. NULL
     * for lm_head. */
    float *attn_norm, *ffn_norm;
    int64_t dim;
    int head_dim; /* attention head width (o_proj column h·head_dim + d reads a v_proj row) */
} qc_calib_block;

struct qc_model;
struct qc_pass_ctx;

/* Called once per block, in order, by ctx->walk_fp. */
typedef int (*qc_block_visit)(void *ud, qc_calib_block *b, qc_err *err);

typedef struct qc_pass_ctx {
    uint64_t seed;
    int quiet;
    /* The parameters of the recipe's (first) quantize pass, or NULL: passes
     * that model the quantization they prepare for (smooth's α search,
     * allocate's sensitivities) read its format here. */
    const qc_params *quantize;
    /* Per-invocation state a pass keeps from run_model to its run_block
     * calls (e.g. allocate's chosen bits); freed with the pass's free_state. */
    void **state;
    /* Runs the current (full-precision) model over the calibration samples
     * block by block and calls visit with each block's linears and input
     * statistics (targeted set from this pass's globs). Model-level passes
     * use it for statistics of every block before block 0 is compressed. */
    int (*walk_fp)(const struct qc_pass_ctx *ctx, qc_block_visit visit, void *ud, qc_err *err);
    /* The calibration token ids (calib_samples × calib_tokens), for passes
     * that measure the model itself (allocate's KL probe). */
    const int32_t *calib_ids;
    int calib_samples, calib_tokens;
    void *driver;            /* the calibration driver, for walk_fp */
    const void *recipe_pass; /* the qc_recipe_pass being run, for walk_fp's targeting */
} qc_pass_ctx;

typedef struct qc_pass {
    const char *name;
    const char *doc;
    const qc_param_spec *params; /* terminated by an entry with name NULL */
    /* Block-level run; NULL for passes not implemented at block level. */
    int (*run_block)(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err);
    /* Model-level run, before the block loop (DESIGN.md "The flow"), in
     * recipe order; changes weights through the IR API (qc_model_set_f32).
     * NULL for block-only passes. */
    int (*run_model)(const qc_pass_ctx *ctx, const qc_params *p, struct qc_model *m, qc_err *err);
    /* Frees *ctx->state at the end of the compile; NULL when none is kept. */
    void (*free_state)(void *state);
} qc_pass;

/* The registry (passes/registry.c). */
const qc_pass *qc_pass_find(const char *name);
int qc_pass_count(void);
const qc_pass *qc_pass_at(int i);

#endif
