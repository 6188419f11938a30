/* io.c - output I/O primitives with a fault injector (see io.h and include/core/loratune/core.h).
 * The injector is thread-local, as the allocation one (alloc.c), and shares its "any armed"
 * flag, so the normal path is one relaxed atomic load and the libc call. */
#include "core/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"

static _Thread_local lt_fault t_io;
static _Thread_local unsigned t_io_ops;
static _Thread_local int t_io_err;

void lt_io_fail_after(long n, unsigned ops, int err, int repeat) {
    lt_fault_arm_(&t_io, n, repeat);
    t_io_ops = ops;
    t_io_err = err ? err : EIO;
}
long lt_io_count(void) {
    return t_io.count;
}
long lt_io_failures(void) {
    return t_io.fails;
}

/* 1 (errno set) when this call of kind op must fail */
static int io_fault(unsigned op) {
    if (!atomic_load_explicit(&lt_fault_armed_, memory_order_relaxed) || !t_io.on ||
        !(t_io_ops & op) || !lt_fault_hit_(&t_io))
        return 0;
    errno = t_io_err;
    return 1;
}

int lt_io_open(const char *path, int flags, unsigned mode) {
    return io_fault(LT_IO_OPEN) ? -1 : open(path, flags, (mode_t)mode);
}
int lt_io_mkstemp(char *tmpl) {
    return io_fault(LT_IO_OPEN) ? -1 : mkstemp(tmpl);
}
ssize_t lt_io_write(int fd, const void *buf, size_t n) {
    return io_fault(LT_IO_WRITE) ? -1 : write(fd, buf, n);
}
int lt_io_fsync(int fd) {
    return io_fault(LT_IO_FSYNC) ? -1 : fsync(fd);
}
int lt_io_close(int fd) {
    if (io_fault(LT_IO_CLOSE)) {
        close(fd);
        errno = t_io_err;
        return -1;
    }
    return close(fd);
}
int lt_io_rename(const char *from, const char *to) {
    return io_fault(LT_IO_RENAME) ? -1 : rename(from, to);
}
int lt_io_mkdir(const char *path, unsigned mode) {
    return io_fault(LT_IO_MKDIR) ? -1 : mkdir(path, (mode_t)mode);
}
FILE *lt_io_fopen(const char *path, const char *mode) {
    return io_fault(LT_IO_OPEN) ? NULL : fopen(path, mode);
}
size_t lt_io_fwrite(const void *p, size_t size, size_t n, FILE *f) {
    return io_fault(LT_IO_WRITE) ? 0 : fwrite(p, size, n, f);
}
int lt_io_fflush(FILE *f) {
    return io_fault(LT_IO_WRITE) ? EOF : fflush(f);
}
int lt_io_fclose(FILE *f) {
    if (io_fault(LT_IO_CLOSE)) {
        fclose(f);
        errno = t_io_err;
        return EOF;
    }
    return fclose(f);
}

lt_status lt_io_write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = lt_io_write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return lt_error(LT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return LT_OK;
}

void lt_io_sync_parent(const char *path) {
    const char *sl = strrchr(path, '/');
    char buf[4096];
    const char *dir = ".";
    if (sl == path) {
        dir = "/";
    } else if (sl) {
        size_t n = (size_t)(sl - path);
        if (n >= sizeof buf) return; /* best effort */
        memcpy(buf, path, n);
        buf[n] = 0;
        dir = buf;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

lt_status lt_mkdir_p(const char *dir, unsigned mode, int *created) {
    if (created) *created = 0;
    if (!dir[0]) return lt_error(LT_ERR_ARG, "folder name is empty");
    char *p = lt_strdup(dir);
    if (!p) return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = 0;
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (lt_io_mkdir(p, mode) == 0) {
            if (i == n && created) *created = 1;
        } else if (errno != EEXIST) {
            lt_status st = lt_error(LT_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        p[i] = c;
    }
    free(p);
    if (!lt_path_is_dir(dir)) return lt_error(LT_ERR_IO, "%s: exists and is not a folder", dir);
    return LT_OK;
}
