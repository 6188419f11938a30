/* ckpt_diff.h - tests' comparison of two checkpoints (safetensors): header-only, shared by
 * test_run_zero.c and test_nccl.c. */
#ifndef LT_TEST_CKPT_DIFF_H
#define LT_TEST_CKPT_DIFF_H

#include <math.h>
#include <string.h>

#include "loratune/safetensors.h"

/* two checkpoints: the same tensors, each within tol of the largest |value| of its tensor;
 * the moments not all zero */
static inline double ckpt_diff(const char *fa, const char *fb, int *moments) {
    lt_safetensors *a = NULL, *b = NULL;
    double w = INFINITY;
    *moments = 0;
    if (lt_safetensors_open(fa, &a) || lt_safetensors_open(fb, &b)) goto done;
    if (lt_safetensors_count(a) != lt_safetensors_count(b) || lt_safetensors_count(a) == 0)
        goto done;
    w = 0;
    for (size_t k = 0; k < lt_safetensors_count(a); k++) {
        const lt_tensor_view *va = lt_safetensors_tensor(a, k);
        const lt_tensor_view *vb = lt_safetensors_find(b, va->name);
        if (!vb || lt_tensor_numel(va) != lt_tensor_numel(vb)) {
            w = INFINITY;
            break;
        }
        const float *x = va->data, *y = vb->data;
        double d = 0, m = 0;
        for (int64_t i = 0; i < lt_tensor_numel(va); i++) {
            d = fmax(d, fabs((double)x[i] - y[i]));
            m = fmax(m, fabs((double)x[i]));
        }
        if (!strncmp(va->name, "optimizer.", 10) && m > 0) (*moments)++;
        w = fmax(w, m > 0 ? d / m : d);
    }
done:
    lt_safetensors_close(a);
    lt_safetensors_close(b);
    return w;
}

#endif
