/* serve_internal.h - what the server's files share: the server object, a job, the request
 * helpers (JSON replies, errors) and each file's entry points. server.c owns HTTP (routing,
 * limits, auth), datasets.c the datasets, jobs.c the queue, the worker and the event streams,
 * runs.c the tracking-store views. Locking: s->mu guards the job list and every job's mutable
 * fields; s->cv is broadcast when a job changes or gets an event (and when stopping). */
#ifndef LT_SERVE_INTERNAL_H
#define LT_SERVE_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "loratune/run.h"
#include "loratune/serve.h"

#define LT_SERVE_ID_LEN 20 /* "job_" + 16 hex; "ds_" ids are shorter */
#define LT_SERVE_PATH 2048

typedef enum {
    JOB_QUEUED = 0,
    JOB_RUNNING,
    JOB_DONE,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_INTERRUPTED,
} lt_job_status;
const char *lt_job_status_name(lt_job_status s);
int lt_job_status_parse(const char *s, lt_job_status *out); /* 0 ok, -1 unknown */
static inline int lt_job_terminal(lt_job_status s) {
    return s >= JOB_DONE;
}

typedef struct {
    char id[LT_SERVE_ID_LEN + 1];
    uint64_t seq;   /* queue order */
    json_t *record; /* job.json as an object (owned); status etc. mirrored below */
    lt_job_status status;
    int cancel_requested;
    int64_t n_events; /* lines in events.jsonl */
} lt_job;

struct lt_server {
    char host[256];
    int port;
    char work[900]; /* short enough for every path made under it */
    char models[1024];
    char token[512];
    int has_token;
    int64_t max_body, max_upload, quota;
    int timeout_s, max_conn, job_threads;

    struct MHD_Daemon *mhd;
    lt_dir_lock *lock;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    lt_job **jobs; /* in queue order (seq) */
    int n_jobs, cap_jobs;
    uint64_t next_seq;
    int skipped_jobs; /* job folders that could not be read at start */
    lt_run *run;      /* the running job's run (NULL between jobs) */
    lt_job *running;
    pthread_t worker;
    int worker_started;
    int64_t used_bytes; /* stored datasets + uploads in flight (the quota) */
};

/* ---- helpers (server.c) ---- */
/* Queue a JSON reply; takes the reference of body. */
enum MHD_Result lt_reply_json(struct MHD_Connection *c, unsigned status, json_t *body);
/* {"error": {"code": code, "message": printf(...)}} */
enum MHD_Result lt_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* 1 when id has the shape of an id this server makes with that prefix ("ds_", "job_"). */
int lt_serve_id_valid(const char *id, const char *prefix);
/* prefix + 16 random hex digits (OpenSSL RAND_bytes). */
lt_status lt_serve_new_id(const char *prefix, char out[LT_SERVE_ID_LEN + 1]);
/* Writes a JSON object to path atomically. */
lt_status lt_serve_write_json(const char *path, const json_t *obj);
double lt_serve_now(void); /* seconds since the epoch */
/* What clients see of the server's own paths: text with the work folder's absolute path
 * written "WORK" and the models folder's "MODELS" (lt_malloc'd; NULL when out of memory), and
 * a deep copy of a JSON value with every string so rewritten (new reference). */
char *lt_serve_scrub(const lt_server *s, const char *text);
json_t *lt_serve_scrub_json(const lt_server *s, const json_t *v);

/* ---- datasets (datasets.c) ---- */
typedef struct lt_upload lt_upload;
lt_status lt_datasets_init(lt_server *s); /* folders, leftover uploads, quota in use */
/* An upload: begin (content_length -1 when unknown; 413-worthy sizes give LT_ERR_ARG with
 * *too_big = 1), feed, end (the reply). */
lt_upload *lt_upload_begin(lt_server *s, const char *name, int64_t content_length, int *too_big,
                           char *err, size_t errn);
void lt_upload_feed(lt_upload *u, const char *data, size_t n);
enum MHD_Result lt_upload_end(lt_upload *u, struct MHD_Connection *c);
void lt_upload_abort(lt_upload *u); /* safe on NULL */
enum MHD_Result lt_datasets_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_dataset_get(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_dataset_validate(lt_server *s, struct MHD_Connection *c, const char *id,
                                    const json_t *body);
/* The data file of dataset id in out (n bytes); LT_ERR_NOTFOUND when there is none. */
lt_status lt_dataset_path(lt_server *s, const char *id, char *out, size_t n);
/* The path of model name (an entry of the models folder) in out; LT_ERR_NOTFOUND / LT_ERR_ARG
 * naming it otherwise. */
lt_status lt_model_path(lt_server *s, const char *name, char *out, size_t n);
enum MHD_Result lt_models_list(lt_server *s, struct MHD_Connection *c);

/* ---- jobs (jobs.c) ---- */
lt_status lt_jobs_init(lt_server *s);  /* loads the queue */
lt_status lt_jobs_start(lt_server *s); /* starts the worker (once the server listens) */
void lt_jobs_shutdown(lt_server *s);   /* stops the run, joins the worker, frees the jobs */
enum MHD_Result lt_jobs_create(lt_server *s, struct MHD_Connection *c, const json_t *body);
enum MHD_Result lt_options_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_jobs_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_job_get(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_job_cancel(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_job_resume(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_job_events(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_job_download(lt_server *s, struct MHD_Connection *c, const char *id,
                                const char *file);

/* ---- runs (runs.c) ---- */
enum MHD_Result lt_runs_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_run_get(lt_server *s, struct MHD_Connection *c, const char *id,
                           int metrics_only);

/* ---- the OpenAPI document (generated from src/serve/openapi.json at configure time) ---- */
extern const unsigned char lt_serve_openapi_json[];
extern const unsigned long lt_serve_openapi_json_len;

#endif
