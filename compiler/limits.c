/* Resource limits (see limits.h). */
#include "limits.h"

#include "mapfile.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *env;
    uint64_t def;
} table[QC_LIMIT_COUNT] = {
    [QC_LIMIT_SAFETENSORS_HEADER] = {"QUANTC_MAX_SAFETENSORS_HEADER", 100000000u},
    [QC_LIMIT_JSON_BYTES] = {"QUANTC_MAX_JSON_BYTES", (uint64_t)1 << 30},
    [QC_LIMIT_VOCAB] = {"QUANTC_MAX_VOCAB", (uint64_t)1 << 21},
    [QC_LIMIT_RECIPE_BYTES] = {"QUANTC_MAX_RECIPE_BYTES", (uint64_t)1 << 20},
    [QC_LIMIT_TEXT_BYTES] = {"QUANTC_MAX_TEXT_BYTES", (uint64_t)1 << 30},
    [QC_LIMIT_ARTIFACT_SECTIONS] = {"QUANTC_MAX_ARTIFACT_SECTIONS", (uint64_t)1 << 24},
    [QC_LIMIT_SECTION_BYTES] = {"QUANTC_MAX_SECTION_BYTES", (uint64_t)1 << 40},
};

static uint64_t values[QC_LIMIT_COUNT];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The variable's value, or 0 when unset or malformed. */
static uint64_t env_value(int i, const char **raw) {
    const char *s = getenv(table[i].env);
    *raw = s;
    if (!s || !*s || s[0] == '-' || s[0] == '+') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    return errno || *end ? 0 : (uint64_t)v;
}

static void load(void) {
    for (int i = 0; i < QC_LIMIT_COUNT; i++) {
        const char *raw;
        uint64_t v = env_value(i, &raw);
        values[i] = v ? v : table[i].def;
    }
}

int qc_limits_check(qc_err *err) {
    for (int i = 0; i < QC_LIMIT_COUNT; i++) {
        const char *raw;
        if (env_value(i, &raw) == 0 && raw && *raw)
            return qc_err_set(err, "%s='%.40s': expected a positive integer", table[i].env, raw);
    }
    return 0;
}

char *qc_read_limited(const char *path, qc_limit_id id, size_t *len, qc_err *err) {
    uint64_t m = qc_limit(id);
    char *r = qc_read_file(path, m > SIZE_MAX - 1 ? SIZE_MAX - 1 : (size_t)m, len, err);
    if (!r && err && strstr(err->msg, "larger than the limit")) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (%s raises it)", qc_limit_env(id));
    }
    return r;
}

uint64_t qc_limit(qc_limit_id id) {
    pthread_once(&once, load);
    return id < QC_LIMIT_COUNT ? values[id] : 0;
}

const char *qc_limit_env(qc_limit_id id) {
    return id < QC_LIMIT_COUNT ? table[id].env : "";
}
