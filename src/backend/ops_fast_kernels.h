/* ops_fast_kernels.h - the per-level kernels behind the lt_fast_* calls of ops_fast.c (run-time
 * dispatch: hwinfo.h lt_cpu_level, docs/OPS.md "CPU dispatch").
 *
 * One table per instruction-set level: the baseline one in ops_fast.c (scalar loops; the
 * reference op for attention), the AVX2 one in ops_fast_avx2.c, which is compiled with -mavx2
 * -mfma and may be entered only through this table once lt_ops_fast_kernel_level() said avx2.
 * ops_fast.c reads the table once per call; what stays common (OpenMP over rows and chunks,
 * argument checks, the reference fallbacks) lives there. Internal to src/train. */
#ifndef LT_OPS_FAST_KERNELS_H
#define LT_OPS_FAST_KERNELS_H

#include "ops_fast.h"

typedef struct {
    lt_cpu_level level;
    /* lt_fast_attention_fwd_var / _bwd_var for HD % 8 == 0, HD <= LT_FAST_MAX_HD and (bwd)
     * every gradient wanted; NULL: the reference op runs (row by row) */
    void (*attention_fwd_var)(float *out, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *seq, const int32_t *off, int B, int T,
                              int NH, int NKV, int HD, int window);
    void (*attention_bwd_var)(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int32_t *seq, const int32_t *off, int B, int T, int NH, int NKV,
                              int HD, int window);
    /* one counted row x[V] with target t: returns max + log(sum exp(x - max)) - x[t] (sum in
     * double); when d (may alias x) is given, writes d = softmax(x) * gs, d[t] -= gs */
    double (*cross_entropy_row)(float *d, const float *x, int V, int32_t t, float gs);
    /* one chunk of n elements, no threads of their own */
    void (*swiglu_fwd)(float *out, const float *gate, const float *up, int64_t n);
    void (*swiglu_bwd_write)(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int64_t n);
    void (*expf_array)(float *y, const float *x, int64_t n);
} lt_fast_kernels;

extern const lt_fast_kernels lt_fast_kernels_avx2;

/* The bf16 compute mode's attention on AVX512-BF16 (attention_avx512bf16.c): the arguments of
 * attention_fwd_var / _bwd_var, HD % 32 == 0, HD <= LT_FAST_MAX_HD, every gradient wanted;
 * entered only through lt_fast_attention_*_bf16 (ops_fast.c) */
void lt_attention_fwd_bf16_avx512bf16_(float *out, float *lse, const float *q, const float *k,
                                       const float *v, const int32_t *seq, const int32_t *off,
                                       int B, int T, int NH, int NKV, int HD, int window);
void lt_attention_bwd_bf16_avx512bf16_(float *dq, float *dk, float *dv, const float *dout,
                                       const float *q, const float *k, const float *v,
                                       const float *out, const float *lse, const int32_t *seq,
                                       const int32_t *off, int B, int T, int NH, int NKV, int HD,
                                       int window);

/* Rows of different lengths (off != NULL): row b is positions [off[b], off[b+1]) of q, k, v,
 * out and its lse block starts at off[b] * NH (the uniform layout's (b * NH + h) * T + t is
 * the same formula with off[b] = b * T). */
static inline int lt_fast_row_len(const int32_t *off, int b, int T) {
    return off ? off[b + 1] - off[b] : T;
}
static inline int64_t lt_fast_row_start(const int32_t *off, int b, int T) {
    return off ? off[b] : (int64_t)b * T;
}

#endif
