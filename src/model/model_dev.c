/* model_dev.c - a model's weights and an adapter's delta resident in a device backend's memory,
 * for the forward on a device (forward.c with a cache from lt_kv_cache_create_dev).
 *
 * Every weight the forward reads becomes one lt_weight_view whose data is the backend's memory:
 *   - a lazy model's tensor stored as a dtype the backend converts itself (supports_dtype: the
 *     CUDA backend's F16 / BF16 / Q4_0 / Q4_1 / Q8_0) is copied as stored, so the frozen base
 *     keeps its size on the device and is converted a block of rows at a time by matmul_w /
 *     weight_f32 there; q / k rows the file interleaves are put in the model's (HF) row order
 *     on the way (a row is whole blocks: a permutation of rows keeps the format);
 *   - anything else (a model loaded whole, F32 files, dtypes the backend does not read: K-quants
 *     on CUDA, and every 1-D weight: norms, biases) as fp32, read through the weight provider
 *     (lt_model_weight_f32) a block of rows at a time through a host buffer.
 * rowwise[] records, per weight, that the CPU path reads it as converted rows (the provider's
 * rows_fn): its fp32 copy is then multiplied with the fixed-order row kernel (job.rowwise), so
 * the CPU backend marked as a device gives the CPU path's bits (tests/model/test_forward_dev.c).
 * One backend allocation per weight; the host touches them only through set. */
#include <string.h>

#include "model_internal.h"

struct lt_model_dev {
    const lt_backend *be;
    const lt_model *m;
    int n_layers;
    lt_weight_view *views;  /* [LT_W_COUNT * n_layers]: rows 0 when the model has no such weight */
    unsigned char *rowwise; /* [LT_W_COUNT * n_layers] */
    void **mem;             /* [LT_W_COUNT * n_layers] the backend allocations (NULL: none) */
    int64_t bytes, f32_bytes;
    int n_stored, n_f32; /* weights kept as stored / copied as fp32 */
};

static int per_layer(lt_weight_id id) {
    return id != LT_W_TOK_EMBD && id != LT_W_OUT_NORM && id != LT_W_LM_HEAD;
}

void lt_model_dev_free(lt_model_dev *d) {
    if (!d) return;
    for (int64_t i = 0; d->mem && i < (int64_t)LT_W_COUNT * d->n_layers; i++)
        if (d->mem[i]) d->be->op->free(d->be, d->mem[i]);
    free(d->views);
    free(d->rowwise);
    free(d->mem);
    free(d);
}

/* Weight id of layer l as stored (v: the file's view, a dtype the backend reads) into dst,
 * rows in the model's order: interleaved q / k rows gathered a block of rows at a time into buf
 * (nbuf bytes, at least a row), each block one set. */
static void put_stored(const lt_model_dev *d, const lt_tensor_view *v, lt_weight_id id,
                       int64_t rows, int64_t cols, void *dst, void *buf, int64_t nbuf) {
    const lt_backend *be = d->be;
    const int64_t rb = lt_dtype_nbytes(v->dtype, cols);
    const char *src = v->data;
    if (!lt_model_weight_interleaved(d->m, id)) {
        be->op->set(be, dst, src, (size_t)(rb * rows));
        return;
    }
    const int hd = d->m->config.head_dim;
    const int64_t per = nbuf / rb;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        const int64_t n = rows - r0 < per ? rows - r0 : per;
        for (int64_t r = r0; r < r0 + n; r++)
            memcpy((char *)buf + (r - r0) * rb, src + lt_model_file_row_(r, hd) * rb, (size_t)rb);
        be->op->set(be, (char *)dst + r0 * rb, buf, (size_t)(n * rb));
    }
}

/* Weight id of layer l as fp32 (the provider's rows) into dst, blocks of rows through buf. */
static lt_status put_f32(const lt_model_dev *d, lt_weight_id id, int l, int64_t rows, int64_t cols,
                         float *dst, float *buf, int64_t nbuf) {
    int64_t per = nbuf / cols;
    if (per < 1) per = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        const int64_t n = rows - r0 < per ? rows - r0 : per;
        const float *p;
        lt_status st = lt_model_weight_f32(d->m, id, l, r0, n, buf, &p);
        if (st) return st;
        d->be->op->set(d->be, dst + r0 * cols, p, sizeof(float) * (size_t)(n * cols));
    }
    return LT_OK;
}

lt_status lt_model_dev_create(const lt_model *m, const lt_backend *be, lt_model_dev **out) {
    *out = NULL;
    lt_status st = lt_model_check_readable(m, "device weights");
    if (st) return st;
    const lt_model_config *c = &m->config;
    const int L = c->n_layers;
    lt_model_dev *d = lt_calloc(1, sizeof *d);
    const size_t n = (size_t)LT_W_COUNT * (size_t)L;
    const int64_t nbuf = 1 << 20; /* 4 MiB of fp32 rows at a time (at least one row) */
    int64_t maxcols = 1;
    for (int id = 0; id < LT_W_COUNT; id++) {
        int64_t rows, cols;
        if (lt_model_weight_shape(c, (lt_weight_id)id, &rows, &cols) && cols > maxcols)
            maxcols = cols;
    }
    const int64_t nb = nbuf > maxcols ? nbuf : maxcols; /* floats: >= a row as fp32 or stored */
    float *buf = lt_malloc(sizeof(float) * (size_t)nb);
    if (d) {
        d->views = lt_calloc(n, sizeof *d->views);
        d->rowwise = lt_calloc(n, 1);
        d->mem = lt_calloc(n, sizeof *d->mem);
    }
    if (!d || !d->views || !d->rowwise || !d->mem || !buf) {
        free(buf);
        lt_model_dev_free(d);
        return lt_error(LT_ERR_NOMEM, "device weights: out of host memory");
    }
    d->be = be;
    d->m = m;
    d->n_layers = L;
    for (int id = 0; id < LT_W_COUNT && !st; id++) {
        int64_t rows, cols;
        if (!lt_model_weight_shape(c, (lt_weight_id)id, &rows, &cols)) continue;
        for (int l = 0; l < (per_layer((lt_weight_id)id) ? L : 1) && !st; l++) {
            const size_t at = (size_t)id * (size_t)L + (size_t)l;
            const lt_tensor_view *v =
                lt_model_is_lazy(m) ? lt_model_weight_view(m, (lt_weight_id)id, l) : NULL;
            const int stored = rows > 1 && v && v->data && v->dtype != LT_DTYPE_F32 &&
                               lt_dtype_nbytes(v->dtype, cols) > 0 && be->op->supports_dtype &&
                               be->op->supports_dtype(be, v->dtype);
            const lt_dtype dt = stored ? v->dtype : LT_DTYPE_F32;
            const int64_t bytes = lt_dtype_nbytes(dt, rows * cols);
            void *mem = be->op->alloc(be, (size_t)bytes);
            if (!mem) {
                st = lt_error(LT_ERR_NOMEM,
                              "device weights: %s cannot allocate %lld bytes for weight %s of "
                              "layer %d (%lld bytes of weights there so far)",
                              be->name, (long long)bytes, lt_weight_id_name((lt_weight_id)id), l,
                              (long long)d->bytes);
                break;
            }
            d->mem[at] = mem;
            d->bytes += bytes;
            if (stored) {
                put_stored(d, v, (lt_weight_id)id, rows, cols, mem, buf, 4 * nb);
                d->n_stored++;
            } else {
                st = put_f32(d, (lt_weight_id)id, l, rows, cols, mem, buf, nb);
                d->rowwise[at] = !lt_model_weight_is_f32(m, (lt_weight_id)id, l);
                d->f32_bytes += bytes;
                d->n_f32++;
            }
            d->views[at] = (lt_weight_view){.rows = rows, .cols = cols, .dtype = dt, .data = mem};
        }
    }
    free(buf);
    if (st) {
        lt_model_dev_free(d);
        return lt_error_wrap(st, "device weights");
    }
    be->op->sync(be);
    *out = d;
    return LT_OK;
}

int64_t lt_model_dev_bytes(const lt_model_dev *d, int64_t *f32_bytes) {
    if (f32_bytes) *f32_bytes = d ? d->f32_bytes : 0;
    return d ? d->bytes : 0;
}

const lt_backend *lt_model_dev_backend(const lt_model_dev *d) {
    return d ? d->be : NULL;
}

const lt_model *lt_model_dev_model_(const lt_model_dev *d) {
    return d->m;
}

const lt_weight_view *lt_model_dev_view_(const lt_model_dev *d, lt_weight_id id, int layer,
                                         int *rowwise) {
    const size_t at = (size_t)id * (size_t)d->n_layers + (size_t)(per_layer(id) ? layer : 0);
    if (rowwise) *rowwise = d->rowwise[at];
    return &d->views[at];
}

/* ---- an adapter's delta on a backend ---- */
typedef struct {
    lt_model_delta pub; /* first: the handle is a pointer to it */
    void *mem;          /* the backend allocation A, B, d point into */
} dev_delta;

lt_status lt_model_delta_to_backend(const lt_model *m, const lt_model_delta *src,
                                    const lt_backend *be, lt_model_delta **out) {
    *out = NULL;
    const lt_model_config *c = &m->config;
    if (!src || src->n_layers != c->n_layers || !src->lin || src->r < 1)
        return lt_error(LT_ERR_ARG, "adapter on %s: a delta of %d layers for a model of %d",
                        be->name, src ? src->n_layers : 0, c->n_layers);
    if (src->be)
        return lt_error(LT_ERR_ARG, "adapter on %s: the delta already lives on %s", be->name,
                        src->be->name);
    const int n = c->n_layers * LT_MODEL_N_LIN;
    int64_t total = 0; /* floats */
    for (int i = 0; i < n; i++) {
        int64_t rows, cols;
        const lt_model_delta_lin *L = &src->lin[i];
        if (!L->A) continue;
        lt_model_weight_shape(c, lt_model_lin_weight(i % LT_MODEL_N_LIN), &rows, &cols);
        total += (int64_t)src->r * cols + rows * src->r + (L->d ? rows : 0);
    }
    dev_delta *d = lt_calloc(1, sizeof *d + sizeof(lt_model_delta_lin) * (size_t)n);
    if (!d) return lt_error(LT_ERR_NOMEM, "adapter on %s: out of host memory", be->name);
    lt_model_delta_lin *lin = (lt_model_delta_lin *)(d + 1);
    d->pub = (lt_model_delta){src->n_layers, src->r, src->scale, lin, be};
    if (total && !(d->mem = be->op->alloc(be, sizeof(float) * (size_t)total))) {
        free(d);
        return lt_error(LT_ERR_NOMEM, "adapter on %s: cannot allocate %lld bytes", be->name,
                        (long long)(4 * total));
    }
    float *p = d->mem;
    for (int i = 0; i < n; i++) {
        int64_t rows, cols;
        const lt_model_delta_lin *L = &src->lin[i];
        if (!L->A) continue;
        lt_model_weight_shape(c, lt_model_lin_weight(i % LT_MODEL_N_LIN), &rows, &cols);
        const int64_t na = (int64_t)src->r * cols, nb = rows * src->r;
        be->op->set(be, p, L->A, sizeof(float) * (size_t)na);
        lin[i].A = p;
        p += na;
        be->op->set(be, p, L->B, sizeof(float) * (size_t)nb);
        lin[i].B = p;
        p += nb;
        if (L->d) {
            be->op->set(be, p, L->d, sizeof(float) * (size_t)rows);
            lin[i].d = p;
            p += rows;
        }
    }
    be->op->sync(be);
    *out = &d->pub;
    return LT_OK;
}

void lt_model_delta_backend_free(lt_model_delta *delta) {
    if (!delta) return;
    dev_delta *d = (dev_delta *)delta;
    if (d->mem) delta->be->op->free(delta->be, d->mem);
    free(d);
}
