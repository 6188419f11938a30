/* study_pg.h - a study kept in PostgreSQL (internal to src/tune), so that workers on several
 * machines share it, as Optuna's RDB storage does (docs/TUNE.md "Studies shared through
 * PostgreSQL"). The study's JSON document (the same as DIR/study.json) is one row of the
 * table loratune_studies(name text primary key, doc text, updated_at timestamptz); every
 * change to it is a transaction that reads the row FOR UPDATE, changes the document and
 * writes it back, so concurrent asks and tells from any number of workers are serialized by
 * the server and none is lost.
 *
 * A study is named by a libpq connection URI plus "#NAME":
 *   postgresql://[user[:password]@][host][:port][/dbname][?param=value...]#NAME */
#ifndef LT_TUNE_STUDY_PG_H
#define LT_TUNE_STUDY_PG_H

#include "loratune/core.h"

typedef struct lt_study_pg lt_study_pg;

/* 1 when s names a PostgreSQL study (postgresql:// or postgres://) */
int lt_study_pg_is_url(const char *s);
/* Connects (and makes the table when it is not there). *shown: the URL with its password
 * masked, for messages (owned by pg). Errors name the URL and what went wrong. */
lt_status lt_study_pg_open(const char *url, lt_study_pg **out, const char **shown);
void lt_study_pg_close(lt_study_pg *pg); /* NULL ok; rolls back an open transaction */

/* Inserts a new study document; LT_ERR_ARG when the name is taken. */
lt_status lt_study_pg_insert(lt_study_pg *pg, const char *doc);
/* The document (malloc'd). for_update 1: inside a transaction begun here, the row locked
 * until lt_study_pg_end; LT_ERR_NOTFOUND when there is no such study. */
lt_status lt_study_pg_load(lt_study_pg *pg, int for_update, char **doc);
/* The locked row's new document (after lt_study_pg_load(for_update 1)). */
lt_status lt_study_pg_store(lt_study_pg *pg, const char *doc);
/* Ends the transaction: COMMIT when st is LT_OK, else ROLLBACK; returns st, or the commit's
 * error. */
lt_status lt_study_pg_end(lt_study_pg *pg, lt_status st);

#endif
