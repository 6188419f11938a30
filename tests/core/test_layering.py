"""test_layering.py - the build enforces the layering (docs/ARCHITECTURE.md "Layers").

The graph is written down once, as the lt_layer() calls of CMakeLists.txt; CMake writes it to
lt_layers.json in the build folder, which this test reads. A layer L "sees" its own headers,
core's library-internal ones (src/core/internal/core/*.h) and the public headers of every
layer it names plus, recursively, what those name PUBLIC. Checks:
1. the graph: each layer names only layers declared before it (so no cycle), every src/ folder
   is a layer, every public header sits in exactly one layer's include/<layer>/loratune/ and
   the old flat include/loratune/ is gone;
2. the build's own flags (compile_commands.json): every library source is compiled in its
   layer's target with exactly the include folders the graph allows (never src/ itself nor
   another layer's src/ folder);
3. the compiler, with those exact flags: a probe that includes a public header of a layer L
   does not see fails with "No such file or directory" (clang: "file not found") naming it, and
   compiles when L may;
   another layer's internal header fails under both spellings ("model/model_internal.h",
   "model_internal.h"); core's "core/io.h" compiles in every layer and fails in apps/;
4. the scan: every #include of src/, include/, apps/ and bench/ is allowed by the graph,
   including outside libraries (<jansson.h> only in a layer that links jansson, #pragma omp
   only with OpenMP); a violation is reported by file, line and header;
5. the scan itself on planted lines (a wrong include in data, an internal header of model,
   a "../" path, a public header leaking a private dependency, a library a layer does not
   link, core internals in apps/) and on clean ones. """
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check, finish  # noqa: E402

SRC = os.path.realpath(ltcheck.SOURCE_DIR)
BUILD = os.path.realpath(os.environ.get("LT_BINARY_DIR") or os.path.dirname(ltcheck.LORATUNE))

INCLUDE = re.compile(r"^\s*#\s*include\s*([<\"])([^>\"]+)[>\"]")
PRAGMA_OMP = re.compile(r"^\s*#\s*pragma\s+omp\b")
# outside headers -> the CMake target a layer must link to use them (prefix match for folders)
EXTERNAL = {"jansson.h": "PkgConfig::JANSSON", "cblas.h": "PkgConfig::OPENBLAS",
            "pcre2.h": "PkgConfig::PCRE2", "utf8proc.h": "PkgConfig::UTF8PROC",
            "yaml.h": "PkgConfig::YAML", "sqlite3.h": "PkgConfig::SQLITE3",
            "curl/": "PkgConfig::CURL", "openssl/": "PkgConfig::LIBCRYPTO",
            "omp.h": "OpenMP::OpenMP_C"}


class Graph:
    def __init__(self, layers):
        self.order = [l["name"] for l in layers]
        self.pub = {l["name"]: l["public"] for l in layers}
        self.priv = {l["name"]: l["private"] for l in layers}
        self.libs = {l["name"]: l["libs"] for l in layers}

    def pub_closure(self, name):
        """name and what its dependents see along with it (its PUBLIC layers, recursively)."""
        out = {name}
        for d in self.pub[name]:
            out |= self.pub_closure(d)
        return out

    def visible(self, name):
        """The layers whose public headers name's sources can include."""
        out = {name}
        for d in self.pub[name] + self.priv[name]:
            out |= self.pub_closure(d)
        return out


def header_owners():
    """{"model.h": "model", ...} from include/<layer>/loratune/*.h; duplicates listed apart."""
    owners, dups = {}, []
    inc = os.path.join(SRC, "include")
    for layer in sorted(os.listdir(inc)):
        d = os.path.join(inc, layer, "loratune")
        if not os.path.isdir(d):
            continue
        for h in sorted(os.listdir(d)):
            if h in owners:
                dups.append(f"{h} in {owners[h]} and {layer}")
            owners[h] = layer
    return owners, dups


def where(rel):
    """('src', layer) | ('public', layer) | ('program', None) for a path under the source root."""
    p = rel.split("/")
    if p[0] == "src":
        return "src", p[1]
    if p[0] == "include":
        return "public", p[1]
    return "program", None


def scan_file(rel, text, g, owners):
    """The #include lines of file rel (path from the source root) the graph does not allow."""
    kind, layer = where(rel)
    bad = []
    omp_seen = False
    for n, line in enumerate(text.splitlines(), 1):
        if PRAGMA_OMP.match(line):
            omp_seen = True
        m = INCLUDE.match(line)
        if not m:
            continue
        quote, inc = m.group(1), m.group(2)
        at = f"{rel}:{n}: #include {quote}{inc}{'>' if quote == '<' else quote}"
        if inc.startswith("loratune/"):
            owner = owners.get(inc[len("loratune/"):])
            if owner is None:
                bad.append(f"{at}: no layer has this public header")
            elif kind == "src" and owner not in g.visible(layer):
                bad.append(f"{at}: a header of layer {owner}, which {layer} does not use "
                           f"(its sources may include: {', '.join(sorted(g.visible(layer)))})")
            elif kind == "public" and owner not in g.pub_closure(layer):
                bad.append(f"{at}: a header of layer {owner} in a public header of {layer}, "
                           f"which names only {', '.join(sorted(g.pub_closure(layer)))} PUBLIC")
            continue
        if quote == "<":
            if kind == "src":
                for h, lib in EXTERNAL.items():
                    if (inc.startswith(h) if h.endswith("/") else inc == h) and \
                            lib not in g.libs[layer]:
                        bad.append(f"{at}: layer {layer} does not link {lib}")
            continue
        if "/" not in inc:  # the file's own folder (a layer's internal header, apps/commands.h)
            if not os.path.exists(os.path.join(SRC, os.path.dirname(rel), inc)):
                bad.append(f"{at}: not a header of {os.path.dirname(rel)}/ (an internal header "
                           f"of another folder?)")
            continue
        core_internal = os.path.join(SRC, "src", "core", "internal", inc)
        if inc.startswith("core/") and ".." not in inc and os.path.exists(core_internal):
            if kind != "src":
                bad.append(f"{at}: core's library-internal header outside the library's layers")
            continue
        bad.append(f"{at}: reaches into another folder (another layer's internal header?)")
    if omp_seen and kind == "src" and "OpenMP::OpenMP_C" not in g.libs[layer]:
        bad.append(f"{rel}: #pragma omp, but layer {layer} does not link OpenMP::OpenMP_C")
    return bad


def tree_files():
    for top in ("src", "include", "apps", "bench"):
        for dirpath, _, files in os.walk(os.path.join(SRC, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h", ".inc")):
                    yield os.path.relpath(os.path.join(dirpath, f), SRC)


def check_graph(g, owners, dups):
    for i, name in enumerate(g.order):
        for d in g.pub[name] + g.priv[name]:
            check(d in g.order[:i], f"layer {name} names {d}, not a layer declared before it")
        check(os.path.isdir(os.path.join(SRC, "src", name)), f"layer {name}: no src/{name}/")
        check("core" in g.pub[name] or name == "core", f"layer {name} does not name core PUBLIC")
    for d in sorted(os.listdir(os.path.join(SRC, "src"))):
        if os.path.isdir(os.path.join(SRC, "src", d)):
            check(d in g.order, f"src/{d}/ is not a layer (no lt_layer({d}) in CMakeLists.txt)")
    check(not dups, f"public headers in two layers: {dups}")
    for h, layer in owners.items():
        check(layer in g.order, f"include/{layer}/loratune/{h}: {layer} is not a layer")
    check(not os.path.exists(os.path.join(SRC, "include", "loratune")),
          "include/loratune/ still exists: every public header belongs in include/<layer>/")
    check(len(g.order) >= 12 and g.order[0] == "core", f"layers: {g.order}")


def compile_flags(entry):
    """The compiler and flags of a compile command, without its source, -c and -o."""
    args = entry.get("arguments") or shlex.split(entry["command"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "-c"):
            skip = True
        elif a != entry["file"]:
            out.append(a)
    return out


def include_dirs(flags, directory="."):
    """The -I folders of flags, including those nvcc reads from an --options-file (CMake puts a
    CUDA source's include folders there)."""
    dirs = []
    for i, a in enumerate(flags):
        if a == "-I":
            dirs.append(flags[i + 1])
        elif a.startswith("-I"):
            dirs.append(a[2:])
        elif a == "--options-file" and i + 1 < len(flags):
            with open(os.path.join(directory, flags[i + 1])) as f:
                dirs += [d for d in include_dirs(shlex.split(f.read()), directory)]
    return {os.path.realpath(d) for d in dirs}


def check_flags(g, commands):
    """Every library source compiled in its own layer's target with the allowed folders only.
    Returns {layer: (flags, directory)} of one source per layer and the flags of apps/."""
    per_layer, app = {}, None
    seen = set()
    for e in commands:
        rel = os.path.relpath(os.path.realpath(e["file"]), SRC)
        kind, layer = where(rel)
        if rel.startswith("apps/") and app is None:
            app = (compile_flags(e), e["directory"])
        if kind != "src":
            continue
        args = e.get("arguments") or shlex.split(e["command"])
        target = re.search(r"CMakeFiles/([^/]+)\.dir/", args[args.index("-o") + 1])
        if not target or not target.group(1).startswith("lt_"):
            continue  # a test program built from a library source again (test_plan_planted)
        seen.add(rel)
        check(target.group(1) == f"lt_{layer}", f"{rel} is compiled in {target.group(1)}, "
                                                f"not in its layer's target lt_{layer}")
        flags = compile_flags(e)
        want = {os.path.join(SRC, "include", m) for m in g.visible(layer)}
        want |= {os.path.join(SRC, "src", layer), os.path.join(SRC, "src", "core", "internal")}
        got = include_dirs(flags, e["directory"])
        check(got == want, f"{rel}: include folders {sorted(got - want)} not allowed, "
                           f"{sorted(want - got)} missing")
        if layer not in per_layer and not re.search(r"_avx(2|512)\.c$", rel):
            per_layer[layer] = (flags, e["directory"])
    for rel in tree_files():
        # (SIMD kernel files are left out of the build on other CPUs than x86-64)
        if rel.startswith("src/") and rel.endswith(".c") and not re.search(r"_avx(2|512)\.c$", rel):
            check(rel in seen, f"{rel}: not compiled in any layer's target")
    return per_layer, app


def probe(flags, cwd, text):
    """(returncode, stderr) of compiling text (syntax only) with flags."""
    with tempfile.NamedTemporaryFile("w", suffix=".c", prefix="lt_probe_", delete=False) as f:
        f.write(text + "\nint lt_probe_unused_;\n")
        path = f.name
    try:
        r = subprocess.run(flags + ["-fsyntax-only", "-w", path], cwd=cwd, capture_output=True,
                           text=True)
        return r.returncode, r.stderr
    finally:
        os.unlink(path)


def check_probes(g, owners, per_layer, app):
    first_header = {}
    for h, layer in sorted(owners.items()):
        first_header.setdefault(layer, h)
    internal = {}
    for m in g.order:
        hs = sorted(f for f in os.listdir(os.path.join(SRC, "src", m)) if f.endswith(".h"))
        if hs:
            internal[m] = hs[0]
    jobs = []  # (description, flags, cwd, text, expect_ok, missing header)
    for layer, (flags, cwd) in sorted(per_layer.items()):
        for m in g.order:
            h = first_header[m]
            ok = m in g.visible(layer)
            jobs.append((f"layer {layer} including loratune/{h} (layer {m})", flags, cwd,
                         f'#include "loratune/{h}"', ok, f"loratune/{h}"))
            if m != layer and m in internal:
                for spelled in (f"{m}/{internal[m]}", internal[m]):
                    jobs.append((f"layer {layer} including {spelled} (internal to {m})", flags,
                                 cwd, f'#include "{spelled}"', False, spelled))
        jobs.append((f"layer {layer} including core/io.h", flags, cwd, '#include "core/io.h"',
                     True, None))
    if app:
        flags, cwd = app
        jobs.append(("apps/ including core/io.h", flags, cwd, '#include "core/io.h"', False,
                     "core/io.h"))
        for h in sorted(owners):
            jobs.append((f"apps/ including loratune/{h}", flags, cwd, f'#include "loratune/{h}"',
                         True, None))
    check(app is not None, "no apps/ source in compile_commands.json")

    def one(job):
        return job, probe(job[1], job[2], job[3])

    n_fail = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        for (what, _, _, _, ok, missing), (rc, err) in ex.map(one, jobs):
            if ok:
                check(rc == 0, f"{what} should compile: {err.strip()[:400]}")
            else:
                n_fail += 1
                # gcc: "No such file or directory"; clang: "'x' file not found"
                notfound = "No such file or directory" in err or "file not found" in err
                check(rc != 0 and notfound and missing in err,
                      f"{what} should fail with 'No such file or directory': rc {rc}, "
                      f"{err.strip()[:400]}")
    print(f"{len(jobs)} probes compiled, {n_fail} of them expected to fail")
    check(n_fail >= 100, f"only {n_fail} failing probes (graph too permissive?)")


def check_planted(g, owners):
    planted = [
        ("src/data/batcher.c", '#include "loratune/train.h"', "loratune/train.h"),
        ("src/adapter/adapter_gguf.c", '#include "model/model_internal.h"',
         "model/model_internal.h"),
        ("src/export/gguf_tokenizer.c", '#include "../tokenizer/spm_internal.h"',
         "../tokenizer/spm_internal.h"),
        ("src/export/gguf_tokenizer.c", '#include "spm_internal.h"', "spm_internal.h"),
        ("include/data/loratune/data.h", '#include "loratune/tokenizer.h"',
         "loratune/tokenizer.h"),
        ("src/quant/dequant.c", '#include "loratune/model.h"', "loratune/model.h"),
        ("src/track/store.c", '#include "loratune/run.h"', "loratune/run.h"),
        ("src/formats/gguf.c", "#include <sqlite3.h>", "sqlite3.h"),
        ("src/data/data.c", "#include <curl/curl.h>", "curl/curl.h"),
        ("apps/cmd_info.c", '#include "core/io.h"', "core/io.h"),
        ("src/formats/gguf.c", "void f(void) {\n#pragma omp parallel\n{}\n}", "OpenMP"),
    ]
    for rel, text, name in planted:
        bad = scan_file(rel, text, g, owners)
        check(len(bad) == 1 and rel in bad[0] and name in bad[0],
              f"planted {text!r} in {rel}: reported {bad}")
    clean = [
        ("src/train/trainer.c", '#include "loratune/backend.h"\n#include "trainer_internal.h"\n'
                                '#include "core/io.h"\n#include <omp.h>\n#include <stdio.h>'),
        ("src/run/run.c", '#include "loratune/export.h"\n#include "loratune/model.h"\n'
                          "#include <yaml.h>"),
        ("include/train/loratune/train.h", '#include "loratune/data.h"\n'
                                           '#include "loratune/model.h"'),
        ("apps/cmd_train.c", '#include "loratune/run.h"\n#include "commands.h"'),
    ]
    for rel, text in clean:
        bad = scan_file(rel, text, g, owners)
        check(not bad, f"clean {rel}: reported {bad}")


def main():
    graph_path = os.path.join(BUILD, "lt_layers.json")
    cc_path = os.path.join(BUILD, "compile_commands.json")
    for p in (graph_path, cc_path):
        if not os.path.exists(p):
            check(False, f"{p} missing (CMake writes it: is LT_BINARY_DIR the build folder?)")
            return finish()
    with open(graph_path) as f:
        g = Graph(json.load(f)["layers"])
    with open(cc_path) as f:
        commands = json.load(f)
    owners, dups = header_owners()
    check_graph(g, owners, dups)

    n_files, n_includes = 0, 0
    for rel in tree_files():
        with open(os.path.join(SRC, rel), encoding="utf-8") as f:
            text = f.read()
        n_files += 1
        n_includes += sum(1 for line in text.splitlines() if INCLUDE.match(line))
        for b in scan_file(rel, text, g, owners):
            check(False, b)
    print(f"scanned {n_includes} #include lines in {n_files} files")
    check(n_files > 100 and n_includes > 500, f"scan saw only {n_files} files, {n_includes} "
                                              "includes")

    per_layer, app = check_flags(g, commands)
    check(set(per_layer) == set(g.order), f"layers with a compiled source: {sorted(per_layer)}")
    check_probes(g, owners, per_layer, app)
    check_planted(g, owners)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
