/* Recipes: the committed recipes parse; defaults are filled from the pass
 * schemas; every validation error names the exact line:column; target
 * globs match module names and unmatched globs are errors. */
#include "compiler/limits.h"
#include "compiler/recipe.h"
#include "tests/check.h"

#include <string.h>
#include <unistd.h>

static qc_recipe *parse(const char *text, qc_err *err) {
    return qc_recipe_parse(text, strlen(text), "t.yaml", NULL, err);
}

/* The recipe must fail with exactly this message (or start with it, for
 * messages that go on to list valid names). */
static void expect_error(int line, const char *text, const char *want, int prefix_only) {
    qc_err err = {{0}};
    qc_recipe *r = parse(text, &err);
    if (r) {
        fprintf(stderr, "test_recipe.c:%d: parsed, expected error '%s'\n", line, want);
        qc_test_failures++;
        qc_recipe_free(r);
        return;
    }
    int ok = prefix_only ? strncmp(err.msg, want, strlen(want)) == 0 : strcmp(err.msg, want) == 0;
    if (!ok) {
        fprintf(stderr, "test_recipe.c:%d: error\n  got:  %s\n  want: %s%s\n", line, err.msg, want,
                prefix_only ? "..." : "");
        qc_test_failures++;
    }
}
#define ERR(text, want) expect_error(__LINE__, text, want, 0)
#define ERR_PREFIX(text, want) expect_error(__LINE__, text, want, 1)

#define HEAD "quantc: 1\ncalibration: { text: c.txt }\n"

static void test_committed_recipes(void) {
    static const char *files[] = {"recipes/w8a16.yaml", "recipes/w4a16-g128.yaml",
                                  "recipes/w3a16-g128.yaml"};
    static const struct {
        const char *method;
        int bits, group, sym;
        double gate;
    } want[] = {{"rtn", 8, 0, 1, 1.0}, {"gptq", 4, 128, 0, 25.0}, {"gptq", 3, 128, 0, 100.0}};
    for (int i = 0; i < 3; i++) {
        qc_err err;
        qc_recipe *r = qc_recipe_load(files[i], &err);
        CHECK_MSG(r, "%s", err.msg);
        if (!r) continue;
        CHECK(r->version == 1);
        CHECK(strcmp(r->path, files[i]) == 0);
        CHECK(r->text && strstr(r->text, "quantc: 1"));
        CHECK(strcmp(r->calib.text, "recipes/../../shared/data/wikitext2-valid.tokens.txt") == 0);
        CHECK(r->calib.samples == 128 && r->calib.tokens == 512 && r->calib.seed == 0);
        CHECK(r->n_passes == 1 && strcmp(r->passes[0].pass->name, "quantize") == 0);
        const qc_params *p = &r->passes[0].params;
        CHECK(strcmp(qc_params_str(p, "method"), want[i].method) == 0);
        CHECK(qc_params_int(p, "bits") == want[i].bits);
        CHECK(qc_params_int(p, "group_size") == want[i].group);
        CHECK(qc_params_bool(p, "symmetric") == want[i].sym);
        CHECK(r->passes[0].n_targets == 1 &&
              strcmp(r->passes[0].targets[0].pattern, "model.layers.*") == 0);
        CHECK(r->n_targets == 1 && strcmp(r->targets[0], "cpu:host") == 0);
        CHECK(r->gates.enabled && r->gates.ctx == 512 && r->gates.windows == 40);
        CHECK(r->gates.max_ppl_increase_pct == want[i].gate && r->gates.max_kl < 0);
        CHECK(strcmp(r->gates.text, "recipes/../../shared/data/wikitext2-test.raw.txt") == 0);
        /* The data paths name real files when the shared data is checked out. */
        if (access("../shared/data", F_OK) == 0)
            CHECK(access(r->calib.text, R_OK) == 0 && access(r->gates.text, R_OK) == 0);
        qc_recipe_free(r);
    }
}

static void test_defaults_and_fields(void) {
    const char *text =
        "quantc: 1\n"
        "calibration:\n"
        "  text: /abs/c.txt\n"
        "  seed: 7\n"
        "passes:\n"
        "  - quantize: { bits: 3, damp: 1, targets: [\"*.mlp.*\"], ignore: [lm_head] }\n"
        "  - quantize:\n"
        "  - quantize\n"
        "export: [ { format: gguf, path: out.gguf } ]\n";
    qc_err err;
    qc_recipe *r = qc_recipe_parse(text, strlen(text), "t.yaml", "base", &err);
    CHECK_FATAL(r);
    CHECK(strcmp(r->calib.text, "/abs/c.txt") == 0); /* absolute: not resolved */
    CHECK(r->calib.samples == 128 && r->calib.tokens == 512 && r->calib.seed == 7);
    CHECK(r->calib.seed_line == 4 && r->calib.seed_col == 9 && r->calib.samples_line == 0);
    CHECK(r->n_passes == 3);
    const qc_recipe_pass *p = &r->passes[0];
    CHECK(p->line == 6 && p->col == 5);
    CHECK(qc_params_int(&p->params, "bits") == 3);
    CHECK(qc_params_float(&p->params, "damp") == 1.0); /* an int is a valid float */
    CHECK(qc_params_get(&p->params, "bits")->line == 6 &&
          qc_params_get(&p->params, "bits")->col == 23);
    CHECK(qc_params_get(&p->params, "group_size")->line == 0); /* defaulted */
    CHECK(qc_params_int(&p->params, "group_size") == 128);
    CHECK(strcmp(qc_params_str(&p->params, "method"), "gptq") == 0);
    CHECK(qc_params_float(&p->params, "clip_min") == 0.75);
    CHECK(p->params.n == r->passes[1].params.n);
    CHECK(p->n_targets == 1 && strcmp(p->targets[0].pattern, "*.mlp.*") == 0);
    CHECK(p->targets[0].line == 6 && p->targets[0].col == 45);
    CHECK(p->n_ignore == 1 && strcmp(p->ignore[0].pattern, "lm_head") == 0);
    CHECK(r->passes[1].n_targets == 1 && r->passes[1].targets[0].line == 0);
    CHECK(r->passes[2].n_ignore == 0 && qc_params_int(&r->passes[2].params, "bits") == 4);
    CHECK(!r->gates.enabled && r->n_targets == 0);
    CHECK(r->n_exports == 1 && strcmp(r->exports[0].format, "gguf") == 0 &&
          strcmp(r->exports[0].path, "out.gguf") == 0);
    qc_recipe_free(r);

    /* artifact: defaults to no compression (level 3 when zstd is chosen). */
    const char *a = HEAD "passes: [quantize]\nartifact: {compress: zstd, level: 9}\n";
    r = qc_recipe_parse(a, strlen(a), "t.yaml", NULL, &err);
    CHECK_FATAL(r);
    CHECK(r->artifact.zstd == 1 && r->artifact.level == 9 && r->artifact.line == 4);
    qc_recipe_free(r);
    a = HEAD "passes: [quantize]\n";
    r = qc_recipe_parse(a, strlen(a), "t.yaml", NULL, &err);
    CHECK_FATAL(r);
    CHECK(r->artifact.zstd == 0 && r->artifact.level == 3 && r->artifact.line == 0);
    qc_recipe_free(r);

    /* Relative paths resolve against base_dir. */
    const char *g = HEAD "passes: [quantize]\ngates: { text: t.txt, max_kl: 0.05 }\n";
    r = qc_recipe_parse(g, strlen(g), "t.yaml", "dir/", &err);
    CHECK_FATAL(r);
    CHECK(strcmp(r->calib.text, "dir/c.txt") == 0 && strcmp(r->gates.text, "dir/t.txt") == 0);
    CHECK(r->gates.max_kl == 0.05 && r->gates.max_ppl_increase_pct < 0);
    CHECK(r->gates.ctx == 512 && r->gates.windows == 64);
    qc_recipe_free(r);
}

static void test_errors(void) {
    /* Syntax, structure, version. */
    ERR("quantc: 1\ncalibration: [\n", "t.yaml:3:1: YAML syntax error: did not find expected node "
                                       "content while parsing a flow node");
    ERR("", "t.yaml: empty recipe");
    ERR("- 1\n", "t.yaml:1:1: a recipe is a map (quantc, calibration, passes, ...), got list");
    ERR("calibration: {text: c}\npasses: [quantize]\n",
        "t.yaml:1:1: missing 'quantc: 1' (the recipe format version)");
    ERR("quantc: 2\n", "t.yaml:1:9: unsupported recipe version 2 (this quantc reads version 1)");
    ERR("quantc: \"1\"\n", "t.yaml:1:9: recipe: quantc must be an int, got string \"1\"");
    ERR("quantc: 1\npasses: [quantize]\n", "t.yaml:1:1: missing required section 'calibration'");
    ERR("quantc: 1\ncalibration: {text: c}\n", "t.yaml:1:1: missing required section 'passes'");
    ERR(HEAD "passes: []\n", "t.yaml:3:1: passes: the list is empty; give at least one pass");
    ERR(HEAD "passes: quantize\n",
        "t.yaml:3:9: recipe: passes must be a list, got string \"quantize\"");
    ERR(HEAD "passes: [quantize]\npasess: 1\n",
        "t.yaml:4:1: unknown key 'pasess' (did you mean 'passes'?); valid: quantc, calibration, "
        "passes, targets, gates, export, artifact");
    /* The artifact section. */
    ERR(HEAD "passes: [quantize]\nartifact: {compress: lz4}\n",
        "t.yaml:4:22: artifact: compress must be one of none, zstd, got 'lz4'");
    ERR(HEAD "passes: [quantize]\nartifact: {compress: zstd, level: 25}\n",
        "t.yaml:4:35: artifact: level must be in [1, 19], got 25");
    ERR_PREFIX(HEAD "passes: [quantize]\nartifact: {compres: zstd}\n",
               "t.yaml:4:12: artifact: unknown key 'compres' (did you mean 'compress'?)");
    ERR(HEAD "passes: [quantize]\nquantc: 1\n",
        "t.yaml:4:1: recipe: duplicate key 'quantc' (first at 1:1)");
    ERR("a: &x 1\nb: *x\n", "t.yaml:2:4: YAML aliases are not supported in recipes");
    ERR("quantc: 1\n---\nquantc: 1\n", "t.yaml:2:1: a recipe is one YAML document; found a second");
    ERR("x: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        "t.yaml:1:35: nested deeper than 32 levels");

    /* Calibration section. */
    ERR("quantc: 1\ncalibration: {samples: 4}\npasses: [quantize]\n",
        "t.yaml:2:1: calibration: missing required key 'text'");
    ERR("quantc: 1\ncalibration: {text: c, samples: 0}\npasses: [quantize]\n",
        "t.yaml:2:33: calibration: samples must be in [1, 1048576], got 0");
    ERR("quantc: 1\ncalibration: {text: c, tokens: 1}\npasses: [quantize]\n",
        "t.yaml:2:32: calibration: tokens must be in [2, 1048576], got 1");
    ERR("quantc: 1\ncalibration: {text: c, sample: 4}\npasses: [quantize]\n",
        "t.yaml:2:24: calibration: unknown key 'sample' (did you mean 'samples'?); valid: text, "
        "samples, tokens, seed");
    ERR("quantc: 1\ncalibration: {text: \"\"}\npasses: [quantize]\n",
        "t.yaml:2:21: calibration: text must not be empty");
    ERR("quantc: 1\ncalibration: c.txt\npasses: [quantize]\n",
        "t.yaml:2:14: calibration must be a map, got string \"c.txt\"");
    ERR("quantc: 1\ncalibration: {text: c, seed: 99999999999999999999}\npasses: [quantize]\n",
        "t.yaml:2:30: calibration: seed: integer 99999999999999999999 out of range");

    /* Passes and their parameters. */
    ERR_PREFIX(HEAD "passes:\n  - quantise: {bits: 4}\n",
               "t.yaml:4:5: unknown pass 'quantise' (did you mean 'quantize'?); passes: ");
    ERR_PREFIX(HEAD "passes:\n  - quantize: {bitz: 4}\n",
               "t.yaml:4:16: quantize: unknown parameter 'bitz' (did you mean 'bits'?); valid: "
               "method, bits,");
    ERR(HEAD "passes:\n  - quantize: {bits: 9}\n",
        "t.yaml:4:22: quantize: bits must be in [2, 8], got 9");
    ERR(HEAD "passes:\n  - quantize: {bits: \"4\"}\n",
        "t.yaml:4:22: quantize: bits must be an int, got string \"4\"");
    ERR(HEAD "passes:\n  - quantize: {bits: 4.5}\n",
        "t.yaml:4:22: quantize: bits must be an int, got float 4.5");
    ERR(HEAD "passes:\n  - quantize: {bits: [4]}\n",
        "t.yaml:4:22: quantize: bits must be an int, got list");
    ERR(HEAD "passes:\n  - quantize: {bits: }\n",
        "t.yaml:4:22: quantize: bits must be an int, got null");
    ERR(HEAD "passes:\n  - quantize: {damp: fast}\n",
        "t.yaml:4:22: quantize: damp must be a number, got string \"fast\"");
    ERR(HEAD "passes:\n  - quantize: {damp: .nan}\n",
        "t.yaml:4:22: quantize: damp must be finite, got .nan");
    ERR(HEAD "passes:\n  - quantize: {damp: 1.5e0}\n",
        "t.yaml:4:22: quantize: damp must be in [0, 1], got 1.5e0");
    ERR(HEAD "passes:\n  - quantize: {act_order: yes}\n",
        "t.yaml:4:27: quantize: act_order must be true or false, got string \"yes\"");
    ERR(HEAD "passes:\n  - quantize: {method: awq}\n",
        "t.yaml:4:24: quantize: method must be one of rtn, gptq, got 'awq'");
    ERR(HEAD "passes:\n  - quantize: {bits: 4, bits: 3}\n",
        "t.yaml:4:25: quantize: duplicate key 'bits' (first at 4:16)");
    ERR(HEAD "passes:\n  - quantize: {bits: 4}\n    rotate: {}\n",
        "t.yaml:4:5: passes: each entry is a one-key map like '- quantize: { bits: 4 }', got 2 "
        "keys");
    ERR(HEAD "passes:\n  - quantize: 4\n", "t.yaml:4:15: quantize must be a map, got int 4");
    ERR(HEAD "passes:\n  - quantize: {targets: []}\n",
        "t.yaml:4:25: quantize: targets is empty, so the pass would apply to nothing");
    ERR(HEAD "passes:\n  - quantize: {ignore: lm_head}\n",
        "t.yaml:4:24: quantize: ignore must be a list, got string \"lm_head\"");
    ERR(HEAD "passes:\n  - quantize: {targets: [[a]]}\n",
        "t.yaml:4:26: quantize: items of targets must be strings, got list");
    ERR(HEAD "passes:\n  - [quantize]\n", "t.yaml:4:5: passes: expected a pass name, got list");

    /* Gates and export. */
    ERR(HEAD "passes: [quantize]\ngates: {text: t}\n",
        "t.yaml:4:1: gates: give max_ppl_increase_pct and/or max_kl");
    ERR(HEAD "passes: [quantize]\ngates: {text: t, max_kl: -1}\n",
        "t.yaml:4:26: gates: max_kl must be >= 0, got -1");
    ERR(HEAD "passes: [quantize]\ngates: {max_kl: 1}\n",
        "t.yaml:4:1: gates: missing required key 'text'");
    ERR(HEAD "passes: [quantize]\nexport: [{format: gguf}]\n",
        "t.yaml:4:10: export: missing required key 'path'");
    ERR(HEAD "passes: [quantize]\ntargets: cpu\n",
        "t.yaml:4:10: recipe: targets must be a list, got string \"cpu\"");
}

static void test_globs(void) {
    const char *text = HEAD "passes:\n"
                            "  - quantize: { targets: [\"*.mlp.*\", \"*.self_attn.[qk]_proj\"],\n"
                            "                ignore: [\"*.layers.1.*\"] }\n";
    qc_err err;
    qc_recipe *r = parse(text, &err);
    CHECK_FATAL(r);
    const qc_recipe_pass *p = &r->passes[0];
    CHECK(qc_recipe_pass_matches(p, "model.layers.0.mlp.down_proj"));
    CHECK(qc_recipe_pass_matches(p, "model.layers.0.mlp.down_proj.weight"));
    CHECK(qc_recipe_pass_matches(p, "model.layers.12.self_attn.q_proj"));
    CHECK(!qc_recipe_pass_matches(p, "model.layers.0.self_attn.v_proj"));
    CHECK(!qc_recipe_pass_matches(p, "model.layers.1.mlp.up_proj")); /* ignored */
    CHECK(qc_recipe_pass_matches(p, "model.layers.11.mlp.up_proj"));

    const char *names[] = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj",
                           "model.layers.1.mlp.up_proj"};
    CHECK_MSG(qc_recipe_check_targets(r, names, 3, &err) == 0, "%s", err.msg);
    CHECK(qc_recipe_check_targets(r, names, 2, &err) < 0);
    CHECK_MSG(strcmp(err.msg, "t.yaml:5:26: quantize: ignore pattern '*.layers.1.*' matches no "
                              "layer of the model (e.g. model.layers.0.self_attn.q_proj)") == 0,
              "%s", err.msg);
    CHECK(qc_recipe_check_targets(r, names + 1, 1, &err) < 0);
    CHECK_MSG(strcmp(err.msg,
                     "t.yaml:4:38: quantize: target pattern '*.self_attn.[qk]_proj' "
                     "matches no layer of the model (e.g. model.layers.0.mlp.up_proj)") == 0,
              "%s", err.msg);
    qc_recipe_free(r);

    /* The default targets every block linear but not lm_head; "*" crosses
     * dots and matches everything, lm_head included. */
    r = parse(HEAD "passes: [quantize]\n", &err);
    CHECK_FATAL(r);
    CHECK(qc_recipe_pass_matches(&r->passes[0], "model.layers.0.mlp.up_proj"));
    CHECK(!qc_recipe_pass_matches(&r->passes[0], "lm_head"));
    CHECK(qc_recipe_check_targets(r, names, 3, &err) == 0);
    CHECK(qc_recipe_check_targets(r, names, 0, &err) < 0);
    CHECK_MSG(strcmp(err.msg, "t.yaml: quantize: target pattern 'model.layers.*' matches no layer "
                              "of the model (the model has no linear layers)") == 0,
              "%s", err.msg);
    qc_recipe_free(r);
    r = parse(HEAD "passes: [{quantize: {targets: ['*']}}]\n", &err);
    CHECK_FATAL(r);
    CHECK(qc_recipe_pass_matches(&r->passes[0], "lm_head"));
    qc_recipe_free(r);
}

static void test_registry(void) {
    CHECK(qc_pass_count() >= 1);
    for (int i = 0; i < qc_pass_count(); i++) {
        const qc_pass *p = qc_pass_at(i);
        qc_err err;
        CHECK(qc_pass_find(p->name) == p);
        CHECK_MSG(qc_pass_check_schema(p, &err) == 0, "%s", err.msg);
    }
    CHECK(qc_pass_at(-1) == NULL && qc_pass_at(qc_pass_count()) == NULL);
    CHECK(qc_pass_find("nope") == NULL);
    char *d = qc_passes_describe();
    CHECK_FATAL(d);
    CHECK(strstr(d, "quantize: ") && strstr(d, "bits") && strstr(d, "in [2, 8]") &&
          strstr(d, "one of: rtn gptq") && strstr(d, "targets") && strstr(d, "ignore"));
    free(d);
}

static void test_load_errors(void) {
    qc_err err;
    CHECK(!qc_recipe_load("tests/data/no-such-recipe.yaml", &err));
    CHECK(strstr(err.msg, "tests/data/no-such-recipe.yaml: cannot open"));
    CHECK(!qc_recipe_load("recipes", &err));
    CHECK_MSG(strcmp(err.msg, "recipes: cannot read: Is a directory") == 0, "%s", err.msg);
    /* A buffer over the size limit is refused before parsing. */
    CHECK(!qc_recipe_parse("x", qc_limit(QC_LIMIT_RECIPE_BYTES) + 1, "big.yaml", NULL, &err));
    CHECK_MSG(strstr(err.msg, "big.yaml: recipe is 1048577 bytes") &&
                  strstr(err.msg, "QUANTC_MAX_RECIPE_BYTES raises it"),
              "%s", err.msg);
    /* Invalid UTF-8 is a reader error with a byte offset. */
    ERR("quantc: 1\n\xff\n", "t.yaml: byte 10: YAML syntax error: invalid leading UTF-8 octet");
}

int main(void) {
    test_committed_recipes();
    test_defaults_and_fields();
    test_errors();
    test_globs();
    test_registry();
    test_load_errors();
    TEST_END();
}
