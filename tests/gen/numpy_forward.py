"""Independent numpy (float64) forward pass of the tiny HF models, written
from the transformers modeling code's math (LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM), used as a second
reference next to transformers' own logits.

    python3 tests/gen/numpy_forward.py tests/data/tiny   # rewrites numpy_logits.bin

Files: <dir>/numpy_logits.bin, little-endian: int32 n_tokens, int32 vocab,
int32 ids[n], float32 logits[n * vocab] (row t = logits after token t)."""
import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    w = {}
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for s in shards:
            w.update(st_io.read(os.path.join(model_dir, s)))
    else:
        w = st_io.read(os.path.join(model_dir, "model.safetensors"))
    return cfg, {k: v.astype(np.float64) for k, v in w.items()}


def rope_inv_freq(cfg, head_dim):
    """inv_freq_i = theta^(-2i/d); llama3 scaling (Llama 3.1): divide low
    frequencies (wavelength > orig/low_freq_factor) by factor, keep high ones
    (wavelength < orig/high_freq_factor), interpolate smoothly between."""
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    sc = rp if ("rope_type" in rp or "type" in rp) else (cfg.get("rope_scaling") or {})
    kind = sc.get("rope_type", sc.get("type", "default"))
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / sc["factor"]
    assert kind == "llama3", kind
    factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    orig = sc["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > orig / lo, inv / factor, inv)
    smooth = (orig / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wavelen >= orig / hi) & (wavelen <= orig / lo)
    return np.where(medium, smoothed, out)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(cfg, w, ids):
    mt = cfg["model_type"]
    dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    hd = cfg.get("head_dim") or dim // n_heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(ids)
    inv = rope_inv_freq(cfg, hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]  # (T, hd/2)
    emb = np.concatenate([ang, ang], axis=-1)  # HF layout: halves, not pairs
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = w["model.embed_tokens.weight"][np.asarray(ids)]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = h @ w[p + "self_attn.q_proj.weight"].T
        k = h @ w[p + "self_attn.k_proj.weight"].T
        v = h @ w[p + "self_attn.v_proj.weight"].T
        if mt == "qwen2":
            q = q + w[p + "self_attn.q_proj.bias"]
            k = k + w[p + "self_attn.k_proj.bias"]
            v = v + w[p + "self_attn.v_proj.bias"]
        q, k, v = q.reshape(T, n_heads, hd), k.reshape(T, n_kv, hd), v.reshape(T, n_kv, hd)
        if mt == "qwen3":  # RMSNorm over each head's vector, before RoPE
            q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = n_heads // n_kv  # GQA: query head j reads kv head j // rep
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        a = np.einsum("hts,shd->thd", s, v).reshape(T, n_heads * hd)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", False)
    # A compiled model may carry its own (quantized) lm_head even when tied.
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"]) if tied else w["lm_head.weight"]
    return x @ head.T


def write_logits(path, ids, logits):
    n, vocab = logits.shape
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", n, vocab))
        f.write(np.asarray(ids, dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(logits, dtype="<f4").tobytes())


def read_logits(path):
    with open(path, "rb") as f:
        raw = f.read()
    n, vocab = struct.unpack("<ii", raw[:8])
    ids = np.frombuffer(raw[8 : 8 + 4 * n], dtype="<i4")
    logits = np.frombuffer(raw[8 + 4 * n :], dtype="<f4").reshape(n, vocab)
    return ids, logits


def token_ids(model_dir):
    with open(os.path.join(model_dir, "expected.json")) as f:
        return json.load(f)["token_ids"]


def main(root):
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "config.json")):
            continue
        cfg, w = load(d)
        ids = token_ids(d)
        logits = forward(cfg, w, ids)
        write_logits(os.path.join(d, "numpy_logits.bin"), ids, logits)
        print(f"{name}: logits std {logits.std():.3f}, argmax {logits.argmax(-1)[:8].tolist()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/tiny")
