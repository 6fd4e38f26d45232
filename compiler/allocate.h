/* The budget solver of the allocate pass (passes/allocate.c): choose one
 * option per item (a bit width per linear) minimising the summed error
 * under a total cost (storage bits). Exact dynamic programming over the
 * cost discretised in units of `unit` (costs rounded up, so the result never
 * exceeds the budget; it may leave up to n_items·unit unused). */
#ifndef QC_ALLOCATE_H
#define QC_ALLOCATE_H

#include "err.h"

#include <stdint.h>

/* cost[i·n_opts + o], error[i·n_opts + o] for item i option o; fills
 * choice[i]. Returns 0, or -1 with err when no choice fits the budget. */
int qc_allocate_solve(const double *cost, const double *error, int n_items, int n_opts,
                      double budget, double unit, int *choice, qc_err *err);

#endif
