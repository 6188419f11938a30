/* test_chat_template.c - chat template recognition, error cases and tokenizer_config parsing.
 *
 * Normal mode (no arguments): every real template in tests/data/chat_templates/ must be
 * recognised exactly under its own name; Jinja-neutral edits keep exactness, output-changing
 * edits lose it; error cases (alternation, unknown role, empty conversation, malformed
 * tokenizer_config.json) give clear errors. Byte-exact rendering is checked against Jinja2 by
 * test_chat_template_peer.py, which drives the modes below:
 *   --render FILE BOS EOS ADD_GEN < conversation.json   prints the rendering (raw bytes)
 *   --render-batch FILE BOS EOS < cases.json            [{"messages":[...],
 *       "add_generation_prompt":b}] -> JSON {"family","name","exact","recognised","results":
 *       [{"ok":true,"text":...} | {"ok":false,"status":...,"error":...}]}
 *   --info FILE...                                      recognition, one JSON line per file
 *   --config tokenizer_config.json | --gguf FILE        recognition + bos/eos as JSON */
#include <jansson.h>

#include "loratune/chat.h"
#include "loratune/gguf.h"
#include "lt_test.h"

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    if (!p) return NULL;
    for (;;) {
        if (n == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                return NULL;
            }
            p = q;
        }
        size_t r = fread(p + n, 1, cap - n, stdin);
        if (r == 0) break;
        n += r;
    }
    *len = n;
    return p;
}

static lt_chat_template *load_tpl(const char *path, const char *bos, const char *eos) {
    char *src = NULL;
    size_t len = 0;
    lt_chat_template *t = NULL;
    if (lt_file_read_all(path, &src, &len) != LT_OK ||
        lt_chat_template_from_string(src, len, &t) != LT_OK ||
        lt_chat_template_set_special(t, bos, eos) != LT_OK) {
        fprintf(stderr, "ERROR loading %s: %s\n", path, lt_errmsg());
        lt_chat_template_free(t);
        t = NULL;
    }
    free(src);
    return t;
}

/* msgs JSON array -> lt_chat_message array borrowing the JSON strings. */
static lt_chat_message *messages_from_json(json_t *arr, size_t *n) {
    if (!json_is_array(arr)) return NULL;
    *n = json_array_size(arr);
    lt_chat_message *m = calloc(*n ? *n : 1, sizeof *m);
    if (!m) return NULL;
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(arr, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
    }
    return m;
}

static json_t *info_json(const lt_chat_template *t) {
    return json_pack("{s:s,s:s,s:b,s:b}", "family", lt_chat_template_family(t), "name",
                     lt_chat_template_name(t), "exact", lt_chat_template_is_exact(t), "recognised",
                     lt_chat_template_is_recognised(t));
}

static int mode_render(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: --render FILE BOS EOS ADD_GEN < conversation.json\n");
        return 2;
    }
    lt_chat_template *t = load_tpl(argv[2], argv[3], argv[4]);
    if (!t) return 2;
    size_t len = 0;
    char *in = read_stdin(&len);
    json_error_t je;
    json_t *conv = in ? json_loadb(in, len, 0, &je) : NULL;
    free(in);
    size_t n = 0;
    lt_chat_message *m = conv ? messages_from_json(conv, &n) : NULL;
    if (!m) {
        fprintf(stderr, "ERROR: stdin: expected a JSON list of {role, content}\n");
        json_decref(conv);
        lt_chat_template_free(t);
        return 2;
    }
    char *out = NULL;
    size_t olen = 0;
    lt_status st = lt_chat_render_spans(t, m, n, atoi(argv[5]), &out, &olen, NULL);
    int rc = 0;
    if (st == LT_OK) {
        fwrite(out, 1, olen, stdout);
    } else {
        fprintf(stderr, "ERROR %s: %s\n", lt_status_name(st), lt_errmsg());
        rc = 3;
    }
    free(out);
    free(m);
    json_decref(conv);
    lt_chat_template_free(t);
    return rc;
}

static int mode_batch(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: --render-batch FILE BOS EOS < cases.json\n");
        return 2;
    }
    lt_chat_template *t = load_tpl(argv[2], argv[3], argv[4]);
    if (!t) return 2;
    size_t len = 0;
    char *in = read_stdin(&len);
    json_error_t je;
    json_t *cases = in ? json_loadb(in, len, 0, &je) : NULL;
    free(in);
    if (!json_is_array(cases)) {
        fprintf(stderr, "ERROR: stdin: expected a JSON list of cases\n");
        json_decref(cases);
        lt_chat_template_free(t);
        return 2;
    }
    json_t *res = json_array(), *top = info_json(t);
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        size_t n = 0;
        lt_chat_message *m = messages_from_json(json_object_get(cs, "messages"), &n);
        char *out = NULL;
        size_t olen = 0;
        lt_status st = m ? lt_chat_render_spans(
                               t, m, n, json_is_true(json_object_get(cs, "add_generation_prompt")),
                               &out, &olen, NULL)
                         : lt_error(LT_ERR_ARG, "case %zu: bad messages", i);
        if (st == LT_OK)
            json_array_append_new(res, json_pack("{s:b,s:s%}", "ok", 1, "text", out, olen));
        else
            json_array_append_new(res, json_pack("{s:b,s:s,s:s}", "ok", 0, "status",
                                                 lt_status_name(st), "error", lt_errmsg()));
        free(out);
        free(m);
    }
    json_object_set_new(top, "results", res);
    char *dump = json_dumps(top, JSON_COMPACT);
    if (dump) fputs(dump, stdout);
    free(dump);
    json_decref(top);
    json_decref(cases);
    lt_chat_template_free(t);
    return 0;
}

static int mode_info(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        lt_chat_template *t = load_tpl(argv[i], "", "");
        if (!t) return 2;
        json_t *j = info_json(t);
        char *dump = json_dumps(j, JSON_COMPACT);
        if (dump) printf("%s\n", dump);
        free(dump);
        json_decref(j);
        lt_chat_template_free(t);
    }
    return 0;
}

/* --gguf FILE / --config FILE: recognition plus bos/eos, as one JSON line. */
static int mode_load(int argc, char **argv) {
    if (argc != 3) return 2;
    lt_gguf *g = NULL;
    lt_chat_template *t = NULL;
    lt_status st;
    if (strcmp(argv[1], "--gguf") == 0) {
        st = lt_gguf_open(argv[2], &g);
        if (st == LT_OK) st = lt_chat_template_from_gguf(g, &t);
    } else {
        st = lt_chat_template_from_config(argv[2], &t);
    }
    lt_gguf_close(g);
    if (st != LT_OK) {
        fprintf(stderr, "ERROR %s\n", lt_errmsg());
        return 3;
    }
    json_t *j = info_json(t);
    json_object_set_new(j, "bos", json_string(lt_chat_template_bos(t)));
    json_object_set_new(j, "eos", json_string(lt_chat_template_eos(t)));
    char *dump = json_dumps(j, JSON_COMPACT);
    if (dump) printf("%s\n", dump);
    free(dump);
    json_decref(j);
    lt_chat_template_free(t);
    return 0;
}

/* ---- normal mode -------------------------------------------------------------------- */
static lt_chat_template *tpl_file(const char *name, const char *bos, const char *eos) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/chat_templates/%s.jinja", name);
    return load_tpl(lt_srcpath(rel), bos, eos);
}

/* Replaces the first occurrence of `from` in s by `to` (malloc'd result). */
static char *replace1(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    if (!at) return NULL;
    size_t a = (size_t)(at - s), fl = strlen(from), tl = strlen(to), sl = strlen(s);
    char *r = malloc(sl - fl + tl + 1);
    memcpy(r, s, a);
    memcpy(r + a, to, tl);
    memcpy(r + a + tl, at + fl, sl - a - fl + 1);
    return r;
}

static void check_edit(const char *name, const char *from, const char *to, int want_exact,
                       const char *want_family) {
    lt_chat_template *t = tpl_file(name, "", "");
    CHECK(t != NULL, "%s", name);
    if (!t) return;
    char *src = replace1(lt_chat_template_source(t), from, to);
    CHECK(src != NULL, "%s: '%s' not in template", name, from);
    lt_chat_template *u = NULL;
    if (src) {
        CHECK_OK(lt_chat_template_from_string(src, strlen(src), &u));
        CHECK(u && lt_chat_template_is_exact(u) == want_exact, "%s edit '%s'->'%s': exact=%d", name,
              from, to, u ? lt_chat_template_is_exact(u) : -1);
        CHECK(u && lt_chat_template_is_recognised(u), "%s edit still recognised", name);
        CHECK(u && strcmp(lt_chat_template_family(u), want_family) == 0, "%s edit family %s", name,
              u ? lt_chat_template_family(u) : "?");
    }
    free(src);
    lt_chat_template_free(u);
    lt_chat_template_free(t);
}

static void write_file(const char *path, const char *text) {
    CHECK_OK(lt_file_write_atomic(path, text, strlen(text)));
}

static void test_recognition(void) {
    static const struct {
        const char *file, *name, *family;
    } cases[] = {
        {"chatml", "chatml", "chatml"},
        {"qwen2-instruct", "qwen2-instruct", "chatml"},
        {"smollm2-instruct", "smollm2-instruct", "chatml"},
        {"llama3-instruct", "llama3-instruct", "llama3"},
        {"llama3.1-instruct", "llama3.1-instruct", "llama3.1"},
        {"llama2-chat", "llama2-chat", "llama2"},
        {"mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.1", "mistral"},
        {"mistral-7b-instruct-v0.2", "mistral-7b-instruct-v0.1", "mistral"},
        {"mistral-7b-instruct-v0.3", "mistral-7b-instruct-v0.3", "mistral"},
        {"mistral-7b-instruct-v0.3-2024-05", "mistral-7b-instruct-v0.3-2024-05", "mistral"},
        {"mistral-legacy-mixtral", "mistral-legacy-mixtral", "mistral"},
        {"mistral-legacy-v0.1", "mistral-legacy-v0.1", "mistral"},
        {"tinyllama-chat", "tinyllama-chat", "zephyr"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lt_chat_template *t = tpl_file(cases[i].file, "", "");
        CHECK(t != NULL, "load %s", cases[i].file);
        if (!t) continue;
        CHECK(lt_chat_template_is_exact(t), "%s: not exact (got %s)", cases[i].file,
              lt_chat_template_name(t));
        CHECK(strcmp(lt_chat_template_name(t), cases[i].name) == 0, "%s: name %s", cases[i].file,
              lt_chat_template_name(t));
        CHECK(strcmp(lt_chat_template_family(t), cases[i].family) == 0, "%s: family %s",
              cases[i].file, lt_chat_template_family(t));
        lt_chat_template_free(t);
    }

    /* Edits Jinja can't see (trim_blocks eats a newline after %}, whitespace inside tags,
     * quote style, comments, indentation before {%- tags) keep exactness ... */
    check_edit("chatml", "{% endfor %}", "{% endfor %}\n", 1, "chatml");
    check_edit("chatml", "{{'<|im_start|>' + message['role']",
               "{{ \"<|im_start|>\"+message[ 'role' ]", 1, "chatml");
    check_edit("llama3-instruct", "{% endfor %}", "{# a comment #}{% endfor %}", 1, "llama3");
    check_edit("llama3.1-instruct", "\n    {%- set tools = custom_tools %}",
               "\n\t\t{%- set tools = custom_tools %}", 1, "llama3.1");
    check_edit("tinyllama-chat", "{% endif %}\n{% if loop.last", "  {% endif %}\n  {% if loop.last",
               1, "zephyr");
    /* ... edits that change the output do not. */
    check_edit("llama3-instruct", "{{ content }}", "{{ content }}\n", 0, "llama3");
    check_edit("qwen2-instruct", "You are a helpful assistant.", "You are a helpful assistant!", 0,
               "chatml");
    check_edit("tinyllama-chat", "{{ '<|assistant|>' }}\n", "{{ '<|assistant|>' }}", 0, "zephyr");
    check_edit("llama2-chat", "content.strip() + ' [/INST]'", "content + ' [/INST]'", 0, "llama2");
    check_edit("mistral-7b-instruct-v0.1", "' [INST] ' + message", "'[INST] ' + message", 0,
               "mistral");
    check_edit("smollm2-instruct", "{% endfor %}", "{%+ endfor %}", 1, "chatml");

    /* an unknown template falls back to generic ChatML, flagged unrecognised */
    lt_chat_template *u = NULL;
    const char *odd = "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}";
    CHECK_OK(lt_chat_template_from_string(odd, strlen(odd), &u));
    CHECK(u && !lt_chat_template_is_recognised(u) && !lt_chat_template_is_exact(u),
          "unknown template flagged");
    CHECK(u && strcmp(lt_chat_template_name(u), "generic-chatml") == 0, "fallback name");
    lt_chat_message one[] = {{"user", "hi"}};
    char *out = NULL;
    CHECK_OK(lt_chat_render(u, one, 1, 1, &out));
    CHECK(out && strcmp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") == 0,
          "fallback renders ChatML: %s", out ? out : "(null)");
    free(out);
    lt_chat_template_free(u);
    /* unterminated tags are not exact, but markers still give the family */
    const char *broken = "{% for message in messages %}{{'<|im_start|>' + message['role']";
    CHECK_OK(lt_chat_template_from_string(broken, strlen(broken), &u));
    CHECK(u && !lt_chat_template_is_exact(u) && lt_chat_template_is_recognised(u) &&
              strcmp(lt_chat_template_family(u), "chatml") == 0,
          "broken ChatML template is a family guess");
    lt_chat_template_free(u);
    CHECK_OK(lt_chat_template_from_string("", 0, &u));
    CHECK(u && !lt_chat_template_is_recognised(u), "empty template unrecognised");
    lt_chat_template_free(u);
}

static void test_errors(void) {
    char *out = (char *)1;
    lt_chat_template *l2 = tpl_file("llama2-chat", "<s>", "</s>");
    lt_chat_message uu[] = {{"system", "S"}, {"user", "a"}, {"user", "b"}};
    CHECK_ERR(lt_chat_render(l2, uu, 3, 0, &out), LT_ERR_ARG, "message 2 (role 'user')");
    CHECK_ERR(lt_chat_render(l2, uu, 3, 0, &out), LT_ERR_ARG, "alternation");
    CHECK(out == NULL, "no output on error");
    lt_chat_message au[] = {{"assistant", "a"}, {"user", "b"}};
    CHECK_ERR(lt_chat_render(l2, au, 2, 0, &out), LT_ERR_ARG, "message 0 (role 'assistant')");
    lt_chat_message ut[] = {{"user", "a"}, {"tool", "b"}};
    CHECK_ERR(lt_chat_render(l2, ut, 2, 0, &out), LT_ERR_ARG, "role 'tool'");
    CHECK_ERR(lt_chat_render(l2, uu, 0, 0, &out), LT_ERR_ARG, "empty conversation");
    lt_chat_template_free(l2);

    lt_chat_template *q = tpl_file("qwen2-instruct", "", "<|im_end|>");
    lt_chat_message nar[] = {{"user", "a"}, {"narrator", "b"}};
    CHECK_ERR(lt_chat_render(q, nar, 2, 0, &out), LT_ERR_ARG, "message 1 has role 'narrator'");
    lt_chat_message nul[] = {{"user", NULL}};
    CHECK_ERR(lt_chat_render(q, nul, 1, 0, &out), LT_ERR_ARG, "NULL content");
    lt_chat_template_free(q);

    lt_chat_template *m3 = tpl_file("mistral-7b-instruct-v0.3", "<s>", "</s>");
    lt_chat_message mid[] = {{"user", "a"}, {"assistant", "b"}, {"system", "c"}, {"user", "d"}};
    CHECK_ERR(lt_chat_render(m3, mid, 4, 0, &out), LT_ERR_ARG, "message 2 (role 'system')");
    lt_chat_template_free(m3);
    lt_chat_template *ml = tpl_file("mistral-legacy-mixtral", "<s>", "</s>");
    lt_chat_message sys[] = {{"system", "s"}, {"user", "a"}};
    CHECK_ERR(lt_chat_render(ml, sys, 2, 0, &out), LT_ERR_ARG, "message 0 (role 'system')");
    lt_chat_template_free(ml);
    lt_chat_template *l31 = tpl_file("llama3.1-instruct", "<|begin_of_text|>", "<|eot_id|>");
    lt_chat_message tool[] = {{"user", "a"}, {"tool", "b"}};
    CHECK_ERR(lt_chat_render(l31, tool, 2, 0, &out), LT_ERR_ARG, "tool calls are not supported");
    lt_chat_template_free(l31);
}

static void test_spans(void) {
    static const char *names[] = {
        "chatml",      "qwen2-instruct",           "llama3-instruct",          "llama3.1-instruct",
        "llama2-chat", "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "tinyllama-chat"};
    lt_chat_message conv[] = {{"system", " Be brief. "},
                              {"user", "  Hello\n"},
                              {"assistant", " Hi there! "},
                              {"user", "Bye"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        lt_chat_template *t = tpl_file(names[k], "<s>", "</s>");
        if (!t) continue;
        lt_chat_span sp[4];
        char *out = NULL;
        size_t len = 0;
        CHECK_OK(lt_chat_render_spans(t, conv, 4, 1, &out, &len, sp));
        for (size_t i = 0; out && i < 4; i++) {
            CHECK(sp[i].begin <= sp[i].end && sp[i].end <= len &&
                      sp[i].content_begin <= sp[i].content_end && sp[i].content_end <= len,
                  "%s span %zu in range", names[k], i);
            if (sp[i].content_end == 0) continue; /* dropped by the template */
            /* the content range holds the message text, possibly stripped of whitespace */
            static const char *core[] = {"Be brief.", "Hello", "Hi there!", "Bye"};
            size_t cb = sp[i].content_begin, ce = sp[i].content_end;
            char *piece = strndup(out + cb, ce - cb);
            size_t pb = 0, pe = strlen(piece);
            while (pb < pe && (piece[pb] == ' ' || piece[pb] == '\n'))
                pb++;
            while (pe > pb && (piece[pe - 1] == ' ' || piece[pe - 1] == '\n'))
                pe--;
            CHECK(strstr(conv[i].content, piece) && pe - pb == strlen(core[i]) &&
                      memcmp(piece + pb, core[i], pe - pb) == 0,
                  "%s span %zu content '%s'", names[k], i, piece);
            free(piece);
            if (strcmp(conv[i].role, "assistant") == 0)
                CHECK(sp[i].end > sp[i].begin, "%s assistant turn has a segment", names[k]);
        }
        free(out);
        lt_chat_template_free(t);
    }
}

static void test_config(void) {
    const char *dir = lt_tmpdir();
    char p[600];
    lt_chat_template *t = NULL;

    snprintf(p, sizeof p, "%s/notjson.json", dir);
    write_file(p, "{\"chat_template\": \"{{ x }}\",, }");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "not valid JSON");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "notjson.json: line 1");
    CHECK(t == NULL, "no handle on error");

    snprintf(p, sizeof p, "%s/num.json", dir);
    write_file(p, "{\"chat_template\": 42}");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "field \"chat_template\"");

    snprintf(p, sizeof p, "%s/arr.json", dir);
    write_file(p, "[1, 2]");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "JSON object");

    snprintf(p, sizeof p, "%s/nodefault.json", dir);
    write_file(p, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_NOTFOUND, "\"default\"");

    snprintf(p, sizeof p, "%s/badlist.json", dir);
    write_file(p, "{\"chat_template\": [{\"name\": \"default\"}]}");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "[0]");

    snprintf(p, sizeof p, "%s/badbos.json", dir);
    write_file(p, "{\"chat_template\": \"x\", \"bos_token\": 7}");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "\"bos_token\"");

    snprintf(p, sizeof p, "%s/dup.json", dir);
    write_file(p, "{\"chat_template\": \"x\", \"chat_template\": \"y\"}");
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_FORMAT, "dup.json");

    snprintf(p, sizeof p, "%s/missing.json", dir);
    CHECK_ERR(lt_chat_template_from_config(p, &t), LT_ERR_IO, "missing.json");

    /* the real SmolLM fixture config has no chat_template */
    CHECK_ERR(
        lt_chat_template_from_config(lt_fixture("tokenizers/smollm/tokenizer_config.json"), &t),
        LT_ERR_NOTFOUND, "chat_template");

    /* list form + AddedToken-style specials (older Llama 2 configs) */
    lt_chat_template *ref = tpl_file("llama2-chat", "", "");
    json_t *j =
        json_pack("{s:[{s:s,s:s},{s:s,s:s}],s:{s:s},s:s,s:n}", "chat_template", "name", "default",
                  "template", lt_chat_template_source(ref), "name", "rag", "template", "x",
                  "bos_token", "content", "<s>", "eos_token", "</s>", "unk_token");
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    CHECK(json_dump_file(j, p, 0) == 0, "write config");
    json_decref(j);
    lt_chat_template_free(ref);
    CHECK_OK(lt_chat_template_from_config(p, &t));
    CHECK(t && strcmp(lt_chat_template_name(t), "llama2-chat") == 0 && lt_chat_template_is_exact(t),
          "list form default template");
    CHECK(t && strcmp(lt_chat_template_bos(t), "<s>") == 0 &&
              strcmp(lt_chat_template_eos(t), "</s>") == 0,
          "bos/eos from config");
    lt_chat_template_free(t);
    t = NULL;

    /* no chat_template field, but chat_template.jinja beside the config */
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    write_file(p, "{\"eos_token\": \"<|im_end|>\"}");
    char jp[600];
    snprintf(jp, sizeof jp, "%s/chat_template.jinja", dir);
    lt_chat_template *qw = tpl_file("qwen2-instruct", "", "");
    write_file(jp, lt_chat_template_source(qw));
    lt_chat_template_free(qw);
    CHECK_OK(lt_chat_template_from_config(p, &t));
    CHECK(t && strcmp(lt_chat_template_name(t), "qwen2-instruct") == 0 &&
              strcmp(lt_chat_template_bos(t), "") == 0,
          "chat_template.jinja beside the config");
    lt_chat_template_free(t);
}

static void test_gguf(void) {
    const char *dir = lt_tmpdir();
    char p[600];
    lt_chat_template *ref = tpl_file("smollm2-instruct", "", "");
    const char *toks[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    lt_gguf_writer *w = NULL;
    CHECK_OK(lt_gguf_writer_create(&w));
    CHECK_OK(lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3));
    CHECK_OK(lt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1));
    CHECK_OK(lt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
    CHECK_OK(lt_gguf_writer_set_str(w, "tokenizer.chat_template", lt_chat_template_source(ref)));
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    CHECK_OK(lt_gguf_writer_write(w, p));
    lt_gguf_writer_free(w);
    lt_chat_template_free(ref);
    lt_gguf *g = NULL;
    lt_chat_template *t = NULL;
    CHECK_OK(lt_gguf_open(p, &g));
    CHECK_OK(lt_chat_template_from_gguf(g, &t));
    CHECK(t && lt_chat_template_is_exact(t) &&
              strcmp(lt_chat_template_name(t), "smollm2-instruct") == 0,
          "GGUF template recognised");
    CHECK(t && strcmp(lt_chat_template_bos(t), "<|im_start|>") == 0 &&
              strcmp(lt_chat_template_eos(t), "<|im_end|>") == 0,
          "GGUF bos/eos pieces");
    lt_chat_template_free(t);
    lt_gguf_close(g);

    /* no template key / bos id out of range */
    CHECK_OK(lt_gguf_writer_create(&w));
    CHECK_OK(lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3));
    CHECK_OK(lt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 7));
    snprintf(p, sizeof p, "%s/none.gguf", dir);
    CHECK_OK(lt_gguf_writer_write(w, p));
    CHECK_OK(lt_gguf_writer_set_str(w, "tokenizer.chat_template", "{{ x }}"));
    char p2[600];
    snprintf(p2, sizeof p2, "%s/badbos.gguf", dir);
    CHECK_OK(lt_gguf_writer_write(w, p2));
    lt_gguf_writer_free(w);
    CHECK_OK(lt_gguf_open(p, &g));
    t = (lt_chat_template *)1;
    CHECK_ERR(lt_chat_template_from_gguf(g, &t), LT_ERR_NOTFOUND, "tokenizer.chat_template");
    CHECK(t == NULL, "no handle on error");
    lt_gguf_close(g);
    CHECK_OK(lt_gguf_open(p2, &g));
    CHECK_ERR(lt_chat_template_from_gguf(g, &t), LT_ERR_FORMAT, "bos_token_id = 7");
    lt_gguf_close(g);
}

/* Mangled templates (random cuts, inserted Jinja punctuation, NUL bytes) must never crash,
 * hang or read out of bounds (ASan): recognition always succeeds, rendering gives text or a
 * clean error. */
static void test_fuzz(void) {
    static const char *names[] = {"llama3.1-instruct", "mistral-7b-instruct-v0.3", "llama2-chat",
                                  "tinyllama-chat"};
    static const char alphabet[] = "{}%#-+'\"\\\n \0[]()";
    uint32_t rng = 12345;
    int ok = 1;
    lt_chat_message conv[] = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        lt_chat_template *ref = tpl_file(names[k], "<s>", "</s>");
        if (!ref) continue;
        const char *src = lt_chat_template_source(ref);
        size_t n = strlen(src);
        char *buf = malloc(n + 64);
        for (int it = 0; it < 300; it++) {
            rng = rng * 1103515245u + 12345u;
            size_t cut = (rng >> 8) % (n + 1);
            memcpy(buf, src, n);
            size_t len = it % 3 == 0 ? cut : n; /* truncate, or mutate a few bytes */
            for (int j = 0; j < 4 && len; j++) {
                rng = rng * 1103515245u + 12345u;
                buf[(rng >> 8) % len] = alphabet[(rng >> 20) % (sizeof alphabet - 1)];
            }
            lt_chat_template *t = NULL;
            if (lt_chat_template_from_string(buf, len, &t) != LT_OK || !t) {
                ok = 0;
                continue;
            }
            char *out = NULL;
            lt_status st = lt_chat_render(t, conv, 3, it & 1, &out);
            if ((st == LT_OK) != (out != NULL)) ok = 0;
            free(out);
            lt_chat_template_free(t);
        }
        free(buf);
        lt_chat_template_free(ref);
    }
    CHECK(ok, "fuzzed templates handled");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--render") == 0) return mode_render(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--render-batch") == 0) return mode_batch(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--info") == 0) return mode_info(argc, argv);
    if (argc > 1 && (strcmp(argv[1], "--gguf") == 0 || strcmp(argv[1], "--config") == 0))
        return mode_load(argc, argv);
    test_recognition();
    test_errors();
    test_spans();
    test_config();
    test_gguf();
    test_fuzz();
    LT_TEST_END();
}
