/* merge.c - folds a LoRA / DoRA adapter into a model's fp32 weights (loratune fuse), as
 * PEFT's merge_and_unload does:
 *   LoRA: W <- W + s B A
 *   DoRA: W <- (mag / ||W + s B A||_row) (W + s B A), the norm taken per output row (over
 *         the input dimension), as PEFT's DoraLinearLayer.get_weight_norm for nn.Linear
 * with s = alpha / r (alpha / sqrt(r) with rslora), A [r][in], B [out][r], mag [out].
 * Every shape is checked against the model before any weight changes, so a failed merge
 * leaves the model untouched. The low-rank product is one sgemm per adapted linear. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/adapter.h"

/* Same formula as lt_adapter_scale (adapter.h); kept here so merging depends on nothing but
 * the public struct. */
static float merge_scale(const lt_adapter *a) {
    return a->rslora ? a->alpha / sqrtf((float)a->r) : a->alpha / (float)a->r;
}

/* W of target t (LT_TARGET_* order q,k,v,o,gate,up,down) in layer l, and its shape. */
static float *target_weight(const lt_model *m, int64_t l, int t, int *out, int *in) {
    const lt_model_config *c = &m->config;
    int D = c->dim, F = c->ffn_dim;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    const lt_model_weights *w = &m->w;
    switch (t) {
    case 0:
        *out = QD, *in = D;
        return w->wq + l * QD * D;
    case 1:
        *out = KD, *in = D;
        return w->wk + l * KD * D;
    case 2:
        *out = KD, *in = D;
        return w->wv + l * KD * D;
    case 3:
        *out = D, *in = QD;
        return w->wo + l * D * QD;
    case 4:
        *out = F, *in = D;
        return w->w_gate + l * F * D;
    case 5:
        *out = F, *in = D;
        return w->w_up + l * F * D;
    default:
        *out = D, *in = F;
        return w->w_down + l * D * F;
    }
}

lt_status lt_adapter_merge(lt_model *m, const lt_adapter *a) {
    if (!m || !a) return lt_error(LT_ERR_ARG, "lt_adapter_merge: model and adapter are required");
    lt_status st = lt_model_check_weights(m, "lt_adapter_merge");
    if (st) return st;
    const lt_model_config *c = &m->config;
    if (a->method != LT_METHOD_LORA && a->method != LT_METHOD_DORA)
        return lt_error(LT_ERR_ARG,
                        "lt_adapter_merge: adapter method '%s' cannot be merged "
                        "(expected lora or dora)",
                        lt_train_method_name(a->method));
    if (a->r < 1)
        return lt_error(LT_ERR_ARG, "lt_adapter_merge: adapter r = %d: expected >= 1", a->r);
    if (a->n_layers != c->n_layers)
        return lt_error(LT_ERR_ARG, "lt_adapter_merge: adapter is for %d layers, the model has %d",
                        a->n_layers, c->n_layers);
    if (!a->lin) return lt_error(LT_ERR_ARG, "lt_adapter_merge: adapter has no tensors");
    /* check everything first: a failed merge must not leave a half-merged model */
    int n_adapted = 0;
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            if (!li->A) continue;
            int out, in;
            target_weight(m, l, t, &out, &in);
            if (!li->B || li->out != out || li->in != in)
                return lt_error(
                    LT_ERR_ARG,
                    "lt_adapter_merge: layer %d %s: adapter is [%d x %d]%s, the model's "
                    "weight is [%d x %d]",
                    l, lt_target_name(t), li->out, li->in, li->B ? "" : " without B", out, in);
            if (a->method == LT_METHOD_DORA && !li->mag)
                return lt_error(LT_ERR_ARG,
                                "lt_adapter_merge: layer %d %s: DoRA adapter without "
                                "a magnitude vector",
                                l, lt_target_name(t));
            n_adapted++;
        }
    }
    if (n_adapted == 0)
        return lt_error(LT_ERR_ARG, "lt_adapter_merge: adapter adapts no linear layer");
    float s = merge_scale(a);
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            if (!li->A) continue;
            int out, in;
            float *W = target_weight(m, l, t, &out, &in);
            /* W (out x in) += s * B (out x r) A (r x in) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, a->r, s, li->B, a->r,
                        li->A, in, 1.0f, W, in);
            if (a->method != LT_METHOD_DORA) continue;
            for (int o = 0; o < out; o++) {
                float *row = W + (int64_t)o * in;
                double ss = 0.0;
                for (int i = 0; i < in; i++)
                    ss += (double)row[i] * row[i];
                float norm = (float)sqrt(ss);
                float f = norm > 0.0f ? li->mag[o] / norm : 0.0f;
                for (int i = 0; i < in; i++)
                    row[i] *= f;
            }
        }
    }
    return LT_OK;
}
