/* test_forward_batch.c - continuous batching (lt_model_forward_batch, lt_generation) against the
 * unbatched path: a sequence decoded in a batch with others must give the very logits it gets
 * alone (lt_model_forward, one token at a time, its own cache), bit for bit.
 *
 * 1. The CPU backend's qact products (matmul_w, 8-bit activations, Q4_0 / Q4_1 / Q8_0 / Q4_K):
 *    N tokens at once (the 8- and 4-token tiles plus the remainder) vs each token alone:
 *    identical.
 * 2. SmolLM2-135M-Instruct Q4_1 (models/, lazy, as served), qact on and off: ten sequences
 *    with different prompts and adapters (none, the PEFT DoRA of tests/data/adapter/smol_dora,
 *    and a LoRA made of its A / B without the magnitudes) join the batch at different steps
 *    and leave at different steps, in an order where one adapter's rows are split (two runs);
 *    every row's logits at every step == its lone run's. Then the same with the prompts in the
 *    batch (prefill joining the decode steps): each prompt cut into chunks of 4 tokens, one per
 *    step, next to the others' decode rows and chunks; its logits == the lone run's, which ran
 *    the prompt in one piece.
 * 3. lt_generation stepped over lt_model_forward_batch for three prompts at once gives the ids
 *    lt_generate gives for each alone.
 * 4. Bad input: a position outside the context, a token outside the vocabulary, two rows on
 *    one cache, more rows than the workspace takes, a prompt chunk past the context or without
 *    its tokens: LT_ERR_ARG naming the row.
 * With an fp16 KV cache (LT_KV_F16, what `generate` and `serve` use) 2 and 3 run again: every
 * path rounds a key / value to fp16 when it stores it, so batched == alone stays bit for bit;
 * the lone runs also give their cache's pages above the prompt back after the prompt
 * (lt_kv_cache_release), which must not change what they compute. The fp16 attention is checked
 * at every dispatch level (the same bits) and against the fp32 one on the widened cache (the
 * same bits: widening is exact, the operations are the same). */
#include <math.h>
#include <stdint.h>

#include "backend/backend_internal.h"
#include "loratune/adapter.h"
#include "loratune/backend.h"
#include "loratune/hwinfo.h"
#include "loratune/model.h"
#include "loratune/quant.h"
#include "loratune/sampler.h"
#include "lt_test.h"

/* ---- 1. the kernels ------------------------------------------------------------------------ */
static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
}

static void check_kernels(void) {
    const lt_backend *be = lt_backend_cpu();
    const lt_dtype types[4] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0, LT_DTYPE_Q4_K};
    const int rows = 37, N = 15;                    /* tiles of 8 and 4, then 3 single rows */
    for (int cols = 512; cols <= 544; cols += 32) { /* 16 blocks of 32, and 17 (a tail block) */
        float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * N * cols);
        float *yb = malloc(sizeof(float) * N * rows), *y1 = malloc(sizeof(float) * rows);
        int64_t ns = lt_cpu_matmul_w_scratch_(be, cols);
        float *scratch = be->op->alloc(be, sizeof(float) * (size_t)ns);
        uint8_t *q = malloc((size_t)rows * cols * 2);
        for (int i = 0; i < rows * cols; i++)
            w[i] = frand();
        for (int i = 0; i < N * cols; i++)
            x[i] = frand() * 3.0f;
        for (int k = 0; k < (cols % 256 ? 3 : 4); k++) { /* Q4_K: super-blocks of 256 */
            const size_t rb = (size_t)lt_dtype_nbytes(types[k], cols);
            if (types[k] == LT_DTYPE_Q4_K) { /* random blocks, small positive scales */
                for (size_t i = 0; i < rb * rows; i++)
                    q[i] = (uint8_t)((frand() + 1.0f) * 127.0f);
                for (int r = 0; r < rows; r++)
                    for (int sb = 0; sb < cols / 256; sb++) {
                        uint8_t *blk = q + r * rb + sb * 144;
                        blk[0] = 0x00, blk[1] = 0x20; /* d = 2^-7 */
                        blk[2] = 0x00, blk[3] = 0x1c; /* dmin = 2^-8 */
                    }
            } else {
                for (int r = 0; r < rows; r++)
                    CHECK_OK(lt_quantize(types[k], w + r * cols, q + r * rb, cols));
            }
            lt_weight_view v = {.rows = rows, .cols = cols, .dtype = types[k], .data = q};
            for (int beta = 0; beta < 2; beta++) {
                for (int i = 0; i < N * rows; i++)
                    yb[i] = (float)i * 0.25f;
                lt_matmul_job jb = {&v, yb, (float)beta, 1, 0, 0};
                CHECK_OK(be->op->matmul_w(be, &jb, 1, x, N, scratch, ns));
                int same = 1;
                for (int t = 0; t < N; t++) {
                    for (int i = 0; i < rows; i++)
                        y1[i] = (float)(t * rows + i) * 0.25f;
                    lt_matmul_job j1 = {&v, y1, (float)beta, 1, 0, 0};
                    CHECK_OK(be->op->matmul_w(be, &j1, 1, x + t * cols, 1, scratch, ns));
                    same &= !memcmp(y1, yb + t * rows, sizeof(float) * rows);
                }
                CHECK(
                    same,
                    "%s, %d columns, beta %d: a token's qact product in a batch of %d differs from "
                    "alone",
                    lt_dtype_name(types[k]), cols, beta, N);
            }
        }
        be->op->free(be, scratch);
        free(q);
        free(w);
        free(x);
        free(yb);
        free(y1);
    }
}

/* attention_kv at every dispatch level: the same bits (the AVX2 one does the baseline's
 * operations 8 lanes wide), head dims with and without a tail; attention_kv_f16 at every level
 * == attention_kv on the cache widened from fp16; to_f16 at every level == lt_f32_to_f16 */
static void check_attention_levels(void) {
    const lt_backend *be = lt_backend_cpu();
    const int H = 9, KV = 3, n = 3, pos0 = 41, ctx = 64;
    for (int hd = 36; hd <= 64; hd += 28) {
        const int QD = H * hd, KD = KV * hd;
        float *q = malloc(sizeof(float) * n * QD), *k = malloc(sizeof(float) * ctx * KD);
        float *v = malloc(sizeof(float) * ctx * KD), *o1 = malloc(sizeof(float) * n * QD);
        float *o2 = malloc(sizeof(float) * n * QD);
        int64_t ns = be->op->attention_kv_scratch(be, ctx);
        float *sc = malloc(sizeof(float) * (size_t)ns);
        for (int i = 0; i < n * QD; i++)
            q[i] = frand();
        for (int i = 0; i < ctx * KD; i++)
            k[i] = frand(), v[i] = frand();
        lt_cpu_level was = lt_cpu_max_level();
        be->op->attention_kv(be, o1, q, k, v, n, pos0, H, KV, hd, 0, sc, ns);
        CHECK_OK(lt_cpu_set_max_level(LT_CPU_LEVEL_BASELINE));
        be->op->attention_kv(be, o2, q, k, v, n, pos0, H, KV, hd, 0, sc, ns);
        CHECK_OK(lt_cpu_set_max_level(was));
        CHECK(!memcmp(o1, o2, sizeof(float) * n * QD),
              "head dim %d: attention_kv at level %s differs from the baseline's", hd,
              lt_cpu_level_name(lt_cpu_level_active()));
        /* fp16: k, v rounded (to_f16 at this level and the baseline's: lt_f32_to_f16), the
         * fp32 op on the widened values as the reference */
        uint16_t *hk = malloc(2 * (size_t)ctx * KD), *hv = malloc(2 * (size_t)ctx * KD);
        uint16_t *hk2 = malloc(2 * (size_t)ctx * KD);
        float *o3 = malloc(sizeof(float) * n * QD);
        for (int i = 0; i < ctx * KD; i++)
            k[i] *= 3.0f; /* some values past fp16's precision at every exponent */
        be->op->to_f16(be, hk, k, (int64_t)ctx * KD - 3); /* a tail of 5 past the 8-wide loop */
        hk[ctx * KD - 3] = lt_f32_to_f16(k[ctx * KD - 3]);
        hk[ctx * KD - 2] = lt_f32_to_f16(k[ctx * KD - 2]);
        hk[ctx * KD - 1] = lt_f32_to_f16(k[ctx * KD - 1]);
        int bad = -1;
        for (int i = 0; i < ctx * KD && bad < 0; i++)
            if (hk[i] != lt_f32_to_f16(k[i])) bad = i;
        CHECK(bad < 0, "to_f16 at level %s: element %d (%.9g) gives 0x%04x, lt_f32_to_f16 0x%04x",
              lt_cpu_level_name(lt_cpu_level_active()), bad, bad < 0 ? 0.0 : k[bad],
              bad < 0 ? 0 : hk[bad], bad < 0 ? 0 : lt_f32_to_f16(k[bad]));
        CHECK_OK(lt_cpu_set_max_level(LT_CPU_LEVEL_BASELINE));
        be->op->to_f16(be, hk2, k, (int64_t)ctx * KD);
        be->op->to_f16(be, hv, v, (int64_t)ctx * KD);
        CHECK_OK(lt_cpu_set_max_level(was));
        CHECK(!memcmp(hk, hk2, 2 * (size_t)ctx * KD), "to_f16: the levels differ");
        for (int i = 0; i < ctx * KD; i++)
            k[i] = lt_f16_to_f32(hk[i]), v[i] = lt_f16_to_f32(hv[i]);
        be->op->attention_kv(be, o1, q, k, v, n, pos0, H, KV, hd, 0, sc, ns);
        be->op->attention_kv_f16(be, o2, q, hk, hv, n, pos0, H, KV, hd, 0, sc, ns);
        CHECK_OK(lt_cpu_set_max_level(LT_CPU_LEVEL_BASELINE));
        be->op->attention_kv_f16(be, o3, q, hk, hv, n, pos0, H, KV, hd, 0, sc, ns);
        CHECK_OK(lt_cpu_set_max_level(was));
        CHECK(!memcmp(o1, o2, sizeof(float) * n * QD),
              "head dim %d: attention_kv_f16 at level %s differs from attention_kv on the "
              "widened cache", hd, lt_cpu_level_name(lt_cpu_level_active()));
        CHECK(!memcmp(o2, o3, sizeof(float) * n * QD),
              "head dim %d: attention_kv_f16 at level %s differs from the baseline's", hd,
              lt_cpu_level_name(lt_cpu_level_active()));
        free(hk), free(hv), free(hk2), free(o3);
        free(q), free(k), free(v), free(o1), free(o2), free(sc);
    }
}

/* ---- 2. batched decode == alone ------------------------------------------------------------ */
#define NSEQ 10
#define CTX 64
#define STEPS 10

typedef struct {
    int np;      /* prompt length */
    int join;    /* the batch step at which it joins */
    int len;     /* decode steps it stays */
    int adapter; /* 0 none, 1 DoRA, 2 LoRA */
    int32_t prompt[12];
} seq;

static const seq seqs[NSEQ] = {
    {5, 0, 8, 1, {1, 504, 2115, 314, 11}},
    {9, 0, 10, 0, {1, 17, 29, 31, 411, 2810, 4005, 288, 49}},
    {3, 1, 6, 2, {1, 3000, 7}},
    {7, 2, 8, 1, {1, 44, 55, 66, 77, 88, 99}},
    {4, 3, 4, 0, {1, 12000, 121, 9}},
    {11, 4, 5, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
    {6, 0, 7, 0, {1, 900, 901, 902, 903, 904}},
    {2, 1, 7, 1, {1, 31000}},
    {8, 1, 6, 2, {1, 5, 50, 500, 5000, 6, 60, 600}},
    {5, 2, 5, 0, {1, 8, 88, 888, 8888}},
};

static int argmax(const float *l, int V) {
    int b = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static lt_kv_type kvt = LT_KV_F32; /* the caches of part 2 and 3 */

/* lone: seq's logits after its prompt, then after each of its len greedy tokens fed alone */
static void lone(const lt_model *m, const lt_model_delta *d, const seq *s, int qact, float *out) {
    const int V = m->config.vocab_size;
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create_typed(m, CTX, 8, kvt, &kv));
    if (!kv) return;
    CHECK(lt_kv_cache_type(kv) == kvt, "lt_kv_cache_type");
    lt_kv_cache_set_qact(kv, qact);
    CHECK_OK(lt_model_forward(m, d, kv, s->prompt, s->np, 0, out, 0));
    if (kvt == LT_KV_F16) lt_kv_cache_release(kv, s->np); /* pages above the prompt: none used */
    for (int k = 0; k < s->len; k++) {
        int32_t id = argmax(out + (int64_t)k * V, V);
        CHECK_OK(lt_model_forward(m, d, kv, &id, 1, s->np + k, out + (int64_t)(k + 1) * V, 0));
    }
    lt_kv_cache_free(kv);
}

/* in_batch 0: each joining sequence's prompt runs alone through its cache (lt_model_forward) and
 * it decodes in the batch from the next step. in_batch 1: the prompt joins the batch steps too,
 * cut into chunks of CHUNK tokens (one per step, no logits but for the last), next to the other
 * sequences' decode rows and chunks; its logits must still equal the lone run's, which ran the
 * prompt in one piece. */
#define CHUNK 4
static void check_batched(const lt_model *m, const lt_model_delta *deltas[3], int qact,
                          int in_batch, float *const ref[NSEQ]) {
    const int V = m->config.vocab_size;
    float *got[NSEQ];
    lt_kv_cache *kv[NSEQ] = {0}, *ws = NULL;
    int at[NSEQ] = {0}; /* decode steps done */
    int pf[NSEQ] = {0}; /* prompt tokens run */
    for (int i = 0; i < NSEQ; i++) {
        got[i] = calloc((size_t)(seqs[i].len + 1) * V, sizeof(float));
        CHECK_OK(lt_kv_cache_create_typed(m, CTX, 8, kvt, &kv[i]));
        if (kv[i]) lt_kv_cache_set_qact(kv[i], qact);
    }
    CHECK_OK(lt_kv_cache_create(m, CTX, NSEQ * CHUNK, &ws));
    if (ws) lt_kv_cache_set_qact(ws, qact);
    lt_batch_row rows[NSEQ];
    int who[NSEQ], done_pf[NSEQ];
    float *logits = malloc(sizeof(float) * (size_t)NSEQ * V);
    int max_rows = 0, steps = 0, mixed = 0;
    for (int step = 0; ws && step < STEPS + 12; step++) {
        /* joins: the prompt through the request's own cache (as the server's prefill) */
        for (int i = 0; i < NSEQ && !in_batch; i++)
            if (seqs[i].join == step && kv[i]) {
                CHECK_OK(lt_model_forward(m, deltas[seqs[i].adapter], kv[i], seqs[i].prompt,
                                          seqs[i].np, 0, got[i], 0));
                pf[i] = seqs[i].np;
            }
        int n = 0, chunks = 0, decodes = 0;
        /* rows in the order 0, 2, 1, 3, 4, 5...: LoRA rows (2, 5) and DoRA rows (0, 3) end up
         * in runs of their own and split */
        static const int order[NSEQ] = {0, 2, 1, 3, 5, 4, 6, 7, 8, 9};
        for (int o = 0; o < NSEQ; o++) {
            int i = order[o];
            if (seqs[i].join > step || at[i] >= seqs[i].len || !kv[i]) continue;
            done_pf[n] = 0;
            if (pf[i] < seqs[i].np) { /* a chunk of its prompt */
                int c = seqs[i].np - pf[i] < CHUNK ? seqs[i].np - pf[i] : CHUNK;
                rows[n] = (lt_batch_row){.kv = kv[i],
                                         .delta = deltas[seqs[i].adapter],
                                         .pos = pf[i],
                                         .n = c,
                                         .tokens = seqs[i].prompt + pf[i],
                                         .no_logits = pf[i] + c < seqs[i].np};
                if (c == 1) rows[n].token = seqs[i].prompt[pf[i]];
                pf[i] += c;
                done_pf[n] = pf[i] == seqs[i].np;
                chunks++;
            } else {
                rows[n] = (lt_batch_row){.kv = kv[i],
                                         .delta = deltas[seqs[i].adapter],
                                         .token = argmax(got[i] + (int64_t)at[i] * V, V),
                                         .pos = seqs[i].np + at[i]};
                decodes++;
            }
            who[n++] = i;
        }
        if (!n) continue;
        CHECK_OK(lt_model_forward_batch(m, ws, rows, n, logits));
        for (int r = 0, k = 0; r < n; r++) {
            int i = who[r];
            if (rows[r].no_logits) continue;
            if (!done_pf[r]) at[i]++; /* a decode row; else the prompt's logits: got[i][0] */
            memcpy(got[i] + (int64_t)at[i] * V, logits + (int64_t)k++ * V, sizeof(float) * V);
        }
        if (n > max_rows) max_rows = n;
        mixed += chunks && decodes;
        steps++;
    }
    for (int i = 0; i < NSEQ; i++) {
        CHECK(at[i] == seqs[i].len, "seq %d: %d steps of %d", i, at[i], seqs[i].len);
        int bad = -1;
        for (int k = 0; k <= seqs[i].len && bad < 0; k++)
            if (memcmp(got[i] + (int64_t)k * V, ref[i] + (int64_t)k * V, sizeof(float) * V))
                bad = k;
        if (bad >= 0) {
            float md = 0;
            for (int j = 0; j < V; j++)
                md = fmaxf(md, fabsf(got[i][(int64_t)bad * V + j] - ref[i][(int64_t)bad * V + j]));
            CHECK(0,
                  "%s cache, qact %d, prompts %s, seq %d (adapter %d): batched logits differ "
                  "from alone at step %d (max |diff| %g)",
                  kvt == LT_KV_F16 ? "fp16" : "fp32", qact, in_batch ? "in the batch" : "alone",
                  i, seqs[i].adapter, bad, md);
        }
    }
    printf("%s cache, qact %d, prompts %s: %d sequences, %d batch steps of up to %d entries (%d "
           "with prompt chunks and decode rows together): logits %s\n",
           kvt == LT_KV_F16 ? "fp16" : "fp32", qact,
           in_batch ? "in the batch in chunks of 4" : "alone", NSEQ, steps, max_rows,
           mixed, lt_t_fail ? "checked (see failures)" : "bit-identical to alone");
    CHECK(max_rows >= 9, "the schedule batched %d rows at most", max_rows);
    CHECK(!in_batch || mixed >= 3, "only %d steps mixed prompt chunks and decode rows", mixed);
    for (int i = 0; i < NSEQ; i++) {
        free(got[i]);
        lt_kv_cache_free(kv[i]);
    }
    free(logits);
    lt_kv_cache_free(ws);
}

/* the lone runs once per qact; prompts in the batch with qact on only (the server's setting:
 * the qact-off products are the slow fp32 ones, and their rows are independent the same way) */
static void check_batched_all(const lt_model *m, const lt_model_delta *deltas[3], int qact) {
    const int V = m->config.vocab_size;
    float *ref[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        ref[i] = calloc((size_t)(seqs[i].len + 1) * V, sizeof(float));
        lone(m, deltas[seqs[i].adapter], &seqs[i], qact, ref[i]);
    }
    check_batched(m, deltas, qact, 0, ref);
    if (qact) check_batched(m, deltas, qact, 1, ref);
    for (int i = 0; i < NSEQ; i++)
        free(ref[i]);
}

/* ---- 3. lt_generation over batched steps == lt_generate --------------------------------- */
static void check_generation(const lt_model *m, const lt_model_delta *deltas[3]) {
    const int V = m->config.vocab_size, NG = 3, MAXT = 12;
    lt_kv_cache *kv[3] = {0};
    lt_generation *g[3] = {0};
    lt_sampler *smp[3] = {0};
    lt_sampler_params sp = {0};
    int32_t next[3];
    int pos[3], more[3];
    float *logits = malloc(sizeof(float) * 3 * (size_t)V);
    lt_generate_opts o = {.max_tokens = MAXT};
    for (int i = 0; i < NG; i++) {
        CHECK_OK(lt_kv_cache_create_typed(m, CTX, 8, kvt, &kv[i]));
        lt_kv_cache_set_qact(kv[i], 1);
        CHECK_OK(lt_sampler_create(&sp, V, &smp[i]));
        CHECK_OK(lt_generation_create(m, NULL, CTX, seqs[i].prompt, seqs[i].np, &o, &g[i]));
        CHECK_OK(lt_model_forward(m, deltas[seqs[i].adapter], kv[i], seqs[i].prompt, seqs[i].np, 0,
                                  logits, 0));
        CHECK_OK(lt_generation_step(g[i], smp[i], logits, &next[i], &pos[i], &more[i]));
    }
    for (int guard = 0; guard < 64; guard++) {
        lt_batch_row rows[3];
        int who[3], n = 0;
        for (int i = 0; i < NG; i++)
            if (more[i]) {
                rows[n] = (lt_batch_row){
                    .kv = kv[i], .delta = deltas[seqs[i].adapter], .token = next[i], .pos = pos[i]};
                who[n++] = i;
            }
        if (!n) break;
        CHECK_OK(lt_model_forward_batch(m, kv[who[0]], rows, n, logits));
        for (int r = 0; r < n; r++)
            CHECK_OK(lt_generation_step(g[who[r]], smp[who[r]], logits + (int64_t)r * V,
                                        &next[who[r]], &pos[who[r]], &more[who[r]]));
    }
    for (int i = 0; i < NG; i++) {
        int32_t *ids = NULL, *want = NULL;
        int n = 0, nw = 0;
        CHECK_OK(lt_generation_finish(g[i], &ids, &n));
        lt_kv_cache *k1 = NULL;
        lt_sampler *s1 = NULL;
        CHECK_OK(lt_kv_cache_create_typed(m, CTX, 8, kvt, &k1));
        lt_kv_cache_set_qact(k1, 1);
        CHECK_OK(lt_sampler_create(&sp, V, &s1));
        CHECK_OK(lt_generate(m, deltas[seqs[i].adapter], k1, NULL, s1, seqs[i].prompt, seqs[i].np,
                             &o, &want, &nw));
        CHECK(n == MAXT && nw == MAXT && ids && want && !memcmp(ids, want, sizeof(int32_t) * n),
              "generation %d: batched ids differ from lt_generate's", i);
        free(ids);
        free(want);
        lt_kv_cache_free(k1);
        lt_sampler_free(s1);
        lt_generation_free(g[i]);
        lt_sampler_free(smp[i]);
        lt_kv_cache_free(kv[i]);
    }
    free(logits);
}

/* 2b. a long prompt with an adapter, in one piece (lt_model_forward) vs in the batch in chunks
 * of 61 and 89 tokens next to another sequence's decode row: the same logits. The adapters'
 * low-rank products run row-wise (lt_matmul_job.rowwise); through BLAS their sums changed with
 * the number of rows (max |diff| ~1e-5, measured before the fix), which flipped a near tie of a
 * served greedy answer (tests/serve/test_serve_batch.py 1b). */
static void check_long_chunks(const lt_model *m, const lt_model_delta *deltas[3]) {
    enum { P = 150, C1 = 61 };
    const int V = m->config.vocab_size;
    int32_t ids[P];
    for (int i = 0; i < P; i++)
        ids[i] = 1 + (i * 7919) % 20000;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * 2 * V);
    for (int d = 1; d <= 2; d++) {
        lt_kv_cache *k1 = NULL, *k2 = NULL, *ko = NULL;
        CHECK_OK(lt_kv_cache_create_typed(m, 256, 256, kvt, &k1));
        CHECK_OK(lt_kv_cache_create_typed(m, 256, 256, kvt, &k2));
        CHECK_OK(lt_kv_cache_create_typed(m, 256, 1, kvt, &ko));
        if (!k1 || !k2 || !ko) break;
        lt_kv_cache_set_qact(k1, 1), lt_kv_cache_set_qact(k2, 1), lt_kv_cache_set_qact(ko, 1);
        CHECK_OK(lt_model_forward(m, deltas[d], k1, ids, P, 0, a, 0));
        CHECK_OK(lt_model_forward(m, NULL, ko, seqs[0].prompt, seqs[0].np, 0, NULL, 0));
        lt_batch_row rows[2] = {
            {.kv = ko, .token = 7, .pos = seqs[0].np},
            {.kv = k2, .delta = deltas[d], .pos = 0, .n = C1, .tokens = ids, .no_logits = 1}};
        CHECK_OK(lt_model_forward_batch(m, k2, rows, 2, b));
        rows[1] = (lt_batch_row){.kv = k2, .delta = deltas[d], .pos = C1, .n = P - C1,
                                 .tokens = ids + C1};
        rows[0].token = 8, rows[0].pos++;
        CHECK_OK(lt_model_forward_batch(m, k2, rows, 2, b));
        float md = 0;
        for (int i = 0; i < V; i++)
            md = fmaxf(md, fabsf(a[i] - b[V + i]));
        CHECK(!memcmp(a, b + V, sizeof(float) * V),
              "%s cache, adapter %d: a %d-token prompt in chunks of %d + %d in the batch differs "
              "from it in one piece (max |diff| %g)",
              kvt == LT_KV_F16 ? "fp16" : "fp32", d, P, C1, P - C1, md);
        lt_kv_cache_free(k1), lt_kv_cache_free(k2), lt_kv_cache_free(ko);
    }
    free(a), free(b);
}

/* ---- 4. errors ---------------------------------------------------------------------------- */
static void check_errors(const lt_model *m) {
    lt_kv_cache *a = NULL, *b = NULL, *ws = NULL;
    CHECK_OK(lt_kv_cache_create(m, 16, 4, &a));
    CHECK_OK(lt_kv_cache_create(m, 16, 4, &b));
    CHECK_OK(lt_kv_cache_create(m, 16, 2, &ws));
    if (!a || !b || !ws) goto out;
    float *lg = malloc(sizeof(float) * 3 * (size_t)m->config.vocab_size);
    lt_batch_row r[3] = {{.kv = a, .token = 1, .pos = 0},
                         {.kv = b, .token = 1, .pos = 16},
                         {.kv = a, .token = 1, .pos = 1}};
    CHECK_ERR(lt_model_forward_batch(m, ws, r, 2, lg), LT_ERR_ARG, "row 1: position 16");
    r[1].pos = 0;
    r[1].token = m->config.vocab_size;
    CHECK_ERR(lt_model_forward_batch(m, ws, r, 2, lg), LT_ERR_ARG, "row 1: token");
    r[1].token = 1;
    CHECK_ERR(lt_model_forward_batch(m, ws, r, 3, lg), LT_ERR_ARG, "1..2");
    CHECK_ERR(lt_model_forward_batch(m, a, r, 3, lg), LT_ERR_ARG, "rows 0 and 2 share a cache");
    CHECK_OK(lt_model_forward_batch(m, ws, r, 2, lg));
    /* prompt chunks: past the context, more tokens than the workspace's rows, no tokens */
    const int32_t toks[3] = {1, 2, 3};
    lt_batch_row c[2] = {{.kv = a, .pos = 14, .n = 3, .tokens = toks},
                          {.kv = b, .token = 1, .pos = 3}};
    CHECK_ERR(lt_model_forward_batch(m, ws, c, 1, lg), LT_ERR_ARG,
              "row 0: positions 14..16 outside its context of 16");
    c[0].pos = 0;
    CHECK_ERR(lt_model_forward_batch(m, ws, c, 2, lg), LT_ERR_ARG, "workspace takes 1..2");
    c[0].n = 2;
    c[0].tokens = NULL;
    CHECK_ERR(lt_model_forward_batch(m, ws, c, 1, lg), LT_ERR_ARG, "row 0: n = 2 tokens but no");
    free(lg);
out:
    lt_kv_cache_free(a);
    lt_kv_cache_free(b);
    lt_kv_cache_free(ws);
}

int main(void) {
    check_kernels();
    check_attention_levels();
    char smol[4096];
    const char *env = getenv("LT_MODELS");
    snprintf(smol, sizeof smol, "%s/SmolLM2-135M-Instruct.Q4_1.gguf",
             env ? env : lt_srcpath("models"));
    if (!lt_path_exists(smol)) {
        CHECK(0, "%s missing: run `make models` (tools/fetch_smollm2.sh)", smol);
        LT_TEST_END();
    }
    lt_model *m = NULL;
    lt_adapter *ad = NULL;
    lt_model_delta *dora = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(smol, &lo, &m));
    if (m) CHECK_OK(lt_adapter_load(lt_srcpath("tests/data/adapter/smol_dora"), &m->config, &ad));
    if (ad) CHECK_OK(lt_adapter_delta_create(ad, m, &dora));
    if (!dora) LT_TEST_END();
    /* a LoRA: DoRA's A and B without the magnitudes (another adapter on the same base) */
    const int nl = dora->n_layers * LT_MODEL_N_LIN;
    lt_model_delta_lin *lin = malloc(sizeof *lin * (size_t)nl);
    for (int i = 0; i < nl; i++)
        lin[i] = (lt_model_delta_lin){dora->lin[i].A, dora->lin[i].B, NULL};
    lt_model_delta lora = {dora->n_layers, dora->r, dora->scale * 1.5f, lin, NULL};
    const lt_model_delta *deltas[3] = {NULL, dora, &lora};
    check_batched_all(m, deltas, 1);
    check_batched_all(m, deltas, 0);
    check_generation(m, deltas);
    check_long_chunks(m, deltas);
    kvt = LT_KV_F16; /* what generate and serve use: the workspace stays fp32 (only its
                        activation buffers are used) */
    check_batched_all(m, deltas, 1);
    check_generation(m, deltas);
    check_long_chunks(m, deltas);
    check_errors(m);
    free(lin);
    lt_adapter_delta_free(dora);
    lt_adapter_free(ad);
    lt_model_free(m);
    LT_TEST_END();
}
