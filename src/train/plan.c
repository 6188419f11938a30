/* plan.c - training config defaults, validation, parsing helpers and the memory plan.
 *
 * lt_train_plan runs the trainer's layout in counting mode (trainer_layout.c), so its
 * per-category bytes are exactly what lt_trainer_create allocates; the predicted peak adds the
 * lt_model's fp32 weights and a fixed process-overhead estimate (docs/TRAINING.md). With a
 * released 16-bit base the peak is the larger of two moments: inside lt_trainer_create (fp32
 * model + the 16-bit copies being made) and training (the trainer's blocks, no fp32 model).
 * Over a lazy model (what `train` uses for adapters) the frozen tensors' stored dtypes decide
 * what is read in place from the mapped files; lt_train_plan_assumed plans the same over the
 * files a config describes before they exist (every tensor in the config's torch_dtype). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "trainer_internal.h"

const char *lt_train_method_name(lt_train_method m) {
    switch (m) {
    case LT_METHOD_LORA:
        return "lora";
    case LT_METHOD_DORA:
        return "dora";
    case LT_METHOD_FULL:
        return "full";
    case LT_METHOD_QLORA:
        return "qlora";
    }
    return "?";
}

lt_status lt_train_method_parse(const char *s, lt_train_method *out) {
    for (int m = 0; m <= LT_METHOD_QLORA; m++)
        if (s && !strcasecmp(s, lt_train_method_name((lt_train_method)m))) {
            *out = (lt_train_method)m;
            return LT_OK;
        }
    return lt_error(LT_ERR_ARG, "method: expected lora, dora, full or qlora, got '%s'",
                    s ? s : "(null)");
}

lt_status lt_target_mask_parse(const char *s, unsigned *out) {
    if (!s || !*s) return lt_error(LT_ERR_ARG, "lora targets: empty list");
    if (!strcmp(s, "all") || !strcmp(s, "all-linear")) {
        *out = LT_TARGET_ALL;
        return LT_OK;
    }
    static const char *shorts[LT_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned mask = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const char *ln = lt_target_name(t);
            if ((strlen(shorts[t]) == len && !strncmp(p, shorts[t], len)) ||
                (strlen(ln) == len && !strncmp(p, ln, len)))
                found = t;
        }
        if (found < 0)
            return lt_error(LT_ERR_ARG,
                            "lora targets: unknown target '%.*s' (expected q,k,v,o,gate,up,down "
                            "or their *_proj names, or 'all')",
                            (int)len, p);
        mask |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    *out = mask;
    return LT_OK;
}

const char *lt_mem_category_name(lt_mem_category c) {
    static const char *n[LT_MEM_COUNT] = {"weights",   "trainable",   "grads",
                                          "optimizer", "activations", "workspace"};
    return (c >= 0 && c < LT_MEM_COUNT) ? n[c] : "?";
}

void lt_train_config_default(lt_train_config *c) {
    memset(c, 0, sizeof *c);
    c->method = LT_METHOD_LORA;
    c->lora.r = 8;
    c->lora.alpha = 16.0f;
    c->lora.targets = LT_TARGET_Q | LT_TARGET_V;
    c->batch_size = 1;
    c->seq_len = 512;
    c->base_dtype = LT_DTYPE_F32;
    c->compute_dtype = LT_DTYPE_F32;
    c->lr = 1e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.01f;
    c->grad_clip = 1.0f;
    c->grad_accum = 1;
    c->seed = 42;
    c->release_base_fp32 = 1;
}

int lt_train_releases_base(const lt_train_config *c) {
    if (c->method == LT_METHOD_QLORA) return c->release_base_fp32;
    return c->release_base_fp32 && c->base_dtype != LT_DTYPE_F32 &&
           (c->method == LT_METHOD_LORA || c->method == LT_METHOD_DORA);
}

void lt_train_config_normalize_(lt_train_config *c) {
    /* QLoRA keeps the embedding, head and norms unquantized in 16 bits (as PEFT + bitsandbytes
     * keep them in the compute dtype): an F32 base_dtype means BF16 there */
    if (c->method == LT_METHOD_QLORA && c->base_dtype == LT_DTYPE_F32)
        c->base_dtype = LT_DTYPE_BF16;
}

static lt_status check_range(const char *field, int b, int e, int L) {
    int ee = e <= 0 ? L : e;
    if (b < 0 || b >= L || ee > L || ee <= b)
        return lt_error(LT_ERR_ARG,
                        "%s.layer_begin/layer_end: expected 0 <= begin < end <= %d (end <= 0 = "
                        "all), got [%d, %d)",
                        field, L, b, e);
    return LT_OK;
}

lt_status lt_train_config_validate(const lt_model_config *mc, const lt_train_config *c) {
    if (c->method < LT_METHOD_LORA || c->method > LT_METHOD_QLORA)
        return lt_error(LT_ERR_ARG, "method: expected lora, dora, full or qlora, got %d",
                        (int)c->method);
    if (c->batch_size < 1)
        return lt_error(LT_ERR_ARG, "batch_size: expected >= 1, got %d", c->batch_size);
    if (c->ranks < 0) return lt_error(LT_ERR_ARG, "ranks: expected >= 0, got %d", c->ranks);
    if (c->zero_ranks < 0 ||
        (c->zero_ranks > 0 && (c->zero_rank < 0 || c->zero_rank >= c->zero_ranks)))
        return lt_error(LT_ERR_ARG,
                        "zero_ranks %d, zero_rank %d: expected 0 (off), or ranks >= 1 and 0 <= "
                        "rank < ranks",
                        c->zero_ranks, c->zero_rank);
    if (c->seq_len < 1) return lt_error(LT_ERR_ARG, "seq_len: expected >= 1, got %d", c->seq_len);
    if ((int64_t)c->batch_size * c->seq_len > (1 << 24))
        return lt_error(LT_ERR_ARG, "batch_size * seq_len: expected <= 16777216, got %lld",
                        (long long)c->batch_size * c->seq_len);
    if (c->compute_dtype != LT_DTYPE_F32 && c->compute_dtype != LT_DTYPE_BF16)
        return lt_error(LT_ERR_ARG, "compute_dtype: expected F32 or BF16, got %s",
                        lt_dtype_name(c->compute_dtype));
    if (c->compute_dtype == LT_DTYPE_BF16 && c->method == LT_METHOD_DORA)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "compute_dtype: BF16 is not available with DoRA (its weight norms and "
                        "products run in fp32): use F32");
    if (c->base_dtype != LT_DTYPE_F32 && c->base_dtype != LT_DTYPE_BF16 &&
        c->base_dtype != LT_DTYPE_F16)
        return lt_error(LT_ERR_ARG, "base_dtype: expected F32, BF16 or F16, got %s",
                        lt_dtype_name(c->base_dtype));
    if (!(c->lr >= 0) || !isfinite(c->lr))
        return lt_error(LT_ERR_ARG, "lr: expected a finite value >= 0, got %g", (double)c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1))
        return lt_error(LT_ERR_ARG, "beta1: expected [0, 1), got %g", (double)c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1))
        return lt_error(LT_ERR_ARG, "beta2: expected [0, 1), got %g", (double)c->beta2);
    if (!(c->eps > 0)) return lt_error(LT_ERR_ARG, "eps: expected > 0, got %g", (double)c->eps);
    if (!(c->weight_decay >= 0))
        return lt_error(LT_ERR_ARG, "weight_decay: expected >= 0, got %g", (double)c->weight_decay);
    if (c->grad_accum < 1)
        return lt_error(LT_ERR_ARG, "grad_accum: expected >= 1, got %d", c->grad_accum);
    if (c->ce_chunk_rows < 0)
        return lt_error(LT_ERR_ARG, "ce_chunk_rows: expected >= 0, got %d", c->ce_chunk_rows);
    if (c->method == LT_METHOD_FULL) {
        lt_status st = check_range("full", c->full.layer_begin, c->full.layer_end, mc->n_layers);
        if (st) return st;
    } else {
        if (c->lora.r < 1) return lt_error(LT_ERR_ARG, "lora.r: expected >= 1, got %d", c->lora.r);
        if (!(c->lora.alpha > 0) || !isfinite(c->lora.alpha))
            return lt_error(LT_ERR_ARG, "lora.alpha: expected > 0, got %g", (double)c->lora.alpha);
        if (!(c->lora.dropout >= 0 && c->lora.dropout < 1))
            return lt_error(LT_ERR_ARG, "lora.dropout: expected [0, 1), got %g",
                            (double)c->lora.dropout);
        if (c->lora.targets == 0 || (c->lora.targets & ~(unsigned)LT_TARGET_ALL))
            return lt_error(LT_ERR_ARG,
                            "lora.targets: expected a non-empty mask of LT_TARGET_* bits, got 0x%x",
                            c->lora.targets);
        lt_status st = check_range("lora", c->lora.layer_begin, c->lora.layer_end, mc->n_layers);
        if (st) return st;
    }
    return LT_OK;
}

int64_t lt_train_overhead_bytes_(int64_t planned_bytes) {
    /* Process memory beyond the planned buffers and the model's weights: binary, libc /
     * OpenBLAS / OpenMP text and data, thread stacks, OpenBLAS's GEMM buffers, malloc and
     * page-table bookkeeping. Calibrated with bench/run_plan_vs_rss.sh (30 configs, 2-core
     * machine, 2026-11-25, bench/RESULTS.md): measured peak RSS - (model + allocations) was
     * 6.3 MiB for the smallest runs and grew with the planned bytes (22 MiB at 3 GB, full FT),
     * about 6 MiB + 0.6%. A fixed 16 MiB overestimated small runs by up to 17%.
     * Recalibrated 2026-12-06 (session 9): the program now also maps libpq, OpenMPI and more of
     * oneDNN (bf16 adapters' GEMM shapes); SmolLM2-135M LoRA / QLoRA runs measured 22-25 MiB
     * above the plan (tests/train/test_plan_config_only.py), so 14 MiB + 0.6%. */
    return ((int64_t)14 << 20) + planned_bytes / 160;
}

lt_status lt_train_exchange_size(int64_t n_trainable, int batch_size, int grad_accum, int ranks,
                                 lt_train_exchange *out) {
    memset(out, 0, sizeof *out);
    if (ranks < 1 || batch_size < 1 || grad_accum < 1 || n_trainable < 0)
        return lt_error(LT_ERR_ARG,
                        "data-parallel exchange: expected ranks, batch_size, grad_accum >= 1, got "
                        "%d, %d, %d",
                        ranks, batch_size, grad_accum);
    const int64_t P = n_trainable;
    out->rows = (batch_size + ranks - 1) / ranks;
    out->slot_bytes = 2 * sizeof(double) + (size_t)(P + (P & 1)) * sizeof(float); /* 8-aligned */
    const double send = (double)grad_accum * out->rows * (double)out->slot_bytes;
    if (send * (ranks + 1) > 0.5 * (double)SIZE_MAX)
        return lt_error(LT_ERR_NOMEM,
                        "data-parallel exchange: %.0f bytes of row gradients per rank (%d ranks)",
                        send * (ranks + 1), ranks);
    out->send_bytes = (size_t)grad_accum * (size_t)out->rows * out->slot_bytes;
    out->recv_bytes = out->send_bytes * (size_t)ranks;
    out->sum_bytes = (size_t)(P ? P : 1) * sizeof(float);
    out->total_bytes = (int64_t)(out->send_bytes + out->recv_bytes + out->sum_bytes);
    return LT_OK;
}

lt_status lt_train_plan(const lt_model_config *mc, const lt_train_config *c,
                        lt_train_plan_t *out) {
    return lt_train_plan_src_(mc, NULL, c, out);
}

lt_status lt_train_plan_model(const lt_model *m, const lt_train_config *c, lt_train_plan_t *out) {
    const lt_base_files f = {.lazy = m};
    return lt_train_plan_src_(&m->config, lt_model_is_lazy(m) ? &f : NULL, c, out);
}

lt_status lt_train_plan_device(const lt_model *m, const lt_train_config *c, const lt_backend *be,
                               lt_train_plan_t *out) {
    const lt_base_files f = {.lazy = m, .dev = be};
    return lt_train_plan_src_(&m->config, lt_model_is_lazy(m) ? &f : NULL, c, out);
}

lt_status lt_train_plan_assumed(const lt_model_config *mc, lt_dtype weights_dtype,
                                const lt_train_config *c, lt_train_plan_t *out) {
    if (weights_dtype != LT_DTYPE_F32 && weights_dtype != LT_DTYPE_F16 &&
        weights_dtype != LT_DTYPE_BF16) {
        memset(out, 0, sizeof *out);
        return lt_error(LT_ERR_ARG, "weights dtype: expected F32, F16 or BF16, got %s",
                        lt_dtype_name(weights_dtype));
    }
    /* full fine-tuning loads the model whole as fp32, whatever the files hold */
    if (c->method == LT_METHOD_FULL) return lt_train_plan_src_(mc, NULL, c, out);
    const lt_base_files f = {.lazy = NULL, .dtype = weights_dtype};
    return lt_train_plan_src_(mc, &f, c, out);
}

lt_status lt_train_plan_src_(const lt_model_config *mc, const lt_base_files *src,
                             const lt_train_config *cin, lt_train_plan_t *out) {
    memset(out, 0, sizeof *out);
    lt_train_config cn = *cin;
    lt_train_config_normalize_(&cn);
    const lt_train_config *c = &cn;
    lt_status st = lt_model_config_validate(mc, "train plan");
    if (st) return st;
    st = lt_train_config_validate(mc, c);
    if (st) return st;
    int64_t ws_head = 0;
    lt_layout_src_info si;
    st = lt_trainer_layout_(NULL, mc, src, c, out->alloc, &out->n_tensors, &out->n_trainable,
                            &ws_head, &si);
    if (st) return st;
    /* the trainer struct itself is one more recorded allocation (workspace) */
    out->alloc[LT_MEM_WORKSPACE] += ((int64_t)sizeof(lt_trainer) + 63) & ~(int64_t)63;
    out->n_allocs = 1;
    for (int k = 0; k < LT_MEM_COUNT; k++) {
        out->alloc_total += out->alloc[k];
        if (out->alloc[k] && k != LT_MEM_WORKSPACE) out->n_allocs++;
    }
    if (out->alloc[LT_MEM_WORKSPACE]) out->n_allocs++;
    out->n_params = lt_model_config_n_params(mc);
    if (c->ranks >= 1) { /* data parallelism: each rank's exchange buffers (lt_run's dp_create) */
        lt_train_exchange ex;
        if ((st = lt_train_exchange_size(out->n_trainable, c->batch_size, c->grad_accum, c->ranks,
                                         &ex)))
            return st;
        out->ranks = c->ranks;
        out->exchange_bytes = ex.total_bytes;
    }
    const int64_t xb = out->exchange_bytes; /* allocated after the trainer: steady state only */
    for (int k = 0; k < LT_MEM_COUNT; k++)
        out->bytes[k] = out->alloc[k];
    if (src) {
        /* a lazy model holds no fp32 weights: the frozen tensors used in place are resident
         * (file-backed) as the steps touch them; while lt_trainer_create converts a tensor its
         * mapped pages are resident too, until it is evicted */
        out->lazy = 1;
        out->mapped_bytes = si.mapped_bytes;
        out->bytes[LT_MEM_WEIGHTS] += si.mapped_bytes;
        out->overhead_bytes = lt_train_overhead_bytes_(out->alloc_total + si.mapped_bytes + xb);
        out->steady_bytes = out->alloc_total + si.mapped_bytes + out->overhead_bytes + xb;
        out->create_touched_bytes = si.convert_max_bytes;
        out->create_peak_bytes = out->steady_bytes - xb + si.convert_max_bytes;
        out->peak_bytes = out->create_peak_bytes > out->steady_bytes ? out->create_peak_bytes
                                                                     : out->steady_bytes;
        out->device_bytes = out->alloc_total + (src->dev ? si.mapped_dev_bytes : si.mapped_bytes) -
                            si.host_embd_bytes;
        out->device_host_bytes = si.host_embd_bytes;
        return LT_OK;
    }
    out->model_bytes = out->n_params * 4;
    out->released_base = lt_train_releases_base(c);
    if (c->method == LT_METHOD_FULL) {
        out->bytes[LT_MEM_TRAINABLE] += out->n_trainable * 4;
        out->bytes[LT_MEM_WEIGHTS] += (out->n_params - out->n_trainable) * 4;
    } else if (!out->released_base) {
        out->bytes[LT_MEM_WEIGHTS] += out->model_bytes;
    }
    out->overhead_bytes = lt_train_overhead_bytes_(
        (out->released_base ? 0 : out->model_bytes) + out->alloc_total + xb);
    out->steady_bytes =
        (out->released_base ? 0 : out->model_bytes) + out->alloc_total + out->overhead_bytes + xb;
    if (out->released_base) {
        /* the trainer struct (its own allocation) is written too */
        out->create_touched_bytes = ws_head + (((int64_t)sizeof(lt_trainer) + 63) & ~(int64_t)63);
        out->create_peak_bytes = out->model_bytes + out->alloc[LT_MEM_WEIGHTS] +
                                 out->create_touched_bytes + out->overhead_bytes;
    } else {
        out->create_peak_bytes = out->steady_bytes - xb;
    }
    out->peak_bytes =
        out->create_peak_bytes > out->steady_bytes ? out->create_peak_bytes : out->steady_bytes;
    /* the blocks and, on the device, copies of every host weight the step reads (bytes[]) */
    for (int k = 0; k < LT_MEM_COUNT; k++)
        out->device_bytes += out->bytes[k];
    out->device_bytes -= si.host_embd_bytes;
    out->device_host_bytes = si.host_embd_bytes;
    return LT_OK;
}
