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

static const lt_tensor_view *find_tensor(const void *sf, const char *name) {
    return lt_safetensors_find(sf, name);
}

static size_t count_tensors(const void *sf) {
    return lt_safetensors_count(sf);
}
static const char *tensor_name(const void *sf, size_t i) {
    const lt_tensor_view *t = lt_safetensors_tensor(sf, i);
    return t ? t->name : NULL;
}

static const lt_model_tensor_names HF_NAMES = {
    .tok_embd = "model.embed_tokens.weight",
    .out_norm = "model.norm.weight",
    .lm_head = "lm_head.weight",
    .layer_fmt = "model.layers.%lld.%s",
    .attn_norm = "input_layernorm.weight",
    .wq = "self_attn.q_proj.weight",
    .wk = "self_attn.k_proj.weight",
    .wv = "self_attn.v_proj.weight",
    .bq = "self_attn.q_proj.bias",
    .bk = "self_attn.k_proj.bias",
    .bv = "self_attn.v_proj.bias",
    .wo = "self_attn.o_proj.weight",
    .ffn_norm = "post_attention_layernorm.weight",
    .w_gate = "mlp.gate_proj.weight",
    .w_up = "mlp.up_proj.weight",
    .w_down = "mlp.down_proj.weight",
    .find = find_tensor,
    .untied_why = "config.json has tie_word_embeddings false",
    .count = count_tensors,
    .name_at = tensor_name,
    .layers_key = "config.json num_hidden_layers",
};

static void close_sf(void *sf) {
    lt_safetensors_close(sf);
}

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
    lt_model *sf_owner = NULL; /* lazy: the model that closes sf */
    lt_model *m = NULL;
    const int lazy = opts && opts->lazy;
    /* Pass 0 checks every tensor against the config without any weights; only then pass 1
     * allocates and converts, so a config.json that lies about the sizes cannot make us
     * allocate more than the files back. A lazy model stops after pass 0, keeping the files. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && (LT_CONFIG_ONLY(opts) || lazy)) break;
        lt_model_free(m);
        m = NULL;
        if ((st = lt_model_alloc(&c, pass == 0, &m))) {
            lt_safetensors_close(sf);
            return lt_error_wrap(st, dir);
        }
        if (lazy) {
            st = lt_model_source_attach(m, sf, close_sf, 0);
            sf_owner = m;
            if (st) goto fail;
        }
        if ((st = lt_model_take_named(m, dir, &HF_NAMES, sf))) goto fail;
    }
    if ((st = lt_model_check_unused(m, dir, &HF_NAMES, sf))) goto fail;
    for (size_t i = 0; i < lt_safetensors_count(sf); i++) {
        const lt_tensor_view *t = lt_safetensors_tensor(sf, i);
        if ((unsigned)t->dtype >= LT_DTYPE_COUNT) continue;
        m->n_stored_tensors++;
        m->stored_dtype_tensors[t->dtype]++;
        m->stored_dtype_params[t->dtype] += lt_tensor_numel(t);
    }
    if (!sf_owner) lt_safetensors_close(sf);
    m->format = LT_MODEL_FORMAT_HF;
    m->file_bytes = folder_safetensors_bytes(dir);
    *out = m;
    return LT_OK;
fail:
    if (!sf_owner) lt_safetensors_close(sf);
    lt_model_free(m);
    return st;
}
