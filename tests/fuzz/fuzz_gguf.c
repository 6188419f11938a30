/* fuzz_gguf.c - the GGUF reader (lt_gguf_open_mem: header, metadata, tensor infos), then what
 * reads a GGUF's metadata: every key through the typed getters, the tokenizer
 * (lt_tokenizer_load_gguf: tokens, scores, types, merges), the chat template
 * (lt_chat_template_from_gguf) and the model (lt_model_load_gguf from a file: lazy, as
 * generate and train load it, then whole, every tensor dequantized). Seeds: tests/fuzz/corpus/gguf
 * (small files written by gguf-py, tools/gen_fuzz_seeds.py). */
#include "fuzz_util.h"
#include "loratune/chat.h"
#include "loratune/gguf.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"

static void walk(const lt_gguf *g) {
    size_t n = lt_gguf_n_kv(g);
    for (size_t i = 0; i < n; i++) {
        const char *k = lt_gguf_kv_key(g, i);
        FZ_CHECK(k != NULL, "a key of an opened GGUF");
        uint32_t u32;
        int64_t i64;
        uint64_t u64;
        float f;
        double d;
        int b;
        const char *s;
        size_t len;
        lt_gguf_type et;
        uint64_t cnt;
        const void *data;
        (void)lt_gguf_get_u32(g, k, &u32);
        (void)lt_gguf_get_i64(g, k, &i64);
        (void)lt_gguf_get_u64(g, k, &u64);
        (void)lt_gguf_get_f32(g, k, &f);
        (void)lt_gguf_get_f64(g, k, &d);
        (void)lt_gguf_get_bool(g, k, &b);
        if (lt_gguf_get_str(g, k, &s, &len) == LT_OK && len) {
            volatile char c = s[len - 1]; /* inside the map */
            (void)c;
        }
        if (lt_gguf_get_arr(g, k, &et, &cnt, &data) == LT_OK && et == LT_GGUF_STRING) {
            for (uint64_t j = 0; j < cnt && j < 64; j++)
                if (lt_gguf_get_arr_str(g, k, j, &s, &len) == LT_OK && len) {
                    volatile char c = s[len - 1];
                    (void)c;
                }
            if (cnt) FZ_CHECK(lt_gguf_get_arr_str(g, k, cnt, &s, &len) != LT_OK, "index past end");
        }
    }
    size_t nt = lt_gguf_n_tensors(g);
    for (size_t i = 0; i < nt; i++) {
        const lt_tensor_view *v = lt_gguf_tensor(g, i);
        FZ_CHECK(v && v->name, "a tensor of an opened GGUF");
        (void)lt_gguf_tensor_offset(g, i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lt_gguf *g = NULL;
    lt_status s = lt_gguf_open_mem(data, size, "fuzz.gguf", &g);
    if (s) {
        fz_refused(s, "lt_gguf_open_mem");
        FZ_CHECK(g == NULL, "no handle after an error");
        return 0;
    }
    walk(g);
    lt_tokenizer *t = NULL;
    if ((s = lt_tokenizer_load_gguf(g, &t)) == LT_OK) {
        int32_t *ids = NULL;
        size_t n = 0;
        const char text[] = "Hello world! <s> 12 \xc3\xa9t\xc3\xa9\n\t ok";
        if (lt_tokenizer_encode(t, text, sizeof text - 1, 1, 1, &ids, &n) == LT_OK) {
            char *out = NULL;
            size_t len = 0;
            if (lt_tokenizer_decode(t, ids, n, 0, &out, &len) == LT_OK) free(out);
        }
        free(ids);
        lt_tokenizer_free(t);
    } else {
        fz_refused(s, "lt_tokenizer_load_gguf");
    }
    lt_chat_template *ct = NULL;
    if ((s = lt_chat_template_from_gguf(g, &ct)) == LT_OK)
        lt_chat_template_free(ct);
    else
        fz_refused(s, "lt_chat_template_from_gguf");
    lt_gguf_close(g);

    /* the model: lazy (mapped, every tensor's finiteness checked on its stored blocks, what
     * generate and train do) and whole (every tensor dequantized to fp32) */
    const char *path = fz_write("model.gguf", data, size);
    for (int lazy = 1; lazy >= 0; lazy--) {
        lt_model_load_opts o = {.lazy = lazy};
        lt_model *m = NULL;
        if ((s = lt_model_load_gguf(path, &o, &m)) == LT_OK) {
            lt_model_free(m);
        } else {
            fz_refused(s, "lt_model_load_gguf");
            FZ_CHECK(m == NULL, "no model after an error");
            break;
        }
    }
    return 0;
}
