#!/usr/bin/env python3
"""study_vs_optuna.py - issue 15's optimizer-quality anchor: `loratune study ask/tell` (the
real program, one process per ask and per tell, as a user's script drives it) against Optuna's
GPSampler, TPESampler and RandomSampler (in process) on standard test functions with known
optima: Branin (2-d), Hartmann-6, Levy-10 and a mixed float/int/categorical function.

For each function, sampler and seed it runs EVALS evaluations and records the best value after
each; the simple regret at k evaluations is (best of the first k) - (the known optimum). It
also times `loratune study ask` at trial 100 (wall time of the whole process, including its
start and the study file's read and write) and Optuna GPSampler's ask (+ suggest) at trial 100.

Not a test (nothing is asserted): a benchmark for bench/RESULTS.md. Needs optuna + torch
(GPSampler) from tools/bench-requirements.txt in .venv-bench (tools/setup.sh --bench):
    .venv-bench/bin/python bench/study_vs_optuna.py --loratune build/loratune --seeds 20 \
        --evals 50 --out /tmp/study_vs_optuna.json
Prints the Markdown tables; --table FILE.json reprints them from a saved run.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# ---- test functions: (space, f(params) -> value, known minimum) --------------------------


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


H6_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14]]
H6_P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
H6_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(p):
    x = [p[f"x{i}"] for i in range(6)]
    return -sum(H6_ALPHA[i] * math.exp(-sum(H6_A[i][j] * (x[j] - H6_P[i][j] * 1e-4) ** 2
                                             for j in range(6))) for i in range(4))


def levy10(p):
    x = [p[f"x{i}"] for i in range(10)]
    w = [1 + (v - 1) / 4 for v in x]
    s = math.sin(math.pi * w[0]) ** 2
    for i in range(9):
        s += (w[i] - 1) ** 2 * (1 + 10 * math.sin(math.pi * w[i] + 1) ** 2)
    return s + (w[9] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[9]) ** 2)


MIXED_OFFSET = {"a": 1.0, "b": 0.0, "c": 0.5, "d": 2.0}


def mixed(p):
    """Two floats, a linear int, a log int and a 4-way categorical; minimum 0 at x = (1, -2),
    n = 7, m = 32, c = "b"."""
    v = ((p["x0"] - 1) ** 2 + (p["x1"] + 2) ** 2) / 10 + ((p["n"] - 7) / 5) ** 2
    return v + (math.log2(p["m"]) - 5) ** 2 / 4 + MIXED_OFFSET[p["c"]]


def fl(lo, hi, log=False):
    return {"type": "float", "low": lo, "high": hi, "log": log}


FUNCS = {
    "branin": ({"x1": fl(-5, 10), "x2": fl(0, 15)}, branin, 0.397887357729739),
    "hartmann6": ({f"x{i}": fl(0, 1) for i in range(6)}, hartmann6, -3.32236801141551),
    "levy10": ({f"x{i}": fl(-10, 10) for i in range(10)}, levy10, 0.0),
    "mixed": ({"x0": fl(-5, 5), "x1": fl(-5, 5),
               "n": {"type": "int", "low": 0, "high": 20, "log": False},
               "m": {"type": "int", "low": 1, "high": 256, "log": True},
               "c": {"type": "categorical", "choices": ["a", "b", "c", "d"]}}, mixed, 0.0),
}

# ---- drivers -------------------------------------------------------------------------------


def lt(loratune, *args, cpu=None):
    """`loratune study ARGS`: its stdout; cpu (a list) gets the process's user + system CPU
    seconds (os.wait4), which a loaded machine inflates less than wall time."""
    p = subprocess.Popen([loratune, "study", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"loratune study {args[0]} failed: {err}")
    if cpu is not None:
        cpu.append(ru.ru_utime + ru.ru_stime)
    return out


def run_loratune(loratune, fname, seed, evals, sampler="auto"):
    space, f, _ = FUNCS[fname]
    tmp = tempfile.mkdtemp(prefix="lt-bench-")
    try:
        with open(os.path.join(tmp, "space.json"), "w") as fh:
            json.dump(space, fh)
        d = os.path.join(tmp, "study")
        lt(loratune, "create", "--study", d, "--space", os.path.join(tmp, "space.json"),
           "--seed", str(seed), "--sampler", sampler)
        vals, ask_s, ask_cpu = [], [], []
        for _ in range(evals):
            t0 = time.perf_counter()
            o = json.loads(lt(loratune, "ask", "--study", d, "--json", cpu=ask_cpu))
            ask_s.append(time.perf_counter() - t0)
            v = f(o["params"])
            vals.append(v)
            lt(loratune, "tell", "--study", d, "--trial", str(o["trial"]), "--value", repr(v))
        return vals, ask_s, ask_cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_optuna(kind, fname, seed, evals):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, f, _ = FUNCS[fname]
    sampler = {"gp": lambda: optuna.samplers.GPSampler(seed=seed),
               "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
               "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[kind]()
    study = optuna.create_study(sampler=sampler, direction="minimize")
    vals, ask_s, ask_cpu = [], [], []
    for _ in range(evals):
        t0, c0 = time.perf_counter(), time.process_time()
        t = study.ask()
        p = {}
        for name, s in space.items():
            if s["type"] == "float":
                p[name] = t.suggest_float(name, s["low"], s["high"], log=s["log"])
            elif s["type"] == "int":
                p[name] = t.suggest_int(name, s["low"], s["high"], log=s["log"])
            else:
                p[name] = t.suggest_categorical(name, s["choices"])
        ask_s.append(time.perf_counter() - t0)
        ask_cpu.append(time.process_time() - c0)
        v = f(p)
        vals.append(v)
        study.tell(t, v)
    return vals, ask_s, ask_cpu


SAMPLERS = ["loratune-auto", "optuna-gp", "optuna-tpe", "optuna-random"]


def run_one(args, sampler, fname, seed, evals):
    if sampler.startswith("loratune-"):
        return run_loratune(args.loratune, fname, seed, evals, sampler.split("-", 1)[1])
    return run_optuna(sampler.split("-", 1)[1], fname, seed, evals)


def regret_at(vals, k, fmin):
    return min(vals[:k]) - fmin


def tables(res):
    out = []
    ks = [k for k in (30, 50) if k <= res["evals"]] if res["seeds"] else []
    for k in ks:
        out.append(f"Median simple regret at {k} evaluations ({res['seeds']} seeds; "
                   "in brackets: 25th-75th percentile)\n")
        out.append("| function | " + " | ".join(res["samplers"]) + " |")
        out.append("| --- |" + " ---: |" * len(res["samplers"]))
        for fname in res["functions"]:
            fmin = FUNCS[fname][2]
            counts = {len(res["runs"][fname][s]) for s in res["samplers"]}
            row = [fname if counts == {res["seeds"]} else
                   fname + " (" + "/".join(str(len(res["runs"][fname][s])) for s in res["samplers"])
                   + " seeds)"]
            for s in res["samplers"]:
                rs = sorted(regret_at(v, k, fmin) for v in res["runs"][fname][s])
                if not rs:
                    row.append("-")
                    continue
                q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
                row.append(f"{statistics.median(rs):.4g} [{q[0]:.3g}, {q[2]:.3g}]")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    if "ask_at_100" in res:
        out.append("Time per ask at trials 91-100 (hartmann6, seed 0; seconds; loratune: the whole "
                   "`loratune study ask` process)\n")
        out.append("| sampler | median wall | max wall | median CPU | max CPU |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        for s, t in res["ask_at_100"].items():
            w, c = (t["wall"], t["cpu"]) if isinstance(t, dict) else (t, [math.nan])
            out.append(f"| {s} | {statistics.median(w):.4f} | {max(w):.4f} | "
                       f"{statistics.median(c):.4f} | {max(c):.4f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loratune", default="build/loratune")
    ap.add_argument("--seeds", type=int, default=20, help="0: only the time per ask")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + "
                    "seeds - 1 (more seeds for a sharper comparison: merge with --table)")
    ap.add_argument("--evals", type=int, default=30)
    ap.add_argument("--functions", default=",".join(FUNCS))
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--out", default="/tmp/study_vs_optuna.json")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--table", nargs="+", help="print the tables of saved result files (runs of "
                    "different samplers merged) and stop")
    args = ap.parse_args()
    if args.table:
        res = None
        for path in args.table:
            with open(path) as fh:
                r = json.load(fh)
            if res is None:
                res = r
                continue
            res["evals"] = min(res["evals"], r["evals"])
            for f in r["functions"]:
                if f not in res["functions"]:
                    res["functions"].append(f)
                    res["runs"][f] = {}
            for f in res["functions"]:
                for s, v in r["runs"].get(f, {}).items():
                    if s in res["runs"][f] and r.get("first_seed", 0) != res.get("first_seed", 0):
                        res["runs"][f][s] = res["runs"][f][s] + v  # more seeds of a sampler
                    else:
                        res["runs"][f][s] = v
            res["samplers"] += [s for s in r["samplers"] if s not in res["samplers"]]
            res["seeds"] = min(len(v) for f in res["functions"] for s, v in res["runs"][f].items()
                               if s in res["samplers"] and v)
        for f in res["functions"]:  # a sampler not run on a function: an empty cell
            for s in res["samplers"]:
                res["runs"][f].setdefault(s, [])
            res.setdefault("ask_at_100", {}).update(r.get("ask_at_100", {}))
        print(tables(res))
        return
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    fnames, samplers = args.functions.split(","), args.samplers.split(",")
    res = {"seeds": args.seeds, "first_seed": args.first_seed, "evals": args.evals, "functions": fnames, "samplers": samplers,
           "runs": {f: {s: [] for s in samplers} for f in fnames},
           "wall_s": {f: {s: 0.0 for s in samplers} for f in fnames}}
    for fname in fnames:
        for s in samplers:
            t0 = time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                vals, _, _ = run_one(args, s, fname, seed, args.evals)
                res["runs"][fname][s].append(vals)
            res["wall_s"][fname][s] = time.perf_counter() - t0
            if not args.seeds:
                continue
            print(f"{fname:10s} {s:14s} median regret@{min(30, args.evals)} "
                  f"{statistics.median(regret_at(v, min(30, args.evals), FUNCS[fname][2]) for v in res['runs'][fname][s]):.4g}"
                  f"  ({res['wall_s'][fname][s]:.0f} s)", flush=True)
            with open(args.out, "w") as fh:
                json.dump(res, fh)
    if not args.no_timing:
        res["ask_at_100"] = {}
        for s in ("loratune-auto", "optuna-gp"):
            if s in samplers:
                _, ask_s, ask_cpu = run_one(args, s, "hartmann6", 0, 100)
                res["ask_at_100"][s] = {"wall": ask_s[90:100], "cpu": ask_cpu[90:100]}
        with open(args.out, "w") as fh:
            json.dump(res, fh)
    print(tables(res))


if __name__ == "__main__":
    main()
