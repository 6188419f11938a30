/* dist.h - `loratune train` under mpirun / srun: data-parallel ranks (docs/SCALE_OUT.md).
 * The library has no MPI (run.h's lt_run_comm takes an allgather function); this is where the
 * program supplies MPI's, when the build found MPI (-DLT_MPI=AUTO|ON|OFF). */
#ifndef LT_APPS_DIST_H
#define LT_APPS_DIST_H

#include "loratune/run.h"

struct lt_nccl;

typedef struct {
    int active;       /* 1: one rank of several (MPI, or NCCL ranks), comm filled */
    int mpi;          /* 1: launched by an MPI launcher, MPI initialised */
    lt_run_comm comm; /* rank, size, MPI_Allgather on MPI_COMM_WORLD; or NCCL's (below) */
    struct lt_nccl *nccl; /* multi-GPU: the communicator (comm.ctx), from lt_cli_dist_nccl */
} lt_cli_dist;

/* Multi-GPU over NCCL (apps/dist_nccl.c, docs/SCALE_OUT.md), once the options are known and the
 * run trains on a GPU: rank and size from MPI when d->mpi, else from the environment (RANK /
 * WORLD_SIZE, or Slurm's SLURM_PROCID / SLURM_NTASKS); the GPU from LOCAL_RANK /
 * SLURM_LOCALID / OMPI_COMM_WORLD_LOCAL_RANK, else the rank; rank 0's NCCL id shared through
 * MPI_Bcast (d->mpi) or `init` (lt_rendezvous_bcast: file:PATH or tcp:HOST:PORT, timeout_s);
 * then d->comm is NCCL's: allreduce of the gradients on the GPU (bf16 1: in bfloat16), the
 * allgather of a run's few host bytes through the GPU. Prints the reason on stderr and returns
 * 1 when it cannot; 0 with d->active 1 otherwise. libnccl.so.2 is looked for as nccl.h says,
 * $LT_NCCL_LIB naming one more folder. */
int lt_cli_dist_nccl(lt_cli_dist *d, const char *init, double timeout_s, int bf16);
/* MPI_Bcast of rank 0's n bytes (dist_mpi.c; 1 when it failed or without MPI). */
int lt_cli_dist_mpi_bcast(lt_cli_dist *d, void *buf, size_t n);

/* Fills d. Not launched by mpirun / srun (no OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK in the
 * environment): d->active 0, nothing initialised. Launched so in a build without MPI: prints why
 * on stderr and returns 1 when the launcher started several processes (each would train alone
 * into the same folder), else 0 with d->active 0. */
int lt_cli_dist_start(lt_cli_dist *d);
/* The command's exit code rc: MPI_Finalize when every rank is fine; a failing rank (rc not 0, 130
 * or 141 in a job of several ranks) aborts the job (MPI_Abort), since the others would wait for it
 * in the next exchange. The NCCL communicator is destroyed (aborted on such a failure). Returns
 * rc. */
int lt_cli_dist_finish(lt_cli_dist *d, int rc);
/* "not built", or the MPI library this loratune was built with (its first line, e.g. "Open MPI
 * v4.1.4, ..."): `loratune info`'s build.mpi. A static buffer. */
const char *lt_cli_dist_build(void);

#endif
