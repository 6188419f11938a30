/* test_qlora.c - QLoRA (LoRA over an NF4, double-quantized frozen base) in the trainer.
 *
 * Reference: the same model with every adapted-or-frozen linear weight replaced by its NF4
 * round trip (quantize + dequantize with the bitsandbytes-exact lt_nf4, tests/quant/test_nf4.c)
 * and the embedding / norms rounded to bf16, trained by the plain fp32 LoRA trainer. Both see
 * the same numbers, so losses and gradients must agree (the QLoRA trainer dequantizes a matrix
 * before each matmul instead of holding it in fp32). Also: the plan equals the allocation, the
 * frozen base takes ~0.52 byte per linear weight, and the model's fp32 weights are released. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/nf4.h"
#include "loratune/ops.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

static void nf4_roundtrip(float *w, int64_t n) {
    lt_nf4_sizes_t s;
    lt_nf4_sizes(n, 1, &s);
    lt_nf4 q = {.n = n, .double_quant = 1};
    q.codes = malloc((size_t)s.codes_bytes);
    q.qabsmax = malloc((size_t)s.qabsmax_bytes);
    q.absmax2 = malloc((size_t)s.absmax2_bytes);
    float *scr = malloc(sizeof(float) * (size_t)s.n_blocks);
    if (!lt_nf4_quantize(w, &q, scr)) lt_nf4_dequantize(&q, 0, n, w);
    free(q.codes);
    free(q.qabsmax);
    free(q.absmax2);
    free(scr);
}

static void round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
}

int main(void) {
    const char *path = lt_fixture("stories260K-hf");
    lt_model *mq = NULL, *mr = NULL;
    CHECK_OK(lt_model_load(path, NULL, &mq));
    CHECK_OK(lt_model_load(path, NULL, &mr));
    if (!mq || !mr) LT_TEST_END();
    const lt_model_config *mc = &mr->config;
    const int L = mc->n_layers, D = mc->dim, QD = mc->n_heads * mc->head_dim;
    const int KVD = mc->n_kv_heads * mc->head_dim, F = mc->ffn_dim;

    /* the reference model: what the QLoRA trainer computes with */
    float *ws[7] = {mr->w.wq, mr->w.wk, mr->w.wv, mr->w.wo, mr->w.w_gate, mr->w.w_up, mr->w.w_down};
    const int64_t sz[7] = {(int64_t)QD * D, (int64_t)KVD * D, (int64_t)KVD * D, (int64_t)D * QD,
                           (int64_t)F * D,  (int64_t)F * D,   (int64_t)D * F};
    for (int l = 0; l < L; l++)
        for (int t = 0; t < 7; t++)
            nf4_roundtrip(ws[t] + l * sz[t], sz[t]);
    round_bf16(mr->w.tok_embd, (int64_t)mc->vocab_size * D);
    if (!mc->tied_embeddings) round_bf16(mr->w.lm_head, (int64_t)mc->vocab_size * D);
    round_bf16(mr->w.attn_norm, (int64_t)L * D);
    round_bf16(mr->w.ffn_norm, (int64_t)L * D);
    round_bf16(mr->w.out_norm, D);

    lt_train_config c;
    lt_train_config_default(&c);
    c.lora.r = 4;
    c.lora.targets = LT_TARGET_ALL;
    c.batch_size = 2;
    c.seq_len = 24;
    c.lr = 1e-2f;
    lt_train_config cq = c;
    cq.method = LT_METHOD_QLORA;

    lt_train_plan_t pq, pb;
    CHECK_OK(lt_train_plan(mc, &cq, &pq));
    lt_train_config cb = c;
    cb.base_dtype = LT_DTYPE_BF16;
    CHECK_OK(lt_train_plan(mc, &cb, &pb));
    int64_t lin_w = 0;
    for (int t = 0; t < 7; t++)
        lin_w += sz[t] * L;
    /* WEIGHTS: NF4 linears + bf16 embedding + rounded norms, vs all-bf16 */
    int64_t saved = pb.alloc[LT_MEM_WEIGHTS] - pq.alloc[LT_MEM_WEIGHTS];
    CHECK(saved > lin_w * 2 - lin_w * 55 / 100 && saved < lin_w * 2 - lin_w / 2,
          "NF4 linears take ~0.52 byte per weight: saved %lld of %lld bf16 bytes",
          (long long)saved, (long long)lin_w * 2);
    CHECK(pq.released_base, "QLoRA releases the fp32 base");

    lt_trainer *tq = NULL, *tr = NULL;
    CHECK_OK(lt_trainer_create(mq, &cq, &tq));
    CHECK_OK(lt_trainer_create(mr, &c, &tr));
    if (!tq || !tr) LT_TEST_END();
    CHECK(mq->weights_released, "the model's fp32 weights were released");
    int64_t bytes[LT_MEM_COUNT];
    lt_trainer_mem(tq, bytes, NULL);
    CHECK(memcmp(bytes, lt_trainer_plan(tq)->alloc, sizeof bytes) == 0, "plan == allocation");
    CHECK(lt_trainer_n_tensors(tq) == lt_trainer_n_tensors(tr), "same trainable tensors");

    int32_t tok[48], tgt[48];
    uint64_t s = 12345;
    for (int i = 0; i < 48; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)mc->vocab_size);
    }
    for (int i = 0; i < 48; i++)
        tgt[i] = (i % 24 == 23) ? LT_IGNORE_INDEX : tok[i + 1];
    lt_batch b = {.B = 2, .T = 24, .tokens = tok, .targets = tgt};
    for (int step = 0; step < 3; step++) {
        lt_loss_stats lq, lr;
        CHECK_OK(lt_trainer_accumulate(tq, &b, 0, &lq));
        CHECK_OK(lt_trainer_accumulate(tr, &b, 0, &lr));
        CHECK(fabsf(lq.loss - lr.loss) <= 1e-5f * fabsf(lr.loss),
              "step %d: QLoRA loss %.7f = reference %.7f", step, (double)lq.loss, (double)lr.loss);
        double worst = 0;
        for (int i = 0; i < lt_trainer_n_tensors(tq); i++) {
            lt_train_tensor a, r;
            lt_trainer_tensor(tq, i, &a);
            lt_trainer_tensor(tr, i, &r);
            double mx = 1e-30, d = 0;
            float *ag = lt_tt_get(tq, i, LT_TENSOR_GRAD), *rg = lt_tt_get(tr, i, LT_TENSOR_GRAD);
            for (int64_t k = 0; k < a.numel; k++) {
                mx = fmax(mx, fabs(rg[k]));
                d = fmax(d, fabs((double)ag[k] - rg[k]));
            }
            free(ag);
            free(rg);
            worst = fmax(worst, d / mx);
        }
        CHECK(worst <= 1e-4, "step %d: gradients agree (worst relative %.2e)", step, worst);
        CHECK_OK(lt_trainer_step(tq, -1, NULL));
        CHECK_OK(lt_trainer_step(tr, -1, NULL));
    }
    lt_trainer_free(tq);
    lt_trainer_free(tr);
    lt_model_free(mq);
    lt_model_free(mr);
    LT_TEST_END();
}
