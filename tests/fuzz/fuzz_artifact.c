/* Fuzz target for the artifact reader and the artifact model loader. Each
 * input is tried twice: as given (the container checks must reject it or
 * accept it without reading outside the buffer), and with every checksum
 * recomputed, so that mutations get past the checksums into the table,
 * decompression, manifest and model-loading checks. Accepted sections are
 * read back (decompressed), and an accepted container is loaded as a model
 * through a temporary file. */
#include "compiler/model.h"
#include "runtime/artifact.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

/* Recomputes section, table and header checksums where they lie in bounds. */
static void reseal(uint8_t *b, size_t size) {
    if (size < QCRT_ARTIFACT_HEADER_SIZE || !qcrt_artifact_has_magic(b, size)) return;
    uint64_t off = qcrt_le64(b + 24), len = qcrt_le64(b + 32), count = qcrt_le32(b + 16);
    if (off > size || len > size - off) return;
    for (uint64_t i = 0; i < count && (i + 1) * QCRT_ARTIFACT_ENTRY_SIZE <= len; i++) {
        uint8_t *e = b + off + i * QCRT_ARTIFACT_ENTRY_SIZE;
        uint64_t so = qcrt_le64(e + 8), ss = qcrt_le64(e + 16);
        if (so <= size && ss <= size - so) qcrt_put64(e + 32, XXH3_64bits(b + so, (size_t)ss));
    }
    qcrt_put64(b + 48, XXH3_64bits(b + off, (size_t)len));
    qcrt_put64(b + 56, XXH3_64bits(b, 56));
}

static void load_model(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/qc_fuzz_artifact_%d.qc", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return;
    size_t wrote = fwrite(data, 1, size, f);
    fclose(f);
    qc_err err;
    if (wrote == size) {
        qc_model *m = qc_model_load(path, &err);
        for (int i = 0; m && i < m->n_tensors; i++) {
            const qc_tensor *t = &m->tensors[i];
            int64_t n = qc_tensor_numel(t);
            float *out = n <= (1 << 16) ? malloc((size_t)n * sizeof *out) : NULL;
            if (out && qc_tensor_to_f32(t, out, &err) != 0) abort(); /* validated on load */
            free(out);
        }
        qc_model_free(m);
    }
    unlink(path);
}

static void try_parse(const uint8_t *buf, size_t size) {
    qc_err err;
    qcrt_artifact *a = qcrt_artifact_parse(buf, size, "fuzz.qc", &err);
    if (!a) return;
    for (int i = 0; i < a->n_sections; i++) {
        const qcrt_section *s = &a->sections[i];
        if (s->offset > size || s->stored_size > size - s->offset) abort();
        void *owned;
        qcrt_artifact_section_data(a, s, &owned, &err);
        free(owned);
    }
    int has_manifest = qcrt_artifact_find(a, QCRT_SEC_MANIFEST, NULL) != NULL;
    qcrt_artifact_free(a);
    if (has_manifest) load_model(buf, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy, so ASan catches reads past the end of the input. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    try_parse(buf, size);
    reseal(buf, size);
    try_parse(buf, size);
    free(buf);
    return 0;
}
