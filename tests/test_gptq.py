"""GPTQ and RTN against an independent numpy implementation.

The reference below is written from Frantar et al. 2022 (Algorithm 1) in its
plain column-by-column form: quantize column p, then W[:, p+1:] -= e ⊗ U[p, p+1:]
with e = (w − q) / U[p, p] and U the upper Cholesky factor of H⁻¹. The C code
uses lazy batch updates (one GEMM per block); the two are the same in exact
arithmetic. The format conventions (compiler/quant.c header) are re-stated here.

Tolerance: f64 summation order differs (BLAS blocking vs numpy), so a weight
sitting on a rounding boundary can land on the neighbouring code, and clip
search ties can break differently; such a flip then shifts later columns a
little. We require >= 99.5% identical dequantized values and a relative
output error within 1% of numpy's.

Runs "$QC_BUILD/test_quant --run ..." (see tests/test_quant.c)."""

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


def f16_scale(s):
    """Scales are stored as f16 (RNE), kept within f16's positive finite range."""
    h = s.astype(np.float16).astype(F32)
    h = np.where(h > 0, h, F32(2.0**-24))
    return np.minimum(h, F32(65504.0))


def range_params(lo, hi, ratio, bits, sym):
    """scale, zero per row for the range [lo, hi] (lo <= 0 <= hi) shrunk by ratio."""
    mq = F32(2**bits - 1)
    if sym:
        a = np.maximum(-lo, hi) * ratio
        a = np.where(a == 0, F32(1), a).astype(F32)
        return f16_scale(F32(2) * a / mq), np.full_like(a, F32(2 ** (bits - 1)))
    l, h = lo * ratio, hi * ratio
    both0 = (l == 0) & (h == 0)
    l = np.where(both0, F32(-1), l).astype(F32)
    h = np.where(both0, F32(1), h).astype(F32)
    s = f16_scale((h - l) / mq)
    z = np.floor(-l / s + F32(0.5)).astype(F32)
    return s, np.clip(z, F32(0), mq)


def quant(w, s, z, bits):
    """w: (rows, n) f32; s, z: (rows, 1). Returns (codes, values)."""
    q = w / s + z
    q = np.clip(q, F32(0), F32(2**bits - 1))
    code = np.floor(q + F32(0.5))
    return code.astype(np.uint8), (s * (code - z)).astype(F32)


def fit(w, d, bits, sym, clip):
    """Per-row scale/zero of w (rows, n) f32, clip-searched on Σ d (w − ŵ)²."""
    lo = np.minimum(w.min(axis=1), F32(0)).astype(F32)
    hi = np.maximum(w.max(axis=1), F32(0)).astype(F32)
    s, z = range_params(lo, hi, F32(1), bits, sym)
    if not clip:
        return s, z
    steps, min_ratio = 20, F32(0.75)

    def err(s, z):
        _, v = quant(w, s[:, None], z[:, None], bits)
        e = w.astype(np.float64) - v.astype(np.float64)
        return (e * e * d.astype(np.float64)[None, :]).sum(axis=1)

    best = err(s, z)
    span = F32(1) - min_ratio
    for k in range(1, steps):
        ratio = F32(1) - span * F32(k) / F32(steps - 1)
        s2, z2 = range_params(lo, hi, ratio, bits, sym)
        e = err(s2, z2)
        better = e < best
        best = np.where(better, e, best)
        s = np.where(better, s2, s)
        z = np.where(better, z2, z)
    return s, z


def rtn(w, H, bits, group, sym, clip):
    rows, cols = w.shape
    gs = group or cols
    d = np.diag(H).astype(F32)
    out = np.empty_like(w)
    for c0 in range(0, cols, gs):
        blk = w[:, c0 : c0 + gs]
        s, z = fit(blk, d[c0 : c0 + gs], bits, sym, clip)
        out[:, c0 : c0 + gs] = quant(blk, s[:, None], z[:, None], bits)[1]
    return out


def gptq(w, H, bits, group, sym, act_order, static, clip, damp=0.01):
    rows, cols = w.shape
    W = w.astype(np.float64)
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    diag = np.diag(H).copy()
    perm = np.argsort(-diag, kind="stable") if act_order else np.arange(cols)
    upfront = group == 0 or static
    gs = group or cols
    params = {}
    if upfront:  # original grouping, original (dead-zeroed) weights
        W32 = W.astype(F32)
        for g, c0 in enumerate(range(0, cols, gs)):
            params[g] = fit(W32[:, c0 : c0 + gs], diag[c0 : c0 + gs].astype(F32), bits, sym, clip)
    W = W[:, perm]
    H = H[np.ix_(perm, perm)]
    H[np.diag_indices(cols)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky(Hinv).T  # H⁻¹ = UᵀU, U upper
    dg = diag[perm].astype(F32)
    Q = np.empty((rows, cols), dtype=F32)
    for p in range(cols):
        c = perm[p]
        if not upfront and p % gs == 0:
            params[p // gs] = fit(W[:, p : p + gs].astype(F32), dg[p : p + gs], bits, sym, clip)
        g = (c // gs if group else 0) if upfront else p // gs
        s, z = params[g]
        wcol = W[:, p]
        _, v = quant(wcol.astype(F32)[:, None], s[:, None], z[:, None], bits)
        v = v[:, 0]
        Q[:, c] = v
        e = (wcol - v.astype(np.float64)) / U[p, p]
        W[:, p + 1 :] -= np.outer(e, U[p, p + 1 :])
    return Q


def main():
    build = os.environ.get("QC_BUILD")
    exe = os.path.join(build, "test_quant") if build else None
    if not exe or not os.path.exists(exe):
        print("QC_BUILD/test_quant not found")
        return 1
    rng = np.random.default_rng(1)
    n, rows, cols = 1024, 64, 256
    z = rng.standard_normal((n, cols))
    a = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    x = (z @ a).astype(F32)
    x[:, ::13] *= 8  # heavy channels
    x[:, 17] = 0  # a dead input
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(F32)
    xd = x.astype(np.float64)
    H = xd.T @ xd
    y = xd @ w.astype(np.float64).T

    def rel_out(wq):
        e = y - xd @ wq.astype(np.float64).T
        return float((e * e).sum() / (y * y).sum())

    # (method, bits, group, sym, act_order, static, clip, block)
    cases = [
        ("rtn", 4, 128, 0, 0, 0, 1, 128),
        ("rtn", 3, 32, 1, 0, 0, 0, 128),
        ("gptq", 4, 128, 0, 1, 0, 1, 128),
        ("gptq", 4, 128, 1, 0, 0, 0, 128),
        ("gptq", 3, 128, 0, 1, 0, 1, 128),
        ("gptq", 2, 32, 0, 1, 0, 0, 48),
        ("gptq", 8, 32, 1, 1, 0, 1, 128),
        ("gptq", 4, 0, 0, 1, 0, 1, 128),
        ("gptq", 3, 0, 1, 0, 0, 0, 64),
        ("gptq", 4, 32, 0, 1, 1, 1, 128),
        ("gptq", 3, 128, 1, 1, 1, 0, 100),
        ("gptq", 4, 32, 0, 0, 0, 1, 40),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        wp, hp, op = (os.path.join(tmp, s) for s in ("w.f32", "h.f64", "out"))
        w.tofile(wp)
        H.tofile(hp)
        for method, bits, group, sym, ao, static, clip, block in cases:
            args = [exe, "--run", method, str(rows), str(cols), wp, hp, op]
            args += [str(v) for v in (bits, group, sym, ao, static, clip, block)]
            subprocess.run(args, check=True)
            got = np.fromfile(op + ".deq", dtype=F32).reshape(rows, cols)
            if method == "rtn":
                want = rtn(w, H, bits, group, sym, clip)
            else:
                want = gptq(w, H, bits, group, sym, ao, static, clip)
            same = float(np.mean(got == want))
            e_got, e_want = rel_out(got), rel_out(want)
            ok = same >= 0.995 and abs(e_got - e_want) <= 0.01 * e_want
            if method == "gptq":
                ok = ok and not got[:, 17].any()
            tag = "ok" if ok else "FAIL"
            print(
                f"{tag}: {method} w{bits} g{group} sym {sym} act {ao} static {static} clip {clip} "
                f"block {block}: identical {same * 100:.2f}%, rel. output error C {e_got:.5g} "
                f"numpy {e_want:.5g}"
            )
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
