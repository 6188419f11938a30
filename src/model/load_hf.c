/* load_hf.c - Hugging Face model folder: config.json + model.safetensors (single or sharded
 * through model.safetensors.index.json).
 *
 * Tensor names follow transformers' LlamaForCausalLM / MistralForCausalLM /
 * Qwen2ForCausalLM; shapes are checked against config.json; F32/F16/BF16 (and any dtype
 * lt_to_f32 knows) are converted to float32. The HF layout is lt_model's own, so no
 * permutation happens here. Extra tensors (e.g. rotary_emb.inv_freq of old checkpoints, an
 * lm_head of a tied model) are ignored. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/safetensors.h"
#include "model_internal.h"

static int64_t folder_safetensors_bytes(const char *dir) {
    int64_t total = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0) total += st.st_size;
    }
    closedir(d);
    return total;
}

/* In config-only mode the weight pointers are NULL; OFF() keeps the destination NULL. */
#define OFF(base, off) ((base) ? (base) + (off) : NULL)

lt_status lt_model_load_hf(const char *dir, const lt_model_load_opts *opts, lt_model **out) {
    *out = NULL;
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    if (!lt_path_exists(cfg_path))
        return lt_error(LT_ERR_NOTFOUND, "%s: no config.json in this folder", dir);
    lt_model_config c;
    lt_status st = lt_model_config_load_hf(cfg_path, &c);
    if (st) return st;
    lt_safetensors *sf = NULL;
    if ((st = lt_safetensors_open(dir, &sf))) return st;
    lt_model *m = NULL;
    /* Pass 0 checks every tensor against the config without any weights; only then pass 1
     * allocates and converts, so a config.json that lies about the sizes cannot make us
     * allocate more than the files back. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && LT_CONFIG_ONLY(opts)) break;
        lt_model_free(m);
        m = NULL;
        if ((st = lt_model_alloc(&c, pass == 0, &m))) {
            lt_safetensors_close(sf);
            return lt_error_wrap(st, dir);
        }
        int64_t D = c.dim, L = c.n_layers, F = c.ffn_dim, V = c.vocab_size;
        int64_t QD = (int64_t)c.n_heads * c.head_dim, KD = (int64_t)c.n_kv_heads * c.head_dim;
        lt_model_weights *w = &m->w;
        char name[256];
#define TAKE(nm, nd, a, b, dst)                                                                    \
    do {                                                                                           \
        if ((st = lt_model_take(m, dir, (nm), lt_safetensors_find(sf, (nm)), (nd), (a), (b),       \
                                (dst))))                                                           \
            goto fail;                                                                             \
    } while (0)
        TAKE("model.embed_tokens.weight", 2, V, D, w->tok_embd);
        for (int64_t l = 0; l < L; l++) {
#define LAYER(suffix, nd, a, b, dst)                                                               \
    do {                                                                                           \
        snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix);                 \
        TAKE(name, nd, a, b, dst);                                                                 \
    } while (0)
            LAYER("input_layernorm.weight", 1, D, 0, OFF(w->attn_norm, l * D));
            LAYER("self_attn.q_proj.weight", 2, QD, D, OFF(w->wq, l * QD * D));
            LAYER("self_attn.k_proj.weight", 2, KD, D, OFF(w->wk, l * KD * D));
            LAYER("self_attn.v_proj.weight", 2, KD, D, OFF(w->wv, l * KD * D));
            if (c.qkv_bias) {
                LAYER("self_attn.q_proj.bias", 1, QD, 0, OFF(w->bq, l * QD));
                LAYER("self_attn.k_proj.bias", 1, KD, 0, OFF(w->bk, l * KD));
                LAYER("self_attn.v_proj.bias", 1, KD, 0, OFF(w->bv, l * KD));
            }
            LAYER("self_attn.o_proj.weight", 2, D, QD, OFF(w->wo, l * D * QD));
            LAYER("post_attention_layernorm.weight", 1, D, 0, OFF(w->ffn_norm, l * D));
            LAYER("mlp.gate_proj.weight", 2, F, D, OFF(w->w_gate, l * F * D));
            LAYER("mlp.up_proj.weight", 2, F, D, OFF(w->w_up, l * F * D));
            LAYER("mlp.down_proj.weight", 2, D, F, OFF(w->w_down, l * D * F));
#undef LAYER
        }
        TAKE("model.norm.weight", 1, D, 0, w->out_norm);
        if (!c.tied_embeddings) {
            if (!lt_safetensors_find(sf, "lm_head.weight")) {
                st = lt_error(
                    LT_ERR_NOTFOUND,
                    "%s: missing tensor lm_head.weight (config.json has tie_word_embeddings "
                    "false)",
                    dir);
                goto fail;
            }
            TAKE("lm_head.weight", 2, V, D, w->lm_head);
        }
#undef TAKE
    }
    for (size_t i = 0; i < lt_safetensors_count(sf); i++) {
        const lt_tensor_view *t = lt_safetensors_tensor(sf, i);
        if ((unsigned)t->dtype >= LT_DTYPE_COUNT) continue;
        m->n_stored_tensors++;
        m->stored_dtype_tensors[t->dtype]++;
        m->stored_dtype_params[t->dtype] += lt_tensor_numel(t);
    }
    lt_safetensors_close(sf);
    m->format = LT_MODEL_FORMAT_HF;
    m->file_bytes = folder_safetensors_bytes(dir);
    *out = m;
    return LT_OK;
fail:
    lt_safetensors_close(sf);
    lt_model_free(m);
    return st;
}
