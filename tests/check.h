/* Minimal assertions for ctest executables: a failed CHECK prints where and
 * why, and the test exits 1 at the end (CHECK_FATAL stops at once). */
#ifndef QC_TEST_CHECK_H
#define QC_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int qc_test_failures = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            qc_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            qc_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_FATAL(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fatal CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        if (qc_test_failures) fprintf(stderr, "%d check(s) failed\n", qc_test_failures);           \
        return qc_test_failures ? 1 : 0;                                                           \
    } while (0)

#endif
