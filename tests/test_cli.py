"""Command-line contract: exit codes (0 ok, 1 failure, 2 usage), one-line
errors that name the file and where in it, and --help for every command.
Malformed models are made from a valid one (the demo GGUF when present, and
the committed tiny safetensors model) by truncating or corrupting it."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

QC = os.environ.get("QC_BIN", "build/quantc")
DEMO = os.environ.get("QC_DEMO_MODEL", os.path.expanduser("~/.cache/quantc/SmolLM2-135M-Instruct.Q4_1.gguf"))
TINY = "tests/data/tiny/llama"
failures = 0


def run(*args, env=None):
    p = subprocess.run([QC, *args], capture_output=True, text=True, env=env, timeout=600)
    return p.returncode, p.stdout, p.stderr


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def expect_error(args, code, *needles):
    rc, out, err = run(*args)
    lines = [l for l in err.strip().splitlines() if l]
    check(rc == code, f"{args}: exit {rc}, expected {code}; stderr: {err.strip()[:300]}")
    if code == 1:
        check(len(lines) == 1, f"{args}: error should be one line, got {len(lines)}: {err[:300]}")
        check(lines and lines[0].startswith("quantc: "), f"{args}: error line should start 'quantc: '")
    for n in needles:
        check(n in err, f"{args}: '{n}' not in error: {err.strip()[:300]}")
    return err


def main():
    # Usage errors.
    expect_error([], 2)
    expect_error(["frobnicate"], 2, "unknown command")
    expect_error(["eval", "--ctx", "abc", "--text", "x", "m"], 2, "--ctx")
    expect_error(["eval", "m"], 2, "--text")
    expect_error(["run", "m"], 2, "-p")
    expect_error(["run", "m", "-p", "x", "--top-p", "2"], 2, "--top-p")
    expect_error(["tokenize", "m"], 2)
    for cmd in ["eval", "run", "tokenize", "info", "compile", "inspect"]:
        rc, out, _ = run(cmd, "--help")
        check(rc == 0 and out.startswith("usage: quantc " + cmd), f"{cmd} --help")
    rc, out, _ = run("eval", "--help")
    check("every token after the first in a window is scored" in out.replace("\n", " ").replace("  ", " ")
          or "every token after the first in a" in out, "eval --help explains scoring")
    rc, out, _ = run("--version")
    check(rc == 0 and "LLVM C API" in out and "NVRTC" in out, "--version lists optional components")

    # Missing inputs.
    expect_error(["info", "/nonexistent/model.gguf"], 1, "/nonexistent/model.gguf")
    expect_error(["inspect"], 2, "ARTIFACT")
    expect_error(["inspect", "/nonexistent/m.qc"], 1, "/nonexistent/m.qc")
    if os.path.isdir(TINY):
        expect_error(["inspect", os.path.join(TINY, "model.safetensors")], 1,
                     "not a quantc artifact (bad magic at byte 0)")

    tmp = tempfile.mkdtemp(prefix="qc_cli_")
    try:
        if os.path.exists(DEMO):
            with open(DEMO, "rb") as f:
                head = f.read(1 << 20)
            cases = {
                "empty.gguf": b"",
                "magic.gguf": b"GGUX" + head[4:4096],
                "trunc_header.gguf": head[:20],
                "trunc_meta.gguf": head[:3000],
                "trunc_data.gguf": head,
            }
            for name, data in cases.items():
                p = os.path.join(tmp, name)
                with open(p, "wb") as f:
                    f.write(data)
                err = expect_error(["info", p], 1, name)
                if name != "empty.gguf":
                    check("byte" in err or "offset" in err, f"{name}: error names a byte offset: {err.strip()}")
            text = os.path.join(tmp, "t.txt")
            with open(text, "w") as f:
                f.write("hello")
            expect_error(["eval", DEMO, "--text", os.path.join(tmp, "missing.txt")], 1, "missing.txt")
            expect_error(["eval", DEMO, "--text", text, "--ctx", "512"], 1, "fewer than one window")
            rc, out, err = run("tokenize", DEMO, "-p", "Hello world", "--json")
            ids = json.loads(out) if rc == 0 else []
            check(rc == 0 and len(ids) >= 2 and all(0 <= i < 49152 for i in ids), f"tokenize: {out} {err}")
        else:
            print("note: demo model absent, GGUF CLI cases skipped:", DEMO)

        if os.path.isdir(TINY):
            bad = os.path.join(tmp, "badcfg")
            shutil.copytree(TINY, bad)
            with open(os.path.join(bad, "config.json"), "w") as f:
                f.write('{\n  "model_type": "llama",\n  "hidden_size": 64,,\n}\n')
            expect_error(["info", bad], 1, "config.json", "line 3")
            unk = os.path.join(tmp, "unkarch")
            shutil.copytree(TINY, unk)
            cfg = json.load(open(os.path.join(TINY, "config.json")))
            cfg["model_type"] = "gpt_neox"
            cfg["architectures"] = ["GPTNeoXForCausalLM"]
            json.dump(cfg, open(os.path.join(unk, "config.json"), "w"))
            expect_error(["info", unk], 1, "GPTNeoX")
            tr = os.path.join(tmp, "trunc")
            shutil.copytree(TINY, tr)
            st = os.path.join(tr, "model.safetensors")
            size = os.path.getsize(st)
            with open(st, "r+b") as f:
                f.truncate(size - 100)
            expect_error(["info", tr], 1, "model.safetensors")
        else:
            print("note: tests/data/tiny/llama absent, safetensors CLI cases skipped")
    finally:
        shutil.rmtree(tmp)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
