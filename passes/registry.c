/* The pass table (STYLE.md "Passes"): one line per pass. Recipes look names
 * up here, and `quantc passes` prints it. */
#include "compiler/pass.h"
#include "compiler/recipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const qc_pass qc_pass_rotate;
extern const qc_pass qc_pass_smooth;
extern const qc_pass qc_pass_allocate;
extern const qc_pass qc_pass_outliers;
extern const qc_pass qc_pass_quantize;
extern const qc_pass qc_pass_lowrank;

static const qc_pass *const passes[] = {
    &qc_pass_rotate,
    &qc_pass_smooth,
    &qc_pass_allocate,
    &qc_pass_outliers,
    &qc_pass_quantize,
    &qc_pass_lowrank,
};

int qc_pass_count(void) {
    return (int)(sizeof passes / sizeof passes[0]);
}

const qc_pass *qc_pass_at(int i) {
    return i >= 0 && i < qc_pass_count() ? passes[i] : NULL;
}

const qc_pass *qc_pass_find(const char *name) {
    for (int i = 0; i < qc_pass_count(); i++)
        if (strcmp(passes[i]->name, name) == 0) return passes[i];
    return NULL;
}

static const char *type_name(qc_param_type t) {
    switch (t) {
    case QC_PARAM_INT:
        return "int";
    case QC_PARAM_FLOAT:
        return "float";
    case QC_PARAM_BOOL:
        return "bool";
    case QC_PARAM_STRING:
        return "string";
    case QC_PARAM_INT_LIST:
        return "list of int";
    case QC_PARAM_STRING_LIST:
        return "list of string";
    }
    return "?";
}

static void describe_param(FILE *f, const qc_param_spec *s) {
    fprintf(f, "  %-16s %-14s default %s", s->name, type_name(s->type),
            s->def ? s->def : "(required)");
    if (s->type == QC_PARAM_STRING && s->enum_values) {
        fprintf(f, ", one of:");
        for (const char *const *e = s->enum_values; *e; e++)
            fprintf(f, " %s", *e);
    } else if ((s->type == QC_PARAM_INT || s->type == QC_PARAM_FLOAT ||
                s->type == QC_PARAM_INT_LIST) &&
               s->min <= s->max) {
        fprintf(f, ", in [%.15g, %.15g]", s->min, s->max);
    }
    fprintf(f, "\n  %-16s %s\n", "", s->doc ? s->doc : "");
}

char *qc_passes_describe(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    for (int i = 0; i < qc_pass_count(); i++) {
        const qc_pass *p = passes[i];
        fprintf(f, "%s%s: %s\n", i ? "\n" : "", p->name, p->doc);
        for (const qc_param_spec *s = p->params; s && s->name; s++)
            describe_param(f, s);
        fprintf(f, "  %-16s %-14s default [\"model.layers.*\"]\n  %-16s %s\n  %-16s %s\n",
                "targets", "list of glob", "",
                "layers the pass applies to (fnmatch over module names; '*' crosses dots);", "",
                "lm_head only when named (e.g. \"lm_head\" or \"*\")");
        fprintf(f, "  %-16s %-14s default []\n  %-16s %s\n", "ignore", "list of glob", "",
                "layers excluded from targets");
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
