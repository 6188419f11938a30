"""test_hf_tokenizer_peer.py - `loratune tokenize` against the PyPI `tokenizers` package.

For each tokenizer below, every text is encoded by one `loratune tokenize --json` process
(each stdin line a JSON string) and by tokenizers' encode_batch, and the ids must be
identical; then the ids are decoded by one `loratune tokenize --decode --json` process and
by decode_batch, and the texts must be identical.

Texts: every raw line of every fixture dataset file (datasets/*/*.jsonl and *.json), plus
every string value found inside those JSON documents (question/answer, instruction/input/
output, text, ... at any depth), plus hand-written hard strings (unicode, emoji, CJK,
combining marks, Arabic, digit runs, whitespace runs, CRLF, tabs, contractions, special
tokens embedded in text) and NORM_HARD strings for Unicode normalization and case. The hard
strings are also checked with add_special_tokens=False,
encode_special_tokens=True (our --no-parse-special) and skip_special_tokens=True.

Tokenizers: SmolLM tokenizer.json (merges as strings and as pairs; truncation/padding of
that fine-tuning repo switched off in the reference), GPT-2 tokenizer.json, the GPT-2 GGUF
fixture, GGUFs built here with the gguf package (from SmolLM with tokenizer.ggml.pre "smollm";
from GPT-2's vocabulary with "llama-bpe" and "qwen2", against the matching tokenizer.json
variants below; qwen2 with NFC), and tokenizer.json
files built here with tokenizers itself: Llama 2 style (from the llama2-spm tokenizer.model:
BPE with byte_fallback + unk, Prepend/Replace normalizer, Replace/ByteFallback/Fuse/Strip
decoder, BOS template), the same with a Metaspace pre-tokenizer/decoder (prepend "first"
without split, and "always" with split), a Llama 3 style
(Split regex + ByteLevel without regex, ignore_merges, BOS template, added tokens with
lstrip/rstrip/single_word), a Qwen2 style regex, and one with every Split behavior and a
Regex Replace normalizer, and Qwen2 style ones with the NFC, NFD, NFKC, NFKD and
Lowercase+NFC normalizers (on every 29th text plus the hard strings; NEWER_UNICODE strings,
where tokenizers' older Unicode tables differ by design, are compared with unicodedata
instead). SmolLM and GPT-2 run on every text (the merges-as-pairs file shares
the reference ids of tokenizer.json: same vocabulary, merges and pipeline); the derived
tokenizers on every 7th text plus the hard strings, to keep the test near two minutes.
"""
import glob
import json
import os
import shutil
import sys
import tempfile
import unicodedata

import gguf
import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import FIXTURES, check, finish, tokenize  # noqa: E402

TOK = os.path.join(FIXTURES, "tokenizers")


def strings_in(obj, out):
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            strings_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            strings_in(v, out)


def dataset_texts():
    texts = []
    files = sorted(glob.glob(os.path.join(FIXTURES, "datasets/*/*.jsonl")) +
                   glob.glob(os.path.join(FIXTURES, "datasets/*/*.json")))
    for path in files:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        lines = raw.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        texts.extend(lines)
        if path.endswith(".jsonl"):
            for line in lines:
                if line.strip():
                    strings_in(json.loads(line), texts)
        else:
            strings_in(json.loads(raw), texts)
    return files, texts


HARD = [
    "", " ", "  ", "\n", "\n\n\n", "\r\n", "a\r\nb\r\n", "\t", "\ttab\t\ttabs  ",
    "Hello world", " Hello world", "Hello  world   ", "   leading spaces",
    "I'M I'm you're WE'VE they'll she'd it's ’s 's", "don't DON'T Don'T",
    "12345678", "1 22 333 4444 55555", "3.14159 -42 1e10 0x1F", "٣٤٥ ①②③ ½",
    "café résumé naïve", "e\u0301 a\u0300\u0301 combining",
    "日本語のテキスト、中文文本。한국어", "مرحبا بالعالم", "שלום עולם",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷", "math ∑∫√∞ ≤≥ ≠", "zero\u200bwidth\u200djoin",
    "nbsp\u00a0here\u3000ideo", "<|im_start|>user\nHi<|im_end|>\n",
    "text<|endoftext|>more <|endoftext|> end<|endoftext|>", "<|im_start|><|im_end|>",
    "<s>bos</s> <unk> [PAD]", "  <|im_start|>  spaced  <|im_end|>  ",
    "<user>x</user> <user> hello there hello therefore", "▁meta▁space ▁",
    "<0x0A> <0xFF>", "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", "a" * 300,
    "word " * 50, "\x00nul\x01ctl\x7f", "x\u0085y\u2028z\u2029w", "ſ K Ǆ ǅ ǆ",
    "https://example.com/path?q=1&r=2#frag", "def f(x):\n    return x ** 2\n",
    "  \n  \n\t\n", "x tab\tab y tab\t\tab tab ab tba ba", "ÀÉÎÕÜ àéîõü ßẞ", "Ꭰꭰ ΑΒΓ αβγ ЖЗИ жзи",
]

# Unicode normalization and case: composed/decomposed pairs, canonical reordering, composition
# exclusions, Hangul jamo vs syllables, compatibility characters, special casings. Also in the
# comparison of every tokenizer (they add little time there).
NORM_HARD = [
    "e\u0301 vs \u00e9", "cafe\u0301 café cafe\u0301 au lait café au lait", "\u0301abc \u0301",
    "\u1100\u1161\u11a8 \uac01 \u1100\u1161 \uac00\u11a8 " + "\u1112\u1161\u11ab\u1100\u116e\u11a8",
    "ﬁnance ﬂow ﬃ ﬀ ﬆ \ufb01", "１２３ ４５６ ＡＢＣ ａｂｃ ＨＥＬＬＯ ｗｏｒｌｄ！", "\u212b \u00c5 A\u030a \u212b\u0301",
    "\u212a Kelvin K \u2126 \u03a9 Ohm", "ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ σς ΑΣ", "İstanbul İİ i\u0307 I\u0307 ı",
    "Ǆ ǅ ǆ Ⅻ ⅻ ß ẞ ŉ ǰ", "½ ① ² ™ ℌ ㎏ ㍻ ﷺ ﴾", "a\u0301\u0327 a\u0327\u0301 q\u0307\u0323 \u1e0b\u0323",
    "\u0958 \u0915\u093c \u2adc \u0344 \u0f73 \u1e9b\u0323", "ÉCOLE École e\u0301cole", "\u00c5\u0301 A\u0301\u030a",
    "e\u0301<|endoftext|>\u0301x", "<user>e\u0301</user>\u0301", "\u3300 \u30ac \u30ab\u3099 \uff76\uff9e",
    "\u0130\u0049\u0131 \u03a3\u0345 \u1f80 \u1fb3", "Å" * 40 + "A\u030a" * 40,
]
# Characters newer than Unicode 9.0: tokenizers' NFC..NFKD tables (crate
# unicode-normalization-alignments 0.1.12) are Unicode 9.0 and its Lowercase (Rust's char) is
# newer than utf8proc's Unicode 15.0, so these differ from tokenizers by design; they are
# checked against Python's unicodedata (Unicode 14.0) instead.
NEWER_UNICODE = [
    "a\u07fd\u0301 NKo (Unicode 11)", "a\u1df6\u0301 (Unicode 10)", "\u32ff Reiwa (Unicode 12.1)",
    "\ua7f2 \U00010781 modifier letters (Unicode 14)", "\u0d3b\u0d3c \u1715 \u08d3",
    "\U00010d50\U00010d51 \u1c89 \ua7cb cased (Unicode 16)",
]


def encode_ours(src, texts, extra=()):
    out = tokenize([*src, "--json", *extra], [json.dumps(t) for t in texts])
    if out is None:
        return None
    return [[int(x) for x in l.split()] for l in out]


def decode_ours(src, ids, extra=()):
    out = tokenize([*src, "--decode", "--json", *extra], [" ".join(map(str, i)) for i in ids])
    if out is None:
        return None
    return [json.loads(l) for l in out]


def compare(name, what, texts, got, want):
    if got is None:
        check(False, f"{name} {what}: loratune failed")
        return
    if len(got) != len(want):
        check(False, f"{name} {what}: {len(got)} outputs for {len(want)} inputs")
        return
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    for i in bad[:3]:
        print(f"  {name} {what} mismatch on {texts[i]!r:.200}\n    ours: {got[i]!r:.300}\n"
              f"    ref:  {want[i]!r:.300}")
    check(not bad, f"{name} {what}: {len(bad)} of {len(want)} differ")


def run_peer(name, src, ref, texts, want=None):
    """src: loratune args naming the tokenizer; ref: tokenizers.Tokenizer; want: ref's ids
    for texts when already computed."""
    ref.no_truncation()
    ref.no_padding()
    if want is None:
        want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=True)]
    got = encode_ours(src, texts)
    compare(name, "encode", texts, got, want)
    dec_want = ref.decode_batch(want, skip_special_tokens=False)
    compare(name, "decode", texts, decode_ours(src, want), dec_want)
    # options, on the hard strings
    hw = [e.ids for e in ref.encode_batch(HARD, add_special_tokens=False)]
    compare(name, "encode --no-add-special", HARD, encode_ours(src, HARD, ["--no-add-special"]),
            hw)
    ref.encode_special_tokens = True
    hw = [e.ids for e in ref.encode_batch(HARD, add_special_tokens=True)]
    ref.encode_special_tokens = False
    compare(name, "encode --no-parse-special", HARD,
            encode_ours(src, HARD, ["--no-parse-special"]), hw)
    ids = [e.ids for e in ref.encode_batch(HARD, add_special_tokens=True)]
    compare(name, "decode --skip-special", HARD, decode_ours(src, ids, ["--skip-special"]),
            ref.decode_batch(ids, skip_special_tokens=True))
    print(f"{name}: {len(texts)} texts compared")
    return len(texts), want


def spm_tokenizer_json(path, metaspace):
    """A Llama 2 style tokenizer.json built with tokenizers from the sentencepiece model:
    merges derived from the vocabulary the way transformers' converter does."""
    sp = spm.SentencePieceProcessor(model_file=path)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = []
    for piece, pid in vocab.items():
        local = []
        for k in range(1, len(piece)):
            l, r = piece[:k], piece[k:]
            if l in vocab and r in vocab:
                local.append((l, r, pid))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    bpe = models.BPE(vocab=vocab, merges=[(l, r) for l, r, _ in merges], unk_token="<unk>",
                     fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.add_special_tokens([AddedToken(sp.id_to_piece(i), normalized=False, special=True)
                            for i in range(n) if sp.is_control(i) or sp.is_unknown(i)])
    if metaspace:
        scheme, split = metaspace
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme,
                                                     split=split)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=split)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return tok


LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def regex_variant(base_json, pattern, ignore_merges, bos, extra_added, normalizer=None):
    d = json.load(open(base_json, encoding="utf-8"))
    d["normalizer"] = normalizer
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    d["model"]["ignore_merges"] = ignore_merges
    if bos:
        d["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [d["model"]["vocab"][bos]],
                                      "tokens": [bos]}}}]}
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_tokens(extra_added)
    return tok


def gguf_from_json(src, path, pre, bos, add_bos):
    d = json.load(open(src, encoding="utf-8"))
    vocab = dict(d["model"]["vocab"])
    for a in d["added_tokens"]:
        vocab.setdefault(a["content"], a["id"])
    tokens = [None] * len(vocab)
    for k, v in vocab.items():
        tokens[v] = k
    specials = {a["id"] for a in d["added_tokens"] if a["special"]}
    types = [3 if i in specials else 1 for i in range(len(tokens))]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in d["model"]["merges"]])
    w.add_bos_token_id(bos)
    w.add_eos_token_id(bos)
    w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    files, texts = dataset_texts()
    texts = list(dict.fromkeys(texts + HARD + NORM_HARD))  # unique, in order
    print(f"{len(texts)} distinct texts from {len(files)} dataset files + "
          f"{len(HARD) + len(NORM_HARD)} hard strings")
    # the derived tokenizers (GGUF, built here) get every 7th text plus the hard strings
    some = list(dict.fromkeys(texts[::7] + HARD + NORM_HARD))
    # the Unicode normalizer variants every 29th
    few = list(dict.fromkeys(texts[::29] + HARD + NORM_HARD))
    total = 0
    tmp = tempfile.mkdtemp(prefix="lt_hf_peer_")

    # the acceptance set: SmolLM (both merge encodings) and GPT-2 on every text
    sm_path = os.path.join(TOK, "smollm/tokenizer.json")
    n, sm_want = run_peer("smollm", ["--tokenizer", sm_path], Tokenizer.from_file(sm_path), texts)
    total += n
    # same vocabulary, merges and pipeline (SOURCE.md): the reference ids are shared
    p = os.path.join(TOK, "smollm/tokenizer.merges-as-pairs.json")
    total += run_peer("smollm-pairs", ["--tokenizer", p], Tokenizer.from_file(p), texts,
                      want=sm_want)[0]
    p = os.path.join(TOK, "gpt2/tokenizer.json")
    gpt2 = Tokenizer.from_file(p)
    total += run_peer("gpt2", ["--tokenizer", p], gpt2, texts)[0]

    # the same tokenizer through a model folder
    ref = Tokenizer.from_file(sm_path)
    ref.no_truncation()
    ref.no_padding()
    check(tokenize(["--model", os.path.join(TOK, "smollm")], ["<|im_start|>hi"]) ==
          [" ".join(map(str, ref.encode("<|im_start|>hi").ids))], "--model folder")

    # GGUF "gpt2" vocabularies
    total += run_peer("gguf-gpt2", ["--model", os.path.join(TOK, "gpt2/ggml-vocab-gpt-2.gguf")],
                      gpt2, some)[0]
    gp = os.path.join(tmp, "smollm.gguf")
    gguf_from_json(sm_path, gp, "smollm", 0, False)
    total += run_peer("gguf-smollm", ["--model", gp], Tokenizer.from_file(sm_path), some)[0]
    # llama-bpe (Llama 3 regex, ignore_merges, BOS added) and qwen2 (no BOS) from GPT-2's vocab
    gpt2_path = os.path.join(TOK, "gpt2/tokenizer.json")
    # qwen2 gets NFC, as Qwen2's tokenizer.json (llama.cpp skips it; see docs)
    for pre, pat, im, bos, nm in [("llama-bpe", LLAMA3_RE, True, "<|endoftext|>", None),
                                  ("qwen2", QWEN2_RE, False, None, {"type": "NFC"})]:
        gp = os.path.join(tmp, pre + ".gguf")
        gguf_from_json(gpt2_path, gp, pre, 50256, bos is not None)
        total += run_peer("gguf-" + pre, ["--model", gp],
                          regex_variant(gpt2_path, pat, im, bos, [], nm), some)[0]

    # tokenizer.json files built here with tokenizers itself
    spm_model = os.path.join(TOK, "llama2-spm/tokenizer.model")
    for name, meta in [("llama2-legacy", None), ("llama2-metaspace", ("first", False)),
                       ("llama2-metaspace-split", ("always", True))]:
        tok = spm_tokenizer_json(spm_model, meta)
        p = os.path.join(tmp, name + ".json")
        tok.save(p)
        total += run_peer(name, ["--tokenizer", p], Tokenizer.from_file(p), some)[0]

    extra = [AddedToken("<user>", special=True, lstrip=True, rstrip=True, normalized=False),
             AddedToken("</user>", special=True, normalized=False),
             AddedToken("hello there", special=False, single_word=True, normalized=True)]
    for name, pat, im in [("llama3-style", LLAMA3_RE, True), ("qwen2-style", QWEN2_RE, False)]:
        tok = regex_variant(os.path.join(TOK, "gpt2/tokenizer.json"), pat, im, "<|endoftext|>",
                            extra)
        p = os.path.join(tmp, name + ".json")
        tok.save(p)
        total += run_peer(name, ["--tokenizer", p], Tokenizer.from_file(p), some)[0]

    # Unicode normalizers: Qwen2 style (NFC, Qwen2 regex, ByteLevel without regex, no BOS) and
    # the same with NFD, NFKC, NFKD and Lowercase (in a Sequence, before NFC). Added tokens:
    # normalized ones are matched by their normalized form, the others only as written.
    uni_added = extra + [AddedToken("cafe\u0301 au lait", special=False, normalized=True),
                         AddedToken("ﬁ１", special=False, normalized=True),
                         AddedToken("\u00c5ngstr\u00f6m", special=False, normalized=True),
                         AddedToken("e\u0301t\u00e9", special=False, normalized=False)]
    lower_nfc = {"type": "Sequence", "normalizers": [{"type": "Lowercase"}, {"type": "NFC"}]}
    for name, nm in [("qwen2-nfc", {"type": "NFC"}), ("nfd", {"type": "NFD"}),
                     ("nfkc", {"type": "NFKC"}), ("nfkd", {"type": "NFKD"}),
                     ("lowercase-nfc", lower_nfc)]:
        tok = regex_variant(gpt2_path, QWEN2_RE, False, None, uni_added, nm)
        p = os.path.join(tmp, name + ".json")
        tok.save(p)
        total += run_peer(name, ["--tokenizer", p], Tokenizer.from_file(p), few)[0]
        # characters newer than tokenizers' Unicode tables: ours against unicodedata. A
        # byte-level decode gives back the normalized text exactly.
        got = encode_ours(["--tokenizer", p], NEWER_UNICODE, ["--no-add-special"])
        back = decode_ours(["--tokenizer", p], got) if got is not None else None
        if name == "lowercase-nfc":
            want = [unicodedata.normalize("NFC", "".join(ch.lower() for ch in t))
                    for t in NEWER_UNICODE]
        else:
            want = [unicodedata.normalize(nm["type"], t) for t in NEWER_UNICODE]
        compare(name, "newer-Unicode text vs unicodedata", NEWER_UNICODE, back, want)
        ref = Tokenizer.from_file(p).normalizer
        n_diff = sum(ref.normalize_str(t) != w for t, w in zip(NEWER_UNICODE, want))
        print(f"{name}: tokenizers differs on {n_diff} of {len(NEWER_UNICODE)} newer-Unicode "
              f"strings (its tables are older; documented)")

    # every Split behavior, invert, String and Regex patterns, a Regex Replace normalizer
    d = json.load(open(os.path.join(TOK, "gpt2/tokenizer.json"), encoding="utf-8"))
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Replace", "pattern": {"Regex": "\\t+"}, "content": " "},
        {"type": "Replace", "pattern": {"String": "ab"}, "content": "ba"}]}
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "[.,!?]"}, "behavior": "MergedWithPrevious",
         "invert": False},
        {"type": "Split", "pattern": {"String": "\n"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\p{N}+"}, "behavior": "Contiguous",
         "invert": True},
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\p{Lu}"}, "behavior": "Isolated",
         "invert": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
         "use_regex": False}]}
    p = os.path.join(tmp, "split-behaviors.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(d, f)
    tok = Tokenizer.from_file(p)
    # a normalized added token is matched by its normalized form ("tba ba")
    tok.add_tokens([AddedToken("tab\tab", normalized=True, special=False)])
    tok.save(p)
    total += run_peer("split-behaviors", ["--tokenizer", p], Tokenizer.from_file(p), some)[0]

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"compared {total} texts in all, each encode and decode")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
