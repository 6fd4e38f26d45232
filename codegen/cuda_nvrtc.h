/* NVRTC: CUDA C source (codegen/cuda_src.h) to PTX and CUBIN at compile time
 * (issue 6). Any NVRTC error or warning fails the compile with NVRTC's log in
 * the message. A cache keyed by kernel spec compiles equal specs once per
 * architecture. Without NVRTC at build time every call fails with a message
 * saying so (qc_nvrtc_available tells first). */
#ifndef QC_CUDA_NVRTC_H
#define QC_CUDA_NVRTC_H

#include "cuda_src.h"
#include "kernel_spec.h"

#include <stddef.h>
#include <stdint.h>

/* Compiled code of one source for one architecture. */
typedef struct qc_cuda_binary {
    char arch[16]; /* "sm_90a", "sm_80", ... */
    char *ptx;     /* NUL-terminated PTX (ptx_size counts the NUL), owned */
    size_t ptx_size;
    uint8_t *cubin; /* ELF for arch, owned */
    size_t cubin_size;
    double seconds; /* NVRTC compile time, wall clock */
} qc_cuda_binary;

int qc_nvrtc_available(void);

/* Checks an architecture name: "sm_" then 2-3 digits, optionally 'a' or 'f'
 * (e.g. sm_80, sm_90a, sm_100f). Returns 0 or -1 with err. */
int qc_nvrtc_arch_check(const char *arch, qc_err *err);

/* Compiles src (name appears in NVRTC's messages) for arch into out (PTX
 * and CUBIN from one compile). Returns 0, or -1 with err naming the source,
 * the arch and NVRTC's log. */
int qc_nvrtc_compile(const char *src, const char *name, const char *arch, qc_cuda_binary *out,
                     qc_err *err);
void qc_cuda_binary_free(qc_cuda_binary *b);

/* Cache of compiled GEMV kernels by (spec, launch shape, arch). */
typedef struct qc_nvrtc_cache qc_nvrtc_cache;
qc_nvrtc_cache *qc_nvrtc_cache_new(qc_err *err);
void qc_nvrtc_cache_free(qc_nvrtc_cache *c);

/* The binary of spec s's kernels (qc_cuda_src_gemv) for arch, compiled on
 * the first request and returned from the cache after (*hit says which
 * when non-NULL). The binary and *kernel (launch parameters, when non-NULL)
 * are owned by the cache and live until qc_nvrtc_cache_free. */
const qc_cuda_binary *qc_nvrtc_cache_get(qc_nvrtc_cache *c, const qc_kernel_spec *s,
                                         const char *arch, const qc_cuda_kernel **kernel, int *hit,
                                         qc_err *err);

/* The same for launch shape opts (NULL: qc_cuda_gemv_default_opts); the
 * cache key is (spec, opts, arch). */
const qc_cuda_binary *qc_nvrtc_cache_get_opts(qc_nvrtc_cache *c, const qc_kernel_spec *s,
                                              const qc_cuda_gemv_opts *opts, const char *arch,
                                              const qc_cuda_kernel **kernel, int *hit, qc_err *err);

/* Compiles so far (cache misses) and their total seconds. */
void qc_nvrtc_cache_stats(const qc_nvrtc_cache *c, int *compiles, double *seconds);

#endif
