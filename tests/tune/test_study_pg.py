#!/usr/bin/env python3
"""test_study_pg.py - a study shared through PostgreSQL (src/tune/study_pg.c), with a real
server started by this test (initdb + pg_ctl from Debian's postgresql, as the postgres user
when the test runs as root) and workers on "other hosts": each in a network namespace of its
own made by this test (ip netns, a veth pair, its own address), reaching the server over that
link only.

Checks:
  - the same seed asks the same points from a PostgreSQL study as from a folder study (the
    same code decides; only the storage differs);
  - two workers in their namespaces plus one on the host ask and tell 30 trials at once: every
    trial number 0..29 exactly once, every one complete with the value its worker told for its
    parameters, none lost, and the best is the minimum of those values;
  - errors: no '#NAME', a server that is not there, an unknown study, a name taken, and a
    password in the URL masked in messages.
Without root (no namespaces, no runuser), or where namespaces cannot be made (a container
without CAP_NET_ADMIN), the workers run on the host, and the test says so.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import LORATUNE, check, finish, run  # noqa: E402
from pgserver import free_port, start  # noqa: E402

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "rank": {"type": "int", "low": 2, "high": 64, "log": True},
    "targets": {"type": "categorical", "choices": ["attention", "mlp", "all"]},
}
def objective(p):
    v = (math.log10(p["lr"]) + 3) ** 2 + 0.1 * (math.log2(p["rank"]) - 4) ** 2
    return v + {"attention": 0.5, "mlp": 0.0, "all": 0.2}[p["targets"]]


def study(prefix, *args):
    return subprocess.run(prefix + [LORATUNE, "study", *args], capture_output=True, text=True)


def drive(prefix, url, n, told, errors):
    """n rounds of ask / evaluate / tell; told[trial] = (params, value)"""
    for _ in range(n):
        r = study(prefix, "ask", "--study", url, "--json")
        if r.returncode != 0:
            errors.append(f"ask: {r.stderr}")
            return
        o = json.loads(r.stdout)
        v = objective(o["params"])
        r = study(prefix, "tell", "--study", url, "--trial", str(o["trial"]), "--value", repr(v))
        if r.returncode != 0:
            errors.append(f"tell {o['trial']}: {r.stderr}")
            return
        if o["trial"] in told:
            errors.append(f"trial {o['trial']} asked twice")
        told[o["trial"]] = (o["params"], v)


def same_as_folder(srv, tmp, space_path):
    """a PostgreSQL study and a folder study with the same seed ask the same points"""
    url = srv.url("127.0.0.1", "seq")
    folder = os.path.join(tmp, "folder")
    for where in (url, folder):
        r = run("study", "create", "--study", where, "--space", space_path, "--sampler", "tpe",
                "--n-startup", "4", "--seed", "9")
        check(r.returncode == 0, f"create {where}: {r.stderr}")
    asked = {url: [], folder: []}
    for where in (url, folder):
        for _ in range(8):
            o = json.loads(run("study", "ask", "--study", where, "--json").stdout)
            asked[where].append(o)
            run("study", "tell", "--study", where, "--trial", str(o["trial"]), "--value",
                repr(objective(o["params"])))
    check(asked[url] == asked[folder],
          f"the PostgreSQL study asked other points than the folder study: {asked[url][:2]} vs "
          f"{asked[folder][:2]}")


def errors_named(srv):
    base = f"postgresql://lt@127.0.0.1:{srv.port}/studies"
    r = run("study", "ask", "--study", base, "--json")
    check(r.returncode == 1 and "needs its name after '#'" in r.stderr, f"no #NAME: {r.stderr}")
    r = run("study", "ask", "--study", f"postgresql://lt@127.0.0.1:{free_port()}/studies#x")
    check(r.returncode == 1 and "cannot connect" in r.stderr, f"no server: {r.stderr}")
    r = run("study", "show", "--study", f"postgresql://lt:secret@127.0.0.1:{srv.port}/studies#nope")
    check(r.returncode == 1 and "no study named 'nope'" in r.stderr and "secret" not in r.stderr
          and "lt:***@" in r.stderr, f"unknown study / masked password: {r.stderr}")
    r = run("study", "create", "--study", base + "#seq", "--space",
            os.path.join(os.environ["LT_TEST_TMP"], "space.json"))
    check(r.returncode == 1 and "already holds a study named 'seq'" in r.stderr,
          f"name taken: {r.stderr}")
    r = run("study", "ask", "--study", base + "#bad name")
    check(r.returncode == 1 and "study name 'bad name'" in r.stderr, f"bad name: {r.stderr}")


def main():
    if not shutil.which("pg_config") or not shutil.which("psql"):
        check(False, "PostgreSQL is not installed (tools/setup.sh installs postgresql, libpq-dev)")
        return finish()
    tmp = tempfile.mkdtemp(prefix="lt-pg-")
    os.environ["LT_TEST_TMP"] = tmp
    space_path = os.path.join(tmp, "space.json")
    with open(space_path, "w") as f:
        json.dump(SPACE, f)
    os.chmod(tmp, 0o755)
    hosts = None
    srv = None
    try:
        srv, hosts = start(tmp, 2)
        same_as_folder(srv, tmp, space_path)
        errors_named(srv)

        r = run("study", "create", "--study", srv.url("127.0.0.1", "shared"), "--space",
                space_path, "--seed", "4", "--n-startup", "6")
        check(r.returncode == 0, f"create shared: {r.stderr}")
        told, errors, threads = {}, [], []
        workers = [([], srv.url("127.0.0.1", "shared"))]
        for k in (1, 2):
            if hosts:
                workers.append((hosts.prefix(k), srv.url(hosts.server_addr(k), "shared")))
            else:
                workers.append(([], srv.url("127.0.0.1", "shared")))
        for prefix, url in workers:
            t = threading.Thread(target=drive, args=(prefix, url, 10, told, errors))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        check(not errors, f"workers: {errors[:3]}")
        r = run("study", "show", "--study", srv.url("127.0.0.1", "shared"), "--json")
        check(r.returncode == 0, f"show: {r.stderr}")
        sh_ = json.loads(r.stdout)
        trials = sh_["trials"]
        check([t["trial"] for t in trials] == list(range(30)),
              f"trial numbers {[t['trial'] for t in trials]}")
        for t in trials:
            want = told.get(t["trial"])
            check(want is not None and t["state"] == "complete" and t["params"] == want[0] and
                  t["value"] == want[1], f"trial {t['trial']}: {t} vs told {want}")
        best = min(v for _, v in told.values())
        check(sh_["best"] and sh_["best"]["value"] == best,
              f"best {sh_['best']} vs the minimum told {best}")
        print(f"30 trials from {len(workers)} workers ({'2 in network namespaces' if hosts else 'all on this host'}"
              f"), best {best:.4f}")
    finally:
        if srv:
            srv.stop()
        if hosts:
            hosts.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
