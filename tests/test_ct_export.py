#!/usr/bin/env python3
"""`quantc export --format compressed-tensors` read back without quantc's
code and without the compressed-tensors package: the safetensors decoded
with numpy from the layout compressed-tensors documents (pack_to_int32:
each row's b-bit values as one little-endian bit string in int32 words,
value offset by 2^(b-1); zero points packed the same way along the rows)
must give exactly the weights that tests/gen/qc_artifact.py (the
artifact's independent reader) dequantizes -- both sides multiply the same
f16/f32 scale by the same small integer in f64, so the tolerance is 0.
Full-precision tensors equal the artifact's bit for bit, config.json
describes the model and its quantization.

Compiles of the tiny models: llama w4 g32 asymmetric (act-order, static
groups: actorder "weight"), qwen2 w8 per-channel symmetric, qwen3 w3 g16
symmetric (3-bit values straddle int32 words), llama w2 g32 asymmetric;
a sharded export (index.json). Refused, each with the layer and feature
named, exit 1 and nothing left under the output name or beside it:
outliers, low-rank, an online Hadamard, act-order g_idx, a GGUF block type,
a non-artifact source, a non-empty output directory. With --fallback
dequantize the outlier / low-rank / online-Hadamard layers are written
dense, equal to the artifact's weight (online Hadamard folded: W'·H/sqrt(n),
H the Sylvester matrix) within f32 rounding (rel 1e-6), and listed in the
ignore list. Skips (77) without numpy/safetensors or the calibration text."""
import glob
import json
import os
import shutil
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
import qc_artifact  # noqa: E402
from qctest import CALIB, ROOT, check, finish, need_calibration_text, qc  # noqa: E402

TINY = os.path.join(ROOT, "tests", "data", "tiny")


def compile_tiny(tmp, name, model, passes, extra=""):
    if not os.path.exists(os.path.join(TINY, model, "tokenizer.json")):
        # Calibration needs a tokenizer: the tiny models share one 256-token vocabulary.
        src, model = os.path.join(TINY, model), os.path.join(tmp, model)
        if not os.path.isdir(model):
            shutil.copytree(src, model)
            shutil.copy(os.path.join(TINY, "llama", "tokenizer.json"), model)
    recipe = os.path.join(tmp, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"quantc: 1\ncalibration: {{ text: {CALIB}, samples: 8, tokens: 64 }}\n"
                f"passes:\n{passes}{extra}")
    out = os.path.join(tmp, name + ".qc")
    rc, so, se = qc("compile", os.path.join(TINY, model), "-r", recipe, "-o", out, "--target",
                    "none", "--no-checkpoint", "--quiet", "--threads", "1")
    check(rc == 0, f"{name}: compile exit {rc}: {se}")
    return out if rc == 0 else None


def load_export(d):
    files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
    t = {}
    for f in files:
        t.update(load_file(f))
    return t, json.load(open(os.path.join(d, "config.json")))


def unpack(words, n, bits):
    """Rows of int32 words -> the first n b-bit values of each row (unsigned)."""
    b = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1,
                      bitorder="little")[:, :n * bits]
    return (b.reshape(words.shape[0], n, bits).astype(np.int64) << np.arange(bits)).sum(axis=2)


def decode(t, mod, w):
    """The weight compressed-tensors dequantizes for module mod (scheme w)."""
    bits = w["num_bits"]
    rows, cols = (int(v) for v in t[mod + ".weight_shape"])
    packed = t[mod + ".weight_packed"]
    check(packed.dtype == np.int32 and packed.shape == (rows, (cols * bits + 31) // 32),
          f"{mod}: weight_packed {packed.dtype} {packed.shape}")
    q = unpack(packed, cols, bits) - 2 ** (bits - 1)
    s = t[mod + ".weight_scale"].astype(np.float64)
    ng = cols // w["group_size"] if w["strategy"] == "group" else 1
    check(s.shape == (rows, ng), f"{mod}: weight_scale shape {s.shape}")
    if w["symmetric"]:
        check(mod + ".weight_zero_point" not in t, f"{mod}: symmetric with a zero point")
        z = np.zeros((rows, ng))
    else:
        zp = t[mod + ".weight_zero_point"]
        check(zp.dtype == np.int32 and zp.shape == ((rows * bits + 31) // 32, ng),
              f"{mod}: weight_zero_point {zp.dtype} {zp.shape}")
        z = unpack(zp.T, rows, bits).T - 2 ** (bits - 1)
    g = np.arange(cols) // (cols // ng)
    return s[:, g] * (q - z[:, g])


def check_export(tag, art_path, d, expect):
    art = qc_artifact.read(art_path)
    t, cfg = load_export(d)
    qcfg = cfg["quantization_config"]
    check(qcfg["quant_method"] == "compressed-tensors" and qcfg["format"] == "pack-quantized",
          f"{tag}: quant_method/format {qcfg}")
    groups = list(qcfg["config_groups"].values())
    check(len(groups) == 1 and groups[0]["targets"] == ["Linear"], f"{tag}: groups {groups}")
    w = groups[0]["weights"]
    for k, v in expect.items():
        check(w.get(k) == v, f"{tag}: weights.{k} = {w.get(k)}, want {v}")
    man = art["manifest"]
    src = json.load(open(os.path.join(ROOT, man["provenance"]["source"], "config.json")))
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "model_type", "rope_theta", "rms_norm_eps",
              "tie_word_embeddings"):
        check(cfg.get(k) == src.get(k), f"{tag}: config {k} {cfg.get(k)} vs source {src.get(k)}")
    check(("lm_head" in qcfg["ignore"]) == ("lm_head.weight" not in
                                            [l["weight"] for l in man["layers"]]),
          f"{tag}: ignore {qcfg['ignore']}")
    worst = 0.0
    for layer in man["layers"]:
        ref, _ = qc_artifact.dequantize(art, layer)
        got = decode(t, layer["name"], w)
        worst = max(worst, float(np.abs(got - ref).max()))
    check(worst == 0.0, f"{tag}: decoded weights differ from the artifact's by {worst}")
    for name, a in art["tensors"].items():
        if name in man["tensors"] and not any(name.startswith(l["name"] + ".")
                                              for l in man["layers"]):
            check(name in t and t[name].dtype == a.dtype and
                  np.array_equal(t[name].reshape(-1), a.reshape(-1)),
                  f"{tag}: tensor {name} differs from the artifact's")
    n_packed = sum(1 for k in t if k.endswith(".weight_packed"))
    check(n_packed == len(man["layers"]), f"{tag}: {n_packed} packed of {len(man['layers'])}")
    return t, cfg


def refused(tag, art, out, words, *extra):
    rc, so, se = qc("export", art, "--format", "compressed-tensors", "-o", out, *extra)
    check(rc == 1, f"{tag}: exit {rc}, want 1 ({se.strip()})")
    for w in words:
        check(w in se, f"{tag}: message lacks '{w}': {se.strip()}")
    left = glob.glob(out + ".tmp.*")
    check(not left, f"{tag}: temporary output left behind: {left}")


def sylvester(n):
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def main():
    need_calibration_text()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("llama_w4g32", "llama", "  - quantize: { bits: 4, group_size: 32, symmetric: false, "
             "act_order: true, static_groups: true }\n",
             {"num_bits": 4, "group_size": 32, "symmetric": False, "strategy": "group",
              "actorder": "weight"}),
            ("qwen2_w8ch", "qwen2", "  - quantize: { bits: 8, group_size: 0, symmetric: true, "
             "act_order: false }\n",
             {"num_bits": 8, "group_size": None, "symmetric": True, "strategy": "channel"}),
            ("qwen3_w3g16", "qwen3", "  - quantize: { bits: 3, group_size: 16, symmetric: true, "
             "act_order: false }\n",
             {"num_bits": 3, "group_size": 16, "symmetric": True, "strategy": "group"}),
            ("llama_w2g32", "llama", "  - quantize: { method: rtn, bits: 2, group_size: 32, "
             "symmetric: false }\n",
             {"num_bits": 2, "group_size": 32, "symmetric": False, "strategy": "group"}),
        ]
        arts = {}
        for tag, model, passes, expect in cases:
            art = compile_tiny(tmp, tag, model, passes)
            if not art:
                continue
            arts[tag] = art
            d = os.path.join(tmp, tag + "_ct")
            rc, so, se = qc("export", art, "--format", "compressed-tensors", "-o", d)
            check(rc == 0, f"{tag}: export exit {rc}: {se}")
            if rc == 0:
                check_export(tag, art, d, expect)
                check(oct(os.stat(d).st_mode & 0o777) != "0o700", f"{tag}: directory mode 0700")
        if "llama_w4g32" in arts:
            d = os.path.join(tmp, "sharded")
            rc, so, se = qc("export", arts["llama_w4g32"], "--format", "compressed-tensors", "-o",
                            d, "--max-shard-size", "20K")
            check(rc == 0, f"sharded: exit {rc}: {se}")
            if rc == 0:
                idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
                files = sorted(glob.glob(os.path.join(d, "model-*.safetensors")))
                check(len(files) > 1 and set(idx["weight_map"].values()) ==
                      {os.path.basename(f) for f in files}, f"sharded: {files}")
                t, _ = load_export(d)
                check(set(t) == set(idx["weight_map"]), "sharded: index names differ")
                check_export("sharded", arts["llama_w4g32"], d,
                             {"num_bits": 4, "group_size": 32})
            # Bad destinations: a non-empty directory is left alone.
            busy = os.path.join(tmp, "busy")
            os.mkdir(busy)
            open(os.path.join(busy, "keep"), "w").close()
            refused("non-empty dir", arts["llama_w4g32"], busy, ["not empty"])
            check(os.listdir(busy) == ["keep"], "non-empty dir: contents changed")
        # A recipe's export: entries run after the artifact is written.
        rd = os.path.join(tmp, "from_recipe")
        art = compile_tiny(tmp, "recipe_export", "llama", cases[0][2],
                           f"export:\n  - {{ format: compressed-tensors, path: {rd} }}\n")
        if art:
            check_export("recipe export", art, rd, cases[0][3])
        art = compile_tiny(tmp, "recipe_export_fb", "llama", bad_online := (
            "  - rotate: { online: [down_proj] }\n  - quantize: { bits: 4, group_size: 32, "
            "act_order: false }\n"), f"export:\n  - {{ format: compressed-tensors, path: {rd}2, "
            "fallback: dequantize }\n")
        check(art and os.path.isdir(rd + "2"), "recipe export with fallback: no directory")
        recipe = os.path.join(tmp, "bad_export.yaml")
        with open(recipe, "w") as f:
            f.write(f"quantc: 1\ncalibration: {{ text: {CALIB} }}\npasses:\n{bad_online}"
                    "export:\n  - { format: safetensors, path: x }\n")
        rc, so, se = qc("recipe", "check", recipe)
        check(rc == 1 and "bad_export.yaml:7:15:" in se and "safetensors" in se,
              f"recipe with an unknown export format: exit {rc}: {se}")
        rc, so, se = qc("export", os.path.join(TINY, "llama"), "--format", "compressed-tensors",
                        "-o", os.path.join(tmp, "src_ct"))
        check(rc == 1 and "compile" in se and not os.path.exists(os.path.join(tmp, "src_ct")),
              f"uncompiled source: exit {rc}: {se}")
        # What pack-quantized cannot express: refused, or dense with --fallback dequantize.
        bad = [
            ("outliers", "  - outliers: { fraction: 0.01, targets: [\"*.mlp.down_proj\"] }\n  - quantize: { bits: 4, group_size: "
             "32, act_order: false }\n", ["model.layers.0.mlp.down_proj", "sparse outliers"], "down_proj"),
            ("lowrank", "  - quantize: { bits: 4, group_size: 32, act_order: false }\n"
             "  - lowrank: { rank: 4, method: svd, targets: [\"*.mlp.down_proj\"] }\n",
             ["model.layers.0.mlp.down_proj", "low-rank"], "down_proj"),
            ("online", "  - rotate: { online: [down_proj] }\n  - quantize: { bits: 4, "
             "group_size: 32, act_order: false }\n", ["down_proj", "online Hadamard"],
             "down_proj"),
            ("g_idx", "  - quantize: { bits: 4, group_size: 32, act_order: true }\n",
             ["model.layers.0.", "g_idx"], "all"),
            ("gguf", "  - quantize: { format: \"gguf:q8_0\", act_order: false }\n",
             ["model.layers.0.", "GGUF block type Q8_0"], "all"),
        ]
        for tag, passes, words, dense in bad:
            art = compile_tiny(tmp, tag, "llama", passes)
            if not art:
                continue
            out = os.path.join(tmp, tag + "_ct")
            refused(tag, art, out, words)
            check(not os.path.exists(out), f"{tag}: {out} created")
            rc, so, se = qc("export", art, "--format", "compressed-tensors", "-o", out,
                            "--fallback", "dequantize")
            check(rc == 0 and "written dense" in so, f"{tag} fallback: exit {rc}: {so} {se}")
            if rc:
                continue
            a = qc_artifact.read(art)
            t, cfg = load_export(out)
            # Every layer dense: a plain model, no quantization_config.
            ign = cfg["quantization_config"]["ignore"] if dense != "all" else [
                n[:-len(".weight")] for n in t if n.endswith("_proj.weight")]
            check((dense == "all") == ("quantization_config" not in cfg),
                  f"{tag}: quantization_config present: {'quantization_config' in cfg}")
            layers = {l["weight"]: l for l in a["manifest"]["layers"]}
            for name in [k for k in t if k.endswith("_proj.weight")]:
                mod = name[:-len(".weight")]
                check(mod in ign, f"{tag}: dense {mod} not in ignore")
                check(dense == "all" or mod.endswith(dense), f"{tag}: {mod} written dense")
                if name in layers:
                    ref, _ = qc_artifact.dequantize(a, layers[name])
                else:  # GGUF block-typed weights: llama.cpp's dequantization is tested elsewhere
                    continue
                if mod.endswith("down_proj") and tag == "online":
                    n = ref.shape[1]
                    ref = ref @ (sylvester(n) / np.sqrt(n))
                err = np.abs(t[name] - ref).max() / np.abs(ref).max()
                check(err < 1e-6, f"{tag}: dense {mod} differs from the artifact's by {err:.3g}")
            n_dense = sum(1 for k in t if k.endswith("_proj.weight"))
            check(n_dense > 0, f"{tag}: no dense layer written")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
