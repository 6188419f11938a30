/* commands.h - the loratune subcommands; each lives in apps/cmd_<name>.c.
 * A command gets argv starting at its own name, prints its results to stdout, errors to
 * stderr, and returns the process exit code. */
#ifndef LT_APPS_COMMANDS_H
#define LT_APPS_COMMANDS_H

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
typedef struct {
    const char *cmd; /* for the message: "train" */
    long long lines; /* lines written whole */
    int err;         /* 0, or the errno of the first failed write */
} lt_cli_stream;
void lt_cli_stream_init(lt_cli_stream *s, const char *cmd);
int lt_cli_stream_write(lt_cli_stream *s, const char *buf, size_t len);
/* j (a json_t *, borrowed) as one compact line (doubles with 17 digits) through s. */
int lt_cli_stream_json(lt_cli_stream *s, const void *j);
/* 141: the exit code of a command whose output stream broke (128 + SIGPIPE, what a shell
 * reports for a producer killed by SIGPIPE; `set -o pipefail` scripts know it). */
#define LT_CLI_EXIT_STREAM_BROKE 141

#endif
