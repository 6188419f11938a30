"""test_bounded_memory.py - issue 18 finding 7: legal but hostile headers and records do not
make loratune use many times the input's size (docs/RELIABILITY.md states the bounds).

Inputs made here, the issue's shapes scaled down so that the test stays quick:
  - a safetensors model folder whose header lists 300 000 empty tensors (17 MB; before the
    fix jansson's tree took ~20 bytes per header byte): refused before parsing, naming the
    file and the count, peak RSS <= base + 4 x file;
  - a GGUF with 1 000 000 one-byte metadata keys (21 MB; ~110 bytes of records per key before):
    refused at the count, peak RSS <= base + 2 x file;
  - a JSONL whose first record holds 6 MB of text (the whole record was tokenized before
    truncation): refused with FILE:LINE, the size and the limit, peak RSS <= base + 4 x file.
base = the peak RSS of the same command on the small fixture (the program's own footprint).
Peak RSS is the child's ru_maxrss (os.wait4); in a sanitizer build only the messages are
checked (ASan's shadow memory makes RSS meaningless).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, LORATUNE, check  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
GGUF = os.path.join(FIXTURES, "stories260K", "stories260K.gguf")


def run_rss(*args):
    """(returncode, stderr, peak RSS in bytes) of `loratune ARGS`. A child's high-water mark
    can include what it was forked from, so every measurement and its base are taken from
    this process in the same (small) state, after the input is written."""
    p = subprocess.Popen([LORATUNE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err, ru.ru_maxrss * 1024


def main():
    san = ltcheck.sanitizer_build()
    tmp = tempfile.mkdtemp(prefix="lt_bounded_")
    MB = 1 << 20
    try:
        # ---- safetensors: 300 000 empty tensors ----
        rc, err, _ = run_rss("inspect", HF)
        check(rc == 0, f"inspect of the fixture: {err}")
        folder = os.path.join(tmp, "many")
        os.makedirs(folder)
        shutil.copy(os.path.join(HF, "config.json"), folder)
        n = 300_000
        entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
        hlen = 2 + sum(len(entry % i) for i in range(n)) + n - 1
        pad = (8 - hlen % 8) % 8
        st = os.path.join(folder, "model.safetensors")
        with open(st, "wb") as f:  # written in pieces: this process stays small (see run_rss)
            f.write(struct.pack("<Q", hlen + pad) + b"{")
            for i0 in range(0, n, 10_000):
                f.write((("," if i0 else "") + ",".join(entry % i for i in range(
                    i0, min(n, i0 + 10_000)))).encode())
            f.write(b"}" + b" " * pad)
        size = os.path.getsize(st)
        rc, err, base = run_rss("inspect", HF)
        rc, err, rss = run_rss("inspect", folder)
        check(rc != 0 and "model.safetensors: header:" in err and "JSON values" in err
              and "refusing" in err, f"safetensors with {n} empty tensors: rc {rc}: {err}")
        if not san:
            check(rss <= base + 4 * size, f"safetensors: peak RSS {rss / MB:.0f} MB, bound "
                  f"{(base + 4 * size) / MB:.0f} MB (base {base / MB:.0f} MB, file "
                  f"{size / MB:.0f} MB)")

        # ---- GGUF: 1 000 000 metadata keys ----
        n = 1_000_000
        g = os.path.join(tmp, "keys.gguf")
        rec = struct.Struct("<Q8sIB")
        with open(g, "wb") as f:
            f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, n))
            for i0 in range(0, n, 10_000):
                f.write(b"".join(rec.pack(8, b"k%07d" % i, 0, 1) for i in range(i0, i0 + 10_000)))
        size = os.path.getsize(g)
        rc, err, base = run_rss("inspect", GGUF)
        check(rc == 0, f"inspect of the GGUF fixture: {err}")
        rc, err, rss = run_rss("inspect", g)
        check(rc != 0 and "keys.gguf: header: n_kv 1000000" in err and "cap" in err,
              f"GGUF with {n} keys: rc {rc}: {err}")
        if not san:
            check(rss <= base + 2 * size, f"GGUF: peak RSS {rss / MB:.0f} MB, bound "
                  f"{(base + 2 * size) / MB:.0f} MB (base {base / MB:.0f} MB, file "
                  f"{size / MB:.0f} MB)")

        # ---- data: one 6 MB record ----
        small = os.path.join(tmp, "small.jsonl")
        with open(small, "w") as f:
            f.write(json.dumps({"text": "Once upon a time there was a cat."}) + "\n")
        big = os.path.join(tmp, "big.jsonl")
        phrase = "Once upon a time there was a cat. "
        reps = 6 * MB // len(phrase)
        with open(big, "w") as f:
            f.write('{"text": "' + phrase * reps + '"}\n')
            f.write(json.dumps({"text": "and a dog."}) + "\n")
        text_len = len(phrase) * reps
        size = os.path.getsize(big)
        rc, err, base = run_rss("data", "check", small, "--model", GGUF)
        check(rc == 0, f"data check of a small record: {err}")
        rc, err, rss = run_rss("data", "check", big, "--model", GGUF)
        check(rc != 0 and "big.jsonl:1:" in err and f"{text_len} bytes of text" in err
              and "limit of 4194304 bytes" in err, f"6 MB record: rc {rc}: {err}")
        if not san:
            check(rss <= base + 4 * size, f"data: peak RSS {rss / MB:.0f} MB, bound "
                  f"{(base + 4 * size) / MB:.0f} MB (base {base / MB:.0f} MB, file "
                  f"{size / MB:.0f} MB)")
        # the limit follows max_seq_len: 64 bytes a token
        rc, err, _ = run_rss("data", "check", big, "--model", GGUF, "--max-seq-len", "90000")
        check(rc != 0 and "limit of 5760000 bytes" in err, f"limit at max_seq_len 90000: {err}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
