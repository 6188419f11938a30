/* hf_bpe.c - vocabulary map, merge table and the BPE word model of the Hugging Face style
 * tokenizer (see hf_tokenizer.h).
 *
 * The word model follows tokenizers' BPE exactly: characters (with continuing-subword
 * prefix / end-of-word suffix) are looked up, unknown ones become byte-fallback tokens
 * <0xNN> or the unk token (fused when fuse_unk), then merges are applied lowest rank first,
 * leftmost first on equal ranks, through a binary heap over a doubly linked symbol list.
 * Stale heap entries are recognised by re-checking the pair they were made for. */
#include "hf_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

uint64_t hf_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

lt_status hf_strmap_init(hf_strmap *m, uint32_t n) {
    uint32_t cap = 16;
    while (cap < 2u * n + 16u && cap < (1u << 30))
        cap <<= 1;
    m->slots = lt_malloc(sizeof(int32_t) * cap);
    if (!m->slots) return lt_error(LT_ERR_NOMEM, "out of memory (vocabulary map)");
    memset(m->slots, 0xff, sizeof(int32_t) * cap);
    m->cap = cap;
    return LT_OK;
}

void hf_strmap_free(hf_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
}

int32_t hf_strmap_get(const hf_strmap *m, char *const *pieces, const uint32_t *plen, const char *s,
                      size_t len) {
    if (!m->cap) return -1;
    uint32_t mask = m->cap - 1, i = (uint32_t)hf_hash(s, len) & mask;
    for (;;) {
        int32_t id = m->slots[i];
        if (id < 0) return -1;
        if (plen[id] == len && memcmp(pieces[id], s, len) == 0) return id;
        i = (i + 1) & mask;
    }
}

void hf_strmap_put(hf_strmap *m, char *const *pieces, const uint32_t *plen, int32_t id) {
    uint32_t mask = m->cap - 1, i = (uint32_t)hf_hash(pieces[id], plen[id]) & mask;
    for (;;) {
        int32_t o = m->slots[i];
        if (o < 0) {
            m->slots[i] = id;
            return;
        }
        if (plen[o] == plen[id] && memcmp(pieces[o], pieces[id], plen[id]) == 0) return;
        i = (i + 1) & mask;
    }
}

int32_t hf_vocab_get(const hf_tok *h, const char *s, size_t len) {
    int32_t id = hf_strmap_get(&h->vocab, h->pieces, h->piece_len, s, len);
    return (id >= 0 && h->in_model[id]) ? id : -1;
}

lt_status hf_tok_alloc_ids(hf_tok *h, int32_t n) {
    h->n_ids = n;
    h->pieces = lt_calloc((size_t)n + 1, sizeof(char *));
    h->piece_len = lt_calloc((size_t)n + 1, sizeof(uint32_t));
    h->in_model = lt_calloc((size_t)n + 1, 1);
    h->special = lt_calloc((size_t)n + 1, 1);
    if (!h->pieces || !h->piece_len || !h->in_model || !h->special)
        return lt_error(LT_ERR_NOMEM, "out of memory (%d token ids)", (int)n);
    return LT_OK;
}

lt_status hf_tok_set_piece(hf_tok *h, int32_t id, const char *s, size_t len) {
    char *p = lt_malloc(len + 1);
    if (!p) return lt_error(LT_ERR_NOMEM, "out of memory (token piece)");
    memcpy(p, s, len);
    p[len] = 0;
    free(h->pieces[id]);
    h->pieces[id] = p;
    h->piece_len[id] = (uint32_t)len;
    return LT_OK;
}

void hf_tok_finish_bytes(hf_tok *h) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char s[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        h->byte_ids[b] = hf_vocab_get(h, s, 6);
    }
}

lt_status hf_merges_init(hf_tok *h, uint32_t n) {
    uint32_t cap = 16;
    while (cap < 2u * n + 16u && cap < (1u << 30))
        cap <<= 1;
    h->mkeys = lt_malloc(sizeof(uint64_t) * cap);
    h->mrank = lt_malloc(sizeof(uint32_t) * cap);
    h->mres = lt_malloc(sizeof(int32_t) * cap);
    if (!h->mkeys || !h->mrank || !h->mres)
        return lt_error(LT_ERR_NOMEM, "out of memory (%u merges)", n);
    memset(h->mkeys, 0xff, sizeof(uint64_t) * cap);
    h->mcap = cap;
    h->n_merges = 0;
    return LT_OK;
}

static int merge_find(const hf_tok *h, int32_t a, int32_t b, uint32_t *rank, int32_t *res) {
    if (!h->mcap) return 0;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = h->mcap - 1, i = (uint32_t)mix64(key) & mask;
    for (;;) {
        uint64_t k = h->mkeys[i];
        if (k == UINT64_MAX) return 0;
        if (k == key) {
            *rank = h->mrank[i];
            *res = h->mres[i];
            return 1;
        }
        i = (i + 1) & mask;
    }
}

lt_status hf_merge_add(hf_tok *h, const char *a, size_t alen, const char *b, size_t blen,
                       uint32_t rank) {
    int32_t ia = hf_vocab_get(h, a, alen), ib = hf_vocab_get(h, b, blen);
    if (ia < 0 || ib < 0)
        return lt_error(LT_ERR_FORMAT, "%s: model.merges[%u]: '%.*s' is not in the vocabulary",
                        h->src, rank, (int)(ia < 0 ? alen : blen), ia < 0 ? a : b);
    /* the merged token drops the right part's continuing-subword prefix */
    size_t pl = h->cont_prefix ? strlen(h->cont_prefix) : 0;
    if (pl && blen >= pl && memcmp(b, h->cont_prefix, pl) == 0) {
        b += pl;
        blen -= pl;
    }
    char stackbuf[256];
    char *m = alen + blen <= sizeof stackbuf ? stackbuf : lt_malloc(alen + blen);
    if (!m) return lt_error(LT_ERR_NOMEM, "out of memory");
    memcpy(m, a, alen);
    memcpy(m + alen, b, blen);
    int32_t ir = hf_vocab_get(h, m, alen + blen);
    if (m != stackbuf) free(m);
    if (ir < 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: model.merges[%u]: the merge of '%.*s' and '%.*s' is not in the "
                        "vocabulary",
                        h->src, rank, (int)alen, a, (int)blen, b);
    if (h->n_merges + 1 > h->mcap / 2) return lt_error(LT_ERR_INTERNAL, "merge table full");
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t mask = h->mcap - 1, i = (uint32_t)mix64(key) & mask;
    while (h->mkeys[i] != UINT64_MAX) {
        if (h->mkeys[i] == key) return LT_OK;
        i = (i + 1) & mask;
    }
    h->mkeys[i] = key;
    h->mrank[i] = rank;
    h->mres[i] = ir;
    h->n_merges++;
    return LT_OK;
}

lt_status hf_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        int32_t *p = lt_realloc(*ids, nc * sizeof(int32_t));
        if (!p) return lt_error(LT_ERR_NOMEM, "out of memory (token ids)");
        *ids = p;
        *cap = nc;
    }
    (*ids)[(*n)++] = id;
    return LT_OK;
}

/* ---- the word model ---------------------------------------------------------------------- */
typedef struct {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes covered; 0 = merged away */
} sym;

typedef struct {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
} hent;

static int hless(const hent *a, const hent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void hpush(hent *hp, size_t *n, hent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &hp[p])) break;
        hp[i] = hp[p];
        i = p;
    }
    hp[i] = e;
}

static hent hpop(hent *hp, size_t *n) {
    hent top = hp[0], last = hp[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(&hp[c + 1], &hp[c])) c++;
        if (!hless(&hp[c], &last)) break;
        hp[i] = hp[c];
        i = c;
    }
    if (*n) hp[i] = last;
    return top;
}

static size_t utf8_len(uint8_t c) {
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) return 2;
    if ((c & 0xf0) == 0xe0) return 3;
    if ((c & 0xf8) == 0xf0) return 4;
    return 1;
}

/* s has room for every symbol: each character adds at most its bytes plus prefix/suffix */
static void sym_add(sym *s, size_t *n, int32_t id, uint32_t len) {
    sym *y = &s[*n];
    y->id = id;
    y->len = len;
    y->prev = (int32_t)*n - 1;
    y->next = (int32_t)*n + 1;
    (*n)++;
}

lt_status hf_bpe_word(const hf_tok *h, const char *w, size_t len, int32_t **ids, size_t *n,
                      size_t *cap) {
    if (len == 0) return LT_OK;
    if (h->ignore_merges) {
        int32_t id = hf_vocab_get(h, w, len);
        if (id >= 0) return hf_ids_push(ids, n, cap, id);
    }
    size_t pl = h->cont_prefix ? strlen(h->cont_prefix) : 0;
    size_t sl = h->eow_suffix ? strlen(h->eow_suffix) : 0;
    size_t scap = len * (1 + pl + sl) + 8, ns = 0;
    sym s_stack[96];
    hent h_stack[2 * 96 + 1];
    char b_stack[64];
    int small = scap <= 96 && pl + sl + 8 <= sizeof b_stack;
    sym *s = small ? s_stack : lt_malloc(scap * sizeof(sym));
    hent *hp = small ? h_stack : lt_malloc(sizeof(hent) * (scap * 2 + 1));
    char *buf = small ? b_stack : lt_malloc(pl + sl + 8);
    lt_status st = LT_OK;
    if (!s || !buf || !hp) {
        st = lt_error(LT_ERR_NOMEM, "out of memory (BPE)");
        goto done;
    }
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = utf8_len((uint8_t)w[i]);
        if (i + cl > len) cl = len - i;
        size_t bl = 0;
        if (pl && i > 0) {
            memcpy(buf, h->cont_prefix, pl);
            bl = pl;
        }
        memcpy(buf + bl, w + i, cl);
        bl += cl;
        if (sl && i + cl == len) {
            memcpy(buf + bl, h->eow_suffix, sl);
            bl += sl;
        }
        i += cl;
        int32_t id = hf_vocab_get(h, buf, bl);
        if (id >= 0) {
            if (unk_id >= 0) {
                sym_add(s, &ns, unk_id, unk_len);
                unk_id = -1;
            }
            sym_add(s, &ns, id, (uint32_t)bl);
            continue;
        }
        if (h->byte_fallback) {
            int ok = 1;
            for (size_t k = 0; k < bl; k++)
                if (h->byte_ids[(uint8_t)buf[k]] < 0) ok = 0;
            if (ok) {
                for (size_t k = 0; k < bl; k++)
                    sym_add(s, &ns, h->byte_ids[(uint8_t)buf[k]], 1);
                continue;
            }
        }
        if (h->unk_id >= 0) {
            if (unk_id >= 0 && h->fuse_unk) {
                unk_len += (uint32_t)bl;
            } else {
                if (unk_id >= 0) sym_add(s, &ns, unk_id, unk_len);
                unk_id = h->unk_id;
                unk_len = (uint32_t)bl;
            }
        }
    }
    if (unk_id >= 0) sym_add(s, &ns, unk_id, unk_len);
    if (ns == 0) goto done;
    s[ns - 1].next = -1;

    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        uint32_t r;
        int32_t res;
        if (merge_find(h, s[i].id, s[i + 1].id, &r, &res))
            hpush(hp, &nh, (hent){r, (int32_t)i, res});
    }
    /* each merge removes a symbol and pushes at most 2 entries: the heap never exceeds
     * the initial ns-1 entries plus 2 per merge minus 1 popped per merge */
    while (nh) {
        hent t = hpop(hp, &nh);
        sym *a = &s[t.pos];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &s[a->next];
        uint32_t r;
        int32_t res;
        if (!merge_find(h, a->id, b->id, &r, &res) || res != t.new_id) continue;
        a->id = t.new_id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) s[a->next].prev = t.pos;
        if (a->prev >= 0 && merge_find(h, s[a->prev].id, a->id, &r, &res))
            hpush(hp, &nh, (hent){r, a->prev, res});
        if (a->next >= 0 && merge_find(h, a->id, s[a->next].id, &r, &res))
            hpush(hp, &nh, (hent){r, t.pos, res});
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if ((st = hf_ids_push(ids, n, cap, s[i].id)) != LT_OK) goto done;
done:
    if (!small) {
        free(s);
        free(hp);
        free(buf);
    }
    return st;
}

/* ---- cache ------------------------------------------------------------------------------- */
#define HF_CACHE_CAP 32768u
#define HF_CACHE_MAXW 64u

void hf_cache_create(hf_tok *h) {
    lt_alloc_benign_begin_(); /* without a cache, words are merged every time */
    hf_cache *c = lt_calloc(1, sizeof *c);
    if (c) c->ents = lt_calloc(HF_CACHE_CAP, sizeof(hf_cache_ent));
    lt_alloc_benign_end_();
    if (!c) return;
    if (!c->ents || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->ents);
        free(c);
        return;
    }
    c->cap = HF_CACHE_CAP;
    h->cache = c;
}

static void cache_clear(hf_cache *c) {
    for (uint32_t i = 0; i < c->cap; i++) {
        free(c->ents[i].key);
        c->ents[i].key = NULL;
    }
    c->count = 0;
}

static void cache_free(hf_cache *c) {
    if (!c) return;
    cache_clear(c);
    free(c->ents);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

lt_status hf_bpe_word_cached(const hf_tok *h, const char *w, size_t len, int32_t **ids, size_t *n,
                             size_t *cap) {
    hf_cache *c = h->cache;
    if (!c || len > HF_CACHE_MAXW) return hf_bpe_word(h, w, len, ids, n, cap);
    uint64_t hs = hf_hash(w, len);
    uint32_t mask = c->cap - 1, i = (uint32_t)hs & mask;
    lt_status st = LT_OK;
    pthread_mutex_lock(&c->mu);
    for (;; i = (i + 1) & mask) {
        hf_cache_ent *e = &c->ents[i];
        if (!e->key) break;
        if (e->hash == hs && e->klen == len && memcmp(e->key, w, len) == 0) {
            for (uint32_t k = 0; !st && k < e->nids; k++)
                st = hf_ids_push(ids, n, cap, e->ids[k]);
            pthread_mutex_unlock(&c->mu);
            return st;
        }
    }
    pthread_mutex_unlock(&c->mu);
    size_t n0 = *n;
    if ((st = hf_bpe_word(h, w, len, ids, n, cap))) return st;
    size_t nn = *n - n0;
    lt_alloc_benign_begin_();
    char *blob = lt_malloc(len + 1 + 4 + nn * sizeof(int32_t));
    lt_alloc_benign_end_();
    if (!blob) return LT_OK; /* the cache is only an optimisation */
    memcpy(blob, w, len);
    int32_t *cid = (int32_t *)(blob + ((len + 4) & ~(size_t)3));
    if (nn) memcpy(cid, *ids + n0, nn * sizeof(int32_t));
    pthread_mutex_lock(&c->mu);
    if (c->count >= c->cap / 4 * 3) cache_clear(c);
    for (i = (uint32_t)hs & mask;; i = (i + 1) & mask) {
        hf_cache_ent *e = &c->ents[i];
        if (!e->key) {
            *e = (hf_cache_ent){hs, blob, (uint32_t)len, (uint32_t)nn, cid};
            c->count++;
            blob = NULL;
            break;
        }
        if (e->hash == hs && e->klen == len && memcmp(e->key, w, len) == 0) break;
    }
    pthread_mutex_unlock(&c->mu);
    free(blob);
    return LT_OK;
}

void hf_tok_free(hf_tok *h) {
    if (!h) return;
    cache_free(h->cache);
    for (int32_t i = 0; i < h->n_ids; i++)
        free(h->pieces ? h->pieces[i] : NULL);
    free(h->pieces);
    free(h->piece_len);
    free(h->in_model);
    free(h->special);
    hf_strmap_free(&h->vocab);
    free(h->mkeys);
    free(h->mrank);
    free(h->mres);
    free(h->cont_prefix);
    free(h->eow_suffix);
    for (int i = 0; i < h->n_added; i++) {
        if (h->added[i].pat != h->added[i].content) free(h->added[i].pat);
        free(h->added[i].content);
    }
    free(h->added);
    for (int i = 0; i < h->n_norm; i++) {
        free(h->norm[i].a);
        free(h->norm[i].b);
        pcre2_code_free(h->norm[i].re);
    }
    free(h->norm);
    for (int i = 0; i < h->n_pre; i++) {
        pcre2_code_free(h->pre[i].re);
        free(h->pre[i].lit);
    }
    free(h->pre);
    for (int i = 0; i < h->n_dec; i++) {
        free(h->dec[i].a);
        free(h->dec[i].b);
    }
    free(h->dec);
    free(h->post_pre);
    free(h->post_post);
    pcre2_code_free(h->word_re);
    free((char *)h->src);
    free(h);
}
