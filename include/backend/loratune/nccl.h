/* nccl.h - NCCL collectives over the CUDA backend's memory, for data-parallel training on
 * several GPUs (docs/SCALE_OUT.md, "Multi-GPU over NCCL"): one process per GPU, the trainer's
 * gradients summed over the ranks in place on the device.
 *
 * NCCL is not linked: libnccl.so.2 is opened (dlopen) when first needed, from the loader's
 * path (LD_LIBRARY_PATH, ldconfig), then the directory the caller names (`loratune train`:
 * $LT_NCCL_LIB), then the lib folder of the nvidia-nccl wheel this build was compiled against
 * (.venv, recorded at build time), then python's site-packages folders where PyTorch's wheels
 * put it (nvidia/nccl/lib). Built when CUDA is and CMake found nccl.h (-DLT_NCCL=AUTO|ON|OFF);
 * otherwise every call says so (LT_ERR_UNSUPPORTED).
 *
 * Every communicator made here sets NCCL_NVLS_ENABLE=0 in the environment first unless it is
 * set already (NVLink multicast stays off: the lent multi-GPU machines require it).
 * Streams: collectives run on the communicator's own stream, ordered after the work queued on
 * the device's default stream before the call, and before the work queued on it after (CUDA
 * events; the host does not wait for an all-reduce). */
#ifndef LORATUNE_NCCL_H
#define LORATUNE_NCCL_H

#include <stddef.h>
#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct lt_nccl lt_nccl;

int lt_nccl_compiled(void); /* 1 when built with CUDA and nccl.h */
/* Opens libnccl (idempotent; the first call decides). dir: a folder holding libnccl.so.2 to
 * try after the loader's path, or NULL. LT_ERR_UNSUPPORTED naming every place tried. *version
 * (may be NULL): NCCL's, e.g. 23203 for 2.32.3. */
lt_status lt_nccl_open(const char *dir, int *version);
/* A new unique id (rank 0 makes it and shares it: MPI_Bcast or lt_rendezvous_bcast). */
lt_status lt_nccl_unique_id(unsigned char id[LT_NCCL_ID_BYTES]);
/* Joins the communicator of size ranks as rank, on CUDA device `device` (made current).
 * Collective: blocks until every rank has joined. bf16 1: lt_nccl_allreduce sends bfloat16
 * (the fp32 values rounded to nearest even, summed by NCCL in bf16, widened back); 0: fp32.
 * *out is new (lt_nccl_free). */
lt_status lt_nccl_create(int device, const unsigned char id[LT_NCCL_ID_BYTES], int rank, int size,
                         int bf16, lt_nccl **out);
/* Frees it (ncclCommDestroy; abort 1: ncclCommAbort, for a rank that failed and must not wait
 * for the others). Safe on NULL. */
void lt_nccl_free(lt_nccl *c, int abort);
/* Sums buf[0..n) (device memory of the communicator's GPU) over the ranks, in place. */
lt_status lt_nccl_allreduce(lt_nccl *c, float *buf, int64_t n);
/* The same, left in flight: ordered after the default stream's work queued so far, but the
 * default stream does not wait for it (the backward of the next layers runs meanwhile) until
 * lt_nccl_join. bf16: the pieces between two joins take consecutive parts of the staging
 * buffer (it grows, after a wait, when a step's pieces outgrow it). */
lt_status lt_nccl_allreduce_async(lt_nccl *c, float *buf, int64_t n);
/* Work queued on the default stream from now on waits for every collective queued so far. */
lt_status lt_nccl_join(lt_nccl *c);
/* ZeRO-1 (docs/SCALE_OUT.md), on buf[0 .. size * n) of device memory, in place; work the
 * default stream queues after the call waits for them (as lt_nccl_allreduce):
 * lt_nccl_reduce_scatter sums buf over the ranks, rank q getting its n floats of the sum at
 * buf + q * n (the rest of buf is left as NCCL leaves it); bf16 1: rounded to bf16 first,
 * summed in bf16 and widened back, as the all-reduce (a staging buffer of size * n bf16).
 * lt_nccl_allgather_dev: rank q's n floats at buf + q * n to every rank's buf + q * n, in fp32
 * (weights and moments, never rounded). */
lt_status lt_nccl_reduce_scatter(lt_nccl *c, float *buf, int64_t n);
lt_status lt_nccl_allgather_dev(lt_nccl *c, float *buf, int64_t n);
/* Host bytes: rank q's `bytes` bytes of send land at recv + q * bytes on every rank (through
 * device buffers the communicator keeps; waits for the result). */
lt_status lt_nccl_allgather(lt_nccl *c, const void *send, void *recv, size_t bytes);
/* How long lt_nccl_allgather waits for the other ranks (default 1800 s). A rank that fails
 * aborts its communicator (lt_nccl_free(c, 1)); the others notice in their next allgather --
 * NCCL's asynchronous error, or this timeout -- abort theirs and fail naming the reason, and
 * every later call fails at once, rather than waiting for ever. */
void lt_nccl_set_timeout(lt_nccl *c, double seconds);
int lt_nccl_rank(const lt_nccl *c);
int lt_nccl_size(const lt_nccl *c);

#ifdef __cplusplus
}
#endif
#endif
