"""End-to-end `quantc compile` on the tiny llama model (byte-level tokenizer)
with each committed recipe, checked against independent numpy computations:

- the written codes/scales/zeros/g_idx dequantize (in numpy) to weights close
  to the originals (relative Frobenius error below a per-bit-width bound);
- `quantc eval OUT` equals a float64 numpy forward pass (tests/gen/
  numpy_forward.py) over those numpy-dequantized weights: mean NLL within
  1e-4 (f32 vs f64 forward on a 64-wide model differs by ~1e-6 in logits);
- GPTQ has lower output error than RTN at the same format;
- a quantized lm_head (tied in the tiny model) evaluates like numpy's;
- bad inputs: unknown pass (file:line:col), too-short calibration text,
  NaN / overflowing activations, failing gate (exit 1, no output), output
  path that is not ours.
Exits 77 when numpy/safetensors are missing."""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "gen"))
QC = os.environ.get("QC_BIN", os.path.join(ROOT, "build", "quantc"))
TINY = os.path.join(ROOT, "tests", "data", "tiny", "llama")
DATA = os.environ.get("QC_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
CALIB = os.path.join(DATA, "wikitext2-valid.tokens.txt")
failures = 0

try:
    import numpy as np
    from safetensors.numpy import load_file
    import numpy_forward
except ImportError as e:
    print("SKIP: needs numpy and safetensors:", e)
    sys.exit(77)


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def qc(*args):
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=900)
    return p.returncode, p.stdout, p.stderr


def dequantize(t, base):
    codes = t[base + ".qcodes"].astype(np.float64)
    s, z, g = t[base + ".qscales"], t[base + ".qzeros"], t[base + ".g_idx"]
    return s[:, g].astype(np.float64) * (codes - z[:, g].astype(np.float64))


def compile_and_check(tmp, recipe, bound, text_ids, n_layers=14):
    out = os.path.join(tmp, os.path.basename(recipe) + ".out")
    rep = os.path.join(tmp, "report.json")
    rc, so, se = qc("compile", TINY, "-r", recipe, "-o", out, "--calib", CALIB, "--calib-samples", "8",
                    "--calib-tokens", "64", "--no-gates", "--report", rep, "--quiet")
    check(rc == 0, f"{recipe}: compile exit {rc}: {se.strip()[-500:]}")
    if rc:
        return None
    report = json.load(open(rep))
    cfg = json.load(open(os.path.join(out, "config.json")))
    qcfg = cfg["quantization_config"]["layers"]
    check(len(report["layers"]) == n_layers and len(qcfg) == n_layers,
          f"{recipe}: {n_layers} layers quantized")
    t = load_file(os.path.join(out, "model.safetensors"))
    _, orig = numpy_forward.load(TINY)
    weights = {k: v.astype(np.float64) for k, v in t.items() if v.dtype == np.float32 and "." in k
               and not k.endswith((".qscales", ".qzeros"))}
    worst = 0
    for mod, spec in qcfg.items():
        codes = t[mod + ".qcodes"]
        check(int(codes.max()) < (1 << spec["bits"]), f"{mod}: codes fit {spec['bits']} bits")
        w_hat = dequantize(t, mod)
        w = orig[mod + ".weight"] if mod != "lm_head" else orig.get("lm_head.weight", orig["model.embed_tokens.weight"])
        rel = np.linalg.norm(w - w_hat) / np.linalg.norm(w)
        worst = max(worst, rel)
        weights[mod + ".weight"] = w_hat
    check(worst < bound, f"{recipe}: worst relative weight error {worst:.4g} >= {bound}")
    # Eval of the compiled directory equals numpy's forward over numpy's dequantization.
    n = len(text_ids)
    logits = numpy_forward.forward(cfg, weights, text_ids)
    nll = 0.0
    for i in range(n - 1):
        row = logits[i]
        m = row.max()
        nll -= row[text_ids[i + 1]] - (m + math.log(np.exp(row - m).sum()))
    nll /= n - 1
    rc, so, se = qc("eval", out, "--text", os.path.join(tmp, "sample.txt"), "--ctx", str(n), "--json", "--quiet")
    check(rc == 0, f"{recipe}: eval exit {rc}: {se}")
    if rc == 0:
        got = json.loads(so)["nll"]
        check(abs(got - nll) < 1e-4, f"{recipe}: eval nll {got:.6f} vs numpy {nll:.6f}")
        print(f"{os.path.basename(recipe)}: worst weight err {worst:.4g}, eval nll {got:.6f} vs numpy {nll:.6f}")
    return report


def mean_output_err(report):
    errs = [l["output_rel_err"] for l in report["layers"]]
    return sum(errs) / len(errs)


def main():
    if not os.path.exists(CALIB):
        print("SKIP: calibration text not found at", CALIB)
        return 77
    tmp = tempfile.mkdtemp(prefix="qc_compile_")
    try:
        sample = open(os.path.join(DATA, "wikitext2-test.raw.txt"), "rb").read()[:100]
        with open(os.path.join(tmp, "sample.txt"), "wb") as f:
            f.write(sample)
        rc, so, _ = qc("tokenize", TINY, "--text", os.path.join(tmp, "sample.txt"), "--json")
        ids = json.loads(so)
        check(len(ids) == 100, "byte-level tiny tokenizer gives one id per byte")
        for r in ["w8a16", "w4a16-g128", "w3a16-g128"]:
            rc, so, se = qc("recipe", "check", os.path.join(ROOT, "recipes", r + ".yaml"), "--model", TINY)
            check(rc == 0, f"recipe check {r}: {se}")
        # GPTQ trades weight error for output error (its weight error exceeds
        # RTN's), so the bounds are loose; a wrong dequantization gives >= 1.
        bounds = {"w8a16": 0.01, "w4a16-g128": 0.3, "w3a16-g128": 0.5}
        reports = {}
        for r, b in bounds.items():
            reports[r] = compile_and_check(tmp, os.path.join(ROOT, "recipes", r + ".yaml"), b, ids)

        # GPTQ against RTN at 4 bits, group 32 (the tiny model is 64 wide).
        def recipe(name, body):
            p = os.path.join(tmp, name)
            with open(p, "w") as f:
                f.write(body)
            return p
        common = "quantc: 1\ncalibration:\n  text: %s\n  samples: 8\n  tokens: 64\n" % CALIB
        rtn = recipe("rtn.yaml", common + "passes:\n  - quantize: {method: rtn, bits: 4, group_size: 32}\n")
        gptq = recipe("gptq.yaml", common + "passes:\n  - quantize: {method: gptq, bits: 4, group_size: 32}\n")
        rr = compile_and_check(tmp, rtn, 0.3, ids)
        rg = compile_and_check(tmp, gptq, 0.3, ids)
        if rr and rg:
            er, eg = mean_output_err(rr), mean_output_err(rg)
            print(f"mean relative output error: RTN {er:.4g}, GPTQ {eg:.4g}")
            check(eg < er, f"GPTQ output error {eg} not below RTN {er}")

        # lm_head (tied in the tiny llama) is quantized only when named: GPTQ
        # on the final-norm activations, its own codes, the embedding kept.
        head = recipe("head.yaml", common + "passes:\n  - quantize: {method: gptq, bits: 4, group_size: 32, "
                      "targets: ['*']}\n")
        rh = compile_and_check(tmp, head, 0.3, ids, n_layers=15)
        if rh:
            check(rh["layers"][-1]["name"] == "lm_head" and rh["layers"][-1]["method"] == "gptq",
                  f"lm_head reported last: {rh['layers'][-1]}")

        # Bad inputs.
        bad = recipe("bad.yaml", common + "passes:\n  - quantise: {bits: 4}\n")
        rc, so, se = qc("compile", TINY, "-r", bad, "-o", os.path.join(tmp, "x"))
        check(rc == 1 and "bad.yaml:7:" in se and "quantise" in se, f"unknown pass: {rc} {se}")
        check(not os.path.exists(os.path.join(tmp, "x")), "no output after a bad recipe")
        short = os.path.join(tmp, "short.txt")
        with open(short, "w") as f:
            f.write("too short")
        rc, so, se = qc("compile", TINY, "-r", gptq, "-o", os.path.join(tmp, "x"), "--calib", short)
        check(rc == 1 and "fewer than one sample" in se, f"short calibration: {rc} {se}")
        gate = recipe("gate.yaml", common + "passes:\n  - quantize: {method: rtn, bits: 2, group_size: 32}\n"
                      "gates:\n  text: %s\n  ctx: 64\n  windows: 2\n  max_kl: 0.0\n" % os.path.join(tmp, "sample.txt"))
        rc, so, se = qc("compile", TINY, "-r", gate, "-o", os.path.join(tmp, "g"), "--quiet")
        check(rc == 1 and "gate failed" in se and "max_kl" in se, f"failing gate: {rc} {se}")
        check(not os.path.exists(os.path.join(tmp, "g")), "no output after a failed gate")
        # Non-finite activations with finite linear weights: a NaN and an Inf
        # in norm weights.
        from safetensors.numpy import save_file
        for what, tensor, val, where in [
                ("NaN norm", "model.layers.1.post_attention_layernorm.weight", float("nan"),
                 "block 1 gate/up_proj"),
                ("Inf norm", "model.layers.0.input_layernorm.weight", float("inf"),
                 "block 0 q/k/v_proj")]:
            bad_dir = os.path.join(tmp, "nan_model")
            shutil.rmtree(bad_dir, ignore_errors=True)
            shutil.copytree(TINY, bad_dir)
            t = load_file(os.path.join(bad_dir, "model.safetensors"))
            a = t[tensor].copy()
            a[3] = val
            t[tensor] = a
            save_file(t, os.path.join(bad_dir, "model.safetensors"))
            rc, so, se = qc("compile", bad_dir, "-r", gptq, "-o", os.path.join(tmp, "n"), "--quiet")
            check(rc == 1 and "non-finite activation" in se and where in se,
                  f"{what}: exit {rc}, message {se.strip()}")
            check(not os.path.exists(os.path.join(tmp, "n")), f"{what}: no output")
        notours = os.path.join(tmp, "file")
        with open(notours, "w") as f:
            f.write("keep me")
        rc, so, se = qc("compile", TINY, "-r", gptq, "-o", notours, "--quiet")
        check(rc == 1 and "not a quantc compiled model" in se, f"foreign output: {rc} {se}")
        check(open(notours).read() == "keep me", "foreign output untouched")
        leftovers = [f for f in os.listdir(tmp) if ".tmp." in f or ".old." in f]
        check(not leftovers, f"temporary directories left behind: {leftovers}")
    finally:
        shutil.rmtree(tmp)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
