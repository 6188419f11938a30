/* config.c - lt_model_config: reading a Hugging Face config.json, validation, rotary
 * frequencies, parameter counts.
 *
 * Invariants of a validated config (the forward relies on them): every size positive and
 * bounded (so products fit in int64 and a lying file cannot make us allocate absurdly),
 * n_kv_heads divides n_heads, head_dim even, norm_eps > 0, rope_theta > 0. */
#include "loratune/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "core/json_file.h"

const char *lt_arch_name(lt_arch a) {
    switch (a) {
    case LT_ARCH_LLAMA:
        return "llama";
    case LT_ARCH_MISTRAL:
        return "mistral";
    case LT_ARCH_QWEN2:
        return "qwen2";
    }
    return "?";
}

lt_status lt_model_config_validate(const lt_model_config *c, const char *what) {
#define RANGE(field, name, lo, hi)                                                                 \
    if ((int64_t)(field) < (lo) || (int64_t)(field) > (hi))                                        \
        return lt_error(LT_ERR_FORMAT, "%s: %s = %lld: expected an integer in [%lld, %lld]", what, \
                        name, (long long)(field), (long long)(lo), (long long)(hi));
    RANGE(c->dim, "hidden_size", 1, LT_MAX_DIM);
    RANGE(c->n_layers, "num_hidden_layers", 1, LT_MAX_LAYERS);
    RANGE(c->n_heads, "num_attention_heads", 1, LT_MAX_HEADS);
    RANGE(c->n_kv_heads, "num_key_value_heads", 1, LT_MAX_HEADS);
    RANGE(c->head_dim, "head_dim", 2, LT_MAX_DIM);
    RANGE(c->ffn_dim, "intermediate_size", 1, LT_MAX_FFN);
    RANGE(c->vocab_size, "vocab_size", 1, LT_MAX_VOCAB);
    RANGE(c->max_seq_len, "max_position_embeddings", 1, LT_MAX_SEQ);
#undef RANGE
    if (c->n_heads % c->n_kv_heads != 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: num_key_value_heads = %d must divide num_attention_heads = %d", what,
                        c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2 != 0)
        return lt_error(LT_ERR_FORMAT, "%s: head_dim = %d: expected an even number (rotary pairs)",
                        what, c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > LT_MAX_DIM * 4)
        return lt_error(LT_ERR_FORMAT, "%s: num_attention_heads * head_dim = %lld is too large",
                        what, (long long)c->n_heads * c->head_dim);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return lt_error(LT_ERR_FORMAT, "%s: rms_norm_eps = %g: expected a positive number", what,
                        (double)c->norm_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return lt_error(LT_ERR_FORMAT, "%s: rope_theta = %g: expected a positive number", what,
                        (double)c->rope_theta);
    const lt_rope_scaling *r = &c->rope_scaling;
    if (r->type != LT_ROPE_SCALING_NONE && (!(r->factor > 0.0f) || !isfinite(r->factor)))
        return lt_error(LT_ERR_FORMAT, "%s: rope_scaling.factor = %g: expected a positive number",
                        what, (double)r->factor);
    if (r->type == LT_ROPE_SCALING_LLAMA3) {
        if (!(r->low_freq_factor > 0.0f) || !(r->high_freq_factor > r->low_freq_factor))
            return lt_error(
                LT_ERR_FORMAT,
                "%s: rope_scaling: expected 0 < low_freq_factor (%g) < high_freq_factor (%g)", what,
                (double)r->low_freq_factor, (double)r->high_freq_factor);
        if (r->original_max_position_embeddings < 1)
            return lt_error(LT_ERR_FORMAT,
                            "%s: rope_scaling.original_max_position_embeddings = %d: expected a "
                            "positive integer",
                            what, r->original_max_position_embeddings);
    }
    if (c->sliding_window < 0)
        return lt_error(LT_ERR_FORMAT, "%s: sliding_window = %d: expected >= 0", what,
                        c->sliding_window);
    if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        return lt_error(LT_ERR_FORMAT,
                        "%s: bos_token_id %d / eos_token_id %d outside vocab_size %d", what,
                        c->bos_id, c->eos_id, c->vocab_size);
    for (int i = 0; i < c->n_eos_ids && i < 8; i++) /* every id of a list, not only the first */
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            return lt_error(LT_ERR_FORMAT,
                            "%s: eos_token_id[%d] = %d is outside the vocabulary (vocab_size "
                            "%d): expected ids 0..%d",
                            what, i, c->eos_ids[i], c->vocab_size, c->vocab_size - 1);
    return LT_OK;
}

int64_t lt_model_config_n_params(const lt_model_config *c) {
    int64_t D = c->dim, L = c->n_layers, F = c->ffn_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = 2 * D + QD * D + 2 * KD * D + D * QD + 3 * F * D;
    if (c->qkv_bias) per_layer += QD + 2 * KD;
    return V * D + L * per_layer + D + (c->tied_embeddings ? 0 : V * D);
}

void lt_rope_inv_freq(const lt_model_config *c, float *inv_freq) {
    int hd = c->head_dim;
    const lt_rope_scaling *r = &c->rope_scaling;
    for (int i = 0; i < hd / 2; i++) {
        /* transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), float32 */
        float expo = (float)(2 * i) / (float)hd;
        float f = (float)(1.0 / pow((double)c->rope_theta, (double)expo));
        if (r->type == LT_ROPE_SCALING_LINEAR) {
            f = f / r->factor;
        } else if (r->type == LT_ROPE_SCALING_LLAMA3) {
            /* _compute_llama3_parameters: long wavelengths are divided by factor, short kept,
             * the band between blended by smooth_factor. Evaluated in float32 like torch. */
            float old_ctx = (float)r->original_max_position_embeddings;
            float low_wl = old_ctx / r->low_freq_factor;
            float high_wl = old_ctx / r->high_freq_factor;
            float wavelen = (float)(2.0 * 3.141592653589793) / f;
            float scaled = wavelen > low_wl ? f / r->factor : f;
            float smooth = (old_ctx / wavelen - r->low_freq_factor) /
                           (r->high_freq_factor - r->low_freq_factor);
            float smoothed = (1.0f - smooth) * scaled / r->factor + smooth * scaled;
            int medium = !(wavelen < high_wl) && !(wavelen > low_wl);
            f = medium ? smoothed : scaled;
        }
        inv_freq[i] = f;
    }
}

/* ---- config.json ---------------------------------------------------------------------- */

/* Reads an integer field; absent/null -> *out = def (or error when def_ok is 0). */
static lt_status get_int(const char *path, json_t *root, const char *key, int def_ok, int def,
                         int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (def_ok) {
            *out = def;
            return LT_OK;
        }
        return lt_error(LT_ERR_FORMAT, "%s: missing field \"%s\" (expected an integer)", path, key);
    }
    if (!json_is_integer(v))
        return lt_error(LT_ERR_FORMAT, "%s: %s: expected an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x < -1 || x > 0x7fffffff)
        return lt_error(LT_ERR_FORMAT, "%s: %s = %lld: out of range", path, key, (long long)x);
    *out = (int)x;
    return LT_OK;
}

static lt_status get_num(const char *path, json_t *obj, const char *objname, const char *key,
                         int def_ok, double def, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (def_ok) {
            *out = def;
            return LT_OK;
        }
        return lt_error(LT_ERR_FORMAT, "%s: missing field \"%s%s\" (expected a number)", path,
                        objname, key);
    }
    if (!json_is_number(v))
        return lt_error(LT_ERR_FORMAT, "%s: %s%s: expected a number", path, objname, key);
    *out = json_number_value(v);
    return LT_OK;
}

static lt_status get_bool(const char *path, json_t *root, const char *key, int def, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LT_OK;
    }
    if (!json_is_boolean(v))
        return lt_error(LT_ERR_FORMAT, "%s: %s: expected true or false", path, key);
    *out = json_is_true(v);
    return LT_OK;
}

static lt_status parse_rope_scaling(const char *path, json_t *rs, lt_rope_scaling *out) {
    memset(out, 0, sizeof *out);
    if (!rs || json_is_null(rs)) return LT_OK;
    if (!json_is_object(rs))
        return lt_error(LT_ERR_FORMAT, "%s: rope_scaling: expected an object or null", path);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!t || !json_is_string(t))
        return lt_error(LT_ERR_FORMAT, "%s: rope_scaling.rope_type: expected a string", path);
    const char *type = json_string_value(t);
    lt_status st;
    double x = 0;
    if (!strcmp(type, "default")) return LT_OK;
    if (!strcmp(type, "linear")) {
        out->type = LT_ROPE_SCALING_LINEAR;
        if ((st = get_num(path, rs, "rope_scaling.", "factor", 0, 0, &x))) return st;
        out->factor = (float)x;
        return LT_OK;
    }
    if (!strcmp(type, "llama3")) {
        out->type = LT_ROPE_SCALING_LLAMA3;
        if ((st = get_num(path, rs, "rope_scaling.", "factor", 0, 0, &x))) return st;
        out->factor = (float)x;
        if ((st = get_num(path, rs, "rope_scaling.", "low_freq_factor", 0, 0, &x))) return st;
        out->low_freq_factor = (float)x;
        if ((st = get_num(path, rs, "rope_scaling.", "high_freq_factor", 0, 0, &x))) return st;
        out->high_freq_factor = (float)x;
        json_t *o = json_object_get(rs, "original_max_position_embeddings");
        if (!o || !json_is_integer(o) || json_integer_value(o) < 1 ||
            json_integer_value(o) > LT_MAX_SEQ)
            return lt_error(
                LT_ERR_FORMAT,
                "%s: rope_scaling.original_max_position_embeddings: expected a positive integer",
                path);
        out->original_max_position_embeddings = (int)json_integer_value(o);
        return LT_OK;
    }
    return lt_error(
        LT_ERR_UNSUPPORTED,
        "%s: rope_scaling.rope_type = \"%s\" is not supported (expected default, linear or llama3)",
        path, type);
}

static lt_status config_from_json(const char *path, json_t *root, lt_model_config *c) {
    lt_status st;
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return lt_error(LT_ERR_FORMAT, "%s: expected a JSON object", path);
    json_t *mt = json_object_get(root, "model_type");
    if (!mt || !json_is_string(mt))
        return lt_error(LT_ERR_FORMAT, "%s: missing field \"model_type\" (expected a string)",
                        path);
    const char *type = json_string_value(mt);
    if (!strcmp(type, "llama"))
        c->arch = LT_ARCH_LLAMA;
    else if (!strcmp(type, "mistral"))
        c->arch = LT_ARCH_MISTRAL;
    else if (!strcmp(type, "qwen2"))
        c->arch = LT_ARCH_QWEN2;
    else
        return lt_error(
            LT_ERR_UNSUPPORTED,
            "%s: model_type = \"%s\" is not supported (expected llama, mistral or qwen2)", path,
            type);

    if ((st = get_int(path, root, "hidden_size", 0, 0, &c->dim))) return st;
    if ((st = get_int(path, root, "intermediate_size", 0, 0, &c->ffn_dim))) return st;
    if ((st = get_int(path, root, "num_hidden_layers", 0, 0, &c->n_layers))) return st;
    if ((st = get_int(path, root, "num_attention_heads", 0, 0, &c->n_heads))) return st;
    if ((st = get_int(path, root, "num_key_value_heads", 1, c->n_heads, &c->n_kv_heads))) return st;
    if ((st = get_int(path, root, "vocab_size", 0, 0, &c->vocab_size))) return st;
    if ((st = get_int(path, root, "max_position_embeddings", 1, 2048, &c->max_seq_len))) return st;
    if (c->n_heads < 1)
        return lt_error(LT_ERR_FORMAT, "%s: num_attention_heads = %d: expected a positive integer",
                        path, c->n_heads);
    if ((st = get_int(path, root, "head_dim", 1, 0, &c->head_dim))) return st;
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads != 0)
            return lt_error(
                LT_ERR_FORMAT,
                "%s: num_attention_heads = %d must divide hidden_size = %d (no head_dim given)",
                path, c->n_heads, c->dim);
        c->head_dim = c->dim / c->n_heads;
    }
    double x = 0;
    if ((st = get_num(path, root, "", "rms_norm_eps", 1, 1e-6, &x))) return st;
    c->norm_eps = (float)x;
    /* transformers >= 5 writes rope_theta and the scaling into one "rope_parameters" object */
    json_t *rp = json_object_get(root, "rope_parameters");
    if (rp && json_is_object(rp) && !json_object_get(root, "rope_theta")) {
        if ((st = get_num(path, rp, "rope_parameters.", "rope_theta", 1, 10000.0, &x))) return st;
        c->rope_theta = (float)x;
        if ((st = parse_rope_scaling(path, rp, &c->rope_scaling))) return st;
    } else {
        if ((st = get_num(path, root, "", "rope_theta", 1, 10000.0, &x))) return st;
        c->rope_theta = (float)x;
        if ((st =
                 parse_rope_scaling(path, json_object_get(root, "rope_scaling"), &c->rope_scaling)))
            return st;
    }
    json_t *prf = json_object_get(root, "partial_rotary_factor");
    if (prf && !json_is_null(prf) && (!json_is_number(prf) || json_number_value(prf) != 1.0))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: partial_rotary_factor != 1 is not supported",
                        path);

    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act))
            return lt_error(LT_ERR_FORMAT, "%s: hidden_act: expected a string", path);
        if (strcmp(json_string_value(act), "silu") != 0)
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: hidden_act = \"%s\": only \"silu\" is supported", path,
                            json_string_value(act));
    }
    int b;
    if ((st = get_bool(path, root, "mlp_bias", 0, &b))) return st;
    if (b) return lt_error(LT_ERR_UNSUPPORTED, "%s: mlp_bias = true is not supported", path);
    /* All three transformers classes default tie_word_embeddings to False. */
    if ((st = get_bool(path, root, "tie_word_embeddings", 0, &c->tied_embeddings))) return st;
    if (c->arch == LT_ARCH_QWEN2) {
        c->qkv_bias = 1;
    } else if (c->arch == LT_ARCH_LLAMA) {
        if ((st = get_bool(path, root, "attention_bias", 0, &c->qkv_bias))) return st;
    }

    /* Sliding window: mistral applies it whenever set; qwen2 only with use_sliding_window. */
    c->sliding_window = 0;
    if (c->arch == LT_ARCH_MISTRAL) {
        if ((st = get_int(path, root, "sliding_window", 1, 0, &c->sliding_window))) return st;
    } else if (c->arch == LT_ARCH_QWEN2) {
        int use;
        if ((st = get_bool(path, root, "use_sliding_window", 0, &use))) return st;
        if (use)
            return lt_error(LT_ERR_UNSUPPORTED, "%s: use_sliding_window = true is not supported",
                            path);
    }
    if (c->sliding_window >= c->max_seq_len) c->sliding_window = 0;

    if ((st = get_int(path, root, "bos_token_id", 1, -1, &c->bos_id))) return st;
    json_t *eos = json_object_get(root, "eos_token_id");
    c->eos_id = -1;
    if (eos && json_is_array(eos)) {
        size_t n = json_array_size(eos);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(eos, i);
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) > 0x7fffffff)
                return lt_error(LT_ERR_FORMAT,
                                "%s: eos_token_id[%zu]: expected a non-negative integer", path, i);
            if (c->n_eos_ids < 8) c->eos_ids[c->n_eos_ids] = (int)json_integer_value(e);
            if (i == 0) c->eos_id = (int)json_integer_value(e);
            c->n_eos_ids++;
        }
    } else {
        if ((st = get_int(path, root, "eos_token_id", 1, -1, &c->eos_id))) return st;
        if (c->eos_id >= 0) {
            c->n_eos_ids = 1;
            c->eos_ids[0] = c->eos_id;
        }
    }

    /* the checkpoint's dtype: older transformers write torch_dtype, newer ones dtype */
    c->dtype = LT_DTYPE_F32;
    const char *dkey = "torch_dtype";
    json_t *dt = json_object_get(root, dkey);
    if (!dt || json_is_null(dt)) dt = json_object_get(root, dkey = "dtype");
    if (dt && !json_is_null(dt)) {
        const char *s = json_is_string(dt) ? json_string_value(dt) : NULL;
        if (s && !strcmp(s, "float16"))
            c->dtype = LT_DTYPE_F16;
        else if (s && !strcmp(s, "bfloat16"))
            c->dtype = LT_DTYPE_BF16;
        else if (s && !strcmp(s, "float32"))
            c->dtype = LT_DTYPE_F32;
        else if (s)
            return lt_error(LT_ERR_FORMAT, "%s: %s = \"%s\": expected float32, float16 or bfloat16",
                            path, dkey, s);
        else
            return lt_error(LT_ERR_FORMAT,
                            "%s: %s: expected a string (float32, float16 or bfloat16)", path, dkey);
        c->dtype_stated = 1;
    }
    return lt_model_config_validate(c, path);
}

lt_status lt_model_config_load_hf(const char *config_json_path, lt_model_config *out) {
    json_t *root = NULL;
    lt_status st = lt_json_load_file(config_json_path, JSON_REJECT_DUPLICATES, &root);
    if (st) return st;
    st = config_from_json(config_json_path, root, out);
    json_decref(root);
    return st;
}
