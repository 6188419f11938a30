/* study_pg.c - a study's document in PostgreSQL through libpq (see study_pg.h). */
#include "study_pg.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

struct lt_study_pg {
    PGconn *conn;
    char *name;  /* the study's name (after '#') */
    char *shown; /* the URL for messages, password masked */
    int in_txn;
};

int lt_study_pg_is_url(const char *s) {
    return s && (!strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11));
}

/* url with the password of its user info (between ':' and '@' after "//") as "***" */
static char *mask_password(const char *url) {
    char *out = lt_malloc(strlen(url) + 4);
    if (!out) return NULL;
    const char *a = strstr(url, "//");
    const char *at = a ? strchr(a + 2, '@') : NULL;
    const char *slash = a ? strchr(a + 2, '/') : NULL;
    const char *colon = a ? strchr(a + 2, ':') : NULL;
    if (!at || (slash && slash < at) || !colon || colon > at) {
        strcpy(out, url);
        return out;
    }
    size_t k = (size_t)(colon + 1 - url);
    memcpy(out, url, k);
    strcpy(out + k, "***");
    strcat(out, at);
    return out;
}

static lt_status pg_error(lt_study_pg *pg, const char *what, const PGresult *r) {
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(pg->conn);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", m && m[0] ? m : "(no message)");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    return lt_error(LT_ERR_IO, "%s: %s: %s", pg->shown, what, msg);
}

/* runs one statement with text parameters; *res (may be NULL) receives the result */
static lt_status exec(lt_study_pg *pg, const char *what, const char *sql, int n,
                      const char *const *params, ExecStatusType want, PGresult **res) {
    PGresult *r = PQexecParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != want) {
        lt_status st = pg_error(pg, what, r);
        PQclear(r);
        return st;
    }
    if (res) *res = r;
    else PQclear(r);
    return LT_OK;
}

void lt_study_pg_close(lt_study_pg *pg) {
    if (!pg) return;
    if (pg->conn && pg->in_txn) PQclear(PQexec(pg->conn, "ROLLBACK"));
    if (pg->conn) PQfinish(pg->conn);
    lt_free(pg->name);
    lt_free(pg->shown);
    lt_free(pg);
}

lt_status lt_study_pg_open(const char *url, lt_study_pg **out, const char **shown) {
    *out = NULL;
    lt_study_pg *pg = lt_calloc(1, sizeof *pg);
    char *conninfo = NULL;
    lt_status st = LT_OK;
    if (!pg || !(pg->shown = mask_password(url))) {
        lt_study_pg_close(pg);
        return lt_error(LT_ERR_NOMEM, "study: out of memory");
    }
    const char *hash = strrchr(url, '#');
    if (!hash || !hash[1]) {
        st = lt_error(LT_ERR_ARG,
                      "%s: a PostgreSQL study needs its name after '#' "
                      "(postgresql://user@host:port/dbname#NAME)",
                      pg->shown);
        goto fail;
    }
    for (const char *c = hash + 1; *c; c++)
        if (!(*c == '-' || *c == '_' || *c == '.' || (*c >= '0' && *c <= '9') ||
              (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) {
            st = lt_error(LT_ERR_ARG, "%s: study name '%s': expected letters, digits, '-', '_' "
                                      "or '.'", pg->shown, hash + 1);
            goto fail;
        }
    if (!(pg->name = lt_strdup(hash + 1)) || !(conninfo = lt_strndup(url, (size_t)(hash - url)))) {
        st = lt_error(LT_ERR_NOMEM, "study: out of memory");
        goto fail;
    }
    pg->conn = PQconnectdb(conninfo);
    if (!pg->conn || PQstatus(pg->conn) != CONNECTION_OK) {
        st = pg_error(pg, "cannot connect", NULL);
        goto fail;
    }
    PQclear(PQexec(pg->conn, "SET client_min_messages = warning"));
    /* CREATE TABLE IF NOT EXISTS is not safe against itself: two workers starting together
     * both find no table and the second fails on pg_type's unique index. A transaction-scoped
     * advisory lock (one key for the table) makes them take turns. */
    if ((st = exec(pg, "BEGIN", "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL))) goto fail;
    pg->in_txn = 1;
    st = exec(pg, "locking for the table loratune_studies",
              "SELECT pg_advisory_xact_lock(hashtext('loratune_studies'))", 0, NULL,
              PGRES_TUPLES_OK, NULL);
    if (!st)
        st = exec(pg, "creating table loratune_studies",
                  "CREATE TABLE IF NOT EXISTS loratune_studies (name text PRIMARY KEY, doc text "
                  "NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
                  0, NULL, PGRES_COMMAND_OK, NULL);
    if ((st = lt_study_pg_end(pg, st))) goto fail;
    lt_free(conninfo);
    *out = pg;
    if (shown) *shown = pg->shown;
    return LT_OK;
fail:
    lt_free(conninfo);
    lt_study_pg_close(pg);
    return st;
}

lt_status lt_study_pg_insert(lt_study_pg *pg, const char *doc) {
    const char *p[2] = {pg->name, doc};
    PGresult *r = NULL;
    lt_status st = exec(pg, "creating the study",
                        "INSERT INTO loratune_studies (name, doc) VALUES ($1, $2) ON CONFLICT "
                        "(name) DO NOTHING",
                        2, p, PGRES_COMMAND_OK, &r);
    if (st) return st;
    const int n = atoi(PQcmdTuples(r));
    PQclear(r);
    if (n != 1)
        return lt_error(LT_ERR_ARG, "%s: already holds a study named '%s'; open it, or create "
                                    "the study under another name", pg->shown, pg->name);
    return LT_OK;
}

lt_status lt_study_pg_load(lt_study_pg *pg, int for_update, char **doc) {
    *doc = NULL;
    lt_status st;
    if (for_update) {
        if ((st = exec(pg, "BEGIN", "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL))) return st;
        pg->in_txn = 1;
    }
    const char *p[1] = {pg->name};
    PGresult *r = NULL;
    st = exec(pg, "reading the study",
              for_update ? "SELECT doc FROM loratune_studies WHERE name = $1 FOR UPDATE"
                         : "SELECT doc FROM loratune_studies WHERE name = $1",
              1, p, PGRES_TUPLES_OK, &r);
    if (st) return for_update ? lt_study_pg_end(pg, st) : st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        st = lt_error(LT_ERR_NOTFOUND, "%s: no study named '%s' here (make one with `loratune "
                                       "study create --study URL#NAME`)", pg->shown, pg->name);
        return for_update ? lt_study_pg_end(pg, st) : st;
    }
    *doc = lt_strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!*doc) {
        st = lt_error(LT_ERR_NOMEM, "study: out of memory");
        return for_update ? lt_study_pg_end(pg, st) : st;
    }
    return LT_OK;
}

lt_status lt_study_pg_store(lt_study_pg *pg, const char *doc) {
    if (!pg->in_txn)
        return lt_error(LT_ERR_INTERNAL, "%s: the study was changed outside a transaction",
                        pg->shown);
    const char *p[2] = {pg->name, doc};
    return exec(pg, "writing the study",
                "UPDATE loratune_studies SET doc = $2, updated_at = now() WHERE name = $1", 2, p,
                PGRES_COMMAND_OK, NULL);
}

lt_status lt_study_pg_end(lt_study_pg *pg, lt_status st) {
    if (!pg->in_txn) return st;
    pg->in_txn = 0;
    if (st) {
        PQclear(PQexec(pg->conn, "ROLLBACK"));
        return st;
    }
    return exec(pg, "COMMIT", "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL);
}
