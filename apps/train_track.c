/* train_track.c - `loratune train` records itself: tracking options, the command line, the
 * recorder (src/track/recorder.c) hooked in as a run sink. Tracking never fails training:
 * problems become warnings on stderr. Environment (read here, not by the library):
 * LORATUNE_STORE (store folder), MLFLOW_TRACKING_URI / _TOKEN / _USERNAME / _PASSWORD (MLflow
 * mirror), LORATUNE_EXPERIMENT, LORATUNE_NO_TRACK=1. */
#include "train_track.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

static struct {
    const char *store, *experiment, *name, *mlflow;
    int off;
    char *command;
    int64_t reproduces;
} g_tt;

const char *const train_track_help =
    "tracking (every run is recorded in the store; see `loratune runs`):\n"
    "  --store DIR          tracking store folder (default $LORATUNE_STORE or .loratune)\n"
    "  --experiment NAME    experiment to file the run under (default $LORATUNE_EXPERIMENT\n"
    "                       or 'default')\n"
    "  --run-name NAME      a name for the run\n"
    "  --mlflow URI         also mirror to this MLflow server (default $MLFLOW_TRACKING_URI)\n"
    "  --no-track           do not record this run ($LORATUNE_NO_TRACK=1)\n";

void train_track_set_reproduces(int64_t run_id) {
    g_tt.reproduces = run_id;
}

/* The command line, each argument single-quoted when it needs it (shell-safe). */
static char *join_args(int argc, char **argv) {
    size_t n = 16;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) * 4 + 3;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    p += sprintf(p, "loratune");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a != 0;
        for (const char *c = a; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%",
                        *c))
                plain = 0;
        *p++ = ' ';
        if (plain)
            p += sprintf(p, "%s", a);
        else {
            *p++ = '\'';
            for (const char *c = a; *c; c++) {
                if (*c == '\'')
                    p += sprintf(p, "'\\''");
                else
                    *p++ = *c;
            }
            *p++ = '\'';
        }
    }
    *p = 0;
    return s;
}

int train_track_take_args(int argc, char **argv) {
    free(g_tt.command);
    g_tt.command = join_args(argc, argv);
    static const char *const names[] = {"--store", "--experiment", "--run-name", "--mlflow"};
    const char **slots[] = {&g_tt.store, &g_tt.experiment, &g_tt.name, &g_tt.mlflow};
    int w = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int taken = 0;
        if (!strcmp(a, "--no-track")) {
            g_tt.off = 1;
            taken = 1;
        }
        for (int k = 0; k < 4 && !taken; k++) {
            size_t l = strlen(names[k]);
            if (!strncmp(a, names[k], l) && a[l] == '=') {
                *slots[k] = a + l + 1;
                taken = 1;
            } else if (!strcmp(a, names[k]) && i + 1 < argc) {
                *slots[k] = argv[++i];
                taken = 1;
            }
        }
        if (!taken) argv[w++] = argv[i];
    }
    argv[w] = NULL;
    return w;
}

lt_recorder *train_track_start(const lt_run_opts *o) {
    const char *off = getenv("LORATUNE_NO_TRACK");
    if (g_tt.off || (off && *off && strcmp(off, "0"))) return NULL;
    json_t *cfg = lt_run_opts_to_json(o);
    char *cfg_text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    lt_mlflow_server srv = lt_cli_mlflow_server(g_tt.mlflow);
    const char *exp = g_tt.experiment ? g_tt.experiment : getenv("LORATUNE_EXPERIMENT");
    const char *flush = getenv("LORATUNE_MLFLOW_FLUSH_S");
    lt_recorder_opts ro = {.store_dir = lt_cli_store_dir(g_tt.store),
                           .mlflow_uri = srv.uri,
                           .mlflow_token = srv.token,
                           .mlflow_username = srv.username,
                           .mlflow_password = srv.password,
                           .experiment = exp,
                           .name = g_tt.name,
                           .kind = "train",
                           .command = g_tt.command,
                           .config_json = cfg_text,
                           .data_path = o->data,
                           .model = o->model,
                           .has_seed = 1,
                           .seed = o->seed,
                           .mlflow_flush_s = flush ? atof(flush) : 0};
    lt_recorder *rec = NULL;
    if (lt_recorder_start(&ro, &rec) != LT_OK) {
        fprintf(stderr, "loratune train: warning: this run is not tracked: %s\n", lt_errmsg());
        rec = NULL;
    } else if (g_tt.reproduces > 0) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)g_tt.reproduces);
        lt_store_set_tag(lt_recorder_store(rec), lt_recorder_run_id(rec), "reproduces", b);
    }
    free(cfg_text);
    return rec;
}

void train_track_finish(lt_recorder *rec, int exit_code, int json_output) {
    if (!rec) return;
    lt_track_status st = exit_code == 0     ? LT_TRACK_FINISHED
                         : exit_code == 130 ? LT_TRACK_KILLED
                                            : LT_TRACK_FAILED;
    int64_t id = lt_recorder_run_id(rec);
    char where[1200];
    snprintf(where, sizeof where, "%s", lt_store_db_path(lt_recorder_store(rec)));
    char warn[1024];
    if (lt_recorder_finish(rec, st, warn, sizeof warn) > 0)
        fprintf(stderr, "loratune train: warning: %s\n", warn);
    fprintf(json_output ? stderr : stdout, "run #%lld recorded in %s (loratune runs show %lld)\n",
            (long long)id, where, (long long)id);
}
