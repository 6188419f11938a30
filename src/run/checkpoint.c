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

#include "core/io.h"
#include "loratune/safetensors.h"
#include "run_internal.h"

#define LT_CKPT_FORMAT 1

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

lt_status lt_run_take_out_(lt_run *r) {
    lt_status s = lt_dir_lock_open(r->o.out, 0, &r->out_lock);
    if (s) return s;
    DIR *d = opendir(r->ckpt_dir);
    if (!d) return LT_OK; /* no checkpoints yet */
    struct dirent *e;
    while ((e = readdir(d))) /* lt_st_writer_write's temp files: step-N.safetensors.tmp.XXXXXX */
        if (!strncmp(e->d_name, "step-", 5) && strstr(e->d_name, ".safetensors.tmp.")) {
            char p[LT_RUN_PATH_MAX + 300];
            snprintf(p, sizeof p, "%s/%s", r->ckpt_dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    return LT_OK;
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

lt_status lt_checkpoint_resolve(const char *path, char *out, size_t n) {
    if (!lt_path_exists(path)) return lt_error(LT_ERR_NOTFOUND, "%s: no such file or folder", path);
    if (!lt_path_is_dir(path)) {
        if ((size_t)snprintf(out, n, "%s", path) >= n) return lt_error(LT_ERR_ARG, "path too long");
        return LT_OK;
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
        return lt_error(LT_ERR_NOTFOUND,
                        "%s: no checkpoint (expected checkpoints/step-N.safetensors in a run "
                        "folder)",
                        path);
    }
    int w = snprintf(out, n, "%s/step-%08lld.safetensors", dir, steps[k - 1]);
    free(steps);
    if (w < 0 || (size_t)w >= n) return lt_error(LT_ERR_ARG, "%s: path too long", path);
    return LT_OK;
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
    if (json_integer_value(json_object_get(j, "format")) != LT_CKPT_FORMAT) {
        json_decref(j);
        lt_safetensors_close(st);
        return lt_error(LT_ERR_FORMAT, "%s: loratune.state: format %lld, expected %d", file,
                        (long long)json_integer_value(json_object_get(j, "format")),
                        LT_CKPT_FORMAT);
    }
    *st_out = st;
    *state = j;
    return LT_OK;
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
} part_src;
static lt_status fill_part(void *ctx, size_t offset, void *dst, size_t n) {
    const part_src *ps = ctx;
    return lt_trainer_read(ps->tr, ps->index, ps->part, (int64_t)(offset / sizeof(float)),
                           (float *)dst, (int64_t)(n / sizeof(float)));
}

lt_status lt_run_save_checkpoint_(lt_run *r) {
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
        return lt_error(LT_ERR_NOMEM, "checkpoint: out of memory");
    }
    if ((s = lt_st_writer_create(&w))) goto done;
    for (int i = 0; i < n && !s; i++) {
        lt_train_tensor t;
        if ((s = lt_trainer_tensor(r->tr, i, &t))) break;
        for (int k = 0; k < 3; k++)
            srcs[3 * i + k] = (part_src){r->tr, i, (lt_tensor_part)(LT_TENSOR_VALUE + (k ? k + 1 : 0))};
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
    meta = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!meta) {
        s = lt_error(LT_ERR_NOMEM, "checkpoint: cannot serialise the state");
        goto done;
    }
    if ((s = lt_st_writer_set_metadata(w, "loratune.state", meta))) goto done;
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
    free(meta);
    json_decref(j);
    lt_st_writer_free(w);
    return s;
}
