/* adapter_apply.c - lt_adapter_delta_create: an adapter as the lt_model_delta that
 * lt_model_forward (src/model/forward.c) applies without merging, per adapted linear
 *   LoRA: y = x W^T + scale (x A^T) B^T (+ bias)
 *   DoRA: y = d * (x W^T + scale (x A^T) B^T) (+ bias),  d = mag / ||W + scale B A||_row
 * which is PEFT's forward (its DoRA adds (d - 1) x W^T + d scale x A^T B^T to the base output;
 * the bias is not rescaled). d depends only on the weights, so it is computed here, once, from
 * W read a block of rows at a time through the model's weight provider (loaded or lazy).
 * The delta is one allocation: the struct, its lin table, then DoRA's factors. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"

/* Floats of W rows converted at a time (or one row, when longer). */
#define DORA_WBLOCK (64 * 1024)

/* d[o] = mag[o] / ||W[o] + s B[o] A||, o < out, for linear t of layer l (norm summed in double
 * over the row built in float, as PEFT's weight norm in float32 is close to). */
static lt_status dora_factors(const lt_model *m, const lt_adapter *a, const lt_adapter_lin *L,
                              int l, int t, float *wbuf, float *rows, int nt, float *d) {
    const float s = lt_adapter_scale(a);
    const int in = L->in, r = a->r;
    int64_t per = DORA_WBLOCK / in;
    if (per < 1) per = 1;
    for (int64_t o0 = 0; o0 < L->out; o0 += per) {
        const int64_t nr = L->out - o0 < per ? L->out - o0 : per;
        const float *W;
        lt_status st = lt_model_weight_f32(m, lt_model_lin_weight(t), l, o0, nr, wbuf, &W);
        if (st) return lt_error_wrap(st, "adapter delta");
#pragma omp parallel for schedule(static) num_threads(nt) if (nr * in * r > 65536)
        for (int64_t i = 0; i < nr; i++) {
            const int64_t o = o0 + i;
            float *row = rows + (int64_t)omp_get_thread_num() * in;
            memcpy(row, W + i * in, sizeof(float) * (size_t)in);
            for (int k = 0; k < r; k++) {
                float b = s * L->B[o * r + k];
                const float *ar = L->A + (int64_t)k * in;
                for (int j = 0; j < in; j++)
                    row[j] += b * ar[j];
            }
            double ss = 0.0;
            for (int j = 0; j < in; j++)
                ss += (double)row[j] * row[j];
            float norm = (float)sqrt(ss);
            d[o] = norm > 0.0f ? L->mag[o] / norm : 0.0f;
        }
    }
    return LT_OK;
}

lt_status lt_adapter_delta_create(const lt_adapter *a, const lt_model *m, lt_model_delta **out) {
    *out = NULL;
    if (!a || !m) return lt_error(LT_ERR_ARG, "adapter delta: no adapter or no model");
    lt_status st = lt_adapter_check_fits_(a, &m->config, "adapter delta");
    if (st) return st;
    const int n = a->n_layers * LT_N_TARGETS;
    const int dora = a->method == LT_METHOD_DORA;
    int64_t total = 0;
    int max_in = 1;
    for (int i = 0; dora && i < n; i++)
        if (a->lin[i].A) {
            total += a->lin[i].out;
            if (a->lin[i].in > max_in) max_in = a->lin[i].in;
        }
    if (dora && (st = lt_model_check_readable(m, "adapter delta"))) return st;
    lt_model_delta *d = lt_malloc(sizeof *d + sizeof(lt_model_delta_lin) * (size_t)n +
                                  sizeof(float) * (size_t)total);
    if (!d) return lt_error(LT_ERR_NOMEM, "adapter delta: out of memory");
    lt_model_delta_lin *lin = (lt_model_delta_lin *)(d + 1);
    float *f = (float *)(lin + n);
    d->n_layers = a->n_layers;
    d->r = a->r;
    d->scale = lt_adapter_scale(a);
    d->lin = lin;
    d->be = NULL; /* host memory */
    for (int i = 0; i < n; i++) {
        lin[i].A = a->lin[i].A;
        lin[i].B = a->lin[i].B;
        lin[i].d = NULL;
    }
    if (dora && total > 0) {
        const int nt = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
        const int64_t wb = max_in > DORA_WBLOCK ? max_in : DORA_WBLOCK; /* >= one row */
        float *wbuf = lt_malloc(sizeof(float) * ((size_t)wb + (size_t)nt * max_in));
        if (!wbuf) {
            free(d);
            return lt_error(LT_ERR_NOMEM, "adapter delta: out of memory");
        }
        for (int i = 0; i < n && st == LT_OK; i++) {
            if (!a->lin[i].A) continue;
            lin[i].d = f;
            st = dora_factors(m, a, &a->lin[i], i / LT_N_TARGETS, i % LT_N_TARGETS, wbuf, wbuf + wb,
                              nt, f);
            f += a->lin[i].out;
        }
        free(wbuf);
        if (st) {
            free(d);
            return st;
        }
    }
    *out = d;
    return LT_OK;
}

void lt_adapter_delta_free(lt_model_delta *d) {
    free(d);
}
