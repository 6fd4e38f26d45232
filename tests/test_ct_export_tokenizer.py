#!/usr/bin/env python3
"""The tokenizer.json that the compressed-tensors export converts from a
GGUF source's tokenizer metadata (compiler/gguf_hf_tokenizer.h), checked on
the demo model (SmolLM2-135M GGUF: byte-level BPE, 49152 tokens, pre-
tokenizer "smollm") against quantc's own tokenizer of the same artifact:
Hugging Face's `tokenizers` must give exactly `quantc tokenize`'s ids on
200 KB of wikitext-2 and on strings with chat special tokens, digits,
accents, CJK, emoji, tabs and newline runs and contractions; decoding gives
the text back; tokenizer_config.json carries BOS/EOS and the chat template;
generation_config.json the BOS/EOS ids. With transformers importable,
AutoTokenizer loads the directory and agrees too. A cheap compile (one
linear, RTN, 1 x 16 calibration tokens) is enough: the tokenizer does not
depend on the compile. Skips (77) without the demo model, the `tokenizers`
package or the calibration text."""
import json
import os
import sys
import tempfile

try:
    from tokenizers import Tokenizer
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from qctest import CALIB, DATA, check, finish, need_calibration_text, qc  # noqa: E402

DEMO = os.environ.get("QC_DEMO_MODEL", os.path.expanduser(
    "~/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf"))

SAMPLES = [
    "<|im_start|>user\nWhat is 12345 + 3.14?<|im_end|>\n<|im_start|>assistant\n",
    "naïve café, Ünïcödé: 日本語のテキスト, emoji 🙂👍🏽 and ∑∫√",
    "tabs\tand  double  spaces\n\n\n   trailing   \r\nwindows line",
    "don't I'll we're they've it's O'Neil's 'quoted' \"double\"",
    "numbers 0 1 22 333 4444 55555 1,000,000 2024-11-23 x86_64 v1.2.3",
    "<|endoftext|>Special<|endoftext|> mid-word<|im_start|>x",
]


def main():
    if not os.path.exists(DEMO):
        print(f"SKIP: demo model not found at {DEMO} (scripts/fetch-demo gets it)")
        return 77
    need_calibration_text()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = os.path.join(tmp, "cheap.yaml")
        with open(recipe, "w") as f:
            f.write(f"quantc: 1\ncalibration: {{ text: {CALIB}, samples: 1, tokens: 16 }}\n"
                    "passes:\n  - quantize: { method: rtn, bits: 8, group_size: 64, targets: "
                    "[\"model.layers.0.mlp.down_proj\"] }\n")
        art, d = os.path.join(tmp, "cheap.qc"), os.path.join(tmp, "ct")
        rc, so, se = qc("compile", DEMO, "-r", recipe, "-o", art, "--target", "none",
                        "--no-checkpoint", "--quiet")
        check(rc == 0, f"compile: {se}")
        if rc:
            return finish()
        rc, so, se = qc("export", art, "--format", "compressed-tensors", "-o", d)
        check(rc == 0 and "converted from the GGUF metadata" in so, f"export: {rc} {so} {se}")
        if rc:
            return finish()
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        texts = [open(os.path.join(DATA, "wikitext2-test.raw.txt"), encoding="utf-8").read()
                 [:200000]] + SAMPLES
        hf_all = []
        for i, text in enumerate(texts):
            path = os.path.join(tmp, f"t{i}.txt")
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            rc, so, se = qc("tokenize", art, "--text", path, "--json")
            want = json.loads(so) if rc == 0 else None
            got = tok.encode(text, add_special_tokens=False).ids
            hf_all.append(got)
            if not check(want == got, f"text {i}: tokenizers {got[:20]}... vs quantc "
                         f"{(want or [])[:20]}..."):
                k = next((j for j in range(min(len(got), len(want or []))) if got[j] != want[j]),
                         None)
                print("first difference at", k, "of", len(got), len(want or []))
            dec = tok.decode(got, skip_special_tokens=False)
            check(dec == text, f"text {i}: decode does not give the text back")
        print(f"wikitext: {len(hf_all[0])} tokens equal; {len(SAMPLES)} sample strings equal")
        cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
        gen = json.load(open(os.path.join(d, "generation_config.json")))
        model_cfg = json.load(open(os.path.join(d, "config.json")))
        check(cfg["bos_token"] == "<|im_start|>" and cfg["eos_token"] == "<|im_end|>" and
              "chat_template" in cfg and cfg["add_bos_token"] is False,
              f"tokenizer_config: {cfg.get('bos_token')} {cfg.get('eos_token')}")
        check(gen == {"bos_token_id": model_cfg["bos_token_id"],
                      "eos_token_id": model_cfg["eos_token_id"]}, f"generation_config {gen}")
        try:
            from transformers import AutoTokenizer
        except ImportError:
            print("transformers not importable: AutoTokenizer check skipped")
            return finish()
        at = AutoTokenizer.from_pretrained(d)
        for i, text in enumerate(texts):
            check(at(text, add_special_tokens=False)["input_ids"] == hf_all[i],
                  f"AutoTokenizer text {i} differs")
        chat = at.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
        check("<|im_start|>user\nHi<|im_end|>" in chat, f"chat template: {chat!r}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
