/* adapter_internal.h - helpers shared by the adapter readers and writers (internal).
 *
 * Per (layer, target) the in / out sizes come from the base model's config:
 *   q: D -> H*hd, k/v: D -> KV*hd, o: H*hd -> D, gate/up: D -> F, down: F -> D. */
#ifndef LT_ADAPTER_INTERNAL_H
#define LT_ADAPTER_INTERNAL_H

#include <jansson.h>

#include "loratune/adapter.h"

/* in / out of target t (0..6) under mc. */
void lt_adapter_dims_(const lt_model_config *mc, int t, int *in, int *out);
/* "self_attn.q_proj", ..., "mlp.down_proj" (the module path inside a layer). */
const char *lt_adapter_module_(int t);
/* A new adapter with every field set and lin[] zeroed (no tensors). */
lt_status lt_adapter_new_(lt_train_method method, int r, float alpha, int rslora, int n_layers,
                          lt_adapter **out);
/* Allocates the (zeroed) A, B and, with DoRA, mag of lin (l, t) for mc. */
lt_status lt_adapter_alloc_lin_(lt_adapter *a, const lt_model_config *mc, int l, int t);
/* Recomputes targets / layer_begin / layer_end from which lin[] have A. */
void lt_adapter_refresh_(lt_adapter *a);
/* The adapter's layers are every layer in [layer_begin, layer_end) and its targets the same in
 * each: what PEFT / mlx-lm configs can say. LT_ERR_UNSUPPORTED naming `what` otherwise. */
lt_status lt_adapter_check_regular_(const lt_adapter *a, const char *what);
/* Shapes of every lin against mc (LT_ERR_ARG naming `what`, the layer and target). */
/* NaN / inf in any tensor of a, or a non-finite scale: LT_ERR_FORMAT naming what (the file)
 * and the tensor (layers.L.MODULE.lora_A), followed by why. */
lt_status lt_adapter_check_finite_(const lt_adapter *a, const char *what, const char *why);
lt_status lt_adapter_check_fits_(const lt_adapter *a, const lt_model_config *mc, const char *what);
/* Creates dir (one level) if missing. */
lt_status lt_adapter_mkdir_(const char *dir);
/* Writes a JSON value to path atomically (2-space indent, sorted keys as PEFT writes). */
lt_status lt_adapter_write_json_(json_t *v, const char *path);
/* Converts a stored tensor view to fp32 into dst (n floats), transposing a [rows][cols]
 * stored matrix when transpose (dst is then [cols][rows]). */
lt_status lt_adapter_take_(const char *file, const lt_tensor_view *t, float *dst, int transpose);

/* "[2, 3]" */
void lt_adapter_shape_str_(const lt_tensor_view *t, char *buf, size_t n);

lt_status lt_adapter_load_peft_(const char *dir, json_t *cfg, const char *cfg_path,
                                const lt_model_config *mc, lt_adapter **out);
lt_status lt_adapter_load_mlx_(const char *dir, json_t *cfg, const char *cfg_path,
                               const lt_model_config *mc, lt_adapter **out);
lt_status lt_adapter_load_gguf_(const char *path, const lt_model_config *mc, lt_adapter **out);

#endif
