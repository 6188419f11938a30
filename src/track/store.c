/* store.c - the tracking store: opening (folder + database creation, WAL, busy timeout),
 * schema migrations keyed by PRAGMA user_version, and the run writers (begin, params, metrics,
 * tags, artifacts, end, delete, resolve).
 *
 * Invariant: every write is one BEGIN IMMEDIATE ... COMMIT transaction (lt_store_begin), so
 * concurrent writers queue on SQLite's busy handler instead of failing on a lock upgrade, and a
 * killed process leaves only committed transactions behind (WAL recovery on next open). */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "fsutil.h"
#include "loratune/hwinfo.h"
#include "core/io.h"
#include "store_db.h"

/* ---- migrations: MIGRATIONS[i] takes user_version i to i + 1 --------------------------- */
static const char *const MIGRATIONS[LT_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE experiments(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  created REAL NOT NULL);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,"
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(id), name TEXT,"
    "  kind TEXT NOT NULL DEFAULT 'train',"
    "  status TEXT NOT NULL CHECK(status IN ('running','finished','failed','killed')),"
    "  start_time REAL NOT NULL, end_time REAL, command TEXT, cwd TEXT, config TEXT,"
    "  git_commit TEXT, seed INTEGER, data_path TEXT, data_md5 TEXT, hardware TEXT,"
    "  pid INTEGER, host TEXT);"
    "CREATE INDEX runs_experiment ON runs(experiment_id);"
    "CREATE TABLE params(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(run_id, key));"
    "CREATE TABLE tags(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(run_id, key));"
    "CREATE TABLE metrics(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, step INTEGER NOT NULL, value REAL, time REAL NOT NULL,"
    "  PRIMARY KEY(run_id, key, step)) WITHOUT ROWID;"
    "CREATE TABLE artifacts(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
    "  PRIMARY KEY(run_id, path));"
    "CREATE TABLE models(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT,"
    "  created REAL NOT NULL);"
    "CREATE TABLE model_versions(model_id INTEGER NOT NULL REFERENCES models(id),"
    "  version INTEGER NOT NULL, run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  stage TEXT NOT NULL CHECK(stage IN ('none','staging','production','archived')),"
    "  base_name TEXT, base_sha256 TEXT, adapter_path TEXT, merged_path TEXT,"
    "  data_path TEXT, data_md5 TEXT, hardware TEXT, created REAL NOT NULL,"
    "  stage_changed REAL NOT NULL, PRIMARY KEY(model_id, version));",
};

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

lt_status lt_store_sqlerr(lt_store *s, lt_status code, const char *what) {
    int ec = s->db ? sqlite3_extended_errcode(s->db) & 0xff : SQLITE_ERROR;
    const char *msg = s->db ? sqlite3_errmsg(s->db) : "no database";
    if (ec == SQLITE_CORRUPT || ec == SQLITE_NOTADB)
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s: %s (the tracking store is damaged or not a loratune store; "
                        "move it aside to start a new one)",
                        s->path, what, msg);
    return lt_error(code, "%s: %s: %s", s->path, what, msg);
}

lt_status lt_store_prepare(lt_store *s, const char *sql, sqlite3_stmt **st) {
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return lt_store_sqlerr(s, LT_ERR_IO, "preparing a query");
    }
    return LT_OK;
}

lt_status lt_store_exec(lt_store *s, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        sqlite3_free(err);
        return lt_store_sqlerr(s, LT_ERR_IO, "executing a statement");
    }
    return LT_OK;
}

/* The refusal of a write to a damaged store: what is wrong and how to get out of it. */
static lt_status damaged_error(const lt_store *s) {
    return lt_error(LT_ERR_FORMAT,
                    "%s: the tracking store is damaged (PRAGMA quick_check: %s); it is opened "
                    "read-only and writes are refused. To recover what it holds: sqlite3 %s "
                    "\".recover\" | sqlite3 %s.recovered, then move %s aside and rename "
                    "%s.recovered to store.db (or move the store folder aside to start a new "
                    "one)",
                    s->path, s->damaged, s->path, s->path, s->path, s->path);
}

lt_status lt_store_begin(lt_store *s) {
    if (s->damaged[0]) return damaged_error(s);
    return lt_store_exec(s, "BEGIN IMMEDIATE");
}

const char *lt_store_damaged(const lt_store *s) {
    return s && s->damaged[0] ? s->damaged : NULL;
}

/* PRAGMA quick_check (O(database size), without the index-content cross-checks of
 * integrity_check): on a complaint, s->damaged holds the first one and the connection becomes
 * query_only. A database too broken to answer at all is an error. */
static lt_status quick_check(lt_store *s) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s, "PRAGMA quick_check(1)", &st);
    if (rc != LT_OK) return rc;
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        int ec = sqlite3_extended_errcode(s->db) & 0xff;
        if (ec == SQLITE_BUSY || ec == SQLITE_LOCKED)
            return lt_store_sqlerr(s, LT_ERR_IO, "checking integrity");
        snprintf(s->damaged, sizeof s->damaged, "%s", sqlite3_errmsg(s->db));
    } else {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (!t || strcmp(t, "ok")) snprintf(s->damaged, sizeof s->damaged, "%s", t ? t : "?");
        sqlite3_finalize(st);
    }
    if (s->damaged[0]) return lt_store_exec(s, "PRAGMA query_only=ON");
    return LT_OK;
}

/* Copies the database to PATH.vN.bak (SQLite's online backup: consistent under WAL) before a
 * migration from schema N changes it; written under a temp name and renamed into place. */
static lt_status backup_before_migration(lt_store *s, int v) {
    size_t n = strlen(s->path) + 64;
    char *tmp = lt_malloc(n), *dst = lt_malloc(n);
    lt_status rc = LT_OK;
    sqlite3 *b = NULL;
    if (!tmp || !dst) {
        rc = lt_error(LT_ERR_NOMEM, "%s: out of memory", s->path);
        goto out;
    }
    snprintf(dst, n, "%s.v%d.bak", s->path, v);
    snprintf(tmp, n, "%s.v%d.bak.tmp", s->path, v);
    unlink(tmp);
    if (sqlite3_open_v2(tmp, &b, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        rc = lt_error(LT_ERR_IO, "%s: cannot create the pre-migration backup: %s", tmp,
                      b ? sqlite3_errmsg(b) : "out of memory");
        goto out;
    }
    sqlite3_backup *bk = sqlite3_backup_init(b, "main", s->db, "main");
    int r = bk ? sqlite3_backup_step(bk, -1) : SQLITE_ERROR;
    if (bk) sqlite3_backup_finish(bk);
    if (r != SQLITE_DONE) {
        rc = lt_error(LT_ERR_IO, "%s: the pre-migration backup failed: %s", tmp, sqlite3_errmsg(b));
        goto out;
    }
    sqlite3_close(b);
    b = NULL;
    if (lt_io_rename(tmp, dst) != 0) {
        rc = lt_error(LT_ERR_IO, "%s: cannot rename the pre-migration backup to %s: %s", tmp, dst,
                      strerror(errno));
        goto out;
    }
    lt_io_sync_parent(dst);
out:
    if (b) sqlite3_close(b);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(dst);
    return rc;
}
lt_status lt_store_commit(lt_store *s) {
    lt_status st = lt_store_exec(s, "COMMIT");
    if (st != LT_OK) lt_store_rollback(s);
    return st;
}
void lt_store_rollback(lt_store *s) {
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static lt_status user_version(lt_store *s, int *v) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s, "PRAGMA user_version", &st);
    if (rc != LT_OK) return rc;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return lt_store_sqlerr(s, LT_ERR_IO, "reading the schema version");
    }
    *v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return LT_OK;
}

static lt_status migrate(lt_store *s) {
    int v = 0;
    lt_status st = user_version(s, &v);
    if (st != LT_OK) return st;
    if (v > LT_STORE_SCHEMA_VERSION)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: schema version %d was written by a newer loratune (this one reads "
                        "up to %d); upgrade loratune or use another --store",
                        s->path, v, LT_STORE_SCHEMA_VERSION);
    if (v == LT_STORE_SCHEMA_VERSION) return LT_OK;
    if (s->damaged[0]) return damaged_error(s); /* never migrate a damaged store */
    { /* a database that already holds something is backed up before the schema changes */
        sqlite3_stmt *q;
        if ((st = lt_store_prepare(s, "SELECT count(*) FROM sqlite_master", &q)) != LT_OK)
            return st;
        int objects = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
        sqlite3_finalize(q);
        if (objects > 0 && (st = backup_before_migration(s, v)) != LT_OK) return st;
    }
    if ((st = lt_store_begin(s)) != LT_OK) return st;
    /* another process may have migrated between our read and the write lock */
    if ((st = user_version(s, &v)) != LT_OK) goto fail;
    for (; v < LT_STORE_SCHEMA_VERSION; v++) {
        if ((st = lt_store_exec(s, MIGRATIONS[v])) != LT_OK) goto fail;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v + 1);
        if ((st = lt_store_exec(s, sql)) != LT_OK) goto fail;
    }
    return lt_store_commit(s);
fail:
    lt_store_rollback(s);
    return lt_error_wrap(st, "migrating the tracking store");
}

lt_status lt_store_open(const char *dir, lt_store **out) {
    *out = NULL;
    if (!dir || !*dir) dir = LT_STORE_DEFAULT_DIR;
    lt_status st = lt_mkdir_p(dir, 0755, NULL);
    if (st != LT_OK) return st;
    { /* keep the store (database, data cache) out of git */
        size_t gl = strlen(dir) + 16;
        char *gi = lt_malloc(gl);
        if (gi) {
            snprintf(gi, gl, "%s/.gitignore", dir);
            if (!lt_path_exists(gi)) lt_file_write_atomic(gi, "*\n", 2);
            free(gi);
        }
    }
    lt_store *s = lt_calloc(1, sizeof *s);
    if (!s) return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    s->dir = lt_strdup(dir);
    size_t n = strlen(dir) + 16;
    s->path = lt_malloc(n);
    if (!s->dir || !s->path) {
        lt_store_close(s);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", dir);
    }
    snprintf(s->path, n, "%s/store.db", dir);
    if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        st = lt_store_sqlerr(s, LT_ERR_IO, "cannot open");
        lt_store_close(s);
        return st;
    }
    sqlite3_busy_timeout(s->db, LT_STORE_BUSY_MS);
    sqlite3_extended_result_codes(s->db, 1);
    /* journal_mode=WAL is persistent; setting it again is a no-op read. While another process
     * creates the database or switches it to WAL, SQLite answers SQLITE_BUSY here without
     * calling the busy handler (the mode change needs an exclusive lock, a fresh WAL index is
     * being built), so the set-up is retried for as long as the busy timeout would wait. */
    for (int waited_ms = 0;; waited_ms += 20) {
        if ((st = lt_store_exec(s, "PRAGMA journal_mode=WAL")) == LT_OK &&
            (st = lt_store_exec(s, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON")) == LT_OK &&
            (st = quick_check(s)) == LT_OK && (st = migrate(s)) == LT_OK)
            break;
        int ec = sqlite3_errcode(s->db) & 0xff;
        if ((ec != SQLITE_BUSY && ec != SQLITE_LOCKED) || waited_ms >= LT_STORE_BUSY_MS) {
            lt_store_close(s);
            return st;
        }
        usleep(20000);
    }
    *out = s;
    return LT_OK;
}

void lt_store_close(lt_store *s) {
    if (!s) return;
    if (s->db) sqlite3_close_v2(s->db);
    free(s->dir);
    free(s->path);
    free(s);
}

const char *lt_store_db_path(const lt_store *s) {
    return s->path;
}
const char *lt_store_dir_path(const lt_store *s) {
    return s->dir;
}

lt_status lt_store_check(lt_store *s) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s, "PRAGMA integrity_check", &st);
    if (rc != LT_OK) return rc;
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return lt_store_sqlerr(s, LT_ERR_FORMAT, "integrity check");
    }
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (!t || strcmp(t, "ok")) {
        rc = lt_error(LT_ERR_FORMAT, "%s: integrity check failed: %s", s->path, t ? t : "?");
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    return LT_OK;
}

/* ---- runs ----------------------------------------------------------------------------- */
const char *lt_track_status_name(lt_track_status s) {
    switch (s) {
    case LT_TRACK_RUNNING:
        return "running";
    case LT_TRACK_FINISHED:
        return "finished";
    case LT_TRACK_FAILED:
        return "failed";
    case LT_TRACK_KILLED:
        return "killed";
    }
    return "?";
}

static void make_uuid(char out[33]) {
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, 16, f) : 0;
    if (f) fclose(f);
    if (got != 16) { /* fall back: time and pid */
        uint64_t t = (uint64_t)(now_s() * 1e6), p = (uint64_t)getpid();
        memcpy(b, &t, 8);
        memcpy(b + 8, &p, 8);
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

void lt_git_head(const char *dir, char out[41]) {
    out[0] = 0;
    char cur[4096];
    if (!dir) {
        if (!getcwd(cur, sizeof cur)) return;
    } else if (!realpath(dir, cur)) {
        return;
    }
    for (;;) {
        char p[4200];
        snprintf(p, sizeof p, "%s/.git/HEAD", cur);
        char *head = NULL;
        size_t len;
        if (lt_file_read_all(p, &head, &len) == LT_OK) {
            char *nl = strchr(head, '\n');
            if (nl) *nl = 0;
            if (!strncmp(head, "ref: ", 5)) {
                char rp[4400], *rv = NULL;
                snprintf(rp, sizeof rp, "%s/.git/%s", cur, head + 5);
                if (lt_file_read_all(rp, &rv, &len) == LT_OK) {
                    if (len >= 40) {
                        memcpy(out, rv, 40);
                        out[40] = 0;
                    }
                    free(rv);
                } else { /* packed-refs: "<sha> <ref>" lines */
                    snprintf(rp, sizeof rp, "%s/.git/packed-refs", cur);
                    if (lt_file_read_all(rp, &rv, &len) == LT_OK) {
                        for (char *l = strtok(rv, "\n"); l; l = strtok(NULL, "\n"))
                            if (strlen(l) > 41 && l[40] == ' ' && !strcmp(l + 41, head + 5)) {
                                memcpy(out, l, 40);
                                out[40] = 0;
                            }
                        free(rv);
                    }
                }
            } else if (strlen(head) >= 40) {
                memcpy(out, head, 40);
                out[40] = 0;
            }
            free(head);
            return;
        }
        char *slash = strrchr(cur, '/');
        if (!slash || slash == cur) return;
        *slash = 0;
    }
}

static lt_status experiment_id(lt_store *s, const char *name, int64_t *id) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(
        s, "INSERT INTO experiments(name, created) VALUES(?1, ?2) ON CONFLICT(name) DO NOTHING",
        &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 2, now_s());
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) return lt_store_sqlerr(s, LT_ERR_IO, "creating an experiment");
    if ((rc = lt_store_prepare(s, "SELECT id FROM experiments WHERE name=?1", &st)) != LT_OK)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return lt_store_sqlerr(s, LT_ERR_IO, "reading an experiment");
    }
    *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return LT_OK;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v) {
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

lt_status lt_store_run_begin(lt_store *s, const lt_track_run_desc *d, int64_t *run_id) {
    char uuid[33], git[41], cwd[4096], host[256] = "";
    make_uuid(uuid);
    if (d->git_commit)
        snprintf(git, sizeof git, "%s", d->git_commit);
    else
        lt_git_head(d->cwd, git);
    if (d->cwd)
        snprintf(cwd, sizeof cwd, "%s", d->cwd);
    else if (!getcwd(cwd, sizeof cwd))
        cwd[0] = 0;
    gethostname(host, sizeof host - 1);
    if (d->config_json) {
        json_error_t e;
        json_t *j = json_loads(d->config_json, 0, &e);
        int ok = j && json_is_object(j);
        json_decref(j);
        if (!ok) return lt_error(LT_ERR_ARG, "run config: expected a JSON object");
    }
    char *hw = NULL;
    if (d->record_hardware) {
        lt_hwinfo h;
        lt_hwinfo_detect(&h);
        if (lt_hwinfo_to_json(&h, &hw) != LT_OK) hw = NULL;
    }
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) {
        free(hw);
        return rc;
    }
    int64_t exp = 0;
    sqlite3_stmt *st = NULL;
    if ((rc = experiment_id(s, d->experiment && *d->experiment ? d->experiment : "default",
                            &exp)) != LT_OK)
        goto fail;
    if ((rc = lt_store_prepare(
             s,
             "INSERT INTO runs(uuid, experiment_id, name, kind, status, start_time, command,"
             " cwd, config, git_commit, seed, data_path, data_md5, hardware, pid, host)"
             " VALUES(?1,?2,?3,?4,'running',?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
             &st)) != LT_OK)
        goto fail;
    sqlite3_bind_text(st, 1, uuid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, exp);
    bind_opt(st, 3, d->name);
    sqlite3_bind_text(st, 4, d->kind ? d->kind : "train", -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 5, now_s());
    bind_opt(st, 6, d->command);
    bind_opt(st, 7, cwd[0] ? cwd : NULL);
    bind_opt(st, 8, d->config_json);
    bind_opt(st, 9, git[0] ? git : NULL);
    if (d->has_seed) sqlite3_bind_int64(st, 10, (sqlite3_int64)d->seed);
    bind_opt(st, 11, d->data_path);
    bind_opt(st, 12, d->data_md5);
    bind_opt(st, 13, hw);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)getpid());
    bind_opt(st, 15, host);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "creating a run");
        goto fail;
    }
    *run_id = sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(st);
    free(hw);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    free(hw);
    return rc;
}

/* One write statement with text/int64/double bindings, in its own transaction. */
static lt_status check_run(lt_store *s, int64_t run_id) {
    sqlite3_stmt *st;
    lt_status rc = lt_store_prepare(s, "SELECT 1 FROM runs WHERE id=?1", &st);
    if (rc != LT_OK) return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r == SQLITE_ROW) return LT_OK;
    if (r == SQLITE_DONE)
        return lt_error(LT_ERR_NOTFOUND, "%s: no run #%lld", s->path, (long long)run_id);
    return lt_store_sqlerr(s, LT_ERR_IO, "looking up a run");
}

static lt_status kv_write(lt_store *s, const char *table, int64_t run_id, const char *key,
                          const char *value) {
    if (!key || !*key) return lt_error(LT_ERR_ARG, "%s: empty key", table);
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s(run_id, key, value) VALUES(?1,?2,?3)"
             " ON CONFLICT(run_id, key) DO UPDATE SET value=excluded.value",
             table);
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = check_run(s, run_id)) != LT_OK || (rc = lt_store_prepare(s, sql, &st)) != LT_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, value ? value : "", -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, table);
        goto fail;
    }
    sqlite3_finalize(st);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

lt_status lt_store_log_param(lt_store *s, int64_t run_id, const char *key, const char *value) {
    return kv_write(s, "params", run_id, key, value);
}
lt_status lt_store_set_tag(lt_store *s, int64_t run_id, const char *key, const char *value) {
    return kv_write(s, "tags", run_id, key, value);
}

static lt_status flatten(lt_store *s, int64_t run_id, const char *prefix, json_t *v) {
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) {
            char key[512];
            if (prefix)
                snprintf(key, sizeof key, "%s.%s", prefix, k);
            else
                snprintf(key, sizeof key, "%s", k);
            lt_status rc = flatten(s, run_id, key, c);
            if (rc != LT_OK) return rc;
        }
        return LT_OK;
    }
    char *text = json_is_string(v)
                     ? lt_strdup(json_string_value(v))
                     : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!text) return lt_error(LT_ERR_NOMEM, "params: out of memory");
    lt_status rc = lt_store_log_param(s, run_id, prefix ? prefix : "value", text);
    free(text);
    return rc;
}

lt_status lt_store_log_params_json(lt_store *s, int64_t run_id, const char *json_object) {
    json_error_t e;
    json_t *j = json_loads(json_object, 0, &e);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return lt_error(LT_ERR_ARG, "params: expected a JSON object (%s)",
                        j ? "not an object" : e.text);
    }
    lt_status rc = flatten(s, run_id, NULL, j);
    json_decref(j);
    return rc;
}

lt_status lt_store_log_metrics(lt_store *s, int64_t run_id, int n, const char *const *keys,
                               const int64_t *steps, const double *values) {
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = check_run(s, run_id)) != LT_OK) goto fail;
    if ((rc = lt_store_prepare(s,
                               "INSERT INTO metrics(run_id, key, step, value, time)"
                               " VALUES(?1,?2,?3,?4,?5) ON CONFLICT(run_id, key, step)"
                               " DO UPDATE SET value=excluded.value, time=excluded.time",
                               &st)) != LT_OK)
        goto fail;
    double t = now_s();
    for (int i = 0; i < n; i++) {
        if (!keys[i] || !*keys[i]) {
            rc = lt_error(LT_ERR_ARG, "metric %d: empty key", i);
            goto fail;
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, keys[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, steps[i]);
        sqlite3_bind_double(st, 4, values[i]); /* NaN binds as NULL */
        sqlite3_bind_double(st, 5, t);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = lt_store_sqlerr(s, LT_ERR_IO, "logging a metric");
            goto fail;
        }
    }
    sqlite3_finalize(st);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

lt_status lt_store_log_metric(lt_store *s, int64_t run_id, const char *key, int64_t step,
                              double value) {
    return lt_store_log_metrics(s, run_id, 1, &key, &step, &value);
}

/* Collects (path, sha256, size) for a file or every regular file under a folder, but a
 * writer's lock file (LT_DIR_LOCK_NAME: a run's folder is logged while the run holds it). */
typedef struct {
    char *path;
    char sha[65];
    int64_t size;
} art_row;

static lt_status collect(const char *path, art_row **rows, int *n, int *cap) {
    if (lt_path_is_dir(path)) {
        char **names = NULL;
        int nn = 0;
        lt_status rc = lt_dir_list_sorted(path, &names, &nn);
        if (rc != LT_OK) return rc;
        for (int i = 0; i < nn && rc == LT_OK; i++) {
            /* the writer's lock and its "incomplete" marker are not part of the output */
            if (!strcmp(names[i], LT_DIR_LOCK_NAME) || !strcmp(names[i], LT_INCOMPLETE_NAME))
                continue;
            size_t l = strlen(path) + strlen(names[i]) + 2;
            char *c = lt_malloc(l);
            if (!c)
                rc = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
            else {
                snprintf(c, l, "%s/%s", path, names[i]);
                rc = collect(c, rows, n, cap);
                free(c);
            }
        }
        lt_dir_list_free(names, nn);
        return rc;
    }
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        art_row *r = lt_realloc(*rows, (size_t)nc * sizeof *r);
        if (!r) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
        *rows = r;
        *cap = nc;
    }
    art_row *r = &(*rows)[*n];
    lt_status rc = lt_file_sha256(path, r->sha, &r->size);
    if (rc != LT_OK) return rc;
    if (!(r->path = lt_strdup(path))) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    (*n)++;
    return LT_OK;
}

lt_status lt_store_log_artifact(lt_store *s, int64_t run_id, const char *path, const char *kind) {
    art_row *rows = NULL;
    int n = 0, cap = 0;
    lt_status rc = collect(path, &rows, &n, &cap);
    sqlite3_stmt *st = NULL;
    if (rc != LT_OK) goto out;
    if ((rc = lt_store_begin(s)) != LT_OK) goto out;
    if ((rc = check_run(s, run_id)) != LT_OK) goto fail;
    if ((rc = lt_store_prepare(s,
                               "INSERT INTO artifacts(run_id, path, kind, sha256, size)"
                               " VALUES(?1,?2,?3,?4,?5) ON CONFLICT(run_id, path) DO UPDATE SET"
                               " kind=excluded.kind, sha256=excluded.sha256, size=excluded.size",
                               &st)) != LT_OK)
        goto fail;
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, rows[i].path, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, kind ? kind : "file", -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, rows[i].sha, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, rows[i].size);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = lt_store_sqlerr(s, LT_ERR_IO, "logging an artifact");
            goto fail;
        }
    }
    sqlite3_finalize(st);
    rc = lt_store_commit(s);
    goto out;
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
out:
    for (int i = 0; i < n; i++)
        free(rows[i].path);
    free(rows);
    return rc;
}

lt_status lt_store_set_data(lt_store *s, int64_t run_id, const char *data_path,
                            const char *data_md5) {
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = check_run(s, run_id)) != LT_OK ||
        (rc = lt_store_prepare(s, "UPDATE runs SET data_path=?2, data_md5=?3 WHERE id=?1", &st)) !=
            LT_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    bind_opt(st, 2, data_path);
    bind_opt(st, 3, data_md5);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "setting the data version");
        goto fail;
    }
    sqlite3_finalize(st);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

lt_status lt_store_run_end(lt_store *s, int64_t run_id, lt_track_status status) {
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = check_run(s, run_id)) != LT_OK ||
        (rc = lt_store_prepare(s, "UPDATE runs SET status=?2, end_time=?3 WHERE id=?1", &st)) !=
            LT_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, lt_track_status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, now_s());
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "ending a run");
        goto fail;
    }
    sqlite3_finalize(st);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

lt_status lt_store_run_delete(lt_store *s, int64_t run_id) {
    lt_status rc = lt_store_begin(s);
    if (rc != LT_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = check_run(s, run_id)) != LT_OK) goto fail;
    if ((rc = lt_store_prepare(
             s,
             "SELECT m.name, v.version FROM model_versions v JOIN models m ON m.id=v.model_id"
             " WHERE v.run_id=?1",
             &st)) != LT_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        rc = lt_error(
            LT_ERR_ARG, "run #%lld is registered as model '%s' version %d; it can't be deleted",
            (long long)run_id, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1));
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = lt_store_prepare(s, "DELETE FROM runs WHERE id=?1", &st)) != LT_OK) goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = lt_store_sqlerr(s, LT_ERR_IO, "deleting a run");
        goto fail;
    }
    sqlite3_finalize(st);
    return lt_store_commit(s);
fail:
    sqlite3_finalize(st);
    lt_store_rollback(s);
    return rc;
}

static int is_hex(const char *r) {
    if (!*r) return 0;
    for (; *r; r++)
        if (!((*r >= '0' && *r <= '9') || (*r >= 'a' && *r <= 'f'))) return 0;
    return 1;
}

lt_status lt_store_run_resolve(lt_store *s, const char *ref, int64_t *run_id) {
    if (!ref || !*ref) return lt_error(LT_ERR_ARG, "run: empty reference");
    const char *r = ref[0] == '#' ? ref + 1 : ref;
    sqlite3_stmt *st;
    lt_status rc;
    char *end;
    long long v = strtoll(r, &end, 10);
    int numeric = *r && !*end && (r[0] >= '0' && r[0] <= '9');
    const char *sql;
    if (!strcmp(r, "last"))
        sql = "SELECT id FROM runs ORDER BY id DESC LIMIT 2";
    else if (numeric && strlen(r) < 6)
        sql = "SELECT id FROM runs WHERE id=?1";
    else if (is_hex(r) && strlen(r) >= 6)
        sql = "SELECT id FROM runs WHERE substr(uuid, 1, length(?2))=?2 OR id=?1 LIMIT 2";
    else
        sql = "SELECT id FROM runs WHERE name=?2 ORDER BY id DESC LIMIT 2";
    if ((rc = lt_store_prepare(s, sql, &st)) != LT_OK) return rc;
    if (numeric)
        sqlite3_bind_int64(st, 1, v);
    else
        sqlite3_bind_int64(st, 1, -1);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_text(st, 2, r, -1, SQLITE_TRANSIENT);
    int got = 0;
    int64_t id = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == 0) id = sqlite3_column_int64(st, 0);
        got++;
        if (!strcmp(r, "last")) break;
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE && step != SQLITE_ROW)
        return lt_store_sqlerr(s, LT_ERR_IO, "looking up a run");
    if (got == 0)
        return lt_error(LT_ERR_NOTFOUND,
                        "%s: no run '%s' (expected a run id, 'last', a uuid prefix or a name; "
                        "see `loratune runs list`)",
                        s->path, ref);
    if (got > 1 && is_hex(r) && !numeric)
        return lt_error(LT_ERR_ARG, "%s: run '%s' is ambiguous: give more of the uuid", s->path,
                        ref);
    *run_id = id;
    return LT_OK;
}

void lt_store_reap_dead(lt_store *s) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    sqlite3_stmt *st;
    if (lt_store_prepare(s, "SELECT id, pid FROM runs WHERE status='running' AND host=?1", &st) !=
        LT_OK)
        return;
    sqlite3_bind_text(st, 1, host, -1, SQLITE_TRANSIENT);
    int64_t dead[64];
    int nd = 0;
    while (sqlite3_step(st) == SQLITE_ROW && nd < 64) {
        pid_t pid = (pid_t)sqlite3_column_int64(st, 1);
        if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)
            dead[nd++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    for (int i = 0; i < nd; i++) {
        if (lt_store_begin(s) != LT_OK) return;
        if (lt_store_prepare(s,
                             "UPDATE runs SET status='killed', end_time=coalesce(end_time,"
                             " (SELECT max(time) FROM metrics WHERE run_id=?1), start_time)"
                             " WHERE id=?1 AND status='running'",
                             &st) != LT_OK) {
            lt_store_rollback(s);
            return;
        }
        sqlite3_bind_int64(st, 1, dead[i]);
        sqlite3_step(st);
        sqlite3_finalize(st);
        if (lt_store_commit(s) != LT_OK) return;
    }
}
