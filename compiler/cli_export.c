/* `quantc export`: the model in a format other runtimes load. */
#include "compiler/cli.h"
#include "compiler/ct_export.h"
#include "compiler/gguf_export.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *export_help =
    "usage: quantc export [MODEL] --gguf OUT.gguf [--type T] [--embed-type T]\n"
    "                     [--output-type T]\n"
    "       quantc export ARTIFACT --format compressed-tensors -o DIR\n"
    "                     [--fallback dequantize]\n"
    "\n"
    "--format gguf (the default; --gguf FILE is -o FILE):\n"
    "Writes MODEL as a GGUF v3 file for llama.cpp (architectures llama/mistral,\n"
    "qwen2, qwen3): llama.cpp's tensor names and metadata, the source's\n"
    "tokenizer.* metadata, linears quantized (round to nearest with a weighted\n"
    "scale search) into ggml block types. A type whose block does not divide a\n"
    "row falls back as llama-quantize does (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0,\n"
    "Q3_K->Q4_0, IQ4_XS->IQ4_NL). The file is written under a temporary name and\n"
    "renamed into place.\n"
    "\n"
    "  --gguf FILE         output file (required)\n"
    "  --type T            linears: Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL Q3_K Q4_K Q5_K\n"
    "                      Q6_K IQ4_XS F16 F32 (default Q4_K)\n"
    "  --embed-type T      token embedding (default: --type)\n"
    "  --output-type T     output projection (default Q6_K)\n"
    "  --quiet             no summary\n"
    "\n"
    "A compiled artifact (quantize format gguf:TYPE, e.g. recipes/gguf-q4_k.yaml)\n"
    "keeps its block-typed tensors unchanged, so llama.cpp reads exactly the\n"
    "weights quantc evaluated; --type/--embed-type apply only to its F32\n"
    "tensors (a rotated embedding: F32 keeps it exact), and a tied head is\n"
    "written only with --output-type. Group-wise integer codes, outliers,\n"
    "low-rank factors and online transforms cannot be written (an error names\n"
    "the layer).\n"
    "\n"
    "Current limits: MODEL must be a GGUF file or an artifact compiled from one\n"
    "(its tokenizer metadata is copied; converting a tokenizer.json is not\n"
    "implemented).\n"
    "\n"
    "--format compressed-tensors: a Hugging Face model directory that\n"
    "transformers (with the compressed-tensors package) and vLLM load:\n"
    "config.json with quantization_config (pack-quantized), safetensors with\n"
    "each quantized linear as weight_packed (int32), weight_scale,\n"
    "weight_zero_point (asymmetric) and weight_shape; other tensors as the\n"
    "artifact stores them; the tokenizer files of a Hugging Face source (a GGUF\n"
    "source's tokenizer is not converted: the command says so). ARTIFACT must be\n"
    "a compiled model. Online Hadamards, outliers, low-rank factors, GGUF block\n"
    "types, ragged groups and act-order g_idx cannot be written: an error names\n"
    "the layer, unless --fallback dequantize writes such layers as dense F32\n"
    "weights (exactly what quantc evaluates; listed as not quantized). DIR is\n"
    "written beside itself under a temporary name and renamed into place; it\n"
    "must not exist or be empty.\n"
    "\n"
    "  --format F          gguf or compressed-tensors\n"
    "  -o, --output PATH   output file (gguf) or directory (compressed-tensors)\n"
    "  --fallback dequantize  write what the format cannot express as dense F32\n"
    "                      weights (also for --format gguf)\n"
    "  --max-shard-size N[K|M|G]  bytes per safetensors file (default 4G); more\n"
    "                      files come with model.safetensors.index.json\n";

enum {
    OPT_GGUF = 4000,
    OPT_TYPE,
    OPT_EMBED,
    OPT_OUTPUT,
    OPT_QUIET,
    OPT_HELP,
    OPT_FORMAT,
    OPT_FALLBACK,
    OPT_SHARD
};

static int parse_type(const char *s, const char *opt, qc_dtype *t) {
    if (qc_dtype_from_name(s, t) || *t == QC_DT_BF16)
        return qc_cli_usage_error(export_help, opt, s);
    return 0;
}

/* "N", "NK", "NM" or "NG" (powers of 1024), at least 1. */
static int parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (shift) end++;
    if (errno || end == s || *end || *s == '-' || v == 0 || v > (SIZE_MAX >> shift)) return -1;
    *out = (size_t)v << shift;
    return 0;
}

static int export_ct(const qc_model *m, const char *out, int fallback, size_t shard, int quiet,
                     double t0, qc_err *err) {
    qc_ct_export_opts o = {.fallback_dequantize = fallback, .max_shard_bytes = shard};
    qc_ct_export_stats st;
    if (qc_ct_export(m, &o, out, &st, err)) return -1;
    if (quiet) return 0;
    printf("wrote %s: %d tensors in %d safetensors file%s, %.1f MiB; %d linears pack-quantized "
           "(%.3f bits per weight with scales and zero points), %d written dense (%.1f MiB; "
           "exactly the weights quantc evaluates), %.1f s\n",
           out, st.tensors, st.files, st.files == 1 ? "" : "s", st.bytes / (1 << 20), st.packed,
           st.bits_per_weight, st.dense, st.dense_bytes / (1 << 20), qc_cli_now_s() - t0);
    printf("tokenizer: %s\n", st.tokenizer);
    if (st.notes[0]) printf("note: %s\n", st.notes);
    return 0;
}

static int export_gguf(const qc_model *m, const qc_gguf_export_opts *o, const char *out, int quiet,
                       double t0, qc_err *err) {
    qc_gguf_export_stats st;
    if (qc_gguf_export(m, o, out, &st, err)) return -1;
    if (!quiet)
        printf("wrote %s: %d tensors (%d as compiled), %.1f MiB, linears %.3f bits per weight "
               "(%d fell back to another type), %.1f s\n",
               out, st.tensors, st.copied, st.file_bytes / (1 << 20), st.bits_per_weight,
               st.fallbacks, qc_cli_now_s() - t0);
    if (!quiet && st.dense)
        printf("note: %d layers written dense F32 by --fallback dequantize (%.1f MiB; exactly the "
               "weights quantc evaluates)\n",
               st.dense, st.dense_bytes / (1 << 20));
    return 0;
}

int qc_cli_export_to(const qc_model *m, const char *format, const char *out, int fallback,
                     int quiet, qc_err *err) {
    double t0 = qc_cli_now_s();
    if (!strcmp(format, "compressed-tensors"))
        return export_ct(m, out, fallback, 0, quiet, t0, err);
    qc_gguf_export_opts o = {.linear = QC_DT_Q4_K,
                             .embed = QC_DT_Q4_K,
                             .output = QC_DT_Q6_K,
                             .fallback_dequantize = fallback};
    return export_gguf(m, &o, out, quiet, t0, err);
}

int qc_cli_export(int argc, char **argv) {
    static const struct option opts[] = {{"gguf", required_argument, 0, OPT_GGUF},
                                         {"type", required_argument, 0, OPT_TYPE},
                                         {"embed-type", required_argument, 0, OPT_EMBED},
                                         {"output-type", required_argument, 0, OPT_OUTPUT},
                                         {"format", required_argument, 0, OPT_FORMAT},
                                         {"output", required_argument, 0, 'o'},
                                         {"fallback", required_argument, 0, OPT_FALLBACK},
                                         {"max-shard-size", required_argument, 0, OPT_SHARD},
                                         {"quiet", no_argument, 0, OPT_QUIET},
                                         {"help", no_argument, 0, OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *format = "gguf";
    qc_gguf_export_opts o = {.linear = QC_DT_Q4_K, .output = QC_DT_Q6_K};
    int embed_set = 0, gguf_opts = 0, fallback = 0, quiet = 0, c;
    size_t shard = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case OPT_GGUF:
        case 'o':
            out = optarg;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "gguf") && strcmp(optarg, "compressed-tensors"))
                return qc_cli_usage_error(export_help,
                                          "--format: '%s' is not gguf or compressed-tensors",
                                          optarg);
            format = optarg;
            break;
        case OPT_FALLBACK:
            if (strcmp(optarg, "dequantize"))
                return qc_cli_usage_error(export_help, "--fallback: '%s' is not dequantize",
                                          optarg);
            fallback = 1;
            break;
        case OPT_SHARD:
            if (parse_size(optarg, &shard))
                return qc_cli_usage_error(export_help,
                                          "--max-shard-size: '%s' is not a positive size", optarg);
            break;
        case OPT_TYPE:
            if (parse_type(optarg, "--type: unknown or unsupported type '%s'", &o.linear))
                return EXIT_USAGE;
            gguf_opts = 1;
            break;
        case OPT_EMBED:
            if (parse_type(optarg, "--embed-type: unknown or unsupported type '%s'", &o.embed))
                return EXIT_USAGE;
            embed_set = gguf_opts = 1;
            break;
        case OPT_OUTPUT:
            if (parse_type(optarg, "--output-type: unknown or unsupported type '%s'", &o.output))
                return EXIT_USAGE;
            o.output_given = gguf_opts = 1;
            break;
        case OPT_QUIET:
            quiet = 1;
            break;
        case OPT_HELP:
            printf("%s", export_help);
            return 0;
        default:
            return qc_cli_usage_error(export_help, "%s", "bad option");
        }
    }
    int ct = !strcmp(format, "compressed-tensors");
    if (!out)
        return qc_cli_usage_error(export_help, "%s",
                                  ct ? "-o DIR is required" : "--gguf FILE (or -o FILE) is required");
    if (ct && gguf_opts)
        return qc_cli_usage_error(export_help, "%s",
                                  "--type, --embed-type and --output-type are GGUF options");
    if (!ct && shard)
        return qc_cli_usage_error(export_help, "%s",
                                  "--max-shard-size is a compressed-tensors option");
    o.fallback_dequantize = fallback;
    if (optind + 1 < argc)
        return qc_cli_usage_error(export_help, "unexpected argument '%s'", argv[optind + 1]);
    if (!embed_set) o.embed = o.linear;
    qc_err err;
    double t0 = qc_cli_now_s();
    qc_model *m = qc_cli_load_model(optind < argc ? argv[optind] : NULL, &err);
    if (!m) return qc_cli_die(&err);
    int rc = ct ? export_ct(m, out, fallback, shard, quiet, t0, &err)
                : export_gguf(m, &o, out, quiet, t0, &err);
    qc_model_free(m);
    return rc ? qc_cli_die(&err) : 0;
}
