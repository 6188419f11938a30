/* fuzz_hf_config.c - a Hugging Face config.json (lt_model_config_load_hf: architectures,
 * sizes, rope scaling, eos lists, dtype) and the invariants the forward relies on
 * (lt_model_config_validate). Seeds: the fixtures' config.json and the small transformers
 * configs of tests/data/forward. */
#include "fuzz_util.h"
#include "loratune/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("config.json", data, size);
    lt_model_config c;
    lt_status s = lt_model_config_load_hf(path, &c);
    if (s) {
        fz_refused(s, "lt_model_config_load_hf");
        return 0;
    }
    if ((s = lt_model_config_validate(&c, "config.json")) != LT_OK) {
        fz_refused(s, "lt_model_config_validate");
        return 0;
    }
    /* what a valid config promises the forward */
    FZ_CHECK(c.n_heads > 0 && c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0, "heads");
    FZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim");
    if (c.head_dim <= 1 << 16) {
        float *inv = malloc(sizeof(float) * (size_t)(c.head_dim / 2));
        if (inv) lt_rope_inv_freq(&c, inv);
        free(inv);
    }
    return 0;
}
