"""test_checkpoint_integrity.py - a checkpoint is checked before a resume trusts it (issue
"Reliability", finding 1), end to end on stories260K:

- every checkpoint carries a SHA-256 of its state (metadata loratune.state.sha256) and of every
  tensor (state "sha256"), computed here independently with hashlib over the file's bytes;
- damaged newest checkpoints are passed over, the newest good one is used and named (stderr,
  the "resuming" stage and the start event), and the resumed run continues exactly as an
  uninterrupted run from that step would (same losses): bytes flipped in a tensor; a lora_B
  holding NaN (with its checksum updated, so only the finiteness check can catch it); a state
  whose step is "x" / null / missing, or whose counters are absurd (checksums updated, so the
  field checks must catch them);
- a damaged file named directly is refused with the file and the fault; a folder where every
  checkpoint is damaged is refused listing each; nothing is trained in either case.
Each damage is made by this test with the safetensors package (an outside reader / writer).
"""
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_ckpt_integrity_")
DATA = os.path.join(TMP, "data")
os.environ["LORATUNE_STORE"] = os.path.join(TMP, "store")

COMMON = ["--model", MODEL, "--data", DATA, "--batch-size", "2", "--max-seq-len", "48",
          "--lora-targets", "q,v", "--lr", "5e-3", "--eval-every", "0", "--save-every", "2",
          "--keep-checkpoints", "10", "--threads", "1", "--seed", "7", "--json"]


def make_data():
    os.makedirs(DATA)
    for split, n in (("train", 12), ("valid", 4)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(DATA, split + ".jsonl"), "w") as f:
            f.writelines(lines)


def events(stdout):
    return [json.loads(x) for x in stdout.splitlines() if x.strip()]


def train(*args):
    r = ltcheck.run("train", *args)
    try:
        return r, events(r.stdout)
    except ValueError:
        check(False, f"train {args}: stdout is not JSON lines: {r.stdout[:300]}")
        return r, []


def read_st(path):
    """(header dict, data bytes) of a safetensors file, parsed here by hand."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def reseal(header, data, state):
    """header with the new state and every checksum recomputed (a consistent file)."""
    sums = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        sums[name] = sha(data[a:b])
    state["sha256"] = sums
    meta = json.dumps(state, separators=(",", ":"), sort_keys=True)
    header["__metadata__"]["loratune.state"] = meta
    header["__metadata__"]["loratune.state.sha256"] = sha(meta.encode())
    return header


def ckpts(out):
    d = os.path.join(out, "checkpoints")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))


def main():
    check(os.path.isfile(MODEL), f"fixture {MODEL}")
    make_data()
    ref = os.path.join(TMP, "ref")
    r, ev_ref = train(*COMMON, "--iters", "6", "--out", ref)
    check(r.returncode == 0, f"reference run: {r.stderr[-1500:]}")
    ref_loss = {e["step"]: e["loss"] for e in ev_ref if e.get("event") == "step"}
    files = ckpts(ref)
    check([os.path.basename(f) for f in files] ==
          [f"step-{s:08d}.safetensors" for s in (2, 4, 6)], f"checkpoints: {files}")

    # ---- the checksums are what an independent reader computes -----------------------------
    header, data = read_st(files[-1])
    meta = header["__metadata__"]
    state = json.loads(meta["loratune.state"])
    check(state["format"] == 2, f"format {state['format']}")
    check(meta.get("loratune.state.sha256") == sha(meta["loratune.state"].encode()),
          "state checksum = SHA-256 of the state text")
    names = [k for k in header if k != "__metadata__"]
    bad = [k for k in names
           if state["sha256"].get(k) != sha(data[header[k]["data_offsets"][0]:
                                                 header[k]["data_offsets"][1]])]
    check(names and not bad, f"tensor checksums differ from hashlib's: {bad[:3]}")

    def damaged_copy(tag, damage):
        """a copy of the reference run's folder whose newest checkpoint damage() changed"""
        out = os.path.join(TMP, tag)
        shutil.copytree(ref, out)
        newest = ckpts(out)[-1]
        h, d = read_st(newest)
        h, d = damage(h, d)
        write_st(newest, h, d)
        return out, newest

    def flip(h, d):
        name = next(k for k in h if k.endswith("lora_B.weight"))
        a = h[name]["data_offsets"][0]
        return h, d[:a] + bytes([d[a] ^ 0x40]) + d[a + 1:]

    def nan_b(h, d):
        name = next(k for k in h if k.endswith("lora_B.weight") and not k.startswith("opt"))
        a = h[name]["data_offsets"][0]
        d = d[:a] + struct.pack("<f", float("nan")) + d[a + 4:]
        return reseal(h, d, json.loads(h["__metadata__"]["loratune.state"])), d

    def state_edit(fn):
        def damage(h, d):
            st = json.loads(h["__metadata__"]["loratune.state"])
            fn(st)
            return reseal(h, d, st), d
        return damage

    cases = [
        ("flip", flip, "does not match its checksum"),
        ("nan", nan_b, "expected a finite"),
        ("step_x", state_edit(lambda s: s.__setitem__("step", "x")), "step: expected an integer"),
        ("step_null", state_edit(lambda s: s.__setitem__("step", None)), "step: expected an integer"),
        ("step_missing", state_edit(lambda s: s.pop("step")), "step: expected an integer"),
        ("counters", state_edit(lambda s: s["counters"].__setitem__("trainer_step", 10 ** 12)),
         "counters.trainer_step"),
        ("micro", state_edit(lambda s: s["counters"].__setitem__("micro", 999)), "counters.micro"),
        ("state_text", None, "loratune.state does not match its checksum"),
    ]
    for tag, damage, want in cases:
        if damage is None:  # the state changed without updating its checksum
            def damage(h, d):
                st = json.loads(h["__metadata__"]["loratune.state"])
                st["tokens"] = st["tokens"] + 1
                h["__metadata__"]["loratune.state"] = json.dumps(st, sort_keys=True)
                return h, d
        out, newest = damaged_copy(tag, damage)
        r, evs = train("--resume", out, "--iters", "6", "--threads", "1", "--json")
        check(r.returncode == 0, f"{tag}: resume past a damaged checkpoint: {r.stderr[-800:]}")
        start = [e for e in evs if e.get("event") == "start"]
        why = (start[0].get("skipped_checkpoints") or [{}])[0].get("reason", "") if start else ""
        check(want in why and os.path.basename(newest) in why,
              f"{tag}: the start event names the damaged checkpoint and '{want}': {why}")
        stage = [e for e in evs if e.get("event") == "stage" and e.get("stage") == "resuming"]
        check(start and start[0]["resumed_from"] == 4 and
              start[0]["resumed_checkpoint"].endswith("step-00000004.safetensors") and
              start[0].get("skipped_checkpoints", [{}])[0].get("checkpoint") == newest,
              f"{tag}: start event: {start[:1]}")
        check(stage and stage[0]["checkpoint"].endswith("step-00000004.safetensors"),
              f"{tag}: resuming stage: {stage[:1]}")
        got = {e["step"]: e["loss"] for e in evs if e.get("event") == "step"}
        check(sorted(got) == [5, 6] and all(got[s] == ref_loss[s] for s in got),
              f"{tag}: resumed losses {got} vs the uninterrupted run's {ref_loss}")

    # ---- what a person reads: stderr names what was passed over, stdout where it resumed ----
    out, newest = damaged_copy("human", flip)
    r = ltcheck.run("train", "--resume", out, "--iters", "6")
    check(r.returncode == 0 and "passed over a damaged checkpoint" in r.stderr and
          os.path.basename(newest) in r.stderr and "does not match its checksum" in r.stderr and
          "resumed after step 4 from" in r.stdout and "step-00000004.safetensors" in r.stdout,
          f"human output: rc {r.returncode}, {r.stderr[-400:]} / {r.stdout[:400]}")

    # ---- a moved run folder resumes into itself, not into the path recorded in it ---------
    moved = os.path.join(TMP, "moved")
    shutil.copytree(ref, moved)
    before = {f: os.path.getmtime(os.path.join(ref, f)) for f in os.listdir(ref)}
    r, evs = train("--resume", moved, "--iters", "8", "--json")
    done = [e for e in evs if e.get("event") == "done"]
    check(r.returncode == 0 and os.path.isfile(os.path.join(moved, "checkpoints",
                                                            "step-00000008.safetensors")),
          f"resume of a moved folder writes there: {r.stderr[-400:]}")
    check(not os.path.exists(os.path.join(ref, "checkpoints", "step-00000008.safetensors")) and
          before == {f: os.path.getmtime(os.path.join(ref, f)) for f in os.listdir(ref)},
          "the folder recorded in the checkpoint is left alone")
    other = os.path.join(TMP, "elsewhere")
    r, evs = train("--resume", moved, "--iters", "10", "--out", other, "--json")
    check(r.returncode == 0 and os.path.isdir(os.path.join(other, "checkpoints")),
          f"--out still decides: {r.stderr[-300:]}")

    # ---- a damaged file named directly; a folder with nothing usable -----------------------
    out, newest = damaged_copy("direct", flip)
    r, evs = train("--resume", newest, "--iters", "6", "--out", out, "--json")
    check(r.returncode != 0 and "does not match its checksum" in r.stderr and
          newest in r.stderr and not [e for e in evs if e.get("event") == "step"],
          f"a damaged file named directly is refused: rc {r.returncode}, {r.stderr[-400:]}")
    out = os.path.join(TMP, "all")
    shutil.copytree(ref, out)
    for f in ckpts(out):
        h, d = read_st(f)
        write_st(f, *flip(h, d))
    r, evs = train("--resume", out, "--iters", "6", "--json")
    check(r.returncode != 0 and "no usable checkpoint" in r.stderr and
          all(os.path.basename(f) in r.stderr for f in ckpts(out)),
          f"nothing usable: rc {r.returncode}, {r.stderr[-600:]}")
    shutil.rmtree(TMP, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
