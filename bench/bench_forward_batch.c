/* bench_forward_batch.c - decode tokens/s of lt_model_forward_batch for batches of 1..K rows
 * (each its own KV cache, prompt prefilled), against lt_model_forward one row at a time: what
 * continuous batching gains without HTTP. Not a test.
 *
 * usage: build/bench_forward_batch MODEL.gguf [steps=64] [max_rows=8] [min_rows=1] [alone=1]
 *        [kv=f16|f32 (default f16)]
 * (threads: OMP_NUM_THREADS; alone 0: the batched steps only, e.g. under perf) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loratune/model.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
/* CPU seconds of the process: on a shared machine, what the work cost whatever the waiting */
static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [steps] [max_rows]\n", argv[0]);
        return 2;
    }
    int steps = argc > 2 ? atoi(argv[2]) : 64, K = argc > 3 ? atoi(argv[3]) : 8;
    int K0 = argc > 4 ? atoi(argv[4]) : 1, alone = argc > 5 ? atoi(argv[5]) : 1;
    const lt_kv_type kt = argc > 6 && !strcmp(argv[6], "f32") ? LT_KV_F32 : LT_KV_F16;
    if (K0 < 1) K0 = 1;
    lt_model *m = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    if (lt_model_load(argv[1], &lo, &m)) {
        fprintf(stderr, "%s\n", lt_errmsg());
        return 1;
    }
    const int V = m->config.vocab_size, NP = 23, CTX = 512;
    lt_kv_cache **kv = calloc((size_t)K, sizeof *kv);
    lt_batch_row *rows = calloc((size_t)K, sizeof *rows);
    float *logits = malloc(sizeof(float) * (size_t)K * V);
    int32_t prompt[23];
    for (int i = 0; i < NP; i++)
        prompt[i] = 1 + 37 * i;
    for (int n = K0; n <= K; n *= 2) {
        for (int i = 0; i < n; i++) {
            if (!kv[i] && lt_kv_cache_create_typed(m, CTX, K > 64 ? K : 64, kt, &kv[i])) return 1;
            lt_kv_cache_set_qact(kv[i], 1);
            if (lt_model_forward(m, NULL, kv[i], prompt, NP, 0, logits, 0)) return 1;
        }
        double t0 = now(), c0 = cpu();
        for (int s = 0; s < steps; s++) {
            for (int i = 0; i < n; i++)
                rows[i] = (lt_batch_row){.kv = kv[i], .token = (int32_t)(100 + s + i), .pos = NP + s};
            if (lt_model_forward_batch(m, kv[0], rows, n, logits)) {
                fprintf(stderr, "%s\n", lt_errmsg());
                return 1;
            }
        }
        double tb = now() - t0, cb = cpu() - c0;
        t0 = now(), c0 = cpu();
        for (int s = 0; alone && s < steps; s++)
            for (int i = 0; i < n; i++) {
                int32_t id = (int32_t)(100 + s + i);
                if (lt_model_forward(m, NULL, kv[i], &id, 1, NP + s, logits, 0)) return 1;
            }
        double t1 = now() - t0, c1 = cpu() - c0;
        printf("%d rows: batched %.1f tokens/s (%.2f ms/step; %.1f per CPU-second)", n,
               n * steps / tb, 1000 * tb / steps, n * steps / cb);
        if (alone)
            printf(", one at a time %.1f tokens/s (%.1f per CPU-second); gain %.2fx wall, %.2fx CPU",
                   n * steps / t1, n * steps / c1, t1 / tb, c1 / cb);
        printf("\n");
        fflush(stdout);
    }
    for (int i = 0; i < K; i++)
        lt_kv_cache_free(kv[i]);
    free(kv);
    free(rows);
    free(logits);
    lt_model_free(m);
    return 0;
}
