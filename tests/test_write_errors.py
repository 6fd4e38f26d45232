#!/usr/bin/env python3
"""Write errors on outputs (issue: disk full, permissions): a compile, a
checkpoint and a GGUF export whose writes fail get a clear message naming
the file, exit 1, and leave no partial file under the output's name (nor a
temporary beside it).

"Disk full" is simulated with RLIMIT_FSIZE (SIGXFSZ ignored, so a write past
the limit fails with EFBIG, as a full disk fails with ENOSPC: the same code
path). Permission errors are simulated with a path whose parent is a regular
file (ENOTDIR), since tests run as root, for whom mode bits do not apply."""
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
import qctest  # noqa: E402
from qctest import CALIB, QC, ROOT, TINY, check, finish, need_calibration_text  # noqa: E402



def limited(nbytes):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


def run(args, limit=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=600,
                          preexec_fn=limited(limit) if limit else None)


def leftovers(d, prefix):
    return [f for f in os.listdir(d) if f.startswith(prefix)]


def main():
    need_calibration_text()
    tmp = tempfile.mkdtemp(prefix="qc_werr_")
    try:
        recipe = os.path.join(ROOT, "recipes", "w4a16-g128.yaml")
        base = [QC, "compile", TINY, "-r", recipe, "--calib", CALIB, "--calib-samples", "8",
                "--calib-tokens", "64", "--no-gates", "--quiet", "--target", "none"]
        # The artifact (about 190 KB) does not fit under a 64 KB limit.
        out = os.path.join(tmp, "m.qc")
        p = run(base + ["-o", out, "--no-checkpoint"], limit=64 << 10)
        check(p.returncode == 1 and "m.qc" in p.stderr and "File too large" in p.stderr
              and len(p.stderr.strip().splitlines()) == 1,
              f"artifact write error: {p.returncode} {p.stderr.strip()}")
        check(not leftovers(tmp, "m.qc"), f"artifact write error: left {leftovers(tmp, 'm.qc')}")
        # The checkpoint's inputs (8 x 64 x 64 floats = 128 KB) do not fit
        # either: the compile stops at the first block with the checkpoint
        # file named; no artifact.
        ck = os.path.join(tmp, "ck")
        p = run(base + ["-o", out, "--checkpoint", ck], limit=100 << 10)
        check(p.returncode == 1 and "checkpoint" in p.stderr and "File too large" in p.stderr,
              f"checkpoint write error: {p.returncode} {p.stderr.strip()}")
        check(not leftovers(tmp, "m.qc"), "checkpoint write error: no artifact")
        check(not [f for f in os.listdir(ck) if ".tmp." in f] if os.path.isdir(ck) else True,
              "checkpoint write error: no temporary left in the checkpoint directory")
        # Unwritable locations: the output's or the checkpoint's parent is a file.
        blocker = os.path.join(tmp, "afile")
        open(blocker, "w").write("x")
        p = run(base + ["-o", os.path.join(blocker, "m.qc"), "--no-checkpoint"])
        check(p.returncode == 1 and "afile/m.qc" in p.stderr and "cannot create" in p.stderr,
              f"output under a file: {p.returncode} {p.stderr.strip()}")
        p = run(base + ["-o", out, "--checkpoint", os.path.join(blocker, "ck")])
        check(p.returncode == 1 and "afile/ck" in p.stderr and not os.path.exists(out),
              f"checkpoint under a file: {p.returncode} {p.stderr.strip()}")
        # GGUF export past the limit.
        g = os.path.join(tmp, "m.gguf")
        src = os.path.join(ROOT, "tests", "data", "gguf_tiny_llama.gguf")
        p = run([QC, "export", src, "--gguf", g, "--type", "Q8_0"], limit=16 << 10)
        check(p.returncode == 1 and "m.gguf" in p.stderr and not leftovers(tmp, "m.gguf"),
              f"GGUF write error: {p.returncode} {p.stderr.strip()} {leftovers(tmp, 'm.gguf')}")
        # And without the limit everything works (the limits caused the errors).
        p = run(base + ["-o", out, "--checkpoint", ck])
        check(p.returncode == 0 and os.path.exists(out), f"unlimited compile: {p.stderr.strip()}")
        print("write errors: messages", "ok" if qctest.failures == 0 else "NOT ok")
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
