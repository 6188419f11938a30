/* lt_fault.h - fault-injection walks for tests (SQLite's test_malloc.c / test_vfs.c idea):
 * run an operation with its N-th allocation (or N-th output I/O call) failing, for
 * N = 1, 2, ... until the operation no longer reaches call N, and check every run:
 *   - a failure comes back as a clean error status (allocations: LT_ERR_NOMEM; I/O: LT_ERR_IO
 *     whose message carries the injected errno's text) with a message;
 *   - the operation's own check (files on disk, ...) holds;
 *   - the run that reaches no failure succeeds;
 *   - in ASan builds, nothing leaked (LeakSanitizer, once per walk).
 * "No crash" is checked by the test program surviving (and by ASan).
 *
 * Budget: every N up to `full`, then N grows by a stride so that at most `max_runs` runs
 * happen in all (the total comes from one counting-only run first). The walk prints its
 * schedule ("load gguf: 695 allocations, 695 runs (every N), 0.90 s"). With LT_FAULT_VERBOSE
 * set in the environment, every run is named on stderr before it starts (to find the N of a
 * crash).
 *
 * The operation must release what it made before returning (on success too), so that every
 * run starts from the same state. */
#ifndef LT_FAULT_H
#define LT_FAULT_H

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loratune/core.h"
#include "lt_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define LT_FAULT_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LT_FAULT_LSAN 1
#endif
#endif
#ifdef LT_FAULT_LSAN
int __lsan_do_recoverable_leak_check(void); /* sanitizer/lsan_interface.h */
#endif

/* What a walk runs. ctx is the test's. */
typedef struct {
    /* before every run, with no fault armed (e.g. a fresh tokenizer, so that no cache carries
     * over from one run to the next); may be NULL */
    lt_status (*setup)(void *ctx);
    /* the operation under test: must release what it made before returning (on success too) */
    lt_status (*op)(void *ctx);
    /* after every run (n: the failing call; 0 for the counting run): checks what the operation
     * left behind (files on disk, ...); returns 0 when it is wrong (saying why on stderr); may
     * be NULL */
    int (*check)(void *ctx, lt_status st, long n);
    /* after every run and its check: undoes setup; may be NULL */
    void (*teardown)(void *ctx);
} lt_fault_ops;

typedef struct {
    long calls;  /* calls the operation makes (counting run) */
    long runs;   /* runs with a failure injected (benign ones included) */
    double secs; /* wall time of the walk */
} lt_fault_walk_result;

enum { LT_FAULT_ALLOC = 0, LT_FAULT_IO = 1 };

typedef struct {
    int kind;      /* LT_FAULT_ALLOC or LT_FAULT_IO */
    unsigned ops;  /* I/O: LT_IO_* mask */
    int err;       /* I/O: errno to inject */
    int repeat;    /* every call from N on fails (not only call N) */
    long full;     /* every N up to this one */
    long max_runs; /* then a stride keeping the runs under this */
} lt_fault_plan;

static inline void lt_fault_arm_test_(const lt_fault_plan *p, long n) {
    if (p->kind == LT_FAULT_ALLOC)
        lt_alloc_fail_after(n, p->repeat);
    else
        lt_io_fail_after(n, p->ops, p->err, p->repeat);
}
static inline long lt_fault_count_(const lt_fault_plan *p) {
    return p->kind == LT_FAULT_ALLOC ? lt_alloc_count() : lt_io_count();
}
static inline long lt_fault_failures_(const lt_fault_plan *p) {
    return p->kind == LT_FAULT_ALLOC ? lt_alloc_failures() : lt_io_failures();
}

static inline double lt_fault_now_(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* one run: setup, the operation with the plan armed at n (0: count only), then disarmed */
static inline lt_status lt_fault_run_(const lt_fault_plan *p, const lt_fault_ops *o, void *ctx,
                                      long n, long *count, long *failed) {
    *count = *failed = 0;
    lt_status st = o->setup ? o->setup(ctx) : LT_OK;
    if (st) return lt_error_wrap(st, "setup");
    lt_error(LT_OK, "%s", ""); /* the message must come from this run */
    lt_fault_arm_test_(p, n);
    st = o->op(ctx);
    *count = lt_fault_count_(p);
    *failed = lt_fault_failures_(p);
    lt_fault_arm_test_(p, -1);
    return st;
}

static inline lt_fault_walk_result lt_fault_walk(const char *name, const lt_fault_plan *p,
                                                 const lt_fault_ops *o, void *ctx) {
    lt_fault_walk_result res = {0, 0, 0};
    double t0 = lt_fault_now_();
    const char *what = p->kind == LT_FAULT_ALLOC ? "allocation" : "I/O call";
    /* counting run: no failure */
    long failed;
    lt_status st = lt_fault_run_(p, o, ctx, 0, &res.calls, &failed);
    CHECK(st == LT_OK, "%s: without faults: %s: %s", name, lt_status_name(st), lt_errmsg());
    if (o->check) CHECK(o->check(ctx, st, 0), "%s: without faults: state after the run", name);
    if (o->teardown) o->teardown(ctx);
    CHECK(res.calls > 0, "%s: no %s counted", name, what);
    long stride = 1;
    if (res.calls > p->full && p->max_runs > p->full)
        stride = (res.calls - p->full + (p->max_runs - p->full) - 1) / (p->max_runs - p->full);
    if (stride < 1) stride = 1;
    char errtext[128] = "";
    if (p->kind == LT_FAULT_IO) snprintf(errtext, sizeof errtext, "%s", strerror(p->err));
    int bad = 0; /* report only the first few failing N of a walk */
    int verbose = getenv("LT_FAULT_VERBOSE") != NULL; /* names each run before it starts */
    for (long n = 1;; n += n < p->full ? 1 : stride) {
        if (verbose) fprintf(stderr, "%s: N=%ld\n", name, n);
        long count;
        st = lt_fault_run_(p, o, ctx, n, &count, &failed);
        int reached = count >= n;
        res.runs += reached;
        if (!reached || !failed) { /* no failure (or only benign ones): must succeed */
            CHECK(st == LT_OK, "%s: N=%ld (%s): %s: %s", name, n,
                  reached ? "only a benign allocation failed" : "no fault reached",
                  lt_status_name(st), lt_errmsg());
            if (o->check) CHECK(o->check(ctx, st, n), "%s: N=%ld (no fault): state", name, n);
            if (o->teardown) o->teardown(ctx);
            if (!reached) break;
            continue;
        }
        int ok = st != LT_OK && lt_errmsg()[0] != 0;
        if (ok && p->kind == LT_FAULT_ALLOC) ok = st == LT_ERR_NOMEM;
        if (ok && p->kind == LT_FAULT_IO) ok = st == LT_ERR_IO && strstr(lt_errmsg(), errtext);
        if (!ok && bad++ < 5)
            CHECK(ok, "%s: %s %ld failed%s: got %s: '%s'", name, what, n,
                  p->repeat ? " (and every later one)" : "", lt_status_name(st), lt_errmsg());
        if (o->check && !o->check(ctx, st, n) && bad++ < 5)
            CHECK(0, "%s: %s %ld failed: wrong state after the run", name, what, n);
        if (o->teardown) o->teardown(ctx);
        if (n > res.calls + 1000000) {
            CHECK(0, "%s: the walk does not end", name);
            break;
        }
    }
    if (bad > 5) CHECK(0, "%s: %d failing runs in all", name, bad);
#ifdef LT_FAULT_LSAN
    CHECK(__lsan_do_recoverable_leak_check() == 0, "%s: leaks (LeakSanitizer report above)", name);
#endif
    res.secs = lt_fault_now_() - t0;
    if (stride == 1)
        printf("%s: %ld %ss, %ld runs (every N%s), %.2f s\n", name, res.calls, what, res.runs,
               p->repeat ? ", persistent" : "", res.secs);
    else
        printf("%s: %ld %ss, %ld runs (every N to %ld, then every %ld%s), %.2f s\n", name,
               res.calls, what, res.runs, p->full, stride, p->repeat ? ", persistent" : "",
               res.secs);
    fflush(stdout);
    return res;
}

/* A small fixture for walks (a full 50k-token tokenizer.json costs ~50,000 allocations to
 * load): writes to dst the tokenizer.json src (byte-level BPE whose merge i makes token
 * first + i, as GPT-2 and SmolLM) cut to its first k merges: the vocabulary keeps the ids below
 * the largest one those merges make; added tokens above it are renumbered after it. */
static inline void lt_fault_cut_tokenizer(const char *src, const char *dst, size_t k) {
    json_error_t e;
    json_t *j = json_load_file(src, 0, &e), *model = json_object_get(j, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    CHECK(j && json_is_object(vocab) && json_array_size(merges) > k, "%s: %s", src, e.text);
    if (!j || !json_is_object(vocab) || json_array_size(merges) <= k) return;
    while (json_array_size(merges) > k)
        json_array_remove(merges, json_array_size(merges) - 1);
    json_int_t limit = 0;
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        char ab[256];
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            snprintf(ab, sizeof ab, "%.*s%s", (int)(sp - s), s, sp + 1);
        } else {
            snprintf(ab, sizeof ab, "%s%s", json_string_value(json_array_get(m, 0)),
                     json_string_value(json_array_get(m, 1)));
        }
        json_int_t id = json_integer_value(json_object_get(vocab, ab));
        if (id + 1 > limit) limit = id + 1;
    }
    json_t *cut = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (json_integer_value(v) < limit) json_object_set(cut, key, v);
    }
    json_t *added;
    json_array_foreach(json_object_get(j, "added_tokens"), i, added) {
        if (json_integer_value(json_object_get(added, "id")) < limit) continue;
        json_object_set_new(added, "id", json_integer(limit));
        json_object_set_new(cut, json_string_value(json_object_get(added, "content")),
                            json_integer(limit++));
    }
    json_object_set_new(model, "vocab", cut);
    CHECK(json_dump_file(j, dst, JSON_COMPACT) == 0, "%s: cannot write", dst);
    json_decref(j);
}

/* A fresh temp folder for a walk that writes files: under $TMPDIR when set, else under
 * /dev/shm when it is there (tmpfs: the writers' fsyncs, hundreds per walk, cost nothing), else
 * /tmp. Remove it with lt_fault_rmtree at the end. */
static inline const char *lt_fault_tmpdir(void) {
    static char buf[512];
    const char *t = getenv("TMPDIR");
    struct stat st;
    if (!t)
        t = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                ? "/dev/shm"
                : "/tmp";
    snprintf(buf, sizeof buf, "%s/lt_test_XXXXXX", t);
    extern char *mkdtemp(char *);
    return mkdtemp(buf);
}

/* rm -r path (does not follow links). */
static inline void lt_fault_rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4096];
            if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) < (int)sizeof p) lt_fault_rmtree(p);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

#endif
