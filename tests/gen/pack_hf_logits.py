"""Packs full reference logits (hf_reference.py's logits.bin) into a small
committed fixture: per position the log-sum-exp over the whole vocabulary,
the 32 largest logits and 32 logits at fixed stride (the tail), so a test can
check both the head and the tail of the distribution without 12 MB of data.

    python3 tests/gen/pack_hf_logits.py logits.bin OUT.bin

OUT.bin (little-endian): int32 n, int32 vocab, int32 k, int32 ids[n], then
per position: float64 lse, int32 idx[2k], float32 val[2k].
"""
import sys

import numpy as np


def main():
    raw = open(sys.argv[1], "rb").read()
    n, vocab = np.frombuffer(raw[:8], "<i4")
    ids = np.frombuffer(raw[8:8 + 4 * n], "<i4")
    lg = np.frombuffer(raw[8 + 4 * n:], "<f4").reshape(n, vocab).astype(np.float64)
    k = 32
    with open(sys.argv[2], "wb") as f:
        np.asarray([n, vocab, k], "<i4").tofile(f)
        ids.astype("<i4").tofile(f)
        stride = np.arange(k) * (vocab // k) + 7
        for t in range(n):
            row = lg[t]
            m = row.max()
            lse = m + np.log(np.exp(row - m).sum())
            top = np.argsort(-row, kind="stable")[:k]
            idx = np.concatenate([top, stride]).astype("<i4")
            np.asarray([lse], "<f8").tofile(f)
            idx.tofile(f)
            row[idx].astype("<f4").tofile(f)


if __name__ == "__main__":
    main()
