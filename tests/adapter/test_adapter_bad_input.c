/* test_adapter_bad_input.c - the adapter readers refuse bad input with messages that name the
 * file and the key / tensor (missing config keys, unknown target names, wrong shapes, missing
 * and extra tensors, truncated files, the wrong base model), the writers refuse what their
 * format cannot say, and PEFT -> mlx-lm -> GGUF -> PEFT conversions keep every value. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "adapter/adapter_internal.h"
#include "loratune/adapter.h"
#include "loratune/gguf.h"
#include "loratune/safetensors.h"
#include "lt_test.h"

static lt_model_config mc;
static const char *tmp;
static uint64_t rng = 12345;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static lt_adapter *make(lt_train_method method, unsigned targets, int lb, int le) {
    lt_adapter *a = NULL;
    if (lt_adapter_new_(method, 4, 8.0f, 0, mc.n_layers, &a)) return NULL;
    for (int l = lb; l < le; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            if (!((targets >> t) & 1)) continue;
            lt_adapter_alloc_lin_(a, &mc, l, t);
            lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
            for (int64_t k = 0; k < (int64_t)a->r * L->in; k++)
                L->A[k] = frand();
            for (int64_t k = 0; k < (int64_t)a->r * L->out; k++)
                L->B[k] = frand();
            for (int k = 0; L->mag && k < L->out; k++)
                L->mag[k] = 1.0f + frand() * 0.5f;
        }
    lt_adapter_refresh_(a);
    return a;
}

static int equal(const lt_adapter *x, const lt_adapter *y) {
    if (x->r != y->r || x->targets != y->targets || x->method != y->method ||
        x->layer_begin != y->layer_begin || x->layer_end != y->layer_end ||
        fabsf(lt_adapter_scale(x) - lt_adapter_scale(y)) > 1e-6f)
        return 0;
    for (int i = 0; i < x->n_layers * LT_N_TARGETS; i++) {
        const lt_adapter_lin *a = &x->lin[i], *b = &y->lin[i];
        if (!a->A != !b->A) return 0;
        if (!a->A) continue;
        if (memcmp(a->A, b->A, sizeof(float) * x->r * a->in) ||
            memcmp(a->B, b->B, sizeof(float) * x->r * a->out) ||
            (a->mag && memcmp(a->mag, b->mag, sizeof(float) * a->out)))
            return 0;
    }
    return 1;
}

static const char *p(const char *a, const char *b) {
    static char buf[4][1024];
    static int k;
    char *o = buf[k++ & 3];
    snprintf(o, 1024, "%s/%s%s%s", tmp, a, b ? "/" : "", b ? b : "");
    return o;
}

/* copies folder src to dst (the two files of an adapter folder) */
static void copy_folder(const char *src, const char *dst, const char *f1, const char *f2) {
    lt_adapter_mkdir_(p(dst, NULL));
    const char *fs[2] = {f1, f2};
    for (int i = 0; i < 2; i++) {
        char *buf = NULL;
        size_t n = 0;
        lt_file_read_all(p(src, fs[i]), &buf, &n);
        lt_file_write_atomic(p(dst, fs[i]), buf, n);
        free(buf);
    }
}

/* PEFT folder "good" copied to name, with adapter_config.json edited by fn */
static const char *peft_variant(const char *name, void (*fn)(json_t *)) {
    copy_folder("good", name, "adapter_config.json", "adapter_model.safetensors");
    json_t *c = json_load_file(p(name, "adapter_config.json"), 0, NULL);
    fn(c);
    lt_adapter_write_json_(c, p(name, "adapter_config.json"));
    json_decref(c);
    return p(name, NULL);
}
static void del_r(json_t *c) {
    json_object_del(c, "r");
}
static void del_alpha(json_t *c) {
    json_object_del(c, "lora_alpha");
}
static void del_tm(json_t *c) {
    json_object_del(c, "target_modules");
}
static void tm_lm_head(json_t *c) {
    json_array_append_new(json_object_get(c, "target_modules"), json_string("lm_head"));
}
static void ia3(json_t *c) {
    json_object_set_new(c, "peft_type", json_string("IA3"));
}
static void rank_pat(json_t *c) {
    json_t *o = json_object();
    json_object_set_new(o, "q_proj", json_integer(8));
    json_object_set_new(c, "rank_pattern", o);
}
static void layers_0_1(json_t *c) {
    json_t *a = json_array();
    json_array_append_new(a, json_integer(0));
    json_array_append_new(a, json_integer(1));
    json_object_set_new(c, "layers_to_transform", a);
}
static void layer_99(json_t *c) {
    json_object_set_new(c, "layers_to_transform", json_integer(99));
}
static void r_8(json_t *c) {
    json_object_set_new(c, "r", json_integer(8));
}
static void v_too(json_t *c) {
    json_array_append_new(json_object_get(c, "target_modules"), json_string("v_proj"));
}
static void mlx_no_scale(json_t *c) {
    json_object_del(json_object_get(c, "lora_parameters"), "scale");
}
static void mlx_bad_key(json_t *c) {
    json_array_append_new(json_object_get(json_object_get(c, "lora_parameters"), "keys"),
                          json_string("self_attn.qkv_proj"));
}
static void mlx_too_many(json_t *c) {
    json_object_set_new(c, "num_layers", json_integer(6));
}
static void mlx_no_keys(json_t *c) {
    json_object_del(json_object_get(c, "lora_parameters"), "keys");
}
static void mlx_full(json_t *c) {
    json_object_set_new(c, "fine_tune_type", json_string("full"));
}

static const char *mlx_variant(const char *name, void (*fn)(json_t *)) {
    copy_folder("good_mlx", name, "adapter_config.json", "adapters.safetensors");
    json_t *c = json_load_file(p(name, "adapter_config.json"), 0, NULL);
    fn(c);
    lt_adapter_write_json_(c, p(name, "adapter_config.json"));
    json_decref(c);
    return p(name, NULL);
}

static void truncate_file(const char *src, const char *dst, double frac) {
    char *buf = NULL;
    size_t n = 0;
    lt_file_read_all(src, &buf, &n);
    lt_file_write_atomic(dst, buf, (size_t)(n * frac));
    free(buf);
}

int main(void) {
    CHECK_OK(lt_model_config_load_hf(lt_fixture("stories260K-hf/config.json"), &mc));
    tmp = lt_tmpdir();
    lt_adapter *a = make(LT_METHOD_LORA, LT_TARGET_Q | LT_TARGET_K | LT_TARGET_DOWN, 2, 5);
    lt_adapter *r = NULL, *r2 = NULL, *r3 = NULL;
    CHECK(a != NULL, "make");
    if (!a) LT_TEST_END();

    /* conversions: PEFT -> mlx-lm -> GGUF -> PEFT keep every value */
    CHECK_OK(lt_adapter_save_peft(a, p("good", NULL)));
    CHECK_OK(lt_adapter_load(p("good", NULL), &mc, &r));
    if (r) CHECK_OK(lt_adapter_save_mlx(r, &mc, p("good_mlx", NULL)));
    CHECK_OK(lt_adapter_load(p("good_mlx", NULL), &mc, &r2));
    if (r2) CHECK_OK(lt_adapter_save_gguf(r2, &mc, LT_DTYPE_F32, p("good.gguf", NULL)));
    CHECK_OK(lt_adapter_load(p("good.gguf", NULL), &mc, &r3));
    if (r3) CHECK_OK(lt_adapter_save_peft(r3, p("again", NULL)));
    lt_adapter_free(r);
    r = NULL;
    CHECK_OK(lt_adapter_load(p("again", NULL), &mc, &r));
    CHECK(r && r2 && r3 && equal(a, r) && equal(a, r2) && equal(a, r3),
          "PEFT -> mlx -> GGUF -> PEFT changed values");
    lt_adapter_free(r);
    lt_adapter_free(r2);
    lt_adapter_free(r3);
    r = r2 = r3 = NULL;

    /* GGUF row order of q/k lora_b: llama permutes into llama.cpp's interleaved rotary order
     * (row h*hd + 2i + j holds HF row h*hd + j*hd/2 + i; what the llama.cpp peer test checks
     * end to end), qwen2 keeps HF's order; lora_a and other targets are never permuted */
    for (int arch = 0; arch < 2; arch++) {
        lt_model_config c2 = mc;
        c2.arch = arch ? LT_ARCH_QWEN2 : LT_ARCH_LLAMA;
        const char *f = p(arch ? "qwen2.gguf" : "llama.gguf", NULL);
        CHECK_OK(lt_adapter_save_gguf(a, &c2, LT_DTYPE_F32, f));
        lt_gguf *g = NULL;
        CHECK_OK(lt_gguf_open(f, &g));
        if (!g) continue;
        int hd = mc.head_dim, half = hd / 2, bad = 0;
        for (int t = 0; t < 2; t++) {
            const lt_tensor_view *v = lt_gguf_find_tensor(g, t ? "blk.3.attn_k.weight.lora_b"
                                                               : "blk.3.attn_q.weight.lora_b");
            const lt_tensor_view *va = lt_gguf_find_tensor(g, "blk.3.attn_q.weight.lora_a");
            const lt_adapter_lin *L = &a->lin[3 * LT_N_TARGETS + t];
            if (!v || !va) {
                bad++;
                continue;
            }
            bad += memcmp(va->data, a->lin[3 * LT_N_TARGETS].A, sizeof(float) * 4 * L->in) != 0;
            int nh = t ? mc.n_kv_heads : mc.n_heads;
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < half; i++)
                    for (int j = 0; j < 2; j++) {
                        int grow = h * hd + (arch ? j * half + i : 2 * i + j);
                        int hrow = h * hd + j * half + i;
                        bad += memcmp((const float *)v->data + grow * 4, L->B + hrow * 4,
                                      sizeof(float) * 4) != 0;
                    }
        }
        const lt_tensor_view *vd = lt_gguf_find_tensor(g, "blk.3.ffn_down.weight.lora_b");
        bad += !vd || memcmp(vd->data, a->lin[3 * LT_N_TARGETS + 6].B, sizeof(float) * 4 * mc.dim);
        CHECK(bad == 0, "%s: %d rows of lora_a / lora_b in the wrong place", f, bad);
        lt_gguf_close(g);
    }

    /* PEFT config */
    CHECK_ERR(lt_adapter_load(peft_variant("no_r", del_r), &mc, &r), LT_ERR_FORMAT,
              "no_r/adapter_config.json: missing key r");
    CHECK_ERR(lt_adapter_load(peft_variant("no_alpha", del_alpha), &mc, &r), LT_ERR_FORMAT,
              "adapter_config.json: missing key lora_alpha");
    CHECK_ERR(lt_adapter_load(peft_variant("no_tm", del_tm), &mc, &r), LT_ERR_FORMAT,
              "adapter_config.json: missing key target_modules");
    CHECK_ERR(lt_adapter_load(peft_variant("lm_head", tm_lm_head), &mc, &r), LT_ERR_UNSUPPORTED,
              "target_modules[3] 'lm_head': not a linear");
    CHECK_ERR(lt_adapter_load(peft_variant("ia3", ia3), &mc, &r), LT_ERR_UNSUPPORTED,
              "peft_type 'IA3'");
    CHECK_ERR(lt_adapter_load(peft_variant("rank_pat", rank_pat), &mc, &r), LT_ERR_UNSUPPORTED,
              "rank_pattern is set");
    CHECK_ERR(lt_adapter_load(peft_variant("layer_99", layer_99), &mc, &r), LT_ERR_FORMAT,
              "layers_to_transform: expected layer indices in [0, 5)");
    /* tensors in the file for layers the config does not adapt */
    CHECK_ERR(lt_adapter_load(peft_variant("layers01", layers_0_1), &mc, &r), LT_ERR_FORMAT,
              "adapter_model.safetensors: tensor base_model.model.model.layers.2.mlp.down_proj."
              "lora_A.weight: layer 2 down_proj is not adapted");
    /* wrong rank: the first tensor's shape names it, the file and the expectation */
    CHECK_ERR(lt_adapter_load(peft_variant("r8", r_8), &mc, &r), LT_ERR_FORMAT,
              "r8/adapter_model.safetensors: tensor base_model.model.model.layers.2.mlp."
              "down_proj.lora_A.weight: shape [4, 172], expected [8, 172]");
    CHECK_ERR(lt_adapter_load(peft_variant("v_too", v_too), &mc, &r), LT_ERR_FORMAT,
              "missing tensor base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight");
    /* a wrong shape in the safetensors file */
    {
        lt_st_writer *w = NULL;
        lt_st_writer_create(&w);
        float z[4 * 64] = {0};
        int64_t sa[2] = {4, 64}, sb[2] = {64, 4};
        lt_st_writer_add(w, "base_model.model.model.layers.2.self_attn.k_proj.lora_A.weight",
                         LT_DTYPE_F32, 2, sa, z, sizeof z);
        lt_st_writer_add(w, "base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight",
                         LT_DTYPE_F32, 2, sb, z, sizeof z); /* k_proj outputs 32 */
        copy_folder("good", "badshape", "adapter_config.json", "adapter_model.safetensors");
        lt_st_writer_write(w, p("badshape", "adapter_model.safetensors"));
        lt_st_writer_free(w);
        CHECK_ERR(lt_adapter_load(p("badshape", NULL), &mc, &r), LT_ERR_FORMAT,
                  "badshape/adapter_model.safetensors: tensor base_model.model.model.layers.2."
                  "self_attn.k_proj.lora_B.weight: shape [64, 4], expected [32, 4]");
    }
    copy_folder("good", "trunc", "adapter_config.json", "adapter_model.safetensors");
    truncate_file(p("good", "adapter_model.safetensors"), p("trunc", "adapter_model.safetensors"),
                  0.7);
    CHECK_ERR(lt_adapter_load(p("trunc", NULL), &mc, &r), LT_ERR_FORMAT,
              "trunc/adapter_model.safetensors");
    copy_folder("good", "badjson", "adapter_config.json", "adapter_model.safetensors");
    truncate_file(p("good", "adapter_config.json"), p("badjson", "adapter_config.json"), 0.5);
    CHECK_ERR(lt_adapter_load(p("badjson", NULL), &mc, &r), LT_ERR_FORMAT,
              "badjson/adapter_config.json: line");
    CHECK_ERR(lt_adapter_load(p("nothing", NULL), &mc, &r), LT_ERR_NOTFOUND, "no such adapter");
    lt_adapter_mkdir_(p("empty", NULL));
    CHECK_ERR(lt_adapter_load(p("empty", NULL), &mc, &r), LT_ERR_NOTFOUND,
              "missing adapter_config.json");

    /* mlx-lm config */
    CHECK_ERR(lt_adapter_load(mlx_variant("mlx_noscale", mlx_no_scale), &mc, &r), LT_ERR_FORMAT,
              "mlx_noscale/adapter_config.json: lora_parameters.scale: missing");
    CHECK_ERR(lt_adapter_load(mlx_variant("mlx_badkey", mlx_bad_key), &mc, &r), LT_ERR_UNSUPPORTED,
              "lora_parameters.keys[3] 'self_attn.qkv_proj'");
    CHECK_ERR(lt_adapter_load(mlx_variant("mlx_many", mlx_too_many), &mc, &r), LT_ERR_FORMAT,
              "num_layers 6: the model has only 5 layers");
    CHECK_ERR(lt_adapter_load(mlx_variant("mlx_full", mlx_full), &mc, &r), LT_ERR_UNSUPPORTED,
              "fine_tune_type 'full'");
    /* no keys (mlx-lm: every linear): the targets come from the file */
    CHECK_OK(lt_adapter_load(mlx_variant("mlx_nokeys", mlx_no_keys), &mc, &r));
    CHECK(r && equal(a, r), "mlx-lm folder without lora_parameters.keys");
    lt_adapter_free(r);
    r = NULL;
    copy_folder("good_mlx", "mlx_trunc", "adapter_config.json", "adapters.safetensors");
    truncate_file(p("good_mlx", "adapters.safetensors"), p("mlx_trunc", "adapters.safetensors"),
                  0.5);
    CHECK_ERR(lt_adapter_load(p("mlx_trunc", NULL), &mc, &r), LT_ERR_FORMAT,
              "mlx_trunc/adapters.safetensors");

    /* GGUF */
    truncate_file(p("good.gguf", NULL), p("trunc.gguf", NULL), 0.6);
    CHECK_ERR(lt_adapter_load(p("trunc.gguf", NULL), &mc, &r), LT_ERR_FORMAT, "trunc.gguf");
    lt_model_config qwen = mc;
    qwen.arch = LT_ARCH_QWEN2;
    CHECK_ERR(lt_adapter_load(p("good.gguf", NULL), &qwen, &r), LT_ERR_FORMAT,
              "general.architecture = \"llama\", expected \"qwen2\"");
    lt_model_config other = mc;
    other.ffn_dim = 128;
    CHECK_ERR(lt_adapter_load(p("good.gguf", NULL), &other, &r), LT_ERR_FORMAT,
              "good.gguf: tensor blk.2.ffn_down.weight.lora_a: shape [4, 172] (outermost "
              "first), expected [4, 128]");
    CHECK_ERR(lt_adapter_load(lt_fixture("stories260K/stories260K.gguf"), &mc, &r), LT_ERR_FORMAT,
              "missing metadata key general.type");
    CHECK_ERR(lt_adapter_load(p("good", NULL), &other, &r), LT_ERR_FORMAT,
              "down_proj.lora_A.weight: shape [4, 172], expected [4, 128]");

    /* writers */
    lt_adapter *d = make(LT_METHOD_DORA, LT_TARGET_V, 0, 5);
    CHECK_ERR(lt_adapter_save_gguf(d, &mc, LT_DTYPE_F32, p("d.gguf", NULL)), LT_ERR_UNSUPPORTED,
              "llama.cpp has no DoRA");
    lt_adapter *mid = make(LT_METHOD_LORA, LT_TARGET_Q, 1, 3);
    CHECK_ERR(lt_adapter_save_mlx(mid, &mc, p("mid_mlx", NULL)), LT_ERR_UNSUPPORTED,
              "layers [1, 3) do not end at the model's last (5)");
    CHECK_OK(lt_adapter_save_peft(mid, p("mid", NULL))); /* layers_to_transform [1, 2] */
    CHECK_OK(lt_adapter_load(p("mid", NULL), &mc, &r));
    CHECK(r && equal(mid, r), "PEFT with layers_to_transform round trip");
    lt_adapter_free(r);
    r = NULL;
    /* irregular: q on layer 1 only plus v on layer 2 only */
    lt_adapter *irr = make(LT_METHOD_LORA, LT_TARGET_Q, 1, 2);
    lt_adapter_alloc_lin_(irr, &mc, 2, 2);
    lt_adapter_refresh_(irr);
    CHECK_ERR(lt_adapter_save_peft(irr, p("irr", NULL)), LT_ERR_UNSUPPORTED,
              "layer 1 v_proj is not adapted");
    CHECK_OK(lt_adapter_save_gguf(irr, &mc, LT_DTYPE_F16, p("irr.gguf", NULL))); /* GGUF can */
    CHECK_ERR(lt_adapter_save_gguf(a, &mc, LT_DTYPE_Q8_0, p("q8.gguf", NULL)), LT_ERR_ARG,
              "expected F32, F16 or BF16");

    /* an adapter for another model */
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    lt_adapter *big = NULL;
    CHECK_OK(lt_adapter_new_(LT_METHOD_LORA, 4, 8, 0, 6, &big));
    if (m && big) {
        lt_model_delta *dl = (lt_model_delta *)&dl; /* not NULL: the call must clear it */
        CHECK_ERR(lt_adapter_delta_create(big, m, &dl), LT_ERR_ARG,
                  "adapter is for 6 layers, the model has 5");
        CHECK(dl == NULL, "a refused adapter gives no delta");
    }
    lt_model_free(m);
    lt_adapter_free(big);
    lt_adapter_free(irr);
    lt_adapter_free(mid);
    lt_adapter_free(d);
    lt_adapter_free(a);
    LT_TEST_END();
}
