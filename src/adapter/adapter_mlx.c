/* adapter_mlx.c - mlx-lm adapter folders: adapters.safetensors + adapter_config.json, as
 * mlx_lm.lora saves them and mlx_lm.tuner.utils.load_adapters reads them (mlx-lm 0.32).
 *
 * Layout: "model.layers.<l>.self_attn.q_proj.lora_a" [in][r] (= PEFT A transposed),
 * ".lora_b" [r][out] (= B transposed), ".m" [out] (DoRA magnitude, same meaning as PEFT's).
 * Config: fine_tune_type "lora" | "dora", num_layers (mlx-lm adapts the LAST num_layers
 * layers; <= 0 means all), lora_parameters {rank, scale, dropout, keys}. mlx-lm multiplies by
 * `scale` directly, so scale = lt_adapter_scale and alpha = scale * r on reading. Adapters
 * whose layers are not a suffix of the model's cannot be said in this format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"
#include "loratune/safetensors.h"

#define MLX_PREFIX "model.layers."

lt_status lt_adapter_save_mlx(const lt_adapter *a, const lt_model_config *mc, const char *dir) {
    lt_status st = lt_adapter_check_fits_(a, mc, dir);
    if (st) return st;
    if ((st = lt_adapter_check_regular_(a, dir))) return st;
    if ((st = lt_adapter_check_finite_(a, dir, "refusing to write it"))) return st;
    if (a->layer_end != mc->n_layers)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: mlx-lm adapts the last num_layers layers; this "
                        "adapter's layers [%d, %d) do not end at the model's last (%d)",
                        dir, a->layer_begin, a->layer_end, mc->n_layers);
    if ((st = lt_adapter_mkdir_(dir))) return st;
    json_t *c = json_object(), *lp = json_object(), *keys = json_array();
    for (int t = 0; t < LT_N_TARGETS; t++)
        if ((a->targets >> t) & 1) json_array_append_new(keys, json_string(lt_adapter_module_(t)));
    json_object_set_new(lp, "rank", json_integer(a->r));
    json_object_set_new(lp, "scale", json_real(lt_adapter_scale(a)));
    json_object_set_new(lp, "dropout", json_real(a->dropout));
    json_object_set_new(lp, "keys", keys);
    json_object_set_new(c, "fine_tune_type",
                        json_string(a->method == LT_METHOD_DORA ? "dora" : "lora"));
    json_object_set_new(c, "num_layers", json_integer(a->layer_end - a->layer_begin));
    json_object_set_new(c, "lora_parameters", lp);
    if (a->base_model[0]) json_object_set_new(c, "model", json_string(a->base_model));

    lt_st_writer *w = NULL;
    float *buf = NULL;
    int nl = a->n_layers * LT_N_TARGETS, nb = 0;
    char path[4096], name[256];
    /* transposed copies live until the write: one buffer per A and B */
    float **bufs = lt_calloc((size_t)nl * 2, sizeof *bufs);
    if (!bufs) {
        st = lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    if ((st = lt_st_writer_create(&w))) goto done;
    if ((st = lt_st_writer_set_metadata(w, "format", "mlx"))) goto done;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            int r = a->r;
            for (int k = 0; k < 2; k++) {
                int R = k == 0 ? r : L->out, C = k == 0 ? L->in : r; /* stored [R][C] */
                const float *src = k == 0 ? L->A : L->B;
                buf = lt_malloc(sizeof(float) * (size_t)R * C);
                if (!buf) {
                    st = lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
                    goto done;
                }
                bufs[nb++] = buf;
                for (int i = 0; i < R; i++)
                    for (int j = 0; j < C; j++)
                        buf[(size_t)j * R + i] = src[(size_t)i * C + j];
                int64_t shape[2] = {C, R};
                snprintf(name, sizeof name, MLX_PREFIX "%d.%s.%s", l, lt_adapter_module_(t),
                         k == 0 ? "lora_a" : "lora_b");
                if ((st = lt_st_writer_add(w, name, LT_DTYPE_F32, 2, shape, buf,
                                           sizeof(float) * (size_t)R * C)))
                    goto done;
            }
            if (L->mag) {
                int64_t shape[1] = {L->out};
                snprintf(name, sizeof name, MLX_PREFIX "%d.%s.m", l, lt_adapter_module_(t));
                if ((st = lt_st_writer_add(w, name, LT_DTYPE_F32, 1, shape, L->mag,
                                           sizeof(float) * (size_t)L->out)))
                    goto done;
            }
        }
    snprintf(path, sizeof path, "%s/adapters.safetensors", dir);
    if ((st = lt_st_writer_write(w, path))) goto done;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    st = lt_adapter_write_json_(c, path);
done:
    if (bufs)
        for (int i = 0; i < nb; i++)
            free(bufs[i]);
    free(bufs);
    lt_st_writer_free(w);
    json_decref(c);
    return st;
}

lt_status lt_adapter_load_mlx_(const char *dir, json_t *cfg, const char *cp,
                               const lt_model_config *mc, lt_adapter **out) {
    *out = NULL;
    json_t *ft = json_object_get(cfg, "fine_tune_type");
    lt_train_method method = LT_METHOD_LORA;
    if (ft) {
        if (!json_is_string(ft))
            return lt_error(LT_ERR_FORMAT, "%s: fine_tune_type: expected a string", cp);
        const char *s = json_string_value(ft);
        if (!strcmp(s, "dora"))
            method = LT_METHOD_DORA;
        else if (strcmp(s, "lora"))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: fine_tune_type '%s': expected lora or dora "
                            "(a full fine-tune is not an adapter)",
                            cp, s);
    }
    json_t *nlj = json_object_get(cfg, "num_layers");
    if (!nlj)
        return lt_error(LT_ERR_FORMAT, "%s: missing key num_layers (expected an integer)", cp);
    if (!json_is_integer(nlj))
        return lt_error(LT_ERR_FORMAT, "%s: num_layers: expected an integer", cp);
    int L = mc->n_layers;
    long long nl = json_integer_value(nlj);
    if (nl > L)
        return lt_error(LT_ERR_FORMAT, "%s: num_layers %lld: the model has only %d layers", cp, nl,
                        L);
    int begin = nl <= 0 ? 0 : L - (int)nl; /* mlx-lm: model.layers[-max(num_layers, 0):] */
    json_t *lp = json_object_get(cfg, "lora_parameters");
    if (!json_is_object(lp))
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s lora_parameters (expected an object with rank, "
                        "scale, dropout)",
                        cp, lp ? "malformed" : "missing key");
    json_t *jr = json_object_get(lp, "rank"), *js = json_object_get(lp, "scale");
    json_t *jd = json_object_get(lp, "dropout"), *jk = json_object_get(lp, "keys");
    if (!json_is_integer(jr) || json_integer_value(jr) < 1 || json_integer_value(jr) > 65536)
        return lt_error(LT_ERR_FORMAT, "%s: lora_parameters.rank: %s (expected an integer >= 1)",
                        cp, jr ? "bad value" : "missing");
    if (!json_is_number(js))
        return lt_error(LT_ERR_FORMAT,
                        "%s: lora_parameters.scale: %s (expected a number; "
                        "mlx-lm multiplies by it directly)",
                        cp, js ? "bad value" : "missing");
    if (jd && !json_is_number(jd))
        return lt_error(LT_ERR_FORMAT, "%s: lora_parameters.dropout: expected a number", cp);
    unsigned targets = 0;
    if (!jk || json_is_null(jk)) {
        targets = 0; /* mlx-lm: every linear of the layer; which ones: from the file below */
    } else if (json_is_array(jk)) {
        size_t i;
        json_t *e;
        json_array_foreach(jk, i, e) {
            int t = -1;
            for (int tt = 0; tt < LT_N_TARGETS && json_is_string(e); tt++)
                if (!strcmp(json_string_value(e), lt_adapter_module_(tt))) t = tt;
            if (t < 0)
                return lt_error(LT_ERR_UNSUPPORTED,
                                "%s: lora_parameters.keys[%zu] '%s': not a "
                                "linear of a Llama decoder layer (expected self_attn.q_proj, ..., "
                                "mlp.down_proj)",
                                cp, i, json_is_string(e) ? json_string_value(e) : "(not a string)");
            targets |= 1u << t;
        }
    } else {
        return lt_error(LT_ERR_FORMAT, "%s: lora_parameters.keys: expected a list of names", cp);
    }
    int r = (int)json_integer_value(jr);
    lt_adapter *a = NULL;
    lt_safetensors *sf = NULL;
    char path[4096], nm[256];
    lt_status st = lt_adapter_new_(method, r, (float)json_number_value(js) * (float)r, 0, L, &a);
    if (st) return st;
    a->dropout = jd ? (float)json_number_value(jd) : 0.0f;
    json_t *jm = json_object_get(cfg, "model");
    if (json_is_string(jm))
        snprintf(a->base_model, sizeof a->base_model, "%s", json_string_value(jm));
    snprintf(path, sizeof path, "%s/adapters.safetensors", dir);
    if (!lt_path_exists(path)) {
        st = lt_error(LT_ERR_NOTFOUND, "%s: missing adapters.safetensors", dir);
        goto done;
    }
    if ((st = lt_safetensors_open(path, &sf))) goto done;
    if (!targets) /* no keys: the linears whose lora_a the file has in the first layer */
        for (int t = 0; t < LT_N_TARGETS; t++) {
            snprintf(nm, sizeof nm, MLX_PREFIX "%d.%s.lora_a", begin, lt_adapter_module_(t));
            if (lt_safetensors_find(sf, nm)) targets |= 1u << t;
        }
    if (!targets) {
        st = lt_error(LT_ERR_FORMAT,
                      "%s: no %s%d.*.lora_a tensor (num_layers %lld, no "
                      "lora_parameters.keys)",
                      path, MLX_PREFIX, begin, nl);
        goto done;
    }
    size_t used = 0;
    for (int l = begin; l < L; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            if (!((targets >> t) & 1)) continue;
            if ((st = lt_adapter_alloc_lin_(a, mc, l, t))) goto done;
            lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            for (int k = 0; k < (method == LT_METHOD_DORA ? 3 : 2); k++) {
                static const char *leaf[3] = {"lora_a", "lora_b", "m"};
                snprintf(nm, sizeof nm, MLX_PREFIX "%d.%s.%s", l, lt_adapter_module_(t), leaf[k]);
                const lt_tensor_view *tv = lt_safetensors_find(sf, nm);
                if (!tv) {
                    st = lt_error(LT_ERR_FORMAT,
                                  "%s: missing tensor %s (adapter_config.json "
                                  "adapts layer %d %s)",
                                  path, nm, l, lt_target_name(t));
                    goto done;
                }
                int64_t e0 = k == 0 ? li->in : k == 1 ? r : li->out, e1 = k == 0 ? r : li->out;
                int ok = k == 2 ? tv->ndim == 1 && tv->shape[0] == e0
                                : tv->ndim == 2 && tv->shape[0] == e0 && tv->shape[1] == e1;
                if (!ok) {
                    char got[64], want[64];
                    lt_adapter_shape_str_(tv, got, sizeof got);
                    if (k == 2)
                        snprintf(want, sizeof want, "[%lld]", (long long)e0);
                    else
                        snprintf(want, sizeof want, "[%lld, %lld]", (long long)e0, (long long)e1);
                    st = lt_error(LT_ERR_FORMAT,
                                  "%s: tensor %s: shape %s, expected %s (rank %d "
                                  "from adapter_config.json, the model's %s is %d -> %d)",
                                  path, nm, got, want, r, lt_target_name(t), li->in, li->out);
                    goto done;
                }
                float *dst = k == 0 ? li->A : k == 1 ? li->B : li->mag;
                if ((st = lt_adapter_take_(path, tv, dst, k < 2))) goto done;
                used++;
            }
        }
    if (used != lt_safetensors_count(sf)) {
        /* name the first tensor the config does not account for */
        for (size_t i = 0; i < lt_safetensors_count(sf); i++) {
            const char *n = lt_safetensors_tensor(sf, i)->name;
            int l = -1, u = 0;
            int known = 0;
            if (!strncmp(n, MLX_PREFIX, strlen(MLX_PREFIX)) &&
                sscanf(n + strlen(MLX_PREFIX), "%d.%n", &l, &u) == 1 && u > 0 && l >= begin &&
                l < L)
                for (int t = 0; t < LT_N_TARGETS; t++)
                    for (int k = 0; k < (method == LT_METHOD_DORA ? 3 : 2); k++) {
                        static const char *leaf[3] = {"lora_a", "lora_b", "m"};
                        char want[256];
                        snprintf(want, sizeof want, MLX_PREFIX "%d.%s.%s", l, lt_adapter_module_(t),
                                 leaf[k]);
                        if (((targets >> t) & 1) && !strcmp(want, n)) known = 1;
                    }
            if (!known) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s: tensor %s: not an adapter parameter under "
                              "adapter_config.json (num_layers %lld, keys, fine_tune_type)",
                              path, n, nl);
                goto done;
            }
        }
    }
    lt_adapter_refresh_(a);
done:
    lt_safetensors_close(sf);
    if (st) {
        lt_adapter_free(a);
        return st;
    }
    *out = a;
    return LT_OK;
}
