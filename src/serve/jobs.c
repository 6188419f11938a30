/* jobs.c - the server's job queue: train jobs described by JSON (option names = the run option
 * table's, run.h), persisted in WORK/jobs/<id>/job.json, run one at a time by a worker thread
 * through the same calls `loratune train` makes (lt_run_new, sinks, lt_run_prepare,
 * lt_run_train; the tracking recorder as a sink), their run events appended to
 * WORK/jobs/<id>/events.jsonl and streamed as Server-Sent Events, their outputs downloadable.
 *
 * Invariants: job.json is rewritten atomically on every status change, so the queue survives
 * a crash; at start, a job found "running" was cut off with its server and becomes
 * "interrupted" (with a last event saying so); the event file only grows, one JSON object per
 * line, and the final {"event": "job", "status": <terminal>} line is written before the status
 * turns terminal, so a stream that has read every line of a terminal job has seen its end.
 * Concurrency: one job at a time (the memory plan deciding how many fit is not built yet). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/io.h"
#include "loratune/recorder.h"
#include "serve_internal.h"

static const char *const k_status_names[] = {"queued", "running",   "done",
                                             "failed", "cancelled", "interrupted"};

const char *lt_job_status_name(lt_job_status s) {
    return (unsigned)s < 6 ? k_status_names[s] : "?";
}

int lt_job_status_parse(const char *s, lt_job_status *out) {
    for (int i = 0; s && i < 6; i++)
        if (!strcmp(s, k_status_names[i])) {
            *out = (lt_job_status)i;
            return 0;
        }
    return -1;
}

/* What a finished job offers for download: the API's name -> the file under OUT. */
static const struct {
    const char *name, *rel;
} k_files[] = {
    {"adapter_model.safetensors", "adapter_model.safetensors"},
    {"adapter_config.json", "adapter_config.json"},
    {"adapter.gguf", "adapter.gguf"},
    {"mlx-adapters.safetensors", "mlx-lm/adapters.safetensors"},
    {"mlx-adapter_config.json", "mlx-lm/adapter_config.json"},
    {"run_config.yaml", "run_config.yaml"},
};
#define N_FILES (sizeof k_files / sizeof k_files[0])

static void job_file(const lt_server *s, const lt_job *j, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/jobs/%s/%s", s->work, j->id, name);
}

/* Under s->mu. */
static lt_status persist(lt_server *s, lt_job *j) {
    char p[LT_SERVE_PATH + 96];
    job_file(s, j, "job.json", p, sizeof p);
    return lt_serve_write_json(p, j->record);
}

/* Under s->mu: sets the status (record too) and wakes streams. */
static void set_status(lt_server *s, lt_job *j, lt_job_status st) {
    j->status = st;
    json_object_set_new(j->record, "status", json_string(lt_job_status_name(st)));
    pthread_cond_broadcast(&s->cv);
}

/* Under s->mu: appends one event line. While a job runs, callers ignore a failure (the job
 * goes on; a stream then misses the line); at start it is an error. */
static lt_status append_event(lt_server *s, lt_job *j, const json_t *ev) {
    char p[LT_SERVE_PATH + 96];
    job_file(s, j, "events.jsonl", p, sizeof p);
    json_t *clean = lt_serve_scrub_json(s, ev); /* clients see WORK/..., not our paths */
    char *text = clean ? json_dumps(clean, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(clean);
    if (!text) return lt_error(LT_ERR_NOMEM, "%s: could not serialize an event", p);
    lt_status st = LT_OK;
    FILE *f = lt_io_fopen(p, "a");
    if (!f) {
        st = lt_error(LT_ERR_IO, "%s: %s", p, strerror(errno));
    } else {
        size_t n = strlen(text);
        int ok = lt_io_fwrite(text, 1, n, f) == n && lt_io_fwrite("\n", 1, 1, f) == 1;
        int e = errno;
        if (lt_io_fclose(f) != 0 && ok) {
            ok = 0;
            e = errno;
        }
        if (ok)
            j->n_events++;
        else
            st = lt_error(LT_ERR_IO, "%s: write failed: %s", p, strerror(e));
    }
    free(text);
    pthread_cond_broadcast(&s->cv);
    return st;
}

static lt_status job_event(lt_server *s, lt_job *j, const char *status, const char *message) {
    json_t *ev = json_pack("{s:s,s:s,s:s}", "event", "job", "job", j->id, "status", status);
    if (!ev) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (message && *message) json_object_set_new(ev, "message", json_string(message));
    lt_status st = append_event(s, j, ev);
    json_decref(ev);
    return st;
}

/* ---- the worker ------------------------------------------------------------------------- */
typedef struct {
    lt_server *s;
    lt_job *j;
} sink_ctx;

static void event_sink(void *ctx, const json_t *ev) {
    sink_ctx *k = ctx;
    pthread_mutex_lock(&k->s->mu);
    append_event(k->s, k->j, ev);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (kind && !strcmp(kind, "step")) { /* progress for GET /api/jobs */
        json_t *pr = json_pack("{s:O,s:O,s:O}", "step", json_object_get(ev, "step"), "loss",
                               json_object_get(ev, "loss"), "eta_s", json_object_get(ev, "eta_s"));
        if (pr) json_object_set_new(k->j->record, "progress", pr);
    } else if (kind && !strcmp(kind, "start")) {
        json_object_set(k->j->record, "total_steps", json_object_get(ev, "steps"));
    }
    pthread_mutex_unlock(&k->s->mu);
}

/* The run options of a job record (checked when the job was made). */
static lt_status job_opts(lt_server *s, const lt_job *j, lt_run_opts *o) {
    lt_run_opts_default(o);
    const char *ds = json_string_value(json_object_get(j->record, "dataset"));
    const char *model = json_string_value(json_object_get(j->record, "model"));
    lt_status st = lt_dataset_path(s, ds, o->data, sizeof o->data);
    if (st) return st;
    if ((st = lt_model_path(s, model, o->model, sizeof o->model))) return st;
    int n = snprintf(o->out, sizeof o->out, "%s/jobs/%s/out", s->work, j->id);
    if (n >= (int)sizeof o->out) return lt_error(LT_ERR_ARG, "work folder path too long");
    if (s->job_threads > 0) o->threads = s->job_threads;
    if (json_is_true(json_object_get(j->record, "resume"))) /* from OUT's newest checkpoint */
        snprintf(o->resume, sizeof o->resume, "%s", o->out);
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(j->record, "options"), key, v) {
        if ((st = lt_run_opts_set(o, key, json_string_value(v)))) return st;
    }
    return lt_run_opts_validate(o, 1);
}

static int cancel_asked(lt_server *s, const lt_job *j) {
    pthread_mutex_lock(&s->mu);
    int c = j->cancel_requested;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void run_job(lt_server *s, lt_job *j) {
    lt_run_opts o;
    lt_run *r = NULL;
    lt_recorder *rec = NULL;
    lt_job_status final = JOB_FAILED;
    char msg[2048] = "";
    json_t *result = NULL;
    sink_ctx k = {s, j};
    lt_status st = job_opts(s, j, &o);
    if (!st) st = lt_run_new(&o, &r);
    if (!st) st = lt_run_add_sink(r, event_sink, &k);
    if (st) {
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        goto end;
    }
    pthread_mutex_lock(&s->mu);
    s->run = r;
    int stop = j->cancel_requested || s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stop) lt_run_request_stop(r);
    st = lt_run_prepare(r);
    if (st) {
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        final = st == LT_ERR_CANCELLED ? (cancel_asked(s, j) ? JOB_CANCELLED : JOB_INTERRUPTED)
                                       : JOB_FAILED;
        goto end;
    }
    json_t *cfg = lt_run_opts_to_json(&o);
    char *cfg_text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    char store[LT_SERVE_PATH + 16], command[128];
    snprintf(store, sizeof store, "%s/store", s->work);
    snprintf(command, sizeof command, "loratune serve: job %s", j->id);
    lt_recorder_opts ro = {.store_dir = store,
                           .experiment = "serve",
                           .name = j->id,
                           .kind = "train",
                           .command = command,
                           .config_json = cfg_text,
                           .data_path = o.data,
                           .model = o.model,
                           .has_seed = 1,
                           .seed = o.seed};
    if (lt_recorder_start(&ro, &rec)) rec = NULL; /* tracking never stops training */
    free(cfg_text);
    if (rec) {
        lt_run_add_sink(r, lt_recorder_sink, rec);
        pthread_mutex_lock(&s->mu);
        json_object_set_new(j->record, "run_id", json_integer(lt_recorder_run_id(rec)));
        persist(s, j);
        pthread_mutex_unlock(&s->mu);
    }
    lt_run_outcome oc = LT_RUN_DONE;
    st = lt_run_train(r, &oc);
    lt_run_result res;
    lt_run_get_result(r, &res);
    if (st || oc == LT_RUN_NONFINITE) {
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        final = JOB_FAILED;
    } else if (oc == LT_RUN_INTERRUPTED) {
        final = cancel_asked(s, j) ? JOB_CANCELLED : JOB_INTERRUPTED;
        snprintf(msg, sizeof msg, "%s", res.message);
    } else {
        final = JOB_DONE;
    }
    result = json_pack("{s:s,s:I,s:I}", "outcome", lt_run_outcome_name(oc), "steps",
                       (json_int_t)res.steps, "total_steps", (json_int_t)res.total_steps);
    if (res.train_loss == res.train_loss)
        json_object_set_new(result, "train_loss", json_real(res.train_loss));
    if (res.last_val_loss == res.last_val_loss)
        json_object_set_new(result, "val_loss", json_real(res.last_val_loss));
    if (rec) {
        char warn[512];
        lt_recorder_finish(rec,
                           final == JOB_DONE     ? LT_TRACK_FINISHED
                           : final == JOB_FAILED ? LT_TRACK_FAILED
                                                 : LT_TRACK_KILLED,
                           warn, sizeof warn);
    }
end:
    pthread_mutex_lock(&s->mu);
    s->run = NULL;
    pthread_mutex_unlock(&s->mu);
    lt_run_free(r);
    pthread_mutex_lock(&s->mu);
    json_t *files = json_array();
    for (size_t i = 0; i < N_FILES && final == JOB_DONE; i++) {
        char p[LT_SERVE_PATH + 128];
        snprintf(p, sizeof p, "%s/jobs/%s/out/%s", s->work, j->id, k_files[i].rel);
        if (lt_path_exists(p)) json_array_append_new(files, json_string(k_files[i].name));
    }
    json_object_set_new(j->record, "files", files);
    if (result) json_object_set_new(j->record, "result", result);
    if (*msg) {
        char *clean = lt_serve_scrub(s, msg);
        json_object_set_new(j->record, "error", json_string(clean ? clean : "(out of memory)"));
        lt_free(clean);
    }
    json_object_set_new(j->record, "finished", json_real(lt_serve_now()));
    job_event(s, j, lt_job_status_name(final), msg); /* scrubbed by append_event */
    set_status(s, j, final);
    persist(s, j);
    pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg) {
    lt_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        lt_job *j = NULL;
        for (int i = 0; i < s->n_jobs && !j; i++)
            if (s->jobs[i]->status == JOB_QUEUED) j = s->jobs[i];
        if (!j) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        set_status(s, j, JOB_RUNNING);
        json_object_set_new(j->record, "started", json_real(lt_serve_now()));
        persist(s, j);
        job_event(s, j, "running", NULL);
        s->running = j;
        pthread_mutex_unlock(&s->mu);
        run_job(s, j);
        pthread_mutex_lock(&s->mu);
        json_t *rec = json_deep_copy(j->record);
        pthread_mutex_unlock(&s->mu);
        lt_deploy_job_done(s, rec); /* a retraining job: gate, register, promote (deploy.c) */
        json_decref(rec);
        pthread_mutex_lock(&s->mu);
        s->running = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the queue -------------------------------------------------------------------------- */
/* Under s->mu (or before the worker runs). Takes j. */
static lt_status add_job(lt_server *s, lt_job *j) {
    if (s->n_jobs == s->cap_jobs) {
        int cap = s->cap_jobs ? 2 * s->cap_jobs : 16;
        lt_job **a = lt_realloc(s->jobs, (size_t)cap * sizeof *a);
        if (!a) return lt_error(LT_ERR_NOMEM, "out of memory");
        s->jobs = a;
        s->cap_jobs = cap;
    }
    int i = s->n_jobs++;
    while (i > 0 && s->jobs[i - 1]->seq > j->seq) { /* queue order */
        s->jobs[i] = s->jobs[i - 1];
        i--;
    }
    s->jobs[i] = j;
    if (j->seq >= s->next_seq) s->next_seq = j->seq + 1;
    return LT_OK;
}

static void free_job(lt_job *j) {
    if (!j) return;
    json_decref(j->record);
    lt_free(j);
}

static int64_t count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int64_t n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

lt_status lt_jobs_init(lt_server *s) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/jobs", s->work);
    lt_status st = lt_mkdir_p(dir, 0700, NULL);
    if (st) return st;
    DIR *d = opendir(dir);
    if (!d) return lt_error(LT_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!lt_serve_id_valid(e->d_name, "job_")) continue;
        char p[LT_SERVE_PATH + 96];
        snprintf(p, sizeof p, "%s/%s/job.json", dir, e->d_name);
        json_t *rec = json_load_file(p, 0, NULL);
        lt_job_status js;
        const char *id = json_string_value(json_object_get(rec, "id"));
        if (!json_is_object(rec) || !id || strcmp(id, e->d_name) ||
            lt_job_status_parse(json_string_value(json_object_get(rec, "status")), &js) ||
            !json_is_integer(json_object_get(rec, "seq"))) {
            json_decref(rec);
            s->skipped_jobs++;
            continue;
        }
        lt_job *j = lt_calloc(1, sizeof *j);
        if (!j) {
            json_decref(rec);
            closedir(d);
            return lt_error(LT_ERR_NOMEM, "out of memory");
        }
        snprintf(j->id, sizeof j->id, "%s", id);
        j->record = rec;
        j->status = js;
        j->seq = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
        snprintf(p, sizeof p, "%s/%s/events.jsonl", dir, e->d_name);
        j->n_events = count_lines(p);
        if (js == JOB_RUNNING) { /* its server ended while it ran */
            const char *why = "the server stopped while this job ran";
            json_object_set_new(j->record, "error", json_string(why));
            json_object_set_new(j->record, "finished", json_real(lt_serve_now()));
            set_status(s, j, JOB_INTERRUPTED);
            /* the record first: a failure here leaves it "running", to be retried next start */
            st = persist(s, j);
            if (!st) st = job_event(s, j, "interrupted", why);
        }
        if (st || (st = add_job(s, j))) {
            free_job(j);
            closedir(d);
            return st;
        }
    }
    closedir(d);
    return LT_OK;
}

lt_status lt_jobs_start(lt_server *s) {
    if (pthread_create(&s->worker, NULL, worker_main, s))
        return lt_error(LT_ERR_INTERNAL, "could not start the job worker thread");
    s->worker_started = 1;
    return LT_OK;
}

void lt_jobs_shutdown(lt_server *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    if (s->run) lt_run_request_stop(s->run); /* it checkpoints; the job becomes interrupted */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->worker_started) pthread_join(s->worker, NULL);
    s->worker_started = 0;
    for (int i = 0; i < s->n_jobs; i++)
        free_job(s->jobs[i]);
    lt_free(s->jobs);
    s->jobs = NULL;
    s->n_jobs = s->cap_jobs = 0;
}

static lt_job *find_job(lt_server *s, const char *id) {
    if (!lt_serve_id_valid(id, "job_")) return NULL;
    for (int i = 0; i < s->n_jobs; i++)
        if (!strcmp(s->jobs[i]->id, id)) return s->jobs[i];
    return NULL;
}

/* ---- endpoints ------------------------------------------------------------------------- */
/* The text lt_run_opts_set reads for a JSON value; NULL when the type can't be an option. */
const char *lt_serve_opt_text(const json_t *v, char *buf, size_t n) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_true(v)) return "true";
    if (json_is_false(v)) return "false";
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, n, "%.17g", json_real_value(v));
        return buf;
    }
    return NULL;
}

enum MHD_Result lt_jobs_create(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "kind") && strcmp(key, "dataset") && strcmp(key, "model") &&
            strcmp(key, "options") && strcmp(key, "name"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected kind, "
                                  "dataset, model, options, name)",
                                  key);
    }
    json_t *kind = json_object_get(body, "kind");
    if (kind && !json_is_string(kind))
        return lt_reply_error(c, 400, "bad_request", "kind: expected a string (\"train\")");
    if (kind && strcmp(json_string_value(kind), "train")) {
        const char *k = json_string_value(kind);
        if (!strcmp(k, "tune") || !strcmp(k, "compare"))
            return lt_reply_error(c, 400, "unsupported",
                                  "kind: '%s' jobs are not built yet; "
                                  "only \"train\"",
                                  k);
        return lt_reply_error(c, 400, "bad_request", "kind: expected \"train\", got '%s'", k);
    }
    json_t *ds = json_object_get(body, "dataset"), *model = json_object_get(body, "model");
    json_t *opts = json_object_get(body, "options"), *name = json_object_get(body, "name");
    if (!json_is_string(ds))
        return lt_reply_error(c, 400, "bad_request",
                              "dataset: expected the id of an uploaded dataset (a string)");
    if (!json_is_string(model))
        return lt_reply_error(c, 400, "bad_request",
                              "model: expected a model name from GET /api/models (a string)");
    if (opts && !json_is_object(opts))
        return lt_reply_error(c, 400, "bad_request",
                              "options: expected an object of run options (\"lora-rank\": 8, ...)");
    if (name && (!json_is_string(name) || strlen(json_string_value(name)) > 200))
        return lt_reply_error(c, 400, "bad_request",
                              "name: expected a string of at most 200 "
                              "characters");
    lt_run_opts o;
    lt_run_opts_default(&o);
    /* a well-formed reference to nothing is a 404, a malformed one a 400 */
    if (lt_dataset_path(s, json_string_value(ds), o.data, sizeof o.data))
        return lt_serve_id_valid(json_string_value(ds), "ds_")
                   ? lt_reply_error(c, 404, "not_found", "dataset: no dataset '%s'",
                                    json_string_value(ds))
                   : lt_reply_error(c, 400, "bad_request",
                                    "dataset: '%s' is not a dataset id (ds_ and 16 hex digits)",
                                    json_string_value(ds));
    lt_status mst = lt_model_path(s, json_string_value(model), o.model, sizeof o.model);
    if (mst)
        return lt_reply_error(c, mst == LT_ERR_NOTFOUND ? 404 : 400,
                              mst == LT_ERR_NOTFOUND ? "not_found" : "bad_request", "model: %s",
                              lt_errmsg());
    json_t *given = json_object();
    json_object_foreach(opts, key, v) {
        char buf[64];
        int i = lt_run_opt_find(key);
        const lt_run_opt_info *in = lt_run_opt_get(i);
        if (!in) {
            lt_run_opts_set(&o, key, "");
            json_decref(given);
            return lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());
        }
        if (in->type == LT_OPT_STRING || !strcmp(in->name, "json"))
            return json_decref(given),
                   lt_reply_error(c, 400, "bad_option",
                                  "options: '%s' is set by the server (paths never come from "
                                  "clients; give 'dataset' and 'model' at the top level)",
                                  in->name);
        const char *t = lt_serve_opt_text(v, buf, sizeof buf);
        if (!t)
            return json_decref(given),
                   lt_reply_error(c, 400, "bad_option",
                                  "options: %s: expected a string, number or boolean", in->name);
        if (lt_run_opts_set(&o, in->name, t))
            return json_decref(given),
                   lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());
        json_object_set_new(given, in->name, json_string(t));
    }
    snprintf(o.out, sizeof o.out, "%s/jobs/(new)/out", s->work);
    if (lt_run_opts_validate(&o, 1)) {
        json_decref(given);
        return lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());
    }
    lt_job *j = lt_calloc(1, sizeof *j);
    if (!j || lt_serve_new_id("job_", j->id)) {
        lt_free(j);
        json_decref(given);
        return lt_reply_error(c, 500, "internal", "could not make a job");
    }
    char dir[LT_SERVE_PATH + 64];
    snprintf(dir, sizeof dir, "%s/jobs/%s", s->work, j->id);
    if (lt_mkdir_p(dir, 0700, NULL)) {
        lt_free(j);
        json_decref(given);
        return lt_reply_error(c, 500, "io_error", "%s", lt_errmsg());
    }
    pthread_mutex_lock(&s->mu);
    j->seq = s->next_seq;
    j->record = json_pack("{s:s,s:s,s:s,s:O,s:O,s:o,s:O?,s:I,s:f}", "id", j->id, "kind", "train",
                          "status", "queued", "dataset", ds, "model", model, "options", given,
                          "name", name, "seq", (json_int_t)j->seq, "created", lt_serve_now());
    lt_status st = j->record ? persist(s, j) : LT_ERR_NOMEM;
    if (!st) st = add_job(s, j);
    if (st) {
        pthread_mutex_unlock(&s->mu);
        rmdir(dir);
        free_job(j);
        return lt_reply_error(c, 500, "io_error", "could not queue the job: %s", lt_errmsg());
    }
    job_event(s, j, "queued", NULL);
    json_t *out = json_deep_copy(j->record);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_CREATED, out);
}

/* The run option table (run.h) as jobs take it: what a form or a client needs to build
 * "options". server: 1 for the options the server sets itself (paths, json). */
enum MHD_Result lt_options_list(lt_server *s, struct MHD_Connection *c) {
    static const char *const types[] = {"string", "bool", "int",  "float",
                                        "enum",   "size", "list", "layers"};
    json_t *arr = json_array();
    for (int i = 0; i < lt_run_opt_count(); i++) {
        const lt_run_opt_info *in = lt_run_opt_get(i);
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:b}", "name", in->name, "type",
                              (unsigned)in->type < 8 ? types[in->type] : "?", "help", in->help,
                              "server", in->type == LT_OPT_STRING || !strcmp(in->name, "json"),
                              "auto", (in->flags & LT_OPT_AUTO) != 0);
        json_object_set_new(o, "default", in->def ? json_string(in->def) : json_null());
        if (in->type == LT_OPT_INT || in->type == LT_OPT_FLOAT || in->type == LT_OPT_SIZE) {
            json_object_set_new(o, "min", json_real(in->min));
            if (in->max < 1e300) json_object_set_new(o, "max", json_real(in->max));
        }
        if (in->choices) {
            json_t *ch = json_array();
            for (const char *const *p = in->choices; *p; p++)
                json_array_append_new(ch, json_string(*p));
            json_object_set_new(o, "choices", ch);
        }
        json_array_append_new(arr, o);
    }
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "options", arr));
}

enum MHD_Result lt_jobs_list(lt_server *s, struct MHD_Connection *c) {
    json_t *arr = json_array();
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_jobs; i++)
        json_array_append_new(arr, json_deep_copy(s->jobs[i]->record));
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "jobs", arr));
}

enum MHD_Result lt_job_get(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    json_t *o = j ? json_deep_copy(j->record) : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!o) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    return lt_reply_json(c, MHD_HTTP_OK, o);
}

enum MHD_Result lt_job_cancel(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    if (!j) {
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    }
    if (lt_job_terminal(j->status)) {
        lt_job_status st = j->status;
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict", "job '%s' is already %s", id,
                              lt_job_status_name(st));
    }
    j->cancel_requested = 1;
    if (j->status == JOB_QUEUED) {
        job_event(s, j, "cancelled", "cancelled before it started");
        json_object_set_new(j->record, "finished", json_real(lt_serve_now()));
        set_status(s, j, JOB_CANCELLED);
        persist(s, j);
    } else if (s->running == j && s->run) {
        lt_run_request_stop(s->run); /* the worker ends it as cancelled */
    }
    json_t *o = json_deep_copy(j->record);
    json_object_set_new(o, "cancel_requested", json_true());
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_ACCEPTED, o);
}

/* Queues an interrupted or cancelled job again, to continue from its newest checkpoint (the
 * run's bit-exact resume); it keeps its place in the queue (its seq). */
enum MHD_Result lt_job_resume(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    if (!j) {
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    }
    lt_job_status st = j->status;
    char out[LT_SERVE_PATH + 64], ck[LT_SERVE_PATH + 128];
    snprintf(out, sizeof out, "%s/jobs/%s/out", s->work, j->id);
    if (st != JOB_INTERRUPTED && st != JOB_CANCELLED) {
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict",
                              "job '%s' is %s: only an interrupted or cancelled job resumes", id,
                              lt_job_status_name(st));
    }
    if (lt_checkpoint_resolve(out, ck, sizeof ck)) {
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict",
                              "job '%s' has no checkpoint to resume from", id);
    }
    j->cancel_requested = 0;
    json_object_set_new(j->record, "resume", json_true());
    json_object_del(j->record, "finished");
    json_object_del(j->record, "error");
    json_object_del(j->record, "result");
    const char *base = strrchr(ck, '/');
    char msg[LT_SERVE_PATH + 160];
    snprintf(msg, sizeof msg, "resuming from checkpoint %s", base ? base + 1 : ck);
    job_event(s, j, "queued", msg);
    set_status(s, j, JOB_QUEUED);
    lt_status ps = persist(s, j);
    json_t *o = json_deep_copy(j->record);
    pthread_mutex_unlock(&s->mu);
    if (ps) {
        json_decref(o);
        return lt_reply_error(c, 500, "io_error", "%s", lt_errmsg());
    }
    return lt_reply_json(c, MHD_HTTP_ACCEPTED, o);
}

/* ---- Server-Sent Events ----------------------------------------------------------------- */
typedef struct {
    lt_server *s;
    lt_job *j;
    FILE *f;
    int64_t lines; /* event lines consumed (= the id of the last one sent) */
    char *pending; /* formatted bytes not yet handed to MHD */
    size_t plen, poff;
    char *line;
    size_t line_cap;
} sse;

static void sse_free(void *cls) {
    sse *e = cls;
    if (e->f) fclose(e->f);
    free(e->line); /* getline's buffer */
    lt_free(e->pending);
    lt_free(e);
}

static int sse_set(sse *e, const char *text) {
    size_t n = strlen(text);
    char *p = lt_realloc(e->pending, n + 1);
    if (!p) return -1;
    memcpy(p, text, n + 1);
    e->pending = p;
    e->plen = n;
    e->poff = 0;
    return 0;
}

/* The next complete line of the event file as an SSE message in pending; 0 none yet. */
static int sse_next(sse *e) {
    if (!e->f) {
        char p[LT_SERVE_PATH + 96];
        job_file(e->s, e->j, "events.jsonl", p, sizeof p);
        e->f = fopen(p, "r");
        if (!e->f) return 0;
        for (int64_t skip = e->lines; skip > 0; skip--) /* Last-Event-ID */
            if (getline(&e->line, &e->line_cap, e->f) < 0) return 0;
    }
    long at = ftell(e->f);
    ssize_t n = getline(&e->line, &e->line_cap, e->f);
    if (n <= 0 || e->line[n - 1] != '\n') { /* none, or half written: read it again later */
        clearerr(e->f);
        fseek(e->f, at, SEEK_SET);
        return 0;
    }
    e->line[n - 1] = 0;
    e->lines++;
    json_t *ev = json_loads(e->line, 0, NULL);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    char head[128];
    snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)e->lines,
             kind ? kind : "message");
    json_decref(ev);
    size_t hl = strlen(head), ll = strlen(e->line);
    char *p = lt_realloc(e->pending, hl + ll + 3);
    if (!p) return -1;
    memcpy(p, head, hl);
    memcpy(p + hl, e->line, ll);
    memcpy(p + hl + ll, "\n\n", 3);
    e->pending = p;
    e->plen = hl + ll + 2;
    e->poff = 0;
    return 1;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    sse *e = cls;
    lt_server *s = e->s;
    int keepalive_s = s->timeout_s / 2 > 0 ? s->timeout_s / 2 : 1;
    if (keepalive_s > 15) keepalive_s = 15;
    while (e->poff >= e->plen) {
        int r = sse_next(e);
        if (r < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (r > 0) break;
        pthread_mutex_lock(&s->mu);
        int more = e->j->n_events > e->lines;
        if (!more && (lt_job_terminal(e->j->status) || s->stopping)) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (!more) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += keepalive_s;
            int w = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            more = e->j->n_events > e->lines;
            int stop = s->stopping;
            pthread_mutex_unlock(&s->mu);
            if (stop) return MHD_CONTENT_READER_END_OF_STREAM;
            if (w == ETIMEDOUT && !more) { /* a comment keeps proxies and the timeout calm */
                if (sse_set(e, ": keepalive\n\n")) return MHD_CONTENT_READER_END_WITH_ERROR;
                break;
            }
        } else {
            pthread_mutex_unlock(&s->mu);
        }
    }
    size_t n = e->plen - e->poff;
    if (n > max) n = max;
    memcpy(buf, e->pending + e->poff, n);
    e->poff += n;
    return (ssize_t)n;
}

enum MHD_Result lt_job_events(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    pthread_mutex_unlock(&s->mu);
    if (!j) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    sse *e = lt_calloc(1, sizeof *e);
    if (!e) return MHD_NO;
    e->s = s;
    e->j = j; /* jobs live as long as the server */
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (last) {
        char *end;
        long long v = strtoll(last, &end, 10);
        if (end != last && !*end && v > 0) e->lines = v;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, e, sse_free);
    if (!r) {
        sse_free(e);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- downloads -------------------------------------------------------------------------- */
enum MHD_Result lt_job_download(lt_server *s, struct MHD_Connection *c, const char *id,
                                const char *file) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    lt_job_status st = j ? j->status : JOB_FAILED;
    pthread_mutex_unlock(&s->mu);
    if (!j) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    size_t i = 0;
    while (i < N_FILES && strcmp(k_files[i].name, file))
        i++;
    if (i == N_FILES)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "no file '%s' (a job offers adapter_model.safetensors, "
                              "adapter_config.json, adapter.gguf, mlx-adapters.safetensors, "
                              "mlx-adapter_config.json, run_config.yaml)",
                              file);
    if (st != JOB_DONE)
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict", "job '%s' is %s, not done", id,
                              lt_job_status_name(st));
    char p[LT_SERVE_PATH + 128];
    snprintf(p, sizeof p, "%s/jobs/%s/out/%s", s->work, id, k_files[i].rel);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "job '%s' wrote no %s", id, file);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd); /* takes fd */
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    char disp[160];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s-%s\"", id, file);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            strstr(file, ".json")   ? "application/json"
                            : strstr(file, ".yaml") ? "application/yaml"
                                                    : "application/octet-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* A job made by the server itself (the retraining loop, deploy.c): the tail of lt_jobs_create
 * without the HTTP checks (the options come from a job that ran). */
lt_status lt_jobs_enqueue(lt_server *s, const char *dataset, const char *model,
                          const json_t *options, const char *name, const json_t *extra,
                          char id_out[LT_SERVE_ID_LEN + 1]) {
    lt_job *j = lt_calloc(1, sizeof *j);
    if (!j) return lt_error(LT_ERR_NOMEM, "out of memory");
    lt_status st = lt_serve_new_id("job_", j->id);
    if (st) {
        lt_free(j);
        return st;
    }
    char dir[LT_SERVE_PATH + 64];
    snprintf(dir, sizeof dir, "%s/jobs/%s", s->work, j->id);
    if ((st = lt_mkdir_p(dir, 0700, NULL))) {
        lt_free(j);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    j->seq = s->next_seq;
    j->record = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:s?,s:I,s:f}", "id", j->id, "kind", "train",
                          "status", "queued", "dataset", dataset, "model", model, "options",
                          options ? json_deep_copy(options) : json_object(), "name", name, "seq",
                          (json_int_t)j->seq, "created", lt_serve_now());
    if (j->record && extra) json_object_update(j->record, (json_t *)extra);
    st = j->record ? persist(s, j) : lt_error(LT_ERR_NOMEM, "out of memory");
    if (!st) st = add_job(s, j);
    if (st) {
        pthread_mutex_unlock(&s->mu);
        rmdir(dir);
        free_job(j);
        return st;
    }
    job_event(s, j, "queued", NULL);
    snprintf(id_out, LT_SERVE_ID_LEN + 1, "%s", j->id);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return LT_OK;
}
