/* mlflow.h - mirroring runs and registered models to an MLflow tracking server over its REST
 * API (/api/2.0/mlflow/..., libcurl).
 *
 * Two ways:
 *   - live: an lt_mlflow mirror of one run. Every lt_mlflow_* logging call only appends to an
 *     in-memory queue (a mutex, no I/O) and returns; a background thread creates the
 *     experiment and run, then sends the queue in runs/log-batch requests (<= 1000 metrics,
 *     100 params, 100 tags each), retrying with backoff (0.25 s doubling to 5 s) while the
 *     server is down or answers 5xx / 429. Training is never blocked or failed by the server.
 *     lt_mlflow_close waits at most a deadline for the queue to drain and reports what was
 *     left unsent (the run is still complete in the local store: `loratune runs push` sends
 *     it later).
 *   - push: lt_mlflow_push_run sends a run from the tracking store synchronously (creating
 *     the MLflow run, or continuing the one recorded in the run's tag "mlflow.run_id" and then
 *     sending only the metric steps the server does not have).
 *
 * The server: an lt_mlflow_server (URI + credentials). URIs: http:// or https:// only
 * (MLFLOW_TRACKING_URI's file: / sqlite: forms are not servers: LT_ERR_ARG). Auth: a bearer
 * token, or a user name and password (HTTP basic). The library reads no environment: the
 * loratune program fills the server from --mlflow and MLflow's own variables
 * (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME / _PASSWORD).
 *
 * Ownership: strings are borrowed for the call (the live mirror copies them); the mirror owns
 * its thread and queue. */
#ifndef LORATUNE_MLFLOW_H
#define LORATUNE_MLFLOW_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/track.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_mlflow lt_mlflow;

typedef struct {
    const char *uri;      /* http(s)://host[:port][/prefix] */
    const char *token;    /* NULL / "": none; else sent as "Authorization: Bearer TOKEN" */
    const char *username; /* NULL / "": none; else HTTP basic auth with password */
    const char *password;
} lt_mlflow_server;

/* LT_OK when uri is an http(s) URI, LT_ERR_ARG naming it otherwise. */
lt_status lt_mlflow_check_uri(const char *uri);

/* Starts a live mirror of one run in experiment (NULL: "Default") named run_name (optional),
 * started at start_time (seconds since the epoch). Fails only for a bad URI or no memory; the
 * server is not contacted in this call. */
lt_status lt_mlflow_open(const lt_mlflow_server *srv, const char *experiment, const char *run_name,
                         double start_time, lt_mlflow **out);
void lt_mlflow_log_param(lt_mlflow *m, const char *key, const char *value);
void lt_mlflow_set_tag(lt_mlflow *m, const char *key, const char *value);
/* time: seconds since the epoch (0: now) */
void lt_mlflow_log_metric(lt_mlflow *m, const char *key, int64_t step, double value, double time);
/* status: the run's final status (FINISHED / FAILED / KILLED in MLflow's words) */
void lt_mlflow_end(lt_mlflow *m, lt_track_status status, double end_time);
/* The MLflow run id once the server created the run ("" until then); copied into out. */
void lt_mlflow_run_id(lt_mlflow *m, char out[64]);
/* Waits up to timeout_s for the queue to drain, stops the thread and frees m. Returns the
 * number of queued items that were not sent; when > 0 and msg is given, *msg (n bytes) tells
 * why (the last error). run_id (may be NULL) gets the MLflow run id ("" if never created).
 * NULL m: 0. */
int lt_mlflow_close(lt_mlflow *m, double timeout_s, char run_id[64], char *msg, size_t n);

/* Synchronous: sends run_id of the store (params, tags, every metric point, status, times)
 * to the server at uri, recording the MLflow run id in the run's tag "mlflow.run_id" and in
 * mlflow_run_id. */
lt_status lt_mlflow_push_run(lt_store *s, int64_t run_id, const lt_mlflow_server *srv,
                             char mlflow_run_id[64]);
/* Synchronous: creates registered model `name` if needed and a version of it with source
 * (a path or URI of the model files) for the MLflow run mlflow_run_id, tagged with tags_json
 * (a flat JSON object of strings, may be NULL); the new version number in *version. */
lt_status lt_mlflow_register_version(const lt_mlflow_server *srv, const char *name,
                                     const char *mlflow_run_id, const char *source,
                                     const char *tags_json, int *version);
/* Synchronous: transition-stage (stage "None", "Staging", "Production", "Archived") of the
 * MLflow version tagged loratune.version=version (registered by loratune), else of the MLflow
 * version with that number. */
lt_status lt_mlflow_set_stage(const lt_mlflow_server *srv, const char *name, int version,
                              lt_stage stage, int archive_others);

#ifdef __cplusplus
}
#endif
#endif
