/* NVRTC compiles of a model's CUDA modules for one architecture
 * (cuda_codegen.h). */
#include "cuda_codegen.h"

#include "cuda_forward.h"
#include "cuda_pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qc_cuda_object_free(qc_cuda_object *o) {
    for (int i = 0; i < o->n_mods; i++)
        qc_cuda_binary_free(&o->mods[i].bin);
    free(o->mods);
    memset(o, 0, sizeof *o);
}

int qc_cuda_codegen(const qc_kernel_spec *specs, int n, const char *arch, qc_cuda_object *out,
                    qc_err *err) {
    memset(out, 0, sizeof *out);
    if (qc_nvrtc_arch_check(arch, err)) return -1;
    snprintf(out->arch, sizeof out->arch, "%s", arch);
    qc_kernel_spec *uniq = qc_calloc((size_t)n + 1, sizeof *uniq, err);
    int *idx = qc_calloc((size_t)n + 1, sizeof *idx, err);
    int rc = -1;
    if (!uniq || !idx) goto out;
    int nu = qc_kernel_specs_dedup(specs, n, uniq, idx);
    if (!(out->mods = qc_calloc((size_t)nu + 1, sizeof *out->mods, err))) goto out;
    qc_cuda_module *f = &out->mods[0];
    snprintf(f->name, sizeof f->name, "%s", QC_CUDA_FORWARD_MODULE);
    f->is_forward = 1;
    if (qc_nvrtc_compile(qc_cuda_forward_src(), "quantc_forward.cu", arch, &f->bin, err)) goto out;
    out->n_mods = 1;
    out->seconds += f->bin.seconds;
    for (int i = 0; i < nu; i++) {
        qc_cuda_module *m = &out->mods[out->n_mods];
        qc_cuda_kernel k;
        m->spec = uniq[i];
        if (qc_kernel_spec_id(&m->spec, m->name, sizeof m->name) < 0) {
            qc_err_set(err, "CUDA codegen: kernel id too long");
            goto out;
        }
        qc_cuda_gemv_default_opts(&m->spec, &m->opts);
        if (qc_cuda_src_gemv_opts(&m->spec, &m->opts, &k, err)) {
            qc_err_prefix(err, "CUDA kernel %s", m->name);
            goto out;
        }
        snprintf(m->gemv, sizeof m->gemv, "%s", k.gemv);
        snprintf(m->lrt, sizeof m->lrt, "%s", k.lrt);
        snprintf(m->gemm, sizeof m->gemm, "%s", k.gemm);
        snprintf(m->had, sizeof m->had, "%s", k.had);
        char file[160];
        snprintf(file, sizeof file, "%s.cu", k.gemv);
        int bad = qc_nvrtc_compile(k.src, file, arch, &m->bin, err);
        qc_cuda_kernel_free(&k);
        if (bad) goto out;
        out->n_mods++;
        out->seconds += m->bin.seconds;
    }
    rc = 0;
out:
    free(uniq);
    free(idx);
    return rc;
}
