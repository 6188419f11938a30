/* runs.c - the tracking store (WORK/store, track.h) seen through the API: the runs the
 * server's jobs recorded, one run with its parameters and summaries, and its metric series.
 * A store handle serves one thread, so each request opens its own (SQLite WAL: readers do not
 * wait for the worker's writes). */
#include <stdio.h>
#include <string.h>

#include "loratune/track.h"
#include "serve_internal.h"

static lt_store *open_store(lt_server *s) {
    char dir[LT_SERVE_PATH + 16];
    snprintf(dir, sizeof dir, "%s/store", s->work);
    lt_store *st = NULL;
    if (lt_store_open(dir, &st)) return NULL;
    return st;
}

static enum MHD_Result reply_text_json(lt_server *s, struct MHD_Connection *c, char *text,
                                       const char *wrap) {
    json_t *raw = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *v = raw ? lt_serve_scrub_json(s, raw) : NULL;
    json_decref(raw);
    if (!v) return lt_reply_error(c, 500, "internal", "the tracking store gave no JSON");
    return lt_reply_json(c, MHD_HTTP_OK, wrap ? json_pack("{s:o}", wrap, v) : v);
}

enum MHD_Result lt_runs_list(lt_server *s, struct MHD_Connection *c) {
    lt_store *st = open_store(s);
    if (!st) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    char *text = NULL;
    lt_status r = lt_store_runs_json(st, "serve", 0, &text);
    lt_store_close(st);
    if (r == LT_ERR_NOTFOUND) /* no job has run yet: no experiment "serve" */
        return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:[]}", "runs"));
    if (r) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    return reply_text_json(s, c, text, "runs");
}

enum MHD_Result lt_run_get(lt_server *s, struct MHD_Connection *c, const char *id,
                           int metrics_only) {
    /* numbers only: the store's other references (names, "last", uuid prefixes) are for
     * people at a terminal */
    char *end;
    long long v = strtoll(id, &end, 10);
    if (!*id || *end || v <= 0 || strlen(id) > 18)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no run '%s'", id);
    lt_store *st = open_store(s);
    if (!st) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    char *text = NULL;
    lt_status r = lt_store_run_to_json(st, (int64_t)v, metrics_only, &text);
    lt_store_close(st);
    if (r == LT_ERR_NOTFOUND)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no run '%s'", id);
    if (r) return lt_reply_error(c, 500, "store", "tracking store: %s", lt_errmsg());
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!o) return lt_reply_error(c, 500, "internal", "the tracking store gave no JSON");
    const char *exp = json_string_value(json_object_get(o, "experiment"));
    if (!exp || strcmp(exp, "serve")) { /* only the runs of this server's jobs */
        json_decref(o);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no run '%s'", id);
    }
    json_t *clean = lt_serve_scrub_json(s, o);
    json_decref(o);
    o = clean;
    if (!o) return lt_reply_error(c, 500, "internal", "out of memory");
    if (metrics_only) {
        json_t *m = json_pack("{s:I,s:O?,s:O?}", "run_id", (json_int_t)v, "metrics",
                              json_object_get(o, "metrics"), "history",
                              json_object_get(o, "metric_history"));
        json_decref(o);
        return lt_reply_json(c, MHD_HTTP_OK, m);
    }
    return lt_reply_json(c, MHD_HTTP_OK, o);
}
