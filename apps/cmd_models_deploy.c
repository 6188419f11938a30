/* cmd_models_deploy.c - `loratune models deploy NAME@VERSION` and `loratune models rollback
 * NAME`: ask a running `loratune serve` to serve a registry version under the stable name NAME
 * (POST /api/deployments; a canary share with --canary) or to roll it back (POST
 * /api/deployments/NAME/rollback). The server does the work (it owns the served adapters and
 * records the deployment in its store); this is its HTTP client (libcurl). */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

typedef struct {
    char *buf;
    size_t len;
} body;

static size_t on_data(char *p, size_t sz, size_t n, void *ctx) {
    body *b = ctx;
    char *nb = realloc(b->buf, b->len + sz * n + 1);
    if (!nb) return 0;
    memcpy(nb + b->len, p, sz * n);
    b->len += sz * n;
    nb[b->len] = 0;
    b->buf = nb;
    return sz * n;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune models deploy NAME@VERSION [--canary SHARE] [--holdout DATASET]\n"
            "                              [--server URL] [--token T] [--json]\n"
            "       loratune models rollback NAME [--server URL] [--token T] [--json]\n"
            "\n"
            "deploy: the running server (`loratune serve --model ...`) serves version VERSION of\n"
            "the registered model NAME (its store is WORK/store) as model NAME; with --canary\n"
            "SHARE (0 < SHARE < 1) beside the stable version, for that share of the requests.\n"
            "--holdout names an uploaded dataset: the held-out set of the retraining gate.\n"
            "rollback: drops the canary, or else serves the previous stable version again.\n"
            "  --server URL   default $LORATUNE_SERVER or http://127.0.0.1:8080\n"
            "  --token T      default $LORATUNE_TOKEN\n");
}

int cmd_models_deploy(int argc, char **argv) {
    const char *sub = argv[1];
    const char *server = getenv("LORATUNE_SERVER"), *token = getenv("LORATUNE_TOKEN");
    const char *target = NULL, *holdout = NULL;
    double canary = 0;
    int as_json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json"))
            as_json = 1;
        else if (!strcmp(a, "--server") && has)
            server = argv[++i];
        else if (!strcmp(a, "--token") && has)
            token = argv[++i];
        else if (!strcmp(a, "--holdout") && has && !strcmp(sub, "deploy"))
            holdout = argv[++i];
        else if (!strcmp(a, "--canary") && has && !strcmp(sub, "deploy")) {
            if (lt_cli_parse_float("models deploy", "--canary", argv[++i], &canary)) return 2;
            if (!(canary > 0 && canary < 1)) {
                fprintf(stderr,
                        "loratune models deploy: --canary: expected a share between 0 "
                        "and 1 (exclusive), got %s\n",
                        argv[i]);
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "loratune models %s: unknown option '%s' (or missing value)\n", sub, a);
            return 2;
        } else if (!target)
            target = a;
        else {
            fprintf(stderr, "loratune models %s: too many arguments\n", sub);
            return 2;
        }
    }
    if (!server || !*server) server = "http://127.0.0.1:8080";
    if (!target) {
        fprintf(stderr, "loratune models %s: expected %s\n", sub,
                !strcmp(sub, "deploy") ? "NAME@VERSION" : "NAME");
        return 2;
    }
    char url[4096], name[256];
    json_t *req = NULL;
    if (!strcmp(sub, "deploy")) {
        const char *at = strrchr(target, '@');
        char *end = NULL;
        long v = at ? strtol(at + 1, &end, 10) : 0;
        if (!at || at == target || (size_t)(at - target) >= sizeof name || !end || *end || v < 1) {
            fprintf(stderr,
                    "loratune models deploy: expected NAME@VERSION (a registered model and "
                    "a version number, e.g. sql@3), got '%s'\n",
                    target);
            return 2;
        }
        snprintf(name, sizeof name, "%.*s", (int)(at - target), target);
        req = json_pack("{s:s,s:i}", "model", name, "version", (int)v);
        if (canary > 0) json_object_set_new(req, "canary", json_real(canary));
        if (holdout) json_object_set_new(req, "holdout", json_string(holdout));
        snprintf(url, sizeof url, "%s/api/deployments", server);
    } else {
        for (const char *p = target; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p)) {
                fprintf(stderr, "loratune models rollback: '%s' is not a deployment name\n",
                        target);
                return 2;
            }
        req = json_object();
        snprintf(url, sizeof url, "%s/api/deployments/%s/rollback", server, target);
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[1024];
    if (token && *token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hd = curl_slist_append(hd, auth);
    }
    body b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 600L);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    free(text);
    int rc = 0;
    json_t *o = b.buf ? json_loads(b.buf, 0, NULL) : NULL;
    if (cc != CURLE_OK) {
        fprintf(stderr, "loratune models %s: %s: %s\n", sub, url, curl_easy_strerror(cc));
        rc = 1;
    } else if (code != 200) {
        const char *m = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
        fprintf(stderr, "loratune models %s: the server answered HTTP %ld: %s\n", sub, code,
                m ? m : (b.buf ? b.buf : ""));
        rc = 1;
    } else if (as_json) {
        printf("%s\n", b.buf);
    } else {
        json_t *st = json_object_get(o, "stable"), *ca = json_object_get(o, "canary");
        printf("%s: stable %s", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(st, "model")));
        if (json_is_object(ca))
            printf(", canary %s for %.3g of requests",
                   json_string_value(json_object_get(ca, "model")),
                   json_number_value(json_object_get(o, "canary_share")));
        json_t *run = json_object_get(o, "deploy_run");
        if (json_is_integer(run)) printf(" (deploy run #%lld)", (long long)json_integer_value(run));
        printf("\n");
    }
    json_decref(o);
    free(b.buf);
    return rc;
}
