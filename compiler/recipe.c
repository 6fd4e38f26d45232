/* Recipe parsing: a libyaml event pre-pass (nesting depth, aliases, one
 * document), then the document API for the tree, validated against tables
 * of qc_param_spec: each pass's own schema, and the same machinery for the
 * calibration, gates and export sections. Marks from libyaml are 0-based;
 * messages use 1-based line:column. */
#include "recipe.h"

#include "limits.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 32 /* recipes nest 4 deep; anything far deeper is not a recipe */

typedef struct ctx {
    const char *name;     /* file name for messages */
    const char *base_dir; /* NULL: paths left as written */
    yaml_document_t *doc;
    qc_err *err;
    int no_range; /* section defaults such as -1 = unset lie outside the written range */
} ctx;

static int line_of(const yaml_node_t *n) {
    return n ? (int)n->start_mark.line + 1 : 0;
}
static int col_of(const yaml_node_t *n) {
    return n ? (int)n->start_mark.column + 1 : 0;
}

/* "NAME:line:col: message" (or "NAME: message" without a node). */
__attribute__((format(printf, 3, 4))) static int fail(ctx *c, const yaml_node_t *n, const char *fmt,
                                                      ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n) return qc_err_set(c->err, "%s:%d:%d: %s", c->name, line_of(n), col_of(n), msg);
    return qc_err_set(c->err, "%s: %s", c->name, msg);
}

static yaml_node_t *node(ctx *c, int id) {
    return yaml_document_get_node(c->doc, id);
}

static char *dup_str(const char *s, size_t n, qc_err *err) {
    char *d = qc_malloc(n + 1, err);
    if (d) {
        if (n) memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* ---- Scalars: YAML 1.2 core-schema resolution of plain scalars; quoted
 * and block scalars are always strings (so "4" is not an int). */

typedef enum { K_NULL, K_BOOL, K_INT, K_FLOAT, K_STR, K_LIST, K_MAP } kind;

static const char *kind_name(kind k) {
    static const char *names[] = {"null", "bool", "int", "float", "string", "list", "map"};
    return names[k];
}

typedef struct scalar {
    kind k;
    const char *text; /* NUL-terminated by libyaml */
    int64_t i;        /* K_INT, K_BOOL */
    double f;         /* K_INT, K_FLOAT */
    int overflow;     /* K_INT past int64 */
} scalar;

static int is_one_of(const char *s, const char *const *words) {
    for (; *words; words++)
        if (strcmp(s, *words) == 0) return 1;
    return 0;
}

static scalar classify(const yaml_node_t *n) {
    scalar v = {0};
    if (n->type == YAML_SEQUENCE_NODE) return v.k = K_LIST, v;
    if (n->type == YAML_MAPPING_NODE) return v.k = K_MAP, v;
    const char *s = (const char *)n->data.scalar.value;
    v.text = s;
    v.k = K_STR;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return v;
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    if (is_one_of(s, nulls)) return v.k = K_NULL, v;
    if (is_one_of(s, trues)) return v.k = K_BOOL, v.i = 1, v;
    if (is_one_of(s, falses)) return v.k = K_BOOL, v.i = 0, v;
    size_t len = strlen(s), digits = strspn(s + (s[0] == '-' || s[0] == '+'), "0123456789");
    if (digits > 0 && digits + (s[0] == '-' || s[0] == '+') == len) {
        errno = 0;
        v.i = strtoll(s, NULL, 10);
        v.overflow = errno == ERANGE;
        v.f = (double)v.i;
        return v.k = K_INT, v;
    }
    static const char *const infs[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninfs[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
    if (is_one_of(s, infs)) return v.k = K_FLOAT, v.f = INFINITY, v;
    if (is_one_of(s, ninfs)) return v.k = K_FLOAT, v.f = -INFINITY, v;
    if (is_one_of(s, nans)) return v.k = K_FLOAT, v.f = NAN, v;
    /* Decimal floats only: strtod alone would also take "inf", "nan", hex. */
    if (strspn(s, "0123456789+-.eE") == len && strpbrk(s, "0123456789")) {
        char *end;
        double f = strtod(s, &end);
        if (*end == 0) return v.k = K_FLOAT, v.f = f, v;
    }
    return v;
}

/* "string \"4\"", "float 4.5", "list", ... for type errors. */
static const char *describe(const yaml_node_t *n, char *buf, size_t size) {
    scalar v = classify(n);
    if (v.k == K_LIST || v.k == K_MAP || v.k == K_NULL) return kind_name(v.k);
    if (v.k == K_STR)
        snprintf(buf, size, "string \"%.40s%s\"", v.text, strlen(v.text) > 40 ? "..." : "");
    else
        snprintf(buf, size, "%s %.40s", kind_name(v.k), v.text);
    return buf;
}

/* ---- Suggestions for misspelled names. */

static int edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 63 || nb > 63) return 1 << 20;
    int row[64];
    for (size_t j = 0; j <= nb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[nb];
}

/* Appends " (did you mean 'x'?)" when some candidate is close to s. */
static void suggest(char *buf, size_t size, const char *s, const char *const *cands, int n) {
    int best = -1, best_d = 1 << 20;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(s, cands[i]);
        if (d < best_d) best_d = d, best = i;
    }
    size_t len = strlen(s);
    int limit = len < 6 ? 2 : (int)(len / 3) + 1;
    if (best >= 0 && best_d <= limit)
        snprintf(buf, size, " (did you mean '%s'?)", cands[best]);
    else
        buf[0] = 0;
}

static void join(char *buf, size_t size, const char *const *words, int n) {
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < n && at < size; i++) {
        int w = snprintf(buf + at, size - at, "%s%s", i ? ", " : "", words[i]);
        if (w < 0) break;
        at += (size_t)w;
    }
}

/* ---- Mappings: keys are strings, unique. */

static int check_map(ctx *c, yaml_node_t *map, const char *what) {
    if (map->type != YAML_MAPPING_NODE) {
        char d[64];
        return fail(c, map, "%s must be a map, got %s", what, describe(map, d, sizeof d));
    }
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
    if (top - start > QC_RECIPE_MAX_LIST)
        return fail(c, map, "%s: more than %d keys", what, QC_RECIPE_MAX_LIST);
    for (yaml_node_pair_t *p = start; p < top; p++) {
        yaml_node_t *k = node(c, p->key);
        if (!k || k->type != YAML_SCALAR_NODE) return fail(c, k, "%s: keys must be strings", what);
        for (yaml_node_pair_t *q = start; q < p; q++) {
            yaml_node_t *k2 = node(c, q->key);
            if (strcmp((char *)k->data.scalar.value, (char *)k2->data.scalar.value) == 0)
                return fail(c, k, "%s: duplicate key '%s' (first at %d:%d)", what,
                            (char *)k->data.scalar.value, line_of(k2), col_of(k2));
        }
    }
    return 0;
}

static const char *key_of(ctx *c, const yaml_node_pair_t *p) {
    return (const char *)node(c, p->key)->data.scalar.value;
}

static int list_len(ctx *c, yaml_node_t *n, const char *what, const char *name) {
    if (n->type != YAML_SEQUENCE_NODE) {
        char d[64];
        return fail(c, n, "%s: %s must be a list, got %s", what, name, describe(n, d, sizeof d));
    }
    ptrdiff_t len = n->data.sequence.items.top - n->data.sequence.items.start;
    if (len > QC_RECIPE_MAX_LIST)
        return fail(c, n, "%s: %s has more than %d items", what, name, QC_RECIPE_MAX_LIST);
    return (int)len;
}

/* ---- Parameter values against a spec. */

static int range_check(ctx *c, yaml_node_t *n, const char *what, const qc_param_spec *s, double x,
                       const char *text) {
    if (c->no_range || s->min > s->max || (x >= s->min && x <= s->max)) return 0;
    if (s->max >= 1e15)
        return fail(c, n, "%s: %s must be >= %.15g, got %s", what, s->name, s->min, text);
    return fail(c, n, "%s: %s must be in [%.15g, %.15g], got %s", what, s->name, s->min, s->max,
                text);
}

static int parse_int(ctx *c, yaml_node_t *n, const char *what, const qc_param_spec *s,
                     int64_t *out) {
    scalar v = classify(n);
    char d[64];
    if (v.k != K_INT)
        return fail(c, n, "%s: %s must be an int, got %s", what, s->name, describe(n, d, sizeof d));
    if (v.overflow) return fail(c, n, "%s: %s: integer %s out of range", what, s->name, v.text);
    *out = v.i;
    return range_check(c, n, what, s, v.f, v.text);
}

static int parse_value(ctx *c, yaml_node_t *n, const char *what, const qc_param_spec *s,
                       qc_param_value *out) {
    char d[64];
    scalar v = classify(n);
    out->spec = s;
    switch (s->type) {
    case QC_PARAM_INT:
        return parse_int(c, n, what, s, &out->i);
    case QC_PARAM_FLOAT:
        if (v.k != K_INT && v.k != K_FLOAT)
            return fail(c, n, "%s: %s must be a number, got %s", what, s->name,
                        describe(n, d, sizeof d));
        if (!isfinite(v.f))
            return fail(c, n, "%s: %s must be finite, got %s", what, s->name, v.text);
        out->f = v.f;
        return range_check(c, n, what, s, v.f, v.text);
    case QC_PARAM_BOOL:
        if (v.k != K_BOOL)
            return fail(c, n, "%s: %s must be true or false, got %s", what, s->name,
                        describe(n, d, sizeof d));
        out->i = v.i;
        return 0;
    case QC_PARAM_STRING:
        /* Any scalar reads as its text: for enums the "one of" message below
         * says more than a type error would. */
        if (v.k == K_LIST || v.k == K_MAP || v.k == K_NULL)
            return fail(c, n, "%s: %s must be a string, got %s", what, s->name, kind_name(v.k));
        if (s->enum_values && !is_one_of(v.text, s->enum_values)) {
            char list[256];
            int ne = 0;
            while (s->enum_values[ne])
                ne++;
            join(list, sizeof list, s->enum_values, ne);
            return fail(c, n, "%s: %s must be one of %s, got '%.40s'", what, s->name, list, v.text);
        }
        out->s = dup_str(v.text, strlen(v.text), c->err);
        return out->s ? 0 : -1;
    case QC_PARAM_INT_LIST:
    case QC_PARAM_STRING_LIST: {
        int len = list_len(c, n, what, s->name);
        if (len < 0) return -1;
        int is_int = s->type == QC_PARAM_INT_LIST;
        if (is_int)
            out->ilist = qc_calloc((size_t)len, sizeof *out->ilist, c->err);
        else
            out->slist = qc_calloc((size_t)len, sizeof *out->slist, c->err);
        if (is_int ? !out->ilist : !out->slist) return -1;
        out->n = len;
        for (int i = 0; i < len; i++) {
            yaml_node_t *item = node(c, n->data.sequence.items.start[i]);
            if (is_int) {
                if (parse_int(c, item, what, s, &out->ilist[i]) < 0) return -1;
                continue;
            }
            scalar iv = classify(item);
            if (iv.k == K_LIST || iv.k == K_MAP || iv.k == K_NULL)
                return fail(c, item, "%s: items of %s must be strings, got %s", what, s->name,
                            kind_name(iv.k));
            if (!(out->slist[i] = dup_str(iv.text, strlen(iv.text), c->err))) return -1;
        }
        return 0;
    }
    }
    return fail(c, n, "%s: %s: unknown parameter type", what, s->name);
}

static void value_free(qc_param_value *v) {
    free(v->s);
    free(v->ilist);
    if (v->slist)
        for (int i = 0; i < v->n; i++)
            free(v->slist[i]);
    free(v->slist);
}

void qc_params_free(qc_params *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++)
        value_free(&p->v[i]);
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

/* A default is YAML text parsed by the same value parser; an unparsable one
 * is a bug in the schema, reported as such. */
static int parse_default(const char *what, const qc_param_spec *s, qc_param_value *out,
                         int check_range, qc_err *err) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return qc_err_set(err, "out of memory (yaml parser)");
    yaml_parser_set_input_string(&parser, (const unsigned char *)s->def, strlen(s->def));
    int ok = yaml_parser_load(&parser, &doc);
    yaml_parser_delete(&parser);
    if (!ok) return qc_err_set(err, "%s: default of %s ('%s') is not YAML", what, s->name, s->def);
    char name[160];
    snprintf(name, sizeof name, "%s: default of %s", what, s->name);
    ctx c = {name, NULL, &doc, err, !check_range};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = root ? parse_value(&c, root, what, s, out)
                  : qc_err_set(err, "%s: default of %s is empty", what, s->name);
    yaml_document_delete(&doc);
    out->line = out->col = 0;
    return rc;
}

static int spec_count(const qc_param_spec *specs) {
    int n = 0;
    while (specs && specs[n].name)
        n++;
    return n;
}

/* Where the common pass keys were written (NULL when absent). */
typedef struct glob_nodes {
    yaml_node_t *targets, *ignore;
} glob_nodes;

/* Parses map (NULL: everything defaulted) against specs into out. what
 * prefixes messages ("quantize", "calibration"); at is where a missing
 * required key is reported; globs (NULL for sections) collects the common
 * pass keys targets/ignore. */
static int parse_params(ctx *c, yaml_node_t *map, yaml_node_t *at, const char *what,
                        const qc_param_spec *specs, glob_nodes *globs, qc_params *out) {
    int n = spec_count(specs);
    out->n = 0;
    out->v = qc_calloc((size_t)n, sizeof *out->v, c->err);
    if (!out->v) return -1;
    out->n = n;
    for (int i = 0; i < n; i++)
        out->v[i].spec = &specs[i];
    if (map && classify(map).k == K_NULL) map = NULL;
    if (map && check_map(c, map, what) < 0) return -1;
    char *given = calloc((size_t)n + 1, 1);
    if (!given) return qc_err_set(c->err, "out of memory");
    int rc = 0;
    for (yaml_node_pair_t *p = map ? map->data.mapping.pairs.start : NULL;
         map && p < map->data.mapping.pairs.top && rc == 0; p++) {
        const char *key = key_of(c, p);
        yaml_node_t *val = node(c, p->value);
        int i = 0;
        while (i < n && strcmp(specs[i].name, key) != 0)
            i++;
        if (i < n) {
            rc = parse_value(c, val, what, &specs[i], &out->v[i]);
            out->v[i].line = line_of(val);
            out->v[i].col = col_of(val);
            given[i] = 1;
        } else if (globs && strcmp(key, "targets") == 0) {
            globs->targets = val;
        } else if (globs && strcmp(key, "ignore") == 0) {
            globs->ignore = val;
        } else {
            const char *names[64];
            int nn = 0;
            for (int j = 0; j < n && nn < 62; j++)
                names[nn++] = specs[j].name;
            if (globs) names[nn++] = "targets", names[nn++] = "ignore";
            char hint[128], list[600];
            suggest(hint, sizeof hint, key, names, nn);
            join(list, sizeof list, names, nn);
            rc = fail(c, node(c, p->key), "%s: unknown %s '%.60s'%s; valid: %s", what,
                      globs ? "parameter" : "key", key, hint, list);
        }
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (given[i]) continue;
        if (!specs[i].def)
            rc = fail(c, at, "%s: missing required %s '%s'", what, globs ? "parameter" : "key",
                      specs[i].name);
        else
            rc = parse_default(what, &specs[i], &out->v[i], 0, c->err);
    }
    free(given);
    return rc;
}

/* ---- Sections. */

static const qc_param_spec calib_specs[] = {
    {"text", QC_PARAM_STRING, NULL, 0, -1, NULL, "calibration text file"},
    {"samples", QC_PARAM_INT, "128", 1, 1 << 20, NULL, "number of samples"},
    {"tokens", QC_PARAM_INT, "512", 2, 1 << 20, NULL, "tokens per sample"},
    {"seed", QC_PARAM_INT, "0", 0, 9007199254740992.0, NULL, "sampling seed"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Thresholds default to -1 (unset); a written value must be >= 0. */
static const qc_param_spec gates_specs[] = {
    {"text", QC_PARAM_STRING, NULL, 0, -1, NULL, "evaluation text file"},
    {"ctx", QC_PARAM_INT, "512", 2, 1 << 20, NULL, "window length in tokens"},
    {"windows", QC_PARAM_INT, "64", 1, 1 << 20, NULL, "windows evaluated"},
    {"max_ppl_increase_pct", QC_PARAM_FLOAT, "-1", 0, 1e300, NULL, "perplexity increase limit"},
    {"max_kl", QC_PARAM_FLOAT, "-1", 0, 1e300, NULL, "mean KL divergence limit"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const char *const compress_values[] = {"none", "zstd", NULL};
static const qc_param_spec artifact_specs[] = {
    {"compress", QC_PARAM_STRING, "none", 0, -1, compress_values, "section compression"},
    {"level", QC_PARAM_INT, "3", 1, 19, NULL, "zstd level"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const char *const export_formats[] = {"gguf", "compressed-tensors", NULL};
static const char *const fallback_values[] = {"none", "dequantize", NULL};
static const qc_param_spec export_specs[] = {
    {"format", QC_PARAM_STRING, NULL, 0, -1, export_formats, "export format"},
    {"path", QC_PARAM_STRING, NULL, 0, -1, NULL, "output path"},
    {"fallback", QC_PARAM_STRING, "none", 0, -1, fallback_values,
     "layers the format cannot express are refused (none) or written as dense F32 weights"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Copies a data path, resolved against base_dir when relative. */
static char *resolve_path(ctx *c, const qc_param_value *v, const char *what) {
    if (!v->s[0]) {
        qc_err_set(c->err, "%s:%d:%d: %s: text must not be empty", c->name, v->line, v->col, what);
        return NULL;
    }
    if (!c->base_dir || v->s[0] == '/') return dup_str(v->s, strlen(v->s), c->err);
    size_t nb = strlen(c->base_dir), ns = strlen(v->s);
    char *p = qc_malloc(nb + ns + 2, c->err);
    if (p)
        snprintf(p, nb + ns + 2, "%s%s%s", c->base_dir, nb && c->base_dir[nb - 1] == '/' ? "" : "/",
                 v->s);
    return p;
}

static int parse_calibration(ctx *c, yaml_node_t *key, yaml_node_t *val, qc_recipe *r) {
    qc_params p = {0};
    int rc = parse_params(c, val, key, "calibration", calib_specs, NULL, &p);
    if (rc == 0) {
        const qc_param_value *t = qc_params_get(&p, "text"), *s = qc_params_get(&p, "samples"),
                             *k = qc_params_get(&p, "tokens"), *e = qc_params_get(&p, "seed");
        r->calib.samples = (int)s->i;
        r->calib.tokens = (int)k->i;
        r->calib.seed = (uint64_t)e->i;
        r->calib.line = line_of(key), r->calib.col = col_of(key);
        r->calib.text_line = t->line, r->calib.text_col = t->col;
        r->calib.samples_line = s->line, r->calib.samples_col = s->col;
        r->calib.tokens_line = k->line, r->calib.tokens_col = k->col;
        r->calib.seed_line = e->line, r->calib.seed_col = e->col;
        if (!(r->calib.text = resolve_path(c, t, "calibration"))) rc = -1;
    }
    qc_params_free(&p);
    return rc;
}

static int parse_gates(ctx *c, yaml_node_t *key, yaml_node_t *val, qc_recipe *r) {
    qc_params p = {0};
    int rc = parse_params(c, val, key, "gates", gates_specs, NULL, &p);
    if (rc == 0) {
        r->gates.enabled = 1;
        r->gates.line = line_of(key), r->gates.col = col_of(key);
        r->gates.ctx = (int)qc_params_int(&p, "ctx");
        r->gates.windows = (int)qc_params_int(&p, "windows");
        r->gates.max_ppl_increase_pct = qc_params_float(&p, "max_ppl_increase_pct");
        r->gates.max_kl = qc_params_float(&p, "max_kl");
        if (r->gates.max_ppl_increase_pct < 0 && r->gates.max_kl < 0)
            rc = fail(c, key, "gates: give max_ppl_increase_pct and/or max_kl");
        else if (!(r->gates.text = resolve_path(c, qc_params_get(&p, "text"), "gates")))
            rc = -1;
    }
    qc_params_free(&p);
    return rc;
}

static int parse_artifact(ctx *c, yaml_node_t *key, yaml_node_t *val, qc_recipe *r) {
    qc_params p = {0};
    int rc = parse_params(c, val, key, "artifact", artifact_specs, NULL, &p);
    if (rc == 0) {
        r->artifact.zstd = !strcmp(qc_params_str(&p, "compress"), "zstd");
        r->artifact.level = (int)qc_params_int(&p, "level");
        r->artifact.line = line_of(key), r->artifact.col = col_of(key);
    }
    qc_params_free(&p);
    return rc;
}

static int parse_exports(ctx *c, yaml_node_t *val, qc_recipe *r) {
    if (classify(val).k == K_NULL) return 0;
    int len = list_len(c, val, "recipe", "export");
    if (len < 0) return -1;
    if (!(r->exports = qc_calloc((size_t)len, sizeof *r->exports, c->err))) return -1;
    for (int i = 0; i < len; i++) {
        yaml_node_t *item = node(c, val->data.sequence.items.start[i]);
        qc_params p = {0};
        if (classify(item).k == K_NULL) return fail(c, item, "export: each entry must be a map");
        int rc = parse_params(c, item, item, "export", export_specs, NULL, &p);
        if (rc == 0) {
            qc_recipe_export *e = &r->exports[r->n_exports++];
            e->format = qc_params_get(&p, "format")->s;
            e->path = qc_params_get(&p, "path")->s;
            e->fallback_dequantize = !strcmp(qc_params_str(&p, "fallback"), "dequantize");
            p.v[0].s = p.v[1].s = NULL; /* moved into e */
            e->line = line_of(item), e->col = col_of(item);
        }
        qc_params_free(&p);
        if (rc < 0) return -1;
    }
    return 0;
}

static int parse_string_list(ctx *c, yaml_node_t *val, const char *what, const char *name,
                             qc_recipe_glob **out, int *n_out) {
    int len = list_len(c, val, what, name);
    if (len < 0) return -1;
    if (!(*out = qc_calloc((size_t)len, sizeof **out, c->err))) return -1;
    for (int i = 0; i < len; i++) {
        yaml_node_t *item = node(c, val->data.sequence.items.start[i]);
        scalar v = classify(item);
        if (v.k == K_LIST || v.k == K_MAP || v.k == K_NULL)
            return fail(c, item, "%s: items of %s must be strings, got %s", what, name,
                        kind_name(v.k));
        if (!v.text[0]) return fail(c, item, "%s: empty pattern in %s", what, name);
        qc_recipe_glob *g = &(*out)[(*n_out)++];
        if (!(g->pattern = dup_str(v.text, strlen(v.text), c->err))) return -1;
        g->line = line_of(item), g->col = col_of(item);
    }
    return 0;
}

static int parse_targets(ctx *c, yaml_node_t *val, qc_recipe *r) {
    if (classify(val).k == K_NULL) return 0;
    qc_recipe_glob *g = NULL;
    int n = 0, rc = parse_string_list(c, val, "recipe", "targets", &g, &n);
    if (rc == 0 && n > 0 && !(r->targets = qc_calloc((size_t)n, sizeof *r->targets, c->err)))
        rc = -1;
    for (int i = 0; i < n; i++) {
        if (rc == 0)
            r->targets[r->n_targets++] = g[i].pattern;
        else
            free(g[i].pattern);
    }
    free(g);
    return rc;
}

/* ---- Passes. */

static const qc_pass *find_pass(ctx *c, yaml_node_t *name_node) {
    const char *name = (const char *)name_node->data.scalar.value;
    const qc_pass *pass = qc_pass_find(name);
    if (pass) return pass;
    const char *names[64];
    int n = 0;
    for (int i = 0; i < qc_pass_count() && n < 64; i++)
        names[n++] = qc_pass_at(i)->name;
    char hint[128], list[512];
    suggest(hint, sizeof hint, name, names, n);
    join(list, sizeof list, names, n);
    fail(c, name_node, "unknown pass '%.60s'%s; passes: %s", name, hint, list);
    return NULL;
}

static int parse_pass(ctx *c, yaml_node_t *item, qc_recipe_pass *rp) {
    yaml_node_t *name_node = item, *params = NULL;
    if (item->type == YAML_MAPPING_NODE) {
        ptrdiff_t n = item->data.mapping.pairs.top - item->data.mapping.pairs.start;
        if (n != 1)
            return fail(c, item,
                        "passes: each entry is a one-key map like '- quantize: { bits: 4 }', "
                        "got %td keys",
                        n);
        name_node = node(c, item->data.mapping.pairs.start[0].key);
        params = node(c, item->data.mapping.pairs.start[0].value);
    }
    scalar nv = classify(name_node);
    if (nv.k != K_STR) {
        char d[64];
        return fail(c, name_node, "passes: expected a pass name, got %s",
                    describe(name_node, d, sizeof d));
    }
    if (!(rp->pass = find_pass(c, name_node))) return -1;
    rp->line = line_of(name_node), rp->col = col_of(name_node);
    const char *what = rp->pass->name;
    glob_nodes g = {NULL, NULL};
    if (parse_params(c, params, name_node, what, rp->pass->params, &g, &rp->params) < 0) return -1;
    if (g.targets) {
        if (parse_string_list(c, g.targets, what, "targets", &rp->targets, &rp->n_targets) < 0)
            return -1;
        if (rp->n_targets == 0)
            return fail(c, g.targets, "%s: targets is empty, so the pass would apply to nothing",
                        what);
    } else {
        if (!(rp->targets = qc_calloc(1, sizeof *rp->targets, c->err))) return -1;
        /* Every block linear; lm_head (the largest, most sensitive matrix of
         * small models) only when a recipe names it, as in GPTQ/AWQ tools. */
        if (!(rp->targets[0].pattern = dup_str("model.layers.*", 14, c->err))) return -1;
        rp->n_targets = 1;
    }
    if (g.ignore && classify(g.ignore).k != K_NULL &&
        parse_string_list(c, g.ignore, what, "ignore", &rp->ignore, &rp->n_ignore) < 0)
        return -1;
    return 0;
}

static int parse_passes(ctx *c, yaml_node_t *key, yaml_node_t *val, qc_recipe *r) {
    int len = list_len(c, val, "recipe", "passes");
    if (len < 0) return -1;
    if (len == 0) return fail(c, key, "passes: the list is empty; give at least one pass");
    if (!(r->passes = qc_calloc((size_t)len, sizeof *r->passes, c->err))) return -1;
    for (int i = 0; i < len; i++) {
        /* Counted before parsing so qc_recipe_free releases a half-built entry. */
        r->n_passes++;
        if (parse_pass(c, node(c, val->data.sequence.items.start[i]), &r->passes[i]) < 0) return -1;
    }
    return 0;
}

/* ---- Top level. */

enum {
    KEY_VERSION,
    KEY_CALIB,
    KEY_PASSES,
    KEY_TARGETS,
    KEY_GATES,
    KEY_EXPORT,
    KEY_ARTIFACT,
    N_KEYS
};
static const char *const top_keys[N_KEYS] = {"quantc", "calibration", "passes",  "targets",
                                             "gates",  "export",      "artifact"};

static int parse_root(ctx *c, yaml_node_t *root, qc_recipe *r) {
    if (root->type != YAML_MAPPING_NODE) {
        char d[64];
        return fail(c, root, "a recipe is a map (quantc, calibration, passes, ...), got %s",
                    describe(root, d, sizeof d));
    }
    if (check_map(c, root, "recipe") < 0) return -1;
    yaml_node_t *keys[N_KEYS] = {0}, *vals[N_KEYS] = {0};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = key_of(c, p);
        int i = 0;
        while (i < N_KEYS && strcmp(k, top_keys[i]) != 0)
            i++;
        if (i == N_KEYS) {
            char hint[128], list[256];
            suggest(hint, sizeof hint, k, top_keys, N_KEYS);
            join(list, sizeof list, top_keys, N_KEYS);
            return fail(c, node(c, p->key), "unknown key '%.60s'%s; valid: %s", k, hint, list);
        }
        keys[i] = node(c, p->key);
        vals[i] = node(c, p->value);
    }
    if (!keys[KEY_VERSION]) return fail(c, root, "missing 'quantc: 1' (the recipe format version)");
    static const qc_param_spec version_spec = {"quantc", QC_PARAM_INT, NULL, 0, -1, NULL, ""};
    int64_t version;
    if (parse_int(c, vals[KEY_VERSION], "recipe", &version_spec, &version) < 0) return -1;
    if (version != 1)
        return fail(c, vals[KEY_VERSION],
                    "unsupported recipe version %lld (this quantc reads version 1)",
                    (long long)version);
    r->version = 1;
    if (!keys[KEY_CALIB]) return fail(c, root, "missing required section 'calibration'");
    if (!keys[KEY_PASSES]) return fail(c, root, "missing required section 'passes'");
    if (parse_calibration(c, keys[KEY_CALIB], vals[KEY_CALIB], r) < 0) return -1;
    if (parse_passes(c, keys[KEY_PASSES], vals[KEY_PASSES], r) < 0) return -1;
    if (keys[KEY_TARGETS] && parse_targets(c, vals[KEY_TARGETS], r) < 0) return -1;
    if (keys[KEY_GATES] && parse_gates(c, keys[KEY_GATES], vals[KEY_GATES], r) < 0) return -1;
    if (keys[KEY_EXPORT] && parse_exports(c, vals[KEY_EXPORT], r) < 0) return -1;
    r->artifact.level = 3;
    if (keys[KEY_ARTIFACT] && parse_artifact(c, keys[KEY_ARTIFACT], vals[KEY_ARTIFACT], r) < 0)
        return -1;
    return 0;
}

static int yaml_error(ctx *c, const yaml_parser_t *p) {
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_MEMORY_ERROR) return qc_err_set(c->err, "%s: out of memory", c->name);
    if (p->error == YAML_READER_ERROR)
        return qc_err_set(c->err, "%s: byte %zu: YAML syntax error: %s", c->name, p->problem_offset,
                          problem);
    return qc_err_set(c->err, "%s:%zu:%zu: YAML syntax error: %s%s%s", c->name,
                      p->problem_mark.line + 1, p->problem_mark.column + 1, problem,
                      p->context ? " " : "", p->context ? p->context : "");
}

/* Event pass: syntax errors, nesting depth, aliases, document count. */
static int prescan(ctx *c, const char *text, size_t len) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return qc_err_set(c->err, "out of memory (yaml parser)");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int depth = 0, docs = 0, rc = 0;
    for (;;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            rc = yaml_error(c, &p);
            break;
        }
        size_t line = e.start_mark.line + 1, col = e.start_mark.column + 1;
        yaml_event_type_t t = e.type;
        yaml_event_delete(&e);
        if (t == YAML_STREAM_END_EVENT) break;
        if (t == YAML_ALIAS_EVENT) {
            rc = qc_err_set(c->err, "%s:%zu:%zu: YAML aliases are not supported in recipes",
                            c->name, line, col);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            rc = qc_err_set(c->err, "%s:%zu:%zu: a recipe is one YAML document; found a second",
                            c->name, line, col);
            break;
        }
        if (t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) depth++;
        if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) depth--;
        if (depth > MAX_DEPTH) {
            rc = qc_err_set(c->err, "%s:%zu:%zu: nested deeper than %d levels", c->name, line, col,
                            MAX_DEPTH);
            break;
        }
    }
    yaml_parser_delete(&p);
    return rc;
}

void qc_recipe_free(qc_recipe *r) {
    if (!r) return;
    for (int i = 0; i < r->n_passes; i++) {
        qc_recipe_pass *p = &r->passes[i];
        qc_params_free(&p->params);
        for (int j = 0; j < p->n_targets; j++)
            free(p->targets[j].pattern);
        for (int j = 0; j < p->n_ignore; j++)
            free(p->ignore[j].pattern);
        free(p->targets);
        free(p->ignore);
    }
    free(r->passes);
    for (int i = 0; i < r->n_targets; i++)
        free(r->targets[i]);
    free(r->targets);
    for (int i = 0; i < r->n_exports; i++) {
        free(r->exports[i].format);
        free(r->exports[i].path);
    }
    free(r->exports);
    free(r->calib.text);
    free(r->gates.text);
    free(r->path);
    free(r->text);
    free(r);
}

qc_recipe *qc_recipe_parse(const char *text, size_t len, const char *name, const char *base_dir,
                           qc_err *err) {
    ctx c = {name ? name : "<recipe>", base_dir, NULL, err, 0};
    if (len > qc_limit(QC_LIMIT_RECIPE_BYTES)) {
        fail(&c, NULL, "recipe is %zu bytes; recipes are limited to %llu (%s raises it)", len,
             (unsigned long long)qc_limit(QC_LIMIT_RECIPE_BYTES), qc_limit_env(QC_LIMIT_RECIPE_BYTES));
        return NULL;
    }
    qc_recipe *r = qc_calloc(1, sizeof *r, err);
    if (!r) return NULL;
    r->text_len = len;
    if (!(r->text = dup_str(text, len, err)) || !(r->path = dup_str(c.name, strlen(c.name), err)))
        goto fail;
    if (prescan(&c, text, len) < 0) goto fail;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        qc_err_set(err, "out of memory (yaml parser)");
        goto fail;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int loaded = yaml_parser_load(&parser, &doc);
    if (!loaded) yaml_error(&c, &parser);
    yaml_parser_delete(&parser);
    if (!loaded) goto fail;
    c.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = root ? parse_root(&c, root, r) : fail(&c, NULL, "empty recipe");
    yaml_document_delete(&doc);
    if (rc == 0) return r;
fail:
    qc_recipe_free(r);
    return NULL;
}

qc_recipe *qc_recipe_load(const char *path, qc_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        qc_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    /* One byte past the limit tells an oversized file from one at the limit. */
    size_t max = (size_t)qc_limit(QC_LIMIT_RECIPE_BYTES);
    char *buf = max < SIZE_MAX ? qc_malloc(max + 1, err) : NULL;
    errno = 0;
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int read_error = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (!buf) return NULL;
    qc_recipe *r = NULL;
    if (read_error) {
        qc_err_set(err, "%s: cannot read: %s", path, strerror(read_error));
    } else if (n > max) {
        qc_err_set(err, "%s: larger than %zu bytes; recipes are small text files (%s raises the "
                        "limit)",
                   path, max, qc_limit_env(QC_LIMIT_RECIPE_BYTES));
    } else {
        const char *slash = strrchr(path, '/');
        char *dir = NULL;
        if (slash) dir = dup_str(path, slash == path ? 1 : (size_t)(slash - path), err);
        if (!slash || dir) r = qc_recipe_parse(buf, n, path, dir, err);
        free(dir);
    }
    free(buf);
    return r;
}

/* ---- Target globs. */

static int glob_match(const char *pattern, const char *name) {
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0) {
        char buf[512];
        if (n - 7 >= sizeof buf) return fnmatch(pattern, name, 0) == 0;
        memcpy(buf, name, n - 7);
        buf[n - 7] = 0;
        return fnmatch(pattern, buf, 0) == 0;
    }
    return fnmatch(pattern, name, 0) == 0;
}

int qc_recipe_pass_matches(const qc_recipe_pass *p, const char *name) {
    int hit = 0;
    for (int i = 0; i < p->n_targets && !hit; i++)
        hit = glob_match(p->targets[i].pattern, name);
    for (int i = 0; i < p->n_ignore && hit; i++)
        hit = !glob_match(p->ignore[i].pattern, name);
    return hit;
}

static int check_globs(const qc_recipe *r, const qc_recipe_pass *p, const qc_recipe_glob *g, int ng,
                       const char *kind, const char *const *names, int n, qc_err *err) {
    for (int i = 0; i < ng; i++) {
        int hit = 0;
        for (int j = 0; j < n && !hit; j++)
            hit = glob_match(g[i].pattern, names[j]);
        if (hit) continue;
        char where[64] = "";
        if (g[i].line) snprintf(where, sizeof where, "%d:%d:", g[i].line, g[i].col);
        char example[160] = "the model has no linear layers";
        if (n > 0) {
            size_t len = strlen(names[0]);
            if (len > 7 && strcmp(names[0] + len - 7, ".weight") == 0) len -= 7;
            snprintf(example, sizeof example, "e.g. %.*s", (int)(len > 120 ? 120 : len), names[0]);
        }
        return qc_err_set(err, "%s:%s %s: %s pattern '%s' matches no layer of the model (%s)",
                          r->path, where, p->pass->name, kind, g[i].pattern, example);
    }
    return 0;
}

int qc_recipe_check_targets(const qc_recipe *r, const char *const *names, int n, qc_err *err) {
    for (int i = 0; i < r->n_passes; i++) {
        const qc_recipe_pass *p = &r->passes[i];
        if (check_globs(r, p, p->targets, p->n_targets, "target", names, n, err) < 0 ||
            check_globs(r, p, p->ignore, p->n_ignore, "ignore", names, n, err) < 0)
            return -1;
    }
    return 0;
}

/* ---- Schema self-check. */

int qc_pass_check_schema(const qc_pass *pass, qc_err *err) {
    const qc_param_spec *specs = pass->params;
    int n = spec_count(specs);
    for (int i = 0; i < n; i++) {
        const qc_param_spec *s = &specs[i];
        if (strcmp(s->name, "targets") == 0 || strcmp(s->name, "ignore") == 0)
            return qc_err_set(err, "pass %s: parameter %s clashes with the common pass keys",
                              pass->name, s->name);
        for (int j = 0; j < i; j++)
            if (strcmp(specs[j].name, s->name) == 0)
                return qc_err_set(err, "pass %s: parameter %s declared twice", pass->name, s->name);
        if (!s->doc || !s->doc[0])
            return qc_err_set(err, "pass %s: parameter %s has no doc line", pass->name, s->name);
        if (!s->def) continue;
        qc_param_value v = {0};
        /* The default must pass the same checks a written value does. */
        int rc = parse_default(pass->name, s, &v, 1, err);
        value_free(&v);
        if (rc < 0) return qc_err_prefix(err, "pass %s: bad default", pass->name);
    }
    return 0;
}
