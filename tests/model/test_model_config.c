/* test_model_config.c - config.json parsing (real-shaped configs, missing/wrong fields, unsupported
 * features) and rotary inverse frequencies (default, linear, llama3) against the formulas of
 * transformers' modeling_rope_utils, written out independently here in double precision. */
#include <math.h>
#include <unistd.h>

#include "loratune/model.h"
#include "lt_test.h"

static const char *dir;

static const char *write_cfg(const char *json) {
    static char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "wb");
    fputs(json, f);
    fclose(f);
    return p;
}

/* a SmolLM2-135M-shaped config (model_type llama), with a placeholder for one extra field */
static const char *smollm(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
             "\"hidden_size\": 576, \"intermediate_size\": 1536, \"num_hidden_layers\": 30, "
             "\"num_attention_heads\": 9, \"num_key_value_heads\": 3, \"vocab_size\": 49152, "
             "\"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-05, \"rope_theta\": 100000, "
             "\"rope_scaling\": null, \"hidden_act\": \"silu\", \"tie_word_embeddings\": true, "
             "\"bos_token_id\": 1, \"eos_token_id\": 2, \"attention_bias\": false, "
             "\"mlp_bias\": false, \"torch_dtype\": \"bfloat16\"%s}",
             extra);
    return buf;
}

/* the same config without torch_dtype, with extra appended (e.g. another dtype field) */
static const char *smollm_dtype(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s", smollm(""));
    char *d = strstr(buf, ", \"torch_dtype\": \"bfloat16\"}");
    if (d) snprintf(d, sizeof buf - (size_t)(d - buf), "%s}", extra);
    return buf;
}

static void test_dtype_fields(void) {
    lt_model_config c;
    CHECK_OK(lt_model_config_load_hf(write_cfg(smollm_dtype("")), &c));
    CHECK(c.dtype == LT_DTYPE_F32 && !c.dtype_stated, "no torch_dtype: F32 assumed, not stated");
    CHECK_OK(lt_model_config_load_hf(write_cfg(smollm_dtype(", \"torch_dtype\": null")), &c));
    CHECK(c.dtype == LT_DTYPE_F32 && !c.dtype_stated, "torch_dtype null: not stated");
    CHECK_OK(lt_model_config_load_hf(write_cfg(smollm_dtype(", \"dtype\": \"float16\"")), &c));
    CHECK(c.dtype == LT_DTYPE_F16 && c.dtype_stated, "dtype (newer transformers' key)");
    CHECK_OK(lt_model_config_load_hf(write_cfg(smollm("")), &c));
    CHECK(c.dtype == LT_DTYPE_BF16 && c.dtype_stated, "torch_dtype bfloat16 stated");
    /* errors name the file and the key that was read */
    const char *p = write_cfg(smollm_dtype(", \"torch_dtype\": \"float8_e4m3fn\""));
    CHECK_ERR(lt_model_config_load_hf(p, &c), LT_ERR_FORMAT,
              "torch_dtype = \"float8_e4m3fn\": expected float32, float16 or bfloat16");
    CHECK(strstr(lt_errmsg(), p) != NULL, "names the file: %s", lt_errmsg());
    CHECK_ERR(lt_model_config_load_hf(write_cfg(smollm_dtype(", \"dtype\": \"int8\"")), &c),
              LT_ERR_FORMAT, "dtype = \"int8\"");
    CHECK_ERR(lt_model_config_load_hf(write_cfg(smollm_dtype(", \"torch_dtype\": 16")), &c),
              LT_ERR_FORMAT, "torch_dtype: expected a string");
}

static void test_hf_configs(void) {
    lt_model_config c;
    CHECK_OK(lt_model_config_load_hf(lt_fixture("stories260K-hf/config.json"), &c));
    CHECK(c.arch == LT_ARCH_LLAMA && c.dim == 64 && c.head_dim == 8 && c.n_kv_heads == 4 &&
              c.tied_embeddings && c.bos_id == 1 && c.eos_id == 2 && c.max_seq_len == 512 &&
              fabsf(c.norm_eps - 1e-5f) < 1e-12f && c.rope_theta == 10000.0f,
          "stories260K-hf config");

    CHECK_OK(lt_model_config_load_hf(write_cfg(smollm("")), &c));
    CHECK(c.dim == 576 && c.n_heads == 9 && c.n_kv_heads == 3 && c.head_dim == 64 &&
              c.ffn_dim == 1536 && c.n_layers == 30 && c.vocab_size == 49152 &&
              c.rope_theta == 100000.0f && c.tied_embeddings && !c.qkv_bias &&
              c.dtype == LT_DTYPE_BF16,
          "smollm config");
    CHECK(lt_model_config_n_params(&c) == 134515008LL, "smollm params %lld",
          (long long)lt_model_config_n_params(&c)); /* SmolLM2-135M's published count */

    /* JSON_REJECT_DUPLICATES: a duplicated key is rejected */
    CHECK_ERR(lt_model_config_load_hf(write_cfg(smollm(", \"hidden_size\": 64")), &c),
              LT_ERR_FORMAT, "duplicate");

    /* eos as a list: first kept, all noted */
    const char *list_cfg =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 128, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
        "\"vocab_size\": 300, \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, "
        "\"rope_theta\": 1000000.0, \"eos_token_id\": [151645, 151643], \"bos_token_id\": null, "
        "\"use_sliding_window\": false, \"sliding_window\": 4096}";
    CHECK_ERR(lt_model_config_load_hf(write_cfg(list_cfg), &c), LT_ERR_FORMAT, "vocab_size");
    const char *qwen =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 128, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
        "\"vocab_size\": 300, \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, "
        "\"rope_theta\": 1000000.0, \"eos_token_id\": [17, 3], \"bos_token_id\": null, "
        "\"use_sliding_window\": false, \"sliding_window\": 4096, \"torch_dtype\": \"float16\"}";
    CHECK_OK(lt_model_config_load_hf(write_cfg(qwen), &c));
    CHECK(c.arch == LT_ARCH_QWEN2 && c.qkv_bias && c.eos_id == 17 && c.n_eos_ids == 2 &&
              c.eos_ids[1] == 3 && c.bos_id == -1 && c.sliding_window == 0 && !c.tied_embeddings &&
              c.dtype == LT_DTYPE_F16,
          "qwen2 config: bias %d eos %d n %d", c.qkv_bias, c.eos_id, c.n_eos_ids);

    /* errors name the field */
    const char *bad_gqa =
        "{\"model_type\": \"llama\", \"hidden_size\": 576, \"intermediate_size\": 1536, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 9, \"num_key_value_heads\": 5, "
        "\"vocab_size\": 100}";
    CHECK_ERR(lt_model_config_load_hf(write_cfg(bad_gqa), &c), LT_ERR_FORMAT,
              "num_key_value_heads = 5 must divide num_attention_heads = 9");
    CHECK_ERR(
        lt_model_config_load_hf(write_cfg("{\"model_type\": \"llama\", \"hidden_size\": 64}"), &c),
        LT_ERR_FORMAT, "missing field \"intermediate_size\"");
    CHECK_ERR(lt_model_config_load_hf(write_cfg("{\"hidden_size\": 64}"), &c), LT_ERR_FORMAT,
              "model_type");
    CHECK_ERR(lt_model_config_load_hf(write_cfg("{\"model_type\": \"gpt2\"}"), &c),
              LT_ERR_UNSUPPORTED, "gpt2");
    CHECK_ERR(lt_model_config_load_hf(write_cfg("[1,2]"), &c), LT_ERR_FORMAT, "object");
    CHECK_ERR(lt_model_config_load_hf(write_cfg("{\"model_type\": "), &c), LT_ERR_FORMAT,
              "invalid JSON");
    char tmp[2048];
    snprintf(tmp, sizeof tmp, "%s", smollm(""));
    char *p = strstr(tmp, "\"hidden_size\": 576");
    memcpy(p, "\"hidden_size\":\"57\"", 18);
    CHECK_ERR(lt_model_config_load_hf(write_cfg(tmp), &c), LT_ERR_FORMAT,
              "hidden_size: expected an integer");
    snprintf(tmp, sizeof tmp, "%s", smollm(""));
    p = strstr(tmp, "\"num_hidden_layers\": 30");
    memcpy(p, "\"num_hidden_layers\": -3", 23);
    CHECK_ERR(lt_model_config_load_hf(write_cfg(tmp), &c), LT_ERR_FORMAT, "num_hidden_layers");
    snprintf(tmp, sizeof tmp, "%s", smollm(""));
    p = strstr(tmp, "\"mlp_bias\": false");
    memcpy(p, "\"mlp_bias\": true ", 17);
    CHECK_ERR(lt_model_config_load_hf(write_cfg(tmp), &c), LT_ERR_UNSUPPORTED, "mlp_bias");
    snprintf(tmp, sizeof tmp, "%s", smollm(""));
    p = strstr(tmp, "\"silu\"");
    memcpy(p, "\"gelu\"", 6);
    CHECK_ERR(lt_model_config_load_hf(write_cfg(tmp), &c), LT_ERR_UNSUPPORTED, "hidden_act");
    snprintf(tmp, sizeof tmp, "%s", smollm(""));
    p = strstr(tmp, "\"rope_scaling\": null");
    CHECK(p != NULL, "template");
    char cfg2[2600];
    snprintf(cfg2, sizeof cfg2, "%.*s\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}%s",
             (int)(p - tmp), tmp, p + strlen("\"rope_scaling\": null"));
    CHECK_ERR(lt_model_config_load_hf(write_cfg(cfg2), &c), LT_ERR_UNSUPPORTED, "yarn");
    snprintf(cfg2, sizeof cfg2,
             "%.*s\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}%s", (int)(p - tmp),
             tmp, p + strlen("\"rope_scaling\": null"));
    CHECK_ERR(lt_model_config_load_hf(write_cfg(cfg2), &c), LT_ERR_FORMAT, "low_freq_factor");
    snprintf(cfg2, sizeof cfg2, "%.*s\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}%s",
             (int)(p - tmp), tmp, p + strlen("\"rope_scaling\": null"));
    CHECK_OK(lt_model_config_load_hf(write_cfg(cfg2), &c));
    CHECK(c.rope_scaling.type == LT_ROPE_SCALING_LINEAR && c.rope_scaling.factor == 2.0f, "linear");
    /* transformers 5 style: rope_parameters */
    snprintf(cfg2, sizeof cfg2,
             "%.*s\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, "
             "\"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
             "\"original_max_position_embeddings\": 8192}%s",
             (int)(p - tmp), tmp, p + strlen("\"rope_scaling\": null"));
    char *rt = strstr(cfg2, "\"rope_theta\": 100000, ");
    if (rt) memmove(rt, rt + 22, strlen(rt + 22) + 1);
    CHECK_OK(lt_model_config_load_hf(write_cfg(cfg2), &c));
    CHECK(c.rope_theta == 500000.0f && c.rope_scaling.type == LT_ROPE_SCALING_LLAMA3 &&
              c.rope_scaling.factor == 32.0f &&
              c.rope_scaling.original_max_position_embeddings == 8192,
          "rope_parameters: theta %g type %d", (double)c.rope_theta, (int)c.rope_scaling.type);
    CHECK_ERR(lt_model_config_load_hf("/nonexistent/config.json", &c), LT_ERR_IO, "nonexistent");
}

/* transformers' default + llama3 rope, restated: inv_freq_i = theta^(-2i/d); wavelength
 * 2*pi/inv_freq; above old_ctx/low_freq_factor -> /factor; below old_ctx/high_freq_factor ->
 * unchanged; between -> (1-s)*f/factor + s*f with s = (old_ctx/wavelen - low)/(high - low). */
static double ref_llama3(double theta, int d, int i, double factor, double lo, double hi,
                         double old_ctx) {
    double f = pow(theta, -(2.0 * i) / d);
    double wl = 2.0 * M_PI / f;
    if (wl < old_ctx / hi) return f;
    if (wl > old_ctx / lo) return f / factor;
    double s = (old_ctx / wl - lo) / (hi - lo);
    return (1.0 - s) * f / factor + s * f;
}

static void test_rope(void) {
    lt_model_config c;
    memset(&c, 0, sizeof c);
    c.head_dim = 128;
    c.rope_theta = 500000.0f;
    c.rope_scaling.type = LT_ROPE_SCALING_LLAMA3; /* Llama 3.1 8B's values */
    c.rope_scaling.factor = 8.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position_embeddings = 8192;
    float inv[64];
    lt_rope_inv_freq(&c, inv);
    double worst = 0;
    int n_scaled = 0, n_kept = 0, n_mid = 0;
    for (int i = 0; i < 64; i++) {
        double r = ref_llama3(500000.0, 128, i, 8, 1, 4, 8192);
        double base = pow(500000.0, -(2.0 * i) / 128);
        if (fabs(r - base) < 1e-12 * base)
            n_kept++;
        else if (fabs(r - base / 8) < 1e-12 * base)
            n_scaled++;
        else
            n_mid++;
        worst = fmax(worst, fabs(inv[i] - r) / r);
    }
    CHECK(worst < 2e-6, "llama3 inv_freq relative error %g", worst);
    CHECK(n_kept > 0 && n_scaled > 0 && n_mid > 0, "all three bands exercised: %d %d %d", n_kept,
          n_scaled, n_mid);
    c.rope_scaling.type = LT_ROPE_SCALING_NONE;
    c.rope_theta = 10000.0f;
    c.head_dim = 8;
    lt_rope_inv_freq(&c, inv);
    CHECK(inv[0] == 1.0f && fabsf(inv[1] - 0.1f) < 1e-8f && fabsf(inv[3] - 0.001f) < 1e-9f,
          "default inv_freq %g %g %g", inv[0], inv[1], inv[3]);
    c.rope_scaling.type = LT_ROPE_SCALING_LINEAR;
    c.rope_scaling.factor = 4.0f;
    lt_rope_inv_freq(&c, inv);
    CHECK(inv[0] == 0.25f && fabsf(inv[1] - 0.025f) < 1e-8f, "linear inv_freq %g", inv[1]);
}

int main(void) {
    dir = lt_tmpdir();
    CHECK(dir != NULL, "tmpdir");
    if (!dir) LT_TEST_END();
    test_hf_configs();
    test_dtype_fields();
    test_rope();
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    remove(p);
    rmdir(dir);
    LT_TEST_END();
}
