/* merged.c - a done job's model with its adapter merged in, as a download: what `loratune fuse
 * --model BASE --adapter OUT` writes (lt_model_load, lt_adapter_load, lt_adapter_merge, then
 * lt_model_save_hf or lt_model_save_gguf), a Hugging Face folder in one zip or a GGUF file.
 * A tune / compare job's is its best trial's adapter merged.
 *
 * Made once per job, format and dtype into WORK/jobs/<id>/merged-<format>-<dtype>.<zip|gguf>
 * (written under a temp name and renamed, so a request never streams half a file) and streamed
 * from disk after. One merge at a time (s->merge_mu): each loads the whole base model into the
 * server's memory. The HF folder is written into WORK/jobs/<id>/merged-tmp-<rnd>/, zipped
 * (libarchive) and removed. */
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

/* Removes dir's files and dir (one level: what lt_model_save_hf writes). */
static void remove_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[LT_SERVE_PATH + 512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Writes the merged model of base + adapter to dst (a zip of the HF folder, or a GGUF). */
static lt_status make_merged(const char *base, const char *adapter, int gguf, lt_dtype dt,
                             const char *job_dir, const char *dst) {
    lt_model *m = NULL;
    lt_adapter *ad = NULL;
    char tmpdir[LT_SERVE_PATH + 160], rnd[LT_SERVE_ID_LEN + 1];
    lt_status st = lt_serve_new_id("tmp_", rnd);
    snprintf(tmpdir, sizeof tmpdir, "%s/merged-%s", job_dir, rnd);
    if (!st) st = lt_model_load(base, NULL, &m);
    if (!st) st = lt_adapter_load(adapter, &m->config, &ad);
    if (!st) st = lt_adapter_merge(m, ad);
    if (!st && gguf) st = lt_model_save_gguf(m, base, dst, dt);
    if (!st && !gguf) {
        st = lt_model_save_hf(m, base, tmpdir, dt);
        if (!st) st = zip_folder(tmpdir, dst);
        remove_folder(tmpdir);
    }
    lt_adapter_free(ad);
    lt_model_free(m);
    return st;
}

enum MHD_Result lt_job_merged(lt_server *s, struct MHD_Connection *c, const char *id) {
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
    int gguf = 0;
    if (fmt && !strcmp(fmt, "gguf"))
        gguf = 1;
    else if (fmt && strcmp(fmt, "hf"))
        return lt_reply_error(c, 400, "bad_request", "format: expected hf or gguf, got '%.40s'",
                              fmt);
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
    char adapter[LT_SERVE_PATH + 160], base[LT_SERVE_PATH + 300];
    snprintf(adapter, sizeof adapter, "%s/adapter_config.json", out);
    if (!lt_path_exists(adapter))
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' wrote no adapter to merge (a full fine-tune's model is "
                              "its output itself)",
                              id);
    if (lt_model_path(s, model_name, base, sizeof base))
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s': its base model '%s' is no longer in the models folder", id,
                              model_name);
    char job_dir[LT_SERVE_PATH + 64], dst[LT_SERVE_PATH + 128];
    snprintf(job_dir, sizeof job_dir, "%s/jobs/%s", s->work, id);
    snprintf(dst, sizeof dst, "%s/merged-%s-%s.%s", job_dir, gguf ? "gguf" : "hf", dts,
             gguf ? "gguf" : "zip");
    pthread_mutex_lock(&s->merge_mu);
    int fd = open(dst, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char tmp[LT_SERVE_PATH + 200], rnd[LT_SERVE_ID_LEN + 1];
        lt_status st = lt_serve_new_id("part_", rnd);
        snprintf(tmp, sizeof tmp, "%s/%s.%s", job_dir, rnd, gguf ? "gguf" : "zip");
        if (!st) st = make_merged(base, adapter, gguf, dt, job_dir, tmp);
        if (!st) st = lt_io_rename(tmp, dst);
        if (st) {
            unlink(tmp);
            pthread_mutex_unlock(&s->merge_mu);
            char *msg = lt_serve_scrub(s, lt_errmsg());
            enum MHD_Result r = lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                                               "job '%s': merging its adapter: %s", id,
                                               msg ? msg : "out of memory");
            lt_free(msg);
            return r;
        }
        fd = open(dst, O_RDONLY | O_CLOEXEC);
    }
    pthread_mutex_unlock(&s->merge_mu);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        if (fd >= 0) close(fd);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                              "job '%s': could not read its merged model", id);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd); /* takes fd */
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    char disp[200];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s-merged-%s.%s\"", id, dts,
             gguf ? "gguf" : "zip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            gguf ? "application/octet-stream" : "application/zip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
