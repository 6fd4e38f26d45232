"""What the Python end-to-end tests share: where things are, a check() that
counts failures instead of stopping at the first, and the exit protocol
(0 pass, 1 fail, 77 skip: ctest's SKIP_RETURN_CODE)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QC = os.environ.get("QC_BIN", os.path.join(ROOT, "build", "quantc"))
TINY = os.path.join(ROOT, "tests", "data", "tiny", "llama")
DATA = os.environ.get("QC_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
if "QC_DATA" not in os.environ and not os.path.isdir(DATA):
    # a fresh clone without ../shared/data: the committed excerpts
    DATA = os.path.join(ROOT, "tests", "data", "wikitext")
CALIB = os.path.join(DATA, "wikitext2-valid.tokens.txt")
SKIP = 77

failures = 0


def check(cond, what):
    """Records a failure (printed with `what`) when cond is false."""
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)
    return bool(cond)


def qc(*args, timeout=600):
    """Runs quantc; (exit code, stdout, stderr)."""
    p = subprocess.run([QC, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def need_calibration_text():
    """Exits with the skip code when the shared calibration text is absent."""
    if not os.path.exists(CALIB):
        print("SKIP: calibration text not found at", CALIB)
        sys.exit(SKIP)


def finish():
    """Prints the failure count; the exit code for sys.exit."""
    print("failures:", failures)
    return 1 if failures else 0
