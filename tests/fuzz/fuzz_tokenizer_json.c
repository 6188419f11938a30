/* fuzz_tokenizer_json.c - a Hugging Face tokenizer.json (lt_tokenizer_load_hf: model,
 * vocab, merges in both forms, added tokens, normalizer / pre-tokenizer / post-processor /
 * decoder pipelines), then an encode and a decode with what was loaded. Seeds: small
 * tokenizer.json files written by the tokenizers package (tools/gen_fuzz_seeds.py: BPE
 * byte-level, BPE with a Metaspace / sentencepiece-style pipeline, a WordPiece and a Unigram
 * model that must be refused by name). */
#include "fuzz_util.h"
#include "loratune/tokenizer.h"

static const char text[] =
    "Hello, world! It's 2024.\n\tTabs  and   spaces <|im_start|>user<|im_end|> caf\xc3\xa9 "
    "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 <s></s>";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("tokenizer.json", data, size);
    lt_tokenizer *t = NULL;
    lt_status s = lt_tokenizer_load_hf(path, &t);
    if (s) {
        fz_refused(s, "lt_tokenizer_load_hf");
        FZ_CHECK(t == NULL, "no handle after an error");
        return 0;
    }
    int32_t V = lt_tokenizer_vocab_size(t);
    for (int parse = 0; parse < 2; parse++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if ((s = lt_tokenizer_encode(t, text, sizeof text - 1, 1, parse, &ids, &n)) == LT_OK) {
            for (size_t i = 0; i < n; i++)
                FZ_CHECK(ids[i] >= 0 && ids[i] < V, "an encoded id inside the vocabulary");
            char *out = NULL;
            size_t len = 0;
            /* nothing to decode, and (with add_special) only the leading special token skipped:
             * the empty-arena paths of the decoder pipeline (issue 18, finding 8) */
            for (size_t k = 0; k < 2 && k <= n; k++)
                if ((s = lt_tokenizer_decode(t, ids, k, 1, &out, &len)) == LT_OK)
                    free(out), out = NULL;
                else
                    fz_refused(s, "lt_tokenizer_decode");
            for (int skip = 0; skip < 2; skip++)
                if ((s = lt_tokenizer_decode(t, ids, n, skip, &out, &len)) == LT_OK)
                    free(out), out = NULL;
                else
                    fz_refused(s, "lt_tokenizer_decode");
        } else {
            fz_refused(s, "lt_tokenizer_encode");
        }
        free(ids);
    }
    for (int32_t i = 0; i < V && i < 512; i++)
        (void)lt_tokenizer_piece(t, i);
    lt_tokenizer_free(t);
    return 0;
}
