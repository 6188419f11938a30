"""test_serve_data.py - the Data side of `loratune serve`: the dataset preview with the model's
chat template and token statistics, and the DVC versioning of uploads, against outside
references, through the API and on the Data page in headless Chromium.

- preview (POST /api/datasets/{id}/preview) of a chat dataset (tests/data/datasets/chat.jsonl
  and 40 LLaMA-Factory alpaca records as user / assistant turns) with a model folder holding
  the fixture SmolLM tokenizer.json and SmolLM2's chat template: every record's token count
  equals len(apply_chat_template(messages, tokenize=True, return_dict=False)) of transformers' tokenizer on the
  same files; the statistics over all records (min, median and p95 by nearest rank, i.e. numpy's
  percentile method "inverted_cdf", max, mean, how many exceed max-seq-len, the tokens cut) equal
  numpy's on those counts; the splits add up; a rendered record's text equals transformers'
  decode of the template's tokens (cut at max-seq-len) and its loss runs equal the decode of the
  assistant turn's tokens [len(template(m[:i], generation prompt)), len(template(m[:i+1])));
  the same counts through the real SmolLM2 GGUF (loratune's GGUF tokenizer and template) when it
  is present; a text dataset through a sentencepiece tokenizer (stories260K-hf): counts as
  transformers' LlamaTokenizer with mlx-lm's EOS rule, the segments joined equal its decode;
  answers conform to the document; bad input (no model, unknown model / dataset /
  key, records out of range) is 400 / 404 naming the field; a broken file reports its line;
- versioning: the upload's version md5 is hashlib's md5 of the file, WORK/datasets/ID/data.jsonl.dvc
  is what `dvc add` writes, the real `dvc` (PyPI) finds the work folder up to date (`dvc status`)
  and restores a deleted upload from the cache byte for byte (`dvc checkout`); a second upload of
  the same name is version 2 (previous = the first, changed), a third with the same content as
  the second says unchanged; a train job records the data version: its data_version is the
  dataset's md5 and its run in the tracking store (sqlite3) holds that data_md5, versioned by dvc;
- the Data page: Preview with the model chosen shows the statistics table with the API's numbers,
  the suggested max-seq-len, and the records with the trained tokens marked (the loss runs' text);
  the datasets list shows each upload's version; screenshot data-preview.png (and phone);
- registry: the best trial of a tune job (2 trials) and of a compare job (lora, dora; 1 trial
  each) registered with POST /api/registry {job, name}: the version's run is, in the store
  (sqlite3), the hpo-trial run tagged with that trial and the job's study folder, a child run,
  with the upload's data md5.
"""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import numpy as np
    import requests
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

SPEC = servekit.load_spec()
TMP = tempfile.mkdtemp(prefix="lt_serve_data_")
GGUF = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TEMPLATE = os.path.join(ltcheck.SOURCE_DIR, "tests", "data", "chat_templates", "smollm2-instruct.jinja")
DVC = os.path.join(os.path.dirname(sys.executable), "dvc")
SEQ = 128
TRAIN_JOB = (None, None)  # (id, data md5) of the train job api_checks ran


def tokenizer_folder(d):
    """A Hugging Face tokenizer folder: the fixture SmolLM tokenizer.json (its fine-tuning
    truncation / padding removed) and SmolLM2-Instruct's chat template, bos and eos."""
    os.makedirs(d)
    tj = json.load(open(os.path.join(ltcheck.FIXTURES, "tokenizers", "smollm", "tokenizer.json")))
    tj["truncation"] = None
    tj["padding"] = None
    json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w"))
    tpl, bos, eos = open(TEMPLATE).read(), "<|im_start|>", "<|im_end|>"
    json.dump({"chat_template": tpl, "bos_token": bos, "eos_token": eos,
               "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                   bos_token=bos, eos_token=eos, chat_template=tpl)


def chat_records():
    recs = [json.loads(line) for line in open(os.path.join(ltcheck.SOURCE_DIR, "tests", "data",
                                                           "datasets", "chat.jsonl")) if line.strip()]
    recs = [r for r in recs if "tools" not in r]
    demo = json.load(open(os.path.join(ltcheck.FIXTURES, "datasets", "llamafactory-demo",
                                       "alpaca_en_demo.json")))
    for x in demo[:40]:
        u = x["instruction"] + ("\n\n" + x["input"] if x.get("input") else "")
        recs.append({"messages": [{"role": "user", "content": u},
                                  {"role": "assistant", "content": x["output"]}]})
    return recs


def upload(u, name, data):
    r = requests.post(f"{u}/api/datasets?name={name}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
    check(r.status_code == 201, f"upload {name}: {r.status_code} {r.text[:300]}")
    conforms(SPEC, "Dataset", r.json(), "upload reply")
    return r.json()


def preview(u, ds, body, status=200):
    r = requests.post(f"{u}/api/datasets/{ds}/preview", json=body)
    check(r.status_code == status, f"preview {body}: {r.status_code}, expected {status}: {r.text[:300]}")
    return r.json()


def nearest_rank(v, q):
    return int(np.percentile(np.array(v), q, method="inverted_cdf"))


def check_preview(p, recs, hf, what):
    conforms(SPEC, "Preview", p, what)
    check(p.get("ok") is True, f"{what}: not ok: {p.get('errors')}")
    if not p.get("ok"):
        return
    ids = [hf.apply_chat_template(r["messages"], tokenize=True, return_dict=False) for r in recs]
    n = [len(x) for x in ids]
    a = p["stats"]["all"]
    want = {"examples": len(n), "min": min(n), "median": nearest_rank(n, 50), "p95": nearest_rank(n, 95),
            "max": max(n), "over_max_seq_len": sum(x > SEQ for x in n),
            "tokens_cut": sum(max(0, x - SEQ) for x in n), "tokens": sum(n),
            "tokens_kept": sum(min(x, SEQ) for x in n)}
    for k, v in want.items():
        check(a[k] == v, f"{what}: all.{k} = {a[k]}, transformers {v}")
    check(abs(a["mean"] - sum(n) / len(n)) < 1e-9, f"{what}: mean {a['mean']} vs {sum(n) / len(n)}")
    check(want["over_max_seq_len"] >= 3 and want["over_max_seq_len"] < len(n),
          f"{what}: the data should have some records over {SEQ} tokens: {want['over_max_seq_len']}")
    splits = [s for s in p["stats"] if s != "all"]
    check(sorted(splits) == ["train", "valid"], f"{what}: splits {splits}")
    check(sum(p["stats"][s]["examples"] for s in splits) == len(n), f"{what}: split examples add up")
    check(sum(p["stats"][s]["over_max_seq_len"] for s in splits) == want["over_max_seq_len"],
          f"{what}: split over counts add up")
    check(p["max_seq_len"] == SEQ, f"{what}: max_seq_len {p['max_seq_len']}")
    sug = p["suggested_max_seq_len"]
    whole, most = -(-max(n) // 64) * 64, -(-want["p95"] // 64) * 64
    check(sug == (most if whole > 2 * most else whole), f"{what}: suggested {sug} (max {max(n)}, p95 {want['p95']})")
    check(p["template"] and p["template"]["name"] == "smollm2-instruct", f"{what}: template {p['template']}")
    check(len(p["records"]) == 5, f"{what}: {len(p['records'])} records rendered")
    for r in p["records"]:
        i = r["line"] - 1
        check(r["tokens"] == n[i], f"{what}: line {r['line']}: {r['tokens']} tokens, transformers {n[i]}")
        check(r["truncated"] == (n[i] > SEQ) and r["tokens_kept"] == min(n[i], SEQ),
              f"{what}: line {r['line']} truncation")
        text = "".join(s["text"] for s in r["segments"])
        ref = hf.decode(ids[i][:SEQ], skip_special_tokens=False)
        check(text == ref, f"{what}: line {r['line']} rendered:\n{text!r}\n transformers:\n{ref!r}")
        msgs = recs[i]["messages"]
        if [m["role"] for m in msgs].count("assistant") == 1 and msgs[-1]["role"] == "assistant":
            b = len(hf.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=False))
            e = min(len(ids[i]), SEQ)
            loss = "".join(s["text"] for s in r["segments"] if s["loss"])
            ref = hf.decode(ids[i][b:e], skip_special_tokens=False) if b < e else ""
            check(loss == ref, f"{what}: line {r['line']} trained text {loss!r}, transformers {ref!r}")
            check(r["loss_tokens"] == max(0, e - b), f"{what}: line {r['line']} loss tokens {r['loss_tokens']}")
    return n


def dvc(work, *args):
    return subprocess.run([DVC, *args], cwd=work, capture_output=True, text=True, timeout=120)


def api_checks(u, work, models):
    hf = tokenizer_folder(os.path.join(models, "smol-hf"))
    recs = chat_records()
    data = "".join(json.dumps(r) + "\n" for r in recs)
    ds = upload(u, "chat.jsonl", data)
    dsid = ds["id"]

    # ---- the preview against transformers
    p = preview(u, dsid, {"model": "smol-hf", "max-seq-len": SEQ, "records": 5})
    n = check_preview(p, recs, hf, "preview smol-hf")
    check(p["suggested_rank"] is None, f"a tokenizer-only folder suggests no rank: {p['suggested_rank']}")
    if os.path.exists(GGUF):
        g = preview(u, dsid, {"model": "smol.gguf", "max-seq-len": SEQ, "records": 5})
        # the rank: what `loratune data check --model` suggests for the same file and split
        f = os.path.join(TMP, "chat-check.jsonl")
        open(f, "w").write(data)
        r = ltcheck.run("data", "check", f, "--model", GGUF, "--max-seq-len", str(SEQ), "--json")
        want = json.loads(r.stdout).get("rank_suggestion") if r.returncode == 0 else None
        got = g.get("suggested_rank") or {}
        check(want and all(got.get(k) == want[k] for k in ("rank", "cap", "params_per_rank", "loss_tokens", "reason")),
              f"suggested rank {got} vs data check's {want}")
        check(g["stats"]["all"] == p["stats"]["all"], f"GGUF stats {g['stats']['all']} vs HF folder {p['stats']['all']}")
        check([r["tokens"] for r in g["records"]] == n[:5], "GGUF record token counts")
    # a sentencepiece tokenizer (stories260K-hf, text records): the mlx-lm TextDataset rule
    # (encode with BOS, EOS appended) through transformers' LlamaTokenizer
    text = upload(u, "text.jsonl", "".join(servekit.wikisql_lines(30)))
    tp = preview(u, text["id"], {"model": "stories260K-hf", "max-seq-len": 48, "records": 4,
                                 "valid-fraction": 0})
    spm = AutoTokenizer.from_pretrained(os.path.join(models, "stories260K-hf"))
    recs_t = [json.loads(x)["text"] for x in servekit.wikisql_lines(30)]
    ids_t = [spm(t)["input_ids"] for t in recs_t]
    ids_t = [x if x[-1] == spm.eos_token_id else x + [spm.eos_token_id] for x in ids_t]
    nt = [len(x) for x in ids_t]
    at = tp.get("stats", {}).get("all", {})
    check(tp.get("ok") and at.get("max") == max(nt) and at.get("median") == nearest_rank(nt, 50)
          and at.get("over_max_seq_len") == sum(x > 48 for x in nt), f"sentencepiece stats {at} vs {sorted(nt)}")
    for r in tp.get("records", []):
        i = r["line"] - 1
        joined = "".join(g["text"] for g in r["segments"])
        ref = spm.decode(ids_t[i][:48], skip_special_tokens=False)
        check(r["tokens"] == nt[i] and joined == ref,
              f"sentencepiece line {r['line']}: {r['tokens']} vs {nt[i]} tokens; text\n{joined!r}\n{ref!r}")
    # the split seed and fraction go through: no validation split
    p0 = preview(u, dsid, {"model": "smol-hf", "max-seq-len": SEQ, "records": 0, "valid-fraction": 0})
    check(list(p0["stats"]) == ["train", "all"] and p0["records"] == []
          and p0["stats"]["train"] == p0["stats"]["all"], f"valid-fraction 0: {list(p0['stats'])}")
    # bad input
    for body, status, word in (({}, 400, "model"), ({"model": "nope"}, 404, "model"),
                               ({"model": "../x"}, 400, "model"), ({"model": "smol-hf", "records": 51}, 400, "records"),
                               ({"model": "smol-hf", "records": "3"}, 400, "records"),
                               ({"model": "smol-hf", "max-seq-len": 1}, 400, "max-seq-len"),
                               ({"model": "smol-hf", "colour": 1}, 400, "colour")):
        e = preview(u, dsid, body, status)
        check(word in e.get("error", {}).get("message", ""), f"{body}: message {e} names {word}")
        conforms(SPEC, "Error", e, f"preview {body}")
    e = preview(u, "ds_0123456789abcdef", {"model": "smol-hf"}, 404)
    check(e["error"]["code"] == "not_found", f"unknown dataset: {e}")
    r = requests.get(f"{u}/api/datasets/{dsid}/preview")
    check(r.status_code == 405 and r.headers.get("Allow") == "POST", f"GET preview: {r.status_code}")
    lines = data.splitlines(keepends=True)
    broken = upload(u, "broken.jsonl", "".join(lines[:3]) + '{"messages": [\n' + "".join(lines[3:6]))
    b = preview(u, broken["id"], {"model": "smol-hf"})
    check(b["ok"] is False and b["errors"][0]["line"] == 4 and "broken.jsonl:4" in b["errors"][0]["message"],
          f"broken file: {b}")
    conforms(SPEC, "Preview", b, "broken preview")

    # ---- versioning, as dvc add
    raw = data.encode()
    v = ds["version"]
    check(v["md5"] == hashlib.md5(raw).hexdigest(), f"version md5 {v['md5']} vs hashlib")
    check(v["number"] == 1 and v["previous"] is None and v["changed"] is True, f"first version: {v}")
    dvcf = os.path.join(work, v["dvc_file"])
    check(v["dvc_file"] == f"datasets/{dsid}/data.jsonl.dvc" and os.path.exists(dvcf), f"dvc file {v['dvc_file']}")
    want = f"outs:\n- md5: {v['md5']}\n  size: {len(raw)}\n  hash: md5\n  path: data.jsonl\n"
    check(open(dvcf).read() == want, f".dvc file:\n{open(dvcf).read()}\nexpected\n{want}")
    st = dvc(work, "status", "--json")
    check(st.returncode == 0 and json.loads(st.stdout or "null") == {}, f"dvc status: {st.stdout} {st.stderr[-500:]}")
    data_file = os.path.join(work, "datasets", dsid, "data.jsonl")
    os.unlink(data_file)
    co = dvc(work, "checkout", v["dvc_file"])
    check(co.returncode == 0 and os.path.exists(data_file) and open(data_file, "rb").read() == raw,
          f"dvc checkout: {co.returncode} {co.stderr[-500:]}")
    ds2 = upload(u, "chat.jsonl", "".join(lines[:20]))
    ds3 = upload(u, "chat.jsonl", "".join(lines[:20]))
    v2, v3 = ds2["version"], ds3["version"]
    check(v2["number"] == 2 and v2["previous"] == dsid and v2["changed"] is True, f"second upload: {v2}")
    check(v3["number"] == 3 and v3["previous"] == ds2["id"] and v3["changed"] is False and v3["md5"] == v2["md5"],
          f"third upload (same content): {v3}")
    listed = {d["id"]: d for d in requests.get(f"{u}/api/datasets").json()["datasets"]}
    check(listed[dsid]["version"]["number"] == 1 and listed[ds3["id"]]["version"]["number"] == 3,
          "the list numbers the versions")
    g = requests.get(f"{u}/api/datasets/{ds2['id']}").json()
    check(g["version"] == v2, f"GET dataset version {g['version']} vs upload's {v2}")
    st = dvc(work, "status", "--json")
    check(st.returncode == 0 and json.loads(st.stdout or "null") == {}, f"dvc status (4 uploads): {st.stdout}")

    # ---- a job records the data version it trains on
    sql = upload(u, "sql.jsonl", "".join(servekit.wikisql_lines(40)))
    r = requests.post(f"{u}/api/jobs", json={"dataset": sql["id"], "model": "stories260K.gguf", "options": {
        "iters": 2, "batch-size": 2, "max-seq-len": 64, "lora-rank": 4, "threads": 1, "eval-every": 0}})
    check(r.status_code == 201, f"job: {r.text[:300]}")
    j = r.json()
    conforms(SPEC, "Job", j, "job")
    check(j["data_version"]["md5"] == sql["version"]["md5"] and j["data_version"]["dataset"] == sql["id"],
          f"job data_version {j.get('data_version')} vs dataset {sql['version']}")
    t0 = time.time()
    while time.time() - t0 < 120 and j["status"] in ("queued", "running"):
        time.sleep(0.2)
        j = requests.get(f"{u}/api/jobs/{j['id']}").json()
    check(j["status"] == "done", f"job: {j['status']} {j.get('error')}")
    db = sqlite3.connect(os.path.join(work, "store", "store.db"))
    try:
        md5, = db.execute("SELECT data_md5 FROM runs WHERE id = ?", (j["run_id"],)).fetchone()
        by = db.execute("SELECT value FROM tags WHERE run_id = ? AND key = 'data.versioned_by'",
                        (j["run_id"],)).fetchone()
    finally:
        db.close()
    check(md5 == sql["version"]["md5"], f"the run's data_md5 {md5} vs the upload's {sql['version']['md5']}")
    check(by and by[0] == "dvc", f"the run's data.versioned_by: {by}")
    check(not os.path.exists(os.path.join(work, "store", "cache", "files", "md5", md5[:2], md5[2:])),
          "the run did not copy the upload into the store's cache (dvc versioned it)")
    global TRAIN_JOB
    TRAIN_JOB = (j["id"], sql["version"]["md5"])
    tune_id = register_best_trials(u, work, sql)
    return dsid, p, tune_id


def hpo_job(u, ds, kind, search):
    r = requests.post(f"{u}/api/jobs", json={"kind": kind, "dataset": ds, "model": "stories260K.gguf", "options": {
        "iters": 3, "batch-size": 2, "max-seq-len": 64, "threads": 1, "eval-batches": 2}, "search": search})
    check(r.status_code == 201, f"{kind} job: {r.text[:300]}")
    j = r.json()
    t0 = time.time()
    while time.time() - t0 < 300 and j["status"] in ("queued", "running"):
        time.sleep(0.3)
        j = requests.get(f"{u}/api/jobs/{j['id']}").json()
    check(j["status"] == "done" and j.get("best"), f"{kind} job: {j['status']} {j.get('error')} best {j.get('best')}")
    return j


def register_best_trials(u, work, sql):
    """A tune job's and a compare job's best trial registered: the version's run is the trial's
    run in the store (its tags: trial N of the job's study, parent the job's run)."""
    space = {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}}
    tune = hpo_job(u, sql["id"], "tune", {"trials": 2, "space": space, "prune": False})
    comp = hpo_job(u, sql["id"], "compare", {"trials": 1, "methods": ["lora", "dora"], "space": space, "prune": False})
    db = sqlite3.connect(os.path.join(work, "store", "store.db"))
    try:
        for j, name in ((tune, "tuned"), (comp, "compared")):
            r = requests.post(f"{u}/api/registry", json={"job": j["id"], "name": name})
            check(r.status_code == 201, f"register {j['kind']} job: {r.status_code} {r.text[:300]}")
            if r.status_code != 201:
                continue
            conforms(SPEC, "RegisteredModel", r.json(), f"register {j['kind']}")
            ver = r.json()["versions"][-1]
            run = ver["run_id"]
            tags = dict(db.execute("SELECT key, value FROM tags WHERE run_id = ?", (run,)).fetchall())
            kind, md5 = db.execute("SELECT kind, data_md5 FROM runs WHERE id = ?", (run,)).fetchone()
            best = j["best"]
            study = os.path.join(work, "jobs", j["id"], "out", *([best["method"]] if "method" in best else []))
            check(kind == "hpo-trial" and tags.get("trial") == str(best["trial"])
                  and os.path.realpath(tags.get("study", "")) == os.path.realpath(study),
                  f"{j['kind']}: registered run {run} ({kind}, tags {tags}) is not best trial {best}")
            check(tags.get("parent_run") is not None and run != j.get("run_id"), f"{j['kind']}: a child run: {tags}")
            want_dir = f"WORK/jobs/{j['id']}/out/{best['dir']}"
            check((ver.get("adapter_path") or "").rstrip("/").startswith(want_dir),
                  f"{j['kind']}: version adapter_path {ver.get('adapter_path')} is not the best trial's folder {want_dir}")
            check(md5 == sql["version"]["md5"] and ver["data"]["md5"] == md5,
                  f"{j['kind']}: version data md5 {ver['data']} vs the upload's {sql['version']['md5']}")
            if "method" in best:  # the other method's trial is a run too, and not the one chosen
                others = db.execute("SELECT r.id FROM runs r JOIN tags t ON t.run_id = r.id WHERE r.kind = 'hpo-trial'"
                                    " AND t.key = 'study' AND t.value LIKE ?", (f"%{j['id']}%",)).fetchall()
                check(len(others) == 2 and run in [o[0] for o in others], f"compare: trial runs {others}")
    finally:
        db.close()
    r = requests.post(f"{u}/api/registry", json={"job": tune["id"], "name": "bad name"})
    check(r.status_code == 400, f"bad name: {r.status_code}")
    return tune["id"]


def browser_checks(u, dsid, p, tune_id):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    shots = servekit.screenshots_dir(TMP)
    d = servekit.browser()
    try:
        d.get(u + "/data")
        servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, f"button.preview-btn[data-dataset='{dsid}']"),
                          "the datasets list")
        btn = d.find_element(By.CSS_SELECTOR, f"button.preview-btn[data-dataset='{dsid}']")
        row = btn.find_element(By.XPATH, "./ancestor::tr")
        check("v1" in row.find_element(By.CSS_SELECTOR, ".version").text, "the row shows version 1")
        btn.click()  # no model chosen: said where it happens
        servekit.wait_for(d, lambda: "Choose a model" in row.text, "the missing-model message")
        Select(row.find_element(By.TAG_NAME, "select")).select_by_value("smol-hf")
        row.find_element(By.CSS_SELECTOR, "input.seq").send_keys(str(SEQ))
        btn.click()
        servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, "#token-stats tr[data-split='all']"),
                          "the statistics table")
        cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#token-stats tr[data-split='all'] td")]
        a = p["stats"]["all"]
        want = [str(a[k]) for k in ("examples", "min", "median", "p95", "max")]
        check(cells[:5] == want, f"page statistics {cells[:5]} vs the API's {want}")
        check(cells[6] == str(a["over_max_seq_len"]) and cells[7] == str(a["tokens_cut"]),
              f"page over / cut {cells[6:8]} vs {a['over_max_seq_len']}, {a['tokens_cut']}")
        check(d.find_element(By.ID, "suggested").text.startswith(f"Suggested max-seq-len: {p['suggested_max_seq_len']}"),
              "suggested max-seq-len shown")
        recs = d.find_elements(By.CSS_SELECTOR, "#ds-preview .record")
        check(len(recs) == 5, f"{len(recs)} records shown")
        first = p["records"][1]
        shown = d.find_element(By.CSS_SELECTOR, f"#ds-preview .record[data-line='{first['line']}']")
        marked = d.execute_script("return [...arguments[0].querySelectorAll('pre .loss')].map((e) => e.textContent).join('')", shown)
        check(marked == "".join(s["text"] for s in first["segments"] if s["loss"]) and marked,
              f"the marked text {marked!r}")
        servekit.console_errors(d, "Data page")
        d.save_screenshot(os.path.join(shots, "data-preview.png"))
        # the job view shows the data version it trained on
        jid, md5 = TRAIN_JOB
        d.get(f"{u}/train?job={jid}")
        jd = servekit.wait_for(d, lambda: d.find_elements(By.ID, "job-data"), "the job's data version")
        check(jd and f"v1 · {md5[:8]}" in jd[0].text, f"job view data version: {jd[0].text if jd else None}")
        # Models: the tune job's best trial registered from its row
        d.get(u + "/models")
        row = servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{tune_id}'] input.reg-name"),
                                "the tune job's row on the Models page")
        if row:
            row[0].send_keys("tuned-web")
            d.find_element(By.CSS_SELECTOR, f"tr[data-job='{tune_id}'] button.register").click()
            servekit.wait_for(d, lambda: "Registered as tuned-web version 1" in
                              d.find_element(By.CSS_SELECTOR, f"tr[data-job='{tune_id}']").text, "the registration")
            reg = {m["name"]: m for m in requests.get(f"{u}/api/registry").json()["models"]}
            check("tuned-web" in reg and reg["tuned-web"]["versions"][0]["run_id"] == reg["tuned"]["versions"][0]["run_id"],
                  "the page registered the tune job's best trial's run (as the API did)")
            servekit.console_errors(d, "Models page")
        d.set_window_size(390, 844)  # the preview on a phone
        d.get(u + "/data")
        servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, f"button.preview-btn[data-dataset='{dsid}']"),
                          "the Data page")
        btn = d.find_element(By.CSS_SELECTOR, f"button.preview-btn[data-dataset='{dsid}']")
        row = btn.find_element(By.XPATH, "./ancestor::tr")
        Select(row.find_element(By.TAG_NAME, "select")).select_by_value("smol-hf")
        btn.click()
        servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, "#ds-preview .record"), "the phone preview")
        time.sleep(0.3)
        sw = d.execute_script("return document.documentElement.scrollWidth")
        check(sw <= 390, f"phone: horizontal scroll ({sw} px)")
        d.save_screenshot(os.path.join(shots, "phone-data-preview.png"))
    finally:
        d.quit()


def main():
    servekit.chromium_or_skip()
    work = os.path.join(TMP, "work")
    models = os.path.join(TMP, "models")
    os.makedirs(models)
    os.symlink(os.path.join(servekit.MODELS, servekit.MODEL), os.path.join(models, servekit.MODEL))
    os.symlink(os.path.join(ltcheck.FIXTURES, "stories260K-hf"), os.path.join(models, "stories260K-hf"))
    if os.path.exists(GGUF):
        os.symlink(GGUF, os.path.join(models, "smol.gguf"))
    srv = Server(work, "--models", models)
    try:
        dsid, p, tune_id = api_checks(srv.url, work, models)
        browser_checks(srv.url, dsid, p, tune_id)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
