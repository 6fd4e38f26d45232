#!/usr/bin/env python3
"""The compressed-tensors export loaded by the real clients on the CPU:
the `compressed-tensors` package's own decompressor and Hugging Face
`transformers` (issue 7). Needs torch, transformers and compressed-tensors
(a multi-GB download, so not in CI): skips (77) with a message without them.

For compiles of the tiny models (llama w4 g32 asymmetric with act-order and
static groups, qwen3 w4 g16 symmetric, qwen3 w3 g16 asymmetric (3-bit values
straddle int32 words: compressed-tensors 0.20's dense packing), qwen2 w8
per-channel with q/k/v
biases, llama rotated (absorbed) + GPTQ w4, llama with an online Hadamard on
down_proj written dense by --fallback dequantize, and a sharded export):
  1. compressed_tensors' PackedQuantizationCompressor.decompress of every
     module equals the weight tests/gen/qc_artifact.py dequantizes, exactly
     (the export stores F32 scales in an F32 model, so the decompressor's
     (q - zp) * scale in the scale's dtype is the artifact's f32 product).
  2. transformers loads the directory (dequantize=True; for symmetric
     schemes also the default compressed-module route: the default route
     cannot load asymmetric packed zero points with compressed-tensors 0.20
     and transformers 5.23, llm-compressor issue #1618) and its logits on
     64 wikitext-2 tokens (quantc's tokenization) match quantc's own
     fake-quant forward (bench gguf_ppl --dump-logits) within 1e-4
     absolute: the weights are the same f32 numbers, both forwards run in
     f32, measured differences are ~1e-6 (summation order); a wrong code,
     scale, zero point or permutation moves logits by 1e-2 or more.
  3. the perplexity of the same 3 windows of 64 tokens (second half of each
     scored, as llama-perplexity and gguf_ppl do) agrees to 1e-5 relative."""
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import transformers
    import compressed_tensors
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig
except ImportError as e:
    print(f"SKIP: {e} (pip install torch transformers compressed-tensors; not in CI: a multi-GB "
          "download)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "gen"))
sys.path.insert(0, HERE)
import qc_artifact  # noqa: E402
import test_ct_export as cte  # noqa: E402
from qctest import DATA, check, finish, need_calibration_text, qc  # noqa: E402

BUILD = os.environ.get("QC_BUILD", os.path.join(cte.ROOT, "build"))
TEXT = os.path.join(DATA, "wikitext2-test.raw.txt")
CTX, CHUNKS = 64, 3


def ct_decompress(d, art):
    """Each quantized module through compressed-tensors' decompressor vs the artifact."""
    t, cfg = cte.load_export(d)
    qcfg = cfg.get("quantization_config")
    if not qcfg:
        return
    (group,) = qcfg["config_groups"].values()
    scheme = QuantizationScheme.model_validate(group)
    comp = BaseCompressor.get_value_from_registry(group["format"])
    a = qc_artifact.read(art)
    worst = 0.0
    for layer in a["manifest"]["layers"]:
        mod = layer["name"]
        if mod in qcfg["ignore"]:
            continue
        sd = {k[len(mod) + 1:]: torch.from_numpy(v.copy()) for k, v in t.items()
              if k.startswith(mod + ".")}
        w = comp.decompress(sd, scheme)["weight"].double().numpy()
        ref, _ = qc_artifact.dequantize(a, layer)
        worst = max(worst, float(np.abs(w - ref).max()))
    check(worst == 0.0, f"{d}: compressed-tensors decompress differs by {worst}")


def quantc_logits(art, tmp):
    """quantc's token ids of the text and its logits of the first window."""
    txt = os.path.join(tmp, "text.txt")
    with open(TEXT, encoding="utf-8") as f, open(txt, "w", encoding="utf-8") as g:
        g.write(f.read()[:20000])
    rc, so, se = qc("tokenize", art, "--text", txt, "--json")
    ids = json.loads(so)
    dump = os.path.join(tmp, "logits.f32")
    p = subprocess.run([os.path.join(BUILD, "gguf_ppl"), art, txt, "--ctx", str(CTX), "--chunks",
                        str(CHUNKS), "--dump-logits", dump], capture_output=True, text=True,
                       timeout=600)
    check(p.returncode == 0, f"gguf_ppl: {p.stderr}")
    ppl = float(re.search(r"PPL = ([0-9.]+)", p.stdout).group(1))
    return ids, np.fromfile(dump, np.float32), ppl


def hf_check(tag, d, ids, ql, qppl, dequantize):
    kw = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if dequantize else {}
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
    V = m.config.vocab_size
    nll, n = 0.0, 0
    with torch.no_grad():
        for c in range(CHUNKS):
            win = ids[c * CTX:(c + 1) * CTX]
            lg = m(torch.tensor([win])).logits[0].double()
            if c == 0:
                diff = float(np.abs(lg.numpy() - ql.reshape(CTX, V)).max())
                check(diff < 1e-4, f"{tag}: max |logit - quantc| = {diff:.3g}")
                print(f"{tag}: max |dlogit| {diff:.3g} (max |logit| {np.abs(ql).max():.3g})")
            lp = torch.log_softmax(lg, -1)
            for pos in range(CTX // 2, CTX - 1):
                nll -= float(lp[pos, win[pos + 1]])
                n += 1
    ppl = float(np.exp(nll / n))
    check(abs(ppl / qppl - 1) < 1e-5, f"{tag}: perplexity {ppl} vs quantc {qppl}")
    print(f"{tag}: perplexity transformers {ppl:.6f}, quantc {qppl:.6f}")


def main():
    need_calibration_text()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"compressed-tensors {compressed_tensors.__version__}")
    cases = [
        ("llama_w4g32", "llama", "  - quantize: { bits: 4, group_size: 32, symmetric: false, "
         "act_order: true, static_groups: true }\n", [], (True,)),
        ("qwen3_w4g16", "qwen3", "  - quantize: { bits: 4, group_size: 16, symmetric: true, "
         "act_order: false }\n", [], (False, True)),
        ("qwen3_w3g16", "qwen3", "  - quantize: { bits: 3, group_size: 16, symmetric: false, "
         "act_order: false }\n", [], (True,)),
        ("qwen2_w8ch", "qwen2", "  - quantize: { bits: 8, group_size: 0, symmetric: true, "
         "act_order: false }\n", [], (False,)),
        ("llama_rot_w4", "llama", "  - rotate: { seed: 1 }\n  - quantize: { bits: 4, "
         "group_size: 32, symmetric: false, act_order: false }\n", ["--max-shard-size", "40K"],
         (True,)),
        ("llama_online", "llama", "  - rotate: { online: [down_proj] }\n  - quantize: { bits: 4, "
         "group_size: 32, symmetric: true, act_order: false }\n", ["--fallback", "dequantize"],
         (False, True)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for tag, model, passes, extra, routes in cases:
            art = cte.compile_tiny(tmp, tag, model, passes)
            if not art:
                continue
            d = os.path.join(tmp, tag + "_ct")
            rc, so, se = qc("export", art, "--format", "compressed-tensors", "-o", d, *extra)
            check(rc == 0, f"{tag}: export exit {rc}: {se}")
            if rc:
                continue
            ct_decompress(d, art)
            ids, ql, qppl = quantc_logits(art, tmp)
            for deq in routes:
                hf_check(f"{tag} ({'dequantize' if deq else 'compressed'})", d, ids, ql, qppl,
                         deq)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
