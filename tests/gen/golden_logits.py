"""Golden logits from Hugging Face transformers for the tiny models.

    python3 tests/gen/golden_logits.py tests/data/tiny

Needs torch + transformers (not numpy_forward's dependencies only). For each
<dir>/<name>/ with a config.json, loads AutoModelForCausalLM in float32 with
eager attention on the CPU, runs the token ids from expected.json and writes
<name>/golden.bin (little-endian: int32 n_tokens, int32 vocab, int32 ids[n],
float32 logits[n * vocab]) and <name>/golden.json (versions, and the largest
difference from numpy_logits.bin when that file exists)."""
import json
import os
import struct
import sys


def write_logits(path, ids, logits):
    n, vocab = len(logits), len(logits[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", n, vocab))
        f.write(struct.pack(f"<{n}i", *ids))
        for row in logits:
            f.write(struct.pack(f"<{vocab}f", *row))


def read_logits(path):
    with open(path, "rb") as f:
        raw = f.read()
    n, vocab = struct.unpack("<ii", raw[:8])
    ids = list(struct.unpack(f"<{n}i", raw[8:8 + 4 * n]))
    flat = struct.unpack(f"<{n * vocab}f", raw[8 + 4 * n:8 + 4 * n + 4 * n * vocab])
    return ids, [list(flat[t * vocab:(t + 1) * vocab]) for t in range(n)]


def model_dirs(root):
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isfile(os.path.join(d, "config.json")) and \
                os.path.isfile(os.path.join(d, "expected.json")):
            yield name, d


def load_model(d):
    import torch
    from transformers import AutoModelForCausalLM
    kw = dict(attn_implementation="eager")
    try:  # transformers >= 4.56 spells it dtype; older ones torch_dtype
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, **kw)
    return m.eval()


def main(root):
    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f"golden_logits.py needs torch and transformers: {e}")
    torch.manual_seed(0)
    for name, d in model_dirs(root):
        with open(os.path.join(d, "expected.json")) as f:
            ids = json.load(f)["token_ids"]
        model = load_model(d)
        with torch.no_grad():
            logits = model(torch.tensor([ids], dtype=torch.long)).logits[0].float().cpu()
        rows = logits.tolist()
        write_logits(os.path.join(d, "golden.bin"), ids, rows)
        info = {"transformers": transformers.__version__, "torch": torch.__version__,
                "model_class": type(model).__name__, "n_tokens": len(ids),
                "vocab": len(rows[0])}
        npy = os.path.join(d, "numpy_logits.bin")
        if os.path.exists(npy):
            nids, nrows = read_logits(npy)
            assert nids == ids, f"{name}: numpy_logits.bin has other token ids"
            diff = max(abs(a - b) for r1, r2 in zip(rows, nrows) for a, b in zip(r1, r2))
            info["max_abs_diff_vs_numpy"] = diff
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        print(f"{name}: {type(model).__name__}, logits std {logits.std().item():.4f}, "
              f"max |transformers - numpy| = {info.get('max_abs_diff_vs_numpy', float('nan')):.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/tiny")
