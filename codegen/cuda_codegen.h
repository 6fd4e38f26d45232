/* The CUDA kernels of a compiled model for one architecture (issue 6): the
 * forward-pass module (codegen/cuda_forward.h) and one module per distinct
 * linear kernel spec (codegen/cuda_src.h), each compiled by NVRTC to PTX and
 * CUBIN at artifact-compile time, so the runtime never compiles (it loads
 * the CUBIN, or lets the driver JIT the PTX on a newer GPU). */
#ifndef QC_CUDA_CODEGEN_H
#define QC_CUDA_CODEGEN_H

#include "cuda_nvrtc.h"
#include "cuda_src.h"
#include "kernel_spec.h"

#define QC_CUDA_FORWARD_MODULE "forward"

typedef struct qc_cuda_module {
    char name[96]; /* QC_CUDA_FORWARD_MODULE, or the spec id */
    int is_forward;
    qc_kernel_spec spec;                           /* linear modules */
    qc_cuda_gemv_opts opts;                        /* their GEMV launch shape */
    char gemv[128], lrt[128], gemm[128], had[128]; /* had: "" without an online transform */
    qc_cuda_binary bin;
} qc_cuda_module;

typedef struct qc_cuda_object {
    char arch[16];
    qc_cuda_module *mods; /* forward first, then specs in first-seen order */
    int n_mods;
    double seconds; /* NVRTC wall time, all modules */
} qc_cuda_object;

/* Compiles the forward module and the kernels of every distinct spec of
 * specs[0..n) for arch (qc_nvrtc_arch_check). Every spec must pass
 * qc_cuda_spec_check. Returns 0, or -1 with err naming the module. Free
 * with qc_cuda_object_free (also after a failure). */
int qc_cuda_codegen(const qc_kernel_spec *specs, int n, const char *arch, qc_cuda_object *out,
                    qc_err *err);
void qc_cuda_object_free(qc_cuda_object *o);

#endif
