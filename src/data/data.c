/* data.c - fine-tuning data: records validated into conversations, tokenized with the model's
 * chat template into examples with a loss mask, kept per split with a summary.
 *
 * Semantics (docs/DATA.md; mlx-lm's tuner/datasets.py is the reference, TRL second):
 *   text        tokenize(text, add_special) + EOS when the last token is not EOS; loss on all.
 *   completions [{user: prompt}, {assistant: completion}] through the chat template.
 *   chat        messages (+ tools) through the chat template.
 *   alpaca      [system?] + [history pairs] + {user: instruction ["\n\n" + input]},
 *               {assistant: output}.
 *   sharegpt    [system?] + conversations with from human/gpt/system (also user/assistant).
 * Chat-shaped renderings are tokenized as a whole (add_special 0, specials parsed, as
 * transformers' apply_chat_template). Without train_on_prompt the loss covers every assistant
 * turn from the end of the generation prompt (see turn_begin) to the end of what the template
 * emits for it (end-of-turn marker included), which is mlx-lm's mask_prompt on the last turn
 * and TRL's assistant_only_loss on the others. Boundaries come from lt_chat_render_spans: the
 * rendering is tokenized piece by piece at the boundaries and the concatenation must equal the
 * whole tokenization; where it does not (a token straddles a boundary), each boundary is placed
 * after as many tokens as the rendering up to it tokenizes to (mlx-lm's way of placing its
 * mask_prompt offset).
 *
 * Invariants: mask[0] == 0 (the first token is never predicted); n <= max_seq_len; an example's
 * tokens and mask live in one allocation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "loratune/tokenizer.h"

static const char *const k_format_names[] = {"auto", "text",   "completions",
                                             "chat", "alpaca", "sharegpt"};
static const char *const k_split_names[] = {"train", "valid", "test"};

const char *lt_data_format_name(lt_data_format f) {
    return (unsigned)f <= LT_DATA_SHAREGPT ? k_format_names[f] : "?";
}

lt_status lt_data_format_parse(const char *s, lt_data_format *out) {
    if (!s) return lt_error(LT_ERR_ARG, "data format: NULL");
    for (int i = 0; i <= LT_DATA_SHAREGPT; i++)
        if (!strcmp(s, k_format_names[i])) {
            *out = (lt_data_format)i;
            return LT_OK;
        }
    if (!strcmp(s, "prompt-completion") || !strcmp(s, "completion")) {
        *out = LT_DATA_COMPLETIONS;
        return LT_OK;
    }
    if (!strcmp(s, "messages")) {
        *out = LT_DATA_CHAT;
        return LT_OK;
    }
    return lt_error(LT_ERR_ARG,
                    "data format '%s': expected auto, text, completions (prompt-completion), "
                    "chat (messages), alpaca or sharegpt",
                    s);
}

const char *lt_split_name(lt_split s) {
    return (unsigned)s < LT_SPLIT_COUNT ? k_split_names[s] : "?";
}

void lt_data_opts_default(lt_data_opts *o) {
    memset(o, 0, sizeof *o);
    o->format = LT_DATA_AUTO;
    o->max_seq_len = 2048;
    o->train_on_prompt = 0;
    o->valid_fraction = 0.1;
    o->seed = 42;
}

/* ---- the data object ----------------------------------------------------------------------- */
typedef struct {
    int present;
    lt_example *ex;
    int64_t n, cap;
    lt_data_summary sum;
} split_t;

struct lt_data {
    lt_data_format format;
    int max_seq_len;
    int has_tokens;
    split_t s[LT_SPLIT_COUNT];
};

static lt_status push_example(split_t *sp, const lt_example *e) {
    if (sp->n == sp->cap) {
        int64_t cap = sp->cap ? sp->cap * 2 : 256;
        lt_example *p = lt_realloc(sp->ex, (size_t)cap * sizeof *p);
        if (!p) return lt_error(LT_ERR_NOMEM, "out of memory holding the examples");
        sp->ex = p;
        sp->cap = cap;
    }
    sp->ex[sp->n++] = *e;
    return LT_OK;
}

/* ---- records -> conversations ------------------------------------------------------------ */
typedef struct {
    const char *text; /* TEXT */
    lt_chat_message *m;
    size_t n, cap;
    json_t *tools; /* borrowed from the record; NULL when absent / null / [] */
    char *owned[64];
    int n_owned;
} conv_t;

typedef struct {
    const char *path;
    int64_t line;
    lt_data_format format;
    const char *detected_at; /* "FILE:LINE" the format was detected from, or NULL if given */
    int train_on_prompt;
} rec_ctx;

static void conv_clear(conv_t *c) {
    for (int i = 0; i < c->n_owned; i++)
        free(c->owned[i]);
    free(c->m);
    memset(c, 0, sizeof *c);
}

static lt_status conv_push(conv_t *c, const char *role, const char *content) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        lt_chat_message *p = lt_realloc(c->m, cap * sizeof *p);
        if (!p) return lt_error(LT_ERR_NOMEM, "out of memory");
        c->m = p;
        c->cap = cap;
    }
    c->m[c->n].role = role;
    c->m[c->n].content = content;
    c->n++;
    return LT_OK;
}

static char *conv_own(conv_t *c, char *s) {
    if (!s) return NULL;
    if (c->n_owned == (int)(sizeof c->owned / sizeof c->owned[0])) {
        free(s);
        return NULL;
    }
    c->owned[c->n_owned++] = s;
    return s;
}

/* The format a record's keys suggest (mlx-lm's order first), AUTO when none. */
static lt_data_format format_of_keys(const json_t *r) {
    if (json_object_get(r, "prompt") && json_object_get(r, "completion"))
        return LT_DATA_COMPLETIONS;
    if (json_object_get(r, "messages")) return LT_DATA_CHAT;
    if (json_object_get(r, "text")) return LT_DATA_TEXT;
    if (json_object_get(r, "instruction") && json_object_get(r, "output")) return LT_DATA_ALPACA;
    if (json_object_get(r, "conversations")) return LT_DATA_SHAREGPT;
    return LT_DATA_AUTO;
}

static void keys_list(const json_t *r, char *buf, size_t cap) {
    const char *k;
    json_t *v;
    size_t n = 0;
    buf[0] = 0;
    json_object_foreach((json_t *)r, k, v) {
        (void)v;
        int w = snprintf(buf + n, cap - n, "%s'%s'", n ? ", " : "", k);
        if (w < 0 || (size_t)w >= cap - n) {
            if (cap > 4) strcpy(buf + cap - 4, "...");
            return;
        }
        n += (size_t)w;
    }
    if (!n) snprintf(buf, cap, "no keys");
}

/* A missing key: says whether the record looks like another format. */
static lt_status missing_key(const rec_ctx *x, const json_t *r, const char *key,
                             const char *needs) {
    lt_data_format other = format_of_keys(r);
    char from[600] = "";
    if (x->detected_at) snprintf(from, sizeof from, ", detected from %s", x->detected_at);
    if (other != LT_DATA_AUTO && other != x->format)
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: the record looks like '%s' data, but the data is '%s'%s: every "
                        "record must have the same format (%s)",
                        x->path, (long long)x->line, lt_data_format_name(other),
                        lt_data_format_name(x->format), from, needs);
    char keys[256];
    keys_list(r, keys, sizeof keys);
    return lt_error(LT_ERR_FORMAT,
                    "%s:%lld: '%s' is missing (the record has %s): '%s' data%s needs %s", x->path,
                    (long long)x->line, key, keys, lt_data_format_name(x->format), from, needs);
}

/* A string field. allow_empty: "" accepted. optional: absent / null -> *out = NULL. */
static lt_status str_field(const rec_ctx *x, const json_t *obj, const char *key, const char *field,
                           int optional, int allow_empty, const char **out) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (optional) return LT_OK;
        if (!v)
            return lt_error(LT_ERR_FORMAT, "%s:%lld: %s is missing: expected a string", x->path,
                            (long long)x->line, field);
    }
    if (!json_is_string(v))
        return lt_error(LT_ERR_FORMAT, "%s:%lld: %s must be a string, got %s", x->path,
                        (long long)x->line, field, lt_json_type_desc(v));
    if (!allow_empty && json_string_length(v) == 0)
        return lt_error(LT_ERR_FORMAT, "%s:%lld: %s must be a non-empty string", x->path,
                        (long long)x->line, field);
    if (!allow_empty) {
        /* "   " or "\n\t" is as empty as "": nothing to train on (or a field filled by mistake) */
        const char *t = json_string_value(v);
        size_t i = 0, n = json_string_length(v);
        while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
            i++;
        if (i == n)
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: %s holds only whitespace: expected a non-empty string",
                            x->path, (long long)x->line, field);
    }
    if (strlen(json_string_value(v)) != json_string_length(v))
        return lt_error(LT_ERR_FORMAT, "%s:%lld: %s contains a NUL character (\\u0000)", x->path,
                        (long long)x->line, field);
    *out = json_string_value(v);
    return LT_OK;
}

static lt_status tools_field(const rec_ctx *x, const json_t *r, conv_t *c) {
    json_t *t = json_object_get(r, "tools");
    if (!t || json_is_null(t)) return LT_OK;
    if (!json_is_array(t))
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: 'tools' must be a list of tool definitions (objects), got %s",
                        x->path, (long long)x->line, lt_json_type_desc(t));
    for (size_t i = 0; i < json_array_size(t); i++)
        if (!json_is_object(json_array_get(t, i)))
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: 'tools'[%zu] must be a tool definition (an object), got %s",
                            x->path, (long long)x->line, i,
                            lt_json_type_desc(json_array_get(t, i)));
    c->tools = t;
    return LT_OK;
}

static const char *canonical_role(const char *r) {
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(r, roles[i])) return roles[i];
    return NULL;
}

static lt_status chat_from_messages(const rec_ctx *x, const json_t *r, conv_t *c) {
    json_t *ms = json_object_get(r, "messages");
    if (!json_is_array(ms))
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: 'messages' must be a list of {role, content}, got %s", x->path,
                        (long long)x->line, lt_json_type_desc(ms));
    if (json_array_size(ms) == 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: 'messages' is an empty list: expected a list of {role, content}",
                        x->path, (long long)x->line);
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        char f[64];
        if (!json_is_object(m))
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: 'messages'[%zu] must be an object {role, content}, got %s",
                            x->path, (long long)x->line, i, lt_json_type_desc(m));
        const char *role, *content;
        snprintf(f, sizeof f, "'messages'[%zu].role", i);
        lt_status st = str_field(x, m, "role", f, 0, 0, &role);
        if (st) return st;
        const char *cr = canonical_role(role);
        if (!cr)
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: %s: unknown role '%s': expected system, user, assistant or "
                            "tool",
                            x->path, (long long)x->line, f, role);
        if (json_object_get(m, "tool_calls") && !json_is_null(json_object_get(m, "tool_calls")))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s:%lld: 'messages'[%zu].tool_calls: assistant tool calls are not "
                            "supported yet (tool definitions in 'tools' are)",
                            x->path, (long long)x->line, i);
        snprintf(f, sizeof f, "'messages'[%zu].content", i);
        json_t *cv = json_object_get(m, "content");
        if (cv && json_is_array(cv))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s:%lld: %s is a list of parts: expected a string (multi-part "
                            "content is not supported)",
                            x->path, (long long)x->line, f);
        if ((st = str_field(x, m, "content", f, 0, 0, &content))) return st;
        if ((st = conv_push(c, cr, content))) return st;
    }
    return tools_field(x, r, c);
}

static lt_status chat_from_sharegpt(const rec_ctx *x, const json_t *r, conv_t *c) {
    const char *sys;
    lt_status st = str_field(x, r, "system", "'system'", 1, 1, &sys);
    if (st) return st;
    if (sys && *sys && (st = conv_push(c, "system", sys))) return st;
    json_t *cs = json_object_get(r, "conversations");
    if (!json_is_array(cs))
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: 'conversations' must be a list of {from, value}, got %s", x->path,
                        (long long)x->line, lt_json_type_desc(cs));
    if (json_array_size(cs) == 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s:%lld: 'conversations' is an empty list: expected a list of "
                        "{from, value}",
                        x->path, (long long)x->line);
    for (size_t i = 0; i < json_array_size(cs); i++) {
        json_t *m = json_array_get(cs, i);
        char f[64];
        if (!json_is_object(m))
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: 'conversations'[%zu] must be an object {from, value}, got %s",
                            x->path, (long long)x->line, i, lt_json_type_desc(m));
        const char *from, *value, *role = NULL;
        snprintf(f, sizeof f, "'conversations'[%zu].from", i);
        if ((st = str_field(x, m, "from", f, 0, 0, &from))) return st;
        if (!strcmp(from, "human") || !strcmp(from, "user"))
            role = "user";
        else if (!strcmp(from, "gpt") || !strcmp(from, "assistant"))
            role = "assistant";
        else if (!strcmp(from, "system"))
            role = "system";
        else
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: %s: unknown speaker '%s': expected human, gpt or system "
                            "(also user, assistant)",
                            x->path, (long long)x->line, f, from);
        snprintf(f, sizeof f, "'conversations'[%zu].value", i);
        if ((st = str_field(x, m, "value", f, 0, 0, &value))) return st;
        if ((st = conv_push(c, role, value))) return st;
    }
    return tools_field(x, r, c);
}

static lt_status chat_from_alpaca(const rec_ctx *x, const json_t *r, conv_t *c) {
    const char *sys, *ins, *inp, *out;
    lt_status st;
    if ((st = str_field(x, r, "system", "'system'", 1, 1, &sys))) return st;
    if ((st = str_field(x, r, "instruction", "'instruction'", 0, 0, &ins))) return st;
    if ((st = str_field(x, r, "input", "'input'", 1, 1, &inp))) return st;
    if ((st = str_field(x, r, "output", "'output'", 0, 0, &out))) return st;
    if (sys && *sys && (st = conv_push(c, "system", sys))) return st;
    json_t *h = json_object_get(r, "history");
    if (h && !json_is_null(h)) {
        if (!json_is_array(h))
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: 'history' must be a list of [instruction, output] pairs, "
                            "got %s",
                            x->path, (long long)x->line, lt_json_type_desc(h));
        for (size_t i = 0; i < json_array_size(h); i++) {
            json_t *p = json_array_get(h, i);
            if (!json_is_array(p) || json_array_size(p) != 2 ||
                !json_is_string(json_array_get(p, 0)) || !json_is_string(json_array_get(p, 1)) ||
                !json_string_length(json_array_get(p, 0)) ||
                !json_string_length(json_array_get(p, 1)))
                return lt_error(LT_ERR_FORMAT,
                                "%s:%lld: 'history'[%zu] must be a pair [instruction, output] "
                                "of non-empty strings",
                                x->path, (long long)x->line, i);
            if ((st = conv_push(c, "user", json_string_value(json_array_get(p, 0)))) ||
                (st = conv_push(c, "assistant", json_string_value(json_array_get(p, 1)))))
                return st;
        }
    }
    const char *user = ins;
    if (inp && *inp) {
        size_t a = strlen(ins), b = strlen(inp);
        char *u = conv_own(c, lt_malloc(a + b + 3));
        if (!u) return lt_error(LT_ERR_NOMEM, "out of memory");
        memcpy(u, ins, a);
        memcpy(u + a, "\n\n", 2);
        memcpy(u + a + 2, inp, b + 1);
        user = u;
    }
    if ((st = conv_push(c, "user", user)) || (st = conv_push(c, "assistant", out))) return st;
    return LT_OK;
}

/* Validates record r (of format x->format) into c. */
static lt_status record_to_conv(const rec_ctx *x, const json_t *r, conv_t *c) {
    lt_status st;
    switch (x->format) {
    case LT_DATA_TEXT:
        if (!json_object_get(r, "text")) return missing_key(x, r, "text", "'text'");
        return str_field(x, r, "text", "'text'", 0, 0, &c->text);
    case LT_DATA_COMPLETIONS: {
        const char *p, *q;
        if (!json_object_get(r, "prompt"))
            return missing_key(x, r, "prompt", "'prompt' and 'completion'");
        if (!json_object_get(r, "completion"))
            return missing_key(x, r, "completion", "'prompt' and 'completion'");
        if ((st = str_field(x, r, "prompt", "'prompt'", 0, 0, &p))) return st;
        if ((st = str_field(x, r, "completion", "'completion'", 0, 0, &q))) return st;
        if ((st = conv_push(c, "user", p)) || (st = conv_push(c, "assistant", q))) return st;
        return tools_field(x, r, c);
    }
    case LT_DATA_CHAT:
        if (!json_object_get(r, "messages"))
            return missing_key(x, r, "messages", "'messages': a list of {role, content}");
        return chat_from_messages(x, r, c);
    case LT_DATA_ALPACA:
        if (!json_object_get(r, "instruction"))
            return missing_key(x, r, "instruction", "'instruction' and 'output'");
        if (!json_object_get(r, "output"))
            return missing_key(x, r, "output", "'instruction' and 'output'");
        return chat_from_alpaca(x, r, c);
    case LT_DATA_SHAREGPT:
        if (!json_object_get(r, "conversations"))
            return missing_key(x, r, "conversations", "'conversations': a list of {from, value}");
        return chat_from_sharegpt(x, r, c);
    default:
        return lt_error(LT_ERR_INTERNAL, "data: bad format %d", x->format);
    }
}

/* ---- tokenization -------------------------------------------------------------------------- */
typedef struct {
    const lt_tokenizer *tok;
    const lt_chat_template *tpl;
    const lt_data_opts *o;
    int64_t n_fallback;
    int64_t n_records; /* read so far, every file (the progress hook) */
} tok_ctx;

static int64_t utf8_chars(const char *s) {
    int64_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

/* Token index of byte boundary `at` of the rendering r when a token straddles it: the number of
 * tokens r[0..at) tokenizes to, as mlx-lm places its mask_prompt offset (len of the tokenized
 * prompt). */
static lt_status boundary_by_prefix(const tok_ctx *k, const char *r, size_t at, size_t n,
                                    size_t *out) {
    int32_t *p = NULL;
    size_t np = 0;
    lt_status st = lt_tokenizer_encode(k->tok, r, at, 0, 1, &p, &np);
    if (st) return st;
    *out = np < n ? np : n;
    free(p);
    return LT_OK;
}

/* Loss mask of a chat rendering r[0..len) tokenized as ids[0..n): 1 on the tokens of every
 * assistant turn [content_begin, end). *fallback = 1 when the boundaries had to come from
 * prefix tokenizations. */
/* Byte offset where assistant turn i's loss starts: right after the generation prompt, i.e.
 * where a model starts generating at inference (mlx-lm's offset is the length of
 * render(msgs[:i], add_generation_prompt=True)). The generation prompt g is what
 * add_generation_prompt adds to render(msgs[:i]): ChatML's "<|im_start|>assistant\n", Llama 3's
 * header, and nothing for Mistral / Llama 2 (their " " before the content is the model's to
 * generate). The turn must start with g; otherwise (or for a first-message turn) the content's
 * start is used. */
static lt_status turn_begin(const tok_ctx *k, const conv_t *c, const char *tools_json, size_t i,
                            const lt_chat_span *sp, const char *r, size_t *out) {
    size_t cb = sp[i].content_begin;
    *out = cb;
    if (i == 0) return LT_OK;
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    lt_status sa = lt_chat_render_tools(k->tpl, c->m, i, tools_json, 1, &a, &la, NULL);
    lt_status sb = sa ? sa : lt_chat_render_tools(k->tpl, c->m, i, tools_json, 0, &b, &lb, NULL);
    if (sa == LT_OK && sb == LT_OK && la >= lb && !memcmp(a, b, lb)) {
        size_t g = la - lb, s0 = sp[i].begin;
        if (s0 + g <= cb && !memcmp(r + s0, a + lb, g)) *out = s0 + g;
    }
    free(a);
    free(b);
    /* a prefix the template cannot render: the content's start; out of memory is an error */
    return sb == LT_ERR_NOMEM ? sb : LT_OK;
}

static lt_status chat_mask(tok_ctx *k, const conv_t *c, const char *tools_json,
                           const lt_chat_span *sp, const char *r, size_t len, const int32_t *ids,
                           size_t n, uint8_t *mask, int *fallback) {
    /* boundary byte offsets, ascending: b0 e0 b1 e1 ... (assistant turns) */
    size_t nb = 0, *bd = lt_malloc((2 * c->n + 2) * sizeof *bd);
    if (!bd) return lt_error(LT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->m[i].role, "assistant") || sp[i].end <= sp[i].content_begin) continue;
        size_t b, e = sp[i].end;
        lt_status st = turn_begin(k, c, tools_json, i, sp, r, &b);
        if (st) {
            free(bd);
            return st;
        }
        if (nb && b < bd[nb - 1]) b = bd[nb - 1];
        bd[nb++] = b;
        bd[nb++] = e;
    }
    memset(mask, 0, n);
    *fallback = 0;
    lt_status st = LT_OK;
    size_t *tb = lt_malloc((nb + 1) * sizeof *tb); /* token index of each boundary */
    if (!tb) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* piecewise tokenization */
    size_t nc = 0, prev = 0;
    int same = 1;
    for (size_t j = 0; j <= nb && same; j++) {
        size_t at = j < nb ? bd[j] : len;
        if (at > prev) {
            int32_t *p = NULL;
            size_t np = 0;
            if ((st = lt_tokenizer_encode(k->tok, r + prev, at - prev, 0, 1, &p, &np))) goto done;
            if (nc + np > n) same = 0;
            for (size_t t = 0; t < np && same; t++)
                if (ids[nc + t] != p[t]) same = 0;
            nc += np;
            free(p);
        }
        if (j < nb) tb[j] = nc;
        prev = at;
    }
    if (!same || nc != n) {
        *fallback = 1;
        for (size_t j = 0; j < nb; j++)
            if ((st = boundary_by_prefix(k, r, bd[j], n, &tb[j]))) goto done;
    }
    for (size_t j = 0; j + 1 < nb; j += 2)
        for (size_t t = tb[j]; t < tb[j + 1] && t < n; t++)
            mask[t] = 1;
    mask[0] = 0;
done:
    free(bd);
    free(tb);
    return st;
}

static lt_status tokenize_conv(tok_ctx *k, const rec_ctx *x, lt_data_format fmt, conv_t *c,
                               lt_example *e, int *fallback) {
    int32_t *ids = NULL;
    size_t n = 0;
    char *r = NULL, *tools_json = NULL;
    lt_chat_span *sp = NULL;
    lt_status st = LT_OK;
    *fallback = 0;
    memset(e, 0, sizeof *e);
    e->line = x->line;
    if (fmt == LT_DATA_TEXT) {
        if ((st = lt_tokenizer_encode(k->tok, c->text, strlen(c->text), 1, 1, &ids, &n))) goto done;
        int32_t eos = lt_tokenizer_eos(k->tok);
        if (eos >= 0 && (n == 0 || ids[n - 1] != eos)) {
            int32_t *p = lt_realloc(ids, (n + 1) * sizeof *p);
            if (!p) {
                st = lt_error(LT_ERR_NOMEM, "out of memory");
                goto done;
            }
            ids = p;
            ids[n++] = eos;
        }
    } else {
        if (!k->tpl) {
            st = lt_error(LT_ERR_UNSUPPORTED,
                          "%s:%lld: '%s' data is rendered with the model's chat template, and "
                          "the model has none (use 'text' data, or a model with a chat template)",
                          x->path, (long long)x->line, lt_data_format_name(fmt));
            goto done;
        }
        if (c->tools && !lt_chat_template_supports_tools(k->tpl) && json_array_size(c->tools)) {
            st = lt_error(LT_ERR_UNSUPPORTED,
                          "%s:%lld: 'tools': the chat template '%s' does not render tool "
                          "definitions (llama3.1-instruct and mistral-7b-instruct-v0.3 do)",
                          x->path, (long long)x->line, lt_chat_template_name(k->tpl));
            goto done;
        }
        if (c->tools && lt_chat_template_supports_tools(k->tpl)) {
            tools_json = json_dumps(c->tools, JSON_COMPACT);
            if (!tools_json) {
                st = lt_error(LT_ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        if (!k->o->train_on_prompt) {
            int any = 0;
            for (size_t i = 0; i < c->n; i++)
                any |= !strcmp(c->m[i].role, "assistant");
            if (!any) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s:%lld: the conversation has no assistant turn: nothing to "
                              "train on (expected at least one assistant message, or train on "
                              "the prompt)",
                              x->path, (long long)x->line);
                goto done;
            }
        }
        sp = lt_calloc(c->n, sizeof *sp);
        if (!sp) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        size_t len = 0;
        if ((st = lt_chat_render_tools(k->tpl, c->m, c->n, tools_json, 0, &r, &len, sp))) {
            char where[600];
            snprintf(where, sizeof where, "%s:%lld", x->path, (long long)x->line);
            st = lt_error_wrap(st == LT_ERR_NOMEM ? st : LT_ERR_FORMAT, where);
            goto done;
        }
        if ((st = lt_tokenizer_encode(k->tok, r, len, 0, 1, &ids, &n))) goto done;
        e->tokens = ids;
        e->n = (int)n;
        ids = NULL; /* e owns them: freed once, below, on an error */
        e->mask = lt_malloc(n ? n : 1);
        if (!e->mask) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (k->o->train_on_prompt) {
            memset(e->mask, 1, n);
            if (n) e->mask[0] = 0;
        } else if ((st = chat_mask(k, c, tools_json, sp, r, len, e->tokens, n, e->mask,
                                   fallback))) {
            goto done;
        }
    }
    if (ids) {
        e->tokens = ids;
        e->n = (int)n;
        ids = NULL;
        e->mask = lt_malloc(n ? n : 1);
        if (!e->mask) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        memset(e->mask, 1, n);
        if (n) e->mask[0] = 0;
    }
    if (e->n < 2 && st == LT_OK)
        st = lt_error(LT_ERR_FORMAT,
                      "%s:%lld: the record tokenizes to %d token(s): expected at "
                      "least 2 (one to predict from, one to predict)",
                      x->path, (long long)x->line, e->n);
    e->n_orig = e->n;
    if (st == LT_OK && e->n > k->o->max_seq_len) e->n = k->o->max_seq_len;
done:
    if (st) {
        free(e->tokens);
        free(e->mask);
        e->tokens = NULL;
        e->mask = NULL;
    }
    free(ids);
    free(r);
    free(sp);
    free(tools_json);
    return st;
}

int64_t lt_data_record_limit(int max_seq_len) {
    int64_t l = (int64_t)LT_DATA_RECORD_BYTES_PER_TOKEN * (max_seq_len > 0 ? max_seq_len : 0);
    return l > LT_DATA_RECORD_MIN_LIMIT ? l : LT_DATA_RECORD_MIN_LIMIT;
}

/* Bytes of text the record would tokenize (before the chat template's own few). */
static int64_t conv_bytes(const conv_t *c) {
    int64_t n = c->text ? (int64_t)strlen(c->text) : 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].content) n += (int64_t)strlen(c->m[i].content);
    return n;
}

/* ---- files and splits ------------------------------------------------------------------- */
static lt_status load_file(lt_data *d, const char *path, split_t *sp, tok_ctx *k,
                           lt_data_format *fmt, char *detected_at, size_t da_cap) {
    lt_data_reader rd;
    lt_status st = lt_data_reader_open(path, &rd);
    if (st) return st;
    sp->present = 1;
    snprintf(sp->sum.source, sizeof sp->sum.source, "%s", path);
    for (;;) {
        json_t *rec;
        int64_t line;
        if ((st = lt_data_reader_next(&rd, &rec, &line))) break;
        if (!rec) break;
        if (*fmt == LT_DATA_AUTO) {
            *fmt = format_of_keys(rec);
            if (*fmt == LT_DATA_AUTO) {
                char keys[256];
                keys_list(rec, keys, sizeof keys);
                st = lt_error(LT_ERR_FORMAT,
                              "%s:%lld: can't tell the data format from the record's keys (%s): "
                              "expected 'text', 'prompt' + 'completion', 'messages' (chat), "
                              "'instruction' + 'output' (alpaca) or 'conversations' (sharegpt), "
                              "or a format given explicitly",
                              path, (long long)line, keys);
                json_decref(rec);
                break;
            }
            snprintf(detected_at, da_cap, "%s:%lld", path, (long long)line);
        }
        rec_ctx x = {path, line, *fmt, detected_at[0] ? detected_at : NULL, k->o->train_on_prompt};
        conv_t c = {0};
        st = record_to_conv(&x, rec, &c);
        if (st == LT_OK) {
            int64_t nb = conv_bytes(&c), lim = lt_data_record_limit(k->o->max_seq_len);
            if (nb > lim)
                st = lt_error(LT_ERR_FORMAT,
                              "%s:%lld: the record holds %lld bytes of text, more than the "
                              "limit of %lld bytes per record (%d bytes per token of "
                              "max_seq_len %d, at least %d MiB): only the first %d tokens "
                              "would be used; split it into records, or raise max_seq_len",
                              path, (long long)line, (long long)nb, (long long)lim,
                              LT_DATA_RECORD_BYTES_PER_TOKEN, k->o->max_seq_len,
                              LT_DATA_RECORD_MIN_LIMIT >> 20, k->o->max_seq_len);
        }
        lt_example e = {0};
        int fb = 0;
        if (st == LT_OK) {
            if (k->tok) {
                st = tokenize_conv(k, &x, *fmt, &c, &e, &fb);
            } else {
                /* structure only: length in characters of the text fields */
                int64_t chars = 0;
                if (c.text) chars = utf8_chars(c.text);
                for (size_t i = 0; i < c.n; i++)
                    chars += utf8_chars(c.m[i].content);
                e.line = line;
                e.n_orig = (int)(chars > 0x7fffffff ? 0x7fffffff : chars);
                e.n = e.n_orig;
            }
        }
        conv_clear(&c);
        json_decref(rec);
        if (st) break;
        e.mask_fallback = fb;
        if ((st = push_example(sp, &e))) {
            free(e.tokens);
            free(e.mask);
            break;
        }
        if (k->o->progress && k->o->progress(k->o->progress_ctx, ++k->n_records)) {
            st = lt_error(LT_ERR_CANCELLED, "%s:%lld: reading stopped on request", path,
                          (long long)line);
            break;
        }
    }
    lt_data_reader_close(&rd);
    (void)d;
    return st;
}

static void summarize(const lt_data *d, split_t *sp) {
    lt_data_summary *s = &sp->sum;
    s->format = d->format;
    s->counts_tokens = d->has_tokens;
    s->n_examples = sp->n;
    s->n_tokens = s->n_loss_tokens = s->n_truncated = s->n_no_loss = s->n_mask_fallback = 0;
    s->min_len = sp->n ? 0x7fffffff : 0;
    s->max_len = 0;
    double sum = 0;
    for (int64_t i = 0; i < sp->n; i++) {
        const lt_example *e = &sp->ex[i];
        s->n_tokens += e->n;
        if (e->n_orig > e->n) s->n_truncated++;
        s->n_mask_fallback += e->mask_fallback != 0;
        if (e->n_orig < s->min_len) s->min_len = e->n_orig;
        if (e->n_orig > s->max_len) s->max_len = e->n_orig;
        sum += e->n_orig;
        if (e->mask) {
            int64_t l = 0;
            for (int t = 0; t < e->n; t++)
                l += e->mask[t];
            s->n_loss_tokens += l;
            if (!l) s->n_no_loss++;
        }
    }
    s->mean_len = sp->n ? sum / (double)sp->n : 0;
    /* buckets [0, 2^k), [2^k, 2^(k+1)), ... up past max_len; at most 16 */
    int k = 4;
    for (;;) {
        int nb = 1;
        int64_t edge = (int64_t)1 << k;
        while (edge <= s->max_len) {
            edge *= 2;
            nb++;
        }
        if (nb <= 16) {
            s->n_buckets = nb;
            break;
        }
        k++;
    }
    memset(s->hist, 0, sizeof s->hist);
    s->hist_edges[0] = 0;
    for (int b = 1; b <= s->n_buckets; b++) {
        int64_t v = (int64_t)1 << (k + b - 1);
        s->hist_edges[b] = v > 0x7fffffff ? 0x7fffffff : (int)v;
    }
    for (int64_t i = 0; i < sp->n; i++) {
        int b = 0;
        while (b + 1 < s->n_buckets && sp->ex[i].n_orig >= s->hist_edges[b + 1])
            b++;
        s->hist[b]++;
    }
}

static void free_split(split_t *sp) {
    for (int64_t i = 0; i < sp->n; i++) {
        free(sp->ex[i].tokens);
        free(sp->ex[i].mask);
    }
    free(sp->ex);
    memset(sp, 0, sizeof *sp);
}

void lt_data_free(lt_data *d) {
    if (!d) return;
    for (int s = 0; s < LT_SPLIT_COUNT; s++)
        free_split(&d->s[s]);
    free(d);
}

/* Single file: a seeded choice of round(valid_fraction * n) examples (at least 1 when n >= 2
 * and the fraction is > 0; never all of them) goes to valid; both keep file order. */
static lt_status split_single(lt_data *d, const lt_data_opts *o) {
    split_t *tr = &d->s[LT_SPLIT_TRAIN], *va = &d->s[LT_SPLIT_VALID];
    int64_t n = tr->n;
    int64_t nv = (int64_t)llround(o->valid_fraction * (double)n);
    if (o->valid_fraction > 0 && n >= 2 && nv < 1) nv = 1;
    if (nv >= n) nv = n - 1;
    if (nv <= 0) return LT_OK;
    int64_t *perm = lt_malloc((size_t)n * sizeof *perm);
    uint8_t *is_valid = lt_calloc((size_t)n, 1);
    lt_example *keep = lt_malloc((size_t)(n - nv) * sizeof *keep);
    lt_example *val = lt_malloc((size_t)nv * sizeof *val);
    if (!perm || !is_valid || !keep || !val) {
        free(perm);
        free(is_valid);
        free(keep);
        free(val);
        return lt_error(LT_ERR_NOMEM, "out of memory splitting the data");
    }
    lt_data_permute(perm, n, o->seed, 0x5eed5717ull);
    for (int64_t i = 0; i < nv; i++)
        is_valid[perm[i]] = 1;
    int64_t a = 0, b = 0;
    for (int64_t i = 0; i < n; i++) {
        if (is_valid[i])
            val[b++] = tr->ex[i];
        else
            keep[a++] = tr->ex[i];
    }
    free(tr->ex);
    tr->ex = keep;
    tr->n = tr->cap = a;
    va->ex = val;
    va->n = va->cap = b;
    va->present = 1;
    char src[sizeof tr->sum.source];
    snprintf(src, sizeof src, "%s", tr->sum.source);
    snprintf(tr->sum.source, sizeof tr->sum.source, "%.400s (%.0f%% split, seed %llu)", src,
             100.0 * (double)a / (double)n, (unsigned long long)o->seed);
    snprintf(va->sum.source, sizeof va->sum.source, "%.400s (%.0f%% split, seed %llu)", src,
             100.0 * (double)b / (double)n, (unsigned long long)o->seed);
    free(perm);
    free(is_valid);
    return LT_OK;
}

static int find_split_file(const char *dir, const char *name, char *out, size_t cap) {
    static const char *const ext[] = {".jsonl", ".json"};
    for (int i = 0; i < 2; i++) {
        snprintf(out, cap, "%s/%s%s", dir, name, ext[i]);
        if (lt_path_exists(out) && !lt_path_is_dir(out)) return 1;
    }
    return 0;
}

lt_status lt_data_open(const char *path, const lt_tokenizer *tok, const lt_chat_template *tpl,
                       const lt_data_opts *opts, lt_data **out) {
    *out = NULL;
    lt_data_opts o;
    if (opts)
        o = *opts;
    else
        lt_data_opts_default(&o);
    if (!path) return lt_error(LT_ERR_ARG, "data: NULL path");
    if (o.max_seq_len < 2)
        return lt_error(LT_ERR_ARG, "data: max_seq_len: expected >= 2, got %d", o.max_seq_len);
    if (!(o.valid_fraction >= 0 && o.valid_fraction < 1))
        return lt_error(LT_ERR_ARG, "data: valid_fraction: expected a number in [0, 1), got %g",
                        o.valid_fraction);
    if ((unsigned)o.format > LT_DATA_SHAREGPT)
        return lt_error(LT_ERR_ARG, "data: bad format %d", (int)o.format);
    if (!lt_path_exists(path)) return lt_error(LT_ERR_IO, "%s: no such file or folder", path);
    lt_data *d = lt_calloc(1, sizeof *d);
    if (!d) return lt_error(LT_ERR_NOMEM, "out of memory");
    d->max_seq_len = o.max_seq_len;
    d->has_tokens = tok != NULL;
    tok_ctx k = {tok, tpl, &o, 0, 0};
    lt_data_format fmt = o.format;
    char detected_at[600] = "";
    lt_status st = LT_OK;
    if (lt_path_is_dir(path)) {
        char f[4096];
        for (int s = 0; s < LT_SPLIT_COUNT && st == LT_OK; s++) {
            if (!find_split_file(path, k_split_names[s], f, sizeof f)) {
                if (s == LT_SPLIT_TRAIN)
                    st = lt_error(LT_ERR_NOTFOUND,
                                  "%s: no train.jsonl (or train.json): a data folder needs "
                                  "train.jsonl, and may have valid.jsonl and test.jsonl",
                                  path);
                continue;
            }
            st = load_file(d, f, &d->s[s], &k, &fmt, detected_at, sizeof detected_at);
        }
    } else {
        st = load_file(d, path, &d->s[LT_SPLIT_TRAIN], &k, &fmt, detected_at, sizeof detected_at);
        if (st == LT_OK) st = split_single(d, &o);
    }
    if (st) {
        lt_data_free(d);
        return st;
    }
    d->format = fmt;
    for (int s = 0; s < LT_SPLIT_COUNT; s++)
        if (d->s[s].present) summarize(d, &d->s[s]);
    *out = d;
    return LT_OK;
}

lt_data_format lt_data_get_format(const lt_data *d) {
    return d ? d->format : LT_DATA_AUTO;
}

int64_t lt_data_count(const lt_data *d, lt_split s) {
    if (!d || (unsigned)s >= LT_SPLIT_COUNT) return 0;
    return d->s[s].n;
}

const lt_example *lt_data_example(const lt_data *d, lt_split s, int64_t i) {
    if (!d || (unsigned)s >= LT_SPLIT_COUNT || i < 0 || i >= d->s[s].n || !d->has_tokens)
        return NULL;
    return &d->s[s].ex[i];
}

lt_status lt_data_summary_get(const lt_data *d, lt_split s, lt_data_summary *out) {
    if (!d || (unsigned)s >= LT_SPLIT_COUNT)
        return lt_error(LT_ERR_ARG, "data summary: bad split %d", (int)s);
    if (!d->s[s].present) return lt_error(LT_ERR_NOTFOUND, "data: no %s split", k_split_names[s]);
    *out = d->s[s].sum;
    return LT_OK;
}

void lt_data_summary_print(const lt_data *d, void *fp) {
    FILE *f = fp;
    if (!d || !f) return;
    const char *unit = d->has_tokens ? "tokens" : "characters";
    for (int sp = 0; sp < LT_SPLIT_COUNT; sp++) {
        if (!d->s[sp].present) continue;
        const lt_data_summary *s = &d->s[sp].sum;
        fprintf(f, "%s: %lld examples (%s) from %s\n", k_split_names[sp], (long long)s->n_examples,
                lt_data_format_name(s->format), s->source);
        if (d->has_tokens)
            fprintf(f, "  tokens %lld, in the loss %lld (%.1f%%)\n", (long long)s->n_tokens,
                    (long long)s->n_loss_tokens,
                    s->n_tokens ? 100.0 * (double)s->n_loss_tokens / (double)s->n_tokens : 0.0);
        fprintf(f, "  length in %s: min %d, mean %.1f, max %d\n", unit, s->min_len, s->mean_len,
                s->max_len);
        if (d->has_tokens) {
            fprintf(f, "  truncated to max_seq_len %d: %lld example%s\n", d->max_seq_len,
                    (long long)s->n_truncated, s->n_truncated == 1 ? "" : "s");
            if (s->n_no_loss)
                fprintf(f,
                        "  WARNING: %lld example%s with no token in the loss (truncated "
                        "away?)\n",
                        (long long)s->n_no_loss, s->n_no_loss == 1 ? "" : "s");
            if (s->n_mask_fallback)
                fprintf(f,
                        "  note: %lld example%s with a token across a turn boundary (mask "
                        "from prefix tokenization)\n",
                        (long long)s->n_mask_fallback, s->n_mask_fallback == 1 ? "" : "s");
        }
        int64_t most = 1;
        for (int b = 0; b < s->n_buckets; b++)
            if (s->hist[b] > most) most = s->hist[b];
        int first = 0, last = s->n_buckets - 1;
        while (first < last && !s->hist[first])
            first++;
        while (last > first && !s->hist[last])
            last--;
        for (int b = first; b <= last; b++) {
            char lab[48];
            snprintf(lab, sizeof lab, "[%d, %d)", s->hist_edges[b], s->hist_edges[b + 1]);
            int w = (int)((40 * s->hist[b] + most - 1) / most);
            fprintf(f, "  %-16s %7lld %.*s\n", lab, (long long)s->hist[b], w,
                    "########################################");
        }
    }
}
