/* commands.h - the loratune subcommands; each lives in apps/cmd_<name>.c.
 * A command gets argv starting at its own name, prints its results to stdout, errors to
 * stderr, and returns the process exit code. */
#ifndef LT_APPS_COMMANDS_H
#define LT_APPS_COMMANDS_H

#include <signal.h>
#include <stddef.h>

#include "loratune/mlflow.h"

int cmd_info(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_models_deploy(int argc, char **argv); /* `models deploy` / `models rollback` */
int cmd_serve(int argc, char **argv);
int cmd_study(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_compare(int argc, char **argv);
/* `loratune data add` (apps/cmd_data_add.c), a subcommand of cmd_data. */
int data_add(int argc, char **argv);

/* Shared option helpers (apps/cli_util.c). */
struct lt_backend;
/* The GPU of `--device cuda` (required 1: when it cannot be opened, "loratune CMD: --device
 * cuda: why" on stderr and 1 returned) or `--device auto` (required 0: *gpu NULL when there is
 * none, the CPU then). 0 otherwise; free *gpu with lt_backend_cuda_free. */
int lt_cli_open_gpu(const char *cmd, int required, struct lt_backend **gpu);
int lt_cli_wants_help(int argc, char **argv);
/* Parses a number option value; prints "loratune CMD: --opt: expected ..." and returns -1 on error. */
int lt_cli_parse_int(const char *cmd, const char *opt, const char *val, long *out);
int lt_cli_parse_float(const char *cmd, const char *opt, const char *val, double *out);

/* The environment, read here and passed to the library as arguments (the library reads none):
 * the tracking store folder: given (--store), else $LORATUNE_STORE, else NULL (the library's
 * default, .loratune); the MLflow server: uri given (--mlflow), else $MLFLOW_TRACKING_URI (uri
 * NULL when neither), credentials from $MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD. */
const char *lt_cli_store_dir(const char *given);
/* Prints a warning on stderr when the opened store is damaged (read-only); cmd names the
 * command ("runs list"). */
struct lt_store;
void lt_cli_store_warn(const struct lt_store *s, const char *cmd);
/* Prints each line of m->warnings (what loading ignored) on stderr as "loratune CMD: warning:". */
struct lt_model;
void lt_cli_model_warn(const struct lt_model *m, const char *cmd);
lt_mlflow_server lt_cli_mlflow_server(const char *uri);

/* Event streams on stdout (train --json and the progress lines, eval --json, tune --json).
 * lt_cli_write_stdout writes all of buf to fd 1 after what stdio holds: EINTR is retried and
 * EAGAIN (a non-blocking stdout: a reader that set O_NONBLOCK on the pipe or terminal it
 * shares) is waited out with poll(), so no event is lost or reordered; it returns 0 or the
 * errno of the write that failed (EPIPE: the reader is gone; ENOSPC, EIO ...).
 * An lt_cli_stream remembers the first failure: it is reported once on stderr ("loratune CMD:
 * the output stream on stdout broke after N lines (Broken pipe) ..."), later writes are
 * dropped and return the same errno, and the command decides what the break means (train:
 * stops like Ctrl-C, exit 141). lt_cli_stream_init ignores SIGPIPE for the process, so that a
 * gone reader is an error the command sees rather than a silent death mid-run. */
int lt_cli_write_stdout(const void *buf, size_t len);
/* A stream may be told to stop waiting for its reader once a stop is under way
 * (lt_cli_stream_stop, from a signal handler): `train` under mpirun, whose mpirun stops reading
 * its ranks' output while it stops them (OpenMPI sends SIGCONT, sleeps, SIGTERM, sleeps, SIGKILL,
 * its I/O forwarding idle meanwhile: docs/SCALE_OUT.md). With stop_wait_ms >= 0, the stop makes
 * stdout non-blocking (so a write already blocked, or about to block, returns) and waits at most
 * stop_wait_ms in all for the reader; then the stream is `stalled`: that line and every later
 * one are dropped and counted in `dropped` (not an error: writes return 0), `torn` when the
 * dropped line had been partly written. lt_cli_stream_restore puts stdout's flags back. */
typedef struct {
    const char *cmd;  /* for the message: "train" */
    long long lines;  /* lines written whole */
    int err;          /* 0, or the errno of the first failed write */
    int stop_wait_ms; /* < 0 (lt_cli_stream_init): no stop handling, the reader is waited for */
    volatile sig_atomic_t stopping; /* set by lt_cli_stream_stop */
    volatile sig_atomic_t saved_fl; /* stdout's flags before the stop, or -1 */
    int stalled, torn; /* the reader did not drain stdout within stop_wait_ms of the stop */
    long long dropped; /* lines not printed since then */
} lt_cli_stream;
void lt_cli_stream_init(lt_cli_stream *s, const char *cmd);
int lt_cli_stream_write(lt_cli_stream *s, const char *buf, size_t len);
/* Async-signal-safe: a stop is under way (see above; nothing when stop_wait_ms < 0). */
void lt_cli_stream_stop(lt_cli_stream *s);
/* stdout's file flags as they were before lt_cli_stream_stop. */
void lt_cli_stream_restore(lt_cli_stream *s);
/* j (a json_t *, borrowed) as one compact line (doubles with 17 digits) through s. */
int lt_cli_stream_json(lt_cli_stream *s, const void *j);
/* 141: the exit code of a command whose output stream broke (128 + SIGPIPE, what a shell
 * reports for a producer killed by SIGPIPE; `set -o pipefail` scripts know it). */
#define LT_CLI_EXIT_STREAM_BROKE 141

#endif
