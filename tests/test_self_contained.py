#!/usr/bin/env python3
"""test_self_contained.py - a clone must work on its own.

Our machines have a folder of shared fixtures beside the repository; a user's clone does not.
Every file the demo, the tests and the benchmarks read is carried in the repository
(tests/fixtures/, each folder with its SOURCE.md). This test fails if any tracked file outside
docs/ names the shared folder again: as a relative path (dot-dot slash, then its name), as
its fixture path (its name, slash, fixtures) or as quoted path components next to ".." or
"fixtures" (as os.path.join arguments would be). CI does have the shared folder beside its clone, so only this test catches a
regression there.

It also checks that the fixture files the C and Python tests name exist under tests/fixtures, and
that the scanner flags planted lines (so it cannot pass by scanning nothing).
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltcheck import FIXTURES, SOURCE_DIR, check, finish  # noqa: E402

# Built from pieces so that this file does not name the folder itself.
SH = "sha" + "red"
Q = "[\"']"
PATTERNS = [re.compile(re.escape("../" + SH)),
            re.compile(re.escape(SH + "/fixtures")),
            re.compile(Q + r"\.\." + Q + r"\s*,\s*" + Q + SH + Q),
            re.compile(Q + SH + Q + r"\s*,\s*" + Q + "fixtures" + Q)]


def tracked_files(root):
    """The files git tracks (a clone's content); without git, every file under root except
    build outputs, the venv and fetched models."""
    try:
        r = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, check=True)
        names = [n for n in r.stdout.decode("utf-8").split("\0") if n]
        if names:
            return names
    except (OSError, subprocess.CalledProcessError):
        pass
    out = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if not (rel == "." and (x.startswith("build") or
                                                          x in (".git", ".venv", "models")))]
        out += [os.path.normpath(os.path.join(rel, f)) for f in files]
    return out


def offending_lines(text):
    return [(i + 1, line) for i, line in enumerate(text.split("\n"))
            if any(p.search(line) for p in PATTERNS)]


def main():
    # The scanner itself: planted lines are found, clean ones are not.
    check(offending_lines("x\ndata=${3:-../" + SH + "/fixtures/datasets/wikisql-mlx}\n") ==
          [(2, "data=${3:-../" + SH + "/fixtures/datasets/wikisql-mlx}")], "planted ../ path not found")
    check(len(offending_lines('FIX = os.path.join(ROOT, "..", "' + SH + '", "fixtures")')) == 1,
          "planted os.path.join component not found")
    check(len(offending_lines("set(X ${CMAKE_SOURCE_DIR}/../" + SH + ")")) == 1, "planted CMake path not found")
    check(len(offending_lines("FIX = os.path.join(ROOT, '" + SH + "', 'fixtures')")) == 1,
          "planted os.path.join without .. not found")
    check(offending_lines("shared by the subcommands; shared_ptr; a shared machine") == [],
          "ordinary uses of the word are flagged")
    check(offending_lines('    "' + SH + '": 28710,') == [], "a vocabulary entry is flagged")

    files = tracked_files(SOURCE_DIR)
    check(len(files) > 100, f"only {len(files)} files found under {SOURCE_DIR}")
    bad = []
    for name in files:
        if name.startswith("docs/"):
            continue
        path = os.path.join(SOURCE_DIR, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue  # binary fixtures and goldens
        for ln, line in offending_lines(data.decode("utf-8", errors="replace")):
            bad.append(f"{name}:{ln}: {line.strip()[:120]}")
    for b in bad:
        print("names the shared folder:", b, file=sys.stderr)
    check(not bad, f"{len(bad)} tracked lines outside docs/ name the shared folder (see above)")

    # Every fixture a test names is in the repository.
    check(os.path.realpath(FIXTURES) == os.path.realpath(os.path.join(SOURCE_DIR, "tests", "fixtures")),
          f"fixtures are read from {FIXTURES}, not from the repository's tests/fixtures")
    named = set()
    for name in files:
        if name.startswith("tests/") and name.endswith(".c"):
            with open(os.path.join(SOURCE_DIR, name), encoding="utf-8", errors="replace") as f:
                named.update(re.findall(r'lt_fixture\("([^"]+)"\)', f.read()))
    named.discard("does/not/exist.json")
    check(len(named) > 10, f"only {len(named)} lt_fixture() paths found")
    for rel in sorted(named):
        check(os.path.exists(os.path.join(SOURCE_DIR, "tests", "fixtures", rel)),
              f"tests name fixture {rel}, missing from tests/fixtures")
    for d, _, fs in os.walk(os.path.join(SOURCE_DIR, "tests", "fixtures")):
        if d.endswith("fixtures"):
            continue
        top = os.path.relpath(d, os.path.join(SOURCE_DIR, "tests", "fixtures")).split(os.sep)
        grouped = top[0] in ("datasets", "tokenizers")
        if (len(top) == 1 and not grouped) or (len(top) == 2 and grouped):
            check("SOURCE.md" in fs, f"tests/fixtures/{'/'.join(top)} has no SOURCE.md")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
