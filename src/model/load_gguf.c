/* load_gguf.c - GGUF models (general.architecture "llama" or "qwen2").
 *
 * Config from the {arch}.* metadata keys; tensors token_embd, blk.N.{attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output
 * (absent when tied), with blk.N.attn_{q,k,v}.bias for qwen2; every dtype dequantized to
 * float32 by lt_to_f32.
 * Rotary layout: llama.cpp's converter permutes llama-arch attn_q/attn_k rows into the
 * interleaved-pair order (and llama2.c-derived GGUFs are interleaved already), so for llama
 * we permute them back to HF's half-split order. qwen2 GGUFs use NEOX rotary = HF order:
 * untouched. A rope_freqs tensor (llama 3.1 GGUFs) divides the base frequencies, as
 * llama.cpp does. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/gguf.h"
#include "model_internal.h"

static lt_status key_i(const lt_gguf *g, const char *arch, const char *suffix, int required,
                       int64_t def, int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    lt_status st = lt_gguf_get_i64(g, key, out);
    if (st == LT_ERR_NOTFOUND && !required) {
        *out = def;
        return LT_OK;
    }
    if (st == LT_ERR_NOTFOUND)
        return lt_error(LT_ERR_FORMAT, "%s: missing metadata key %s (expected an integer)",
                        lt_gguf_path(g), key);
    if (st) return st; /* the reader's message already names the file and key */
    if (*out < 0 || *out > 0x7fffffff)
        return lt_error(LT_ERR_FORMAT, "%s: %s = %lld: out of range", lt_gguf_path(g), key,
                        (long long)*out);
    return LT_OK;
}

static lt_status key_f(const lt_gguf *g, const char *arch, const char *suffix, int required,
                       float def, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    lt_status st = lt_gguf_get_f32(g, key, out);
    if (st == LT_ERR_NOTFOUND && !required) {
        *out = def;
        return LT_OK;
    }
    if (st == LT_ERR_NOTFOUND)
        return lt_error(LT_ERR_FORMAT, "%s: missing metadata key %s (expected a number)",
                        lt_gguf_path(g), key);
    if (st) return st; /* the reader's message already names the file and key */
    return LT_OK;
}

/* Config from GGUF metadata (and token_embd's shape when no vocab_size key). */
static lt_status gguf_config(const lt_gguf *g, lt_model_config *c, char *arch, size_t arch_cap) {
    const char *path = lt_gguf_path(g);
    memset(c, 0, sizeof *c);
    const char *s;
    size_t len;
    lt_status st = lt_gguf_get_str(g, "general.architecture", &s, &len);
    if (st)
        return lt_error(LT_ERR_FORMAT, "%s: missing metadata key general.architecture (a string)",
                        path);
    if (len >= arch_cap) len = arch_cap - 1;
    memcpy(arch, s, len);
    arch[len] = 0;
    if (!strcmp(arch, "llama"))
        c->arch = LT_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2"))
        c->arch = LT_ARCH_QWEN2;
    else
        return lt_error(
            LT_ERR_UNSUPPORTED,
            "%s: general.architecture = \"%s\" is not supported (expected llama or qwen2)", path,
            arch);
    int64_t v;
    if ((st = key_i(g, arch, "embedding_length", 1, 0, &v))) return st;
    c->dim = (int)v;
    if ((st = key_i(g, arch, "feed_forward_length", 1, 0, &v))) return st;
    c->ffn_dim = (int)v;
    if ((st = key_i(g, arch, "block_count", 1, 0, &v))) return st;
    c->n_layers = (int)v;
    if ((st = key_i(g, arch, "attention.head_count", 1, 0, &v))) return st;
    c->n_heads = (int)v;
    if ((st = key_i(g, arch, "attention.head_count_kv", 0, c->n_heads, &v))) return st;
    c->n_kv_heads = (int)v;
    if ((st = key_i(g, arch, "context_length", 0, 2048, &v))) return st;
    c->max_seq_len = (int)v;
    if (c->n_heads < 1)
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s.attention.head_count = 0: expected a positive integer", path, arch);
    if ((st = key_i(g, arch, "attention.key_length", 0, c->dim / c->n_heads, &v))) return st;
    c->head_dim = (int)v;
    if ((st = key_i(g, arch, "rope.dimension_count", 0, c->head_dim, &v))) return st;
    if (v != c->head_dim)
        return lt_error(
            LT_ERR_UNSUPPORTED,
            "%s: %s.rope.dimension_count = %lld != head dim %d: partial rotary is not supported",
            path, arch, (long long)v, c->head_dim);
    const lt_tensor_view *te = lt_gguf_find_tensor(g, "token_embd.weight");
    int64_t vdef = te && te->ndim == 2 ? te->shape[0] : 0;
    if ((st = key_i(g, arch, "vocab_size", 0, vdef, &v))) return st;
    c->vocab_size = (int)v;
    if ((st = key_f(g, arch, "attention.layer_norm_rms_epsilon", 1, 0, &c->norm_eps))) return st;
    if ((st = key_f(g, arch, "rope.freq_base", 0, 10000.0f, &c->rope_theta))) return st;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (lt_gguf_get_str(g, key, &s, &len) == LT_OK) {
        if (len == 6 && !memcmp(s, "linear", 6)) {
            c->rope_scaling.type = LT_ROPE_SCALING_LINEAR;
            if ((st = key_f(g, arch, "rope.scaling.factor", 1, 1.0f, &c->rope_scaling.factor)))
                return st;
        } else if (!(len == 4 && !memcmp(s, "none", 4))) {
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: %s = \"%.*s\" is not supported (none or linear)", path, key,
                            (int)(len > 32 ? 32 : len), s);
        }
    }
    c->tied_embeddings = lt_gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = lt_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->bos_id = c->eos_id = -1;
    uint32_t u;
    /* a special id that is there must be inside the vocabulary (it used to become "none") */
    static const char *const ids[2] = {"tokenizer.ggml.bos_token_id",
                                       "tokenizer.ggml.eos_token_id"};
    for (int k = 0; k < 2; k++) {
        if (lt_gguf_find_key(g, ids[k]) < 0) continue;
        lt_status ist = lt_gguf_get_u32(g, ids[k], &u);
        if (ist) return lt_error_wrap(ist, path);
        if (u >= (uint32_t)c->vocab_size)
            return lt_error(LT_ERR_FORMAT,
                            "%s: %s = %u is outside the vocabulary (%d tokens, ids 0..%d)", path,
                            ids[k], u, c->vocab_size, c->vocab_size - 1);
        if (k == 0) {
            c->bos_id = (int)u;
        } else {
            c->eos_id = (int)u;
            c->n_eos_ids = 1;
            c->eos_ids[0] = c->eos_id;
        }
    }
    const lt_tensor_view *q0 = lt_gguf_find_tensor(g, "blk.0.attn_q.weight");
    c->dtype = q0 ? q0->dtype : LT_DTYPE_F32;
    c->dtype_stated = q0 != NULL;
    return lt_model_config_validate(c, path);
}

static const lt_tensor_view *find_tensor(const void *g, const char *name) {
    return lt_gguf_find_tensor(g, name);
}
static size_t count_tensors(const void *g) {
    return lt_gguf_n_tensors(g);
}
static const char *tensor_name(const void *g, size_t i) {
    const lt_tensor_view *t = lt_gguf_tensor(g, i);
    return t ? t->name : NULL;
}

static const lt_model_tensor_names GGUF_NAMES = {
    .tok_embd = "token_embd.weight",
    .out_norm = "output_norm.weight",
    .lm_head = "output.weight", /* untied means it is there: no untied_why */
    .layer_fmt = "blk.%lld.%s",
    .attn_norm = "attn_norm.weight",
    .wq = "attn_q.weight",
    .wk = "attn_k.weight",
    .wv = "attn_v.weight",
    .bq = "attn_q.bias",
    .bk = "attn_k.bias",
    .bv = "attn_v.bias",
    .wo = "attn_output.weight",
    .ffn_norm = "ffn_norm.weight",
    .w_gate = "ffn_gate.weight",
    .w_up = "ffn_up.weight",
    .w_down = "ffn_down.weight",
    .find = find_tensor,
    .count = count_tensors,
    .name_at = tensor_name,
    .extra_used = "rope_freqs.weight",
    .layers_key = "the metadata's block_count",
};

static void close_gguf(void *g) {
    lt_gguf_close(g);
}

lt_status lt_model_load_gguf(const char *path, const lt_model_load_opts *opts, lt_model **out) {
    *out = NULL;
    lt_gguf *g = NULL;
    lt_status st = lt_gguf_open(path, &g);
    if (st) return st;
    lt_model_config c;
    char arch[32];
    lt_model *m = NULL, *g_owner = NULL; /* lazy: g_owner closes g */
    float *tmp = NULL;
    if ((st = gguf_config(g, &c, arch, sizeof arch))) goto fail;
    /* Pass 0 checks every tensor against the metadata without any weights; only then pass 1
     * allocates and converts, so lying metadata cannot make us allocate more than the file
     * backs. */
    const int lazy = opts && opts->lazy;
    for (int pass = 0; pass < 2; pass++) { /* a lazy model stops after pass 0, keeping g */
        if (pass == 1 && (LT_CONFIG_ONLY(opts) || lazy)) break;
        lt_model_free(m);
        m = NULL;
        if ((st = lt_model_alloc(&c, pass == 0, &m))) goto fail;
        if (lazy) {
            st = lt_model_source_attach(m, g, close_gguf, c.arch == LT_ARCH_LLAMA);
            g_owner = m;
            if (st) goto fail;
        }
        if ((st = lt_model_take_named(m, path, &GGUF_NAMES, g))) goto fail;
    }
    if ((st = lt_model_check_unused(m, path, &GGUF_NAMES, g))) goto fail;
    int64_t D = c.dim, L = c.n_layers;
    int64_t QD = (int64_t)c.n_heads * c.head_dim, KD = (int64_t)c.n_kv_heads * c.head_dim;
    lt_model_weights *w = &m->w;
    const lt_tensor_view *rf = lt_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf) {
        int half = c.head_dim / 2;
        float *factors = tmp = lt_malloc(sizeof(float) * (size_t)half);
        if (!factors) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        if ((st = lt_model_take(m, path, "rope_freqs.weight", rf, 1, half, 0, factors))) goto fail;
        for (int i = 0; i < half; i++) {
            if (!(factors[i] > 0.0f)) {
                st = lt_error(LT_ERR_FORMAT, "%s: rope_freqs.weight[%d] = %g: expected > 0", path,
                              i, (double)factors[i]);
                goto fail;
            }
            m->inv_freq[i] /= factors[i];
        }
        free(tmp);
        tmp = NULL;
    }
    if (c.arch == LT_ARCH_LLAMA && m->params) {
        tmp = lt_malloc(sizeof(float) * (size_t)(c.head_dim * D));
        if (!tmp) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        for (int64_t l = 0; l < L; l++) {
            lt_permute_rows_interleaved_to_hf(w->wq + l * QD * D, c.n_heads, c.head_dim, D, tmp);
            lt_permute_rows_interleaved_to_hf(w->wk + l * KD * D, c.n_kv_heads, c.head_dim, D, tmp);
            if (c.qkv_bias) { /* the converter permutes q/k biases along with the weights */
                lt_permute_rows_interleaved_to_hf(w->bq + l * QD, c.n_heads, c.head_dim, 1, tmp);
                lt_permute_rows_interleaved_to_hf(w->bk + l * KD, c.n_kv_heads, c.head_dim, 1, tmp);
            }
        }
        free(tmp);
        tmp = NULL;
    }
    m->qk_permuted_at_load = c.arch == LT_ARCH_LLAMA;
    for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *t = lt_gguf_tensor(g, i);
        if ((unsigned)t->dtype >= LT_DTYPE_COUNT) continue;
        m->n_stored_tensors++;
        m->stored_dtype_tensors[t->dtype]++;
        m->stored_dtype_params[t->dtype] += lt_tensor_numel(t);
    }
    struct stat sb;
    m->file_bytes = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    m->format = LT_MODEL_FORMAT_GGUF;
    if (!g_owner) lt_gguf_close(g);
    *out = m;
    return LT_OK;
fail:
    free(tmp);
    lt_model_free(m);
    if (!g_owner) lt_gguf_close(g);
    return st;
}
