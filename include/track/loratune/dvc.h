/* dvc.h - DVC-compatible data versioning: content hashes, a content-addressed cache and
 * .dvc files laid out exactly as DVC 3 lays them out, so the real `dvc` sees data added by
 * loratune as tracked (and loratune can restore data that dvc added).
 *
 * Hashes (DVC 3, "hash: md5"):
 *   file   md5 of its bytes (no newline conversion)
 *   folder md5 of the manifest bytes, plus ".dir": the manifest is the JSON list
 *          [{"md5": "<file md5>", "relpath": "<a/b.txt>"}, ...] sorted by relpath, written as
 *          Python's json.dumps(..., sort_keys=True) writes it (", " and ": " separators,
 *          non-ASCII as \uXXXX). Folders named .git, .dvc and .hg are skipped, as DVC does.
 * Cache: CACHE/files/md5/<first 2 hex>/<other 30 hex>[.dir], files read-only (0444); CACHE is
 * ROOT/.dvc/cache for a DVC repository, or any folder of the same layout (the tracking store
 * keeps one for data that is not in a DVC repository).
 * .dvc file (next to the data, "<name>.dvc"):
 *   outs:
 *   - md5: <md5>[.dir]
 *     size: <bytes>
 *     nfiles: <n>          (folders only)
 *     hash: md5
 *     path: <name>
 *
 * Ownership: paths are borrowed; results are written into caller structs. */
#ifndef LORATUNE_DVC_H
#define LORATUNE_DVC_H

#include <stddef.h>
#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_DVC_MD5_MAX 40 /* 32 hex + ".dir" + NUL */

typedef struct {
    char md5[LT_DVC_MD5_MAX]; /* "<32 hex>" or "<32 hex>.dir" */
    int64_t size;             /* bytes (a folder: all its files) */
    int64_t nfiles;           /* files (1 for a file) */
    int is_dir;
} lt_dvc_hash;

/* The DVC hash of a file or folder (no cache writes). */
lt_status lt_dvc_hash_path(const char *path, lt_dvc_hash *out);
/* The nearest folder at or above path's folder that holds a .dvc folder; LT_ERR_NOTFOUND when
 * none. root gets an absolute path. */
lt_status lt_dvc_find_root(const char *path, char *root, size_t n);
/* Makes dir a DVC repository as `dvc init` would leave it (.dvc/config, .dvc/.gitignore,
 * .dvcignore) when it has no .dvc folder; no-op otherwise. */
lt_status lt_dvc_init(const char *dir);
/* lt_dvc_init, or with no_scm as `dvc init --no-scm` leaves it (config "[core] no_scm = True":
 * a repository outside git, as a server's work folder is). */
lt_status lt_dvc_init_ex(const char *dir, int no_scm);
/* Copies path's content into cache (skipping objects already there) and fills out. With
 * write_dvc_file, also writes "<path>.dvc" and, when the repo at root has a .git folder, adds
 * "/<name>" to the .gitignore next to path (as `dvc add` does). */
lt_status lt_dvc_add(const char *path, const char *cache, int write_dvc_file, const char *root,
                     lt_dvc_hash *out);
/* 1 when cache holds object md5 (for a folder: the manifest and every file in it). */
int lt_dvc_cache_has(const char *cache, const char *md5);
/* Restores object md5 from cache to dest (a file, or a folder created with its files),
 * checking each object's md5 on the way; LT_ERR_NOTFOUND naming the object when missing,
 * LT_ERR_FORMAT when a cached object does not match its name. dest is replaced. */
lt_status lt_dvc_checkout(const char *cache, const char *md5, const char *dest);
/* Reads "<path>.dvc" (when it exists) and gives the md5 it records; LT_ERR_NOTFOUND when there
 * is no such file, LT_ERR_FORMAT naming the file and line when it can't be read. */
lt_status lt_dvc_read_file(const char *dvc_file, char md5[LT_DVC_MD5_MAX]);

#ifdef __cplusplus
}
#endif
#endif
