/* test_faults_save.c - allocation and output-I/O fault injection over everything a run and
 * `loratune fuse` write (tests/lt_fault.h): a checkpoint (lt_run_save_checkpoint_), the
 * adapter taken from the trainer and saved as PEFT, mlx-lm and llama.cpp GGUF, and a model
 * saved as a Hugging Face folder (from stories260K-hf: its tokenizer files are copied) and as
 * a Q8_0 GGUF (from the stories260K GGUF) (stories260K, LoRA on q,k,v,o,down).
 *
 * Each output is first written once from the "old" state (trainer values / weights before a
 * change), which is what the destination holds before every run; then the state is changed,
 * and for N = 1, 2, ... the N-th allocation, or the N-th output I/O call (open / write / fsync /
 * close / rename / mkdir), fails. Every run must:
 *   - fail cleanly: LT_ERR_NOMEM, or LT_ERR_IO whose message carries the injected error's text
 *     (EIO for every kind of call; ENOSPC for writes only), never a crash or a leak;
 *   - leave every destination file whole: each one is either its old or its new version, byte
 *     for byte (a single-file output stays old when the write failed), none is missing, and no
 *     temp file is left behind;
 * until N is past the last call and the new version is written.
 *
 * Walks, each over every N (an output makes 70-760 allocations and 50-490 I/O calls; the model
 * GGUF's I/O walks go every N to 200, then with a stride, 250 runs in all): allocations, once
 * (only call N fails) and persistent (every call from N on fails); I/O, every kind of call with
 * EIO, once and persistent; writes only, with ENOSPC. Files go to /dev/shm when there is one
 * (lt_fault_tmpdir: hundreds of fsyncs). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/adapter.h"
#include "loratune/export.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "lt_fault.h"
#include "lt_test.h"
#include "lt_trainer_test.h"
#include "run/run_internal.h"

/* ---- a folder's files, in memory ------------------------------------------------------- */
#define MAXF 32
typedef struct {
    int n;
    char *name[MAXF];
    char *data[MAXF];
    size_t len[MAXF];
} snap;

static void snap_free(snap *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->name[i]);
        free(s->data[i]);
    }
    s->n = 0;
}

/* Reads every regular file of dir (not the lock file of lt_dir_lock). */
static int snap_read(const char *dir, snap *s) {
    s->n = 0;
    DIR *d = opendir(dir);
    if (!d) return 1; /* no folder: no files */
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode) || !strcmp(e->d_name, ".loratune.lock"))
            continue;
        if (s->n == MAXF) break;
        size_t len = 0;
        char *data = NULL;
        if (lt_file_read_all(p, &data, &len)) break;
        s->name[s->n] = strdup(e->d_name);
        s->data[s->n] = data;
        s->len[s->n++] = len;
    }
    closedir(d);
    return 1;
}

static int snap_find(const snap *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name)) return i;
    return -1;
}
static int snap_same(const snap *a, int i, const snap *b, int j) {
    return j >= 0 && a->len[i] == b->len[j] && !memcmp(a->data[i], b->data[j], a->len[i]);
}

/* Makes dir hold exactly the files of s. */
static void snap_restore(const char *dir, const snap *s) {
    mkdir(dir, 0755);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (!stat(p, &st) && S_ISREG(st.st_mode) && strcmp(e->d_name, ".loratune.lock")) unlink(p);
    }
    if (d) closedir(d);
    for (int i = 0; i < s->n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, s->name[i]);
        FILE *f = fopen(p, "wb");
        if (!f) continue;
        fwrite(s->data[i], 1, s->len[i], f);
        fclose(f);
    }
}

/* ---- the outputs ------------------------------------------------------------------------ */
typedef enum {
    OUT_CKPT,
    OUT_PEFT,
    OUT_MLX,
    OUT_GGUF,
    OUT_HF_MODEL,
    OUT_GGUF_MODEL,
    OUT_RUN_EXPORTS /* the end of training: PEFT + mlx-lm/ + adapter.gguf (lt_run_save_outputs_) */
} out_kind;

typedef struct {
    const char *name;
    out_kind kind;
    lt_run *run;
    lt_model *model; /* merged-model outputs */
    const char *src; /* the model's path (tokenizer source of the model outputs) */
    char dir[1200];  /* the folder that receives the output */
    char file[1300]; /* single-file outputs: the file */
    snap old_, new_;
    char sub[1300];       /* OUT_RUN_EXPORTS: OUT/mlx-lm, checked as a folder of its own */
    snap sub_old, sub_new;
    int io;
    int fresh; /* the folder does not exist before the write (old version: no folder) */ /* the walk injects I/O failures (a failed single-file write must leave it old) */
} out_case;

static lt_status write_output(void *ctx) {
    out_case *c = ctx;
    lt_status st = LT_OK;
    lt_adapter *a = NULL;
    const lt_model_config *mc = c->run ? &c->run->model->config : NULL;
    switch (c->kind) {
    case OUT_CKPT:
        return lt_run_save_checkpoint_(c->run);
    case OUT_PEFT:
    case OUT_MLX:
    case OUT_GGUF:
        st = lt_adapter_from_trainer(lt_run_trainer(c->run), "stories260K", &a);
        if (!st && c->kind == OUT_PEFT) st = lt_adapter_save_peft(a, c->dir);
        if (!st && c->kind == OUT_MLX) st = lt_adapter_save_mlx(a, mc, c->dir);
        if (!st && c->kind == OUT_GGUF) st = lt_adapter_save_gguf(a, mc, LT_DTYPE_F16, c->file);
        lt_adapter_free(a);
        return st;
    case OUT_HF_MODEL:
        return lt_model_save_hf(c->model, c->src, c->dir, LT_DTYPE_BF16);
    case OUT_GGUF_MODEL:
        return lt_model_save_gguf(c->model, c->src, c->file, LT_DTYPE_Q8_0);
    case OUT_RUN_EXPORTS:
        return lt_run_save_outputs_(c->run);
    }
    return LT_ERR_INTERNAL;
}

static lt_status restore_old(void *ctx) {
    out_case *c = ctx;
    if (c->fresh) {
        lt_fault_rmtree(c->dir);
        return LT_OK;
    }
    snap_restore(c->dir, &c->old_);
    if (c->sub[0]) snap_restore(c->sub, &c->sub_old);
    return LT_OK;
}

/* Issue 18, finding 4: a multi-file output (a Hugging Face folder, a run's adapter folder and
 * its mlx-lm/ sibling) is whole or refused. After a failed write, the folder is exactly its
 * old version (every file old, nothing added), or it holds the incomplete marker and the
 * reader refuses it, naming the marker; a folder with an old or new version of each file but
 * no marker (a mix a reader would take) is wrong. */
static int snap_equal(const snap *a, const snap *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (!snap_same(a, i, b, snap_find(b, a->name[i]))) return 0;
    return 1;
}

static int whole_or_refused(const out_case *c, const char *dir, const snap *cur, const snap *old,
                            const snap *newv, long n, int adapter) {
    if (snap_equal(cur, old) && c->fresh && lt_path_exists(dir)) {
        fprintf(stderr, "%s: N=%ld: the write failed but left the folder %s\n", c->name, n, dir);
        return 0;
    }
    if (snap_equal(cur, old) || snap_equal(cur, newv)) return 1;
    if (snap_find(cur, LT_INCOMPLETE_NAME) < 0) {
        fprintf(stderr, "%s: N=%ld: %s is neither its old nor its new version, and not marked incomplete\n",
                c->name, n, dir);
        return 0;
    }
    lt_status st;
    if (adapter) {
        lt_adapter *a = NULL;
        st = lt_adapter_load(dir, &c->run->model->config, &a);
        lt_adapter_free(a);
    } else {
        lt_model *m = NULL;
        st = lt_model_load(dir, NULL, &m);
        lt_model_free(m);
    }
    if (st == LT_OK || !strstr(lt_errmsg(), "incomplete output") ||
        !strstr(lt_errmsg(), LT_INCOMPLETE_NAME)) {
        fprintf(stderr, "%s: N=%ld: %s is marked incomplete but the reader %s: '%s'\n", c->name,
                n, dir, st == LT_OK ? "took it" : "said something else", lt_errmsg());
        return 0;
    }
    return 1;
}

static int check_files(void *ctx, lt_status st, long n) {
    out_case *c = ctx;
    snap cur;
    snap_read(c->dir, &cur);
    int ok = 1;
    if (n == 0) { /* the counting run: what a complete write makes */
        snap_free(&c->new_);
        c->new_ = cur;
        if (c->sub[0]) {
            snap_free(&c->sub_new);
            snap_read(c->sub, &c->sub_new);
        }
        if (snap_find(&cur, LT_INCOMPLETE_NAME) >= 0) {
            fprintf(stderr, "%s: the incomplete marker is left by a write that succeeded\n",
                    c->name);
            ok = 0;
        }
        for (int i = 0; i < cur.n; i++) {
            if (strstr(cur.name[i], ".tmp")) {
                fprintf(stderr, "%s: temp file %s left by a write that succeeded\n", c->name,
                        cur.name[i]);
                ok = 0;
            }
        }
        /* the change made after the old version must show in some file */
        int changed = 0;
        for (int i = 0; i < cur.n; i++)
            changed |= !snap_same(&cur, i, &c->old_, snap_find(&c->old_, cur.name[i]));
        if (!changed) fprintf(stderr, "%s: the new version equals the old one\n", c->name);
        return ok && changed;
    }
    if (st != LT_OK && (c->kind == OUT_HF_MODEL || c->kind == OUT_RUN_EXPORTS)) {
        ok &= whole_or_refused(c, c->dir, &cur, &c->old_, &c->new_, n, c->kind == OUT_RUN_EXPORTS);
        if (c->sub[0]) {
            snap sub;
            snap_read(c->sub, &sub);
            ok &= whole_or_refused(c, c->sub, &sub, &c->sub_old, &c->sub_new, n, 1);
            /* OUT's marker goes last: an unmarked OUT has a whole mlx-lm/ beside it */
            if (snap_find(&cur, LT_INCOMPLETE_NAME) < 0 && snap_find(&sub, LT_INCOMPLETE_NAME) >= 0) {
                fprintf(stderr, "%s: N=%ld: OUT unmarked beside an incomplete mlx-lm/\n",
                        c->name, n);
                ok = 0;
            }
            snap_free(&sub);
        }
    }
    for (int i = 0; i < cur.n; i++) {
        if (st != LT_OK && !strcmp(cur.name[i], LT_INCOMPLETE_NAME)) continue; /* above */
        int o = snap_find(&c->old_, cur.name[i]), w = snap_find(&c->new_, cur.name[i]);
        int is_old = snap_same(&cur, i, &c->old_, o), is_new = snap_same(&cur, i, &c->new_, w);
        if (!is_old && !is_new) {
            fprintf(stderr, "%s: N=%ld (%s): %s is neither the old nor the new version%s\n",
                    c->name, n, lt_status_name(st), cur.name[i],
                    o < 0 && w < 0 ? " (a temp file?)" : "");
            ok = 0;
        } else if (st != LT_OK && c->io && c->file[0] && !is_old) {
            fprintf(stderr, "%s: N=%ld: the write failed but %s was replaced\n", c->name, n,
                    cur.name[i]);
            ok = 0;
        }
    }
    for (int i = 0; i < c->old_.n; i++)
        if (snap_find(&cur, c->old_.name[i]) < 0) {
            fprintf(stderr, "%s: N=%ld: %s is gone\n", c->name, n, c->old_.name[i]);
            ok = 0;
        }
    if (st == LT_OK)
        for (int i = 0; i < c->new_.n; i++)
            if (!snap_same(&c->new_, i, &cur, snap_find(&cur, c->new_.name[i]))) {
                fprintf(stderr, "%s: N=%ld: succeeded, but %s is not the new version\n", c->name, n,
                        c->new_.name[i]);
                ok = 0;
            }
    snap_free(&cur);
    return ok;
}

/* Adds 0.25 to every trainable value (the state the new version is written from). */
static void change_trainer(lt_trainer *tr) {
    for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
        lt_train_tensor t;
        if (lt_trainer_tensor(tr, i, &t)) continue;
        float *val = lt_tt_get(tr, i, LT_TENSOR_VALUE);
        for (int64_t k = 0; k < t.numel; k++)
            val[k] += 0.25f;
        lt_tt_put(tr, i, LT_TENSOR_VALUE, val);
    }
}

int main(void) {
    const char *tmp = lt_fault_tmpdir();
    char data[600], p[700], out[600];
    snprintf(data, sizeof data, "%s/data", tmp);
    mkdir(data, 0755);
    snprintf(p, sizeof p, "%s/train.jsonl", data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), p, 12);
    snprintf(out, sizeof out, "%s/run", tmp);

    const char *gguf = lt_fixture("stories260K/stories260K.gguf");
    lt_run_opts o;
    lt_run_opts_default(&o);
    CHECK_OK(lt_run_opts_set(&o, "model", gguf));
    CHECK_OK(lt_run_opts_set(&o, "data", data));
    CHECK_OK(lt_run_opts_set(&o, "out", out));
    CHECK_OK(lt_run_opts_set(&o, "batch-size", "2"));
    CHECK_OK(lt_run_opts_set(&o, "max-seq-len", "32"));
    CHECK_OK(lt_run_opts_set(&o, "iters", "2"));
    CHECK_OK(lt_run_opts_set(&o, "lora-targets", "q,k,v,o,down"));
    CHECK_OK(lt_run_opts_set(&o, "threads", "1"));
    lt_run *r = NULL;
    CHECK_OK(lt_run_create(&o, &r));
    const char *hf = lt_fixture("stories260K-hf");
    lt_model *m = NULL, *mh = NULL; /* the HF folder's: its tokenizer.model is copied */
    CHECK_OK(lt_model_load(gguf, NULL, &m));
    CHECK_OK(lt_model_load(hf, NULL, &mh));
    if (!r || !m || !mh) LT_TEST_END();

    out_case cases[] = {
        {"checkpoint", OUT_CKPT, r, NULL, NULL, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"adapter peft", OUT_PEFT, r, NULL, NULL, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"adapter mlx", OUT_MLX, r, NULL, NULL, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"adapter gguf", OUT_GGUF, r, NULL, NULL, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"model hf", OUT_HF_MODEL, NULL, mh, hf, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"model gguf", OUT_GGUF_MODEL, NULL, m, gguf, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"run exports", OUT_RUN_EXPORTS, r, NULL, NULL, "", "", {0}, {0}, "", {0}, {0}, 0, 0},
        {"model hf (new folder)", OUT_HF_MODEL, NULL, mh, hf, "", "", {0}, {0}, "", {0}, {0}, 0, 1},
    };
    const int nc = (int)(sizeof cases / sizeof *cases);
    snprintf(cases[0].dir, sizeof cases[0].dir, "%s/checkpoints", out);
    snprintf(cases[0].file, sizeof cases[0].file, "%s/step-00000000.safetensors", cases[0].dir);
    snprintf(cases[1].dir, sizeof cases[1].dir, "%s/peft", tmp);
    snprintf(cases[2].dir, sizeof cases[2].dir, "%s/mlx", tmp);
    snprintf(cases[3].dir, sizeof cases[3].dir, "%s/gguf", tmp);
    snprintf(cases[3].file, sizeof cases[3].file, "%s/adapter.gguf", cases[3].dir);
    snprintf(cases[4].dir, sizeof cases[4].dir, "%s/hf", tmp);
    snprintf(cases[5].dir, sizeof cases[5].dir, "%s/model", tmp);
    snprintf(cases[5].file, sizeof cases[5].file, "%s/model.gguf", cases[5].dir);
    snprintf(cases[6].dir, sizeof cases[6].dir, "%s", out);
    snprintf(cases[6].sub, sizeof cases[6].sub, "%s/mlx-lm", out);
    snprintf(cases[7].dir, sizeof cases[7].dir, "%s/hf-new", tmp);

    /* the old versions */
    for (int i = 0; i < nc; i++) {
        if (cases[i].fresh) continue; /* no old version: no folder */
        mkdir(cases[i].dir, 0755);
        CHECK_OK(write_output(&cases[i]));
        snap_read(cases[i].dir, &cases[i].old_);
        if (cases[i].sub[0]) snap_read(cases[i].sub, &cases[i].sub_old);
        CHECK(cases[i].old_.n > 0, "%s: nothing written", cases[i].name);
    }
    change_trainer(lt_run_trainer(r));
    m->params[0] += 0.25f; /* tok_embd[0][0] */
    mh->params[0] += 0.25f;

    const long all = 1000000;
    const lt_fault_plan plans[] = {
        {LT_FAULT_ALLOC, 0, 0, 0, all, all},        {LT_FAULT_ALLOC, 0, 0, 1, all, all},
        {LT_FAULT_IO, LT_IO_ALL, EIO, 0, all, all}, {LT_FAULT_IO, LT_IO_WRITE, ENOSPC, 0, all, all},
        {LT_FAULT_IO, LT_IO_ALL, EIO, 1, all, all},
    };
    const char *plan_names[] = {"alloc", "alloc", "I/O EIO", "writes ENOSPC", "I/O EIO"};
    for (size_t k = 0; k < sizeof plans / sizeof *plans; k++) {
        for (int i = 0; i < nc; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s: %s%s", cases[i].name, plan_names[k],
                     plans[k].repeat ? " (persistent)" : "");
            cases[i].io = plans[k].kind == LT_FAULT_IO;
            lt_fault_plan pl = plans[k];
            if (cases[i].kind == OUT_GGUF_MODEL && pl.kind == LT_FAULT_IO)
                pl.full = 200, pl.max_runs = 250; /* ~490 calls, a Q8_0 quantization each run */
            lt_fault_ops ops = {restore_old, write_output, check_files, NULL};
            lt_fault_walk(name, &pl, &ops, &cases[i]);
        }
    }
    for (int i = 0; i < nc; i++) {
        snap_free(&cases[i].old_);
        snap_free(&cases[i].new_);
        snap_free(&cases[i].sub_old);
        snap_free(&cases[i].sub_new);
    }
    lt_model_free(m);
    lt_model_free(mh);
    lt_run_free(r);
    lt_fault_rmtree(tmp);
    LT_TEST_END();
}
