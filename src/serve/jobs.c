/* jobs.c - the server's job queue: train jobs described by JSON (option names = the run option
 * table's, run.h), persisted in WORK/jobs/<id>/job.json, run as the memory budget allows
 * (each on its own thread) through the same calls `loratune train` makes (lt_run_new, sinks, lt_run_prepare,
 * lt_run_train; the tracking recorder as a sink), their run events appended to
 * WORK/jobs/<id>/events.jsonl and streamed as Server-Sent Events, their outputs downloadable.
 *
 * Invariants: job.json is rewritten atomically on every status change, so the queue survives
 * a crash; at start, a job found "running" was cut off with its server and becomes
 * "interrupted" (with a last event saying so); the event file only grows, one JSON object per
 * line, and the final {"event": "job", "status": <terminal>} line is written before the status
 * turns terminal, so a stream that has read every line of a terminal job has seen its end.
 * Concurrency: each running job has its own thread; the scheduler (worker_main) starts the
 * queue's head when its planned peak (plan.c, computed when the job is made) fits beside the
 * running jobs' under the server's memory budget (--memory-budget, default 80% of physical RAM).
 *
 * Tune and compare jobs ("kind": "tune" | "compare") run `loratune tune` / `loratune compare`
 * itself, as a child process of this program (/proc/self/exe, fork + exec): the trial loop
 * lives in apps/cmd_tune.c, not in a library layer, and running the command keeps them the
 * same code as the CLI's. Its study folder is the job's OUT (compare: OUT/<method>/); the
 * worker polls study.json (written atomically by the study) and turns each trial's change into
 * an {"event": "trial"} line; cancel, server shutdown and the server's death send the child
 * SIGINT (it ends its trial and exits 130, the study left resumable: POST .../resume runs
 * `tune --resume`). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* The peak of a job's memory plan (plan.c, as POST /api/plan gives it) into j->planned and
 * the record's planned_peak_bytes; 0 / null when it cannot be planned (the job then runs
 * alone, and fails with the reason when it starts). A tune / compare job: the plan of its base
 * options (its trials run one at a time; a space that raises the rank plans more). */
static void plan_opts(lt_job *j, const lt_run_opts *o) {
    lt_train_config tc;
    lt_train_plan_t p;
    int64_t budget;
    const char *why;
    j->planned = lt_plan_run_opts(o, &tc, &p, &budget, &why) ? 0 : p.peak_bytes;
    json_object_set_new(j->record, "planned_peak_bytes",
                        j->planned > 0 ? json_integer(j->planned) : json_null());
}

static void plan_job(lt_server *s, lt_job *j) {
    lt_run_opts o;
    if (job_opts(s, j, &o)) {
        j->planned = 0;
        json_object_set_new(j->record, "planned_peak_bytes", json_null());
        return;
    }
    plan_opts(j, &o);
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
    j->run = r;
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
    pthread_mutex_lock(&s->rec_mu); /* one at a time: the data's DVC versioning (recorder.c) */
    if (lt_recorder_start(&ro, &rec)) rec = NULL; /* tracking never stops training */
    pthread_mutex_unlock(&s->rec_mu);
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
    j->run = NULL;
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

/* ---- tune and compare jobs: the CLI command as a child process ------------------------- */
static const char *job_kind(const lt_job *j) {
    const char *k = json_string_value(json_object_get(j->record, "kind"));
    return k ? k : "train";
}

/* The study folders of a tune / compare job: OUT, or OUT/<method> per method. Returns the
 * count (at most 8); names[i] is the method ("" for a tune job's). */
static int study_dirs(const lt_server *s, const lt_job *j, char dirs[8][LT_SERVE_PATH + 96],
                      const char *names[8]) {
    if (!strcmp(job_kind(j), "tune")) {
        snprintf(dirs[0], sizeof dirs[0], "%s/jobs/%s/out", s->work, j->id);
        names[0] = "";
        return 1;
    }
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(json_object_get(j->record, "search"), "methods"), i, m) {
        if (n >= 8) break;
        names[n] = json_string_value(m);
        snprintf(dirs[n], sizeof dirs[n], "%s/jobs/%s/out/%s", s->work, j->id, names[n]);
        n++;
    }
    return n;
}

/* Compares the studies on disk with what seen (method/trial -> state) holds; appends a
 * "trial" event for each change and updates the job's progress. */
static void scan_studies(lt_server *s, lt_job *j, json_t *seen) {
    char dirs[8][LT_SERVE_PATH + 96];
    const char *names[8];
    int n = study_dirs(s, j, dirs, names);
    int done = 0, running = -1;
    double best = NAN;
    const char *running_method = NULL;
    for (int d = 0; d < n; d++) {
        char p[LT_SERVE_PATH + 128];
        snprintf(p, sizeof p, "%.2000s/study.json", dirs[d]);
        json_t *st = json_load_file(p, 0, NULL);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(st, "trials"), i, t) {
            const char *state = json_string_value(json_object_get(t, "state"));
            json_int_t num = json_integer_value(json_object_get(t, "trial"));
            if (!state) continue;
            json_t *v = json_object_get(t, "value");
            if (strcmp(state, "running"))
                done++;
            else
                running = (int)num, running_method = names[d];
            if (!strcmp(state, "complete") && json_is_number(v) &&
                (best != best || json_number_value(v) < best))
                best = json_number_value(v);
            char key[64];
            snprintf(key, sizeof key, "%s/%lld", names[d], (long long)num);
            const char *was = json_string_value(json_object_get(seen, key));
            if (was && !strcmp(was, state)) continue;
            json_object_set_new(seen, key, json_string(state));
            json_t *ev = json_pack("{s:s,s:I,s:s,s:O?}", "event", "trial", "trial", num, "state",
                                   state, "params", json_object_get(t, "params"));
            if (!ev) continue;
            if (*names[d]) json_object_set_new(ev, "method", json_string(names[d]));
            if (json_is_number(v)) json_object_set(ev, "value", v);
            json_t *why = json_object_get(t, "infeasible");
            if (!why) why = json_object_get(t, "error");
            if (json_is_string(why)) json_object_set(ev, "message", why);
            pthread_mutex_lock(&s->mu);
            append_event(s, j, ev);
            pthread_mutex_unlock(&s->mu);
            json_decref(ev);
        }
        json_decref(st);
    }
    json_t *pr = json_pack("{s:i}", "trials_done", done);
    if (running >= 0) json_object_set_new(pr, "trial", json_integer(running));
    if (running_method && *running_method)
        json_object_set_new(pr, "method", json_string(running_method));
    if (best == best) json_object_set_new(pr, "best_value", json_real(best));
    pthread_mutex_lock(&s->mu);
    json_object_set_new(j->record, "progress", pr);
    pthread_mutex_unlock(&s->mu);
}

/* The child's command line (argv: strings owned by the caller's buffers / the record). */
typedef struct {
    char *argv[160];
    int argc;
    char buf[16384];
    size_t used;
} argv_buf;

static int arg(argv_buf *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int arg(argv_buf *a, const char *fmt, ...) {
    if (a->argc >= 158) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(a->buf + a->used, sizeof a->buf - a->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof a->buf - a->used) return -1;
    a->argv[a->argc++] = a->buf + a->used;
    a->argv[a->argc] = NULL;
    a->used += (size_t)n + 1;
    return 0;
}

static lt_status hpo_argv(lt_server *s, lt_job *j, argv_buf *a) {
    const char *kind = job_kind(j);
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return lt_error(LT_ERR_IO, "/proc/self/exe: %s", strerror(errno));
    exe[n] = 0;
    char model[LT_RUN_PATH_MAX], data[LT_RUN_PATH_MAX];
    lt_status st = lt_dataset_path(s, json_string_value(json_object_get(j->record, "dataset")),
                                   data, sizeof data);
    if (!st)
        st = lt_model_path(s, json_string_value(json_object_get(j->record, "model")), model,
                           sizeof model);
    if (st) return st;
    json_t *search = json_object_get(j->record, "search");
    int resume = json_is_true(json_object_get(j->record, "resume"));
    int bad = arg(a, "%s", exe) || arg(a, "%s", kind) || arg(a, "--study") ||
              arg(a, "%s/jobs/%s/out", s->work, j->id) || arg(a, "--store") ||
              arg(a, "%s/store", s->work) || arg(a, "--experiment") || arg(a, "serve") ||
              arg(a, "--json");
    if (resume) {
        bad = bad || arg(a, "--resume");
    } else {
        bad = bad || arg(a, "--model") || arg(a, "%s", model) || arg(a, "--data") ||
              arg(a, "%s", data);
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(j->record, "options"), key, v) {
            bad = bad || arg(a, "--%s=%s", key, json_string_value(v));
        }
        if (s->job_threads > 0 &&
            !json_object_get(json_object_get(j->record, "options"), "threads"))
            bad = bad || arg(a, "--threads=%d", s->job_threads);
        json_object_foreach(search, key, v) {
            char nb[64];
            const char *t = lt_serve_opt_text(v, nb, sizeof nb);
            if (!strcmp(key, "space")) {
                bad = bad || arg(a, "--space") || arg(a, "%s/jobs/%s/space.json", s->work, j->id);
            } else if (!strcmp(key, "methods")) {
                char m[128] = "";
                size_t i;
                json_t *x;
                json_array_foreach(v, i, x) {
                    size_t l = strlen(m);
                    snprintf(m + l, sizeof m - l, "%s%s", i ? "," : "", json_string_value(x));
                }
                bad = bad || arg(a, "--methods") || arg(a, "%s", m);
            } else if (!strcmp(key, "prune")) {
                if (json_is_false(v)) bad = bad || arg(a, "--no-prune");
            } else if (!strcmp(key, "trials")) {
                bad = bad ||
                      arg(a, "%s", !strcmp(kind, "compare") ? "--trials-per-method" : "--trials") ||
                      arg(a, "%s", t);
            } else if (t) {
                bad = bad || arg(a, "--%s", key) || arg(a, "%s", t);
            }
        }
    }
    return bad ? lt_error(LT_ERR_ARG, "job %s: command line too long", j->id) : LT_OK;
}

/* The last non-empty line of the child's log (its error message). */
static void last_line(const char *path, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            line[--l] = 0;
        if (l && line[0] != '{') snprintf(out, n, "%s", line); /* not the JSON summary */
    }
    fclose(f);
}

/* The best trial of a finished tune / compare job: the complete trial with the lowest value
 * (validation loss) over its studies' study.json (a compare job has one per method; with no
 * constraints, as serve's compare jobs have none, that method is also `loratune compare`'s
 * recommendation). Sets the record's
 * "best" {trial, value, method?, dir (under OUT)} and "files" (what that trial's folder holds
 * of the downloads); no best: neither. Not under s->mu (reads files); the caller sets them. */
static json_t *best_trial(lt_server *s, lt_job *j, json_t **files) {
    char dirs[8][LT_SERVE_PATH + 96];
    const char *names[8];
    pthread_mutex_lock(&s->mu);
    int n = study_dirs(s, j, dirs, names);
    char mnames[8][16];
    for (int d = 0; d < n; d++)
        snprintf(mnames[d], sizeof mnames[d], "%s", names[d]);
    pthread_mutex_unlock(&s->mu);
    json_t *best = NULL;
    for (int d = 0; d < n; d++) {
        char p[LT_SERVE_PATH + 128];
        snprintf(p, sizeof p, "%.2000s/study.json", dirs[d]);
        json_t *st = json_load_file(p, 0, NULL), *tr;
        size_t k;
        json_array_foreach(json_object_get(st, "trials"), k, tr) { /* the first lowest wins */
            json_t *v = json_object_get(tr, "value"), *t = json_object_get(tr, "trial");
            const char *state = json_string_value(json_object_get(tr, "state"));
            if (!state || strcmp(state, "complete") || !json_is_number(v) || !json_is_integer(t))
                continue;
            if (best && json_number_value(v) >= json_number_value(json_object_get(best, "value")))
                continue;
            json_decref(best);
            char rel[192];
            snprintf(rel, sizeof rel, "%s%strials/%04lld", mnames[d], *mnames[d] ? "/" : "",
                     (long long)json_integer_value(t));
            best = json_pack("{s:O,s:O,s:s}", "trial", t, "value", v, "dir", rel);
            if (best && *mnames[d]) json_object_set_new(best, "method", json_string(mnames[d]));
        }
        json_decref(st);
    }
    *files = json_array();
    for (size_t i = 0; best && i < N_FILES; i++) {
        char p[LT_SERVE_PATH + 160];
        snprintf(p, sizeof p, "%s/jobs/%s/out/%s/%s", s->work, j->id,
                 json_string_value(json_object_get(best, "dir")), k_files[i].rel);
        if (lt_path_exists(p)) json_array_append_new(*files, json_string(k_files[i].name));
    }
    return best;
}

static void run_hpo_job(lt_server *s, lt_job *j) {
    const char *kind = job_kind(j);
    lt_job_status final = JOB_FAILED;
    char msg[2048] = "";
    char dir[LT_SERVE_PATH + 64], log[LT_SERVE_PATH + 96], p[LT_SERVE_PATH + 128];
    snprintf(dir, sizeof dir, "%s/jobs/%s", s->work, j->id);
    snprintf(log, sizeof log, "%s/log.txt", dir);
    json_t *seen = json_object();
    argv_buf *a = lt_calloc(1, sizeof *a);
    lt_status st = a ? hpo_argv(s, j, a) : lt_error(LT_ERR_NOMEM, "out of memory");
    json_t *space = json_object_get(json_object_get(j->record, "search"), "space");
    if (!st && space && !json_object_get(j->record, "resume")) {
        snprintf(p, sizeof p, "%s/space.json", dir);
        st = lt_serve_write_json(p, space);
    }
    pid_t pid = 0;
    if (!st) {
        /* fork + exec rather than posix_spawn, for two things the child must do itself:
           unblock SIGINT / SIGTERM (the server's threads block them: apps/cmd_serve.c waits
           for them, and a child inherits the mask, so it would never see a cancel), and ask
           for SIGINT when the worker thread that made it goes (PR_SET_PDEATHSIG: a server
           killed with SIGKILL leaves no orphan tuning on; the trial under way stays running in
           the study, for --resume). Between fork and exec: async-signal-safe calls only. */
        int e = 0;
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = lt_io_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        pid_t parent = getpid();
        sigset_t none;
        sigemptyset(&none);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        if (in < 0 || out < 0) {
            e = errno;
        } else if ((pid = fork()) == 0) {
            if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(127);
            sigaction(SIGPIPE, &dfl, NULL);
            pthread_sigmask(SIG_SETMASK, &none, NULL);
            prctl(PR_SET_PDEATHSIG, SIGINT);
            if (getppid() != parent) _exit(130); /* the server went before prctl */
            execv(a->argv[0], a->argv);
            _exit(127);
        } else if (pid < 0) {
            e = errno;
            pid = 0;
        }
        if (in >= 0) close(in);
        if (out >= 0) close(out);
        if (e) st = lt_error(LT_ERR_IO, "could not start `loratune %s`: %s", kind, strerror(e));
    }
    if (st) {
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        goto end;
    }
    pthread_mutex_lock(&s->mu);
    j->pid = (int)pid;
    json_t *cmd = json_array();
    for (int i = 1; i < a->argc; i++) { /* WORK/..., MODELS/...: not our paths */
        char *c = lt_serve_scrub(s, a->argv[i]);
        json_array_append_new(cmd, json_string(c ? c : "?"));
        lt_free(c);
    }
    json_object_set_new(j->record, "command", cmd);
    persist(s, j);
    pthread_mutex_unlock(&s->mu);
    int status = 0, signalled = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) break;
        pthread_mutex_lock(&s->mu);
        int stop = (j->cancel_requested || s->stopping) && !signalled;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            kill(pid, SIGINT); /* the command ends its trial and exits 130 */
            signalled = 1;
        }
        scan_studies(s, j, seen);
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    scan_studies(s, j, seen);
    pthread_mutex_lock(&s->mu);
    j->pid = 0;
    int cancelled = j->cancel_requested;
    pthread_mutex_unlock(&s->mu);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) {
        final = JOB_DONE;
    } else if (code == 130 || code == 128 + SIGINT) {
        final = cancelled ? JOB_CANCELLED : JOB_INTERRUPTED;
        snprintf(msg, sizeof msg, "%s", cancelled ? "cancelled" : "the server stopped");
    } else {
        last_line(log, msg, sizeof msg);
        if (!*msg) snprintf(msg, sizeof msg, "`loratune %s` exited with status %d", kind, code);
    }
end:;
    /* the result: summary.json (tune) or compare.json (compare), as the command wrote it */
    snprintf(p, sizeof p, "%s/out/%s", dir,
             !strcmp(kind, "tune") ? "summary.json" : "compare.json");
    json_t *res = json_load_file(p, 0, NULL);
    json_t *clean = res ? lt_serve_scrub_json(s, res) : NULL;
    json_decref(res);
    json_t *files = NULL;
    json_t *best = final == JOB_DONE ? best_trial(s, j, &files) : NULL;
    pthread_mutex_lock(&s->mu);
    if (clean) {
        json_object_set_new(j->record, "result", clean);
        json_t *pr = json_object_get(clean, "parent_run");
        if (json_is_integer(pr)) json_object_set(j->record, "run_id", pr);
    }
    if (best) json_object_set_new(j->record, "best", best);
    json_object_set_new(j->record, "files", files ? files : json_array());
    if (*msg && final != JOB_DONE) {
        char *c = lt_serve_scrub(s, msg);
        json_object_set_new(j->record, "error", json_string(c ? c : "(out of memory)"));
        lt_free(c);
    }
    json_object_set_new(j->record, "finished", json_real(lt_serve_now()));
    job_event(s, j, lt_job_status_name(final), final == JOB_DONE ? NULL : msg);
    set_status(s, j, final);
    persist(s, j);
    pthread_mutex_unlock(&s->mu);
    json_decref(seen);
    lt_free(a);
}

/* A job's own thread: runs it, then the retraining hook, then gives its memory back. */
static void *job_main(void *arg) {
    lt_job *j = arg;
    lt_server *s = j->srv;
    if (!strcmp(job_kind(j), "train"))
        run_job(s, j);
    else
        run_hpo_job(s, j);
    pthread_mutex_lock(&s->mu);
    json_t *rec = json_deep_copy(j->record);
    pthread_mutex_unlock(&s->mu);
    lt_deploy_job_done(s, rec); /* a retraining job: gate, register, promote (deploy.c) */
    json_decref(rec);
    pthread_mutex_lock(&s->mu);
    s->n_running--;
    s->mem_planned -= j->counted;
    j->counted = 0;
    j->thread_done = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The scheduler: in queue order, the first queued job starts when its planned peak fits beside
 * the running jobs' under the budget (a job whose plan is unknown, or larger than the whole
 * budget, counts as the whole budget: it runs alone); the queue's head waits for room, and the
 * jobs behind it wait with it (no overtaking: a big job is never starved by small ones). */
static void *worker_main(void *arg) {
    lt_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        for (int i = 0; i < s->n_jobs; i++) /* threads of jobs that ended */
            if (s->jobs[i]->has_thread && s->jobs[i]->thread_done) {
                pthread_join(s->jobs[i]->thread, NULL);
                s->jobs[i]->has_thread = 0;
            }
        lt_job *j = NULL;
        for (int i = 0; i < s->n_jobs && !j; i++)
            if (s->jobs[i]->status == JOB_QUEUED && !s->jobs[i]->has_thread) j = s->jobs[i];
        int64_t need = j && j->planned > 0 && j->planned <= s->mem_budget ? j->planned
                                                                         : s->mem_budget;
        if (!j || (s->n_running > 0 && s->mem_planned + need > s->mem_budget)) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        set_status(s, j, JOB_RUNNING);
        json_object_set_new(j->record, "started", json_real(lt_serve_now()));
        persist(s, j);
        job_event(s, j, "running", NULL);
        j->srv = s;
        j->counted = need;
        j->thread_done = 0;
        s->mem_planned += need;
        s->n_running++;
        if (pthread_create(&j->thread, NULL, job_main, j)) {
            s->n_running--;
            s->mem_planned -= need;
            j->counted = 0;
            json_object_set_new(j->record, "error", json_string("could not start a thread"));
            job_event(s, j, "failed", "could not start a thread");
            set_status(s, j, JOB_FAILED);
            persist(s, j);
            continue;
        }
        j->has_thread = 1;
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

static void resume_interrupted(lt_server *s);

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
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        lt_merges_clean(p); /* a merge the previous server's end cut off */
        json_t *pk = json_object_get(rec, "planned_peak_bytes");
        if (json_is_integer(pk))
            j->planned = json_integer_value(pk);
        else if (js == JOB_QUEUED) /* queued by a server before plans were counted */
            plan_job(s, j);
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
    if (s->resume_interrupted) resume_interrupted(s);
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
    for (int i = 0; i < s->n_jobs; i++) {
        lt_job *j = s->jobs[i];
        if (j->run) lt_run_request_stop(j->run); /* it checkpoints; the job becomes interrupted */
        if (j->pid > 0) kill(j->pid, SIGINT);    /* a tune / compare */
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->worker_started) pthread_join(s->worker, NULL);
    s->worker_started = 0;
    for (int i = 0; i < s->n_jobs; i++) /* the jobs still running end at their next step */
        if (s->jobs[i]->has_thread) {
            pthread_join(s->jobs[i]->thread, NULL);
            s->jobs[i]->has_thread = 0;
        }
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

/* The "search" object of a tune / compare job: the command's own options, checked here so a
 * bad one is a 400 (the space's content is checked by the command: a bad one fails the job
 * with its message). 0 ok; else err holds the message. */
static int check_search(const json_t *search, int compare, char *err, size_t n) {
    static const char *const samplers[] = {"auto", "gp", "random", "sobol", NULL};
    static const char *const methods[] = {"lora", "dora", "qlora", "full", NULL};
    if (search && !json_is_object(search))
        return snprintf(err, n, "search: expected an object ({\"trials\": 4, ...})"), -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)search, key, v) {
        if (!strcmp(key, "trials") || !strcmp(key, "tune-seed") ||
            !strcmp(key, "reduction-factor") || !strcmp(key, "min-resource")) {
            json_int_t lo = !strcmp(key, "trials") || !strcmp(key, "min-resource") ? 1
                            : !strcmp(key, "reduction-factor")                     ? 2
                                                                                   : 0;
            json_int_t hi = !strcmp(key, "trials") ? 100000 : (json_int_t)1 << 40;
            if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
                return snprintf(err, n, "search: %s: expected an integer %lld..%lld", key,
                                (long long)lo, (long long)hi),
                       -1;
        } else if (!strcmp(key, "time-budget")) {
            const char *t = json_string_value(v);
            int ok = json_is_string(v) && *t && strlen(t) < 32;
            for (const char *c = t; ok && *c; c++)
                ok = strchr("0123456789.hms", *c) != NULL;
            if (!ok)
                return snprintf(err, n,
                                "search: time-budget: expected a duration such as \"90s\", "
                                "\"30m\", \"1h30m\""),
                       -1;
        } else if (!strcmp(key, "sampler")) {
            int ok = 0;
            for (int i = 0; samplers[i] && json_is_string(v); i++)
                ok |= !strcmp(json_string_value(v), samplers[i]);
            if (!ok)
                return snprintf(err, n, "search: sampler: expected auto, gp, random or sobol"), -1;
        } else if (!strcmp(key, "prune")) {
            if (!json_is_boolean(v))
                return snprintf(err, n, "search: prune: expected a boolean"), -1;
        } else if (!strcmp(key, "space")) {
            if (!json_is_object(v) || !json_object_size(v))
                return snprintf(
                           err, n,
                           "search: space: expected an object mapping option names to "
                           "{\"type\": \"float\"|\"int\"|\"categorical\", ...} (docs/TUNE.md)"),
                       -1;
        } else if (!strcmp(key, "methods") && compare) {
            size_t i, k;
            json_t *m, *m2;
            if (!json_is_array(v) || !json_array_size(v) || json_array_size(v) > 4)
                return snprintf(err, n,
                                "search: methods: expected 1 to 4 of lora, dora, qlora, full"),
                       -1;
            json_array_foreach(v, i, m) {
                int ok = 0;
                for (int q = 0; methods[q] && json_is_string(m); q++)
                    ok |= !strcmp(json_string_value(m), methods[q]);
                if (!ok)
                    return snprintf(err, n,
                                    "search: methods[%zu]: expected lora, dora, qlora or full", i),
                           -1;
                json_array_foreach(v, k, m2) if (k < i && json_equal(m, m2)) return snprintf(
                    err, n, "search: methods: '%s' given twice", json_string_value(m)),
                    -1;
            }
        } else {
            return snprintf(err, n,
                            "search: unknown key '%s' (expected trials, time-budget, sampler, "
                            "tune-seed, prune, reduction-factor, min-resource, space%s)",
                            key, compare ? ", methods" : ""),
                   -1;
        }
    }
    if (compare && !json_object_get(search, "methods"))
        return snprintf(err, n,
                        "search: methods: required for a compare job ([\"lora\", \"qlora\"])"),
               -1;
    return 0;
}

enum MHD_Result lt_jobs_create(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "kind") && strcmp(key, "dataset") && strcmp(key, "model") &&
            strcmp(key, "options") && strcmp(key, "name") && strcmp(key, "search"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected kind, "
                                  "dataset, model, options, name, search)",
                                  key);
    }
    json_t *kind = json_object_get(body, "kind");
    if (kind && !json_is_string(kind))
        return lt_reply_error(c, 400, "bad_request",
                              "kind: expected a string (\"train\", \"tune\" or \"compare\")");
    const char *kd = kind ? json_string_value(kind) : "train";
    if (strcmp(kd, "train") && strcmp(kd, "tune") && strcmp(kd, "compare"))
        return lt_reply_error(c, 400, "bad_request",
                              "kind: expected \"train\", \"tune\" or \"compare\", got '%s'", kd);
    int hpo = strcmp(kd, "train") != 0;
    json_t *search = json_object_get(body, "search");
    if (search && !hpo)
        return lt_reply_error(c, 400, "bad_request",
                              "search: only tune and compare jobs take it (kind is train)");
    char serr[256];
    if (hpo && check_search(search, !strcmp(kd, "compare"), serr, sizeof serr))
        return lt_reply_error(c, 400, "bad_request", "%s", serr);
    if (!strcmp(kd, "compare") && json_object_get(json_object_get(body, "options"), "method"))
        return lt_reply_error(c, 400, "bad_option",
                              "options: method: a compare job takes its methods in "
                              "search.methods");
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
    lt_train_config ptc;
    lt_train_plan_t pp;
    int64_t pbudget;
    const char *pwhy;
    int64_t planned = lt_plan_run_opts(&o, &ptc, &pp, &pbudget, &pwhy) ? 0 : pp.peak_bytes;
    json_t *dv = lt_dataset_version(s, json_string_value(ds));
    pthread_mutex_lock(&s->mu);
    j->seq = s->next_seq;
    j->planned = planned;
    j->record = json_pack("{s:s,s:s,s:s,s:O,s:O,s:o,s:O?,s:I,s:f}", "id", j->id, "kind", kd,
                          "status", "queued", "dataset", ds, "model", model, "options", given,
                          "name", name, "seq", (json_int_t)j->seq, "created", lt_serve_now());
    if (j->record && hpo)
        json_object_set_new(j->record, "search", search ? json_deep_copy(search) : json_object());
    if (j->record)
        json_object_set_new(j->record, "planned_peak_bytes",
                            planned > 0 ? json_integer(planned) : json_null());
    if (j->record) /* the data version it trains on: the dataset's DVC md5 */
        json_object_set_new(j->record, "data_version", dv ? dv : json_null());
    else
        json_decref(dv);
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
    } else if (j->pid > 0) {
        kill(j->pid, SIGINT); /* `loratune tune` ends its trial; the worker ends it cancelled */
    } else if (j->run) {
        lt_run_request_stop(j->run); /* the worker ends it as cancelled */
    }
    json_t *o = json_deep_copy(j->record);
    json_object_set_new(o, "cancel_requested", json_true());
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_ACCEPTED, o);
}

/* Queues an interrupted or cancelled job again, to continue from its newest checkpoint (the
 * run's bit-exact resume); it keeps its place in the queue (its seq). */
/* Under s->mu: queues an interrupted or cancelled job again, to continue from its newest
 * checkpoint (a tune job: its study); 0, or the HTTP status (409: it cannot; 500: its record
 * could not be written) with msg saying why. */
static int requeue(lt_server *s, lt_job *j, char *msg, size_t n) {
    lt_job_status st = j->status;
    char out[LT_SERVE_PATH + 64], ck[LT_SERVE_PATH + 128];
    snprintf(out, sizeof out, "%s/jobs/%s/out", s->work, j->id);
    if (st != JOB_INTERRUPTED && st != JOB_CANCELLED) {
        snprintf(msg, n, "job '%s' is %s: only an interrupted or cancelled job resumes", j->id,
                 lt_job_status_name(st));
        return MHD_HTTP_CONFLICT;
    }
    const char *kind = job_kind(j);
    if (!strcmp(kind, "compare")) {
        snprintf(msg, n,
                 "job '%s' is a compare job: `loratune compare` does not resume (start a new one)",
                 j->id);
        return MHD_HTTP_CONFLICT;
    }
    snprintf(ck, sizeof ck, "%s/study.json", out);
    if (!strcmp(kind, "tune") ? !lt_path_exists(ck) : lt_checkpoint_resolve(out, ck, sizeof ck)) {
        snprintf(msg, n,
                 !strcmp(kind, "tune") ? "job '%s' has no study to resume"
                                       : "job '%s' has no checkpoint to resume from",
                 j->id);
        return MHD_HTTP_CONFLICT;
    }
    j->cancel_requested = 0;
    json_object_set_new(j->record, "resume", json_true());
    json_object_del(j->record, "finished");
    json_object_del(j->record, "error");
    json_object_del(j->record, "result");
    json_object_del(j->record, "best");
    const char *base = strrchr(ck, '/');
    char ev[LT_SERVE_PATH + 160];
    if (!strcmp(kind, "tune"))
        snprintf(ev, sizeof ev, "resuming the study (`loratune tune --resume`)");
    else
        snprintf(ev, sizeof ev, "resuming from checkpoint %s", base ? base + 1 : ck);
    job_event(s, j, "queued", ev);
    set_status(s, j, JOB_QUEUED);
    if (persist(s, j)) {
        snprintf(msg, n, "%s", lt_errmsg());
        return 500;
    }
    return 0;
}

enum MHD_Result lt_job_resume(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    if (!j) {
        pthread_mutex_unlock(&s->mu);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    }
    char msg[LT_SERVE_PATH + 200];
    int code = requeue(s, j, msg, sizeof msg);
    json_t *o = code ? NULL : json_deep_copy(j->record);
    pthread_mutex_unlock(&s->mu);
    if (code)
        return lt_reply_error(c, (unsigned)code, code == 500 ? "io_error" : "conflict", "%s", msg);
    return lt_reply_json(c, MHD_HTTP_ACCEPTED, o);
}

/* --resume-interrupted: every interrupted job with a checkpoint (a study) queued again, as
 * POST .../resume does; one that cannot resume stays interrupted, with an event saying why. */
static void resume_interrupted(lt_server *s) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_jobs; i++) {
        lt_job *j = s->jobs[i];
        if (j->status != JOB_INTERRUPTED) continue;
        char msg[LT_SERVE_PATH + 200];
        if (requeue(s, j, msg, sizeof msg)) job_event(s, j, "interrupted", msg);
    }
    pthread_mutex_unlock(&s->mu);
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

/* ---- a tune / compare job's studies ------------------------------------------------------ */
enum MHD_Result lt_job_study(lt_server *s, struct MHD_Connection *c, const char *id) {
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    char dirs[8][LT_SERVE_PATH + 96];
    const char *names[8];
    char mnames[8][16];
    int n = 0;
    json_t *result = NULL;
    const char *kind = "train";
    if (j) {
        kind = job_kind(j);
        n = strcmp(kind, "train") ? study_dirs(s, j, dirs, names) : 0;
        for (int i = 0; i < n; i++) /* the record may change once we unlock */
            snprintf(mnames[i], sizeof mnames[i], "%s", names[i]);
        result = json_deep_copy(json_object_get(j->record, "result"));
    }
    char kbuf[16];
    snprintf(kbuf, sizeof kbuf, "%s", kind);
    pthread_mutex_unlock(&s->mu);
    if (!j) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    if (!strcmp(kbuf, "train")) {
        json_decref(result);
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' is a train job: only tune and compare jobs have a study",
                              id);
    }
    json_t *studies = json_array();
    for (int d = 0; d < n; d++) {
        char p[LT_SERVE_PATH + 160];
        snprintf(p, sizeof p, "%.2000s/study.json", dirs[d]);
        json_t *st = json_load_file(p, 0, NULL); /* replaced atomically: a whole version */
        if (!json_is_object(st)) {
            json_decref(st);
            st = json_null(); /* not started yet */
        }
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(st, "trials"), i, t) {
            snprintf(p, sizeof p, "%.2000s/trials/%04lld/trial.json", dirs[d],
                     (long long)json_integer_value(json_object_get(t, "trial")));
            json_t *info = json_load_file(p, 0, NULL);
            if (json_is_object(info)) json_object_set(t, "info", info);
            json_decref(info);
        }
        json_t *clean = lt_serve_scrub_json(s, st);
        json_decref(st);
        json_t *one = json_pack("{s:o}", "study", clean ? clean : json_null());
        if (one && *mnames[d]) json_object_set_new(one, "method", json_string(mnames[d]));
        json_array_append_new(studies, one);
    }
    return lt_reply_json(c, MHD_HTTP_OK,
                         json_pack("{s:s,s:s,s:o,s:o}", "job", id, "kind", kbuf, "studies", studies,
                                   "result", result ? result : json_null()));
}

/* ---- downloads -------------------------------------------------------------------------- */
/* Under s->mu: the folder a done job's downloads come from: OUT for a train job, the best
 * trial's folder under OUT for a tune / compare job (its record's best.dir, made by the
 * worker from the study: never from a client). 0 ok; -1 none (no best trial). */
int lt_job_files_dir(lt_server *s, const lt_job *j, char *out, size_t n) {
    if (!strcmp(job_kind(j), "train")) {
        snprintf(out, n, "%s/jobs/%s/out", s->work, j->id);
        return 0;
    }
    const char *rel = json_string_value(json_object_get(json_object_get(j->record, "best"), "dir"));
    if (!rel) return -1;
    snprintf(out, n, "%s/jobs/%s/out/%s", s->work, j->id, rel);
    return 0;
}

enum MHD_Result lt_job_download(lt_server *s, struct MHD_Connection *c, const char *id,
                                const char *file) {
    char dir[LT_SERVE_PATH + 96];
    pthread_mutex_lock(&s->mu);
    lt_job *j = find_job(s, id);
    lt_job_status st = j ? j->status : JOB_FAILED;
    int no_best = j && lt_job_files_dir(s, j, dir, sizeof dir);
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
    if (no_best)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' has no complete trial: no adapter to download", id);
    char p[LT_SERVE_PATH + 256];
    snprintf(p, sizeof p, "%s/%s", dir, k_files[i].rel);
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
    json_t *dv = lt_dataset_version(s, dataset);
    pthread_mutex_lock(&s->mu);
    j->seq = s->next_seq;
    j->record = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:s?,s:I,s:f}", "id", j->id, "kind", "train",
                          "status", "queued", "dataset", dataset, "model", model, "options",
                          options ? json_deep_copy(options) : json_object(), "name", name, "seq",
                          (json_int_t)j->seq, "created", lt_serve_now());
    if (j->record && extra) json_object_update(j->record, (json_t *)extra);
    if (j->record)
        json_object_set_new(j->record, "data_version", dv ? dv : json_null());
    else
        json_decref(dv);
    if (j->record) plan_job(s, j); /* under s->mu: retraining jobs are rare */
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
