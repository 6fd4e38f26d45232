/* Rank-r compensation of a quantization error E = W − Ŵ (rows × cols):
 * factors A (rows × r) and B (r × cols) with A·B ≈ E.
 *
 *  - svd (LoRC, Yao et al. 2023): minimises ‖E − AB‖_F: the truncated SVD.
 *  - eora (EoRA, Liu et al. 2024): minimises the output error on the
 *    calibration inputs, ‖X(E − AB)ᵀ‖_F² = N·‖(E − AB)·H^{1/2}‖_F² with
 *    H = XᵀX/N = QΛQᵀ. Project E into H's eigenspace scaled by √λ,
 *    E' = E·Q·Λ^{1/2}, take its truncated SVD U_r Σ_r V_rᵀ, and project back.
 *    The back-projection U_r Σ_r V_rᵀ Λ^{-1/2} Qᵀ equals U_r U_rᵀ E, so we
 *    store A = U_r, B = U_rᵀ E: the same product without Λ^{-1/2}, hence no
 *    blow-up along tiny eigenvalues (which would also wreck B's f16
 *    rounding) and an answer for singular H too (negative eigenvalues, from
 *    rounding, are clamped to 0).
 *
 * Both are optimal for their norm (Eckart–Young). The factors are then made
 * f16-ready: each component is balanced (A's column and B's row scaled to
 * equal max-abs), A is rounded to f16, and B is refitted to the rounded A by
 * least squares, B = (AᵀA)⁻¹AᵀE, which is optimal in both norms for a fixed
 * A (the H-weighted normal equations reduce to these when H is invertible);
 * only B's own f16 rounding, done by qc_quant_set_lowrank, remains. */
#ifndef QC_LOWRANK_H
#define QC_LOWRANK_H

#include "err.h"

#include <stdint.h>

/* S = Q·Λ^{1/2} (n × n, row-major) from H (n × n, symmetric, f64, read-only)
 * through LAPACKE_dsyevd, so that H = S·Sᵀ. Returns 0, or -1 with err
 * (non-finite H, eigensolver failure, allocation). */
int qc_lowrank_hsqrt(const double *H, int64_t n, double *S, qc_err *err);

/* Rank-`rank` factors of E (rows × cols, f64): with S non-NULL (from
 * qc_lowrank_hsqrt) the EoRA factors, with S NULL the plain truncated SVD.
 * A (rows × rank) holds exact f16 values; B (rank × cols) the f32 refit.
 * *opt_err (may be NULL) gets the error of the exact (unrounded) optimum in
 * the method's norm, Σ_{i>rank} σ_i² of E·S (eora) or E (svd). Returns 0, or -1 with err (rank outside 1..min(rows, cols), non-finite E,
 * SVD failure, a factor beyond f16 range, allocation). */
int qc_lowrank_fit(const double *E, int64_t rows, int64_t cols, const double *S, int rank,
                   float *A, float *B, double *opt_err, qc_err *err);

/* tr(R·H·Rᵀ) for R rows × cols (H cols × cols), or ‖R‖_F² when H is NULL:
 * the output (or weight) error of a residual. -1 on allocation failure. */
double qc_lowrank_err(const double *R, int64_t rows, int64_t cols, const double *H);

#endif
