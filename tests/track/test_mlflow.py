"""test_mlflow.py - MLflow mirroring against a real `mlflow server` (PyPI, pinned) started on
loopback with a temporary SQLite backend, read back with MLflow's own Python client.

1. `train --mlflow URI`: the MLflow run has every parameter the store has, the full history of
   train_loss / val_loss / lr (steps and values exactly as `train --json` printed / the store
   holds), status FINISHED, the loratune tags; the store records the MLflow run id.
2. `models register RUN --name N --mlflow URI` and `models promote`: the registered version
   points at that MLflow run, carries the base sha256 / data md5 tags, and changes stage.
3. A server that is down: training still succeeds in bounded time with a warning that says
   how to push later; `runs push RUN` then sends the complete run (full history).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from the test
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlflow_server  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl")
TRAIN = ["--model", MODEL, "--data", "data.jsonl", "--iters", "6", "--batch-size", "2",
         "--max-seq-len", "64", "--eval-every", "3", "--threads", "1", "--experiment", "track-test"]


def start_server(tmp):
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return mlflow_server.start(tmp, env)


def train(tmp, name, *extra, env=None):
    r = subprocess.run([ltcheck.LORATUNE, "train", *TRAIN, "--json", "--run-name", name,
                        "--out", "out_" + name, *extra], cwd=tmp,
                       capture_output=True, text=True, env=env)
    losses = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            if ev.get("event") == "step":
                losses[ev["step"]] = ev["loss"]
    return r, losses


def store_run(tmp, ref):
    r = ltcheck.run("runs", "show", ref, "--json", "--history", cwd=tmp)
    check(r.returncode == 0, f"runs show {ref}: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


def compare_run(client, mlrun_id, st, label):
    """The MLflow run against the store's record of the same run."""
    mr = client.get_run(mlrun_id)
    check(mr.info.status == "FINISHED", f"{label}: status {mr.info.status}")
    check(mr.data.params == st["params"],
          f"{label}: params differ: {set(mr.data.params.items()) ^ set(st['params'].items())}")
    for key, pts in st["metric_history"].items():
        hist = client.get_metric_history(mlrun_id, key)
        got = sorted((m.step, m.value) for m in hist)
        want = sorted((s, v) for s, v, _ in pts)
        check(got == want, f"{label}: metric {key}: MLflow {got[:8]} vs store {want[:8]}")
    check(mr.data.tags.get("loratune.data_md5") == st["data"]["md5"], f"{label}: data md5 tag")
    check(mr.data.tags.get("loratune.run_id") == str(st["id"]), f"{label}: run id tag")
    return mr


def main():
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        check(False, f"mlflow not installed in the test venv: {e}")
        return ltcheck.finish()
    tmp = tempfile.mkdtemp(prefix="lt_mlflow_")
    server = None
    try:
        with open(DATA) as f:
            lines = f.readlines()[:40]
        with open(os.path.join(tmp, "data.jsonl"), "w") as f:
            f.writelines(lines)

        # the server boots (seconds of imports and schema migrations) while part 3 runs
        server, uri = start_server(tmp)

        # 3 first (no server yet): a dead port; training is not blocked
        dead = uri
        while dead == uri:
            dead = f"http://127.0.0.1:{mlflow_server.free_port()}"
        env = dict(os.environ, LORATUNE_MLFLOW_FLUSH_S="2")
        t0 = time.time()
        r, loss_down = train(tmp, "offline", "--mlflow", dead, env=env)
        dt = time.time() - t0
        check(r.returncode == 0 and len(loss_down) == 6, f"train with MLflow down: {r.stderr[-1500:]}")
        check("MLflow mirror incomplete" in r.stderr and "loratune runs push" in r.stderr,
              f"warning with the way out: {r.stderr[-800:]}")
        check(dt < 60, f"training with the server down took {dt:.1f}s")

        server, uri = mlflow_server.wait(tmp, server, uri)
        check(uri is not None, "mlflow server did not start")
        if not uri:
            return ltcheck.finish()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)

        # 1. live mirror
        r, losses = train(tmp, "live", "--mlflow", uri)
        check(r.returncode == 0, f"train --mlflow: {r.stderr[-1500:]}")
        check("warning" not in r.stderr, f"no warning with the server up: {r.stderr[-800:]}")
        st = store_run(tmp, "live")
        if st:
            mid = st["tags"].get("mlflow.run_id")
            check(bool(mid), "store records the MLflow run id")
            check({s: v for s, v, _ in st["metric_history"]["train_loss"]} == losses,
                  "store train_loss == train --json events")
            if mid:
                mr = compare_run(client, mid, st, "live")
                check(mr.info.run_name == "live", f"run name {mr.info.run_name}")
                exp = client.get_experiment(mr.info.experiment_id)
                check(exp.name == "track-test", f"experiment {exp.name}")
                check(len(client.get_metric_history(mid, "train_loss")) == 6, "full train_loss history")

            # 2. registry; a version made outside loratune first, so MLflow's numbers are one
            # ahead of loratune's (promote must find its version by tag, not by number)
            client.create_registered_model("tiny-lora")
            client.create_model_version("tiny-lora", f"runs:/{mid}/other", run_id=mid)
            rr = ltcheck.run("models", "register", "live", "--name", "tiny-lora", "--mlflow", uri, cwd=tmp)
            check(rr.returncode == 0 and "version 1" in rr.stdout and
                  "MLflow: registered model 'tiny-lora' version 2" in rr.stdout,
                  f"models register: {rr.stdout} {rr.stderr}")
            try:
                mv = client.get_model_version("tiny-lora", "2")
                check(mv.run_id == mid, f"version's run {mv.run_id} != {mid}")
                sha = hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
                check(mv.tags.get("loratune.base_sha256") == sha, f"base sha256 tag {mv.tags}")
                check(mv.tags.get("loratune.data_md5") == st["data"]["md5"], "data md5 tag")
            except Exception as e:  # noqa: BLE001
                check(False, f"registered version not found: {e}")
            rp = ltcheck.run("models", "promote", "tiny-lora", "--version", "1", "--stage", "staging",
                             "--mlflow", uri, cwd=tmp)
            check(rp.returncode == 0 and "warning" not in rp.stderr, f"promote: {rp.stderr}")
            try:
                check(client.get_model_version("tiny-lora", "2").current_stage == "Staging",
                      "MLflow stage after promote (the version loratune registered)")
                check(client.get_model_version("tiny-lora", "1").current_stage == "None",
                      "the other MLflow version is untouched")
            except Exception as e:  # noqa: BLE001
                check(False, f"stage: {e}")

        # 3 (cont.): push the run recorded while the server was down
        off = store_run(tmp, "offline")
        rp = ltcheck.run("runs", "push", "offline", "--mlflow", uri, cwd=tmp)
        check(rp.returncode == 0, f"runs push: {rp.stderr}")
        off2 = store_run(tmp, "offline")
        if off and off2:
            pid = off2["tags"].get("mlflow.run_id")
            check(bool(pid), "push records the MLflow run id")
            if pid:
                compare_run(client, pid, off, "pushed")
                # pushing again adds nothing twice
                ltcheck.run("runs", "push", "offline", "--mlflow", uri, cwd=tmp)
                check(len(client.get_metric_history(pid, "train_loss")) == 6, "re-push: no duplicates")
    finally:
        if server:
            mlflow_server.stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
