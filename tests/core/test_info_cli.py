"""test_info_cli.py - `loratune info` checked against the machine as Python sees it:
/proc/cpuinfo flags and (physical id, core id) pairs, /proc/meminfo, os.cpu_count() and
os.sched_getaffinity(); plus --help, the table form and a bad option."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import check, finish, run  # noqa: E402


def cpuinfo():
    flags, pairs, model = set(), set(), None
    pid = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k in ("flags", "Features") and not flags:
                flags = set(v.split())
            elif k == "physical id":
                pid = v
            elif k == "core id" and pid is not None:
                pairs.add((pid, v))
            elif k == "model name" and model is None:
                model = v
    return flags, pairs, model


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0]) * 1024
    return out


def main():
    os.environ.pop("LORATUNE_CPU", None)  # the uncapped program (the cap: test_cpu_dispatch.py)
    r = run("info", "--json")
    check(r.returncode == 0, f"info --json exit {r.returncode}: {r.stderr}")
    try:
        hw = json.loads(r.stdout)
    except ValueError as e:
        check(False, f"info --json is not JSON: {e}")
        return finish()
    for key in ("cpu", "memory", "cgroup", "cuda", "build", "runtime"):
        check(key in hw, f"missing key {key}")
    cpu, mem, build, rt = hw["cpu"], hw["memory"], hw["build"], hw["runtime"]

    flags, pairs, model = cpuinfo()
    check(cpu["logical_cores"] == os.cpu_count(), f"logical {cpu['logical_cores']} vs {os.cpu_count()}")
    check(cpu["affinity_cores"] == len(os.sched_getaffinity(0)), "affinity cores")
    if pairs:
        check(cpu["physical_cores"] == len(pairs), f"physical {cpu['physical_cores']} vs {len(pairs)}")
    if model:
        check(cpu["model"] == model, f"model {cpu['model']!r} vs {model!r}")
    check(len(cpu["features"]) > 0, "no features listed")
    for name, val in cpu["features"].items():
        check(val == (name in flags), f"feature {name}: {val} vs /proc/cpuinfo {name in flags}")

    mi = meminfo()
    check(mem["total_bytes"] == mi["MemTotal"], "MemTotal")
    avail = mi["MemAvailable"]
    check(abs(mem["available_bytes"] - avail) < 0.1 * avail + 256 * 2**20, "MemAvailable")

    # cgroup limits, read here only where the files sit at the mount root (namespaced)
    cg = hw["cgroup"]
    want_cpus = None
    if os.path.exists("/sys/fs/cgroup/cpu.max"):
        q, p = open("/sys/fs/cgroup/cpu.max").read().split()
        want_cpus = 0.0 if q == "max" else int(q) / int(p)
    elif os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") and all(
            l.split(":")[2].strip() == "/" for l in open("/proc/self/cgroup") if ":cpu" in l):
        q = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        p = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        want_cpus = 0.0 if q <= 0 else q / p
    if want_cpus is not None:
        check(abs(cg["cpus"] - want_cpus) < 1e-9, f"cgroup cpus {cg['cpus']} vs {want_cpus}")
    if cg["cpus"] > 0:
        check(rt["threads"] <= -(-cg["cpus"] // 1), "threads above the cgroup CPU quota")
    check(cg["memory_bytes"] >= 0, "cgroup memory")

    cuda = hw["cuda"]
    if cuda["built"]:  # an LT_CUDA build: devices listed, or the reason why none were
        check(cuda["device_count"] == len(cuda["devices"]), "cuda device count")
        check((cuda["device_count"] > 0) == (cuda["status"] == "ok"), f"cuda status {cuda['status']}")
    else:
        check(cuda["status"] == "not built" and cuda["device_count"] == 0, "cuda not built")
    check(build["blas"]["name"] == "OpenBLAS" and build["blas"]["config"].startswith("OpenBLAS"),
          f"blas {build['blas']}")
    check(build["openmp"]["enabled"] is True, "openmp")
    check(build["build_type"] != "", "build type")
    # MPI (docs/SCALE_OUT.md): the library's version string, whose version mpirun also prints
    if os.environ.get("LT_MPI") == "1" and os.environ.get("LT_MPIEXEC"):
        mv = subprocess.run([os.environ["LT_MPIEXEC"], "--version"], capture_output=True,
                            text=True).stdout.split()
        ver = next((w for w in mv if w[:1].isdigit()), "?")
        check(ver in build.get("mpi", ""), f"build.mpi {build.get('mpi')!r} vs mpirun {ver}")
    else:
        check(build.get("mpi") == "not built", f"build.mpi {build.get('mpi')!r}")
    # NCCL (multi-GPU, docs/SCALE_OUT.md): only in a CUDA build
    nccl = build.get("nccl", "")
    if cuda["built"]:
        check(nccl == "not built" or nccl.startswith("built"), f"build.nccl {nccl!r}")
    else:
        check(nccl == "not built", f"build.nccl {nccl!r} in a build without CUDA")

    lvl = rt["kernel_level"]
    check(lvl in ("avx512", "avx2", "baseline"), f"kernel level {lvl}")
    want = "baseline"
    if {"avx2", "fma", "f16c"} <= flags:
        want = "avx512" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "avx2"
    if flags:
        check(rt["cpu_level"] == want, f"cpu level {rt['cpu_level']}, flags say {want}")
    check(lvl == rt["cpu_level"] and rt["kernel_level_max"] == "avx512", f"uncapped: {rt}")
    order = ["baseline", "avx2", "avx512"]
    best = {"attention_elementwise": "avx2", "dequantization": "avx2", "nf4": "avx512"}
    check(set(rt.get("kernels", {})) == set(best), f"kernel families {rt.get('kernels')}")
    for fam, top in best.items():
        expect = order[min(order.index(lvl), order.index(top))]
        check(rt.get("kernels", {}).get(fam) == expect, f"{fam}: {rt.get('kernels')} at {lvl}")
    check(1 <= rt["threads"] <= min(cpu["physical_cores"], cpu["affinity_cores"]), "threads")

    r = run("info")
    check(r.returncode == 0 and "kernels" in r.stdout and str(rt["threads"]) in r.stdout,
          f"table form: {r.stdout}")
    if not cuda["built"]:
        check("not built" in r.stdout, "table shows CUDA not built")
    for d in cuda["devices"]:
        check(d["name"] in r.stdout, f"table shows CUDA device {d['name']}")
    r = run("info", "--help")
    check(r.returncode == 0 and "usage: loratune info" in r.stdout, "--help")
    r = run("info", "--bogus")
    check(r.returncode == 2 and "--bogus" in r.stderr, "bad option")

    return finish()


if __name__ == "__main__":
    sys.exit(main())
