/* bench_gemm.c - the machine's measured GEMM peak, the denominator of bench/RESULTS.md's
 * "fraction of GEMM peak" column.
 *
 * fp32: OpenBLAS cblas_sgemm (row-major, C = A B^T as a linear layer computes it) on square
 * 2048^3 and on the SmolLM2-135M MLP shape at B4 x T512 (M 2048 tokens, N 1536, K 576), with
 * the requested OpenMP/OpenBLAS thread count; best of --reps after one untimed call. Then the
 * same with 1 thread: on a shared machine a second core is often taken by someone else, so
 * "sgemm_peak_gflops" = max(N-thread best, N x 1-thread best) (GEMM scales ~linearly over
 * cores: it is the denominator of the GEMM-peak fractions; both measurements are printed).
 * bf16: the CPU backend's gemm_bf16 (oneDNN's matmul, the product loratune's bf16 compute mode
 * runs: bf16 in, fp32 sums and out) on the same shapes and thread counts, the same peak rule
 * ("bf16_peak_gflops"), and the kernel oneDNN picked ("bf16_impl": "brg:avx512_core_bf16",
 * "brg:avx512_core_amx", ...; a "ref" or "gemm:" kernel means no native bf16 here).
 * Prints ONE JSON line.
 * Usage: bench_gemm [--threads N] [--reps R] */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loratune/backend.h"
#include "loratune/hwinfo.h"
#include "loratune/model.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *rnd(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5);
    }
    return p;
}

int main(int argc, char **argv) {
    int threads = 0, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_gemm [--threads N] [--reps R]\n");
            return 2;
        }
    }
    lt_hwinfo hw;
    lt_hwinfo_detect(&hw);
    if (threads <= 0) threads = hw.threads;
    lt_set_num_threads(threads);
    const int shapes[2][3] = {{2048, 2048, 2048}, {2048, 1536, 576}};
    double best_all = 0, per[2], best1 = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) lt_set_num_threads(1);
        for (int s = 0; s < 2; s++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float *A = rnd((int64_t)M * K), *B = rnd((int64_t)N * K), *C = rnd((int64_t)M * N);
            double best = 1e30;
            for (int r = 0; r <= reps; r++) {
                double t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K,
                            0.0f, C, N);
                double dt = now() - t0;
                if (r > 0 && dt < best) best = dt;
            }
            double g = 2.0 * M * N * K / best / 1e9;
            if (pass == 0) {
                per[s] = g;
                if (g > best_all) best_all = g;
            } else if (g > best1)
                best1 = g;
            free(A), free(B), free(C);
        }
    }
    lt_set_num_threads(threads);
    double peak = best_all > threads * best1 ? best_all : threads * best1;
    /* bf16 through the backend (oneDNN), the same rule for the peak */
    const lt_backend *be = lt_backend_cpu();
    double bf_all = 0, bf_per[2] = {0, 0}, bf1 = 0;
    for (int pass = 0; pass < 2; pass++) {
        lt_set_num_threads(pass == 0 ? threads : 1);
        for (int s = 0; s < 2; s++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float *A = rnd((int64_t)M * K), *B = rnd((int64_t)N * K), *C = rnd((int64_t)M * N);
            uint16_t *A16 = malloc(2 * (size_t)M * K), *B16 = malloc(2 * (size_t)N * K);
            be->op->to_bf16(be, A16, A, (int64_t)M * K);
            be->op->to_bf16(be, B16, B, (int64_t)N * K);
            double best = 1e30;
            for (int r = 0; r <= reps; r++) {
                double t0 = now();
                be->op->gemm_bf16(be, 0, 1, M, N, K, 1.0f, A16, K, B16, K, 0.0f, C, N);
                double dt = now() - t0;
                if (r > 0 && dt < best) best = dt;
            }
            double g = 2.0 * M * N * K / best / 1e9;
            if (pass == 0) {
                bf_per[s] = g;
                if (g > bf_all) bf_all = g;
            } else if (g > bf1)
                bf1 = g;
            free(A), free(B), free(C), free(A16), free(B16);
        }
    }
    lt_set_num_threads(threads);
    double bf_peak = bf_all > threads * bf1 ? bf_all : threads * bf1;
    double la[1] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &la[0]) != 1) la[0] = -1;
        fclose(f);
    }
    printf("{\"bench\":\"gemm\",\"threads\":%d,\"reps\":%d,\"sgemm_gflops\":%.1f,"
           "\"sgemm_2048cube_gflops\":%.1f,\"sgemm_2048x1536x576_gflops\":%.1f,"
           "\"sgemm_1thread_gflops\":%.1f,\"sgemm_peak_gflops\":%.1f,"
           "\"bf16_gflops\":%.1f,\"bf16_2048cube_gflops\":%.1f,"
           "\"bf16_2048x1536x576_gflops\":%.1f,\"bf16_1thread_gflops\":%.1f,"
           "\"bf16_peak_gflops\":%.1f,\"bf16_impl\":\"%s\",\"blas\":\"%s\",\"loadavg\":%.2f}\n",
           threads, reps, best_all, per[0], per[1], best1, peak, bf_all, bf_per[0], bf_per[1], bf1,
           bf_peak, lt_cpu_gemm_bf16_impl(2048, 1536, 576), openblas_get_config(), la[0]);
    return 0;
}
