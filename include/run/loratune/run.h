/* run.h - a training run as a library: options (one table shared by the command line, the
 * YAML config file and any other driver such as a web server), learning-rate schedules,
 * checkpoints, and the loop (train / evaluate / early stop / save), reporting through events.
 *
 * Flow (what `loratune train` does, and what any other front end should do):
 *   lt_run_opts o;  lt_run_opts_default(&o);
 *   lt_run_opts_load_yaml(&o, "config.yaml");          optional; keys = long option names
 *   lt_run_opts_set(&o, "lora-rank", "16");            the command line, one call per option
 *   lt_run *r;  lt_run_new(&o, &r);                    checks the options
 *   lt_run_add_sink(r, my_sink, ctx);                  events: JSON objects (see below)
 *   lt_run_prepare(r);                                 loads model, tokenizer, data, trainer,
 *                                                      and the checkpoint named by o.resume
 *   lt_run_train(r, &outcome);                         until done / early stop / stop request
 *   lt_run_get_result(r, &result);                     losses, steps, outputs, why it stopped
 *   lt_run_free(r);
 * (lt_run_create = lt_run_new + lt_run_prepare, for callers that need no stage events; many
 * runs over one loaded model and tokenized data: lt_run_shared_load + lt_run_new_from.)
 * lt_run_request_stop may be called from a signal handler or another thread: lt_run_prepare
 * returns LT_ERR_CANCELLED at its next check (between stages, after every record while
 * tokenizing); the loop abandons the current optimizer step (weights untouched, data position
 * rewound), saves a checkpoint and returns with outcome LT_RUN_INTERRUPTED.
 *
 * Threads: sinks are called on the thread that calls lt_run_prepare / lt_run_train. o.threads
 * (> 0) is the OpenMP thread count of the run's parallel work: set for the calling thread only
 * (omp_set_num_threads is per thread) while lt_run_prepare / lt_run_train / lt_run_evaluate
 * run, and restored when they return, so runs on different threads each use their own.
 * What stays process-wide: OpenBLAS's thread count (the trainer sets it to 1 for each step and
 * restores it after, lt_train_config.keep_blas_threads; set it for the process with
 * lt_set_num_threads, as `loratune train --threads` does) and the automatic sizes' view of
 * memory (the process's RSS). Distinct runs share no other state; each locks its own OUT.
 *
 * Events (each a JSON object with "event": kind, passed to every sink in the order added;
 * the object is borrowed for the call):
 *   stage      lt_run_prepare's progress, in this order; every one has stage, elapsed_s
 *              (since lt_run_prepare began):
 *              loading_model     model, lazy, shared (borrowed from an lt_run_shared)
 *              tokenizing        data, examples (records read so far), done (false: at the
 *                                start, with max_seq_len, then at most every 0.5 s; true: once
 *                                read, examples = all splits), shared (true: the shared
 *                                data); again after planning when memory cuts the length
 *              planning          auto_batch_size, auto_max_seq_len, memory_budget_bytes
 *              creating_trainer  method, batch_size, max_seq_len, base_dtype, compute_dtype,
 *                                compute_dtype_reason, device ("cpu", "cuda"), device_name
 *              resuming          checkpoint (with o.resume)
 *              ready             steps, train_examples, valid_examples, batch_size, max_seq_len
 *   start      steps, epoch_batches, train_examples, valid_examples, trainable_params,
 *              resumed_from (step), config {...}
 *   step       step, epoch, loss, lr, grad_norm, tokens, tokens_per_sec, peak_rss_bytes,
 *              elapsed_s, eta_s
 *   eval       step, val_loss, val_ppl, val_tokens, val_batches, best_val_loss, elapsed_s
 *   skip       step, reason ("nonfinite_loss" | "nonfinite_grad"), loss, consecutive
 *   checkpoint step, path
 *   early_stop step, best_val_loss, evals_without_improvement
 *   interrupted step (last completed), checkpoint
 *   saved      what ("peft" | "mlx" | "gguf" | "hf"), path
 *   skipped    what ("gguf"), path (not written), reason: an output the run cannot write
 *              (a DoRA run has no llama.cpp adapter.gguf: llama.cpp has no DoRA)
 *   done       step, outcome ("done" | "early_stop" | "interrupted" | "nonfinite"),
 *              final_val_loss (when evaluated), elapsed_s
 * Steps are optimizer steps, counted from 1; a skipped (non-finite) step still counts (it used
 * its batches) but does not update the weights.
 *
 * Checkpoints: OUT/checkpoints/step-NNNNNNNN.safetensors, one file written atomically (temp
 * file, fsync, rename, fsync folder): trainable tensors under their trainer names, AdamW
 * moments as "optimizer.m.<name>" / "optimizer.v.<name>", and metadata "loratune.state" (JSON:
 * step, trainer step/micro counters, batcher epoch/index, early-stop state, consecutive
 * non-finite steps, seed, the resolved options). A resumed run with the same options produces
 * bit-identical losses. The run's last keep_checkpoints files are kept (pruning removes only
 * checkpoints the run wrote or resumed from in OUT, never another run's files; temp files of
 * a killed write are removed when OUT is next locked).
 *
 * OUT is locked (lt_dir_lock_open: OUT/.loratune.lock) from lt_run_prepare to lt_run_free, so
 * a second run or an export into OUT fails with LT_ERR_BUSY naming OUT and the holder's pid.
 *
 * Outputs (OUT): run_config.yaml (the resolved options: `-c OUT/run_config.yaml` reproduces
 * the run); LoRA / DoRA: the PEFT adapter (adapter_model.safetensors + adapter_config.json),
 * OUT/mlx-lm/ (mlx-lm adapter), OUT/adapter.gguf (llama.cpp, LoRA only); full fine-tuning: a
 * Hugging Face folder (config.json + model.safetensors) in OUT.
 *
 * Fault injection (tests): lt_run_opts.fault_nan_steps = "3,4" makes the gradients of those
 * optimizer steps NaN (`loratune train` takes it from the environment, LT_FAULT_NAN_STEPS).
 *
 * Ownership: lt_run_opts is a plain value (fixed-size strings, copyable). lt_run owns the
 * model, tokenizer, data and trainer it loads; a run made from an lt_run_shared borrows the
 * shared model, tokenizer and data (the shared object must outlive it); sink contexts are
 * borrowed. The library reads no environment variables. */
#ifndef LORATUNE_RUN_H
#define LORATUNE_RUN_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/data.h"
#include "loratune/train.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson */

#define LT_RUN_PATH_MAX 1024

typedef enum { LT_LR_CONSTANT = 0, LT_LR_LINEAR, LT_LR_COSINE } lt_lr_schedule;
/* Where a run trains (`--device`): auto = the first CUDA GPU when loratune was built with CUDA
 * and one is present, else the CPU. */
typedef enum { LT_DEVICE_AUTO = 0, LT_DEVICE_CPU, LT_DEVICE_CUDA } lt_device;
const char *lt_lr_schedule_name(lt_lr_schedule s); /* "constant", "linear", "cosine" */

/* Multiplier of the base learning rate at optimizer step `step` (0-based: the lr used by the
 * step-th update), as transformers' get_constant_schedule_with_warmup /
 * get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup (num_cycles 0.5):
 *   warmup:   step < warmup: step / max(1, warmup)
 *   constant: 1
 *   linear:   max(0, (total - step) / max(1, total - warmup))
 *   cosine:   max(0, 0.5 (1 + cos(pi * progress))), progress = (step - warmup) / max(1, total -
 * warmup) computed in double. */
double lt_lr_lambda(lt_lr_schedule s, int64_t step, int64_t warmup, int64_t total);

typedef struct {
    /* what and where */
    char model[LT_RUN_PATH_MAX];     /* required */
    char tokenizer[LT_RUN_PATH_MAX]; /* "" = from the model */
    char data[LT_RUN_PATH_MAX];      /* required: folder (train/valid/test.jsonl) or one file */
    lt_data_format data_format;
    double valid_fraction; /* single-file data: held-out fraction */
    lt_train_method method;
    char out[LT_RUN_PATH_MAX];     /* required for training */
    char resume[LT_RUN_PATH_MAX];  /* "" or a run folder / checkpoints folder / checkpoint file */
    char adapter[LT_RUN_PATH_MAX]; /* "" or an adapter to start from (PEFT / mlx-lm / GGUF) */
    /* length of the run */
    int64_t iters; /* optimizer steps; 0: from epochs */
    double epochs; /* used when iters == 0 */
    /* batches */
    int batch_size, grad_accum, max_seq_len, pack, train_on_prompt; /* batch_size / max_seq_len
                                     0: automatic (lt_train_plan_fit); lt_run_create resolves them */
    int64_t memory_budget; /* bytes the automatic sizes may plan for; 0: 80% of MemAvailable */
    /* optimizer and schedule */
    double lr;
    lt_lr_schedule lr_schedule;
    double warmup; /* steps (>= 1), or a fraction of the steps when < 1 */
    double weight_decay, grad_clip;
    /* adapter */
    int lora_rank;
    double lora_alpha, lora_dropout;
    unsigned lora_targets;                /* LT_TARGET_* */
    int lora_layer_begin, lora_layer_end; /* [begin, end); end 0 = all */
    int lora_last_layers;                 /* > 0: the last N layers (mlx-lm's num_layers) */
    int rslora, grad_checkpoint;
    int base_dtype;      /* -1 auto: BF16 for LoRA over a bf16 checkpoint when the products are
                            bf16 (compute_dtype below, as picked for the CPU), F32 otherwise;
                            or LT_DTYPE_F32 / BF16 / F16 as asked (lt_run_pick_base_dtype) */
    int compute_dtype;   /* -1 auto: BF16 where the CPU multiplies bf16 natively (AVX512-BF16 or
                            AMX, at the dispatch level in use) and the method is not DoRA, else
                            F32; or LT_DTYPE_F32 / LT_DTYPE_BF16 as asked */
    /* evaluation and saving */
    int64_t eval_every;   /* 0: only at the end */
    int64_t eval_batches; /* 0: the whole validation split */
    int64_t save_every;   /* 0: only at the end / on interruption */
    int keep_checkpoints; /* >= 1 */
    int early_stop;       /* evaluations without improvement before stopping; 0 off */
    int max_nonfinite;    /* consecutive non-finite steps before stopping */
    /* misc */
    uint64_t seed;
    lt_device device; /* LT_DEVICE_*: where the trainer runs */
    int threads; /* OpenMP threads of the run's work, on its thread (see Threads above); 0: as
                    the environment says */
    int json;    /* front ends: print events as JSON lines */
    int overwrite; /* out may hold another run (its run_config.yaml / checkpoints): replace it
                      (its checkpoints are removed, its exports marked incomplete); without it
                      such a folder is refused unless it is the one --resume continues */
    /* set by C code only: not in the option table (not in a config file, on the command line,
       in run_config.yaml or in checkpoints) */
    char fault_nan_steps[256]; /* tests: comma-separated optimizer steps (>= 1) whose gradients
                                  are made NaN (`loratune train` maps $LT_FAULT_NAN_STEPS here) */
    int keep_blas_threads;     /* lt_train_config.keep_blas_threads (`loratune train` / `eval`
                                  map $LT_TWO_POOLS here) */
} lt_run_opts;

void lt_run_opts_default(lt_run_opts *o); /* every option's default (the table's def) */

/* Sets one option by its long name ("lora-rank", "lora_rank" and "--lora-rank" are the same
 * key) from its text value; flags take true/false/yes/no/on/off/1/0. LT_ERR_ARG with
 * "lora-rank: expected an integer >= 1, got 'x'" or "unknown option 'lora-rnak' (did you mean
 * 'lora-rank'?)"; ranges and choices are the option table's. Setting iters clears epochs and
 * the other way round. */
lt_status lt_run_opts_set(lt_run_opts *o, const char *key, const char *value);
/* 1 when key names a flag (a boolean option: no value on the command line). -1 unknown. */
int lt_run_opt_is_flag(const char *key);
/* Reads a YAML mapping of option -> scalar (a sequence is accepted for lora-targets) and sets
 * each; errors "FILE:LINE: lora-rank: expected ..." and unknown keys are errors. */
lt_status lt_run_opts_load_yaml(lt_run_opts *o, const char *path);
/* Checks what must hold across options before a run (model/data/out given, ...). */
lt_status lt_run_opts_validate(const lt_run_opts *o, int need_out);
/* The resolved options (all but resume and json: LT_OPT_NO_RECORD) as YAML text / as a JSON object
 * of strings; text that lt_run_opts_set reads back to the same values. *out malloc'd / new
 * reference. */
lt_status lt_run_opts_to_yaml(const lt_run_opts *o, char **out);
struct json_t *lt_run_opts_to_json(const lt_run_opts *o);

/* ---- the option table ---------------------------------------------------------------------
 * One static table describes every option: its name, type, the lt_run_opts field it sets, the
 * default, the accepted range or choices, whether it is a hyperparameter (and how a search
 * should sample it) and its help line. lt_run_opts_default, lt_run_opts_set, the dumps
 * (run_config.yaml, checkpoints, the start event's config), the YAML reader, `loratune train
 * --help` and any form generator or search-space builder all read it, so an option added to
 * the table is everywhere at once. Invariant: for every option i and every value v that
 * lt_run_opts_set accepts, lt_run_opts_set(o, name, lt_run_opt_format(o, i)) leaves o unchanged. */
typedef enum {
    LT_OPT_STRING = 0, /* text (paths): a char[LT_RUN_PATH_MAX] field */
    LT_OPT_BOOL,       /* an int 0 / 1; a flag on the command line; true/false/yes/no/on/off/1/0 */
    LT_OPT_INT,        /* an int, int64_t or uint64_t field, in [min, max] */
    LT_OPT_FLOAT,      /* a double field, in [min, max] (a bound excluded where *_open) */
    LT_OPT_ENUM,       /* one of choices (an enum field: the choice's value) */
    LT_OPT_SIZE,       /* bytes (int64_t): a number with an optional K/M/G/T[i][B] suffix */
    LT_OPT_LIST,       /* a comma-separated set of choices, or "all" (unsigned bit mask: bit i
                          is choices[i]) */
    LT_OPT_LAYERS,     /* lora-layers: N (the last N), A:B (layers A..B-1) or all; three int
                          fields from offset: lora_layer_begin, lora_layer_end, lora_last_layers */
} lt_run_opt_type;

/* How a hyperparameter search samples an option (lt_run_opt_info.tune). */
typedef enum {
    LT_TUNE_NO = 0,  /* not a hyperparameter (paths, sizes of the run, output, ...) */
    LT_TUNE_LINEAR,  /* uniform in [tune_min, tune_max] (integers rounded) */
    LT_TUNE_LOG,     /* log-uniform in [tune_min, tune_max] */
    LT_TUNE_CHOICE,  /* one of choices (ENUM, LIST: a subset; BOOL: true / false) */
} lt_run_opt_tune;

/* lt_run_opt_info.flags */
#define LT_OPT_AUTO 1u      /* "auto" is accepted and stored as 0 (batch-size, max-seq-len) */
#define LT_OPT_NO_CONFIG 2u /* not accepted in a config file (resume) */
#define LT_OPT_NO_RECORD 4u /* not part of the resolved options (run_config.yaml, checkpoints,
                               the start event's config): resume, json */

typedef struct {
    const char *name;        /* long name with dashes, also the config key ("lora-rank") */
    const char *arg;         /* placeholder for --help ("N", "PATH"); NULL for a flag (BOOL) */
    const char *help;        /* one line, without the default */
    lt_run_opt_type type;
    size_t offset, size;     /* where in lt_run_opts (offsetof / sizeof the field; LAYERS: the
                                three ints) */
    double min, max;         /* INT / FLOAT / SIZE: accepted range; max INFINITY: no upper
                                bound */
    int min_open, max_open;  /* FLOAT: the bound itself is not accepted */
    const char *const *choices; /* ENUM / LIST: the names, NULL-terminated; else NULL */
    const char *def;         /* the default as text (what lt_run_opts_default sets; "" = empty);
                                NULL: no default of its own (iters: from epochs) */
    unsigned flags;          /* LT_OPT_* (bits above 0xff are the table's own) */
    lt_run_opt_tune tune;    /* LT_TUNE_NO: not a hyperparameter */
    double tune_min, tune_max; /* LINEAR / LOG: a suggested search range (within min..max) */
} lt_run_opt_info;

int lt_run_opt_count(void);
const lt_run_opt_info *lt_run_opt_get(int i); /* 0 <= i < lt_run_opt_count(); else NULL */
/* Index of the option key names ("lora-rank", "lora_rank", "--lora-rank"); -1 unknown. */
int lt_run_opt_find(const char *key);
/* The value of option i in o as the text lt_run_opts_set reads back ("" for an empty path;
 * doubles in their shortest exact form), for forms and search spaces. Returns buf (n >= 64
 * bytes), a string field of o or a static string; NULL when i is out of range. */
const char *lt_run_opt_format(const lt_run_opts *o, int i, char *buf, size_t n);

/* ---- the run ----------------------------------------------------------------------------- */
typedef struct lt_run lt_run;
typedef void (*lt_run_sink)(void *ctx, const struct json_t *event);

typedef enum {
    LT_RUN_DONE = 0,
    LT_RUN_EARLY_STOP,
    LT_RUN_INTERRUPTED,
    LT_RUN_NONFINITE, /* max_nonfinite consecutive skipped steps */
} lt_run_outcome;
const char *lt_run_outcome_name(lt_run_outcome o);

/* In stages, so that a front end sees progress and can cancel:
 *   lt_run_new      checks and copies the options (no I/O, no lock);
 *   lt_run_add_sink as many as needed, before lt_run_prepare to see its stage events;
 *   lt_run_prepare  locks o->out when given (LT_ERR_BUSY when another run or export holds
 *                   it), loads the model, tokenizer and data, sizes and creates the trainer,
 *                   loads the checkpoint of o->resume; "stage" events; checks the stop flag
 *                   between stages and after every record while tokenizing: a stop request
 *                   (lt_run_request_stop, from another thread or a signal handler) makes it
 *                   return LT_ERR_CANCELLED. Called once; after a failure only lt_run_free.
 * Does not need o->out unless training. *out is new (lt_run_free). */
lt_status lt_run_new(const lt_run_opts *o, lt_run **out);
lt_status lt_run_prepare(lt_run *r);
/* lt_run_new + lt_run_prepare (no sinks yet, so no stage events). */
lt_status lt_run_create(const lt_run_opts *o, lt_run **out);
void lt_run_free(lt_run *r); /* safe on NULL */
lt_status lt_run_add_sink(lt_run *r, lt_run_sink fn, void *ctx); /* ctx borrowed */
/* Async-signal-safe; also safe from another thread. Before or during lt_run_prepare: it
 * returns LT_ERR_CANCELLED; during lt_run_train: a checkpoint and LT_RUN_INTERRUPTED. */
void lt_run_request_stop(lt_run *r);

/* ---- data parallelism (docs/SCALE_OUT.md) -------------------------------------------------
 * N processes (ranks), each with the same options, train one model together: every rank reads
 * the whole global batch (grad_accum micro-batches of batch_size rows, the same batcher as a
 * single process), computes the gradients of its share of the rows (rows [r*B/N, (r+1)*B/N) of
 * each micro-batch), and the ranks exchange them. To make the result independent of N, each
 * row's gradient is computed on its own and the rows are summed in the global batch's order
 * (micro-batch, row) on every rank; so every rank applies the same gradient, keeps the same
 * weights, and N ranks give bit-identical losses to 1 rank run this way (a run without a
 * communicator sums rows inside its products: equal within rounding, not bit for bit). Eval
 * batches are split by index and their sums taken in order (bit-identical to one process).
 * The writer (rank 0) alone locks OUT and writes the run config, checkpoints and exports; the
 * other ranks write nothing (give them no sinks). Stop requests take effect at the next step
 * boundary on all ranks together. Needs explicit batch-size and max-seq-len when N > 1 (the
 * automatic sizes would depend on each process's view of memory). Any method: lora / dora /
 * qlora exchange the adapters' gradients, full fine-tuning every parameter's (each rank holds
 * (size + 1) * grad_accum * ceil(batch_size / size) row gradients of the trainable parameters
 * and their sum: lt_train_exchange_size, which the run's memory plan counts; a memory-budget
 * given with a communicator is checked against that plan, the sizes being given).
 * The library has no MPI: the caller's allgather moves the bytes (apps/ uses MPI_Allgather).
 *
 * With an allreduce function (multi-GPU over NCCL: apps/dist_nccl.c) the step goes the batched
 * way instead: each rank runs its rows of each micro-batch as one batch (scaled by 1 / the loss
 * tokens of the whole global batch), then the ranks' gradients are summed in place in the
 * trainer's backend memory (lt_trainer_grad_span: one call a step) and the losses and token
 * counts through allgather. No row buffers (the plan counts no exchange); the sum's order
 * depends on the rank count, so N ranks equal one process within rounding, not bit for bit
 * (and LoRA dropout masks of ranks other than 0 are other draws than one process's). */
typedef struct {
    int rank, size; /* 0 <= rank < size */
    /* Collective, called by every rank in the same order: rank q's `bytes` bytes of send land
     * at recv + q * bytes on every rank (recv holds size * bytes). Non-zero: failed (the run
     * returns LT_ERR_IO with lt_errmsg's message; the caller aborts the other ranks). */
    int (*allgather)(void *ctx, const void *send, void *recv, size_t bytes);
    void *ctx; /* borrowed */
    /* Optional (NULL: the row-exact exchange above). Collective: sums buf[0..n), the trainer's
     * gradients in its backend's memory, over the ranks in place. Non-zero: failed. */
    int (*allreduce)(void *ctx, float *buf, size_t n);
    /* Optional, with allreduce: the sums may still be in flight when allreduce returns (NCCL
     * on its own stream). Then the run reduces the gradients in pieces as the backward of a
     * step's last micro-batch finishes them (lt_trainer_grad_pieces: a layer's while the
     * layers below it run), every rank the same pieces in the same order, and calls this once
     * after the last: from then on the sums must be in place for whatever reads the gradients
     * next (a GPU: work queued after it waits for them). Non-zero: failed. */
    int (*allreduce_wait)(void *ctx);
    int device; /* the CUDA device this rank trains on (--device cuda / auto); 0 by default */
    /* ZeRO-1 (docs/SCALE_OUT.md; `loratune train --zero 1`): 1 shards AdamW's state over the
     * ranks (each keeps the moments of 1/size of the trainable parameters: lt_train_config
     * .zero_ranks); 0 (default) off. Needs allreduce and the two functions below. A step:
     * reduce_scatter of the gradient span (after the backward, not in pieces), the squares'
     * sums exchanged through allgather (clipping and the non-finite check see the global
     * norm), AdamW on the shard, allgather_dev of the updated shards. Checkpoints hold the
     * whole state (gathered to rank 0 before it writes), so they resume with any rank count,
     * with or without ZeRO-1. */
    int zero;
    /* Collective, in place: sums buf[0 .. size * n) over the ranks; rank q's n floats of the
     * sum land at buf + q * n on rank q (the rest of buf is left undefined). Non-zero: failed.
     * When it returns, whatever reads buf next sees the sums (a GPU: work queued after it). */
    int (*reduce_scatter)(void *ctx, float *buf, size_t n);
    /* Collective, in place: rank q's n floats at buf + q * n land at buf + q * n on every rank
     * (buf holds size * n floats). Non-zero: failed. Ordered as reduce_scatter. */
    int (*allgather_dev)(void *ctx, float *buf, size_t n);
} lt_run_comm;
/* Before lt_run_prepare; comm is copied (its ctx borrowed until lt_run_free). size 1 is the
 * same arithmetic as size N (what the N-vs-1 comparison needs). */
lt_status lt_run_set_comm(lt_run *r, const lt_run_comm *comm);

/* ---- many runs over one model, tokenizer and tokenized data (HPO trials, server jobs) ------
 * lt_run_shared_load loads what runs over the same base and data have in common, as
 * lt_run_prepare would for options o: the model (lazily mapped: only lora / dora / qlora, full
 * fine-tuning trains the model in place), the tokenizer and chat template, and the data
 * tokenized with o's data options (max-seq-len, auto: the model's context). Stage events
 * (loading_model, tokenizing) go to fn(ctx, event) when fn is given. *out is new.
 *
 * A run made from it (lt_run_new_from / lt_run_create_from) BORROWS the model, tokenizer,
 * template and data instead of loading them: the shared object must outlive every run made
 * from it (lt_run_shared_free after their lt_run_free). Runs only read it, so runs on several
 * threads may use one shared object at once. The run's options must match the shared
 * object's model, tokenizer, data, data-format, train-on-prompt and (one-file data)
 * valid-fraction and seed: LT_ERR_ARG naming the option otherwise. The run uses the shared
 * tokenized data when it holds the same examples the run would tokenize (same max-seq-len, or
 * no example longer than either length; with auto sizes, while memory does not force a
 * shorter length); otherwise it tokenizes its own copy (with the shared tokenizer). Every
 * other option (lr, rank, targets, batch sizes, out, resume, adapter, ...) is the run's own.
 * Losses are those of an lt_run_create run with the same options, bit for bit. Automatic
 * sizes count the process's RSS, so concurrent runs should give batch-size and max-seq-len. */
typedef struct lt_run_shared lt_run_shared;
lt_status lt_run_shared_load(const lt_run_opts *o, lt_run_sink fn, void *ctx, lt_run_shared **out);
void lt_run_shared_free(lt_run_shared *s); /* safe on NULL; after the runs made from it */
const lt_data *lt_run_shared_data(const lt_run_shared *s); /* borrowed */
const lt_model_config *lt_run_shared_model_config(const lt_run_shared *s); /* borrowed */
lt_status lt_run_new_from(const lt_run_shared *shared, const lt_run_opts *o, lt_run **out);
lt_status lt_run_create_from(const lt_run_shared *shared, const lt_run_opts *o, lt_run **out);
/* The memory plan of a run with options o over shared's model, without creating it (a search
 * that must never start a configuration the memory budget cannot hold): lt_train_plan_model of
 * the training configuration o describes (method full: lt_train_plan, the fp32 model it loads
 * and trains in place). o's batch-size must be given; max-seq-len auto is planned at the
 * longest example of the shared data (what the run uses when memory allows); LT_ERR_ARG as
 * lt_run_new would refuse the training configuration. */
lt_status lt_run_plan(const lt_run_shared *shared, const lt_run_opts *o, lt_train_plan_t *plan);

/* The loop. LT_OK for every outcome (LT_RUN_NONFINITE also sets the message naming the steps
 * and the last good checkpoint); errors are I/O and the like. LT_ERR_ARG when r was not
 * prepared. */
lt_status lt_run_train(lt_run *r, lt_run_outcome *outcome);

/* What a run did, without scraping events (lt_run_get_result). Strings are borrowed from the
 * run (valid until lt_run_free). Read on the thread that runs r, or after lt_run_train. */
typedef struct {
    int finished;           /* 1 once lt_run_train returned; else the state so far */
    lt_status status;       /* what lt_run_train returned (LT_OK for every outcome) */
    lt_run_outcome outcome; /* done, early_stop, interrupted, nonfinite */
    const char *message;    /* "" when done; else why it stopped (the error, the non-finite
                               steps, the early stop, the stop request) */
    int64_t steps;          /* optimizer steps completed (resumed and skipped ones included) */
    int64_t total_steps;
    int64_t tokens;         /* loss tokens trained on (resumed ones included) */
    double train_loss;      /* loss of the last applied step of this session; NaN: none */
    double last_val_loss;   /* NaN: never evaluated */
    int64_t last_val_step;  /* -1: never evaluated */
    double best_val_loss;   /* NaN: never evaluated */
    double tokens_per_sec;  /* loss tokens / seconds in the steps of this session */
    double train_s;         /* seconds in the steps of this session */
    double elapsed_s;       /* lt_run_train's wall time (evaluations and saving included) */
    int64_t peak_rss_bytes; /* the process's peak RSS so far (every run in the process) */
    const char *out;        /* OUT */
    const char *checkpoint; /* the last checkpoint written or resumed from; "" none */
    const char *peft, *mlx, *gguf, *hf; /* outputs written; "" when not (DoRA: no gguf) */
} lt_run_result;
void lt_run_get_result(const lt_run *r, lt_run_result *out);

typedef struct {
    double loss; /* sum of token losses / tokens */
    double ppl;  /* exp(loss) */
    double loss_sum;
    int64_t tokens; /* counted (target) tokens */
    int64_t batches;
} lt_eval_result;
/* Loss over split s (max_batches 0: all of it), batches in file order, no dropout. */
lt_status lt_run_evaluate(lt_run *r, lt_split s, int64_t max_batches, lt_eval_result *out);
/* The validation before training (step 0 of a fresh run) of runs that share it: an adapter
 * starts as the identity (B = 0), so every run over the same model, data, evaluation and
 * precision options (whatever its rank, targets, lr, ...) evaluates the same untrained model.
 * lt_run_get_step0_eval: 1 and *out (when out is given) once this run computed (or was given)
 * it, else 0. lt_run_set_step0_eval, before lt_run_train: the run reports *ev as its step-0
 * evaluation (the eval event has "reused": true) instead of computing it; the caller vouches
 * that it is this run's (apps/cmd_tune.c reuses one only between trials whose options differ
 * only in options that leave the untrained model alone). Training and later evaluations do
 * not depend on it; only the step-0 event and the early-stop baseline do. */
int lt_run_get_step0_eval(const lt_run *r, lt_eval_result *out);
lt_status lt_run_set_step0_eval(lt_run *r, const lt_eval_result *ev);

/* Borrowed views of what the run holds (valid until lt_run_free). */
lt_trainer *lt_run_trainer(lt_run *r);
const lt_data *lt_run_data(const lt_run *r);
const lt_run_opts *lt_run_options(const lt_run *r);
int64_t lt_run_total_steps(const lt_run *r);
int64_t lt_run_step(const lt_run *r); /* optimizer steps completed (incl. resumed ones) */

/* ---- checkpoints ------------------------------------------------------------------------- */
/* path: a checkpoint file, a checkpoints folder or a run folder (OUT): the newest checkpoint
 * it holds that verifies (lt_checkpoint_verify), in *out (n bytes); a damaged newer one is
 * passed over. A file named directly must verify itself. LT_ERR_NOTFOUND naming path when there
 * is none, LT_ERR_FORMAT listing each checkpoint's fault when none verifies. */
lt_status lt_checkpoint_resolve(const char *path, char *out, size_t n);
/* The same, and in *skipped (when not NULL; NULL when none) a new JSON array of the newer
 * checkpoints passed over: [{"checkpoint": file, "reason": message}]. */
lt_status lt_checkpoint_pick(const char *path, char *out, size_t n, struct json_t **skipped);
/* Checks a checkpoint before anything trusts it: the SHA-256 of its state and of every
 * tensor (format 2), every state field's type and range (step, counters, early-stop and
 * non-finite counts, tokens, best_val_loss) and their consistency, every value finite (second
 * moments >= 0). LT_ERR_FORMAT naming the file and the field or tensor. */
lt_status lt_checkpoint_verify(const char *file);
/* The run folder a checkpoint file belongs to: DIR for DIR/checkpoints/step-N.safetensors,
 * else the folder holding the file. */
lt_status lt_checkpoint_run_dir(const char *ckpt_file, char *out, size_t n);
/* The options saved in a checkpoint, applied on top of *o (so the command line can still
 * override them afterwards). */
lt_status lt_checkpoint_load_opts(const char *ckpt_file, lt_run_opts *o);

/* --compute-dtype: want LT_DTYPE_F32 / LT_DTYPE_BF16 as asked, or -1 auto -- BF16 where the CPU
 * multiplies bf16 natively (avx512_bf16 or amx_bf16) at the dispatch level in use (LORATUNE_CPU
 * =avx2 turns it off) and the method can (DoRA cannot), else F32. *why: the reason (static). */
lt_dtype lt_run_pick_compute_dtype(int want, lt_train_method m, const char **why);
/* The frozen base's dtype for --base-dtype want (-1 auto). Auto is BF16 when the method is LoRA,
 * the products are bf16 and the checkpoint states bf16 weights (mc->dtype, dtype_stated): the
 * 16-bit copy then holds the stored values exactly, so the run computes the same numbers with
 * half the base's memory and no rounding per product. F32 otherwise (an fp32 or quantized
 * checkpoint, whose norms and embeddings a bf16 copy would round; other methods; fp32 products). */
lt_dtype lt_run_pick_base_dtype(int want, lt_train_method m, lt_dtype compute,
                                const lt_model_config *mc);

/* The trainer configuration a run of options o gives lt_trainer_create on a model of config mc
 * (what `loratune train` does before it loads an adapter to resume or continue): method, LoRA
 * shape and layers (checked against mc's layer count), batch size (1 where o says auto),
 * sequence length (o's: 0 or less where auto), dtypes (*why: the compute dtype's reason,
 * static; may be NULL), optimizer settings. Not validated (lt_train_config_validate). Used by
 * the server's memory estimate, so it and the run plan the same configuration. */
lt_status lt_run_opts_train_config(const lt_run_opts *o, const lt_model_config *mc,
                                   lt_train_config *c, const char **why);

#ifdef __cplusplus
}
#endif
#endif
