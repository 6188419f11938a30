/* hf_pipeline.c - encode and decode of the Hugging Face style tokenizer (hf_tokenizer.h):
 * added-token splitting, normalizers, pre-tokenizers, post-processor, decoders.
 *
 * Mirrors the PyPI `tokenizers` package step by step:
 *  encode: text -> (invalid UTF-8 replaced by U+FFFD first, as Rust's from_utf8_lossy)
 *          -> split out non-normalized added tokens (leftmost-longest, single_word / lstrip /
 *          rstrip) -> normalize each remaining piece (Prepend, Replace, NFC/NFD/NFKC/NFKD,
 *          Lowercase in the file's order) -> split out normalized added tokens ->
 *          pre-tokenize (a list of splits, each step maps every split to sub-splits, empty
 *          ones dropped) -> BPE each split -> template ids around the whole when add_special.
 *  decode: ids -> pieces (special ones dropped with skip_special) -> decoder chain over the
 *          list of token strings -> concatenation (no decoder: pieces joined by " ").
 * Splits live in one growing byte arena and are referenced by offset, so a step that only
 * cuts a split into pieces copies nothing. */
#include "hf_tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- growable byte buffer ------------------------------------------------------------ */
typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static lt_status buf_reserve(buf_t *b, size_t extra) {
    if (b->n + extra <= b->cap) return LT_OK;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->n + extra)
        nc *= 2;
    char *p = lt_realloc(b->p, nc);
    if (!p) return lt_error(LT_ERR_NOMEM, "out of memory (tokenizer buffer)");
    b->p = p;
    b->cap = nc;
    return LT_OK;
}

static lt_status buf_put(buf_t *b, const void *s, size_t len) {
    lt_status st = buf_reserve(b, len + 1);
    if (st) return st;
    if (len) memcpy(b->p + b->n, s, len);
    b->n += len;
    return LT_OK;
}

static size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 with *bad = bytes to skip (the
 * maximal valid prefix, at least 1), as in Unicode's "maximal subpart" rule. */
static size_t utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c == 0xe0)
        need = 2, lo = 0xa0;
    else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
        need = 2;
    else if (c == 0xed)
        need = 2, hi = 0x9f;
    else if (c == 0xf0)
        need = 3, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
        need = 3;
    else if (c == 0xf4)
        need = 3, hi = 0x8f;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        uint8_t lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xbf;
        if (k >= n || s[k] < lo_k || s[k] > hi_k) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}

/* Appends s with invalid sequences replaced by U+FFFD (Rust String::from_utf8_lossy). */
static lt_status put_lossy(buf_t *b, const char *s, size_t n) {
    lt_status st = buf_reserve(b, n * 3 + 1);
    if (st) return st;
    size_t i = 0;
    while (i < n) {
        size_t bad = 0, k = utf8_valid((const uint8_t *)s + i, n - i, &bad);
        if (k) {
            memcpy(b->p + b->n, s + i, k);
            b->n += k;
            i += k;
        } else {
            memcpy(b->p + b->n, "\xef\xbf\xbd", 3);
            b->n += 3;
            i += bad;
        }
    }
    return LT_OK;
}

static uint32_t get_cp(const char *s, size_t n, size_t *cl) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80 || n < 2) {
        *cl = 1;
        return u[0];
    }
    if ((u[0] & 0xe0) == 0xc0) {
        *cl = 2;
        return ((u[0] & 0x1fu) << 6) | (u[1] & 0x3fu);
    }
    if ((u[0] & 0xf0) == 0xe0 && n >= 3) {
        *cl = 3;
        return ((u[0] & 0x0fu) << 12) | ((u[1] & 0x3fu) << 6) | (u[2] & 0x3fu);
    }
    if (n >= 4) {
        *cl = 4;
        return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3fu) << 12) | ((u[2] & 0x3fu) << 6) |
               (u[3] & 0x3fu);
    }
    *cl = 1;
    return u[0];
}

/* ---- GPT-2 byte <-> unicode alphabet ------------------------------------------------- */
static uint32_t bl_char(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return 289u + (b - 127u);
    return 323; /* 173 */
}

static int bl_byte(uint32_t cp) {
    if (cp < 256)
        return ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174) ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}

/* ---- Unicode classes needed for added tokens (tokenizers uses Rust's char methods) ----- */
static int is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

static int is_word_char(uint32_t c, pcre2_match_data *md, const pcre2_code *wre) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    char tmp[4];
    size_t l = put_cp(tmp, c);
    return pcre2_match(wre, (PCRE2_SPTR)tmp, l, 0, PCRE2_NO_UTF_CHECK, md, NULL) >= 0;
}

/* ---- pieces ------------------------------------------------------------------------------ */
typedef struct {
    size_t off, len;
    int32_t id;   /* added token id, or -1 for text */
    int at_start; /* starts at offset 0 of the original text (Metaspace "first") */
} piece_t;

typedef struct {
    piece_t *v;
    size_t n, cap;
} pieces_t;

static lt_status pieces_push(pieces_t *p, size_t off, size_t len, int32_t id, int at_start) {
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        piece_t *q = lt_realloc(p->v, nc * sizeof(piece_t));
        if (!q) return lt_error(LT_ERR_NOMEM, "out of memory (pre-tokenizer)");
        p->v = q;
        p->cap = nc;
    }
    p->v[p->n++] = (piece_t){off, len, id, at_start};
    return LT_OK;
}

typedef struct {
    const hf_tok *h;
    pcre2_match_data *md;
    const pcre2_code *wre; /* \w for single_word */
    buf_t arena;           /* split texts */
    int parse_special;
} enc_ctx;

/* Added-token split of a[0..n) (in the arena at offset base) with tokens whose normalized
 * flag equals `normalized`. Pushes text pieces (id -1) and token pieces in order. */
static lt_status split_added(enc_ctx *c, size_t base, size_t n, int normalized, int at_start,
                             pieces_t *out) {
    const hf_tok *h = c->h;
    size_t start_offset = 0, pos = 0;
    lt_status st;
    int any = 0;
    for (int k = 0; k < h->n_added; k++)
        if (h->added[k].normalized == normalized) any = 1;
    while (any && pos < n) {
        const char *s = c->arena.p + base;
        /* leftmost-longest match starting at the first position with any match */
        int best = -1;
        size_t mstart = pos;
        for (; mstart < n && best < 0; mstart++) {
            if (!h->added_first[normalized][(uint8_t)s[mstart]]) continue;
            for (int k = 0; k < h->n_added; k++) {
                const hf_added *a = &h->added[k];
                if (a->normalized != normalized || a->plen == 0 || a->plen > n - mstart) continue;
                if ((uint8_t)a->pat[0] != (uint8_t)s[mstart]) continue;
                if (memcmp(a->pat, s + mstart, a->plen)) continue;
                if (best < 0 || a->plen > h->added[best].plen) best = k;
            }
            if (best >= 0) break;
        }
        if (best < 0) break;
        const hf_added *a = &h->added[best];
        size_t mst = mstart, mend = mstart + a->plen;
        pos = mend;
        if (!c->parse_special && a->special) continue;
        if (a->single_word) {
            int sw = 1;
            if (mst > 0) {
                size_t k = mst - 1, cl;
                while (k > 0 && ((uint8_t)s[k] & 0xc0) == 0x80)
                    k--;
                if (is_word_char(get_cp(s + k, n - k, &cl), c->md, c->wre)) sw = 0;
            }
            if (mend < n) {
                size_t cl;
                if (is_word_char(get_cp(s + mend, n - mend, &cl), c->md, c->wre)) sw = 0;
            }
            if (!sw) continue;
        }
        if (a->lstrip) {
            size_t ns = mst;
            while (ns > 0) {
                size_t k = ns - 1, cl;
                while (k > 0 && ((uint8_t)s[k] & 0xc0) == 0x80)
                    k--;
                if (!is_ws(get_cp(s + k, n - k, &cl))) break;
                ns = k;
            }
            mst = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (mend < n) {
                size_t cl;
                if (!is_ws(get_cp(s + mend, n - mend, &cl))) break;
                mend += cl;
            }
        }
        if (mst > start_offset && (st = pieces_push(out, base + start_offset, mst - start_offset,
                                                    -1, at_start && start_offset == 0)))
            return st;
        if ((st = pieces_push(out, base + mst, mend - mst, a->id, 0))) return st;
        start_offset = mend;
        if (pos < mend) pos = mend;
    }
    if (start_offset < n || (n == 0 && out->n == 0))
        return pieces_push(out, base + start_offset, n - start_offset, -1,
                           at_start && start_offset == 0);
    return LT_OK;
}

/* ---- normalizers ------------------------------------------------------------------------- */
/* Finds non-overlapping matches of a literal (lit) or regex (re) in s[0..n). Calls back
 * with each match [ms, me). Empty regex matches advance by one character. */
typedef lt_status (*match_fn)(void *u, size_t ms, size_t me);

static lt_status find_all(enc_ctx *c, const pcre2_code *re, const char *lit, size_t litlen,
                          const char *s, size_t n, match_fn fn, void *u) {
    lt_status st;
    if (!re) {
        if (!litlen) return LT_OK;
        for (size_t i = 0; i + litlen <= n;) {
            if (memcmp(s + i, lit, litlen) == 0) {
                if ((st = fn(u, i, i + litlen))) return st;
                i += litlen;
            } else {
                i++;
            }
        }
        return LT_OK;
    }
    size_t pos = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lt_error(LT_ERR_INTERNAL, "%s: regex match failed: %s", c->h->src,
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if ((st = fn(u, ms, me))) return st;
        if (me > ms) {
            pos = me;
        } else {
            if (me >= n) break;
            size_t cl;
            get_cp(s + me, n - me, &cl);
            pos = me + cl;
        }
    }
    return LT_OK;
}

typedef struct {
    buf_t *out;
    const char *s;
    size_t last;
    const char *rep;
    size_t replen;
} repl_u;

static lt_status repl_cb(void *u, size_t ms, size_t me) {
    repl_u *r = u;
    lt_status st = buf_put(r->out, r->s + r->last, ms - r->last);
    if (!st) st = buf_put(r->out, r->rep, r->replen);
    r->last = me;
    return st;
}

/* Unicode normalization form of s[0..n) (valid UTF-8: encode replaced invalid bytes first)
 * appended to out, through utf8proc with the options of its utf8proc_NFC/NFD/NFKC/NFKD. */
static lt_status put_unicode_form(buf_t *out, const char *s, size_t n, int type) {
    if (n == 0) return LT_OK;
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (type == HF_NORM_NFC || type == HF_NORM_NFKC)
        opt |= UTF8PROC_COMPOSE;
    else
        opt |= UTF8PROC_DECOMPOSE;
    if (type == HF_NORM_NFKC || type == HF_NORM_NFKD) opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r, opt);
    if (rl < 0) {
        free(r);
        if (rl == UTF8PROC_ERROR_NOMEM || rl == UTF8PROC_ERROR_OVERFLOW)
            return lt_error(LT_ERR_NOMEM, "out of memory (Unicode normalizer)");
        return lt_error(LT_ERR_INTERNAL, "Unicode normalizer failed: %s", utf8proc_errmsg(rl));
    }
    lt_status st = buf_put(out, r, (size_t)rl);
    free(r);
    return st;
}

/* Rust's char::to_lowercase on every char: the full mapping, which differs from the simple
 * one (utf8proc_tolower) only for U+0130 (SpecialCasing.txt's one unconditional lowercase
 * entry); final sigma is not special (that is str::to_lowercase, not char's). */
static lt_status put_lowercase(buf_t *out, const char *s, size_t n) {
    lt_status st = buf_reserve(out, n + n / 2 + 4);
    for (size_t i = 0; !st && i < n;) {
        size_t cl;
        uint32_t cp = get_cp(s + i, n - i, &cl);
        i += cl;
        char tmp[8];
        size_t tl;
        if (cp == 0x130) {
            memcpy(tmp, "i\xcc\x87", 3); /* i + U+0307 */
            tl = 3;
        } else {
            tl = put_cp(tmp, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
        }
        st = buf_put(out, tmp, tl);
    }
    return st;
}

/* Normalizes arena[off, off+len) and appends the result to the arena (at *noff, *nlen).
 * Every normalizer maps the whole string: tokenizers tracks alignments while doing so, but
 * the ids only depend on the resulting text. */
static lt_status normalize(enc_ctx *c, size_t off, size_t len, size_t *noff, size_t *nlen) {
    const hf_tok *h = c->h;
    buf_t cur = {0}, nxt = {0};
    lt_status st = buf_put(&cur, c->arena.p + off, len);
    for (int i = 0; !st && i < h->n_norm; i++) {
        const hf_norm *nm = &h->norm[i];
        nxt.n = 0;
        switch (nm->type) {
        case HF_NORM_PREPEND:
            if (cur.n) st = buf_put(&nxt, nm->a, nm->alen);
            if (!st) st = buf_put(&nxt, cur.p, cur.n);
            break;
        case HF_NORM_REPLACE:
        case HF_NORM_REPLACE_RE: {
            repl_u r = {&nxt, cur.p, 0, nm->b, nm->blen};
            st = find_all(c, nm->re, nm->a, nm->alen, cur.p, cur.n, repl_cb, &r);
            if (!st) st = buf_put(&nxt, cur.p + r.last, cur.n - r.last);
            break;
        }
        case HF_NORM_NFC:
        case HF_NORM_NFD:
        case HF_NORM_NFKC:
        case HF_NORM_NFKD:
            st = put_unicode_form(&nxt, cur.p, cur.n, nm->type);
            break;
        case HF_NORM_LOWERCASE:
            st = put_lowercase(&nxt, cur.p, cur.n);
            break;
        }
        buf_t t = cur;
        cur = nxt;
        nxt = t;
    }
    *noff = c->arena.n;
    *nlen = cur.n;
    if (!st) st = buf_put(&c->arena, cur.p, cur.n);
    free(cur.p);
    free(nxt.p);
    return st;
}

/* ---- pre-tokenizers ---------------------------------------------------------------------- */
typedef struct {
    size_t off, len;
    int match;
} mpiece;

typedef struct {
    mpiece *v;
    size_t n, cap;
    size_t prev;
    size_t base;
} mlist;

static lt_status mlist_push(mlist *m, size_t off, size_t len, int match) {
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 32;
        mpiece *q = lt_realloc(m->v, nc * sizeof(mpiece));
        if (!q) return lt_error(LT_ERR_NOMEM, "out of memory (pre-tokenizer)");
        m->v = q;
        m->cap = nc;
    }
    m->v[m->n++] = (mpiece){off, len, match};
    return LT_OK;
}

static lt_status mlist_cb(void *u, size_t ms, size_t me) {
    mlist *m = u;
    lt_status st = LT_OK;
    if (m->prev != ms) st = mlist_push(m, m->base + m->prev, ms - m->prev, 0);
    if (!st) st = mlist_push(m, m->base + ms, me - ms, 1);
    m->prev = me;
    return st;
}

/* tokenizers' Pattern::find_matches + split with a delimiter behavior; appends the
 * resulting non-empty splits of arena[off..off+len) to out. */
static lt_status split_by(enc_ctx *c, const pcre2_code *re, const char *lit, size_t litlen,
                          int behavior, int invert, size_t off, size_t len, int at_start,
                          pieces_t *out) {
    mlist m = {0};
    m.base = off;
    lt_status st = LT_OK;
    if (len == 0) {
        st = mlist_push(&m, off, 0, 0);
    } else {
        st = find_all(c, re, lit, litlen, c->arena.p + off, len, mlist_cb, &m);
        if (!st && m.prev != len) st = mlist_push(&m, off + m.prev, len - m.prev, 0);
    }
    if (st) goto done;
    if (invert)
        for (size_t i = 0; i < m.n; i++)
            m.v[i].match = !m.v[i].match;
    /* behaviors, as tokenizers' NormalizedString::split */
    mlist r = {0};
    switch (behavior) {
    case HF_SPLIT_ISOLATED:
        r = m;
        m.v = NULL;
        for (size_t i = 0; i < r.n; i++)
            r.v[i].match = 0;
        break;
    case HF_SPLIT_REMOVED:
        r = m;
        m.v = NULL;
        {
            size_t k = 0;
            for (size_t i = 0; i < r.n; i++)
                if (!r.v[i].match) r.v[k++] = r.v[i];
            r.n = k;
        }
        break;
    case HF_SPLIT_MERGED_PREV:
    case HF_SPLIT_CONTIGUOUS: {
        int prev_match = 0;
        for (size_t i = 0; !st && i < m.n; i++) {
            int merge = behavior == HF_SPLIT_MERGED_PREV ? (m.v[i].match && !prev_match)
                                                         : (m.v[i].match == prev_match);
            if (merge && r.n)
                r.v[r.n - 1].len = m.v[i].off + m.v[i].len - r.v[r.n - 1].off;
            else
                st = mlist_push(&r, m.v[i].off, m.v[i].len, 0);
            prev_match = m.v[i].match;
        }
        break;
    }
    case HF_SPLIT_MERGED_NEXT: {
        int prev_match = 0;
        for (size_t ii = m.n; !st && ii-- > 0;) {
            int merge = m.v[ii].match && !prev_match;
            if (merge && r.n) {
                mpiece *l = &r.v[r.n - 1];
                l->len = l->off + l->len - m.v[ii].off;
                l->off = m.v[ii].off;
            } else {
                st = mlist_push(&r, m.v[ii].off, m.v[ii].len, 0);
            }
            prev_match = m.v[ii].match;
        }
        for (size_t i = 0; i < r.n / 2; i++) {
            mpiece t = r.v[i];
            r.v[i] = r.v[r.n - 1 - i];
            r.v[r.n - 1 - i] = t;
        }
        break;
    }
    }
    for (size_t i = 0; !st && i < r.n; i++)
        if (r.v[i].len)
            st = pieces_push(out, r.v[i].off, r.v[i].len, -1, at_start && r.v[i].off == off);
    free(r.v);
done:
    free(m.v);
    return st;
}

static lt_status pretok_step(enc_ctx *c, const hf_pre *p, const piece_t *in, pieces_t *out) {
    lt_status st = LT_OK;
    size_t off = in->off, len = in->len;
    switch (p->type) {
    case HF_PRE_BYTELEVEL: {
        if (p->add_prefix_space && (len == 0 || c->arena.p[off] != ' ')) {
            size_t no = c->arena.n;
            if ((st = buf_reserve(&c->arena, len + 1))) return st;
            c->arena.p[c->arena.n++] = ' ';
            memcpy(c->arena.p + c->arena.n, c->arena.p + off, len);
            c->arena.n += len;
            off = no;
            len += 1;
        }
        pieces_t tmp = {0};
        if (p->use_regex)
            st = split_by(c, p->re, NULL, 0, HF_SPLIT_ISOLATED, 0, off, len, in->at_start, &tmp);
        else if (len)
            st = pieces_push(&tmp, off, len, -1, in->at_start);
        for (size_t i = 0; !st && i < tmp.n; i++) {
            size_t no = c->arena.n;
            if ((st = buf_reserve(&c->arena, tmp.v[i].len * 2))) break;
            for (size_t k = 0; k < tmp.v[i].len; k++)
                c->arena.n +=
                    put_cp(c->arena.p + c->arena.n, bl_char((uint8_t)c->arena.p[tmp.v[i].off + k]));
            st = pieces_push(out, no, c->arena.n - no, -1, tmp.v[i].at_start);
        }
        free(tmp.v);
        return st;
    }
    case HF_PRE_SPLIT:
        return split_by(c, p->re, p->lit, p->litlen, p->behavior, p->invert, off, len, in->at_start,
                        out);
    case HF_PRE_METASPACE: {
        size_t no = c->arena.n;
        const char *rp = p->repl;
        size_t rl = p->repl_len;
        int prepend = 0;
        if (p->prepend_scheme == HF_PREPEND_ALWAYS ||
            (p->prepend_scheme == HF_PREPEND_FIRST && in->at_start)) {
            /* prepended unless the text (after replacing spaces) starts with it */
            int starts = (len && c->arena.p[off] == ' ') ||
                         (len >= rl && memcmp(c->arena.p + off, rp, rl) == 0);
            prepend = !starts;
        }
        if ((st = buf_reserve(&c->arena, (len + 1) * rl + len))) return st;
        if (prepend) {
            memcpy(c->arena.p + c->arena.n, rp, rl);
            c->arena.n += rl;
        }
        for (size_t k = 0; k < len; k++) {
            char ch = c->arena.p[off + k];
            if (ch == ' ') {
                memcpy(c->arena.p + c->arena.n, rp, rl);
                c->arena.n += rl;
            } else {
                c->arena.p[c->arena.n++] = ch;
            }
        }
        size_t nl = c->arena.n - no;
        if (p->split)
            return split_by(c, NULL, rp, rl, HF_SPLIT_MERGED_NEXT, 0, no, nl, in->at_start, out);
        if (nl) return pieces_push(out, no, nl, -1, in->at_start);
        return LT_OK;
    }
    }
    return LT_OK;
}

/* ---- encode ------------------------------------------------------------------------------ */
static lt_status encode_text(enc_ctx *c, size_t off, size_t len, int at_start, int32_t **ids,
                             size_t *n, size_t *cap) {
    const hf_tok *h = c->h;
    pieces_t a = {0}, b = {0};
    if (len == 0) return LT_OK; /* tokenizers drops empty splits before pre-tokenizing */
    lt_status st = pieces_push(&a, off, len, -1, at_start);
    for (int i = 0; !st && i < h->n_pre; i++) {
        b.n = 0;
        for (size_t k = 0; !st && k < a.n; k++)
            st = pretok_step(c, &h->pre[i], &a.v[k], &b);
        pieces_t t = a;
        a = b;
        b = t;
    }
    for (size_t k = 0; !st && k < a.n; k++)
        st = hf_bpe_word_cached(h, c->arena.p + a.v[k].off, a.v[k].len, ids, n, cap);
    free(a.v);
    free(b.v);
    return st;
}

static lt_status hf_encode(const lt_tokenizer *t, const char *text, size_t len, int add_special,
                           int parse_special, int32_t **out, size_t *nout) {
    const hf_tok *h = t->impl;
    enc_ctx c = {.h = h, .parse_special = parse_special};
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    pieces_t p1 = {0}, p2 = {0};
    lt_status st = LT_OK;
    *out = NULL;
    *nout = 0;
    c.md = pcre2_match_data_create(1, NULL);
    c.wre = h->word_re;
    if (!c.md) {
        st = lt_error(LT_ERR_NOMEM, "out of memory (regex)");
        goto done;
    }
    if ((st = put_lossy(&c.arena, text, len))) goto done;
    size_t tlen = c.arena.n;
    if (add_special && h->has_post)
        for (int i = 0; !st && i < h->n_post_pre; i++)
            st = hf_ids_push(&ids, &n, &cap, h->post_pre[i]);
    if (!st) st = split_added(&c, 0, tlen, 0, 1, &p1);
    for (size_t i = 0; !st && i < p1.n; i++) {
        piece_t q = p1.v[i];
        if (q.id >= 0) {
            st = hf_ids_push(&ids, &n, &cap, q.id);
            continue;
        }
        size_t noff, nlen;
        if ((st = normalize(&c, q.off, q.len, &noff, &nlen))) break;
        p2.n = 0;
        if ((st = split_added(&c, noff, nlen, 1, q.at_start, &p2))) break;
        for (size_t k = 0; !st && k < p2.n; k++) {
            if (p2.v[k].id >= 0)
                st = hf_ids_push(&ids, &n, &cap, p2.v[k].id);
            else
                st = encode_text(&c, p2.v[k].off, p2.v[k].len, p2.v[k].at_start, &ids, &n, &cap);
        }
    }
    if (add_special && h->has_post)
        for (int i = 0; !st && i < h->n_post_post; i++)
            st = hf_ids_push(&ids, &n, &cap, h->post_post[i]);
    if (!st && !ids) st = hf_ids_push(&ids, &n, &cap, 0), n = 0; /* never return NULL */
done:
    pcre2_match_data_free(c.md);
    free(c.arena.p);
    free(p1.v);
    free(p2.v);
    if (st) {
        free(ids);
        return st;
    }
    *out = ids;
    *nout = n;
    return LT_OK;
}

/* ---- decode ------------------------------------------------------------------------------ */
typedef struct {
    size_t off, len;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spans;

static lt_status spans_push(spans *s, size_t off, size_t len) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        span *q = lt_realloc(s->v, nc * sizeof(span));
        if (!q) return lt_error(LT_ERR_NOMEM, "out of memory (decoder)");
        s->v = q;
        s->cap = nc;
    }
    s->v[s->n++] = (span){off, len};
    return LT_OK;
}

static int byte_token(const char *s, size_t n, uint8_t *b) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char ch = s[k];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *b = (uint8_t)v;
    return 1;
}

static int utf8_all_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t bad, k = utf8_valid((const uint8_t *)s + i, n - i, &bad);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* Appends token string s (arena offset) with every occurrence of a replaced by b. */
static lt_status put_replaced(buf_t *ar, size_t off, size_t len, const char *a, size_t alen,
                              const char *b, size_t blen) {
    lt_status st = buf_reserve(ar, len * (blen > alen ? blen : 1) + 1);
    if (st) return st;
    const char *s = ar->p + off; /* stable: reserved above */
    size_t i = 0;
    while (i < len) {
        if (alen && i + alen <= len && memcmp(s + i, a, alen) == 0) {
            memcpy(ar->p + ar->n, b, blen);
            ar->n += blen;
            i += alen;
        } else {
            ar->p[ar->n++] = s[i++];
        }
    }
    return LT_OK;
}

static lt_status dec_step(const hf_dec *d, buf_t *ar, const spans *in, spans *out) {
    lt_status st = LT_OK;
    switch (d->type) {
    case HF_DEC_BYTELEVEL: {
        buf_t raw = {0};
        for (size_t i = 0; !st && i < in->n; i++) {
            const char *s = ar->p + in->v[i].off;
            size_t n = in->v[i].len, mark = raw.n;
            int ok = 1;
            if ((st = buf_reserve(&raw, n))) break;
            for (size_t k = 0; k < n;) {
                size_t cl;
                int b = bl_byte(get_cp(s + k, n - k, &cl));
                if (b < 0) {
                    ok = 0;
                    break;
                }
                raw.p[raw.n++] = (char)b;
                k += cl;
            }
            if (!ok) {
                raw.n = mark;
                st = buf_put(&raw, s, n);
            }
        }
        size_t no = ar->n;
        if (!st) st = put_lossy(ar, raw.p, raw.n);
        if (!st) st = spans_push(out, no, ar->n - no);
        free(raw.p);
        return st;
    }
    case HF_DEC_BYTEFALLBACK: {
        buf_t pend = {0};
        for (size_t i = 0; !st && i <= in->n; i++) {
            uint8_t b;
            if (i < in->n && byte_token(ar->p + in->v[i].off, in->v[i].len, &b)) {
                st = buf_put(&pend, &b, 1);
                continue;
            }
            if (pend.n) {
                if (utf8_all_valid(pend.p, pend.n)) {
                    size_t no = ar->n;
                    st = buf_put(ar, pend.p, pend.n);
                    if (!st) st = spans_push(out, no, pend.n);
                } else {
                    for (size_t k = 0; !st && k < pend.n; k++) {
                        size_t no = ar->n;
                        st = buf_put(ar, "\xef\xbf\xbd", 3);
                        if (!st) st = spans_push(out, no, 3);
                    }
                }
                pend.n = 0;
            }
            if (!st && i < in->n) st = spans_push(out, in->v[i].off, in->v[i].len);
        }
        free(pend.p);
        return st;
    }
    case HF_DEC_FUSE: {
        size_t no = ar->n;
        for (size_t i = 0; !st && i < in->n; i++) {
            if ((st = buf_reserve(ar, in->v[i].len))) break;
            memcpy(ar->p + ar->n, ar->p + in->v[i].off, in->v[i].len);
            ar->n += in->v[i].len;
        }
        if (!st) st = spans_push(out, no, ar->n - no);
        return st;
    }
    case HF_DEC_REPLACE:
        for (size_t i = 0; !st && i < in->n; i++) {
            size_t no = ar->n;
            st = put_replaced(ar, in->v[i].off, in->v[i].len, d->a, d->alen, d->b, d->blen);
            if (!st) st = spans_push(out, no, ar->n - no);
        }
        return st;
    case HF_DEC_STRIP:
        for (size_t i = 0; !st && i < in->n; i++) {
            if (!d->alen) { /* stripping "" leaves the span as it is (and d->a may be NULL) */
                st = spans_push(out, in->v[i].off, in->v[i].len);
                continue;
            }
            const char *s = ar->p + in->v[i].off;
            size_t n = in->v[i].len, a = 0, e = n;
            for (int k = 0; k < d->start; k++) {
                if (a + d->alen <= e && memcmp(s + a, d->a, d->alen) == 0)
                    a += d->alen;
                else
                    break;
            }
            for (int k = 0; k < d->stop; k++) {
                if (e >= a + d->alen && memcmp(s + e - d->alen, d->a, d->alen) == 0)
                    e -= d->alen;
                else
                    break;
            }
            st = spans_push(out, in->v[i].off + a, e - a);
        }
        return st;
    case HF_DEC_METASPACE:
        for (size_t i = 0; !st && i < in->n; i++) {
            size_t no = ar->n;
            if (i == 0 && d->prepend_scheme != HF_PREPEND_NEVER)
                st = put_replaced(ar, in->v[i].off, in->v[i].len, d->a, d->alen, "", 0);
            else
                st = put_replaced(ar, in->v[i].off, in->v[i].len, d->a, d->alen, " ", 1);
            if (!st) st = spans_push(out, no, ar->n - no);
        }
        return st;
    }
    return st;
}

static lt_status hf_decode(const lt_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *tlen) {
    const hf_tok *h = t->impl;
    buf_t ar = {0};
    spans a = {0}, b = {0};
    lt_status st = LT_OK;
    *text = NULL;
    *tlen = 0;
    /* the arena is never NULL: decoders point into it at offset 0 even when it is empty (a
     * NULL + 0 is undefined behaviour, which clang's UBSan reports) */
    st = buf_reserve(&ar, 1);
    for (size_t i = 0; !st && i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= h->n_ids || !h->pieces[id]) continue;
        if (skip_special && h->special[id]) continue;
        size_t no = ar.n;
        st = buf_put(&ar, h->pieces[id], h->piece_len[id]);
        if (!st) st = spans_push(&a, no, h->piece_len[id]);
    }
    if (!h->has_decoder) {
        buf_t o = {0};
        for (size_t i = 0; !st && i < a.n; i++) {
            if (i) st = buf_put(&o, " ", 1);
            if (!st) st = buf_put(&o, ar.p + a.v[i].off, a.v[i].len);
        }
        free(ar.p);
        ar = o;
    } else {
        for (int k = 0; !st && k < h->n_dec; k++) {
            b.n = 0;
            st = dec_step(&h->dec[k], &ar, &a, &b);
            spans tt = a;
            a = b;
            b = tt;
        }
        buf_t o = {0};
        if (!st) st = buf_reserve(&o, 1);
        for (size_t i = 0; !st && i < a.n; i++)
            st = buf_put(&o, ar.p + a.v[i].off, a.v[i].len);
        free(ar.p);
        ar = o;
    }
    if (!st) st = buf_reserve(&ar, 1);
    free(a.v);
    free(b.v);
    if (st) {
        free(ar.p);
        return st;
    }
    ar.p[ar.n] = 0;
    *text = ar.p;
    *tlen = ar.n;
    return LT_OK;
}

/* ---- ops --------------------------------------------------------------------------------- */
static const char *hf_piece(const lt_tokenizer *t, int32_t id) {
    const hf_tok *h = t->impl;
    return id >= 0 && id < h->n_ids ? h->pieces[id] : NULL;
}

static int32_t hf_find(const lt_tokenizer *t, const char *piece) {
    const hf_tok *h = t->impl;
    return hf_strmap_get(&h->vocab, h->pieces, h->piece_len, piece, strlen(piece));
}

static int hf_is_special(const lt_tokenizer *t, int32_t id) {
    const hf_tok *h = t->impl;
    return id >= 0 && id < h->n_ids && h->special[id];
}

static void hf_free_impl(void *p) {
    hf_tok_free(p);
}

static const lt_tokenizer_ops k_ops_bytelevel = {
    "hf-bpe-bytelevel", hf_encode, hf_decode, hf_piece, hf_find, hf_is_special, hf_free_impl};
static const lt_tokenizer_ops k_ops_plain = {"hf-bpe", hf_encode,     hf_decode,   hf_piece,
                                             hf_find,  hf_is_special, hf_free_impl};

/* Normalized added tokens are matched in normalized text by their normalized content. */
static lt_status added_patterns(hf_tok *h) {
    enc_ctx c = {.h = h};
    lt_status st = LT_OK;
    c.md = pcre2_match_data_create(1, NULL);
    if (!c.md) return lt_error(LT_ERR_NOMEM, "out of memory (regex)");
    for (int i = 0; !st && i < h->n_added; i++) {
        hf_added *a = &h->added[i];
        a->normalized = a->normalized ? 1 : 0;
        a->pat = a->content;
        a->plen = a->len;
        if (!a->normalized || !h->n_norm) continue;
        c.arena.n = 0;
        size_t noff, nlen;
        if ((st = buf_put(&c.arena, a->content, a->len))) break;
        if ((st = normalize(&c, 0, a->len, &noff, &nlen))) break;
        char *p = lt_malloc(nlen + 1);
        if (!p) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(p, c.arena.p + noff, nlen);
        p[nlen] = 0;
        a->pat = p;
        a->plen = nlen;
    }
    pcre2_match_data_free(c.md);
    free(c.arena.p);
    return st;
}

lt_status hf_tok_wrap(hf_tok *h, int32_t bos, int32_t eos, lt_tokenizer **out) {
    *out = NULL;
    lt_tokenizer *t = lt_calloc(1, sizeof *t);
    if (!t) {
        hf_tok_free(h);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    int bytelevel = 0;
    for (int i = 0; i < h->n_pre; i++)
        if (h->pre[i].type == HF_PRE_BYTELEVEL) bytelevel = 1;
    for (int i = 0; i < h->n_dec; i++)
        if (h->dec[i].type == HF_DEC_BYTELEVEL) bytelevel = 1;
    lt_status st = hf_regex_compile(h->src, "^\\w", 3, &h->word_re);
    if (st) {
        free(t);
        hf_tok_free(h);
        return st;
    }
    hf_cache_create(h);
    if ((st = added_patterns(h))) {
        free(t);
        hf_tok_free(h);
        return st;
    }
    memset(h->added_first, 0, sizeof h->added_first);
    for (int i = 0; i < h->n_added; i++)
        if (h->added[i].plen)
            h->added_first[h->added[i].normalized ? 1 : 0][(uint8_t)h->added[i].pat[0]] = 1;
    t->ops = bytelevel ? &k_ops_bytelevel : &k_ops_plain;
    t->impl = h;
    t->vocab_size = h->n_ids;
    t->bos_id = bos;
    t->eos_id = eos;
    *out = t;
    return LT_OK;
}
