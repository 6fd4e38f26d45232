#include "qmodel.h"

#include "dequant.h"
#include "gguf.h"
#include "quant.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- writing ---- */

typedef enum { PART_TENSOR, PART_CODES, PART_SCALES, PART_ZEROS, PART_GIDX } part_kind;

typedef struct st_entry {
    char *name;
    const char *dtype;
    int n_dims;
    int64_t shape[2];
    size_t nbytes, offset;
    part_kind kind;
    const qc_tensor *t;
    const qc_quant_state *q;
} st_entry;

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static char *strip_weight(const char *name) {
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".weight")) n -= 7;
    return strndup(name, n);
}

static int add_entry(st_entry **es, int *n, st_entry e, qc_err *err) {
    st_entry *ne = realloc(*es, (size_t)(*n + 1) * sizeof *ne);
    if (!ne || !e.name) {
        free(e.name);
        if (ne) *es = ne;
        return qc_err_set(err, "out of memory");
    }
    *es = ne;
    ne[(*n)++] = e;
    return 0;
}

static int collect_entries(const qc_model *m, st_entry **es, int *n, qc_err *err) {
    for (int i = 0; i < m->n_tensors; i++) {
        const qc_tensor *t = &m->tensors[i];
        if (qc_model_quant(m, t->name)) continue;
        st_entry e = {.name = strdup(t->name),
                      .dtype = "F32",
                      .n_dims = t->n_dims,
                      .shape = {t->shape[0], t->shape[1]},
                      .kind = PART_TENSOR,
                      .t = t};
        e.nbytes = (size_t)qc_tensor_numel(t) * 4;
        if (add_entry(es, n, e, err)) return -1;
    }
    for (int i = 0; i < m->n_quant; i++) {
        const qc_quant_state *q = m->quant[i].q;
        char *base = strip_weight(m->quant[i].name), buf[512];
        if (!base) return qc_err_set(err, "out of memory");
        struct {
            const char *suffix, *dtype;
            part_kind kind;
            int n_dims;
            int64_t r, c;
            size_t item;
        } parts[] = {
            {"qcodes", "U8", PART_CODES, 2, q->rows, q->cols, 1},
            {"qscales", "F32", PART_SCALES, 2, q->rows, q->n_groups, 4},
            {"qzeros", "F32", PART_ZEROS, 2, q->rows, q->n_groups, 4},
            {"g_idx", "I32", PART_GIDX, 1, q->cols, 1, 4},
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            snprintf(buf, sizeof buf, "%s.%s", base, parts[k].suffix);
            st_entry e = {.name = strdup(buf),
                          .dtype = parts[k].dtype,
                          .n_dims = parts[k].n_dims,
                          .shape = {parts[k].r, parts[k].c},
                          .kind = parts[k].kind,
                          .q = q};
            e.nbytes = (size_t)(parts[k].r * parts[k].c) * parts[k].item;
            if (add_entry(es, n, e, err)) {
                free(base);
                return -1;
            }
        }
        free(base);
    }
    qsort(*es, (size_t)*n, sizeof **es, by_name);
    return 0;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path, qc_err *err) {
    if (n && fwrite(p, 1, n, f) != n)
        return qc_err_set(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_entry(FILE *f, const st_entry *e, const char *path, qc_err *err) {
    const qc_quant_state *q = e->q;
    if (e->kind == PART_TENSOR) {
        float *buf = qc_malloc(e->nbytes, err);
        if (!buf) return -1;
        int rc = qc_tensor_to_f32(e->t, buf, err);
        if (rc == 0) rc = write_all(f, buf, e->nbytes, path, err);
        free(buf);
        return rc;
    }
    const void *src = e->kind == PART_CODES    ? (const void *)q->codes
                      : e->kind == PART_SCALES ? (const void *)q->scales
                      : e->kind == PART_ZEROS  ? (const void *)q->zeros
                                               : (const void *)q->g_idx;
    return write_all(f, src, e->nbytes, path, err);
}

/* safetensors: u64 header length, JSON header padded with spaces to 8 bytes,
 * then the tensors back to back in header order. */
static int write_safetensors(const qc_model *m, const char *path, qc_err *err) {
    st_entry *es = NULL;
    int n = 0, rc = -1;
    FILE *f = NULL;
    char *hdr = NULL;
    if (collect_entries(m, &es, &n, err)) goto done;
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        es[i].offset = off;
        json_t *shape = es[i].n_dims == 1 ? json_pack("[I]", (json_int_t)es[i].shape[0])
                                          : json_pack("[I,I]", (json_int_t)es[i].shape[0],
                                                      (json_int_t)es[i].shape[1]);
        json_object_set_new(root, es[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", es[i].dtype, "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + es[i].nbytes)));
        off += es[i].nbytes;
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!hdr) {
        qc_err_set(err, "out of memory");
        goto done;
    }
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    uint64_t le = padded;
    if (!(f = fopen(path, "wb"))) {
        qc_err_set(err, "%s: %s", path, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(le >> (8 * i));
    if (write_all(f, len8, 8, path, err) || write_all(f, hdr, hlen, path, err) ||
        write_all(f, "        ", padded - hlen, path, err))
        goto done;
    for (int i = 0; i < n; i++)
        if (write_entry(f, &es[i], path, err)) goto done;
    rc = 0;
done:
    if (f && fclose(f) != 0 && rc == 0) rc = qc_err_set(err, "%s: %s", path, strerror(errno));
    for (int i = 0; i < n; i++)
        free(es[i].name);
    free(es);
    free(hdr);
    return rc;
}

static const char *arch_type[] = {"llama", "mistral", "qwen2", "qwen3"};
static const char *arch_class[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                   "Qwen3ForCausalLM"};

/* config.json in transformers' spelling, plus our quantization_config. */
static json_t *config_json(const qc_model *m) {
    const qc_config *c = &m->cfg;
    json_t *o =
        json_pack("{s:s, s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:s}",
                  "model_type", arch_type[c->arch], "architectures", arch_class[c->arch],
                  "hidden_size", c->dim, "intermediate_size", c->ffn_dim, "num_hidden_layers",
                  c->n_layers, "num_attention_heads", c->n_heads, "num_key_value_heads",
                  c->n_kv_heads, "head_dim", c->head_dim, "vocab_size", c->vocab,
                  "max_position_embeddings", c->max_pos > 0 ? c->max_pos : 2048, "rms_norm_eps",
                  (double)c->norm_eps, "rope_theta", (double)c->rope_theta, "tie_word_embeddings",
                  c->tied_embeddings, "hidden_act", "silu", "torch_dtype", "float32");
    if (c->bos_id >= 0) json_object_set_new(o, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(o, "eos_token_id", json_integer(c->eos_id));
    if (c->rope_scaling == QC_ROPE_LLAMA3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                                      (double)c->rope_factor, "low_freq_factor",
                                      (double)c->rope_low_freq_factor, "high_freq_factor",
                                      (double)c->rope_high_freq_factor,
                                      "original_max_position_embeddings", c->rope_orig_max_pos));
    else if (c->rope_scaling == QC_ROPE_LINEAR)
        json_object_set_new(
            o, "rope_scaling",
            json_pack("{s:s, s:f}", "rope_type", "linear", "factor", (double)c->rope_factor));
    json_t *layers = json_object();
    for (int i = 0; i < m->n_quant; i++) {
        const qc_quant_state *q = m->quant[i].q;
        char *mod = strip_weight(m->quant[i].name);
        if (!mod) continue;
        json_object_set_new(layers, mod,
                            json_pack("{s:i, s:i, s:b}", "bits", q->fmt.bits, "group_size",
                                      q->fmt.group_size, "symmetric", q->fmt.symmetric));
        free(mod);
    }
    json_object_set_new(o, "quantization_config",
                        json_pack("{s:s, s:i, s:o}", "quant_method", "quantc", "format_version", 1,
                                  "layers", layers));
    return o;
}

static int copy_file(const char *from, const char *to, qc_err *err) {
    size_t len;
    char *buf = qc_read_file(from, (size_t)1 << 30, &len, err);
    if (!buf) return -1;
    FILE *f = fopen(to, "wb");
    int rc = f ? write_all(f, buf, len, to, err) : qc_err_set(err, "%s: %s", to, strerror(errno));
    if (f && fclose(f) != 0 && rc == 0) rc = qc_err_set(err, "%s: %s", to, strerror(errno));
    free(buf);
    return rc;
}

/* A GGUF holding only the source's tokenizer.* metadata, copied byte for
 * byte (each key/value runs from its key to the next entry). */
static int write_tokenizer_gguf(const char *src, const char *to, qc_err *err) {
    qc_gguf *g = qc_gguf_open(src, err);
    if (!g) return -1;
    uint64_t n = 0;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (!strncmp(g->kvs[i].key, "tokenizer.", 10)) n++;
    FILE *f = fopen(to, "wb");
    int rc = f ? 0 : qc_err_set(err, "%s: %s", to, strerror(errno));
    uint8_t hdr[24];
    memcpy(hdr, "GGUF", 4);
    for (int i = 0; i < 4; i++)
        hdr[4 + i] = (uint8_t)(g->version >> (8 * i));
    for (int i = 0; i < 8; i++)
        hdr[8 + i] = 0, hdr[16 + i] = (uint8_t)(n >> (8 * i));
    if (rc == 0) rc = write_all(f, hdr, 24, to, err);
    for (int64_t i = 0; rc == 0 && i < g->n_kv; i++) {
        if (strncmp(g->kvs[i].key, "tokenizer.", 10)) continue;
        size_t start = g->kvs[i].key_offset;
        size_t end = i + 1 < g->n_kv ? g->kvs[i + 1].key_offset
                     : g->n_tensors  ? g->tensors[0].info_offset
                                     : g->size;
        rc = write_all(f, g->data + start, end - start, to, err);
    }
    if (f && fclose(f) != 0 && rc == 0) rc = qc_err_set(err, "%s: %s", to, strerror(errno));
    qc_gguf_free(g);
    return rc;
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = join(dir, e->d_name);
            if (p) unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int write_text(const char *dir, const char *name, const char *text, qc_err *err) {
    char *p = join(dir, name);
    if (!p) return qc_err_set(err, "out of memory");
    FILE *f = fopen(p, "wb");
    int rc = f ? write_all(f, text, strlen(text), p, err)
               : qc_err_set(err, "%s: %s", p, strerror(errno));
    if (f && fclose(f) != 0 && rc == 0) rc = qc_err_set(err, "%s: %s", p, strerror(errno));
    free(p);
    return rc;
}

static int fill_dir(const qc_model *m, const char *tmp, const char *provenance, qc_err *err) {
    json_t *cfg = config_json(m);
    char *cs = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(cfg);
    int rc = cs ? write_text(tmp, "config.json", cs, err) : qc_err_set(err, "out of memory");
    free(cs);
    char *st = join(tmp, "model.safetensors");
    if (rc == 0) rc = st ? write_safetensors(m, st, err) : qc_err_set(err, "out of memory");
    free(st);
    if (rc == 0 && provenance) rc = write_text(tmp, "quantc.json", provenance, err);
    if (rc || !m->tok) return rc;
    if (!strcmp(m->format, "gguf")) {
        char *to = join(tmp, "tokenizer.gguf");
        rc = to ? write_tokenizer_gguf(m->path, to, err) : qc_err_set(err, "out of memory");
        free(to);
        return rc;
    }
    const char *names[] = {"tokenizer.json", "tokenizer_config.json", "tokenizer.gguf"};
    for (size_t i = 0; rc == 0 && i < sizeof names / sizeof names[0]; i++) {
        char *from = join(m->path, names[i]), *to = join(tmp, names[i]);
        if (!from || !to)
            rc = qc_err_set(err, "out of memory");
        else if (is_file(from))
            rc = copy_file(from, to, err);
        free(from);
        free(to);
    }
    return rc;
}

int qc_qmodel_write(const qc_model *m, const char *out_dir, const char *provenance_json,
                    qc_err *err) {
    struct stat st;
    char *marker = join(out_dir, "quantc.json");
    if (!marker) return qc_err_set(err, "out of memory");
    int exists = stat(out_dir, &st) == 0, ours = exists && S_ISDIR(st.st_mode) && is_file(marker);
    free(marker);
    if (exists && !ours)
        return qc_err_set(err, "%s: exists and is not a quantc compiled model; not replacing it",
                          out_dir);
    size_t n = strlen(out_dir) + 32;
    char *tmp = malloc(n), *old = malloc(n);
    if (!tmp || !old) {
        free(tmp), free(old);
        return qc_err_set(err, "out of memory");
    }
    snprintf(tmp, n, "%s.tmp.%ld", out_dir, (long)getpid());
    snprintf(old, n, "%s.old.%ld", out_dir, (long)getpid());
    int rc = 0;
    if (mkdir(tmp, 0755) != 0) rc = qc_err_set(err, "%s: %s", tmp, strerror(errno));
    if (rc == 0) rc = fill_dir(m, tmp, provenance_json, err);
    if (rc == 0 && ours && rename(out_dir, old) != 0)
        rc = qc_err_set(err, "%s: %s", out_dir, strerror(errno));
    if (rc == 0 && rename(tmp, out_dir) != 0) {
        rc = qc_err_set(err, "%s: %s", out_dir, strerror(errno));
        if (ours) rename(old, out_dir);
    }
    if (rc == 0 && ours) remove_tree(old);
    if (rc != 0) remove_tree(tmp);
    free(tmp);
    free(old);
    return rc;
}

/* ---- loading ---- */

static int attach_one(qc_model *m, const char *dir, const char *mod, json_t *spec, qc_err *err) {
    json_int_t bits, group;
    int sym;
    if (json_unpack(spec, "{s:I, s:I, s:b}", "bits", &bits, "group_size", &group, "symmetric",
                    &sym) != 0)
        return qc_err_set(err,
                          "%s/config.json: quantization_config layer '%s' needs bits, "
                          "group_size, symmetric",
                          dir, mod);
    char name[512];
    const qc_tensor *parts[4];
    const char *suffix[4] = {"qcodes", "qscales", "qzeros", "g_idx"};
    const qc_dtype want[4] = {QC_DT_U8, QC_DT_F32, QC_DT_F32, QC_DT_I32};
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s.%s", mod, suffix[k]);
        parts[k] = qc_model_find(m, name);
        if (!parts[k] || parts[k]->dtype != want[k])
            return qc_err_set(err, "%s: quantized layer '%s' lacks tensor '%s' of type %s", dir,
                              mod, name, qc_dtype_name(want[k]));
    }
    qc_quant_format fmt = {(int)bits, (int)group, sym};
    const qc_tensor *c = parts[0];
    if (c->n_dims != 2 || bits < 2 || bits > 8)
        return qc_err_set(err, "%s: layer '%s': bad codes shape or bits %lld", dir, mod,
                          (long long)bits);
    qc_quant_state *q = qc_quant_state_new(&fmt, c->shape[0], c->shape[1], err);
    if (!q) return qc_err_prefix(err, "%s: layer '%s'", dir, mod);
    int64_t rows = q->rows, cols = q->cols, ng = q->n_groups;
    if (parts[1]->shape[0] != rows || parts[1]->shape[1] != ng || parts[2]->shape[0] != rows ||
        parts[2]->shape[1] != ng || parts[3]->shape[0] != cols) {
        qc_quant_state_free(q);
        return qc_err_set(err,
                          "%s: layer '%s': scales/zeros/g_idx shapes do not match %lld × %lld "
                          "in %lld groups",
                          dir, mod, (long long)rows, (long long)cols, (long long)ng);
    }
    memcpy(q->codes, c->data, (size_t)(rows * cols));
    memcpy(q->scales, parts[1]->data, (size_t)(rows * ng) * 4);
    memcpy(q->zeros, parts[2]->data, (size_t)(rows * ng) * 4);
    memcpy(q->g_idx, parts[3]->data, (size_t)cols * 4);
    const char *bad = NULL;
    for (int64_t i = 0; i < rows * cols && !bad; i++)
        if (q->codes[i] >> bits) bad = "a code exceeds the bit width";
    for (int64_t i = 0; i < rows * ng && !bad; i++)
        if (!isfinite(q->scales[i]) || !isfinite(q->zeros[i]))
            bad = "a scale or zero is not finite";
    for (int64_t i = 0; i < cols && !bad; i++)
        if (q->g_idx[i] < 0 || q->g_idx[i] >= ng) bad = "a group index is out of range";
    if (bad) {
        qc_quant_state_free(q);
        return qc_err_set(err, "%s: layer '%s': %s", dir, mod, bad);
    }
    snprintf(name, sizeof name, "%s.weight", mod);
    char *wname = strdup(name);
    if (!wname) {
        qc_quant_state_free(q);
        return qc_err_set(err, "out of memory");
    }
    return qc_model_add_quant(m, wname, q, err);
}

int qc_qmodel_attach(qc_model *m, const char *dir, qc_err *err) {
    char *cpath = join(dir, "config.json");
    if (!cpath) return qc_err_set(err, "out of memory");
    json_error_t je;
    json_t *root = json_load_file(cpath, 0, &je);
    int rc = 0;
    json_t *qc = root ? json_object_get(root, "quantization_config") : NULL;
    json_t *layers = qc ? json_object_get(qc, "layers") : NULL;
    if (!root) {
        rc = qc_err_set(err, "%s: line %d, column %d: %s", cpath, je.line, je.column, je.text);
    } else if (qc && json_is_string(json_object_get(qc, "quant_method")) &&
               strcmp(json_string_value(json_object_get(qc, "quant_method")), "quantc")) {
        rc = qc_err_set(err,
                        "%s: quantization_config.quant_method '%s' is not supported (quantc "
                        "reads unquantized F32/F16/BF16 checkpoints and its own compiled models)",
                        cpath, json_string_value(json_object_get(qc, "quant_method")));
    } else if (qc) {
        if (!json_is_object(layers)) {
            rc = qc_err_set(err, "%s: quantization_config.layers must be an object", cpath);
        } else {
            const char *mod;
            json_t *spec;
            json_object_foreach(layers, mod, spec) {
                if ((rc = attach_one(m, dir, mod, spec, err))) break;
            }
        }
    }
    if (rc == 0 && !m->tok) {
        char *tg = join(dir, "tokenizer.gguf");
        if (tg && is_file(tg)) rc = qc_gguf_load_tokenizer(m, tg, err);
        free(tg);
    }
    json_decref(root);
    free(cpath);
    return rc;
}
