/* backend_cuda.cu - the CUDA backend (backend.h), first step: device memory and every op of the
 * table in fp32, checked against the reference backend by tests/backend/test_backend_ops.c.
 *
 * GEMMs through cuBLAS (fp32, no TF32: the checking mode); the model ops are plain kernels
 * written for correctness first: attention keeps O(T) memory (log-sum-exp saved, the backward
 * recomputes scores) but is not yet a tiled FlashAttention kernel; weights by storage format
 * are converted on the device for F32, F16, BF16, Q4_0, Q4_1, Q8_0 and NF4 (the lt_nf4's arrays
 * in device memory); provider rows (host memory) are reported unsupported. Reductions that return to the host (sumsq, all_finite, the
 * cross-entropy sums) go through a small device buffer the backend owns; every other op
 * allocates nothing. One stream (the legacy default), synchronised by get / sync.
 * Deterministic: no floating-point atomics except in the attention backward's dk / dv.
 * The bf16 compute mode's attention runs on the tensor cores (attention_fwd_bf16, below).
 * Generation (model_dev.c / forward.c on a device cache): attention over an fp32 or fp16 KV
 * cache (k_attn_kv, one thread per query head; fp16 widened exactly) and to_f16. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "loratune/backend.h"
}
#include "../backend_internal.h"

/* cuBLAS is opened when a CUDA backend is made, not linked: libcublasLt alone is ~540 MB, and
 * loading it costs every loratune process of a CUDA build ~215 MB of resident memory (measured:
 * 217 MB for an empty program linked with it) whether or not a GPU is used. The four functions
 * the backend calls, from libcublas.so.<major> (the loader's paths, then the toolkit's). */
typedef struct {
    void *lib;
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
    cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const float *, const float *, int, const float *, int,
                            const float *, float *, int);
    /* bf16 products (gemm_bf16): NULL in a cuBLAS without it (then the op is not offered) */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
    char err[256];
} cublas_fns;
static cublas_fns g_cublas;
static pthread_once_t g_cublas_once = PTHREAD_ONCE_INIT;
#define LT_STR2(x) #x
#define LT_STR(x) LT_STR2(x)
static void cublas_open(void) {
    const char *names[] = {"libcublas.so." LT_STR(CUBLAS_VER_MAJOR),
#ifdef LT_CUBLAS_DIR
                           LT_CUBLAS_DIR "/libcublas.so." LT_STR(CUBLAS_VER_MAJOR),
#endif
                           "libcublas.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !g_cublas.lib; i++)
        g_cublas.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!g_cublas.lib) {
        snprintf(g_cublas.err, sizeof g_cublas.err, "cannot open %s: %s", names[0], dlerror());
        return;
    }
    *(void **)&g_cublas.create = dlsym(g_cublas.lib, "cublasCreate_v2");
    *(void **)&g_cublas.destroy = dlsym(g_cublas.lib, "cublasDestroy_v2");
    *(void **)&g_cublas.set_math_mode = dlsym(g_cublas.lib, "cublasSetMathMode");
    *(void **)&g_cublas.sgemm = dlsym(g_cublas.lib, "cublasSgemm_v2");
    *(void **)&g_cublas.gemm_ex = dlsym(g_cublas.lib, "cublasGemmEx");
    if (!g_cublas.create || !g_cublas.destroy || !g_cublas.set_math_mode || !g_cublas.sgemm)
        snprintf(g_cublas.err, sizeof g_cublas.err, "%s lacks cublasCreate_v2 / cublasSgemm_v2",
                 names[0]);
}

typedef struct {
    int device;
    cublasHandle_t blas;
    double *red;   /* reduction buffer: RED doubles */
    double *h_red; /* its host copy */
    float *nf4_tab; /* device: the 16 NF4 code values, then bitsandbytes' 256-entry dynamic map */
    char desc[160]; /* lt_backend.desc */
    float *attn_d;  /* the attention backward's D (attn_scratch) */
    int64_t attn_d_n;
} cuda_ctx;
#define RED 4096

static cuda_ctx *CX(const lt_backend *be) {
    return (cuda_ctx *)be->ctx;
}
static unsigned blocks(int64_t n, int t) {
    int64_t b = (n + t - 1) / t;
    return (unsigned)(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}
#define GRID_LOOP(i, n)                                                                           \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                    \
         i += (int64_t)blockDim.x * gridDim.x)

/* ---- memory --------------------------------------------------------------------------------- */
static void *cu_alloc(const lt_backend *be, size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) return NULL;
    return p;
}
static void cu_free(const lt_backend *be, void *p) {
    if (p) cudaFree(p);
}
static void cu_set(const lt_backend *be, void *dst, const void *src, size_t n) {
    if (n) cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
}
static void cu_get(const lt_backend *be, void *dst, const void *src, size_t n) {
    if (n) cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost);
}
static void cu_copy(const lt_backend *be, void *dst, const void *src, size_t n) {
    if (n) cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice);
}
static void cu_zero(const lt_backend *be, void *dst, size_t n) {
    if (n) cudaMemset(dst, 0, n);
}
static void cu_sync(const lt_backend *be) {
    cudaDeviceSynchronize();
}
static int cu_mem_info(const lt_backend *be, int64_t *free_bytes, int64_t *total_bytes) {
    size_t fr = 0, to = 0;
    if (cudaMemGetInfo(&fr, &to) != cudaSuccess) return -1;
    if (free_bytes) *free_bytes = (int64_t)fr;
    if (total_bytes) *total_bytes = (int64_t)to;
    return 0;
}
static int cu_supports_dtype(const lt_backend *be, lt_dtype dt) {
    return dt == LT_DTYPE_F32 || dt == LT_DTYPE_F16 || dt == LT_DTYPE_BF16 || dt == LT_DTYPE_Q4_0 ||
           dt == LT_DTYPE_Q4_1 || dt == LT_DTYPE_Q8_0;
}

/* ---- GEMM (row-major through column-major cuBLAS: C^T = op(B)^T op(A)^T) ---------------------- */
static void cu_gemm(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb, float beta, float *C,
                    int ldc) {
    if (M <= 0 || N <= 0) return;
    g_cublas.sgemm(CX(be)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                K, &alpha, B, ldb, A, lda, &beta, C, ldc);
}

/* ---- bf16 compute: rounding and the bf16 GEMM (cublasGemmEx, fp32 accumulate) ---------------- */
/* lt_f32_to_bf16 (core.h) bit for bit: nearest even, a NaN kept a quiet NaN of the same sign and
 * payload's top bits (cuda_bf16.h's __float2bfloat16_rn makes every NaN 0x7fff) */
__device__ __forceinline__ uint32_t bf16_bits(float f) {
    const uint32_t x = __float_as_uint(f);
    return (x & 0x7fffffffu) > 0x7f800000u ? ((x >> 16) | 0x40) & 0xffffu
                                            : ((x + 0x7fffu + ((x >> 16) & 1)) >> 16) & 0xffffu;
}
__global__ void k_to_bf16(uint16_t *dst, const float *src, int64_t n) {
    GRID_LOOP(i, n) dst[i] = (uint16_t)bf16_bits(src[i]);
}
/* four at a time (k_to_bf16's rounding): 16-byte loads, 8-byte stores */
__global__ void k_to_bf16_4(uint2 *dst, const float4 *src, int64_t n4) {
    GRID_LOOP(i, n4) {
        const float4 x = src[i];
        dst[i] = make_uint2(bf16_bits(x.x) | bf16_bits(x.y) << 16,
                            bf16_bits(x.z) | bf16_bits(x.w) << 16);
    }
}
static void cu_to_bf16(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    int64_t n4 = 0;
    if ((((uintptr_t)dst) & 7) == 0 && (((uintptr_t)src) & 15) == 0) {
        n4 = n / 4;
        if (n4) k_to_bf16_4<<<blocks(n4, 256), 256>>>((uint2 *)dst, (const float4 *)src, n4);
    }
    const int64_t rest = n - n4 * 4;
    if (rest) k_to_bf16<<<blocks(rest, 256), 256>>>(dst + n4 * 4, src + n4 * 4, rest);
}
/* C = alpha op(A) op(B) + beta C with A, B bf16 and C fp32, every product and sum in fp32
 * (CUBLAS_COMPUTE_32F: no reduced-precision reductions), row-major as cu_gemm */
static void cu_gemm_bf16(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                         const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                         float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    g_cublas.gemm_ex(CX(be)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                     N, M, K, &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C,
                     CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

__global__ void k_add_bias(float *y, const float *b, int64_t N, int C) {
    GRID_LOOP(i, N * C) y[i] += b[i % C];
}
__global__ void k_scale_rows(float *y, const float *s, int64_t N, int C) {
    GRID_LOOP(i, N * C) y[i] *= s[i % C];
}
/* db[o] += sum_n dout[n][o] (one thread per column, rows in order: deterministic) */
__global__ void k_colsum_add(float *db, const float *d, int N, int C) {
    GRID_LOOP(o, C) {
        double s = 0;
        for (int n = 0; n < N; n++)
            s += d[(int64_t)n * C + o];
        db[o] += (float)s;
    }
}
__global__ void k_mul(float *y, const float *a, const float *b, int64_t n) {
    GRID_LOOP(i, n) y[i] = a[i] * b[i];
}
__global__ void k_fma_into(float *y, const float *a, const float *b, int64_t n) { /* y += a*b */
    GRID_LOOP(i, n) y[i] += a[i] * b[i];
}

static void cu_add_bias(const lt_backend *be, float *y, const float *b, int N, int C) {
    k_add_bias<<<blocks((int64_t)N * C, 256), 256>>>(y, b, N, C);
}
static void cu_scale_rows(const lt_backend *be, float *y, const float *s, int N, int C) {
    k_scale_rows<<<blocks((int64_t)N * C, 256), 256>>>(y, s, N, C);
}

static void cu_matmul_fwd(const lt_backend *be, float *out, const float *inp, const float *w,
                          const float *bias, int N, int C, int OC) {
    cu_gemm(be, 0, 1, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
    if (bias) cu_add_bias(be, out, bias, N, OC);
}
static void cu_matmul_bwd(const lt_backend *be, float *dinp, float *dw, float *dbias,
                          const float *dout, const float *inp, const float *w, int N, int C,
                          int OC) {
    if (dinp) cu_gemm(be, 0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) cu_gemm(be, 1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) k_colsum_add<<<blocks(OC, 128), 128>>>(dbias, dout, N, OC);
}

/* ---- LoRA / DoRA: the composition of ops_linear.inc over cuBLAS ------------------------------- */
static const float *masked(float *buf, const float *x, const float *mask, int64_t n) {
    if (!mask) return x;
    k_mul<<<blocks(n, 256), 256>>>(buf, x, mask, n);
    return buf;
}
static void cu_lora_fwd(const lt_backend *be, float *y, float *xa, const float *x, const float *W,
                        const float *bias, const float *A, const float *B, const float *mask,
                        int N, int C, int OC, int r, float scale, float *scratch) {
    const float *xd = masked(scratch, x, mask, (int64_t)N * C);
    if (W) cu_matmul_fwd(be, y, x, W, bias, N, C, OC); /* NULL: y holds the base product */
    cu_matmul_fwd(be, xa, xd, A, NULL, N, C, r);
    cu_gemm(be, 0, 1, N, OC, r, scale, xa, r, B, r, 1.0f, y, OC);
}
static void cu_lora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, const float *dy,
                        const float *x, const float *W, const float *A, const float *B,
                        const float *xa, const float *mask, int N, int C, int OC, int r,
                        float scale, float *scratch) {
    float *xdbuf = scratch, *dxa = scratch + (int64_t)N * (C + OC);
    cu_gemm(be, 0, 0, N, r, OC, scale, dy, OC, B, r, 0.0f, dxa, r);
    if (dB) cu_gemm(be, 1, 0, OC, r, N, scale, dy, OC, xa, r, 1.0f, dB, r);
    if (dA) {
        const float *xd = masked(xdbuf, x, mask, (int64_t)N * C);
        cu_matmul_bwd(be, NULL, dA, NULL, dxa, xd, A, N, C, r);
    }
    if (dx) {
        if (W) cu_matmul_bwd(be, dx, NULL, NULL, dy, x, W, N, C, OC);
        if (!mask) {
            cu_matmul_bwd(be, dx, NULL, NULL, dxa, x, A, N, C, r);
        } else {
            cudaMemset(xdbuf, 0, sizeof(float) * (size_t)N * C);
            cu_matmul_bwd(be, xdbuf, NULL, NULL, dxa, x, A, N, C, r);
            k_fma_into<<<blocks((int64_t)N * C, 256), 256>>>(dx, xdbuf, mask, (int64_t)N * C);
        }
    }
}
/* The sum of v over the block's threads (blockDim.x a power of two, at most 1024), in every
 * thread: a tree in shared memory, the same order on every run. */
__device__ double block_sum(double v) {
    __shared__ double part[1024];
    __syncthreads(); /* a previous call's part[0] may still be being read */
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    return part[0];
}

/* wnorm[o] = || W[o] + scale (B A)[o] || (one block per row, double sums) */
__global__ void k_dora_norm(float *wnorm, const float *W, const float *A, const float *B, int C,
                            int r, float scale) {
    const int o = blockIdx.x;
    double ss = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float ba = 0.0f;
        for (int j = 0; j < r; j++)
            ba += B[(int64_t)o * r + j] * A[(int64_t)j * C + c];
        float w = W[(int64_t)o * C + c] + scale * ba;
        ss += (double)w * w;
    }
    const double sum = block_sum(ss);
    if (threadIdx.x == 0) wnorm[o] = (float)sqrt(sum);
}
/* y[n][o] += (mag[o] / wnorm[o] - sub) * P[n][o] */
__global__ void k_dora_add(float *y, const float *P, const float *mag, const float *wnorm,
                           float sub, int64_t N, int OC) {
    GRID_LOOP(i, N * OC) {
        int o = (int)(i % OC);
        y[i] += (mag[o] / wnorm[o] - sub) * P[i];
    }
}
/* P[n][o] = dy[n][o] * (mag[o] / wnorm[o] - sub) */
__global__ void k_dora_scale(float *P, const float *dy, const float *mag, const float *wnorm,
                             float sub, int64_t N, int OC) {
    GRID_LOOP(i, N * OC) {
        int o = (int)(i % OC);
        P[i] = dy[i] * (mag[o] / wnorm[o] - sub);
    }
}
/* dmag[o] += sum_n dy[n][o] P[n][o] / wnorm[o] */
__global__ void k_dora_dmag(float *dmag, const float *dy, const float *P, const float *wnorm, int N,
                            int OC) {
    GRID_LOOP(o, OC) {
        double acc = 0;
        for (int n = 0; n < N; n++)
            acc += (double)dy[(int64_t)n * OC + o] * P[(int64_t)n * OC + o];
        dmag[o] += (float)(acc / wnorm[o]);
    }
}
static void cu_dora_fwd(const lt_backend *be, float *y, float *wnorm, float *xa, const float *x,
                        const float *W, const float *bias, const float *A, const float *B,
                        const float *mag, const float *mask, int N, int C, int OC, int r,
                        float scale, float *scratch) {
    float *xdbuf = scratch, *P = scratch + (int64_t)N * C;
    k_dora_norm<<<OC, 256>>>(wnorm, W, A, B, C, r, scale);
    const float *xd = masked(xdbuf, x, mask, (int64_t)N * C);
    cu_matmul_fwd(be, y, x, W, bias, N, C, OC);
    cu_matmul_fwd(be, P, xd, W, NULL, N, C, OC);
    k_dora_add<<<blocks((int64_t)N * OC, 256), 256>>>(y, P, mag, wnorm, 1.0f, N, OC);
    cu_matmul_fwd(be, xa, xd, A, NULL, N, C, r);
    cu_gemm(be, 0, 1, N, OC, r, scale, xa, r, B, r, 0.0f, P, OC);
    k_dora_add<<<blocks((int64_t)N * OC, 256), 256>>>(y, P, mag, wnorm, 0.0f, N, OC);
}
static void cu_dora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, float *dmag,
                        const float *dy, const float *x, const float *W, const float *A,
                        const float *B, const float *mag, const float *wnorm, const float *xa,
                        const float *mask, int N, int C, int OC, int r, float scale,
                        float *scratch) {
    float *xdbuf = scratch, *P = scratch + (int64_t)N * C, *dxa = scratch + (int64_t)N * (C + OC);
    const float *xd = masked(xdbuf, x, mask, (int64_t)N * C);
    if (dmag) {
        cu_matmul_fwd(be, P, xd, W, NULL, N, C, OC);
        cu_gemm(be, 0, 1, N, OC, r, scale, xa, r, B, r, 1.0f, P, OC);
        k_dora_dmag<<<blocks(OC, 128), 128>>>(dmag, dy, P, wnorm, N, OC);
    }
    k_dora_scale<<<blocks((int64_t)N * OC, 256), 256>>>(P, dy, mag, wnorm, 0.0f, N, OC);
    cu_gemm(be, 0, 0, N, r, OC, scale, P, OC, B, r, 0.0f, dxa, r);
    if (dB) cu_gemm(be, 1, 0, OC, r, N, scale, P, OC, xa, r, 1.0f, dB, r);
    if (dA) cu_matmul_bwd(be, NULL, dA, NULL, dxa, xd, A, N, C, r);
    if (!dx) return;
    if (!mask) {
        cu_matmul_bwd(be, dx, NULL, NULL, P, x, W, N, C, OC);
        cu_matmul_bwd(be, dx, NULL, NULL, dxa, x, A, N, C, r);
        return;
    }
    cu_matmul_bwd(be, dx, NULL, NULL, dy, x, W, N, C, OC);
    k_dora_scale<<<blocks((int64_t)N * OC, 256), 256>>>(P, dy, mag, wnorm, 1.0f, N, OC);
    cudaMemset(xdbuf, 0, sizeof(float) * (size_t)N * C);
    cu_matmul_bwd(be, xdbuf, NULL, NULL, P, x, W, N, C, OC);
    cu_matmul_bwd(be, xdbuf, NULL, NULL, dxa, x, A, N, C, r);
    k_fma_into<<<blocks((int64_t)N * C, 256), 256>>>(dx, xdbuf, mask, (int64_t)N * C);
}

/* ---- weights by storage format -------------------------------------------------------------- */
__device__ float f16_val(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    return __half2float(*(const __half *)&h);
}
/* element i of values stored as dt from src (rows of whole blocks for the quant types) */
__device__ float elem_f32(const uint8_t *src, int dt, int64_t i) {
    if (dt == LT_DTYPE_F32) return ((const float *)src)[i];
    if (dt == LT_DTYPE_F16) return f16_val(src + 2 * i);
    if (dt == LT_DTYPE_BF16) {
        uint32_t u = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
        return __uint_as_float(u);
    }
    const int64_t b = i / 32, j = i % 32;
    if (dt == LT_DTYPE_Q8_0) {
        const uint8_t *q = src + b * 34;
        return (float)(int8_t)q[2 + j] * f16_val(q);
    }
    if (dt == LT_DTYPE_Q4_0) {
        const uint8_t *q = src + b * 18;
        int x = j < 16 ? (q[2 + j] & 0x0F) : (q[2 + j - 16] >> 4);
        return (float)(x - 8) * f16_val(q);
    }
    /* Q4_1 */
    const uint8_t *q = src + b * 20;
    int x = j < 16 ? (q[4 + j] & 0x0F) : (q[4 + j - 16] >> 4);
    return (float)x * f16_val(q) + f16_val(q + 2);
}
__global__ void k_to_f32(float *dst, const uint8_t *src, int dt, int64_t n) {
    GRID_LOOP(i, n) dst[i] = elem_f32(src, dt, i);
}
__global__ void k_to_bf16w(uint16_t *dst, const uint8_t *src, int dt, int64_t n) {
    GRID_LOOP(i, n) dst[i] = (uint16_t)bf16_bits(elem_f32(src, dt, i));
}
/* NF4 element i: the lt_nf4's arrays are device memory (tab: code, map) */
__device__ float nf4_elem(const uint8_t *codes, const float *absmax, const uint8_t *qabsmax,
                          const float *absmax2, float offset, int dq, const float *tab,
                          int64_t i) {
    const int64_t b = i / LT_NF4_BLOCK;
    const float a = dq ? tab[16 + qabsmax[b]] * absmax2[b / LT_NF4_ABSMAX_BLOCK] + offset
                       : absmax[b];
    const uint8_t byte = codes[i >> 1];
    return tab[(i & 1) ? (byte & 15) : (byte >> 4)] * a;
}
/* NF4 elements [begin, begin + n) as fp32, or (k_nf4_bf16) rounded to bf16 */
__global__ void k_nf4(float *dst, const uint8_t *codes, const float *absmax, const uint8_t *qabsmax,
                      const float *absmax2, float offset, int dq, const float *tab, int64_t begin,
                      int64_t n) {
    GRID_LOOP(k, n)
    dst[k] = nf4_elem(codes, absmax, qabsmax, absmax2, offset, dq, tab, begin + k);
}
__global__ void k_nf4_bf16(uint16_t *dst, const uint8_t *codes, const float *absmax,
                           const uint8_t *qabsmax, const float *absmax2, float offset, int dq,
                           const float *tab, int64_t begin, int64_t n) {
    GRID_LOOP(k, n)
    dst[k] = (uint16_t)bf16_bits(nf4_elem(codes, absmax, qabsmax, absmax2, offset, dq, tab,
                                          begin + k));
}
static lt_status cu_weight_f32(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                               int64_t n, float *scratch, const float **out) {
    if (w->nf4) { /* the struct on the host, its arrays on the device */
        const lt_nf4 *q = w->nf4;
        k_nf4<<<blocks(n * w->cols, 256), 256>>>(scratch, q->codes, q->absmax, q->qabsmax,
                                                 q->absmax2, q->offset, q->double_quant,
                                                 CX(be)->nf4_tab, row0 * w->cols, n * w->cols);
        *out = scratch;
        return LT_OK;
    }
    if (w->rows_fn || !cu_supports_dtype(be, w->dtype))
        return lt_error(LT_ERR_UNSUPPORTED, "cuda backend: weights stored as %s",
                        w->rows_fn ? "provider rows" : lt_dtype_name(w->dtype));
    if (w->dtype == LT_DTYPE_F32) {
        *out = (const float *)w->data + row0 * w->cols;
        return LT_OK;
    }
    const uint8_t *src = (const uint8_t *)w->data + lt_dtype_nbytes(w->dtype, row0 * w->cols);
    k_to_f32<<<blocks(n * w->cols, 256), 256>>>(scratch, src, (int)w->dtype, n * w->cols);
    *out = scratch;
    return LT_OK;
}
static lt_status cu_weight_bf16(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                                int64_t n, uint16_t *dst) {
    if (w->nf4) {
        const lt_nf4 *q = w->nf4;
        k_nf4_bf16<<<blocks(n * w->cols, 256), 256>>>(dst, q->codes, q->absmax, q->qabsmax,
                                                      q->absmax2, q->offset, q->double_quant,
                                                      CX(be)->nf4_tab, row0 * w->cols,
                                                      n * w->cols);
        return LT_OK;
    }
    if (w->rows_fn || !cu_supports_dtype(be, w->dtype)) return LT_ERR_UNSUPPORTED;
    if (w->dtype == LT_DTYPE_F32) {
        cu_to_bf16(be, dst, (const float *)w->data + row0 * w->cols, n * w->cols);
        return LT_OK;
    }
    const uint8_t *src = (const uint8_t *)w->data + lt_dtype_nbytes(w->dtype, row0 * w->cols);
    k_to_bf16w<<<blocks(n * w->cols, 256), 256>>>(dst, src, (int)w->dtype, n * w->cols);
    return LT_OK;
}
static int64_t cu_matmul_w_scratch(const lt_backend *be, int64_t max_cols) {
    return max_cols > (1 << 22) ? max_cols : (1 << 22); /* 16 MiB of rows at a time */
}

/* ---- embedding, norms, rope, SwiGLU ------------------------------------------------------------ */
__global__ void k_embed(float *out, const int32_t *tok, const float *wte, int64_t N, int C) {
    GRID_LOOP(i, N * C) out[i] = wte[(int64_t)tok[i / C] * C + i % C];
}
/* one thread per column, tokens in order: the reference's summation order */
__global__ void k_embed_bwd(float *dwte, const float *dout, const int32_t *tok, int N, int C) {
    GRID_LOOP(c, C) {
        for (int n = 0; n < N; n++)
            dwte[(int64_t)tok[n] * C + c] += dout[(int64_t)n * C + c];
    }
}
static lt_status cu_embedding_fwd(const lt_backend *be, float *out, const int32_t *tokens,
                                  const float *wte, int N, int C, int V) {
    /* tokens are device memory: checked on a host copy (they come from data) */
    int32_t *h = (int32_t *)malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    if (!h) return lt_error(LT_ERR_NOMEM, "embedding: out of memory");
    cudaMemcpy(h, tokens, sizeof(int32_t) * (size_t)N, cudaMemcpyDeviceToHost);
    for (int n = 0; n < N; n++)
        if (h[n] < 0 || h[n] >= V) {
            lt_status e = lt_error(LT_ERR_ARG, "embedding: token %d at position %d is outside [0, %d)",
                                   (int)h[n], n, V);
            free(h);
            return e;
        }
    free(h);
    k_embed<<<blocks((int64_t)N * C, 256), 256>>>(out, tokens, wte, N, C);
    return LT_OK;
}
static void cu_embedding_bwd(const lt_backend *be, float *dwte, const float *dout,
                             const int32_t *tokens, int N, int C) {
    k_embed_bwd<<<blocks(C, 128), 128>>>(dwte, dout, tokens, N, C);
}

/* one block per row; the reference's math (sum of squares in double) */
__global__ void k_rmsnorm(float *out, float *rstd, const float *inp, const float *w, int C,
                          float eps) {
    const int n = blockIdx.x;
    const float *x = inp + (int64_t)n * C;
    double ss = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        ss += (double)x[c] * x[c];
    const float r = 1.0f / sqrtf((float)(block_sum(ss) / C) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        out[(int64_t)n * C + c] = w[c] * (x[c] * r);
}
/* dinp[n] += r (dxh - xh * mean(dxh . xh)), xh = x r, dxh = dout w */
__global__ void k_rmsnorm_bwd_x(float *dinp, const float *dout, const float *inp, const float *w,
                                const float *rstd, int C) {
    const int n = blockIdx.x;
    const float *x = inp + (int64_t)n * C, *dy = dout + (int64_t)n * C;
    const float r = rstd[n];
    double s = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        s += (double)(dy[c] * w[c]) * (x[c] * r);
    const float mean = (float)(block_sum(s) / C);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dinp[(int64_t)n * C + c] += r * (dy[c] * w[c] - x[c] * r * mean);
}
__global__ void k_rmsnorm_bwd_w(float *dw, const float *dout, const float *inp, const float *rstd,
                                int N, int C) {
    GRID_LOOP(c, C) {
        double s = 0;
        for (int n = 0; n < N; n++)
            s += (double)dout[(int64_t)n * C + c] * (inp[(int64_t)n * C + c] * rstd[n]);
        dw[c] += (float)s;
    }
}
static void cu_rmsnorm_fwd(const lt_backend *be, float *out, float *rstd, const float *inp,
                           const float *w, int N, int C, float eps) {
    if (N > 0) k_rmsnorm<<<N, 256>>>(out, rstd, inp, w, C, eps);
}
static void cu_rmsnorm_bwd(const lt_backend *be, float *dinp, float *dw, const float *dout,
                           const float *inp, const float *w, const float *rstd, int N, int C) {
    if (dinp && N > 0) k_rmsnorm_bwd_x<<<N, 256>>>(dinp, dout, inp, w, rstd, C);
    if (dw) k_rmsnorm_bwd_w<<<blocks(C, 128), 128>>>(dw, dout, inp, rstd, N, C);
}

/* each pair (i, j) of each head of each row rotated by sign * angle of its position */
__global__ void k_rope(float *out, const float *inp, const int32_t *pos, const float *ct,
                       const float *st, int64_t N, int NH, int HD, int il, float sign) {
    const int half = HD / 2;
    GRID_LOOP(k, N * NH * half) {
        const int64_t n = k / ((int64_t)NH * half);
        const int h = (int)(k / half % NH), i = (int)(k % half);
        const int64_t base = (n * NH + h) * HD;
        const int64_t a = base + (il ? 2 * i : i), b = base + (il ? 2 * i + 1 : i + half);
        const float c = ct[(int64_t)pos[n] * half + i], s = sign * st[(int64_t)pos[n] * half + i];
        const float x0 = inp[a], x1 = inp[b];
        out[a] = x0 * c - x1 * s;
        out[b] = x1 * c + x0 * s;
    }
}
static void cu_rope_fwd(const lt_backend *be, float *out, const float *inp, const int32_t *pos,
                        const float *ct, const float *st, int N, int NH, int HD, int il) {
    k_rope<<<blocks((int64_t)N * NH * (HD / 2), 256), 256>>>(out, inp, pos, ct, st, N, NH, HD, il,
                                                             1.0f);
}
static void cu_rope_bwd(const lt_backend *be, float *dinp, const float *dout, const int32_t *pos,
                        const float *ct, const float *st, int N, int NH, int HD, int il) {
    k_rope<<<blocks((int64_t)N * NH * (HD / 2), 256), 256>>>(dinp, dout, pos, ct, st, N, NH, HD,
                                                             il, -1.0f);
}

__global__ void k_swiglu(float *out, const float *g, const float *u, int64_t n) {
    GRID_LOOP(i, n) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
__global__ void k_swiglu_bwd(float *dg, float *du, const float *dout, const float *g,
                             const float *u, int64_t n) {
    GRID_LOOP(i, n) {
        const float s = 1.0f / (1.0f + expf(-g[i]));
        dg[i] = dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = dout[i] * g[i] * s;
    }
}
static void cu_swiglu_fwd(const lt_backend *be, float *out, const float *g, const float *u,
                          int64_t n) {
    k_swiglu<<<blocks(n, 256), 256>>>(out, g, u, n);
}
static void cu_swiglu_bwd(const lt_backend *be, float *dg, float *du, const float *dout,
                          const float *g, const float *u, int64_t n) {
    k_swiglu_bwd<<<blocks(n, 256), 256>>>(dg, du, dout, g, u, n);
}

/* ---- attention (O(T) memory: lse saved, scores recomputed) ---------------------------------- */
__device__ int row_of(const int32_t *off, int b, int T, int64_t *start) {
    *start = off ? off[b] : (int64_t)b * T;
    return off ? off[b + 1] - off[b] : T;
}
__device__ bool allowed(const int32_t *seq, int64_t r, int t, int s, int window) {
    if (s > t) return false;
    if (seq && seq[r + s] != seq[r + t]) return false;
    if (window > 0 && t - s >= window) return false;
    return true;
}
/* one thread per (row b, query t, head h): two passes over the keys (max, then sum-exp and the
 * weighted values accumulated in out) */
__global__ void k_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                           int HD, int window) {
    const int64_t total = (int64_t)B * T * NH;
    GRID_LOOP(id, total) {
        const int h = (int)(id % NH), t = (int)(id / NH % T), b = (int)(id / NH / T);
        int64_t r;
        const int len = row_of(off, b, T, &r);
        if (t >= len) continue;
        const int kvh = h / (NH / NKV);
        const float sc = rsqrtf((float)HD);
        const float *qt = q + ((r + t) * NH + h) * HD;
        float mx = -INFINITY;
        for (int s = 0; s <= t; s++) {
            if (!allowed(seq, r, t, s, window)) continue;
            const float *ks = k + ((r + s) * NKV + kvh) * HD;
            float d = 0;
            for (int i = 0; i < HD; i++)
                d += qt[i] * ks[i];
            mx = fmaxf(mx, d * sc);
        }
        float *o = out + ((r + t) * NH + h) * HD;
        for (int i = 0; i < HD; i++)
            o[i] = 0;
        double sum = 0;
        for (int s = 0; s <= t; s++) {
            if (!allowed(seq, r, t, s, window)) continue;
            const float *ks = k + ((r + s) * NKV + kvh) * HD, *vs = v + ((r + s) * NKV + kvh) * HD;
            float d = 0;
            for (int i = 0; i < HD; i++)
                d += qt[i] * ks[i];
            const float p = expf(d * sc - mx);
            sum += p;
            for (int i = 0; i < HD; i++)
                o[i] += p * vs[i];
        }
        const float inv = (float)(1.0 / sum);
        for (int i = 0; i < HD; i++)
            o[i] *= inv;
        lse[r * NH + (int64_t)h * len + t] = mx + (float)log(sum);
    }
}
/* one thread per (row, query, head): P recomputed from lse; dq written for its own query, dk and
 * dv added with atomics (the query heads of a group and the queries of a key share them) */
__global__ void k_attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                           int HD, int window) {
    const int64_t total = (int64_t)B * T * NH;
    GRID_LOOP(id, total) {
        const int h = (int)(id % NH), t = (int)(id / NH % T), b = (int)(id / NH / T);
        int64_t r;
        const int len = row_of(off, b, T, &r);
        if (t >= len) continue;
        const int kvh = h / (NH / NKV);
        const float sc = rsqrtf((float)HD);
        const int64_t qi = ((r + t) * NH + h) * HD;
        const float L = lse[r * NH + (int64_t)h * len + t];
        float D = 0;
        for (int i = 0; i < HD; i++)
            D += dout[qi + i] * out[qi + i];
        for (int s = 0; s <= t; s++) {
            if (!allowed(seq, r, t, s, window)) continue;
            const int64_t ki = ((r + s) * NKV + kvh) * HD;
            float d = 0, dpv = 0;
            for (int i = 0; i < HD; i++) {
                d += q[qi + i] * k[ki + i];
                dpv += dout[qi + i] * v[ki + i];
            }
            const float p = expf(d * sc - L);
            const float ds = p * (dpv - D) * sc;
            for (int i = 0; i < HD; i++) {
                dq[qi + i] += ds * k[ki + i];
                atomicAdd(&dk[ki + i], ds * q[qi + i]);
                atomicAdd(&dv[ki + i], p * dout[qi + i]);
            }
        }
    }
}
/* ---- tiled attention (head dims 8, 16, 32, 64, 128: the models' sizes) --------------------------
 * FlashAttention-2's order of work, in fp32: no T x T matrix, K / V (or Q / dO) tiles staged in
 * shared memory and read by every thread of the block, each thread owning one query (forward,
 * dq) or one key (dk, dv) with its accumulators in registers. Forward: one block per (query tile
 * of AT, head, row), the keys tile by tile up to the tile's last query, online softmax over
 * groups of AG keys. Backward without atomics, so deterministic: k_attn_dq (one block per query
 * tile and head, like the forward) and k_attn_dkv (one block per key tile and kv head, looping
 * over the group's query heads and the query tiles at or after the key tile); both recompute
 * the probabilities from lse and D = rowsum(dO * O) (k_attn_delta). */
#define AG 16 /* keys whose scores a forward thread holds at once */
/* queries / keys per tile = threads per block, by head dim: the tiles of k_attn_dkv (four of
 * AT x HD floats) within the 48 KB of static shared memory */
#define AT_OF(hd) ((hd) <= 32 ? 64 : (hd) <= 64 ? 32 : 16)

template <int HD, int AT>
__global__ void __launch_bounds__(AT) k_attn_fwd_t(float *out, float *lse, const float *q,
                                                   const float *k, const float *v,
                                                   const int32_t *seq, const int32_t *off, int T,
                                                   int NH, int NKV, int window) {
    __shared__ float Ks[AT][HD], Vs[AT][HD];
    const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * AT, t = t0 + threadIdx.x;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (t0 >= len) return;
    const int kvh = h / (NH / NKV);
    const float sc = rsqrtf((float)HD);
    const bool live = t < len;
    float qr[HD], o[HD];
    const float *qt = q + ((r + (live ? t : t0)) * NH + h) * HD;
#pragma unroll
    for (int i = 0; i < HD; i++) {
        qr[i] = qt[i] * sc;
        o[i] = 0.0f;
    }
    float mx = -INFINITY, sum = 0.0f;
    const int tlast = min(t0 + AT, len) - 1;
    const int s_begin = window > 0 ? max(0, t0 - window + 1) / AT * AT : 0;
    for (int s0 = s_begin; s0 <= tlast; s0 += AT) {
        const int ns = min(AT, tlast + 1 - s0);
        __syncthreads();
        for (int e = threadIdx.x; e < ns * HD; e += AT) {
            const int j = e / HD, i = e % HD;
            const int64_t g = ((r + s0 + j) * NKV + kvh) * HD + i;
            Ks[j][i] = k[g];
            Vs[j][i] = v[g];
        }
        __syncthreads();
        if (!live) continue;
        for (int j0 = 0; j0 < ns; j0 += AG) {
            float sj[AG];
            float m2 = mx;
#pragma unroll
            for (int jj = 0; jj < AG; jj++) {
                const int j = j0 + jj, sidx = s0 + j;
                float d = -INFINITY;
                if (j < ns && allowed(seq, r, t, sidx, window)) {
                    d = 0.0f;
#pragma unroll
                    for (int i = 0; i < HD; i++)
                        d += qr[i] * Ks[j][i];
                }
                sj[jj] = d;
                m2 = fmaxf(m2, d);
            }
            if (m2 == -INFINITY) continue; /* nothing allowed yet */
            const float a = expf(mx - m2);
            sum *= a;
#pragma unroll
            for (int i = 0; i < HD; i++)
                o[i] *= a;
#pragma unroll
            for (int jj = 0; jj < AG; jj++) {
                if (sj[jj] == -INFINITY) continue;
                const float pj = expf(sj[jj] - m2);
                sum += pj;
                const int j = j0 + jj;
#pragma unroll
                for (int i = 0; i < HD; i++)
                    o[i] += pj * Vs[j][i];
            }
            mx = m2;
        }
    }
    if (!live) return;
    const float inv = 1.0f / sum;
    float *ot = out + ((r + t) * NH + h) * HD;
#pragma unroll
    for (int i = 0; i < HD; i++)
        ot[i] = o[i] * inv;
    lse[r * NH + (int64_t)h * len + t] = mx + logf(sum);
}

/* D[r*NH + h*len + t] = sum_i dout * out of query t, head h (the softmax backward's row term) */
__global__ void k_attn_delta(float *D, const float *dout, const float *out, const int32_t *off,
                             int B, int T, int NH, int HD) {
    GRID_LOOP(id, (int64_t)B * T * NH) {
        const int h = (int)(id % NH), t = (int)(id / NH % T), b = (int)(id / NH / T);
        int64_t r;
        const int len = row_of(off, b, T, &r);
        if (t >= len) continue;
        const int64_t qi = ((r + t) * NH + h) * HD;
        float d = 0.0f;
        for (int i = 0; i < HD; i++)
            d += dout[qi + i] * out[qi + i];
        D[r * NH + (int64_t)h * len + t] = d;
    }
}

/* dq += sum_s ds[t][s] k_s, ds = p (dO.v_s - D) / sqrt(HD): one thread per query */
template <int HD, int AT>
__global__ void __launch_bounds__(AT) k_attn_dq_t(float *dq, const float *dout, const float *q,
                                                  const float *k, const float *v,
                                                  const float *lse, const float *Dl,
                                                  const int32_t *seq, const int32_t *off, int T,
                                                  int NH, int NKV, int window) {
    __shared__ float Ks[AT][HD], Vs[AT][HD];
    const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * AT, t = t0 + threadIdx.x;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (t0 >= len) return;
    const int kvh = h / (NH / NKV);
    const float sc = rsqrtf((float)HD);
    const bool live = t < len;
    const int64_t qi = ((r + (live ? t : t0)) * NH + h) * HD;
    float qr[HD], gr[HD], acc[HD];
#pragma unroll
    for (int i = 0; i < HD; i++) {
        qr[i] = q[qi + i] * sc;
        gr[i] = dout[qi + i];
        acc[i] = 0.0f;
    }
    const float L = live ? lse[r * NH + (int64_t)h * len + t] : 0.0f;
    const float Dt = live ? Dl[r * NH + (int64_t)h * len + t] : 0.0f;
    const int tlast = min(t0 + AT, len) - 1;
    const int s_begin = window > 0 ? max(0, t0 - window + 1) / AT * AT : 0;
    for (int s0 = s_begin; s0 <= tlast; s0 += AT) {
        const int ns = min(AT, tlast + 1 - s0);
        __syncthreads();
        for (int e = threadIdx.x; e < ns * HD; e += AT) {
            const int j = e / HD, i = e % HD;
            const int64_t g = ((r + s0 + j) * NKV + kvh) * HD + i;
            Ks[j][i] = k[g];
            Vs[j][i] = v[g];
        }
        __syncthreads();
        if (!live) continue;
        for (int j = 0; j < ns; j++) {
            if (!allowed(seq, r, t, s0 + j, window)) continue;
            float d = 0.0f, dp = 0.0f;
#pragma unroll
            for (int i = 0; i < HD; i++) {
                d += qr[i] * Ks[j][i];
                dp += gr[i] * Vs[j][i];
            }
            const float ds = expf(d - L) * (dp - Dt) * sc;
#pragma unroll
            for (int i = 0; i < HD; i++)
                acc[i] += ds * Ks[j][i];
        }
    }
    if (!live) return;
#pragma unroll
    for (int i = 0; i < HD; i++)
        dq[qi + i] += acc[i];
}

/* dk_s += sum_t ds[t][s] q_t, dv_s += sum_t p[t][s] dO_t over the group's query heads: one thread
 * per key; the key's own k, v rows in shared memory (padded: a thread per row, no conflicts) */
template <int HD, int AT>
__global__ void __launch_bounds__(AT) k_attn_dkv_t(float *dk, float *dv, const float *dout,
                                                   const float *q, const float *k, const float *v,
                                                   const float *lse, const float *Dl,
                                                   const int32_t *seq, const int32_t *off, int T,
                                                   int NH, int NKV, int window) {
    __shared__ float Qs[AT][HD], Gs[AT][HD];
    __shared__ float Ls[AT], Ds[AT];
    __shared__ float Kr[AT][HD + 1], Vr[AT][HD + 1];
    const int b = blockIdx.z, kvh = blockIdx.y, s0 = blockIdx.x * AT, s = s0 + threadIdx.x;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (s0 >= len) return;
    const int G = NH / NKV;
    const float sc = rsqrtf((float)HD);
    const bool live = s < len;
    const int nk = min(AT, len - s0);
    for (int e = threadIdx.x; e < nk * HD; e += AT) {
        const int j = e / HD, i = e % HD;
        const int64_t g = ((r + s0 + j) * NKV + kvh) * HD + i;
        Kr[j][i] = k[g];
        Vr[j][i] = v[g];
    }
    float ak[HD], av[HD];
#pragma unroll
    for (int i = 0; i < HD; i++)
        ak[i] = av[i] = 0.0f;
    const int tmax = window > 0 ? min(len, s0 + AT - 1 + window) : len; /* queries < tmax */
    for (int hh = 0; hh < G; hh++) {
        const int h = kvh * G + hh;
        for (int t0 = s0; t0 < tmax; t0 += AT) {
            const int nq = min(AT, tmax - t0);
            __syncthreads();
            for (int e = threadIdx.x; e < nq * HD; e += AT) {
                const int j = e / HD, i = e % HD;
                const int64_t g = ((r + t0 + j) * NH + h) * HD + i;
                Qs[j][i] = q[g] * sc;
                Gs[j][i] = dout[g];
            }
            if (threadIdx.x < nq) {
                Ls[threadIdx.x] = lse[r * NH + (int64_t)h * len + t0 + threadIdx.x];
                Ds[threadIdx.x] = Dl[r * NH + (int64_t)h * len + t0 + threadIdx.x];
            }
            __syncthreads();
            if (!live) continue;
            for (int j = 0; j < nq; j++) {
                if (!allowed(seq, r, t0 + j, s, window)) continue;
                float d = 0.0f, dp = 0.0f;
#pragma unroll
                for (int i = 0; i < HD; i++) {
                    d += Qs[j][i] * Kr[threadIdx.x][i];
                    dp += Gs[j][i] * Vr[threadIdx.x][i];
                }
                const float p = expf(d - Ls[j]);
                const float ds = p * (dp - Ds[j]);
#pragma unroll
                for (int i = 0; i < HD; i++) {
                    av[i] += p * Gs[j][i];
                    ak[i] += ds * Qs[j][i]; /* Qs holds q / sqrt(HD): ds's own scale */
                }
            }
        }
    }
    if (!live) return;
    const int64_t ki = ((r + s) * NKV + kvh) * HD;
#pragma unroll
    for (int i = 0; i < HD; i++) {
        dk[ki + i] += ak[i];
        dv[ki + i] += av[i];
    }
}

/* the scratch of the backward's D: B*T*NH floats, grown as needed (the backend's own) */
static float *attn_scratch(const lt_backend *be, int64_t n);
/* D = rowsum(dO * O) of every (query, head) into that scratch: the tiled backwards' row term;
 * NULL when the scratch cannot be had (out of device memory: the plain kernel needs none) */
static const float *attn_delta(const lt_backend *be, const float *dout, const float *out,
                               const int32_t *off, int B, int T, int NH, int HD) {
    float *D = attn_scratch(be, (int64_t)B * T * NH);
    if (D) k_attn_delta<<<blocks((int64_t)B * T * NH, 256), 256>>>(D, dout, out, off, B, T, NH, HD);
    return D;
}

template <int HD>
static void attn_fwd_hd(float *out, float *lse, const float *q, const float *k, const float *v,
                        const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                        int window) {
    constexpr int AT = AT_OF(HD);
    dim3 g((unsigned)((T + AT - 1) / AT), (unsigned)NH, (unsigned)B);
    k_attn_fwd_t<HD, AT><<<g, AT>>>(out, lse, q, k, v, seq, off, T, NH, NKV, window);
}
template <int HD>
static void attn_bwd_hd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *lse, const float *D,
                        const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                        int window) {
    constexpr int AT = AT_OF(HD);
    dim3 g((unsigned)((T + AT - 1) / AT), (unsigned)NH, (unsigned)B);
    k_attn_dq_t<HD, AT><<<g, AT>>>(dq, dout, q, k, v, lse, D, seq, off, T, NH, NKV, window);
    dim3 g2((unsigned)((T + AT - 1) / AT), (unsigned)NKV, (unsigned)B);
    k_attn_dkv_t<HD, AT><<<g2, AT>>>(dk, dv, dout, q, k, v, lse, D, seq, off, T, NH, NKV, window);
}
#define ATTN_HD_CASES(X) X(8) X(16) X(32) X(64) X(128)

static void cu_attention_fwd(const lt_backend *be, float *out, float *lse, const float *q,
                             const float *k, const float *v, const int32_t *seq,
                             const int32_t *off, int B, int T, int NH, int NKV, int HD,
                             int window) {
    if (B <= 0 || T <= 0) return;
    switch (HD) {
#define X(n)                                                                                       \
    case n: attn_fwd_hd<n>(out, lse, q, k, v, seq, off, B, T, NH, NKV, window); return;
        ATTN_HD_CASES(X)
#undef X
    default: break;
    }
    k_attn_fwd<<<blocks((int64_t)B * T * NH, 64), 64>>>(out, lse, q, k, v, seq, off, B, T, NH, NKV,
                                                        HD, window);
}
static void cu_attention_bwd(const lt_backend *be, float *dq, float *dk, float *dv,
                             const float *dout, const float *q, const float *k, const float *v,
                             const float *out, const float *lse, const int32_t *seq,
                             const int32_t *off, int B, int T, int NH, int NKV, int HD,
                             int window) {
    if (B <= 0 || T <= 0) return;
    const float *D;
    switch (HD) {
#define X(n)                                                                                       \
    case n:                                                                                        \
        if (!(D = attn_delta(be, dout, out, off, B, T, NH, HD))) break;                            \
        attn_bwd_hd<n>(dq, dk, dv, dout, q, k, v, lse, D, seq, off, B, T, NH, NKV, window);        \
        return;
        ATTN_HD_CASES(X)
#undef X
    default: break;
    }
    k_attn_bwd<<<blocks((int64_t)B * T * NH, 64), 64>>>(dq, dk, dv, dout, q, k, v, out, lse, seq,
                                                        off, B, T, NH, NKV, HD, window);
}

static float *attn_scratch(const lt_backend *be, int64_t n) {
    cuda_ctx *c = CX(be);
    if (n > c->attn_d_n) {
        if (c->attn_d) cudaFree(c->attn_d);
        c->attn_d = NULL;
        c->attn_d_n = 0;
        if (cudaMalloc(&c->attn_d, sizeof(float) * (size_t)n) != cudaSuccess) {
            cudaGetLastError(); /* not sticky: clear it */
            c->attn_d = NULL;
            return NULL;
        }
        c->attn_d_n = n;
    }
    return c->attn_d;
}

/* ---- bf16 attention on tensor cores (attention_fwd_bf16 / attention_bwd_bf16) ----------------
 * The bf16 compute mode's attention, as autocast's SDPA runs it: q, k, v and dO rounded to bf16,
 * the probabilities P and the score gradients dS rounded to bf16 before their products, every
 * product summed in fp32 on the tensor cores (mma.sync m16n8k16), softmax statistics, O and the
 * gradients accumulated in fp32. FlashAttention-2's order of work, no T x T matrix: a block of
 * FW warps owns FR queries (forward, dq) or FR keys (dk, dv), 16 rows a warp; the other side's
 * tiles are staged in shared memory as bf16. A warp's scores stay in its registers (the mma c
 * fragments, whose layout PTX documents): the four lanes of a row apply the mask (causal,
 * packed documents, sliding window: `allowed`, skipped for tiles wholly below the diagonal) and
 * the online softmax there, and the probabilities go back into the next product as its a
 * fragments without leaving the registers; ldmatrix.trans reads the row-major V, K, Q, dO tiles
 * as the products' transposed operands.
 * Backward without atomics, like the fp32 kernels: k_fa_dq (per query tile) and k_fa_dkv (per
 * key tile, over the group's query heads) both recompute P from lse and D = rowsum(dO * O). */
#define FW 4        /* warps a block (8, with 128-row blocks: forward +11%, backward -9%) */
#define FR (FW * 16) /* a block's own rows (16 a warp): queries (forward, dq), keys (dk, dv) */
#define FT 64        /* the other side's tile: keys (forward, dq), queries (dk, dv) */
typedef __nv_bfloat16 bf16_t;

template <int HD> struct fa_fwd_sm {
    bf16_t Q[FR][HD + 8], K[FT][HD + 8], V[FT][HD + 8];
};
template <int HD> struct fa_dq_sm {
    bf16_t Q[FR][HD + 8], G[FR][HD + 8], K[FT][HD + 8], V[FT][HD + 8];
    float L[FR], D[FR];
};
template <int HD> struct fa_dkv_sm {
    bf16_t K[FR][HD + 8], V[FR][HD + 8], Q[FT][HD + 8], G[FT][HD + 8];
    float L[FT], D[FT];
};

/* two floats as a bf16 pair (lo in the low half, as the mma operands hold a row's neighbours) */
__device__ __forceinline__ uint32_t bf2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
/* c (16x8 fp32) += a (16x16 bf16, row) . b (16x8 bf16, col). Fragments: lane = 4 g + t holds
 * a's (g, 2t..2t+1), (g+8, 2t..), (g, 8+2t..), (g+8, 8+2t..); b's (k = 2t.., n = g) and
 * (k = 8+2t.., n = g); c's (g, 2t..2t+1) and (g+8, 2t..2t+1) */
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* the b fragments of two 8-column tiles (n0.., n0+8..) over k = k0..k0+15 of a row-major [k][n]
 * bf16 tile in shared memory: ldmatrix's transposing load, four 8x8 matrices, a lane naming
 * one row of one of them */
__device__ __forceinline__ void ldsm_t(uint32_t b[4], const bf16_t *x, int ld, int k0, int n0) {
    const int l = threadIdx.x & 31, mi = l >> 3;
    const bf16_t *p = x + (k0 + (mi & 1) * 8 + (l & 7)) * ld + n0 + (mi >> 1) * 8;
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(a));
}

/* rows [0, n) of x (row j at base + j * rs) into dst (R rows of HD + 8) as bf16, rows [n, R)
 * zero: every thread of the block takes part; four floats a load where the rows allow it */
template <int HD, int R>
__device__ void fa_load(bf16_t (*dst)[HD + 8], const float *base, int64_t rs, int n) {
    if ((((uintptr_t)base) & 15) == 0 && (rs & 3) == 0) {
        for (int e = threadIdx.x; e < R * HD / 4; e += FW * 32) {
            const int j = e / (HD / 4), i = (e % (HD / 4)) * 4;
            const float4 x = j < n ? *reinterpret_cast<const float4 *>(base + (int64_t)j * rs + i)
                                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            *reinterpret_cast<uint2 *>(&dst[j][i]) = make_uint2(bf2(x.x, x.y), bf2(x.z, x.w));
        }
        return;
    }
    for (int e = threadIdx.x; e < R * HD; e += FW * 32) {
        const int j = e / HD, i = e % HD;
        dst[j][i] = __float2bfloat16_rn(j < n ? base[(int64_t)j * rs + i] : 0.0f);
    }
}

/* ldmatrix without transposing: four 8x8 matrices, lane l naming row l & 7 of matrix l >> 3
 * (p: this lane's row address); each lane gets its rows' neighbouring pair, as mma's a and b */
__device__ __forceinline__ void ldsm(uint32_t x[4], const bf16_t *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3])
                 : "r"(a));
}
/* s[16][8 NT] = X[r0..r0+15][0..HD) . Y[0..8 NT)[0..HD)^T, both row-major bf16 (HD + 8 a row)
 * in shared memory: a warp's 16 rows of scores against 8 NT columns, in mma c fragments; one
 * ldmatrix gives the a fragment, one the b fragments of two column tiles */
template <int HD, int NT>
__device__ __forceinline__ void fa_scores(float s[NT][4], const bf16_t (*X)[HD + 8], int r0,
                                          const bf16_t (*Y)[HD + 8]) {
    const int l = threadIdx.x & 31, mi = l >> 3, lr = l & 7;
#pragma unroll
    for (int j = 0; j < NT; j++)
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a[4];
        ldsm(a, &X[r0 + (mi & 1) * 8 + lr][kk * 16 + (mi >> 1) * 8]);
#pragma unroll
        for (int j = 0; j < NT; j += 2) {
            uint32_t b[4];
            ldsm(b, &Y[j * 8 + (mi >> 1) * 8 + lr][kk * 16 + (mi & 1) * 8]);
            mma_bf16(s[j], a, b[0], b[1]);
            mma_bf16(s[j + 1], a, b[2], b[3]);
        }
    }
}
/* o[16][HD] += p[16][8 NT] . Y[0..8 NT)[0..HD) with p in c fragments (rounded to bf16 here: the
 * c fragments of two neighbouring 8-column tiles are the a fragment of one 16-deep step) and Y
 * row-major bf16 in shared memory */
template <int HD, int NT>
__device__ __forceinline__ void fa_acc(float o[HD / 8][4], const float p[NT][4],
                                       const bf16_t (*Y)[HD + 8]) {
#pragma unroll
    for (int c = 0; c < NT / 2; c++) {
        const uint32_t a[4] = {bf2(p[2 * c][0], p[2 * c][1]), bf2(p[2 * c][2], p[2 * c][3]),
                               bf2(p[2 * c + 1][0], p[2 * c + 1][1]),
                               bf2(p[2 * c + 1][2], p[2 * c + 1][3])};
#pragma unroll
        for (int d = 0; d < HD / 8; d += 2) {
            uint32_t b[4];
            ldsm_t(b, &Y[0][0], HD + 8, c * 16, d * 8);
            mma_bf16(o[d], a, b[0], b[1]);
            mma_bf16(o[d + 1], a, b[2], b[3]);
        }
    }
}
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
/* a 16 x 8 NT c-fragment tile's element e of column tile j: its row (0..15), its column */
#define FA_ROW(g, e) ((g) + ((e) >> 1) * 8)
#define FA_COL(j, t, e) ((j) * 8 + 2 * (t) + ((e) & 1))

/* one block per (query tile, head, row); the query tiles with the most keys start first */
template <int HD>
__global__ void __launch_bounds__(FW * 32) k_fa_fwd(float *out, float *lse, const float *q,
                                                   const float *k, const float *v,
                                                   const int32_t *seq, const int32_t *off,
                                                   int T, int NH, int NKV, int window) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    fa_fwd_sm<HD> &sm = *reinterpret_cast<fa_fwd_sm<HD> *>(fa_smem);
    const int b = blockIdx.z, h = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * FR;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (t0 >= len) return;
    const int kvh = h / (NH / NKV), w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tl = lane & 3, nq = min(FR, len - t0);
    const float sc = rsqrtf((float)HD);
    fa_load<HD, FR>(sm.Q, q + ((r + t0) * NH + h) * HD, (int64_t)NH * HD, nq);
    float o[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    const int tlast = t0 + nq - 1, wfirst = t0 + w * 16, wlast = min(wfirst + 15, tlast);
    const int s_begin = window > 0 ? max(0, t0 - window + 1) / FT * FT : 0;
    for (int s0 = s_begin; s0 <= tlast; s0 += FT) {
        const int ns = min(FT, tlast + 1 - s0);
        __syncthreads(); /* the last tile's K, V are read */
        fa_load<HD, FT>(sm.K, k + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, ns);
        fa_load<HD, FT>(sm.V, v + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, ns);
        __syncthreads();
        if (wfirst > tlast || s0 > wlast) continue; /* no live query of the warp sees these keys */
        if (window > 0 && s0 + ns - 1 + window <= wfirst) continue; /* all before the window */
        float s[FT / 8][4];
        fa_scores<HD, FT / 8>(s, sm.Q, w * 16, sm.K);
        /* every key of the tile before every query of the warp: no mask to apply */
        const bool full = !seq && window <= 0 && ns == FT && s0 + FT - 1 <= wfirst;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < FT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int t = wfirst + FA_ROW(g, e), c = FA_COL(j, tl, e);
                float y = s[j][e] * sc;
                if (!full && !(t <= tlast && c < ns && allowed(seq, r, t, s0 + c, window)))
                    y = -INFINITY;
                s[j][e] = y;
                mx[e >> 1] = fmaxf(mx[e >> 1], y);
            }
        float mn[2], alpha[2], ps[2] = {0.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mn[i] = fmaxf(m[i], quad_max(mx[i]));
            alpha[i] = mn[i] == -INFINITY ? 1.0f : __expf(m[i] - mn[i]);
        }
#pragma unroll
        for (int j = 0; j < FT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float x = s[j][e];
                const float p = x == -INFINITY
                                    ? 0.0f
                                    : __bfloat162float(__float2bfloat16_rn(__expf(x - mn[e >> 1])));
                s[j][e] = p;
                ps[e >> 1] += p;
            }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            l[i] = l[i] * alpha[i] + quad_sum(ps[i]);
            m[i] = mn[i];
        }
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            o[d][0] *= alpha[0], o[d][1] *= alpha[0];
            o[d][2] *= alpha[1], o[d][3] *= alpha[1];
        }
        fa_acc<HD, FT / 8>(o, s, sm.V);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int t = wfirst + g + i * 8;
        if (t > tlast) continue;
        const float inv = 1.0f / l[i];
        float *ot = out + ((r + t) * NH + h) * HD + 2 * tl;
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
            ot[d * 8] = o[d][2 * i] * inv, ot[d * 8 + 1] = o[d][2 * i + 1] * inv;
        if (tl == 0) lse[r * NH + (int64_t)h * len + t] = m[i] + logf(l[i]);
    }
}

/* dq += sc * dS K with dS = P (dO V^T - D), P = exp(sc Q K^T - lse): one block per query tile */
template <int HD>
__global__ void __launch_bounds__(FW * 32) k_fa_dq(float *dq, const float *dout, const float *q,
                                                  const float *k, const float *v,
                                                  const float *lse, const float *Dl,
                                                  const int32_t *seq, const int32_t *off, int T,
                                                  int NH, int NKV, int window) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    fa_dq_sm<HD> &sm = *reinterpret_cast<fa_dq_sm<HD> *>(fa_smem);
    const int b = blockIdx.z, h = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * FR;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (t0 >= len) return;
    const int kvh = h / (NH / NKV), w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tl = lane & 3, nq = min(FR, len - t0);
    const float sc = rsqrtf((float)HD);
    fa_load<HD, FR>(sm.Q, q + ((r + t0) * NH + h) * HD, (int64_t)NH * HD, nq);
    fa_load<HD, FR>(sm.G, dout + ((r + t0) * NH + h) * HD, (int64_t)NH * HD, nq);
    for (int j = threadIdx.x; j < FR; j += FW * 32) {
        sm.L[j] = j < nq ? lse[r * NH + (int64_t)h * len + t0 + j] : 0.0f;
        sm.D[j] = j < nq ? Dl[r * NH + (int64_t)h * len + t0 + j] : 0.0f;
    }
    __syncthreads();
    const float L[2] = {sm.L[w * 16 + g], sm.L[w * 16 + g + 8]};
    const float Dr[2] = {sm.D[w * 16 + g], sm.D[w * 16 + g + 8]};
    float acc[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
        acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
    const int tlast = t0 + nq - 1, wfirst = t0 + w * 16, wlast = min(wfirst + 15, tlast);
    const int s_begin = window > 0 ? max(0, t0 - window + 1) / FT * FT : 0;
    for (int s0 = s_begin; s0 <= tlast; s0 += FT) {
        const int ns = min(FT, tlast + 1 - s0);
        __syncthreads();
        fa_load<HD, FT>(sm.K, k + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, ns);
        fa_load<HD, FT>(sm.V, v + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, ns);
        __syncthreads();
        if (wfirst > tlast || s0 > wlast) continue;
        if (window > 0 && s0 + ns - 1 + window <= wfirst) continue;
        float s[FT / 8][4], dp[FT / 8][4];
        fa_scores<HD, FT / 8>(s, sm.Q, w * 16, sm.K);
        fa_scores<HD, FT / 8>(dp, sm.G, w * 16, sm.V);
        const bool full = !seq && window <= 0 && ns == FT && s0 + FT - 1 <= wfirst;
#pragma unroll
        for (int j = 0; j < FT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int t = wfirst + FA_ROW(g, e), c = FA_COL(j, tl, e), i = e >> 1;
                float ds = 0.0f;
                if (full || (t <= tlast && c < ns && allowed(seq, r, t, s0 + c, window)))
                    ds = __expf(s[j][e] * sc - L[i]) * (dp[j][e] - Dr[i]) * sc;
                s[j][e] = ds;
            }
        fa_acc<HD, FT / 8>(acc, s, sm.K);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int t = wfirst + g + i * 8;
        if (t > tlast) continue;
        float *gq = dq + ((r + t) * NH + h) * HD + 2 * tl;
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
            gq[d * 8] += acc[d][2 * i], gq[d * 8 + 1] += acc[d][2 * i + 1];
    }
}

/* dk += sc * dS^T Q, dv += P^T dO over the group's query heads: one block per key tile, its
 * warps' rows keys (the scores transposed: S^T = K Q^T) */
template <int HD>
__global__ void __launch_bounds__(FW * 32) k_fa_dkv(float *dk, float *dv, const float *dout,
                                                   const float *q, const float *k, const float *v,
                                                   const float *lse, const float *Dl,
                                                   const int32_t *seq, const int32_t *off, int T,
                                                   int NH, int NKV, int window) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    fa_dkv_sm<HD> &sm = *reinterpret_cast<fa_dkv_sm<HD> *>(fa_smem);
    const int b = blockIdx.z, kvh = blockIdx.y, s0 = blockIdx.x * FR;
    int64_t r;
    const int len = row_of(off, b, T, &r);
    if (s0 >= len) return;
    const int G = NH / NKV, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tl = lane & 3, nk = min(FR, len - s0);
    const float sc = rsqrtf((float)HD);
    fa_load<HD, FR>(sm.K, k + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, nk);
    fa_load<HD, FR>(sm.V, v + ((r + s0) * NKV + kvh) * HD, (int64_t)NKV * HD, nk);
    float ak[HD / 8][4], av[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++) {
        ak[d][0] = ak[d][1] = ak[d][2] = ak[d][3] = 0.0f;
        av[d][0] = av[d][1] = av[d][2] = av[d][3] = 0.0f;
    }
    const int slast = s0 + nk - 1, wfirst = s0 + w * 16, wlast = min(wfirst + 15, slast);
    const int tmax = window > 0 ? min(len, slast + window) : len; /* queries < tmax */
    for (int hh = 0; hh < G; hh++) {
        const int h = kvh * G + hh;
        for (int t0 = s0; t0 < tmax; t0 += FT) {
            const int nq = min(FT, tmax - t0);
            __syncthreads();
            fa_load<HD, FT>(sm.Q, q + ((r + t0) * NH + h) * HD, (int64_t)NH * HD, nq);
            fa_load<HD, FT>(sm.G, dout + ((r + t0) * NH + h) * HD, (int64_t)NH * HD, nq);
            for (int j = threadIdx.x; j < FT; j += FW * 32) {
                sm.L[j] = j < nq ? lse[r * NH + (int64_t)h * len + t0 + j] : 0.0f;
                sm.D[j] = j < nq ? Dl[r * NH + (int64_t)h * len + t0 + j] : 0.0f;
            }
            __syncthreads();
            if (wfirst > slast || t0 + nq - 1 < wfirst) continue; /* no query sees the keys */
            if (window > 0 && t0 >= wlast + window) continue;    /* all past the window */
            float st[FT / 8][4], dpt[FT / 8][4];
            fa_scores<HD, FT / 8>(st, sm.K, w * 16, sm.Q);
            fa_scores<HD, FT / 8>(dpt, sm.V, w * 16, sm.G);
            /* every query of the tile after every key of the warp: no mask to apply */
            const bool full = !seq && window <= 0 && nq == FT && t0 >= wfirst + 15;
#pragma unroll
            for (int j = 0; j < FT / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int s = wfirst + FA_ROW(g, e), c = FA_COL(j, tl, e);
                    float p = 0.0f, ds = 0.0f;
                    if (full || (s <= slast && c < nq && allowed(seq, r, t0 + c, s, window))) {
                        p = __expf(st[j][e] * sc - sm.L[c]);
                        ds = p * (dpt[j][e] - sm.D[c]) * sc;
                    }
                    st[j][e] = p;
                    dpt[j][e] = ds;
                }
            fa_acc<HD, FT / 8>(av, st, sm.G);
            fa_acc<HD, FT / 8>(ak, dpt, sm.Q);
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int s = wfirst + g + i * 8;
        if (s > slast) continue;
        const int64_t base = ((r + s) * NKV + kvh) * HD + 2 * tl;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            dk[base + d * 8] += ak[d][2 * i], dk[base + d * 8 + 1] += ak[d][2 * i + 1];
            dv[base + d * 8] += av[d][2 * i], dv[base + d * 8 + 1] += av[d][2 * i + 1];
        }
    }
}

/* dynamic shared memory over 48 KB needs the kernel's opt-in, once */
template <typename K> static void fa_smem_optin(K kern, size_t bytes) {
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}
template <int HD>
static void fa_fwd_hd(float *out, float *lse, const float *q, const float *k, const float *v,
                      const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                      int window) {
    static int once;
    const size_t sm = sizeof(fa_fwd_sm<HD>);
    if (!once) fa_smem_optin(k_fa_fwd<HD>, sm), once = 1;
    dim3 g((unsigned)((T + FR - 1) / FR), (unsigned)NH, (unsigned)B);
    k_fa_fwd<HD><<<g, FW * 32, sm>>>(out, lse, q, k, v, seq, off, T, NH, NKV, window);
}
template <int HD>
static void fa_bwd_hd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                      const float *k, const float *v, const float *lse, const float *D,
                      const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                      int window) {
    static int once;
    const size_t s1 = sizeof(fa_dq_sm<HD>), s2 = sizeof(fa_dkv_sm<HD>);
    if (!once) fa_smem_optin(k_fa_dq<HD>, s1), fa_smem_optin(k_fa_dkv<HD>, s2), once = 1;
    dim3 g((unsigned)((T + FR - 1) / FR), (unsigned)NH, (unsigned)B);
    k_fa_dq<HD><<<g, FW * 32, s1>>>(dq, dout, q, k, v, lse, D, seq, off, T, NH, NKV, window);
    dim3 g2((unsigned)((T + FR - 1) / FR), (unsigned)NKV, (unsigned)B);
    k_fa_dkv<HD><<<g2, FW * 32, s2>>>(dk, dv, dout, q, k, v, lse, D, seq, off, T, NH, NKV, window);
}
#define FA_HD_CASES(X) X(32) X(64) X(128)

/* head dims other than 32, 64, 128 take the fp32 kernels */
static void cu_attention_fwd_bf16(const lt_backend *be, float *out, float *lse, const float *q,
                                  const float *k, const float *v, const int32_t *seq,
                                  const int32_t *off, int B, int T, int NH, int NKV, int HD,
                                  int window) {
    if (B <= 0 || T <= 0) return;
    switch (HD) {
#define X(n)                                                                                       \
    case n: fa_fwd_hd<n>(out, lse, q, k, v, seq, off, B, T, NH, NKV, window); return;
        FA_HD_CASES(X)
#undef X
    default: cu_attention_fwd(be, out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
    }
}
static void cu_attention_bwd_bf16(const lt_backend *be, float *dq, float *dk, float *dv,
                                  const float *dout, const float *q, const float *k,
                                  const float *v, const float *out, const float *lse,
                                  const int32_t *seq, const int32_t *off, int B, int T, int NH,
                                  int NKV, int HD, int window) {
    if (B <= 0 || T <= 0) return;
    const float *D;
    switch (HD) {
#define X(n)                                                                                       \
    case n:                                                                                        \
        if (!(D = attn_delta(be, dout, out, off, B, T, NH, HD))) break;                            \
        fa_bwd_hd<n>(dq, dk, dv, dout, q, k, v, lse, D, seq, off, B, T, NH, NKV, window);          \
        return;
        FA_HD_CASES(X)
#undef X
    default: break;
    }
    cu_attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH, NKV, HD, window);
}

/* a cache element as fp32: fp32 as it is, fp16 (IEEE half) widened (exact) */
__device__ __forceinline__ float kv_f32(float x) {
    return x;
}
__device__ __forceinline__ float kv_f32(uint16_t x) {
    return __half2float(__ushort_as_half(x));
}
/* queries of positions pos0 + t over the cache: online softmax, one thread per (t, h); the
 * cache's elements are fp32 (attention_kv) or fp16 widened to fp32 (attention_kv_f16) */
template <typename E>
__global__ void k_attn_kv(float *out, const float *q, const E *k, const E *v, int N, int pos0,
                          int H, int KV, int hd, int window) {
    GRID_LOOP(id, (int64_t)N * H) {
        const int h = (int)(id % H), t = (int)(id / H), pos = pos0 + t, kvh = h / (H / KV);
        const int start = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        const float sc = 1.0f / sqrtf((float)hd);
        const float *qh = q + (int64_t)t * H * hd + (int64_t)h * hd;
        float *o = out + (int64_t)t * H * hd + (int64_t)h * hd;
        float mx = -INFINITY, sum = 0;
        for (int i = 0; i < hd; i++)
            o[i] = 0;
        for (int j = start; j <= pos; j++) {
            const E *kj = k + ((int64_t)j * KV + kvh) * hd, *vj = v + ((int64_t)j * KV + kvh) * hd;
            float s = 0;
            for (int i = 0; i < hd; i++)
                s += qh[i] * kv_f32(kj[i]);
            s *= sc;
            const float nm = fmaxf(mx, s), a = expf(mx - nm), p = expf(s - nm);
            sum = sum * a + p;
            for (int i = 0; i < hd; i++)
                o[i] = o[i] * a + p * kv_f32(vj[i]);
            mx = nm;
        }
        for (int i = 0; i < hd; i++)
            o[i] /= sum;
    }
}
static void cu_attention_kv(const lt_backend *be, float *out, const float *q, const float *k,
                            const float *v, int N, int pos0, int H, int KV, int hd, int window,
                            float *scratch, int64_t n_scratch) {
    k_attn_kv<float>
        <<<blocks((int64_t)N * H, 64), 64>>>(out, q, k, v, N, pos0, H, KV, hd, window);
}
static void cu_attention_kv_f16(const lt_backend *be, float *out, const float *q,
                                const uint16_t *k, const uint16_t *v, int N, int pos0, int H,
                                int KV, int hd, int window, float *scratch, int64_t n_scratch) {
    k_attn_kv<uint16_t>
        <<<blocks((int64_t)N * H, 64), 64>>>(out, q, k, v, N, pos0, H, KV, hd, window);
}
/* fp32 -> IEEE half, round to nearest even (NaN stays NaN, overflow to inf): lt_f32_to_f16 */
__global__ void k_to_f16(uint16_t *dst, const float *src, int64_t n) {
    GRID_LOOP(i, n) dst[i] = __half_as_ushort(__float2half_rn(src[i]));
}
static void cu_to_f16(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    k_to_f16<<<blocks(n, 256), 256>>>(dst, src, n);
}
static int64_t cu_attention_kv_scratch(const lt_backend *be, int ctx) {
    return 1;
}

/* ---- cross-entropy: one block per row, per-row loss into the reduction buffer ----------------- */
#define CE_THREADS 1024 /* a row's vocabulary is read by many warps at once: rows a call are few */
/* a logit into this thread's running max m and sum s of exp(z - m) (s rescaled when m grows) */
__device__ __forceinline__ void ce_add(float x, float &m, double &s) {
    if (x == -INFINITY) return;
    if (x > m) {
        s = s * exp((double)(m - x)) + 1.0;
        m = x;
    } else {
        s += (double)expf(x - m);
    }
}
__global__ void __launch_bounds__(CE_THREADS) k_ce(float *dl, double *rowloss, const float *lg,
                                                   const int32_t *tg, int V, int ignore, float gs,
                                                   int *bad) {
    const int n = blockIdx.x;
    const float *z = lg + (int64_t)n * V;
    const int t = tg[n];
    __shared__ float smx[CE_THREADS];
    if (t == ignore) {
        if (dl)
            for (int i = threadIdx.x; i < V; i += blockDim.x)
                dl[(int64_t)n * V + i] = 0.0f;
        if (threadIdx.x == 0) rowloss[n] = 0;
        return;
    }
    if (t < 0 || t >= V) {
        if (threadIdx.x == 0) *bad = n + 1;
        return;
    }
    /* one pass over the row: four logits a load where the row allows it */
    const bool v4 = (V & 3) == 0 && (((uintptr_t)z) & 15) == 0;
    float m = -INFINITY;
    double se = 0;
    if (v4) {
        for (int i = threadIdx.x; i < V / 4; i += blockDim.x) {
            const float4 x = reinterpret_cast<const float4 *>(z)[i];
            ce_add(x.x, m, se), ce_add(x.y, m, se), ce_add(x.z, m, se), ce_add(x.w, m, se);
        }
    } else {
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            ce_add(z[i], m, se);
    }
    smx[threadIdx.x] = m;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) smx[threadIdx.x] = fmaxf(smx[threadIdx.x], smx[threadIdx.x + k]);
        __syncthreads();
    }
    const float mx = smx[0];
    const double sum = block_sum(m == -INFINITY ? 0.0 : se * exp((double)(m - mx)));
    if (threadIdx.x == 0) rowloss[n] = log(sum) + mx - z[t];
    if (dl) {
        const float lz = (float)(log(sum) + mx);
        float *d = dl + (int64_t)n * V;
        if (v4 && (((uintptr_t)d) & 15) == 0) {
            for (int i = threadIdx.x; i < V / 4; i += blockDim.x) {
                const float4 x = reinterpret_cast<const float4 *>(z)[i];
                float4 y = make_float4(expf(x.x - lz), expf(x.y - lz), expf(x.z - lz),
                                       expf(x.w - lz));
                if (t / 4 == i) (&y.x)[t & 3] -= 1.0f;
                y.x *= gs, y.y *= gs, y.z *= gs, y.w *= gs;
                reinterpret_cast<float4 *>(d)[i] = y;
            }
        } else {
            for (int i = threadIdx.x; i < V; i += blockDim.x) {
                float p = expf(z[i] - lz);
                d[i] = (p - (i == t ? 1.0f : 0.0f)) * gs;
            }
        }
    }
}
static lt_status cu_cross_entropy(const lt_backend *be, float *dlogits, lt_ce_stats *stats,
                                  const float *logits, const int32_t *targets, int N, int V,
                                  int ignore_index, float grad_scale) {
    cuda_ctx *c = CX(be);
    int32_t *ht = (int32_t *)malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    if (!ht) return lt_error(LT_ERR_NOMEM, "cross-entropy: out of memory");
    cudaMemcpy(ht, targets, sizeof(int32_t) * (size_t)N, cudaMemcpyDeviceToHost);
    int64_t count = 0;
    for (int n = 0; n < N; n++) {
        if (ht[n] == ignore_index) continue;
        if (ht[n] < 0 || ht[n] >= V) {
            lt_status e = lt_error(LT_ERR_ARG,
                                   "cross-entropy: target %d at row %d is neither %d nor in [0, %d)",
                                   (int)ht[n], n, ignore_index, V);
            free(ht);
            return e;
        }
        count++;
    }
    free(ht);
    const float gs = grad_scale != 0.0f ? grad_scale : (count ? 1.0f / (float)count : 0.0f);
    double sum = 0;
    for (int n0 = 0; n0 < N; n0 += RED - 1) {
        const int nc = N - n0 < RED - 1 ? N - n0 : RED - 1;
        int *bad = (int *)(c->red + RED - 1);
        cudaMemset(bad, 0, sizeof(int));
        k_ce<<<nc, CE_THREADS>>>(dlogits ? dlogits + (int64_t)n0 * V : NULL, c->red,
                          logits + (int64_t)n0 * V, targets + n0, V, ignore_index, gs, bad);
        cudaMemcpy(c->h_red, c->red, sizeof(double) * (size_t)nc, cudaMemcpyDeviceToHost);
        for (int i = 0; i < nc; i++)
            sum += c->h_red[i];
    }
    stats->sum = sum;
    stats->count = count;
    stats->mean = count ? (float)(sum / (double)count) : NAN;
    return LT_OK;
}

/* ---- optimizer, reductions, elementwise --------------------------------------------------- */
__global__ void k_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                        float b1, float b2, float eps, float wd, float bc1, float bc2s) {
    GRID_LOOP(i, n) {
        p[i] *= 1.0f - lr * wd;
        m[i] = m[i] + (1.0f - b1) * (g[i] - m[i]);
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}
static void cu_adamw(const lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n,
                     const lt_adamw_cfg *cfg, int64_t step) {
    const float bc1 = 1.0f - powf(cfg->beta1, (float)step),
                bc2s = sqrtf(1.0f - powf(cfg->beta2, (float)step));
    k_adamw<<<blocks(n, 256), 256>>>(p, g, m, v, n, cfg->lr, cfg->beta1, cfg->beta2, cfg->eps,
                                     cfg->weight_decay, bc1, bc2s);
}
/* partial sums of squares (kind 0) or non-finite counts (kind 1), one per block */
__global__ void k_reduce(double *out, const float *x, int64_t n, int kind) {
    double s = 0;
    GRID_LOOP(i, n) s += kind ? (double)!isfinite(x[i]) : (double)x[i] * x[i];
    const double sum = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = sum;
}
static double reduce(const lt_backend *be, const float *x, int64_t n, int kind) {
    cuda_ctx *c = CX(be);
    unsigned nb = blocks(n, 256);
    if (nb > 1024) nb = 1024;
    k_reduce<<<nb, 256>>>(c->red, x, n, kind);
    cudaMemcpy(c->h_red, c->red, sizeof(double) * nb, cudaMemcpyDeviceToHost);
    double s = 0;
    for (unsigned i = 0; i < nb; i++)
        s += c->h_red[i];
    return s;
}
static double cu_sumsq(const lt_backend *be, const float *x, int64_t n) {
    return reduce(be, x, n, 0);
}
static int cu_all_finite(const lt_backend *be, const float *x, int64_t n) {
    return reduce(be, x, n, 1) == 0;
}
__global__ void k_scale(float *x, int64_t n, float s) {
    GRID_LOOP(i, n) x[i] *= s;
}
__global__ void k_add(float *y, const float *a, const float *b, int64_t n) {
    GRID_LOOP(i, n) y[i] = a[i] + b[i];
}
static void cu_scale(const lt_backend *be, float *x, int64_t n, float s) {
    k_scale<<<blocks(n, 256), 256>>>(x, n, s);
}
static void cu_add(const lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    k_add<<<blocks(n, 256), 256>>>(y, a, b, n);
}
__global__ void k_gather(float *dst, const float *src, const int32_t *idx, int64_t n, int D) {
    GRID_LOOP(i, n * D) dst[i] = src[(int64_t)idx[i / D] * D + i % D];
}
__global__ void k_scatter(float *dst, const float *src, const int32_t *idx, int64_t n, int D) {
    GRID_LOOP(i, n * D) dst[(int64_t)idx[i / D] * D + i % D] = src[i];
}
static void cu_gather_rows(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                           int n, int D) {
    k_gather<<<blocks((int64_t)n * D, 256), 256>>>(dst, src, idx, n, D);
}
static void cu_scatter_rows(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                            int n, int D) {
    k_scatter<<<blocks((int64_t)n * D, 256), 256>>>(dst, src, idx, n, D);
}
/* lt_dropout_mask_value on the device (the same stream as every backend) */
__global__ void k_dropout(float *mask, int64_t n, float p, unsigned long long seed) {
    GRID_LOOP(i, n) {
        unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        mask[i] = u < p ? 0.0f : 1.0f / (1.0f - p);
    }
}
static void cu_dropout_mask(const lt_backend *be, float *mask, int64_t n, float p, uint64_t seed) {
    k_dropout<<<blocks(n, 256), 256>>>(mask, n, p, (unsigned long long)seed);
}

static const lt_backend_ops cuda_ops = [] {
    lt_backend_ops o;
    memset(&o, 0, sizeof o);
    o.alloc = cu_alloc;
    o.free = cu_free;
    o.set = cu_set;
    o.get = cu_get;
    o.copy = cu_copy;
    o.zero = cu_zero;
    o.sync = cu_sync;
    o.supports_dtype = cu_supports_dtype;
    o.mem_info = cu_mem_info;
    o.gemm = cu_gemm;
    o.matmul_fwd = cu_matmul_fwd;
    o.matmul_bwd = cu_matmul_bwd;
    o.weight_f32 = cu_weight_f32;
    o.matmul_w = lt_backend_matmul_w_blocks_;
    o.matmul_w_scratch = cu_matmul_w_scratch;
    o.embedding_fwd = cu_embedding_fwd;
    o.embedding_bwd = cu_embedding_bwd;
    o.rmsnorm_fwd = cu_rmsnorm_fwd;
    o.rmsnorm_bwd = cu_rmsnorm_bwd;
    o.rope_fwd = cu_rope_fwd;
    o.rope_bwd = cu_rope_bwd;
    o.attention_fwd = cu_attention_fwd;
    o.attention_bwd = cu_attention_bwd;
    o.swiglu_fwd = cu_swiglu_fwd;
    o.swiglu_bwd = cu_swiglu_bwd;
    o.cross_entropy = cu_cross_entropy;
    o.lora_fwd = cu_lora_fwd;
    o.lora_bwd = cu_lora_bwd;
    o.dora_fwd = cu_dora_fwd;
    o.dora_bwd = cu_dora_bwd;
    o.dropout_mask = cu_dropout_mask;
    o.adamw = cu_adamw;
    o.sumsq = cu_sumsq;
    o.all_finite = cu_all_finite;
    o.scale = cu_scale;
    o.add = cu_add;
    o.gather_rows = cu_gather_rows;
    o.scatter_rows = cu_scatter_rows;
    o.attention_kv = cu_attention_kv;
    o.attention_kv_scratch = cu_attention_kv_scratch;
    o.attention_kv_f16 = cu_attention_kv_f16;
    o.to_f16 = cu_to_f16;
    o.add_bias = cu_add_bias;
    o.scale_rows = cu_scale_rows;
    o.to_bf16 = cu_to_bf16;
    o.gemm_bf16 = cu_gemm_bf16;
    o.weight_bf16 = cu_weight_bf16;
    o.attention_fwd_bf16 = cu_attention_fwd_bf16;
    o.attention_bwd_bf16 = cu_attention_bwd_bf16;
    return o;
}();
/* a GPU before Ampere (compute capability < 8.0) has no bf16 tensor-core products, nor does a
 * cuBLAS without cublasGemmEx: the same ops without LT_OP_GEMM_BF16 */
static const lt_backend_ops cuda_ops_nobf16 = [] {
    lt_backend_ops o = cuda_ops;
    o.to_bf16 = NULL;
    o.gemm_bf16 = NULL;
    o.weight_bf16 = NULL;
    o.attention_fwd_bf16 = NULL;
    o.attention_bwd_bf16 = NULL;
    return o;
}();

extern "C" lt_status lt_backend_cuda_create(int device, lt_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return lt_error(LT_ERR_UNSUPPORTED, "cuda backend: no GPU (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (device < 0 || device >= n)
        return lt_error(LT_ERR_ARG, "cuda backend: device %d, expected 0..%d", device, n - 1);
    pthread_once(&g_cublas_once, cublas_open);
    if (g_cublas.err[0]) return lt_error(LT_ERR_UNSUPPORTED, "cuda backend: %s", g_cublas.err);
    cudaSetDevice(device);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    lt_backend *be = (lt_backend *)calloc(1, sizeof *be);
    if (!c || !be) {
        free(c), free(be);
        return lt_error(LT_ERR_NOMEM, "cuda backend: out of memory");
    }
    c->device = device;
    if (g_cublas.create(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cudaMalloc(&c->red, sizeof(double) * RED) != cudaSuccess ||
        cudaMalloc(&c->nf4_tab, sizeof(float) * (16 + 256)) != cudaSuccess ||
        !(c->h_red = (double *)malloc(sizeof(double) * RED))) {
        if (c->blas) g_cublas.destroy(c->blas);
        if (c->red) cudaFree(c->red);
        if (c->nf4_tab) cudaFree(c->nf4_tab);
        free(c->h_red), free(c), free(be);
        return lt_error(LT_ERR_NOMEM, "cuda backend: cannot set up device %d", device);
    }
    g_cublas.set_math_mode(c->blas, CUBLAS_DEFAULT_MATH); /* fp32, no TF32: the checking mode */
    cudaMemcpy(c->nf4_tab, lt_nf4_code(), sizeof(float) * 16, cudaMemcpyHostToDevice);
    cudaMemcpy(c->nf4_tab + 16, lt_nf4_dynamic_map(), sizeof(float) * 256, cudaMemcpyHostToDevice);
    be->name = "cuda";
    be->ctx = c;
    be->device = 1;
    struct cudaDeviceProp prop;
    const int have_prop = cudaGetDeviceProperties(&prop, device) == cudaSuccess;
    be->op = have_prop && prop.major >= 8 && g_cublas.gemm_ex ? &cuda_ops : &cuda_ops_nobf16;
    if (have_prop)
        snprintf(c->desc, sizeof c->desc, "%s (cuda:%d, %.1f GiB)", prop.name, device,
                 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    else
        snprintf(c->desc, sizeof c->desc, "cuda:%d", device);
    be->desc = c->desc;
    *out = be;
    return LT_OK;
}

extern "C" void lt_backend_cuda_free(lt_backend *be) {
    if (!be) return;
    cuda_ctx *c = CX(be);
    g_cublas.destroy(c->blas);
    cudaFree(c->red);
    cudaFree(c->nf4_tab);
    if (c->attn_d) cudaFree(c->attn_d);
    free(c->h_red);
    free(c);
    free(be);
}

extern "C" int lt_backend_cuda_compiled(void) {
    return 1;
}
