/* test_backend_ops.c - every op of every compiled backend against the reference backend, in
 * the manner of llama.cpp's test-backend-ops: a table of {op, shape, dtype, tolerance}, forward
 * and backward.
 *
 * The oracle is lt_backend_ref() (ops.h's plain loops) run with the CPU dispatch capped at the
 * baseline, so its conversions (F16 / BF16 / GGUF blocks / NF4) are the scalar twins too: it
 * shares no BLAS, no OpenMP split and no SIMD kernel with what it checks. Each backend under
 * test runs at every dispatch level this CPU has (baseline, avx2, avx512). Inputs are made on
 * the host, put into the backend's memory with set, results read back with get (the same code
 * would check a device backend). Backward ops get gradient buffers pre-filled with random
 * values, so "adds into" (and, for swiglu_bwd, "writes") is checked too.
 *
 * Error: max |x - ref| / max(max |ref|, 1e-30) per output, against the row's tolerance; ops
 * marked exact must match bit for bit. The test checks itself: a backend with one op planted
 * wrong must fail its rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/backend.h"
#include "loratune/hwinfo.h"
#include "loratune/nf4.h"
#include "loratune/quant.h"
#include "lt_test.h"

/* ---- random inputs ------------------------------------------------------------------------ */
static uint64_t rng = 0x1234567ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *hrand(int64_t n, float scale) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * frand();
    return x;
}

/* ---- backend memory for one case ------------------------------------------------------------ */
typedef struct {
    const lt_backend *be;
    void *p[64];
    int n;
} arena;
static void *a_alloc(arena *a, size_t bytes) {
    void *p = a->be->op->alloc(a->be, bytes ? bytes : 4);
    if (!p || a->n == 64) {
        fprintf(stderr, "arena: out of memory / slots\n");
        exit(2);
    }
    a->p[a->n++] = p;
    return p;
}
static float *a_up(arena *a, const float *host, int64_t n) { /* a copy of host in the backend */
    float *d = a_alloc(a, sizeof(float) * (size_t)n);
    a->be->op->set(a->be, d, host, sizeof(float) * (size_t)n);
    return d;
}
static void *a_upb(arena *a, const void *host, size_t bytes) {
    void *d = a_alloc(a, bytes);
    a->be->op->set(a->be, d, host, bytes);
    return d;
}
static float *a_down(arena *a, const float *dev, int64_t n) { /* malloc'd host copy */
    a->be->op->sync(a->be);
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    a->be->op->get(a->be, h, dev, sizeof(float) * (size_t)n);
    return h;
}
static void a_free(arena *a) {
    for (int i = 0; i < a->n; i++)
        a->be->op->free(a->be, a->p[i]);
    a->n = 0;
}

/* ---- comparison --------------------------------------------------------------------------- */
static double rel_err(const float *x, const float *ref, int64_t n) {
    double md = 0, mr = 1e-30;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref[i]);
        nan |= d != d && !(x[i] != x[i] && ref[i] != ref[i]); /* NaN on one side only */
        if (d > md) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return nan ? NAN : md / mr;
}

/* One case: the op's outputs under the backend and under the reference. */
typedef struct {
    const char *name; /* output name */
    float *got, *want;
    int64_t n;
} out_pair;
typedef struct {
    out_pair o[8];
    int n;
    lt_status st_got, st_want;
    double extra_got, extra_want; /* scalar results (sumsq, CE sums, all_finite) */
} result;
static void result_free(result *r) {
    for (int i = 0; i < r->n; i++) {
        free(r->o[i].got);
        free(r->o[i].want);
    }
}

/* ---- the table ------------------------------------------------------------------------------- */
typedef struct {
    lt_op op;
    int d[8];     /* the op's shape arguments (see each runner) */
    lt_dtype dt;  /* weights' storage (matmul_w / weight_f32); F32 elsewhere */
    int variant;  /* runner-specific: transposes, masks, bias, seq ids, ... */
    double tol;   /* relative (see rel_err); 0 = bit-exact */
} tcase;

/* Runs case c on backend be, writing each output's host copy into got (want = NULL) or want. */
typedef void (*runner)(const lt_backend *be, const tcase *c, result *r, int is_ref);

/* Each runner makes its inputs from a seed fixed per case, so both backends see the same. */
#define SEED(c) (0x9E3779B97F4A7C15ull * (uint64_t)((c)->op * 131 + (c)->variant * 7 + (c)->d[0] + 1000 * (c)->d[1] + 17 * (c)->d[2]))

static void put(result *r, int is_ref, int k, const char *name, float *h, int64_t n) {
    if (!is_ref) {
        r->o[k] = (out_pair){name, h, NULL, n};
        if (k >= r->n) r->n = k + 1;
    } else {
        r->o[k].want = h;
    }
}

/* gemm: d = {M, N, K}, variant bits: 1 = A transposed, 2 = B transposed, 4 = padded lda/ldb/ldc,
 * 8 = beta 0.5 (adds into C) */
static void run_gemm(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int M = c->d[0], N = c->d[1], K = c->d[2], ta = c->variant & 1, tb = (c->variant >> 1) & 1;
    const int pad = c->variant & 4 ? 3 : 0;
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int64_t na = (int64_t)(ta ? K : M) * lda, nb = (int64_t)(tb ? N : K) * ldb,
                  nc = (int64_t)M * ldc;
    float *A = hrand(na, 1), *B = hrand(nb, 1), *C = hrand(nc, 1);
    arena a = {.be = be};
    float *dA = a_up(&a, A, na), *dB = a_up(&a, B, nb), *dC = a_up(&a, C, nc);
    be->op->gemm(be, ta, tb, M, N, K, 0.75f, dA, lda, dB, ldb, c->variant & 8 ? 0.5f : 0.0f, dC,
                 ldc);
    put(r, is_ref, 0, "C", a_down(&a, dC, nc), nc);
    a_free(&a);
    free(A), free(B), free(C);
}

/* gemm_bf16: d = {M, N, K}, variants as gemm. The operands are rounded by the backend's own
 * to_bf16 (output "A16": one bf16 step is 2^-8 relative, far over the tolerance), from fp32
 * values that include ties, NaN and a denormal in A (C holds NaN where it reaches, on both
 * sides). Infinities are left out: the tolerance measure cannot compare them. */
static float *bf16_as_f32(const uint16_t *h, int64_t n) {
    float *f = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&f[i], &u, sizeof u);
    }
    return f;
}
static void run_gemm_bf16(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int M = c->d[0], N = c->d[1], K = c->d[2], ta = c->variant & 1, tb = (c->variant >> 1) & 1;
    const int pad = c->variant & 4 ? 3 : 0;
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int64_t na = (int64_t)(ta ? K : M) * lda, nb = (int64_t)(tb ? N : K) * ldb,
                  nc = (int64_t)M * ldc;
    float *A = hrand(na, 1), *B = hrand(nb, 1), *C = hrand(nc, 1);
    if (c->variant & 16 && na >= 6) { /* ties to even (down, up), just under a tie, NaN, a
                                         * denormal, a negative tie */
        uint32_t bits[6] = {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x7fc00001u, 0x00012345u,
                            0xbf818000u};
        for (int i = 0; i < 6; i++)
            memcpy(&A[i], &bits[i], sizeof(float));
    }
    arena a = {.be = be};
    float *fA = a_up(&a, A, na), *fB = a_up(&a, B, nb), *dC = a_up(&a, C, nc);
    uint16_t *hA = a_alloc(&a, sizeof(uint16_t) * (size_t)na),
             *hB = a_alloc(&a, sizeof(uint16_t) * (size_t)nb);
    be->op->to_bf16(be, hA, fA, na);
    be->op->to_bf16(be, hB, fB, nb);
    be->op->gemm_bf16(be, ta, tb, M, N, K, 0.75f, hA, lda, hB, ldb, c->variant & 8 ? 0.5f : 0.0f,
                      dC, ldc);
    put(r, is_ref, 0, "C", a_down(&a, dC, nc), nc);
    uint16_t *back = malloc(sizeof(uint16_t) * (size_t)na);
    be->op->sync(be);
    be->op->get(be, back, hA, sizeof(uint16_t) * (size_t)na);
    put(r, is_ref, 1, "A16", bf16_as_f32(back, na), na);
    free(back);
    a_free(&a);
    free(A), free(B), free(C);
}

/* matmul / lora / dora: d = {N, C, OC, r}; variant bits: 1 = bias, 2 = dropout mask,
 * 4 = LoRA split as the bf16 mode runs it: the backend computes the base product with
 * matmul_fwd / matmul_bwd and passes W = NULL to lora_fwd / lora_bwd; the reference runs the
 * whole op (so the split must add up to it) */
static void run_linear(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], C = c->d[1], OC = c->d[2], R = c->d[3] > 0 ? c->d[3] : 1;
    const int64_t nx = (int64_t)N * C, ny = (int64_t)N * OC, nw = (int64_t)OC * C;
    float *x = hrand(nx, 1), *W = hrand(nw, 0.5f), *bias = hrand(OC, 0.5f), *A = hrand((int64_t)R * C, 0.5f),
          *Bm = hrand((int64_t)OC * R, 0.5f), *dy = hrand(ny, 1), *mag = hrand(OC, 1);
    for (int o = 0; o < OC; o++)
        mag[o] = 1.0f + 0.5f * mag[o];
    float *mask = malloc(sizeof(float) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++)
        mask[i] = frand() < -0.6f ? 0.0f : 1.0f / 0.8f;
    float *gx = hrand(nx, 1), *gw = hrand(nw, 1), *gb = hrand(OC, 1), *gA = hrand((int64_t)R * C, 1),
          *gB = hrand((int64_t)OC * R, 1), *gm = hrand(OC, 1);
    arena a = {.be = be};
    float *dx = a_up(&a, x, nx), *dW = a_up(&a, W, nw), *dbias = c->variant & 1 ? a_up(&a, bias, OC) : NULL;
    float *dA = a_up(&a, A, (int64_t)R * C), *dB = a_up(&a, Bm, (int64_t)OC * R), *dmag = a_up(&a, mag, OC);
    float *dmask = c->variant & 2 ? a_up(&a, mask, nx) : NULL, *ddy = a_up(&a, dy, ny);
    float *y = a_alloc(&a, sizeof(float) * (size_t)ny), *xa = a_alloc(&a, sizeof(float) * (size_t)N * R);
    float *wn = a_alloc(&a, sizeof(float) * (size_t)OC);
    float *scr = a_alloc(&a, sizeof(float) * (size_t)LT_LORA_SCRATCH(N, C, OC, R));
    float *egx = a_up(&a, gx, nx), *egw = a_up(&a, gw, nw), *egb = a_up(&a, gb, OC),
          *egA = a_up(&a, gA, (int64_t)R * C), *egB = a_up(&a, gB, (int64_t)OC * R), *egm = a_up(&a, gm, OC);
    const float scale = 1.7f;
    if (c->op == LT_OP_MATMUL) {
        be->op->matmul_fwd(be, y, dx, dW, dbias, N, C, OC);
        be->op->matmul_bwd(be, egx, egw, dbias ? egb : NULL, ddy, dx, dW, N, C, OC);
        put(r, is_ref, 0, "y", a_down(&a, y, ny), ny);
        put(r, is_ref, 1, "dx", a_down(&a, egx, nx), nx);
        put(r, is_ref, 2, "dW", a_down(&a, egw, nw), nw);
        put(r, is_ref, 3, "dbias", a_down(&a, egb, OC), OC);
    } else if (c->op == LT_OP_LORA && c->variant & 4 && !is_ref) {
        be->op->matmul_fwd(be, y, dx, dW, dbias, N, C, OC);
        be->op->lora_fwd(be, y, xa, dx, NULL, NULL, dA, dB, dmask, N, C, OC, R, scale, scr);
        be->op->matmul_bwd(be, egx, NULL, NULL, ddy, dx, dW, N, C, OC);
        be->op->lora_bwd(be, egx, egA, egB, ddy, dx, NULL, dA, dB, xa, dmask, N, C, OC, R, scale,
                         scr);
        put(r, is_ref, 0, "y", a_down(&a, y, ny), ny);
        put(r, is_ref, 1, "xa", a_down(&a, xa, (int64_t)N * R), (int64_t)N * R);
        put(r, is_ref, 2, "dx", a_down(&a, egx, nx), nx);
        put(r, is_ref, 3, "dA", a_down(&a, egA, (int64_t)R * C), (int64_t)R * C);
        put(r, is_ref, 4, "dB", a_down(&a, egB, (int64_t)OC * R), (int64_t)OC * R);
    } else if (c->op == LT_OP_LORA) {
        be->op->lora_fwd(be, y, xa, dx, dW, dbias, dA, dB, dmask, N, C, OC, R, scale, scr);
        be->op->lora_bwd(be, egx, egA, egB, ddy, dx, dW, dA, dB, xa, dmask, N, C, OC, R, scale, scr);
        put(r, is_ref, 0, "y", a_down(&a, y, ny), ny);
        put(r, is_ref, 1, "xa", a_down(&a, xa, (int64_t)N * R), (int64_t)N * R);
        put(r, is_ref, 2, "dx", a_down(&a, egx, nx), nx);
        put(r, is_ref, 3, "dA", a_down(&a, egA, (int64_t)R * C), (int64_t)R * C);
        put(r, is_ref, 4, "dB", a_down(&a, egB, (int64_t)OC * R), (int64_t)OC * R);
    } else {
        be->op->dora_fwd(be, y, wn, xa, dx, dW, dbias, dA, dB, dmag, dmask, N, C, OC, R, scale, scr);
        be->op->dora_bwd(be, egx, egA, egB, egm, ddy, dx, dW, dA, dB, dmag, wn, xa, dmask, N, C, OC,
                         R, scale, scr);
        put(r, is_ref, 0, "y", a_down(&a, y, ny), ny);
        put(r, is_ref, 1, "wnorm", a_down(&a, wn, OC), OC);
        put(r, is_ref, 2, "dx", a_down(&a, egx, nx), nx);
        put(r, is_ref, 3, "dA", a_down(&a, egA, (int64_t)R * C), (int64_t)R * C);
        put(r, is_ref, 4, "dB", a_down(&a, egB, (int64_t)OC * R), (int64_t)OC * R);
        put(r, is_ref, 5, "dmag", a_down(&a, egm, OC), OC);
    }
    a_free(&a);
    free(x), free(W), free(bias), free(A), free(Bm), free(dy), free(mag), free(mask);
    free(gx), free(gw), free(gb), free(gA), free(gB), free(gm);
}

/* A weight [OC][C] stored as c->dt (made from fp32 values by the library's quantizers, or
 * rounded for F16 / BF16), NF4 when c->variant & 1. Returns the storage (host) and its view. */
typedef struct {
    void *bytes;
    size_t nbytes;
    lt_nf4 q;
    uint8_t *nf4_block;
} stored_w;
static void make_weight(const tcase *c, int OC, int C, stored_w *sw, lt_weight_view *v) {
    float *w = hrand((int64_t)OC * C, 0.5f);
    memset(sw, 0, sizeof *sw);
    memset(v, 0, sizeof *v);
    v->rows = OC;
    v->cols = C;
    if (c->variant & 1) { /* NF4, double-quantized */
        lt_nf4_sizes_t s;
        lt_nf4_sizes((int64_t)OC * C, 1, &s);
        sw->nf4_block = calloc(1, (size_t)s.total_bytes + 64);
        sw->q.n = (int64_t)OC * C;
        sw->q.double_quant = 1;
        sw->q.codes = sw->nf4_block;
        sw->q.qabsmax = sw->nf4_block + s.codes_bytes;
        sw->q.absmax2 = (float *)(sw->nf4_block + ((s.codes_bytes + s.qabsmax_bytes + 15) & ~15));
        float *scr = malloc(sizeof(float) * (size_t)(s.n_blocks + 1));
        if (lt_nf4_quantize(w, &sw->q, scr)) exit(2);
        free(scr);
        v->nf4 = &sw->q;
    } else {
        sw->nbytes = (size_t)lt_dtype_nbytes(c->dt, (int64_t)OC * C);
        sw->bytes = malloc(sw->nbytes);
        if (c->dt == LT_DTYPE_F32) memcpy(sw->bytes, w, sw->nbytes);
        else if (c->dt == LT_DTYPE_F16 || c->dt == LT_DTYPE_BF16) {
            uint16_t *h = sw->bytes; /* rounded to nearest even by the library (core.h) */
            for (int64_t i = 0; i < (int64_t)OC * C; i++)
                h[i] = c->dt == LT_DTYPE_BF16 ? lt_f32_to_bf16(w[i]) : lt_f32_to_f16(w[i]);
        } else if (c->dt == LT_DTYPE_Q4_K) { /* no quantizer: random blocks, sane scales */
            uint8_t *b = sw->bytes;
            for (size_t k = 0; k < sw->nbytes; k++)
                b[k] = (uint8_t)(rng >> 33), rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            for (size_t k = 0; k < sw->nbytes; k += 144) {
                const uint16_t d = lt_f32_to_f16(0.002f + 0.004f * fabsf(frand()));
                const uint16_t dm = lt_f32_to_f16(0.001f + 0.004f * fabsf(frand()));
                memcpy(b + k, &d, 2);
                memcpy(b + k + 2, &dm, 2);
            }
        } else if (lt_quantize(c->dt, w, sw->bytes, (int64_t)OC * C)) {
            fprintf(stderr, "cannot quantize to %s: %s\n", lt_dtype_name(c->dt), lt_errmsg());
            exit(2);
        }
        v->dtype = c->dt;
        v->data = sw->bytes;
    }
    free(w);
}

/* matmul_w / weight_f32: d = {N, C, OC, row0, nrows}; variant bits: 1 = NF4, 2 = three jobs
 * at once (OC, OC + 3 and 5 rows; the second accumulates: beta 1), 4 = scratch of one row
 * only (a row at a time, one thread), 8 = qact on both sides (8-bit activations: the backend's
 * integer kernels against the reference's scalar twins of qdot.c, the same quantization in
 * plain C), 16 = qact on the backend under test only (against the reference's fp32 product).
 * The backend reads the stored bytes from its own memory (set), the NF4 structure from the
 * host. */
static void run_weight(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], C = c->d[1], OC = c->d[2];
    const int nj = c->op == LT_OP_MATMUL_W && (c->variant & 2) ? 3 : 1;
    const int rows[3] = {OC, OC + 3, 5};
    stored_w sw[3];
    lt_weight_view v[3], dv[3];
    arena a = {.be = be};
    lt_nf4 dq[3]; /* NF4 with its arrays in the backend's memory */
    for (int j = 0; j < nj; j++) {
        make_weight(c, rows[j], C, &sw[j], &v[j]);
        dv[j] = v[j];
        if (v[j].data) dv[j].data = a_upb(&a, v[j].data, sw[j].nbytes);
        if (v[j].nf4) {
            lt_nf4_sizes_t z;
            lt_nf4_sizes(sw[j].q.n, 1, &z);
            dq[j] = sw[j].q;
            dq[j].codes = a_upb(&a, sw[j].q.codes, (size_t)z.codes_bytes);
            dq[j].qabsmax = a_upb(&a, sw[j].q.qabsmax, (size_t)z.qabsmax_bytes);
            dq[j].absmax2 = a_upb(&a, sw[j].q.absmax2, (size_t)z.absmax2_bytes);
            dv[j].nf4 = &dq[j];
        }
    }
    float *x = hrand((int64_t)N * C, 1);
    lt_status st;
    if (c->op == LT_OP_MATMUL_W) {
        const int64_t nscr = c->variant & 4 ? C : be->op->matmul_w_scratch(be, C);
        float *scr = a_alloc(&a, sizeof(float) * (size_t)nscr);
        float *dx = a_up(&a, x, (int64_t)N * C), *y[3];
        lt_matmul_job jobs[3];
        for (int j = 0; j < nj; j++) {
            float *y0 = hrand((int64_t)N * rows[j], 1); /* beta 1 adds into it */
            y[j] = a_up(&a, y0, (int64_t)N * rows[j]);
            free(y0);
            jobs[j] = (lt_matmul_job){&dv[j], y[j], j == 1 ? 1.0f : 0.0f,
                                      (c->variant & 8) || ((c->variant & 16) && !is_ref), 0, 0};
        }
        st = be->op->matmul_w(be, jobs, nj, dx, N, scr, nscr);
        static const char *names[3] = {"y0", "y1 (+=)", "y2"};
        for (int j = 0; j < nj; j++)
            put(r, is_ref, j, names[j], a_down(&a, y[j], (int64_t)N * rows[j]), (int64_t)N * rows[j]);
    } else {
        const int row0 = c->d[3], nr = c->d[4];
        const int64_t ne = (int64_t)nr * C;
        float *scr = a_alloc(&a, sizeof(float) * (size_t)ne);
        const float *out = NULL;
        if (c->op == LT_OP_WEIGHT_BF16 && !is_ref) { /* straight to bf16 on the backend */
            st = be->op->weight_bf16(be, &dv[0], row0, nr, (uint16_t *)scr);
            float *h = a_down(&a, scr, (ne + 1) / 2), *hw = malloc(sizeof(float) * (size_t)ne);
            for (int64_t i = 0; i < ne; i++)
                hw[i] = lt_bf16_to_f32(((const uint16_t *)h)[i]);
            free(h);
            put(r, is_ref, 0, "rows", hw, ne);
        } else { /* weight_f32 (for weight_bf16: the oracle, its rows rounded here) */
            st = be->op->weight_f32(be, &dv[0], row0, nr, scr, &out);
            float *h = a_down(&a, st ? scr : out, ne);
            if (c->op == LT_OP_WEIGHT_BF16)
                for (int64_t i = 0; i < ne; i++)
                    h[i] = lt_bf16_to_f32(lt_f32_to_bf16(h[i]));
            put(r, is_ref, 0, "rows", h, ne);
        }
    }
    if (is_ref) r->st_want = st;
    else r->st_got = st;
    a_free(&a);
    free(x);
    for (int j = 0; j < nj; j++)
        free(sw[j].bytes), free(sw[j].nf4_block);
}

/* attention over an fp16 KV cache (d as attention_kv's): k rounded by the backend's to_f16
 * (its output compared too, exactly), v by lt_f32_to_f16 */
static void run_attention_kv_f16(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], pos0 = c->d[1], NH = c->d[2], NKV = c->d[3], HD = c->d[4], win = c->d[5];
    const int ctx = pos0 + N + 2;
    const int64_t nq = (int64_t)N * NH * HD, nk = (int64_t)ctx * NKV * HD;
    float *q = hrand(nq, 1), *k = hrand(nk, 1), *v = hrand(nk, 1);
    uint16_t *hv = malloc(sizeof(uint16_t) * (size_t)nk);
    for (int64_t i = 0; i < nk; i++)
        hv[i] = lt_f32_to_f16(v[i] * 7.0f);
    arena a = {.be = be};
    float *dq = a_up(&a, q, nq), *dk32 = a_up(&a, k, nk);
    uint16_t *dk = a_alloc(&a, sizeof(uint16_t) * (size_t)nk);
    uint16_t *dv = a_upb(&a, hv, sizeof(uint16_t) * (size_t)nk);
    be->op->to_f16(be, dk, dk32, nk);
    float *o = a_alloc(&a, sizeof(float) * (size_t)nq);
    const int64_t ns = be->op->attention_kv_scratch(be, ctx);
    float *scr = a_alloc(&a, sizeof(float) * (size_t)ns);
    be->op->attention_kv_f16(be, o, dq, dk, dv, N, pos0, NH, NKV, HD, win, scr, ns);
    put(r, is_ref, 0, "out", a_down(&a, o, nq), nq);
    /* the rounded keys, widened: exact on every backend */
    uint16_t *hk = malloc(sizeof(uint16_t) * (size_t)nk);
    be->op->sync(be);
    be->op->get(be, hk, dk, sizeof(uint16_t) * (size_t)nk);
    float *wk = malloc(sizeof(float) * (size_t)nk);
    for (int64_t i = 0; i < nk; i++)
        wk[i] = lt_f16_to_f32(hk[i]);
    put(r, is_ref, 1, "k_f16", wk, nk);
    free(hk);
    a_free(&a);
    free(q), free(k), free(v), free(hv);
}

/* attention over a KV cache: d = {N, pos0, NH, NKV, HD, window} */
static void run_attention_kv(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], pos0 = c->d[1], NH = c->d[2], NKV = c->d[3], HD = c->d[4], win = c->d[5];
    const int ctx = pos0 + N + 2;
    const int64_t nq = (int64_t)N * NH * HD, nk = (int64_t)ctx * NKV * HD;
    float *q = hrand(nq, 1), *k = hrand(nk, 1), *v = hrand(nk, 1);
    arena a = {.be = be};
    float *dq = a_up(&a, q, nq), *dk = a_up(&a, k, nk), *dv = a_up(&a, v, nk);
    float *o = a_alloc(&a, sizeof(float) * (size_t)nq);
    const int64_t ns = be->op->attention_kv_scratch(be, ctx);
    float *scr = a_alloc(&a, sizeof(float) * (size_t)ns);
    be->op->attention_kv(be, o, dq, dk, dv, N, pos0, NH, NKV, HD, win, scr, ns);
    put(r, is_ref, 0, "out", a_down(&a, o, nq), nq);
    a_free(&a);
    free(q), free(k), free(v);
}

/* add_bias / scale_rows: d = {N, C} */
static void run_bias(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], C = c->d[1];
    float *y = hrand((int64_t)N * C, 1), *b = hrand(C, 1);
    arena a = {.be = be};
    float *dy = a_up(&a, y, (int64_t)N * C), *db = a_up(&a, b, C);
    if (c->op == LT_OP_ADD_BIAS) be->op->add_bias(be, dy, db, N, C);
    else be->op->scale_rows(be, dy, db, N, C);
    put(r, is_ref, 0, "y", a_down(&a, dy, (int64_t)N * C), (int64_t)N * C);
    a_free(&a);
    free(y), free(b);
}

/* rmsnorm: d = {N, C} */
static void run_rmsnorm(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], C = c->d[1];
    const int64_t n = (int64_t)N * C;
    float *x = hrand(n, 2), *w = hrand(C, 1), *dy = hrand(n, 1), *gx = hrand(n, 1), *gw = hrand(C, 1);
    arena a = {.be = be};
    float *dx = a_up(&a, x, n), *dw = a_up(&a, w, C), *ddy = a_up(&a, dy, n);
    float *egx = a_up(&a, gx, n), *egw = a_up(&a, gw, C);
    float *y = a_alloc(&a, sizeof(float) * (size_t)n), *rs = a_alloc(&a, sizeof(float) * (size_t)N);
    be->op->rmsnorm_fwd(be, y, rs, dx, dw, N, C, 1e-5f);
    be->op->rmsnorm_bwd(be, egx, egw, ddy, dx, dw, rs, N, C);
    put(r, is_ref, 0, "y", a_down(&a, y, n), n);
    put(r, is_ref, 1, "rstd", a_down(&a, rs, N), N);
    put(r, is_ref, 2, "dx", a_down(&a, egx, n), n);
    put(r, is_ref, 3, "dw", a_down(&a, egw, C), C);
    a_free(&a);
    free(x), free(w), free(dy), free(gx), free(gw);
}

/* rope: d = {N, NH, HD}; variant 1 = interleaved pairs */
static void run_rope(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], NH = c->d[1], HD = c->d[2], npos = N + 3;
    const int64_t n = (int64_t)N * NH * HD;
    float *inv = malloc(sizeof(float) * (size_t)(HD / 2 + 1));
    for (int i = 0; i < HD / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * i / HD);
    float *ct = malloc(sizeof(float) * (size_t)npos * (HD / 2 + 1)), *stt = malloc(sizeof(float) * (size_t)npos * (HD / 2 + 1));
    lt_rope_tables(ct, stt, inv, npos, HD);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < N; i++)
        pos[i] = (i * 7 + 2) % npos;
    float *x = hrand(n, 1), *dy = hrand(n, 1);
    arena a = {.be = be};
    float *dx = a_up(&a, x, n), *ddy = a_up(&a, dy, n), *dct = a_up(&a, ct, (int64_t)npos * (HD / 2)),
          *dst = a_up(&a, stt, (int64_t)npos * (HD / 2));
    int32_t *dpos = a_upb(&a, pos, sizeof(int32_t) * (size_t)N);
    float *y = a_alloc(&a, sizeof(float) * (size_t)n), *g = a_alloc(&a, sizeof(float) * (size_t)n);
    be->op->rope_fwd(be, y, dx, dpos, dct, dst, N, NH, HD, c->variant & 1);
    be->op->rope_bwd(be, g, ddy, dpos, dct, dst, N, NH, HD, c->variant & 1);
    put(r, is_ref, 0, "y", a_down(&a, y, n), n);
    put(r, is_ref, 1, "dx", a_down(&a, g, n), n);
    a_free(&a);
    free(inv), free(ct), free(stt), free(pos), free(x), free(dy);
}

/* attention: d = {B, T, NH, NKV, HD, window}; variant bits: 1 = sequence ids (packed
 * documents), 2 = rows of different lengths laid end to end (off, one row empty).
 * attention_bf16 (the bf16 compute mode's): the backend gets the fp32 inputs, the oracle runs
 * the fp32 attention over the same inputs rounded to bf16, so what is left to differ is the
 * rounding of the probabilities and score gradients (2^-9 relative each) and the sums' order */
static void run_attention(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int B = c->d[0], T = c->d[1], NH = c->d[2], NKV = c->d[3], HD = c->d[4], win = c->d[5];
    int32_t off[17];
    off[0] = 0;
    for (int b = 0; b < B; b++) /* row lengths T, T-1, ..., at least 0 */
        off[b + 1] = off[b] + (c->variant & 2 ? (T - b * 3 > 0 ? T - b * 3 : 0) : T);
    const int N = off[B];
    const int64_t nq = (int64_t)N * NH * HD, nk = (int64_t)N * NKV * HD;
    float *q = hrand(nq, 1), *k = hrand(nk, 1), *v = hrand(nk, 1), *dout = hrand(nq, 1);
    if (c->op == LT_OP_ATTENTION_BF16 && is_ref) { /* the oracle: fp32 over the rounded inputs */
        float *xs[] = {q, k, v, dout};
        const int64_t ns[] = {nq, nk, nk, nq};
        for (int j = 0; j < 4; j++)
            for (int64_t e = 0; e < ns[j]; e++)
                xs[j][e] = lt_bf16_to_f32(lt_f32_to_bf16(xs[j][e]));
    }
    float *gq = hrand(nq, 1), *gk = hrand(nk, 1), *gv = hrand(nk, 1);
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(N + 1));
    for (int i = 0; i < N; i++)
        seq[i] = i / 5; /* documents of 5 positions */
    arena a = {.be = be};
    float *dq = a_up(&a, q, nq), *dk = a_up(&a, k, nk), *dv = a_up(&a, v, nk), *ddo = a_up(&a, dout, nq);
    float *egq = a_up(&a, gq, nq), *egk = a_up(&a, gk, nk), *egv = a_up(&a, gv, nk);
    int32_t *dseq = c->variant & 1 ? a_upb(&a, seq, sizeof(int32_t) * (size_t)(N + 1)) : NULL;
    int32_t *doff = c->variant & 2 ? a_upb(&a, off, sizeof(int32_t) * (size_t)(B + 1)) : NULL;
    float *o = a_alloc(&a, sizeof(float) * (size_t)(nq ? nq : 1)),
          *lse = a_alloc(&a, sizeof(float) * (size_t)(N * NH + 1));
    if (c->op == LT_OP_ATTENTION_BF16 && !is_ref) {
        be->op->attention_fwd_bf16(be, o, lse, dq, dk, dv, dseq, doff, B, T, NH, NKV, HD, win);
        be->op->attention_bwd_bf16(be, egq, egk, egv, ddo, dq, dk, dv, o, lse, dseq, doff, B, T,
                                   NH, NKV, HD, win);
    } else {
        be->op->attention_fwd(be, o, lse, dq, dk, dv, dseq, doff, B, T, NH, NKV, HD, win);
        be->op->attention_bwd(be, egq, egk, egv, ddo, dq, dk, dv, o, lse, dseq, doff, B, T, NH,
                              NKV, HD, win);
    }
    put(r, is_ref, 0, "out", a_down(&a, o, nq), nq);
    put(r, is_ref, 1, "lse", a_down(&a, lse, (int64_t)N * NH), (int64_t)N * NH);
    put(r, is_ref, 2, "dq", a_down(&a, egq, nq), nq);
    put(r, is_ref, 3, "dk", a_down(&a, egk, nk), nk);
    put(r, is_ref, 4, "dv", a_down(&a, egv, nk), nk);
    a_free(&a);
    free(q), free(k), free(v), free(dout), free(gq), free(gk), free(gv), free(seq);
}

/* swiglu: d = {n} (the backward writes: the pre-filled buffers must not leak through) */
static void run_swiglu(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int64_t n = c->d[0];
    float *g = hrand(n, 4), *u = hrand(n, 2), *dy = hrand(n, 1), *pre = hrand(n, 1);
    arena a = {.be = be};
    float *dg = a_up(&a, g, n), *du = a_up(&a, u, n), *ddy = a_up(&a, dy, n);
    float *y = a_alloc(&a, sizeof(float) * (size_t)n), *eg = a_up(&a, pre, n), *eu = a_up(&a, pre, n);
    be->op->swiglu_fwd(be, y, dg, du, n);
    be->op->swiglu_bwd(be, eg, eu, ddy, dg, du, n);
    put(r, is_ref, 0, "y", a_down(&a, y, n), n);
    put(r, is_ref, 1, "dgate", a_down(&a, eg, n), n);
    put(r, is_ref, 2, "dup", a_down(&a, eu, n), n);
    /* dup may be dout (the trainer's MLP backward writes it over dh) */
    float *eg2 = a_up(&a, pre, n), *io = a_up(&a, dy, n);
    be->op->swiglu_bwd(be, eg2, io, io, dg, du, n);
    put(r, is_ref, 3, "dgate, dup over dout", a_down(&a, eg2, n), n);
    put(r, is_ref, 4, "dup over dout", a_down(&a, io, n), n);
    a_free(&a);
    free(g), free(u), free(dy), free(pre);
}

/* cross-entropy: d = {N, V}; every third target ignored; variant 1 = grad_scale 0 (1/count) */
static void run_ce(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], V = c->d[1];
    const int64_t n = (int64_t)N * V;
    float *lg = hrand(n, 6);
    int32_t *t = malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < N; i++)
        t[i] = i % 3 == 2 ? LT_IGNORE_INDEX : (i * 131 + 7) % V;
    arena a = {.be = be};
    float *dl = a_up(&a, lg, n), *dd = a_alloc(&a, sizeof(float) * (size_t)n);
    int32_t *dt = a_upb(&a, t, sizeof(int32_t) * (size_t)N);
    lt_ce_stats s;
    lt_status st = be->op->cross_entropy(be, dd, &s, dl, dt, N, V, LT_IGNORE_INDEX,
                                         c->variant & 1 ? 0.0f : 0.37f);
    if (is_ref) r->st_want = st, r->extra_want = s.sum;
    else r->st_got = st, r->extra_got = s.sum;
    put(r, is_ref, 0, "dlogits", a_down(&a, dd, n), n);
    a_free(&a);
    free(lg), free(t);
}

/* embedding: d = {N, C, V} */
static void run_embedding(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int N = c->d[0], C = c->d[1], V = c->d[2];
    float *wte = hrand((int64_t)V * C, 1), *dy = hrand((int64_t)N * C, 1), *g = hrand((int64_t)V * C, 1);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < N; i++)
        tok[i] = (i * 5 + 1) % V; /* repeats: the backward scatter-adds */
    arena a = {.be = be};
    float *dw = a_up(&a, wte, (int64_t)V * C), *ddy = a_up(&a, dy, (int64_t)N * C), *eg = a_up(&a, g, (int64_t)V * C);
    int32_t *dtok = a_upb(&a, tok, sizeof(int32_t) * (size_t)N);
    float *y = a_alloc(&a, sizeof(float) * (size_t)N * C);
    lt_status st = be->op->embedding_fwd(be, y, dtok, dw, N, C, V);
    if (is_ref) r->st_want = st;
    else r->st_got = st;
    be->op->embedding_bwd(be, eg, ddy, dtok, N, C);
    put(r, is_ref, 0, "y", a_down(&a, y, (int64_t)N * C), (int64_t)N * C);
    put(r, is_ref, 1, "dwte", a_down(&a, eg, (int64_t)V * C), (int64_t)V * C);
    a_free(&a);
    free(wte), free(dy), free(g), free(tok);
}

/* optimizer and reductions: d = {n}; variant 1 (all_finite) = a NaN planted, 2 = an inf */
static void run_vec(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int64_t n = c->d[0];
    float *x = hrand(n, 1), *y = hrand(n, 1), *m = hrand(n, 0.1f), *v = hrand(n, 0.1f);
    for (int64_t i = 0; i < n; i++)
        v[i] = fabsf(v[i]);
    if (c->variant & 1) x[n / 2] = NAN;
    if (c->variant & 2) x[n - 1] = -INFINITY;
    arena a = {.be = be};
    float *dx = a_up(&a, x, n), *dy = a_up(&a, y, n), *dm = a_up(&a, m, n), *dv = a_up(&a, v, n);
    double extra = 0;
    switch (c->op) {
    case LT_OP_ADAMW: {
        lt_adamw_cfg cfg = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
        be->op->adamw(be, dx, dy, dm, dv, n, &cfg, 3);
        put(r, is_ref, 0, "p", a_down(&a, dx, n), n);
        put(r, is_ref, 1, "m", a_down(&a, dm, n), n);
        put(r, is_ref, 2, "v", a_down(&a, dv, n), n);
        break;
    }
    case LT_OP_SUMSQ: extra = be->op->sumsq(be, dx, n); break;
    case LT_OP_ALL_FINITE: extra = be->op->all_finite(be, dx, n); break;
    case LT_OP_SCALE:
        be->op->scale(be, dx, n, 0.3f);
        put(r, is_ref, 0, "x", a_down(&a, dx, n), n);
        break;
    case LT_OP_ADD:
        be->op->add(be, dm, dx, dy, n);
        be->op->add(be, dx, dx, dy, n); /* in place */
        put(r, is_ref, 0, "y", a_down(&a, dm, n), n);
        put(r, is_ref, 1, "x += y", a_down(&a, dx, n), n);
        break;
    case LT_OP_DROPOUT_MASK:
        be->op->dropout_mask(be, dm, n, 0.3f, 0xABCDEFull + (uint64_t)n);
        put(r, is_ref, 0, "mask", a_down(&a, dm, n), n);
        break;
    default: break;
    }
    if (is_ref) r->extra_want = extra;
    else r->extra_got = extra;
    a_free(&a);
    free(x), free(y), free(m), free(v);
}

/* gather / scatter rows: d = {rows, D, n} */
static void run_rows(const lt_backend *be, const tcase *c, result *r, int is_ref) {
    rng = SEED(c);
    const int rows = c->d[0], D = c->d[1], n = c->d[2];
    float *src = hrand((int64_t)rows * D, 1), *dst = hrand((int64_t)rows * D, 1);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    for (int j = 0; j < n; j++)
        idx[j] = (int32_t)((j * 3 + 1) % rows); /* distinct while n <= rows and 3 coprime */
    arena a = {.be = be};
    float *ds = a_up(&a, src, (int64_t)rows * D), *dd = a_up(&a, dst, (int64_t)rows * D);
    int32_t *di = a_upb(&a, idx, sizeof(int32_t) * (size_t)n);
    if (c->op == LT_OP_GATHER_ROWS) be->op->gather_rows(be, dd, ds, di, n, D);
    else be->op->scatter_rows(be, dd, ds, di, n, D);
    put(r, is_ref, 0, "dst", a_down(&a, dd, (int64_t)rows * D), (int64_t)rows * D);
    a_free(&a);
    free(src), free(dst), free(idx);
}

static runner runner_of(lt_op op) {
    switch (op) {
    case LT_OP_GEMM: return run_gemm;
    case LT_OP_GEMM_BF16: return run_gemm_bf16;
    case LT_OP_MATMUL:
    case LT_OP_LORA:
    case LT_OP_DORA: return run_linear;
    case LT_OP_MATMUL_W:
    case LT_OP_WEIGHT_F32:
    case LT_OP_WEIGHT_BF16: return run_weight;
    case LT_OP_RMSNORM: return run_rmsnorm;
    case LT_OP_ROPE: return run_rope;
    case LT_OP_ATTENTION:
    case LT_OP_ATTENTION_BF16: return run_attention;
    case LT_OP_SWIGLU: return run_swiglu;
    case LT_OP_CROSS_ENTROPY: return run_ce;
    case LT_OP_EMBEDDING: return run_embedding;
    case LT_OP_GATHER_ROWS:
    case LT_OP_SCATTER_ROWS: return run_rows;
    case LT_OP_ATTENTION_KV: return run_attention_kv;
    case LT_OP_ATTENTION_KV_F16: return run_attention_kv_f16;
    case LT_OP_ADD_BIAS:
    case LT_OP_SCALE_ROWS: return run_bias;
    default: return run_vec;
    }
}

/* Tolerances: f32 ops whose sums the fast path orders differently (BLAS blocking, OpenMP
 * splits, vectorised exp with <= 2 ulp): 2e-5 of the output's largest value; elementwise
 * arithmetic the fast path does identically: exact. Quantized weights are decoded from the same
 * bytes by both sides, so the product's tolerance is f32's. */
#define TF 2e-5
/* 8-bit activations (qact) on both sides: every block's integer sum is exact, the kernels differ
 * from the scalar twins only in the order of the fp32 sum over blocks and the scale products */
#define TQ 1e-5
/* qact against the fp32 product: the activations' rounding (half a step of amax / 127 per
 * block) moves a product of C terms by ~ sqrt(C) / 254 of its typical term; measured <= 6.5e-3
 * of the largest output on these rows */
#define TQF 2e-2
/* attention_bf16 against fp32 attention over the bf16-rounded inputs: P and dS rounded to bf16
 * (2^-9 relative each) before sums of up to T terms; the outputs' error is a few 1e-3 of their
 * largest value */
#define TB 1e-2
static const tcase k_cases[] = {
    /* gemm {M, N, K}: tiny, odd, large enough for the OpenMP split, every transpose, padding */
    {LT_OP_GEMM, {1, 1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_GEMM, {3, 5, 7}, LT_DTYPE_F32, 1 | 4 | 8, TF},
    {LT_OP_GEMM, {17, 9, 33}, LT_DTYPE_F32, 2, TF},
    {LT_OP_GEMM, {70, 300, 64}, LT_DTYPE_F32, 3 | 8, TF},
    {LT_OP_GEMM, {300, 40, 96}, LT_DTYPE_F32, 0, TF},
    /* A^T B with few columns: the adapters' dB = scale dy^T xa (a column tail in the second) */
    {LT_OP_GEMM, {300, 16, 600}, LT_DTYPE_F32, 1 | 8, TF},
    {LT_OP_GEMM, {200, 13, 700}, LT_DTYPE_F32, 1 | 4, TF},
    /* gemm_bf16 {M, N, K}: the gemm rows' shapes, special values, and the trainer's shapes
     * (q/k/v of a 576-wide model, its MLP, the dx products); fp32 sums in another order: TF */
    {LT_OP_GEMM_BF16, {1, 1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_GEMM_BF16, {3, 5, 7}, LT_DTYPE_F32, 1 | 4 | 8 | 16, TF},
    {LT_OP_GEMM_BF16, {17, 9, 33}, LT_DTYPE_F32, 2, TF},
    {LT_OP_GEMM_BF16, {70, 300, 64}, LT_DTYPE_F32, 3 | 8, TF},
    {LT_OP_GEMM_BF16, {300, 40, 96}, LT_DTYPE_F32, 0 | 16, TF},
    {LT_OP_GEMM_BF16, {64, 192, 576}, LT_DTYPE_F32, 2, TF},
    {LT_OP_GEMM_BF16, {64, 576, 1536}, LT_DTYPE_F32, 2 | 8, TF},
    {LT_OP_GEMM_BF16, {64, 576, 192}, LT_DTYPE_F32, 8, TF},
    /* matmul / lora / dora {N, C, OC, r} */
    {LT_OP_MATMUL, {1, 1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_MATMUL, {3, 5, 7}, LT_DTYPE_F32, 1, TF},
    {LT_OP_MATMUL, {64, 256, 96}, LT_DTYPE_F32, 1, TF},
    {LT_OP_LORA, {1, 1, 1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_LORA, {5, 9, 7, 3}, LT_DTYPE_F32, 1 | 2, TF},
    {LT_OP_LORA, {64, 192, 160, 8}, LT_DTYPE_F32, 2, TF},
    {LT_OP_LORA, {5, 9, 7, 3}, LT_DTYPE_F32, 1 | 2 | 4, TF},
    {LT_OP_LORA, {64, 192, 160, 8}, LT_DTYPE_F32, 4, TF},
    {LT_OP_DORA, {1, 2, 1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_DORA, {5, 9, 7, 3}, LT_DTYPE_F32, 1 | 2, TF},
    {LT_OP_DORA, {48, 128, 96, 4}, LT_DTYPE_F32, 1, TF},
    /* weights by storage format: matmul_w {N, C, OC}, weight_f32 {N, C, OC, row0, nrows} */
    {LT_OP_MATMUL_W, {3, 64, 5}, LT_DTYPE_F32, 0, TF},
    {LT_OP_MATMUL_W, {7, 96, 33}, LT_DTYPE_F16, 0, TF},
    {LT_OP_MATMUL_W, {7, 96, 33}, LT_DTYPE_BF16, 0, TF},
    {LT_OP_MATMUL_W, {5, 64, 9}, LT_DTYPE_Q4_0, 0, TF},
    {LT_OP_MATMUL_W, {5, 64, 9}, LT_DTYPE_Q4_1, 0, TF},
    {LT_OP_MATMUL_W, {5, 96, 9}, LT_DTYPE_Q8_0, 0, TF},
    {LT_OP_MATMUL_W, {4, 128, 40}, LT_DTYPE_F32, 1 /* NF4 */, TF},
    {LT_OP_MATMUL_W, {40, 512, 300}, LT_DTYPE_BF16, 0, TF},
    {LT_OP_MATMUL_W, {40, 512, 300}, LT_DTYPE_F32, 1 /* NF4 */, TF},
    {LT_OP_MATMUL_W, {1, 576, 192}, LT_DTYPE_Q4_1, 2, TF},     /* decode: q, k, v at once */
    {LT_OP_MATMUL_W, {6, 64, 40}, LT_DTYPE_F32, 2, TF},        /* fp32 in place, beta 1 */
    {LT_OP_MATMUL_W, {3, 64, 17}, LT_DTYPE_Q8_0, 2 | 4, TF},   /* one row at a time */
    {LT_OP_MATMUL_W, {2, 256, 70}, LT_DTYPE_F32, 1 | 2 | 4, TF}, /* NF4, row by row */
    /* 8-bit activations and integer kernels (qact, src/backend/qdot.h): against the scalar
     * twins (8), then against fp32 (16); decode shapes, a prefill, beta 1, a scratch that takes
     * 3 tokens of quantized x at a time (7 tokens: chunks of 3, 3, 1) */
    {LT_OP_MATMUL_W, {5, 64, 9}, LT_DTYPE_Q4_0, 8, TQ},
    {LT_OP_MATMUL_W, {5, 64, 9}, LT_DTYPE_Q4_1, 8, TQ},
    {LT_OP_MATMUL_W, {5, 96, 9}, LT_DTYPE_Q8_0, 8, TQ},
    {LT_OP_MATMUL_W, {1, 576, 192}, LT_DTYPE_Q4_1, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {1, 576, 1536}, LT_DTYPE_Q4_0, 8, TQ},
    {LT_OP_MATMUL_W, {1, 1536, 576}, LT_DTYPE_Q8_0, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {40, 512, 300}, LT_DTYPE_Q4_1, 8, TQ},
    {LT_OP_MATMUL_W, {7, 64, 17}, LT_DTYPE_Q4_1, 2 | 4 | 8, TQ},
    /* Q4_K (random blocks): against the scalar twin, then against fp32 */
    {LT_OP_MATMUL_W, {3, 256, 9}, LT_DTYPE_Q4_K, 8, TQ},
    {LT_OP_MATMUL_W, {1, 512, 40}, LT_DTYPE_Q4_K, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {5, 256, 9}, LT_DTYPE_Q4_K, 16, TQF},
    {LT_OP_MATMUL_W, {2, 768, 64}, LT_DTYPE_Q4_K, 2 | 16, TQF},
    /* prefill tiles of 4 tokens with a remainder, beta 1 on the second job */
    {LT_OP_MATMUL_W, {6, 576, 70}, LT_DTYPE_Q8_0, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {9, 128, 33}, LT_DTYPE_Q4_0, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {11, 96, 40}, LT_DTYPE_Q4_1, 2 | 8, TQ},
    {LT_OP_MATMUL_W, {5, 64, 9}, LT_DTYPE_Q4_0, 16, TQF},
    {LT_OP_MATMUL_W, {5, 96, 9}, LT_DTYPE_Q8_0, 16, TQF},
    {LT_OP_MATMUL_W, {1, 576, 192}, LT_DTYPE_Q4_1, 2 | 16, TQF},
    {LT_OP_MATMUL_W, {19, 576, 1536}, LT_DTYPE_Q4_1, 16, TQF},
    {LT_OP_WEIGHT_F32, {1, 64, 9, 4, 3}, LT_DTYPE_F16, 0, 0},
    {LT_OP_WEIGHT_F32, {1, 64, 9, 1, 7}, LT_DTYPE_BF16, 0, 0},
    {LT_OP_WEIGHT_F32, {1, 64, 9, 2, 5}, LT_DTYPE_Q4_1, 0, 0},
    {LT_OP_WEIGHT_F32, {1, 64, 9, 8, 1}, LT_DTYPE_Q8_0, 0, 0},
    {LT_OP_WEIGHT_F32, {1, 128, 9, 3, 4}, LT_DTYPE_F32, 1 /* NF4 */, 0},
    {LT_OP_WEIGHT_F32, {1, 1024, 300, 17, 260}, LT_DTYPE_BF16, 0, 0},
    /* weight_bf16 {_, C, OC, row0, n}: straight to bf16, bit for bit to_bf16 of weight_f32's
     * rows (the oracle's, rounded by lt_f32_to_bf16): every stored format, NF4, a row range */
    {LT_OP_WEIGHT_BF16, {1, 64, 9, 4, 3}, LT_DTYPE_F16, 0, 0},
    {LT_OP_WEIGHT_BF16, {1, 64, 9, 2, 5}, LT_DTYPE_Q4_1, 0, 0},
    {LT_OP_WEIGHT_BF16, {1, 64, 9, 3, 6}, LT_DTYPE_Q4_0, 0, 0},
    {LT_OP_WEIGHT_BF16, {1, 64, 9, 8, 1}, LT_DTYPE_Q8_0, 0, 0},
    {LT_OP_WEIGHT_BF16, {1, 64, 9, 0, 9}, LT_DTYPE_F32, 0, 0},
    {LT_OP_WEIGHT_BF16, {1, 128, 9, 3, 4}, LT_DTYPE_F32, 1 /* NF4 */, 0},
    {LT_OP_WEIGHT_BF16, {1, 1024, 300, 17, 260}, LT_DTYPE_F32, 1 /* NF4 */, 0},
    /* rmsnorm {N, C} */
    {LT_OP_RMSNORM, {1, 1}, LT_DTYPE_F32, 0, TF},
    {LT_OP_RMSNORM, {3, 7}, LT_DTYPE_F32, 0, TF},
    {LT_OP_RMSNORM, {33, 576}, LT_DTYPE_F32, 0, TF},
    /* rope {N, NH, HD}: the fast twin does the reference's arithmetic */
    {LT_OP_ROPE, {1, 1, 2}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ROPE, {7, 3, 10}, LT_DTYPE_F32, 1, 0},
    {LT_OP_ROPE, {40, 9, 64}, LT_DTYPE_F32, 0, 0},
    /* attention {B, T, NH, NKV, HD, window}: head dims the fast path takes (multiples of 8)
     * and not (6), GQA, sliding window, packed documents, ragged rows with an empty one */
    {LT_OP_ATTENTION, {1, 1, 1, 1, 8, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION, {2, 7, 4, 2, 6, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION, {2, 33, 4, 2, 16, 0}, LT_DTYPE_F32, 1, TF},
    {LT_OP_ATTENTION, {3, 40, 6, 2, 64, 9}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION, {5, 12, 3, 1, 32, 0}, LT_DTYPE_F32, 2 | 1, TF},
    {LT_OP_ATTENTION, {2, 70, 2, 2, 128, 0}, LT_DTYPE_F32, 2, TF},
    /* longer rows: several tiles of a tiled kernel (CUDA's: 16-64 queries a tile), a window
     * that starts inside a tile, packed documents in ragged rows */
    {LT_OP_ATTENTION, {2, 200, 6, 2, 64, 0}, LT_DTYPE_F32, 2 | 1, TF},
    {LT_OP_ATTENTION, {1, 150, 4, 4, 64, 50}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION, {2, 100, 8, 2, 128, 37}, LT_DTYPE_F32, 1, TF},
    {LT_OP_ATTENTION, {3, 90, 4, 1, 32, 0}, LT_DTYPE_F32, 2, TF},
    /* attention_bf16: the same shapes (head dims 32, 64, 128 take the tensor-core kernels,
     * the others the fp32 ones), plus rows of several 64-query tiles with windows and packed
     * documents; tolerance TB */
    {LT_OP_ATTENTION_BF16, {2, 7, 4, 2, 6, 0}, LT_DTYPE_F32, 0, TB},
    {LT_OP_ATTENTION_BF16, {2, 33, 4, 2, 16, 0}, LT_DTYPE_F32, 1, TB},
    {LT_OP_ATTENTION_BF16, {3, 40, 6, 2, 64, 9}, LT_DTYPE_F32, 0, TB},
    {LT_OP_ATTENTION_BF16, {5, 12, 3, 1, 32, 0}, LT_DTYPE_F32, 2 | 1, TB},
    {LT_OP_ATTENTION_BF16, {2, 70, 2, 2, 128, 0}, LT_DTYPE_F32, 2, TB},
    {LT_OP_ATTENTION_BF16, {2, 200, 6, 2, 64, 0}, LT_DTYPE_F32, 2 | 1, TB},
    {LT_OP_ATTENTION_BF16, {1, 150, 4, 4, 64, 50}, LT_DTYPE_F32, 0, TB},
    {LT_OP_ATTENTION_BF16, {2, 100, 8, 2, 128, 37}, LT_DTYPE_F32, 1, TB},
    {LT_OP_ATTENTION_BF16, {3, 90, 4, 1, 32, 0}, LT_DTYPE_F32, 2, TB},
    {LT_OP_ATTENTION_BF16, {2, 300, 8, 2, 64, 0}, LT_DTYPE_F32, 0, TB},
    {LT_OP_ATTENTION_BF16, {1, 257, 4, 1, 128, 100}, LT_DTYPE_F32, 2 | 1, TB},
    /* a group of 6 heads a kv head (the CPU kernel's tasks take 4 at a time, then 2), and
     * rows whose D = dO . O no longer fit its per-task buffer (8 x 1100 > 8192) */
    {LT_OP_ATTENTION_BF16, {2, 160, 12, 2, 64, 0}, LT_DTYPE_F32, 2 | 1, TB},
    {LT_OP_ATTENTION_BF16, {1, 1100, 8, 1, 32, 0}, LT_DTYPE_F32, 0, TB},
    /* swiglu {n}: below and above the OpenMP threshold */
    {LT_OP_SWIGLU, {1}, LT_DTYPE_F32, 0, 1e-6},
    {LT_OP_SWIGLU, {1001}, LT_DTYPE_F32, 0, 1e-6},
    {LT_OP_SWIGLU, {70001}, LT_DTYPE_F32, 0, 1e-6},
    /* cross-entropy {N, V} */
    {LT_OP_CROSS_ENTROPY, {1, 1}, LT_DTYPE_F32, 0, 1e-5},
    {LT_OP_CROSS_ENTROPY, {7, 13}, LT_DTYPE_F32, 1, 1e-5},
    {LT_OP_CROSS_ENTROPY, {37, 5003}, LT_DTYPE_F32, 0, 1e-5},
    /* embedding {N, C, V} */
    {LT_OP_EMBEDDING, {1, 1, 1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_EMBEDDING, {19, 24, 7}, LT_DTYPE_F32, 0, 0},
    /* optimizer, reductions, elementwise {n} */
    {LT_OP_ADAMW, {1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ADAMW, {4099}, LT_DTYPE_F32, 0, 0},
    {LT_OP_SUMSQ, {1}, LT_DTYPE_F32, 0, 1e-12},
    {LT_OP_SUMSQ, {100003}, LT_DTYPE_F32, 0, 1e-12},
    {LT_OP_ALL_FINITE, {1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ALL_FINITE, {1000}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ALL_FINITE, {1000}, LT_DTYPE_F32, 1, 0},
    {LT_OP_ALL_FINITE, {1001}, LT_DTYPE_F32, 2, 0},
    {LT_OP_SCALE, {1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_SCALE, {5000}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ADD, {3}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ADD, {70001}, LT_DTYPE_F32, 0, 0},
    {LT_OP_DROPOUT_MASK, {1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_DROPOUT_MASK, {999}, LT_DTYPE_F32, 0, 0},
    {LT_OP_GATHER_ROWS, {1, 1, 1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_GATHER_ROWS, {11, 7, 5}, LT_DTYPE_F32, 0, 0},
    {LT_OP_SCATTER_ROWS, {11, 7, 5}, LT_DTYPE_F32, 0, 0},
    /* inference: attention over a KV cache {N, pos0, NH, NKV, HD, window}: one token after a
     * long prefix (decode), a prefill, GQA, a sliding window, odd head dims */
    {LT_OP_ATTENTION_KV, {1, 0, 1, 1, 2, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV, {1, 40, 9, 3, 64, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV, {13, 5, 4, 2, 10, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV, {9, 30, 6, 2, 32, 7}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV_F16, {1, 40, 9, 3, 64, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV_F16, {13, 5, 4, 2, 10, 0}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ATTENTION_KV_F16, {9, 30, 6, 2, 32, 7}, LT_DTYPE_F32, 0, TF},
    {LT_OP_ADD_BIAS, {1, 1}, LT_DTYPE_F32, 0, 0},
    {LT_OP_ADD_BIAS, {5, 33}, LT_DTYPE_F32, 0, 0},
    {LT_OP_SCALE_ROWS, {5, 33}, LT_DTYPE_F32, 0, 0},
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

/* Runs the table on be at the current dispatch level; returns the failing rows. */
static int run_table(const lt_backend *be, const char *label, int quiet) {
    int failed = 0;
    for (int i = 0; i < N_CASES; i++) {
        const tcase *c = &k_cases[i];
        if (!lt_backend_supports(be, c->op, c->dt)) {
            printf("  %-6s %-14s not supported by this backend\n", label, lt_op_name(c->op));
            continue;
        }
        /* 8-bit activations (qact) are the CPU backend's (qdot.h); a device backend computes
         * the fp32 product for such a job, which the qact rows do not compare with */
        if (c->op == LT_OP_MATMUL_W && (c->variant & (8 | 16)) && strcmp(be->name, "cpu") &&
            strcmp(be->name, "planted")) {
            printf("  %-6s %-14s quantized activations: not on this backend\n", label,
                   lt_op_name(c->op));
            continue;
        }
        result r;
        memset(&r, 0, sizeof r);
        runner run = runner_of(c->op);
        run(be, c, &r, 0);
        lt_cpu_level lvl = lt_cpu_max_level();
        lt_cpu_set_max_level(LT_CPU_LEVEL_BASELINE); /* the oracle: scalar everything */
        run(lt_backend_ref(), c, &r, 1);
        lt_cpu_set_max_level(lvl);
        /* a device backend may lack a storage format (reported, not run); the CPU backend
         * must have every one */
        const int host = !strcmp(be->name, "cpu") || !strcmp(be->name, "planted");
        if (!host && r.st_got == LT_ERR_UNSUPPORTED && r.st_want == LT_OK) {
            printf("  %-6s %-13s not supported by this backend: %s\n", label, lt_op_name(c->op),
                   lt_errmsg());
            result_free(&r);
            continue;
        }
        /* exact rows are bit-exact on the CPU; a device contracts a*b+c into FMAs: 1e-6 */
        const double tol = c->tol == 0 && !host ? 1e-6 : c->tol;
        int bad = r.st_got != r.st_want;
        double worst = 0;
        const char *wname = "";
        for (int k = 0; k < r.n; k++) {
            double e = rel_err(r.o[k].got, r.o[k].want, r.o[k].n);
            if (tol == 0 && memcmp(r.o[k].got, r.o[k].want, sizeof(float) * (size_t)r.o[k].n))
                e = e > 0 ? e : 1e-30, bad = 1;
            if (!(e <= tol)) bad = 1;
            if (!(e <= worst)) worst = e, wname = r.o[k].name;
        }
        double xe = fabs(r.extra_got - r.extra_want) / fmax(fabs(r.extra_want), 1e-30);
        if (!(xe <= tol)) bad = 1;
        if (xe > worst) worst = xe, wname = "scalar";
        char shape[96];
        snprintf(shape, sizeof shape, "%d,%d,%d,%d,%d,%d", c->d[0], c->d[1], c->d[2], c->d[3],
                 c->d[4], c->d[5]);
        const int wop = c->op == LT_OP_MATMUL_W || c->op == LT_OP_WEIGHT_F32 ||
                        c->op == LT_OP_WEIGHT_BF16;
        if (!quiet || bad)
            printf("  %-6s %-13s %-5s v%-2d [%s] worst %.2e (%s) tol %.0e %s\n", label,
                   lt_op_name(c->op), c->variant & 1 && wop ? "NF4" : lt_dtype_name(c->dt),
                   c->variant, shape, worst, wname, tol, bad ? "FAIL" : "ok");
        failed += bad;
        result_free(&r);
    }
    return failed;
}

/* ---- a planted defect: the table must catch each ---------------------------------------- */
static lt_backend_ops planted_ops;
static void bad_rmsnorm_bwd(const lt_backend *be, float *dinp, float *dw, const float *dout,
                            const float *inp, const float *w, const float *rstd, int N, int C) {
    lt_backend_cpu()->op->rmsnorm_bwd(lt_backend_cpu(), dinp, NULL, dout, inp, w, rstd, N, C);
    (void)dw; /* forgets the weight gradient */
}
static void bad_swiglu_bwd(const lt_backend *be, float *dgate, float *dup, const float *dout,
                           const float *gate, const float *up, int64_t n) {
    /* adds instead of writing */
    float *tg = malloc(sizeof(float) * (size_t)n), *tu = malloc(sizeof(float) * (size_t)n);
    lt_backend_cpu()->op->swiglu_bwd(lt_backend_cpu(), tg, tu, dout, gate, up, n);
    for (int64_t i = 0; i < n; i++)
        dgate[i] += tg[i], dup[i] += tu[i];
    free(tg), free(tu);
}
static void bad_dropout(const lt_backend *be, float *mask, int64_t n, float p, uint64_t seed) {
    lt_backend_cpu()->op->dropout_mask(lt_backend_cpu(), mask, n, p, seed + 1); /* other stream */
}

int main(void) {
    const lt_backend *backends[2] = {lt_backend_cpu(), NULL};
    int nb = 1;
    /* the CUDA backend when built with it and a GPU is here (tests/backend/test_cuda_present.py
     * makes its absence on a GPU machine an error); the CPU dispatch level does not concern it */
    lt_backend *cuda = NULL;
    if (lt_backend_cuda_create(0, &cuda) == LT_OK) backends[nb++] = cuda;
    else printf("no CUDA backend here: %s\n", lt_errmsg());
    const lt_cpu_level top = lt_cpu_level_detected();
    printf("%d cases; oracle: %s at the baseline level\n", N_CASES, lt_backend_ref()->name);
    for (int b = 0; b < nb; b++) {
        const int last = backends[b] == cuda ? (int)LT_CPU_LEVEL_BASELINE : (int)top;
        for (int lvl = LT_CPU_LEVEL_BASELINE; lvl <= last; lvl++) {
            CHECK_OK(lt_cpu_set_max_level((lt_cpu_level)lvl));
            char label[32];
            snprintf(label, sizeof label, "%s/%s", backends[b]->name,
                     backends[b] == cuda ? "device" : lt_cpu_level_name((lt_cpu_level)lvl));
            printf("%s:\n", label);
            int f = run_table(backends[b], backends[b]->name, 0);
            CHECK(f == 0, "%s: %d of %d cases differ from the reference", label, f, N_CASES);
        }
        lt_cpu_set_max_level(top);
    }
    /* the table can fail: three planted defects, each must fail its rows */
    planted_ops = *lt_backend_cpu()->op;
    planted_ops.rmsnorm_bwd = bad_rmsnorm_bwd;
    planted_ops.swiglu_bwd = bad_swiglu_bwd;
    planted_ops.dropout_mask = bad_dropout;
    const lt_backend planted = {"planted", &planted_ops, NULL, 0, NULL};
    printf("planted defects (rmsnorm dw dropped, swiglu_bwd adds, dropout stream shifted):\n");
    int f = run_table(&planted, "plant", 1);
    /* 3 rmsnorm rows, 3 swiglu rows, and the 999-element dropout row: the shifted stream's
     * first element happens to equal the true one (a fixed seed: always so), so the 1-element
     * row passes */
    CHECK(f == 3 + 3 + 1, "planted backend: %d failing rows, expected 7", f);
    /* unsupported ops are reported, not run */
    lt_backend_ops none = *lt_backend_cpu()->op;
    none.dora_bwd = NULL;
    none.supports_dtype = NULL;
    const lt_backend partial = {"partial", &none, NULL, 0, NULL};
    CHECK(!lt_backend_supports(&partial, LT_OP_DORA, LT_DTYPE_F32), "NULL entry = unsupported");
    CHECK(!lt_backend_supports(&partial, LT_OP_MATMUL_W, LT_DTYPE_F32), "no dtype check = none");
    CHECK(lt_backend_supports(lt_backend_cpu(), LT_OP_MATMUL_W, LT_DTYPE_Q4_K), "cpu reads Q4_K");
    CHECK(!lt_backend_supports(lt_backend_cpu(), LT_OP_MATMUL_W, LT_DTYPE_I32), "not I32");
    lt_backend_cuda_free(cuda);
    CHECK(lt_backend_by_name("cpu") == lt_backend_cpu() && lt_backend_by_name("ref") == lt_backend_ref() &&
              !lt_backend_by_name("cuda-none"),
          "lookup by name");
    LT_TEST_END();
}
