"""test_data_cli.py - `loratune data check`: exit codes, the summary against numbers computed here
from the files (Python's json + the HF `tokenizers` library for token counts), the single-file
split, and errors on stderr naming FILE:LINE.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

WIK = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
ALPACA = os.path.join(ltcheck.FIXTURES, "datasets", "llamafactory-demo", "alpaca_en_demo.json")
TOKJSON = os.path.join(ltcheck.FIXTURES, "tokenizers", "smollm", "tokenizer.json")


def jcheck(*args):
    r = ltcheck.run("data", "check", *args, "--json")
    check(r.returncode == 0, f"data check {args}: rc {r.returncode} {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


def main():
    # structure only: counts and character lengths from the files
    j = jcheck(WIK)
    if j:
        check(j["format"] == "text", "wikisql is text")
        for s in ("train", "valid", "test"):
            lens = [len(json.loads(l)["text"]) for l in open(os.path.join(WIK, s + ".jsonl"))]
            got = j["splits"][s]
            check(got["examples"] == len(lens) and got["unit"] == "characters",
                  f"{s}: {got['examples']} examples, file has {len(lens)}")
            check(got["min_len"] == min(lens) and got["max_len"] == max(lens),
                  f"{s}: lengths {got['min_len']}..{got['max_len']} vs {min(lens)}..{max(lens)}")
            check(abs(got["mean_len"] - sum(lens) / len(lens)) < 1e-3, f"{s}: mean length")
            hist = got["histogram"]
            check(sum(h["examples"] for h in hist) == len(lens), f"{s}: histogram total")
            for h in hist:
                want = sum(h["from"] <= x < h["to"] for x in lens)
                check(h["examples"] == want, f"{s}: bucket [{h['from']}, {h['to']}): "
                      f"{h['examples']} vs {want}")

    # tokens, loss tokens, truncation with a tokenizer (no chat template needed for text)
    tk = Tokenizer.from_file(TOKJSON)
    tk.no_truncation()
    tk.no_padding()
    j = jcheck(WIK, "--tokenizer", TOKJSON, "--max-seq-len", "96")
    if j:
        lens = [len(tk.encode(json.loads(l)["text"]).ids) + 1  # + EOS (the tokenizer adds none)
                for l in open(os.path.join(WIK, "train.jsonl"))]
        got = j["splits"]["train"]
        check(got["unit"] == "tokens", "tokens with a tokenizer")
        check(got["tokens"] == sum(min(x, 96) for x in lens),
              f"tokens {got['tokens']} vs {sum(min(x, 96) for x in lens)}")
        check(got["loss_tokens"] == sum(min(x, 96) - 1 for x in lens), "loss tokens: all but the first")
        check(got["truncated"] == sum(x > 96 for x in lens),
              f"truncated {got['truncated']} vs {sum(x > 96 for x in lens)}")
        check(got["max_len"] == max(lens), "max length before truncation")

    # a single file: seeded 10% split (round(0.1 * 999) = 100)
    n = len(json.load(open(ALPACA)))
    j = jcheck(ALPACA)
    if j:
        check(j["format"] == "alpaca", "alpaca detected")
        check(j["splits"]["train"]["examples"] == n - round(0.1 * n)
              and j["splits"]["valid"]["examples"] == round(0.1 * n),
              f"split {j['splits']['train']['examples']} / {j['splits']['valid']['examples']}")
    j2 = jcheck(ALPACA, "--valid-fraction", "0.25", "--seed", "7")
    if j2:
        check(j2["splits"]["valid"]["examples"] == round(0.25 * n), "--valid-fraction 0.25")

    # human output and exit codes
    r = ltcheck.run("data", "check", WIK)
    check(r.returncode == 0 and "train: 1000 examples" in r.stdout and "valid: 100" in r.stdout,
          f"human summary: {r.stdout[:300]}")
    for args, rc in ((["data"], 2), (["data", "nosuch"], 2), (["data", "check"], 2),
                     (["data", "check", WIK, "--bogus"], 2),
                     (["data", "check", WIK, "--data-format", "csv"], 2),
                     (["data", "check", WIK, "--max-seq-len", "x"], 2)):
        r = ltcheck.run(*args)
        check(r.returncode == rc and r.stderr and not r.stdout.strip(),
              f"{args}: rc {r.returncode} (want {rc}), stderr {r.stderr[:200]!r}")
    for args in (["data", "--help"], ["data", "check", "--help"]):
        r = ltcheck.run(*args)
        check(r.returncode == 0 and "usage" in r.stdout, f"{args} --help")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "bad.jsonl")
        open(p, "w").write('{"messages": [{"role": "user", "content": "q"}, '
                           '{"role": "assistant", "content": "a"}]}\n'
                           '{"messages": [{"role": "user", "content": "q"}, '
                           '{"role": "assistant", "content": ""}]}\n')
        r = ltcheck.run("data", "check", p)
        check(r.returncode == 1 and "bad.jsonl:2:" in r.stderr and
              "'messages'[1].content" in r.stderr, f"bad data: {r.stderr!r}")
        r = ltcheck.run("data", "check", d)
        check(r.returncode == 1 and "train.jsonl" in r.stderr, f"folder without train: {r.stderr!r}")
        # a tokenizer without a chat template: chat data is refused, naming the line
        r = ltcheck.run("data", "check", p, "--tokenizer", TOKJSON)
        check(r.returncode == 1 and "bad.jsonl:1:" in r.stderr and "chat template" in r.stderr,
              f"chat data without a template: {r.stderr!r}")
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
