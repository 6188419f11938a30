/* cmd_info.c - `loratune info [--json]`: the machine (CPU, SIMD features, cores, memory,
 * CUDA devices), the build (compiler, type, sanitizers, OpenMP, BLAS), the kernel level and
 * thread count loratune picks from them, and the level each kernel family runs (run-time
 * dispatch). A table by default, lt_hwinfo_to_json with --json (plus runtime.kernels). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "dist.h"
#include "loratune/hwinfo.h"
#include "loratune/nccl.h"
#include "loratune/nf4.h"
#include "loratune/ops.h"
#include "loratune/quant.h"
#include "loratune/backend.h"
#include "loratune/run.h"

/* multi-GPU training (docs/SCALE_OUT.md): whether the NCCL code is in this build */
static const char *nccl_build(void) {
    return lt_nccl_compiled() ? "built (libnccl.so.2 opened when a multi-GPU run starts)"
                              : "not built";
}

/* the kernel families of the run-time dispatch and the level each runs now */
typedef struct {
    const char *key, *label, *what;
    lt_cpu_level (*level)(void);
} kernel_family;

static const kernel_family k_families[] = {
    {"attention_elementwise", "attention", "attention, cross-entropy, SwiGLU",
     lt_ops_fast_kernel_level},
    {"dequantization", "dequantization", "F16, BF16, Q4_0..Q8_0, Q4_K..Q6_K to fp32",
     lt_quant_kernel_level},
    {"nf4", "NF4", "QLoRA base weights to fp32", lt_nf4_kernel_level},
};
enum { N_FAMILIES = sizeof k_families / sizeof k_families[0] };

static void usage(FILE *f) {
    fprintf(f, "usage: loratune info [--json]\n\n"
               "Shows the CPU (model, cores, SIMD features), memory, CUDA devices, how this\n"
               "loratune was built (compiler, build type, sanitizers, OpenMP, BLAS) and the\n"
               "kernel level and thread count it uses, and the level of each kernel family\n"
               "(LORATUNE_CPU=baseline|avx2|avx512 caps it).\n\n"
               "options:\n"
               "  --json     print everything as one JSON object\n"
               "  -h, --help this help\n");
}

static void print_features(const char *label, uint32_t bits, const char *none) {
    int n;
    const lt_cpu_feature *k = lt_cpu_features_known(&n);
    printf("  %-16s", label);
    int any = 0;
    for (int i = 0; i < n; i++)
        if (bits & k[i]) {
            printf(" %s", lt_cpu_feature_name(k[i]));
            any = 1;
        }
    if (!any) printf(" %s", none);
    printf("\n");
}

/* _OPENMP dates to spec versions */
static const char *omp_name(int v) {
    if (v >= 202111) return "5.2";
    if (v >= 202011) return "5.1";
    if (v >= 201811) return "5.0";
    if (v >= 201511) return "4.5";
    if (v >= 201307) return "4.0";
    return "3.x or older";
}

static void print_gib(const char *label, int64_t bytes) {
    if (bytes > 0) printf("  %-16s %.1f GiB\n", label, (double)bytes / (1024.0 * 1024 * 1024));
    else printf("  %-16s unknown\n", label);
}

int cmd_info(int argc, char **argv) {
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else {
            fprintf(stderr, "loratune info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    lt_hwinfo hw;
    if (lt_hwinfo_detect(&hw) != LT_OK) {
        fprintf(stderr, "loratune info: %s\n", lt_errmsg());
        return 1;
    }
    if (json) {
        char *s;
        if (lt_hwinfo_to_json(&hw, &s) != LT_OK) {
            fprintf(stderr, "loratune info: %s\n", lt_errmsg());
            return 1;
        }
        /* runtime.kernels: the families live above core, so they are added here */
        json_t *root = json_loads(s, 0, NULL);
        free(s);
        s = NULL;
        json_t *rt = root ? json_object_get(root, "runtime") : NULL;
        if (rt) {
            json_t *fam = json_object();
            for (int i = 0; i < N_FAMILIES; i++)
                json_object_set_new(fam, k_families[i].key,
                                    json_string(lt_cpu_level_name(k_families[i].level())));
            json_object_set_new(rt, "kernels", fam);
            json_t *bd = json_object_get(root, "build");
            if (bd) json_object_set_new(bd, "mpi", json_string(lt_cli_dist_build()));
            if (bd) json_object_set_new(bd, "nccl", json_string(nccl_build()));
            const char *why = "";
            lt_dtype cd = lt_run_pick_compute_dtype(-1, LT_METHOD_LORA, &why);
            json_object_set_new(rt, "compute_dtype_auto",
                                json_pack("{s:s, s:s, s:s}", "dtype",
                                          cd == LT_DTYPE_BF16 ? "bf16" : "f32", "reason", why,
                                          "bf16_gemm_kernel",
                                          lt_cpu_gemm_bf16_impl(2048, 1536, 576)));
            json_object_set_new(json_object_get(rt, "compute_dtype_auto"),
                                "bf16_attention_kernel",
                                json_string(lt_cpu_attention_bf16_impl(64)));
            s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        }
        json_decref(root);
        if (!s) {
            fprintf(stderr, "loratune info: cannot build JSON\n");
            return 1;
        }
        puts(s);
        free(s);
        return 0;
    }
    printf("CPU\n");
    printf("  %-16s %s\n", "model", hw.cpu_model[0] ? hw.cpu_model : "unknown");
    if (hw.cpu_vendor[0]) printf("  %-16s %s\n", "vendor", hw.cpu_vendor);
    printf("  %-16s %s\n", "arch", hw.arch);
    printf("  %-16s %d physical, %d logical, %d usable by this process, %d socket%s\n", "cores",
           hw.physical_cores, hw.logical_cores, hw.affinity_cores, hw.sockets,
           hw.sockets == 1 ? "" : "s");
    print_features("features", hw.cpu_features, "(none)");
    if (hw.cgroup_cpus > 0) printf("  %-16s %.2f CPUs (cgroup quota)\n", "limit", hw.cgroup_cpus);
    printf("Memory\n");
    print_gib("total", hw.ram_total_bytes);
    print_gib("available", hw.ram_available_bytes);
    if (hw.cgroup_memory_bytes > 0) print_gib("cgroup limit", hw.cgroup_memory_bytes);
    printf("CUDA\n");
    if (!hw.cuda_built) {
        printf("  %-16s not built\n", "status");
    } else if (hw.cuda_device_count == 0) {
        printf("  %-16s %s\n", "status", hw.cuda_error);
    } else {
        for (int i = 0; i < hw.cuda_device_count; i++) {
            const lt_cuda_device *d = &hw.cuda_devices[i];
            char label[24];
            snprintf(label, sizeof label, "device %d", i);
            printf("  %-16s %s, %.1f GiB, compute %d.%d, %d SMs\n", label, d->name,
                   (double)d->memory_bytes / (1024.0 * 1024 * 1024), d->cc_major, d->cc_minor,
                   d->multiprocessors);
        }
    }
    printf("Build\n");
    printf("  %-16s %s\n", "compiler", hw.compiler);
    printf("  %-16s %s\n", "build type", hw.build_type);
    printf("  %-16s %s\n", "git revision", hw.git_rev[0] ? hw.git_rev : "unknown");
    printf("  %-16s %s\n", "sanitizers", hw.sanitizers);
    printf("  %-16s %s\n", "MPI", lt_cli_dist_build());
    printf("  %-16s %s\n", "NCCL", nccl_build());
    print_features("compiled for", hw.compiled_features, "baseline (SIMD kernels: run-time dispatch)");
    if (hw.openmp_version)
        printf("  %-16s %s (%d), %d threads\n", "OpenMP", omp_name(hw.openmp_version),
               hw.openmp_version, hw.openmp_max_threads);
    else
        printf("  %-16s off\n", "OpenMP");
    printf("  %-16s %s\n", "BLAS", hw.blas_config[0] ? hw.blas_config : hw.blas);
    printf("  %-16s core %s, %d threads, %s\n", "", hw.blas_core, hw.blas_threads,
           hw.blas_parallel);
    if (hw.blas_note[0]) printf("  %-16s warning: %s\n", "", hw.blas_note);
    printf("Runtime\n");
    printf("  %-16s %s (CPU %s", "kernels", hw.kernel_level, hw.cpu_level);
    if (lt_cpu_max_level() < LT_CPU_LEVEL_COUNT - 1)
        printf(", capped at %s by LORATUNE_CPU", hw.kernel_level_max);
    printf(")\n");
    for (int i = 0; i < N_FAMILIES; i++)
        printf("    %-14s %-8s %s\n", k_families[i].label,
               lt_cpu_level_name(k_families[i].level()), k_families[i].what);
    printf("  %-16s %d\n", "threads", hw.threads);
    const char *why = "";
    lt_dtype cd = lt_run_pick_compute_dtype(-1, LT_METHOD_LORA, &why);
    printf("  %-16s %s (--compute-dtype %s)\n", "compute dtype",
           cd == LT_DTYPE_BF16 ? "bf16" : "f32", why);
    printf("  %-16s oneDNN %s\n", "bf16 GEMM", lt_cpu_gemm_bf16_impl(2048, 1536, 576));
    const char *ak = lt_cpu_attention_bf16_impl(64);
    printf("  %-16s %s\n", "bf16 attention",
           strcmp(ak, "f32") ? "avx512_bf16 (vdpbf16ps; head dims 32 / 64 / 128)"
                             : "fp32 (no avx512_bf16 at this kernel level)");
    return 0;
}
