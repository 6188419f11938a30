/* load_llama2c.c - llama2.c checkpoint (.bin, "legacy" version-0 export).
 *
 * Layout: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; vocab_size < 0 means an untied classifier follows), then float32 arrays
 * token_embedding (V,D), rms_att (L,D), wq (L,D,D), wk (L,KVD,D), wv (L,KVD,D), wo (L,D,D),
 * rms_ffn (L,D), w1 (L,F,D), w2 (L,D,F), w3 (L,F,D), rms_final (D),
 * freq_cis_real (seq, hd/2), freq_cis_imag (seq, hd/2), [wcls (V,D)].
 * Every header value is bounded before any arithmetic, and the file size must equal the size
 * the header implies exactly. llama2.c rotates interleaved pairs; q/k rows are permuted to
 * the HF half-split order here (see model.h). */
#include <stdio.h>
#include <string.h>

#include "loratune/quant.h"
#include "model_internal.h"

lt_status lt_model_load_llama2c(const char *path, const lt_model_load_opts *opts, lt_model **out) {
    *out = NULL;
    lt_mapped_file f;
    lt_status st = lt_file_map(path, &f);
    if (st) return st;
    if (f.size < 28) {
        size_t have = f.size;
        lt_file_unmap(&f);
        return lt_error(LT_ERR_FORMAT,
                        "%s: file has %zu bytes, shorter than the 28-byte llama2.c header", path,
                        have);
    }
    int32_t h[7];
    memcpy(h, f.data, sizeof h);
    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    static const int64_t maxv[7] = {LT_MAX_DIM,   LT_MAX_FFN,   LT_MAX_LAYERS, LT_MAX_HEADS,
                                    LT_MAX_HEADS, LT_MAX_VOCAB, LT_MAX_SEQ};
    int untied = h[5] < 0;
    int64_t hv[7];
    for (int i = 0; i < 7; i++) {
        hv[i] = i == 5 ? (h[5] < 0 ? -(int64_t)h[5] : h[5]) : h[i];
        if (hv[i] < 1 || hv[i] > maxv[i]) {
            lt_file_unmap(&f);
            return lt_error(LT_ERR_FORMAT, "%s: header: %s = %d: expected %s in [1, %lld]", path,
                            names[i], h[i], i == 5 ? "|vocab_size|" : "a value",
                            (long long)maxv[i]);
        }
    }
    int64_t D = hv[0], F = hv[1], L = hv[2], H = hv[3], KV = hv[4], V = hv[5], S = hv[6];
    if (D % H != 0 || H % KV != 0 || (D / H) % 2 != 0) {
        lt_file_unmap(&f);
        return lt_error(
            LT_ERR_FORMAT,
            "%s: header: expected n_heads (%lld) to divide dim (%lld) with an even head "
            "size, and n_kv_heads (%lld) to divide n_heads",
            path, (long long)H, (long long)D, (long long)KV);
    }
    int64_t hd = D / H, KD = KV * hd;
    int64_t floats = V * D + L * D + L * D * D + 2 * L * KD * D + L * D * D + L * D +
                     3 * L * F * D + D + 2 * S * (hd / 2) + (untied ? V * D : 0);
    int64_t expected = 28 + 4 * floats;
    if ((uint64_t)expected != f.size) {
        size_t have = f.size;
        lt_file_unmap(&f);
        return lt_error(LT_ERR_FORMAT,
                        "%s: header says %lld bytes (dim %lld, hidden_dim %lld, n_layers %lld, "
                        "n_heads %lld, n_kv_heads %lld, vocab_size %d, seq_len %lld), file has %zu",
                        path, (long long)expected, (long long)D, (long long)F, (long long)L,
                        (long long)H, (long long)KV, h[5], (long long)S, have);
    }

    lt_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = LT_ARCH_LLAMA;
    c.dim = (int)D;
    c.ffn_dim = (int)F;
    c.n_layers = (int)L;
    c.n_heads = (int)H;
    c.n_kv_heads = (int)KV;
    c.head_dim = (int)hd;
    c.vocab_size = (int)V;
    c.max_seq_len = (int)S;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = !untied;
    c.bos_id = V > 1 ? 1 : -1;
    c.eos_id = V > 2 ? 2 : -1;
    c.n_eos_ids = c.eos_id >= 0;
    c.eos_ids[0] = c.eos_id;
    c.dtype = LT_DTYPE_F32;
    lt_model *m;
    if ((st = lt_model_alloc(&c, LT_CONFIG_ONLY(opts), &m))) {
        lt_file_unmap(&f);
        return lt_error_wrap(st, path);
    }
    const uint8_t *p = f.data + 28;
#define TAKE(dst, count)                                                                           \
    do {                                                                                           \
        if (m->params) {                                                                           \
            char where_[600];                                                                      \
            snprintf(where_, sizeof where_, "%s: %s", path, &(#dst)[3]);                           \
            if ((st = lt_check_finite(LT_DTYPE_F32, p, (count), D, where_,                         \
                                      "the model file is damaged"))) {                             \
                lt_model_free(m);                                                                  \
                lt_file_unmap(&f);                                                                 \
                return st;                                                                         \
            }                                                                                      \
            memcpy((dst), p, (size_t)(count)*4);                                                   \
        }                                                                                          \
        p += (size_t)(count)*4;                                                                    \
        m->n_stored_tensors++;                                                                     \
        m->stored_dtype_tensors[LT_DTYPE_F32]++;                                                   \
        m->stored_dtype_params[LT_DTYPE_F32] += (count);                                           \
    } while (0)
    lt_model_weights *w = &m->w;
    TAKE(w->tok_embd, V * D);
    TAKE(w->attn_norm, L * D);
    TAKE(w->wq, L * D * D);
    TAKE(w->wk, L * KD * D);
    TAKE(w->wv, L * KD * D);
    TAKE(w->wo, L * D * D);
    TAKE(w->ffn_norm, L * D);
    TAKE(w->w_gate, L * F * D); /* w1 */
    TAKE(w->w_down, L * D * F); /* w2 */
    TAKE(w->w_up, L * F * D);   /* w3 */
    TAKE(w->out_norm, D);
    p += (size_t)(2 * S * (hd / 2)) * 4; /* freq_cis: we compute our own */
    if (untied) TAKE(w->lm_head, V * D);
#undef TAKE
    lt_file_unmap(&f);

    float *tmp = m->params ? lt_malloc(sizeof(float) * (size_t)(hd * D)) : NULL;
    if (m->params && !tmp) {
        lt_model_free(m);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int64_t l = 0; l < L && m->params; l++) {
        lt_permute_rows_interleaved_to_hf(w->wq + l * D * D, (int)H, (int)hd, D, tmp);
        lt_permute_rows_interleaved_to_hf(w->wk + l * KD * D, (int)KV, (int)hd, D, tmp);
    }
    free(tmp);
    m->format = LT_MODEL_FORMAT_LLAMA2C;
    m->file_bytes = (int64_t)expected;
    m->qk_permuted_at_load = 1;
    *out = m;
    return LT_OK;
}
