/* model_internal.h - limits and helpers shared by the model loaders (internal).
 *
 * The limits bound every size read from a file before any arithmetic on it, so products of
 * two or three of them fit in int64 and a lying header is caught before allocating. */
#ifndef LT_MODEL_INTERNAL_H
#define LT_MODEL_INTERNAL_H

#include <stdlib.h>

#include "loratune/model.h"

#define LT_MAX_DIM 65536
#define LT_MAX_LAYERS 1024
#define LT_MAX_HEADS 1024
#define LT_MAX_FFN (1 << 20)
#define LT_MAX_VOCAB (1 << 22)
#define LT_MAX_SEQ (1 << 22)

/* Points the weight fields of m into m->params (already allocated) for m->config. */
void lt_model_wire(lt_model *m);
/* Allocates model + params for a validated config (zeroed); with config_only no params. */
lt_status lt_model_alloc(const lt_model_config *c, int config_only, lt_model **out);
#define LT_CONFIG_ONLY(opts) ((opts) && (opts)->config_only)

/* Checks view t (tensor `name` of file `src`; NULL = missing) against the expected shape
 * (ndim dims, outermost-first) and converts it to float32 into dst (dst NULL: check only). */
lt_status lt_model_take(lt_model *m, const char *src, const char *name, const lt_tensor_view *t,
                        int ndim, int64_t d0, int64_t d1, float *dst);

/* The names one file form gives lt_model's tensors: whole-model names, and layer_fmt (a
 * printf pattern taking the layer as long long, then the per-layer suffix) with the suffixes.
 * find(file, name) returns the file's view of a tensor, NULL when absent. untied_why, when
 * not NULL, is said in the error for an untied model whose file lacks lm_head. */
typedef struct {
    const char *tok_embd, *out_norm, *lm_head;
    const char *layer_fmt;
    const char *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
    const lt_tensor_view *(*find)(const void *file, const char *name);
    const char *untied_why;
    /* every tensor of the file, for lt_model_check_unused */
    size_t (*count)(const void *file);
    const char *(*name_at)(const void *file, size_t i);
    const char *extra_used; /* a further name the loader takes itself (GGUF rope_freqs), or NULL */
    const char *layers_key; /* the config key that says the layer count (errors) */
} lt_model_tensor_names;

/* After lt_model_take_named: a tensor of a layer >= n_layers is an error (the config and the
 * file disagree on the layer count: LT_ERR_FORMAT naming both); any other tensor the model
 * does not use is ignored with a line in m->warnings naming how many and the first few (a
 * tied model's lm_head, for one; transformers' rotary_emb.inv_freq buffers are ignored
 * silently, transformers recomputes them too). */
lt_status lt_model_check_unused(lt_model *m, const char *src, const lt_model_tensor_names *n,
                                const void *file);
/* Appends one line (printf-style) to m->warnings, as much as fits. */
void lt_model_warn_(lt_model *m, const char *fmt, ...);

/* A lazy model's weight file(s), kept open (mapped) while the model lives. views[id * L + l]
 * (whole-model weights at l = 0) are borrowed from sf / g. close(file) frees the container. */
struct lt_model_source {
    void *file;
    void (*close)(void *file);
    const lt_tensor_view **views; /* [LT_W_COUNT * n_layers] */
    int interleaved_qk;           /* llama-arch GGUF: wq/wk/bq/bk rows interleaved */
};
/* The weight [rows][cols] as the file stores it, when lazy and stored in blocks (GGUF Q4_0,
 * Q4_1, Q8_0, K-quants...): *out points at the mapped bytes (dtype, data). Returns 1 when its
 * rows are the model's, 2 when they are in the file's interleaved q/k order (row r of the model
 * is row h hd + 2 (i mod hd/2) + i div (hd/2) of the file, i = r mod hd, h = r div hd), 0 when
 * there is no such view (loaded whole, F32 / F16 / BF16, ...): then use lt_model_weight_bview. */
int lt_model_weight_stored_(const lt_model *m, lt_weight_id id, int layer, int64_t rows,
                            int64_t cols, lt_weight_view *out);
/* model_dev.c: weight id (layer) of a device copy, in the backend's memory; *rowwise 1 when
 * the CPU path reads that weight as converted rows (its fp32 copy is then multiplied rowwise) */
const lt_weight_view *lt_model_dev_view_(const lt_model_dev *d, lt_weight_id id, int layer,
                                         int *rowwise);
const lt_model *lt_model_dev_model_(const lt_model_dev *d);
/* Makes m lazy over file (ownership passes to m, also on error). */
lt_status lt_model_source_attach(lt_model *m, void *file, void (*close)(void *file),
                                 int interleaved_qk);
void lt_model_source_free(struct lt_model_source *s); /* safe on NULL */
/* The fp32 weight id of layer of a loaded model (n floats per layer), NULL when it has none. */
const float *lt_model_loaded_weight_(const lt_model *m, lt_weight_id id, int64_t layer,
                                     int64_t n);

/* lt_model_take for every tensor m->config asks for, found by n->find in file (borrowed), in
 * lt_model_weights' order (bq/bk/bv only with qkv_bias, lm_head only when untied); with
 * m->params NULL it only checks. A lazy model (m->src set) records each view in
 * m->src->views. src names the file or folder in errors. Stops at the first
 * error. */
lt_status lt_model_take_named(lt_model *m, const char *src, const lt_model_tensor_names *n,
                              const void *file);

/* The file row of model row r for a weight whose heads of hd rows the file interleaves (GGUF's
 * q / k rotary order; lt_model_weight_interleaved): model row h hd + i is file row
 * h hd + 2 (i mod hd/2) + i / (hd/2). */
static inline int64_t lt_model_file_row_(int64_t r, int hd) {
    int64_t h = r / hd, rem = r % hd, half = hd / 2;
    return h * hd + 2 * (rem % half) + rem / half;
}

#endif
