/* chat.h - chat templates: recognise a model's Jinja chat template and render conversations.
 *
 * A Hugging Face model ships its prompt format as a Jinja template (tokenizer_config.json
 * "chat_template", GGUF "tokenizer.chat_template"). loratune never executes Jinja: the
 * template string is data. It is compared against the real templates of the families we
 * know (ChatML incl. Qwen2 / SmolLM2, Llama 3 / 3.1, Llama 2, Mistral Instruct v0.1-v0.3,
 * Zephyr / TinyLlama), and a hand-written renderer per family produces the same bytes the
 * template would under transformers' Jinja settings (trim_blocks, lstrip_blocks).
 *
 * Recognition outcomes (see docs/CHAT_TEMPLATES.md):
 *  - exact:        the template equals a known one after a Jinja-aware normalisation that cannot
 *                  change its output (whitespace inside tags, quote style, comments, whitespace
 *                  removed by -/trim_blocks/lstrip_blocks). Rendering is byte-exact.
 *  - family-guess: distinctive markers ("<|im_start|>", "<|start_header_id|>", "[INST]",
 *                  "<<SYS>>", "<|user|>") name a family but the text differs from every known
 *                  template; we render that family's known format, which may differ.
 *  - unrecognised: no marker; a generic ChatML rendering is used (recognised = 0).
 *
 * Ownership: every lt_chat_template is owned by the caller and freed with
 * lt_chat_template_free; input strings are copied (borrowed only during the call). */
#ifndef LORATUNE_CHAT_H
#define LORATUNE_CHAT_H

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_chat_template lt_chat_template;
struct lt_gguf;

/* One message; both strings borrowed, NUL-terminated UTF-8. Roles: "system", "user",
 * "assistant" everywhere; "tool" only where the family's template renders it generically
 * (ChatML families, Llama 3.0). Anything else is LT_ERR_ARG naming the role and index. */
typedef struct {
    const char *role;
    const char *content;
} lt_chat_message;

/* Byte ranges of one message inside a rendering: [begin, end) is everything the template
 * emitted for it (headers, BOS/EOS included); [content_begin, content_end) is the message
 * text as emitted (after any trimming). For a system prompt that the template folds into a
 * user turn (Llama 2, Mistral) begin == end and the content range points inside that turn;
 * for a message the template drops (Mistral v0.3 system prompt when the last turn is not the
 * user's) all four are 0. Meant for loss masking (train on assistant content only). */
typedef struct {
    size_t begin, end;
    size_t content_begin, content_end;
} lt_chat_span;

/* Recognises a template string (len bytes, need not be NUL-terminated). Never fails on an
 * unknown template: it falls back to generic ChatML with recognised = 0. bos/eos start as ""
 * (use lt_chat_template_set_special). */
lt_status lt_chat_template_from_string(const char *jinja, size_t len, lt_chat_template **out);
/* Reads a tokenizer_config.json: "chat_template" as a string, or the list form
 * [{"name":..., "template":...}] (the entry named "default" is used); when the field is
 * absent, a chat_template.jinja next to the file is used. bos_token / eos_token are taken as
 * strings or {"content": ...} objects; absent or null -> "". */
lt_status lt_chat_template_from_config(const char *tokenizer_config_path, lt_chat_template **out);
/* Reads a GGUF's "tokenizer.chat_template"; bos/eos are the pieces of
 * tokenizer.ggml.bos_token_id / eos_token_id in tokenizer.ggml.tokens ("" if the id is absent).
 * g is borrowed. */
lt_status lt_chat_template_from_gguf(const struct lt_gguf *g, lt_chat_template **out);
/* Sets the strings the template knows as bos_token / eos_token (copied; NULL -> ""). */
lt_status lt_chat_template_set_special(lt_chat_template *t, const char *bos, const char *eos);
void lt_chat_template_free(lt_chat_template *t); /* safe on NULL */

/* "chatml", "llama3", "llama3.1", "llama2", "mistral", "zephyr". */
const char *lt_chat_template_family(const lt_chat_template *t);
/* The known template rendered: e.g. "qwen2-instruct", "smollm2-instruct", "llama3-instruct",
 * "mistral-7b-instruct-v0.3"; with a family guess, the template whose format is used;
 * "generic-chatml" when unrecognised. */
const char *lt_chat_template_name(const lt_chat_template *t);
int lt_chat_template_is_exact(const lt_chat_template *t);      /* 1 exact, 0 family-guess/unknown */
int lt_chat_template_is_recognised(const lt_chat_template *t); /* 0 only for the fallback */
const char *lt_chat_template_bos(const lt_chat_template *t);
const char *lt_chat_template_eos(const lt_chat_template *t);
/* The template text as given (NUL-terminated copy). */
const char *lt_chat_template_source(const lt_chat_template *t);

/* Renders n messages (n >= 1) as the template would with add_generation_prompt. *out is
 * malloc'd, NUL-terminated, caller frees. Errors (LT_ERR_ARG, message names the index and
 * role): empty conversation, unsupported role, roles breaking the alternation a template
 * enforces (Llama 2, Mistral), NULL role/content. */
lt_status lt_chat_render(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                         int add_generation_prompt, char **out);
/* Same, also giving the length and, if spans != NULL, filling spans[0..n) (one per message). */
lt_status lt_chat_render_spans(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                               int add_generation_prompt, char **out, size_t *out_len,
                               lt_chat_span *spans);

/* Tool definitions (function calling). 1 when the template renders a `tools` list: Llama 3.1
 * (tools in the first user message, tools_in_user_message's default) and Mistral v0.3
 * ([AVAILABLE_TOOLS] before the last user message). Other templates ignore tools or have no
 * such variable; loratune refuses to drop them silently. */
int lt_chat_template_supports_tools(const lt_chat_template *t);
/* lt_chat_render_spans with tools: tools_json is the UTF-8 JSON text of a list of tool
 * definitions as transformers' apply_chat_template(tools=...) passes them (JSON schemas,
 * {"type": "function", "function": {...}}); rendered byte-identically to Jinja with
 * transformers' tojson (json.dumps, ensure_ascii=False). NULL = no tools (same as
 * lt_chat_render_spans); an empty list "[]" renders as the template renders an empty list.
 * LT_ERR_UNSUPPORTED when the template does not render tools; assistant tool calls and tool
 * results are not supported. */
lt_status lt_chat_render_tools(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                               const char *tools_json, int add_generation_prompt, char **out,
                               size_t *out_len, lt_chat_span *spans);

#ifdef __cplusplus
}
#endif
#endif
