/* adapter_peft.c - Hugging Face PEFT adapter folders: adapter_config.json +
 * adapter_model.safetensors, as PeftModel.save_pretrained writes them (PEFT 0.17).
 *
 * Tensor names: base_model.model.model.layers.<l>.<self_attn|mlp>.<x>_proj.lora_A.weight [r][in],
 * ...lora_B.weight [out][r], ...lora_magnitude_vector [out] (DoRA). The config keys we write
 * are PEFT's full LoraConfig set (so PEFT reads them without warnings); the ones we read are
 * peft_type, r, lora_alpha, use_rslora, use_dora, lora_dropout, target_modules,
 * layers_to_transform, base_model_name_or_path, and those that would change the math
 * (rank_pattern, alpha_pattern, fan_in_fan_out, bias, lora_bias, modules_to_save) are refused
 * when set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"
#include "loratune/safetensors.h"

#define PEFT_PREFIX "base_model.model.model.layers."

static json_t *num(float v) {
    return v == (float)(long long)v && v < 1e15f && v > -1e15f ? json_integer((long long)v)
                                                               : json_real(v);
}

lt_status lt_adapter_save_peft(const lt_adapter *a, const char *dir) {
    lt_status st = lt_adapter_check_regular_(a, dir);
    if (st) return st;
    if ((st = lt_adapter_check_finite_(a, dir, "refusing to write it"))) return st;
    if ((st = lt_adapter_mkdir_(dir))) return st;
    json_t *c = json_object();
    json_t *tm = json_array();
    for (int t = 0; t < LT_N_TARGETS; t++)
        if ((a->targets >> t) & 1) json_array_append_new(tm, json_string(lt_target_name(t)));
    json_t *layers = json_null();
    if (a->layer_begin != 0 || a->layer_end != a->n_layers) {
        layers = json_array();
        for (int l = a->layer_begin; l < a->layer_end; l++)
            json_array_append_new(layers, json_integer(l));
    }
    json_object_set_new(c, "alpha_pattern", json_object());
    json_object_set_new(c, "auto_mapping", json_null());
    json_object_set_new(c, "base_model_name_or_path",
                        a->base_model[0] ? json_string(a->base_model) : json_null());
    json_object_set_new(c, "bias", json_string("none"));
    json_object_set_new(c, "corda_config", json_null());
    json_object_set_new(c, "eva_config", json_null());
    json_object_set_new(c, "exclude_modules", json_null());
    json_object_set_new(c, "fan_in_fan_out", json_false());
    json_object_set_new(c, "inference_mode", json_true());
    json_object_set_new(c, "init_lora_weights", json_true());
    json_object_set_new(c, "layer_replication", json_null());
    json_object_set_new(c, "layers_pattern", json_null());
    json_object_set_new(c, "layers_to_transform", layers);
    json_object_set_new(c, "loftq_config", json_object());
    json_object_set_new(c, "lora_alpha", num(a->alpha));
    json_object_set_new(c, "lora_bias", json_false());
    json_object_set_new(c, "lora_dropout", json_real(a->dropout));
    json_object_set_new(c, "megatron_config", json_null());
    json_object_set_new(c, "megatron_core", json_string("megatron.core"));
    json_object_set_new(c, "modules_to_save", json_null());
    json_object_set_new(c, "peft_type", json_string("LORA"));
    json_object_set_new(c, "qalora_group_size", json_integer(16));
    json_object_set_new(c, "r", json_integer(a->r));
    json_object_set_new(c, "rank_pattern", json_object());
    json_object_set_new(c, "revision", json_null());
    json_object_set_new(c, "target_modules", tm);
    json_object_set_new(c, "target_parameters", json_null());
    json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(c, "trainable_token_indices", json_null());
    json_object_set_new(c, "use_dora", json_boolean(a->method == LT_METHOD_DORA));
    json_object_set_new(c, "use_qalora", json_false());
    json_object_set_new(c, "use_rslora", json_boolean(a->rslora));

    lt_st_writer *w = NULL;
    char path[4096], name[256];
    if ((st = lt_st_writer_create(&w))) goto done;
    if ((st = lt_st_writer_set_metadata(w, "format", "pt"))) goto done;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            int64_t sa[2] = {a->r, L->in}, sb[2] = {L->out, a->r}, sm[1] = {L->out};
            snprintf(name, sizeof name, PEFT_PREFIX "%d.%s.lora_A.weight", l,
                     lt_adapter_module_(t));
            if ((st = lt_st_writer_add(w, name, LT_DTYPE_F32, 2, sa, L->A,
                                       sizeof(float) * (size_t)(sa[0] * sa[1]))))
                goto done;
            snprintf(name, sizeof name, PEFT_PREFIX "%d.%s.lora_B.weight", l,
                     lt_adapter_module_(t));
            if ((st = lt_st_writer_add(w, name, LT_DTYPE_F32, 2, sb, L->B,
                                       sizeof(float) * (size_t)(sb[0] * sb[1]))))
                goto done;
            if (L->mag) {
                snprintf(name, sizeof name, PEFT_PREFIX "%d.%s.lora_magnitude_vector", l,
                         lt_adapter_module_(t));
                if ((st = lt_st_writer_add(w, name, LT_DTYPE_F32, 1, sm, L->mag,
                                           sizeof(float) * (size_t)L->out)))
                    goto done;
            }
        }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((st = lt_st_writer_write(w, path))) goto done;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    st = lt_adapter_write_json_(c, path);
done:
    lt_st_writer_free(w);
    json_decref(c);
    return st;
}

/* ---- reader ---------------------------------------------------------------------------- */

/* target index of a PEFT target_modules entry ("q_proj" or "self_attn.q_proj"), -1 if none */
static int target_of(const char *s) {
    for (int t = 0; t < LT_N_TARGETS; t++)
        if (!strcmp(s, lt_target_name(t)) || !strcmp(s, lt_adapter_module_(t))) return t;
    return -1;
}

static int is_set(json_t *v) { /* a key that would change the math when present */
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (json_is_object(v)) return json_object_size(v) > 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    if (json_is_string(v)) return strcmp(json_string_value(v), "none") != 0;
    return 1;
}

lt_status lt_adapter_load_peft_(const char *dir, json_t *cfg, const char *cp,
                                const lt_model_config *mc, lt_adapter **out) {
    *out = NULL;
    json_t *v = json_object_get(cfg, "peft_type");
    if (!json_is_string(v)) return lt_error(LT_ERR_FORMAT, "%s: peft_type: expected a string", cp);
    if (strcmp(json_string_value(v), "LORA"))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: peft_type '%s': only LORA adapters are supported",
                        cp, json_string_value(v));
    static const char *refused[] = {
        "rank_pattern", "alpha_pattern",   "fan_in_fan_out",    "bias",
        "lora_bias",    "modules_to_save", "layer_replication", "trainable_token_indices"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (is_set(json_object_get(cfg, refused[i])))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: %s is set: not supported (loratune reads "
                            "plain LoRA / DoRA adapters)",
                            cp, refused[i]);
    json_t *jr = json_object_get(cfg, "r"), *ja = json_object_get(cfg, "lora_alpha");
    if (!jr) return lt_error(LT_ERR_FORMAT, "%s: missing key r (expected an integer >= 1)", cp);
    if (!json_is_integer(jr) || json_integer_value(jr) < 1 || json_integer_value(jr) > 65536)
        return lt_error(LT_ERR_FORMAT, "%s: r: expected an integer >= 1", cp);
    if (!ja) return lt_error(LT_ERR_FORMAT, "%s: missing key lora_alpha (expected a number)", cp);
    if (!json_is_number(ja))
        return lt_error(LT_ERR_FORMAT, "%s: lora_alpha: expected a number", cp);
    json_t *jrs = json_object_get(cfg, "use_rslora"), *jd = json_object_get(cfg, "use_dora");
    json_t *jdrop = json_object_get(cfg, "lora_dropout");
    if (jrs && !json_is_boolean(jrs))
        return lt_error(LT_ERR_FORMAT, "%s: use_rslora: expected true or false", cp);
    if (jd && !json_is_boolean(jd))
        return lt_error(LT_ERR_FORMAT, "%s: use_dora: expected true or false", cp);
    if (jdrop && !json_is_number(jdrop))
        return lt_error(LT_ERR_FORMAT, "%s: lora_dropout: expected a number", cp);

    unsigned targets = 0;
    json_t *tm = json_object_get(cfg, "target_modules");
    if (!tm) return lt_error(LT_ERR_FORMAT, "%s: missing key target_modules", cp);
    if (json_is_string(tm)) {
        if (strcmp(json_string_value(tm), "all-linear"))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: target_modules: the pattern '%s' is not "
                            "supported (expected a list of names or \"all-linear\")",
                            cp, json_string_value(tm));
        targets = LT_TARGET_ALL;
    } else if (json_is_array(tm) && json_array_size(tm) > 0) {
        size_t i;
        json_t *e;
        json_array_foreach(tm, i, e) {
            int t = json_is_string(e) ? target_of(json_string_value(e)) : -1;
            if (t < 0)
                return lt_error(LT_ERR_UNSUPPORTED,
                                "%s: target_modules[%zu] '%s': not a linear "
                                "of a Llama decoder layer (expected q_proj, k_proj, v_proj, "
                                "o_proj, gate_proj, up_proj, down_proj)",
                                cp, i, json_is_string(e) ? json_string_value(e) : "(not a string)");
            targets |= 1u << t;
        }
    } else {
        return lt_error(LT_ERR_FORMAT, "%s: target_modules: expected a non-empty list of names",
                        cp);
    }
    int L = mc->n_layers;
    char *want_layer = lt_calloc((size_t)L, 1);
    if (!want_layer) return lt_error(LT_ERR_NOMEM, "adapter: out of memory");
    json_t *lt = json_object_get(cfg, "layers_to_transform");
    if (!lt || json_is_null(lt)) {
        memset(want_layer, 1, (size_t)L);
    } else if (json_is_integer(lt) || json_is_array(lt)) {
        size_t n = json_is_array(lt) ? json_array_size(lt) : 1;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_is_array(lt) ? json_array_get(lt, i) : lt;
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= L) {
                free(want_layer);
                return lt_error(LT_ERR_FORMAT,
                                "%s: layers_to_transform: expected layer "
                                "indices in [0, %d) (the model's layers)",
                                cp, L);
            }
            want_layer[json_integer_value(e)] = 1;
        }
    } else {
        free(want_layer);
        return lt_error(LT_ERR_FORMAT,
                        "%s: layers_to_transform: expected null, an integer or "
                        "a list of integers",
                        cp);
    }

    lt_adapter *a = NULL;
    lt_safetensors *st_file = NULL;
    char path[4096];
    lt_status st = lt_adapter_new_(jd && json_is_true(jd) ? LT_METHOD_DORA : LT_METHOD_LORA,
                                   (int)json_integer_value(jr), (float)json_number_value(ja),
                                   jrs && json_is_true(jrs), L, &a);
    if (st) goto done;
    a->dropout = jdrop ? (float)json_number_value(jdrop) : 0.0f;
    json_t *bm = json_object_get(cfg, "base_model_name_or_path");
    if (json_is_string(bm))
        snprintf(a->base_model, sizeof a->base_model, "%s", json_string_value(bm));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!lt_path_exists(path)) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
        st = lt_path_exists(bin)
                 ? lt_error(LT_ERR_UNSUPPORTED,
                            "%s: a pickled adapter_model.bin: only "
                            "adapter_model.safetensors is read",
                            dir)
                 : lt_error(LT_ERR_NOTFOUND, "%s: missing adapter_model.safetensors", dir);
        goto done;
    }
    if ((st = lt_safetensors_open(path, &st_file))) goto done;
    for (size_t i = 0; i < lt_safetensors_count(st_file); i++) {
        const lt_tensor_view *tv = lt_safetensors_tensor(st_file, i);
        const char *n = tv->name;
        int l = -1, t = -1, k = -1, used = 0;
        if (!strncmp(n, PEFT_PREFIX, strlen(PEFT_PREFIX)) &&
            sscanf(n + strlen(PEFT_PREFIX), "%d.%n", &l, &used) == 1 && used > 0) {
            const char *rest = n + strlen(PEFT_PREFIX) + used;
            static const char *leaf[3] = {".lora_A.weight", ".lora_B.weight",
                                          ".lora_magnitude_vector"};
            for (int tt = 0; tt < LT_N_TARGETS && t < 0; tt++) {
                size_t ml = strlen(lt_adapter_module_(tt));
                if (strncmp(rest, lt_adapter_module_(tt), ml)) continue;
                for (int kk = 0; kk < 3; kk++)
                    if (!strcmp(rest + ml, leaf[kk])) t = tt, k = kk;
            }
        }
        if (t < 0 || l < 0) {
            st = lt_error(LT_ERR_FORMAT,
                          "%s: tensor %s: not a LoRA tensor of a Llama decoder "
                          "linear (expected " PEFT_PREFIX "N.self_attn.q_proj.lora_A.weight and "
                          "the like)",
                          path, n);
            goto done;
        }
        if (l >= L || !want_layer[l] || !((targets >> t) & 1)) {
            st = lt_error(LT_ERR_FORMAT,
                          "%s: tensor %s: layer %d %s is not adapted according to "
                          "adapter_config.json (target_modules / layers_to_transform; the model "
                          "has %d layers)",
                          path, n, l, lt_target_name(t), L);
            goto done;
        }
        if (k == 2 && a->method != LT_METHOD_DORA) {
            st = lt_error(LT_ERR_FORMAT,
                          "%s: tensor %s: a DoRA magnitude but use_dora is not "
                          "true in adapter_config.json",
                          path, n);
            goto done;
        }
        if ((st = lt_adapter_alloc_lin_(a, mc, l, t))) goto done;
        lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
        int64_t e0 = k == 0 ? a->r : li->out, e1 = k == 0 ? li->in : a->r;
        int ok = k == 2 ? tv->ndim == 1 && tv->shape[0] == li->out
                        : tv->ndim == 2 && tv->shape[0] == e0 && tv->shape[1] == e1;
        if (!ok) {
            char got[64];
            lt_adapter_shape_str_(tv, got, sizeof got);
            if (k == 2)
                st = lt_error(LT_ERR_FORMAT,
                              "%s: tensor %s: shape %s, expected [%d] (the "
                              "model's %s output size)",
                              path, n, got, li->out, lt_target_name(t));
            else
                st = lt_error(LT_ERR_FORMAT,
                              "%s: tensor %s: shape %s, expected [%lld, %lld] "
                              "(r = %d from adapter_config.json, the model's %s is %d -> %d)",
                              path, n, got, (long long)e0, (long long)e1, a->r, lt_target_name(t),
                              li->in, li->out);
            goto done;
        }
        float *dst = k == 0 ? li->A : k == 1 ? li->B : li->mag;
        if ((st = lt_adapter_take_(path, tv, dst, 0))) goto done;
    }
    /* every (layer, target) the config names must have all its tensors */
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            if (!want_layer[l] || !((targets >> t) & 1)) continue;
            static const char *leaf[3] = {"lora_A.weight", "lora_B.weight",
                                          "lora_magnitude_vector"};
            char nm[256];
            int missing = -1;
            for (int kk = 0; kk < (a->method == LT_METHOD_DORA ? 3 : 2); kk++) {
                snprintf(nm, sizeof nm, PEFT_PREFIX "%d.%s.%s", l, lt_adapter_module_(t), leaf[kk]);
                if (!lt_safetensors_find(st_file, nm)) {
                    missing = kk;
                    break;
                }
            }
            if (missing >= 0) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s: missing tensor %s (adapter_config.json adapts "
                              "layer %d %s)",
                              path, nm, l, lt_target_name(t));
                goto done;
            }
        }
    lt_adapter_refresh_(a);
done:
    free(want_layer);
    lt_safetensors_close(st_file);
    if (st) {
        lt_adapter_free(a);
        return st;
    }
    *out = a;
    return LT_OK;
}
