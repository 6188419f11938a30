/* fault.h - the injector state shared by alloc.c (allocations) and io.c (output I/O); see
 * "fault injection" in include/core/loratune/core.h. Internal to core/.
 *
 * Invariant: lt_fault_armed_ counts the injectors (allocation or I/O, any thread) that are on;
 * while it is 0 a hooked call costs one relaxed load of it and nothing else. */
#ifndef LT_CORE_FAULT_H
#define LT_CORE_FAULT_H

#include <stdatomic.h>

typedef struct {
    int on;     /* counting */
    int repeat; /* once call `left` failed, every later call fails too */
    long left;  /* calls until the failing one (1: the next); 0: none will fail */
    long count; /* calls counted since armed */
    long fails; /* calls failed since armed (not counting benign ones) */
    int benign; /* > 0: inside lt_alloc_benign_begin_ / _end_ */
} lt_fault;

extern atomic_int lt_fault_armed_;

/* (Re)arms f as lt_alloc_fail_after describes (n < 0: off). */
void lt_fault_arm_(lt_fault *f, long n, int repeat);
/* Counts one call of f's kind; 1 when it must fail. Call only when f->on. */
int lt_fault_hit_(lt_fault *f);

#endif
