#!/usr/bin/env python3
"""Output files get the mode a plain creat / mkdir would give them, 0666
(directories 0777) less the umask, although they are written under a
temporary name first (mkstemp / mkdtemp create 0600 / 0700): under umasks
022, 027 and 002, a GGUF export (qc_atomic_file), a compressed-tensors
export directory and every file in it, and the compiled artifact.

The artifact's writer (codegen/artifact_write.c) creates its temporary with
0644, so it is checked only under umasks that clear the group write bit
(022, 027), where 0644 and 0666 less the umask agree."""
import os
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from qctest import CALIB, QC, ROOT, TINY, check, finish, need_calibration_text  # noqa: E402

GGUF_SRC = os.path.join(ROOT, "tests", "data", "gguf_tiny_llama.gguf")


def run(args, mask):
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=600,
                       preexec_fn=lambda: os.umask(mask))
    check(p.returncode == 0, f"umask {mask:03o}: {' '.join(args[:2])}: {p.stderr.strip()}")
    return p.returncode == 0


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def want(path, expect, what):
    m = mode(path)
    check(m == expect, f"{what}: {os.path.basename(path)} has mode {m:04o}, want {expect:04o}")


def main():
    need_calibration_text()
    with tempfile.TemporaryDirectory() as tmp:
        for mask in (0o022, 0o027, 0o002):
            d = os.path.join(tmp, f"u{mask:03o}")
            os.mkdir(d)
            art, gg, ct = (os.path.join(d, n) for n in ("m.qc", "m.gguf", "ct"))
            if not run(["compile", TINY, "-r", os.path.join(ROOT, "recipes", "w4a16-g128.yaml"),
                        "--calib", CALIB, "--calib-samples", "4", "--calib-tokens", "32",
                        "--no-gates", "--quiet", "--target", "none", "--no-checkpoint", "-o",
                        art], mask):
                continue
            if mask & 0o020:
                want(art, 0o666 & ~mask, f"umask {mask:03o}: artifact")
            if run(["export", GGUF_SRC, "--gguf", gg, "--quiet"], mask):
                want(gg, 0o666 & ~mask, f"umask {mask:03o}: GGUF export")
            if run(["export", art, "--format", "compressed-tensors", "-o", ct, "--quiet"], mask):
                want(ct, 0o777 & ~mask, f"umask {mask:03o}: compressed-tensors directory")
                files = os.listdir(ct)
                check(len(files) >= 2, f"umask {mask:03o}: compressed-tensors wrote {files}")
                for f in files:
                    want(os.path.join(ct, f), 0o666 & ~mask, f"umask {mask:03o}: ct file")
            print(f"umask {mask:03o}: artifact {mode(art):04o}, GGUF {mode(gg):04o}, "
                  f"compressed-tensors {mode(ct):04o}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
