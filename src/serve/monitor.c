/* monitor.c - input drift of the served adapters: how far the token distribution of recent
 * prompts is from the one of the training data, as PSI and KL, exported on /metrics.
 *
 * The reference (lt_drift_ref) is made when a registry version is deployed (deploy.c), from
 * the version's training data tokenized with the served tokenizer and chat template, as
 * training tokenizes it (every split): every token of text records (BOS and EOS included),
 * the prompt side (the tokens that are no loss target: template, system and user turns) of
 * completions / chat / alpaca / sharegpt records, as requests hold prompts. The
 * LT_DRIFT_BUCKETS - 1 most frequent token ids each get a bucket (ties: the lower id first),
 * every other token falls in the last one ("other"). A watched served model (an adapter
 * "NAME.vK") keeps a ring of the bucket indices of its last LT_DRIFT_WINDOW prompt tokens
 * (every prompt token of every /v1 request routed to it, BOS included) and counts per bucket,
 * updated as tokens enter and leave the ring. With p the reference's shares and q the window's,
 * both smoothed with half a token per bucket (so no share is 0: ln is finite),
 *     PSI = sum_i (q_i - p_i) ln(q_i / p_i)        KL(q || p) = sum_i q_i ln(q_i / p_i)  (nats)
 * Rules of thumb for PSI: < 0.1 no shift, 0.1..0.25 moderate, > 0.25 large (the shipped alert).
 *
 * Prompt perplexity: the base model's (no adapter) mean negative log-likelihood per token of
 * the prompts, NLL = -1/(n-1) sum_{i=1..n-1} ln softmax(logits(t_0..t_{i-1}))[t_i], over a
 * prompt's first LT_NLL_MAX_TOKENS tokens. The reference is that of the first
 * LT_NLL_REF_EXAMPLES examples of the training data, LT_NLL_REF_TOKENS tokens at most (the
 * tokens the drift reference counts, a text record without its EOS), token-weighted; the
 * window, of the last LT_NLL_WINDOW scored prompts, token-weighted too. Weights stored as
 * Q4_0 / Q4_1 / Q8_0 / Q4_K blocks multiply 8-bit quantized activations (lt_kv_cache_set_qact,
 * as llama.cpp and generation do); other formats in fp32. Prompts are scored on a thread of their own (its own KV cache
 * and logits buffer of LT_NLL_CHUNK rows; the shared model is only read), after the request
 * was routed: a request never waits for it, and when LT_NLL_QUEUE prompts already wait a
 * prompt is not scored (counted). It competes with generation for the cores.
 * Locking: one mutex over the watch list and the queue; observe is O(prompt tokens). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/data.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"
#include "serve_internal.h"

struct lt_drift_ref {
    int vocab;
    int16_t *map;                      /* (vocab) token id -> bucket */
    int32_t top[LT_DRIFT_BUCKETS - 1]; /* the token of each bucket but the last (-1: unused) */
    double count[LT_DRIFT_BUCKETS];    /* reference tokens per bucket */
    double p[LT_DRIFT_BUCKETS];        /* smoothed shares */
    int64_t tokens;                    /* reference tokens */
    int64_t examples;
    double nll; /* base model's NLL per token (NaN: not scored) */
    int64_t nll_tokens, nll_examples;
};

#define LT_NLL_CHUNK 64 /* positions per forward (the logits buffer's rows) */

typedef struct {
    char model[72];      /* the served adapter ("NAME.vK") */
    char deployment[72]; /* NAME */
    lt_drift_ref *ref;   /* owned */
    uint8_t ring[LT_DRIFT_WINDOW];
    int head, n; /* next slot, tokens in the ring */
    int64_t cnt[LT_DRIFT_BUCKETS];
    uint64_t seen;                 /* prompt tokens observed since watched */
    double nll_sum[LT_NLL_WINDOW]; /* per scored prompt: summed NLL and tokens predicted */
    int nll_tok[LT_NLL_WINDOW];
    int nll_head, nll_n;
    uint64_t scored, unscored;
} watch;

typedef struct {
    char model[72];
    int32_t *ids; /* lt_malloc'd */
    int n;
} nll_job;

struct lt_monitor {
    lt_server *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    watch *w;
    int n, cap;
    nll_job q[LT_NLL_QUEUE]; /* the scorer's queue (FIFO: q[0] next) */
    int nq;
    int stopping, started;
    pthread_t thread;
};

/* Sums the NLL of ids[1..n) given the tokens before each (kv: a cache of ctx >= n, reset by
 * starting at position 0; logits: LT_NLL_CHUNK * vocab floats). *count: tokens predicted. */
static lt_status score_ids(const lt_model *m, lt_kv_cache *kv, float *logits, const int32_t *ids,
                           int n, double *sum, int *count) {
    int vocab = (int)m->config.vocab_size;
    *sum = 0;
    *count = 0;
    for (int p0 = 0; p0 < n - 1; p0 += LT_NLL_CHUNK) {
        int c = n - 1 - p0 < LT_NLL_CHUNK ? n - 1 - p0 : LT_NLL_CHUNK;
        lt_status st = lt_model_forward(m, NULL, kv, ids + p0, c, p0, logits, 1);
        if (st) return st;
        for (int i = 0; i < c; i++) {
            const float *row = logits + (size_t)i * vocab;
            float mx = row[0];
            for (int v = 1; v < vocab; v++)
                if (row[v] > mx) mx = row[v];
            double z = 0;
            for (int v = 0; v < vocab; v++)
                z += exp((double)row[v] - mx);
            int t = ids[p0 + i + 1];
            *sum += (double)mx + log(z) - (double)row[t];
            (*count)++;
        }
    }
    return LT_OK;
}

void lt_drift_ref_free(lt_drift_ref *r) {
    if (!r) return;
    lt_free(r->map);
    lt_free(r);
}

static int cmp_desc(const void *a, const void *b) {
    const double *x = a, *y = b; /* pairs (count, token) */
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static void smooth(const double *count, double total, double *out) {
    for (int i = 0; i < LT_DRIFT_BUCKETS; i++)
        out[i] = (count[i] + 0.5) / (total + 0.5 * LT_DRIFT_BUCKETS);
}

/* The reference NLL: the first LT_NLL_REF_EXAMPLES examples' scored tokens (all: text records,
 * without a final EOS; else the prefix before the first loss token), on a cache of its own. */
static lt_status ref_nll(lt_server *s, const lt_data *d, int all, lt_drift_ref *r) {
    int threads = 0;
    const lt_model *m = lt_infer_model(s, &threads);
    int ctx = lt_infer_ctx(s) < LT_NLL_MAX_TOKENS ? lt_infer_ctx(s) : LT_NLL_MAX_TOKENS;
    lt_kv_cache *kv = NULL;
    float *logits = lt_malloc((size_t)LT_NLL_CHUNK * m->config.vocab_size * sizeof *logits);
    lt_status st = logits ? lt_kv_cache_create(m, ctx, LT_NLL_CHUNK, &kv)
                          : lt_error(LT_ERR_NOMEM, "out of memory (perplexity logits)");
    if (kv) lt_kv_cache_set_qact(kv, 1); /* as llama.cpp runs Q4 / Q8 blocks: ~4x faster */
    if (threads > 0) lt_set_num_threads(threads);
    int32_t eos = lt_tokenizer_eos(lt_infer_tokenizer(s));
    double total = 0;
    int64_t toks = 0, ex = 0;
    for (lt_split sp = LT_SPLIT_TRAIN; !st && sp < LT_SPLIT_COUNT; sp++)
        for (int64_t i = 0; !st && i < lt_data_count(d, sp) && ex < LT_NLL_REF_EXAMPLES &&
                            toks < LT_NLL_REF_TOKENS;
             i++) {
            const lt_example *e = lt_data_example(d, sp, i);
            int n = e->n;
            if (all && n > 0 && e->tokens[n - 1] == eos) n--;
            if (!all)
                for (int k = 1; k < n; k++)
                    if (e->mask[k]) {
                        n = k;
                        break;
                    }
            if (n > ctx) n = ctx;
            if (n > LT_NLL_REF_TOKENS - toks + 1) n = (int)(LT_NLL_REF_TOKENS - toks + 1);
            if (n < 2) continue;
            double sum;
            int cnt;
            st = score_ids(m, kv, logits, e->tokens, n, &sum, &cnt);
            total += sum;
            toks += cnt;
            ex++;
        }
    lt_kv_cache_free(kv);
    lt_free(logits);
    if (st) return st;
    r->nll = toks ? total / (double)toks : NAN;
    r->nll_tokens = toks;
    r->nll_examples = ex;
    return LT_OK;
}

lt_status lt_drift_ref_build(lt_server *s, const char *data_path, lt_drift_ref **out) {
    *out = NULL;
    const struct lt_tokenizer *tok = lt_infer_tokenizer(s);
    int vocab = lt_infer_vocab(s);
    if (!tok || vocab <= 0)
        return lt_error(LT_ERR_BUSY, "the base model is not loaded (GET /ready)");
    lt_data_opts o;
    lt_data_opts_default(&o);
    o.valid_fraction = 0; /* every example */
    o.max_seq_len = lt_infer_ctx(s) > 0 ? lt_infer_ctx(s) : 2048;
    lt_data *d = NULL;
    lt_status st = lt_data_open(data_path, tok, lt_infer_template(s), &o, &d);
    if (st) return st;
    double *pairs = lt_calloc((size_t)vocab * 2, sizeof *pairs);
    lt_drift_ref *r = lt_calloc(1, sizeof *r);
    if (r) r->map = lt_malloc((size_t)vocab * sizeof *r->map);
    if (!pairs || !r || !r->map) {
        lt_free(pairs);
        lt_drift_ref_free(r);
        lt_data_free(d);
        return lt_error(LT_ERR_NOMEM, "out of memory (drift reference of %d tokens)", vocab);
    }
    r->vocab = vocab;
    for (int t = 0; t < vocab; t++)
        pairs[2 * t + 1] = t;
    int all = lt_data_get_format(d) == LT_DATA_TEXT; /* else the prompt side only */
    for (lt_split sp = LT_SPLIT_TRAIN; sp < LT_SPLIT_COUNT; sp++)
        for (int64_t i = 0; i < lt_data_count(d, sp); i++) {
            const lt_example *e = lt_data_example(d, sp, i);
            for (int k = 0; k < e->n; k++)
                if (e->tokens[k] >= 0 && e->tokens[k] < vocab && (all || !e->mask[k])) {
                    pairs[2 * e->tokens[k]] += 1;
                    r->tokens++;
                }
            r->examples++;
        }
    r->nll = NAN;
    st = ref_nll(s, d, all, r);
    lt_data_free(d);
    if (st) {
        lt_free(pairs);
        lt_drift_ref_free(r);
        return st;
    }
    if (r->tokens == 0) {
        lt_free(pairs);
        lt_drift_ref_free(r);
        return lt_error(LT_ERR_ARG, "%s: no tokens to make a drift reference from", data_path);
    }
    qsort(pairs, (size_t)vocab, 2 * sizeof *pairs, cmp_desc);
    for (int t = 0; t < vocab; t++)
        r->map[t] = LT_DRIFT_BUCKETS - 1;
    for (int b = 0; b < LT_DRIFT_BUCKETS - 1; b++) {
        r->top[b] = -1;
        if (b < vocab && pairs[2 * b] > 0) {
            r->top[b] = (int32_t)pairs[2 * b + 1];
            r->map[r->top[b]] = (int16_t)b;
            r->count[b] = pairs[2 * b];
        }
    }
    double rest = (double)r->tokens;
    for (int b = 0; b < LT_DRIFT_BUCKETS - 1; b++)
        rest -= r->count[b];
    r->count[LT_DRIFT_BUCKETS - 1] = rest;
    smooth(r->count, (double)r->tokens, r->p);
    lt_free(pairs);
    *out = r;
    return LT_OK;
}

json_t *lt_drift_ref_json(const lt_drift_ref *r) {
    json_t *top = json_array(), *cnt = json_array();
    for (int b = 0; b < LT_DRIFT_BUCKETS; b++) {
        if (b < LT_DRIFT_BUCKETS - 1) json_array_append_new(top, json_integer(r->top[b]));
        json_array_append_new(cnt, json_integer((json_int_t)r->count[b]));
    }
    json_t *o =
        json_pack("{s:i,s:i,s:I,s:I,s:o,s:o,s:I,s:I}", "buckets", LT_DRIFT_BUCKETS, "window_tokens",
                  LT_DRIFT_WINDOW, "tokens", (json_int_t)r->tokens, "examples",
                  (json_int_t)r->examples, "bucket_tokens", top, "counts", cnt, "nll_tokens",
                  (json_int_t)r->nll_tokens, "nll_examples", (json_int_t)r->nll_examples);
    json_object_set_new(o, "nll", r->nll == r->nll ? json_real(r->nll) : json_null());
    return o;
}

static watch *find(lt_monitor *m, const char *model);

/* The scorer: takes prompts from the queue, scores them with the base model, adds them to the
 * window of their model (if still watched). Its cache is made at the first prompt. */
static void *scorer_main(void *arg) {
    lt_monitor *m = arg;
    lt_kv_cache *kv = NULL;
    float *logits = NULL;
    int threads = 0, ready = 0;
    pthread_mutex_lock(&m->mu);
    while (1) {
        while (!m->stopping && m->nq == 0)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->stopping) break;
        nll_job j = m->q[0];
        memmove(m->q, m->q + 1, (size_t)(m->nq - 1) * sizeof *m->q);
        m->nq--;
        pthread_mutex_unlock(&m->mu);
        const lt_model *md = lt_infer_model(m->s, &threads);
        lt_status st = LT_OK;
        if (!ready) {
            int ctx =
                lt_infer_ctx(m->s) < LT_NLL_MAX_TOKENS ? lt_infer_ctx(m->s) : LT_NLL_MAX_TOKENS;
            logits = lt_malloc((size_t)LT_NLL_CHUNK * md->config.vocab_size * sizeof *logits);
            st = logits ? lt_kv_cache_create(md, ctx, LT_NLL_CHUNK, &kv) : LT_ERR_NOMEM;
            if (kv) lt_kv_cache_set_qact(kv, 1);
            if (threads > 0) lt_set_num_threads(threads);
            ready = !st;
        }
        double sum = 0;
        int cnt = 0;
        int n = j.n < lt_kv_cache_ctx(kv) ? j.n : lt_kv_cache_ctx(kv);
        if (ready && n >= 2) st = score_ids(md, kv, logits, j.ids, n, &sum, &cnt);
        lt_free(j.ids);
        pthread_mutex_lock(&m->mu);
        watch *w = find(m, j.model);
        if (w && ready && !st && cnt > 0) {
            w->nll_sum[w->nll_head] = sum;
            w->nll_tok[w->nll_head] = cnt;
            w->nll_head = (w->nll_head + 1) % LT_NLL_WINDOW;
            if (w->nll_n < LT_NLL_WINDOW) w->nll_n++;
            w->scored++;
        } else if (w) {
            w->unscored++;
        }
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    lt_kv_cache_free(kv);
    lt_free(logits);
    return NULL;
}

lt_monitor *lt_monitor_new(lt_server *s) {
    lt_monitor *m = lt_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->s = s;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    m->started = pthread_create(&m->thread, NULL, scorer_main, m) == 0;
    return m;
}

void lt_monitor_free(lt_monitor *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->started) pthread_join(m->thread, NULL);
    for (int i = 0; i < m->nq; i++)
        lt_free(m->q[i].ids);
    for (int i = 0; i < m->n; i++)
        lt_drift_ref_free(m->w[i].ref);
    lt_free(m->w);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    lt_free(m);
}

static watch *find(lt_monitor *m, const char *model) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->w[i].model, model)) return &m->w[i];
    return NULL;
}

lt_status lt_monitor_watch(lt_monitor *m, const char *model, const char *deployment,
                           lt_drift_ref *ref) {
    pthread_mutex_lock(&m->mu);
    watch *w = find(m, model);
    if (!w) {
        if (m->n == m->cap) {
            int cap = m->cap ? 2 * m->cap : 8;
            watch *a = lt_realloc(m->w, (size_t)cap * sizeof *a);
            if (!a) {
                pthread_mutex_unlock(&m->mu);
                lt_drift_ref_free(ref);
                return lt_error(LT_ERR_NOMEM, "out of memory");
            }
            m->w = a;
            m->cap = cap;
        }
        w = &m->w[m->n++];
        memset(w, 0, sizeof *w);
    } else {
        lt_drift_ref_free(w->ref); /* a new reference: the window starts again */
        memset(w, 0, sizeof *w);
    }
    snprintf(w->model, sizeof w->model, "%s", model);
    snprintf(w->deployment, sizeof w->deployment, "%s", deployment);
    w->ref = ref;
    pthread_mutex_unlock(&m->mu);
    return LT_OK;
}

void lt_monitor_unwatch(lt_monitor *m, const char *model) {
    pthread_mutex_lock(&m->mu);
    watch *w = find(m, model);
    if (w) {
        lt_drift_ref_free(w->ref);
        *w = m->w[--m->n];
    }
    pthread_mutex_unlock(&m->mu);
}

void lt_monitor_observe(lt_monitor *m, const char *model, const int32_t *ids, int n) {
    if (!m || !model) return;
    pthread_mutex_lock(&m->mu);
    watch *w = find(m, model);
    for (int i = 0; w && i < n; i++) {
        int b = ids[i] >= 0 && ids[i] < w->ref->vocab ? w->ref->map[ids[i]] : LT_DRIFT_BUCKETS - 1;
        if (w->n == LT_DRIFT_WINDOW)
            w->cnt[w->ring[w->head]]--; /* the oldest token leaves */
        else
            w->n++;
        w->ring[w->head] = (uint8_t)b;
        w->cnt[b]++;
        w->head = (w->head + 1) % LT_DRIFT_WINDOW;
        w->seen++;
    }
    if (w && n >= 2) {
        int k = n < LT_NLL_MAX_TOKENS ? n : LT_NLL_MAX_TOKENS;
        int32_t *copy = m->nq < LT_NLL_QUEUE ? lt_malloc((size_t)k * sizeof *copy) : NULL;
        if (copy) {
            memcpy(copy, ids, (size_t)k * sizeof *copy);
            nll_job *j = &m->q[m->nq++];
            snprintf(j->model, sizeof j->model, "%s", model);
            j->ids = copy;
            j->n = k;
            pthread_cond_broadcast(&m->cv);
        } else {
            w->unscored++;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* PSI and KL(q || p) of a window against its reference. */
static void divergences(const watch *w, double *psi, double *kl) {
    double c[LT_DRIFT_BUCKETS], q[LT_DRIFT_BUCKETS];
    for (int b = 0; b < LT_DRIFT_BUCKETS; b++)
        c[b] = (double)w->cnt[b];
    smooth(c, (double)w->n, q);
    *psi = *kl = 0;
    for (int b = 0; b < LT_DRIFT_BUCKETS; b++) {
        double l = log(q[b] / w->ref->p[b]);
        *psi += (q[b] - w->ref->p[b]) * l;
        *kl += q[b] * l;
    }
}

int lt_monitor_drift(lt_monitor *m, const char *model, double *psi, double *kl, int *window) {
    pthread_mutex_lock(&m->mu);
    watch *w = find(m, model);
    if (w) {
        divergences(w, psi, kl);
        *window = w->n;
    }
    pthread_mutex_unlock(&m->mu);
    return w != NULL;
}

static void series(FILE *f, const char *name, const watch *w, double v) {
    fprintf(f, "%s{model=\"%s\",deployment=\"%s\"} %.9g\n", name, w->model, w->deployment, v);
}

void lt_monitor_write(lt_monitor *m, FILE *f) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    fprintf(f, "# HELP loratune_input_drift_psi Population stability index of the token buckets "
               "of the last prompt tokens against the training data (docs/SERVING.md).\n"
               "# TYPE loratune_input_drift_psi gauge\n");
    for (int i = 0; i < m->n; i++) {
        double psi, kl;
        divergences(&m->w[i], &psi, &kl);
        series(f, "loratune_input_drift_psi", &m->w[i], psi);
    }
    fprintf(f, "# HELP loratune_input_drift_kl_divergence KL divergence (nats) of the token "
               "buckets of the last prompt tokens from the training data's.\n"
               "# TYPE loratune_input_drift_kl_divergence gauge\n");
    for (int i = 0; i < m->n; i++) {
        double psi, kl;
        divergences(&m->w[i], &psi, &kl);
        series(f, "loratune_input_drift_kl_divergence", &m->w[i], kl);
    }
    fprintf(f, "# HELP loratune_input_drift_window_tokens Prompt tokens in the drift window.\n"
               "# TYPE loratune_input_drift_window_tokens gauge\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_drift_window_tokens", &m->w[i], m->w[i].n);
    fprintf(f, "# HELP loratune_input_drift_reference_tokens Training-data tokens of the drift "
               "reference.\n"
               "# TYPE loratune_input_drift_reference_tokens gauge\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_drift_reference_tokens", &m->w[i], (double)m->w[i].ref->tokens);
    fprintf(f, "# HELP loratune_input_nll_per_token The base model's mean negative "
               "log-likelihood (nats per token) of the last scored prompts (prompt perplexity = "
               "exp of it).\n# TYPE loratune_input_nll_per_token gauge\n");
    for (int i = 0; i < m->n; i++) {
        const watch *w = &m->w[i];
        double sum = 0, cnt = 0;
        for (int k = 0; k < w->nll_n; k++) {
            sum += w->nll_sum[k];
            cnt += w->nll_tok[k];
        }
        if (cnt > 0) series(f, "loratune_input_nll_per_token", w, sum / cnt);
    }
    fprintf(f, "# HELP loratune_input_nll_reference_per_token The base model's mean negative "
               "log-likelihood (nats per token) of the training data (the reference).\n"
               "# TYPE loratune_input_nll_reference_per_token gauge\n");
    for (int i = 0; i < m->n; i++)
        if (m->w[i].ref->nll == m->w[i].ref->nll)
            series(f, "loratune_input_nll_reference_per_token", &m->w[i], m->w[i].ref->nll);
    fprintf(f, "# HELP loratune_input_prompts_scored_total Prompts whose perplexity was scored."
               "\n# TYPE loratune_input_prompts_scored_total counter\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_prompts_scored_total", &m->w[i], (double)m->w[i].scored);
    fprintf(f, "# HELP loratune_input_prompts_unscored_total Prompts not scored (the scorer's "
               "queue was full, or the prompt was too short).\n"
               "# TYPE loratune_input_prompts_unscored_total counter\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_prompts_unscored_total", &m->w[i], (double)m->w[i].unscored);
    fprintf(f, "# HELP loratune_input_tokens_observed_total Prompt tokens observed by the drift "
               "monitor.\n"
               "# TYPE loratune_input_tokens_observed_total counter\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_tokens_observed_total", &m->w[i], (double)m->w[i].seen);
    pthread_mutex_unlock(&m->mu);
}
