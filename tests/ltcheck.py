"""ltcheck.py - what every Python test under tests/ shares: the check/finish counting and the
environment CMake passes in (see CMakeLists.txt).

A test does `sys.path.insert(0, <its folder>/..)`, `import ltcheck`, calls check(cond, msg)
for every assertion and ends with `sys.exit(ltcheck.finish())`. Invariant: finish() prints
"N passed, M failed" as the test's last stdout line and returns non-zero iff a check failed
(ctest looks at the exit code; people and the lead's scripts read that line). A test that
cannot run here (a tool or CPU it needs is missing) says why and exits 77: CTest reports it
as skipped, not passed.
Not named test_*.py on purpose: CMake runs every tests/**/test_*.py as a test.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The built program (CMake: $<TARGET_FILE:loratune>); the C peer tools sit next to it.
LORATUNE = os.environ.get("LORATUNE", "loratune")
FIXTURES = os.environ.get("LT_FIXTURES", os.path.join(ROOT, "tests", "fixtures"))
SOURCE_DIR = os.environ.get("LT_SOURCE_DIR", ROOT)

passed = 0
failed = 0


def check(cond, msg):
    """Counts one assertion; a failed one prints "FAIL: msg" on stderr."""
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg, file=sys.stderr)


def finish():
    """Prints the final "N passed, M failed" line; returns the exit code (1 on any failure)."""
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def tool(name):
    """Path of a C test program built next to the loratune program (test_gguf, ...)."""
    return os.path.join(os.path.dirname(LORATUNE), name)


def sanitizer_build():
    """True when loratune was built with sanitizers (`info --json`: build.sanitizers), where RSS
    figures include ASan's shadow memory and are not comparable."""
    r = run("info", "--json")
    try:
        return json.loads(r.stdout)["build"]["sanitizers"] not in ("", "none")
    except (ValueError, KeyError, TypeError):
        check(False, f"loratune info --json: build.sanitizers missing: {r.stdout[:300]}")
        return False


def run(*args, **kw):
    """`loratune ARGS`, output captured as text unless kw says otherwise."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([LORATUNE, *args], **kw)


def tokenize(args, lines):
    """`loratune tokenize ARGS` with one stdin line per item of lines (UTF-8, no newline
    translation); its stdout lines, or None (with loratune's stderr printed) when it fails."""
    inp = "".join(l + "\n" for l in lines).encode("utf-8")
    r = subprocess.run([LORATUNE, "tokenize", *args], input=inp, capture_output=True)
    if r.returncode != 0:
        print("loratune tokenize", " ".join(args), "failed:",
              r.stderr.decode(errors="replace")[-2000:])
        return None
    out = r.stdout.decode("utf-8").split("\n")
    if out and out[-1] == "":
        out.pop()
    return out
