/* export.h - whole-model writers (loratune fuse): a model, usually with an adapter merged in
 * (lt_adapter_merge), written as a Hugging Face folder or a llama.cpp GGUF that transformers,
 * mlx-lm and llama.cpp load.
 *
 * The tokenizer and chat template travel with the weights; they come from the file or folder
 * the model was loaded from (src_model_path):
 *   - HF source folder: tokenizer.json / tokenizer_config.json / special_tokens_map.json /
 *     tokenizer.model / chat_template.jinja are copied (HF out), or turned into llama.cpp's
 *     tokenizer.ggml.* keys (GGUF out; byte-level BPE from tokenizer.json, sentencepiece from
 *     tokenizer.model).
 *   - GGUF source: the tokenizer.* keys are copied (GGUF out), or a tokenizer.json (byte-level
 *     BPE: vocab, merges, added tokens, the pre-tokenizer named by tokenizer.ggml.pre) and a
 *     tokenizer_config.json (chat template, bos/eos) are generated (HF out).
 * src_model_path may be NULL: then no tokenizer is written.
 *
 * Both writers read m (borrowed) and never change it; every file is written atomically
 * (temp file, fsync, rename). They hold the folder lock of lt_export_lock while they write:
 * LT_ERR_BUSY ("DIR: in use by another loratune process (pid N) ...") when a training run
 * or another export of another process is writing there. */
#ifndef LORATUNE_EXPORT_H
#define LORATUNE_EXPORT_H

#include "loratune/core.h"
#include "loratune/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dir (created if missing) receives config.json (architectures, model_type llama / mistral /
 * qwen2, hparams, tie_word_embeddings, rope_scaling, torch_dtype and dtype),
 * generation_config.json, model.safetensors (transformers' names, the tied lm_head omitted)
 * in dtype F32, BF16 or F16 (round to nearest even), and the tokenizer files.
 * LT_ERR_ARG for another dtype or released weights. */
lt_status lt_model_save_hf(const lt_model *m, const char *src_model_path, const char *dir,
                           lt_dtype dtype);

/* path receives a GGUF v3 file laid out as llama.cpp's convert_hf_to_gguf.py writes it:
 * general.architecture llama (for llama and mistral) or qwen2, the {arch}.* hparams, tensor
 * names token_embd / blk.N.* / output_norm / output (absent when tied), q/k rows permuted to
 * llama.cpp's interleaved rotary order for the llama arch, 1-D tensors F32 and 2-D tensors in
 * type F32, F16 or Q8_0 (Q8_0 needs rows that are a multiple of 32; those that are not stay
 * F16, as the converter does), general.file_type, tokenizer.* keys and the chat template. */
lt_status lt_model_save_gguf(const lt_model *m, const char *src_model_path, const char *path,
                             lt_dtype type);

/* The lock (lt_dir_lock_open) the writers take for out: for a Hugging Face folder (gguf 0),
 * the folder itself (created when missing); for a GGUF (gguf 1), the file's folder, and only
 * when a loratune writer has a lock file there (a run folder; *lock NULL otherwise). A lock
 * already held by this process is no conflict (*lock NULL). A caller may take it before the
 * slow load and merge, to fail early; the writers then run under it. When it takes a lock
 * (not one this process held), it removes the temp files (NAME.tmp.*) that a killed export
 * left of the names it writes there: the Hugging Face folder's files, or the GGUF's own name;
 * nothing else. Close with lt_dir_lock_close. */
lt_status lt_export_lock(const char *out, int gguf, lt_dir_lock **lock);

#ifdef __cplusplus
}
#endif
#endif
