/* test_ub_inputs.c - issue 18 finding 8: inputs that reached undefined behaviour which only
 * clang's UBSan reports (gcc's lacks the checks), so this test fails in the sanitizer build
 * (`make test-asan`, clang when installed) if the behaviour comes back; in a plain build it
 * still checks the results:
 *   - a 0-byte tokenizer.model (mapped as NULL: NULL + 0 in the protobuf reader) is a clear
 *     "empty file" error;
 *   - decoding with a Fuse + Strip decoder when nothing is left to decode (an empty id list, or
 *     only special tokens skipped: an empty arena, NULL + 0 and memcmp(NULL, ..., 0)) gives "". */
#include <stdio.h>

#include "loratune/tokenizer.h"
#include "lt_test.h"

int main(void) {
    const char *dir = lt_tmpdir();
    char path[700];

    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    FILE *f = fopen(path, "wb");
    fclose(f);
    lt_tokenizer *t = NULL;
    CHECK_ERR(lt_tokenizer_load(path, &t), LT_ERR_FORMAT, "empty file");
    CHECK(strstr(lt_errmsg(), "tokenizer.model") != NULL, "message names the file: %s",
          lt_errmsg());
    lt_tokenizer_free(t);
    t = NULL;

    /* the SmolLM tokenizer.json with its decoder replaced by Fuse + Strip(" ", 1, 1) */
    char *js = NULL;
    size_t jl = 0;
    CHECK_OK(lt_file_read_all(lt_fixture("tokenizers/smollm/tokenizer.json"), &js, &jl));
    const char *key = "\"decoder\":";
    char *at = js ? strstr(js, key) : NULL;
    CHECK(at != NULL, "the fixture has a decoder");
    if (at) {
        /* the decoder value is an object: find its end by brace depth (no braces in its strings) */
        char *v = at + strlen(key);
        while (*v == ' ')
            v++;
        char *e = v;
        int depth = 0;
        do {
            if (*e == '{') depth++;
            if (*e == '}') depth--;
            e++;
        } while (depth > 0 && *e);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        f = fopen(path, "wb");
        fwrite(js, 1, (size_t)(v - js), f);
        fputs("{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, "
              "{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 1}]}",
              f);
        fputs(e, f);
        fclose(f);
        CHECK_OK(lt_tokenizer_load(path, &t));
        if (t) {
            char *text = NULL;
            size_t tl = 1;
            CHECK_OK(lt_tokenizer_decode(t, NULL, 0, 0, &text, &tl));
            CHECK(tl == 0, "empty id list decodes to %zu bytes", tl);
            free(text);
            int32_t special = 0; /* <|endoftext|> */
            CHECK_OK(lt_tokenizer_decode(t, &special, 1, 1, &text, &tl));
            CHECK(tl == 0, "only a skipped special token decodes to %zu bytes", tl);
            free(text);
            int32_t ids[2] = {special, special};
            CHECK_OK(lt_tokenizer_decode(t, ids, 2, 0, &text, &tl));
            CHECK(text && !strcmp(text, "<|endoftext|><|endoftext|>"), "decoded '%s'",
                  text ? text : "(null)");
            free(text);
        }
        lt_tokenizer_free(t);
    }
    free(js);
    LT_TEST_END();
}
