/* merged.c - a done job's model with its adapter merged in, as a download: what `loratune fuse
 * --model BASE --adapter OUT` writes (lt_model_load, lt_adapter_load, lt_adapter_merge, then
 * lt_model_save_hf or lt_model_save_gguf), a Hugging Face folder in one zip or a GGUF file.
 * A tune / compare job's is its best trial's adapter merged; a full fine-tune's is its trained
 * model itself (its output folder loaded and written in the format and dtype asked for).
 *
 * Made once per job, format and dtype into WORK/jobs/<id>/merged-<format>-<dtype>.<zip|gguf>
 * (written under a temp name and renamed, so a request never streams half a file) and streamed
 * from disk after. The making runs on a thread of its own (a merge task), never in a request:
 * POST (or a GET that finds no file) starts it and answers 202 with its progress; GET streams
 * the file once it is there (?wait=true: waits for it first, the old blocking GET). Tasks live
 * in s->merges under s->merge_mu (s->merge_cv broadcast when one ends); one task makes a model
 * at a time (s->merge_run_mu): each loads the whole model into the server's memory. The HF
 * folder is written into WORK/jobs/<id>/merged-tmp_<rnd>/, zipped (libarchive) and removed. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "loratune/adapter.h"
#include "loratune/export.h"
#include "loratune/model.h"
#include "serve_internal.h"

/* Adds every regular file of dir (not dot files: the export's lock) to a new zip at dst under
 * its own name; LT_OK or an error naming what failed. */
static lt_status zip_folder(const char *dir, const char *dst) {
    struct archive *a = archive_write_new();
    if (!a) return lt_error(LT_ERR_NOMEM, "out of memory");
    lt_status st = LT_OK;
    if (archive_write_set_format_zip(a) != ARCHIVE_OK ||
        archive_write_open_filename(a, dst) != ARCHIVE_OK)
        st = lt_error(LT_ERR_IO, "could not start the archive: %s", archive_error_string(a));
    DIR *d = st ? NULL : opendir(dir);
    if (!st && !d) st = lt_error(LT_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char *buf = st ? NULL : lt_malloc(1 << 16);
    if (!st && !buf) st = lt_error(LT_ERR_NOMEM, "out of memory");
    while (!st && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[LT_SERVE_PATH + 512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
            if (fd >= 0) close(fd);
            continue;
        }
        struct archive_entry *en = archive_entry_new();
        if (!en) {
            close(fd);
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            break;
        }
        archive_entry_set_pathname(en, e->d_name);
        archive_entry_set_size(en, sb.st_size);
        archive_entry_set_filetype(en, AE_IFREG);
        archive_entry_set_perm(en, 0644);
        archive_entry_set_mtime(en, sb.st_mtime, 0);
        if (archive_write_header(a, en) != ARCHIVE_OK)
            st = lt_error(LT_ERR_IO, "archive %s: %s", e->d_name, archive_error_string(a));
        archive_entry_free(en);
        ssize_t n = 0;
        while (!st && (n = read(fd, buf, 1 << 16)) > 0)
            if (archive_write_data(a, buf, (size_t)n) != n)
                st = lt_error(LT_ERR_IO, "archive %s: %s", e->d_name, archive_error_string(a));
        if (!st && n < 0) st = lt_error(LT_ERR_IO, "%s: %s", p, strerror(errno));
        close(fd);
    }
    if (d) closedir(d);
    lt_free(buf);
    if (archive_write_close(a) != ARCHIVE_OK && !st)
        st = lt_error(LT_ERR_IO, "could not finish the archive: %s", archive_error_string(a));
    archive_write_free(a);
    return st;
}

/* A merge task: one (job, format, dtype) being made. */
struct lt_merge {
    struct lt_merge *next;
    lt_server *s;
    char key[LT_SERVE_PATH + 128]; /* its destination path */
    char base[LT_SERVE_PATH + 300], adapter[LT_SERVE_PATH + 160], job_dir[LT_SERVE_PATH + 64];
    int gguf, full;
    lt_dtype dt;
    /* under s->merge_mu */
    int state;         /* 0 making, 1 done (the file is there), 2 failed (err) */
    const char *phase; /* static: "queued", "loading", "merging", "writing", "archiving" */
    double started;
    char err[1024];
    pthread_t th;
};

static void set_phase(lt_merge *t, const char *phase) {
    pthread_mutex_lock(&t->s->merge_mu);
    t->phase = phase;
    pthread_mutex_unlock(&t->s->merge_mu);
}

/* Writes the merged model of t (base + adapter, or a full fine-tune's output folder alone)
 * to dst (a zip of the HF folder, or a GGUF). */
static lt_status make_merged(lt_merge *t, const char *dst) {
    lt_model *m = NULL;
    lt_adapter *ad = NULL;
    char tmpdir[LT_SERVE_PATH + 160], rnd[LT_SERVE_ID_LEN + 1];
    lt_status st = lt_serve_new_id("tmp_", rnd);
    snprintf(tmpdir, sizeof tmpdir, "%s/merged-%s", t->job_dir, rnd);
    set_phase(t, "loading");
    if (!st) st = lt_model_load(t->base, NULL, &m);
    if (!st && !t->full) {
        set_phase(t, "merging");
        st = lt_adapter_load(t->adapter, &m->config, &ad);
        if (!st) st = lt_adapter_merge(m, ad);
    }
    set_phase(t, "writing");
    if (!st && t->gguf) st = lt_model_save_gguf(m, t->base, dst, t->dt);
    if (!st && !t->gguf) {
        st = lt_model_save_hf(m, t->base, tmpdir, t->dt);
        set_phase(t, "archiving");
        if (!st) st = zip_folder(tmpdir, dst);
        lt_serve_remove_flat_dir(tmpdir);
    }
    lt_adapter_free(ad);
    lt_model_free(m);
    return st;
}

static void *merge_main(void *arg) {
    lt_merge *t = arg;
    lt_server *s = t->s;
    pthread_mutex_lock(&s->merge_run_mu); /* one model in memory at a time */
    char tmp[LT_SERVE_PATH + 200], rnd[LT_SERVE_ID_LEN + 1];
    lt_status st = lt_serve_new_id("part_", rnd);
    snprintf(tmp, sizeof tmp, "%s/%s.%s", t->job_dir, rnd, t->gguf ? "gguf" : "zip");
    if (!st) st = make_merged(t, tmp);
    if (!st) st = lt_io_rename(tmp, t->key);
    char *msg = st ? lt_serve_scrub(s, lt_errmsg()) : NULL;
    if (st) unlink(tmp);
    pthread_mutex_unlock(&s->merge_run_mu);
    pthread_mutex_lock(&s->merge_mu);
    t->state = st ? 2 : 1;
    if (st) snprintf(t->err, sizeof t->err, "%s", msg ? msg : "out of memory");
    pthread_cond_broadcast(&s->merge_cv);
    pthread_mutex_unlock(&s->merge_mu);
    lt_free(msg);
    return NULL;
}

void lt_merges_clean(const char *job_dir) {
    DIR *d = opendir(job_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[LT_SERVE_PATH + 512];
        snprintf(p, sizeof p, "%s/%s", job_dir, e->d_name);
        if (!strncmp(e->d_name, "part_", 5))
            unlink(p);
        else if (!strncmp(e->d_name, "merged-tmp_", 11))
            lt_serve_remove_flat_dir(p);
    }
    closedir(d);
}

void lt_merges_shutdown(lt_server *s) {
    pthread_mutex_lock(&s->merge_mu);
    lt_merge *t = s->merges;
    s->merges = NULL;
    pthread_mutex_unlock(&s->merge_mu);
    while (t) { /* a merge cannot be cut short: the stop waits for it */
        lt_merge *n = t->next;
        pthread_join(t->th, NULL);
        lt_free(t);
        t = n;
    }
}

/* Under s->merge_mu: the task making dst, or NULL. */
static lt_merge *find_task(lt_server *s, const char *dst, lt_merge ***link) {
    lt_merge **p = &s->merges;
    while (*p && strcmp((*p)->key, dst))
        p = &(*p)->next;
    if (link) *link = p;
    return *p;
}

/* Under s->merge_mu: takes a finished task out of the list and frees it. */
static void drop_task(lt_server *s, lt_merge *t) {
    lt_merge **p;
    if (find_task(s, t->key, &p) != t) return;
    *p = t->next;
    pthread_join(t->th, NULL); /* it has ended (state != 0): at once */
    lt_free(t);
}

/* The 202 / 200 answer about a merge: its state and where to get it. */
static enum MHD_Result reply_state(struct MHD_Connection *c, unsigned status, const char *id,
                                   const char *fmt, const char *dts, const char *state,
                                   const char *phase, double started, int64_t size, int full) {
    char loc[200];
    snprintf(loc, sizeof loc, "/api/jobs/%s/merged?format=%s&dtype=%s", id, fmt, dts);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "job", id, "format", fmt, "dtype", dts,
                          "state", state, "source", full ? "full" : "adapter", "location", loc);
    if (phase) json_object_set_new(o, "phase", json_string(phase));
    if (started > 0) {
        json_object_set_new(o, "started", json_real(started));
        json_object_set_new(o, "elapsed_s", json_real(lt_serve_now() - started));
    }
    if (size >= 0) json_object_set_new(o, "size", json_integer(size));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) return MHD_NO;
    size_t n = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
    if (status == MHD_HTTP_ACCEPTED) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "2");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result lt_job_merged(lt_server *s, struct MHD_Connection *c, const char *id, int post) {
    char out[LT_SERVE_PATH + 96], model_name[300] = "";
    pthread_mutex_lock(&s->mu);
    lt_job *j = NULL;
    for (int i = 0; i < s->n_jobs && !j; i++)
        if (!strcmp(s->jobs[i]->id, id)) j = s->jobs[i];
    lt_job_status jst = j ? j->status : JOB_FAILED;
    int no_best = j && lt_job_files_dir(s, j, out, sizeof out);
    if (j)
        snprintf(model_name, sizeof model_name, "%s",
                 json_string_value(json_object_get(j->record, "model"))
                     ? json_string_value(json_object_get(j->record, "model"))
                     : "");
    pthread_mutex_unlock(&s->mu);
    if (!j) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    if (jst != JOB_DONE)
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict", "job '%s' is %s, not done", id,
                              lt_job_status_name(jst));
    if (no_best)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' has no complete trial: no adapter to merge", id);
    /* the job first (404 / 409), then the format: a schema-valid pair the writers do not
       make (hf q8_0, gguf bf16) is a 400 only for a job that could be merged */
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    const char *dts = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "dtype");
    const char *wait = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
    int gguf = 0;
    if (fmt && !strcmp(fmt, "gguf"))
        gguf = 1;
    else if (fmt && strcmp(fmt, "hf"))
        return lt_reply_error(c, 400, "bad_request", "format: expected hf or gguf, got '%.40s'",
                              fmt);
    fmt = gguf ? "gguf" : "hf";
    if (!dts) dts = gguf ? "f16" : "f32"; /* loratune fuse's defaults */
    lt_dtype dt;
    if (!strcmp(dts, "f32"))
        dt = LT_DTYPE_F32;
    else if (!strcmp(dts, "f16"))
        dt = LT_DTYPE_F16;
    else if (!strcmp(dts, "bf16") && !gguf)
        dt = LT_DTYPE_BF16;
    else if (!strcmp(dts, "q8_0") && gguf)
        dt = LT_DTYPE_Q8_0;
    else
        return lt_reply_error(
            c, 400, "bad_request", "dtype: expected %s for format %s, got '%.40s'",
            gguf ? "f32, f16 or q8_0" : "f32, bf16 or f16", gguf ? "gguf" : "hf", dts);
    int waiting = 0;
    if (wait && !strcmp(wait, "true"))
        waiting = !post;
    else if (wait && strcmp(wait, "false"))
        return lt_reply_error(c, 400, "bad_request", "wait: expected true or false, got '%.40s'",
                              wait);
    char adapter[LT_SERVE_PATH + 160], base[LT_SERVE_PATH + 300], conf[LT_SERVE_PATH + 160];
    snprintf(adapter, sizeof adapter, "%s/adapter_config.json", out);
    snprintf(conf, sizeof conf, "%s/config.json", out);
    int full = 0;
    if (lt_path_exists(adapter)) {
        if (lt_model_path(s, model_name, base, sizeof base))
            return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                                  "job '%s': its base model '%s' is no longer in the models "
                                  "folder",
                                  id, model_name);
    } else if (lt_path_exists(conf)) { /* a full fine-tune: OUT is the trained model */
        full = 1;
        snprintf(base, sizeof base, "%s", out);
    } else {
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' wrote neither an adapter nor a model to download", id);
    }
    char job_dir[LT_SERVE_PATH + 64], dst[LT_SERVE_PATH + 128];
    snprintf(job_dir, sizeof job_dir, "%s/jobs/%s", s->work, id);
    snprintf(dst, sizeof dst, "%s/merged-%s-%s.%s", job_dir, fmt, dts, gguf ? "gguf" : "zip");

    pthread_mutex_lock(&s->merge_mu);
    int fd;
    for (;;) {
        fd = open(dst, O_RDONLY | O_CLOEXEC);
        lt_merge *t = find_task(s, dst, NULL);
        if (t && t->state == 1) drop_task(s, t), t = NULL; /* done: the file answers */
        if (fd >= 0) break;
        if (t && t->state == 2) { /* failed: said once, then the next request tries again */
            char err[1100];
            snprintf(err, sizeof err, "%s", t->err);
            drop_task(s, t);
            pthread_mutex_unlock(&s->merge_mu);
            return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                                  "job '%s': making its merged model: %s", id, err);
        }
        if (!t) { /* start it */
            t = lt_calloc(1, sizeof *t);
            if (!t) {
                pthread_mutex_unlock(&s->merge_mu);
                return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                                      "out of memory");
            }
            t->s = s;
            snprintf(t->key, sizeof t->key, "%s", dst);
            snprintf(t->base, sizeof t->base, "%s", base);
            snprintf(t->adapter, sizeof t->adapter, "%s", adapter);
            snprintf(t->job_dir, sizeof t->job_dir, "%s", job_dir);
            t->gguf = gguf;
            t->full = full;
            t->dt = dt;
            t->phase = "queued";
            t->started = lt_serve_now();
            if (pthread_create(&t->th, NULL, merge_main, t)) {
                lt_free(t);
                pthread_mutex_unlock(&s->merge_mu);
                return lt_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                                      "could not start the merge: no thread");
            }
            t->next = s->merges;
            s->merges = t;
        }
        if (!waiting || s->stopping) {
            const char *phase = t->phase;
            double started = t->started;
            pthread_mutex_unlock(&s->merge_mu);
            return reply_state(c, MHD_HTTP_ACCEPTED, id, fmt, dts, "making", phase, started, -1,
                               full);
        }
        pthread_cond_wait(&s->merge_cv, &s->merge_mu); /* ?wait=true */
    }
    pthread_mutex_unlock(&s->merge_mu);
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                              "job '%s': could not read its merged model", id);
    }
    if (post) {
        close(fd);
        return reply_state(c, MHD_HTTP_OK, id, fmt, dts, "ready", NULL, -1, (int64_t)sb.st_size,
                           full);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd); /* takes fd */
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    char disp[200];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s-%s-%s.%s\"", id,
             full ? "model" : "merged", dts, gguf ? "gguf" : "zip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            gguf ? "application/octet-stream" : "application/zip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
