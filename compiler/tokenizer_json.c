/* Hugging Face tokenizer.json loading: a BPE model (vocab + merges), its
 * pre-tokenizer (ByteLevel, Split, Digits and Sequences of them), added
 * tokens, and BOS from the post-processor or tokenizer_config.json. Pieces we
 * do not implement are errors that name them, never silently ignored. */
#include "mapfile.h"
#include "limits.h"
#include "tokenizer_impl.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PRE_STEPS 32

typedef struct jctx {
    const char *name; /* file name for messages */
    qc_pre_step steps[MAX_PRE_STEPS];
    int n_steps;
    int byte_level;
    qc_err *err;
} jctx;

static int jerr(jctx *c, const char *where, const char *what) {
    return qc_err_set(c->err, "%s: %s: %s", c->name, where, what);
}

static int get_bool(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_pre(jctx *c, json_t *p, int depth) {
    if (json_is_null(p) || !p) return 0;
    if (!json_is_object(p) || depth > 8) return jerr(c, "pre_tokenizer", "expected an object");
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type) return jerr(c, "pre_tokenizer", "missing \"type\"");
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr)) return jerr(c, "pre_tokenizer.pretokenizers", "expected an array");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) if (parse_pre(c, e, depth + 1)) return -1;
        return 0;
    }
    if (c->n_steps == MAX_PRE_STEPS) return jerr(c, "pre_tokenizer", "too many steps");
    qc_pre_step *s = &c->steps[c->n_steps];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "ByteLevel")) {
        s->kind = QC_PRE_BYTELEVEL;
        s->add_prefix_space = get_bool(p, "add_prefix_space", 1);
        s->use_regex = get_bool(p, "use_regex", 1);
        c->byte_level = 1;
    } else if (!strcmp(type, "Digits")) {
        s->kind = QC_PRE_SPLIT;
        s->regex = get_bool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+";
        s->behavior = QC_SPLIT_ISOLATED;
    } else if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (!re && !lit)
            return jerr(c, "pre_tokenizer Split", "pattern needs a \"Regex\" or \"String\"");
        s->kind = QC_PRE_SPLIT;
        s->regex = re ? re : lit;
        s->literal = !re;
        s->invert = get_bool(p, "invert", 0);
        const char *b = json_string_value(json_object_get(p, "behavior"));
        if (!b) return jerr(c, "pre_tokenizer Split", "missing \"behavior\"");
        if (!strcmp(b, "Isolated"))
            s->behavior = QC_SPLIT_ISOLATED;
        else if (!strcmp(b, "Removed"))
            s->behavior = QC_SPLIT_REMOVED;
        else if (!strcmp(b, "MergedWithPrevious"))
            s->behavior = QC_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext"))
            s->behavior = QC_SPLIT_MERGED_NEXT;
        else
            return qc_err_set(c->err, "%s: pre_tokenizer Split: behavior '%s' is not supported",
                              c->name, b);
    } else {
        return qc_err_set(c->err, "%s: pre_tokenizer type '%s' is not supported", c->name, type);
    }
    c->n_steps++;
    return 0;
}

/* The first token of a TemplateProcessing "single" template becomes BOS when
 * it is a special token; a special token after the sequence is not
 * supported (our API only prepends). */
static int parse_post(jctx *c, json_t *p, int *bos, int depth) {
    if (!p || json_is_null(p)) return 0;
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type || depth > 4) return jerr(c, "post_processor", "missing \"type\"");
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "processors"), *e;
        size_t i;
        json_array_foreach(arr, i, e) if (parse_post(c, e, bos, depth + 1)) return -1;
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return qc_err_set(c->err, "%s: post_processor type '%s' is not supported", c->name, type);
    json_t *single = json_object_get(p, "single"), *e;
    if (!json_is_array(single)) return jerr(c, "post_processor.single", "expected an array");
    size_t i, n = json_array_size(single);
    json_array_foreach(single, i, e) {
        json_t *sp = json_object_get(e, "SpecialToken");
        if (!sp) continue;
        const char *name = json_string_value(json_object_get(sp, "id"));
        json_t *ids = json_object_get(
            json_object_get(json_object_get(p, "special_tokens"), name ? name : ""), "ids");
        json_t *id = json_array_get(ids, 0);
        if (i != 0 || n < 2 || !json_is_integer(id) || json_array_size(ids) != 1)
            return jerr(c, "post_processor",
                        "only a single special token before the sequence is supported");
        json_int_t v = json_integer_value(id);
        if (v < 0 || (uint64_t)v > qc_limit(QC_LIMIT_VOCAB))
            return jerr(c, "post_processor", "special token id out of range");
        *bos = (int)v;
    }
    return 0;
}

static json_t *load_json(const char *data, size_t len, const char *name, qc_err *err) {
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        qc_err_set(err, "%s:%d:%d: %s", name, je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        qc_err_set(err, "%s:1:1: expected a JSON object", name);
        return NULL;
    }
    return root;
}

static int token_id(json_t *vocab, json_t *v, int *out) {
    const char *s = json_is_string(v)   ? json_string_value(v)
                    : json_is_object(v) ? json_string_value(json_object_get(v, "content"))
                                        : NULL;
    json_t *id = s ? json_object_get(vocab, s) : NULL;
    if (!json_is_integer(id)) return -1;
    *out = (int)json_integer_value(id);
    return 0;
}

typedef struct built {
    const char **tokens;
    size_t *lens;
    const char **merges;
    qc_added_token *added;
} built;

static void built_free(built *b) {
    free(b->tokens), free(b->lens), free(b->merges), free(b->added);
}

/* Reads model.vocab into tokens[id]; n_tokens covers the added tokens too. */
static int read_vocab(jctx *c, json_t *model, json_t *added, int *n_tokens, built *b) {
    json_t *vocab = json_object_get(model, "vocab"), *v, *e;
    if (!json_is_object(vocab)) return jerr(c, "model.vocab", "expected an object");
    const char *key;
    size_t i;
    long long max_id = -1;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (uint64_t)json_integer_value(v) >= qc_limit(QC_LIMIT_VOCAB))
            return qc_err_set(c->err, "%s: model.vocab: token '%.60s': bad id (ids are limited "
                                      "to %llu: %s raises it)",
                              c->name, key, (unsigned long long)qc_limit(QC_LIMIT_VOCAB),
                              qc_limit_env(QC_LIMIT_VOCAB));
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    json_array_foreach(added, i, e) {
        json_t *id = json_object_get(e, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            (uint64_t)json_integer_value(id) >= qc_limit(QC_LIMIT_VOCAB))
            return qc_err_set(c->err, "%s: added_tokens[%zu]: bad id", c->name, i);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) return jerr(c, "model.vocab", "empty vocabulary");
    *n_tokens = (int)max_id + 1;
    b->tokens = calloc((size_t)*n_tokens, sizeof *b->tokens);
    b->lens = calloc((size_t)*n_tokens, sizeof *b->lens);
    if (!b->tokens || !b->lens) return qc_err_set(c->err, "out of memory");
    json_object_foreach(vocab, key, v) {
        int id = (int)json_integer_value(v);
        b->tokens[id] = key;
        b->lens[id] = strlen(key);
    }
    return 0;
}

static int read_merges(jctx *c, json_t *model, int *n_merges, int *pairs, built *b) {
    json_t *merges = json_object_get(model, "merges"), *e;
    if (!merges || json_is_null(merges)) return 0;
    if (!json_is_array(merges)) return jerr(c, "model.merges", "expected an array");
    size_t n = json_array_size(merges), i;
    if (n > qc_limit(QC_LIMIT_VOCAB))
        return jerr(c, "model.merges", "too many merges (QUANTC_MAX_VOCAB raises the limit)");
    *pairs = n > 0 && json_is_array(json_array_get(merges, 0));
    b->merges = calloc(n * (*pairs ? 2 : 1) + 1, sizeof *b->merges);
    if (!b->merges) return qc_err_set(c->err, "out of memory");
    json_array_foreach(merges, i, e) {
        if (*pairs) {
            const char *l = json_string_value(json_array_get(e, 0));
            const char *r = json_string_value(json_array_get(e, 1));
            if (!json_is_array(e) || json_array_size(e) != 2 || !l || !r)
                return qc_err_set(c->err, "%s: model.merges[%zu]: expected [left, right]", c->name,
                                  i);
            b->merges[2 * i] = l, b->merges[2 * i + 1] = r;
        } else {
            if (!json_is_string(e))
                return qc_err_set(c->err, "%s: model.merges[%zu]: expected \"left right\"", c->name,
                                  i);
            b->merges[i] = json_string_value(e);
        }
    }
    *n_merges = (int)n;
    return 0;
}

static int read_added(jctx *c, json_t *added, int *n_added, built *b) {
    json_t *e;
    size_t i, n = json_array_size(added);
    b->added = calloc(n + 1, sizeof *b->added);
    if (!b->added) return qc_err_set(c->err, "out of memory");
    json_array_foreach(added, i, e) {
        json_t *content = json_object_get(e, "content");
        if (!json_is_string(content))
            return qc_err_set(c->err, "%s: added_tokens[%zu]: missing \"content\"", c->name, i);
        static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (int k = 0; k < 3; k++)
            if (get_bool(e, unsupported[k], 0))
                return qc_err_set(c->err, "%s: added token '%.60s': %s is not supported", c->name,
                                  json_string_value(content), unsupported[k]);
        qc_added_token *a = &b->added[(*n_added)++];
        a->id = (int)json_integer_value(json_object_get(e, "id"));
        a->content = json_string_value(content);
        a->len = json_string_length(content);
        a->special = get_bool(e, "special", 0);
    }
    return 0;
}

static int check_model(jctx *c, json_t *model, int *byte_fallback, int *ignore_merges) {
    if (!json_is_object(model)) return jerr(c, "model", "expected an object");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE"))
        return qc_err_set(c->err, "%s: model type '%s' is not supported (only BPE)", c->name, type);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const char *v = json_string_value(json_object_get(model, affixes[k]));
        if (v && v[0])
            return qc_err_set(c->err, "%s: model.%s is not supported", c->name, affixes[k]);
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return jerr(c, "model.dropout", "BPE dropout is not supported");
    *byte_fallback = get_bool(model, "byte_fallback", 0);
    *ignore_merges = get_bool(model, "ignore_merges", 0);
    return 0;
}

static qc_tokenizer *from_root(json_t *root, json_t *config, const char *name, qc_err *err) {
    jctx c;
    memset(&c, 0, sizeof c);
    c.name = name, c.err = err;
    built b;
    memset(&b, 0, sizeof b);
    qc_tok_spec s;
    memset(&s, 0, sizeof s);
    qc_tokenizer *t = NULL;
    json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    json_t *norm = json_object_get(root, "normalizer");
    if (added && !json_is_array(added) && !json_is_null(added)) {
        jerr(&c, "added_tokens", "expected an array");
        goto done;
    }
    if (norm && !json_is_null(norm)) {
        const char *ty = json_string_value(json_object_get(norm, "type"));
        qc_err_set(err, "%s: normalizer '%s' is not supported", name, ty ? ty : "?");
        goto done;
    }
    int pairs = 0;
    if (check_model(&c, model, &s.byte_fallback, &s.ignore_merges) ||
        read_vocab(&c, model, added, &s.v.n_tokens, &b) ||
        read_merges(&c, model, &s.v.n_merges, &pairs, &b) ||
        read_added(&c, added, &s.n_added, &b) ||
        parse_pre(&c, json_object_get(root, "pre_tokenizer"), 0))
        goto done;
    for (size_t i = 0; i < (size_t)s.n_added; i++) {
        b.tokens[b.added[i].id] = b.added[i].content;
        b.lens[b.added[i].id] = b.added[i].len;
    }
    const char *dec = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
    s.byte_level = c.byte_level || (dec && !strcmp(dec, "ByteLevel"));
    s.v.kind = QC_TOK_BPE;
    s.v.tokens = b.tokens;
    s.v.token_lens = b.lens;
    if (pairs)
        s.merge_pairs = b.merges;
    else
        s.v.merges = b.merges;
    s.v.bos_id = s.v.eos_id = s.v.pad_id = -1;
    s.v.unk_id = -1;
    json_t *vocab = json_object_get(model, "vocab");
    token_id(vocab, json_object_get(model, "unk_token"), &s.v.unk_id);
    if (parse_post(&c, json_object_get(root, "post_processor"), &s.v.bos_id, 0)) goto done;
    s.v.add_bos = s.v.bos_id >= 0;
    if (config) {
        /* tokenizer_config.json: its add_bos_token and bos/eos names win. */
        token_id(vocab, json_object_get(config, "bos_token"), &s.v.bos_id);
        token_id(vocab, json_object_get(config, "eos_token"), &s.v.eos_id);
        for (int i = 0; i < s.n_added; i++) {
            const char *bs = json_string_value(json_object_get(config, "bos_token"));
            const char *es = json_string_value(json_object_get(config, "eos_token"));
            if (bs && !strcmp(bs, b.added[i].content)) s.v.bos_id = b.added[i].id;
            if (es && !strcmp(es, b.added[i].content)) s.v.eos_id = b.added[i].id;
        }
        s.v.add_bos = get_bool(config, "add_bos_token", s.v.add_bos);
    }
    s.added = b.added;
    s.n_pre = c.n_steps;
    s.pre = c.steps;
    t = qc_tokenizer_build(&s, err);
    if (!t) qc_err_prefix(err, "%s", name);
done:
    built_free(&b);
    return t;
}

qc_tokenizer *qc_tokenizer_from_json_buffer(const char *data, size_t len, const char *name,
                                            qc_err *err) {
    return qc_tokenizer_from_json_buffers(data, len, NULL, 0, NULL, name, err);
}

qc_tokenizer *qc_tokenizer_from_json_buffers(const char *data, size_t len, const char *config,
                                             size_t config_len, const char *config_name,
                                             const char *name, qc_err *err) {
    json_t *root = load_json(data, len, name, err), *cfg = NULL;
    if (!root) return NULL;
    if (config && !(cfg = load_json(config, config_len, config_name, err))) {
        json_decref(root);
        return NULL;
    }
    qc_tokenizer *t = from_root(root, cfg, name, err);
    json_decref(cfg);
    json_decref(root);
    return t;
}

qc_tokenizer *qc_tokenizer_from_json(const char *path, qc_err *err) {
    size_t len, clen = 0;
    char *data = qc_read_limited(path, QC_LIMIT_JSON_BYTES, &len, err);
    if (!data) return NULL;
    /* tokenizer_config.json beside it, when present */
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    char *cpath = malloc(dir + sizeof "tokenizer_config.json"), *cdata = NULL;
    if (!cpath) {
        free(data);
        qc_err_set(err, "out of memory");
        return NULL;
    }
    memcpy(cpath, path, dir);
    memcpy(cpath + dir, "tokenizer_config.json", sizeof "tokenizer_config.json");
    qc_err cerr;
    cdata = qc_read_file(cpath, 64u << 20, &clen, &cerr);
    qc_tokenizer *t = qc_tokenizer_from_json_buffers(data, len, cdata, clen, cpath, path, err);
    free(cdata);
    free(cpath);
    free(data);
    return t;
}
