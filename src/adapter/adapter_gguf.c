/* adapter_gguf.c - llama.cpp LoRA adapter GGUF files, as convert_lora_to_gguf.py writes them
 * and llama.cpp's llama_adapter_lora_init reads them.
 *
 * Metadata: general.architecture (the base's: "llama" for llama / mistral, "qwen2"),
 * general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32).
 * Tensors: blk.<l>.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight.lora_a
 * with ggml ne = [in, r] (outermost-first [r][in], PEFT's A as is) and .lora_b ne = [r, out]
 * ([out][r], PEFT's B). llama.cpp scales by alpha / r with r = lora_b's ne[0] (alpha absent or
 * 0: by 1), so an rsLoRA adapter is written with alpha * sqrt(r) (the same scale).
 * llama-arch GGUF bases hold q/k rows in the interleaved rotary order (the converter permutes
 * them), so B's q/k rows are permuted the same way here and back on reading; qwen2 is not
 * permuted. DoRA has no llama.cpp form: LT_ERR_UNSUPPORTED. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"
#include "loratune/gguf.h"
#include "loratune/model.h"
#include "loratune/quant.h"

static const char *gguf_lin[LT_N_TARGETS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                             "ffn_gate", "ffn_up", "ffn_down"};

static const char *gguf_arch(lt_arch a) {
    return a == LT_ARCH_QWEN2 ? "qwen2" : "llama"; /* llama.cpp converts mistral as llama */
}

static int permuted(const lt_model_config *mc, int t) {
    return mc->arch != LT_ARCH_QWEN2 && (t == 0 || t == 1);
}

/* HF half-split row order -> interleaved pairs: dst row h*hd + 2i + j = src row h*hd + j*hd/2 + i
 */
static void permute_hf_to_interleaved(const float *src, float *dst, int n_heads, int hd, int cols) {
    int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + ((size_t)h * hd + 2 * i + j) * cols,
                       src + ((size_t)h * hd + j * half + i) * cols, sizeof(float) * (size_t)cols);
}

lt_status lt_adapter_save_gguf(const lt_adapter *a, const lt_model_config *mc, lt_dtype dtype,
                               const char *path) {
    if (a->method == LT_METHOD_DORA)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: llama.cpp has no DoRA adapters: merge the "
                        "adapter into the model (loratune fuse) or export PEFT / mlx-lm",
                        path);
    if (dtype != LT_DTYPE_F32 && dtype != LT_DTYPE_F16 && dtype != LT_DTYPE_BF16)
        return lt_error(LT_ERR_ARG, "%s: adapter dtype %s: expected F32, F16 or BF16", path,
                        lt_dtype_name(dtype));
    lt_status st = lt_adapter_check_fits_(a, mc, path);
    if (st) return st;
    if ((st = lt_adapter_check_finite_(a, path, "refusing to write it"))) return st;
    lt_gguf_writer *w = NULL;
    int nl = a->n_layers * LT_N_TARGETS, nb = 0;
    void **bufs = lt_calloc((size_t)nl * 2, sizeof *bufs);
    float *tmp = NULL;
    char name[128];
    if (!bufs) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    float alpha = a->rslora ? a->alpha * sqrtf((float)a->r) : a->alpha;
    if ((st = lt_gguf_writer_create(&w))) goto done;
    if ((st = lt_gguf_writer_set_str(w, "general.architecture", gguf_arch(mc->arch)))) goto done;
    if ((st = lt_gguf_writer_set_str(w, "general.type", "adapter"))) goto done;
    if ((st = lt_gguf_writer_set_str(w, "general.name",
                                     a->base_model[0] ? a->base_model : "loratune adapter")))
        goto done;
    if ((st = lt_gguf_writer_set_u32(w, "general.file_type",
                                     dtype == LT_DTYPE_F32   ? 0
                                     : dtype == LT_DTYPE_F16 ? 1
                                                             : 32)))
        goto done;
    if ((st = lt_gguf_writer_set_str(w, "adapter.type", "lora"))) goto done;
    if ((st = lt_gguf_writer_set_f32(w, "adapter.lora.alpha", alpha))) goto done;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            if (!L->A) continue;
            for (int k = 0; k < 2; k++) {
                int64_t shape[2] = {k == 0 ? a->r : L->out, k == 0 ? L->in : a->r};
                size_t n = (size_t)(shape[0] * shape[1]);
                const float *src = k == 0 ? L->A : L->B;
                if (k == 1 && permuted(mc, t)) {
                    free(tmp);
                    if (!(tmp = lt_malloc(n * sizeof(float)))) goto nomem;
                    permute_hf_to_interleaved(L->B, tmp, t == 0 ? mc->n_heads : mc->n_kv_heads,
                                              mc->head_dim, a->r);
                    src = tmp;
                }
                size_t es = dtype == LT_DTYPE_F32 ? 4 : 2;
                void *buf = lt_malloc(n * es);
                if (!buf) goto nomem;
                bufs[nb++] = buf;
                for (size_t i = 0; i < n; i++) {
                    if (dtype == LT_DTYPE_F32)
                        ((float *)buf)[i] = src[i];
                    else
                        ((uint16_t *)buf)[i] =
                            dtype == LT_DTYPE_F16 ? lt_f32_to_f16(src[i]) : lt_f32_to_bf16(src[i]);
                }
                snprintf(name, sizeof name, "blk.%d.%s.weight.%s", l, gguf_lin[t],
                         k == 0 ? "lora_a" : "lora_b");
                { /* what is written, after the conversion (a value past f16's range is inf) */
                    char where[700];
                    snprintf(where, sizeof where, "%s: tensor %s", path, name);
                    if ((st = lt_check_finite(dtype, buf, (int64_t)n, shape[1], where,
                                              "refusing to write it")))
                        goto done;
                }
                if ((st = lt_gguf_writer_add_tensor(w, name, dtype, 2, shape, buf, n * es)))
                    goto done;
            }
        }
    st = lt_gguf_writer_write(w, path);
    goto done;
nomem:
    st = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
done:
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
    free(bufs);
    free(tmp);
    lt_gguf_writer_free(w);
    return st;
}

static lt_status want_str(const lt_gguf *g, const char *key, const char *want, const char *why) {
    const char *s;
    size_t n;
    lt_status st = lt_gguf_get_str(g, key, &s, &n);
    if (st == LT_ERR_NOTFOUND)
        return lt_error(LT_ERR_FORMAT, "%s: missing metadata key %s (expected \"%s\": %s)",
                        lt_gguf_path(g), key, want, why);
    if (st) return st;
    if (n != strlen(want) || memcmp(s, want, n))
        return lt_error(LT_ERR_FORMAT, "%s: %s = \"%.*s\", expected \"%s\" (%s)", lt_gguf_path(g),
                        key, (int)n, s, want, why);
    return LT_OK;
}

lt_status lt_adapter_load_gguf_(const char *path, const lt_model_config *mc, lt_adapter **out) {
    *out = NULL;
    lt_gguf *g = NULL;
    lt_adapter *a = NULL;
    float *tmp = NULL;
    lt_status st = lt_gguf_open(path, &g);
    if (st) return st;
    if ((st = want_str(g, "general.type", "adapter", "a llama.cpp adapter file"))) goto done;
    if ((st = want_str(g, "adapter.type", "lora", "only LoRA adapters are supported"))) goto done;
    if ((st = want_str(g, "general.architecture", gguf_arch(mc->arch),
                       "the base model's architecture")))
        goto done;
    float alpha = 0.0f;
    st = lt_gguf_get_f32(g, "adapter.lora.alpha", &alpha);
    if (st && st != LT_ERR_NOTFOUND) goto done;
    st = LT_OK;
    /* rank: from the first lora_a */
    int r = -1;
    for (size_t i = 0; i < lt_gguf_n_tensors(g) && r < 0; i++) {
        const lt_tensor_view *tv = lt_gguf_tensor(g, i);
        size_t n = strlen(tv->name);
        if (n > 7 && !strcmp(tv->name + n - 7, ".lora_a") && tv->ndim == 2) r = (int)tv->shape[0];
    }
    if (r < 1 || r > 65536) {
        st = lt_error(LT_ERR_FORMAT,
                      "%s: no blk.N.*.weight.lora_a tensor with a rank in [1, 65536]", path);
        goto done;
    }
    /* llama.cpp: scale = alpha / r, or 1 when alpha is 0 or absent */
    if ((st = lt_adapter_new_(LT_METHOD_LORA, r, alpha != 0.0f ? alpha : (float)r, 0, mc->n_layers,
                              &a)))
        goto done;
    for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *tv = lt_gguf_tensor(g, i);
        int l = -1, u = 0, t = -1, k = -1;
        if (sscanf(tv->name, "blk.%d.%n", &l, &u) == 1 && u > 0)
            for (int tt = 0; tt < LT_N_TARGETS && t < 0; tt++) {
                size_t ml = strlen(gguf_lin[tt]);
                const char *rest = tv->name + u;
                if (strncmp(rest, gguf_lin[tt], ml)) continue;
                if (!strcmp(rest + ml, ".weight.lora_a")) t = tt, k = 0;
                if (!strcmp(rest + ml, ".weight.lora_b")) t = tt, k = 1;
            }
        if (t < 0 || l < 0) {
            st = lt_error(LT_ERR_UNSUPPORTED,
                          "%s: tensor %s: not a LoRA tensor of a decoder "
                          "linear (expected blk.N.attn_q.weight.lora_a and the like)",
                          path, tv->name);
            goto done;
        }
        if (l >= mc->n_layers) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor %s: layer %d, the model has %d", path,
                          tv->name, l, mc->n_layers);
            goto done;
        }
        if ((st = lt_adapter_alloc_lin_(a, mc, l, t))) goto done;
        lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
        int64_t e0 = k == 0 ? r : li->out, e1 = k == 0 ? li->in : r;
        if (tv->ndim != 2 || tv->shape[0] != e0 || tv->shape[1] != e1) {
            char got[64];
            lt_adapter_shape_str_(tv, got, sizeof got);
            st = lt_error(LT_ERR_FORMAT,
                          "%s: tensor %s: shape %s (outermost first), expected "
                          "[%lld, %lld] (rank %d, the model's %s is %d -> %d)",
                          path, tv->name, got, (long long)e0, (long long)e1, r, lt_target_name(t),
                          li->in, li->out);
            goto done;
        }
        if (tv->dtype != LT_DTYPE_F32 && tv->dtype != LT_DTYPE_F16 && tv->dtype != LT_DTYPE_BF16 &&
            tv->dtype != LT_DTYPE_Q8_0) {
            st = lt_error(LT_ERR_UNSUPPORTED,
                          "%s: tensor %s: dtype %s (expected F32, F16, BF16 "
                          "or Q8_0)",
                          path, tv->name, lt_dtype_name(tv->dtype));
            goto done;
        }
        float *dst = k == 0 ? li->A : li->B;
        if ((st = lt_to_f32(tv->dtype, tv->data, dst, e0 * e1))) goto done;
        if (k == 1 && permuted(mc, t)) {
            free(tmp);
            if (!(tmp = lt_malloc(sizeof(float) * (size_t)mc->head_dim * r))) {
                st = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            lt_permute_rows_interleaved_to_hf(dst, t == 0 ? mc->n_heads : mc->n_kv_heads,
                                              mc->head_dim, r, tmp);
        }
    }
    /* both halves of every adapted linear */
    for (int l = 0; l < mc->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            if (!li->A) continue;
            for (int k = 0; k < 2; k++) {
                char nm[128];
                snprintf(nm, sizeof nm, "blk.%d.%s.weight.%s", l, gguf_lin[t],
                         k == 0 ? "lora_a" : "lora_b");
                if (!lt_gguf_find_tensor(g, nm)) {
                    st = lt_error(LT_ERR_FORMAT, "%s: missing tensor %s (its other half is there)",
                                  path, nm);
                    goto done;
                }
            }
        }
    lt_adapter_refresh_(a);
done:
    free(tmp);
    lt_gguf_close(g);
    if (st) {
        lt_adapter_free(a);
        return st;
    }
    *out = a;
    return LT_OK;
}
