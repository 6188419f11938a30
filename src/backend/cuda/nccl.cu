/* nccl.cu - NCCL collectives over the CUDA backend's memory (nccl.h): libnccl opened with
 * dlopen (as cuBLAS is: nothing linked, so a CUDA build without NCCL installed runs, and one
 * that never trains on several GPUs never maps it), the communicator on its own stream ordered
 * against the default stream by events, the bf16 all-reduce through a device staging buffer of
 * n bf16 values, ZeRO-1's in-place reduce-scatter and all-gather of the gradient span, and an
 * allgather of host bytes through device buffers (the stop flags, the
 * losses and the evaluation sums of a run: a few KB).
 * Compiled with LT_NCCL (CMake found nccl.h); the stubs of a build without are in
 * src/backend/nccl_stub.c. */
#if LT_NCCL
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <glob.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "loratune/nccl.h"
}

static_assert(sizeof(ncclUniqueId) == LT_NCCL_ID_BYTES, "ncclUniqueId is 128 bytes");

typedef struct {
    void *lib;
    int version;
    ncclResult_t (*get_version)(int *);
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*comm_init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    ncclResult_t (*comm_abort)(ncclComm_t);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                               ncclComm_t, cudaStream_t);
    ncclResult_t (*all_gather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t,
                               cudaStream_t);
    ncclResult_t (*reduce_scatter)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                                   ncclComm_t, cudaStream_t);
    const char *(*error_string)(ncclResult_t);
    ncclResult_t (*async_error)(ncclComm_t, ncclResult_t *);
    char tried[2048]; /* where it looked (the error when lib is NULL) */
    int done;
} nccl_fns;
static nccl_fns g_nccl;
static pthread_mutex_t g_nccl_mu = PTHREAD_MUTEX_INITIALIZER;

static void try_open(const char *path) {
    if (g_nccl.lib) return;
    g_nccl.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g_nccl.lib) {
        size_t l = strlen(g_nccl.tried);
        snprintf(g_nccl.tried + l, sizeof g_nccl.tried - l, "%s%s", l ? ", " : "", path);
    }
}

static void open_locked(const char *dir) {
    char p[1200];
    try_open("libnccl.so.2"); /* the loader's path */
    if (dir && *dir) {
        snprintf(p, sizeof p, "%s/libnccl.so.2", dir);
        try_open(p);
    }
#ifdef LT_NCCL_LIB_DIR
    try_open(LT_NCCL_LIB_DIR "/libnccl.so.2"); /* the wheel this build's nccl.h came from */
#endif
    /* PyTorch's CUDA wheels depend on nvidia-nccl-cu1x: site-packages/nvidia/nccl/lib */
    static const char *pats[] = {
        "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
        "/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
        "/usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
        "/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2",
        "/opt/conda/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2"};
    for (size_t i = 0; i < sizeof pats / sizeof pats[0] && !g_nccl.lib; i++) {
        glob_t g;
        if (glob(pats[i], 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc && !g_nccl.lib; k++)
                try_open(g.gl_pathv[k]);
        } else {
            size_t l = strlen(g_nccl.tried);
            snprintf(g_nccl.tried + l, sizeof g_nccl.tried - l, ", %s", pats[i]);
        }
        globfree(&g);
    }
    if (!g_nccl.lib) return;
    void *L = g_nccl.lib;
    *(void **)&g_nccl.get_version = dlsym(L, "ncclGetVersion");
    *(void **)&g_nccl.get_unique_id = dlsym(L, "ncclGetUniqueId");
    *(void **)&g_nccl.comm_init_rank = dlsym(L, "ncclCommInitRank");
    *(void **)&g_nccl.comm_destroy = dlsym(L, "ncclCommDestroy");
    *(void **)&g_nccl.comm_abort = dlsym(L, "ncclCommAbort");
    *(void **)&g_nccl.all_reduce = dlsym(L, "ncclAllReduce");
    *(void **)&g_nccl.all_gather = dlsym(L, "ncclAllGather");
    *(void **)&g_nccl.reduce_scatter = dlsym(L, "ncclReduceScatter");
    *(void **)&g_nccl.error_string = dlsym(L, "ncclGetErrorString");
    *(void **)&g_nccl.async_error = dlsym(L, "ncclCommGetAsyncError");
    if (!g_nccl.get_version || !g_nccl.get_unique_id || !g_nccl.comm_init_rank ||
        !g_nccl.comm_destroy || !g_nccl.comm_abort || !g_nccl.all_reduce || !g_nccl.all_gather ||
        !g_nccl.reduce_scatter ||
        !g_nccl.error_string || !g_nccl.async_error) {
        snprintf(g_nccl.tried, sizeof g_nccl.tried, "a libnccl.so.2 without the NCCL 2 API");
        dlclose(L);
        g_nccl.lib = NULL;
        return;
    }
    g_nccl.get_version(&g_nccl.version);
}

extern "C" int lt_nccl_compiled(void) {
    return 1;
}

extern "C" lt_status lt_nccl_open(const char *dir, int *version) {
    pthread_mutex_lock(&g_nccl_mu);
    if (!g_nccl.done) open_locked(dir);
    g_nccl.done = 1;
    pthread_mutex_unlock(&g_nccl_mu);
    if (!g_nccl.lib)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "nccl: cannot open libnccl.so.2 (tried %s): install the nvidia-nccl-cu%d "
                        "wheel (tools/setup.sh does in .venv where nvcc is found) or PyTorch, or "
                        "name its lib folder with LT_NCCL_LIB",
                        g_nccl.tried, CUDART_VERSION / 1000);
    if (version) *version = g_nccl.version;
    return LT_OK;
}

static lt_status nccl_err(const char *what, ncclResult_t r) {
    return lt_error(LT_ERR_IO, "nccl: %s: %s (NCCL_DEBUG=WARN says more)", what,
                    g_nccl.error_string ? g_nccl.error_string(r) : "error");
}

extern "C" lt_status lt_nccl_unique_id(unsigned char id[LT_NCCL_ID_BYTES]) {
    lt_status s = lt_nccl_open(NULL, NULL);
    if (s) return s;
    ncclUniqueId u;
    ncclResult_t r = g_nccl.get_unique_id(&u);
    if (r != ncclSuccess) return nccl_err("ncclGetUniqueId", r);
    memcpy(id, &u, LT_NCCL_ID_BYTES);
    return LT_OK;
}

struct lt_nccl {
    ncclComm_t comm;
    int rank, size, device, bf16;
    cudaStream_t stream;
    cudaEvent_t before, after; /* default stream -> ours, ours -> default stream */
    __nv_bfloat16 *b16;        /* [n16] the bf16 all-reduce's staging */
    int64_t n16, used16;       /* used16: taken by the pieces since the last join */
    unsigned char *gbuf; /* allgather: [gcap] send, then [size * gcap] receive */
    unsigned char *hbuf; /* its pinned host twin: copies that never block the host */
    size_t gcap;
    double timeout_s; /* lt_nccl_allgather's wait for the other ranks */
    int broken;       /* aborted after a peer's failure or a timeout: every call fails */
};

extern "C" lt_status lt_nccl_create(int device, const unsigned char id[LT_NCCL_ID_BYTES],
                                    int rank, int size, int bf16, lt_nccl **out) {
    *out = NULL;
    if (size < 1 || rank < 0 || rank >= size)
        return lt_error(LT_ERR_ARG, "nccl: rank %d of %d: expected 0 <= rank < size", rank, size);
    lt_status s = lt_nccl_open(NULL, NULL);
    if (s) return s;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || device < 0 || device >= ndev)
        return lt_error(LT_ERR_ARG, "nccl: rank %d: CUDA device %d, but this machine has %d",
                        rank, device, ndev);
    if (cudaSetDevice(device) != cudaSuccess)
        return lt_error(LT_ERR_IO, "nccl: cannot use CUDA device %d", device);
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* NVLink multicast off unless the caller decided */
    lt_nccl *c = (lt_nccl *)calloc(1, sizeof *c);
    if (!c) return lt_error(LT_ERR_NOMEM, "nccl: out of memory");
    c->rank = rank, c->size = size, c->device = device, c->bf16 = bf16;
    c->timeout_s = 1800;
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->before, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->after, cudaEventDisableTiming) != cudaSuccess) {
        lt_nccl_free(c, 0);
        return lt_error(LT_ERR_IO, "nccl: cannot create a stream on device %d", device);
    }
    ncclUniqueId u;
    memcpy(&u, id, LT_NCCL_ID_BYTES);
    ncclResult_t r = g_nccl.comm_init_rank(&c->comm, size, u, rank);
    if (r != ncclSuccess) {
        c->comm = NULL;
        lt_nccl_free(c, 0);
        char what[96];
        snprintf(what, sizeof what, "ncclCommInitRank (rank %d of %d, device %d)", rank, size,
                 device);
        return nccl_err(what, r);
    }
    *out = c;
    return LT_OK;
}

extern "C" void lt_nccl_free(lt_nccl *c, int abort) {
    if (!c) return;
    if (c->comm) (abort ? g_nccl.comm_abort : g_nccl.comm_destroy)(c->comm);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->before) cudaEventDestroy(c->before);
    if (c->after) cudaEventDestroy(c->after);
    if (c->b16) cudaFree(c->b16);
    if (c->gbuf) cudaFree(c->gbuf);
    if (c->hbuf) cudaFreeHost(c->hbuf);
    free(c);
}

extern "C" void lt_nccl_set_timeout(lt_nccl *c, double seconds) {
    if (c && seconds > 0) c->timeout_s = seconds;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits for the communicator's stream as cudaStreamSynchronize would, but watching NCCL's
 * asynchronous error (a peer that failed) and the timeout: either aborts the communicator
 * (its collectives return, so the stream drains) and fails with the reason, rather than
 * waiting for ever for a rank that died. */
static lt_status wait_stream(lt_nccl *c, const char *what) {
    const double end = now_s() + c->timeout_s;
    int us = 50;
    for (;;) {
        cudaError_t q = cudaStreamQuery(c->stream);
        if (q == cudaSuccess) return LT_OK;
        if (q != cudaErrorNotReady)
            return lt_error(LT_ERR_IO, "nccl: %s on device %d: %s", what, c->device,
                            cudaGetErrorString(q));
        ncclResult_t ar = ncclSuccess;
        g_nccl.async_error(c->comm, &ar);
        const int late = now_s() > end;
        if ((ar != ncclSuccess && ar != ncclInProgress) || late) {
            g_nccl.comm_abort(c->comm);
            c->comm = NULL;
            c->broken = 1;
            if (late)
                return lt_error(LT_ERR_IO,
                                "nccl: rank %d of %d: %s: no answer from the other ranks "
                                "within %.0f s (one died, or hangs); communicator aborted",
                                c->rank, c->size, what, c->timeout_s);
            return lt_error(LT_ERR_IO,
                            "nccl: rank %d of %d: %s: %s (another rank failed?); communicator "
                            "aborted",
                            c->rank, c->size, what, g_nccl.error_string(ar));
        }
        struct timespec ts = {0, us * 1000L};
        nanosleep(&ts, NULL);
        if (us < 2000) us *= 2;
    }
}

extern "C" int lt_nccl_rank(const lt_nccl *c) {
    return c->rank;
}
extern "C" int lt_nccl_size(const lt_nccl *c) {
    return c->size;
}

__global__ void k_to_bf16(__nv_bfloat16 *y, const float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}
__global__ void k_from_bf16(float *y, const __nv_bfloat16 *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x)
        y[i] = __bfloat162float(x[i]);
}
static unsigned grid(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

/* queues the sum of buf[0..n) on the communicator's stream after the default stream's work */
#define CHECK_BROKEN(c)                                                                          \
    if ((c)->broken)                                                                              \
        return lt_error(LT_ERR_IO, "nccl: rank %d of %d: the communicator was aborted after an "   \
                                   "earlier failure",                                             \
                        (c)->rank, (c)->size)

static lt_status enqueue(lt_nccl *c, float *buf, int64_t n) {
    CHECK_BROKEN(c);
    cudaSetDevice(c->device);
    if (c->bf16 && c->used16 + n > c->n16) {
        /* grow: the pieces in flight use the old buffer, so wait for them first */
        lt_status w = wait_stream(c, "growing the bf16 buffer");
        if (w) return w;
        if (c->b16) cudaFree(c->b16);
        int64_t want = c->used16 + n > 2 * c->n16 ? c->used16 + n : 2 * c->n16;
        c->b16 = NULL, c->n16 = 0, c->used16 = 0;
        if (cudaMalloc(&c->b16, (size_t)want * sizeof *c->b16) != cudaSuccess)
            return lt_error(LT_ERR_NOMEM, "nccl: out of device memory for %lld bf16 values",
                            (long long)want);
        c->n16 = want;
    }
    /* after everything the default stream has queued (this piece's backward) */
    cudaEventRecord(c->before, 0);
    cudaStreamWaitEvent(c->stream, c->before, 0);
    ncclResult_t r;
    if (c->bf16) {
        __nv_bfloat16 *b = c->b16 + c->used16;
        c->used16 += n;
        k_to_bf16<<<grid(n), 256, 0, c->stream>>>(b, buf, n);
        r = g_nccl.all_reduce(b, b, (size_t)n, ncclBfloat16, ncclSum, c->comm, c->stream);
        if (r == ncclSuccess) k_from_bf16<<<grid(n), 256, 0, c->stream>>>(buf, b, n);
    } else {
        r = g_nccl.all_reduce(buf, buf, (size_t)n, ncclFloat32, ncclSum, c->comm, c->stream);
    }
    if (r != ncclSuccess) return nccl_err("ncclAllReduce", r);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lt_error(LT_ERR_IO, "nccl: all-reduce on device %d: %s", c->device,
                        cudaGetErrorString(e));
    return LT_OK;
}

extern "C" lt_status lt_nccl_join(lt_nccl *c) {
    CHECK_BROKEN(c);
    cudaSetDevice(c->device);
    /* before what the default stream queues next (the optimizer step) */
    cudaEventRecord(c->after, c->stream);
    cudaStreamWaitEvent(0, c->after, 0);
    c->used16 = 0; /* the next pieces queue after these on the same stream */
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lt_error(LT_ERR_IO, "nccl: device %d: %s", c->device, cudaGetErrorString(e));
    return LT_OK;
}

extern "C" lt_status lt_nccl_allreduce_async(lt_nccl *c, float *buf, int64_t n) {
    return n > 0 ? enqueue(c, buf, n) : LT_OK;
}

extern "C" lt_status lt_nccl_allreduce(lt_nccl *c, float *buf, int64_t n) {
    if (n <= 0) return LT_OK;
    lt_status s = enqueue(c, buf, n);
    lt_status j = lt_nccl_join(c);
    return s ? s : j;
}

/* ZeRO-1's collectives on the gradient span (buf: size * n floats of device memory), in place,
 * after the default stream's work and before what it queues next (lt_nccl_join) */
static lt_status grow16(lt_nccl *c, int64_t n) { /* the bf16 staging for n values, none in flight */
    if (n <= c->n16) return LT_OK;
    lt_status w = wait_stream(c, "growing the bf16 buffer");
    if (w) return w;
    if (c->b16) cudaFree(c->b16);
    c->b16 = NULL, c->n16 = 0, c->used16 = 0;
    if (cudaMalloc(&c->b16, (size_t)n * sizeof *c->b16) != cudaSuccess)
        return lt_error(LT_ERR_NOMEM, "nccl: out of device memory for %lld bf16 values",
                        (long long)n);
    c->n16 = n;
    return LT_OK;
}

extern "C" lt_status lt_nccl_reduce_scatter(lt_nccl *c, float *buf, int64_t n) {
    if (n <= 0) return LT_OK;
    CHECK_BROKEN(c);
    cudaSetDevice(c->device);
    const int64_t total = n * c->size;
    float *mine = buf + (size_t)c->rank * (size_t)n;
    if (c->bf16) {
        lt_status g = grow16(c, total);
        if (g) return g;
    }
    cudaEventRecord(c->before, 0);
    cudaStreamWaitEvent(c->stream, c->before, 0);
    ncclResult_t r;
    if (c->bf16) { /* the whole span in bf16, the rank's shard of the sum widened back */
        __nv_bfloat16 *b = c->b16;
        k_to_bf16<<<grid(total), 256, 0, c->stream>>>(b, buf, total);
        r = g_nccl.reduce_scatter(b, b + (size_t)c->rank * (size_t)n, (size_t)n, ncclBfloat16,
                                  ncclSum, c->comm, c->stream);
        if (r == ncclSuccess)
            k_from_bf16<<<grid(n), 256, 0, c->stream>>>(mine, b + (size_t)c->rank * (size_t)n, n);
    } else {
        r = g_nccl.reduce_scatter(buf, mine, (size_t)n, ncclFloat32, ncclSum, c->comm, c->stream);
    }
    if (r != ncclSuccess) return nccl_err("ncclReduceScatter", r);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lt_error(LT_ERR_IO, "nccl: reduce-scatter on device %d: %s", c->device,
                        cudaGetErrorString(e));
    return lt_nccl_join(c);
}

extern "C" lt_status lt_nccl_allgather_dev(lt_nccl *c, float *buf, int64_t n) {
    if (n <= 0) return LT_OK;
    CHECK_BROKEN(c);
    cudaSetDevice(c->device);
    cudaEventRecord(c->before, 0);
    cudaStreamWaitEvent(c->stream, c->before, 0);
    /* fp32 always: these are the weights (and, for a checkpoint, AdamW's moments) */
    ncclResult_t r = g_nccl.all_gather(buf + (size_t)c->rank * (size_t)n, buf, (size_t)n,
                                       ncclFloat32, c->comm, c->stream);
    if (r != ncclSuccess) return nccl_err("ncclAllGather", r);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lt_error(LT_ERR_IO, "nccl: all-gather on device %d: %s", c->device,
                        cudaGetErrorString(e));
    return lt_nccl_join(c);
}

extern "C" lt_status lt_nccl_allgather(lt_nccl *c, const void *send, void *recv, size_t bytes) {
    if (!bytes) return LT_OK;
    CHECK_BROKEN(c);
    cudaSetDevice(c->device);
    const size_t total = bytes * (size_t)(c->size + 1);
    if (bytes > c->gcap) {
        if (c->gbuf) cudaFree(c->gbuf);
        if (c->hbuf) cudaFreeHost(c->hbuf);
        c->gbuf = c->hbuf = NULL, c->gcap = 0;
        if (cudaMalloc(&c->gbuf, total) != cudaSuccess ||
            cudaMallocHost(&c->hbuf, total) != cudaSuccess)
            return lt_error(LT_ERR_NOMEM, "nccl: out of memory for %zu bytes x %d ranks", bytes,
                            c->size);
        c->gcap = bytes;
    }
    unsigned char *dsend = c->gbuf, *drecv = c->gbuf + c->gcap;
    unsigned char *hsend = c->hbuf, *hrecv = c->hbuf + c->gcap;
    memcpy(hsend, send, bytes);
    /* pinned host memory: the copies are queued, never waited for here, so a collective that
     * cannot finish (a dead peer) is noticed by wait_stream instead of blocking in a copy */
    cudaMemcpyAsync(dsend, hsend, bytes, cudaMemcpyHostToDevice, c->stream);
    ncclResult_t r = g_nccl.all_gather(dsend, drecv, bytes, ncclUint8, c->comm, c->stream);
    if (r == ncclSuccess)
        cudaMemcpyAsync(hrecv, drecv, bytes * (size_t)c->size, cudaMemcpyDeviceToHost, c->stream);
    if (r != ncclSuccess) return nccl_err("ncclAllGather", r);
    /* every step's first collective (the stop flags): where a dead rank is noticed */
    lt_status w = wait_stream(c, "allgather");
    if (w) return w;
    memcpy(recv, hrecv, bytes * (size_t)c->size);
    return LT_OK;
}
#endif
