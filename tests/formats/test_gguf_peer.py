#!/usr/bin/env python3
"""test_gguf_peer.py - our GGUF reader/writer and dequantizers against the PyPI `gguf` package.

(a) files written by gguf.GGUFWriter (every kv type, F32/F16/BF16/F64/int and quantized
    tensors, default and custom alignment) and two shared fixtures are read by our reader:
    `test_gguf --dump FILE` must agree with gguf.GGUFReader on kv order, types and values,
    tensor names, ggml types, shapes (ours outermost-first = reversed ne), data offsets, raw
    bytes, and the float32 values of gguf.quants.dequantize (bit-exact).
(b) a file written by our writer (`test_gguf --write SPEC OUT`) is read back by GGUFReader
    with identical kvs (in order) and tensor bytes, and is byte-identical to the file
    GGUFWriter writes for the same content.
The test_gguf program sits next to the loratune program in the build folder.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V, quants

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import FIXTURES, check, finish, tool  # noqa: E402

SEED = 4242  # differs from tools/gen_quant_goldens.py


def gguf_tool():
    exe = tool("test_gguf")
    if not os.path.exists(exe):
        raise SystemExit(f"test_gguf not found next to LORATUNE: {exe}")
    return exe


def enc_scalar(vtype, part):
    """Encode one value the way test_gguf --dump does."""
    if vtype in (V.FLOAT32, V.FLOAT64, V.STRING):
        return bytes(part.tobytes()).hex()
    if vtype == V.BOOL:
        return bool(part[0])
    if vtype == V.UINT64:
        return str(int(part[0]))
    return int(part[0])


def expected_kvs(reader):
    out = []
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # header pseudo-fields
        t = f.types[0]
        e = {"key": key, "type": int(t)}
        if t == V.ARRAY:
            et = f.types[-1]
            e["elem_type"] = int(et)
            e["value"] = [enc_scalar(et, f.parts[i]) for i in f.data]
        else:
            e["value"] = enc_scalar(t, f.parts[f.data[0]])
        out.append(e)
    return out


def deq(t):
    raw = np.asarray(t.data)
    tt = t.tensor_type
    if tt in (Q.I8, Q.I16, Q.I32, Q.I64, Q.F64):
        return raw.reshape(-1).astype(np.float32)
    return np.asarray(quants.dequantize(raw.view(np.uint8) if tt not in (Q.F32, Q.F16) else raw,
                                        tt), dtype=np.float32).reshape(-1)


def compare_dump(path, label):
    r = gguf.GGUFReader(path)
    p = subprocess.run([gguf_tool(), "--dump", path], capture_output=True, text=True)
    check(p.returncode == 0, f"{label}: --dump failed: {p.stderr.strip()}")
    if p.returncode != 0:
        return
    d = json.loads(p.stdout)
    check(d["version"] == int(r.fields["GGUF.version"].parts[-1][0]), f"{label}: version")
    check(d["alignment"] == r.alignment, f"{label}: alignment {d['alignment']} vs {r.alignment}")
    exp = expected_kvs(r)
    check([k["key"] for k in d["kv"]] == [k["key"] for k in exp], f"{label}: kv keys/order")
    for a, b in zip(d["kv"], exp):
        check(a == b, f"{label}: kv {b['key']}: ours {str(a)[:200]} vs gguf {str(b)[:200]}")
    check(len(d["tensors"]) == len(r.tensors), f"{label}: tensor count")
    for a, t in zip(d["tensors"], r.tensors):
        name = t.name
        check(a["name"] == name, f"{label}: tensor name {a['name']} vs {name}")
        check(a["ggml_type"] == int(t.tensor_type), f"{label}: {name} type")
        check(a["shape"] == [int(x) for x in reversed(t.shape)],
              f"{label}: {name} shape {a['shape']} vs ne {list(t.shape)}")
        check(a["offset"] == int(t.data_offset), f"{label}: {name} offset")
        raw = np.asarray(t.data).tobytes()
        check(a["data"] == raw.hex(), f"{label}: {name} raw bytes")
        want = deq(t).tobytes()
        got = bytes.fromhex(a["f32"])
        if got != want:
            g32 = np.frombuffer(got, np.float32)
            w32 = np.frombuffer(want, np.float32)
            k = int(np.nonzero(g32.view(np.uint32) != w32.view(np.uint32))[0][0]) \
                if len(g32) == len(w32) else -1
            check(False, f"{label}: {name} ({t.tensor_type.name}) dequant differs at {k}: "
                         f"{g32[k] if k >= 0 else ''} vs {w32[k] if k >= 0 else ''}")
        else:
            check(True, "")


F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def random_quant(rng, qt, rows, cols):
    """Random blocks of type qt with sane f16 scales (finite results), shape (rows, cols)."""
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = rows * cols // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in F16_FIELDS[qt.name]:
        s = (rng.uniform(0.01, 1.0, nb) * rng.choice([-1, 1], nb)).astype(np.float16)
        raw[:, off:off + 2] = s.view(np.uint8).reshape(nb, 2)
    return raw.reshape(rows, cols // bs * ts)


def write_peer_file(path, rng, alignment=None):
    w = gguf.GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -2147483648)
    w.add_float32("t.f32", 3.14159)
    w.add_uint64("t.u64", 18446744073709551615)
    w.add_int64("t.i64", -9223372036854775808)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_bool("t.true", True)
    w.add_bool("t.false", False)
    w.add_string("t.str", "h\u00e9llo \u2581world \U0001F600")
    w.add_string("t.empty", "")
    for name, vt, vals in [("a.u8", V.UINT8, [0, 255, 7]), ("a.i8", V.INT8, [-128, 127]),
                           ("a.u16", V.UINT16, [1, 65535]), ("a.i16", V.INT16, [-5, 5]),
                           ("a.u32", V.UINT32, [1, 2, 3]), ("a.i32", V.INT32, [-1, 0, 1]),
                           ("a.f32", V.FLOAT32, [0.5, -2.25, 1e-8]),
                           ("a.u64", V.UINT64, [2**64 - 1, 0]), ("a.i64", V.INT64, [-2**63, 9]),
                           ("a.f64", V.FLOAT64, [1e300, -0.1]), ("a.bool", V.BOOL, [True, False]),
                           ("a.str", V.STRING, ["<s>", "", "\u2581the", "a b"])]:
        w.add_key_value(name, vals, V.ARRAY, sub_type=vt)
    x = rng.normal(0, 1, (4, 64)).astype(np.float32)
    w.add_tensor("f32.3d", rng.normal(0, 1, (2, 3, 5)).astype(np.float32))
    w.add_tensor("f32.4d", rng.normal(0, 1, (2, 1, 3, 4)).astype(np.float32))
    w.add_tensor("f16", x.astype(np.float16))
    w.add_tensor("bf16", quants.quantize(x, Q.BF16), raw_dtype=Q.BF16)
    w.add_tensor("f64", rng.normal(0, 1, (3, 2)).astype(np.float64))
    w.add_tensor("i8", rng.integers(-128, 128, (5,), dtype=np.int8))
    w.add_tensor("i16", rng.integers(-30000, 30000, (2, 3), dtype=np.int16))
    w.add_tensor("i32", rng.integers(-2**31, 2**31 - 1, (7,), dtype=np.int32))
    w.add_tensor("i64", rng.integers(-2**62, 2**62, (3,), dtype=np.int64))
    for qt in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1):
        w.add_tensor(qt.name.lower(), quants.quantize(x, qt), raw_dtype=qt)
    for qt in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        w.add_tensor(qt.name.lower(), random_quant(rng, qt, 3, 512),
                     raw_dtype=qt)
    w.add_tensor("q4_0.rand", random_quant(rng, Q.Q4_0, 2, 64),
                 raw_dtype=Q.Q4_0)
    w.add_tensor("q5_1.rand", random_quant(rng, Q.Q5_1, 2, 64),
                 raw_dtype=Q.Q5_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def enc_for_spec(vt, v):
    if vt == V.FLOAT32:
        return np.float32(v).tobytes().hex()
    if vt == V.FLOAT64:
        return np.float64(v).tobytes().hex()
    if vt == V.STRING:
        return v.encode("utf-8").hex()
    if vt == V.BOOL:
        return bool(v)
    if vt == V.UINT64:
        return str(v)
    return int(v)


def gguf_writer_twin(path, kvs, arrs, tensors, align):
    """The same content written by gguf.GGUFWriter (architecture first, like ours)."""
    w = gguf.GGUFWriter(path, kvs[0][2])
    for k, vt, v in kvs[1:]:
        if k == "general.alignment":
            w.add_custom_alignment(v)
        else:
            w.add_key_value(k, v, vt)
    for k, vt, vals in arrs:
        w.add_key_value(k, vals, V.ARRAY, sub_type=vt)
    for name, dt, shape, data in tensors:
        qt = Q[dt]
        if qt in (Q.F32, Q.F16, Q.I32):
            npdt = {Q.F32: np.float32, Q.F16: np.float16, Q.I32: np.int32}[qt]
            w.add_tensor(name, np.frombuffer(data, npdt).reshape(shape))
        else:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = (*shape[:-1], shape[-1] // bs * ts)
            w.add_tensor(name, np.frombuffer(data, np.uint8).reshape(byte_shape), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_our_writer(tmp, rng, align):
    label = f"our writer (alignment {align or 'default'})"
    kvs = [("general.architecture", V.STRING, "llama")]
    if align:
        kvs.append(("general.alignment", V.UINT32, align))
    kvs += [("t.u8", V.UINT8, 255), ("t.i8", V.INT8, -7), ("t.u16", V.UINT16, 65535),
            ("t.i16", V.INT16, -32768), ("t.u32", V.UINT32, 123456), ("t.i32", V.INT32, -5),
            ("t.f32", V.FLOAT32, 0.1), ("t.u64", V.UINT64, 2**64 - 1), ("t.i64", V.INT64, -2**63),
            ("t.f64", V.FLOAT64, -1e-300), ("t.bool", V.BOOL, True), ("t.str", V.STRING, "h\u00e9")]
    arrs = [("a.i32", V.INT32, [1, -2, 3]), ("a.f32", V.FLOAT32, [1.5, -0.25]),
            ("a.u64", V.UINT64, [0, 2**64 - 1]), ("a.bool", V.BOOL, [False, True, True]),
            ("a.str", V.STRING, ["<unk>", "", "\u2581x"])]
    spec = {"kv": [], "tensors": []}
    for k, vt, v in kvs:
        spec["kv"].append({"key": k, "type": int(vt), "value": enc_for_spec(vt, v)})
    for k, vt, vals in arrs:
        spec["kv"].append({"key": k, "type": int(V.ARRAY), "elem_type": int(vt),
                           "value": [enc_for_spec(vt, v) for v in vals]})
    x = rng.normal(0, 1, (3, 64)).astype(np.float32)
    tensors = [("w.f32", "F32", (3, 64), x.tobytes()),
               ("w.f16", "F16", (3, 64), x.astype(np.float16).tobytes()),
               ("w.q8_0", "Q8_0", (3, 64), quants.quantize(x, Q.Q8_0).tobytes()),
               ("w.q4_k", "Q4_K", (2, 256), random_quant(rng, Q.Q4_K, 2, 256).tobytes()),
               ("w.i32", "I32", (2, 2, 3), np.arange(12, dtype=np.int32).tobytes())]
    for name, dt, shape, data in tensors:
        spec["tensors"].append({"name": name, "dtype": dt, "shape": list(shape),
                                "data": data.hex()})
    sp = os.path.join(tmp, "spec.json")
    out = os.path.join(tmp, "ours.gguf")
    with open(sp, "w") as f:
        json.dump(spec, f)
    p = subprocess.run([gguf_tool(), "--write", sp, out], capture_output=True, text=True)
    check(p.returncode == 0, f"--write failed: {p.stderr.strip()}")
    if p.returncode != 0:
        return
    r = gguf.GGUFReader(out)
    check(r.alignment == (align or 32), f"{label}: GGUFReader alignment {r.alignment}")
    exp = spec["kv"]
    got = expected_kvs(r)
    check([k["key"] for k in got] == [k["key"] for k in exp], f"{label}: kv order")
    for a, b in zip(got, exp):
        check(a == b, f"{label}: kv {b['key']}: gguf read {a} vs written {b}")
    check(len(r.tensors) == len(tensors), f"{label}: tensor count")
    for t, (name, dt, shape, data) in zip(r.tensors, tensors):
        check(t.name == name, f"{label}: name {t.name}")
        check(t.tensor_type.name == dt, f"{label}: {name} type {t.tensor_type.name}")
        check([int(v) for v in t.shape] == list(reversed(shape)), f"{label}: {name} ne")
        check(np.asarray(t.data).tobytes() == data, f"{label}: {name} bytes")
        check(int(t.data_offset) % (align or 32) == 0, f"{label}: {name} aligned")
    # the same content through GGUFWriter gives the same file, byte for byte
    twin = os.path.join(tmp, "twin.gguf")
    gguf_writer_twin(twin, kvs, arrs, tensors, align)
    with open(out, "rb") as f1, open(twin, "rb") as f2:
        a, b = f1.read(), f2.read()
    k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    check(a == b, f"{label}: differs from GGUFWriter's file at byte {k} (sizes {len(a)}, {len(b)})")
    # and ours reads ours identically to GGUFReader
    compare_dump(out, label)


def main():
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        p1 = os.path.join(tmp, "peer.gguf")
        write_peer_file(p1, rng)
        compare_dump(p1, "peer.gguf")
        p2 = os.path.join(tmp, "peer_align.gguf")
        write_peer_file(p2, rng, alignment=128)
        compare_dump(p2, "peer_align.gguf")
        test_our_writer(tmp, rng, 64)
        test_our_writer(tmp, rng, None)
    # GGUFReader needs ~5 s of CPU per 32k-token vocab file; the gpt-2 vocab (50k tokens and
    # 50k merges) is left to test_gguf to keep this test fast
    for rel in ["stories260K/stories260K.gguf", "tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"]:
        compare_dump(os.path.join(FIXTURES, rel), rel)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
