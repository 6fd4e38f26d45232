"""End-to-end `quantc compile` on the tiny llama model (byte-level tokenizer)
with each committed recipe, checked against independent numpy computations:

- the artifact, read by tests/gen/qc_artifact.py (a second reader written
  from docs/artifact-format.md), holds codes/scales/zeros/g_idx that
  dequantize (in numpy) to weights close to the originals (relative
  Frobenius error below a per-bit-width bound);
- `quantc eval OUT` equals a float64 numpy forward pass (tests/gen/
  numpy_forward.py) over those numpy-dequantized weights: mean NLL within
  1e-4 (f32 vs f64 forward on a 64-wide model differs by ~1e-6 in logits);
- GPTQ has lower output error than RTN at the same format;
- a quantized lm_head (tied in the tiny model) evaluates like numpy's;
- the same compile gives byte-identical artifacts, also with 1 vs 2 BLAS
  threads; zstd-compressed artifacts evaluate to exactly the same NLL;
- `quantc inspect` (text and --json) describes the artifact;
- damaged artifacts (a changed byte, truncation) fail with the section named;
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
# Whether this quantc has the LLVM code generator (then compiles store CPU kernels).
HAVE_LLVM = "(CPU codegen): yes" in subprocess.run([QC, "--version"], capture_output=True,
                                                   text=True).stdout
DATA = os.environ.get("QC_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
CALIB = os.path.join(DATA, "wikitext2-valid.tokens.txt")
failures = 0

try:
    import numpy as np
    from safetensors.numpy import load_file
    import numpy_forward
    import qc_artifact
except ImportError as e:
    print("SKIP: needs numpy and safetensors:", e)
    sys.exit(77)


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def qc(*args, threads=None):
    env = dict(os.environ)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=900, env=env)
    return p.returncode, p.stdout, p.stderr


def compile_and_check(tmp, recipe, bound, text_ids, n_layers=14):
    out = os.path.join(tmp, os.path.basename(recipe) + ".qc")
    rep = os.path.join(tmp, "report.json")
    rc, so, se = qc("compile", TINY, "-r", recipe, "-o", out, "--calib", CALIB, "--calib-samples", "8",
                    "--calib-tokens", "64", "--no-gates", "--report", rep, "--quiet")
    check(rc == 0, f"{recipe}: compile exit {rc}: {se.strip()[-500:]}")
    if rc:
        return None
    report = json.load(open(rep))
    art = qc_artifact.read(out)
    man = art["manifest"]
    check(len(report["layers"]) == n_layers and len(man["layers"]) == n_layers,
          f"{recipe}: {n_layers} layers quantized")
    cfg, orig = numpy_forward.load(TINY)
    weights = {k: v.astype(np.float64) for k, v in art["tensors"].items() if v.dtype.kind == "f"
               and not k.endswith(".scales")}
    worst = 0
    for layer in man["layers"]:
        mod = layer["name"]
        w_hat, codes = qc_artifact.dequantize(art, layer)
        check(int(codes.max()) < (1 << layer["bits"]), f"{mod}: codes fit {layer['bits']} bits")
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
    report["_artifact"], report["_manifest"] = out, man
    check(rc == 0, f"{recipe}: eval exit {rc}: {se}")
    if rc == 0:
        got = json.loads(so)["nll"]
        check(abs(got - nll) < 1e-4, f"{recipe}: eval nll {got:.6f} vs numpy {nll:.6f}")
        print(f"{os.path.basename(recipe)}: worst weight err {worst:.4g}, eval nll {got:.6f} vs numpy {nll:.6f}")
    return report


def artifact_checks(tmp, report, ids):
    """Determinism (incl. BLAS threads), zstd, inspect, damage, on the GPTQ
    act-order w4 g128 compile."""
    first, man = report["_artifact"], report["_manifest"]
    recipe = os.path.join(ROOT, "recipes", "w4a16-g128.yaml")
    args = ["compile", TINY, "-r", recipe, "--calib", CALIB, "--calib-samples", "8",
            "--calib-tokens", "64", "--no-gates", "--quiet"]
    data = open(first, "rb").read()
    # The first compile ran with OPENBLAS_NUM_THREADS=2 (ctest's setting):
    # the same thread count must reproduce every byte.
    again = os.path.join(tmp, "again.qc")
    rc, so, se = qc(*args, "-o", again, threads=2)
    check(rc == 0 and open(again, "rb").read() == data, f"recompile (2 threads) differs: {se}")
    # One thread: the same bytes (test_determinism checks 1, 2 and 8 threads
    # on a model wide enough for OpenBLAS to split its work).
    rc, so, se = qc(*args, "-o", again, threads=1)
    check(rc == 0 and open(again, "rb").read() == data, f"recompile (1 thread) differs: {se}")
    check(man["format_version"] == 1, "manifest version")
    if HAVE_LLVM:
        ks = man["kernels"]
        check(len(ks) == 1 and ks[0]["device"] == "cpu" and ks[0]["name"] == "host"
              and ks[0]["kernels"] >= 1, f"one CPU kernel set for the host: {ks}")
        check(all(l["layout"] == "qcpack1" and l["kernel"] for l in man["layers"]),
              "every layer packed for the generated kernels")
        sec = [s for s in qc_artifact.read(first)["sections"] if s["kind"] == "kernels"]
        check(len(sec) == 1 and sec[0]["target"] == ks[0]["target"], f"kernels section: {sec}")
    else:
        print("NOTE: quantc built without LLVM: no generated kernels to check")
    prov = man["provenance"]
    check(prov["quantc_version"] and len(prov["recipe_xxh3"]) == 16 and len(prov["xxh3"]) == 16
          and prov["recipe"] == open(recipe).read() and prov["calibration"]["samples"] == 8,
          f"provenance: {list(prov)}")
    check("seconds" not in json.dumps(man["metrics"]), "no timings in the manifest")
    # (with one group per row, 128 >= 64 columns, act-order needs no permuted packing)
    check(all(l["act_order"] for l in man["layers"]), "act-order stored")

    # zstd: a smaller file that evaluates to exactly the same NLL.
    z = os.path.join(tmp, "z.qc")
    rc, so, se = qc(*args[:-1], "-o", z, "--compress", "zstd:9")
    check(rc == 0 and "ratio" in so, f"zstd compile: {rc} {so} {se}")
    text = os.path.join(tmp, "sample.txt")
    nll = {}
    for p in (first, z):
        rc, so, se = qc("eval", p, "--text", text, "--ctx", str(len(ids)), "--json", "--quiet")
        nll[p] = json.loads(so)["nll"] if rc == 0 else None
    check(nll[first] is not None and nll[first] == nll[z], f"zstd eval: {nll}")
    check(os.path.getsize(z) < os.path.getsize(first), "zstd artifact is smaller")

    # inspect
    rc, so, se = qc("inspect", first, "--json")
    info = json.loads(so) if rc == 0 else {}
    check(rc == 0 and len(info.get("layers", [])) == 14
          and len(info["kernels"]) == (1 if HAVE_LLVM else 0)
          and info["file_bytes"] == len(data) and info["sections_by_kind"]["tensor"]["count"] > 0,
          f"inspect --json: {rc} {se} {list(info)}")
    rc, so, se = qc("inspect", first)
    check(rc == 0 and ("cpu/host.so" in so if HAVE_LLVM else "kernels: none" in so)
          and "model.layers.0.mlp.down_proj" in so
          and "recipe_xxh3" not in so and "provenance" in so, f"inspect: {rc} {so[:400]} {se}")

    # Damage: one changed byte in a tensor section, and a truncation.
    art = qc_artifact.read(first)
    victim = "model.layers.1.mlp.up_proj." + ("packed" if HAVE_LLVM else "qweight")
    sec = next(s for s in art["sections"] if s["name"] == victim)
    bad = bytearray(data)
    bad[sec["offset"] + 17] ^= 0x20
    p = os.path.join(tmp, "flipped.qc")
    open(p, "wb").write(bad)
    for cmd in (["eval", p, "--text", text], ["inspect", p], ["info", p], ["run", p, "-p", "a"]):
        rc, so, se = qc(*cmd)
        want = f"section {sec['index']} '{victim}' (tensor): checksum mismatch"
        check(rc == 1 and want in se and len(se.strip().splitlines()) == 1,
              f"{cmd[0]} on a flipped byte: {rc} {se.strip()}")
    open(p, "wb").write(data[:len(data) // 2])
    rc, so, se = qc("info", p)
    check(rc == 1 and "truncated" in se, f"truncated artifact: {rc} {se.strip()}")


def compile_eval_equals_gate(tmp, recipe):
    """Compiles recipe (with a 1-window gate on sample.txt at ctx 64) and
    checks that the artifact evaluates to the gate's perplexity; returns the
    artifact as read by qc_artifact, or None."""
    out = os.path.join(tmp, os.path.basename(recipe) + ".qc")
    rc, so, se = qc("compile", TINY, "-r", recipe, "-o", out, "--quiet")
    check(rc == 0, f"{recipe}: compile: {se}")
    if rc:
        return None
    art = qc_artifact.read(out)
    want = art["manifest"]["metrics"]["gates"]["ppl"]
    got = {}
    runs = [("reference", "reference", ()), ("decode", "reference", ("--decode",))]
    if HAVE_LLVM:
        runs += [("generated", "generated", ()), ("generated-decode", "generated", ("--decode",))]
    for name, k, extra in runs:
        rc, so, se = qc("eval", out, "--text", os.path.join(tmp, "sample.txt"), "--ctx", "64",
                        "--max-windows", "1", "--json", "--quiet", "--kernels", k, *extra)
        got[name] = json.loads(so)["ppl"] if rc == 0 else None
        check(rc == 0, f"{recipe}: eval --kernels {k} {' '.join(extra)}: {se}")
    # The reference path is the gate's computation: equal up to the 10
    # significant digits eval --json prints. Generated kernels sum in another
    # order (f32, tiles of 8 columns): within the 0.1% the artifact issue
    # allows; in practice ~1e-6.
    check(got["reference"] is not None and abs(got["reference"] / want - 1) < 1e-9,
          f"{recipe}: artifact ppl (reference) {got['reference']} vs in-memory {want}")
    # --decode feeds one token per call (batch-1: the gemv kernels, which on
    # VNNI hosts quantize x to 16 bits per 64 columns): same 0.1% bound.
    # The reference path decodes in f32 with another summation order than
    # its 128-token chunks: 1e-5.
    check(got["decode"] is not None and abs(got["decode"] / want - 1) < 1e-5,
          f"{recipe}: artifact ppl (reference, --decode) {got['decode']} vs in-memory {want}")
    for name in ("generated", "generated-decode"):
        if got.get(name) is not None:
            check(abs(got[name] / want - 1) < 1e-3,
                  f"{recipe}: artifact ppl ({name}) {got[name]} vs in-memory {want}")
    if got.get("generated") is not None:
        print(f"{os.path.basename(recipe)}: gate ppl {want:.8g}, artifact reference "
              f"{got['reference']:.8g} (decode {got['decode']:.8g}), generated kernels "
              f"{got['generated']:.8g} (decode {got['generated-decode']:.8g})")
    return art


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

        # Online Hadamards (rotate, QuaRot R4), sparse outliers and low-rank
        # factors are stored in the artifact: it evaluates to exactly the
        # gate's perplexity, which compile measured on the in-memory model.
        gate = "gates:\n  text: %s\n  ctx: 64\n  windows: 1\n  max_ppl_increase_pct: 1000\n" % \
            os.path.join(tmp, "sample.txt")
        rot = recipe("rot.yaml", common + "passes:\n  - rotate: {online: [down_proj]}\n"
                     "  - quantize: {method: gptq, bits: 4, group_size: 32}\n" + gate)
        art = compile_eval_equals_gate(tmp, rot)
        if art:
            online = art["manifest"].get("online", {})
            check(len(online) == 2, f"online transforms stored: {online}")
            if HAVE_LLVM:  # the generated kernels apply them (spec _h<n>), no wrapper
                rc, so, se = qc("eval", os.path.join(tmp, "rot.yaml.qc"), "--text",
                                os.path.join(tmp, "sample.txt"), "--ctx", "64", "--max-windows",
                                "1", "--json", "--quiet", "--kernels", "generated")
                fused = json.loads(so).get("fused_online_transforms") if rc == 0 else None
                check(fused == 2, f"online Hadamards fused into the generated kernels: {fused} {se}")
        olr = recipe("olr.yaml", common + "passes:\n  - outliers: {fraction: 0.01}\n"
                     "  - quantize: {method: gptq, bits: 3, group_size: 32}\n"
                     "  - lowrank: {rank: 4}\n" + gate)
        art = compile_eval_equals_gate(tmp, olr)
        if art:
            # numpy's dequantization (dense + CSR + A·B) is close to the original.
            layers = art["manifest"]["layers"]
            check(all(l.get("outliers", 0) > 0 and l.get("rank", 0) == 4 for l in layers),
                  "every layer stores outliers and rank-4 factors")
            _, orig = numpy_forward.load(TINY)
            worst = max(np.linalg.norm(orig[l["weight"]] - qc_artifact.dequantize(art, l)[0])
                        / np.linalg.norm(orig[l["weight"]]) for l in layers)
            check(worst < 0.3, f"outliers+lowrank: worst relative weight error {worst}")

        # Kernels for another CPU: eval names the targets and fails; the
        # reference path still runs it. No kernels: --kernels generated fails.
        if HAVE_LLVM:
            import platform
            foreign = "aarch64" if platform.machine() in ("x86_64", "AMD64") else "x86-64-v3"
            text = os.path.join(tmp, "sample.txt")
            for tgt, want in ((f"cpu:{foreign}", f"none of its generated CPU kernels run on this host ({foreign}:"),
                              ("none", "has no generated kernels")):
                p = os.path.join(tmp, "t.qc")
                rc, so, se = qc("compile", TINY, "-r", gptq, "-o", p, "--target", tgt, "--quiet")
                check(rc == 0, f"compile --target {tgt}: {se}")
                mode = "auto" if tgt != "none" else "generated"
                rc, so, se = qc("eval", p, "--text", text, "--ctx", "32", "--kernels", mode)
                check(rc == 1 and want in se and len(se.strip().splitlines()) == 1,
                      f"--target {tgt}, eval --kernels {mode}: {rc} {se.strip()}")
                rc, so, se = qc("eval", p, "--text", text, "--ctx", "32", "--kernels", "reference")
                check(rc == 0, f"--target {tgt}, eval --kernels reference: {rc} {se.strip()}")
            for tgt, want in (("cuda:sm_9", "CUDA architecture 'sm_9'"),
                              ("cuda:sm_80,cuda:sm_80", "listed twice"),
                              ("cpu:pentium", "target 'cpu:pentium'"),
                              ("cpu:host,cpu:host", "listed twice")):
                rc, so, se = qc("compile", TINY, "-r", gptq, "-o", os.path.join(tmp, "u.qc"),
                                "--target", tgt, "--quiet")
                check(rc == 1 and want in se and not os.path.exists(os.path.join(tmp, "u.qc")),
                      f"--target {tgt}: {rc} {se.strip()}")

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
        check(rc == 1 and "not a quantc artifact" in se, f"foreign output: {rc} {se}")
        check(open(notours).read() == "keep me", "foreign output untouched")
        rc, so, se = qc("compile", TINY, "-r", gptq, "-o", os.path.join(tmp, "no", "such", "m.qc"),
                        "--quiet")
        check(rc == 1 and "no/such/m.qc: cannot create" in se, f"missing output directory: {rc} {se}")
        if reports.get("w4a16-g128"):
            artifact_checks(tmp, reports["w4a16-g128"], ids)
        leftovers = [f for f in os.listdir(tmp) if ".tmp." in f]
        check(not leftovers, f"temporary files left behind: {leftovers}")
    finally:
        shutil.rmtree(tmp)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
