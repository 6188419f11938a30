/* weights.c - the weight provider: any row range of any weight as float32 for a matmul, from a
 * model loaded whole (a pointer into its fp32 block) or lazily (a pointer into the mapped file
 * when the tensor is F32 in HF row order, else the rows converted into the caller's scratch by
 * lt_model_weight_rows: F16 / BF16, ggml block quants, interleaved q/k rows).
 *
 * Invariant: the conversion of a row range is a pure function of the file (lt_to_f32 row by
 * row), so splitting a range over threads or into blocks gives the same floats; callers that
 * bound their scratch read a weight a block of rows at a time. */
#include <string.h>
#include <omp.h>
#include <stdint.h>

#include "model_internal.h"

static int per_layer(lt_weight_id id) {
    return id != LT_W_TOK_EMBD && id != LT_W_OUT_NORM && id != LT_W_LM_HEAD;
}

lt_weight_id lt_model_lin_weight(int t) {
    static const lt_weight_id ids[LT_MODEL_N_LIN] = {LT_W_WQ,   LT_W_WK, LT_W_WV,  LT_W_WO,
                                                     LT_W_GATE, LT_W_UP, LT_W_DOWN};
    return t >= 0 && t < LT_MODEL_N_LIN ? ids[t] : LT_W_COUNT;
}

/* The weight's fp32 data in HF layout without converting, or NULL when it must be converted
 * (or does not exist: lt_model_weight_rows then says why). */
static const float *direct(const lt_model *m, lt_weight_id id, int layer) {
    int64_t rows, cols;
    if (!m || (unsigned)id >= LT_W_COUNT || !lt_model_weight_shape(&m->config, id, &rows, &cols))
        return NULL;
    if (per_layer(id) && (layer < 0 || layer >= m->config.n_layers)) return NULL;
    if (!lt_model_is_lazy(m))
        return m->params ? lt_model_loaded_weight_(m, id, layer, rows * cols) : NULL;
    const lt_tensor_view *v = lt_model_weight_view(m, id, layer);
    if (!v || v->dtype != LT_DTYPE_F32 || lt_model_weight_interleaved(m, id) ||
        (uintptr_t)v->data % _Alignof(float) != 0)
        return NULL;
    return (const float *)v->data;
}

int lt_model_weight_is_f32(const lt_model *m, lt_weight_id id, int layer) {
    return direct(m, id, layer) != NULL;
}

lt_status lt_model_weight_f32(const lt_model *m, lt_weight_id id, int layer, int64_t row0,
                              int64_t nrows, float *scratch, const float **out) {
    int64_t rows = 0, cols = 0;
    int ok = m && (unsigned)id < LT_W_COUNT &&
             lt_model_weight_shape(&m->config, id, &rows, &cols) && row0 >= 0 && nrows >= 0 &&
             row0 + nrows <= rows;
    const float *p = ok ? direct(m, id, layer) : NULL;
    *out = NULL;
    if (p) {
        *out = p + row0 * cols;
        return LT_OK;
    }
    lt_status st = LT_OK;
    /* small, inside a parallel region, or bad arguments (lt_model_weight_rows says which) */
    if (!ok || nrows * cols <= 65536 || omp_in_parallel()) {
        st = lt_model_weight_rows(m, id, layer, row0, nrows, scratch);
    } else {
        int64_t per = 65536 / (cols > 0 ? cols : 1);
        if (per < 1) per = 1;
        int failed = 0;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nrows; r += per)
            if (lt_model_weight_rows(m, id, layer, row0 + r, nrows - r < per ? nrows - r : per,
                                     scratch + r * cols)) {
#pragma omp atomic write
                failed = 1;
            }
        if (failed) /* again on this thread, for the message (a worker's is thread-local) */
            st = lt_model_weight_rows(m, id, layer, row0, nrows, scratch);
    }
    if (st == LT_OK) *out = scratch;
    return st;
}

static lt_status view_rows(const void *ctx, int64_t row0, int64_t n, float *scratch,
                           const float **out) {
    const lt_weight_src *s = ctx;
    return lt_model_weight_f32(s->m, s->id, s->layer, row0, n, scratch, out);
}

void lt_model_weight_bview(const lt_model *m, lt_weight_id id, int layer, int64_t rows,
                          int64_t cols, lt_weight_src *src, lt_weight_view *out) {
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    const float *W = NULL;
    if (lt_model_weight_is_f32(m, id, layer) &&
        lt_model_weight_f32(m, id, layer, 0, rows, NULL, &W) == LT_OK && W) {
        out->dtype = LT_DTYPE_F32;
        out->data = W;
        return;
    }
    *src = (lt_weight_src){m, id, layer};
    out->rows_fn = view_rows;
    out->ctx = src;
}

int lt_model_weight_stored_(const lt_model *m, lt_weight_id id, int layer, int64_t rows,
                            int64_t cols, lt_weight_view *out) {
    memset(out, 0, sizeof *out);
    if (!lt_model_is_lazy(m)) return 0;
    const lt_tensor_view *v = lt_model_weight_view(m, id, layer);
    if (!v || !v->data || v->dtype == LT_DTYPE_F32 || lt_dtype_block_elems(v->dtype) <= 1 ||
        lt_dtype_nbytes(v->dtype, cols) <= 0)
        return 0;
    out->rows = rows;
    out->cols = cols;
    out->dtype = v->dtype;
    out->data = v->data;
    return lt_model_weight_interleaved(m, id) ? 2 : 1;
}

lt_status lt_model_check_readable(const lt_model *m, const char *what) {
    if (!lt_model_is_lazy(m)) return lt_model_check_weights(m, what);
    const lt_model_config *c = &m->config;
    for (int id = 0; id < LT_W_COUNT; id++) {
        int64_t rows, cols;
        if (!lt_model_weight_shape(c, (lt_weight_id)id, &rows, &cols)) continue;
        for (int l = 0; l < (per_layer((lt_weight_id)id) ? c->n_layers : 1); l++) {
            const lt_tensor_view *v = lt_model_weight_view(m, (lt_weight_id)id, l);
            if (!v)
                return lt_error(LT_ERR_ARG, "%s: weight %s of layer %d is not in the file", what,
                                lt_weight_id_name((lt_weight_id)id), l);
            if (lt_dtype_nbytes(v->dtype, cols) <= 0)
                return lt_error(LT_ERR_UNSUPPORTED,
                                "%s: weight %s: rows of %lld %s values do not hold whole blocks",
                                what, lt_weight_id_name((lt_weight_id)id), (long long)cols,
                                lt_dtype_name(v->dtype));
        }
    }
    return LT_OK;
}
