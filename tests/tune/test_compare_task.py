#!/usr/bin/env python3
"""test_compare_task.py - compare's task metric by generation on the test split (docs/TUNE.md,
"The task metric"), through the program, against outside references:

- WikiSQL (the MLX data, stories260K, lora and full): each method's generations.jsonl holds one
  row per test example; its prompt and reference are the test file's text cut at the last
  "\\nA:" (computed here from test.jsonl); each greedy text is a prefix of what `loratune
  generate --temp 0 --prompt PROMPT` prints with the best trial's adapter (lora) or saved model
  (full), and ends at its first newline; the prediction, the correctness and the metric are
  recomputed here in Python (exact match of the first line, trimmed) and agree with the row in
  compare.json, the table and the Markdown;
- GSM8K (text records "Q: question\\nA: solution\\n#### N"): the final answers extracted here
  with lm-evaluation-harness's regular expressions (strict "#### N", else the last number)
  agree with compare's, on data the tiny model can learn (every training answer is 7, half of
  the test references too) so that right and wrong answers are both scored; the references of
  real GSM8K solutions (the fixture) are their "#### N" numbers;
- other data: a folder without test.jsonl, and records of another shape, give "loss only" with
  the reason (JSON and table); --task wikisql on GSM8K data is refused before training, naming
  the file and line.
"""
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, check, finish, run  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
WIKISQL = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
GSM8K = os.path.join(FIXTURES, "datasets", "gsm8k", "test.jsonl")
tmp = tempfile.mkdtemp(prefix="lt_cmptask_")
BASE = ["--model", MODEL, "--trials-per-method", "1", "--iters", "12", "--batch-size", "2",
        "--max-seq-len", "128", "--eval-batches", "2", "--threads", "1", "--no-track",
        "--no-prune"]
NUM = r"-?\d(?:\d|,(?=\d))*(?:\.\d+)?"


def compare(study, data, *extra):
    r = run("compare", "--study", study, "--data", data, *BASE, *extra)
    check(r.returncode == 0, f"compare {data}: rc {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr}")
    with open(os.path.join(study, "compare.json")) as f:
        return r, json.load(f)


def gens(study, method):
    with open(os.path.join(study, method, "generations.jsonl")) as f:
        return [json.loads(l) for l in f]


def split_a(text):
    i = text.rindex("\nA:")
    return text[:i + 3], text[i + 3:]


def gsm8k_pred(gen):  # lm-evaluation-harness gsm8k: strict-match, then flexible-extract
    m = re.search(r"####[ $]*(" + NUM + ")", gen)
    if m:
        return m.group(1).replace(",", "")
    nums = re.findall(NUM, gen)
    return nums[-1].replace(",", "") if nums else ""


def test_rows(study, test_path, method, n):
    with open(test_path) as f:
        recs = [json.loads(l) for l in f if l.strip()][:n]
    g = gens(study, method)
    check(len(g) == n, f"{method}: {len(g)} generations, expected {n}")
    for row, rec in zip(g, recs):
        p, a = split_a(rec["text"])
        check(row["prompt"] == p, f"{method}: prompt {row['prompt']!r} vs {p!r}")
    return g, recs


# ---- WikiSQL: lora and full ---------------------------------------------------------------------
N = 6
wdir = os.path.join(tmp, "wikisql")
r, cmp = compare(wdir, WIKISQL, "--methods", "lora,full", "--task-examples", str(N),
                 "--task-max-tokens", "24")
check(cmp["task"]["kind"] == "wikisql" and "WikiSQL exact match" in cmp["metric"],
      f"task {cmp['task']} metric {cmp['metric']}")
check("task metric: WikiSQL exact match" in r.stdout, r.stdout[:400])
md = open(os.path.join(wdir, "compare.md")).read()
for row in cmp["methods"]:
    meth = row["method"]
    g, recs = test_rows(wdir, os.path.join(WIKISQL, "test.jsonl"), meth, N)
    correct = 0
    for x, rec in zip(g, recs):
        ref = split_a(rec["text"])[1].strip()
        check(x["reference"] == ref, f"{meth}: reference {x['reference']!r} vs {ref!r}")
        gen = x["generated"]
        check(gen.count("\n") <= 1, f"{meth}: not cut at its first newline: {gen!r}")
        pred = gen.split("\n")[0].strip()
        ok = pred == ref
        correct += ok
        check(x["prediction"] == pred and x["correct"] == ok,
              f"{meth}: {x} vs prediction {pred!r} correct {ok}")
    tm = row["task_metric"]
    check(tm["name"] == "wikisql_exact_match" and tm["n"] == N and tm["correct"] == correct and
          abs(tm["value"] - correct / N) < 1e-12, f"{meth}: task_metric {tm} vs {correct}/{N}")
    line = [l for l in md.splitlines() if l.startswith("| " + meth + " ") or
            l.startswith("| **" + meth + "** ")]
    check(len(line) == 1 and line[0].rstrip().endswith("| %.4f |" % tm["value"]),
          f"{meth}: markdown row {line}")
    tline = [l for l in r.stdout.splitlines() if l.startswith(meth + " ")]
    check(len(tline) == 1 and tline[0].split()[-1] == "%.4f" % tm["value"], f"table {tline}")
    # the same greedy text from `loratune generate --temp 0` (a separate program run)
    tdir = os.path.join(wdir, meth, "trials", "%04d" % row["best_trial"])
    where = ["--model", tdir, "--tokenizer", MODEL] if meth == "full" else \
        ["--model", MODEL, "--adapter", tdir]
    for x in g[:3]:
        o = run("generate", *where, "--prompt", x["prompt"], "--temp", "0", "--max-tokens", "24",
                "--threads", "1", "--quiet")
        check(o.returncode == 0 and o.stdout.startswith(x["generated"]),
              f"{meth}: generate printed {o.stdout!r}, compare generated {x['generated']!r}\n"
              f"{o.stderr}")

# ---- GSM8K-shaped text records ------------------------------------------------------------------
# A model of 260K parameters learns no arithmetic, so the data is made learnable: every training
# answer is 7, and half of the test references are 7, the others not, so that the scoring is
# exercised on right and wrong answers alike (the predictions are whatever the model says).
gdir = os.path.join(tmp, "gsm8k-data")
os.makedirs(gdir)


def write(name, k0, k1, ans):
    with open(os.path.join(gdir, name), "w") as f:
        for i in range(k0, k1):
            f.write(json.dumps({"text": "Q: Tom has %d apples and eats %d. How many are left?\n"
                                "A: %d - %d = 7.\n#### %s" % (i + 7, i, i + 7, i, ans(i))}) + "\n")


write("train.jsonl", 0, 100, lambda i: "7")
write("valid.jsonl", 100, 120, lambda i: "7")
write("test.jsonl", 120, 140, lambda i: "7" if i % 2 == 0 else "{:,}".format(i * 1000))
with open(os.path.join(tmp, "lr.json"), "w") as f:  # a learning rate that learns in 40 steps
    json.dump({"lr": {"type": "float", "low": 0.01, "high": 0.02, "log": True}}, f)
NG = 8
g1dir = os.path.join(tmp, "g1")
r, cmp = compare(g1dir, gdir, "--methods", "lora", "--task-examples", str(NG), "--task-max-tokens",
                 "24", "--iters", "40", "--space", os.path.join(tmp, "lr.json"))
check(cmp["task"]["kind"] == "gsm8k" and "GSM8K final-answer accuracy" in cmp["metric"],
      f"task {cmp['task']}")
g, recs = test_rows(g1dir, os.path.join(gdir, "test.jsonl"), "lora", NG)
oks = []
for x, rec in zip(g, recs):
    ref = rec["text"].rsplit("####", 1)[1].strip().replace(",", "")
    pred = gsm8k_pred(x["generated"])
    ok = pred != "" and float(pred) == float(ref)
    oks.append(ok)
    check(x["reference"] == ref and x["prediction"] == pred and x["correct"] == ok,
          f"gsm8k: {x} vs reference {ref!r} prediction {pred!r}")
check(0 < sum(oks) < NG, f"gsm8k: all answers {'right' if all(oks) else 'wrong'}: "
      f"{[x['generated'] for x in g]}")
tm = cmp["methods"][0]["task_metric"]
check(tm["name"] == "gsm8k_accuracy" and tm["correct"] == sum(oks) and
      abs(tm["value"] - sum(oks) / NG) < 1e-12, f"gsm8k: task_metric {tm} vs {sum(oks)}/{NG}")
# the references of real GSM8K solutions (the fixture's "#### N" lines)
with open(GSM8K) as f:
    real = [json.loads(l) for l in f][:4]
with open(os.path.join(gdir, "test.jsonl"), "w") as f:
    for x in real:
        f.write(json.dumps({"text": "Q: " + x["question"] + "\nA: " + x["answer"]}) + "\n")
r, cmp = compare(os.path.join(tmp, "g2"), gdir, "--methods", "lora", "--task-max-tokens", "4")
check([x["reference"] for x in gens(os.path.join(tmp, "g2"), "lora")] ==
      [re.search(r"#### (.*)$", x["answer"]).group(1).replace(",", "") for x in real],
      "gsm8k: references of the real solutions")

# ---- completions and chat records (the prompt through the model's chat template) ----------------
# stories260K with the Llama 2 chat template (tests/data/chat_templates): the prompts must be what
# jinja2 renders from that template as transformers does (add_generation_prompt=True, the
# messages before the answer), the generations a prefix of `loratune generate --chat` (its own
# rendering and end-of-turn stop) with the same adapter, and the scoring recomputed here.
import jinja2  # noqa: E402
import jinja2.ext  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPL = open(os.path.join(ROOT, "tests", "data", "chat_templates", "llama2-chat.jinja")).read()
cmodel = os.path.join(tmp, "stories260K-chat")
shutil.copytree(MODEL, cmodel)
with open(os.path.join(cmodel, "tokenizer_config.json")) as f:
    tc = json.load(f)
tc["chat_template"] = TPL
with open(os.path.join(cmodel, "tokenizer_config.json"), "w") as f:
    json.dump(tc, f)


def jinja_prompt(messages):
    def raise_exception(m):
        raise jinja2.exceptions.TemplateError(m)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(TPL).render(messages=messages, add_generation_prompt=True,
                                       bos_token="<s>", eos_token="</s>")


def wikisql_recs(name):
    with open(os.path.join(WIKISQL, name)) as f:
        return [split_a(json.loads(l)["text"]) for l in f if l.strip()]


SYS = "Answer with one SQL query."
shapes = {
    "completions": lambda q, a, i: {"prompt": q[:-3], "completion": a.strip()},
    # a system prompt, and every 3rd record an earlier exchange before the question
    "chat": lambda q, a, i: {"messages": [{"role": "system", "content": SYS}] + (
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]
        if i % 3 == 0 else []) + [{"role": "user", "content": q[:-3]},
                                  {"role": "assistant", "content": a.strip()}]},
}
NC = 5
for shape, make in shapes.items():
    ddir = os.path.join(tmp, shape + "-data")
    os.makedirs(ddir)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        with open(os.path.join(ddir, name), "w") as f:
            for i, (q, a) in enumerate(wikisql_recs(name)[:200]):
                f.write(json.dumps(make(q, a, i)) + "\n")
    sdir = os.path.join(tmp, shape)
    r = run("compare", "--study", sdir, "--data", ddir, *BASE, "--model", cmodel, "--methods",
            "lora", "--task-examples", str(NC), "--task-max-tokens", "16")
    check(r.returncode == 0, f"compare {shape}: rc {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr}")
    if r.returncode:
        continue
    with open(os.path.join(sdir, "compare.json")) as f:
        cmp = json.load(f)
    check(cmp["task"]["kind"] == "wikisql" and "through the chat template" in cmp["metric"],
          f"{shape}: task {cmp['task']} metric {cmp['metric']}")
    with open(os.path.join(ddir, "test.jsonl")) as f:
        recs = [json.loads(l) for l in f][:NC]
    g = gens(sdir, "lora")
    check(len(g) == NC, f"{shape}: {len(g)} generations")
    correct = 0
    for x, rec in zip(g, recs):
        msgs = rec["messages"] if shape == "chat" else [
            {"role": "user", "content": rec["prompt"]},
            {"role": "assistant", "content": rec["completion"]}]
        ref = msgs[-1]["content"]
        check(x["prompt"] == jinja_prompt(msgs[:-1]) and x["reference"] == ref,
              f"{shape}: prompt {x['prompt']!r} vs jinja2 {jinja_prompt(msgs[:-1])!r}, "
              f"reference {x['reference']!r} vs {ref!r}")
        pred = x["generated"].split("\n")[0].strip()
        correct += pred == ref
        check(x["prediction"] == pred and x["correct"] == (pred == ref), f"{shape}: {x}")
    tm = cmp["methods"][0]["task_metric"]
    check(tm["correct"] == correct and tm["n"] == NC, f"{shape}: {tm} vs {correct}/{NC}")
    tdir = os.path.join(sdir, "lora", "trials", "%04d" % cmp["methods"][0]["best_trial"])
    for x, rec in zip(g[:3], recs[:3]):
        msgs = rec["messages"] if shape == "chat" else [{"role": "user",
                                                          "content": rec["prompt"]}]
        if len(msgs) > 3:
            continue  # `generate --chat` takes one user message (and a system prompt)
        sysarg = ["--system", msgs[0]["content"]] if msgs[0]["role"] == "system" else []
        o = run("generate", "--model", cmodel, "--adapter", tdir, "--chat",
                [m for m in msgs if m["role"] == "user"][-1]["content"], *sysarg, "--temp", "0",
                "--max-tokens", "16", "--threads", "1", "--quiet")
        check(o.returncode == 0 and o.stdout.startswith(x["generated"]),
              f"{shape}: generate --chat printed {o.stdout!r}, compare generated "
              f"{x['generated']!r}\n{o.stderr}")
    if shape == "chat":  # loss only, said so: the last message not the assistant's
        with open(os.path.join(ddir, "test.jsonl"), "w") as f:
            f.write(json.dumps({"messages": recs[0]["messages"][:-1]}) + "\n")
        r = run("compare", "--study", os.path.join(tmp, "chat2"), "--data", ddir, *BASE,
                "--model", cmodel, "--methods", "lora")
        with open(os.path.join(tmp, "chat2", "compare.json")) as f:
            c2 = json.load(f)
        check(r.returncode == 0 and c2["task"]["kind"] == "none" and
              "test.jsonl:1: the last message is not the assistant's" in c2["task"]["reason"],
              f"chat without an answer: {c2['task']}")
        # the model without a chat template: compare refuses chat data (training needs it too)
        r = run("compare", "--study", os.path.join(tmp, "chat3"), "--data", ddir, *BASE,
                "--methods", "lora", "--task", "wikisql")
        check(r.returncode == 2 and "test.jsonl:1: task wikisql: the last message" in r.stderr,
              f"--task wikisql on chat without answer: rc {r.returncode} {r.stderr}")

# ---- no task metric; a task that does not fit ---------------------------------------------------
odir = os.path.join(tmp, "other-data")
os.makedirs(odir)
for n in ("train.jsonl", "valid.jsonl"):
    shutil.copy(os.path.join(WIKISQL, n), odir)
r, cmp = compare(os.path.join(tmp, "o1"), odir, "--methods", "lora")
check(cmp["task"]["kind"] == "none" and "no test.jsonl" in cmp["task"]["reason"] and
      "loss only" in cmp["metric"] and "task_metric" not in cmp["methods"][0],
      f"no test split: {cmp['task']} {cmp['metric']}")
check("none, loss only" in r.stdout and "loss only" in r.stdout.splitlines()[-1] or
      any("loss only" in l for l in r.stdout.splitlines()), r.stdout[-600:])
with open(os.path.join(odir, "test.jsonl"), "w") as f:
    f.write(json.dumps({"text": "once upon a time there was a table"}) + "\n")
r, cmp = compare(os.path.join(tmp, "o2"), odir, "--methods", "lora")
check(cmp["task"]["kind"] == "none" and "test.jsonl:1" in cmp["task"]["reason"],
      f"other records: {cmp['task']}")
r = run("compare", "--study", os.path.join(tmp, "o3"), "--data", gdir, *BASE, "--methods",
        "lora", "--task", "wikisql")
check(r.returncode == 2 and "test.jsonl:1: task wikisql: the answer after \"A:\" is not an SQL"
      in r.stderr and not os.path.exists(os.path.join(tmp, "o3", "lora")),
      f"--task wikisql on GSM8K: rc {r.returncode} {r.stderr}")
r = run("compare", "--study", os.path.join(tmp, "o4"), "--data", gdir, *BASE, "--methods",
        "lora", "--task", "sql")
check(r.returncode == 2 and "--task: expected auto, wikisql, gsm8k or none" in r.stderr,
      r.stderr)

shutil.rmtree(tmp, ignore_errors=True)
sys.exit(finish())
