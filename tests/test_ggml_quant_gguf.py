#!/usr/bin/env python3
"""quantc's ggml block encoders (compiler/ggml_quant.c) checked by the gguf
package, an independent reader of the formats: bytes written by
test_ggml_quant --dump decode with gguf.quants.dequantize to exactly what
quantc's decoder gives and close to the input; for the types gguf can also
quantize (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, llama.cpp's reference rounding) quantc's search
is at least as accurate (tolerance 0.1%: the search minimises the same
squared error, so it should never lose by more than rounding noise).
Skips (77) without numpy/gguf."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as T
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

ROWS, COLS = 8, 1024
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q4_K", "Q5_K", "Q6_K", "Q3_K", "IQ4_XS"]


def main():
    build = os.environ.get("QC_BUILD")
    if not build:
        print("SKIP: QC_BUILD is not set")
        return 77
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([os.path.join(build, "test_ggml_quant"), "--dump", tmp],
                           capture_output=True, text=True)
        if r.returncode:
            print("FAIL: test_ggml_quant --dump:", r.stderr)
            return 1
        x = np.fromfile(os.path.join(tmp, "input.f32"), dtype="<f4").reshape(ROWS, COLS)
        for name in TYPES:
            qt = T[name]
            raw = np.fromfile(os.path.join(tmp, name + ".bin"), dtype=np.uint8).reshape(ROWS, -1)
            y = gguf.quants.dequantize(raw, qt).astype(np.float32)
            err = np.sqrt(((x - y) ** 2).sum() / (x ** 2).sum())
            line = f"{name:7s} gguf-decoded relative RMS error {err:.4f}"
            if name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
                ref = gguf.quants.dequantize(gguf.quants.quantize(x, qt), qt)
                rerr = np.sqrt(((x - ref) ** 2).sum() / (x ** 2).sum())
                line += f", gguf reference quantizer {rerr:.4f}"
                if err > rerr * 1.001:
                    print(f"FAIL: {name}: quantc {err:.5f} worse than reference {rerr:.5f}")
                    fails += 1
            if not np.isfinite(err) or err > 0.25:
                print(f"FAIL: {name}: gguf decodes our bytes to garbage (error {err})")
                fails += 1
            print(line)
    print("failures:", fails)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
