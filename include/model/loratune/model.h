/* model.h - Llama-family decoder models (llama, mistral, qwen2): config, weights (fp32, or
 * lazily as stored), CPU forward with a KV cache.
 *
 * One model, three file forms: a Hugging Face folder (config.json + safetensors), a GGUF file
 * (general.architecture llama or qwen2), a llama2.c .bin checkpoint. Whatever the form, the
 * loaded lt_model is in the Hugging Face layout:
 *   - matrices are [out][in] row-major (y = W x, as torch.nn.Linear stores them);
 *   - q/k projection rows are in HF's "half-split" rotary order (rotate_half): within each
 *     head, row i < head_dim/2 is the first element of the pair rotated by inv_freq[i] and
 *     row i + head_dim/2 the second. llama2.c and llama.cpp's llama-arch GGUFs store the
 *     interleaved-pair order (rows 2i, 2i+1 form a pair); the loaders permute them back.
 * Loaded whole, all weights are float32 (quantized/half files are dequantized at load), in one
 * allocation (lt_model.params, its own anonymous mapping so freeing it returns the memory to
 * the OS) that the lt_model_weights pointers point into. A trainer with a 16-bit frozen base
 * may release them (lt_model_release_weights): the model is then config-only. Loaded lazily
 * (lt_model_load_opts.lazy), the weights stay as stored in the mapped file; the forward and
 * the trainer read them through the weight provider (lt_model_weight_f32), so the same
 * forward runs on both.
 *
 * Ownership: lt_model and lt_kv_cache are owned by the caller and freed with their _free
 * (safe on NULL). Paths and token arrays passed in are borrowed. */
#ifndef LORATUNE_MODEL_H
#define LORATUNE_MODEL_H

#include "loratune/backend.h"
#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LT_ARCH_LLAMA = 0, LT_ARCH_MISTRAL, LT_ARCH_QWEN2 } lt_arch;
const char *lt_arch_name(lt_arch a); /* "llama", "mistral", "qwen2" */

typedef enum {
    LT_ROPE_SCALING_NONE = 0,
    LT_ROPE_SCALING_LINEAR, /* inv_freq / factor */
    LT_ROPE_SCALING_LLAMA3, /* transformers' _compute_llama3_parameters */
} lt_rope_scaling_type;

typedef struct {
    lt_rope_scaling_type type;
    float factor;
    float low_freq_factor;                /* llama3 only */
    float high_freq_factor;               /* llama3 only */
    int original_max_position_embeddings; /* llama3 only */
} lt_rope_scaling;

typedef struct {
    lt_arch arch;
    int dim;        /* hidden_size */
    int n_layers;   /* num_hidden_layers */
    int n_heads;    /* num_attention_heads */
    int n_kv_heads; /* num_key_value_heads (divides n_heads) */
    int head_dim;   /* config head_dim, else dim / n_heads; even */
    int ffn_dim;    /* intermediate_size */
    int vocab_size;
    int max_seq_len; /* max_position_embeddings / context_length / llama2.c seq_len */
    float norm_eps;  /* rms_norm_eps */
    float rope_theta;
    lt_rope_scaling rope_scaling;
    int sliding_window;  /* 0 = full causal attention; else attend to the last W positions */
    int tied_embeddings; /* LM head shares the token embedding */
    int qkv_bias;        /* q/k/v projections have biases (qwen2; llama attention_bias) */
    int bos_id, eos_id;  /* -1 if none */
    int n_eos_ids;       /* how many eos ids the config listed (eos_id is the first) */
    int eos_ids[8];      /* the first up to 8 of them */
    lt_dtype dtype;      /* torch_dtype / stored dtype of the weights (informational) */
    int dtype_stated;    /* 1: the file stated dtype (config.json torch_dtype / dtype, GGUF's
                            first tensor); 0: it said nothing and F32 is assumed */
} lt_model_config;

/* Reads a Hugging Face config.json. Errors name the field and what was expected. */
lt_status lt_model_config_load_hf(const char *config_json_path, lt_model_config *out);
/* Checks the invariants the forward relies on (also done by every loader). `what` names the
 * source in messages. */
lt_status lt_model_config_validate(const lt_model_config *c, const char *what);
/* Fills inv_freq[head_dim/2] from rope_theta and rope_scaling, in float32 as transformers
 * does (default, linear, llama3). */
void lt_rope_inv_freq(const lt_model_config *c, float *inv_freq);
/* Number of float parameters the weights of this config hold (lm_head counted only when
 * untied). */
int64_t lt_model_config_n_params(const lt_model_config *c);

/* The weights, llm.c style: each field points into lt_model.params; per-layer tensors are
 * stacked over L. D = dim, L = n_layers, H = n_heads, KV = n_kv_heads, hd = head_dim,
 * F = ffn_dim, V = vocab_size. */
typedef struct {
    float *tok_embd;  /* (V, D) */
    float *attn_norm; /* (L, D)      input_layernorm */
    float *wq;        /* (L, H*hd, D) */
    float *wk;        /* (L, KV*hd, D) */
    float *wv;        /* (L, KV*hd, D) */
    float *bq;        /* (L, H*hd)   NULL unless qkv_bias */
    float *bk;        /* (L, KV*hd)  NULL unless qkv_bias */
    float *bv;        /* (L, KV*hd)  NULL unless qkv_bias */
    float *wo;        /* (L, D, H*hd) */
    float *ffn_norm;  /* (L, D)      post_attention_layernorm */
    float *w_gate;    /* (L, F, D) */
    float *w_up;      /* (L, F, D) */
    float *w_down;    /* (L, D, F) */
    float *out_norm;  /* (D) */
    float *lm_head;   /* (V, D)      == tok_embd when tied */
} lt_model_weights;

typedef enum {
    LT_MODEL_FORMAT_HF = 0,
    LT_MODEL_FORMAT_GGUF,
    LT_MODEL_FORMAT_LLAMA2C
} lt_model_format;

typedef struct lt_model {
    lt_model_config config;
    lt_model_weights w;
    float *params; /* the one allocation; n_params floats */
    int64_t n_params;
    float *inv_freq; /* (hd/2) rotary inverse frequencies (GGUF rope_freqs applied) */
    /* where it came from (for inspect) */
    lt_model_format format;
    char *path;                               /* as given to lt_model_load */
    int64_t file_bytes;                       /* total size of the weight files */
    int n_stored_tensors;                     /* tensors read from the file(s) */
    int stored_dtype_tensors[LT_DTYPE_COUNT]; /* stored tensors per dtype */
    int64_t stored_dtype_params[LT_DTYPE_COUNT];
    int qk_permuted_at_load; /* 1 if q/k rows came interleaved (llama2.c, llama GGUF) */
    int weights_released;    /* 1 after lt_model_release_weights (params and w.* are NULL) */
    struct lt_model_source *src; /* lazy: the mapped weight file(s) (opts.lazy), else NULL */
    /* what loading ignored and why, one line each ("" when nothing): tensors the model does
     * not use, a chat template rendered by a fallback. Programs print it; the library never
     * prints. */
    char warnings[1024];
} lt_model;

typedef struct {
    int max_seq_len; /* 0 = keep the config's; else override (e.g. llama2.c seq_len) */
    int config_only; /* 1: read the config and check every tensor's presence and shape, but
                        allocate and convert no weights (params and w.* stay NULL): for
                        inspecting large models */
    int lazy;        /* 1: like config_only, but the weight files stay memory-mapped and the
                        weights are read from them one tensor (or row range) at a time
                        (lt_model_weight_rows): a trainer builds its NF4 / 16-bit copies tensor
                        by tensor, or uses frozen tensors in place (zero-copy, block-quantized
                        GGUF tensors kept quantized). HF folders and GGUF only; ignored for
                        llama2.c .bin (loaded whole). */
} lt_model_load_opts;

/* path: a folder with config.json + model.safetensors[.index.json], a .gguf file, or a
 * llama2.c .bin. opts may be NULL. *out is new, free with lt_model_free. */
lt_status lt_model_load(const char *path, const lt_model_load_opts *opts, lt_model **out);
/* The per-form loaders (lt_model_load dispatches to them); opts may be NULL. */
lt_status lt_model_load_hf(const char *dir, const lt_model_load_opts *opts, lt_model **out);
lt_status lt_model_load_gguf(const char *path, const lt_model_load_opts *opts, lt_model **out);
lt_status lt_model_load_llama2c(const char *path, const lt_model_load_opts *opts, lt_model **out);
/* Allocates a model with zeroed weights for a validated config (for tests / training). */
lt_status lt_model_create(const lt_model_config *c, lt_model **out);
void lt_model_free(lt_model *m); /* safe on NULL */
/* Frees the fp32 weights (m->params, returned to the OS at once) and sets params and every
 * lt_model_weights pointer to NULL; config, inv_freq and the load info stay. For a trainer that
 * holds its own 16-bit copy of the frozen base (lt_train_config.release_base_fp32). Anything
 * that needs the weights afterwards (lt_model_forward, lt_trainer_create, ...) fails with
 * LT_ERR_ARG (see lt_model_check_weights). Safe on NULL and when already released. */
void lt_model_release_weights(lt_model *m);
/* LT_OK when m holds its fp32 weights; else LT_ERR_ARG "<what>: model weights were released to
 * a trainer holding a 16-bit copy" (or "... loaded config-only (no weights)"). */
lt_status lt_model_check_weights(const lt_model *m, const char *what);

/* ---- the weights one at a time (lazy models, and loaded ones alike) ----------------------- */
typedef enum {
    LT_W_TOK_EMBD = 0, /* (V, D) */
    LT_W_ATTN_NORM,    /* per layer (D) */
    LT_W_WQ,           /* per layer (H*hd, D) */
    LT_W_WK,           /* per layer (KV*hd, D) */
    LT_W_WV,           /* per layer (KV*hd, D) */
    LT_W_BQ,           /* per layer (H*hd), qkv_bias only */
    LT_W_BK,           /* per layer (KV*hd), qkv_bias only */
    LT_W_BV,           /* per layer (KV*hd), qkv_bias only */
    LT_W_WO,           /* per layer (D, H*hd) */
    LT_W_FFN_NORM,     /* per layer (D) */
    LT_W_GATE,         /* per layer (F, D) */
    LT_W_UP,           /* per layer (F, D) */
    LT_W_DOWN,         /* per layer (D, F) */
    LT_W_OUT_NORM,     /* (D) */
    LT_W_LM_HEAD,      /* (V, D), untied only */
    LT_W_COUNT
} lt_weight_id;
const char *lt_weight_id_name(lt_weight_id id); /* "wq", "tok_embd", ... */
/* rows x cols of weight id (one layer's, for per-layer weights) in the model's (HF) layout for
 * config c (a 1-D weight: 1 x n); returns 0 when c has no such weight (biases without
 * qkv_bias, lm_head of a tied model) or id is out of range, 1 otherwise. */
int lt_model_weight_shape(const lt_model_config *c, lt_weight_id id, int64_t *rows, int64_t *cols);

/* 1 when m was loaded with opts.lazy (its weights live in the mapped file). */
int lt_model_is_lazy(const lt_model *m);
/* The file's view of weight id of layer (0 for whole-model weights) of a lazy model: its
 * dtype, shape and mapped bytes, in the FILE's row order (see lt_model_weight_interleaved);
 * NULL when m is not lazy or the model has no such weight (biases without qkv_bias, lm_head of
 * a tied model). */
const lt_tensor_view *lt_model_weight_view(const lt_model *m, lt_weight_id id, int layer);
/* 1 when the file stores that weight's rows in the interleaved-pair rotary order (llama-arch
 * GGUF wq / wk / bq / bk): row r of the model's (HF) order is file row
 * h*hd + 2*i + j for r = h*hd + j*hd/2 + i. Lazy models only; else 0. */
int lt_model_weight_interleaved(const lt_model *m, lt_weight_id id);
/* Reorders the rows of w (n_heads heads of head_dim rows, each row `cols` floats) from the
 * interleaved-pair rotary order (llama2.c, llama.cpp GGUF) to HF's half-split order:
 * hf row h*hd + j*hd/2 + i = interleaved row h*hd + 2i + j. tmp holds head_dim*cols floats.
 * (The loaders use it on q/k weights, the GGUF adapter reader on LoRA B of q/k.) */
void lt_permute_rows_interleaved_to_hf(float *w, int n_heads, int head_dim, int64_t cols,
                                       float *tmp);
/* Rows [row0, row0 + nrows) of the weight as float32 in the model's (HF) layout into dst
 * (nrows * cols floats; a 1-D weight is one row). Converts from the file's dtype (block-
 * quantized rows must hold whole blocks) and undoes the interleaved order. Works on lazy and
 * loaded models (copying from the fp32 weights); LT_ERR_ARG for a missing weight or a bad
 * range, LT_ERR_ARG via lt_model_check_weights when neither lazy nor holding weights. Thread-
 * safe (reads only). */
lt_status lt_model_weight_rows(const lt_model *m, lt_weight_id id, int layer, int64_t row0,
                               int64_t nrows, float *dst);
/* Lazy models: drop the weight's mapped pages from this process's resident set (they are
 * read back from the file if touched again). For weights already copied elsewhere. */
void lt_model_weight_evict(const lt_model *m, lt_weight_id id, int layer);

/* ---- the weight provider: fp32 rows for a matmul, however the weights are stored --------- */
/* Rows [row0, row0 + nrows) of weight id of layer (0 for whole-model weights) as float32 in
 * the model's (HF) layout, read-only, in *out: a pointer straight into the weights when they
 * already are that (a loaded model; a lazy model's F32 tensor, aligned, in HF row order:
 * zero-copy), else scratch (nrows * cols floats, the caller's) with the rows converted into it.
 * Large conversions run over OpenMP threads in row blocks (each a pure function of the file,
 * so the result does not depend on the threads), none inside a parallel region. Allocates
 * nothing. Errors (*out NULL) as lt_model_weight_rows. Thread-safe (reads only). */
lt_status lt_model_weight_f32(const lt_model *m, lt_weight_id id, int layer, int64_t row0,
                              int64_t nrows, float *scratch, const float **out);
/* 1 when lt_model_weight_f32 gives that weight without converting (scratch is not used). */
int lt_model_weight_is_f32(const lt_model *m, lt_weight_id id, int layer);
/* The weight [rows][cols] as a backend reads it (backend.h: weight_f32, matmul_w): fp32 data
 * in place when the provider has it as fp32, else the provider's rows (whatever the file
 * stores: 16-bit, GGUF blocks, interleaved q/k rows), converted where the backend converts.
 * src is the view's context and must outlive it. */
typedef struct {
    const lt_model *m;
    lt_weight_id id;
    int layer;
} lt_weight_src;
void lt_model_weight_bview(const lt_model *m, lt_weight_id id, int layer, int64_t rows,
                           int64_t cols, lt_weight_src *src, lt_weight_view *out);
/* LT_OK when every weight m's config asks for can be read through lt_model_weight_f32: a
 * loaded model holding its weights (else lt_model_check_weights' error), or a lazy one whose
 * tensors convert row by row (LT_ERR_UNSUPPORTED naming the first whose rows do not hold
 * whole quantization blocks). `what` starts the message. */
lt_status lt_model_check_readable(const lt_model *m, const char *what);

/* The seven linears of a layer, numbered as adapters and the trainer number their targets
 * (LT_TARGET_* bit t): 0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down. */
#define LT_MODEL_N_LIN 7
/* The weight of linear t (0..6): LT_W_WQ ... LT_W_DOWN; LT_W_COUNT when t is out of range. */
lt_weight_id lt_model_lin_weight(int t);

/* The chat template that comes with a model: tokenizer_config.json (or chat_template.jinja) of
 * a Hugging Face folder, or tokenizer.chat_template of a GGUF (bos/eos strings then taken from
 * tok's pieces when tok is given). LT_ERR_NOTFOUND when the model has none (a llama2.c .bin
 * never has). *out owned by the caller (lt_chat_template_free). */
struct lt_chat_template;
struct lt_tokenizer;
lt_status lt_model_chat_template(const char *model_path, const struct lt_tokenizer *tok,
                                 struct lt_chat_template **out);


/* ---- inference -------------------------------------------------------------------------- */
/* A low-rank update of the linears that lt_model_forward applies without merging: what the
 * forward needs of an adapter, filled by the adapter layer (lt_adapter_delta_create in
 * adapter.h) so that model/ depends on nothing above it. For linear t of layer l,
 * lin[l * LT_MODEL_N_LIN + t]:
 *   LoRA (d NULL): y = x W^T + scale (x A^T) B^T (+ bias)
 *   DoRA:          y = d * (x W^T + scale (x A^T) B^T) (+ bias),  d = mag / ||W + scale B A||_row
 * (PEFT's forward; the bias is not rescaled). d depends on W: a DoRA delta belongs to the
 * weights it was computed from. Everything it points to is borrowed by the forward. */
typedef struct {
    const float *A; /* (r, in); NULL: the linear is not adapted */
    const float *B; /* (out, r) */
    const float *d; /* (out) DoRA's row factors; NULL for LoRA */
} lt_model_delta_lin;

typedef struct lt_model_delta {
    int n_layers; /* of the model it was made for */
    int r;        /* rank of every adapted linear, 1 <= r <= min(in, out) of each */
    float scale;
    const lt_model_delta_lin *lin; /* (n_layers * LT_MODEL_N_LIN) */
    const lt_backend *be; /* where A, B, d live: NULL = host memory (the CPU backends), else a
                             device backend's (lt_model_delta_to_backend) */
} lt_model_delta;

/* KV cache plus every activation buffer the forward needs, allocated once: the forward never
 * allocates. k, v: (L, ctx, KV*hd). Prompts longer than max_batch are run in chunks. */
typedef struct lt_kv_cache lt_kv_cache;
/* What the cache stores keys and values as. LT_KV_F32: the projections as computed (exact: what
 * tests against fp32 goldens use). LT_KV_F16: rounded to IEEE half, nearest even, when stored
 * (llama.cpp's default cache type): half the memory and half the bytes attention reads per
 * token; a token's own key / value are rounded too before it attends them, so a prompt run in
 * one piece, in chunks, alone or batched sees the same cache, bit for bit. Logits move by
 * ~1e-3 relative (tests/model/test_smollm2_golden.c). */
typedef enum { LT_KV_F32 = 0, LT_KV_F16 = 1 } lt_kv_type;
/* ctx_len <= 0: the model's max_seq_len; max_batch <= 0: 64. An LT_KV_F32 cache. */
lt_status lt_kv_cache_create(const lt_model *m, int ctx_len, int max_batch, lt_kv_cache **out);
/* the same with the cache's element type */
lt_status lt_kv_cache_create_typed(const lt_model *m, int ctx_len, int max_batch,
                                   lt_kv_type type, lt_kv_cache **out);
void lt_kv_cache_free(lt_kv_cache *kv); /* safe on NULL */
int lt_kv_cache_ctx(const lt_kv_cache *kv);
lt_kv_type lt_kv_cache_type(const lt_kv_cache *kv);
/* bytes of keys and values for ctx positions of model m's shape (both tensors, every layer) */
int64_t lt_kv_cache_bytes(const lt_model *m, int ctx_len, lt_kv_type type);
/* Gives back to the system the memory of the cache's positions >= pos (0: all of it; their
 * contents are lost, the next forward writes them again): a finished request's pages return
 * to the system, and a cache costs memory only for the positions written (the OS maps a page
 * at its first write). Page granularity: a page partly below pos is kept. */
void lt_kv_cache_release(lt_kv_cache *kv, int pos);
/* on 1: the forward multiplies weights stored as Q4_0 / Q4_1 / Q8_0 / Q4_K blocks as llama.cpp
 * does, with the activations quantized to 8-bit blocks and integer dot products
 * (lt_matmul_job.qact: ~4x faster decoding; logits move by up to ~1 from the fp32 product, as
 * llama.cpp's do); 0 (the default): fp32 products of the dequantized rows, what tests against
 * fp32 goldens use. Other storage formats are unaffected. Set it before the first forward: a
 * cache filled one way and continued the other mixes the two. */
void lt_kv_cache_set_qact(lt_kv_cache *kv, int on);
/* on 1: the forward's products by the base weights run in bf16 where the backend has bf16
 * products (lt_matmul_job.bf16: the CPU backend's oneDNN GEMM; x rounded to bf16, fp32 sums; a
 * bf16 weight as stored, f32 / f16 / NF4 rounded a block at a time for prompts of 8+ tokens),
 * as the trainer's bf16 compute mode does; logits move by ~1e-2 relative from the fp32 product.
 * Adapters (delta) stay fp32. 0 (the default): fp32. Set it before the first forward, as qact. */
void lt_kv_cache_set_bf16(lt_kv_cache *kv, int on);

/* ---- the forward on a device backend (be->device: a GPU) ------------------------------
 * lt_model_dev: m's weights copied once into be's memory, for the caches of
 * lt_kv_cache_create_dev (several caches may share one). A lazy model's tensor stored in a
 * dtype the backend converts itself (supports_dtype; CUDA: F16, BF16, Q4_0, Q4_1, Q8_0) stays
 * as stored (q / k rows a GGUF interleaves put in the model's order, still as stored); every
 * other weight (a model loaded whole, F32 files, K-quants on CUDA, norms and biases) is copied
 * as fp32. m and be are borrowed and must outlive it. Errors: lt_model_check_readable's,
 * LT_ERR_NOMEM naming the weight that did not fit. */
typedef struct lt_model_dev lt_model_dev;
lt_status lt_model_dev_create(const lt_model *m, const lt_backend *be, lt_model_dev **out);
void lt_model_dev_free(lt_model_dev *d); /* safe on NULL */
/* bytes of weights in the backend's memory; *f32_bytes (may be NULL): those copied as fp32 */
int64_t lt_model_dev_bytes(const lt_model_dev *d, int64_t *f32_bytes);
const lt_backend *lt_model_dev_backend(const lt_model_dev *d);
/* A cache (lt_kv_cache_create_typed's arguments) whose keys, values and activations are in
 * dev's backend memory and whose forward runs every op there, reading dev's weights (dev
 * borrowed, made for m); dev NULL: lt_kv_cache_create_typed. lt_model_forward copies back to the
 * host only the logits asked for. The cache also holds a (max_batch, V) logits buffer there. On
 * a device lt_kv_cache_release is a no-op (device memory is not paged); qact and bf16 are
 * passed to the backend's matmul_w (CUDA's ignores them: fp32 products). */
lt_status lt_kv_cache_create_dev(const lt_model *m, const lt_model_dev *dev, int ctx_len,
                                 int max_batch, lt_kv_type type, lt_kv_cache **out);
/* A copy of delta (host memory) in be's memory, for lt_model_forward on a cache of that backend
 * (its be field says where it lives; the forward refuses a delta on another backend than the
 * cache's). Free with lt_model_delta_backend_free (safe on NULL). */
lt_status lt_model_delta_to_backend(const lt_model *m, const lt_model_delta *delta,
                                    const lt_backend *be, lt_model_delta **out);
void lt_model_delta_backend_free(lt_model_delta *d);

/* Runs tokens[0..n) at positions pos0..pos0+n-1, attending to cached positions < pos0 (which
 * must have been filled by earlier calls on the same cache, with the same delta), and stores
 * their k/v. m may be loaded whole or lazily (weights read through lt_model_weight_f32).
 * delta: the adapter to apply without merging, or NULL for the base model (borrowed).
 * logits: NULL, or [n][V] when all_logits, or [V] for the last token only.
 * Errors (LT_ERR_ARG): token id out of range, pos0 + n > ctx, a delta for another model;
 * lt_model_check_readable's. */
lt_status lt_model_forward(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                           const int32_t *tokens, int n, int pos0, float *logits, int all_logits);

/* One entry of a batched step: a sequence's next token (a decode row), or a chunk of its
 * prompt (a prefill joining the step), on its own cache with its own adapter. */
typedef struct {
    lt_kv_cache *kv;             /* the sequence's cache, positions < pos filled (borrowed) */
    const lt_model_delta *delta; /* its adapter, or NULL for the base (borrowed) */
    int32_t token;               /* n <= 1: the token at position pos */
    int pos;
    int n;                 /* 0 or 1: one token (token); > 1: tokens[0..n) at pos..pos + n - 1 */
    const int32_t *tokens; /* n > 1: the chunk (borrowed) */
    int no_logits;         /* 1: no logits for this entry (a prompt chunk that is not the last) */
} lt_batch_row;

/* One step of independent sequences (continuous batching): entry i runs its token(s) at its
 * positions of its own cache (their k / v stored there, attention over its cached positions
 * and, for a chunk, causally over the chunk), and the logits of the last token of every entry
 * without no_logits are written to logits, one [V] row per such entry in entry order. The
 * entries' tokens are the rows of the step (at most ws's max_batch in all): every linear is one
 * product over all of them (the weights are read once per step for every sequence, decode rows
 * and prompt chunks together); the adapters' low-rank parts run once per run of adjacent
 * entries with the same delta (put one adapter's entries next to each other), so requests with
 * different adapters share the base product. An entry's logits are bit-identical to what
 * lt_model_forward gives for the same tokens alone (one token, or the chunk; the same cache;
 * however the prompt was cut into chunks), with qact on and weights in Q4_0 / Q4_1 / Q8_0 /
 * Q4_K or converted rows (16-bit, other blocks); fp32 weights multiplied in place go through
 * BLAS, whose sums may differ in the last bits between 1 and n rows.
 * ws: the cache whose activation buffers the step uses (it may be one of the entries' caches;
 * its k / v are not touched unless it is an entry's): max_batch >= the step's rows, a context
 * >= every entry's, made for m, with the same qact setting as the entries. Entries must not
 * share a cache. Allocates nothing. Errors (LT_ERR_ARG, naming the entry): positions outside
 * its context, a token outside the vocabulary, a cache or delta for another model, n entries
 * outside 1..max_batch or more rows than ws's max_batch. */
lt_status lt_model_forward_batch(const lt_model *m, lt_kv_cache *ws, const lt_batch_row *rows,
                                 int n, float *logits);

#ifdef __cplusplus
}
#endif
#endif
