"""test_safetensors_peer.py - our safetensors reader and writer against the PyPI package.

Direction 1: files written by the `safetensors` package (numpy API for the numpy dtypes,
the raw `serialize` API for BF16, a sharded set with model.safetensors.index.json, and the
stories260K-hf fixture) are dumped by our reader (`test_safetensors --dump`, the C test
program doubling as a peer tool) and must match name, dtype, shape, bytes and metadata.
Direction 2: files written by our writer (`test_safetensors --write`) are loaded by the
package with identical values, and are byte-identical to what the package writes for the
same tensors (same layout order, header and padding).
The C program sits next to $LORATUNE in the build folder.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import safetensors
import safetensors.numpy as stnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, check  # noqa: E402

TOOL = ltcheck.tool("test_safetensors")

NP_TO_ST = {
    "float32": "F32", "float16": "F16", "float64": "F64", "int8": "I8", "uint8": "U8",
    "int16": "I16", "int32": "I32", "int64": "I64", "bool": "BOOL",
}


def dump(path, keys=()):
    r = subprocess.run([TOOL, "--dump", path, *keys], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dump {path}: {r.stderr}")
    d = json.loads(r.stdout)
    return {t["name"]: t for t in d["tensors"]}, d["metadata"]


def rand_arrays(rng):
    out = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 3)).astype(np.float64),
        "i8": rng.integers(-128, 127, (7,), dtype=np.int8),
        "u8": rng.integers(0, 255, (2, 3), dtype=np.uint8),
        "i16": rng.integers(-30000, 30000, (5,), dtype=np.int16),
        "i32": rng.integers(-2**31, 2**31 - 1, (2, 1, 2, 2), dtype=np.int32),
        "i64": rng.integers(-2**62, 2**62, (3,), dtype=np.int64),
        "flag": rng.integers(0, 2, (9,)).astype(np.bool_),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    return out


def compare_np(ours, arrays, what):
    check(set(ours) == set(arrays), f"{what}: names {sorted(ours)} vs {sorted(arrays)}")
    for name, a in arrays.items():
        t = ours.get(name)
        if t is None:
            continue
        check(t["dtype"] == NP_TO_ST[a.dtype.name], f"{what}: {name} dtype {t['dtype']}")
        check(t["shape"] == list(a.shape), f"{what}: {name} shape {t['shape']} vs {a.shape}")
        check(t["hex"] == np.ascontiguousarray(a).tobytes().hex(), f"{what}: {name} bytes differ")


def main():
    rng = np.random.default_rng(1234)
    tmp = tempfile.mkdtemp(prefix="lt_st_peer_")

    # 1a. numpy API, all numpy dtypes, with metadata
    arrays = rand_arrays(rng)
    p = os.path.join(tmp, "np.safetensors")
    meta = {"format": "np", "note": "h\u00e9llo \"q\"", "empty": ""}
    stnp.save_file(arrays, p, metadata=meta)
    ours, md = dump(p, list(meta) + ["absent"])
    compare_np(ours, arrays, "numpy file")
    check(md == {**meta, "absent": None}, f"numpy file metadata {md}")

    # 1b. BF16 through the raw API (numpy has no bfloat16)
    bf = rng.integers(0, 65535, (3, 4), dtype=np.uint16)
    raw = safetensors.serialize({"w": {"dtype": "bfloat16", "shape": [3, 4], "data": bf.tobytes()},
                                 "v": {"dtype": "float32", "shape": [1], "data": b"\0\0\x80?"}},
                                None)
    p = os.path.join(tmp, "bf16.safetensors")
    with open(p, "wb") as f:
        f.write(raw)
    ours, _ = dump(p)
    check(ours.get("w", {}).get("dtype") == "BF16", "bf16 dtype")
    check(ours.get("w", {}).get("hex") == bf.tobytes().hex(), "bf16 bytes")
    check(ours.get("v", {}).get("shape") == [1], "bf16 file: second tensor")

    # 1c. sharded set with an index (the layout transformers writes)
    sd = os.path.join(tmp, "sharded")
    os.mkdir(sd)
    shard_arrays = [rand_arrays(rng), {"z.last": rng.standard_normal((6,)).astype(np.float32)}]
    shard_arrays[0] = {f"layer.{k}": v for k, v in shard_arrays[0].items()}
    weight_map = {}
    for i, arrs in enumerate(shard_arrays):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        stnp.save_file(arrs, os.path.join(sd, fn), metadata={"format": "pt", "shard": str(i)})
        weight_map.update({k: fn for k in arrs})
    with open(os.path.join(sd, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 123}, "weight_map": weight_map}, f)
    ours, md = dump(sd, ["format", "shard"])
    allarr = {**shard_arrays[0], **shard_arrays[1]}
    compare_np(ours, allarr, "sharded")
    check(md == {"format": "pt", "shard": "0"}, f"sharded metadata {md}")

    # 1d. the fixture, against the package's own loader
    fx = os.path.join(FIXTURES, "stories260K-hf", "model.safetensors")
    ours, _ = dump(fx)
    compare_np(ours, stnp.load_file(fx), "fixture")

    # 2. our writer -> the package
    arrays = rand_arrays(rng)
    bf = rng.integers(0, 65535, (2, 5), dtype=np.uint16)
    spec = {"metadata": {"format": "pt"}, "tensors": []}
    for name, a in arrays.items():
        spec["tensors"].append({"name": name, "dtype": NP_TO_ST[a.dtype.name],
                                "shape": list(a.shape), "hex": a.tobytes().hex()})
    spec["tensors"].append({"name": "bf", "dtype": "BF16", "shape": [2, 5], "hex": bf.tobytes().hex()})
    sp = os.path.join(tmp, "spec.json")
    with open(sp, "w") as f:
        json.dump(spec, f)
    out = os.path.join(tmp, "ours.safetensors")
    r = subprocess.run([TOOL, "--write", out, sp], capture_output=True, text=True)
    check(r.returncode == 0, f"--write failed: {r.stderr}")
    if r.returncode == 0:
        with safetensors.safe_open(out, framework="numpy") as f:
            check(f.metadata() == {"format": "pt"}, f"package reads metadata {f.metadata()}")
            check(set(f.keys()) == set(arrays) | {"bf"}, f"package reads names {f.keys()}")
            for name, a in arrays.items():
                b = f.get_tensor(name)
                check(b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b),
                      f"package reads {name} differently")
        with open(out, "rb") as fh:
            ourbytes = fh.read()
        des = dict(safetensors.deserialize(ourbytes))
        check(des["bf"]["dtype"] == "BF16" and list(des["bf"]["shape"]) == [2, 5]
              and bytes(des["bf"]["data"]) == bf.tobytes(), "package reads bf16")
        # the package writes the very same bytes for the same tensors
        ref = safetensors.serialize(
            {**{k: {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}
                for k, a in arrays.items()},
             "bf": {"dtype": "bfloat16", "shape": [2, 5], "data": bf.tobytes()}},
            {"format": "pt"})
        check(bytes(ref) == ourbytes, "our file differs from the package's bytes:\n"
              f"ours {ourbytes[:300]!r}\nref  {bytes(ref)[:300]!r}")

    # bad input to our writer's peer path is refused, not written
    spec["tensors"].append({"name": "bad", "dtype": "F32", "shape": [3], "hex": "00" * 8})
    with open(sp, "w") as f:
        json.dump(spec, f)
    r = subprocess.run([TOOL, "--write", os.path.join(tmp, "bad.safetensors"), sp],
                       capture_output=True, text=True)
    check(r.returncode != 0 and "'bad'" in r.stderr, f"writer accepted bad nbytes: {r.stderr}")
    check(not os.path.exists(os.path.join(tmp, "bad.safetensors")), "bad file written")

    if ltcheck.failed == 0:
        subprocess.run(["rm", "-rf", tmp])
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
