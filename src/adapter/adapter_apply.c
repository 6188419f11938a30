/* adapter_apply.c - lt_model_set_adapter: attaches an adapter to a model for inference without
 * merging. lt_model_forward (src/model/forward.c) then computes, per adapted linear,
 *   LoRA: y = x W^T + scale (x A^T) B^T (+ bias)
 *   DoRA: y = d * (x W^T + scale (x A^T) B^T) (+ bias),  d = mag / ||W + scale B A||_row
 * which is PEFT's forward (its DoRA adds (d - 1) x W^T + d scale x A^T B^T to the base output;
 * the bias is not rescaled). d depends only on the weights, so it is computed here, once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"

static const float *weight_of(const lt_model *m, int l, int t) {
    const lt_model_config *c = &m->config;
    int64_t D = c->dim, QD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    switch (t) {
    case 0:
        return m->w.wq + l * QD * D;
    case 1:
        return m->w.wk + l * KD * D;
    case 2:
        return m->w.wv + l * KD * D;
    case 3:
        return m->w.wo + l * D * QD;
    case 4:
        return m->w.w_gate + l * F * D;
    case 5:
        return m->w.w_up + l * F * D;
    default:
        return m->w.w_down + l * D * F;
    }
}

lt_status lt_model_set_adapter(lt_model *m, const lt_adapter *a) {
    free(m->adapter_dora_scale);
    m->adapter_dora_scale = NULL;
    m->adapter = NULL;
    if (!a) return LT_OK;
    lt_status st = lt_adapter_check_fits_(a, &m->config, "set adapter");
    if (st) return st;
    if (a->method != LT_METHOD_DORA) {
        m->adapter = a;
        return LT_OK;
    }
    if ((st = lt_model_check_weights(m, "set adapter"))) return st;
    int n = a->n_layers * LT_N_TARGETS;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        if (a->lin[i].A) total += a->lin[i].out;
    float **tab = lt_malloc(sizeof(float *) * (size_t)n + sizeof(float) * (size_t)total);
    if (!tab) return lt_error(LT_ERR_NOMEM, "set adapter: out of memory");
    float *p = (float *)(tab + n);
    float s = lt_adapter_scale(a);
    float *row = NULL;
    int max_in = 0;
    for (int i = 0; i < n; i++)
        if (a->lin[i].A && a->lin[i].in > max_in) max_in = a->lin[i].in;
    if (!(row = lt_malloc(sizeof(float) * (size_t)(max_in > 0 ? max_in : 1)))) {
        free(tab);
        return lt_error(LT_ERR_NOMEM, "set adapter: out of memory");
    }
    for (int i = 0; i < n; i++) {
        const lt_adapter_lin *L = &a->lin[i];
        tab[i] = NULL;
        if (!L->A) continue;
        tab[i] = p;
        const float *W = weight_of(m, i / LT_N_TARGETS, i % LT_N_TARGETS);
        for (int o = 0; o < L->out; o++) {
            const float *wr = W + (int64_t)o * L->in;
            memcpy(row, wr, sizeof(float) * (size_t)L->in);
            for (int k = 0; k < a->r; k++) {
                float b = s * L->B[(int64_t)o * a->r + k];
                const float *ar = L->A + (int64_t)k * L->in;
                for (int j = 0; j < L->in; j++)
                    row[j] += b * ar[j];
            }
            double ss = 0.0;
            for (int j = 0; j < L->in; j++)
                ss += (double)row[j] * row[j];
            float norm = (float)sqrt(ss);
            p[o] = norm > 0.0f ? L->mag[o] / norm : 0.0f;
        }
        p += L->out;
    }
    free(row);
    m->adapter_dora_scale = tab;
    m->adapter = a;
    return LT_OK;
}
