"""The lowrank pass (EoRA and plain SVD) against numpy's optimum.

For a quantization error E = W − Ŵ and H = XᵀX/N (N tokens), numpy gives
the best rank-r output error independently: with H = QΛQᵀ (np.linalg.eigh),
min ‖X(E − AB)ᵀ‖²/N = min tr((E − AB) H (E − AB)ᵀ) = Σ_{i>r} σ_i²(E·Q·Λ^{1/2})
(Eckart–Young), and the plain-SVD optimum min ‖E − AB‖² = Σ_{i>r} σ_i²(E).
The C pass stores A and B in f16; we evaluate its factors exactly (f64
products of the f16 values) and require:
  - eora: tr(R H Rᵀ) within 1e-4 (relative) above numpy's optimum — the only
    gap is B's f16 rounding (A is rounded first and B refitted), which the
    C note reports at ~1e-7..1e-5 relative on these sizes; and never below
    it by more than 1e-9 (it cannot beat the optimum);
  - svd: ‖R‖² likewise against numpy's truncated-SVD error;
  - eora's output error <= svd's (svd's Frobenius error <= eora's);
  - the pass's Ŵ equals Ŵ₀ + A·B to f32 rounding (1e-6 absolute on
    weights ~0.1: f32 sums of r products).
Also the paper's own back-projection U_r Σ_r V_rᵀ Λ^{-1/2} Qᵀ is computed
in numpy and checked to give the same error (so the C shortcut U_r U_rᵀ E
is the same solution).

Runs "$QC_BUILD/test_lowrank --run ..." (see tests/test_lowrank.c)."""

import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy not installed: skipping")
    sys.exit(77)

F32 = np.float32


def h_err(R, H):
    return float(np.einsum("ij,jk,ik->", R, H, R))


def main():
    build = os.environ.get("QC_BUILD")
    exe = os.path.join(build, "test_lowrank") if build else None
    if not exe or not os.path.exists(exe):
        print("QC_BUILD/test_lowrank not found")
        return 1
    rng = np.random.default_rng(3)
    failures = 0
    # (rows, cols, tokens, rank, bits): wide, tall, square; n < cols makes H singular.
    shapes = [(96, 160, 2048, 8, 3), (160, 96, 2048, 16, 2), (64, 64, 1024, 32, 4), (48, 128, 100, 8, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        wp, hp, op = (os.path.join(tmp, s) for s in ("w.f32", "h.f64", "out"))
        for rows, cols, n, r, bits in shapes:
            x = rng.standard_normal((n, cols)) @ (rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols))
            x[:, ::9] *= 6
            H = (x.T @ x) / n
            w = (rng.standard_normal((rows, cols)) * 0.05).astype(F32)
            w.tofile(wp)
            H.tofile(hp)
            lam, Q = np.linalg.eigh(H)
            Hs = Q * np.sqrt(np.clip(lam, 0, None))[None, :]
            res = {}
            for method in ("eora", "svd"):
                out = subprocess.run([exe, "--run", str(rows), str(cols), wp, hp, method, str(r), str(bits), op],
                                     check=True, capture_output=True, text=True).stdout.strip()
                ld = lambda s, shape: np.fromfile(op + s, dtype=F32).reshape(shape)
                deq0, deq = ld(".deq0", (rows, cols)), ld(".deq", (rows, cols))
                A, B = ld(".a", (rows, r)).astype(np.float64), ld(".b", (r, cols)).astype(np.float64)
                E = w.astype(np.float64) - deq0.astype(np.float64)
                Rs = E - A @ B
                res[method] = (h_err(Rs, H), float((Rs * Rs).sum()))
                M = E @ Hs if method == "eora" else E
                U, s, Vt = np.linalg.svd(M, full_matrices=False)
                opt = float((s[r:] ** 2).sum())
                got = res[method][0] if method == "eora" else res[method][1]
                ok = opt * (1 - 1e-9) <= got <= opt * (1 + 1e-4)
                apply_ok = float(np.abs(deq - (deq0 + (A @ B).astype(F32))).max()) <= 1e-6
                ok = ok and apply_ok
                extra = ""
                if method == "eora":
                    # the paper's back-projection through Λ^{-1/2} (H invertible here)
                    if n >= cols:
                        AB = (U[:, :r] * s[:r]) @ Vt[:r] @ (Q / np.sqrt(lam)[None, :]).T
                        paper = h_err(E - AB, H)
                        ok = ok and abs(paper / opt - 1) < 1e-6
                        extra = f", paper's form {paper:.6g}"
                print(f"{'ok' if ok else 'FAIL'}: {method} {rows}x{cols} N {n} r {r} w{bits}: "
                      f"error {got:.6g}, numpy optimum {opt:.6g} ({(got / opt - 1) * 100:+.2g}%), "
                      f"before {h_err(E, H) if method == 'eora' else float((E * E).sum()):.6g}, "
                      f"Ŵ₀+AB {'ok' if apply_ok else 'WRONG'}{extra}  [{out}]")
                failures += not ok
            ok = res["eora"][0] <= res["svd"][0] and res["svd"][1] <= res["eora"][1]
            print(f"{'ok' if ok else 'FAIL'}: output error eora {res['eora'][0]:.6g} <= svd "
                  f"{res['svd'][0]:.6g}; Frobenius svd {res['svd'][1]:.6g} <= eora {res['eora'][1]:.6g}")
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
