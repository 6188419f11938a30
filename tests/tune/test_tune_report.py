#!/usr/bin/env python3
"""test_tune_report.py - compare's Pareto fronts and recommendation, and the HTML / SVG reports
of tune and compare, through the program (docs/TUNE.md, "Reports"):

- a real comparison (stories260K, the MLX WikiSQL data, 4 methods x 2 tiny trials); the Pareto
  fronts (loss vs peak memory, loss vs time) and the recommendation under several constraint
  sets (`compare --report-only`) against a small independent computation over compare.json's
  per-method numbers: the non-dominated sets, which methods each constraint excludes, the
  method chosen; when nothing meets the constraints, no method, the reasons and the exit
  status 0; the terminal text, the JSON (`--json`) and the Markdown (compare.md, `--markdown`)
  say the same;
- the reports parse (html.parser for index.html: no script, no outside resource; xml.etree for
  every .svg), each chart is inline in index.html, and every plotted mark maps back, through the
  axes' mapping written on the chart, to the value it stands for: compare's Pareto points to
  compare.json, its validation curves to each study's intermediate values, lora's training curve
  to the losses `loratune train -c best_config.yaml` prints (a separate run); a study's history
  points and best-so-far staircase and its slices to study.json, for a study driven by
  `loratune study ask/report/tell` with chosen values (complete, pruned, failed trials; log,
  int, categorical parameters).
"""
import html.parser
import json
import math
import os
import sys
import tempfile
import xml.etree.ElementTree as ET

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, check, finish, run  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
DATA = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
SVGNS = "{http://www.w3.org/2000/svg}"
tmp = tempfile.mkdtemp(prefix="lt_report_")


# ---- the reference computations --------------------------------------------------------------
def pareto(rows, cost):
    pts = [r for r in rows if r.get("best_val_loss") is not None]
    front = set()
    for a in pts:
        dominated = any(b is not a and b["best_val_loss"] <= a["best_val_loss"] and
                        cost(b) <= cost(a) and (b["best_val_loss"] < a["best_val_loss"] or
                                                cost(b) < cost(a)) for b in pts)
        if not dominated:
            front.add(a["method"])
    return front


def recommend(rows, max_mem=None, max_time=None, max_loss=None):
    """(chosen method or None, {method: set of constraint names that exclude it})"""
    excluded, ok = {}, []
    for r in rows:
        by = set()
        if r.get("best_val_loss") is None:
            by.add("no-result")
        else:
            if max_mem is not None and r["peak_bytes"] > max_mem:
                by.add("max-memory")
            if max_time is not None and r["time_s"] > max_time:
                by.add("max-time")
            if max_loss is not None and r["best_val_loss"] > max_loss:
                by.add("min-quality")
        if by:
            excluded[r["method"]] = by
        else:
            ok.append(r)
    ok.sort(key=lambda r: (r["best_val_loss"], r["peak_bytes"], r["time_s"]))
    return (ok[0]["method"] if ok else None), excluded


# ---- chart reading -----------------------------------------------------------------------------
def axes(svg_root):
    g = [e for e in svg_root.iter(SVGNS + "g") if e.get("class") == "axes"]
    check(len(g) == 1, f"one axes group, got {len(g)}")
    a = g[0].attrib
    return {k: float(a["data-" + k]) for k in
            ("xlo", "xhi", "xlog", "xpxlo", "xpxhi", "ylo", "yhi", "ylog", "ypxlo", "ypxhi")}


def unmap(ax, c, p):
    """The value at pixel p on axis c ('x' or 'y')."""
    t = ax[c + "lo"] + (p - ax[c + "pxlo"]) / (ax[c + "pxhi"] - ax[c + "pxlo"]) * \
        (ax[c + "hi"] - ax[c + "lo"])
    return 10 ** t if ax[c + "log"] else t


def close(ax, c, p, want):
    """Pixel p maps back to want within 0.01 pixel (the file's 3 decimals)."""
    v = unmap(ax, c, p)
    if ax[c + "log"]:
        return abs(math.log10(v) - math.log10(want)) <= 0.01 / abs(ax[c + "pxhi"] - ax[c + "pxlo"]) \
            * (ax[c + "hi"] - ax[c + "lo"])
    return abs(v - want) <= 0.01 / abs(ax[c + "pxhi"] - ax[c + "pxlo"]) * (ax[c + "hi"] - ax[c + "lo"])


def circles(root, cls=None):
    return [e for e in root.iter(SVGNS + "circle")
            if cls is None or cls in e.get("class", "").split()]


def polylines(root, cls):
    out = []
    for e in root.iter(SVGNS + "polyline"):
        if cls in e.get("class", "").split():
            pts = [tuple(map(float, p.split(","))) for p in e.get("points").split()]
            out.append((e, pts, [float(v) for v in e.get("data-values").split()]))
    return out


def check_point(ax, c, what):
    """A circle's drawn position is its data-x / data-value; returns (x, value)."""
    x, y = float(c.get("data-x")), float(c.get("data-value"))
    check(close(ax, "x", float(c.get("cx")), x) and close(ax, "y", float(c.get("cy")), y),
          f"{what}: circle at ({c.get('cx')}, {c.get('cy')}) is not ({x}, {y})")
    return x, y


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.outside = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v and ("//" in v or v.startswith("http")):
                self.outside.append(v)


def check_report(folder, svg_names):
    """index.html parses, has no script or outside resource, holds every chart inline; every
    chart parses as XML. Returns {name: root}."""
    with open(os.path.join(folder, "index.html")) as f:
        page = f.read()
    p = Page()
    p.feed(page)
    p.close()
    check(p.tags[:1] == ["html"] and "script" not in p.tags and not p.outside,
          f"{folder}: tags {p.tags[:5]}, outside resources {p.outside}")
    roots = {}
    for n in svg_names:
        path = os.path.join(folder, n)
        with open(path) as f:
            text = f.read()
        try:
            roots[n] = ET.fromstring(text.encode())
        except ET.ParseError as e:
            check(False, f"{path}: not XML: {e}")
            continue
        body = text.split("?>\n", 1)[1]
        check(body in page, f"{path}: not inline in index.html")
        check(p.tags.count("svg") >= len(svg_names), f"{folder}: {p.tags.count('svg')} svg")
    return roots


# ---- 1. a real comparison ------------------------------------------------------------------------
d = os.path.join(tmp, "cmp")
r = run("compare", "--model", MODEL, "--data", DATA, "--methods", "lora,dora,qlora,full",
        "--trials-per-method", "2", "--iters", "10", "--eval-every", "5", "--batch-size", "2",
        "--eval-batches", "2", "--max-seq-len", "96", "--threads", "1", "--no-track",
        "--study", d)
check(r.returncode == 0, f"compare: rc {r.returncode} {r.stderr}")
with open(os.path.join(d, "compare.json")) as f:
    cmp_ = json.load(f)
rows = cmp_["methods"]
check(len(rows) == 4 and all(x["best_val_loss"] is not None for x in rows), f"rows {rows}")

fronts = {"loss_vs_memory": pareto(rows, lambda x: x["peak_bytes"]),
          "loss_vs_time": pareto(rows, lambda x: x["time_s"])}
for k, want in fronts.items():
    check(set(cmp_["pareto"][k]) == want and len(cmp_["pareto"][k]) == len(want),
          f"{k}: {cmp_['pareto'][k]} vs {want}")
want_best, _ = recommend(rows)
check(cmp_["recommendation"]["method"] == want_best and
      cmp_["recommendation"]["excluded"] == [] and
      cmp_["constraints"] == {"max_memory_bytes": None, "max_time_s": None, "max_val_loss": None},
      f"no constraints: {cmp_['recommendation']} vs {want_best}")
check(f"recommendation: {want_best}" in r.stdout and "Pareto front (validation loss vs peak "
      "memory): " + ", ".join(cmp_["pareto"]["loss_vs_memory"]) in r.stdout,
      f"terminal output: {r.stdout[-1500:]}")

# constraint sets from the numbers themselves: each one cuts between two methods
peaks = sorted(x["peak_bytes"] for x in rows)
times = sorted(x["time_s"] for x in rows)
losses = sorted(x["best_val_loss"] for x in rows)
mid = lambda v, i: (v[i] + v[i + 1]) / 2  # noqa: E731
cases = [
    {"max_mem": int(mid(peaks, 1))},
    {"max_time": mid(times, 2)},
    {"max_loss": mid(losses, 2)},
    {"max_mem": int(mid(peaks, 2)), "max_time": mid(times, 1)},
    {"max_mem": int(mid(peaks, 2)), "max_time": mid(times, 2), "max_loss": mid(losses, 2)},
    {"max_mem": peaks[0] - 1},                          # nothing fits
    {"max_loss": losses[0] / 2, "max_time": times[0] / 2},  # nothing is good or fast enough
]
if len(set(peaks)) < 3 or len(set(times)) < 4:
    print(f"note: ties among the methods' numbers: peaks {peaks}, times {times}")
for c in cases:
    args = []
    if "max_mem" in c:
        args += ["--max-memory", str(c["max_mem"])]
    if "max_time" in c:
        args += ["--max-time", "%.9fs" % c["max_time"]]
    if "max_loss" in c:
        args += ["--min-quality", "%.17g" % c["max_loss"]]
    r = run("compare", "--study", d, "--report-only", "--json", *args)
    check(r.returncode == 0, f"{c}: rc {r.returncode} {r.stderr}")
    out = json.loads(r.stdout)
    with open(os.path.join(d, "compare.json")) as f:
        check(json.load(f) == out, f"{c}: --json differs from compare.json")
    # the parsed constraint values, then the reference decision with them
    con = out["constraints"]
    check((con["max_memory_bytes"] == c.get("max_mem")) and
          (con["max_time_s"] is None) == ("max_time" not in c) and
          (con["max_val_loss"] is None) == ("max_loss" not in c), f"{c}: constraints {con}")
    mt = c.get("max_time")
    want, excl = recommend(rows, c.get("max_mem"), mt, c.get("max_loss"))
    rec = out["recommendation"]
    got_excl = {e["method"]: set(e["constraints"]) for e in rec["excluded"]}
    check(rec["method"] == want and got_excl == excl,
          f"{c}: recommended {rec['method']} excluded {got_excl}; reference {want} {excl}")
    for e in rec["excluded"]:
        flags = {"max-memory": "--max-memory", "max-time": "--max-time",
                 "min-quality": "--min-quality"}
        check(all(flags[k] in e["reason"] for k in e["constraints"]) and
              any(e["method"] in s and "excluded" in s for s in rec["reasons"]),
              f"{c}: the reason for excluding {e['method']}: {e['reason']} / {rec['reasons']}")
    if want is None:
        check(any("no method meets the constraints" in s for s in rec["reasons"]),
              f"{c}: refusal not explained: {rec['reasons']}")
        # a hint "M misses only one constraint: --flag V would admit it" does admit M
        for s in rec["reasons"]:
            if "would admit it" not in s:
                continue
            meth, rest = s.split(" misses only one constraint: ")
            flag, val = rest.split(" would admit it")[0].split(" ")
            a2 = list(args)
            a2[a2.index(flag) + 1] = val
            o2 = json.loads(run("compare", "--study", d, "--report-only", "--json", *a2).stdout)
            check(meth not in {e["method"] for e in o2["recommendation"]["excluded"]},
                  f"{c}: the hint '{s}' does not admit {meth}: {o2['recommendation']}")
    else:
        check(any(s.startswith("chosen: " + want + ":") for s in rec["reasons"]),
              f"{c}: no reason for {want}: {rec['reasons']}")
    # the same in words on the terminal and in the Markdown
    t = run("compare", "--study", d, "--report-only", *args)
    m = run("compare", "--study", d, "--report-only", "--markdown", *args)
    with open(os.path.join(d, "compare.md")) as f:
        md = f.read()
    check(m.stdout == md, f"{c}: --markdown differs from compare.md")
    check(("recommendation: " + (want or "none")) in t.stdout and
          ("## Recommendation: " + (want or "none")) in md and
          all(s in t.stdout and s in md for s in rec["reasons"]),
          f"{c}: text {t.stdout[-800:]}\nmarkdown {md}")
    for x in rows:
        line = [ln for ln in md.splitlines() if ln.startswith("| " + x["method"] + " ") or
                ln.startswith("| **" + x["method"] + "** ")]
        check(len(line) == 1 and ("%.5f" % x["best_val_loss"]) in line[0] and
              line[0].startswith("| **") == (x["method"] == want), f"{c}: markdown row {line}")

# the report of the last case (nothing recommended), then of a case with a choice
roots = check_report(os.path.join(d, "report"),
                     ["loss_curves.svg", "pareto_memory.svg", "pareto_time.svg"])
check(not any("recommended" in e.get("class", "") for e in circles(roots["pareto_memory.svg"])),
      "nothing recommended, yet a point is marked recommended")
r = run("compare", "--study", d, "--report-only", "--max-memory", str(int(mid(peaks, 2))))
want, _ = recommend(rows, int(mid(peaks, 2)))
roots = check_report(os.path.join(d, "report"),
                     ["loss_curves.svg", "pareto_memory.svg", "pareto_time.svg"])
by = {x["method"]: x for x in rows}
for name, key, cost in (("pareto_memory.svg", "loss_vs_memory", lambda x: x["peak_bytes"] / 2**20),
                        ("pareto_time.svg", "loss_vs_time", lambda x: x["time_s"])):
    root = roots[name]
    ax = axes(root)
    pts = circles(root, "method")
    check(sorted(c.get("data-method") for c in pts) == sorted(by), f"{name}: points {len(pts)}")
    for c in pts:
        x = by[c.get("data-method")]
        px_, val = check_point(ax, c, name)
        check(val == x["best_val_loss"] and abs(px_ - cost(x)) <= 1e-9 * max(1, cost(x)),
              f"{name}: {x['method']} plotted at ({px_}, {val}), compare.json has "
              f"({cost(x)}, {x['best_val_loss']})")
    check({c.get("data-method") for c in pts if "front" in c.get("class").split()} ==
          fronts[key], f"{name}: front points")
    check([c.get("data-method") for c in pts if "recommended" in c.get("class").split()] ==
          [want], f"{name}: the recommended point, want {want}")
# loss curves: validation points = each method's study intermediate values (steps 0, 5, 10)
root = roots["loss_curves.svg"]
ax = axes(root)
for x in rows:
    with open(os.path.join(d, x["method"], "study.json")) as f:
        st = json.load(f)
    inter = st["trials"][x["best_trial"]]["intermediate"]
    vals = [c for c in circles(root, "val") if c.get("data-method") == x["method"]]
    got = [check_point(ax, c, "val curve " + x["method"]) for c in vals]
    check(got == [(float(s), v) for s, v in inter] and got[-1][1] == x["best_val_loss"],
          f"{x['method']}: val points {got} vs the study's {inter}")
# lora's training curve against a separate `loratune train` of the best configuration
rep = run("train", "-c", os.path.join(d, "lora", "best_config.yaml"), "--out",
          os.path.join(tmp, "rep"), "--json", "--no-track")
check(rep.returncode == 0, f"train -c best_config.yaml: {rep.stderr}")
steps = [json.loads(ln) for ln in rep.stdout.splitlines() if '"event":"step"' in ln]
train = [pl for pl in polylines(root, "train") if pl[0].get("data-method") == "lora"]
check(len(train) == 1 and len(steps) == 10, f"{len(train)} lora train lines, {len(steps)} steps")
if train and steps:
    _, pts, vals = train[0]
    check(len(pts) == len(steps) and
          all(close(ax, "x", p[0], s["step"]) and close(ax, "y", p[1], s["loss"]) and
              abs(v - s["loss"]) <= 1e-12 * abs(s["loss"]) for p, v, s in zip(pts, vals, steps)),
          f"lora's training curve {vals} vs the re-run's {[s['loss'] for s in steps]}")

# each method's study has its own report (history + a slice per parameter)
st = json.load(open(os.path.join(d, "lora", "study.json")))
names = ["history.svg", "parallel.svg"] + ["slice_%s.svg" % p for p in st["space"]]
check_report(os.path.join(d, "lora", "report"), names)

# ---- 2. a study's report, on values chosen here (study ask / report / tell) ---------------------
sd = os.path.join(tmp, "study")
space = os.path.join(tmp, "space.json")
with open(space, "w") as f:
    json.dump({"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
               "rank": {"type": "int", "low": 2, "high": 64, "log": True},
               "batch": {"type": "int", "low": 1, "high": 9},
               "targets": {"type": "categorical", "choices": ["attention", "mlp", "all"]},
               "rs": {"type": "categorical", "choices": [False, True]}}, f)
for direction in ("minimize", "maximize"):
    sdd = sd + "-" + direction
    r = run("study", "create", "--study", sdd, "--space", space, "--seed", "3", "--direction",
            direction)
    check(r.returncode == 0, f"study create: {r.stderr}")
    told = {}
    values = [2.5, 3.1, 1.9, None, 2.2, "pruned", 1.7, 2.8, "failed", 1.75, 2.0, 2.4]
    for i, v in enumerate(values):
        a = json.loads(run("study", "ask", "--study", sdd, "--json").stdout)
        if v == "pruned":
            run("study", "report", "--study", sdd, "--trial", str(a["trial"]), "--step", "10",
                "--value", "2.9")
            run("study", "tell", "--study", sdd, "--trial", str(a["trial"]), "--state", "pruned")
        elif v == "failed":
            run("study", "tell", "--study", sdd, "--trial", str(a["trial"]), "--state", "failed")
        elif v is not None:
            run("study", "tell", "--study", sdd, "--trial", str(a["trial"]), "--value", str(v))
        told[a["trial"]] = (v, a["params"])  # None: left running
    r = run("tune", "--study", sdd, "--report-only")
    check(r.returncode == 0 and "report: " in r.stdout, f"tune --report-only: {r.stderr}")
    st = json.load(open(os.path.join(sdd, "study.json")))
    rd = os.path.join(sdd, "report")
    names = ["history.svg", "importance.svg", "parallel.svg"] + \
        ["slice_%s.svg" % p for p in st["space"]]
    roots = check_report(rd, names)
    complete = {t: v for t, (v, _) in told.items() if isinstance(v, float)}
    # history: complete trials at (trial, value), the pruned one at its last value, and the
    # best-so-far staircase
    root = roots["history.svg"]
    ax = axes(root)
    got = {}
    for c in circles(root, "complete"):
        x, y = check_point(ax, c, "history")
        got[int(x)] = y
        check(int(c.get("data-trial")) == int(x), "history: data-trial")
    check(got == complete, f"{direction}: history points {got} vs told {complete}")
    pr = [check_point(ax, c, "pruned") for c in circles(root, "pruned")]
    check(pr == [(float(values.index("pruned")), 2.9)], f"pruned point {pr}")
    best = [pl for pl in polylines(root, "best")]
    check(len(best) == 1, "one best-so-far line")
    if best:
        _, pts, vals = best[0]
        last = {}
        for (px_, py), v in zip(pts, vals):
            x = unmap(ax, "x", px_)
            check(close(ax, "y", py, v), f"best line vertex {py} is not {v}")
            last[round(x)] = v
        cum, ref = None, {}
        for t in sorted(complete):
            v = complete[t]
            cum = v if cum is None else (min(cum, v) if direction == "minimize" else max(cum, v))
            ref[t] = cum
        check(last == ref, f"{direction}: best so far {last} vs {ref}")
    # slices: each complete trial at (its parameter, its value); categorical x = choice index
    for pname, spec in st["space"].items():
        root = roots["slice_%s.svg" % pname]
        ax = axes(root)
        check(ax["xlog"] == (1 if spec.get("log") else 0), f"slice {pname}: log axis {ax}")
        pts = sorted((int(c.get("data-trial")), check_point(ax, c, "slice " + pname))
                     for c in circles(root, "complete"))
        want = []
        for t in sorted(complete):
            pv = told[t][1][pname]
            xv = spec["choices"].index(pv) if "choices" in spec else pv
            want.append((t, (float(xv), complete[t])))
        check(pts == want, f"slice {pname}: {pts} vs {want}")

    # importance: one bar per parameter, highest first, each at `study importance`'s value
    # (whose numbers tests/tune/test_importance.py checks against exact values and Optuna)
    imp = json.loads(run("study", "importance", "--study", sdd, "--json").stdout)["importance"]
    root = roots["importance.svg"]
    ax = axes(root)
    bars = [e for e in root.iter(SVGNS + "rect") if e.get("class") == "bar"]
    got = [(b.get("data-param"), float(b.get("data-value"))) for b in bars]
    want = sorted(imp.items(), key=lambda kv: -kv[1])
    check([g[0] for g in got] == [w[0] for w in want] and
          all(abs(g[1] - w[1]) < 1e-12 for g, w in zip(got, want)),
          f"{direction}: importance bars {got} vs {want}")
    for i, b in enumerate(bars):
        v = float(b.get("data-value"))
        check(close(ax, "y", float(b.get("y")), v) and
              close(ax, "y", float(b.get("y")) + float(b.get("height")), 0.0) and
              close(ax, "x", float(b.get("x")) + float(b.get("width")) / 2, float(i)),
              f"{direction}: bar {b.get('data-param')} drawn at y {b.get('y')} for {v}")
    # parallel coordinates: each complete trial's line passes through its parameters (choice
    # index for categoricals, log10 on log axes) and its value, on each axis's mapping
    root = roots["parallel.svg"]
    pax = [e for e in root.iter(SVGNS + "g") if e.get("class") == "pc-axis"]
    check([e.get("data-param") for e in pax] == list(st["space"]) + ["objective"],
          f"parallel axes {[e.get('data-param') for e in pax]}")
    lines = {}
    for e in root.iter(SVGNS + "polyline"):
        if e.get("class") == "trial":
            pts = [tuple(map(float, q.split(","))) for q in e.get("points").split()]
            lines[int(e.get("data-trial"))] = pts
    check(sorted(lines) == sorted(complete), f"parallel lines {sorted(lines)} vs {sorted(complete)}")
    for t, pts in lines.items():
        params = told[t][1]
        wantv = [(spec["choices"].index(params[k]) if "choices" in spec else params[k])
                 for k, spec in st["space"].items()] + [complete[t]]
        for (x, y), e, v in zip(pts, pax, wantv):
            lo, hi = float(e.get("data-lo")), float(e.get("data-hi"))
            pl, ph = float(e.get("data-pxlo")), float(e.get("data-pxhi"))
            tv = lo + (y - pl) / (ph - pl) * (hi - lo)
            if e.get("data-log") == "1":
                tv = 10 ** tv
            check(abs(x - float(e.get("data-x"))) < 1e-3 and
                  abs(tv - v) <= 1e-3 / abs(ph - pl) * (hi - lo) * (abs(v) * 2.31 if
                                                                     e.get("data-log") == "1"
                                                                     else 1) + 1e-12,
                  f"{direction}: trial {t} on {e.get('data-param')}: {tv} vs {v}")
    # the line colours: darker (lower red channel) for better trials
    order = sorted(complete, key=lambda t: complete[t], reverse=(direction == "maximize"))
    reds = {int(e.get("data-trial")): int(e.get("stroke")[4:].split(",")[0])
            for e in root.iter(SVGNS + "polyline") if e.get("class") == "trial"}
    check([reds[t] for t in order] == sorted(reds.values()),
          f"{direction}: colours {reds} vs order {order}")

    # --png: every chart also as a PNG of the SVG's size, drawn where the SVG says: the
    # pixel at each importance bar's centre and at each history point's centre has that mark's
    # colour (librsvg's rendering, read with Pillow). glib / librsvg keep allocations for the
    # life of the process, which LeakSanitizer would report: leak checks off for this call.
    if direction == "minimize":
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        r = run("tune", "--study", sdd, "--report-only", "--png", env=env)
        check(r.returncode == 0, f"--png: {r.stderr}")
        for n in names:
            pth = os.path.join(rd, n[:-4] + ".png")
            check(os.path.exists(pth), f"{pth} missing")
            if not os.path.exists(pth):
                continue
            img = Image.open(pth).convert("RGB")
            svg = roots[n]
            check(img.size == (int(svg.get("width")), int(svg.get("height"))),
                  f"{pth}: size {img.size}")

        def near(c, hexcol):
            want = tuple(int(hexcol[i:i + 2], 16) for i in (1, 3, 5))
            return all(abs(a - b) <= 8 for a, b in zip(c, want))
        img = Image.open(os.path.join(rd, "importance.png")).convert("RGB")
        for b in roots["importance.svg"].iter(SVGNS + "rect"):
            if b.get("class") == "bar" and float(b.get("height")) > 4:
                x = float(b.get("x")) + float(b.get("width")) / 2
                y = float(b.get("y")) + float(b.get("height")) / 2
                check(near(img.getpixel((int(x), int(y))), "#1f77b4"),
                      f"importance.png at bar {b.get('data-param')}: {img.getpixel((int(x), int(y)))}")
        img = Image.open(os.path.join(rd, "history.png")).convert("RGB")
        for c in circles(roots["history.svg"], "complete"):
            px_ = img.getpixel((int(round(float(c.get("cx")))), int(round(float(c.get("cy"))))))
            check(near(px_, "#1f77b4") or near(px_, "#d62728"),  # the best-so-far line may cross
                  f"history.png at trial {c.get('data-trial')}: {px_}")
        check(near(img.getpixel((2, 2)), "#ffffff"), "history.png: white background")

# ---- 2b. ties and a method without a result (a compare.json written here) -------------------
sy = os.path.join(tmp, "synthetic")
os.makedirs(sy)
M = 2**20
syn = [{"method": "lora", "best_val_loss": 2.0, "peak_bytes": 100 * M, "time_s": 10.0},
       {"method": "dora", "best_val_loss": 2.0, "peak_bytes": 100 * M, "time_s": 12.0},
       {"method": "qlora", "best_val_loss": 2.1, "peak_bytes": 60 * M, "time_s": 10.0},
       {"method": "full", "best_val_loss": 1.9, "peak_bytes": 300 * M, "time_s": 30.0},
       {"method": "full-b", "best_val_loss": 1.9, "peak_bytes": 250 * M, "time_s": 40.0},
       {"method": "a<b&\"c\"", "best_val_loss": None}]
for x in syn:
    x.update({"complete": 1 if x["best_val_loss"] is not None else 0, "pruned": 0, "failed": 0,
              "infeasible": 0})
with open(os.path.join(sy, "compare.json"), "w") as f:
    json.dump({"model": "m", "data": "d", "metric": "loss", "methods": syn}, f)
for c in [{}, {"max_mem": 150 * M}, {"max_mem": 150 * M, "max_time": 11.0},
          {"max_mem": 50 * M}, {"max_loss": 2.05, "max_time": 11.5}]:
    args = (["--max-memory", str(c["max_mem"])] if "max_mem" in c else []) + \
        (["--max-time", "%gs" % c["max_time"]] if "max_time" in c else []) + \
        (["--min-quality", "%g" % c["max_loss"]] if "max_loss" in c else [])
    r = run("compare", "--study", sy, "--report-only", "--json", *args)
    check(r.returncode == 0, f"synthetic {c}: {r.stderr}")
    out = json.loads(r.stdout)
    want, excl = recommend(syn, c.get("max_mem"), c.get("max_time"), c.get("max_loss"))
    got_excl = {e["method"]: set(e["constraints"]) for e in out["recommendation"]["excluded"]}
    check(out["recommendation"]["method"] == want and got_excl == excl,
          f"synthetic {c}: {out['recommendation']} vs {want} {excl}")
    for k, cost in (("loss_vs_memory", lambda x: x["peak_bytes"]),
                    ("loss_vs_time", lambda x: x["time_s"])):
        check(set(out["pareto"][k]) == pareto(syn, cost), f"synthetic {k}: {out['pareto'][k]} "
              f"vs {pareto(syn, cost)}")
roots = check_report(os.path.join(sy, "report"),
                     ["loss_curves.svg", "pareto_memory.svg", "pareto_time.svg"])
check(set(out["pareto"]["loss_vs_memory"]) == {"lora", "dora", "qlora", "full-b"} and
      set(out["pareto"]["loss_vs_time"]) == {"lora", "full"}, f"by hand: {out['pareto']}")
with open(os.path.join(sy, "compare.json")) as f:
    broken = json.load(f)
broken["methods"][1]["peak_bytes"] = "big"
with open(os.path.join(sy, "compare.json"), "w") as f:
    json.dump(broken, f)
r = run("compare", "--study", sy, "--report-only")
check(r.returncode == 1 and "methods[1]: peak_bytes: expected an integer" in r.stderr, r.stderr)

# ---- 3. refusals ------------------------------------------------------------------------------
r = run("compare", "--study", d, "--report-only", "--max-memory", "lots")
check(r.returncode == 2 and "--max-memory" in r.stderr and "'lots'" in r.stderr, r.stderr)
r = run("compare", "--study", d, "--report-only", "--max-time", "soon")
check(r.returncode == 2 and "--max-time" in r.stderr, r.stderr)
r = run("compare", "--study", d, "--report-only", "--min-quality", "-1")
check(r.returncode == 2 and "--min-quality" in r.stderr, r.stderr)
r = run("tune", "--study", d, "--report-only", "--max-memory", "1G")
check(r.returncode == 2 and "option of `loratune compare`" in r.stderr, r.stderr)
r = run("compare", "--study", os.path.join(tmp, "none"), "--report-only")
check(r.returncode == 1 and "compare.json" in r.stderr, r.stderr)
r = run("tune", "--study", os.path.join(tmp, "none"), "--report-only")
check(r.returncode == 1 and "study.json" in r.stderr, r.stderr)
sys.exit(finish())
