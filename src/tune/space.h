/* space.h - a search space (internal to src/tune): parameters parsed from the space JSON, and
 * their two encodings in the unit cube.
 *
 * Sampling coordinates: one u in [0,1) per parameter (what random and Sobol draw); a float
 * maps linearly (or in log space), an int to the cell [low-0.5, high+0.5] (log: in log space)
 * rounded to the nearest integer, a categorical with k choices to floor(u*k).
 * Model coordinates: what the GP sees, `dims` numbers in [0,1]: one per float / int (the
 * value's position in [low, high], log space for log params; ints on the same scale as their
 * cell) and k one-hot numbers per categorical. lt_space_snap is the kernel's input transform:
 * it moves a relaxed point onto the nearest valid configuration (ints rounded, categoricals to
 * the one-hot of their largest entry), so the GP compares configurations exactly. */
#ifndef LT_TUNE_SPACE_H
#define LT_TUNE_SPACE_H

#include <jansson.h>

#include "loratune/core.h"

typedef enum { LT_PARAM_FLOAT = 0, LT_PARAM_INT, LT_PARAM_CATEGORICAL } lt_param_type;

typedef struct {
    char *name;
    lt_param_type type;
    double low, high; /* float / int bounds (ints exact) */
    int log;
    json_t *choices;  /* categorical: the array of choices (owned reference) */
    int n_choices;
    int dim;          /* first model coordinate */
} lt_param;

typedef struct {
    int n;        /* parameters */
    int dims;     /* model coordinates */
    lt_param *p;  /* (n) */
} lt_space;

/* Parses the space object; errors name "WHAT: NAME: FIELD: expected ...". */
lt_status lt_space_parse(const json_t *obj, const char *what, lt_space *out);
void lt_space_free(lt_space *sp); /* zeroed or parsed; fields released */
/* The space as JSON (new reference; NULL on out of memory). */
json_t *lt_space_to_json(const lt_space *sp);
int lt_space_find(const lt_space *sp, const char *name); /* index or -1 */

/* u (n sampling coordinates) -> a params object {name: value} (new reference, NULL on OOM). */
json_t *lt_space_params_from_unit(const lt_space *sp, const double *u);
/* x (dims model coordinates, snapped) -> a params object (new reference, NULL on OOM). */
json_t *lt_space_params_from_model(const lt_space *sp, const double *x);
/* A params object -> x (dims model coordinates). Errors name WHAT, the parameter and what was
 * expected (missing, out of range, not a choice). */
lt_status lt_space_params_to_model(const lt_space *sp, const json_t *params, const char *what,
                                   double *x);
/* u (n sampling coordinates) -> x (dims model coordinates, snapped). */
void lt_space_unit_to_model(const lt_space *sp, const double *u, double *x);
/* The kernel's input transform, in place on x (dims): clamp to [0,1], ints to their nearest
 * valid integer's coordinate, categoricals to the one-hot of their largest entry. */
void lt_space_snap(const lt_space *sp, double *x);

#endif
