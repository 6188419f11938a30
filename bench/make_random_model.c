/* make_random_model.c - writes a Hugging Face folder (config.json + model.safetensors) with
 * random weights for a given config.json, streaming: memory stays a few MiB whatever the size
 * (Llama-3-8B shapes: 16 GB of bf16). For memory and speed benchmarks of shapes we have no
 * real weights for (bench/RESULTS.md, issue 5's 8B figure).
 *
 *   make_random_model --config bench/shapes/llama3-8b.json --out DIR [--dtype bf16|f32]
 *                     [--seed S]
 *
 * Weights ~ normal(0, 0.02) (transformers' initializer_range; Box-Muller over a splitmix64
 * stream), norm weights 1. Tensor names and shapes are transformers' LlamaForCausalLM. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/model.h"

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    int norm;
} tensor;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int die(const char *what, lt_status st) {
    fprintf(stderr, "make_random_model: %s: %s\n", what, st ? lt_errmsg() : "failed");
    return 1;
}

int main(int argc, char **argv) {
    const char *cfg = NULL, *out = NULL, *dt = "bf16";
    uint64_t seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) cfg = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--dtype")) dt = argv[i + 1];
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "make_random_model: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    int bf16 = !strcmp(dt, "bf16");
    if (!cfg || !out || (!bf16 && strcmp(dt, "f32"))) {
        fprintf(stderr, "usage: make_random_model --config CONFIG.json --out DIR "
                        "[--dtype bf16|f32] [--seed S]\n");
        return 2;
    }
    lt_model_config c;
    lt_status st = lt_model_config_load_hf(cfg, &c);
    if (st) return die(cfg, st);
    mkdir(out, 0755);
    char path[4096];
    { /* config.json: the given one, copied */
        char *text = NULL;
        size_t len = 0;
        if ((st = lt_file_read_all(cfg, &text, &len))) return die(cfg, st);
        snprintf(path, sizeof path, "%s/config.json", out);
        st = lt_file_write_atomic(path, text, len);
        free(text);
        if (st) return die(path, st);
    }
    int64_t D = c.dim, F = c.ffn_dim, V = c.vocab_size;
    int64_t QD = (int64_t)c.n_heads * c.head_dim, KD = (int64_t)c.n_kv_heads * c.head_dim;
    int nt = 0, cap = 16 + 12 * c.n_layers;
    tensor *t = calloc((size_t)cap, sizeof *t);
#define T2(nm, a, b) (snprintf(t[nt].name, 128, "%s", nm), t[nt].ndim = 2, t[nt].shape[0] = a, t[nt].shape[1] = b, nt++)
#define T1(nm, a) (snprintf(t[nt].name, 128, "%s", nm), t[nt].ndim = 1, t[nt].shape[0] = a, t[nt].norm = 1, nt++)
    char nm[128];
    T2("model.embed_tokens.weight", V, D);
    for (int l = 0; l < c.n_layers; l++) {
        static const char *sfx[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                    "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                    "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                    "mlp.down_proj.weight"};
        int64_t r[] = {QD, KD, KD, D, F, F, D}, k[] = {D, D, D, QD, D, D, F};
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        T1(nm, D);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        T1(nm, D);
        for (int j = 0; j < 7; j++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, sfx[j]);
            T2(nm, r[j], k[j]);
        }
    }
    T1("model.norm.weight", D);
    if (!c.tied_embeddings) T2("lm_head.weight", V, D);
    /* header */
    const int es = bf16 ? 2 : 4;
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    int64_t off = 0;
    for (int i = 0; i < nt; i++) {
        int64_t n = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        json_t *sh = t[i].ndim == 2 ? json_pack("[I,I]", (json_int_t)t[i].shape[0],
                                                (json_int_t)t[i].shape[1])
                                    : json_pack("[I]", (json_int_t)t[i].shape[0]);
        json_object_set_new(h, t[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", bf16 ? "BF16" : "F32",
                                      "shape", sh, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + n * es)));
        off += n * es;
    }
    char *hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    size_t hl = strlen(hs), pad = (8 - hl % 8) % 8;
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "make_random_model: %s: cannot create\n", path);
        return 1;
    }
    uint64_t hl8 = hl + pad;
    fwrite(&hl8, 8, 1, f);
    fwrite(hs, 1, hl, f);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', f);
    free(hs);
    /* data, 1 Mi values at a time */
    const int64_t chunk = 1 << 20;
    void *buf = malloc((size_t)(chunk * es));
    uint64_t s = seed;
    for (int i = 0; i < nt; i++) {
        int64_t n = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        for (int64_t a = 0; a < n; a += chunk) {
            int64_t m = n - a < chunk ? n - a : chunk;
            for (int64_t j = 0; j < m; j += 2) {
                float v0 = 1.0f, v1 = 1.0f;
                if (!t[i].norm) {
                    double u1 = ((splitmix(&s) >> 11) + 1.0) * 0x1.0p-53;
                    double u2 = (splitmix(&s) >> 11) * 0x1.0p-53;
                    double rr = 0.02 * sqrt(-2.0 * log(u1));
                    v0 = (float)(rr * cos(6.283185307179586 * u2));
                    v1 = (float)(rr * sin(6.283185307179586 * u2));
                }
                for (int q = 0; q < 2 && j + q < m; q++) {
                    float v = q ? v1 : v0;
                    if (bf16) ((uint16_t *)buf)[j + q] = lt_f32_to_bf16(v);
                    else ((float *)buf)[j + q] = v;
                }
            }
            if (fwrite(buf, (size_t)es, (size_t)m, f) != (size_t)m) {
                fprintf(stderr, "make_random_model: %s: write failed (disk full?)\n", path);
                return 1;
            }
        }
        if ((i + 1) % 32 == 0 || i + 1 == nt)
            fprintf(stderr, "make_random_model: %d/%d tensors\n", i + 1, nt);
    }
    free(buf);
    free(t);
    if (fclose(f)) {
        fprintf(stderr, "make_random_model: %s: write failed\n", path);
        return 1;
    }
    printf("%s: %lld parameters, %.2f GB\n", out, (long long)lt_model_config_n_params(&c),
           (double)(off + 8 + hl8) / 1e9);
    return 0;
}
