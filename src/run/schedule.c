/* schedule.c - learning-rate multipliers with linear warmup, the formulas of transformers'
 * optimization.py (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup with num_cycles = 0.5), so a run here and a Trainer run
 * with the same settings use the same learning rate at every step. `step` is the 0-based
 * index of the update (LambdaLR's last_epoch when that update runs). */
#include <math.h>

#include "loratune/run.h"

double lt_lr_lambda(lt_lr_schedule s, int64_t step, int64_t warmup, int64_t total) {
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    double span = (double)(total - warmup > 1 ? total - warmup : 1);
    switch (s) {
    case LT_LR_CONSTANT:
        return 1.0;
    case LT_LR_LINEAR: {
        double v = (double)(total - step) / span;
        return v > 0 ? v : 0.0;
    }
    case LT_LR_COSINE: {
        double progress = (double)(step - warmup) / span;
        double v = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return v > 0 ? v : 0.0;
    }
    }
    return 1.0;
}
