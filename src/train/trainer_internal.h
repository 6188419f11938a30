/* trainer_internal.h - the lt_trainer struct and the layout function shared by lt_train_plan
 * (counting pass) and lt_trainer_create (carving pass), so the plan IS the allocation.
 *
 * N = B*T tokens, D dim, QD = NH*HD, KVD = NKV*HD, F ffn, V vocab, L layers, r LoRA rank. */
#ifndef LT_TRAINER_INTERNAL_H
#define LT_TRAINER_INTERNAL_H

#include "loratune/backend.h"
#include "loratune/nf4.h"
#include "loratune/ops.h"
#include "loratune/train.h"

/* One linear of one layer: the frozen or trained base weight plus its adapter. */
typedef struct {
    int C, OC;
    float *W;          /* [OC][C] fp32 weight in the lt_model (source of truth for F32 and full
                          FT; NULL once the model's weights are released -- W16 is then set) */
    uint16_t *W16;     /* [OC][C] 16-bit copy when frozen and base_dtype is BF16/F16, else NULL */
    lt_nf4 *q4;        /* QLoRA: the frozen weight in NF4 (double-quantized), else NULL */
    /* lazy model: W / W16 may point into the mapped file (zero-copy); with all of W, W16, q4
     * NULL the rows are read from rsrc (weight wid of layer) per matmul -- block-quantized
     * GGUF tensors, interleaved q/k rows, other dtypes */
    const lt_model *rsrc;
    lt_weight_id wid;
    int layer;
    /* device backend: a lazy weight kept in its file's storage format (a GGUF block type the
     * backend reads) in backend memory, in place of rsrc; dtype of Wq */
    const void *Wq;
    lt_dtype Wq_dt;
    const float *bias; /* [OC] or NULL (rounded copy when 16-bit) */
    float *dW, *dbias; /* full FT gradients (NULL when frozen) */
    /* adapter (NULL when none) */
    float *A, *B, *mag; /* [r][C], [OC][r], [OC] (DoRA) */
    float *dA, *dB, *dmag;
    float *wnorm; /* [OC] DoRA saved norm */
} lt_lin;

/* What the forward of one layer saves for backward; xn1, xn2 and h are not saved but point
 * into the workspace (tmp, dgate), where the forward writes them and the backward recomputes
 * them (trainer_layout.c). */
typedef struct {
    float *xn1, *rstd1;      /* [N][D], [N] */
    float *q, *k, *v;        /* [N][QD], [N][KVD], [N][KVD] (q, k after rope) */
    float *att, *lse;        /* [N][QD], [B][NH][T] */
    float *xmid;             /* [N][D] residual after attention */
    float *xn2, *rstd2;      /* [N][D], [N] */
    float *gate, *up, *h;    /* [N][F] each */
    float *xa[LT_N_TARGETS]; /* [N][r] per adapted target (NULL otherwise) */
} lt_layer_acts;

typedef struct {
    char *name;
    int ndim;
    int64_t shape[2], numel;
    float *value, *grad, *m, *v;
    float *model_value; /* device backend, full FT: the lt_model's own weight (value is its
                           device copy; lt_trainer_sync_model copies it back), else NULL */
} lt_tt; /* trainable tensor */

struct lt_trainer {
    const lt_backend *be; /* where the step runs (every op, every block) */
    lt_model *m;
    lt_model_config mc;
    lt_train_config c;
    lt_train_plan_t plan;
    int64_t mem_bytes[LT_MEM_COUNT];
    int64_t n_allocs;
    void *block[LT_MEM_COUNT]; /* one allocation per category */
    int64_t step;
    uint64_t micro; /* micro-batches run (dropout stream) */
    int training;   /* 1 inside accumulate, 0 inside eval (no dropout) */
    float scale;    /* LoRA scale */
    int r;
    int half;     /* base weights in 16-bit */
    int bf16;     /* c.compute_dtype BF16: linear layers' and head's products in bf16 */
    int bwd_stop; /* lowest layer whose backward runs */
    int embed_trainable, head_trainable, norm_trainable;

    /* model pieces */
    lt_lin *lin;                         /* [L][7] */
    const float **attn_norm, **ffn_norm; /* [L] pointers (rounded copies when 16-bit) */
    float **dattn_norm, **dffn_norm;     /* [L] grads or NULL */
    const float *out_norm;
    float *dout_norm;
    const float *embd; /* [V][D] fp32 (model) unless embd16 */
    uint16_t *embd16;
    float *dembd;
    const float *head; /* [V][D] */
    uint16_t *head16;
    float *dhead;
    /* lazy model: embedding / head rows read from the file when embd / embd16 (head /
     * head16) are NULL (embd_src / head_src set, head_wid = LM_HEAD or TOK_EMBD when tied) */
    const lt_model *embd_src, *head_src;
    lt_weight_id head_wid;
    /* device backend: a lazy embedding / head kept in its file's block type (see lt_lin.Wq) */
    const void *embdq, *headq;
    lt_dtype embdq_dt, headq_dt;
    /* device backend, QLoRA of an untied model (trainer_layout.c's embd_host): the token
     * embedding stays in host memory. embd_host: its rows as stored (embd_host_dt; the
     * trainer's 16-bit copy, embd_host_own, or the mapped file's tensor) for the device to
     * convert, or NULL with embd_host_src: rows the host converts to fp32. embd_rows: host
     * buffer of a step's rows ([N][D] floats at most). */
    const void *embd_host;
    lt_dtype embd_host_dt;
    void *embd_host_own;
    const lt_model *embd_host_src;
    void *embd_rows;
    int64_t weights_host_tail; /* the staged WEIGHTS' end not in the device's block (embd16) */
    float *nf4_scr; /* QLoRA: quantization scratch (absmax of the largest matrix) */

    /* trainable tensors */
    int n_tt;
    lt_tt *tt; /* tt[i].m / .v NULL under ZeRO-1 (zero_m / zero_v below hold the shard's) */
    /* ZeRO-1 (c.zero_ranks >= 1): the gradient span padded to zero_span floats (zero_ranks
     * shards of zero_n); this rank's shard is [zero_off, zero_off + zero_n) of it, its AdamW
     * moments zero_m / zero_v [zero_n] (index j: span float zero_off + j) */
    int64_t zero_span, zero_off, zero_n;
    float *zero_m, *zero_v;

    /* activations */
    float *xs;           /* [L+1][N][D] layer inputs (xs[L] = last layer output) */
    lt_layer_acts *acts; /* [L] (no checkpointing) or [1] (recompute set) */
    float *xf, *rstdf;   /* [N][D], [N] final norm */
    float *logits_keep;  /* [N][V] or NULL */

    /* workspace */
    float *tmp;                 /* [N][D] */
    float *dres, *dxn;          /* [N][D] */
    float *dq, *dk, *dv, *datt; /* [N][QD], [N][KVD], [N][KVD], [N][QD] */
    float *dgate, *dh;          /* [N][F] (dgate holds h first, dh dup after) */
    float *scratch;             /* LoRA/DoRA scratch: max LT_LORA_SCRATCH */
    float *mask;                /* [N][max C] dropout mask or NULL */
    float *wdeq;                /* dequantized weight [max OC*C] or NULL */
    int64_t wdeq_n;             /* its floats */
    float *logits;              /* [chunk][V] */
    /* bf16 compute (c.compute_dtype BF16): the inputs of the products rounded to bf16 */
    uint16_t *xb16;  /* [N][max(D, QD, F)]: a linear's input (forward) or dy (backward) */
    uint16_t *xb16b; /* the same size, full FT only: x beside dy for dW += dy^T x */
    uint16_t *wb16;  /* [max OC*C]: a weight not stored as bf16 (NF4, trained fp32, lazy) */
    uint16_t *hb16;  /* [chunk][V]: the head's input rows, then dlogits */
    /* bf16 compute, LoRA: the grouped adapters' buffers (lin_fwd_group; NULL otherwise);
     * G = the most of g r C over the groups (q,k,v: 3 r D; gate,up: 2 r D; o: r QD; down: r F) */
    float *grp_da;     /* [G]: the group's dA before it is added per target */
    uint16_t *grp_ab;  /* [G]: the group's A matrices in bf16, one under the other */
    uint16_t *grp_xab; /* [N][3 r]: the group's xa in bf16 */
    uint16_t *grp_bb;  /* [max OC][r]: a B in bf16 */
    float *grp_dxa;    /* [N][3 r]: the group's dxa side by side */
    uint16_t *headb; /* [V][D]: an fp32 head rounded to bf16: once at create when frozen, at
                        every micro-batch when trained (NULL when the head is bf16 already or
                        read per block) */
    int chunk;
    int head_vb; /* > 0: the head is dequantized and applied in vocabulary blocks of head_vb
                    rows (chunk = all rows, logits [N][V]); 0: whole (head_weight) */
    float *cos_t, *sin_t; /* [T][HD/2] */
    int32_t *pos_buf;     /* [N] */
    int32_t *head_idx;    /* [N] positions whose target counts (the head runs only there) */
    int32_t *head_tgt;    /* [N] their targets */
    /* the step's batch compacted (run_step): rows cut after their last counted target and laid
     * end to end, row b at positions [c_off[b], c_off[b+1]) */
    int32_t *c_tok, *c_tgt, *c_pos, *c_seq; /* [N] */
    int32_t *c_off;                         /* [batch_size + 1] */
    int logits_B, logits_T;

    /* Host twins of the per-batch index arrays, written by the host and staged into the
     * backend's arrays with set (the same pointers on a host-memory backend) */
    int32_t *h_tok, *h_tgt, *h_pos, *h_hidx, *h_htgt, *h_off;
    /* device backend (be->device): what lives on the host besides this struct -- the head of
     * the workspace (bookkeeping: lin, the tensor table, names; ws_head bytes, carved there by
     * the layout), the NF4 descriptors (their arrays on the device), the index twins -- and
     * the device copies of host weights made at creation (base weights of the lt_model or of
     * the mapped file, full FT's trained weights), freed with the trainer */
    void *ws_host;
    int64_t ws_head;
    lt_nf4 *q4_host;
    void *h_idx;
    void **dev_copy;
    const void **dev_copy_src;
    int n_dev_copy, cap_dev_copy;

    /* lt_trainer_set_grad_hook: the pieces emitted during the backward (borrowed) */
    const lt_grad_piece *hook_pieces;
    int hook_n, hook_next;
    lt_grad_hook hook;
    void *hook_ctx;
    int hook_failed;
};

/* Counting pass when tr == NULL (fills bytes[] only), carving pass otherwise (tr->block must
 * hold bytes[] per category from a counting pass). Also fills n_tensors / n_trainable and
 * ws_head (may be NULL): the leading bytes of the WORKSPACE block that the carving pass writes
 * (bookkeeping: lin, tensor table, names); it writes nothing else but the WEIGHTS block (the
 * 16-bit copies), so everything else may stay untouched until the model's weights are
 * released. */
/* files: the weight files of a lazy base, whose tensors' dtypes decide what is used in place
 * and what is copied (the carving pass then leaves the copies for lt_trainer_create to fill
 * from the file); NULL: an lt_model holding fp32 weights (or a plan of one). */
typedef struct {
    const lt_model *lazy; /* a lazy model (lt_model_is_lazy): its mapped tensors; NULL: files
                             assumed from the config (counting pass only: lt_train_plan_assumed)
                             -- every tensor stored as dtype, aligned, in HF row order */
    lt_dtype dtype;       /* lazy NULL: the assumed files' dtype (F32 / F16 / BF16) */
    const lt_backend *dev; /* a device backend the trainer will run on (may be NULL): decides
                              the size of the mapped tensors' device copies (mapped_dev_bytes) */
} lt_base_files;
typedef struct {
    int64_t mapped_bytes;      /* frozen tensors used in place from the mapped file */
    int64_t convert_max_bytes; /* largest file tensor converted into a copy (transient) */
    /* the device copies move_to_device makes of those tensors: as stored where the device
     * reads the dtype (files->dev's supports_dtype), else converted to fp32 */
    int64_t mapped_dev_bytes;
    /* the end of the WEIGHTS block that a device trainer keeps in host memory instead (QLoRA's
     * untied token embedding as a 16-bit copy; trainer_layout.c's embd_host), 0 if none */
    int64_t host_embd_bytes;
} lt_layout_src_info;
/* 1: on a device backend the token embedding stays in host memory (QLoRA, untied embeddings:
 * the one large frozen table whose rows a step reads only N of) */
int lt_train_embd_host_(const lt_model_config *mc, const lt_train_config *c);
lt_status lt_trainer_layout_(lt_trainer *tr, const lt_model_config *mc, const lt_base_files *files,
                             const lt_train_config *c, int64_t bytes[LT_MEM_COUNT], int *n_tensors,
                             int64_t *n_trainable, int64_t *ws_head, lt_layout_src_info *si);
/* lt_train_plan for a config and optional weight files (see lt_trainer_layout_). */
lt_status lt_train_plan_src_(const lt_model_config *mc, const lt_base_files *files,
                             const lt_train_config *c, lt_train_plan_t *out);
/* QLoRA with an F32 base_dtype -> BF16 for the unquantized parts; lt_train_plan and
 * lt_trainer_create apply it to their copy of the config. */
void lt_train_config_normalize_(lt_train_config *c);
/* The model weight of each LoRA target (q, k, v, o, gate, up, down). */
extern const lt_weight_id lt_target_wids_[LT_N_TARGETS];
/* x rounded through the 16-bit dtype dt (BF16 / F16), and n values converted to it. */
float lt_round16_(float x, lt_dtype dt);
void lt_to16_(uint16_t *dst, const float *src, int64_t n, lt_dtype dt);
/* Overhead estimate used for the predicted peak. */
int64_t lt_train_overhead_bytes_(int64_t planned_bytes);

#endif
