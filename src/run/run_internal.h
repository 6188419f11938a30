/* run_internal.h - the lt_run and lt_run_shared structs shared by run.c (preparation, the
 * loop) and checkpoint.c. */
#ifndef LT_RUN_INTERNAL_H
#define LT_RUN_INTERNAL_H

#include <jansson.h>
#include <stdatomic.h>

#include "loratune/adapter.h"
#include "loratune/backend.h"
#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/tokenizer.h"

#define LT_RUN_MAX_SINKS 16
#define LT_RUN_MAX_FAULTS 64

/* What runs over one model and data share (lt_run_shared_load owns it all; runs borrow). */
struct lt_run_shared {
    lt_run_opts o;   /* the options it was loaded with (model, tokenizer, data options) */
    lt_model *model; /* lazy: read-only while runs use it (no run trains it in place) */
    lt_tokenizer *tok;
    lt_chat_template *tpl; /* NULL: the model has none */
    lt_data *data;
    int max_seq_len; /* what data was tokenized to */
};

struct lt_run {
    const char *compute_reason; /* why tc.compute_dtype (a static string) */
    lt_run_opts o;
    const lt_run_shared *shared; /* borrowed (lt_run_new_from): model, tok, tpl are its own */
    lt_model *model;
    lt_tokenizer *tok;
    lt_chat_template *tpl;
    lt_data *data;     /* in use: own_data, or the shared object's */
    lt_data *own_data; /* tokenized by this run (freed with it); NULL when data is shared */
    lt_train_config tc;
    lt_trainer *tr;
    lt_backend *cuda; /* the CUDA backend the trainer runs on (--device), or NULL: the CPU */
    lt_batcher *train_b;                /* NULL when there is no training split */
    lt_batcher *eval_b[LT_SPLIT_COUNT]; /* created on first evaluation of a split */
    struct {
        lt_run_sink fn;
        void *ctx;
    } sinks[LT_RUN_MAX_SINKS];
    int n_sinks;
    atomic_int stop;
    int prepared, prepare_failed; /* lt_run_prepare ran (once) */
    double t_prepare;             /* when it began: the stage events' elapsed_s */
    double progress_t;            /* the last tokenizing progress event */

    int64_t total_steps, warmup_steps, epoch_batches;
    /* automatic sizes (lt_train_plan_fit_run): what was asked, the budget and the planned peak */
    int auto_batch, auto_seq;
    int budget_checked; /* resolve_sizes checked the plan against a budget (start event) */
    int64_t memory_budget, planned_peak;
    int64_t reserved_bytes; /* of planned_peak: held besides the trainer's plan (tokenizer, data,
                               output writing; lt_train_plan_fit_run) */
    /* state saved in checkpoints */
    int64_t step;    /* optimizer steps done (skipped ones included) */
    double best_val; /* +inf before the first evaluation */
    int evals_no_improve;
    int consecutive_nonfinite;
    int64_t tokens_total;   /* loss tokens trained on */
    int64_t resumed_from;   /* -1: fresh run */
    json_t *resumed_config; /* options stored in the checkpoint (NULL: fresh) */
    json_t *resume_skipped; /* damaged newer checkpoints passed over by the resume (or NULL) */

    /* one optimizer step's micro-batches, copied out of the batcher */
    int32_t *mb_buf; /* grad_accum * 4 arrays of batch_size * max_seq_len */
    lt_batch *mbs;
    int has_pos, has_seq;

    int64_t fault_steps[LT_RUN_MAX_FAULTS];
    int n_fault_steps;

    lt_dir_lock *out_lock; /* OUT's lock (lt_dir_lock), held from lt_run_create to lt_run_free */
    char ckpt_dir[LT_RUN_PATH_MAX + 32];
    char last_ckpt[LT_RUN_PATH_MAX + 64];
    int64_t last_ckpt_step;
    int64_t *own_ckpts; /* steps of the checkpoints this run owns (prune), ascending */
    int n_own, cap_own;
    int64_t last_eval_step;
    double last_val_loss;
    /* the step-0 validation: given (lt_run_set_step0_eval: reported, not computed) or computed
     * by this run (lt_run_get_step0_eval) */
    int step0_given, step0_known;
    lt_eval_result step0;

    /* lt_run_get_result */
    double last_train_loss; /* of the last applied step of this session (NaN: none) */
    double session_train_s; /* seconds in applied steps, this session */
    int64_t session_tokens; /* loss tokens of those steps */
    int finished;           /* lt_run_train returned */
    lt_status train_status;
    lt_run_outcome outcome;
    double train_elapsed_s;
    char result_msg[LT_RUN_PATH_MAX + 1024];
    char saved[4][LT_RUN_PATH_MAX + 64]; /* peft, mlx, gguf, hf outputs written ("" not) */

    /* data parallelism (lt_run_set_comm; comm.size 0: none). Buffers made by create_trainer. */
    lt_run_comm comm;
    int64_t dp_params;   /* trainable floats, all tensors end to end */
    int dp_rows;         /* row slots per micro-batch on one rank: ceil(batch_size / size) */
    size_t dp_slot;      /* bytes of one row's slot: {loss_sum, count} doubles + dp_params floats */
    unsigned char *dp_send; /* grad_accum * dp_rows slots: this rank's rows */
    unsigned char *dp_recv; /* size times dp_send: every rank's, in rank order */
    float *dp_sum;          /* [dp_params] the rows summed in global order */
    int64_t dp_bytes;       /* dp_send + dp_recv + dp_sum, allocated (the start event) */
    lt_grad_piece *dp_pieces; /* comm.allreduce_wait: the gradient span's pieces, in order */
    int dp_npieces, dp_emitted; /* their count; how many the step has reduced so far */
};
/* 1 when this process writes OUT (no communicator, or rank 0). */
static inline int lt_run_writer_(const lt_run *r) {
    return r->comm.size == 0 || r->comm.rank == 0;
}
enum { LT_SAVED_PEFT = 0, LT_SAVED_MLX, LT_SAVED_GGUF, LT_SAVED_HF };

void lt_run_emit_(lt_run *r, json_t *ev); /* sends to every sink, then drops the reference */
/* LT_OK when a run with options o may borrow sh (run.c). */
lt_status lt_run_shared_check_(const lt_run_shared *sh, const lt_run_opts *o);

/* checkpoint.c */
/* The end-of-training exports into OUT: the HF model (full fine-tune), or the PEFT adapter with
 * its mlx-lm (OUT/mlx-lm) and GGUF (OUT/adapter.gguf) siblings, each folder whole or marked
 * incomplete (lt_output_begin / lt_output_end). */
lt_status lt_run_save_outputs_(lt_run *r);
lt_status lt_run_save_checkpoint_(lt_run *r);
/* ZeRO-1 (run.c): every rank's AdamW shards gathered (collective: every rank calls it); on the
 * writer a new host array [2 x span]: m then v, each tensor's at its span_offset (free it);
 * NULL on the others, and on failure (*st set) */
float *lt_run_zero_gather_(lt_run *r, lt_status *st);
/* file: one lt_checkpoint_pick chose, so verified (lt_checkpoint_verify) just before */
lt_status lt_run_load_checkpoint_(lt_run *r, const char *file);
/* Locks OUT (created if missing) for the run's life and removes the temp files that killed
 * checkpoint writes left in OUT/checkpoints (no other writer can be there now). */
lt_status lt_run_take_out_(lt_run *r);

#endif
