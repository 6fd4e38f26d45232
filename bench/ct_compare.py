#!/usr/bin/env python3
"""A compressed-tensors export run by Hugging Face transformers against
quantc's own fake-quant forward of the artifact it came from (issue 7).

  bench/ct_compare.py ART.qc DIR [--text FILE] [--ctx 512] [--chunks 4]

quantc side: `quantc tokenize ART --text FILE` for the token ids and
build/gguf_ppl (windows of --ctx tokens, the second half of each scored, as
llama-perplexity does; logits of the first window dumped). transformers
side: DIR loaded on the CPU in float32 (dequantize=True: the route that also
reads asymmetric packed zero points), the same windows of the same ids.
Prints max |Δlogit| over the first window, the perplexity of each side and
the per-window NLL differences. Needs torch, transformers, compressed-tensors."""
import argparse
import json
import os
import re
import subprocess
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM, CompressedTensorsConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("art")
    ap.add_argument("dir")
    ap.add_argument("--text", default=os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                   "wikitext2-test.raw.txt"))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ids = json.loads(subprocess.run([os.path.join(a.build, "quantc"), "tokenize", a.art,
                                         "--text", a.text, "--json"], check=True,
                                        capture_output=True, text=True).stdout)
        dump = os.path.join(tmp, "l.f32")
        p = subprocess.run([os.path.join(a.build, "gguf_ppl"), a.art, a.text, "--ctx",
                            str(a.ctx), "--chunks", str(a.chunks), "--dump-logits", dump],
                           check=True, capture_output=True, text=True)
        qppl = float(re.search(r"PPL = ([0-9.]+)", p.stdout).group(1))
        running = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+)", p.stdout)]
        ql = np.fromfile(dump, np.float32)
    m = AutoModelForCausalLM.from_pretrained(
        a.dir, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True))
    V = m.config.vocab_size
    nll, n, per = 0.0, 0, []
    with torch.no_grad():
        for c in range(a.chunks):
            win = ids[c * a.ctx:(c + 1) * a.ctx]
            lg = m(torch.tensor([win])).logits[0].double()
            if c == 0:
                d = np.abs(lg.numpy() - ql.reshape(a.ctx, V))
                print(f"window 1: max |dlogit| {d.max():.3g}, mean {d.mean():.3g} "
                      f"(max |logit| {np.abs(ql).max():.3g})")
            lp = torch.log_softmax(lg, -1)
            for pos in range(a.ctx // 2, a.ctx - 1):
                nll -= float(lp[pos, win[pos + 1]])
                n += 1
            per.append(float(np.exp(nll / n)))
    print("running perplexity, transformers:", " ".join(f"{x:.6f}" for x in per))
    print("running perplexity, quantc:      ", " ".join(f"{x:.4f}" for x in running))
    ppl = per[-1]
    print(f"perplexity over {a.chunks} windows of {a.ctx}: transformers {ppl:.6f}, "
          f"quantc {qppl:.6f}, relative difference {ppl / qppl - 1:.2e}")


if __name__ == "__main__":
    main()
