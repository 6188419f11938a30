/* fuzz_spm.c - a sentencepiece tokenizer.model (the protobuf reader of spm_proto.c: trainer
 * and normalizer specs, pieces, scores, types), through both entry points:
 * lt_tokenizer_load_spm (then an encode and a decode) and lt_spm_vocab_load (the arrays a
 * GGUF export writes). Seeds: stories260K's tok512.model and tiny models trained by the
 * sentencepiece package (tools/gen_fuzz_seeds.py). */
#include "fuzz_util.h"
#include "loratune/tokenizer.h"

static const char text[] = "Once upon a time, 12 caf\xc3\xa9s \xe6\x97\xa5\n  end <unk> <s>";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("tokenizer.model", data, size);
    lt_tokenizer *t = NULL;
    lt_status s = lt_tokenizer_load_spm(path, &t);
    if (s) {
        fz_refused(s, "lt_tokenizer_load_spm");
        FZ_CHECK(t == NULL, "no handle after an error");
    } else {
        int32_t V = lt_tokenizer_vocab_size(t);
        int32_t *ids = NULL;
        size_t n = 0;
        if ((s = lt_tokenizer_encode(t, text, sizeof text - 1, 1, 1, &ids, &n)) == LT_OK) {
            for (size_t i = 0; i < n; i++)
                FZ_CHECK(ids[i] >= 0 && ids[i] < V, "an encoded id inside the vocabulary");
            char *out = NULL;
            size_t len = 0;
            if ((s = lt_tokenizer_decode(t, ids, n, 1, &out, &len)) == LT_OK)
                free(out);
            else
                fz_refused(s, "lt_tokenizer_decode");
        } else {
            fz_refused(s, "lt_tokenizer_encode");
        }
        free(ids);
        lt_tokenizer_free(t);
    }
    lt_spm_vocab v;
    memset(&v, 0, sizeof v);
    if ((s = lt_spm_vocab_load(path, &v)) == LT_OK) {
        for (int32_t i = 0; i < v.n; i++)
            FZ_CHECK(v.pieces[i] != NULL, "a piece of a loaded vocabulary");
    } else {
        fz_refused(s, "lt_spm_vocab_load");
    }
    lt_spm_vocab_free(&v);
    return 0;
}
