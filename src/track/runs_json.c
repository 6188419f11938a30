/* runs_json.c - reading runs back out of the store as JSON (what `loratune runs` prints and
 * what the MLflow push and reproduce read). Metric summaries (last / min / max with their steps)
 * are computed by SQL over the step series. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store_db.h"

static json_t *col_json(sqlite3_stmt *st, int i) {
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT:
        return json_string((const char *)sqlite3_column_text(st, i));
    default:
        return json_null();
    }
}

/* Parses a stored JSON column; null when absent or unparsable. */
static json_t *col_parsed(sqlite3_stmt *st, int i) {
    const char *t = (const char *)sqlite3_column_text(st, i);
    if (!t) return json_null();
    json_t *j = json_loads(t, 0, NULL);
    return j ? j : json_string(t);
}

#define RUN_COLS                                                                                   \
    "r.id, r.uuid, e.name, r.name, r.kind, r.status, r.start_time, r.end_time, r.command,"         \
    " r.cwd, r.config, r.git_commit, r.seed, r.data_path, r.data_md5, r.pid, r.host,"              \
    " r.hardware"

static json_t *run_row(sqlite3_stmt *st, int full) {
    json_t *o = json_object();
    json_object_set_new(o, "id", col_json(st, 0));
    json_object_set_new(o, "uuid", col_json(st, 1));
    json_object_set_new(o, "experiment", col_json(st, 2));
    json_object_set_new(o, "name", col_json(st, 3));
    json_object_set_new(o, "kind", col_json(st, 4));
    json_object_set_new(o, "status", col_json(st, 5));
    json_object_set_new(o, "start_time", col_json(st, 6));
    json_object_set_new(o, "end_time", col_json(st, 7));
    if (sqlite3_column_type(st, 7) != SQLITE_NULL)
        json_object_set_new(o, "duration_s",
                            json_real(sqlite3_column_double(st, 7) - sqlite3_column_double(st, 6)));
    else
        json_object_set_new(o, "duration_s", json_null());
    json_object_set_new(o, "command", col_json(st, 8));
    json_object_set_new(o, "cwd", col_json(st, 9));
    if (full) json_object_set_new(o, "config", col_parsed(st, 10));
    json_object_set_new(o, "git_commit", col_json(st, 11));
    json_object_set_new(o, "seed", col_json(st, 12));
    json_t *d = json_object();
    json_object_set_new(d, "path", col_json(st, 13));
    json_object_set_new(d, "md5", col_json(st, 14));
    json_object_set_new(o, "data", d);
    json_object_set_new(o, "pid", col_json(st, 15));
    json_object_set_new(o, "host", col_json(st, 16));
    if (full) json_object_set_new(o, "hardware", col_parsed(st, 17));
    return o;
}

static lt_status add_kv(lt_store *s, json_t *o, const char *name, const char *sql, int64_t id) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s, sql, &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, id);
    json_t *m = json_object();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(m, (const char *)sqlite3_column_text(st, 0), col_json(st, 1));
    sqlite3_finalize(st);
    json_object_set_new(o, name, m);
    return r == SQLITE_DONE ? LT_OK : lt_store_sqlerr(s, LT_ERR_IO, name);
}

/* metrics {key: {last, last_step, min, min_step, max, max_step, count}} */
static lt_status add_metric_summary(lt_store *s, json_t *o, int64_t id) {
    sqlite3_stmt *st;
    /* SQLite picks the bare columns of a min()/max() aggregate from the row holding it */
    lt_status rc =
        lt_store_prepare(s,
                         "SELECT key, count(*),"
                         " (SELECT value FROM metrics m2 WHERE m2.run_id=?1 AND m2.key=m.key ORDER "
                         "BY step DESC LIMIT 1),"
                         " max(step),"
                         " (SELECT value FROM metrics m2 WHERE m2.run_id=?1 AND m2.key=m.key AND "
                         "value IS NOT NULL ORDER BY value ASC, step ASC LIMIT 1),"
                         " (SELECT step FROM metrics m2 WHERE m2.run_id=?1 AND m2.key=m.key AND "
                         "value IS NOT NULL ORDER BY value ASC, step ASC LIMIT 1),"
                         " (SELECT value FROM metrics m2 WHERE m2.run_id=?1 AND m2.key=m.key AND "
                         "value IS NOT NULL ORDER BY value DESC, step ASC LIMIT 1),"
                         " (SELECT step FROM metrics m2 WHERE m2.run_id=?1 AND m2.key=m.key AND "
                         "value IS NOT NULL ORDER BY value DESC, step ASC LIMIT 1)"
                         " FROM metrics m WHERE run_id=?1 GROUP BY key ORDER BY key",
                         &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, id);
    json_t *m = json_object();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *k = json_object();
        json_object_set_new(k, "last", col_json(st, 2));
        json_object_set_new(k, "last_step", col_json(st, 3));
        json_object_set_new(k, "min", col_json(st, 4));
        json_object_set_new(k, "min_step", col_json(st, 5));
        json_object_set_new(k, "max", col_json(st, 6));
        json_object_set_new(k, "max_step", col_json(st, 7));
        json_object_set_new(k, "count", col_json(st, 1));
        json_object_set_new(m, (const char *)sqlite3_column_text(st, 0), k);
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "metrics", m);
    return r == SQLITE_DONE ? LT_OK : lt_store_sqlerr(s, LT_ERR_IO, "metrics");
}

static lt_status add_history(lt_store *s, json_t *o, int64_t id) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(
        s, "SELECT key, step, value, time FROM metrics WHERE run_id=?1 ORDER BY key, step", &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, id);
    json_t *h = json_object();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        json_t *a = json_object_get(h, k);
        if (!a) {
            a = json_array();
            json_object_set_new(h, k, a);
        }
        json_array_append_new(a, json_pack("[Iof]", (json_int_t)sqlite3_column_int64(st, 1),
                                           col_json(st, 2), sqlite3_column_double(st, 3)));
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "metric_history", h);
    return r == SQLITE_DONE ? LT_OK : lt_store_sqlerr(s, LT_ERR_IO, "metric history");
}

static lt_status add_artifacts(lt_store *s, json_t *o, int64_t id) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(
        s, "SELECT path, kind, sha256, size FROM artifacts WHERE run_id=?1 ORDER BY path", &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, id);
    json_t *a = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(a, json_pack("{s:o,s:o,s:o,s:o}", "path", col_json(st, 0), "kind",
                                           col_json(st, 1), "sha256", col_json(st, 2), "size",
                                           col_json(st, 3)));
    sqlite3_finalize(st);
    json_object_set_new(o, "artifacts", a);
    return r == SQLITE_DONE ? LT_OK : lt_store_sqlerr(s, LT_ERR_IO, "artifacts");
}

static lt_status dump(json_t *o, char **json) {
    *json = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(o);
    return *json ? LT_OK : lt_error(LT_ERR_NOMEM, "run JSON: out of memory");
}

lt_status lt_store_run_to_json(lt_store *s, int64_t run_id, int with_history, char **json) {
    *json = NULL;
    lt_store_reap_dead(s);
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(
        s,
        "SELECT " RUN_COLS " FROM runs r JOIN experiments e ON e.id=r.experiment_id WHERE r.id=?1",
        &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (r == SQLITE_DONE)
            return lt_error(LT_ERR_NOTFOUND, "%s: no run #%lld", s->path, (long long)run_id);
        return lt_store_sqlerr(s, LT_ERR_IO, "reading a run");
    }
    json_t *o = run_row(st, 1);
    sqlite3_finalize(st);
    if ((rc = add_kv(s, o, "params", "SELECT key, value FROM params WHERE run_id=?1 ORDER BY key",
                     run_id)) != LT_OK ||
        (rc = add_kv(s, o, "tags", "SELECT key, value FROM tags WHERE run_id=?1 ORDER BY key",
                     run_id)) != LT_OK ||
        (rc = add_metric_summary(s, o, run_id)) != LT_OK ||
        (rc = add_artifacts(s, o, run_id)) != LT_OK ||
        (with_history && (rc = add_history(s, o, run_id)) != LT_OK)) {
        json_decref(o);
        return rc;
    }
    return dump(o, json);
}

lt_status lt_store_runs_json(lt_store *s, const char *experiment, int limit, char **json) {
    *json = NULL;
    lt_store_reap_dead(s);
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s,
                                    "SELECT " RUN_COLS
                                    " FROM runs r JOIN experiments e ON e.id=r.experiment_id"
                                    " WHERE ?1 IS NULL OR e.name=?1 ORDER BY r.id DESC LIMIT ?2",
                                    &st);
    if (rc != LT_OK) return rc;
    if (experiment) sqlite3_bind_text(st, 1, experiment, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
    json_t *a = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(a, run_row(st, 0));
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        json_decref(a);
        return lt_store_sqlerr(s, LT_ERR_IO, "listing runs");
    }
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        if ((rc = add_metric_summary(s, o, json_integer_value(json_object_get(o, "id")))) !=
            LT_OK) {
            json_decref(a);
            return rc;
        }
    }
    return dump(a, json);
}
