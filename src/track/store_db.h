/* store_db.h - internals shared by the tracking store's files (store.c, runs_json.c,
 * registry.c): the handle, transaction helpers and SQLite error wrapping. */
#ifndef LT_TRACK_STORE_DB_H
#define LT_TRACK_STORE_DB_H

#include <sqlite3.h>

#include "loratune/track.h"

struct lt_store {
    sqlite3 *db;
    char *dir;
    char *path; /* dir/store.db */
    /* "" or what PRAGMA quick_check said when the store was opened: a damaged store is read
     * but never written (query_only; lt_store_begin refuses with how to recover) */
    char damaged[512];
};

/* lt_error(code, "PATH: WHAT: sqlite's message") */
lt_status lt_store_sqlerr(lt_store *s, lt_status code, const char *what);
/* BEGIN IMMEDIATE (takes the write lock now, waiting up to the busy timeout) / COMMIT /
 * ROLLBACK. */
lt_status lt_store_begin(lt_store *s);
lt_status lt_store_commit(lt_store *s);
void lt_store_rollback(lt_store *s);
/* Prepares sql; on failure sets the error naming what. */
lt_status lt_store_prepare(lt_store *s, const char *sql, sqlite3_stmt **st);
/* Runs a statement with no results (all steps); error names the statement. */
lt_status lt_store_exec(lt_store *s, const char *sql);
/* Marks running runs whose process is gone (same host) as killed. */
void lt_store_reap_dead(lt_store *s);

#endif
