#!/usr/bin/env python3
"""allocate with `types:` (issue 7): a ggml block type per linear under a
bit budget, written by quantize and carried by the GGUF export, on a tiny
llama written here (dim 256, ffn 288: q/k/v/o/gate/up rows are whole
256-blocks and take the K types; down_proj's 288-wide rows are not, so its
options are llama-quantize's fallbacks q3_k -> Q4_0, q4_k -> Q5_0,
q5_k -> Q5_1, q6_k -> Q8_0):

- budget 5.0 over [q3_k, q4_k, q5_k, q6_k, q8_0] (kl sensitivities): the
  gguf package's reader finds every linear in a type its width allows, the
  types the compile report gives, more than one of them, and the file's
  linears (their bytes, block scales included) average within 0.01 bits of
  the budget and not above it (the solver's costs are the true sizes);
  the export evaluates to the artifact's perplexity (its blocks are what
  quantc evaluated);
- budgets 0.005 above the narrowest and the widest choice over [q4_k, q6_k]
  (hessian sensitivities): every linear in the narrow types (nothing wider
  fits: one layer wider costs >= 0.039 bits per weight), resp. in the wide
  ones (each has the smaller error): the types solved for are the types
  written;
- refusals, exit 1 naming the problem and no artifact: a type quantize does
  not write, a type listed twice, types together with candidates.
Skips (77) without numpy/gguf or the calibration text."""
import json
import os
import sys
import tempfile

try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from make_gguf_fixtures import write_tiny_llama  # noqa: E402
from qctest import CALIB, DATA, check, finish, need_calibration_text, qc  # noqa: E402

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
HF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
      "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
      "mlp.down_proj": "ffn_down"}
# What each listed type writes on 256-wide and on 288-wide rows (bits per weight).
ROW_TYPE = {"q3_k": ("Q3_K", "Q4_0"), "q4_k": ("Q4_K", "Q5_0"), "q5_k": ("Q5_K", "Q5_1"),
            "q6_k": ("Q6_K", "Q8_0"), "q8_0": ("Q8_0", "Q8_0")}
BPW = {"Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "Q8_0": 8.5, "Q4_0": 4.5,
       "Q5_0": 5.5, "Q5_1": 6.0}


def recipe(tmp, name, alloc):
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(f"quantc: 1\ncalibration:\n  text: {CALIB}\n  samples: 8\n  tokens: 64\n"
                f"  seed: 0\npasses:\n  - allocate: {{ {alloc} }}\n"
                "  - quantize: { method: gptq, format: \"gguf:q4_k\", act_order: false }\n")
    return path


def ppl(model, text):
    rc, so, se = qc("eval", model, "--text", text, "--ctx", "64", "--max-windows", "2", "--json",
                    "--quiet")
    check(rc == 0, f"eval {model}: {se}")
    return json.loads(so)["ppl"] if rc == 0 else None


def compile_export(tmp, src, name, alloc):
    """Compiles and exports; returns ({tensor: (type, elements, bytes)}, report) or None."""
    art, out, rep = (os.path.join(tmp, name + s) for s in (".qc", ".gguf", ".json"))
    rc, so, se = qc("compile", src, "-r", recipe(tmp, name, alloc), "-o", art, "--target", "none",
                    "--report", rep, "--quiet")
    check(rc == 0, f"{name}: compile: {se}")
    if rc:
        return None
    rc, so, se = qc("export", art, "--gguf", out, "--embed-type", "F32", "--quiet")
    check(rc == 0, f"{name}: export: {se}")
    if rc:
        return None
    r = gguf.GGUFReader(out)
    ts = {t.name: (t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in r.tensors}
    report = {}
    for l in json.load(open(rep))["layers"]:
        b, mod = l["name"].split(".")[2], l["name"].split(".", 3)[3]
        report[f"blk.{b}.{HF[mod]}.weight"] = l.get("format")
    text = os.path.join(tmp, "sample.txt")
    a, g = ppl(art, text), ppl(out, text)
    check(a is not None and a == g, f"{name}: artifact ppl {a} != exported GGUF ppl {g}")
    return ts, report


def linears(ts):
    return {k: v for k, v in ts.items() if k.startswith("blk.") and k.split(".")[2] in LINEARS}


def average_bits(lin):
    return 8.0 * sum(v[2] for v in lin.values()) / sum(v[1] for v in lin.values())


def main():
    need_calibration_text()
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "sample.txt"), "wb") as f:
            f.write(open(os.path.join(DATA, "wikitext2-test.raw.txt"), "rb").read()[:4000])
        src = os.path.join(tmp, "w256.gguf")
        write_tiny_llama(None, np.random.default_rng(7), path=src, dim=256, heads=4, kv_heads=2,
                         ffn=288)

        names = ["q3_k", "q4_k", "q5_k", "q6_k", "q8_0"]
        types = ", ".join("gguf:" + t for t in names)
        res = compile_export(tmp, src, "mix", f"budget_bits: 5.0, types: [{types}]")
        if res:
            ts, report = res
            lin = linears(ts)
            check(len(lin) == 14, f"mix: {len(lin)} linears in the file")
            for k, (t, n, nb) in lin.items():
                wide = 1 if k.endswith("ffn_down.weight") else 0
                allowed = {ROW_TYPE[x][wide] for x in names}
                check(t in allowed, f"mix: {k} is {t}, not one of {sorted(allowed)}")
                check(report.get(k) == t, f"mix: {k}: file {t}, report {report.get(k)}")
                check(abs(8.0 * nb / n - BPW.get(t, 0)) < 1e-12, f"mix: {k}: {t} {8.0 * nb / n}")
            avg = average_bits(lin)
            used = sorted({v[0] for v in lin.values()})
            print(f"mix: budget 5.0, file's linears {avg:.5f} bits per weight, types {used}")
            check(abs(avg - 5.0) <= 0.01 and avg <= 5.0 + 1e-9, f"mix: {avg} bits, budget 5.0")
            check(len(used) > 1, f"mix: one type only ({used})")

            # The narrowest and the widest choice of [q4_k, q6_k], from the shapes.
            params = {k: v[1] for k, v in lin.items()}
            total = sum(params.values())
            for end, idx in (("narrow", 0), ("wide", 1)):
                pick = ("q4_k", "q6_k")[idx]
                want = {k: ROW_TYPE[pick][1 if k.endswith("ffn_down.weight") else 0]
                        for k in params}
                bits = sum(BPW[want[k]] * params[k] for k in params) / total + 0.005
                res = compile_export(tmp, src, end, f"budget_bits: {bits:.6f}, sensitivity: "
                                     "hessian, types: [gguf:q4_k, gguf:q6_k]")
                if not res:
                    continue
                lin = linears(res[0])
                bad = {k: v[0] for k, v in lin.items() if v[0] != want[k]}
                check(not bad, f"{end}: budget {bits:.4f}: want {sorted(set(want.values()))}, "
                      f"got {bad}")
                print(f"{end}: budget {bits:.5f}, file's linears {average_bits(lin):.5f} bits per "
                      f"weight, types {sorted({v[0] for v in lin.values()})}")

        for name, alloc, words in (
                ("bad-type", "budget_bits: 5.0, types: [gguf:q4_k, gguf:q2_k]",
                 ("'gguf:q2_k' is not a ggml block type", "line 8")),
                ("no-prefix", "budget_bits: 5.0, types: [q4_k, gguf:q6_k]", ("'q4_k'",)),
                ("twice", "budget_bits: 5.0, types: [gguf:q4_k, gguf:q6_k, gguf:q4_k]",
                 ("gguf:q4_k listed twice",)),
                ("both", "budget_bits: 5.0, candidates: [3, 4], types: [gguf:q4_k, gguf:q6_k]",
                 ("types, or candidates and group_sizes, not both",))):
            art = os.path.join(tmp, name + ".qc")
            rc, so, se = qc("compile", src, "-r", recipe(tmp, name, alloc), "-o", art,
                            "--target", "none", "--quiet")
            check(rc == 1 and all(w in se for w in words) and not os.path.exists(art),
                  f"{name}: want exit 1 naming {words}: {rc} {se.strip()}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
