/* export_lock.c - lt_export_lock: the folder lock (lt_dir_lock) the model writers hold while
 * they write, so that an export never lands in a folder a training run or another export is
 * writing. A Hugging Face folder is the export's own: it is locked (created when missing). A
 * GGUF is one file in a folder that may be anyone's (the current folder, /tmp): its folder is
 * locked only when a loratune writer has a lock file there (a run folder), so two GGUFs can
 * still be written side by side in an ordinary folder. Locks this process already holds (a
 * run saving its full fine-tune, a caller that took the lock first) are no conflict.
 *
 * Taking the lock is the moment a killed export's temp files are cleaned up (issue 18's kill
 * soak: a `fuse --out DIR` killed mid-write left DIR/model.safetensors.tmp.XXXXXX forever):
 * under the lock no live writer owns a temp file of the export's own names, so they go; other
 * files stay. Not when the lock was already this process's (its holder did that) or when there
 * was no lock to take (a GGUF in an ordinary folder: another process may be writing there). */
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

lt_status lt_export_lock(const char *out, int gguf, lt_dir_lock **lock) {
    *lock = NULL;
    if (!out || !*out) return lt_error(LT_ERR_ARG, "export: an output path is required");
    if (!gguf) {
        lt_status st = lt_dir_lock_open(out, LT_DIR_LOCK_REENTER, lock);
        if (st == LT_OK && *lock) lt_dir_remove_temps(out, lt_export_hf_names);
        return st;
    }
    const char *sl = strrchr(out, '/');
    const char *base = sl ? sl + 1 : out;
    const char *names[] = {base, NULL};
    size_t n = !sl ? 1 : sl == out ? 1 : (size_t)(sl - out);
    char *dir = lt_malloc(n + 1);
    if (!dir) return lt_error(LT_ERR_NOMEM, "%s: out of memory", out);
    if (sl)
        memcpy(dir, out, n);
    else
        dir[0] = '.';
    dir[n] = 0;
    lt_status st = lt_dir_lock_open(dir, LT_DIR_LOCK_EXISTING | LT_DIR_LOCK_REENTER, lock);
    if (st == LT_OK && *lock && *base) lt_dir_remove_temps(dir, names);
    free(dir);
    return st;
}
