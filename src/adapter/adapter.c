/* adapter.c - the in-memory lt_adapter: creation, checks, the trainer bridge, and the reader
 * dispatch (PEFT / mlx-lm folder told apart by adapter_config.json, GGUF by its magic; a
 * folder adapter's own file stands for its folder).
 *
 * Invariant: lin[l * LT_N_TARGETS + t].A != NULL exactly for the adapted (layer, target);
 * then B is allocated too, and mag iff method == DORA. Shapes are PEFT's (A [r][in],
 * B [out][r]) whatever file the adapter came from. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter_internal.h"
#include "core/io.h"
#include "core/json_file.h"
#include "loratune/quant.h"

float lt_adapter_scale(const lt_adapter *a) {
    return a->rslora ? a->alpha / sqrtf((float)a->r) : a->alpha / (float)a->r;
}

void lt_adapter_free(lt_adapter *a) {
    if (!a) return;
    if (a->lin)
        for (int i = 0; i < a->n_layers * LT_N_TARGETS; i++) {
            free(a->lin[i].A);
            free(a->lin[i].B);
            free(a->lin[i].mag);
        }
    free(a->lin);
    free(a);
}

void lt_adapter_dims_(const lt_model_config *mc, int t, int *in, int *out) {
    int D = mc->dim, QD = mc->n_heads * mc->head_dim, KD = mc->n_kv_heads * mc->head_dim;
    int F = mc->ffn_dim;
    switch (t) {
    case 0:
        *in = D, *out = QD;
        break;
    case 1:
    case 2:
        *in = D, *out = KD;
        break;
    case 3:
        *in = QD, *out = D;
        break;
    case 4:
    case 5:
        *in = D, *out = F;
        break;
    default:
        *in = F, *out = D;
        break;
    }
}

const char *lt_adapter_module_(int t) {
    static const char *m[LT_N_TARGETS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    return t >= 0 && t < LT_N_TARGETS ? m[t] : "?";
}

lt_status lt_adapter_new_(lt_train_method method, int r, float alpha, int rslora, int n_layers,
                          lt_adapter **out) {
    *out = NULL;
    if (method != LT_METHOD_LORA && method != LT_METHOD_DORA)
        return lt_error(LT_ERR_ARG, "adapter: method %s is not an adapter (expected lora or dora)",
                        lt_train_method_name(method));
    if (r < 1 || n_layers < 1)
        return lt_error(LT_ERR_ARG, "adapter: rank %d / layers %d: expected >= 1", r, n_layers);
    lt_adapter *a = lt_calloc(1, sizeof *a);
    if (!a) return lt_error(LT_ERR_NOMEM, "adapter: out of memory");
    a->lin = lt_calloc((size_t)n_layers * LT_N_TARGETS, sizeof *a->lin);
    if (!a->lin) {
        free(a);
        return lt_error(LT_ERR_NOMEM, "adapter: out of memory");
    }
    a->method = method;
    a->r = r;
    a->alpha = alpha;
    a->rslora = rslora;
    a->n_layers = n_layers;
    *out = a;
    return LT_OK;
}

lt_status lt_adapter_alloc_lin_(lt_adapter *a, const lt_model_config *mc, int l, int t) {
    lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
    lt_adapter_dims_(mc, t, &L->in, &L->out);
    if (L->A) return LT_OK;
    L->A = lt_calloc((size_t)a->r * L->in, sizeof(float));
    L->B = lt_calloc((size_t)L->out * a->r, sizeof(float));
    if (a->method == LT_METHOD_DORA) L->mag = lt_calloc((size_t)L->out, sizeof(float));
    if (!L->A || !L->B || (a->method == LT_METHOD_DORA && !L->mag)) {
        free(L->A), free(L->B), free(L->mag);
        L->A = L->B = L->mag = NULL;
        return lt_error(LT_ERR_NOMEM, "adapter: out of memory for layer %d %s", l,
                        lt_target_name(t));
    }
    return LT_OK;
}

void lt_adapter_refresh_(lt_adapter *a) {
    a->targets = 0;
    a->layer_begin = a->n_layers;
    a->layer_end = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++)
            if (a->lin[l * LT_N_TARGETS + t].A) {
                a->targets |= 1u << t;
                if (l < a->layer_begin) a->layer_begin = l;
                if (l + 1 > a->layer_end) a->layer_end = l + 1;
            }
    if (a->layer_end == 0) a->layer_begin = 0;
}

lt_status lt_adapter_check_regular_(const lt_adapter *a, const char *what) {
    if (!a->targets) return lt_error(LT_ERR_ARG, "%s: the adapter adapts no linear layer", what);
    for (int l = a->layer_begin; l < a->layer_end; l++)
        for (int t = 0; t < LT_N_TARGETS; t++)
            if (((a->targets >> t) & 1) != (a->lin[l * LT_N_TARGETS + t].A != NULL))
                return lt_error(LT_ERR_UNSUPPORTED,
                                "%s: layer %d %s is %sadapted but the other layers say otherwise: "
                                "this format needs the same targets on every layer of one range",
                                what, l, lt_target_name(t),
                                a->lin[l * LT_N_TARGETS + t].A ? "" : "not ");
    return LT_OK;
}

lt_status lt_adapter_check_finite_(const lt_adapter *a, const char *what, const char *why) {
    float scale = lt_adapter_scale(a);
    if (!isfinite(a->alpha) || !isfinite(scale))
        return lt_error(LT_ERR_FORMAT,
                        "%s: the adapter's scale is not a finite float32 (alpha %g, r %d, "
                        "scale %g): expected a finite lora_alpha / mlx-lm scale%s%s",
                        what, (double)a->alpha, a->r, (double)scale, why ? "; " : "",
                        why ? why : "");
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            struct {
                const float *x;
                int64_t n, cols;
                const char *leaf;
            } parts[3] = {{L->A, (int64_t)a->r * L->in, L->in, "lora_A"},
                          {L->B, (int64_t)L->out * a->r, a->r, "lora_B"},
                          {L->mag, L->out, 0, "lora_magnitude_vector"}};
            for (int k = 0; k < 3; k++) {
                if (!parts[k].x) continue;
                char where[700];
                snprintf(where, sizeof where, "%s: layers.%d.%s.%s", what, l, lt_adapter_module_(t),
                         parts[k].leaf);
                lt_status st = lt_check_finite(LT_DTYPE_F32, parts[k].x, parts[k].n, parts[k].cols,
                                               where, why);
                if (st) return st;
            }
        }
    return LT_OK;
}

lt_status lt_adapter_check_fits_(const lt_adapter *a, const lt_model_config *mc, const char *what) {
    if (a->n_layers != mc->n_layers)
        return lt_error(LT_ERR_ARG, "%s: the adapter is for %d layers, the model has %d", what,
                        a->n_layers, mc->n_layers);
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            int in, out;
            lt_adapter_dims_(mc, t, &in, &out);
            if (!L->B || L->in != in || L->out != out)
                return lt_error(LT_ERR_ARG,
                                "%s: layer %d %s: adapter is %d -> %d, the model's linear %d -> %d",
                                what, l, lt_target_name(t), L->in, L->out, in, out);
            if (a->r > in || a->r > out)
                return lt_error(LT_ERR_ARG, "%s: layer %d %s: rank %d exceeds the linear's %d x %d",
                                what, l, lt_target_name(t), a->r, out, in);
            if ((a->method == LT_METHOD_DORA) != (L->mag != NULL))
                return lt_error(LT_ERR_ARG, "%s: layer %d %s: DoRA magnitude %s", what, l,
                                lt_target_name(t),
                                L->mag ? "present in a LoRA adapter" : "missing");
        }
    return LT_OK;
}

lt_status lt_adapter_mkdir_(const char *dir) {
    if (lt_path_is_dir(dir)) return LT_OK;
    if (lt_io_mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lt_error(LT_ERR_IO, "%s: cannot create folder: %s", dir, strerror(errno));
    return LT_OK;
}

lt_status lt_adapter_write_json_(json_t *v, const char *path) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    if (!s) return lt_error(LT_ERR_NOMEM, "%s: out of memory serialising JSON", path);
    size_t n = strlen(s);
    char *buf = lt_realloc(s, n + 2);
    if (!buf) {
        free(s);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    buf[n] = '\n';
    buf[n + 1] = 0;
    lt_status st = lt_file_write_atomic(path, buf, n + 1);
    free(buf);
    return st;
}

lt_status lt_adapter_take_(const char *file, const lt_tensor_view *t, float *dst, int transpose) {
    int64_t n = lt_tensor_numel(t);
    if (t->dtype != LT_DTYPE_F32 && t->dtype != LT_DTYPE_F16 && t->dtype != LT_DTYPE_BF16)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s (expected F32, F16 or BF16)",
                        file, t->name, lt_dtype_name(t->dtype));
    if (!transpose || t->ndim != 2) return lt_to_f32(t->dtype, t->data, dst, n);
    float *tmp = lt_malloc((size_t)n * sizeof(float));
    if (!tmp) return lt_error(LT_ERR_NOMEM, "%s: out of memory for %s", file, t->name);
    lt_status st = lt_to_f32(t->dtype, t->data, tmp, n);
    if (!st) {
        int64_t R = t->shape[0], C = t->shape[1];
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++)
                dst[j * R + i] = tmp[i * C + j];
    }
    free(tmp);
    return st;
}

void lt_adapter_shape_str_(const lt_tensor_view *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* ---- trainer bridge ------------------------------------------------------------------- */

static void peft_name(char *buf, size_t n, int l, int t, const char *leaf) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s", l, lt_adapter_module_(t), leaf);
}

lt_status lt_adapter_from_trainer(const lt_trainer *tr, const char *base_model, lt_adapter **out) {
    *out = NULL;
    const lt_train_config *c = lt_trainer_config(tr);
    const lt_model_config *mc = lt_trainer_model_config(tr);
    if (c->method != LT_METHOD_LORA && c->method != LT_METHOD_DORA &&
        c->method != LT_METHOD_QLORA)
        return lt_error(LT_ERR_ARG, "adapter from trainer: method %s has no adapter",
                        lt_train_method_name(c->method));
    /* a QLoRA adapter is a LoRA adapter (PEFT saves it the same way; the base is quantized at
     * load time by whoever uses it) */
    lt_train_method am = c->method == LT_METHOD_QLORA ? LT_METHOD_LORA : c->method;
    lt_adapter *a;
    lt_status st = lt_adapter_new_(am, c->lora.r, c->lora.alpha, c->lora.rslora, mc->n_layers, &a);
    if (st) return st;
    a->dropout = c->lora.dropout;
    if (base_model) snprintf(a->base_model, sizeof a->base_model, "%s", base_model);
    int lb = c->lora.layer_begin, le = c->lora.layer_end <= 0 ? mc->n_layers : c->lora.layer_end;
    char name[256];
    for (int l = lb; l < le && !st; l++)
        for (int t = 0; t < LT_N_TARGETS && !st; t++) {
            if (!((c->lora.targets >> t) & 1)) continue;
            if ((st = lt_adapter_alloc_lin_(a, mc, l, t))) break;
            lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            static const char *leaf[3] = {"lora_A.weight", "lora_B.weight",
                                          "lora_magnitude_vector"};
            float *dst[3] = {L->A, L->B, L->mag};
            int64_t numel[3] = {(int64_t)a->r * L->in, (int64_t)L->out * a->r, L->out};
            for (int k = 0; k < (L->mag ? 3 : 2) && !st; k++) {
                lt_train_tensor tt;
                peft_name(name, sizeof name, l, t, leaf[k]);
                if ((st = lt_trainer_find(tr, name, &tt))) break;
                if (tt.numel != numel[k]) {
                    st = lt_error(LT_ERR_INTERNAL,
                                  "adapter from trainer: %s has %lld values, "
                                  "expected %lld",
                                  name, (long long)tt.numel, (long long)numel[k]);
                    break;
                }
                st = lt_trainer_read(tr, tt.index, LT_TENSOR_VALUE, 0, dst[k], numel[k]);
            }
        }
    if (st) {
        lt_adapter_free(a);
        return st;
    }
    lt_adapter_refresh_(a);
    *out = a;
    return LT_OK;
}

lt_status lt_adapter_to_trainer(const lt_adapter *a, lt_trainer *tr) {
    const lt_train_config *c = lt_trainer_config(tr);
    const lt_model_config *mc = lt_trainer_model_config(tr);
    const char *w = "adapter to trainer";
    lt_train_method tm = c->method == LT_METHOD_QLORA ? LT_METHOD_LORA : c->method;
    if (tm != a->method)
        return lt_error(LT_ERR_ARG, "%s: method: the adapter is %s, the trainer %s", w,
                        lt_train_method_name(a->method), lt_train_method_name(c->method));
    if (c->lora.r != a->r)
        return lt_error(LT_ERR_ARG, "%s: r: the adapter has %d, the trainer %d", w, a->r,
                        c->lora.r);
    lt_status st = lt_adapter_check_fits_(a, mc, w);
    if (st) return st;
    if (fabsf(lt_adapter_scale(a) - (c->lora.rslora ? c->lora.alpha / sqrtf((float)c->lora.r)
                                                    : c->lora.alpha / (float)c->lora.r)) >
        1e-6f * fabsf(lt_adapter_scale(a)))
        return lt_error(LT_ERR_ARG,
                        "%s: scale: the adapter's is %g, the trainer's alpha %g "
                        "(rslora %d) gives another",
                        w, (double)lt_adapter_scale(a), (double)c->lora.alpha, c->lora.rslora);
    int lb = c->lora.layer_begin, le = c->lora.layer_end <= 0 ? mc->n_layers : c->lora.layer_end;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            int want = l >= lb && l < le && ((c->lora.targets >> t) & 1);
            int have = a->lin[l * LT_N_TARGETS + t].A != NULL;
            if (want != have)
                return lt_error(LT_ERR_ARG,
                                "%s: layer %d %s: %s in the adapter but %s in the "
                                "trainer",
                                w, l, lt_target_name(t), have ? "adapted" : "absent",
                                want ? "trained" : "not trained");
        }
    char name[256];
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            peft_name(name, sizeof name, l, t, "lora_A.weight");
            if ((st = lt_trainer_set(tr, name, L->A, (int64_t)a->r * L->in))) return st;
            peft_name(name, sizeof name, l, t, "lora_B.weight");
            if ((st = lt_trainer_set(tr, name, L->B, (int64_t)L->out * a->r))) return st;
            if (L->mag) {
                peft_name(name, sizeof name, l, t, "lora_magnitude_vector");
                if ((st = lt_trainer_set(tr, name, L->mag, L->out))) return st;
            }
        }
    return LT_OK;
}

/* ---- reader dispatch ------------------------------------------------------------------- */

enum { ANY_FOLDER, PEFT_FOLDER, MLX_FOLDER };

/* A PEFT or mlx-lm folder, told apart by its adapter_config.json; want names the one a file
 * given inside it asked for (adapter_model.safetensors: PEFT, adapters.safetensors: mlx-lm). */
static lt_status load_folder(const char *dir, int want, const char *given,
                             const lt_model_config *mc, lt_adapter **out) {
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir);
    if (!lt_path_exists(cfg_path)) {
        if (want != ANY_FOLDER)
            return lt_error(LT_ERR_NOTFOUND,
                            "%s: no adapter_config.json beside it (a %s adapter is a folder "
                            "with adapter_config.json and %s)",
                            given, want == PEFT_FOLDER ? "PEFT" : "mlx-lm",
                            want == PEFT_FOLDER ? "adapter_model.safetensors"
                                                : "adapters.safetensors");
        return lt_error(LT_ERR_NOTFOUND,
                        "%s: missing adapter_config.json (expected a PEFT or "
                        "mlx-lm adapter folder)",
                        dir);
    }
    json_t *cfg;
    lt_status st = lt_json_load_file(cfg_path, JSON_REJECT_DUPLICATES, &cfg);
    if (st) return st;
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return lt_error(LT_ERR_FORMAT, "%s: expected a JSON object", cfg_path);
    }
    int peft = json_object_get(cfg, "peft_type") != NULL;
    int mlx = !peft &&
              (json_object_get(cfg, "lora_parameters") || json_object_get(cfg, "fine_tune_type"));
    if ((want == PEFT_FOLDER && !peft) || (want == MLX_FOLDER && !mlx))
        st = lt_error(LT_ERR_FORMAT, "%s: %s beside it is not %s config (no %s)", given, cfg_path,
                      want == PEFT_FOLDER ? "a PEFT" : "an mlx-lm",
                      want == PEFT_FOLDER ? "peft_type" : "lora_parameters / fine_tune_type");
    else if (peft)
        st = lt_adapter_load_peft_(dir, cfg, cfg_path, mc, out);
    else if (mlx)
        st = lt_adapter_load_mlx_(dir, cfg, cfg_path, mc, out);
    else
        st = lt_error(LT_ERR_FORMAT,
                      "%s: neither PEFT (peft_type) nor mlx-lm (lora_parameters / "
                      "fine_tune_type) keys",
                      cfg_path);
    json_decref(cfg);
    if (st) return st;
    if ((st = lt_adapter_check_fits_(*out, mc, dir))) {
        lt_adapter_free(*out);
        *out = NULL;
    }
    return st;
}

static lt_status load_any(const char *path, const lt_model_config *mc, lt_adapter **out);

lt_status lt_adapter_load(const char *path, const lt_model_config *mc, lt_adapter **out) {
    lt_status st = load_any(path, mc, out);
    if (st) return st;
    /* once, here: a damaged adapter is refused before generate or fuse uses it */
    if ((st = lt_adapter_check_finite_(*out, path, "the adapter is damaged"))) {
        lt_adapter_free(*out);
        *out = NULL;
    }
    return st;
}

static lt_status load_any(const char *path, const lt_model_config *mc, lt_adapter **out) {
    *out = NULL;
    if (!lt_path_exists(path)) return lt_error(LT_ERR_NOTFOUND, "%s: no such adapter", path);
    lt_status cst = lt_output_check(path); /* a run's export that did not finish */
    if (cst) return cst;
    if (lt_path_is_dir(path)) return load_folder(path, ANY_FOLDER, path, mc, out);
    /* a file: one of a folder adapter's own files stands for its folder */
    const char *sl = strrchr(path, '/'), *base = sl ? sl + 1 : path;
    int want = !strcmp(base, "adapter_model.safetensors") ? PEFT_FOLDER
               : !strcmp(base, "adapters.safetensors")    ? MLX_FOLDER
               : !strcmp(base, "adapter_config.json")     ? ANY_FOLDER
                                                          : -1;
    if (want >= 0) {
        char dir[4096];
        if (!sl)
            snprintf(dir, sizeof dir, ".");
        else if ((size_t)(sl - path) >= sizeof dir)
            return lt_error(LT_ERR_ARG, "%s: path too long", path);
        else
            snprintf(dir, sizeof dir, "%.*s", sl == path ? 1 : (int)(sl - path), path);
        return load_folder(dir, want, path, mc, out);
    }
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return lt_error(LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got != 4 || memcmp(magic, "GGUF", 4))
        return lt_error(LT_ERR_FORMAT,
                        "%s: not an adapter: expected a PEFT or mlx-lm adapter folder (the "
                        "folder with adapter_config.json, or its adapter_model.safetensors / "
                        "adapters.safetensors) or a llama.cpp adapter .gguf",
                        path);
    return lt_adapter_load_gguf_(path, mc, out);
}
