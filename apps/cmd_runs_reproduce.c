/* cmd_runs_reproduce.c - `loratune runs reproduce RUN [--out DIR] [train options]`: trains
 * again with the options and the data version a run recorded.
 *
 * The run's resolved options become `train --option=value` arguments (later arguments given
 * here override them); relative paths resolve against the run's working folder. When the data
 * file or folder no longer has the recorded md5, that version is restored from the store's
 * cache (or the DVC cache of the data's repository) into STORE/checkout/<md5>/ and trained
 * on from there; the user's changed data is left alone. The new run is recorded with tag
 * reproduces=<id>. */
#define _GNU_SOURCE
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "loratune/dvc.h"
#include "loratune/track.h"
#include "train_track.h"

int cmd_runs_reproduce(lt_store *s, const char *ref, int argc, char **argv);

static int fail(const char *what) {
    fprintf(stderr, "loratune runs reproduce: %s%s%s\n", what, *what ? ": " : "", lt_errmsg());
    return 1;
}

/* The recorded data version at a path we can train on (may be the original). */
static int data_version(lt_store *s, const char *path, const char *md5, char *out, size_t n) {
    lt_dvc_hash h;
    if (lt_path_exists(path) && lt_dvc_hash_path(path, &h) == LT_OK && !strcmp(h.md5, md5)) {
        snprintf(out, n, "%s", path);
        return 0;
    }
    char caches[2][PATH_MAX + 32];
    int nc = 0;
    snprintf(caches[nc++], sizeof caches[0], "%s/cache", lt_store_dir_path(s));
    char root[PATH_MAX];
    if (lt_dvc_find_root(path, root, sizeof root) == LT_OK)
        snprintf(caches[nc++], sizeof caches[0], "%s/.dvc/cache", root);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char dest[PATH_MAX * 2];
    snprintf(dest, sizeof dest, "%s/checkout/%s/%s", lt_store_dir_path(s), md5, base);
    if (lt_path_exists(dest) && lt_dvc_hash_path(dest, &h) == LT_OK && !strcmp(h.md5, md5)) {
        snprintf(out, n, "%s", dest);
        return 0;
    }
    for (int i = 0; i < nc; i++) {
        if (!lt_dvc_cache_has(caches[i], md5)) continue;
        if (lt_dvc_checkout(caches[i], md5, dest) != LT_OK) return fail("restoring the data");
        fprintf(stderr,
                "loratune runs reproduce: %s changed since the run; restored data "
                "version %s to %s\n",
                path, md5, dest);
        snprintf(out, n, "%s", dest);
        return 0;
    }
    fprintf(stderr,
            "loratune runs reproduce: %s no longer has md5 %s and no cache (%s%s%s) holds "
            "that version\n",
            path, md5, caches[0], nc > 1 ? ", " : "", nc > 1 ? caches[1] : "");
    return 1;
}

int cmd_runs_reproduce(lt_store *s, const char *ref, int argc, char **argv) {
    int64_t id;
    char *text;
    if (lt_store_run_resolve(s, ref, &id) != LT_OK ||
        lt_store_run_to_json(s, id, 0, &text) != LT_OK)
        return fail("");
    json_t *r = json_loads(text, 0, NULL);
    free(text);
    json_t *cfg = json_object_get(r, "config");
    const char *kind = json_string_value(json_object_get(r, "kind"));
    if (!json_is_object(cfg) || (kind && strcmp(kind, "train"))) {
        fprintf(stderr,
                "loratune runs reproduce: run #%lld is not a training run with recorded "
                "options\n",
                (long long)id);
        json_decref(r);
        return 1;
    }
    const char *cwd = json_string_value(json_object_get(r, "cwd"));
    json_t *data = json_object_get(r, "data");
    const char *dpath = json_string_value(json_object_get(data, "path"));
    const char *dmd5 = json_string_value(json_object_get(data, "md5"));
    /* our own --out and the store, made absolute before moving to the run's folder */
    char out[PATH_MAX * 2] = "", store_abs[PATH_MAX] = "";
    int nextra = 0;
    char **extra = calloc((size_t)argc + 1, sizeof *extra);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            char *o = argv[++i];
            if (o[0] == '/')
                snprintf(out, sizeof out, "%s", o);
            else {
                char here[PATH_MAX];
                if (!getcwd(here, sizeof here)) here[0] = 0;
                snprintf(out, sizeof out, "%s/%s", here, o);
            }
        } else
            extra[nextra++] = argv[i];
    }
    if (!realpath(lt_store_dir_path(s), store_abs))
        snprintf(store_abs, sizeof store_abs, "%s", lt_store_dir_path(s));
    if (cwd && chdir(cwd) != 0) {
        fprintf(stderr, "loratune runs reproduce: the run's folder %s is gone\n", cwd);
        free(extra);
        json_decref(r);
        return 1;
    }
    char data_at[PATH_MAX * 2] = "";
    if (dpath && dmd5 && data_version(s, dpath, dmd5, data_at, sizeof data_at)) {
        free(extra);
        json_decref(r);
        return 1;
    }
    if (!out[0]) {
        const char *o = json_string_value(json_object_get(cfg, "out"));
        for (int k = 1; k < 1000; k++) {
            snprintf(out, sizeof out, "%s.repro%lld%s%.0d", o ? o : "out", (long long)id,
                     k > 1 ? "." : "", k > 1 ? k : 0);
            if (!lt_path_exists(out)) break;
        }
    }
    /* train --opt=value ... */
    size_t nk = json_object_size(cfg);
    char **av = calloc(nk + (size_t)nextra + 8, sizeof *av);
    int ac = 0;
    av[ac++] = strdup("train");
    const char *k;
    json_t *v;
    json_object_foreach(cfg, k, v) {
        if (!strcmp(k, "out") || !strcmp(k, "resume") || (data_at[0] && !strcmp(k, "data")))
            continue;
        const char *val = json_string_value(v);
        if (!val) continue;
        if (asprintf(&av[ac], "--%s=%s", k, val) < 0) av[ac] = NULL;
        if (av[ac]) ac++;
    }
    if (data_at[0] && asprintf(&av[ac], "--data=%s", data_at) >= 0) ac++;
    if (asprintf(&av[ac], "--out=%s", out) >= 0) ac++;
    if (asprintf(&av[ac], "--store=%s", store_abs) >= 0) ac++;
    const char *exp = json_string_value(json_object_get(r, "experiment"));
    if (exp && asprintf(&av[ac], "--experiment=%s", exp) >= 0) ac++;
    if (asprintf(&av[ac], "--run-name=reproduce-%lld", (long long)id) >= 0) ac++;
    for (int i = 0; i < nextra; i++)
        av[ac++] = strdup(extra[i]);
    av[ac] = NULL;
    fprintf(stderr, "loratune runs reproduce: run #%lld in %s, output %s\n", (long long)id,
            cwd ? cwd : ".", out);
    json_decref(r);
    free(extra);
    train_track_set_reproduces(id);
    char **keep = calloc((size_t)ac + 1, sizeof *keep); /* cmd_train may reorder argv */
    memcpy(keep, av, (size_t)ac * sizeof *av);
    int rc = cmd_train(ac, av);
    for (int i = 0; i < ac; i++)
        free(keep[i]);
    free(keep);
    free(av);
    return rc;
}
