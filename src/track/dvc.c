/* dvc.c - DVC 3 compatible hashing, cache and .dvc files (see dvc.h).
 *
 * Invariant: an object enters the cache only by a complete copy renamed into place (0444),
 * so a cache object is either absent or whole; checkout re-hashes what it restores. */
#define _GNU_SOURCE
#include "loratune/dvc.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "fsutil.h"
#include "loratune/track.h"

typedef struct {
    char *rel; /* path relative to the folder, '/'-separated */
    char md5[33];
    int64_t size;
} entry;

typedef struct {
    entry *e;
    int n, cap;
} entries;

static int skip_name(const char *n) {
    return !strcmp(n, ".git") || !strcmp(n, ".dvc") || !strcmp(n, ".hg");
}

static lt_status walk(const char *base, const char *rel, entries *out) {
    char dir[PATH_MAX];
    if (rel[0])
        snprintf(dir, sizeof dir, "%s/%s", base, rel);
    else
        snprintf(dir, sizeof dir, "%s", base);
    char **names;
    int n;
    lt_status st = lt_dir_list_sorted(dir, &names, &n);
    if (st != LT_OK) return st;
    for (int i = 0; i < n && st == LT_OK; i++) {
        if (skip_name(names[i])) continue;
        char r[PATH_MAX], full[2 * PATH_MAX + 2];
        if (rel[0])
            snprintf(r, sizeof r, "%s/%s", rel, names[i]);
        else
            snprintf(r, sizeof r, "%s", names[i]);
        snprintf(full, sizeof full, "%s/%s", base, r);
        struct stat sb;
        if (stat(full, &sb) != 0) {
            st = lt_error(LT_ERR_IO, "%s: %s", full, strerror(errno));
            break;
        }
        if (S_ISDIR(sb.st_mode)) {
            st = walk(base, r, out);
        } else if (S_ISREG(sb.st_mode)) {
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 32;
                entry *ne = lt_realloc(out->e, (size_t)out->cap * sizeof *ne);
                if (!ne) {
                    st = lt_error(LT_ERR_NOMEM, "%s: out of memory", full);
                    break;
                }
                out->e = ne;
            }
            entry *e = &out->e[out->n];
            if (!(e->rel = lt_strdup(r))) {
                st = lt_error(LT_ERR_NOMEM, "%s: out of memory", full);
                break;
            }
            if ((st = lt_file_md5(full, e->md5, &e->size)) != LT_OK) {
                free(e->rel);
                break;
            }
            out->n++;
        }
    }
    lt_dir_list_free(names, n);
    return st;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->rel, ((const entry *)b)->rel);
}

static void entries_free(entries *es) {
    for (int i = 0; i < es->n; i++)
        free(es->e[i].rel);
    free(es->e);
}

/* Appends s as a JSON string the way Python's json.dumps (ensure_ascii) writes it. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 1024) + n;
        char *b = lt_realloc(*buf, nc);
        if (!b) return -1;
        *buf = b;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int append_py_string(char **buf, size_t *len, size_t *cap, const char *s) {
    if (append(buf, len, cap, "\"", 1)) return -1;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char tmp[16];
        unsigned c = *p;
        uint32_t cp;
        int k;
        if (c < 0x80) {
            cp = c;
            k = 1;
        } else if ((c & 0xe0) == 0xc0 && p[1]) {
            cp = ((c & 0x1f) << 6) | (p[1] & 0x3f);
            k = 2;
        } else if ((c & 0xf0) == 0xe0 && p[1] && p[2]) {
            cp = ((c & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
            k = 3;
        } else if ((c & 0xf8) == 0xf0 && p[1] && p[2] && p[3]) {
            cp = ((c & 0x07) << 18) | ((p[1] & 0x3f) << 12) | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
            k = 4;
        } else { /* invalid byte: Python would have surrogateescape'd it */
            cp = 0xdc00 + c;
            k = 1;
        }
        p += k;
        int n;
        if (cp == '"')
            n = snprintf(tmp, sizeof tmp, "\\\"");
        else if (cp == '\\')
            n = snprintf(tmp, sizeof tmp, "\\\\");
        else if (cp == '\n')
            n = snprintf(tmp, sizeof tmp, "\\n");
        else if (cp == '\r')
            n = snprintf(tmp, sizeof tmp, "\\r");
        else if (cp == '\t')
            n = snprintf(tmp, sizeof tmp, "\\t");
        else if (cp == '\b')
            n = snprintf(tmp, sizeof tmp, "\\b");
        else if (cp == '\f')
            n = snprintf(tmp, sizeof tmp, "\\f");
        else if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000))
            n = snprintf(tmp, sizeof tmp, "\\u%04x", cp);
        else if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            n = snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (v >> 10),
                         0xdc00 + (v & 0x3ff));
        } else {
            tmp[0] = (char)cp;
            n = 1;
        }
        if (append(buf, len, cap, tmp, (size_t)n)) return -1;
    }
    return append(buf, len, cap, "\"", 1);
}

/* The manifest bytes of a folder (entries sorted). */
static lt_status manifest(entries *es, char **out, size_t *len) {
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    int bad = append(&buf, len, &cap, "[", 1);
    for (int i = 0; i < es->n && !bad; i++) {
        if (i) bad |= append(&buf, len, &cap, ", ", 2);
        bad |= append(&buf, len, &cap, "{\"md5\": \"", 9);
        bad |= append(&buf, len, &cap, es->e[i].md5, 32);
        bad |= append(&buf, len, &cap, "\", \"relpath\": ", 14);
        bad |= append_py_string(&buf, len, &cap, es->e[i].rel);
        bad |= append(&buf, len, &cap, "}", 1);
    }
    bad |= append(&buf, len, &cap, "]", 1);
    if (bad) {
        free(buf);
        return lt_error(LT_ERR_NOMEM, "DVC manifest: out of memory");
    }
    *out = buf;
    return LT_OK;
}

static void md5_bytes(const void *p, size_t n, char hex[33]) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_Digest(p, n, d, &dl, EVP_md5(), NULL);
    for (unsigned i = 0; i < dl && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* Hashes path; for a folder also returns its sorted entries and manifest (caller frees). */
static lt_status hash_path(const char *path, lt_dvc_hash *out, entries *es, char **man,
                           size_t *man_len) {
    memset(out, 0, sizeof *out);
    if (lt_path_is_dir(path)) {
        lt_status st = walk(path, "", es);
        if (st != LT_OK) return st;
        qsort(es->e, (size_t)es->n, sizeof *es->e, cmp_entry);
        if ((st = manifest(es, man, man_len)) != LT_OK) return st;
        char hex[33];
        md5_bytes(*man, *man_len, hex);
        snprintf(out->md5, sizeof out->md5, "%s.dir", hex);
        for (int i = 0; i < es->n; i++)
            out->size += es->e[i].size;
        out->nfiles = es->n;
        out->is_dir = 1;
        return LT_OK;
    }
    if (!lt_path_exists(path)) return lt_error(LT_ERR_NOTFOUND, "%s: no such file or folder", path);
    char hex[33];
    lt_status st = lt_file_md5(path, hex, &out->size);
    if (st != LT_OK) return st;
    snprintf(out->md5, sizeof out->md5, "%s", hex);
    out->nfiles = 1;
    return LT_OK;
}

lt_status lt_dvc_hash_path(const char *path, lt_dvc_hash *out) {
    entries es = {0};
    char *man = NULL;
    size_t ml;
    lt_status st = hash_path(path, out, &es, &man, &ml);
    entries_free(&es);
    free(man);
    return st;
}

static void object_path(const char *cache, const char *md5, char *out, size_t n) {
    snprintf(out, n, "%s/files/md5/%.2s/%s", cache, md5, md5 + 2);
}

/* Puts src (a file) into the cache as md5 unless it is there. */
static lt_status cache_put_file(const char *cache, const char *md5, const char *src) {
    char obj[PATH_MAX], dir[PATH_MAX];
    object_path(cache, md5, obj, sizeof obj);
    if (lt_path_exists(obj)) return LT_OK;
    snprintf(dir, sizeof dir, "%s/files/md5/%.2s", cache, md5);
    lt_status st = lt_mkdir_p(dir, 0755, NULL);
    return st == LT_OK ? lt_file_copy(src, obj, 0444) : st;
}

static lt_status cache_put_bytes(const char *cache, const char *md5, const char *buf, size_t n) {
    char obj[PATH_MAX], dir[PATH_MAX];
    object_path(cache, md5, obj, sizeof obj);
    if (lt_path_exists(obj)) return LT_OK;
    snprintf(dir, sizeof dir, "%s/files/md5/%.2s", cache, md5);
    lt_status st = lt_mkdir_p(dir, 0755, NULL);
    if (st != LT_OK) return st;
    if ((st = lt_file_write_atomic(obj, buf, n)) != LT_OK) return st;
    chmod(obj, 0444);
    return LT_OK;
}

lt_status lt_dvc_find_root(const char *path, char *root, size_t n) {
    char cur[PATH_MAX];
    if (!realpath(path, cur)) {
        /* a path that does not exist yet: start from its folder */
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", path);
        char *slash = strrchr(tmp, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(tmp, sizeof tmp, ".");
        if (!realpath(tmp, cur)) return lt_error(LT_ERR_NOTFOUND, "%s: %s", path, strerror(errno));
    }
    if (!lt_path_is_dir(cur)) {
        char *slash = strrchr(cur, '/');
        if (slash && slash != cur) *slash = 0;
    }
    for (;;) {
        char d[PATH_MAX + 8];
        snprintf(d, sizeof d, "%s/.dvc", cur);
        if (lt_path_is_dir(d)) {
            snprintf(root, n, "%s", cur);
            return LT_OK;
        }
        char *slash = strrchr(cur, '/');
        if (!slash) break;
        if (slash == cur) {
            if (!cur[1]) break;
            cur[1] = 0;
        } else
            *slash = 0;
    }
    return lt_error(LT_ERR_NOTFOUND, "%s: not inside a DVC repository (no .dvc folder above it)",
                    path);
}

lt_status lt_dvc_init(const char *dir) {
    return lt_dvc_init_ex(dir, 0);
}

lt_status lt_dvc_init_ex(const char *dir, int no_scm) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/.dvc", dir);
    if (lt_path_is_dir(p)) return LT_OK;
    lt_status st = lt_mkdir_p(p, 0755, NULL);
    if (st != LT_OK) return st;
    snprintf(p, sizeof p, "%s/.dvc/config", dir);
    const char *cfg = no_scm ? "[core]\n    no_scm = True\n" : ""; /* as dvc init [--no-scm] */
    if ((st = lt_file_write_atomic(p, cfg, strlen(cfg))) != LT_OK) return st;
    snprintf(p, sizeof p, "%s/.dvc/.gitignore", dir);
    const char *gi = "/config.local\n/tmp\n/cache\n";
    if ((st = lt_file_write_atomic(p, gi, strlen(gi))) != LT_OK) return st;
    snprintf(p, sizeof p, "%s/.dvcignore", dir);
    if (!lt_path_exists(p)) {
        const char *di = "# Add patterns of files dvc should ignore, which could improve\n"
                         "# the performance. Learn more at\n"
                         "# https://dvc.org/doc/user-guide/dvcignore\n";
        if ((st = lt_file_write_atomic(p, di, strlen(di))) != LT_OK) return st;
    }
    return LT_OK;
}

/* YAML plain scalar when safe, else single-quoted. */
static void yaml_scalar(const char *s, char *out, size_t n) {
    int plain = *s != 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-' || *c == '/'))
            plain = 0;
    if (s[0] == '-' || s[0] == '.') plain = plain && s[0] != '-';
    if (plain) {
        snprintf(out, n, "%s", s);
        return;
    }
    size_t k = 0;
    if (k + 1 < n) out[k++] = '\'';
    for (const char *c = s; *c && k + 3 < n; c++) {
        if (*c == '\'') out[k++] = '\'';
        out[k++] = *c;
    }
    if (k + 1 < n) out[k++] = '\'';
    out[k] = 0;
}

static lt_status add_gitignore(const char *path, const char *root) {
    char g[PATH_MAX + 16];
    snprintf(g, sizeof g, "%s/.git", root);
    if (!lt_path_exists(g)) return LT_OK;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/')
        tmp[--l] = 0;
    char *slash = strrchr(tmp, '/');
    const char *name = slash ? slash + 1 : tmp;
    char dir[PATH_MAX - 16];
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - tmp), tmp);
    else
        snprintf(dir, sizeof dir, ".");
    snprintf(g, sizeof g, "%s/.gitignore", dir);
    char line[PATH_MAX + 2];
    snprintf(line, sizeof line, "/%s", name);
    char *text = NULL;
    size_t len = 0;
    if (lt_file_read_all(g, &text, &len) == LT_OK) {
        for (char *l2 = strtok(text, "\n"); l2; l2 = strtok(NULL, "\n"))
            if (!strcmp(l2, line)) {
                free(text);
                return LT_OK;
            }
        free(text);
    }
    FILE *f = lt_io_fopen(g, "a");
    if (!f) return lt_error(LT_ERR_IO, "%s: cannot write: %s", g, strerror(errno));
    /* make sure the entry starts on its own line */
    if (len > 0) {
        FILE *r = fopen(g, "r");
        if (r) {
            fseek(r, -1, SEEK_END);
            if (fgetc(r) != '\n') fputc('\n', f);
            fclose(r);
        }
    }
    int bad = fprintf(f, "%s\n", line) < 0;
    if (lt_io_fclose(f) != 0 || bad)
        return lt_error(LT_ERR_IO, "%s: write failed: %s", g, strerror(errno));
    return LT_OK;
}

lt_status lt_dvc_add(const char *path, const char *cache, int write_dvc_file, const char *root,
                     lt_dvc_hash *out) {
    char clean[PATH_MAX];
    snprintf(clean, sizeof clean, "%s", path);
    size_t l = strlen(clean);
    while (l > 1 && clean[l - 1] == '/')
        clean[--l] = 0;
    entries es = {0};
    char *man = NULL;
    size_t ml = 0;
    lt_status st = hash_path(clean, out, &es, &man, &ml);
    if (st != LT_OK) goto done;
    if (out->is_dir) {
        for (int i = 0; i < es.n && st == LT_OK; i++) {
            char f[2 * PATH_MAX + 2];
            snprintf(f, sizeof f, "%s/%s", clean, es.e[i].rel);
            st = cache_put_file(cache, es.e[i].md5, f);
        }
        if (st == LT_OK) st = cache_put_bytes(cache, out->md5, man, ml);
    } else {
        st = cache_put_file(cache, out->md5, clean);
    }
    if (st != LT_OK || !write_dvc_file) goto done;
    {
        const char *slash = strrchr(clean, '/');
        char name[PATH_MAX], yname[PATH_MAX + 64], text[PATH_MAX + 512], dvcf[PATH_MAX + 8];
        snprintf(name, sizeof name, "%s", slash ? slash + 1 : clean);
        yaml_scalar(name, yname, sizeof yname);
        if (out->is_dir)
            snprintf(text, sizeof text,
                     "outs:\n- md5: %s\n  size: %lld\n  nfiles: %lld\n  hash: md5\n  path: %s\n",
                     out->md5, (long long)out->size, (long long)out->nfiles, yname);
        else
            snprintf(text, sizeof text, "outs:\n- md5: %s\n  size: %lld\n  hash: md5\n  path: %s\n",
                     out->md5, (long long)out->size, yname);
        snprintf(dvcf, sizeof dvcf, "%s.dvc", clean);
        if ((st = lt_file_write_atomic(dvcf, text, strlen(text))) != LT_OK) goto done;
        if (root) st = add_gitignore(clean, root);
    }
done:
    entries_free(&es);
    free(man);
    return st;
}

static lt_status check_object(const char *obj, const char *md5) {
    char hex[33];
    lt_status st = lt_file_md5(obj, hex, NULL);
    if (st != LT_OK) return st;
    if (strncmp(hex, md5, 32))
        return lt_error(LT_ERR_FORMAT, "%s: cache object is damaged (its md5 is %s)", obj, hex);
    return LT_OK;
}

int lt_dvc_cache_has(const char *cache, const char *md5) {
    char obj[PATH_MAX];
    object_path(cache, md5, obj, sizeof obj);
    if (!lt_path_exists(obj)) return 0;
    if (strlen(md5) <= 32) return 1;
    json_t *j = json_load_file(obj, 0, NULL);
    if (!json_is_array(j)) {
        json_decref(j);
        return 0;
    }
    size_t i;
    json_t *e;
    int ok = 1;
    json_array_foreach(j, i, e) {
        const char *m = json_string_value(json_object_get(e, "md5"));
        char o2[PATH_MAX];
        if (!m || strlen(m) != 32) {
            ok = 0;
            break;
        }
        object_path(cache, m, o2, sizeof o2);
        if (!lt_path_exists(o2)) {
            ok = 0;
            break;
        }
    }
    json_decref(j);
    return ok;
}

static lt_status restore_file(const char *cache, const char *md5, const char *dest) {
    char obj[PATH_MAX];
    object_path(cache, md5, obj, sizeof obj);
    if (!lt_path_exists(obj))
        return lt_error(LT_ERR_NOTFOUND, "%s: object %s is not in the cache (%s)", dest, md5, obj);
    lt_status st = check_object(obj, md5);
    if (st != LT_OK) return st;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dest);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if ((st = lt_mkdir_p(dir, 0755, NULL)) != LT_OK) return st;
    }
    return lt_file_copy(obj, dest, 0644);
}

lt_status lt_dvc_checkout(const char *cache, const char *md5, const char *dest) {
    size_t ml = strlen(md5);
    if (ml < 32) return lt_error(LT_ERR_ARG, "DVC checkout: '%s' is not an md5", md5);
    if (ml == 32) return restore_file(cache, md5, dest);
    char obj[PATH_MAX];
    object_path(cache, md5, obj, sizeof obj);
    if (!lt_path_exists(obj))
        return lt_error(LT_ERR_NOTFOUND, "%s: folder object %s is not in the cache (%s)", dest, md5,
                        obj);
    lt_status st = check_object(obj, md5);
    if (st != LT_OK) return st;
    json_error_t je;
    json_t *j = json_load_file(obj, 0, &je);
    if (!json_is_array(j)) {
        json_decref(j);
        return lt_error(LT_ERR_FORMAT, "%s: line %d: expected a DVC folder manifest (JSON list)",
                        obj, je.line);
    }
    if ((st = lt_mkdir_p(dest, 0755, NULL)) != LT_OK) {
        json_decref(j);
        return st;
    }
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e) {
        const char *m = json_string_value(json_object_get(e, "md5"));
        const char *rel = json_string_value(json_object_get(e, "relpath"));
        if (!m || !rel || strlen(m) != 32 || rel[0] == '/' || strstr(rel, "..")) {
            st = lt_error(LT_ERR_FORMAT, "%s: entry %zu: expected md5 and a relative relpath", obj,
                          i);
            break;
        }
        char d[PATH_MAX];
        snprintf(d, sizeof d, "%s/%s", dest, rel);
        if ((st = restore_file(cache, m, d)) != LT_OK) break;
    }
    json_decref(j);
    return st;
}

lt_status lt_dvc_read_file(const char *dvc_file, char md5[LT_DVC_MD5_MAX]) {
    if (!lt_path_exists(dvc_file)) return lt_error(LT_ERR_NOTFOUND, "%s: no such file", dvc_file);
    char *text;
    size_t len;
    lt_status st = lt_file_read_all(dvc_file, &text, &len);
    if (st != LT_OK) return st;
    md5[0] = 0;
    int line = 0;
    for (char *l = text; l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl) *nl = 0;
        line++;
        const char *p = l;
        while (*p == ' ' || *p == '-')
            p++;
        if (!strncmp(p, "md5:", 4)) {
            p += 4;
            while (*p == ' ')
                p++;
            size_t n = strcspn(p, " \r#");
            if (n < 32 || n >= LT_DVC_MD5_MAX) {
                free(text);
                return lt_error(LT_ERR_FORMAT, "%s:%d: md5: expected 32 hex digits (+ .dir)",
                                dvc_file, line);
            }
            memcpy(md5, p, n);
            md5[n] = 0;
            break;
        }
        l = nl ? nl + 1 : NULL;
    }
    free(text);
    if (!md5[0]) return lt_error(LT_ERR_FORMAT, "%s: no 'md5:' entry under outs", dvc_file);
    return LT_OK;
}
