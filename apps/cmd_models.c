/* cmd_models.c - `loratune models register|list|show|promote` (deploy / rollback:
 * cmd_models_deploy.c): the model registry of the
 * tracking store. With --mlflow URI (or MLFLOW_TRACKING_URI) versions and stage changes are
 * also sent to the MLflow model registry (the run is pushed first when it has no MLflow run). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loratune/mlflow.h"
#include "loratune/track.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune models register RUN --name NAME [--base MODEL] [--adapter PATH]\n"
            "                                [--merged PATH] [--description TEXT]\n"
            "       loratune models list    [--json]\n"
            "       loratune models show    NAME [--version N] [--json]\n"
            "       loratune models promote NAME --version N --stage STAGE [--keep-others]\n"
            "       loratune models deploy  NAME@VERSION [--canary SHARE] [--holdout DATASET]\n"
            "                               [--server URL] [--token T]\n"
            "       loratune models rollback NAME [--server URL] [--token T]\n"
            "\n"
            "The model registry: named models whose numbered versions point at training runs,\n"
            "with a stage (none, staging, production, archived), the base model identity (name\n"
            "and sha256), adapter / merged paths, the dataset version and the run's hardware.\n"
            "Promoting to staging or production archives the version previously there unless\n"
            "--keep-others.\n"
            "\n"
            "options:\n"
            "  --store DIR     the store folder (default $LORATUNE_STORE or .loratune)\n"
            "  --mlflow URI    also register in this MLflow server (default $MLFLOW_TRACKING_URI;\n"
            "                  --mlflow '' turns it off)\n"
            "  --json          print JSON instead of tables\n"
            "  -h, --help      this help\n");
}

static int fail(const char *sub) {
    fprintf(stderr, "loratune models %s: %s\n", sub, lt_errmsg());
    return 1;
}

static const char *str_or(json_t *v, const char *d) {
    return json_is_string(v) ? json_string_value(v) : d;
}

static void fmt_time(double t, char *buf, size_t n) {
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M", &tm);
}

/* The MLflow run of a store run: its tag, or a fresh push. */
static lt_status mlflow_run_of(lt_store *s, int64_t run_id, const lt_mlflow_server *srv,
                               char id[64]) {
    return lt_mlflow_push_run(s, run_id, srv, id);
}

int cmd_models(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "deploy") || !strcmp(sub, "rollback")) return cmd_models_deploy(argc, argv);
    const char *store = NULL, *name = NULL, *stage = NULL, *mlflow = getenv("MLFLOW_TRACKING_URI");
    lt_registry_desc d = {0};
    long version = 0;
    int as_json = 0, keep_others = 0;
    const char *pos[4] = {0};
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json"))
            as_json = 1;
        else if (!strcmp(a, "--keep-others"))
            keep_others = 1;
        else if (!strcmp(a, "--store") && has)
            store = argv[++i];
        else if (!strcmp(a, "--name") && has)
            name = argv[++i];
        else if (!strcmp(a, "--stage") && has)
            stage = argv[++i];
        else if (!strcmp(a, "--mlflow") && has)
            mlflow = argv[++i];
        else if (!strcmp(a, "--base") && has)
            d.base_name = argv[++i];
        else if (!strcmp(a, "--adapter") && has)
            d.adapter_path = argv[++i];
        else if (!strcmp(a, "--merged") && has)
            d.merged_path = argv[++i];
        else if (!strcmp(a, "--description") && has)
            d.description = argv[++i];
        else if (!strcmp(a, "--version") && has) {
            if (lt_cli_parse_int("models", "--version", argv[++i], &version)) return 2;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "loratune models %s: unknown option '%s' (or missing value)\n", sub, a);
            return 2;
        } else if (npos < 4)
            pos[npos++] = a;
        else {
            fprintf(stderr, "loratune models %s: too many arguments\n", sub);
            return 2;
        }
    }
    if (mlflow && !*mlflow) mlflow = NULL;
    int is_reg = !strcmp(sub, "register"), is_list = !strcmp(sub, "list"),
        is_show = !strcmp(sub, "show"), is_prom = !strcmp(sub, "promote");
    if (!is_reg && !is_list && !is_show && !is_prom) {
        fprintf(stderr, "loratune models: unknown subcommand '%s'\n\n", sub);
        usage(stderr);
        return 2;
    }
    if (is_reg && (npos != 1 || !name)) {
        fprintf(stderr, "loratune models register: expected RUN and --name NAME\n");
        return 2;
    }
    if ((is_show || is_prom) && npos != 1) {
        fprintf(stderr, "loratune models %s: expected one NAME\n", sub);
        return 2;
    }
    lt_stage st_val = LT_STAGE_NONE;
    if (is_prom) {
        if (version <= 0 || !stage) {
            fprintf(stderr,
                    "loratune models promote: expected --version N (>= 1) and --stage STAGE\n");
            return 2;
        }
        if (lt_stage_parse(stage, &st_val) != LT_OK) {
            fprintf(stderr, "loratune models promote: --stage: %s\n", lt_errmsg());
            return 2;
        }
    }
    lt_store *s;
    if (lt_store_open(lt_cli_store_dir(store), &s) != LT_OK) return fail(sub);
    lt_cli_store_warn(s, "models");
    lt_mlflow_server srv = lt_cli_mlflow_server(mlflow);
    int rc = 0;
    char *text = NULL;
    if (is_reg) {
        int64_t run;
        int v;
        d.name = name;
        if (lt_store_run_resolve(s, pos[0], &run) != LT_OK ||
            lt_registry_register(s, run, &d, &v) != LT_OK) {
            rc = fail(sub);
            goto out;
        }
        printf("registered run #%lld as model '%s' version %d\n", (long long)run, name, v);
        if (mlflow) {
            char mid[64];
            int mv = 0;
            if (lt_registry_model_json(s, name, v, &text) != LT_OK) {
                rc = fail(sub);
                goto out;
            }
            json_t *j = json_loads(text, 0, NULL);
            free(text);
            text = NULL;
            json_t *ver = json_array_get(json_object_get(j, "versions"), 0);
            json_t *tags = json_object();
            char lv[16];
            snprintf(lv, sizeof lv, "%d", v);
            json_object_set_new(tags, "loratune.version", json_string(lv));
            const char *fields[][2] = {
                {"loratune.base_name",
                 str_or(json_object_get(json_object_get(ver, "base"), "name"), NULL)},
                {"loratune.base_sha256",
                 str_or(json_object_get(json_object_get(ver, "base"), "sha256"), NULL)},
                {"loratune.adapter_path", str_or(json_object_get(ver, "adapter_path"), NULL)},
                {"loratune.merged_path", str_or(json_object_get(ver, "merged_path"), NULL)},
                {"loratune.data_md5",
                 str_or(json_object_get(json_object_get(ver, "data"), "md5"), NULL)}};
            for (int i = 0; i < 5; i++)
                if (fields[i][1])
                    json_object_set_new(tags, fields[i][0], json_string(fields[i][1]));
            char *tj = json_dumps(tags, JSON_COMPACT);
            json_decref(tags);
            json_decref(j);
            char source[128];
            lt_status ms = mlflow_run_of(s, run, &srv, mid);
            if (ms == LT_OK) {
                snprintf(source, sizeof source, "runs:/%s/model", mid);
                ms = lt_mlflow_register_version(&srv, name, mid, source, tj, &mv);
            }
            free(tj);
            if (ms != LT_OK) { /* the local registry has it; MLflow is a mirror */
                fprintf(stderr, "loratune models register: warning: not registered in MLflow: %s\n",
                        lt_errmsg());
            } else {
                printf("MLflow: registered model '%s' version %d (run %s)\n", name, mv, mid);
            }
        }
    } else if (is_prom) {
        if (lt_registry_promote(s, pos[0], (int)version, st_val, !keep_others) != LT_OK) {
            rc = fail(sub);
            goto out;
        }
        printf("model '%s' version %ld -> %s\n", pos[0], version, lt_stage_name(st_val));
        if (mlflow) {
            /* the MLflow version tagged loratune.version=N (see lt_mlflow_set_stage) */
            if (lt_mlflow_set_stage(&srv, pos[0], (int)version, st_val, !keep_others) != LT_OK)
                fprintf(stderr, "loratune models promote: warning: MLflow stage not changed: %s\n",
                        lt_errmsg());
        }
    } else if (is_list) {
        if (lt_registry_list_json(s, &text) != LT_OK) {
            rc = fail(sub);
            goto out;
        }
        if (as_json)
            puts(text);
        else {
            json_t *a = json_loads(text, 0, NULL);
            printf("%-24s %8s %8s %10s %8s  %s\n", "NAME", "VERSIONS", "LATEST", "PRODUCTION",
                   "STAGING", "CREATED");
            size_t i;
            json_t *m;
            json_array_foreach(a, i, m) {
                char c[32], prod[16] = "-", stg[16] = "-";
                fmt_time(json_number_value(json_object_get(m, "created")), c, sizeof c);
                json_t *stages = json_object_get(m, "stages");
                if (json_object_get(stages, "production"))
                    snprintf(prod, sizeof prod, "%lld",
                             (long long)json_integer_value(json_object_get(stages, "production")));
                if (json_object_get(stages, "staging"))
                    snprintf(stg, sizeof stg, "%lld",
                             (long long)json_integer_value(json_object_get(stages, "staging")));
                printf("%-24s %8lld %8lld %10s %8s  %s\n", str_or(json_object_get(m, "name"), "?"),
                       (long long)json_integer_value(json_object_get(m, "versions")),
                       (long long)json_integer_value(json_object_get(m, "latest_version")), prod,
                       stg, c);
            }
            if (json_array_size(a) == 0) printf("(no registered models)\n");
            json_decref(a);
        }
    } else {
        if (lt_registry_model_json(s, pos[0], (int)version, &text) != LT_OK) {
            rc = fail(sub);
            goto out;
        }
        if (as_json)
            puts(text);
        else {
            json_t *o = json_loads(text, 0, NULL);
            printf("model %s", str_or(json_object_get(o, "name"), "?"));
            const char *desc = str_or(json_object_get(o, "description"), NULL);
            if (desc) printf(" - %s", desc);
            printf("\n");
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(o, "versions"), i, v) {
                char c[32];
                fmt_time(json_number_value(json_object_get(v, "created")), c, sizeof c);
                json_t *base = json_object_get(v, "base"), *data = json_object_get(v, "data");
                json_t *hw = json_object_get(v, "hardware");
                printf("\n  version %lld  [%s]  run #%lld (%s)  %s\n",
                       (long long)json_integer_value(json_object_get(v, "version")),
                       str_or(json_object_get(v, "stage"), "?"),
                       (long long)json_integer_value(json_object_get(v, "run_id")),
                       str_or(json_object_get(v, "run_uuid"), ""), c);
                printf("    base      %s (sha256 %s)\n", str_or(json_object_get(base, "name"), "-"),
                       str_or(json_object_get(base, "sha256"), "-"));
                printf("    adapter   %s\n", str_or(json_object_get(v, "adapter_path"), "-"));
                printf("    merged    %s\n", str_or(json_object_get(v, "merged_path"), "-"));
                printf("    data      %s (md5 %s)\n", str_or(json_object_get(data, "path"), "-"),
                       str_or(json_object_get(data, "md5"), "-"));
                if (json_is_object(hw))
                    printf("    hardware  %s, %s\n",
                           str_or(json_object_get(json_object_get(hw, "cpu"), "model"), "?"),
                           str_or(json_object_get(json_object_get(hw, "runtime"), "kernel_level"),
                                  "?"));
            }
            json_decref(o);
        }
    }
out:
    free(text);
    lt_store_close(s);
    return rc;
}
