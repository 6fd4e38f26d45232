/* Fuzz target: bytes -> tokenizer.json parse -> encode a fixed string and the
 * input itself (arbitrary bytes, invalid UTF-8 included) -> decode. Nothing
 * may crash; errors are fine. */
#include "compiler/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>

/* libFuzzer only (the CI replay does not call it): a vocabulary as large as
 * the default limit (2^21 ids, one claimed by a 36-byte input) costs ~0.5 s
 * of CPU per input under ASan, which turns into timeouts on a loaded machine
 * and slows the search; 2^16 keeps every input fast while exercising the
 * same code. The full-size case stays in the corpus (regress-sparse-vocab-2m)
 * and is replayed in CI with the default limit. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    setenv("QUANTC_MAX_VOCAB", "65536", 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qc_err err;
    qc_tokenizer *t = qc_tokenizer_from_json_buffer((const char *)data, size, "fuzz.json", &err);
    if (!t) return 0;
    static const char text[] = "Hello world 12345 <s> <|end|>  \t\n\xC3\xA9\xF0\x9F\x99\x82\xFF";
    const char *inputs[2] = {text, (const char *)data};
    size_t lens[2] = {sizeof text - 1, size < 4096 ? size : 4096};
    for (int k = 0; k < 2; k++) {
        int32_t *ids;
        size_t n;
        if (qc_tokenizer_encode(t, inputs[k], lens[k], 1, &ids, &n, &err) == 0) {
            char *s = qc_tokenizer_decode(t, ids, n, &err);
            free(s);
            free(ids);
        }
    }
    size_t l;
    qc_tokenizer_piece(t, 0, &l);
    qc_tokenizer_find(t, "a");
    qc_tokenizer_free(t);
    return 0;
}
