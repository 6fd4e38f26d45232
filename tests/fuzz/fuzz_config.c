/* Fuzz target: arbitrary bytes as config.json. */
#include "compiler/hf_config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    qc_config c;
    qc_hf_config_info info;
    qc_err err;
    qc_hf_config_parse(buf, size, "fuzz/config.json", &c, &info, &err);
    free(buf);
    return 0;
}
