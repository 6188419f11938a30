/* checkpoint.c - a training run's checkpoints: one safetensors file per checkpoint,
 * OUT/checkpoints/step-NNNNNNNN.safetensors, written atomically by lt_st_writer_write (temp
 * file, fsync, rename, fsync folder), so a crash leaves the previous checkpoints intact and
 * never a half-written one under a final name.
 *
 * Contents: every trainable tensor under its trainer name; the AdamW moments as
 * "optimizer.m.<name>" / "optimizer.v.<name>"; metadata "loratune.state": JSON with the run
 * step, trainer counters (optimizer steps, micro-batches: AdamW bias correction and the
 * dropout stream), batcher position (epoch, index: the data order is a function of the seed
 * and the epoch), early-stop and non-finite state, and the resolved options. Invariant: with
 * the same options, loading it and continuing reproduces the uninterrupted run bit for bit.
 *
 * The run holds OUT's lock (lt_dir_lock) for its whole life (lt_run_take_out_), and pruning
 * touches only the checkpoints the run owns (written by it, or its history when it resumed
 * from OUT/checkpoints), never another run's checkpoints or temp files. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/io.h"
#include "loratune/safetensors.h"
#include "run_internal.h"

/* 2: a SHA-256 of every tensor in the state ("sha256": {name: hex}) and of the state itself
 * (metadata "loratune.state.sha256"); 1 (before): neither, still read (fields checked) */
#define LT_CKPT_FORMAT 2

/* ---- integrity --------------------------------------------------------------------------- */
typedef struct {
    EVP_MD_CTX *md;
} sha_ctx;
static int sha_begin(sha_ctx *c) {
    c->md = EVP_MD_CTX_new();
    return c->md && EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) == 1;
}
static void sha_add(sha_ctx *c, const void *p, size_t n) {
    if (n) EVP_DigestUpdate(c->md, p, n);
}
static void sha_hex(sha_ctx *c, char hex[65]) {
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(c->md, d, &n);
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}
static void sha_of(const void *p, size_t n, char hex[65]) {
    sha_ctx c;
    if (!sha_begin(&c)) {
        snprintf(hex, 65, "?");
        return;
    }
    sha_add(&c, p, n);
    sha_hex(&c, hex);
}

static int is_ckpt_name(const char *n, long long *step) {
    int used = 0;
    long long s;
    if (sscanf(n, "step-%lld.safetensors%n", &s, &used) == 1 && used > 0 && !n[used]) {
        *step = s;
        return 1;
    }
    return 0;
}

/* Steps of the checkpoints in dir, ascending (malloc'd; *n count). */
static lt_status list_ckpts(const char *dir, long long **steps, int *n) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lt_error(LT_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    lt_status st = LT_OK;
    while ((e = readdir(d))) {
        long long s;
        if (is_ckpt_name(e->d_name, &s)) {
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                long long *p = lt_realloc(*steps, (size_t)cap * sizeof *p);
                if (!p) {
                    st = lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
                    break;
                }
                *steps = p;
            }
            (*steps)[(*n)++] = s;
        }
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort: few files */
        for (int j = i; j > 0 && (*steps)[j - 1] > (*steps)[j]; j--) {
            long long t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return st;
}

/* ---- the output folder and pruning ---------------------------------------------------- */

/* 1 when the run folder that --resume names (a run folder, its checkpoints/ or a checkpoint
 * file) is OUT itself (the same folder, however spelt) */
static int resumes_out(const lt_run *r) {
    if (!r->o.resume[0]) return 0;
    char dir[LT_RUN_PATH_MAX + 64];
    if (lt_path_is_dir(r->o.resume)) {
        char probe[LT_RUN_PATH_MAX + 80]; /* DIR/checkpoints/x -> DIR; DIR/x -> DIR */
        const char *sl = strrchr(r->o.resume, '/');
        const char *base = sl ? sl + 1 : r->o.resume;
        snprintf(probe, sizeof probe, "%s/%s", r->o.resume, !strcmp(base, "checkpoints") ? "x" : "checkpoints/x");
        if (lt_checkpoint_run_dir(probe, dir, sizeof dir)) return 0;
    } else if (lt_checkpoint_run_dir(r->o.resume, dir, sizeof dir)) {
        return 0;
    }
    char a[PATH_MAX], b[PATH_MAX];
    return realpath(dir, a) && realpath(r->o.out, b) && !strcmp(a, b);
}

/* 1 when OUT/checkpoints holds a checkpoint (not a temp file) */
static int other_run_ckpt(const lt_run *r) {
    DIR *d = opendir(r->ckpt_dir);
    if (!d) return 0;
    struct dirent *e;
    long long step;
    int found = 0;
    while (!found && (e = readdir(d)))
        found = is_ckpt_name(e->d_name, &step);
    closedir(d);
    return found;
}

/* What in OUT says that it holds a run: "run_config.yaml" or "checkpoints/step-N..." (the
 * first found), or NULL. */
static const char *other_run_file(const lt_run *r, char *buf, size_t n) {
    snprintf(buf, n, "%s/run_config.yaml", r->o.out);
    if (lt_path_exists(buf)) return "run_config.yaml";
    DIR *d = opendir(r->ckpt_dir);
    if (!d) return NULL;
    struct dirent *e;
    const char *found = NULL;
    while (!found && (e = readdir(d)))
        if (!strncmp(e->d_name, "step-", 5) && strstr(e->d_name, ".safetensors") &&
            !strstr(e->d_name, ".tmp.")) {
            snprintf(buf, n, "checkpoints/%s", e->d_name);
            found = buf;
        }
    closedir(d);
    return found;
}

/* --overwrite: the other run's checkpoints go (a resume must never mix two runs' states), and
 * its exports (still in OUT until this run's replace them) are marked incomplete. */
static lt_status replace_other_run(lt_run *r) {
    lt_status s = lt_output_begin(r->o.out, "a training run's exports (replaced by --overwrite)");
    if (s) return s;
    DIR *d = opendir(r->ckpt_dir);
    if (!d) return LT_OK;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "step-", 5) && strstr(e->d_name, ".safetensors")) {
            char p[LT_RUN_PATH_MAX + 300];
            snprintf(p, sizeof p, "%s/%s", r->ckpt_dir, e->d_name);
            if (unlink(p) != 0 && errno != ENOENT) {
                int err = errno;
                closedir(d);
                return lt_error(LT_ERR_IO, "%s: cannot remove (--overwrite): %s", p,
                                strerror(err));
            }
        }
    closedir(d);
    return LT_OK;
}

/* The files a run writes into OUT (its adapters, or a full fine-tune's Hugging Face folder,
 * and its config and marker) and into OUT/mlx-lm: a killed write of one of them leaves
 * NAME.tmp.SUFFIX (lt_file_write_atomic, the GGUF and safetensors writers). */
static const char *const out_files[] = {
    "adapter_model.safetensors", "adapter_config.json", "adapter.gguf", "run_config.yaml",
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    LT_INCOMPLETE_NAME, NULL};
static const char *const mlx_files[] = {"adapters.safetensors", "adapter_config.json",
                                        LT_INCOMPLETE_NAME, NULL};

lt_status lt_run_take_out_(lt_run *r) {
    lt_status s = lt_dir_lock_open(r->o.out, 0, &r->out_lock);
    if (s) return s;
    /* a killed run's export temp files (issue 18's kill soak found them left behind) */
    char mlx[LT_RUN_PATH_MAX + 16];
    snprintf(mlx, sizeof mlx, "%s/mlx-lm", r->o.out);
    lt_dir_remove_temps(r->o.out, out_files);
    lt_dir_remove_temps(mlx, mlx_files);
    DIR *d = opendir(r->ckpt_dir);
    if (d) {
        struct dirent *e; /* lt_st_writer_write's temp files: step-N.safetensors.tmp.XXXXXX */
        while ((e = readdir(d)))
            if (!strncmp(e->d_name, "step-", 5) && strstr(e->d_name, ".safetensors.tmp.")) {
                char p[LT_RUN_PATH_MAX + 300];
                snprintf(p, sizeof p, "%s/%s", r->ckpt_dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    /* a folder holding another run: refused, unless --resume continues that run or
     * --overwrite replaces it (a rerun must not leave its run_config.yaml beside the other
     * run's adapters and checkpoints) */
    char buf[LT_RUN_PATH_MAX + 300];
    const char *theirs = other_run_file(r, buf, sizeof buf);
    if (!theirs || resumes_out(r)) return LT_OK;
    if (r->o.overwrite) return replace_other_run(r);
    if (!strcmp(theirs, "run_config.yaml") && !other_run_ckpt(r))
        return lt_error(LT_ERR_BUSY,
                        "%s: holds a run that stopped before its first checkpoint "
                        "(run_config.yaml, no checkpoints/step-N.safetensors), so nothing to "
                        "resume; pass --overwrite to replace it (to start that run again: "
                        "loratune train -c %s/run_config.yaml --out %s --overwrite), or "
                        "choose another --out",
                        r->o.out, r->o.out, r->o.out);
    return lt_error(LT_ERR_BUSY,
                    "%s: holds another run (%s); pass --overwrite to replace it, --resume %s to "
                    "continue it, or choose another --out",
                    r->o.out, theirs, r->o.out);
}

/* Adds step to the checkpoints this run owns (ascending, no duplicates). */
static lt_status own_add(lt_run *r, int64_t step) {
    if (r->n_own && r->own_ckpts[r->n_own - 1] >= step) {
        for (int i = 0; i < r->n_own; i++)
            if (r->own_ckpts[i] == step) return LT_OK;
    }
    if (r->n_own == r->cap_own) {
        int cap = r->cap_own ? 2 * r->cap_own : 16;
        int64_t *p = lt_realloc(r->own_ckpts, (size_t)cap * sizeof *p);
        if (!p) return lt_error(LT_ERR_NOMEM, "checkpoint: out of memory");
        r->own_ckpts = p;
        r->cap_own = cap;
    }
    int i = r->n_own++;
    for (; i > 0 && r->own_ckpts[i - 1] > step; i--)
        r->own_ckpts[i] = r->own_ckpts[i - 1];
    r->own_ckpts[i] = step;
    return LT_OK;
}

/* Resuming from a checkpoint of OUT/checkpoints itself: the checkpoints up to it are this
 * run's history, so they are pruned as its own. */
static void own_history(lt_run *r, const char *file, int64_t step) {
    char a[PATH_MAX], b[PATH_MAX], dir[LT_RUN_PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s", file);
    char *sl = strrchr(dir, '/');
    if (sl)
        *sl = 0;
    else
        snprintf(dir, sizeof dir, ".");
    if (!r->ckpt_dir[0] || !realpath(dir, a) || !realpath(r->ckpt_dir, b) || strcmp(a, b)) return;
    long long *steps;
    int k;
    if (list_ckpts(r->ckpt_dir, &steps, &k)) return;
    for (int i = 0; i < k; i++)
        if (steps[i] <= step && own_add(r, steps[i])) break;
    free(steps);
}

/* Keeps the newest keep_checkpoints of the checkpoints this run owns: the ones it wrote, and
 * when it resumed from OUT/checkpoints, the ones up to the resumed step. Checkpoints of
 * another run and temp files are never touched (a failed write removes its own temp file; a
 * killed one's are removed when the folder is taken next, lt_run_take_out_). */
static void prune(lt_run *r) {
    int drop = r->n_own - r->o.keep_checkpoints;
    if (drop <= 0) return;
    for (int i = 0; i < drop; i++) {
        char p[LT_RUN_PATH_MAX + 96];
        snprintf(p, sizeof p, "%s/step-%08lld.safetensors", r->ckpt_dir,
                 (long long)r->own_ckpts[i]);
        unlink(p);
    }
    memmove(r->own_ckpts, r->own_ckpts + drop, (size_t)(r->n_own - drop) * sizeof *r->own_ckpts);
    r->n_own -= drop;
}

/* ---- resume ---------------------------------------------------------------------------- */

static lt_status verify_file(const char *file);

lt_status lt_checkpoint_pick(const char *path, char *out, size_t n, json_t **skipped) {
    if (skipped) *skipped = NULL;
    if (!lt_path_exists(path)) return lt_error(LT_ERR_NOTFOUND, "%s: no such file or folder", path);
    if (!lt_path_is_dir(path)) { /* the file the user named: that one or nothing */
        if ((size_t)snprintf(out, n, "%s", path) >= n) return lt_error(LT_ERR_ARG, "path too long");
        return verify_file(path);
    }
    char dir[LT_RUN_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/checkpoints", path);
    if (!lt_path_is_dir(dir)) snprintf(dir, sizeof dir, "%s", path);
    long long *steps;
    int k;
    lt_status st = list_ckpts(dir, &steps, &k);
    if (st) return st;
    if (k == 0) {
        free(steps);
        /* a run killed before its first checkpoint left only its run_config.yaml: say so,
         * and how to start it again (a plain rerun is refused: it holds another run) */
        char run[LT_RUN_PATH_MAX + 32], cfg[LT_RUN_PATH_MAX + 64];
        snprintf(run, sizeof run, "%s", path);
        size_t rl = strlen(run);
        while (rl > 1 && run[rl - 1] == '/')
            run[--rl] = 0;
        if (!strcmp(dir, path) && rl >= 11 && !strcmp(run + rl - 11, "checkpoints") &&
            (rl == 11 || run[rl - 12] == '/'))
            snprintf(run + rl - 11, sizeof run - (rl - 11), "%s", rl == 11 ? "." : "");
        rl = strlen(run);
        if (rl > 1 && run[rl - 1] == '/') run[rl - 1] = 0;
        snprintf(cfg, sizeof cfg, "%s/run_config.yaml", run);
        /* ... unless that run is alive (its first checkpoint still to come): then the lock
         * says who holds it (the kill soak's second run into the same --out met this) */
        lt_dir_lock *lk = NULL;
        lt_status ls = lt_path_exists(cfg) ? lt_dir_lock_open(run, LT_DIR_LOCK_EXISTING, &lk)
                                           : LT_OK;
        lt_dir_lock_close(lk);
        if (ls) return ls;
        if (lt_path_exists(cfg))
            return lt_error(LT_ERR_NOTFOUND,
                            "%s: a run that stopped before its first checkpoint (it holds "
                            "run_config.yaml but no checkpoints/step-N.safetensors): nothing "
                            "to resume; start it again with: loratune train -c %s --out %s "
                            "--overwrite",
                            path, cfg, run);
        return lt_error(LT_ERR_NOTFOUND,
                        "%s: no checkpoint (expected checkpoints/step-N.safetensors in a run "
                        "folder)",
                        path);
    }
    /* the newest that verifies; each damaged one on the way is reported */
    json_t *bad = json_array();
    char reasons[2048] = "";
    st = LT_ERR_FORMAT;
    for (int i = k - 1; i >= 0; i--) {
        int w = snprintf(out, n, "%s/step-%08lld.safetensors", dir, steps[i]);
        if (w < 0 || (size_t)w >= n) {
            st = lt_error(LT_ERR_ARG, "%s: path too long", path);
            break;
        }
        if ((st = verify_file(out)) == LT_OK) break;
        json_array_append_new(bad, json_pack("{s:s, s:s}", "checkpoint", out, "reason", lt_errmsg()));
        size_t used = strlen(reasons);
        snprintf(reasons + used, sizeof reasons - used, "%s%s", used ? "; " : "", lt_errmsg());
    }
    free(steps);
    if (st) {
        json_decref(bad);
        return lt_error(LT_ERR_FORMAT, "%s: no usable checkpoint: %s", path, reasons);
    }
    if (skipped && json_array_size(bad)) *skipped = bad;
    else json_decref(bad);
    return LT_OK;
}

lt_status lt_checkpoint_run_dir(const char *ckpt_file, char *out, size_t n) {
    char buf[LT_RUN_PATH_MAX + 64];
    if ((size_t)snprintf(buf, sizeof buf, "%s", ckpt_file) >= sizeof buf)
        return lt_error(LT_ERR_ARG, "%s: path too long", ckpt_file);
    char *slash = strrchr(buf, '/');
    if (!slash) {
        snprintf(buf, sizeof buf, ".");
    } else {
        *slash = '\0'; /* the folder holding the file */
        const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
        if (!strcmp(base, "checkpoints")) {
            if (base == buf) snprintf(buf, sizeof buf, ".");
            else buf[base - buf - 1] = '\0';
        }
        if (!buf[0]) snprintf(buf, sizeof buf, "/");
    }
    if ((size_t)snprintf(out, n, "%s", buf) >= n)
        return lt_error(LT_ERR_ARG, "%s: run folder path too long", ckpt_file);
    return LT_OK;
}

lt_status lt_checkpoint_resolve(const char *path, char *out, size_t n) {
    return lt_checkpoint_pick(path, out, n, NULL);
}

static lt_status read_state(const char *file, lt_safetensors **st_out, json_t **state) {
    lt_safetensors *st = NULL;
    lt_status s = lt_safetensors_open(file, &st);
    if (s) return s;
    const char *meta = lt_safetensors_metadata(st, "loratune.state");
    if (!meta) {
        lt_safetensors_close(st);
        return lt_error(LT_ERR_FORMAT, "%s: not a loratune checkpoint (no loratune.state)", file);
    }
    json_error_t je;
    json_t *j = json_loads(meta, 0, &je);
    if (!j || !json_is_object(j) || !json_is_object(json_object_get(j, "config"))) {
        json_decref(j);
        lt_safetensors_close(st);
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: malformed JSON", file);
    }
    const json_int_t fmt = json_integer_value(json_object_get(j, "format"));
    if (fmt < 1 || fmt > LT_CKPT_FORMAT) {
        json_decref(j);
        lt_safetensors_close(st);
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: format %lld, expected 1..%d", file,
                        (long long)fmt, LT_CKPT_FORMAT);
    }
    *st_out = st;
    *state = j;
    return LT_OK;
}

/* an integer field >= 0 (and <= max when max >= 0), or the error naming it */
static lt_status int_field(const char *file, const json_t *obj, const char *key, const char *in,
                           int64_t max, int64_t *out) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: %s%s%s: expected an integer, got %s",
                        file, in, in[0] ? "." : "", key,
                        !v ? "nothing" : json_is_null(v) ? "null" : json_is_string(v) ? "a string"
                                                                                   : "another type");
    int64_t x = json_integer_value(v);
    if (x < 0 || (max >= 0 && x > max))
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: %s%s%s = %lld: expected 0..%lld", file,
                        in, in[0] ? "." : "", key, (long long)x, (long long)(max >= 0 ? max : INT64_MAX));
    if (out) *out = x;
    return LT_OK;
}

/* Everything a resume trusts, checked before any of it is used: the state's checksum and its
 * fields (types, ranges, consistency), every tensor's checksum (format 2), every value finite
 * and the second moments >= 0. */
static lt_status verify(const char *file, lt_safetensors *st, json_t *j) {
    const int64_t format = json_integer_value(json_object_get(j, "format"));
    if (format >= 2) {
        const char *meta = lt_safetensors_metadata(st, "loratune.state");
        const char *want = lt_safetensors_metadata(st, "loratune.state.sha256");
        char got[65];
        sha_of(meta, strlen(meta), got);
        if (!want || strcmp(got, want))
            return lt_error(LT_ERR_FORMAT, "%s: loratune.state does not match its checksum "
                                           "(the checkpoint is damaged)", file);
    }
    int64_t step, tstep, micro;
    lt_status s;
    const json_t *c = json_object_get(j, "counters");
    if (!json_is_object(c))
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: counters: expected an object", file);
    if ((s = int_field(file, j, "step", "", 1000000000000LL, &step)) ||
        (s = int_field(file, c, "trainer_step", "counters", step, &tstep)) ||
        (s = int_field(file, c, "micro", "counters", -1, &micro)) ||
        (s = int_field(file, c, "batch_epoch", "counters", 1000000000LL, NULL)) ||
        (s = int_field(file, c, "batch_index", "counters", 1000000000LL, NULL)) ||
        (s = int_field(file, j, "evals_without_improvement", "", 1000000000LL, NULL)) ||
        (s = int_field(file, j, "consecutive_nonfinite", "", step, NULL)) ||
        (s = int_field(file, j, "tokens", "", -1, NULL)))
        return s;
    const json_t *cfg = json_object_get(j, "config");
    const char *ga = json_string_value(json_object_get(cfg, "grad-accum"));
    /* strtoll saturates where atoll's overflow is undefined; micro > step * accum is tested as
     * (micro - 1) / accum >= step, which cannot overflow (the fuzzer found 2 * INT64_MAX) */
    const long long ga_n = ga ? strtoll(ga, NULL, 10) : 0;
    const int64_t accum = ga_n > 0 ? (int64_t)ga_n : 1;
    if (micro > 0 && (micro - 1) / accum >= step)
        return lt_error(LT_ERR_FORMAT,
                        "%s: loratune.state: counters.micro = %lld: more micro-batches than "
                        "%lld steps of %lld",
                        file, (long long)micro, (long long)step, (long long)accum);
    const json_t *bv = json_object_get(j, "best_val_loss");
    if (bv && !(json_is_number(bv) && isfinite(json_number_value(bv))))
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: best_val_loss: expected a finite number",
                        file);
    const json_t *sums = json_object_get(j, "sha256");
    if (format >= 2 && !json_is_object(sums))
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: sha256: expected an object", file);
    size_t n = lt_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const lt_tensor_view *v = lt_safetensors_tensor(st, i);
        if (v->dtype != LT_DTYPE_F32) continue; /* copy_tensor names it */
        const int64_t cnt = lt_tensor_numel(v);
        const float *x = (const float *)v->data;
        if (format >= 2) {
            char got[65];
            const char *want = json_string_value(json_object_get(sums, v->name));
            sha_of(v->data, (size_t)cnt * sizeof(float), got);
            if (!want || strcmp(got, want))
                return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' does not match its checksum (the "
                                               "checkpoint is damaged)",
                                file, v->name);
        }
        const int second = !strncmp(v->name, "optimizer.v.", 12);
        for (int64_t k = 0; k < cnt; k++) {
            float f;
            memcpy(&f, x + k, sizeof f); /* the data may be unaligned */
            if (!isfinite(f) || (second && f < 0))
                return lt_error(LT_ERR_FORMAT, "%s: tensor '%s'[%lld] = %g: expected a finite%s "
                                               "value",
                                file, v->name, (long long)k, (double)f, second ? ", >= 0" : "");
        }
    }
    return LT_OK;
}

static lt_status verify_file(const char *file) {
    return lt_checkpoint_verify(file);
}

lt_status lt_checkpoint_verify(const char *file) {
    lt_safetensors *st;
    json_t *j;
    lt_status s = read_state(file, &st, &j);
    if (s) return s;
    s = verify(file, st, j);
    json_decref(j);
    lt_safetensors_close(st);
    return s;
}

lt_status lt_checkpoint_load_opts(const char *ckpt_file, lt_run_opts *o) {
    lt_safetensors *st;
    json_t *j;
    lt_status s = read_state(ckpt_file, &st, &j);
    if (s) return s;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(j, "config"), k, v) {
        if (!json_is_string(v)) continue;
        if ((s = lt_run_opts_set(o, k, json_string_value(v)))) {
            s = lt_error_wrap(s, ckpt_file);
            break;
        }
    }
    json_decref(j);
    lt_safetensors_close(st);
    return s;
}

static lt_status copy_tensor(lt_safetensors *st, const char *file, const char *name,
                             lt_trainer *tr, lt_tensor_part part, const lt_train_tensor *t) {
    const lt_tensor_view *v = lt_safetensors_find(st, name);
    if (!v)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s' missing (were the run's method, "
                        "rank, targets or layers changed?)",
                        file, name);
    if (v->dtype != LT_DTYPE_F32 || lt_tensor_numel(v) != t->numel || v->ndim != t->ndim ||
        v->shape[0] != t->shape[0] || (t->ndim == 2 && v->shape[1] != t->shape[1]))
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': expected F32 with %lld elements (shape of the "
                        "trainer's tensor), got %s with %lld",
                        file, name, (long long)t->numel, lt_dtype_name(v->dtype),
                        (long long)lt_tensor_numel(v));
    return lt_trainer_write(tr, t->index, part, 0, (const float *)v->data, t->numel);
}

lt_status lt_run_load_checkpoint_(lt_run *r, const char *file) {
    lt_safetensors *st;
    json_t *j;
    lt_status s = read_state(file, &st, &j);
    if (s) return s;
    int n = lt_trainer_n_tensors(r->tr);
    size_t nsaved = lt_safetensors_count(st);
    if (nsaved != (size_t)n * 3) {
        s = lt_error(LT_ERR_FORMAT,
                     "%s: %zu tensors, expected %d (3 per trainable tensor: "
                     "were the run's method, rank, targets or layers changed?)",
                     file, nsaved, 3 * n);
        goto done;
    }
    char name[512];
    for (int i = 0; i < n && !s; i++) {
        lt_train_tensor t;
        if ((s = lt_trainer_tensor(r->tr, i, &t))) break;
        if ((s = copy_tensor(st, file, t.name, r->tr, LT_TENSOR_VALUE, &t))) break;
        snprintf(name, sizeof name, "optimizer.m.%s", t.name);
        if ((s = copy_tensor(st, file, name, r->tr, LT_TENSOR_ADAM_M, &t))) break;
        snprintf(name, sizeof name, "optimizer.v.%s", t.name);
        s = copy_tensor(st, file, name, r->tr, LT_TENSOR_ADAM_V, &t);
    }
    if (s) goto done;
    json_t *c = json_object_get(j, "counters");
    int64_t step = json_integer_value(json_object_get(j, "step"));
    int64_t tstep = json_integer_value(json_object_get(c, "trainer_step"));
    int64_t micro = json_integer_value(json_object_get(c, "micro"));
    int64_t be = json_integer_value(json_object_get(c, "batch_epoch"));
    int64_t bi = json_integer_value(json_object_get(c, "batch_index"));
    if (step < 0 || tstep < 0 || micro < 0 || be < 0 || bi < 0) {
        s = lt_error(LT_ERR_FORMAT, "%s: loratune.state: negative counter", file);
        goto done;
    }
    lt_trainer_set_counters(r->tr, tstep, (uint64_t)micro);
    if (r->train_b && (s = lt_batcher_set_state(r->train_b, be, bi))) {
        s = lt_error_wrap(s, file);
        goto done;
    }
    r->step = step;
    json_t *bv = json_object_get(j, "best_val_loss");
    r->best_val = json_is_number(bv) ? json_number_value(bv) : INFINITY;
    r->evals_no_improve = (int)json_integer_value(json_object_get(j, "evals_without_improvement"));
    r->consecutive_nonfinite = (int)json_integer_value(json_object_get(j, "consecutive_nonfinite"));
    r->tokens_total = json_integer_value(json_object_get(j, "tokens"));
    r->resumed_from = step;
    r->last_ckpt_step = step;
    own_history(r, file, step);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", file);
    r->resumed_config = json_incref(json_object_get(j, "config"));
done:
    json_decref(j);
    lt_safetensors_close(st);
    return s;
}

/* a trainer tensor part streamed into the checkpoint (lt_st_writer_add_fn) */
typedef struct {
    lt_trainer *tr;
    int index;
    lt_tensor_part part;
    const float *host; /* ZeRO-1's moments: the gathered state's (lt_run_zero_gather_), else NULL */
} part_src;
static lt_status fill_part(void *ctx, size_t offset, void *dst, size_t n) {
    const part_src *ps = ctx;
    if (ps->host) {
        memcpy(dst, (const char *)ps->host + offset, n);
        return LT_OK;
    }
    return lt_trainer_read(ps->tr, ps->index, ps->part, (int64_t)(offset / sizeof(float)),
                           (float *)dst, (int64_t)(n / sizeof(float)));
}

/* state["sha256"] = {name: SHA-256 of the bytes written} for every part (read from the backend
 * through the same fill function the writer streams, in 1 MiB pieces) */
static lt_status tensor_sums(lt_run *r, part_src *srcs, char **names, int n, json_t *j) {
    json_t *sums = json_object();
    float *buf = lt_malloc((size_t)1 << 20);
    lt_status s = sums && buf ? LT_OK : lt_error(LT_ERR_NOMEM, "checkpoint: out of memory");
    for (int i = 0; i < n && !s; i++) {
        lt_train_tensor t;
        if ((s = lt_trainer_tensor(r->tr, i, &t))) break;
        const size_t bytes = (size_t)t.numel * sizeof(float);
        for (int k = 0; k < 3 && !s; k++) {
            sha_ctx c;
            if (!sha_begin(&c)) {
                s = lt_error(LT_ERR_NOMEM, "checkpoint: cannot start SHA-256");
                break;
            }
            for (size_t off = 0; off < bytes && !s; off += (size_t)1 << 20) {
                size_t m = bytes - off < ((size_t)1 << 20) ? bytes - off : (size_t)1 << 20;
                if (!(s = fill_part(&srcs[3 * i + k], off, buf, m))) sha_add(&c, buf, m);
            }
            char hex[65];
            sha_hex(&c, hex);
            json_object_set_new(sums, k == 0 ? t.name : names[2 * i + k - 1], json_string(hex));
        }
    }
    free(buf);
    if (!s) json_object_set(j, "sha256", sums);
    json_decref(sums);
    return s;
}

lt_status lt_run_save_checkpoint_(lt_run *r) {
    /* ZeRO-1: the whole optimizer state, gathered from every rank's shard (every rank takes
     * part; the writer gets it), so the checkpoint is the same as without ZeRO-1 */
    float *zfull = NULL;
    int64_t zspan = 0;
    if (r->comm.zero) {
        lt_status zs;
        zfull = lt_run_zero_gather_(r, &zs);
        if (zs) return zs;
        lt_trainer_zero_shard(r->tr, NULL, NULL, &zspan);
    }
    if (!lt_run_writer_(r)) { /* rank 0 writes it; the others keep the bookkeeping in step */
        free(zfull);
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s/step-%08lld.safetensors", r->ckpt_dir,
                 (long long)r->step);
        r->last_ckpt_step = r->step;
        return LT_OK;
    }
    lt_status s = lt_mkdir_p(r->ckpt_dir, 0755, NULL);
    if (s) return s;
    int n = lt_trainer_n_tensors(r->tr);
    char **names = lt_calloc((size_t)n * 2 + 1, sizeof *names);
    part_src *srcs = lt_calloc((size_t)n * 3 + 1, sizeof *srcs);
    lt_st_writer *w = NULL;
    json_t *j = NULL;
    char *meta = NULL;
    if (!names || !srcs) {
        free(names);
        free(srcs);
        free(zfull);
        return lt_error(LT_ERR_NOMEM, "checkpoint: out of memory");
    }
    if ((s = lt_st_writer_create(&w))) goto done;
    for (int i = 0; i < n && !s; i++) {
        lt_train_tensor t;
        if ((s = lt_trainer_tensor(r->tr, i, &t))) break;
        for (int k = 0; k < 3; k++)
            srcs[3 * i + k] =
                (part_src){r->tr, i, (lt_tensor_part)(LT_TENSOR_VALUE + (k ? k + 1 : 0)),
                           zfull && k ? zfull + (k - 1) * zspan + t.span_offset : NULL};
        size_t bytes = (size_t)t.numel * sizeof(float);
        size_t ln = strlen(t.name) + 16;
        names[2 * i] = lt_malloc(ln);
        names[2 * i + 1] = lt_malloc(ln);
        if (!names[2 * i] || !names[2 * i + 1]) {
            s = lt_error(LT_ERR_NOMEM, "checkpoint: out of memory");
            break;
        }
        snprintf(names[2 * i], ln, "optimizer.m.%s", t.name);
        snprintf(names[2 * i + 1], ln, "optimizer.v.%s", t.name);
        if ((s = lt_st_writer_add_fn(w, t.name, LT_DTYPE_F32, t.ndim, t.shape, bytes, fill_part,
                                     &srcs[3 * i])) ||
            (s = lt_st_writer_add_fn(w, names[2 * i], LT_DTYPE_F32, t.ndim, t.shape, bytes,
                                     fill_part, &srcs[3 * i + 1])) ||
            (s = lt_st_writer_add_fn(w, names[2 * i + 1], LT_DTYPE_F32, t.ndim, t.shape, bytes,
                                     fill_part, &srcs[3 * i + 2])))
            break;
    }
    if (s) goto done;
    int64_t tstep, be = 0, bi = 0;
    uint64_t micro;
    lt_trainer_get_counters(r->tr, &tstep, &micro);
    if (r->train_b) lt_batcher_get_state(r->train_b, &be, &bi);
    j = json_pack("{s:i, s:I, s:{s:I, s:I, s:I, s:I}, s:i, s:i, s:I, s:I, s:o}", "format",
                  LT_CKPT_FORMAT, "step", (json_int_t)r->step, "counters", "trainer_step",
                  (json_int_t)tstep, "micro", (json_int_t)micro, "batch_epoch", (json_int_t)be,
                  "batch_index", (json_int_t)bi, "evals_without_improvement", r->evals_no_improve,
                  "consecutive_nonfinite", r->consecutive_nonfinite, "tokens",
                  (json_int_t)r->tokens_total, "seed", (json_int_t)r->o.seed, "config",
                  lt_run_opts_to_json(&r->o));
    if (!j) {
        s = lt_error(LT_ERR_NOMEM, "checkpoint: cannot build the state");
        goto done;
    }
    if (isfinite(r->best_val)) json_object_set_new(j, "best_val_loss", json_real(r->best_val));
    if ((s = tensor_sums(r, srcs, names, n, j))) goto done;
    meta = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!meta) {
        s = lt_error(LT_ERR_NOMEM, "checkpoint: cannot serialise the state");
        goto done;
    }
    char state_sum[65];
    sha_of(meta, strlen(meta), state_sum);
    if ((s = lt_st_writer_set_metadata(w, "loratune.state", meta)) ||
        (s = lt_st_writer_set_metadata(w, "loratune.state.sha256", state_sum)))
        goto done;
    if ((s = lt_st_writer_set_metadata(w, "format", "pt"))) goto done;
    char path[sizeof r->last_ckpt];
    snprintf(path, sizeof path, "%s/step-%08lld.safetensors", r->ckpt_dir, (long long)r->step);
    if ((s = lt_st_writer_write(w, path))) goto done;
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
    r->last_ckpt_step = r->step;
    if ((s = own_add(r, r->step))) goto done;
    prune(r);
    lt_run_emit_(r, json_pack("{s:s, s:I, s:s}", "event", "checkpoint", "step", (json_int_t)r->step,
                              "path", path));
done:
    for (int i = 0; i < 2 * n; i++)
        free(names[i]);
    free(names);
    free(srcs);
    free(zfull);
    free(meta);
    json_decref(j);
    lt_st_writer_free(w);
    return s;
}
