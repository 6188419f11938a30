/* fuzz_chat_template.c - chat templates (the Jinja subset): the input is recognised as a
 * template (lt_chat_template_from_string) and, when it looks like a JSON object, also read as
 * a tokenizer_config.json (lt_chat_template_from_config: chat_template as a string or a named
 * list, bos/eos tokens as strings or objects); whatever is recognised renders fixed
 * conversations (with spans, and with tools where the template takes them). Property: every
 * span lies inside the rendering. Seeds: the .jinja files of tests/data/chat_templates and
 * tokenizer_config.json files of the fixtures. */
#include "fuzz_util.h"
#include "loratune/chat.h"

static const lt_chat_message conv[] = {
    {"system", "Be brief."},
    {"user", "Hi <|im_end|> {{ x }}"},
    {"assistant", "  Hello!\n"},
    {"user", "caf\xc3\xa9?"},
};
static const char tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get\", \"description\": \"d\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}}}]";

static void render(const lt_chat_template *t) {
    (void)lt_chat_template_family(t);
    (void)lt_chat_template_name(t);
    for (size_t first = 0; first < 2; first++) {
        size_t n = sizeof conv / sizeof conv[0] - first;
        for (int gen = 0; gen < 2; gen++) {
            char *out = NULL;
            size_t len = 0;
            lt_chat_span spans[4];
            lt_status s = lt_chat_render_spans(t, conv + first, n, gen, &out, &len, spans);
            if (s) {
                fz_refused(s, "lt_chat_render_spans");
                continue;
            }
            FZ_CHECK(strlen(out) == len, "the rendering's length");
            for (size_t i = 0; i < n; i++)
                FZ_CHECK(spans[i].begin <= spans[i].end && spans[i].end <= len &&
                             spans[i].content_begin <= spans[i].content_end &&
                             spans[i].content_end <= len,
                         "a span inside the rendering");
            free(out);
            if (lt_chat_template_supports_tools(t)) {
                if ((s = lt_chat_render_tools(t, conv + first, n, tools, gen, &out, &len, spans)))
                    fz_refused(s, "lt_chat_render_tools");
                else
                    free(out);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lt_chat_template *t = NULL;
    lt_status s = lt_chat_template_from_string((const char *)data, size, &t);
    if (s) {
        fz_refused(s, "lt_chat_template_from_string");
    } else {
        lt_chat_template_set_special(t, "<s>", "</s>");
        render(t);
        lt_chat_template_free(t);
    }
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\n'))
        i++;
    if (i < size && data[i] == '{') {
        const char *path = fz_write("tokenizer_config.json", data, size);
        t = NULL;
        if ((s = lt_chat_template_from_config(path, &t)) == LT_OK) {
            render(t);
            lt_chat_template_free(t);
        } else {
            fz_refused(s, "lt_chat_template_from_config");
        }
    }
    return 0;
}
