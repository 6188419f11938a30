/* alloc_count.h - counts every heap allocation of the test process, in every thread (the
 * library's, OpenMP's, OpenBLAS's, libc's), between lt_alloc_count_begin() and
 * lt_alloc_count_end(): for tests that check a code path allocates nothing.
 *
 * How: in a normal build the test program replaces malloc, calloc, realloc, memalign,
 * posix_memalign, aligned_alloc, valloc and pvalloc (the executable's definitions interpose on
 * every shared library's calls too) and forwards them to glibc's __libc_* entry points. Under
 * AddressSanitizer, which owns malloc, the sanitizer's own malloc hook counts instead. Either way
 * nothing is counted outside a begin/end span.
 *
 * Each allocation is put down to the code that called the allocator (see lt_alloc_kind_name).
 *
 * Include in exactly one .c file of a test program (it defines the allocator entry points),
 * which defines _GNU_SOURCE before its first #include (for dl_iterate_phdr). */
#ifndef LT_ALLOC_COUNT_H
#define LT_ALLOC_COUNT_H

#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Who made an allocation: the code that called malloc & co (ours: the test program with the
 * library linked in, or libc on our behalf, e.g. strdup / fopen), or a library that allocates
 * for its own bookkeeping: the OpenMP runtime (gcc's libgomp allocates and frees a team of one
 * thread in every parallel region that runs on one thread; clang's libomp has its own),
 * OpenBLAS (its small-matrix kernels on AVX-512 CPUs allocate a small buffer) and oneDNN (the bf16
 * products: every primitive execution builds its argument map and execution context with C++
 * operator new; loratune is C, so libstdc++'s allocations are oneDNN's). Those are counted apart
 * and reported, not failed. The sanitizer runtime is libasan (gcc) or libclang_rt.asan (clang;
 * CMake links it shared, -shared-libsan, for this). */
enum { LT_ALLOC_OURS, LT_ALLOC_GOMP, LT_ALLOC_BLAS, LT_ALLOC_DNNL, LT_ALLOC_NKIND };
static const char *const lt_alloc_kind_name[LT_ALLOC_NKIND] = {
    "loratune / libc", "libgomp / libomp", "OpenBLAS", "oneDNN / libstdc++"};

static atomic_long lt_alloc_calls[LT_ALLOC_NKIND];
static atomic_int lt_alloc_counting;

/* address ranges (PT_LOAD segments) of libgomp, OpenBLAS, oneDNN and the sanitizer runtime */
enum { LT_ALLOC_MAXR = 32, LT_ALLOC_ASAN_KIND = 100, LT_ALLOC_LIBC_KIND = 101 };
static struct {
    uintptr_t lo, hi;
    int kind;
} lt_alloc_ranges[LT_ALLOC_MAXR];
static int lt_alloc_nranges;

static int lt_alloc_phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    const char *n = info->dlpi_name ? info->dlpi_name : "";
    int kind = strstr(n, "libgomp") || strstr(n, "libomp") ? LT_ALLOC_GOMP
               : strstr(n, "libopenblas")                    ? LT_ALLOC_BLAS
               : strstr(n, "libdnnl") || strstr(n, "libstdc++")   ? LT_ALLOC_DNNL
               : strstr(n, "libasan") || strstr(n, "libubsan") || strstr(n, "libclang_rt.")
                   ? LT_ALLOC_ASAN_KIND
               : strstr(n, "/libc.so") ? LT_ALLOC_LIBC_KIND /* counted as ours, see the hook */
                                                              : -1;
    if (kind < 0) return 0;
    for (int i = 0; i < info->dlpi_phnum && lt_alloc_nranges < LT_ALLOC_MAXR; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            lt_alloc_ranges[lt_alloc_nranges].lo = lo;
            lt_alloc_ranges[lt_alloc_nranges].hi = lo + info->dlpi_phdr[i].p_memsz;
            lt_alloc_ranges[lt_alloc_nranges++].kind = kind;
        }
    return 0;
}

static int lt_alloc_kind_of(const void *addr) {
    uintptr_t a = (uintptr_t)addr;
    for (int i = 0; i < lt_alloc_nranges; i++)
        if (a >= lt_alloc_ranges[i].lo && a < lt_alloc_ranges[i].hi) return lt_alloc_ranges[i].kind;
    return LT_ALLOC_OURS;
}

static inline void lt_alloc_note(const void *caller) {
    if (atomic_load_explicit(&lt_alloc_counting, memory_order_relaxed)) {
        int k = lt_alloc_kind_of(caller);
        atomic_fetch_add_explicit(&lt_alloc_calls[k < LT_ALLOC_NKIND ? k : LT_ALLOC_OURS], 1,
                                  memory_order_relaxed);
    }
}

#if defined(__SANITIZE_ADDRESS__)
#define LT_ALLOC_COUNT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LT_ALLOC_COUNT_ASAN 1
#endif
#endif

#ifdef LT_ALLOC_COUNT_ASAN
/* from the sanitizer runtime (declared here: gcc ships no sanitizer/allocator_interface.h) */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

/* Called by the sanitizer's allocator: the caller of malloc is the first frame past the
 * sanitizer runtime's own frames (found with glibc's unwinder, which needs no frame pointers). */
static _Thread_local int lt_alloc_in_hook;
static void lt_alloc_hook_malloc(const volatile void *p, size_t n) {
    (void)p;
    (void)n;
    if (lt_alloc_in_hook || !atomic_load_explicit(&lt_alloc_counting, memory_order_relaxed)) return;
    lt_alloc_in_hook = 1;
    void *fr[32];
    int nf = backtrace(fr, 32), i = 0;
    /* [the runtime's backtrace interceptor] this hook [the runtime's allocator] caller */
    while (i < nf && lt_alloc_kind_of(fr[i]) == LT_ALLOC_ASAN_KIND) i++;
    while (i < nf && lt_alloc_kind_of(fr[i]) != LT_ALLOC_ASAN_KIND) i++;
    while (i < nf && lt_alloc_kind_of(fr[i]) == LT_ALLOC_ASAN_KIND) i++;
    /* libc allocating for the sanitizer runtime itself (its thread start calls
     * pthread_getattr_np, in any thread, at any time) is not ours; libc for anyone else is */
    int j = i;
    while (j < nf && lt_alloc_kind_of(fr[j]) == LT_ALLOC_LIBC_KIND) j++;
    if (j > i && j < nf && lt_alloc_kind_of(fr[j]) == LT_ALLOC_ASAN_KIND) {
        lt_alloc_in_hook = 0;
        return;
    }
    lt_alloc_note(i < nf ? fr[i] : NULL);
    lt_alloc_in_hook = 0;
}
static void lt_alloc_hook_free(const volatile void *p) { (void)p; }

static void lt_alloc_count_install(void) {
    static atomic_int done;
    if (atomic_exchange(&done, 1)) return;
    dl_iterate_phdr(lt_alloc_phdr_cb, NULL);
    void *fr[4];
    backtrace(fr, 4); /* loads the unwinder now, not inside the hook */
    __sanitizer_install_malloc_and_free_hooks(lt_alloc_hook_malloc, lt_alloc_hook_free);
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern void __libc_free(void *);

/* never inlined into a caller in this file: the return address must be the caller's */
#define LT_ALLOC_CALLER __builtin_return_address(0)
#define LT_ALLOC_ENTRY __attribute__((noinline, used))
LT_ALLOC_ENTRY void *malloc(size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_malloc(n);
}
LT_ALLOC_ENTRY void *calloc(size_t k, size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_calloc(k, n);
}
LT_ALLOC_ENTRY void *realloc(void *p, size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_realloc(p, n);
}
LT_ALLOC_ENTRY void free(void *p) { __libc_free(p); }
LT_ALLOC_ENTRY void *memalign(size_t a, size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_memalign(a, n);
}
LT_ALLOC_ENTRY void *aligned_alloc(size_t a, size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_memalign(a, n);
}
LT_ALLOC_ENTRY int posix_memalign(void **out, size_t a, size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    if (a % sizeof(void *) || (a & (a - 1))) return EINVAL;
    void *p = __libc_memalign(a, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}
LT_ALLOC_ENTRY void *valloc(size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_valloc(n);
}
LT_ALLOC_ENTRY void *pvalloc(size_t n) {
    lt_alloc_note(LT_ALLOC_CALLER);
    return __libc_pvalloc(n);
}

static void lt_alloc_count_install(void) {
    static atomic_int done;
    if (!atomic_exchange(&done, 1)) dl_iterate_phdr(lt_alloc_phdr_cb, NULL);
}
#endif

/* Starts counting (from zero). */
static inline void lt_alloc_count_begin(void) {
    lt_alloc_count_install();
    for (int k = 0; k < LT_ALLOC_NKIND; k++)
        atomic_store(&lt_alloc_calls[k], 0);
    atomic_store(&lt_alloc_counting, 1);
}

/* Stops counting; returns the allocations that loratune's code (or libc on its behalf) made
 * since lt_alloc_count_begin(); by_kind (may be NULL) gets the counts of each kind. */
static inline long lt_alloc_count_end(long by_kind[LT_ALLOC_NKIND]) {
    atomic_store(&lt_alloc_counting, 0);
    for (int k = 0; by_kind && k < LT_ALLOC_NKIND; k++)
        by_kind[k] = atomic_load(&lt_alloc_calls[k]);
    return atomic_load(&lt_alloc_calls[LT_ALLOC_OURS]);
}

#endif
