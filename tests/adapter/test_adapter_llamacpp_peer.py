"""test_adapter_llamacpp_peer.py - our llama.cpp LoRA adapter GGUFs applied by llama.cpp itself
(llama-cpp-python 0.3.36).

1. stories260K.gguf (f32 weights, llama arch, GQA 8/4 heads): an adapter (LoRA r 4 on every
   linear of every layer) written by lt_adapter_save_gguf (f32 and f16) is loaded by llama.cpp
   (Llama(lora_path=...), f32 KV cache) and by `loratune generate --adapter`; their logits
   agree to max |diff| <= 1e-4 (f32 adapter; 2e-2 for f16, where llama.cpp also rounds the
   activations to f16: measured 0.009 on changes of 17), and so do the logit changes
   with-vs-without the adapter. Takes ~60 s on 2 cores, most of it loading SmolLM2 five times.
   Control: the same file with q/k lora_b rows NOT permuted into llama.cpp's rotary order
   moves llama.cpp's logits differently by > 1, so the comparison would catch a missing or
   wrong permutation.
2. SmolLM2-135M-Instruct.Q4_1.gguf (9/3 heads, head_dim 64): llama.cpp multiplies Q4_1 weights
   with 8-bit-quantized activations, so its base logits differ from our fp32 dequantized
   forward by up to ~1.5; the check is on the logit change caused by a random r 8 adapter on
   q and k: ||ours - llama.cpp|| / ||llama.cpp|| <= 0.3 and correlation >= 0.95 (measured
   0.14 / 0.986), while the unpermuted control gives >= 0.6 / <= 0.5 (measured 0.85 / 0.10).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import gguf
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, SOURCE_DIR, check  # noqa: E402

try:
    import llama_cpp
except ImportError as e:  # CI installs it from tools/requirements.txt
    llama_cpp = None
    IMPORT_ERROR = str(e)

STORIES = os.path.join(FIXTURES, "stories260K", "stories260K.gguf")
SMOL = os.path.join(os.environ.get("LT_MODELS", os.path.join(SOURCE_DIR, "models")),
                    "SmolLM2-135M-Instruct.Q4_1.gguf")
IDS_ST = [1, 403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46]
IDS_SMOL = [1, 504, 3458, 314, 260, 1345, 282, 253, 9470, 30, 2]


def ours(tmp, model, ids, adapter=None):
    out = os.path.join(tmp, "logits.f32")
    # an fp32 KV cache, as the peer's (generate's default is fp16)
    args = ["generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
            "--logits-out", out, "--quiet", "--kv-cache", "f32"]
    if adapter:
        args += ["--adapter", adapter]
    p = ltcheck.run(*args, timeout=300)
    check(p.returncode == 0, f"loratune {' '.join(args)}: {p.stderr[-800:]}")
    return np.fromfile(out, dtype="<f4").reshape(len(ids), -1) if p.returncode == 0 else None


def lcpp(model, ids, adapter=None):
    kw = dict(model_path=model, n_ctx=64, logits_all=True, verbose=False, n_threads=2,
              type_k=0, type_v=0)  # GGML_TYPE_F32 KV cache: the f16 default costs ~1e-2
    if adapter:
        kw["lora_path"] = adapter
    llm = llama_cpp.Llama(**kw)
    llm.eval(ids)
    s = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return s


def unpermuted_copy(src, dst, n_head, n_kv, hd):
    """src with the q/k lora_b rows put back into HF's half-split order (what a writer that
    forgot llama.cpp's permutation would store)."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch=bytes(r.fields["general.architecture"].parts[-1]).decode())
    for k in ["general.type", "adapter.type"]:
        w.add_string(k, bytes(r.fields[k].parts[-1]).decode())
    w.add_float32("adapter.lora.alpha", float(r.fields["adapter.lora.alpha"].parts[-1][0]))
    for t in r.tensors:
        a = np.array(t.data).reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("lora_b") and (".attn_q." in t.name or ".attn_k." in t.name):
            n = n_head if ".attn_q." in t.name else n_kv
            a = a.reshape(n, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(a.shape[0], -1)
        w.add_tensor(t.name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if llama_cpp is None:
        check(False, f"llama_cpp not importable ({IMPORT_ERROR}): install tools/requirements.txt")
        return
    tmp = tempfile.mkdtemp(prefix="lt_adapter_lcpp_")
    env = dict(os.environ, LT_FIXTURES=FIXTURES)
    p = subprocess.run([ltcheck.tool("test_adapter_peft_golden"), "--emit-peers", tmp],
                       capture_output=True, text=True, timeout=120, env=env)
    check(p.returncode == 0, f"emit adapters: {p.stdout[-300:]} {p.stderr[-800:]}")
    if p.returncode != 0:
        return

    # 1. stories260K
    o_base = ours(tmp, STORIES, IDS_ST)
    l_base = lcpp(STORIES, IDS_ST)
    # f16: llama.cpp rounds the activations to f16 too when it multiplies by an f16 lora_a /
    # lora_b (measured 0.009 on logit changes of 17): 2e-2
    for name, tol in [("lora_f32.gguf", 1e-4), ("lora_f16.gguf", 2e-2)]:
        ad = os.path.join(tmp, name)
        o = ours(tmp, STORIES, IDS_ST, ad)
        l = lcpp(STORIES, IDS_ST, ad)
        if o is None or o_base is None:
            continue
        d = float(np.abs(o - l).max())
        dd = float(np.abs((o - o_base) - (l - l_base)).max())
        moved = float(np.abs(l - l_base).max())
        print(f"stories260K {name}: max |ours - llama.cpp| {d:.3g}, of the logit change "
              f"{dd:.3g} (llama.cpp's change up to {moved:.3g})")
        check(d <= tol, f"{name}: logits ours vs llama.cpp: {d} > {tol}")
        check(dd <= tol, f"{name}: logit change ours vs llama.cpp: {dd} > {tol}")
        check(moved > 0.05, f"{name}: the adapter must move llama.cpp's logits (by {moved})")
    ctrl = os.path.join(tmp, "ctrl.gguf")
    unpermuted_copy(os.path.join(tmp, "lora_f32.gguf"), ctrl, 8, 4, 8)
    lc = lcpp(STORIES, IDS_ST, ctrl)
    o = ours(tmp, STORIES, IDS_ST, os.path.join(tmp, "lora_f32.gguf"))
    if o is not None:
        dc = float(np.abs(o - lc).max())
        print(f"stories260K control without the q/k permutation: max |ours - llama.cpp| {dc:.3g}")
        check(dc > 1.0, f"control: unpermuted q/k should disagree with ours, diff {dc}")

    # 2. SmolLM2 Q4_1
    if not os.path.exists(SMOL):
        check(False, f"{SMOL} missing: run tools/fetch_smollm2.sh")
    else:
        ad = os.path.join(tmp, "smol.gguf")
        p = subprocess.run([ltcheck.tool("test_adapter_peft_golden"), "--emit-random", SMOL, ad],
                           capture_output=True, text=True, timeout=120, env=env)
        check(p.returncode == 0, f"emit SmolLM2 adapter: {p.stderr[-500:]}")
        unpermuted_copy(ad, ctrl, 9, 3, 64)
        o0, o1 = ours(tmp, SMOL, IDS_SMOL), ours(tmp, SMOL, IDS_SMOL, ad)
        l0, l1, lc = lcpp(SMOL, IDS_SMOL), lcpp(SMOL, IDS_SMOL, ad), lcpp(SMOL, IDS_SMOL, ctrl)
        if o0 is not None and o1 is not None:
            do = o1 - o0
            for nm, l, good in [("adapter", l1, True), ("unpermuted control", lc, False)]:
                dl = l - l0
                rel = float(np.linalg.norm(do - dl) / np.linalg.norm(dl))
                corr = float(np.corrcoef(do.ravel(), dl.ravel())[0, 1])
                print(f"SmolLM2 Q4_1 {nm}: logit change rel. error {rel:.3f}, correlation "
                      f"{corr:.3f} (llama.cpp's change up to {np.abs(dl).max():.3g}; base "
                      f"logits differ by {np.abs(o0 - l0).max():.3g})")
                if good:
                    check(rel <= 0.3 and corr >= 0.95, f"SmolLM2: rel {rel} corr {corr}")
                else:
                    check(rel >= 0.6 and corr <= 0.5, f"SmolLM2 control: rel {rel} corr {corr}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
