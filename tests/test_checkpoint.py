#!/usr/bin/env python3
"""Crash-safe, resumable compiles (compiler/checkpoint.h), end to end with
the quantc binary on the tiny llama:

- for recipes that exercise every kind of saved state (GPTQ act-order codes;
  rotate with an online Hadamard + smooth + outliers + lowrank; a GGUF block
  type), a compile killed with SIGKILL at chosen points (the
  QC_TEST_CHECKPOINT_KILL hook: after block k's inputs are saved, or between
  block k's file and its inputs) and at random times, then rerun with the
  same command, writes an artifact byte-identical to an uninterrupted
  compile, and removes its checkpoint;
- a checkpoint of another compile (changed recipe) is refused with a
  message, and nothing is written;
- SIGINT says where it stopped and how to resume, exits 130, and leaves no
  artifact or temporary file under the output's name.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from qctest import CALIB, QC, TINY, check, finish, need_calibration_text  # noqa: E402



def compile_args(recipe, out, ckpt):
    return [QC, "compile", TINY, "-r", recipe, "-o", out, "--calib", CALIB, "--calib-samples", "8",
            "--calib-tokens", "64", "--no-gates", "--quiet", "--target", "none"] + \
        (["--checkpoint", ckpt] if ckpt else ["--no-checkpoint"])


def run(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=e)


def main():
    need_calibration_text()
    tmp = tempfile.mkdtemp(prefix="qc_ckpt_")
    rng = random.Random(1)
    try:
        common = "quantc: 1\ncalibration:\n  text: %s\n  samples: 8\n  tokens: 64\n" % CALIB
        recipes = {
            "gptq": "  - quantize: {method: gptq, bits: 4, group_size: 32, act_order: true}\n",
            "mixed": "  - rotate: {online: [down_proj]}\n  - smooth: {alpha: 0.5}\n"
                     "  - outliers: {fraction: 0.01}\n"
                     "  - quantize: {method: gptq, bits: 3, group_size: 32}\n  - lowrank: {rank: 4}\n",
            "gguf": "  - quantize: {method: gptq, format: gguf:q4_0}\n",
        }
        for name, passes in recipes.items():
            recipe = os.path.join(tmp, name + ".yaml")
            with open(recipe, "w") as f:
                f.write(common + "passes:\n" + passes)
            ref = os.path.join(tmp, name + ".ref.qc")
            t0 = time.time()
            p = run(compile_args(recipe, ref, None))
            wall = time.time() - t0
            check(p.returncode == 0, f"{name}: uninterrupted compile: {p.stderr.strip()}")
            if p.returncode:
                continue
            want = open(ref, "rb").read()
            out, ckpt = os.path.join(tmp, name + ".qc"), os.path.join(tmp, name + ".ckpt")
            # Chosen points (tiny llama: 2 blocks): after block 0's inputs,
            # between block 1's file and its inputs, after the last block.
            points = [("hook", "1"), ("hook", "-2"), ("hook", "2")]
            points += [("random", None)] * 3
            for how, arg in points:
                shutil.rmtree(ckpt, ignore_errors=True)
                if how == "hook":
                    p = run(compile_args(recipe, out, ckpt), {"QC_TEST_CHECKPOINT_KILL": arg})
                    check(p.returncode == -signal.SIGKILL, f"{name}: hook {arg} kills: {p.returncode}")
                    what = f"kill -9 at hook {arg}"
                else:
                    # within the uninterrupted compile's wall time, so the kill lands
                    delay = rng.uniform(0.02, 0.8 * wall)
                    proc = subprocess.Popen(compile_args(recipe, out, ckpt),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(delay)
                    proc.kill()
                    proc.wait()
                    what = f"kill -9 after {delay:.2f} s of {wall:.2f}"
                    if proc.returncode == 0:  # finished first (a loaded machine): no kill to test
                        print(f"{name}: {what}: finished before the kill")
                        os.unlink(out)
                        continue
                if os.path.exists(out):
                    # killed after the artifact's rename (removing the
                    # checkpoint, exiting): the artifact must be the whole one
                    check(open(out, "rb").read() == want,
                          f"{name}: {what}: a partial artifact under the output name")
                    print(f"{name}: {what}: killed after the artifact was in place")
                    os.unlink(out)
                p = run(compile_args(recipe, out, ckpt))  # the same command again
                check(p.returncode == 0, f"{name}: resume after {what}: {p.stderr.strip()}")
                same = p.returncode == 0 and open(out, "rb").read() == want
                check(same, f"{name}: resume after {what}: artifact differs from the uninterrupted one")
                check(not os.path.exists(ckpt), f"{name}: checkpoint removed after {what}")
                print(f"{name}: {what}: resumed, identical={same}")
                if os.path.exists(out):
                    os.unlink(out)

        # A checkpoint of another compile is refused, nothing is written.
        recipe = os.path.join(tmp, "gptq.yaml")
        other = os.path.join(tmp, "other.yaml")
        with open(other, "w") as f:
            f.write(common + "passes:\n  - quantize: {method: gptq, bits: 3, group_size: 32}\n")
        out, ckpt = os.path.join(tmp, "x.qc"), os.path.join(tmp, "x.ckpt")
        p = run(compile_args(recipe, out, ckpt), {"QC_TEST_CHECKPOINT_KILL": "1"})
        p = run(compile_args(other, out, ckpt))
        check(p.returncode == 1 and "checkpoint of another compile" in p.stderr
              and not os.path.exists(out), f"changed recipe: {p.returncode} {p.stderr.strip()}")

        # SIGINT once block 0 is saved: message, exit 130, no output, no temporary.
        shutil.rmtree(ckpt, ignore_errors=True)
        big = ["--calib-samples", "64", "--calib-tokens", "256"]
        proc = subprocess.Popen(compile_args(recipe, out, ckpt) + big, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while not os.path.exists(os.path.join(ckpt, "inputs.qck")) and time.time() - t0 < 120 \
                and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate()[1]
        finished = proc.returncode == 0
        if finished:
            print("NOTE: the compile finished before SIGINT arrived; SIGINT not checked")
        else:
            check(proc.returncode == 130 and "interrupted in block" in err
                  and "run the same command again to resume" in err and ckpt in err,
                  f"SIGINT: {proc.returncode} {err.strip()}")
            left = [f for f in os.listdir(tmp) if f.startswith("x.qc")]
            check(not left, f"SIGINT: files under the output name: {left}")
            p = run(compile_args(recipe, out, ckpt) + big)
            check(p.returncode == 0 and os.path.exists(out) and not os.path.exists(ckpt),
                  f"resume after SIGINT: {p.returncode} {p.stderr.strip()}")
            print("SIGINT:", err.strip().splitlines()[-1] if err.strip() else "(no message)")
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
