#!/usr/bin/env python3
"""Writes the GGUF test fixtures with the gguf pip package (the reference
implementation of the format and of ggml's block layouts).

  make_gguf_fixtures.py OUTDIR [--seed N] [--corpus DIR]

OUTDIR/gguf_types.gguf      one (2, 256) tensor per supported type, named after the
                            type; F32/F16/BF16 and Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 hold
                            gguf.quants.quantize(random normal data); Q4_K/Q5_K/Q6_K/
                            Q3_K/IQ4_NL/IQ4_XS hold random block bytes with finite f16
                            (super-)scales.
                            Also one metadata key of every value type.
OUTDIR/gguf_types.f32       gguf.quants.dequantize of each tensor, in file order,
                            raw little-endian f32.
OUTDIR/gguf_tiny_llama.gguf a 2-layer llama (dim 32, 4 heads, 2 kv heads, ffn 64,
                            vocab 32, tied embeddings) with a gpt2 vocabulary; q/k
                            rows permuted the way llama.cpp's converter does.
OUTDIR/gguf_tiny_llama_q.f32   layer 0 q_proj in Hugging Face row order (f32).
OUTDIR/gguf_tiny_llama_k.f32   layer 0 k_proj in Hugging Face row order (f32).
OUTDIR/gguf_tiny_llama3_rope.gguf  1 layer, head_dim 16, theta 5e5, rope_freqs.weight for
                            Llama 3 scaling with factor 8 (as llama.cpp's converter writes it).
OUTDIR/gguf_tiny_qwen2.gguf 1-layer qwen2 (q/k/v biases), linear RoPE scaling factor 2.
OUTDIR/gguf_tiny_qwen3.gguf 1-layer qwen3 (q/k norms), head_dim 16 != dim / heads.
--corpus DIR                fuzz seeds: tiny valid and malformed files (< 4 KB each).

The committed tests/data/gguf_* files come from: make_gguf_fixtures.py tests/data --seed 0
and tests/fuzz/corpus/gguf from --corpus tests/fuzz/corpus/gguf.
"""
import argparse
import math
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

SHAPE = (2, 256)  # rows, columns (ggml ne = [256, 2])

# Byte offsets of the f16 super-scales inside one K-quant block.
K_SCALE_OFFSETS = {T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,), T.Q3_K: (108,),
                   T.IQ4_NL: (0,), T.IQ4_XS: (0,)}


def random_k_blocks(rng, qtype, n_blocks):
    """Random block bytes whose f16 scales are finite, moderate numbers."""
    bsize = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(n_blocks, bsize), dtype=np.uint8)
    for off in K_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw


def write_types(outdir, rng):
    path = os.path.join(outdir, "gguf_types.gguf")
    w = gguf.GGUFWriter(path, arch="test")
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.u32", 4000000000, V.UINT32)
    w.add_key_value("test.i32", -2000000000, V.INT32)
    w.add_key_value("test.f32", 0.25, V.FLOAT32)
    w.add_key_value("test.bool", True, V.BOOL)
    w.add_key_value("test.string", "hello", V.STRING)
    w.add_key_value("test.u64", 1 << 40, V.UINT64)
    w.add_key_value("test.i64", -(1 << 40), V.INT64)
    w.add_key_value("test.f64", 0.5, V.FLOAT64)
    w.add_key_value("test.strings", ["a", "bc", "def"], V.ARRAY)
    w.add_key_value("test.f32s", [1.5, -2.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.i32s", [7, -8, 9], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY)
    expected = []
    for qtype in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K,
                  T.Q6_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS):
        if qtype in K_SCALE_OFFSETS:
            n_blocks = SHAPE[0] * SHAPE[1] // gguf.GGML_QUANT_SIZES[qtype][0]
            raw = random_k_blocks(rng, qtype, n_blocks).reshape(SHAPE[0], -1)
        else:
            data = rng.standard_normal(SHAPE).astype(np.float32)
            raw = gguf.quants.quantize(data, qtype)
        deq = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert deq.shape == SHAPE and np.all(np.isfinite(deq)), qtype.name
        expected.append(deq.ravel())
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(expected).astype("<f4").tofile(os.path.join(outdir, "gguf_types.f32"))


def permute(w, heads):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: rows of each head
    reordered so that pairs (i, i + hd/2) become adjacent."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(theta, hd, factor, low=1.0, high=4.0, orig=8192):
    """As llama.cpp's convert_hf_to_gguf.py stores Llama 3.1 scaling."""
    out = []
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi * theta ** (i / hd)
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_tiny_llama(outdir, rng, path=None, vocab=32, layers=2, qtype=T.F32, dim=32, heads=4,
                     kv_heads=2, ffn=64, arch="llama", hd=None, rope=None, theta=100000.0):
    """A tiny model of `arch`; rope: None, ("linear", factor) or ("llama3", factor)."""
    hd = hd or dim // heads
    path = path or os.path.join(outdir, "gguf_tiny_llama.gguf")
    w = gguf.GGUFWriter(path, arch=arch)
    if hd != dim // heads:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if rope and rope[0] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope[1])
    if rope and rope[0] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(theta, hd, rope[1]))
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    tokens = [bytes([97 + i % 26]) * (1 + i // 26) for i in range(vocab)]
    w.add_token_list(tokens)
    w.add_token_types([1] * vocab)
    w.add_token_merges(["a a", "b b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)

    def add(name, arr):
        if arr.ndim == 2 and qtype != T.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", mat(vocab, dim))
    w.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    for layer in range(layers):
        q, k = mat(heads * hd, dim), mat(kv_heads * hd, dim)
        if layer == 0 and outdir and path.endswith("gguf_tiny_llama.gguf"):
            q.astype("<f4").tofile(os.path.join(outdir, "gguf_tiny_llama_q.f32"))
            k.astype("<f4").tofile(os.path.join(outdir, "gguf_tiny_llama_k.f32"))
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", np.ones(dim, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(dim, dtype=np.float32))
        permuted = arch in ("llama", "mistral")
        add(p + "attn_q.weight", permute(q, heads) if permuted else q)
        add(p + "attn_k.weight", permute(k, kv_heads) if permuted else k)
        if arch == "qwen2":
            for n, rows in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
                w.add_tensor(p + f"attn_{n}.bias", (rng.standard_normal(rows)).astype(np.float32))
        if arch == "qwen3":
            w.add_tensor(p + "attn_q_norm.weight", np.ones(hd, dtype=np.float32))
            w.add_tensor(p + "attn_k_norm.weight", np.ones(hd, dtype=np.float32))
        add(p + "attn_v.weight", mat(kv_heads * hd, dim))
        add(p + "attn_output.weight", mat(dim, heads * hd))
        add(p + "ffn_gate.weight", mat(ffn, dim))
        add(p + "ffn_up.weight", mat(ffn, dim))
        add(p + "ffn_down.weight", mat(dim, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_corpus(corpus, rng):
    os.makedirs(corpus, exist_ok=True)
    tiny = os.path.join(corpus, "valid_tiny.gguf")
    w = gguf.GGUFWriter(tiny, arch="llama")
    w.add_key_value("test.strings", ["x", "yz"], V.ARRAY)
    w.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY)
    w.add_key_value("test.f64", 0.5, V.FLOAT64)
    for qtype in (T.F32, T.Q8_0, T.Q4_K, T.Q6_K):
        if qtype in K_SCALE_OFFSETS:
            raw = random_k_blocks(rng, qtype, 1).reshape(1, -1)
        else:
            raw = gguf.quants.quantize(rng.standard_normal((1, 256)).astype(np.float32)
                                       [:, :32 if qtype == T.F32 else 256], qtype)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    good = open(tiny, "rb").read()
    seeds = {
        "truncated_header.gguf": good[:20],
        "truncated_data.gguf": good[:len(good) - 100],
        "huge_kv_count.gguf": good[:16] + struct.pack("<Q", 1 << 60) + good[24:],
        "huge_tensor_count.gguf": good[:8] + struct.pack("<Q", 1 << 60) + good[16:],
        "bad_magic.gguf": b"GGUG" + good[4:],
        "version1.gguf": good[:4] + struct.pack("<I", 1) + good[8:],
        "empty.gguf": b"",
    }
    for name, data in seeds.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)
    write_tiny_llama(None, rng, path=os.path.join(corpus, "tiny_llama.gguf"), vocab=28, layers=1,
                     qtype=T.F16, dim=8, heads=2, kv_heads=1, ffn=16)
    for name in os.listdir(corpus):
        assert os.path.getsize(os.path.join(corpus, name)) < 4096, name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    write_types(a.outdir, rng)
    write_tiny_llama(a.outdir, rng)
    small = dict(vocab=28, layers=1, qtype=T.F16, dim=16, heads=2, kv_heads=1, ffn=32)
    write_tiny_llama(a.outdir, rng, path=os.path.join(a.outdir, "gguf_tiny_llama3_rope.gguf"),
                     rope=("llama3", 8.0), theta=500000.0, **{**small, "heads": 1})
    write_tiny_llama(a.outdir, rng, path=os.path.join(a.outdir, "gguf_tiny_qwen2.gguf"),
                     arch="qwen2", rope=("linear", 2.0), **small)
    write_tiny_llama(a.outdir, rng, path=os.path.join(a.outdir, "gguf_tiny_qwen3.gguf"),
                     arch="qwen3", hd=16, **small)
    if a.corpus:
        write_corpus(a.corpus, np.random.default_rng(a.seed + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
