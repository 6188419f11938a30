/* export_lock.c - lt_export_lock: the folder lock (lt_dir_lock) the model writers hold while
 * they write, so that an export never lands in a folder a training run or another export is
 * writing. A Hugging Face folder is the export's own: it is locked (created when missing). A
 * GGUF is one file in a folder that may be anyone's (the current folder, /tmp): its folder is
 * locked only when a loratune writer has a lock file there (a run folder), so two GGUFs can
 * still be written side by side in an ordinary folder. Locks this process already holds (a
 * run saving its full fine-tune, a caller that took the lock first) are no conflict. */
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

lt_status lt_export_lock(const char *out, int gguf, lt_dir_lock **lock) {
    *lock = NULL;
    if (!out || !*out) return lt_error(LT_ERR_ARG, "export: an output path is required");
    if (!gguf) return lt_dir_lock_open(out, LT_DIR_LOCK_REENTER, lock);
    const char *sl = strrchr(out, '/');
    if (!sl) return lt_dir_lock_open(".", LT_DIR_LOCK_EXISTING | LT_DIR_LOCK_REENTER, lock);
    size_t n = sl == out ? 1 : (size_t)(sl - out);
    char *dir = lt_malloc(n + 1);
    if (!dir) return lt_error(LT_ERR_NOMEM, "%s: out of memory", out);
    memcpy(dir, out, n);
    dir[n] = 0;
    lt_status st = lt_dir_lock_open(dir, LT_DIR_LOCK_EXISTING | LT_DIR_LOCK_REENTER, lock);
    free(dir);
    return st;
}
