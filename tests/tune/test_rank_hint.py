#!/usr/bin/env python3
"""test_rank_hint.py - the LoRA rank suggested from the data (docs/TUNE.md, "A rank from the
data"), printed by `loratune data check --model M` and `loratune tune`.

The rule is recomputed here from the model's config.json (the parameters per unit of rank of
an adapter on q, k, v, o, gate, up and down of every layer) and the train split's loss tokens
and examples (which tests/data_pipeline/test_data_cli.py checks against the files): the
smallest power-of-two rank from 4 up to the cap (64 or the smallest linear side) whose 2 bits
per parameter hold the loss tokens' bits, else the cap with short_of_data. Three data sizes
(a few records, a medium synthetic set, WikiSQL, a large synthetic set) give growing ranks up
to the cap, the last one short of data, each equal to
the recomputation, the text line and the JSON agree, and `tune` prints and records the same
suggestion for the same model and data.
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, check, finish, run  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
WIKISQL = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
tmp = tempfile.mkdtemp(prefix="lt_rank_")
cfg = json.load(open(os.path.join(MODEL, "config.json")))


def expected(loss_tokens):
    d, f, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_rank = L * ((d + q) + 2 * (d + kv) + (q + d) + 3 * (d + f))
    cap = min([64] + [s for s in (d, q, kv, f) if s > 0])
    r = 1 if cap < 4 else 4
    while r < cap and 2 * r * per_rank < loss_tokens:
        r = min(2 * r, cap)
    return r, cap, per_rank, 2 * r * per_rank < loss_tokens


def check_data(path, want_short=None):
    r = run("data", "check", path, "--model", MODEL, "--json")
    check(r.returncode == 0, r.stderr)
    o = json.loads(r.stdout)
    tr = o["splits"]["train"]
    rs = o["rank_suggestion"]
    rank, cap, per_rank, short = expected(tr["loss_tokens"])
    check((rs["rank"], rs["cap"], rs["params_per_rank"], rs["short_of_data"]) ==
          (rank, cap, per_rank, short) and rs["loss_tokens"] == tr["loss_tokens"] and
          rs["examples"] == tr["examples"],
          f"{path}: {rs} vs rank {rank} cap {cap} per rank {per_rank} short {short}")
    check(("even rank %d" % rank if short else "rank %d on every linear" % rank) in rs["reason"],
          f"{path}: reason {rs['reason']}")
    if want_short is not None:
        check(short == want_short, f"{path}: short_of_data {short}, expected {want_short}")
    t = run("data", "check", path, "--model", MODEL)
    check(t.returncode == 0 and ("rank suggestion (LoRA): %d: %s" % (rank, rs["reason"])) in t.stdout,
          f"{path}: text {t.stdout[-400:]}")
    return rank


def write(folder, n, length):
    os.makedirs(folder)
    for name, k in (("train.jsonl", n), ("valid.jsonl", 2)):
        with open(os.path.join(folder, name), "w") as f:
            for i in range(k):
                words = " ".join("w%d" % ((i * 7 + j) % 997) for j in range(length))
                f.write(json.dumps({"text": "record %d: %s" % (i, words)}) + "\n")


small = os.path.join(tmp, "small")
write(small, 3, 5)
medium = os.path.join(tmp, "medium")
write(medium, 600, 50)
big = os.path.join(tmp, "big")
write(big, 3000, 120)
ranks = [check_data(small, False), check_data(medium, False), check_data(WIKISQL, False),
         check_data(big, True)]
check(ranks[0] < ranks[1] < ranks[2] == ranks[3], f"ranks {ranks}")
print("ranks (small, medium, WikiSQL, big):", ranks)
r = run("data", "check", WIKISQL, "--json")  # no model: no suggestion
check(r.returncode == 0 and "rank_suggestion" not in json.loads(r.stdout), "no model")

# tune prints the same suggestion and keeps it in tune.json
d = os.path.join(tmp, "study")
r = run("tune", "--study", d, "--model", MODEL, "--data", WIKISQL, "--trials", "1", "--iters",
        "2", "--batch-size", "2", "--eval-batches", "1", "--threads", "1",
        "--no-track")
tj = json.load(open(os.path.join(d, "tune.json")))
check(r.returncode == 0 and tj["rank_suggestion"]["rank"] == ranks[2] and
      ("rank suggestion: %d: " % ranks[2]) in r.stdout, f"tune: {r.stdout[:600]} {r.stderr}")
shutil.rmtree(tmp, ignore_errors=True)
sys.exit(finish())
