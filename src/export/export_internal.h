/* export_internal.h - what the model writers share (internal to src/export/). */
#ifndef LT_EXPORT_INTERNAL_H
#define LT_EXPORT_INTERNAL_H

#include <jansson.h>

#include "loratune/export.h"
#include "loratune/gguf.h"

/* The files a Hugging Face folder export writes (NULL-terminated; save_hf.c). */
extern const char *const lt_export_hf_names[];
/* json_dumps (2-space indent, floats with 9 significant digits) + atomic write; takes no
 * reference. */
lt_status lt_export_write_json(const char *path, const json_t *j);
/* The shortest decimal that reads back as float f, as a double (1e-5f -> 1e-05, not
 * 9.99999975e-06), so written configs look like the ones transformers writes. */
double lt_export_float(float f);

/* From a gpt2 (byte-level BPE) GGUF vocabulary: dir/tokenizer.json and
 * dir/tokenizer_config.json (chat template, bos/eos/unk/pad, max length ctx). */
lt_status lt_export_hf_tokenizer_from_gguf(const lt_gguf *g, const char *dir, int ctx);
/* LT_OK when src (a GGUF) holds a vocabulary lt_export_hf_tokenizer_from_gguf converts;
 * else the error saying why. */
lt_status lt_export_check_gguf_vocab(const lt_gguf *g);

/* tokenizer.* keys for a GGUF, from src_model_path: copied from a GGUF source, built from an
 * HF folder's tokenizer.json (byte-level BPE) or tokenizer.model (sentencepiece), plus the
 * chat template. Nothing is set when src is a llama2.c .bin. */
lt_status lt_export_gguf_tokenizer(lt_gguf_writer *w, const char *src_model_path);

#endif
