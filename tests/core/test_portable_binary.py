"""test_portable_binary.py - the default build runs on any x86-64 CPU: outside the dispatched
kernel files (src/**/*_avx2.c, *_avx512.c, *_avx512bf16.c, reached only through the run-time
dispatch), the
library and the `loratune` program hold no instruction beyond the x86-64 baseline (SSE2).

How: `objdump -d` of the library (one archive per layer: liblt_core.a, liblt_quant.a, ...),
member by member, and of the linked program, function by function. An instruction is beyond the baseline when it touches a ymm / zmm / mask register,
is VEX / EVEX encoded (the SIMD mnemonics that start with "v") or is one of the SSE3, SSSE3,
SSE4.1/4.2, POPCNT, LZCNT, BMI1/2, MOVBE, F16C or FMA mnemonics below. Checks:
- the archives: such instructions only in members named *_avx2.c.o / *_avx512.c.o /
  *_avx512bf16.c.o, and no AVX-512
  in the *_avx2 ones; those members really hold AVX2 / AVX-512 code (the scan sees them);
- the program: such instructions only in functions defined in those members (matched by name:
  what comes from the other members was checked clean in the archive);
- the classifier itself, on sample lines.
A build with LT_NATIVE=ON is not meant to be portable: the test exits 77 (CTest: skipped).
The real execution under CPU models without AVX-512 / AVX is test_cpu_emulated.py. """
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check, finish  # noqa: E402

# the layers' archives (CMake passes them, ":"-separated); by hand: every liblt_*.a next to the program
LIBRARIES = (os.environ["LT_LIBRARIES"].split(os.pathsep) if os.environ.get("LT_LIBRARIES") else
             sorted(glob.glob(os.path.join(os.path.dirname(ltcheck.LORATUNE), "liblt_*.a"))))

# beyond SSE2 without a "v" prefix or a ymm/zmm operand (pextrw / pinsrw are SSE2: not listed;
# tzcnt is not either: it is what objdump calls `rep bsf`, which older CPUs run as bsf)
BEYOND_SSE2 = set("""
addsubpd addsubps haddpd haddps hsubpd hsubps lddqu movddup movshdup movsldup monitor mwait
pabsb pabsd pabsw palignr phaddd phaddsw phaddw phsubd phsubsw phsubw pmaddubsw pmulhrsw pshufb
psignb psignd psignw
blendpd blendps blendvpd blendvps dppd dpps extractps insertps movntdqa mpsadbw packusdw
pblendvb pblendw pcmpeqq pextrb pextrd pextrq phminposuw pinsrb pinsrd pinsrq pmaxsb pmaxsd
pmaxud pmaxuw pminsb pminsd pminud pminuw pmovsxbd pmovsxbq pmovsxbw pmovsxdq pmovsxwd pmovsxwq
pmovzxbd pmovzxbq pmovzxbw pmovzxdq pmovzxwd pmovzxwq pmuldq pmulld ptest roundpd roundps
roundsd roundss
crc32 pcmpestri pcmpestrm pcmpgtq pcmpistri pcmpistrm popcnt lzcnt movbe
andn bextr blsi blsmsk blsr bzhi mulx pdep pext rorx sarx shlx shrx
""".split())
# "v" mnemonics that are not SIMD (virtualisation, segment verification)
V_NOT_SIMD = {"verr", "verw", "vmcall", "vmclear", "vmfunc", "vmlaunch", "vmload", "vmmcall",
              "vmptrld", "vmptrst", "vmread", "vmresume", "vmrun", "vmsave", "vmwrite", "vmxoff",
              "vmxon"}
WIDE_REG = re.compile(r"%(ymm|zmm)\d+|%k[0-7]\b")
AVX512_REG = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")
INSN = re.compile(r"^\s+[0-9a-f]+:\s+(?:(?:rep[nez]*|lock|notrack|bnd|data16|addr32|cs|ds)\s+)*"
                  r"([a-z][a-z0-9.]*)\s*(.*)$")
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
MEMBER = re.compile(r"^(\S+):\s+file format ")
DISPATCHED = re.compile(r"_avx(2|512|512bf16)\.c\.o$")


AVX512_ONLY = {"vpdpbusd", "vpdpbusds", "vpdpwssd", "vpdpwssds"}


def beyond(line):
    """'avx512' / 'avx' / 'sse' (beyond SSE2) / None for one objdump instruction line."""
    m = INSN.match(line)
    if not m:
        return None
    mn, ops = m.group(1), m.group(2)
    # the VNNI dot products (vpdpbusd / vpdpwssd...) need AVX512_VNNI (or AVX-VNNI), never the
    # AVX2 level; on ymm0-15 they show no AVX-512 register, so they are named here
    if AVX512_REG.search(ops) or mn.split(".")[0].split("{")[0] in AVX512_ONLY:
        return "avx512"
    if WIDE_REG.search(ops) or (mn.startswith("v") and mn not in V_NOT_SIMD):
        return "avx"
    if mn in BEYOND_SSE2 or mn.split(".")[0] in BEYOND_SSE2:
        return "sse"
    return None


def scan(path):
    """{(member, function): {'avx512'|'avx'|'sse': first offending line}} and
    {member: set of function names} from objdump -d of an archive or a program."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True,
                         text=True, check=True).stdout
    bad, funcs = {}, {}
    member, func = os.path.basename(path), None
    for line in out.splitlines():
        m = MEMBER.match(line)
        if m:
            member, func = m.group(1), None
            continue
        m = FUNC.match(line)
        if m:
            func = m.group(1)
            funcs.setdefault(member, set()).add(func)
            continue
        if func is None:
            continue
        kind = beyond(line)
        if kind:
            bad.setdefault((member, func), {}).setdefault(kind, line.strip())
    return bad, funcs


def classifier_selftest():
    samples = {
        "  1a:\tvmovups %ymm0,(%rax)": "avx",
        "  1a:\tvfmadd231ps %ymm2,%ymm1,%ymm0": "avx",
        "  1a:\tvaddss %xmm1,%xmm0,%xmm0": "avx",  # VEX scalar: needs AVX
        "  1a:\tvpermps %zmm1,%zmm2,%zmm0": "avx512",
        "  1a:\tvmovups %xmm17,(%rax)": "avx512",
        "  1a:\tkmovw  %k1,%eax": "avx512",
        "  1a:\tvpdpbusd %ymm1,%ymm2,%ymm0": "avx512",
        "  1a:\tpshufb %xmm1,%xmm0": "sse",
        "  1a:\tpopcnt %rdi,%rax": "sse",
        "  1a:\tshlx   %rax,%rdx,%rcx": "sse",
        "  1a:\troundss $0x9,%xmm1,%xmm0": "sse",
        "  1a:\tmovups %xmm0,(%rax)": None,
        "  1a:\tpextrw $0x1,%xmm0,%eax": None,
        "  1a:\trep stos %rax,%es:(%rdi)": None,
        "  1a:\ttzcnt  %eax,%eax": None,
        "  1a:\tvmcall": None,
    }
    for line, want in samples.items():
        check(beyond(line) == want, f"classifier: {line.strip()!r} gave {beyond(line)}, want {want}")


def main():
    classifier_selftest()
    if platform.machine() not in ("x86_64", "AMD64"):
        print("not an x86-64 machine: nothing to check")
        return 77
    if not shutil.which("objdump"):
        print("objdump (binutils) not found")
        return 77
    r = ltcheck.run("info", "--json")
    check(r.returncode == 0, f"info --json: {r.stderr}")
    compiled = [k for k, v in json.loads(r.stdout)["build"]["compiled_features"].items() if v]
    if compiled:
        print(f"built with LT_NATIVE (compiled for {' '.join(compiled)}): not portable by design")
        return 77

    check(len(LIBRARIES) >= 12, f"library archives: {LIBRARIES}")
    bad, funcs = {}, {}
    for lib in LIBRARIES:
        b, f = scan(lib)
        bad.update(b)
        funcs.update(f)
    dispatched = {m for m in funcs if DISPATCHED.search(m)}
    check(len(dispatched) >= 4, f"dispatched members found: {sorted(dispatched)}")
    kinds = {}
    for (member, func), k in sorted(bad.items()):
        if member in dispatched:
            kinds.setdefault(member, set()).update(k)
            check(not (member.endswith("_avx2.c.o") and "avx512" in k),
                  f"{member}: {func} uses AVX-512: {k.get('avx512')}")
        else:
            check(False, f"{member}: {func} is not dispatched but uses {sorted(k)}: "
                         f"{next(iter(k.values()))}")
    for member in dispatched:
        want = "avx512" if member.endswith(("_avx512.c.o", "_avx512bf16.c.o")) else "avx"
        check(want in kinds.get(member, ()), f"{member}: no {want} instruction seen (scan broken?)")

    # the program: every such function is one the dispatched members define. A static name may
    # also be defined elsewhere (a helper of the same name, a header's static inline): the
    # archive check above found those copies clean, and linking does not change instructions.
    allowed = set().union(*(funcs[m] for m in dispatched))
    flagged_elsewhere = {f for (m, f) in bad if m not in dispatched}
    pbad, pfuncs = scan(ltcheck.LORATUNE)
    seen = set()
    for (_, func), k in sorted(pbad.items()):
        if func in allowed and func not in flagged_elsewhere:
            seen.add(func)
            continue
        check(False, f"loratune: {func} (not dispatched) uses {sorted(k)}: {next(iter(k.values()))}")
    linked = set().union(*pfuncs.values())
    for name in ("lt_to_f32_avx2", "lt_nf4_dequantize_avx2", "lt_nf4_dequantize_avx512"):
        check(name in linked, f"loratune: kernel {name} not linked in")
    check(len(seen) >= 4, f"loratune: only {sorted(seen)} use AVX2 / AVX-512 (scan broken?)")
    print(f"{len(seen)} functions of loratune use AVX2 / AVX-512, all in "
          f"{', '.join(sorted(dispatched))}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
