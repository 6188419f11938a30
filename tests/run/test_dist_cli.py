"""test_dist_cli.py - `loratune train`'s multi-GPU options (docs/SCALE_OUT.md, "Multi-GPU over
NCCL") as the command sees them, in any build (no GPU needed):

- refusals with exit 2 naming the option: --dist-init without --device cuda, --dist-reduce
  other than bf16 / fp32, --dist-timeout not > 0, --dist-init without its value, --zero
  other than 0 / 1, --zero 1 without NCCL ranks (a plain CPU run; --device cpu), --zero 0 is
  the plain run; `plan --zero`: 1 with --ranks 4 plans a quarter of AdamW's bytes (up to the
  shards' padding) and a peak lower by the rest, a bad value refused;
- --dist-init without RANK / WORLD_SIZE (or SLURM_PROCID / SLURM_NTASKS): exit 1 naming those
  variables; RANK=abc and RANK >= WORLD_SIZE named too;
- `train --help` lists the three options; `info --json` build.nccl agrees with the build;
- with a rank count and --device cuda: a build without NCCL says so (exit 1); a CUDA + NCCL
  build on a machine without a GPU gets through the rendezvous and stops at the GPU, naming
  it -- two ranks over TCP and over a shared file, each rank reaching ncclCommInitRank's
  device check (the id got through); with a GPU (one rank) the run trains (exit 0).
The rendezvous itself is tested between processes by test_rendezvous.c; NCCL on a GPU by
test_nccl.c.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_dist_cli_")
os.environ["LORATUNE_STORE"] = os.path.join(TMP, "store")
for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
          "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
    os.environ.pop(v, None)
BASE = ["train", "--model", MODEL, "--data", DATA, "--batch-size", "2", "--max-seq-len", "32",
        "--iters", "2", "--eval-every", "0", "--no-track", "--json"]


def train(extra, env=None, out="o"):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([ltcheck.LORATUNE] + BASE + ["--out", os.path.join(TMP, out)] + extra,
                          capture_output=True, text=True, env=e, timeout=120)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- refusals ----
r = train(["--device", "cpu", "--dist-init", "file:" + os.path.join(TMP, "id")])
check(r.returncode == 2 and "needs --device cuda" in r.stderr, f"--dist-init on cpu: {r.stderr}")
r = train(["--dist-reduce", "fp16"])
check(r.returncode == 2 and "--dist-reduce: expected bf16 or fp32, got 'fp16'" in r.stderr,
      f"--dist-reduce fp16: {r.returncode} {r.stderr}")
r = train(["--dist-timeout", "0"])
check(r.returncode == 2 and "--dist-timeout: expected seconds > 0" in r.stderr,
      f"--dist-timeout 0: {r.returncode} {r.stderr}")
r = subprocess.run([ltcheck.LORATUNE] + BASE + ["--out", os.path.join(TMP, "o"), "--dist-init"],
                   capture_output=True, text=True)
check(r.returncode == 2 and "--dist-init: missing value" in r.stderr,
      f"--dist-init without a value: {r.returncode} {r.stderr}")
spec = "file:" + os.path.join(TMP, "id")
r = train(["--device", "cuda", "--dist-init", spec])
check(r.returncode == 1 and "RANK and WORLD_SIZE" in r.stderr and "SLURM_PROCID" in r.stderr,
      f"no rank in the environment: {r.returncode} {r.stderr}")
r = train(["--device", "cuda", "--dist-init", spec], {"RANK": "abc", "WORLD_SIZE": "2"})
check(r.returncode == 1 and "RANK='abc': expected a number" in r.stderr, f"RANK=abc: {r.stderr}")
r = train(["--device", "cuda", "--dist-init", spec], {"RANK": "2", "WORLD_SIZE": "2"})
check(r.returncode == 1 and "expected 0 <= rank < size" in r.stderr, f"RANK=2 of 2: {r.stderr}")
r = train(["--device", "cuda", "--dist-init", spec], {"SLURM_PROCID": "3", "SLURM_NTASKS": "2"})
check(r.returncode == 1 and "SLURM_PROCID=3" in r.stderr, f"SLURM_PROCID=3 of 2: {r.stderr}")

for v in ("2", "x", "-1"):
    r = train(["--zero", v])
    check(r.returncode == 2 and f"--zero: expected 0 (off) or 1 (ZeRO-1" in r.stderr
          and f"got '{v}'" in r.stderr, f"--zero {v}: {r.returncode} {r.stderr}")
for dev in ("auto", "cpu"):
    r = train(["--zero", "1", "--device", dev])
    check(r.returncode == 2 and "--zero 1: ZeRO-1 shards AdamW's state" in r.stderr
          and "NCCL" in r.stderr, f"--zero 1 --device {dev}, one process: {r.returncode} "
          f"{r.stderr}")
r = train(["--zero", "0", "--device", "cpu"], out="zero0")
check(r.returncode == 0, f"--zero 0 (off): the plain run: {r.returncode} {r.stderr[-400:]}")


def plan(extra):
    r = subprocess.run([ltcheck.LORATUNE, "plan", "--model", MODEL, "--method", "lora",
                        "--lora-targets", "all", "--device", "cpu", "--json"] + extra,
                       capture_output=True, text=True)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


r1, p1 = plan([])
r4, p4 = plan(["--ranks", "4", "--zero", "1"])
check(p1 and p4 and p4["zero"] == 1 and p4["ranks"] == 4 and "exchange_bytes" not in p4,
      f"plan --ranks 4 --zero 1: {r4.returncode} {r4.stderr} {p4}")
if p1 and p4:
    o1, o4 = p1["bytes"]["optimizer"], p4["bytes"]["optimizer"]
    # the peak drops by what AdamW no longer holds (within 4 KiB: the gradient span's padding
    # and the overhead estimate move a little)
    check(o1 / 4 <= o4 <= o1 / 4 + 2 * 4 * 16
          and abs(p1["peak_bytes"] - p4["peak_bytes"] - (o1 - o4)) < 4096,
          f"plan --zero 1 over 4 ranks: optimizer {o4} bytes, one process {o1}; peak "
          f"{p4['peak_bytes']} vs {p1['peak_bytes']}")
r, _ = plan(["--zero", "2"])
check(r.returncode == 2 and "--zero: expected 0 (off) or 1" in r.stderr,
      f"plan --zero 2: {r.stderr}")

h = subprocess.run([ltcheck.LORATUNE, "train", "--help"], capture_output=True, text=True)
check(all(o in h.stdout for o in ("--dist-init", "--dist-reduce", "--dist-timeout", "--zero")),
      "train --help lists the --dist-* options")

# ---- the build: NCCL or not, a GPU or not ----
info = json.loads(ltcheck.run("info", "--json").stdout)
nccl = info["build"].get("nccl", "")
cuda = info.get("cuda", {})
gpus = cuda.get("device_count", 0) if cuda.get("built") else 0
check(nccl.startswith("built") or nccl == "not built", f"build.nccl {nccl!r}")
one = {"RANK": "0", "WORLD_SIZE": "1"}
if not nccl.startswith("built"):
    r = train(["--device", "cuda", "--dist-init", spec], one)
    check(r.returncode == 1 and "built without NCCL" in r.stderr,
          f"a build without NCCL: {r.returncode} {r.stderr}")
elif gpus == 0:
    # the rendezvous works for both ranks; each stops at its GPU (none here)
    for kind in ("tcp:127.0.0.1:%d" % free_port(), "file:" + os.path.join(TMP, "id2")):
        procs = []
        for rank in (1, 0):
            e = dict(os.environ, RANK=str(rank), WORLD_SIZE="2")
            procs.append(subprocess.Popen(
                [ltcheck.LORATUNE] + BASE + ["--out", os.path.join(TMP, "o2"), "--device",
                                             "cuda", "--dist-init", kind, "--dist-timeout", "30"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
        for rank, p in zip((1, 0), procs):
            _, err = p.communicate(timeout=90)
            check(p.returncode == 1 and f"rank {rank} of 2 (GPU {rank})" in err and
                  "CUDA device" in err and "did not appear" not in err and
                  "connected within" not in err,
                  f"{kind}: rank {rank} should pass the rendezvous and stop at the GPU: {err}")
        check(not os.path.exists(os.path.join(TMP, "id2")), "file: the id file is removed")
else:
    r = train(["--device", "cuda", "--dist-init", spec, "--dist-reduce", "fp32"], one, "gpu")
    if "cannot open libnccl.so.2" in r.stderr:  # a GPU, but no NCCL library to open here
        print("not checked: one rank on the GPU (no libnccl.so.2 here; set LT_NCCL_LIB):",
              r.stderr.strip())
    else:
        check(r.returncode == 0 and "over NCCL" in r.stderr, f"one rank on a GPU: {r.stderr}")
        steps = [json.loads(x) for x in r.stdout.splitlines() if '"step"' in x]
        check(len(steps) == 2, f"one rank on a GPU: {len(steps)} step events")

sys.exit(ltcheck.finish())
