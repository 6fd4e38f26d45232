#!/usr/bin/env python3
"""`quantc export --gguf` checked by the gguf package's reader (independent
of quantc's): the tiny GGUF llama fixtures exported at Q8_0 and at F32 must
have the source's tensor names, shapes and architecture metadata, the
tokenizer.* keys unchanged, and tensor values equal to the source's (F32:
exactly, which also proves q/k rows go back to GGUF order; Q8_0: within its
rounding, relative RMS error < 0.01). quantc evaluates the Q8_0 export to
within 1% NLL of the source. Bad inputs: an HF source (tokenizer conversion
not implemented), an unknown type, an unwritable destination -- each a clear
error and no output file. Skips (77) without numpy/gguf."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from qctest import QC, ROOT, check, finish  # noqa: E402


def qc(*args):
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def tensors(path):
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        v = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (t.tensor_type.name, tuple(int(x) for x in t.shape), np.asarray(v, np.float64))
    return r, out


def field(r, key):
    f = r.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for src_name in ("gguf_tiny_llama.gguf", "gguf_tiny_qwen2.gguf", "gguf_tiny_qwen3.gguf",
                         "gguf_tiny_llama3_rope.gguf"):
            src = os.path.join(ROOT, "tests", "data", src_name)
            rs, ts = tensors(src)
            for typ, tol in (("F32", 0.0), ("Q8_0", 0.01)):
                out = os.path.join(tmp, f"{src_name}.{typ}.gguf")
                rc, so, se = qc("export", src, "--gguf", out, "--type", typ, "--output-type", typ,
                                "--quiet")
                check(rc == 0, f"{src_name} {typ}: exit {rc}: {se}")
                if rc:
                    continue
                ro, to = tensors(out)
                check(set(to) == set(ts), f"{src_name} {typ}: tensor names differ: "
                      f"{sorted(set(to) ^ set(ts))}")
                for k in ("general.architecture",):
                    check(field(ro, k) == field(rs, k), f"{src_name}: {k}")
                arch = field(rs, "general.architecture")
                for k in rs.fields:
                    if k.startswith("tokenizer.") or (k.startswith(arch + ".") and
                                                      k in ro.fields):
                        check(field(ro, k) == field(rs, k), f"{src_name} {typ}: {k} differs")
                for name, (st, shape, v) in ts.items():
                    if name not in to:
                        continue
                    ot, oshape, ov = to[name]
                    check(oshape == shape, f"{src_name} {name}: shape {oshape} vs {shape}")
                    if oshape != shape:
                        continue
                    err = np.linalg.norm(ov - v) / max(np.linalg.norm(v), 1e-30)
                    bound = tol if len(shape) > 1 and "norm" not in name else 0.0
                    check(err <= bound + 1e-7, f"{src_name} {typ} {name}: relative error {err:.3g}")
        # quantc reads its own export: NLL close to the source's.
        src = os.path.join(ROOT, "tests", "data", "gguf_tiny_llama.gguf")
        text = os.path.join(tmp, "t.txt")
        with open(text, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog " * 8)
        res = {}
        for m in (src, os.path.join(tmp, "gguf_tiny_llama.gguf.Q8_0.gguf")):
            rc, so, se = qc("eval", m, "--text", text, "--ctx", "16", "--json", "--quiet")
            check(rc == 0, f"eval {m}: {se}")
            res[m] = json.loads(so)["nll"] if rc == 0 else None
        a, b = res.values()
        if a is not None and b is not None:
            check(abs(a - b) < 0.01 * abs(a), f"eval NLL {b} of the Q8_0 export vs {a}")
            print(f"tiny llama NLL: source {a:.5f}, Q8_0 export {b:.5f}")

        # Bad inputs.
        out = os.path.join(tmp, "x.gguf")
        rc, so, se = qc("export", os.path.join(ROOT, "tests", "data", "tiny", "llama"), "--gguf", out)
        check(rc == 1 and "tokenizer" in se and not os.path.exists(out), f"HF source: {rc} {se}")
        rc, so, se = qc("export", src, "--gguf", out, "--type", "Q9_K")
        check(rc == 2 and "Q9_K" in se and not os.path.exists(out), f"bad type: {rc} {se}")
        rc, so, se = qc("export", src, "--gguf", os.path.join(tmp, "nodir", "x.gguf"))
        check(rc == 1 and "nodir" in se, f"missing directory: {rc} {se}")
        left = [f for f in os.listdir(tmp) if ".tmp." in f]
        check(not left, f"temporary files left: {left}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
