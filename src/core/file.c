/* file.c - read-only mmap of whole files, small-file reads, atomic writes (through the hooked
 * output primitives of io.h). */
#define _GNU_SOURCE
#include "loratune/core.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"

lt_status lt_file_map(const char *path, lt_mapped_file *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lt_error(LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lt_error(LT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lt_error(LT_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) { /* mmap of 0 bytes fails; an empty map is valid */
        close(fd);
        return LT_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return lt_error(LT_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    out->data = p;
    out->size = (size_t)st.st_size;
    return LT_OK;
}

void lt_file_unmap(lt_mapped_file *m) {
    if (m && m->data) munmap((void *)m->data, m->size);
    if (m) {
        m->data = NULL;
        m->size = 0;
    }
}

lt_status lt_file_read_all(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lt_error(LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = lt_malloc(cap);
    if (!buf) {
        fclose(f);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (cap - n < 2) {
            char *nb = lt_realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return lt_error(LT_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return LT_OK;
}

lt_status lt_file_write_atomic(const char *path, const void *buf, size_t len) {
    size_t pl = strlen(path);
    char *tmp = lt_malloc(pl + 32);
    if (!tmp) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    lt_status st = LT_OK;
    int fd = lt_io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = lt_error(LT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    st = lt_io_write_all(fd, buf, len, tmp);
    if (st == LT_OK && lt_io_fsync(fd) != 0)
        st = lt_error(LT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (lt_io_close(fd) != 0 && st == LT_OK)
        st = lt_error(LT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == LT_OK && lt_io_rename(tmp, path) != 0)
        st = lt_error(LT_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (st != LT_OK) {
        unlink(tmp);
        goto done;
    }
    lt_io_sync_parent(path); /* make the rename durable */
done:
    free(tmp);
    return st;
}

int lt_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int lt_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the "incomplete" marker of multi-file outputs ------------------------------------- */

static char *marker_path(const char *dir) {
    size_t n = strlen(dir) + sizeof "/" LT_INCOMPLETE_NAME;
    char *p = lt_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, LT_INCOMPLETE_NAME);
    return p;
}

lt_status lt_output_begin(const char *dir, const char *what) {
    char *p = marker_path(dir);
    if (!p) return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    char text[512];
    int n = snprintf(text, sizeof text, "%s, written by pid %ld\n", what ? what : "output",
                     (long)getpid());
    if (n < 0 || n >= (int)sizeof text) n = (int)sizeof text - 1;
    lt_status st = lt_file_write_atomic(p, text, (size_t)n);
    free(p);
    return st;
}

lt_status lt_output_end(const char *dir) {
    char *p = marker_path(dir);
    if (!p) return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    lt_status st = LT_OK;
    if (unlink(p) != 0 && errno != ENOENT)
        st = lt_error(LT_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    else
        lt_io_sync_parent(p); /* the output is whole once the removal is durable */
    free(p);
    return st;
}

lt_status lt_output_check(const char *path) {
    char *dir = lt_strdup(path);
    if (!dir) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (!lt_path_is_dir(path)) {
        char *sl = strrchr(dir, '/');
        if (sl == dir)
            sl[1] = 0;
        else if (sl)
            *sl = 0;
        else
            strcpy(dir, ".");
    }
    char *p = marker_path(dir);
    lt_status st = LT_OK;
    if (!p) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
    } else if (lt_path_exists(p)) {
        char *text = NULL;
        size_t len = 0;
        if (lt_file_read_all(p, &text, &len) == LT_OK) {
            while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
                text[--len] = 0;
        }
        st = lt_error(LT_ERR_FORMAT,
                      "%s: an incomplete output (%s; %s is there: its writer stopped before it "
                      "finished, e.g. disk full or killed): write it again",
                      dir, text && *text ? text : "unknown writer", p);
        free(text);
    }
    free(p);
    free(dir);
    return st;
}

void lt_dir_remove_temps(const char *dir, const char *const *names) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    size_t dl = strlen(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        for (int i = 0; names[i]; i++) {
            size_t n = strlen(names[i]);
            if (strncmp(e->d_name, names[i], n) || strncmp(e->d_name + n, ".tmp.", 5) ||
                !e->d_name[n + 5])
                continue;
            char *p = lt_malloc(dl + strlen(e->d_name) + 2);
            if (p) {
                sprintf(p, "%s/%s", dir, e->d_name);
                unlink(p);
                free(p);
            }
            break;
        }
    }
    closedir(d);
}
