/* Resource limits on untrusted input: sizes and counts that a file may
 * claim before quantc allocates for them. Each has a default that fits any
 * real model and can be raised (or lowered) with an environment variable,
 * QUANTC_MAX_<NAME> = a positive integer. Messages that hit a limit name the
 * variable. README.md ("Limits") lists them. Counts bounded by the file's own
 * size (GGUF tensors and key/values, string lengths, safetensors offsets)
 * need no limit: a claim larger than the file is rejected as such. */
#ifndef QC_LIMITS_H
#define QC_LIMITS_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum qc_limit_id {
    QC_LIMIT_SAFETENSORS_HEADER, /* bytes of a safetensors JSON header (100 MB) */
    QC_LIMIT_JSON_BYTES,         /* tokenizer.json, tokenizer_config.json, index (1 GiB) */
    QC_LIMIT_VOCAB,              /* tokenizer vocabulary and merges (2^21) */
    QC_LIMIT_RECIPE_BYTES,       /* a recipe file (1 MiB) */
    QC_LIMIT_TEXT_BYTES,         /* evaluation / calibration / gate text (1 GiB) */
    QC_LIMIT_ARTIFACT_SECTIONS,  /* sections of an artifact (2^24) */
    QC_LIMIT_SECTION_BYTES,      /* decompressed bytes of one artifact section (1 TiB) */
    QC_LIMIT_COUNT
} qc_limit_id;

/* The limit's value: QUANTC_MAX_<NAME> when set to a positive integer
 * (read once per process), else the default (also when the variable is
 * malformed: qc_limits_check reports that). */
uint64_t qc_limit(qc_limit_id id);

/* Checks every QUANTC_MAX_* variable that is set: 0, or -1 with err naming
 * the first malformed one. The CLI calls it at startup. */
int qc_limits_check(qc_err *err);

/* qc_read_file (mapfile.h) with limit id as its size bound; a file over it
 * fails with a message naming the variable that raises it. */
char *qc_read_limited(const char *path, qc_limit_id id, size_t *len, qc_err *err);

/* "QUANTC_MAX_<NAME>", for messages. */
const char *qc_limit_env(qc_limit_id id);

#endif
