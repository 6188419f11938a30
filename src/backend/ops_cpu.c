/* ops_cpu.c - CPU reference forward/backward of the training ops (see ops.h, docs/OPS.md).
 *
 * Every op is a plain loop (matrix products too: lt_op_gemm, no BLAS, no OpenMP), kept close to
 * the math so it can serve as the reference the fast paths are tested against, independent of
 * them. The linear, LoRA and DoRA compositions are ops_linear.inc, shared with their fast twins
 * (ops_fast_linear.c) over a different GEMM; PyTorch goldens check the composition
 * (test_ops_torch). Invariants: no allocation; backward ops add
 * into gradients (except rope_bwd and cross-entropy's dlogits, which write); reductions that
 * decide a loss or a norm are accumulated in double. */
#include "loratune/ops.h"

#include <math.h>
#include <string.h>

/* ---- linear, LoRA, DoRA: ops_linear.inc over a plain GEMM ---------------------------- */
/* C = alpha op(A) op(B) + beta C, row-major; ta / tb: 1 = transposed. Plain loops with double
 * sums: the reference does not share the fast path's BLAS or its OpenMP split. */
void lt_op_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
                float b = tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = C + (int64_t)i * ldc + j;
            *c = (float)(alpha * acc) + (beta == 0.0f ? 0.0f : beta * *c);
        }
}

#define LT_LIN(name) lt_op_##name
#define LT_LIN_GEMM lt_op_gemm
#include "ops_linear.inc"

/* ---- embedding ------------------------------------------------------------------------- */
lt_status lt_op_embedding_fwd(float *out, const int32_t *tokens, const float *wte, int N, int C,
                              int V) {
    for (int n = 0; n < N; n++) {
        int32_t t = tokens[n];
        if (t < 0 || t >= V)
            return lt_error(LT_ERR_ARG, "embedding: token %d at position %d is outside [0, %d)",
                            (int)t, n, V);
        memcpy(out + (int64_t)n * C, wte + (int64_t)t * C, sizeof(float) * (size_t)C);
    }
    return LT_OK;
}

void lt_op_embedding_bwd(float *dwte, const float *dout, const int32_t *tokens, int N, int C) {
    for (int n = 0; n < N; n++) {
        float *d = dwte + (int64_t)tokens[n] * C;
        const float *g = dout + (int64_t)n * C;
        for (int c = 0; c < C; c++)
            d[c] += g[c];
    }
}

/* ---- RMSNorm ----------------------------------------------------------------------------- */
/* The rows' sums in double, in 8 interleaved partial sums (lane c % 8, the tail in a ninth)
 * added in one fixed order: one order on every CPU and thread count, and lanes the compiler
 * runs side by side where one running sum would wait on each add's latency. */
static double sum8_fin(const double *s, double tail) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
}
static double sumsq_row(const float *x, int C) {
    double s[8] = {0};
    int c = 0;
    for (; c + 8 <= C; c += 8)
        for (int j = 0; j < 8; j++)
            s[j] += (double)x[c + j] * x[c + j];
    double tail = 0.0;
    for (; c < C; c++)
        tail += (double)x[c] * x[c];
    return sum8_fin(s, tail);
}
/* sum_c (g[c] w[c]) (x[c] r), the products in float as the formula reads */
static double dot_gwxr_row(const float *g, const float *w, const float *x, float r, int C) {
    double s[8] = {0};
    int c = 0;
    for (; c + 8 <= C; c += 8)
        for (int j = 0; j < 8; j++)
            s[j] += (double)(g[c + j] * w[c + j]) * (x[c + j] * r);
    double tail = 0.0;
    for (; c < C; c++)
        tail += (double)(g[c] * w[c]) * (x[c] * r);
    return sum8_fin(s, tail);
}

void lt_op_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                       float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C;
        double ss = sumsq_row(x, C);
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        rstd[n] = r;
        float *o = out + (int64_t)n * C;
        for (int c = 0; c < C; c++)
            o[c] = w[c] * (x[c] * r);
    }
}

void lt_op_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                       const float *rstd, int N, int C) {
    /* xhat = x r; dL/dx = r (dxhat - xhat * mean(dxhat * xhat)), dxhat = dout * w */
    for (int n = 0; n < N; n++) {
        const float *x = inp + (int64_t)n * C, *g = dout + (int64_t)n * C;
        float r = rstd[n];
        double dot = dot_gwxr_row(g, w, x, r, C);
        float m = (float)(dot / C);
        if (dinp) {
            float *d = dinp + (int64_t)n * C;
            for (int c = 0; c < C; c++)
                d[c] += r * (g[c] * w[c] - x[c] * r * m);
        }
        if (dw)
            for (int c = 0; c < C; c++)
                dw[c] += g[c] * (x[c] * r);
    }
}

/* ---- rotary -------------------------------------------------------------------------------- */
void lt_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int n_pos, int HD) {
    int half = HD / 2;
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            float a = (float)p * inv_freq[i];
            cos_t[(int64_t)p * half + i] = cosf(a);
            sin_t[(int64_t)p * half + i] = sinf(a);
        }
}

/* Rotates every pair of x by +angle (sign = 1) or -angle (sign = -1). */
static void rope_rotate(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                        const float *sin_t, int N, int NH, int HD, int interleaved, float sign) {
    int half = HD / 2;
    for (int n = 0; n < N; n++) {
        const float *cs = cos_t + (int64_t)pos[n] * half, *sn = sin_t + (int64_t)pos[n] * half;
        for (int h = 0; h < NH; h++) {
            const float *x = inp + ((int64_t)n * NH + h) * HD;
            float *y = out + ((int64_t)n * NH + h) * HD;
            for (int i = 0; i < half; i++) {
                int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                float c = cs[i], s = sign * sn[i];
                float x0 = x[i0], x1 = x[i1]; /* read both first: out may alias inp */
                y[i0] = x0 * c - x1 * s;
                y[i1] = x1 * c + x0 * s;
            }
        }
    }
}

void lt_op_rope_fwd(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                    const float *sin_t, int N, int NH, int HD, int interleaved) {
    rope_rotate(out, inp, pos, cos_t, sin_t, N, NH, HD, interleaved, 1.0f);
}

void lt_op_rope_bwd(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                    const float *sin_t, int N, int NH, int HD, int interleaved) {
    /* The rotation is orthogonal, so its transpose is the rotation by -angle. */
    rope_rotate(dinp, dout, pos, cos_t, sin_t, N, NH, HD, interleaved, -1.0f);
}

/* ---- attention ----------------------------------------------------------------------------- */
static inline int attn_allowed(const int32_t *seq_row, int t, int s, int window) {
    if (s > t) return 0;
    if (seq_row && seq_row[s] != seq_row[t]) return 0;
    if (window > 0 && t - s >= window) return 0;
    return 1;
}

static inline float dotf(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

void lt_op_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window) {
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int32_t *seq_row = seq ? seq + (int64_t)b * T : NULL;
            int kh = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + (((int64_t)b * T + t) * NH + h) * HD;
                float *ot = out + (((int64_t)b * T + t) * NH + h) * HD;
                /* pass 1: max and sum of exp -> log-sum-exp */
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    if (!attn_allowed(seq_row, t, s, window)) continue;
                    float sc = dotf(qt, k + (((int64_t)b * T + s) * NKV + kh) * HD, HD) * scale;
                    if (sc > mx) mx = sc;
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) {
                    if (!attn_allowed(seq_row, t, s, window)) continue;
                    float sc = dotf(qt, k + (((int64_t)b * T + s) * NKV + kh) * HD, HD) * scale;
                    sum += exp((double)(sc - mx));
                }
                float l = mx + (float)log(sum); /* s = t is always allowed: sum >= 1 */
                lse[((int64_t)b * NH + h) * T + t] = l;
                /* pass 2: out = sum_s p_s v_s */
                for (int d = 0; d < HD; d++)
                    ot[d] = 0.0f;
                for (int s = 0; s <= t; s++) {
                    if (!attn_allowed(seq_row, t, s, window)) continue;
                    float sc = dotf(qt, k + (((int64_t)b * T + s) * NKV + kh) * HD, HD) * scale;
                    float p = expf(sc - l);
                    const float *vs = v + (((int64_t)b * T + s) * NKV + kh) * HD;
                    for (int d = 0; d < HD; d++)
                        ot[d] += p * vs[d];
                }
            }
        }
}

void lt_op_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                         const float *k, const float *v, const float *out, const float *lse,
                         const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window) {
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV;
    /* One thread per (b, kv head): the query heads of a group all add into that kv head. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++) {
            const int32_t *seq_row = seq ? seq + (int64_t)b * T : NULL;
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    int64_t qi = (((int64_t)b * T + t) * NH + h) * HD;
                    const float *qt = q + qi, *got = dout + qi;
                    float l = lse[((int64_t)b * NH + h) * T + t];
                    /* D = sum_s p_s dp_s = dout . out (softmax backward) */
                    float D = dotf(got, out + qi, HD);
                    for (int s = 0; s <= t; s++) {
                        if (!attn_allowed(seq_row, t, s, window)) continue;
                        int64_t ki = (((int64_t)b * T + s) * NKV + kh) * HD;
                        const float *ks = k + ki, *vs = v + ki;
                        float p = expf(dotf(qt, ks, HD) * scale - l);
                        float dp = dotf(got, vs, HD);
                        float ds = p * (dp - D) * scale; /* d(score before scaling) */
                        if (dq)
                            for (int d = 0; d < HD; d++)
                                dq[qi + d] += ds * ks[d];
                        if (dk)
                            for (int d = 0; d < HD; d++)
                                dk[ki + d] += ds * qt[d];
                        if (dv)
                            for (int d = 0; d < HD; d++)
                                dv[ki + d] += p * got[d];
                    }
                }
        }
}

/* ---- SwiGLU -------------------------------------------------------------------------------- */
void lt_op_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void lt_op_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                      const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sig = 1.0f / (1.0f + expf(-g));
        if (dgate) dgate[i] += dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        if (dup) dup[i] += dout[i] * g * sig;
    }
}

/* ---- cross-entropy -------------------------------------------------------------------------- */
lt_status lt_op_cross_entropy(float *dlogits, lt_ce_stats *stats, const float *logits,
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
    float gs = grad_scale != 0.0f ? grad_scale : (count ? 1.0f / (float)count : 0.0f);
    double sum = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = logits + (int64_t)n * V;
        int32_t t = targets[n];
        if (t == ignore_index) {
            if (dlogits) memset(dlogits + (int64_t)n * V, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float mx = x[0];
        for (int i = 1; i < V; i++)
            if (x[i] > mx) mx = x[i];
        double se = 0.0;
        for (int i = 0; i < V; i++)
            se += exp((double)(x[i] - mx));
        double lse = mx + log(se);
        sum += lse - x[t];
        if (dlogits) { /* may alias logits: x[i] is read before d[i] is written */
            float *d = dlogits + (int64_t)n * V;
            for (int i = 0; i < V; i++) {
                float p = (float)exp((double)x[i] - lse);
                d[i] = (p - (i == t ? 1.0f : 0.0f)) * gs;
            }
        }
    }
    if (stats) {
        stats->sum = sum;
        stats->count = count;
        stats->mean = count ? (float)(sum / (double)count) : NAN;
    }
    return LT_OK;
}

/* ---- optimizer ------------------------------------------------------------------------------- */
void lt_op_adamw_step(float *p, const float *g, float *m, float *v, int64_t n,
                      const lt_adamw_cfg *cfg, int64_t step) {
    /* Scalars are formed in double and rounded once, as torch does with Python floats. */
    const float decay = (float)(1.0 - (double)cfg->lr * cfg->weight_decay);
    const float w1 = (float)(1.0 - (double)cfg->beta1);
    const float w2 = (float)(1.0 - (double)cfg->beta2);
    const double bc1 = 1.0 - pow((double)cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow((double)cfg->beta2, (double)step);
    const float step_size = (float)((double)cfg->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    for (int64_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] += w1 * (g[i] - m[i]); /* torch.lerp for weight < 0.5 */
        v[i] = v[i] * cfg->beta2 + w2 * (g[i] * g[i]);
        float denom = sqrtf(v[i]) / bc2_sqrt + cfg->eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

double lt_op_global_norm(const float *const *bufs, const int64_t *ns, int nbufs) {
    double ss = 0.0;
    for (int b = 0; b < nbufs; b++)
        for (int64_t i = 0; i < ns[b]; i++)
            ss += (double)bufs[b][i] * bufs[b][i];
    return sqrt(ss);
}

float lt_op_clip_coef(double norm, float max_norm) {
    double c = (double)max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void lt_op_scale(float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

/* ---- LoRA / DoRA -------------------------------------------------------------------------- */
float lt_lora_scale(float alpha, int r, int rslora) {
    return rslora ? (float)(alpha / sqrt((double)r)) : alpha / (float)r;
}

float lt_lora_init_bound(int C) {
    /* kaiming_uniform_(a=sqrt(5)): gain = sqrt(2/(1+a^2)) = sqrt(1/3), std = gain/sqrt(C),
     * bound = sqrt(3) * std = 1/sqrt(C). */
    return (float)(sqrt(3.0) * sqrt(2.0 / 6.0) / sqrt((double)C));
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lt_lora_init(float *A, float *B, int r, int C, int OC, uint64_t seed) {
    float bound = lt_lora_init_bound(C);
    uint64_t s = seed;
    for (int64_t i = 0; i < (int64_t)r * C; i++) {
        float u = (float)(splitmix64(&s) >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        A[i] = -bound + 2.0f * bound * u;
    }
    memset(B, 0, sizeof(float) * (size_t)OC * (size_t)r);
}
