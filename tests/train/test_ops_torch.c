/* test_ops_torch.c - the CPU training ops against PyTorch / transformers / PEFT goldens.
 *
 * tests/data/ops/manifest.json + <case>.bin are written by tools/gen_ops_goldens.py (inputs,
 * R, torch's outputs and autograd gradients of L = sum(out * R)); torch is not needed here.
 * Tolerance (fp32 vs fp32, different summation orders): max |ours - torch| <=
 * GOLD_TOL * max |torch| per tensor, GOLD_TOL = 1e-5 unless a check states otherwise. */
#include <jansson.h>
#include <stdint.h>

#include "loratune/ops.h"
#include "lt_test.h"

#define GOLD_TOL 1e-5

static json_t *g_cases;

typedef struct {
    const char *name;
    json_t *params, *tensors;
    float *data;
    int64_t nfloats;
} gcase;

static int load_case(const char *name, gcase *c) {
    memset(c, 0, sizeof *c);
    c->name = name;
    json_t *e = json_object_get(g_cases, name);
    CHECK(e != NULL, "golden case '%s' missing from manifest", name);
    if (!e) return 0;
    c->params = json_object_get(e, "params");
    c->tensors = json_object_get(e, "tensors");
    const char *fn = json_string_value(json_object_get(e, "file"));
    if (!fn) return 1;
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/ops/%s", fn);
    char *buf = NULL;
    size_t len = 0;
    lt_status st = lt_file_read_all(lt_srcpath(rel), &buf, &len);
    CHECK(st == LT_OK && len % 4 == 0, "reading %s: %s", rel, lt_errmsg());
    if (st != LT_OK) return 0;
    c->data = (float *)buf; /* malloc'd: suitably aligned for float */
    c->nfloats = (int64_t)(len / 4);
    return 1;
}
static void free_case(gcase *c) {
    free(c->data);
}

static double pnum(const gcase *c, const char *key) {
    json_t *v = json_object_get(c->params, key);
    CHECK(json_is_number(v), "%s: param '%s' missing", c->name, key);
    return v ? json_number_value(v) : 0.0;
}

/* Tensor `key` of case c; checks it has n elements. Aborts on a broken manifest (it is ours). */
static float *tens(const gcase *c, const char *key, int64_t n) {
    json_t *t = json_object_get(c->tensors, key);
    json_t *shape = json_object_get(t, "shape");
    int64_t off = json_integer_value(json_object_get(t, "offset")), numel = 1;
    size_t i;
    json_t *d;
    json_array_foreach(shape, i, d) numel *= json_integer_value(d);
    if (!t || numel != n || off < 0 || off + n > c->nfloats) {
        fprintf(stderr, "FATAL: %s/%s: missing or %lld elements, wanted %lld\n", c->name, key,
                (long long)numel, (long long)n);
        exit(2);
    }
    return c->data + off;
}
static int32_t *ints(const gcase *c, const char *key, int64_t n) { /* stored as f32 */
    float *f = tens(c, key, n);
    int32_t *o = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        o[i] = (int32_t)f[i];
    return o;
}

static void cmp(const gcase *c, const char *what, const float *ours, const float *ref, int64_t n,
                double tol) {
    double mx = 0.0, err = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        double e = fabs((double)ours[i] - ref[i]);
        if (!(e <= err)) err = e, at = i; /* NaN counts as the worst */
    }
    CHECK(err <= tol * mx,
          "%s %s: max |ours - torch| %.3g at %lld (ours %.9g, torch %.9g), "
          "max |torch| %.3g, tol %.1g",
          c->name, what, err, (long long)at, ours[at], ref[at], mx, tol);
}
static float *zeros(int64_t n) {
    return calloc((size_t)n, sizeof(float));
}

static void test_matmul(void) {
    gcase c;
    if (!load_case("matmul", &c)) return;
    int N = (int)pnum(&c, "N"), C = (int)pnum(&c, "C"), OC = (int)pnum(&c, "OC");
    float *x = tens(&c, "x", (int64_t)N * C), *w = tens(&c, "w", (int64_t)OC * C);
    float *b = tens(&c, "bias", OC), *R = tens(&c, "R", (int64_t)N * OC);
    float *out = zeros((int64_t)N * OC), *dx = zeros((int64_t)N * C), *dw = zeros((int64_t)OC * C);
    float *db = zeros(OC);
    lt_op_matmul_fwd(out, x, w, b, N, C, OC);
    cmp(&c, "out", out, tens(&c, "out", (int64_t)N * OC), (int64_t)N * OC, GOLD_TOL);
    lt_op_matmul_bwd(dx, dw, db, R, x, w, N, C, OC);
    cmp(&c, "dx", dx, tens(&c, "dx", (int64_t)N * C), (int64_t)N * C, GOLD_TOL);
    cmp(&c, "dw", dw, tens(&c, "dw", (int64_t)OC * C), (int64_t)OC * C, GOLD_TOL);
    cmp(&c, "dbias", db, tens(&c, "dbias", OC), OC, GOLD_TOL);
    free(out), free(dx), free(dw), free(db), free_case(&c);
}

static void test_embedding(void) {
    gcase c;
    if (!load_case("embedding", &c)) return;
    int N = (int)pnum(&c, "N"), C = (int)pnum(&c, "C"), V = (int)pnum(&c, "V");
    int32_t *tok = ints(&c, "tokens", N);
    float *wte = tens(&c, "wte", (int64_t)V * C), *R = tens(&c, "R", (int64_t)N * C);
    float *out = zeros((int64_t)N * C), *dwte = zeros((int64_t)V * C);
    CHECK_OK(lt_op_embedding_fwd(out, tok, wte, N, C, V));
    cmp(&c, "out", out, tens(&c, "out", (int64_t)N * C), (int64_t)N * C, 0.0);
    lt_op_embedding_bwd(dwte, R, tok, N, C);
    cmp(&c, "dwte", dwte, tens(&c, "dwte", (int64_t)V * C), (int64_t)V * C, GOLD_TOL);
    free(tok), free(out), free(dwte), free_case(&c);
}

static void test_rmsnorm(void) {
    gcase c;
    if (!load_case("rmsnorm", &c)) return;
    int N = (int)pnum(&c, "N"), C = (int)pnum(&c, "C");
    float eps = (float)pnum(&c, "eps");
    float *x = tens(&c, "x", (int64_t)N * C), *w = tens(&c, "w", C),
          *R = tens(&c, "R", (int64_t)N * C);
    float *out = zeros((int64_t)N * C), *rstd = zeros(N), *dx = zeros((int64_t)N * C),
          *dw = zeros(C);
    lt_op_rmsnorm_fwd(out, rstd, x, w, N, C, eps);
    cmp(&c, "out", out, tens(&c, "out", (int64_t)N * C), (int64_t)N * C, GOLD_TOL);
    lt_op_rmsnorm_bwd(dx, dw, R, x, w, rstd, N, C);
    cmp(&c, "dx", dx, tens(&c, "dx", (int64_t)N * C), (int64_t)N * C, GOLD_TOL);
    cmp(&c, "dw", dw, tens(&c, "dw", C), C, GOLD_TOL);
    free(out), free(rstd), free(dx), free(dw), free_case(&c);
}

static void test_rope(void) {
    gcase c;
    if (!load_case("rope", &c)) return;
    int N = (int)pnum(&c, "N"), NH = (int)pnum(&c, "NH"), HD = (int)pnum(&c, "HD");
    int n_pos = (int)pnum(&c, "n_pos");
    int64_t M = (int64_t)N * NH * HD;
    int32_t *pos = ints(&c, "pos", N);
    float *inv_freq = tens(&c, "inv_freq", HD / 2), *R = tens(&c, "R", M);
    float *cos_t = zeros((int64_t)n_pos * HD / 2), *sin_t = zeros((int64_t)n_pos * HD / 2);
    float *out = zeros(M), *dx = zeros(M);
    lt_rope_tables(cos_t, sin_t, inv_freq, n_pos, HD);
    const char *xs[2] = {"x", "x_il"}, *os[2] = {"out", "out_il"}, *ds[2] = {"dx", "dx_il"};
    for (int il = 0; il < 2; il++) {
        lt_op_rope_fwd(out, tens(&c, xs[il], M), pos, cos_t, sin_t, N, NH, HD, il);
        cmp(&c, os[il], out, tens(&c, os[il], M), M, GOLD_TOL);
        lt_op_rope_bwd(dx, R, pos, cos_t, sin_t, N, NH, HD, il);
        cmp(&c, ds[il], dx, tens(&c, ds[il], M), M, GOLD_TOL);
    }
    free(pos), free(cos_t), free(sin_t), free(out), free(dx), free_case(&c);
}

static void test_attention(const char *name) {
    gcase c;
    if (!load_case(name, &c)) return;
    int B = (int)pnum(&c, "B"), T = (int)pnum(&c, "T"), NH = (int)pnum(&c, "NH");
    int NKV = (int)pnum(&c, "NKV"), HD = (int)pnum(&c, "HD"), window = (int)pnum(&c, "window");
    int64_t MQ = (int64_t)B * T * NH * HD, MK = (int64_t)B * T * NKV * HD;
    int32_t *seq = ints(&c, "seq", (int64_t)B * T);
    float *q = tens(&c, "q", MQ), *k = tens(&c, "k", MK), *v = tens(&c, "v", MK);
    float *R = tens(&c, "R", MQ);
    float *out = zeros(MQ), *lse = zeros((int64_t)B * NH * T), *dq = zeros(MQ), *dk = zeros(MK),
          *dv = zeros(MK);
    lt_op_attention_fwd(out, lse, q, k, v, seq, B, T, NH, NKV, HD, window);
    cmp(&c, "out", out, tens(&c, "out", MQ), MQ, GOLD_TOL);
    cmp(&c, "lse", lse, tens(&c, "lse", (int64_t)B * NH * T), (int64_t)B * NH * T, GOLD_TOL);
    lt_op_attention_bwd(dq, dk, dv, R, q, k, v, out, lse, seq, B, T, NH, NKV, HD, window);
    cmp(&c, "dq", dq, tens(&c, "dq", MQ), MQ, GOLD_TOL);
    cmp(&c, "dk", dk, tens(&c, "dk", MK), MK, GOLD_TOL);
    cmp(&c, "dv", dv, tens(&c, "dv", MK), MK, GOLD_TOL);
    free(seq), free(out), free(lse), free(dq), free(dk), free(dv), free_case(&c);
}

static void test_swiglu(void) {
    gcase c;
    if (!load_case("swiglu", &c)) return;
    int64_t n = (int64_t)pnum(&c, "n");
    float *g = tens(&c, "gate", n), *u = tens(&c, "up", n), *R = tens(&c, "R", n);
    float *out = zeros(n), *dg = zeros(n), *du = zeros(n);
    lt_op_swiglu_fwd(out, g, u, n);
    cmp(&c, "out", out, tens(&c, "out", n), n, GOLD_TOL);
    lt_op_swiglu_bwd(dg, du, R, g, u, n);
    cmp(&c, "dgate", dg, tens(&c, "dgate", n), n, GOLD_TOL);
    cmp(&c, "dup", du, tens(&c, "dup", n), n, GOLD_TOL);
    free(out), free(dg), free(du), free_case(&c);
}

static void test_cross_entropy(void) {
    gcase c;
    if (!load_case("cross_entropy", &c)) return;
    int N = (int)pnum(&c, "N"), V = (int)pnum(&c, "V");
    int32_t *tgt = ints(&c, "targets", N);
    float *logits = tens(&c, "logits", (int64_t)N * V);
    float *dl = zeros((int64_t)N * V);
    lt_ce_stats st;
    CHECK_OK(lt_op_cross_entropy(dl, &st, logits, tgt, N, V, LT_IGNORE_INDEX, 0.0f));
    double mean = pnum(&c, "mean"), sum = pnum(&c, "sum");
    CHECK(st.count == (int64_t)pnum(&c, "count"), "cross_entropy count %lld", (long long)st.count);
    CHECK(fabs(st.mean - mean) <= GOLD_TOL * fabs(mean), "cross_entropy mean %.9g vs torch %.9g",
          st.mean, mean);
    /* torch's sum was taken in float64, ours accumulates in double: much tighter */
    CHECK(fabs(st.sum - sum) <= 1e-6 * fabs(sum), "cross_entropy sum %.12g vs torch %.12g", st.sum,
          sum);
    cmp(&c, "dlogits", dl, tens(&c, "dlogits", (int64_t)N * V), (int64_t)N * V, GOLD_TOL);
    free(tgt), free(dl), free_case(&c);
}

static void test_adamw(void) {
    gcase c;
    if (!load_case("adamw", &c)) return;
    int64_t n0 = (int64_t)pnum(&c, "n0"), n1 = (int64_t)pnum(&c, "n1");
    lt_adamw_cfg cfg = {(float)pnum(&c, "lr"), (float)pnum(&c, "beta1"), (float)pnum(&c, "beta2"),
                        (float)pnum(&c, "eps"), (float)pnum(&c, "weight_decay")};
    float max_norm = (float)pnum(&c, "max_norm");
    float *p0 = zeros(n0), *p1 = zeros(n1), *m0 = zeros(n0), *m1 = zeros(n1), *v0 = zeros(n0),
          *v1 = zeros(n1), *g0 = zeros(n0), *g1 = zeros(n1);
    memcpy(p0, tens(&c, "p0_init", n0), sizeof(float) * (size_t)n0);
    memcpy(p1, tens(&c, "p1_init", n1), sizeof(float) * (size_t)n1);
    json_t *norms = json_object_get(c.params, "norms");
    for (int s = 0; s < 3; s++) {
        char k0[16], k1[16];
        snprintf(k0, sizeof k0, "g0_%d", s), snprintf(k1, sizeof k1, "g1_%d", s);
        memcpy(g0, tens(&c, k0, n0), sizeof(float) * (size_t)n0);
        memcpy(g1, tens(&c, k1, n1), sizeof(float) * (size_t)n1);
        const float *bufs[2] = {g0, g1};
        int64_t ns[2] = {n0, n1};
        double norm = lt_op_global_norm(bufs, ns, 2);
        double tn = json_number_value(json_array_get(norms, (size_t)s));
        CHECK(fabs(norm - tn) <= GOLD_TOL * tn, "adamw step %d: grad norm %.9g vs torch %.9g", s,
              norm, tn);
        float coef = lt_op_clip_coef(norm, max_norm);
        lt_op_scale(g0, n0, coef), lt_op_scale(g1, n1, coef);
        lt_op_adamw_step(p0, g0, m0, v0, n0, &cfg, s + 1);
        lt_op_adamw_step(p1, g1, m1, v1, n1, &cfg, s + 1);
    }
    cmp(&c, "p0 after 3 steps", p0, tens(&c, "p0_final", n0), n0, GOLD_TOL);
    cmp(&c, "p1 after 3 steps", p1, tens(&c, "p1_final", n1), n1, GOLD_TOL);
    free(p0), free(p1), free(m0), free(m1), free(v0), free(v1), free(g0), free(g1), free_case(&c);
}

static void test_lora(const char *name, int dora) {
    gcase c;
    if (!load_case(name, &c)) return;
    int N = (int)pnum(&c, "N"), C = (int)pnum(&c, "C"), OC = (int)pnum(&c, "OC"),
        r = (int)pnum(&c, "r");
    float scale = lt_lora_scale((float)pnum(&c, "alpha"), r, (int)pnum(&c, "rslora"));
    double peft_scale = pnum(&c, "scaling");
    CHECK(fabs(scale - peft_scale) <= 1e-7 * peft_scale, "%s: scale %g vs peft %g", name, scale,
          peft_scale);
    float *x = tens(&c, "x", (int64_t)N * C), *W = tens(&c, "W", (int64_t)OC * C);
    float *bias = tens(&c, "bias", OC), *A = tens(&c, "A", (int64_t)r * C);
    float *Bm = tens(&c, "B", (int64_t)OC * r), *R = tens(&c, "R", (int64_t)N * OC);
    float *mask = pnum(&c, "dropout") != 0.0 ? tens(&c, "mask", (int64_t)N * C) : NULL;
    float *y = zeros((int64_t)N * OC), *xa = zeros((int64_t)N * r), *wn = zeros(OC);
    float *dx = zeros((int64_t)N * C), *dA = zeros((int64_t)r * C), *dB = zeros((int64_t)OC * r);
    float *dmag = zeros(OC), *scratch = zeros(LT_LORA_SCRATCH(N, C, OC, r));
    if (dora) {
        float *mag = tens(&c, "mag", OC);
        lt_op_dora_fwd(y, wn, xa, x, W, bias, A, Bm, mag, mask, N, C, OC, r, scale, scratch);
        cmp(&c, "weight norm", wn, tens(&c, "wnorm", OC), OC, GOLD_TOL);
        lt_op_dora_bwd(dx, dA, dB, dmag, R, x, W, A, Bm, mag, wn, xa, mask, N, C, OC, r, scale,
                       scratch);
        cmp(&c, "dmag", dmag, tens(&c, "dmag", OC), OC, GOLD_TOL);
    } else {
        lt_op_lora_fwd(y, xa, x, W, bias, A, Bm, mask, N, C, OC, r, scale, scratch);
        lt_op_lora_bwd(dx, dA, dB, R, x, W, A, Bm, xa, mask, N, C, OC, r, scale, scratch);
    }
    cmp(&c, "out", y, tens(&c, "out", (int64_t)N * OC), (int64_t)N * OC, GOLD_TOL);
    cmp(&c, "dx", dx, tens(&c, "dx", (int64_t)N * C), (int64_t)N * C, GOLD_TOL);
    cmp(&c, "dA", dA, tens(&c, "dA", (int64_t)r * C), (int64_t)r * C, GOLD_TOL);
    cmp(&c, "dB", dB, tens(&c, "dB", (int64_t)OC * r), (int64_t)OC * r, GOLD_TOL);
    free(y), free(xa), free(wn), free(dx), free(dA), free(dB), free(dmag), free(scratch);
    free_case(&c);
}

static void test_lora_init(void) {
    gcase c;
    if (!load_case("lora_init", &c)) return;
    int C = (int)pnum(&c, "C"), r = (int)pnum(&c, "r"), OC = (int)pnum(&c, "OC");
    double bound = pnum(&c, "bound");
    CHECK(fabs(lt_lora_init_bound(C) - bound) <= 1e-7 * bound, "init bound %.9g vs torch %.9g",
          lt_lora_init_bound(C), bound);
    float *A = zeros((int64_t)r * C), *B = zeros((int64_t)OC * r);
    lt_lora_init(A, B, r, C, OC, 1);
    float mx = 0.0f;
    for (int i = 0; i < r * C; i++)
        mx = fmaxf(mx, fabsf(A[i]));
    CHECK(mx <= bound && mx > 0.5 * bound, "init max |A| %g within torch's bound %g", mx, bound);
    CHECK(pnum(&c, "peft_A_maxabs") <= bound && pnum(&c, "peft_B_maxabs") == 0.0,
          "peft's own init agrees with the bound and zero B");
    free(A), free(B), free_case(&c);
}

int main(void) {
    json_error_t err;
    json_t *root =
        json_load_file(lt_srcpath("tests/data/ops/manifest.json"), JSON_REJECT_DUPLICATES, &err);
    CHECK(root != NULL, "manifest: %s (line %d)", err.text, err.line);
    if (!root) LT_TEST_END();
    g_cases = json_object_get(root, "cases");
    test_matmul();
    test_embedding();
    test_rmsnorm();
    test_rope();
    test_attention("attention");
    test_attention("attention_window");
    test_swiglu();
    test_cross_entropy();
    test_adamw();
    test_lora("lora", 0);
    test_lora("lora_dropout", 0);
    test_lora("dora", 1);
    test_lora("dora_dropout", 1);
    test_lora_init();
    json_decref(root);
    LT_TEST_END();
}
