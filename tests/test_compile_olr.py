"""End to end on the tiny Llama: the outliers and lowrank recipes check and
compile, and the per-layer report accounts for every overhead exactly.

With group size 128 and at most 128 input columns every layer of the tiny
model has one group per row (no act-order g_idx cost), so a layer's bits
per weight differ from plain GPTQ w3's only by
  outliers: (16 + 32)·round(0.005·rows·cols) + 32·(rows + 1)  bits,
  lowrank:  16·32·(rows + cols)                              bits,
checked to 1e-6 (the report prints 8 significant digits).
Block 0's linears see the same inputs in every compile, so there the
low-rank correction must lower each layer's output error (EoRA minimises
exactly that error), and the report must keep the quantizer's name."""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny", "llama")
DATA = os.environ.get("QC_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
CALIB = os.path.join(DATA, "wikitext2-valid.tokens.txt")
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    failures += not cond


def main():
    exe = os.environ.get("QC_BIN")
    if not exe or not os.path.exists(exe):
        print("QC_BIN not set")
        return 1
    if not os.path.exists(CALIB):
        print("SKIP: calibration text not found at", CALIB)
        return 77
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in ["w3a16-g128", "outliers-w3a16-g128", "lowrank-w3a16-g128"]:
            recipe = os.path.join(ROOT, "recipes", r + ".yaml")
            p = subprocess.run([exe, "recipe", "check", recipe, "--model", TINY], capture_output=True, text=True)
            check(p.returncode == 0, f"recipe check {r} {p.stderr.strip()}")
            rep = os.path.join(tmp, r + ".json")
            p = subprocess.run([exe, "compile", TINY, "-r", recipe, "-o", os.path.join(tmp, r + ".qc"), "--no-gates",
                                "--quiet", "--calib", CALIB, "--calib-samples", "4", "--calib-tokens", "64",
                                "--report", rep], capture_output=True, text=True)
            check(p.returncode == 0, f"compile {r} {p.stderr.strip()[-300:]}")
            if p.returncode == 0:
                reports[r] = {l["name"]: l for l in json.load(open(rep))["layers"]}
    if len(reports) < 3:
        return 1
    base, out, lr = (reports[k] for k in ["w3a16-g128", "outliers-w3a16-g128", "lowrank-w3a16-g128"])
    for name, b in base.items():
        rows, cols = b["rows"], b["cols"]
        n = rows * cols
        want_o = (48 * int(0.005 * n + 0.5) + 32 * (rows + 1)) / n
        want_l = 16 * 32 * (rows + cols) / n
        got_o = out[name]["bits_per_weight"] - b["bits_per_weight"]
        got_l = lr[name]["bits_per_weight"] - b["bits_per_weight"]
        check(abs(got_o - want_o) < 1e-6 and abs(got_l - want_l) < 1e-6,
              f"{name}: outliers +{got_o:.5f} bpw (want {want_o:.5f}), lowrank +{got_l:.5f} (want {want_l:.5f})")
        check(lr[name]["method"] == "gptq" and "eora rank 32" in lr[name].get("note", ""),
              f"{name}: lowrank report names gptq and notes the correction")
        if name.startswith("model.layers.0."):
            check(lr[name]["output_rel_err"] < b["output_rel_err"],
                  f"{name}: output error {lr[name]['output_rel_err']:.4g} with EoRA < {b['output_rel_err']:.4g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
