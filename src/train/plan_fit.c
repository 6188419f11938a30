/* plan_fit.c - automatic batch size and sequence length: the largest values whose predicted
 * peak (lt_train_plan, which equals the trainer's allocation plus what the model holds and the
 * measured overhead) fits a memory budget. The peak grows with B and T, so each is a binary
 * search over plans; nothing is allocated.
 *
 * A whole training run (lt_train_plan_fit_run) holds more than the plan: its tokenizer, chat
 * template, tokenized data and the model file's metadata pages (measured by the caller: the
 * resident set beyond the model's weights), and at the end it writes its outputs while the
 * trainer still exists. Both are reserved out of the budget. Without that, a run whose plan
 * sat just under the budget peaked 14-20 MiB (LoRA / QLoRA) and 36-43 MiB (full fine-tuning:
 * the Hugging Face export regenerates tokenizer.json) above it on SmolLM2-135M
 * (tests/train/test_budget_grid.py). */
#include <stdio.h>

#include "trainer_internal.h"

/* the plan at (B, T) into *p (may be NULL) and its peak into *peak */
static lt_status peak_at(const lt_model_config *mc, const lt_base_files *src, int dev,
                         const lt_train_config *c, int B, int T, int64_t *peak,
                         lt_train_plan_t *p) {
    lt_train_config t = *c;
    t.batch_size = B;
    t.seq_len = T;
    lt_train_plan_t tmp;
    if (!p) p = &tmp;
    lt_status s = lt_train_plan_src_(mc, src, &t, p);
    if (s) return s;
    *peak = dev ? p->device_bytes : p->peak_bytes;
    return LT_OK;
}

/* Largest v in [lo, hi] with fits(v), given fits(lo); monotone. */
static lt_status largest(const lt_model_config *mc, const lt_base_files *src, int dev,
                         const lt_train_config *c, int64_t budget, int fixed, int lo, int hi,
                         int vary_batch, int *out) {
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        int64_t pk;
        lt_status s = vary_batch ? peak_at(mc, src, dev, c, mid, fixed, &pk, NULL)
                                 : peak_at(mc, src, dev, c, fixed, mid, &pk, NULL);
        if (s) return s;
        if (pk <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    *out = lo;
    return LT_OK;
}

static double gib(int64_t b) {
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

/* What writing a run's outputs allocates while the trainer exists (an estimate, measured on
 * SmolLM2-135M, vocabulary 49152): full fine-tuning writes a Hugging Face folder, whose
 * tokenizer.json is regenerated from a GGUF's vocabulary and merges as a JSON tree (+33 MiB
 * measured: ~700 bytes per vocabulary entry; 1 KiB reserved) or copied from the source folder
 * through a mapping; adapters are copied out of the trainer and written three ways (PEFT,
 * mlx-lm, GGUF: +3.6 MiB for 1.8 MiB of LoRA tensors; three copies reserved). 4 MiB more for
 * the run's tracking store (SQLite's page cache) and event JSON. */
static int64_t output_bytes(const lt_model_config *mc, const lt_train_config *c,
                            const lt_train_plan_t *p) {
    int64_t b = (int64_t)4 << 20;
    if (c->method == LT_METHOD_FULL)
        b += (int64_t)mc->vocab_size * 1024;
    else
        b += 3 * p->n_trainable * (int64_t)sizeof(float) + ((int64_t)2 << 20);
    return b;
}

/* run: 0 the plan alone, 1 a run on the host (its resident set and outputs reserved), 2 a run
 * on device backend src->dev or dev_be (plan.device_bytes against device memory) */
static lt_status fit(const lt_model_config *mc, const lt_base_files *src, const lt_train_config *c,
                     int64_t budget, int run, int64_t resident_bytes, int max_batch, int max_seq,
                     int *batch, int *seq_len, lt_train_plan_t *plan, int64_t *reserve_out) {
    if (budget <= 0)
        return lt_error(LT_ERR_ARG, "memory budget: expected > 0 bytes, got %lld", (long long)budget);
    if (reserve_out) *reserve_out = 0;
    const int dev = run == 2;
    const int auto_b = c->batch_size <= 0, auto_t = c->seq_len <= 0;
    if (max_batch < 1) max_batch = 1;
    if (max_seq < 2) max_seq = 2;
    const int min_t = max_seq < 16 ? max_seq : 16;
    int B = auto_b ? 1 : c->batch_size, T = auto_t ? min_t : c->seq_len;
    int64_t pk;
    lt_train_plan_t p0;
    lt_status s = peak_at(mc, src, dev, c, B, T, &pk, &p0);
    if (s) return s;
    int64_t reserve = 0;
    if (dev) {
        reserve = LT_DEVICE_RESERVE_BYTES + budget / 50;
    } else if (run) { /* n_trainable and model_bytes do not depend on B, T */
        int64_t held = resident_bytes - p0.model_bytes; /* the plan counts a loaded model */
        reserve = (held > 0 ? held : 0) + output_bytes(mc, c, &p0);
    }
    if (pk > budget - reserve) {
        char xch[160] = "", split[400] = ""; /* data parallelism: each rank's exchange */
        if (p0.exchange_bytes > 0 && !dev)
            snprintf(xch, sizeof xch,
                     ", of which %.2f GiB the data-parallel exchange of %d ranks (its row "
                     "gradients: fewer with a smaller --batch-size or --grad-accum)",
                     gib(p0.exchange_bytes), p0.ranks);
        if (dev)
            snprintf(split, sizeof split,
                     " (%.2f GiB the trainer + %.2f GiB the device's libraries and scratch)",
                     gib(pk), gib(reserve));
        else if (run)
            snprintf(split, sizeof split,
                     " (%.2f GiB training%s + %.2f GiB the run holds besides: tokenizer, data, "
                     "output writing)",
                     gib(pk), xch, gib(reserve));
        else if (xch[0])
            snprintf(split, sizeof split, " (%s)", xch + 2);
        return lt_error(LT_ERR_NOMEM,
                        "%smemory budget %.2f GiB is below the smallest plan (batch %d, sequence "
                        "%d): %.2f GiB predicted peak%s; raise --memory-budget, use --base-dtype "
                        "bf16, --grad-checkpoint, fewer LoRA targets or a smaller model",
                        dev ? "device " : "", gib(budget), B, T, gib(pk + reserve), split);
    }
    budget -= reserve;
    /* the sequence length first (at the smallest or given batch): it decides what data fits */
    if (auto_t && (s = largest(mc, src, dev, c, budget, B, T, max_seq, 0, &T))) return s;
    if (auto_b && (s = largest(mc, src, dev, c, budget, T, B, max_batch, 1, &B))) return s;
    lt_train_config f = *c;
    f.batch_size = B;
    f.seq_len = T;
    if (plan && (s = lt_train_plan_src_(mc, src, &f, plan))) return s;
    if (batch) *batch = B;
    if (seq_len) *seq_len = T;
    if (reserve_out) *reserve_out = reserve;
    return LT_OK;
}

lt_status lt_train_plan_fit(const lt_model_config *mc, const lt_train_config *c, int64_t budget,
                            int max_batch, int max_seq, int *batch, int *seq_len,
                            lt_train_plan_t *plan) {
    return fit(mc, NULL, c, budget, 0, 0, max_batch, max_seq, batch, seq_len, plan, NULL);
}

lt_status lt_train_plan_fit_model(const lt_model *m, const lt_train_config *c, int64_t budget,
                                  int max_batch, int max_seq, int *batch, int *seq_len,
                                  lt_train_plan_t *plan) {
    const lt_base_files f = {.lazy = m};
    return fit(&m->config, lt_model_is_lazy(m) ? &f : NULL, c, budget, 0, 0, max_batch, max_seq,
               batch, seq_len, plan, NULL);
}

lt_status lt_train_plan_fit_run(const lt_model *m, const lt_train_config *c, int64_t budget,
                                int64_t resident_bytes, int max_batch, int max_seq, int *batch,
                                int *seq_len, lt_train_plan_t *plan, int64_t *reserve) {
    const lt_base_files f = {.lazy = m};
    return fit(&m->config, lt_model_is_lazy(m) ? &f : NULL, c, budget, 1, resident_bytes, max_batch,
               max_seq, batch, seq_len, plan, reserve);
}

lt_status lt_train_plan_fit_device(const lt_model *m, const lt_train_config *c, const lt_backend *be,
                                   int64_t budget, int max_batch, int max_seq, int *batch,
                                   int *seq_len, lt_train_plan_t *plan, int64_t *reserve) {
    const lt_base_files f = {.lazy = m, .dev = be};
    return fit(&m->config, lt_model_is_lazy(m) ? &f : NULL, c, budget, 2, 0, max_batch, max_seq,
               batch, seq_len, plan, reserve);
}
