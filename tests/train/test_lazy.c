/* test_lazy.c - training over a lazy model (the weights stay in the mapped file).
 *
 * Reference: the same file loaded whole (every tensor converted to fp32 at load, q/k rows
 * un-interleaved at load) and trained by the same trainer. A lazy trainer reads the same
 * numbers -- in place from the file (zero-copy fp32 / 16-bit, block-quantized rows
 * dequantized per matmul with the interleaved rows undone at read), or from copies it fills
 * tensor by tensor -- so losses and gradients must be bit-identical wherever the loaded path
 * rounds nothing the lazy one doesn't. Models: stories260K as HF safetensors and as GGUF
 * (interleaved q/k), SmolLM2-135M-Instruct Q4_1 (Q4_1 + Q8_0 kept quantized), and a synthetic
 * GGUF whose linears are Q2_K..Q6_K / Q4_0 / Q5_1 blocks and whose head is untied Q6_K.
 * Also: the plan equals the allocation, mapped bytes equal the quantized tensors' bytes in the
 * file (counted with the GGUF reader), the trainer holds no copy of in-place tensors, full
 * fine-tuning is refused on a lazy model, and a weight's rows can be read one range at a time
 * equal to the loaded model's rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loratune/gguf.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

#define NSTEP 2

typedef struct {
    float loss[NSTEP];
    float gnorm[NSTEP];
    float *grads; /* all trainable tensors' grads after the first accumulate, concatenated */
    int64_t ngrads;
    lt_train_plan_t plan;
    int64_t weights_alloc;
} run_out;

static lt_status run(lt_model *m, const lt_train_config *c, const lt_batch *b, run_out *o) {
    lt_trainer *tr = NULL;
    lt_status st = lt_trainer_create(m, c, &tr);
    if (st) return st;
    o->plan = *lt_trainer_plan(tr);
    o->weights_alloc = o->plan.alloc[LT_MEM_WEIGHTS];
    for (int s = 0; s < NSTEP && !st; s++) {
        lt_loss_stats ls;
        st = lt_trainer_accumulate(tr, b, 0.0f, &ls);
        if (st) break;
        o->loss[s] = ls.loss;
        if (s == 0) {
            int n = lt_trainer_n_tensors(tr);
            o->ngrads = 0;
            for (int i = 0; i < n; i++) {
                lt_train_tensor t;
                lt_trainer_tensor(tr, i, &t);
                o->ngrads += t.numel;
            }
            o->grads = malloc(sizeof(float) * (size_t)o->ngrads);
            int64_t k = 0;
            for (int i = 0; i < n; i++) {
                lt_train_tensor t;
                lt_trainer_tensor(tr, i, &t);
                CHECK_OK(lt_trainer_read(tr, i, LT_TENSOR_GRAD, 0, o->grads + k, t.numel));
                k += t.numel;
            }
        }
        st = lt_trainer_step(tr, 1e-3f, &o->gnorm[s]);
    }
    lt_trainer_free(tr);
    return st;
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double mx = 0, sc = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > mx) mx = d;
        if (fabs(b[i]) > sc) sc = fabs(b[i]);
    }
    return mx / sc;
}

/* trains path loaded whole with cw and lazily with c; tol 0 = bit-identical, else the
 * relative loss tolerance and gtol the gradients' (relative to their largest) */
static void compare2(const char *what, const char *path, lt_train_config cw, lt_train_config c,
                     int T, double tol, double gtol, lt_train_plan_t *lazy_plan,
                     lt_train_plan_t *whole_plan) {
    lt_model *mw = NULL, *ml = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(path, NULL, &mw));
    CHECK_OK(lt_model_load(path, &lo, &ml));
    if (!mw || !ml) goto done;
    CHECK(lt_model_is_lazy(ml) && !lt_model_is_lazy(mw), "%s: lazy flag", what);
    const int V = ml->config.vocab_size, B = 2;
    c.batch_size = cw.batch_size = B;
    c.seq_len = cw.seq_len = T;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B * T + 1));
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    uint64_t s = 12345;
    for (int i = 0; i < B * T + 1; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    for (int i = 0; i < B * T; i++)
        tgt[i] = (i % 7 == 3) ? -100 : tok[i + 1];
    lt_batch b = {.B = B, .T = T, .tokens = tok, .targets = tgt};
    run_out rw = {0}, rl = {0};
    CHECK_OK(run(mw, &cw, &b, &rw));
    CHECK_OK(run(ml, &c, &b, &rl));
    if (rw.grads && rl.grads && rw.ngrads == rl.ngrads) {
        for (int k = 0; k < NSTEP; k++) {
            if (tol == 0)
                CHECK(rw.loss[k] == rl.loss[k] && rw.gnorm[k] == rl.gnorm[k],
                      "%s: step %d loss %.9g vs %.9g, grad norm %.9g vs %.9g", what, k + 1,
                      (double)rw.loss[k], (double)rl.loss[k], (double)rw.gnorm[k],
                      (double)rl.gnorm[k]);
            else
                CHECK(fabs(rw.loss[k] - rl.loss[k]) <= tol * fabs(rw.loss[k]),
                      "%s: step %d loss %.9g vs %.9g (tol %g)", what, k + 1, (double)rw.loss[k],
                      (double)rl.loss[k], tol);
        }
        double g = max_rel(rl.grads, rw.grads, rw.ngrads);
        if (tol == 0)
            CHECK(!memcmp(rw.grads, rl.grads, sizeof(float) * (size_t)rw.ngrads),
                  "%s: gradients bit-identical (max rel diff %g)", what, g);
        else
            CHECK(g <= gtol, "%s: gradients max rel diff %g (tol %g)", what, g, gtol);
    } else {
        CHECK(0, "%s: both runs produce gradients", what);
    }
    CHECK(rl.plan.lazy && rl.plan.model_bytes == 0, "%s: lazy plan holds no fp32 model", what);
    if (lazy_plan) *lazy_plan = rl.plan;
    if (whole_plan) *whole_plan = rw.plan;
    free(rw.grads);
    free(rl.grads);
    free(tok);
    free(tgt);
done:
    lt_model_free(mw);
    lt_model_free(ml);
}

static void compare(const char *what, const char *path, lt_train_config c, int T, double tol,
                    lt_train_plan_t *lazy_plan) {
    compare2(what, path, c, c, T, tol, tol * 10, lazy_plan, NULL);
}

/* ---- a synthetic llama GGUF with K-quant linears ---- */
static void put_f16(uint8_t *p, float v) {
    uint16_t h = lt_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* random blocks of type t with sane scales (d, dmin fields set to small finite values) */
static void *rand_blocks(lt_dtype t, int64_t n, uint64_t *seed, size_t *nbytes) {
    int64_t nb = n / lt_dtype_block_elems(t), bb = lt_dtype_block_bytes(t);
    uint8_t *p = malloc((size_t)(nb * bb));
    for (int64_t i = 0; i < nb * bb; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(*seed >> 56);
    }
    for (int64_t k = 0; k < nb; k++) {
        uint8_t *b = p + k * bb;
        switch (t) {
        case LT_DTYPE_Q2_K: put_f16(b + 80, 0.01f), put_f16(b + 82, 0.004f); break;
        case LT_DTYPE_Q3_K: put_f16(b + 108, 0.01f); break;
        case LT_DTYPE_Q4_K: case LT_DTYPE_Q5_K: put_f16(b, 0.01f), put_f16(b + 2, 0.004f); break;
        case LT_DTYPE_Q6_K: put_f16(b + 208, 0.002f); break;
        case LT_DTYPE_Q4_0: case LT_DTYPE_Q8_0: put_f16(b, 0.01f); break;
        case LT_DTYPE_Q5_1: put_f16(b, 0.01f), put_f16(b + 2, -0.08f); break;
        default: break;
        }
    }
    *nbytes = (size_t)(nb * bb);
    return p;
}

static void write_kquant_gguf(const char *path) {
    const int D = 256, F = 512, L = 2, H = 4, KV = 2, V = 256, HD = D / H;
    lt_gguf_writer *w = NULL;
    CHECK_OK(lt_gguf_writer_create(&w));
    if (!w) return;
    lt_gguf_writer_set_str(w, "general.architecture", "llama");
    lt_gguf_writer_set_u32(w, "llama.embedding_length", D);
    lt_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    lt_gguf_writer_set_u32(w, "llama.block_count", L);
    lt_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    lt_gguf_writer_set_u32(w, "llama.attention.head_count_kv", KV);
    lt_gguf_writer_set_u32(w, "llama.context_length", 128);
    lt_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    void *bufs[64];
    int nbuf = 0;
    uint64_t seed = 7;
    size_t nb;
    char name[96];
#define ADD(nm, t, rows, cols)                                                                     \
    do {                                                                                           \
        int64_t sh_[2] = {(rows), (cols)};                                                         \
        bufs[nbuf] = rand_blocks((t), (int64_t)(rows) * (cols), &seed, &nb);                       \
        CHECK_OK(lt_gguf_writer_add_tensor(w, (nm), (t), 2, sh_, bufs[nbuf], nb));                 \
        nbuf++;                                                                                    \
    } while (0)
#define ADD_NORM(nm)                                                                               \
    do {                                                                                           \
        int64_t sh_[1] = {D};                                                                      \
        float *v_ = malloc(sizeof(float) * D);                                                     \
        for (int i_ = 0; i_ < D; i_++)                                                             \
            v_[i_] = 1.0f + (float)(i_ % 13) / 128.0f; /* exact in bf16 */                         \
        bufs[nbuf++] = v_;                                                                         \
        CHECK_OK(lt_gguf_writer_add_tensor(w, (nm), LT_DTYPE_F32, 1, sh_, v_, sizeof(float) * D)); \
    } while (0)
    ADD("token_embd.weight", LT_DTYPE_Q8_0, V, D);
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        ADD_NORM(name);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        ADD_NORM(name);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        ADD(name, LT_DTYPE_Q4_K, H * HD, D);
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);
        ADD(name, LT_DTYPE_Q5_K, KV * HD, D);
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        ADD(name, LT_DTYPE_Q6_K, KV * HD, D);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
        ADD(name, LT_DTYPE_Q2_K, D, H * HD);
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        ADD(name, LT_DTYPE_Q3_K, F, D);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        ADD(name, LT_DTYPE_Q4_0, F, D);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        ADD(name, LT_DTYPE_Q5_1, D, F);
    }
    ADD_NORM("output_norm.weight");
    ADD("output.weight", LT_DTYPE_Q6_K, V, D);
#undef ADD
#undef ADD_NORM
    CHECK_OK(lt_gguf_writer_write(w, path));
    lt_gguf_writer_free(w);
    for (int i = 0; i < nbuf; i++)
        free(bufs[i]);
}

/* bytes of the block-quantized tensors of a GGUF, from the reader (not the trainer) */
static int64_t quant_bytes(const char *path) {
    lt_gguf *g = NULL;
    int64_t n = 0;
    if (lt_gguf_open(path, &g)) return -1;
    for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *t = lt_gguf_tensor(g, i);
        if (t->dtype >= LT_DTYPE_Q4_0 && t->dtype <= LT_DTYPE_Q8_K) n += (int64_t)t->nbytes;
    }
    lt_gguf_close(g);
    return n;
}

int main(void) {
    lt_train_config c;
    lt_train_plan_t p;
    const char *hf = lt_fixture("stories260K-hf");
    const char *gg = lt_fixture("stories260K/stories260K.gguf");

    /* stories260K: f32 files; fp32 base in place (zero-copy; the GGUF's q/k through the
     * interleaved row reader), bf16 base copied tensor by tensor, QLoRA, DoRA */
    lt_train_config_default(&c);
    c.lora.targets = LT_TARGET_ALL;
    compare("hf lora f32", hf, c, 16, 0, &p);
    CHECK(p.alloc[LT_MEM_WEIGHTS] < 64 * 1024,
          "hf lora f32: only norms copied (%lld bytes of weights)",
          (long long)p.alloc[LT_MEM_WEIGHTS]);
    compare("gguf lora f32", gg, c, 16, 0, NULL);
    c.base_dtype = LT_DTYPE_BF16;
    compare("hf lora bf16", hf, c, 16, 0, NULL);
    compare("gguf lora bf16", gg, c, 16, 0, NULL);
    c.method = LT_METHOD_QLORA;
    compare("hf qlora", hf, c, 16, 0, NULL);
    compare("gguf qlora", gg, c, 16, 0, NULL);
    lt_train_config_default(&c);
    c.method = LT_METHOD_DORA;
    c.lora.targets = LT_TARGET_Q | LT_TARGET_K | LT_TARGET_O;
    compare("gguf dora f32", gg, c, 16, 0, NULL);

    /* full fine-tuning needs the weights loaded */
    {
        lt_model *ml = NULL;
        lt_model_load_opts lo = {.lazy = 1};
        CHECK_OK(lt_model_load(gg, &lo, &ml));
        lt_train_config_default(&c);
        c.method = LT_METHOD_FULL;
        lt_trainer *tr = NULL;
        CHECK_ERR(lt_trainer_create(ml, &c, &tr), LT_ERR_ARG, "load the model whole");
        CHECK(tr == NULL, "no trainer");
        /* rows one range at a time == the loaded model's rows (q un-interleaved) */
        lt_model *mw = NULL;
        CHECK_OK(lt_model_load(gg, NULL, &mw));
        if (ml && mw) {
            const lt_model_config *mc = &mw->config;
            int64_t QD = (int64_t)mc->n_heads * mc->head_dim, D = mc->dim;
            float *buf = malloc(sizeof(float) * (size_t)(QD * D));
            CHECK_OK(lt_model_weight_rows(ml, LT_W_WQ, 1, 3, QD - 5, buf));
            CHECK(!memcmp(buf, mw->w.wq + QD * D + 3 * D, sizeof(float) * (size_t)((QD - 5) * D)),
                  "wq rows [3, QD-2) of layer 1 equal the loaded ones");
            CHECK(lt_model_weight_interleaved(ml, LT_W_WQ) && !lt_model_weight_interleaved(ml, LT_W_WV),
                  "llama GGUF q interleaved, v not");
            CHECK_ERR(lt_model_weight_rows(ml, LT_W_WQ, 1, QD - 1, 2, buf), LT_ERR_ARG,
                      "outside [0,");
            CHECK_ERR(lt_model_weight_rows(ml, LT_W_BQ, 0, 0, 1, buf), LT_ERR_ARG,
                      "no such weight");
            CHECK_ERR(lt_model_check_weights(ml, "forward"), LT_ERR_ARG, "loaded lazily");
            free(buf);
        }
        lt_model_free(mw);
        lt_model_free(ml);
    }

    /* K-quants and other block types kept quantized, untied quantized head */
    char kq[512];
    snprintf(kq, sizeof kq, "%s/lt_lazy_kquant_%d.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    write_kquant_gguf(kq);
    lt_train_config_default(&c);
    c.lora.targets = LT_TARGET_ALL;
    compare("k-quants lora f32", kq, c, 16, 0, &p);
    CHECK(p.mapped_bytes == quant_bytes(kq), "k-quants: mapped %lld == quantized bytes %lld",
          (long long)p.mapped_bytes, (long long)quant_bytes(kq));
    /* a bf16 base keeps the blocks as they are (exact values; the norms are exact in bf16):
     * the same numbers as the fp32 base of the whole model */
    lt_train_config cb = c;
    cb.base_dtype = LT_DTYPE_BF16;
    compare2("k-quants lora bf16 base (kept quantized)", kq, c, cb, 16, 0, 0, NULL, NULL);
    unlink(kq);

    /* the real model: SmolLM2-135M-Instruct Q4_1 (Q4_1 linears, Q8_0 tied embedding) */
    const char *env = getenv("LT_MODELS");
    char sm[4096];
    snprintf(sm, sizeof sm, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", env ? env : lt_srcpath("models"));
    if (!lt_path_exists(sm)) {
        CHECK(0, "%s missing: run `make models` (tools/fetch_smollm2.sh)", sm);
    } else {
        lt_train_config_default(&c);
        lt_train_plan_t pw;
        /* the in-place Q8_0 head (tied embedding) of a lazy model at 24 tokens would run in
         * vocabulary blocks (D > tokens: cheaper than dequantizing it whole); a fixed CE chunk
         * keeps it whole, as the fp32 head of the loaded model is, for the exact comparison */
        c.ce_chunk_rows = 24;
        compare2("smollm2 q4_1 lora f32", sm, c, c, 12, 0, 0, &p, &pw);
        /* the blocked head against the whole one: the same logits, dX summed block by block */
        lt_train_config cblk = c;
        cblk.ce_chunk_rows = 0;
        compare2("smollm2 q4_1 lora f32, head in vocabulary blocks", sm, c, cblk, 12, 1e-6, 1e-5,
                 NULL, NULL);
        {
            lt_model *ml = NULL;
            lt_model_load_opts lo = {.lazy = 1};
            CHECK_OK(lt_model_load(sm, &lo, &ml));
            lt_train_plan_t pb, pu;
            cblk.batch_size = c.batch_size = 2;
            cblk.seq_len = c.seq_len = 12;
            if (ml && !lt_train_plan_model(ml, &cblk, &pb) && !lt_train_plan_model(ml, &c, &pu)) {
                int64_t V = ml->config.vocab_size, D = ml->config.dim;
                /* blocked: a (4 Mi / D)-row block of the head instead of all V rows */
                CHECK(pu.alloc[LT_MEM_WORKSPACE] - pb.alloc[LT_MEM_WORKSPACE] >=
                          (V - ((1 << 22) / D)) * D * 4,
                      "the head runs in vocabulary blocks: workspace %lld vs %lld",
                      (long long)pb.alloc[LT_MEM_WORKSPACE], (long long)pu.alloc[LT_MEM_WORKSPACE]);
            }
            lt_model_free(ml);
        }
        c.ce_chunk_rows = 0;
        CHECK(p.peak_bytes < pw.peak_bytes / 2, "smollm2: lazy peak %lld < half the loaded %lld",
              (long long)p.peak_bytes, (long long)pw.peak_bytes);
        CHECK(p.mapped_bytes == quant_bytes(sm), "smollm2: mapped %lld == quantized bytes %lld",
              (long long)p.mapped_bytes, (long long)quant_bytes(sm));
        CHECK(p.alloc[LT_MEM_WEIGHTS] < 1 << 20, "smollm2: %lld bytes of copies (norms only)",
              (long long)p.alloc[LT_MEM_WEIGHTS]);
        c.method = LT_METHOD_QLORA;
        /* the Q8_0 embedding stays in place (exact), the loaded path rounds it to bf16 */
        compare2("smollm2 q4_1 qlora", sm, c, c, 12, 2e-3, 0.1, NULL, NULL);
    }
    LT_TEST_END();
}
