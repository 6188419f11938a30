/* backend_cpu_infer.c - the CPU backend's inference ops (what the model's forward runs, for
 * generation): products by weights in their storage format a block of rows at a time
 * (matmul_w), attention over a KV cache, row-broadcast bias and scaling.
 *
 * matmul_w: a weight stored as fp32 is multiplied whole through BLAS (sgemm for a prefill,
 * sgemv for one token; below SMALL_MATMUL multiply-adds a plain loop); any other is cut into
 * blocks of rows, each converted into a per-thread slice of scratch and multiplied there
 * (rows_dot), OpenMP over the blocks of every job together (q, k and v in one fork / join).
 * A job with qact and Q4_0 / Q4_1 / Q8_0 weights (the generation path) is not converted at all:
 * x is quantized once to 8-bit blocks (qdot.h) and every row is an integer SIMD dot product
 * against the blocks as stored (qmatmul below). */
#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend_internal.h"
#include "ops_fast.h"
#include "qdot.h"


/* Floats of weight rows one thread converts and multiplies at a time (256 KiB: stays in L2),
 * or one row when a row is longer. */
#define WBLOCK (64 * 1024)

/* Below this many multiply-adds a call is done in a plain loop: waking OpenBLAS's threads
 * costs more than the work (it made stories260K decoding 10x slower on 2 cores). */
#define SMALL_MATMUL (1 << 16)

/* y[n][out] = x[n][in] W[out][in]^T; beta 0 overwrites y, 1 accumulates */
static void matmul_beta(float *y, const float *x, const float *W, int n, int out, int in,
                        float beta) {
    if ((int64_t)n * out * in < SMALL_MATMUL) {
        for (int t = 0; t < n; t++)
            for (int o = 0; o < out; o++) {
                const float *wr = W + (int64_t)o * in, *xr = x + (int64_t)t * in;
                float acc = 0.0f;
                for (int i = 0; i < in; i++)
                    acc += wr[i] * xr[i];
                float *yo = y + (int64_t)t * out + o;
                *yo = beta == 0.0f ? acc : *yo + acc;
            }
    } else if (n == 1) {
        /* one token: rows split over the OpenMP team when OpenBLAS is single-threaded (as in a
         * trainer step, or generate after step_begin), else OpenBLAS's own threads */
        const int nt = lt_be_max_threads();
#ifdef _OPENMP
        if (nt > 1 && !omp_in_parallel() && openblas_get_num_threads() == 1 &&
            (int64_t)out * in >= 4 * SMALL_MATMUL) {
            const int per = ((out + 2 * nt - 1) / (2 * nt) + 7) & ~7;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
            for (int o = 0; o < out; o += per)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, out - o < per ? out - o : per, in, 1.0f,
                            W + (int64_t)o * in, in, x, 1, beta, y + o, 1);
            return;
        }
#endif
        (void)nt;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1, beta, y, 1);
    } else { /* OpenMP-split when OpenBLAS is single-threaded (ops_fast.c) */
        lt_gemm(CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, W, in, beta, y, out);
    }
}

/* 8 floats as one value (GCC / Clang vector extension: one AVX register, or two SSE ones);
 * LOAD8 reads one from any float address. Lane k of an accumulator sums the products at
 * i = k mod 8. Passed by pointer: a vector argument's ABI differs with and without AVX. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_any __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD8(p) (*(const v8f_any *)(p))

/* sum of the 8 lanes of *a, pairwise, then the tail i in [in8, in) of w . x */
static inline float lanes_sum(const v8f *a, const float *w, const float *x, int in8, int in) {
    const v8f v = *a;
    float s = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    for (int i = in8; i < in; i++)
        s += w[i] * x[i];
    return s;
}

/* y[t][o] = (beta 0) or += (beta 1) dot(x[t], W[o]) for t < n, o < nr; y rows ldy apart. Each
 * dot is summed in 8 lanes (lane k takes the i = k mod 8; products rounded, then added), the
 * lanes added pairwise, then the tail: the same order for every row and token whatever the
 * blocking or the threads. Four rows at a time (a group's rows past nr repeat its first row and
 * are dropped), every token against them while they are in L1 (wider tiles, 4 rows x 2 tokens
 * or 8 rows, measured no faster on Zen 4). */
static void rows_dot(float *y, int64_t ldy, const float *x, const float *W, int n, int nr, int in,
                     float beta) {
    const int in8 = in & ~7;
    for (int o = 0; o < nr; o += 4) {
        const int g = nr - o < 4 ? nr - o : 4;
        const float *w0 = W + (int64_t)o * in;
        const float *w1 = g > 1 ? w0 + in : w0, *w2 = g > 2 ? w0 + 2 * in : w0,
                    *w3 = g > 3 ? w0 + 3 * in : w0;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (int64_t)t * in;
            v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int i = 0; i < in8; i += 8) {
                const v8f xv = LOAD8(xt + i);
                a0 += LOAD8(w0 + i) * xv;
                a1 += LOAD8(w1 + i) * xv;
                a2 += LOAD8(w2 + i) * xv;
                a3 += LOAD8(w3 + i) * xv;
            }
            const float r[4] = {lanes_sum(&a0, w0, xt, in8, in), lanes_sum(&a1, w1, xt, in8, in),
                                lanes_sum(&a2, w2, xt, in8, in), lanes_sum(&a3, w3, xt, in8, in)};
            float *yt = y + (int64_t)t * ldy + o;
            for (int j = 0; j < g; j++)
                yt[j] = beta == 0.0f ? r[j] : yt[j] + r[j];
        }
    }
}

int64_t lt_cpu_matmul_w_scratch_(const lt_backend *be, int64_t max_cols) {
    return (int64_t)lt_be_max_threads() * (max_cols > WBLOCK ? max_cols : WBLOCK);
}

/* 1 when job j runs on the integer kernels: qact, weights in a qdot block type, in place */
static int is_qjob(const lt_matmul_job *jb) {
    const lt_weight_view *w = jb->w;
    return jb->qact && !w->rows_fn && !w->nf4 && w->data && lt_qdot_supports(w->dtype) &&
           w->cols % LT_QK == 0;
}

/* Rows a task of the integer path takes: small enough that 2 threads balance a 192-row k
 * projection, large enough that the dynamic schedule's bookkeeping is noise. */
#define QROWS 32

/* The jobs jobs[k] with is_qjob, all reading x[n][in]: x quantized into the front of scratch
 * (tokens a chunk at a time when it does not fit), then one parallel loop over QROWS-row tasks
 * of every job, each task against every token of the chunk (the task's weight rows stay in L1). */
static lt_status qmatmul(const lt_matmul_job *jobs, const int *qj, int nq, const float *x, int n,
                         int in, float *scratch, int64_t n_scratch) {
    const int nb = in / LT_QK;
    const int64_t per_tok = ((int64_t)nb * (int64_t)sizeof(lt_q8a) + 3) / 4; /* floats */
    int64_t tc = n_scratch / per_tok;
    if (tc < 1)
        return lt_error(LT_ERR_ARG, "matmul_w: scratch of %lld floats is less than a row of %d",
                        (long long)n_scratch, in);
    if (tc > n) tc = n;
    lt_q8a *xq = (lt_q8a *)scratch; /* scratch is the backend's 64-byte aligned memory */
    int64_t first[5], ntask = 0, work = 0;
    lt_qdot_rows_fn fn[4];
    lt_qdot_tile_fn tile[4], tile8[4];
    size_t rowb[4];
    for (int k = 0; k < nq; k++) {
        const lt_weight_view *w = jobs[qj[k]].w;
        first[k] = ntask;
        ntask += (w->rows + QROWS - 1) / QROWS;
        work += w->rows * in;
        fn[k] = lt_qdot_rows(w->dtype);
        tile[k] = lt_qdot_tile(w->dtype);
        tile8[k] = lt_qdot_tile8(w->dtype);
        rowb[k] = (size_t)lt_dtype_nbytes(w->dtype, in);
    }
    first[nq] = ntask;
    for (int64_t t0 = 0; t0 < n; t0 += tc) {
        const int nt = (int)(n - t0 < tc ? n - t0 : tc);
        for (int t = 0; t < nt; t++)
            lt_qdot_quantize(x + (t0 + t) * in, xq + (int64_t)t * nb, in);
#pragma omp parallel for schedule(dynamic, 1) if (ntask > 1 && work * nt >= SMALL_MATMUL)
        for (int64_t b = 0; b < ntask; b++) {
            int k = 0;
            while (b >= first[k + 1])
                k++;
            const lt_matmul_job *jb = &jobs[qj[k]];
            const int64_t R = jb->w->rows, r0 = (b - first[k]) * QROWS;
            const int nr = (int)(R - r0 < QROWS ? R - r0 : QROWS);
            const char *W = (const char *)jb->w->data + (size_t)r0 * rowb[k];
            int t = 0;
            for (; tile8[k] && t + 8 <= nt; t += 8) /* 8 tokens per decoded weight block */
                tile8[k](jb->y + (t0 + t) * R + r0, R, W, nr, xq + (int64_t)t * nb, nb, jb->beta);
            for (; tile[k] && t + 4 <= nt; t += 4) /* 4 tokens per decoded weight block */
                tile[k](jb->y + (t0 + t) * R + r0, R, W, nr, xq + (int64_t)t * nb, nb, jb->beta);
            for (; t < nt; t++)
                fn[k](jb->y + (t0 + t) * R + r0, 1, W, nr, xq + (int64_t)t * nb, nb, jb->beta);
        }
    }
    return LT_OK;
}

/* bf16 jobs: a weight other than bf16-in-place is rounded only for this many rows of x or more
 * (one token's product costs less in fp32 than rounding the weight) */
#define BF16_MIN_ROWS 8

/* 1 when job jb runs through bmatmul: x[n][in] with scratch to round it and a weight block */
static int is_bjob(const lt_matmul_job *jb, int n, int in, int64_t n_scratch) {
    const lt_weight_view *w = jb->w;
    if (!jb->bf16 || w->cols != in || 3 * (int64_t)in > n_scratch) return 0;
    if (!w->rows_fn && !w->nf4 && w->data && w->dtype == LT_DTYPE_BF16) return 1;
    return n >= BF16_MIN_ROWS;
}

/* The bf16 jobs jobs[bj[k]]: x rounded to bf16 into the front half of scratch (tokens a chunk
 * at a time when it does not fit), then oneDNN's bf16 GEMM (lt_host_gemm_bf16_, threaded
 * inside) against each weight as stored when it is bf16, else against blocks of its rows
 * converted to fp32 (the back half of scratch) and rounded to bf16 behind them. */
static lt_status bmatmul(const lt_backend *be, const lt_matmul_job *jobs, const int *bj, int nb,
                         const float *x, int n, int in, float *scratch, int64_t n_scratch) {
    const int64_t half = (n_scratch / 2) & ~(int64_t)15;
    uint16_t *xb = (uint16_t *)scratch;
    float *fbuf = scratch + half;
    int64_t tc = 2 * half / in, per = (n_scratch - half) * 2 / (3 * (int64_t)in);
    if (tc > n) tc = n;
    if (per < 1 || tc < 1)
        return lt_error(LT_ERR_ARG, "matmul_w: scratch of %lld floats is less than a row of %d",
                        (long long)n_scratch, in);
    for (int64_t t0 = 0; t0 < n; t0 += tc) {
        const int nt = (int)(n - t0 < tc ? n - t0 : tc);
        lt_host_to_bf16_(xb, x + t0 * in, (int64_t)nt * in);
        for (int k = 0; k < nb; k++) {
            const lt_matmul_job *jb = &jobs[bj[k]];
            const lt_weight_view *w = jb->w;
            const int R = (int)w->rows;
            float *y = jb->y + t0 * R;
            if (!w->rows_fn && !w->nf4 && w->data && w->dtype == LT_DTYPE_BF16) {
                lt_host_gemm_bf16_(0, 1, nt, R, in, 1.0f, xb, in, w->data, in, jb->beta, y, R);
                continue;
            }
            for (int64_t r0 = 0; r0 < R; r0 += per) {
                const int nr = (int)(R - r0 < per ? R - r0 : per);
                const float *W;
                lt_status st = lt_host_rows_f32_(be, w, r0, nr, fbuf, &W);
                if (st) return st;
                uint16_t *wb = (uint16_t *)(fbuf + (int64_t)nr * in);
                lt_host_to_bf16_(wb, W, (int64_t)nr * in);
                lt_host_gemm_bf16_(0, 1, nt, nr, in, 1.0f, xb, in, wb, in, jb->beta, y + r0, R);
            }
        }
    }
    return LT_OK;
}

lt_status lt_cpu_matmul_w_(const lt_backend *be, const lt_matmul_job *jobs, int nj, const float *x,
                           int n, float *scratch, int64_t n_scratch) {
    if (nj < 1 || nj > 4) return lt_error(LT_ERR_ARG, "matmul_w: %d jobs, expected 1..4", nj);
    const int in = (int)jobs[0].w->cols;
    int qj[4], nq = 0, skip[4] = {0};
    for (int j = 0; j < nj; j++)
        if (jobs[j].w->cols == in && is_qjob(&jobs[j])) {
            qj[nq++] = j;
            skip[j] = 1;
        }
    if (nq) {
        lt_status st = qmatmul(jobs, qj, nq, x, n, in, scratch, n_scratch);
        if (st || nq == nj) return st;
    }
    int bj[4], nb = 0;
    for (int j = 0; j < nj; j++)
        if (!skip[j] && is_bjob(&jobs[j], n, in, n_scratch)) {
            bj[nb++] = j;
            skip[j] = 1;
        }
    if (nb) {
        lt_status st = bmatmul(be, jobs, bj, nb, x, n, in, scratch, n_scratch);
        if (st || nq + nb == nj) return st;
    }
    int nt = lt_be_max_threads();
    if (n_scratch / nt < in) nt = (int)(n_scratch / in);
    if (nt < 1)
        return lt_error(LT_ERR_ARG, "matmul_w: scratch of %lld floats is less than a row of %d",
                        (long long)n_scratch, in);
    const int64_t slice = n_scratch / nt;
    int64_t per = (slice < WBLOCK ? slice : WBLOCK) / in;
    if (per > 4) per &= ~(int64_t)3;
    if (per < 1) per = 1;
    int64_t first[5], nblk = 0, work = 0; /* job j's blocks are [first[j], first[j + 1]) */
    for (int j = 0; j < nj; j++) {
        const lt_weight_view *w = jobs[j].w;
        first[j] = nblk;
        if (skip[j]) continue; /* done by qmatmul: no blocks */
        if (w->cols != in)
            return lt_error(LT_ERR_ARG, "matmul_w: job %d has %lld columns, job 0 %d", j,
                            (long long)w->cols, in);
        if (!w->rows_fn && !w->nf4 && w->dtype == LT_DTYPE_F32 && !jobs[j].rowwise) {
            matmul_beta(jobs[j].y, x, w->data, n, (int)w->rows, in, jobs[j].beta);
            continue;
        }
        if (!w->rows_fn && !w->nf4 && !lt_host_supports_dtype_(be, w->dtype))
            return lt_error(LT_ERR_UNSUPPORTED, "cpu backend: weights stored as %s",
                            lt_dtype_name(w->dtype));
        nblk += (w->rows + per - 1) / per;
        work += (int64_t)n * w->rows * in;
    }
    first[nj] = nblk;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nblk > 1 && work >= SMALL_MATMUL)
    for (int64_t b = 0; b < nblk; b++) {
        int j = 0;
        while (b >= first[j + 1])
            j++;
        const lt_matmul_job *jb = &jobs[j];
        const int64_t r0 = (b - first[j]) * per,
                      nr = jb->w->rows - r0 < per ? jb->w->rows - r0 : per;
        const float *W;
        if (lt_host_rows_f32_(be, jb->w, r0, nr, scratch + lt_be_thread_num() * slice, &W)) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        rows_dot(jb->y + r0, jb->w->rows, x, W, n, (int)nr, in, jb->beta);
    }
    for (int j = 0; failed && j < nj; j++) { /* again here, for the message (thread-local) */
        const float *W;
        lt_status st = lt_host_rows_f32_(be, jobs[j].w, 0, 1, scratch, &W);
        if (st) return st;
    }
    return failed ? lt_error(LT_ERR_INTERNAL, "matmul_w: a weight is unreadable") : LT_OK;
}

int64_t lt_cpu_attention_kv_scratch_(const lt_backend *be, int ctx) {
    return (int64_t)lt_be_max_threads() * ctx;
}

#define AK_ATTR static
#define AK_FN attention_kv_baseline
#define AK_AV64 ak_av64
#define AK_KT float
#define AK_LOADKV(p) LOAD8(p)
#define AK_KV1(p, i) ((p)[i])
#include "attention_kv.inc"
#undef AK_FN
#undef AK_AV64
#undef AK_KT
#undef AK_LOADKV
#undef AK_KV1

/* 8 fp16 cache elements widened (exact: the same floats F16C's vcvtph2ps gives); through a
 * pointer (a v8f return value is an ABI question without AVX) */
static inline void load8_f16_to(v8f *r, const uint16_t *p) {
    for (int i = 0; i < 8; i++)
        (*r)[i] = lt_f16_to_f32(p[i]);
}
#define load8_f16(p)                                                                          \
    __extension__({                                                                           \
        v8f r_;                                                                               \
        load8_f16_to(&r_, (p));                                                               \
        r_;                                                                                   \
    })
#define AK_FN attention_kv_f16_baseline
#define AK_AV64 ak_av64_f16
#define AK_KT uint16_t
#define AK_LOADKV(p) load8_f16(p)
#define AK_KV1(p, i) lt_f16_to_f32((p)[i])
#include "attention_kv.inc"
#undef AK_FN
#undef AK_AV64
#undef AK_KT
#undef AK_LOADKV
#undef AK_KV1
#undef AK_ATTR

void lt_cpu_attention_kv_(const lt_backend *be, float *out, const float *q, const float *k,
                          const float *v, int n, int pos0, int H, int KV, int hd, int window,
                          float *scratch, int64_t n_scratch) {
    (void)be;
#if LT_X86_KERNELS
    if (lt_ops_fast_kernel_level() >= LT_CPU_LEVEL_AVX2) {
        lt_attention_kv_avx2_(out, q, k, v, n, pos0, H, KV, hd, window, scratch, n_scratch);
        return;
    }
#endif
    attention_kv_baseline(out, q, k, v, n, pos0, H, KV, hd, window, scratch, n_scratch);
}

void lt_cpu_attention_kv_f16_(const lt_backend *be, float *out, const float *q, const uint16_t *k,
                              const uint16_t *v, int n, int pos0, int H, int KV, int hd,
                              int window, float *scratch, int64_t n_scratch) {
    (void)be;
#if LT_X86_KERNELS
    if (lt_ops_fast_kernel_level() >= LT_CPU_LEVEL_AVX2) {
        lt_attention_kv_f16_avx2_(out, q, k, v, n, pos0, H, KV, hd, window, scratch, n_scratch);
        return;
    }
#endif
    attention_kv_f16_baseline(out, q, k, v, n, pos0, H, KV, hd, window, scratch, n_scratch);
}

void lt_cpu_to_f16_(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    (void)be;
#if LT_X86_KERNELS
    if (lt_ops_fast_kernel_level() >= LT_CPU_LEVEL_AVX2) {
        lt_to_f16_avx2_(dst, src, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        dst[i] = lt_f32_to_f16(src[i]);
}

void lt_host_add_bias_(const lt_backend *be, float *y, const float *bias, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < C; o++)
            y[(int64_t)i * C + o] += bias[o];
}

void lt_host_scale_rows_(const lt_backend *be, float *y, const float *s, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < C; o++)
            y[(int64_t)i * C + o] *= s[o];
}
