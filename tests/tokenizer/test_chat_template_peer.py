"""test_chat_template_peer.py - our chat template rendering vs real Jinja2, byte for byte.

For every template in tests/data/chat_templates/*.jinja (real model templates) and a set of
conversations (single turn, system + user, multi-turn, with/without add_generation_prompt,
whitespace/newline/unicode/empty contents, Jinja-looking contents, error cases), the template
is rendered with Jinja2 set up the way transformers' apply_chat_template does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, `raise_exception`,
`tojson`; messages, tools=None, documents=None, add_generation_prompt and the tokenizer's
bos_token/eos_token) and by test_chat_template --render-batch; the outputs must be identical.
Where Jinja raises, we must fail too. The only accepted difference: we refuse (LT_ERR_ARG)
conversations that the template silently mangles - roles it does not support, or a system
message after the first position - which docs/CHAT_TEMPLATES.md lists.

Second, the recogniser's "exact" claim is checked against Jinja: each template is edited in
ways that may or may not change its output; whenever our side still says "exact", Jinja must
render the edited template exactly like the original on every conversation. The --render
interface is exercised once per template too. Prints "N passed, M failed"; exits 1 on failure.
"""
import json
import os
import subprocess
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import SOURCE_DIR, check, finish, tool  # noqa: E402

BIN = tool("test_chat_template")
DATA = os.path.join(SOURCE_DIR, "tests", "data", "chat_templates")

ARG_STATUS = "invalid argument"  # lt_status_name(LT_ERR_ARG)


def make_env():
    # as transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


ENV = make_env()


_compiled = {}


def jinja_render(template_src, messages, add_gen, bos, eos):
    if template_src not in _compiled:
        try:
            _compiled[template_src] = ENV.from_string(template_src)
        except jinja2.TemplateSyntaxError as e:
            _compiled[template_src] = e
    tpl = _compiled[template_src]
    if isinstance(tpl, Exception):
        return ("syntax", str(tpl))
    kw = {}
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    try:
        return ("ok", tpl.render(messages=messages, tools=None, documents=None,
                                 add_generation_prompt=add_gen, **kw))
    except Exception as e:  # TemplateError from raise_exception, UndefinedError, ...
        return ("err", "%s: %s" % (type(e).__name__, e))


def m(role, content):
    return {"role": role, "content": content}


# every code point Python's str.strip() (Jinja's trim) removes, from Python itself
ALL_SPACES = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())

CONVERSATIONS = [
    ("single user", [m("user", "Hello!")]),
    ("system+user", [m("system", "You are terse."), m("user", "Hi")]),
    ("multi-turn", [m("system", "Be kind."), m("user", "What is 2+2?"), m("assistant", "4."),
                    m("user", "And 3+3?")]),
    ("multi-turn ends with assistant", [m("user", "a"), m("assistant", "b"), m("user", "c"),
                                        m("assistant", "d")]),
    ("long", [m("user", "u%d" % i) if i % 2 == 0 else m("assistant", "a%d" % i)
              for i in range(9)]),
    ("whitespace", [m("system", "  sys with spaces \n"), m("user", "  padded \n"),
                    m("assistant", "\n\tanswer  "), m("user", " \u00a0nbsp\u3000 ")]),
    ("python-only whitespace", [m("user", "\x1c\x1dhi\x85\u2028"),
                                m("assistant", "\u2003ok\u205f\x1f")]),
    ("every Python whitespace char", [m("user", ALL_SPACES + "x" + ALL_SPACES + "y" + ALL_SPACES),
                                      m("assistant", ALL_SPACES + "z" + ALL_SPACES)]),
    ("newlines+unicode", [m("user", "Line 1\nLine 2\n\n\u00dcn\u00efc\u00f6d\u00e9 \u2014 "
                                    "\u65e5\u672c\u8a9e \U0001F389"),
                          m("assistant", "ok\r\nsure")]),
    ("empty contents", [m("user", ""), m("assistant", ""), m("user", " ")]),
    ("empty system and user", [m("system", ""), m("user", "")]),
    ("blank system", [m("system", "   "), m("user", "x")]),
    ("system only", [m("system", "lonely")]),
    ("assistant only", [m("assistant", "hi")]),
    ("jinja-looking content", [m("user", "{{ bos_token }} {% if x %}{# c #}"),
                               m("assistant", "'quote' \"dq\" \\n backslash")]),
    ("special tokens in content", [m("user", "<|im_end|>[INST]<s></s><|eot_id|>"),
                                   m("assistant", "<|im_start|>user")]),
    # errors / refusals
    ("user,user", [m("user", "a"), m("user", "b")]),
    ("assistant first", [m("assistant", "a"), m("user", "b")]),
    ("system in the middle", [m("user", "a"), m("assistant", "b"), m("system", "c"),
                              m("user", "d")]),
    ("system at index 1", [m("user", "a"), m("system", "b")]),
    ("two systems", [m("system", "a"), m("system", "b"), m("user", "c")]),
    ("tool role", [m("user", "a"), m("tool", "b")]),
    ("unknown role", [m("user", "a"), m("narrator", "b")]),
    ("empty conversation", []),
]

SUPPORTED = ("system", "user", "assistant")


def may_refuse(msgs):
    """Conversations we may refuse although Jinja renders them (documented strictness)."""
    return (not msgs or any(x["role"] not in SUPPORTED for x in msgs)
            or any(x["role"] == "system" for x in msgs[1:]))


def run_batch(path, bos, eos, cases):
    cp = subprocess.run([BIN, "--render-batch", path, bos or "", eos or ""],
                        input=json.dumps(cases).encode(), capture_output=True, timeout=120)
    if cp.returncode != 0:
        raise RuntimeError("test_chat_template --render-batch %s failed: %s"
                           % (path, cp.stderr.decode(errors="replace")))
    return json.loads(cp.stdout.decode())


def info(paths):
    cp = subprocess.run([BIN, "--info"] + paths, capture_output=True, timeout=60)
    return [json.loads(line) for line in cp.stdout.decode().splitlines()]


def show(s):
    return json.dumps(s, ensure_ascii=False)


def compare_template(fname, src, bos, eos):
    path = os.path.join(DATA, fname)
    cases = [{"messages": msgs, "add_generation_prompt": ag}
             for _, msgs in CONVERSATIONS for ag in (False, True)]
    got = run_batch(path, bos, eos, cases)
    check(got["exact"] and got["recognised"], "%s: recognised exactly (%s)" % (fname, got))
    strict = []
    for (label, msgs), ag, ours in zip([c for c in CONVERSATIONS for _ in (0, 1)],
                                       [ag for _ in CONVERSATIONS for ag in (False, True)],
                                       got["results"]):
        kind, ref = jinja_render(src, msgs, ag, bos, eos)
        what = "%s / %s / add_generation_prompt=%s" % (fname, label, ag)
        if kind == "ok" and ours["ok"]:
            check(ours["text"] == ref, "%s:\n  jinja: %s\n  ours:  %s" % (what, show(ref),
                                                                         show(ours["text"])))
        elif kind != "ok" and not ours["ok"]:
            check(ours["status"] == ARG_STATUS, "%s: both fail, ours with %s (%s)"
                  % (what, ours["status"], ours["error"]))
        elif kind == "ok" and not ours["ok"]:
            ok = may_refuse(msgs)
            check(ok, "%s: we refused (%s) but Jinja renders %s" % (what, ours["error"], show(ref)))
            if ok:
                strict.append(label)
        else:
            check(False, "%s: Jinja fails (%s) but we render %s" % (what, ref, show(ours["text"])))
    return sorted(set(strict))


def perturbations(src):
    yield "newline after every %}", src.replace("%}", "%}\n")
    yield "newline after every }}", src.replace("}}", "}}\n")
    yield "spaces inside tags", src.replace("{{", "{{ ").replace("}}", " }}").replace("{%", "{% ")
    yield "spaces before {%", src.replace("{%", "  {%")
    yield "indent lines", src.replace("\n", "\n  ")
    yield "CRLF", src.replace("\n", "\r\n")
    yield "trailing newline", src + "\n"
    yield "two trailing newlines", src + "\n\n"
    yield "leading comment", "{# note #}" + src
    yield "leading comment + newline", "{# note #}\n" + src
    yield "operators unspaced", src.replace(" + ", "+")
    yield "no left strip", src.replace("{%-", "{%").replace("{{-", "{{")
    yield "double quotes", src.replace("'", '"')
    yield "literal tweak", src.replace("[/INST]", "[/INST] ").replace("<|im_end|>", "<|im_end|> ")
    yield "+%} no trim", src.replace("%}", "+%}", 1)


def check_exact_claims(fname, src, bos, eos, tmpdir):
    edits = [(label, var) for label, var in perturbations(src) if var != src]
    paths = []
    for k, (_, var) in enumerate(edits):
        paths.append(os.path.join(tmpdir, "perturbed%d.jinja" % k))
        with open(paths[-1], "w", newline="") as f:
            f.write(var)
    claims = info(paths)
    check(len(claims) == len(edits), "%s: --info answered for every edit" % fname)
    exact_kept = 0
    for (label, var), claim in zip(edits, claims):
        if not claim.get("exact"):
            continue
        exact_kept += 1
        same = True
        for clabel, msgs in CONVERSATIONS:
            for ag in (False, True):
                a = jinja_render(src, msgs, ag, bos, eos)
                b = jinja_render(var, msgs, ag, bos, eos)
                if a[0] != b[0] or (a[0] == "ok" and a[1] != b[1]):
                    same = False
                    print("  %s [%s] %s: original %s vs edited %s" % (fname, label, clabel,
                                                                     show(a), show(b)))
        check(same, "%s: edit '%s' reported exact but Jinja renders it differently"
              % (fname, label))
    return exact_kept


def check_render_mode(fname, src, bos, eos):
    msgs = CONVERSATIONS[2][1]
    cp = subprocess.run([BIN, "--render", os.path.join(DATA, fname), bos or "", eos or "", "1"],
                        input=json.dumps(msgs).encode(), capture_output=True, timeout=60)
    kind, ref = jinja_render(src, msgs, True, bos, eos)
    if kind == "ok":
        check(cp.returncode == 0 and cp.stdout == ref.encode(),
              "%s: --render gives %r, Jinja %r" % (fname, cp.stdout, ref))
    else:
        check(cp.returncode != 0, "%s: --render should fail like Jinja (%s)" % (fname, ref))


def check_gguf(tmpdir):
    """A GGUF written by the gguf package (llama.cpp's writer) with SmolLM2's template."""
    import gguf
    with open(os.path.join(DATA, "smollm2-instruct.jinja"), newline="") as f:
        src = f.read()
    p = os.path.join(tmpdir, "smollm2-vocab.gguf")
    w = gguf.GGUFWriter(p, "llama")
    w.add_token_list(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(src)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    cp = subprocess.run([BIN, "--gguf", p], capture_output=True, timeout=60)
    got = json.loads(cp.stdout.decode() or "{}")
    check(got.get("name") == "smollm2-instruct" and got.get("exact"), "GGUF template: %s" % got)
    check(got.get("bos") == "<|im_start|>" and got.get("eos") == "<|im_end|>",
          "GGUF bos/eos: %s" % got)


def check_config(fname, src, bos, eos, tmpdir):
    """The template inside a tokenizer_config.json written by Python's json module."""
    p = os.path.join(tmpdir, "tokenizer_config.json")
    with open(p, "w") as f:
        json.dump({"add_bos_token": True, "model_max_length": 10**30, "chat_template": src,
                   "bos_token": bos, "eos_token": eos, "unk_token": None}, f, indent=2)
    cp = subprocess.run([BIN, "--config", p], capture_output=True, timeout=60)
    got = json.loads(cp.stdout.decode() or "{}")
    want = fname[:-len(".jinja")].replace("-v0.2", "-v0.1")
    check(got.get("exact") and got.get("name") == want, "%s in a config: %s %s"
          % (fname, got, cp.stderr.decode(errors="replace")))
    check(got.get("bos") == (bos or "") and got.get("eos") == (eos or ""),
          "%s config bos/eos: %s" % (fname, got))


def main():
    import tempfile
    with open(os.path.join(DATA, "specials.json")) as f:
        specials = json.load(f)
    files = sorted(x for x in os.listdir(DATA) if x.endswith(".jinja"))
    check(len(files) >= 12, "template files found: %s" % files)
    with tempfile.TemporaryDirectory() as tmp:
        for fname in files:
            with open(os.path.join(DATA, fname), newline="") as f:
                src = f.read()
            sp = specials[fname]
            strict = compare_template(fname, src, sp["bos"], sp["eos"])
            kept = check_exact_claims(fname, src, sp["bos"], sp["eos"], tmp)
            check_render_mode(fname, src, sp["bos"], sp["eos"])
            check_config(fname, src, sp["bos"], sp["eos"], tmp)
            print("%-40s ok; exact kept under %d edits; we refuse where Jinja renders: %s"
                  % (fname, kept, ", ".join(strict) or "-"))
        check_gguf(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
