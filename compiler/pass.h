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
    double *H;         /* cols × cols: Σ x xᵀ over calibration tokens (shared; read-only —
                          copy before factoring) */
    float *act_absmax; /* cols: max |x_j| over calibration tokens */
    int64_t n_tokens;  /* calibration tokens behind H */
    int targeted;      /* does the current pass target this linear (targets/ignore globs)? */
    /* Outputs of quantizing passes: */
    qc_quant_state *q; /* owned; NULL until a quantizer runs */
    float *deq;        /* rows × cols dequantized weight (owned), or NULL */
    double seconds;    /* time spent quantizing it */
    char note[160];    /* handled conditions worth reporting (e.g. singular Hessian), or "" */
} qc_calib_linear;

typedef struct qc_calib_block {
    int index; /* block number */
    int n_linears;
    qc_calib_linear *linears;
} qc_calib_block;

typedef struct qc_pass_ctx {
    uint64_t seed;
    int quiet;
} qc_pass_ctx;

typedef struct qc_pass {
    const char *name;
    const char *doc;
    const qc_param_spec *params; /* terminated by an entry with name NULL */
    /* Block-level run; NULL for passes not implemented at block level. */
    int (*run_block)(const qc_pass_ctx *ctx, const qc_params *p, qc_calib_block *b, qc_err *err);
} qc_pass;

/* The registry (passes/registry.c). */
const qc_pass *qc_pass_find(const char *name);
int qc_pass_count(void);
const qc_pass *qc_pass_at(int i);

#endif
