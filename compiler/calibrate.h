/* The calibration driver (DESIGN.md "The flow"): sequential, block by block.
 * For each block: capture its inputs for every calibration sample, run it in
 * full precision collecting H = XᵀX (f64, per input group) and channel
 * abs-max, run the recipe's block passes, then run the compressed block to
 * produce the next block's inputs, so quantization error propagates. Only
 * one block's f32 weights and the activations are resident. */
#ifndef QC_CALIBRATE_H
#define QC_CALIBRATE_H

#include "model.h"
#include "recipe.h"

#include <stddef.h>

/* Command-line overrides of the recipe's calibration (NULL / < 0: keep). */
typedef struct qc_calib_overrides {
    const char *text;
    int samples, tokens;
    int64_t seed;
    /* Checkpoint directory (compiler/checkpoint.h), NULL for none, and the
     * key of this compile: after each block the driver saves its results,
     * and resumes from a checkpoint with the same key. */
    const char *checkpoint_dir, *checkpoint_key, *checkpoint_what;
    /* Directory for the spill file (compiler/spill.h) that finished blocks'
     * quantized states move to, so memory stays at one block; NULL keeps
     * them on the heap. */
    const char *spill_dir, *spill_what; /* spill_what: the output, for messages */
} qc_calib_overrides;

typedef struct qc_layer_report {
    char *name;         /* module name, e.g. "model.layers.0.mlp.down_proj" */
    const char *method; /* "rtn", "gptq", or "none" (kept in full precision) */
    const char *format; /* ggml block type (quantize format gguf:*), or NULL: integer codes */
    int bits, group_size, symmetric, act_order;
    int64_t rows, cols;
    double bits_per_weight; /* codes + scales + zeros (+ g_idx) per weight */
    double weight_err;      /* ‖W − Ŵ‖² / ‖W‖² */
    double output_err; /* ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on the calibration inputs (via H) */
    double seconds;
    char note[160]; /* handled conditions (singular Hessian, dead inputs), or "" */
} qc_layer_report;

typedef struct qc_calib_report {
    qc_layer_report *layers;
    int n_layers;
    int samples, tokens; /* calibration actually used */
    uint64_t seed;
    const char *text;
    double seconds;
    double avg_bits; /* over quantized linears, weighted by size */
    int64_t quantized_params, total_linear_params;
    long peak_rss_kb;
    int resumed_blocks; /* blocks restored from a checkpoint (0: none) */
} qc_calib_report;

/* Progress: block b of n done (b = 0 at start), what is running now. */
typedef void (*qc_calib_progress)(void *ud, int block, int n_blocks, const char *what);

/* Runs the recipe's passes over m's blocks with calibration data; on success
 * the quantized states are attached to m (qc_model_add_quant) and rep is
 * filled (free with qc_calib_report_free). Returns 0 or -1 with err. */
int qc_calibrate(qc_model *m, const qc_recipe *r, const qc_calib_overrides *ov,
                 qc_calib_progress progress, void *ud, qc_calib_report *rep, qc_err *err);
void qc_calib_report_free(qc_calib_report *rep);

/* The module names a recipe can target ("model.layers.N.self_attn.q_proj",
 * ..., "lm_head"): a new array of *n strings; free with qc_calib_names_free. */
char **qc_calib_linear_names(const qc_config *c, int *n);
void qc_calib_names_free(char **names, int n);

/* The report as JSON text (caller frees). */
char *qc_calib_report_json(const qc_calib_report *rep);

#endif
