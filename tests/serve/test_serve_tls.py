"""test_serve_tls.py - `loratune serve --tls-cert --tls-key` (libmicrohttpd with GnuTLS, as Debian
builds it) with a self-signed certificate made here by the openssl command line, talked to by
real clients:

- the server says it listens on https://; curl (Debian) with --cacert and Python's requests
  (OpenSSL) with verify=the certificate get /api/health and /openapi.json over TLS 1.2+, the
  certificate served is the one given (same SHA-256 fingerprint, through Python's ssl);
- a client that does not trust the certificate is refused by its own TLS check (requests'
  SSLError, curl exit 60); plain HTTP to the TLS port gets no HTTP answer;
- the API works over TLS: an upload (streamed body), its validation, a job's event stream (SSE)
  and the token check (401 without, 200 with) on a non-loopback-style setup with --token;
- bad command lines: --tls-cert without --tls-key (exit 2), a missing file (named), a file that
  is not a certificate, a key that is not a key, a key of another certificate: exit 1 with a
  message naming the file and what is wrong, nothing listening.
"""
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
except ImportError:
    print("missing Python package requests; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_tls_")


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"openssl {args[:2]}: {r.stderr[-500:]}")


def make_cert(name):
    cert, key = os.path.join(TMP, name + ".crt"), os.path.join(TMP, name + ".key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
            "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost")
    return cert, key


def start(*args, expect_fail=False):
    """The server with args; returns (proc, https url) or, expect_fail, (exit code, stderr)."""
    cmd = [ltcheck.LORATUNE, "serve", "--port", "0", "--workdir", os.path.join(TMP, "work"),
           "--models", servekit.MODELS, *args]
    env = {k: v for k, v in os.environ.items() if k != "LORATUNE_TOKEN"}
    if expect_fail:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        return r.returncode, r.stderr
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    m = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"no listening line: {line!r} {p.communicate()[1][-1000:]}")
    return p, m.group(1), int(m.group(2))


def stop(p):
    p.terminate()
    out, err = p.communicate(timeout=60)
    check(p.returncode == 0, f"server exit code {p.returncode}: {err[-500:]}")


def main():
    cert, key = make_cert("server")
    other_cert, other_key = make_cert("other")
    p, scheme, port = start("--tls-cert", cert, "--tls-key", key)
    u = f"https://127.0.0.1:{port}"
    try:
        check(scheme == "https", f"listening line says https: {scheme}")
        r = requests.get(u + "/api/health", verify=cert, timeout=30)
        check(r.status_code == 200 and r.json()["status"] == "ok", f"requests over TLS: {r.status_code} {r.text[:200]}")
        c = subprocess.run(["curl", "-sS", "--cacert", cert, "--tlsv1.2", "-o", "/dev/null", "-w",
                            "%{http_code} %{ssl_verify_result}", u + "/openapi.json"],
                           capture_output=True, text=True, timeout=60)
        check(c.returncode == 0 and c.stdout == "200 0", f"curl --cacert: rc {c.returncode} {c.stdout!r} {c.stderr[-300:]}")
        with open(servekit.SPEC_PATH, "rb") as f:
            check(requests.get(u + "/openapi.json", verify=cert, timeout=30).content == f.read(),
                  "the document over TLS")
        # the certificate served is the one given
        ctx = ssl.create_default_context(cafile=cert)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s, \
                ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            der = t.getpeercert(binary_form=True)
            ver = t.version()
        with open(cert) as f:
            want = ssl.PEM_cert_to_DER_cert(f.read())
        check(hashlib.sha256(der).hexdigest() == hashlib.sha256(want).hexdigest(), "the served certificate is --tls-cert")
        check(ver in ("TLSv1.2", "TLSv1.3"), f"TLS version {ver}")
        # an untrusting client refuses; plain HTTP gets no HTTP answer
        try:
            requests.get(u + "/api/health", timeout=30)
            check(False, "a client that does not trust the certificate connected")
        except requests.exceptions.SSLError:
            check(True, "")
        c = subprocess.run(["curl", "-sS", u + "/api/health"], capture_output=True, text=True, timeout=60)
        check(c.returncode == 60, f"curl without --cacert: exit {c.returncode} (60: certificate problem)")
        try:
            r = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
            check(r.status_code != 200, f"plain HTTP on the TLS port answered {r.status_code}")
        except requests.exceptions.RequestException:
            check(True, "")
        # the API over TLS: upload, validation, a job's events
        body = "".join(servekit.wikisql_lines(40))
        r = requests.post(u + "/api/datasets?name=t.jsonl", data=body.encode(), verify=cert, timeout=60,
                          headers={"Content-Type": "application/octet-stream"})
        check(r.status_code == 201 and r.json()["validation"]["ok"], f"upload over TLS: {r.status_code} {r.text[:200]}")
        check(r.json()["sha256"] == hashlib.sha256(body.encode()).hexdigest(), "upload bytes intact over TLS")
        job = requests.post(u + "/api/jobs", json={"dataset": r.json()["id"], "model": servekit.MODEL,
                                                   "options": {"iters": 3, "threads": 1}}, verify=cert, timeout=30).json()
        with requests.get(f"{u}/api/jobs/{job['id']}/events", stream=True, verify=cert, timeout=120) as resp:
            evs = [(k, d) for _, k, d in servekit.sse_events(resp, limit_s=120)]
        steps = [d["step"] for k, d in evs if d.get("event") == "step"]
        check(steps == [1, 2, 3] and evs[-1][1].get("status") == "done", f"SSE over TLS: steps {steps}, last {evs[-1:]}")
    finally:
        stop(p)

    # token over TLS
    p, _, port = start("--tls-cert", cert, "--tls-key", key, "--token", "tls-secret")
    u = f"https://127.0.0.1:{port}"
    try:
        r = requests.get(u + "/api/jobs", verify=cert, timeout=30)
        check(r.status_code == 401, f"no token over TLS: {r.status_code}")
        r = requests.get(u + "/api/jobs", verify=cert, timeout=30, headers={"Authorization": "Bearer tls-secret"})
        check(r.status_code == 200, f"token over TLS: {r.status_code}")
    finally:
        stop(p)

    # bad command lines
    code, err = start("--tls-cert", cert, expect_fail=True)
    check(code == 2 and "--tls-key" in err, f"--tls-cert alone: {code} {err[-300:]}")
    missing = os.path.join(TMP, "nope.crt")
    code, err = start("--tls-cert", missing, "--tls-key", key, expect_fail=True)
    check(code == 1 and "nope.crt" in err, f"missing cert: {code} {err[-300:]}")
    code, err = start("--tls-cert", key, "--tls-key", key, expect_fail=True)
    check(code == 1 and "not a PEM certificate" in err, f"a key as the cert: {code} {err[-300:]}")
    code, err = start("--tls-cert", cert, "--tls-key", cert, expect_fail=True)
    check(code == 1 and "private key" in err, f"a cert as the key: {code} {err[-300:]}")
    code, err = start("--tls-cert", cert, "--tls-key", other_key, expect_fail=True)
    check(code == 1 and "does not belong" in err and "other.key" in err, f"another cert's key: {code} {err[-300:]}")


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
