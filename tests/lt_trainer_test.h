/* lt_trainer_test.h - host copies of trainer tensors for tests (the trainer hands out no
 * pointers: lt_trainer_read / lt_trainer_write, train.h). */
#ifndef LT_TRAINER_TEST_H
#define LT_TRAINER_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "loratune/train.h"

/* A malloc'd copy of part of tensor i (numel floats); exits on failure (a test bug). */
static inline float *lt_tt_get(const lt_trainer *tr, int i, lt_tensor_part part) {
    lt_train_tensor t;
    if (lt_trainer_tensor(tr, i, &t)) exit(2);
    float *x = malloc(sizeof(float) * (size_t)(t.numel ? t.numel : 1));
    if (!x || lt_trainer_read(tr, i, part, 0, x, t.numel)) {
        fprintf(stderr, "lt_tt_get: %s\n", lt_errmsg());
        exit(2);
    }
    return x;
}
/* Writes x (numel floats) into part of tensor i and frees it. */
static inline void lt_tt_put(lt_trainer *tr, int i, lt_tensor_part part, float *x) {
    lt_train_tensor t;
    if (lt_trainer_tensor(tr, i, &t) || lt_trainer_write(tr, i, part, 0, x, t.numel)) {
        fprintf(stderr, "lt_tt_put: %s\n", lt_errmsg());
        exit(2);
    }
    free(x);
}

#endif
