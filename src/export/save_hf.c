/* save_hf.c - lt_model_save_hf: a model as a Hugging Face folder (config.json,
 * generation_config.json, model.safetensors, tokenizer files) that transformers' AutoModel /
 * AutoTokenizer and mlx-lm load.
 *
 * Tensor names are transformers' LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM
 * ones (the same table load_hf.c reads); lt_model is already in HF layout (q/k half-split
 * rotary order), so weights are written as they are, converted to the asked dtype with round
 * to nearest even. A tied lm_head is not written (transformers ties it from
 * tie_word_embeddings). A llama model with q/k/v biases needs attention_bias = true, which in
 * transformers also gives o_proj a bias: a zero one is written.
 *
 * Whole or marked: the files are written one by one (each atomically) between
 * lt_output_begin and lt_output_end, so a folder left by a failure (disk full, a kill) holds
 * DIR/.loratune.incomplete and every reader refuses it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "export_internal.h"
#include "loratune/quant.h"
#include "loratune/safetensors.h"

lt_status lt_export_write_json(const char *path, const json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    if (!s) return lt_error(LT_ERR_NOMEM, "%s: cannot serialise JSON", path);
    size_t n = strlen(s);
    char *t = lt_realloc(s, n + 2);
    if (!t) {
        free(s);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    t[n] = '\n';
    t[n + 1] = 0;
    lt_status st = lt_file_write_atomic(path, t, n + 1);
    free(t);
    return st;
}

double lt_export_float(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

static const char *hf_class(lt_arch a) {
    switch (a) {
    case LT_ARCH_MISTRAL:
        return "MistralForCausalLM";
    case LT_ARCH_QWEN2:
        return "Qwen2ForCausalLM";
    default:
        return "LlamaForCausalLM";
    }
}

static const char *torch_dtype_name(lt_dtype t) {
    return t == LT_DTYPE_BF16 ? "bfloat16" : t == LT_DTYPE_F16 ? "float16" : "float32";
}

static json_t *eos_json(const lt_model_config *c) {
    if (c->n_eos_ids <= 1) return c->eos_id >= 0 ? json_integer(c->eos_id) : json_null();
    json_t *a = json_array();
    int n = c->n_eos_ids < 8 ? c->n_eos_ids : 8;
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(c->eos_ids[i]));
    return a;
}

static json_t *config_json(const lt_model_config *c, lt_dtype dtype) {
    json_t *j = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string(hf_class(c->arch)));
    json_object_set_new(j, "architectures", arch);
    json_object_set_new(j, "model_type", json_string(lt_arch_name(c->arch)));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->ffn_dim));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(j, "rms_norm_eps", json_real(lt_export_float(c->norm_eps)));
    json_object_set_new(j, "rope_theta", json_real(lt_export_float(c->rope_theta)));
    const lt_rope_scaling *r = &c->rope_scaling;
    if (r->type == LT_ROPE_SCALING_NONE) {
        json_object_set_new(j, "rope_scaling", json_null());
    } else {
        json_t *rs = json_object();
        int l3 = r->type == LT_ROPE_SCALING_LLAMA3;
        json_object_set_new(rs, "rope_type", json_string(l3 ? "llama3" : "linear"));
        json_object_set_new(rs, "factor", json_real(lt_export_float(r->factor)));
        if (l3) {
            json_object_set_new(rs, "low_freq_factor",
                                json_real(lt_export_float(r->low_freq_factor)));
            json_object_set_new(rs, "high_freq_factor",
                                json_real(lt_export_float(r->high_freq_factor)));
            json_object_set_new(rs, "original_max_position_embeddings",
                                json_integer(r->original_max_position_embeddings));
        }
        json_object_set_new(j, "rope_scaling", rs);
    }
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(j, "bos_token_id", c->bos_id >= 0 ? json_integer(c->bos_id) : json_null());
    json_object_set_new(j, "eos_token_id", eos_json(c));
    if (c->arch == LT_ARCH_LLAMA) {
        json_object_set_new(j, "attention_bias", json_boolean(c->qkv_bias));
        json_object_set_new(j, "mlp_bias", json_false());
        json_object_set_new(j, "pretraining_tp", json_integer(1));
    }
    if (c->arch == LT_ARCH_MISTRAL)
        json_object_set_new(j, "sliding_window",
                            c->sliding_window ? json_integer(c->sliding_window) : json_null());
    if (c->arch == LT_ARCH_QWEN2) {
        json_object_set_new(j, "use_sliding_window", json_boolean(c->sliding_window > 0));
        json_object_set_new(j, "sliding_window",
                            c->sliding_window ? json_integer(c->sliding_window) : json_null());
        json_object_set_new(j, "max_window_layers", json_integer(c->n_layers));
    }
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "torch_dtype", json_string(torch_dtype_name(dtype)));
    json_object_set_new(j, "dtype", json_string(torch_dtype_name(dtype)));
    json_object_set_new(j, "use_cache", json_true());
    return j;
}

static json_t *generation_config_json(const lt_model_config *c) {
    json_t *j = json_object();
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", eos_json(c));
    return j;
}

/* Tensors to write: name, shape and the fp32 source. */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    const float *src;
} tensor_ref;

static int collect(const lt_model *m, tensor_ref *t, const float *zeros) {
    const lt_model_config *c = &m->config;
    const lt_model_weights *w = &m->w;
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int n = 0;
#define ADD(nm, nd, a, b, p)                                                                       \
    do {                                                                                           \
        snprintf(t[n].name, sizeof t[n].name, "%s", (nm));                                         \
        t[n].ndim = (nd), t[n].shape[0] = (a), t[n].shape[1] = (b), t[n].src = (p);                \
        n++;                                                                                       \
    } while (0)
    char nm[96];
    ADD("model.embed_tokens.weight", 2, V, D, w->tok_embd);
    for (int64_t l = 0; l < c->n_layers; l++) {
#define LAYER(suffix, nd, a, b, p)                                                                 \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, (suffix));                   \
        ADD(nm, nd, a, b, p);                                                                      \
    } while (0)
        LAYER("input_layernorm.weight", 1, D, 0, w->attn_norm + l * D);
        LAYER("self_attn.q_proj.weight", 2, QD, D, w->wq + l * QD * D);
        LAYER("self_attn.k_proj.weight", 2, KD, D, w->wk + l * KD * D);
        LAYER("self_attn.v_proj.weight", 2, KD, D, w->wv + l * KD * D);
        if (c->qkv_bias) {
            LAYER("self_attn.q_proj.bias", 1, QD, 0, w->bq + l * QD);
            LAYER("self_attn.k_proj.bias", 1, KD, 0, w->bk + l * KD);
            LAYER("self_attn.v_proj.bias", 1, KD, 0, w->bv + l * KD);
            if (c->arch == LT_ARCH_LLAMA) LAYER("self_attn.o_proj.bias", 1, D, 0, zeros);
        }
        LAYER("self_attn.o_proj.weight", 2, D, QD, w->wo + l * D * QD);
        LAYER("post_attention_layernorm.weight", 1, D, 0, w->ffn_norm + l * D);
        LAYER("mlp.gate_proj.weight", 2, F, D, w->w_gate + l * F * D);
        LAYER("mlp.up_proj.weight", 2, F, D, w->w_up + l * F * D);
        LAYER("mlp.down_proj.weight", 2, D, F, w->w_down + l * D * F);
#undef LAYER
    }
    ADD("model.norm.weight", 1, D, 0, w->out_norm);
    if (!c->tied_embeddings) ADD("lm_head.weight", 2, V, D, w->lm_head);
#undef ADD
    return n;
}

static lt_status write_weights(const lt_model *m, const char *path, lt_dtype dtype) {
    const lt_model_config *c = &m->config;
    int cap = 3 + c->n_layers * 13;
    tensor_ref *t = lt_calloc((size_t)cap, sizeof *t);
    float *zeros = lt_calloc((size_t)c->dim, sizeof(float));
    lt_st_writer *w = NULL;
    uint16_t *half = NULL;
    lt_status st = LT_OK;
    if (!t || !zeros) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    int n = collect(m, t, zeros);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
    if (dtype != LT_DTYPE_F32) {
        half = lt_malloc(sizeof(uint16_t) * (size_t)total);
        if (!half) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory for %lld 16-bit values", path,
                          (long long)total);
            goto done;
        }
    }
    if ((st = lt_st_writer_create(&w))) goto done;
    if ((st = lt_st_writer_set_metadata(w, "format", "pt"))) goto done;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t ne = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        const void *data = t[i].src;
        size_t nb = sizeof(float) * (size_t)ne;
        char where[4400];
        snprintf(where, sizeof where, "%s: tensor %s", path, t[i].name);
        int64_t cols = t[i].ndim == 2 ? t[i].shape[1] : 0;
        /* nothing non-finite is written: the source (a merge gone wrong: huge alpha, NaN
         * adapter) and, below, the 16-bit values (past f16's range is inf) */
        if ((st = lt_check_finite(LT_DTYPE_F32, t[i].src, ne, cols, where,
                                  "refusing to write it (was the adapter or its alpha "
                                  "broken?)")))
            goto done;
        if (half) {
            uint16_t *h = half + off;
            for (int64_t k = 0; k < ne; k++)
                h[k] = dtype == LT_DTYPE_BF16 ? lt_f32_to_bf16(t[i].src[k])
                                              : lt_f32_to_f16(t[i].src[k]);
            data = h;
            nb = sizeof(uint16_t) * (size_t)ne;
            off += ne;
            if ((st = lt_check_finite(dtype, h, ne, cols, where,
                                      "outside the range of the 16-bit type; refusing to write "
                                      "it (export as f32)")))
                goto done;
        }
        if ((st = lt_st_writer_add(w, t[i].name, dtype, t[i].ndim, t[i].shape, data, nb)))
            goto done;
    }
    st = lt_st_writer_write(w, path);
done:
    lt_st_writer_free(w);
    free(half);
    free(zeros);
    free(t);
    return st;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static lt_status copy_file(const char *from, const char *to) {
    lt_mapped_file mf;
    lt_status st = lt_file_map(from, &mf);
    if (st) return st;
    st = lt_file_write_atomic(to, mf.data ? (const void *)mf.data : "", mf.size);
    lt_file_unmap(&mf);
    return st;
}

/* The tokenizer files of an HF source folder that transformers reads. */
static const char *const TOKENIZER_FILES[] = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
};

/* Every file lt_model_save_hf may write into its folder (keep in step with the writer and
 * TOKENIZER_FILES): lt_export_lock removes their killed writes' temp files when it takes the
 * folder. */
const char *const lt_export_hf_names[] = {
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    LT_INCOMPLETE_NAME,
    NULL,
};

lt_status lt_model_save_hf(const lt_model *m, const char *src_model_path, const char *dir,
                           lt_dtype dtype) {
    if (!m || !dir) return lt_error(LT_ERR_ARG, "lt_model_save_hf: model and folder are required");
    if (dtype != LT_DTYPE_F32 && dtype != LT_DTYPE_BF16 && dtype != LT_DTYPE_F16)
        return lt_error(LT_ERR_ARG,
                        "%s: dtype %s is not supported for a Hugging Face folder "
                        "(expected f32, bf16 or f16)",
                        dir, lt_dtype_name(dtype));
    lt_status st = lt_model_check_weights(m, "lt_model_save_hf");
    if (st) return st;
    const lt_model_config *c = &m->config;
    if (c->arch == LT_ARCH_QWEN2 && !c->qkv_bias)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: a qwen2 model without q/k/v biases cannot be "
                        "written as Qwen2ForCausalLM",
                        dir);
    if (m->inv_freq) { /* a GGUF's rope_freqs tensor has no config.json form */
        int half = c->head_dim / 2;
        float *ref = lt_malloc(sizeof(float) * (size_t)half);
        if (!ref) return lt_error(LT_ERR_NOMEM, "out of memory");
        lt_rope_inv_freq(c, ref);
        int differ = 0;
        for (int i = 0; i < half; i++)
            if (fabsf(ref[i] - m->inv_freq[i]) > 1e-6f * ref[i]) differ = 1;
        free(ref);
        if (differ)
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: the model's rotary frequencies (a GGUF "
                            "rope_freqs tensor) have no config.json form; export from the "
                            "model's Hugging Face folder instead",
                            dir);
    }
    /* check the tokenizer source before writing anything */
    lt_gguf *g = NULL;
    lt_dir_lock *lock = NULL;
    int src_dir = src_model_path && lt_path_is_dir(src_model_path);
    if (src_model_path && !src_dir && ends_with(src_model_path, ".gguf")) {
        if ((st = lt_gguf_open(src_model_path, &g))) return st;
        if ((st = lt_export_check_gguf_vocab(g))) goto done;
    }
    if ((st = lt_export_lock(dir, 0, &lock))) goto done; /* creates dir */
    if ((st = lt_mkdir_p(dir, 0777, NULL))) goto done;
    /* whole or marked: readers refuse the folder until the last file is in place */
    if ((st = lt_output_begin(dir, "a Hugging Face model"))) goto done;
    char p[4096], q[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if ((st = write_weights(m, p, dtype))) goto done;
    json_t *cj = config_json(c, dtype);
    snprintf(p, sizeof p, "%s/config.json", dir);
    st = lt_export_write_json(p, cj);
    json_decref(cj);
    if (st) goto done;
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    snprintf(q, sizeof q, "%s/generation_config.json", src_dir ? src_model_path : "");
    if (src_dir && lt_path_exists(q)) {
        st = copy_file(q, p);
    } else {
        json_t *gj = generation_config_json(c);
        st = lt_export_write_json(p, gj);
        json_decref(gj);
    }
    if (st) goto done;
    if (src_dir) {
        for (size_t i = 0; i < sizeof TOKENIZER_FILES / sizeof *TOKENIZER_FILES; i++) {
            snprintf(q, sizeof q, "%s/%s", src_model_path, TOKENIZER_FILES[i]);
            if (!lt_path_exists(q)) continue;
            snprintf(p, sizeof p, "%s/%s", dir, TOKENIZER_FILES[i]);
            if ((st = copy_file(q, p))) goto done;
        }
    } else if (g) {
        st = lt_export_hf_tokenizer_from_gguf(g, dir, c->max_seq_len);
    }
    if (st == LT_OK) st = lt_output_end(dir);
done:
    lt_gguf_close(g);
    lt_dir_lock_close(lock);
    return st;
}
