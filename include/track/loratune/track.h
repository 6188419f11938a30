/* track.h - experiment tracking: an embedded SQLite store of experiments, runs, parameters,
 * metric series, tags, artifacts, the hardware of each run, and a model registry.
 *
 * Where: a folder (what the caller passes, default ".loratune" in the working directory)
 * holding store.db; the library reads no environment (the loratune program maps
 * $LORATUNE_STORE onto --store). The folder and database are created on first use.
 *
 * Invariants:
 *   - WAL journal, synchronous=NORMAL, a busy timeout (LT_STORE_BUSY_MS) and every write in a
 *     BEGIN IMMEDIATE transaction: SQLite's single writer is taken up front, so two processes
 *     writing at once wait for each other instead of failing with "database is locked", and a
 *     process killed mid-write leaves the last committed state (PRAGMA integrity_check ok).
 *   - lt_store_open runs PRAGMA quick_check: a damaged store is opened read-only (see
 *     lt_store_damaged) and writes are refused with how to recover.
 *   - The schema version is PRAGMA user_version; lt_store_open applies the missing migrations
 *     in one transaction, after copying a non-empty database to store.db.vN.bak. A store
 *     written by a newer loratune (user_version greater than LT_STORE_SCHEMA_VERSION) or a
 *     file that is not a SQLite database is refused with an error naming the file, never
 *     opened half-way.
 *   - Runs are identified by a small integer id (per store) and a 32-hex uuid; every
 *     lt_store_* lookup accepts "ID", "#ID", "last", a uuid (or a unique prefix of >= 6 hex
 *     digits) or a run name.
 *
 * Ownership: strings passed in are borrowed for the call. JSON strings returned through
 * char ** are malloc'd; the caller frees them. An lt_store handle is used by one thread at a
 * time (open one per thread). */
#ifndef LORATUNE_TRACK_H
#define LORATUNE_TRACK_H

#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_STORE_SCHEMA_VERSION 1
#define LT_STORE_BUSY_MS 30000
#define LT_STORE_DEFAULT_DIR ".loratune"

typedef struct lt_store lt_store;

/* Opens (creating the folder and database when missing, migrating an older schema) the store
 * in folder dir (NULL or "": LT_STORE_DEFAULT_DIR). Errors: LT_ERR_IO (folder can't be created,
 * database can't be opened), LT_ERR_FORMAT ("not a database", integrity failure),
 * LT_ERR_UNSUPPORTED (schema newer than this build). */
lt_status lt_store_open(const char *dir, lt_store **out);
void lt_store_close(lt_store *s); /* NULL ok */
const char *lt_store_db_path(const lt_store *s);
const char *lt_store_dir_path(const lt_store *s); /* the folder holding store.db */
/* PRAGMA integrity_check; LT_ERR_FORMAT with SQLite's first complaint when not "ok". */
lt_status lt_store_check(lt_store *s);
/* NULL, or SQLite's first complaint when lt_store_open's PRAGMA quick_check found the store
 * damaged: such a store is still read (list, show) but every write (and any schema migration)
 * fails with LT_ERR_FORMAT and a message saying how to recover. Borrowed from s. */
const char *lt_store_damaged(const lt_store *s);

/* ---- runs ------------------------------------------------------------------------------ */
typedef enum {
    LT_TRACK_RUNNING = 0,
    LT_TRACK_FINISHED,
    LT_TRACK_FAILED,
    LT_TRACK_KILLED,
} lt_track_status;
const char *lt_track_status_name(lt_track_status s); /* "running", "finished", "failed", "killed" */

typedef struct {
    const char *experiment;  /* NULL or "": "default" (created when missing) */
    const char *name;        /* optional run name */
    const char *kind;        /* "train", "eval", "hpo-trial", ... (NULL: "train") */
    const char *command;     /* the command line, as the user typed it (optional) */
    const char *config_json; /* the full resolved config as a JSON object (optional) */
    const char *cwd;         /* working directory the run started in (NULL: getcwd) */
    const char *git_commit;  /* NULL: read from the .git folder above cwd, if any */
    int has_seed;
    uint64_t seed;
    const char *data_path; /* training data (file or folder), optional */
    const char *data_md5;  /* its DVC md5 ("...", or "....dir" for a folder), optional */
    int record_hardware;   /* 1: store lt_hwinfo_detect() JSON with the run */
} lt_track_run_desc;

/* Creates a run (status running, start time now, pid and host recorded); *run_id its id. */
lt_status lt_store_run_begin(lt_store *s, const lt_track_run_desc *d, int64_t *run_id);
/* Parameters are strings (MLflow's model); setting a key again replaces the value. */
lt_status lt_store_log_param(lt_store *s, int64_t run_id, const char *key, const char *value);
/* Every leaf of a JSON object as a parameter, nested keys joined with '.' ("lora.r"). */
lt_status lt_store_log_params_json(lt_store *s, int64_t run_id, const char *json_object);
/* One point of a metric series; logging the same (key, step) again replaces the value. */
lt_status lt_store_log_metric(lt_store *s, int64_t run_id, const char *key, int64_t step,
                              double value);
/* n points in one transaction (keys[i], steps[i], values[i]). */
lt_status lt_store_log_metrics(lt_store *s, int64_t run_id, int n, const char *const *keys,
                               const int64_t *steps, const double *values);
lt_status lt_store_set_tag(lt_store *s, int64_t run_id, const char *key, const char *value);
/* Records a file the run produced: path (as given), sha256 and size read from the file now
 * (a folder: every regular file under it, one row each). kind: "adapter", "checkpoint",
 * "merged", ... (NULL: "file"). */
lt_status lt_store_log_artifact(lt_store *s, int64_t run_id, const char *path, const char *kind);
/* Sets the data version of a run (after lt_store_run_begin, when known later). */
lt_status lt_store_set_data(lt_store *s, int64_t run_id, const char *data_path,
                            const char *data_md5);
lt_status lt_store_run_end(lt_store *s, int64_t run_id, lt_track_status status);
/* Deletes a run with its params, metrics, tags and artifacts rows (files are not touched).
 * LT_ERR_ARG when a registered model version points at it. */
lt_status lt_store_run_delete(lt_store *s, int64_t run_id);
/* Resolves a run reference (see the header comment); LT_ERR_NOTFOUND naming ref. */
lt_status lt_store_run_resolve(lt_store *s, const char *ref, int64_t *run_id);

/* A run as one JSON object: id, uuid, experiment, name, kind, status, start_time, end_time
 * (seconds since the epoch, end null while running), duration_s, command, cwd, config (object),
 * git_commit, seed, data {path, md5}, pid, host, params {k: v}, tags {k: v},
 * metrics {k: {last, last_step, min, min_step, max, max_step, count}}, artifacts
 * [{path, kind, sha256, size}], hardware (object or null); with history also
 * metric_history {k: [[step, value, time], ...]}. A running run whose process (same host) is
 * gone is reported, and recorded, as killed. */
lt_status lt_store_run_to_json(lt_store *s, int64_t run_id, int with_history, char **json);
/* Runs, newest first, as a JSON array of the objects above without params/tags/history/
 * hardware (metrics summaries kept). experiment NULL: all. limit <= 0: all. */
lt_status lt_store_runs_json(lt_store *s, const char *experiment, int limit, char **json);

/* ---- model registry -------------------------------------------------------------------- */
typedef enum {
    LT_STAGE_NONE = 0,
    LT_STAGE_STAGING,
    LT_STAGE_PRODUCTION,
    LT_STAGE_ARCHIVED,
} lt_stage;
const char *lt_stage_name(lt_stage s); /* "none", "staging", ... */
/* Case-insensitive; LT_ERR_ARG naming the value and the accepted names otherwise. */
lt_status lt_stage_parse(const char *s, lt_stage *out);

typedef struct {
    const char *name;         /* registered model name (created when new) */
    const char *description;  /* optional */
    const char *base_name;    /* base model identity: path or hub name (NULL: run's params
                                 "model" tag/param if present) */
    const char *base_sha256;  /* NULL: computed from base_name when it is a file */
    const char *adapter_path; /* NULL: the run's tag "adapter_path" (the folder training saved),
                                 else its first artifact of kind "adapter", if any */
    const char *merged_path;  /* NULL: likewise tag "merged_path" / kind "merged" */
} lt_registry_desc;

/* Registers run_id as the next version of d->name (version numbers 1, 2, ...; stage none),
 * copying the run's data version and hardware; *version the new version. */
lt_status lt_registry_register(lt_store *s, int64_t run_id, const lt_registry_desc *d,
                               int *version);
/* Moves a version to stage; with archive_others, versions of the same model in that stage
 * (staging / production) move to archived. */
lt_status lt_registry_promote(lt_store *s, const char *name, int version, lt_stage stage,
                              int archive_others);
/* [{name, description, created, versions, latest_version, stages {stage: version...}}] */
lt_status lt_registry_list_json(lt_store *s, char **json);
/* {name, description, created, versions: [{version, stage, run_id, run_uuid, base {name,
 * sha256}, adapter_path, merged_path, data {path, md5}, hardware, created, stage_changed}]}.
 * version > 0: only that version (object "versions" holds one). */
lt_status lt_registry_model_json(lt_store *s, const char *name, int version, char **json);

/* ---- helpers --------------------------------------------------------------------------- */
/* Lowercase hex sha256 (65 bytes with NUL) / md5 (33 bytes) of a file's contents. */
lt_status lt_file_sha256(const char *path, char hex[65], int64_t *size);
lt_status lt_file_md5(const char *path, char hex[33], int64_t *size);
/* The commit checked out in the git work tree containing dir (40 hex), "" when none. */
void lt_git_head(const char *dir, char out[41]);

#ifdef __cplusplus
}
#endif
#endif
