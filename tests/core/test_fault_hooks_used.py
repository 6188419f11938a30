#!/usr/bin/env python3
"""test_fault_hooks_used.py - the library allocates and writes files only through core's hooks.

The fault-injection walks (tests/*/test_faults_*.c) can only fail what goes through lt_malloc &
co (src/core/alloc.c) and the output I/O primitives (src/core/io.c). This test fails when a
file under src/ calls the C allocator directly (malloc, calloc, realloc, strdup, strndup,
aligned_alloc, posix_memalign, memalign) or one of the output calls the primitives wrap
(write, fwrite, rename, fsync, mkstemp, mkdir, and open / fopen for writing), outside those two
files. Exceptions, each with its reason:
  - src/core/dir_lock.c: the lock file (open O_RDWR, pwrite, mkdir) is not an output;
  - directory fsyncs after a rename (best effort, lt_io_sync_parent).
It also checks that the scanner finds planted lines (so it cannot pass by scanning nothing).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import SOURCE_DIR, check, finish  # noqa: E402

ALLOC = re.compile(r"(?<![\w.>])(malloc|calloc|realloc|strdup|strndup|aligned_alloc|"
                   r"posix_memalign|memalign)\s*\(")
OUTPUT = re.compile(r"(?<![\w.>])(write|fwrite|rename|fsync|mkstemp|mkdir)\s*\(")
OPEN_W = re.compile(r"(?<![\w.>])open\s*\([^;]*O_(WRONLY|RDWR|CREAT)")
FOPEN_W = re.compile(r"(?<![\w.>])fopen\s*\([^;]*\"[wa]")
ALLOWED = {"src/core/alloc.c": {"alloc"}, "src/core/io.c": {"io"},
           "src/core/dir_lock.c": {"io"}}


def strip_comments(text):
    """C text with its comments blanked (line numbers kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def offending(path, text):
    allowed = ALLOWED.get(path, set())
    found = []
    for no, line in enumerate(strip_comments(text).split("\n"), 1):
        if "alloc" not in allowed and ALLOC.search(line):
            found.append((no, "allocation", line.strip()))
        if "io" not in allowed and (OUTPUT.search(line) or OPEN_W.search(line) or
                                    FOPEN_W.search(line)):
            if "O_DIRECTORY" in line:  # the best-effort fsync of a folder
                continue
            found.append((no, "output I/O", line.strip()))
    return found


def main():
    # the scanner finds planted lines, and skips comments and hooked calls
    check(len(offending("src/x.c", "  char *p = malloc(4);\n")) == 1, "planted malloc not found")
    check(len(offending("src/x.c", "  p = strdup(s);\n  q = realloc(q, 8);\n")) == 2,
          "planted strdup / realloc not found")
    check(len(offending("src/x.c", "  if (rename(a, b)) x;\n  fd = open(p, O_WRONLY);\n")) == 2,
          "planted rename / open for writing not found")
    check(len(offending("src/x.c", '  FILE *f = fopen(p, "wb");\n')) == 1, "planted fopen w")
    check(offending("src/x.c", "  p = lt_malloc(4); /* malloc(4) */\n  fd = open(p, O_RDONLY);\n"
                    '  f = fopen(p, "rb");\n  lt_io_write(fd, b, n);\n') == [],
          "hooked calls, reads or comments flagged")
    src = os.path.join(SOURCE_DIR, "src")
    files = 0
    for d, _, names in os.walk(src):
        for name in sorted(names):
            if not name.endswith((".c", ".h")):
                continue
            full = os.path.join(d, name)
            rel = os.path.relpath(full, SOURCE_DIR).replace(os.sep, "/")
            with open(full, encoding="utf-8") as f:
                text = f.read()
            files += 1
            for no, what, line in offending(rel, text):
                check(False, f"{rel}:{no}: {what} outside the core hooks "
                             f"(use lt_malloc & co / the lt_io_* primitives): {line}")
    check(files > 50, f"only {files} source files scanned")
    print(f"{files} source files scanned")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
