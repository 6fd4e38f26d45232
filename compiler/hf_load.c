/* Hugging Face model directory: config.json, model.safetensors or
 * model.safetensors.index.json with its shards, tokenizer.json if present. */
#include "hf_config.h"
#include "limits.h"
#include "loaders.h"
#include "safetensors.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest model.safetensors.index.json read (real ones are well under 1 MB). */

static char *join_path(const char *dir, const char *name, qc_err *err) {
    size_t nd = strlen(dir), nn = strlen(name);
    int slash = nd > 0 && dir[nd - 1] != '/';
    char *p = qc_malloc(nd + nn + 2, err);
    if (p) snprintf(p, nd + nn + 2, "%s%s%s", dir, slash ? "/" : "", name);
    return p;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Maps one safetensors file, hands the mapping to m and appends its tensors.
 * `seen` maps tensor name → shard number, to catch names in two shards. */
static int add_shard(qc_model *m, const char *path, int shard, json_t *seen, qc_err *err) {
    qc_mapfile *f = qc_mapfile_open(path, err);
    if (!f || qc_model_add_file(m, f, err)) return -1;
    qc_safetensors *st = qc_safetensors_parse_file(f, err);
    if (!st) return -1;
    int rc = 0;
    for (int i = 0; i < st->n_tensors && rc == 0; i++) {
        const qc_st_tensor *s = &st->tensors[i];
        qc_tensor t;
        if (qc_st_tensor_view(s, &t)) {
            rc = qc_err_set(err,
                            "%s: tensor '%s': %d dimensions (quantc handles 1-D and 2-D "
                            "weights only)",
                            path, s->name, s->n_dims);
            break;
        }
        if (json_object_get(seen, s->name)) {
            rc = qc_err_set(err, "%s: tensor '%s' also appears in another shard", path, s->name);
            break;
        }
        t.name = strdup(s->name);
        if (!t.name || json_object_set_new(seen, s->name, json_integer(shard))) {
            free(t.name);
            rc = qc_err_set(err, "out of memory");
            break;
        }
        rc = qc_model_add_tensor(m, &t, err);
    }
    qc_safetensors_free(st);
    return rc;
}

/* A shard name must be a plain file name inside the model directory. */
static int bad_shard_name(const char *s) {
    return !s[0] || strchr(s, '/') || strchr(s, '\\') || strstr(s, "..") != NULL;
}

static int load_index(qc_model *m, const char *dir, const char *ipath, json_t *seen, qc_err *err) {
    size_t len;
    char *text = qc_read_limited(ipath, QC_LIMIT_JSON_BYTES, &len, err);
    if (!text) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return qc_err_set(err, "%s: line %d, column %d: %s", ipath, jerr.line, jerr.column,
                          jerr.text);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    json_t *shards = json_object(); /* shard file → shard number */
    const char *name;
    json_t *v;
    if (!shards) {
        rc = qc_err_set(err, "out of memory");
        goto done;
    }
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = qc_err_set(err, "%s: missing or empty 'weight_map' object", ipath);
        goto done;
    }
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) {
            rc = qc_err_set(err, "%s: weight_map['%s'] is not a string", ipath, name);
            goto done;
        }
        const char *file = json_string_value(v);
        if (bad_shard_name(file)) {
            rc = qc_err_set(err,
                            "%s: weight_map['%s'] = '%.200s' is not a file name in the model "
                            "directory",
                            ipath, name, file);
            goto done;
        }
        if (json_object_get(shards, file)) continue;
        int shard = (int)json_object_size(shards);
        char *path = join_path(dir, file, err);
        if (!path || json_object_set_new(shards, file, json_integer(shard))) {
            free(path);
            rc = qc_err_set(err, "out of memory");
            goto done;
        }
        rc = add_shard(m, path, shard, seen, err);
        free(path);
        if (rc) goto done;
    }
    json_object_foreach(wm, name, v) {
        json_t *got = json_object_get(seen, name);
        json_int_t want = json_integer_value(json_object_get(shards, json_string_value(v)));
        if (!got || json_integer_value(got) != want) {
            rc = qc_err_set(err, "%s: tensor '%s' is listed in shard '%s' but not found there",
                            ipath, name, json_string_value(v));
            goto done;
        }
    }
done:
    json_decref(shards);
    json_decref(root);
    return rc;
}

int qc_hf_load(qc_model *m, const char *dir, qc_err *err) {
    char *cpath = join_path(dir, "config.json", err);
    char *ipath = join_path(dir, "model.safetensors.index.json", err);
    char *spath = join_path(dir, "model.safetensors", err);
    char *tpath = join_path(dir, "tokenizer.json", err);
    json_t *seen = json_object();
    int rc = -1;
    if (!cpath || !ipath || !spath || !tpath || !seen) {
        if (!seen) qc_err_set(err, "out of memory");
        goto done;
    }
    if (qc_hf_config_load(cpath, &m->cfg, NULL, err)) goto done;
    if (is_file(ipath))
        rc = load_index(m, dir, ipath, seen, err);
    else if (is_file(spath))
        rc = add_shard(m, spath, 0, seen, err);
    else
        rc = qc_err_set(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    if (rc) goto done;
    if (is_file(tpath)) {
        m->tok = qc_tokenizer_from_json(tpath, err);
        if (!m->tok) rc = -1;
    }
done:
    json_decref(seen);
    free(cpath);
    free(ipath);
    free(spath);
    free(tpath);
    return rc;
}
