"""test_serve_retrain.py - the monitoring -> alert -> retraining loop of `loratune serve`, end to
end on loopback, with the real Prometheus and Alertmanager (Debian packages prometheus,
prometheus-alertmanager) started by the test on the shipped configuration (deploy/prometheus/:
rules, prometheus.yml, alertmanager.yml; only addresses, the token file and intervals changed)
and the stories260K fixture model:

- the shipped files pass `promtool check rules` / `promtool check config` / `amtool check-config`;
- a LoRA job trains the champion on math word problems (gsm8k); it is registered twice (`loratune
  models register`) as models `good` and `bad` and deployed with `loratune models deploy
  NAME@1 --holdout DS` (held-out sets: SQL questions for good, math problems for bad);
- the drift reference the server records equals token counts made by the test with
  transformers' Llama tokenizer (stories260K-hf) on the training file, and the PSI / KL on /metrics equal the test's own
  computation from those counts and its own tokenization of the prompts it sent;
- math prompts: no drift; then a new upload of the dataset (same name: its newest version) holds
  SQL questions (wikisql) and the traffic turns to SQL: the PSI crosses 0.25, Prometheus fires
  LoratuneInputDrift, Alertmanager posts it to the token-protected webhook, and for each
  deployment a train job runs on the newest dataset with the champion's options;
- the evaluation gate: on good's SQL held-out set the challenger wins, it is registered as
  good version 2, promoted to production and served (`model: good` answered by good.v2, the
  text equal to `loratune generate --adapter` of the new job's adapter); on bad's math held-out
  set it loses and bad stays on version 1; the gate's losses equal `loratune eval`'s;
- lineage in the store (sqlite3): retrain -> train run (data md5 = hashlib md5 of the new
  upload) -> eval-gate -> model version 2 (run = the train run) -> deploy run (parent = retrain);
- a canary share routes exactly that share of requests, rollback drops it, and a rollback of a
  stable version serves the previous one again; the webhook refuses a request without the token.
Skipped (77) without the Prometheus / Alertmanager binaries. Prints "N passed, M failed".
"""
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests
from llama_cpp import Llama
from transformers import AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402

PROM, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
AM, AMTOOL = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"), shutil.which("amtool")
if not (PROM and PROMTOOL and AM and AMTOOL):
    print("skipped: prometheus / promtool / prometheus-alertmanager / amtool missing "
          "(Debian packages prometheus, prometheus-alertmanager; tools/setup.sh)")
    sys.exit(77)

DEPLOY = os.path.join(ltcheck.SOURCE_DIR, "deploy", "prometheus")
TMP = tempfile.mkdtemp(prefix="lt_serve_retrain_")
TOKEN = "retrain-loop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL_PATH = os.path.join(servekit.MODELS, servekit.MODEL)
# the outside tokenizer: transformers' Llama tokenizer of the same vocabulary (stories260K-hf)
TOK = AutoTokenizer.from_pretrained(os.path.join(ltcheck.FIXTURES, "stories260K-hf"))
OPTS = {"iters": 40, "batch-size": 4, "max-seq-len": 64, "lora-rank": 4, "lr": 1e-2,
        "threads": 1, "eval-every": 0, "seed": 7}
BUCKETS, WINDOW = 32, 2048
TOKEN_FILE = os.path.join(TMP, "token")
with open(TOKEN_FILE, "w") as f:
    f.write(TOKEN)


def free_port():
    return servekit.free_port()


def jsonl(path, n, skip=0):
    with open(path) as f:
        return [json.loads(x) for x in f.read().splitlines()[skip:skip + n]]


MATH = [{"text": f"Q: {r['question']}\nA: {r['answer']}"}
        for r in jsonl(os.path.join(ltcheck.FIXTURES, "datasets", "gsm8k", "test.jsonl"), 120)]
SQL = jsonl(os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl"), 120)
SQL_VALID = jsonl(os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "valid.jsonl"), 32)


def prompt_of(rec):
    return rec["text"]  # text records: a prompt is text like the training data


def upload(name, recs):
    body = "".join(json.dumps(r) + "\n" for r in recs).encode()
    r = requests.post(URL + "/api/datasets", params={"name": name}, data=body, headers=AUTH,
                      timeout=60)
    check(r.status_code == 201, f"upload {name}: {r.status_code} {r.text[:300]}")
    return r.json()["id"], body


def wait_job(jid, limit=300):
    t0 = time.time()
    while time.time() - t0 < limit:
        j = requests.get(URL + f"/api/jobs/{jid}", headers=AUTH, timeout=30).json()
        if j["status"] in ("done", "failed", "cancelled", "interrupted"):
            return j
        time.sleep(0.5)
    check(False, f"job {jid} did not end in {limit}s")
    return {}


def lt(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([ltcheck.LORATUNE, *args], capture_output=True, text=True, env=e,
                          timeout=600)


def complete(model, prompt, max_tokens=2):
    r = requests.post(URL + "/v1/completions", json={"model": model, "prompt": prompt,
                      "max_tokens": max_tokens, "temperature": 0}, headers=AUTH, timeout=120)
    check(r.status_code == 200, f"completion on {model}: {r.status_code} {r.text[:300]}")
    return r.json() if r.status_code == 200 else {}


def metrics():
    return requests.get(URL + "/metrics", headers=AUTH, timeout=30).text


def series(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}")]))
        if all(lab.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def deployments():
    r = requests.get(URL + "/api/deployments", headers=AUTH, timeout=30)
    return {d["name"]: d for d in r.json()["deployments"]}


def drift(ref, prompt_ids):
    """PSI and KL(q || p) as docs/SERVING.md defines them, from the reference's counts."""
    top = ref["bucket_tokens"]
    bucket = {t: i for i, t in enumerate(top) if t >= 0}
    cnt = [0] * BUCKETS
    win = [t for ids in prompt_ids for t in ids][-WINDOW:]
    for t in win:
        cnt[bucket.get(t, BUCKETS - 1)] += 1
    p = [(c + 0.5) / (ref["tokens"] + 0.5 * BUCKETS) for c in ref["counts"]]
    q = [(c + 0.5) / (len(win) + 0.5 * BUCKETS) for c in cnt]
    psi = sum((a - b) * math.log(a / b) for a, b in zip(q, p))
    kl = sum(a * math.log(a / b) for a, b in zip(q, p))
    return psi, kl, len(win)


LLAMA = Llama(model_path=MODEL_PATH, n_ctx=512, logits_all=True, verbose=False, n_threads=1)


def nll_of(prompts, budget=None):
    """Token-weighted mean NLL of the base model (llama.cpp) over prompts (token ids; the first
    512), each predicted token from the ones before it; at most budget tokens predicted in all
    (the reference's 4096, docs/SERVING.md)."""
    total, count = 0.0, 0
    for ids in prompts:
        ids = ids[:512] if budget is None else ids[:min(512, budget - count + 1)]
        if len(ids) < 2:
            break
        LLAMA.reset()
        LLAMA.eval(ids)
        lg = np.array(LLAMA.scores[:len(ids) - 1], dtype=np.float64)
        mx = lg.max(axis=1)
        lse = mx + np.log(np.exp(lg - mx[:, None]).sum(axis=1))
        total += float((lse - lg[np.arange(len(ids) - 1), ids[1:]]).sum())
        count += len(ids) - 1
    return total / count


def scored(name):
    m = metrics()
    return ((series(m, "loratune_input_prompts_scored_total", model=f"{name}.v1") or 0) +
            (series(m, "loratune_input_prompts_unscored_total", model=f"{name}.v1") or 0))


def ids_of(text):
    return TOK(text).input_ids  # BOS + text, as the server encodes a prompt


# the shipped configuration passes the tools' own checks
p = subprocess.run([PROMTOOL, "check", "rules", os.path.join(DEPLOY, "loratune-rules.yml")],
                   capture_output=True, text=True)
check(p.returncode == 0 and "SUCCESS: 7 rules found" in p.stdout, f"promtool check rules: {p.stdout} {p.stderr}")
shipped_am = open(os.path.join(DEPLOY, "alertmanager.yml")).read()
shipped_prom = open(os.path.join(DEPLOY, "prometheus.yml")).read()
shipped_rules = open(os.path.join(DEPLOY, "loratune-rules.yml")).read()
for name, text in (("prometheus.yml", shipped_prom), ("alertmanager.yml", shipped_am),
                   ("loratune-rules.yml", shipped_rules)):
    with open(os.path.join(TMP, "check-" + name), "w") as f:
        f.write(text.replace("/etc/loratune/token", TOKEN_FILE).replace(
            "loratune-rules.yml", os.path.join(TMP, "check-loratune-rules.yml")))
p = subprocess.run([PROMTOOL, "check", "config", os.path.join(TMP, "check-prometheus.yml")],
                   capture_output=True, text=True)
check(p.returncode == 0, f"promtool check config: {p.stdout} {p.stderr}")
p = subprocess.run([AMTOOL, "check-config", os.path.join(TMP, "check-alertmanager.yml")],
                   capture_output=True, text=True)
check(p.returncode == 0, f"amtool check-config: {p.stdout} {p.stderr}")

srv = servekit.Server(os.path.join(TMP, "work"), "--model", MODEL_PATH, "--token", TOKEN,
                      "--slots", "2", "--job-threads", "1", "--threads", "1")
URL = srv.url
WORK = os.path.realpath(os.path.join(TMP, "work"))
ENV = {"LORATUNE_TOKEN": TOKEN, "LORATUNE_SERVER": URL}
prom = am = None
try:
    t0 = time.time()
    while requests.get(URL + "/ready", timeout=10).status_code != 200 and time.time() - t0 < 60:
        time.sleep(0.2)

    # the champion: a LoRA job on math problems, registered as two models
    ds_math, math_bytes = upload("support.jsonl", MATH[:80])
    r = requests.post(URL + "/api/jobs", json={"dataset": ds_math, "model": servekit.MODEL,
                      "options": OPTS}, headers=AUTH, timeout=30)
    check(r.status_code == 201, f"job: {r.status_code} {r.text[:300]}")
    champ = wait_job(r.json()["id"])
    check(champ.get("status") == "done", f"champion job: {champ}")
    store = os.path.join(WORK, "store")
    for name in ("good", "bad", "plain"):
        p = lt("models", "register", str(champ["run_id"]), "--name", name, "--store", store)
        check(p.returncode == 0, f"models register {name}: {p.stdout} {p.stderr}")
    ho_sql, ho_sql_bytes = upload("holdout-sql.jsonl", SQL_VALID)
    ho_math, ho_math_bytes = upload("holdout-math.jsonl", MATH[80:112])

    # bad input to the deploy API and CLI
    r = requests.post(URL + "/api/deployments", json={"model": "good", "version": 9}, headers=AUTH,
                      timeout=30)
    check(r.status_code == 404 and "version 9" in r.json()["error"]["message"],
          f"unknown version: {r.status_code} {r.text[:300]}")
    r = requests.post(URL + "/api/deployments", json={"model": "good", "version": 1, "canary": 2},
                      headers=AUTH, timeout=30)
    check(r.status_code == 400 and "canary" in r.json()["error"]["message"], f"canary 2: {r.text[:300]}")
    p = lt("models", "deploy", "good", env=ENV)
    check(p.returncode == 2 and "NAME@VERSION" in p.stderr, f"deploy without @: {p.returncode} {p.stderr}")
    p = lt("models", "deploy", "good@1", "--server", URL, env={"LORATUNE_TOKEN": "wrong"})
    check(p.returncode == 1 and "401" in p.stderr, f"deploy with a wrong token: {p.returncode} {p.stderr}")

    # deploy both with the CLI
    refs = {}
    for name, ho in (("good", ho_sql), ("bad", ho_math)):
        p = lt("models", "deploy", f"{name}@1", "--holdout", ho, "--json", env=ENV)
        check(p.returncode == 0, f"models deploy {name}@1: {p.returncode} {p.stdout} {p.stderr}")
        d = json.loads(p.stdout) if p.returncode == 0 else {}
        check(d.get("stable", {}).get("model") == f"{name}.v1" and d.get("canary") is None,
              f"deployment {name}: {d}")
        refs[name] = d.get("reference", {})

    # output quality: each deployment's version scored on its held-out set (at deployment, then
    # on the schedule or on demand), equal to `loratune eval` of its adapter on that file
    def eval_loss(adapter, ds):
        p = lt("eval", "--model", MODEL_PATH, "--adapter", adapter, "--data",
               os.path.join(WORK, "datasets", ds, "data.jsonl"), "--batch-size", "4",
               "--max-seq-len", "64", "--seed", "7", "--json")
        return json.loads(p.stdout)["loss"] if p.returncode == 0 else None

    def holdout_loss(name, version, ds, limit=60):
        t1 = time.time()
        while time.time() - t1 < limit:
            st = deployments()[name]["stable"]
            hl = st.get("holdout_loss")
            if st["version"] == version and hl and hl["dataset"] == ds:
                return hl["loss"]
            time.sleep(0.2)
        return None

    champ_out = os.path.join(WORK, "jobs", champ["id"], "out")
    for name, ho in (("good", ho_sql), ("bad", ho_math)):
        got, want = holdout_loss(name, 1, ho), eval_loss(champ_out, ho)
        check(got is not None and want is not None and abs(got - want) < 1e-5 * want,
              f"{name}.v1 held-out loss {got} (loratune eval: {want})")
    r = requests.post(URL + "/api/deployments/nope/evaluate", headers=AUTH, timeout=30)
    check(r.status_code == 404, f"evaluate an unknown deployment: {r.status_code}")

    # a deployment without a held-out set: served and watched, never scored nor retrained
    p = lt("models", "deploy", "plain@1", env=ENV)
    check(p.returncode == 0 and "stable plain.v1" in p.stdout, f"deploy plain@1: {p.stdout} {p.stderr}")
    r = requests.post(URL + "/api/deployments/plain/evaluate", headers=AUTH, timeout=30)
    check(r.status_code == 409, f"evaluate without a held-out set: {r.status_code}")
    r = requests.post(URL + "/api/alerts", json={"alerts": [{"status": "firing", "labels": {
        "alertname": "X", "deployment": "plain"}}]}, headers=AUTH, timeout=30)
    check(r.status_code == 200 and "no held-out dataset" in r.json()["retraining"][0].get("skipped", ""),
          f"retraining without a held-out set: {r.text[:300]}")
    check(complete("plain", "Q: 1?\nA:", 1).get("model") == "plain.v1", "plain served")

    # the reference: the training file's tokens (BOS + text + EOS per record, as training
    # tokenizes text records), counted by the test with transformers' tokenizer
    counts = {}
    total = 0
    for rec in MATH[:80]:
        ids = TOK(rec["text"]).input_ids + [TOK.eos_token_id]
        total += len(ids)
        for t in ids:
            counts[t] = counts.get(t, 0) + 1
    ref = refs["good"]
    check(ref.get("tokens") == total, f"reference tokens {ref.get('tokens')} (transformers: {total})")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:BUCKETS - 1]
    check(ref.get("bucket_tokens") == [t for t, _ in top], "reference buckets differ from "
          f"the tokenizer's top tokens: {ref.get('bucket_tokens')} vs {[t for t, _ in top]}")
    check(ref.get("counts", [])[:BUCKETS - 1] == [c for _, c in top] and
          ref.get("counts", [0])[-1] == total - sum(c for _, c in top), "reference counts differ")

    # math traffic: served by version 1, no drift; the gauges equal the test's computation
    sent = {"good": [], "bad": []}
    for rec in MATH[112:120]:
        for name in ("good", "bad"):
            before = scored(name)
            o = complete(name, prompt_of(rec))
            check(o.get("model") == f"{name}.v1", f"{name} answered by {o.get('model')}")
            sent[name].append(ids_of(prompt_of(rec)))
            t1 = time.time()  # one at a time: every prompt is scored (the queue never fills)
            while scored(name) == before and time.time() - t1 < 60:
                time.sleep(0.05)
    m = metrics()
    # prompt perplexity: the base model's NLL per token, against llama.cpp's logits
    want = nll_of(sent["good"])
    got = series(m, "loratune_input_nll_per_token", model="good.v1")
    check(got is not None and abs(got - want) < 2e-3 * want, f"prompt NLL {got} (llama.cpp: {want})")
    check(series(m, "loratune_input_prompts_scored_total", model="good.v1") == 8, "scored prompts")
    want_ref = nll_of([TOK(r["text"]).input_ids for r in MATH[:32]], budget=4096)
    got = series(m, "loratune_input_nll_reference_per_token", model="good.v1")
    check(got is not None and abs(got - want_ref) < 2e-3 * want_ref and
          abs(ref.get("nll", 0) - want_ref) < 2e-3 * want_ref,
          f"reference NLL {got} / {ref.get('nll')} (llama.cpp: {want_ref})")
    print(f"math traffic: NLL {want:.4f} nats/token, reference {want_ref:.4f}", flush=True)
    psi, kl, win = drift(ref, sent["good"])
    got = series(m, "loratune_input_drift_psi", model="good.v1", deployment="good")
    check(got is not None and abs(got - psi) < 1e-6 * max(1, psi), f"PSI {got} (test: {psi})")
    got = series(m, "loratune_input_drift_kl_divergence", model="good.v1")
    check(got is not None and abs(got - kl) < 1e-6 * max(1, kl), f"KL {got} (test: {kl})")
    check(series(m, "loratune_input_drift_window_tokens", model="good.v1") == win, "window tokens")
    check(psi < 0.25, f"math traffic on a math model drifts: PSI {psi}")
    print(f"math traffic: PSI {psi:.4f} KL {kl:.4f} over {win} tokens", flush=True)
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=m, capture_output=True, text=True)
    check(p.returncode == 0 and not p.stdout.strip(), f"promtool check metrics: {p.stdout} {p.stderr}")

    # the webhook needs the token
    r = requests.post(URL + "/api/alerts", json={"alerts": []}, timeout=30)
    check(r.status_code == 401, f"webhook without a token: {r.status_code}")
    r = requests.post(URL + "/api/alerts", json={"alerts": {"status": "firing"}}, headers=AUTH, timeout=30)
    check(r.status_code == 400 and "alerts" in r.json()["error"]["message"], f"webhook, alerts not a list: {r.text[:200]}")
    r = requests.post(URL + "/api/alerts", json={"version": "4", "alerts": [
        {"status": "firing", "labels": {"alertname": "X", "deployment": "nope"}},
        {"status": "firing", "labels": {"alertname": "X"}},
        {"status": "resolved", "labels": {"alertname": "X", "deployment": "good"}},
        {"status": "firing", "labels": {"alertname": "X", "deployment": "good", "model": "good.v7"}}]},
        headers=AUTH, timeout=30)
    body = r.json() if r.status_code == 200 else {}
    check(r.status_code == 200 and [x.get("skipped", "")[:40] for x in body.get("retraining", [])] ==
          ["no deployment 'nope'", "the alert is about good.v7, which deploy"] and
          [x["why"] for x in body.get("ignored", [])] == ["no deployment label", "not firing"],
          f"webhook with alerts that start nothing: {r.status_code} {r.text[:600]}")
    r = requests.post(URL + "/api/deployments", json={"model": "good", "version": 1, "canary": 0.5},
                      headers=AUTH, timeout=30)
    check(r.status_code == 400 and "stable version already" in r.text, f"canary of the stable version: {r.text[:200]}")
    check(deployments()["good"]["retraining"] is False, "no retraining started by those")

    # new data: the newest version of support.jsonl holds SQL questions; traffic drifts to SQL
    ds_sql, sql_bytes = upload("support.jsonl", SQL[:80])
    for rec in SQL[80:120]:
        for name in ("good", "bad"):
            complete(name, prompt_of(rec), max_tokens=1)
            sent[name].append(ids_of(prompt_of(rec)))
    m = metrics()
    psi, kl, win = drift(ref, sent["good"])
    got = series(m, "loratune_input_drift_psi", model="good.v1")
    check(got is not None and abs(got - psi) < 1e-6 * max(1, psi) and psi > 0.25,
          f"drifted PSI {got} (test: {psi}; the alert needs > 0.25)")
    check(win >= 256, f"window {win}")
    print(f"SQL traffic: PSI {psi:.4f} KL {kl:.4f} over {win} tokens", flush=True)
    print(f"SQL traffic: NLL {series(m, 'loratune_input_nll_per_token', model='good.v1')} nats/token "
          f"(scored {series(m, 'loratune_input_prompts_scored_total', model='good.v1')}, "
          f"unscored {series(m, 'loratune_input_prompts_unscored_total', model='good.v1')})", flush=True)

    # Prometheus (the shipped rules, `for` shortened) and Alertmanager (the shipped routes)
    pport, aport, acport = free_port(), free_port(), free_port()
    PURL = f"http://127.0.0.1:{pport}"
    with open(os.path.join(TMP, "loratune-rules.yml"), "w") as f:
        f.write(re.sub(r"for: \d+m", "for: 1s", shipped_rules))
    prom_cfg = (shipped_prom.replace("/etc/loratune/token", TOKEN_FILE)
                .replace("scrape_interval: 15s", "scrape_interval: 1s")
                .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
                .replace("127.0.0.1:9093", f"127.0.0.1:{aport}")
                .replace("127.0.0.1:8080", f"127.0.0.1:{srv.port}")
                .replace("- loratune-rules.yml", "- " + os.path.join(TMP, "loratune-rules.yml")))
    with open(os.path.join(TMP, "prometheus.yml"), "w") as f:
        f.write(prom_cfg)
    am_cfg = (shipped_am.replace("/etc/loratune/token", TOKEN_FILE)
              .replace("group_wait: 30s", "group_wait: 1s")
              .replace("group_interval: 5m", "group_interval: 2s")
              .replace("127.0.0.1:8080", f"127.0.0.1:{srv.port}"))
    with open(os.path.join(TMP, "alertmanager.yml"), "w") as f:
        f.write(am_cfg)
    log = open(os.path.join(TMP, "tools.log"), "w")
    am = subprocess.Popen([AM, f"--config.file={TMP}/alertmanager.yml", f"--storage.path={TMP}/am",
                           f"--web.listen-address=127.0.0.1:{aport}",
                           f"--cluster.listen-address="], stdout=log, stderr=log)
    prom = subprocess.Popen([PROM, f"--config.file={TMP}/prometheus.yml",
                             f"--storage.tsdb.path={TMP}/tsdb",
                             f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=log)

    # the loop runs by itself: alert -> webhook -> retrain jobs -> gate -> promotion
    t0 = time.time()
    deps = {}
    fired, fired_all = set(), set()
    while time.time() - t0 < 300:
        try:
            a = requests.get(PURL + "/api/v1/alerts", timeout=10).json()
            for x in a["data"]["alerts"]:
                if x["labels"].get("alertname") == "LoratuneInputDrift":
                    fired.add(x["labels"].get("deployment"))
                fired_all.add((x["labels"].get("alertname"), x["labels"].get("model")))
        except (requests.RequestException, ValueError, KeyError):
            pass
        deps = deployments()
        if (deps["good"]["stable"]["version"] == 2 and deps["bad"]["retrains"]["rejected"] >= 1
                and not deps["good"]["retraining"] and not deps["bad"]["retraining"]):
            break
        time.sleep(1)
    print(f"loop done in {time.time() - t0:.1f} s; alerts seen: {sorted(fired_all)}", flush=True)
    check(fired == {"good", "bad"}, f"Prometheus alerts fired for {fired}")
    check(deps.get("good", {}).get("stable", {}).get("version") == 2 and
          deps["good"]["retrains"] == {"promoted": 1, "rejected": 0, "failed": 0},
          f"good after the loop: {deps.get('good')}")
    check(deps.get("bad", {}).get("stable", {}).get("version") == 1 and
          deps["bad"]["retrains"] == {"promoted": 0, "rejected": 1, "failed": 0},
          f"bad after the loop: {deps.get('bad')}")

    # no more alerts from here: the traffic below (canary, hot swap) would drift by itself
    for proc in (prom, am):
        proc.terminate()
        proc.wait(30)
    prom = am = None

    # served: good by version 2, bad still by version 1
    jobs = requests.get(URL + "/api/jobs", headers=AUTH, timeout=30).json()["jobs"]
    retrain_jobs = {j["retrain"]["deployment"]: j for j in jobs if "retrain" in j}
    check(set(retrain_jobs) == {"good", "bad"}, f"retrain jobs: {list(retrain_jobs)}")
    for name, j in retrain_jobs.items():
        check(j["status"] == "done" and j["dataset"] == ds_sql and j["options"] == champ["options"],
              f"retrain job of {name}: dataset {j['dataset']} (newest {ds_sql}) options {j['options']}")
    o = complete("good", "table: 1-10015132-11\ncolumns: Player, No.\nQ: Who is number 5?\nA:", 8)
    check(o.get("model") == "good.v2", f"good answered by {o.get('model')}")
    p = lt("generate", "--model", MODEL_PATH, "--adapter",
           os.path.join(WORK, "jobs", retrain_jobs["good"]["id"], "out"), "--temp", "0",
           "--max-tokens", "8", "--prompt",
           "table: 1-10015132-11\ncolumns: Player, No.\nQ: Who is number 5?\nA:")
    check(p.returncode == 0 and o.get("choices") and p.stdout.endswith(o["choices"][0]["text"] + "\n")
          if p.returncode == 0 and o.get("choices") else False,
          f"good.v2's text {o.get('choices', [{}])[0].get('text')!r} vs generate {p.stdout[-200:]!r} {p.stderr[-300:]}")
    o = complete("bad", "Q: 2 + 2?\nA:")
    check(o.get("model") == "bad.v1", f"bad answered by {o.get('model')}")
    # the new version is scored on the held-out set too; a new upload of the held-out set (same
    # name) is what the next evaluation uses
    got = holdout_loss("good", 2, ho_sql)
    want = eval_loss(os.path.join(WORK, "jobs", retrain_jobs["good"]["id"], "out"), ho_sql)
    check(got is not None and want is not None and abs(got - want) < 1e-5 * want,
          f"good.v2 held-out loss {got} (loratune eval: {want})")
    ho_sql2, _ = upload("holdout-sql.jsonl", SQL[:16])
    n0 = deployments()["good"]["evaluations"]
    r = requests.post(URL + "/api/deployments/good/evaluate", headers=AUTH, timeout=30)
    check(r.status_code == 202 and r.json()["evaluations"] == n0, f"evaluate: {r.status_code} {r.text[:200]}")
    got = holdout_loss("good", 2, ho_sql2)
    want = eval_loss(os.path.join(WORK, "jobs", retrain_jobs["good"]["id"], "out"), ho_sql2)
    check(got is not None and want is not None and abs(got - want) < 1e-5 * want,
          f"good.v2 on the new held-out upload: {got} (loratune eval: {want})")
    m = metrics()
    hl = series(m, "loratune_deployment_holdout_loss", deployment="good", role="stable", model="good.v2")
    check(hl is not None and got is not None and abs(hl - got) < 1e-8 * got, f"holdout loss on /metrics: {hl}")

    # lineage in the store
    db = sqlite3.connect(os.path.join(store, "store.db"))
    db.row_factory = sqlite3.Row

    def tags(run_id):
        return {r["key"]: r["value"] for r in db.execute("SELECT key, value FROM tags WHERE run_id=?", (run_id,))}

    def metric(run_id, key):
        r = db.execute("SELECT value FROM metrics WHERE run_id=? AND key=?", (run_id, key)).fetchone()
        return r["value"] if r else None

    cols = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    kind_col = "kind" if "kind" in cols else None
    runs = {r["id"]: dict(r) for r in db.execute("SELECT * FROM runs")}
    by_kind = {}
    for r in runs.values():
        by_kind.setdefault(r[kind_col], []).append(r)
    check(len(by_kind.get("retrain", [])) == 2 and len(by_kind.get("eval-gate", [])) == 2,
          f"runs by kind: { {k: len(v) for k, v in by_kind.items()} }")
    for rr in by_kind.get("retrain", []):
        t = tags(rr["id"])
        name = t.get("deployment")
        j = retrain_jobs.get(name, {})
        check(t.get("alert") == "LoratuneInputDrift" and t.get("job") == j.get("id") and
              t.get("outcome") == ("promoted" if name == "good" else "rejected") and
              t.get("dataset") == ds_sql and t.get("champion_version") == "1",
              f"retrain run tags {t}")
        train = runs.get(j.get("run_id"), {})
        check(tags(train.get("id", -1)).get("parent_run") == str(rr["id"]),
              f"train run {j.get('run_id')} parent_run")
        md5 = hashlib.md5(sql_bytes).hexdigest()
        check(train.get("data_md5") == md5, f"train run data md5 {train.get('data_md5')} (hashlib {md5})")
        gates = [g for g in by_kind.get("eval-gate", []) if tags(g["id"]).get("parent_run") == str(rr["id"])]
        check(len(gates) == 1, f"gate of {name}")
        if gates:
            g = gates[0]
            lc, lch = metric(g["id"], "champion_val_loss"), metric(g["id"], "challenger_val_loss")
            print(f"gate of {name}: champion {lc:.4f} challenger {lch:.4f}", flush=True)
            check(lc is not None and lch is not None and (lch < lc) == (name == "good"),
                  f"{name} gate: champion {lc} challenger {lch}")
            ho = ho_sql_bytes if name == "good" else ho_math_bytes
            check(g["data_md5"] == hashlib.md5(ho).hexdigest(), f"gate data md5 {g['data_md5']}")
            # the gate's numbers are `loratune eval`'s
            hid = ho_sql if name == "good" else ho_math
            hpath = os.path.join(WORK, "datasets", hid, "data.jsonl")
            for adapter, want in ((os.path.join(WORK, "jobs", champ["id"], "out"), lc),
                                  (os.path.join(WORK, "jobs", j["id"], "out"), lch)):
                p = lt("eval", "--model", MODEL_PATH, "--adapter", adapter, "--data", hpath,
                       "--batch-size", "4", "--max-seq-len", "64", "--seed", "7", "--json")
                ev = json.loads(p.stdout) if p.returncode == 0 else {}
                check(ev.get("loss") is not None and abs(ev["loss"] - want) < 1e-5 * abs(want),
                      f"{name} gate loss {want} vs loratune eval {ev.get('loss')} {p.stderr[-300:]}")
    mv = db.execute("SELECT * FROM model_versions WHERE version=2").fetchall()
    check(len(mv) == 1 and mv[0]["run_id"] == retrain_jobs["good"]["run_id"],
          f"model versions 2: {[dict(x) for x in mv]}")
    deploys = [r for r in by_kind.get("deploy", []) if tags(r["id"]).get("model_version") == "2"]
    check(len(deploys) == 1, f"deploy runs of version 2: {len(deploys)}")
    if deploys:
        t = tags(deploys[0]["id"])
        good_rr = [r for r in by_kind["retrain"] if tags(r["id"]).get("deployment") == "good"]
        check(t.get("parent_run") == str(good_rr[0]["id"]) and t.get("reason") == "retrain" and
              t.get("source_run") == str(retrain_jobs["good"]["run_id"]) and
              t.get("previous_version") == "1" and deploys[0]["data_md5"] == hashlib.md5(sql_bytes).hexdigest(),
              f"deploy run of good v2: {t}")
    stage = db.execute("SELECT stage FROM model_versions mv JOIN models m ON m.id = mv.model_id "
                       "WHERE m.name='good' ORDER BY version").fetchall() if "model_id" in \
        [r[1] for r in db.execute("PRAGMA table_info(model_versions)")] else None
    if stage is not None:
        check([s[0] for s in stage] == ["archived", "production"], f"good's stages {[s[0] for s in stage]}")

    # a canary share, then rollbacks
    p = lt("models", "deploy", "good@1", "--canary", "0.25", "--json", env=ENV)
    check(p.returncode == 0, f"canary deploy: {p.stderr}")
    served = [complete("good", "Q: 1 + 1?\nA:", 1).get("model") for _ in range(8)]
    check(served.count("good.v1") == 2 and served.count("good.v2") == 6, f"canary split {served}")
    p = lt("models", "rollback", "good", env=ENV)
    check(p.returncode == 0 and "stable good.v2" in p.stdout and "canary" not in p.stdout,
          f"rollback of the canary: {p.stdout} {p.stderr}")
    check(complete("good", "Q: 1?\nA:", 1).get("model") == "good.v2", "after the canary's rollback")
    p = lt("models", "rollback", "good", env=ENV)
    check(p.returncode == 0 and "stable good.v1" in p.stdout, f"rollback to v1: {p.stdout} {p.stderr}")
    check(complete("good", "Q: 1?\nA:", 1).get("model") == "good.v1", "after the rollback")
    p = lt("models", "rollback", "good", env=ENV)
    check(p.returncode == 1 and "409" in p.stderr, f"nothing left to roll back: {p.stdout} {p.stderr}")

    # a hot swap under traffic: four clients keep asking for `good` (streamed and not) while
    # version 2 replaces version 1; every request succeeds, served by one version or the other
    import threading
    stop, answers, errors = threading.Event(), [], []

    def client(stream):
        while not stop.is_set():
            try:
                r = requests.post(URL + "/v1/completions", json={"model": "good", "prompt": "Q: 3 + 4?\nA:",
                                  "max_tokens": 16, "temperature": 0, "stream": stream},
                                  headers=AUTH, timeout=60, stream=stream)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    continue
                if stream:
                    chunks = [json.loads(x[6:]) for x in r.iter_lines(decode_unicode=True)
                              if x and x.startswith("data: {")]
                    if not chunks or chunks[-1]["choices"][0].get("finish_reason") is None:
                        errors.append(f"stream ended early: {chunks[-1:]}")
                    answers.append(chunks[0]["model"] if chunks else None)
                else:
                    answers.append(r.json()["model"])
            except requests.RequestException as e:
                errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    p = lt("models", "deploy", "good@2", env=ENV)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    check(p.returncode == 0 and not errors, f"hot swap: {p.stderr} errors {errors[:3]}")
    check("good.v1" in answers and answers[-1] == "good.v2" and set(answers) == {"good.v1", "good.v2"},
          f"hot swap: {len(answers)} answers, by {sorted(set(map(str, answers)))}, last {answers[-1:]}")
    print(f"hot swap under traffic: {len(answers)} requests, {answers.count('good.v1')} by v1, "
          f"{answers.count('good.v2')} by v2, no errors", flush=True)

    # a restart: the deployments come back as they were (stable, canary and share, history)
    p = lt("models", "deploy", "good@1", "--canary", "0.25", env=ENV)
    check(p.returncode == 0, f"canary before the restart: {p.stderr}")
    before = deployments()
    code, _, err = srv.stop()
    check(code == 0, f"server exit code {code}: {err[-1500:]}")
    srv = servekit.Server(os.path.join(TMP, "work"), "--model", MODEL_PATH, "--token", TOKEN,
                          "--slots", "2", "--job-threads", "1", "--threads", "1")
    URL = srv.url
    ENV["LORATUNE_SERVER"] = URL
    t0 = time.time()
    after = {}
    while time.time() - t0 < 60:
        after = deployments()
        if len(after) == 3 and after["good"].get("canary"):
            break
        time.sleep(0.2)
    keys = ("stable", "canary", "canary_share", "previous", "holdout")
    strip = lambda d: {k: ({kk: vv for kk, vv in d[k].items() if kk not in ("drift", "holdout_loss")}
                           if isinstance(d[k], dict) else d[k])
                       for k in keys}
    check({n: strip(d) for n, d in after.items()} == {n: strip(d) for n, d in before.items()},
          f"deployments after the restart: {after} (before: {before})")
    served = [complete("good", "Q: 1 + 1?\nA:", 1).get("model") for _ in range(4)]
    check(served == ["good.v2", "good.v2", "good.v2", "good.v1"], f"after the restart: {served}")
finally:
    for proc in (prom, am):
        if proc:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    code, out, err = srv.stop()
    check(code == 0, f"server exit code {code}: {err[-1500:]}")

sys.exit(ltcheck.finish())
