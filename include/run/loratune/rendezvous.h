/* rendezvous.h - how the ranks of a data-parallel run started without MPI find each other:
 * rank 0 shares a few bytes (NCCL's unique id, 128 bytes) with every other rank, through a
 * shared file or a TCP connection (docs/SCALE_OUT.md, "Multi-GPU over NCCL"). Plain C: no GPU,
 * no MPI. The rank and the rank count come from the caller (`loratune train` reads them from
 * RANK / WORLD_SIZE or SLURM_PROCID / SLURM_NTASKS; the library reads no environment).
 *
 * spec:
 *   file:PATH       rank 0 writes PATH atomically (a temp file linked into place: it refuses
 *                   when PATH exists, e.g. left by an earlier job); the others poll for it, read
 *                   it and each leave PATH.ack.<rank>; rank 0 waits for every ack, then removes
 *                   PATH and the acks, so nothing is left for the next job. PATH on a file
 *                   system every rank sees (multi-node: a shared one).
 *   tcp:HOST:PORT   rank 0 listens on PORT (all its addresses of HOST's kind, IPv4 or IPv6)
 *                   and answers each rank's hello with the bytes; the others connect to
 *                   HOST:PORT (rank 0's host name or address, as they reach it), retrying
 *                   until rank 0 listens.
 * Both check that every rank agrees on the rank count and the byte count (a mismatch names
 * both numbers), and give up after timeout_s seconds naming what they waited for.
 * Collective: every rank of the job calls it once with the same spec. */
#ifndef LORATUNE_RENDEZVOUS_H
#define LORATUNE_RENDEZVOUS_H

#include <stddef.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rank 0's n bytes at buf are copied into buf on every other rank. 0 <= rank < size, n <= 1 MiB.
 * LT_ERR_ARG for a bad spec (naming it and the accepted forms) or arguments; LT_ERR_IO for a
 * timeout, a refused / failed file or connection, or a peer that disagrees (size, n). */
lt_status lt_rendezvous_bcast(const char *spec, int rank, int size, void *buf, size_t n,
                              double timeout_s);

#ifdef __cplusplus
}
#endif
#endif
