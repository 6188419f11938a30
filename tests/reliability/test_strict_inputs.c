/* test_strict_inputs.c - issue 18 finding 10: what a config or a data file says twice, or says
 * with nothing in it, is an error naming FILE:LINE, not a silent choice.
 *   YAML config: a duplicate option (also under its other spelling, lora-rank / lora_rank) and an
 *   unclosed '[' (a syntax error, not "got a list").
 *   JSONL / JSON-list data: a duplicate key in a record, and texts that hold only whitespace. */
#include <stdarg.h>
#include <stdio.h>

#include "loratune/data.h"
#include "loratune/run.h"
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

static void yaml_err(const char *name, const char *text, const char *want1, const char *want2) {
    lt_run_opts o;
    lt_run_opts_default(&o);
    lt_status st = lt_run_opts_load_yaml(&o, put(name, text));
    CHECK(st != LT_OK && strstr(lt_errmsg(), want1) && (!want2 || strstr(lt_errmsg(), want2)),
          "%s: status %s, message '%s', wanted '%s' and '%s'", name, lt_status_name(st),
          lt_errmsg(), want1, want2 ? want2 : "");
}

static void data_err(const char *name, const char *text, const char *want1, const char *want2) {
    lt_data_opts o;
    lt_data_opts_default(&o);
    lt_data *d = NULL;
    /* structure only (no tokenizer): the checks are the reader's and the record's */
    lt_status st = lt_data_open(put(name, text), NULL, NULL, &o, &d);
    CHECK(st == LT_ERR_FORMAT && strstr(lt_errmsg(), want1) &&
              (!want2 || strstr(lt_errmsg(), want2)),
          "%s: status %s, message '%s', wanted '%s' and '%s'", name, lt_status_name(st),
          lt_errmsg(), want1, want2 ? want2 : "");
    lt_data_free(d);
}

int main(void) {
    g_dir = lt_tmpdir();

    /* ---- YAML ---- */
    { /* the control: the same options once each load */
        lt_run_opts o;
        lt_run_opts_default(&o);
        CHECK_OK(
            lt_run_opts_load_yaml(&o, put("ok.yaml", "model: m\nlora_rank: 8\nlora_alpha: 16\n")));
    }
    yaml_err("dup.yaml", "model: m\nlora_rank: 8\nlora_alpha: 16\nlora_rank: 16\n",
             "dup.yaml:4:", "first on line 2");
    yaml_err("dup2.yaml", "model: m\nlora-rank: 8\nlora_rank: 16\n", "dup2.yaml:3:", "set twice");
    yaml_err("unclosed.yaml", "model: m\nlora_rank: [8\nlora_alpha: 16\n",
             "unclosed.yaml:", "YAML:");
    yaml_err("unclosed3.yaml", "model: m\nlora_rank: [8\nlora_alpha: 16\n", "flow sequence",
             "started on line 2");
    { /* the unclosed '[' is not described as a list value */
        lt_run_opts o;
        lt_run_opts_default(&o);
        lt_run_opts_load_yaml(&o, put("unclosed2.yaml", "model: m\nlora_rank: [8\n"));
        CHECK(!strstr(lt_errmsg(), "got a list"), "unclosed '[' reported as '%s'", lt_errmsg());
    }

    /* ---- JSONL / JSON list ---- */
    {
        lt_data_opts o;
        lt_data_opts_default(&o);
        lt_data *d = NULL;
        CHECK_OK(lt_data_open(put("ok.jsonl", "{\"text\": \"hello\"}\n{\"text\": \"world\"}\n"),
                              NULL, NULL, &o, &d));
        lt_data_free(d);
    }
    data_err("dupkey.jsonl", "{\"text\": \"a b\"}\n{\"text\": \"x\", \"text\": \"y\"}\n",
             "dupkey.jsonl:2:", "duplicate");
    data_err("dupkey.json",
             "[\n{\"text\": \"a\"},\n{\"prompt\": \"p\", \"completion\": \"c\", "
             "\"prompt\": \"q\"}\n]\n",
             "dupkey.json:3:", "duplicate");
    data_err("nested.jsonl",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\", \"content\": \"ho\"}, "
             "{\"role\": \"assistant\", \"content\": \"x\"}]}\n",
             "nested.jsonl:1:", "duplicate");
    data_err("ws.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"  \\n\\t \"}\n",
             "ws.jsonl:2:", "'text' holds only whitespace");
    data_err("ws_completion.jsonl", "{\"prompt\": \"q\", \"completion\": \" \"}\n",
             "ws_completion.jsonl:1:", "'completion' holds only whitespace");
    data_err("ws_chat.jsonl",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
             "{\"role\": \"assistant\", \"content\": \"\\r\\n\"}]}\n",
             "ws_chat.jsonl:1:", "only whitespace");
    LT_TEST_END();
}
