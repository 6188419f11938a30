/* io.h - the output I/O primitives every file writer of the library goes through (temp file,
 * writes, fsync, close, rename, folder creation), so that a test can make the N-th one fail
 * (lt_io_fail_after in include/core/loratune/core.h; SQLite's test_vfs idea). Each behaves as the
 * libc call it names (same return values, errno set on failure); a failure injected into one
 * does nothing (lt_io_close / lt_io_fclose still release the file) and sets the injected errno.
 * Reads and the clean-up after a failure (unlink of a temp file) are not hooked. */
#ifndef LT_CORE_IO_H
#define LT_CORE_IO_H

#include <stdio.h>
#include <sys/types.h>

#include "loratune/core.h"

int lt_io_open(const char *path, int flags, unsigned mode);         /* LT_IO_OPEN */
int lt_io_mkstemp(char *tmpl);                                      /* LT_IO_OPEN */
ssize_t lt_io_write(int fd, const void *buf, size_t n);             /* LT_IO_WRITE */
int lt_io_fsync(int fd);                                            /* LT_IO_FSYNC */
int lt_io_close(int fd);                                            /* LT_IO_CLOSE */
int lt_io_rename(const char *from, const char *to);                 /* LT_IO_RENAME */
int lt_io_mkdir(const char *path, unsigned mode);                   /* LT_IO_MKDIR */

/* mkdir -p through lt_io_mkdir: every missing folder of dir made with mode. *created (may be
 * NULL) = 1 when dir itself was made here. Errors name the folder that could not be made, or
 * say dir exists and is not a folder. */
lt_status lt_mkdir_p(const char *dir, unsigned mode, int *created);
FILE *lt_io_fopen(const char *path, const char *mode);              /* LT_IO_OPEN */
size_t lt_io_fwrite(const void *p, size_t size, size_t n, FILE *f); /* LT_IO_WRITE */
int lt_io_fflush(FILE *f);                                          /* LT_IO_WRITE */
int lt_io_fclose(FILE *f);                                          /* LT_IO_CLOSE */

/* Writes all n bytes (retrying short writes and EINTR, at most 1 GiB per call); on failure
 * LT_ERR_IO "PATH: write failed: <strerror>". */
lt_status lt_io_write_all(int fd, const void *buf, size_t n, const char *path);
/* Best effort: fsyncs the folder holding path, so that a rename into it is durable. Errors
 * are ignored (the file is already in place), and the call is not counted by the injector. */
void lt_io_sync_parent(const char *path);

#endif
