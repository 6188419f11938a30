/* cmd_runs.c - `loratune runs list|show|compare|delete|reproduce|push`: the experiment-tracking
 * store (src/track/) from the terminal. Tables by default, the store's JSON with --json.
 * `reproduce` re-runs a training run with its recorded options and data version
 * (apps/cmd_runs_reproduce.c); `push` sends a run to an MLflow server. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loratune/mlflow.h"
#include "loratune/track.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: loratune runs list    [--experiment NAME] [--limit N] [--json]\n"
        "       loratune runs show    RUN [--history] [--json]\n"
        "       loratune runs compare RUN RUN... [--sort METRIC[:last|min|max]] [--desc] [--json]\n"
        "       loratune runs delete  RUN...\n"
        "       loratune runs reproduce RUN [--out DIR] [train options to override]\n"
        "       loratune runs push    RUN... [--mlflow URI]\n"
        "\n"
        "The runs recorded in the tracking store (every `loratune train` records itself).\n"
        "RUN is a run id, #id, 'last', a uuid (or its first 6+ hex digits) or a run name.\n"
        "\n"
        "options:\n"
        "  --store DIR     the store folder (default $LORATUNE_STORE or .loratune)\n"
        "  --json          print the store's JSON instead of tables\n"
        "  --experiment N  only runs of experiment N\n"
        "  --limit N       at most N runs (newest first)\n"
        "  --history       show: every metric point, not only summaries\n"
        "  --sort M[:how]  compare: order runs by metric M (how: min (default), last, max)\n"
        "  --desc          compare: largest first\n"
        "  --mlflow URI    push: MLflow tracking server (default $MLFLOW_TRACKING_URI)\n"
        "  -h, --help      this help\n");
}

static void fmt_time(double t, char *buf, size_t n) {
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_dur(json_t *d, char *buf, size_t n) {
    if (!json_is_number(d)) {
        snprintf(buf, n, "-");
        return;
    }
    double s = json_number_value(d);
    if (s < 60)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void fmt_num(json_t *v, char *buf, size_t n) {
    if (json_is_number(v))
        snprintf(buf, n, "%.6g", json_number_value(v));
    else
        snprintf(buf, n, "-");
}

static const char *str_or(json_t *v, const char *dflt) {
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static json_t *parse(char *text) {
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

static int fail(const char *sub) {
    fprintf(stderr, "loratune runs %s: %s\n", sub, lt_errmsg());
    return 1;
}

/* ---- list ------------------------------------------------------------------------------ */
static int do_list(lt_store *s, const char *experiment, int limit, int as_json) {
    char *text;
    if (lt_store_runs_json(s, experiment, limit, &text) != LT_OK) return fail("list");
    if (as_json) {
        puts(text);
        free(text);
        return 0;
    }
    json_t *a = parse(text);
    printf("%-5s %-9s %-12s %-16s %-19s %8s %6s %10s %10s  %s\n", "ID", "STATUS", "EXPERIMENT",
           "NAME", "STARTED", "TIME", "STEPS", "LOSS", "BEST_VAL", "DATA");
    size_t i;
    json_t *r;
    json_array_foreach(a, i, r) {
        char started[32], dur[32], loss[32], val[32], steps[32] = "-";
        fmt_time(json_number_value(json_object_get(r, "start_time")), started, sizeof started);
        fmt_dur(json_object_get(r, "duration_s"), dur, sizeof dur);
        json_t *m = json_object_get(r, "metrics");
        json_t *tl = json_object_get(m, "train_loss"), *vl = json_object_get(m, "val_loss");
        fmt_num(json_object_get(tl, "last"), loss, sizeof loss);
        fmt_num(json_object_get(vl, "min"), val, sizeof val);
        if (tl)
            snprintf(steps, sizeof steps, "%lld",
                     (long long)json_integer_value(json_object_get(tl, "last_step")));
        const char *md5 = str_or(json_object_get(json_object_get(r, "data"), "md5"), "-");
        printf("%-5lld %-9s %-12.12s %-16.16s %-19s %8s %6s %10s %10s  %.8s\n",
               (long long)json_integer_value(json_object_get(r, "id")),
               str_or(json_object_get(r, "status"), "?"),
               str_or(json_object_get(r, "experiment"), "-"),
               str_or(json_object_get(r, "name"), "-"), started, dur, steps, loss, val, md5);
    }
    if (json_array_size(a) == 0) printf("(no runs in %s)\n", lt_store_db_path(s));
    json_decref(a);
    return 0;
}

/* ---- show ------------------------------------------------------------------------------ */
static void print_kv_object(const char *title, json_t *o) {
    if (!json_is_object(o) || json_object_size(o) == 0) return;
    printf("\n%s\n", title);
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (json_is_string(v))
            printf("  %-28s %s\n", k, json_string_value(v));
        else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            printf("  %-28s %s\n", k, t ? t : "?");
            free(t);
        }
    }
}

static int do_show(lt_store *s, const char *ref, int history, int as_json) {
    int64_t id;
    char *text;
    if (lt_store_run_resolve(s, ref, &id) != LT_OK ||
        lt_store_run_to_json(s, id, history, &text) != LT_OK)
        return fail("show");
    if (as_json) {
        puts(text);
        free(text);
        return 0;
    }
    json_t *r = parse(text);
    char started[32], ended[32] = "-", dur[32];
    fmt_time(json_number_value(json_object_get(r, "start_time")), started, sizeof started);
    if (json_is_number(json_object_get(r, "end_time")))
        fmt_time(json_number_value(json_object_get(r, "end_time")), ended, sizeof ended);
    fmt_dur(json_object_get(r, "duration_s"), dur, sizeof dur);
    printf("run #%lld  %s\n", (long long)id, str_or(json_object_get(r, "uuid"), ""));
    printf("  %-12s %s\n", "experiment", str_or(json_object_get(r, "experiment"), "-"));
    printf("  %-12s %s\n", "name", str_or(json_object_get(r, "name"), "-"));
    printf("  %-12s %s\n", "kind", str_or(json_object_get(r, "kind"), "-"));
    printf("  %-12s %s\n", "status", str_or(json_object_get(r, "status"), "-"));
    printf("  %-12s %s -> %s (%s)\n", "time", started, ended, dur);
    printf("  %-12s %s\n", "command", str_or(json_object_get(r, "command"), "-"));
    printf("  %-12s %s\n", "cwd", str_or(json_object_get(r, "cwd"), "-"));
    printf("  %-12s %s\n", "git", str_or(json_object_get(r, "git_commit"), "-"));
    json_t *seed = json_object_get(r, "seed");
    if (json_is_integer(seed))
        printf("  %-12s %lld\n", "seed", (long long)json_integer_value(seed));
    json_t *d = json_object_get(r, "data");
    printf("  %-12s %s (md5 %s)\n", "data", str_or(json_object_get(d, "path"), "-"),
           str_or(json_object_get(d, "md5"), "-"));
    printf("  %-12s %s (pid %lld)\n", "host", str_or(json_object_get(r, "host"), "-"),
           (long long)json_integer_value(json_object_get(r, "pid")));
    json_t *hw = json_object_get(r, "hardware");
    if (json_is_object(hw)) {
        json_t *cpu = json_object_get(hw, "cpu"), *mem = json_object_get(hw, "memory");
        const char *model =
            str_or(json_object_get(cpu, "model"), str_or(json_object_get(hw, "cpu_model"), "?"));
        printf("  %-12s %s", "hardware", model);
        json_t *lc = json_object_get(cpu, "logical_cores");
        if (json_is_integer(lc)) printf(", %lld threads", (long long)json_integer_value(lc));
        json_t *ram = json_object_get(mem, "total_bytes");
        if (json_is_number(ram)) printf(", %.1f GiB RAM", json_number_value(ram) / (1 << 30));
        printf("\n");
    }
    print_kv_object("params", json_object_get(r, "params"));
    print_kv_object("tags", json_object_get(r, "tags"));
    json_t *m = json_object_get(r, "metrics");
    if (json_object_size(m)) {
        printf("\n%-28s %12s %8s %12s %8s %12s %8s %6s\n", "metric", "last", "step", "min", "step",
               "max", "step", "count");
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v) {
            char a[32], b[32], c[32];
            fmt_num(json_object_get(v, "last"), a, sizeof a);
            fmt_num(json_object_get(v, "min"), b, sizeof b);
            fmt_num(json_object_get(v, "max"), c, sizeof c);
            printf("%-28s %12s %8lld %12s %8lld %12s %8lld %6lld\n", k, a,
                   (long long)json_integer_value(json_object_get(v, "last_step")), b,
                   (long long)json_integer_value(json_object_get(v, "min_step")), c,
                   (long long)json_integer_value(json_object_get(v, "max_step")),
                   (long long)json_integer_value(json_object_get(v, "count")));
        }
    }
    json_t *h = json_object_get(r, "metric_history");
    if (json_is_object(h)) {
        const char *k;
        json_t *v;
        json_object_foreach(h, k, v) {
            printf("\n%s\n", k);
            size_t i;
            json_t *p;
            json_array_foreach(v, i, p) {
                char a[32];
                fmt_num(json_array_get(p, 1), a, sizeof a);
                printf("  %8lld %12s\n", (long long)json_integer_value(json_array_get(p, 0)), a);
            }
        }
    }
    json_t *arts = json_object_get(r, "artifacts");
    if (json_array_size(arts)) {
        printf("\n%-10s %12s  %-16s %s\n", "artifact", "bytes", "sha256", "path");
        size_t i;
        json_t *a;
        json_array_foreach(arts, i, a) printf(
            "%-10s %12lld  %.16s %s\n", str_or(json_object_get(a, "kind"), "-"),
            (long long)json_integer_value(json_object_get(a, "size")),
            str_or(json_object_get(a, "sha256"), ""), str_or(json_object_get(a, "path"), ""));
    }
    json_decref(r);
    return 0;
}

/* ---- compare --------------------------------------------------------------------------- */
typedef struct {
    json_t *run;
    double key;
} cmp_item;
static int g_desc;
static int cmp_items(const void *a, const void *b) {
    double x = ((const cmp_item *)a)->key, y = ((const cmp_item *)b)->key;
    int xn = isnan(x), yn = isnan(y);
    if (xn || yn) return xn - yn; /* runs without the metric last */
    int c = (x > y) - (x < y);
    return g_desc ? -c : c;
}

static int do_compare(lt_store *s, int nref, char **refs, const char *sort, int desc, int as_json) {
    if (nref < 1) {
        fprintf(stderr, "loratune runs compare: expected at least one RUN\n");
        return 2;
    }
    cmp_item *items = calloc((size_t)nref, sizeof *items);
    char metric[256] = "", how[16] = "min";
    if (sort) {
        snprintf(metric, sizeof metric, "%s", sort);
        char *c = strchr(metric, ':');
        if (c) {
            *c = 0;
            snprintf(how, sizeof how, "%s", c + 1);
            if (strcmp(how, "min") && strcmp(how, "max") && strcmp(how, "last")) {
                fprintf(stderr,
                        "loratune runs compare: --sort %s: expected METRIC[:min|last|max]\n", sort);
                free(items);
                return 2;
            }
        }
    }
    int rc = 0;
    for (int i = 0; i < nref; i++) {
        int64_t id;
        char *text;
        if (lt_store_run_resolve(s, refs[i], &id) != LT_OK ||
            lt_store_run_to_json(s, id, 0, &text) != LT_OK) {
            rc = fail("compare");
            goto out;
        }
        items[i].run = parse(text);
        json_t *v =
            json_object_get(json_object_get(json_object_get(items[i].run, "metrics"), metric), how);
        items[i].key = json_is_number(v) ? json_number_value(v) : NAN;
    }
    g_desc = desc;
    if (sort) qsort(items, (size_t)nref, sizeof *items, cmp_items);
    /* the union of keys, in first-seen order (each run's keys are sorted) */
    json_t *pkeys = json_object(), *mkeys = json_object();
    for (int i = 0; i < nref; i++) {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(items[i].run, "params"), k, v)
            json_object_set_new(pkeys, k, json_true());
        json_object_foreach(json_object_get(items[i].run, "metrics"), k, v)
            json_object_set_new(mkeys, k, json_true());
    }
    if (as_json) {
        json_t *o = json_object(), *ids = json_array(), *params = json_object(),
               *metrics = json_object();
        for (int i = 0; i < nref; i++)
            json_array_append(ids, json_object_get(items[i].run, "id"));
        const char *k;
        json_t *v;
        json_object_foreach(pkeys, k, v) {
            json_t *row = json_array();
            int differ = 0;
            for (int i = 0; i < nref; i++) {
                json_t *x = json_object_get(json_object_get(items[i].run, "params"), k);
                json_array_append_new(row, x ? json_incref(x) : json_null());
                if (i && !json_equal(json_array_get(row, 0), json_array_get(row, (size_t)i)))
                    differ = 1;
            }
            json_object_set_new(params, k,
                                json_pack("{s:o,s:b}", "values", row, "differs", differ));
        }
        json_object_foreach(mkeys, k, v) {
            json_t *mo = json_object();
            const char *hows[] = {"last", "min", "max"};
            for (int h = 0; h < 3; h++) {
                json_t *row = json_array();
                for (int i = 0; i < nref; i++) {
                    json_t *x = json_object_get(
                        json_object_get(json_object_get(items[i].run, "metrics"), k), hows[h]);
                    json_array_append_new(row, x ? json_incref(x) : json_null());
                }
                json_object_set_new(mo, hows[h], row);
            }
            json_object_set_new(metrics, k, mo);
        }
        json_object_set_new(o, "runs", ids);
        json_object_set_new(o, "params", params);
        json_object_set_new(o, "metrics", metrics);
        char *t = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        puts(t);
        free(t);
        json_decref(o);
    } else {
        printf("%-30s", "run");
        for (int i = 0; i < nref; i++)
            printf(" %14lld", (long long)json_integer_value(json_object_get(items[i].run, "id")));
        printf("\n%-30s", "name");
        for (int i = 0; i < nref; i++)
            printf(" %14.14s", str_or(json_object_get(items[i].run, "name"), "-"));
        printf("\n%-30s", "status");
        for (int i = 0; i < nref; i++)
            printf(" %14s", str_or(json_object_get(items[i].run, "status"), "-"));
        printf("\n\nparams (* = differs)\n");
        const char *k;
        json_t *v;
        json_object_foreach(pkeys, k, v) {
            const char *first = NULL;
            int differ = 0;
            for (int i = 0; i < nref; i++) {
                const char *x =
                    str_or(json_object_get(json_object_get(items[i].run, "params"), k), "-");
                if (!first)
                    first = x;
                else if (strcmp(first, x))
                    differ = 1;
            }
            printf("%c %-28.28s", differ ? '*' : ' ', k);
            for (int i = 0; i < nref; i++)
                printf(" %14.14s",
                       str_or(json_object_get(json_object_get(items[i].run, "params"), k), "-"));
            printf("\n");
        }
        printf("\nmetrics (final / best = min)\n");
        json_object_foreach(mkeys, k, v) {
            const char *hows[] = {"last", "min"};
            for (int h = 0; h < 2; h++) {
                char label[300];
                snprintf(label, sizeof label, "%s (%s)", k, h ? "best" : "final");
                printf("  %-28.28s", label);
                for (int i = 0; i < nref; i++) {
                    char b[32];
                    fmt_num(
                        json_object_get(
                            json_object_get(json_object_get(items[i].run, "metrics"), k), hows[h]),
                        b, sizeof b);
                    printf(" %14s", b);
                }
                printf("\n");
            }
        }
    }
    json_decref(pkeys);
    json_decref(mkeys);
out:
    for (int i = 0; i < nref; i++)
        json_decref(items[i].run);
    free(items);
    return rc;
}

/* ---- delete / push --------------------------------------------------------------------- */
static int do_delete(lt_store *s, int nref, char **refs) {
    if (nref < 1) {
        fprintf(stderr, "loratune runs delete: expected at least one RUN\n");
        return 2;
    }
    for (int i = 0; i < nref; i++) {
        int64_t id;
        if (lt_store_run_resolve(s, refs[i], &id) != LT_OK || lt_store_run_delete(s, id) != LT_OK)
            return fail("delete");
        printf("deleted run #%lld\n", (long long)id);
    }
    return 0;
}

static int do_push(lt_store *s, int nref, char **refs, const char *uri) {
    if (nref < 1) {
        fprintf(stderr, "loratune runs push: expected at least one RUN\n");
        return 2;
    }
    lt_mlflow_server srv = lt_cli_mlflow_server(uri && *uri ? uri : NULL);
    if (!srv.uri || !*srv.uri) {
        fprintf(
            stderr,
            "loratune runs push: no MLflow server: give --mlflow URI or set MLFLOW_TRACKING_URI\n");
        return 2;
    }
    for (int i = 0; i < nref; i++) {
        int64_t id;
        char mlid[64];
        if (lt_store_run_resolve(s, refs[i], &id) != LT_OK ||
            lt_mlflow_push_run(s, id, &srv, mlid) != LT_OK)
            return fail("push");
        printf("run #%lld -> MLflow run %s\n", (long long)id, mlid);
    }
    return 0;
}

int cmd_runs_reproduce(lt_store *s, const char *ref, int argc, char **argv);

int cmd_runs(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const char *store = NULL, *experiment = NULL, *sort = NULL, *mlflow = NULL;
    int as_json = 0, history = 0, desc = 0;
    long limit = 0;
    if (!strcmp(sub, "reproduce")) {
        /* everything after RUN goes to train; only --store before it */
        int i = 2;
        if (i + 1 < argc && !strcmp(argv[i], "--store")) {
            store = argv[i + 1];
            i += 2;
        }
        if (i >= argc || lt_cli_wants_help(argc - 1, argv + 1)) {
            usage(i >= argc ? stderr : stdout);
            return i >= argc ? 2 : 0;
        }
        lt_store *s;
        if (lt_store_open(lt_cli_store_dir(store), &s) != LT_OK) return fail(sub);
        lt_cli_store_warn(s, "runs reproduce");
        int rc = cmd_runs_reproduce(s, argv[i], argc - i - 1, argv + i + 1);
        lt_store_close(s);
        return rc;
    }
    char **refs = calloc((size_t)argc, sizeof *refs);
    int nref = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(refs);
            return 0;
        } else if (!strcmp(a, "--json"))
            as_json = 1;
        else if (!strcmp(a, "--history"))
            history = 1;
        else if (!strcmp(a, "--desc"))
            desc = 1;
        else if (!strcmp(a, "--store") && has)
            store = argv[++i];
        else if (!strcmp(a, "--experiment") && has)
            experiment = argv[++i];
        else if (!strcmp(a, "--sort") && has)
            sort = argv[++i];
        else if (!strcmp(a, "--mlflow") && has)
            mlflow = argv[++i];
        else if (!strcmp(a, "--limit") && has) {
            if (lt_cli_parse_int("runs", "--limit", argv[++i], &limit)) {
                free(refs);
                return 2;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "loratune runs %s: unknown option '%s' (or missing value)\n", sub, a);
            free(refs);
            return 2;
        } else
            refs[nref++] = argv[i];
    }
    int known = !strcmp(sub, "list") || !strcmp(sub, "show") || !strcmp(sub, "compare") ||
                !strcmp(sub, "delete") || !strcmp(sub, "push");
    if (!known) {
        fprintf(stderr, "loratune runs: unknown subcommand '%s'\n\n", sub);
        usage(stderr);
        free(refs);
        return 2;
    }
    if ((!strcmp(sub, "show") && nref != 1) || (!strcmp(sub, "list") && nref != 0)) {
        fprintf(stderr, "loratune runs %s: expected %s\n", sub,
                nref ? "no run arguments" : "one RUN");
        free(refs);
        return 2;
    }
    lt_store *s;
    if (lt_store_open(lt_cli_store_dir(store), &s) != LT_OK) {
        free(refs);
        return fail(sub);
    }
    {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "runs %s", sub);
        lt_cli_store_warn(s, cmd);
    }
    int rc;
    if (!strcmp(sub, "list"))
        rc = do_list(s, experiment, (int)limit, as_json);
    else if (!strcmp(sub, "show"))
        rc = do_show(s, refs[0], history, as_json);
    else if (!strcmp(sub, "compare"))
        rc = do_compare(s, nref, refs, sort, desc, as_json);
    else if (!strcmp(sub, "delete"))
        rc = do_delete(s, nref, refs);
    else
        rc = do_push(s, nref, refs, mlflow);
    lt_store_close(s);
    free(refs);
    return rc;
}
