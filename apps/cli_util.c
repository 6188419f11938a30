/* cli_util.c - small option-parsing helpers shared by the subcommands, and the environment
 * variables the library does not read (store folder, MLflow server). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "loratune/backend.h"
#include "loratune/model.h"

int lt_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int lt_cli_open_gpu(const char *cmd, int required, lt_backend **gpu) {
    *gpu = NULL;
    lt_status st = !required && !lt_backend_cuda_compiled() ? LT_ERR_UNSUPPORTED
                                                              : lt_backend_cuda_create(0, gpu);
    if (st && required) {
        fprintf(stderr, "loratune %s: --device cuda: %s\n", cmd, lt_errmsg());
        return 1;
    }
    return 0;
}

int lt_cli_parse_int(const char *cmd, const char *opt, const char *val, long *out) {
    char *end;
    errno = 0;
    long v = val ? strtol(val, &end, 10) : 0;
    if (!val || errno || end == val || *end) {
        fprintf(stderr, "loratune %s: %s: expected an integer, got '%s'\n", cmd, opt,
                val ? val : "(nothing)");
        return -1;
    }
    *out = v;
    return 0;
}

int lt_cli_parse_float(const char *cmd, const char *opt, const char *val, double *out) {
    char *end;
    errno = 0;
    double v = val ? strtod(val, &end) : 0;
    if (!val || errno || end == val || *end) {
        fprintf(stderr, "loratune %s: %s: expected a number, got '%s'\n", cmd, opt,
                val ? val : "(nothing)");
        return -1;
    }
    *out = v;
    return 0;
}

const char *lt_cli_store_dir(const char *given) {
    if (given && *given) return given;
    const char *e = getenv("LORATUNE_STORE");
    return e && *e ? e : NULL;
}

void lt_cli_model_warn(const struct lt_model *m, const char *cmd) {
    if (!m) return;
    const char *p = m->warnings;
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        fprintf(stderr, "loratune %s: warning: %.*s\n", cmd, n, p);
        p += n + (nl ? 1 : 0);
    }
}

void lt_cli_store_warn(const struct lt_store *s, const char *cmd) {
    const char *why = lt_store_damaged(s);
    if (why)
        fprintf(stderr,
                "loratune %s: warning: %s is damaged (PRAGMA quick_check: %s): shown as it "
                "reads, and writes are refused until it is recovered (sqlite3 STORE.db "
                "\".recover\" | sqlite3 NEW.db)\n",
                cmd, lt_store_db_path(s), why);
}

lt_mlflow_server lt_cli_mlflow_server(const char *uri) {
    lt_mlflow_server s = {.uri = uri ? uri : getenv("MLFLOW_TRACKING_URI"),
                          .token = getenv("MLFLOW_TRACKING_TOKEN"),
                          .username = getenv("MLFLOW_TRACKING_USERNAME"),
                          .password = getenv("MLFLOW_TRACKING_PASSWORD")};
    return s;
}

/* ---- event streams on stdout ---------------------------------------------------------- */

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* All of buf to fd 1; *done gets the bytes written. s NULL or without stop handling: every wait
 * is for ever. Else, once s->stopping is set, the waits (EAGAIN) add up to at most
 * s->stop_wait_ms, then ETIMEDOUT. */
static int write_stdout(lt_cli_stream *s, const void *buf, size_t len, size_t *done) {
    fflush(stdout); /* events come through here only; keeps any stdio line before them */
    const char *p = buf;
    double give_up = -1;
    *done = 0;
    while (len > 0) {
        ssize_t w = write(STDOUT_FILENO, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            *done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* a non-blocking stdout (its open file description is shared with the reader's
             * side of the session: not ours to change, or made so by lt_cli_stream_stop):
             * wait until the reader drains it */
            int timeout = -1;
            if (s && s->stop_wait_ms >= 0 && s->stopping) {
                double now = mono_ms();
                if (give_up < 0) give_up = now + s->stop_wait_ms;
                if (now >= give_up) return ETIMEDOUT;
                timeout = (int)(give_up - now) + 1;
            }
            struct pollfd pf = {.fd = STDOUT_FILENO, .events = POLLOUT};
            if (poll(&pf, 1, timeout) < 0 && errno != EINTR) return errno;
            continue; /* POLLERR (the reader left meanwhile): the next write says EPIPE */
        }
        return w < 0 ? errno : EIO;
    }
    return 0;
}

int lt_cli_write_stdout(const void *buf, size_t len) {
    size_t done;
    return write_stdout(NULL, buf, len, &done);
}

void lt_cli_stream_init(lt_cli_stream *s, const char *cmd) {
    memset(s, 0, sizeof *s);
    s->cmd = cmd;
    s->stop_wait_ms = -1;
    s->saved_fl = -1;
    signal(SIGPIPE, SIG_IGN); /* a gone reader is EPIPE, reported, not a silent death */
}

int lt_cli_stream_write(lt_cli_stream *s, const char *buf, size_t len) {
    if (s->err) return s->err;
    size_t done = 0;
    int e = s->stalled ? ETIMEDOUT : write_stdout(s, buf, len, &done);
    if (e == ETIMEDOUT && s->stopping) { /* the reader stalled during a stop: dropped, counted */
        if (!s->stalled && done) s->torn = 1;
        s->stalled = 1;
        for (size_t i = 0; i < len; i++)
            if (buf[i] == '\n') s->dropped++;
        return 0;
    }
    if (e) {
        s->err = e;
        fprintf(stderr, "loratune %s: the output stream on stdout broke after %lld lines (%s)%s\n",
                s->cmd, s->lines, strerror(e),
                e == EPIPE ? ": its reader is gone; what follows is not printed" : "");
        return e;
    }
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\n') s->lines++;
    return 0;
}

int lt_cli_stream_json(lt_cli_stream *s, const void *j) {
    if (s->err) return s->err;
    char *t = json_dumps((const json_t *)j, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!t) return 0; /* nothing to print (not an object or array): not a stream failure */
    size_t n = strlen(t);
    char *line = realloc(t, n + 2);
    if (!line) {
        free(t);
        return 0;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    int e = lt_cli_stream_write(s, line, n + 1);
    free(line);
    return e;
}

void lt_cli_stream_stop(lt_cli_stream *s) {
    if (s->stop_wait_ms < 0 || s->stopping) return;
    s->stopping = 1;
    int fl = fcntl(STDOUT_FILENO, F_GETFL); /* fcntl: async-signal-safe */
    if (fl >= 0 && !(fl & O_NONBLOCK) && fcntl(STDOUT_FILENO, F_SETFL, fl | O_NONBLOCK) == 0)
        s->saved_fl = fl;
}

void lt_cli_stream_restore(lt_cli_stream *s) {
    if (s->saved_fl >= 0) fcntl(STDOUT_FILENO, F_SETFL, (int)s->saved_fl);
    s->saved_fl = -1;
}
