#include "model.h"

#include "artifact_model.h"
#include "dequant.h"
#include "loaders.h"
#include "quant.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Does the file start with the artifact magic? (GGUF files start "GGUF".) */
static int is_artifact(const char *path) {
    uint8_t magic[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int yes = fread(magic, 1, sizeof magic, f) == sizeof magic &&
              qcrt_artifact_has_magic(magic, sizeof magic);
    fclose(f);
    return yes;
}

qc_model *qc_model_load(const char *path, qc_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        qc_err_set(err, "%s: no such file or directory", path);
        return NULL;
    }
    qc_model *m = qc_calloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->path = strdup(path);
    m->cfg.bos_id = m->cfg.eos_id = -1;
    int rc;
    if (S_ISDIR(st.st_mode)) {
        m->format = "safetensors";
        rc = qc_hf_load(m, path, err);
    } else if (is_artifact(path)) {
        m->format = "artifact";
        rc = qc_artifact_load_model(m, path, err);
    } else {
        m->format = "gguf";
        rc = qc_gguf_load(m, path, err);
    }
    if (rc == 0) rc = qc_model_validate(m, path, err);
    if (rc != 0) {
        qc_model_free(m);
        return NULL;
    }
    return m;
}

void qc_model_free(qc_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].name);
        free(m->tensors[i].owned);
    }
    for (int i = 0; i < m->n_online; i++)
        free(m->online[i].name);
    free(m->online);
    for (int i = 0; i < m->n_kernels; i++) {
        free(m->kernels[i].name);
        free(m->kernels[i].target);
    }
    free(m->kernels);
    for (int i = 0; i < m->n_cuda; i++) {
        for (int k = 0; k < m->cuda[i].n_mods; k++)
            free(m->cuda[i].mods[k].name);
        free(m->cuda[i].mods);
    }
    free(m->cuda);
    free(m->tensors);
    for (int i = 0; i < m->n_files; i++) qc_mapfile_free(m->files[i]);
    free(m->files);
    qc_tokenizer_free(m->tok);
    for (int i = 0; i < m->n_quant; i++) {
        free(m->quant[i].name);
        qc_quant_state_free(m->quant[i].q);
    }
    free(m->quant);
    free(m->path);
    free(m);
}

const qc_tensor *qc_model_find(const qc_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

const qc_qlinear *qc_model_qlinear(const qc_model *m, const char *name) {
    for (int i = 0; i < m->n_quant; i++)
        if (strcmp(m->quant[i].name, name) == 0) return &m->quant[i];
    return NULL;
}

const qc_quant_state *qc_model_quant(const qc_model *m, const char *name) {
    const qc_qlinear *l = qc_model_qlinear(m, name);
    return l ? l->q : NULL;
}

int qc_model_add_quant(qc_model *m, char *name, qc_quant_state *q, qc_err *err) {
    qc_qlinear *nq = realloc(m->quant, (size_t)(m->n_quant + 1) * sizeof *nq);
    if (!nq) {
        free(name);
        qc_quant_state_free(q);
        return qc_err_set(err, "out of memory");
    }
    m->quant = nq;
    m->quant[m->n_quant] = (qc_qlinear){.name = name, .q = q};
    m->n_quant++;
    return 0;
}

/* The tensor `name` for a replacement of n_dims (1: cols 0) and shape: the
 * existing one (which must have that shape) or a new one. Frees data on
 * error. */
static qc_tensor *replaced(qc_model *m, const char *name, int64_t rows, int64_t cols, void *data,
                           qc_err *err) {
    qc_tensor *t = (qc_tensor *)qc_model_find(m, name);
    if (t &&
        (t->n_dims != (cols ? 2 : 1) || t->shape[0] != rows || (cols && t->shape[1] != cols))) {
        free(data);
        qc_err_set(err, "tensor '%s': replacement %lld × %lld does not match its shape", name,
                   (long long)rows, (long long)cols);
        return NULL;
    }
    if (!t) {
        qc_tensor nt = {
            .name = strdup(name), .n_dims = cols ? 2 : 1, .shape = {rows, cols ? cols : 1}};
        if (!nt.name) {
            free(data);
            qc_err_set(err, "out of memory");
            return NULL;
        }
        if (qc_model_add_tensor(m, &nt, err)) {
            free(data);
            return NULL;
        }
        t = &m->tensors[m->n_tensors - 1];
    }
    free(t->owned);
    t->owned = data;
    t->data = data;
    t->unpermute_heads = 0;
    return t;
}

int qc_model_set_f32(qc_model *m, const char *name, int64_t rows, int64_t cols, float *data,
                     qc_err *err) {
    size_t n;
    if (rows <= 0 || cols < 0 || qc_mul_size((size_t)rows, (size_t)(cols ? cols : 1), &n) ||
        qc_mul_size(n, sizeof(float), &n)) {
        free(data);
        return qc_err_set(err, "tensor '%s': bad shape %lld × %lld", name, (long long)rows,
                          (long long)cols);
    }
    qc_tensor *t = replaced(m, name, rows, cols, data, err);
    if (!t) return -1;
    t->nbytes = n;
    t->dtype = QC_DT_F32;
    return 0;
}

int qc_model_set_blocks(qc_model *m, const char *name, qc_dtype dt, int64_t rows, int64_t cols,
                        uint8_t *data, qc_err *err) {
    size_t rb, n;
    if (rows <= 0 || cols <= 0 || qc_dtype_nbytes(dt, cols, &rb) ||
        qc_mul_size(rb, (size_t)rows, &n)) {
        free(data);
        return qc_err_set(err, "tensor '%s': %lld × %lld is not a whole number of %s blocks",
                          name, (long long)rows, (long long)cols, qc_dtype_name(dt));
    }
    qc_tensor *t = replaced(m, name, rows, cols, data, err);
    if (!t) return -1;
    t->nbytes = n;
    t->dtype = dt;
    return 0;
}

int qc_model_online_hadamard(const qc_model *m, const char *name) {
    for (int i = 0; i < m->n_online; i++)
        if (strcmp(m->online[i].name, name) == 0) return m->online[i].hadamard_n;
    return 0;
}

int qc_model_set_online_hadamard(qc_model *m, const char *name, int n, qc_err *err) {
    for (int i = 0; i < m->n_online; i++)
        if (strcmp(m->online[i].name, name) == 0) {
            m->online[i].hadamard_n = n;
            return 0;
        }
    qc_online *no = realloc(m->online, (size_t)(m->n_online + 1) * sizeof *no);
    char *nm = strdup(name);
    if (!no || !nm) {
        free(nm);
        if (no) m->online = no;
        return qc_err_set(err, "out of memory");
    }
    m->online = no;
    m->online[m->n_online].name = nm;
    m->online[m->n_online++].hadamard_n = n;
    return 0;
}

int64_t qc_tensor_numel(const qc_tensor *t) {
    return t->n_dims == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

int qc_model_add_tensor(qc_model *m, qc_tensor *t, qc_err *err) {
    qc_tensor *nt = realloc(m->tensors, (size_t)(m->n_tensors + 1) * sizeof *nt);
    if (!nt) {
        free(t->name);
        return qc_err_set(err, "out of memory");
    }
    m->tensors = nt;
    m->tensors[m->n_tensors++] = *t;
    return 0;
}

void qc_model_release_tensor(const qc_model *m, const qc_tensor *t) {
    if (!t || t->owned || !t->data) return;
    for (int i = 0; i < m->n_files; i++) {
        const qc_mapfile *f = m->files[i];
        if (f->data && t->data >= f->data && t->data + t->nbytes <= f->data + f->size) {
            qc_mapfile_release(f, t->data, t->nbytes);
            return;
        }
    }
}

int qc_model_add_file(qc_model *m, qc_mapfile *f, qc_err *err) {
    qc_mapfile **nf = realloc(m->files, (size_t)(m->n_files + 1) * sizeof *nf);
    if (!nf) {
        qc_mapfile_free(f);
        return qc_err_set(err, "out of memory");
    }
    m->files = nf;
    m->files[m->n_files++] = f;
    return 0;
}

/* Rows of a GGUF llama q/k weight are ordered for interleaved RoPE: within
 * each head, row 2i holds HF row i and row 2i+1 holds HF row i + hd/2. */
static void unpermute_rows(float *w, int64_t rows, int64_t cols, int heads, float *tmp) {
    int64_t hd = rows / heads, half = hd / 2;
    for (int h = 0; h < heads; h++) {
        float *base = w + (int64_t)h * hd * cols;
        memcpy(tmp, base, (size_t)(hd * cols) * sizeof(float));
        for (int64_t i = 0; i < half; i++) {
            memcpy(base + i * cols, tmp + (2 * i) * cols, (size_t)cols * sizeof(float));
            memcpy(base + (i + half) * cols, tmp + (2 * i + 1) * cols, (size_t)cols * sizeof(float));
        }
    }
}

int qc_tensor_to_f32(const qc_tensor *t, float *out, qc_err *err) {
    int64_t n = qc_tensor_numel(t);
    size_t need;
    if (qc_dtype_nbytes(t->dtype, n, &need) != 0 || need != t->nbytes)
        return qc_err_set(err, "tensor '%s': %s data of %zu bytes does not fit %lld elements",
                          t->name, qc_dtype_name(t->dtype), t->nbytes, (long long)n);
    qc_dequantize(t->dtype, t->data, out, n);
    if (t->unpermute_heads > 0) {
        int64_t rows = t->shape[0], cols = t->n_dims == 2 ? t->shape[1] : 1;
        if (rows % t->unpermute_heads || (rows / t->unpermute_heads) % 2)
            return qc_err_set(err, "tensor '%s': %lld rows do not split into %d heads", t->name,
                              (long long)rows, t->unpermute_heads);
        float *tmp = qc_malloc((size_t)(rows / t->unpermute_heads * cols) * sizeof(float), err);
        if (!tmp) return -1;
        unpermute_rows(out, rows, cols, t->unpermute_heads, tmp);
        free(tmp);
    }
    return 0;
}

static int check_shape(const qc_model *m, const char *where, const char *name, int64_t rows,
                       int64_t cols, qc_err *err) {
    const qc_tensor *t = qc_model_find(m, name);
    const qc_quant_state *q = qc_model_quant(m, name);
    if (!t && q) {
        if (q->rows != rows || q->cols != cols)
            return qc_err_set(err, "%s: quantized '%s' is %lld × %lld, expected %lld × %lld",
                              where, name, (long long)q->rows, (long long)q->cols, (long long)rows,
                              (long long)cols);
        return 0;
    }
    if (!t) return qc_err_set(err, "%s: missing tensor '%s'", where, name);
    int64_t want_dims = cols ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != rows || (cols && t->shape[1] != cols))
        return qc_err_set(err, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
                          where, name, (long long)t->shape[0],
                          (long long)(t->n_dims == 2 ? t->shape[1] : 0), (long long)rows,
                          (long long)cols);
    return 0;
}

int qc_model_validate(const qc_model *m, const char *where, qc_err *err) {
    const qc_config *c = &m->cfg;
    if (c->n_layers <= 0 || c->n_layers > 1024 || c->dim <= 0 || c->dim > (1 << 20) ||
        c->n_heads <= 0 || c->n_heads > 4096 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->head_dim > 4096 || c->head_dim % 2 || c->ffn_dim <= 0 || c->ffn_dim > (1 << 22) ||
        c->vocab <= 0 || c->vocab > (1 << 24))
        return qc_err_set(err,
                          "%s: implausible config (layers %d, hidden %d, heads %d/%d, head_dim %d, "
                          "ffn %d, vocab %d)",
                          where, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim,
                          c->ffn_dim, c->vocab);
    if (c->n_heads % c->n_kv_heads)
        return qc_err_set(err, "%s: %d attention heads are not a multiple of %d kv heads", where,
                          c->n_heads, c->n_kv_heads);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0))
        return qc_err_set(err, "%s: norm eps and rope theta must be positive", where);
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    if (check_shape(m, where, "model.embed_tokens.weight", c->vocab, c->dim, err) ||
        check_shape(m, where, "model.norm.weight", c->dim, 0, err))
        return -1;
    if (!c->tied_embeddings && check_shape(m, where, "lm_head.weight", c->vocab, c->dim, err))
        return -1;
    char name[160];
    for (int l = 0; l < c->n_layers; l++) {
        struct {
            const char *suffix;
            int64_t rows, cols;
            int needed;
        } want[] = {
            {"input_layernorm.weight", c->dim, 0, 1},
            {"post_attention_layernorm.weight", c->dim, 0, 1},
            {"self_attn.q_proj.weight", qd, c->dim, 1},
            {"self_attn.k_proj.weight", kvd, c->dim, 1},
            {"self_attn.v_proj.weight", kvd, c->dim, 1},
            {"self_attn.o_proj.weight", c->dim, qd, 1},
            {"mlp.gate_proj.weight", c->ffn_dim, c->dim, 1},
            {"mlp.up_proj.weight", c->ffn_dim, c->dim, 1},
            {"mlp.down_proj.weight", c->dim, c->ffn_dim, 1},
            {"self_attn.q_proj.bias", qd, 0, c->attn_bias},
            {"self_attn.k_proj.bias", kvd, 0, c->attn_bias},
            {"self_attn.v_proj.bias", kvd, 0, c->attn_bias},
            {"self_attn.q_norm.weight", c->head_dim, 0, c->qk_norm},
            {"self_attn.k_norm.weight", c->head_dim, 0, c->qk_norm},
        };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            if (!want[i].needed) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, want[i].suffix);
            if (check_shape(m, where, name, want[i].rows, want[i].cols, err)) return -1;
        }
    }
    return 0;
}
