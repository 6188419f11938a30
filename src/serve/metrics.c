/* metrics.c - GET /metrics of `loratune serve` in the Prometheus text exposition format
 * (version 0.0.4), named as Prometheus asks: the loratune_ prefix, base units (seconds),
 * _total counters, cumulative histogram buckets with +Inf, _sum and _count. The counters are
 * kept here under one mutex (a request adds to them once, when it ends); the gauges are read
 * from the engine and the job queue when scraped. docs/SERVING.md lists every series. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

static const double k_dur[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double k_ttft[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_DUR (int)(sizeof k_dur / sizeof k_dur[0])
#define N_TTFT (int)(sizeof k_ttft / sizeof k_ttft[0])

typedef struct {
    char model[65];
    char endpoint[16];
    int status;
    uint64_t n;
} req_count;

typedef struct {
    char model[65];
    uint64_t dur_b[N_DUR]; /* cumulative: requests with duration <= k_dur[i] */
    uint64_t dur_n;
    double dur_sum;
    uint64_t ttft_b[N_TTFT];
    uint64_t ttft_n;
    double ttft_sum;
    uint64_t prompt, gen;
} model_stats;

struct lt_metrics {
    pthread_mutex_t mu;
    req_count *req;
    int n_req, cap_req;
    model_stats *ms;
    int n_ms, cap_ms;
    uint64_t adapter_errors;
    double start;
};

lt_metrics *lt_metrics_new(void) {
    lt_metrics *m = lt_calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->start = lt_serve_now();
    return m;
}

void lt_metrics_free(lt_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    lt_free(m->req);
    lt_free(m->ms);
    lt_free(m);
}

static model_stats *stats_of(lt_metrics *m, const char *model) {
    for (int i = 0; i < m->n_ms; i++)
        if (!strcmp(m->ms[i].model, model)) return &m->ms[i];
    if (m->n_ms == m->cap_ms) {
        int cap = m->cap_ms ? m->cap_ms * 2 : 8;
        model_stats *p = lt_realloc(m->ms, sizeof *p * (size_t)cap);
        if (!p) return NULL;
        m->ms = p;
        m->cap_ms = cap;
    }
    model_stats *x = &m->ms[m->n_ms++];
    memset(x, 0, sizeof *x);
    snprintf(x->model, sizeof x->model, "%s", model);
    return x;
}

void lt_metrics_request(lt_server *s, const char *model, const char *endpoint, int status,
                        const lt_gen *g) {
    lt_metrics *m = lt_infer_metrics(s);
    if (!m) return;
    if (!model || !*model) model = "unknown"; /* a name no client can turn into a new series */
    pthread_mutex_lock(&m->mu);
    req_count *r = NULL;
    for (int i = 0; i < m->n_req && !r; i++)
        if (m->req[i].status == status && !strcmp(m->req[i].model, model) &&
            !strcmp(m->req[i].endpoint, endpoint))
            r = &m->req[i];
    if (!r && m->n_req == m->cap_req) {
        int cap = m->cap_req ? m->cap_req * 2 : 16;
        req_count *p = lt_realloc(m->req, sizeof *p * (size_t)cap);
        if (p) {
            m->req = p;
            m->cap_req = cap;
        }
    }
    if (!r && m->n_req < m->cap_req) {
        r = &m->req[m->n_req++];
        memset(r, 0, sizeof *r);
        snprintf(r->model, sizeof r->model, "%s", model);
        snprintf(r->endpoint, sizeof r->endpoint, "%s", endpoint);
        r->status = status;
    }
    if (r) r->n++;
    model_stats *x = g ? stats_of(m, model) : NULL;
    if (x) {
        double d = g->t_end - g->t_start;
        x->dur_n++;
        x->dur_sum += d;
        for (int i = 0; i < N_DUR; i++)
            x->dur_b[i] += d <= k_dur[i];
        if (g->t_first > 0) {
            double t = g->t_first - g->t_start;
            x->ttft_n++;
            x->ttft_sum += t;
            for (int i = 0; i < N_TTFT; i++)
                x->ttft_b[i] += t <= k_ttft[i];
        }
        x->prompt += g->running ? (uint64_t)g->n_ids : 0;
        x->gen += (uint64_t)g->n_gen;
    }
    pthread_mutex_unlock(&m->mu);
}

void lt_metrics_adapter_error(lt_server *s) {
    lt_metrics *m = lt_infer_metrics(s);
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->adapter_errors++;
    pthread_mutex_unlock(&m->mu);
}

/* A label value: backslash, double quote and newline escaped. */
static void label(FILE *f, const char *v) {
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void head(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(FILE *f, const char *name, const char *model, const double *le,
                      const uint64_t *b, int nb, uint64_t n, double sum) {
    for (int i = 0; i < nb; i++) {
        fprintf(f, "%s_bucket{model=\"", name);
        label(f, model);
        fprintf(f, "\",le=\"%g\"} %llu\n", le[i], (unsigned long long)b[i]);
    }
    fprintf(f, "%s_bucket{model=\"", name);
    label(f, model);
    fprintf(f, "\",le=\"+Inf\"} %llu\n%s_sum{model=\"", (unsigned long long)n, name);
    label(f, model);
    fprintf(f, "\"} %.9g\n%s_count{model=\"", sum, name);
    label(f, model);
    fprintf(f, "\"} %llu\n", (unsigned long long)n);
}

static void per_model(FILE *f, const lt_metrics *m, const char *name, size_t off) {
    for (int i = 0; i < m->n_ms; i++) {
        fprintf(f, "%s{model=\"", name);
        label(f, m->ms[i].model);
        fprintf(f, "\"} %llu\n",
                (unsigned long long)*(const uint64_t *)((const char *)&m->ms[i] + off));
    }
}

enum MHD_Result lt_metrics_reply(lt_server *s, struct MHD_Connection *c) {
    lt_metrics *m = lt_infer_metrics(s);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f || !m) {
        if (f) fclose(f);
        free(buf);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    }
    int running = 0, queued = 0, slots = 0, adapters = 0, ready = 0;
    if (lt_infer_enabled(s)) lt_infer_gauges(s, &running, &queued, &slots, &adapters, &ready);
    pthread_mutex_lock(&s->mu);
    int jobs_queued = 0, jobs_running = s->n_running;
    for (int i = 0; i < s->n_jobs; i++)
        jobs_queued += s->jobs[i]->status == JOB_QUEUED;
    pthread_mutex_unlock(&s->mu);

    pthread_mutex_lock(&m->mu);
    head(f, "loratune_requests_total", "counter",
         "Finished /v1 completion requests by model (the base or an adapter), endpoint and HTTP "
         "status (499: the client went away).");
    for (int i = 0; i < m->n_req; i++) {
        fprintf(f, "loratune_requests_total{model=\"");
        label(f, m->req[i].model);
        fprintf(f, "\",endpoint=\"%s\",status=\"%d\"} %llu\n", m->req[i].endpoint, m->req[i].status,
                (unsigned long long)m->req[i].n);
    }
    head(f, "loratune_request_duration_seconds", "histogram",
         "Time from a request's arrival to its last token, waiting for a slot included.");
    for (int i = 0; i < m->n_ms; i++)
        histogram(f, "loratune_request_duration_seconds", m->ms[i].model, k_dur, m->ms[i].dur_b,
                  N_DUR, m->ms[i].dur_n, m->ms[i].dur_sum);
    head(f, "loratune_time_to_first_token_seconds", "histogram",
         "Time from a request's arrival to its first generated token.");
    for (int i = 0; i < m->n_ms; i++)
        histogram(f, "loratune_time_to_first_token_seconds", m->ms[i].model, k_ttft,
                  m->ms[i].ttft_b, N_TTFT, m->ms[i].ttft_n, m->ms[i].ttft_sum);
    head(f, "loratune_prompt_tokens_total", "counter", "Prompt tokens processed (prefill).");
    per_model(f, m, "loratune_prompt_tokens_total", offsetof(model_stats, prompt));
    head(f, "loratune_generation_tokens_total", "counter",
         "Tokens generated (an end-of-turn or EOS token included); rate() of it is tokens/s.");
    per_model(f, m, "loratune_generation_tokens_total", offsetof(model_stats, gen));
    head(f, "loratune_adapter_load_errors_total", "counter",
         "Adapters that could not be loaded (a bad file, shapes that do not fit the base).");
    fprintf(f, "loratune_adapter_load_errors_total %llu\n", (unsigned long long)m->adapter_errors);
    double start = m->start;
    pthread_mutex_unlock(&m->mu);

    head(f, "loratune_requests_running", "gauge", "Requests holding a KV-cache slot.");
    fprintf(f, "loratune_requests_running %d\n", running);
    head(f, "loratune_requests_queued", "gauge", "Requests waiting for a KV-cache slot.");
    fprintf(f, "loratune_requests_queued %d\n", queued);
    head(f, "loratune_kv_cache_slots", "gauge", "KV-cache slots (requests served at once).");
    fprintf(f, "loratune_kv_cache_slots %d\n", slots);
    head(f, "loratune_kv_cache_usage_ratio", "gauge", "Share of the KV-cache slots in use.");
    fprintf(f, "loratune_kv_cache_usage_ratio %g\n", slots ? (double)running / slots : 0.0);
    head(f, "loratune_kv_cache_bytes", "gauge",
         "Bytes of keys and values written by the running requests: positions held x 2 x layers "
         "x KV heads x head dim x 2 (fp16 cache) or 4 (fp32).");
    fprintf(f, "loratune_kv_cache_bytes %lld\n",
            (long long)(lt_infer_enabled(s) ? lt_infer_kv_bytes(s) : 0));
    uint64_t steps = 0, rows = 0; /* continuous batching: rows / steps is the mean batch */
    if (lt_infer_enabled(s)) lt_infer_batch_stats(s, &steps, &rows);
    head(f, "loratune_decode_steps_total", "counter", "Batched decode steps run.");
    fprintf(f, "loratune_decode_steps_total %llu\n", (unsigned long long)steps);
    head(f, "loratune_decode_rows_total", "counter",
         "Tokens decoded by batched decode steps (one per running request per step).");
    fprintf(f, "loratune_decode_rows_total %llu\n", (unsigned long long)rows);
    head(f, "loratune_adapters_loaded", "gauge", "Adapters served on the base model.");
    fprintf(f, "loratune_adapters_loaded %d\n", adapters);
    head(f, "loratune_model_ready", "gauge", "1 once the base model is loaded (GET /ready).");
    fprintf(f, "loratune_model_ready %d\n", ready);
    head(f, "loratune_jobs_queued", "gauge", "Train jobs waiting in the queue.");
    fprintf(f, "loratune_jobs_queued %d\n", jobs_queued);
    head(f, "loratune_jobs_running", "gauge", "Train jobs running.");
    fprintf(f, "loratune_jobs_running %d\n", jobs_running);
    lt_monitor_write(s->monitor, f); /* input drift (monitor.c) */
    lt_deploy_metrics_write(s, f);   /* deployments and retraining (deploy.c) */
    head(f, "loratune_start_time_seconds", "gauge", "When the server started (Unix time).");
    fprintf(f, "loratune_start_time_seconds %.3f\n", start);
    if (fclose(f)) {
        free(buf);
        return lt_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
