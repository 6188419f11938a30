"""test_runs_cli.py - `loratune train` records itself; `loratune runs` and `loratune models`
read it back; `runs reproduce` re-trains with the recorded options and data version.

Tiny real training runs (stories260K GGUF, a 40-line slice of the wikisql-mlx data, 6 steps).
References from outside the store: the losses `train --json` printed as events, Python's
hashlib for the data md5 and artifact sha256, os.cpu_count for the hardware, sqlite3's own
PRAGMA integrity_check after a `train` killed with SIGKILL mid-run.
"""
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl")
TRAIN = ["--model", MODEL, "--iters", "6", "--batch-size", "2", "--max-seq-len", "64",
         "--eval-every", "3", "--threads", "1"]


def lt(*args, cwd):
    return ltcheck.run(*args, cwd=cwd)


def lt_json(*args, cwd):
    r = lt(*args, "--json", cwd=cwd)
    check(r.returncode == 0, f"loratune {' '.join(args)}: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


def train(cwd, *extra):
    """Runs train with --json; returns (returncode, {step: loss} from the events, stderr)."""
    r = lt("train", *TRAIN, "--json", *extra, cwd=cwd)
    losses = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            if ev.get("event") == "step":
                losses[ev["step"]] = ev["loss"]
    return r.returncode, losses, r.stderr


def history(run, key):
    return {s: v for s, v, _ in run["metric_history"].get(key, [])}


def md5_file(p):
    return hashlib.md5(open(p, "rb").read()).hexdigest()


def main():
    tmp = tempfile.mkdtemp(prefix="lt_runs_")
    try:
        with open(DATA) as f:
            lines = f.readlines()[:40]
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            f.writelines(lines)
        data_md5 = md5_file(data)

        rc, loss_a, err = train(tmp, "--data", "data.jsonl", "--out", "out_a", "--run-name", "a",
                                "--experiment", "exp")
        check(rc == 0 and len(loss_a) == 6, f"train a: rc {rc}: {err[-2000:]}")
        check("recorded in" in err, f"train --json says where the run went (stderr): {err[-500:]}")
        rc, loss_b, err = train(tmp, "--data", "data.jsonl", "--out", "out_b", "--run-name", "b",
                                "--experiment", "exp", "--lora-rank", "4", "--seed", "7")
        check(rc == 0, f"train b: {err[-2000:]}")

        runs = lt_json("runs", "list", cwd=tmp)
        check(runs and [r["name"] for r in runs] == ["b", "a"], f"list order: {runs and [r['name'] for r in runs]}")
        a = lt_json("runs", "show", "a", "--history", cwd=tmp)
        if not a:
            return ltcheck.finish()
        check(a["status"] == "finished" and a["experiment"] == "exp", f"status {a['status']}")
        check(history(a, "train_loss") == loss_a,
              f"stored train_loss {history(a, 'train_loss')} != events {loss_a}")
        check(len(history(a, "val_loss")) >= 2, "val_loss series")
        check(sorted(history(a, "lr")) == [1, 2, 3, 4, 5, 6], "lr series")
        check(a["params"]["lora-rank"] == "8" and a["params"]["seed"] == "42", "params")
        check(a["seed"] == 42, "seed column")
        check(a["data"]["md5"] == data_md5 and a["data"]["path"] == os.path.realpath(data),
              f"data version {a['data']} vs hashlib {data_md5}")
        check(a["tags"].get("data.versioned_by") == "loratune", "untracked data versioned by loratune")
        cached = os.path.join(tmp, ".loratune", "cache", "files", "md5", data_md5[:2], data_md5[2:])
        check(os.path.exists(cached) and md5_file(cached) == data_md5, "data copied into the store cache")
        check(a["hardware"]["cpu"]["logical_cores"] == os.cpu_count(), "hardware recorded")
        check("train --model" in a["command"] and "--run-name a" in a["command"], f"command: {a['command']}")
        arts = {x["path"]: x for x in a["artifacts"]}
        st = os.path.join("out_a", "adapter_model.safetensors")
        check(st in arts or os.path.join(tmp, st) in arts or any(p.endswith("adapter_model.safetensors") for p in arts),
              f"adapter artifact: {list(arts)}")
        for p, x in arts.items():
            full = p if os.path.isabs(p) else os.path.join(tmp, p)
            blob = open(full, "rb").read()
            check(x["sha256"] == hashlib.sha256(blob).hexdigest() and x["size"] == len(blob),
                  f"artifact {p} sha256/size")

        # table output
        r = lt("runs", "list", cwd=tmp)
        check(r.returncode == 0 and "finished" in r.stdout and f"{loss_a[6]:.6g}" in r.stdout,
              f"runs list table: {r.stdout}")
        r = lt("runs", "show", "a", cwd=tmp)
        check(r.returncode == 0 and "train_loss" in r.stdout and data_md5 in r.stdout, "runs show table")

        # compare: side by side, sortable
        cmp = lt_json("runs", "compare", "a", "b", "--sort", "train_loss:last", cwd=tmp)
        ids_by_loss = [x["id"] for x in sorted(runs, key=lambda r: r["metrics"]["train_loss"]["last"])]
        check(cmp and cmp["runs"] == ids_by_loss, f"compare sort: {cmp and cmp['runs']} vs {ids_by_loss}")
        check(cmp and cmp["params"]["lora-rank"]["differs"] and not cmp["params"]["lr"]["differs"],
              "compare marks differing params")
        cmp2 = lt_json("runs", "compare", "a", "b", "--sort", "train_loss:last", "--desc", cwd=tmp)
        check(cmp2 and cmp2["runs"] == ids_by_loss[::-1], "compare --desc")
        r = lt("runs", "compare", "a", "b", cwd=tmp)
        check(r.returncode == 0 and "* lora-rank" in r.stdout and "train_loss (final)" in r.stdout,
              f"compare table: {r.stdout[:800]}")

        # reproduce after the data changed: restored from the cache, same losses
        with open(data, "a") as f:
            f.writelines(open(DATA).readlines()[40:60])
        rc, loss_changed, err = train(tmp, "--data", "data.jsonl", "--out", "out_c", "--run-name", "changed")
        check(rc == 0 and loss_changed != loss_a, "training on the changed data gives other losses")
        r = lt("runs", "reproduce", "a", cwd=tmp)
        check(r.returncode == 0, f"reproduce: {r.stderr[-2000:]}")
        check("restored data version" in r.stderr, f"reproduce restores the data: {r.stderr[-800:]}")
        rep = lt_json("runs", "show", "last", "--history", cwd=tmp)
        check(rep and rep["tags"].get("reproduces") == str(a["id"]), "reproduces tag")
        check(rep and rep["data"]["md5"] == data_md5, "reproduction used the recorded data version")
        check(rep and history(rep, "train_loss") == loss_a,
              f"reproduced losses {rep and history(rep, 'train_loss')} != {loss_a}")
        check(md5_file(data) != data_md5, "the user's changed data was left alone")

        # models
        r = lt("models", "register", "a", "--name", "tiny", cwd=tmp)
        check(r.returncode == 0 and "version 1" in r.stdout, f"register: {r.stdout} {r.stderr}")
        r = lt("models", "register", "b", "--name", "tiny", "--mlflow", "", cwd=tmp)
        check(r.returncode == 0 and "version 2" in r.stdout, f"register 2: {r.stderr}")
        r = lt("models", "promote", "tiny", "--version", "1", "--stage", "production", cwd=tmp)
        check(r.returncode == 0, f"promote: {r.stderr}")
        r = lt("models", "promote", "tiny", "--version", "2", "--stage", "production", cwd=tmp)
        m = lt_json("models", "show", "tiny", cwd=tmp)
        if m:
            v1, v2 = m["versions"]
            check(v1["stage"] == "archived" and v2["stage"] == "production", "stages")
            check(v1["base"]["name"] == MODEL and
                  v1["base"]["sha256"] == hashlib.sha256(open(MODEL, "rb").read()).hexdigest(),
                  f"base identity {v1['base']}")
            check(v1["data"]["md5"] == data_md5, "dataset version")
            check(v1["adapter_path"] == os.path.join(os.path.realpath(tmp), "out_a"),
                  f"adapter path {v1['adapter_path']}")
            check(v1["hardware"]["cpu"]["logical_cores"] == os.cpu_count(), "hardware with the version")
        ml = lt_json("models", "list", cwd=tmp)
        check(ml and ml[0]["stages"] == {"production": 2} and ml[0]["versions"] == 2, f"models list {ml}")
        r = lt("models", "promote", "tiny", "--version", "1", "--stage", "prod", cwd=tmp)
        check(r.returncode == 2 and "expected none, staging, production or archived" in r.stderr,
              f"bad stage: {r.stderr}")
        r = lt("models", "list", cwd=tmp)
        check("tiny" in r.stdout and "production" not in r.stderr, "models list table")

        # delete
        r = lt("runs", "delete", "a", cwd=tmp)
        check(r.returncode != 0 and "registered as model 'tiny'" in r.stderr, f"delete registered: {r.stderr}")
        r = lt("runs", "delete", "changed", cwd=tmp)
        check(r.returncode == 0, f"delete: {r.stderr}")
        names = [x["name"] for x in lt_json("runs", "list", cwd=tmp) or []]
        check("changed" not in names and "a" in names, f"after delete: {names}")
        r = lt("runs", "show", "nope", cwd=tmp)
        check(r.returncode == 1 and "no run 'nope'" in r.stderr, f"unknown run: {r.stderr}")

        # a train killed mid-run: store consistent, run shown as killed
        p = subprocess.Popen([ltcheck.LORATUNE, "train", *TRAIN, "--iters", "100000", "--data",
                              "data.jsonl", "--out", "out_k", "--run-name", "victim", "--save-every", "0"],
                             cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db = os.path.join(tmp, ".loratune", "store.db")
        t0 = time.time()
        n = 0
        while time.time() - t0 < 60 and n < 3:
            time.sleep(0.2)
            try:
                c = sqlite3.connect(db, timeout=30)
                n = c.execute("SELECT count(*) FROM metrics m JOIN runs r ON r.id=m.run_id "
                              "WHERE r.name='victim' AND key='train_loss'").fetchone()[0]
                c.close()
            except sqlite3.Error:
                pass
        p.send_signal(signal.SIGKILL)
        p.wait()
        check(n >= 3, "victim logged steps before the kill")
        c = sqlite3.connect(db)
        check(c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity_check after SIGKILL")
        c.close()
        v = lt_json("runs", "show", "victim", cwd=tmp)
        check(v and v["status"] == "killed", f"killed run status: {v and v['status']}")

        # a damaged store: a clear error naming the file
        bad = os.path.join(tmp, "bad")
        os.makedirs(bad)
        with open(os.path.join(bad, "store.db"), "wb") as f:
            f.write(b"this is not a database" * 200)
        r = lt("runs", "list", "--store", bad, cwd=tmp)
        check(r.returncode == 1 and os.path.join(bad, "store.db") in r.stderr and "damaged" in r.stderr,
              f"damaged store: {r.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
