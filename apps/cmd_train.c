/* cmd_train.c - `loratune train`: the command-line front end of lt_run ("loratune/run.h").
 * Options come, lowest priority first, from the defaults, the checkpoint named by --resume
 * (its saved options), the -c/--config YAML file, then the command line. Events go to a
 * terminal progress printer, or as JSON lines to stdout with --json. SIGINT / SIGTERM / SIGUSR1
 * ask the run to stop (SIGUSR1: what mpirun forwards without stopping the job itself, and what
 * Slurm's --signal=USR1@SECONDS sends before a time limit): it saves a checkpoint and the command
 * exits with 130; a second signal exits at once. Exit codes: 0 done (or early stop), 1 error or
 * NaN/inf stop, 2 bad usage, 130 interrupted, 141 stdout (the event stream) broke: the run stopped
 * as after Ctrl-C, or had already finished (stderr says which). */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "dist.h"
#include "loratune/nccl.h"
#include "train_track.h"
#include "loratune/model.h"
#include "loratune/run.h"

static void usage(FILE *f) {
    fprintf(f, "usage: loratune train --model MODEL --data DATA --out DIR [options]\n"
               "       loratune train -c config.yaml [options]\n"
               "       loratune train --resume DIR [options]\n\n"
               "Fine-tunes MODEL on DATA (LoRA, DoRA or full), evaluating, checkpointing and\n"
               "writing the adapter (PEFT, mlx-lm, llama.cpp GGUF) or the model to DIR.\n\n"
               "  -c, --config FILE      YAML file of option: value (keys = the long options)\n");
    for (int i = 0; i < lt_run_opt_count(); i++) {
        const lt_run_opt_info *in = lt_run_opt_get(i);
        char head[64];
        snprintf(head, sizeof head, "--%s%s%s", in->name, in->arg ? " " : "",
                 in->arg ? in->arg : "");
        if (in->def && in->def[0] && in->type != LT_OPT_BOOL)
            fprintf(f, "  %-22s %s (default %s)\n", head, in->help, in->def);
        else
            fprintf(f, "  %-22s %s\n", head, in->help);
    }
    fprintf(f, "\nMulti-GPU over NCCL (one process per GPU, --device cuda; docs/SCALE_OUT.md):\n"
               "  --dist-init SPEC       how ranks started without mpirun share NCCL's id:\n"
               "                         file:PATH or tcp:HOST:PORT (rank 0's host); rank and\n"
               "                         size from RANK / WORLD_SIZE, or SLURM_PROCID /\n"
               "                         SLURM_NTASKS\n"
               "  --dist-reduce DTYPE    bf16 or fp32: the gradients' all-reduce (default bf16)\n"
               "  --dist-timeout S       seconds to wait for the other ranks (default 300)\n"
               "  --zero N               1: ZeRO-1, AdamW's state sharded over the GPUs (each\n"
               "                         keeps 1/N of it); 0: off (default)\n");
    fprintf(f, "\nFlags also take --no-FLAG (to turn off what a config file turned on).\n"
               "See docs/TRAIN_CLI.md.\n");
    fprintf(f, "\n%s", train_track_help);
}

/* ---- signals ---------------------------------------------------------------------------- */
static lt_run *volatile g_run;
static volatile sig_atomic_t g_signals;

/* stdout: the JSON events (--json) or the progress lines; a broken stream stops the run */
static lt_cli_stream g_out;

static void on_signal(int sig) {
    (void)sig;
    if (g_signals++ > 0) _exit(130);
    lt_cli_stream_stop(&g_out); /* under mpirun: stdout may no longer be read (below) */
    if (g_run) lt_run_request_stop(g_run);
}

/* ---- event printers ---------------------------------------------------------------------- */
/* Writes one event's text (whole lines). The first failure (EPIPE: the reader is gone; ENOSPC
 * ...) is reported once on stderr and stops the run as Ctrl-C does (a checkpoint, then exit
 * 141, resumable): the run's events are how a supervisor or a pipeline follows it, so a run
 * whose reader left behaves like mlx-lm's or llama.cpp's (stopped by BrokenPipeError / SIGPIPE)
 * but loses nothing. EAGAIN is waited out (lt_cli_write_stdout): no event is dropped. */
static void stop_on_break(void) {
    fprintf(stderr, "loratune train: stopping the run as Ctrl-C would (a checkpoint; --resume "
                    "continues it)\n");
    lt_run_request_stop(g_run);
}

static void emit(const char *text, size_t len) {
    if (g_out.err || !len) return;
    if (lt_cli_stream_write(&g_out, text, len) && g_run) stop_on_break();
}

static void json_sink(void *ctx, const json_t *ev) {
    (void)ctx;
    if (!g_out.err && lt_cli_stream_json(&g_out, ev) && g_run) stop_on_break();
}

typedef struct {
    double last_print;
    long long total;
} human_ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_dur(double s, char *b, size_t n) {
    if (!(s >= 0) || s > 1e7)
        snprintf(b, n, "?");
    else if (s < 60)
        snprintf(b, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(b, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(b, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static double num(const json_t *ev, const char *k) {
    return json_number_value(json_object_get(ev, k));
}
static long long inum(const json_t *ev, const char *k) {
    return (long long)json_integer_value(json_object_get(ev, k));
}
static const char *str(const json_t *ev, const char *k) {
    const char *s = json_string_value(json_object_get(ev, k));
    return s ? s : "";
}

static void human_sink(void *ctx, const json_t *ev) {
    human_ctx *h = ctx;
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len); /* the event's lines, written whole by emit */
    if (!o) return;
    const char *e = str(ev, "event");
    char b1[32], b2[32];
    if (!strcmp(e, "start")) {
        h->total = inum(ev, "steps");
        fprintf(o,
                "training: %lld steps (warmup %lld), %lld batches per epoch, %lld train / %lld "
                "valid examples, %lld trainable parameters\n",
                h->total, inum(ev, "warmup_steps"), inum(ev, "epoch_batches"),
                inum(ev, "train_examples"), inum(ev, "valid_examples"),
                inum(ev, "trainable_params"));
        if (json_object_get(ev, "planned_peak_bytes")) {
            const json_t *cfg = json_object_get(ev, "config");
            const char *bs = json_string_value(json_object_get(cfg, "batch-size"));
            const char *sl = json_string_value(json_object_get(cfg, "max-seq-len"));
            fprintf(o,
                    "sizes: batch %s%s, max-seq-len %s%s; planned peak %.2f GiB of a %.2f GiB "
                    "%smemory budget\n",
                    bs ? bs : "?",
                    json_is_true(json_object_get(ev, "auto_batch_size")) ? " (auto)" : "",
                    sl ? sl : "?",
                    json_is_true(json_object_get(ev, "auto_max_seq_len")) ? " (auto)" : "",
                    num(ev, "planned_peak_bytes") / 1073741824.0,
                    num(ev, "memory_budget_bytes") / 1073741824.0,
                    json_is_true(json_object_get(ev, "memory_budget_device")) ? "GPU " : "");
        }
        if (inum(ev, "resumed_from") >= 0) {
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(ev, "skipped_checkpoints"), i, v) {
                fprintf(stderr, "loratune train: passed over a damaged checkpoint: %s\n",
                        str(v, "reason"));
            }
            fprintf(o, "resumed after step %lld from %s", inum(ev, "resumed_from"),
                    str(ev, "resumed_checkpoint"));
            json_t *ch = json_object_get(ev, "changed_options");
            if (json_array_size(ch)) {
                fprintf(o, " (options changed since the checkpoint:");
                size_t i;
                json_t *v;
                json_array_foreach(ch, i, v) fprintf(o, " %s", json_string_value(v));
                fprintf(o, "; losses will not match an uninterrupted run)");
            }
            fprintf(o, "\n");
        }
    } else if (!strcmp(e, "step")) {
        long long st = inum(ev, "step");
        double t = now_s();
        if (st == 1 || st == h->total || t - h->last_print >= 0.5) {
            h->last_print = t;
            fmt_dur(num(ev, "eta_s"), b1, sizeof b1);
            fprintf(o,
                    "step %6lld/%lld  epoch %5.2f  loss %.4f  lr %.3e  %7.0f tok/s  mem %5.0f MiB  "
                    "eta %s\n",
                    st, h->total, num(ev, "epoch"), num(ev, "loss"), num(ev, "lr"),
                    num(ev, "tokens_per_sec"), num(ev, "peak_rss_bytes") / 1048576.0, b1);
        }
    } else if (!strcmp(e, "eval")) {
        fmt_dur(num(ev, "elapsed_s"), b2, sizeof b2);
        fprintf(o, "eval @ step %lld: val_loss %.4f  val_ppl %.3f  (%lld tokens)%s  [%s]\n",
                inum(ev, "step"), num(ev, "val_loss"), num(ev, "val_ppl"), inum(ev, "val_tokens"),
                json_is_true(json_object_get(ev, "improved")) ? "  best" : "", b2);
    } else if (!strcmp(e, "skip")) {
        fprintf(o, "step %lld skipped: %s (%lld in a row); weights not updated\n", inum(ev, "step"),
                str(ev, "reason"), inum(ev, "consecutive"));
    } else if (!strcmp(e, "checkpoint")) {
        fprintf(o, "checkpoint: %s\n", str(ev, "path"));
    } else if (!strcmp(e, "warning")) {
        fprintf(stderr, "loratune train: warning: %s\n", str(ev, "message"));
    } else if (!strcmp(e, "early_stop")) {
        fprintf(o,
                "early stop at step %lld: %lld evaluations without improvement (best val_loss "
                "%.4f)\n",
                inum(ev, "step"), inum(ev, "evals_without_improvement"), num(ev, "best_val_loss"));
    } else if (!strcmp(e, "interrupted")) {
        fprintf(o, "interrupted after step %lld; checkpoint %s\n", inum(ev, "step"),
                str(ev, "checkpoint"));
    } else if (!strcmp(e, "saved")) {
        fprintf(o, "saved %s: %s\n", str(ev, "what"), str(ev, "path"));
    } else if (!strcmp(e, "skipped")) {
        fprintf(stderr, "loratune train: not written: %s (%s): %s\n", str(ev, "path"),
                str(ev, "what"), str(ev, "reason"));
    } else if (!strcmp(e, "done")) {
        fmt_dur(num(ev, "elapsed_s"), b1, sizeof b1);
        fprintf(o, "%s after step %lld in %s", str(ev, "outcome"), inum(ev, "step"), b1);
        if (json_object_get(ev, "final_val_loss"))
            fprintf(o, "; final val_loss %.4f", num(ev, "final_val_loss"));
        fprintf(o, "\n");
    }
    fclose(o);
    emit(text, len);
    free(text);
}

/* ---- argument handling ------------------------------------------------------------------ */
static int is_config_opt(const char *a) {
    return !strcmp(a, "-c") || !strcmp(a, "--config");
}

/* Applies argv options to o (skipping -c/--config and their value). 0 ok, 2 usage error. */
static int apply_args(int argc, char **argv, lt_run_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_config_opt(a)) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "loratune train: unexpected argument '%s' (options start with --)\n",
                    a);
            return 2;
        }
        char key[128];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", a);
        }
        int flag = lt_run_opt_is_flag(key);
        if (flag < 0 && !strncmp(key, "--no-", 5) && lt_run_opt_is_flag(key + 5) == 1 && !eq) {
            if (lt_run_opts_set(o, key + 5, "false")) goto bad;
            continue;
        }
        if (flag == 1 && !eq) {
            val = "true";
        } else if (flag == 0 && !eq) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loratune train: %s: missing value\n", key);
                return 2;
            }
            val = argv[++i];
        }
        if (lt_run_opts_set(o, key, val)) goto bad;
        continue;
    bad:
        fprintf(stderr, "loratune train: --%s\n", lt_errmsg());
        return 2;
    }
    return 0;
}

static int train(int argc, char **argv, lt_cli_dist *dist);

/* The multi-GPU options (dist.h), not run options (not in run_config.yaml: the same run may be
 * resumed on another number of GPUs): taken out of argv; 2 (printed) for a bad value. */
typedef struct {
    const char *init; /* --dist-init, NULL */
    int bf16;         /* --dist-reduce bf16 (default) | fp32 */
    double timeout_s; /* --dist-timeout */
    int zero;         /* --zero 0 (default) | 1: ZeRO-1 */
} dist_args;
static int take_dist_args(int *argc, char **argv, dist_args *da) {
    *da = (dist_args){NULL, 1, 300, 0};
    static const char *const names[] = {"--dist-init", "--dist-reduce", "--dist-timeout", "--zero"};
    int w = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *v = NULL;
        int k = 0;
        for (; k < 4; k++) {
            size_t l = strlen(names[k]);
            if (!strncmp(a, names[k], l) && a[l] == '=') {
                v = a + l + 1;
                break;
            }
            if (!strcmp(a, names[k])) {
                if (i + 1 >= *argc) {
                    fprintf(stderr, "loratune train: %s: missing value\n", a);
                    return 2;
                }
                v = argv[++i];
                break;
            }
        }
        if (k == 4) {
            argv[w++] = argv[i];
            continue;
        }
        if (k == 0) {
            da->init = v;
        } else if (k == 1) {
            if (strcmp(v, "bf16") && strcmp(v, "fp32")) {
                fprintf(stderr, "loratune train: --dist-reduce: expected bf16 or fp32, got '%s'\n",
                        v);
                return 2;
            }
            da->bf16 = !strcmp(v, "bf16");
        } else if (k == 3) {
            if (strcmp(v, "0") && strcmp(v, "1")) {
                fprintf(stderr,
                        "loratune train: --zero: expected 0 (off) or 1 (ZeRO-1: AdamW's state "
                        "sharded over the GPUs), got '%s'\n",
                        v);
                return 2;
            }
            da->zero = v[0] == '1';
        } else {
            char *end = NULL;
            da->timeout_s = strtod(v, &end);
            if (!*v || *end || !(da->timeout_s > 0)) {
                fprintf(stderr, "loratune train: --dist-timeout: expected seconds > 0, got '%s'\n",
                        v);
                return 2;
            }
        }
    }
    argv[w] = NULL;
    *argc = w;
    return 0;
}

/* Under mpirun / srun (apps/dist.h): one rank of a data-parallel run; rank 0 alone prints events,
 * records to the tracking store and writes OUT (docs/SCALE_OUT.md). */
int cmd_train(int argc, char **argv) {
    if (lt_cli_wants_help(argc, argv)) { /* no MPI for the help text */
        usage(stdout);
        return 0;
    }
    lt_cli_dist dist;
    if (lt_cli_dist_start(&dist)) return 1;
    return lt_cli_dist_finish(&dist, train(argc, argv, &dist));
}

static int train(int argc, char **argv, lt_cli_dist *dist) {
    int quiet = dist->active && dist->comm.rank != 0; /* ranks other than 0 */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    argc = train_track_take_args(argc, argv); /* --store/--experiment/--run-name/--mlflow/--no-track */
    dist_args da;
    if (take_dist_args(&argc, argv, &da)) return 2;
    lt_run_opts o;
    lt_run_opts_default(&o);
    const char *config = NULL, *resume = NULL;
    for (int i = 1; i < argc; i++) {
        if (is_config_opt(argv[i])) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loratune train: %s: missing value (a YAML file)\n", argv[i]);
                return 2;
            }
            config = argv[++i];
        } else if (!strcmp(argv[i], "--resume") && i + 1 < argc) {
            resume = argv[++i];
        } else if (!strncmp(argv[i], "--resume=", 9)) {
            resume = argv[i] + 9;
        }
    }
    if (resume) { /* the checkpoint's own options first: `train --resume DIR` alone works */
        char file[LT_RUN_PATH_MAX + 64];
        if (lt_checkpoint_resolve(resume, file, sizeof file) || lt_checkpoint_load_opts(file, &o)) {
            fprintf(stderr, "loratune train: --resume: %s\n", lt_errmsg());
            return 1;
        }
        /* outputs go where the checkpoint is now (its run folder), not to the folder recorded
         * in it: a run folder moved since must not write into whatever sits at the old path.
         * --out on the command line still decides. */
        if (lt_checkpoint_run_dir(file, o.out, sizeof o.out)) {
            fprintf(stderr, "loratune train: --resume: %s\n", lt_errmsg());
            return 1;
        }
    }
    if (config && lt_run_opts_load_yaml(&o, config)) {
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        return 2;
    }
    int rc = apply_args(argc, argv, &o);
    if (rc) return rc;
    /* test and measurement hooks: environment only, never recorded (docs/TRAIN_CLI.md) */
    const char *fault = getenv("LT_FAULT_NAN_STEPS");
    if (fault) snprintf(o.fault_nan_steps, sizeof o.fault_nan_steps, "%s", fault);
    o.keep_blas_threads = getenv("LT_TWO_POOLS") != NULL;
    if (lt_run_opts_validate(&o, 1)) {
        fprintf(stderr, "loratune train: --%s\n\n", lt_errmsg());
        usage(stderr);
        return 2;
    }

    /* several GPUs: NCCL, one process per GPU (apps/dist_nccl.c). Under mpirun with --device
     * cuda it is the way when NCCL is there; --dist-init starts ranks without MPI. */
    if (da.init && o.device != LT_DEVICE_CUDA) {
        fprintf(stderr, "loratune train: --dist-init: multi-GPU data parallelism needs --device "
                        "cuda (NCCL); CPU ranks run under mpirun (docs/SCALE_OUT.md)\n");
        return 2;
    }
    if (o.device == LT_DEVICE_CUDA && (da.init || dist->mpi)) {
        if (dist->mpi && lt_nccl_open(getenv("LT_NCCL_LIB"), NULL)) {
            /* MPI alone: the row-exact exchange over MPI, each rank on its own GPU */
            if (dist->comm.rank == 0)
                fprintf(stderr, "loratune train: %s; the gradients go through MPI row by row\n",
                        lt_errmsg());
            const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
            if (!lr) lr = getenv("SLURM_LOCALID");
            dist->comm.device = lr ? atoi(lr) : dist->comm.rank;
        } else if (lt_cli_dist_nccl(dist, da.init, da.timeout_s, da.bf16)) {
            return 1;
        }
    }
    if (da.zero && !(dist->active && dist->comm.allreduce)) {
        fprintf(stderr, "loratune train: --zero 1: ZeRO-1 shards AdamW's state over the ranks of "
                        "a multi-GPU run over NCCL: it needs --device cuda with --dist-init or "
                        "mpirun, and NCCL (docs/SCALE_OUT.md)\n");
        return 2;
    }
    dist->comm.zero = da.zero;
    quiet = dist->active && dist->comm.rank != 0;

    if (o.threads > 0) lt_set_num_threads(o.threads); /* OpenBLAS's count is process-wide */
    lt_run *r = NULL;
    lt_cli_stream_init(&g_out, "train");
    /* Under mpirun, a SIGINT / SIGTERM to mpirun makes it SIGCONT the ranks, sleep
     * odls_base_sigkill_timeout seconds, SIGTERM them, sleep again and SIGKILL them, its event
     * loop (and so the forwarding of the ranks' output) idle all along: rank 0 must not wait
     * for stdout then, or it never reaches the agreed step and the checkpoint. After the stop
     * signal it waits 100 ms at most, then drops the events it cannot print (counted). */
    if (dist->active) g_out.stop_wait_ms = 100;
    if (!o.json && !quiet) {
        char line[2 * LT_RUN_PATH_MAX + 32];
        int n = snprintf(line, sizeof line, "loading %s and %s ...\n", o.model, o.data);
        emit(line, n < 0 ? 0 : n >= (int)sizeof line ? sizeof line - 1 : (size_t)n);
    }
    if (lt_run_new(&o, &r)) {
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        return 1;
    }
    human_ctx hc = {0};
    if (!quiet) lt_run_add_sink(r, o.json ? json_sink : human_sink, &hc); /* --json: stages too */
    if (dist->active && lt_run_set_comm(r, &dist->comm)) {
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        lt_run_free(r);
        return 2;
    }

    g_run = r; /* a signal while loading cancels it; while training, checkpoints and stops */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* restart interrupted system calls: the handler only sets a flag, and a read, write or
     * MPI progress call that failed with EINTR on one rank would end that rank's run alone
     * (its partner then waits in the next collective for ever) */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    lt_status st = lt_run_prepare(r);
    if (st) {
        g_run = NULL;
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        lt_run_free(r);
        if (st == LT_ERR_CANCELLED && g_out.err) return LT_CLI_EXIT_STREAM_BROKE;
        return st == LT_ERR_CANCELLED ? 130 : 1;
    }
    /* the tracking store (apps/train_track.c): rank 0's */
    lt_recorder *rec = quiet ? NULL : train_track_start(&o);
    if (rec) lt_run_add_sink(r, lt_recorder_sink, rec);

    lt_run_outcome oc;
    st = lt_run_train(r, &oc);
    g_run = NULL;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    if (st) {
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        rc = 1;
    } else if (oc == LT_RUN_NONFINITE) {
        fprintf(stderr, "loratune train: %s\n", lt_errmsg());
        rc = 1;
    } else if (oc == LT_RUN_INTERRUPTED) {
        if (!quiet) fprintf(stderr, "loratune train: interrupted; continue with: loratune train --resume %s\n",
                o.out);
        rc = 130;
        if (dist->active) /* every rank: the step they agreed on (docs/SCALE_OUT.md) */
            fprintf(stderr, "loratune train: rank %d of %d: stopped at step %lld\n",
                    dist->comm.rank, dist->comm.size, (long long)lt_run_step(r));
    } else {
        rc = 0;
    }
    lt_cli_stream_restore(&g_out);
    if (g_out.stalled)
        fprintf(stderr,
                "loratune train: stdout was not read after the stop request (mpirun stops "
                "reading its ranks' output while it stops them): the last %lld lines were not "
                "printed%s; the run %s at step %lld\n",
                g_out.dropped, g_out.torn ? " (the first of them cut short)" : "",
                rc == 130 ? "was interrupted"
                : rc == 0 ? "finished"
                          : "failed",
                (long long)lt_run_step(r));
    train_track_finish(rec, rc, o.json || g_out.err);
    lt_run_free(r);
    if (g_out.err) { /* reported when it broke; now what became of the run */
        if (rc == 0)
            fprintf(stderr, "loratune train: the run had finished training: its outputs in %s are "
                            "whole, only its last events were not printed\n", o.out);
        return rc == 1 ? 1 : LT_CLI_EXIT_STREAM_BROKE;
    }
    return rc;
}
