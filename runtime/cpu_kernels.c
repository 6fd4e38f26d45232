/* Loading generated CPU kernels: host checks, memfd + dlopen, lookup (see
 * cpu_kernels.h). */
#include "cpu_kernels.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#define HOST_ARCH "x86_64"
#define HOST_EM EM_X86_64
#elif defined(__aarch64__)
#define HOST_ARCH "aarch64"
#define HOST_EM EM_AARCH64
#else
#define HOST_ARCH "unknown"
#define HOST_EM EM_NONE
#endif

struct qcrt_cpu_kernels {
    void *handle;
};

#if defined(__x86_64__)
/* Whether this CPU and OS support an ISA extension (cpuid; AVX and AVX-512
 * also need the OS to save their registers: XGETBV). */
static int host_has(const char *f) {
    unsigned a, b, c1 = 0, d, b7 = 0, c7 = 0, c81 = 0;
    __get_cpuid(1, &a, &b, &c1, &d);
    __get_cpuid_count(7, 0, &a, &b7, &c7, &d);
    c81 = 0;
    __get_cpuid(0x80000001, &a, &b, &c81, &d);
    unsigned long long xcr0 = 0;
    if (c1 >> 27 & 1) { /* OSXSAVE */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (unsigned long long)hi << 32 | lo;
    }
    int ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6;
    static const struct {
        const char *name;
        /* reg: 0 = cpuid(1).ecx, 1 = cpuid(7).ebx, 2 = 0x80000001.ecx,
         * 3 = cpuid(7).ecx */
        int reg, bit, needs;
    } t[] = {
        {"popcnt", 0, 23, 0},     {"sse4.2", 0, 20, 0},   {"avx", 0, 28, 1},
        {"fma", 0, 12, 1},        {"f16c", 0, 29, 1},     {"movbe", 0, 22, 0},
        {"avx2", 1, 5, 1},        {"bmi", 1, 3, 0},       {"bmi2", 1, 8, 0},
        {"lzcnt", 2, 5, 0},       {"avx512f", 1, 16, 2},  {"avx512dq", 1, 17, 2},
        {"avx512cd", 1, 28, 2},   {"avx512bw", 1, 30, 2}, {"avx512vl", 1, 31, 2},
        {"avx512vbmi", 3, 1, 2},  {"avx512vnni", 3, 11, 2},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        if (strcmp(f, t[i].name)) continue;
        unsigned regs[4] = {c1, b7, c81, c7}, r = regs[t[i].reg];
        int os = t[i].needs == 0 || (t[i].needs == 1 ? ymm : zmm);
        return (r >> t[i].bit & 1) && os ? 1 : 0;
    }
    return -1;
}
#else
static int host_has(const char *f) {
#if defined(__aarch64__)
    if (!strcmp(f, "neon")) return 1; /* baseline on AArch64 */
#endif
    (void)f;
    return -1;
}
#endif

int qcrt_cpu_target_check(const char *target, qc_err *err) {
    const char *tr = strstr(target, "triple="), *fe = strstr(target, ";features=");
    if (strncmp(target, "triple=", 7) || !fe)
        return qc_err_set(err, "CPU kernels: malformed target descriptor '%.200s'", target);
    size_t al = strcspn(tr + 7, "-;");
    if (al != strlen(HOST_ARCH) || strncmp(tr + 7, HOST_ARCH, al))
        return qc_err_set(err, "CPU kernels were built for %.*s, this host is %s", (int)al, tr + 7,
                          HOST_ARCH);
    for (const char *p = fe + 10; *p;) {
        size_t n = strcspn(p, ",;");
        char f[32];
        if (n == 0 || n >= sizeof f)
            return qc_err_set(err, "CPU kernels: malformed feature list in '%.200s'", target);
        memcpy(f, p, n);
        f[n] = 0;
        int h = host_has(f);
        if (h < 0)
            return qc_err_set(err,
                              "CPU kernels need CPU feature '%s', which this runtime cannot "
                              "check",
                              f);
        if (!h)
            return qc_err_set(err,
                              "CPU kernels need CPU feature '%s', which this host lacks "
                              "(target %.200s)",
                              f, target);
        p += n;
        if (*p == ';') break;
        if (*p == ',') p++;
    }
    return 0;
}

static int elf_check(const uint8_t *b, size_t size, qc_err *err) {
    if (size < sizeof(Elf64_Ehdr) || memcmp(b, ELFMAG, SELFMAG))
        return qc_err_set(err, "CPU kernels: not an ELF shared object (%zu bytes)", size);
    Elf64_Ehdr h;
    memcpy(&h, b, sizeof h);
    if (b[EI_CLASS] != ELFCLASS64 || b[EI_DATA] != ELFDATA2LSB || h.e_type != ET_DYN)
        return qc_err_set(err, "CPU kernels: not a 64-bit little-endian shared object");
    if (h.e_machine != HOST_EM)
        return qc_err_set(err, "CPU kernels: ELF machine %u, this host (%s) needs %u", h.e_machine,
                          HOST_ARCH, HOST_EM);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

/* dlopen of the bytes through an anonymous memfd, else an unlinked file. */
static void *open_bytes(const uint8_t *so, size_t size, qc_err *err) {
    char path[4096];
    int fd = memfd_create("quantc-kernels", MFD_CLOEXEC), tmpfile = 0;
    if (fd < 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/qc-kernels-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        fd = mkstemp(path);
        if (fd < 0) {
            qc_err_set(err, "CPU kernels: cannot create a temp file: %s", strerror(errno));
            return NULL;
        }
        tmpfile = 1;
    } else {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    void *h = NULL;
    if (write_all(fd, so, size)) {
        qc_err_set(err, "CPU kernels: cannot write the shared object: %s", strerror(errno));
    } else {
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) qc_err_set(err, "CPU kernels: dlopen: %s", dlerror());
    }
    if (tmpfile) unlink(path);
    close(fd);
    return h;
}

qcrt_cpu_kernels *qcrt_cpu_kernels_load(const void *so, size_t size, const char *target,
                                        qc_err *err) {
    if (qcrt_cpu_target_check(target, err) || elf_check(so, size, err)) return NULL;
    void *h = open_bytes(so, size, err);
    if (!h) return NULL;
    const char *t = dlsym(h, "qck_target");
    if (!t || strncmp(t, target, 512)) {
        qc_err_set(err,
                   "CPU kernels: the object's target '%.200s' differs from the stored "
                   "descriptor '%.200s'",
                   t ? t : "(none)", target);
        dlclose(h);
        return NULL;
    }
    qcrt_cpu_kernels *k = qc_calloc(1, sizeof *k, err);
    if (!k) {
        dlclose(h);
        return NULL;
    }
    k->handle = h;
    return k;
}

int qcrt_cpu_kernels_find(const qcrt_cpu_kernels *k, const qc_kernel_spec *s, qc_gemv_fn *gemv,
                          qc_gemm_fn *gemm, qc_err *err) {
    char a[160], b[160];
    if (qc_kernel_spec_symbol(s, "gemv", a, sizeof a) < 0 ||
        qc_kernel_spec_symbol(s, "gemm", b, sizeof b) < 0)
        return qc_err_set(err, "CPU kernels: bad kernel spec");
    void *f = dlsym(k->handle, a), *g = dlsym(k->handle, b);
    if (!f || !g) return qc_err_set(err, "CPU kernels: no kernel %s in the shared object", a);
    /* POSIX: dlsym results convert to function pointers. */
    memcpy(gemv, &f, sizeof f);
    memcpy(gemm, &g, sizeof g);
    return 0;
}

int qcrt_cpu_kernels_find_split(const qcrt_cpu_kernels *k, const qc_kernel_spec *s,
                                qc_gemv_prep_fn *prep, qc_gemv_rows_fn *rows) {
    char a[160], b[160];
    if (qc_kernel_spec_symbol(s, "gemv_prep", a, sizeof a) < 0 ||
        qc_kernel_spec_symbol(s, "gemv_rows", b, sizeof b) < 0)
        return 1;
    void *f = dlsym(k->handle, a), *g = dlsym(k->handle, b);
    if (!f || !g) return 1;
    memcpy(prep, &f, sizeof f);
    memcpy(rows, &g, sizeof g);
    return 0;
}

void qcrt_cpu_kernels_free(qcrt_cpu_kernels *k) {
    if (!k) return;
    dlclose(k->handle);
    free(k);
}
