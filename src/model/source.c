/* source.c - lazy models: the weight file(s) stay mapped and weights are read one tensor or
 * row range at a time (lt_model_weight_rows), so a trainer never needs the whole model in
 * float32; plus the same row reader over a loaded model's fp32 weights.
 *
 * Invariant: views[id * L + l] were checked by the loader's pass 0 (shape against the config,
 * byte count against the dtype), so reads here only compute offsets inside them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loratune/quant.h"
#include "model_internal.h"

static const char *k_names[LT_W_COUNT] = {
    "tok_embd", "attn_norm", "wq",     "wk",   "wv",   "bq",       "bk",     "bv",
    "wo",       "ffn_norm",  "w_gate", "w_up", "w_down", "out_norm", "lm_head"};

const char *lt_weight_id_name(lt_weight_id id) {
    return (unsigned)id < LT_W_COUNT ? k_names[id] : "?";
}

lt_status lt_model_source_attach(lt_model *m, void *file, void (*close)(void *file),
                                 int interleaved_qk) {
    struct lt_model_source *s = lt_calloc(1, sizeof *s);
    int64_t n = (int64_t)LT_W_COUNT * m->config.n_layers;
    if (s) s->views = lt_calloc((size_t)n, sizeof *s->views);
    if (!s || !s->views) {
        free(s);
        close(file);
        return lt_error(LT_ERR_NOMEM, "model: out of memory");
    }
    s->file = file;
    s->close = close;
    s->interleaved_qk = interleaved_qk;
    m->src = s;
    return LT_OK;
}

void lt_model_source_free(struct lt_model_source *s) {
    if (!s) return;
    if (s->close) s->close(s->file);
    free(s->views);
    free(s);
}

int lt_model_is_lazy(const lt_model *m) {
    return m && m->src;
}

static int per_layer(lt_weight_id id) {
    return id != LT_W_TOK_EMBD && id != LT_W_OUT_NORM && id != LT_W_LM_HEAD;
}

const lt_tensor_view *lt_model_weight_view(const lt_model *m, lt_weight_id id, int layer) {
    if (!lt_model_is_lazy(m) || (unsigned)id >= LT_W_COUNT) return NULL;
    if (!per_layer(id)) layer = 0;
    if (layer < 0 || layer >= m->config.n_layers) return NULL;
    return m->src->views[(int64_t)id * m->config.n_layers + layer];
}

int lt_model_weight_interleaved(const lt_model *m, lt_weight_id id) {
    return lt_model_is_lazy(m) && m->src->interleaved_qk &&
           (id == LT_W_WQ || id == LT_W_WK || id == LT_W_BQ || id == LT_W_BK);
}

int lt_model_weight_shape(const lt_model_config *c, lt_weight_id id, int64_t *rows,
                          int64_t *cols) {
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t r = 1, k = 0;
    switch (id) {
    case LT_W_TOK_EMBD: r = V, k = D; break;
    case LT_W_LM_HEAD:
        if (c->tied_embeddings) return 0;
        r = V, k = D;
        break;
    case LT_W_ATTN_NORM: case LT_W_FFN_NORM: case LT_W_OUT_NORM: k = D; break;
    case LT_W_WQ: r = QD, k = D; break;
    case LT_W_WK: case LT_W_WV: r = KD, k = D; break;
    case LT_W_WO: r = D, k = QD; break;
    case LT_W_GATE: case LT_W_UP: r = F, k = D; break;
    case LT_W_DOWN: r = D, k = F; break;
    case LT_W_BQ:
        if (!c->qkv_bias) return 0;
        k = QD;
        break;
    case LT_W_BK: case LT_W_BV:
        if (!c->qkv_bias) return 0;
        k = KD;
        break;
    default: return 0;
    }
    *rows = r;
    *cols = k;
    return 1;
}

const float *lt_model_loaded_weight_(const lt_model *m, lt_weight_id id, int64_t layer,
                                     int64_t n) {
    const lt_model_weights *w = &m->w;
    const float *p[LT_W_COUNT] = {w->tok_embd, w->attn_norm, w->wq,     w->wk,   w->wv,
                                  w->bq,       w->bk,        w->bv,     w->wo,   w->ffn_norm,
                                  w->w_gate,   w->w_up,      w->w_down, w->out_norm, w->lm_head};
    return p[id] ? p[id] + (per_layer(id) ? layer * n : 0) : NULL;
}

lt_status lt_model_weight_rows(const lt_model *m, lt_weight_id id, int layer, int64_t row0,
                               int64_t nrows, float *dst) {
    int64_t rows, cols;
    if (!m || (unsigned)id >= LT_W_COUNT || !lt_model_weight_shape(&m->config, id, &rows, &cols))
        return lt_error(LT_ERR_ARG, "model weight %s: the model has no such weight",
                        lt_weight_id_name(id));
    if (per_layer(id) && (layer < 0 || layer >= m->config.n_layers))
        return lt_error(LT_ERR_ARG, "model weight %s: layer %d outside [0, %d)",
                        lt_weight_id_name(id), layer, m->config.n_layers);
    if (row0 < 0 || nrows < 0 || row0 + nrows > rows)
        return lt_error(LT_ERR_ARG, "model weight %s: rows [%lld, %lld) outside [0, %lld)",
                        lt_weight_id_name(id), (long long)row0, (long long)(row0 + nrows),
                        (long long)rows);
    if (!lt_model_is_lazy(m)) {
        lt_status st = lt_model_check_weights(m, "model weight rows");
        if (st) return st;
        const float *p = lt_model_loaded_weight_(m, id, layer, rows * cols);
        memcpy(dst, p + row0 * cols, sizeof(float) * (size_t)(nrows * cols));
        return LT_OK;
    }
    const lt_tensor_view *v = lt_model_weight_view(m, id, layer);
    if (!v)
        return lt_error(LT_ERR_ARG, "model weight %s: not in the file", lt_weight_id_name(id));
    const uint8_t *base = (const uint8_t *)v->data;
    const int il = lt_model_weight_interleaved(m, id);
    const int hd = m->config.head_dim;
    if (rows == 1) { /* a vector: whole, then un-interleave its elements */
        if (il && lt_dtype_block_elems(v->dtype) == 1) { /* element by element, no scratch */
            const int64_t eb = lt_dtype_block_bytes(v->dtype);
            for (int64_t r = 0; r < cols; r++) {
                lt_status st =
                    lt_to_f32(v->dtype, base + lt_model_file_row_(r, hd) * eb, dst + r, 1);
                if (st) return st;
            }
            return LT_OK;
        }
        lt_status st = lt_to_f32(v->dtype, base, dst, cols);
        if (st || !il) return st;
        float *tmp = lt_malloc(sizeof(float) * (size_t)cols);
        if (!tmp) return lt_error(LT_ERR_NOMEM, "model weight %s: out of memory",
                                  lt_weight_id_name(id));
        memcpy(tmp, dst, sizeof(float) * (size_t)cols);
        for (int64_t r = 0; r < cols; r++)
            dst[r] = tmp[lt_model_file_row_(r, hd)];
        free(tmp);
        return LT_OK;
    }
    int64_t rb = lt_dtype_nbytes(v->dtype, cols);
    if (rb <= 0)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "model weight %s: rows of %lld %s values do not hold whole blocks",
                        lt_weight_id_name(id), (long long)cols, lt_dtype_name(v->dtype));
    if (!il) return lt_to_f32(v->dtype, base + row0 * rb, dst, nrows * cols);
    for (int64_t i = 0; i < nrows; i++) {
        lt_status st = lt_to_f32(v->dtype, base + lt_model_file_row_(row0 + i, hd) * rb,
                                 dst + i * cols, cols);
        if (st) return st;
    }
    return LT_OK;
}

void lt_model_weight_evict(const lt_model *m, lt_weight_id id, int layer) {
    const lt_tensor_view *v = lt_model_weight_view(m, id, layer);
    if (!v || !v->nbytes) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)v->data & ~(pg - 1);
    uintptr_t e = ((uintptr_t)v->data + v->nbytes + pg - 1) & ~(pg - 1);
    madvise((void *)a, e - a, MADV_DONTNEED);
}
