#!/usr/bin/env python3
"""Writes a synthetic llama with Llama-3-8B shapes (by default: 32 blocks,
hidden 4096, ffn 14336, 32 heads / 8 kv heads, vocab 128256, untied
lm_head) as sharded bf16 safetensors plus config.json and a byte-level
tokenizer (the tiny test llama's: calibration ids stay below 256). Random
weights with a realistic spread: per-input-channel scales (log-normal) and
a few outlier channels, so quantization has something to work on.

Tensors are generated and written one at a time (memory stays at one
tensor), shards of about 4 GB, with model.safetensors.index.json.

    bench/gen_large_model.py OUT_DIR [--blocks N] [--hidden H] [--ffn F]
                             [--heads A] [--kv-heads K] [--vocab V]
                             [--device cpu|cuda]

--device cuda draws the matrices with PyTorch on the GPU (the full model in
about a minute instead of many on one CPU core; bench/cuda_llama8b). The
scales and outlier channels are the same; the matrices' random stream is
PyTorch's, so the weights differ from the CPU ones.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARD_BYTES = 4 << 30


def bf16_bytes(a):
    """float32 -> bf16 (round to nearest even) as little-endian bytes."""
    u = a.astype(np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


class NumpyDraw:
    """Matrices from numpy's generator (the default, CPU)."""

    def __init__(self, rng):
        self.rng = rng

    def normal(self, shape, scale):
        """standard normal of shape, times scale (a float or a row of scales)."""
        return self.rng.standard_normal(shape, dtype=np.float32) * scale

    @staticmethod
    def bf16(a):
        return bf16_bytes(a)


class TorchDraw:
    """Matrices from PyTorch's generator on the GPU; bf16 rounding there too
    (round to nearest even, as bf16_bytes)."""

    def __init__(self):
        import torch
        self.t = torch
        self.gen = torch.Generator(device="cuda").manual_seed(0)

    def normal(self, shape, scale):
        t = self.t
        a = t.randn(shape, generator=self.gen, device="cuda", dtype=t.float32)
        return a * (t.from_numpy(np.asarray(scale, np.float32)).cuda() if np.ndim(scale) else scale)

    def bf16(self, a):
        return a.to(self.t.bfloat16).view(self.t.int16).cpu().numpy().tobytes()


def tensors(args, draw=None):
    """(name, shape, generator) in HF order; generator() -> float32 array
    (numpy, or a CUDA tensor with draw = TorchDraw())."""
    rng = np.random.default_rng(0)
    draw = draw or NumpyDraw(rng)
    h, f, v = args.hidden, args.ffn, args.vocab
    hd = h // args.heads
    col = np.exp(rng.normal(0, 0.5, h)).astype(np.float32)
    col[rng.choice(h, 8, replace=False)] *= 20  # outlier input channels
    colf = np.exp(rng.normal(0, 0.3, f)).astype(np.float32)

    def lin(o, i, cscale):
        return lambda: draw.normal((o, i), cscale / np.sqrt(i) / cscale.mean())

    def norm(n):
        return lambda: 1 + draw.normal(n, 0.1)
    out = [("model.embed_tokens.weight", (v, h), lambda: draw.normal((v, h), 0.02))]
    for b in range(args.blocks):
        p = f"model.layers.{b}."
        out += [(p + "input_layernorm.weight", (h,), norm(h)),
                (p + "self_attn.q_proj.weight", (args.heads * hd, h), lin(args.heads * hd, h, col)),
                (p + "self_attn.k_proj.weight", (args.kv_heads * hd, h), lin(args.kv_heads * hd, h, col)),
                (p + "self_attn.v_proj.weight", (args.kv_heads * hd, h), lin(args.kv_heads * hd, h, col)),
                (p + "self_attn.o_proj.weight", (h, args.heads * hd),
                 lin(h, args.heads * hd, np.ones(args.heads * hd, np.float32))),
                (p + "post_attention_layernorm.weight", (h,), norm(h)),
                (p + "mlp.gate_proj.weight", (f, h), lin(f, h, col)),
                (p + "mlp.up_proj.weight", (f, h), lin(f, h, col)),
                (p + "mlp.down_proj.weight", (h, f), lin(h, f, colf))]
    out += [("model.norm.weight", (h,), norm(h)),
            ("lm_head.weight", (v, h), lambda: draw.normal((v, h), 0.02))]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    draw = TorchDraw() if args.device == "cuda" else None
    ts = tensors(args, draw)
    draw = draw or NumpyDraw(None)
    # shards: consecutive tensors up to SHARD_BYTES each
    shards, cur, size = [], [], 0
    for t in ts:
        n = 2 * int(np.prod(t[1]))
        if cur and size + n > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += n
    shards.append(cur)
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape, _ in shard:
            n = 2 * int(np.prod(shape))
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        hj = json.dumps(header).encode()
        hj += b" " * (-len(hj) % 8)
        with open(os.path.join(args.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj)
            for name, shape, gen in shard:
                f.write(draw.bf16(gen()))
        total += off
        print(f"{fname}: {off / 2**30:.2f} GiB", flush=True)
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(args.out, "model.safetensors.index.json"), "w"), indent=1)
    cfg = json.load(open(os.path.join(ROOT, "tests", "data", "tiny", "llama", "config.json")))
    cfg.update(hidden_size=args.hidden, intermediate_size=args.ffn,
               num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
               head_dim=args.hidden // args.heads, num_hidden_layers=args.blocks,
               vocab_size=args.vocab, tie_word_embeddings=False, torch_dtype="bfloat16",
               max_position_embeddings=8192, rope_theta=500000.0)
    json.dump(cfg, open(os.path.join(args.out, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(ROOT, "tests", "data", "tiny", "llama", "tokenizer.json"), args.out)
    print(f"{args.out}: {args.blocks} blocks, hidden {args.hidden}, ffn {args.ffn}, "
          f"{total / 2**30:.2f} GiB bf16")


if __name__ == "__main__":
    main()
