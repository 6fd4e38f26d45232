/* quantc command line: a thin layer over libquantc. Exit codes: 0 ok,
 * 1 failure (bad input, I/O), 2 usage. */
#include "compiler/cli.h"
#include "compiler/dequant.h"
#include "compiler/limits.h"
#include "compiler/mapfile.h"
#include "compiler/model.h"
#include "compiler/quant.h"
#include "compiler/tokenizer.h"
#include "runtime/cuda_model.h"
#include "runtime/eval.h"
#include "runtime/forward.h"
#include "runtime/par_blas.h"
#include "runtime/pool.h"
#include "runtime/sample.h"

#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef QC_HAVE_LLVM
#include <llvm/Config/llvm-config.h>
#endif
#ifdef QC_HAVE_NVRTC
#include <nvrtc.h>
#endif

static const char *usage_text =
    "usage: quantc <command> [options]\n"
    "\n"
    "commands:\n"
    "  eval [MODEL] --text FILE   perplexity of MODEL on a text file\n"
    "  run [MODEL] -p PROMPT      generate text\n"
    "  tokenize [MODEL]           print the token ids of a text\n"
    "  info [MODEL]               print the model's config and tensors\n"
    "  compile [MODEL] -r RECIPE -o OUT.qc   compile MODEL as the recipe says into\n"
    "                             an artifact (one file)\n"
    "  inspect ARTIFACT           describe a compiled model (--json)\n"
    "  export [MODEL] --gguf OUT  write MODEL as GGUF for llama.cpp\n"
    "  recipe check RECIPE        validate a recipe without running it\n"
    "  passes                     list every pass and its parameters\n"
    "\n"
    "MODEL is a Hugging Face directory (config.json + *.safetensors), a .gguf\n"
    "file, or an artifact from `quantc compile` (by convention NAME.qc). Without\n"
    "MODEL, the demo model is used: $QUANTC_DEFAULT_MODEL, else\n"
    "~/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-demo gets it).\n"
    "\n"
    "global options: --help, --version; 'quantc <command> --help' for a command.\n";

static const char *eval_help =
    "usage: quantc eval [MODEL] --text FILE [options]\n"
    "\n"
    "Perplexity over non-overlapping windows of --ctx tokens: the text is\n"
    "tokenized as one string (no BOS), cut into windows (a final partial window\n"
    "is dropped), and every token after the first in a window is scored given\n"
    "the tokens before it in that window. PPL = exp(mean negative log-likelihood).\n"
    "\n"
    "  --text FILE        text to evaluate (required)\n"
    "  --ctx N            window length in tokens (default 512)\n"
    "  --max-windows N    evaluate at most the first N windows (default: all)\n"
    "  --ref MODEL        also report mean KL(ref || model) of the next-token\n"
    "                     distributions and top-1 agreement against MODEL\n"
    "  --threads N        threads (default: all cores)\n"
    "  --kernels K        how quantized layers run: auto (default: an artifact's\n"
    "                     generated CPU kernels when it has them, else the\n"
    "                     reference), generated (fail without kernels for this\n"
    "                     host), or reference (fake-quant: weights dequantized\n"
    "                     to f32, BLAS)\n"
    "  --device D         cpu (default) or cuda: run on GPU 0 with the kernels the\n"
    "                     artifact was compiled with (--target cuda:ARCH); fails\n"
    "                     (exit 1) without a CUDA driver or GPU\n"
    "  --decode           feed each window one token at a time through the KV\n"
    "                     cache: the batch-1 decode path (gemv kernels) that\n"
    "                     `quantc run` uses, instead of 128-token chunks (gemm)\n"
    "  --json             print the result as JSON on stdout\n"
    "  --quiet            no progress line\n";

static const char *run_help =
    "usage: quantc run [MODEL] -p PROMPT [options]\n"
    "\n"
    "Generates text after PROMPT and prints it (prompt included) on stdout.\n"
    "\n"
    "  -p, --prompt TEXT  prompt (required)\n"
    "  -n N               tokens to generate (default 64); stops early at EOS\n"
    "  --ignore-eos       generate all N tokens even past EOS (for benchmarks)\n"
    "  --temp T           temperature; 0 = greedy (default 0)\n"
    "  --top-p P          nucleus sampling mass in (0, 1] (default 0.9)\n"
    "  --seed S           sampling seed (default 0)\n"
    "  --threads N        threads (default: all cores)\n"
    "  --kernels K        auto, generated or reference (see quantc eval --help)\n"
    "  --device D         cpu (default) or cuda (see quantc eval --help)\n"
    "  --quiet            no timing line on stderr\n";

static const char *tokenize_help =
    "usage: quantc tokenize [MODEL] (--text FILE | -p TEXT) [--bos] [--json]\n"
    "\n"
    "Prints the token ids of the text, space-separated on one line (or a JSON\n"
    "array with --json). --bos adds the BOS token where the tokenizer's config\n"
    "asks for one.\n";

static const char *info_help = "usage: quantc info [MODEL] [--json]\n"
                               "\n"
                               "Prints the model's config and a summary of its tensors.\n";

int qc_cli_die(const qc_err *err) {
    fprintf(stderr, "quantc: %s\n", err->msg);
    return EXIT_FAIL;
}

int qc_cli_usage_error(const char *help, const char *fmt, const char *arg) {
    fprintf(stderr, "quantc: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", help);
    return EXIT_USAGE;
}

double qc_cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int qc_cli_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int qc_cli_parse_float(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end) return -1;
    *out = v;
    return 0;
}

static const char *default_model(void) {
    static char buf[4096];
    const char *env = getenv("QUANTC_DEFAULT_MODEL");
    if (env && *env) return env;
    const char *cache = getenv("XDG_CACHE_HOME");
    if (cache && *cache)
        snprintf(buf, sizeof buf, "%s/quantc/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(buf, sizeof buf, "%s/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
    return buf;
}

qc_model *qc_cli_load_model(const char *path, qc_err *err) {
    if (!path) {
        path = default_model();
        if (access(path, R_OK) != 0) {
            qc_err_set(err,
                       "no MODEL given and the demo model is not at %s; run scripts/fetch-demo "
                       "or pass a model path",
                       path);
            return NULL;
        }
    }
    return qc_model_load(path, err);
}

/* --threads, else OPENBLAS_NUM_THREADS, else every core: the products of
 * runtime/par_blas.h run on that many threads, OpenBLAS itself on one. */
void qc_cli_set_threads(long n) {
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    long e = env ? strtol(env, NULL, 10) : 0;
    if (n <= 0) n = e > 0 && e <= 1024 ? e : sysconf(_SC_NPROCESSORS_ONLN);
    qc_err err = {{0}};
    if (qcrt_blas_set_threads(n > 0 ? (int)n : 1, &err))
        fprintf(stderr, "quantc: %s; running single-threaded\n", err.msg);
}

/* Shared option codes for long-only options. */
enum {
    OPT_TEXT = 1000,
    OPT_CTX,
    OPT_MAX_WINDOWS,
    OPT_REF,
    OPT_THREADS,
    OPT_KERNELS,
    OPT_DEVICE,
    OPT_IGNORE_EOS,
    OPT_JSON,
    OPT_QUIET,
    OPT_TEMP,
    OPT_TOP_P,
    OPT_SEED,
    OPT_BOS,
    OPT_DECODE,
    OPT_HELP,
};

typedef struct progress_ctx {
    double t0;
    int quiet;
} progress_ctx;

static void eval_progress(void *ud, int done, int total, double nll) {
    progress_ctx *p = ud;
    if (p->quiet) return;
    double el = qc_cli_now_s() - p->t0, eta = el / done * (total - done);
    fprintf(stderr, "\rwindow %d/%d  ppl %.4f  elapsed %.0fs  eta %.0fs   ", done, total, exp(nll),
            el, eta);
    if (done == total) fprintf(stderr, "\n");
}

static int tokenize_text(const qc_model *m, const char *path, char **text_out, int32_t **ids,
                         size_t *n, qc_err *err) {
    if (!m->tok) return qc_err_set(err, "%s: model has no tokenizer", m->path);
    size_t len;
    char *text = qc_read_limited(path, QC_LIMIT_TEXT_BYTES, &len, err);
    if (!text) return -1;
    int rc = qc_tokenizer_encode(m->tok, text, len, 0, ids, n, err);
    if (rc) qc_err_prefix(err, "%s", path);
    if (text_out)
        *text_out = text;
    else
        free(text);
    return rc;
}

/* --kernels auto|generated|reference */
static int parse_kernels(const char *s, qcrt_kernels_mode *out) {
    static const char *const names[] = {"auto", "generated", "reference"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *out = (qcrt_kernels_mode)i;
            return 0;
        }
    return -1;
}

/* --device cpu|cuda */
static int parse_device(const char *s, qcrt_device *out) {
    if (!strcmp(s, "cpu") || !strcmp(s, "cuda")) {
        *out = !strcmp(s, "cpu") ? QCRT_DEVICE_CPU : QCRT_DEVICE_CUDA;
        return 0;
    }
    return -1;
}

/* The runtime model of m as opts say; a missing GPU is said as such. */
static qcrt_model *runtime_model(const qc_model *m, const qcrt_model_opts *mo, qc_err *err) {
    int no_device;
    qcrt_model *rm = qcrt_model_from_ir_dev(m, mo, &no_device, err);
    if (!rm && mo->device == QCRT_DEVICE_CUDA) qc_err_prefix(err, "--device cuda");
    return rm;
}

/* One line on stderr: which implementation the quantized linears run on. */
static void print_linears(const qcrt_model *rm) {
    if (rm->cuda) {
        fprintf(stderr, "device: %s\n", qcrt_cuda_model_describe(rm->cuda));
        return;
    }
    if (rm->n_generated + rm->n_reference == 0) return;
    if (rm->kernels)
        fprintf(stderr, "linears: %d on generated CPU kernels (%s, %d threads), %d on the "
                        "reference path\n",
                rm->n_generated, rm->kernels_name, qcrt_pool_threads(rm->pool), rm->n_reference);
    else
        fprintf(stderr, "linears: %d quantized, on the reference path (fake-quant f32)\n",
                rm->n_reference);
}

static int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"text", required_argument, 0, OPT_TEXT},
                                         {"ctx", required_argument, 0, OPT_CTX},
                                         {"max-windows", required_argument, 0, OPT_MAX_WINDOWS},
                                         {"ref", required_argument, 0, OPT_REF},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"kernels", required_argument, 0, OPT_KERNELS},
                                         {"device", required_argument, 0, OPT_DEVICE},
                                         {"decode", no_argument, 0, OPT_DECODE},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"quiet", no_argument, 0, OPT_QUIET},
                                         {"help", no_argument, 0, OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *text = NULL, *ref_path = NULL;
    long ctx = 512, max_windows = 0, threads = 0;
    int json = 0, quiet = !isatty(2), decode = 0, c;
    qcrt_kernels_mode kmode = QCRT_KERNELS_AUTO;
    qcrt_device device = QCRT_DEVICE_CPU;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEXT:
            text = optarg;
            break;
        case OPT_CTX:
            if (qc_cli_parse_int(optarg, 2, 1 << 20, &ctx))
                return qc_cli_usage_error(eval_help, "--ctx: expected an integer ≥ 2, got '%s'",
                                          optarg);
            break;
        case OPT_MAX_WINDOWS:
            if (qc_cli_parse_int(optarg, 1, 1L << 30, &max_windows))
                return qc_cli_usage_error(
                    eval_help, "--max-windows: expected a positive integer, got '%s'", optarg);
            break;
        case OPT_REF:
            ref_path = optarg;
            break;
        case OPT_THREADS:
            if (qc_cli_parse_int(optarg, 1, 1024, &threads))
                return qc_cli_usage_error(eval_help, "--threads: expected 1..1024, got '%s'",
                                          optarg);
            break;
        case OPT_KERNELS:
            if (parse_kernels(optarg, &kmode))
                return qc_cli_usage_error(
                    eval_help, "--kernels: expected auto, generated or reference, got '%s'", optarg);
            break;
        case OPT_DEVICE:
            if (parse_device(optarg, &device))
                return qc_cli_usage_error(eval_help, "--device: expected cpu or cuda, got '%s'",
                                          optarg);
            break;
        case OPT_DECODE:
            decode = 1;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_QUIET:
            quiet = 1;
            break;
        case OPT_HELP:
            printf("%s", eval_help);
            return 0;
        default:
            return qc_cli_usage_error(eval_help, "%s", "bad option");
        }
    }
    if (optind + 1 < argc)
        return qc_cli_usage_error(eval_help, "unexpected argument '%s'", argv[optind + 1]);
    if (!text) return qc_cli_usage_error(eval_help, "%s", "--text FILE is required");
    qc_cli_set_threads(threads);

    qc_err err = {{0}};
    double t0 = qc_cli_now_s();
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) return qc_cli_die(&err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    qc_model *mr = NULL;
    qcrt_model *rm = NULL, *rref = NULL;
    int rc = EXIT_FAIL;
    if (tokenize_text(m, text, NULL, &ids, &n_ids, &err)) goto out;
    qcrt_model_opts mo = {.kernels = kmode, .threads = (int)threads, .device = device};
    if (!(rm = runtime_model(m, &mo, &err))) goto out;
    if (!quiet) print_linears(rm);
    if (ref_path) {
        if (!(mr = qc_model_load(ref_path, &err)) || !(rref = qcrt_model_from_ir(mr, &err)))
            goto out;
    }
    progress_ctx pc = {qc_cli_now_s(), quiet};
    qcrt_eval_opts eo = {
        .ctx = (int)ctx,
        .max_windows = (int)max_windows,
        .decode = decode,
        .progress = eval_progress,
        .ud = &pc};
    qcrt_eval_result r;
    if (qcrt_eval_ppl(rm, rref, ids, n_ids, &eo, &r, &err)) goto out;
    double secs = qc_cli_now_s() - t0;
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i, s:I, s:f, s:f, s:f}", "model", m->path,
                              "text", text, "text_tokens", (json_int_t)r.text_tokens, "ctx",
                              (json_int_t)ctx, "windows", r.windows, "scored_tokens",
                              (json_int_t)r.scored, "nll", r.nll, "ppl", r.ppl, "seconds", secs);
        json_object_set_new(o, "kernels", json_string(rm->cuda      ? "cuda"
                                                      : rm->kernels ? rm->kernels_name
                                                                    : "reference"));
        json_object_set_new(o, "device", json_string(rm->cuda ? "cuda" : "cpu"));
        json_object_set_new(o, "generated_linears", json_integer(rm->n_generated));
        json_object_set_new(o, "fused_online_transforms", json_integer(rm->n_fused_transform));
        if (r.has_ref) {
            json_object_set_new(o, "ref", json_string(ref_path));
            json_object_set_new(o, "kl", json_real(r.kl));
            json_object_set_new(o, "top1_agreement", json_real(r.top1));
            json_object_set_new(o, "ref_ppl", json_real(r.ref_ppl));
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("model      %s\n", m->path);
        printf("text       %s (%lld tokens)\n", text, r.text_tokens);
        printf("windows    %d of %d tokens, %lld tokens scored\n", r.windows, (int)ctx, r.scored);
        printf("perplexity %.4f (mean NLL %.5f nats)\n", r.ppl, r.nll);
        if (r.has_ref) {
            printf("reference  %s: perplexity %.4f\n", ref_path, r.ref_ppl);
            printf("KL(ref||model) %.6f nats/token, top-1 agreement %.2f%%\n", r.kl, 100 * r.top1);
        }
        printf("time       %.1f s\n", secs);
    }
    rc = 0;
out:
    if (rc) qc_cli_die(&err);
    free(ids);
    qcrt_model_free(rm);
    qcrt_model_free(rref);
    qc_model_free(m);
    qc_model_free(mr);
    return rc;
}

static int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {{"prompt", required_argument, 0, 'p'},
                                         {"temp", required_argument, 0, OPT_TEMP},
                                         {"top-p", required_argument, 0, OPT_TOP_P},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"kernels", required_argument, 0, OPT_KERNELS},
                                         {"device", required_argument, 0, OPT_DEVICE},
                                         {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
                                         {"quiet", no_argument, 0, OPT_QUIET},
                                         {"help", no_argument, 0, OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *prompt = NULL;
    long n_gen = 64, threads = 0, seed = 0;
    double temp = 0, top_p = 0.9;
    int quiet = 0, ignore_eos = 0, c;
    qcrt_kernels_mode kmode = QCRT_KERNELS_AUTO;
    qcrt_device device = QCRT_DEVICE_CPU;
    while ((c = getopt_long(argc, argv, "p:n:", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            prompt = optarg;
            break;
        case 'n':
            if (qc_cli_parse_int(optarg, 0, 1 << 20, &n_gen))
                return qc_cli_usage_error(run_help, "-n: expected a non-negative integer, got '%s'",
                                          optarg);
            break;
        case OPT_TEMP:
            if (qc_cli_parse_float(optarg, &temp) || !(temp >= 0))
                return qc_cli_usage_error(run_help, "--temp: expected a number ≥ 0, got '%s'",
                                          optarg);
            break;
        case OPT_TOP_P:
            if (qc_cli_parse_float(optarg, &top_p) || !(top_p > 0 && top_p <= 1))
                return qc_cli_usage_error(run_help,
                                          "--top-p: expected a number in (0, 1], got '%s'", optarg);
            break;
        case OPT_SEED:
            if (qc_cli_parse_int(optarg, 0, 0x7fffffffL, &seed))
                return qc_cli_usage_error(
                    run_help, "--seed: expected a non-negative integer, got '%s'", optarg);
            break;
        case OPT_THREADS:
            if (qc_cli_parse_int(optarg, 1, 1024, &threads))
                return qc_cli_usage_error(run_help, "--threads: expected 1..1024, got '%s'",
                                          optarg);
            break;
        case OPT_KERNELS:
            if (parse_kernels(optarg, &kmode))
                return qc_cli_usage_error(
                    run_help, "--kernels: expected auto, generated or reference, got '%s'", optarg);
            break;
        case OPT_DEVICE:
            if (parse_device(optarg, &device))
                return qc_cli_usage_error(run_help, "--device: expected cpu or cuda, got '%s'",
                                          optarg);
            break;
        case OPT_IGNORE_EOS:
            ignore_eos = 1;
            break;
        case OPT_QUIET:
            quiet = 1;
            break;
        case OPT_HELP:
            printf("%s", run_help);
            return 0;
        default:
            return qc_cli_usage_error(run_help, "%s", "bad option");
        }
    }
    if (optind + 1 < argc)
        return qc_cli_usage_error(run_help, "unexpected argument '%s'", argv[optind + 1]);
    if (!prompt) return qc_cli_usage_error(run_help, "%s", "-p PROMPT is required");
    qc_cli_set_threads(threads);

    qc_err err = {{0}};
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) return qc_cli_die(&err);
    int rc = EXIT_FAIL;
    qcrt_model *rm = NULL;
    qcrt_state *st = NULL;
    qcrt_sampler *smp = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n_ids = 0;
    if (!m->tok) {
        qc_err_set(&err, "%s: model has no tokenizer", m->path);
        goto out;
    }
    if (qc_tokenizer_encode(m->tok, prompt, strlen(prompt), 1, &ids, &n_ids, &err)) goto out;
    if (n_ids == 0) {
        qc_err_set(&err, "the prompt encodes to no tokens");
        goto out;
    }
    int max_ctx = (int)n_ids + (int)n_gen;
    if (m->cfg.max_pos > 0 && max_ctx > m->cfg.max_pos) {
        qc_err_set(&err, "prompt (%zu tokens) + %ld new tokens exceed the model's context of %d",
                   n_ids, n_gen, m->cfg.max_pos);
        goto out;
    }
    qcrt_model_opts mo = {.kernels = kmode, .threads = (int)threads, .device = device};
    if (!(rm = runtime_model(m, &mo, &err))) goto out;
    if (!quiet) print_linears(rm);
    if (!(st = qcrt_state_new(rm, max_ctx, (int)n_ids, &err))) goto out;
    if (!(smp = qcrt_sampler_new(m->cfg.vocab, (float)temp, (float)top_p, (uint64_t)seed, &err)))
        goto out;
    if (!(logits = qc_malloc((size_t)m->cfg.vocab * sizeof(float), &err))) goto out;
    fwrite(prompt, 1, strlen(prompt), stdout);
    fflush(stdout);
    double t0 = qc_cli_now_s();
    if (qcrt_forward(rm, st, ids, (int)n_ids, logits, 0, &err)) goto out;
    double t1 = qc_cli_now_s();
    int eos = qc_tokenizer_eos(m->tok), generated = 0;
    for (long i = 0; i < n_gen; i++) {
        int32_t next = qcrt_sample(smp, logits);
        if (next == eos && !ignore_eos) break;
        size_t plen;
        const char *piece = qc_tokenizer_piece(m->tok, next, &plen);
        if (piece) fwrite(piece, 1, plen, stdout);
        fflush(stdout);
        generated++;
        if (i + 1 < n_gen && qcrt_forward(rm, st, &next, 1, logits, 0, &err)) goto out;
    }
    double t2 = qc_cli_now_s();
    printf("\n");
    if (!quiet)
        fprintf(stderr,
                "prompt %zu tokens in %.2f s (%.1f tok/s), generated %d tokens in %.2f s (%.1f "
                "tok/s)\n",
                n_ids, t1 - t0, n_ids / (t1 - t0), generated, t2 - t1,
                generated ? generated / (t2 - t1) : 0.0);
    rc = 0;
out:
    if (rc) qc_cli_die(&err);
    free(ids);
    free(logits);
    qcrt_sampler_free(smp);
    qcrt_state_free(st);
    qcrt_model_free(rm);
    qc_model_free(m);
    return rc;
}

static int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        {"text", required_argument, 0, OPT_TEXT}, {"prompt", required_argument, 0, 'p'},
        {"bos", no_argument, 0, OPT_BOS},         {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},       {0, 0, 0, 0}};
    const char *text = NULL, *prompt = NULL;
    int bos = 0, json = 0, c;
    while ((c = getopt_long(argc, argv, "p:", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEXT:
            text = optarg;
            break;
        case 'p':
            prompt = optarg;
            break;
        case OPT_BOS:
            bos = 1;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_HELP:
            printf("%s", tokenize_help);
            return 0;
        default:
            return qc_cli_usage_error(tokenize_help, "%s", "bad option");
        }
    }
    if (optind + 1 < argc)
        return qc_cli_usage_error(tokenize_help, "unexpected argument '%s'", argv[optind + 1]);
    if (!text == !prompt)
        return qc_cli_usage_error(tokenize_help, "%s", "give exactly one of --text, -p");
    qc_err err = {{0}};
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) return qc_cli_die(&err);
    int rc = EXIT_FAIL;
    char *buf = NULL;
    int32_t *ids = NULL;
    size_t n = 0, len;
    if (!m->tok) {
        qc_err_set(&err, "%s: model has no tokenizer", m->path);
        goto out;
    }
    if (text && !(buf = qc_read_limited(text, QC_LIMIT_TEXT_BYTES, &len, &err))) goto out;
    if (prompt) len = strlen(prompt);
    if (qc_tokenizer_encode(m->tok, buf ? buf : prompt, len, bos, &ids, &n, &err)) goto out;
    if (json) putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(json ? "%s%d" : "%s%d", i ? (json ? "," : " ") : "", ids[i]);
    printf(json ? "]\n" : "\n");
    rc = 0;
out:
    if (rc) qc_cli_die(&err);
    free(buf);
    free(ids);
    qc_model_free(m);
    return rc;
}

static const char *arch_name(qc_arch a) {
    static const char *names[] = {"llama", "mistral", "qwen2", "qwen3"};
    return names[a];
}

static int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            json = 1;
            break;
        case OPT_HELP:
            printf("%s", info_help);
            return 0;
        default:
            return qc_cli_usage_error(info_help, "%s", "bad option");
        }
    }
    if (optind + 1 < argc)
        return qc_cli_usage_error(info_help, "unexpected argument '%s'", argv[optind + 1]);
    qc_err err = {{0}};
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) return qc_cli_die(&err);
    const qc_config *k = &m->cfg;
    int64_t params = 0, counts[QC_DT_COUNT] = {0};
    size_t bytes = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        params += qc_tensor_numel(&m->tensors[i]);
        bytes += m->tensors[i].nbytes;
        counts[m->tensors[i].dtype]++;
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:b, "
                  "s:b, s:I, s:I, "
                  "s:i, s:b}",
                  "path", m->path, "format", m->format, "arch", arch_name(k->arch), "layers",
                  k->n_layers, "hidden", k->dim, "heads", k->n_heads, "kv_heads", k->n_kv_heads,
                  "head_dim", k->head_dim, "ffn", k->ffn_dim, "vocab", k->vocab, "max_pos",
                  k->max_pos, "rope_theta", (double)k->rope_theta, "norm_eps", (double)k->norm_eps,
                  "tied_embeddings", k->tied_embeddings, "qk_norm", k->qk_norm, "attn_bias",
                  k->attn_bias, "parameters", (json_int_t)params, "tensor_bytes", (json_int_t)bytes,
                  "tensors", m->n_tensors, "tokenizer", m->tok != NULL);
    json_t *types = json_object();
    for (int t = 0; t < QC_DT_COUNT; t++)
        if (counts[t]) json_object_set_new(types, qc_dtype_name(t), json_integer(counts[t]));
    json_object_set_new(o, "tensor_types", types);
    /* A compiled model's quantized linears are not in its tensor list. */
    int64_t qparams = 0;
    for (int i = 0; i < m->n_quant; i++)
        qparams += m->quant[i].q->rows * m->quant[i].q->cols;
    json_object_set_new(o, "quantized_linears", json_integer(m->n_quant));
    json_object_set_new(o, "quantized_parameters", json_integer((json_int_t)qparams));
    if (json) {
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(8));
        printf("%s\n", s);
        free(s);
    } else {
        printf("%s (%s): %s, %d layers, hidden %d, heads %d/%d (head dim %d), ffn %d, vocab %d\n",
               m->path, m->format, arch_name(k->arch), k->n_layers, k->dim, k->n_heads,
               k->n_kv_heads, k->head_dim, k->ffn_dim, k->vocab);
        printf("rope theta %g, norm eps %g, max positions %d, tied embeddings %s%s%s\n",
               (double)k->rope_theta, (double)k->norm_eps, k->max_pos,
               k->tied_embeddings ? "yes" : "no", k->qk_norm ? ", q/k norm" : "",
               k->attn_bias ? ", attention bias" : "");
        printf("%d tensors, %.1f M parameters, %.1f MB:", m->n_tensors, params / 1e6, bytes / 1e6);
        for (int t = 0; t < QC_DT_COUNT; t++)
            if (counts[t]) printf(" %s×%lld", qc_dtype_name(t), (long long)counts[t]);
        printf("\n");
        if (m->n_quant)
            printf("%d quantized linears, %.1f M parameters (quantc inspect describes them)\n",
                   m->n_quant, qparams / 1e6);
        printf("tokenizer: %s\n", m->tok ? "yes" : "none");
    }
    json_decref(o);
    qc_model_free(m);
    return 0;
}

static void print_version(void) {
    printf("quantc %s\n", QC_VERSION);
    printf("  LLVM C API (CPU codegen): ");
#ifdef QC_HAVE_LLVM
    printf("yes, LLVM %s\n", LLVM_VERSION_STRING);
#else
    printf("no (not found at build time)\n");
#endif
    printf("  NVRTC (CUDA codegen):     ");
#ifdef QC_HAVE_NVRTC
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    printf("yes, NVRTC %d.%d\n", major, minor);
#else
    printf("no (not found at build time)\n");
#endif
    printf("  CUDA driver:              not linked (dlopen of libcuda.so.1 comes with the CUDA runtime)\n");
    printf("  libraries: OpenBLAS %s, jansson %s, libyaml, zstd, PCRE2, xxhash\n",
           openblas_get_config(), JANSSON_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "%s", usage_text);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    qc_err lerr = {{0}};
    if (qc_limits_check(&lerr)) {
        fprintf(stderr, "quantc: %s\n", lerr.msg);
        return EXIT_USAGE;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        print_version();
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        printf("%s", usage_text);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"eval", cmd_eval},          {"run", cmd_run},
                {"tokenize", cmd_tokenize},  {"info", cmd_info},
                {"compile", qc_cli_compile}, {"recipe", qc_cli_recipe},
                {"passes", qc_cli_passes},   {"inspect", qc_cli_inspect},
                {"export", qc_cli_export}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "quantc: unknown command '%s'\n%s", cmd, usage_text);
    return EXIT_USAGE;
}
