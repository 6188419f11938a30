/* server.c - the HTTP side of `loratune serve` (libmicrohttpd, one thread per connection):
 * listening, the checks every request passes (token, Host / Origin, body limits), routing to
 * datasets.c / jobs.c / runs.c and to the serving side (openai.c: /v1 and /ready; metrics.c:
 * /metrics; /health here), and the JSON reply helpers.
 *
 * A request's life in the access handler: the first call (headers only) checks the route, the
 * token and the announced body size, and may reply at once (401 / 403 / 404 / 405 / 413 / 415:
 * MHD then drops the body and closes the connection); the next calls hand over the body (a
 * JSON body is gathered up to max_body bytes; an upload is streamed to disk); the last call
 * (no more data) dispatches. A body that grows past its limit is read and dropped, then 413. */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/io.h"
#include "serve_internal.h"
#include "web.h"

#define DEFAULT_MAX_BODY (1ll << 20)
#define DEFAULT_MAX_UPLOAD (10ll << 30)
#define DEFAULT_QUOTA (50ll << 30)

/* ---- helpers ---------------------------------------------------------------------------- */
double lt_serve_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A JSON reply with one extra header (hname NULL: none); takes body. */
static enum MHD_Result reply_json_hdr(struct MHD_Connection *c, unsigned status, json_t *body,
                                      const char *hname, const char *hval) {
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(body);
    if (!text) return MHD_NO;
    size_t n = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text); /* jansson's allocation (json_dumps), not the library's */
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname) MHD_add_response_header(r, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result lt_reply_json(struct MHD_Connection *c, unsigned status, json_t *body) {
    return reply_json_hdr(c, status, body, NULL, NULL);
}

/* Every connection's socket context is its server (set by on_connection), so that replies
 * made from anywhere can scrub the server's paths. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) *socket_context = cls;
}

static lt_server *server_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Occurrences of from replaced by to in text, appended to out (lt_malloc'd). */
static char *replace_all(const char *text, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = text; fl && (p = strstr(p, from)); p += fl)
        n++;
    char *out = lt_malloc(strlen(text) + n * (tl > fl ? tl - fl : 0) + 1);
    if (!out) return NULL;
    char *w = out;
    for (const char *p = text; *p;) {
        if (fl && !strncmp(p, from, fl)) {
            memcpy(w, to, tl);
            w += tl;
            p += fl;
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    return out;
}

char *lt_serve_scrub(const lt_server *s, const char *text) {
    /* the longer prefix first: the models folder may lie inside the work folder */
    int models_first = strlen(s->models) > strlen(s->work);
    const char *a = models_first ? s->models : s->work, *an = models_first ? "MODELS" : "WORK";
    const char *b = models_first ? s->work : s->models, *bn = models_first ? "WORK" : "MODELS";
    char *t1 = a[0] == '/' ? replace_all(text, a, an) : lt_strdup(text);
    if (!t1 || b[0] != '/') return t1;
    char *t2 = replace_all(t1, b, bn);
    lt_free(t1);
    return t2;
}

json_t *lt_serve_scrub_json(const lt_server *s, const json_t *v) {
    if (json_is_string(v)) {
        char *t = lt_serve_scrub(s, json_string_value(v));
        json_t *r = t ? json_string(t) : NULL;
        lt_free(t);
        return r;
    }
    if (json_is_object(v)) { /* NULL, not a partial copy, when anything inside fails */
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            json_t *y = o ? lt_serve_scrub_json(s, x) : NULL;
            if (!y || json_object_set_new(o, k, y)) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            json_t *y = a ? lt_serve_scrub_json(s, x) : NULL;
            if (!y || json_array_append_new(a, y)) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    return json_deep_copy(v);
}

static json_t *error_body(struct MHD_Connection *c, const char *code, const char *fmt, va_list ap) {
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    lt_server *s = server_of(c);
    char *clean = s ? lt_serve_scrub(s, msg) : NULL;
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", clean ? clean : msg);
    lt_free(clean);
    return o;
}

enum MHD_Result lt_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    json_t *o = error_body(c, code, fmt, ap);
    va_end(ap);
    if (status == MHD_HTTP_UNAUTHORIZED)
        return reply_json_hdr(c, status, o, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                              "Bearer realm=\"loratune\"");
    return lt_reply_json(c, status, o);
}

static enum MHD_Result reply_405(struct MHD_Connection *c, const char *allow, const char *fmt,
                                 ...) {
    va_list ap;
    va_start(ap, fmt);
    json_t *o = error_body(c, "method_not_allowed", fmt, ap);
    va_end(ap);
    return reply_json_hdr(c, MHD_HTTP_METHOD_NOT_ALLOWED, o, MHD_HTTP_HEADER_ALLOW, allow);
}

int lt_serve_id_valid(const char *id, const char *prefix) {
    size_t p = strlen(prefix);
    if (!id || strncmp(id, prefix, p) || strlen(id) != p + 16) return 0;
    for (const char *q = id + p; *q; q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f'))) return 0;
    return 1;
}

lt_status lt_serve_new_id(const char *prefix, char out[LT_SERVE_ID_LEN + 1]) {
    unsigned char b[8];
    if (RAND_bytes(b, sizeof b) != 1) return lt_error(LT_ERR_INTERNAL, "no random bytes for an id");
    int n = snprintf(out, LT_SERVE_ID_LEN + 1, "%s", prefix);
    for (int i = 0; i < 8; i++)
        n += snprintf(out + n, LT_SERVE_ID_LEN + 1 - n, "%02x", b[i]);
    return LT_OK;
}

lt_status lt_serve_write_json(const char *path, const json_t *obj) {
    char *text = json_dumps(obj, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    if (!text) return lt_error(LT_ERR_NOMEM, "%s: could not serialize", path);
    lt_status st = lt_file_write_atomic(path, text, strlen(text));
    free(text);
    return st;
}

int lt_serve_host_is_loopback(const char *host) {
    if (!host || !*host) return 1;
    if (!strcasecmp(host, "localhost")) return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* ---- per-request state ------------------------------------------------------------------ */
typedef enum {
    R_NONE = 0,
    R_HEALTH,
    R_OPENAPI,
    R_MODELS,
    R_OPTIONS,
    R_DATASETS,      /* GET list, POST upload */
    R_DATASET,       /* GET, DELETE */
    R_DATASET_CHECK, /* POST validate */
    R_DATASET_PREVIEW, /* POST preview + token statistics */
    R_JOBS,          /* GET list, POST create */
    R_JOB,           /* GET */
    R_JOB_CANCEL,    /* POST */
    R_JOB_RESUME,    /* POST */
    R_JOB_EVENTS,    /* GET (SSE) */
    R_JOB_ADAPTER,   /* GET download */
    R_JOB_MERGED,    /* GET the merged model, POST make it (merged.c) */
    R_JOB_STUDY,     /* GET: a tune / compare job's studies */
    R_RUNS,          /* GET */
    R_RUN,           /* GET */
    R_RUN_METRICS,   /* GET */
    R_WEB,           /* GET: a page of the web interface (web.c) */
    R_PLAN,          /* POST: memory estimate (plan.c) */
    R_REGISTRY,      /* GET list, POST register (registry.c) */
    R_REGISTRY_STAGE, /* POST: promote a version */
    R_LIVE,          /* GET /health */
    R_READY,         /* GET /ready */
    R_METRICS,       /* GET /metrics */
    R_V1_MODELS,     /* GET */
    R_V1_COMPLETIONS, /* POST */
    R_V1_CHAT,       /* POST */
    R_V1_ADAPTERS,   /* GET list, POST load */
    R_V1_ADAPTER,    /* DELETE unload */
    R_DEPLOYMENTS,   /* GET list, POST deploy (deploy.c) */
    R_DEPLOY_ROLLBACK, /* POST */
    R_DEPLOY_EVALUATE, /* POST */
    R_ALERTS,        /* POST: Alertmanager's webhook (deploy.c) */
} route_kind;

typedef struct {
    route_kind route;
    const char *allow; /* the methods of the path (static) */
    char id[64];
    char file[64];
    int is_post, is_del;
    int body_json; /* gather the body as JSON */
    char *body;
    size_t len, cap;
    int too_big;
    lt_upload *up;
} request;

/* Splits url into at most 6 segments of the path; returns the count (-1: too many / too
 * long). An empty segment (//) counts. */
static int split_path(const char *url, char seg[6][64]) {
    int n = 0;
    if (*url != '/') return -1;
    const char *p = url + 1;
    while (1) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (n >= 6 || l >= 64) return -1;
        memcpy(seg[n], p, l);
        seg[n][l] = 0;
        n++;
        if (!e) break;
        p = e + 1;
    }
    return n;
}

/* The methods each route takes (the Allow header of a 405). */
static const char *allowed(route_kind k) {
    switch (k) {
    case R_DATASETS:
    case R_JOBS:
    case R_V1_ADAPTERS:
    case R_DEPLOYMENTS:
    case R_REGISTRY:
    case R_JOB_MERGED:
        return "GET, HEAD, POST";
    case R_DATASET_CHECK:
    case R_DATASET_PREVIEW:
    case R_JOB_CANCEL:
    case R_JOB_RESUME:
    case R_PLAN:
    case R_V1_COMPLETIONS:
    case R_V1_CHAT:
    case R_DEPLOY_ROLLBACK:
    case R_DEPLOY_EVALUATE:
    case R_ALERTS:
    case R_REGISTRY_STAGE:
        return "POST";
    case R_V1_ADAPTER:
        return "DELETE";
    case R_DATASET:
        return "GET, HEAD, DELETE";
    default:
        return "GET, HEAD";
    }
}

static int pick(request *q, route_kind k, int method_ok) {
    q->allow = allowed(k);
    if (!method_ok) return -1;
    q->route = k;
    return 1;
}

/* The route for (method, url); 0 unknown path (404), -1 known path wrong method (405). id /
 * file are the path's variable parts, not yet checked. */
static int route(const char *method, const char *url, request *q) {
    char seg[6][64];
    int n = split_path(url, seg);
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int post = !strcmp(method, "POST");
    int del = !strcmp(method, "DELETE");
    q->is_post = post;
    q->is_del = del;
    if (n < 0) return 0;
    if (n == 1 && !strcmp(seg[0], "openapi.json")) return pick(q, R_OPENAPI, get);
    if (n == 1 && !strcmp(seg[0], "health")) return pick(q, R_LIVE, get);
    if (n == 1 && !strcmp(seg[0], "ready")) return pick(q, R_READY, get);
    if (n == 1 && !strcmp(seg[0], "metrics")) return pick(q, R_METRICS, get);
    if (n >= 2 && !strcmp(seg[0], "v1")) { /* the OpenAI-compatible API (openai.c) */
        if (n == 2 && !strcmp(seg[1], "models")) return pick(q, R_V1_MODELS, get);
        if (n == 2 && !strcmp(seg[1], "completions")) return pick(q, R_V1_COMPLETIONS, post);
        if (n == 3 && !strcmp(seg[1], "chat") && !strcmp(seg[2], "completions"))
            return pick(q, R_V1_CHAT, post);
        if (n == 2 && !strcmp(seg[1], "adapters")) return pick(q, R_V1_ADAPTERS, get || post);
        if (n == 3 && !strcmp(seg[1], "adapters")) {
            snprintf(q->id, sizeof q->id, "%s", seg[2]);
            return pick(q, R_V1_ADAPTER, del);
        }
        return 0;
    }
    if (n == 1 && lt_web_find(url)) { /* url is short: it names an asset */
        snprintf(q->file, sizeof q->file, "%s", url);
        return pick(q, R_WEB, get);
    }
    if (n < 2 || strcmp(seg[0], "api")) return 0;
    const char *a = seg[1];
    if (n == 2 && !strcmp(a, "health")) return pick(q, R_HEALTH, get);
    if (n == 2 && !strcmp(a, "models")) return pick(q, R_MODELS, get);
    if (n == 2 && !strcmp(a, "options")) return pick(q, R_OPTIONS, get);
    if (n == 2 && !strcmp(a, "datasets")) return pick(q, R_DATASETS, get || post);
    if (n == 2 && !strcmp(a, "jobs")) return pick(q, R_JOBS, get || post);
    if (n == 2 && !strcmp(a, "runs")) return pick(q, R_RUNS, get);
    if (n == 2 && !strcmp(a, "plan")) return pick(q, R_PLAN, post);
    if (n == 2 && !strcmp(a, "deployments")) return pick(q, R_DEPLOYMENTS, get || post);
    if (n == 2 && !strcmp(a, "alerts")) return pick(q, R_ALERTS, post);
    if (n == 2 && !strcmp(a, "registry")) return pick(q, R_REGISTRY, get || post);
    if (n >= 3) snprintf(q->id, sizeof q->id, "%s", seg[2]);
    if (!strcmp(a, "datasets")) {
        if (n == 3) return pick(q, R_DATASET, get || del);
        if (n == 4 && !strcmp(seg[3], "validate")) return pick(q, R_DATASET_CHECK, post);
        if (n == 4 && !strcmp(seg[3], "preview")) return pick(q, R_DATASET_PREVIEW, post);
    } else if (!strcmp(a, "jobs")) {
        if (n == 3) return pick(q, R_JOB, get);
        if (n == 4 && !strcmp(seg[3], "cancel")) return pick(q, R_JOB_CANCEL, post);
        if (n == 4 && !strcmp(seg[3], "resume")) return pick(q, R_JOB_RESUME, post);
        if (n == 4 && !strcmp(seg[3], "events")) return pick(q, R_JOB_EVENTS, get);
        if (n == 4 && !strcmp(seg[3], "study")) return pick(q, R_JOB_STUDY, get);
        if (n == 4 && !strcmp(seg[3], "merged")) return pick(q, R_JOB_MERGED, get || post);
        if (n == 5 && !strcmp(seg[3], "adapter")) {
            snprintf(q->file, sizeof q->file, "%s", seg[4]);
            return pick(q, R_JOB_ADAPTER, get);
        }
    } else if (!strcmp(a, "runs")) {
        if (n == 3) return pick(q, R_RUN, get);
        if (n == 4 && !strcmp(seg[3], "metrics")) return pick(q, R_RUN_METRICS, get);
    } else if (!strcmp(a, "deployments")) {
        if (n == 4 && !strcmp(seg[3], "rollback")) return pick(q, R_DEPLOY_ROLLBACK, post);
        if (n == 4 && !strcmp(seg[3], "evaluate")) return pick(q, R_DEPLOY_EVALUATE, post);
    } else if (!strcmp(a, "registry")) {
        if (n == 4 && !strcmp(seg[3], "stage")) return pick(q, R_REGISTRY_STAGE, post);
    }
    return 0;
}

/* --tls-cert / --tls-key: read both files and check them with OpenSSL first (libmicrohttpd
 * would only fail to start, without saying why): a PEM certificate, a PEM private key, and a
 * key that belongs to the certificate. On success s->tls_cert / tls_key hold the PEM text. */
static lt_status tls_load(lt_server *s, const char *cert, const char *key) {
    if (!cert || !*cert || !key || !*key)
        return lt_error(LT_ERR_ARG, "--tls-cert and --tls-key go together (a PEM certificate "
                                    "and its private key)");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "this libmicrohttpd was built without TLS (Debian's links GnuTLS)");
    size_t n;
    if (lt_file_read_all(cert, &s->tls_cert, &n))
        return lt_error(LT_ERR_IO, "--tls-cert %s: %s", cert, lt_errmsg());
    if (lt_file_read_all(key, &s->tls_key, &n))
        return lt_error(LT_ERR_IO, "--tls-key %s: %s", key, lt_errmsg());
    BIO *b = BIO_new_mem_buf(s->tls_cert, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(s->tls_key, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"") : NULL;
    BIO_free(b);
    lt_status st = LT_OK;
    if (!x)
        st = lt_error(LT_ERR_FORMAT,
                      "--tls-cert %s: not a PEM certificate (-----BEGIN "
                      "CERTIFICATE-----)",
                      cert);
    else if (!k)
        st = lt_error(LT_ERR_FORMAT,
                      "--tls-key %s: not an unencrypted PEM private key "
                      "(-----BEGIN PRIVATE KEY-----)",
                      key);
    else if (X509_check_private_key(x, k) != 1)
        st = lt_error(LT_ERR_ARG,
                      "--tls-key %s does not belong to the certificate in "
                      "--tls-cert %s",
                      key, cert);
    X509_free(x);
    EVP_PKEY_free(k);
    return st;
}

/* Constant-time: both sides hashed first, so neither the length nor the content of the
 * expected token shows in the time taken. */
static int token_ok(const lt_server *s, const char *given) {
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s->token, strlen(s->token), a);
    SHA256((const unsigned char *)given, strlen(given), b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* host[:port] (or [v6]:port) names a loopback host. */
static int host_header_loopback(const char *h) {
    char host[256];
    if (!h || strlen(h) >= sizeof host) return 0;
    if (h[0] == '[') {
        const char *e = strchr(h, ']');
        if (!e) return 0;
        snprintf(host, sizeof host, "%.*s", (int)(e - h - 1), h + 1);
    } else {
        const char *colon = strchr(h, ':');
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - h) : (int)strlen(h), h);
    }
    return lt_serve_host_is_loopback(host);
}

/* Origin "scheme://host[:port]": its authority equals the Host header. */
static int origin_matches(const char *origin, const char *host) {
    const char *p = strstr(origin, "://");
    if (!p || !host) return 0;
    return !strcasecmp(p + 3, host);
}

/* The checks of the first call; returns MHD_YES after queuing a reply, or -1 to go on. */
static int first_checks(lt_server *s, struct MHD_Connection *c, const char *method, const char *url,
                        request *q) {
    int r = route(method, url, q);
    if (r == 0)
        return lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such endpoint: %s %s", method,
                              url);
    if (r < 0)
        return reply_405(c, q->allow, "%s is not allowed on %s (allowed: %s)", method, url,
                         q->allow);
    const char *hosth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin && !origin_matches(origin, hosth)) /* "null" too: sandboxed frames send it */
        return lt_reply_error(c, MHD_HTTP_FORBIDDEN, "forbidden_origin",
                              "cross-origin request from %s refused", origin);
    if (!s->has_token) {
        if (!host_header_loopback(hosth))
            return lt_reply_error(c, MHD_HTTP_FORBIDDEN, "forbidden_host",
                                  "Host '%s' is not a loopback name; this server has no token "
                                  "and answers local clients only",
                                  hosth ? hosth : "");
    } else if (q->route != R_HEALTH && q->route != R_OPENAPI && q->route != R_WEB &&
               q->route != R_LIVE && q->route != R_READY) {
        const char *auth =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncasecmp(auth, "Bearer ", 7))
            return lt_reply_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                                  "missing 'Authorization: Bearer TOKEN' header");
        if (!token_ok(s, auth + 7))
            return lt_reply_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized", "wrong token");
    }
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    long long clen = cl ? atoll(cl) : -1;
    if (!q->is_post) return -1;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (q->route == R_DATASETS) {
        if (ct && strncasecmp(ct, "application/octet-stream", 24) &&
            strncasecmp(ct, "application/x-ndjson", 20) &&
            strncasecmp(ct, "application/jsonl", 17) && strncasecmp(ct, "application/json", 16))
            return lt_reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                  "upload the file itself as the body (Content-Type "
                                  "application/octet-stream, application/x-ndjson or "
                                  "application/json), got '%s'",
                                  ct);
        const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
        if (name && strlen(name) > 255)
            return lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                                  "name: at most 255 characters");
        int too_big = 0;
        char err[512];
        q->up = lt_upload_begin(s, name, clen, &too_big, err, sizeof err);
        if (!q->up)
            return too_big
                       ? lt_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", "%s", err)
                       : lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "%s", err);
        return -1;
    }
    /* every other POST takes a JSON body (or none) */
    if (ct && strncasecmp(ct, "application/json", 16))
        return lt_reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                              "expected Content-Type application/json, got '%s'", ct);
    if (clen > s->max_body)
        return lt_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                              "request body of %lld bytes is over the limit of %lld bytes", clen,
                              (long long)s->max_body);
    q->body_json = 1;
    return -1;
}

static enum MHD_Result reply_openapi(struct MHD_Connection *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        lt_serve_openapi_json_len, (void *)lt_serve_openapi_json, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_health(lt_server *s, struct MHD_Connection *c) {
    pthread_mutex_lock(&s->mu);
    int queued = 0;
    for (int i = 0; i < s->n_jobs; i++)
        queued += s->jobs[i]->status == JOB_QUEUED;
    json_t *running = json_array();
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i]->status == JOB_RUNNING)
            json_array_append_new(running, json_string(s->jobs[i]->id));
    json_t *first = json_array_get(running, 0);
    json_t *o = json_pack("{s:s,s:s,s:i,s:O,s:o,s:i,s:I,s:I}", "status", "ok", "version",
                          LT_GIT_REV, "queued", queued, "running", first ? first : json_null(),
                          "running_jobs", running, "skipped_jobs", s->skipped_jobs,
                          "memory_budget_bytes", (json_int_t)s->mem_budget,
                          "memory_planned_bytes", (json_int_t)s->mem_planned);
    pthread_mutex_unlock(&s->mu);
    return lt_reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result dispatch(lt_server *s, struct MHD_Connection *c, request *q) {
    json_t *body = NULL;
    if (q->route == R_ALERTS && !s->has_token) /* it starts training: never unauthenticated */
        return lt_reply_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
                              "the alert webhook needs a server token (--token or "
                              "LORATUNE_TOKEN), sent by Alertmanager as a bearer token");
    if (q->body_json && q->len) {
        json_error_t e;
        body = json_loadb(q->body, q->len, JSON_REJECT_DUPLICATES, &e);
        if (!body && q->route >= R_V1_MODELS) {
            if (q->route == R_V1_COMPLETIONS || q->route == R_V1_CHAT)
                lt_metrics_request(s, "", q->route == R_V1_CHAT ? "chat" : "completions", 400,
                                   NULL);
            return lt_oai_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "bad_json",
                                "request body: invalid JSON at line %d, column %d: %s", e.line,
                                e.column, e.text);
        }
        if (!body)
            return lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                                  "request body: invalid JSON at line %d, column %d: %s", e.line,
                                  e.column, e.text);
        if (!json_is_object(body)) {
            json_decref(body);
            return lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                                  "request body: expected a JSON object");
        }
    }
    enum MHD_Result r = MHD_NO;
    switch (q->route) {
    case R_HEALTH:
        r = reply_health(s, c);
        break;
    case R_OPENAPI:
        r = reply_openapi(c);
        break;
    case R_MODELS:
        r = lt_models_list(s, c);
        break;
    case R_OPTIONS:
        r = lt_options_list(s, c);
        break;
    case R_DATASETS:
        if (q->up) {
            r = lt_upload_end(q->up, c);
            q->up = NULL;
        } else {
            r = lt_datasets_list(s, c);
        }
        break;
    case R_DATASET:
        r = q->is_del ? lt_dataset_delete(s, c, q->id) : lt_dataset_get(s, c, q->id);
        break;
    case R_DATASET_CHECK:
        r = lt_dataset_validate(s, c, q->id, body);
        break;
    case R_DATASET_PREVIEW:
        r = lt_dataset_preview(s, c, q->id, body);
        break;
    case R_JOBS:
        if (q->is_post) {
            if (!body)
                r = lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                                   "request body: expected a JSON object describing the job");
            else
                r = lt_jobs_create(s, c, body);
        } else {
            r = lt_jobs_list(s, c);
        }
        break;
    case R_JOB:
        r = lt_job_get(s, c, q->id);
        break;
    case R_JOB_CANCEL:
        r = lt_job_cancel(s, c, q->id);
        break;
    case R_JOB_RESUME:
        r = lt_job_resume(s, c, q->id);
        break;
    case R_JOB_EVENTS:
        r = lt_job_events(s, c, q->id);
        break;
    case R_JOB_STUDY:
        r = lt_job_study(s, c, q->id);
        break;
    case R_JOB_ADAPTER:
        r = !strcmp(q->file, "adapter.zip") ? lt_job_archive(s, c, q->id)
                                            : lt_job_download(s, c, q->id, q->file);
        break;
    case R_JOB_MERGED:
        r = lt_job_merged(s, c, q->id, q->is_post);
        break;
    case R_RUNS:
        r = lt_runs_list(s, c);
        break;
    case R_RUN:
        r = lt_run_get(s, c, q->id, 0);
        break;
    case R_RUN_METRICS:
        r = lt_run_get(s, c, q->id, 1);
        break;
    case R_WEB:
        r = lt_web_reply(c, lt_web_find(q->file));
        break;
    case R_PLAN:
        r = lt_plan_estimate(s, c, body);
        break;
    case R_LIVE:
        r = lt_reply_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
        break;
    case R_READY:
        r = lt_oai_ready(s, c);
        break;
    case R_METRICS:
        r = lt_metrics_reply(s, c);
        break;
    case R_V1_MODELS:
        r = lt_oai_models(s, c);
        break;
    case R_V1_COMPLETIONS:
    case R_V1_CHAT:
        r = lt_oai_complete(s, c, body, q->route == R_V1_CHAT);
        break;
    case R_V1_ADAPTERS:
        if (!q->is_post)
            r = lt_oai_adapters_list(s, c);
        else if (!body)
            r = lt_oai_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "bad_json",
                             "request body: expected {\"name\", \"source\" | \"job\"}");
        else
            r = lt_oai_adapter_load(s, c, body);
        break;
    case R_V1_ADAPTER:
        r = lt_oai_adapter_unload(s, c, q->id);
        break;
    case R_DEPLOYMENTS:
        if (!q->is_post)
            r = lt_deploy_list(s, c);
        else if (!body)
            r = lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                               "request body: expected {\"model\", \"version\"}");
        else
            r = lt_deploy_create(s, c, body);
        break;
    case R_DEPLOY_ROLLBACK:
        r = lt_deploy_rollback_reply(s, c, q->id);
        break;
    case R_DEPLOY_EVALUATE:
        r = lt_deploy_evaluate(s, c, q->id);
        break;
    case R_REGISTRY:
        if (!q->is_post)
            r = lt_registry_list(s, c);
        else if (!body)
            r = lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                               "request body: expected {\"job\", \"name\"}");
        else
            r = lt_registry_create(s, c, body);
        break;
    case R_REGISTRY_STAGE:
        r = lt_registry_stage(s, c, q->id, body);
        break;
    case R_ALERTS:
        if (!body)
            r = lt_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_json",
                               "request body: expected Alertmanager's webhook JSON");
        else
            r = lt_deploy_alerts(s, c, body);
        break;
    default:
        r = lt_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such endpoint");
    }
    json_decref(body);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    lt_server *s = cls;
    request *q = *con_cls;
    if (!q) {
        q = lt_calloc(1, sizeof *q);
        if (!q) return MHD_NO;
        *con_cls = q;
        int r = first_checks(s, c, method, url, q);
        if (r >= 0) return (enum MHD_Result)r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (q->up) {
            lt_upload_feed(q->up, upload_data, n);
        } else if (q->body_json && !q->too_big) {
            if ((int64_t)(q->len + n) > s->max_body) {
                q->too_big = 1;
                lt_free(q->body);
                q->body = NULL;
                q->len = q->cap = 0;
            } else {
                if (q->len + n > q->cap) {
                    size_t cap = (q->len + n) * 2;
                    char *b = lt_realloc(q->body, cap);
                    if (!b) return MHD_NO;
                    q->body = b;
                    q->cap = cap;
                }
                memcpy(q->body + q->len, upload_data, n);
                q->len += n;
            }
        }
        return MHD_YES;
    }
    if (q->too_big)
        return lt_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                              "request body is over the limit of %lld bytes",
                              (long long)s->max_body);
    return dispatch(s, c, q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    request *q = *con_cls;
    if (!q) return;
    lt_upload_abort(q->up); /* an upload cut off midway: its temp file goes */
    lt_free(q->body);
    lt_free(q);
    *con_cls = NULL;
}

/* ---- start / stop ----------------------------------------------------------------------- */
lt_status lt_serve_start(const lt_serve_opts *o, lt_server **out) {
    *out = NULL;
    const char *host = o->host && *o->host ? o->host : "127.0.0.1";
    int has_token = o->token && *o->token;
    if (!lt_serve_host_is_loopback(host) && !has_token)
        return lt_error(LT_ERR_ARG,
                        "--host %s is not a loopback address: give a token (--token or "
                        "LORATUNE_TOKEN) to serve beyond this machine",
                        host);
    if (o->port < 0 || o->port > 65535)
        return lt_error(LT_ERR_ARG, "--port: expected 0..65535, got %d", o->port);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    const char *bind_host = !strcasecmp(host, "localhost") ? "127.0.0.1" : host;
    int v6 = 0;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, bind_host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)o->port);
    } else if (inet_pton(AF_INET6, bind_host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)o->port);
        v6 = 1;
    } else {
        return lt_error(LT_ERR_ARG,
                        "--host: expected a numeric IPv4 / IPv6 address or "
                        "localhost, got '%s'",
                        host);
    }
    if (has_token && strlen(o->token) >= 512)
        return lt_error(LT_ERR_ARG, "--token: at most 511 characters");

    lt_server *s = lt_calloc(1, sizeof *s);
    if (!s) return lt_error(LT_ERR_NOMEM, "out of memory");
    snprintf(s->host, sizeof s->host, "%s", host);
    const char *work = o->workdir && *o->workdir ? o->workdir : "loratune-work";
    if (strlen(work) >= sizeof s->work) {
        lt_free(s);
        return lt_error(LT_ERR_ARG, "--workdir: at most %zu characters", sizeof s->work - 1);
    }
    snprintf(s->work, sizeof s->work, "%s", work);
    if (o->models_dir && *o->models_dir)
        snprintf(s->models, sizeof s->models, "%s", o->models_dir);
    else
        snprintf(s->models, sizeof s->models, "%s/models", s->work);
    if (has_token) snprintf(s->token, sizeof s->token, "%s", o->token);
    s->has_token = has_token;
    s->max_body = o->max_body_bytes > 0 ? o->max_body_bytes : DEFAULT_MAX_BODY;
    s->max_upload = o->max_upload_bytes > 0 ? o->max_upload_bytes : DEFAULT_MAX_UPLOAD;
    s->quota = o->quota_bytes > 0 ? o->quota_bytes : DEFAULT_QUOTA;
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : 60;
    s->max_conn = o->max_connections > 0 ? o->max_connections : 512;
    s->job_threads = o->job_threads;
    s->resume_interrupted = o->resume_interrupted;
    s->mem_budget = o->memory_budget_bytes;
    if (s->mem_budget <= 0) { /* 80% of physical RAM (sysconf: no allocation, no file) */
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        s->mem_budget = pages > 0 && page > 0 ? (int64_t)(0.8 * (double)pages * (double)page)
                                              : (int64_t)1 << 30; /* unknown: 1 GiB */
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rec_mu, NULL);
    pthread_mutex_init(&s->merge_mu, NULL);
    pthread_mutex_init(&s->merge_run_mu, NULL);
    pthread_cond_init(&s->merge_cv, NULL);
    pthread_cond_init(&s->cv, NULL);

    lt_status st = lt_dir_lock_open(s->work, 0, &s->lock);
    if (st) goto fail;
    char abs[PATH_MAX]; /* absolute from now on: what lt_serve_scrub hides from clients */
    if (realpath(s->work, abs) && strlen(abs) < sizeof s->work)
        snprintf(s->work, sizeof s->work, "%s", abs);
    if (realpath(s->models, abs) && strlen(abs) < sizeof s->models)
        snprintf(s->models, sizeof s->models, "%s", abs);
    if ((st = lt_datasets_init(s))) goto fail;
    if ((st = lt_jobs_init(s))) goto fail;
    if ((o->tls_cert || o->tls_key) && (st = tls_load(s, o->tls_cert, o->tls_key))) goto fail;
    if ((st = lt_infer_init(s, o))) goto fail;
    if ((st = lt_deploy_init(s, o))) goto fail;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     (v6 ? MHD_USE_IPv6 : 0) | (s->tls_cert ? MHD_USE_TLS : 0);
    struct MHD_OptionItem tls_opts[] = {
        {s->tls_cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->tls_key},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->max_conn, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)64 * 1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (!s->mhd) {
        st = lt_error(LT_ERR_IO,
                      "could not listen on %s port %d (in use, or not an address "
                      "of this machine?)",
                      host, o->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    if ((st = lt_jobs_start(s))) goto fail; /* only now: a failed start runs no job */
    if ((st = lt_infer_start(s))) goto fail; /* the model loads while /health answers */
    *out = s;
    return LT_OK;
fail:
    lt_serve_stop(s);
    return st;
}

int lt_serve_port(const lt_server *s) {
    return s->port;
}
const char *lt_serve_workdir(const lt_server *s) {
    return s->work;
}

void lt_serve_stop(lt_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    lt_infer_cancel_all(s);              /* generations end at their next token */
    if (s->mhd) MHD_stop_daemon(s->mhd); /* event streams see `stopping` and end */
    lt_jobs_shutdown(s); /* before the engine: a retraining job's gate may still use it */
    lt_merges_shutdown(s);
    lt_deploy_free(s);
    lt_infer_free(s);
    lt_dir_lock_close(s->lock);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->rec_mu);
    pthread_mutex_destroy(&s->merge_mu);
    pthread_mutex_destroy(&s->merge_run_mu);
    pthread_cond_destroy(&s->merge_cv);
    pthread_mutex_destroy(&s->mu);
    lt_free(s->tls_cert);
    lt_free(s->tls_key);
    lt_free(s);
}
