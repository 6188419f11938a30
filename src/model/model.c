/* model.c - lt_model allocation, wiring of the weight pointers into the one parameter block,
 * load dispatch on the path's form, rotary row permutations, thread settings, weight release.
 *
 * Invariant: m->params holds exactly lt_model_config_n_params(&m->config) floats in the order
 * of lt_model_weights' fields; lm_head aliases tok_embd when tied. params is its own anonymous
 * mapping (zero pages, page aligned) followed by one PROT_NONE guard page, so that releasing
 * it gives the memory back to the OS whatever malloc's thresholds (and ASan's quarantine) are,
 * and a write past the end still faults. params == NULL: config-only or released. */
#include "loratune/model.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "loratune/quant.h"
#include "model_internal.h"

void lt_model_wire(lt_model *m) {
    const lt_model_config *c = &m->config;
    int64_t D = c->dim, L = c->n_layers, F = c->ffn_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    float *p = m->params;
    lt_model_weights *w = &m->w;
    w->tok_embd = p;
    p += V * D;
    w->attn_norm = p;
    p += L * D;
    w->wq = p;
    p += L * QD * D;
    w->wk = p;
    p += L * KD * D;
    w->wv = p;
    p += L * KD * D;
    if (c->qkv_bias) {
        w->bq = p;
        p += L * QD;
        w->bk = p;
        p += L * KD;
        w->bv = p;
        p += L * KD;
    } else {
        w->bq = w->bk = w->bv = NULL;
    }
    w->wo = p;
    p += L * D * QD;
    w->ffn_norm = p;
    p += L * D;
    w->w_gate = p;
    p += L * F * D;
    w->w_up = p;
    p += L * F * D;
    w->w_down = p;
    p += L * D * F;
    w->out_norm = p;
    p += D;
    if (c->tied_embeddings) {
        w->lm_head = w->tok_embd;
    } else {
        w->lm_head = p;
        p += V * D;
    }
}

/* bytes of the params mapping for n floats: whole pages + the guard page */
static size_t params_map_bytes(int64_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t b = (size_t)n * sizeof(float);
    return (b + pg - 1) / pg * pg + pg;
}

static float *params_map(int64_t n) {
    if (lt_alloc_fault_()) return NULL; /* the allocation fault injector counts this one */
    size_t sz = params_map_bytes(n), pg = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (mprotect((char *)p + sz - pg, pg, PROT_NONE)) {
        munmap(p, sz);
        return NULL;
    }
    return (float *)p;
}

static void params_unmap(lt_model *m) {
    if (m->params) munmap(m->params, params_map_bytes(m->n_params));
    m->params = NULL;
}

lt_status lt_model_alloc(const lt_model_config *c, int config_only, lt_model **out) {
    *out = NULL;
    lt_status st = lt_model_config_validate(c, "model config");
    if (st) return st;
    lt_model *m = lt_calloc(1, sizeof *m);
    if (!m) return lt_error(LT_ERR_NOMEM, "model: out of memory");
    m->config = *c;
    m->n_params = lt_model_config_n_params(c);
    if (m->n_params <= 0 || (uint64_t)m->n_params > SIZE_MAX / sizeof(float) / 2) {
        int64_t n = m->n_params;
        free(m);
        return lt_error(LT_ERR_NOMEM, "model: %lld parameters do not fit in memory", (long long)n);
    }
    if (!config_only) m->params = params_map(m->n_params);
    m->inv_freq = lt_calloc((size_t)c->head_dim / 2, sizeof(float));
    if ((!config_only && !m->params) || !m->inv_freq) {
        lt_model_free(m);
        return lt_error(LT_ERR_NOMEM, "model: out of memory for %lld parameters (%.1f MiB)",
                        (long long)lt_model_config_n_params(c),
                        (double)lt_model_config_n_params(c) * 4.0 / 1048576.0);
    }
    if (!config_only) lt_model_wire(m);
    lt_rope_inv_freq(c, m->inv_freq);
    *out = m;
    return LT_OK;
}

lt_status lt_model_create(const lt_model_config *c, lt_model **out) {
    return lt_model_alloc(c, 0, out);
}

void lt_model_free(lt_model *m) {
    if (!m) return;
    params_unmap(m);
    lt_model_source_free(m->src);
    free(m->inv_freq);
    free(m->path);
    free(m);
}

void lt_model_release_weights(lt_model *m) {
    if (!m || !m->params) return;
    params_unmap(m);
    memset(&m->w, 0, sizeof m->w);
    m->weights_released = 1;
}

lt_status lt_model_check_weights(const lt_model *m, const char *what) {
    if (!m) return lt_error(LT_ERR_ARG, "%s: no model", what);
    if (m->weights_released)
        return lt_error(LT_ERR_ARG,
                        "%s: model weights were released to a trainer holding a 16-bit copy "
                        "(lt_train_config.release_base_fp32); reload the model",
                        what);
    if (!m->params && m->src)
        return lt_error(LT_ERR_ARG,
                        "%s: the model was loaded lazily (its weights stay in the file); load it "
                        "whole",
                        what);
    if (!m->params)
        return lt_error(LT_ERR_ARG, "%s: the model was loaded config-only (no weights)", what);
    return LT_OK;
}

void lt_permute_rows_interleaved_to_hf(float *w, int n_heads, int head_dim, int64_t cols,
                                       float *tmp) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (int64_t)h * head_dim * cols;
        memcpy(tmp, head, sizeof(float) * (size_t)(head_dim * cols));
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(head + (int64_t)(j * half + i) * cols, tmp + (int64_t)(2 * i + j) * cols,
                       sizeof(float) * (size_t)cols);
    }
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

lt_status lt_model_load(const char *path, const lt_model_load_opts *opts, lt_model **out) {
    *out = NULL;
    lt_status st;
    if (lt_path_is_dir(path) || ends_with(path, "config.json")) {
        if ((st = lt_output_check(path))) return st; /* an export that did not finish */
    }
    if (lt_path_is_dir(path))
        st = lt_model_load_hf(path, opts, out);
    else if (!lt_path_exists(path))
        return lt_error(LT_ERR_NOTFOUND, "%s: no such file or folder", path);
    else if (ends_with(path, ".gguf"))
        st = lt_model_load_gguf(path, opts, out);
    else if (ends_with(path, ".bin"))
        st = lt_model_load_llama2c(path, opts, out);
    else if (ends_with(path, "config.json")) {
        /* a config.json path: load its folder */
        char *dir = lt_strdup(path);
        if (!dir) return lt_error(LT_ERR_NOMEM, "out of memory");
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(dir, ".");
        st = lt_model_load_hf(dir, opts, out);
        free(dir);
    } else {
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: unknown model form (expected a Hugging Face folder, a .gguf file or a "
                        "llama2.c .bin)",
                        path);
    }
    if (st) return st;
    lt_model *m = *out;
    if (!m->path && !(m->path = lt_strdup(path))) {
        lt_model_free(m);
        *out = NULL;
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    if (opts && opts->max_seq_len > 0) {
        if (opts->max_seq_len > LT_MAX_SEQ) {
            lt_model_free(m);
            *out = NULL;
            return lt_error(LT_ERR_ARG, "max_seq_len %d too large", opts->max_seq_len);
        }
        m->config.max_seq_len = opts->max_seq_len;
    }
    return LT_OK;
}

lt_status lt_model_take(lt_model *m, const char *src, const char *name, const lt_tensor_view *t,
                        int ndim, int64_t d0, int64_t d1, float *dst) {
    if (!t) return lt_error(LT_ERR_NOTFOUND, "%s: missing tensor %s", src, name);
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[128] = "", want[64];
        size_t k = 0;
        for (int i = 0; i < t->ndim && i < LT_MAX_DIMS && k < sizeof got - 24; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%lld", i ? ", " : "",
                                  (long long)t->shape[i]);
        if (ndim == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        return lt_error(LT_ERR_FORMAT, "%s: tensor %s has shape [%s], expected %s from the config",
                        src, name, got, want);
    }
    int64_t n = ndim == 1 ? d0 : d0 * d1;
    int64_t need = lt_dtype_nbytes(t->dtype, n);
    if (need < 0 || (uint64_t)need > t->nbytes)
        return lt_error(LT_ERR_FORMAT, "%s: tensor %s: %zu bytes of %s data, expected %lld", src,
                        name, t->nbytes, lt_dtype_name(t->dtype), (long long)need);
    /* Non-finite weights are refused here, once, naming the tensor: on the fp32 copy just made
     * (hot in cache) or, for a lazy model, on the stored data (bits of float types; quantized
     * ones a few blocks at a time). A config-only load reads no weights. */
    char where[600];
    snprintf(where, sizeof where, "%s: tensor %s", src, name);
    if (!dst)
        return m->src ? lt_check_finite(t->dtype, t->data, n, ndim == 2 ? d1 : 0, where,
                                        "the model file is damaged")
                      : LT_OK;
    lt_status st = lt_to_f32(t->dtype, t->data, dst, n);
    if (st) return lt_error_wrap(st, where);
    return lt_check_finite(LT_DTYPE_F32, dst, n, ndim == 2 ? d1 : 0, where,
                           "the model file is damaged");
}
