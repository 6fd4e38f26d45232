/* The loader's checks of an artifact's CUDA parts (compiler/artifact_load.c;
 * docs/artifact-format.md): a tiny model compiled with --target cuda:sm_80
 * loads with one kernel set (forward module first, then a module per spec)
 * and a CUDA blob on every layer; then copies of it, each with one CUDA
 * part made inconsistent and resealed with valid checksums (so only the
 * semantic checks can catch it), must fail to load with a message naming
 * the problem: a launch shape out of range, no forward module, PTX that is
 * not one NUL-terminated string, a CUBIN that is not a CUDA ELF, a module
 * naming a missing section, a blob packed for another spec (hash), a
 * cuda_kernel id that is not the layer's spec, an unknown cuda_layout
 * (the blob checker's own refusals are tested in test_cuda_nvrtc). Skips
 * (77) without NVRTC. */
#include "../codegen/artifact_write.h"
#include "../codegen/cuda_nvrtc.h"
#include "../compiler/model.h"
#include "../runtime/artifact.h"
#include "check.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

typedef struct edit {
    const char *what, *want;
    void (*manifest)(json_t *man);
    /* May change the raw bytes of section (name, target) in place or shorten them. */
    void (*bytes)(const char *name, const char *target, uint8_t *b, size_t *size);
} edit;

static json_t *cuda_set(json_t *man) {
    json_t *ks = json_object_get(man, "kernels"), *k;
    size_t i;
    json_array_foreach(
        ks, i, k) if (!strcmp(json_string_value(json_object_get(k, "device")), "cuda")) return k;
    return NULL;
}

static json_t *module(json_t *man, size_t i) {
    return json_array_get(json_object_get(cuda_set(man), "modules"), i);
}

static json_t *layer0(json_t *man) {
    return json_array_get(json_object_get(man, "layers"), 0);
}

static void bad_launch(json_t *man) {
    json_object_set_new(json_object_get(module(man, 1), "launch"), "warps", json_integer(99));
}
static void no_forward(json_t *man) {
    json_array_remove(json_object_get(cuda_set(man), "modules"), 0);
}
static void missing_section(json_t *man) {
    json_object_set_new(module(man, 1), "cubin", json_string("cuda/nope.cubin"));
}
static void wrong_kernel(json_t *man) {
    json_object_set_new(layer0(man), "cuda_kernel", json_string("i4ca_o1_i1"));
}
static void wrong_layout(json_t *man) {
    json_object_set_new(layer0(man), "cuda_layout", json_string("qccuda9"));
}

static void ptx_unterminated(const char *name, const char *target, uint8_t *b, size_t *size) {
    (void)target, (void)b;
    if (!strcmp(name, "cuda/forward.ptx")) (*size)--;
}
static void cubin_not_cuda(const char *name, const char *target, uint8_t *b, size_t *size) {
    (void)target, (void)size;
    if (!strcmp(name, "cuda/forward.cubin")) b[18] = 62; /* EM_X86_64 */
}
static void blob_hash(const char *name, const char *target, uint8_t *b, size_t *size) {
    (void)target, (void)size;
    if (strstr(name, "layers.0.self_attn.q_proj.cuda_packed")) b[8] ^= 1;
}
/* Copies src to dst applying e, with fresh checksums. */
static void rewrite(const char *src, const char *dst, const edit *e) {
    qc_err err = {{0}};
    qcrt_artifact *a = qcrt_artifact_open(src, &err);
    CHECK_FATAL(a);
    unlink(dst);
    qc_artifact_writer *w = qc_artifact_writer_new(dst, NULL, &err);
    CHECK_FATAL(w);
    for (int i = 0; i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        void *owned = NULL;
        const uint8_t *d = qcrt_artifact_section_data(a, s, &owned, &err);
        CHECK_FATAL(d);
        size_t n = (size_t)s->raw_size;
        uint8_t *b = malloc(n + 1);
        memcpy(b, d, n);
        if (s->kind == QCRT_SEC_MANIFEST && e->manifest) {
            json_t *man = json_loadb((const char *)b, n, 0, NULL);
            CHECK_FATAL(man);
            e->manifest(man);
            free(b);
            b = (uint8_t *)json_dumps(man, JSON_SORT_KEYS);
            n = strlen((char *)b);
            json_decref(man);
        } else if (e->bytes) {
            e->bytes(s->name, s->target, b, &n);
        }
        CHECK_FATAL(!qc_artifact_writer_add(w, s->kind, s->name, s->target, b, n, &err));
        free(b);
        free(owned);
    }
    CHECK_FATAL(!qc_artifact_writer_finish(w, &err));
    qc_artifact_writer_free(w);
    qcrt_artifact_free(a);
}

int main(void) {
    if (!qc_nvrtc_available()) {
        printf("SKIP: quantc was built without NVRTC\n");
        return 77;
    }
    const char *bin = getenv("QC_BIN"), *data = getenv("QC_DATA");
    char calib[512], cmd[2048], ok[128], bad[128];
    snprintf(calib, sizeof calib, "%s/wikitext2-valid.tokens.txt", data ? data : "../shared/data");
    if (!bin || access(calib, R_OK)) {
        printf("SKIP: needs QC_BIN and the calibration text (%s)\n", calib);
        return 77;
    }
    snprintf(dir, sizeof dir, "/tmp/qc_cuda_art_XXXXXX");
    CHECK_FATAL(mkdtemp(dir));
    snprintf(ok, sizeof ok, "%s/ok.qc", dir);
    snprintf(bad, sizeof bad, "%s/bad.qc", dir);
    snprintf(cmd, sizeof cmd,
             "%s compile tests/data/tiny/llama -r recipes/w4a16-g128.yaml -o %s --calib %s "
             "--calib-samples 2 --calib-tokens 32 --no-gates --target cuda:sm_80 --quiet",
             bin, ok, calib);
    CHECK_FATAL(system(cmd) == 0);

    qc_err err = {{0}};
    qc_model *m = qc_model_load(ok, &err);
    CHECK_FATAL(m);
    CHECK(m->n_cuda == 1 && !strcmp(m->cuda[0].arch, "sm_80") && m->cuda[0].n_mods == 5 &&
          !strcmp(m->cuda[0].mods[0].name, "forward"));
    for (int i = 0; i < m->n_cuda && i < 1; i++)
        for (int k = 0; k < m->cuda[i].n_mods; k++) {
            const qc_cuda_module_ref *r = &m->cuda[i].mods[k];
            CHECK(r->ptx[r->ptx_size - 1] == 0 && !memcmp(r->cubin, "\177ELF", 4));
            CHECK(k == 0 || (r->rtb == 1 && r->warps >= 1));
        }
    for (int i = 0; i < m->n_quant; i++)
        CHECK_MSG(m->quant[i].cuda_packed && m->quant[i].cuda_packed_size > 64, "%s",
                  m->quant[i].name);
    qc_model_free(m);

    static const edit edits[] = {
        {"launch shape", "launch {row_tiles", bad_launch, NULL},
        {"no forward module", "0 forward modules", no_forward, NULL},
        {"missing section", "no kernels section 'cuda/nope.cubin'", missing_section, NULL},
        {"wrong cuda_kernel", "is not the layer's spec", wrong_kernel, NULL},
        {"unknown cuda_layout", "cuda_layout \"qccuda1\"", wrong_layout, NULL},
        {"PTX without NUL", "PTX is not one NUL-terminated string", NULL, ptx_unterminated},
        {"CUBIN not CUDA", "not a 64-bit CUDA ELF", NULL, cubin_not_cuda},
        {"blob for another spec", "hash mismatch", NULL, blob_hash},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        rewrite(ok, bad, &edits[i]);
        qc_err e = {{0}};
        m = qc_model_load(bad, &e);
        CHECK_MSG(!m && strstr(e.msg, edits[i].want), "%s: got '%s'", edits[i].what,
                  m ? "(loaded)" : e.msg);
        qc_model_free(m);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_END();
}
