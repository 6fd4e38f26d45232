/* Recipes: the YAML description of a compile (DESIGN.md "Recipes"), parsed
 * with libyaml and validated against each pass's parameter schema. Every
 * error names the recipe file and the 1-based line:column of the offending
 * node, e.g. "recipes/x.yaml:7:24: quantize: bits must be in [2, 8], got 9".
 *
 *   quantc: 1                      # format version (required; only 1)
 *   calibration:                   # required
 *     text: ../../shared/data/wikitext2-valid.tokens.txt   # required
 *     samples: 128                 # default 128, in [1, 1048576]
 *     tokens: 512                  # default 512, in [2, 1048576]
 *     seed: 0                      # default 0
 *   passes:                        # required, non-empty, run in order
 *     - quantize: { method: gptq, bits: 4, targets: ["*"], ignore: [lm_head] }
 *   targets: [cpu:host]            # optional codegen targets (stored, not validated)
 *   gates:                         # optional
 *     text: ../../shared/data/wikitext2-test.raw.txt       # required in gates
 *     ctx: 512                     # default 512
 *     windows: 64                  # default 64
 *     max_ppl_increase_pct: 3.0    # at least one of these two
 *     max_kl: 0.05
 *   export:                        # optional: written after the artifact (paths
 *     - { format: gguf, path: out.gguf }        # relative to the working directory)
 *     - { format: compressed-tensors, path: out_dir, fallback: dequantize }
 *   artifact:                      # optional
 *     compress: zstd               # none (default) or zstd, per section
 *     level: 3                     # zstd level, default 3, in [1, 19]
 *
 * Relative paths under calibration.text and gates.text resolve against the
 * recipe file's directory. Anchors and aliases are rejected. */
#ifndef QC_RECIPE_H
#define QC_RECIPE_H

#include "err.h"
#include "pass.h"

#include <stddef.h>
#include <stdint.h>

#define QC_RECIPE_MAX_LIST 4096        /* longest list accepted anywhere */

/* One glob of a pass's targets/ignore list and where it was written. */
typedef struct qc_recipe_glob {
    char *pattern;
    int line, col; /* 0 when defaulted */
} qc_recipe_glob;

/* One pass invocation: `- name: { params..., targets: [...], ignore: [...] }`. */
typedef struct qc_recipe_pass {
    const qc_pass *pass;     /* from the registry */
    qc_params params;        /* every schema parameter, in schema order, defaults filled */
    qc_recipe_glob *targets; /* default ["*"] */
    int n_targets;
    qc_recipe_glob *ignore; /* default [] */
    int n_ignore;
    int line, col; /* of the pass name */
} qc_recipe_pass;

typedef struct qc_recipe_export {
    char *format, *path;     /* as written: "gguf" or "compressed-tensors" */
    int fallback_dequantize; /* fallback: dequantize */
    int line, col;
} qc_recipe_export;

typedef struct qc_recipe {
    char *path; /* as given to load/parse (the name used in messages) */
    char *text; /* the whole recipe, NUL-terminated, for provenance */
    size_t text_len;
    int version;
    struct {
        char *text; /* resolved against the recipe's directory when relative */
        int samples, tokens;
        uint64_t seed;
        int line, col;                 /* of the calibration: key */
        int text_line, text_col;       /* where each value was written */
        int samples_line, samples_col; /* (0 when defaulted) */
        int tokens_line, tokens_col;
        int seed_line, seed_col;
    } calib;
    qc_recipe_pass *passes;
    int n_passes;
    char **targets; /* codegen targets, as written */
    int n_targets;
    struct {
        int enabled;
        char *text; /* resolved like calib.text */
        int ctx, windows;
        double max_ppl_increase_pct, max_kl; /* negative = unset */
        int line, col;
    } gates;
    qc_recipe_export *exports;
    int n_exports;
    struct {
        int zstd;      /* compress the artifact's sections with zstd */
        int level;     /* zstd level (default 3) */
        int line, col; /* of the artifact: key (0 when absent) */
    } artifact;
} qc_recipe;

/* Reads and parses a recipe file (at most QUANTC_MAX_RECIPE_BYTES, compiler/limits.h). Relative
 * data paths resolve against the file's directory. Returns NULL with err. */
qc_recipe *qc_recipe_load(const char *path, qc_err *err);

/* Parses a recipe from memory. name is used in messages (NULL: "<recipe>");
 * base_dir resolves relative data paths (NULL: left as written). text need
 * not be NUL-terminated. The result owns copies of everything. */
qc_recipe *qc_recipe_parse(const char *text, size_t len, const char *name, const char *base_dir,
                           qc_err *err);

void qc_recipe_free(qc_recipe *r);

/* Does pass invocation p apply to the linear `name`? Names are module names
 * ("model.layers.3.mlp.down_proj"); a trailing ".weight" is ignored. Globs
 * use fnmatch(3) without FNM_PATHNAME, so "*" crosses dots. Targeted = some
 * target matches and no ignore pattern does. */
int qc_recipe_pass_matches(const qc_recipe_pass *p, const char *name);

/* Checks that every target and ignore glob of every pass matches at least
 * one of the n linear names (same naming as above). */
int qc_recipe_check_targets(const qc_recipe *r, const char *const *names, int n, qc_err *err);

/* Frees the values of p (not p itself). */
void qc_params_free(qc_params *p);

/* Checks a pass's schema: names unique and not "targets"/"ignore", defaults
 * parse as their type and lie in range, enum defaults are allowed values.
 * Our own invariant, exposed so a test can check every registered pass. */
int qc_pass_check_schema(const qc_pass *pass, qc_err *err);

/* Every registered pass with its doc and parameters (type, default, range or
 * allowed values, doc) as text for `quantc passes` (passes/registry.c).
 * Returns a malloc'd string the caller frees, or NULL when out of memory. */
char *qc_passes_describe(void);

#endif
