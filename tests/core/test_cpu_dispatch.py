"""test_cpu_dispatch.py - the run-time choice of SIMD kernels as the program shows and uses it:
LORATUNE_CPU=baseline|avx2|avx512 caps the level (`loratune info --json`: runtime.kernel_level,
cpu_level, kernel_level_max and the level of each kernel family), a bad value is refused, and
a short LoRA run (stories260K, bf16 base: dequantization, fast attention, cross-entropy, SwiGLU)
gives the same losses at every level this CPU has: identical bits at avx2 and avx512 (the same
kernels there: only NF4 has an AVX-512 variant, and `train` has no NF4 base), within 1e-5
relative between baseline and avx2 (the attention of the reference op vs the flash kernel, and
exp8 vs expf, see test_ops_fast.c). fp32 compute at every level (auto would pick bf16 at avx512
on a CPU with avx512_bf16). Each C kernel test loops over the levels itself;
test_cpu_emulated.py runs the program on CPUs without AVX-512 / AVX. """
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check, finish  # noqa: E402

LEVELS = ["baseline", "avx2", "avx512"]
BEST = {"attention_elementwise": "avx2", "dequantization": "avx2", "nf4": "avx512"}
MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_cpu_dispatch_")
try:
    with open("/proc/cpuinfo") as _f:
        BF16_FLAG = any(l.startswith("flags") and " avx512_bf16" in l for l in _f)
except OSError:
    BF16_FLAG = False


def env_with(level):
    e = dict(os.environ)
    e.pop("LORATUNE_CPU", None)
    if level is not None:
        e["LORATUNE_CPU"] = level
    return e


def runtime(level):
    r = ltcheck.run("info", "--json", env=env_with(level))
    check(r.returncode == 0, f"LORATUNE_CPU={level} info --json: exit {r.returncode}, {r.stderr}")
    return json.loads(r.stdout)["runtime"] if r.returncode == 0 else None


def make_data():
    data = os.path.join(TMP, "data")
    os.makedirs(data)
    for split, n in (("train", 16), ("valid", 4)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(data, split + ".jsonl"), "w") as f:
            f.writelines(lines)
    return data


def train_losses(data, level, tag, prefix=()):
    """(loss, grad_norm) per step of a 4-step LoRA run at LORATUNE_CPU=level (None: no cap),
    the program started through prefix (an emulator) when given."""
    out = os.path.join(TMP, "out-" + tag)
    r = subprocess.run([*prefix, ltcheck.LORATUNE, "train", "--model", MODEL, "--data", data,
                        "--out", out, "--batch-size", "2", "--max-seq-len", "48", "--pack",
                        "--lora-targets", "all", "--iters", "4", "--threads", "1", "--seed", "7",
                        "--eval-every", "0", "--base-dtype", "bf16", "--compute-dtype", "f32", "--lr", "5e-3",
                        "--no-track", "--json"], capture_output=True, text=True,
                       env=env_with(level))
    check(r.returncode == 0, f"train {tag}: exit {r.returncode}, {r.stderr[-500:]}")
    steps = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    return [(e["loss"], e["grad_norm"]) for e in steps if e.get("event") == "step"]


def main():
    rt = runtime(None)
    if rt is None:
        return finish()
    cpu = rt["cpu_level"]
    check(cpu in LEVELS and rt["kernel_level"] == cpu and rt["kernel_level_max"] == "avx512",
          f"uncapped: {rt}")
    for cap in LEVELS:
        got = runtime(cap)
        if got is None:
            continue
        act = LEVELS[min(LEVELS.index(cap), LEVELS.index(cpu))]
        check(got["kernel_level"] == act and got["kernel_level_max"] == cap and
              got["cpu_level"] == cpu, f"LORATUNE_CPU={cap}: {got}")
        want = {f: LEVELS[min(LEVELS.index(act), LEVELS.index(b))] for f, b in BEST.items()}
        check(got["kernels"] == want, f"LORATUNE_CPU={cap}: families {got['kernels']}, want {want}")
        # the bf16 mode's attention: the vdpbf16ps kernels at the avx512 level on a CPU whose
        # flags (the kernel's /proc/cpuinfo) list avx512_bf16, else the fp32 attention
        ak = got.get("compute_dtype_auto", {}).get("bf16_attention_kernel")
        want_ak = "avx512_bf16" if act == "avx512" and BF16_FLAG else "f32"
        check(ak == want_ak, f"LORATUNE_CPU={cap}: bf16_attention_kernel {ak}, want {want_ak}")
    r = ltcheck.run("info", env=env_with("avx2"))
    check(r.returncode == 0 and ("capped at avx2" in r.stdout) == (cpu == "avx512"),
          f"table form names the cap: {r.stdout[-400:]}")
    check(runtime("")["kernel_level"] == cpu, "an empty LORATUNE_CPU is no cap")
    r = ltcheck.run("info", env=env_with("sse4"))
    check(r.returncode == 2 and "LORATUNE_CPU" in r.stderr and "baseline, avx2 or avx512" in r.stderr,
          f"bad LORATUNE_CPU: exit {r.returncode}, {r.stderr}")

    data = make_data()
    runs = {lv: train_losses(data, lv, lv) for lv in LEVELS[:LEVELS.index(cpu) + 1]}
    check(all(len(v) == 4 for v in runs.values()), f"4 steps at each level: {runs}")
    if "avx512" in runs:
        check(runs["avx512"] == runs["avx2"], f"avx512 vs avx2: {runs['avx512']} vs {runs['avx2']}")
    if "avx2" in runs:
        for (a, ga), (b, gb) in zip(runs["baseline"], runs["avx2"]):
            check(abs(a - b) <= 1e-5 * abs(b) and abs(ga - gb) <= 1e-5 * abs(gb),
                  f"baseline vs avx2: loss {a!r} vs {b!r}, grad norm {ga!r} vs {gb!r}")
    print("losses per level:", {k: [round(x[0], 6) for x in v] for k, v in runs.items()})
    shutil.rmtree(TMP, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
