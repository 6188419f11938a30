"""mlflow_server.py - a real `mlflow server` (the pinned PyPI one) on a free loopback port, for the
tracking tests (test_mlflow.py, test_mlflow_auth.py): start it in the background, wait for
/health, stop its whole process group. Not a test itself (no test_ prefix)."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(tmp, env, extra=()):
    """Starts `mlflow server [extra...]` with its store and artifacts in tmp (log: tmp/mlflow.log);
    returns (process, uri). It is not ready yet: see wait()."""
    port = free_port()
    env = dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no background job workers
    log = open(os.path.join(tmp, "mlflow.log"), "w")
    p = subprocess.Popen(
        [MLFLOW, "server", *extra, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", "sqlite:///" + os.path.join(tmp, "mlflow.db"),
         "--default-artifact-root", os.path.join(tmp, "mlartifacts")],
        cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return p, f"http://127.0.0.1:{port}"


def wait(tmp, p, uri):
    """(p, uri) once /health (no login needed) answers 200; (p, None) with the log's tail on
    stderr when the server exits or does not come up in 300 s."""
    t0 = time.time()
    while time.time() - t0 < 300:  # ~15 s on an idle 2-core machine; far more under load
        if p.poll() is not None:
            break
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return p, uri
        except OSError:
            time.sleep(0.5)
    print(open(os.path.join(tmp, "mlflow.log")).read()[-3000:], file=sys.stderr)
    return p, None


def stop(p):
    """Stops the whole process group (mlflow runs uvicorn as a child)."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
