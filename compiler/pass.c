/* Parameter values of a pass invocation: lookups by name. A name missing
 * from the schema is a bug in the pass that asks for it, not bad input, so
 * it is an assert. */
#include "pass.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

const qc_param_value *qc_params_get(const qc_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->v[i].spec->name, name) == 0) return &p->v[i];
    return NULL;
}

static const qc_param_value *get_typed(const qc_params *p, const char *name, qc_param_type t) {
    const qc_param_value *v = qc_params_get(p, name);
    assert(v && "parameter not in the pass's schema");
    assert(v->spec->type == t && "parameter read as the wrong type");
    (void)t;
    return v;
}

int64_t qc_params_int(const qc_params *p, const char *name) {
    return get_typed(p, name, QC_PARAM_INT)->i;
}

double qc_params_float(const qc_params *p, const char *name) {
    return get_typed(p, name, QC_PARAM_FLOAT)->f;
}

int qc_params_bool(const qc_params *p, const char *name) {
    return get_typed(p, name, QC_PARAM_BOOL)->i != 0;
}

const char *qc_params_str(const qc_params *p, const char *name) {
    return get_typed(p, name, QC_PARAM_STRING)->s;
}
