/* alloc.c - the library's allocator (lt_malloc & co, plain libc underneath) and the allocation
 * fault injector of the tests (include/core/loratune/core.h, "fault injection").
 *
 * The injector's state is thread-local: arming it on one thread changes nothing for the
 * others. lt_fault_armed_ (shared with io.c) says whether any thread has an injector on, so
 * that the normal path is one relaxed atomic load. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "fault.h"
#include "loratune/core.h"

atomic_int lt_fault_armed_;
static _Thread_local lt_fault t_alloc;

void lt_fault_arm_(lt_fault *f, long n, int repeat) {
    int was = f->on;
    f->on = n >= 0;
    f->repeat = repeat != 0;
    f->left = n > 0 ? n : 0;
    f->count = 0;
    f->fails = 0; /* benign nesting is left as it is: it follows the code, not the test */
    if (f->on && !was)
        atomic_fetch_add_explicit(&lt_fault_armed_, 1, memory_order_relaxed);
    else if (!f->on && was)
        atomic_fetch_sub_explicit(&lt_fault_armed_, 1, memory_order_relaxed);
}

int lt_fault_hit_(lt_fault *f) {
    f->count++;
    if (f->left <= 0 || --f->left > 0) return 0;
    if (!f->benign) f->fails++;
    if (f->repeat) f->left = 1;
    return 1;
}

void lt_alloc_benign_begin_(void) {
    t_alloc.benign++;
}
void lt_alloc_benign_end_(void) {
    t_alloc.benign--;
}

int lt_alloc_fault_(void) {
    return atomic_load_explicit(&lt_fault_armed_, memory_order_relaxed) && t_alloc.on &&
           lt_fault_hit_(&t_alloc);
}

void lt_alloc_fail_after(long n, int repeat) {
    lt_fault_arm_(&t_alloc, n, repeat);
}
long lt_alloc_count(void) {
    return t_alloc.count;
}
long lt_alloc_failures(void) {
    return t_alloc.fails;
}

void *lt_malloc(size_t n) {
    return lt_alloc_fault_() ? NULL : malloc(n);
}
void *lt_calloc(size_t count, size_t size) {
    return lt_alloc_fault_() ? NULL : calloc(count, size);
}
void *lt_realloc(void *p, size_t n) {
    return lt_alloc_fault_() ? NULL : realloc(p, n);
}
char *lt_strdup(const char *s) {
    return lt_alloc_fault_() ? NULL : strdup(s);
}
char *lt_strndup(const char *s, size_t n) {
    return lt_alloc_fault_() ? NULL : strndup(s, n);
}
void *lt_aligned_alloc(size_t align, size_t n) {
    return lt_alloc_fault_() ? NULL : aligned_alloc(align, n);
}
void lt_free(void *p) {
    free(p);
}
