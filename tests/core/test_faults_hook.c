/* test_faults_hook.c - the fault injectors themselves (include/core/loratune/core.h, "fault
 * injection"): which call fails, counting, the persistent mode, benign allocations, that the
 * state is per thread, and that the I/O primitives fail without side effects (a failed close
 * still releases the descriptor) and with the errno asked for. The walks that use them are
 * test_faults_model / _data / _save / _run. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/io.h"
#include "lt_fault.h"
#include "lt_test.h"

static void *other_thread(void *arg) {
    int *ok = arg;
    void *p = lt_malloc(16); /* the main thread's injector must not see this one */
    *ok = p != NULL && lt_alloc_count() == 0;
    free(p);
    return NULL;
}

int main(void) {
    /* off: nothing counted, nothing fails */
    void *p = lt_malloc(8);
    CHECK(p && lt_alloc_count() == 0 && lt_alloc_failures() == 0, "off");
    free(p);

    /* the 3rd call fails, only it */
    lt_alloc_fail_after(3, 0);
    void *a = lt_malloc(8), *b = lt_calloc(2, 4), *c = lt_strdup("x"), *d = lt_realloc(NULL, 8);
    CHECK(a && b && !c && d, "3rd call fails: %p %p %p %p", a, b, (void *)c, d);
    CHECK(lt_alloc_count() == 4 && lt_alloc_failures() == 1, "count %ld, failures %ld",
          lt_alloc_count(), lt_alloc_failures());
    /* a failed realloc leaves the block alone */
    lt_alloc_fail_after(1, 0);
    CHECK(lt_realloc(a, 64) == NULL && lt_alloc_failures() == 1, "realloc fails");
    memset(a, 1, 8); /* still ours (ASan would say otherwise) */
    free(a);
    free(b);
    free(d);

    /* persistent: from the 2nd on */
    lt_alloc_fail_after(2, 1);
    a = lt_malloc(8);
    b = lt_strndup("abc", 2);
    c = lt_aligned_alloc(64, 64);
    CHECK(a && !b && !c && lt_alloc_failures() == 2, "persistent");
    free(a);

    /* n == 0 counts only; n < 0 stops counting */
    lt_alloc_fail_after(0, 0);
    free(lt_malloc(1));
    free(lt_malloc(1));
    CHECK(lt_alloc_count() == 2 && lt_alloc_failures() == 0, "count only: %ld", lt_alloc_count());
    lt_alloc_fail_after(-1, 0);
    free(lt_malloc(1));
    CHECK(lt_alloc_count() == 0, "off again: %ld", lt_alloc_count());

    /* benign: injected, but not a failure the caller must report */
    lt_alloc_fail_after(1, 0);
    lt_alloc_benign_begin_();
    void *bn = lt_malloc(8);
    lt_alloc_benign_end_();
    CHECK(!bn && lt_alloc_count() == 1 && lt_alloc_failures() == 0, "benign");
    lt_alloc_fail_after(-1, 0);

    /* per thread: armed here, another thread allocates freely and counts nothing */
    lt_alloc_fail_after(1, 1);
    int ok = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread, &ok) == 0, "thread");
    pthread_join(t, NULL);
    CHECK(ok, "the other thread saw the injector");
    CHECK(lt_malloc(1) == NULL, "this thread's injector is still armed");
    lt_alloc_fail_after(-1, 0);

    /* I/O: the mask picks the calls counted; the failed call does nothing, with errno */
    const char *dir = lt_fault_tmpdir();
    char path[600], path2[600];
    snprintf(path, sizeof path, "%s/f", dir);
    snprintf(path2, sizeof path2, "%s/g", dir);
    lt_io_fail_after(2, LT_IO_WRITE, ENOSPC, 0);
    int fd = lt_io_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open is not in the mask");
    CHECK(lt_io_write(fd, "ab", 2) == 2, "1st write");
    errno = 0;
    CHECK(lt_io_write(fd, "cd", 2) == -1 && errno == ENOSPC, "2nd write fails with ENOSPC");
    CHECK(lt_io_count() == 2 && lt_io_failures() == 1, "I/O count %ld", lt_io_count());
    lt_io_fail_after(1, LT_IO_CLOSE, EIO, 0);
    errno = 0;
    CHECK(lt_io_close(fd) == -1 && errno == EIO, "close fails with EIO");
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "the failed close released the fd");
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 2, "only the 1st write reached the file");
    lt_io_fail_after(1, LT_IO_ALL, EIO, 0);
    CHECK(lt_io_rename(path, path2) == -1 && errno == EIO && lt_path_exists(path) &&
              !lt_path_exists(path2),
          "a failed rename moves nothing");
    lt_io_fail_after(1, LT_IO_ALL, 0, 0); /* err 0: EIO */
    CHECK(lt_io_mkdir(path2, 0755) == -1 && errno == EIO && !lt_path_exists(path2), "mkdir");
    lt_io_fail_after(1, LT_IO_OPEN, EACCES, 1);
    CHECK(lt_io_fopen(path2, "w") == NULL && errno == EACCES && !lt_path_exists(path2), "fopen");
    lt_io_fail_after(-1, 0, 0, 0);
    /* through the public writer: the old file stays, no temp file */
    CHECK_OK(lt_file_write_atomic(path, "old", 3));
    for (unsigned op = LT_IO_OPEN; op <= LT_IO_MKDIR; op <<= 1) {
        lt_io_fail_after(1, op, EIO, 0);
        lt_status s = lt_file_write_atomic(path, "new!", 4);
        long failed = lt_io_failures();
        lt_io_fail_after(-1, 0, 0, 0);
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(lt_file_read_all(path, &text, &len));
        int ran = op != LT_IO_MKDIR; /* lt_file_write_atomic makes no folder */
        CHECK(ran ? s == LT_ERR_IO && failed == 1 && len == 3 : s == LT_OK && len == 4,
              "op %u: %s, '%s' (%zu bytes)", op, lt_status_name(s), text ? text : "", len);
        free(text);
        if (!ran) CHECK_OK(lt_file_write_atomic(path, "old", 3));
    }
    int entries = 0;
    DIR *dd = opendir(dir);
    struct dirent *e;
    while (dd && (e = readdir(dd)))
        entries += e->d_name[0] != '.';
    if (dd) closedir(dd);
    CHECK(entries == 1, "%d files in the folder: a temp file left?", entries);
    lt_fault_rmtree(dir);
    LT_TEST_END();
}
