/* test_faults_serve.c - fault injection over the server's start and stop (tests/lt_fault.h):
 * lt_serve_start on a work folder holding a dataset, a finished job and a job left "running"
 * by a dead server (which start marks interrupted: job.json rewritten, an event appended),
 * then lt_serve_stop. For N = 1, 2, ... the N-th allocation, and then the N-th output I/O call
 * (EIO), fails; every run must come back with a clean error (LT_ERR_NOMEM / LT_ERR_IO naming
 * the file) or succeed, leave the work folder unlocked (the next run can start), and leave the
 * interrupted job's record whole: "running" (to be retried by the next start) or
 * "interrupted", never a partial file. Also: a non-loopback host without a token is refused
 * before anything is created, and a second server on the same folder gets LT_ERR_BUSY. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "loratune/serve.h"
#include "lt_fault.h"
#include "lt_test.h"

#define JOB_RUN "job_00000000000000aa"
#define JOB_DONE "job_00000000000000bb"

typedef struct {
    char work[600];
    lt_serve_opts o;
} serve_case;

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Before every run: the job a dead server left running, with one event. */
static lt_status reset_running(void *ctx) {
    serve_case *c = ctx;
    char p[800];
    snprintf(p, sizeof p, "%s/jobs/" JOB_RUN "/job.json", c->work);
    write_text(p, "{\"id\": \"" JOB_RUN "\", \"kind\": \"train\", \"status\": \"running\", "
                  "\"dataset\": \"ds_00000000000000cc\", \"model\": \"m.gguf\", \"options\": {}, "
                  "\"seq\": 1, \"created\": 1.0}");
    snprintf(p, sizeof p, "%s/jobs/" JOB_RUN "/events.jsonl", c->work);
    write_text(p, "{\"event\":\"job\",\"status\":\"running\"}\n");
    return LT_OK;
}

static lt_status start_stop(void *ctx) {
    serve_case *c = ctx;
    lt_server *s = NULL;
    lt_status st = lt_serve_start(&c->o, &s);
    if (!st) CHECK(lt_serve_port(s) > 0, "port %d", lt_serve_port(s));
    lt_serve_stop(s);
    return st;
}

static int check_left(void *ctx, lt_status st, long n) {
    serve_case *c = ctx;
    char p[800];
    snprintf(p, sizeof p, "%s/jobs/" JOB_RUN "/job.json", c->work);
    json_t *j = json_load_file(p, 0, NULL);
    const char *status = json_string_value(json_object_get(j, "status"));
    int ok = status && (!strcmp(status, "running") || !strcmp(status, "interrupted"));
    if (!ok) fprintf(stderr, "N=%ld: job.json is not whole: status %s\n", n, status ? status : "-");
    if (!st && ok && strcmp(status, "interrupted")) {
        fprintf(stderr, "N=%ld: start succeeded but the job is still running\n", n);
        ok = 0;
    }
    json_decref(j);
    snprintf(p, sizeof p, "%s/.loratune.lock", c->work);
    if (lt_path_exists(p)) {
        fprintf(stderr, "N=%ld: the work folder is still locked\n", n);
        ok = 0;
    }
    return ok;
}

int main(void) {
    const char *tmp = lt_fault_tmpdir();
    serve_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.work, sizeof c.work, "%s/work", tmp);
    char p[800];
    mkdir(c.work, 0700);
    snprintf(p, sizeof p, "%s/jobs", c.work);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/jobs/" JOB_RUN, c.work);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/jobs/" JOB_DONE, c.work);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/jobs/" JOB_DONE "/job.json", c.work);
    write_text(p, "{\"id\": \"" JOB_DONE "\", \"kind\": \"train\", \"status\": \"done\", "
                  "\"dataset\": \"ds_00000000000000cc\", \"model\": \"m.gguf\", \"options\": {}, "
                  "\"seq\": 0, \"created\": 1.0}");
    snprintf(p, sizeof p, "%s/datasets/ds_00000000000000cc", c.work);
    lt_mkdir_p(p, 0700, NULL);
    snprintf(p, sizeof p, "%s/datasets/ds_00000000000000cc/meta.json", c.work);
    write_text(p, "{\"id\": \"ds_00000000000000cc\", \"file\": \"data.jsonl\", \"size\": 12}");
    c.o.host = "127.0.0.1";
    c.o.port = 0;
    c.o.workdir = c.work;

    /* refusals */
    lt_serve_opts bad = c.o;
    char nowhere[700];
    snprintf(nowhere, sizeof nowhere, "%s/never", tmp);
    bad.host = "0.0.0.0";
    bad.workdir = nowhere;
    lt_server *s = NULL;
    CHECK_ERR(lt_serve_start(&bad, &s), LT_ERR_ARG, "token");
    CHECK(!lt_path_exists(nowhere), "a refused start created the work folder");
    bad.host = "example.org";
    bad.token = "t";
    CHECK_ERR(lt_serve_start(&bad, &s), LT_ERR_ARG, "numeric");
    CHECK(lt_serve_host_is_loopback("127.3.4.5") && lt_serve_host_is_loopback("::1") &&
              lt_serve_host_is_loopback("localhost") && !lt_serve_host_is_loopback("10.0.0.1") &&
              !lt_serve_host_is_loopback("::") && !lt_serve_host_is_loopback("0.0.0.0"),
          "loopback classification");

    /* one server per work folder */
    reset_running(&c);
    lt_server *s1 = NULL, *s2 = NULL;
    CHECK_OK(lt_serve_start(&c.o, &s1));
    CHECK_ERR(lt_serve_start(&c.o, &s2), LT_ERR_BUSY, "in use");
    lt_serve_stop(s1);
    CHECK(check_left(&c, LT_OK, 0), "after a plain start and stop");

    lt_fault_ops ops = {reset_running, start_stop, check_left, NULL};
    lt_fault_plan alloc = {.kind = LT_FAULT_ALLOC, .full = 400, .max_runs = 400};
    lt_fault_walk("serve start + stop", &alloc, &ops, &c);
    lt_fault_plan io = {
        .kind = LT_FAULT_IO, .ops = LT_IO_ALL, .err = EIO, .full = 200, .max_runs = 200};
    lt_fault_walk("serve start + stop: I/O EIO", &io, &ops, &c);
    lt_fault_rmtree(tmp);
    LT_TEST_END();
}
