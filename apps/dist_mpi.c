/* dist_mpi.c - MPI for `loratune train` (dist.h): MPI_Init when an MPI launcher started this
 * process, the lt_run_comm of MPI_COMM_WORLD (MPI_Allgather of bytes), MPI_Finalize or, when a
 * rank failed, MPI_Abort. Compiled in every build; the MPI calls only with LT_HAVE_MPI. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "loratune/nccl.h"

#ifdef LT_HAVE_MPI
#include <mpi.h>
#endif

/* The launcher's rank count, or 0 when no MPI launcher started this process: OpenMPI's mpirun
 * (OMPI_COMM_WORLD_SIZE), MPICH / Slurm PMI-1/2 (PMI_SIZE), PMIx (Slurm srun --mpi=pmix). */
static int launched_size(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    if (!v && getenv("PMIX_RANK")) v = "1"; /* size known only after MPI_Init */
    if (!v) return 0;
    int n = atoi(v);
    return n > 0 ? n : 1;
}

#ifdef LT_HAVE_MPI
static int mpi_allgather(void *ctx, const void *send, void *recv, size_t bytes) {
    (void)ctx;
    /* MPI counts are ints: to pass 2 GiB (full fine-tuning's row gradients) the count is in
     * units of up to 4 KiB, a contiguous datatype, the largest power of two that divides the
     * bytes (every exchange goes this way, so the tests run it: the stop flags in 4-byte
     * units, the row gradients -- 8-byte aligned slots -- in 8 bytes to 4 KiB) */
    size_t unit = 4096;
    while (bytes % unit)
        unit /= 2;
    if (bytes / unit > (size_t)INT_MAX) {
        fprintf(stderr,
                "loratune train: data parallel: %zu bytes in one exchange (more than MPI "
                "counts of %zu-byte units reach); use a smaller --batch-size or --grad-accum\n",
                bytes, unit);
        return 1;
    }
    MPI_Datatype t;
    if (MPI_Type_contiguous((int)unit, MPI_BYTE, &t) != MPI_SUCCESS) return 1;
    if (MPI_Type_commit(&t) != MPI_SUCCESS) {
        MPI_Type_free(&t);
        return 1;
    }
    int rc = MPI_Allgather(send, (int)(bytes / unit), t, recv, (int)(bytes / unit), t,
                           MPI_COMM_WORLD) != MPI_SUCCESS;
    MPI_Type_free(&t);
    return rc;
}
#endif

int lt_cli_dist_mpi_bcast(lt_cli_dist *d, void *buf, size_t n) {
#ifdef LT_HAVE_MPI
    if (d->mpi && n <= (size_t)INT_MAX)
        return MPI_Bcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS;
#endif
    (void)d, (void)buf, (void)n;
    return 1;
}

int lt_cli_dist_start(lt_cli_dist *d) {
    memset(d, 0, sizeof *d);
    int n = launched_size();
    if (!n) return 0;
#ifdef LT_HAVE_MPI
    int rank = 0, size = 1;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "loratune train: MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    d->active = 1;
    d->mpi = 1;
    d->comm = (lt_run_comm){.rank = rank, .size = size, .allgather = mpi_allgather, .ctx = NULL};
    return 0;
#else
    if (n > 1) {
        fprintf(stderr,
                "loratune train: started by an MPI launcher as one of %d processes, but "
                "this loratune was built without MPI (install libopenmpi-dev and build "
                "with -DLT_MPI=ON; docs/SCALE_OUT.md)\n",
                n);
        return 1;
    }
    return 0;
#endif
}

int lt_cli_dist_finish(lt_cli_dist *d, int rc) {
    /* 130 / 141: a stop request, which all ranks took at the same step boundary */
    const int failed = rc != 0 && rc != 130 && rc != 141 && d->comm.size > 1;
    lt_nccl_free(d->nccl, failed); /* abort: the others may wait for this rank in a collective */
    d->nccl = NULL;
#ifdef LT_HAVE_MPI
    if (d->mpi) {
        if (failed) {
            fprintf(stderr,
                    "loratune train: rank %d of %d failed (exit %d): stopping the other "
                    "ranks\n",
                    d->comm.rank, d->comm.size, rc);
            MPI_Abort(MPI_COMM_WORLD, rc);
        }
        MPI_Finalize();
    }
#endif
    d->active = d->mpi = 0;
    return rc;
}

const char *lt_cli_dist_build(void) {
#ifdef LT_HAVE_MPI
    static char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int n = 0;
    if (MPI_Get_library_version(v, &n) != MPI_SUCCESS) return "built (version unknown)";
    v[strcspn(v, "\n")] = 0;
    return v;
#else
    return "not built";
#endif
}
