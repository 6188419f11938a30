/* cmd_study.c - `loratune study create|ask|tell|show|report`: an ask/tell hyperparameter study
 * in a folder (include/loratune/tune.h; docs/TUNE.md), so any objective can drive the
 * optimizer from the command line. A study held by another process (one ask or tell at a time)
 * is waited for, up to LOCK_WAIT_MS. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loratune/core.h"
#include "loratune/tune.h"

#define LOCK_WAIT_MS 60000

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune study create --study DIR --space SPACE.json [--direction minimize|maximize]\n"
            "                             [--sampler gp|tpe|random|auto|sobol] [--seed S]\n"
            "                             [--n-startup N] [--warm-start OTHER_DIR]\n"
            "       loratune study ask    --study DIR [--json]\n"
            "       loratune study tell   --study DIR --trial N (--value V | --state failed|pruned)\n"
            "       loratune study report --study DIR --trial N --step S --value V\n"
            "                             [--prune-min-resource R [--reduction-factor E]\n"
            "                              [--min-early-stopping-rate S]]  (prints prune|continue)\n"
            "       loratune study show   --study DIR [--json]\n"
            "       loratune study importance --study DIR [--json]\n"
            "\n"
            "An ask/tell hyperparameter study kept in DIR/study.json (written atomically),\n"
            "or shared by workers on several machines in PostgreSQL: DIR as\n"
            "postgresql://user@host:port/dbname#NAME (docs/TUNE.md).\n"
            "SPACE.json maps each parameter name to\n"
            "  {\"type\": \"float\", \"low\": a, \"high\": b, \"log\": false}\n"
            "  {\"type\": \"int\", \"low\": a, \"high\": b, \"log\": false}\n"
            "  {\"type\": \"categorical\", \"choices\": [...]}\n"
            "ask prints {\"trial\": N, \"params\": {...}}; tell ends trial N with its value (or as\n"
            "failed / pruned); report records an intermediate value of a running trial (and with\n"
            "--prune-min-resource decides by successive halving whether to stop it); show\n"
            "prints the trials and the best one; importance each parameter's share of the\n"
            "objective's variance (fANOVA of the GP mean; docs/TUNE.md).\n"
            "Samplers: auto (default) and gp: Sobol for the first --n-startup trials (default\n"
            "clamp(dims+1, 5, 10)), then Gaussian-process BO with log expected improvement;\n"
            "tpe: 10 random trials, then Optuna's TPE (multivariate); random; sobol.\n"
            "Method: docs/TUNE.md.\n");
}

static int fail(const char *sub) {
    fprintf(stderr, "loratune study %s: %s\n", sub, lt_errmsg());
    return 1;
}

static lt_status open_waiting(const char *dir, lt_study **s) {
    for (int waited = 0;; waited += 50) {
        lt_status st = lt_study_open(dir, s);
        if (st != LT_ERR_BUSY || waited >= LOCK_WAIT_MS) return st;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int show_text(lt_study *s, const char *json) {
    json_t *o = json_loads(json, 0, NULL);
    if (!o) return 1;
    printf("study: %s, sampler %s, seed %lld, %d trials (%d complete)\n",
           json_string_value(json_object_get(o, "direction")),
           json_string_value(json_object_get(o, "sampler")),
           (long long)json_integer_value(json_object_get(o, "seed")),
           (int)json_integer_value(json_object_get(o, "n_trials")),
           (int)json_integer_value(json_object_get(o, "n_complete")));
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(o, "trials"), i, t) {
        json_t *v = json_object_get(t, "value");
        char *p = json_dumps(json_object_get(t, "params"), JSON_COMPACT | JSON_REAL_PRECISION(6));
        char val[64] = "-";
        if (json_is_number(v)) snprintf(val, sizeof val, "%.6g", json_number_value(v));
        printf("  %4zu  %-9s %12s  %s\n", i, json_string_value(json_object_get(t, "state")), val,
               p ? p : "");
        free(p);
    }
    json_t *b = json_object_get(o, "best");
    if (json_is_object(b)) {
        char *p = json_dumps(json_object_get(b, "params"), JSON_COMPACT | JSON_REAL_PRECISION(17));
        printf("best: trial %lld, value %.17g, params %s\n",
               (long long)json_integer_value(json_object_get(b, "trial")),
               json_number_value(json_object_get(b, "value")), p ? p : "");
        free(p);
    } else {
        printf("best: none (no complete trial)\n");
    }
    json_decref(o);
    (void)s;
    return 0;
}

int cmd_study(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const char *dir = NULL, *space = NULL, *direction = NULL, *sampler = NULL, *state = NULL;
    const char *trial_s = NULL, *value_s = NULL, *seed_s = NULL, *n0_s = NULL, *step_s = NULL;
    const char *minres_s = NULL, *eta_s = NULL, *rate_s = NULL, *warm = NULL;
    int as_json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            as_json = 1;
            continue;
        } else if (!strcmp(a, "--study")) slot = &dir;
        else if (!strcmp(a, "--space")) slot = &space;
        else if (!strcmp(a, "--direction")) slot = &direction;
        else if (!strcmp(a, "--sampler")) slot = &sampler;
        else if (!strcmp(a, "--seed")) slot = &seed_s;
        else if (!strcmp(a, "--n-startup")) slot = &n0_s;
        else if (!strcmp(a, "--trial")) slot = &trial_s;
        else if (!strcmp(a, "--value")) slot = &value_s;
        else if (!strcmp(a, "--state")) slot = &state;
        else if (!strcmp(a, "--step")) slot = &step_s;
        else if (!strcmp(a, "--prune-min-resource")) slot = &minres_s;
        else if (!strcmp(a, "--reduction-factor")) slot = &eta_s;
        else if (!strcmp(a, "--min-early-stopping-rate")) slot = &rate_s;
        else if (!strcmp(a, "--warm-start")) slot = &warm;
        if (!slot) {
            fprintf(stderr, "loratune study %s: unknown option '%s' (see loratune study --help)\n",
                    sub, a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loratune study %s: %s needs a value\n", sub, a);
            return 2;
        }
        *slot = argv[++i];
    }
    int is_create = !strcmp(sub, "create"), is_ask = !strcmp(sub, "ask"),
        is_tell = !strcmp(sub, "tell"), is_show = !strcmp(sub, "show"),
        is_report = !strcmp(sub, "report"), is_imp = !strcmp(sub, "importance");
    if (!is_create && !is_ask && !is_tell && !is_show && !is_report && !is_imp) {
        fprintf(stderr, "loratune study: unknown subcommand '%s' (create, ask, tell, report, "
                        "show, importance)\n", sub);
        return 2;
    }
    if (!dir) {
        fprintf(stderr, "loratune study %s: --study DIR is required\n", sub);
        return 2;
    }
    /* options that belong to another subcommand are refused, not ignored */
    struct { const char *v, *name; int ok; } own[] = {
        {space, "--space", is_create},         {direction, "--direction", is_create},
        {sampler, "--sampler", is_create},     {seed_s, "--seed", is_create},
        {n0_s, "--n-startup", is_create},      {warm, "--warm-start", is_create},      {trial_s, "--trial", is_tell || is_report},
        {value_s, "--value", is_tell || is_report}, {state, "--state", is_tell},
        {step_s, "--step", is_report},         {minres_s, "--prune-min-resource", is_report},
        {eta_s, "--reduction-factor", is_report}, {rate_s, "--min-early-stopping-rate", is_report},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (own[i].v && !own[i].ok) {
            fprintf(stderr, "loratune study %s: %s is not an option of %s\n", sub, own[i].name,
                    sub);
            return 2;
        }

    if (is_create) {
        if (!space) {
            fprintf(stderr, "loratune study create: --space SPACE.json is required\n");
            return 2;
        }
        lt_study_options o = {0};
        if (direction) {
            if (strcmp(direction, "minimize") && strcmp(direction, "maximize")) {
                fprintf(stderr, "loratune study create: --direction: expected minimize or "
                                "maximize, got '%s'\n", direction);
                return 2;
            }
            o.maximize = !strcmp(direction, "maximize");
        }
        if (sampler && lt_sampler_from_name(sampler, &o.sampler)) {
            fprintf(stderr, "loratune study create: --sampler: expected gp, tpe, random, auto or "
                            "sobol, got '%s'\n", sampler);
            return 2;
        }
        long v;
        if (seed_s) {
            if (lt_cli_parse_int("study create", "--seed", seed_s, &v)) return 2;
            if (v < 0) {
                fprintf(stderr, "loratune study create: --seed: expected an integer >= 0\n");
                return 2;
            }
            o.seed = (uint64_t)v;
        }
        if (n0_s) {
            if (lt_cli_parse_int("study create", "--n-startup", n0_s, &v)) return 2;
            if (v < 1 || v > 1000000) {
                fprintf(stderr, "loratune study create: --n-startup: expected 1..1000000\n");
                return 2;
            }
            o.n_startup = (int)v;
        }
        char *text = NULL;
        size_t len;
        if (lt_file_read_all(space, &text, &len)) return fail(sub);
        lt_study *s;
        lt_status st = lt_study_create(dir, text, &o, &s);
        free(text);
        if (st) {
            /* the space errors say "space: ..."; name the file too */
            fprintf(stderr, "loratune study create: %s: %s\n", space, lt_errmsg());
            return 1;
        }
        printf("study created in %s: %d parameters, sampler %s\n", dir, lt_study_n_params(s),
               sampler ? sampler : "auto");
        int used = 0, skipped = 0;
        if (warm && lt_study_warm_start(s, warm, &used, &skipped)) {
            /* the study stays (created, with no warm start): say so */
            fprintf(stderr, "loratune study create: --warm-start: %s (the study was created "
                            "without it)\n", lt_errmsg());
            lt_study_close(s);
            return 1;
        }
        if (warm)
            printf("warm start: %d complete trials of %s (%d outside this space, skipped)\n",
                   used, warm, skipped);
        lt_study_close(s);
        return 0;
    }

    long trial = -1;
    double value = NAN;
    lt_trial_state ts = LT_TRIAL_COMPLETE;
    if (is_tell || is_report) {
        if (!trial_s) {
            fprintf(stderr, "loratune study %s: --trial N is required\n", sub);
            return 2;
        }
        if (lt_cli_parse_int(sub, "--trial", trial_s, &trial)) return 2;
        if (value_s && lt_cli_parse_float(sub, "--value", value_s, &value)) return 2;
        if (is_tell) {
            if (state) {
                if (!strcmp(state, "failed")) ts = LT_TRIAL_FAILED;
                else if (!strcmp(state, "pruned")) ts = LT_TRIAL_PRUNED;
                else if (!strcmp(state, "complete")) ts = LT_TRIAL_COMPLETE;
                else {
                    fprintf(stderr, "loratune study tell: --state: expected failed, pruned or "
                                    "complete, got '%s'\n", state);
                    return 2;
                }
            }
            if (ts == LT_TRIAL_COMPLETE && !value_s) {
                fprintf(stderr, "loratune study tell: --value V (or --state failed|pruned) is "
                                "required\n");
                return 2;
            }
            if (ts != LT_TRIAL_COMPLETE && value_s) {
                fprintf(stderr, "loratune study tell: --value goes with a complete trial, not "
                                "--state %s\n", state);
                return 2;
            }
        } else {
            long step;
            if (!step_s || !value_s) {
                fprintf(stderr, "loratune study report: --step S and --value V are required\n");
                return 2;
            }
            if (lt_cli_parse_int(sub, "--step", step_s, &step)) return 2;
            trial = trial < 0 ? -1 : trial;
            lt_prune_opts po = {.reduction_factor = 3};
            long v;
            if (minres_s) {
                if (lt_cli_parse_int(sub, "--prune-min-resource", minres_s, &v)) return 2;
                po.min_resource = v;
            }
            if (eta_s) {
                if (lt_cli_parse_int(sub, "--reduction-factor", eta_s, &v)) return 2;
                po.reduction_factor = (int)v;
            }
            if (rate_s) {
                if (lt_cli_parse_int(sub, "--min-early-stopping-rate", rate_s, &v)) return 2;
                po.min_early_stopping_rate = (int)v;
            }
            if ((eta_s || rate_s) && !minres_s) {
                fprintf(stderr, "loratune study report: --reduction-factor and "
                                "--min-early-stopping-rate go with --prune-min-resource R\n");
                return 2;
            }
            if (minres_s && (po.min_resource < 1 || po.reduction_factor < 2 ||
                             po.min_early_stopping_rate < 0)) {
                fprintf(stderr, "loratune study report: expected --prune-min-resource >= 1, "
                                "--reduction-factor >= 2, --min-early-stopping-rate >= 0\n");
                return 2;
            }
            lt_study *s;
            if (open_waiting(dir, &s)) return fail(sub);
            int t = (int)(trial > 2147483647L ? -1 : trial);
            lt_status st = lt_study_report(s, t, step, value);
            int prune = 0, rung = 0;
            if (!st && minres_s) st = lt_study_should_prune(s, t, &po, &prune, &rung);
            lt_study_close(s);
            if (st) return fail(sub);
            if (minres_s) printf("%s\n", prune ? "prune" : "continue");
            return 0;
        }
    }
    lt_study *s;
    /* show reads without the lock: a study a running `loratune tune` holds can be watched */
    if (is_show || is_imp ? lt_study_open_readonly(dir, &s) : open_waiting(dir, &s))
        return fail(sub);
    int rc = 0;
    if (is_ask) {
        int n;
        char *j = NULL;
        if (lt_study_ask(s, &n) || lt_study_trial_json(s, n, &j)) {
            rc = fail(sub);
        } else if (as_json) {
            printf("%s\n", j);
        } else {
            printf("trial %d:", n);
            for (int i = 0; i < lt_study_n_params(s); i++) {
                char *c = NULL;
                if (lt_study_param_choice_json(s, n, lt_study_param_name(s, i), &c) == LT_OK)
                    printf(" %s=%s", lt_study_param_name(s, i), c);
                free(c);
            }
            printf("\n");
        }
        free(j);
    } else if (is_imp) {
        int np = lt_study_n_params(s), nu = 0;
        double imp[np + 1], mf = 0;
        if (lt_study_param_importance(s, imp, &mf, &nu)) {
            rc = fail(sub);
        } else {
            json_t *o = json_object(), *p = json_object();
            for (int i = 0; i < np; i++)
                json_object_set_new(p, lt_study_param_name(s, i), json_real(imp[i]));
            json_object_set_new(o, "importance", p);
            json_object_set_new(o, "main_effects_fraction", json_real(mf));
            json_object_set_new(o, "n_complete", json_integer(nu));
            json_object_set_new(o, "method", json_string("fANOVA of the GP posterior mean"));
            if (as_json) {
                char *j = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
                printf("%s\n", j ? j : "{}");
                free(j);
            } else {
                for (int i = 0; i < np; i++)
                    printf("%-24s %.4f\n", lt_study_param_name(s, i), imp[i]);
                printf("(fANOVA of the GP mean over %d complete trials; main effects explain "
                       "%.0f%% of its variance)\n",
                       nu, 100 * mf);
            }
            json_decref(o);
        }
    } else if (is_tell) {
        if (trial > 2147483647L) trial = -1;
        if (lt_study_tell(s, (int)trial, ts, value)) rc = fail(sub);
    } else {
        char *j = NULL;
        if (lt_study_summary_json(s, &j, NULL)) rc = fail(sub);
        else if (as_json) printf("%s\n", j);
        else rc = show_text(s, j);
        free(j);
    }
    lt_study_close(s);
    return rc;
}
