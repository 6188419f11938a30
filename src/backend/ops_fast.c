/* ops_fast.c - fast twins of reference training ops (see ops_fast.h, docs/OPS.md "Fast ops"):
 * the calls, their run-time dispatch and the baseline kernels.
 *
 * Each lt_fast_* call reads one kernel table (ops_fast_kernels.h) for the level
 * lt_ops_fast_kernel_level() gives: the AVX2 table of ops_fast_avx2.c (flash-style attention,
 * vectorised exp in cross-entropy and SwiGLU), or the baseline table below (scalar loops; the
 * reference op for attention). OpenMP over rows and chunks stays here, common to the levels.
 * Invariants: no allocation; backward ops add into gradients like the reference; results do
 * not depend on the thread count (each output element is owned by one task, reductions run in
 * a fixed order). */
#include "ops_fast.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops_fast_kernels.h"

/* ---- GEMM over one thread pool ----------------------------------------------------------- */
void lt_gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    if (nt > 1 && !omp_in_parallel() && openblas_get_num_threads() == 1 &&
        (double)M * N * K >= 1e6 && (M >= 32 || N >= 32)) {
        /* up to 2 chunks per thread of >= 256 rows/columns, handed out dynamically: a thread
         * that loses its core to another process does not hold the other one at the barrier
         * for long; each chunk packs the whole other operand, hence not more chunks */
        const int split_m = M >= N, total = split_m ? M : N;
        int nchunk = total / 256 < 2 * nt ? total / 256 : 2 * nt;
        if (nchunk < nt) nchunk = nt;
        const int per = ((total + nchunk - 1) / nchunk + 15) & ~15;
        nchunk = (total + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int c = 0; c < nchunk; c++) {
            int lo = c * per, hi = lo + per < total ? lo + per : total;
            if (split_m)
                cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha,
                            ta == CblasNoTrans ? A + (int64_t)lo * lda : A + lo, lda, B, ldb, beta,
                            C + (int64_t)lo * ldc, ldc);
            else
                cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda,
                            tb == CblasNoTrans ? B + lo : B + (int64_t)lo * ldb, ldb, beta, C + lo,
                            ldc);
        }
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int lt_blas_threads_single(void) {
    int n = openblas_get_num_threads();
#ifdef _OPENMP
    if (n != 1 && omp_get_max_threads() > 1) openblas_set_num_threads(1);
#endif
    return n;
}

void lt_blas_threads_restore(int n) {
    if (openblas_get_num_threads() != n) openblas_set_num_threads(n);
}

/* ---- dispatch ---------------------------------------------------------------------------- */
static void expf_array_baseline(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < -87.3f ? 0.0f : expf(x[i]);
}

static double cross_entropy_row_baseline(float *d, const float *x, int V, int32_t t, float gs) {
    const float xt = x[t]; /* read before d (which may alias x) is written */
    float mx = x[0];
    for (int i = 0; i < V; i++)
        if (x[i] > mx) mx = x[i];
    double se = 0.0; /* e_i = exp(x_i - mx), kept in d when the gradient is wanted */
    for (int i = 0; i < V; i++) {
        float e = expf(x[i] - mx);
        if (d) d[i] = e;
        se += e;
    }
    if (d) { /* softmax = e / se */
        const float f = (float)(gs / se);
        for (int j = 0; j < V; j++)
            d[j] *= f;
        d[t] -= gs;
    }
    return (double)mx + log(se) - xt;
}

static void swiglu_fwd_baseline(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void swiglu_bwd_write_baseline(float *dgate, float *dup, const float *dout,
                                      const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sig = 1.0f / (1.0f + expf(-g));
        dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        dup[i] = dout[i] * g * sig;
    }
}

static const lt_fast_kernels k_baseline = {
    .level = LT_CPU_LEVEL_BASELINE,
    .attention_fwd_var = NULL, /* the reference op */
    .attention_bwd_var = NULL,
    .cross_entropy_row = cross_entropy_row_baseline,
    .swiglu_fwd = swiglu_fwd_baseline,
    .swiglu_bwd_write = swiglu_bwd_write_baseline,
    .expf_array = expf_array_baseline,
};

lt_cpu_level lt_ops_fast_kernel_level(void) {
#if LT_X86_KERNELS
    return lt_cpu_level_for(LT_CPU_LEVEL_AVX2);
#else
    return LT_CPU_LEVEL_BASELINE;
#endif
}

static const lt_fast_kernels *kernels(void) {
#if LT_X86_KERNELS
    if (lt_ops_fast_kernel_level() >= LT_CPU_LEVEL_AVX2) return &lt_fast_kernels_avx2;
#endif
    return &k_baseline;
}

void lt_fast_expf_array(float *y, const float *x, int64_t n) { kernels()->expf_array(y, x, n); }

/* ---- attention ----------------------------------------------------------------------------- */
static int attention_hd_ok(int HD) { return HD % 8 == 0 && HD > 0 && HD <= LT_FAST_MAX_HD; }

int lt_fast_attention_supported(int HD) {
    return kernels()->attention_fwd_var && attention_hd_ok(HD);
}

void lt_fast_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window) {
    lt_fast_attention_fwd_var(out, lse, q, k, v, seq, NULL, B, T, NH, NKV, HD, window);
}

void lt_fast_attention_fwd_var(float *out, float *lse, const float *q, const float *k,
                               const float *v, const int32_t *seq, const int32_t *off, int B, int T,
                               int NH, int NKV, int HD, int window) {
    const lt_fast_kernels *kt = kernels();
    if (kt->attention_fwd_var && attention_hd_ok(HD)) {
        kt->attention_fwd_var(out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
        return;
    }
    if (!off) {
        lt_op_attention_fwd(out, lse, q, k, v, seq, B, T, NH, NKV, HD, window);
        return;
    }
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    for (int b = 0; b < B; b++) {
        const int64_t r = off[b];
        if (lt_fast_row_len(off, b, T) > 0)
            lt_op_attention_fwd(out + r * qs, lse + r * NH, q + r * qs, k + r * ks, v + r * ks,
                                seq ? seq + r : NULL, 1, lt_fast_row_len(off, b, T), NH, NKV, HD,
                                window);
    }
}

void lt_fast_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window) {
    lt_fast_attention_bwd_var(dq, dk, dv, dout, q, k, v, out, lse, seq, NULL, B, T, NH, NKV, HD,
                              window);
}

void lt_fast_attention_bwd_var(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seq, const int32_t *off, int B, int T, int NH,
                               int NKV, int HD, int window) {
    const lt_fast_kernels *kt = kernels();
    if (kt->attention_bwd_var && attention_hd_ok(HD) && dq && dk && dv) {
        kt->attention_bwd_var(dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH, NKV, HD,
                              window);
        return;
    }
    if (!off) {
        lt_op_attention_bwd(dq, dk, dv, dout, q, k, v, out, lse, seq, B, T, NH, NKV, HD, window);
        return;
    }
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    for (int b = 0; b < B; b++) {
        const int64_t r = off[b];
        if (lt_fast_row_len(off, b, T) > 0)
            lt_op_attention_bwd(dq ? dq + r * qs : NULL, dk ? dk + r * ks : NULL,
                                dv ? dv + r * ks : NULL, dout + r * qs, q + r * qs, k + r * ks,
                                v + r * ks, out + r * qs, lse + r * NH, seq ? seq + r : NULL, 1,
                                lt_fast_row_len(off, b, T), NH, NKV, HD, window);
    }
}

int lt_fast_attention_bf16_supported(int HD) {
#if LT_X86_KERNELS
    return HD % 32 == 0 && HD > 0 && HD <= LT_FAST_MAX_HD &&
           lt_cpu_level_for(LT_CPU_LEVEL_AVX512) >= LT_CPU_LEVEL_AVX512 &&
           (lt_cpu_features() & LT_CPU_AVX512_BF16);
#else
    (void)HD;
    return 0;
#endif
}

void lt_fast_attention_fwd_bf16(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *seq, const int32_t *off, int B,
                                int T, int NH, int NKV, int HD, int window) {
#if LT_X86_KERNELS
    if (lt_fast_attention_bf16_supported(HD)) {
        lt_attention_fwd_bf16_avx512bf16_(out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
        return;
    }
#endif
    lt_fast_attention_fwd_var(out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
}

void lt_fast_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse,
                                const int32_t *seq, const int32_t *off, int B, int T, int NH,
                                int NKV, int HD, int window) {
#if LT_X86_KERNELS
    if (lt_fast_attention_bf16_supported(HD) && dq && dk && dv) {
        lt_attention_bwd_bf16_avx512bf16_(dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH,
                                          NKV, HD, window);
        return;
    }
#endif
    lt_fast_attention_bwd_var(dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH, NKV, HD,
                              window);
}

/* ---- cross-entropy -------------------------------------------------------------------------- */
lt_status lt_fast_cross_entropy(float *dlogits, lt_ce_stats *stats, const float *logits,
                                const int32_t *targets, int N, int V, int ignore_index,
                                float grad_scale) {
    int64_t count = 0;
    for (int n = 0; n < N; n++) {
        int32_t t = targets[n];
        if (t == ignore_index) continue;
        if (t < 0 || t >= V)
            return lt_error(LT_ERR_ARG,
                            "cross_entropy: target %d at row %d is neither the ignore index %d "
                            "nor in [0, %d)",
                            (int)t, n, ignore_index, V);
        count++;
    }
    const float gs = grad_scale != 0.0f ? grad_scale : (count ? 1.0f / (float)count : 0.0f);
    double (*row)(float *, const float *, int, int32_t, float) = kernels()->cross_entropy_row;
    double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (N > 1)
    for (int n = 0; n < N; n++) {
        float *d = dlogits ? dlogits + (int64_t)n * V : NULL;
        const int32_t t = targets[n];
        if (t == ignore_index) {
            if (d) memset(d, 0, sizeof(float) * (size_t)V);
            continue;
        }
        sum += row(d, logits + (int64_t)n * V, V, t, gs);
    }
    if (stats) {
        stats->sum = sum;
        stats->count = count;
        stats->mean = count ? (float)(sum / (double)count) : NAN;
    }
    return LT_OK;
}

/* ---- SwiGLU, RMSNorm --------------------------------------------------------------------------
 */
void lt_fast_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n) {
    void (*fwd)(float *, const float *, const float *, int64_t) = kernels()->swiglu_fwd;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < n; c += 4096)
        fwd(out + c, gate + c, up + c, c + 4096 < n ? 4096 : n - c);
}

void lt_fast_swiglu_bwd_write(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, int64_t n) {
    void (*bwd)(float *, float *, const float *, const float *, const float *, int64_t) =
        kernels()->swiglu_bwd_write;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < n; c += 4096)
        bwd(dgate + c, dup + c, dout + c, gate + c, up + c, c + 4096 < n ? 4096 : n - c);
}

/* RMSNorm and rope are row-independent: the fast versions run the reference on slices of
 * ROWS rows in parallel, so their results are the reference's, bit for bit. */
#define ROWS 16

void lt_fast_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                         float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 65536)
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int64_t o = (int64_t)n0 * C;
        lt_op_rmsnorm_fwd(out + o, rstd + n0, inp + o, w, N - n0 < ROWS ? N - n0 : ROWS, C, eps);
    }
}

void lt_fast_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                         const float *w, const float *rstd, int N, int C) {
    /* dinp: slices in parallel; dw: summed over rows in row order, as the reference does */
    if (dinp) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 65536)
        for (int n0 = 0; n0 < N; n0 += ROWS) {
            int64_t o = (int64_t)n0 * C;
            lt_op_rmsnorm_bwd(dinp + o, NULL, dout + o, inp + o, w, rstd + n0,
                              N - n0 < ROWS ? N - n0 : ROWS, C);
        }
    }
    if (dw)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (int64_t)n * C, *g = dout + (int64_t)n * C;
            float r = rstd[n];
            for (int c = 0; c < C; c++)
                dw[c] += g[c] * (x[c] * r);
        }
}

void lt_fast_rope_fwd(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                      const float *sin_t, int N, int NH, int HD, int interleaved) {
#pragma omp parallel for schedule(static) if ((int64_t)N * NH * HD > 65536)
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int64_t o = (int64_t)n0 * NH * HD;
        lt_op_rope_fwd(out + o, inp + o, pos + n0, cos_t, sin_t, N - n0 < ROWS ? N - n0 : ROWS, NH,
                       HD, interleaved);
    }
}

void lt_fast_rope_bwd(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                      const float *sin_t, int N, int NH, int HD, int interleaved) {
#pragma omp parallel for schedule(static) if ((int64_t)N * NH * HD > 65536)
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int64_t o = (int64_t)n0 * NH * HD;
        lt_op_rope_bwd(dinp + o, dout + o, pos + n0, cos_t, sin_t, N - n0 < ROWS ? N - n0 : ROWS,
                       NH, HD, interleaved);
    }
}
