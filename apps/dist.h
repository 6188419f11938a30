/* dist.h - `loratune train` under mpirun / srun: data-parallel ranks (docs/SCALE_OUT.md).
 * The library has no MPI (run.h's lt_run_comm takes an allgather function); this is where the
 * program supplies MPI's, when the build found MPI (-DLT_MPI=AUTO|ON|OFF). */
#ifndef LT_APPS_DIST_H
#define LT_APPS_DIST_H

#include "loratune/run.h"

typedef struct {
    int active;       /* 1: launched by an MPI launcher, MPI initialised, comm filled */
    lt_run_comm comm; /* rank, size, MPI_Allgather on MPI_COMM_WORLD */
} lt_cli_dist;

/* Fills d. Not launched by mpirun / srun (no OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK in the
 * environment): d->active 0, nothing initialised. Launched so in a build without MPI: prints why
 * on stderr and returns 1 when the launcher started several processes (each would train alone
 * into the same folder), else 0 with d->active 0. */
int lt_cli_dist_start(lt_cli_dist *d);
/* The command's exit code rc: MPI_Finalize when every rank is fine; a failing rank (rc not 0, 130
 * or 141 in a job of several ranks) aborts the job (MPI_Abort), since the others would wait for it
 * in the next exchange. Returns rc. */
int lt_cli_dist_finish(lt_cli_dist *d, int rc);
/* "not built", or the MPI library this loratune was built with (its first line, e.g. "Open MPI
 * v4.1.4, ..."): `loratune info`'s build.mpi. A static buffer. */
const char *lt_cli_dist_build(void);

#endif
