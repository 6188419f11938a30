/* test_rendezvous.c - lt_rendezvous_bcast (rendezvous.h) between real processes (fork), as
 * the ranks of a multi-GPU job started without MPI exchange NCCL's 128-byte unique id:
 *   - file:PATH and tcp:HOST:PORT with 3 ranks: every rank ends with rank 0's bytes; the file
 *     and its acks are gone afterwards; TCP with the other ranks started before rank 0 (they
 *     retry until it listens) and with rank 0 first;
 *   - timeouts: a rank alone (rank 0 or another) gives up after the timeout with an error
 *     naming what it waited for, for both kinds;
 *   - disagreement: ranks with different rank counts fail with both counts named (file: the
 *     peer; TCP: both ends); two processes claiming one rank are refused;
 *   - a file left by an earlier job is refused by rank 0 (not overwritten);
 *   - bad specs and arguments: LT_ERR_ARG naming the accepted forms. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loratune/rendezvous.h"
#include "lt_test.h"

#define ID 128
#define MAXP 4

static unsigned char g_id[ID]; /* what rank 0 shares */

typedef struct {
    int rank, size;   /* what this process claims */
    int delay_ms;     /* before calling */
    double timeout_s;
} proc;

typedef struct {
    int status; /* lt_status */
    int same;   /* 1: buf equals g_id afterwards */
    char msg[512];
} result;

/* Runs each proc in its own process at once; results in res. */
static void run_procs(const char *spec, const proc *p, int np, result *res) {
    int fds[MAXP][2];
    pid_t pid[MAXP];
    for (int i = 0; i < np; i++) {
        if (pipe(fds[i])) abort();
        pid[i] = fork();
        if (pid[i] == 0) {
            alarm(60); /* a hang fails the test rather than blocking it */
            close(fds[i][0]);
            if (p[i].delay_ms) usleep((useconds_t)p[i].delay_ms * 1000);
            unsigned char buf[ID];
            if (p[i].rank == 0)
                memcpy(buf, g_id, ID);
            else
                memset(buf, 0, ID);
            result r = {0};
            r.status = lt_rendezvous_bcast(spec, p[i].rank, p[i].size, buf, ID, p[i].timeout_s);
            r.same = !memcmp(buf, g_id, ID);
            snprintf(r.msg, sizeof r.msg, "%s", r.status ? lt_errmsg() : "");
            if (write(fds[i][1], &r, sizeof r) != (ssize_t)sizeof r) _exit(3);
            _exit(0);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < np; i++) {
        memset(&res[i], 0, sizeof res[i]);
        if (read(fds[i][0], &res[i], sizeof res[i]) != (ssize_t)sizeof res[i]) {
            res[i].status = 99;
            snprintf(res[i].msg, sizeof res[i].msg, "process died (a hang: alarm)");
        }
        close(fds[i][0]);
        int ws;
        waitpid(pid[i], &ws, 0);
    }
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
        getsockname(s, (struct sockaddr *)&a, &l))
        abort();
    close(s);
    return ntohs(a.sin_port);
}

static void expect_all_ok(const char *what, const result *r, int np) {
    for (int i = 0; i < np; i++) {
        CHECK(r[i].status == 0, "%s: process %d: %s", what, i, r[i].msg);
        CHECK(r[i].same, "%s: process %d did not get rank 0's bytes", what, i);
    }
}

static void expect_err(const char *what, const result *r, const char *sub) {
    CHECK(r->status == LT_ERR_IO && strstr(r->msg, sub), "%s: status %d, message '%s', wanted '%s'",
          what, r->status, r->msg, sub);
}

int main(void) {
    srand(1234);
    for (int i = 0; i < ID; i++)
        g_id[i] = (unsigned char)(rand() & 255);
    g_id[0] = 0x5a; /* not all zero whatever rand gives */
    const char *dir = lt_tmpdir();
    char path[1024], spec[1100];
    result r[MAXP];

    /* ---- file: 3 ranks ---- */
    snprintf(path, sizeof path, "%s/nccl-id", dir);
    snprintf(spec, sizeof spec, "file:%s", path);
    {
        proc p[3] = {{1, 3, 0, 20}, {2, 3, 200, 20}, {0, 3, 100, 20}};
        run_procs(spec, p, 3, r);
        expect_all_ok("file, 3 ranks", r, 3);
        char ack[1200];
        snprintf(ack, sizeof ack, "%s.ack.1", path);
        CHECK(access(path, F_OK) != 0 && access(ack, F_OK) != 0,
              "file: %s and its acks are removed after the rendezvous", path);
    }
    /* ---- tcp: 3 ranks, others first (retrying), then rank 0 first ---- */
    for (int order = 0; order < 2; order++) {
        snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
        proc p[3] = {{0, 3, order ? 0 : 400, 20}, {1, 3, order ? 200 : 0, 20},
                     {2, 3, order ? 300 : 0, 20}};
        run_procs(spec, p, 3, r);
        expect_all_ok(order ? "tcp, rank 0 first" : "tcp, rank 0 last", r, 3);
    }
    /* localhost by name */
    snprintf(spec, sizeof spec, "tcp:localhost:%d", free_port());
    {
        proc p[2] = {{0, 2, 0, 20}, {1, 2, 0, 20}};
        run_procs(spec, p, 2, r);
        expect_all_ok("tcp localhost, 2 ranks", r, 2);
    }
    /* one rank: nothing to wait for */
    {
        proc p[1] = {{0, 1, 0, 1}};
        run_procs("file:/nonexistent/dir/x", p, 1, r);
        expect_all_ok("file, 1 rank", r, 1);
    }

    /* ---- timeouts ---- */
    snprintf(spec, sizeof spec, "file:%s", path);
    {
        proc p[1] = {{1, 2, 0, 0.5}};
        run_procs(spec, p, 1, r);
        expect_err("file, rank 1 alone", &r[0], "did not appear within");
        proc q[1] = {{0, 2, 0, 0.5}};
        run_procs(spec, q, 1, r);
        expect_err("file, rank 0 alone", &r[0], "only 0 of the 1 other ranks read");
        CHECK(access(path, F_OK) != 0, "file: removed after rank 0's timeout");
    }
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
    {
        proc p[1] = {{1, 2, 0, 0.5}};
        run_procs(spec, p, 1, r);
        expect_err("tcp, rank 1 alone", &r[0], "could not reach rank 0 at 127.0.0.1");
        proc q[1] = {{0, 2, 0, 0.5}};
        run_procs(spec, q, 1, r);
        expect_err("tcp, rank 0 alone", &r[0], "0 of the 1 other ranks connected");
    }

    /* ---- disagreement ---- */
    snprintf(spec, sizeof spec, "file:%s", path);
    {
        proc p[2] = {{0, 2, 0, 1}, {1, 3, 0, 1}};
        run_procs(spec, p, 2, r);
        expect_err("file, size 2 vs 3: rank 1", &r[1], "written for 2 ranks");
        expect_err("file, size 2 vs 3: rank 0", &r[0], "only 0 of the 1 other ranks");
    }
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
    {
        proc p[2] = {{0, 2, 0, 5}, {1, 3, 0, 5}};
        run_procs(spec, p, 2, r);
        expect_err("tcp, size 2 vs 3: rank 0", &r[0], "disagree on the rank count");
        expect_err("tcp, size 2 vs 3: rank 1", &r[1], "rank 0 has 2 ranks");
    }
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
    {
        proc p[3] = {{0, 3, 300, 5}, {1, 3, 0, 5}, {1, 3, 0, 5}};
        run_procs(spec, p, 3, r);
        expect_err("tcp, rank 1 twice: rank 0", &r[0], "a second rank 1");
        int refused = (r[1].status && strstr(r[1].msg, "refused by rank 0")) ||
                      (r[2].status && strstr(r[2].msg, "refused by rank 0"));
        CHECK(refused, "tcp, rank 1 twice: one of them is refused ('%s' / '%s')", r[1].msg,
              r[2].msg);
    }

    /* ---- a file left by an earlier job ---- */
    {
        FILE *f = fopen(path, "w");
        fputs("stale", f);
        fclose(f);
        snprintf(spec, sizeof spec, "file:%s", path);
        proc p[1] = {{0, 2, 0, 1}};
        run_procs(spec, p, 1, r);
        expect_err("file, stale", &r[0], "exists already");
        proc q[1] = {{1, 2, 0, 1}};
        run_procs(spec, q, 1, r);
        expect_err("file, stale, rank 1", &r[0], "not a loratune rendezvous file");
        unlink(path);
    }

    /* ---- bad specs and arguments ---- */
    unsigned char b[ID] = {0};
    const char *bad[] = {"",          "foo:bar",      "tcp:host",       "tcp::123",
                         "tcp:h:0",   "tcp:h:70000",  "tcp:h:12x",      "file:",
                         "tcp:h:",    "env://"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lt_status st = lt_rendezvous_bcast(bad[i], 0, 2, b, ID, 1);
        CHECK(st == LT_ERR_ARG && strstr(lt_errmsg(), "expected"), "spec '%s': %d %s", bad[i],
              st, lt_errmsg());
    }
    CHECK_ERR(lt_rendezvous_bcast("file:/tmp/x", 2, 2, b, ID, 1), LT_ERR_ARG, "rank 2 of 2");
    CHECK_ERR(lt_rendezvous_bcast("file:/tmp/x", 0, 2, b, 0, 1), LT_ERR_ARG, "expected 1 to");
    rmdir(dir);
    LT_TEST_END();
}
