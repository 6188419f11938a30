/* gemm_bf16.c - the CPU backend's bf16 GEMM on oneDNN's matmul primitive, and the fp32 -> bf16
 * conversion feeding it.
 *
 * C = alpha op(A) op(B) + beta C with A, B bf16 and C fp32: oneDNN picks its kernel for the CPU
 * it runs on (AVX512-BF16 "brg:avx512_core_bf16", AMX "brg:avx512_core_amx", and slower paths
 * elsewhere), products and sums in fp32. Transposes are strides of the memory descriptors;
 * alpha is the primitive's output scale and beta its "sum" post-op.
 *
 * A primitive is made once per shape (the key below) and kept in a small table with its memory
 * objects, whose data handles are pointed at the caller's buffers for each call; the
 * scratchpad is ours (user mode), grown when a primitive is made. So a step that repeats its
 * shapes allocates nothing. One mutex around the table and the execution: the backend stays
 * safe to call from several threads. Should oneDNN fail (a primitive it cannot make, out of
 * memory), the product runs in plain loops instead: slower, never wrong. LORATUNE_CPU does not
 * cap oneDNN's kernels (as it does not cap OpenBLAS's): ONEDNN_MAX_CPU_ISA does. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "backend_internal.h"
#include "loratune/hwinfo.h"

/* the rounding: 16 at a time at the avx512 dispatch level (bf16_avx512.c, the same integers),
 * else lt_f32_to_bf16 one by one; blocks of 64 KiB values over the OpenMP team */
void lt_host_to_bf16_(uint16_t *dst, const float *src, int64_t n) {
#if LT_X86_KERNELS
    if (lt_cpu_level_active() >= LT_CPU_LEVEL_AVX512) {
        const int64_t blk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > blk)
        for (int64_t i = 0; i < n; i += blk)
            lt_to_bf16_avx512_(dst + i, src + i, n - i < blk ? n - i : blk);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        dst[i] = lt_f32_to_bf16(src[i]);
}

/* the loops: fp32 products and sums, k in order (the reference backend's and the fallback) */
void lt_host_gemm_bf16_loops_(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                              int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
#pragma omp parallel for schedule(static) if ((int64_t)M * N * K > (1 << 20))
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = lt_bf16_to_f32(ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k]);
                float b = lt_bf16_to_f32(tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j]);
                acc += a * b;
            }
            float *c = &C[(int64_t)i * ldc + j];
            *c = alpha * acc + (beta != 0.0f ? beta * *c : 0.0f);
        }
}

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
} gemm_key;

typedef struct {
    gemm_key key;
    int used;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, pad;
} gemm_entry;

#define N_ENTRIES 48

static struct {
    pthread_mutex_t mu;
    pthread_once_t once;
    int ok; /* the engine and stream were made */
    dnnl_engine_t eng;
    dnnl_stream_t st;
    gemm_entry e[N_ENTRIES];
    int next; /* round-robin victim */
    void *pad;
    size_t pad_bytes;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static void init_engine(void) {
    if (dnnl_engine_create(&g.eng, dnnl_cpu, 0) != dnnl_success) return;
    if (dnnl_stream_create(&g.st, g.eng, dnnl_stream_default_flags) != dnnl_success) return;
    g.ok = 1;
}

static void entry_free(gemm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    if (e->pad) dnnl_memory_destroy(e->pad);
    memset(e, 0, sizeof *e);
}

/* dims {rows, cols} of a row-major operand that is op(X) with leading dimension ld */
static dnnl_status_t desc(dnnl_memory_desc_t *md, int rows, int cols, int trans, int ld,
                          dnnl_data_type_t dt) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

/* makes the primitive for k into e (0 on success) */
static int entry_make(gemm_entry *e, const gemm_key *k) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t mm;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int bad = desc(&a_md, k->M, k->K, k->ta, k->lda, dnnl_bf16) != dnnl_success ||
              desc(&b_md, k->K, k->N, k->tb, k->ldb, dnnl_bf16) != dnnl_success ||
              desc(&c_md, k->M, k->N, 0, k->ldc, dnnl_f32) != dnnl_success ||
              dnnl_matmul_desc_init(&mm, &a_md, &b_md, NULL, &c_md) != dnnl_success ||
              dnnl_primitive_attr_create(&attr) != dnnl_success ||
              dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) !=
                  dnnl_success;
    if (!bad && k->alpha != 1.0f)
        bad = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha) != dnnl_success;
    if (!bad && k->beta != 0.0f)
        bad = dnnl_post_ops_create(&po) != dnnl_success ||
              dnnl_post_ops_append_sum(po, k->beta) != dnnl_success ||
              dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success;
    if (!bad) bad = dnnl_primitive_desc_create(&pd, &mm, attr, g.eng, NULL) != dnnl_success;
    if (!bad) bad = dnnl_primitive_create(&e->prim, pd) != dnnl_success;
    const dnnl_memory_desc_t *pad_md =
        bad ? NULL : dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t pad_bytes = pad_md ? dnnl_memory_desc_get_size(pad_md) : 0;
    if (!bad && pad_bytes > g.pad_bytes) {
        void *p = lt_aligned_alloc(64, (pad_bytes + 63) & ~(size_t)63);
        if (!p) bad = 1;
        else {
            lt_free(g.pad);
            g.pad = p;
            g.pad_bytes = pad_bytes;
        }
    }
    if (!bad)
        bad = dnnl_memory_create(&e->a, &a_md, g.eng, DNNL_MEMORY_NONE) != dnnl_success ||
              dnnl_memory_create(&e->b, &b_md, g.eng, DNNL_MEMORY_NONE) != dnnl_success ||
              dnnl_memory_create(&e->c, &c_md, g.eng, DNNL_MEMORY_NONE) != dnnl_success ||
              (pad_bytes &&
               dnnl_memory_create(&e->pad, pad_md, g.eng, DNNL_MEMORY_NONE) != dnnl_success);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (bad) {
        entry_free(e);
        return 1;
    }
    e->key = *k;
    e->used = 1;
    return 0;
}

static gemm_entry *entry_find(const gemm_key *k) {
    for (int i = 0; i < N_ENTRIES; i++)
        if (g.e[i].used && !memcmp(&g.e[i].key, k, sizeof *k)) return &g.e[i];
    gemm_entry *e = &g.e[g.next];
    g.next = (g.next + 1) % N_ENTRIES;
    entry_free(e);
    return entry_make(e, k) ? NULL : e;
}

void lt_host_gemm_bf16_(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                        int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: C = beta C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(int64_t)i * ldc + j] = beta != 0.0f ? beta * C[(int64_t)i * ldc + j] : 0.0f;
        return;
    }
    pthread_once(&g.once, init_engine);
    const gemm_key k = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta}; /* compared as bytes */
    int done = 0;
    pthread_mutex_lock(&g.mu);
    gemm_entry *e = g.ok ? entry_find(&k) : NULL;
    if (e) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->a},
                                   {DNNL_ARG_WEIGHTS, e->b},
                                   {DNNL_ARG_DST, e->c},
                                   {DNNL_ARG_SCRATCHPAD, e->pad}};
        done = dnnl_memory_set_data_handle_v2(e->a, (void *)(uintptr_t)A, g.st) == dnnl_success &&
               dnnl_memory_set_data_handle_v2(e->b, (void *)(uintptr_t)B, g.st) == dnnl_success &&
               dnnl_memory_set_data_handle_v2(e->c, C, g.st) == dnnl_success &&
               (!e->pad || dnnl_memory_set_data_handle_v2(e->pad, g.pad, g.st) == dnnl_success) &&
               dnnl_primitive_execute(e->prim, g.st, e->pad ? 4 : 3, args) == dnnl_success &&
               dnnl_stream_wait(g.st) == dnnl_success;
    }
    pthread_mutex_unlock(&g.mu);
    if (!done) lt_host_gemm_bf16_loops_(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char *lt_cpu_gemm_bf16_impl(int M, int N, int K) {
    pthread_once(&g.once, init_engine);
    static char out[64];
    snprintf(out, sizeof out, "none");
    if (!g.ok) return out;
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t mm;
    dnnl_primitive_desc_t pd = NULL;
    if (desc(&a_md, M, K, 0, K, dnnl_bf16) || desc(&b_md, K, N, 1, K, dnnl_bf16) ||
        desc(&c_md, M, N, 0, N, dnnl_f32) ||
        dnnl_matmul_desc_init(&mm, &a_md, &b_md, NULL, &c_md) ||
        dnnl_primitive_desc_create(&pd, &mm, NULL, g.eng, NULL))
        return out;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(out, sizeof out, "%s", impl);
    dnnl_primitive_desc_destroy(pd);
    return out;
}
