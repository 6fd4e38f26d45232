/* Fuzz target for the GGUF reader and loader: parses the input from memory,
 * reads every metadata key through the typed getters, dequantizes the small
 * tensors, and, when the input names an architecture, loads it as a model
 * (through a temporary file) and dequantizes its small tensors. */
#include "compiler/dequant.h"
#include "compiler/gguf.h"
#include "compiler/model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_ELEMS (1 << 16)

static void walk_metadata(const qc_gguf *g) {
    qc_err err;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const char *key = g->kvs[i].key, *s, **strs;
        int64_t v;
        uint32_t u;
        int32_t i32, *iv;
        float f, *fv;
        int b;
        size_t n, *lens;
        qc_gguf_get_int(g, key, &v, &err);
        qc_gguf_get_u32(g, key, &u, &err);
        qc_gguf_get_i32(g, key, &i32, &err);
        qc_gguf_get_f32(g, key, &f, &err);
        qc_gguf_get_bool(g, key, &b, &err);
        qc_gguf_get_str(g, key, &s, &n, &err);
        if (qc_gguf_get_str_array(g, key, &strs, &lens, &n, &err) == 0) {
            free(strs);
            free(lens);
        }
        if (qc_gguf_get_f32_array(g, key, &fv, &n, &err) == 0) free(fv);
        if (qc_gguf_get_i32_array(g, key, &iv, &n, &err) == 0) free(iv);
    }
}

static void dequant_small(const qc_gguf *g) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const qc_gguf_tensor *t = &g->tensors[i];
        if (t->numel > MAX_ELEMS || qc_gguf_find_tensor(g, t->name) != t) continue;
        float *out = malloc((size_t)t->numel * sizeof *out);
        if (!out) continue;
        qc_dequantize(t->dtype, t->data, out, t->numel);
        free(out);
    }
}

static void load_model(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/qc_fuzz_gguf_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return;
    size_t wrote = fwrite(data, 1, size, f);
    fclose(f);
    if (wrote != size) return;
    qc_err err;
    qc_model *m = qc_model_load(path, &err);
    if (m) {
        for (int i = 0; i < m->n_tensors; i++) {
            const qc_tensor *t = &m->tensors[i];
            int64_t n = qc_tensor_numel(t);
            if (n > MAX_ELEMS) continue;
            float *out = malloc((size_t)n * sizeof *out);
            if (out) qc_tensor_to_f32(t, out, &err);
            free(out);
        }
    }
    qc_model_free(m);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qc_err err;
    qc_gguf *g = qc_gguf_parse(data, size, "fuzz.gguf", &err);
    if (!g) return 0;
    walk_metadata(g);
    dequant_small(g);
    int has_arch = qc_gguf_find(g, "general.architecture") != NULL;
    qc_gguf_free(g);
    if (has_arch) load_model(data, size);
    return 0;
}
