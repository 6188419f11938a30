"""test_data_peer.py - `loratune data check --json --tokens` against mlx-lm's dataset code
(mlx_lm.tuner.datasets) and transformers' apply_chat_template (jinja2 with the real template).

The tokenizer both sides use: a Hugging Face folder made in a temp dir from the fixture
SmolLM tokenizer.json (its fine-tuning truncation/padding removed) and a tokenizer_config.json
holding the chat template, bos and eos of the real SmolLM2-135M-Instruct GGUF (read with
gguf-py). loratune reads the same folder (--model DIR). Where the GGUF model is present, the
chat data is also checked through `--model the.gguf` (loratune's GGUF tokenizer and template).

Checked per example: token ids; loss mask (mask[j] = 1 when token j is a loss target):
  text          mlx-lm TextDataset (tokens incl. the appended EOS; loss on every token j >= 1),
                also with a sentencepiece Llama tokenizer that adds BOS (stories260K-hf)
  completions   mlx-lm CompletionsDataset, mask_prompt=True -> j >= offset; and
                --train-on-prompt vs mask_prompt=False
  chat / sharegpt / alpaca
                mlx-lm ChatDataset tokens; mask = union over assistant turns i of
                [len(apply_chat_template(m[:i], add_generation_prompt=True)),
                 len(apply_chat_template(m[:i+1]))) -- mlx-lm's mask_prompt offset generalised
                to every assistant turn; for one final assistant turn it is exactly mlx-lm's.
  truncation    --max-seq-len 12: the reference tokens[:12]
  tools         tools.jsonl through the Llama 3.1 and Mistral v0.3 templates (tokens of the
                jinja2 rendering through mlx-lm's ChatDataset, which passes 'tools'; per-turn masks)
ShareGPT / Alpaca records are mapped to messages here by the rule in docs/DATA.md.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import gguf  # noqa: E402
from mlx_lm.tuner import datasets as mld  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

HERE = os.path.join(ltcheck.SOURCE_DIR, "tests", "data", "datasets")
GGUF = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TEMPLATE = os.path.join(ltcheck.SOURCE_DIR, "tests", "data", "chat_templates",
                        "smollm2-instruct.jinja")


def gguf_specials():
    """chat template, bos and eos pieces of the GGUF (or the committed copy of its template)."""
    if not os.path.exists(GGUF):
        return open(TEMPLATE).read(), "<|im_start|>", "<|im_end|>"
    r = gguf.GGUFReader(GGUF)

    def field(name):
        f = r.fields[name]
        return f.parts[f.data[0]]

    tpl = bytes(field("tokenizer.chat_template")).decode()
    toks = r.fields["tokenizer.ggml.tokens"]
    piece = lambda i: bytes(toks.parts[toks.data[i]]).decode()  # noqa: E731
    bos = piece(int(field("tokenizer.ggml.bos_token_id")[0]))
    eos = piece(int(field("tokenizer.ggml.eos_token_id")[0]))
    return tpl, bos, eos


def make_folder(d, template=None):
    """A tokenizer folder: the fixture SmolLM tokenizer.json and a config with the template
    (default: the GGUF's). Other templates get bos/eos strings that are tokens of this vocabulary
    (so transformers adds no new special token); their own markers are plain text to it."""
    tj = json.load(open(os.path.join(ltcheck.FIXTURES, "tokenizers", "smollm", "tokenizer.json")))
    tj["truncation"] = None
    tj["padding"] = None
    json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w"))
    if template:
        tpl = open(os.path.join(ltcheck.SOURCE_DIR, "tests", "data", "chat_templates",
                                template)).read()
        bos, eos = "<|endoftext|>", "<|im_end|>"
    else:
        tpl, bos, eos = gguf_specials()
    json.dump({"chat_template": tpl, "bos_token": bos, "eos_token": eos,
               "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                   bos_token=bos, eos_token=eos, chat_template=tpl)


def ours(path, model, *extra):
    r = ltcheck.run("data", "check", path, "--model", model, "--json", "--tokens",
                    "--valid-fraction", "0", *extra)
    if r.returncode != 0:
        check(False, f"loratune data check {path} {extra}: {r.stderr}")
        return None
    return json.loads(r.stdout)["splits"]["train"]["examples_detail"]


def records(path):
    if path.endswith(".json"):
        return json.load(open(path))
    return [json.loads(l) for l in open(path) if l.strip()]


def to_messages(rec):
    """docs/DATA.md's mapping of each format to chat messages."""
    if "messages" in rec:
        return rec["messages"]
    if "conversations" in rec:
        role = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "system": "system"}
        m = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
        return m + [{"role": role[c["from"]], "content": c["value"]}
                    for c in rec["conversations"]]
    if "instruction" in rec:
        m = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
        for q, a in rec.get("history") or []:
            m += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        u = rec["instruction"] + ("\n\n" + rec["input"] if rec.get("input") else "")
        return m + [{"role": "user", "content": u}, {"role": "assistant", "content": rec["output"]}]
    return [{"role": "user", "content": rec["prompt"]},
            {"role": "assistant", "content": rec["completion"]}]


def turn_mask(tok, msgs, n, tools=None):
    """Reference mask; None (not compared) on the turns whose prefix rendering is not a prefix
    of the whole rendering (Mistral v0.3 moves the tools to the last user message), where the
    prefix definition does not apply."""
    mask = [0] * n
    full = tok.apply_chat_template(msgs, tools=tools, tokenize=False)
    ok_turns, any_bad = [], False
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        kw = dict(tools=tools, return_dict=False)
        pre = tok.apply_chat_template(msgs[:i], add_generation_prompt=True, tokenize=False, tools=tools)
        upto = tok.apply_chat_template(msgs[:i + 1], tokenize=False, tools=tools)
        b = len(tok.apply_chat_template(msgs[:i], add_generation_prompt=True, **kw))
        e = len(tok.apply_chat_template(msgs[:i + 1], **kw))
        if full.startswith(pre) and full.startswith(upto):
            ok_turns.append((b, e))
        else:
            any_bad = True
    if any_bad:  # only the turns the definition covers are compared
        mask = [None] * n
    for b, e in ok_turns:
        for j in range(b, min(e, n)):
            mask[j] = 1
    if n:
        mask[0] = 0
    return mask


def compare(name, got, want_tokens, want_masks, cut=None):
    if got is None:
        return
    check(len(got) == len(want_tokens), f"{name}: {len(got)} examples, reference {len(want_tokens)}")
    for i, (g, t, m) in enumerate(zip(got, want_tokens, want_masks)):
        if cut:
            t, m = t[:cut], m[:cut]
        check(g["tokens"] == t, f"{name}[{i}] tokens differ:\n ours {g['tokens']}\n ref  {t}")
        same = len(g["mask"]) == len(m) and all(w is None or x == w for x, w in zip(g["mask"], m))
        check(same, f"{name}[{i}] mask differs:\n ours {g['mask']}\n ref  {m}")


def main():
    with tempfile.TemporaryDirectory() as d:
        tok = make_folder(d)
        # text: the wikisql-mlx fixture (1000 + 100 + 100) and the hand-written file
        wik = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
        r = ltcheck.run("data", "check", wik, "--model", d, "--json", "--tokens")
        check(r.returncode == 0, f"data check wikisql: {r.stderr}")
        if r.returncode == 0:
            splits = json.loads(r.stdout)["splits"]
            for s in ("train", "valid", "test"):
                recs = records(os.path.join(wik, s + ".jsonl"))
                ds = mld.create_dataset(recs, tok, type("C", (), {})())
                want = [ds.process(x)[0] for x in recs]
                compare(f"wikisql/{s}", splits[s]["examples_detail"], want,
                        [[0] + [1] * (len(w) - 1) for w in want])
        p = os.path.join(HERE, "text.jsonl")
        recs = records(p)
        want = [mld.TextDataset(recs, tok).process(x)[0] for x in recs]
        check(want[2][-1] == tok.eos_token_id and want[2].count(tok.eos_token_id) == 1,
              "text.jsonl[2] ends with the end token: no second EOS")
        compare("text", ours(p, d), want, [[0] + [1] * (len(w) - 1) for w in want])
        compare("text cut 12", ours(p, d, "--max-seq-len", "12"), want,
                [[0] + [1] * (len(w) - 1) for w in want], cut=12)

        # completions: mlx-lm CompletionsDataset with and without mask_prompt
        p = os.path.join(HERE, "completions.jsonl")
        recs = records(p)
        ds = mld.CompletionsDataset(recs, tok, "prompt", "completion", mask_prompt=True)
        pr = [ds.process(x) for x in recs]
        compare("completions", ours(p, d), [t for t, _ in pr],
                [[int(j >= off) for j in range(len(t))] for t, off in pr])
        ds = mld.CompletionsDataset(recs, tok, "prompt", "completion", mask_prompt=False)
        pr = [ds.process(x) for x in recs]
        compare("completions --train-on-prompt", ours(p, d, "--train-on-prompt"),
                [t for t, _ in pr], [[0] + [1] * (len(t) - 1) for t, _ in pr])

        # chat-shaped: mlx-lm ChatDataset tokens, per-turn masks from the real template
        for f in ("chat.jsonl", "sharegpt.jsonl", "alpaca.json"):
            p = os.path.join(HERE, f)
            recs = records(p)
            msgs = [to_messages(x) for x in recs]
            ds = mld.ChatDataset([{"messages": m} for m in msgs], tok, mask_prompt=True)
            pr = [ds.process({"messages": m}) for m in msgs]
            toks = [t for t, _ in pr]
            masks = [turn_mask(tok, m, len(t)) for m, t in zip(msgs, toks)]
            # one final assistant turn: the turn mask is exactly mlx-lm's mask_prompt
            for m, (t, off), mk in zip(msgs, pr, masks):
                if sum(x["role"] == "assistant" for x in m) == 1 and m[-1]["role"] == "assistant":
                    check(mk == [int(j >= off) for j in range(len(t))],
                          f"{f}: reference turn mask != mlx-lm mask_prompt")
            compare(f, ours(p, d), toks, masks)
            compare(f + " cut 20", ours(p, d, "--max-seq-len", "20"), toks, masks, cut=20)
            compare(f + " --train-on-prompt", ours(p, d, "--train-on-prompt"), toks,
                    [[0] + [1] * (len(t) - 1) for t in toks])
            if os.path.exists(GGUF):
                compare(f + " (GGUF model)", ours(p, GGUF), toks, masks)

    # a sentencepiece Llama tokenizer that adds BOS (stories260K-hf, LlamaTokenizer): text data
    # gets BOS + text + EOS as mlx-lm's TextDataset; the model has no chat template
    from transformers import AutoTokenizer
    hf = os.path.join(ltcheck.FIXTURES, "stories260K-hf")
    stok = AutoTokenizer.from_pretrained(hf)
    # (records with runs of spaces are left out: transformers' converted LlamaTokenizer keeps
    # them, sentencepiece -- and loratune, tested against it elsewhere -- collapses them, as
    # this .model's remove_extra_whitespaces says; a tokenizer difference, not a data one)
    for p in (os.path.join(HERE, "text.jsonl"), os.path.join(wik, "test.jsonl")):
        recs = [x for x in records(p) if "  " not in x["text"]]
        with tempfile.TemporaryDirectory() as d:
            q = os.path.join(d, os.path.basename(p))
            with open(q, "w") as f:
                for x in recs:
                    f.write(json.dumps(x) + "\n")
            got = ours(q, hf)
        want = [mld.TextDataset(recs, stok).process(x)[0] for x in recs]
        check(all(w[0] == stok.bos_token_id and w[-1] == stok.eos_token_id for w in want),
              "reference: BOS ... EOS")
        compare(f"{os.path.basename(p)} (stories260K spm, {len(recs)} records)", got, want,
                [[0] + [1] * (len(w) - 1) for w in want])
    r = ltcheck.run("data", "check", os.path.join(HERE, "chat.jsonl"), "--model", hf)
    check(r.returncode == 1 and "chat.jsonl:1:" in r.stderr and "chat template" in r.stderr,
          f"chat data on a model without a template: {r.stderr!r}")

    # other template families (their markers are plain text to this tokenizer, so tokens that
    # straddle turn boundaries are common: the mask fallback is exercised)
    p = os.path.join(HERE, "chat.jsonl")
    recs = records(p)
    for template in ("llama3.1-instruct.jinja", "mistral-7b-instruct-v0.3.jinja",
                     "llama2-chat.jinja", "tinyllama-chat.jinja", "qwen2-instruct.jinja"):
        with tempfile.TemporaryDirectory() as d:
            tok = make_folder(d, template)
            ok = []
            for x in recs:  # Llama 2 / Mistral refuse some conversations (alternation)
                try:
                    tok.apply_chat_template(x["messages"], tokenize=False)
                    ok.append(x)
                except Exception:
                    pass
            with open(os.path.join(d, "data.jsonl"), "w") as f:
                for x in ok:
                    f.write(json.dumps(x) + "\n")
            ds = mld.ChatDataset(ok, tok, mask_prompt=True)
            toks = [ds.process(x)[0] for x in ok]
            masks = [turn_mask(tok, x["messages"], len(t)) for x, t in zip(ok, toks)]
            compare(f"chat ({template}, {len(ok)} records)", ours(os.path.join(d, "data.jsonl"), d),
                    toks, masks)

    # tools: Llama 3.1 and Mistral v0.3 render them (Jinja with the real template strings)
    p = os.path.join(HERE, "tools.jsonl")
    recs = records(p)
    for template in ("llama3.1-instruct.jinja", "mistral-7b-instruct-v0.3.jinja"):
        with tempfile.TemporaryDirectory() as d:
            tok = make_folder(d, template)
            ds = mld.ChatDataset(recs, tok, mask_prompt=True)
            toks = [ds.process(x)[0] for x in recs]
            masks = [turn_mask(tok, x["messages"], len(t), x.get("tools"))
                     for x, t in zip(recs, toks)]
            compare(f"tools ({template})", ours(p, d), toks, masks)
    # a template without tools: refused, naming the line
    with tempfile.TemporaryDirectory() as d:
        make_folder(d)
        r = ltcheck.run("data", "check", p, "--model", d)
        check(r.returncode == 1 and "tools.jsonl:1:" in r.stderr and "'tools'" in r.stderr,
              f"tools with smollm2: {r.stderr!r}")
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
