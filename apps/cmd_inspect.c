/* cmd_inspect.c - `loratune inspect MODEL`: architecture, config, parameter count, stored
 * tensor dtypes, file size, tokenizer and chat template of a model, as text or --json.
 *
 * The model is opened config-only (every tensor's presence and shape is checked, nothing is
 * converted), so inspecting a large model costs no memory. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: loratune inspect MODEL [--json] [--tokenizer FILE]\n\n"
           "MODEL is a Hugging Face folder, a .gguf file or a llama2.c .bin.\n"
           "  --json            print one JSON object\n"
           "  --tokenizer FILE  tokenizer to report (default: the model's own; a .bin has none)\n");
}

static const char *rope_name(lt_rope_scaling_type t) {
    return t == LT_ROPE_SCALING_LINEAR ? "linear" : t == LT_ROPE_SCALING_LLAMA3 ? "llama3" : "none";
}
static const char *format_name(lt_model_format f) {
    return f == LT_MODEL_FORMAT_HF ? "hf" : f == LT_MODEL_FORMAT_GGUF ? "gguf" : "llama2c";
}

/* a float32 value as the shortest decimal that reads back to it, not its double expansion */
static json_t *json_f32(float f) {
    char b[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, (double)f);
        if ((float)strtod(b, NULL) == f) break;
    }
    return json_real(strtod(b, NULL));
}

int cmd_inspect(int argc, char **argv) {
    const char *model = NULL, *tokfile = NULL;
    int json = 0;
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tokfile = argv[++i];
        else if (argv[i][0] != '-' && !model)
            model = argv[i];
        else {
            fprintf(stderr, "loratune inspect: unknown or incomplete option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    lt_model_load_opts opts = {.config_only = 1};
    lt_model *m = NULL;
    if (lt_model_load(model, &opts, &m) != LT_OK) {
        fprintf(stderr, "loratune inspect: %s\n", lt_errmsg());
        return 1;
    }
    lt_cli_model_warn(m, "inspect");
    const lt_model_config *c = &m->config;
    lt_tokenizer *tok = NULL;
    const char *tok_note = NULL;
    if (tokfile || m->format != LT_MODEL_FORMAT_LLAMA2C) {
        if (lt_tokenizer_load(tokfile ? tokfile : model, &tok) != LT_OK) tok_note = lt_errmsg();
    } else {
        tok_note = "none (a llama2.c .bin has no tokenizer: pass --tokenizer)";
    }
    char tok_note_copy[512] = "";
    if (tok_note) snprintf(tok_note_copy, sizeof tok_note_copy, "%s", tok_note);
    lt_chat_template *ct = NULL;
    char why[512] = "none";
    lt_status cst = lt_model_chat_template(model, tok, &ct);
    if (cst == LT_ERR_NOTFOUND)
        snprintf(why, sizeof why, "none");
    else if (cst)
        snprintf(why, sizeof why, "unreadable: %s", lt_errmsg());

    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(model));
    json_object_set_new(o, "format", json_string(format_name(m->format)));
    json_object_set_new(o, "file_bytes", json_integer(m->file_bytes));
    json_object_set_new(o, "architecture", json_string(lt_arch_name(c->arch)));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->ffn_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_f32(c->norm_eps));
    json_object_set_new(o, "rope_theta", json_f32(c->rope_theta));
    json_t *rs = json_object();
    json_object_set_new(rs, "type", json_string(rope_name(c->rope_scaling.type)));
    if (c->rope_scaling.type != LT_ROPE_SCALING_NONE)
        json_object_set_new(rs, "factor", json_f32(c->rope_scaling.factor));
    if (c->rope_scaling.type == LT_ROPE_SCALING_LLAMA3) {
        json_object_set_new(rs, "low_freq_factor", json_f32(c->rope_scaling.low_freq_factor));
        json_object_set_new(rs, "high_freq_factor", json_f32(c->rope_scaling.high_freq_factor));
        json_object_set_new(rs, "original_max_position_embeddings",
                            json_integer(c->rope_scaling.original_max_position_embeddings));
    }
    json_object_set_new(o, "rope_scaling", rs);
    json_object_set_new(o, "sliding_window", json_integer(c->sliding_window));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(o, "qkv_bias", json_boolean(c->qkv_bias));
    json_object_set_new(o, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(o, "eos_token_id", json_integer(c->eos_id));
    json_object_set_new(o, "torch_dtype", json_string(lt_dtype_name(c->dtype)));
    json_object_set_new(o, "parameters", json_integer(m->n_params));
    json_object_set_new(o, "stored_tensors", json_integer(m->n_stored_tensors));
    json_t *dts = json_object();
    for (int d = 0; d < LT_DTYPE_COUNT; d++) {
        if (!m->stored_dtype_tensors[d]) continue;
        json_t *e = json_object();
        json_object_set_new(e, "tensors", json_integer(m->stored_dtype_tensors[d]));
        json_object_set_new(e, "elements", json_integer(m->stored_dtype_params[d]));
        json_object_set_new(dts, lt_dtype_name((lt_dtype)d), e);
    }
    json_object_set_new(o, "stored_dtypes", dts);
    json_t *tj = json_object();
    if (tok) {
        json_object_set_new(tj, "kind", json_string(lt_tokenizer_kind(tok)));
        json_object_set_new(tj, "vocab_size", json_integer(lt_tokenizer_vocab_size(tok)));
        json_object_set_new(tj, "bos_token_id", json_integer(lt_tokenizer_bos(tok)));
        json_object_set_new(tj, "eos_token_id", json_integer(lt_tokenizer_eos(tok)));
    } else {
        json_object_set_new(tj, "kind", json_null());
        json_object_set_new(tj, "note", json_string(tok_note_copy));
    }
    json_object_set_new(o, "tokenizer", tj);
    json_t *cj = json_object();
    if (ct) {
        json_object_set_new(cj, "family", json_string(lt_chat_template_family(ct)));
        json_object_set_new(cj, "name", json_string(lt_chat_template_name(ct)));
        json_object_set_new(cj, "exact", json_boolean(lt_chat_template_is_exact(ct)));
        json_object_set_new(cj, "recognised", json_boolean(lt_chat_template_is_recognised(ct)));
    } else {
        json_object_set_new(cj, "family", json_null());
        json_object_set_new(cj, "note", json_string(why));
    }
    json_object_set_new(o, "chat_template", cj);

    if (json) {
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
        if (s) puts(s);
        free(s);
    } else {
        printf("model:           %s (%s, %lld bytes)\n", model, format_name(m->format),
               (long long)m->file_bytes);
        printf("architecture:    %s\n", lt_arch_name(c->arch));
        printf("hidden_size:     %d\nlayers:          %d\nheads:           %d (kv heads %d, "
               "head_dim %d)\n",
               c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim);
        printf("ffn size:        %d\nvocab_size:      %d\ncontext:         %d\n", c->ffn_dim,
               c->vocab_size, c->max_seq_len);
        printf("rms_norm_eps:    %g\nrope_theta:      %g\n", (double)c->norm_eps,
               (double)c->rope_theta);
        printf("rope_scaling:    %s", rope_name(c->rope_scaling.type));
        if (c->rope_scaling.type != LT_ROPE_SCALING_NONE)
            printf(" (factor %g)", (double)c->rope_scaling.factor);
        printf("\n");
        if (c->sliding_window) printf("sliding_window:  %d\n", c->sliding_window);
        printf("tied embeddings: %s\nqkv bias:        %s\n", c->tied_embeddings ? "yes" : "no",
               c->qkv_bias ? "yes" : "no");
        printf("bos / eos:       %d / %d", c->bos_id, c->eos_id);
        if (c->n_eos_ids > 1) printf(" (config lists %d eos ids; the first is used)", c->n_eos_ids);
        printf("\ndtype:           %s\n", lt_dtype_name(c->dtype));
        printf("parameters:      %lld\n", (long long)m->n_params);
        printf("stored tensors:  %d:", m->n_stored_tensors);
        for (int d = 0; d < LT_DTYPE_COUNT; d++)
            if (m->stored_dtype_tensors[d])
                printf(" %s x%d (%lld elements)", lt_dtype_name((lt_dtype)d),
                       m->stored_dtype_tensors[d], (long long)m->stored_dtype_params[d]);
        printf("\n");
        if (tok)
            printf("tokenizer:       %s, vocab %d\n", lt_tokenizer_kind(tok),
                   lt_tokenizer_vocab_size(tok));
        else
            printf("tokenizer:       %s\n", tok_note_copy);
        if (ct)
            printf("chat template:   %s (%s, %s)\n", lt_chat_template_family(ct),
                   lt_chat_template_name(ct),
                   lt_chat_template_is_exact(ct)        ? "exact match"
                   : lt_chat_template_is_recognised(ct) ? "family guess"
                                                        : "unrecognised");
        else
            printf("chat template:   %s\n", why);
    }
    json_decref(o);
    lt_chat_template_free(ct);
    lt_tokenizer_free(tok);
    lt_model_free(m);
    return 0;
}
