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
 * Locking: one mutex over the watch list; observe is O(prompt tokens). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/data.h"
#include "loratune/tokenizer.h"
#include "serve_internal.h"

struct lt_drift_ref {
    int vocab;
    int16_t *map;                       /* (vocab) token id -> bucket */
    int32_t top[LT_DRIFT_BUCKETS - 1];  /* the token of each bucket but the last (-1: unused) */
    double count[LT_DRIFT_BUCKETS];     /* reference tokens per bucket */
    double p[LT_DRIFT_BUCKETS];         /* smoothed shares */
    int64_t tokens;                     /* reference tokens */
    int64_t examples;
};

typedef struct {
    char model[72];      /* the served adapter ("NAME.vK") */
    char deployment[72]; /* NAME */
    lt_drift_ref *ref;   /* owned */
    uint8_t ring[LT_DRIFT_WINDOW];
    int head, n;                 /* next slot, tokens in the ring */
    int64_t cnt[LT_DRIFT_BUCKETS];
    uint64_t seen;               /* prompt tokens observed since watched */
} watch;

struct lt_monitor {
    pthread_mutex_t mu;
    watch *w;
    int n, cap;
};

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
    lt_data_free(d);
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
    return json_pack("{s:i,s:i,s:I,s:I,s:o,s:o}", "buckets", LT_DRIFT_BUCKETS, "window_tokens",
                     LT_DRIFT_WINDOW, "tokens", (json_int_t)r->tokens, "examples",
                     (json_int_t)r->examples, "bucket_tokens", top, "counts", cnt);
}

lt_monitor *lt_monitor_new(void) {
    lt_monitor *m = lt_calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void lt_monitor_free(lt_monitor *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++)
        lt_drift_ref_free(m->w[i].ref);
    lt_free(m->w);
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
    fprintf(f, "# HELP loratune_input_tokens_observed_total Prompt tokens observed by the drift "
               "monitor.\n"
               "# TYPE loratune_input_tokens_observed_total counter\n");
    for (int i = 0; i < m->n; i++)
        series(f, "loratune_input_tokens_observed_total", &m->w[i], (double)m->w[i].seen);
    pthread_mutex_unlock(&m->mu);
}
