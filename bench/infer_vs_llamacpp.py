"""infer_vs_llamacpp.py - single-stream generation, loratune vs llama.cpp, side by side in one run.

Same GGUF, same prompt token ids, same thread count, same greedy decoding (argmax, stopping at
EOS), same context (512): for each thread count the two run in turn (A B A B ...), each in a
process of its own, --reps times; the table gives medians of
  - prompt processing tokens/s (the prefill of the prompt ids),
  - decode tokens/s (the forwards after the first generated token),
  - peak RSS of the whole process (wait4's ru_maxrss),
and the ratios loratune / llama.cpp. llama.cpp runs through llama-cpp-python (pinned in
tools/requirements.txt and tools/bench-requirements.txt); its times are taken around its eval
calls alone (llm.eval of the prompt ids, then of each token: the C decode plus the binding's
bookkeeping), the argmax over llama_get_logits_ith(-1) outside them (the binding turns its C
perf counters off); its peak RSS includes the Python interpreter, numpy and the binding (about
45 MiB, measured by --rss-floor and printed with the table).
loratune's times are the ones `loratune generate` prints (prompt: the prefill and the first
token's sampling; decode: the rest).

Usage (from the repository root, after building):
  .venv/bin/python bench/infer_vs_llamacpp.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--threads 1,2] [--tokens 256] [--reps 3] [--loratune build/loratune] [--exact]
Prints a Markdown table (bench/RESULTS.md "Inference vs llama.cpp").
"""
import argparse
import json
import os
import platform
import re
import selectors
import statistics
import subprocess
import sys
import time

PROMPT = ("The quick brown fox jumps over the lazy dog. Once upon a time, in a small village "
          "by the sea,")


def run_rss(cmd):
    """Runs cmd under os.wait4: (stdout, stderr, rc, peak RSS MiB)."""
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        os.close(r_out)
        os.close(r_err)
        os.execvp(cmd[0], cmd)
    os.close(w_out)
    os.close(w_err)
    # the outputs are small (a few KB): read them fully, then reap
    out = b""
    err = b""
    sel = selectors.DefaultSelector()
    sel.register(r_out, selectors.EVENT_READ)
    sel.register(r_err, selectors.EVENT_READ)
    live = 2
    while live:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
                os.close(key.fd)
                live -= 1
            elif key.fd == r_out:
                out += chunk
            else:
                err += chunk
    _, status, ru = os.wait4(pid, 0)
    return out.decode(errors="replace"), err.decode(errors="replace"), \
        os.waitstatus_to_exitcode(status), ru.ru_maxrss / 1024.0


def llamacpp_child(a):
    """Runs inside its own process: greedy generation with llama.cpp, prints one JSON line."""
    import numpy as np
    import llama_cpp
    ids = [int(x) for x in a.ids.split(",")]
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=512, n_threads=a.t, n_threads_batch=a.t,
                          verbose=False)
    eos, nv = llm.token_eos(), llm.n_vocab()
    t0 = time.perf_counter()
    llm.eval(ids)
    pp = time.perf_counter() - t0
    gen, tg = [], 0.0
    while len(gen) < a.tokens:
        # the last position's logits from llama.cpp itself (the binding's scores stay 0 unless
        # logits_all, which would compute the head at every prompt position)
        p = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        tok = int(np.argmax(np.ctypeslib.as_array(p, shape=(nv,))))
        gen.append(tok)
        if tok == eos or len(gen) == a.tokens:
            break
        t0 = time.perf_counter()
        llm.eval([tok])
        tg += time.perf_counter() - t0
    text = llm.detokenize([g for g in gen if g != eos]).decode(errors="replace")
    print(json.dumps({"pp_ms": 1000 * pp, "n_p": len(ids), "tg_ms": 1000 * tg,
                      "n_tg": len(gen) - 1, "gen": len(gen), "text": text}))


def prompt_ids(model):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    return llm.tokenize(PROMPT.encode(), add_bos=True, special=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--loratune", default="build/loratune")
    ap.add_argument("--exact", action="store_true", help="loratune's fp32 products (--exact)")
    ap.add_argument("--llamacpp-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("--t", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rss-floor", action="store_true",
                    help="peak RSS of Python + numpy + llama_cpp imported, nothing loaded")
    a = ap.parse_args()
    if a.llamacpp_child:
        return llamacpp_child(a)
    if a.rss_floor:
        _, _, _, rss = run_rss([sys.executable, "-c", "import numpy, llama_cpp"])
        print(f"python + numpy + llama_cpp imported: {rss:.1f} MiB")
        return
    _, _, _, floor = run_rss([sys.executable, "-c", "import numpy, llama_cpp"])
    ids = prompt_ids(a.model)
    ids_s = ",".join(map(str, ids))
    print(f"prompt: {len(ids)} tokens; {a.tokens} greedy tokens at most; context 512; "
          f"{a.reps} runs each, in turn; medians", flush=True)
    rows = []
    for t in [int(x) for x in a.threads.split(",")]:
        L = {"pp": [], "tg": [], "rss": [], "gen": []}
        C = {"pp": [], "tg": [], "rss": [], "gen": []}
        lt_text = cpp_text = ""
        lt_cmd = [a.loratune, "generate", "--model", a.model, "--prompt-ids", ids_s, "--temp", "0",
                  "--max-tokens", str(a.tokens), "--threads", str(t), "--ctx", "512"]
        if a.exact:
            lt_cmd.append("--exact")
        cpp_cmd = [sys.executable, os.path.abspath(__file__), "--llamacpp-child", "--model",
                   a.model, "--ids", ids_s, "--t", str(t), "--tokens", str(a.tokens)]
        for _ in range(a.reps):
            out, err, rc, rss = run_rss(lt_cmd)
            m = re.search(r"\[(\d+) prompt tokens, (\d+) generated, [\d.]+ tokens/s; prompt "
                          r"([\d.]+) tokens/s; decode ([\d.]+) tokens/s\]", err)
            if rc != 0 or not m:
                sys.exit(f"loratune failed ({rc}): {err[-600:]}")
            L["pp"].append(float(m.group(3)))
            L["tg"].append(float(m.group(4)))
            L["gen"].append(int(m.group(2)))
            L["rss"].append(rss)
            lt_text = out.strip("\n")
            out, err, rc, rss = run_rss(cpp_cmd)
            if rc != 0:
                sys.exit(f"llama.cpp child failed ({rc}): {err[-600:]}")
            j = json.loads(out.strip().splitlines()[-1])
            C["pp"].append(1000.0 * j["n_p"] / j["pp_ms"])
            C["tg"].append(1000.0 * j["n_tg"] / j["tg_ms"])
            C["gen"].append(j["gen"])
            C["rss"].append(rss)
            cpp_text = j["text"]
        med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in (("L", L), ("C", C))}
        common = 0
        while common < min(len(lt_text), len(cpp_text)) and lt_text[common] == cpp_text[common]:
            common += 1
        rows.append((t, med, common, len(lt_text), len(cpp_text), L, C))
        print(f"threads {t}: loratune tg {L['tg']} pp {L['pp']}; llama.cpp tg "
              f"{[round(x, 1) for x in C['tg']]} pp {[round(x, 1) for x in C['pp']]}", flush=True)
    print()
    print("| threads | system | prompt tokens/s | decode tokens/s | peak RSS MiB | generated |")
    print("|---|---|---|---|---|---|")
    for t, med, common, nl, nc, L, C in rows:
        for name, k in (("loratune" + (" --exact" if a.exact else ""), "L"),
                        ("llama.cpp", "C")):
            m = med[k]
            print(f"| {t} | {name} | {m['pp']:.1f} | {m['tg']:.1f} | {m['rss']:.1f} | "
                  f"{int(m['gen'])} |")
        l, c = med["L"], med["C"]
        print(f"| {t} | ratio | {l['pp'] / c['pp']:.2f}x | {l['tg'] / c['tg']:.2f}x | "
              f"{l['rss'] / c['rss']:.2f}x ({l['rss'] / (c['rss'] - floor):.2f}x of llama.cpp "
              f"less the Python floor) | |")
    print()
    for t, med, common, nl, nc, L, C in rows:
        print(f"threads {t}: greedy texts agree on the first {common} of {nl} / {nc} characters")
    print(f"Python floor (interpreter + numpy + llama_cpp imported, no model): {floor:.1f} MiB")
    print(f"\n{platform.node()} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
