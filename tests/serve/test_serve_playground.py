"""test_serve_playground.py - the web interface's Playground page in headless Chromium (Debian
chromium + chromium-driver, driven by Selenium) against the real `loratune serve --model` with the
real SmolLM2-135M-Instruct Q4_1 GGUF and a random PEFT LoRA served with --adapter:

- the page offers the base and the adapter (GET /v1/models) and picks base | adapter;
- a message typed into the page and sent with temperature 0 and max_tokens 24 is answered by
  both models at once, each answer streamed: the page's text is sampled while it arrives and
  must take several growing values, with a moment where both panes are still streaming; the
  final texts equal `loratune generate --chat Q --temp 0 --max-tokens 24` without and with
  `--adapter` (an independent path: the CLI's own prompt, template and loop), and differ;
- the sampling settings reach the server: with temperature 1, top_p 0.9 and seed 7 the page's
  answer equals the /v1/chat/completions answer requested with requests for the same fields;
- a second turn keeps each pane's conversation (the request holds the first answer);
- Stop aborts both streams (greedy answers the API says run to max_tokens; each stopped pane
  holds a strict prefix of its full answer); New chat empties the panes;
- a server without --model: the page says how to start one, with no console error;
- no console errors, no horizontal scroll at 390 px; screenshots to BUILD/web-screenshots/.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oaikit  # noqa: E402
import servekit  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

oaikit.need_model()
try:
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

servekit.chromium_or_skip()

TMP = tempfile.mkdtemp(prefix="lt_serve_play_")
SHOTS = servekit.screenshots_dir(TMP)
Q = "What is the capital of France? Answer in one sentence."
N = 24


def browser():
    return servekit.browser()


def wait(d, cond, what, limit=120):
    return servekit.wait_for(d, cond, what, limit)


def console_errors(d, what):
    servekit.console_errors(d, what)


def set_field(d, fid, value):
    f = d.find_element(By.ID, fid)
    f.clear()
    if value != "":
        f.send_keys(str(value))


# Both panes: [last answer's text, streaming?, done?] read in one script call.
PANES = """return ['left', 'right'].map((s) => {
  const log = document.getElementById('play-log-' + s);
  const a = log.querySelectorAll('.msg.assistant');
  const last = a.length ? a[a.length - 1] : null;
  return [last ? last.querySelector('.text').textContent : null,
          !!(last && last.classList.contains('streaming')), log.dataset.done === '1'];
});"""


def send_and_watch(d, text):
    """Sends text from the page; samples both panes until both answers are done. Returns
    (final texts, the distinct partial texts seen per pane, whether both streamed at once)."""
    set_field(d, "play-input", text)
    d.find_element(By.ID, "play-send").click()
    seen = [[], []]
    both = False
    t0 = time.time()
    while time.time() - t0 < 300:
        st = d.execute_script(PANES)
        for i in range(2):
            t = st[i][0]
            if st[i][1] and t and (not seen[i] or seen[i][-1] != t):
                seen[i].append(t)
        if st[0][1] and st[1][1] and st[0][0] and st[1][0]:
            both = True
        if st[0][2] and st[1][2]:
            return [st[0][0], st[1][0]], seen, both
        time.sleep(0.01)
    check(False, "the answers did not finish within 300 s")
    return [None, None], seen, both


def main():
    good = oaikit.write_lora(os.path.join(TMP, "styled"), seed=1)
    want_base = oaikit.generate("--chat", Q, "--max-tokens", str(N))
    want_ad = oaikit.generate("--chat", Q, "--max-tokens", str(N), "--adapter", good)
    check(want_base != want_ad, f"the adapter changes the greedy text: {want_base!r}")
    srv = oaikit.start(os.path.join(TMP, "work"), "--slots", "2", "--ctx", "512",
                       "--adapter", f"styled={good}")
    d = browser()
    try:
        run(d, srv.url, want_base, want_ad)
        nosrv = servekit.Server(os.path.join(TMP, "work-nomodel"))
        try:
            d.set_window_size(1280, 900)
            d.get(nosrv.url + "/playground")
            el = wait(d, lambda: d.find_elements(By.ID, "play-none"), "the no-model message", 30)
            check(el and "--model" in el[0].text, f"no model: {el[0].text if el else None!r}")
            console_errors(d, "playground without a model")
        finally:
            code, _, err = nosrv.stop()
            check(code == 0, f"no-model server exit code {code}: {err[-500:]}")
    finally:
        d.quit()
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")
    print("screenshots:", SHOTS)


def run(d, u, want_base, want_ad):
    d.get(u + "/playground")
    wait(d, lambda: d.find_elements(By.ID, "play-model-right"), "the playground", 30)
    left = Select(d.find_element(By.ID, "play-model-left"))
    right = Select(d.find_element(By.ID, "play-model-right"))
    opts = [o.get_attribute("value") for o in left.options]
    check(opts == [oaikit.BASE, "styled"], f"models offered: {opts}")
    check(left.first_selected_option.get_attribute("value") == oaikit.BASE and
          right.first_selected_option.get_attribute("value") == "styled",
          "the panes start as base | adapter")
    unlabeled = d.execute_script(
        "return [...document.querySelectorAll('main input, main select, main textarea')]"
        ".filter((e) => !e.labels || !e.labels.length).map((e) => e.id)")
    check(not unlabeled, f"fields without a label: {unlabeled}")

    # ---- greedy: both answers stream at once and equal loratune generate's
    set_field(d, "play-temperature", 0)
    set_field(d, "play-max-tokens", N)
    texts, seen, both = send_and_watch(d, Q)
    check(texts[0] == want_base, f"base answer {texts[0]!r} != loratune generate {want_base!r}")
    check(texts[1] == want_ad, f"adapter answer {texts[1]!r} != loratune generate --adapter {want_ad!r}")
    for i, side in enumerate(("left", "right")):
        grow = all(seen[i][k + 1].startswith(seen[i][k]) for k in range(len(seen[i]) - 1))
        check(len(seen[i]) >= 3 and grow,
              f"{side}: streamed (several growing partial texts): {seen[i][:5]}")
        chunks = int(d.find_element(By.ID, f"play-log-{side}").get_attribute("data-chunks") or 0)
        check(chunks >= 3, f"{side}: {chunks} chunks")
        stat = d.find_element(By.ID, f"play-stat-{side}").text
        check("finish: " in stat and "tokens/s" in stat, f"{side} stats: {stat!r}")
    check(both, "both panes were streaming at the same moment")
    d.save_screenshot(os.path.join(SHOTS, "playground.png"))

    # ---- a second turn: each pane sends its own history (checked against the API with it)
    q2 = "And of Italy?"
    texts2, _, _ = send_and_watch(d, q2)
    for i, (model, first) in enumerate(((oaikit.BASE, want_base), ("styled", want_ad))):
        r = requests.post(u + "/v1/chat/completions", timeout=600, json={
            "model": model, "temperature": 0, "max_tokens": N,
            "messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": first},
                         {"role": "user", "content": q2}]})
        ref = r.json()["choices"][0]["message"]["content"]
        check(texts2[i] == ref, f"second turn {model}: page {texts2[i]!r} != API with the history {ref!r}")
    n_msgs = d.execute_script("return document.querySelectorAll('#play-log-left .msg').length")
    check(n_msgs == 4, f"left pane holds 4 messages after two turns: {n_msgs}")

    # ---- sampling settings reach the server (new chat: one message)
    d.find_element(By.ID, "play-clear").click()
    check(d.execute_script("return document.querySelectorAll('.chat .msg').length") == 0, "New chat empties the panes")
    set_field(d, "play-temperature", 1)
    set_field(d, "play-top-p", 0.9)
    set_field(d, "play-seed", 7)
    set_field(d, "play-max-tokens", 16)
    texts3, _, _ = send_and_watch(d, Q)
    for i, model in enumerate((oaikit.BASE, "styled")):
        r = requests.post(u + "/v1/chat/completions", timeout=600, json={
            "model": model, "temperature": 1, "top_p": 0.9, "seed": 7, "max_tokens": 16,
            "messages": [{"role": "user", "content": Q}]})
        ref = r.json()["choices"][0]["message"]["content"]
        check(texts3[i] == ref, f"sampled {model}: page {texts3[i]!r} != API with the same settings {ref!r}")

    # ---- Stop aborts both streams. Greedy, so that neither answer can end on its own before
    # Stop (a sampled one sometimes did: end-of-text after a few words): the first of a few
    # prompts whose two greedy API answers both run to max_tokens (greedy text differs between
    # CPUs' kernels), and each stopped pane must hold a strict prefix of its full answer.
    for story in ("Tell me a long story about a dragon.", "Write a long poem about the sea.",
                  "Describe a day in the life of a medieval farmer, in great detail.",
                  "List as many animals as you can."):
        full, ends = [], []
        for model in (oaikit.BASE, "styled"):
            r = requests.post(u + "/v1/chat/completions", timeout=600, json={
                "model": model, "temperature": 0, "max_tokens": 400,
                "messages": [{"role": "user", "content": story}]}).json()["choices"][0]
            ends.append(r["finish_reason"])
            full.append(r["message"]["content"])
        if ends == ["length", "length"]:
            break
    check(ends == ["length", "length"], f"a prompt whose greedy answers run to max_tokens: {ends}")
    d.find_element(By.ID, "play-clear").click()  # one message: the API's answers above
    set_field(d, "play-temperature", 0)
    set_field(d, "play-seed", "")
    set_field(d, "play-max-tokens", 400)
    set_field(d, "play-input", story)
    d.find_element(By.ID, "play-send").click()
    wait(d, lambda: all(p[0] for p in d.execute_script(PANES)), "both answers started")
    d.find_element(By.ID, "play-stop").click()
    wait(d, lambda: all(p[2] for p in d.execute_script(PANES)), "both streams stopped", 30)
    stopped = d.execute_script("return document.querySelectorAll('.chat .msg.assistant .help').length")
    check(stopped == 2, f"both answers marked stopped: {stopped}")
    for (text, _, _), ref, side in zip(d.execute_script(PANES), full, ("left", "right")):
        check(ref.startswith(text) and len(text) < len(ref),
              f"{side}: the stopped answer is a strict prefix of the full one: {text[-40:]!r}")
    check(d.find_element(By.ID, "play-send").is_enabled(), "Send is enabled again after Stop")
    console_errors(d, "playground")

    # ---- phone width
    d.set_window_size(390, 844)
    d.get(u + "/playground")
    wait(d, lambda: d.find_elements(By.ID, "play-model-right"), "the playground (phone)", 30)
    w = d.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    check(w[0] <= w[1], f"playground: no horizontal scroll at 390 px: {w}")
    d.save_screenshot(os.path.join(SHOTS, "phone-playground.png"))


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
