/* NVRTC compilation and the per-spec cache (cuda_nvrtc.h). */
#include "cuda_nvrtc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef QC_HAVE_NVRTC
#include <nvrtc.h>
#endif

int qc_nvrtc_available(void) {
#ifdef QC_HAVE_NVRTC
    return 1;
#else
    return 0;
#endif
}

int qc_nvrtc_arch_check(const char *arch, qc_err *err) {
    size_t n = strlen(arch), d = 0;
    if (strncmp(arch, "sm_", 3) == 0)
        while (3 + d < n && isdigit((unsigned char)arch[3 + d]))
            d++;
    int ok = d >= 2 && d <= 3 &&
             (3 + d == n || (3 + d + 1 == n && (arch[n - 1] == 'a' || arch[n - 1] == 'f')));
    if (!ok)
        return qc_err_set(err,
                          "CUDA architecture '%s' (expected sm_NN, sm_NNa or sm_NNf, e.g. "
                          "sm_80, sm_90a)",
                          arch);
    return 0;
}

void qc_cuda_binary_free(qc_cuda_binary *b) {
    free(b->ptx);
    free(b->cubin);
    memset(b, 0, sizeof *b);
}

#ifdef QC_HAVE_NVRTC
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The log with trailing whitespace removed ("" when empty); malloc'd. */
static char *program_log(nvrtcProgram p) {
    size_t n = 0;
    if (nvrtcGetProgramLogSize(p, &n) != NVRTC_SUCCESS) n = 0;
    char *log = malloc(n + 1);
    if (!log) return NULL;
    log[0] = 0;
    if (n && nvrtcGetProgramLog(p, log) != NVRTC_SUCCESS) log[0] = 0;
    log[n] = 0;
    size_t len = strlen(log);
    while (len && isspace((unsigned char)log[len - 1]))
        log[--len] = 0;
    return log;
}
#endif

int qc_nvrtc_compile(const char *src, const char *name, const char *arch, qc_cuda_binary *out,
                     qc_err *err) {
    memset(out, 0, sizeof *out);
    if (qc_nvrtc_arch_check(arch, err)) return -1;
#ifndef QC_HAVE_NVRTC
    (void)src, (void)name;
    return qc_err_set(err, "%s: quantc was built without NVRTC (CUDA toolkit not found)", name);
#else
    double t0 = now();
    nvrtcProgram p;
    nvrtcResult r = nvrtcCreateProgram(&p, src, name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return qc_err_set(err, "%s: nvrtcCreateProgram: %s", name, nvrtcGetErrorString(r));
    char opt_arch[64];
    snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", arch);
    const char *opts[] = {opt_arch, "--std=c++17", "--extra-device-vectorization"};
    r = nvrtcCompileProgram(p, 3, opts);
    char *log = program_log(p);
    int rc = 0;
    if (r != NVRTC_SUCCESS || !log || log[0]) {
        rc = qc_err_set(err, "%s (%s): NVRTC %s: %.900s", name, arch,
                        r != NVRTC_SUCCESS ? nvrtcGetErrorString(r) : "warning",
                        log ? log : "(no log)");
        goto done;
    }
    if (nvrtcGetPTXSize(p, &out->ptx_size) != NVRTC_SUCCESS ||
        nvrtcGetCUBINSize(p, &out->cubin_size) != NVRTC_SUCCESS || !out->cubin_size) {
        rc = qc_err_set(err, "%s (%s): NVRTC produced no PTX or CUBIN", name, arch);
        goto done;
    }
    out->ptx = malloc(out->ptx_size);
    out->cubin = malloc(out->cubin_size);
    if (!out->ptx || !out->cubin || nvrtcGetPTX(p, out->ptx) != NVRTC_SUCCESS ||
        nvrtcGetCUBIN(p, (char *)out->cubin) != NVRTC_SUCCESS) {
        rc = qc_err_set(err, "%s (%s): reading NVRTC output failed", name, arch);
        goto done;
    }
    snprintf(out->arch, sizeof out->arch, "%s", arch);
    out->seconds = now() - t0;
done:
    free(log);
    nvrtcDestroyProgram(&p);
    if (rc) qc_cuda_binary_free(out);
    return rc;
#endif
}

typedef struct cache_entry {
    qc_kernel_spec spec;
    qc_cuda_gemv_opts opts;
    qc_cuda_kernel kernel;
    qc_cuda_binary bin;
} cache_entry;

struct qc_nvrtc_cache {
    cache_entry *e;
    int n, cap, compiles;
    double seconds;
};

qc_nvrtc_cache *qc_nvrtc_cache_new(qc_err *err) {
    return qc_calloc(1, sizeof(qc_nvrtc_cache), err);
}

void qc_nvrtc_cache_free(qc_nvrtc_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        qc_cuda_kernel_free(&c->e[i].kernel);
        qc_cuda_binary_free(&c->e[i].bin);
    }
    free(c->e);
    free(c);
}

const qc_cuda_binary *qc_nvrtc_cache_get_opts(qc_nvrtc_cache *c, const qc_kernel_spec *s,
                                              const qc_cuda_gemv_opts *opts, const char *arch,
                                              const qc_cuda_kernel **kernel, int *hit,
                                              qc_err *err) {
    qc_cuda_gemv_opts o;
    if (opts)
        o = *opts;
    else
        qc_cuda_gemv_default_opts(s, &o);
    for (int i = 0; i < c->n; i++)
        if (qc_kernel_spec_equal(&c->e[i].spec, s) && !memcmp(&c->e[i].opts, &o, sizeof o) &&
            !strcmp(c->e[i].bin.arch, arch)) {
            if (hit) *hit = 1;
            if (kernel) *kernel = &c->e[i].kernel;
            return &c->e[i].bin;
        }
    if (hit) *hit = 0;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        cache_entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) return qc_err_set(err, "NVRTC cache: out of memory"), NULL;
        c->e = e, c->cap = cap;
    }
    cache_entry *e = &c->e[c->n];
    e->spec = *s;
    e->opts = o;
    if (qc_cuda_src_gemv_opts(s, &o, &e->kernel, err)) return NULL;
    char name[160];
    snprintf(name, sizeof name, "%s.cu", e->kernel.gemv);
    if (qc_nvrtc_compile(e->kernel.src, name, arch, &e->bin, err)) {
        qc_cuda_kernel_free(&e->kernel);
        return NULL;
    }
    c->compiles++;
    c->seconds += e->bin.seconds;
    c->n++;
    if (kernel) *kernel = &e->kernel;
    return &e->bin;
}

const qc_cuda_binary *qc_nvrtc_cache_get(qc_nvrtc_cache *c, const qc_kernel_spec *s,
                                         const char *arch, const qc_cuda_kernel **kernel, int *hit,
                                         qc_err *err) {
    return qc_nvrtc_cache_get_opts(c, s, NULL, arch, kernel, hit, err);
}

void qc_nvrtc_cache_stats(const qc_nvrtc_cache *c, int *compiles, double *seconds) {
    *compiles = c->compiles;
    *seconds = c->seconds;
}
