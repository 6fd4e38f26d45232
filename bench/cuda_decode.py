#!/usr/bin/env python3
"""Decode tokens/s of a quantc artifact on the GPU (`quantc run --device
cuda`) against PyTorch f16 eager on the same GPU, in one run, with ratios.

The PyTorch model is built from the artifact's source GGUF (the same
weights, dequantized to f16; GGUF's RoPE row permutation of q/k undone):
a plain Llama forward (RMSNorm, RoPE, grouped-query SDPA over a static KV
cache, SwiGLU, tied or separate lm_head) run eagerly, greedy decoding with
the argmax read back every token as quantc's sampler does. As a check that
it is the same model, its perplexity over the first windows of the text is
printed beside quantc's (`quantc eval` on the GGUF, CPU). With
transformers installed, LlamaForCausalLM.generate (f16, eager, the same
weights) is timed too.

  bench/cuda_decode.py --quantc BIN --artifact A.qc (--gguf M.gguf | --safetensors DIR)
                       [--tokens 256] [--prompt TEXT] [--text FILE] [--no-hf]

--safetensors DIR takes the weights from a Hugging Face llama directory
(config.json, *.safetensors, bf16 or f16) instead, loaded straight onto the
GPU and cast to f16 (bench/cuda_llama8b: the synthetic Llama-3-8B).

Tokens/s count generated tokens over the time from the end of the prompt
to the last token (both sides), median of --repeats runs. PyTorch runs
first. --only torch|quantc --results FILE runs one side, the PyTorch one
writing its tok/s to FILE and the quantc one reading it for the ratio."""
import argparse
import json
import re
import statistics
import struct
import subprocess
import sys
import time

import numpy as np


# ---- GGUF (only what this model needs: F32, F16, Q8_0, Q4_1) ----

def read_gguf(path):
    data = memoryview(open(path, "rb").read())
    assert bytes(data[:4]) == b"GGUF", "not a GGUF file"
    version, n_t, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24

    def string(o):
        n = struct.unpack_from("<Q", data, o)[0]
        return bytes(data[o + 8:o + 8 + n]).decode("utf-8", "replace"), o + 8 + n

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}

    def value(t, o):
        if t == 8:
            return string(o)
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, o)
            o += 12
            out = []
            for _ in range(n):
                v, o = value(et, o)
                out.append(v)
            return out, o
        f = scalar[t]
        return struct.unpack_from(f, data, o)[0], o + struct.calcsize(f)

    kv = {}
    for _ in range(n_kv):
        k, off = string(off)
        t = struct.unpack_from("<I", data, off)[0]
        kv[k], off = value(t, off + 4)
    infos = []
    for _ in range(n_t):
        name, off = string(off)
        nd = struct.unpack_from("<I", data, off)[0]
        dims = struct.unpack_from("<%dQ" % nd, data, off + 4)
        typ, toff = struct.unpack_from("<IQ", data, off + 4 + 8 * nd)
        off += 4 + 8 * nd + 12
        infos.append((name, dims, typ, toff))
    align = kv.get("general.alignment", 32)
    base = (off + align - 1) // align * align
    tensors = {}
    for name, dims, typ, toff in infos:
        n = int(np.prod(dims))
        raw = np.frombuffer(data, np.uint8, offset=base + toff,
                            count={0: 4 * n, 1: 2 * n, 8: n // 32 * 34, 3: n // 32 * 20}[typ])
        if typ == 0:
            a = raw.view("<f4").astype(np.float32)
        elif typ == 1:
            a = raw.view("<f2").astype(np.float32)
        elif typ == 8:  # Q8_0: f16 d, 32 × int8
            b = raw.reshape(-1, 34)
            a = (b[:, :2].copy().view("<f2").astype(np.float32) * b[:, 2:].view(np.int8)).ravel()
        elif typ == 3:  # Q4_1: f16 d, f16 m, 16 bytes of nibbles (low: 0..15, high: 16..31)
            b = raw.reshape(-1, 20)
            d = b[:, 0:2].copy().view("<f2").astype(np.float32)
            m = b[:, 2:4].copy().view("<f2").astype(np.float32)
            q = b[:, 4:]
            a = (np.concatenate([q & 15, q >> 4], axis=1) * d + m).ravel()
        else:
            raise ValueError(f"{name}: GGUF type {typ} not handled here")
        tensors[name] = a.reshape(list(reversed(dims)))
    return kv, tensors


def unpermute(w, heads):
    """GGUF stores llama q/k rows interleaved for its RoPE; back to HF order."""
    out, cols = w.shape  # llama.cpp's convert did reshape(heads, 2, out/heads/2).swapaxes(1, 2)
    return w.reshape(heads, out // heads // 2, 2, cols).swapaxes(1, 2).reshape(out, cols)


def load_weights(path):
    kv, t = read_gguf(path)
    arch = kv["general.architecture"]
    cfg = dict(layers=kv[f"{arch}.block_count"], dim=kv[f"{arch}.embedding_length"],
               heads=kv[f"{arch}.attention.head_count"],
               kv_heads=kv[f"{arch}.attention.head_count_kv"],
               ffn=kv[f"{arch}.feed_forward_length"],
               eps=kv[f"{arch}.attention.layer_norm_rms_epsilon"],
               theta=kv.get(f"{arch}.rope.freq_base", 10000.0))
    cfg["hd"] = cfg["dim"] // cfg["heads"]
    w = {"embed": t["token_embd.weight"], "norm": t["output_norm.weight"],
         "head": t.get("output.weight", t["token_embd.weight"])}
    for i in range(cfg["layers"]):
        p = f"blk.{i}."
        w[i] = dict(an=t[p + "attn_norm.weight"], fn=t[p + "ffn_norm.weight"],
                    q=unpermute(t[p + "attn_q.weight"], cfg["heads"]),
                    k=unpermute(t[p + "attn_k.weight"], cfg["kv_heads"]),
                    v=t[p + "attn_v.weight"], o=t[p + "attn_output.weight"],
                    gate=t[p + "ffn_gate.weight"], up=t[p + "ffn_up.weight"],
                    down=t[p + "ffn_down.weight"])
    return cfg, w


def load_safetensors(path, torch):
    """cfg and weights (f16 CUDA tensors) of an HF llama directory."""
    import glob
    import os
    from safetensors.torch import load_file
    hc = json.load(open(os.path.join(path, "config.json")))
    cfg = dict(layers=hc["num_hidden_layers"], dim=hc["hidden_size"],
               heads=hc["num_attention_heads"],
               kv_heads=hc.get("num_key_value_heads", hc["num_attention_heads"]),
               ffn=hc["intermediate_size"], eps=hc["rms_norm_eps"],
               theta=hc.get("rope_theta", 10000.0))
    cfg["hd"] = hc.get("head_dim") or cfg["dim"] // cfg["heads"]
    t = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        t.update({k: v.to(torch.float16) for k, v in load_file(f, device="cuda").items()})
    w = {"embed": t["model.embed_tokens.weight"], "norm": t["model.norm.weight"],
         "head": t.get("lm_head.weight", t["model.embed_tokens.weight"])}
    names = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                 o="self_attn.o_proj", gate="mlp.gate_proj", up="mlp.up_proj",
                 down="mlp.down_proj", an="input_layernorm", fn="post_attention_layernorm")
    for i in range(cfg["layers"]):
        w[i] = {k: t[f"model.layers.{i}.{n}.weight"] for k, n in names.items()}
    cfg["tied"] = "lm_head.weight" not in t
    return cfg, w


# ---- PyTorch f16 eager ----

class TorchLlama:
    def __init__(self, cfg, w, max_ctx, torch):
        self.t, self.cfg, self.max_ctx = torch, cfg, max_ctx
        dev, f16 = "cuda", torch.float16
        def T(a):
            a = a if torch.is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a))
            return a.to(dev, f16)
        self.embed, self.norm, self.head = T(w["embed"]), T(w["norm"]), T(w["head"])
        self.layers = [{k: T(v) for k, v in w[i].items()} for i in range(cfg["layers"])]
        hd = cfg["hd"]
        inv = 1.0 / (cfg["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(max_ctx, dtype=torch.float32), inv)
        emb = torch.cat([ang, ang], dim=-1)
        self.cos, self.sin = emb.cos().to(dev, f16), emb.sin().to(dev, f16)
        shape = (cfg["layers"], 1, cfg["kv_heads"], max_ctx, hd)
        self.kc = torch.zeros(shape, device=dev, dtype=f16)
        self.vc = torch.zeros(shape, device=dev, dtype=f16)

    def rms(self, x, w):
        t = self.t
        xf = x.float()
        return w * (xf * t.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg["eps"])).to(x.dtype)

    @staticmethod
    def rot(x, cos, sin, torch):
        h = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin

    def forward(self, ids, pos):
        """ids: (1, n) token tensor at positions pos..pos+n-1; logits (n, vocab)."""
        t, c = self.t, self.cfg
        F = t.nn.functional
        n, hd = ids.shape[1], c["hd"]
        x = self.embed[ids]
        cos, sin = self.cos[pos:pos + n], self.sin[pos:pos + n]
        for i, L in enumerate(self.layers):
            h = self.rms(x, L["an"])
            q = F.linear(h, L["q"]).view(1, n, c["heads"], hd).transpose(1, 2)
            k = F.linear(h, L["k"]).view(1, n, c["kv_heads"], hd).transpose(1, 2)
            v = F.linear(h, L["v"]).view(1, n, c["kv_heads"], hd).transpose(1, 2)
            q, k = self.rot(q, cos, sin, t), self.rot(k, cos, sin, t)
            self.kc[i, :, :, pos:pos + n] = k
            self.vc[i, :, :, pos:pos + n] = v
            a = F.scaled_dot_product_attention(q, self.kc[i, :, :, :pos + n],
                                               self.vc[i, :, :, :pos + n], is_causal=n > 1,
                                               enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(1, n, -1), L["o"])
            h = self.rms(x, L["fn"])
            x = x + F.linear(F.silu(F.linear(h, L["gate"])) * F.linear(h, L["up"]), L["down"])
        return F.linear(self.rms(x, self.norm), self.head)[0]


def torch_decode(model, prompt, n_new, torch):
    ids = torch.tensor([prompt], device="cuda")
    logits = model.forward(ids, 0)
    nxt = int(logits[-1].argmax())
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out, pos = [nxt], len(prompt)
    for _ in range(n_new - 1):
        logits = model.forward(torch.tensor([[nxt]], device="cuda"), pos)
        nxt = int(logits[-1].argmax())  # read back every token, as quantc's sampler does
        out.append(nxt)
        pos += 1
    return n_new / (time.perf_counter() - t0), out


def torch_ppl(model, ids, ctx, windows, torch):
    nll, count = 0.0, 0
    for w in range(windows):
        win = ids[w * ctx:(w + 1) * ctx]
        if len(win) < ctx:
            break
        logits = model.forward(torch.tensor([win], device="cuda"), 0).float()
        lp = torch.log_softmax(logits[:-1], dim=-1)
        nll -= float(lp[torch.arange(ctx - 1), torch.tensor(win[1:], device="cuda")].sum())
        count += ctx - 1
    return float(np.exp(nll / count))


def hf_decode(cfg, w, prompt, n_new, torch):
    from transformers import LlamaConfig, LlamaForCausalLM
    hc = LlamaConfig(vocab_size=w["embed"].shape[0], hidden_size=cfg["dim"],
                     intermediate_size=cfg["ffn"], num_hidden_layers=cfg["layers"],
                     num_attention_heads=cfg["heads"], num_key_value_heads=cfg["kv_heads"],
                     rms_norm_eps=cfg["eps"], rope_theta=cfg["theta"],
                     max_position_embeddings=8192, tie_word_embeddings=cfg.get("tied", True))
    hc._attn_implementation = "eager"
    m = LlamaForCausalLM(hc)
    sd = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["norm"],
          "lm_head.weight": w["head"]}
    names = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                 o="self_attn.o_proj", gate="mlp.gate_proj", up="mlp.up_proj",
                 down="mlp.down_proj", an="input_layernorm", fn="post_attention_layernorm")
    for i in range(cfg["layers"]):
        for k, v in w[i].items():
            sd[f"model.layers.{i}.{names[k]}.weight"] = v
    m.load_state_dict({k: v.cpu() if torch.is_tensor(v) else torch.from_numpy(np.ascontiguousarray(v))
                       for k, v in sd.items()})
    m = m.half().cuda().eval()
    ids = torch.tensor([prompt], device="cuda")
    with torch.no_grad():
        m.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        m.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        torch.cuda.synchronize()
    return n_new / (time.perf_counter() - t0)


def quantc_decode(args, n_new):
    p = subprocess.run([args.quantc, "run", args.artifact, "--device", "cuda", "-p", args.prompt,
                        "-n", str(n_new), "--ignore-eos"], capture_output=True, text=True,
                       errors="replace")  # a random model prints bytes that are not UTF-8
    m = re.search(r"generated (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", p.stderr)
    if p.returncode or not m:
        sys.exit(f"quantc run failed ({p.returncode}): {p.stderr}")
    dev = re.search(r"device: (.*)", p.stderr)
    return float(m.group(3)), dev.group(1) if dev else "?"


def torch_side(args, prompt, torch):
    """PyTorch f16 eager: median tok/s, and transformers' (None: not run); the
    model is freed after."""
    cfg, w = load_weights(args.gguf) if args.gguf else load_safetensors(args.safetensors, torch)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; model {cfg}")
    model = TorchLlama(cfg, w, max(2048, len(prompt) + args.tokens + 1), torch)
    if args.text:
        tok = args.safetensors or args.artifact
        ids = json.loads(subprocess.run([args.quantc, "tokenize", tok, "--text", args.text,
                                         "--json"], capture_output=True, text=True,
                                        check=True).stdout)
        with torch.no_grad():
            print(f"PyTorch f16 perplexity, first 4 windows of 512: "
                  f"{torch_ppl(model, ids, 512, 4, torch):.4f}")
    with torch.no_grad():
        torch_decode(model, prompt, 64, torch)  # warm-up (allocator, kernels' first launches)
        tr = [torch_decode(model, prompt, args.tokens, torch)[0] for _ in range(args.repeats)]
    tm = statistics.median(tr)
    print(f"PyTorch f16 eager (static KV cache): {tm:.1f} tok/s  (runs {', '.join(f'{v:.1f}' for v in tr)});"
          f" {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB of GPU memory at most")
    hf = None
    if not args.no_hf:
        try:
            hf = hf_decode(cfg, w, prompt, args.tokens, torch)
            print(f"transformers LlamaForCausalLM.generate f16 eager: {hf:.1f} tok/s")
        except Exception as e:  # noqa: BLE001 - an optional second baseline
            print(f"transformers baseline not run: {type(e).__name__}: {e}")
    return tm, hf


def quantc_side(args):
    """quantc run --device cuda: median tok/s."""
    if args.warmup:
        quantc_decode(args, args.warmup)  # warm-up (driver, module load)
    q, dev = zip(*[quantc_decode(args, args.tokens) for _ in range(args.repeats)])
    import resource
    qm = statistics.median(q)
    print(f"quantc --device cuda ({dev[0]}): {qm:.1f} tok/s  (runs {', '.join(f'{v:.1f}' for v in q)});"
          f" quantc run peak RSS "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f} GiB")
    return qm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantc", required=True)
    ap.add_argument("--artifact", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf")
    src.add_argument("--safetensors", metavar="DIR")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default="The history of the city begins in")
    ap.add_argument("--text", help="text for the PyTorch model's perplexity check")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--warmup", type=int, default=16,
                    help="tokens of a first, untimed quantc run (0: none; each run loads the "
                    "artifact again)")
    ap.add_argument("--only", choices=["torch", "quantc"],
                    help="one side; the PyTorch result goes to / comes from --results")
    ap.add_argument("--results", help="JSON file of the PyTorch side's tok/s (with --only)")
    args = ap.parse_args()
    if args.only and not args.results:
        ap.error("--only needs --results")
    # the safetensors directory holds the same tokenizer and loads without reading the weights
    tok = args.safetensors or args.artifact
    prompt = json.loads(subprocess.run([args.quantc, "tokenize", tok, "-p", args.prompt,
                                        "--bos", "--json"], capture_output=True, text=True,
                                       check=True).stdout)
    if args.only != "quantc":
        import torch
        tm, hf = torch_side(args, prompt, torch)
        if args.only:
            json.dump({"torch_tok_s": tm, "hf_tok_s": hf}, open(args.results, "w"))
            return
    else:
        r = json.load(open(args.results))
        tm, hf = r["torch_tok_s"], r.get("hf_tok_s")
    qm = quantc_side(args)
    print(f"ratio quantc / PyTorch f16 eager: {qm / tm:.2f}x  ({args.tokens} tokens after a "
          f"{len(prompt)}-token prompt)")
    if hf:
        print(f"ratio quantc / transformers generate: {qm / hf:.2f}x")


if __name__ == "__main__":
    main()
