"""The outliers pass's selection against numpy.

numpy: [H⁻¹]_jj of H dampened as GPTQ does (dead inputs get H_jj = 1, then
damp·mean(diag) is added), OBS saliency w² / [H⁻¹]_jj (or |w|), and the
top round(fraction·n) by np.argsort(-score, kind="stable") (ties by index),
or score > threshold·mean(score).

Tolerance: the selected sets must be identical, except that a swap across
the cut is accepted when the two scores agree to 1e-9 relative (LAPACK's
and numpy's inverses differ in the last bits; the test data has no such
near-ties, so in practice this is exact equality).

Runs "$QC_BUILD/test_outliers --run ..." (see tests/test_outliers.c)."""

import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy not installed: skipping")
    sys.exit(77)


def scores(w, H, criterion, damp=0.01):
    if criterion == "magnitude":
        return np.abs(w.astype(np.float64))
    H = H.copy()
    d = np.diag(H).copy()
    d[d == 0] = 1
    H[np.diag_indices_from(H)] = d + damp * d.mean()
    hinv = np.diag(np.linalg.inv(H))
    return w.astype(np.float64) ** 2 / hinv[None, :]


def select(s, fraction, threshold):
    if threshold > 0:
        return s > threshold * s.mean()
    k = int(np.floor(fraction * s.size + 0.5))
    m = np.zeros(s.size, dtype=bool)
    m[np.argsort(-s.ravel(), kind="stable")[:k]] = True
    return m.reshape(s.shape)


def main():
    build = os.environ.get("QC_BUILD")
    exe = os.path.join(build, "test_outliers") if build else None
    if not exe or not os.path.exists(exe):
        print("QC_BUILD/test_outliers not found")
        return 1
    rng = np.random.default_rng(7)
    n, rows, cols = 2048, 96, 192
    x = rng.standard_normal((n, cols)) @ (rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols))
    x[:, ::11] *= 10  # heavy channels: sensitivity and magnitude then disagree
    x[:, 5] = 0  # a dead input
    H = (x.T @ x) / n
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    w[rng.random((rows, cols)) < 0.003] *= 8
    cases = [
        ("sensitivity", 0.005, 0),
        ("sensitivity", 0.02, 0),
        ("magnitude", 0.01, 0),
        ("sensitivity", 0, 6.0),
        ("magnitude", 0, 2.5),
        ("sensitivity", 0, 0),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        wp, hp, op = (os.path.join(tmp, s) for s in ("w.f32", "h.f64", "out"))
        w.tofile(wp)
        H.tofile(hp)
        sel = {}  # (criterion, fraction, threshold) -> C's mask
        for crit, frac, thr in cases:
            args = [exe, "--run", str(rows), str(cols), wp, hp, crit, repr(frac), repr(thr), op]
            subprocess.run(args, check=True)
            got = np.fromfile(op + ".mask", dtype=np.uint8).reshape(rows, cols) != 0
            s = scores(w, H, crit)
            want = select(s, frac, thr)
            diff = got != want
            ok = True
            if diff.any():  # only near-ties across the cut are excused
                a, b = s[got & ~want], s[want & ~got]
                ok = a.size == b.size and np.allclose(np.sort(a), np.sort(b), rtol=1e-9, atol=0)
            sel[(crit, frac, thr)] = got
            print(f"{'ok' if ok else 'FAIL'}: {crit} fraction {frac} threshold {thr}: "
                  f"{int(got.sum())} selected, numpy {int(want.sum())}, {int(diff.sum())} differ")
            failures += not ok
    # The criteria must differ on this data, or the sensitivity path is untested.
    if not (sel[("sensitivity", 0.005, 0)] != select(scores(w, H, "magnitude"), 0.005, 0)).any():
        print("FAIL: sensitivity and magnitude select the same weights: the test data is too easy")
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
