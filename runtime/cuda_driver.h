/* The CUDA driver API, loaded at run time with dlopen("libcuda.so.1"): no
 * link-time dependency on libcuda, so quantc builds and runs where there is
 * no NVIDIA driver. One context (the device's primary context) per
 * qcrt_cuda; all work goes to the legacy default stream in order.
 *
 * Without a driver or a device, qcrt_cuda_open returns QCRT_CUDA_NO_DEVICE
 * with the reason in err, so callers can skip rather than fail (tests print
 * "SKIP: no CUDA device (reason)" and exit 77). */
#ifndef QCRT_CUDA_DRIVER_H
#define QCRT_CUDA_DRIVER_H

#include "../compiler/err.h"

#include <stddef.h>
#include <stdint.h>

#define QCRT_CUDA_NO_DEVICE (-2)

typedef struct qcrt_cuda qcrt_cuda;
typedef uint64_t qcrt_dptr; /* device address (CUdeviceptr) */
typedef struct qcrt_cuda_module qcrt_cuda_module;
typedef void *qcrt_cuda_fn;    /* CUfunction */
typedef void *qcrt_cuda_event; /* CUevent */

/* Opens device `ordinal`: 0, QCRT_CUDA_NO_DEVICE (no libcuda, no device,
 * driver refuses to initialise), or -1 on other errors; err says why. */
int qcrt_cuda_open(int ordinal, qcrt_cuda **out, qc_err *err);
void qcrt_cuda_close(qcrt_cuda *c);

/* Device facts: name, compute capability, multiprocessors, L2 bytes,
 * driver version (e.g. 13000), and the NVRTC architecture whose CUBIN runs
 * here ("sm_90a" on compute capability 9.0, else "sm_<major><minor>"). */
typedef struct qcrt_cuda_info {
    char name[256];
    int major, minor, sm_count, l2_bytes, driver_version;
    size_t total_mem;
    char arch[16];
} qcrt_cuda_info;
const qcrt_cuda_info *qcrt_cuda_device(const qcrt_cuda *c);

int qcrt_cuda_alloc(qcrt_cuda *c, size_t bytes, qcrt_dptr *p, qc_err *err);
void qcrt_cuda_free(qcrt_cuda *c, qcrt_dptr p);
int qcrt_cuda_upload(qcrt_cuda *c, qcrt_dptr dst, const void *src, size_t bytes, qc_err *err);
int qcrt_cuda_download(qcrt_cuda *c, void *dst, qcrt_dptr src, size_t bytes, qc_err *err);
/* Device-to-device copy, queued on the stream (asynchronous). */
int qcrt_cuda_copy(qcrt_cuda *c, qcrt_dptr dst, qcrt_dptr src, size_t bytes, qc_err *err);
int qcrt_cuda_memset(qcrt_cuda *c, qcrt_dptr dst, uint8_t byte, size_t bytes, qc_err *err);
int qcrt_cuda_sync(qcrt_cuda *c, qc_err *err);

/* Loads a CUBIN or NUL-terminated PTX image (the driver JIT-compiles PTX). */
int qcrt_cuda_module_load(qcrt_cuda *c, const void *image, qcrt_cuda_module **m, qc_err *err);
void qcrt_cuda_module_free(qcrt_cuda *c, qcrt_cuda_module *m);
int qcrt_cuda_function(qcrt_cuda *c, qcrt_cuda_module *m, const char *name, qcrt_cuda_fn *f,
                       qc_err *err);
/* Registers per thread and local (spill) bytes per thread of f. */
int qcrt_cuda_fn_resources(qcrt_cuda *c, qcrt_cuda_fn f, int *regs, int *local_bytes, qc_err *err);
/* Lets f launch with up to `bytes` of dynamic shared memory (the default
 * limit is 48 KiB; nothing to do below it). Fails, naming the size and the
 * GPU, when the device allows less. */
int qcrt_cuda_fn_set_shared(qcrt_cuda *c, qcrt_cuda_fn f, size_t bytes, qc_err *err);
/* Queues f on grid × block threads with args (kernel parameter pointers). */
int qcrt_cuda_launch(qcrt_cuda *c, qcrt_cuda_fn f, unsigned grid, unsigned block,
                     unsigned shared_bytes, void **args, qc_err *err);
/* The same on a grid_x × grid_y grid (grid_y ≤ 65535). */
int qcrt_cuda_launch2(qcrt_cuda *c, qcrt_cuda_fn f, unsigned grid_x, unsigned grid_y,
                      unsigned block, unsigned shared_bytes, void **args, qc_err *err);

/* CUDA graphs (a fixed sequence of launches replayed with one call): between
 * capture_begin and capture_end, launches are recorded instead of run
 * (synchronous copies must not be made in between); capture_end
 * instantiates them (discard: 1 drops them, after a failed launch). A
 * launched graph runs after the work queued before it, and synchronous
 * copies made after graph_launch wait for it. */
typedef void *qcrt_cuda_graph; /* CUgraphExec */
int qcrt_cuda_capture_begin(qcrt_cuda *c, qc_err *err);
int qcrt_cuda_capture_end(qcrt_cuda *c, int discard, qcrt_cuda_graph *g, qc_err *err);
int qcrt_cuda_graph_launch(qcrt_cuda *c, qcrt_cuda_graph g, qc_err *err);
void qcrt_cuda_graph_free(qcrt_cuda *c, qcrt_cuda_graph g);

int qcrt_cuda_event_new(qcrt_cuda *c, qcrt_cuda_event *e, qc_err *err);
void qcrt_cuda_event_free(qcrt_cuda *c, qcrt_cuda_event e);
int qcrt_cuda_event_record(qcrt_cuda *c, qcrt_cuda_event e, qc_err *err);
/* Milliseconds between two recorded events (waits for the second). */
int qcrt_cuda_event_ms(qcrt_cuda *c, qcrt_cuda_event a, qcrt_cuda_event b, float *ms, qc_err *err);

#endif
