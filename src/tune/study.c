/* study.c - an ask/tell study persisted in a folder (tune.h).
 *
 * The file DIR/study.json, kept in memory as its jansson tree and rewritten whole after each
 * change through lt_file_write_atomic (temp file, fsync, rename), so that a kill at any point
 * leaves the old or the new file. A failed write puts the tree back as it was, so the handle
 * and the file never disagree. The folder's lock is held from open/create to close.
 *
 *   {"format": "loratune-study", "version": 1, "direction": "minimize", "sampler": "auto",
 *    "seed": 0, "n_startup": 5, "space": {...}, "gp_theta": [...] | null,
 *    "trials": [{"trial": 0, "state": "complete", "params": {...}, "value": 1.5,
 *                "intermediate": [[step, value], ...], "asked_at": T, "heartbeat_at": T, "told_at": T,
 *                "restarts": N (PostgreSQL: claimed from a dead worker)}, ...]} */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json_file.h"
#include "loratune/tune.h"
#include "sampler.h"
#include "space.h"
#include "study_pg.h"
#include "tpe.h"

#define STUDY_FORMAT "loratune-study"
#define STUDY_VERSION 1

struct lt_study {
    char *path;        /* DIR/study.json */
    lt_dir_lock *lock;
    json_t *root;
    json_t *trials;    /* borrowed from root */
    lt_space space;
    lt_study_options opt;
    int readonly; /* lt_study_open_readonly: no lock, every change refused */
    lt_study_pg *pg; /* a study in PostgreSQL (study_pg.h): no folder, no lock; each change a
                        transaction on its row */
};

/* A killed write of study.json leaves study.json.tmp.PID (lt_file_write_atomic): removed when
 * the study is taken under its lock (lt_dir_remove_temps; issue 18's kill soak). */
static const char *const study_names[] = {LT_STUDY_FILE, NULL};
static const char *k_samplers[] = {"auto", "gp", "random", "sobol", "tpe"};
static const char *k_states[] = {"running", "complete", "failed", "pruned"};

const char *lt_sampler_name(lt_sampler_kind k) {
    return (unsigned)k < 5 ? k_samplers[k] : "?";
}
int lt_sampler_from_name(const char *name, lt_sampler_kind *out) {
    for (int i = 0; i < 5; i++)
        if (name && !strcmp(name, k_samplers[i])) return *out = (lt_sampler_kind)i, 0;
    return -1;
}
const char *lt_trial_state_name(lt_trial_state s) { return (unsigned)s < 4 ? k_states[s] : "?"; }
static int state_from_name(const char *name) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, k_states[i])) return i;
    return -1;
}

void lt_study_close(lt_study *s) {
    if (!s) return;
    lt_space_free(&s->space);
    json_decref(s->root);
    lt_dir_lock_close(s->lock);
    lt_study_pg_close(s->pg);
    lt_free(s->path);
    lt_free(s);
}

static lt_status study_alloc(const char *dir, lt_study **out) {
    *out = NULL;
    if (lt_study_pg_is_url(dir)) { /* the URL (password masked) names it in messages */
        lt_study *s = lt_calloc(1, sizeof *s);
        if (!s) return lt_error(LT_ERR_NOMEM, "study: out of memory");
        const char *shown = NULL;
        lt_status st = lt_study_pg_open(dir, &s->pg, &shown);
        if (!st && !(s->path = lt_malloc(strlen(shown) + 1)))
            st = lt_error(LT_ERR_NOMEM, "study: out of memory");
        if (st) {
            lt_study_close(s);
            return st;
        }
        strcpy(s->path, shown);
        *out = s;
        return LT_OK;
    }
    lt_study *s = lt_calloc(1, sizeof *s);
    size_t n = strlen(dir) + sizeof(LT_STUDY_FILE) + 2;
    if (!s || !(s->path = lt_malloc(n))) {
        lt_free(s);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    }
    snprintf(s->path, n, "%s/%s", dir, LT_STUDY_FILE);
    *out = s;
    return LT_OK;
}

static lt_status study_write(lt_study *s) {
    if (s->readonly)
        return lt_error(LT_ERR_ARG, "%s: the study was opened read-only", s->path);
    char *text = json_dumps(s->root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    if (!text) return lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
    if (s->pg) {
        lt_status st = lt_study_pg_store(s->pg, text);
        free(text);
        return st;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room for its NUL; write "...}\n" */
    lt_status st = lt_file_write_atomic(s->path, text, n + 1);
    free(text);
    return st;
}

static int default_startup(const lt_space *sp) {
    int n = sp->dims + 1;
    return n < 5 ? 5 : n > 10 ? 10 : n;
}

lt_status lt_study_create(const char *dir, const char *space_json, const lt_study_options *opt,
                          lt_study **out) {
    lt_study *s;
    lt_status st = study_alloc(dir, &s);
    if (st) return st;
    lt_study_options o = {0};
    if (opt) o = *opt;
    json_error_t err;
    json_t *sj = NULL;
    if ((unsigned)o.sampler > LT_SAMPLER_TPE) {
        st = lt_error(LT_ERR_ARG, "study: unknown sampler %d", (int)o.sampler);
        goto fail;
    }
    if (!(sj = json_loads(space_json, JSON_REJECT_DUPLICATES, &err))) {
        st = lt_error(LT_ERR_FORMAT, "space: line %d column %d: invalid JSON: %s", err.line,
                      err.column, err.text);
        goto fail;
    }
    if ((st = lt_space_parse(sj, "space", &s->space))) goto fail;
    if (o.n_startup <= 0)
        o.n_startup = o.sampler == LT_SAMPLER_TPE ? LT_TPE_STARTUP : default_startup(&s->space);
    if (!s->pg && lt_path_exists(s->path)) {
        st = lt_error(LT_ERR_ARG, "%s: already holds a study (%s); open it, or create the study "
                                  "in another folder", dir, s->path);
        goto fail;
    }
    if (!s->pg && (st = lt_dir_lock_open(dir, 0, &s->lock))) goto fail;
    if (!s->pg) lt_dir_remove_temps(dir, study_names);
    if (!s->pg && lt_path_exists(s->path)) { /* made between the check and the lock */
        st = lt_error(LT_ERR_ARG, "%s: already holds a study (%s)", dir, s->path);
        goto fail;
    }
    s->opt = o;
    json_t *space = lt_space_to_json(&s->space);
    s->root = json_pack("{s:s, s:i, s:s, s:s, s:I, s:i, s:o, s:n, s:[]}", "format", STUDY_FORMAT,
                        "version", STUDY_VERSION, "direction",
                        o.maximize ? "maximize" : "minimize", "sampler",
                        lt_sampler_name(o.sampler), "seed", (json_int_t)o.seed, "n_startup",
                        o.n_startup, "space", space, "gp_theta", "trials");
    if (!s->root) {
        st = lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    s->trials = json_object_get(s->root, "trials");
    if (s->pg) { /* one INSERT: a name taken by another worker meanwhile is refused */
        char *text = json_dumps(s->root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        st = text ? lt_study_pg_insert(s->pg, text) : lt_error(LT_ERR_NOMEM, "out of memory");
        free(text);
        if (st) goto fail;
    } else if ((st = study_write(s))) {
        goto fail;
    }
    json_decref(sj);
    *out = s;
    return LT_OK;
fail:
    json_decref(sj);
    lt_study_close(s);
    return st;
}

static lt_status bad(const lt_study *s, const char *field, const char *want) {
    return lt_error(LT_ERR_FORMAT, "%s: %s: expected %s", s->path, field, want);
}

/* Checks the tree read from the file; fills s->space, s->opt, s->trials. */
static lt_status study_validate(lt_study *s) {
    json_t *r = s->root;
    if (!json_is_object(r)) return bad(s, "(top)", "an object");
    if (!json_is_string(json_object_get(r, "format")) ||
        strcmp(json_string_value(json_object_get(r, "format")), STUDY_FORMAT))
        return bad(s, "format", "\"" STUDY_FORMAT "\"");
    if (json_integer_value(json_object_get(r, "version")) != STUDY_VERSION)
        return bad(s, "version", "1 (a study written by a newer loratune?)");
    const char *dir = json_string_value(json_object_get(r, "direction"));
    if (!dir || (strcmp(dir, "minimize") && strcmp(dir, "maximize")))
        return bad(s, "direction", "\"minimize\" or \"maximize\"");
    s->opt.maximize = !strcmp(dir, "maximize");
    if (lt_sampler_from_name(json_string_value(json_object_get(r, "sampler")), &s->opt.sampler))
        return bad(s, "sampler", "one of auto, gp, random, sobol, tpe");
    json_t *seed = json_object_get(r, "seed"), *n0 = json_object_get(r, "n_startup");
    if (!json_is_integer(seed)) return bad(s, "seed", "an integer");
    s->opt.seed = (uint64_t)json_integer_value(seed);
    if (!json_is_integer(n0) || json_integer_value(n0) < 1 || json_integer_value(n0) > 1000000)
        return bad(s, "n_startup", "an integer >= 1");
    s->opt.n_startup = (int)json_integer_value(n0);
    char what[4200];
    snprintf(what, sizeof what, "%s: space", s->path);
    lt_status st = lt_space_parse(json_object_get(r, "space"), what, &s->space);
    if (st) return st;
    json_t *th = json_object_get(r, "gp_theta");
    if (th && !json_is_null(th)) {
        if (!json_is_array(th) || json_array_size(th) != (size_t)s->space.dims + 2)
            return bad(s, "gp_theta", "null or an array of dims + 2 numbers");
        size_t i;
        json_t *v;
        json_array_foreach(th, i, v) if (!json_is_number(v)) return bad(s, "gp_theta", "numbers");
    }
    s->trials = json_object_get(r, "trials");
    if (!json_is_array(s->trials)) return bad(s, "trials", "an array");
    double x[s->space.dims];
    size_t i;
    json_t *t;
    json_t *ws = json_object_get(r, "warm_start"); /* optional: lt_study_warm_start's */
    if (ws) {
        json_t *wt = json_object_get(ws, "trials");
        if (!json_is_object(ws) || !json_is_string(json_object_get(ws, "source")) ||
            !json_is_array(wt))
            return bad(s, "warm_start", "{\"source\": path, \"trials\": [...]}");
        json_array_foreach(wt, i, t) {
            char f[80];
            snprintf(f, sizeof f, "warm_start.trials[%zu]", i);
            if (!json_is_number(json_object_get(t, "value")) ||
                !json_is_string(json_object_get(t, "state")) ||
                strcmp(json_string_value(json_object_get(t, "state")), "complete"))
                return bad(s, f, "\"state\": \"complete\" and a number \"value\"");
            snprintf(what, sizeof what, "%s: %s", s->path, f);
            if ((st = lt_space_params_to_model(&s->space, json_object_get(t, "params"), what, x)))
                return st;
        }
    }
    json_array_foreach(s->trials, i, t) {
        char f[64];
        snprintf(f, sizeof f, "trials[%zu]", i);
        if (!json_is_object(t)) return bad(s, f, "an object");
        if (json_integer_value(json_object_get(t, "trial")) != (json_int_t)i ||
            !json_is_integer(json_object_get(t, "trial")))
            return bad(s, f, "\"trial\" equal to its position");
        int state = state_from_name(json_string_value(json_object_get(t, "state")));
        if (state < 0) return bad(s, f, "\"state\" one of running, complete, failed, pruned");
        json_t *v = json_object_get(t, "value");
        if (state == LT_TRIAL_COMPLETE ? !json_is_number(v) : !(v == NULL || json_is_null(v)))
            return bad(s, f, state == LT_TRIAL_COMPLETE ? "a number \"value\" (complete)"
                                                         : "\"value\" null unless complete");
        snprintf(what, sizeof what, "%s: %s", s->path, f);
        if ((st = lt_space_params_to_model(&s->space, json_object_get(t, "params"), what, x)))
            return st;
        json_t *im = json_object_get(t, "intermediate");
        if (!json_is_array(im)) return bad(s, f, "an \"intermediate\" array");
        size_t j;
        json_t *e;
        json_array_foreach(im, j, e) {
            if (!json_is_array(e) || json_array_size(e) != 2 ||
                !json_is_integer(json_array_get(e, 0)) || !json_is_number(json_array_get(e, 1)))
                return bad(s, f, "\"intermediate\" entries [step, value]");
        }
        json_t *rg = json_object_get(t, "rungs"); /* optional: lt_study_should_prune's */
        if (rg) {
            if (!json_is_array(rg)) return bad(s, f, "\"rungs\" an array of numbers");
            json_array_foreach(rg, j, e) if (!json_is_number(e))
                return bad(s, f, "\"rungs\" an array of numbers");
        }
    }
    return LT_OK;
}

static lt_status study_open(const char *dir, int readonly, lt_study **out) {
    lt_study *s;
    lt_status st = study_alloc(dir, &s);
    if (st) return st;
    if (s->pg) {
        s->readonly = readonly;
        char *doc = NULL;
        json_error_t err;
        if ((st = lt_study_pg_load(s->pg, 0, &doc))) goto fail;
        s->root = json_loads(doc, JSON_REJECT_DUPLICATES, &err);
        free(doc);
        if (!s->root) {
            st = lt_error(LT_ERR_FORMAT, "%s: line %d: invalid JSON: %s", s->path, err.line,
                          err.text);
            goto fail;
        }
        if ((st = study_validate(s))) goto fail;
        *out = s;
        return LT_OK;
    }
    if (!lt_path_exists(s->path)) {
        st = lt_error(LT_ERR_NOTFOUND, "%s: no study here (%s is missing; make one with "
                                       "`loratune study create`)", dir, LT_STUDY_FILE);
        goto fail;
    }
    s->readonly = readonly;
    if (!readonly && (st = lt_dir_lock_open(dir, 0, &s->lock))) goto fail;
    if (!readonly) lt_dir_remove_temps(dir, study_names);
    if ((st = lt_json_load_file(s->path, JSON_REJECT_DUPLICATES, &s->root))) goto fail;
    if ((st = study_validate(s))) goto fail;
    *out = s;
    return LT_OK;
fail:
    lt_study_close(s);
    return st;
}

lt_status lt_study_open(const char *dir, lt_study **out) { return study_open(dir, 0, out); }

lt_status lt_study_open_readonly(const char *dir, lt_study **out) {
    return study_open(dir, 1, out);
}

int lt_study_n_trials(const lt_study *s) { return (int)json_array_size(s->trials); }
int lt_study_n_params(const lt_study *s) { return s->space.n; }
const char *lt_study_param_name(const lt_study *s, int i) {
    return i >= 0 && i < s->space.n ? s->space.p[i].name : NULL;
}

static json_t *trial_at(const lt_study *s, int trial) {
    if (trial < 0) return NULL;
    return json_array_get(s->trials, (size_t)trial);
}

static lt_status unknown_trial(const lt_study *s, int trial) {
    return lt_error(LT_ERR_NOTFOUND, "%s: no trial %d (the study has trials 0..%d)", s->path,
                    trial, lt_study_n_trials(s) - 1);
}

static lt_status study_ask_(lt_study *s, int *trial) {
    int n = lt_study_n_trials(s);
    int dims = s->space.dims;
    double theta[dims + 2];
    theta[0] = NAN;
    json_t *th = json_object_get(s->root, "gp_theta");
    if (json_is_array(th))
        for (int i = 0; i < dims + 2; i++) theta[i] = json_number_value(json_array_get(th, (size_t)i));
    json_t *params = NULL, *old_theta = json_incref(th);
    int used_gp = 0;
    /* a warm start's trials come first, as complete trials the GP sees, and count as asked
     * trials for the sampler (lt_study_warm_start): the quasi-random start is shorter by as
     * many and continues the Sobol sequence after them */
    const json_t *wt = json_object_get(json_object_get(s->root, "warm_start"), "trials");
    json_t *all = s->trials;
    int nw = (int)json_array_size(wt);
    if (nw) {
        all = json_array();
        if (!all || json_array_extend(all, (json_t *)wt) || json_array_extend(all, s->trials)) {
            json_decref(all);
            json_decref(old_theta);
            return lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
        }
    }
    lt_status st = lt_tune_suggest(&s->space, &s->opt, all, n + nw, theta, &used_gp, &params);
    if (all != s->trials) json_decref(all);
    if (st) {
        json_decref(old_theta);
        return st;
    }
    const json_int_t now = (json_int_t)time(NULL);
    json_t *t = json_pack("{s:i, s:s, s:o, s:n, s:[], s:I, s:I}", "trial", n, "state", "running",
                          "params", params, "value", "intermediate", "asked_at", now,
                          "heartbeat_at", now);
    if (!t || json_array_append_new(s->trials, t)) {
        json_decref(old_theta);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
    }
    if (used_gp) {
        json_t *a = json_array();
        for (int i = 0; a && i < dims + 2; i++) json_array_append_new(a, json_real(theta[i]));
        if (!a || json_object_set_new(s->root, "gp_theta", a)) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
            goto undo;
        }
    }
    if ((st = study_write(s))) goto undo;
    json_decref(old_theta);
    *trial = n;
    return LT_OK;
undo:
    json_array_remove(s->trials, (size_t)n);
    json_object_set(s->root, "gp_theta", old_theta ? old_theta : json_null());
    json_decref(old_theta);
    return st;
}

static lt_status study_tell_(lt_study *s, int trial, lt_trial_state state, double value) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    const char *cur = json_string_value(json_object_get(t, "state"));
    if (strcmp(cur, "running")) {
        json_t *v = json_object_get(t, "value");
        if (json_is_number(v))
            return lt_error(LT_ERR_ARG, "%s: trial %d was already told (%s, value %.17g)",
                            s->path, trial, cur, json_number_value(v));
        return lt_error(LT_ERR_ARG, "%s: trial %d was already told (%s)", s->path, trial, cur);
    }
    if (state == LT_TRIAL_RUNNING || (unsigned)state > LT_TRIAL_PRUNED)
        return lt_error(LT_ERR_ARG, "%s: trial %d: tell needs complete, failed or pruned",
                        s->path, trial);
    if (state == LT_TRIAL_COMPLETE && !isfinite(value))
        return lt_error(LT_ERR_ARG, "%s: trial %d: value %g is not a finite number (tell "
                                    "--state failed instead?)", s->path, trial, value);
    json_t *snap = json_deep_copy(t);
    json_t *nv = state == LT_TRIAL_COMPLETE ? json_real(value) : json_null();
    if (!snap || !nv || json_object_set_new(t, "state", json_string(lt_trial_state_name(state))) ||
        json_object_set_new(t, "value", nv) ||
        json_object_set_new(t, "told_at", json_integer((json_int_t)time(NULL)))) {
        if (snap) json_array_set_new(s->trials, (size_t)trial, snap);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
    }
    lt_status st = study_write(s);
    if (st) json_array_set_new(s->trials, (size_t)trial, snap);
    else json_decref(snap);
    return st;
}

static lt_status study_report_(lt_study *s, int trial, int64_t step, double value) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    if (strcmp(json_string_value(json_object_get(t, "state")), "running"))
        return lt_error(LT_ERR_ARG, "%s: trial %d is no longer running", s->path, trial);
    if (!isfinite(value))
        return lt_error(LT_ERR_ARG, "%s: trial %d: intermediate value is not finite", s->path,
                        trial);
    json_t *im = json_object_get(t, "intermediate");
    size_t i;
    json_t *e;
    json_array_foreach(im, i, e) { /* the same step again (a trial re-run): replace it */
        if (json_integer_value(json_array_get(e, 0)) != step) continue;
        json_t *nv = json_real(value), *old = json_incref(json_array_get(e, 1));
        if (!nv || json_array_set_new(e, 1, nv)) {
            json_decref(old);
            return lt_error(LT_ERR_NOMEM, "out of memory");
        }
        lt_status st = study_write(s);
        if (st) json_array_set(e, 1, old);
        json_decref(old);
        return st;
    }
    e = json_pack("[I, f]", (json_int_t)step, value);
    if (!e || json_array_append_new(im, e)) return lt_error(LT_ERR_NOMEM, "out of memory");
    lt_status st = study_write(s);
    if (st) json_array_remove(im, json_array_size(im) - 1);
    return st;
}

static lt_status tell_failed_why(lt_study *s, int trial, const char *key, const char *reason) {
    lt_status st = study_tell_(s, trial, LT_TRIAL_FAILED, NAN);
    if (st) return st;
    json_t *t = trial_at(s, trial);
    if (json_object_set_new(t, key, json_string(reason ? reason : "")))
        return lt_error(LT_ERR_NOMEM, "out of memory"); /* told failed, without the reason */
    if ((st = study_write(s))) json_object_del(t, key);
    return st;
}


static lt_status study_restart_(lt_study *s, int trial) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    if (strcmp(json_string_value(json_object_get(t, "state")), "running"))
        return lt_error(LT_ERR_ARG, "%s: trial %d is no longer running", s->path, trial);
    json_t *snap = json_deep_copy(t);
    if (!snap || json_object_set_new(t, "intermediate", json_array())) {
        json_decref(snap);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    json_object_del(t, "rungs");
    lt_status st = study_write(s);
    if (st) json_array_set_new(s->trials, (size_t)trial, snap);
    else json_decref(snap);
    return st;
}

/* A running trial's last sign of life: its heartbeat, else when it was asked. */
static json_int_t trial_beat(json_t *t) {
    json_t *hb = json_object_get(t, "heartbeat_at");
    return json_is_integer(hb) ? json_integer_value(hb)
                               : json_integer_value(json_object_get(t, "asked_at"));
}

static lt_status study_heartbeat_(lt_study *s, int trial, int *running) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    *running = !strcmp(json_string_value(json_object_get(t, "state")), "running");
    if (!*running) return LT_OK; /* told meanwhile: nothing to keep alive */
    json_t *old = json_incref(json_object_get(t, "heartbeat_at"));
    if (json_object_set_new(t, "heartbeat_at", json_integer((json_int_t)time(NULL)))) {
        json_decref(old);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    lt_status st = study_write(s);
    if (st) {
        if (old) json_object_set(t, "heartbeat_at", old);
        else json_object_del(t, "heartbeat_at");
    }
    json_decref(old);
    return st;
}

static lt_status study_claim_stale_(lt_study *s, int stale_s, const int *skip, int n_skip,
                                    int *trial) {
    *trial = -1;
    const json_int_t now = (json_int_t)time(NULL);
    for (int i = 0; i < lt_study_n_trials(s); i++) {
        json_t *t = trial_at(s, i);
        if (strcmp(json_string_value(json_object_get(t, "state")), "running") ||
            now - trial_beat(t) <= stale_s)
            continue;
        int own = 0;
        for (int k = 0; k < n_skip; k++) own |= skip[k] == i;
        if (own) continue;
        json_t *snap = json_deep_copy(t);
        json_int_t restarts = json_integer_value(json_object_get(t, "restarts"));
        if (!snap || json_object_set_new(t, "intermediate", json_array()) ||
            json_object_set_new(t, "heartbeat_at", json_integer(now)) ||
            json_object_set_new(t, "restarts", json_integer(restarts + 1))) {
            json_decref(snap);
            return lt_error(LT_ERR_NOMEM, "out of memory");
        }
        json_object_del(t, "rungs");
        lt_status st = study_write(s);
        if (st) {
            json_array_set_new(s->trials, (size_t)i, snap);
            return st;
        }
        json_decref(snap);
        *trial = i;
        return LT_OK;
    }
    return LT_OK;
}

/* ---- successive halving ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static lt_status study_should_prune_(lt_study *s, int trial, const lt_prune_opts *p, int *prune,
                                int *rung_out) {
    *prune = 0;
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    if (!p || p->min_resource < 1 || p->reduction_factor < 2 || p->min_early_stopping_rate < 0)
        return lt_error(LT_ERR_ARG, "pruner: needs min_resource >= 1, reduction_factor >= 2 and "
                                    "min_early_stopping_rate >= 0");
    if (strcmp(json_string_value(json_object_get(t, "state")), "running"))
        return lt_error(LT_ERR_ARG, "%s: trial %d is no longer running", s->path, trial);
    /* the last step reported and its value */
    json_t *im = json_object_get(t, "intermediate");
    int64_t step = -1;
    double value = NAN;
    size_t i;
    json_t *e;
    json_array_foreach(im, i, e) {
        int64_t st = json_integer_value(json_array_get(e, 0));
        if (st > step) step = st, value = json_number_value(json_array_get(e, 1));
    }
    json_t *rungs = json_object_get(t, "rungs");
    int rung = (int)json_array_size(rungs); /* rungs completed so far */
    if (rung_out) *rung_out = rung;
    if (step < 0) return LT_OK;
    int n = lt_study_n_trials(s), sign = s->opt.maximize ? -1 : 1;
    double comp[n + 1];
    json_t *added = json_array();
    if (!added) return lt_error(LT_ERR_NOMEM, "out of memory");
    for (;;) {
        double promo = (double)p->min_resource;
        for (int k = 0; k < p->min_early_stopping_rate + rung; k++) promo *= p->reduction_factor;
        if ((double)step < promo) break;
        json_array_append_new(added, json_real(value));
        /* the values of every trial that reached this rung, this one's included */
        int m = 0;
        for (int j = 0; j < n; j++) {
            double v = j == trial ? NAN
                                  : lt_tune_rung_value(json_array_get(s->trials, (size_t)j),
                                                       (size_t)rung);
            if (!isnan(v)) comp[m++] = sign * v;
        }
        comp[m++] = sign * value;
        qsort(comp, (size_t)m, sizeof *comp, cmp_double);
        int idx = m / p->reduction_factor - 1;
        if (idx < 0) idx = 0; /* the first eta - 1 trials: promoted only when the best */
        rung++;
        if (!(sign * value <= comp[idx])) {
            *prune = 1;
            break;
        }
    }
    if (rung_out) *rung_out = rung;
    if (!json_array_size(added)) {
        json_decref(added);
        return LT_OK;
    }
    if (!rungs) {
        rungs = json_array();
        json_object_set_new(t, "rungs", rungs);
    }
    size_t n0 = json_array_size(rungs);
    json_array_extend(rungs, added);
    json_decref(added);
    lt_status st = study_write(s);
    if (st) {
        while (json_array_size(rungs) > n0) json_array_remove(rungs, json_array_size(rungs) - 1);
        *prune = 0;
    }
    return st;
}

lt_status lt_study_trial_state(const lt_study *s, int trial, lt_trial_state *state, double *value) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    *state = (lt_trial_state)state_from_name(json_string_value(json_object_get(t, "state")));
    if (value) *value = json_is_number(json_object_get(t, "value"))
                            ? json_number_value(json_object_get(t, "value")) : NAN;
    return LT_OK;
}

static lt_status param_of(const lt_study *s, int trial, const char *name, json_t **v, int *pi) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    *pi = lt_space_find(&s->space, name);
    if (*pi < 0) return lt_error(LT_ERR_NOTFOUND, "%s: no parameter '%s'", s->path, name);
    *v = json_object_get(json_object_get(t, "params"), name);
    return LT_OK;
}

lt_status lt_study_param_number(const lt_study *s, int trial, const char *name, double *out) {
    json_t *v = NULL;
    int pi = 0;
    lt_status st = param_of(s, trial, name, &v, &pi);
    if (st) return st;
    if (s->space.p[pi].type == LT_PARAM_CATEGORICAL)
        return lt_error(LT_ERR_ARG, "%s: parameter '%s' is categorical (use its choice)", s->path,
                        name);
    *out = json_number_value(v);
    return LT_OK;
}

lt_status lt_study_param_choice_json(const lt_study *s, int trial, const char *name, char **out) {
    json_t *v = NULL;
    int pi = 0;
    lt_status st = param_of(s, trial, name, &v, &pi);
    if (st) return st;
    *out = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
}

static char *dump(json_t *o) {
    char *t = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    return t;
}

lt_status lt_study_trial_json(const lt_study *s, int trial, char **out) {
    json_t *t = trial_at(s, trial);
    if (!t) return unknown_trial(s, trial);
    *out = dump(json_pack("{s:i, s:O}", "trial", trial, "params", json_object_get(t, "params")));
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
}

lt_status lt_study_summary_json(const lt_study *s, char **out, int *best_trial) {
    int best = -1, n_complete = 0;
    double bv = 0;
    size_t i;
    json_t *t;
    json_array_foreach(s->trials, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "state")), "complete")) continue;
        double v = json_number_value(json_object_get(t, "value"));
        n_complete++;
        if (best < 0 || (s->opt.maximize ? v > bv : v < bv)) best = (int)i, bv = v;
    }
    json_t *b = json_null();
    if (best >= 0) {
        t = json_array_get(s->trials, (size_t)best);
        b = json_pack("{s:i, s:f, s:O}", "trial", best, "value", bv, "params",
                      json_object_get(t, "params"));
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:O, s:i, s:i, s:O, s:o}", "direction",
                          s->opt.maximize ? "maximize" : "minimize", "sampler",
                          lt_sampler_name(s->opt.sampler), "seed", (json_int_t)s->opt.seed,
                          "n_startup", s->opt.n_startup, "space",
                          json_object_get(s->root, "space"), "n_trials", lt_study_n_trials(s),
                          "n_complete", n_complete, "trials", s->trials, "best", b);
    if (best_trial) *best_trial = best;
    *out = o ? dump(o) : NULL;
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
}

lt_status lt_study_param_importance(const lt_study *s, double *imp, double *main_fraction,
                                    int *n_used) {
    return lt_tune_importance(&s->space, s->trials, s->opt.maximize, imp, main_fraction, n_used);
}

static lt_status study_warm_start_(lt_study *s, const char *other_dir, int *n_used,
                                   int *n_skipped) {
    if (n_used) *n_used = 0;
    if (n_skipped) *n_skipped = 0;
    if (s->readonly) return lt_error(LT_ERR_ARG, "%s: opened read-only", s->path);
    if (lt_study_n_trials(s) > 0 || json_object_get(s->root, "warm_start"))
        return lt_error(LT_ERR_ARG,
                        "%s: a warm start is given before the first trial (the study has "
                        "%d trials%s)",
                        s->path, lt_study_n_trials(s),
                        json_object_get(s->root, "warm_start") ? " and a warm start" : "");
    lt_study *o = NULL;
    lt_status st = lt_study_open_readonly(other_dir, &o);
    if (st) return st;
    if (o->opt.maximize != s->opt.maximize) {
        st = lt_error(LT_ERR_ARG, "warm start: %s %ss, this study %ss", o->path,
                      o->opt.maximize ? "maximize" : "minimize",
                      s->opt.maximize ? "maximize" : "minimize");
        lt_study_close(o);
        return st;
    }
    json_t *arr = json_array(), *ws = NULL;
    double x[s->space.dims + 1];
    int used = 0, skipped = 0;
    size_t i;
    json_t *t;
    json_array_foreach(o->trials, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "state")), "complete")) continue;
        lt_status fit = lt_space_params_to_model(&s->space, json_object_get(t, "params"), "", x);
        if (fit) { /* a parameter missing here, or outside this space's range / choices */
            skipped++;
            continue;
        }
        json_t *e = json_pack("{s:O, s:s, s:O, s:O}", "trial", json_object_get(t, "trial"),
                              "state", "complete", "params", json_object_get(t, "params"), "value",
                              json_object_get(t, "value"));
        if (!e || json_array_append_new(arr, e)) {
            st = lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
            break;
        }
        used++;
    }
    if (!st && !(ws = json_pack("{s:s, s:O}", "source", other_dir, "trials", arr)))
        st = lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
    if (!st && json_object_set_new(s->root, "warm_start", ws)) {
        ws = NULL;
        st = lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
    }
    if (!st && (st = study_write(s))) json_object_del(s->root, "warm_start");
    json_decref(arr);
    lt_study_close(o);
    if (st) return st;
    if (n_used) *n_used = used;
    if (n_skipped) *n_skipped = skipped;
    return LT_OK;
}

/* ---- the public changes: each one transaction on a PostgreSQL study ----------------------- */
/* A PostgreSQL study: BEGIN, the row read FOR UPDATE (what other workers told meanwhile), so
 * that the change applies to the current document; study_end commits it (or rolls back). A
 * folder's study is held under its lock from open to close: nothing to do. */
static lt_status study_begin(lt_study *s) {
    if (!s->pg) return LT_OK;
    if (s->readonly) return lt_error(LT_ERR_ARG, "%s: the study was opened read-only", s->path);
    char *doc = NULL;
    lt_status st = lt_study_pg_load(s->pg, 1, &doc);
    if (st) return st;
    json_error_t err;
    json_t *root = json_loads(doc, JSON_REJECT_DUPLICATES, &err);
    free(doc);
    if (!root)
        return lt_study_pg_end(s->pg, lt_error(LT_ERR_FORMAT, "%s: line %d: invalid JSON: %s",
                                               s->path, err.line, err.text));
    json_decref(s->root);
    lt_space_free(&s->space);
    memset(&s->space, 0, sizeof s->space);
    s->root = root;
    s->trials = NULL;
    if ((st = study_validate(s))) return lt_study_pg_end(s->pg, st);
    return LT_OK;
}

static lt_status study_end(lt_study *s, lt_status st) {
    return s->pg ? lt_study_pg_end(s->pg, st) : st;
}

#define IN_TXN(s, call)                                                                            \
    do {                                                                                           \
        lt_status st_ = study_begin(s);                                                            \
        if (st_) return st_;                                                                       \
        return study_end((s), (call));                                                             \
    } while (0)

/* Trials that count toward a study's total: all but those told infeasible (never run). */
static int counted_trials(const lt_study *s) {
    int n = 0;
    for (size_t i = 0; i < json_array_size(s->trials); i++)
        if (!json_object_get(json_array_get(s->trials, i), "infeasible")) n++;
    return n;
}

static lt_status study_ask_within_(lt_study *s, int max_trials, int *trial) {
    *trial = -1;
    if (max_trials > 0 && counted_trials(s) >= max_trials) return LT_OK;
    return study_ask_(s, trial);
}

lt_status lt_study_ask_within(lt_study *s, int max_trials, int *trial) {
    IN_TXN(s, study_ask_within_(s, max_trials, trial));
}
lt_status lt_study_refresh(lt_study *s) {
    IN_TXN(s, LT_OK);
}
lt_status lt_study_ask(lt_study *s, int *trial) {
    IN_TXN(s, study_ask_(s, trial));
}
lt_status lt_study_tell(lt_study *s, int trial, lt_trial_state state, double value) {
    IN_TXN(s, study_tell_(s, trial, state, value));
}
lt_status lt_study_report(lt_study *s, int trial, int64_t step, double value) {
    IN_TXN(s, study_report_(s, trial, step, value));
}
lt_status lt_study_tell_infeasible(lt_study *s, int trial, const char *reason) {
    IN_TXN(s, tell_failed_why(s, trial, "infeasible", reason));
}
lt_status lt_study_tell_error(lt_study *s, int trial, const char *reason) {
    IN_TXN(s, tell_failed_why(s, trial, "error", reason));
}
lt_status lt_study_restart(lt_study *s, int trial) {
    IN_TXN(s, study_restart_(s, trial));
}
lt_status lt_study_heartbeat(lt_study *s, int trial, int *running) {
    int r = 0;
    if (!running) running = &r;
    IN_TXN(s, study_heartbeat_(s, trial, running));
}
lt_status lt_study_claim_stale(lt_study *s, int stale_s, const int *skip, int n_skip, int *trial) {
    IN_TXN(s, study_claim_stale_(s, stale_s, skip, n_skip, trial));
}
lt_status lt_study_should_prune(lt_study *s, int trial, const lt_prune_opts *p, int *prune,
                                int *rung) {
    IN_TXN(s, study_should_prune_(s, trial, p, prune, rung));
}
lt_status lt_study_warm_start(lt_study *s, const char *other_dir, int *n_used, int *n_skipped) {
    IN_TXN(s, study_warm_start_(s, other_dir, n_used, n_skipped));
}
