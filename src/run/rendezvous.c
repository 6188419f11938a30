/* rendezvous.c - rank 0's bytes to every rank, through a shared file or TCP (rendezvous.h).
 *
 * The file: [8] "LTRDV01\n", [4] size, [4] 0, [8] n, [n] bytes (host byte order: the ranks of
 * a job run one build), written to PATH.tmp.<pid>, fsync'ed and hard-linked to PATH (link fails
 * when PATH exists: so a file left by an earlier job is refused, not overwritten under a rank
 * that may already have read it). Each other rank reads it and creates PATH.ack.<rank>; rank 0
 * removes PATH and the acks once all are there (or at its timeout).
 * TCP: each other rank sends a hello [8] "LTRDV01\n", [4] rank, [4] size, [8] n; rank 0 answers
 * [8] magic, [4] status (0 ok, else a mismatch: the peer reports it), [4] its size, [8] its n,
 * then (status 0) the n bytes. Rank 0 serves size - 1 distinct ranks, then closes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/io.h"
#include "loratune/rendezvous.h"

#define MAGIC "LTRDV01\n"
#define MAX_BYTES (1u << 20)
#define HEAD 24 /* magic, two int32, uint64 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void put_head(unsigned char *h, int32_t a, int32_t b, uint64_t n) {
    memcpy(h, MAGIC, 8);
    memcpy(h + 8, &a, 4);
    memcpy(h + 12, &b, 4);
    memcpy(h + 16, &n, 8);
}

static int get_head(const unsigned char *h, int32_t *a, int32_t *b, uint64_t *n) {
    if (memcmp(h, MAGIC, 8)) return -1;
    memcpy(a, h + 8, 4);
    memcpy(b, h + 12, 4);
    memcpy(n, h + 16, 8);
    return 0;
}

/* ---- file:PATH ---------------------------------------------------------------------------- */

static lt_status file_root(const char *spec, const char *path, int size, const void *buf,
                           size_t n, double timeout_s) {
    char tmp[4200], ack[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = lt_io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return lt_error(LT_ERR_IO, "%s: rank 0: cannot create %s: %s", spec, tmp, strerror(errno));
    unsigned char h[HEAD];
    put_head(h, size, 0, (uint64_t)n);
    int ok = lt_io_write(fd, h, HEAD) == HEAD && lt_io_write(fd, buf, n) == (ssize_t)n &&
             lt_io_fsync(fd) == 0;
    int err = errno;
    lt_io_close(fd);
    if (!ok) {
        unlink(tmp);
        return lt_error(LT_ERR_IO, "%s: rank 0: writing %s: %s", spec, tmp, strerror(err));
    }
    int linked = link(tmp, path);
    err = errno;
    unlink(tmp);
    if (linked) {
        if (err == EEXIST)
            return lt_error(LT_ERR_IO,
                            "%s: rank 0: %s exists already (left by an earlier job, or another "
                            "job uses the same name): remove it or give a name of this job's "
                            "own, e.g. with its job id",
                            spec, path);
        return lt_error(LT_ERR_IO, "%s: rank 0: cannot create %s: %s", spec, path, strerror(err));
    }
    /* wait for every other rank's ack, then leave nothing behind */
    double end = now_s() + timeout_s;
    int acked = 0;
    for (;;) {
        acked = 0;
        for (int q = 1; q < size; q++) {
            snprintf(ack, sizeof ack, "%s.ack.%d", path, q);
            acked += access(ack, F_OK) == 0;
        }
        if (acked == size - 1 || now_s() > end) break;
        nap_ms(20);
    }
    unlink(path);
    for (int q = 1; q < size; q++) {
        snprintf(ack, sizeof ack, "%s.ack.%d", path, q);
        unlink(ack);
    }
    if (acked < size - 1)
        return lt_error(LT_ERR_IO,
                        "%s: rank 0: only %d of the %d other ranks read %s within %.0f s (are "
                        "they running, with the same --dist-init and a rank count of %d?)",
                        spec, acked, size - 1, path, timeout_s, size);
    return LT_OK;
}

static lt_status file_peer(const char *spec, const char *path, int rank, int size, void *buf,
                           size_t n, double timeout_s) {
    double end = now_s() + timeout_s;
    int fd;
    while ((fd = open(path, O_RDONLY)) < 0) {
        if (errno != ENOENT)
            return lt_error(LT_ERR_IO, "%s: rank %d: cannot open %s: %s", spec, rank, path,
                            strerror(errno));
        if (now_s() > end)
            return lt_error(LT_ERR_IO,
                            "%s: rank %d of %d: %s did not appear within %.0f s (is rank 0 "
                            "running, with the same --dist-init?)",
                            spec, rank, size, path, timeout_s);
        nap_ms(20);
    }
    unsigned char h[HEAD];
    int32_t fsize = 0, zero = 0;
    uint64_t fn = 0;
    ssize_t got = read(fd, h, HEAD);
    if (got != HEAD || get_head(h, &fsize, &zero, &fn)) {
        close(fd);
        return lt_error(LT_ERR_IO, "%s: rank %d: %s is not a loratune rendezvous file", spec,
                        rank, path);
    }
    if (fsize != size || fn != n) {
        close(fd);
        return lt_error(LT_ERR_IO,
                        "%s: rank %d: %s was written for %d ranks and %llu bytes; this rank "
                        "has %d ranks and %zu bytes (the ranks disagree on the rank count, or "
                        "the file is another job's)",
                        spec, rank, path, (int)fsize, (unsigned long long)fn, size, n);
    }
    got = read(fd, buf, n);
    close(fd);
    if (got != (ssize_t)n)
        return lt_error(LT_ERR_IO, "%s: rank %d: %s: %zd of %zu bytes", spec, rank, path, got, n);
    char ack[4200];
    snprintf(ack, sizeof ack, "%s.ack.%d", path, rank);
    int afd = lt_io_open(ack, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (afd < 0)
        return lt_error(LT_ERR_IO, "%s: rank %d: cannot create %s: %s", spec, rank, ack,
                        strerror(errno));
    lt_io_close(afd);
    return LT_OK;
}

/* ---- tcp:HOST:PORT ------------------------------------------------------------------------ */

/* every byte of buf, or -1 (errno ETIMEDOUT at the deadline; 0 read: ECONNRESET) */
static int io_all(int fd, void *buf, size_t n, int writing, double end) {
    unsigned char *p = buf;
    while (n) {
        int ms = (int)((end - now_s()) * 1000);
        if (ms <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pf = {fd, writing ? POLLOUT : POLLIN, 0};
        int pr = poll(&pf, 1, ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return -1;
        if (pr == 0) continue;
        ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k < 0) return -1;
        if (k == 0) {
            errno = ECONNRESET;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static lt_status tcp_root(const char *spec, const char *host, const char *port, int size,
                          const void *buf, size_t n, double timeout_s) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = strchr(host, ':') ? AF_INET6 : AF_INET; /* the wildcard of HOST's kind */
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int e = getaddrinfo(NULL, port, &hints, &ai);
    if (e) return lt_error(LT_ERR_IO, "%s: rank 0: port %s: %s", spec, port, gai_strerror(e));
    int ls = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    int one = 1;
    if (ls >= 0) setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, ai->ai_addr, ai->ai_addrlen) || listen(ls, size)) {
        int err = errno;
        freeaddrinfo(ai);
        if (ls >= 0) close(ls);
        return lt_error(LT_ERR_IO, "%s: rank 0: cannot listen on port %s: %s", spec, port,
                        strerror(err));
    }
    freeaddrinfo(ai);
    unsigned char *seen = lt_calloc((size_t)size, 1);
    if (!seen) {
        close(ls);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", spec);
    }
    double end = now_s() + timeout_s;
    int served = 0;
    lt_status st = LT_OK;
    while (served < size - 1) {
        int ms = (int)((end - now_s()) * 1000);
        struct pollfd pf = {ls, POLLIN, 0};
        int pr = ms > 0 ? poll(&pf, 1, ms) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            st = lt_error(LT_ERR_IO,
                          "%s: rank 0: %d of the %d other ranks connected within %.0f s (are "
                          "they running, with the same --dist-init and a rank count of %d?)",
                          spec, served, size - 1, timeout_s, size);
            break;
        }
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        unsigned char h[HEAD];
        int32_t prank = -1, psize = 0;
        uint64_t pn = 0;
        if (io_all(c, h, HEAD, 0, now_s() + 10) || get_head(h, &prank, &psize, &pn)) {
            close(c); /* not one of ours (a port scan, a stray client): ignore it */
            continue;
        }
        int32_t status = psize != size || pn != n                     ? 1
                         : prank < 1 || prank >= size || seen[prank] ? 2
                                                                      : 0;
        put_head(h, status, size, (uint64_t)n);
        int sent = io_all(c, h, HEAD, 1, end) == 0 &&
                   (status || io_all(c, (void *)buf, n, 1, end) == 0);
        close(c);
        if (status == 1) {
            st = lt_error(LT_ERR_IO,
                          "%s: rank 0: rank %d has %d ranks and %llu bytes; rank 0 has %d ranks "
                          "and %zu bytes (the ranks disagree on the rank count)",
                          spec, (int)prank, (int)psize, (unsigned long long)pn, size, n);
            break;
        }
        if (status == 2) {
            st = lt_error(LT_ERR_IO,
                          "%s: rank 0: a second rank %d connected, or rank %d is outside "
                          "1..%d (check each process's RANK / SLURM_PROCID)",
                          spec, (int)prank, (int)prank, size - 1);
            break;
        }
        if (sent) {
            seen[prank] = 1;
            served++;
        }
    }
    lt_free(seen);
    close(ls);
    return st;
}

static lt_status tcp_peer(const char *spec, const char *host, const char *port, int rank,
                          int size, void *buf, size_t n, double timeout_s) {
    double end = now_s() + timeout_s;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const char *why = "";
    char whybuf[256] = "";
    for (;;) {
        int c = -1;
        int e = getaddrinfo(host, port, &hints, &ai);
        if (e) {
            snprintf(whybuf, sizeof whybuf, "%s", gai_strerror(e));
            why = whybuf;
        } else {
            for (struct addrinfo *a = ai; a && c < 0; a = a->ai_next) {
                c = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                           a->ai_protocol);
                if (c < 0) continue;
                int r = connect(c, a->ai_addr, a->ai_addrlen);
                if (r && errno == EINPROGRESS) {
                    struct pollfd pf = {c, POLLOUT, 0};
                    int ms = (int)((end - now_s()) * 1000);
                    int err = ETIMEDOUT;
                    socklen_t el = sizeof err;
                    if (ms > 0 && poll(&pf, 1, ms > 2000 ? 2000 : ms) == 1)
                        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el);
                    r = err ? -1 : 0;
                    errno = err;
                }
                if (r) {
                    snprintf(whybuf, sizeof whybuf, "%s", strerror(errno));
                    why = whybuf;
                    close(c);
                    c = -1;
                }
            }
            freeaddrinfo(ai);
            ai = NULL;
        }
        if (c >= 0) {
            unsigned char h[HEAD];
            put_head(h, rank, size, (uint64_t)n);
            int32_t status = -1, rsize = 0;
            uint64_t rn = 0;
            if (io_all(c, h, HEAD, 1, end) || io_all(c, h, HEAD, 0, end) ||
                get_head(h, &status, &rsize, &rn)) {
                int err = errno;
                close(c);
                return lt_error(LT_ERR_IO, "%s: rank %d: no answer from rank 0 at %s:%s: %s",
                                spec, rank, host, port, strerror(err));
            }
            if (status) {
                close(c);
                if (status == 1)
                    return lt_error(LT_ERR_IO,
                                    "%s: rank %d: rank 0 has %d ranks and %llu bytes; this rank "
                                    "has %d ranks and %zu bytes (the ranks disagree on the rank "
                                    "count)",
                                    spec, rank, (int)rsize, (unsigned long long)rn, size, n);
                return lt_error(LT_ERR_IO,
                                "%s: rank %d: refused by rank 0 (another process has this rank, "
                                "or it is outside 1..%d)",
                                spec, rank, (int)rsize - 1);
            }
            int r = io_all(c, buf, n, 0, end);
            int err = errno;
            close(c);
            if (r)
                return lt_error(LT_ERR_IO, "%s: rank %d: reading from rank 0: %s", spec, rank,
                                strerror(err));
            return LT_OK;
        }
        if (now_s() > end)
            return lt_error(LT_ERR_IO,
                            "%s: rank %d of %d: could not reach rank 0 at %s:%s within %.0f s "
                            "(%s; is rank 0 running there, with the same --dist-init?)",
                            spec, rank, size, host, port, timeout_s, why);
        nap_ms(100);
    }
}

/* ---- the entry point ---------------------------------------------------------------------- */

lt_status lt_rendezvous_bcast(const char *spec, int rank, int size, void *buf, size_t n,
                              double timeout_s) {
    if (!spec) spec = "";
    if (size < 1 || rank < 0 || rank >= size)
        return lt_error(LT_ERR_ARG, "%s: rank %d of %d: expected 0 <= rank < size", spec, rank,
                        size);
    if (!buf || n == 0 || n > MAX_BYTES)
        return lt_error(LT_ERR_ARG, "%s: %zu bytes: expected 1 to %u", spec, n, MAX_BYTES);
    if (!(timeout_s > 0)) timeout_s = 300;
    if (!strncmp(spec, "file:", 5)) {
        const char *path = spec + 5;
        if (!*path || strlen(path) > 4000)
            return lt_error(LT_ERR_ARG, "%s: expected file:PATH (a file every rank can reach)",
                            spec);
        if (size == 1) return LT_OK;
        return rank == 0 ? file_root(spec, path, size, buf, n, timeout_s)
                         : file_peer(spec, path, rank, size, buf, n, timeout_s);
    }
    if (!strncmp(spec, "tcp:", 4)) {
        char host[256];
        const char *colon = strrchr(spec + 4, ':');
        size_t hl = colon ? (size_t)(colon - (spec + 4)) : 0;
        char *endp = NULL;
        long port = colon ? strtol(colon + 1, &endp, 10) : 0;
        if (!colon || hl == 0 || hl >= sizeof host || !colon[1] || *endp || port < 1 ||
            port > 65535)
            return lt_error(LT_ERR_ARG,
                            "%s: expected tcp:HOST:PORT (rank 0's host name or address, a port "
                            "1-65535)",
                            spec);
        memcpy(host, spec + 4, hl);
        host[hl] = 0;
        if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [IPv6] */
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = 0;
        }
        if (size == 1) return LT_OK;
        char ps[8];
        snprintf(ps, sizeof ps, "%ld", port);
        return rank == 0 ? tcp_root(spec, host, ps, size, buf, n, timeout_s)
                         : tcp_peer(spec, host, ps, rank, size, buf, n, timeout_s);
    }
    return lt_error(LT_ERR_ARG,
                    "dist-init '%s': expected file:PATH or tcp:HOST:PORT (docs/SCALE_OUT.md)",
                    spec);
}
