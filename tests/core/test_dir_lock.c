/* test_dir_lock.c - lt_dir_lock in one process: creation of the folder and the lock file (with
 * the pid), a second handle refused with LT_ERR_BUSY naming the folder and the pid, the
 * REENTER and EXISTING flags, the folder it created removed again when still empty, a lock
 * file left behind by a dead holder taken over. Other processes (SIGKILL, fuse, train) are
 * tests/run/test_run_lock.py. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lt_test.h"

static int read_pid(const char *path) {
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atoi(buf) : -1;
}

int main(void) {
    const char *tmp = lt_tmpdir();
    char dir[600], lockf[700], pidtxt[64];
    snprintf(dir, sizeof dir, "%s/a/b", tmp);
    snprintf(lockf, sizeof lockf, "%s/%s", dir, LT_DIR_LOCK_NAME);
    snprintf(pidtxt, sizeof pidtxt, "pid %ld", (long)getpid());

    lt_dir_lock *l = NULL, *l2 = NULL;
    CHECK_OK(lt_dir_lock_open(dir, 0, &l));
    CHECK(l && lt_path_is_dir(dir), "folder created");
    CHECK(read_pid(lockf) == (int)getpid(), "lock file holds the pid: %d", read_pid(lockf));
    CHECK_ERR(lt_dir_lock_open(dir, 0, &l2), LT_ERR_BUSY, dir);
    CHECK(strstr(lt_errmsg(), pidtxt) && strstr(lt_errmsg(), LT_DIR_LOCK_NAME), "message: %s",
          lt_errmsg());
    CHECK(!l2, "no handle on failure");
    CHECK_ERR(lt_dir_lock_open(dir, LT_DIR_LOCK_EXISTING, &l2), LT_ERR_BUSY, dir);
    CHECK_OK(lt_dir_lock_open(dir, LT_DIR_LOCK_REENTER, &l2));
    CHECK(!l2, "REENTER: this process holds it, nothing to lock");
    lt_dir_lock_close(l);
    CHECK(!lt_path_exists(lockf), "close removes the lock file");
    CHECK(!lt_path_exists(dir), "close removes the (empty) folder it created");
    lt_dir_lock_close(NULL);

    /* EXISTING: nothing to lock, nothing created */
    CHECK_OK(lt_dir_lock_open(dir, LT_DIR_LOCK_EXISTING, &l));
    CHECK(!l && !lt_path_exists(dir), "EXISTING without a lock file");
    /* a lock file a dead holder left behind is taken over; a folder with files stays */
    mkdir(dir, 0755);
    char other[700];
    snprintf(other, sizeof other, "%s/keep.txt", dir);
    CHECK_OK(lt_file_write_atomic(other, "x", 1));
    CHECK_OK(lt_file_write_atomic(lockf, "999999999\n", 10));
    CHECK_OK(lt_dir_lock_open(dir, LT_DIR_LOCK_EXISTING, &l));
    CHECK(l && read_pid(lockf) == (int)getpid(), "stale lock file taken over");
    lt_dir_lock_close(l);
    CHECK(lt_path_exists(other) && !lt_path_exists(lockf), "files kept, lock file removed");
    CHECK_OK(lt_dir_lock_open(dir, 0, &l));
    CHECK(l != NULL, "lock again after close");
    lt_dir_lock_close(l);
    CHECK(lt_path_is_dir(dir), "a folder it did not create stays");

    CHECK_ERR(lt_dir_lock_open("", 0, &l), LT_ERR_ARG, "folder");
    snprintf(lockf, sizeof lockf, "%s/file", tmp);
    CHECK_OK(lt_file_write_atomic(lockf, "x", 1));
    CHECK_ERR(lt_dir_lock_open(lockf, 0, &l), LT_ERR_IO, "not a folder");
    unlink(other);
    unlink(lockf);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/a", tmp);
    rmdir(dir);
    rmdir(tmp);
    LT_TEST_END();
}
