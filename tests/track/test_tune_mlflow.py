#!/usr/bin/env python3
"""test_tune_mlflow.py - the MLflow mirror of a study (docs/TUNE.md, "Studies in the tracking
store"), against a real `mlflow server` (the pinned PyPI one) read back with MLflow's own client:

- `loratune tune --mlflow URI` (2 trials, stories260K): MLflow holds the study as one run and
  each trial as a run whose tag mlflow.parentRunId is the study's run id (MLflow's parent /
  child runs); every run's params, tags (trial, trial_state, parent_run) and metric histories
  equal the store's record of it (`loratune runs show --json --history`), all FINISHED;
- a server that is down: the study still completes (exit status 0) with one warning that
  names `loratune runs push`.
"""
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from the test
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlflow_server  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K-hf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TUNE = ["--model", MODEL, "--data", DATA, "--trials", "2", "--iters", "6", "--batch-size", "2",
        "--max-seq-len", "64", "--eval-batches", "1", "--threads", "1", "--experiment",
        "tune-mlflow"]


def store_run(tmp, ref):
    r = ltcheck.run("runs", "show", str(ref), "--json", "--history", "--store",
                    os.path.join(tmp, "store"))
    check(r.returncode == 0, f"runs show {ref}: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


def same(client, mid, st, label):
    mr = client.get_run(mid)
    check(mr.info.status == "FINISHED", f"{label}: status {mr.info.status}")
    check(mr.data.params == st["params"],
          f"{label}: params differ: {set(mr.data.params.items()) ^ set(st['params'].items())}")
    for k, v in st["tags"].items():
        if k != "mlflow.run_id":
            check(mr.data.tags.get(k) == v, f"{label}: tag {k}: {mr.data.tags.get(k)} vs {v}")
    for key, pts in st["metric_history"].items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(mid, key))
        check(got == sorted((s, v) for s, v, _ in pts), f"{label}: metric {key}: {got[:6]}")
    return mr


def main():
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        check(False, f"mlflow not installed in the test venv: {e}")
        return ltcheck.finish()
    tmp = tempfile.mkdtemp(prefix="lt_tune_mlflow_")
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    server = None
    try:
        server, uri = mlflow_server.start(tmp, env)
        # while the server boots: a dead port
        dead = uri
        while dead == uri:
            dead = f"http://127.0.0.1:{mlflow_server.free_port()}"
        r = ltcheck.run("tune", "--study", os.path.join(tmp, "s-dead"), *TUNE, "--store",
                        os.path.join(tmp, "store"), "--mlflow", dead, env=env)
        check(r.returncode == 0 and r.stderr.count("MLflow mirror of the study stopped") == 1 and
              "loratune runs push" in r.stderr, f"server down: {r.returncode} {r.stderr[-800:]}")

        server, uri = mlflow_server.wait(tmp, server, uri)
        check(uri is not None, "mlflow server did not start")
        if not uri:
            return ltcheck.finish()
        study = os.path.join(tmp, "s")
        r = ltcheck.run("tune", "--study", study, *TUNE, "--store", os.path.join(tmp, "store"),
                        "--mlflow", uri, env=env)
        check(r.returncode == 0 and "warning" not in r.stderr and "mirrored to MLflow" in r.stdout,
              f"tune --mlflow: {r.stderr[-1500:]}")
        summary = json.load(open(os.path.join(study, "summary.json")))
        parent = store_run(tmp, summary["parent_run"])
        client = MlflowClient(tracking_uri=uri)
        if parent:
            pid = parent["tags"].get("mlflow.run_id")
            check(bool(pid), "the store records the study's MLflow run id")
            mr = same(client, pid, parent, "study")
            exp = client.get_experiment(mr.info.experiment_id)
            check(exp.name == "tune-mlflow", f"experiment {exp.name}")
            kids = client.search_runs([exp.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{pid}'")
            check(sorted(k.data.tags.get("trial") for k in kids) == ["0", "1"],
                  f"child runs: {[k.data.tags.get('trial') for k in kids]}")
            for k in kids:
                st = store_run(tmp, k.data.tags["loratune.run_id"])
                if st:
                    check(st["tags"].get("parent_run") == str(parent["id"]) and
                          st["tags"].get("mlflow.run_id") == k.info.run_id,
                          f"trial {k.data.tags.get('trial')}: store tags {st['tags']}")
                    same(client, k.info.run_id, st, "trial " + k.data.tags.get("trial", "?"))
    finally:
        if server:
            mlflow_server.stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
