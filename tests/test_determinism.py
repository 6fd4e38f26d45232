#!/usr/bin/env python3
"""Same model, recipe, calibration data and seed -> byte-identical artifact,
across runs and across thread counts (1, 2, 8: OpenBLAS threads and
quantc's --threads).

The committed tiny models are too small for OpenBLAS to use more than one
thread, so this test writes a wider random llama (hidden 512, ffn 1536,
2 blocks, the tiny llama's byte-level tokenizer) where BLAS calls do split
across threads, and compiles it with a GPTQ act-order recipe (CPU kernels
generated), with rotate + smooth + outliers + GPTQ + lowrank, and with
rotate + allocate (KL-measured sensitivities) + GPTQ."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
import qctest  # noqa: E402
from qctest import CALIB, QC, ROOT, TINY, check, finish, need_calibration_text  # noqa: E402

try:
    import numpy as np
    from safetensors.numpy import save_file
    sys.path.insert(0, os.path.join(ROOT, "tests", "gen"))
    import qc_artifact
except ImportError as e:
    print("SKIP: needs numpy and safetensors:", e)
    sys.exit(77)



def write_model(d, dim=512, ffn=1536, heads=8, kv=4, layers=2, vocab=256):
    os.makedirs(d)
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    hd = dim // heads
    cfg.update(hidden_size=dim, intermediate_size=ffn, num_attention_heads=heads,
               num_key_value_heads=kv, head_dim=hd, num_hidden_layers=layers, vocab_size=vocab)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(TINY, "tokenizer.json"), d)
    rng = np.random.default_rng(0)
    # per-input-channel scale spread and a few outlier channels, as real LLMs have
    col = np.exp(rng.normal(0, 0.5, dim)).astype(np.float32)
    col[rng.choice(dim, 4, replace=False)] *= 20

    def lin(o, i, scale=None):
        w = rng.normal(0, 1 / np.sqrt(i), (o, i)).astype(np.float32)
        return w * (scale if scale is not None else 1)
    t = {"model.embed_tokens.weight": (rng.normal(0, 1, (vocab, dim)) * col).astype(np.float32),
         "model.norm.weight": np.ones(dim, np.float32)}
    for b in range(layers):
        p = f"model.layers.{b}."
        t[p + "input_layernorm.weight"] = (1 + 0.1 * rng.normal(size=dim)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.normal(size=dim)).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = lin(heads * hd, dim)
        t[p + "self_attn.k_proj.weight"] = lin(kv * hd, dim)
        t[p + "self_attn.v_proj.weight"] = lin(kv * hd, dim)
        t[p + "self_attn.o_proj.weight"] = lin(dim, heads * hd)
        t[p + "mlp.gate_proj.weight"] = lin(ffn, dim)
        t[p + "mlp.up_proj.weight"] = lin(ffn, dim)
        t[p + "mlp.down_proj.weight"] = lin(dim, ffn)
    save_file(t, os.path.join(d, "model.safetensors"))


def main():
    need_calibration_text()
    tmp = tempfile.mkdtemp(prefix="qc_det_")
    try:
        model = os.path.join(tmp, "wide")
        write_model(model)
        common = "quantc: 1\ncalibration:\n  text: %s\n  samples: 4\n  tokens: 128\n" % CALIB
        recipes = {
            "gptq": "  - quantize: {method: gptq, bits: 4, group_size: 128, act_order: true}\n",
            "mixed": "  - rotate: {online: [down_proj]}\n  - smooth: {alpha: 0.5}\n"
                     "  - outliers: {fraction: 0.005}\n"
                     "  - quantize: {method: gptq, bits: 3, group_size: 64}\n  - lowrank: {rank: 8}\n",
            # allocate's KL probe and GPTQ candidates decide widths: a last-bit
            # difference there would flip a width
            "allocate": "  - rotate: {}\n  - allocate: {budget_bits: 3.285, candidates: [2, 3, 4]}\n"
                        "  - quantize: {method: gptq, bits: 3, group_size: 128}\n",
        }
        for name, passes in recipes.items():
            recipe = os.path.join(tmp, name + ".yaml")
            with open(recipe, "w") as f:
                f.write(common + "passes:\n" + passes)
            outs = {}
            for threads in (1, 2, 8):
                out = os.path.join(tmp, f"{name}-{threads}-{len(outs)}.qc")
                env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
                # kernels generated for the first recipe (the .so must be
                # deterministic too), not for the second (time)
                target = "cpu:host" if name == "gptq" else "none"
                p = subprocess.run([QC, "compile", model, "-r", recipe, "-o", out, "--quiet",
                                    "--threads", str(threads), "--target", target],
                                   capture_output=True, text=True, env=env, timeout=600)
                check(p.returncode == 0, f"{name}, {threads} threads: {p.stderr.strip()}")
                if p.returncode == 0:
                    outs[(threads, len(outs))] = out
            ref_key = next(iter(outs), None)
            if ref_key is None:
                continue
            ref = open(outs[ref_key], "rb").read()
            for key, out in outs.items():
                same = open(out, "rb").read() == ref
                if not same:
                    a, b = qc_artifact.read(outs[ref_key]), qc_artifact.read(out)
                    diff = [s["name"] for s, t in zip(a["sections"], b["sections"])
                            if s["checksum"] != t["checksum"]]
                    print(f"{name}: {key[0]} threads differs from {ref_key[0]} in sections {diff[:6]}")
                check(same, f"{name}: artifact with {key[0]} threads (run {key[1]}) differs from "
                            f"{ref_key[0]} thread(s)")
            print(f"{name}: {len(outs)} compiles (threads 1, 2, 8), "
                  f"{'all identical' if qctest.failures == 0 else 'NOT identical'}, {len(ref)} bytes")
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
