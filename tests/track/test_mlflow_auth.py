"""test_mlflow_auth.py - MLflow credentials come from MLflow's own environment variables, read by
the loratune program (apps/) and handed to the library (which reads no environment); checked
against a real MLflow server with authentication: `mlflow server --app-name basic-auth` (PyPI,
pinned, with the mlflow[auth] extra's Flask-WTF / WTForms) started by this test on loopback,
configured by a basic_auth.ini in a temp dir (MLFLOW_AUTH_CONFIG_PATH: admin user and password,
a SQLite user database, default permission READ). What loratune mirrored is read back with
MLflow's own Python client, authenticated the same way; users and permissions with MLflow's
AuthServiceClient as the admin.

1. MLFLOW_TRACKING_USERNAME / _PASSWORD of a user the test created (the password holds a ':'):
   the run is mirrored (FINISHED, every store param, the whole train_loss history) and the
   server gave that user MANAGE on the experiment it created (so it saw the user's requests).
2. No credentials (MLFLOW_TRACKING_URI standing for --mlflow) and a wrong password: the server
   answers 401; training still exits 0 and warns with the server, the endpoint and "HTTP 401";
   nothing reaches the server (no experiment) and the store records no MLflow run.
3. MLFLOW_TRACKING_TOKEN: open-source MLflow has no token auth, but its auth app takes a custom
   `authorization_function` (basic_auth.ini; MLflow's documented hook for token / JWT schemes).
   The test's one (lt_bearer_auth.py, written to the temp dir) maps "Authorization: Bearer T"
   of one known token to a user and leaves every other request to MLflow's own
   authenticate_request_basic_auth, so cases 1-2 still meet MLflow's basic auth. A run sent with
   the token is mirrored and owned by the token's user; a wrong token gets 401 like case 2.
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from the test
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlflow_server  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl")
CRED_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
             "MLFLOW_TRACKING_PASSWORD")
ITERS = 3

ADMIN = ("admin", "admin-pw-" + secrets.token_hex(6))  # MLflow wants >= 12 characters
ANN = ("ann", "ann:pw-" + secrets.token_hex(6))         # basic auth splits at the first ':'
TOKEN_USER = ("tok-bot", "unused-pw-" + secrets.token_hex(6))
TOKEN = "lt-" + secrets.token_hex(12)

BEARER_AUTH = '''"""Bearer tokens for MLflow's auth app (authorization_function in basic_auth.ini):
LT_MLFLOW_TOKENS="token=user" names the one token; other requests get MLflow's basic auth."""
import os

from flask import request
from werkzeug.datastructures import Authorization

from mlflow.server.auth import authenticate_request_basic_auth, make_basic_auth_response

TOKEN, USER = os.environ["LT_MLFLOW_TOKENS"].split("=", 1)


def authenticate():
    h = request.headers.get("Authorization", "")
    if h[:7].lower() == "bearer ":
        if h[7:] == TOKEN:
            return Authorization("bearer", {"username": USER})
        return make_basic_auth_response()
    return authenticate_request_basic_auth()
'''


def start_server(tmp):
    with open(os.path.join(tmp, "lt_bearer_auth.py"), "w") as f:
        f.write(BEARER_AUTH)
    ini = os.path.join(tmp, "basic_auth.ini")
    with open(ini, "w") as f:
        f.write("[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{os.path.join(tmp, 'basic_auth.db')}\n"
                f"admin_username = {ADMIN[0]}\n"
                f"admin_password = {ADMIN[1]}\n"
                "authorization_function = lt_bearer_auth:authenticate\n")
    env = {k: v for k, v in os.environ.items()
           if k not in CRED_VARS and not k.startswith("MLFLOW_AUTH_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=ini, LT_MLFLOW_TOKENS=f"{TOKEN}={TOKEN_USER[0]}",
               MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),  # the auth app's CSRF key
               PYTHONPATH=tmp + os.pathsep + env.get("PYTHONPATH", ""))
    p, uri = mlflow_server.start(tmp, env, ("--app-name", "basic-auth"))
    return mlflow_server.wait(tmp, p, uri)  # /health needs no login


def login(**creds):
    """This process's MLflow client authenticates with these (MLflow reads the variables at
    each request): user=(name, password) or token=T."""
    for k in CRED_VARS[1:]:
        os.environ.pop(k, None)
    if "user" in creds:
        name, password = creds["user"]
        os.environ["MLFLOW_TRACKING_USERNAME"] = name
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    if "token" in creds:
        os.environ["MLFLOW_TRACKING_TOKEN"] = creds["token"]


def train(tmp, name, cred_env, uri, flag=True, accepted=False):
    """`loratune train` with exactly cred_env of the MLflow variables; its result. accepted:
    the server is expected to take everything, so the end of the run may wait for it longer
    (a loaded machine's MLflow server answers slowly); else 3 s bound the wait on refusals."""
    env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
    env.update(cred_env)
    env["LORATUNE_MLFLOW_FLUSH_S"] = "120" if accepted else "3"
    args = [ltcheck.LORATUNE, "train", "--model", MODEL, "--data", "data.jsonl", "--iters",
            str(ITERS), "--batch-size", "2", "--max-seq-len", "32", "--eval-every", "0",
            "--threads", "1", "--json", "--experiment", "auth-" + name, "--run-name", name,
            "--out", "out_" + name]
    if flag:
        args += ["--mlflow", uri]
    r = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env, timeout=300)
    steps = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    steps = [e for e in steps if e.get("event") == "step"]
    check(r.returncode == 0 and len(steps) == ITERS,
          f"{name}: train exit {r.returncode}, {len(steps)} steps: {r.stderr[-2000:]}")
    sr = ltcheck.run("runs", "show", name, "--json", "--history", cwd=tmp)
    check(sr.returncode == 0, f"{name}: runs show: {sr.stderr}")
    return r, (json.loads(sr.stdout) if sr.returncode == 0 else None)


def mirrored(client, auth, name, st, creds, user):
    """Cases 1 / 3: the run reached MLflow whole (read with the same credentials), sent as
    user (the admin reads the permission MLflow gave the experiment's creator)."""
    mid = st["tags"].get("mlflow.run_id") if st else None
    check(bool(mid), f"{name}: the store records no MLflow run id")
    if not mid:
        return
    try:
        login(**creds)
        mr = client.get_run(mid)
        check(mr.info.status == "FINISHED", f"{name}: status {mr.info.status}")
        check(mr.info.run_name == name, f"{name}: run name {mr.info.run_name}")
        check(mr.data.params == st["params"], f"{name}: params differ: "
              f"{set(mr.data.params.items()) ^ set(st['params'].items())}")
        got = sorted((m.step, m.value) for m in client.get_metric_history(mid, "train_loss"))
        want = sorted((s, v) for s, v, _ in st["metric_history"]["train_loss"])
        check(len(got) == ITERS and got == want, f"{name}: train_loss {got} vs store {want}")
        login(user=ADMIN)
        perm = auth.get_user_permission(user, "experiment", mr.info.experiment_id).permission
        check(perm == "MANAGE", f"{name}: {user}'s permission on its experiment: {perm}")
    except Exception as e:  # noqa: BLE001
        check(False, f"{name}: MLflow run {mid}: {e}")
    finally:
        login(user=ADMIN)


def refused(client, name, r, st, uri):
    """Case 2: 401, training unharmed, a warning that names the server and the status."""
    err = r.stderr
    check("MLflow mirror incomplete" in err and f"{uri}/api/2.0/mlflow/" in err and
          "HTTP 401" in err and "loratune runs push" in err,
          f"{name}: the warning should name the server, the endpoint and HTTP 401: {err[-800:]}")
    check(st is not None and not st["tags"].get("mlflow.run_id"), f"{name}: an MLflow run id?")
    check(client.get_experiment_by_name("auth-" + name) is None,
          f"{name}: the server created experiment auth-{name}")


def main():
    try:
        from mlflow.server import get_app_client
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        check(False, f"mlflow not installed in the test venv: {e}")
        return ltcheck.finish()
    tmp = tempfile.mkdtemp(prefix="lt_mlflow_auth_")
    saved = {k: os.environ.get(k) for k in CRED_VARS}
    server = None
    try:
        with open(DATA) as f:
            lines = f.readlines()[:8]
        with open(os.path.join(tmp, "data.jsonl"), "w") as f:
            f.writelines(lines)
        server, uri = start_server(tmp)
        check(uri is not None, "mlflow server --app-name basic-auth did not start")
        if not uri:
            return ltcheck.finish()
        client = MlflowClient(tracking_uri=uri)
        login(user=ADMIN)
        auth = get_app_client("basic-auth", tracking_uri=uri)
        auth.create_user(*ANN)
        auth.create_user(*TOKEN_USER)

        # 1. basic auth of a valid user
        r, st = train(tmp, "basic", {"MLFLOW_TRACKING_USERNAME": ANN[0],
                                     "MLFLOW_TRACKING_PASSWORD": ANN[1]}, uri, accepted=True)
        check("warning" not in r.stderr, f"basic: {r.stderr[-800:]}")
        mirrored(client, auth, "basic", st, {"user": ANN}, ANN[0])

        # 2. no credentials (MLFLOW_TRACKING_URI for --mlflow), a wrong password
        r, st = train(tmp, "none", {"MLFLOW_TRACKING_URI": uri}, uri, flag=False)
        refused(client, "none", r, st, uri)
        r, st = train(tmp, "wrongpw", {"MLFLOW_TRACKING_USERNAME": ANN[0],
                                       "MLFLOW_TRACKING_PASSWORD": ANN[1] + "x"}, uri)
        refused(client, "wrongpw", r, st, uri)

        # 3. a bearer token, a wrong one
        r, st = train(tmp, "token", {"MLFLOW_TRACKING_TOKEN": TOKEN}, uri, accepted=True)
        check("warning" not in r.stderr, f"token: {r.stderr[-800:]}")
        mirrored(client, auth, "token", st, {"token": TOKEN}, TOKEN_USER[0])
        r, st = train(tmp, "wrongtoken", {"MLFLOW_TRACKING_TOKEN": TOKEN[:-1]}, uri)
        refused(client, "wrongtoken", r, st, uri)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server:
            mlflow_server.stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
