/* CPU code generation driver: targets, O3 pipeline, object emission, linking
 * (see cpu_llvm.h). */
#include "cpu_llvm.h"

#include <stdlib.h>
#include <string.h>

void qc_cpu_object_free(qc_cpu_object *o) {
    if (!o) return;
    free(o->so);
    if (o->symbols)
        for (int i = 0; i < 2 * o->n_specs; i++)
            free(o->symbols[i]);
    free(o->symbols);
    memset(o, 0, sizeof *o);
}

#if !QC_HAVE_LLVM

int qc_cpu_codegen_available(void) {
    return 0;
}

int qc_cpu_codegen(const qc_kernel_spec *specs, int n, const char *target, qc_cpu_object *out,
                   qc_err *err) {
    (void)specs, (void)n, (void)target;
    memset(out, 0, sizeof *out);
    return qc_err_set(err, "CPU code generation needs quantc built with LLVM 14 (llvm-14-dev)");
}

int qc_cpu_target_describe(const char *target, char *buf, size_t n, qc_err *err) {
    (void)target, (void)buf, (void)n;
    return qc_err_set(err, "CPU code generation needs quantc built with LLVM 14 (llvm-14-dev)");
}

#else

#include "cpu_ir.h"

#include <errno.h>
#include <fcntl.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int qc_cpu_codegen_available(void) {
    return 1;
}

static void init_targets(void) {
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86Target();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86AsmPrinter();
    LLVMInitializeAArch64TargetInfo();
    LLVMInitializeAArch64Target();
    LLVMInitializeAArch64TargetMC();
    LLVMInitializeAArch64AsmPrinter();
}

/* ISA extensions the runtime can check (runtime/cpu_kernels.c); a host
 * target lists those of them the host has. */
static const char *const checkable[] = {
    "popcnt", "sse4.2", "avx",     "avx2",     "bmi",      "bmi2",     "f16c",     "fma",
    "lzcnt",      "movbe",      "avx512f", "avx512bw", "avx512cd", "avx512dq",
    "avx512vl",   "avx512vbmi", "avx512vnni", "neon",
};
#define V3_FEATURES "avx,avx2,bmi,bmi2,f16c,fma,lzcnt,movbe,popcnt,sse4.2"

typedef struct target {
    char triple[96], cpu[64];
    char *llvm_features; /* owned (LLVM string for host) or static */
    int owned;
    char desc[512];
} target;

/* Whether LLVM's feature list ("+avx2,-avx512f,...") enables name. */
static int has_feature(const char *list, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == nl + 1 && p[0] == '+' && !strncmp(p + 1, name, nl)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static int target_resolve(const char *name, target *t, qc_err *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_targets);
    memset(t, 0, sizeof *t);
    const char *req = "";
    if (!name || !strcmp(name, "host")) {
        char *tr = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName();
        snprintf(t->triple, sizeof t->triple, "%s", tr);
        snprintf(t->cpu, sizeof t->cpu, "%s", cpu);
        LLVMDisposeMessage(tr);
        LLVMDisposeMessage(cpu);
        t->llvm_features = LLVMGetHostCPUFeatures();
        t->owned = 1;
    } else if (!strcmp(name, "x86-64-v3") || !strcmp(name, "x86-64-v4")) {
        snprintf(t->triple, sizeof t->triple, "x86_64-unknown-linux-gnu");
        snprintf(t->cpu, sizeof t->cpu, "%s", name);
        t->llvm_features = "";
        req = name[8] == '3' ? V3_FEATURES
                             : V3_FEATURES ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl";
    } else if (!strcmp(name, "aarch64")) {
        snprintf(t->triple, sizeof t->triple, "aarch64-unknown-linux-gnu");
        snprintf(t->cpu, sizeof t->cpu, "generic");
        t->llvm_features = "+neon";
        req = "neon";
    } else {
        return qc_err_set(err, "CPU target '%s' unknown (host, x86-64-v3, x86-64-v4, aarch64)",
                          name);
    }
    int len =
        snprintf(t->desc, sizeof t->desc, "triple=%s;cpu=%s;features=%s", t->triple, t->cpu, req);
    if (t->owned) /* host: the checkable features LLVM reports as present */
        for (size_t i = 0, first = 1; i < sizeof checkable / sizeof *checkable; i++)
            if (has_feature(t->llvm_features, checkable[i]) && len < (int)sizeof t->desc) {
                len += snprintf(t->desc + len, sizeof t->desc - (size_t)len, "%s%s",
                                first ? "" : ",", checkable[i]);
                first = 0;
            }
    return len < (int)sizeof t->desc ? 0 : qc_err_set(err, "CPU target descriptor too long");
}

static void target_free(target *t) {
    if (t->owned) LLVMDisposeMessage(t->llvm_features);
}

int qc_cpu_target_describe(const char *name, char *buf, size_t n, qc_err *err) {
    target t;
    if (target_resolve(name, &t, err)) return -1;
    int ok = snprintf(buf, n, "%s", t.desc) < (int)n;
    target_free(&t);
    return ok ? 0 : qc_err_set(err, "CPU target descriptor too long");
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Finds the linker: $QC_LD, else ld.lld-14 or ld.lld on PATH. */
static int find_linker(char *path, size_t n) {
    const char *env = getenv("QC_LD");
    if (env && *env) return snprintf(path, n, "%s", env) < (int)n && access(path, X_OK) == 0;
    const char *names[] = {"ld.lld-14", "ld.lld"};
    const char *p = getenv("PATH");
    if (!p) p = "/usr/bin:/bin";
    for (size_t k = 0; k < 2; k++)
        for (const char *d = p; *d;) {
            const char *e = strchr(d, ':');
            size_t dl = e ? (size_t)(e - d) : strlen(d);
            if (dl && snprintf(path, n, "%.*s/%s", (int)dl, d, names[k]) < (int)n &&
                access(path, X_OK) == 0)
                return 1;
            d += dl + (e ? 1 : 0);
        }
    return 0;
}

static int read_file(const char *path, uint8_t **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int rc = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (*data = malloc((size_t)n)) != NULL) {
            if (fread(*data, 1, (size_t)n, f) == (size_t)n) {
                *size = (size_t)n;
                rc = 0;
            } else {
                free(*data);
                *data = NULL;
            }
        }
    }
    fclose(f);
    return rc;
}

/* Links obj (bytes) into a shared object with ld.lld in a private temp dir. */
static int link_shared(const char *obj, size_t obj_size, qc_cpu_object *out, qc_err *err) {
    char ld[4096];
    if (!find_linker(ld, sizeof ld))
        return qc_err_set(err, "CPU codegen: linker ld.lld not found (install lld-14, or set QC_LD "
                               "to an ld.lld)");
    const char *tmp = getenv("TMPDIR");
    char dir[4096], o_path[4200], so_path[4200], log_path[4200];
    snprintf(dir, sizeof dir, "%s/qc-cg-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return qc_err_set(err, "CPU codegen: mkdtemp %s: %s", dir, strerror(errno));
    snprintf(o_path, sizeof o_path, "%s/kernels.o", dir);
    snprintf(so_path, sizeof so_path, "%s/kernels.so", dir);
    snprintf(log_path, sizeof log_path, "%s/ld.log", dir);
    int rc = -1;
    FILE *f = fopen(o_path, "wb");
    if (!f || fwrite(obj, 1, obj_size, f) != obj_size || fclose(f)) {
        if (f) fclose(f);
        qc_err_set(err, "CPU codegen: cannot write %s", o_path);
        goto done;
    }
    char *argv[] = {ld,
                    "-shared",
                    "--no-undefined",
                    "--build-id=none",
                    "-z",
                    "noexecstack",
                    "-z",
                    "now",
                    "--strip-debug",
                    "-o",
                    so_path,
                    o_path,
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int se = posix_spawn(&pid, ld, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    if (se) {
        qc_err_set(err, "CPU codegen: cannot run %s: %s", ld, strerror(se));
        goto done;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char msg[600] = "";
        FILE *lf = fopen(log_path, "r");
        if (lf) {
            size_t k = fread(msg, 1, sizeof msg - 1, lf);
            msg[k] = 0;
            fclose(lf);
        }
        qc_err_set(err, "CPU codegen: %s failed: %s", ld, msg);
        goto done;
    }
    if (read_file(so_path, &out->so, &out->so_size)) {
        qc_err_set(err, "CPU codegen: cannot read the linked %s", so_path);
        goto done;
    }
    rc = 0;
done:
    unlink(o_path);
    unlink(so_path);
    unlink(log_path);
    rmdir(dir);
    return rc;
}

static int llvm_fail(qc_err *err, const char *what, char *msg) {
    qc_err_set(err, "CPU codegen: %s: %s", what, msg ? msg : "(no message)");
    if (msg) LLVMDisposeMessage(msg);
    return -1;
}

/* Builds the module: kernels of the distinct specs + the target string. */
static LLVMModuleRef build_module(LLVMContextRef C, const qc_kernel_spec *uniq, int nu,
                                  const target *t, qc_err *err) {
    LLVMModuleRef M = LLVMModuleCreateWithNameInContext("quantc_kernels", C);
    LLVMSetTarget(M, t->triple);
    size_t dl = strlen(t->desc) + 1;
    LLVMValueRef g =
        LLVMAddGlobal(M, LLVMArrayType(LLVMInt8TypeInContext(C), (unsigned)dl), "qck_target");
    LLVMSetInitializer(g, LLVMConstStringInContext(C, t->desc, (unsigned)dl - 1, 0));
    LLVMSetGlobalConstant(g, 1);
    int x86 = !strncmp(t->triple, "x86_64", 6);
    qc_cpu_ir_target it = {!x86 || strstr(t->desc, "f16c") != NULL,
                           x86 && strstr(t->desc, "avx512vnni") && strstr(t->desc, "avx512vbmi") &&
                               strstr(t->desc, "avx512bw")};
    for (int i = 0; i < nu; i++)
        if (qc_cpu_ir_emit(M, &uniq[i], &it, err)) {
            LLVMDisposeModule(M);
            return NULL;
        }
    char *msg = NULL;
    if (LLVMVerifyModule(M, LLVMReturnStatusAction, &msg)) {
        llvm_fail(err, "generated IR does not verify", msg);
        LLVMDisposeModule(M);
        return NULL;
    }
    LLVMDisposeMessage(msg);
    return M;
}

static int emit_object(LLVMModuleRef M, const target *t, qc_cpu_object *out, char **obj,
                       size_t *obj_size, qc_err *err) {
    LLVMTargetRef T;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(t->triple, &T, &msg))
        return llvm_fail(err, "no LLVM target for the triple", msg);
    LLVMTargetMachineRef TM =
        LLVMCreateTargetMachine(T, t->triple, t->cpu, t->llvm_features, LLVMCodeGenLevelAggressive,
                                LLVMRelocPIC, LLVMCodeModelDefault);
    if (!TM) return qc_err_set(err, "CPU codegen: cannot create a target machine for %s", t->desc);
    LLVMTargetDataRef TD = LLVMCreateTargetDataLayout(TM);
    LLVMSetModuleDataLayout(M, TD);
    LLVMDisposeTargetData(TD);
    double t0 = now();
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(M, "default<O3>", TM, po);
    LLVMDisposePassBuilderOptions(po);
    if (e) {
        LLVMDisposeTargetMachine(TM);
        char *em = LLVMGetErrorMessage(e);
        qc_err_set(err, "CPU codegen: optimization pipeline: %s", em);
        LLVMDisposeErrorMessage(em);
        return -1;
    }
    double t1 = now();
    LLVMMemoryBufferRef buf = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(TM, M, LLVMObjectFile, &msg, &buf)) {
        LLVMDisposeTargetMachine(TM);
        return llvm_fail(err, "object emission", msg);
    }
    LLVMDisposeTargetMachine(TM);
    out->opt_seconds = t1 - t0;
    out->emit_seconds = now() - t1;
    *obj_size = LLVMGetBufferSize(buf);
    *obj = malloc(*obj_size ? *obj_size : 1);
    if (*obj) memcpy(*obj, LLVMGetBufferStart(buf), *obj_size);
    LLVMDisposeMemoryBuffer(buf);
    return *obj ? 0 : qc_err_set(err, "CPU codegen: out of memory");
}

static int fill_symbols(const qc_kernel_spec *specs, int n, qc_cpu_object *out, qc_err *err) {
    out->symbols = calloc(2 * (size_t)n + 1, sizeof *out->symbols);
    if (!out->symbols) return qc_err_set(err, "CPU codegen: out of memory");
    for (int i = 0; i < 2 * n; i++) {
        char name[160];
        qc_kernel_spec_symbol(&specs[i / 2], i % 2 ? "gemm" : "gemv", name, sizeof name);
        if (!(out->symbols[i] = strdup(name))) return qc_err_set(err, "CPU codegen: out of memory");
    }
    return 0;
}

int qc_cpu_codegen(const qc_kernel_spec *specs, int n, const char *target_name, qc_cpu_object *out,
                   qc_err *err) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return qc_err_set(err, "CPU codegen: no kernel specs");
    for (int i = 0; i < n; i++)
        if (qc_kernel_spec_check(&specs[i], err)) return qc_err_prefix(err, "spec %d", i);
    qc_kernel_spec *uniq = malloc((size_t)n * sizeof *uniq);
    int *idx = malloc((size_t)n * sizeof *idx);
    if (!uniq || !idx) {
        free(uniq), free(idx);
        return qc_err_set(err, "CPU codegen: out of memory");
    }
    int nu = qc_kernel_specs_dedup(specs, n, uniq, idx);
    free(idx);
    target t;
    if (target_resolve(target_name, &t, err)) {
        free(uniq);
        return -1;
    }
    snprintf(out->target, sizeof out->target, "%s", t.desc);
    out->n_specs = n;
    out->n_kernels = nu;
    int rc = -1;
    char *obj = NULL;
    size_t obj_size = 0;
    double t0 = now();
    LLVMContextRef C = LLVMContextCreate();
    LLVMModuleRef M = build_module(C, uniq, nu, &t, err);
    out->ir_seconds = now() - t0;
    if (M && !emit_object(M, &t, out, &obj, &obj_size, err)) {
        double t1 = now();
        rc = link_shared(obj, obj_size, out, err);
        out->link_seconds = now() - t1;
    }
    if (M) LLVMDisposeModule(M);
    LLVMContextDispose(C);
    free(obj);
    free(uniq);
    target_free(&t);
    if (!rc) rc = fill_symbols(specs, n, out, err);
    if (rc) qc_cpu_object_free(out);
    return rc;
}

#endif
