/* fuzz_safetensors.c - the safetensors reader (lt_safetensors_open: the 8-byte length, the
 * header JSON, dtypes, shapes, byte ranges), every tensor view and the metadata it reports,
 * and the model loader on a folder holding it with a tiny Llama's config.json
 * (lt_model_load_hf: lazy, then whole: which tensors are there, their shapes, dtypes and
 * finiteness, the conversion to fp32). Seeds:
 * tests/fuzz/corpus/safetensors (small files written by the safetensors package). */
#include "fuzz_util.h"
#include "loratune/model.h"
#include "loratune/safetensors.h"

/* a tiny Llama (tools/gen_fuzz_seeds.py's tiny_config; its safetensors seeds match it) */
static const char config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"vocab_size\": 16, \"max_position_embeddings\": 32, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"rope_scaling\": null, "
    "\"hidden_act\": \"silu\", \"tie_word_embeddings\": false, \"bos_token_id\": 1, "
    "\"eos_token_id\": 2, \"torch_dtype\": \"float32\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("model.safetensors", data, size);
    lt_safetensors *st = NULL;
    lt_status s = lt_safetensors_open(path, &st);
    if (s) {
        fz_refused(s, "lt_safetensors_open");
        FZ_CHECK(st == NULL, "no handle after an error");
        return 0;
    }
    size_t n = lt_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const lt_tensor_view *v = lt_safetensors_tensor(st, i);
        FZ_CHECK(v && v->name, "a tensor of an opened file");
        FZ_CHECK(lt_safetensors_find(st, v->name) != NULL, "find of a listed tensor");
        int64_t k = lt_tensor_numel(v);
        (void)k;
    }
    (void)lt_safetensors_metadata(st, "format");
    lt_safetensors_close(st);
    /* the folder form: config.json beside it, as `inspect DIR` reads it */
    fz_write("config.json", (const uint8_t *)config, strlen(config));
    char dir[512];
    snprintf(dir, sizeof dir, "%s", fz_dir());
    for (int lazy = 1; lazy >= 0; lazy--) { /* mapped (finiteness checked), then whole */
        lt_model_load_opts o = {.lazy = lazy};
        lt_model *m = NULL;
        if ((s = lt_model_load_hf(dir, &o, &m)) == LT_OK) {
            lt_model_free(m);
        } else {
            fz_refused(s, "lt_model_load_hf");
            FZ_CHECK(m == NULL, "no model after an error");
            break;
        }
    }
    return 0;
}
