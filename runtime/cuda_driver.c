/* CUDA driver API through dlopen (cuda_driver.h). The few types and
 * constants used are declared here, so no CUDA header is needed to build. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult; /* 0 = CUDA_SUCCESS */
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef unsigned long long CUdeviceptr;

enum {
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INSUFFICIENT_DRIVER = 35,
    ATTR_SM_COUNT = 16,
    ATTR_L2_BYTES = 38,
    ATTR_CC_MAJOR = 75,
    ATTR_CC_MINOR = 76,
    FUNC_ATTR_LOCAL_BYTES = 3,
    FUNC_ATTR_NUM_REGS = 4,
    FUNC_ATTR_MAX_DYNAMIC_SHARED = 8,
};

/* The driver entry points used: field, exported symbol, parameters (all
 * return CUresult). */
#define QCRT_CUDA_FUNCS(X)                                                                         \
    X(cuInit, "cuInit", (unsigned))                                                                \
    X(cuDriverGetVersion, "cuDriverGetVersion", (int *))                                           \
    X(cuGetErrorString, "cuGetErrorString", (CUresult, const char **))                             \
    X(cuDeviceGetCount, "cuDeviceGetCount", (int *))                                               \
    X(cuDeviceGet, "cuDeviceGet", (CUdevice *, int))                                               \
    X(cuDeviceGetName, "cuDeviceGetName", (char *, int, CUdevice))                                 \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *, int, CUdevice))                        \
    X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *, CUdevice))                               \
    X(cuPrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *, CUdevice))                     \
    X(cuPrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice))                             \
    X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext))                                             \
    X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                                \
    X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                        \
    X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                    \
    X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr, const void *, size_t))                        \
    X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *, CUdeviceptr, size_t))                              \
    X(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", (CUdeviceptr, CUdeviceptr, size_t, void *))       \
    X(cuMemsetD8, "cuMemsetD8_v2", (CUdeviceptr, unsigned char, size_t))                           \
    X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *, const void *))                            \
    X(cuModuleUnload, "cuModuleUnload", (CUmodule))                                                \
    X(cuModuleGetFunction, "cuModuleGetFunction", (void **, CUmodule, const char *))               \
    X(cuFuncGetAttribute, "cuFuncGetAttribute", (int *, int, void *))                              \
    X(cuFuncSetAttribute, "cuFuncSetAttribute", (void *, int, int))                                \
    X(cuLaunchKernel, "cuLaunchKernel",                                                            \
      (void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *,       \
       void **, void **))                                                                          \
    X(cuEventCreate, "cuEventCreate", (void **, unsigned))                                         \
    X(cuEventDestroy, "cuEventDestroy_v2", (void *))                                               \
    X(cuEventRecord, "cuEventRecord", (void *, void *))                                            \
    X(cuEventSynchronize, "cuEventSynchronize", (void *))                                          \
    X(cuEventElapsedTime, "cuEventElapsedTime", (float *, void *, void *))                         \
    X(cuStreamCreate, "cuStreamCreate", (void **, unsigned))                                       \
    X(cuStreamDestroy, "cuStreamDestroy_v2", (void *))                                             \
    X(cuStreamBeginCapture, "cuStreamBeginCapture_v2", (void *, int))                              \
    X(cuStreamEndCapture, "cuStreamEndCapture", (void *, void **))                                 \
    X(cuGraphInstantiate, "cuGraphInstantiateWithFlags", (void **, void *, unsigned long long))    \
    X(cuGraphDestroy, "cuGraphDestroy", (void *))                                                  \
    X(cuGraphLaunch, "cuGraphLaunch", (void *, void *))                                            \
    X(cuGraphExecDestroy, "cuGraphExecDestroy", (void *))

struct qcrt_cuda {
    void *lib;
#define X(field, sym, params) CUresult(*field) params;
    QCRT_CUDA_FUNCS(X)
#undef X
    CUdevice dev;
    CUcontext ctx;
    qcrt_cuda_info info;
    void *stream;  /* where work is queued: NULL (the legacy stream), or capture */
    void *capture; /* the stream graphs are captured on and launched on (blocking,
                      so the legacy stream's synchronous copies wait for it) */
};

struct qcrt_cuda_module {
    CUmodule mod;
};

/* Fills err with "what: CUDA error N (text)" and returns -1. */
static int fail(const qcrt_cuda *c, CUresult r, qc_err *err, const char *what) {
    const char *s = NULL;
    if (c->cuGetErrorString) c->cuGetErrorString(r, &s);
    return qc_err_set(err, "%s: CUDA error %d (%s)", what, r, s ? s : "unknown");
}

#define TRY(c, call, err, what)                                                                    \
    do {                                                                                           \
        CUresult r_ = (call);                                                                      \
        if (r_) return fail(c, r_, err, what);                                                     \
    } while (0)

int qcrt_cuda_open(int ordinal, qcrt_cuda **out, qc_err *err) {
    *out = NULL;
    qcrt_cuda *c = qc_calloc(1, sizeof *c, err);
    if (!c) return -1;
    c->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!c->lib) {
        qc_err_set(err, "libcuda.so.1 not loadable (no NVIDIA driver): %s", dlerror());
        free(c);
        return QCRT_CUDA_NO_DEVICE;
    }
#define X(field, sym, params)                                                                      \
    if (!(*(void **)&c->field = dlsym(c->lib, sym))) {                                             \
        qc_err_set(err, "libcuda.so.1 lacks %s (driver too old)", sym);                            \
        dlclose(c->lib);                                                                           \
        free(c);                                                                                   \
        return QCRT_CUDA_NO_DEVICE;                                                                \
    }
    QCRT_CUDA_FUNCS(X)
#undef X
    int n = 0, rc = QCRT_CUDA_NO_DEVICE;
    CUresult r = c->cuInit(0);
    if (r) {
        fail(c, r, err, "cuInit");
    } else if ((r = c->cuDeviceGetCount(&n)) || n == 0) {
        qc_err_set(err, "no CUDA device (cuDeviceGetCount: %d devices, error %d)", n, r);
    } else if (ordinal < 0 || ordinal >= n) {
        qc_err_set(err, "CUDA device %d requested, %d present", ordinal, n);
        rc = -1;
    } else if ((r = c->cuDeviceGet(&c->dev, ordinal)) ||
               (r = c->cuPrimaryCtxRetain(&c->ctx, c->dev))) {
        fail(c, r, err, "CUDA device open");
        rc = -1;
    } else {
        rc = 0;
    }
    if (rc) {
        dlclose(c->lib);
        free(c);
        return rc;
    }
    qcrt_cuda_info *i = &c->info;
    if ((r = c->cuCtxSetCurrent(c->ctx)) || (r = c->cuDeviceGetName(i->name, 256, c->dev)) ||
        (r = c->cuDeviceGetAttribute(&i->major, ATTR_CC_MAJOR, c->dev)) ||
        (r = c->cuDeviceGetAttribute(&i->minor, ATTR_CC_MINOR, c->dev)) ||
        (r = c->cuDeviceGetAttribute(&i->sm_count, ATTR_SM_COUNT, c->dev)) ||
        (r = c->cuDeviceGetAttribute(&i->l2_bytes, ATTR_L2_BYTES, c->dev)) ||
        (r = c->cuDeviceTotalMem(&i->total_mem, c->dev)) ||
        (r = c->cuDriverGetVersion(&i->driver_version))) {
        fail(c, r, err, "CUDA device query");
        qcrt_cuda_close(c);
        return -1;
    }
    snprintf(i->arch, sizeof i->arch, "sm_%d%d%s", i->major, i->minor,
             i->major == 9 && i->minor == 0 ? "a" : "");
    *out = c;
    return 0;
}

void qcrt_cuda_close(qcrt_cuda *c) {
    if (!c) return;
    c->cuCtxSynchronize();
    if (c->capture) c->cuStreamDestroy(c->capture);
    c->cuPrimaryCtxRelease(c->dev);
    dlclose(c->lib);
    free(c);
}

const qcrt_cuda_info *qcrt_cuda_device(const qcrt_cuda *c) {
    return &c->info;
}

int qcrt_cuda_alloc(qcrt_cuda *c, size_t bytes, qcrt_dptr *p, qc_err *err) {
    CUdeviceptr d = 0;
    CUresult r = c->cuMemAlloc(&d, bytes ? bytes : 1);
    if (r) {
        char what[64];
        snprintf(what, sizeof what, "cuMemAlloc(%zu bytes)", bytes);
        return fail(c, r, err, what);
    }
    *p = d;
    return 0;
}

void qcrt_cuda_free(qcrt_cuda *c, qcrt_dptr p) {
    if (p) c->cuMemFree(p);
}

int qcrt_cuda_upload(qcrt_cuda *c, qcrt_dptr dst, const void *src, size_t bytes, qc_err *err) {
    TRY(c, c->cuMemcpyHtoD(dst, src, bytes), err, "cuMemcpyHtoD");
    return 0;
}

int qcrt_cuda_download(qcrt_cuda *c, void *dst, qcrt_dptr src, size_t bytes, qc_err *err) {
    TRY(c, c->cuMemcpyDtoH(dst, src, bytes), err, "cuMemcpyDtoH");
    return 0;
}

int qcrt_cuda_copy(qcrt_cuda *c, qcrt_dptr dst, qcrt_dptr src, size_t bytes, qc_err *err) {
    TRY(c, c->cuMemcpyDtoDAsync(dst, src, bytes, NULL), err, "cuMemcpyDtoDAsync");
    return 0;
}

int qcrt_cuda_memset(qcrt_cuda *c, qcrt_dptr dst, uint8_t byte, size_t bytes, qc_err *err) {
    TRY(c, c->cuMemsetD8(dst, byte, bytes), err, "cuMemsetD8");
    return 0;
}

int qcrt_cuda_sync(qcrt_cuda *c, qc_err *err) {
    TRY(c, c->cuCtxSynchronize(), err, "cuCtxSynchronize (a kernel failed)");
    return 0;
}

int qcrt_cuda_module_load(qcrt_cuda *c, const void *image, qcrt_cuda_module **m, qc_err *err) {
    *m = qc_calloc(1, sizeof **m, err);
    if (!*m) return -1;
    CUresult r = c->cuModuleLoadData(&(*m)->mod, image);
    if (r) {
        free(*m);
        *m = NULL;
        return fail(c, r, err, "cuModuleLoadData");
    }
    return 0;
}

void qcrt_cuda_module_free(qcrt_cuda *c, qcrt_cuda_module *m) {
    if (!m) return;
    c->cuModuleUnload(m->mod);
    free(m);
}

int qcrt_cuda_function(qcrt_cuda *c, qcrt_cuda_module *m, const char *name, qcrt_cuda_fn *f,
                       qc_err *err) {
    CUresult r = c->cuModuleGetFunction(f, m->mod, name);
    if (r) return fail(c, r, err, name);
    return 0;
}

int qcrt_cuda_fn_resources(qcrt_cuda *c, qcrt_cuda_fn f, int *regs, int *local_bytes, qc_err *err) {
    TRY(c, c->cuFuncGetAttribute(regs, FUNC_ATTR_NUM_REGS, f), err, "cuFuncGetAttribute");
    TRY(c, c->cuFuncGetAttribute(local_bytes, FUNC_ATTR_LOCAL_BYTES, f), err, "cuFuncGetAttribute");
    return 0;
}

int qcrt_cuda_fn_set_shared(qcrt_cuda *c, qcrt_cuda_fn f, size_t bytes, qc_err *err) {
    if (bytes <= 48 * 1024) return 0;
    CUresult r = c->cuFuncSetAttribute(f, FUNC_ATTR_MAX_DYNAMIC_SHARED, (int)bytes);
    if (r) {
        fail(c, r, err, "cuFuncSetAttribute");
        return qc_err_prefix(err, "%zu bytes of dynamic shared memory per block on %s", bytes,
                             c->info.name);
    }
    return 0;
}

int qcrt_cuda_launch(qcrt_cuda *c, qcrt_cuda_fn f, unsigned grid, unsigned block,
                     unsigned shared_bytes, void **args, qc_err *err) {
    return qcrt_cuda_launch2(c, f, grid, 1, block, shared_bytes, args, err);
}

int qcrt_cuda_launch2(qcrt_cuda *c, qcrt_cuda_fn f, unsigned grid_x, unsigned grid_y,
                      unsigned block, unsigned shared_bytes, void **args, qc_err *err) {
    TRY(c,
        c->cuLaunchKernel(f, grid_x, grid_y, 1, block, 1, 1, shared_bytes, c->stream, args, NULL),
        err, "cuLaunchKernel");
    return 0;
}

int qcrt_cuda_capture_begin(qcrt_cuda *c, qc_err *err) {
    if (!c->capture) TRY(c, c->cuStreamCreate(&c->capture, 0), err, "cuStreamCreate");
    TRY(c, c->cuStreamBeginCapture(c->capture, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */), err,
        "cuStreamBeginCapture");
    c->stream = c->capture;
    return 0;
}

int qcrt_cuda_capture_end(qcrt_cuda *c, int discard, qcrt_cuda_graph *g, qc_err *err) {
    void *graph = NULL;
    CUresult r = c->cuStreamEndCapture(c->capture, &graph);
    c->stream = NULL;
    *g = NULL;
    if (!r && !discard) r = c->cuGraphInstantiate(g, graph, 0);
    if (graph) c->cuGraphDestroy(graph);
    if (r) return fail(c, r, err, "CUDA graph capture");
    return 0;
}

int qcrt_cuda_graph_launch(qcrt_cuda *c, qcrt_cuda_graph g, qc_err *err) {
    TRY(c, c->cuGraphLaunch(g, c->capture), err, "cuGraphLaunch");
    return 0;
}

void qcrt_cuda_graph_free(qcrt_cuda *c, qcrt_cuda_graph g) {
    if (g) c->cuGraphExecDestroy(g);
}

int qcrt_cuda_event_new(qcrt_cuda *c, qcrt_cuda_event *e, qc_err *err) {
    TRY(c, c->cuEventCreate(e, 0), err, "cuEventCreate");
    return 0;
}

void qcrt_cuda_event_free(qcrt_cuda *c, qcrt_cuda_event e) {
    if (e) c->cuEventDestroy(e);
}

int qcrt_cuda_event_record(qcrt_cuda *c, qcrt_cuda_event e, qc_err *err) {
    TRY(c, c->cuEventRecord(e, NULL), err, "cuEventRecord");
    return 0;
}

int qcrt_cuda_event_ms(qcrt_cuda *c, qcrt_cuda_event a, qcrt_cuda_event b, float *ms, qc_err *err) {
    TRY(c, c->cuEventSynchronize(b), err, "cuEventSynchronize");
    TRY(c, c->cuEventElapsedTime(ms, a, b), err, "cuEventElapsedTime");
    return 0;
}
