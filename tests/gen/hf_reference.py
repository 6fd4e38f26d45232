"""Reference outputs from Hugging Face transformers for a GGUF model: the
token ids of a text file (AutoTokenizer built from the GGUF) and the logits of
its first N tokens (AutoModelForCausalLM loaded from the GGUF, float32, eager
attention). Needs torch; run it where torch is installed:

    python3 tests/gen/hf_reference.py MODEL.gguf TEXT OUTDIR [N=64]

Writes OUTDIR/ids.bin (int32 little-endian, the whole text encoded as one
string without special tokens), OUTDIR/logits.bin (int32 n, int32 vocab,
int32 ids[n], float32 logits[n*vocab]) and OUTDIR/versions.json.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    path, text_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    os.makedirs(out, exist_ok=True)
    d, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    # newline="" keeps the bytes as they are (the file has CRLF line ends).
    text = open(text_path, encoding="utf-8", newline="").read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    np.asarray(ids, dtype="<i4").tofile(os.path.join(out, "ids.bin"))
    print("tokens:", len(ids))

    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    x = torch.tensor([ids[:n]])
    with torch.no_grad():
        logits = model(x).logits[0].float().numpy()
    with open(os.path.join(out, "logits.bin"), "wb") as f:
        np.asarray([n, logits.shape[1]], dtype="<i4").tofile(f)
        np.asarray(ids[:n], dtype="<i4").tofile(f)
        logits.astype("<f4").tofile(f)
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
               "tokenizer": type(tok).__name__, "n_tokens": len(ids)},
              open(os.path.join(out, "versions.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
