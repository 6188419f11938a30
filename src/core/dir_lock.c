/* dir_lock.c - lt_dir_lock: an advisory, exclusive lock on a folder one writer owns (a training
 * run's OUT, an export's folder), so that a second writer fails at once instead of mixing its
 * files into the first one's.
 *
 * The lock is an open-file-description lock (fcntl F_OFD_SETLK, F_WRLCK, whole file) on
 * DIR/.loratune.lock. OFD locks belong to the open file, not to the process: two handles in
 * one process conflict (two runs in one server), closing another descriptor of the same file
 * does not drop it (the POSIX-lock trap), and the kernel releases it however the holder ends,
 * SIGKILL included. They conflict with POSIX record locks (lockf, fcntl F_SETLK) too.
 *
 * Invariants: the holder's pid is written into the file right after locking, as a fixed-width
 * field (so a reader never sees a half-written number); the file is unlinked by its holder
 * while still locked, so anyone who opened it earlier and locks it afterwards holds a lock on
 * a dead inode: every acquirer therefore checks that the path still names the inode it
 * locked, and starts over when it does not. */
#define _GNU_SOURCE
#include "core/io.h"
#include "loratune/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LT_DIR_LOCK_TRIES 20

struct lt_dir_lock {
    int fd;
    int created_dir; /* lt_dir_lock_open made dir: removed again on close when still empty */
    char *dir;
    char *path; /* dir/.loratune.lock */
};

/* The pid the holder wrote into the lock file; -1 when it is not there (yet). A holder writes
 * it right after locking: wait a little for one that has just locked. */
static long holder_pid(int fd) {
    for (int i = 0; i < 50; i++) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            char *end;
            long pid = strtol(buf, &end, 10);
            if (end != buf && pid > 0) return pid;
        }
        struct timespec ts = {0, 2000000}; /* 2 ms */
        nanosleep(&ts, NULL);
    }
    return -1;
}

static lt_status busy(const char *dir, const char *path, long pid) {
    char who[64];
    if (pid < 0)
        snprintf(who, sizeof who, "another loratune process (pid unknown)");
    else if (pid == (long)getpid())
        snprintf(who, sizeof who, "another run or export in this process (pid %ld)", pid);
    else
        snprintf(who, sizeof who, "another loratune process (pid %ld)", pid);
    return lt_error(LT_ERR_BUSY,
                    "%s: in use by %s, which holds the lock %s; wait for it to finish or write "
                    "somewhere else",
                    dir, who, path);
}

lt_status lt_dir_lock_open(const char *dir, unsigned flags, lt_dir_lock **out) {
    *out = NULL;
    if (!dir || !*dir) return lt_error(LT_ERR_ARG, "lt_dir_lock_open: a folder is required");
    int existing = (flags & LT_DIR_LOCK_EXISTING) != 0;
    lt_dir_lock *l = lt_calloc(1, sizeof *l);
    size_t pl = strlen(dir) + sizeof "/" LT_DIR_LOCK_NAME;
    if (l) l->dir = lt_strdup(dir);
    if (l) l->path = lt_malloc(pl);
    if (!l || !l->dir || !l->path) {
        if (l) free(l->dir);
        if (l) free(l->path);
        free(l);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    }
    l->fd = -1;
    snprintf(l->path, pl, "%s/%s", dir, LT_DIR_LOCK_NAME);
    lt_status st = LT_OK;
    for (int attempt = 0;; attempt++) {
        if (attempt == LT_DIR_LOCK_TRIES) {
            st = lt_error(LT_ERR_IO,
                          "%s: the lock file keeps being replaced; gave up after %d tries", l->path,
                          LT_DIR_LOCK_TRIES);
            break;
        }
        if (!existing) {
            int created = 0;
            if ((st = lt_mkdir_p(dir, 0755, &created))) break;
            if (created) l->created_dir = 1;
        }
        int fd = open(l->path, O_RDWR | O_CLOEXEC | (existing ? 0 : O_CREAT), 0644);
        if (fd < 0) {
            if (errno == ENOENT && existing) break; /* nobody writes there: nothing to lock */
            if (errno == ENOENT) continue;          /* a releasing holder removed its new folder */
            st = lt_error(LT_ERR_IO, "%s: cannot open the lock file: %s", l->path, strerror(errno));
            break;
        }
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
            int e = errno;
            if (e == EAGAIN || e == EACCES) {
                long pid = holder_pid(fd);
                close(fd);
                if (pid == (long)getpid() && (flags & LT_DIR_LOCK_REENTER)) break;
                st = busy(dir, l->path, pid);
            } else {
                close(fd);
                st = lt_error(LT_ERR_IO, "%s: cannot lock: %s", l->path, strerror(e));
            }
            break;
        }
        struct stat a, b; /* still the file that the path names? (see the invariants) */
        if (fstat(fd, &a) != 0 || stat(l->path, &b) != 0 || a.st_dev != b.st_dev ||
            a.st_ino != b.st_ino) {
            close(fd);
            continue;
        }
        char pid[24];
        int n = snprintf(pid, sizeof pid, "%20ld\n", (long)getpid());
        if (pwrite(fd, pid, (size_t)n, 0) != n || ftruncate(fd, n) != 0) {
            st = lt_error(LT_ERR_IO, "%s: cannot write the pid: %s", l->path, strerror(errno));
            unlink(l->path);
            close(fd);
            break;
        }
        l->fd = fd;
        *out = l;
        return LT_OK;
    }
    /* not locked: an error, or nothing to lock (EXISTING without a lock file, REENTER) */
    if (l->created_dir) rmdir(dir);
    free(l->dir);
    free(l->path);
    free(l);
    return st;
}

void lt_dir_lock_close(lt_dir_lock *l) {
    if (!l) return;
    unlink(l->path); /* while still locked: see the invariants */
    close(l->fd);
    if (l->created_dir) rmdir(l->dir); /* fails, as it should, unless still empty */
    free(l->dir);
    free(l->path);
    free(l);
}
