/* test_ops_fast.c - every fast op of src/train/ops_fast.c against its reference twin in ops.h.
 *
 * The reference ops are themselves checked against PyTorch (test_ops_torch) and finite
 * differences (test_ops_fd); here the fast path must agree with them on the same inputs:
 *   attention fwd/bwd : max |fast - ref| <= 2e-5 * max |ref| per tensor (out, lse, dq, dk, dv)
 *                       (float sums in a different order, float instead of double exp sums)
 *   cross-entropy     : loss sum rel 1e-6, dlogits <= 1e-5 * max |ref|
 *   SwiGLU            : <= 1e-6 * max |ref| (vectorised exp, <= 2 ulp)
 *   RMSNorm           : identical (same arithmetic, rows in parallel)
 *   exp               : rel 3e-7 against expf on [-87, 88], 0 below -87.3
 *   linear, LoRA, DoRA: <= 2e-5 * max |ref| per output / gradient (the fast twins run OpenBLAS,
 *                       split over OpenMP threads for the big shape; the reference a plain-loop
 *                       GEMM with double sums); tiny and odd shapes, bias, dropout masks,
 *                       gradients accumulated onto non-zero values
 * Attention shapes cover T not a multiple of the blocks (32 queries, 64 keys), head dims 8,
 * 40 (a 32-wide tile plus a remainder) and 64, GQA, packed sequences and a sliding window.
 * Everything runs at every dispatch level this CPU has (lt_cpu_set_max_level: baseline, avx2,
 * avx512), so a CI machine with AVX-512 checks each variant; messages name the level. */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "loratune/ops.h"
#include "lt_test.h"
#include "backend/ops_fast.h"

static uint64_t rng_state = 0x9876543ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / 16777216.0 * 2.0 - 1.0);
}
static float *frnd(int64_t n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}
static float *fzero(int64_t n) {
    return calloc((size_t)n, sizeof(float));
}

static const char *level_name(void) { return lt_cpu_level_name(lt_cpu_level_active()); }

/* max |a - b| / max |b| (0 when both are 0) */
static double relerr(const float *a, const float *b, int64_t n, int64_t *at) {
    double mx = 0, err = 0;
    *at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= err)) err = e, *at = i; /* NaN counts as the worst */
    }
    return mx > 0 ? err / mx : err;
}

#define CMP(what, a, b, n, tol)                                                                    \
    do {                                                                                           \
        int64_t at_;                                                                               \
        double e_ = relerr(a, b, n, &at_);                                                         \
        CHECK(e_ <= (tol), "[%s] %s: rel err %.3g at %lld (fast %.9g, ref %.9g)", level_name(),   \
              what, e_, (long long)at_, (a)[at_], (b)[at_]);                                       \
    } while (0)

static void attention_case(const char *name, int B, int T, int NH, int NKV, int HD, int packed,
                           int window) {
    int64_t N = (int64_t)B * T, nq = N * NH * HD, nk = N * NKV * HD, nl = (int64_t)B * NH * T;
    float *q = frnd(nq, 2.0f), *k = frnd(nk, 2.0f), *v = frnd(nk, 1.0f), *dout = frnd(nq, 1.0f);
    int32_t *seq = NULL;
    if (packed) { /* row b: sequences of lengths 37, 20, rest */
        seq = malloc(sizeof(int32_t) * (size_t)N);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                seq[(int64_t)b * T + t] = t < 37 ? 0 : t < 57 ? 1 : 2;
    }
    float *o_ref = fzero(nq), *o_fast = fzero(nq), *l_ref = fzero(nl), *l_fast = fzero(nl);
    lt_op_attention_fwd(o_ref, l_ref, q, k, v, seq, B, T, NH, NKV, HD, window);
    lt_fast_attention_fwd(o_fast, l_fast, q, k, v, seq, B, T, NH, NKV, HD, window);
    char what[128];
    snprintf(what, sizeof what, "%s out", name);
    CMP(what, o_fast, o_ref, nq, 2e-5);
    snprintf(what, sizeof what, "%s lse", name);
    CMP(what, l_fast, l_ref, nl, 2e-5);
    /* backward adds: start from the same non-zero gradients */
    float *dq0 = frnd(nq, 0.1f), *dk0 = frnd(nk, 0.1f), *dv0 = frnd(nk, 0.1f);
    float *dq_r = malloc(sizeof(float) * nq), *dk_r = malloc(sizeof(float) * nk),
          *dv_r = malloc(sizeof(float) * nk), *dq_f = malloc(sizeof(float) * nq),
          *dk_f = malloc(sizeof(float) * nk), *dv_f = malloc(sizeof(float) * nk);
    memcpy(dq_r, dq0, sizeof(float) * nq), memcpy(dq_f, dq0, sizeof(float) * nq);
    memcpy(dk_r, dk0, sizeof(float) * nk), memcpy(dk_f, dk0, sizeof(float) * nk);
    memcpy(dv_r, dv0, sizeof(float) * nk), memcpy(dv_f, dv0, sizeof(float) * nk);
    lt_op_attention_bwd(dq_r, dk_r, dv_r, dout, q, k, v, o_ref, l_ref, seq, B, T, NH, NKV, HD,
                        window);
    lt_fast_attention_bwd(dq_f, dk_f, dv_f, dout, q, k, v, o_ref, l_ref, seq, B, T, NH, NKV, HD,
                          window);
    snprintf(what, sizeof what, "%s dq", name);
    CMP(what, dq_f, dq_r, nq, 2e-5);
    snprintf(what, sizeof what, "%s dk", name);
    CMP(what, dk_f, dk_r, nk, 2e-5);
    snprintf(what, sizeof what, "%s dv", name);
    CMP(what, dv_f, dv_r, nk, 2e-5);
    free(q), free(k), free(v), free(dout), free(seq), free(o_ref), free(o_fast), free(l_ref);
    free(l_fast), free(dq0), free(dk0), free(dv0), free(dq_r), free(dk_r), free(dv_r);
    free(dq_f), free(dk_f), free(dv_f);
}

/* Rows of different lengths end to end (the trainer's padding-free layout): the _var ops
 * against the reference op run on each row alone (B = 1, T = its length). */
static void attention_var_case(const char *name, int HD, int packed, int window) {
    enum { NB = 5 };
    const int len[NB] = {50, 0, 129, 7, 64}, NH = 6, NKV = 2;
    int32_t off[NB + 1] = {0};
    for (int b = 0; b < NB; b++)
        off[b + 1] = off[b] + len[b];
    const int64_t N = off[NB], qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    float *q = frnd(N * qs, 2.0f), *k = frnd(N * ks, 2.0f), *v = frnd(N * ks, 1.0f);
    float *dout = frnd(N * qs, 1.0f);
    int32_t *seq = NULL;
    if (packed) { /* sequences of 23 positions, ids from 3 up per row */
        seq = malloc(sizeof(int32_t) * (size_t)N);
        for (int b = 0; b < NB; b++)
            for (int t = 0; t < len[b]; t++)
                seq[off[b] + t] = 3 + t / 23;
    }
    float *o_ref = fzero(N * qs), *o_var = fzero(N * qs), *l_ref = fzero(N * NH),
          *l_var = fzero(N * NH);
    float *dq_r = fzero(N * qs), *dk_r = fzero(N * ks), *dv_r = fzero(N * ks);
    float *dq_v = fzero(N * qs), *dk_v = fzero(N * ks), *dv_v = fzero(N * ks);
    for (int b = 0; b < NB; b++) {
        const int64_t r = off[b];
        if (!len[b]) continue;
        lt_op_attention_fwd(o_ref + r * qs, l_ref + r * NH, q + r * qs, k + r * ks, v + r * ks,
                            seq ? seq + r : NULL, 1, len[b], NH, NKV, HD, window);
        lt_op_attention_bwd(dq_r + r * qs, dk_r + r * ks, dv_r + r * ks, dout + r * qs, q + r * qs,
                            k + r * ks, v + r * ks, o_ref + r * qs, l_ref + r * NH,
                            seq ? seq + r : NULL, 1, len[b], NH, NKV, HD, window);
    }
    lt_fast_attention_fwd_var(o_var, l_var, q, k, v, seq, off, NB, 0, NH, NKV, HD, window);
    lt_fast_attention_bwd_var(dq_v, dk_v, dv_v, dout, q, k, v, o_ref, l_ref, seq, off, NB, 0, NH,
                              NKV, HD, window);
    char what[128];
    snprintf(what, sizeof what, "%s out", name);
    CMP(what, o_var, o_ref, N * qs, 2e-5);
    snprintf(what, sizeof what, "%s lse", name);
    CMP(what, l_var, l_ref, N * NH, 2e-5);
    snprintf(what, sizeof what, "%s dq", name);
    CMP(what, dq_v, dq_r, N * qs, 2e-5);
    snprintf(what, sizeof what, "%s dk", name);
    CMP(what, dk_v, dk_r, N * ks, 2e-5);
    snprintf(what, sizeof what, "%s dv", name);
    CMP(what, dv_v, dv_r, N * ks, 2e-5);
    free(q), free(k), free(v), free(dout), free(seq), free(o_ref), free(o_var), free(l_ref);
    free(l_var), free(dq_r), free(dk_r), free(dv_r), free(dq_v), free(dk_v), free(dv_v);
}

static void cross_entropy_case(void) {
    const int N = 7, V = 1003;
    float *x = frnd((int64_t)N * V, 4.0f);
    x[2 * V + 5] = 80.0f; /* needs the max subtraction */
    int32_t tg[7] = {3, -100, 5, 1002, 0, -100, 17};
    float *d_ref = fzero((int64_t)N * V), *d_fast = frnd((int64_t)N * V, 1.0f);
    lt_ce_stats s_ref, s_fast;
    CHECK_OK(lt_op_cross_entropy(d_ref, &s_ref, x, tg, N, V, -100, 0.0f));
    CHECK_OK(lt_fast_cross_entropy(d_fast, &s_fast, x, tg, N, V, -100, 0.0f));
    CHECK(s_fast.count == s_ref.count, "[%s] count %lld vs %lld", level_name(),
          (long long)s_fast.count, (long long)s_ref.count);
    CHECK(fabs(s_fast.sum - s_ref.sum) <= 1e-6 * fabs(s_ref.sum), "[%s] loss sum %.9g vs %.9g",
          level_name(), s_fast.sum, s_ref.sum);
    CMP("cross-entropy dlogits", d_fast, d_ref, (int64_t)N * V, 1e-5);
    /* in place, explicit grad_scale */
    float *x2 = malloc(sizeof(float) * N * V);
    memcpy(x2, x, sizeof(float) * N * V);
    CHECK_OK(lt_op_cross_entropy(d_ref, &s_ref, x, tg, N, V, -100, 0.25f));
    CHECK_OK(lt_fast_cross_entropy(x2, &s_fast, x2, tg, N, V, -100, 0.25f));
    CMP("cross-entropy dlogits in place", x2, d_ref, (int64_t)N * V, 1e-5);
    int32_t bad[7] = {3, -100, 5, 1003, 0, -100, 17};
    CHECK_ERR(lt_fast_cross_entropy(NULL, &s_fast, x, bad, N, V, -100, 0.0f), LT_ERR_ARG, "row 3");
    free(x), free(x2), free(d_ref), free(d_fast);
}

static void elementwise_cases(void) {
    const int64_t n = 100003; /* not a multiple of 8, above the OpenMP threshold */
    float *g = frnd(n, 12.0f), *u = frnd(n, 1.0f), *go = frnd(n, 1.0f);
    float *o_ref = fzero(n), *o_fast = fzero(n);
    lt_op_swiglu_fwd(o_ref, g, u, n);
    lt_fast_swiglu_fwd(o_fast, g, u, n);
    CMP("swiglu fwd", o_fast, o_ref, n, 1e-6);
    float *dg_r = fzero(n), *du_r = fzero(n), *dg_f = frnd(n, 1.0f), *du_f = frnd(n, 1.0f);
    lt_op_swiglu_bwd(dg_r, du_r, go, g, u, n);
    lt_fast_swiglu_bwd_write(dg_f, du_f, go, g, u, n); /* writes: the junk is overwritten */
    CMP("swiglu dgate", dg_f, dg_r, n, 1e-6);
    CMP("swiglu dup", du_f, du_r, n, 1e-6);

    const int N = 300, C = 72;
    float *x = frnd((int64_t)N * C, 3.0f), *w = frnd(C, 1.0f), *dy = frnd((int64_t)N * C, 1.0f);
    float *y_r = fzero((int64_t)N * C), *y_f = fzero((int64_t)N * C), *r_r = fzero(N),
          *r_f = fzero(N);
    lt_op_rmsnorm_fwd(y_r, r_r, x, w, N, C, 1e-5f);
    lt_fast_rmsnorm_fwd(y_f, r_f, x, w, N, C, 1e-5f);
    CHECK(!memcmp(y_r, y_f, sizeof(float) * N * C) && !memcmp(r_r, r_f, sizeof(float) * N),
          "[%s] rmsnorm forward differs from the reference", level_name());
    float *dx_r = frnd((int64_t)N * C, 1.0f), *dx_f = malloc(sizeof(float) * N * C);
    memcpy(dx_f, dx_r, sizeof(float) * N * C);
    float *dw_r = frnd(C, 1.0f), *dw_f = malloc(sizeof(float) * C);
    memcpy(dw_f, dw_r, sizeof(float) * C);
    lt_op_rmsnorm_bwd(dx_r, dw_r, dy, x, w, r_r, N, C);
    lt_fast_rmsnorm_bwd(dx_f, dw_f, dy, x, w, r_r, N, C);
    CHECK(!memcmp(dx_r, dx_f, sizeof(float) * N * C) && !memcmp(dw_r, dw_f, sizeof(float) * C),
          "[%s] rmsnorm backward differs from the reference", level_name());

    /* rope: rows in parallel, identical to the reference (both directions, both layouts) */
    {
        const int Nr = 300, NHr = 4, HDr = 64, np_ = 50;
        int64_t nr = (int64_t)Nr * NHr * HDr;
        float *cs = fzero((int64_t)np_ * HDr / 2), *sn = fzero((int64_t)np_ * HDr / 2);
        float inv[32];
        for (int i = 0; i < HDr / 2; i++)
            inv[i] = powf(10000.0f, -2.0f * i / HDr);
        lt_rope_tables(cs, sn, inv, np_, HDr);
        int32_t *ps = malloc(sizeof(int32_t) * Nr);
        for (int i = 0; i < Nr; i++)
            ps[i] = (i * 7) % np_;
        float *xr = frnd(nr, 1.0f), *y_ref = fzero(nr), *y_fst = fzero(nr);
        for (int il = 0; il < 2; il++) {
            lt_op_rope_fwd(y_ref, xr, ps, cs, sn, Nr, NHr, HDr, il);
            lt_fast_rope_fwd(y_fst, xr, ps, cs, sn, Nr, NHr, HDr, il);
            CHECK(!memcmp(y_ref, y_fst, sizeof(float) * nr), "[%s] rope fwd (interleaved %d) differs",
                  level_name(), il);
            lt_op_rope_bwd(y_ref, xr, ps, cs, sn, Nr, NHr, HDr, il);
            lt_fast_rope_bwd(y_fst, xr, ps, cs, sn, Nr, NHr, HDr, il);
            CHECK(!memcmp(y_ref, y_fst, sizeof(float) * nr), "[%s] rope bwd (interleaved %d) differs",
                  level_name(), il);
        }
        free(cs), free(sn), free(ps), free(xr), free(y_ref), free(y_fst);
    }

    /* exp over its range and beyond */
    const int ne = 20001;
    float *ex = fzero(ne), *ey = fzero(ne);
    for (int i = 0; i < ne; i++)
        ex[i] = -100.0f + 188.0f * (float)i / (float)(ne - 1);
    ex[0] = -INFINITY;
    lt_fast_expf_array(ey, ex, ne);
    double worst = 0;
    int bad = -1;
    for (int i = 0; i < ne; i++) {
        double ref = ex[i] < -87.3f ? 0.0 : exp((double)ex[i]);
        double e = ref > 0 ? fabs(ey[i] - ref) / ref : fabs((double)ey[i]);
        if (!(e <= worst)) worst = e, bad = i;
    }
    CHECK(worst <= 3e-7, "[%s] exp: rel err %.3g at x = %.9g", level_name(), worst,
          bad >= 0 ? ex[bad] : 0.0f);
    free(g), free(u), free(go), free(o_ref), free(o_fast), free(dg_r), free(du_r), free(dg_f);
    free(du_f), free(x), free(w), free(dy), free(y_r), free(y_f), free(r_r), free(r_f);
    free(dx_r), free(dx_f), free(dw_r), free(dw_f), free(ex), free(ey);
}

/* lt_fast_{matmul,lora,dora}_{fwd,bwd} against lt_op_*: same composition (ops_linear.inc), a
 * different GEMM. Backward outputs start from the same non-zero values (they add). */
static void linear_case(int N, int C, int OC, int r, int with_bias, int with_mask) {
    char what[96];
    snprintf(what, sizeof what, "linear N%d C%d OC%d r%d%s%s", N, C, OC, r,
             with_bias ? " bias" : "", with_mask ? " mask" : "");
    int64_t nx = (int64_t)N * C, ny = (int64_t)N * OC, nw = (int64_t)OC * C;
    int64_t na = (int64_t)r * C, nb = (int64_t)OC * r, nxa = (int64_t)N * r;
    int64_t nscr = (int64_t)N * (C + OC + r);
    float *x = frnd(nx, 1.0f), *W = frnd(nw, 0.5f), *bias = with_bias ? frnd(OC, 0.5f) : NULL;
    float *A = frnd(na, 0.5f), *Bm = frnd(nb, 0.5f), *dy = frnd(ny, 1.0f);
    float *mag = frnd(OC, 1.0f), *mask = NULL;
    for (int o = 0; o < OC; o++)
        mag[o] = 1.0f + 0.5f * fabsf(mag[o]);
    if (with_mask) {
        mask = malloc(sizeof(float) * (size_t)nx);
        for (int64_t i = 0; i < nx; i++)
            mask[i] = frand() > -0.6f ? 1.25f : 0.0f; /* keep 80%, scaled */
    }
    float *dx0 = frnd(nx, 0.1f), *dw0 = frnd(nw, 0.1f), *db0 = frnd(OC, 0.1f);
    float *dA0 = frnd(na, 0.1f), *dB0 = frnd(nb, 0.1f), *dm0 = frnd(OC, 0.1f);
    float *o[2][9], *scr = fzero(nscr);
    for (int k = 0; k < 2; k++) {
        o[k][0] = fzero(ny);  /* y */
        o[k][1] = fzero(nxa); /* xa */
        o[k][2] = malloc(sizeof(float) * (size_t)nx), memcpy(o[k][2], dx0, sizeof(float) * (size_t)nx);
        o[k][3] = malloc(sizeof(float) * (size_t)nw), memcpy(o[k][3], dw0, sizeof(float) * (size_t)nw);
        o[k][4] = malloc(sizeof(float) * (size_t)OC), memcpy(o[k][4], db0, sizeof(float) * (size_t)OC);
        o[k][5] = malloc(sizeof(float) * (size_t)na), memcpy(o[k][5], dA0, sizeof(float) * (size_t)na);
        o[k][6] = malloc(sizeof(float) * (size_t)nb), memcpy(o[k][6], dB0, sizeof(float) * (size_t)nb);
        o[k][7] = malloc(sizeof(float) * (size_t)OC), memcpy(o[k][7], dm0, sizeof(float) * (size_t)OC);
        o[k][8] = fzero(OC); /* wnorm */
    }
    const float tol = 2e-5f;
    char msg[160];
#define LCMP(label, i, n)                                                                          \
    do {                                                                                           \
        snprintf(msg, sizeof msg, "%s: %s", what, label);                                          \
        CMP(msg, o[1][i], o[0][i], n, tol);                                                        \
    } while (0)
    /* [0] = reference, [1] = fast */
    lt_op_matmul_fwd(o[0][0], x, W, bias, N, C, OC);
    lt_fast_matmul_fwd(o[1][0], x, W, bias, N, C, OC);
    LCMP("matmul fwd", 0, ny);
    lt_op_matmul_bwd(o[0][2], o[0][3], o[0][4], dy, x, W, N, C, OC);
    lt_fast_matmul_bwd(o[1][2], o[1][3], o[1][4], dy, x, W, N, C, OC);
    LCMP("matmul dx", 2, nx);
    LCMP("matmul dw", 3, nw);
    LCMP("matmul dbias", 4, OC);

    lt_op_lora_fwd(o[0][0], o[0][1], x, W, bias, A, Bm, mask, N, C, OC, r, 0.75f, scr);
    lt_fast_lora_fwd(o[1][0], o[1][1], x, W, bias, A, Bm, mask, N, C, OC, r, 0.75f, scr);
    LCMP("lora y", 0, ny);
    LCMP("lora xa", 1, nxa);
    lt_op_lora_bwd(o[0][2], o[0][5], o[0][6], dy, x, W, A, Bm, o[0][1], mask, N, C, OC, r, 0.75f, scr);
    lt_fast_lora_bwd(o[1][2], o[1][5], o[1][6], dy, x, W, A, Bm, o[0][1], mask, N, C, OC, r, 0.75f,
                     scr);
    LCMP("lora dx", 2, nx);
    LCMP("lora dA", 5, na);
    LCMP("lora dB", 6, nb);

    lt_op_dora_fwd(o[0][0], o[0][8], o[0][1], x, W, bias, A, Bm, mag, mask, N, C, OC, r, 0.75f, scr);
    lt_fast_dora_fwd(o[1][0], o[1][8], o[1][1], x, W, bias, A, Bm, mag, mask, N, C, OC, r, 0.75f,
                     scr);
    LCMP("dora y", 0, ny);
    LCMP("dora wnorm", 8, OC);
    LCMP("dora xa", 1, nxa);
    lt_op_dora_bwd(o[0][2], o[0][5], o[0][6], o[0][7], dy, x, W, A, Bm, mag, o[0][8], o[0][1], mask,
                   N, C, OC, r, 0.75f, scr);
    lt_fast_dora_bwd(o[1][2], o[1][5], o[1][6], o[1][7], dy, x, W, A, Bm, mag, o[0][8], o[0][1],
                     mask, N, C, OC, r, 0.75f, scr);
    LCMP("dora dx", 2, nx);
    LCMP("dora dA", 5, na);
    LCMP("dora dB", 6, nb);
    LCMP("dora dmag", 7, OC);
#undef LCMP
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 9; i++)
            free(o[k][i]);
    free(x), free(W), free(bias), free(A), free(Bm), free(dy), free(mag), free(mask), free(scr);
    free(dx0), free(dw0), free(db0), free(dA0), free(dB0), free(dm0);
}

static void linear_cases(void) {
    linear_case(1, 1, 1, 1, 0, 0);
    linear_case(7, 13, 5, 3, 1, 0);
    linear_case(33, 65, 17, 8, 1, 1);
    linear_case(5, 40, 96, 2, 0, 1);
    /* big enough for lt_gemm's OpenMP split (OpenBLAS single-threaded, as inside a step) */
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    int blas = lt_blas_threads_single();
    linear_case(300, 576, 192, 16, 1, 1);
    linear_case(257, 192, 576, 8, 0, 0);
    lt_blas_threads_restore(blas);
}

/* the CPU backend's fp32 -> bf16 rounding (16 at a time at the avx512 level) against the
 * scalar lt_f32_to_bf16, bit for bit: random values over the whole exponent range, ties,
 * subnormals, zeros, infinities, NaNs with payloads, tails of every length, and a length over
 * the OpenMP block (64 Ki values) */
void lt_host_to_bf16_(uint16_t *dst, const float *src, int64_t n); /* src/backend/gemm_bf16.c */
static void to_bf16_case(void) {
    const int64_t n = 3 * 65536 + 37;
    uint32_t *u = malloc(sizeof(uint32_t) * (size_t)n);
    uint16_t *got = malloc(2 * (size_t)n);
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
        0x7f800001u, 0x7fbfffffu, 0x00000001u, 0x807fffffu, 0x007f8000u, 0x00018000u,
        0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xff7f8000u, 0x7f7f7fffu};
    const int ns = (int)(sizeof special / sizeof special[0]);
    for (int64_t i = 0; i < n; i++) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        u[i] = i < ns ? special[i] : (uint32_t)(rng_state >> 32);
        if (i % 5 == 1) u[i] = (u[i] & 0xffff0000u) | 0x8000u; /* a tie */
    }
    for (int64_t len = 0; len <= n; len = len < 40 ? len + 1 : len * 4 + 1) {
        memset(got, 0xa5, 2 * (size_t)n);
        lt_host_to_bf16_(got, (const float *)u, len);
        int64_t bad = -1;
        for (int64_t i = 0; i < len && bad < 0; i++) {
            float f;
            memcpy(&f, &u[i], 4);
            if (got[i] != lt_f32_to_bf16(f)) bad = i;
        }
        CHECK(bad < 0, "[%s] to_bf16 of %lld values: 0x%08x -> 0x%04x, expected 0x%04x",
              level_name(), (long long)len, bad < 0 ? 0 : u[bad], bad < 0 ? 0 : got[bad],
              bad < 0 ? 0 : lt_f32_to_bf16(((const float *)u)[bad]));
        CHECK(len == n || got[len] == 0xa5a5, "[%s] to_bf16 of %lld values wrote past the end",
              level_name(), (long long)len);
        if (len == n) break;
        if (len * 4 + 1 > n && len >= 40) len = (n - 1) / 4; /* the last length is n */
    }
    free(u);
    free(got);
}

static void run_all(void) {
    to_bf16_case();
    attention_case("hd64 gqa", 2, 133, 4, 2, 64, 0, 0);
    attention_case("hd64 packed", 2, 100, 4, 2, 64, 1, 0);
    attention_case("hd40 window", 1, 150, 3, 1, 40, 0, 45);
    attention_case("hd8 packed window", 2, 70, 2, 2, 8, 1, 5);
    attention_case("hd64 T1", 1, 1, 2, 1, 64, 0, 0);
    attention_case("hd12 fallback", 1, 9, 2, 1, 12, 0, 0);
    attention_var_case("var hd64", 64, 0, 0);
    attention_var_case("var hd64 packed", 64, 1, 0);
    attention_var_case("var hd32 packed window", 32, 1, 17);
    attention_var_case("var hd12 fallback", 12, 1, 0);
    cross_entropy_case();
    elementwise_cases();
}

int main(void) {
    /* every cap, those above the CPU's level too (which must change nothing: run on an AVX2
     * machine, the avx512 cap runs the avx2 kernels again, as the uncapped program does) */
    const int top = (int)lt_cpu_level_detected();
    for (int cap = LT_CPU_LEVEL_BASELINE; cap < LT_CPU_LEVEL_COUNT; cap++) {
        CHECK_OK(lt_cpu_set_max_level((lt_cpu_level)cap));
        const int l = cap < top ? cap : top;
        const lt_cpu_level want = l < LT_CPU_LEVEL_AVX2 ? (lt_cpu_level)l : LT_CPU_LEVEL_AVX2;
        CHECK(lt_cpu_level_active() == (lt_cpu_level)l && lt_ops_fast_kernel_level() == want,
              "cap %s: active %s, fast ops %s", lt_cpu_level_name((lt_cpu_level)cap),
              level_name(), lt_cpu_level_name(lt_ops_fast_kernel_level()));
        /* the fast attention path exactly at avx2 and above, for head dims 8 and 64 only */
        const int fast = l >= LT_CPU_LEVEL_AVX2;
        CHECK(lt_fast_attention_supported(64) == fast && lt_fast_attention_supported(8) == fast &&
                  !lt_fast_attention_supported(12),
              "[%s] fast attention path for head dims 8, 64, 12: %d %d %d", level_name(),
              lt_fast_attention_supported(8), lt_fast_attention_supported(64),
              lt_fast_attention_supported(12));
        printf("cap %s, level %s: fast ops %s\n", lt_cpu_level_name((lt_cpu_level)cap),
               level_name(), lt_cpu_level_name(lt_ops_fast_kernel_level()));
        run_all();
    }
    linear_cases(); /* OpenBLAS vs the plain-loop GEMM: no kernel of ours to dispatch */
    LT_TEST_END();
}
