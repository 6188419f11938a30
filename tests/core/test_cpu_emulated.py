"""test_cpu_emulated.py - the default binary really runs on CPUs older than the build machine:
`qemu-x86_64 -cpu MODEL` (Debian's qemu-user, TCG: it executes AVX2 but no AVX-512, and raises
SIGILL on an instruction the model lacks) runs, with no LORATUNE_CPU, the program and the kernel
tests on
- EPYC-Milan: the AVX2-only Zen 3 machines of this project (AVX2, FMA, F16C; no AVX-512);
- qemu64 (SSE2 + SSE3, no AVX): the x86-64 baseline. With the Intel vendor string: with qemu64's
  default AMD one, OpenBLAS 0.3.21 picks a 3DNow! kernel that qemu64 does not emulate.
On each: `info --json` reports that CPU's level for the dispatch and every kernel family;
test_dequant_simd and test_ops_fast pass under every cap, the levels they print never above
that CPU's (a cap above it, as no cap, runs its best kernels); a 4-step LoRA run (as test_cpu_dispatch.py) exits 0 with the losses of the run on
this machine capped to that level, within 1e-5 relative (OpenBLAS picks other GEMM kernels
there). (For contrast: the build of the old default, -march=native on a Zen 4, dies with SIGILL
on EPYC-Milan at `loratune info`.)
Skipped (exit 77) without qemu-x86_64, off x86-64, in an LT_NATIVE build (not portable by
design) and under sanitizers (ASan's shadow memory does not fit qemu-user's address space). """
import json
import os
import platform
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check, finish  # noqa: E402
from test_cpu_dispatch import BEST, LEVELS, TMP, make_data, train_losses  # noqa: E402

QEMU = shutil.which("qemu-x86_64")
MODELS = [("EPYC-Milan", "avx2"), ("qemu64,vendor=GenuineIntel", "baseline")]


def emulated(cpu, *argv):
    e = dict(os.environ)
    e.pop("LORATUNE_CPU", None)
    return subprocess.run([QEMU, "-cpu", cpu, *argv], capture_output=True, text=True, env=e)


def main():
    if platform.machine() not in ("x86_64", "AMD64") or not QEMU:
        print("needs an x86-64 machine and qemu-x86_64 (Debian package qemu-user)")
        return 77
    r = ltcheck.run("info", "--json")
    check(r.returncode == 0, f"info --json: {r.stderr}")
    build = json.loads(r.stdout)["build"]
    if any(build["compiled_features"].values()) or build["sanitizers"] != "none":
        print("an LT_NATIVE or sanitizer build: not run under emulation")
        return 77
    here = json.loads(r.stdout)["runtime"]["cpu_level"]
    data = make_data()

    for cpu, level in MODELS:
        r = emulated(cpu, ltcheck.LORATUNE, "info", "--json")
        check(r.returncode == 0, f"{cpu}: info --json exit {r.returncode} {r.stderr[-300:]}")
        if r.returncode == 0:
            rt = json.loads(r.stdout)["runtime"]
            want = {f: LEVELS[min(LEVELS.index(level), LEVELS.index(b))] for f, b in BEST.items()}
            check(rt["cpu_level"] == level and rt["kernel_level"] == level and
                  rt["kernels"] == want, f"{cpu}: runtime {rt}, want {level} and {want}")
        for test in ("test_dequant_simd", "test_ops_fast"):
            r = emulated(cpu, ltcheck.tool(test))
            ran = re.findall(r"^cap \w+, level (\w+):", r.stdout, re.M)
            check(r.returncode == 0 and r.stdout.rstrip().endswith(" 0 failed") and
                  ran == [LEVELS[min(i, LEVELS.index(level))] for i in range(len(LEVELS))],
                  f"{cpu}: {test} exit {r.returncode}, levels {ran}: "
                  f"{(r.stdout + r.stderr)[-600:]}")
        # the program's own choice (no cap) against this machine capped to the same level
        if LEVELS.index(level) <= LEVELS.index(here):
            tag = cpu.split(",")[0]
            got = train_losses(data, None, "emulated-" + tag, prefix=(QEMU, "-cpu", cpu))
            ref = train_losses(data, level, "here-" + tag)
            check(len(got) == 4 and len(ref) == 4, f"{cpu}: steps {got} vs {ref}")
            for (a, ga), (b, gb) in zip(got, ref):
                check(abs(a - b) <= 1e-5 * abs(b) and abs(ga - gb) <= 1e-5 * abs(gb),
                      f"{cpu}: loss {a!r} vs {b!r} here at {level}, grad norm {ga!r} vs {gb!r}")
            print(f"{cpu}: losses {[round(x[0], 6) for x in got]}")
    shutil.rmtree(TMP, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
