/* test_data_errors.c - bad data gives errors that name FILE:LINE, the field and what was
 * expected (and the column for invalid JSON / UTF-8). Each case writes a small file into a temp
 * folder and checks the status and the message pieces. Also: the JSON-list line numbers, blank
 * lines, the BOM, format detection and a given format. */
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/tokenizer.h"
#include "lt_test.h"

static const char *g_dir;

static const char *put(const char *name, const char *content) {
    static char path[8][700];
    static int k = 0;
    char *p = path[k++ & 7];
    snprintf(p, 700, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(content, 1, strlen(content), f);
    fclose(f);
    return p;
}

/* lt_data_open(file) must fail with code and a message holding every piece (NULL-ended). */
static void expect(const char *name, const char *content, lt_data_format fmt,
                   const lt_tokenizer *tok, const lt_chat_template *tpl, lt_status code, ...) {
    const char *p = put(name, content);
    lt_data_opts o;
    lt_data_opts_default(&o);
    o.format = fmt;
    lt_data *d = NULL;
    lt_status st = lt_data_open(p, tok, tpl, &o, &d);
    CHECK(st == code, "%s: status %s (%s), wanted %s", name, lt_status_name(st), lt_errmsg(),
          lt_status_name(code));
    va_list ap;
    va_start(ap, code);
    const char *piece;
    while ((piece = va_arg(ap, const char *)))
        CHECK(strstr(lt_errmsg(), piece) != NULL, "%s: message '%s' lacks '%s'", name, lt_errmsg(),
              piece);
    va_end(ap);
    lt_data_free(d);
}

int main(void) {
    g_dir = lt_tmpdir();
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/smollm/tokenizer.json"), &tok));
    char *jinja = NULL;
    size_t jlen = 0;
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/chat_templates/smollm2-instruct.jinja"),
                              &jinja, &jlen));
    CHECK_OK(lt_chat_template_from_string(jinja, jlen, &tpl));
    const lt_data_format A = LT_DATA_AUTO;

    /* JSON and encoding */
    expect("badjson.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\" \"d\"}\n", A,
           NULL, NULL, LT_ERR_FORMAT, "badjson.jsonl:3:", "invalid JSON", "column ", NULL);
    expect("notobj.jsonl", "{\"text\": \"a\"}\n[1, 2]\n", A, NULL, NULL, LT_ERR_FORMAT,
           "notobj.jsonl:2:", "a list", "expected a JSON object", NULL);
    expect("utf8.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"caf\xC3\"}\n", A, NULL, NULL,
           LT_ERR_FORMAT, "utf8.jsonl:2:", "invalid UTF-8", "column 14", NULL);
    expect("overlong.jsonl", "{\"text\": \"\xC0\xAF\"}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "overlong.jsonl:1:", "invalid UTF-8", NULL);
    expect("empty.jsonl", "", A, NULL, NULL, LT_ERR_FORMAT, "empty.jsonl", "empty file", NULL);
    expect("blank.jsonl", "\n  \n\n", A, NULL, NULL, LT_ERR_FORMAT, "empty file", NULL);
    expect("emptylist.json", "[ ]", A, NULL, NULL, LT_ERR_FORMAT, "emptylist.json", "empty list",
           NULL);
    expect("badlist.json", "[\n {\"text\": \"a\"},\n {\"text\": \"b\",}\n]\n", A, NULL, NULL,
           LT_ERR_FORMAT, "badlist.json:3:", "invalid JSON", NULL);
    expect("pretty.json", "{\n  \"text\": \"a\"\n}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "pretty.json:", "one JSON object over several lines", "JSON Lines", NULL);
    expect("listitem.json", "[\n {\"text\": \"a\"},\n\n 5\n]\n", A, NULL, NULL, LT_ERR_FORMAT,
           "listitem.json:4:", "list item 1", "a number", NULL);

    /* detection and shape */
    expect("unknown.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}\n", A, NULL, NULL,
           LT_ERR_FORMAT, "unknown.jsonl:1:", "'question'", "'answer'", "can't tell", NULL);
    expect("mixed.jsonl", "{\"text\": \"a\"}\n\n{\"instruction\": \"i\", \"output\": \"o\"}\n", A,
           NULL, NULL, LT_ERR_FORMAT, "mixed.jsonl:3:", "looks like 'alpaca'", "'text'",
           "detected from", "mixed.jsonl:1", NULL);
    expect("given.jsonl", "{\"text\": \"a\"}\n", LT_DATA_CHAT, NULL, NULL, LT_ERR_FORMAT,
           "given.jsonl:1:", "looks like 'text'", "the data is 'chat'", "'messages'", NULL);
    expect("given2.jsonl", "{\"other\": \"a\"}\n", LT_DATA_CHAT, NULL, NULL, LT_ERR_FORMAT,
           "given2.jsonl:1:", "'messages' is missing", "'other'", NULL);
    expect("comp.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"prompt\": \"p\"}\n", A,
           NULL, NULL, LT_ERR_FORMAT, "comp.jsonl:2:", "'completion' is missing", NULL);

    /* fields */
    expect("msgs.jsonl",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
           "\"content\": \"yo\"}]}\n{\"messages\": \"hello\"}\n",
           A, NULL, NULL, LT_ERR_FORMAT,
           "msgs.jsonl:2:", "'messages' must be a list of {role, content}", "a string", NULL);
    expect("msgs0.jsonl", "{\"messages\": []}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "msgs0.jsonl:1:", "empty list", NULL);
    expect("role.jsonl",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"bot\", "
           "\"content\": \"yo\"}]}\n",
           A, NULL, NULL, LT_ERR_FORMAT, "role.jsonl:1:", "'messages'[1].role",
           "unknown role 'bot'", "system, user, assistant", NULL);
    expect("content.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}\n", A, NULL,
           NULL, LT_ERR_FORMAT, "content.jsonl:1:", "'messages'[0].content must be a string",
           "a number", NULL);
    expect("nocontent.jsonl", "{\"messages\": [{\"role\": \"user\"}]}\n", A, NULL, NULL,
           LT_ERR_FORMAT, "nocontent.jsonl:1:", "'messages'[0].content is missing", NULL);
    expect("emptystr.jsonl",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
           "\"content\": \"\"}]}\n",
           A, NULL, NULL, LT_ERR_FORMAT, "emptystr.jsonl:1:", "'messages'[1].content",
           "non-empty string", NULL);
    expect("msgitem.jsonl", "{\"messages\": [\"hi\"]}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "msgitem.jsonl:1:", "'messages'[0] must be an object {role, content}", NULL);
    expect("emptytext.jsonl", "{\"text\": \"x\"}\n{\"text\": \"\"}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "emptytext.jsonl:2:", "'text' must be a non-empty string", NULL);
    expect("texttype.jsonl", "{\"text\": null}\n", A, NULL, NULL, LT_ERR_FORMAT,
           "texttype.jsonl:1:", "'text' must be a string, got null", NULL);
    expect("alpaca.jsonl", "{\"instruction\": \"i\", \"output\": [\"o\"]}\n", A, NULL, NULL,
           LT_ERR_FORMAT, "alpaca.jsonl:1:", "'output' must be a string", "a list", NULL);
    expect("hist.jsonl", "{\"instruction\": \"i\", \"output\": \"o\", \"history\": [[\"q\"]]}\n", A,
           NULL, NULL, LT_ERR_FORMAT, "hist.jsonl:1:", "'history'[0]", NULL);
    expect("sharegpt.jsonl",
           "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"robot\", "
           "\"value\": \"a\"}]}\n",
           A, NULL, NULL, LT_ERR_FORMAT, "sharegpt.jsonl:1:", "'conversations'[1].from",
           "unknown speaker 'robot'", "human, gpt", NULL);
    expect("sgvalue.jsonl", "{\"conversations\": [{\"from\": \"human\"}]}\n", A, NULL, NULL,
           LT_ERR_FORMAT, "sgvalue.jsonl:1:", "'conversations'[0].value is missing", NULL);
    expect("tools.jsonl",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tools\": {\"a\": 1}}\n", A,
           NULL, NULL, LT_ERR_FORMAT, "tools.jsonl:1:", "'tools' must be a list", NULL);

    /* needing the tokenizer / template */
    const char *chat1 = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
                        "\"assistant\", \"content\": \"yo\"}]}\n";
    expect("notpl.jsonl", chat1, A, tok, NULL, LT_ERR_UNSUPPORTED, "notpl.jsonl:1:", "'chat' data",
           "chat template", NULL);
    expect("noasst.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", A, tok,
           tpl, LT_ERR_FORMAT, "noasst.jsonl:1:", "no assistant turn", NULL);
    expect("tools2.jsonl",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
           "\"content\": \"a\"}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
           "\"f\"}}]}\n",
           A, tok, tpl, LT_ERR_UNSUPPORTED, "tools2.jsonl:1:", "'tools'", "smollm2-instruct",
           "tool definitions", NULL);

    /* a folder without train.jsonl */
    {
        char sub[700];
        snprintf(sub, sizeof sub, "%s/folder", g_dir);
        mkdir(sub, 0755);
        char f[800];
        snprintf(f, sizeof f, "%s/valid.jsonl", sub);
        FILE *fp = fopen(f, "w");
        fputs("{\"text\": \"a\"}\n", fp);
        fclose(fp);
        lt_data *d = NULL;
        CHECK_ERR(lt_data_open(sub, NULL, NULL, NULL, &d), LT_ERR_NOTFOUND, "no train.jsonl");
        CHECK_ERR(lt_data_open("/nonexistent/data", NULL, NULL, NULL, &d), LT_ERR_IO,
                  "no such file or folder");
    }

    /* good inputs: a list's line numbers, blank lines and a BOM, structure-only counts */
    {
        const char *p =
            put("good.json", "\xEF\xBB\xBF[\n  {\"text\": \"a\"},\n\n  {\n    \"text\": "
                             "\"b \\\" ] {\"\n  }, {\"text\": \"c\"}\n]\n");
        lt_data_opts o;
        lt_data_opts_default(&o);
        o.valid_fraction = 0;
        lt_data *d = NULL;
        CHECK_OK(lt_data_open(p, tok, NULL, &o, &d));
        CHECK(lt_data_count(d, LT_SPLIT_TRAIN) == 3, "3 records");
        if (lt_data_count(d, LT_SPLIT_TRAIN) == 3) {
            CHECK(lt_data_example(d, LT_SPLIT_TRAIN, 0)->line == 2, "line of record 0");
            CHECK(lt_data_example(d, LT_SPLIT_TRAIN, 1)->line == 4, "line of record 1: %lld",
                  (long long)lt_data_example(d, LT_SPLIT_TRAIN, 1)->line);
            CHECK(lt_data_example(d, LT_SPLIT_TRAIN, 2)->line == 6, "line of record 2: %lld",
                  (long long)lt_data_example(d, LT_SPLIT_TRAIN, 2)->line);
        }
        lt_data_free(d);
        p = put("good.jsonl", "\xEF\xBB\xBF{\"text\": \"h\xC3\xA9llo\"}\n\n\r\n{\"text\": \"b\"}");
        d = NULL;
        CHECK_OK(lt_data_open(p, NULL, NULL, &o, &d));
        lt_data_summary s;
        CHECK_OK(lt_data_summary_get(d, LT_SPLIT_TRAIN, &s));
        CHECK(s.n_examples == 2 && s.max_len == 5 && s.min_len == 1 && !s.counts_tokens,
              "structure only: 2 records, 5 and 1 characters (%lld, %d, %d)",
              (long long)s.n_examples, s.max_len, s.min_len);
        CHECK(lt_data_example(d, LT_SPLIT_TRAIN, 0) == NULL, "no examples without a tokenizer");
        CHECK(lt_data_get_format(d) == LT_DATA_TEXT, "detected text");
        lt_data_free(d);
    }
    lt_data_format f;
    CHECK_ERR(lt_data_format_parse("csv", &f), LT_ERR_ARG, "sharegpt");
    CHECK_OK(lt_data_format_parse("prompt-completion", &f));
    CHECK(f == LT_DATA_COMPLETIONS, "prompt-completion alias");

    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    free(jinja);
    LT_TEST_END();
}
