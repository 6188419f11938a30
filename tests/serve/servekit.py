"""servekit.py - what the tests of `loratune serve` share: start the real server binary on a free
port (--port 0; the port read from its "listening on" line) in a temp work folder, stop it, a
small Server-Sent Events reader over a real streaming HTTP response, and the OpenAPI document's
schemas for checking responses (jsonschema). Not named test_*.py: CMake runs those.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402

MODELS = os.path.join(ltcheck.FIXTURES, "stories260K")  # the models folder jobs name from
MODEL = "stories260K.gguf"
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
SPEC_PATH = os.path.join(ltcheck.SOURCE_DIR, "src", "serve", "openapi.json")


class Server:
    """A running `loratune serve`; .url is http://127.0.0.1:PORT."""

    def __init__(self, workdir, *args, env=None, expect_fail=False, timeout=30):
        e = dict(os.environ)
        e.pop("LORATUNE_TOKEN", None)
        if env:
            e.update(env)
        self.cmd = [ltcheck.LORATUNE, "serve", "--port", "0", "--workdir", workdir,
                    "--models", MODELS, *args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=e)
        self.url = None
        self.port = None
        self.lines = []
        if expect_fail:
            return
        box = {}

        def read_first():
            box["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read_first, daemon=True)
        t.start()
        t.join(timeout)
        line = box.get("line", "")
        m = re.search(r"listening on (http://[^ ]+):(\d+)", line or "")
        if not m:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"server did not start: {line!r} {err[-2000:]}")
        self.port = int(m.group(2))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops it with sig; returns (exit code, stdout rest, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            ltcheck.check(False, f"server did not stop within {timeout}s after {sig}")
        return self.proc.returncode, out, err


def sse_events(resp, stop=None, limit_s=300):
    """Yields (id, event, data) of a text/event-stream response (requests, stream=True) until
    the stream ends, or stop(event, data) is true, or limit_s passes. Comments are skipped."""
    t0 = time.time()
    eid, kind, data = None, None, []
    for raw in resp.iter_lines(decode_unicode=True):
        if time.time() - t0 > limit_s:
            ltcheck.check(False, f"SSE stream ran past {limit_s}s")
            return
        if raw is None:
            continue
        if raw == "":
            if data:
                ev = ("\n".join(data))
                yield eid, kind, json.loads(ev)
                if stop and stop(kind, json.loads(ev)):
                    return
            eid, kind, data = None, None, []
            continue
        if raw.startswith(":"):
            continue
        field, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            eid = int(value)
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def load_spec():
    with open(SPEC_PATH) as f:
        return json.load(f)


def schema_validator(spec, name):
    """A jsonschema validator of components.schemas[name] (its $refs resolved in the spec)."""
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012
    res = DRAFT202012.create_resource(spec)
    reg = Registry().with_resource("urn:spec", res)
    return jsonschema.Draft202012Validator({"$ref": f"urn:spec#/components/schemas/{name}"},
                                           registry=reg)


def conforms(spec, name, obj, what):
    """check() that obj is valid against the spec's schema name."""
    errs = sorted(schema_validator(spec, name).iter_errors(obj), key=lambda e: e.path)
    ltcheck.check(not errs, f"{what}: not a valid {name}: "
                  + "; ".join(f"{list(e.path)}: {e.message}" for e in errs[:3]))


def wikisql_lines(n):
    with open(os.path.join(WIKISQL, "train.jsonl")) as f:
        return f.readlines()[:n]


# ---- the browser tests' set-up: headless Chromium (Debian chromium + chromium-driver) through
# Selenium, screenshots, waiting, console errors -------------------------------------------------
def chromium_or_skip():
    """Exits 77 (CTest: skipped) when Selenium or Debian's chromium / chromium-driver is missing;
    else (chromium, chromedriver) paths."""
    import shutil
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        print(f"missing Python package: {e}; run tools/setup.sh")
        sys.exit(77)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        print("chromium / chromium-driver not installed (Debian packages; tools/setup.sh)")
        sys.exit(77)
    return chromium, driver


def browser(downloads=None, size="1280,900"):
    """A headless Chromium driven by Selenium; downloads (a folder) where downloads go; the
    browser console's messages kept (console_errors reads them)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = chromium_or_skip()
    o = webdriver.ChromeOptions()
    o.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={size}", "--lang=en-US"):
        o.add_argument(a)
    if downloads:
        o.add_experimental_option("prefs", {"download.default_directory": downloads,
                                            "download.prompt_for_download": False})
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=o)


def screenshots_dir(tmp):
    """BUILD/web-screenshots (LT_BINARY_DIR, set by CTest), else a folder under tmp."""
    d = os.path.join(os.environ.get("LT_BINARY_DIR", tmp), "web-screenshots")
    os.makedirs(d, exist_ok=True)
    return d


def wait_for(d, cond, what, limit=60):
    """cond() polled every 50 ms until true (its value returned); a failed check after limit s."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(d, limit, poll_frequency=0.05).until(lambda _: cond())
    except TimeoutException:
        ltcheck.check(False, f"timed out ({limit}s) waiting for {what}")
        return None


def console_errors(d, what):
    """check() that the browser console has logged no error."""
    errs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    ltcheck.check(not errs, f"{what}: browser console errors: {errs[:3]}")


def free_port():
    """A TCP port free on 127.0.0.1 now (for the peers a test starts: Prometheus, Gradio...)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
