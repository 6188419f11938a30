/* test_trainer_fd.c - whole-model gradients against central finite differences of the loss,
 * and checkpointing on == off.
 *
 * Covers what the PEFT goldens do not: a Mistral-style config with a sliding window, tied
 * embeddings (the embedding gets gradients from both ends), no q/k/v bias, an F16 base, a
 * 16-bit base whose fp32 weights were released (the trainer runs on its copies alone), and
 * LoRA dropout with checkpointing. Model: dim 16, 2 layers, 4 heads, 2 kv heads, head_dim 4,
 * ffn 24, vocab 29, random weights; batch B=2, T=7, row 0 packs two sequences, some targets
 * are -100.
 * FD: (DoRA: magnitudes only, see fd_case) for a few random entries of every trainable tensor, d =
 * (L(x+h) - L(x-h)) / 2h with h = 4e-3 on the fp32 forward (lt_trainer_eval, loss = mean over
 * counted tokens). Tolerance: |d - grad| <= 2e-3 * max|grad of that tensor| + 2e-4 (fp32 forward
 * noise on a loss of ~3.4 is ~1e-6, i.e. ~1e-4 after dividing by 2h; the rest is the O(h^2) term).
 * Checkpointing: every gradient with grad_checkpoint = 1 equals the one without to
 * <= 1e-6 of the tensor's max-abs (in practice bit-identical: same code, same inputs). */
#include <stdio.h>
#include <string.h>

#include "loratune/model.h"
#include "loratune/ops.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

#define B_ 2
#define T_ 7
#define FD_H 4e-3f
#define FD_REL 2e-3
#define FD_ABS 2e-4
#define CKPT_TOL 1e-6

static uint64_t rng = 0x9876543ull;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / 16777216.0 * 2.0 - 1.0);
}

static lt_model *make_model(int tied, int window, int bias) {
    lt_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.arch = window ? LT_ARCH_MISTRAL : (bias ? LT_ARCH_QWEN2 : LT_ARCH_LLAMA);
    mc.dim = 16;
    mc.n_layers = 2;
    mc.n_heads = 4;
    mc.n_kv_heads = 2;
    mc.head_dim = 4;
    mc.ffn_dim = 24;
    mc.vocab_size = 29;
    mc.max_seq_len = 32;
    mc.norm_eps = 1e-5f;
    mc.rope_theta = 10000.0f;
    mc.sliding_window = window;
    mc.tied_embeddings = tied;
    mc.qkv_bias = bias;
    mc.bos_id = mc.eos_id = -1;
    mc.dtype = LT_DTYPE_F32;
    lt_model *m = NULL;
    CHECK_OK(lt_model_create(&mc, &m));
    if (!m) return NULL;
    for (int64_t i = 0; i < m->n_params; i++)
        m->params[i] = 0.3f * frand();
    /* norms around 1 as real models have */
    for (int64_t i = 0; i < (int64_t)mc.n_layers * mc.dim; i++) {
        m->w.attn_norm[i] = 1.0f + 0.2f * frand();
        m->w.ffn_norm[i] = 1.0f + 0.2f * frand();
    }
    for (int i = 0; i < mc.dim; i++)
        m->w.out_norm[i] = 1.0f + 0.2f * frand();
    return m;
}

static const int32_t k_tok[B_ * T_] = {3, 17, 8, 22, 5, 1, 28, 9, 9, 14, 0, 26, 7, 11};
static const int32_t k_tgt[B_ * T_] = {-100, 8, 22, -100, 1, 28, -100, -100, 14, 0, 26, 7, 11, 4};
static const int32_t k_pos[B_ * T_] = {0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6};
static const int32_t k_seq[B_ * T_] = {0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const lt_batch k_batch = {B_, T_, k_tok, k_tgt, k_pos, k_seq};

static double eval_loss(lt_trainer *tr) {
    lt_loss_stats s;
    lt_trainer_eval(tr, &k_batch, &s);
    return s.loss_sum / (double)s.count;
}

static void fd_case(const char *what, lt_model *m, lt_train_config *c) {
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_create(m, c, &tr));
    if (!tr) return;
    /* non-zero LoRA B so every adapter tensor gets gradients */
    for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        if (strstr(t.name, "lora_B")) {
            float *val = lt_tt_get(tr, i, LT_TENSOR_VALUE);
            for (int64_t k = 0; k < t.numel; k++)
                val[k] = 0.2f * frand();
            lt_tt_put(tr, i, LT_TENSOR_VALUE, val);
        }
    }
    lt_loss_stats s;
    CHECK_OK(lt_trainer_accumulate(tr, &k_batch, 0.0f, &s));
    double worst = 0;
    const char *wname = "";
    for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        float *grad = lt_tt_get(tr, i, LT_TENSOR_GRAD);
        double gmax = 0;
        for (int64_t k = 0; k < t.numel; k++)
            if (fabs(grad[k]) > gmax) gmax = fabs(grad[k]);
        CHECK(gmax > 0, "%s: %s has an all-zero gradient", what, t.name);
        /* DoRA detaches the weight norm (PEFT, DoRA paper sec. 4.3): the A / B gradients are
         * deliberately not the derivative of the loss, so only the magnitude is FD-checked
         * (the norm does not depend on it); A / B are checked against PEFT by the goldens. */
        if (c->method == LT_METHOD_DORA && !strstr(t.name, "magnitude")) {
            free(grad);
            continue;
        }
        for (int probe = 0; probe < 3; probe++) {
            int64_t k = (int64_t)((frand() * 0.5 + 0.5) * (double)t.numel);
            if (k >= t.numel) k = t.numel - 1;
            float x0, xp, xm;
            lt_trainer_read(tr, i, LT_TENSOR_VALUE, k, &x0, 1);
            xp = x0 + FD_H;
            xm = x0 - FD_H;
            lt_trainer_write(tr, i, LT_TENSOR_VALUE, k, &xp, 1);
            double lp = eval_loss(tr);
            lt_trainer_write(tr, i, LT_TENSOR_VALUE, k, &xm, 1);
            double lm = eval_loss(tr);
            lt_trainer_write(tr, i, LT_TENSOR_VALUE, k, &x0, 1);
            double fd = (lp - lm) / (2.0 * FD_H);
            double err = fabs(fd - grad[k]) / (FD_REL * gmax + FD_ABS);
            if (err > worst) {
                worst = err;
                wname = t.name;
            }
            CHECK(err <= 1.0, "%s: %s[%lld]: fd %.6g vs grad %.6g (max |grad| %.3g)", what, t.name,
                  (long long)k, fd, (double)grad[k], gmax);
        }
        free(grad);
    }
    printf("%-34s loss %.4f, %d tensors, worst FD error %.2f of the allowed (%s)\n", what,
           (double)s.loss, lt_trainer_n_tensors(tr), worst, wname);
    lt_trainer_free(tr);
}

/* grads with checkpointing == grads without (dropout on, to check the mask is regenerated) */
static void ckpt_case(const char *what, lt_model *m, lt_train_config *c) {
    lt_trainer *tr[2] = {NULL, NULL};
    int64_t act[2] = {0, 0};
    for (int ck = 0; ck < 2; ck++) {
        c->grad_checkpoint = ck;
        CHECK_OK(lt_trainer_create(m, c, &tr[ck]));
        if (!tr[ck]) return;
        int64_t bytes[LT_MEM_COUNT];
        lt_trainer_mem(tr[ck], bytes, NULL);
        act[ck] = bytes[LT_MEM_ACTIVATIONS];
        lt_loss_stats s;
        for (int rep = 0; rep < 2; rep++) /* two micro-batches accumulate */
            CHECK_OK(lt_trainer_accumulate(tr[ck], &k_batch, 0.05f, &s));
    }
    double worst = 0;
    for (int i = 0; i < lt_trainer_n_tensors(tr[0]); i++) {
        lt_train_tensor a, b;
        lt_trainer_tensor(tr[0], i, &a);
        lt_trainer_tensor(tr[1], i, &b);
        double md = 0, mb = 0;
        float *ag = lt_tt_get(tr[0], i, LT_TENSOR_GRAD), *bg = lt_tt_get(tr[1], i, LT_TENSOR_GRAD);
        for (int64_t k = 0; k < a.numel; k++) {
            double d = fabs((double)ag[k] - bg[k]);
            if (d > md) md = d;
            if (fabs(ag[k]) > mb) mb = fabs(ag[k]);
        }
        free(ag);
        free(bg);
        double e = md / (mb > 0 ? mb : 1);
        if (e > worst) worst = e;
        CHECK(e <= CKPT_TOL, "%s: %s differs with checkpointing: %.3g", what, a.name, e);
    }
    CHECK(act[1] < act[0], "%s: checkpointing activations %lld -> %lld", what, (long long)act[0],
          (long long)act[1]);
    printf("%-34s checkpointing: worst grad diff %.2e, activations %lld -> %lld bytes\n", what,
           worst, (long long)act[0], (long long)act[1]);
    lt_trainer_free(tr[0]);
    lt_trainer_free(tr[1]);
}

int main(void) {
    lt_set_num_threads(1);
    lt_model *mw = make_model(1, 3, 0); /* mistral-ish: tied, sliding window 3, no bias */
    lt_model *mq = make_model(0, 0, 1); /* qwen2-ish: untied, q/k/v bias */
    if (!mw || !mq) LT_TEST_END();
    lt_train_config c;

    lt_train_config_default(&c);
    c.batch_size = B_;
    c.seq_len = T_;
    c.lora.r = 3;
    c.lora.targets = LT_TARGET_ALL;
    fd_case("lora all, window+tied", mw, &c);
    c.method = LT_METHOD_DORA;
    c.lora.rslora = 1;
    fd_case("dora all rslora, window+tied", mw, &c);
    c.base_dtype = LT_DTYPE_F16;
    c.release_base_fp32 = 0; /* mw is used again below; the released case runs last */
    fd_case("dora all, f16 base, window+tied", mw, &c);
    c.release_base_fp32 = 1;
    c.base_dtype = LT_DTYPE_F32;
    c.method = LT_METHOD_LORA;
    c.lora.targets = LT_TARGET_K | LT_TARGET_DOWN;
    c.lora.layer_begin = 1;
    fd_case("lora k,down layer 1, bias", mq, &c);

    lt_train_config_default(&c);
    c.batch_size = B_;
    c.seq_len = T_;
    c.method = LT_METHOD_FULL;
    fd_case("full, window+tied", mw, &c);
    fd_case("full, bias+untied", mq, &c);
    c.full.layer_begin = 1;
    c.full.freeze_embeddings = 1;
    fd_case("full layer 1 frozen embed, tied", mw, &c);
    c.base_dtype = LT_DTYPE_BF16;
    fd_case("full layer 1, bf16 frozen rest", mq, &c);

    lt_train_config_default(&c);
    c.batch_size = B_;
    c.seq_len = T_;
    c.lora.r = 2;
    c.lora.targets = LT_TARGET_ALL;
    c.lora.dropout = 0.25f;
    ckpt_case("lora all dropout 0.25", mw, &c);
    c.method = LT_METHOD_DORA;
    ckpt_case("dora all dropout 0.25, bias", mq, &c);
    lt_train_config_default(&c);
    c.batch_size = B_;
    c.seq_len = T_;
    c.method = LT_METHOD_FULL;
    ckpt_case("full, tied", mw, &c);
    c.base_dtype = LT_DTYPE_BF16;
    c.full.layer_begin = 1;
    ckpt_case("full layer 1 bf16, bias", mq, &c);

    /* last uses of each model: 16-bit bases with the fp32 weights released -- the trainer
     * must work from its own copies alone (any read of the model would now fault) */
    lt_train_config_default(&c);
    c.batch_size = B_;
    c.seq_len = T_;
    c.lora.r = 3;
    c.lora.targets = LT_TARGET_ALL;
    c.method = LT_METHOD_DORA;
    c.base_dtype = LT_DTYPE_F16;
    fd_case("dora all, f16 base released, tied", mw, &c);
    CHECK(mw->weights_released && !mw->params, "mw: weights released");
    c.method = LT_METHOD_LORA;
    c.base_dtype = LT_DTYPE_BF16;
    fd_case("lora all, bf16 released, bias+untied", mq, &c);
    CHECK(mq->weights_released && !mq->params && !mq->w.lm_head, "mq: weights released");

    lt_model_free(mw);
    lt_model_free(mq);
    LT_TEST_END();
}
