/* serve_internal.h - what the server's files share: the server object, a job, the request
 * helpers (JSON replies, errors) and each file's entry points. server.c owns HTTP (routing,
 * limits, auth), datasets.c the datasets, jobs.c the queue, the worker and the event streams,
 * runs.c the tracking-store views; infer.c the served model, adapters and slots, openai.c the
 * /v1 API, metrics.c /metrics (docs/SERVING.md). Locking: s->mu guards the job list and every job's mutable
 * fields; s->cv is broadcast when a job changes or gets an event (and when stopping). */
#ifndef LT_SERVE_INTERNAL_H
#define LT_SERVE_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "loratune/run.h"
#include "loratune/train.h"
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

typedef struct lt_infer lt_infer;
typedef struct lt_metrics lt_metrics;
typedef struct lt_monitor lt_monitor;
typedef struct lt_deploy lt_deploy;
typedef struct lt_merge lt_merge;

typedef struct {
    char id[LT_SERVE_ID_LEN + 1];
    uint64_t seq;   /* queue order */
    json_t *record; /* job.json as an object (owned); status etc. mirrored below */
    lt_job_status status;
    int cancel_requested;
    int64_t n_events; /* lines in events.jsonl */
    int pid;          /* a tune / compare job's `loratune tune|compare` process while it runs
                         (jobs.c); 0: none */
    lt_run *run;      /* a train job's run while it runs (NULL otherwise) */
    int64_t planned;  /* its memory plan's peak (0: unknown: it runs alone) */
    int64_t counted;  /* what it counts against the budget while it runs */
    pthread_t thread; /* the thread running it (has_thread until joined) */
    int has_thread, thread_done;
    struct lt_server *srv; /* its server (for its thread) */
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
    int resume_interrupted; /* --resume-interrupted: interrupted jobs queued again at start */

    struct MHD_Daemon *mhd;
    lt_dir_lock *lock;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    lt_job **jobs; /* in queue order (seq) */
    int n_jobs, cap_jobs;
    uint64_t next_seq;
    int skipped_jobs; /* job folders that could not be read at start */
    int n_running;      /* jobs running, each on its own thread (jobs.c) */
    int64_t mem_budget; /* --memory-budget: the planned peaks of running jobs fit in it */
    int64_t mem_planned; /* the sum of the running jobs' counted peaks */
    pthread_mutex_t merge_mu;     /* guards merges (merged.c) */
    pthread_cond_t merge_cv;      /* with merge_mu: a merge task ended */
    pthread_mutex_t merge_run_mu; /* one merged model made at a time */
    struct lt_merge *merges;      /* merge tasks, made or failed, not yet collected */
    pthread_mutex_t rec_mu; /* serializes lt_recorder_start: two jobs on one dataset would
                               version the same file into the store's DVC cache at once */
    pthread_t worker;    /* the scheduler: starts queued jobs as the budget allows */
    int worker_started;
    int64_t used_bytes; /* stored datasets + uploads in flight (the quota) */
    lt_infer *infer;    /* the served model, adapters, slots and metrics (infer.c) */
    char *tls_cert, *tls_key; /* PEM text given to MHD (lives as long as the daemon); NULL: HTTP */
    lt_monitor *monitor; /* input drift of the deployed adapters (monitor.c) */
    lt_deploy *deploy;   /* deployments, canaries, the retraining loop (deploy.c) */
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
/* Removes dir's files and dir (one level deep only; datasets.c) */
void lt_serve_remove_flat_dir(const char *dir);
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
/* DELETE /api/datasets/{id}[?all_versions=true]: the upload (or every upload of its name),
 * refused (409) while a queued / running / interrupted job trains on it or a deployment holds
 * it out; its folder goes, and its DVC cache object when no other dataset and no job record
 * names that md5 (datasets.c). */
enum MHD_Result lt_dataset_delete(lt_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result lt_dataset_validate(lt_server *s, struct MHD_Connection *c, const char *id,
                                    const json_t *body);
/* body as validate's plus "records" (0..50, default 3); "model" required: the first records
 * (in file order) rendered with the model's tokenizer and chat template, in runs of loss mask,
 * and the per-record token statistics of each split (min / median / p95 / max before
 * truncation, how many exceed max-seq-len, tokens cut), a suggested max-seq-len. */
enum MHD_Result lt_dataset_preview(lt_server *s, struct MHD_Connection *c, const char *id,
                                   const json_t *body);
/* Dataset id's version {md5, dvc_file, number, dataset} (a new reference), or NULL for a
 * dataset uploaded before uploads were versioned. */
json_t *lt_dataset_version(lt_server *s, const char *id);
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
/* GET /api/jobs/{id}/study: a tune / compare job's studies (study.json with each trial's
 * trial.json as "info") and its summary / comparison once written. */
enum MHD_Result lt_job_study(lt_server *s, struct MHD_Connection *c, const char *id);
/* Under s->mu: where a done job's downloads are (train: OUT; tune / compare: the best
 * trial's folder); -1 when it has none. */
int lt_job_files_dir(lt_server *s, const lt_job *j, char *out, size_t n);
/* GET / POST /api/jobs/{id}/merged?format=hf|gguf&dtype=...[&wait=true]: the base model with
 * the job's adapter merged in (loratune fuse; a full fine-tune: its model), made once on a
 * thread of its own and streamed (merged.c). POST starts it (202 + progress, or 200 when
 * ready); GET streams it when ready, else starts it and answers 202 (wait=true: waits). */
enum MHD_Result lt_job_merged(lt_server *s, struct MHD_Connection *c, const char *id, int post);
/* Removes what a merge cut off by the previous server's end left in job_dir (part_* files,
 * merged-tmp_* folders); at start. */
void lt_merges_clean(const char *job_dir);
/* Joins the merge threads (a merge in progress is waited for); at the server's stop. */
void lt_merges_shutdown(lt_server *s);
enum MHD_Result lt_job_download(lt_server *s, struct MHD_Connection *c, const char *id,
                                const char *file);

/* ---- runs (runs.c) ---- */
enum MHD_Result lt_runs_list(lt_server *s, struct MHD_Connection *c);
/* ---- the memory plan (plan.c) ---- */
/* The plan of a run with options o (checked): what POST /api/plan answers and what the job
 * scheduler counts (jobs.c). Errors start "model: " or "plan: ". */
lt_status lt_plan_run_opts(const lt_run_opts *o, lt_train_config *tc, lt_train_plan_t *p,
                           int64_t *budget, const char **why);
/* ---- the model registry (registry.c) ---- */
enum MHD_Result lt_registry_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_registry_create(lt_server *s, struct MHD_Connection *c, const json_t *body);
enum MHD_Result lt_registry_stage(lt_server *s, struct MHD_Connection *c, const char *name,
                                  const json_t *body);
enum MHD_Result lt_run_get(lt_server *s, struct MHD_Connection *c, const char *id,
                           int metrics_only);

/* ---- inference (infer.c): the served base model, its adapters, the KV-cache slots ----
 * A served model is the base (adapter NULL) or a named adapter on it. Entries are reference
 * counted: a request holds its entry from lookup to the end of its generation, so unloading an
 * adapter (DELETE /v1/adapters/NAME) takes it out of the list at once and frees it when the
 * last request using it ends. Generation: a request waits for a free slot (its own KV cache;
 * `queued` while it waits in the engine's FIFO queue); the engine thread decodes every request
 * in a slot together, one batched step per token (continuous batching: infer.c). */
typedef struct lt_served lt_served;

typedef struct lt_gen {
    /* in (set before lt_infer_run / lt_infer_spawn, read-only afterwards) */
    lt_served *target; /* held (lt_infer_lookup); released by lt_gen_unref */
    int32_t *ids;      /* the prompt (lt_malloc'd, owned) */
    int n_ids;
    int max_tokens;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    char *stop[4]; /* stop strings (owned) */
    int n_stop;
    int chat; /* stop at the chat template's end-of-turn tokens too */
    const char *endpoint; /* "chat" / "completions" (metrics label; static) */
    /* out, guarded by mu; cv is broadcast on every change */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text; /* generated text, cut at a stop string (lt_malloc'd) */
    size_t len, cap;
    size_t safe;   /* text[0..safe) can be sent: no stop string can start before it */
    int n_gen;     /* tokens generated (an end-of-turn / EOS token included) */
    int done;      /* generation over (see st / finish) */
    int cancel;    /* the client went away: stop at the next token */
    int running;   /* holds a slot */
    const char *finish; /* "stop" / "length" once done */
    lt_status st;
    char err[1024];
    double t_start, t_first, t_end; /* monotonic seconds: arrival, first token, end */
    int refs;
    struct lt_gen *q_next; /* the engine's queue (infer.c, under its lock) */
} lt_gen;

lt_status lt_infer_init(lt_server *s, const lt_serve_opts *o); /* starts loading (a thread) */
lt_status lt_infer_start(lt_server *s); /* once listening: the loading thread */
void lt_infer_wake(lt_server *s);       /* a waiter's request was cancelled */
int lt_infer_queue_full(lt_server *s);  /* --max-queue requests wait for a slot */
lt_metrics *lt_infer_metrics(lt_server *s);
void lt_infer_cancel_all(lt_server *s); /* before the HTTP daemon stops: generations end */
void lt_infer_free(lt_server *s);       /* joins, frees; safe when none */
int lt_infer_enabled(const lt_server *s);
/* 1 loaded, 0 loading, -1 failed (msg names why). */
int lt_infer_state(lt_server *s, char *msg, size_t n);
const char *lt_infer_base_name(const lt_server *s);
int lt_infer_bf16(const lt_server *s);   /* 1: --compute-dtype bf16 (or auto picked it) */
int lt_infer_kv_f32(const lt_server *s); /* 1: --kv-cache f32 */
const char *lt_infer_device(const lt_server *s); /* "cpu", or the device backend's name */
int lt_infer_ctx(const lt_server *s);
/* The served entry named name (the base's id or an adapter's name), held; NULL if none. */
lt_served *lt_infer_lookup(lt_server *s, const char *name);
void lt_served_release(lt_server *s, lt_served *e); /* safe on NULL */
const char *lt_served_name(const lt_served *e);
/* What the model needs to make prompts: tokenizer and chat template (NULL when none). Valid
 * while the server runs and the model is loaded. */
const struct lt_tokenizer *lt_infer_tokenizer(const lt_server *s);
const struct lt_chat_template *lt_infer_template(const lt_server *s);
int lt_infer_vocab(const lt_server *s);
/* The loaded base model (read-only; valid while the server runs, once loaded) and
 * --threads (0: the environment's). For forwards of its own (monitor.c: prompt perplexity). */
const struct lt_model *lt_infer_model(const lt_server *s, int *threads);
/* JSON array of the served models ({id, object, created, owned_by, parent?}); new reference. */
json_t *lt_infer_models_json(lt_server *s);
/* Adapters at run time: load (LT_ERR_BUSY when the name is taken, the loader's error when the
 * file is bad; msg gets it) and unload (LT_ERR_NOTFOUND). *in_flight: requests still using it. */
lt_status lt_infer_adapter_load(lt_server *s, const char *name, const char *path, char *msg,
                                size_t n);
lt_status lt_infer_adapter_unload(lt_server *s, const char *name, int *in_flight);
json_t *lt_infer_adapters_json(lt_server *s); /* [{name, source, method, r, in_flight}] */

lt_gen *lt_gen_new(void);
void lt_gen_unref(lt_server *s, lt_gen *g); /* frees at the last reference (and the target) */
/* Submits g to the decode engine and waits until it is done (done set, cv broadcast; past
 * --max-queue at once with LT_ERR_BUSY). */
void lt_infer_run(lt_server *s, lt_gen *g);
/* Submits g and returns: the engine holds a reference until g ends (the caller follows g->cv). */
lt_status lt_infer_spawn(lt_server *s, lt_gen *g);
/* Decode steps run and the rows (requests' tokens) they ran, since start (for /metrics). */
void lt_infer_batch_stats(lt_server *s, uint64_t *steps, uint64_t *rows);
/* Bytes of KV cache the requests in slots have written: their positions held (prompt tokens
 * run, then prompt + generated tokens fed back) x lt_kv_cache_bytes(model, 1, the cache type);
 * 0 when no request runs or before the model is loaded. */
int64_t lt_infer_kv_bytes(lt_server *s);

/* ---- metrics (metrics.c): Prometheus text exposition ---- */
lt_metrics *lt_metrics_new(void);
void lt_metrics_free(lt_metrics *m);
/* One finished /v1 request: model ("" when none was resolved), endpoint, HTTP status (499: the
 * client went away), and for one that generated, its generation (else NULL). */
void lt_metrics_request(lt_server *s, const char *model, const char *endpoint, int status,
                        const lt_gen *g);
void lt_metrics_adapter_error(lt_server *s);
enum MHD_Result lt_metrics_reply(lt_server *s, struct MHD_Connection *c);
/* gauges the metrics read from the engine (infer.c) */
void lt_infer_gauges(lt_server *s, int *running, int *queued, int *slots, int *adapters,
                     int *ready);

/* ---- the OpenAI-compatible API (openai.c) ---- */
enum MHD_Result lt_oai_models(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_oai_complete(lt_server *s, struct MHD_Connection *c, const json_t *body,
                                int chat);
enum MHD_Result lt_oai_adapters_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_oai_adapter_load(lt_server *s, struct MHD_Connection *c, const json_t *body);
enum MHD_Result lt_oai_adapter_unload(lt_server *s, struct MHD_Connection *c, const char *name);
enum MHD_Result lt_oai_ready(lt_server *s, struct MHD_Connection *c);
/* What lt_oai_complete reads from a request body, in pieces without server state (so that
 * tests/fuzz/fuzz_serve_request.c drives them as the server does). Each returns 0, or the HTTP
 * status (400) with *param naming the field and msg what was expected. */
/* Unknown fields (*code "unknown_field") and the model's name (borrowed from body). */
int lt_oai_check_fields(const json_t *body, int chat, const char **model, const char **param,
                        const char **code, char *msg, size_t n);
typedef struct {
    double temperature, top_p;
    long long max_tokens, seed, top_k;
    int max_given, seed_given;
    const char *max_key; /* "max_tokens" or "max_completion_tokens" (static) */
    char *stop[4];       /* lt_malloc'd, owned: lt_oai_req_clear */
    int n_stop;
    int stream, include_usage;
} lt_oai_req;
/* Sampling, length, stop and stream fields; *r is filled (clear it even after an error). */
int lt_oai_parse_params(const json_t *body, int chat, lt_oai_req *r, const char **param,
                        char *msg, size_t n);
void lt_oai_req_clear(lt_oai_req *r);
/* The prompt's token ids (*ids lt_malloc'd): a chat's messages rendered with template t (NULL:
 * LT_ERR_UNSUPPORTED), or a completion's prompt (a string, a list of one string, or a list of
 * ids below V). Errors set msg (naming the message index / prompt item). */
struct lt_tokenizer;
struct lt_chat_template;
lt_status lt_oai_chat_ids(const struct lt_tokenizer *tok, const struct lt_chat_template *t,
                          const json_t *msgs, int32_t **ids, size_t *n_ids, char *msg, size_t n);
lt_status lt_oai_completion_ids(const struct lt_tokenizer *tok, int V, const json_t *p,
                                int32_t **ids, size_t *n_ids, char *msg, size_t n);
/* {"error": {"message", "type", "param", "code"}} as OpenAI's API answers */
enum MHD_Result lt_oai_error(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *param, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

/* ---- input drift (monitor.c) ----
 * A reference token distribution (from a deployed version's training data) and, per watched
 * served model, the last LT_DRIFT_WINDOW prompt tokens in LT_DRIFT_BUCKETS buckets: the
 * LT_DRIFT_BUCKETS - 1 most frequent tokens of the reference, and "other". */
#define LT_DRIFT_BUCKETS 32
#define LT_DRIFT_WINDOW 2048
#define LT_NLL_WINDOW 64       /* scored prompts in the perplexity window */
#define LT_NLL_QUEUE 8         /* prompts waiting to be scored; more are not scored */
#define LT_NLL_MAX_TOKENS 512  /* a prompt's first tokens scored */
#define LT_NLL_REF_EXAMPLES 32 /* training examples scored for the reference, */
#define LT_NLL_REF_TOKENS 4096  /* at most this many tokens in all */
typedef struct lt_drift_ref lt_drift_ref;
/* Tokenizes data_path (a file or folder; every split, every token) with the served tokenizer
 * and chat template; LT_ERR_BUSY before the model is loaded. */
lt_status lt_drift_ref_build(lt_server *s, const char *data_path, lt_drift_ref **out);
void lt_drift_ref_free(lt_drift_ref *r); /* safe on NULL */
json_t *lt_drift_ref_json(const lt_drift_ref *r); /* {buckets, tokens, bucket_tokens, counts} */
lt_monitor *lt_monitor_new(lt_server *s); /* starts the perplexity scorer thread */
void lt_monitor_free(lt_monitor *m); /* safe on NULL */
/* Watches served model `model` (of deployment `deployment`) against ref (taken); a model watched
 * already gets the new reference and an empty window. */
lt_status lt_monitor_watch(lt_monitor *m, const char *model, const char *deployment,
                           lt_drift_ref *ref);
void lt_monitor_unwatch(lt_monitor *m, const char *model);
/* The prompt of a request routed to model (nothing when it is not watched; m NULL ok): its
 * tokens join the drift window, and it is queued for the perplexity scorer (dropped, and
 * counted, when LT_NLL_QUEUE prompts wait). */
void lt_monitor_observe(lt_monitor *m, const char *model, const int32_t *ids, int n);
/* 1 and the values when model is watched, else 0. */
int lt_monitor_drift(lt_monitor *m, const char *model, double *psi, double *kl, int *window);
void lt_monitor_write(lt_monitor *m, FILE *f); /* the drift series of /metrics */

/* ---- deployments and the retraining loop (deploy.c) ---- */
lt_status lt_deploy_init(lt_server *s, const lt_serve_opts *o);
void lt_deploy_free(lt_server *s);
/* The served entry for a deployment's name (the stable version, or the canary for its share of
 * requests), held; NULL when name is no deployment (the caller looks it up as a model). */
lt_served *lt_deploy_lookup(lt_server *s, const char *name);
enum MHD_Result lt_deploy_list(lt_server *s, struct MHD_Connection *c);
enum MHD_Result lt_deploy_create(lt_server *s, struct MHD_Connection *c, const json_t *body);
enum MHD_Result lt_deploy_rollback_reply(lt_server *s, struct MHD_Connection *c, const char *name);
/* POST /api/deployments/NAME/evaluate: wakes the quality scorer now (202). */
enum MHD_Result lt_deploy_evaluate(lt_server *s, struct MHD_Connection *c, const char *name);
enum MHD_Result lt_deploy_alerts(lt_server *s, struct MHD_Connection *c, const json_t *body);
/* The worker calls it after every job: a retraining job goes on to the gate, registration and
 * promotion (record: a copy of the job's record, borrowed). */
void lt_deploy_job_done(lt_server *s, const json_t *record);
void lt_deploy_metrics_write(lt_server *s, FILE *f);
/* 1 when a deployment keeps dataset id as its held-out set (its name into name), else 0. */
int lt_deploy_uses_dataset(lt_server *s, const char *id, char *name, size_t n);
/* Queues a train job (jobs.c): dataset / model as POST /api/jobs takes them, options already
 * checked (borrowed), extra keys merged into the record (borrowed); id_out gets the job's id. */
lt_status lt_jobs_enqueue(lt_server *s, const char *dataset, const char *model,
                          const json_t *options, const char *name, const json_t *extra,
                          char id_out[LT_SERVE_ID_LEN + 1]);

/* ---- the OpenAPI document (generated from src/serve/openapi.json at configure time) ---- */
extern const unsigned char lt_serve_openapi_json[];
extern const unsigned long lt_serve_openapi_json_len;

/* The text lt_run_opts_set reads for a JSON option value (string, bool, number; buf holds a
 * number's); NULL when the type cannot be an option (jobs.c, used by plan.c too). */
const char *lt_serve_opt_text(const json_t *v, char *buf, size_t n);

#endif
