/* tokenizer.h - text <-> token ids for every tokenizer kind loratune reads.
 *
 * Kinds: Hugging Face tokenizer.json (byte-level BPE as GPT-2/SmolLM/Llama 3/Qwen2, and
 * sentencepiece-style BPE with byte fallback as Llama 2/Mistral/TinyLlama), sentencepiece
 * tokenizer.model, llama2.c tokenizer.bin, and vocabularies embedded in GGUF files
 * (tokenizer.ggml.model "llama" or "gpt2"). One opaque handle; each kind fills in the ops
 * table in src/tokenizer/tokenizer_impl.h. */
#ifndef LORATUNE_TOKENIZER_H
#define LORATUNE_TOKENIZER_H

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_tokenizer lt_tokenizer;
struct lt_gguf;

/* Loads by path: a tokenizer.json, a tokenizer.model, a llama2.c tokenizer .bin, a .gguf
 * (embedded vocab), or a model folder (tokenizer.json preferred, then tokenizer.model). */
lt_status lt_tokenizer_load(const char *path, lt_tokenizer **out);
lt_status lt_tokenizer_load_hf(const char *tokenizer_json_path, lt_tokenizer **out);
lt_status lt_tokenizer_load_spm(const char *model_path, lt_tokenizer **out);
lt_status lt_tokenizer_load_llama2c(const char *bin_path, lt_tokenizer **out);
lt_status lt_tokenizer_load_gguf(const struct lt_gguf *g, lt_tokenizer **out);
void lt_tokenizer_free(lt_tokenizer *t); /* safe on NULL */

/* Encodes text (len bytes, need not be NUL-terminated). add_special: add BOS/EOS the way
 * the tokenizer's own config says (HF post-processor / add_bos_token; spm: BOS).
 * parse_special: recognise special/added tokens written in the text ("<|im_start|>").
 * *ids is malloc'd, caller frees. */
lt_status lt_tokenizer_encode(const lt_tokenizer *t, const char *text, size_t len,
                              int add_special, int parse_special, int32_t **ids, size_t *n);
/* Decodes ids to text as the reference decoder would (HF decode with
 * skip_special_tokens=skip_special). *text malloc'd, NUL-terminated, caller frees. */
lt_status lt_tokenizer_decode(const lt_tokenizer *t, const int32_t *ids, size_t n,
                              int skip_special, char **text, size_t *len);
/* The raw piece of one token (e.g. "Ġthe", "▁the", "<0x0A>"), NUL-terminated, or NULL. */
const char *lt_tokenizer_piece(const lt_tokenizer *t, int32_t id);
int32_t lt_tokenizer_vocab_size(const lt_tokenizer *t);
int32_t lt_tokenizer_bos(const lt_tokenizer *t); /* -1 if none */
int32_t lt_tokenizer_eos(const lt_tokenizer *t); /* -1 if none */
int lt_tokenizer_is_special(const lt_tokenizer *t, int32_t id);
int32_t lt_tokenizer_find(const lt_tokenizer *t, const char *piece); /* -1 if absent */
const char *lt_tokenizer_kind(const lt_tokenizer *t); /* "hf-bpe-bytelevel", "spm", ... */

/* The vocabulary of a sentencepiece tokenizer.model as plain arrays (what a GGUF's
 * tokenizer.ggml.tokens / scores / token_type carry): piece i's text, merge score and type
 * (sentencepiece's numbering, as GGUF's: 1 normal, 2 unknown, 3 control, 4 user-defined,
 * 5 unused, 6 byte), and the special ids (-1: none). The file is read and checked as
 * lt_tokenizer_load_spm does. Everything is owned by *out; lt_spm_vocab_free releases it
 * (safe on a zeroed struct, which is what *out is after an error). */
typedef struct {
    int32_t n;
    char **pieces;  /* [n], NUL-terminated */
    float *scores;  /* [n] */
    int32_t *types; /* [n] */
    int32_t unk_id, bos_id, eos_id, pad_id;
} lt_spm_vocab;
lt_status lt_spm_vocab_load(const char *model_path, lt_spm_vocab *out);
void lt_spm_vocab_free(lt_spm_vocab *v);

#ifdef __cplusplus
}
#endif
#endif
