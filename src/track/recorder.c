/* recorder.c - a training run's events into the tracking store and the MLflow mirror, and
 * its data version (see recorder.h). Depends only on the event JSON, not on the run module. */
#define _GNU_SOURCE
#include "loratune/recorder.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "loratune/dvc.h"
#include "loratune/mlflow.h"

struct lt_recorder {
    lt_store *store;
    lt_mlflow *mlflow;
    int64_t run_id;
    char data_md5[LT_DVC_MD5_MAX];
    double flush_s;
    int problems;
    char first_problem[512];
};

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static void note(lt_recorder *r, lt_status st) {
    if (st == LT_OK) return;
    if (!r->problems++)
        snprintf(r->first_problem, sizeof r->first_problem, "tracking store: %s", lt_errmsg());
}

/* Versions path: already by DVC (a matching .dvc file and cached object), else into the
 * store's cache. */
static lt_status version_data(lt_recorder *r, const char *store_dir, const char *path,
                              const char **by) {
    lt_dvc_hash h;
    lt_status st = lt_dvc_hash_path(path, &h);
    if (st != LT_OK) return st;
    snprintf(r->data_md5, sizeof r->data_md5, "%s", h.md5);
    char clean[PATH_MAX];
    snprintf(clean, sizeof clean, "%s", path);
    size_t l = strlen(clean);
    while (l > 1 && clean[l - 1] == '/')
        clean[--l] = 0;
    char dvcf[PATH_MAX + 8], md5[LT_DVC_MD5_MAX], root[PATH_MAX], cache[PATH_MAX + 16];
    snprintf(dvcf, sizeof dvcf, "%s.dvc", clean);
    if (lt_dvc_read_file(dvcf, md5) == LT_OK && !strcmp(md5, h.md5) &&
        lt_dvc_find_root(clean, root, sizeof root) == LT_OK) {
        snprintf(cache, sizeof cache, "%s/.dvc/cache", root);
        if (lt_dvc_cache_has(cache, h.md5)) {
            *by = "dvc";
            return LT_OK;
        }
    }
    snprintf(cache, sizeof cache, "%s/cache", store_dir);
    *by = "loratune";
    if (lt_dvc_cache_has(cache, h.md5)) return LT_OK;
    lt_dvc_hash h2;
    return lt_dvc_add(clean, cache, 0, NULL, &h2);
}

lt_status lt_recorder_start(const lt_recorder_opts *o, lt_recorder **out) {
    *out = NULL;
    lt_recorder *r = lt_calloc(1, sizeof *r);
    if (!r) return lt_error(LT_ERR_NOMEM, "recorder: out of memory");
    const char *dir = o->store_dir && *o->store_dir ? o->store_dir : LT_STORE_DEFAULT_DIR;
    lt_status st = lt_store_open(dir, &r->store);
    if (st != LT_OK) {
        free(r);
        return st;
    }
    const char *by = NULL;
    if (o->data_path && *o->data_path) {
        st = version_data(r, dir, o->data_path, &by);
        if (st != LT_OK) { /* an unreadable data path fails the run later anyway */
            lt_store_close(r->store);
            free(r);
            return lt_error_wrap(st, "versioning the training data");
        }
    }
    char abs[PATH_MAX];
    const char *dp = o->data_path && realpath(o->data_path, abs) ? abs : o->data_path;
    lt_track_run_desc d = {.experiment = o->experiment,
                           .name = o->name,
                           .kind = o->kind,
                           .command = o->command,
                           .config_json = o->config_json,
                           .has_seed = o->has_seed,
                           .seed = o->seed,
                           .data_path = dp,
                           .data_md5 = r->data_md5[0] ? r->data_md5 : NULL,
                           .record_hardware = 1};
    if ((st = lt_store_run_begin(r->store, &d, &r->run_id)) != LT_OK) {
        lt_store_close(r->store);
        free(r);
        return st;
    }
    if (o->config_json) note(r, lt_store_log_params_json(r->store, r->run_id, o->config_json));
    if (by) note(r, lt_store_set_tag(r->store, r->run_id, "data.versioned_by", by));
    r->flush_s = o->mlflow_flush_s > 0 ? o->mlflow_flush_s : 10.0;
    if (o->mlflow_uri && *o->mlflow_uri) {
        lt_mlflow_server srv = {o->mlflow_uri, o->mlflow_token, o->mlflow_username,
                                o->mlflow_password};
        if ((st = lt_mlflow_open(&srv, o->experiment, o->name, now_s(), &r->mlflow)) != LT_OK) {
            note(r, st);
        } else {
            json_t *cfg = o->config_json ? json_loads(o->config_json, 0, NULL) : NULL;
            const char *k;
            json_t *v;
            json_object_foreach(cfg, k, v) {
                char *t = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                lt_mlflow_log_param(r->mlflow, k, t ? t : json_string_value(v));
                free(t);
            }
            json_decref(cfg);
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)r->run_id);
            lt_mlflow_set_tag(r->mlflow, "loratune.run_id", idbuf);
            if (r->data_md5[0]) lt_mlflow_set_tag(r->mlflow, "loratune.data_md5", r->data_md5);
            if (by) lt_mlflow_set_tag(r->mlflow, "data.versioned_by", by);
        }
    }
    *out = r;
    return LT_OK;
}

int64_t lt_recorder_run_id(const lt_recorder *r) {
    return r ? r->run_id : 0;
}
const char *lt_recorder_data_md5(const lt_recorder *r) {
    return r ? r->data_md5 : "";
}
lt_store *lt_recorder_store(lt_recorder *r) {
    return r ? r->store : NULL;
}

static void metric(lt_recorder *r, const json_t *ev, const char *field, const char *key,
                   int64_t step, double t) {
    json_t *v = json_object_get(ev, field);
    if (!json_is_number(v)) return;
    double x = json_number_value(v);
    note(r, lt_store_log_metric(r->store, r->run_id, key, step, x));
    lt_mlflow_log_metric(r->mlflow, key, step, x, t);
}

static void tag(lt_recorder *r, const char *k, const char *v) {
    if (!v) return;
    note(r, lt_store_set_tag(r->store, r->run_id, k, v));
    lt_mlflow_set_tag(r->mlflow, k, v);
}

static void tag_int(lt_recorder *r, const json_t *ev, const char *field, const char *k) {
    json_t *v = json_object_get(ev, field);
    if (!json_is_integer(v)) return;
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)json_integer_value(v));
    tag(r, k, b);
}

void lt_recorder_sink(void *ctx, const struct json_t *event) {
    lt_recorder *r = ctx;
    const json_t *ev = (const json_t *)event;
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (!r || !kind) return;
    int64_t step = (int64_t)json_integer_value(json_object_get(ev, "step"));
    double t = now_s();
    if (!strcmp(kind, "start")) {
        tag_int(r, ev, "steps", "steps");
        tag_int(r, ev, "train_examples", "train_examples");
        tag_int(r, ev, "valid_examples", "valid_examples");
        tag_int(r, ev, "trainable_params", "trainable_params");
        json_t *rf = json_object_get(ev, "resumed_from");
        if (json_is_integer(rf) && json_integer_value(rf) >= 0)
            tag_int(r, ev, "resumed_from", "resumed_from");
        tag(r, "out", json_string_value(json_object_get(ev, "out")));
    } else if (!strcmp(kind, "step")) { /* one transaction per step */
        static const char *const fields[][2] = {{"loss", "train_loss"},
                                                {"lr", "lr"},
                                                {"grad_norm", "grad_norm"},
                                                {"tokens_per_sec", "tokens_per_sec"},
                                                {"peak_rss_bytes", "peak_rss_bytes"}};
        const char *keys[5];
        int64_t steps[5];
        double vals[5];
        int n = 0;
        for (int i = 0; i < 5; i++) {
            json_t *v = json_object_get(ev, fields[i][0]);
            if (!json_is_number(v)) continue;
            keys[n] = fields[i][1];
            steps[n] = step;
            vals[n] = json_number_value(v);
            lt_mlflow_log_metric(r->mlflow, keys[n], step, vals[n], t);
            n++;
        }
        if (n) note(r, lt_store_log_metrics(r->store, r->run_id, n, keys, steps, vals));
    } else if (!strcmp(kind, "eval")) {
        metric(r, ev, "val_loss", "val_loss", step, t);
        metric(r, ev, "val_ppl", "val_ppl", step, t);
    } else if (!strcmp(kind, "saved")) {
        const char *what = json_string_value(json_object_get(ev, "what"));
        const char *path = json_string_value(json_object_get(ev, "path"));
        if (path) {
            const char *k = what && !strcmp(what, "hf") ? "merged" : "adapter";
            char kk[64];
            /* the PEFT folder is "the" adapter; the other formats keep their name */
            if (what && strcmp(what, "peft") && strcmp(what, "hf"))
                snprintf(kk, sizeof kk, "adapter-%s", what);
            else
                snprintf(kk, sizeof kk, "%s", k);
            note(r, lt_store_log_artifact(r->store, r->run_id, path, kk));
            if (!strcmp(kk, "adapter") || !strcmp(kk, "merged")) {
                char abs[PATH_MAX], key[80];
                snprintf(key, sizeof key, "%s_path", kk);
                tag(r, key, realpath(path, abs) ? abs : path);
            }
            char tk[80];
            snprintf(tk, sizeof tk, "artifact.%s", kk);
            lt_mlflow_set_tag(r->mlflow, tk, path);
        }
    } else if (!strcmp(kind, "done")) {
        tag(r, "outcome", json_string_value(json_object_get(ev, "outcome")));
        metric(r, ev, "final_val_loss", "final_val_loss", step, t);
        tag_int(r, ev, "step", "last_step");
    } else if (!strcmp(kind, "skip")) {
        tag(r, "skipped_steps", "yes");
    } else if (!strcmp(kind, "early_stop")) {
        tag_int(r, ev, "step", "early_stop_step");
    }
}

int lt_recorder_finish(lt_recorder *r, lt_track_status status, char *warn, size_t n) {
    if (!r) return 0;
    if (warn && n) warn[0] = 0;
    int problems = 0;
    note(r, lt_store_run_end(r->store, r->run_id, status));
    if (r->mlflow) {
        lt_mlflow_end(r->mlflow, status, now_s());
        char msg[512] = "", mid[64];
        int left = lt_mlflow_close(r->mlflow, r->flush_s, mid, msg, sizeof msg);
        r->mlflow = NULL;
        if (mid[0]) note(r, lt_store_set_tag(r->store, r->run_id, "mlflow.run_id", mid));
        if (left > 0) {
            problems++;
            if (warn && n)
                snprintf(warn, n,
                         "MLflow mirror incomplete: %s; the run is complete in %s: send it with "
                         "`loratune runs push %lld`",
                         msg, lt_store_db_path(r->store), (long long)r->run_id);
        }
    }
    problems += r->problems;
    if (r->problems && warn && n && !warn[0]) snprintf(warn, n, "%s", r->first_problem);
    lt_store_close(r->store);
    free(r);
    return problems;
}
