#!/usr/bin/env python3
"""Per-token comparison of llama.cpp and quantc on the same GGUF (issue 7).

  llama-perplexity -m X.gguf -f TEXT -c CTX --chunks N --kl-divergence-base LLAMA.bin
  gguf_ppl X.gguf TEXT --ctx CTX --chunks 1 --dump-logits QC.f32
  bench/gguf_logits_compare.py LLAMA.bin QC.f32 [quantc tokens .json]

LLAMA.bin is llama-perplexity's log-probability file (tools/perplexity:
"_logits_", n_ctx, n_vocab, n_chunk, the chunks' tokens, then for every
scored position -- the second half of each chunk -- two f32 (scale,
min_log_prob) and n_vocab uint16 q with log p = min_log_prob + scale·q,
scale <= 16/65535: about 1e-4 nats of storage rounding). QC.f32 is quantc's
logits of the first chunk (ctx × vocab f32). Prints, over chunk 1's scored
positions: whether the tokens agree (with the quantc token ids from
`quantc tokenize MODEL --text TEXT --json`, when given), the NLL of the next
token under each, mean KL(llama.cpp || quantc), max |Δ log p| of the next
token, and top-1 agreement."""
import json
import sys

import numpy as np


def read_llama(path):
    b = open(path, "rb").read()
    assert b[:8] == b"_logits_", "not a llama-perplexity logits file"
    n_ctx, n_vocab, n_chunk = np.frombuffer(b, "<i4", 3, 8)
    off = 20
    tokens = np.frombuffer(b, "<i4", n_chunk * n_ctx, off).reshape(n_chunk, n_ctx)
    off += 4 * n_chunk * n_ctx
    nv = 2 * ((n_vocab + 1) // 2) + 4
    first = n_ctx // 2
    n_tok = n_ctx - 1 - first
    rows = np.frombuffer(b, "<u2", n_tok * nv, off).reshape(n_tok, nv)  # chunk 1
    head = rows[:, :4].copy().view("<f4")
    scale, minlp = head[:, 0:1], head[:, 1:2]
    q = rows[:, 4:4 + n_vocab].astype(np.float64)
    lp = np.where(q > 0, minlp + scale * q, -np.inf)
    return int(n_ctx), int(n_vocab), tokens, lp


def main():
    llama, qcf = sys.argv[1], sys.argv[2]
    n_ctx, n_vocab, tokens, lp_l = read_llama(llama)
    first = n_ctx // 2
    logits = np.fromfile(qcf, "<f4").reshape(-1, n_vocab)[first:n_ctx - 1].astype(np.float64)
    m = logits.max(1, keepdims=True)
    lp_q = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    if len(sys.argv) > 3:
        ids = json.load(open(sys.argv[3]))
        same = list(ids[:n_ctx]) == list(tokens[0])
        print(f"tokens of chunk 1: {'identical' if same else 'DIFFERENT'} "
              f"(quantc {len(ids)} tokens in the text)")
    nxt = tokens[0, first + 1:n_ctx]
    pos = np.arange(len(nxt))
    nll_l, nll_q = -lp_l[pos, nxt].mean(), -lp_q[pos, nxt].mean()
    # KL over the tokens llama.cpp stored (it drops log p < max − 16 - ln Σ).
    pl = np.exp(lp_l)
    kl = np.nansum(np.where(pl > 0, pl * (lp_l - lp_q), 0), axis=1).mean()
    dmax = np.abs(lp_l[pos, nxt] - lp_q[pos, nxt]).max()
    top1 = (lp_l.argmax(1) == lp_q.argmax(1)).mean()
    print(f"chunk 1, {len(nxt)} scored positions: NLL llama.cpp {nll_l:.5f}, quantc {nll_q:.5f} "
          f"(ppl {np.exp(nll_l):.4f} vs {np.exp(nll_q):.4f}, {100 * (np.exp(nll_q - nll_l) - 1):+.3f}%)")
    print(f"mean KL(llama.cpp || quantc) {kl:.2e} nats, max |d log p(next)| {dmax:.4f}, "
          f"top-1 agreement {100 * top1:.1f}%")


if __name__ == "__main__":
    main()
