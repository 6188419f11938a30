/* save_gguf.c - lt_model_save_gguf: a model as a llama.cpp GGUF, laid out as
 * convert_hf_to_gguf.py lays it out, so llama.cpp (and our own load_gguf.c) read it.
 *
 * Keys: general.architecture ("llama" for llama and mistral, "qwen2"), general.type/name,
 * {arch}.block_count, context_length, embedding_length, feed_forward_length,
 * attention.head_count(_kv), rope.freq_base, attention.layer_norm_rms_epsilon,
 * general.file_type, vocab_size, rope.dimension_count, attention.key_length/value_length when
 * head_dim is not dim / n_heads, rope.scaling.* (linear), then the tokenizer.* keys
 * (gguf_tokenizer.c) and general.quantization_version.
 * Tensors: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_q/k/v.bias,
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output (untied only),
 * rope_freqs (per-frequency divisors, when the model's rotary frequencies are not the plain
 * or linear-scaled ones: llama3 scaling). For the llama arch the q/k rows (and biases) go
 * from HF's half-split rotary order to llama.cpp's interleaved pairs (the converter's
 * permute(); load_gguf.c undoes it). 1-D tensors stay F32; 2-D tensors take the asked type,
 * except that Q8_0 needs rows that are a multiple of 32 (others fall back to F16, as the
 * converter does). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"
#include "loratune/quant.h"

/* interleaved row h*hd + 2i + j <- half-split row h*hd + j*hd/2 + i */
static void permute_hf_to_interleaved(const float *src, float *dst, int n_heads, int hd,
                                      int64_t cols) {
    int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + ((int64_t)h * hd + 2 * i + j) * cols,
                       src + ((int64_t)h * hd + j * half + i) * cols, sizeof(float) * (size_t)cols);
}

typedef struct {
    void **bufs; /* owned output buffers */
    int n, cap;
    float *tmp;       /* scratch for permuted rows */
    const char *path; /* the file being written (errors) */
} arena;

static void *arena_alloc(arena *a, size_t n) {
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        void **b = lt_realloc(a->bufs, sizeof(void *) * (size_t)cap);
        if (!b) return NULL;
        a->bufs = b;
        a->cap = cap;
    }
    void *p = lt_malloc(n ? n : 1);
    if (p) a->bufs[a->n++] = p;
    return p;
}

/* Adds tensor name (rows x cols; cols == 0: 1-D of rows) converted from src. perm_heads > 0:
 * q/k rows permuted for llama.cpp's rotary (head_dim hd). */
static lt_status add(lt_gguf_writer *w, arena *a, const char *name, const float *src, int64_t rows,
                     int64_t cols, lt_dtype type, int perm_heads, int hd) {
    int64_t ne = rows * (cols ? cols : 1);
    char where[700];
    snprintf(where, sizeof where, "%s: tensor %s", a->path, name);
    /* nothing non-finite is written: the source (a merge gone wrong) and, below, what the
     * conversion made of it (past f16's range is inf) */
    lt_status cst = lt_check_finite(LT_DTYPE_F32, src, ne, cols, where,
                                    "refusing to write it (was the adapter or its alpha broken?)");
    if (cst) return cst;
    if (perm_heads > 0) {
        float *p = arena_alloc(a, sizeof(float) * (size_t)ne);
        if (!p) return lt_error(LT_ERR_NOMEM, "out of memory");
        permute_hf_to_interleaved(src, p, perm_heads, hd, cols ? cols : 1);
        src = p;
    }
    lt_dtype t = cols == 0 ? LT_DTYPE_F32 : type;
    if (t == LT_DTYPE_Q8_0 && cols % 32 != 0) t = LT_DTYPE_F16;
    int64_t shape[2] = {rows, cols};
    int nd = cols ? 2 : 1;
    if (t == LT_DTYPE_F32 && perm_heads <= 0)
        return lt_gguf_writer_add_tensor(w, name, t, nd, shape, src, sizeof(float) * (size_t)ne);
    int64_t nb = lt_dtype_nbytes(t, ne);
    if (nb < 0) return lt_error(LT_ERR_INTERNAL, "%s: bad size for %s", name, lt_dtype_name(t));
    void *dst = t == LT_DTYPE_F32 ? (void *)src : arena_alloc(a, (size_t)nb);
    if (!dst) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (t == LT_DTYPE_F16) {
        uint16_t *h = dst;
        for (int64_t k = 0; k < ne; k++)
            h[k] = lt_f32_to_f16(src[k]);
    } else if (t == LT_DTYPE_Q8_0) {
        lt_status st = lt_quantize(t, src, dst, ne);
        if (st) return st;
    }
    if (t != LT_DTYPE_F32 &&
        (cst = lt_check_finite(t, dst, ne, cols, where,
                               "outside the range of the converted type; refusing to write it "
                               "(export as f32)")))
        return cst;
    return lt_gguf_writer_add_tensor(w, name, t, nd, shape, dst, (size_t)nb);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    while (s && s[1] == 0 && s > p) { /* trailing slash */
        const char *q = s - 1;
        while (q > p && *q != '/')
            q--;
        return *q == '/' ? q + 1 : q;
    }
    return s ? s + 1 : p;
}

lt_status lt_model_save_gguf(const lt_model *m, const char *src_model_path, const char *path,
                             lt_dtype type) {
    if (!m || !path) return lt_error(LT_ERR_ARG, "lt_model_save_gguf: model and path are required");
    if (type != LT_DTYPE_F32 && type != LT_DTYPE_F16 && type != LT_DTYPE_Q8_0)
        return lt_error(LT_ERR_ARG,
                        "%s: type %s is not supported for a GGUF model (expected "
                        "f32, f16 or q8_0)",
                        path, lt_dtype_name(type));
    lt_status st = lt_model_check_weights(m, "lt_model_save_gguf");
    if (st) return st;
    const lt_model_config *c = &m->config;
    const lt_model_weights *wt = &m->w;
    int is_qwen = c->arch == LT_ARCH_QWEN2;
    const char *arch = is_qwen ? "qwen2" : "llama";
    lt_gguf_writer *w = NULL;
    lt_dir_lock *lock = NULL;
    arena a = {0};
    a.path = path;
    float *ref = NULL, *factors = NULL;
    if ((st = lt_gguf_writer_create(&w))) return st;
    char key[128], name[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", arch, (suffix)), key)
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) goto done;                                                                 \
    } while (0)
    TRY(lt_gguf_writer_set_str(w, "general.architecture", arch));
    TRY(lt_gguf_writer_set_str(w, "general.type", "model"));
    if (src_model_path) {
        char nm[256];
        snprintf(nm, sizeof nm, "%s", base_name(src_model_path));
        char *dot = strrchr(nm, '.');
        if (dot && !strcmp(dot, ".gguf")) *dot = 0;
        size_t l = strlen(nm);
        if (l && nm[l - 1] == '/') nm[l - 1] = 0;
        char full[300];
        snprintf(full, sizeof full, "%s (fused)", nm);
        TRY(lt_gguf_writer_set_str(w, "general.name", full));
    }
    TRY(lt_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)c->n_layers));
    TRY(lt_gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)c->max_seq_len));
    TRY(lt_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)c->dim));
    TRY(lt_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)c->ffn_dim));
    TRY(lt_gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads));
    TRY(lt_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads));
    TRY(lt_gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_theta));
    TRY(lt_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps));
    uint32_t ftype = type == LT_DTYPE_F32 ? 0 : type == LT_DTYPE_F16 ? 1 : 7;
    TRY(lt_gguf_writer_set_u32(w, "general.file_type", ftype));
    TRY(lt_gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size));
    TRY(lt_gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim));
    if (c->head_dim * c->n_heads != c->dim) {
        TRY(lt_gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim));
        TRY(lt_gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim));
    }
    if (c->rope_scaling.type == LT_ROPE_SCALING_LINEAR) {
        TRY(lt_gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear"));
        TRY(lt_gguf_writer_set_f32(w, KEY("rope.scaling.factor"), c->rope_scaling.factor));
    }
    if (c->sliding_window > 0 && is_qwen) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: sliding-window attention has no qwen2 GGUF key",
                      path);
        goto done;
    }
    TRY(lt_export_gguf_tokenizer(w, src_model_path));
    TRY(lt_gguf_writer_set_u32(w, "general.quantization_version", 2));

    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size, hd = c->head_dim;
    int64_t QD = (int64_t)c->n_heads * hd, KD = (int64_t)c->n_kv_heads * hd;
    int perm = !is_qwen;
    TRY(add(w, &a, "token_embd.weight", wt->tok_embd, V, D, type, 0, 0));
    for (int64_t l = 0; l < c->n_layers; l++) {
#define T(suffix, src, rows, cols, ph)                                                             \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, (suffix));                        \
        TRY(add(w, &a, name, (src), (rows), (cols), type, (ph), (int)hd));                         \
    } while (0)
        T("attn_norm.weight", wt->attn_norm + l * D, D, 0, 0);
        T("attn_q.weight", wt->wq + l * QD * D, QD, D, perm ? c->n_heads : 0);
        T("attn_k.weight", wt->wk + l * KD * D, KD, D, perm ? c->n_kv_heads : 0);
        T("attn_v.weight", wt->wv + l * KD * D, KD, D, 0);
        if (c->qkv_bias) {
            T("attn_q.bias", wt->bq + l * QD, QD, 0, perm ? c->n_heads : 0);
            T("attn_k.bias", wt->bk + l * KD, KD, 0, perm ? c->n_kv_heads : 0);
            T("attn_v.bias", wt->bv + l * KD, KD, 0, 0);
        }
        T("attn_output.weight", wt->wo + l * D * QD, D, QD, 0);
        T("ffn_norm.weight", wt->ffn_norm + l * D, D, 0, 0);
        T("ffn_gate.weight", wt->w_gate + l * F * D, F, D, 0);
        T("ffn_up.weight", wt->w_up + l * F * D, F, D, 0);
        T("ffn_down.weight", wt->w_down + l * D * F, D, F, 0);
#undef T
    }
    TRY(add(w, &a, "output_norm.weight", wt->out_norm, D, 0, type, 0, 0));
    if (!c->tied_embeddings) TRY(add(w, &a, "output.weight", wt->lm_head, V, D, type, 0, 0));
    /* rope_freqs: when m's frequencies are not the config's plain / linear-scaled ones */
    if (m->inv_freq) {
        int half = c->head_dim / 2;
        lt_model_config plain = *c;
        if (plain.rope_scaling.type == LT_ROPE_SCALING_LLAMA3)
            plain.rope_scaling.type = LT_ROPE_SCALING_NONE;
        ref = lt_malloc(sizeof(float) * (size_t)half);
        factors = lt_malloc(sizeof(float) * (size_t)half);
        if (!ref || !factors) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        lt_rope_inv_freq(&plain, ref);
        int differ = 0;
        for (int i = 0; i < half; i++) {
            factors[i] = ref[i] / m->inv_freq[i];
            if (fabsf(factors[i] - 1.0f) > 1e-6f) differ = 1;
        }
        if (differ) TRY(add(w, &a, "rope_freqs.weight", factors, half, 0, type, 0, 0));
    }
    TRY(lt_export_lock(path, 1, &lock));
    st = lt_gguf_writer_write(w, path);
done:
#undef TRY
#undef KEY
    lt_dir_lock_close(lock);
    lt_gguf_writer_free(w);
    for (int i = 0; i < a.n; i++)
        free(a.bufs[i]);
    free(a.bufs);
    free(ref);
    free(factors);
    return st;
}
