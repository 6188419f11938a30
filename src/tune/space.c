/* space.c - search space parsing and its unit-cube encodings (see space.h). */
#include "space.h"

#include <math.h>
#include <string.h>

/* The scale a float / int lives on: [lo, hi] in value space, or in log space for log params.
 * Ints span their whole cells [low-0.5, high+0.5], so every integer gets an equal share. */
static void param_range(const lt_param *p, double *lo, double *hi) {
    double a = p->low, b = p->high;
    if (p->type == LT_PARAM_INT) {
        a -= 0.5;
        b += 0.5;
    }
    *lo = p->log ? log(a) : a;
    *hi = p->log ? log(b) : b;
}

static double to_unit(const lt_param *p, double v) {
    double lo, hi;
    param_range(p, &lo, &hi);
    double t = p->log ? log(v) : v;
    return (t - lo) / (hi - lo);
}

static double from_unit(const lt_param *p, double u) {
    double lo, hi;
    param_range(p, &lo, &hi);
    if (u < 0) u = 0;
    if (u > 1) u = 1;
    double t = lo + u * (hi - lo);
    double v = p->log ? exp(t) : t;
    if (p->type == LT_PARAM_INT) v = round(v);
    if (v < p->low) v = p->low;
    if (v > p->high) v = p->high;
    return v;
}

static lt_status parse_param(const char *what, const char *name, const json_t *o, lt_param *p) {
    if (!json_is_object(o))
        return lt_error(LT_ERR_FORMAT, "%s: %s: expected an object {\"type\": ...}", what, name);
    const char *keys_num[] = {"type", "low", "high", "log"};
    const char *keys_cat[] = {"type", "choices"};
    const json_t *t = json_object_get(o, "type");
    if (!json_is_string(t))
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s: type: expected \"float\", \"int\" or \"categorical\"", what, name);
    const char *ts = json_string_value(t);
    const char **keys;
    size_t nkeys;
    if (!strcmp(ts, "float") || !strcmp(ts, "int")) {
        p->type = ts[0] == 'f' ? LT_PARAM_FLOAT : LT_PARAM_INT;
        keys = keys_num;
        nkeys = 4;
    } else if (!strcmp(ts, "categorical")) {
        p->type = LT_PARAM_CATEGORICAL;
        keys = keys_cat;
        nkeys = 2;
    } else {
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s: type: expected \"float\", \"int\" or \"categorical\", got \"%s\"",
                        what, name, ts);
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        int known = 0;
        for (size_t i = 0; i < nkeys; i++) known |= !strcmp(k, keys[i]);
        if (!known)
            return lt_error(LT_ERR_FORMAT, "%s: %s: unknown field \"%s\" for type %s", what, name,
                            k, ts);
    }
    if (p->type == LT_PARAM_CATEGORICAL) {
        const json_t *c = json_object_get(o, "choices");
        if (!json_is_array(c) || json_array_size(c) == 0)
            return lt_error(LT_ERR_FORMAT, "%s: %s: choices: expected a non-empty array", what,
                            name);
        size_t i, j;
        const json_t *a, *b;
        json_array_foreach((json_t *)c, i, a) {
            if (json_is_object(a) || json_is_array(a))
                return lt_error(LT_ERR_FORMAT,
                                "%s: %s: choices[%zu]: expected a string, number, boolean or null",
                                what, name, i);
            json_array_foreach((json_t *)c, j, b) {
                if (j < i && json_equal((json_t *)a, (json_t *)b))
                    return lt_error(LT_ERR_FORMAT, "%s: %s: choices[%zu]: repeats choices[%zu]",
                                    what, name, i, j);
            }
        }
        p->choices = json_deep_copy(c);
        if (!p->choices) return lt_error(LT_ERR_NOMEM, "%s: out of memory", what);
        p->n_choices = (int)json_array_size(c);
        return LT_OK;
    }
    const json_t *lo = json_object_get(o, "low"), *hi = json_object_get(o, "high");
    const json_t *lg = json_object_get(o, "log");
    const char *want = p->type == LT_PARAM_INT ? "an integer" : "a number";
    if (!lo || !(p->type == LT_PARAM_INT ? json_is_integer(lo) : json_is_number(lo)))
        return lt_error(LT_ERR_FORMAT, "%s: %s: low: expected %s", what, name, want);
    if (!hi || !(p->type == LT_PARAM_INT ? json_is_integer(hi) : json_is_number(hi)))
        return lt_error(LT_ERR_FORMAT, "%s: %s: high: expected %s", what, name, want);
    if (lg && !json_is_boolean(lg))
        return lt_error(LT_ERR_FORMAT, "%s: %s: log: expected true or false", what, name);
    p->low = json_number_value(lo);
    p->high = json_number_value(hi);
    p->log = lg && json_is_true(lg);
    if (!isfinite(p->low) || !isfinite(p->high) ||
        (p->type == LT_PARAM_INT ? p->low > p->high : p->low >= p->high))
        return lt_error(LT_ERR_FORMAT, "%s: %s: expected low %s high, got low %g, high %g", what,
                        name, p->type == LT_PARAM_INT ? "<=" : "<", p->low, p->high);
    if (p->type == LT_PARAM_INT && (fabs(p->low) > 9007199254740992.0 ||
                                    fabs(p->high) > 9007199254740992.0))
        return lt_error(LT_ERR_FORMAT, "%s: %s: bounds beyond 2^53 are not supported", what, name);
    if (p->log && p->low <= 0)
        return lt_error(LT_ERR_FORMAT, "%s: %s: log: needs low > 0, got low %g", what, name,
                        p->low);
    return LT_OK;
}

lt_status lt_space_parse(const json_t *obj, const char *what, lt_space *out) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj))
        return lt_error(LT_ERR_FORMAT, "%s: expected an object mapping each parameter name to "
                                       "{\"type\": ...}", what);
    size_t n = json_object_size(obj);
    if (n == 0) return lt_error(LT_ERR_FORMAT, "%s: no parameters", what);
    out->p = lt_calloc(n, sizeof *out->p);
    if (!out->p) return lt_error(LT_ERR_NOMEM, "%s: out of memory", what);
    const char *k;
    const json_t *v;
    lt_status st = LT_OK;
    json_object_foreach((json_t *)obj, k, v) {
        lt_param *p = &out->p[out->n];
        if (!*k) {
            st = lt_error(LT_ERR_FORMAT, "%s: a parameter has an empty name", what);
            break;
        }
        p->name = lt_strdup(k);
        if (!p->name) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory", what);
            break;
        }
        out->n++;
        if ((st = parse_param(what, k, v, p))) break;
        p->dim = out->dims;
        out->dims += p->type == LT_PARAM_CATEGORICAL ? p->n_choices : 1;
    }
    if (st) lt_space_free(out);
    return st;
}

void lt_space_free(lt_space *sp) {
    if (!sp->p) return;
    for (int i = 0; i < sp->n; i++) {
        lt_free(sp->p[i].name);
        json_decref(sp->p[i].choices);
    }
    lt_free(sp->p);
    memset(sp, 0, sizeof *sp);
}

int lt_space_find(const lt_space *sp, const char *name) {
    for (int i = 0; i < sp->n; i++)
        if (!strcmp(sp->p[i].name, name)) return i;
    return -1;
}

json_t *lt_space_to_json(const lt_space *sp) {
    json_t *o = json_object();
    for (int i = 0; o && i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        json_t *e;
        if (p->type == LT_PARAM_CATEGORICAL)
            e = json_pack("{s:s, s:O}", "type", "categorical", "choices", p->choices);
        else if (p->type == LT_PARAM_INT)
            e = json_pack("{s:s, s:I, s:I, s:b}", "type", "int", "low", (json_int_t)p->low, "high",
                          (json_int_t)p->high, "log", p->log);
        else
            e = json_pack("{s:s, s:f, s:f, s:b}", "type", "float", "low", p->low, "high", p->high,
                          "log", p->log);
        if (!e || json_object_set_new(o, p->name, e)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *number_json(const lt_param *p, double v) {
    return p->type == LT_PARAM_INT ? json_integer((json_int_t)v) : json_real(v);
}

json_t *lt_space_params_from_unit(const lt_space *sp, const double *u) {
    json_t *o = json_object();
    for (int i = 0; o && i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        json_t *v;
        if (p->type == LT_PARAM_CATEGORICAL) {
            int c = (int)floor(u[i] * p->n_choices);
            if (c < 0) c = 0;
            if (c >= p->n_choices) c = p->n_choices - 1;
            v = json_incref(json_array_get(p->choices, (size_t)c));
        } else {
            v = number_json(p, from_unit(p, u[i]));
        }
        if (!v || json_object_set_new(o, p->name, v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *lt_space_params_from_model(const lt_space *sp, const double *x) {
    json_t *o = json_object();
    for (int i = 0; o && i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        json_t *v;
        if (p->type == LT_PARAM_CATEGORICAL) {
            int best = 0;
            for (int c = 1; c < p->n_choices; c++)
                if (x[p->dim + c] > x[p->dim + best]) best = c;
            v = json_incref(json_array_get(p->choices, (size_t)best));
        } else {
            v = number_json(p, from_unit(p, x[p->dim]));
        }
        if (!v || json_object_set_new(o, p->name, v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

lt_status lt_space_params_to_model(const lt_space *sp, const json_t *params, const char *what,
                                   double *x) {
    if (!json_is_object(params))
        return lt_error(LT_ERR_FORMAT, "%s: params: expected an object", what);
    for (int i = 0; i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        const json_t *v = json_object_get(params, p->name);
        if (!v) return lt_error(LT_ERR_FORMAT, "%s: params: %s: missing", what, p->name);
        if (p->type == LT_PARAM_CATEGORICAL) {
            int hit = -1;
            for (int c = 0; c < p->n_choices; c++) {
                x[p->dim + c] = 0;
                if (hit < 0 && json_equal((json_t *)v, json_array_get(p->choices, (size_t)c)))
                    hit = c;
            }
            if (hit < 0)
                return lt_error(LT_ERR_FORMAT, "%s: params: %s: not one of the choices", what,
                                p->name);
            x[p->dim + hit] = 1;
            continue;
        }
        if (p->type == LT_PARAM_INT ? !json_is_integer(v) : !json_is_number(v))
            return lt_error(LT_ERR_FORMAT, "%s: params: %s: expected %s", what, p->name,
                            p->type == LT_PARAM_INT ? "an integer" : "a number");
        double d = json_number_value(v);
        if (!(d >= p->low && d <= p->high))
            return lt_error(LT_ERR_FORMAT, "%s: params: %s: %g is outside [%g, %g]", what, p->name,
                            d, p->low, p->high);
        x[p->dim] = to_unit(p, d);
    }
    return LT_OK;
}

void lt_space_snap(const lt_space *sp, double *x) {
    for (int i = 0; i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        if (p->type == LT_PARAM_CATEGORICAL) {
            int best = 0;
            for (int c = 1; c < p->n_choices; c++)
                if (x[p->dim + c] > x[p->dim + best]) best = c;
            for (int c = 0; c < p->n_choices; c++) x[p->dim + c] = c == best;
            continue;
        }
        double u = x[p->dim];
        u = u < 0 ? 0 : u > 1 ? 1 : u;
        if (p->type == LT_PARAM_INT) u = to_unit(p, from_unit(p, u));
        x[p->dim] = u;
    }
}

void lt_space_unit_to_model(const lt_space *sp, const double *u, double *x) {
    for (int i = 0; i < sp->n; i++) {
        const lt_param *p = &sp->p[i];
        if (p->type == LT_PARAM_CATEGORICAL) {
            int c = (int)floor(u[i] * p->n_choices);
            if (c < 0) c = 0;
            if (c >= p->n_choices) c = p->n_choices - 1;
            for (int k = 0; k < p->n_choices; k++) x[p->dim + k] = k == c;
        } else {
            x[p->dim] = to_unit(p, from_unit(p, u[i]));
        }
    }
}
