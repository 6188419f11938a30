/* datasets.c - the server's datasets and models: streamed uploads into WORK/datasets/<id>/
 * (never whole in memory; size limit per upload and a quota over all of them), each versioned
 * as `loratune data add` versions data (dvc.h: WORK is a DVC repository outside git, the
 * upload's content goes into WORK/.dvc/cache and data.jsonl.dvc is written next to it),
 * listing (uploads of one name numbered as versions), validation through the data layer
 * (lt_data_open: the same checks and FILE:LINE errors as `loratune data check`, the file named
 * by the dataset's name instead of the server's path), and the preview: the records tokenized
 * as a run tokenizes them, decoded back with the loss mask, and per-record token statistics.
 *
 * Invariants: a dataset folder exists only complete (the upload is written to
 * WORK/uploads/<id>.part, fsynced, and renamed into place; meta.json written atomically last,
 * and a folder without meta.json is not listed); s->used_bytes counts stored datasets plus the
 * bytes of uploads in flight, and an upload past the quota is cut off and removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/dvc.h"
#include "loratune/model.h"
#include "loratune/rank_hint.h"
#include "loratune/tokenizer.h"
#include "serve_internal.h"

#define LT_SERVE_CHECK_ON_UPLOAD_MAX (64ll << 20)
#define LT_SERVE_PREVIEW_MAX 50      /* records a preview renders at most */
#define LT_SERVE_PREVIEW_TOKENS 4096 /* tokens of one record it shows at most */

struct lt_upload {
    lt_server *s;
    char id[LT_SERVE_ID_LEN + 1];
    char name[256];
    char tmp[LT_SERVE_PATH];
    int fd;
    int64_t bytes; /* received and counted in s->used_bytes */
    int over;      /* 1: past max_upload, 2: past the quota (the rest is dropped) */
    int io_error;  /* errno of a failed write */
    int first;     /* first non-blank byte ('[' means a JSON list); -1 none yet */
    EVP_MD_CTX *sha;
};


lt_status lt_datasets_init(lt_server *s) {
    char p[LT_SERVE_PATH + 64];
    snprintf(p, sizeof p, "%s/datasets", s->work);
    lt_status st = lt_mkdir_p(p, 0700, NULL);
    if (st) return st;
    /* uploads are versioned as `dvc add` does, in a DVC repository outside git (dvc init --no-scm)
     */
    if ((st = lt_dvc_init_ex(s->work, 1))) return st;
    snprintf(p, sizeof p, "%s/uploads", s->work);
    if ((st = lt_mkdir_p(p, 0700, NULL))) return st;
    DIR *d = opendir(p); /* uploads cut off by a previous server's end */
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char f[LT_SERVE_PATH + 400];
            snprintf(f, sizeof f, "%s/%s", p, e->d_name);
            if (!strncmp(e->d_name, "deleted-", 8))
                lt_serve_remove_flat_dir(f); /* a delete cut off by the previous server's end */
            else
                unlink(f);
        }
        closedir(d);
    }
    snprintf(p, sizeof p, "%s/datasets", s->work);
    d = opendir(p);
    if (!d) return lt_error(LT_ERR_IO, "%s: %s", p, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!lt_serve_id_valid(e->d_name, "ds_")) continue;
        char m[LT_SERVE_PATH + 400];
        snprintf(m, sizeof m, "%s/%s/meta.json", p, e->d_name);
        json_t *meta = json_load_file(m, 0, NULL);
        if (meta) s->used_bytes += json_integer_value(json_object_get(meta, "size"));
        json_decref(meta);
    }
    closedir(d);
    return LT_OK;
}

static json_t *find_dataset(lt_server *s, const char *id);

/* ---- upload ----------------------------------------------------------------------------- */
static void release(lt_upload *u) {
    pthread_mutex_lock(&u->s->mu);
    u->s->used_bytes -= u->bytes;
    pthread_mutex_unlock(&u->s->mu);
    u->bytes = 0;
}

/* A display name: the client's file name without folders, printable ASCII, at most 200. */
static void clean_name(const char *in, char *out, size_t n) {
    const char *b = in ? strrchr(in, '/') : NULL;
    b = b ? b + 1 : in;
    size_t w = 0;
    for (; b && *b && w + 1 < n && w < 200; b++)
        if ((unsigned char)*b >= 0x20 && (unsigned char)*b < 0x7f && *b != '\\') out[w++] = *b;
    out[w] = 0;
    if (!w) snprintf(out, n, "data.jsonl");
}

lt_upload *lt_upload_begin(lt_server *s, const char *name, int64_t content_length, int *too_big,
                           char *err, size_t errn) {
    *too_big = 0;
    if (content_length > s->max_upload) {
        *too_big = 1;
        snprintf(err, errn, "upload of %lld bytes is over the limit of %lld bytes per dataset",
                 (long long)content_length, (long long)s->max_upload);
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    int64_t left = s->quota - s->used_bytes;
    pthread_mutex_unlock(&s->mu);
    if (content_length > left) {
        *too_big = 1;
        snprintf(err, errn,
                 "upload of %lld bytes does not fit the datasets quota (%lld of %lld "
                 "bytes left)",
                 (long long)content_length, (long long)(left > 0 ? left : 0), (long long)s->quota);
        return NULL;
    }
    lt_upload *u = lt_calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errn, "out of memory");
        return NULL;
    }
    u->s = s;
    u->fd = -1;
    u->first = -1;
    clean_name(name, u->name, sizeof u->name);
    u->sha = EVP_MD_CTX_new();
    if (lt_serve_new_id("ds_", u->id) || !u->sha ||
        !EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL)) {
        snprintf(err, errn, "could not start the upload");
        lt_upload_abort(u);
        return NULL;
    }
    snprintf(u->tmp, sizeof u->tmp, "%s/uploads/%s.part", s->work, u->id);
    u->fd = lt_io_open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (u->fd < 0) {
        snprintf(err, errn, "%s: %s", u->tmp, strerror(errno));
        lt_upload_abort(u);
        return NULL;
    }
    return u;
}

void lt_upload_feed(lt_upload *u, const char *data, size_t n) {
    if (u->over || u->io_error) return; /* dropping the rest */
    lt_server *s = u->s;
    if (u->bytes + (int64_t)n > s->max_upload) {
        u->over = 1;
    } else {
        pthread_mutex_lock(&s->mu);
        if (s->used_bytes + (int64_t)n > s->quota)
            u->over = 2;
        else
            s->used_bytes += (int64_t)n;
        pthread_mutex_unlock(&s->mu);
    }
    if (u->over) { /* cut off: the file goes now, the 413 when the body has been read */
        release(u);
        lt_io_close(u->fd);
        u->fd = -1;
        unlink(u->tmp);
        return;
    }
    u->bytes += (int64_t)n;
    for (size_t i = 0; i < n && u->first < 0; i++)
        if (data[i] != ' ' && data[i] != '\n' && data[i] != '\r' && data[i] != '\t')
            u->first = (unsigned char)data[i];
    EVP_DigestUpdate(u->sha, data, n);
    if (lt_io_write_all(u->fd, data, n, u->tmp)) u->io_error = errno ? errno : EIO;
}

void lt_upload_abort(lt_upload *u) {
    if (!u) return;
    if (u->bytes) release(u);
    if (u->fd >= 0) {
        lt_io_close(u->fd);
        unlink(u->tmp);
    }
    EVP_MD_CTX_free(u->sha);
    lt_free(u);
}

/* Replaces every occurrence of path in msg by name. */
static void rename_in(const char *msg, const char *path, const char *name, char *out, size_t n) {
    size_t pl = strlen(path), w = 0;
    for (const char *p = msg; *p && w + 1 < n;) {
        if (pl && !strncmp(p, path, pl)) {
            w += snprintf(out + w, n - w, "%s", name);
            if (w >= n) {
                w = n - 1;
                break;
            }
            p += pl;
        } else {
            out[w++] = *p++;
        }
    }
    out[w] = 0;
}

static json_t *summary_json(const lt_data *d, int max_seq_len) {
    json_t *splits = json_object();
    for (int sp = 0; sp < LT_SPLIT_COUNT; sp++) {
        lt_data_summary m;
        if (lt_data_summary_get(d, (lt_split)sp, &m)) continue;
        json_t *o = json_pack("{s:I,s:s,s:i,s:f,s:i}", "examples", (json_int_t)m.n_examples, "unit",
                              m.counts_tokens ? "tokens" : "characters", "min_len", m.min_len,
                              "mean_len", m.mean_len, "max_len", m.max_len);
        if (m.counts_tokens) {
            json_object_set_new(o, "tokens", json_integer(m.n_tokens));
            json_object_set_new(o, "loss_tokens", json_integer(m.n_loss_tokens));
            json_object_set_new(o, "truncated", json_integer(m.n_truncated));
        }
        json_object_set_new(splits, lt_split_name((lt_split)sp), o);
    }
    return json_pack("{s:b,s:[],s:s,s:i,s:o}", "ok", 1, "errors", "format",
                     lt_data_format_name(lt_data_get_format(d)), "max_seq_len", max_seq_len,
                     "splits", splits);
}

/* Validates the data file: {"ok", "errors": [{"line", "message"}], "format", "splits"}. The
 * data layer stops at the first bad record, so errors holds one entry. */
static json_t *validate(const char *path, const char *name, const char *model,
                        const lt_data_opts *o) {
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    lt_data *d = NULL;
    json_t *res = NULL;
    lt_status st = LT_OK;
    if (model) {
        st = lt_tokenizer_load(model, &tok);
        if (!st) {
            st = lt_model_chat_template(model, tok, &tpl);
            if (st == LT_ERR_NOTFOUND) st = LT_OK;
        }
        if (st) {
            res =
                json_pack("{s:b,s:[{s:n,s:s}]}", "ok", 0, "errors", "line", "message", lt_errmsg());
            goto done;
        }
    }
    st = lt_data_open(path, tok, tpl, o, &d);
    if (st) {
        char msg[2048];
        rename_in(lt_errmsg(), path, name, msg, sizeof msg);
        json_t *line = json_null();
        size_t nl = strlen(name);
        if (!strncmp(msg, name, nl) && msg[nl] == ':') {
            char *end;
            long v = strtol(msg + nl + 1, &end, 10);
            if (end > msg + nl + 1 && *end == ':' && v > 0) {
                json_decref(line);
                line = json_integer(v);
            }
        }
        res = json_pack("{s:b,s:[{s:o,s:s}],s:s}", "ok", 0, "errors", "line", line, "message", msg,
                        "code", lt_status_name(st));
    } else {
        res = summary_json(d, o->max_seq_len);
    }
done:
    lt_data_free(d);
    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    return res;
}

enum MHD_Result lt_upload_end(lt_upload *u, struct MHD_Connection *c) {
    lt_server *s = u->s;
    enum MHD_Result r;
    if (u->over) {
        r = lt_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                           u->over == 1 ? "upload is over the limit of %lld bytes per dataset"
                                        : "upload does not fit the datasets quota of %lld bytes",
                           (long long)(u->over == 1 ? s->max_upload : s->quota));
        lt_upload_abort(u);
        return r;
    }
    if (u->io_error) {
        r = lt_reply_error(c, MHD_HTTP_INSUFFICIENT_STORAGE, "io_error",
                           "could not store the upload: %s", strerror(u->io_error));
        lt_upload_abort(u);
        return r;
    }
    if (!u->bytes) {
        r = lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "empty",
                           "the upload is empty: send the JSONL (or JSON) file as the body");
        lt_upload_abort(u);
        return r;
    }
    char dir[LT_SERVE_PATH + 64], file[LT_SERVE_PATH + 96], meta_path[LT_SERVE_PATH + 96];
    snprintf(dir, sizeof dir, "%s/datasets/%s", s->work, u->id);
    const char *fname = u->first == '[' ? "data.json" : "data.jsonl";
    snprintf(file, sizeof file, "%s/%s", dir, fname);
    snprintf(meta_path, sizeof meta_path, "%s/meta.json", dir);
    if (lt_io_fsync(u->fd) || lt_io_close(u->fd)) {
        u->fd = -1;
        unlink(u->tmp);
        r = lt_reply_error(c, MHD_HTTP_INSUFFICIENT_STORAGE, "io_error",
                           "could not store the upload: %s", strerror(errno));
        lt_upload_abort(u);
        return r;
    }
    u->fd = -1;
    if (lt_mkdir_p(dir, 0700, NULL) || lt_io_rename(u->tmp, file)) {
        unlink(u->tmp);
        r = lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error", "%s", lt_errmsg());
        lt_upload_abort(u);
        return r;
    }
    lt_io_sync_parent(file);
    /* the version: as `loratune data add` (dvc add): the content into WORK/.dvc/cache, and
       data.jsonl.dvc next to it; one at a time with the recorder's versioning */
    char cache[LT_SERVE_PATH + 16];
    snprintf(cache, sizeof cache, "%s/.dvc/cache", s->work);
    lt_dvc_hash h;
    pthread_mutex_lock(&s->rec_mu);
    lt_status vst = lt_dvc_add(file, cache, 1, s->work, &h);
    pthread_mutex_unlock(&s->rec_mu);
    if (vst) {
        char *msg = lt_serve_scrub(s, lt_errmsg());
        unlink(file);
        snprintf(file + strlen(file), sizeof file - strlen(file), ".dvc");
        unlink(file);
        rmdir(dir);
        r = lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                           "could not version the upload: %s", msg ? msg : "out of memory");
        lt_free(msg);
        lt_upload_abort(u);
        return r;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdn = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
    EVP_DigestFinal_ex(u->sha, md, &mdn);
    for (unsigned i = 0; i < mdn; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    lt_data_opts o;
    lt_data_opts_default(&o);
    /* the structure check reads the whole file: done here for uploads a client can wait for;
       a bigger one is checked on POST .../validate */
    json_t *val =
        u->bytes <= LT_SERVE_CHECK_ON_UPLOAD_MAX ? validate(file, u->name, NULL, &o) : json_null();
    char dvc_file[64];
    snprintf(dvc_file, sizeof dvc_file, "datasets/%s/%s.dvc", u->id, fname);
    json_t *meta =
        json_pack("{s:s,s:s,s:s,s:I,s:s,s:f,s:O,s:{s:s,s:I,s:s,s:s}}", "id", u->id, "name", u->name,
                  "file", fname, "size", (json_int_t)u->bytes, "sha256", hex, "created",
                  lt_serve_now(), "validation", val, "version", "md5", h.md5, "size",
                  (json_int_t)h.size, "dvc_file", dvc_file, "cache", ".dvc/cache");
    json_decref(val);
    if (!meta || lt_serve_write_json(meta_path, meta)) {
        json_decref(meta);
        unlink(file);
        snprintf(file + strlen(file), sizeof file - strlen(file), ".dvc");
        unlink(file);
        rmdir(dir);
        r = lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error", "%s", lt_errmsg());
        lt_upload_abort(u);
        return r;
    }
    json_object_del(meta, "file");
    u->bytes = 0;                            /* stays counted: the dataset now holds it */
    json_t *listed = find_dataset(s, u->id); /* with its version number */
    if (listed) {
        json_decref(meta);
        meta = listed;
    }
    lt_upload_abort(u);
    return lt_reply_json(c, MHD_HTTP_CREATED, meta);
}

/* ---- list / get / validate ------------------------------------------------------------- */
static json_t *load_meta(lt_server *s, const char *id) {
    char p[LT_SERVE_PATH + 96];
    snprintf(p, sizeof p, "%s/datasets/%s/meta.json", s->work, id);
    json_t *m = json_load_file(p, 0, NULL);
    if (m && !json_is_object(m)) {
        json_decref(m);
        return NULL;
    }
    if (m) json_object_del(m, "file");
    return m;
}

lt_status lt_dataset_path(lt_server *s, const char *id, char *out, size_t n) {
    if (!lt_serve_id_valid(id, "ds_")) return lt_error(LT_ERR_NOTFOUND, "no dataset '%s'", id);
    char p[LT_SERVE_PATH + 96];
    snprintf(p, sizeof p, "%s/datasets/%s/meta.json", s->work, id);
    json_t *m = json_load_file(p, 0, NULL);
    const char *f = json_string_value(json_object_get(m, "file"));
    if (!f || (strcmp(f, "data.jsonl") && strcmp(f, "data.json"))) {
        json_decref(m);
        return lt_error(LT_ERR_NOTFOUND, "no dataset '%s'", id);
    }
    snprintf(out, n, "%s/datasets/%s/%s", s->work, id, f);
    json_decref(m);
    return LT_OK;
}

/* arr: datasets newest first. Each versioned one's "version" gets "number" (1 for the oldest
 * upload of its name) and "previous" (the id of the one before, or null), and "changed"
 * (whether its content differs from the previous one's). */
static void number_versions(json_t *arr) {
    size_t n = json_array_size(arr);
    for (size_t i = n; i-- > 0;) {
        json_t *m = json_array_get(arr, i), *v = json_object_get(m, "version");
        if (!json_is_object(v)) continue;
        const char *name = json_string_value(json_object_get(m, "name"));
        json_t *prev = NULL;
        for (size_t j = i + 1; j < n && !prev; j++) {
            json_t *o = json_array_get(arr, j);
            const char *on = json_string_value(json_object_get(o, "name"));
            if (json_is_object(json_object_get(o, "version")) && on && name && !strcmp(on, name))
                prev = o;
        }
        json_t *pv = prev ? json_object_get(prev, "version") : NULL;
        json_object_set_new(
            v, "number",
            json_integer(pv ? json_integer_value(json_object_get(pv, "number")) + 1 : 1));
        json_object_set(v, "previous", prev ? json_object_get(prev, "id") : json_null());
        json_object_set_new(v, "changed",
                            json_boolean(!pv || !json_equal(json_object_get(pv, "md5"),
                                                            json_object_get(v, "md5"))));
    }
}

/* The datasets, newest first, their versions numbered (a new reference). */
static json_t *list_datasets(lt_server *s) {
    char p[LT_SERVE_PATH + 64];
    snprintf(p, sizeof p, "%s/datasets", s->work);
    json_t *arr = json_array();
    DIR *d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!lt_serve_id_valid(e->d_name, "ds_")) continue;
            json_t *m = load_meta(s, e->d_name);
            if (m) json_array_append_new(arr, m);
        }
        closedir(d);
    }
    /* newest first */
    size_t n = json_array_size(arr);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0; j--) {
            double a = json_number_value(json_object_get(json_array_get(arr, j - 1), "created"));
            double b = json_number_value(json_object_get(json_array_get(arr, j), "created"));
            if (a >= b) break;
            json_t *x = json_incref(json_array_get(arr, j));
            json_array_remove(arr, j);
            json_array_insert_new(arr, j - 1, x);
        }
    number_versions(arr);
    return arr;
}

/* The dataset id of the list (a new reference), or NULL. */
static json_t *find_dataset(lt_server *s, const char *id) {
    json_t *arr = list_datasets(s), *m = NULL, *x;
    size_t i;
    json_array_foreach(arr, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        if (!m && xid && !strcmp(xid, id)) m = json_incref(x);
    }
    json_decref(arr);
    return m;
}

json_t *lt_dataset_version(lt_server *s, const char *id) {
    json_t *m = id && lt_serve_id_valid(id, "ds_") ? find_dataset(s, id) : NULL;
    json_t *v = json_object_get(m, "version");
    json_t *out = json_is_object(v)
                      ? json_pack("{s:O,s:O,s:O,s:s}", "md5", json_object_get(v, "md5"), "dvc_file",
                                  json_object_get(v, "dvc_file"), "number",
                                  json_object_get(v, "number"), "dataset", id)
                      : NULL;
    json_decref(m);
    return out;
}

enum MHD_Result lt_datasets_list(lt_server *s, struct MHD_Connection *c) {
    json_t *arr = list_datasets(s);
    pthread_mutex_lock(&s->mu);
    json_t *o = json_pack("{s:o,s:I,s:I}", "datasets", arr, "used_bytes", (json_int_t)s->used_bytes,
                          "quota_bytes", (json_int_t)s->quota);
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_OK, o);
}

enum MHD_Result lt_dataset_get(lt_server *s, struct MHD_Connection *c, const char *id) {
    json_t *m = lt_serve_id_valid(id, "ds_") ? find_dataset(s, id) : NULL;
    if (!m) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no dataset '%s'", id);
    return lt_reply_json(c, MHD_HTTP_OK, m);
}

/* The options of a validate / preview body: {"model"?: name, "data-format"?, "max-seq-len"?,
 * "train-on-prompt"?, "valid-fraction"?, "seed"?} and, for a preview, "records"?. 0, or 1
 * with the 400's message (naming the key) in err. */
static int parse_data_body(const json_t *body, int preview, lt_data_opts *o,
                           const char **model_name, int *records, char *err, size_t errn) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (!strcmp(key, "model")) {
            if (!json_is_string(v)) {
                snprintf(err, errn, "model: expected a string (a name from GET /api/models)");
                return 1;
            }
            *model_name = json_string_value(v);
        } else if (!strcmp(key, "data-format")) {
            if (!json_is_string(v) || lt_data_format_parse(json_string_value(v), &o->format)) {
                snprintf(err, errn,
                         "data-format: expected one of auto, text, completions, "
                         "chat, alpaca, sharegpt");
                return 1;
            }
        } else if (!strcmp(key, "max-seq-len")) {
            double x = json_number_value(v);
            if (!json_is_number(v) || x != (double)(int64_t)x || x < 2 || x > (1 << 24)) {
                snprintf(err, errn, "max-seq-len: expected an integer in 2..16777216");
                return 1;
            }
            o->max_seq_len = (int)x;
        } else if (!strcmp(key, "train-on-prompt")) {
            if (!json_is_boolean(v)) {
                snprintf(err, errn, "train-on-prompt: expected a boolean");
                return 1;
            }
            o->train_on_prompt = json_is_true(v);
        } else if (!strcmp(key, "valid-fraction")) {
            if (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) < 1)) {
                snprintf(err, errn, "valid-fraction: expected a number in [0, 1)");
                return 1;
            }
            o->valid_fraction = json_number_value(v);
        } else if (!strcmp(key, "seed")) {
            double x = json_number_value(v);
            if (!json_is_number(v) || x != (double)(int64_t)x || x < 0 ||
                x > 9.007199254740992e15) {
                snprintf(err, errn, "seed: expected an integer in 0..2^53");
                return 1;
            }
            o->seed = json_is_integer(v) ? (uint64_t)json_integer_value(v) : (uint64_t)x;
        } else if (preview && !strcmp(key, "records")) {
            double x = json_number_value(v); /* 7.0 is an integer to JSON Schema */
            if (!json_is_number(v) || x != (double)(int64_t)x || x < 0 ||
                x > LT_SERVE_PREVIEW_MAX) {
                snprintf(err, errn, "records: expected an integer in 0..%d", LT_SERVE_PREVIEW_MAX);
                return 1;
            }
            *records = (int)x;
        } else {
            snprintf(err, errn,
                     "unknown key '%s' (expected model, data-format, max-seq-len, "
                     "train-on-prompt, valid-fraction, seed%s)",
                     key, preview ? ", records" : "");
            return 1;
        }
    }
    return 0;
}

/* The dataset's data file and display name; 0, or 1 when there is no such dataset. */
static int dataset_file(lt_server *s, const char *id, char *path, size_t pn, char *name,
                        size_t nn) {
    if (lt_dataset_path(s, id, path, pn)) return 1;
    json_t *meta = load_meta(s, id);
    const char *mn = json_string_value(json_object_get(meta, "name"));
    snprintf(name, nn, "%s", mn ? mn : "data");
    json_decref(meta);
    return 0;
}

enum MHD_Result lt_dataset_validate(lt_server *s, struct MHD_Connection *c, const char *id,
                                    const json_t *body) {
    char path[LT_SERVE_PATH + 96], model[LT_SERVE_PATH + 300], name[256], err[256];
    if (dataset_file(s, id, path, sizeof path, name, sizeof name))
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no dataset '%s'", id);
    lt_data_opts o;
    lt_data_opts_default(&o);
    const char *model_name = NULL;
    if (parse_data_body(body, 0, &o, &model_name, NULL, err, sizeof err))
        return lt_reply_error(c, 400, "bad_request", "%s", err);
    lt_status mst = model_name ? lt_model_path(s, model_name, model, sizeof model) : LT_OK;
    if (mst)
        return lt_reply_error(c, mst == LT_ERR_NOTFOUND ? 404 : 400,
                              mst == LT_ERR_NOTFOUND ? "not_found" : "bad_request", "model: %s",
                              lt_errmsg());
    json_t *raw = validate(path, name, model_name ? model : NULL, &o);
    json_t *res = raw ? lt_serve_scrub_json(s, raw) : NULL; /* a model error names its path */
    json_decref(raw);
    if (!res) return lt_reply_error(c, 500, "internal", "out of memory");
    json_object_set_new(res, "dataset", json_string(id));
    return lt_reply_json(c, MHD_HTTP_OK, res);
}

/* ---- preview and token statistics ------------------------------------------------------ */
static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile of sorted v[n] (n >= 1): the smallest value with at least p% of
 * the values at or below it (numpy's method "inverted_cdf"). */
static int nearest_rank(const int *v, int64_t n, int pct) {
    int64_t k = (pct * n + 99) / 100; /* ceil(pct / 100 * n), 1-based */
    return v[k < 1 ? 0 : k - 1];
}

/* Token statistics of the examples' lengths before truncation (n_orig): lens[n] is sorted
 * here. NULL when out of memory. */
static json_t *length_stats(int *lens, int64_t n, int64_t kept, int64_t loss, int max_seq_len) {
    if (!n) return json_pack("{s:i}", "examples", 0);
    qsort(lens, (size_t)n, sizeof *lens, cmp_int);
    int64_t total = 0, over = 0, cut = 0;
    for (int64_t i = 0; i < n; i++) {
        total += lens[i];
        if (lens[i] > max_seq_len) {
            over++;
            cut += lens[i] - max_seq_len;
        }
    }
    return json_pack("{s:I,s:i,s:i,s:i,s:i,s:f,s:I,s:I,s:I,s:I,s:I}", "examples", (json_int_t)n,
                     "min", lens[0], "median", nearest_rank(lens, n, 50), "p95",
                     nearest_rank(lens, n, 95), "max", lens[n - 1], "mean", (double)total / n,
                     "tokens", (json_int_t)total, "tokens_kept", (json_int_t)kept, "loss_tokens",
                     (json_int_t)loss, "over_max_seq_len", (json_int_t)over, "tokens_cut",
                     (json_int_t)cut);
}

/* Replaces the bytes of invalid UTF-8 sequences by '?' in place (the length stays). */
static void fix_utf8(char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)p[i];
        size_t k = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        int ok = k && i + k <= n && !(k == 1 && b == 0);
        for (size_t m = 1; ok && m < k; m++)
            ok = ((unsigned char)p[i + m] >> 6) == 2;
        if (!ok) {
            p[i++] = '?';
            continue;
        }
        i += k;
    }
}

/* One example as the model sees it: the tokens decoded with the special tokens shown (the
 * chat template's markers), in runs of equal loss mask: [{"text", "loss"}]. At most
 * LT_SERVE_PREVIEW_TOKENS tokens are shown. */
static json_t *render_example(const lt_tokenizer *tok, const lt_example *e, const char *split,
                              int max_seq_len) {
    int shown = e->n < LT_SERVE_PREVIEW_TOKENS ? e->n : LT_SERVE_PREVIEW_TOKENS;
    json_t *segs = json_array();
    int64_t loss = 0;
    for (int i = 0; i < e->n; i++)
        loss += e->mask[i];
    /* a run's text is decode(tokens[0..j]) less decode(tokens[0..i]) when the first starts
       with the second (so a sentencepiece word keeps its space and a character split between
       runs stays whole), else the run decoded alone */
    char *prev = NULL;
    size_t prev_len = 0;
    for (int i = 0; i < shown;) {
        int j = i;
        while (j < shown && e->mask[j] == e->mask[i])
            j++;
        char *upto = NULL, *alone = NULL;
        size_t upto_len = 0, alone_len = 0;
        json_t *t = NULL;
        if (lt_tokenizer_decode(tok, e->tokens, (size_t)j, 0, &upto, &upto_len)) goto fail;
        if (upto_len >= prev_len && (!prev_len || !memcmp(upto, prev, prev_len)))
            t = json_stringn(upto + prev_len, upto_len - prev_len);
        if (!t) {
            if (lt_tokenizer_decode(tok, e->tokens + i, (size_t)(j - i), 0, &alone, &alone_len)) {
                lt_free(upto);
                goto fail;
            }
            t = json_stringn(alone, alone_len);
            if (!t) { /* invalid UTF-8 of a character split between runs: '?' shown */
                fix_utf8(alone, alone_len);
                t = json_stringn(alone, alone_len);
            }
            lt_free(alone);
        }
        lt_free(prev);
        prev = upto;
        prev_len = upto_len;
        json_array_append_new(segs, json_pack("{s:o*,s:b}", "text", t, "loss", e->mask[i] ? 1 : 0));
        i = j;
    }
    lt_free(prev);
    return json_pack("{s:I,s:s,s:i,s:i,s:i,s:I,s:b,s:o}", "line", (json_int_t)e->line, "split",
                     split, "tokens", e->n_orig, "tokens_kept", e->n, "tokens_shown", shown,
                     "loss_tokens", (json_int_t)loss, "truncated", e->n_orig > max_seq_len,
                     "segments", segs);
fail:
    lt_free(prev);
    json_decref(segs);
    return NULL;
}

typedef struct {
    const lt_example *e;
    lt_split split;
} ex_ref;

static int cmp_line(const void *a, const void *b) {
    int64_t x = ((const ex_ref *)a)->e->line, y = ((const ex_ref *)b)->e->line;
    return (x > y) - (x < y);
}

/* The smallest multiple of 64 that holds the longest example, unless that is more than twice
 * the 95th percentile (a few outliers): then the one that holds the 95th percentile. */
static int suggest_seq_len(int max, int p95) {
    int whole = (max + 63) / 64 * 64, most = (p95 + 63) / 64 * 64;
    return whole > 2 * most ? most : whole;
}

static json_t *preview(const char *path, const char *name, const char *model, const char *mname,
                       const lt_data_opts *o, int records) {
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    lt_data *d = NULL;
    json_t *res = NULL;
    int *lens = NULL, *all = NULL;
    ex_ref *refs = NULL;
    lt_status st = lt_tokenizer_load(model, &tok);
    if (!st) {
        st = lt_model_chat_template(model, tok, &tpl);
        if (st == LT_ERR_NOTFOUND) st = LT_OK;
    }
    if (st) {
        res = json_pack("{s:b,s:[{s:n,s:s}]}", "ok", 0, "errors", "line", "message", lt_errmsg());
        goto done;
    }
    if (lt_data_open(path, tok, tpl, o, &d)) {
        res = validate(path, name, model, o); /* the error, as validate reports it */
        goto done;
    }
    int64_t total = 0;
    for (int sp = 0; sp < LT_SPLIT_COUNT; sp++)
        total += lt_data_count(d, (lt_split)sp);
    lens = lt_malloc(sizeof *lens * (size_t)(total ? total : 1));
    all = lt_malloc(sizeof *all * (size_t)(total ? total : 1));
    refs = lt_malloc(sizeof *refs * (size_t)(total ? total : 1));
    json_t *stats = json_object();
    if (!lens || !all || !refs || !stats) {
        json_decref(stats);
        goto done;
    }
    int64_t na = 0, kept_all = 0, loss_all = 0;
    for (int sp = 0; sp < LT_SPLIT_COUNT; sp++) {
        int64_t n = lt_data_count(d, (lt_split)sp), kept = 0, loss = 0;
        if (!n) continue;
        for (int64_t i = 0; i < n; i++) {
            const lt_example *e = lt_data_example(d, (lt_split)sp, i);
            lens[i] = all[na] = e->n_orig;
            refs[na++] = (ex_ref){e, (lt_split)sp};
            kept += e->n;
            for (int t = 0; t < e->n; t++)
                loss += e->mask[t];
        }
        kept_all += kept;
        loss_all += loss;
        json_object_set_new(stats, lt_split_name((lt_split)sp),
                            length_stats(lens, n, kept, loss, o->max_seq_len));
    }
    json_t *whole = length_stats(all, na, kept_all, loss_all, o->max_seq_len);
    json_object_set_new(stats, "all", whole);
    qsort(refs, (size_t)na, sizeof *refs, cmp_line);
    json_t *recs = json_array();
    for (int64_t i = 0; i < na && i < records; i++) {
        json_t *r = render_example(tok, refs[i].e, lt_split_name(refs[i].split), o->max_seq_len);
        if (!r) {
            json_decref(recs);
            json_decref(stats);
            goto done;
        }
        json_array_append_new(recs, r);
    }
    json_t *sugg =
        na ? json_integer(suggest_seq_len(all[na - 1], nearest_rank(all, na, 95))) : json_null();
    /* the LoRA rank the train split suggests (rank_hint.h), as `data check --model` gives it;
       null for a tokenizer-only model folder (no config to size the adapter by) */
    json_t *rank = json_null();
    lt_data_summary tr;
    lt_model *m = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    if (lt_data_summary_get(d, LT_SPLIT_TRAIN, &tr) == LT_OK &&
        lt_model_load(model, &lo, &m) == LT_OK) {
        lt_rank_hint rh;
        lt_rank_hint_compute(&m->config, tr.n_loss_tokens, tr.n_examples, &rh);
        json_decref(rank);
        rank = json_pack("{s:i,s:i,s:I,s:I,s:b,s:s}", "rank", rh.rank, "cap", rh.cap,
                         "params_per_rank", (json_int_t)rh.params_per_rank, "loss_tokens",
                         (json_int_t)rh.loss_tokens, "short_of_data", rh.short_of_data, "reason",
                         rh.reason);
    }
    lt_model_free(m);
    res = json_pack("{s:b,s:[],s:s,s:s,s:o,s:o,s:o,s:i,s:o,s:o}", "ok", 1, "errors", "model", mname,
                    "format", lt_data_format_name(lt_data_get_format(d)), "template",
                    tpl ? json_pack("{s:s,s:b}", "name", lt_chat_template_name(tpl), "exact",
                                    lt_chat_template_is_exact(tpl))
                        : json_null(),
                    "suggested_max_seq_len", sugg, "suggested_rank", rank, "max_seq_len",
                    o->max_seq_len, "stats", stats, "records", recs);
done:
    lt_free(lens);
    lt_free(all);
    lt_free(refs);
    lt_data_free(d);
    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    return res;
}

enum MHD_Result lt_dataset_preview(lt_server *s, struct MHD_Connection *c, const char *id,
                                   const json_t *body) {
    char path[LT_SERVE_PATH + 96], model[LT_SERVE_PATH + 300], name[256], err[256];
    if (dataset_file(s, id, path, sizeof path, name, sizeof name))
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no dataset '%s'", id);
    lt_data_opts o;
    lt_data_opts_default(&o);
    const char *model_name = NULL;
    int records = 3;
    if (parse_data_body(body, 1, &o, &model_name, &records, err, sizeof err))
        return lt_reply_error(c, 400, "bad_request", "%s", err);
    if (!model_name)
        return lt_reply_error(c, 400, "bad_request",
                              "model: required (the preview renders the records with the "
                              "model's tokenizer and chat template; a name from GET "
                              "/api/models)");
    lt_status mst = lt_model_path(s, model_name, model, sizeof model);
    if (mst)
        return lt_reply_error(c, mst == LT_ERR_NOTFOUND ? 404 : 400,
                              mst == LT_ERR_NOTFOUND ? "not_found" : "bad_request", "model: %s",
                              lt_errmsg());
    json_t *raw = preview(path, name, model, model_name, &o, records);
    json_t *res = raw ? lt_serve_scrub_json(s, raw) : NULL;
    json_decref(raw);
    if (!res) return lt_reply_error(c, 500, "internal", "out of memory");
    json_object_set_new(res, "dataset", json_string(id));
    return lt_reply_json(c, MHD_HTTP_OK, res);
}

/* ---- models ----------------------------------------------------------------------------- */
static int model_name_ok(const char *n) {
    if (!n || !*n || n[0] == '.' || strlen(n) > 255) return 0;
    for (const char *p = n; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20) return 0;
    return 1;
}

lt_status lt_model_path(lt_server *s, const char *name, char *out, size_t n) {
    if (!model_name_ok(name))
        return lt_error(LT_ERR_ARG,
                        "'%s' is not a model name (one entry of the server's models "
                        "folder, as GET /api/models lists)",
                        name ? name : "");
    snprintf(out, n, "%s/%s", s->models, name);
    struct stat st;
    if (stat(out, &st)) return lt_error(LT_ERR_NOTFOUND, "no model '%s' (GET /api/models)", name);
    return LT_OK;
}

enum MHD_Result lt_models_list(lt_server *s, struct MHD_Connection *c) {
    json_t *arr = json_array();
    DIR *d = opendir(s->models);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!model_name_ok(e->d_name)) continue;
            char p[LT_SERVE_PATH + 300];
            snprintf(p, sizeof p, "%s/%s", s->models, e->d_name);
            struct stat st;
            if (stat(p, &st)) continue;
            json_array_append_new(arr,
                                  json_pack("{s:s,s:s,s:I}", "name", e->d_name, "kind",
                                            S_ISDIR(st.st_mode) ? "folder" : "file", "size",
                                            (json_int_t)(S_ISDIR(st.st_mode) ? 0 : st.st_size)));
        }
        closedir(d);
    }
    return lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "models", arr));
}

/* ---- delete ----------------------------------------------------------------------------- */
/* Removes dir's files and dir, one level (a dataset folder: data, .dvc and meta.json; a merge's
 * HF folder: what lt_model_save_hf writes). */
void lt_serve_remove_flat_dir(const char *dir) {
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

/* 1 when arr (strings) holds str */
static int has_str(const json_t *arr, const char *str) {
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        const char *v = json_string_value(x);
        if (v && str && !strcmp(v, str)) return 1;
    }
    return 0;
}

/* 1 when arr (dataset metas) holds one with id */
static int has_id(const json_t *arr, const char *id) {
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        if (xid && id && !strcmp(xid, id)) return 1;
    }
    return 0;
}

/* Why the cache object md5 must stay (into why), or 0 when nothing names it: another dataset's
 * version, or any job's data_version (its run in the store points at the object). Under no
 * lock; takes s->mu. */
static int cache_kept(lt_server *s, const char *md5, char *why, size_t n) {
    json_t *arr = list_datasets(s), *x;
    size_t i;
    int kept = 0;
    json_array_foreach(arr, i, x) {
        const char *o = json_string_value(json_object_get(json_object_get(x, "version"), "md5"));
        if (!kept && o && !strcmp(o, md5)) {
            snprintf(why, n, "dataset %s has the same content",
                     json_string_value(json_object_get(x, "id")));
            kept = 1;
        }
    }
    json_decref(arr);
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < s->n_jobs && !kept; k++) {
        const char *o = json_string_value(
            json_object_get(json_object_get(s->jobs[k]->record, "data_version"), "md5"));
        if (o && !strcmp(o, md5)) {
            snprintf(why, n, "job %s trained on it (its run's data version)", s->jobs[k]->id);
            kept = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return kept;
}

enum MHD_Result lt_dataset_delete(lt_server *s, struct MHD_Connection *c, const char *id) {
    json_t *m = lt_serve_id_valid(id, "ds_") ? find_dataset(s, id) : NULL;
    if (!m) return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no dataset '%s'", id);
    const char *all = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "all_versions");
    int every = 0;
    if (all && !strcmp(all, "true"))
        every = 1;
    else if (all && strcmp(all, "false")) {
        json_decref(m);
        return lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "all_versions: expected true or false, got '%.40s'", all);
    }
    /* the uploads to delete: this one, or every version of its name */
    const char *name = json_string_value(json_object_get(m, "name"));
    json_t *arr = list_datasets(s), *targets = json_array(), *x;
    size_t i;
    json_array_foreach(arr, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        const char *xn = json_string_value(json_object_get(x, "name"));
        if (xid && (!strcmp(xid, id) || (every && xn && name && !strcmp(xn, name))))
            json_array_append(targets, x);
    }
    json_decref(arr);
    json_decref(m);
    /* in use: a deployment's held-out set, a job that will still read the file */
    char user[300] = "";
    json_array_foreach(targets, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        char dep[64];
        if (!*user && lt_deploy_uses_dataset(s, xid, dep, sizeof dep))
            snprintf(user, sizeof user, "dataset '%s' is the held-out set of deployment '%s'", xid,
                     dep);
    }
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < s->n_jobs && !*user; k++) {
        lt_job *j = s->jobs[k];
        const char *ds = json_string_value(json_object_get(j->record, "dataset"));
        if ((j->status == JOB_QUEUED || j->status == JOB_RUNNING || j->status == JOB_INTERRUPTED) &&
            has_id(targets, ds))
            snprintf(user, sizeof user,
                     "dataset '%s' is used by job '%s', which is %s (cancel it first, or wait "
                     "until it ends)",
                     ds, j->id, lt_job_status_name(j->status));
    }
    if (*user) {
        pthread_mutex_unlock(&s->mu);
        json_decref(targets);
        return lt_reply_error(c, MHD_HTTP_CONFLICT, "in_use", "%s", user);
    }
    /* out of the listing at once: each folder renamed into uploads/ (cleared at start), under
       the lock that job creation takes */
    json_t *deleted = json_array();
    int64_t freed = 0;
    char failed[512] = "";
    json_array_foreach(targets, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        char from[LT_SERVE_PATH + 96], to[LT_SERVE_PATH + 96];
        snprintf(from, sizeof from, "%s/datasets/%s", s->work, xid);
        snprintf(to, sizeof to, "%s/uploads/deleted-%s", s->work, xid);
        if (lt_io_rename(from, to)) {
            if (!*failed) snprintf(failed, sizeof failed, "%s: %s", xid, strerror(errno));
            continue;
        }
        int64_t size = json_integer_value(json_object_get(x, "size"));
        s->used_bytes -= size;
        freed += size;
        json_array_append_new(deleted, json_string(xid));
    }
    pthread_mutex_unlock(&s->mu);
    json_t *removed = json_array(), *kept = json_array();
    json_array_foreach(targets, i, x) {
        const char *xid = json_string_value(json_object_get(x, "id"));
        if (!has_str(deleted, xid)) continue;
        char to[LT_SERVE_PATH + 96];
        snprintf(to, sizeof to, "%s/uploads/deleted-%s", s->work, xid);
        lt_serve_remove_flat_dir(to);
        json_t *v = json_object_get(x, "version");
        const char *md5 = json_string_value(json_object_get(v, "md5"));
        if (!md5 || strlen(md5) != 32) continue;
        int seen = has_str(removed, md5);
        size_t k;
        json_t *y;
        json_array_foreach(kept, k, y) seen |=
            !strcmp(json_string_value(json_object_get(y, "md5")), md5);
        if (seen) continue;
        char why[200];
        if (cache_kept(s, md5, why, sizeof why)) {
            json_array_append_new(kept, json_pack("{s:s,s:s}", "md5", md5, "reason", why));
            continue;
        }
        char obj[LT_SERVE_PATH + 96];
        snprintf(obj, sizeof obj, "%s/.dvc/cache/files/md5/%.2s/%s", s->work, md5, md5 + 2);
        if (!unlink(obj)) {
            json_array_append_new(removed, json_string(md5));
            freed += json_integer_value(json_object_get(v, "size"));
        }
    }
    json_decref(targets);
    if (*failed && !json_array_size(deleted)) {
        json_decref(deleted);
        json_decref(removed);
        json_decref(kept);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "io_error",
                              "could not delete dataset %s", failed);
    }
    return lt_reply_json(c, MHD_HTTP_OK,
                         json_pack("{s:o,s:I,s:{s:o,s:o}}", "deleted", deleted, "freed_bytes",
                                   (json_int_t)freed, "cache", "removed", removed, "kept", kept));
}
