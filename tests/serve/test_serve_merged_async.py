"""test_serve_merged_async.py - a merged model of a real size (SmolLM2-135M, Q4_1 GGUF base) made
on the server's own thread, never inside a request (POST / GET /api/jobs/{id}/merged):

- a 1-step LoRA job on SmolLM2-135M; then two clients POST .../merged?format=gguf&dtype=f16 at
  the same moment: both 202 about the same merge (the same `started`), and a third client's
  GET ?wait=true blocks until it is made and streams it;
- while it is made, the server answers other requests all along (/api/health, the Location's GET:
  202 with a phase), each within a second (and half the merge's time);
- once made: POST answers 200 ready at once (the cache), much faster than the merge was;
- a client that reads 64 KiB of the download and closes its socket (twice) harms nothing: two
  concurrent downloads after it give the same bytes as the waiting client, whose size the ready
  answer gave; gguf-py reads the file (llama, 30 blocks, F16 / F32 tensors);
- one merged file in the job's folder, no temp file;
- a GGUF f32 merge cut off by SIGKILL leaves its part_ file, which the next start removes; the
  merge started again and a SIGTERM while it runs: the server finishes it, exits 0, and gguf-py
  reads the file whole; the server stops cleanly (exit 0).
Prints the merge's wall time, the cached answer's and a download's (on the machine it runs on).
"""
import hashlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import gguf
    import requests
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

SMOL = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
if not os.path.exists(SMOL):
    print(f"skipped: {SMOL} missing (tools/fetch_smollm2.sh)")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="lt_serve_merged_async_")
OPTS = {"iters": 1, "batch-size": 1, "max-seq-len": 32, "lora-rank": 4, "threads": 2, "eval-every": 0, "seed": 3}
Q = "format=gguf&dtype=f16"


def wait_job(u, jid, limit=600):
    t0 = time.time()
    while time.time() - t0 < limit:
        j = requests.get(f"{u}/api/jobs/{jid}").json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.3)
    check(False, f"job {jid} did not end in {limit}s")
    return j


def cut_download(u, path, keep=65536):
    """A raw HTTP GET that reads keep bytes of the body and closes the socket."""
    p = urlparse(u)
    s = socket.create_connection((p.hostname, p.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {p.hostname}:{p.port}\r\n\r\n".encode())
    got = b""
    while len(got) < keep:
        b = s.recv(16384)
        if not b:
            break
        got += b
    s.close()
    return got


def run(u, work):
    ds = requests.post(f"{u}/api/datasets?name=sql.jsonl", data="".join(servekit.wikisql_lines(8)),
                       headers={"Content-Type": "application/octet-stream"}).json()
    r = requests.post(f"{u}/api/jobs", json={"dataset": ds["id"], "model": "smol.gguf", "options": OPTS})
    check(r.status_code == 201, f"job: {r.text[:300]}")
    j = wait_job(u, r.json()["id"])
    check(j["status"] == "done", f"job: {j['status']} {j.get('error')}")
    if j["status"] != "done":
        return
    jid = j["id"]
    url = f"{u}/api/jobs/{jid}/merged?{Q}"

    # ---- two clients at once: one merge
    answers, barrier = [None, None], threading.Barrier(2)

    def poster(i):
        barrier.wait()
        answers[i] = requests.post(url)
    t_start = time.time()
    ts = [threading.Thread(target=poster, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(all(a is not None and a.status_code == 202 for a in answers),
          f"concurrent POSTs: {[a.status_code if a is not None else None for a in answers]}")
    if not all(a is not None and a.status_code == 202 for a in answers):
        return
    check(answers[0].json()["started"] == answers[1].json()["started"], "both answers are about one merge")
    waited = {}

    def waiter():
        t0 = time.time()
        rr = requests.get(url + "&wait=true")
        waited.update(status=rr.status_code, body=rr.content, s=time.time() - t0)
    wt = threading.Thread(target=waiter)
    wt.start()

    # ---- the server answers while it merges
    phases, slowest, ready, n202 = set(), 0.0, None, 0
    while time.time() - t_start < 600:
        t0 = time.time()
        h = requests.get(f"{u}/api/health")
        g = requests.get(url, stream=True)  # the body (once made) is not read here
        took = time.time() - t0
        check(h.status_code == 200, "health while merging")
        if g.status_code == 200:
            ready = g
            g.close()
            break
        slowest = max(slowest, took)
        check(g.status_code == 202 and g.json()["state"] == "making", f"GET while merging: {g.status_code} {g.text[:200]}")
        phases.add(g.json().get("phase"))
        n202 += 1
        time.sleep(0.2)
    merge_s = time.time() - t_start
    check(ready is not None, "the merge ends")
    # not inside the request: answers came all along (on a quiet machine each within
    # milliseconds; the bound is loose for a loaded CI machine)
    check(n202 >= 2 and slowest < min(1.0, merge_s / 2), f"{n202} answers while merging, slowest {slowest:.2f} s "
          f"of a {merge_s:.1f} s merge")
    check(len(phases) >= 1 and phases <= {"queued", "loading", "merging", "writing"}, f"phases seen {phases}")
    wt.join(600)
    check(waited.get("status") == 200, f"GET ?wait=true: {waited.get('status')}")
    body = waited.get("body", b"")

    # ---- made: cached
    t0 = time.time()
    p = requests.post(url)
    cached_s = time.time() - t0
    check(p.status_code == 200 and p.json()["state"] == "ready" and p.json()["size"] == len(body),
          f"POST when made: {p.status_code} {p.text[:200]} (waited {len(body)} bytes)")
    check(cached_s < 0.5 and cached_s < merge_s / 4, f"cached answer {cached_s:.3f} s vs merge {merge_s:.1f} s")

    # ---- clients that go away mid-download; then two at once
    path = f"/api/jobs/{jid}/merged?{Q}"
    for _ in range(2):
        got = cut_download(u, path)
        check(got.startswith(b"HTTP/1.1 200") and len(got) >= 65536, f"cut download read {len(got)} bytes")
    check(requests.get(f"{u}/api/health").status_code == 200, "the server answers after the cut downloads")
    outs = [None, None]

    def getter(i):
        outs[i] = requests.get(url).content
    t0 = time.time()
    ts = [threading.Thread(target=getter, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dl_s = time.time() - t0
    digests = {hashlib.sha256(x or b"").hexdigest() for x in outs + [body]}
    check(len(digests) == 1 and len(body) > 100 << 20, f"the same bytes for every client ({len(body)} bytes)")
    gp = os.path.join(TMP, "m.gguf")
    open(gp, "wb").write(body)
    g = gguf.GGUFReader(gp)
    arch = bytes(g.fields["general.architecture"].parts[-1]).decode()
    blocks = {t.name.split(".")[1] for t in g.tensors if t.name.startswith("blk.")}
    types = {t.tensor_type for t in g.tensors}
    check(arch == "llama" and len(blocks) == 30, f"gguf: {arch}, {len(blocks)} blocks")
    check(types <= {gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32}, f"tensor types {types}")
    files = os.listdir(os.path.join(work, "jobs", jid))
    check([f for f in files if f.startswith("merged-")] == ["merged-gguf-f16.gguf"]
          and not [f for f in files if f.startswith(("part_", "merged-tmp"))], f"job folder {files}")
    print(f"SmolLM2-135M merged gguf f16 ({len(body) / 2**20:.0f} MiB): made in {merge_s:.1f} s ({n202} answers "
          f"meanwhile, slowest {slowest:.2f} s); cached answer {cached_s * 1000:.0f} ms; two concurrent downloads {dl_s:.2f} s")
    return jid


def stop_checks(srv, work, jid):
    """A merge cut off by SIGKILL leaves its temp file, removed by the next start; a merge
    running at SIGTERM is waited for (exit 0, the file whole). Returns the server left running."""
    jdir = os.path.join(work, "jobs", jid)
    url = f"{srv.url}/api/jobs/{jid}/merged?format=gguf&dtype=f32"
    r = requests.post(url)
    check(r.status_code == 202, f"gguf f32 POST: {r.status_code}")
    t0 = time.time()
    while time.time() - t0 < 300 and not [f for f in os.listdir(jdir) if f.startswith("part_")]:
        time.sleep(0.05)
    parts = [f for f in os.listdir(jdir) if f.startswith("part_")]
    check(parts, "a part_ file while the GGUF is written")
    srv.stop(signal.SIGKILL)
    check([f for f in os.listdir(jdir) if f.startswith("part_")] == parts, "SIGKILL left the part file")
    srv = Server(work, "--models", os.path.join(TMP, "models"))
    left = [f for f in os.listdir(jdir) if f.startswith(("part_", "merged-tmp_"))]
    check(not left, f"the next start removed what the cut merge left: {left}")
    check(requests.get(f"{srv.url}/api/jobs/{jid}").json()["status"] == "done", "the job is still done")
    url = f"{srv.url}/api/jobs/{jid}/merged?format=gguf&dtype=f32"
    r = requests.post(url)
    check(r.status_code == 202 and r.json()["state"] == "making", f"the cut merge starts again: {r.status_code} {r.text[:200]}")
    time.sleep(0.5)
    code, _, err = srv.stop(signal.SIGTERM, timeout=300)
    check(code == 0, f"SIGTERM during a merge: exit {code} {err[-500:]}")
    f32 = os.path.join(jdir, "merged-gguf-f32.gguf")
    check(os.path.exists(f32) and not [f for f in os.listdir(jdir) if f.startswith("part_")],
          f"the merge running at SIGTERM was finished: {os.listdir(jdir)}")
    if os.path.exists(f32):
        g = gguf.GGUFReader(f32)
        check(len({t.name.split(".")[1] for t in g.tensors if t.name.startswith("blk.")}) == 30,
              "the f32 GGUF finished at SIGTERM is whole (gguf-py: 30 blocks)")
        print(f"SIGKILL mid-merge cleaned at start; SIGTERM waited for a {os.path.getsize(f32) / 2**20:.0f} MiB f32 merge")
    return Server(work, "--models", os.path.join(TMP, "models"))


def main():
    work, models = os.path.join(TMP, "work"), os.path.join(TMP, "models")
    os.makedirs(models)
    os.symlink(SMOL, os.path.join(models, "smol.gguf"))
    srv = Server(work, "--models", models)
    try:
        jid = run(srv.url, work)
        if jid:
            srv = stop_checks(srv, work, jid)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
