/* Shared by the pass tests: a committed recipe that uses the pass is valid,
 * has the expected passes in order with the quantize width, gates over 40
 * windows, and data paths that exist (when the shared data is checked out). */
#ifndef QC_TEST_RECIPE_CHECK_H
#define QC_TEST_RECIPE_CHECK_H

#include "compiler/pass.h"
#include "compiler/recipe.h"
#include "tests/check.h"

#include <string.h>
#include <unistd.h>

static void check_recipe(const char *file, const char *const *passes, int n, int bits) {
    qc_err err = {{0}};
    qc_recipe *r = qc_recipe_load(file, &err);
    CHECK_MSG(r, "%s", err.msg);
    if (!r) return;
    CHECK_MSG(r->n_passes == n, "%s: %d passes", file, r->n_passes);
    for (int i = 0; i < n && i < r->n_passes; i++)
        CHECK_MSG(strcmp(r->passes[i].pass->name, passes[i]) == 0, "%s: pass %d", file, i);
    CHECK(qc_params_int(&r->passes[n - 1].params, "bits") == bits);
    CHECK(r->gates.enabled && r->gates.windows == 40);
    if (access("../shared/data", F_OK) == 0)
        CHECK(access(r->calib.text, R_OK) == 0 && access(r->gates.text, R_OK) == 0);
    qc_recipe_free(r);
}

#endif
