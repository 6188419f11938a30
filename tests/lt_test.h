/* lt_test.h - the tiny test harness every test program uses.
 *
 * CHECK(cond, fmt, ...) counts a pass or prints the failure with file:line and goes on;
 * LT_TEST_END() prints "N passed, N failed" and returns non-zero on any failure.
 * lt_fixture("stories260K/stories260K.bin") gives a path under tests/fixtures,
 * lt_srcpath("tests/data/x") a path under the source tree (both set by CMake). */
#ifndef LT_TEST_H
#define LT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/core.h"

static int lt_t_pass = 0, lt_t_fail = 0;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            lt_t_pass++;                                                                     \
        } else {                                                                             \
            lt_t_fail++;                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, "\n");                                                           \
        }                                                                                    \
    } while (0)

/* expr must return lt_status LT_OK */
#define CHECK_OK(expr)                                                                       \
    do {                                                                                     \
        lt_status lt_t_st_ = (expr);                                                         \
        CHECK(lt_t_st_ == LT_OK, "%s -> %s: %s", #expr, lt_status_name(lt_t_st_),           \
              lt_errmsg());                                                                  \
    } while (0)

/* expr must fail with code; the message must contain substring sub (may be NULL) */
#define CHECK_ERR(expr, code, sub)                                                           \
    do {                                                                                     \
        lt_status lt_t_st_ = (expr);                                                         \
        const char *lt_t_sub_ = (sub);                                                       \
        CHECK(lt_t_st_ == (code) && (!lt_t_sub_ || strstr(lt_errmsg(), lt_t_sub_)),          \
              "%s -> %s (%s), wanted %s containing '%s'", #expr, lt_status_name(lt_t_st_),   \
              lt_errmsg(), lt_status_name(code), lt_t_sub_ ? lt_t_sub_ : "");                \
    } while (0)

#define LT_TEST_END()                                                                        \
    do {                                                                                     \
        printf("%d passed, %d failed\n", lt_t_pass, lt_t_fail);                              \
        return lt_t_fail ? 1 : 0;                                                            \
    } while (0)

static inline const char *lt_path_join_(const char *base, const char *rel) {
    static char bufs[8][4096];
    static int k = 0;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", base, rel);
    return b;
}
static inline const char *lt_fixture(const char *rel) {
    const char *d = getenv("LT_FIXTURES");
    return lt_path_join_(d ? d : LT_FIXTURES_DIR, rel);
}
static inline const char *lt_srcpath(const char *rel) {
    const char *d = getenv("LT_SOURCE_DIR"); /* the tree elsewhere (a device machine) */
    return lt_path_join_(d ? d : LT_SOURCE_DIR, rel);
}
/* 1 when files a and b both read, are not empty and hold the same bytes. */
static inline int lt_same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = !lt_file_read_all(a, &x, &nx) && !lt_file_read_all(b, &y, &ny) && nx == ny && nx > 0 &&
             !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}
/* A fresh temp folder for the test (mkdtemp under $TMPDIR or /tmp). */
/* The first n lines of the text file src written to dst (a small data set out of a fixture). */
static inline void lt_head_lines(const char *src, const char *dst, int n) {
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    char line[8192];
    for (int i = 0; in && out && i < n && fgets(line, sizeof line, in); i++)
        fputs(line, out);
    if (in) fclose(in);
    if (out) fclose(out);
}

static inline const char *lt_tmpdir(void) {
    static char buf[512];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/lt_test_XXXXXX", t ? t : "/tmp");
    extern char *mkdtemp(char *);
    return mkdtemp(buf);
}

#endif
