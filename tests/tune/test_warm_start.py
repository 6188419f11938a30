#!/usr/bin/env python3
"""test_warm_start.py - warm start from an earlier study (docs/TUNE.md, "Warm start"):

- `study create --warm-start OLD`: the complete trials of OLD that fit the new space (computed
  here from OLD's study.json and the new bounds / choices) are kept in study.json's warm_start,
  the others skipped and counted; they are not trials of the new study (`show`: 0 trials, no
  best); the quasi-random start is shortened by as many, so with at least n_startup of them
  the first ask is the GP's (a cold study with the same seed asks its Sobol point instead);
  on Branin the warm-started study's first 5 asks find a better value than a cold study's
  first 5 and than the earlier study's 20 random trials' best (the GP starts from what they
  taught it); the directions must agree; only before the first ask; a corrupt warm_start
  entry in study.json is refused naming the field;
- `loratune tune --warm-start STUDY` (stories260K): a study of other data or another method
  is refused before anything runs (exit status 2, the study folder not made); one of the same
  model, data and method prints the trials taken, records the source, and its first trial is
  not the cold study's first (Sobol) trial;
- `loratune compare --warm-start DIR` (an earlier comparison): each method with a study in DIR
  starts from it (its warm_start trials are that study's complete trials, its first trial not
  the cold Sobol point, compare.json's row names the source), a method without one starts cold
  and says so; an earlier comparison of other data, or a folder with no method's study, is
  refused before anything runs (exit status 2, no folder made).
"""
import json
import math
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, check, finish, run  # noqa: E402

tmp = tempfile.mkdtemp(prefix="lt_warm_")


def branin(p):
    x, y = p["x"], p["y"]
    return (y - 5.1 / (4 * math.pi ** 2) * x * x + 5 / math.pi * x - 6) ** 2 + \
        10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10


def space(path, xlo, xhi, extra=None):
    sp = {"x": {"type": "float", "low": xlo, "high": xhi},
          "y": {"type": "float", "low": 0.0, "high": 15.0}}
    if extra:
        sp.update(extra)
    with open(path, "w") as f:
        json.dump(sp, f)
    return path


def drive(d, n):
    vals = []
    for _ in range(n):
        a = json.loads(run("study", "ask", "--study", d, "--json").stdout)
        v = branin(a["params"])
        run("study", "tell", "--study", d, "--trial", str(a["trial"]), "--value", repr(v))
        vals.append((a["params"], v))
    return vals


full = space(os.path.join(tmp, "full.json"), -5.0, 10.0)
old = os.path.join(tmp, "old")
r = run("study", "create", "--study", old, "--space", full, "--sampler", "random", "--seed", "1")
check(r.returncode == 0, r.stderr)
old_trials = drive(old, 20)
# a failed and a running trial in the old study are not taken
a = json.loads(run("study", "ask", "--study", old, "--json").stdout)
run("study", "tell", "--study", old, "--trial", str(a["trial"]), "--state", "failed")
run("study", "ask", "--study", old, "--json")

warm = os.path.join(tmp, "warm")
r = run("study", "create", "--study", warm, "--space", full, "--seed", "2", "--n-startup", "5",
        "--warm-start", old)
check(r.returncode == 0 and "warm start: 20 complete trials" in r.stdout and
      "0 outside this space" in r.stdout, f"{r.stdout} {r.stderr}")
st = json.load(open(os.path.join(warm, "study.json")))
check(st["warm_start"]["source"] == old and
      [t["params"] for t in st["warm_start"]["trials"]] == [p for p, _ in old_trials] and
      [t["value"] for t in st["warm_start"]["trials"]] == [v for _, v in old_trials],
      f"warm_start in study.json: {st.get('warm_start', {}).get('source')}")
show = json.loads(run("study", "show", "--study", warm, "--json").stdout)
check(show["n_trials"] == 0 and show["best"] is None, f"show: {show['n_trials']} {show['best']}")
cold = os.path.join(tmp, "cold")
run("study", "create", "--study", cold, "--space", full, "--seed", "2", "--n-startup", "5")
wv = drive(warm, 5)
cv = drive(cold, 5)
check(wv[0][0] != cv[0][0], f"the warm study's first ask is the cold one's Sobol point {cv[0][0]}")
bw, bc, bo = min(v for _, v in wv), min(v for _, v in cv), min(v for _, v in old_trials)
check(bw < bc and bw < bo, f"best of 5 asks: warm {bw:.4f}, cold {bc:.4f}, the 20 earlier {bo:.4f}")
print(f"Branin, best of the first 5 asks: warm {bw:.4f}, cold {bc:.4f}; "
      f"the earlier 20 random trials {bo:.4f} (optimum 0.397887)")

# a narrower space with a new categorical: the trials outside it are skipped
narrow = space(os.path.join(tmp, "narrow.json"), 0.0, 10.0)
n_in = sum(1 for p, _ in old_trials if 0.0 <= p["x"] <= 10.0)
nw = os.path.join(tmp, "narrow")
r = run("study", "create", "--study", nw, "--space", narrow, "--warm-start", old)
check(r.returncode == 0 and f"warm start: {n_in} complete trials" in r.stdout and
      f"{20 - n_in} outside this space" in r.stdout, f"narrow: {r.stdout}")
extra = space(os.path.join(tmp, "extra.json"), -5.0, 10.0,
              {"c": {"type": "categorical", "choices": ["a", "b"]}})
r = run("study", "create", "--study", os.path.join(tmp, "extra"), "--space", extra,
        "--warm-start", old)
check(r.returncode == 0 and "warm start: 0 complete trials" in r.stdout and
      "20 outside this space" in r.stdout, f"a parameter the old study lacks: {r.stdout}")

# refusals
r = run("study", "create", "--study", os.path.join(tmp, "max"), "--space", full, "--direction",
        "maximize", "--warm-start", old)
check(r.returncode == 1 and "minimizes, this study maximizes" in r.stderr, r.stderr)
r = run("study", "create", "--study", os.path.join(tmp, "none"), "--space", full,
        "--warm-start", os.path.join(tmp, "nothing"))
check(r.returncode == 1 and "no study here" in r.stderr, r.stderr)
bad = json.load(open(os.path.join(nw, "study.json")))
bad["warm_start"]["trials"][0]["value"] = "low"
with open(os.path.join(nw, "study.json"), "w") as f:
    json.dump(bad, f)
r = run("study", "show", "--study", nw)
check(r.returncode == 1 and "warm_start.trials[0]" in r.stderr, r.stderr)

# ---- loratune tune --warm-start ------------------------------------------------------------------
MODEL = os.path.join(FIXTURES, "stories260K-hf")
DATA = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
BASE = ["--model", MODEL, "--data", DATA, "--iters", "6", "--batch-size", "2", "--max-seq-len",
        "96", "--eval-batches", "2", "--threads", "1", "--no-track", "--tune-seed", "4"]
t1 = os.path.join(tmp, "t1")
r = run("tune", "--study", t1, "--trials", "3", *BASE)
check(r.returncode == 0, r.stderr)
other = os.path.join(tmp, "other-data")
os.makedirs(other)
for n in ("train.jsonl", "valid.jsonl"):
    shutil.copy(os.path.join(DATA, n), other)
r = run("tune", "--study", os.path.join(tmp, "t-bad"), "--trials", "1", "--warm-start", t1,
        *[x if x != DATA else other for x in BASE])
check(r.returncode == 2 and "is a study of another data" in r.stderr and
      not os.path.exists(os.path.join(tmp, "t-bad")), f"other data: {r.returncode} {r.stderr}")
r = run("tune", "--study", os.path.join(tmp, "t-bad2"), "--trials", "1", "--warm-start", t1,
        "--method", "dora", *BASE)
check(r.returncode == 2 and "another method (lora, not dora)" in r.stderr, r.stderr)
t2 = os.path.join(tmp, "t2")
r = run("tune", "--study", t2, "--trials", "1", "--warm-start", t1, *BASE)
check(r.returncode == 0 and "warm start: 3 complete trials of " + t1 in r.stdout,
      f"{r.stdout[-500:]} {r.stderr}")
s1 = json.load(open(os.path.join(t1, "study.json")))
s2 = json.load(open(os.path.join(t2, "study.json")))
check([t["params"] for t in s2["warm_start"]["trials"]] == [t["params"] for t in s1["trials"]],
      "tune: the warm start's trials are the earlier study's")
check(s2["trials"][0]["params"] != s1["trials"][0]["params"],
      f"tune: the first trial is the cold study's Sobol point {s1['trials'][0]['params']}")
r = run("tune", "--study", t2, "--resume", "--warm-start", t1)
check(r.returncode == 2 and "a resumed study keeps its own" in r.stderr, r.stderr)

# ---- loratune compare --warm-start ---------------------------------------------------------------
CB = [*BASE, "--trials-per-method", "2", "--task", "none"]
c1 = os.path.join(tmp, "c1")
r = run("compare", "--study", c1, "--methods", "lora,dora", *CB)
check(r.returncode == 0, f"compare c1: {r.stderr[-800:]}")
c2 = os.path.join(tmp, "c2")
r = run("compare", "--study", c2, "--methods", "lora,dora,qlora", "--warm-start", c1, *CB)
check(r.returncode == 0, f"compare --warm-start: {r.stderr[-800:]}")
with open(os.path.join(c2, "compare.json")) as f:
    rows = {x["method"]: x for x in json.load(f)["methods"]}
for m in ("lora", "dora"):
    old_s = json.load(open(os.path.join(c1, m, "study.json")))
    new_s = json.load(open(os.path.join(c2, m, "study.json")))
    ws = new_s.get("warm_start", {})
    check([(t["params"], t["value"]) for t in ws.get("trials", [])] ==
          [(t["params"], t["value"]) for t in old_s["trials"] if t["state"] == "complete"] and
          len(ws.get("trials", [])) == 2,
          f"compare {m}: warm start trials {ws.get('trials')} vs {old_s['trials']}")
    check(new_s["trials"][0]["params"] != old_s["trials"][0]["params"],
          f"compare {m}: the first trial is the cold Sobol point")
    check(rows[m]["warm_start"] == os.path.join(c1, m) and
          f"warm start: 2 complete trials of {os.path.join(c1, m)}" in r.stdout,
          f"compare {m}: row {rows[m].get('warm_start')}")
qs = json.load(open(os.path.join(c2, "qlora", "study.json")))
check("warm_start" not in qs and rows["qlora"]["warm_start"] is None and
      f"warm start: {c1} has no qlora study; qlora starts cold" in r.stdout,
      f"compare qlora: {qs.get('warm_start')} {r.stdout[-600:]}")
# other data: refused before anything runs (even with a method that would start cold first)
r = run("compare", "--study", os.path.join(tmp, "c3"), "--methods", "qlora,lora",
        "--warm-start", c1, *[x if x != DATA else other for x in CB])
check(r.returncode == 2 and "c1/lora is a study of another data" in r.stderr and
      not os.path.exists(os.path.join(tmp, "c3")), f"compare, other data: {r.returncode} "
      f"{r.stderr[-500:]}")
r = run("compare", "--study", os.path.join(tmp, "c4"), "--methods", "full",
        "--warm-start", c1, *CB)
check(r.returncode == 2 and "holds no study of full" in r.stderr and
      not os.path.exists(os.path.join(tmp, "c4")), f"compare, nothing to warm from: {r.stderr}")

shutil.rmtree(tmp, ignore_errors=True)
sys.exit(finish())
