/* dist_nccl.c - multi-GPU `loratune train` over NCCL (dist.h, docs/SCALE_OUT.md): one process
 * per GPU, started by mpirun / srun / torchrun-like launchers or by hand; the rank and GPU from
 * the launcher's environment, rank 0's NCCL id shared through MPI or a rendezvous
 * (rendezvous.h), and the run's communicator made of the NCCL calls (nccl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "loratune/nccl.h"
#include "loratune/rendezvous.h"

static int nccl_allgather(void *ctx, const void *send, void *recv, size_t bytes) {
    return lt_nccl_allgather(ctx, send, recv, bytes) != LT_OK;
}
/* the pieces of a step's gradients, left in flight while the backward goes on (run.h) */
static int nccl_allreduce(void *ctx, float *buf, size_t n) {
    return lt_nccl_allreduce_async(ctx, buf, (int64_t)n) != LT_OK;
}
static int nccl_wait(void *ctx) {
    return lt_nccl_join(ctx) != LT_OK;
}
/* ZeRO-1 (--zero 1): the gradient span reduce-scattered, the updated shards all-gathered */
static int nccl_reduce_scatter(void *ctx, float *buf, size_t n) {
    return lt_nccl_reduce_scatter(ctx, buf, (int64_t)n) != LT_OK;
}
static int nccl_allgather_dev(void *ctx, float *buf, size_t n) {
    return lt_nccl_allgather_dev(ctx, buf, (int64_t)n) != LT_OK;
}

/* the first of names set in the environment, as a non-negative int: 1, or 0 when none is set;
 * -1 (printed) when one is set but is not such a number */
static int env_int(const char *const *names, int *v, const char **which) {
    for (int i = 0; names[i]; i++) {
        const char *s = getenv(names[i]);
        if (!s) continue;
        char *end = NULL;
        long x = strtol(s, &end, 10);
        *which = names[i];
        if (!*s || *end || x < 0 || x > 1 << 24) {
            fprintf(stderr, "loratune train: %s='%s': expected a number >= 0\n", names[i], s);
            return -1;
        }
        *v = (int)x;
        return 1;
    }
    return 0;
}

int lt_cli_dist_nccl(lt_cli_dist *d, const char *init, double timeout_s, int bf16) {
    int rank = 0, size = 1, local = -1;
    const char *rname = "", *sname = "", *lname = "";
    if (d->mpi) {
        rank = d->comm.rank;
        size = d->comm.size;
    } else {
        static const char *const rn[] = {"RANK", "SLURM_PROCID", NULL};
        static const char *const sn[] = {"WORLD_SIZE", "SLURM_NTASKS", NULL};
        int hr = env_int(rn, &rank, &rname), hs = env_int(sn, &size, &sname);
        if (hr < 0 || hs < 0) return 1;
        if (!hr || !hs) {
            fprintf(stderr,
                    "loratune train: --dist-init %s: the rank and rank count come from the "
                    "environment: set RANK and WORLD_SIZE (or run under srun: SLURM_PROCID, "
                    "SLURM_NTASKS), or start the ranks with mpirun\n",
                    init);
            return 1;
        }
        if (size < 1 || rank >= size) {
            fprintf(stderr, "loratune train: %s=%d, %s=%d: expected 0 <= rank < size\n", rname,
                    rank, sname, size);
            return 1;
        }
    }
    static const char *const ln[] = {"LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK",
                                     "MPI_LOCALRANKID", NULL};
    int hl = env_int(ln, &local, &lname);
    if (hl < 0) return 1;
    if (!hl) local = rank; /* one machine: rank r on GPU r */
    int version = 0;
    if (lt_nccl_open(getenv("LT_NCCL_LIB"), &version)) {
        fprintf(stderr, "loratune train: rank %d of %d: %s\n", rank, size, lt_errmsg());
        return 1;
    }
    unsigned char id[LT_NCCL_ID_BYTES] = {0};
    if (rank == 0 && lt_nccl_unique_id(id)) {
        fprintf(stderr, "loratune train: rank 0: %s\n", lt_errmsg());
        return 1;
    }
    if (d->mpi) {
        if (lt_cli_dist_mpi_bcast(d, id, sizeof id)) {
            fprintf(stderr, "loratune train: rank %d of %d: MPI_Bcast of the NCCL id failed\n",
                    rank, size);
            return 1;
        }
    } else if (lt_rendezvous_bcast(init, rank, size, id, sizeof id, timeout_s)) {
        fprintf(stderr, "loratune train: --dist-init %s\n", lt_errmsg());
        return 1;
    }
    lt_nccl *nc = NULL;
    if (lt_nccl_create(local, id, rank, size, bf16, &nc)) {
        fprintf(stderr, "loratune train: rank %d of %d (GPU %d%s%s): %s\n", rank, size, local,
                hl ? " from " : "", hl ? lname : "", lt_errmsg());
        return 1;
    }
    d->nccl = nc;
    d->active = 1;
    d->comm = (lt_run_comm){.rank = rank,
                            .size = size,
                            .allgather = nccl_allgather,
                            .ctx = nc,
                            .allreduce = nccl_allreduce,
                            .allreduce_wait = nccl_wait,
                            .reduce_scatter = nccl_reduce_scatter,
                            .allgather_dev = nccl_allgather_dev,
                            .device = local};
    if (rank == 0)
        fprintf(stderr,
                "loratune train: %d rank%s over NCCL %d.%d.%d, gradients summed in %s "
                "(NCCL_NVLS_ENABLE=%s)\n",
                size, size == 1 ? "" : "s", version / 10000, version / 100 % 100, version % 100,
                bf16 ? "bf16" : "fp32", getenv("NCCL_NVLS_ENABLE"));
    return 0;
}
