/* quantc inspect: what an artifact holds, from its section table and
 * manifest (the container is fully verified first, checksums included). */
#include "compiler/artifact_model.h"
#include "compiler/cli.h"
#include "runtime/artifact.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *inspect_help =
    "usage: quantc inspect ARTIFACT [--json]\n"
    "\n"
    "Describes a compiled model (an artifact written by `quantc compile`): the\n"
    "model config, every quantized layer (format, bits, group size, bits per\n"
    "weight, stored bytes, kernel), sizes by section kind and the compression\n"
    "ratio, kernels and their targets, and provenance (source model and its\n"
    "hash, recipe and its hash, quantc version, calibration). Every checksum is\n"
    "verified first. --json prints the same as JSON (docs/artifact-format.md\n"
    "describes the manifest fields it repeats).\n";

enum { OPT_JSON = 3000, OPT_HELP };

static json_t *load_manifest(const qcrt_artifact *a, qc_err *err) {
    const qcrt_section *s = qcrt_artifact_find(a, QCRT_SEC_MANIFEST, QC_ARTIFACT_MANIFEST);
    if (!s) {
        qc_err_set(err, "%s: no manifest section", a->path);
        return NULL;
    }
    void *owned;
    const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, err);
    if (!d) return NULL;
    json_error_t je;
    json_t *m = json_loadb((const char *)d, (size_t)s->raw_size, JSON_REJECT_DUPLICATES, &je);
    free(owned);
    if (!m || !json_is_object(m)) {
        qc_err_set(err, "%s: manifest.json:%d:%d: %s", a->path, je.line, je.column,
                   m ? "not an object" : je.text);
        json_decref(m);
        return NULL;
    }
    return m;
}

/* Stored bytes of the tensor sections a layer's "tensors" object names. */
static uint64_t layer_bytes(const qcrt_artifact *a, json_t *layer) {
    uint64_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(layer, "tensors"), k, v) {
        const qcrt_section *s =
            json_is_string(v) ? qcrt_artifact_find(a, QCRT_SEC_TENSOR, json_string_value(v)) : NULL;
        if (s) n += s->stored_size;
    }
    return n;
}

/* The facts shared by both outputs. */
static json_t *describe(const qcrt_artifact *a, json_t *man) {
    static const char *kinds[] = {"manifest", "tokenizer", "tensor", "kernels"};
    json_t *by_kind = json_object(), *sections = json_array(), *kernels = json_array();
    for (int k = 0; k < 4; k++)
        json_object_set_new(by_kind, kinds[k],
                            json_pack("{s:i, s:I, s:I}", "count", 0, "stored_bytes", (json_int_t)0,
                                      "raw_bytes", (json_int_t)0));
    uint64_t raw = 0, stored = 0;
    for (int i = 0; i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        json_t *k = json_object_get(by_kind, qcrt_section_kind_name(s->kind));
        json_object_set_new(k, "count",
                            json_integer(json_integer_value(json_object_get(k, "count")) + 1));
        json_object_set_new(k, "stored_bytes",
                            json_integer(json_integer_value(json_object_get(k, "stored_bytes")) +
                                         (json_int_t)s->stored_size));
        json_object_set_new(k, "raw_bytes",
                            json_integer(json_integer_value(json_object_get(k, "raw_bytes")) +
                                         (json_int_t)s->raw_size));
        raw += s->raw_size, stored += s->stored_size;
        json_array_append_new(
            sections, json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "index", i, "kind",
                                qcrt_section_kind_name(s->kind), "name", s->name, "target",
                                s->target, "offset", (json_int_t)s->offset, "stored_bytes",
                                (json_int_t)s->stored_size, "raw_bytes", (json_int_t)s->raw_size,
                                "compression", qcrt_compression_name(s->compression)));
        if (s->kind == QCRT_SEC_KERNELS)
            json_array_append_new(kernels,
                                  json_pack("{s:s, s:s, s:I}", "name", s->name, "target", s->target,
                                            "bytes", (json_int_t)s->stored_size));
    }
    json_t *layers = json_deep_copy(json_object_get(man, "layers"));
    if (!json_is_array(layers)) {
        json_decref(layers);
        layers = json_array();
    }
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l) {
        if (json_is_object(l))
            json_object_set_new(l, "stored_bytes", json_integer((json_int_t)layer_bytes(a, l)));
    }
    json_t *o =
        json_pack("{s:s, s:i, s:I, s:o, s:o, s:f, s:O, s:o, s:o, s:O, s:O, s:O}", "path", a->path,
                  "format_version", (int)a->version, "file_bytes", (json_int_t)a->size, "sections",
                  sections, "sections_by_kind", by_kind, "compression_ratio",
                  stored ? (double)raw / (double)stored : 1.0, "config",
                  json_object_get(man, "config"), "layers", layers, "kernels", kernels, "tokenizer",
                  json_object_get(man, "tokenizer"), "provenance",
                  json_object_get(man, "provenance"), "metrics", json_object_get(man, "metrics"));
    return o;
}

static const char *str_at(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "?";
}

static long long int_at(json_t *o, const char *k) {
    return (long long)json_integer_value(json_object_get(o, k));
}

static void print_text(json_t *d) {
    json_t *c = json_object_get(d, "config"), *by = json_object_get(d, "sections_by_kind");
    printf("%s: quantc artifact, format %lld, %lld bytes, %zu sections\n", str_at(d, "path"),
           int_at(d, "format_version"), int_at(d, "file_bytes"),
           json_array_size(json_object_get(d, "sections")));
    printf("model: %s (%s), %lld layers, hidden %lld, heads %lld/%lld, ffn %lld, vocab %lld\n",
           str_at(c, "arch"), str_at(c, "arch_name"), int_at(c, "n_layers"), int_at(c, "dim"),
           int_at(c, "n_heads"), int_at(c, "n_kv_heads"), int_at(c, "ffn_dim"), int_at(c, "vocab"));
    printf("sections:");
    const char *k;
    json_t *v;
    double raw = 0, stored = 0;
    json_object_foreach(by, k, v) {
        printf("  %s %lld (%.3f MB)", k, int_at(v, "count"), int_at(v, "stored_bytes") / 1e6);
        raw += (double)int_at(v, "raw_bytes"), stored += (double)int_at(v, "stored_bytes");
    }
    printf("\ncompression: %.3f MB of sections stored as %.3f MB (ratio %.3f)\n", raw / 1e6,
           stored / 1e6, json_real_value(json_object_get(d, "compression_ratio")));
    json_t *layers = json_object_get(d, "layers");
    double bits = 0, weights = 0;
    size_t i;
    json_t *l;
    printf("%zu quantized layers:\n  %-40s %-6s %4s %5s %4s %4s %7s %12s %10s %s\n",
           json_array_size(layers), "layer", "format", "bits", "group", "sym", "act", "bpw",
           "shape", "bytes", "kernel");
    json_array_foreach(layers, i, l) {
        char shape[48];
        double n = (double)int_at(l, "rows") * (double)int_at(l, "cols");
        double bpw = json_number_value(json_object_get(l, "bits_per_weight"));
        bits += bpw * n, weights += n;
        snprintf(shape, sizeof shape, "%lldx%lld", int_at(l, "rows"), int_at(l, "cols"));
        json_t *kern = json_object_get(l, "kernel");
        printf("  %-40s %-6s %4lld %5lld %4s %4s %7.3f %12s %10lld %s\n", str_at(l, "name"),
               str_at(l, "format"), int_at(l, "bits"), int_at(l, "group_size"),
               json_is_true(json_object_get(l, "symmetric")) ? "yes" : "no",
               json_is_true(json_object_get(l, "act_order")) ? "yes" : "no", bpw, shape,
               int_at(l, "stored_bytes"), json_is_string(kern) ? json_string_value(kern) : "-");
    }
    if (weights > 0)
        printf("  average %.3f bits per weight over %.0f weights\n", bits / weights, weights);
    json_array_foreach(layers, i, l) {
        const char *note = json_string_value(json_object_get(l, "kernel_note"));
        if (note) printf("  no generated kernel for %s: %s\n", str_at(l, "name"), note);
    }
    json_t *kernels = json_object_get(d, "kernels");
    if (json_array_size(kernels) == 0) printf("kernels: none\n");
    json_array_foreach(kernels, i, l) printf("kernel %s for %s: %lld bytes\n", str_at(l, "name"),
                                             str_at(l, "target"), int_at(l, "bytes"));
    json_t *p = json_object_get(d, "provenance"), *cal = json_object_get(p, "calibration");
    printf("provenance:\n  quantc %s\n  source %s (%s), xxh3 %s over %zu files\n",
           str_at(p, "quantc_version"), str_at(p, "source"), str_at(p, "source_format"),
           str_at(p, "xxh3"), json_array_size(json_object_get(p, "files")));
    if (json_object_get(p, "recipe"))
        printf("  recipe %s, xxh3 %s\n", str_at(p, "recipe_path"), str_at(p, "recipe_xxh3"));
    if (cal)
        printf("  calibration %s (xxh3 %s): %lld samples x %lld tokens, seed %lld\n",
               str_at(cal, "text"), str_at(cal, "text_xxh3"), int_at(cal, "samples"),
               int_at(cal, "tokens"), int_at(cal, "seed"));
    json_t *g = json_object_get(json_object_get(d, "metrics"), "gates");
    if (g)
        printf("gates: perplexity %.4f vs %.4f (%+.2f%%), KL %.5f, %s\n",
               json_number_value(json_object_get(g, "ppl")),
               json_number_value(json_object_get(g, "ref_ppl")),
               json_number_value(json_object_get(g, "ppl_increase_pct")),
               json_number_value(json_object_get(g, "kl")),
               json_is_true(json_object_get(g, "passed")) ? "passed" : "FAILED");
}

int qc_cli_inspect(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            json = 1;
            break;
        case OPT_HELP:
            printf("%s", inspect_help);
            return 0;
        default:
            return qc_cli_usage_error(inspect_help, "%s", "bad option");
        }
    }
    if (optind + 1 != argc) return qc_cli_usage_error(inspect_help, "%s", "expected one ARTIFACT");
    qc_err err = {{0}};
    qcrt_artifact *a = qcrt_artifact_open(argv[optind], &err);
    json_t *man = a ? load_manifest(a, &err) : NULL, *d = man ? describe(a, man) : NULL;
    int rc = 0;
    if (!d) {
        rc = qc_cli_die(&err);
    } else if (json) {
        char *s = json_dumps(d, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("%s\n", s);
        free(s);
    } else {
        print_text(d);
    }
    json_decref(d);
    json_decref(man);
    qcrt_artifact_free(a);
    return rc;
}
