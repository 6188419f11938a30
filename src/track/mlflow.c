/* mlflow.c - MLflow REST client (libcurl + jansson): the live mirror (queue + background
 * sender thread) and the synchronous push / model-registry calls. See mlflow.h.
 *
 * Invariants: the mirror's logging calls never do I/O (they append to the queue under a
 * mutex); only the sender thread talks to the server. Items leave the queue only after the
 * server accepted the request holding them, so a server that is down just keeps them queued.
 * Requests that the server rejects as invalid (4xx other than 429) are dropped with the error
 * kept for the closing message: retrying them would never succeed. */
#define _GNU_SOURCE
#include "loratune/mlflow.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

lt_status lt_mlflow_check_uri(const char *uri) {
    if (uri && (!strncmp(uri, "http://", 7) || !strncmp(uri, "https://", 8))) return LT_OK;
    return lt_error(LT_ERR_ARG,
                    "MLflow tracking URI '%s': expected an http:// or https:// server address "
                    "(file: and database URIs are not servers)",
                    uri ? uri : "");
}

/* ---- HTTP ------------------------------------------------------------------------------ */
typedef struct {
    char *buf;
    size_t len;
} membuf;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    membuf *m = ud;
    size_t add = sz * n;
    if (m->len + add > (64u << 20)) return 0; /* refuse absurd answers */
    char *b = lt_realloc(m->buf, m->len + add + 1);
    if (!b) return 0;
    memcpy(b + m->len, p, add);
    m->len += add;
    b[m->len] = 0;
    m->buf = b;
    return add;
}

typedef enum { HTTP_OK = 0, HTTP_RETRY, HTTP_REJECTED } http_result;

/* One request. method "GET" (body = query string) or "POST" (body = JSON). On HTTP_OK *out
 * is the parsed answer (new reference, may be an empty object). err (256) says why not. */
static http_result http_call(const lt_mlflow_server *srv, const char *method, const char *endpoint,
                             const char *body, json_t **out, char *err, long *code_out) {
    pthread_once(&g_curl_once, curl_init_once);
    *out = NULL;
    err[0] = 0;
    const char *uri = srv->uri;
    size_t ul = strlen(uri);
    while (ul && uri[ul - 1] == '/')
        ul--;
    size_t n = ul + strlen(endpoint) + (body ? strlen(body) : 0) + 8;
    char *url = lt_malloc(n);
    if (!url) {
        snprintf(err, 256, "out of memory");
        return HTTP_REJECTED;
    }
    if (!strcmp(method, "GET") && body)
        snprintf(url, n, "%.*s%s?%s", (int)ul, uri, endpoint, body);
    else
        snprintf(url, n, "%.*s%s", (int)ul, uri, endpoint);
    CURL *c = curl_easy_init();
    if (!c) {
        free(url);
        snprintf(err, 256, "curl_easy_init failed");
        return HTTP_RETRY;
    }
    membuf mb = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[1100];
    if (srv->token && *srv->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", srv->token);
        h = curl_slist_append(h, auth);
    }
    if (srv->username && *srv->username) {
        curl_easy_setopt(c, CURLOPT_USERNAME, srv->username);
        curl_easy_setopt(c, CURLOPT_PASSWORD, srv->password ? srv->password : "");
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &mb);
    if (!strcmp(method, "POST")) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "{}");
    CURLcode cr = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code_out) *code_out = code;
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    http_result res;
    if (cr != CURLE_OK) {
        snprintf(err, 256, "%s%s: %s", uri, endpoint, curl_easy_strerror(cr));
        res = HTTP_RETRY;
    } else if (code >= 200 && code < 300) {
        *out = mb.buf && mb.len ? json_loads(mb.buf, 0, NULL) : json_object();
        if (!*out) *out = json_object();
        res = HTTP_OK;
    } else {
        json_t *e = mb.buf ? json_loads(mb.buf, 0, NULL) : NULL;
        const char *ec = json_string_value(json_object_get(e, "error_code"));
        const char *em = json_string_value(json_object_get(e, "message"));
        snprintf(err, 256, "%s%s: HTTP %ld %s%s%.160s", uri, endpoint, code, ec ? ec : "",
                 ec ? ": " : "", em ? em : (mb.buf ? mb.buf : ""));
        /* the error body is handed back for callers that look at error_code */
        *out = e;
        res = (code >= 500 || code == 429 || code == 408) ? HTTP_RETRY : HTTP_REJECTED;
    }
    free(mb.buf);
    free(url);
    return res;
}

/* A synchronous call with up to 4 tries (0.25, 0.5, 1 s apart) for retryable failures. */
static lt_status call_sync(const lt_mlflow_server *srv, const char *method, const char *endpoint,
                           json_t *body, json_t **out, const char **error_code) {
    char *b = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    char err[256];
    http_result r = HTTP_RETRY;
    static __thread char ec_buf[64];
    if (error_code) *error_code = NULL;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt) {
            struct timespec ts = {0, 250000000L << (attempt - 1)};
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec = ts.tv_nsec / 1000000000L;
                ts.tv_nsec %= 1000000000L;
            }
            nanosleep(&ts, NULL);
        }
        r = http_call(srv, method, endpoint, b, out, err, NULL);
        if (r != HTTP_RETRY) break;
        json_decref(*out);
        *out = NULL;
    }
    free(b);
    if (r == HTTP_OK) return LT_OK;
    if (r == HTTP_REJECTED && error_code && *out) {
        const char *ec = json_string_value(json_object_get(*out, "error_code"));
        if (ec) {
            snprintf(ec_buf, sizeof ec_buf, "%s", ec);
            *error_code = ec_buf;
        }
    }
    json_decref(*out);
    *out = NULL;
    return lt_error(r == HTTP_RETRY ? LT_ERR_IO : LT_ERR_ARG, "MLflow: %s", err);
}

static char *url_escape(const char *s) {
    pthread_once(&g_curl_once, curl_init_once);
    char *e = curl_easy_escape(NULL, s, 0);
    char *r = e ? lt_strdup(e) : NULL;
    curl_free(e);
    return r;
}

/* experiment id by name, creating it when missing */
static lt_status experiment_id(const lt_mlflow_server *srv, const char *name, char *id, size_t n) {
    char *en = url_escape(name);
    if (!en) return lt_error(LT_ERR_NOMEM, "MLflow: out of memory");
    size_t ql = strlen(en) + 32;
    char *q = lt_malloc(ql);
    if (!q) {
        free(en);
        return lt_error(LT_ERR_NOMEM, "MLflow: out of memory");
    }
    snprintf(q, ql, "experiment_name=%s", en);
    free(en);
    json_t *out = NULL;
    char err[256];
    http_result r = HTTP_RETRY;
    for (int attempt = 0; attempt < 4 && r == HTTP_RETRY; attempt++) {
        if (attempt) {
            json_decref(out);
            struct timespec ts = {0, 250000000L};
            nanosleep(&ts, NULL);
        }
        r = http_call(srv, "GET", "/api/2.0/mlflow/experiments/get-by-name", q, &out, err, NULL);
    }
    free(q);
    if (r == HTTP_OK) {
        const char *v =
            json_string_value(json_object_get(json_object_get(out, "experiment"), "experiment_id"));
        snprintf(id, n, "%s", v ? v : "");
        json_decref(out);
        if (*id) return LT_OK;
        return lt_error(LT_ERR_FORMAT, "MLflow: experiments/get-by-name: no experiment_id");
    }
    json_decref(out);
    if (r == HTTP_RETRY) return lt_error(LT_ERR_IO, "MLflow: %s", err);
    json_t *body = json_pack("{s:s}", "name", name);
    const char *ec;
    lt_status st = call_sync(srv, "POST", "/api/2.0/mlflow/experiments/create", body, &out, &ec);
    json_decref(body);
    if (st != LT_OK) return st;
    const char *v = json_string_value(json_object_get(out, "experiment_id"));
    snprintf(id, n, "%s", v ? v : "");
    json_decref(out);
    return *id ? LT_OK : lt_error(LT_ERR_FORMAT, "MLflow: experiments/create: no experiment_id");
}

static lt_status create_run(const lt_mlflow_server *srv, const char *exp_id, const char *name,
                            double start, char out_id[64]) {
    json_t *body =
        json_pack("{s:s,s:I}", "experiment_id", exp_id, "start_time", (json_int_t)(start * 1000.0));
    if (name && *name) json_object_set_new(body, "run_name", json_string(name));
    json_object_set_new(body, "tags",
                        json_pack("[{s:s,s:s}]", "key", "mlflow.source.name", "value", "loratune"));
    json_t *out;
    lt_status st = call_sync(srv, "POST", "/api/2.0/mlflow/runs/create", body, &out, NULL);
    json_decref(body);
    if (st != LT_OK) return st;
    const char *id = json_string_value(
        json_object_get(json_object_get(json_object_get(out, "run"), "info"), "run_id"));
    snprintf(out_id, 64, "%s", id ? id : "");
    json_decref(out);
    return *out_id ? LT_OK : lt_error(LT_ERR_FORMAT, "MLflow: runs/create: no run_id");
}

static const char *mlflow_status(lt_track_status s) {
    switch (s) {
    case LT_TRACK_RUNNING:
        return "RUNNING";
    case LT_TRACK_FINISHED:
        return "FINISHED";
    case LT_TRACK_FAILED:
        return "FAILED";
    case LT_TRACK_KILLED:
        return "KILLED";
    }
    return "FINISHED";
}

static json_t *metric_json(const char *key, double value, double t, int64_t step) {
    json_t *o = json_pack("{s:s,s:I,s:I}", "key", key, "timestamp", (json_int_t)(t * 1000.0),
                          "step", (json_int_t)step);
    /* MLflow's JSON takes NaN / Infinity as strings */
    if (isnan(value))
        json_object_set_new(o, "value", json_string("NaN"));
    else if (isinf(value))
        json_object_set_new(o, "value", json_string(value > 0 ? "Infinity" : "-Infinity"));
    else
        json_object_set_new(o, "value", json_real(value));
    return o;
}

/* ---- live mirror ----------------------------------------------------------------------- */
typedef enum { Q_PARAM, Q_TAG, Q_METRIC, Q_END } qkind;
typedef struct qitem {
    qkind kind;
    char *key, *value;
    double num, time;
    int64_t step;
    struct qitem *next;
} qitem;

struct lt_mlflow {
    char *uri, *experiment, *run_name;
    char token[1024], username[256], password[256]; /* copies of the server's credentials */
    lt_mlflow_server srv;                           /* uri and the copies above */
    double start_time;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qitem *head, *tail;
    int queued;
    int closing; /* close requested: drain until the deadline, then stop */
    double deadline;
    char run_id[64];
    char last_error[256];
    int dropped; /* rejected by the server (not retryable) */
};

/* Bound on queued items (~100 bytes each): past it new metric points are dropped (and
 * counted); they stay in the local store for `loratune runs push`. */
#define QUEUE_MAX 500000

static void free_item(qitem *it);

static void push_item(lt_mlflow *m, qitem *it) {
    if (!m || !it) return;
    pthread_mutex_lock(&m->mu);
    if (m->queued >= QUEUE_MAX && it->kind == Q_METRIC) {
        m->dropped++;
        snprintf(m->last_error, sizeof m->last_error,
                 "queue full (%d items): server too slow or down", QUEUE_MAX);
        pthread_mutex_unlock(&m->mu);
        free_item(it);
        return;
    }
    if (m->tail)
        m->tail->next = it;
    else
        m->head = it;
    m->tail = it;
    m->queued++;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static qitem *new_item(qkind k, const char *key, const char *value) {
    qitem *it = lt_calloc(1, sizeof *it);
    if (!it) return NULL;
    it->kind = k;
    it->key = key ? lt_strdup(key) : NULL;
    it->value = value ? lt_strdup(value) : NULL;
    if ((key && !it->key) || (value && !it->value)) { /* out of memory: no half item */
        free_item(it);
        return NULL;
    }
    return it;
}

static void free_item(qitem *it) {
    free(it->key);
    free(it->value);
    free(it);
}

void lt_mlflow_log_param(lt_mlflow *m, const char *key, const char *value) {
    if (m) push_item(m, new_item(Q_PARAM, key, value ? value : ""));
}
void lt_mlflow_set_tag(lt_mlflow *m, const char *key, const char *value) {
    if (m) push_item(m, new_item(Q_TAG, key, value ? value : ""));
}
void lt_mlflow_log_metric(lt_mlflow *m, const char *key, int64_t step, double value, double time) {
    if (!m) return;
    qitem *it = new_item(Q_METRIC, key, NULL);
    if (!it) return;
    it->num = value;
    it->step = step;
    it->time = time > 0 ? time : now_s();
    push_item(m, it);
}
void lt_mlflow_end(lt_mlflow *m, lt_track_status status, double end_time) {
    if (!m) return;
    qitem *it = new_item(Q_END, NULL, mlflow_status(status));
    if (!it) return;
    it->time = end_time > 0 ? end_time : now_s();
    push_item(m, it);
}

void lt_mlflow_run_id(lt_mlflow *m, char out[64]) {
    out[0] = 0;
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    snprintf(out, 64, "%s", m->run_id);
    pthread_mutex_unlock(&m->mu);
}

/* Waits (cond wait) for seconds or until closing passes its deadline; 1 = give up now. */
static int backoff(lt_mlflow *m, double *delay) {
    pthread_mutex_lock(&m->mu);
    double until = now_s() + *delay;
    if (m->closing && until > m->deadline) until = m->deadline;
    while (now_s() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wait = until - now_s();
        if (wait <= 0) break;
        ts.tv_sec += (time_t)wait;
        ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        if (m->closing && m->deadline < until) until = m->deadline;
    }
    int give_up = m->closing && now_s() >= m->deadline;
    pthread_mutex_unlock(&m->mu);
    *delay = *delay * 2 > 5.0 ? 5.0 : *delay * 2;
    return give_up;
}

static void set_err(lt_mlflow *m, const char *e) {
    pthread_mutex_lock(&m->mu);
    snprintf(m->last_error, sizeof m->last_error, "%s", e);
    pthread_mutex_unlock(&m->mu);
}

static void *sender(void *arg) {
    lt_mlflow *m = arg;
    double delay = 0.25;
    char exp_id[64] = "";
    for (;;) {
        /* wait for work (or closing) */
        pthread_mutex_lock(&m->mu);
        while (!m->head && !m->closing)
            pthread_cond_wait(&m->cv, &m->mu);
        int done = !m->head && m->closing;
        int expired = m->closing && now_s() >= m->deadline;
        pthread_mutex_unlock(&m->mu);
        if (done || expired) break;
        /* the run first */
        if (!m->run_id[0]) {
            char id[64] = "";
            lt_status st =
                exp_id[0] ? LT_OK : experiment_id(&m->srv, m->experiment, exp_id, sizeof exp_id);
            if (st == LT_OK) st = create_run(&m->srv, exp_id, m->run_name, m->start_time, id);
            if (st != LT_OK) {
                set_err(m, lt_errmsg());
                if (backoff(m, &delay)) break;
                continue;
            }
            pthread_mutex_lock(&m->mu);
            snprintf(m->run_id, sizeof m->run_id, "%s", id);
            pthread_mutex_unlock(&m->mu);
            delay = 0.25;
        }
        /* a batch from the head of the queue (items stay queued until accepted) */
        pthread_mutex_lock(&m->mu);
        json_t *metrics = json_array(), *params = json_array(), *tags = json_array();
        int taken = 0, np = 0, nt = 0, nm = 0;
        qitem *end = NULL;
        for (qitem *it = m->head; it; it = it->next) {
            if (it->kind == Q_END) {
                if (taken == 0) end = it;
                break;
            }
            if ((it->kind == Q_PARAM && np == 100) || (it->kind == Q_TAG && nt == 100) ||
                (it->kind == Q_METRIC && nm == 1000))
                break;
            if (it->kind == Q_PARAM) {
                char v[6001];
                snprintf(v, sizeof v, "%s", it->value); /* MLflow's limit: 6000 chars */
                json_array_append_new(params, json_pack("{s:s,s:s}", "key", it->key, "value", v));
                np++;
            } else if (it->kind == Q_TAG) {
                json_array_append_new(tags,
                                      json_pack("{s:s,s:s}", "key", it->key, "value", it->value));
                nt++;
            } else {
                json_array_append_new(metrics, metric_json(it->key, it->num, it->time, it->step));
                nm++;
            }
            taken++;
        }
        pthread_mutex_unlock(&m->mu);
        json_t *body;
        const char *endpoint;
        if (end) {
            body = json_pack("{s:s,s:s,s:I}", "run_id", m->run_id, "status", end->value, "end_time",
                             (json_int_t)(end->time * 1000.0));
            endpoint = "/api/2.0/mlflow/runs/update";
            taken = 1;
            json_decref(metrics);
            json_decref(params);
            json_decref(tags);
        } else {
            body = json_pack("{s:s,s:o,s:o,s:o}", "run_id", m->run_id, "metrics", metrics, "params",
                             params, "tags", tags);
            endpoint = "/api/2.0/mlflow/runs/log-batch";
        }
        char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17));
        json_decref(body);
        json_t *out = NULL;
        char err[256];
        http_result r =
            text ? http_call(&m->srv, "POST", endpoint, text, &out, err, NULL) : HTTP_RETRY;
        free(text);
        json_decref(out);
        if (r == HTTP_RETRY) {
            set_err(m, err);
            if (backoff(m, &delay)) break;
            continue;
        }
        delay = 0.25;
        pthread_mutex_lock(&m->mu);
        if (r == HTTP_REJECTED) {
            snprintf(m->last_error, sizeof m->last_error, "%s", err);
            m->dropped += taken;
        }
        for (int i = 0; i < taken && m->head; i++) {
            qitem *it = m->head;
            m->head = it->next;
            if (!m->head) m->tail = NULL;
            m->queued--;
            free_item(it);
        }
        pthread_mutex_unlock(&m->mu);
    }
    return NULL;
}

lt_status lt_mlflow_open(const lt_mlflow_server *srv, const char *experiment, const char *run_name,
                         double start_time, lt_mlflow **out) {
    *out = NULL;
    lt_status st = lt_mlflow_check_uri(srv ? srv->uri : NULL);
    if (st != LT_OK) return st;
    const char *uri = srv->uri;
    const char *cred[3] = {srv->token, srv->username, srv->password};
    static const char *const what[3] = {"token", "user name", "password"};
    static const size_t cap[3] = {1024, 256, 256};
    for (int i = 0; i < 3; i++)
        if (cred[i] && strlen(cred[i]) >= cap[i])
            return lt_error(LT_ERR_ARG, "MLflow %s: longer than %zu bytes", what[i], cap[i] - 1);
    pthread_once(&g_curl_once, curl_init_once);
    lt_mlflow *m = lt_calloc(1, sizeof *m);
    if (!m) return lt_error(LT_ERR_NOMEM, "MLflow: out of memory");
    m->uri = lt_strdup(uri);
    m->experiment = lt_strdup(experiment && *experiment ? experiment : "Default");
    m->run_name = run_name ? lt_strdup(run_name) : NULL;
    m->start_time = start_time > 0 ? start_time : now_s();
    snprintf(m->token, sizeof m->token, "%s", cred[0] ? cred[0] : "");
    snprintf(m->username, sizeof m->username, "%s", cred[1] ? cred[1] : "");
    snprintf(m->password, sizeof m->password, "%s", cred[2] ? cred[2] : "");
    m->srv = (lt_mlflow_server){m->uri, m->token, m->username, m->password};
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (!m->uri || !m->experiment || (run_name && !m->run_name) ||
        pthread_create(&m->thread, NULL, sender, m) != 0) {
        free(m->uri);
        free(m->experiment);
        free(m->run_name);
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m);
        return lt_error(LT_ERR_NOMEM, "MLflow: cannot start the sender thread");
    }
    *out = m;
    return LT_OK;
}

int lt_mlflow_close(lt_mlflow *m, double timeout_s, char run_id[64], char *msg, size_t n) {
    if (run_id) run_id[0] = 0;
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    m->closing = 1;
    m->deadline = now_s() + (timeout_s > 0 ? timeout_s : 0);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    int left = m->queued + m->dropped;
    if (run_id) snprintf(run_id, 64, "%s", m->run_id);
    if (left > 0 && msg && n)
        snprintf(msg, n, "%d item(s) not accepted by the MLflow server at %s (%s)", left, m->uri,
                 m->last_error[0] ? m->last_error : "no answer");
    while (m->head) {
        qitem *it = m->head;
        m->head = it->next;
        free_item(it);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m->uri);
    free(m->experiment);
    free(m->run_name);
    free(m);
    return left;
}

/* ---- push ------------------------------------------------------------------------------ */
static lt_status log_batch(const lt_mlflow_server *srv, const char *run_id, json_t *metrics,
                           json_t *params, json_t *tags) {
    json_t *body = json_pack("{s:s,s:O,s:O,s:O}", "run_id", run_id, "metrics", metrics, "params",
                             params, "tags", tags);
    json_t *out;
    lt_status st = call_sync(srv, "POST", "/api/2.0/mlflow/runs/log-batch", body, &out, NULL);
    json_decref(body);
    json_decref(out);
    return st;
}

/* Steps the server already has for (run, key), as a JSON object {"step": true}. */
static json_t *server_steps(const lt_mlflow_server *srv, const char *run_id, const char *key) {
    json_t *have = json_object();
    char *ek = url_escape(key);
    char q[1024];
    snprintf(q, sizeof q, "run_id=%s&metric_key=%s&max_results=1000000", run_id, ek ? ek : "");
    free(ek);
    json_t *out = NULL;
    char err[256];
    if (http_call(srv, "GET", "/api/2.0/mlflow/metrics/get-history", q, &out, err, NULL) ==
        HTTP_OK) {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(out, "metrics"), i, p) {
            char s[32];
            snprintf(s, sizeof s, "%lld",
                     (long long)json_integer_value(json_object_get(p, "step")));
            json_object_set_new(have, s, json_true());
        }
    }
    json_decref(out);
    return have;
}

lt_status lt_mlflow_push_run(lt_store *s, int64_t run_id, const lt_mlflow_server *srv,
                             char mlflow_run_id[64]) {
    mlflow_run_id[0] = 0;
    lt_status st = lt_mlflow_check_uri(srv ? srv->uri : NULL);
    if (st != LT_OK) return st;
    char *text;
    if ((st = lt_store_run_to_json(s, run_id, 1, &text)) != LT_OK) return st;
    json_t *r = json_loads(text, 0, NULL);
    free(text);
    if (!r) return lt_error(LT_ERR_INTERNAL, "run JSON did not parse");
    const char *existing =
        json_string_value(json_object_get(json_object_get(r, "tags"), "mlflow.run_id"));
    char id[64] = "";
    int resumed = 0;
    if (existing) { /* still there? */
        char q[128];
        snprintf(q, sizeof q, "run_id=%s", existing);
        json_t *out = NULL;
        char err[256];
        if (http_call(srv, "GET", "/api/2.0/mlflow/runs/get", q, &out, err, NULL) == HTTP_OK) {
            snprintf(id, sizeof id, "%s", existing);
            resumed = 1;
        }
        json_decref(out);
    }
    if (!id[0]) {
        char exp[64];
        const char *en = json_string_value(json_object_get(r, "experiment"));
        if ((st = experiment_id(srv, en ? en : "Default", exp, sizeof exp)) != LT_OK ||
            (st = create_run(srv, exp, json_string_value(json_object_get(r, "name")),
                             json_number_value(json_object_get(r, "start_time")), id)) != LT_OK)
            goto out;
        char tag[64];
        snprintf(tag, sizeof tag, "%s", id);
        if ((st = lt_store_set_tag(s, run_id, "mlflow.run_id", tag)) != LT_OK) goto out;
    }
    /* params and tags, 100 per request */
    const char *k;
    json_t *v;
    json_t *params = json_array(), *tags = json_array(), *none = json_array();
    json_object_foreach(json_object_get(r, "params"), k, v) {
        char val[6001];
        snprintf(val, sizeof val, "%s", json_string_value(v) ? json_string_value(v) : "");
        json_array_append_new(params, json_pack("{s:s,s:s}", "key", k, "value", val));
        if (json_array_size(params) == 100) {
            if ((st = log_batch(srv, id, none, params, none)) != LT_OK) break;
            json_array_clear(params);
        }
    }
    json_object_foreach(json_object_get(r, "tags"), k, v) {
        if (!strcmp(k, "mlflow.run_id")) continue;
        json_array_append_new(tags, json_pack("{s:s,s:s}", "key", k, "value",
                                              json_string_value(v) ? json_string_value(v) : ""));
    }
    const char *extra[][2] = {{"loratune.run_id", NULL},
                              {"loratune.uuid", NULL},
                              {"loratune.data_md5", NULL},
                              {"loratune.git_commit", NULL}};
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)run_id);
    extra[0][1] = idbuf;
    extra[1][1] = json_string_value(json_object_get(r, "uuid"));
    extra[2][1] = json_string_value(json_object_get(json_object_get(r, "data"), "md5"));
    extra[3][1] = json_string_value(json_object_get(r, "git_commit"));
    for (int i = 0; i < 4; i++)
        if (extra[i][1])
            json_array_append_new(tags,
                                  json_pack("{s:s,s:s}", "key", extra[i][0], "value", extra[i][1]));
    if (st == LT_OK) st = log_batch(srv, id, none, params, tags);
    json_decref(params);
    json_decref(tags);
    /* metrics, 1000 per request, skipping steps the server has (a resumed push) */
    json_t *metrics = json_array();
    json_object_foreach(json_object_get(r, "metric_history"), k, v) {
        if (st != LT_OK) break;
        json_t *have = resumed ? server_steps(srv, id, k) : json_object();
        size_t i;
        json_t *p;
        json_array_foreach(v, i, p) {
            json_int_t step = json_integer_value(json_array_get(p, 0));
            char sk[32];
            snprintf(sk, sizeof sk, "%lld", (long long)step);
            if (json_object_get(have, sk)) continue;
            json_t *val = json_array_get(p, 1);
            json_array_append_new(metrics,
                                  metric_json(k, json_is_number(val) ? json_number_value(val) : NAN,
                                              json_number_value(json_array_get(p, 2)), step));
            if (json_array_size(metrics) == 1000) {
                if ((st = log_batch(srv, id, metrics, none, none)) != LT_OK) break;
                json_array_clear(metrics);
            }
        }
        json_decref(have);
    }
    if (st == LT_OK && json_array_size(metrics)) st = log_batch(srv, id, metrics, none, none);
    json_decref(metrics);
    json_decref(none);
    if (st == LT_OK) {
        const char *status = json_string_value(json_object_get(r, "status"));
        lt_track_status ts = LT_TRACK_RUNNING;
        if (status && !strcmp(status, "finished"))
            ts = LT_TRACK_FINISHED;
        else if (status && !strcmp(status, "failed"))
            ts = LT_TRACK_FAILED;
        else if (status && !strcmp(status, "killed"))
            ts = LT_TRACK_KILLED;
        json_t *body = json_pack("{s:s,s:s}", "run_id", id, "status", mlflow_status(ts));
        json_t *et = json_object_get(r, "end_time");
        if (json_is_number(et))
            json_object_set_new(body, "end_time",
                                json_integer((json_int_t)(json_number_value(et) * 1000.0)));
        json_t *out;
        st = call_sync(srv, "POST", "/api/2.0/mlflow/runs/update", body, &out, NULL);
        json_decref(body);
        json_decref(out);
    }
out:
    json_decref(r);
    if (st == LT_OK) snprintf(mlflow_run_id, 64, "%s", id);
    return st;
}

lt_status lt_mlflow_register_version(const lt_mlflow_server *srv, const char *name,
                                     const char *mlflow_run_id, const char *source,
                                     const char *tags_json, int *version) {
    lt_status st = lt_mlflow_check_uri(srv ? srv->uri : NULL);
    if (st != LT_OK) return st;
    json_t *body = json_pack("{s:s}", "name", name), *out;
    const char *ec;
    st = call_sync(srv, "POST", "/api/2.0/mlflow/registered-models/create", body, &out, &ec);
    json_decref(body);
    json_decref(out);
    if (st != LT_OK && !(ec && !strcmp(ec, "RESOURCE_ALREADY_EXISTS"))) return st;
    body = json_pack("{s:s,s:s,s:s}", "name", name, "source", source, "run_id", mlflow_run_id);
    json_t *tags = json_array();
    json_t *tj = tags_json ? json_loads(tags_json, 0, NULL) : NULL;
    const char *k;
    json_t *v;
    json_object_foreach(tj, k, v) if (json_is_string(v)) json_array_append_new(
        tags, json_pack("{s:s,s:s}", "key", k, "value", json_string_value(v)));
    json_decref(tj);
    json_object_set_new(body, "tags", tags);
    st = call_sync(srv, "POST", "/api/2.0/mlflow/model-versions/create", body, &out, NULL);
    json_decref(body);
    if (st != LT_OK) return st;
    const char *ver =
        json_string_value(json_object_get(json_object_get(out, "model_version"), "version"));
    if (version) *version = ver ? atoi(ver) : 0;
    json_decref(out);
    return ver ? LT_OK : lt_error(LT_ERR_FORMAT, "MLflow: model-versions/create: no version");
}

lt_status lt_mlflow_set_stage(const lt_mlflow_server *srv, const char *name, int version,
                              lt_stage stage, int archive_others) {
    lt_status st = lt_mlflow_check_uri(srv ? srv->uri : NULL);
    if (st != LT_OK) return st;
    static const char *const names[] = {"None", "Staging", "Production", "Archived"};
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    /* the MLflow version that loratune registered for this one (tag loratune.version) */
    char *en = url_escape(name);
    size_t ql = (en ? strlen(en) : 0) + 64;
    char *q = lt_malloc(ql);
    if (en && q) {
        json_t *out = NULL;
        char err[256];
        snprintf(q, ql, "filter=name%%3D%%27%s%%27&max_results=1000", en);
        if (http_call(srv, "GET", "/api/2.0/mlflow/model-versions/search", q, &out, err, NULL) ==
            HTTP_OK) {
            size_t i, j;
            json_t *mv, *t;
            json_array_foreach(json_object_get(out, "model_versions"), i, mv) {
                json_array_foreach(json_object_get(mv, "tags"), j, t) {
                    const char *k = json_string_value(json_object_get(t, "key"));
                    const char *v = json_string_value(json_object_get(t, "value"));
                    const char *mvv = json_string_value(json_object_get(mv, "version"));
                    if (k && v && mvv && !strcmp(k, "loratune.version") && atoi(v) == version)
                        snprintf(ver, sizeof ver, "%s", mvv);
                }
            }
        }
        json_decref(out);
    }
    free(en);
    free(q);
    json_t *body = json_pack("{s:s,s:s,s:s,s:b}", "name", name, "version", ver, "stage",
                             names[(unsigned)stage < 4 ? stage : 0], "archive_existing_versions",
                             archive_others),
           *out;
    st =
        call_sync(srv, "POST", "/api/2.0/mlflow/model-versions/transition-stage", body, &out, NULL);
    json_decref(body);
    json_decref(out);
    return st;
}
