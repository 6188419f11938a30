/* bench_attention.c - causal attention forward + backward on one backend: the fp32 kernels
 * (attention_fwd / attention_bwd) against the bf16 compute mode's (attention_fwd_bf16 /
 * attention_bwd_bf16) where the backend has them, same inputs, timed after a warm-up.
 *
 *   bench_attention [--device cpu|cuda] [--batch B] [--seq T] [--heads NH] [--kv-heads NKV]
 *                   [--head-dim HD] [--iters N]
 *
 * Prints one JSON line: milliseconds per forward and per backward for each mode and TFLOP/s
 * counted as FlashAttention's papers count causal attention (forward 2 * 2 * B * NH * T^2 *
 * HD / 2, backward 2.5x that). The anchor is bench/torch_attention.py (PyTorch's SDPA, flash
 * backend, bf16) on the same shape, in the same call (bench/run_cuda_speed.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loratune/backend.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *dev_rand(const lt_backend *be, int64_t n, uint64_t *s) {
    float *h = malloc(sizeof(float) * (size_t)n), *d = be->op->alloc(be, sizeof(float) * (size_t)n);
    if (!h || !d) {
        fprintf(stderr, "bench_attention: out of memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (float)((*s >> 40) * (1.0 / 8388608.0)) - 1.0f;
    }
    be->op->set(be, d, h, sizeof(float) * (size_t)n);
    free(h);
    return d;
}

int main(int argc, char **argv) {
    const char *device = "cpu";
    int B = 8, T = 2048, NH = 32, NKV = 8, HD = 64, iters = 5;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto bad;
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--seq")) T = atoi(v);
        else if (!strcmp(a, "--heads")) NH = atoi(v);
        else if (!strcmp(a, "--kv-heads")) NKV = atoi(v);
        else if (!strcmp(a, "--head-dim")) HD = atoi(v);
        else if (!strcmp(a, "--iters")) iters = atoi(v);
        else goto bad;
    }
    if (B < 1 || T < 1 || NH < 1 || NKV < 1 || NH % NKV || HD < 1 || iters < 1) goto bad;
    const lt_backend *be = lt_backend_cpu();
    lt_backend *cuda = NULL;
    if (!strcmp(device, "cuda")) {
        if (lt_backend_cuda_create(0, &cuda)) {
            fprintf(stderr, "bench_attention: --device cuda: %s\n", lt_errmsg());
            return 1;
        }
        be = cuda;
    } else if (strcmp(device, "cpu")) {
        goto bad;
    }
    const int64_t N = (int64_t)B * T, nq = N * NH * HD, nk = N * NKV * HD;
    uint64_t s = 42;
    float *q = dev_rand(be, nq, &s), *k = dev_rand(be, nk, &s), *v = dev_rand(be, nk, &s);
    float *dout = dev_rand(be, nq, &s), *out = dev_rand(be, nq, &s), *lse = dev_rand(be, N * NH, &s);
    float *dq = dev_rand(be, nq, &s), *dk = dev_rand(be, nk, &s), *dv = dev_rand(be, nk, &s);
    const double fwd_flop = 2.0 * 2.0 * B * NH * (double)T * T * HD / 2.0;
    printf("{\"bench\":\"loratune_attention\",\"device\":\"%s\",\"B\":%d,\"T\":%d,\"NH\":%d,"
           "\"NKV\":%d,\"HD\":%d,\"iters\":%d",
           be->desc ? be->desc : be->name, B, T, NH, NKV, HD, iters);
    for (int mode = 0; mode < 2; mode++) {
        void (*fwd)(const lt_backend *, float *, float *, const float *, const float *,
                    const float *, const int32_t *, const int32_t *, int, int, int, int, int, int) =
            mode ? be->op->attention_fwd_bf16 : be->op->attention_fwd;
        void (*bwd)(const lt_backend *, float *, float *, float *, const float *, const float *,
                    const float *, const float *, const float *, const float *, const int32_t *,
                    const int32_t *, int, int, int, int, int, int) =
            mode ? be->op->attention_bwd_bf16 : be->op->attention_bwd;
        if (!fwd || !bwd) continue;
        double tf = 0, tb = 0;
        for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
            double t0 = now_s();
            fwd(be, out, lse, q, k, v, NULL, NULL, B, T, NH, NKV, HD, 0);
            be->op->sync(be);
            double t1 = now_s();
            bwd(be, dq, dk, dv, dout, q, k, v, out, lse, NULL, NULL, B, T, NH, NKV, HD, 0);
            be->op->sync(be);
            double t2 = now_s();
            if (it) tf += t1 - t0, tb += t2 - t1;
        }
        tf /= iters, tb /= iters;
        printf(",\"%s\":{\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"fwd_tflops\":%.2f,\"bwd_tflops\":%.2f}",
               mode ? "bf16" : "f32", 1e3 * tf, 1e3 * tb, fwd_flop / tf * 1e-12,
               2.5 * fwd_flop / tb * 1e-12);
    }
    printf("}\n");
    float *bufs[] = {q, k, v, dout, out, lse, dq, dk, dv};
    for (int i = 0; i < 9; i++)
        be->op->free(be, bufs[i]);
    lt_backend_cuda_free(cuda);
    return 0;
bad:
    fprintf(stderr, "usage: bench_attention [--device cpu|cuda] [--batch B] [--seq T] [--heads NH]"
                    " [--kv-heads NKV] [--head-dim HD] [--iters N]\n");
    return 2;
}
