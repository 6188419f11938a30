/* hf_tokenizer.h - internal: the Hugging Face style BPE tokenizer (tokenizer.json and GGUF
 * "gpt2" vocabularies) shared by hf_tokenizer.c (JSON loader, encode/decode pipeline),
 * hf_bpe.c (vocabulary, merges, the BPE word model) and hf_gguf_bpe.c (GGUF loader).
 *
 * Invariants: pieces[id] is NUL-terminated and owned by the hf_tok (NULL for ids that name
 * no token); every id in the vocab map, the merge table, added tokens and templates is in
 * [0, n_ids). The pipeline mirrors tokenizers' order: added tokens split out -> normalizer
 * -> pre-tokenizer -> BPE per pre-token -> post-processor; decode: ids -> pieces -> decoder
 * chain -> join. */
#ifndef LT_HF_TOKENIZER_H
#define LT_HF_TOKENIZER_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <pthread.h>

#include "tokenizer_impl.h"

struct lt_gguf;

/* Loads a GGUF vocabulary whose tokenizer.ggml.model is "gpt2" (byte-level BPE). The
 * pre-tokenizer comes from tokenizer.ggml.pre: "gpt-2"/"default" (GPT-2 regex), "smollm"
 * (digits one by one, then GPT-2 regex), "llama-bpe"/"llama3" (Llama 3 regex), "qwen2"
 * (NFC normalizer as in Qwen2's tokenizer.json, which llama.cpp skips; Qwen2 regex). */
lt_status lt_tokenizer_load_gguf_bpe(const struct lt_gguf *g, lt_tokenizer **out);

/* ---- internal representation ----------------------------------------------------------- */
typedef struct {
    uint32_t cap;   /* power of two */
    int32_t *slots; /* ids, -1 empty */
} hf_strmap;

/* Cache of BPE results per pre-token (like tokenizers' own): words up to 64 bytes, the
 * table is emptied when 3/4 full. Guarded by mu: encode may run on several threads. */
typedef struct {
    uint64_t hash;
    char *key; /* NULL = empty slot; key and ids in one allocation */
    uint32_t klen, nids;
    int32_t *ids;
} hf_cache_ent;

typedef struct {
    pthread_mutex_t mu;
    hf_cache_ent *ents; /* [cap] */
    uint32_t cap, count;
} hf_cache;

typedef struct {
    char *content;
    size_t len;
    char *pat; /* what is matched: content, or for normalized tokens the normalized content
                  (as tokenizers does); owned when != content */
    size_t plen;
    int32_t id;
    int special, single_word, lstrip, rstrip, normalized;
} hf_added;

/* NFC..NFKD through utf8proc (Unicode 15.0 with libutf8proc 2.8; tokenizers' tables are
 * Unicode 9.0, see docs/TOKENIZERS.md); LOWERCASE is Rust's char::to_lowercase per char. */
enum {
    HF_NORM_PREPEND,
    HF_NORM_REPLACE,
    HF_NORM_REPLACE_RE,
    HF_NORM_NFC,
    HF_NORM_NFD,
    HF_NORM_NFKC,
    HF_NORM_NFKD,
    HF_NORM_LOWERCASE
};
typedef struct {
    int type;
    char *a, *b; /* PREPEND: a; REPLACE: a -> b */
    size_t alen, blen;
    pcre2_code *re;
} hf_norm;

enum { HF_PRE_BYTELEVEL, HF_PRE_SPLIT, HF_PRE_METASPACE };
enum {
    HF_SPLIT_REMOVED,
    HF_SPLIT_ISOLATED,
    HF_SPLIT_MERGED_PREV,
    HF_SPLIT_MERGED_NEXT,
    HF_SPLIT_CONTIGUOUS
};
enum { HF_PREPEND_ALWAYS, HF_PREPEND_FIRST, HF_PREPEND_NEVER };
typedef struct {
    int type;
    int add_prefix_space, use_regex; /* BYTELEVEL */
    pcre2_code *re;                  /* SPLIT (regex) and BYTELEVEL with use_regex */
    char *lit;                       /* SPLIT with a String pattern */
    size_t litlen;
    int behavior, invert; /* SPLIT */
    char repl[8];         /* METASPACE replacement, UTF-8 */
    size_t repl_len;
    int prepend_scheme, split; /* METASPACE */
} hf_pre;

enum {
    HF_DEC_BYTELEVEL,
    HF_DEC_REPLACE,
    HF_DEC_BYTEFALLBACK,
    HF_DEC_FUSE,
    HF_DEC_STRIP,
    HF_DEC_METASPACE
};
typedef struct {
    int type;
    char *a, *b; /* REPLACE a -> b; STRIP: a = the char; METASPACE: a = replacement */
    size_t alen, blen;
    int start, stop;    /* STRIP */
    int prepend_scheme; /* METASPACE */
} hf_dec;

typedef struct {
    /* vocabulary: model vocab and added tokens share one id space */
    char **pieces; /* [n_ids] */
    uint32_t *piece_len;
    uint8_t *in_model; /* [n_ids] 1 if the id is in model.vocab */
    uint8_t *special;  /* [n_ids] 1 for special added tokens */
    int32_t n_ids;
    hf_strmap vocab; /* piece -> id, over in_model ids */
    /* merges: key (left id << 32 | right id) -> rank, result id */
    uint64_t *mkeys; /* [mcap], UINT64_MAX empty */
    uint32_t *mrank;
    int32_t *mres;
    uint32_t mcap, n_merges;
    /* BPE options */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;                 /* -1 none */
    char *cont_prefix, *eow_suffix; /* NULL if none */
    int32_t byte_ids[256];          /* id of "<0xNN>", -1 if absent */
    /* pipeline */
    hf_added *added;
    int n_added;
    uint8_t added_first[2][256]; /* [normalized][first byte]: some added token starts so */
    hf_norm *norm;
    int n_norm;
    hf_pre *pre;
    int n_pre;
    hf_dec *dec;
    int n_dec, has_decoder;
    /* post-processor (single-sequence template): ids before and after the text */
    int32_t *post_pre, *post_post;
    int n_post_pre, n_post_post;
    int has_post;
    hf_cache *cache;     /* NULL = no cache (allocation failed) */
    pcre2_code *word_re; /* ^\w, for single_word added tokens (compiled by hf_tok_wrap) */
    const char *kind;
    const char *src; /* file name for messages (owned) */
} hf_tok;

/* hf_bpe.c */
uint64_t hf_hash(const char *s, size_t len);
lt_status hf_strmap_init(hf_strmap *m, uint32_t n);
void hf_strmap_free(hf_strmap *m);
/* Inserts id (pieces[id] is the key); keeps an existing entry for the same key. */
void hf_strmap_put(hf_strmap *m, char *const *pieces, const uint32_t *plen, int32_t id);
int32_t hf_strmap_get(const hf_strmap *m, char *const *pieces, const uint32_t *plen, const char *s,
                      size_t len);
int32_t hf_vocab_get(const hf_tok *h, const char *s, size_t len);
lt_status hf_merges_init(hf_tok *h, uint32_t n);
/* Adds merge (a, b) with the given rank; errors name the merge when a part or the result
 * is not in the vocabulary. Later duplicates of a pair are ignored (first rank wins). */
lt_status hf_merge_add(hf_tok *h, const char *a, size_t alen, const char *b, size_t blen,
                       uint32_t rank);
/* Appends the ids of one pre-token (BPE with the model's options) to *ids. */
lt_status hf_bpe_word(const hf_tok *h, const char *w, size_t len, int32_t **ids, size_t *n,
                      size_t *cap);
/* hf_bpe_word through the cache */
lt_status hf_bpe_word_cached(const hf_tok *h, const char *w, size_t len, int32_t **ids, size_t *n,
                             size_t *cap);
void hf_cache_create(hf_tok *h);
lt_status hf_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id);
/* Allocates pieces/piece_len/in_model/special for n ids (all empty). */
lt_status hf_tok_alloc_ids(hf_tok *h, int32_t n);
/* Sets id's piece (copied). */
lt_status hf_tok_set_piece(hf_tok *h, int32_t id, const char *s, size_t len);
void hf_tok_free(hf_tok *h);
void hf_tok_finish_bytes(hf_tok *h); /* fills byte_ids from the vocab */

/* hf_tokenizer.c */
/* Wraps a fully built hf_tok (taken) into a tokenizer handle. */
lt_status hf_tok_wrap(hf_tok *h, int32_t bos, int32_t eos, lt_tokenizer **out);
/* Compiles pattern (len bytes) with PCRE2_UTF|PCRE2_UCP; error names the pattern and src. */
lt_status hf_regex_compile(const char *src, const char *pat, size_t len, pcre2_code **out);
extern const char hf_gpt2_pattern[];

#endif
