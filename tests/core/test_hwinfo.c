/* test_hwinfo.c - lt_hwinfo_detect against independent readings: the flags line of
 * /proc/cpuinfo (x86 "flags", aarch64 "Features"), its (physical id, core id) pairs,
 * /proc/meminfo parsed here, and sysconf; plus the JSON form parsed back with jansson. */
#include <jansson.h>
#include <unistd.h>

#include "loratune/hwinfo.h"
#include "lt_test.h"

/* the first flags/Features line of /proc/cpuinfo, space-padded for word search */
static int cpuinfo_flags(char *out, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    static char line[16384];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8)) {
            char *c = strchr(line, ':');
            if (!c) continue;
            size_t n = strcspn(c + 1, "\n");
            snprintf(out, cap, " %.*s ", (int)n, c + 1);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static int has_word(const char *flags, const char *w) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s ", w);
    return strstr(flags, pat) != NULL;
}

/* distinct (physical id, core id) pairs; 0 when /proc/cpuinfo lacks them */
static int cpuinfo_physical_cores(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[1024];
    int pid = -1, pairs[4096][2], n = 0;
    while (fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) pid = v;
        else if (sscanf(line, "core id : %d", &v) == 1 && pid >= 0) {
            int seen = 0;
            for (int i = 0; i < n && !seen; i++) seen = pairs[i][0] == pid && pairs[i][1] == v;
            if (!seen && n < 4096) {
                pairs[n][0] = pid;
                pairs[n][1] = v;
                n++;
            }
        }
    }
    fclose(f);
    return n;
}

static long long meminfo_kb(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256], k[64];
    long long v, r = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%63[^:]: %lld", k, &v) == 2 && !strcmp(k, key)) r = v;
    fclose(f);
    return r;
}

int main(void) {
    lt_hwinfo hw;
    CHECK_OK(lt_hwinfo_detect(&hw));

    /* features agree with the kernel's flags, bit by bit */
    static char flags[16384];
    if (cpuinfo_flags(flags, sizeof flags)) {
        int n;
        const lt_cpu_feature *k = lt_cpu_features_known(&n);
        CHECK(n > 0, "no known features for arch %s", hw.arch);
        for (int i = 0; i < n; i++) {
            const char *name = lt_cpu_feature_name(k[i]);
            CHECK(!!lt_hwinfo_has(&hw, k[i]) == has_word(flags, name),
                  "feature %s: detect says %d, /proc/cpuinfo says %d", name,
                  lt_hwinfo_has(&hw, k[i]), has_word(flags, name));
        }
    } else {
        printf("note: /proc/cpuinfo has no flags line; feature check skipped\n");
    }
    CHECK(lt_cpu_feature_name(LT_CPU_AVX2) && !strcmp(lt_cpu_feature_name(LT_CPU_AVX2), "avx2"),
          "feature name");
    CHECK(lt_cpu_feature_name((lt_cpu_feature)(1u << 30)) == NULL, "unknown feature bit");

    /* cores */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(hw.logical_cores == online, "logical %d vs sysconf %ld", hw.logical_cores, online);
    int pc = cpuinfo_physical_cores();
    if (pc > 0)
        CHECK(hw.physical_cores == pc, "physical %d vs /proc/cpuinfo pairs %d", hw.physical_cores,
              pc);
    CHECK(hw.physical_cores >= 1 && hw.physical_cores <= hw.logical_cores, "physical %d",
          hw.physical_cores);
    CHECK(hw.affinity_cores >= 1 && hw.affinity_cores <= hw.logical_cores, "affinity %d",
          hw.affinity_cores);
    CHECK(hw.sockets >= 1 && hw.sockets <= hw.physical_cores, "sockets %d", hw.sockets);
    CHECK(hw.threads >= 1 && hw.threads <= hw.physical_cores && hw.threads <= hw.affinity_cores,
          "threads %d", hw.threads);
    CHECK(hw.cpu_model[0] != 0, "cpu model empty");

    /* memory: total exact, available within 10% + 256 MiB (it moves) */
    long long tot = meminfo_kb("MemTotal"), av = meminfo_kb("MemAvailable");
    CHECK(tot > 0 && hw.ram_total_bytes == tot * 1024, "MemTotal %lld kB vs %lld bytes", tot,
          (long long)hw.ram_total_bytes);
    double d = (double)hw.ram_available_bytes - (double)av * 1024;
    CHECK(av > 0 && fabs(d) < 0.1 * av * 1024 + 256.0 * 1024 * 1024,
          "MemAvailable %lld kB vs %lld bytes", av, (long long)hw.ram_available_bytes);

    /* build facts */
#if LT_CUDA
    CHECK(hw.cuda_built == 1, "cuda built");
#else
    CHECK(hw.cuda_built == 0 && !strcmp(hw.cuda_error, "not built"), "cuda not built");
#endif
    CHECK(!strcmp(hw.blas, "OpenBLAS") && strlen(hw.blas_config) > 0, "blas config '%s'",
          hw.blas_config);
    CHECK(hw.openmp_version > 0 && hw.openmp_max_threads >= 1, "openmp %d", hw.openmp_version);
    CHECK(!strncmp(hw.compiler, "gcc", 3) || !strncmp(hw.compiler, "clang", 5), "compiler '%s'",
          hw.compiler);
#if defined(__SANITIZE_ADDRESS__)
    CHECK(strstr(hw.sanitizers, "address") != NULL, "sanitizers '%s'", hw.sanitizers);
#endif
    /* the dispatch level: the CPU's (from its flags), capped by lt_cpu_set_max_level */
    lt_cpu_level want = LT_CPU_LEVEL_BASELINE;
    if (has_word(flags, "avx2") && has_word(flags, "fma") && has_word(flags, "f16c")) {
        want = LT_CPU_LEVEL_AVX2;
        if (has_word(flags, "avx512f") && has_word(flags, "avx512bw") &&
            has_word(flags, "avx512vl"))
            want = LT_CPU_LEVEL_AVX512;
    }
    if (flags[0])
        CHECK(lt_cpu_level_detected() == want, "detected level %s, /proc/cpuinfo flags say %s",
              lt_cpu_level_name(lt_cpu_level_detected()), lt_cpu_level_name(want));
    want = lt_cpu_level_detected();
    CHECK(!strcmp(hw.cpu_level, lt_cpu_level_name(want)) &&
              !strcmp(hw.kernel_level, hw.cpu_level) && !strcmp(hw.kernel_level_max, "avx512"),
          "uncapped: kernel level %s, cpu level %s, max %s", hw.kernel_level, hw.cpu_level,
          hw.kernel_level_max);
    for (int l = 0; l < LT_CPU_LEVEL_COUNT; l++) {
        lt_cpu_level p = LT_CPU_LEVEL_COUNT;
        const char *name = lt_cpu_level_name((lt_cpu_level)l);
        CHECK(name && lt_cpu_level_parse(name, &p) == LT_OK && p == (lt_cpu_level)l,
              "level %d name / parse", l);
        CHECK_OK(lt_cpu_set_max_level((lt_cpu_level)l));
        lt_cpu_level act = l < (int)want ? (lt_cpu_level)l : want;
        CHECK(lt_cpu_max_level() == (lt_cpu_level)l && lt_cpu_level_active() == act &&
                  lt_cpu_level_for(LT_CPU_LEVEL_AVX2) ==
                      (act < LT_CPU_LEVEL_AVX2 ? act : LT_CPU_LEVEL_AVX2),
              "cap %s: active %s", name, lt_cpu_level_name(lt_cpu_level_active()));
        lt_hwinfo h2;
        CHECK_OK(lt_hwinfo_detect(&h2));
        CHECK(!strcmp(h2.kernel_level, lt_cpu_level_name(act)) &&
                  !strcmp(h2.kernel_level_max, name) && !strcmp(h2.cpu_level, hw.cpu_level),
              "cap %s: hwinfo says %s (max %s, cpu %s)", name, h2.kernel_level,
              h2.kernel_level_max, h2.cpu_level);
    }
    lt_cpu_level p;
    CHECK_ERR(lt_cpu_level_parse("sse4", &p), LT_ERR_ARG, "baseline, avx2 or avx512");
    CHECK_ERR(lt_cpu_set_max_level((lt_cpu_level)LT_CPU_LEVEL_COUNT), LT_ERR_ARG, "cpu level 3");
    CHECK(lt_cpu_level_name((lt_cpu_level)LT_CPU_LEVEL_COUNT) == NULL, "name of a bad level");
    CHECK(lt_cpu_max_level() == LT_CPU_LEVEL_AVX512, "a bad cap changed the cap");

    /* JSON carries the same values */
    char *js = NULL;
    CHECK_OK(lt_hwinfo_to_json(&hw, &js));
    json_error_t err;
    json_t *root = js ? json_loads(js, JSON_REJECT_DUPLICATES, &err) : NULL;
    CHECK(root != NULL, "JSON does not parse: %s", root ? "" : err.text);
    if (root) {
        json_int_t lc = -1, pcj = -1, th = -1, mt = -1;
        const char *lv = "", *model = "", *cl = "", *lm = "";
        int cuda = -1;
        CHECK(json_unpack(root, "{s:{s:I, s:I, s:s}, s:{s:I}, s:{s:b}, s:{s:s, s:s, s:s, s:I}}",
                          "cpu", "logical_cores", &lc, "physical_cores", &pcj, "model", &model,
                          "memory", "total_bytes", &mt, "cuda", "built", &cuda, "runtime",
                          "kernel_level", &lv, "cpu_level", &cl, "kernel_level_max", &lm,
                          "threads", &th) == 0,
              "JSON layout");
        CHECK(lc == hw.logical_cores && pcj == hw.physical_cores && th == hw.threads &&
                  mt == hw.ram_total_bytes && !strcmp(lv, hw.kernel_level) &&
                  !strcmp(cl, hw.cpu_level) && !strcmp(lm, hw.kernel_level_max) &&
                  !strcmp(model, hw.cpu_model) && cuda == hw.cuda_built,
              "JSON values differ from the struct");
        json_t *feat = json_object_get(json_object_get(root, "cpu"), "features");
        int n;
        const lt_cpu_feature *k = lt_cpu_features_known(&n);
        for (int i = 0; i < n; i++) {
            json_t *v = json_object_get(feat, lt_cpu_feature_name(k[i]));
            CHECK(json_is_boolean(v) && json_is_true(v) == !!lt_hwinfo_has(&hw, k[i]),
                  "JSON feature %s", lt_cpu_feature_name(k[i]));
        }
        json_decref(root);
    }
    free(js);
    LT_TEST_END();
}
