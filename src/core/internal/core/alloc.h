/* alloc.h - internal side of the allocator (the public side is in include/core/loratune/core.h). */
#ifndef LT_CORE_ALLOC_H
#define LT_CORE_ALLOC_H

/* For allocations that do not go through lt_malloc (page mappings of the model and the
 * trainer): 1 when the allocation fault injector says this one must fail; counts it. */
int lt_alloc_fault_(void);

/* Between these two (nested, per thread), allocations are benign: the code copes with their
 * failure by doing without (an optional cache), so a failure injected there is not counted in
 * lt_alloc_failures() and the operation may still succeed (SQLite's BenignMalloc). */
void lt_alloc_benign_begin_(void);
void lt_alloc_benign_end_(void);

#endif
