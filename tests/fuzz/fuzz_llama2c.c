/* fuzz_llama2c.c - a llama2.c checkpoint (lt_model_load_llama2c: the 7-int header, shared
 * classifier sign, sizes against the file) and the llama2.c tokenizer.bin
 * (lt_tokenizer_load_llama2c), each fed the whole input. Seeds: tiny checkpoints in
 * llama2.c's layout (tools/gen_fuzz_seeds.py) and stories260K's tok512.bin. */
#include "fuzz_util.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("model.bin", data, size);
    lt_model *m = NULL;
    lt_status s = lt_model_load_llama2c(path, NULL, &m);
    if (s) {
        fz_refused(s, "lt_model_load_llama2c");
        FZ_CHECK(m == NULL, "no model after an error");
    } else {
        lt_model_free(m);
    }
    lt_tokenizer *t = NULL;
    if ((s = lt_tokenizer_load_llama2c(path, &t)) == LT_OK) {
        int32_t *ids = NULL;
        size_t n = 0;
        const char text[] = "Once upon a time \xc3\xa9";
        if (lt_tokenizer_encode(t, text, sizeof text - 1, 1, 0, &ids, &n) == LT_OK) {
            char *out = NULL;
            size_t len = 0;
            if (lt_tokenizer_decode(t, ids, n, 0, &out, &len) == LT_OK) free(out);
        }
        free(ids);
        lt_tokenizer_free(t);
    } else {
        fz_refused(s, "lt_tokenizer_load_llama2c");
    }
    return 0;
}
