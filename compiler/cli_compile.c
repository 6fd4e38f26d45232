/* quantc compile / recipe check / passes. */
#include "codegen/cpu_llvm.h"
#include "codegen/cuda_nvrtc.h"
#include "compiler/limits.h"
#include "compiler/artifact_model.h"
#include "compiler/calibrate.h"
#include "compiler/checkpoint.h"
#include "compiler/cli.h"
#include "compiler/quant.h"
#include "compiler/recipe.h"
#include "compiler/tokenizer.h"
#include "runtime/eval.h"
#include "runtime/forward.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

static const char *compile_help =
    "usage: quantc compile [MODEL] -r RECIPE -o OUT.qc [options]\n"
    "\n"
    "Runs the recipe's passes over MODEL block by block with calibration data\n"
    "and writes the compiled model to the artifact file OUT.qc (one file: a JSON\n"
    "manifest with the config, layers, provenance and metrics; the tokenizer;\n"
    "the tensors; docs/artifact-format.md). `quantc eval OUT.qc` measures it and\n"
    "`quantc inspect OUT.qc` describes it. The file is written beside OUT under a\n"
    "temporary name and renamed into place. When the recipe has gates, the\n"
    "compiled model is evaluated against MODEL and a failed gate exits 1 without\n"
    "writing OUT. The recipe's export: entries ({format: gguf | compressed-tensors,\n"
    "path: P, fallback: none | dequantize}) are then written from OUT, as\n"
    "`quantc export OUT` would (paths relative to the working directory).\n"
    "\n"
    "  -r, --recipe FILE      recipe (YAML; see recipes/)\n"
    "  -o, --out FILE         output artifact, by convention NAME.qc (replaced if it\n"
    "                         is an earlier artifact; any other file is kept)\n"
    "  --calib FILE           calibration text instead of the recipe's\n"
    "  --calib-samples N      number of calibration samples instead of the recipe's\n"
    "  --calib-tokens T       tokens per sample instead of the recipe's\n"
    "  --seed S               calibration seed instead of the recipe's\n"
    "  --compress none|zstd[:LEVEL]\n"
    "                         section compression instead of the recipe's artifact:\n"
    "                         (zstd level 1..19, default 3)\n"
    "  --target LIST          code generation targets instead of the recipe's\n"
    "                         `targets:`, comma-separated: cpu:host (this CPU),\n"
    "                         cpu:x86-64-v3, cpu:x86-64-v4, cpu:aarch64, a CUDA\n"
    "                         architecture such as cuda:sm_90a or cuda:sm_80, or\n"
    "                         none. Default: cpu:host when quantc was built with\n"
    "                         LLVM. Layers are stored packed for the CPU kernels\n"
    "                         either way; CUDA targets add the GPU layout and the\n"
    "                         NVRTC-compiled kernels (PTX + CUBIN) per architecture\n"
    "  --checkpoint DIR       save each finished block to DIR; after a crash, kill or\n"
    "                         interrupt, the same command resumes from the last\n"
    "                         finished block and writes the same artifact. On by\n"
    "                         default (DIR = OUT.ckpt) for compiles expected to take\n"
    "                         over a minute; removed when the compile finishes\n"
    "  --no-checkpoint        never checkpoint\n"
    "  --report FILE          also write the per-layer report as JSON to FILE\n"
    "  --no-gates             skip the recipe's quality gates\n"
    "  --threads N            threads (default: all cores)\n"
    "  --quiet                no progress line, no per-layer table\n";

static const char *recipe_help = "usage: quantc recipe check RECIPE [--model MODEL]\n"
                                 "\n"
                                 "Validates a recipe against every pass's parameter schema\n"
                                 "(errors give file:line:column). With --model, also checks\n"
                                 "that every target/ignore pattern matches a layer of MODEL.\n";

enum {
    OPT_CALIB = 2000,
    OPT_SAMPLES,
    OPT_TOKENS,
    OPT_SEED,
    OPT_REPORT,
    OPT_NO_GATES,
    OPT_THREADS,
    OPT_QUIET,
    OPT_HELP,
    OPT_MODEL,
    OPT_COMPRESS,
    OPT_TARGET,
    OPT_CHECKPOINT,
    OPT_NO_CHECKPOINT
};

/* ---- interruption ---- */

/* What the SIGINT/SIGTERM handler says and removes: prepared before the
 * compile starts (a handler may only call async-signal-safe functions). */
static char sig_tmp[4200];          /* the artifact writer's temporary file */
static char sig_msg[4400];          /* the message, up to the block number */
static volatile sig_atomic_t sig_block = -1;

static void on_signal(int sig) {
    char num[16], *p = num + sizeof num;
    long b = sig_block;
    *--p = 0;
    do
        *--p = (char)('0' + b % 10);
    while ((b /= 10) > 0 && p > num);
    ssize_t w = write(2, "\nquantc: interrupted in block ", 30);
    if (sig_block >= 0) w = write(2, p, strlen(p));
    w = write(2, sig_msg, strlen(sig_msg));
    (void)w;
    if (sig_tmp[0]) unlink(sig_tmp);
    _exit(128 + sig);
}

static void catch_signals(const char *out, const char *ckpt) {
    snprintf(sig_tmp, sizeof sig_tmp, "%s.tmp.%ld", out, (long)getpid());
    if (ckpt)
        snprintf(sig_msg, sizeof sig_msg,
                 "; %s was not written. Finished blocks are saved in %s: run the same command "
                 "again to resume.\n",
                 out, ckpt);
    else
        snprintf(sig_msg, sizeof sig_msg, "; %s was not written (no checkpoint).\n", out);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The key of a compile for its checkpoint: everything the result depends
 * on (quantc version, recipe text, source files, calibration text and the
 * effective settings, code generation targets do not matter: they are
 * applied after calibration). */
static char *compile_key(const qc_model *m, const qc_recipe *r, const qc_calib_overrides *ov,
                         qc_err *err) {
    json_t *src = qc_artifact_source_hash(m, err);
    if (!src) return NULL;
    const char *text = ov->text ? ov->text : r->calib.text;
    size_t len;
    char *t = qc_read_limited(text, QC_LIMIT_TEXT_BYTES, &len, err);
    if (!t) {
        json_decref(src);
        return NULL;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s|%s|%016llx|%d|%d|%lld", QC_VERSION,
             json_string_value(json_object_get(src, "xxh3")),
             (unsigned long long)XXH3_64bits(t, len), ov->samples > 0 ? ov->samples : r->calib.samples,
             ov->tokens > 0 ? ov->tokens : r->calib.tokens,
             (long long)(ov->seed >= 0 ? ov->seed : (int64_t)r->calib.seed));
    free(t);
    json_decref(src);
    XXH3_state_t *st = XXH3_createState();
    char *key = malloc(40);
    if (!st || !key) {
        XXH3_freeState(st);
        free(key);
        qc_err_set(err, "out of memory");
        return NULL;
    }
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, buf, strlen(buf) + 1);
    XXH3_64bits_update(st, r->text, r->text_len);
    snprintf(key, 40, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
    XXH3_freeState(st);
    return key;
}

/* Whether a compile is expected to take over a minute: multiply-adds of the
 * calibration forward passes (a rough lower bound; quantization adds more). */
static int long_compile(const qc_model *m, const qc_recipe *r, const qc_calib_overrides *ov) {
    const qc_config *c = &m->cfg;
    double tokens = (double)(ov->samples > 0 ? ov->samples : r->calib.samples) *
                    (double)(ov->tokens > 0 ? ov->tokens : r->calib.tokens);
    double per_token = 4.0 * c->dim * c->dim + 3.0 * c->dim * c->ffn_dim;
    return (double)c->n_layers * tokens * per_token > 1e12;
}

#define MAX_TARGETS 16

/* Splits the code generation targets (a comma-separated --target value, or
 * the recipe's list) into CPU target names ("cpu:NAME" -> NAME) in
 * names[0..*n) and CUDA architectures ("cuda:sm_90a" -> sm_90a) in
 * archs[0..*n_archs). "none" alone means no kernels. Returns 0, or -1 with
 * err naming the bad entry. list is modified (NUL at commas). */
static int parse_targets(char **items, int n_items, const char *where, const char **names, int *n,
                         const char **archs, int *n_archs, qc_err *err) {
    *n = *n_archs = 0;
    for (int i = 0; i < n_items; i++) {
        const char *t = items[i];
        if (!strcmp(t, "none") && n_items == 1) return 0;
        if (!strncmp(t, "cuda:", 5)) {
            if (qc_nvrtc_arch_check(t + 5, err))
                return qc_err_prefix(err, "%s: target '%s'", where, t);
            for (int k = 0; k < *n_archs; k++)
                if (!strcmp(archs[k], t + 5))
                    return qc_err_set(err, "%s: target '%s' is listed twice", where, t);
            if (*n_archs == MAX_TARGETS)
                return qc_err_set(err, "%s: more than %d targets", where, MAX_TARGETS);
            archs[(*n_archs)++] = t + 5;
            continue;
        }
        if (strncmp(t, "cpu:", 4) || !t[4])
            return qc_err_set(err,
                              "%s: target '%s': expected cpu:host, cpu:x86-64-v3, cpu:x86-64-v4, "
                              "cpu:aarch64, cuda:sm_NN[a] or none",
                              where, t);
        char desc[512];
        if (qc_cpu_target_describe(t + 4, desc, sizeof desc, err))
            return qc_err_prefix(err, "%s: target '%s'", where, t);
        for (int k = 0; k < *n; k++)
            if (!strcmp(names[k], t + 4))
                return qc_err_set(err, "%s: target '%s' is listed twice", where, t);
        if (*n == MAX_TARGETS) return qc_err_set(err, "%s: more than %d targets", where, MAX_TARGETS);
        names[(*n)++] = t + 4;
    }
    return 0;
}

typedef struct progress {
    double t0;
    int quiet;
} progress;

static void on_progress(void *ud, int block, int n, const char *what) {
    progress *p = ud;
    sig_block = block;
    if (p->quiet) return;
    double el = qc_cli_now_s() - p->t0;
    double eta = block > 0 ? el / block * (n - block) : 0;
    fprintf(stderr, "\rblock %d/%d  %-10s  elapsed %.0fs  eta %.0fs   ", block < n ? block + 1 : n,
            n, what, el, eta);
    if (block == n) fprintf(stderr, "\n");
}

static void on_eval_progress(void *ud, int done, int total, double nll) {
    progress *p = ud;
    if (p->quiet) return;
    fprintf(stderr, "\rgate eval: window %d/%d  ppl %.4f   ", done, total, exp(nll));
    if (done == total) fprintf(stderr, "\n");
}

static void print_table(const qc_calib_report *rep) {
    printf("%-40s %-6s %4s %5s %6s %10s %10s %7s\n", "layer", "method", "bits", "group", "bpw",
           "w err", "out err", "time s");
    for (int i = 0; i < rep->n_layers; i++) {
        const qc_layer_report *l = &rep->layers[i];
        printf("%-40s %-6s %4d %5d %6.3f %10.3e %10.3e %7.2f\n", l->name, l->method, l->bits,
               l->group_size, l->bits_per_weight, l->weight_err, l->output_err, l->seconds);
    }
    for (int i = 0; i < rep->n_layers; i++)
        if (rep->layers[i].note[0])
            printf("note: %s: %s\n", rep->layers[i].name, rep->layers[i].note);
    printf("%d layers, %.3f bits per weight over %lld quantized of %lld linear parameters, "
           "%.1f s, peak RSS %.0f MiB\n",
           rep->n_layers, rep->avg_bits, (long long)rep->quantized_params,
           (long long)rep->total_linear_params, rep->seconds, rep->peak_rss_kb / 1024.0);
}

/* Evaluates the compiled model against the original on the gate text. */
static int run_gates(qc_model *m, const qc_recipe *r, int quiet, json_t *metrics, int *failed,
                     qc_err *err) {
    *failed = 0;
    size_t len, n_ids = 0;
    int32_t *ids = NULL;
    char *text = qc_read_limited(r->gates.text, QC_LIMIT_TEXT_BYTES, &len, err);
    if (!text) return -1;
    int rc = qc_tokenizer_encode(m->tok, text, len, 0, &ids, &n_ids, err);
    free(text);
    if (rc) return qc_err_prefix(err, "%s", r->gates.text);
    /* The reference is the same IR with the quantized states set aside. */
    qc_qlinear *quant = m->quant;
    int n_quant = m->n_quant;
    m->quant = NULL;
    m->n_quant = 0;
    qcrt_model *ref = qcrt_model_from_ir(m, err);
    m->quant = quant;
    m->n_quant = n_quant;
    qcrt_model *qm = ref ? qcrt_model_from_ir(m, err) : NULL;
    progress p = {qc_cli_now_s(), quiet};
    qcrt_eval_opts eo = {.ctx = r->gates.ctx,
                         .max_windows = r->gates.windows,
                         .progress = on_eval_progress,
                         .ud = &p};
    qcrt_eval_result res;
    rc = qm ? qcrt_eval_ppl(qm, ref, ids, n_ids, &eo, &res, err) : -1;
    if (rc == 0) {
        double inc = (res.ppl / res.ref_ppl - 1) * 100;
        json_t *g =
            json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "text", r->gates.text, "ctx",
                      r->gates.ctx, "windows", res.windows, "ppl", res.ppl, "ref_ppl", res.ref_ppl,
                      "ppl_increase_pct", inc, "kl", res.kl, "top1_agreement", res.top1);
        printf("gate eval: %d windows of %d: perplexity %.4f vs %.4f unquantized (%+.2f%%), "
               "KL %.5f, top-1 %.2f%%\n",
               res.windows, r->gates.ctx, res.ppl, res.ref_ppl, inc, res.kl, 100 * res.top1);
        if (r->gates.max_ppl_increase_pct >= 0 && !(inc <= r->gates.max_ppl_increase_pct)) {
            fprintf(stderr,
                    "quantc: gate failed: perplexity increase %.2f%% > max_ppl_increase_pct "
                    "%.2f (%s:%d)\n",
                    inc, r->gates.max_ppl_increase_pct, r->path, r->gates.line);
            *failed = 1;
        }
        if (r->gates.max_kl >= 0 && !(res.kl <= r->gates.max_kl)) {
            fprintf(stderr, "quantc: gate failed: KL %.5f > max_kl %.5f (%s:%d)\n", res.kl,
                    r->gates.max_kl, r->path, r->gates.line);
            *failed = 1;
        }
        json_object_set_new(g, "passed", json_boolean(!*failed));
        json_object_set_new(metrics, "gates", g);
    }
    qcrt_model_free(qm);
    qcrt_model_free(ref);
    free(ids);
    return rc;
}

/* "none", "zstd" or "zstd:LEVEL" (c may be NULL to only check). */
static int parse_compress(const char *s, qc_artifact_compress *c) {
    qc_artifact_compress v = {QCRT_COMP_NONE, 3};
    long level;
    if (!strcmp(s, "zstd"))
        v.method = QCRT_COMP_ZSTD;
    else if (!strncmp(s, "zstd:", 5) && qc_cli_parse_int(s + 5, 1, 19, &level) == 0)
        v.method = QCRT_COMP_ZSTD, v.level = (int)level;
    else if (strcmp(s, "none"))
        return -1;
    if (c) *c = v;
    return 0;
}

static void hex64(char out[17], uint64_t h) {
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Drops timing keys ("seconds", "peak_rss_kb") everywhere in v: the artifact
 * holds only what the same inputs reproduce (--report keeps them). */
static void drop_timings(json_t *v) {
    if (json_is_object(v)) {
        json_object_del(v, "seconds");
        json_object_del(v, "peak_rss_kb");
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) drop_timings(x);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            drop_timings(json_array_get(v, i));
    }
}

/* manifest.provenance from the compile: recipe (text and hash), quantc
 * version, calibration data (path, hash, samples, tokens, seed). */
static json_t *compile_provenance(const qc_recipe *r, const qc_calib_report *rep, qc_err *err) {
    char rh[17], th[17];
    hex64(rh, XXH3_64bits(r->text, r->text_len));
    size_t len;
    char *text = qc_read_limited(rep->text, QC_LIMIT_TEXT_BYTES, &len, err);
    if (!text) return NULL;
    hex64(th, XXH3_64bits(text, len));
    free(text);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:i, s:i, s:I}}", "quantc_version",
                     QC_VERSION, "recipe_path", r->path, "recipe", r->text, "recipe_xxh3", rh,
                     "calibration", "text", rep->text, "text_xxh3", th, "samples", rep->samples,
                     "tokens", rep->tokens, "seed", (json_int_t)rep->seed);
}

/* The recipe's export: entries, from the artifact just written (so they
 * export what a later `quantc export OUT` would). */
static int run_exports(const qc_recipe *r, const char *out, int quiet, qc_err *err) {
    if (r->n_exports == 0) return 0;
    qc_model *a = qc_model_load(out, err);
    int rc = a ? 0 : -1;
    for (int i = 0; rc == 0 && i < r->n_exports; i++) {
        const qc_recipe_export *e = &r->exports[i];
        if (qc_cli_export_to(a, e->format, e->path, e->fallback_dequantize, quiet, err))
            rc = qc_err_prefix(err, "%s:%d:%d: export to %s (%s was written)", r->path, e->line,
                               e->col, e->path, out);
    }
    qc_model_free(a);
    return rc;
}

int qc_cli_compile(int argc, char **argv) {
    static const struct option opts[] = {{"recipe", required_argument, 0, 'r'},
                                         {"out", required_argument, 0, 'o'},
                                         {"calib", required_argument, 0, OPT_CALIB},
                                         {"calib-samples", required_argument, 0, OPT_SAMPLES},
                                         {"calib-tokens", required_argument, 0, OPT_TOKENS},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"report", required_argument, 0, OPT_REPORT},
                                         {"no-gates", no_argument, 0, OPT_NO_GATES},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"quiet", no_argument, 0, OPT_QUIET},
                                         {"compress", required_argument, 0, OPT_COMPRESS},
                                         {"target", required_argument, 0, OPT_TARGET},
                                         {"checkpoint", required_argument, 0, OPT_CHECKPOINT},
                                         {"no-checkpoint", no_argument, 0, OPT_NO_CHECKPOINT},
                                         {"help", no_argument, 0, OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *recipe_path = NULL, *out = NULL, *report_path = NULL, *compress = NULL;
    char *target_arg = NULL, *ckpt_arg = NULL, *ckpt_key = NULL, *ckpt_default = NULL;
    char *out_dir = NULL;
    int no_ckpt = 0;
    qc_calib_overrides ov = {.text = NULL, .samples = -1, .tokens = -1, .seed = -1};
    long v, threads = 0;
    int quiet = 0, no_gates = 0, written = 0, c;
    while ((c = getopt_long(argc, argv, "r:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            recipe_path = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case OPT_CALIB:
            ov.text = optarg;
            break;
        case OPT_SAMPLES:
            if (qc_cli_parse_int(optarg, 1, 1 << 20, &v))
                return qc_cli_usage_error(compile_help,
                                          "--calib-samples: expected 1..1048576, got '%s'", optarg);
            ov.samples = (int)v;
            break;
        case OPT_TOKENS:
            if (qc_cli_parse_int(optarg, 2, 1 << 20, &v))
                return qc_cli_usage_error(compile_help,
                                          "--calib-tokens: expected 2..1048576, got '%s'", optarg);
            ov.tokens = (int)v;
            break;
        case OPT_SEED:
            if (qc_cli_parse_int(optarg, 0, 0x7fffffffL, &v))
                return qc_cli_usage_error(
                    compile_help, "--seed: expected a non-negative integer, got '%s'", optarg);
            ov.seed = v;
            break;
        case OPT_REPORT:
            report_path = optarg;
            break;
        case OPT_NO_GATES:
            no_gates = 1;
            break;
        case OPT_THREADS:
            if (qc_cli_parse_int(optarg, 1, 1024, &threads))
                return qc_cli_usage_error(compile_help, "--threads: expected 1..1024, got '%s'",
                                          optarg);
            break;
        case OPT_QUIET:
            quiet = 1;
            break;
        case OPT_COMPRESS:
            if (parse_compress(optarg, NULL))
                return qc_cli_usage_error(compile_help,
                                          "--compress: expected none, zstd or zstd:1..19, got '%s'",
                                          optarg);
            compress = optarg;
            break;
        case OPT_TARGET:
            target_arg = optarg;
            break;
        case OPT_CHECKPOINT:
            ckpt_arg = optarg;
            break;
        case OPT_NO_CHECKPOINT:
            no_ckpt = 1;
            break;
        case OPT_HELP:
            printf("%s", compile_help);
            return 0;
        default:
            return qc_cli_usage_error(compile_help, "%s", "bad option");
        }
    }
    if (optind + 1 < argc)
        return qc_cli_usage_error(compile_help, "unexpected argument '%s'", argv[optind + 1]);
    if (!recipe_path) return qc_cli_usage_error(compile_help, "%s", "-r RECIPE is required");
    if (!out) return qc_cli_usage_error(compile_help, "%s", "-o OUT is required");
    qc_cli_set_threads(threads);
    int show = !quiet && isatty(2);

    qc_err err = {{0}};
    qc_recipe *r = qc_recipe_load(recipe_path, &err);
    if (!r) return qc_cli_die(&err);
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) {
        qc_recipe_free(r);
        return qc_cli_die(&err);
    }
    int rc = EXIT_FAIL, failed = 0;
    qc_calib_report rep = {0};
    json_t *prov = NULL, *metrics = NULL;
    char *rep_json = NULL;
    progress p = {qc_cli_now_s(), !show};
    qc_artifact_model_opts ao = {
        .compress = {r->artifact.zstd ? QCRT_COMP_ZSTD : QCRT_COMP_NONE, r->artifact.level}};
    if (compress) parse_compress(compress, &ao.compress);
    /* Code generation targets: --target, else the recipe's, else cpu:host. */
    const char *cpu_targets[MAX_TARGETS], *cuda_archs[MAX_TARGETS];
    char *split[MAX_TARGETS + 1], host[] = "cpu:host";
    int n_split = 0;
    if (target_arg) {
        for (char *t = strtok(target_arg, ","); t; t = strtok(NULL, ","))
            if (n_split <= MAX_TARGETS) split[n_split++] = t;
    } else if (r->n_targets > 0) {
        for (int i = 0; i < r->n_targets && n_split <= MAX_TARGETS; i++)
            split[n_split++] = r->targets[i];
    } else if (qc_cpu_codegen_available()) {
        split[n_split++] = host;
    }
    if (parse_targets(split, n_split, target_arg ? "--target" : r->path, cpu_targets,
                      &ao.n_cpu_targets, cuda_archs, &ao.n_cuda_archs, &err))
        goto out;
    if (ao.n_cuda_archs > 0 && !qc_nvrtc_available()) {
        qc_err_set(&err, "CUDA targets need quantc built with NVRTC (the CUDA toolkit was not "
                         "found at build time)");
        goto out;
    }
    ao.cuda_archs = cuda_archs;
    if (ao.n_cpu_targets > 0 && !qc_cpu_codegen_available()) {
        qc_err_set(&err, "CPU targets need quantc built with LLVM (this build has no code "
                         "generator); use --target none");
        goto out;
    }
    ao.cpu_targets = cpu_targets;
    /* Fail before calibrating when OUT cannot be written (creates and removes
     * the temporary file; refuses to replace a file that is not an artifact). */
    qc_artifact_writer *probe = qc_artifact_writer_new(out, &ao.compress, &err);
    if (!probe) goto out;
    qc_artifact_writer_free(probe);
    if (ckpt_arg && no_ckpt) {
        qc_err_set(&err, "--checkpoint and --no-checkpoint contradict each other");
        goto out;
    }
    if (!no_ckpt && (ckpt_arg || long_compile(m, r, &ov))) {
        if (!ckpt_arg) {
            size_t n = strlen(out) + 6;
            if (!(ckpt_default = malloc(n))) {
                qc_err_set(&err, "out of memory");
                goto out;
            }
            snprintf(ckpt_default, n, "%s.ckpt", out);
        }
        if (!(ckpt_key = compile_key(m, r, &ov, &err))) goto out;
        ov.checkpoint_dir = ckpt_arg ? ckpt_arg : ckpt_default;
        ov.checkpoint_key = ckpt_key;
        ov.checkpoint_what = r->path;
    }
    /* Finished blocks' quantized states wait for the artifact writer in a
     * spill file beside OUT (compiler/spill.h): memory stays at one block. */
    const char *slash = strrchr(out, '/');
    if (!(out_dir = slash ? strndup(out, slash == out ? 1 : (size_t)(slash - out)) : strdup("."))) {
        qc_err_set(&err, "out of memory");
        goto out;
    }
    ov.spill_dir = out_dir;
    ov.spill_what = out;
    catch_signals(out, ov.checkpoint_dir);
    if (qc_calibrate(m, r, &ov, on_progress, &p, &rep, &err)) goto out;
    if (rep.resumed_blocks > 0 && !quiet)
        printf("resumed from checkpoint %s: blocks 0..%d were restored\n", ov.checkpoint_dir,
               rep.resumed_blocks - 1);
    if (!quiet) print_table(&rep);
    rep_json = qc_calib_report_json(&rep);
    json_error_t je;
    json_t *rep_obj = rep_json ? json_loads(rep_json, 0, &je) : NULL;
    drop_timings(rep_obj);
    metrics = json_pack("{s:o}", "calibration", rep_obj ? rep_obj : json_null());
    if (!(prov = compile_provenance(r, &rep, &err)) || !metrics) {
        if (!metrics) qc_err_set(&err, "out of memory");
        goto out;
    }
    if (r->gates.enabled && !no_gates && run_gates(m, r, !show, metrics, &failed, &err)) goto out;
    if (failed) {
        fprintf(stderr, "quantc: %s not written because a gate failed\n", out);
        goto out;
    }
    if (report_path) {
        FILE *f = fopen(report_path, "w");
        if (!f || fputs(rep_json, f) < 0 || fclose(f) != 0) {
            qc_err_set(&err, "%s: cannot write the report", report_path);
            goto out;
        }
    }
    ao.provenance = prov;
    ao.metrics = metrics;
    qc_artifact_stats st;
    if (qc_artifact_write_model(m, out, &ao, &st, &err)) goto out;
    if (!quiet) {
        printf("wrote %s: %llu bytes, %d sections", out, (unsigned long long)st.file_bytes,
               st.n_sections);
        if (ao.compress.method == QCRT_COMP_ZSTD)
            printf(", zstd level %d: %llu -> %llu bytes (ratio %.3f)", ao.compress.level,
                   (unsigned long long)st.raw_bytes, (unsigned long long)st.stored_bytes,
                   st.stored_bytes ? (double)st.raw_bytes / (double)st.stored_bytes : 1.0);
        printf("\n");
        if (ao.n_cpu_targets > 0)
            printf("kernels: %d distinct specs for %d of %d quantized layers, %d CPU target%s, "
                   "code generation %.1f s\n",
                   st.n_kernels, st.n_packed, st.n_layers, ao.n_cpu_targets,
                   ao.n_cpu_targets > 1 ? "s" : "", st.codegen_seconds);
        if (ao.n_cuda_archs > 0)
            printf("CUDA kernels: %d distinct specs for %d of %d quantized layers, %d "
                   "architecture%s, NVRTC %.1f s\n",
                   st.n_cuda_kernels, st.n_cuda_packed, st.n_layers, ao.n_cuda_archs,
                   ao.n_cuda_archs > 1 ? "s" : "", st.nvrtc_seconds);
        if (st.n_packed < st.n_layers)
            printf("note: %d layer(s) have no generated kernel and run on the reference path "
                   "(`quantc inspect` says why)\n",
                   st.n_layers - st.n_packed);
    }
    written = 1;
    if (run_exports(r, out, quiet, &err)) goto out;
    rc = 0;
out:
    /* The checkpoint served its purpose once the artifact is written (or a
     * gate rejected the result); after other errors it stays for a rerun. */
    if ((rc == 0 || failed || written) && ov.checkpoint_dir) {
        qc_err e2 = {{0}};
        if (qc_ckpt_remove_dir(ov.checkpoint_dir, &e2))
            fprintf(stderr, "quantc: warning: %s\n", e2.msg);
    }
    free(ckpt_key);
    free(ckpt_default);
    free(out_dir);
    if (rc && !failed) qc_cli_die(&err);
    free(rep_json);
    json_decref(prov);
    json_decref(metrics);
    qc_calib_report_free(&rep);
    qc_model_free(m);
    qc_recipe_free(r);
    return rc;
}

int qc_cli_recipe(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, OPT_MODEL},
                                         {"help", no_argument, 0, OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *model = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_HELP:
            printf("%s", recipe_help);
            return 0;
        default:
            return qc_cli_usage_error(recipe_help, "%s", "bad option");
        }
    }
    if (optind + 2 != argc || strcmp(argv[optind], "check"))
        return qc_cli_usage_error(recipe_help, "%s", "expected: recipe check RECIPE");
    qc_err err = {{0}};
    qc_recipe *r = qc_recipe_load(argv[optind + 1], &err);
    if (!r) return qc_cli_die(&err);
    int rc = 0;
    if (model) {
        qc_model *m = qc_model_load(model, &err);
        int n = 0;
        char **names = m ? qc_calib_linear_names(&m->cfg, &n) : NULL;
        if (!m || !names || qc_recipe_check_targets(r, (const char *const *)names, n, &err))
            rc = qc_cli_die(&err);
        qc_calib_names_free(names, n);
        qc_model_free(m);
    }
    if (rc == 0) printf("%s: ok (%d passes)\n", r->path, r->n_passes);
    qc_recipe_free(r);
    return rc;
}

int qc_cli_passes(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        printf("usage: quantc passes\n\nLists every pass with its parameters, defaults and "
               "ranges.\n");
        return strcmp(argv[1], "--help") ? EXIT_USAGE : 0;
    }
    char *s = qc_passes_describe();
    if (!s) {
        fprintf(stderr, "quantc: out of memory\n");
        return EXIT_FAIL;
    }
    fputs(s, stdout);
    free(s);
    return 0;
}
