/* CPU code generation through the LLVM C API: the kernels of a set of specs
 * (IR: cpu_ir.h) optimized at O3, emitted as one object for a target and
 * linked with ld.lld into ONE shared object, returned as bytes (the artifact
 * stores them; runtime/cpu_kernels.h loads them).
 *
 * Targets: "host" (this machine's CPU name and features), "x86-64-v3" (AVX2,
 * FMA, F16C), "x86-64-v4" (+ AVX-512 F/BW/CD/DQ/VL), "aarch64" (NEON). The
 * packed-weight layout is the same for every target (8 lanes of 32 bits per
 * vector): 256-bit targets map it to one register, 128-bit NEON to two, and
 * AVX-512 runs it on 256-bit registers.
 *
 * Needs quantc built with LLVM (QC_HAVE_LLVM) and ld.lld (lld-14) on PATH,
 * or the linker named by $QC_LD; otherwise fails with a message that says so. */
#ifndef QC_CPU_LLVM_H
#define QC_CPU_LLVM_H

#include "kernel_spec.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qc_cpu_object {
    uint8_t *so; /* shared-object bytes (owned) */
    size_t so_size;
    /* Target descriptor "triple=T;cpu=C;features=f1,f2,..." (features: the
     * ISA extensions the code may use). Store it with the bytes and hand it
     * to qcrt_cpu_kernels_load, which checks it against the host. */
    char target[512];
    int n_specs;    /* specs passed in */
    int n_kernels;  /* distinct specs compiled (2 symbols each) */
    char **symbols; /* 2·n_specs names (owned): [2i] gemv, [2i+1] gemm of specs[i] */
    double ir_seconds, opt_seconds, emit_seconds, link_seconds;
} qc_cpu_object;

/* Whether this build has the LLVM code generator. */
int qc_cpu_codegen_available(void);

/* Generates, optimizes, emits and links the kernels of specs[0..n) (equal
 * specs share one kernel) for target (NULL = "host"). Fills out (free with
 * qc_cpu_object_free). Returns 0 or -1 with err (unsupported spec, unknown
 * target, LLVM or linker failure with the linker's message). */
int qc_cpu_codegen(const qc_kernel_spec *specs, int n, const char *target, qc_cpu_object *out,
                   qc_err *err);

void qc_cpu_object_free(qc_cpu_object *o);

/* The descriptor of a target without generating code (e.g. to report what
 * "host" resolves to). */
int qc_cpu_target_describe(const char *target, char *buf, size_t n, qc_err *err);

#endif
