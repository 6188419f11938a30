/* test_generate_stream.c - lt_generate's streamed text with multi-byte UTF-8 characters split
 * across byte-fallback tokens. A model is built by hand so that greedy decoding follows a
 * fixed chain of token ids (one-hot embeddings, zero attention/MLP, an LM head mapping each
 * token to its successor); with the real tok512 sentencepiece tokenizer the chain spells
 * "é", a word, then "€" as <0xC3><0xA9> ... <0xE2><0x82><0xAC>. Every streamed piece must be
 * complete UTF-8, the piece after a lead byte empty, and the pieces together must equal the
 * tokenizer's own decode of the generated ids. */
#include "loratune/model.h"
#include "loratune/sampler.h"
#include "loratune/tokenizer.h"
#include "lt_test.h"

static char got[256];
static size_t got_len;
static int n_calls, empty_after_lead, bad_piece;

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = s[i] < 0x80             ? 1
                   : (s[i] & 0xE0) == 0xC0 ? 2
                   : (s[i] & 0xF0) == 0xE0 ? 3
                   : (s[i] & 0xF8) == 0xF0 ? 4
                                           : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static int on_tok(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    n_calls++;
    if (id == 3 + 0xC3 || id == 3 + 0xE2 || id == 3 + 0x82) empty_after_lead += len == 0;
    if (!valid_utf8((const unsigned char *)text, len)) bad_piece++;
    if (got_len + len < sizeof got) {
        memcpy(got + got_len, text, len);
        got_len += len;
    }
    return 0;
}

int main(void) {
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_tokenizer_load(lt_fixture("stories260K/tok512.model"), &tok));
    if (!tok) LT_TEST_END();
    int32_t word = lt_tokenizer_find(tok, "\xE2\x96\x81the"); /* "▁the" */
    CHECK(word > 258, "tok512 has a piece for ' the' (%d)", word);
    int32_t chain[] = {1, 3 + 0xC3, 3 + 0xA9, word, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 2};
    int n_chain = (int)(sizeof chain / sizeof chain[0]);

    lt_model_config c = {.arch = LT_ARCH_LLAMA,
                         .dim = 512,
                         .n_layers = 1,
                         .n_heads = 8,
                         .n_kv_heads = 8,
                         .head_dim = 64,
                         .ffn_dim = 4,
                         .vocab_size = 512,
                         .max_seq_len = 32,
                         .norm_eps = 1e-5f,
                         .rope_theta = 10000.0f,
                         .bos_id = 1,
                         .eos_id = 2,
                         .n_eos_ids = 1,
                         .eos_ids = {2}};
    lt_model *m = NULL;
    CHECK_OK(lt_model_create(&c, &m));
    if (!m) LT_TEST_END();
    for (int v = 0; v < 512; v++)
        m->w.tok_embd[v * 512 + v] = 1.0f; /* one-hot */
    for (int i = 0; i < 512; i++)
        m->w.attn_norm[i] = m->w.ffn_norm[i] = m->w.out_norm[i] = 1.0f;
    for (int k = 0; k + 1 < n_chain; k++)
        m->w.lm_head[chain[k + 1] * 512 + chain[k]] = 1.0f;

    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    lt_sampler_params sp = {0};
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    CHECK_OK(lt_sampler_create(&sp, 512, &s));
    lt_generate_opts o = {.max_tokens = 20, .stop_at_eos = 1, .on_token = on_tok};
    int32_t *ids = NULL;
    int n = 0;
    CHECK_OK(lt_generate(m, NULL, kv, tok, s, chain, 1, &o, &ids, &n));
    CHECK(n == n_chain - 1 && ids && !memcmp(ids, chain + 1, sizeof(int32_t) * (size_t)n),
          "the hand-made model follows the chain (%d ids)", n);
    char *want = NULL;
    size_t want_len = 0;
    CHECK_OK(lt_tokenizer_decode(tok, chain, (size_t)n_chain, 1, &want, &want_len));
    CHECK(want && strstr(want, "\xC3\xA9") && strstr(want, "\xE2\x82\xAC"), "reference decode: %s",
          want ? want : "");
    CHECK(want && got_len == want_len && !memcmp(got, want, want_len), "streamed '%.*s' vs '%s'",
          (int)got_len, got, want ? want : "");
    CHECK(bad_piece == 0, "%d streamed pieces were not complete UTF-8", bad_piece);
    CHECK(empty_after_lead == 3, "pieces held back after lead/continuation bytes: %d",
          empty_after_lead);
    free(want);
    free(ids);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    lt_model_free(m);
    lt_tokenizer_free(tok);
    LT_TEST_END();
}
