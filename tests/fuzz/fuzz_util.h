/* fuzz_util.h - what the harnesses of tests/fuzz/ share.
 *
 * Most parsers take a path: fz_write() puts the input in a file of a private folder (in
 * /dev/shm when there is one, so the kernel does no disk I/O; removed at exit) under the name
 * the parser expects (config.json, tokenizer.model, ...), once per input.
 *
 * fz_refused() is the property every harness checks beyond "no sanitizer report": a parser
 * that refuses an input returns a negative lt_status and a message, never LT_OK with a
 * half-built object, never an empty message. It aborts (a crash libFuzzer reports and the
 * replay test fails on) when that does not hold. */
#ifndef LT_FUZZ_UTIL_H
#define LT_FUZZ_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/core.h"

static char fz_dir_[256];

static inline void fz_cleanup_(void) {
    if (!fz_dir_[0]) return;
    DIR *d = opendir(fz_dir_);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", fz_dir_, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(fz_dir_);
}

/* The private folder (made on first use). */
static inline const char *fz_dir(void) {
    if (!fz_dir_[0]) {
        struct stat sb;
        const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
        if (getenv("LT_FUZZ_TMP")) base = getenv("LT_FUZZ_TMP");
        snprintf(fz_dir_, sizeof fz_dir_, "%s/loratune-fuzz-XXXXXX", base);
        if (!mkdtemp(fz_dir_)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup_);
    }
    return fz_dir_;
}

/* Writes data to NAME in the private folder; returns its path (static buffer). */
static inline const char *fz_write(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror("fuzz: write");
        abort();
    }
    return path;
}

/* The input as a NUL-terminated string (malloc'd; the caller frees). */
static inline char *fz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* A refusal must be a negative status with a message. */
static inline void fz_refused(lt_status s, const char *what) {
    if (s >= 0) {
        fprintf(stderr, "fuzz: %s: status %d is no error code\n", what, (int)s);
        abort();
    }
    const char *m = lt_errmsg();
    if (getenv("LT_FUZZ_VERBOSE")) fprintf(stderr, "fuzz: %s refused: %s\n", what, m ? m : "");
    if (!m || !m[0]) {
        fprintf(stderr, "fuzz: %s: refused (%s) without a message\n", what, lt_status_name(s));
        abort();
    }
}

/* A fixture file (tests/fixtures/...) that a harness needs besides its input. */
static inline const char *fz_fixture(const char *rel) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", LT_FIXTURES_DIR, rel);
    return p;
}

#define FZ_CHECK(cond, what)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: %s:%d: %s: %s\n", __FILE__, __LINE__, what, #cond);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
