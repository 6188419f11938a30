/* registry.c - the model registry of the server's tracking store (WORK/store, track.h) through
 * the API: every registered model with its versions and stages, registering a finished train
 * job's run as the next version of a name, and moving a version to a stage (promote), the calls
 * `loratune models register / list / show / promote` make. The web interface's Models page is
 * built on these three.
 *
 * A store handle serves one thread: each request opens its own (SQLite WAL), as runs.c does.
 * Paths in the answers (adapter_path, base, data) are scrubbed to WORK/... and MODELS/.... */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/track.h"
#include "serve_internal.h"

static lt_status open_store(lt_server *s, lt_store **st) {
    char dir[LT_SERVE_PATH + 16];
    snprintf(dir, sizeof dir, "%s/store", s->work);
    return lt_store_open(dir, st);
}

/* Registered model names: what deployments take (deploy.c's rule), so a name from here can
 * always be deployed and put in a URL. */
static int reg_name_ok(const char *n) {
    size_t l = strlen(n);
    if (l < 1 || l > 56 || n[0] == '.') return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* One model with all its versions (lt_registry_model_json), scrubbed; NULL + *http on error. */
static json_t *model_json(lt_server *s, lt_store *st, const char *name, int *http) {
    char *text = NULL;
    lt_status r = lt_registry_model_json(st, name, 0, &text);
    if (r) {
        *http = r == LT_ERR_NOTFOUND ? 404 : 500;
        return NULL;
    }
    json_t *raw = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *v = raw ? lt_serve_scrub_json(s, raw) : NULL;
    json_decref(raw);
    if (!v) {
        *http = 500;
        lt_error(LT_ERR_INTERNAL, "the tracking store gave no JSON");
    }
    return v;
}

enum MHD_Result lt_registry_list(lt_server *s, struct MHD_Connection *c) {
    lt_store *st = NULL;
    if (open_store(s, &st)) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    char *text = NULL;
    lt_status r = lt_registry_list_json(st, &text);
    json_t *list = !r && text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        int http = 0;
        json_t *full = name ? model_json(s, st, name, &http) : NULL;
        if (!full) continue; /* removed between the two reads */
        json_object_set(full, "latest_version", json_object_get(m, "latest_version"));
        json_object_set(full, "stages", json_object_get(m, "stages"));
        json_array_append_new(out, full);
    }
    json_decref(list);
    lt_store_close(st);
    if (r) {
        json_decref(out);
        return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    }
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "models", out));
}

/* The tracking-store run of a done tune / compare job's best trial (best: the job's "best",
 * {trial, dir, method?}): the newest run named trial-N of kind hpo-trial whose tags say trial N
 * of the job's study (WORK/jobs/ID/out, a compare job's OUT/METHOD: `loratune tune` tags every
 * trial's run so). The newest, because a resumed study runs its cut trial again. */
static lt_status best_trial_run(lt_server *s, lt_store *st, const char *job_id, const json_t *best,
                                int64_t *run) {
    *run = 0;
    json_int_t trial = json_integer_value(json_object_get(best, "trial"));
    const char *method = json_string_value(json_object_get(best, "method"));
    char study[LT_SERVE_PATH + 128], want[PATH_MAX], got[PATH_MAX], name[32], tr[32];
    snprintf(study, sizeof study, "%s/jobs/%s/out%s%s", s->work, job_id, method ? "/" : "",
             method ? method : "");
    if (!realpath(study, want))
        return lt_error(LT_ERR_NOTFOUND, "job '%s': its study folder is gone", job_id);
    snprintf(name, sizeof name, "trial-%lld", (long long)trial);
    snprintf(tr, sizeof tr, "%lld", (long long)trial);
    char *text = NULL;
    lt_status r = lt_store_runs_json(st, "serve", 0, &text);
    json_t *runs = !r && text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (r) return r;
    size_t i;
    json_t *x;
    json_array_foreach(runs, i, x) {
        const char *n = json_string_value(json_object_get(x, "name"));
        const char *k = json_string_value(json_object_get(x, "kind"));
        if (*run || !n || strcmp(n, name) || !k || strcmp(k, "hpo-trial")) continue;
        json_int_t id = json_integer_value(json_object_get(x, "id"));
        char *full = NULL;
        if (lt_store_run_to_json(st, id, 0, &full)) continue;
        json_t *o = full ? json_loads(full, 0, NULL) : NULL;
        free(full);
        json_t *tags = json_object_get(o, "tags");
        const char *ts = json_string_value(json_object_get(tags, "study"));
        const char *tt = json_string_value(json_object_get(tags, "trial"));
        if (ts && tt && !strcmp(tt, tr) && realpath(ts, got) && !strcmp(got, want)) *run = id;
        json_decref(o);
    }
    json_decref(runs);
    return *run ? LT_OK
                : lt_error(LT_ERR_NOTFOUND, "job '%s': trial %lld has no run in the tracking store",
                           job_id, (long long)trial);
}

/* POST /api/registry {job, name, description?}: the job's run becomes the next version; a
 * tune / compare job's best trial's run. */
enum MHD_Result lt_registry_create(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "job") && strcmp(key, "name") && strcmp(key, "description"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected job, name, description)", key);
    }
    json_t *job = json_object_get(body, "job"), *name = json_object_get(body, "name");
    json_t *desc = json_object_get(body, "description");
    if (!json_is_string(job))
        return lt_reply_error(c, 400, "bad_request",
                              "job: expected the id of a finished train job (a string)");
    if (!json_is_string(name) || !reg_name_ok(json_string_value(name)))
        return lt_reply_error(c, 400, "bad_request",
                              "name: expected 1 to 56 characters of [A-Za-z0-9._-], not starting "
                              "with '.' (the name clients will put in `model` once deployed)");
    if (desc && !json_is_null(desc) &&
        (!json_is_string(desc) || strlen(json_string_value(desc)) > 1000))
        return lt_reply_error(c, 400, "bad_request",
                              "description: expected a string of at most 1000 characters");
    const char *id = json_string_value(job);
    json_int_t run = 0;
    char why[160] = "";
    pthread_mutex_lock(&s->mu);
    lt_job *j = NULL;
    for (int i = 0; i < s->n_jobs && !j; i++)
        if (!strcmp(s->jobs[i]->id, id)) j = s->jobs[i];
    json_t *best = NULL; /* a tune / compare job's best trial */
    if (j) {
        const char *kind = json_string_value(json_object_get(j->record, "kind"));
        int hpo = kind && (!strcmp(kind, "tune") || !strcmp(kind, "compare"));
        if (kind && strcmp(kind, "train") && !hpo)
            snprintf(why, sizeof why, "job '%s' is a %s job: register a train, tune or compare job",
                     id, kind);
        else if (j->status != JOB_DONE)
            snprintf(why, sizeof why, "job '%s' is %s, not done", id, lt_job_status_name(j->status));
        else if (hpo && !(best = json_deep_copy(json_object_get(j->record, "best"))))
            snprintf(why, sizeof why, "%s job '%s' has no complete trial to register", kind, id);
        run = json_integer_value(json_object_get(j->record, "run_id"));
        if (!*why && !hpo && run <= 0)
            snprintf(why, sizeof why, "job '%s' has no run in the tracking store", id);
    }
    pthread_mutex_unlock(&s->mu);
    if (!j) return lt_reply_error(c, 404, "not_found", "job: no job '%.40s'", id);
    if (*why) {
        json_decref(best);
        return lt_reply_error(c, 409, "conflict", "%s", why);
    }
    lt_store *st = NULL;
    if (open_store(s, &st)) {
        json_decref(best);
        return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    }
    if (best) {
        int64_t trun = 0;
        lt_status bst = best_trial_run(s, st, id, best, &trun);
        json_decref(best);
        if (bst) {
            char *msg = lt_serve_scrub(s, lt_errmsg());
            lt_store_close(st);
            enum MHD_Result r = lt_reply_error(c, bst == LT_ERR_NOTFOUND ? 409 : 500,
                                               bst == LT_ERR_NOTFOUND ? "conflict" : "store", "%s",
                                               msg ? msg : "out of memory");
            lt_free(msg);
            return r;
        }
        run = (json_int_t)trun;
    }
    lt_registry_desc d = {.name = json_string_value(name),
                          .description = json_is_string(desc) ? json_string_value(desc) : NULL};
    int version = 0, http = 0;
    json_t *out = NULL;
    if (lt_registry_register(st, (int64_t)run, &d, &version) ||
        !(out = model_json(s, st, d.name, &http))) {
        char *msg = lt_serve_scrub(s, lt_errmsg());
        lt_store_close(st);
        enum MHD_Result r = lt_reply_error(c, 500, "store", "registration: %s", msg ? msg : "");
        lt_free(msg);
        return r;
    }
    lt_store_close(st);
    json_object_set_new(out, "version", json_integer(version));
    return lt_reply_json(c, MHD_HTTP_CREATED, out);
}

/* POST /api/registry/{name}/stage {version, stage, archive_others?}: `models promote`. */
enum MHD_Result lt_registry_stage(lt_server *s, struct MHD_Connection *c, const char *name,
                                  const json_t *body) {
    if (!reg_name_ok(name))
        return lt_reply_error(c, 404, "not_found", "no registered model '%.80s'", name);
    if (!body)
        return lt_reply_error(c, 400, "bad_json",
                              "request body: expected {\"version\": N, \"stage\": \"production\"}");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "version") && strcmp(key, "stage") && strcmp(key, "archive_others"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected version, stage, archive_others)",
                                  key);
    }
    json_t *ver = json_object_get(body, "version"), *stage = json_object_get(body, "stage");
    json_t *arch = json_object_get(body, "archive_others");
    double vn = json_number_value(ver);
    if (!json_is_number(ver) || vn != floor(vn) || vn < 1 || vn > 1000000)
        return lt_reply_error(c, 400, "bad_request",
                              "version: expected a version number, 1 to 1000000");
    lt_stage sv;
    if (!json_is_string(stage) || lt_stage_parse(json_string_value(stage), &sv))
        return lt_reply_error(c, 400, "bad_request",
                              "stage: expected one of none, staging, production, archived");
    if (arch && !json_is_boolean(arch))
        return lt_reply_error(c, 400, "bad_request", "archive_others: expected a boolean");
    lt_store *st = NULL;
    if (open_store(s, &st)) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    char *text = NULL;
    lt_status r = lt_registry_model_json(st, name, (int)vn, &text);
    free(text);
    if (r == LT_ERR_NOTFOUND) {
        lt_store_close(st);
        return lt_reply_error(c, 404, "not_found", "no version %d of registered model '%s'",
                              (int)vn, name);
    }
    int http = 500;
    json_t *out = NULL;
    if (!r) r = lt_registry_promote(st, name, (int)vn, sv, arch ? json_is_true(arch) : 1);
    if (!r) out = model_json(s, st, name, &http);
    if (!out) {
        char *msg = lt_serve_scrub(s, lt_errmsg());
        lt_store_close(st);
        enum MHD_Result rr = lt_reply_error(c, 500, "store", "promote: %s", msg ? msg : "");
        lt_free(msg);
        return rr;
    }
    lt_store_close(st);
    return lt_reply_json(c, MHD_HTTP_OK, out);
}
