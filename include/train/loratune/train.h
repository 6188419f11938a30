/* train.h - the CPU training engine: LoRA / DoRA / full fine-tuning of a Llama-family lt_model.
 *
 * Flow: fill an lt_train_config (start from lt_train_config_default), optionally size it with
 * lt_train_plan (config only, no weights), create an lt_trainer on a loaded lt_model, then per
 * optimizer step call lt_trainer_accumulate once per micro-batch and lt_trainer_step once.
 *
 * Invariants:
 *   - Every buffer a step needs is allocated by lt_trainer_create, through one allocator that
 *     records bytes per lt_mem_category; lt_train_plan computes the same numbers from the
 *     configs (the same layout code), so plan == allocation exactly. accumulate / step / eval
 *     never allocate (lt_trainer_mem reports the allocation count to check it).
 *   - Trainable values and gradients are fp32; AdamW moments are fp32.
 *   - Frozen base weights: base_dtype F32 uses the lt_model's fp32 weights directly (zero
 *     copy). BF16 / F16 keeps a complete frozen copy in the trainer (16-bit matrices, embedding
 *     and untied head; norms / biases as rounded fp32) and dequantizes a matrix into a
 *     workspace before each matmul. For LoRA / DoRA it then, by default
 *     (release_base_fp32), releases the lt_model's fp32 weights (lt_model_release_weights), so
 *     a 16-bit base really halves the frozen weights; the plan counts the moment both exist
 *     (docs/TRAINING.md).
 *   - Full fine-tuning trains the lt_model's fp32 weights IN PLACE (no copy).
 *   - Gradients of one optimizer step: grads accumulate (+=) over micro-batches; step clips,
 *     applies AdamW and zeroes them.
 *
 * Ownership: the lt_model passed to lt_trainer_create is borrowed and must outlive the trainer
 * (full FT writes into it; a 16-bit LoRA / DoRA base releases its fp32 weights). Batches and their
 * arrays are borrowed for the call. Tensor names returned by the enumeration are owned by the
 * trainer; tensor data is reached only by copies (lt_trainer_read / lt_trainer_write). */
#ifndef LORATUNE_TRAIN_H
#define LORATUNE_TRAIN_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/data.h"
#include "loratune/model.h"

struct lt_backend; /* backend.h */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_METHOD_LORA = 0,
    LT_METHOD_DORA,
    LT_METHOD_FULL,
    LT_METHOD_QLORA, /* reserved: LT_ERR_UNSUPPORTED for now */
} lt_train_method;
const char *lt_train_method_name(lt_train_method m); /* "lora", "dora", "full", "qlora" */
/* "lora"|"dora"|"full"|"qlora" -> method; LT_ERR_ARG naming the value otherwise. */
lt_status lt_train_method_parse(const char *s, lt_train_method *out);

/* LoRA / DoRA target bits, in this order (also the order tensors are enumerated in). */
enum {
    LT_TARGET_Q = 1 << 0,
    LT_TARGET_K = 1 << 1,
    LT_TARGET_V = 1 << 2,
    LT_TARGET_O = 1 << 3,
    LT_TARGET_GATE = 1 << 4,
    LT_TARGET_UP = 1 << 5,
    LT_TARGET_DOWN = 1 << 6,
    LT_TARGET_ALL = 0x7f,
};
#define LT_N_TARGETS 7
/* "q_proj" ... "down_proj" for target index 0..6. */
const char *lt_target_name(int target_index);
/* Parses "q,v", "q_proj,v_proj", "all" (also "all-linear") into a mask; LT_ERR_ARG naming the
 * unknown entry. */
lt_status lt_target_mask_parse(const char *s, unsigned *out);

typedef struct {
    lt_train_method method;
    struct {
        int r;                      /* rank >= 1 */
        float alpha;                /* scale = alpha / r (alpha / sqrt(r) with rslora) */
        float dropout;              /* in [0, 1) */
        int rslora;                 /* 0/1 */
        unsigned targets;           /* LT_TARGET_* mask, non-zero */
        int layer_begin, layer_end; /* layers [begin, end); end <= 0 means n_layers */
    } lora;                         /* LORA / DORA */
    struct {
        int layer_begin, layer_end; /* layers whose params train; end <= 0 means n_layers */
        int freeze_embeddings;      /* 1: embed_tokens frozen (with tied embeddings the head is
                                       the same tensor and is frozen too) */
    } full;                         /* FULL: the final norm and an untied lm_head always train */
    int batch_size;                 /* B: the largest micro-batch rows (buffers sized for it) */
    int seq_len;                    /* T: the largest row length; positions must be in [0, T) */
    int grad_checkpoint; /* 1: keep only each layer's input; recompute the layer in backward */
    lt_dtype base_dtype; /* LT_DTYPE_F32 / BF16 / F16 for the frozen weights */
    lt_dtype compute_dtype; /* LT_DTYPE_F32 (default) or BF16: the linear layers' and the
                               head's matrix products in bf16 with fp32 sums (the backend's
                               gemm_bf16), as PyTorch's bf16 autocast; LoRA, norms, attention,
                               loss and the optimizer stay fp32, trained weights keep fp32
                               masters; not with DoRA. A BF16 base is multiplied as
                               stored; any other weight is rounded to bf16 per product (as
                               autocast casts fp32 weights), and an fp32 head stays fp32. */
    float lr, beta1, beta2, eps, weight_decay; /* AdamW (torch.optim.AdamW semantics) */
    float grad_clip;                           /* global-norm clip; <= 0: no clipping */
    int grad_accum;        /* micro-batches per optimizer step (informational for callers and
                              lt_train_plan; accumulate/step do not enforce it) */
    int ranks;             /* data-parallel ranks (lt_run with a communicator, docs/SCALE_OUT.md)
                              for lt_train_plan: >= 1 adds each rank's exchange buffers
                              (lt_train_exchange_size); 0 (default): one process, no exchange.
                              The trainer ignores it */
    int zero_ranks, zero_rank; /* ZeRO-1 (docs/SCALE_OUT.md): >= 1: the trainer keeps AdamW's
                              moments only for shard zero_rank of zero_ranks equal shards of the
                              gradient span (lt_trainer_zero_shard), and steps with
                              lt_trainer_step_shard; the plan counts 1/zero_ranks of the
                              optimizer state. 0 (default): off, the whole state */
    uint64_t seed;         /* LoRA init and dropout masks */
    int keep_logits;       /* 1: also keep the fp32 logits [B][T][V] of the last accumulate/eval
                              (for tests; an extra activation buffer) */
    int ce_chunk_rows;     /* rows of logits computed at once in the LM head + loss; 0 = auto
                              (256, fewer where 256 rows of logits pass 64 MiB) */
    int release_base_fp32; /* 1 (default): with method LORA / DORA and base_dtype BF16 / F16,
                              lt_trainer_create releases the lt_model's fp32 weights once its
                              16-bit copies are made (lt_model_release_weights): the model can
                              then not run lt_model_forward or another trainer -- reload it.
                              Ignored (nothing released) for an F32 base, which uses the
                              model's weights, and for FULL, which trains them in place. */
    int keep_blas_threads; /* 0 (default): OpenBLAS is set to one thread for the length of each
                              lt_trainer_accumulate / lt_trainer_eval (one OpenMP pool splits
                              every GEMM) and restored after; 1: OpenBLAS's threads are left
                              alone (two pools: A/B measurements, docs/OPS.md). OpenBLAS's
                              thread count is process-wide: concurrent trainers' steps see each
                              other's setting (same results: lt_gemm splits only M / N). */
} lt_train_config;

/* Defaults: LORA r=8 alpha=16 dropout 0, targets q,v, all layers; B=1, T=512, no checkpoint,
 * F32 base, release_base_fp32 1; lr 1e-4, betas (0.9, 0.999), eps 1e-8, wd 0.01, clip 1.0,
 * accum 1, seed 42. */
void lt_train_config_default(lt_train_config *c);
/* 1 when lt_trainer_create will release the model's fp32 weights under config c (LORA / DORA,
 * base BF16 / F16, release_base_fp32). */
int lt_train_releases_base(const lt_train_config *c);
/* Checks c against the model config; LT_ERR_ARG with a message naming the field
 * ("lora.r: expected >= 1, got 0"), LT_ERR_UNSUPPORTED for qlora. */
lt_status lt_train_config_validate(const lt_model_config *mc, const lt_train_config *c);

/* ---- memory plan ------------------------------------------------------------------------ */
typedef enum {
    LT_MEM_WEIGHTS = 0, /* frozen base weights held by the trainer (16-bit copies) */
    LT_MEM_TRAINABLE,   /* trainable params the trainer holds (LoRA A/B, DoRA magnitudes) */
    LT_MEM_GRADS,       /* fp32 gradients */
    LT_MEM_OPTIMIZER,   /* AdamW m and v */
    LT_MEM_ACTIVATIONS, /* what the forward saves for backward (+ kept logits) */
    LT_MEM_WORKSPACE,   /* per-layer recompute / gradient scratch, logit chunk, tables */
    LT_MEM_COUNT
} lt_mem_category;
const char *lt_mem_category_name(lt_mem_category c); /* "weights", "trainable", ... */

typedef struct {
    /* Exactly what lt_trainer_create allocates, per category. */
    int64_t alloc[LT_MEM_COUNT];
    int64_t alloc_total;
    int64_t n_allocs; /* allocation calls lt_trainer_create makes */
    /* Bytes per category while training (the budget table): alloc plus what the lt_model
     * still holds then -- its fp32 weights, frozen ones in WEIGHTS, trained-in-place ones in
     * TRAINABLE -- unless released_base (then WEIGHTS is just the trainer's 16-bit copy). */
    int64_t bytes[LT_MEM_COUNT];
    int64_t model_bytes;    /* fp32 weights the loaded lt_model holds (n_params * 4) */
    int64_t overhead_bytes; /* estimate: binary, libraries, BLAS/OpenMP thread buffers */
    int64_t peak_bytes;     /* predicted peak RSS: max(create_peak_bytes, steady_bytes) */
    int64_t n_trainable;    /* trainable parameters (floats) */
    int64_t n_params;       /* base model parameters */
    int n_tensors;          /* trainable tensors */
    int released_base;      /* 1: lt_trainer_create releases the model's fp32 weights */
    /* steady state (training) = sum of bytes[] + overhead + exchange_bytes: alloc_total +
     * overhead + exchange_bytes, plus model_bytes unless released_base */
    int64_t steady_bytes;
    /* inside lt_trainer_create, before the release (released_base only; else = steady_bytes
     * less exchange_bytes, allocated after the trainer):
     * model_bytes + alloc[WEIGHTS] (the copies being made) + create_touched_bytes + overhead.
     * The other blocks are allocated but first written after the release. */
    int64_t create_peak_bytes;
    int64_t create_touched_bytes; /* workspace bookkeeping written while the copies are made
                                     (lazy: the largest file tensor converted, resident until
                                     evicted) */
    /* lazy model (lt_train_plan_model): model_bytes = 0; frozen tensors used in place from the
     * mapped file (zero-copy, or kept block-quantized) are counted in mapped_bytes and in
     * bytes[WEIGHTS]: they become resident (file-backed pages) as the steps read them */
    int lazy;
    int64_t mapped_bytes;
    /* What the trainer allocates in a device backend's memory (lt_trainer_create_on with
     * be->device; the trainer's struct and small host twins included, so a slight over-count):
     * every block, plus the device copies of the weights the step reads from outside them (a
     * loaded model's fp32 weights unless released; a lazy model's in-place tensors, as stored
     * where the device reads the dtype, else as fp32: lt_train_plan_device). Without a device
     * backend, mapped tensors count as stored. Not in it: device_host_bytes, the WEIGHTS
     * a device trainer keeps in host memory (QLoRA of an untied model: the token embedding,
     * whose rows a step gathers on the host; counted in bytes[] and peak_bytes as before). */
    int64_t device_bytes;
    int64_t device_host_bytes;
    /* data parallelism (c->ranks >= 1): the rank count and what each rank holds for the
     * exchange of row gradients (lt_train_exchange_size's total_bytes, host memory), counted in
     * steady_bytes and peak_bytes (not in bytes[], which is the trainer's; nor device_bytes).
     * 0 and 0 for one process. */
    int ranks;
    int64_t exchange_bytes;
} lt_train_plan_t;

/* The buffers each of `ranks` data-parallel ranks allocates to exchange row gradients (lt_run
 * with a communicator allocates exactly these; lt_train_plan counts total_bytes): grad_accum x
 * ceil(batch_size / ranks) row slots of its own rows (send), `ranks` times that received, and the
 * summed gradient. A slot is one row's {loss sum, loss tokens} (two doubles) and its gradient of
 * n_trainable floats, padded to 8 bytes. LT_ERR_ARG for ranks, batch_size or grad_accum < 1;
 * LT_ERR_NOMEM when the sizes pass half the address space. */
typedef struct {
    int rows;          /* ceil(batch_size / ranks): one rank's rows of a micro-batch, at most */
    size_t slot_bytes; /* one row: 16 + n_trainable floats (padded to an even count) */
    size_t send_bytes; /* grad_accum x rows x slot_bytes */
    size_t recv_bytes; /* ranks x send_bytes */
    size_t sum_bytes;  /* n_trainable floats (at least one) */
    int64_t total_bytes;
} lt_train_exchange;
lt_status lt_train_exchange_size(int64_t n_trainable, int batch_size, int grad_accum, int ranks,
                                 lt_train_exchange *out);

/* From the configs alone (no weights). Validates like lt_train_config_validate. */
lt_status lt_train_plan(const lt_model_config *mc, const lt_train_config *c, lt_train_plan_t *out);
/* The plan for this model: lt_train_plan for a loaded (fp32) one; for a lazy one
 * (lt_model_load_opts.lazy) the tensors' stored dtypes decide what is used in place from the
 * mapped file and what is copied -- exactly what lt_trainer_create(m, c) will do. */
lt_status lt_train_plan_model(const struct lt_model *m, const lt_train_config *c,
                              lt_train_plan_t *out);
/* lt_train_plan_model of the lazily loaded Hugging Face folder that config mc describes, before
 * its weight files are there (planning a download; `loratune plan` on a folder with only
 * config.json): every tensor assumed stored as weights_dtype (F32 / F16 / BF16; pass
 * mc->dtype, config.json's torch_dtype), aligned, in Hugging Face row order -- so exactly the
 * tensors the trainer would use in place and those it would copy (NF4 for QLoRA) tensor by
 * tensor, as lt_trainer_create on the real files does. Full fine-tuning loads the model whole
 * as fp32 whatever the files hold: the plan is lt_train_plan's. LT_ERR_ARG for another dtype
 * (and as lt_train_plan for bad configs). */
lt_status lt_train_plan_assumed(const lt_model_config *mc, lt_dtype weights_dtype,
                                const lt_train_config *c, lt_train_plan_t *out);

/* lt_train_plan_model for a trainer on device backend be (its supports_dtype decides what a
 * lazy model's in-place tensors cost there): plan.device_bytes is exact up to the host struct. */
lt_status lt_train_plan_device(const struct lt_model *m, const lt_train_config *c,
                               const struct lt_backend *be, lt_train_plan_t *out);

/* Automatic sizes: c->batch_size <= 0 and / or c->seq_len <= 0 mean "the largest whose
 * predicted peak (plan.peak_bytes) fits budget bytes", searched in [1, max_batch] and
 * [16, max_seq] (the sequence length first, at the given or smallest batch; then the batch at
 * that length). Given values are kept. Fills *batch, *seq_len and, if not NULL, the plan of the
 * result. LT_ERR_NOMEM naming the budget and the smallest plan's peak when even that does not
 * fit. */
lt_status lt_train_plan_fit(const lt_model_config *mc, const lt_train_config *c, int64_t budget,
                            int max_batch, int max_seq, int *batch, int *seq_len,
                            lt_train_plan_t *plan);
/* lt_train_plan_fit with lt_train_plan_model's plans (a lazy model's in-place tensors). */
lt_status lt_train_plan_fit_model(const struct lt_model *m, const lt_train_config *c,
                                  int64_t budget, int max_batch, int max_seq, int *batch,
                                  int *seq_len, lt_train_plan_t *plan);
/* lt_train_plan_fit_model for a whole training run (lt_run): the sizes are the largest with
 * plan.peak_bytes + *reserve <= budget, where *reserve (may be NULL) is what the process holds
 * besides the plan -- resident_bytes (its resident set now, with the model, tokenizer and data
 * loaded) less the plan's model_bytes -- plus an estimate of what writing the outputs allocates
 * while the trainer exists (adapter copies; a full fine-tune's Hugging Face tokenizer.json).
 * The LT_ERR_NOMEM message names the budget, the smallest plan and the reserve. */
lt_status lt_train_plan_fit_run(const struct lt_model *m, const lt_train_config *c,
                                int64_t budget, int64_t resident_bytes, int max_batch,
                                int max_seq, int *batch, int *seq_len, lt_train_plan_t *plan,
                                int64_t *reserve);
/* Automatic sizes for a trainer on device backend be: the largest with plan.device_bytes +
 * *reserve <= budget (device memory bytes; the caller passes --memory-budget or what the device
 * has free: lt_backend_mem_info), where *reserve (may be NULL) is LT_DEVICE_RESERVE_BYTES plus
 * 2% of the budget for what the backend allocates beside the trainer (its library handles'
 * workspaces, attention scratch, the allocator's rounding). LT_ERR_NOMEM naming the budget and
 * the smallest plan when even that does not fit. */
#define LT_DEVICE_RESERVE_BYTES ((int64_t)256 << 20)
lt_status lt_train_plan_fit_device(const struct lt_model *m, const lt_train_config *c,
                                   const struct lt_backend *be, int64_t budget, int max_batch,
                                   int max_seq, int *batch, int *seq_len, lt_train_plan_t *plan,
                                   int64_t *reserve);

/* ---- trainer ------------------------------------------------------------------------------ */
typedef struct lt_trainer lt_trainer;

/* m is borrowed (must outlive the trainer; full FT trains its weights in place; BF16/F16 base
 * rounds nothing in m, and with release_base_fp32 frees m's fp32 weights: m stays config-only
 * after the trainer is freed). LT_ERR_ARG if m has no weights (config-only or released). LoRA A is
 * initialised by lt_lora_init(seed), B = 0, DoRA magnitude = row norms of W (+ scale B A); use
 * lt_trainer_set to load other values. *out is new. */
lt_status lt_trainer_create(lt_model *m, const lt_train_config *c, lt_trainer **out);
/* The same on a given backend (backend.h; NULL = lt_backend_cpu()): every op of a step and
 * every buffer of the trainer are that backend's. */
struct lt_backend;
lt_status lt_trainer_create_on(lt_model *m, const lt_train_config *c, const struct lt_backend *be,
                               lt_trainer **out);
void lt_trainer_free(lt_trainer *tr); /* safe on NULL */

/* lt_batch, lt_batch_count: a micro-batch (data.h, which makes them) */

typedef struct {
    double loss_sum; /* sum of token losses over counted tokens */
    int64_t count;   /* counted tokens */
    float loss;      /* loss_sum / count (NaN if count == 0) */
    int64_t positions; /* positions the step computed: B * T less those after each row's last
                          counted target (they feed no loss; unless keep_logits) */
} lt_loss_stats;

/* Forward + backward of one micro-batch; gradients are ADDED to the step's gradients for the
 * loss sum(token losses) * grad_scale. grad_scale = 0 means 1 / (counted tokens of this batch)
 * (the batch's mean loss). For transformers' accumulation normalisation pass
 * 1 / (counted tokens over all micro-batches of the step). out may be NULL.
 * LT_ERR_ARG for bad tokens / targets / positions / shapes, detected before any work
 * (gradients unchanged). */
lt_status lt_trainer_accumulate(lt_trainer *tr, const lt_batch *b, float grad_scale,
                                lt_loss_stats *out);
/* Forward only (loss, and logits when keep_logits), without dropout. Gradients untouched. */
lt_status lt_trainer_eval(lt_trainer *tr, const lt_batch *b, lt_loss_stats *out);
/* Optimizer step: global grad norm (returned in *grad_norm, may be NULL; the PRE-clip norm),
 * clip to grad_clip, AdamW with learning rate lr (lr < 0: config lr), zero gradients. */
lt_status lt_trainer_step(lt_trainer *tr, float lr, float *grad_norm);
void lt_trainer_zero_grad(lt_trainer *tr);
int64_t lt_trainer_step_count(const lt_trainer *tr); /* optimizer steps taken */
/* [B][T][V] fp32 logits of the last accumulate / eval (the batch's B, T, rows packed
 * contiguously), NULL unless keep_logits. Valid until the next call. The trainer's backend
 * memory: a host pointer only on a host backend (lt_backend.device 0); read them anywhere with
 * lt_trainer_logits_read (the first n values into dst). */
const float *lt_trainer_logits(const lt_trainer *tr);
lt_status lt_trainer_logits_read(const lt_trainer *tr, float *dst, int64_t n);
/* Full fine-tuning on a device backend trains device copies of the lt_model's weights: this
 * copies them back into the model (before saving or generating from it). Nothing to do (LT_OK)
 * on a host backend, where the model's weights are trained in place. */
lt_status lt_trainer_sync_model(lt_trainer *tr);
/* The plan the trainer was built from and the bytes / allocation calls recorded so far
 * (bytes[LT_MEM_COUNT], n_allocs may be NULL). */
const lt_train_plan_t *lt_trainer_plan(const lt_trainer *tr);
void lt_trainer_mem(const lt_trainer *tr, int64_t *bytes, int64_t *n_allocs);
const lt_train_config *lt_trainer_config(const lt_trainer *tr);
/* The configuration of the model the trainer was built on (a copy the trainer owns). */
const lt_model_config *lt_trainer_model_config(const lt_trainer *tr);

/* ---- trainable tensors --------------------------------------------------------------------- */
/* Names: LoRA / DoRA as PEFT saves adapters
 *   "base_model.model.model.layers.<l>.self_attn.q_proj.lora_A.weight"   [r][in]
 *   "base_model.model.model.layers.<l>.self_attn.q_proj.lora_B.weight"   [out][r]
 *   "base_model.model.model.layers.<l>.self_attn.q_proj.lora_magnitude_vector" [out] (DoRA)
 *   (mlp.gate_proj / up_proj / down_proj under ".mlp."); full FT: Hugging Face names
 *   "model.embed_tokens.weight", "model.layers.<l>.input_layernorm.weight",
 *   "model.layers.<l>.self_attn.q_proj.weight" / ".bias", ..., "model.norm.weight",
 *   "lm_head.weight" (absent when tied). */
typedef struct {
    int index;        /* for lt_trainer_read / lt_trainer_write */
    const char *name; /* owned by the trainer */
    int ndim;         /* 1 or 2 */
    int64_t shape[2];
    int64_t numel;
    int64_t span_offset; /* where its gradient starts in lt_trainer_grad_span (floats) */
} lt_train_tensor;
/* The values of a trainable tensor live in the trainer's backend (device memory for a GPU
 * backend): they are read and written through these copies, never through pointers. */
typedef enum {
    LT_TENSOR_VALUE = 0, /* the parameter (a write takes effect at the next call) */
    LT_TENSOR_GRAD,      /* its accumulated gradient */
    LT_TENSOR_ADAM_M,    /* AdamW first moment */
    LT_TENSOR_ADAM_V,    /* AdamW second moment */
} lt_tensor_part;
const char *lt_tensor_part_name(lt_tensor_part part); /* "value", "grad", "adam_m", "adam_v" */

int lt_trainer_n_tensors(const lt_trainer *tr);
/* i in [0, n); LT_ERR_ARG otherwise. */
lt_status lt_trainer_tensor(const lt_trainer *tr, int i, lt_train_tensor *out);
/* LT_ERR_NOTFOUND naming the name if absent. */
lt_status lt_trainer_find(const lt_trainer *tr, const char *name, lt_train_tensor *out);
/* Copies elements [offset, offset + n) of part of tensor i to / from the host (the whole
 * tensor: offset 0, n = numel). LT_ERR_ARG for i outside [0, n_tensors), an unknown part or a
 * range outside [0, numel) (naming the tensor). */
lt_status lt_trainer_read(const lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                          float *dst, int64_t n);
lt_status lt_trainer_write(lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                           const float *src, int64_t n);
/* Copies n floats into the named tensor's value; LT_ERR_ARG if n != numel. For DoRA, setting
 * lora_A / lora_B does NOT re-derive the magnitude: set it too if wanted. */
lt_status lt_trainer_set(lt_trainer *tr, const char *name, const float *data, int64_t n);
/* Reductions the backend computes over the step's gradients (nothing copied to the host):
 * 1 when every gradient element is finite, and the global L2 norm (as lt_trainer_step's). */
int lt_trainer_grads_finite(const lt_trainer *tr);
double lt_trainer_grad_norm(const lt_trainer *tr);
/* The step's gradients of every trainable tensor as one span of the trainer's backend memory
 * (device memory on a GPU): *n floats from *buf, the tensors in index order, each at a 64-byte
 * aligned offset (the gaps between them are zero and stay zero); under ZeRO-1 (zero_ranks) *n
 * includes the zero padding to zero_ranks equal shards. For summing them over ranks in place
 * (lt_run_comm.allreduce, run.h). NULL and 0 without trainable tensors. */
void lt_trainer_grad_span(lt_trainer *tr, float **buf, int64_t *n);
/* The span cut into pieces in the order a backward finishes them: one piece per layer with
 * trainable tensors (its tensors and the gaps after them), from the last layer down, each
 * final once that layer's backward is done; then the rest (embedding, final norm, head: final
 * at the end of the backward), layer -1, in offset order. Together they cover the span once.
 * When a layer's tensors are not consecutive, one piece, the whole span (layer -1). Writes at
 * most max pieces (n_tensors + 2 always suffice); returns how many there are. */
typedef struct {
    int layer;      /* the layer whose backward finishes it; -1: the end of the backward */
    int64_t offset; /* floats from the span's start */
    int64_t n;      /* floats */
} lt_grad_piece;
int lt_trainer_grad_pieces(const lt_trainer *tr, lt_grad_piece *out, int max);
/* While set (fn not NULL), lt_trainer_accumulate calls fn(ctx, span + p.offset, p.n) for each
 * of pieces[0..n) as soon as its backward has finished it (pieces: lt_trainer_grad_pieces'
 * list, borrowed until cleared), in the list's order, every piece once: what a data-parallel
 * run uses to start reducing a layer's gradients while the backward of the layers below
 * runs. Set it for the last micro-batch of a step only (the pieces are final then) and clear
 * it after (fn NULL). A non-zero return stops the calls and fails the accumulate
 * (LT_ERR_IO, with the message lt_errmsg held). */
typedef int (*lt_grad_hook)(void *ctx, float *buf, int64_t n);
void lt_trainer_set_grad_hook(lt_trainer *tr, const lt_grad_piece *pieces, int n, lt_grad_hook fn,
                              void *ctx);

/* ---- ZeRO-1 (lt_train_config.zero_ranks >= 1; docs/SCALE_OUT.md) ---------------------------
 * The gradient span (lt_trainer_grad_span, then zero-padded to zero_ranks equal shards of a
 * multiple of 16 floats) is cut into zero_ranks shards; the trainer keeps AdamW's m and v for
 * its own shard only (LT_MEM_OPTIMIZER: 2 x the shard, not 2 x the span). A step of N ranks:
 *   reduce-scatter the span (sum; rank q's shard lands at span + q * n), then on every rank
 *   ss = lt_trainer_shard_sumsq; exchange ss, norm = sqrt(sum over ranks) (non-finite: a bad
 *   gradient somewhere, skip the step: lt_trainer_zero_grad);
 *   lt_trainer_step_shard(lr, norm): clip (as lt_trainer_step, with that norm), AdamW on the
 *   shard's values, and the updated values written into the span where their gradients were;
 *   all-gather the span (each rank's shard from span + rank * n), lt_trainer_load_span: every
 *   tensor's values from the span, the span zeroed.
 * lt_trainer_step refuses to step a ZeRO-1 trainer. Moments through lt_trainer_read: only
 * values inside the shard (LT_ERR_ARG naming the shard otherwise); lt_trainer_write: the part
 * inside the shard is kept, the rest dropped (each rank loads a full checkpoint so).
 * lt_trainer_shard_to_span(part): the shard's m or v copied into the span at the shard (for an
 * all-gather of the whole state into the span, which lt_trainer_read of LT_TENSOR_GRAD then
 * reads tensor by tensor; lt_trainer_zero_grad after). Without ZeRO-1 the functions return
 * LT_ERR_ARG (sumsq: 0). */
void lt_trainer_zero_shard(const lt_trainer *tr, int64_t *offset, int64_t *n, int64_t *span);
double lt_trainer_shard_sumsq(const lt_trainer *tr);
lt_status lt_trainer_step_shard(lt_trainer *tr, float lr, double grad_norm);
lt_status lt_trainer_load_span(lt_trainer *tr);
lt_status lt_trainer_shard_to_span(lt_trainer *tr, lt_tensor_part part);

/* ---- state for checkpoints ---------------------------------------------------------------- */
/* AdamW moments: lt_trainer_read / lt_trainer_write with LT_TENSOR_ADAM_M / LT_TENSOR_ADAM_V. */
/* Counters a resumed run must restore for bit-identical continuation: optimizer steps taken
 * (AdamW bias correction) and training micro-batches run (the dropout mask stream; evaluation
 * does not advance it). */
void lt_trainer_get_counters(const lt_trainer *tr, int64_t *step, uint64_t *micro);
void lt_trainer_set_counters(lt_trainer *tr, int64_t step, uint64_t micro);

#ifdef __cplusplus
}
#endif
#endif
