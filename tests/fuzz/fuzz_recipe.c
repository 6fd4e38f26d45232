/* Fuzz target: arbitrary bytes as a recipe (parse, validate, free). */
#include "compiler/recipe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A copy without a terminating NUL, so reads past the end trip ASan. */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    qc_err err;
    qc_recipe *r = qc_recipe_parse(buf, size, "fuzz.yaml", "base", &err);
    if (r) {
        static const char *const names[] = {"model.layers.0.self_attn.q_proj.weight",
                                            "model.layers.0.mlp.down_proj", "lm_head"};
        for (int i = 0; i < r->n_passes; i++)
            for (int j = 0; j < 3; j++)
                (void)qc_recipe_pass_matches(&r->passes[i], names[j]);
        (void)qc_recipe_check_targets(r, names, 3, &err);
        qc_recipe_free(r);
    }
    free(buf);
    return 0;
}
