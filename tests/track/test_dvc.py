"""test_dvc.py - `loratune data add` against the real dvc (PyPI, pinned).

In a temporary git + dvc repository: loratune adds a file and a folder (with nested, non-ASCII
and sorted-order-sensitive names); the .dvc files and cache objects must be exactly what
`dvc add` writes for a copy of the same data in a second repository; `dvc status` is clean;
deleting the data and running `dvc checkout` restores it byte for byte from the cache loratune
filled; a changed file shows up in `dvc status`. Also: bad input (missing path) names the path.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    from dvc.repo import Repo  # dvc's own API, in process (its CLI costs seconds per call)
except ImportError:
    Repo = None


def dvc_status(path):
    with Repo(path) as r:
        return r.status()


def dvc_checkout(path):
    with Repo(path) as r:
        r.checkout()


def sh(args, cwd, **kw):  # git
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)


def make_repo(path):
    os.makedirs(path)
    sh(["git", "init", "-q"], path)
    sh(["git", "config", "user.email", "t@example.com"], path)
    sh(["git", "config", "user.name", "t"], path)
    Repo.init(path).close()


def write_data(root):
    with open(os.path.join(root, "train.jsonl"), "w") as f:
        for i in range(50):
            f.write(json.dumps({"text": f"example {i}"}) + "\n")
    d = os.path.join(root, "corpus")
    os.makedirs(os.path.join(d, "a", "deep"))
    files = {
        "a.txt": "A\n",             # "a.txt" < "a/..." in byte order: '.' < '/'
        "a/b.txt": "B\r\n",         # CRLF kept as is (DVC 3 md5, no dos2unix)
        "a/deep/c.bin": "\x00\x01binary",
        "Z.txt": "upper sorts first\n",
        "caf\u00e9.txt": "non-ascii name\n",
        "quote\"name.txt": "q\n",
    }
    for rel, text in files.items():
        with open(os.path.join(d, rel), "w", encoding="utf-8", newline="") as f:
            f.write(text)


def cache_listing(root):
    c = os.path.join(root, ".dvc", "cache", "files", "md5")
    out = {}
    for dp, _, fns in os.walk(c):
        for fn in fns:
            p = os.path.join(dp, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, c)] = f.read()
    return out


def main():
    if Repo is None:
        check(False, "dvc is not installed in the test venv (tools/requirements.txt)")
        return ltcheck.finish()
    tmp = tempfile.mkdtemp(prefix="lt_dvc_")
    try:
        ours, ref = os.path.join(tmp, "ours"), os.path.join(tmp, "ref")
        make_repo(ours)
        make_repo(ref)
        write_data(ours)
        write_data(ref)

        r = ltcheck.run("data", "add", "train.jsonl", "corpus", "--json", cwd=ours)
        check(r.returncode == 0, f"loratune data add: {r.stderr}")
        with Repo(ref) as rr:
            rr.add([os.path.join(ref, "train.jsonl"), os.path.join(ref, "corpus")])

        for name in ("train.jsonl.dvc", "corpus.dvc"):
            a = open(os.path.join(ours, name)).read()
            b = open(os.path.join(ref, name)).read()
            check(a == b, f"{name} differs from dvc's:\n--- ours\n{a}--- dvc\n{b}")
        ca, cb = cache_listing(ours), cache_listing(ref)
        check(sorted(ca) == sorted(cb), f"cache objects differ: {sorted(ca)} vs {sorted(cb)}")
        for k in cb:
            check(ca.get(k) == cb[k], f"cache object {k} content differs")
        for k in ca:
            mode = os.stat(os.path.join(ours, ".dvc/cache/files/md5", k)).st_mode & 0o777
            check(mode == 0o444, f"cache object {k} mode {oct(mode)}, dvc uses 0444")
        gi = open(os.path.join(ours, ".gitignore")).read().split()
        check("/train.jsonl" in gi and "/corpus" in gi, f".gitignore: {gi}")

        st = dvc_status(ours)
        check(st == {}, f"dvc status not clean: {st}")

        orig = open(os.path.join(ours, "train.jsonl"), "rb").read()
        orig_c = open(os.path.join(ours, "corpus", "a", "deep", "c.bin"), "rb").read()
        os.remove(os.path.join(ours, "train.jsonl"))
        shutil.rmtree(os.path.join(ours, "corpus"))
        dvc_checkout(ours)
        check(os.path.exists(os.path.join(ours, "train.jsonl")) and
              open(os.path.join(ours, "train.jsonl"), "rb").read() == orig,
              "dvc checkout did not restore train.jsonl from our cache")
        p = os.path.join(ours, "corpus", "a", "deep", "c.bin")
        check(os.path.exists(p) and open(p, "rb").read() == orig_c,
              "dvc checkout did not restore corpus/ from our cache")
        st = dvc_status(ours)
        check(st == {}, f"dvc status after checkout: {st}")

        # a change is seen by dvc (our .dvc file really pins the content)
        with open(os.path.join(ours, "train.jsonl"), "a") as f:
            f.write('{"text": "one more"}\n')
        st = dvc_status(ours)
        check(any(k.endswith("train.jsonl.dvc") for k in st), f"dvc status did not see the change: {st}")
        # re-adding the changed file updates the .dvc file the way dvc does
        r = ltcheck.run("data", "add", "train.jsonl", cwd=ours)
        with open(os.path.join(ref, "train.jsonl"), "a") as f:
            f.write('{"text": "one more"}\n')
        with Repo(ref) as rr:
            rr.add([os.path.join(ref, "train.jsonl")])
        check(open(os.path.join(ours, "train.jsonl.dvc")).read() ==
              open(os.path.join(ref, "train.jsonl.dvc")).read(), "re-add differs from dvc's")
        st = dvc_status(ours)
        check(st == {}, f"dvc status after re-add: {st}")

        # no DVC repository: loratune makes one that dvc accepts
        bare = os.path.join(tmp, "bare")
        os.makedirs(bare)
        sh(["git", "init", "-q"], bare)
        with open(os.path.join(bare, "d.txt"), "w") as f:
            f.write("hello\n")
        r = ltcheck.run("data", "add", "d.txt", cwd=bare)
        check(r.returncode == 0 and "initialized a DVC repository" in r.stderr, f"bare: {r.stderr}")
        st = dvc_status(bare)
        check(st == {}, f"dvc status in a repo loratune initialized: {st}")

        # training on DVC-tracked data: versioned by dvc (no copy in the store), and
        # `runs reproduce` after the data changed restores it from the DVC cache
        model = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
        train = ["train", "--model", model, "--data", "train.jsonl", "--iters", "4",
                 "--batch-size", "2", "--max-seq-len", "48", "--threads", "1", "--json"]
        r = ltcheck.run(*train, "--out", "out1", "--run-name", "tracked", cwd=ours)
        check(r.returncode == 0, f"train on dvc data: {r.stderr[-1500:]}")
        losses = [json.loads(x)["loss"] for x in r.stdout.splitlines()
                  if x.startswith("{") and json.loads(x).get("event") == "step"]
        shown = ltcheck.run("runs", "show", "tracked", "--json", cwd=ours)
        run = json.loads(shown.stdout) if shown.returncode == 0 else {}
        want_md5 = hashlib.md5(open(os.path.join(ours, "train.jsonl"), "rb").read()).hexdigest()
        check(run.get("tags", {}).get("data.versioned_by") == "dvc" and
              run.get("data", {}).get("md5") == want_md5, f"dvc-tracked data version: {run.get('data')}")
        check(not os.path.exists(os.path.join(ours, ".loratune", "cache", "files")),
              "dvc-tracked data not copied again into the store")
        with open(os.path.join(ours, "train.jsonl"), "w") as f:
            f.write('{"text": "completely different"}\n' * 30)
        r = ltcheck.run("runs", "reproduce", "tracked", cwd=ours)
        check(r.returncode == 0 and "restored data version" in r.stderr, f"reproduce: {r.stderr[-1500:]}")
        rep = ltcheck.run("runs", "show", "last", "--json", "--history", cwd=ours)
        rep = json.loads(rep.stdout) if rep.returncode == 0 else {}
        got = [v for _, v, _ in rep.get("metric_history", {}).get("train_loss", [])]
        check(len(losses) == 4 and got == losses, f"reproduced losses {got} != {losses}")

        # bad input
        r = ltcheck.run("data", "add", "missing.jsonl", cwd=ours)
        check(r.returncode != 0 and "missing.jsonl" in r.stderr, f"missing path: {r.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
