/* plan_fit.c - automatic batch size and sequence length: the largest values whose predicted
 * peak (lt_train_plan, which equals the trainer's allocation plus what the model holds and the
 * measured overhead) fits a memory budget. The peak grows with B and T, so each is a binary
 * search over plans; nothing is allocated. */
#include "trainer_internal.h"

static lt_status peak_at(const lt_model_config *mc, const lt_model *src, const lt_train_config *c,
                         int B, int T, int64_t *peak) {
    lt_train_config t = *c;
    t.batch_size = B;
    t.seq_len = T;
    lt_train_plan_t p;
    lt_status s = lt_train_plan_src_(mc, src, &t, &p);
    if (s) return s;
    *peak = p.peak_bytes;
    return LT_OK;
}

/* Largest v in [lo, hi] with fits(v), given fits(lo); monotone. */
static lt_status largest(const lt_model_config *mc, const lt_model *src, const lt_train_config *c,
                         int64_t budget, int fixed, int lo, int hi, int vary_batch, int *out) {
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        int64_t pk;
        lt_status s = vary_batch ? peak_at(mc, src, c, mid, fixed, &pk)
                                 : peak_at(mc, src, c, fixed, mid, &pk);
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

static lt_status fit(const lt_model_config *mc, const lt_model *src, const lt_train_config *c,
                     int64_t budget, int max_batch, int max_seq, int *batch, int *seq_len,
                     lt_train_plan_t *plan) {
    if (budget <= 0)
        return lt_error(LT_ERR_ARG, "memory budget: expected > 0 bytes, got %lld", (long long)budget);
    const int auto_b = c->batch_size <= 0, auto_t = c->seq_len <= 0;
    if (max_batch < 1) max_batch = 1;
    if (max_seq < 2) max_seq = 2;
    const int min_t = max_seq < 16 ? max_seq : 16;
    int B = auto_b ? 1 : c->batch_size, T = auto_t ? min_t : c->seq_len;
    int64_t pk;
    lt_status s = peak_at(mc, src, c, B, T, &pk);
    if (s) return s;
    if (pk > budget)
        return lt_error(LT_ERR_NOMEM,
                        "memory budget %.2f GiB is below the smallest plan (batch %d, sequence "
                        "%d): %.2f GiB predicted peak; raise --memory-budget, use --base-dtype "
                        "bf16, --grad-checkpoint, fewer LoRA targets or a smaller model",
                        gib(budget), B, T, gib(pk));
    /* the sequence length first (at the smallest or given batch): it decides what data fits */
    if (auto_t && (s = largest(mc, src, c, budget, B, T, max_seq, 0, &T))) return s;
    if (auto_b && (s = largest(mc, src, c, budget, T, B, max_batch, 1, &B))) return s;
    lt_train_config f = *c;
    f.batch_size = B;
    f.seq_len = T;
    if (plan && (s = lt_train_plan_src_(mc, src, &f, plan))) return s;
    if (batch) *batch = B;
    if (seq_len) *seq_len = T;
    return LT_OK;
}

lt_status lt_train_plan_fit(const lt_model_config *mc, const lt_train_config *c, int64_t budget,
                            int max_batch, int max_seq, int *batch, int *seq_len,
                            lt_train_plan_t *plan) {
    return fit(mc, NULL, c, budget, max_batch, max_seq, batch, seq_len, plan);
}

lt_status lt_train_plan_fit_model(const lt_model *m, const lt_train_config *c, int64_t budget,
                                  int max_batch, int max_seq, int *batch, int *seq_len,
                                  lt_train_plan_t *plan) {
    return fit(&m->config, lt_model_is_lazy(m) ? m : NULL, c, budget, max_batch, max_seq, batch,
               seq_len, plan);
}
