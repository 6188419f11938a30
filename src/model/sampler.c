/* sampler.c - temperature / top-k / top-p sampling with a seeded xoshiro256** generator.
 *
 * Order and semantics follow transformers' logits processors (TemperatureLogitsWarper,
 * TopKLogitsWarper, TopPLogitsWarper with min_tokens_to_keep = 1); see sampler.h. Candidates
 * are sorted by logit descending, ties by lower id first, so results do not depend on the
 * qsort implementation. All scratch is allocated at create. */
#include "loratune/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lt_sampler {
    lt_sampler_params p;
    int vocab;
    uint64_t s[4]; /* xoshiro256** state */
    int32_t *idx;  /* (V) candidate ids, sorted by logit descending */
    double *prob;  /* (V) their probabilities */
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t lt_sampler_next_u64(lt_sampler *s) {
    uint64_t *st = s->s;
    uint64_t r = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

double lt_sampler_uniform(lt_sampler *s) {
    return (double)(lt_sampler_next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

lt_status lt_sampler_create(const lt_sampler_params *p, int vocab_size, lt_sampler **out) {
    *out = NULL;
    if (vocab_size < 1) return lt_error(LT_ERR_ARG, "sampler: vocab_size %d", vocab_size);
    if (!isfinite(p->temperature) || !isfinite(p->top_p))
        return lt_error(LT_ERR_ARG, "sampler: temperature and top_p must be finite numbers");
    lt_sampler *s = lt_calloc(1, sizeof *s);
    if (!s) return lt_error(LT_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->vocab = vocab_size;
    s->idx = lt_malloc(sizeof(int32_t) * (size_t)vocab_size);
    s->prob = lt_malloc(sizeof(double) * (size_t)vocab_size);
    if (!s->idx || !s->prob) {
        lt_sampler_free(s);
        return lt_error(LT_ERR_NOMEM, "sampler: out of memory");
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->s[i] = splitmix64(&x);
    *out = s;
    return LT_OK;
}

void lt_sampler_free(lt_sampler *s) {
    if (!s) return;
    free(s->idx);
    free(s->prob);
    free(s);
}

static _Thread_local const float *g_cmp;
static int cmp_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_cmp[i], y = g_cmp[j];
    if (x > y) return -1;
    if (x < y) return 1;
    return (i > j) - (i < j);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int32_t lt_sampler_sample(lt_sampler *s, const float *logits) {
    int V = s->vocab;
    if (!(s->p.temperature > 0.0f)) return argmax(logits, V);
    /* temperature does not change the order; it is applied inside the softmax, in double, as
     * (logit - max) / T so that a tiny T cannot overflow to inf - inf */
    double inv_t = 1.0 / (double)s->p.temperature;

    /* candidates sorted by logit descending */
    int n = V;
    for (int i = 0; i < V; i++)
        s->idx[i] = i;
    int use_k = s->p.top_k > 0 && s->p.top_k < V;
    int use_p = s->p.top_p > 0.0f && s->p.top_p < 1.0f;
    if (use_k || use_p) {
        g_cmp = logits;
        qsort(s->idx, (size_t)V, sizeof(int32_t), cmp_desc);
    }
    if (use_k) { /* keep every logit >= the k-th largest (ties kept, like transformers) */
        float kth = logits[s->idx[s->p.top_k - 1]];
        n = s->p.top_k;
        while (n < V && logits[s->idx[n]] >= kth)
            n++;
    }
    /* softmax over the candidates, in double */
    float mx = logits[s->idx[0]];
    if (!use_k && !use_p) mx = logits[argmax(logits, V)];
    double sum = 0.0;
    for (int r = 0; r < n; r++) {
        double e = exp(((double)logits[s->idx[r]] - (double)mx) * inv_t);
        s->prob[r] = e;
        sum += e;
    }
    for (int r = 0; r < n; r++)
        s->prob[r] /= sum;
    if (use_p) {
        /* transformers: ascending cumulative sum; drop where cum <= 1 - top_p; keep the top.
         * The ascending cumulative sum at descending rank r is the tail sum from r. */
        double tail = 0.0, thr = 1.0 - (double)s->p.top_p;
        int keep = 1;
        for (int r = n - 1; r >= 1; r--) {
            tail += s->prob[r];
            if (tail > thr) {
                keep = r + 1;
                break;
            }
        }
        n = keep;
    }
    double total = 0.0;
    for (int r = 0; r < n; r++)
        total += s->prob[r];
    double u = lt_sampler_uniform(s) * total, acc = 0.0;
    for (int r = 0; r < n; r++) {
        acc += s->prob[r];
        if (u < acc) return s->idx[r];
    }
    return s->idx[n - 1];
}
