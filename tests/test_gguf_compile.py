#!/usr/bin/env python3
"""Quantize pass `format: gguf:TYPE` end to end (issue 7), on the tiny GGUF
llama fixture (32 wide, so the 32-weight block types; K types fall back as
llama-quantize does: q4_k -> Q5_0, q3_k -> Q4_0, iq4_xs -> IQ4_NL, q6_k -> Q8_0):

- compile (GPTQ with rotate, GPTQ with act-order, RTN), then `quantc export`
  of the artifact: the gguf package's reader finds every linear in the
  expected type, and the file (embedding and rotate's untied head written
  F32) evaluates in quantc to exactly the artifact's perplexity (same 10
  significant digits): the exported blocks are the weights quantc
  evaluated, unchanged; a tied head is not written;
- without rotate, the reader's dequantized export against the source's
  weights gives each layer's ‖W − Ŵ‖²/‖W‖² that the compile reported from
  its own dequantized weights (relative 1e-5: the report's 8 digits, sums in
  another order), so the reader's values are quantc's;
- GPTQ lowers the mean output error below RTN's at 4 bits;
- format gguf:q4_k_m / gguf:q3_k_m: every linear in the type llama-quantize's
  Q4_K_M / Q3_K_M gives it (the rule of llama-quant.cpp, written again here),
  after the fallbacks, and the export evaluates to the artifact's perplexity;
- recipes/gguf-*.yaml pass `quantc recipe check`;
- refusals, each naming the layer and the feature, no output file: outliers
  or lowrank with a GGUF format (compile), rotate's online Hadamard with a
  GGUF format (compile), exporting integer codes (format int); with
  --fallback dequantize those layers (and an online Hadamard, folded in) are
  written F32 and the export evaluates to the artifact's perplexity;
- a recipe's `export: [{format: gguf, path: ...}]` entry: compile writes
  the file, byte for byte what `quantc export OUT --gguf` writes from the
  artifact afterwards (so the checks above on that command hold for it), in
  the normal file mode; the reader finds the linears in the compile's type
  with the values of the --embed-type F32 export whose perplexity equals
  the artifact's; with integer codes the entry is refused (the recipe's
  file:line:col and the layer named, exit 1, the artifact kept, no GGUF)
  unless it says `fallback: dequantize` (linears F32).
Skips (77) without numpy/gguf or the calibration text."""
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
from qctest import CALIB, DATA, QC, ROOT, check, finish, need_calibration_text  # noqa: E402

SRC = os.path.join(ROOT, "tests", "data", "gguf_tiny_llama.gguf")


def qc(*args):
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def recipe(tmp, name, passes):
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(f"quantc: 1\ncalibration:\n  text: {CALIB}\n  samples: 8\n  tokens: 64\n"
                f"  seed: 0\npasses:\n{passes}")
    return path


def read(path):
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                                    np.float64)) for t in r.tensors}


def ppl(model, text):
    rc, so, se = qc("eval", model, "--text", text, "--ctx", "64", "--max-windows", "2", "--json",
                    "--quiet")
    check(rc == 0, f"eval {model}: {se}")
    return json.loads(so)["ppl"] if rc == 0 else None


LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
      "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}


def compile_export(tmp, name, passes, want_type, source=None):
    """Compiles and exports; returns (report, exported tensors) or None."""
    art, out, rep = (os.path.join(tmp, name + s) for s in (".qc", ".gguf", ".json"))
    rc, so, se = qc("compile", SRC, "-r", recipe(tmp, name, passes), "-o", art, "--target",
                    "none", "--report", rep, "--quiet")
    check(rc == 0, f"{name}: compile: {se}")
    if rc:
        return None
    rc, so, se = qc("export", art, "--gguf", out, "--embed-type", "F32", *(
        ["--output-type", "F32"] if "rotate" in passes else []), "--quiet")
    check(rc == 0, f"{name}: export: {se}")
    if rc:
        return None
    ts = read(out)
    want = want_type if callable(want_type) else lambda b, l: want_type
    for b in range(2):
        for l in LINEARS:
            t = ts.get(f"blk.{b}.{l}.weight")
            check(t is not None and t[0] == want(b, l),
                  f"{name}: blk.{b}.{l}.weight is {t and t[0]}, want {want(b, l)}")
    # rotate unties the head (the final norm folds into it): then it is F32;
    # a tied head of a compile is not written (llama.cpp reads token_embd).
    check(ts.get("output.weight", ("F32",))[0] == "F32" and
          (("output.weight" in ts) == ("rotate" in passes)),
          f"{name}: output.weight {'output.weight' in ts}")
    text = os.path.join(tmp, "sample.txt")
    a, g = ppl(art, text), ppl(out, text)
    check(a is not None and a == g, f"{name}: artifact ppl {a} != exported GGUF ppl {g}")
    print(f"{name}: {want_type if not callable(want_type) else 'mix'}, artifact and export ppl "
          f"{a} / {g}")
    report = json.load(open(rep))
    for l in report["layers"]:
        b, mod = int(l["name"].split(".")[2]), l["name"].split(".", 3)[3]
        w = want(b, next(k for k, v in HF.items() if v == mod))
        check(l.get("format") == w, f"{name}: {l['name']}: report format {l.get('format')}, {w}")
    return report, ts


def refused(tmp, name, passes, *words):
    art = os.path.join(tmp, name + ".qc")
    rc, so, se = qc("compile", SRC, "-r", recipe(tmp, name, passes), "-o", art, "--target",
                    "none", "--quiet")
    check(rc == 1 and all(w in se for w in words) and not os.path.exists(art),
          f"{name}: want exit 1 naming {words}: {rc} {se.strip()}")


def recipe_export(tmp):
    """A recipe's export: entries with format gguf (written by compile)."""
    text = os.path.join(tmp, "sample.txt")
    q = "  - quantize: { method: gptq, format: \"gguf:q4_1\", act_order: false }\n"
    out = os.path.join(tmp, "recipe-exp.gguf")
    art = os.path.join(tmp, "recipe-exp.qc")
    rc, so, se = qc("compile", SRC, "-r", recipe(tmp, "recipe-exp", q + "export:\n  - { format: "
                    f"gguf, path: {out} }}\n"), "-o", art, "--target", "none", "--quiet")
    check(rc == 0 and os.path.exists(out), f"recipe export: compile: {rc} {se}")
    if rc or not os.path.exists(out):
        return
    mask = os.umask(0)
    os.umask(mask)
    m = os.stat(out).st_mode & 0o777
    check(m == 0o666 & ~mask, f"recipe export: mode {m:04o}, umask {mask:03o}")
    # What `quantc export OUT --gguf` writes from the artifact, to the byte.
    cli, f32 = os.path.join(tmp, "recipe-exp-cli.gguf"), os.path.join(tmp, "recipe-exp-f32.gguf")
    rc, so, se = qc("export", art, "--gguf", cli, "--quiet")
    check(rc == 0 and open(cli, "rb").read() == open(out, "rb").read(),
          f"recipe export: differs from quantc export's file ({rc} {se})")
    rc, so, se = qc("export", art, "--gguf", f32, "--embed-type", "F32", "--quiet")
    check(rc == 0, f"recipe export: F32-embedding export: {se}")
    if rc:
        return
    ts, ref = read(out), read(f32)
    for b in range(2):
        for l in LINEARS:
            k = f"blk.{b}.{l}.weight"
            same = np.array_equal(ts[k][1], ref[k][1])
            check(ts[k][0] == "Q4_1" and same, f"recipe export: {k}: {ts[k][0]}, same {same}")
    pa, pg = ppl(art, text), ppl(f32, text)
    check(pa is not None and pa == pg, f"recipe export: artifact ppl {pa}, export's {pg}")
    print(f"recipe export: linears Q4_1 as compiled, artifact / export ppl {pa} / {pg}")
    # Integer codes: refused by the entry (artifact kept, no GGUF), or dense F32.
    q = "  - quantize: { method: rtn, bits: 4, group_size: 32 }\n"
    out, art = os.path.join(tmp, "recipe-int.gguf"), os.path.join(tmp, "recipe-int.qc")
    path = recipe(tmp, "recipe-int", q + f"export:\n  - {{ format: gguf, path: {out} }}\n")
    rc, so, se = qc("compile", SRC, "-r", path, "-o", art, "--target", "none", "--quiet")
    check(rc == 1 and f"{path}:10:5:" in se and "model.layers.0.self_attn.q_proj" in se and
          "integer codes" in se and os.path.exists(art) and not os.path.exists(out),
          f"recipe export of integer codes: want a refusal: {rc} {se.strip()}")
    path = recipe(tmp, "recipe-int-fb", q + f"export:\n  - {{ format: gguf, path: {out}, "
                  "fallback: dequantize }\n")
    rc, so, se = qc("compile", SRC, "-r", path, "-o", art, "--target", "none", "--quiet")
    check(rc == 0 and os.path.exists(out), f"recipe export with fallback: {rc} {se}")
    if rc == 0:
        ts = read(out)
        check(all(ts[f"blk.{b}.{l}.weight"][0] == "F32" for b in range(2) for l in LINEARS),
              "recipe export with fallback: linears not F32")


def main():
    need_calibration_text()
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "sample.txt"), "wb") as f:
            f.write(open(os.path.join(DATA, "wikitext2-test.raw.txt"), "rb").read()[:4000])
        for t in ("q4_k", "q3_k", "iq4_xs", "q8_0", "q4_k_m", "q3_k_m", "allocate"):
            rc, so, se = qc("recipe", "check", os.path.join(ROOT, "recipes", f"gguf-{t}.yaml"),
                            "--model", SRC)
            check(rc == 0, f"recipe check gguf-{t}: {se}")
        rot = "  - rotate: { kind: hadamard, seed: 0 }\n"
        for fmt, want in (("q4_0", "Q4_0"), ("q8_0", "Q8_0"), ("iq4_nl", "IQ4_NL"),
                          ("q5_1", "Q5_1"), ("q4_k", "Q5_0"), ("q3_k", "Q4_0"), ("iq4_xs", "IQ4_NL")):
            compile_export(tmp, f"rot-{fmt}", rot + f"  - quantize: {{ method: gptq, format: "
                           f"\"gguf:{fmt}\", act_order: false }}\n", want)
        compile_export(tmp, "act-q4_1", rot + "  - quantize: { method: gptq, format: "
                       "\"gguf:q4_1\", act_order: true }\n", "Q4_1")
        # llama-quantize's Q4_K_M / Q3_K_M per-tensor types (llama-quant.cpp
        # llama_tensor_get_type, 2 layers), then the 32-wide fallbacks.
        def more_bits(i, n):
            return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
        fb = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q3_K": "Q4_0"}
        def q4_k_m(b, l):
            return fb["Q6_K" if l in ("attn_v", "ffn_down") and more_bits(b, 2) else "Q4_K"]
        def q3_k_m(b, l):
            return fb[{"attn_v": "Q5_K" if b < 2 else "Q4_K", "ffn_down": "Q5_K" if b < 2 // 16
                       else "Q4_K", "attn_output": "Q4_K"}.get(l, "Q3_K")]
        for fmt, want in (("q4_k_m", q4_k_m), ("q3_k_m", q3_k_m)):
            compile_export(tmp, f"rot-{fmt}", rot + f"  - quantize: {{ method: gptq, format: "
                           f"\"gguf:{fmt}\", act_order: false }}\n", want)

        # Without rotate the exported values line up with the source weights.
        src = read(SRC)
        errs = {}
        for method in ("rtn", "gptq"):
            res = compile_export(tmp, f"plain-{method}", f"  - quantize: {{ method: {method}, "
                                 "format: \"gguf:q4_0\", act_order: false }\n", "Q4_0")
            if not res:
                continue
            report, ts = res
            errs[method] = np.mean([l["output_rel_err"] for l in report["layers"]])
            for l in report["layers"]:
                b, mod = l["name"].split(".")[2], l["name"].split(".", 3)[3]
                g = next(k for k, v in HF.items() if v == mod)
                w, q = src[f"blk.{b}.{g}.weight"][1], ts[f"blk.{b}.{g}.weight"][1]
                rel = float(((w - q) ** 2).sum() / (w ** 2).sum())
                check(abs(rel / l["weight_rel_err"] - 1) < 1e-5,
                      f"plain-{method}: {l['name']}: gguf reader's error {rel:.8g} vs "
                      f"quantc's {l['weight_rel_err']:.8g}")
        if len(errs) == 2:
            print(f"mean output error Q4_0: RTN {errs['rtn']:.4g}, GPTQ {errs['gptq']:.4g}")
            check(errs["gptq"] < errs["rtn"], f"GPTQ {errs['gptq']} not below RTN {errs['rtn']}")

        q = "  - quantize: { method: gptq, format: \"gguf:q4_0\" }\n"
        # quantize takes a block's largest layers first (peak memory), so the
        # refusal names whichever of block 0's layers it reached first.
        refused(tmp, "outliers", "  - outliers: { fraction: 0.01 }\n" + q,
                "model.layers.0.", "sparse outliers")
        refused(tmp, "lowrank", q + "  - lowrank: { rank: 4 }\n",
                "model.layers.0.self_attn.q_proj", "low-rank")
        refused(tmp, "online", "  - rotate: { kind: hadamard, seed: 0, online: [down_proj] }\n" +
                q, "model.layers.0.mlp.down_proj", "online Hadamard")
        art, out = os.path.join(tmp, "int.qc"), os.path.join(tmp, "int.gguf")
        rc, so, se = qc("compile", SRC, "-r", recipe(tmp, "int", "  - quantize: { method: rtn, "
                        "bits: 4, group_size: 32 }\n"), "-o", art, "--target", "none", "--quiet")
        check(rc == 0, f"int compile: {se}")
        rc, so, se = qc("export", art, "--gguf", out)
        check(rc == 1 and "model.layers.0.self_attn.q_proj" in se and "integer codes" in se and
              not os.path.exists(out), f"int export: want a refusal: {rc} {se.strip()}")
        # --fallback dequantize: those layers dense F32, the weights quantc evaluates (an
        # online Hadamard folded in: equal up to f32 rounding of W'·H/sqrt(n)).
        text = os.path.join(tmp, "sample.txt")
        onl = os.path.join(tmp, "online-int.qc")
        rc, so, se = qc("compile", SRC, "-r", recipe(tmp, "online-int", "  - rotate: { online: "
                        "[down_proj] }\n  - quantize: { method: rtn, bits: 4, group_size: 32 }\n"),
                        "-o", onl, "--target", "none", "--quiet")
        check(rc == 0, f"online-int compile: {se}")
        for a, tol in ((art, 0.0), (onl, 1e-5)):
            out = a[:-3] + "-dense.gguf"
            rc, so, se = qc("export", a, "--gguf", out, "--fallback", "dequantize", "--embed-type",
                            "F32", "--output-type", "F32")
            check(rc == 0 and "14 layers written dense F32" in so, f"{a} fallback: {rc} {so} {se}")
            if rc:
                continue
            ts = read(out)
            check(all(ts[f"blk.{b}.{l}.weight"][0] == "F32" for b in range(2) for l in LINEARS),
                  f"{a} fallback: linears not F32")
            pa, pg = ppl(a, text), ppl(out, text)
            check(pa is not None and pg is not None and abs(pg / pa - 1) <= tol,
                  f"{a} fallback: artifact ppl {pa} vs dense GGUF {pg}")
            print(f"fallback {os.path.basename(a)}: artifact ppl {pa}, dense GGUF {pg}")
        recipe_export(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
