"""test_spm_peer.py - our sentencepiece BPE encode/decode against the PyPI `sentencepiece`
package, driven through `loratune tokenize`.

Tokenizers: Llama 2's tokenizer.model (remove_extra_whitespaces off) and stories260K's
tok512.model (remove_extra_whitespaces on), both BPE with byte fallback.
Texts: every string value of every line of /fixtures/datasets/*/*.jsonl (questions,
answers, instructions, ...), sent to `loratune tokenize --json` so newlines survive.
Encode: `--no-special` (no BOS, no special-token parsing) must equal
SentencePieceProcessor.encode(text) (which adds nothing). Decode: the reference ids of
every text, and 3000 random id sequences over the whole vocabulary (control, unk, byte and
normal pieces mixed), through `--decode --skip-special --json` must equal
SentencePieceProcessor.decode(ids).
Synthetic models: small BPE ModelProtos written here byte by byte (no protobuf package
needed) exercise what the real ones lack - UNUSED pieces (merged, then split back),
USER_DEFINED pieces (matched whole), byte_fallback off (runs of unknown characters share
one <unk>), remove_extra_whitespaces, add_dummy_prefix off, escape_whitespaces off - on
random texts, both directions, against sentencepiece loading the very same file.
Prints the match counts and `N passed, M failed`."""
import glob
import json
import os
import random
import sys

import struct
import tempfile

import sentencepiece as spm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import FIXTURES, check, finish, tokenize  # noqa: E402


def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def dataset_texts():
    texts = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "datasets", "*", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    texts.extend(strings(json.loads(line)))
    return texts


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def test_model(name, path, texts):
    sp = spm.SentencePieceProcessor(model_file=path)
    n = sp.vocab_size()

    # encode
    want = sp.encode(texts)  # batch call: one list of ids per text
    out = tokenize(["--tokenizer", path, "--json", "--no-special"], [json.dumps(t) for t in texts])
    got = [[int(x) for x in l.split()] for l in out] if out is not None else []
    ok = 0
    shown = 0
    for t, w, g in zip(texts, want, got):
        if w == g:
            ok += 1
        elif shown < 5:
            shown += 1
            i = first_diff(w, g)
            print(f"{name}: encode differs at id {i} for {t[:80]!r}:\n  want {w[max(0,i-3):i+5]}\n  got  {g[max(0,i-3):i+5]}")
    print(f"{name}: encode {ok}/{len(texts)} texts match sentencepiece")
    check(len(got) == len(texts) and ok == len(texts), f"{name}: encode {ok}/{len(texts)}")

    # decode: reference ids of the texts, then random id sequences
    rnd = random.Random(1234)
    seqs = [w for w in want]
    specials = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    for _ in range(3000):
        k = rnd.randint(1, 12)
        s = []
        for _ in range(k):
            r = rnd.random()
            if r < 0.15:
                s.append(rnd.choice(specials))
            elif r < 0.45:
                s.append(rnd.randint(3, 258))  # byte pieces <0x00>..<0xFF> in both models
            else:
                s.append(rnd.randrange(n))
        seqs.append(s)
    want_txt = sp.decode(seqs)
    out = tokenize(["--tokenizer", path, "--decode", "--json", "--skip-special"],
                   [" ".join(map(str, s)) for s in seqs])
    got_txt = [json.loads(l) for l in out] if out is not None else []
    ok_text = sum(1 for w, g in zip(want_txt[:len(texts)], got_txt[:len(texts)]) if w == g)
    ok_rand = sum(1 for w, g in zip(want_txt[len(texts):], got_txt[len(texts):]) if w == g)
    shown = 0
    for s, w, g in zip(seqs, want_txt, got_txt):
        if w != g and shown < 5:
            shown += 1
            print(f"{name}: decode {s} differs:\n  want {w!r}\n  got  {g!r}")
    print(f"{name}: decode {ok_text}/{len(texts)} text id lists and {ok_rand}/{len(seqs) - len(texts)} "
          f"random id lists match sentencepiece")
    check(len(got_txt) == len(seqs) and ok_text + ok_rand == len(seqs), f"{name}: decode")


# ---- synthetic models ------------------------------------------------------------------
def pb_varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_field(num, wire, payload):
    key = pb_varint(num << 3 | wire)
    if wire == 0:
        return key + pb_varint(payload)
    if wire == 2:
        return key + pb_varint(len(payload)) + payload
    if wire == 5:
        return key + payload
    raise ValueError(wire)


SP = "\u2581"


def synth_model(pieces, byte_fallback, dummy, remove_ws, escape):
    """pieces: list of (text, type); scores descend with position among normal pieces."""
    out = bytearray()
    for i, (text, typ) in enumerate(pieces):
        score = -float(i) if typ in (1, 4, 5) else 0.0
        body = pb_field(1, 2, text.encode()) + pb_field(2, 5, struct.pack("<f", score)) + pb_field(3, 0, typ)
        out += pb_field(1, 2, body)
    trainer = pb_field(3, 0, 2) + pb_field(35, 0, 1 if byte_fallback else 0)
    norm = (pb_field(1, 2, b"identity") + pb_field(3, 0, int(dummy)) + pb_field(4, 0, int(remove_ws))
            + pb_field(5, 0, int(escape)))
    out += pb_field(2, 2, trainer) + pb_field(3, 2, norm)
    return bytes(out)


def synth_pieces(byte_fallback, escape):
    sp_ = SP if escape else " "
    p = [("<unk>", 2), ("<s>", 3), ("</s>", 3)]
    if byte_fallback:
        p += [("<0x%02X>" % b, 6) for b in range(256)]
    # merge order by score: earlier = higher
    normal = [sp_ + sp_, "ab", sp_ + "a", "cd", "abc", sp_ + "ab", "bc", sp_ + "c", "dd", "abcd",
              sp_ + "abcd", "ba", sp_ + sp_ + sp_ + sp_, "é", "ée", sp_ + "é"]
    unused = ["ca", "cab", "aa"]      # reachable by merges, must be split back
    user = ["<sep>", "xy"]            # matched whole, never merged
    chars = [sp_, "a", "b", "c", "d", "e", "x", "y"]
    for t in normal[:6]:
        p.append((t, 1))
    for t in unused:
        p.append((t, 5))
    for t in normal[6:]:
        p.append((t, 1))
    for t in user:
        p.append((t, 4))
    for t in chars:
        p.append((t, 1))
    return p


def random_text(rnd):
    alphabet = ["a", "b", "c", "d", "e", " ", " ", "  ", "x", "y", "xy", "<sep>", "é", "z", "\n",
                "\u00fc", "\U0001F600", "\u2581", "ab", "cab", "aa", "<s>"]
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))


def test_synthetic(tmpdir):
    rnd = random.Random(99)
    texts = ["", " ", "   ", "a", " a", "a ", "  a  b  ", "abcd", "cab", "caba", "aab", "xyxy",
             "<sep><sep>", "zzz", "zz a zz", "ée é", "\n\n", "a\u2581", "\u2581\u2581"]
    texts += [random_text(rnd) for _ in range(1500)]
    variants = [
        # byte_fallback, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces
        (1, 1, 0, 1), (0, 1, 0, 1), (1, 1, 1, 1), (0, 0, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0),
    ]
    for v in variants:
        name = "synthetic bf=%d dummy=%d rmws=%d esc=%d" % v
        path = os.path.join(tmpdir, "synth_%d%d%d%d.model" % v)
        pieces = synth_pieces(v[0], v[3])
        with open(path, "wb") as f:
            f.write(synth_model(pieces, *v))
        try:
            sp = spm.SentencePieceProcessor(model_file=path)
        except Exception as e:  # the peer refuses the model: our test is wrong
            check(False, f"{name}: sentencepiece cannot load it: {e}")
            continue
        n = sp.vocab_size()
        want = sp.encode(texts)  # batch call: one list of ids per text
        out = tokenize(["--tokenizer", path, "--json", "--no-special"],
                       [json.dumps(t) for t in texts])
        got = [[int(x) for x in l.split()] for l in out] if out is not None else []
        ok = sum(1 for w, g in zip(want, got) if w == g)
        shown = 0
        for t, w, g in zip(texts, want, got):
            if w != g and shown < 3:
                shown += 1
                print(f"{name}: encode {t!r}:\n  want {w} {[sp.id_to_piece(i) for i in w]}\n  got  {g}")
        seqs = want + [[rnd.randrange(n) for _ in range(rnd.randint(1, 8))] for _ in range(500)]
        want_txt = sp.decode(seqs)
        out = tokenize(["--tokenizer", path, "--decode", "--json", "--skip-special"],
                       [" ".join(map(str, s)) for s in seqs])
        got_txt = [json.loads(l) for l in out] if out is not None else []
        dok = sum(1 for w, g in zip(want_txt, got_txt) if w == g)
        for s, w, g in zip(seqs, want_txt, got_txt):
            if w != g and shown < 6:
                shown += 1
                print(f"{name}: decode {s}:\n  want {w!r}\n  got  {g!r}")
        print(f"{name}: encode {ok}/{len(texts)}, decode {dok}/{len(seqs)} match sentencepiece")
        check(len(got) == len(texts) and ok == len(texts), f"{name}: encode {ok}/{len(texts)}")
        check(len(got_txt) == len(seqs) and dok == len(seqs), f"{name}: decode {dok}/{len(seqs)}")


def main():
    with tempfile.TemporaryDirectory() as tmpdir:
        test_synthetic(tmpdir)
    texts = dataset_texts()
    # 7108 strings in the datasets carried under tests/fixtures (GSM8K test split only)
    check(len(texts) > 7000, f"expected the fixture datasets' texts, got {len(texts)}")
    test_model("llama2-spm", os.path.join(FIXTURES, "tokenizers/llama2-spm/tokenizer.model"), texts)
    test_model("tok512", os.path.join(FIXTURES, "stories260K/tok512.model"), texts)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
