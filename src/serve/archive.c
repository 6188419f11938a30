/* archive.c - a done job's adapter as one zip (libarchive): the files of OUT a client can
 * download one by one (PEFT safetensors + config, llama.cpp GGUF, mlx-lm folder,
 * run_config.yaml), under their OUT names (a tune / compare job's: its best trial's folder),
 * so the unpacked folder is what `loratune train` wrote (PEFT's from_pretrained and mlx-lm read it as it is). Made once per job into
 * WORK/jobs/<id>/adapter.zip (through a temp file and rename, so two requests at once never
 * serve half a file) and streamed from disk after. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "serve_internal.h"
#include "web.h"

/* under OUT; those a job did not write are left out */
static const char *const k_members[] = {
    "adapter_model.safetensors",   "adapter_config.json",        "adapter.gguf",
    "mlx-lm/adapters.safetensors", "mlx-lm/adapter_config.json", "run_config.yaml",
};
#define N_MEMBERS (sizeof k_members / sizeof k_members[0])

/* Adds the file at path as name; 0 ok, 1 missing (skipped), -1 error. */
static int add_file(struct archive *a, const char *path, const char *name) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return 1;
    }
    struct archive_entry *e = archive_entry_new();
    if (!e) {
        close(fd);
        return -1;
    }
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, sb.st_size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, sb.st_mtime, 0);
    int rc = archive_write_header(a, e) == ARCHIVE_OK ? 0 : -1;
    archive_entry_free(e);
    char buf[1 << 16];
    ssize_t n;
    while (!rc && (n = read(fd, buf, sizeof buf)) > 0)
        if (archive_write_data(a, buf, (size_t)n) != n) rc = -1;
    if (!rc && n < 0) rc = -1;
    close(fd);
    return rc;
}

/* Writes the zip of job id's OUT to dst; 0 ok, else a message in err. */
static int make_zip(const char *out_dir, const char *dst, char *err, size_t errn) {
    struct archive *a = archive_write_new();
    if (!a) return snprintf(err, errn, "out of memory"), -1;
    int rc = 0, n_files = 0;
    if (archive_write_set_format_zip(a) != ARCHIVE_OK ||
        archive_write_open_filename(a, dst) != ARCHIVE_OK) {
        snprintf(err, errn, "could not start the archive: %s", archive_error_string(a));
        rc = -1;
    }
    for (size_t i = 0; !rc && i < N_MEMBERS; i++) {
        char p[LT_SERVE_PATH + 256];
        snprintf(p, sizeof p, "%s/%s", out_dir, k_members[i]);
        int r = add_file(a, p, k_members[i]);
        if (r < 0) {
            snprintf(err, errn, "could not add %s to the archive: %s", k_members[i],
                     archive_error_string(a) ? archive_error_string(a) : "read error");
            rc = -1;
        }
        n_files += r == 0;
    }
    if (archive_write_close(a) != ARCHIVE_OK && !rc) {
        snprintf(err, errn, "could not finish the archive: %s", archive_error_string(a));
        rc = -1;
    }
    archive_write_free(a);
    if (!rc && !n_files) {
        snprintf(err, errn, "the job wrote no adapter files");
        rc = 1;
    }
    return rc;
}

enum MHD_Result lt_job_archive(lt_server *s, struct MHD_Connection *c, const char *id) {
    char dir[LT_SERVE_PATH + 64], zip[LT_SERVE_PATH + 96], out[LT_SERVE_PATH + 96];
    pthread_mutex_lock(&s->mu);
    lt_job_status st = JOB_FAILED;
    int found = 0, no_best = 0;
    for (int i = 0; i < s->n_jobs && !found; i++)
        if (!strcmp(s->jobs[i]->id, id)) {
            found = 1;
            st = s->jobs[i]->status;
            no_best = lt_job_files_dir(s, s->jobs[i], out, sizeof out); /* a tune's best trial */
        }
    pthread_mutex_unlock(&s->mu);
    if (!found) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no job '%s'", id);
    if (st != JOB_DONE)
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "conflict", "job '%s' is %s, not done", id,
                              lt_job_status_name(st));
    if (no_best)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                              "job '%s' has no complete trial: no adapter to download", id);
    snprintf(dir, sizeof dir, "%s/jobs/%s", s->work, id);
    snprintf(zip, sizeof zip, "%s/adapter.zip", dir);
    int fd = open(zip, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char tmp[LT_SERVE_PATH + 160], rnd[LT_SERVE_ID_LEN + 1], err[512];
        if (lt_serve_new_id("zip_", rnd))
            return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "no random id");
        snprintf(tmp, sizeof tmp, "%s/%s.part", dir, rnd);
        int r = make_zip(out, tmp, err, sizeof err);
        if (r || lt_io_rename(tmp, zip)) {
            unlink(tmp);
            char *msg = lt_serve_scrub(s, r ? err : "could not store the archive");
            enum MHD_Result ret =
                r > 0 ? lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "job '%s': %s", id,
                                       msg ? msg : err)
                      : lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                                       "job '%s': %s", id, msg ? msg : err);
            lt_free(msg);
            return ret;
        }
        fd = open(zip, O_RDONLY | O_CLOEXEC);
    }
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        if (fd >= 0) close(fd);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                              "job '%s': could not read its archive", id);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd); /* takes fd */
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    char disp[160];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s-adapter.zip\"", id);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/zip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
