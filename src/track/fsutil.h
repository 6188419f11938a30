/* fsutil.h - file helpers of the tracking and data-versioning code (internal): hashing
 * through OpenSSL EVP, sorted folder listings, copies. */
#ifndef LT_TRACK_FSUTIL_H
#define LT_TRACK_FSUTIL_H

#include <stdint.h>

#include "loratune/core.h"

/* Names in folder dir (not "." / ".."), sorted by strcmp (byte order); *names and each name
 * malloc'd, free with lt_dir_list_free. */
lt_status lt_dir_list_sorted(const char *dir, char ***names, int *n);
void lt_dir_list_free(char **names, int n);
/* Copies src to dst (temp file + rename in dst's folder), with mode. */
lt_status lt_file_copy(const char *src, const char *dst, unsigned mode);

#endif
