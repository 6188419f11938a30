/* sampler.h - next-token sampling and the generation loop.
 *
 * The sampler applies, in transformers' order, temperature, then top-k (keep every token whose
 * logit is >= the k-th largest), then top-p (nucleus: sort ascending, drop the tokens whose
 * cumulative probability is <= 1 - top_p, always keeping the most probable one), then draws
 * from the renormalised softmax with a seeded xoshiro256** generator: the same seed and the
 * same logits give the same ids on every machine. temperature <= 0 means greedy (argmax, the
 * first index on ties).
 *
 * Ownership: the sampler owns its scratch buffers (sized for vocab_size at create, so
 * sampling never allocates); logits passed in are borrowed (not modified). */
#ifndef LORATUNE_SAMPLER_H
#define LORATUNE_SAMPLER_H

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    uint64_t seed;
} lt_sampler_params;

typedef struct lt_sampler lt_sampler;

lt_status lt_sampler_create(const lt_sampler_params *p, int vocab_size, lt_sampler **out);
void lt_sampler_free(lt_sampler *s); /* safe on NULL */
/* Picks the next id from logits[vocab_size]. */
int32_t lt_sampler_sample(lt_sampler *s, const float *logits);
/* The generator itself (exposed for tests): next 64 bits, and a uniform double in [0, 1). */
uint64_t lt_sampler_next_u64(lt_sampler *s);
double lt_sampler_uniform(lt_sampler *s);

/* ---- generation loop ----------------------------------------------------------------- */
struct lt_model;
struct lt_model_delta;
struct lt_kv_cache;
struct lt_tokenizer;

/* Called for every generated token (not for a stop id) with the newly decodable text (may be
 * empty while a multi-byte UTF-8 character is still incomplete), and once more at the end
 * with id -1 if held-back text remains. Return non-zero to stop. */
typedef int (*lt_token_cb)(void *user, int32_t id, const char *text, size_t len);

typedef struct {
    int max_tokens;          /* new tokens at most */
    const int32_t *stop_ids; /* extra stop ids (e.g. "<|im_end|>"), borrowed; may be NULL */
    int n_stop_ids;
    int stop_at_eos;      /* stop at the model config's eos ids (and the tokenizer's) */
    lt_token_cb on_token; /* may be NULL */
    void *user;
} lt_generate_opts;

/* Runs prompt[0..n_prompt) through the model (one batched prefill), then samples up to
 * max_tokens ids. A stop id ends generation and is included in *out_ids but not printed.
 * delta: an adapter applied without merging (lt_adapter_delta_create), or NULL; borrowed.
 * tok may be NULL (no text callback then: on_token gets len 0). *out_ids (generated ids
 * only) is malloc'd, caller frees; out_ids may be NULL. The cache must hold
 * n_prompt + max_tokens positions (generation stops early at the context end). */
lt_status lt_generate(const struct lt_model *m, const struct lt_model_delta *delta,
                      struct lt_kv_cache *kv, const struct lt_tokenizer *tok, lt_sampler *s,
                      const int32_t *prompt, int n_prompt, const lt_generate_opts *o,
                      int32_t **out_ids, int *n_out);

/* The same loop one step at a time, for a caller that runs the forward itself (the server's
 * batched decode, lt_model_forward_batch): lt_generate is lt_model_forward over the prompt, then
 * lt_generation_step on each position's logits and lt_model_forward of the id it gives, then
 * lt_generation_finish. Sampling, stop ids, the streamed text and the ids are the same.
 * lt_generation_create checks the prompt against ctx (the cache's context) and copies *o (its
 * user pointer is kept). */
typedef struct lt_generation lt_generation;
lt_status lt_generation_create(const struct lt_model *m, const struct lt_tokenizer *tok, int ctx,
                               const int32_t *prompt, int n_prompt, const lt_generate_opts *o,
                               lt_generation **out);
/* Samples the next id from logits (the last position's), emits its text (on_token), and says
 * what comes next: *more 1: run *next at position *pos and call again with its logits; 0: done
 * (a stop id, max_tokens or the context reached, on_token asked to stop). */
lt_status lt_generation_step(lt_generation *g, lt_sampler *s, const float *logits, int32_t *next,
                             int *pos, int *more);
/* Flushes held-back text (on_token with id -1) and gives the generated ids (stop id included;
 * *out_ids malloc'd, may be NULL). */
lt_status lt_generation_finish(lt_generation *g, int32_t **out_ids, int *n_out);
int lt_generation_count(const lt_generation *g); /* ids generated so far */
void lt_generation_free(lt_generation *g);       /* safe on NULL */

#ifdef __cplusplus
}
#endif
#endif
