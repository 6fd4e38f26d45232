#!/usr/bin/env python3
"""Resource limits on untrusted input (compiler/limits.h): each limit,
lowered through its QUANTC_MAX_* variable, rejects an input the default
accepts, with a message naming the file and the variable; a malformed
variable is a usage error (exit 2)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from qctest import QC, ROOT, TINY, check, finish  # noqa: E402


def qc(env, *args):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([QC, *args], capture_output=True, text=True, env=e, timeout=120)


def main():
    text = os.path.join(ROOT, "tests", "data", "tok_sample.txt")
    recipe = os.path.join(ROOT, "recipes", "w4a16-g128.yaml")
    cases = [
        ("QUANTC_MAX_SAFETENSORS_HEADER", "100", ["info", TINY], "model.safetensors: header length"),
        ("QUANTC_MAX_JSON_BYTES", "1000", ["info", TINY], "tokenizer.json: larger than the limit"),
        ("QUANTC_MAX_VOCAB", "100", ["info", TINY], "tokenizer.json: model.vocab"),
        ("QUANTC_MAX_TEXT_BYTES", "10", ["eval", TINY, "--text", text], "tok_sample.txt: larger"),
        ("QUANTC_MAX_RECIPE_BYTES", "100", ["recipe", "check", recipe], "w4a16-g128.yaml: larger"),
    ]
    for var, value, args, want in cases:
        p = qc({}, *args)
        check(p.returncode == 0, f"{args[0]} with the default limits: {p.stderr.strip()}")
        p = qc({var: value}, *args)
        check(p.returncode == 1 and want in p.stderr and var in p.stderr
              and len(p.stderr.strip().splitlines()) == 1,
              f"{var}={value}: {p.returncode} {p.stderr.strip()}")
    for bad in ("abc", "-5", "0", "12x"):
        p = qc({"QUANTC_MAX_VOCAB": bad}, "info", TINY)
        check(p.returncode == 2 and "QUANTC_MAX_VOCAB" in p.stderr,
              f"QUANTC_MAX_VOCAB={bad}: {p.returncode} {p.stderr.strip()}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
