/* Loading generated CPU kernels (codegen/cpu_llvm.h) from shared-object
 * bytes: the target descriptor stored with them is checked against this
 * host first (architecture and every ISA extension the code may use), so
 * an object built for another machine fails with a message, never SIGILL. */
#ifndef QCRT_CPU_KERNELS_H
#define QCRT_CPU_KERNELS_H

#include "../codegen/kernel_spec.h"
#include "../compiler/err.h"

#include <stddef.h>

typedef struct qcrt_cpu_kernels qcrt_cpu_kernels;

/* Checks a target descriptor ("triple=...;cpu=...;features=a,b") against
 * this host. Returns 0, or -1 with err naming what is missing. */
int qcrt_cpu_target_check(const char *target, qc_err *err);

/* Loads so (size bytes, copied: the caller keeps ownership) built for
 * target. The object is written to an anonymous memfd (or an unlinked
 * private temp file where memfd_create is unavailable) and dlopen'd.
 * Checks: target vs host, ELF header (64-bit, little-endian, shared object,
 * this machine), and the descriptor compiled into the object equals target.
 * Returns NULL with err on any failure. */
qcrt_cpu_kernels *qcrt_cpu_kernels_load(const void *so, size_t size, const char *target,
                                        qc_err *err);

/* The gemv and gemm kernels of spec s. Returns 0, or -1 with err when the
 * object has no kernels for s. */
int qcrt_cpu_kernels_find(const qcrt_cpu_kernels *k, const qc_kernel_spec *s, qc_gemv_fn *gemv,
                          qc_gemm_fn *gemm, qc_err *err);

/* The split gemv of spec s (kernel_spec.h); objects from quantc versions
 * before it have none: returns 0 when found, 1 when absent. */
int qcrt_cpu_kernels_find_split(const qcrt_cpu_kernels *k, const qc_kernel_spec *s,
                                qc_gemv_prep_fn *prep, qc_gemv_rows_fn *rows);

void qcrt_cpu_kernels_free(qcrt_cpu_kernels *k);

#endif
