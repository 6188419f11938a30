"""speed_table.py - the table of bench/run_speed.sh from its JSON lines.

Usage: python3 bench/speed_table.py RESULTS.jsonl
Per workload: the fastest process of each system (loratune over thread counts and compute
dtypes, torch over thread counts, fp32 / bf16 autocast and eager / torch.compile, mlx-lm over
f32 / bf16), tokens/s, peak RSS, the ratios loratune / torch and loratune / mlx-lm, and each
system's fraction of the measured GEMM peak of its own arithmetic (model FLOPs per token from
loratune's bench_train_step, which counts them for the same shape and method, times tokens/s,
over the best GFLOP/s that bench_gemm measured: sgemm for fp32 runs, the bf16 GEMM for bf16
runs).
"""
import json
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
    gemm = [r for r in rows if r.get("bench") == "gemm"]
    peak = max((r.get("sgemm_peak_gflops", r["sgemm_gflops"]) for r in gemm), default=None)
    bpeak = max((r["bf16_peak_gflops"] for r in gemm if r.get("bf16_peak_gflops")), default=None)
    bimpl = next((r["bf16_impl"] for r in gemm if r.get("bf16_impl")), "-")
    work = [r for r in rows if "workload" in r]
    if not work:
        print("no workload rows")
        return
    first = next(r for r in work if r["bench"] == "loratune") if any(
        r["bench"] == "loratune" for r in work) else work[0]
    print(f"shape {first['shape']}, batch {first['batch']}, seq {first['seq']}, "
          f"{first['warmup']} warm-up + {first['steps']} timed steps per process")
    print(f"measured fp32 GEMM peak (OpenBLAS sgemm, max(2 threads, 2 x 1 thread), best of {len(gemm)} runs): "
          f"{peak if peak else '-'} GFLOP/s; bf16 GEMM peak (oneDNN {bimpl}, same rule): "
          f"{bpeak if bpeak else '-'} GFLOP/s")
    print("| workload | loratune tok/s | torch tok/s (thr, dtype) | mlx-lm tok/s (dtype) | "
          "loratune / torch | loratune / mlx-lm | GEMM-peak fraction lt / torch / mlx | "
          "peak RSS MiB lt (plan) / torch / mlx |")
    print("|---|---|---|---|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:.0f}"
    for w in dict.fromkeys(r["workload"] for r in work):
        best = lambda bench: max((r for r in work if r["workload"] == w and r["bench"] == bench),
                                 key=lambda r: r["tokens_per_s"], default=None)
        lt, th, ml = best("loratune"), best("torch"), best("mlx")
        fpt = lt["flops_per_step"] / (lt["batch"] * lt["seq"] * lt.get("accum", 1)) if lt else None
        is16 = lambda r: r.get("compute_dtype") == "bf16" or r.get("autocast") == "bf16"
        pk = lambda r: bpeak if is16(r) else peak
        frac = lambda r: (f"{r['tokens_per_s'] * fpt / 1e9 / pk(r):.2f}"
                          if r and fpt and pk(r) else "-")
        ttag = lambda r: (f" ({r['threads']}, {r['autocast']}"
                          f"{', compile' if r.get('compile') else ''})")
        ltag = lambda r: f" ({r.get('compute_dtype', 'f32')})"
        tps = lambda r: f"{r['tokens_per_s']:.1f}" if r else "-"
        ratio = lambda a, b: f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}" if a and b else "-"
        print(f"| {w} | {tps(lt)}{ltag(lt) if lt else ''} | {tps(th)}"
              f"{ttag(th) if th else ''} | "
              f"{tps(ml)}{' (' + ml['autocast'] + ', ' + ml.get('mlx_blas', 'stock') + ' BLAS)' if ml else ''} | {ratio(lt, th)} | "
              f"{ratio(lt, ml)} | {frac(lt)} / {frac(th)} / {frac(ml)} | "
              f"{mib(lt['peak_measured']) + ' (' + mib(lt['peak_predicted']) + ')' if lt else '-'}"
              f" / {mib(th['peak_rss']) if th else '-'} / {mib(ml['peak_rss']) if ml else '-'} |")
    print()
    print("every process: s/step, cpu_util (CPU s / wall s of the timed steps; 2.0 = both cores) "
          "and loadavg at its end:")
    for r in work:
        tag = r["bench"] + (f" {r.get('compute_dtype', 'f32')}" if r["bench"] == "loratune"
                            else f" {r.get('autocast')}{' compile' if r.get('compile') else ''}") + \
            (f" {r['mlx_blas']}-BLAS" if "mlx_blas" in r else f" thr {r.get('threads')}")
        print(f"  {r['workload']:14s} {tag:24s} s/step {r['s_per_step']:8.2f}  "
              f"cpu_util {r['cpu_util']:.2f}  loadavg {r['loadavg']:.2f}")
    for r in gemm:
        print(f"  gemm thr {r['threads']}: sgemm {r['sgemm_gflops']} GFLOP/s "
              f"(2048^3 {r['sgemm_2048cube_gflops']}, 2048x1536x576 "
              f"{r['sgemm_2048x1536x576_gflops']}; 1 thread {r.get('sgemm_1thread_gflops', '-')}; "
              f"peak used {r.get('sgemm_peak_gflops', r['sgemm_gflops'])}); bf16 "
              f"{r.get('bf16_gflops', '-')} (1 thread {r.get('bf16_1thread_gflops', '-')}, peak used "
              f"{r.get('bf16_peak_gflops', '-')}, {r.get('bf16_impl', '-')}) loadavg {r['loadavg']:.2f}")


if __name__ == "__main__":
    main()
