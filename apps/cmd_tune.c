/* cmd_tune.c - `loratune tune` and `loratune compare`: hyperparameter search over training runs
 * in one process (docs/TUNE.md). The study (src/tune) asks for parameters; each trial is a
 * training run (src/run) over one loaded model and tokenized data (lt_run_shared), with the
 * final validation loss as the objective; intermediate validation losses feed the
 * successive-halving pruner; the memory plan (lt_run_plan) keeps configurations the budget
 * cannot hold from ever starting. The study is a parent run in the tracking store and every
 * trial a child run (tags parent_run, trial, trial_state).
 *
 * DIR/study.json   the study (asks, values, intermediate values, rungs)
 * DIR/tune.json    this command's settings (base options, budget, pruning, parent run), for
 *                  --resume; rewritten atomically after every trial (elapsed time)
 * DIR/trials/NNNN/ each trial's run folder (run_config.yaml, adapter, checkpoints) and
 *                  trial.json (state, value, time, memory, tokens/s, trainable parameters)
 * DIR/best_config.yaml, DIR/summary.json   written at the end (and on every improvement).
 * DIR/report/      the HTML report and its SVG charts (apps/tune_report.c), or --report DIR;
 *                  compare adds ROOT/compare.json, ROOT/compare.md and ROOT/report/. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "loratune/chat.h"
#include "loratune/hwinfo.h"
#include "loratune/mlflow.h"
#include "loratune/model.h"
#include "loratune/rank_hint.h"
#include "loratune/recorder.h"
#include "loratune/run.h"
#include "loratune/tokenizer.h"
#include "loratune/track.h"
#include "loratune/tune.h"
#include "task_metric.h"
#include "tune_report.h"

#define TUNE_FORMAT "loratune-tune"

/* ---- settings ---------------------------------------------------------------------------- */
typedef struct {
    const char *cmd; /* "tune" or "compare" (messages) */
    char study[LT_RUN_PATH_MAX]; /* a folder, or a PostgreSQL URL#NAME */
    char dir[LT_RUN_PATH_MAX];   /* this command's folder (tune.json, trials/): the study folder,
                                    or --workdir for a PostgreSQL study */
    int pg;                      /* --study is postgresql://... (a study shared by workers) */
    lt_run_opts base;   /* defaults + -c + command line; out/resume unused */
    int trials;         /* trials to run (complete, pruned, failed; infeasible ones not counted) */
    double time_budget; /* seconds; 0: none */
    char *space_json;   /* NULL: the default space */
    char space_src[LT_RUN_PATH_MAX];
    lt_sampler_kind sampler;
    uint64_t seed;
    int prune; /* 1 on (may be turned off with a reason), 0 --no-prune */
    int eta;
    int64_t min_resource; /* 0: total steps / eta^2 */
    int user_eval_every;  /* --eval-every given */
    int user_batch;       /* --batch-size given */
    const char *store, *experiment;
    int track, json;
    char report_dir[LT_RUN_PATH_MAX];   /* --report DIR; empty: STUDY/report */
    int report_only;                    /* --report-only: outputs from the study folder, no run */
    int markdown;                       /* compare --markdown: print compare.md, not the table */
    compare_limits lim;                 /* compare --max-memory / --max-time / --min-quality */
    char warm_start[LT_RUN_PATH_MAX];   /* --warm-start STUDY: an earlier study's trials */
    const char *mlflow;                 /* --mlflow URI ($MLFLOW_TRACKING_URI); "": off */
    int parallel;                       /* --parallel K: trials at once (default 1) */
    int heartbeat;                      /* --heartbeat S (PostgreSQL): seconds; 0: none */
    const char *task;                   /* compare --task auto|wikisql|gsm8k|none */
    int task_examples, task_max_tokens; /* compare --task-examples / --task-max-tokens; 0 default */
} tune_args;

typedef struct { /* what one study produced (compare's row) */
    int n_complete, n_pruned, n_failed, n_infeasible, best_trial;
    double best_value, best_time_s, best_tokens_per_sec, elapsed_s;
    int64_t best_peak_bytes, best_trainable, best_saved;
    int64_t parent_run;
    char prune_note[256];
} tune_summary;

static volatile sig_atomic_t g_stop;
#define MAX_PARALLEL 64
static lt_run *volatile g_runs[MAX_PARALLEL]; /* the runs under way (one per --parallel slot) */
/* --parallel K > 1: trials run on K threads; g_mu guards the study (and this process's stdout
 * lines) between them and the scheduling thread, g_cv says a trial ended */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_parallel;

/* A PostgreSQL study: this worker's trials (asked, not yet told) are kept alive with a
 * heartbeat every --heartbeat S seconds, sent by a thread of its own over its own connection
 * (the trials may run on this very thread); a trial with no heartbeat for 3 S is taken to have
 * lost its worker and is claimed and run again by the next worker that asks
 * (lt_study_claim_stale). g_hb: the trial of each --parallel slot and of the one waiting for
 * room (-1: none). */
#define HB_SLOTS (MAX_PARALLEL + 1)
static _Atomic int g_hb[HB_SLOTS];
static _Atomic int g_hb_quit;
typedef struct {
    const char *url, *cmd;
    int period;
} hb_args;
static void *hb_run(void *p) {
    const hb_args *h = p;
    lt_study *st = NULL;
    if (lt_study_open(h->url, &st)) {
        fprintf(stderr, "loratune %s: warning: no heartbeats (another worker may run this "
                        "worker's trials again after %d s): %s\n",
                h->cmd, 3 * h->period, lt_errmsg());
        return NULL;
    }
    for (;;) {
        for (int i = 0; i < 10 * h->period && !g_hb_quit; i++) usleep(100000);
        if (g_hb_quit) break;
        for (int k = 0; k < HB_SLOTS; k++) {
            int t = g_hb[k];
            if (t >= 0 && lt_study_heartbeat(st, t, NULL))
                fprintf(stderr, "loratune %s: warning: heartbeat of trial %d: %s\n", h->cmd, t,
                        lt_errmsg());
        }
    }
    lt_study_close(st);
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    if (g_stop++) _exit(130);
    for (int i = 0; i < MAX_PARALLEL; i++)
        if (g_runs[i]) lt_run_request_stop(g_runs[i]);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int mkdir_p(const char *path) {
    char b[LT_RUN_PATH_MAX + 64];
    snprintf(b, sizeof b, "%s", path);
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(b, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(b, 0777) && errno != EEXIST ? -1 : 0;
}

static lt_status load_json(const char *path, json_t **out) {
    json_error_t err;
    *out = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!*out)
        return lt_error(lt_path_exists(path) ? LT_ERR_FORMAT : LT_ERR_NOTFOUND, "%s: %s", path,
                        err.text);
    return LT_OK;
}

static lt_status write_json_file(const char *path, json_t *o) {
    char *t = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    if (!t) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(t);
    lt_status s = lt_file_write_atomic(path, t, n);
    free(t);
    return s;
}

/* "2h", "30m", "90s", "1h30m", "45" (seconds). -1 when malformed. */
static double parse_duration(const char *s) {
    double total = 0;
    int any = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || v < 0) return -1;
        s = end;
        double unit = 1;
        if (*s == 'h')
            unit = 3600, s++;
        else if (*s == 'm')
            unit = 60, s++;
        else if (*s == 's')
            s++;
        else if (*s)
            return -1;
        total += v * unit;
        any = 1;
    }
    return any ? total : -1;
}

/* ---- the default search space (docs/TUNE.md, "Priors") ------------------------------------- */
static char *default_space(const tune_args *a, const lt_model_config *mc) {
    json_t *sp = json_object();
    /* a rank above a linear's smaller side adds nothing (and the mlx-lm / PEFT adapters of
     * such a rank are refused): the range stops at the smallest side of any target */
    int cap = 64;
    if (mc) {
        int sides[] = {mc->dim, mc->n_heads * mc->head_dim, mc->n_kv_heads * mc->head_dim,
                       mc->ffn_dim};
        for (int i = 0; i < 4; i++)
            if (sides[i] > 0 && sides[i] < cap) cap = sides[i];
    }
    int rlow = cap < 4 ? 1 : 4;
    int full = a->base.method == LT_METHOD_FULL;
    /* "LoRA Without Regret" (Thinking Machines, 2025): LoRA's best LR ~10x full fine-tuning's
     * and nearly independent of rank (with alpha/r scaling): both ranges span two decades,
     * centred on 2e-4 (adapters) and 2e-5 (full). */
    json_object_set_new(sp, "lr",
                        json_pack("{s:s, s:f, s:f, s:b}", "type", "float", "low",
                                  full ? 2e-6 : 2e-5, "high", full ? 2e-4 : 2e-3, "log", 1));
    if (!full) {
        json_object_set_new(
            sp, "lora-rank",
            json_pack("{s:s, s:i, s:i, s:b}", "type", "int", "low", rlow, "high", cap, "log", 1));
        json_object_set_new(sp, "rslora",
                            json_pack("{s:s, s:[b, b]}", "type", "categorical", "choices", 0, 1));
        json_object_set_new(sp, "lora-dropout",
                            json_pack("{s:s, s:f, s:f}", "type", "float", "low", 0.0, "high", 0.1));
        json_object_set_new(sp, "lora-targets",
                            json_pack("{s:s, s:[s, s, s]}", "type", "categorical", "choices",
                                      "attention", "mlp", "all"));
    }
    json_object_set_new(sp, "warmup",
                        json_pack("{s:s, s:f, s:f}", "type", "float", "low", 0.0, "high", 0.1));
    if (!a->user_batch)
        json_object_set_new(
            sp, "batch-size",
            json_pack("{s:s, s:i, s:i, s:b}", "type", "int", "low", 1, "high", 16, "log", 1));
    char *t = json_dumps(sp, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(sp);
    return t;
}

/* A parameter's value as the text lt_run_opts_set reads; categorical aliases of lora-targets. */
static void value_text(const char *name, const char *choice_json, double num, int is_num, char *b,
                       size_t n) {
    if (is_num) {
        if (num == floor(num) && fabs(num) < 1e15)
            snprintf(b, n, "%.0f", num);
        else
            snprintf(b, n, "%.17g", num);
        return;
    }
    json_t *v = json_loads(choice_json, JSON_DECODE_ANY, NULL);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(name, "lora-targets") && !strcmp(s, "attention"))
            s = "q,k,v,o";
        else if (!strcmp(name, "lora-targets") && !strcmp(s, "mlp"))
            s = "gate,up,down";
        snprintf(b, n, "%s", s);
    } else if (json_is_boolean(v)) {
        snprintf(b, n, "%s", json_is_true(v) ? "true" : "false");
    } else if (json_is_number(v)) {
        double d = json_number_value(v);
        if (d == floor(d) && fabs(d) < 1e15)
            snprintf(b, n, "%.0f", d);
        else
            snprintf(b, n, "%.17g", d);
    } else {
        snprintf(b, n, "%s", choice_json);
    }
    json_decref(v);
}

/* Options a search may not set: where things are and what is being compared. */
static int not_searchable(const char *name) {
    static const char *const no[] = {
        "model",           "tokenizer", "data",   "data-format",    "out",  "resume",
        "adapter",         "iters",     "epochs", "valid-fraction", "json", "seed",
        "train-on-prompt", "threads",   NULL};
    for (int i = 0; no[i]; i++)
        if (!strcmp(name, no[i])) return 1;
    return 0;
}

/* Checks a space file against the option table: every name an option a search may set, every
 * bound and choice a value that option accepts. Errors name the file and the field. */
static int check_space(const tune_args *a, const char *text) {
    json_error_t err;
    json_t *sp = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!sp) {
        fprintf(stderr, "loratune %s: %s: line %d column %d: invalid JSON: %s\n", a->cmd,
                a->space_src, err.line, err.column, err.text);
        return 2;
    }
    const char *name;
    json_t *p;
    int rc = 0;
    json_object_foreach(sp, name, p) {
        int i = lt_run_opt_find(name);
        if (i < 0) {
            lt_run_opts o = a->base;
            lt_run_opts_set(&o, name, "1"); /* for its "did you mean" message */
            fprintf(stderr, "loratune %s: %s: %s: not a training option (%s)\n", a->cmd,
                    a->space_src, name, lt_errmsg());
            rc = 2;
            break;
        }
        const lt_run_opt_info *in = lt_run_opt_get(i);
        if (strcmp(name, in->name)) {
            fprintf(stderr, "loratune %s: %s: %s: write the option's name as '%s'\n", a->cmd,
                    a->space_src, name, in->name);
            rc = 2;
            break;
        }
        if (not_searchable(name)) {
            fprintf(stderr,
                    "loratune %s: %s: %s: not a hyperparameter a search may set (give it "
                    "as an option of the command)\n",
                    a->cmd, a->space_src, name);
            rc = 2;
            break;
        }
        if (!strcmp(name, "method") && a->base.method != LT_METHOD_LORA) {
            /* fine: the space decides the method */
        }
        const char *fields[] = {"low", "high"};
        for (int k = 0; k < 2 && !rc; k++) {
            json_t *v = json_object_get(p, fields[k]);
            if (!json_is_number(v)) continue; /* the study's own parser names it */
            char b[64];
            value_text(name, NULL, json_number_value(v), 1, b, sizeof b);
            lt_run_opts o = a->base;
            if (lt_run_opts_set(&o, name, b)) {
                fprintf(stderr, "loratune %s: %s: %s: %s: %s\n", a->cmd, a->space_src, name,
                        fields[k], lt_errmsg());
                rc = 2;
            }
        }
        json_t *ch = json_object_get(p, "choices");
        size_t j;
        json_t *c;
        json_array_foreach(ch, j, c) {
            if (rc) break;
            char *cj = json_dumps(c, JSON_ENCODE_ANY);
            char b[256];
            value_text(name, cj, 0, 0, b, sizeof b);
            free(cj);
            lt_run_opts o = a->base;
            if (lt_run_opts_set(&o, name, b)) {
                fprintf(stderr, "loratune %s: %s: %s: choices[%zu]: %s\n", a->cmd, a->space_src,
                        name, j, lt_errmsg());
                rc = 2;
            }
        }
        if (rc) break;
    }
    json_decref(sp);
    return rc;
}

/* ---- one study ------------------------------------------------------------------------------ */
typedef struct {
    lt_study *st;
    int trial;
    int64_t total_steps;
    lt_prune_opts po;
    int prune_on;
    int pruned;
    int64_t pruned_at;
    int step0_reused; /* its step-0 validation was an earlier trial's (g_step0) */
    lt_run *run;
    int json;
    int64_t trainable;
    json_t *train_curve, *val_curve; /* [[step, loss], ...] for trial.json (the report's curves) */
} trial_ctx;

static void tune_sink(void *ctx, const json_t *ev) {
    trial_ctx *t = ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    if (!e) return;
    if (!strcmp(e, "start")) {
        t->trainable = json_integer_value(json_object_get(ev, "trainable_params"));
        t->total_steps = json_integer_value(json_object_get(ev, "steps"));
    }
    if (!strcmp(e, "step") && t->train_curve) {
        double l = json_number_value(json_object_get(ev, "loss"));
        if (isfinite(l))
            json_array_append_new(
                t->train_curve,
                json_pack("[I, f]", json_integer_value(json_object_get(ev, "step")), l));
    }
    if (strcmp(e, "eval")) return;
    int64_t step = json_integer_value(json_object_get(ev, "step"));
    double v = json_number_value(json_object_get(ev, "val_loss"));
    if (!isfinite(v)) return;
    if (t->val_curve) json_array_append_new(t->val_curve, json_pack("[I, f]", (json_int_t)step, v));
    if (step == 0 && json_is_true(json_object_get(ev, "reused"))) t->step0_reused = 1;
    if (g_parallel) pthread_mutex_lock(&g_mu);
    int prune = 0, rung = 0, bad = 0;
    if (lt_study_report(t->st, t->trial, step, v) ||
        (t->prune_on && !t->pruned &&
         lt_study_should_prune(t->st, t->trial, &t->po, &prune, &rung))) {
        fprintf(stderr, "loratune tune: warning: %s\n", lt_errmsg());
        bad = 1;
    }
    if (g_parallel) pthread_mutex_unlock(&g_mu);
    if (bad || !t->prune_on || t->pruned) return;
    if (prune && step < t->total_steps) { /* the final evaluation is the value itself */
        t->pruned = 1;
        t->pruned_at = step;
        lt_run_request_stop(t->run);
    }
}

static int method_from(const char *s, lt_train_method *m) {
    lt_run_opts o;
    lt_run_opts_default(&o);
    if (lt_run_opts_set(&o, "method", s)) return -1;
    *m = o.method;
    return 0;
}

static lt_status load_tune_json(const char *dir, json_t **out) {
    char p[LT_RUN_PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/tune.json", dir);
    return load_json(p, out);
}

static void trial_dir(const tune_args *a, int trial, char *b, size_t n) {
    snprintf(b, n, "%s/trials/%04d", a->dir, trial);
}

static lt_recorder *trial_recorder(const tune_args *a, const lt_run_opts *o, int64_t parent,
                                   int trial) {
    if (!a->track) return NULL;
    json_t *cfg = lt_run_opts_to_json(o);
    char *cfg_text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    char name[64], cmdline[LT_RUN_PATH_MAX + 64];
    snprintf(name, sizeof name, "trial-%d", trial);
    snprintf(cmdline, sizeof cmdline, "loratune %s --study %s (trial %d)", a->cmd, a->study, trial);
    lt_recorder_opts ro = {.store_dir = lt_cli_store_dir(a->store),
                           .experiment = a->experiment,
                           .name = name,
                           .kind = "hpo-trial",
                           .command = cmdline,
                           .config_json = cfg_text,
                           .data_path = o->data,
                           .model = o->model,
                           .has_seed = 1,
                           .seed = o->seed};
    lt_recorder *rec = NULL;
    if (lt_recorder_start(&ro, &rec)) {
        fprintf(stderr, "loratune %s: warning: trial %d is not tracked: %s\n", a->cmd, trial,
                lt_errmsg());
        rec = NULL;
    } else {
        char b[32];
        lt_store *s = lt_recorder_store(rec);
        snprintf(b, sizeof b, "%lld", (long long)parent);
        if (parent > 0) lt_store_set_tag(s, lt_recorder_run_id(rec), "parent_run", b);
        snprintf(b, sizeof b, "%d", trial);
        lt_store_set_tag(s, lt_recorder_run_id(rec), "trial", b);
        lt_store_set_tag(s, lt_recorder_run_id(rec), "study", a->study);
    }
    free(cfg_text);
    return rec;
}

/* The MLflow mirror of a study (--mlflow URI or $MLFLOW_TRACKING_URI, with tracking on): the
 * study's run and each trial's run are pushed from the store (lt_mlflow_push_run) when a trial
 * ends, the trial with the tag mlflow.parentRunId = the study's MLflow run id, which MLflow
 * shows as a parent run with child runs. A server that fails is said once, and the study goes
 * on (`loratune runs push` sends the runs later). */
static struct {
    const char *uri; /* NULL: no mirror */
    const char *cmd;
    lt_store *store;
    int64_t parent;
    int failed;
} g_mirror;

static void mirror_runs(int64_t child) {
    if (!g_mirror.uri || !g_mirror.store || g_mirror.parent <= 0 || g_mirror.failed) return;
    lt_mlflow_server srv = lt_cli_mlflow_server(g_mirror.uri);
    char pid[64], cid[64];
    lt_status st = lt_mlflow_push_run(g_mirror.store, g_mirror.parent, &srv, pid);
    if (!st && child > 0 &&
        !(st = lt_store_set_tag(g_mirror.store, child, "mlflow.parentRunId", pid)))
        st = lt_mlflow_push_run(g_mirror.store, child, &srv, cid);
    if (st) {
        g_mirror.failed = 1;
        fprintf(stderr,
                "loratune %s: warning: the MLflow mirror of the study stopped: %s (the runs are "
                "in the store: `loratune runs push` sends them later)\n",
                g_mirror.cmd, lt_errmsg());
    }
}

static void trial_record_end(lt_recorder *rec, const char *state, lt_track_status ts) {
    if (!rec) return;
    lt_store_set_tag(lt_recorder_store(rec), lt_recorder_run_id(rec), "trial_state", state);
    int64_t child = lt_recorder_run_id(rec);
    char warn[512];
    if (lt_recorder_finish(rec, ts, warn, sizeof warn) > 0)
        fprintf(stderr, "loratune tune: warning: %s\n", warn);
    mirror_runs(child);
}

/* An infeasible trial: a child run that never trained, with the plan's numbers. */
static void record_infeasible(const tune_args *a, const lt_run_opts *o, int64_t parent, int trial,
                              const char *reason) {
    lt_recorder *rec = trial_recorder(a, o, parent, trial);
    if (!rec) return;
    lt_store_set_tag(lt_recorder_store(rec), lt_recorder_run_id(rec), "infeasible", reason);
    trial_record_end(rec, "infeasible", LT_TRACK_FAILED);
}

static void write_trial_json(const char *tdir, json_t *info) {
    char p[LT_RUN_PATH_MAX + 64];
    mkdir_p(tdir);
    snprintf(p, sizeof p, "%s/trial.json", tdir);
    if (write_json_file(p, info)) fprintf(stderr, "loratune tune: warning: %s\n", lt_errmsg());
}

/* Removes the checkpoint files of a trial that runs again (they hold a killed run's state). */
static void remove_checkpoints(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[LT_RUN_PATH_MAX + 300];
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "step-", 5)) {
            snprintf(p, sizeof p, "%.1000s/%.255s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

/* Runs a study to its budget. rc 0 ok, 1 error, 130 interrupted; *sum filled. */
static void stage_printer(void *ctx, const json_t *ev);

/* The model, tokenizer and data every trial shares (loaded once the study is open, so that a
 * bad space or study is refused before a large model is read). Full fine-tuning trials load
 * their own model; the shared one (lazy) serves their memory plans. */
static lt_status load_shared(const tune_args *a, lt_run_shared **sh) {
    if (*sh) return LT_OK;
    lt_run_opts so = a->base;
    so.method = LT_METHOD_LORA;
    so.out[0] = so.resume[0] = 0;
    if (!a->json) printf("loading %s and %s ...\n", a->base.model, a->base.data);
    fflush(stdout);
    return lt_run_shared_load(&so, a->json ? NULL : stage_printer, NULL, sh);
}

/* The study's HTML report (DIR/report or --report DIR); a failure is a warning. */
static void write_study_report(const tune_args *a) {
    char dir[LT_RUN_PATH_MAX + 16];
    if (a->report_dir[0])
        snprintf(dir, sizeof dir, "%s", a->report_dir);
    else
        snprintf(dir, sizeof dir, "%.1000s/report", a->dir);
    if (a->pg) { /* the report reads a study folder */
        if (!a->json)
            printf("report: not made for a PostgreSQL study (`loratune study report --study "
                   "URL` lists its trials)\n");
        return;
    }
    if (report_study_html(a->study, dir))
        fprintf(stderr, "loratune %s: warning: the report: %s\n", a->cmd, lt_errmsg());
    else if (!a->json)
        printf("report: %s/index.html\n", dir);
}

/* Path equality for the warm start's "same model and data": the resolved paths when both
 * resolve, else the strings. */
static int same_path(const char *x, const char *y) {
    char rx[PATH_MAX], ry[PATH_MAX];
    if (realpath(x, rx) && realpath(y, ry)) return !strcmp(rx, ry);
    return !strcmp(x, y);
}

/* --warm-start: the earlier study must be of the same model, data and method (its tune.json);
 * its complete trials that fit this space become the GP's prior observations
 * (lt_study_warm_start). Options that change what the loss means (length, evaluation) only
 * print a note. */
static lt_status warm_start(const tune_args *a, lt_study *st) {
    json_t *tj = NULL;
    lt_status s = load_tune_json(a->warm_start, &tj);
    if (s) {
        fprintf(stderr, "loratune %s: --warm-start: %s\n", a->cmd, lt_errmsg());
        return LT_ERR_ARG;
    }
    json_t *b = json_object_get(tj, "base");
    const char *old[3] = {json_string_value(json_object_get(b, "model")),
                          json_string_value(json_object_get(b, "data")),
                          json_string_value(json_object_get(b, "method"))};
    const char *now[3] = {a->base.model, a->base.data, lt_train_method_name(a->base.method)};
    static const char *const what[3] = {"model", "data", "method"};
    for (int k = 0; k < 3; k++)
        if (!old[k] || (k < 2 ? !same_path(old[k], now[k]) : strcmp(old[k], now[k]) != 0)) {
            fprintf(stderr,
                    "loratune %s: --warm-start: %s is a study of another %s (%s, not %s): a "
                    "warm start needs the same model, data and method\n",
                    a->cmd, a->warm_start, what[k], old[k] ? old[k] : "?", now[k]);
            json_decref(tj);
            return LT_ERR_ARG;
        }
    if (!st) { /* the check alone, before the study is made (the notes come with the study) */
        json_decref(tj);
        return LT_OK;
    }
    json_t *cur = lt_run_opts_to_json(&a->base);
    static const char *const scale[] = {"iters",      "epochs", "max-seq-len",     "eval-batches",
                                        "batch-size", "pack",   "train-on-prompt", NULL};
    for (int k = 0; scale[k]; k++) {
        const char *x = json_string_value(json_object_get(b, scale[k])),
                   *y = json_string_value(json_object_get(cur, scale[k]));
        if (x && y && strcmp(x, y) && !a->json)
            printf("warm start: note: %s was %s there, %s here: its losses may be on another "
                   "scale\n",
                   scale[k], x, y);
    }
    json_decref(cur);
    json_decref(tj);
    int used = 0, skipped = 0;
    if ((s = lt_study_warm_start(st, a->warm_start, &used, &skipped))) {
        fprintf(stderr, "loratune %s: --warm-start: %s\n", a->cmd, lt_errmsg());
        return s;
    }
    if (!a->json)
        printf("warm start: %d complete trials of %s as the GP's prior observations (%d outside "
               "this space, skipped)\n",
               used, a->warm_start, skipped);
    return LT_OK;
}

/* One trial under way: made by the scheduling thread (options, plan), run by job_run (on a
 * thread of its own with --parallel K > 1, inline otherwise), ended by the scheduling thread. */
typedef struct {
    int busy, done, slot, rerun;
    int trial;
    lt_run_opts o;
    char params[2048], tdir[LT_RUN_PATH_MAX + 32], err[1024];
    json_t *info;
    trial_ctx tc;
    lt_run *r;
    lt_recorder *rec;
    lt_status s;
    lt_run_outcome oc;
    double dt, started, ended;  /* seconds; started / ended since the epoch (trial.json) */
    int64_t planned, own_bytes; /* the plan's peak; what it adds to trials running beside it */
    const tune_args *a;
    const lt_run_shared *shared;
    int64_t parent;
    pthread_t th;
} trial_job;

static double epoch_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The step-0 validation (the untrained model's) is the same for trials whose options differ
 * only in the optimizer, the schedule, the length, saving, and (lora / qlora: B = 0, so the
 * adapter adds exactly zero) the adapter's shape: the first such trial computes it and the
 * others report it (lt_run_set_step0_eval). The key is the trial's resolved options (after
 * lt_run_prepare: automatic sizes filled in) without those; DoRA keeps its shape in the key
 * (its untrained output is W's renormalised, not W's bit for bit). */
#define STEP0_CACHE 8
static struct {
    char *key;
    lt_eval_result ev;
} g_step0[STEP0_CACHE];
static int g_n_step0;

static char *step0_key(const lt_run_opts *o) {
    static const char *const always[] = {
        "out",         "iters",      "epochs",           "grad-accum", "lr",
        "lr-schedule", "warmup",     "weight-decay",     "grad-clip",  "memory-budget",
        "eval-every",  "save-every", "keep-checkpoints", "early-stop", "max-nonfinite",
        "json",        "overwrite"};
    static const char *const shape[] = {"lora-rank",    "lora-alpha",  "lora-dropout",
                                        "lora-targets", "lora-layers", "rslora"};
    json_t *j = lt_run_opts_to_json(o);
    if (!j) return NULL;
    for (size_t i = 0; i < sizeof always / sizeof *always; i++)
        json_object_del(j, always[i]);
    if (o->method == LT_METHOD_LORA || o->method == LT_METHOD_QLORA)
        for (size_t i = 0; i < sizeof shape / sizeof *shape; i++)
            json_object_del(j, shape[i]);
    char *key = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return key;
}

/* 1 and *ev when a trial with this key computed its step-0 evaluation (under g_mu) */
static int step0_find(const char *key, lt_eval_result *ev) {
    for (int i = 0; key && i < g_n_step0; i++)
        if (!strcmp(g_step0[i].key, key)) {
            *ev = g_step0[i].ev;
            return 1;
        }
    return 0;
}

static void step0_add(const char *key, const lt_eval_result *ev) { /* under g_mu */
    lt_eval_result old;
    if (!key || step0_find(key, &old)) return;
    int i = g_n_step0 < STEP0_CACHE ? g_n_step0++ : STEP0_CACHE - 1; /* full: the last replaced */
    char *k = strdup(key);
    if (!k) return;
    free(g_step0[i].key);
    g_step0[i].key = k;
    g_step0[i].ev = *ev;
}

static void *job_run(void *p) {
    trial_job *j = p;
    lt_status s = j->o.method == LT_METHOD_FULL ? lt_run_new(&j->o, &j->r)
                                                : lt_run_new_from(j->shared, &j->o, &j->r);
    double tr0 = now_s();
    j->started = epoch_s();
    j->oc = LT_RUN_DONE;
    if (!s) {
        j->tc.run = j->r;
        lt_run_add_sink(j->r, tune_sink, &j->tc);
        g_runs[j->slot] = j->r;
        if (g_stop) lt_run_request_stop(j->r);
        s = lt_run_prepare(j->r);
        char *key = s ? NULL : step0_key(lt_run_options(j->r));
        int reused = 0;
        lt_eval_result ev0;
        if (key) {
            if (g_parallel) pthread_mutex_lock(&g_mu);
            reused = step0_find(key, &ev0);
            if (g_parallel) pthread_mutex_unlock(&g_mu);
            if (reused && lt_run_set_step0_eval(j->r, &ev0)) reused = 0; /* then it evaluates */
        }
        if (!s) {
            /* one recorder starts at a time: starting versions the data into the store's
             * cache (same files for every trial: concurrent writers of one object collide) */
            static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
            pthread_mutex_lock(&rec_mu);
            j->rec = trial_recorder(j->a, &j->o, j->parent, j->trial);
            pthread_mutex_unlock(&rec_mu);
            if (j->rec) lt_run_add_sink(j->r, lt_recorder_sink, j->rec);
            s = lt_run_train(j->r, &j->oc);
            if (!s && !reused && lt_run_get_step0_eval(j->r, &ev0)) {
                if (g_parallel) pthread_mutex_lock(&g_mu);
                step0_add(key, &ev0);
                if (g_parallel) pthread_mutex_unlock(&g_mu);
            }
        }
        free(key);
        g_runs[j->slot] = NULL;
    }
    j->s = s;
    snprintf(j->err, sizeof j->err, "%s", s || j->oc == LT_RUN_NONFINITE ? lt_errmsg() : "");
    j->dt = now_s() - tr0;
    j->ended = epoch_s();
    if (g_parallel) {
        pthread_mutex_lock(&g_mu);
        j->done = 1;
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
    } else {
        j->done = 1;
    }
    return NULL;
}

/* A trial's state as summary.json counts it, from the study (a PostgreSQL study's trials run
 * on other workers too: their trial.json is in their --workdir). */
static const char *study_state_name(const lt_study *st, int i, double *value) {
    lt_trial_state ts;
    *value = NAN;
    if (lt_study_trial_state(st, i, &ts, value)) return NULL;
    if (ts == LT_TRIAL_FAILED) {
        char *tj = NULL;
        json_t *t = NULL;
        if (!lt_study_trial_json(st, i, &tj)) t = json_loads(tj, 0, NULL);
        free(tj);
        int inf = json_object_get(t, "infeasible") != NULL;
        json_decref(t);
        return inf ? "infeasible" : "failed";
    }
    return ts == LT_TRIAL_COMPLETE ? "complete" : ts == LT_TRIAL_PRUNED ? "pruned" : "running";
}

static int run_study(tune_args *a, int resume, lt_run_shared **shp, tune_summary *sum) {
    if (!a->dir[0]) snprintf(a->dir, sizeof a->dir, "%s", a->study);
    memset(sum, 0, sizeof *sum);
    sum->best_trial = -1;
    sum->best_value = NAN;
    char path[LT_RUN_PATH_MAX + 64];
    json_t *tj = NULL;
    lt_study *st = NULL;
    lt_store *store = NULL;
    int rc = 0;
    double elapsed0 = 0;
    int64_t parent = 0;
    lt_dir_lock *wlock = NULL; /* a PostgreSQL study: --workdir's lock (a folder study: the
                                  study's own lock covers its folder) */
    int joined = 0;            /* a PostgreSQL study that another worker made */

    /* the pruning schedule: on for runs long enough to have a rung before the end */
    int64_t total = a->base.iters;
    char why_off[256] = "";
    if (!a->prune)
        snprintf(why_off, sizeof why_off, "--no-prune");
    else if (total <= 0)
        snprintf(why_off, sizeof why_off,
                 "the trial length is given in epochs: pruning needs "
                 "--iters (optimizer steps)");
    lt_prune_opts po = {.reduction_factor = a->eta};
    if (!why_off[0]) {
        po.min_resource = a->min_resource > 0 ? a->min_resource
                                              : (int64_t)ceil((double)total / (a->eta * a->eta));
        if (po.min_resource >= total)
            snprintf(why_off, sizeof why_off,
                     "%lld steps per trial leave no rung before the end "
                     "(--min-resource %lld)",
                     (long long)total, (long long)po.min_resource);
        else if (po.min_resource < 10)
            snprintf(why_off, sizeof why_off,
                     "the first rung would come after %lld optimizer "
                     "steps: fewer than 10, too few for validation loss to rank runs (give "
                     "--iters >= %d)",
                     (long long)po.min_resource, 10 * a->eta * a->eta);
        else if (a->trials > 0 && a->trials < a->eta + 1)
            snprintf(why_off, sizeof why_off,
                     "%d trials: successive halving needs more than "
                     "eta = %d to halve",
                     a->trials, a->eta);
    }
    int prune_on = !why_off[0];
    if (prune_on)
        snprintf(sum->prune_note, sizeof sum->prune_note,
                 "successive halving: eta %d, rungs at "
                 "steps %lld, %lld, ... (every %lld-step evaluation reports)",
                 a->eta, (long long)po.min_resource, (long long)po.min_resource * a->eta,
                 (long long)(a->user_eval_every ? a->base.eval_every : po.min_resource));
    else
        snprintf(sum->prune_note, sizeof sum->prune_note, "off: %s", why_off);
    if (prune_on && !a->user_eval_every) a->base.eval_every = po.min_resource;

    /* the files this command writes into the study folder (the study's own study.json is
     * the library's): a killed write's temp files go once the study's lock is held */
    static const char *const tune_files[] = {"tune.json", "summary.json", "best_config.yaml", NULL};
    if (a->pg && (mkdir_p(a->dir) || lt_dir_lock_open(a->dir, 0, &wlock))) {
        fprintf(stderr, "loratune %s: --workdir %s: %s\n", a->cmd, a->dir,
                wlock ? "" : lt_errmsg());
        return 1;
    }
    if (a->pg && !resume) { /* join the study when it is there */
        lt_status s = lt_study_open(a->study, &st);
        if (s == LT_OK)
            joined = 1;
        else if (s != LT_ERR_NOTFOUND) {
            fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
            lt_dir_lock_close(wlock);
            return 1;
        }
    }
    if (resume) {
        if (lt_study_open(a->study, &st)) {
            fprintf(stderr, "loratune %s: --resume: %s\n", a->cmd, lt_errmsg());
            return 1;
        }
        if (load_tune_json(a->dir, &tj)) {
            fprintf(stderr, "loratune %s: --resume: %s\n", a->cmd, lt_errmsg());
            lt_study_close(st);
            lt_dir_lock_close(wlock);
            return 1;
        }
        elapsed0 = json_number_value(json_object_get(tj, "elapsed_s"));
        parent = json_integer_value(json_object_get(tj, "parent_run"));
    } else if (joined) {
    } else {
        if (!a->space_json && load_shared(a, shp)) { /* the default space reads the model */
            fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
            return 1;
        }
        char *space =
            a->space_json ? a->space_json : default_space(a, lt_run_shared_model_config(*shp));
        lt_study_options so = {.sampler = a->sampler, .seed = a->seed};
        if (a->warm_start[0] && warm_start(a, NULL)) {
            if (space != a->space_json) free(space);
            return 2;
        }
        lt_status s = lt_study_create(a->study, space, &so, &st);
        if (space != a->space_json) free(space);
        if (s == LT_ERR_ARG && a->pg && lt_study_open(a->study, &st) == LT_OK) {
            s = LT_OK; /* another worker made it meanwhile: join it */
            joined = 1;
        }
        if (s) {
            fprintf(stderr, "loratune %s: %s%s%s\n", a->cmd, a->space_json ? a->space_src : "",
                    a->space_json ? ": " : "", lt_errmsg());
            return s == LT_ERR_ARG || s == LT_ERR_FORMAT ? 2 : 1;
        }
        if (!joined && a->warm_start[0] && (s = warm_start(a, st))) {
            lt_study_close(st);
            return 1;
        }
    }
    if (joined && !a->json)
        printf("study %s: joined (made by another worker: its space and sampler)%s\n", a->study,
               a->warm_start[0] ? "; --warm-start not applied" : "");
    if (!resume) {
        json_t *cfg = lt_run_opts_to_json(&a->base);
        tj = json_pack("{s:s, s:i, s:s, s:o, s:i, s:f, s:f, s:b, s:s, s:I, s:i}", "format",
                       TUNE_FORMAT, "version", 1, "command", a->cmd, "base", cfg, "trials",
                       a->trials, "time_budget_s", a->time_budget, "elapsed_s", 0.0, "prune",
                       prune_on, "prune_note", sum->prune_note, "min_resource",
                       (json_int_t)po.min_resource, "reduction_factor", a->eta);
        if (a->pg) json_object_set_new(tj, "study", json_string(a->study));
    }
    lt_dir_remove_temps(a->dir, tune_files); /* the study's lock, or --workdir's, is held */
    if (a->track) {
        if (lt_store_open(lt_cli_store_dir(a->store), &store)) {
            fprintf(stderr, "loratune %s: warning: the study is not tracked: %s\n", a->cmd,
                    lt_errmsg());
            store = NULL;
        } else if (!parent) {
            char *cfg = json_dumps(tj, JSON_COMPACT);
            lt_track_run_desc d = {.experiment = a->experiment,
                                   .name = a->study,
                                   .kind = "hpo-study",
                                   .command = a->cmd,
                                   .config_json = cfg,
                                   .has_seed = 1,
                                   .seed = a->seed,
                                   .data_path = a->base.data,
                                   .record_hardware = 1};
            if (lt_store_run_begin(store, &d, &parent)) {
                fprintf(stderr, "loratune %s: warning: %s\n", a->cmd, lt_errmsg());
                parent = 0;
            } else {
                lt_store_log_param(store, parent, "method", lt_train_method_name(a->base.method));
                lt_store_log_param(store, parent, "model", a->base.model);
                char b[32];
                snprintf(b, sizeof b, "%d", a->trials);
                lt_store_log_param(store, parent, "trials", b);
                lt_store_set_tag(store, parent, "pruning", sum->prune_note);
            }
            free(cfg);
        } else {
            lt_store_set_tag(store, parent, "resumed", "true");
        }
    }
    if (load_shared(a, shp)) {
        fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
        rc = 1;
        goto out;
    }
    const lt_run_shared *shared = *shp;
    if (a->base.method != LT_METHOD_FULL && !json_object_get(tj, "rank_suggestion")) {
        lt_data_summary tr;
        if (lt_data_summary_get(lt_run_shared_data(shared), LT_SPLIT_TRAIN, &tr) == LT_OK) {
            lt_rank_hint rh;
            lt_rank_hint_compute(lt_run_shared_model_config(shared), tr.n_loss_tokens,
                                 tr.n_examples, &rh);
            json_object_set_new(tj, "rank_suggestion",
                                json_pack("{s:i, s:s}", "rank", rh.rank, "reason", rh.reason));
            if (!a->json) printf("rank suggestion: %d: %s\n", rh.rank, rh.reason);
        }
    }
    json_object_set_new(tj, "parent_run", json_integer(parent));
    json_object_set_new(tj, "track", json_boolean(a->track));
    char store_abs[4096];
    if (store && realpath(lt_store_dir_path(store), store_abs)) /* where a resumed study goes
                                                   on recording, whatever its working folder */
        json_object_set_new(tj, "store", json_string(store_abs));
    if (a->experiment) json_object_set_new(tj, "experiment", json_string(a->experiment));
    snprintf(path, sizeof path, "%s/tune.json", a->dir);
    if (write_json_file(path, tj)) {
        fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
        rc = 1;
        goto out;
    }
    sum->parent_run = parent;
    g_mirror.uri = a->mlflow && *a->mlflow ? a->mlflow : NULL;
    g_mirror.cmd = a->cmd;
    g_mirror.store = store;
    g_mirror.parent = parent;
    if (g_mirror.uri && store && parent && !a->json)
        printf("mirrored to MLflow at %s (the study a parent run, each trial a child run)\n",
               g_mirror.uri);
    if (g_mirror.uri && (!store || !parent) && a->track)
        fprintf(stderr, "loratune %s: warning: no MLflow mirror: the study is not in the store\n",
                a->cmd);
    if (g_mirror.uri && lt_mlflow_check_uri(g_mirror.uri)) {
        fprintf(stderr, "loratune %s: warning: no MLflow mirror: %s\n", a->cmd, lt_errmsg());
        g_mirror.uri = NULL;
    }
    if (!a->json) {
        printf("study %s: method %s, %d trials%s, sampler %s; pruning %s\n", a->study,
               lt_train_method_name(a->base.method), a->trials,
               a->time_budget > 0 ? " or the time budget" : "", lt_sampler_name(a->sampler),
               sum->prune_note);
        fflush(stdout);
    }

    double t0 = now_s();
    int infeasible_in_row = 0;
    /* --parallel K: up to K trials at once, over the one shared model, while the sum of their
     * plans fits the memory budget (the base counted once); K = 1 runs each trial inline */
    int K = a->parallel > 1 ? a->parallel : 1, inflight = 0, stopping = 0, full = 0;
    trial_job *jobs = calloc((size_t)K, sizeof *jobs), *pend = NULL;
    for (int k = 0; k < HB_SLOTS; k++) g_hb[k] = -1;
    g_hb_quit = 0;
    pthread_t hb_th;
    hb_args hb = {a->study, a->cmd, a->heartbeat};
    int hb_on = a->pg && a->heartbeat > 0 && !pthread_create(&hb_th, NULL, hb_run, &hb);
    if (!jobs) {
        fprintf(stderr, "loratune %s: out of memory\n", a->cmd);
        rc = 1;
        goto out;
    }
    int64_t budget = a->base.memory_budget;
    if (budget <= 0) {
        lt_hwinfo hw;
        if (!lt_hwinfo_detect(&hw)) budget = (int64_t)(0.8 * (double)hw.ram_available_bytes);
    }
    int64_t shared_bytes = 0; /* the model, mapped file and process overhead: once */
    g_parallel = K > 1;
    if (g_parallel) pthread_mutex_lock(&g_mu);
    for (;;) {
        /* trials that ended: told, recorded, printed (on this thread) */
        for (int k = 0; k < K; k++) {
            trial_job *j = &jobs[k];
            if (!j->busy || !j->done) continue;
            if (g_parallel) pthread_join(j->th, NULL);
            j->busy = 0;
            g_hb[k] = -1;
            inflight--;
            lt_run_result res;
            memset(&res, 0, sizeof res);
            res.last_val_loss = NAN;
            if (j->r) lt_run_get_result(j->r, &res);
            const char *state;
            if (g_stop && !j->tc.pruned) { /* Ctrl-C: stays running; --resume continues it */
                if (j->rec) trial_record_end(j->rec, "interrupted", LT_TRACK_KILLED);
                json_decref(j->info);
                json_decref(j->tc.train_curve);
                json_decref(j->tc.val_curve);
                lt_run_free(j->r);
                rc = 130;
                stopping = 1;
                continue;
            }
            if (j->s || j->oc == LT_RUN_NONFINITE ||
                (!j->tc.pruned &&
                 !(res.last_val_step == res.steps && isfinite(res.last_val_loss)))) {
                state = "failed";
                json_object_set_new(j->info, "reason",
                                    json_string(j->s || j->oc == LT_RUN_NONFINITE
                                                    ? j->err
                                                    : "no final validation loss "
                                                      "(the data has no valid split?)"));
                if (lt_study_tell_error(st, j->trial,
                                        json_string_value(json_object_get(j->info, "reason"))))
                    fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                sum->n_failed++;
                trial_record_end(j->rec, state, LT_TRACK_FAILED);
            } else if (j->tc.pruned) {
                state = "pruned";
                json_object_set_new(j->info, "pruned_at_step", json_integer(j->tc.pruned_at));
                lt_study_tell(st, j->trial, LT_TRIAL_PRUNED, NAN);
                sum->n_pruned++;
                trial_record_end(j->rec, state, LT_TRACK_FINISHED);
            } else {
                state = "complete";
                json_object_set_new(j->info, "value", json_real(res.last_val_loss));
                if (lt_study_tell(st, j->trial, LT_TRIAL_COMPLETE, res.last_val_loss))
                    fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                sum->n_complete++;
                trial_record_end(j->rec, state, LT_TRACK_FINISHED);
            }
            int64_t peak = 0;
            if (j->r && lt_run_trainer(j->r))
                peak = lt_trainer_plan(lt_run_trainer(j->r))->peak_bytes;
            json_t *info = j->info;
            json_object_set_new(info, "state", json_string(state));
            json_object_set_new(info, "steps", json_integer(res.steps));
            json_object_set_new(info, "time_s", json_real(j->dt));
            json_object_set_new(info, "step0_val_reused", json_boolean(j->tc.step0_reused));
            if (K > 1) {
                json_object_set_new(info, "started_at", json_real(j->started));
                json_object_set_new(info, "ended_at", json_real(j->ended));
            }
            json_object_set_new(info, "tokens_per_sec", json_real(res.tokens_per_sec));
            json_object_set_new(info, "planned_peak_bytes", json_integer(peak));
            json_object_set_new(info, "trainable_params", json_integer(j->tc.trainable));
            { /* what the trial saved: the PEFT adapter file, or a full fine-tune's model file */
                struct stat sb;
                char f[LT_RUN_PATH_MAX + 64];
                int64_t saved = 0;
                snprintf(f, sizeof f, "%.1000s/adapter_model.safetensors", j->tdir);
                if (!stat(f, &sb)) saved = (int64_t)sb.st_size;
                snprintf(f, sizeof f, "%.1000s/model.safetensors", j->tdir);
                if (!saved && !stat(f, &sb)) saved = (int64_t)sb.st_size;
                json_object_set_new(info, "saved_bytes", json_integer(saved));
            }
            json_object_set_new(info, "batch_size",
                                json_integer(j->r ? lt_run_options(j->r)->batch_size : 0));
            json_object_set_new(info, "train_curve", j->tc.train_curve);
            json_object_set_new(info, "val_curve", j->tc.val_curve);
            write_trial_json(j->tdir, info);
            lt_run_free(j->r); /* releases the folder's lock */
            { /* a trial never resumes from its checkpoints (a killed one runs again from the
                 start), so they only take room: a full fine-tune's is three times the model */
                char ck[LT_RUN_PATH_MAX + 64];
                snprintf(ck, sizeof ck, "%.1000s/checkpoints", j->tdir);
                remove_checkpoints(ck);
                rmdir(ck);
            }
            if (!a->json) {
                if (!strcmp(state, "complete"))
                    printf("trial %3d  complete  val_loss %.5f  %6.1fs  [%s]\n", j->trial,
                           res.last_val_loss, j->dt, j->params);
                else if (!strcmp(state, "pruned"))
                    printf("trial %3d  pruned at step %lld (val_loss %.5f)  %6.1fs  [%s]\n",
                           j->trial, (long long)j->tc.pruned_at, res.last_val_loss, j->dt,
                           j->params);
                else
                    printf("trial %3d  failed: %s  [%s]\n", j->trial,
                           json_string_value(json_object_get(info, "reason")), j->params);
                fflush(stdout);
            }
            json_decref(info);
            json_object_set_new(tj, "elapsed_s", json_real(elapsed0 + (now_s() - t0)));
            write_json_file(path, tj);
            if (store && parent && !strcmp(state, "complete"))
                lt_store_log_metric(store, parent, "val_loss", j->trial, res.last_val_loss);
        }
        if (g_stop) {
            rc = 130;
            stopping = 1;
        }
        /* count what has run; a trial left running by a killed process runs again (not one
         * under way here) */
        int n = lt_study_n_trials(st), ran = 0, rerun = -1;
        for (int i = 0; i < n; i++) {
            lt_trial_state ts;
            lt_study_trial_state(st, i, &ts, NULL);
            int mine = pend && pend->trial == i;
            for (int k = 0; k < K; k++)
                if (jobs[k].busy && jobs[k].trial == i) mine = 1;
            char tdir[LT_RUN_PATH_MAX + 32], tp[LT_RUN_PATH_MAX + 64];
            trial_dir(a, i, tdir, sizeof tdir);
            snprintf(tp, sizeof tp, "%s/infeasible", tdir);
            if (ts == LT_TRIAL_RUNNING && rerun < 0 && !mine && !a->pg) /* PostgreSQL: another
                                                  worker's, maybe under way */
                rerun = i;
            else if (ts != LT_TRIAL_RUNNING && !lt_path_exists(tp))
                ran++;
        }
        double elapsed = elapsed0 + (now_s() - t0);
        /* a PostgreSQL study: --trials counts every worker's trials, checked by the ask */
        int more = !stopping && !rc &&
                   (pend || rerun >= 0 ||
                    (!(a->trials > 0 && (a->pg ? full : ran + inflight >= a->trials)) &&
                     !(a->time_budget > 0 && elapsed >= a->time_budget)));
        if (!more || inflight >= K) {
            if (inflight == 0) break;
            pthread_cond_wait(&g_cv, &g_mu); /* K > 1 only: K = 1 has nothing in flight here */
            continue;
        }
        trial_job *j = NULL;
        for (int k = 0; k < K && !j; k++)
            if (!jobs[k].busy) j = &jobs[k];
        if (pend) { /* it waited for room beside the trials under way */
            if (pend != j) *j = *pend, free(pend);
            pend = NULL;
            g_hb[MAX_PARALLEL] = -1;
        } else {
            int trial = rerun, claimed = 0;
            if (trial < 0 && hb_on) { /* first, a trial whose worker died (no heartbeat) */
                int own[HB_SLOTS], n_own = 0;
                for (int k = 0; k < HB_SLOTS; k++)
                    if (g_hb[k] >= 0) own[n_own++] = g_hb[k];
                if (lt_study_claim_stale(st, 3 * a->heartbeat, own, n_own, &trial)) {
                    fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                    rc = 1;
                    continue;
                }
                claimed = trial >= 0;
                if (claimed) rerun = trial;
            }
            if (trial < 0 &&
                (a->pg ? lt_study_ask_within(st, a->trials, &trial) : lt_study_ask(st, &trial))) {
                fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                rc = 1;
                continue;
            }
            if (trial < 0) { /* the shared study holds --trials trials already */
                /* other workers' trials still running: wait for them to be told, or to go
                 * without a heartbeat long enough to be claimed here */
                int others = 0;
                for (int i = 0; hb_on && i < lt_study_n_trials(st); i++) {
                    lt_trial_state ts;
                    lt_study_trial_state(st, i, &ts, NULL);
                    int own = 0;
                    for (int k = 0; k < HB_SLOTS; k++) own |= g_hb[k] == i;
                    if (ts == LT_TRIAL_RUNNING && !own) others++;
                }
                if (!others) {
                    full = 1;
                    continue;
                }
                if (g_parallel) pthread_mutex_unlock(&g_mu);
                int poll = a->heartbeat < 5 ? a->heartbeat : 5; /* seconds */
                for (int w = 0; w < 10 * poll && !g_stop; w++) usleep(100000);
                if (g_parallel) pthread_mutex_lock(&g_mu);
                continue;
            }
            memset(j, 0, sizeof *j);
            j->trial = trial;
            j->rerun = rerun >= 0;
            /* the trial's options */
            lt_run_opts o = a->base;
            char *params = j->params, *tdir = j->tdir;
            size_t pl = 0;
            int bad = 0;
            for (int i = 0; i < lt_study_n_params(st) && !bad; i++) {
                const char *name = lt_study_param_name(st, i);
                double num;
                char *cj = NULL, b[256], shown[256];
                if (lt_study_param_number(st, trial, name, &num) == LT_OK)
                    value_text(name, NULL, num, 1, b, sizeof b);
                else if (lt_study_param_choice_json(st, trial, name, &cj) == LT_OK)
                    value_text(name, cj, 0, 0, b, sizeof b);
                else
                    b[0] = 0;
                snprintf(shown, sizeof shown, "%s", b); /* the choice as the space names it */
                if (cj && cj[0] == '"')
                    snprintf(shown, sizeof shown, "%.*s", (int)strlen(cj) - 2, cj + 1);
                free(cj);
                if (lt_run_opts_set(&o, name, b)) {
                    fprintf(stderr, "loratune %s: trial %d: %s\n", a->cmd, trial, lt_errmsg());
                    bad = 1;
                }
                if (pl < sizeof j->params)
                    pl += (size_t)snprintf(params + pl, sizeof j->params - pl, "%s%s=%s",
                                           i ? " " : "", name, shown);
            }
            trial_dir(a, trial, tdir, sizeof j->tdir);
            snprintf(o.out, sizeof o.out, "%.1000s", tdir);
            o.resume[0] = 0;
            o.json = 0;
            if (K > 1 && a->base.threads <= 0) { /* the cores shared among the trials */
                lt_hwinfo hw;
                int cores = !lt_hwinfo_detect(&hw) && hw.affinity_cores > 0 ? hw.affinity_cores : 1;
                o.threads = cores / K > 0 ? cores / K : 1;
            }
            mkdir_p(tdir);
            if (claimed) {
                if (!a->json)
                    printf("trial %3d  lost its worker (no heartbeat for %d s): runs again here\n",
                           trial, 3 * a->heartbeat);
            }
            if (rerun >= 0) { /* killed mid-trial: it runs again from the start, as it first did */
                char ck[LT_RUN_PATH_MAX + 64];
                snprintf(ck, sizeof ck, "%.1000s/checkpoints", tdir);
                remove_checkpoints(ck);
                o.overwrite = 1; /* its own folder: the killed trial's run_config.yaml is there */
                if (!claimed && lt_study_restart(st, trial)) {
                    fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                    rc = 1;
                    continue;
                }
                if (!a->json && !claimed)
                    printf("trial %3d  was running when the study stopped: runs again\n", trial);
            }
            j->info = json_pack("{s:i, s:s}", "trial", trial, "params", params);

            /* the memory plan: an infeasible configuration never starts */
            char reason[512] = "";
            int64_t planned = 0;
            if (!bad && o.batch_size > 0) {
                lt_train_plan_t plan;
                if (lt_run_plan(shared, &o, &plan))
                    snprintf(reason, sizeof reason, "%s", lt_errmsg());
                else if (budget > 0 && plan.peak_bytes > budget)
                    snprintf(reason, sizeof reason,
                             "planned peak %.1f MiB exceeds the memory budget "
                             "%.1f MiB",
                             plan.peak_bytes / 1048576.0, budget / 1048576.0);
                planned = plan.peak_bytes;
                if (!reason[0]) { /* beside other trials: the base and overhead once */
                    int64_t common =
                        o.method == LT_METHOD_FULL
                            ? plan.overhead_bytes
                            : plan.model_bytes + plan.mapped_bytes + plan.overhead_bytes;
                    if (common > shared_bytes) shared_bytes = common;
                    j->own_bytes = plan.peak_bytes - common;
                }
            } /* batch-size auto: the run sizes it within the budget itself */
            j->planned = planned;
            if (bad || reason[0]) {
                if (bad) snprintf(reason, sizeof reason, "%s", lt_errmsg());
                json_object_set_new(j->info, "state", json_string("infeasible"));
                json_object_set_new(j->info, "reason", json_string(reason));
                if (planned)
                    json_object_set_new(j->info, "planned_peak_bytes", json_integer(planned));
                write_trial_json(tdir, j->info);
                char mark[LT_RUN_PATH_MAX + 64];
                snprintf(mark, sizeof mark, "%s/infeasible", tdir);
                lt_file_write_atomic(mark, reason, strlen(reason));
                record_infeasible(a, &o, parent, trial, reason);
                if (lt_study_tell_infeasible(st, trial, reason))
                    fprintf(stderr, "loratune %s: %s\n", a->cmd, lt_errmsg());
                sum->n_infeasible++;
                if (!a->json)
                    printf("trial %3d  infeasible (not run): %s  [%s]\n", trial, reason, params);
                fflush(stdout);
                json_decref(j->info);
                j->info = NULL;
                if (++infeasible_in_row >= 50) {
                    fprintf(stderr,
                            "loratune %s: 50 configurations in a row do not fit the memory "
                            "budget; narrow the space (batch-size, max-seq-len) or raise "
                            "--memory-budget\n",
                            a->cmd);
                    rc = 1;
                }
                continue;
            }
            infeasible_in_row = 0;
            j->o = o;
        }
        /* room beside the trials under way? else it waits for one to end */
        if (inflight > 0 && budget > 0) {
            int64_t sum_own = j->own_bytes;
            for (int k = 0; k < K; k++)
                if (jobs[k].busy) sum_own += jobs[k].own_bytes;
            if (shared_bytes + sum_own > budget) {
                if (!(pend = malloc(sizeof *pend))) {
                    fprintf(stderr, "loratune %s: out of memory\n", a->cmd);
                    rc = 1;
                    continue;
                }
                *pend = *j;
                g_hb[MAX_PARALLEL] = pend->trial;
                memset(j, 0, sizeof *j);
                pthread_cond_wait(&g_cv, &g_mu);
                continue;
            }
        }
        /* the run */
        j->tc = (trial_ctx){.st = st,
                            .trial = j->trial,
                            .po = po,
                            .prune_on = prune_on,
                            .json = a->json,
                            .total_steps = j->o.iters,
                            .train_curve = json_array(),
                            .val_curve = json_array()};
        j->a = a;
        j->shared = shared;
        j->parent = parent;
        j->slot = (int)(j - jobs);
        g_hb[j->slot] = j->trial;
        j->busy = 1;
        j->done = 0;
        inflight++;
        if (!g_parallel) {
            job_run(j);
        } else if (pthread_create(&j->th, NULL, job_run, j)) {
            fprintf(stderr, "loratune %s: cannot start a thread for trial %d\n", a->cmd, j->trial);
            j->busy = 0;
            inflight--;
            rc = 1;
        }
    }
    if (g_parallel) pthread_mutex_unlock(&g_mu);
    g_parallel = 0;
    g_hb_quit = 1;
    if (hb_on) pthread_join(hb_th, NULL);
    if (pend) {
        json_decref(pend->info);
        free(pend);
    }
    free(jobs);

    /* the best trial */
    {
        char *sj = NULL;
        int best = -1;
        if (a->pg && lt_study_refresh(st)) /* every worker's trials, as they stand now */
            fprintf(stderr, "loratune %s: warning: %s\n", a->cmd, lt_errmsg());
        if (lt_study_summary_json(st, &sj, &best)) best = -1;
        sum->best_trial = best;
        sum->elapsed_s = elapsed0 + (now_s() - t0);
        json_t *summary = json_object();
        /* counts over the whole study (a resumed one included) */
        sum->n_complete = sum->n_pruned = sum->n_failed = sum->n_infeasible = 0;
        for (int i = 0; i < lt_study_n_trials(st); i++) {
            char tdir[LT_RUN_PATH_MAX + 32], tp[LT_RUN_PATH_MAX + 64];
            trial_dir(a, i, tdir, sizeof tdir);
            snprintf(tp, sizeof tp, "%s/trial.json", tdir);
            json_t *ti = NULL;
            double sv = NAN;
            if (load_json(tp, &ti)) ti = NULL;
            const char *s = a->pg ? study_state_name(st, i, &sv)
                                  : json_string_value(json_object_get(ti, "state"));
            if (!ti && a->pg && i == best) { /* another worker's trial: the study's record */
                char *tjs = NULL;
                if (!lt_study_trial_json(st, i, &tjs)) ti = json_loads(tjs, 0, NULL);
                free(tjs);
                if (ti && !json_object_get(ti, "value"))
                    json_object_set_new(ti, "value", json_real(sv));
            }
            if (!ti && !a->pg) continue;
            if (s && !strcmp(s, "complete"))
                sum->n_complete++;
            else if (s && !strcmp(s, "pruned"))
                sum->n_pruned++;
            else if (s && !strcmp(s, "failed"))
                sum->n_failed++;
            else if (s && !strcmp(s, "infeasible"))
                sum->n_infeasible++;
            if (i == best && ti) {
                sum->best_value = json_number_value(json_object_get(ti, "value"));
                sum->best_time_s = json_number_value(json_object_get(ti, "time_s"));
                sum->best_tokens_per_sec = json_number_value(json_object_get(ti, "tokens_per_sec"));
                sum->best_peak_bytes =
                    json_integer_value(json_object_get(ti, "planned_peak_bytes"));
                sum->best_trainable = json_integer_value(json_object_get(ti, "trainable_params"));
                sum->best_saved = json_integer_value(json_object_get(ti, "saved_bytes"));
                json_object_set(summary, "best", ti);
            }
            json_decref(ti);
        }
        json_object_set_new(summary, "study", json_string(a->study));
        json_object_set_new(summary, "method", json_string(lt_train_method_name(a->base.method)));
        json_object_set_new(summary, "complete", json_integer(sum->n_complete));
        json_object_set_new(summary, "pruned", json_integer(sum->n_pruned));
        json_object_set_new(summary, "failed", json_integer(sum->n_failed));
        json_object_set_new(summary, "infeasible", json_integer(sum->n_infeasible));
        json_object_set_new(summary, "elapsed_s", json_real(sum->elapsed_s));
        json_object_set_new(summary, "pruning", json_string(sum->prune_note));
        json_object_set_new(summary, "parent_run", json_integer(parent));
        if (best >= 0) {
            char src[LT_RUN_PATH_MAX + 64], dst[LT_RUN_PATH_MAX + 64], tdir[LT_RUN_PATH_MAX + 32];
            trial_dir(a, best, tdir, sizeof tdir);
            snprintf(src, sizeof src, "%s/run_config.yaml", tdir);
            snprintf(dst, sizeof dst, "%s/best_config.yaml", a->dir);
            char *text = NULL;
            size_t len;
            if (!lt_file_read_all(src, &text, &len)) {
                lt_file_write_atomic(dst, text, len);
                json_object_set_new(summary, "best_config", json_string(dst));
            }
            free(text);
            if (store && parent) {
                char b[64];
                snprintf(b, sizeof b, "%d", best);
                lt_store_set_tag(store, parent, "best_trial", b);
                lt_store_log_metric(store, parent, "best_val_loss", 0, sum->best_value);
            }
        }
        snprintf(path, sizeof path, "%s/summary.json", a->dir);
        write_json_file(path, summary);
        if (!a->json && !strcmp(a->cmd, "tune")) {
            printf("\n%d complete, %d pruned, %d failed, %d infeasible (not run) in %.1fs\n",
                   sum->n_complete, sum->n_pruned, sum->n_failed, sum->n_infeasible,
                   sum->elapsed_s);
            if (best >= 0)
                printf("best: trial %d, val_loss %.5f; its options: %s/best_config.yaml "
                       "(loratune train -c %s/best_config.yaml --out DIR)\n",
                       best, sum->best_value, a->dir, a->dir);
            else
                printf("no trial completed\n");
            if (parent)
                printf("study recorded as run #%lld (loratune runs show %lld)\n", (long long)parent,
                       (long long)parent);
        } else if (a->json && !strcmp(a->cmd, "tune")) {
            lt_cli_stream out; /* a broken stdout: said on stderr, exit 141 (summary.json has it) */
            lt_cli_stream_init(&out, "tune");
            if (lt_cli_stream_json(&out, summary) && rc == 0) rc = LT_CLI_EXIT_STREAM_BROKE;
        }
        json_decref(summary);
        free(sj);
        write_study_report(a);
        if (store && parent && rc != 130)
            lt_store_run_end(store, parent, best >= 0 ? LT_TRACK_FINISHED : LT_TRACK_FAILED);
        mirror_runs(0);
    }
out:
    g_mirror.store = NULL;
    lt_store_close(store);
    json_decref(tj);
    lt_study_close(st);
    lt_dir_lock_close(wlock);
    return rc;
}

/* ---- argument handling ------------------------------------------------------------------ */
static void usage(FILE *f, const char *cmd) {
    if (!strcmp(cmd, "compare"))
        fprintf(
            f,
            "usage: loratune compare --model M --data D --methods lora,dora,qlora,full\n"
            "                        --study DIR [--trials-per-method K | --time-budget DUR]\n"
            "                        [--max-memory SIZE] [--max-time DUR] [--min-quality LOSS]\n"
            "                        [--memory-budget X] [-c config.yaml] [--json | --markdown]\n"
            "                        [--report DIR] [train options]\n"
            "       loratune compare --study DIR --report-only [constraints] [--json | "
            "--markdown]\n\n"
            "Tunes each method with the same budget (K trials each, or an equal share of the\n"
            "time budget) in DIR/<method>/, then prints a table: best validation loss, the\n"
            "best trial's time, planned peak memory, tokens/s and trainable parameters, the\n"
            "Pareto fronts (loss vs memory, loss vs time) and a recommendation with its\n"
            "reasons (DIR/compare.json, DIR/compare.md, DIR/report/index.html).\n\n"
            "  --max-memory SIZE      recommend only methods whose planned peak is <= SIZE\n"
            "  --max-time DUR         ... whose best trial trained in <= DUR (90s, 2m)\n"
            "  --min-quality LOSS     ... whose best validation loss is <= LOSS\n"
            "  --task T               auto (default) | wikisql | gsm8k | none: the task metric\n"
            "                         by greedy generation on DATA/test.jsonl (WikiSQL: exact\n"
            "                         match of the SQL; GSM8K: final-answer accuracy)\n"
            "  --task-examples N      the first N test examples (default 200)\n"
            "  --task-max-tokens N    new tokens per example (default wikisql 64, gsm8k 256)\n"
            "  --warm-start DIR       an earlier comparison of the same model and data: each\n"
            "                         method's search starts from DIR/<method>'s trials\n"
            "  --markdown             print compare.md instead of the table\n"
            "  --report DIR           the HTML report there (default DIR/report)\n"
            "  --png                  each chart also as a PNG next to its SVG\n"
            "  --report-only          recompute the fronts, recommendation and reports from\n"
            "                         DIR/compare.json (no training; new constraints)\n"
            "Other options as `loratune tune`. See docs/TUNE.md.\n");
    else
        fprintf(
            f,
            "usage: loratune tune --model M --data D --study DIR [--method lora|dora|qlora|full]\n"
            "                     [--trials N | --time-budget DUR] [--space SPACE.json]\n"
            "                     [--memory-budget X] [-c config.yaml] [--resume] [train "
            "options]\n\n"
            "Hyperparameter search: each trial is a training run (in this process, over one\n"
            "loaded model) whose final validation loss is minimised by GP-BO (docs/TUNE.md).\n\n"
            "  --study DIR            the study folder (study.json, trials/, best_config.yaml)\n"
            "  --trials N             trials to run (default 20; infeasible ones not counted)\n"
            "  --time-budget DUR      stop asking after DUR (90s, 30m, 2h, 1h30m)\n"
            "  --space FILE           search space JSON (option name -> float / int /\n"
            "                         categorical); default: lr, lora-rank, rslora,\n"
            "                         lora-dropout, lora-targets, warmup, batch-size\n"
            "  --resume               continue the study in DIR (after a kill)\n"
            "  --parallel K           up to K trials at once over the one loaded model, while\n"
            "                         their plans fit --memory-budget together (default 1)\n"
            "  --study URL#NAME       postgresql://user@host:port/db#NAME: a study shared by\n"
            "                         workers on several hosts; made by the first, joined by\n"
            "                         the others; --trials counts all workers' trials\n"
            "  --workdir DIR          with a PostgreSQL study: this worker's folder (trials/N,\n"
            "                         tune.json, summary.json)\n"            "  --heartbeat S          with a PostgreSQL study: keep this worker's trials alive\n"
            "                         every S seconds (default 60); a trial with no heartbeat\n"
            "                         for 3 S lost its worker and runs again on the next worker\n"
            "                         that asks (0: never)\n"
            "  --warm-start STUDY     an earlier study of the same model, data and method: its\n"
            "                         complete trials seed the GP (docs/TUNE.md)\n"
            "  --sampler S            auto (Sobol then GP) | gp | tpe | random | sobol\n"
            "  --tune-seed S          the sampler's seed (default 0)\n"
            "  --no-prune             no successive halving\n"
            "  --reduction-factor E   successive halving's eta (default 3)\n"
            "  --min-resource STEPS   first rung (default iters / eta^2)\n"
            "  --store DIR, --experiment NAME, --no-track   tracking (as `train`)\n"
            "  --mlflow URI           mirror the study (parent run) and its trials (child runs)\n"
            "                         to MLflow (default $MLFLOW_TRACKING_URI; '' off)\n"
            "  --json                 print the summary as JSON\n"
            "  --report DIR           the HTML report there (default STUDY/report)\n"
            "  --report-only          write the report of the study in --study DIR and stop\n"
            "  --png                  each chart also as a PNG next to its SVG\n"
            "Any `loratune train` option (--iters, --eval-batches, --lora-alpha, ...) sets the\n"
            "base every trial starts from.\n");
}

/* Parses argv into a (tune options first, then train options). 0 ok, 2 usage error. */
static int parse_args(int argc, char **argv, tune_args *a, int *resume, char *methods, size_t mn,
                      int *per_method) {
    const char *cmd = a->cmd;
    lt_run_opts_default(&a->base);
    a->trials = -1;
    a->eta = 3;
    a->prune = 1;
    a->track = 1;
    a->lim.max_val_loss = NAN;
    a->heartbeat = 60;
    int hb_set = 0;
    const char *config = NULL, *space = NULL, *tb = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loratune %s: %s: missing value (a YAML file)\n", cmd, argv[i]);
                return 2;
            }
            config = argv[++i];
        }
    if (config && lt_run_opts_load_yaml(&a->base, config)) {
        fprintf(stderr, "loratune %s: %s\n", cmd, lt_errmsg());
        return 2;
    }
    a->mlflow = getenv("MLFLOW_TRACKING_URI");
    const char *nt = getenv("LORATUNE_NO_TRACK");
    if (nt && *nt && strcmp(nt, "0")) a->track = 0;
    for (int i = 1; i < argc; i++) {
        const char *x = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        static const char *const valued[] = {"--study",
                                             "--workdir",
                                             "--trials",
                                             "--trials-per-method",
                                             "--time-budget",
                                             "--space",
                                             "--sampler",
                                             "--tune-seed",
                                             "--reduction-factor",
                                             "--min-resource",
                                             "--methods",
                                             "--store",
                                             "--experiment",
                                             "--report",
                                             "--max-memory",
                                             "--max-time",
                                             "--min-quality",
                                             "--task",
                                             "--warm-start",
                                             "--mlflow",
                                             "--parallel",
                                             "--heartbeat",
                                             "--task-examples",
                                             "--task-max-tokens",
                                             NULL};
        for (int k = 0; valued[k]; k++)
            if (!strcmp(x, valued[k]) && !v) {
                fprintf(stderr, "loratune %s: %s: missing value\n", cmd, x);
                return 2;
            }
#define TAKE(name) (!strcmp(x, name))
        if (!strcmp(x, "-c") || !strcmp(x, "--config")) {
            i++;
        } else if (TAKE("--study")) {
            snprintf(a->study, sizeof a->study, "%s", v), i++;
        } else if (TAKE("--workdir")) {
            snprintf(a->dir, sizeof a->dir, "%s", v), i++;
        } else if (TAKE("--trials") || TAKE("--trials-per-method")) {
            if (!strcmp(x, "--trials") != !per_method) {
                fprintf(stderr, "loratune %s: %s is not an option of %s (%s)\n", cmd, x, cmd,
                        per_method ? "--trials-per-method K" : "--trials N");
                return 2;
            }
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
            if (n < 1 || n > 100000) {
                fprintf(stderr, "loratune %s: %s: expected 1..100000, got %ld\n", cmd, x, n);
                return 2;
            }
            a->trials = (int)n, i++;
        } else if (TAKE("--time-budget")) {
            tb = v, i++;
        } else if (TAKE("--space")) {
            space = v, i++;
        } else if (TAKE("--sampler")) {
            if (lt_sampler_from_name(v, &a->sampler)) {
                fprintf(stderr,
                        "loratune %s: --sampler: expected auto, gp, tpe, random or sobol, got "
                        "'%s'\n",
                        cmd, v);
                return 2;
            }
            i++;
        } else if (TAKE("--tune-seed")) {
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n) || n < 0) return 2;
            a->seed = (uint64_t)n, i++;
        } else if (TAKE("--reduction-factor")) {
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
            if (n < 2) {
                fprintf(stderr, "loratune %s: --reduction-factor: expected an integer >= 2\n", cmd);
                return 2;
            }
            a->eta = (int)n, i++;
        } else if (TAKE("--min-resource")) {
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
            if (n < 1) {
                fprintf(stderr, "loratune %s: --min-resource: expected steps >= 1\n", cmd);
                return 2;
            }
            a->min_resource = n, i++;
        } else if (TAKE("--methods")) {
            if (!methods) {
                fprintf(stderr,
                        "loratune %s: --methods is an option of `loratune compare` (tune "
                        "takes --method M)\n",
                        cmd);
                return 2;
            }
            snprintf(methods, mn, "%s", v), i++;
        } else if (TAKE("--report")) {
            snprintf(a->report_dir, sizeof a->report_dir, "%s", v), i++;
        } else if (!strcmp(x, "--report-only")) {
            a->report_only = 1;
        } else if (!strcmp(x, "--png")) {
            report_set_png(1);
        } else if (TAKE("--parallel")) {
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
            if (n < 1 || n > MAX_PARALLEL) {
                fprintf(stderr, "loratune %s: --parallel: expected 1..%d trials at once, got %ld\n",
                        cmd, MAX_PARALLEL, n);
                return 2;
            }
            a->parallel = (int)n, i++;
        } else if (TAKE("--heartbeat")) {
            long n;
            if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
            if (n < 0 || n > 86400) {
                fprintf(stderr, "loratune %s: --heartbeat: expected 0..86400 seconds, got %ld\n",
                        cmd, n);
                return 2;
            }
            a->heartbeat = (int)n, i++;
            hb_set = 1;
        } else if (TAKE("--mlflow")) {
            a->mlflow = v, i++;
        } else if (TAKE("--warm-start")) {
            snprintf(a->warm_start, sizeof a->warm_start, "%s", v), i++;
        } else if (TAKE("--task") || TAKE("--task-examples") || TAKE("--task-max-tokens")) {
            if (!methods) {
                fprintf(stderr, "loratune %s: %s is an option of `loratune compare`\n", cmd, x);
                return 2;
            }
            if (TAKE("--task")) {
                if (strcmp(v, "auto") && strcmp(v, "wikisql") && strcmp(v, "gsm8k") &&
                    strcmp(v, "none")) {
                    fprintf(stderr,
                            "loratune %s: --task: expected auto, wikisql, gsm8k or none, got "
                            "'%s'\n",
                            cmd, v);
                    return 2;
                }
                a->task = v;
            } else {
                long n;
                if (lt_cli_parse_int(cmd, x, v, &n)) return 2;
                if (n < 1 || n > 1000000) {
                    fprintf(stderr, "loratune %s: %s: expected 1..1000000, got %ld\n", cmd, x, n);
                    return 2;
                }
                *(TAKE("--task-examples") ? &a->task_examples : &a->task_max_tokens) = (int)n;
            }
            i++;
        } else if (TAKE("--max-memory") || TAKE("--max-time") || TAKE("--min-quality") ||
                   !strcmp(x, "--markdown")) {
            if (!methods) {
                fprintf(stderr, "loratune %s: %s is an option of `loratune compare`\n", cmd, x);
                return 2;
            }
            if (!strcmp(x, "--markdown")) {
                a->markdown = 1;
                continue;
            }
            i++;
            if (!strcmp(x, "--max-memory")) {
                lt_run_opts o;
                lt_run_opts_default(&o);
                if (lt_run_opts_set(&o, "memory-budget", v) || o.memory_budget <= 0) {
                    fprintf(stderr,
                            "loratune %s: --max-memory: expected a size such as 512M, 8G or "
                            "a number of bytes, got '%s'\n",
                            cmd, v);
                    return 2;
                }
                a->lim.max_memory_bytes = o.memory_budget;
            } else if (!strcmp(x, "--max-time")) {
                a->lim.max_time_s = parse_duration(v);
                if (a->lim.max_time_s <= 0) {
                    fprintf(stderr,
                            "loratune %s: --max-time: expected a duration such as 90s, 30m, "
                            "2h or 1h30m, got '%s'\n",
                            cmd, v);
                    return 2;
                }
            } else {
                double q;
                if (lt_cli_parse_float(cmd, x, v, &q)) return 2;
                if (!isfinite(q) || q <= 0) {
                    fprintf(stderr,
                            "loratune %s: --min-quality: expected the highest acceptable "
                            "validation loss (a number > 0), got '%s'\n",
                            cmd, v);
                    return 2;
                }
                a->lim.max_val_loss = q;
            }
        } else if (TAKE("--store")) {
            a->store = v, i++;
        } else if (TAKE("--experiment")) {
            a->experiment = v, i++;
        } else if (!strcmp(x, "--no-track")) {
            a->track = 0;
        } else if (!strcmp(x, "--no-prune")) {
            a->prune = 0;
        } else if (!strcmp(x, "--resume")) {
            if (!resume) {
                fprintf(stderr, "loratune %s: --resume is an option of `loratune tune`\n", cmd);
                return 2;
            }
            *resume = 1;
        } else if (!strcmp(x, "--json")) {
            a->json = 1;
        } else if (!strncmp(x, "--", 2)) { /* a training option */
            char key[128];
            const char *val = NULL, *eq = strchr(x, '=');
            if (eq) {
                snprintf(key, sizeof key, "%.*s", (int)(eq - x), x);
                val = eq + 1;
            } else {
                snprintf(key, sizeof key, "%s", x);
            }
            if (!strcmp(key + 2, "method") && methods) {
                fprintf(stderr, "loratune compare: give the methods as --methods "
                                "lora,dora,qlora,full\n");
                return 2;
            }
            int flag = lt_run_opt_is_flag(key);
            if (flag < 0 && !strncmp(key, "--no-", 5) && lt_run_opt_is_flag(key + 5) == 1 && !eq) {
                if (lt_run_opts_set(&a->base, key + 5, "false")) goto bad;
                continue;
            }
            if (flag == 1 && !eq)
                val = "true";
            else if (flag == 0 && !eq) {
                if (!v) {
                    fprintf(stderr, "loratune %s: %s: missing value\n", cmd, key);
                    return 2;
                }
                val = argv[++i];
            }
            if (!strcmp(key + 2, "out") || !strcmp(key + 2, "resume")) {
                fprintf(stderr,
                        "loratune %s: %s: each trial writes to DIR/trials/N (--study DIR)\n", cmd,
                        key);
                return 2;
            }
            if (lt_run_opts_set(&a->base, key, val)) goto bad;
            if (!strcmp(key + 2, "eval-every")) a->user_eval_every = 1;
            if (!strcmp(key + 2, "batch-size") && a->base.batch_size > 0) a->user_batch = 1;
            continue;
        bad:
            fprintf(stderr, "loratune %s: --%s\n", cmd, lt_errmsg());
            return 2;
        } else {
            fprintf(stderr, "loratune %s: unexpected argument '%s' (options start with --)\n", cmd,
                    x);
            return 2;
        }
#undef TAKE
    }
    if (config) { /* a config file's eval-every / batch-size count as given */
        lt_run_opts d;
        lt_run_opts_default(&d);
        if (d.eval_every != a->base.eval_every) a->user_eval_every = 1;
        if (a->base.batch_size > 0) a->user_batch = 1;
    }
    if (!a->study[0]) {
        fprintf(stderr, "loratune %s: --study DIR is required\n", cmd);
        return 2;
    }
    a->pg = !strncmp(a->study, "postgresql://", 13) || !strncmp(a->study, "postgres://", 11);
    if (a->pg && strcmp(cmd, "tune")) {
        fprintf(stderr,
                "loratune %s: --study: a folder (a PostgreSQL study is for `loratune "
                "tune`)\n",
                cmd);
        return 2;
    }
    if (a->pg && !a->dir[0]) {
        fprintf(stderr,
                "loratune %s: --study %s: a PostgreSQL study needs --workdir DIR, this "
                "worker's folder (its trials' runs, tune.json, summary.json)\n",
                cmd, a->study);
        return 2;
    }
    if (!a->pg && hb_set) {
        fprintf(stderr,
                "loratune %s: --heartbeat is for a PostgreSQL --study (a folder study is "
                "one process's, under its lock)\n",
                cmd);
        return 2;
    }
    if (!a->pg && a->dir[0]) {
        fprintf(stderr,
                "loratune %s: --workdir is for a PostgreSQL --study (a folder study "
                "keeps everything in its folder)\n",
                cmd);
        return 2;
    }
    if (a->pg && a->report_only) {
        fprintf(stderr,
                "loratune %s: --report-only reads a study folder; for a PostgreSQL "
                "study: loratune study report --study URL\n",
                cmd);
        return 2;
    }
    if (tb) {
        a->time_budget = parse_duration(tb);
        if (a->time_budget <= 0) {
            fprintf(stderr,
                    "loratune %s: --time-budget: expected a duration such as 90s, 30m, 2h "
                    "or 1h30m, got '%s'\n",
                    cmd, tb);
            return 2;
        }
        if (a->trials < 0) a->trials = 0; /* the time decides */
    }
    if (a->trials < 0) a->trials = 20;
    if ((resume && *resume) || a->report_only) return 0;
    if (!a->base.model[0] || !a->base.data[0]) {
        fprintf(stderr, "loratune %s: --model and --data are required\n", cmd);
        return 2;
    }
    if (!lt_path_exists(a->base.model) || !lt_path_exists(a->base.data)) {
        fprintf(stderr, "loratune %s: --%s %s: no such file or folder\n", cmd,
                lt_path_exists(a->base.model) ? "data" : "model",
                lt_path_exists(a->base.model) ? a->base.data : a->base.model);
        return 2;
    }
    if (space) {
        snprintf(a->space_src, sizeof a->space_src, "%s", space);
        size_t len;
        if (lt_file_read_all(space, &a->space_json, &len)) {
            fprintf(stderr, "loratune %s: --space: %s\n", cmd, lt_errmsg());
            return 2;
        }
        int rc = check_space(a, a->space_json);
        if (rc) {
            free(a->space_json); /* the caller frees it only after a successful parse */
            a->space_json = NULL;
            return rc;
        }
    }
    return 0;
}

static void stage_printer(void *ctx, const json_t *ev) {
    (void)ctx;
    const char *st = json_string_value(json_object_get(ev, "stage"));
    if (st && json_is_true(json_object_get(ev, "done")))
        printf("loaded %s: %lld examples\n", json_string_value(json_object_get(ev, "data")),
               (long long)json_integer_value(json_object_get(ev, "examples")));
}

static int setup_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return 0;
}

static json_t *g_resume_tj; /* tune.json of a resumed study (its strings are borrowed) */

/* The base options of a resumed study (tune.json), then the command line's budget. */
static int resume_base(tune_args *a) {
    json_t *tj = NULL;
    if (load_tune_json(a->dir[0] ? a->dir : a->study, &tj)) {
        fprintf(stderr, "loratune %s: --resume: %s\n", a->cmd, lt_errmsg());
        return 1;
    }
    lt_run_opts_default(&a->base);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(tj, "base"), k, v) {
        if (json_is_string(v) && lt_run_opts_set(&a->base, k, json_string_value(v))) {
            fprintf(stderr, "loratune %s: %s/tune.json: base: %s\n", a->cmd, a->study, lt_errmsg());
            json_decref(tj);
            return 1;
        }
    }
    if (a->trials == 20 && json_is_integer(json_object_get(tj, "trials")))
        a->trials = (int)json_integer_value(json_object_get(tj, "trials"));
    if (a->time_budget <= 0)
        a->time_budget = json_number_value(json_object_get(tj, "time_budget_s"));
    a->prune = json_is_true(json_object_get(tj, "prune")) ? a->prune : 0;
    /* the same store and experiment as the study's first session (strings kept: tj lives on in
       g_resume_tj until the command ends) */
    if (json_is_false(json_object_get(tj, "track"))) a->track = 0;
    if (!a->store && json_is_string(json_object_get(tj, "store")))
        a->store = json_string_value(json_object_get(tj, "store"));
    if (!a->experiment && json_is_string(json_object_get(tj, "experiment")))
        a->experiment = json_string_value(json_object_get(tj, "experiment"));
    if (json_integer_value(json_object_get(tj, "min_resource")) > 0)
        a->min_resource = json_integer_value(json_object_get(tj, "min_resource"));
    if (json_integer_value(json_object_get(tj, "reduction_factor")) >= 2)
        a->eta = (int)json_integer_value(json_object_get(tj, "reduction_factor"));
    g_resume_tj = tj;
    return 0;
}

int cmd_tune(int argc, char **argv) {
    tune_args a;
    memset(&a, 0, sizeof a);
    a.cmd = "tune";
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout, "tune");
        return 0;
    }
    int resume = 0;
    int rc = parse_args(argc, argv, &a, &resume, NULL, 0, NULL);
    if (rc) return rc;
    if (a.report_only) { /* the report of the study as it stands (a running one included) */
        char sj[LT_RUN_PATH_MAX + 32];
        snprintf(sj, sizeof sj, "%s/%s", a.study, LT_STUDY_FILE);
        if (!lt_path_exists(sj)) {
            fprintf(stderr, "loratune tune: --report-only: %s: no such file (no study in %s)\n", sj,
                    a.study);
            return 1;
        }
        a.json = 0;
        char dir[LT_RUN_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%.1000s/report", a.study);
        if (report_study_html(a.study, a.report_dir[0] ? a.report_dir : dir)) {
            fprintf(stderr, "loratune tune: %s\n", lt_errmsg());
            return 1;
        }
        printf("report: %s/index.html\n", a.report_dir[0] ? a.report_dir : dir);
        return 0;
    }
    if (resume && a.warm_start[0]) {
        fprintf(stderr, "loratune tune: --warm-start is given when a study starts (a resumed "
                        "study keeps its own)\n");
        return 2;
    }
    if (resume && (rc = resume_base(&a))) return rc;
    if (a.pg) { /* the study is in the server; --workdir is this worker's folder */
        char tjp[LT_RUN_PATH_MAX + 32];
        snprintf(tjp, sizeof tjp, "%s/tune.json", a.dir);
        if (!resume && lt_path_exists(tjp)) {
            fprintf(stderr,
                    "loratune tune: --workdir %s already holds a worker's study: "
                    "continue it with --resume, or give another --workdir\n",
                    a.dir);
            return 2;
        }
    } else if (!resume && lt_path_exists(a.study) && !lt_path_is_dir(a.study)) {
        fprintf(stderr, "loratune tune: --study %s: not a folder\n", a.study);
        return 2;
    }
    char sp[LT_RUN_PATH_MAX + 32];
    snprintf(sp, sizeof sp, "%s/%s", a.study, LT_STUDY_FILE);
    if (!a.pg && !resume && lt_path_exists(sp)) {
        fprintf(stderr,
                "loratune tune: %s already holds a study: continue it with --resume, or "
                "give another --study folder\n",
                a.study);
        return 2;
    }
    if (lt_run_opts_validate(&a.base, 0)) {
        fprintf(stderr, "loratune tune: --%s\n", lt_errmsg());
        return 2;
    }
    if (a.base.threads > 0) lt_set_num_threads(a.base.threads);
    setup_signals();
    lt_run_shared *sh = NULL;
    tune_summary sum;
    rc = run_study(&a, resume, &sh, &sum);
    lt_run_shared_free(sh);
    json_decref(g_resume_tj);
    free(a.space_json);
    return rc;
}

/* compare's outputs from its rows (out: model, data, metric, methods): the fronts and the
 * recommendation under a->lim, then ROOT/compare.json, ROOT/compare.md, the HTML report
 * (ROOT/report or --report DIR), and the table (or the JSON, or the Markdown) on stdout. */
static int compare_output(const tune_args *a, const char *root, json_t *out) {
    int rc = 0;
    report_compare_analyze(out, &a->lim);
    char path[LT_RUN_PATH_MAX + 32], mdpath[LT_RUN_PATH_MAX + 32], rdir[LT_RUN_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/compare.json", root);
    snprintf(mdpath, sizeof mdpath, "%s/compare.md", root);
    if (a->report_dir[0])
        snprintf(rdir, sizeof rdir, "%s", a->report_dir);
    else
        snprintf(rdir, sizeof rdir, "%.1000s/report", root);
    mkdir_p(root);
    if (write_json_file(path, out)) fprintf(stderr, "loratune compare: %s\n", lt_errmsg()), rc = 1;
    char *md = report_compare_markdown(out);
    if (!md || lt_file_write_atomic(mdpath, md, strlen(md)))
        fprintf(stderr, "loratune compare: %s: %s\n", mdpath, md ? lt_errmsg() : "out of memory"),
            rc = 1;
    if (report_compare_html(out, rdir))
        fprintf(stderr, "loratune compare: the report: %s\n", lt_errmsg()), rc = 1;
    json_t *rows = json_object_get(out, "methods");
    if (a->json) {
        lt_cli_stream so; /* a broken stdout: said on stderr, exit 141 (compare.json has it) */
        lt_cli_stream_init(&so, "compare");
        if (lt_cli_stream_json(&so, out) && rc == 0) rc = LT_CLI_EXIT_STREAM_BROKE;
    } else if (a->markdown) {
        fputs(md ? md : "", stdout);
    } else {
        printf("\n%-6s %-14s %10s %9s %10s %11s %12s %10s  %-10s %s\n", "method", "trials c/p/f/i",
               "val_loss", "time_s", "peak_MiB", "tokens/s", "trainable", "saved_MiB", "best trial",
               "task");
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r) {
            char tr[32];
            snprintf(tr, sizeof tr, "%lld/%lld/%lld/%lld",
                     (long long)json_integer_value(json_object_get(r, "complete")),
                     (long long)json_integer_value(json_object_get(r, "pruned")),
                     (long long)json_integer_value(json_object_get(r, "failed")),
                     (long long)json_integer_value(json_object_get(r, "infeasible")));
            if (json_is_null(json_object_get(r, "best_val_loss"))) {
                printf("%-6s %-14s %10s\n", json_string_value(json_object_get(r, "method")), tr,
                       "-");
                continue;
            }
            json_t *tm = json_object_get(r, "task_metric");
            char tv[32] = "-";
            if (tm)
                snprintf(tv, sizeof tv, "%.4f", json_number_value(json_object_get(tm, "value")));
            printf("%-6s %-14s %10.5f %9.2f %10.1f %11.0f %12lld %10.2f  %-10lld %s\n",
                   json_string_value(json_object_get(r, "method")), tr,
                   json_number_value(json_object_get(r, "best_val_loss")),
                   json_number_value(json_object_get(r, "time_s")),
                   json_integer_value(json_object_get(r, "peak_bytes")) / 1048576.0,
                   json_number_value(json_object_get(r, "tokens_per_sec")),
                   (long long)json_integer_value(json_object_get(r, "trainable_params")),
                   json_integer_value(json_object_get(r, "saved_bytes")) / 1048576.0,
                   (long long)json_integer_value(json_object_get(r, "best_trial")), tv);
        }
        printf("(trials: complete/pruned/failed/infeasible; time and memory are the best "
               "trial's; %s)\n",
               json_string_value(json_object_get(out, "metric")));
        report_compare_print(out, stdout);
        printf("written: %s, %s, %s/index.html\n", path, mdpath, rdir);
    }
    free(md);
    return rc;
}

/* compare --warm-start DIR: METHOD's study of that earlier comparison (DIR/METHOD), or "" when
 * DIR has none (that method starts cold) */
static void compare_warm_path(const tune_args *a, lt_train_method m, char *out, size_t cap) {
    char tj[LT_RUN_PATH_MAX + 64];
    out[0] = 0;
    if (!a->warm_start[0]) return;
    snprintf(tj, sizeof tj, "%.1000s/%s/tune.json", a->warm_start, lt_train_method_name(m));
    if (lt_path_exists(tj))
        snprintf(out, cap, "%.1000s/%s", a->warm_start, lt_train_method_name(m));
}

/* compare's test split for the task metric, with the model's chat template where the data is
 * chat-shaped (found as the trainer finds it: run.c's load) */
static lt_status task_load(const tune_args *a, task_set *ts) {
    const char *tokp = a->base.tokenizer[0] ? a->base.tokenizer : a->base.model;
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    lt_status st = LT_OK;
    if (a->task && !strcmp(a->task, "none")) goto load;
    if ((st = lt_tokenizer_load(tokp, &tok))) return st;
    st = lt_model_chat_template(lt_path_is_dir(tokp) ? tokp : a->base.model, tok, &tpl);
    if (st == LT_ERR_NOTFOUND) tpl = NULL, st = LT_OK;
load:
    if (!st)
        st = task_set_load(a->base.data, a->task ? a->task : "auto",
                           a->task_examples ? a->task_examples : 200, a->task_max_tokens,
                           a->base.data_format, tpl, ts);
    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    return st;
}

int cmd_compare(int argc, char **argv) {
    tune_args a;
    memset(&a, 0, sizeof a);
    a.cmd = "compare";
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout, "compare");
        return 0;
    }
    char methods[256] = "";
    int per = 1;
    int rc = parse_args(argc, argv, &a, NULL, methods, sizeof methods, &per);
    if (rc) return rc;
    if (a.report_only) { /* new constraints, or a new report, over a finished comparison */
        char path[LT_RUN_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/compare.json", a.study);
        json_t *out = NULL;
        if (load_json(path, &out)) {
            fprintf(stderr, "loratune compare: --report-only: %s\n", lt_errmsg());
            return 1;
        }
        if (!json_is_array(json_object_get(out, "methods"))) {
            fprintf(stderr, "loratune compare: --report-only: %s: methods: expected an array\n",
                    path);
            json_decref(out);
            return 1;
        }
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(out, "methods"), i, r) {
            const json_t *l = json_object_get(r, "best_val_loss");
            const char *bad =
                !json_is_string(json_object_get(r, "method")) ? "method: expected a string"
                : !json_is_null(l) && !json_is_number(l)
                    ? "best_val_loss: expected a number or null"
                : json_is_number(l) && !json_is_integer(json_object_get(r, "peak_bytes"))
                    ? "peak_bytes: expected an integer"
                : json_is_number(l) && !json_is_number(json_object_get(r, "time_s"))
                    ? "time_s: expected a number"
                    : NULL;
            if (bad) {
                fprintf(stderr, "loratune compare: --report-only: %s: methods[%zu]: %s\n", path, i,
                        bad);
                json_decref(out);
                return 1;
            }
        }
        rc = compare_output(&a, a.study, out);
        json_decref(out);
        return rc;
    }
    if (!methods[0]) {
        fprintf(stderr, "loratune compare: --methods lora,dora,qlora,full is required\n");
        return 2;
    }
    lt_train_method ms[8];
    int nm = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", methods);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (nm >= 8 || method_from(t, &ms[nm])) {
            fprintf(stderr,
                    "loratune compare: --methods: unknown method '%s' (expected a "
                    "comma-separated list of lora, dora, qlora, full)\n",
                    t);
            return 2;
        }
        for (int j = 0; j < nm; j++)
            if (ms[j] == ms[nm]) {
                fprintf(stderr, "loratune compare: --methods: '%s' given twice\n", t);
                return 2;
            }
        nm++;
    }
    if (lt_run_opts_validate(&a.base, 0)) {
        fprintf(stderr, "loratune compare: --%s\n", lt_errmsg());
        return 2;
    }
    /* --warm-start: every method's earlier study checked before anything runs */
    if (a.warm_start[0]) {
        int found = 0;
        for (int k = 0; k < nm; k++) {
            tune_args b = a;
            b.base.method = ms[k];
            compare_warm_path(&a, ms[k], b.warm_start, sizeof b.warm_start);
            if (!b.warm_start[0]) continue;
            found++;
            if (warm_start(&b, NULL)) return 2;
        }
        if (!found) {
            fprintf(stderr,
                    "loratune compare: --warm-start: %s holds no study of %s (an earlier "
                    "`loratune compare --study DIR` has one per method: DIR/METHOD/tune.json)\n",
                    a.warm_start, methods);
            return 2;
        }
    }
    /* the task metric's test split, read (and a --task that does not fit refused) up front */
    task_set ts;
    if (task_load(&a, &ts)) {
        fprintf(stderr, "loratune compare: %s\n", lt_errmsg());
        return 2;
    }
    if (!a.json) printf("task metric: %s%s\n", ts.kind ? "" : "none, loss only: ", ts.why);
    if (a.base.threads > 0) lt_set_num_threads(a.base.threads);
    setup_signals();
    lt_run_shared *sh = NULL;
    char root[LT_RUN_PATH_MAX];
    snprintf(root, sizeof root, "%s", a.study);
    double budget = a.time_budget > 0 ? a.time_budget / nm : 0;
    json_t *rows = json_array();
    tune_summary sums[8];
    char *user_space = a.space_json;
    for (int k = 0; k < nm && !rc; k++) {
        tune_args b = a;
        b.base.method = ms[k];
        b.time_budget = budget;
        b.space_json = user_space;
        b.report_dir[0] = 0; /* each method's study report in its own folder */
        snprintf(b.study, sizeof b.study, "%.1000s/%s", root, lt_train_method_name(ms[k]));
        compare_warm_path(&a, ms[k], b.warm_start, sizeof b.warm_start);
        char sp[LT_RUN_PATH_MAX + 32];
        snprintf(sp, sizeof sp, "%s/%s", b.study, LT_STUDY_FILE);
        if (lt_path_exists(sp)) {
            fprintf(stderr, "loratune compare: %s already holds a study; give another --study\n",
                    b.study);
            rc = 2;
            break;
        }
        if (!a.json) printf("\n== %s ==\n", lt_train_method_name(ms[k]));
        if (a.warm_start[0] && !b.warm_start[0] && !a.json)
            printf("warm start: %s has no %s study; %s starts cold\n", a.warm_start,
                   lt_train_method_name(ms[k]), lt_train_method_name(ms[k]));
        rc = run_study(&b, 0, &sh, &sums[k]);
        tune_summary *s = &sums[k];
        json_t *row =
            json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:f}", "method", lt_train_method_name(ms[k]),
                      "study", b.study, "complete", s->n_complete, "pruned", s->n_pruned, "failed",
                      s->n_failed, "infeasible", s->n_infeasible, "tune_time_s", s->elapsed_s);
        if (s->best_trial >= 0) {
            json_object_set_new(row, "best_trial", json_integer(s->best_trial));
            json_object_set_new(row, "best_val_loss", json_real(s->best_value));
            json_object_set_new(row, "best_val_ppl", json_real(exp(s->best_value)));
            json_object_set_new(row, "time_s", json_real(s->best_time_s));
            json_object_set_new(row, "peak_bytes", json_integer(s->best_peak_bytes));
            json_object_set_new(row, "tokens_per_sec", json_real(s->best_tokens_per_sec));
            json_object_set_new(row, "trainable_params", json_integer(s->best_trainable));
            json_object_set_new(row, "saved_bytes", json_integer(s->best_saved));
        } else {
            json_object_set_new(row, "best_val_loss", json_null());
        }
        json_object_set_new(row, "parent_run", json_integer(s->parent_run));
        json_object_set_new(row, "warm_start",
                            b.warm_start[0] ? json_string(b.warm_start) : json_null());
        json_array_append_new(rows, row);
    }
    lt_run_shared_free(sh);
    /* the task metric: each method's best trial generates on the test split */
    for (int k = 0; k < (int)json_array_size(rows) && !rc && !g_stop && ts.kind; k++) {
        json_t *row = json_array_get(rows, k);
        if (sums[k].best_trial < 0) continue;
        const char *mn = lt_train_method_name(ms[k]);
        char tdir[LT_RUN_PATH_MAX + 64], gen[LT_RUN_PATH_MAX + 64];
        snprintf(tdir, sizeof tdir, "%.1000s/%s/trials/%04d", root, mn, sums[k].best_trial);
        snprintf(gen, sizeof gen, "%.1000s/%s/generations.jsonl", root, mn);
        int full = ms[k] == LT_METHOD_FULL;
        json_t *res = NULL;
        if (task_eval(&ts, full ? tdir : a.base.model,
                      a.base.tokenizer[0] ? a.base.tokenizer : a.base.model, full ? NULL : tdir,
                      gen, &res)) {
            fprintf(stderr, "loratune compare: task metric of %s: %s\n", mn, lt_errmsg());
            rc = 1;
            break;
        }
        if (!a.json)
            printf("task metric: %s: %.4f (%lld of %lld correct, %.1f s)\n", mn,
                   json_number_value(json_object_get(res, "value")),
                   (long long)json_integer_value(json_object_get(res, "correct")),
                   (long long)json_integer_value(json_object_get(res, "n")),
                   json_number_value(json_object_get(res, "seconds")));
        json_object_set_new(row, "task_metric", res);
    }
    char metric[1700];
    if (ts.kind)
        snprintf(metric, sizeof metric, "best validation loss (ranks the methods); task metric: %s",
                 ts.why);
    else
        snprintf(metric, sizeof metric, "best validation loss (no task metric: %s; loss only)",
                 ts.why);
    json_t *out =
        json_pack("{s:s, s:s, s:s, s:o, s:s, s:o}", "model", a.base.model, "data", a.base.data,
                  "metric", metric, "methods", rows, "peak_memory",
                  "the memory plan's predicted peak of the best trial's configuration", "task",
                  ts.kind ? json_pack("{s:s, s:s, s:i}", "kind", task_name(ts.kind), "description",
                                      ts.why, "examples", ts.n)
                          : json_pack("{s:s, s:s}", "kind", "none", "reason", ts.why));
    task_set_free(&ts);
    int orc = compare_output(&a, root, out);
    if (!rc) rc = orc;
    json_decref(out);
    free(user_space);
    return rc;
}
