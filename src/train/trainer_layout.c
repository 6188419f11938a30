/* trainer_layout.c - every buffer of a training step, sized and placed in one function.
 *
 * lt_trainer_layout_ runs twice: a counting pass (tr == NULL) that only adds bytes per
 * lt_mem_category -- this is lt_train_plan -- and a carving pass that points every field of
 * the trainer into the one block allocated per category. Because both passes are the same
 * code, the plan equals the allocation by construction; test_plan checks the recorded
 * allocator totals against it. Every carve is rounded up to 64 bytes (cache line / SIMD).
 * A lazy base's decisions (in place or copied) read only each file tensor's dtype, bytes and
 * alignment, so the counting pass can also run over weight files assumed from a config
 * (lt_train_plan_assumed: a plan before the files are downloaded) through the same code. */
#include <stdio.h>
#include <string.h>

#include "loratune/quant.h"
#include "trainer_internal.h"

typedef struct {
    lt_trainer *tr;
    int64_t off[LT_MEM_COUNT];
    int zero_ranks; /* lt_train_config.zero_ranks */
} carver;

static void *carve(carver *cv, int cat, int64_t bytes) {
    int64_t b = (bytes + 63) & ~(int64_t)63;
    void *p = cv->tr ? (char *)cv->tr->block[cat] + cv->off[cat] : NULL;
    /* a device backend: the workspace's bookkeeping head is host memory (trainer_internal.h) */
    if (p && cat == LT_MEM_WORKSPACE && cv->tr->ws_host && cv->off[cat] < cv->tr->ws_head)
        p = (char *)cv->tr->ws_host + cv->off[cat];
    cv->off[cat] += b;
    return p;
}
#define CARVE_F(cv, cat, n) ((float *)carve(cv, cat, (int64_t)(n) * (int64_t)sizeof(float)))

static const char *k_tnames[LT_N_TARGETS] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
const char *lt_target_name(int i) {
    return (i >= 0 && i < LT_N_TARGETS) ? k_tnames[i] : "?";
}
static const char *target_block(int t) {
    return t < 4 ? "self_attn" : "mlp";
}

/* Adds one trainable tensor: value (in_model: the lt_model's weight, trained in place; else
 * carved in TRAINABLE), grad, m, v, name. value is NULL in the counting pass. */
static void add_tensor_(carver *cv, int *idx, int ndim, int64_t s0, int64_t s1, int in_model,
                        float *value, const char *name) {
    int64_t n = ndim == 1 ? s0 : s0 * s1;
    lt_tt *t = cv->tr ? &cv->tr->tt[*idx] : NULL;
    float *val = in_model ? value : CARVE_F(cv, LT_MEM_TRAINABLE, n);
    float *g = CARVE_F(cv, LT_MEM_GRADS, n);
    /* ZeRO-1: the moments of the rank's shard are carved once, after every tensor */
    const int zero = cv->zero_ranks > 0;
    float *m = zero ? NULL : CARVE_F(cv, LT_MEM_OPTIMIZER, n);
    float *v = zero ? NULL : CARVE_F(cv, LT_MEM_OPTIMIZER, n);
    size_t len = strlen(name) + 1;
    char *nm = (char *)carve(cv, LT_MEM_WORKSPACE, (int64_t)len);
    if (t) {
        memcpy(nm, name, len);
        t->name = nm;
        t->ndim = ndim;
        t->shape[0] = s0;
        t->shape[1] = ndim == 1 ? 1 : s1;
        t->numel = n;
        t->value = val;
        t->grad = g;
        t->m = m;
        t->v = v;
    }
    (*idx)++;
}

/* x rounded through the 16-bit base dtype (what the frozen copy holds) */
float lt_round16_(float x, lt_dtype dt) {
    return dt == LT_DTYPE_BF16 ? lt_bf16_to_f32(lt_f32_to_bf16(x))
                               : lt_f16_to_f32(lt_f32_to_f16(x));
}
void lt_to16_(uint16_t *dst, const float *src, int64_t n, lt_dtype dt) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = dt == LT_DTYPE_BF16 ? lt_f32_to_bf16(src[i]) : lt_f32_to_f16(src[i]);
}

/* a tensor of the lt_model (full FT) / one the trainer owns (adapters) */
#define add_model_tensor(cv, idx, nd, s0, s1, val, nm) add_tensor_(cv, idx, nd, s0, s1, 1, val, nm)
#define add_own_tensor(cv, idx, nd, s0, s1, nm) add_tensor_(cv, idx, nd, s0, s1, 0, NULL, nm)

static int in_range(int l, int b, int e, int L) {
    return l >= b && l < (e <= 0 ? L : e);
}

/* ---- lazy sources: what is used in place from the mapped file ---- */
const lt_weight_id lt_target_wids_[LT_N_TARGETS] = {LT_W_WQ,   LT_W_WK, LT_W_WV,  LT_W_WO,
                                                    LT_W_GATE, LT_W_UP, LT_W_DOWN};

/* a float dtype lt_to_f32 reads by rows: F32/F16/BF16 or a ggml block type */
static int rowable(lt_dtype t) {
    return t == LT_DTYPE_F32 || t == LT_DTYPE_F16 || t == LT_DTYPE_BF16 ||
           (t >= LT_DTYPE_Q4_0 && t <= LT_DTYPE_Q8_K);
}
/* A frozen tensor of a lazy model is used in place when it is no wider than the base dtype
 * asks for (a block-quantized GGUF tensor always: it stays quantized); else it is copied. */
static int in_place_ok(const lt_tensor_view *v, lt_dtype base) {
    if (!v || !rowable(v->dtype)) return 0;
    double bpw = (double)lt_dtype_block_bytes(v->dtype) / (double)lt_dtype_block_elems(v->dtype);
    return bpw <= (base == LT_DTYPE_F32 ? 4.0 : 2.0);
}
/* The file's view of weight id (layer l): the lazy model's, or, for assumed files, one made up
 * in *tmp from the config (the dtype, the shape, the bytes; data NULL, which counts as
 * aligned: only the counting pass sees it). NULL when there is no such weight. */
static const lt_tensor_view *file_view(const lt_base_files *f, const lt_model_config *mc,
                                       lt_weight_id id, int l, lt_tensor_view *tmp) {
    if (f->lazy) return lt_model_weight_view(f->lazy, id, l);
    int64_t rows, cols;
    if (!lt_model_weight_shape(mc, id, &rows, &cols)) return NULL;
    memset(tmp, 0, sizeof *tmp);
    tmp->name = lt_weight_id_name(id);
    tmp->dtype = f->dtype;
    tmp->ndim = rows == 1 ? 1 : 2;
    tmp->shape[0] = rows == 1 ? cols : rows;
    tmp->shape[1] = rows == 1 ? 0 : cols;
    tmp->nbytes = (size_t)lt_dtype_nbytes(f->dtype, rows * cols);
    return tmp;
}
/* how an in-place tensor is read: 1 = directly as fp32 (W), 2 = directly as the 16-bit base
 * dtype (W16), 0 = through lt_model_weight_rows per use */
static int direct_kind(const lt_model *src, lt_weight_id id, const lt_tensor_view *v,
                       lt_dtype base) {
    if (lt_model_weight_interleaved(src, id)) return 0;
    uintptr_t a = (uintptr_t)v->data;
    if (v->dtype == LT_DTYPE_F32 && !(a & 3)) return 1;
    if (base != LT_DTYPE_F32 && v->dtype == base && !(a & 1)) return 2;
    return 0;
}

/* The bytes of the device copy move_to_device makes of in-place tensor v (direct kind dk): a
 * direct fp32 / 16-bit tensor as it is; one read through the model's rows (dk 0) as stored
 * when the device reads its dtype in the model's row order (lazy_to_dev), else as fp32. */
static int64_t dev_copy_bytes(const lt_base_files *f, const lt_model *src, lt_weight_id id,
                              const lt_tensor_view *v, int dk) {
    if (dk != 0) return (int64_t)v->nbytes;
    const lt_backend *be = f ? f->dev : NULL;
    if (be && v->dtype != LT_DTYPE_F32 && !(src && lt_model_weight_interleaved(src, id)) &&
        be->op->supports_dtype && be->op->supports_dtype(be, v->dtype))
        return (int64_t)v->nbytes;
    return 4 * lt_tensor_numel(v);
}

int lt_train_embd_host_(const lt_model_config *mc, const lt_train_config *c) {
    return c->method == LT_METHOD_QLORA && !mc->tied_embeddings;
}

lt_status lt_trainer_layout_(lt_trainer *tr, const lt_model_config *mc, const lt_base_files *files,
                             const lt_train_config *c, int64_t bytes[LT_MEM_COUNT], int *n_tensors,
                             int64_t *n_trainable, int64_t *ws_head, lt_layout_src_info *si) {
    carver cv;
    memset(&cv, 0, sizeof cv);
    cv.tr = tr;
    cv.zero_ranks = c->zero_ranks;
    int64_t mapped = 0, conv_max = 0, mapped_dev = 0;
    if (files && files->lazy && !lt_model_is_lazy(files->lazy)) files = NULL;
    /* src: the lazy model whose mapped tensors the carving pass points into (NULL for assumed
     * files, which only the counting pass plans over) */
    const lt_model *src = files ? files->lazy : NULL;
    lt_tensor_view vtmp;
    if (files && !src && tr)
        return lt_error(LT_ERR_INTERNAL, "train layout: assumed weight files cannot be carved");
    if (files && c->method == LT_METHOD_FULL)
        return lt_error(LT_ERR_ARG, "full fine-tuning trains every weight: load the model whole, "
                                    "not lazily");
#define CONVERTS(v)                                                                                \
    do {                                                                                           \
        if ((v) && (int64_t)(v)->nbytes > conv_max) conv_max = (int64_t)(v)->nbytes;              \
    } while (0)
    const int L = mc->n_layers, D = mc->dim, HD = mc->head_dim, NH = mc->n_heads;
    const int QD = NH * HD, KVD = mc->n_kv_heads * HD, F = mc->ffn_dim, V = mc->vocab_size;
    const int64_t N = (int64_t)c->batch_size * c->seq_len;
    const int full = c->method == LT_METHOD_FULL, dora = c->method == LT_METHOD_DORA;
    const int qlora = c->method == LT_METHOD_QLORA;
    const int half = c->base_dtype != LT_DTYPE_F32; /* QLoRA: always (lt_train_config_normalize_) */
    const int r = full ? 0 : c->lora.r;
    const lt_model_weights *w = tr ? &tr->m->w : NULL;
    const int lazy = files != NULL;
    const int Cs[LT_N_TARGETS] = {D, D, D, QD, D, D, F};
    const int OCs[LT_N_TARGETS] = {QD, KVD, KVD, D, F, F, D};

    /* which params train */
    int lb = full ? c->full.layer_begin : c->lora.layer_begin;
    int le = full ? c->full.layer_end : c->lora.layer_end;
    if (le <= 0) le = L;
    int embed_tr = full && !c->full.freeze_embeddings;
    int head_tr = full && (mc->tied_embeddings ? embed_tr : 1);
    int norm_tr = full;

    /* ---- bookkeeping (workspace) ---- */
    int n_tt = 0;
    if (full) {
        n_tt = embed_tr + (le - lb) * (2 + 7 + (mc->qkv_bias ? 3 : 0)) + 1 +
               (!mc->tied_embeddings ? 1 : 0);
    } else {
        int nt = 0;
        for (int t = 0; t < LT_N_TARGETS; t++)
            nt += (c->lora.targets >> t) & 1;
        n_tt = (le - lb) * nt * (dora ? 3 : 2);
    }
    lt_lin *lin =
        (lt_lin *)carve(&cv, LT_MEM_WORKSPACE, (int64_t)L * LT_N_TARGETS * sizeof(lt_lin));
    const float **anorm = (const float **)carve(&cv, LT_MEM_WORKSPACE, (int64_t)L * sizeof(void *));
    const float **fnorm = (const float **)carve(&cv, LT_MEM_WORKSPACE, (int64_t)L * sizeof(void *));
    float **danorm = (float **)carve(&cv, LT_MEM_WORKSPACE, (int64_t)L * sizeof(void *));
    float **dfnorm = (float **)carve(&cv, LT_MEM_WORKSPACE, (int64_t)L * sizeof(void *));
    lt_tt *tts = (lt_tt *)carve(&cv, LT_MEM_WORKSPACE, (int64_t)n_tt * sizeof(lt_tt));
    int nacts = c->grad_checkpoint ? 1 : L;
    lt_layer_acts *acts =
        (lt_layer_acts *)carve(&cv, LT_MEM_WORKSPACE, (int64_t)nacts * sizeof(lt_layer_acts));
    if (tr) {
        memset(lin, 0, (size_t)L * LT_N_TARGETS * sizeof(lt_lin));
        memset(acts, 0, (size_t)nacts * sizeof(lt_layer_acts));
        tr->lin = lin;
        tr->attn_norm = anorm;
        tr->ffn_norm = fnorm;
        tr->dattn_norm = danorm;
        tr->dffn_norm = dfnorm;
        tr->tt = tts;
        tr->n_tt = n_tt;
        tr->acts = acts;
        tr->embed_trainable = embed_tr;
        tr->head_trainable = head_tr;
        tr->norm_trainable = norm_tr;
        tr->bwd_stop = embed_tr ? 0 : lb;
        tr->half = half;
        tr->bf16 = c->compute_dtype == LT_DTYPE_BF16;
        tr->r = r;
    }

    /* ---- trainable tensors, frozen copies, wiring ---- */
    char name[256];
    int idx = 0;
    int64_t wmax = 0; /* largest 16-bit matrix to dequantize (floats) */
    int head_deq = 0; /* the head is dequantized before use (16-bit / in-place file rows) */
    int64_t nf4_scratch_n = 0; /* QLoRA: absmax values of the largest matrix (quantize scratch) */
    /* embedding */
    if (full && embed_tr) {
        add_model_tensor(&cv, &idx, 2, V, D, w ? w->tok_embd : NULL, "model.embed_tokens.weight");
        if (tr) tr->dembd = tr->tt[idx - 1].grad;
    }
    int emb_f32 = 1; /* the embedding (and a tied head) is read as fp32 without a copy */
    int emb16 = 0, head16 = 0; /* ... or is a 16-bit copy / in-place 16-bit tensor (embd16) */
    /* QLoRA of an untied model: a device trainer keeps the token embedding in host memory
     * (each step's rows are gathered there and sent up). Its 16-bit copy is carved last in
     * WEIGHTS (emb_tail bytes, si->host_embd_bytes), the part of the block the device's copy
     * leaves out; an in-place tensor of the file gets no device copy. The CPU reads it as
     * before. */
    const int embd_host = lt_train_embd_host_(mc, c);
    int64_t emb_tail = 0;
    if (lazy) { /* never trained here (full FT refused above) */
        const lt_tensor_view *ev = file_view(files, mc, LT_W_TOK_EMBD, 0, &vtmp);
        if (in_place_ok(ev, c->base_dtype)) {
            mapped += (int64_t)ev->nbytes;
            int dk = direct_kind(src, LT_W_TOK_EMBD, ev, c->base_dtype);
            if (!embd_host) mapped_dev += dev_copy_bytes(files, src, LT_W_TOK_EMBD, ev, dk);
            emb_f32 = dk == 1;
            if (tr) {
                if (dk == 1) tr->embd = (const float *)ev->data;
                else if (dk == 2) tr->embd16 = (uint16_t *)(uintptr_t)ev->data;
                else tr->embd_src = src;
            }
            emb16 = dk == 2;
        } else if (half) {
            CONVERTS(ev);
            if (embd_host) {
                emb_tail = ((int64_t)V * D * 2 + 63) & ~(int64_t)63; /* carved at the end */
            } else {
                uint16_t *e16 = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)V * D * 2);
                if (tr) tr->embd16 = e16; /* filled from the file by lt_trainer_create */
            }
            emb_f32 = 0;
            emb16 = 1;
        } else {
            CONVERTS(ev);
            float *e = CARVE_F(&cv, LT_MEM_WEIGHTS, (int64_t)V * D);
            if (tr) tr->embd = e;
        }
    } else {
        if (tr) tr->embd = w->tok_embd;
        if (!embed_tr && half && embd_host) {
            emb_tail = ((int64_t)V * D * 2 + 63) & ~(int64_t)63; /* carved, filled at the end */
            emb_f32 = 0;
            emb16 = 1;
        } else if (!embed_tr && half) {
            uint16_t *e16 = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)V * D * 2);
            if (tr) {
                tr->embd16 = e16;
                lt_to16_(e16, w->tok_embd, (int64_t)V * D, c->base_dtype);
            }
            emb_f32 = 0;
            emb16 = 1;
        }
    }
    for (int l = 0; l < L; l++) {
        int ltr = in_range(l, lb, le, L);
        int ftr = full && ltr;
        const int64_t off[LT_N_TARGETS] = {
            (int64_t)l * QD * D, (int64_t)l * KVD * D, (int64_t)l * KVD * D, (int64_t)l * D * QD,
            (int64_t)l * F * D,  (int64_t)l * F * D,   (int64_t)l * D * F};
        float *wsrc[LT_N_TARGETS] = {NULL};
        float *bsrc[3] = {NULL};
        if (w && !lazy) {
            float *ws[LT_N_TARGETS] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
            for (int t = 0; t < LT_N_TARGETS; t++)
                wsrc[t] = ws[t] + off[t];
            if (mc->qkv_bias) {
                bsrc[0] = w->bq + (int64_t)l * QD;
                bsrc[1] = w->bk + (int64_t)l * KVD;
                bsrc[2] = w->bv + (int64_t)l * KVD;
            }
        }
        /* norms */
        for (int which = 0; which < 2; which++) {
            float *nsrc = w && !lazy ? (which ? w->ffn_norm : w->attn_norm) + (int64_t)l * D : NULL;
            const float *val = nsrc;
            float *grad = NULL;
            if (ftr) {
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
                         which ? "post_attention_layernorm" : "input_layernorm");
                add_model_tensor(&cv, &idx, 1, D, 0, nsrc, name);
                if (tr) grad = tr->tt[idx - 1].grad;
            } else if (half || lazy) {
                float *cp = CARVE_F(&cv, LT_MEM_WEIGHTS, D);
                if (tr) {
                    if (!lazy) /* a lazy source is read by lt_trainer_create */
                        for (int i = 0; i < D; i++)
                            cp[i] = lt_round16_(nsrc[i], c->base_dtype);
                    val = cp;
                }
            }
            if (tr) {
                (which ? fnorm : anorm)[l] = val;
                (which ? dfnorm : danorm)[l] = grad;
            }
        }
        for (int t = 0; t < LT_N_TARGETS; t++) {
            lt_lin *li = tr ? &lin[l * LT_N_TARGETS + t] : NULL;
            int C = Cs[t], OC = OCs[t];
            if (li) {
                li->C = C;
                li->OC = OC;
                li->W = wsrc[t];
                li->bias = t < 3 ? bsrc[t] : NULL;
            }
            if (ftr) {
                snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l, target_block(t),
                         k_tnames[t]);
                add_model_tensor(&cv, &idx, 2, OC, C, wsrc[t], name);
                if (li) li->dW = tr->tt[idx - 1].grad;
                if (t < 3 && mc->qkv_bias) {
                    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l,
                             k_tnames[t]);
                    add_model_tensor(&cv, &idx, 1, OC, 0, bsrc[t], name);
                    if (li) li->dbias = tr->tt[idx - 1].grad;
                }
            } else {
                const lt_weight_id wid = lt_target_wids_[t];
                const lt_tensor_view *sv = lazy ? file_view(files, mc, wid, l, &vtmp) : NULL;
                const int inpl = lazy && !qlora && in_place_ok(sv, c->base_dtype);
                if (inpl) {
                    /* used where it lies in the mapped file: zero-copy, or dequantized per use */
                    mapped += (int64_t)sv->nbytes;
                    int dk = direct_kind(src, wid, sv, c->base_dtype);
                    mapped_dev += dev_copy_bytes(files, src, wid, sv, dk);
                    if (li) {
                        if (dk == 1) li->W = (float *)(uintptr_t)sv->data;
                        else if (dk == 2) li->W16 = (uint16_t *)(uintptr_t)sv->data;
                        else {
                            li->rsrc = src;
                            li->wid = wid;
                            li->layer = l;
                        }
                    }
                    if (dk != 1 && (int64_t)OC * C > wmax) wmax = (int64_t)OC * C;
                } else if (lazy && !half) { /* an fp32 copy of another dtype */
                    CONVERTS(sv);
                    float *cp = CARVE_F(&cv, LT_MEM_WEIGHTS, (int64_t)OC * C);
                    if (li) li->W = cp;
                }
                if (lazy && t < 3 && mc->qkv_bias) { /* bias copy, filled from the file */
                    float *bc = CARVE_F(&cv, LT_MEM_WEIGHTS, OC);
                    if (li) li->bias = bc;
                }
                if (half && !inpl) {
                    /* QLoRA is always half (lt_train_config_normalize_) */
                    CONVERTS(sv);
                    if (qlora) { /* NF4, double-quantized; the scratch is carved once below */
                        lt_nf4_sizes_t qs;
                        lt_nf4_sizes((int64_t)OC * C, 1, &qs);
                        lt_nf4 *q = (lt_nf4 *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)sizeof(lt_nf4));
                        uint8_t *codes = (uint8_t *)carve(&cv, LT_MEM_WEIGHTS, qs.codes_bytes);
                        uint8_t *qa = (uint8_t *)carve(&cv, LT_MEM_WEIGHTS, qs.qabsmax_bytes);
                        float *a2 = (float *)carve(&cv, LT_MEM_WEIGHTS, qs.absmax2_bytes);
                        if (qs.n_blocks > nf4_scratch_n) nf4_scratch_n = qs.n_blocks;
                        if (li) {
                            memset(q, 0, sizeof *q);
                            q->n = (int64_t)OC * C;
                            q->double_quant = 1;
                            q->codes = codes;
                            q->qabsmax = qa;
                            q->absmax2 = a2;
                            li->q4 = q;
                        }
                    } else {
                        uint16_t *h =
                            (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)OC * C * 2);
                        if (li) {
                            li->W16 = h;
                            if (!lazy) lt_to16_(h, wsrc[t], (int64_t)OC * C, c->base_dtype);
                        }
                    }
                    if ((int64_t)OC * C > wmax) wmax = (int64_t)OC * C;
                    if (!lazy && t < 3 && mc->qkv_bias) {
                        float *bc = CARVE_F(&cv, LT_MEM_WEIGHTS, OC);
                        if (li) {
                            for (int i = 0; i < OC; i++)
                                bc[i] = lt_round16_(bsrc[t][i], c->base_dtype);
                            li->bias = bc;
                        }
                    }
                }
                if (!full && ltr && ((c->lora.targets >> t) & 1)) {
                    const char *pre = "base_model.model.model.layers";
                    snprintf(name, sizeof name, "%s.%d.%s.%s.lora_A.weight", pre, l,
                             target_block(t), k_tnames[t]);
                    add_own_tensor(&cv, &idx, 2, r, C, name);
                    if (li) {
                        li->A = tr->tt[idx - 1].value;
                        li->dA = tr->tt[idx - 1].grad;
                    }
                    snprintf(name, sizeof name, "%s.%d.%s.%s.lora_B.weight", pre, l,
                             target_block(t), k_tnames[t]);
                    add_own_tensor(&cv, &idx, 2, OC, r, name);
                    if (li) {
                        li->B = tr->tt[idx - 1].value;
                        li->dB = tr->tt[idx - 1].grad;
                    }
                    if (dora) {
                        snprintf(name, sizeof name, "%s.%d.%s.%s.lora_magnitude_vector", pre, l,
                                 target_block(t), k_tnames[t]);
                        add_own_tensor(&cv, &idx, 1, OC, 0, name);
                        float *wn = CARVE_F(&cv, LT_MEM_ACTIVATIONS, OC);
                        if (li) {
                            li->mag = tr->tt[idx - 1].value;
                            li->dmag = tr->tt[idx - 1].grad;
                            li->wnorm = wn;
                        }
                    }
                }
            }
        }
    }
    /* final norm, head */
    if (full) {
        add_model_tensor(&cv, &idx, 1, D, 0, w ? w->out_norm : NULL, "model.norm.weight");
        if (tr) {
            tr->out_norm = w->out_norm;
            tr->dout_norm = tr->tt[idx - 1].grad;
        }
    } else {
        float *cp = half || lazy ? CARVE_F(&cv, LT_MEM_WEIGHTS, D) : NULL;
        if (tr && cp && !lazy)
            for (int i = 0; i < D; i++)
                cp[i] = lt_round16_(w->out_norm[i], c->base_dtype);
        if (tr) tr->out_norm = cp ? cp : w->out_norm;
    }
    if (mc->tied_embeddings) {
        if (tr) {
            tr->head = tr->embd;
            tr->head16 = tr->embd16;
            tr->head_src = tr->embd_src;
            tr->head_wid = LT_W_TOK_EMBD;
            tr->dhead = tr->dembd;
        }
        if (!emb_f32 && !head_tr) head_deq = 1;
        head16 = emb16 && !head_tr;
    } else if (lazy) {
        const lt_tensor_view *hv = file_view(files, mc, LT_W_LM_HEAD, 0, &vtmp);
        int dk = -1;
        if (in_place_ok(hv, c->base_dtype)) {
            mapped += (int64_t)hv->nbytes;
            dk = direct_kind(src, LT_W_LM_HEAD, hv, c->base_dtype);
            mapped_dev += dev_copy_bytes(files, src, LT_W_LM_HEAD, hv, dk);
            if (tr) {
                if (dk == 1) tr->head = (const float *)hv->data;
                else if (dk == 2) tr->head16 = (uint16_t *)(uintptr_t)hv->data;
                else tr->head_src = src;
                tr->head_wid = LT_W_LM_HEAD;
            }
            head16 = dk == 2;
        } else if (half) {
            CONVERTS(hv);
            uint16_t *h16 = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)V * D * 2);
            if (tr) tr->head16 = h16;
            head16 = 1;
        } else {
            CONVERTS(hv);
            dk = 1;
            float *h = CARVE_F(&cv, LT_MEM_WEIGHTS, (int64_t)V * D);
            if (tr) tr->head = h;
        }
        if (dk != 1) head_deq = 1;
    } else if (head_tr) {
        add_model_tensor(&cv, &idx, 2, V, D, w ? w->lm_head : NULL, "lm_head.weight");
        if (tr) {
            tr->head = w->lm_head;
            tr->dhead = tr->tt[idx - 1].grad;
        }
    } else {
        if (half) {
            uint16_t *h16 = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)V * D * 2);
            if (tr) {
                tr->head16 = h16;
                lt_to16_(h16, w->lm_head, (int64_t)V * D, c->base_dtype);
            }
            head_deq = 1;
            head16 = 1;
        }
        if (tr) tr->head = w->lm_head;
    }
    if (idx != n_tt)
        return lt_error(LT_ERR_INTERNAL, "train layout: %d tensors, expected %d", idx, n_tt);
    if (c->zero_ranks > 0 && n_tt > 0) {
        /* ZeRO-1: the gradient span (the tensors' gradients end to end, 64-byte aligned) padded
         * with zeros to zero_ranks equal shards of a multiple of 16 floats (NCCL's reduce-scatter
         * and all-gather take equal counts; each shard starts 64-byte aligned), then the moments
         * of one shard: m [S], v [S] */
        const int64_t g = 16 * (int64_t)c->zero_ranks, have = cv.off[LT_MEM_GRADS] / 4;
        const int64_t span = (have + g - 1) / g * g, S = span / c->zero_ranks;
        float *pad = span > have ? CARVE_F(&cv, LT_MEM_GRADS, span - have) : NULL;
        float *zm = CARVE_F(&cv, LT_MEM_OPTIMIZER, S);
        float *zv = CARVE_F(&cv, LT_MEM_OPTIMIZER, S);
        (void)pad;
        if (tr) {
            tr->zero_span = span;
            tr->zero_n = S;
            tr->zero_off = S * c->zero_rank;
            tr->zero_m = zm;
            tr->zero_v = zv;
        }
    }
    if (qlora) { /* quantize every frozen matrix (the model's fp32 weights are still there;
                    a lazy model's are quantized tensor by tensor by lt_trainer_create) */
        float *scr = CARVE_F(&cv, LT_MEM_WEIGHTS, nf4_scratch_n);
        if (tr) tr->nf4_scr = scr;
        if (tr && !lazy)
            for (int i = 0; i < L * LT_N_TARGETS; i++) {
                lt_lin *li = &lin[i];
                if (!li->q4) continue;
                lt_status qs = lt_nf4_quantize(li->W, li->q4, scr);
                if (qs) {
                    snprintf(name, sizeof name, "QLoRA: layer %d %s", i / LT_N_TARGETS,
                             k_tnames[i % LT_N_TARGETS]);
                    return lt_error_wrap(qs, name);
                }
            }
    }
    /* up to here the carving pass wrote WEIGHTS and this much of WORKSPACE; below only
     * pointers are computed */
    if (ws_head) *ws_head = cv.off[LT_MEM_WORKSPACE];

    /* ---- activations ---- */
    float *xs = CARVE_F(&cv, LT_MEM_ACTIVATIONS, (int64_t)(L + 1) * N * D);
    for (int a = 0; a < nacts; a++) {
        lt_layer_acts *ac = tr ? &acts[a] : NULL;
        lt_layer_acts tmp;
        if (!ac) ac = &tmp;
        int l = c->grad_checkpoint ? -1 : a;
        /* xn1, xn2 and h are not kept: see the workspace below */
        ac->rstd1 = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N);
        ac->q = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * QD);
        ac->k = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * KVD);
        ac->v = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * KVD);
        ac->att = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * QD);
        ac->lse = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * NH);
        ac->xmid = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * D);
        ac->rstd2 = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N);
        ac->gate = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * F);
        ac->up = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * F);
        for (int t = 0; t < LT_N_TARGETS; t++) {
            ac->xa[t] = NULL;
            int adapted =
                !full && ((c->lora.targets >> t) & 1) && (l < 0 ? 1 : in_range(l, lb, le, L));
            if (adapted) ac->xa[t] = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * r);
        }
    }
    float *xf = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * D);
    float *rstdf = CARVE_F(&cv, LT_MEM_ACTIVATIONS, N);
    float *lk = c->keep_logits ? CARVE_F(&cv, LT_MEM_ACTIVATIONS, N * V) : NULL;

    /* ---- workspace ---- */
    /* auto: 256 rows, fewer when their logits would pass 64 MiB (V > 65536). The head's
     * products are M = chunk rows against K or N = V: with SmolLM2's V 49152 on Zen 4, 256 rows
     * ran the bf16 step 6% faster than the 85 of a 16 MiB cap (bench_train_step
     * --ce-chunk-rows, 1 thread, two rounds), for 50 MB more */
    int chunk = c->ce_chunk_rows;
    if (chunk <= 0) chunk = (1 << 24) / V < 256 ? (1 << 24) / V : 256;
    if (chunk < 1) chunk = 1;
    if (chunk > N) chunk = (int)N;
    /* A head to dequantize costs V*D floats at once, plus chunk*V of logits. When the model is
     * wide (D > tokens, e.g. an 8B at seq 512) it is cheaper to take all rows' logits (N*V)
     * and dequantize the head a vocabulary block at a time (vb*D): the head runs block by
     * block (fwd and dX), each block dequantized once per pass. */
    int64_t vb = 0;
    /* bf16 compute multiplies by a bf16 head as it is, and by a frozen fp32 one through a bf16
     * copy made once (headb, run_step): nothing to dequantize */
    const int bf16 = c->compute_dtype == LT_DTYPE_BF16;
    const int headb = bf16 && !(head16 && c->base_dtype == LT_DTYPE_BF16) && !head_deq;
    if (bf16 && head16 && c->base_dtype == LT_DTYPE_BF16) head_deq = 0;
    if (head_deq) {
        int64_t b = ((int64_t)1 << 22) / D;
        if (b < 1) b = 1;
        if (b > V) b = V;
        int64_t whole = (int64_t)V * D + (int64_t)chunk * V, blocked = N * V + b * D;
        if (!c->keep_logits && c->ce_chunk_rows <= 0 && blocked < whole) {
            vb = b;
            chunk = (int)N;
            if (b * D > wmax) wmax = b * D;
        } else if ((int64_t)V * D > wmax) {
            wmax = (int64_t)V * D;
        }
    }
    int64_t scr = 0, maxC = 0;
    if (!full)
        for (int t = 0; t < LT_N_TARGETS; t++)
            if ((c->lora.targets >> t) & 1) {
                int64_t s = LT_LORA_SCRATCH(N, Cs[t], OCs[t], r);
                if (s > scr) scr = s;
                if (Cs[t] > maxC) maxC = Cs[t];
            }
    if (tr) {
        tr->xs = xs;
        tr->xf = xf;
        tr->rstdf = rstdf;
        tr->logits_keep = lk;
        tr->chunk = chunk;
        tr->head_vb = (int)vb;
    }
#define WS_F(field, n)                                                                             \
    do {                                                                                           \
        float *p_ = CARVE_F(&cv, LT_MEM_WORKSPACE, (n));                                           \
        if (tr) tr->field = p_;                                                                    \
    } while (0)
    WS_F(tmp, N * D);
    WS_F(dres, N * D);
    WS_F(dxn, N * D);
    {
        /* one region for dgate (live from h's recompute to the gate and up products' backward)
         * and the attention's gradients dq, datt, dk, dv (live from the o product's backward
         * on): layer_bwd uses them one after the other. Each part starts 64-byte aligned. */
        const int64_t nq = (N * QD + 15) & ~(int64_t)15, nkv = (N * KVD + 15) & ~(int64_t)15;
        const int64_t natt = 2 * nq + 2 * nkv, nmlp = N * F;
        float *u = CARVE_F(&cv, LT_MEM_WORKSPACE, natt > nmlp ? natt : nmlp);
        if (tr) {
            tr->dgate = u;
            tr->dq = u;
            tr->datt = u + nq;
            tr->dk = u + 2 * nq;
            tr->dv = u + 2 * nq + nkv;
        }
    }
    WS_F(dh, N * F);
    /* The cheap activations are recomputed, not kept (layer_bwd): the norms' outputs xn1, xn2
     * (from the kept layer input / xmid and rstd, an [N][D] pass) in tmp and SwiGLU's h =
     * silu(gate) up (an [N][F] pass) in dgate, both free at those points of the forward and
     * the backward. 2 D + F floats a position a layer fewer; the same fp32 numbers (the same
     * ops on the same inputs). SwiGLU's backward writes dup over dh (no dup buffer). */
    if (tr)
        for (int a = 0; a < nacts; a++) {
            acts[a].xn1 = acts[a].xn2 = tr->tmp;
            acts[a].h = tr->dgate;
        }
    /* bf16 plain LoRA (no dropout, no DoRA) runs every adapter through the group products
     * (group_of in trainer.c: its conditions and these go together): the per-target scratch
     * is never used */
    const int grouped = c->compute_dtype == LT_DTYPE_BF16 && !full && r > 0 && !dora &&
                        c->lora.dropout <= 0;
    if (scr && !grouped) WS_F(scratch, scr);
    if (!full && c->lora.dropout > 0) WS_F(mask, N * maxC);
    if (wmax) WS_F(wdeq, wmax);
    if (tr) tr->wdeq_n = wmax;
    WS_F(logits, (int64_t)chunk * V);
#define WS_H(field, n)                                                                             \
    do {                                                                                           \
        uint16_t *p_ = (uint16_t *)carve(&cv, LT_MEM_WORKSPACE, (int64_t)(n) * 2);                \
        if (tr) tr->field = p_;                                                                    \
    } while (0)
    if (c->compute_dtype == LT_DTYPE_BF16) {
        int64_t wide = D > QD ? D : QD, ocxc = 0;
        if (F > wide) wide = F;
        for (int t = 0; t < LT_N_TARGETS; t++)
            if ((int64_t)OCs[t] * Cs[t] > ocxc) ocxc = (int64_t)OCs[t] * Cs[t];
        WS_H(xb16, N * wide);
        if (full) WS_H(xb16b, N * wide); /* x as bf16 for the trained weights' dW */
        WS_H(wb16, ocxc);
        WS_H(hb16, (int64_t)chunk * (V > D ? V : D));
        if (!full && r > 0) { /* lin_fwd_group's buffers */
            int64_t G = 3 * (int64_t)D, moc = D > F ? D : F;
            if (QD > G) G = QD;
            if (F > G) G = F;
            if (QD > moc) moc = QD;
            G *= r;
            WS_F(grp_da, G);
            WS_F(grp_dxa, N * 3 * r);
            WS_H(grp_ab, G);
            WS_H(grp_xab, N * 3 * r);
            WS_H(grp_bb, moc * r);
        }
    }
    if (headb) {
        uint16_t *p_ = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, (int64_t)V * D * 2);
        if (tr) tr->headb = p_; /* filled by lt_trainer_create, a trained head's every step */
    }
    if (emb_tail) { /* the last of WEIGHTS (embd_host above) */
        uint16_t *e16 = (uint16_t *)carve(&cv, LT_MEM_WEIGHTS, emb_tail);
        if (tr) {
            tr->embd16 = e16; /* a lazy model's: filled from the file by lt_trainer_create */
            if (!lazy) lt_to16_(e16, w->tok_embd, (int64_t)V * D, c->base_dtype);
        }
    }
#undef WS_H
    WS_F(cos_t, (int64_t)c->seq_len * (HD / 2));
    WS_F(sin_t, (int64_t)c->seq_len * (HD / 2));
#define WS_I(field, n)                                                                             \
    do {                                                                                           \
        int32_t *p_ = (int32_t *)carve(&cv, LT_MEM_WORKSPACE, (int64_t)(n) * 4);                  \
        if (tr) tr->field = p_;                                                                    \
    } while (0)
    WS_I(pos_buf, N);
    WS_I(head_idx, N);
    WS_I(head_tgt, N);
    /* the step's batch without the positions after each row's last counted target */
    WS_I(c_tok, N);
    WS_I(c_tgt, N);
    WS_I(c_pos, N);
    WS_I(c_seq, N);
    WS_I(c_off, (int64_t)c->batch_size + 1);
#undef WS_I
#undef WS_F

    for (int k = 0; k < LT_MEM_COUNT; k++)
        bytes[k] = cv.off[k];
    if (si) {
        si->mapped_bytes = mapped;
        si->convert_max_bytes = conv_max;
        si->mapped_dev_bytes = mapped_dev;
        si->host_embd_bytes = emb_tail;
    }
#undef CONVERTS
    if (n_tensors) *n_tensors = n_tt;
    if (n_trainable) {
        /* recount from the tensor shapes (counting pass has no tt array) */
        int64_t nt = 0;
        if (full) {
            int64_t per_layer = 2 * (int64_t)D + (int64_t)QD * D + 2 * (int64_t)KVD * D +
                                (int64_t)D * QD + 3 * (int64_t)F * D +
                                (mc->qkv_bias ? QD + 2 * KVD : 0);
            nt = (embed_tr ? (int64_t)V * D : 0) + (le - lb) * per_layer + D +
                 (!mc->tied_embeddings ? (int64_t)V * D : 0);
        } else {
            for (int t = 0; t < LT_N_TARGETS; t++)
                if ((c->lora.targets >> t) & 1)
                    nt += (int64_t)(le - lb) *
                          ((int64_t)r * Cs[t] + (int64_t)OCs[t] * r + (dora ? OCs[t] : 0));
        }
        *n_trainable = nt;
    }
    return LT_OK;
}
