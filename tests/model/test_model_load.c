/* test_model_load.c - model loaders on malformed and synthetic inputs.
 *
 * llama2.c .bin: truncated, one byte extra, lying headers (huge dim, n_heads 0, n_kv_heads not
 * dividing) give clear errors before any allocation. A small random model (GQA, head_dim !=
 * dim/heads, q/k/v biases, untied head, some BF16 tensors) is written as an HF folder with
 * lt_st_writer and as llama / qwen2 GGUFs with lt_gguf_writer; the llama GGUF gets its q/k
 * rows permuted exactly as llama.cpp's converter does (restated here from its reshape/swapaxes
 * formula), and every form must load to the same parameters and logits. Missing tensors and
 * wrong shapes are reported by name. */
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/gguf.h"
#include "loratune/model.h"
#include "loratune/safetensors.h"
#include "lt_test.h"

static char dir[512];

static const char *tpath(const char *name) {
    static char bufs[4][700];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, 700, "%s/%s", dir, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void test_llama2c(void) {
    lt_mapped_file f;
    CHECK_OK(lt_file_map(lt_fixture("stories260K/stories260K.bin"), &f));
    if (!f.data) return;
    lt_model *m = NULL;
    uint8_t *buf = malloc(f.size + 1);
    memcpy(buf, f.data, f.size);
    buf[f.size] = 0;
    write_file(tpath("trunc.bin"), buf, f.size - 1);
    CHECK_ERR(lt_model_load(tpath("trunc.bin"), NULL, &m), LT_ERR_FORMAT,
              "header says 1056540 bytes");
    CHECK(m == NULL, "no model on error");
    write_file(tpath("extra.bin"), buf, f.size + 1);
    CHECK_ERR(lt_model_load(tpath("extra.bin"), NULL, &m), LT_ERR_FORMAT, "file has 1056541");
    write_file(tpath("short.bin"), buf, 10);
    CHECK_ERR(lt_model_load(tpath("short.bin"), NULL, &m), LT_ERR_FORMAT,
              "file has 10 bytes, shorter than the 28-byte");
    int32_t *h = (int32_t *)buf;
    int32_t saved[7];
    memcpy(saved, h, sizeof saved);
    h[0] = 1 << 30; /* huge dim */
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "dim = 1073741824");
    memcpy(h, saved, sizeof saved);
    h[0] = 4096; /* plausible but inconsistent with the file size */
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "file has 1056540");
    memcpy(h, saved, sizeof saved);
    h[3] = 0;
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "n_heads = 0");
    memcpy(h, saved, sizeof saved);
    h[4] = 3;
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "n_kv_heads (3)");
    memcpy(h, saved, sizeof saved);
    h[5] = -512; /* claims an untied classifier that is not there */
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "header says");
    memcpy(h, saved, sizeof saved);
    h[6] = -1;
    write_file(tpath("lie.bin"), buf, f.size);
    CHECK_ERR(lt_model_load(tpath("lie.bin"), NULL, &m), LT_ERR_FORMAT, "seq_len = -1");
    CHECK_ERR(lt_model_load(tpath("nothere.bin"), NULL, &m), LT_ERR_NOTFOUND, "nothere.bin");
    write_file(tpath("x.txt"), "hello", 5);
    CHECK_ERR(lt_model_load(tpath("x.txt"), NULL, &m), LT_ERR_UNSUPPORTED, "unknown model form");
    free(buf);
    lt_file_unmap(&f);
    remove(tpath("trunc.bin"));
    remove(tpath("extra.bin"));
    remove(tpath("short.bin"));
    remove(tpath("lie.bin"));
    remove(tpath("x.txt"));
}

/* ---- a small random model in three forms -------------------------------------------- */
enum { D = 24, L = 2, H = 4, KV = 2, HD = 8, F = 40, V = 50, QD = H * HD, KD = KV * HD };

static uint64_t rng = 12345;
static float frand(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * 0.5f;
}
static void fill(float *x, int n, int bf16) {
    for (int i = 0; i < n; i++) {
        x[i] = frand();
        if (bf16) x[i] = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
    }
}

typedef struct {
    float emb[V * D], attn_norm[L][D], wq[L][QD * D], wk[L][KD * D], wv[L][KD * D], bq[L][QD],
        bk[L][KD], bv[L][KD], wo[L][D * QD], ffn_norm[L][D], wg[L][F * D], wu[L][F * D],
        wd[L][D * F], norm[D], head[V * D];
} tiny;

static const char *tiny_config(int qwen, int drop_kv) {
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"model_type\": \"%s\", \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, %s\"head_dim\": %d, "
             "\"vocab_size\": %d, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-6, "
             "\"rope_theta\": 10000.0, \"attention_bias\": true, \"tie_word_embeddings\": false, "
             "\"torch_dtype\": \"float32\"}",
             qwen ? "qwen2" : "llama", D, F, L, H, drop_kv ? "" : "\"num_key_value_heads\": 2, ",
             HD, V);
    return buf;
}

/* name_skip: tensor left out; bad_shape: tensor written with a wrong shape */
static void write_hf(const tiny *t, const char *folder, const char *name_skip,
                     const char *bad_shape) {
    mkdir(folder, 0755);
    char p[800];
    snprintf(p, sizeof p, "%s/config.json", folder);
    write_file(p, tiny_config(0, 0), strlen(tiny_config(0, 0)));
    lt_st_writer *w = NULL;
    CHECK_OK(lt_st_writer_create(&w));
    static uint16_t bf[L][3][F * D];
    char names[64][80];
    int k = 0;
#define ADD(nm, dt, a, b, data, bytes)                                                             \
    do {                                                                                           \
        snprintf(names[k], 80, "%s", nm);                                                          \
        if (!name_skip || strcmp(names[k], name_skip)) {                                           \
            int64_t shp[2] = {(a), (b)};                                                           \
            int nd = (b) ? 2 : 1;                                                                  \
            if (bad_shape && !strcmp(names[k], bad_shape)) shp[0] -= 1;                            \
            CHECK_OK(lt_st_writer_add(w, names[k], dt, nd, shp, data,                              \
                                      (size_t)(shp[0] * ((b) ? (b) : 1)) * (bytes)));              \
        }                                                                                          \
        k++;                                                                                       \
    } while (0)
    char nm[80];
    ADD("model.embed_tokens.weight", LT_DTYPE_F32, V, D, t->emb, 4);
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < F * D; i++) {
            bf[l][0][i] = lt_f32_to_bf16(t->wg[l][i]);
            bf[l][1][i] = lt_f32_to_bf16(t->wu[l][i]);
            bf[l][2][i] = lt_f32_to_bf16(t->wd[l][i]);
        }
#define LN(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        ADD(LN("input_layernorm.weight"), LT_DTYPE_F32, D, 0, t->attn_norm[l], 4);
        ADD(LN("self_attn.q_proj.weight"), LT_DTYPE_F32, QD, D, t->wq[l], 4);
        ADD(LN("self_attn.k_proj.weight"), LT_DTYPE_F32, KD, D, t->wk[l], 4);
        ADD(LN("self_attn.v_proj.weight"), LT_DTYPE_F32, KD, D, t->wv[l], 4);
        ADD(LN("self_attn.q_proj.bias"), LT_DTYPE_F32, QD, 0, t->bq[l], 4);
        ADD(LN("self_attn.k_proj.bias"), LT_DTYPE_F32, KD, 0, t->bk[l], 4);
        ADD(LN("self_attn.v_proj.bias"), LT_DTYPE_F32, KD, 0, t->bv[l], 4);
        ADD(LN("self_attn.o_proj.weight"), LT_DTYPE_F32, D, QD, t->wo[l], 4);
        ADD(LN("post_attention_layernorm.weight"), LT_DTYPE_F32, D, 0, t->ffn_norm[l], 4);
        ADD(LN("mlp.gate_proj.weight"), LT_DTYPE_BF16, F, D, bf[l][0], 2);
        ADD(LN("mlp.up_proj.weight"), LT_DTYPE_BF16, F, D, bf[l][1], 2);
        ADD(LN("mlp.down_proj.weight"), LT_DTYPE_BF16, D, F, bf[l][2], 2);
#undef LN
    }
    ADD("model.norm.weight", LT_DTYPE_F32, D, 0, t->norm, 4);
    ADD("lm_head.weight", LT_DTYPE_F32, V, D, t->head, 4);
#undef ADD
    snprintf(p, sizeof p, "%s/model.safetensors", folder);
    CHECK_OK(lt_st_writer_write(w, p));
    lt_st_writer_free(w);
}

/* llama.cpp convert_hf_to_gguf.py LlamaModel.permute: for rows of n_head heads,
 * w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols):
 * out[h][i][j] = in[h][j][i] with i < hd/2, j < 2. */
static void hf_to_gguf_rows(const float *in, float *out, int n_head, int cols) {
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < HD / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(out + ((h * HD) + i * 2 + j) * cols,
                       in + ((h * HD) + j * (HD / 2) + i) * cols, sizeof(float) * cols);
}

static void write_gguf(const tiny *t, const char *path, int qwen) {
    lt_gguf_writer *w = NULL;
    CHECK_OK(lt_gguf_writer_create(&w));
    const char *a = qwen ? "qwen2" : "llama";
    char key[96];
#define K(s) (snprintf(key, sizeof key, "%s.%s", a, s), key)
    CHECK_OK(lt_gguf_writer_set_str(w, "general.architecture", a));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("embedding_length"), D));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("feed_forward_length"), F));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("block_count"), L));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("attention.head_count"), H));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("attention.head_count_kv"), KV));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("attention.key_length"), HD));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("attention.value_length"), HD));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("rope.dimension_count"), HD));
    CHECK_OK(lt_gguf_writer_set_u32(w, K("context_length"), 64));
    CHECK_OK(lt_gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-6f));
    CHECK_OK(lt_gguf_writer_set_f32(w, K("rope.freq_base"), 10000.0f));
#undef K
    static float pq[L][QD * D], pk[L][KD * D], pbq[L][QD], pbk[L][KD];
    char names[40][64];
    int k = 0;
#define ADD(nm, a0, b0, data)                                                                      \
    do {                                                                                           \
        snprintf(names[k], 64, "%s", nm);                                                          \
        int64_t shp[2] = {(a0), (b0)};                                                             \
        CHECK_OK(lt_gguf_writer_add_tensor(w, names[k], LT_DTYPE_F32, (b0) ? 2 : 1, shp, data,     \
                                           sizeof(float) * (size_t)((a0) * ((b0) ? (b0) : 1))));   \
        k++;                                                                                       \
    } while (0)
    char nm[64];
    ADD("token_embd.weight", V, D, t->emb);
    for (int l = 0; l < L; l++) {
        if (qwen) {
            memcpy(pq[l], t->wq[l], sizeof pq[l]);
            memcpy(pk[l], t->wk[l], sizeof pk[l]);
        } else {
            hf_to_gguf_rows(t->wq[l], pq[l], H, D);
            hf_to_gguf_rows(t->wk[l], pk[l], KV, D);
        }
#define BN(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), nm)
        ADD(BN("attn_norm.weight"), D, 0, t->attn_norm[l]);
        ADD(BN("attn_q.weight"), QD, D, pq[l]);
        ADD(BN("attn_k.weight"), KD, D, pk[l]);
        ADD(BN("attn_v.weight"), KD, D, t->wv[l]);
        /* llama.cpp's converter permutes llama q/k biases like the weights (rows of 1) */
        if (qwen) {
            memcpy(pbq[l], t->bq[l], sizeof pbq[l]);
            memcpy(pbk[l], t->bk[l], sizeof pbk[l]);
        } else {
            hf_to_gguf_rows(t->bq[l], pbq[l], H, 1);
            hf_to_gguf_rows(t->bk[l], pbk[l], KV, 1);
        }
        ADD(BN("attn_q.bias"), QD, 0, pbq[l]);
        ADD(BN("attn_k.bias"), KD, 0, pbk[l]);
        ADD(BN("attn_v.bias"), KD, 0, t->bv[l]);
        ADD(BN("attn_output.weight"), D, QD, t->wo[l]);
        ADD(BN("ffn_norm.weight"), D, 0, t->ffn_norm[l]);
        ADD(BN("ffn_gate.weight"), F, D, t->wg[l]);
        ADD(BN("ffn_up.weight"), F, D, t->wu[l]);
        ADD(BN("ffn_down.weight"), D, F, t->wd[l]);
#undef BN
    }
    ADD("output_norm.weight", D, 0, t->norm);
    ADD("output.weight", V, D, t->head);
#undef ADD
    CHECK_OK(lt_gguf_writer_write(w, path));
    lt_gguf_writer_free(w);
}

static void logits_of(const lt_model *m, float *out) {
    static const int32_t ids[6] = {1, 7, 42, 3, 3, 49};
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    if (kv) CHECK_OK(lt_model_forward(m, NULL, kv, ids, 6, 0, out, 1));
    lt_kv_cache_free(kv);
}

static float maxdiff(const float *a, const float *b, int n) {
    float d = 0;
    for (int i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static void test_forms(void) {
    static tiny t;
    fill(t.emb, V * D, 0);
    for (int l = 0; l < L; l++) {
        fill(t.attn_norm[l], D, 0);
        fill(t.wq[l], QD * D, 0);
        fill(t.wk[l], KD * D, 0);
        fill(t.wv[l], KD * D, 0);
        fill(t.bq[l], QD, 0);
        fill(t.bk[l], KD, 0);
        fill(t.bv[l], KD, 0);
        fill(t.wo[l], D * QD, 0);
        fill(t.ffn_norm[l], D, 0);
        fill(t.wg[l], F * D, 1);
        fill(t.wu[l], F * D, 1);
        fill(t.wd[l], D * F, 1);
    }
    fill(t.norm, D, 0);
    fill(t.head, V * D, 0);

    char hf[700], bad[700];
    snprintf(hf, sizeof hf, "%s", tpath("hf")); /* tpath's buffers rotate */
    write_hf(&t, hf, NULL, NULL);
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(hf, NULL, &m));
    if (!m) return;
    CHECK(m->config.head_dim == HD && m->config.qkv_bias && !m->config.tied_embeddings,
          "tiny config");
    CHECK(!memcmp(m->w.wq + QD * D, t.wq[1], sizeof t.wq[1]) &&
              !memcmp(m->w.bk + KD, t.bk[1], sizeof t.bk[1]) &&
              !memcmp(m->w.w_down + D * F, t.wd[1], sizeof t.wd[1]) &&
              !memcmp(m->w.lm_head, t.head, sizeof t.head),
          "tensors land in their fields (BF16 converted exactly)");
    CHECK(m->stored_dtype_tensors[LT_DTYPE_BF16] == 3 * L &&
              m->stored_dtype_tensors[LT_DTYPE_F32] == 3 + 9 * L,
          "dtype counts %d %d", m->stored_dtype_tensors[LT_DTYPE_BF16],
          m->stored_dtype_tensors[LT_DTYPE_F32]);
    static float lhf[6 * V], lq[6 * V], lg[6 * V];
    logits_of(m, lhf);

    /* qwen2 GGUF (NEOX rotary: no permutation, biases) must equal the HF llama model with
     * attention_bias (same math) */
    write_gguf(&t, tpath("q.gguf"), 1);
    lt_model *mq = NULL;
    CHECK_OK(lt_model_load(tpath("q.gguf"), NULL, &mq));
    if (mq) {
        CHECK(mq->config.arch == LT_ARCH_QWEN2 && mq->config.qkv_bias, "qwen2 gguf config");
        CHECK(!memcmp(mq->params, m->params, sizeof(float) * (size_t)m->n_params),
              "qwen2 gguf params == hf params");
        logits_of(mq, lq);
        CHECK(maxdiff(lq, lhf, 6 * V) == 0.0f, "qwen2 gguf logits == hf logits");
    }
    lt_model_free(mq);

    /* llama GGUF (permuted q/k weights and biases) vs the HF model */
    write_gguf(&t, tpath("l.gguf"), 0);
    lt_model *ml = NULL;
    CHECK_OK(lt_model_load(tpath("l.gguf"), NULL, &ml));
    if (ml) {
        CHECK(ml->config.arch == LT_ARCH_LLAMA && ml->config.qkv_bias, "llama gguf config");
        CHECK(!memcmp(ml->params, m->params, sizeof(float) * (size_t)m->n_params),
              "llama gguf q/k weights and biases un-permuted to the HF layout");
        logits_of(ml, lg);
        CHECK(maxdiff(lg, lhf, 6 * V) == 0.0f, "llama gguf logits == hf logits: %g",
              maxdiff(lg, lhf, 6 * V));
        /* and without the un-permutation the logits would differ: the test can fail */
        static float saved[L * QD * D];
        memcpy(saved, ml->w.wq, sizeof saved);
        hf_to_gguf_rows(saved, ml->w.wq, H * L, D);
        logits_of(ml, lg);
        CHECK(maxdiff(lg, lhf, 6 * V) > 1e-4f, "permuted q changes the logits");
    }
    lt_model_free(ml);
    lt_model_free(m);

    /* config-only: no weights, same config and dtype counts, shapes still checked */
    lt_model_load_opts co = {.config_only = 1};
    CHECK_OK(lt_model_load(hf, &co, &m));
    if (m) {
        CHECK(m->params == NULL && m->w.wq == NULL && m->n_params > 0 &&
                  m->stored_dtype_tensors[LT_DTYPE_BF16] == 3 * L,
              "config-only model");
        lt_kv_cache *kv = NULL;
        CHECK_OK(lt_kv_cache_create(m, 8, 4, &kv));
        int32_t one = 1;
        float lg1[V];
        if (kv) CHECK_ERR(lt_model_forward(m, NULL, kv, &one, 1, 0, lg1, 0), LT_ERR_ARG, "config-only");
        lt_kv_cache_free(kv);
        lt_model_free(m);
    }
    co.max_seq_len = 16;
    CHECK_OK(lt_model_load(tpath("l.gguf"), &co, &m));
    CHECK(m && m->params == NULL && m->config.max_seq_len == 16, "config-only gguf, ctx override");
    lt_model_free(m);

    /* GGUF metadata errors name the key */
    lt_gguf_writer *gw = NULL;
    CHECK_OK(lt_gguf_writer_create(&gw));
    CHECK_OK(lt_gguf_writer_set_str(gw, "general.architecture", "llama"));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.block_count", 2));
    CHECK_OK(lt_gguf_writer_write(gw, tpath("meta.gguf")));
    lt_gguf_writer_free(gw);
    CHECK_ERR(lt_model_load(tpath("meta.gguf"), NULL, &m), LT_ERR_FORMAT, "llama.embedding_length");
    CHECK_OK(lt_gguf_writer_create(&gw));
    CHECK_OK(lt_gguf_writer_set_str(gw, "general.architecture", "llama"));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.block_count", 1024));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.embedding_length", 65536));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.feed_forward_length", 1 << 20));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.attention.head_count", 1024));
    CHECK_OK(lt_gguf_writer_set_u32(gw, "llama.vocab_size", 1 << 22));
    CHECK_OK(lt_gguf_writer_set_f32(gw, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    CHECK_OK(lt_gguf_writer_write(gw, tpath("meta.gguf")));
    lt_gguf_writer_free(gw);
    CHECK_ERR(lt_model_load(tpath("meta.gguf"), NULL, &m), LT_ERR_NOTFOUND,
              "missing tensor token_embd.weight");
    CHECK_OK(lt_gguf_writer_create(&gw));
    CHECK_OK(lt_gguf_writer_set_str(gw, "general.architecture", "gpt2"));
    CHECK_OK(lt_gguf_writer_write(gw, tpath("meta.gguf")));
    lt_gguf_writer_free(gw);
    CHECK_ERR(lt_model_load(tpath("meta.gguf"), NULL, &m), LT_ERR_UNSUPPORTED, "gpt2");
    remove(tpath("meta.gguf"));

    /* missing tensor, wrong shape, missing kv heads field defaults to n_heads (then shapes
     * disagree) */
    snprintf(bad, sizeof bad, "%s", tpath("bad"));
    write_hf(&t, bad, "model.layers.1.mlp.up_proj.weight", NULL);
    CHECK_ERR(lt_model_load(bad, NULL, &m), LT_ERR_NOTFOUND,
              "missing tensor model.layers.1.mlp.up_proj.weight");
    write_hf(&t, bad, NULL, "model.layers.0.self_attn.k_proj.weight");
    CHECK_ERR(
        lt_model_load(bad, NULL, &m), LT_ERR_FORMAT,
        "tensor model.layers.0.self_attn.k_proj.weight has shape [15, 24], expected [16, 24]");
    write_hf(&t, bad, "lm_head.weight", NULL);
    CHECK_ERR(lt_model_load(bad, NULL, &m), LT_ERR_NOTFOUND, "lm_head.weight");
    char p[800];
    snprintf(p, sizeof p, "%s/config.json", bad);
    write_file(p, tiny_config(0, 1), strlen(tiny_config(0, 1)));
    CHECK_ERR(lt_model_load(bad, NULL, &m), LT_ERR_FORMAT,
              "k_proj.weight has shape [16, 24], expected [32, 24]");
    /* a config claiming ~10^14 parameters over a tiny file: the tensors are checked before
     * anything is allocated (under ASan a huge allocation would abort the test) */
    const char *huge = "{\"model_type\": \"llama\", \"hidden_size\": 65536, "
                       "\"intermediate_size\": 1048576, \"num_hidden_layers\": 1024, "
                       "\"num_attention_heads\": 1024, \"vocab_size\": 4194304}";
    write_file(p, huge, strlen(huge));
    CHECK_ERR(lt_model_load(bad, NULL, &m), LT_ERR_FORMAT,
              "model.embed_tokens.weight has shape [50, 24], expected [4194304, 65536]");
    snprintf(p, sizeof p, "%s/model.safetensors", bad);
    remove(p);
    CHECK(lt_model_load(bad, NULL, &m) != LT_OK && m == NULL, "no safetensors: %s", lt_errmsg());
    snprintf(p, sizeof p, "%s/config.json", bad);
    remove(p);
    CHECK_ERR(lt_model_load(bad, NULL, &m), LT_ERR_NOTFOUND, "config.json");
    rmdir(bad);
    snprintf(p, sizeof p, "%s/config.json", hf);
    remove(p);
    snprintf(p, sizeof p, "%s/model.safetensors", hf);
    remove(p);
    rmdir(hf);
    remove(tpath("q.gguf"));
    remove(tpath("l.gguf"));
}

/* Sliding window (mistral): with one layer, the last position attends to exactly the last W
 * tokens, and rotary attention depends only on relative positions, so its logits equal those
 * of running just those W tokens from position 0 without a window. */
static void test_sliding_window(void) {
    lt_model_config c = {.arch = LT_ARCH_MISTRAL,
                         .dim = 32,
                         .n_layers = 1,
                         .n_heads = 4,
                         .n_kv_heads = 2,
                         .head_dim = 8,
                         .ffn_dim = 48,
                         .vocab_size = 50,
                         .max_seq_len = 64,
                         .norm_eps = 1e-5f,
                         .rope_theta = 10000.0f,
                         .bos_id = 1,
                         .eos_id = 2,
                         .sliding_window = 4};
    lt_model *m = NULL;
    CHECK_OK(lt_model_create(&c, &m));
    if (!m) return;
    fill(m->params, (int)m->n_params, 0);
    static const int32_t ids[12] = {5, 9, 3, 44, 17, 8, 21, 30, 2, 11, 47, 6};
    float a[50], b[50], full[50];
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    CHECK_OK(lt_model_forward(m, NULL, kv, ids, 12, 0, a, 0));
    lt_kv_cache_free(kv);
    m->config.sliding_window = 0;
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    CHECK_OK(lt_model_forward(m, NULL, kv, ids + 8, 4, 0, b, 0));
    lt_kv_cache_free(kv);
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    CHECK_OK(lt_model_forward(m, NULL, kv, ids, 12, 0, full, 0));
    lt_kv_cache_free(kv);
    CHECK(maxdiff(a, b, 50) < 1e-4f, "window 4 == last 4 tokens alone: %g", maxdiff(a, b, 50));
    CHECK(maxdiff(a, full, 50) > 1e-3f, "and differs from full attention: %g",
          maxdiff(a, full, 50));
    lt_model_free(m);
}

int main(void) {
    const char *d = lt_tmpdir();
    CHECK(d != NULL, "tmpdir");
    if (!d) LT_TEST_END();
    snprintf(dir, sizeof dir, "%s", d);
    test_llama2c();
    test_forms();
    test_sliding_window();
    rmdir(dir);
    LT_TEST_END();
}
