/* hwinfo.h - what machine and build loratune runs on, the kernel level and thread count that
 * follow from it, and the run-time choice of SIMD kernels (lt_cpu_level).
 *
 * lt_hwinfo_detect() fills a plain struct from cpuid / getauxval, /proc/cpuinfo, sysfs CPU
 * topology, /proc/meminfo, cgroup limits, sched_getaffinity, OpenBLAS and OpenMP queries and compile-time
 * macros. It never fails for lack of a source: a value it cannot find is 0 or "" (and the
 * physical core count falls back to the logical count). No allocation is kept. */
#ifndef LORATUNE_HWINFO_H
#define LORATUNE_HWINFO_H

#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CPU features, one bit each; names (lt_cpu_feature_name) are the Linux /proc/cpuinfo flag
 * names. A bit is set only when the CPU has it and the OS enabled its register state. */
typedef enum {
    /* x86-64 */
    LT_CPU_AVX = 1u << 0,
    LT_CPU_AVX2 = 1u << 1,
    LT_CPU_FMA = 1u << 2,
    LT_CPU_F16C = 1u << 3,
    LT_CPU_AVX512F = 1u << 4,
    LT_CPU_AVX512BW = 1u << 5,
    LT_CPU_AVX512VL = 1u << 6,
    LT_CPU_AVX512_VNNI = 1u << 7,
    LT_CPU_AVX512_BF16 = 1u << 8,
    LT_CPU_AMX_TILE = 1u << 9,
    LT_CPU_AMX_BF16 = 1u << 10,
    LT_CPU_AMX_INT8 = 1u << 11,
    /* aarch64 */
    LT_CPU_NEON = 1u << 16,     /* "asimd" */
    LT_CPU_NEON_FP16 = 1u << 17, /* "asimdhp" */
    LT_CPU_SVE = 1u << 18,      /* "sve" */
    LT_CPU_ARM_BF16 = 1u << 19, /* "bf16" */
} lt_cpu_feature;

#define LT_HWINFO_MAX_CUDA 16

typedef struct {
    char name[128];
    int64_t memory_bytes;
    int cc_major, cc_minor;
    int multiprocessors;
} lt_cuda_device;

typedef struct {
    /* CPU */
    char arch[16];            /* "x86_64", "aarch64", ... */
    char cpu_vendor[32];      /* "GenuineIntel", "AuthenticAMD", "" if unknown */
    char cpu_model[128];      /* /proc/cpuinfo "model name" (or the cpuid brand string) */
    int logical_cores;        /* online CPUs, sysconf(_SC_NPROCESSORS_ONLN) */
    int physical_cores;       /* distinct (package, core) pairs; logical_cores if unknown */
    int sockets;              /* distinct packages; 1 if unknown */
    int affinity_cores;       /* CPUs this process may run on (sched_getaffinity) */
    uint32_t cpu_features;    /* lt_cpu_feature bits */
    /* memory, from /proc/meminfo */
    int64_t ram_total_bytes;
    int64_t ram_available_bytes; /* MemAvailable */
    /* container limits of this process's cgroup (v2 cpu.max / memory.max, or v1 CFS quota /
     * memory.limit_in_bytes); 0 = no limit found */
    double cgroup_cpus;          /* quota / period, e.g. 2.5 */
    int64_t cgroup_memory_bytes;
    /* CUDA */
    int cuda_built;           /* 1 when built with LT_CUDA */
    int cuda_device_count;
    lt_cuda_device cuda_devices[LT_HWINFO_MAX_CUDA];
    char cuda_error[128];     /* why no devices were found, "" otherwise */
    /* build */
    char compiler[96];        /* "gcc 13.2.0" */
    char build_type[32];      /* CMAKE_BUILD_TYPE */
    char git_rev[48];
    char sanitizers[48];      /* "address,undefined" or "none" */
    uint32_t compiled_features; /* lt_cpu_feature bits the compiler may emit (-march) */
    int openmp_version;       /* _OPENMP (e.g. 201511), 0 without OpenMP */
    int openmp_max_threads;
    char blas[16];            /* "OpenBLAS" */
    char blas_config[256];    /* openblas_get_config() */
    char blas_core[64];       /* openblas_get_corename() */
    int blas_threads;
    char blas_parallel[16];   /* "sequential", "pthreads", "openmp" */
    char blas_note[160];      /* a warning when OpenBLAS picked kernels older than the CPU
                                 (its DYNAMIC_ARCH falls back to "Prescott" on CPUs it does
                                 not know), "" otherwise */
    /* what follows for loratune's CPU backend */
    char kernel_level[16];    /* the dispatch level in use, lt_cpu_level_name(
                                 lt_cpu_level_active()): "avx512", "avx2" or "baseline" */
    char cpu_level[16];       /* the best level this CPU runs, lt_cpu_level_detected() */
    char kernel_level_max[16]; /* the cap of lt_cpu_set_max_level ("avx512" when not capped) */
    int threads;              /* physical cores, at most affinity_cores and the cgroup CPU
                                 quota (rounded up), at least 1 */
} lt_hwinfo;

/* ---- run-time kernel dispatch -------------------------------------------------------------
 * The library is compiled for the x86-64 baseline (SSE2; unless built with LT_NATIVE=ON), except
 * the SIMD kernels: the files named *_avx2.c / *_avx512.c are compiled for that level alone
 * (CMakeLists.txt) and reached only through their family's dispatch, which at every call runs
 * the best variant it has at or below lt_cpu_level_active(). Families and their levels:
 * attention / cross-entropy / SwiGLU (lt_ops_fast_kernel_level, ops.h), dequantization
 * (lt_quant_kernel_level, quant.h), NF4 (lt_nf4_kernel_level, nf4.h). docs/OPS.md "CPU
 * dispatch". */
typedef enum {
    LT_CPU_LEVEL_BASELINE = 0, /* scalar twins: the x86-64 baseline (SSE2), or another arch */
    LT_CPU_LEVEL_AVX2 = 1,     /* AVX2 + FMA + F16C */
    LT_CPU_LEVEL_AVX512 = 2,   /* the AVX2 level + AVX512F + AVX512BW + AVX512VL */
} lt_cpu_level;
#define LT_CPU_LEVEL_COUNT 3

/* The best level this CPU runs (cpuid, counted only where the OS saves the registers: XCR0).
 * Detected once, on the first call of any lt_cpu_level_* function; thread-safe. */
lt_cpu_level lt_cpu_level_detected(void);
/* The lt_cpu_feature bits of this CPU (x86-64: cpuid + xgetbv; elsewhere 0), as
 * lt_hwinfo.cpu_features has them, without the rest of lt_hwinfo_detect (no allocation, no
 * file read). Detected once; thread-safe. */
uint32_t lt_cpu_features(void);
/* Caps the level every kernel family may use, for the whole process (default: no cap). A cap
 * above the CPU's level changes nothing. For programs (apps/ maps LORATUNE_CPU onto it) and
 * tests; set it before work starts: a kernel call already running keeps the level it took.
 * LT_ERR_ARG when max is not a level. */
lt_status lt_cpu_set_max_level(lt_cpu_level max);
lt_cpu_level lt_cpu_max_level(void);
/* min(lt_cpu_level_detected(), the cap): the level the dispatch runs. */
lt_cpu_level lt_cpu_level_active(void);
/* The level a kernel family whose best variant is `best` runs: min(active, best). */
lt_cpu_level lt_cpu_level_for(lt_cpu_level best);
/* "baseline", "avx2", "avx512"; NULL when l is not a level. */
const char *lt_cpu_level_name(lt_cpu_level l);
/* The inverse of lt_cpu_level_name; LT_ERR_ARG naming the accepted names otherwise. */
lt_status lt_cpu_level_parse(const char *name, lt_cpu_level *out);

/* Fills *out (zeroed first). Always returns LT_OK today; kept an lt_status for later sources. */
lt_status lt_hwinfo_detect(lt_hwinfo *out);
int lt_hwinfo_has(const lt_hwinfo *hw, lt_cpu_feature f);
/* Name of a single feature bit ("avx2", "asimd"), NULL for an unknown bit. */
const char *lt_cpu_feature_name(lt_cpu_feature f);
/* All features this architecture's detection knows about, for listing (count in *n). */
const lt_cpu_feature *lt_cpu_features_known(int *n);
/* Pretty JSON (2-space indent) of everything in hw; *json is malloc'd, caller frees. */
lt_status lt_hwinfo_to_json(const lt_hwinfo *hw, char **json);

#ifdef __cplusplus
}
#endif
#endif
