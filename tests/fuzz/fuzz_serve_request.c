/* fuzz_serve_request.c - the request bodies of `loratune serve`'s OpenAI-compatible API
 * (/v1/completions and /v1/chat/completions), read as the server reads them: json_loadb with
 * JSON_REJECT_DUPLICATES (server.c's dispatch), an object, then what lt_oai_complete does
 * before generating: lt_oai_check_fields (unknown fields, model), lt_oai_parse_params
 * (temperature, top_p, max_tokens, seed, n, top_k, penalties, logprobs, tools, stop, stream,
 * stream_options) and the prompt's ids (lt_oai_chat_ids: messages and content parts rendered
 * with the ChatML template; lt_oai_completion_ids: a string, a list of one string or of ids)
 * with stories260K's tokenizer. Each body is read as both endpoints; its "options", if an
 * object, as those of a train job (POST /api/jobs, /api/plan). Property: a refusal names a
 * field (param) and says what was expected. No socket: libmicrohttpd's own HTTP parsing is
 * not ours to fuzz. Seeds: the bodies the serve tests and docs/SERVING.md send. */
#include <jansson.h>

#include "fuzz_util.h"
#include "loratune/chat.h"
#include "loratune/run.h"
#include "loratune/tokenizer.h"
#include "serve/serve_internal.h"

static lt_tokenizer *tok;
static lt_chat_template *tpl;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char *j = NULL;
    size_t n = 0;
    if (lt_tokenizer_load_spm(fz_fixture("stories260K/tok512.model"), &tok) ||
        lt_file_read_all(LT_SOURCE_DIR "/tests/data/chat_templates/chatml.jinja", &j, &n) ||
        lt_chat_template_from_string(j, n, &tpl) ||
        lt_chat_template_set_special(tpl, "<s>", "</s>")) {
        fprintf(stderr, "fuzz_serve_request: %s\n", lt_errmsg());
        abort();
    }
    free(j);
    return 0;
}

static void request(const json_t *body, int chat) {
    char msg[1024] = "";
    const char *param = NULL, *code = NULL, *model = NULL;
    if (lt_oai_check_fields(body, chat, &model, &param, &code, msg, sizeof msg)) {
        FZ_CHECK(param && code && msg[0], "a refused field is named");
        return;
    }
    FZ_CHECK(model != NULL, "the model's name");
    lt_oai_req r;
    int bad = lt_oai_parse_params(body, chat, &r, &param, msg, sizeof msg);
    lt_oai_req_clear(&r);
    if (bad) {
        FZ_CHECK(bad == 400 && param && msg[0], "a refused field is named");
        return;
    }
    FZ_CHECK(r.temperature >= 0 && r.temperature <= 2 && r.top_p > 0 && r.top_p <= 1 &&
                 r.max_tokens >= 1 && r.top_k >= 0,
             "accepted sampling values are in range");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    lt_status st = chat ? lt_oai_chat_ids(tok, tpl, json_object_get(body, "messages"), &ids, &n_ids,
                                          msg, sizeof msg)
                        : lt_oai_completion_ids(tok, lt_tokenizer_vocab_size(tok),
                                                json_object_get(body, "prompt"), &ids, &n_ids, msg,
                                                sizeof msg);
    if (st) {
        FZ_CHECK(st < 0 && msg[0], "a refused prompt says why");
    } else {
        int32_t V = lt_tokenizer_vocab_size(tok);
        for (size_t i = 0; i < n_ids; i++)
            FZ_CHECK(ids[i] >= 0 && ids[i] < V, "a prompt id inside the vocabulary");
    }
    lt_free(ids);
}

/* The "options" of POST /api/jobs and /api/plan: each value through lt_serve_opt_text and the
 * option table (lt_run_opts_set), as jobs.c and plan.c take them, then lt_run_opts_validate
 * with the paths the server would set. */
static void job_options(const json_t *opts) {
    lt_run_opts o;
    lt_run_opts_default(&o);
    snprintf(o.model, sizeof o.model, "MODELS/m.gguf");
    snprintf(o.data, sizeof o.data, "WORK/datasets/ds_0123456789abcdef/train.jsonl");
    snprintf(o.out, sizeof o.out, "WORK/jobs/(new)/out");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)opts, key, v) {
        char buf[64];
        const lt_run_opt_info *in = lt_run_opt_get(lt_run_opt_find(key));
        if (!in) {
            fz_refused(lt_run_opts_set(&o, key, ""), "an unknown option");
            return;
        }
        if (in->type == LT_OPT_STRING || !strcmp(in->name, "json")) return; /* server's own */
        const char *t = lt_serve_opt_text(v, buf, sizeof buf);
        if (!t) return;
        lt_status s = lt_run_opts_set(&o, in->name, t);
        if (s) {
            fz_refused(s, "lt_run_opts_set");
            return;
        }
    }
    lt_status s = lt_run_opts_validate(&o, 1);
    if (s) fz_refused(s, "lt_run_opts_validate");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t e;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (!body) return 0;
    if (json_is_object(body)) {
        request(body, 0);
        request(body, 1);
        const json_t *opts = json_object_get(body, "options");
        if (json_is_object(opts)) job_options(opts);
    }
    json_decref(body);
    return 0;
}
