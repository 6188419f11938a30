/* cmd_data_add.c - `loratune data add FILE|DIR...`: versions data the way `dvc add` does:
 * content into the DVC cache (ROOT/.dvc/cache/files/md5/..), a "<path>.dvc" file next to it
 * and a .gitignore entry, so `dvc status` / `dvc checkout` / `dvc push` work on it. ROOT is
 * the nearest folder above the data holding .dvc/; without one, the current folder is made a
 * DVC repository (as `dvc init` leaves it). */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/dvc.h"

static void usage(FILE *f) {
    fprintf(f, "usage: loratune data add FILE|DIR... [--json]\n\n"
               "Puts the data into the DVC cache (content-addressed by md5, as DVC 3 lays it\n"
               "out) and writes FILE.dvc next to it, exactly as `dvc add` would: the real dvc\n"
               "then sees it as tracked. The DVC repository is the nearest folder above the\n"
               "data with a .dvc folder; without one, the current folder becomes one.\n\n"
               "options:\n"
               "  --json     print one JSON object per path (path, md5, size, nfiles, dvc_file)\n"
               "  -h, --help this help\n");
}

int data_add(int argc, char **argv) {
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    int json = 0, n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "loratune data add: unknown option '%s'\n", argv[i]);
            return 2;
        } else
            n++;
    }
    if (!n) {
        usage(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] == '-') continue;
        const char *path = argv[i];
        if (!lt_path_exists(path)) {
            fprintf(stderr, "loratune data add: %s: no such file or folder\n", path);
            return 1;
        }
        char root[PATH_MAX], cache[PATH_MAX + 16];
        if (lt_dvc_find_root(path, root, sizeof root) != LT_OK) {
            if (!realpath(".", root) || lt_dvc_init(root) != LT_OK) {
                fprintf(stderr, "loratune data add: %s\n", lt_errmsg());
                return 1;
            }
            fprintf(stderr, "loratune data add: initialized a DVC repository in %s\n", root);
        }
        char abs[PATH_MAX];
        if (!realpath(path, abs) || strncmp(abs, root, strlen(root)) ||
            (abs[strlen(root)] != '/' && abs[strlen(root)] != 0)) {
            fprintf(stderr, "loratune data add: %s is outside the DVC repository %s\n", path, root);
            return 1;
        }
        snprintf(cache, sizeof cache, "%s/.dvc/cache", root);
        lt_dvc_hash h;
        if (lt_dvc_add(path, cache, 1, root, &h) != LT_OK) {
            fprintf(stderr, "loratune data add: %s\n", lt_errmsg());
            return 1;
        }
        if (json) {
            char dvcf[PATH_MAX + 8];
            snprintf(dvcf, sizeof dvcf, "%s.dvc", path);
            json_t *o =
                json_pack("{s:s,s:s,s:I,s:I,s:s}", "path", path, "md5", h.md5, "size",
                          (json_int_t)h.size, "nfiles", (json_int_t)h.nfiles, "dvc_file", dvcf);
            char *t = json_dumps(o, JSON_COMPACT);
            if (t) puts(t);
            free(t);
            json_decref(o);
        } else
            printf("%s: md5 %s, %lld bytes in %lld file(s) -> %s.dvc\n", path, h.md5,
                   (long long)h.size, (long long)h.nfiles, path);
    }
    return 0;
}
