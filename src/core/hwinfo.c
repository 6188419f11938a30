/* hwinfo.c - hardware and build detection (see hwinfo.h).
 *
 * Sources, each optional: cpuid + xgetbv (x86-64 features, only counted when the OS saves
 * the registers), getauxval (aarch64), /proc/cpuinfo (model name, vendor), sysfs topology
 * (physical cores = distinct thread-sibling sets, sockets = distinct package ids),
 * /proc/meminfo, sched_getaffinity, OpenBLAS and OpenMP queries, compile-time macros.
 * Nothing here allocates beyond the call; every string is bounded and NUL-terminated. */
#define _GNU_SOURCE
#include "loratune/hwinfo.h"

#include <cblas.h>
#include <jansson.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define LT_HW_X86 1
#endif
#if defined(__aarch64__)
#include <sys/auxv.h>
#define LT_HW_ARM 1
#endif
#if LT_CUDA
#include <cuda_runtime_api.h>
#endif

#ifndef LT_BUILD_TYPE
#define LT_BUILD_TYPE "unknown"
#endif
#ifndef LT_GIT_REV
#define LT_GIT_REV "unknown"
#endif

typedef struct {
    lt_cpu_feature bit;
    const char *name;
} feature_name;

static const feature_name k_features[] = {
    {LT_CPU_AVX, "avx"},
    {LT_CPU_AVX2, "avx2"},
    {LT_CPU_FMA, "fma"},
    {LT_CPU_F16C, "f16c"},
    {LT_CPU_AVX512F, "avx512f"},
    {LT_CPU_AVX512BW, "avx512bw"},
    {LT_CPU_AVX512VL, "avx512vl"},
    {LT_CPU_AVX512_VNNI, "avx512_vnni"},
    {LT_CPU_AVX512_BF16, "avx512_bf16"},
    {LT_CPU_AMX_TILE, "amx_tile"},
    {LT_CPU_AMX_BF16, "amx_bf16"},
    {LT_CPU_AMX_INT8, "amx_int8"},
    {LT_CPU_NEON, "asimd"},
    {LT_CPU_NEON_FP16, "asimdhp"},
    {LT_CPU_SVE, "sve"},
    {LT_CPU_ARM_BF16, "bf16"},
};
enum { N_FEATURES = sizeof k_features / sizeof k_features[0] };

#if defined(LT_HW_X86)
static const lt_cpu_feature k_known[] = {
    LT_CPU_AVX,         LT_CPU_AVX2,        LT_CPU_FMA,      LT_CPU_F16C,
    LT_CPU_AVX512F,     LT_CPU_AVX512BW,    LT_CPU_AVX512VL, LT_CPU_AVX512_VNNI,
    LT_CPU_AVX512_BF16, LT_CPU_AMX_TILE,    LT_CPU_AMX_BF16, LT_CPU_AMX_INT8};
#elif defined(LT_HW_ARM)
static const lt_cpu_feature k_known[] = {LT_CPU_NEON, LT_CPU_NEON_FP16, LT_CPU_SVE,
                                         LT_CPU_ARM_BF16};
#else
static const lt_cpu_feature k_known[] = {0};
#endif

const char *lt_cpu_feature_name(lt_cpu_feature f) {
    for (int i = 0; i < N_FEATURES; i++)
        if (k_features[i].bit == f) return k_features[i].name;
    return NULL;
}

const lt_cpu_feature *lt_cpu_features_known(int *n) {
#if defined(LT_HW_X86) || defined(LT_HW_ARM)
    *n = (int)(sizeof k_known / sizeof k_known[0]);
#else
    *n = 0;
#endif
    return k_known;
}

int lt_hwinfo_has(const lt_hwinfo *hw, lt_cpu_feature f) { return (hw->cpu_features & f) == f; }

/* src cut to cap - 1 bytes (a CPU model name, a kernel level: truncation is intended) */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

/* ---- CPU features ---------------------------------------------------------------------- */

#if defined(LT_HW_X86)
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static uint32_t detect_x86(char *brand, size_t brand_cap, char *vendor, size_t vendor_cap) {
    unsigned a, b, c, d;
    uint32_t f = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    unsigned max_leaf = a;
    char v[13];
    memcpy(v, &b, 4);
    memcpy(v + 4, &d, 4);
    memcpy(v + 8, &c, 4);
    v[12] = 0;
    copy_str(vendor, vendor_cap, v);
    __get_cpuid(1, &a, &b, &c, &d);
    int osxsave = (c >> 27) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;           /* XMM + YMM state */
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask + ZMM state */
    int os_amx = (xcr0 & 0x60000) == 0x60000;   /* XTILECFG + XTILEDATA */
    if (os_avx) {
        if (c & (1u << 28)) f |= LT_CPU_AVX;
        if (c & (1u << 12)) f |= LT_CPU_FMA;
        if (c & (1u << 29)) f |= LT_CPU_F16C;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned sub1 = a;
        if (os_avx && (b & (1u << 5))) f |= LT_CPU_AVX2;
        if (os_avx512) {
            if (b & (1u << 16)) f |= LT_CPU_AVX512F;
            if (b & (1u << 30)) f |= LT_CPU_AVX512BW;
            if (b & (1u << 31)) f |= LT_CPU_AVX512VL;
            if (c & (1u << 11)) f |= LT_CPU_AVX512_VNNI;
        }
        if (os_amx) {
            if (d & (1u << 24)) f |= LT_CPU_AMX_TILE;
            if (d & (1u << 22)) f |= LT_CPU_AMX_BF16;
            if (d & (1u << 25)) f |= LT_CPU_AMX_INT8;
        }
        if (sub1 >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            if (os_avx512 && (a & (1u << 5))) f |= LT_CPU_AVX512_BF16;
        }
    }
    /* brand string, used when /proc/cpuinfo has no model name */
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
        char br[49];
        for (unsigned i = 0; i < 3; i++) {
            __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
            memcpy(br + 16 * i, &a, 4);
            memcpy(br + 16 * i + 4, &b, 4);
            memcpy(br + 16 * i + 8, &c, 4);
            memcpy(br + 16 * i + 12, &d, 4);
        }
        br[48] = 0;
        copy_str(brand, brand_cap, trim(br));
    }
    return f;
}
#endif

#if defined(LT_HW_ARM)
static uint32_t detect_arm(void) {
    unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    uint32_t f = 0;
    if (h & (1ul << 1)) f |= LT_CPU_NEON;       /* HWCAP_ASIMD */
    if (h & (1ul << 10)) f |= LT_CPU_NEON_FP16; /* HWCAP_ASIMDHP */
    if (h & (1ul << 22)) f |= LT_CPU_SVE;       /* HWCAP_SVE */
    if (h2 & (1ul << 14)) f |= LT_CPU_ARM_BF16; /* HWCAP2_BF16 */
    return f;
}
#endif

static uint32_t compiled_features(void) {
    uint32_t f = 0;
#ifdef __AVX__
    f |= LT_CPU_AVX;
#endif
#ifdef __AVX2__
    f |= LT_CPU_AVX2;
#endif
#ifdef __FMA__
    f |= LT_CPU_FMA;
#endif
#ifdef __F16C__
    f |= LT_CPU_F16C;
#endif
#ifdef __AVX512F__
    f |= LT_CPU_AVX512F;
#endif
#ifdef __AVX512BW__
    f |= LT_CPU_AVX512BW;
#endif
#ifdef __AVX512VL__
    f |= LT_CPU_AVX512VL;
#endif
#ifdef __AVX512VNNI__
    f |= LT_CPU_AVX512_VNNI;
#endif
#ifdef __AVX512BF16__
    f |= LT_CPU_AVX512_BF16;
#endif
#ifdef __AMX_TILE__
    f |= LT_CPU_AMX_TILE;
#endif
#ifdef __AMX_BF16__
    f |= LT_CPU_AMX_BF16;
#endif
#ifdef __AMX_INT8__
    f |= LT_CPU_AMX_INT8;
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
    f |= LT_CPU_NEON;
#endif
#ifdef __ARM_FEATURE_FP16_VECTOR_ARITHMETIC
    f |= LT_CPU_NEON_FP16;
#endif
#ifdef __ARM_FEATURE_SVE
    f |= LT_CPU_SVE;
#endif
#ifdef __ARM_FEATURE_BF16
    f |= LT_CPU_ARM_BF16;
#endif
    return f;
}

/* ---- dispatch level ------------------------------------------------------------------------ */

static const char *const k_level_names[LT_CPU_LEVEL_COUNT] = {"baseline", "avx2", "avx512"};

#if defined(LT_HW_X86)
/* the level a set of feature bits (as detect_x86 gives them) runs */
static lt_cpu_level level_of(uint32_t f) {
    const uint32_t avx2 = LT_CPU_AVX2 | LT_CPU_FMA | LT_CPU_F16C;
    const uint32_t avx512 = avx2 | LT_CPU_AVX512F | LT_CPU_AVX512BW | LT_CPU_AVX512VL;
    if ((f & avx512) == avx512) return LT_CPU_LEVEL_AVX512;
    if ((f & avx2) == avx2) return LT_CPU_LEVEL_AVX2;
    return LT_CPU_LEVEL_BASELINE;
}
#endif

static lt_cpu_level g_detected = LT_CPU_LEVEL_BASELINE;
static uint32_t g_features;
static pthread_once_t g_detect_once = PTHREAD_ONCE_INIT;
static atomic_int g_max_level = LT_CPU_LEVEL_COUNT - 1;

static void detect_level(void) {
#if defined(LT_HW_X86)
    char brand[64], vendor[32];
    g_features = detect_x86(brand, sizeof brand, vendor, sizeof vendor);
    g_detected = level_of(g_features);
#else
    g_detected = LT_CPU_LEVEL_BASELINE;
#endif
}

uint32_t lt_cpu_features(void) {
    pthread_once(&g_detect_once, detect_level);
    return g_features;
}

lt_cpu_level lt_cpu_level_detected(void) {
    pthread_once(&g_detect_once, detect_level);
    return g_detected;
}

lt_status lt_cpu_set_max_level(lt_cpu_level max) {
    if ((unsigned)max >= LT_CPU_LEVEL_COUNT)
        return lt_error(LT_ERR_ARG, "cpu level %d: expected 0 (baseline) to %d (%s)", (int)max,
                        LT_CPU_LEVEL_COUNT - 1, k_level_names[LT_CPU_LEVEL_COUNT - 1]);
    atomic_store_explicit(&g_max_level, (int)max, memory_order_relaxed);
    return LT_OK;
}

lt_cpu_level lt_cpu_max_level(void) {
    return (lt_cpu_level)atomic_load_explicit(&g_max_level, memory_order_relaxed);
}

lt_cpu_level lt_cpu_level_active(void) {
    lt_cpu_level d = lt_cpu_level_detected(), m = lt_cpu_max_level();
    return d < m ? d : m;
}

lt_cpu_level lt_cpu_level_for(lt_cpu_level best) {
    lt_cpu_level a = lt_cpu_level_active();
    return a < best ? a : best;
}

const char *lt_cpu_level_name(lt_cpu_level l) {
    return (unsigned)l < LT_CPU_LEVEL_COUNT ? k_level_names[l] : NULL;
}

lt_status lt_cpu_level_parse(const char *name, lt_cpu_level *out) {
    for (int l = 0; l < LT_CPU_LEVEL_COUNT; l++)
        if (name && !strcmp(name, k_level_names[l])) {
            *out = (lt_cpu_level)l;
            return LT_OK;
        }
    return lt_error(LT_ERR_ARG, "cpu level '%s': expected baseline, avx2 or avx512",
                    name ? name : "(null)");
}

/* ---- /proc and /sys -------------------------------------------------------------------- */

static void read_cpuinfo(lt_hwinfo *hw) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        char *key = trim(line), *val = trim(colon + 1);
        if (!hw->cpu_model[0] && (!strcmp(key, "model name") || !strcmp(key, "Model name")))
            copy_str(hw->cpu_model, sizeof hw->cpu_model, val);
        else if (!hw->cpu_vendor[0] && !strcmp(key, "vendor_id"))
            copy_str(hw->cpu_vendor, sizeof hw->cpu_vendor, val);
    }
    fclose(f);
}

static int read_sys_line(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (ok) trim(buf);
    return ok;
}

/* physical cores = distinct thread_siblings_list strings over online CPUs;
 * sockets = distinct physical_package_id values. */
static void read_topology(lt_hwinfo *hw) {
    enum { MAXC = 4096 };
    long nconf = sysconf(_SC_NPROCESSORS_CONF);
    if (nconf <= 0) return;
    if (nconf > MAXC) nconf = MAXC;
    char(*sib)[64] = lt_calloc((size_t)nconf, 64);
    int *pkg = lt_calloc((size_t)nconf, sizeof *pkg);
    if (!sib || !pkg) {
        free(sib);
        free(pkg);
        return;
    }
    int ncores = 0, npkg = 0;
    for (long c = 0; c < nconf; c++) {
        char path[128], buf[64], online[8];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/online", c);
        if (read_sys_line(path, online, sizeof online) && online[0] == '0') continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/thread_siblings_list",
                 c);
        if (read_sys_line(path, buf, sizeof buf)) {
            int seen = 0;
            for (int i = 0; i < ncores && !seen; i++) seen = !strcmp(sib[i], buf);
            if (!seen) copy_str(sib[ncores++], 64, buf);
        }
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", c);
        if (read_sys_line(path, buf, sizeof buf)) {
            int id = atoi(buf), seen = 0;
            for (int i = 0; i < npkg && !seen; i++) seen = pkg[i] == id;
            if (!seen) pkg[npkg++] = id;
        }
    }
    if (ncores > 0 && ncores <= hw->logical_cores) hw->physical_cores = ncores;
    if (npkg > 0) hw->sockets = npkg;
    free(sib);
    free(pkg);
}

static void read_meminfo(lt_hwinfo *hw) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) hw->ram_total_bytes = kb * 1024;
        else if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            hw->ram_available_bytes = kb * 1024;
    }
    fclose(f);
}

/* cgroup limits. /proc/self/cgroup lines are "id:controllers:path"; v2 has id 0 and no
 * controllers. Inside a cgroup namespace the path is "/" and the files sit at the mount root,
 * so the root is tried after the full path. */
static int read_ll_file(const char *dir, const char *path, const char *file, long long *a,
                        long long *b, int *is_max) {
    char p[1024], buf[128];
    snprintf(p, sizeof p, "%s%s/%s", dir, path, file);
    if (!read_sys_line(p, buf, sizeof buf)) {
        snprintf(p, sizeof p, "%s/%s", dir, file);
        if (!read_sys_line(p, buf, sizeof buf)) return 0;
    }
    *is_max = !strncmp(buf, "max", 3);
    *a = *is_max ? -1 : atoll(buf);
    const char *sp = strchr(buf, ' ');
    if (b) *b = sp ? atoll(sp + 1) : 0;
    return 1;
}

static void read_cgroup(lt_hwinfo *hw) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return;
    char line[1024];
    const int64_t unlimited = (int64_t)1 << 60; /* v1 reports "no limit" as ~2^63 */
    while (fgets(line, sizeof line, f)) {
        trim(line);
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = 0;
        *c2 = 0;
        const char *ctrl = c1 + 1, *path = c2 + 1;
        long long a, b;
        int is_max;
        if (!strcmp(line, "0") && !*ctrl) { /* v2 */
            if (read_ll_file("/sys/fs/cgroup", path, "cpu.max", &a, &b, &is_max) && !is_max &&
                a > 0 && b > 0)
                hw->cgroup_cpus = (double)a / (double)b;
            if (read_ll_file("/sys/fs/cgroup", path, "memory.max", &a, NULL, &is_max) &&
                !is_max && a > 0 && a < unlimited)
                hw->cgroup_memory_bytes = a;
        } else if (strstr(ctrl, "cpu") && !strstr(ctrl, "cpuset") && !hw->cgroup_cpus) {
            long long q, per;
            if ((read_ll_file("/sys/fs/cgroup/cpu", path, "cpu.cfs_quota_us", &q, NULL, &is_max) ||
                 read_ll_file("/sys/fs/cgroup/cpu,cpuacct", path, "cpu.cfs_quota_us", &q, NULL,
                              &is_max)) &&
                q > 0 &&
                (read_ll_file("/sys/fs/cgroup/cpu", path, "cpu.cfs_period_us", &per, NULL,
                              &is_max) ||
                 read_ll_file("/sys/fs/cgroup/cpu,cpuacct", path, "cpu.cfs_period_us", &per,
                              NULL, &is_max)) &&
                per > 0)
                hw->cgroup_cpus = (double)q / (double)per;
        } else if (!strcmp(ctrl, "memory") && !hw->cgroup_memory_bytes) {
            if (read_ll_file("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes", &a, NULL,
                             &is_max) &&
                a > 0 && a < unlimited)
                hw->cgroup_memory_bytes = a;
        }
    }
    fclose(f);
}

/* ---- CUDA -------------------------------------------------------------------------------- */

static void detect_cuda(lt_hwinfo *hw) {
#if LT_CUDA
    hw->cuda_built = 1;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        copy_str(hw->cuda_error, sizeof hw->cuda_error, cudaGetErrorString(e));
        return;
    }
    if (n > LT_HWINFO_MAX_CUDA) n = LT_HWINFO_MAX_CUDA;
    for (int i = 0; i < n; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
        lt_cuda_device *d = &hw->cuda_devices[hw->cuda_device_count++];
        copy_str(d->name, sizeof d->name, p.name);
        d->memory_bytes = (int64_t)p.totalGlobalMem;
        d->cc_major = p.major;
        d->cc_minor = p.minor;
        d->multiprocessors = p.multiProcessorCount;
    }
    if (n == 0) copy_str(hw->cuda_error, sizeof hw->cuda_error, "no CUDA devices");
#else
    hw->cuda_built = 0;
    copy_str(hw->cuda_error, sizeof hw->cuda_error, "not built");
#endif
}

/* ---- detect ------------------------------------------------------------------------------ */

lt_status lt_hwinfo_detect(lt_hwinfo *out) {
    memset(out, 0, sizeof *out);
    lt_hwinfo *hw = out;
#if defined(__x86_64__)
    copy_str(hw->arch, sizeof hw->arch, "x86_64");
#elif defined(__aarch64__)
    copy_str(hw->arch, sizeof hw->arch, "aarch64");
#elif defined(__i386__)
    copy_str(hw->arch, sizeof hw->arch, "i386");
#else
    copy_str(hw->arch, sizeof hw->arch, "other");
#endif
    char brand[64] = "";
#if defined(LT_HW_X86)
    hw->cpu_features = detect_x86(brand, sizeof brand, hw->cpu_vendor, sizeof hw->cpu_vendor);
#elif defined(LT_HW_ARM)
    hw->cpu_features = detect_arm();
#endif
    read_cpuinfo(hw);
    if (!hw->cpu_model[0]) copy_str(hw->cpu_model, sizeof hw->cpu_model, brand);

    long n = sysconf(_SC_NPROCESSORS_ONLN);
    hw->logical_cores = n > 0 ? (int)n : 1;
    hw->physical_cores = hw->logical_cores;
    hw->sockets = 1;
    read_topology(hw);
    cpu_set_t set;
    CPU_ZERO(&set);
    hw->affinity_cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                                     : hw->logical_cores;
    read_meminfo(hw);
    read_cgroup(hw);
    detect_cuda(hw);

    /* build */
#if defined(__clang__)
    snprintf(hw->compiler, sizeof hw->compiler, "clang %s", __clang_version__);
#elif defined(__GNUC__)
    snprintf(hw->compiler, sizeof hw->compiler, "gcc %s", __VERSION__);
#else
    copy_str(hw->compiler, sizeof hw->compiler, "unknown");
#endif
    copy_str(hw->build_type, sizeof hw->build_type, LT_BUILD_TYPE);
    copy_str(hw->git_rev, sizeof hw->git_rev, LT_GIT_REV);
#if defined(LT_SANITIZE_BUILD) && LT_SANITIZE_BUILD
    copy_str(hw->sanitizers, sizeof hw->sanitizers, "address,undefined");
#elif defined(__SANITIZE_ADDRESS__)
    copy_str(hw->sanitizers, sizeof hw->sanitizers, "address");
#else
    copy_str(hw->sanitizers, sizeof hw->sanitizers, "none");
#endif
    hw->compiled_features = compiled_features();
#ifdef _OPENMP
    hw->openmp_version = _OPENMP;
    hw->openmp_max_threads = omp_get_max_threads();
#endif
    copy_str(hw->blas, sizeof hw->blas, "OpenBLAS");
    copy_str(hw->blas_config, sizeof hw->blas_config, openblas_get_config());
    trim(hw->blas_config); /* OpenBLAS ends it with a space */
    copy_str(hw->blas_core, sizeof hw->blas_core, openblas_get_corename());
    hw->blas_threads = openblas_get_num_threads();
    switch (openblas_get_parallel()) {
    case 0: copy_str(hw->blas_parallel, sizeof hw->blas_parallel, "sequential"); break;
    case 1: copy_str(hw->blas_parallel, sizeof hw->blas_parallel, "pthreads"); break;
    case 2: copy_str(hw->blas_parallel, sizeof hw->blas_parallel, "openmp"); break;
    default: copy_str(hw->blas_parallel, sizeof hw->blas_parallel, "unknown"); break;
    }

    /* OpenBLAS 0.3.21 does not know e.g. virtualised Sapphire Rapids and runs SSE3 kernels */
    static const char *k_old_cores[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                        "Atom", "Katmai", "Coppermine", "Northwood", "Banias",
                                        "Athlon", "Opteron", "Opteron_SSE3", "Barcelona", NULL};
    int old = 0;
    for (int i = 0; k_old_cores[i]; i++) old |= !strcmp(hw->blas_core, k_old_cores[i]);
    if (old && (hw->cpu_features & LT_CPU_AVX2))
        snprintf(hw->blas_note, sizeof hw->blas_note,
                 "OpenBLAS chose %s kernels (no AVX) on an AVX2 CPU; set OPENBLAS_CORETYPE=%s",
                 hw->blas_core, (hw->cpu_features & LT_CPU_AVX512F) ? "SkylakeX" : "Haswell");

    /* kernels: the level the dispatch runs (the CPU's, at most the cap) */
    copy_str(hw->kernel_level, sizeof hw->kernel_level, lt_cpu_level_name(lt_cpu_level_active()));
    copy_str(hw->cpu_level, sizeof hw->cpu_level, lt_cpu_level_name(lt_cpu_level_detected()));
    copy_str(hw->kernel_level_max, sizeof hw->kernel_level_max,
             lt_cpu_level_name(lt_cpu_max_level()));
    int t = hw->physical_cores;
    if (hw->affinity_cores > 0 && t > hw->affinity_cores) t = hw->affinity_cores;
    if (hw->cgroup_cpus > 0) {
        int q = (int)hw->cgroup_cpus;
        if (q < hw->cgroup_cpus) q++;
        if (t > q) t = q;
    }
    hw->threads = t > 0 ? t : 1;
    return LT_OK;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static json_t *feature_obj(uint32_t bits) {
    json_t *o = json_object();
    int n;
    const lt_cpu_feature *k = lt_cpu_features_known(&n);
    for (int i = 0; i < n; i++) json_object_set_new(o, lt_cpu_feature_name(k[i]), json_boolean(bits & k[i]));
    return o;
}

lt_status lt_hwinfo_to_json(const lt_hwinfo *hw, char **json) {
    *json = NULL;
    json_t *root = json_pack(
        "{s:{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:o}, s:{s:I, s:I}, s:{s:f, s:I}}",
        "cpu", "arch", hw->arch, "vendor", hw->cpu_vendor, "model", hw->cpu_model,
        "logical_cores", hw->logical_cores, "physical_cores", hw->physical_cores, "sockets",
        hw->sockets, "affinity_cores", hw->affinity_cores, "features",
        feature_obj(hw->cpu_features), "memory", "total_bytes", (json_int_t)hw->ram_total_bytes,
        "available_bytes", (json_int_t)hw->ram_available_bytes, "cgroup", "cpus",
        hw->cgroup_cpus, "memory_bytes", (json_int_t)hw->cgroup_memory_bytes);
    if (!root) return lt_error(LT_ERR_NOMEM, "hwinfo: cannot build JSON");
    json_t *devs = json_array();
    for (int i = 0; i < hw->cuda_device_count; i++) {
        const lt_cuda_device *d = &hw->cuda_devices[i];
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", d->cc_major, d->cc_minor);
        json_array_append_new(devs, json_pack("{s:s, s:I, s:s, s:i}", "name", d->name,
                                              "memory_bytes", (json_int_t)d->memory_bytes,
                                              "compute_capability", cc, "multiprocessors",
                                              d->multiprocessors));
    }
    json_object_set_new(root, "cuda",
                        json_pack("{s:b, s:i, s:o, s:s}", "built", hw->cuda_built, "device_count",
                                  hw->cuda_device_count, "devices", devs, "status",
                                  hw->cuda_error[0] ? hw->cuda_error : "ok"));
    json_object_set_new(
        root, "build",
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:b, s:i, s:i}, s:{s:s, s:s, s:s, s:i, s:s, s:s}}",
                  "compiler", hw->compiler, "build_type", hw->build_type, "git_rev", hw->git_rev,
                  "sanitizers", hw->sanitizers, "compiled_features",
                  feature_obj(hw->compiled_features), "openmp", "enabled",
                  hw->openmp_version != 0, "version", hw->openmp_version, "max_threads",
                  hw->openmp_max_threads, "blas", "name", hw->blas, "config", hw->blas_config,
                  "core", hw->blas_core, "threads", hw->blas_threads, "parallel",
                  hw->blas_parallel, "note", hw->blas_note));
    json_object_set_new(root, "runtime",
                        json_pack("{s:s, s:s, s:s, s:i}", "kernel_level", hw->kernel_level,
                                  "cpu_level", hw->cpu_level, "kernel_level_max",
                                  hw->kernel_level_max, "threads", hw->threads));
    *json = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *json ? LT_OK : lt_error(LT_ERR_NOMEM, "hwinfo: cannot build JSON");
}
