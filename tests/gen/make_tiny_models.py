"""Writes small random Hugging Face models (config.json + safetensors) to
tests/data/tiny/<name>/, seeded, so the loaders and the forward pass can be
checked against transformers (golden_logits.py) and numpy (numpy_forward.py).

    python3 tests/gen/make_tiny_models.py tests/data/tiny

Needs numpy and safetensors only. Each model also gets expected.json: the
config values quantc should read, per-tensor shape/sum/first values (after
the dtype round trip), and the token ids the reference logits use."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_forward  # noqa: E402
import st_io  # noqa: E402

BASE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=256, hidden_act="silu", initializer_range=0.02,
            rms_norm_eps=1e-5, use_cache=True, attention_dropout=0.0, bos_token_id=1,
            eos_token_id=2, transformers_version="4.46.0")

LLAMA3_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64, "rope_type": "llama3"}

# name: (config overrides, safetensors dtype, number of shards)
MODELS = {
    "llama": (dict(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True,
                   max_position_embeddings=512, rope_theta=10000.0, rope_scaling=None,
                   attention_bias=False, mlp_bias=False, pretraining_tp=1, head_dim=16,
                   torch_dtype="float32"), "F32", 1),
    "llama3_sharded": (dict(model_type="llama", architectures=["LlamaForCausalLM"],
                            tie_word_embeddings=False, max_position_embeddings=512,
                            rope_theta=500000.0, rope_scaling=LLAMA3_SCALING, attention_bias=False,
                            mlp_bias=False, pretraining_tp=1, head_dim=16, eos_token_id=[2, 3],
                            torch_dtype="bfloat16"), "BF16", 2),
    "mistral": (dict(model_type="mistral", architectures=["MistralForCausalLM"],
                     tie_word_embeddings=False, max_position_embeddings=32768, rope_theta=1000000.0,
                     sliding_window=4096, head_dim=None, torch_dtype="float16"), "F16", 1),
    "qwen2": (dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=False,
                   max_position_embeddings=32768, rope_theta=1000000.0, rope_scaling=None,
                   use_sliding_window=False, sliding_window=4096, max_window_layers=2,
                   bos_token_id=None, eos_token_id=2, torch_dtype="float32"), "F32", 1),
    "qwen3": (dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], tie_word_embeddings=True,
                   head_dim=32, max_position_embeddings=40960, rope_theta=1000000.0,
                   rope_scaling=None, attention_bias=False, use_sliding_window=False,
                   sliding_window=None, max_window_layers=2, rms_norm_eps=1e-6,
                   torch_dtype="float32"), "F32", 1),
}

N_TOKENS = 24


def make_weights(cfg, rng):
    """Init like a trained-ish model: projections N(0, 0.08^2), embeddings
    N(0, 0.1^2) (tied heads then give logits of std ~1), norms 1 + N(0, 0.1^2),
    biases N(0, 0.1^2); zero-mean noise everywhere so nothing is degenerate."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // nh
    mt = cfg["model_type"]

    def lin(o, i, std=0.08):
        return rng.normal(0, std, (o, i)).astype(np.float32)

    def norm(n):
        return (1 + rng.normal(0, 0.1, n)).astype(np.float32)

    def bias(n):
        return rng.normal(0, 0.1, n).astype(np.float32)

    w = {"model.embed_tokens.weight": lin(v, d, 0.1)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = lin(nh * hd, d)
        w[p + "self_attn.k_proj.weight"] = lin(nkv * hd, d)
        w[p + "self_attn.v_proj.weight"] = lin(nkv * hd, d)
        if mt == "qwen2":
            w[p + "self_attn.q_proj.bias"] = bias(nh * hd)
            w[p + "self_attn.k_proj.bias"] = bias(nkv * hd)
            w[p + "self_attn.v_proj.bias"] = bias(nkv * hd)
        if mt == "qwen3":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "self_attn.o_proj.weight"] = lin(d, nh * hd)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = lin(f, d)
        w[p + "mlp.up_proj.weight"] = lin(f, d)
        w[p + "mlp.down_proj.weight"] = lin(d, f)
    w["model.norm.weight"] = norm(d)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(v, d, 0.1)
    return w


def write_model(out, name, over, dtype, shards, seed):
    rng = np.random.default_rng(seed)
    cfg = dict(BASE)
    cfg.update(over)
    cfg = {k: cfg[k] for k in sorted(cfg)}  # transformers writes keys sorted
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.endswith(".safetensors") or f.endswith(".json") or f.endswith(".bin"):
            os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    w = make_weights(cfg, rng)
    meta = {"format": "pt"}
    if shards == 1:
        path = os.path.join(d, "model.safetensors")
        if dtype == "BF16":
            st_io.write(path, w, dtype, meta)
        else:
            from safetensors.numpy import save_file  # the reference writer
            np_dt = np.float32 if dtype == "F32" else np.float16
            save_file({k: v.astype(np_dt) for k, v in w.items()}, path, metadata=meta)
    else:
        names = list(w)
        per = (len(names) + shards - 1) // shards
        weight_map, total = {}, 0
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: w[k] for k in names[s * per:(s + 1) * per]}
            st_io.write(os.path.join(d, fname), part, dtype, meta)
            for k, v in part.items():
                weight_map[k] = fname
                total += v.size * st_io.ITEM[dtype]
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total},
                       "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}, f, indent=2)
            f.write("\n")

    # What the files hold after the dtype round trip, read back independently.
    _, back = numpy_forward.load(d)
    tensors = {}
    for k in sorted(back):
        a = back[k]
        tensors[k] = {"shape": list(a.shape), "sum": float(a.sum()),
                      "abs_sum": float(np.abs(a).sum()), "first": [float(x) for x in a.flat[:4]]}
    ids = [int(x) for x in np.random.default_rng(1000 + seed).integers(0, cfg["vocab_size"],
                                                                        N_TOKENS)]
    nh = cfg["num_attention_heads"]
    rs = cfg.get("rope_scaling") or {}
    expect = {
        "config": {
            "n_layers": cfg["num_hidden_layers"], "dim": cfg["hidden_size"], "n_heads": nh,
            "n_kv_heads": cfg["num_key_value_heads"],
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // nh,
            "ffn_dim": cfg["intermediate_size"], "vocab": cfg["vocab_size"],
            "max_pos": cfg["max_position_embeddings"], "rope_theta": cfg["rope_theta"],
            "norm_eps": cfg["rms_norm_eps"], "tied": int(cfg["tie_word_embeddings"]),
            "qk_norm": int(cfg["model_type"] == "qwen3"),
            "attn_bias": int(cfg["model_type"] == "qwen2"),
            "rope_scaling": rs.get("rope_type", "none"), "rope_factor": rs.get("factor", 1.0),
            "bos_id": -1 if cfg["bos_token_id"] is None else cfg["bos_token_id"],
            "eos_id": cfg["eos_token_id"][0] if isinstance(cfg["eos_token_id"], list)
            else cfg["eos_token_id"],
            "arch_name": cfg["architectures"][0], "dtype": dtype, "n_files": shards,
        },
        "token_ids": ids,
        "tensors": tensors,
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expect, f, indent=1)
        f.write("\n")
    logits = numpy_forward.forward(*numpy_forward.load(d), ids)
    numpy_forward.write_logits(os.path.join(d, "numpy_logits.bin"), ids, logits)
    print(f"{name}: {len(back)} tensors {dtype} in {shards} file(s), logits std "
          f"{logits.std():.3f}, distinct argmax {len(set(logits.argmax(-1).tolist()))}/{N_TOKENS}")


def main(out):
    for seed, (name, (over, dtype, shards)) in enumerate(MODELS.items()):
        write_model(out, name, over, dtype, shards, seed)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/tiny")
