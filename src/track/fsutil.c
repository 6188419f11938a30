/* fsutil.c - hashing (OpenSSL EVP md5 / sha256, streamed in 1 MiB blocks), sorted folder
 * listings and atomic copies for the tracking store and the DVC-compatible data cache. */
#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "loratune/track.h"

static lt_status hash_file(const char *path, const EVP_MD *md, char *hex, int64_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lt_error(LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = lt_malloc(1 << 20);
    lt_status st = LT_OK;
    int64_t total = 0;
    if (!ctx || !buf || !EVP_DigestInit_ex(ctx, md, NULL)) {
        st = lt_error(LT_ERR_NOMEM, "%s: cannot start a digest", path);
        goto done;
    }
    for (;;) {
        ssize_t r = read(fd, buf, 1 << 20);
        if (r < 0) {
            if (errno == EINTR) continue;
            st = lt_error(LT_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        total += r;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(ctx, d, &dl);
    for (unsigned i = 0; i < dl; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (size) *size = total;
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return st;
}

lt_status lt_file_sha256(const char *path, char hex[65], int64_t *size) {
    return hash_file(path, EVP_sha256(), hex, size);
}
lt_status lt_file_md5(const char *path, char hex[33], int64_t *size) {
    return hash_file(path, EVP_md5(), hex, size);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

lt_status lt_dir_list_sorted(const char *dir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lt_error(LT_ERR_IO, "%s: cannot list folder: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = lt_realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) goto oom;
            *names = nn;
        }
        if (!((*names)[*n] = lt_strdup(e->d_name))) goto oom;
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*names, (size_t)*n, sizeof **names, cmp_str);
    return LT_OK;
oom:
    closedir(d);
    lt_dir_list_free(*names, *n);
    *names = NULL;
    *n = 0;
    return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
}

void lt_dir_list_free(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

lt_status lt_file_copy(const char *src, const char *dst, unsigned mode) {
    size_t l = strlen(dst) + 32;
    char *tmp = lt_malloc(l);
    if (!tmp) return lt_error(LT_ERR_NOMEM, "%s: out of memory", dst);
    snprintf(tmp, l, "%s.tmp.%ld", dst, (long)getpid());
    lt_status st = LT_OK;
    char *buf = NULL;
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
    if (in < 0) {
        st = lt_error(LT_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
        goto done;
    }
    unlink(tmp);
    out = lt_io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        st = lt_error(LT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    buf = lt_malloc(1 << 20);
    if (!buf) {
        st = lt_error(LT_ERR_NOMEM, "%s: out of memory", dst);
        goto done;
    }
    for (;;) {
        ssize_t r = read(in, buf, 1 << 20);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = lt_error(LT_ERR_IO, "%s: read failed: %s", src, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        if ((st = lt_io_write_all(out, buf, (size_t)r, tmp))) goto done;
    }
    if (lt_io_fsync(out) != 0)
        st = lt_error(LT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (st == LT_OK && fchmod(out, (mode_t)mode) != 0)
        st = lt_error(LT_ERR_IO, "%s: chmod failed: %s", tmp, strerror(errno));
    if (lt_io_close(out) != 0 && st == LT_OK)
        st = lt_error(LT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    out = -1;
    if (st == LT_OK && lt_io_rename(tmp, dst) != 0)
        st = lt_error(LT_ERR_IO, "%s: rename failed: %s", dst, strerror(errno));
done:
    if (out >= 0) close(out);
    if (in >= 0) close(in);
    if (st != LT_OK) unlink(tmp);
    free(buf);
    free(tmp);
    return st;
}
