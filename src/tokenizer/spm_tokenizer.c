/* spm_tokenizer.c - sentencepiece-style BPE tokenizers: sentencepiece tokenizer.model,
 * llama2.c tokenizer.bin and GGUF vocabularies with tokenizer.ggml.model "llama".
 *
 * Encoding follows sentencepiece's BPE model (bpe_model.cc) and normalizer exactly:
 *   1. normalize: invalid UTF-8 bytes -> U+FFFD (one per byte); with remove_extra_ws drop
 *      leading/trailing spaces and collapse runs; ' ' -> U+2581 "▁" (escape_ws); prepend "▁"
 *      when add_dummy_prefix and the result is non-empty;
 *   2. split into UTF-8 characters (a USER_DEFINED piece matching at a position is taken
 *      whole and never merged);
 *   3. repeatedly merge the adjacent pair whose concatenation is a NORMAL, USER_DEFINED or
 *      UNUSED piece of highest score (ties: leftmost pair first);
 *   4. re-split merged UNUSED pieces into the pair they came from; map each symbol to its
 *      piece id; a symbol that is no piece becomes its bytes' <0xNN> pieces (byte_fallback)
 *      or one unk (runs of unknown symbols share one unk, as sentencepiece does).
 * add_special adds BOS (and EOS where the vocabulary asks: GGUF add_eos_token), as Llama 2.
 * parse_special: CONTROL and UNKNOWN pieces ("<s>", "</s>", "<unk>") written in the text
 * are emitted as their ids (longest match first); the text between them is encoded as
 * separate fragments, each normalized on its own, so text after such a token gets the
 * dummy prefix again - llama.cpp's rule, which also equals Hugging Face's legacy Llama.
 * Decoding follows sentencepiece's DecodeIds: pieces joined, "▁" -> " ", runs of byte
 * pieces turned back into bytes (an invalid UTF-8 byte -> U+FFFD), the "▁" of the first
 * visible piece dropped when add_dummy_prefix (or remove_extra_ws). skip_special=1 is
 * exactly sentencepiece (CONTROL invisible, UNKNOWN -> unk_surface " ⁇ "); skip_special=0
 * writes CONTROL and UNKNOWN pieces as their text ("<s>"), as Hugging Face does.
 *
 * Invariants: see spm_internal.h. Encode allocates O(text length); nothing is sized from
 * a count read from a file without checking it against the file size first. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/gguf.h"
#include "spm_internal.h"

/* Implemented in hf_gguf_bpe.c (declared in hf_tokenizer.h, which needs PCRE2 set up;
 * repeated here so this file does not depend on it). */
lt_status lt_tokenizer_load_gguf_bpe(const struct lt_gguf *g, lt_tokenizer **out);

static const char SPM_SPACE[] = "\xE2\x96\x81";         /* U+2581 */
static const char SPM_REPLACEMENT[] = "\xEF\xBF\xBD";   /* U+FFFD */
static const char SPM_UNK_SURFACE[] = " \xE2\x81\x87 "; /* " ⁇ " */

/* ---- vocabulary ------------------------------------------------------------------------ */

static uint64_t spm_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

void spm_model_init(spm_model *m, const char *src, const char *kind) {
    memset(m, 0, sizeof *m);
    m->unk_id = m->bos_id = m->eos_id = m->pad_id = -1;
    for (int i = 0; i < 256; i++)
        m->byte_ids[i] = -1;
    m->add_dummy_prefix = 1;
    m->escape_ws = 1;
    m->add_bos = 1;
    m->kind = kind;
    if (src) {
        size_t n = strlen(src);
        m->src = lt_malloc(n + 1);
        if (m->src) memcpy(m->src, src, n + 1);
    }
}

void spm_model_clear(spm_model *m) {
    if (!m) return;
    for (int32_t i = 0; i < m->n; i++)
        free(m->pieces[i].text);
    free(m->pieces);
    free(m->slots);
    free(m->unk_surface);
    free(m->user_defined);
    free(m->specials);
    free(m->src);
    memset(m, 0, sizeof *m);
}

static const char *spm_src(const spm_model *m) {
    return m->src ? m->src : "(tokenizer)";
}

lt_status spm_model_add(spm_model *m, const char *text, size_t len, float score, int type) {
    if (m->n == INT32_MAX) return lt_error(LT_ERR_FORMAT, "%s: too many pieces", spm_src(m));
    if (len == 0 && !m->lenient)
        return lt_error(LT_ERR_FORMAT, "%s: piece %d: empty piece text", spm_src(m), m->n);
    if (len > UINT32_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: piece %d: piece text too long", spm_src(m), m->n);
    if (!m->lenient && memchr(text, 0, len))
        return lt_error(LT_ERR_FORMAT, "%s: piece %d: piece text contains a NUL byte", spm_src(m),
                        m->n);
    if (type < SPM_NORMAL || type > SPM_BYTE)
        return lt_error(LT_ERR_FORMAT, "%s: piece %d: type %d (expected 1..6)", spm_src(m), m->n,
                        type);
    if (m->n == m->cap) {
        int32_t nc = m->cap ? (m->cap > INT32_MAX / 2 ? INT32_MAX : m->cap * 2) : 256;
        spm_piece *np = lt_realloc(m->pieces, (size_t)nc * sizeof *np);
        if (!np) return lt_error(LT_ERR_NOMEM, "%s: out of memory", spm_src(m));
        m->pieces = np;
        m->cap = nc;
    }
    char *t = lt_malloc(len + 1);
    if (!t) return lt_error(LT_ERR_NOMEM, "%s: out of memory", spm_src(m));
    if (len) memcpy(t, text, len);
    t[len] = 0;
    spm_piece *p = &m->pieces[m->n++];
    p->text = t;
    p->len = (uint32_t)len;
    p->score = score;
    p->type = (uint8_t)type;
    return LT_OK;
}

int32_t spm_model_lookup(const spm_model *m, const char *s, size_t len) {
    if (!m->slots) return -1;
    uint32_t h = (uint32_t)spm_hash(s, len);
    uint32_t i = h & m->mask;
    for (;;) {
        int32_t id = m->slots[i].id;
        if (id < 0) return -1;
        const spm_piece *p = &m->pieces[id];
        if (m->slots[i].hash == h && p->len == len && memcmp(p->text, s, len) == 0) return id;
        i = (i + 1) & m->mask;
    }
}

/* "<0xHH>" with upper-case hex -> byte value, else -1 */
static int spm_byte_piece(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ids of non-empty pieces of the given types, longest text first (ties: lower id first) */
static _Thread_local const spm_model *spm_sort_model;
static int spm_cmp_len_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = spm_sort_model->pieces[x].len, ly = spm_sort_model->pieces[y].len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}
static lt_status spm_collect(spm_model *m, int t1, int t2, int32_t **out, int32_t *nout) {
#define SPM_PICK(i) (m->pieces[i].len > 0 && (m->pieces[i].type == t1 || m->pieces[i].type == t2))
    int32_t k = 0;
    for (int32_t i = 0; i < m->n; i++)
        if (SPM_PICK(i)) k++;
    *out = NULL;
    *nout = 0;
    if (!k) return LT_OK;
    int32_t *ids = lt_malloc((size_t)k * sizeof *ids);
    if (!ids) return lt_error(LT_ERR_NOMEM, "%s: out of memory", spm_src(m));
    k = 0;
    for (int32_t i = 0; i < m->n; i++)
        if (SPM_PICK(i)) ids[k++] = i;
#undef SPM_PICK
    spm_sort_model = m; /* qsort has no context argument in C11 */
    qsort(ids, (size_t)k, sizeof *ids, spm_cmp_len_desc);
    *out = ids;
    *nout = k;
    return LT_OK;
}

lt_status spm_model_finish(spm_model *m, int strict_dupes) {
    if (m->n <= 0) return lt_error(LT_ERR_FORMAT, "%s: vocabulary has no pieces", spm_src(m));
    if (m->n > (1 << 28))
        return lt_error(LT_ERR_FORMAT, "%s: %d pieces (at most %d supported)", spm_src(m), m->n,
                        1 << 28);
    uint32_t cap = 16;
    while (cap < (uint32_t)m->n * 2u)
        cap *= 2; /* load factor <= 1/2 */
    m->slots = lt_malloc((size_t)cap * sizeof *m->slots);
    if (!m->slots) return lt_error(LT_ERR_NOMEM, "%s: out of memory", spm_src(m));
    for (uint32_t i = 0; i < cap; i++)
        m->slots[i].id = -1;
    m->mask = cap - 1;
    int32_t unk = -1;
    for (int32_t id = 0; id < m->n; id++) {
        spm_piece *p = &m->pieces[id];
        uint32_t h = (uint32_t)spm_hash(p->text, p->len);
        uint32_t i = h & m->mask;
        for (;;) {
            int32_t o = m->slots[i].id;
            if (o < 0) {
                m->slots[i].id = id;
                m->slots[i].hash = h;
                break;
            }
            if (m->pieces[o].len == p->len && memcmp(m->pieces[o].text, p->text, p->len) == 0) {
                if (strict_dupes)
                    return lt_error(LT_ERR_FORMAT,
                                    "%s: piece %d '%s' repeats piece %d (pieces must be unique)",
                                    spm_src(m), id, p->text, o);
                m->slots[i].id = id; /* later id wins, as llama.cpp's token_to_id */
                break;
            }
            i = (i + 1) & m->mask;
        }
        if (p->type == SPM_UNKNOWN) {
            if (unk >= 0 && strict_dupes)
                return lt_error(LT_ERR_FORMAT,
                                "%s: pieces %d and %d are both of type UNKNOWN (expected one)",
                                spm_src(m), unk, id);
            if (unk < 0) unk = id;
        }
        if (p->type == SPM_UNUSED) m->has_unused = 1;
        if (p->type == SPM_BYTE) {
            int b = spm_byte_piece(p->text, p->len);
            if (b < 0)
                return lt_error(LT_ERR_FORMAT,
                                "%s: piece %d '%s' has type BYTE but is not of the form <0xHH>",
                                spm_src(m), id, p->text);
            m->byte_ids[b] = id;
        }
    }
    if (m->unk_id < 0) m->unk_id = unk;
    const int32_t *ids[] = {&m->unk_id, &m->bos_id, &m->eos_id, &m->pad_id};
    for (int i = 0; i < 4; i++)
        if (*ids[i] >= m->n)
            return lt_error(LT_ERR_FORMAT, "%s: special token id %d is outside the %d pieces",
                            spm_src(m), *ids[i], m->n);
    if (!m->unk_surface) {
        m->unk_surface = lt_malloc(sizeof SPM_UNK_SURFACE);
        if (!m->unk_surface) return lt_error(LT_ERR_NOMEM, "%s: out of memory", spm_src(m));
        memcpy(m->unk_surface, SPM_UNK_SURFACE, sizeof SPM_UNK_SURFACE);
        m->unk_surface_len = sizeof SPM_UNK_SURFACE - 1;
    }
    lt_status st = spm_collect(m, SPM_USER_DEFINED, SPM_USER_DEFINED, &m->user_defined, &m->n_user);
    if (st == LT_OK) st = spm_collect(m, SPM_CONTROL, SPM_UNKNOWN, &m->specials, &m->n_specials);
    if (st != LT_OK) return st;
    for (int32_t k = 0; k < m->n_user; k++)
        m->user_first[(uint8_t)m->pieces[m->user_defined[k]].text[0]] = 1;
    for (int32_t k = 0; k < m->n_specials; k++)
        m->special_first[(uint8_t)m->pieces[m->specials[k]].text[0]] = 1;
    return LT_OK;
}

/* ---- growable id list ------------------------------------------------------------------- */

typedef struct {
    int32_t *a;
    size_t n, cap;
} spm_ids;

static lt_status spm_ids_push(spm_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        if (nc > SIZE_MAX / sizeof(int32_t)) return lt_error(LT_ERR_NOMEM, "out of memory");
        int32_t *na = lt_realloc(v->a, nc * sizeof *na);
        if (!na) return lt_error(LT_ERR_NOMEM, "out of memory");
        v->a = na;
        v->cap = nc;
    }
    v->a[v->n++] = id;
    return LT_OK;
}

/* ---- normalization ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 character at s (n bytes available), 0 if invalid: overlong
 * forms, surrogates and code points above U+10FFFF are invalid, as in sentencepiece. */
static size_t spm_utf8_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return (cp >= 0x10000 && cp <= 0x10FFFF) ? 4 : 0;
    }
    return 0;
}

/* Normalizes text into a malloc'd buffer (*out may be NULL when *outlen is 0). */
static lt_status spm_normalize(const spm_model *m, const char *text, size_t len, char **out,
                               size_t *outlen) {
    const uint8_t *s = (const uint8_t *)text;
    const char *sp = m->escape_ws ? SPM_SPACE : " ";
    size_t spl = m->escape_ws ? 3 : 1;
    size_t i = 0, o = 0;
    *out = NULL;
    *outlen = 0;
    if (m->remove_extra_ws)
        while (i < len && s[i] == ' ')
            i++;
    if (i == len) return LT_OK;
    if (len > (SIZE_MAX - 8) / 3) return lt_error(LT_ERR_NOMEM, "text too long");
    char *buf = lt_malloc(3 * len + 8); /* each byte grows to at most 3; plus the prefix */
    if (!buf) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (m->add_dummy_prefix) {
        memcpy(buf, sp, spl);
        o = spl;
    }
    int prev_space = m->remove_extra_ws;
    while (i < len) {
        size_t cl = spm_utf8_len(s + i, len - i);
        const char *c = cl ? (const char *)s + i : SPM_REPLACEMENT;
        size_t clen = cl ? cl : 3;
        i += cl ? cl : 1;
        if (prev_space)
            while (clen && *c == ' ')
                c++, clen--;
        if (clen) {
            for (size_t k = 0; k < clen; k++) {
                if (c[k] == ' ' && m->escape_ws) {
                    memcpy(buf + o, SPM_SPACE, 3);
                    o += 3;
                } else {
                    buf[o++] = c[k];
                }
            }
            prev_space = c[clen - 1] == ' ';
        }
        if (!m->remove_extra_ws) prev_space = 0;
    }
    if (m->remove_extra_ws)
        while (o >= spl && memcmp(buf + o - spl, sp, spl) == 0)
            o -= spl;
    *out = buf;
    *outlen = o;
    return LT_OK;
}

/* ---- BPE -------------------------------------------------------------------------------- */

typedef struct {
    int32_t prev, next; /* -1 at the ends */
    uint32_t off, len;  /* bytes in the normalized text; len 0 = merged away */
    uint8_t freeze;     /* USER_DEFINED piece: never merged */
} spm_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the concatenation when queued (stale check) */
} spm_pair;

typedef struct {
    const spm_model *m;
    const char *s; /* normalized text */
    spm_sym *sym;
    spm_pair *heap;
    size_t nheap, capheap;
    int32_t *rev_left; /* [m->n] left length of the pair an UNUSED piece came from, or -1 */
} spm_bpe;

/* a comes out of the queue before b: higher score, then leftmost */
static int spm_pair_before(const spm_pair *a, const spm_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static lt_status spm_heap_push(spm_bpe *b, spm_pair p) {
    if (b->nheap == b->capheap) {
        size_t nc = b->capheap ? b->capheap * 2 : 64;
        if (nc > SIZE_MAX / sizeof(spm_pair)) return lt_error(LT_ERR_NOMEM, "out of memory");
        spm_pair *nh = lt_realloc(b->heap, nc * sizeof *nh);
        if (!nh) return lt_error(LT_ERR_NOMEM, "out of memory");
        b->heap = nh;
        b->capheap = nc;
    }
    size_t i = b->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!spm_pair_before(&p, &b->heap[parent])) break;
        b->heap[i] = b->heap[parent];
        i = parent;
    }
    b->heap[i] = p;
    return LT_OK;
}

static spm_pair spm_heap_pop(spm_bpe *b) {
    spm_pair top = b->heap[0];
    spm_pair last = b->heap[--b->nheap];
    size_t i = 0, n = b->nheap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const spm_pair *bp = &last;
        if (l < n && spm_pair_before(&b->heap[l], bp)) best = l, bp = &b->heap[l];
        if (r < n && spm_pair_before(&b->heap[r], bp)) best = r;
        if (best == i) break;
        b->heap[i] = b->heap[best];
        i = best;
    }
    if (n) b->heap[i] = last;
    return top;
}

static int spm_mergeable(int type) {
    return type == SPM_NORMAL || type == SPM_USER_DEFINED || type == SPM_UNUSED;
}

static lt_status spm_maybe_add(spm_bpe *b, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return LT_OK;
    const spm_sym *l = &b->sym[left], *r = &b->sym[right];
    if (l->freeze || r->freeze) return LT_OK;
    uint32_t size = l->len + r->len;
    int32_t id = spm_model_lookup(b->m, b->s + l->off, size);
    if (id < 0 || !spm_mergeable(b->m->pieces[id].type)) return LT_OK;
    spm_pair p = {b->m->pieces[id].score, left, right, size};
    if (b->rev_left && b->m->pieces[id].type == SPM_UNUSED) b->rev_left[id] = (int32_t)l->len;
    return spm_heap_push(b, p);
}

typedef struct {
    int prev_unk;
} spm_emit_state;

static lt_status spm_emit(const spm_model *m, const char *s, size_t len, int32_t id,
                          spm_emit_state *es, spm_ids *out) {
    lt_status st = LT_OK;
    int is_unk = id < 0 || m->pieces[id].type == SPM_UNKNOWN;
    if (is_unk && m->byte_fallback) {
        for (size_t k = 0; k < len && st == LT_OK; k++) {
            int32_t bid = m->byte_ids[(uint8_t)s[k]];
            if (bid < 0) bid = m->unk_id;
            if (bid < 0)
                return lt_error(LT_ERR_FORMAT,
                                "%s: byte <0x%02X> has no byte piece and there is no unknown "
                                "piece to map it to",
                                spm_src(m), (uint8_t)s[k]);
            st = spm_ids_push(out, bid);
        }
    } else if (is_unk) {
        if (m->unk_id < 0)
            return lt_error(LT_ERR_FORMAT,
                            "%s: text has a symbol that is no piece and the vocabulary has no "
                            "unknown piece",
                            spm_src(m));
        if (!es->prev_unk) st = spm_ids_push(out, m->unk_id);
    } else {
        st = spm_ids_push(out, id);
    }
    es->prev_unk = is_unk;
    return st;
}

/* one symbol -> ids, re-splitting UNUSED pieces into the pair they were merged from */
static lt_status spm_resegment(spm_bpe *b, uint32_t off, uint32_t len, spm_emit_state *es,
                               spm_ids *out) {
    /* explicit stack of (off, len), right part pushed first so the left comes out first */
    uint32_t local[64];
    uint32_t *stack = local;
    size_t n = 0, cap = 32; /* pairs */
    lt_status st = LT_OK;
    stack[n * 2] = off, stack[n * 2 + 1] = len, n++;
    while (n > 0 && st == LT_OK) {
        n--;
        uint32_t o = stack[n * 2], l = stack[n * 2 + 1];
        int32_t id = spm_model_lookup(b->m, b->s + o, l);
        if (id >= 0 && b->rev_left && b->m->pieces[id].type == SPM_UNUSED && b->rev_left[id] > 0 &&
            (uint32_t)b->rev_left[id] < l) {
            uint32_t ll = (uint32_t)b->rev_left[id];
            if (n + 2 > cap) {
                uint32_t *ns = lt_malloc(cap * 4 * sizeof *ns);
                if (!ns) {
                    st = lt_error(LT_ERR_NOMEM, "out of memory");
                    break;
                }
                memcpy(ns, stack, n * 2 * sizeof *ns);
                if (stack != local) free(stack);
                stack = ns;
                cap *= 2;
            }
            stack[n * 2] = o + ll, stack[n * 2 + 1] = l - ll, n++;
            stack[n * 2] = o, stack[n * 2 + 1] = ll, n++;
            continue;
        }
        st = spm_emit(b->m, b->s + o, l, id, es, out);
    }
    if (stack != local) free(stack);
    return st;
}

/* BPE over one normalized fragment s[0..len), appending ids to out */
static lt_status spm_bpe_encode(const spm_model *m, const char *s, size_t len, spm_ids *out) {
    if (len == 0) return LT_OK;
    if (len > UINT32_MAX / 2 || len > INT32_MAX)
        return lt_error(LT_ERR_ARG, "text fragment of %zu bytes is too long", len);
    spm_bpe b = {m, s, NULL, NULL, 0, 0, NULL};
    lt_status st = LT_OK;
    b.sym = lt_malloc(len * sizeof *b.sym);
    if (!b.sym) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (m->has_unused) {
        b.rev_left = lt_malloc((size_t)m->n * sizeof *b.rev_left);
        if (!b.rev_left) {
            free(b.sym);
            return lt_error(LT_ERR_NOMEM, "out of memory");
        }
        for (int32_t i = 0; i < m->n; i++)
            b.rev_left[i] = -1;
    }
    /* split into characters / whole user-defined pieces */
    int32_t nsym = 0;
    size_t pos = 0;
    while (pos < len) {
        uint32_t clen = 0;
        uint8_t freeze = 0;
        for (int32_t k = 0; m->user_first[(uint8_t)s[pos]] && k < m->n_user; k++) {
            const spm_piece *p = &m->pieces[m->user_defined[k]];
            if (p->len <= len - pos && memcmp(s + pos, p->text, p->len) == 0) {
                clen = p->len;
                freeze = 1;
                break; /* longest first */
            }
        }
        if (!clen) {
            static const uint8_t tab[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
            clen = tab[(uint8_t)s[pos] >> 4];
            if (clen > len - pos) clen = (uint32_t)(len - pos);
        }
        spm_sym *y = &b.sym[nsym];
        y->prev = nsym - 1;
        y->next = pos + clen < len ? nsym + 1 : -1;
        y->off = (uint32_t)pos;
        y->len = clen;
        y->freeze = freeze;
        nsym++;
        pos += clen;
    }
    for (int32_t i = 1; i < nsym && st == LT_OK; i++)
        st = spm_maybe_add(&b, i - 1, i);
    while (b.nheap > 0 && st == LT_OK) {
        spm_pair p = spm_heap_pop(&b);
        spm_sym *l = &b.sym[p.left], *r = &b.sym[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.size || l->next != p.right)
            continue; /* stale: one side was merged since */
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) b.sym[r->next].prev = p.left;
        r->len = 0;
        st = spm_maybe_add(&b, l->prev, p.left);
        if (st == LT_OK) st = spm_maybe_add(&b, p.left, l->next);
    }
    spm_emit_state es = {0};
    for (int32_t i = 0; i >= 0 && st == LT_OK; i = b.sym[i].next)
        st = spm_resegment(&b, b.sym[i].off, b.sym[i].len, &es, out);
    free(b.sym);
    free(b.heap);
    free(b.rev_left);
    return st;
}

static lt_status spm_encode_fragment(const spm_model *m, const char *text, size_t len,
                                     spm_ids *out) {
    char *norm;
    size_t nlen;
    lt_status st = spm_normalize(m, text, len, &norm, &nlen);
    if (st != LT_OK) return st;
    st = spm_bpe_encode(m, norm, nlen, out);
    free(norm);
    return st;
}

/* the special piece (CONTROL/UNKNOWN) starting at text[0..len), or -1 */
static int32_t spm_match_special(const spm_model *m, const char *text, size_t len) {
    if (!m->special_first[(uint8_t)text[0]]) return -1;
    for (int32_t k = 0; k < m->n_specials; k++) {
        const spm_piece *p = &m->pieces[m->specials[k]];
        if (p->len <= len && memcmp(text, p->text, p->len) == 0) return m->specials[k];
    }
    return -1;
}

static lt_status spm_encode(const lt_tokenizer *t, const char *text, size_t len, int add_special,
                            int parse_special, int32_t **ids, size_t *n) {
    const spm_model *m = t->impl;
    spm_ids out = {0};
    lt_status st = LT_OK;
    *ids = NULL;
    *n = 0;
    if (!text && len) return lt_error(LT_ERR_ARG, "encode: text is NULL");
    if (add_special && m->add_bos && m->bos_id >= 0) st = spm_ids_push(&out, m->bos_id);
    size_t start = 0;
    if (parse_special && m->n_specials > 0) {
        for (size_t i = 0; i < len && st == LT_OK;) {
            int32_t id = spm_match_special(m, text + i, len - i);
            if (id < 0) {
                i++;
                continue;
            }
            st = spm_encode_fragment(m, text + start, i - start, &out);
            if (st == LT_OK) st = spm_ids_push(&out, id);
            i += m->pieces[id].len;
            start = i;
        }
    }
    if (st == LT_OK) st = spm_encode_fragment(m, text + start, len - start, &out);
    if (st == LT_OK && add_special && m->add_eos && m->eos_id >= 0)
        st = spm_ids_push(&out, m->eos_id);
    if (st != LT_OK) {
        free(out.a);
        return st;
    }
    if (!out.a) { /* empty result: still hand back a freeable pointer */
        out.a = lt_malloc(sizeof(int32_t));
        if (!out.a) return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    *ids = out.a;
    *n = out.n;
    return LT_OK;
}

/* ---- decoding --------------------------------------------------------------------------- */

typedef struct {
    char *a;
    size_t n, cap;
} spm_buf;

static lt_status spm_buf_put(spm_buf *b, const char *s, size_t len) {
    if (len > SIZE_MAX - b->n - 1) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (b->n + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + len + 1)
            nc = nc > SIZE_MAX / 2 ? b->n + len + 1 : nc * 2;
        char *na = lt_realloc(b->a, nc);
        if (!na) return lt_error(LT_ERR_NOMEM, "out of memory");
        b->a = na;
        b->cap = nc;
    }
    memcpy(b->a + b->n, s, len);
    b->n += len;
    b->a[b->n] = 0;
    return LT_OK;
}

/* bytes of a run of byte pieces -> text; each byte not part of a valid character -> U+FFFD */
static lt_status spm_put_bytes(spm_buf *b, const uint8_t *bytes, size_t n) {
    lt_status st = LT_OK;
    for (size_t i = 0; i < n && st == LT_OK;) {
        size_t cl = spm_utf8_len(bytes + i, n - i);
        if (cl) {
            st = spm_buf_put(b, (const char *)bytes + i, cl);
            i += cl;
        } else {
            st = spm_buf_put(b, SPM_REPLACEMENT, 3);
            i++;
        }
    }
    return st;
}

/* appends piece with U+2581 -> ' ' */
static lt_status spm_put_unescaped(spm_buf *b, const char *s, size_t len) {
    lt_status st = LT_OK;
    size_t run = 0;
    for (size_t i = 0; i < len && st == LT_OK;) {
        if (len - i >= 3 && memcmp(s + i, SPM_SPACE, 3) == 0) {
            st = spm_buf_put(b, s + run, i - run);
            if (st == LT_OK) st = spm_buf_put(b, " ", 1);
            i += 3;
            run = i;
        } else {
            i++;
        }
    }
    if (st == LT_OK) st = spm_buf_put(b, s + run, len - run);
    return st;
}

static lt_status spm_decode(const lt_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                            char **text, size_t *len) {
    const spm_model *m = t->impl;
    spm_buf b = {0};
    lt_status st = spm_buf_put(&b, "", 0);
    uint8_t *bytes = NULL;
    size_t nbytes = 0;
    int bos_ws = 1; /* no visible text yet: the first piece's "▁" is the dummy prefix */
    *text = NULL;
    *len = 0;
    if (st == LT_OK && n) {
        bytes = lt_malloc(n);
        if (!bytes) st = lt_error(LT_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i <= n && st == LT_OK; i++) {
        int32_t id = i < n ? ids[i] : -1;
        if (i < n && (id < 0 || id >= m->n)) {
            st = lt_error(LT_ERR_ARG, "decode: token id %d at position %zu is outside [0, %d)", id,
                          i, m->n);
            break;
        }
        const spm_piece *p = i < n ? &m->pieces[id] : NULL;
        if (p && p->type == SPM_BYTE) {
            bytes[nbytes++] = (uint8_t)spm_byte_piece(p->text, p->len);
            continue;
        }
        if (nbytes) {
            st = spm_put_bytes(&b, bytes, nbytes);
            nbytes = 0;
            bos_ws = 0;
            if (st != LT_OK) break;
        }
        if (!p) break;
        if (p->type == SPM_CONTROL || p->type == SPM_UNKNOWN) {
            if (!skip_special) {
                st = spm_buf_put(&b, p->text, p->len);
                bos_ws = 0;
            } else if (p->type == SPM_UNKNOWN) {
                st = spm_buf_put(&b, m->unk_surface, m->unk_surface_len);
                bos_ws = 0;
            }
            continue;
        }
        const char *s = p->text;
        size_t l = p->len;
        int consumed = 0;
        if (bos_ws && (m->add_dummy_prefix || m->remove_extra_ws) && l >= 3 &&
            memcmp(s, SPM_SPACE, 3) == 0) {
            s += 3, l -= 3;
            consumed = !m->remove_extra_ws;
        }
        st = spm_put_unescaped(&b, s, l);
        if (l || consumed) bos_ws = 0;
    }
    free(bytes);
    if (st != LT_OK) {
        free(b.a);
        return st;
    }
    *text = b.a;
    *len = b.n;
    return LT_OK;
}

/* ---- ops -------------------------------------------------------------------------------- */

static const char *spm_op_piece(const lt_tokenizer *t, int32_t id) {
    const spm_model *m = t->impl;
    return id >= 0 && id < m->n ? m->pieces[id].text : NULL;
}
static int32_t spm_op_find(const lt_tokenizer *t, const char *piece) {
    return piece ? spm_model_lookup(t->impl, piece, strlen(piece)) : -1;
}
static int spm_op_is_special(const lt_tokenizer *t, int32_t id) {
    const spm_model *m = t->impl;
    if (id < 0 || id >= m->n) return 0;
    return m->pieces[id].type == SPM_CONTROL || m->pieces[id].type == SPM_UNKNOWN;
}
static void spm_op_free(void *impl) {
    spm_model_clear(impl);
    free(impl);
}

static const lt_tokenizer_ops spm_ops_spm = {
    "spm", spm_encode, spm_decode, spm_op_piece, spm_op_find, spm_op_is_special, spm_op_free};
static const lt_tokenizer_ops spm_ops_llama2c = {
    "llama2c", spm_encode, spm_decode, spm_op_piece, spm_op_find, spm_op_is_special, spm_op_free};
static const lt_tokenizer_ops spm_ops_gguf = {
    "gguf-spm", spm_encode, spm_decode, spm_op_piece, spm_op_find, spm_op_is_special, spm_op_free};

lt_status spm_model_wrap(spm_model *m, lt_tokenizer **out) {
    *out = NULL;
    lt_tokenizer *t = lt_calloc(1, sizeof *t);
    spm_model *heap = lt_malloc(sizeof *heap);
    if (!t || !heap) {
        free(t);
        free(heap);
        spm_model_clear(m);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    *heap = *m;
    memset(m, 0, sizeof *m);
    const char *k = heap->kind ? heap->kind : "spm";
    t->ops = strcmp(k, "llama2c") == 0    ? &spm_ops_llama2c
             : strcmp(k, "gguf-spm") == 0 ? &spm_ops_gguf
                                          : &spm_ops_spm;
    t->impl = heap;
    t->vocab_size = heap->n;
    t->bos_id = heap->bos_id;
    t->eos_id = heap->eos_id;
    *out = t;
    return LT_OK;
}

/* ---- loaders ---------------------------------------------------------------------------- */

/* A sentencepiece .model file parsed and finished into *m (cleared on failure). */
static lt_status spm_model_load(const char *model_path, spm_model *m) {
    lt_mapped_file f = {0};
    lt_status st = lt_file_map(model_path, &f);
    if (st != LT_OK) return st;
    spm_model_init(m, model_path, "spm");
    if (!m->src) st = lt_error(LT_ERR_NOMEM, "out of memory");
    if (st == LT_OK) st = spm_proto_parse(m, f.data, f.size);
    lt_file_unmap(&f);
    if (st == LT_OK) st = spm_model_finish(m, 1); /* fills unk_id from the UNKNOWN piece */
    if (st != LT_OK) spm_model_clear(m);
    return st;
}

lt_status lt_tokenizer_load_spm(const char *model_path, lt_tokenizer **out) {
    *out = NULL;
    spm_model m;
    lt_status st = spm_model_load(model_path, &m);
    return st != LT_OK ? st : spm_model_wrap(&m, out);
}

lt_status lt_spm_vocab_load(const char *model_path, lt_spm_vocab *out) {
    memset(out, 0, sizeof *out);
    spm_model m;
    lt_status st = spm_model_load(model_path, &m);
    if (st != LT_OK) return st;
    out->pieces = lt_calloc((size_t)m.n + 1, sizeof *out->pieces);
    out->scores = lt_calloc((size_t)m.n + 1, sizeof *out->scores);
    out->types = lt_calloc((size_t)m.n + 1, sizeof *out->types);
    if (!out->pieces || !out->scores || !out->types) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        spm_model_clear(&m);
        lt_spm_vocab_free(out);
        return st;
    }
    for (int32_t i = 0; i < m.n; i++) { /* the texts move to out */
        out->pieces[i] = m.pieces[i].text;
        m.pieces[i].text = NULL;
        out->scores[i] = m.pieces[i].score;
        out->types[i] = m.pieces[i].type;
    }
    out->n = m.n;
    out->unk_id = m.unk_id;
    out->bos_id = m.bos_id;
    out->eos_id = m.eos_id;
    out->pad_id = m.pad_id;
    spm_model_clear(&m);
    return LT_OK;
}

void lt_spm_vocab_free(lt_spm_vocab *v) {
    if (!v) return;
    for (int32_t i = 0; v->pieces && i < v->n; i++)
        free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

static int32_t spm_rd_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return (int32_t)v;
}

/* llama2.c tokenizer.bin: int32 max_token_length, then until the end of the file
 * {float32 score, int32 len, len bytes}. The number of tokens is not stored (llama2.c
 * takes it from the model header), so it is the number of records read to the end. */
lt_status lt_tokenizer_load_llama2c(const char *bin_path, lt_tokenizer **out) {
    *out = NULL;
    lt_mapped_file f = {0};
    lt_status st = lt_file_map(bin_path, &f);
    if (st != LT_OK) return st;
    spm_model m;
    spm_model_init(&m, bin_path, "llama2c");
    if (!m.src) st = lt_error(LT_ERR_NOMEM, "out of memory");
    const uint8_t *d = f.data;
    size_t size = f.size, pos = 4;
    int32_t maxlen = 0;
    char *tmp = NULL;
    if (st == LT_OK && size < 4)
        st = lt_error(LT_ERR_FORMAT,
                      "%s: %zu bytes: too short for the int32 max_token_length header", bin_path,
                      size);
    if (st == LT_OK) {
        maxlen = spm_rd_i32(d);
        if (maxlen <= 0 || (size_t)maxlen > size)
            st = lt_error(LT_ERR_FORMAT,
                          "%s: header max_token_length %d (expected 1..%zu, the file size)",
                          bin_path, maxlen, size);
        else if (size == 4)
            st = lt_error(LT_ERR_FORMAT, "%s: no tokens after the header", bin_path);
    }
    if (st == LT_OK) {
        tmp = lt_malloc((size_t)maxlen * 3 + 1); /* ' ' -> U+2581 grows 3x */
        if (!tmp) st = lt_error(LT_ERR_NOMEM, "out of memory");
    }
    while (st == LT_OK && pos < size) {
        int32_t id = m.n;
        if (size - pos < 8) {
            st = lt_error(LT_ERR_FORMAT,
                          "%s: token %d at offset %zu: %zu bytes left, need 8 for score and "
                          "length",
                          bin_path, id, pos, size - pos);
            break;
        }
        float score;
        uint32_t bits = (uint32_t)spm_rd_i32(d + pos);
        memcpy(&score, &bits, 4);
        int32_t len = spm_rd_i32(d + pos + 4);
        pos += 8;
        if (len <= 0 || len > maxlen || (size_t)len > size - pos) {
            st = lt_error(LT_ERR_FORMAT,
                          "%s: token %d at offset %zu: length %d (expected 1..%d, the header's "
                          "max_token_length, with %zu bytes left in the file)",
                          bin_path, id, pos - 8, len, maxlen, size - pos);
            break;
        }
        const char *s = (const char *)d + pos;
        pos += (size_t)len;
        /* llama2.c's export writes BOS/EOS as "\n<s>\n" / "\n</s>\n" and U+2581 as ' ' */
        int type = SPM_NORMAL;
        size_t tl = 0;
        if (len == 5 && memcmp(s, "\n<s>\n", 5) == 0) {
            type = SPM_CONTROL;
            memcpy(tmp, "<s>", 3), tl = 3;
            if (m.bos_id < 0) m.bos_id = id;
        } else if (len == 6 && memcmp(s, "\n</s>\n", 6) == 0) {
            type = SPM_CONTROL;
            memcpy(tmp, "</s>", 4), tl = 4;
            if (m.eos_id < 0) m.eos_id = id;
        } else if (len == 5 && memcmp(s, "<unk>", 5) == 0) {
            type = SPM_UNKNOWN;
            memcpy(tmp, "<unk>", 5), tl = 5;
        } else if (spm_byte_piece(s, (size_t)len) >= 0) {
            type = SPM_BYTE;
            memcpy(tmp, s, (size_t)len), tl = (size_t)len;
        } else {
            for (int32_t k = 0; k < len; k++) {
                if (s[k] == ' ')
                    memcpy(tmp + tl, SPM_SPACE, 3), tl += 3;
                else
                    tmp[tl++] = s[k];
            }
        }
        st = spm_model_add(&m, tmp, tl, score, type);
        if (st == LT_OK && type == SPM_BYTE) m.byte_fallback = 1;
    }
    free(tmp);
    lt_file_unmap(&f);
    /* as llama2.c's encode: dummy prefix, no whitespace removal */
    m.add_dummy_prefix = 1;
    m.remove_extra_ws = 0;
    m.escape_ws = 1;
    if (st == LT_OK) st = spm_model_finish(&m, 0);
    if (st != LT_OK) {
        spm_model_clear(&m);
        return st;
    }
    return spm_model_wrap(&m, out);
}

/* GGUF integer key into *dst if present and in [0, n); absent keeps *dst. */
static lt_status spm_gguf_id(const lt_gguf *g, const char *key, int32_t n, int32_t *dst) {
    int64_t v;
    lt_status st = lt_gguf_get_i64(g, key, &v);
    if (st == LT_ERR_NOTFOUND) return LT_OK;
    if (st != LT_OK) return st;
    if (v < 0 || v >= n) {
        /* some converters write -1 or UINT32_MAX for "none" */
        if (v == -1 || v == (int64_t)UINT32_MAX) {
            *dst = -1;
            return LT_OK;
        }
        return lt_error(LT_ERR_FORMAT, "%s: %s = %lld is outside the %d tokens", lt_gguf_path(g),
                        key, (long long)v, n);
    }
    *dst = (int32_t)v;
    return LT_OK;
}

static lt_status spm_gguf_bool(const lt_gguf *g, const char *key, int *dst) {
    int v;
    lt_status st = lt_gguf_get_bool(g, key, &v);
    if (st == LT_ERR_NOTFOUND) return LT_OK;
    if (st != LT_OK) return st;
    *dst = v != 0;
    return LT_OK;
}

static lt_status spm_load_gguf_llama(const lt_gguf *g, lt_tokenizer **out) {
    const char *path = lt_gguf_path(g);
    lt_gguf_type et;
    uint64_t n, ns = 0, nt = 0;
    const void *data, *scores = NULL, *types = NULL;
    lt_gguf_type st_type = LT_GGUF_FLOAT32, tt_type = LT_GGUF_INT32;
    lt_status st = lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data);
    if (st != LT_OK) return st;
    if (et != LT_GGUF_STRING)
        return lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.tokens: expected an array of strings",
                        path);
    if (n == 0 || n > INT32_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.tokens: %llu tokens (expected 1..%d)",
                        path, (unsigned long long)n, INT32_MAX);
    st = lt_gguf_get_arr(g, "tokenizer.ggml.scores", &st_type, &ns, &scores);
    if (st == LT_ERR_NOTFOUND) {
        scores = NULL; /* llama.cpp: scores default to 0 */
    } else if (st != LT_OK) {
        return st;
    } else if (st_type != LT_GGUF_FLOAT32 || ns != n) {
        return lt_error(LT_ERR_FORMAT,
                        "%s: tokenizer.ggml.scores: expected %llu float32 values (one per "
                        "token), found %llu of type %d",
                        path, (unsigned long long)n, (unsigned long long)ns, (int)st_type);
    }
    st = lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &tt_type, &nt, &types);
    if (st == LT_ERR_NOTFOUND) {
        types = NULL;
    } else if (st != LT_OK) {
        return st;
    } else if ((tt_type != LT_GGUF_INT32 && tt_type != LT_GGUF_UINT32) || nt != n) {
        return lt_error(LT_ERR_FORMAT,
                        "%s: tokenizer.ggml.token_type: expected %llu int32 values (one per "
                        "token), found %llu of type %d",
                        path, (unsigned long long)n, (unsigned long long)nt, (int)tt_type);
    }
    spm_model m;
    spm_model_init(&m, path, "gguf-spm");
    if (!m.src) return lt_error(LT_ERR_NOMEM, "out of memory");
    m.lenient = 1; /* converted vocabularies sometimes hold "" or NUL pieces; harmless here */
    for (uint64_t i = 0; i < n && st == LT_OK; i++) {
        const char *s;
        size_t len;
        st = lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len);
        if (st != LT_OK) break;
        float score = 0.0f;
        if (scores) {
            uint32_t bits = (uint32_t)spm_rd_i32((const uint8_t *)scores + 4 * i);
            memcpy(&score, &bits, 4);
        }
        int type = SPM_NORMAL;
        if (types) {
            int32_t tv = spm_rd_i32((const uint8_t *)types + 4 * i);
            if (tv < SPM_NORMAL || tv > SPM_BYTE) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s: tokenizer.ggml.token_type[%llu] = %d (expected 1..6)", path,
                              (unsigned long long)i, tv);
                break;
            }
            type = tv;
        } else if (spm_byte_piece(s, len) >= 0) {
            type = SPM_BYTE;
        }
        st = spm_model_add(&m, s, len, score, type);
        if (st == LT_OK && type == SPM_BYTE) m.byte_fallback = 1; /* llama.cpp always does */
    }
    /* llama.cpp's defaults for a "llama" vocabulary */
    int32_t nn = (int32_t)n;
    m.bos_id = nn > 1 ? 1 : -1;
    m.eos_id = nn > 2 ? 2 : -1;
    m.unk_id = -1; /* from the key, else the UNKNOWN piece (spm_model_finish) */
    m.add_bos = 1;
    m.add_eos = 0;
    m.add_dummy_prefix = 1;
    m.remove_extra_ws = 0;
    if (st == LT_OK) st = spm_gguf_id(g, "tokenizer.ggml.bos_token_id", nn, &m.bos_id);
    if (st == LT_OK) st = spm_gguf_id(g, "tokenizer.ggml.eos_token_id", nn, &m.eos_id);
    if (st == LT_OK) st = spm_gguf_id(g, "tokenizer.ggml.unknown_token_id", nn, &m.unk_id);
    if (st == LT_OK) st = spm_gguf_id(g, "tokenizer.ggml.padding_token_id", nn, &m.pad_id);
    if (st == LT_OK) st = spm_gguf_bool(g, "tokenizer.ggml.add_bos_token", &m.add_bos);
    if (st == LT_OK) st = spm_gguf_bool(g, "tokenizer.ggml.add_eos_token", &m.add_eos);
    if (st == LT_OK) st = spm_gguf_bool(g, "tokenizer.ggml.add_space_prefix", &m.add_dummy_prefix);
    if (st == LT_OK)
        st = spm_gguf_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &m.remove_extra_ws);
    if (st == LT_OK) st = spm_model_finish(&m, 0);
    if (st != LT_OK) {
        spm_model_clear(&m);
        return st;
    }
    return spm_model_wrap(&m, out);
}

lt_status lt_tokenizer_load_gguf(const lt_gguf *g, lt_tokenizer **out) {
    *out = NULL;
    const char *s;
    size_t len;
    lt_status st = lt_gguf_get_str(g, "tokenizer.ggml.model", &s, &len);
    if (st == LT_ERR_NOTFOUND)
        return lt_error(LT_ERR_NOTFOUND, "%s: no tokenizer.ggml.model key (no embedded vocabulary)",
                        lt_gguf_path(g));
    if (st != LT_OK) return st;
    if (len == 5 && memcmp(s, "llama", 5) == 0) return spm_load_gguf_llama(g, out);
    if (len == 4 && memcmp(s, "gpt2", 4) == 0) return lt_tokenizer_load_gguf_bpe(g, out);
    int k = len > 64 ? 64 : (int)len;
    return lt_error(LT_ERR_UNSUPPORTED,
                    "%s: tokenizer.ggml.model '%.*s' is not supported (expected \"llama\" or "
                    "\"gpt2\")",
                    lt_gguf_path(g), k, s);
}
