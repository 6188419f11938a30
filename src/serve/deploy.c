/* deploy.c - deployments of registry versions, canaries, rollback, and the retraining loop
 * that Alertmanager starts through the webhook (docs/SERVING.md "Deployment", "The retraining
 * loop").
 *
 * A deployment is a stable name NAME (what clients put in `model`) over versions of the
 * registered model NAME in the tracking store (WORK/store): version K is served as the adapter
 * "NAME.vK" (infer.c's registry, so it can also be asked for by that name), its drift
 * reference made from the version's training data (monitor.c). The stable version answers the
 * requests for NAME; with a canary, every request's turn is counted and the canary takes a
 * share of them (request k goes to the canary when floor((k+1) share) > floor(k share): an
 * exact, deterministic split). Deploying a new stable version is a hot swap: the new adapter
 * is loaded first, the name switches to it under the lock, then the old one is unloaded, which
 * (reference counts) frees it when the last request using it ends.
 *
 * Retraining (POST /api/alerts, Alertmanager's webhook JSON): a firing alert whose labels name
 * a deployment (`deployment`) queues a train job with the deployed version's job options on
 * the newest upload of its dataset (same name), recorded as a run of kind "retrain"; when the
 * job ends (lt_deploy_job_done, on the worker thread) an evaluation gate (a run of kind
 * "eval-gate") compares the validation loss of the champion (the stable version) and of the
 * challenger on the deployment's held-out dataset; a challenger that is lower is registered
 * as the next version, promoted to production and deployed (a "deploy" run). Lineage lives in
 * run tags: the train run's parent_run is the retrain run, the gate's too; the deploy run
 * names the model version, its source run and the data version (md5) it was trained on.
 *
 * Locking: d->mu guards the deployments (short holds: routing takes it per request); d->op
 * serializes deploy / rollback operations, which load adapters and write the store outside
 * d->mu. Deployments are written to WORK/deployments/NAME.json and deployed again when the
 * server restarts, once its model is loaded (restore_main). */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/io.h"
#include "loratune/run.h"
#include "loratune/track.h"
#include "serve_internal.h"

#define MAX_DEPLOYMENTS 64
#define MAX_PREV 16

typedef struct {
    char name[57];
    int stable, canary; /* versions (0: none) */
    double share;       /* the canary's share of the requests */
    uint64_t turn;      /* requests routed (the canary split) */
    int prev[MAX_PREV]; /* earlier stable versions, newest last (rollback) */
    int n_prev;
    char holdout[LT_SERVE_ID_LEN + 1]; /* dataset id of the held-out set, "" none */
    int retraining;                    /* a retraining job in flight */
    uint64_t outcomes[3];              /* retrains promoted, rejected, failed */
    double deployed;                   /* time of the last change */
    int64_t deploy_run[2];             /* the deploy runs of stable and canary */
    /* the quality scorer's last result per role: the held-out loss, on which dataset version */
    int q_version[2];
    double q_loss[2];
    char q_dataset[2][LT_SERVE_ID_LEN + 1];
    uint64_t q_evals;
    int q_wake; /* POST .../evaluate asked for it */
} deployment;

struct lt_deploy {
    pthread_mutex_t mu, op;
    deployment d[MAX_DEPLOYMENTS];
    int n;
    pthread_t restorer; /* deploys WORK/deployments/ again once the model is loaded */
    int restorer_started;
    pthread_t quality; /* scores deployed versions on their held-out sets (quality_main) */
    int quality_started, quality_every;
    pthread_cond_t qcv; /* with mu: wakes the quality scorer */
};

static const char *const k_outcome[3] = {"promoted", "rejected", "failed"};

int lt_deploy_uses_dataset(lt_server *s, const char *id, char *name, size_t n) {
    lt_deploy *dp = s->deploy;
    int found = 0;
    if (!dp) return 0;
    pthread_mutex_lock(&dp->mu);
    for (int i = 0; i < dp->n && !found; i++)
        if (!strcmp(dp->d[i].holdout, id)) {
            snprintf(name, n, "%s", dp->d[i].name);
            found = 1;
        }
    pthread_mutex_unlock(&dp->mu);
    return found;
}

static void *restore_main(void *arg);
static void *quality_main(void *arg);
static int stopping(lt_server *s);
static void newest_dataset(lt_server *s, const char *id, char out[LT_SERVE_ID_LEN + 1]);

lt_status lt_deploy_init(lt_server *s, const lt_serve_opts *o) {
    lt_deploy *d = lt_calloc(1, sizeof *d);
    s->monitor = lt_monitor_new(s);
    if (!d || !s->monitor) {
        lt_free(d);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->op, NULL);
    pthread_cond_init(&d->qcv, NULL);
    d->quality_every = o->quality_every_s == 0 ? 3600 : o->quality_every_s;
    s->deploy = d;
    char dir[LT_SERVE_PATH];
    snprintf(dir, sizeof dir, "%s/deployments", s->work);
    lt_status st = lt_mkdir_p(dir, 0700, NULL);
    if (!st && lt_infer_enabled(s)) {
        d->restorer_started = pthread_create(&d->restorer, NULL, restore_main, s) == 0;
        d->quality_started = pthread_create(&d->quality, NULL, quality_main, s) == 0;
    }
    return st;
}

void lt_deploy_free(lt_server *s) {
    if (s->deploy && s->deploy->restorer_started) /* it sees s->stopping */
        pthread_join(s->deploy->restorer, NULL);
    if (s->deploy && s->deploy->quality_started) {
        pthread_mutex_lock(&s->deploy->mu);
        pthread_cond_broadcast(&s->deploy->qcv); /* s->stopping is set */
        pthread_mutex_unlock(&s->deploy->mu);
        pthread_join(s->deploy->quality, NULL);
    }
    if (s->deploy) {
        pthread_cond_destroy(&s->deploy->qcv);
        pthread_mutex_destroy(&s->deploy->mu);
        pthread_mutex_destroy(&s->deploy->op);
        lt_free(s->deploy);
        s->deploy = NULL;
    }
    lt_monitor_free(s->monitor);
    s->monitor = NULL;
}

static deployment *find_dep(lt_deploy *d, const char *name) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->d[i].name, name)) return &d->d[i];
    return NULL;
}

static void served_name(const char *name, int version, char *out, size_t n) {
    snprintf(out, n, "%s.v%d", name, version);
}

/* Deployment names become adapter names ("NAME.vK") and metric labels. */
static int name_ok(const char *n) {
    size_t l = strlen(n);
    if (l < 1 || l > 56 || n[0] == '.') return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

lt_served *lt_deploy_lookup(lt_server *s, const char *name) {
    lt_deploy *d = s->deploy;
    if (!d || !name) return NULL;
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    int v = 0;
    if (x) {
        v = x->stable;
        if (x->canary && x->share > 0) {
            uint64_t k = x->turn++;
            if (floor((double)(k + 1) * x->share) > floor((double)k * x->share)) v = x->canary;
        }
    }
    pthread_mutex_unlock(&d->mu);
    if (!v) return NULL;
    char sn[80];
    served_name(name, v, sn, sizeof sn);
    return lt_infer_lookup(s, sn);
}

/* ---- the store ---------------------------------------------------------------------------- */
typedef struct {
    int64_t run_id;
    char adapter[LT_SERVE_PATH], data[LT_SERVE_PATH], md5[48], base[LT_SERVE_PATH];
    char run_name[128];
} version_info;

static lt_status open_store(lt_server *s, lt_store **st) {
    char dir[LT_SERVE_PATH + 16];
    snprintf(dir, sizeof dir, "%s/store", s->work);
    return lt_store_open(dir, st);
}

static void copy_str(char *out, size_t n, const json_t *v) {
    snprintf(out, n, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static lt_status get_version(lt_store *st, const char *name, int version, version_info *vi) {
    memset(vi, 0, sizeof *vi);
    char *text = NULL;
    lt_status rc = lt_registry_model_json(st, name, version, &text);
    if (rc) return rc;
    json_t *m = json_loads(text, 0, NULL);
    free(text);
    json_t *v = json_array_get(json_object_get(m, "versions"), 0);
    if (!v) {
        json_decref(m);
        return lt_error(LT_ERR_NOTFOUND, "model '%s' has no version %d", name, version);
    }
    vi->run_id = json_integer_value(json_object_get(v, "run_id"));
    copy_str(vi->adapter, sizeof vi->adapter, json_object_get(v, "adapter_path"));
    copy_str(vi->data, sizeof vi->data, json_object_get(json_object_get(v, "data"), "path"));
    copy_str(vi->md5, sizeof vi->md5, json_object_get(json_object_get(v, "data"), "md5"));
    copy_str(vi->base, sizeof vi->base, json_object_get(json_object_get(v, "base"), "name"));
    json_decref(m);
    if (!vi->adapter[0])
        return lt_error(LT_ERR_ARG,
                        "%s version %d has no adapter (a merged or full model "
                        "cannot be served on the base)",
                        name, version);
    if (vi->run_id > 0 && !lt_store_run_to_json(st, vi->run_id, 0, &text)) {
        json_t *r = json_loads(text, 0, NULL);
        free(text);
        copy_str(vi->run_name, sizeof vi->run_name, json_object_get(r, "name"));
        json_decref(r);
    }
    return LT_OK;
}

static char *itoa_(int64_t v, char *buf) {
    sprintf(buf, "%lld", (long long)v);
    return buf;
}

/* A finished run of kind `kind` in experiment "serve"; tags given as key, value pairs (NULL
 * ends). Returns its id, or 0 when the store refused (never stops the loop). */
static int64_t record_run(lt_store *st, const char *kind, const char *name, const char *data,
                          const char *md5, int64_t parent, ...) {
    lt_track_run_desc rd = {.experiment = "serve",
                            .name = name,
                            .kind = kind,
                            .command = "loratune serve",
                            .data_path = data,
                            .data_md5 = md5};
    int64_t id = 0;
    if (lt_store_run_begin(st, &rd, &id)) return 0;
    char b[32];
    if (parent > 0) lt_store_set_tag(st, id, "parent_run", itoa_(parent, b));
    va_list ap;
    va_start(ap, parent);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        if (v) lt_store_set_tag(st, id, k, v);
    }
    va_end(ap);
    return id;
}

/* ---- deploying ----------------------------------------------------------------------------- */
static json_t *dep_json(lt_server *s, const deployment *x) {
    char sn[80];
    json_t *o =
        json_pack("{s:s,s:f,s:b,s:f}", "name", x->name, "canary_share", x->canary ? x->share : 0.0,
                  "retraining", x->retraining, "deployed", x->deployed);
    json_t *prev = json_array();
    for (int i = 0; i < x->n_prev; i++)
        json_array_append_new(prev, json_integer(x->prev[i]));
    json_object_set_new(o, "previous", prev);
    json_object_set_new(o, "holdout", x->holdout[0] ? json_string(x->holdout) : json_null());
    int vs[2] = {x->stable, x->canary};
    const char *roles[2] = {"stable", "canary"};
    for (int r = 0; r < 2; r++) {
        if (!vs[r]) {
            json_object_set_new(o, roles[r], json_null());
            continue;
        }
        served_name(x->name, vs[r], sn, sizeof sn);
        json_t *v = json_pack("{s:i,s:s}", "version", vs[r], "model", sn);
        if (x->q_version[r] == vs[r])
            json_object_set_new(
                v, "holdout_loss",
                json_pack("{s:f,s:s}", "loss", x->q_loss[r], "dataset", x->q_dataset[r]));
        double psi, kl;
        int win;
        if (lt_monitor_drift(s->monitor, sn, &psi, &kl, &win))
            json_object_set_new(
                v, "drift", json_pack("{s:f,s:f,s:i}", "psi", psi, "kl", kl, "window_tokens", win));
        json_object_set_new(o, roles[r], v);
    }
    json_t *rt = json_object();
    for (int i = 0; i < 3; i++)
        json_object_set_new(rt, k_outcome[i], json_integer((json_int_t)x->outcomes[i]));
    json_object_set_new(o, "retrains", rt);
    json_object_set_new(o, "evaluations", json_integer((json_int_t)x->q_evals));
    return o;
}

static void persist_dep(lt_server *s, const deployment *x) {
    char p[LT_SERVE_PATH + 96];
    snprintf(p, sizeof p, "%s/deployments/%s.json", s->work, x->name);
    json_t *o = dep_json(s, x);
    if (o) lt_serve_write_json(p, o);
    json_decref(o);
}

/* Makes version `version` of registered model `name` the stable version (share 0) or the
 * canary (0 < share < 1) of deployment `name`. holdout: a dataset id to keep as the held-out
 * set (NULL: keep the deployment's). reason: "manual", "retrain", "rollback". Under d->op. */
static lt_status deploy_locked(lt_server *s, const char *name, int version, double share,
                               const char *holdout, const char *reason, int64_t parent,
                               json_t **out, int *http) {
    lt_deploy *d = s->deploy;
    *http = 400;
    if (!name_ok(name))
        return lt_error(LT_ERR_ARG,
                        "model: expected 1 to 56 characters of [A-Za-z0-9._-] (a "
                        "registered model name), got '%.80s'",
                        name);
    if (!(share >= 0 && share < 1))
        return lt_error(LT_ERR_ARG, "canary: expected a share in [0, 1), got %g", share);
    char msg[1024];
    if (!lt_infer_enabled(s)) {
        *http = 404;
        return lt_error(LT_ERR_NOTFOUND, "this server serves no model (start it with --model): "
                                         "nothing to deploy an adapter on");
    }
    if (lt_infer_state(s, msg, sizeof msg) != 1) {
        *http = 503;
        return lt_error(LT_ERR_BUSY, "the base model is not loaded (GET /ready)%s%s",
                        *msg ? ": " : "", msg);
    }
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    int is_stable = x && x->stable == version, full = !x && d->n == MAX_DEPLOYMENTS;
    pthread_mutex_unlock(&d->mu);
    if (share > 0 && is_stable)
        return lt_error(LT_ERR_ARG, "canary: %s version %d is the stable version already", name,
                        version);
    if (full) return lt_error(LT_ERR_ARG, "at most %d deployments", MAX_DEPLOYMENTS);
    lt_store *st = NULL;
    version_info vi;
    lt_status rc = open_store(s, &st);
    if (!rc) rc = get_version(st, name, version, &vi);
    if (rc) {
        *http = rc == LT_ERR_NOTFOUND ? 404 : 400;
        lt_store_close(st);
        return rc;
    }
    lt_drift_ref *ref = NULL;
    if (!vi.data[0] || (rc = lt_drift_ref_build(s, vi.data, &ref))) {
        lt_store_close(st);
        if (!vi.data[0])
            return lt_error(LT_ERR_ARG,
                            "%s version %d records no training data: no drift "
                            "reference",
                            name, version);
        char why[1024];
        snprintf(why, sizeof why, "%s", lt_errmsg()); /* lt_error writes where it lives */
        return lt_error(rc, "%s version %d: drift reference from its training data: %s", name,
                        version, why);
    }
    json_t *refj = lt_drift_ref_json(ref);
    char sn[80];
    served_name(name, version, sn, sizeof sn);
    lt_served *have = lt_infer_lookup(s, sn);
    lt_served_release(s, have);
    if (!have && (rc = lt_infer_adapter_load(s, sn, vi.adapter, msg, sizeof msg))) {
        lt_drift_ref_free(ref);
        json_decref(refj);
        lt_store_close(st);
        lt_metrics_adapter_error(s);
        return lt_error(rc, "%s version %d: %s", name, version, msg);
    }
    int drop[2] = {0, 0}, old_stable = 0;
    pthread_mutex_lock(&d->mu); /* deploy operations are serialized (d->op): x is as checked */
    x = find_dep(d, name);
    if (!x) {
        x = &d->d[d->n++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", name);
    }
    old_stable = x->stable;
    if (share > 0) { /* a canary beside the stable version */
        if (x->canary && x->canary != version && x->canary != x->stable) drop[0] = x->canary;
        if (!x->stable) { /* nothing to be a canary of: it becomes the stable version */
            x->stable = version;
            share = 0;
        } else {
            x->canary = version;
            x->share = share;
        }
    } else {
        if (x->stable && x->stable != version) {
            if (x->n_prev == MAX_PREV) memmove(x->prev, x->prev + 1, (MAX_PREV - 1) * sizeof(int));
            if (strcmp(reason, "rollback")) x->prev[x->n_prev++] = x->stable;
            drop[0] = x->stable;
        }
        if (x->canary && x->canary != version) drop[1] = x->canary;
        x->stable = version;
        x->canary = 0;
        x->share = 0;
    }
    if (holdout) snprintf(x->holdout, sizeof x->holdout, "%s", holdout);
    x->deployed = lt_serve_now();
    /* the reference before the first request can be routed to it: a new window */
    lt_monitor_watch(s->monitor, sn, name, ref);
    json_t *o = dep_json(s, x);
    persist_dep(s, x);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < 2; i++) /* the hot swap's end: in-flight requests keep their entry */
        if (drop[i] && drop[i] != version) {
            char dn[80];
            int in_flight;
            served_name(name, drop[i], dn, sizeof dn);
            lt_infer_adapter_unload(s, dn, &in_flight);
            lt_monitor_unwatch(s->monitor, dn);
        }

    /* the record: a run of kind "deploy" with the lineage, and the registry stage */
    char b1[32], b2[32], b3[32], rname[128], shr[32];
    snprintf(rname, sizeof rname, "deploy %s.v%d", name, version);
    snprintf(shr, sizeof shr, "%g", share);
    char *reftext = json_dumps(refj, JSON_COMPACT);
    int64_t run =
        record_run(st, "deploy", rname, vi.data, vi.md5[0] ? vi.md5 : NULL, parent, "deployment",
                   name, "model_name", name, "model_version", itoa_(version, b1), "source_run",
                   itoa_(vi.run_id, b2), "source_job", vi.run_name[0] ? vi.run_name : NULL, "role",
                   share > 0 ? "canary" : "stable", "canary_share", shr, "reason", reason,
                   "previous_version", old_stable ? itoa_(old_stable, b3) : NULL, "served_as", sn,
                   "drift_reference", reftext, (const char *)NULL);
    free(reftext);
    if (run) {
        pthread_mutex_lock(&d->mu);
        deployment *y = find_dep(d, name);
        if (y) {
            int role = share > 0 ? 1 : 0;
            y->deploy_run[role] = run;
            y->q_version[role] = 0; /* not scored yet */
            if (role == 0) y->q_version[1] = y->canary ? y->q_version[1] : 0;
            y->q_wake = 1; /* score the new version now */
            pthread_cond_broadcast(&d->qcv);
        }
        pthread_mutex_unlock(&d->mu);
        lt_store_log_metric(st, run, "drift_reference_tokens", 0,
                            json_number_value(json_object_get(refj, "tokens")));
        lt_store_run_end(st, run, LT_TRACK_FINISHED);
        json_object_set_new(o, "deploy_run", json_integer(run));
    }
    lt_registry_promote(st, name, version, share > 0 ? LT_STAGE_STAGING : LT_STAGE_PRODUCTION, 1);
    json_object_set_new(o, "reference", refj);
    lt_store_close(st);
    *out = o;
    *http = 200;
    return LT_OK;
}

static lt_status deploy_version(lt_server *s, const char *name, int version, double share,
                                const char *holdout, const char *reason, int64_t parent,
                                json_t **out, int *http) {
    pthread_mutex_lock(&s->deploy->op);
    lt_status rc = deploy_locked(s, name, version, share, holdout, reason, parent, out, http);
    pthread_mutex_unlock(&s->deploy->op);
    return rc;
}

enum MHD_Result lt_deploy_create(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "model") && strcmp(key, "version") && strcmp(key, "canary") &&
            strcmp(key, "holdout"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected model, version, canary, holdout)",
                                  key);
    }
    json_t *m = json_object_get(body, "model"), *ver = json_object_get(body, "version");
    json_t *can = json_object_get(body, "canary"), *ho = json_object_get(body, "holdout");
    if (!json_is_string(m))
        return lt_reply_error(c, 400, "bad_request",
                              "model: expected the name of a registered model (a string)");
    double vn = json_number_value(ver); /* 3.0 is an integer to JSON Schema too */
    if (!json_is_number(ver) || vn != floor(vn) || vn < 1 || vn > 1000000)
        return lt_reply_error(c, 400, "bad_request",
                              "version: expected a version number, 1 to 1000000");
    if (can && !json_is_number(can))
        return lt_reply_error(c, 400, "bad_request",
                              "canary: expected the canary's share of requests, 0 <= x < 1");
    if (ho && !json_is_null(ho)) {
        char p[LT_SERVE_PATH + 96];
        if (!json_is_string(ho) || lt_dataset_path(s, json_string_value(ho), p, sizeof p))
            return lt_reply_error(c, json_is_string(ho) ? 404 : 400,
                                  json_is_string(ho) ? "not_found" : "bad_request",
                                  "holdout: expected the id of an uploaded dataset (the held-out "
                                  "set of the retraining gate)");
    }
    json_t *out = NULL;
    int http = 400;
    lt_status rc =
        deploy_version(s, json_string_value(m), (int)vn, can ? json_number_value(can) : 0,
                       json_is_string(ho) ? json_string_value(ho) : NULL, "manual", 0, &out, &http);
    if (rc) {
        char *msg = lt_serve_scrub(s, lt_errmsg());
        enum MHD_Result r = lt_reply_error(c, (unsigned)http,
                                           http == 404   ? "not_found"
                                           : http == 503 ? "model_loading"
                                                         : "bad_request",
                                           "%s", msg ? msg : "error");
        lt_free(msg);
        return r;
    }
    json_t *clean = lt_serve_scrub_json(s, out);
    json_decref(out);
    return lt_reply_json(c, MHD_HTTP_OK, clean);
}

enum MHD_Result lt_deploy_list(lt_server *s, struct MHD_Connection *c) {
    lt_deploy *d = s->deploy;
    json_t *arr = json_array();
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n; i++)
        json_array_append_new(arr, dep_json(s, &d->d[i]));
    pthread_mutex_unlock(&d->mu);
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "deployments", arr));
}

/* Rollback: a canary is dropped; else the previous stable version is deployed again. */
enum MHD_Result lt_deploy_rollback_reply(lt_server *s, struct MHD_Connection *c, const char *name) {
    lt_deploy *d = s->deploy;
    pthread_mutex_lock(&d->op);
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    int canary = x ? x->canary : 0, prev = x && x->n_prev ? x->prev[x->n_prev - 1] : 0;
    if (x && canary) {
        x->canary = 0;
        x->share = 0;
        x->deployed = lt_serve_now();
        persist_dep(s, x);
    } else if (x && prev) {
        x->n_prev--;
    }
    pthread_mutex_unlock(&d->mu);
    json_t *out = NULL;
    int http = 200;
    lt_status rc = LT_OK;
    if (!x) {
        pthread_mutex_unlock(&d->op);
        return lt_reply_error(c, 404, "not_found", "no deployment '%.80s'", name);
    }
    if (canary) {
        char sn[80];
        int in_flight;
        served_name(name, canary, sn, sizeof sn);
        lt_infer_adapter_unload(s, sn, &in_flight);
        lt_monitor_unwatch(s->monitor, sn);
        lt_store *st = NULL;
        if (!open_store(s, &st)) {
            char b[32], rn[128];
            snprintf(rn, sizeof rn, "rollback %s.v%d", name, canary);
            int64_t run =
                record_run(st, "deploy", rn, NULL, NULL, 0, "deployment", name, "model_name", name,
                           "model_version", itoa_(canary, b), "role", "canary", "reason",
                           "rollback", "action", "canary removed", (const char *)NULL);
            if (run) lt_store_run_end(st, run, LT_TRACK_FINISHED);
            lt_registry_promote(st, name, canary, LT_STAGE_ARCHIVED, 0);
        }
        lt_store_close(st);
        pthread_mutex_lock(&d->mu);
        out = dep_json(s, x);
        pthread_mutex_unlock(&d->mu);
    } else if (prev) {
        rc = deploy_locked(s, name, prev, 0, NULL, "rollback", 0, &out, &http);
    } else {
        pthread_mutex_unlock(&d->op);
        return lt_reply_error(c, 409, "conflict",
                              "deployment '%.80s' has no canary and no earlier version to roll "
                              "back to",
                              name);
    }
    pthread_mutex_unlock(&d->op);
    if (rc) {
        char *msg = lt_serve_scrub(s, lt_errmsg());
        enum MHD_Result r =
            lt_reply_error(c, (unsigned)http, "bad_request", "%s", msg ? msg : "error");
        lt_free(msg);
        return r;
    }
    json_t *clean = lt_serve_scrub_json(s, out);
    json_decref(out);
    return lt_reply_json(c, MHD_HTTP_OK, clean);
}

/* ---- the retraining loop ------------------------------------------------------------------ */
/* The newest upload (by "created") whose name equals that of dataset `id`; out gets its id. */
static void newest_dataset(lt_server *s, const char *id, char out[LT_SERVE_ID_LEN + 1]) {
    snprintf(out, LT_SERVE_ID_LEN + 1, "%s", id);
    char p[LT_SERVE_PATH + 96];
    snprintf(p, sizeof p, "%s/datasets/%s/meta.json", s->work, id);
    json_t *m = json_load_file(p, 0, NULL);
    const char *want = json_string_value(json_object_get(m, "name"));
    double best = json_number_value(json_object_get(m, "created"));
    snprintf(p, sizeof p, "%s/datasets", s->work);
    DIR *dir = want ? opendir(p) : NULL;
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (!lt_serve_id_valid(e->d_name, "ds_")) continue;
        char q[LT_SERVE_PATH + 96];
        snprintf(q, sizeof q, "%s/datasets/%s/meta.json", s->work, e->d_name);
        json_t *o = json_load_file(q, 0, NULL);
        const char *nm = json_string_value(json_object_get(o, "name"));
        double t = json_number_value(json_object_get(o, "created"));
        if (nm && !strcmp(nm, want) && t > best) {
            best = t;
            snprintf(out, LT_SERVE_ID_LEN + 1, "%.20s", e->d_name);
        }
        json_decref(o);
    }
    if (dir) closedir(dir);
    json_decref(m);
}

static void retrain_finish(lt_server *s, const char *name, int outcome) {
    lt_deploy *d = s->deploy;
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    if (x) {
        x->retraining = 0;
        x->outcomes[outcome]++;
        persist_dep(s, x);
    }
    pthread_mutex_unlock(&d->mu);
}

/* Starts the retraining of deployment name; adds {deployment, job, retrain_run} or
 * {deployment, skipped: why} to res. */
static void start_retrain(lt_server *s, const char *name, const char *model, const char *alert,
                          json_t *res) {
    lt_deploy *d = s->deploy;
    char why[1024] = "", sn[80] = "", cn[80] = "";
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    int champion = x ? x->stable : 0;
    if (x) served_name(x->name, x->stable, sn, sizeof sn);
    if (x && x->canary) served_name(x->name, x->canary, cn, sizeof cn);
    char holdout[LT_SERVE_ID_LEN + 1] = "";
    if (!x)
        snprintf(why, sizeof why, "no deployment '%.80s'", name);
    else if (model && strcmp(model, sn) && strcmp(model, cn))
        snprintf(why, sizeof why,
                 "the alert is about %.80s, which deployment '%s' no longer "
                 "serves (stale)",
                 model, name);
    else if (x->retraining)
        snprintf(why, sizeof why, "a retraining of '%s' is already running", name);
    else if (!x->holdout[0])
        snprintf(why, sizeof why,
                 "deployment '%s' has no held-out dataset (deploy it with "
                 "\"holdout\") for the evaluation gate",
                 name);
    else {
        x->retraining = 1;
        snprintf(holdout, sizeof holdout, "%s", x->holdout);
    }
    pthread_mutex_unlock(&d->mu);
    if (*why) {
        json_array_append_new(res, json_pack("{s:s,s:s}", "deployment", name, "skipped", why));
        return;
    }
    lt_store *st = NULL;
    version_info vi;
    json_t *job = NULL;
    char jid[LT_SERVE_ID_LEN + 1] = "", newest[LT_SERVE_ID_LEN + 1] = "";
    int64_t run = 0;
    lt_status rc = open_store(s, &st);
    if (!rc) rc = get_version(st, name, champion, &vi);
    if (!rc && !lt_serve_id_valid(vi.run_name, "job_"))
        rc = lt_error(LT_ERR_ARG,
                      "%s version %d was not trained by a job of this server: its "
                      "options are not known",
                      name, champion);
    if (!rc) {
        char p[LT_SERVE_PATH + 96];
        snprintf(p, sizeof p, "%s/jobs/%s/job.json", s->work, vi.run_name);
        job = json_load_file(p, 0, NULL);
        if (!json_is_string(json_object_get(job, "dataset")))
            rc = lt_error(LT_ERR_NOTFOUND, "job %s of %s version %d is gone", vi.run_name, name,
                          champion);
    }
    if (!rc) {
        newest_dataset(s, json_string_value(json_object_get(job, "dataset")), newest);
        char data[LT_SERVE_PATH + 96], md5[33] = "", b1[32], b2[32], rn[128];
        lt_dataset_path(s, newest, data, sizeof data);
        lt_file_md5(data, md5, NULL);
        snprintf(rn, sizeof rn, "retrain %s", name);
        run = record_run(st, "retrain", rn, data, md5, 0, "deployment", name, "alert", alert,
                         "champion_version", itoa_(champion, b1), "champion_run",
                         itoa_(vi.run_id, b2), "dataset", newest, "holdout", holdout,
                         (const char *)NULL);
        json_t *extra =
            json_pack("{s:{s:s,s:i,s:s,s:I,s:s}}", "retrain", "deployment", name, "champion",
                      champion, "holdout", holdout, "retrain_run", (json_int_t)run, "alert", alert);
        rc = lt_jobs_enqueue(s, newest, json_string_value(json_object_get(job, "model")),
                             json_object_get(job, "options"), rn, extra, jid);
        json_decref(extra);
        if (!rc && run) lt_store_set_tag(st, run, "job", jid);
    }
    if (rc) {
        char *clean = lt_serve_scrub(s, lt_errmsg());
        json_array_append_new(
            res, json_pack("{s:s,s:s}", "deployment", name, "skipped", clean ? clean : "error"));
        lt_free(clean);
        if (run) {
            lt_store_set_tag(st, run, "outcome", "failed");
            lt_store_run_end(st, run, LT_TRACK_FAILED);
        }
        retrain_finish(s, name, 2);
    } else {
        json_array_append_new(res, json_pack("{s:s,s:s,s:I,s:s,s:i}", "deployment", name, "job",
                                             jid, "retrain_run", (json_int_t)run, "dataset", newest,
                                             "champion", champion));
    }
    json_decref(job);
    lt_store_close(st);
}

/* Alertmanager's webhook (version 4): {"status", "alerts": [{"status", "labels", ...}], ...}.
 * Every firing alert with a `deployment` label starts that deployment's retraining, unless one
 * runs already, or the alert's `model` label names a version the deployment no longer serves
 * (an alert about the version a retraining replaced). */
enum MHD_Result lt_deploy_alerts(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    json_t *alerts = json_object_get(body, "alerts");
    if (!json_is_array(alerts))
        return lt_reply_error(c, 400, "bad_request",
                              "alerts: expected Alertmanager's webhook JSON (version 4) with a "
                              "list \"alerts\"");
    json_t *res = json_array(), *ign = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(alerts, i, a) {
        const char *status = json_string_value(json_object_get(a, "status"));
        json_t *labels = json_object_get(a, "labels");
        const char *dep = json_string_value(json_object_get(labels, "deployment"));
        const char *an = json_string_value(json_object_get(labels, "alertname"));
        if (!status || strcmp(status, "firing") || !dep) {
            json_array_append_new(ign, json_pack("{s:i,s:s}", "index", (int)i, "why",
                                                 !dep ? "no deployment label" : "not firing"));
            continue;
        }
        start_retrain(s, dep, json_string_value(json_object_get(labels, "model")),
                      an ? an : "alert", res);
    }
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o,s:o}", "retraining", res, "ignored", ign));
}

/* Validation loss of model + adapter on the whole held-out file, with the job's data options. */
static lt_status holdout_loss(lt_server *s, const json_t *rec, const char *adapter,
                              const char *holdout, double *loss) {
    static const char *const keep[] = {"data-format",     "max-seq-len", "batch-size", "pack",
                                       "train-on-prompt", "seed",        "base-dtype", NULL};
    lt_run_opts o;
    lt_run_opts_default(&o);
    lt_status rc =
        lt_model_path(s, json_string_value(json_object_get(rec, "model")), o.model, sizeof o.model);
    if (rc) return rc;
    snprintf(o.data, sizeof o.data, "%s", holdout);
    snprintf(o.adapter, sizeof o.adapter, "%s", adapter);
    json_t *opts = json_object_get(rec, "options");
    for (int k = 0; keep[k]; k++) {
        const char *v = json_string_value(json_object_get(opts, keep[k]));
        if (v && (rc = lt_run_opts_set(&o, keep[k], v))) return rc;
    }
    o.valid_fraction = 0;
    o.eval_every = 0;
    if (s->job_threads > 0) o.threads = s->job_threads;
    lt_run *r = NULL;
    if ((rc = lt_run_create(&o, &r))) return rc;
    lt_eval_result ev;
    rc = lt_run_evaluate(r, LT_SPLIT_TRAIN, 0, &ev);
    if (!rc) *loss = ev.loss;
    lt_run_free(r);
    return rc;
}

void lt_deploy_job_done(lt_server *s, const json_t *rec) {
    json_t *rt = json_object_get(rec, "retrain");
    if (!rt) return;
    const char *name = json_string_value(json_object_get(rt, "deployment"));
    const char *hid = json_string_value(json_object_get(rt, "holdout"));
    const char *jid = json_string_value(json_object_get(rec, "id"));
    int champion = (int)json_integer_value(json_object_get(rt, "champion"));
    int64_t rrun = json_integer_value(json_object_get(rt, "retrain_run"));
    int64_t trun = json_integer_value(json_object_get(rec, "run_id"));
    const char *status = json_string_value(json_object_get(rec, "status"));
    if (!name || !jid) return;
    lt_store *st = NULL;
    if (open_store(s, &st)) st = NULL;
    char b[32], b2[32];
    if (st && trun > 0 && rrun > 0) lt_store_set_tag(st, trun, "parent_run", itoa_(rrun, b));
    int outcome = 2;
    const char *why = NULL;
    char err[1024] = "";
    version_info vi;
    if (!status || strcmp(status, "done")) {
        snprintf(err, sizeof err, "the train job ended %s", status ? status : "?");
    } else if (!st || get_version(st, name, champion, &vi)) {
        snprintf(err, sizeof err, "store: %s", lt_errmsg());
    } else {
        char hpath[LT_SERVE_PATH + 96], cpath[LT_SERVE_PATH + 96], md5[33] = "";
        snprintf(cpath, sizeof cpath, "%s/jobs/%s/out", s->work, jid);
        double lc = NAN, lch = NAN;
        char used[LT_SERVE_ID_LEN + 1];
        newest_dataset(s, hid ? hid : "", used); /* the newest upload of the held-out set */
        lt_status rc = lt_dataset_path(s, used, hpath, sizeof hpath);
        if (!rc) rc = holdout_loss(s, rec, vi.adapter, hpath, &lc);
        if (!rc) rc = holdout_loss(s, rec, cpath, hpath, &lch);
        if (rc) {
            snprintf(err, sizeof err, "evaluation gate: %s", lt_errmsg());
        } else {
            lt_file_md5(hpath, md5, NULL);
            int wins = lch < lc;
            char rn[128];
            snprintf(rn, sizeof rn, "gate %s", name);
            int64_t g = record_run(st, "eval-gate", rn, hpath, md5, rrun, "deployment", name,
                                   "champion_version", itoa_(champion, b), "challenger_run",
                                   itoa_(trun, b2), "challenger_job", jid, "decision",
                                   wins ? "promote" : "reject", (const char *)NULL);
            if (g) {
                const char *keys[2] = {"champion_val_loss", "challenger_val_loss"};
                int64_t steps[2] = {0, 0};
                double vals[2] = {lc, lch};
                lt_store_log_metrics(st, g, 2, keys, steps, vals);
                lt_store_run_end(st, g, LT_TRACK_FINISHED);
            }
            if (rrun > 0) {
                lt_store_log_metric(st, rrun, "champion_val_loss", 0, lc);
                lt_store_log_metric(st, rrun, "challenger_val_loss", 0, lch);
            }
            if (!wins) {
                outcome = 1;
                why = "rejected";
            } else {
                int ver = 0;
                lt_registry_desc rd = {.name = name, .base_name = vi.base[0] ? vi.base : NULL};
                json_t *out = NULL;
                int http;
                if (lt_registry_register(st, trun, &rd, &ver)) {
                    snprintf(err, sizeof err, "registration: %s", lt_errmsg());
                } else {
                    lt_store_close(st); /* deploying opens its own */
                    st = NULL;
                    if (deploy_version(s, name, ver, 0, NULL, "retrain", rrun, &out, &http)) {
                        snprintf(err, sizeof err, "promotion of version %d: %s", ver, lt_errmsg());
                    } else {
                        outcome = 0;
                        why = "promoted";
                    }
                    json_decref(out);
                    if (!open_store(s, &st) && rrun > 0)
                        lt_store_set_tag(st, rrun, "new_version", itoa_(ver, b));
                }
            }
        }
    }
    if (st && rrun > 0) {
        lt_store_set_tag(st, rrun, "outcome", why ? why : "failed");
        if (*err) {
            char *clean = lt_serve_scrub(s, err);
            lt_store_set_tag(st, rrun, "error", clean ? clean : err);
            lt_free(clean);
        }
        lt_store_run_end(st, rrun, outcome == 2 ? LT_TRACK_FAILED : LT_TRACK_FINISHED);
    }
    lt_store_close(st);
    retrain_finish(s, name, outcome);
}

/* ---- output quality on the held-out set, on a schedule ----------------------------------- */
/* The held-out loss of version `version` of `name` (adapter on the base, the options of the job
 * that trained it) over the newest upload named like dataset hid; ds_used gets that upload. */
static lt_status version_loss(lt_server *s, const char *name, int version, const char *hid,
                              double *loss, char ds_used[LT_SERVE_ID_LEN + 1]) {
    lt_store *st = NULL;
    version_info vi;
    lt_status rc = open_store(s, &st);
    if (!rc) rc = get_version(st, name, version, &vi);
    lt_store_close(st);
    if (rc) return rc;
    if (!lt_serve_id_valid(vi.run_name, "job_"))
        return lt_error(LT_ERR_ARG, "%s version %d was not trained by a job of this server", name,
                        version);
    char p[LT_SERVE_PATH + 96], hpath[LT_SERVE_PATH + 96];
    snprintf(p, sizeof p, "%s/jobs/%s/job.json", s->work, vi.run_name);
    json_t *job = json_load_file(p, 0, NULL);
    if (!job)
        return lt_error(LT_ERR_NOTFOUND, "%s: the job of %s version %d is gone", p, name, version);
    newest_dataset(s, hid, ds_used);
    rc = lt_dataset_path(s, ds_used, hpath, sizeof hpath);
    if (!rc) rc = holdout_loss(s, job, vi.adapter, hpath, loss);
    json_decref(job);
    return rc;
}

/* Every quality_every seconds (or when woken: a deployment changed, POST .../evaluate), scores
 * the stable and canary versions of every deployment with a held-out set: the mean token loss
 * over the newest upload named like the held-out dataset (new labelled data uploaded under that
 * name is what the deployed version is judged on). The loss goes to /metrics and, as metric
 * `holdout_loss` (step: the evaluation's number), to the version's deploy run. */
static void *quality_main(void *arg) {
    lt_server *s = arg;
    lt_deploy *d = s->deploy;
    double next = lt_serve_now() + (d->quality_every > 0 ? d->quality_every : 1e18);
    pthread_mutex_lock(&d->mu);
    while (1) {
        int woken = 0;
        for (int i = 0; i < d->n; i++)
            woken |= d->d[i].q_wake;
        if (!woken && lt_serve_now() < next && !stopping(s)) {
            double at = next < lt_serve_now() + 3600 ? next : lt_serve_now() + 3600;
            struct timespec ts = {(time_t)at, (long)((at - floor(at)) * 1e9)};
            pthread_cond_timedwait(&d->qcv, &d->mu, &ts);
            continue;
        }
        if (stopping(s)) break;
        int timed = lt_serve_now() >= next;
        if (timed) next = lt_serve_now() + d->quality_every;
        for (int i = 0; i < d->n && !stopping(s); i++) {
            deployment *x = &d->d[i];
            int wake = x->q_wake;
            x->q_wake = 0; /* also without a held-out set: else the wait above never waits */
            if (!x->holdout[0] || (!timed && !wake)) continue;
            char name[57], hid[LT_SERVE_ID_LEN + 1];
            snprintf(name, sizeof name, "%s", x->name);
            snprintf(hid, sizeof hid, "%s", x->holdout);
            int vs[2] = {x->stable, x->canary};
            int64_t runs[2] = {x->deploy_run[0], x->deploy_run[1]};
            uint64_t k = ++x->q_evals;
            pthread_mutex_unlock(&d->mu);
            double loss[2] = {NAN, NAN};
            char used[2][LT_SERVE_ID_LEN + 1] = {"", ""};
            for (int r = 0; r < 2; r++)
                if (vs[r] && version_loss(s, name, vs[r], hid, &loss[r], used[r])) loss[r] = NAN;
            lt_store *st = NULL;
            if (!open_store(s, &st))
                for (int r = 0; r < 2; r++)
                    if (runs[r] > 0 && loss[r] == loss[r])
                        lt_store_log_metric(st, runs[r], "holdout_loss", (int64_t)k, loss[r]);
            lt_store_close(st);
            pthread_mutex_lock(&d->mu);
            x = find_dep(d, name); /* the list may have grown; entries do not move */
            for (int r = 0; x && r < 2; r++)
                if ((r ? x->canary : x->stable) == vs[r] && vs[r]) {
                    x->q_version[r] = loss[r] == loss[r] ? vs[r] : 0;
                    x->q_loss[r] = loss[r];
                    snprintf(x->q_dataset[r], sizeof x->q_dataset[r], "%s", used[r]);
                }
            pthread_cond_broadcast(&d->qcv);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

enum MHD_Result lt_deploy_evaluate(lt_server *s, struct MHD_Connection *c, const char *name) {
    lt_deploy *d = s->deploy;
    pthread_mutex_lock(&d->mu);
    deployment *x = find_dep(d, name);
    int ok = x && x->holdout[0];
    if (ok) {
        x->q_wake = 1;
        pthread_cond_broadcast(&d->qcv);
    }
    uint64_t evals = x ? x->q_evals : 0;
    pthread_mutex_unlock(&d->mu);
    if (!x) return lt_reply_error(c, 404, "not_found", "no deployment '%.80s'", name);
    if (!ok)
        return lt_reply_error(c, 409, "conflict",
                              "deployment '%s' has no held-out set (deploy it with \"holdout\")",
                              name);
    return lt_reply_json(c, MHD_HTTP_ACCEPTED,
                         json_pack("{s:s,s:b,s:I}", "deployment", name, "queued", 1, "evaluations",
                                   (json_int_t)evals));
}

/* ---- restart ------------------------------------------------------------------------------ */
static int stopping(lt_server *s) {
    pthread_mutex_lock(&s->mu);
    int v = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Once the base model is loaded, every WORK/deployments/NAME.json is deployed again as it was
 * (stable version, canary and share, held-out set, rollback history; reason "restart"). One
 * that cannot be (its version gone from the registry, its adapter unreadable) is left out;
 * its file stays, with "restore_error" added. */
static void *restore_main(void *arg) {
    lt_server *s = arg;
    int st;
    while ((st = lt_infer_state(s, NULL, 0)) == 0 && !stopping(s)) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (st != 1 || stopping(s)) return NULL;
    char dir[LT_SERVE_PATH];
    snprintf(dir, sizeof dir, "%s/deployments", s->work);
    DIR *dd = opendir(dir);
    struct dirent *e;
    while (dd && (e = readdir(dd)) && !stopping(s)) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json")) continue;
        char p[LT_SERVE_PATH + 300], name[64];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(name, sizeof name, "%.*s", (int)(l - 5), e->d_name);
        json_t *o = json_load_file(p, 0, NULL);
        int stable =
            (int)json_integer_value(json_object_get(json_object_get(o, "stable"), "version"));
        int canary =
            (int)json_integer_value(json_object_get(json_object_get(o, "canary"), "version"));
        double share = json_number_value(json_object_get(o, "canary_share"));
        const char *ho = json_string_value(json_object_get(o, "holdout"));
        json_t *out = NULL;
        int http;
        lt_status rc = name_ok(name) && stable > 0
                           ? deploy_version(s, name, stable, 0, ho, "restart", 0, &out, &http)
                           : lt_error(LT_ERR_FORMAT, "%s: no stable version", p);
        json_decref(out);
        out = NULL;
        if (!rc && canary > 0 && share > 0)
            rc = deploy_version(s, name, canary, share, NULL, "restart", 0, &out, &http);
        json_decref(out);
        if (rc) {
            char *msg = lt_serve_scrub(s, lt_errmsg());
            json_object_set_new(o, "restore_error", json_string(msg ? msg : "error"));
            lt_free(msg);
            if (json_is_object(o)) lt_serve_write_json(p, o);
        } else {
            pthread_mutex_lock(&s->deploy->mu);
            deployment *x = find_dep(s->deploy, name);
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(o, "previous"), i, v) {
                if (x && x->n_prev < MAX_PREV) x->prev[x->n_prev++] = (int)json_integer_value(v);
            }
            if (x) persist_dep(s, x);
            pthread_mutex_unlock(&s->deploy->mu);
        }
        json_decref(o);
    }
    if (dd) closedir(dd);
    return NULL;
}

void lt_deploy_metrics_write(lt_server *s, FILE *f) {
    lt_deploy *d = s->deploy;
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    fprintf(f, "# HELP loratune_deployment_version Registry version served for a deployment, "
               "by role (stable, canary).\n# TYPE loratune_deployment_version gauge\n");
    for (int i = 0; i < d->n; i++) {
        fprintf(f, "loratune_deployment_version{deployment=\"%s\",role=\"stable\"} %d\n",
                d->d[i].name, d->d[i].stable);
        if (d->d[i].canary)
            fprintf(f, "loratune_deployment_version{deployment=\"%s\",role=\"canary\"} %d\n",
                    d->d[i].name, d->d[i].canary);
    }
    fprintf(f, "# HELP loratune_deployment_canary_ratio Share of a deployment's requests sent "
               "to its canary.\n# TYPE loratune_deployment_canary_ratio gauge\n");
    for (int i = 0; i < d->n; i++)
        fprintf(f, "loratune_deployment_canary_ratio{deployment=\"%s\"} %g\n", d->d[i].name,
                d->d[i].canary ? d->d[i].share : 0.0);
    fprintf(f, "# HELP loratune_deployment_retraining 1 while a retraining of the deployment "
               "runs.\n# TYPE loratune_deployment_retraining gauge\n");
    for (int i = 0; i < d->n; i++)
        fprintf(f, "loratune_deployment_retraining{deployment=\"%s\"} %d\n", d->d[i].name,
                d->d[i].retraining);
    fprintf(f, "# HELP loratune_deployment_holdout_loss Mean token loss (nats) of a deployed "
               "version on the newest upload of its held-out set, scored on a schedule.\n"
               "# TYPE loratune_deployment_holdout_loss gauge\n");
    for (int i = 0; i < d->n; i++)
        for (int r = 0; r < 2; r++) {
            const deployment *x = &d->d[i];
            int v = r ? x->canary : x->stable;
            if (v && x->q_version[r] == v)
                fprintf(f,
                        "loratune_deployment_holdout_loss{deployment=\"%s\",model=\"%s.v%d\","
                        "role=\"%s\"} %.9g\n",
                        x->name, x->name, v, r ? "canary" : "stable", x->q_loss[r]);
        }
    fprintf(f, "# HELP loratune_deployment_evaluations_total Held-out evaluations of a "
               "deployment.\n# TYPE loratune_deployment_evaluations_total counter\n");
    for (int i = 0; i < d->n; i++)
        fprintf(f, "loratune_deployment_evaluations_total{deployment=\"%s\"} %llu\n", d->d[i].name,
                (unsigned long long)d->d[i].q_evals);
    fprintf(f, "# HELP loratune_retrains_total Retrainings ended, by outcome (promoted, "
               "rejected by the evaluation gate, failed).\n"
               "# TYPE loratune_retrains_total counter\n");
    for (int i = 0; i < d->n; i++)
        for (int k = 0; k < 3; k++)
            fprintf(f, "loratune_retrains_total{deployment=\"%s\",outcome=\"%s\"} %llu\n",
                    d->d[i].name, k_outcome[k], (unsigned long long)d->d[i].outcomes[k]);
    pthread_mutex_unlock(&d->mu);
}
