#include "hf_config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per model type defaults, from transformers' configuration_<type>.py. */
typedef struct arch_desc {
    const char *model_type, *class_name;
    qc_arch arch;
    int kv_heads;   /* default num_key_value_heads when the key is absent; 0: = heads */
    int max_pos;    /* default max_position_embeddings */
    int head_dim;   /* default head_dim when absent; 0: hidden / heads */
    int bos, eos;   /* default token ids (-1: None) */
    int bias_key;   /* honours attention_bias (which quantc does not support) */
    int window_opt; /* sliding window only with use_sliding_window (qwen) */
} arch_desc;

static const arch_desc archs[] = {
    {"llama", "LlamaForCausalLM", QC_ARCH_LLAMA, 0, 2048, 0, 1, 2, 1, 0},
    {"mistral", "MistralForCausalLM", QC_ARCH_MISTRAL, 8, 4096 * 32, 0, 1, 2, 0, 0},
    {"qwen2", "Qwen2ForCausalLM", QC_ARCH_QWEN2, 32, 32768, 0, -1, -1, 0, 1},
    {"qwen3", "Qwen3ForCausalLM", QC_ARCH_QWEN3, 32, 32768, 128, -1, -1, 1, 1},
};
#define N_ARCHS (int)(sizeof archs / sizeof archs[0])

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* Integer key in [lo, hi]. Absent or null: *out = def, or an error when
 * required. */
static int get_int(const char *where, json_t *o, const char *key, int required, int def, int lo,
                   int hi, int *out, qc_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return qc_err_set(err, "%s: missing required key '%s'", where, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return qc_err_set(err, "%s: key '%s' must be an integer, got %s", where, key, type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return qc_err_set(err, "%s: key '%s' = %lld is out of range [%d, %d]", where, key,
                          (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

/* Positive finite number (integer or real). */
static int get_num(const char *where, json_t *o, const char *key, int required, double def,
                   double *out, qc_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return qc_err_set(err, "%s: missing required key '%s'", where, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return qc_err_set(err, "%s: key '%s' must be a number, got %s", where, key, type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || !(x > 0) || x > 3.0e38)
        return qc_err_set(err, "%s: key '%s' = %g must be positive and finite", where, key, x);
    *out = x;
    return 0;
}

static int get_bool(const char *where, json_t *o, const char *key, int def, int *out, qc_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return qc_err_set(err, "%s: key '%s' must be true or false, got %s", where, key,
                          type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* Token id: integer, null, or a list whose first element is taken (eos may
 * list several ids). */
static int get_token(const char *where, json_t *o, const char *key, int def, int *out,
                     qc_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : json_null();
    if (json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return qc_err_set(err, "%s: key '%s' must be a non-negative integer, a list or null", where,
                          key);
    *out = (int)json_integer_value(v);
    return 0;
}

static const arch_desc *find_arch(const char *where, json_t *root, qc_err *err) {
    json_t *mt = json_object_get(root, "model_type"), *ar = json_object_get(root, "architectures");
    if (mt && !json_is_string(mt))
        return qc_err_set(err, "%s: key 'model_type' must be a string, got %s", where,
                          type_name(mt)),
               NULL;
    if (ar && !json_is_null(ar) &&
        (!json_is_array(ar) || (json_array_size(ar) && !json_is_string(json_array_get(ar, 0)))))
        return qc_err_set(err, "%s: key 'architectures' must be a list of strings", where), NULL;
    /* transformers' Auto classes choose the model from model_type;
     * architectures is only a fallback. */
    const char *name = mt ? json_string_value(mt) : NULL;
    int by_class = 0;
    if (!name && json_is_array(ar) && json_array_size(ar)) {
        name = json_string_value(json_array_get(ar, 0));
        by_class = 1;
    }
    if (!name) return qc_err_set(err, "%s: missing 'model_type' and 'architectures'", where), NULL;
    for (int i = 0; i < N_ARCHS; i++)
        if (strcmp(name, by_class ? archs[i].class_name : archs[i].model_type) == 0)
            return &archs[i];
    /* Name both spellings when both are given: users know one or the other. */
    const char *cls =
        json_is_array(ar) && json_array_size(ar) ? json_string_value(json_array_get(ar, 0)) : NULL;
    qc_err_set(err,
               "%s: unsupported architecture '%.64s'%s%.64s%s (supported: llama/LlamaForCausalLM, "
               "mistral/MistralForCausalLM, qwen2/Qwen2ForCausalLM, qwen3/Qwen3ForCausalLM)",
               where, name, cls && !by_class ? " (" : "", cls && !by_class ? cls : "",
               cls && !by_class ? ")" : "");
    return NULL;
}

/* Rope theta and scaling from rope_theta + rope_scaling (transformers 4) or
 * rope_parameters (transformers 5). */
static int parse_rope(const char *where, json_t *root, qc_config *c, qc_err *err) {
    double theta;
    if (get_num(where, root, "rope_theta", 0, 10000.0, &theta, err)) return -1;
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rp && !json_is_null(rp) && !json_is_object(rp))
        return qc_err_set(err, "%s: key 'rope_parameters' must be an object, got %s", where,
                          type_name(rp));
    if (rs && !json_is_null(rs) && !json_is_object(rs))
        return qc_err_set(err, "%s: key 'rope_scaling' must be an object or null, got %s", where,
                          type_name(rs));
    json_t *sc = NULL; /* object holding the scaling parameters */
    char key[48];
    if (json_is_object(rp)) {
        char sub[96];
        snprintf(sub, sizeof sub, "%s: rope_parameters", where);
        if (get_num(sub, rp, "rope_theta", 0, theta, &theta, err)) return -1;
        sc = rp;
        snprintf(key, sizeof key, "rope_parameters");
    }
    if (json_is_object(rs) &&
        (!sc || !(json_object_get(sc, "rope_type") || json_object_get(sc, "type")))) {
        sc = rs;
        snprintf(key, sizeof key, "rope_scaling");
    }
    c->rope_theta = (float)theta;
    c->rope_scaling = QC_ROPE_NONE;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = c->rope_high_freq_factor = 0.0f;
    c->rope_orig_max_pos = 0;
    if (!sc) return 0;
    json_t *ty = json_object_get(sc, "rope_type");
    if (!ty) ty = json_object_get(sc, "type");
    if (ty && !json_is_string(ty))
        return qc_err_set(err, "%s: key '%s.rope_type' must be a string, got %s", where, key,
                          type_name(ty));
    const char *t = ty ? json_string_value(ty) : "default";
    char sub[96];
    snprintf(sub, sizeof sub, "%s: %s", where, key);
    double prf;
    if (get_num(sub, sc, "partial_rotary_factor", 0, 1.0, &prf, err)) return -1;
    if (prf != 1.0)
        return qc_err_set(err, "%s: partial_rotary_factor %g is not supported", sub, prf);
    if (strcmp(t, "default") == 0) return 0;
    double f;
    if (strcmp(t, "linear") == 0) {
        if (get_num(sub, sc, "factor", 1, 0, &f, err)) return -1;
        c->rope_scaling = QC_ROPE_LINEAR;
        c->rope_factor = (float)f;
        return 0;
    }
    if (strcmp(t, "llama3") == 0) {
        double lo, hi;
        int orig;
        if (get_num(sub, sc, "factor", 1, 0, &f, err) ||
            get_num(sub, sc, "low_freq_factor", 1, 0, &lo, err) ||
            get_num(sub, sc, "high_freq_factor", 1, 0, &hi, err) ||
            get_int(sub, sc, "original_max_position_embeddings", 1, 0, 1, INT_MAX, &orig, err))
            return -1;
        if (!(hi > lo))
            return qc_err_set(err, "%s: high_freq_factor %g must exceed low_freq_factor %g", sub,
                              hi, lo);
        c->rope_scaling = QC_ROPE_LLAMA3;
        c->rope_factor = (float)f;
        c->rope_low_freq_factor = (float)lo;
        c->rope_high_freq_factor = (float)hi;
        c->rope_orig_max_pos = orig;
        return 0;
    }
    return qc_err_set(err,
                      "%s: rope type '%.32s' is not supported (supported: default, linear, "
                      "llama3)",
                      sub, t);
}

static int parse_root(const char *where, json_t *root, qc_config *c, qc_hf_config_info *info,
                      qc_err *err) {
    memset(c, 0, sizeof *c);
    if (info) memset(info, 0, sizeof *info);
    if (!json_is_object(root)) return qc_err_set(err, "%s: top level is not a JSON object", where);
    const arch_desc *a = find_arch(where, root, err);
    if (!a) return -1;
    /* Pre-quantized checkpoints (GPTQ, AWQ, ...) store tensors quantc would
     * misread; its own compiled models are artifact files. */
    json_t *qcfg = json_object_get(root, "quantization_config");
    if (qcfg) {
        const char *qm = json_string_value(json_object_get(qcfg, "quant_method"));
        return qc_err_set(err,
                          "%s: quantization_config (quant_method '%.40s') is not supported "
                          "(quantc reads unquantized F32/F16/BF16 checkpoints)",
                          where, qm ? qm : "?");
    }
    c->arch = a->arch;
    json_t *ar = json_object_get(root, "architectures");
    const char *an = json_is_array(ar) && json_array_size(ar)
                         ? json_string_value(json_array_get(ar, 0))
                         : a->model_type;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", an);
    if (get_int(where, root, "num_hidden_layers", 1, 0, 1, INT_MAX, &c->n_layers, err) ||
        get_int(where, root, "hidden_size", 1, 0, 1, INT_MAX, &c->dim, err) ||
        get_int(where, root, "num_attention_heads", 1, 0, 1, INT_MAX, &c->n_heads, err) ||
        get_int(where, root, "intermediate_size", 1, 0, 1, INT_MAX, &c->ffn_dim, err) ||
        get_int(where, root, "vocab_size", 1, 0, 1, INT_MAX, &c->vocab, err) ||
        get_int(where, root, "max_position_embeddings", 0, a->max_pos, 1, INT_MAX, &c->max_pos,
                err))
        return -1;
    /* An explicit null means "same as heads" in every config class; an absent
     * key takes the class default. */
    json_t *kv = json_object_get(root, "num_key_value_heads");
    int kv_def = (kv && json_is_null(kv)) || !a->kv_heads ? c->n_heads : a->kv_heads;
    if (get_int(where, root, "num_key_value_heads", 0, kv_def, 1, INT_MAX, &c->n_kv_heads, err))
        return -1;
    json_t *hd = json_object_get(root, "head_dim");
    int hd_def = (hd && json_is_null(hd)) || !a->head_dim ? c->dim / c->n_heads : a->head_dim;
    if (get_int(where, root, "head_dim", 0, hd_def, 1, INT_MAX, &c->head_dim, err)) return -1;
    double eps;
    if (get_num(where, root, "rms_norm_eps", 0, 1e-6, &eps, err)) return -1;
    c->norm_eps = (float)eps;
    if (parse_rope(where, root, c, err)) return -1;
    if (get_bool(where, root, "tie_word_embeddings", 0, &c->tied_embeddings, err) ||
        get_token(where, root, "bos_token_id", a->bos, &c->bos_id, err) ||
        get_token(where, root, "eos_token_id", a->eos, &c->eos_id, err))
        return -1;
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_string(act))
        return qc_err_set(err, "%s: key 'hidden_act' must be a string, got %s", where,
                          type_name(act));
    if (act && strcmp(json_string_value(act), "silu") != 0)
        return qc_err_set(err, "%s: hidden_act '%.32s' is not supported (only silu)", where,
                          json_string_value(act));
    int flag;
    if (get_bool(where, root, "mlp_bias", 0, &flag, err)) return -1;
    if (flag) return qc_err_set(err, "%s: mlp_bias = true is not supported", where);
    if (a->bias_key) {
        if (get_bool(where, root, "attention_bias", 0, &flag, err)) return -1;
        if (flag)
            return qc_err_set(err,
                              "%s: attention_bias = true (bias on q, k, v and o) is not "
                              "supported for %s",
                              where, a->model_type);
    }
    c->attn_bias = a->arch == QC_ARCH_QWEN2;
    c->qk_norm = a->arch == QC_ARCH_QWEN3;
    int use_window = 1, window;
    if (a->window_opt && get_bool(where, root, "use_sliding_window", 0, &use_window, err))
        return -1;
    if (get_int(where, root, "sliding_window", 0, 0, 0, INT_MAX, &window, err)) return -1;
    if (info && use_window && window > 0 && window < c->max_pos) info->sliding_window = window;
    return 0;
}

int qc_hf_config_parse(const char *text, size_t len, const char *where, qc_config *cfg,
                       qc_hf_config_info *info, qc_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return qc_err_set(err, "%s: line %d, column %d: %s", where, jerr.line, jerr.column,
                          jerr.text);
    int rc = parse_root(where, root, cfg, info, err);
    json_decref(root);
    return rc;
}

int qc_hf_config_load(const char *path, qc_config *cfg, qc_hf_config_info *info, qc_err *err) {
    size_t len;
    char *text = qc_read_file(path, 16u << 20, &len, err);
    if (!text) return -1;
    int rc = qc_hf_config_parse(text, len, path, cfg, info, err);
    free(text);
    return rc;
}
