/* test_ops_fd.c - every backward in ops.h against central finite differences in double.
 *
 * For each op the test holds its own double-precision reference forward (plain loops written
 * from the math, independent of src/train/), evaluates L = sum(out * R) for a random R,
 * perturbs each input element by +-h (h = 1e-6) and compares dL/dx with our fp32 analytic
 * gradient (run with dout = R). Tolerances:
 *   forward  : max |ours - ref| <= 1e-5 * max(1, max |ref|)
 *   gradient : max |ours - fd|  <= 1e-4 * max |fd|   (fp32 analytic vs double FD)
 * Sizes are tiny (B=2, T=5, C=8, NH=4, NKV=2, HD=4, V=11, r=2) so it runs in well under a
 * second even under ASan. Row 0 of the attention/rope inputs packs two sequences (ids 0,0,1,1,1
 * with positions restarting at 0) and the cross-entropy targets include -100. */
#include <stdint.h>

#include "loratune/ops.h"
#include "lt_test.h"

#define B_ 2
#define T_ 5
#define N_ (B_ * T_)
#define C_ 8
#define OC_ 6
#define NH_ 4
#define NKV_ 2
#define HD_ 4
#define V_ 11
#define R_ 2
#define FWD_TOL 1e-5
#define GRAD_TOL 1e-4
#define FD_H 1e-6

static uint64_t rng_state = 0x1234567ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / 16777216.0 * 2.0 - 1.0);
}
/* same random values in a float and a double array */
static void fill2(float *f, double *d, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        f[i] = frand() * scale;
        if (d) d[i] = f[i];
    }
}
static double *dalloc(int64_t n) {
    return calloc((size_t)n, sizeof(double));
}
static float *falloc(int64_t n) {
    return calloc((size_t)n, sizeof(float));
}

static void check_fwd(const char *what, const float *ours, const double *ref, int64_t n) {
    double mx = 1.0, err = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        double e = fabs(ours[i] - ref[i]);
        if (e > err) err = e, at = i;
    }
    CHECK(err <= FWD_TOL * mx, "%s forward: max err %.3g at %lld (ours %.9g, ref %.9g)", what, err,
          (long long)at, ours[at], ref[at]);
}

typedef double (*loss_fn)(void *ctx);

/* Central differences of loss w.r.t. each x[i] (x lives inside ctx) vs analytic g. */
static void check_grad(const char *what, loss_fn loss, void *ctx, double *x, int64_t n,
                       const float *g) {
    double mx = 0.0, err = 0.0, fd_at = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_H;
        double lp = loss(ctx);
        x[i] = x0 - FD_H;
        double lm = loss(ctx);
        x[i] = x0;
        double fd = (lp - lm) / (2 * FD_H);
        if (fabs(fd) > mx) mx = fabs(fd);
        double e = fabs(g[i] - fd);
        if (e > err) err = e, at = i, fd_at = fd;
    }
    CHECK(mx > 0.0 && err <= GRAD_TOL * mx,
          "%s: max |analytic - fd| %.3g at %lld (analytic %.9g, fd %.9g), max |fd| %.3g", what, err,
          (long long)at, g[at], fd_at, mx);
}

static double dot_out(const double *out, const double *R, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += out[i] * R[i];
    return s;
}

/* ---- matmul ------------------------------------------------------------------------------- */
typedef struct {
    double *x, *w, *b, *out, *R;
} mm_ctx;
static void ref_matmul(mm_ctx *c) {
    for (int n = 0; n < N_; n++)
        for (int o = 0; o < OC_; o++) {
            double s = c->b[o];
            for (int i = 0; i < C_; i++)
                s += c->x[n * C_ + i] * c->w[o * C_ + i];
            c->out[n * OC_ + o] = s;
        }
}
static double loss_matmul(void *p) {
    mm_ctx *c = p;
    ref_matmul(c);
    return dot_out(c->out, c->R, N_ * OC_);
}
static void test_matmul(void) {
    float x[N_ * C_], w[OC_ * C_], b[OC_], R[N_ * OC_], out[N_ * OC_];
    mm_ctx c = {dalloc(N_ * C_), dalloc(OC_ * C_), dalloc(OC_), dalloc(N_ * OC_), dalloc(N_ * OC_)};
    fill2(x, c.x, N_ * C_, 1), fill2(w, c.w, OC_ * C_, 1), fill2(b, c.b, OC_, 1);
    fill2(R, c.R, N_ * OC_, 1);
    lt_op_matmul_fwd(out, x, w, b, N_, C_, OC_);
    ref_matmul(&c);
    check_fwd("matmul", out, c.out, N_ * OC_);
    float *dx = falloc(N_ * C_), *dw = falloc(OC_ * C_), *db = falloc(OC_);
    lt_op_matmul_bwd(dx, dw, db, R, x, w, N_, C_, OC_);
    check_grad("matmul dinp", loss_matmul, &c, c.x, N_ * C_, dx);
    check_grad("matmul dw", loss_matmul, &c, c.w, OC_ * C_, dw);
    check_grad("matmul dbias", loss_matmul, &c, c.b, OC_, db);
    /* accumulation: a second backward doubles the gradients */
    lt_op_matmul_bwd(dx, dw, db, R, x, w, N_, C_, OC_);
    float dw1[OC_ * C_];
    memset(dw1, 0, sizeof dw1);
    lt_op_matmul_bwd(NULL, dw1, NULL, R, x, w, N_, C_, OC_);
    CHECK(fabsf(dw[3] - 2 * dw1[3]) <= 1e-5f * fabsf(dw[3]) + 1e-7f, "matmul bwd accumulates");
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.R), free(dx), free(dw), free(db);
}

/* ---- embedding ------------------------------------------------------------------------------ */
typedef struct {
    double *wte, *out, *R;
    const int32_t *tok;
} emb_ctx;
static double loss_emb(void *p) {
    emb_ctx *c = p;
    for (int n = 0; n < N_; n++)
        for (int i = 0; i < C_; i++)
            c->out[n * C_ + i] = c->wte[c->tok[n] * C_ + i];
    return dot_out(c->out, c->R, N_ * C_);
}
static void test_embedding(void) {
    const int32_t tok[N_] = {3, 1, 3, 10, 0, 5, 5, 5, 2, 9}; /* repeats: scatter-add */
    float wte[V_ * C_], R[N_ * C_], out[N_ * C_], dwte[V_ * C_] = {0};
    emb_ctx c = {dalloc(V_ * C_), dalloc(N_ * C_), dalloc(N_ * C_), tok};
    fill2(wte, c.wte, V_ * C_, 1), fill2(R, c.R, N_ * C_, 1);
    CHECK_OK(lt_op_embedding_fwd(out, tok, wte, N_, C_, V_));
    loss_emb(&c);
    check_fwd("embedding", out, c.out, N_ * C_);
    lt_op_embedding_bwd(dwte, R, tok, N_, C_);
    check_grad("embedding dwte", loss_emb, &c, c.wte, V_ * C_, dwte);
    const int32_t bad[2] = {1, 11};
    CHECK_ERR(lt_op_embedding_fwd(out, bad, wte, 2, C_, V_), LT_ERR_ARG, "token 11 at position 1");
    free(c.wte), free(c.out), free(c.R);
}

/* ---- rmsnorm -------------------------------------------------------------------------------- */
typedef struct {
    double *x, *w, *out, *R;
    double eps;
} rms_ctx;
static double loss_rms(void *p) {
    rms_ctx *c = p;
    for (int n = 0; n < N_; n++) {
        double ss = 0;
        for (int i = 0; i < C_; i++)
            ss += c->x[n * C_ + i] * c->x[n * C_ + i];
        double r = 1.0 / sqrt(ss / C_ + c->eps);
        for (int i = 0; i < C_; i++)
            c->out[n * C_ + i] = c->w[i] * c->x[n * C_ + i] * r;
    }
    return dot_out(c->out, c->R, N_ * C_);
}
static void test_rmsnorm(void) {
    float x[N_ * C_], w[C_], R[N_ * C_], out[N_ * C_], rstd[N_];
    float dx[N_ * C_] = {0}, dw[C_] = {0};
    rms_ctx c = {dalloc(N_ * C_), dalloc(C_), dalloc(N_ * C_), dalloc(N_ * C_), 1e-5};
    fill2(x, c.x, N_ * C_, 1), fill2(w, c.w, C_, 1), fill2(R, c.R, N_ * C_, 1);
    lt_op_rmsnorm_fwd(out, rstd, x, w, N_, C_, 1e-5f);
    loss_rms(&c);
    check_fwd("rmsnorm", out, c.out, N_ * C_);
    lt_op_rmsnorm_bwd(dx, dw, R, x, w, rstd, N_, C_);
    check_grad("rmsnorm dinp", loss_rms, &c, c.x, N_ * C_, dx);
    check_grad("rmsnorm dweight", loss_rms, &c, c.w, C_, dw);
    free(c.x), free(c.w), free(c.out), free(c.R);
}

/* ---- rope ------------------------------------------------------------------------------------ */
typedef struct {
    double *x, *out, *R;
    const int32_t *pos;
    const float *inv_freq;
    int interleaved;
} rope_ctx;
static double loss_rope(void *p) {
    rope_ctx *c = p;
    for (int n = 0; n < N_; n++)
        for (int h = 0; h < NH_; h++) {
            const double *x = c->x + (n * NH_ + h) * HD_;
            double *y = c->out + (n * NH_ + h) * HD_;
            for (int i = 0; i < HD_ / 2; i++) {
                double a = (double)c->pos[n] * c->inv_freq[i];
                int i0 = c->interleaved ? 2 * i : i, i1 = c->interleaved ? 2 * i + 1 : i + HD_ / 2;
                y[i0] = x[i0] * cos(a) - x[i1] * sin(a);
                y[i1] = x[i1] * cos(a) + x[i0] * sin(a);
            }
        }
    return dot_out(c->out, c->R, N_ * NH_ * HD_);
}
static const int32_t kPos[N_] = {0, 1, 0, 1, 2, 0, 1, 2, 3, 4}; /* row 0 packs 2 sequences */
static const int32_t kSeq[N_] = {0, 0, 1, 1, 1, 7, 7, 7, 7, 7};
static void test_rope(int interleaved) {
    enum { M = N_ * NH_ * HD_ };
    float inv_freq[HD_ / 2] = {1.0f, 0.01f}, cos_t[8 * HD_ / 2], sin_t[8 * HD_ / 2];
    float x[M], R[M], out[M], dx[M], inplace[M];
    rope_ctx c = {dalloc(M), dalloc(M), dalloc(M), kPos, inv_freq, interleaved};
    fill2(x, c.x, M, 1), fill2(R, c.R, M, 1);
    lt_rope_tables(cos_t, sin_t, inv_freq, 8, HD_);
    lt_op_rope_fwd(out, x, kPos, cos_t, sin_t, N_, NH_, HD_, interleaved);
    loss_rope(&c);
    check_fwd(interleaved ? "rope interleaved" : "rope half-split", out, c.out, M);
    memcpy(inplace, x, sizeof x);
    lt_op_rope_fwd(inplace, inplace, kPos, cos_t, sin_t, N_, NH_, HD_, interleaved);
    CHECK(memcmp(inplace, out, sizeof out) == 0, "rope in place gives the same result");
    lt_op_rope_bwd(dx, R, kPos, cos_t, sin_t, N_, NH_, HD_, interleaved);
    check_grad(interleaved ? "rope interleaved dinp" : "rope half-split dinp", loss_rope, &c, c.x,
               M, dx);
    free(c.x), free(c.out), free(c.R);
}

/* ---- attention ------------------------------------------------------------------------------- */
typedef struct {
    double *q, *k, *v, *out, *R;
    const int32_t *seq;
    int window;
} att_ctx;
static double loss_att(void *p) {
    att_ctx *c = p;
    double scale = 1.0 / sqrt((double)HD_);
    for (int b = 0; b < B_; b++)
        for (int h = 0; h < NH_; h++) {
            int kh = h / (NH_ / NKV_);
            for (int t = 0; t < T_; t++) {
                double sc[T_], mx = -1e300, sum = 0;
                for (int s = 0; s < T_; s++) {
                    int ok = s <= t && c->seq[b * T_ + s] == c->seq[b * T_ + t] &&
                             (c->window <= 0 || t - s < c->window);
                    sc[s] = -1e300;
                    if (!ok) continue;
                    double d = 0;
                    for (int i = 0; i < HD_; i++)
                        d += c->q[((b * T_ + t) * NH_ + h) * HD_ + i] *
                             c->k[((b * T_ + s) * NKV_ + kh) * HD_ + i];
                    sc[s] = d * scale;
                    if (sc[s] > mx) mx = sc[s];
                }
                for (int s = 0; s < T_; s++)
                    sum += sc[s] > -1e299 ? exp(sc[s] - mx) : 0.0;
                double *o = c->out + ((b * T_ + t) * NH_ + h) * HD_;
                for (int i = 0; i < HD_; i++)
                    o[i] = 0;
                for (int s = 0; s < T_; s++) {
                    if (sc[s] <= -1e299) continue;
                    double pr = exp(sc[s] - mx) / sum;
                    for (int i = 0; i < HD_; i++)
                        o[i] += pr * c->v[((b * T_ + s) * NKV_ + kh) * HD_ + i];
                }
            }
        }
    return dot_out(c->out, c->R, N_ * NH_ * HD_);
}
static void test_attention(int window) {
    enum { MQ = N_ * NH_ * HD_, MK = N_ * NKV_ * HD_ };
    float q[MQ], k[MK], v[MK], R[MQ], out[MQ], lse[B_ * NH_ * T_];
    float dq[MQ] = {0}, dk[MK] = {0}, dv[MK] = {0};
    att_ctx c = {dalloc(MQ), dalloc(MK), dalloc(MK), dalloc(MQ), dalloc(MQ), kSeq, window};
    fill2(q, c.q, MQ, 2), fill2(k, c.k, MK, 2), fill2(v, c.v, MK, 1), fill2(R, c.R, MQ, 1);
    lt_op_attention_fwd(out, lse, q, k, v, kSeq, B_, T_, NH_, NKV_, HD_, window);
    loss_att(&c);
    char name[64];
    snprintf(name, sizeof name, "attention (window %d)", window);
    check_fwd(name, out, c.out, MQ);
    /* token 2 of row 0 starts a new sequence: it sees only itself, so out = v of itself */
    CHECK(fabsf(out[(2 * NH_ + 1) * HD_] - v[(2 * NKV_ + 0) * HD_]) < 1e-6f,
          "attention: packed sequences do not attend across the boundary");
    lt_op_attention_bwd(dq, dk, dv, R, q, k, v, out, lse, kSeq, B_, T_, NH_, NKV_, HD_, window);
    snprintf(name, sizeof name, "attention dq (window %d)", window);
    check_grad(name, loss_att, &c, c.q, MQ, dq);
    snprintf(name, sizeof name, "attention dk (window %d)", window);
    check_grad(name, loss_att, &c, c.k, MK, dk);
    snprintf(name, sizeof name, "attention dv (window %d)", window);
    check_grad(name, loss_att, &c, c.v, MK, dv);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.R);
}

/* ---- swiglu ---------------------------------------------------------------------------------- */
typedef struct {
    double *g, *u, *out, *R;
} sw_ctx;
static double loss_sw(void *p) {
    sw_ctx *c = p;
    for (int i = 0; i < N_ * C_; i++)
        c->out[i] = c->g[i] / (1 + exp(-c->g[i])) * c->u[i];
    return dot_out(c->out, c->R, N_ * C_);
}
static void test_swiglu(void) {
    float g[N_ * C_], u[N_ * C_], R[N_ * C_], out[N_ * C_], dg[N_ * C_] = {0}, du[N_ * C_] = {0};
    sw_ctx c = {dalloc(N_ * C_), dalloc(N_ * C_), dalloc(N_ * C_), dalloc(N_ * C_)};
    fill2(g, c.g, N_ * C_, 4), fill2(u, c.u, N_ * C_, 1), fill2(R, c.R, N_ * C_, 1);
    lt_op_swiglu_fwd(out, g, u, N_ * C_);
    loss_sw(&c);
    check_fwd("swiglu", out, c.out, N_ * C_);
    lt_op_swiglu_bwd(dg, du, R, g, u, N_ * C_);
    check_grad("swiglu dgate", loss_sw, &c, c.g, N_ * C_, dg);
    check_grad("swiglu dup", loss_sw, &c, c.u, N_ * C_, du);
    free(c.g), free(c.u), free(c.out), free(c.R);
}

/* ---- cross-entropy ----------------------------------------------------------------------------
 */
typedef struct {
    double *logits;
    const int32_t *tgt;
} ce_ctx;
static double loss_ce(void *p) { /* mean over counted rows */
    ce_ctx *c = p;
    double sum = 0;
    int cnt = 0;
    for (int n = 0; n < N_; n++) {
        if (c->tgt[n] == -100) continue;
        double mx = -1e300, se = 0;
        for (int i = 0; i < V_; i++)
            mx = fmax(mx, c->logits[n * V_ + i]);
        for (int i = 0; i < V_; i++)
            se += exp(c->logits[n * V_ + i] - mx);
        sum += mx + log(se) - c->logits[n * V_ + c->tgt[n]];
        cnt++;
    }
    return sum / cnt;
}
static void test_cross_entropy(void) {
    const int32_t tgt[N_] = {3, -100, 0, 10, -100, 5, 5, 1, 2, -100};
    float logits[N_ * V_], dl[N_ * V_], inplace[N_ * V_];
    ce_ctx c = {dalloc(N_ * V_), tgt};
    fill2(logits, c.logits, N_ * V_, 5);
    logits[7] = c.logits[7] = 80.0f; /* large logit: needs the max subtraction */
    lt_ce_stats st;
    CHECK_OK(lt_op_cross_entropy(dl, &st, logits, tgt, N_, V_, LT_IGNORE_INDEX, 0.0f));
    double ref = loss_ce(&c);
    CHECK(st.count == 7, "cross-entropy count %lld, wanted 7", (long long)st.count);
    CHECK(fabs(st.mean - ref) <= 1e-5 * fabs(ref), "cross-entropy mean %.9g vs ref %.9g", st.mean,
          ref);
    CHECK(fabs(st.sum - 7 * ref) <= 1e-5 * fabs(7 * ref), "cross-entropy sum %.9g", st.sum);
    check_grad("cross-entropy dlogits", loss_ce, &c, c.logits, N_ * V_, dl);
    /* in place, with an explicit scale (as for normalising over micro-batches) */
    memcpy(inplace, logits, sizeof logits);
    CHECK_OK(lt_op_cross_entropy(inplace, NULL, inplace, tgt, N_, V_, -100, 1.0f / 14.0f));
    double err = 0;
    for (int i = 0; i < N_ * V_; i++)
        err = fmax(err, fabs(inplace[i] - dl[i] * 0.5f));
    CHECK(err < 1e-7, "cross-entropy in place with grad_scale: err %g", err);
    const int32_t bad[2] = {1, 11};
    CHECK_ERR(lt_op_cross_entropy(NULL, &st, logits, bad, 2, V_, -100, 0.0f), LT_ERR_ARG,
              "target 11 at row 1");
    const int32_t none[2] = {-100, -100};
    CHECK_OK(lt_op_cross_entropy(dl, &st, logits, none, 2, V_, -100, 0.0f));
    CHECK(st.count == 0 && isnan(st.mean) && dl[0] == 0.0f, "all-ignored batch: mean NaN, grad 0");
    free(c.logits);
}

/* ---- LoRA / DoRA -------------------------------------------------------------------------------
 */
typedef struct {
    double *x, *W, *bias, *A, *B, *mag, *mask, *out, *R, *n0;
    double scale;
    int dora;
} lora_ctx;
/* Double reference: LoRA y = xW^T + b + s (xd A^T) B^T; DoRA (PEFT) with the row norm n0
 * held constant: y = xW^T + b + (g-1) xd W^T + g s (xd A^T) B^T, g = mag / n0. */
static double loss_lora(void *p) {
    lora_ctx *c = p;
    for (int n = 0; n < N_; n++)
        for (int o = 0; o < OC_; o++) {
            double base = c->bias[o], based = 0, lora = 0;
            for (int i = 0; i < C_; i++) {
                double xd = c->x[n * C_ + i] * (c->mask ? c->mask[n * C_ + i] : 1.0);
                base += c->x[n * C_ + i] * c->W[o * C_ + i];
                based += xd * c->W[o * C_ + i];
                for (int j = 0; j < R_; j++)
                    lora += xd * c->A[j * C_ + i] * c->B[o * R_ + j];
            }
            if (!c->dora) {
                c->out[n * OC_ + o] = base + c->scale * lora;
            } else {
                double g = c->mag[o] / c->n0[o];
                c->out[n * OC_ + o] = base + (g - 1) * based + g * c->scale * lora;
            }
        }
    return dot_out(c->out, c->R, N_ * OC_);
}
static void test_lora(int dora, int with_mask) {
    float x[N_ * C_], W[OC_ * C_], bias[OC_], A[R_ * C_], Bm[OC_ * R_], mag[OC_], mask[N_ * C_];
    float R[N_ * OC_], y[N_ * OC_], xa[N_ * R_], wnorm[OC_];
    float dx[N_ * C_] = {0}, dA[R_ * C_] = {0}, dB[OC_ * R_] = {0}, dmag[OC_] = {0};
    float scratch[LT_LORA_SCRATCH(N_, C_, OC_, R_)];
    lora_ctx c = {.x = dalloc(N_ * C_),
                  .W = dalloc(OC_ * C_),
                  .bias = dalloc(OC_),
                  .A = dalloc(R_ * C_),
                  .B = dalloc(OC_ * R_),
                  .mag = dalloc(OC_),
                  .out = dalloc(N_ * OC_),
                  .R = dalloc(N_ * OC_),
                  .n0 = dalloc(OC_),
                  .dora = dora};
    fill2(x, c.x, N_ * C_, 1), fill2(W, c.W, OC_ * C_, 0.5f), fill2(bias, c.bias, OC_, 1);
    fill2(A, c.A, R_ * C_, 0.5f), fill2(Bm, c.B, OC_ * R_, 0.5f), fill2(R, c.R, N_ * OC_, 1);
    for (int o = 0; o < OC_; o++)
        mag[o] = 0.5f + (frand() + 1.0f), c.mag[o] = mag[o];
    if (with_mask) {
        c.mask = dalloc(N_ * C_);
        for (int i = 0; i < N_ * C_; i++)
            mask[i] = frand() < 0.0f ? 0.0f : 2.0f, c.mask[i] = mask[i];
    }
    float scale = lt_lora_scale(4.0f, R_, 1);
    c.scale = scale;
    for (int o = 0; o < OC_; o++) { /* the detached norm, from the unperturbed A, B */
        double ss = 0;
        for (int i = 0; i < C_; i++) {
            double w = c.W[o * C_ + i];
            for (int j = 0; j < R_; j++)
                w += c.scale * c.B[o * R_ + j] * c.A[j * C_ + i];
            ss += w * w;
        }
        c.n0[o] = sqrt(ss);
    }
    const float *mk = with_mask ? mask : NULL;
    char name[80];
    const char *what = dora ? "dora" : "lora";
    const char *mw = with_mask ? " +dropout" : "";
    if (dora) {
        lt_op_dora_fwd(y, wnorm, xa, x, W, bias, A, Bm, mag, mk, N_, C_, OC_, R_, scale, scratch);
        check_fwd("dora weight norm", wnorm, c.n0, OC_);
    } else {
        lt_op_lora_fwd(y, xa, x, W, bias, A, Bm, mk, N_, C_, OC_, R_, scale, scratch);
    }
    loss_lora(&c);
    snprintf(name, sizeof name, "%s%s", what, mw);
    check_fwd(name, y, c.out, N_ * OC_);
    if (dora)
        lt_op_dora_bwd(dx, dA, dB, dmag, R, x, W, A, Bm, mag, wnorm, xa, mk, N_, C_, OC_, R_, scale,
                       scratch);
    else
        lt_op_lora_bwd(dx, dA, dB, R, x, W, A, Bm, xa, mk, N_, C_, OC_, R_, scale, scratch);
    snprintf(name, sizeof name, "%s%s dx", what, mw);
    check_grad(name, loss_lora, &c, c.x, N_ * C_, dx);
    snprintf(name, sizeof name, "%s%s dA", what, mw);
    check_grad(name, loss_lora, &c, c.A, R_ * C_, dA);
    snprintf(name, sizeof name, "%s%s dB", what, mw);
    check_grad(name, loss_lora, &c, c.B, OC_ * R_, dB);
    if (dora) {
        snprintf(name, sizeof name, "%s%s dmag", what, mw);
        check_grad(name, loss_lora, &c, c.mag, OC_, dmag);
    }
    free(c.x), free(c.W), free(c.bias), free(c.A), free(c.B), free(c.mag), free(c.mask);
    free(c.out), free(c.R), free(c.n0);
}

static void test_lora_init(void) {
    enum { r = 4, C = 64, OC = 16 };
    float A[r * C], B[OC * r], A2[r * C];
    for (int i = 0; i < OC * r; i++)
        B[i] = 1.0f;
    lt_lora_init(A, B, r, C, OC, 7);
    lt_lora_init(A2, B, r, C, OC, 7);
    float bound = lt_lora_init_bound(C);
    CHECK(fabsf(bound - 0.125f) < 1e-7f, "init bound for C=64 is 1/8, got %g", bound);
    int inb = 1, bzero = 1;
    double mean = 0;
    for (int i = 0; i < r * C; i++)
        inb &= A[i] >= -bound && A[i] < bound, mean += A[i];
    for (int i = 0; i < OC * r; i++)
        bzero &= B[i] == 0.0f;
    CHECK(inb && bzero, "lora init: A within the bound, B zero");
    CHECK(fabs(mean / (r * C)) < 0.02, "lora init: A mean %g near 0", mean / (r * C));
    CHECK(memcmp(A, A2, sizeof A) == 0, "lora init is deterministic for a seed");
    lt_lora_init(A2, B, r, C, OC, 8);
    CHECK(memcmp(A, A2, sizeof A) != 0, "lora init differs across seeds");
    CHECK(lt_lora_scale(16, 4, 0) == 4.0f && lt_lora_scale(16, 4, 1) == 8.0f, "lora scale");
}

/* ---- AdamW + clipping, against a double-precision transcription of torch's algorithm ------- */
static void test_adamw(void) {
    enum { n = 37 };
    float p[n], g[n], m[n] = {0}, v[n] = {0};
    double pd[n], md[n] = {0}, vd[n] = {0};
    fill2(p, pd, n, 1);
    lt_adamw_cfg cfg = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f};
    for (int step = 1; step <= 3; step++) {
        double gd[n];
        fill2(g, gd, n, 3);
        const float *bufs[2] = {g, g + 20};
        int64_t ns[2] = {20, n - 20};
        double norm = lt_op_global_norm(bufs, ns, 2), nref = 0;
        for (int i = 0; i < n; i++)
            nref += gd[i] * gd[i];
        nref = sqrt(nref);
        CHECK(fabs(norm - nref) <= 1e-12 * nref, "global norm %.17g vs %.17g", norm, nref);
        float coef = lt_op_clip_coef(norm, 1.0f);
        CHECK(fabs(coef - 1.0 / (nref + 1e-6)) <= 1e-7, "clip coef %g", coef);
        CHECK(lt_op_clip_coef(0.5, 1.0f) == 1.0f, "clip coef capped at 1");
        lt_op_scale(g, n, coef);
        lt_op_adamw_step(p, g, m, v, n, &cfg, step);
        double lr = cfg.lr, b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps, wd = cfg.weight_decay;
        for (int i = 0; i < n; i++) {
            double gi = gd[i] * (1.0 / (nref + 1e-6));
            pd[i] *= 1 - lr * wd;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, step)), vh = vd[i] / (1 - pow(b2, step));
            pd[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    double err = 0;
    for (int i = 0; i < n; i++)
        err = fmax(err, fabs(p[i] - pd[i]));
    CHECK(err < 1e-6, "adamw 3 steps vs double reference: max err %g", err);
}

int main(void) {
    test_matmul();
    test_embedding();
    test_rmsnorm();
    test_rope(0);
    test_rope(1);
    test_attention(0);
    test_attention(2);
    test_swiglu();
    test_cross_entropy();
    test_lora(0, 0);
    test_lora(0, 1);
    test_lora(1, 0);
    test_lora(1, 1);
    test_lora_init();
    test_adamw();
    LT_TEST_END();
}
