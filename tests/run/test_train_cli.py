"""test_train_cli.py - `loratune train` / `loratune eval` end to end on stories260K (tiny, fast):

- --json event schema (step / eval / checkpoint / done ...) and the output layout;
- `-c OUT/run_config.yaml` reproduces the run's losses exactly;
- a run killed with SIGKILL mid-way and resumed with `--resume OUT` gives the same losses, learning
  rates, grad norms, val losses and final adapter, bit for bit, as the uninterrupted run (grad
  accumulation, LoRA dropout, packing, several epochs, cosine schedule with warmup);
- SIGINT: checkpoint at the last completed step, exit 130, resume equal again;
- NaN/inf (fault hook LT_FAULT_NAN_STEPS): skipped steps leave weights and moments untouched;
  K in a row stop the run with a message naming the steps and the last good checkpoint;
- early stopping; bad options / config keys named in the error; `loratune eval` wiring;
- `--adapter` given one of a folder adapter's files (eval, generate, fuse); eval --help sizes;
- a DoRA run says (skipped event / stderr line) that it writes no adapter.gguf.
The uninterrupted run is the reference for the resumed one; the numbers themselves are checked
against independent computations in test_run_eval.c / test_run_opts.c.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_train_cli_")
DATA = os.path.join(TMP, "data")
os.environ["LORATUNE_STORE"] = os.path.join(TMP, "store")  # run tracking: keep it in TMP

COMMON = ["--model", MODEL, "--data", DATA, "--batch-size", "2", "--grad-accum", "2",
          "--max-seq-len", "48", "--pack", "--lora-dropout", "0.1", "--lora-targets", "all",
          "--lr", "5e-3", "--lr-schedule", "cosine", "--warmup", "3", "--eval-every", "5",
          "--save-every", "4", "--keep-checkpoints", "2", "--threads", "1", "--seed", "7",
          "--device", "cpu"]  # bit-for-bit resumes: the CPU (CUDA's attention backward uses atomics)
ITERS = "80"


def make_data():
    os.makedirs(DATA)
    for split, n in (("train", 16), ("valid", 6)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(DATA, split + ".jsonl"), "w") as f:
            f.writelines(lines)


def events(stdout):
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def train(*args, env=None):
    e = dict(os.environ)
    e.pop("LT_FAULT_NAN_STEPS", None)
    if env:
        e.update(env)
    r = ltcheck.run("train", *args, env=e)
    try:
        evs = events(r.stdout)
    except ValueError:
        evs = []
        check(False, f"train {args}: stdout is not JSON lines: {r.stdout[:500]}")
    return r, evs


def by(evs, kind):
    return [e for e in evs if e.get("event") == kind]


def steps_of(evs):
    return {e["step"]: e for e in by(evs, "step")}


def same_steps(ref, got, what):
    """Every step event of got equals ref's exactly in loss, lr, grad_norm."""
    bad = [s for s, e in got.items()
           if s not in ref or (e["loss"], e["lr"], e["grad_norm"]) !=
           (ref[s]["loss"], ref[s]["lr"], ref[s]["grad_norm"])]
    check(got and not bad, f"{what}: steps differing from the uninterrupted run: {bad[:5]}"
          + (f" e.g. {got[bad[0]]} vs {ref.get(bad[0])}" if bad else ""))


def same_evals(ref_evs, evs, what):
    ref = {e["step"]: e["val_loss"] for e in by(ref_evs, "eval")}
    got = {e["step"]: e["val_loss"] for e in by(evs, "eval")}
    bad = [s for s in got if ref.get(s) != got[s]]
    check(got and not bad, f"{what}: val losses differ at steps {bad}")


def same_adapter(a, b, what):
    ta = load_file(os.path.join(a, "adapter_model.safetensors"))
    tb = load_file(os.path.join(b, "adapter_model.safetensors"))
    diff = [k for k in ta if k not in tb or not (ta[k] == tb[k]).all()]
    check(ta.keys() == tb.keys() and not diff, f"{what}: adapter tensors differ: {diff[:3]}")


def popen_train(out, *extra):
    e = dict(os.environ)
    e.pop("LT_FAULT_NAN_STEPS", None)
    return subprocess.Popen([ltcheck.LORATUNE, "train", *COMMON, "--iters", ITERS, "--out", out,
                             "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e)


def read_until_step(p, k):
    """Reads p's JSON lines until a step event >= k; returns the lines read."""
    lines = []
    for line in p.stdout:
        lines.append(line)
        ev = json.loads(line)
        if ev.get("event") == "step" and ev["step"] >= k:
            break
    return lines


def main():
    make_data()
    A = os.path.join(TMP, "A")
    r, ev_a = train(*COMMON, "--iters", ITERS, "--out", A, "--json")
    check(r.returncode == 0, f"run A failed: {r.stderr[-2000:]}")
    ref = steps_of(ev_a)

    # ---- schema and outputs -------------------------------------------------------------
    check(sorted(ref) == list(range(1, int(ITERS) + 1)), f"step events 1..{ITERS}: {sorted(ref)[:5]}")
    for s, e in ref.items():
        ok = (isinstance(e["step"], int) and isinstance(e["loss"], float) and
              isinstance(e["lr"], float) and isinstance(e["tokens_per_sec"], float) and
              isinstance(e["peak_rss_bytes"], int) and e["peak_rss_bytes"] > 1 << 20 and
              e["tokens"] > 0 and "grad_norm" in e and "eta_s" in e and "epoch" in e)
        if not ok:
            check(False, f"step event schema: {e}")
            break
    else:
        check(True, "")
    ev_evals = by(ev_a, "eval")
    check([e["step"] for e in ev_evals] == [0] + list(range(5, int(ITERS) + 1, 5)),
          f"eval steps: {[e['step'] for e in ev_evals]}")
    check(all(abs(e["val_ppl"] - math.exp(e["val_loss"])) <= 1e-9 * e["val_ppl"] for e in ev_evals),
          "val_ppl = exp(val_loss)")
    check(ev_evals[-1]["val_loss"] < ev_evals[0]["val_loss"] - 0.3,
          f"val loss fell: {ev_evals[0]['val_loss']} -> {ev_evals[-1]['val_loss']}")
    check(by(ev_a, "start") and by(ev_a, "start")[0]["steps"] == int(ITERS), "start event")
    done = by(ev_a, "done")
    check(done and done[-1]["outcome"] == "done" and done[-1]["step"] == int(ITERS) and
          done[-1]["final_val_loss"] == ev_evals[-1]["val_loss"], f"done event: {done}")
    # epochs wrap: 16 examples packed into rows of 48 -> a handful of batches per epoch
    check(ref[int(ITERS)]["epoch"] > 2, f"several epochs: {ref[int(ITERS)]['epoch']}")
    for f in ("adapter_model.safetensors", "adapter_config.json", "adapter.gguf",
              "mlx-lm/adapters.safetensors", "mlx-lm/adapter_config.json", "run_config.yaml"):
        check(os.path.isfile(os.path.join(A, f)), f"output {f}")
    ck = sorted(os.listdir(os.path.join(A, "checkpoints")))
    check(ck == ["step-00000076.safetensors", "step-00000080.safetensors"],
          f"kept checkpoints: {ck}")
    cfg = json.loads(open(os.path.join(A, "adapter_config.json")).read())
    check(cfg.get("r") == 8 and cfg.get("lora_alpha") == 16, f"adapter_config: {cfg}")

    # ---- -c run_config.yaml reproduces the run ------------------------------------------
    B = os.path.join(TMP, "B")
    r, ev_b = train("-c", os.path.join(A, "run_config.yaml"), "--out", B, "--json")
    check(r.returncode == 0, f"run B failed: {r.stderr[-2000:]}")
    same_steps(ref, steps_of(ev_b), "-c run_config.yaml")
    check(len(steps_of(ev_b)) == int(ITERS), "B ran every step")

    # ---- SIGKILL mid-run, then --resume OUT ---------------------------------------------
    C = os.path.join(TMP, "C")
    p = popen_train(C)
    read_until_step(p, 13)
    p.kill()
    p.wait()
    ck = sorted(os.listdir(os.path.join(C, "checkpoints")))
    check(ck and p.returncode == -signal.SIGKILL, f"killed run left checkpoints: {ck}")
    last = int(ck[-1][5:13]) if ck else -1
    r, ev_c = train("--resume", C, "--json")
    check(r.returncode == 0, f"resume after SIGKILL failed: {r.stderr[-2000:]}")
    got = steps_of(ev_c)
    check(got and min(got) == last + 1 and max(got) == int(ITERS),
          f"resumed steps {min(got) if got else None}..{max(got) if got else None}, "
          f"checkpoint {last}")
    start = by(ev_c, "start")
    check(start and start[0]["resumed_from"] == last and start[0].get("changed_options") == [],
          f"start event of the resumed run: {start[:1]}")
    same_steps(ref, got, "resume after SIGKILL")
    same_evals(ev_a, ev_c, "resume after SIGKILL")
    same_adapter(A, C, "resume after SIGKILL")

    # ---- SIGINT: checkpoint and exit 130 ------------------------------------------------
    D = os.path.join(TMP, "D")
    p = popen_train(D)
    lines = read_until_step(p, 10)
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate()
    evs = events("".join(lines) + rest)
    inter = by(evs, "interrupted")
    check(p.returncode == 130 and inter, f"SIGINT: rc {p.returncode}, events {evs[-2:]}, {err[-500:]}")
    if inter:
        k = inter[0]["step"]
        check(max(steps_of(evs)) == k and os.path.isfile(inter[0]["checkpoint"]) and
              inter[0]["checkpoint"].endswith(f"step-{k:08d}.safetensors"),
              f"SIGINT checkpoint at the last completed step {k}: {inter[0]}")
        check("--resume" in err, f"SIGINT message says how to resume: {err[-300:]}")
        r, ev_d = train("--resume", D, "--json")
        check(r.returncode == 0 and min(steps_of(ev_d)) == k + 1,
              f"resume after SIGINT: {r.stderr[-500:]}")
        same_steps(ref, steps_of(ev_d), "resume after SIGINT")
        same_adapter(A, D, "resume after SIGINT")

    # ---- NaN / inf ---------------------------------------------------------------------
    small = [a for a in COMMON]
    E = os.path.join(TMP, "E")
    r, ev_e = train(*small, "--iters", "8", "--save-every", "2", "--keep-checkpoints", "10",
                    "--out", E, "--json", env={"LT_FAULT_NAN_STEPS": "3,4"})
    skips = by(ev_e, "skip")
    check(r.returncode == 0 and [s["step"] for s in skips] == [3, 4] and
          all(s["reason"] == "nonfinite_grad" for s in skips) and
          sorted(steps_of(ev_e)) == [1, 2, 5, 6, 7, 8], f"NaN steps skipped: {skips}, {r.stderr[-300:]}")
    c2 = load_file(os.path.join(E, "checkpoints", "step-00000002.safetensors"))
    c4 = load_file(os.path.join(E, "checkpoints", "step-00000004.safetensors"))
    check(c2.keys() == c4.keys() and all((c2[k] == c4[k]).all() for k in c2),
          "skipped steps changed no weight or moment")
    # lr of step s (update s-1): transformers' cosine-with-warmup formula, warmup 3, total 8;
    # the skipped steps keep their place in the schedule
    want = {s: 5e-3 * ((s - 1) / 3 if s - 1 < 3 else
                       max(0.0, 0.5 * (1 + math.cos(math.pi * (s - 1 - 3) / 5))))
            for s in range(1, 9)}
    lrs = {e["step"]: e["lr"] for e in by(ev_e, "step") + skips}
    check(all(abs(lrs.get(s, -1) - want[s]) <= 1e-15 for s in want),
          f"lr per step (skipped ones included): {lrs} vs {want}")
    F = os.path.join(TMP, "F")
    r, ev_f = train(*small, "--iters", "8", "--save-every", "2", "--max-nonfinite", "3",
                    "--out", F, "--json", env={"LT_FAULT_NAN_STEPS": "3,4,5"})
    check(r.returncode == 1 and "3 consecutive steps (3-5)" in r.stderr and
          "Last good checkpoint" in r.stderr and "step-00000004.safetensors" in r.stderr,
          f"K non-finite steps stop the run: rc {r.returncode}: {r.stderr[-600:]}")
    # step 4's checkpoint holds step 2's weights (3 and 4 were skipped); nothing after it
    check(sorted(os.listdir(os.path.join(F, "checkpoints"))) ==
          ["step-00000002.safetensors", "step-00000004.safetensors"],
          "no checkpoint written after the last good one")
    check(by(ev_f, "done") and by(ev_f, "done")[-1]["outcome"] == "nonfinite", "done: nonfinite")
    r, ev_f2 = train("--resume", F, "--json")
    check(r.returncode == 0 and min(steps_of(ev_f2)) == 5, f"resume from the last good one: {r.stderr[-300:]}")

    # ---- early stopping ----------------------------------------------------------------
    G = os.path.join(TMP, "G")  # lr so small that nothing changes: no eval improves
    r, ev_g = train(*COMMON, "--iters", "20", "--lr", "1e-30", "--eval-every", "2",
                    "--early-stop", "2", "--out", G, "--json")
    es = by(ev_g, "early_stop")
    check(r.returncode == 0 and es and es[0]["step"] == 4 and
          by(ev_g, "done")[-1]["outcome"] == "early_stop" and
          os.path.isfile(os.path.join(G, "adapter_model.safetensors")),
          f"early stop after 2 evals without improvement: {es}, {r.stderr[-300:]}")

    # ---- bad input ---------------------------------------------------------------------
    def bad(args, want, rc=2, what=""):
        r = ltcheck.run("train", *args)
        check(r.returncode == rc and want in r.stderr,
              f"{what or args}: rc {r.returncode}, wanted '{want}' in: {r.stderr[-400:]}")
    base = ["--model", MODEL, "--data", DATA, "--out", os.path.join(TMP, "X")]
    bad(base + ["--lora-rank", "zero"], "--lora-rank: expected an integer in [1, 65536], got 'zero'")
    bad(base + ["--lora-rnak", "4"], "unknown option 'lora-rnak' (did you mean 'lora-rank'?)")
    bad(base + ["--lr-schedule", "exp"], "--lr-schedule: expected constant, linear or cosine")
    bad(base + ["--device", "gpu"], "--device: expected auto, cpu or cuda, got 'gpu'")
    info = json.loads(ltcheck.run("info", "--json").stdout)
    if info["cuda"]["device_count"] == 0:  # asking for CUDA without one: an error naming why
        why = "built without CUDA" if not info["cuda"]["built"] else "no GPU"
        bad(base + ["--device", "cuda", "--iters", "1"], f"--device cuda: cuda backend: ", rc=1)
        bad(base + ["--device", "cuda", "--iters", "1"], why, rc=1)
    bad(["--model", MODEL, "--data", DATA], "--out: required")
    bad(base + ["--iters"], "--iters: missing value")
    cfg = os.path.join(TMP, "bad.yaml")
    with open(cfg, "w") as f:
        f.write("model: m\nlora_rank: 8\nwarmup_steps: 10\n")
    bad(["-c", cfg], "bad.yaml:3: unknown option 'warmup-steps'")
    with open(cfg, "w") as f:
        f.write("lr: fast\n")
    bad(["-c", cfg], "bad.yaml:1: lr: expected a number > 0, got 'fast'")
    bad(base + ["--lora-layers", "9"], "lora-layers: 9 layers asked for, the model has 5", rc=1)
    bad(base + ["--data", os.path.join(TMP, "nope")], "nope", rc=1, what="missing data")

    # ---- loratune eval -----------------------------------------------------------------
    ev_args = ["--model", MODEL, "--data", DATA, "--batch-size", "2", "--max-seq-len", "48",
               "--pack", "--threads", "1", "--json"]
    r = ltcheck.run("eval", *ev_args)
    e0 = json.loads(r.stdout) if r.returncode == 0 else {}
    check(e0.get("split") == "valid" and e0.get("loss") == ev_evals[0]["val_loss"] and
          abs(e0["ppl"] - math.exp(e0["loss"])) < 1e-9 * e0["ppl"],
          f"eval of the base = the run's step-0 val loss: {e0} {r.stderr[-300:]}")
    r = ltcheck.run("eval", *ev_args, "--adapter", A)
    e1 = json.loads(r.stdout) if r.returncode == 0 else {}
    check(e1.get("loss") == ev_evals[-1]["val_loss"],
          f"eval --adapter OUT = the run's final val loss: {e1} vs {ev_evals[-1]['val_loss']}")
    # --adapter names one of a folder adapter's files: its folder, with that file's reader
    for f in ("adapter_model.safetensors", "mlx-lm/adapters.safetensors",
              "mlx-lm/adapter_config.json"):
        r = ltcheck.run("eval", *ev_args, "--adapter", os.path.join(A, f))
        ef = json.loads(r.stdout) if r.returncode == 0 else {}
        check(ef.get("loss") == e1.get("loss"), f"eval --adapter OUT/{f}: {ef} {r.stderr[-300:]}")
    mixed = os.path.join(TMP, "mixed")  # mlx-lm weights beside a PEFT config
    os.makedirs(mixed)
    shutil.copy(os.path.join(A, "adapter_config.json"), mixed)
    shutil.copy(os.path.join(A, "mlx-lm", "adapters.safetensors"), mixed)
    r = ltcheck.run("eval", *ev_args, "--adapter", os.path.join(mixed, "adapters.safetensors"))
    check(r.returncode == 1 and "is not an mlx-lm config" in r.stderr,
          f"adapters.safetensors beside a PEFT config: {r.stderr[-300:]}")
    r = ltcheck.run("eval", *ev_args, "--adapter", os.path.join(A, "run_config.yaml"))
    check(r.returncode == 1 and "expected a PEFT or mlx-lm adapter folder" in r.stderr and
          "magic" not in r.stderr, f"eval --adapter a YAML file: {r.stderr[-300:]}")
    gen = ["generate", "--model", MODEL, "--prompt", "Once", "--temp", "0", "--max-tokens", "12",
           "--quiet", "--adapter"]
    g0 = ltcheck.run(*gen, A)
    g1 = ltcheck.run(*gen, os.path.join(A, "adapter_model.safetensors"))
    check(g0.returncode == 0 and g0.stdout == g1.stdout and g0.stdout.strip(),
          f"generate --adapter OUT/adapter_model.safetensors = OUT: {g1.stderr[-300:]}")
    fz = [os.path.join(TMP, n) for n in ("fz0.gguf", "fz1.gguf")]
    r0 = ltcheck.run("fuse", "--model", MODEL, "--adapter", os.path.join(A, "mlx-lm"), "--out", fz[0])
    r1 = ltcheck.run("fuse", "--model", MODEL, "--adapter",
                     os.path.join(A, "mlx-lm", "adapters.safetensors"), "--out", fz[1])
    check(r0.returncode == 0 and r1.returncode == 0 and
          open(fz[0], "rb").read() == open(fz[1], "rb").read(),
          f"fuse --adapter OUT/mlx-lm/adapters.safetensors = OUT/mlx-lm: {r1.stderr[-300:]}")
    # eval --help says what the code does: automatic sizes, not fixed numbers
    h = ltcheck.run("eval", "--help").stdout
    check("default 4" not in h and "default 512" not in h and "--batch-size N|auto" in h and
          "--max-seq-len N|auto" in h and "--memory-budget" in h, f"eval --help sizes:\n{h}")
    r = ltcheck.run("eval", "--model", MODEL, "--data", DATA, "--memory-budget", "1G", "--json")
    check(r.returncode == 0 and "loss" in json.loads(r.stdout or "{}"),
          f"eval --memory-budget: {r.stderr[-300:]}")
    r = ltcheck.run("eval", "--model", MODEL, "--data", DATA, "--split", "dev")
    check(r.returncode == 2 and "--split: expected train, valid or test" in r.stderr, "eval --split")
    r = ltcheck.run("eval", "--model", MODEL, "--data", DATA, "--lora-rank", "4")
    check(r.returncode == 2 and "unknown option '--lora-rank'" in r.stderr, "eval rejects train options")

    # ---- DoRA: no llama.cpp adapter, and the run says so --------------------------------
    dora = ["--model", MODEL, "--data", DATA, "--batch-size", "2", "--max-seq-len", "48",
            "--threads", "1", "--method", "dora", "--iters", "2", "--eval-every", "0"]
    I = os.path.join(TMP, "I")
    r, ev_i = train(*dora, "--out", I, "--json")
    sk = by(ev_i, "skipped")
    check(r.returncode == 0 and not os.path.exists(os.path.join(I, "adapter.gguf")) and
          len(sk) == 1 and sk[0]["what"] == "gguf" and sk[0]["path"].endswith("adapter.gguf") and
          "DoRA" in sk[0]["reason"] and [e["what"] for e in by(ev_i, "saved")] == ["peft", "mlx"],
          f"DoRA --json: skipped event: {sk} {r.stderr[-300:]}")
    r = ltcheck.run("train", *dora, "--out", os.path.join(TMP, "I2"))
    check(r.returncode == 0 and "adapter.gguf" in r.stderr and "DoRA" in r.stderr,
          f"DoRA text mode: a line on stderr: {r.stderr[-300:]}")

    # ---- full fine-tuning: a Hugging Face folder that eval (and transformers) loads -------
    H = os.path.join(TMP, "H")
    hf = os.path.join(ltcheck.FIXTURES, "stories260K-hf")
    full = ["--data", DATA, "--batch-size", "2", "--max-seq-len", "48", "--threads", "1"]
    r, ev_h = train("--model", hf, *full, "--method", "full", "--iters", "4", "--lr", "1e-3",
                    "--out", H, "--json")
    fin = by(ev_h, "eval")
    check(r.returncode == 0 and os.path.isfile(os.path.join(H, "model.safetensors")) and
          os.path.isfile(os.path.join(H, "config.json")) and
          by(ev_h, "saved") and by(ev_h, "saved")[0]["what"] == "hf",
          f"full FT writes an HF folder: {r.stderr[-300:]}")
    r = ltcheck.run("eval", "--model", H, *full, "--split", "valid", "--json")
    e2 = json.loads(r.stdout) if r.returncode == 0 else {}
    check(fin and e2 and abs(e2["loss"] - fin[-1]["val_loss"]) <= 1e-6 * e2["loss"] and
          fin[-1]["val_loss"] < fin[0]["val_loss"],
          f"eval of the saved full model = the run's final val loss: {e2} vs {fin[-1:]}")

    shutil.rmtree(TMP, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
