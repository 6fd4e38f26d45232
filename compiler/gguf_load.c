/* GGUF model loader: config from "<arch>.*" metadata, tensors renamed from
 * llama.cpp names to Hugging Face names with shapes reversed to row-major,
 * tokenizer from "tokenizer.ggml.*".
 *
 * RoPE scaling supported: none; linear ("<arch>.rope.scaling.type" = "linear"
 * with ".factor", or the older "<arch>.rope.scale_linear"); Llama 3.1 style,
 * which llama.cpp's converter stores as a "rope_freqs.weight" tensor of
 * per-frequency divisors: it is accepted when it matches the Llama 3 formula
 * for factor = its largest entry, low/high frequency factors 1 and 4 and an
 * original context of 8192 (the values every Llama 3.x release uses). Other
 * types (yarn, longrope) and other rope_freqs tables are errors. */
#include "loaders.h"

#include "dequant.h"
#include "gguf.h"
#include "tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads "<arch>.<suffix>": 0 found, 1 absent (*out untouched), -1 error. */
static int get_arch_int(const qc_gguf *g, const char *arch, const char *suffix, int *out,
                        qc_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int32_t v;
    int rc = qc_gguf_get_i32(g, key, &v, err);
    if (rc == 0) *out = v;
    return rc;
}

/* Optional key: returns 0 (found or absent, *out keeps its default) or -1. */
static int get_opt_int(const qc_gguf *g, const char *arch, const char *suffix, int *out,
                       qc_err *err) {
    return get_arch_int(g, arch, suffix, out, err) < 0 ? -1 : 0;
}

static int get_req_int(const qc_gguf *g, const char *arch, const char *suffix, int *out,
                       qc_err *err) {
    int rc = get_arch_int(g, arch, suffix, out, err);
    if (rc == 1) return qc_err_set(err, "%s: missing metadata key '%s.%s'", g->path, arch, suffix);
    return rc;
}

static int get_opt_f32(const qc_gguf *g, const char *arch, const char *suffix, float *out,
                       qc_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = qc_gguf_get_f32(g, key, out, err);
    return rc < 0 ? -1 : 0;
}

static int str_is(const char *s, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Llama 3 frequency scaling (Meta's apply_scaling in llama/model.py): the
 * divisor for inverse frequency f is 1 for wavelengths 2π/f below
 * orig/high, `factor` above orig/low, and 1 / ((1 - s)/factor + s) between,
 * with s = (orig / wavelength - low) / (high - low). */
static float llama3_divisor(float f, float factor, float low, float high, float orig) {
    float wavelen = 2.0f * (float)M_PI / f;
    if (wavelen < orig / high) return 1.0f;
    if (wavelen > orig / low) return factor;
    float s = (orig / wavelen - low) / (high - low);
    return 1.0f / ((1.0f - s) / factor + s);
}

static int read_rope_freqs(qc_model *m, const qc_gguf *g, qc_err *err) {
    const qc_gguf_tensor *t = qc_gguf_find_tensor(g, "rope_freqs.weight");
    if (!t) return 0;
    qc_config *c = &m->cfg;
    int64_t half = c->head_dim / 2;
    if (t->dtype != QC_DT_F32 || t->numel != half || half <= 0)
        return qc_err_set(err, "%s: byte %zu: tensor 'rope_freqs.weight' is not %lld f32 values",
                          g->path, t->info_offset, (long long)half);
    float *fac = qc_malloc((size_t)half * sizeof *fac, err);
    if (!fac) return -1;
    qc_dequantize(QC_DT_F32, t->data, fac, half);
    float factor = 1.0f;
    for (int64_t i = 0; i < half; i++)
        if (fac[i] > factor) factor = fac[i];
    const float low = 1.0f, high = 4.0f, orig = 8192.0f;
    int ok = isfinite(factor);
    for (int64_t i = 0; ok && i < half; i++) {
        float f = powf(c->rope_theta, -(float)(2 * i) / (float)c->head_dim);
        float want = llama3_divisor(f, factor, low, high, orig);
        if (!(fabsf(fac[i] - want) <= 1e-3f * want)) ok = 0;
    }
    free(fac);
    if (!ok)
        return qc_err_set(err,
                          "%s: byte %zu: tensor 'rope_freqs.weight' does not match Llama 3 "
                          "scaling (factor %g, low 1, high 4, original context 8192); other "
                          "RoPE frequency tables are not supported",
                          g->path, t->info_offset, (double)factor);
    if (factor > 1.0f) {
        c->rope_scaling = QC_ROPE_LLAMA3;
        c->rope_factor = factor;
        c->rope_low_freq_factor = low;
        c->rope_high_freq_factor = high;
        c->rope_orig_max_pos = (int)orig;
    }
    return 0;
}

static int read_rope_scaling(qc_model *m, const qc_gguf *g, const char *arch, qc_err *err) {
    qc_config *c = &m->cfg;
    char key[128];
    const char *s;
    size_t n;
    c->rope_scaling = QC_ROPE_NONE;
    c->rope_factor = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    int rc = qc_gguf_get_str(g, key, &s, &n, err);
    if (rc < 0) return -1;
    float factor = 0.0f;
    if (rc == 0 && str_is(s, n, "linear")) {
        if (get_opt_f32(g, arch, "rope.scaling.factor", &factor, err)) return -1;
    } else if (rc == 0 && !str_is(s, n, "none")) {
        return qc_err_set(err, "%s: byte %zu: RoPE scaling type '%.*s' is not supported", g->path,
                          qc_gguf_find(g, key)->offset, (int)(n > 64 ? 64 : n), s);
    } else if (rc == 1) {
        if (get_opt_f32(g, arch, "rope.scale_linear", &factor, err)) return -1;
        if (factor == 1.0f) factor = 0.0f;
    }
    if (factor != 0.0f) {
        if (!(factor > 0.0f) || !isfinite(factor))
            return qc_err_set(err, "%s: linear RoPE scaling factor %g is not positive", g->path,
                              (double)factor);
        c->rope_scaling = QC_ROPE_LINEAR;
        c->rope_factor = factor;
    }
    if (get_opt_int(g, arch, "rope.scaling.original_context_length", &c->rope_orig_max_pos, err))
        return -1;
    if (c->rope_scaling == QC_ROPE_NONE) return read_rope_freqs(m, g, err);
    return 0;
}

static int read_config(qc_model *m, const qc_gguf *g, qc_err *err) {
    qc_config *c = &m->cfg;
    const char *s;
    size_t n;
    int rc = qc_gguf_get_str(g, "general.architecture", &s, &n, err);
    if (rc < 0) return -1;
    if (rc == 1) return qc_err_set(err, "%s: missing metadata key 'general.architecture'", g->path);
    if (str_is(s, n, "llama")) {
        c->arch = QC_ARCH_LLAMA;
    } else if (str_is(s, n, "mistral")) {
        c->arch = QC_ARCH_MISTRAL;
    } else if (str_is(s, n, "qwen2")) {
        c->arch = QC_ARCH_QWEN2;
        c->attn_bias = 1;
    } else if (str_is(s, n, "qwen3")) {
        c->arch = QC_ARCH_QWEN3;
        c->qk_norm = 1;
    } else {
        return qc_err_set(err,
                          "%s: byte %zu: architecture '%.*s' is not supported (llama, mistral, "
                          "qwen2, qwen3)",
                          g->path, qc_gguf_find(g, "general.architecture")->offset,
                          (int)(n > 64 ? 64 : n), s);
    }
    memcpy(c->arch_name, s, n); /* n <= 7 for the names accepted above */
    c->arch_name[n] = 0;
    const char *a = c->arch_name;
    if (get_req_int(g, a, "block_count", &c->n_layers, err) ||
        get_req_int(g, a, "embedding_length", &c->dim, err) ||
        get_req_int(g, a, "feed_forward_length", &c->ffn_dim, err) ||
        get_req_int(g, a, "attention.head_count", &c->n_heads, err))
        return -1;
    if (c->n_heads <= 0 || c->dim <= 0)
        return qc_err_set(err, "%s: %d heads / hidden size %d must be positive", g->path,
                          c->n_heads, c->dim);
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    c->rope_theta = 10000.0f;
    c->norm_eps = 0.0f;
    c->max_pos = 0;
    if (get_opt_int(g, a, "attention.head_count_kv", &c->n_kv_heads, err) ||
        get_opt_int(g, a, "attention.key_length", &c->head_dim, err) ||
        get_opt_int(g, a, "context_length", &c->max_pos, err) ||
        get_opt_f32(g, a, "rope.freq_base", &c->rope_theta, err) ||
        get_opt_f32(g, a, "attention.layer_norm_rms_epsilon", &c->norm_eps, err))
        return -1;
    if (!(c->norm_eps > 0.0f))
        return qc_err_set(err, "%s: missing or non-positive '%s.attention.layer_norm_rms_epsilon'",
                          g->path, a);
    if (c->head_dim <= 0 || c->head_dim > 4096)
        return qc_err_set(err, "%s: head dimension %d is implausible", g->path, c->head_dim);

    /* Vocabulary size: explicit key, else the token list, else token_embd's rows. */
    c->vocab = 0;
    if (get_opt_int(g, a, "vocab_size", &c->vocab, err)) return -1;
    const qc_gguf_kv *toks = qc_gguf_find(g, "tokenizer.ggml.tokens");
    const qc_gguf_tensor *emb = qc_gguf_find_tensor(g, "token_embd.weight");
    if (c->vocab == 0 && toks && toks->type == QC_GGUF_ARRAY && toks->arr_n <= INT32_MAX)
        c->vocab = (int)toks->arr_n;
    if (c->vocab == 0 && emb && emb->ne[1] <= INT32_MAX) c->vocab = (int)emb->ne[1];
    c->tied_embeddings = qc_gguf_find_tensor(g, "output.weight") == NULL;
    return read_rope_scaling(m, g, a, err);
}

/* Maps a llama.cpp tensor name to its Hugging Face name; 0 when unknown. */
static int hf_name(const char *gg, int n_layers, char *out, size_t cap, int *is_q, int *is_k) {
    static const char *const top[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
    };
    static const char *const blk[][2] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.bias", "self_attn.o_proj.bias"},
        {"attn_q_norm.weight", "self_attn.q_norm.weight"},
        {"attn_k_norm.weight", "self_attn.k_norm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    *is_q = *is_k = 0;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(gg, top[i][0]) == 0) return snprintf(out, cap, "%s", top[i][1]), 1;
    if (strncmp(gg, "blk.", 4) != 0 || !isdigit((unsigned char)gg[4])) return 0;
    const char *p = gg + 4;
    long layer = 0;
    while (isdigit((unsigned char)*p) && layer <= n_layers)
        layer = layer * 10 + (*p++ - '0');
    if (*p != '.' || layer >= n_layers || (p - gg > 5 && gg[4] == '0')) return 0;
    p++;
    for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++)
        if (strcmp(p, blk[i][0]) == 0) {
            *is_q = i == 2;
            *is_k = i == 3;
            snprintf(out, cap, "model.layers.%ld.%s", layer, blk[i][1]);
            return 1;
        }
    return 0;
}

static int add_tensors(qc_model *m, const qc_gguf *g, qc_err *err) {
    int permuted = m->cfg.arch == QC_ARCH_LLAMA || m->cfg.arch == QC_ARCH_MISTRAL;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const qc_gguf_tensor *gt = &g->tensors[i];
        char name[160];
        int is_q, is_k;
        if (!hf_name(gt->name, m->cfg.n_layers, name, sizeof name, &is_q, &is_k))
            continue; /* e.g. rope_freqs.weight: read into the config, not a model tensor */
        if (gt->ne[2] != 1 || gt->ne[3] != 1)
            return qc_err_set(err, "%s: byte %zu: tensor '%s' has %d dimensions, expected 1 or 2",
                              g->path, gt->info_offset, gt->name, gt->n_dims);
        qc_tensor t = {0};
        t.dtype = gt->dtype;
        t.data = gt->data;
        t.nbytes = gt->nbytes;
        if (gt->n_dims == 1) {
            t.n_dims = 1;
            t.shape[0] = gt->ne[0];
            t.shape[1] = 1;
        } else {
            t.n_dims = 2;
            t.shape[0] = gt->ne[1]; /* ggml ne[0] is the input (column) dimension */
            t.shape[1] = gt->ne[0];
        }
        /* llama.cpp's converter reorders q/k rows for its interleaved RoPE. */
        if (permuted && is_q) t.unpermute_heads = m->cfg.n_heads;
        if (permuted && is_k) t.unpermute_heads = m->cfg.n_kv_heads;
        if (!(t.name = strdup(name))) return qc_err_set(err, "out of memory");
        if (qc_model_add_tensor(m, &t, err)) return -1;
    }
    return 0;
}

/* Reads an optional token id; ids outside the vocabulary are errors. */
static int token_id(const qc_gguf *g, const char *key, int n_tokens, int *out, qc_err *err) {
    int64_t v;
    int rc = qc_gguf_get_int(g, key, &v, err);
    if (rc < 0) return -1;
    if (rc == 1) return 0;
    if (v < 0 || v >= n_tokens)
        return qc_err_set(err, "%s: byte %zu: '%s' = %lld is outside the vocabulary of %d", g->path,
                          qc_gguf_find(g, key)->offset, key, (long long)v, n_tokens);
    *out = (int)v;
    return 0;
}

typedef struct vocab_bufs {
    const char **tokens;
    size_t *token_lens;
    float *scores;
    int32_t *types;
    const char **merge_ptrs;
    size_t *merge_lens;
    char **merges; /* NUL-terminated copies (the desc wants C strings) */
    size_t n_merges;
    char *pre;
} vocab_bufs;

static void vocab_bufs_free(vocab_bufs *b) {
    free(b->tokens);
    free(b->token_lens);
    free(b->scores);
    free(b->types);
    if (b->merges)
        for (size_t i = 0; i < b->n_merges; i++)
            free(b->merges[i]);
    free(b->merges);
    free(b->merge_ptrs);
    free(b->merge_lens);
    free(b->pre);
}

static char *dup_checked(const qc_gguf *g, const char *key, const char *s, size_t n, qc_err *err) {
    if (memchr(s, 0, n)) {
        qc_err_set(err, "%s: '%s' holds a string with a NUL byte", g->path, key);
        return NULL;
    }
    char *p = qc_malloc(n + 1, err);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static int fill_vocab(qc_vocab_desc *d, vocab_bufs *b, const qc_gguf *g, qc_err *err) {
    size_t n = 0, ns = 0, nt = 0;
    int rc = qc_gguf_get_str_array(g, "tokenizer.ggml.tokens", &b->tokens, &b->token_lens, &n, err);
    if (rc < 0) return -1;
    if (rc == 1)
        return qc_err_set(err, "%s: missing metadata key 'tokenizer.ggml.tokens'", g->path);
    if (n == 0 || n > INT32_MAX)
        return qc_err_set(err, "%s: token list has %zu entries", g->path, n);
    d->n_tokens = (int)n;
    d->tokens = b->tokens;
    d->token_lens = b->token_lens;
    if ((rc = qc_gguf_get_f32_array(g, "tokenizer.ggml.scores", &b->scores, &ns, err)) < 0)
        return -1;
    if (rc == 0 && ns != n)
        return qc_err_set(err, "%s: %zu token scores for %zu tokens", g->path, ns, n);
    if ((rc = qc_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &b->types, &nt, err)) < 0)
        return -1;
    if (rc == 0 && nt != n)
        return qc_err_set(err, "%s: %zu token types for %zu tokens", g->path, nt, n);
    d->scores = b->scores;
    d->types = b->types;
    rc = qc_gguf_get_str_array(g, "tokenizer.ggml.merges", &b->merge_ptrs, &b->merge_lens,
                               &b->n_merges, err);
    if (rc < 0) return -1;
    if (rc == 0) {
        if (b->n_merges > INT32_MAX) return qc_err_set(err, "%s: too many merges", g->path);
        if (!(b->merges = qc_calloc(b->n_merges, sizeof *b->merges, err))) return -1;
        for (size_t i = 0; i < b->n_merges; i++)
            if (!(b->merges[i] = dup_checked(g, "tokenizer.ggml.merges", b->merge_ptrs[i],
                                             b->merge_lens[i], err)))
                return -1;
        d->n_merges = (int)b->n_merges;
        d->merges = (const char *const *)b->merges;
    }
    const char *s;
    size_t len;
    if ((rc = qc_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len, err)) < 0) return -1;
    if (rc == 0 && !(b->pre = dup_checked(g, "tokenizer.ggml.pre", s, len, err))) return -1;
    d->pre = b->pre;
    d->bos_id = d->eos_id = d->unk_id = d->pad_id = -1;
    if (token_id(g, "tokenizer.ggml.bos_token_id", d->n_tokens, &d->bos_id, err) ||
        token_id(g, "tokenizer.ggml.eos_token_id", d->n_tokens, &d->eos_id, err) ||
        token_id(g, "tokenizer.ggml.unknown_token_id", d->n_tokens, &d->unk_id, err) ||
        token_id(g, "tokenizer.ggml.padding_token_id", d->n_tokens, &d->pad_id, err))
        return -1;
    /* llama.cpp's defaults: SPM vocabularies add BOS and a leading space. */
    d->add_bos = d->add_space_prefix = d->kind == QC_TOK_SPM;
    if (qc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &d->add_bos, err) < 0 ||
        qc_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &d->add_space_prefix, err) < 0)
        return -1;
    return 0;
}

static int load_tokenizer(qc_model *m, const qc_gguf *g, qc_err *err) {
    const char *s;
    size_t n;
    int rc = qc_gguf_get_str(g, "tokenizer.ggml.model", &s, &n, err);
    if (rc < 0) return -1;
    if (rc == 1) return 0; /* no tokenizer in the file */
    qc_vocab_desc d = {0};
    if (str_is(s, n, "gpt2"))
        d.kind = QC_TOK_BPE;
    else if (str_is(s, n, "llama"))
        d.kind = QC_TOK_SPM;
    else
        return qc_err_set(err, "%s: tokenizer model '%.*s' is not supported (gpt2, llama)", g->path,
                          (int)(n > 64 ? 64 : n), s);
    vocab_bufs b = {0};
    rc = fill_vocab(&d, &b, g, err);
    if (rc == 0) {
        m->tok = qc_tokenizer_new(&d, err);
        if (!m->tok) rc = qc_err_prefix(err, "%s", g->path);
    }
    if (rc == 0) {
        m->cfg.bos_id = d.bos_id;
        m->cfg.eos_id = d.eos_id;
    }
    vocab_bufs_free(&b);
    return rc;
}

int qc_gguf_load_tokenizer_mem(qc_model *m, const uint8_t *data, size_t size, const char *name,
                               qc_err *err) {
    qc_gguf *g = qc_gguf_parse(data, size, name, err);
    if (!g) return -1;
    int rc = load_tokenizer(m, g, err);
    if (rc == 0 && !m->tok) rc = qc_err_set(err, "%s: no tokenizer in the file", name);
    qc_gguf_free(g);
    return rc;
}

/* A key/value runs from its key to the next entry: the next key, the first
 * tensor info, or the end of the file. */
static size_t kv_end(const qc_gguf *g, int64_t i) {
    return i + 1 < g->n_kv ? g->kvs[i + 1].key_offset
           : g->n_tensors  ? g->tensors[0].info_offset
                           : g->size;
}

/* The tokenizer.* key/values are copied byte for byte. */
int qc_gguf_tokenizer_extract(const char *path, uint8_t **out, size_t *len, qc_err *err) {
    qc_gguf *g = qc_gguf_open(path, err);
    if (!g) return -1;
    uint64_t n = 0;
    size_t total = 24;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (strncmp(g->kvs[i].key, "tokenizer.", 10)) continue;
        total += kv_end(g, i) - g->kvs[i].key_offset;
        n++;
    }
    uint8_t *buf = qc_malloc(total, err);
    if (!buf) {
        qc_gguf_free(g);
        return -1;
    }
    /* Header: magic, the source's version, 0 tensors, n key/values. */
    memcpy(buf, "GGUF", 4);
    for (int i = 0; i < 4; i++)
        buf[4 + i] = (uint8_t)(g->version >> (8 * i));
    for (int i = 0; i < 8; i++)
        buf[8 + i] = 0, buf[16 + i] = (uint8_t)(n >> (8 * i));
    size_t at = 24;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (strncmp(g->kvs[i].key, "tokenizer.", 10)) continue;
        size_t start = g->kvs[i].key_offset;
        size_t end = kv_end(g, i);
        memcpy(buf + at, g->data + start, end - start);
        at += end - start;
    }
    qc_gguf_free(g);
    *out = buf;
    *len = total;
    return 0;
}

int qc_gguf_load_model(qc_model *m, const char *path, int with_tokenizer, qc_err *err) {
    qc_gguf *g = qc_gguf_open(path, err);
    if (!g) return -1;
    /* The model keeps the mapping: its tensors point into it. */
    if (qc_model_add_file(m, qc_gguf_take_file(g), err)) {
        qc_gguf_free(g);
        return -1;
    }
    int rc = read_config(m, g, err);
    if (rc == 0) rc = add_tensors(m, g, err);
    if (rc == 0 && with_tokenizer) rc = load_tokenizer(m, g, err);
    qc_gguf_free(g);
    return rc;
}

int qc_gguf_load(qc_model *m, const char *path, qc_err *err) {
    return qc_gguf_load_model(m, path, 1, err);
}
