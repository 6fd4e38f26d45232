#!/usr/bin/env python3
"""Regenerates the GGUF dequantization fixtures with fresh seeds (new random
data and block bytes) and checks test_dequant agrees with gguf.quants on them
bit for bit. Skips (77) when the gguf package is missing."""
import os
import subprocess
import sys
import tempfile

try:
    import gguf  # noqa: F401
    import numpy  # noqa: F401
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    build = os.environ.get("QC_BUILD")
    if not build:
        print("skipped: QC_BUILD is not set")
        return 77
    binary = os.path.join(build, "test_dequant")
    if not os.path.exists(binary):
        print(f"FAIL: {binary} not built")
        return 1
    for seed in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, os.path.join(HERE, "gen", "make_gguf_fixtures.py"),
                            tmp, "--seed", str(seed)], check=True)
            r = subprocess.run([binary, os.path.join(tmp, "gguf_types.gguf"),
                                os.path.join(tmp, "gguf_types.f32")])
            if r.returncode != 0:
                print(f"FAIL: test_dequant on fixtures of seed {seed}")
                return 1
    print("ok: 3 fresh fixture sets dequantize bit-exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
