/* registry.c - the model registry in the tracking store: named models with numbered versions,
 * each pointing at the run that produced it, with a stage (none / staging / production /
 * archived), the base model identity (name + sha256), adapter / merged paths, the dataset
 * version and the hardware copied from the run (so they survive later edits of the run). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "store_db.h"

static const char *const STAGES[] = {"none", "staging", "production", "archived"};

const char *lt_stage_name(lt_stage s) {
    return (unsigned)s < 4 ? STAGES[s] : "?";
}

lt_status lt_stage_parse(const char *s, lt_stage *out) {
    for (int i = 0; i < 4; i++)
        if (s && !strcasecmp(s, STAGES[i])) {
            *out = (lt_stage)i;
            return LT_OK;
        }
    return lt_error(LT_ERR_ARG, "stage '%s': expected none, staging, production or archived",
                    s ? s : "");
}

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

/* First value of a one-row query with an int64 parameter; NULL when no row / NULL, and also
 * (with *oom set) when out of memory. */
static char *query_text(lt_store *s, const char *sql, int64_t id, int *oom) {
    sqlite3_stmt *st;
    if (lt_store_prepare(s, sql, &st) != LT_OK) return NULL;
    sqlite3_bind_int64(st, 1, id);
    char *r = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
        !(r = lt_strdup((const char *)sqlite3_column_text(st, 0))))
        *oom = 1;
    sqlite3_finalize(st);
    return r;
}

lt_status lt_registry_register(lt_store *s, int64_t run_id, const lt_registry_desc *d,
                               int *version) {
    if (!d->name || !*d->name) return lt_error(LT_ERR_ARG, "models register: --name is empty");
    /* defaults from the run: base model from its "model" param, paths from its artifacts */
    int oom = 0;
    char *base =
        d->base_name
            ? lt_strdup(d->base_name)
            : query_text(s, "SELECT value FROM params WHERE run_id=?1 AND key='model'", run_id,
                         &oom);
    /* the folder a run saved (tags adapter_path / merged_path, set by the recorder), else
     * the first artifact file of that kind */
    char *adapter =
        d->adapter_path
            ? lt_strdup(d->adapter_path)
            : query_text(
                  s,
                  "SELECT coalesce((SELECT value FROM tags WHERE run_id=?1 AND key='adapter_path'),"
                  " (SELECT path FROM artifacts WHERE run_id=?1 AND kind='adapter' ORDER BY path "
                  "LIMIT 1))",
                  run_id, &oom);
    char *merged =
        d->merged_path
            ? lt_strdup(d->merged_path)
            : query_text(
                  s,
                  "SELECT coalesce((SELECT value FROM tags WHERE run_id=?1 AND key='merged_path'),"
                  " (SELECT path FROM artifacts WHERE run_id=?1 AND kind='merged' ORDER BY path "
                  "LIMIT 1))",
                  run_id, &oom);
    char sha[65] = "";
    lt_status rc = LT_OK;
    if (oom || (d->base_name && !base) || (d->adapter_path && !adapter) ||
        (d->merged_path && !merged))
        rc = lt_error(LT_ERR_NOMEM, "models register: out of memory");
    else if (d->base_sha256)
        snprintf(sha, sizeof sha, "%s", d->base_sha256);
    else if (base && lt_path_exists(base) && !lt_path_is_dir(base))
        rc = lt_file_sha256(base, sha, NULL);
    else if (base && lt_path_is_dir(base)) { /* HF folder: hash of its config + weights names */
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors", base);
        if (lt_path_exists(p)) rc = lt_file_sha256(p, sha, NULL);
    }
    sqlite3_stmt *st = NULL;
    if (rc != LT_OK) goto out;
    if ((rc = lt_store_begin(s)) != LT_OK) goto out;
    if ((rc = lt_store_prepare(s,
                               "INSERT INTO models(name, description, created) VALUES(?1,?2,?3)"
                               " ON CONFLICT(name) DO UPDATE SET description="
                               " coalesce(excluded.description, description)",
                               &st)) != LT_OK)
        goto fail;
    sqlite3_bind_text(st, 1, d->name, -1, SQLITE_TRANSIENT);
    if (d->description) sqlite3_bind_text(st, 2, d->description, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, now_s());
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "registering a model");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = lt_store_prepare(
             s,
             "INSERT INTO model_versions(model_id, version, run_id, stage, base_name, base_sha256,"
             " adapter_path, merged_path, data_path, data_md5, hardware, created, stage_changed)"
             " SELECT m.id, (SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE"
             " model_id=m.id), r.id, 'none', ?3, ?4, ?5, ?6, r.data_path, r.data_md5, r.hardware,"
             " ?7, ?7 FROM models m, runs r WHERE m.name=?1 AND r.id=?2"
             " RETURNING version",
             &st)) != LT_OK)
        goto fail;
    sqlite3_bind_text(st, 1, d->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, run_id);
    if (base) sqlite3_bind_text(st, 3, base, -1, SQLITE_TRANSIENT);
    if (sha[0]) sqlite3_bind_text(st, 4, sha, -1, SQLITE_TRANSIENT);
    if (adapter) sqlite3_bind_text(st, 5, adapter, -1, SQLITE_TRANSIENT);
    if (merged) sqlite3_bind_text(st, 6, merged, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 7, now_s());
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rc = lt_error(LT_ERR_NOTFOUND, "%s: no run #%lld", s->path, (long long)run_id);
        goto fail;
    }
    if (r != SQLITE_ROW) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "registering a model version");
        goto fail;
    }
    if (version) *version = sqlite3_column_int(st, 0);
    sqlite3_step(st);
    sqlite3_finalize(st);
    rc = lt_store_commit(s);
    goto out;
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
out:
    free(base);
    free(adapter);
    free(merged);
    return rc;
}

lt_status lt_registry_promote(lt_store *s, const char *name, int version, lt_stage stage,
                              int archive_others) {
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = lt_store_prepare(
             s,
             "UPDATE model_versions SET stage=?3, stage_changed=?4 WHERE version=?2 AND"
             " model_id=(SELECT id FROM models WHERE name=?1)",
             &st)) != LT_OK)
        goto fail;
    double t = now_s();
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, version);
    sqlite3_bind_text(st, 3, lt_stage_name(stage), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, t);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "promoting a model version");
        goto fail;
    }
    if (sqlite3_changes(s->db) != 1) {
        rc = lt_error(LT_ERR_NOTFOUND, "%s: no model '%s' version %d (see `loratune models list`)",
                      s->path, name, version);
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (archive_others && (stage == LT_STAGE_STAGING || stage == LT_STAGE_PRODUCTION)) {
        if ((rc = lt_store_prepare(
                 s,
                 "UPDATE model_versions SET stage='archived', stage_changed=?4 WHERE version<>?2"
                 " AND stage=?3 AND model_id=(SELECT id FROM models WHERE name=?1)",
                 &st)) != LT_OK)
            goto fail;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, version);
        sqlite3_bind_text(st, 3, lt_stage_name(stage), -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 4, t);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = lt_store_sqlerr(s, LT_ERR_IO, "archiving model versions");
            goto fail;
        }
        sqlite3_finalize(st);
    }
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

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

static lt_status dump(json_t *o, char **json) {
    *json = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(o);
    return *json ? LT_OK : lt_error(LT_ERR_NOMEM, "model JSON: out of memory");
}

lt_status lt_registry_list_json(lt_store *s, char **json) {
    *json = NULL;
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(
        s,
        "SELECT m.id, m.name, m.description, m.created, count(v.version), max(v.version)"
        " FROM models m LEFT JOIN model_versions v ON v.model_id=m.id GROUP BY m.id ORDER BY "
        "m.name",
        &st);
    if (rc != LT_OK) return rc;
    json_t *a = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_pack("{s:o,s:o,s:o,s:o,s:o}", "name", col_json(st, 1), "description",
                              col_json(st, 2), "created", col_json(st, 3), "versions",
                              col_json(st, 4), "latest_version", col_json(st, 5));
        json_t *stages = json_object();
        sqlite3_stmt *s2;
        if (lt_store_prepare(s,
                             "SELECT stage, max(version) FROM model_versions WHERE model_id=?1"
                             " AND stage IN ('staging','production') GROUP BY stage",
                             &s2) == LT_OK) {
            sqlite3_bind_int64(s2, 1, sqlite3_column_int64(st, 0));
            while (sqlite3_step(s2) == SQLITE_ROW)
                json_object_set_new(stages, (const char *)sqlite3_column_text(s2, 0),
                                    col_json(s2, 1));
            sqlite3_finalize(s2);
        }
        json_object_set_new(o, "stages", stages);
        json_array_append_new(a, o);
    }
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        json_decref(a);
        return lt_store_sqlerr(s, LT_ERR_IO, "listing models");
    }
    return dump(a, json);
}

lt_status lt_registry_model_json(lt_store *s, const char *name, int version, char **json) {
    *json = NULL;
    sqlite3_stmt *st;
    lt_status rc =
        lt_store_prepare(s, "SELECT id, name, description, created FROM models WHERE name=?1", &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return lt_error(LT_ERR_NOTFOUND, "%s: no model '%s' (see `loratune models list`)", s->path,
                        name);
    }
    int64_t mid = sqlite3_column_int64(st, 0);
    json_t *o = json_pack("{s:o,s:o,s:o}", "name", col_json(st, 1), "description", col_json(st, 2),
                          "created", col_json(st, 3));
    sqlite3_finalize(st);
    if ((rc = lt_store_prepare(
             s,
             "SELECT v.version, v.stage, v.run_id, r.uuid, v.base_name, v.base_sha256,"
             " v.adapter_path, v.merged_path, v.data_path, v.data_md5, v.hardware, v.created,"
             " v.stage_changed FROM model_versions v JOIN runs r ON r.id=v.run_id"
             " WHERE v.model_id=?1 AND (?2 <= 0 OR v.version=?2) ORDER BY v.version",
             &st)) != LT_OK) {
        json_decref(o);
        return rc;
    }
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_int(st, 2, version);
    json_t *vs = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *hw = (const char *)sqlite3_column_text(st, 10);
        json_t *hwj = hw ? json_loads(hw, 0, NULL) : NULL;
        json_array_append_new(
            vs,
            json_pack("{s:o,s:o,s:o,s:o,s:{s:o,s:o},s:o,s:o,s:{s:o,s:o},s:o,s:o,s:o}", "version",
                      col_json(st, 0), "stage", col_json(st, 1), "run_id", col_json(st, 2),
                      "run_uuid", col_json(st, 3), "base", "name", col_json(st, 4), "sha256",
                      col_json(st, 5), "adapter_path", col_json(st, 6), "merged_path",
                      col_json(st, 7), "data", "path", col_json(st, 8), "md5", col_json(st, 9),
                      "hardware", hwj ? hwj : json_null(), "created", col_json(st, 11),
                      "stage_changed", col_json(st, 12)));
    }
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        json_decref(o);
        json_decref(vs);
        return lt_store_sqlerr(s, LT_ERR_IO, "reading model versions");
    }
    if (version > 0 && json_array_size(vs) == 0) {
        json_decref(o);
        json_decref(vs);
        return lt_error(LT_ERR_NOTFOUND, "%s: model '%s' has no version %d", s->path, name,
                        version);
    }
    json_object_set_new(o, "versions", vs);
    return dump(o, json);
}
