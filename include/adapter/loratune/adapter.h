/* adapter.h - LoRA / DoRA adapters outside the trainer: taken from a trainer, saved and loaded
 * in the formats other tools read (PEFT, mlx-lm, llama.cpp GGUF), applied at inference without
 * merging, and merged into a model's weights (loratune fuse).
 *
 * In memory an adapter is in the PEFT / Hugging Face layout whatever file it came from: per
 * adapted (layer, target) A [r][in], B [out][r] and, for DoRA, the magnitude [out], with
 * W' = W + scale * B A (LoRA) or mag / ||W + scale B A||_row * (W + scale B A) (DoRA, norm per
 * output row), scale = alpha / r (alpha / sqrt(r) with rslora). Readers convert: mlx-lm stores
 * A^T / B^T and its scale, llama.cpp permutes q/k rows of llama-arch models.
 *
 * Ownership: lt_adapter owns its tensors; models and trainers passed in are borrowed. */
#ifndef LORATUNE_ADAPTER_H
#define LORATUNE_ADAPTER_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/model.h"
#include "loratune/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float *A;   /* [r][in] */
    float *B;   /* [out][r] */
    float *mag; /* [out] (DoRA) or NULL */
    int in, out;
} lt_adapter_lin;

typedef struct lt_adapter {
    lt_train_method method; /* LT_METHOD_LORA or LT_METHOD_DORA */
    int r;
    float alpha;
    int rslora;
    float dropout;              /* recorded for the configs written (PEFT lora_dropout) */
    unsigned targets;           /* LT_TARGET_* */
    int n_layers;               /* of the model it belongs to */
    int layer_begin, layer_end; /* the adapted layers lie in [begin, end); targets is the
                                   union over them (readers and from_trainer set both) */
    char base_model[512];       /* name or path of the base (PEFT base_model_name_or_path) */
    lt_adapter_lin *lin;        /* [n_layers][LT_N_TARGETS]; A == NULL where not adapted */
} lt_adapter;

/* scale = alpha / r, or alpha / sqrt(r) with rslora. */
float lt_adapter_scale(const lt_adapter *a);
void lt_adapter_free(lt_adapter *a); /* safe on NULL */

/* A copy of a LoRA / DoRA trainer's current adapter (LT_ERR_ARG for full fine-tuning).
 * base_model may be NULL. *out is new. */
lt_status lt_adapter_from_trainer(const lt_trainer *tr, const char *base_model, lt_adapter **out);
/* Loads an adapter's values into a trainer built with the same method / r / targets / layers
 * (LT_ERR_ARG naming the first mismatch). */
lt_status lt_adapter_to_trainer(const lt_adapter *a, lt_trainer *tr);

/* Writers. dir is created if missing; files are written atomically. PEFT and mlx-lm need the
 * same targets on every layer of [layer_begin, layer_end) (LT_ERR_UNSUPPORTED otherwise);
 * mlx-lm also needs layer_end == the model's n_layers (it adapts the last num_layers layers)
 * and stores scale, not alpha (read back as alpha = scale * r, rslora 0). GGUF: DoRA is
 * LT_ERR_UNSUPPORTED (llama.cpp has none); rslora is written as alpha * sqrt(r) (llama.cpp
 * scales by alpha / r). docs/ADAPTERS.md has the layouts.
 *   PEFT:   dir/adapter_model.safetensors + dir/adapter_config.json
 *   mlx-lm: dir/adapters.safetensors + dir/adapter_config.json (mlx-lm's keys and layout)
 *   GGUF:   a llama.cpp LoRA adapter file (general.type = "adapter", adapter.type = "lora",
 *           adapter.lora.alpha, llama.cpp tensor names "blk.N.attn_q.weight.lora_a", q/k rows
 *           permuted for llama-arch models), f32 or f16. mc is the base model's config. */
lt_status lt_adapter_save_peft(const lt_adapter *a, const char *dir);
lt_status lt_adapter_save_mlx(const lt_adapter *a, const lt_model_config *mc, const char *dir);
lt_status lt_adapter_save_gguf(const lt_adapter *a, const lt_model_config *mc, lt_dtype dtype,
                               const char *path);

/* Reads a PEFT folder, an mlx-lm folder (told apart by their adapter_config.json) or a
 * llama.cpp adapter GGUF; checks every shape against mc and names the file and tensor on a
 * mismatch. A folder adapter's own file stands for its folder: DIR/adapter_model.safetensors
 * reads DIR as PEFT, DIR/adapters.safetensors as mlx-lm (LT_ERR_FORMAT when the
 * adapter_config.json beside it is the other kind's), DIR/adapter_config.json as DIR. Any
 * other file must be a GGUF (else LT_ERR_FORMAT saying what is expected). *out is new. */
lt_status lt_adapter_load(const char *path, const lt_model_config *mc, lt_adapter **out);

/* Inference without merging: the delta lt_model_forward / lt_generate take, which adds the
 * adapter's low-rank products (and DoRA's rescaling) to every adapted linear of m. It borrows
 * a's tensors (a must outlive it) and owns the rest: for DoRA the row factors
 * mag / ||W + scale B A||_row, computed here from m's weights read through the provider (m
 * loaded whole or lazily; create it again after changing them). m is borrowed only during the
 * call. LT_ERR_ARG when a's shapes do not fit m. *out is new (lt_adapter_delta_free), NULL on
 * error. */
lt_status lt_adapter_delta_create(const lt_adapter *a, const lt_model *m, lt_model_delta **out);
void lt_adapter_delta_free(lt_model_delta *d); /* safe on NULL */

/* Merges a into m's fp32 weights (W <- W'), as PEFT's merge_and_unload. */
lt_status lt_adapter_merge(lt_model *m, const lt_adapter *a);

#ifdef __cplusplus
}
#endif
#endif
