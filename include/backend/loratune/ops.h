/* ops.h - CPU reference ops for training: forward AND hand-written backward, fp32.
 *
 * Each op is a plain loop or one BLAS call, written so a reader can check it against the
 * math in docs/OPS.md; faster paths (SIMD, CUDA) are to be checked against these.
 *
 * Conventions (all ops):
 *   - Buffers are borrowed and allocated by the caller; ops never allocate. Where an op needs
 *     temporary space the caller passes `scratch` of the size the macro next to it gives.
 *   - Row-major, outermost first. N = number of tokens (B*T), C = input channels,
 *     OC = output channels, T = time, NH / NKV = query / key-value heads, HD = head dim,
 *     V = vocab, r = LoRA rank. Shapes are in the comments.
 *   - Backward functions ADD into every gradient buffer (d* += ...), as llm.c does, so
 *     branches that share an input (q/k/v projections, residuals) sum naturally; callers zero
 *     gradient buffers once per step. A NULL gradient pointer means "not wanted".
 *     Exceptions, which WRITE: lt_op_rope_bwd (may run in place) and the dlogits of
 *     lt_op_cross_entropy (may alias logits).
 *   - Only ops whose inputs can come from data (token ids, targets) check them and return an
 *     lt_status; shape arguments are trusted (the caller planned the buffers).
 *
 * Parameters follow the Hugging Face / PEFT layout: a linear weight is W[OC][C] and
 * y = x W^T + b, as torch.nn.Linear. */
#ifndef LORATUNE_OPS_H
#define LORATUNE_OPS_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/hwinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear ---------------------------------------------------------------------------- */
/* C[M][N] = alpha op(A) op(B) + beta C, row-major, ta / tb 1 = transposed: plain loops with
 * double sums (the reference GEMM; no BLAS, no threads). */
void lt_op_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);
/* out[N][OC] = inp[N][C] @ w[OC][C]^T (+ bias[OC]; bias may be NULL). */
void lt_op_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                      int OC);
/* dinp[N][C] += dout @ w;  dw[OC][C] += dout^T @ inp;  dbias[OC] += sum_n dout[n].
 * Any of dinp, dw, dbias may be NULL. */
void lt_op_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, int N, int C, int OC);

/* ---- embedding ------------------------------------------------------------------------- */
/* out[N][C] = wte[tokens[n]][C]. LT_ERR_ARG if a token is outside [0, V). */
lt_status lt_op_embedding_fwd(float *out, const int32_t *tokens, const float *wte, int N, int C,
                              int V);
/* dwte[V][C] += scatter of dout[N][C] by token (tokens were checked by the forward). */
void lt_op_embedding_bwd(float *dwte, const float *dout, const int32_t *tokens, int N, int C);

/* ---- RMSNorm (LlamaRMSNorm) -------------------------------------------------------------- */
/* out[N][C] = w[C] * inp * rstd,  rstd[N] = 1/sqrt(mean(inp^2) + eps)  (rstd saved). */
void lt_op_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                       float eps);
/* dinp[N][C] += ...; dw[C] += sum_n dout * inp * rstd. Uses the rstd the forward saved. */
void lt_op_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                       const float *rstd, int N, int C);

/* ---- rotary embedding ------------------------------------------------------------------- */
/* cos/sin tables [n_pos][HD/2]: angle = (float)p * inv_freq[i], in float32 as transformers. */
void lt_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int n_pos, int HD);
/* Rotates each head of x[N][NH][HD] by its token's position pos[N] (in [0, n_pos) of the
 * tables; positions are per token so packed sequences can restart at 0).
 * interleaved = 0: HF half-split pairs (i, i + HD/2) (rotate_half);
 * interleaved = 1: adjacent pairs (2i, 2i+1) (llama.cpp / llama2.c).
 * out may equal inp. Backward is the rotation by -angle: call lt_op_rope_bwd with dout in
 * place of inp to get dinp (WRITTEN, not added; may be in place). */
void lt_op_rope_fwd(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                    const float *sin_t, int N, int NH, int HD, int interleaved);
void lt_op_rope_bwd(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                    const float *sin_t, int N, int NH, int HD, int interleaved);

/* ---- grouped-query causal attention ------------------------------------------------------ */
/* q[B][T][NH][HD], k,v[B][T][NKV][HD] -> out[B][T][NH][HD]; NKV divides NH, query head h
 * uses kv head h / (NH/NKV). Query t attends key s iff s <= t, seq[b][s] == seq[b][t]
 * (seq may be NULL: one sequence per row) and, when window > 0, t - s < window (Mistral's
 * sliding window). Scores are scaled by 1/sqrt(HD).
 * Saves lse[B][NH][T] = log-sum-exp of each query's scores (not the T x T probabilities:
 * O(T) instead of O(T^2) memory; the backward recomputes the scores). */
void lt_op_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window);
/* dq[B][T][NH][HD] += ..., dk, dv[B][T][NKV][HD] += ... (query heads of a group summed into
 * their shared kv head). Needs the forward's out and lse. */
void lt_op_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                         const float *k, const float *v, const float *out, const float *lse,
                         const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window);

/* ---- SwiGLU -------------------------------------------------------------------------------- */
/* out[N][H] = silu(gate) * up, silu(g) = g * sigmoid(g). n = N*H elements. */
void lt_op_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n);
/* dgate += dout * up * silu'(gate);  dup += dout * silu(gate). */
void lt_op_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                      const float *up, int64_t n);

/* ---- cross-entropy ------------------------------------------------------------------------ */
/* targets equal to LT_IGNORE_INDEX (core.h) are not counted */
typedef struct {
    double sum;    /* sum over counted tokens of -log softmax(logits)[target] (double) */
    int64_t count; /* tokens whose target != ignore_index */
    float mean;    /* sum / count; NaN when count == 0 (as torch) */
} lt_ce_stats;
/* logits[N][V], targets[N] (ignore_index rows are skipped). When dlogits[N][V] is not NULL
 * it is WRITTEN (it may equal logits): (softmax - onehot) * grad_scale for counted rows, 0
 * for ignored rows; grad_scale = 0 means 1/count (the gradient of the mean). To normalise
 * over several micro-batches as transformers does, pass 1/total_count.
 * LT_ERR_ARG if a target is neither ignore_index nor in [0, V). */
lt_status lt_op_cross_entropy(float *dlogits, lt_ce_stats *stats, const float *logits,
                              const int32_t *targets, int N, int V, int ignore_index,
                              float grad_scale);

/* ---- optimizer ------------------------------------------------------------------------------- */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} lt_adamw_cfg;
/* One torch.optim.AdamW step over n parameters: p *= 1 - lr*wd; m = lerp(m, g, 1-b1);
 * v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * step is the 1-based step count AFTER incrementing (the first call passes 1). */
void lt_op_adamw_step(float *p, const float *g, float *m, float *v, int64_t n,
                      const lt_adamw_cfg *cfg, int64_t step);
/* Global L2 norm over nbufs buffers bufs[i] of ns[i] floats (accumulated in double). */
double lt_op_global_norm(const float *const *bufs, const int64_t *ns, int nbufs);
/* torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)). */
float lt_op_clip_coef(double norm, float max_norm);
/* x[n] *= s. */
void lt_op_scale(float *x, int64_t n, float s);

/* ---- LoRA / DoRA on one linear (W frozen) --------------------------------------------------- */
/* scale = alpha / r, or alpha / sqrt(r) with rslora (PEFT's use_rslora). */
float lt_lora_scale(float alpha, int r, int rslora);
/* PEFT's init: A[r][C] ~ U(-bound, bound) with bound = 1/sqrt(C) (what kaiming_uniform_ with
 * a = sqrt(5) gives), B[OC][r] = 0. The random stream (splitmix64, 24-bit uniforms) is ours:
 * the same seed does NOT give torch's numbers. */
void lt_lora_init(float *A, float *B, int r, int C, int OC, uint64_t seed);
float lt_lora_init_bound(int C);

/* Scratch floats the LoRA / DoRA forward and backward need. */
#define LT_LORA_SCRATCH(N, C, OC, r) ((int64_t)(N) * ((int64_t)(C) + (OC) + (r)))

/* y[N][OC] = x W^T (+ bias) + scale * xa B^T,  xa[N][r] = xd A^T (saved for backward),
 * xd = x * mask (mask[N][C] holds 0 or 1/(1-p), as torch's dropout; NULL = no dropout).
 * W[OC][C], A[r][C], B[OC][r], bias[OC] or NULL.
 * W NULL: y already holds the frozen base's product (and its bias: bias is then ignored) and
 * only the LoRA term is added -- the bf16 compute mode runs the base product itself. */
void lt_op_lora_fwd(float *y, float *xa, const float *x, const float *W, const float *bias,
                    const float *A, const float *B, const float *mask, int N, int C, int OC, int r,
                    float scale, float *scratch);
/* dx[N][C] += ..., dA[r][C] += ..., dB[OC][r] += ... (any may be NULL). W NULL: dx gets only
 * the LoRA path's term (the caller adds dy W). */
void lt_op_lora_bwd(float *dx, float *dA, float *dB, const float *dy, const float *x,
                    const float *W, const float *A, const float *B, const float *xa,
                    const float *mask, int N, int C, int OC, int r, float scale, float *scratch);

/* DoRA as PEFT 0.17 computes it (tuners/lora/dora.py, training path):
 *   n[o] = || W[o] + scale * (B A)[o] ||_2 over C  (saved in wnorm[OC]; DETACHED: no gradient
 *          flows through it, DoRA paper sec. 4.3),  g = mag / n,
 *   y = x W^T (+ bias) + (g - 1) * (xd W^T) + g * scale * (xd A^T) B^T.
 * Without dropout (mask NULL) this is y = g * (x (W + scale B A)^T) + bias. xa[N][r] saved. */
void lt_op_dora_fwd(float *y, float *wnorm, float *xa, const float *x, const float *W,
                    const float *bias, const float *A, const float *B, const float *mag,
                    const float *mask, int N, int C, int OC, int r, float scale, float *scratch);
/* dx[N][C], dA[r][C], dB[OC][r], dmag[OC] += ... (any may be NULL). */
void lt_op_dora_bwd(float *dx, float *dA, float *dB, float *dmag, const float *dy, const float *x,
                    const float *W, const float *A, const float *B, const float *mag,
                    const float *wnorm, const float *xa, const float *mask, int N, int C, int OC,
                    int r, float scale, float *scratch);

/* The level of the fast twins the trainer runs instead of some of these (attention,
 * cross-entropy, SwiGLU: src/train/ops_fast.c; run-time dispatch, hwinfo.h): avx2 or
 * baseline (where attention is the reference op above). */
lt_cpu_level lt_ops_fast_kernel_level(void);

#ifdef __cplusplus
}
#endif
#endif
