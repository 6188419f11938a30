/* task_metric.c - compare's task metric by greedy generation on the test split (task_metric.h,
 * docs/TUNE.md "The task metric"). */
#include "task_metric.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loratune/adapter.h"
#include "loratune/backend.h"
#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/sampler.h"
#include "loratune/tokenizer.h"

const char *task_name(task_kind k) {
    return k == TASK_WIKISQL ? "wikisql" : k == TASK_GSM8K ? "gsm8k" : "none";
}

void task_set_free(task_set *ts) {
    if (!ts) return;
    for (int i = 0; i < ts->n; i++) {
        free(ts->prompt[i]);
        free(ts->reference[i]);
    }
    free(ts->prompt);
    free(ts->reference);
    free(ts->line);
    ts->prompt = ts->reference = NULL;
    ts->line = NULL;
    ts->n = 0;
}

static char *dup_trim(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n), r[n] = 0;
    return r;
}

/* The number after "####" on the last non-empty line of a GSM8K solution, or NULL. */
static char *gsm8k_reference(const char *ans) {
    const char *h = NULL;
    for (const char *p = strstr(ans, "####"); p; p = strstr(p + 1, "####"))
        h = p;
    if (!h) return NULL;
    const char *e = h + 4;
    while (*e && *e != '\n')
        e++;
    for (const char *q = e; *q; q++)
        if (!isspace((unsigned char)*q)) return NULL; /* "####" not on the last line */
    char *num = NULL;
    int c = task_score(TASK_GSM8K, h, "0", &num); /* the extraction rule itself */
    (void)c;
    if (num && !*num) free(num), num = NULL;
    return num;
}

/* Numbers in GSM8K text: -?[0-9][0-9,]*(\.[0-9]+)?, returned without commas. */
static const char *next_number(const char *p, char *buf, size_t bn) {
    for (; *p; p++) {
        int neg = *p == '-' && isdigit((unsigned char)p[1]);
        if (!isdigit((unsigned char)*p) && !neg) continue;
        size_t k = 0;
        if (neg) buf[k++] = '-', p++;
        while (*p && (isdigit((unsigned char)*p) || (*p == ',' && isdigit((unsigned char)p[1])))) {
            if (*p != ',' && k + 1 < bn) buf[k++] = *p;
            p++;
        }
        if (*p == '.' && isdigit((unsigned char)p[1])) {
            if (k + 1 < bn) buf[k++] = *p;
            p++;
            while (isdigit((unsigned char)*p)) {
                if (k + 1 < bn) buf[k++] = *p;
                p++;
            }
        }
        buf[k] = 0;
        return p;
    }
    return NULL;
}

int task_score(task_kind k, const char *gen, const char *ref, char **pred) {
    *pred = NULL;
    if (k == TASK_WIKISQL) {
        const char *nl = strchr(gen, '\n');
        *pred = dup_trim(gen, nl ? (size_t)(nl - gen) : strlen(gen));
        return *pred && !strcmp(*pred, ref);
    }
    if (k != TASK_GSM8K) return 0;
    char num[128] = "", last[128] = "";
    const char *h = strstr(gen, "####");
    if (h) { /* strict: "#### N" (spaces and '$' allowed between) */
        const char *p = h + 4;
        while (*p == ' ' || *p == '$')
            p++;
        if (isdigit((unsigned char)*p) || (*p == '-' && isdigit((unsigned char)p[1])))
            next_number(p, num, sizeof num);
    }
    if (!num[0]) /* flexible: the last number of the text */
        for (const char *p = gen; (p = next_number(p, last, sizeof last));)
            snprintf(num, sizeof num, "%s", last);
    *pred = strdup(num);
    if (!*pred || !num[0]) return 0;
    char *e1, *e2;
    double a = strtod(num, &e1), b = strtod(ref, &e2);
    return !*e1 && !*e2 && a == b;
}

/* The format a record's keys suggest, in the data layer's order (src/data/data.c). */
static lt_data_format format_of_keys(const json_t *r) {
    if (json_object_get(r, "prompt") && json_object_get(r, "completion"))
        return LT_DATA_COMPLETIONS;
    if (json_object_get(r, "messages")) return LT_DATA_CHAT;
    if (json_object_get(r, "text")) return LT_DATA_TEXT;
    if (json_object_get(r, "instruction") && json_object_get(r, "output")) return LT_DATA_ALPACA;
    if (json_object_get(r, "conversations")) return LT_DATA_SHAREGPT;
    return LT_DATA_AUTO;
}

/* A chat-shaped record's prompt (the template's rendering of the messages before the answer,
 * with the generation prompt; malloc'd) and answer (borrowed from r), or the reason why not. */
static const char *chat_prompt(const json_t *r, lt_data_format fmt, const lt_chat_template *tpl,
                               char **prompt, const char **answer, char *why, size_t wn) {
    *prompt = NULL;
    *answer = NULL;
    if (json_object_get(r, "tools") && !json_is_null(json_object_get(r, "tools")))
        return "a record with tools (the task metric renders no tool definitions)";
    lt_chat_message msgs[64];
    size_t n = 0;
    if (fmt == LT_DATA_COMPLETIONS) {
        const char *p = json_string_value(json_object_get(r, "prompt"));
        *answer = json_string_value(json_object_get(r, "completion"));
        if (!p || !*answer) return "\"prompt\" and \"completion\" must be strings";
        msgs[n++] = (lt_chat_message){"user", p};
    } else {
        const json_t *m = json_object_get(r, "messages");
        size_t k = json_array_size(m);
        if (!json_is_array(m) || k < 2)
            return "\"messages\" must be a list of at least two {role, content}";
        if (k > sizeof msgs / sizeof msgs[0] + 1)
            return "more than 65 messages (the task metric's limit)";
        for (size_t i = 0; i < k; i++) {
            const json_t *e = json_array_get(m, i);
            const char *role = json_string_value(json_object_get(e, "role"));
            const char *c = json_string_value(json_object_get(e, "content"));
            if (!role || !c) {
                snprintf(why, wn, "messages[%zu]: expected {\"role\": string, \"content\": string}",
                         i);
                return why;
            }
            if (i + 1 < k)
                msgs[n++] = (lt_chat_message){role, c};
            else if (strcmp(role, "assistant"))
                return "the last message is not the assistant's (the answer to score)";
            else
                *answer = c;
        }
    }
    if (!tpl) return "chat-shaped records need the model's chat template, and it has none";
    if (lt_chat_render(tpl, msgs, n, 1, prompt)) {
        snprintf(why, wn, "the chat template cannot render the prompt: %s", lt_errmsg());
        return why;
    }
    return NULL;
}

lt_status task_set_load(const char *data, const char *want, int limit, int max_tokens,
                        lt_data_format fmt, const lt_chat_template *tpl, task_set *ts) {
    memset(ts, 0, sizeof *ts);
    int forced = strcmp(want, "auto") != 0;
    if (!strcmp(want, "none")) {
        snprintf(ts->why, sizeof ts->why, "--task none");
        return LT_OK;
    }
    snprintf(ts->path, sizeof ts->path, "%s/test.jsonl", data);
    FILE *f = lt_path_is_dir(data) ? fopen(ts->path, "r") : NULL;
    if (!f) {
        snprintf(ts->why, sizeof ts->why, "%s",
                 lt_path_is_dir(data) ? "the data folder has no test.jsonl to generate on"
                                      : "the data is one file (no test split to generate on)");
        return forced ? lt_error(LT_ERR_ARG, "--task %s: %s", want, ts->why) : LT_OK;
    }
    task_kind k = !strcmp(want, "wikisql") ? TASK_WIKISQL
                  : !strcmp(want, "gsm8k") ? TASK_GSM8K
                                           : TASK_NONE;
    char *lb = NULL;
    size_t cap = 0;
    long lineno = 0;
    int ncap = 0;
    lt_status st = LT_OK;
    ssize_t len;
    char whybuf[600];
    while ((len = getline(&lb, &cap, f)) >= 0 && (!limit || ts->n < limit)) {
        lineno++;
        int blank = 1;
        for (ssize_t i = 0; i < len; i++)
            if (!isspace((unsigned char)lb[i])) blank = 0;
        if (blank) continue;
        json_error_t je;
        json_t *r = json_loads(lb, 0, &je);
        if (r && fmt == LT_DATA_AUTO) fmt = format_of_keys(r); /* the first record decides */
        const char *why = NULL, *ans = NULL;
        char *prompt = NULL;
        if (!json_is_object(r)) {
            why = "not a JSON object";
        } else if (fmt == LT_DATA_TEXT) {
            const char *text = json_string_value(json_object_get(r, "text"));
            const char *a = NULL;
            for (const char *p = text ? strstr(text, "\nA:") : NULL; p; p = strstr(p + 1, "\nA:"))
                a = p;
            why = !text ? "no \"text\" field"
                  : !a  ? "no \"\\nA:\" before the answer"
                        : NULL;
            if (!why) {
                size_t pl = (size_t)(a + 3 - text);
                if (!(prompt = malloc(pl + 1))) abort(); /* out of memory */
                memcpy(prompt, text, pl), prompt[pl] = 0;
                for (ans = a + 3; *ans == ' ';)
                    ans++;
            }
        } else if (fmt == LT_DATA_COMPLETIONS || fmt == LT_DATA_CHAT) {
            why = chat_prompt(r, fmt, tpl, &prompt, &ans, whybuf, sizeof whybuf);
            while (ans && isspace((unsigned char)*ans))
                ans++;
            ts->chat = 1;
        } else {
            snprintf(whybuf, sizeof whybuf,
                     "%s records (the task metric reads text records \"...\\nA: answer\", "
                     "completions {prompt, completion} and chat {messages})",
                     fmt == LT_DATA_AUTO ? "unrecognised" : lt_data_format_name(fmt));
            why = whybuf;
        }
        char *ref = NULL;
        if (!why) {
            task_kind guess = !strncmp(ans, "SELECT ", 7) ? TASK_WIKISQL : TASK_GSM8K;
            if (k == TASK_NONE) k = guess; /* auto: the first record decides */
            if (k == TASK_WIKISQL) {
                if (strncmp(ans, "SELECT ", 7))
                    why = fmt == LT_DATA_TEXT ? "the answer after \"A:\" is not an SQL SELECT"
                                              : "the answer is not an SQL SELECT";
                else
                    ref = dup_trim(ans, strlen(ans));
            } else if (!(ref = gsm8k_reference(ans))) {
                why = "the answer does not end with a line \"#### <number>\"";
            }
        }
        json_decref(r);
        if (why) {
            free(prompt);
            if (forced) {
                st = lt_error(LT_ERR_FORMAT, "%s:%ld: task %s: %s", ts->path, lineno,
                              task_name(k ? k : TASK_WIKISQL), why);
                break;
            }
            snprintf(ts->why, sizeof ts->why, "%.780s:%ld: %.590s", ts->path, lineno, why);
            k = TASK_NONE;
            break;
        }
        if (ts->n == ncap) {
            ncap = ncap ? 2 * ncap : 64;
            ts->prompt = realloc(ts->prompt, sizeof(char *) * ncap);
            ts->reference = realloc(ts->reference, sizeof(char *) * ncap);
            ts->line = realloc(ts->line, sizeof(long) * ncap);
            if (!ts->prompt || !ts->reference || !ts->line) abort(); /* out of memory */
        }
        ts->prompt[ts->n] = prompt;
        ts->reference[ts->n] = ref;
        ts->line[ts->n] = lineno;
        ts->n++;
    }
    free(lb);
    fclose(f);
    if (st || k == TASK_NONE || !ts->n) {
        if (!st && !ts->why[0]) snprintf(ts->why, sizeof ts->why, "%s: no records", ts->path);
        task_set_free(ts);
        ts->kind = TASK_NONE;
        return st;
    }
    ts->kind = k;
    ts->max_tokens = max_tokens > 0 ? max_tokens : k == TASK_WIKISQL ? 64 : 256;
    snprintf(ts->why, sizeof ts->why,
             "%s on the first %d examples of %s (%s%s, greedy, %d new tokens at most)",
             k == TASK_WIKISQL ? "WikiSQL exact match of the SQL" : "GSM8K final-answer accuracy",
             ts->n, ts->path, lt_data_format_name(fmt),
             ts->chat ? " records through the chat template" : " records", ts->max_tokens);
    return LT_OK;
}

typedef struct {
    task_kind k;
    char *buf;
    size_t n, cap;
} gen_acc;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    gen_acc *g = user;
    if (g->n + len + 1 > g->cap) {
        size_t c = (g->n + len + 1) * 2;
        char *b = realloc(g->buf, c);
        if (!b) return 1;
        g->buf = b, g->cap = c;
    }
    memcpy(g->buf + g->n, text, len);
    g->n += len;
    g->buf[g->n] = 0;
    if (g->k == TASK_WIKISQL) return strchr(g->buf, '\n') != NULL;
    const char *h = strstr(g->buf, "####");
    return h && strchr(h, '\n') != NULL;
}

lt_status task_eval(const task_set *ts, const char *model, const char *tokenizer,
                    const char *adapter, const char *gen_path, json_t **result) {
    *result = NULL;
    lt_model *m = NULL;
    lt_tokenizer *tok = NULL;
    lt_adapter *ad = NULL;
    lt_model_delta *delta = NULL;
    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    FILE *gf = NULL;
    gen_acc g = {.k = ts->kind};
    int correct = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const lt_backend *be = lt_backend_cpu(); /* as `loratune generate`: one thread pool */
    if (be->op->step_begin) be->op->step_begin(be, 0);
    lt_model_load_opts lo = {.lazy = 1};
    lt_status st = lt_model_load(model, &lo, &m);
    if (!st) st = lt_tokenizer_load(tokenizer && *tokenizer ? tokenizer : model, &tok);
    if (!st && adapter && (st = lt_adapter_load(adapter, &m->config, &ad)) == LT_OK)
        st = lt_adapter_delta_create(ad, m, &delta);
    int ctx = 0;
    if (!st) {
        ctx = m->config.max_seq_len < 4096 ? m->config.max_seq_len : 4096;
        st = lt_kv_cache_create(m, ctx, 256, &kv);
    }
    if (!st) {
        lt_kv_cache_set_qact(kv, 1);
        st = lt_sampler_create(&(lt_sampler_params){.temperature = 0, .top_p = 0.95f},
                               m->config.vocab_size, &s);
    }
    int32_t stop[8];
    int n_stop = 0;
    if (!st && ts->chat) { /* the end-of-turn tokens `loratune generate --chat` stops at */
        static const char *eot[] = {"<|im_end|>",    "<|eot_id|>", "<|end_of_text|>",
                                    "<|endoftext|>", "<|end|>",    "</s>"};
        for (size_t i = 0; i < sizeof eot / sizeof eot[0] && n_stop < 8; i++) {
            int32_t id = lt_tokenizer_find(tok, eot[i]);
            if (id >= 0) stop[n_stop++] = id;
        }
    }
    if (!st && !(gf = fopen(gen_path, "w"))) st = lt_error(LT_ERR_IO, "%s: cannot write", gen_path);
    for (int i = 0; !st && i < ts->n; i++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        /* a chat rendering already holds BOS where the model wants it (as generate --chat) */
        if ((st = lt_tokenizer_encode(tok, ts->prompt[i], strlen(ts->prompt[i]), !ts->chat, 1,
                                      &ids, &n_ids)))
            break;
        int room = ctx - (int)n_ids;
        g.n = 0;
        if (g.buf) g.buf[0] = 0;
        if (room > 0) {
            lt_generate_opts go = {.max_tokens = room < ts->max_tokens ? room : ts->max_tokens,
                                   .stop_at_eos = 1,
                                   .stop_ids = stop,
                                   .n_stop_ids = n_stop,
                                   .on_token = on_token,
                                   .user = &g};
            st = lt_generate(m, delta, kv, tok, s, ids, (int)n_ids, &go, NULL, NULL);
        }
        free(ids);
        if (st) break;
        const char *gen = g.buf ? g.buf : "";
        char *pred = NULL;
        int ok = task_score(ts->kind, gen, ts->reference[i], &pred);
        correct += ok;
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:b}", "line", (json_int_t)ts->line[i],
                              "prompt", ts->prompt[i], "reference", ts->reference[i], "generated",
                              gen, "prediction", pred ? pred : "", "correct", ok);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (!line || fprintf(gf, "%s\n", line) < 0)
            st = lt_error(LT_ERR_IO, "%s: cannot write", gen_path);
        free(line);
        json_decref(o);
        free(pred);
    }
    if (gf && fclose(gf) && !st) st = lt_error(LT_ERR_IO, "%s: cannot write", gen_path);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!st)
        *result = json_pack("{s:s, s:s, s:f, s:i, s:i, s:i, s:f, s:s}", "name",
                            ts->kind == TASK_WIKISQL ? "wikisql_exact_match" : "gsm8k_accuracy",
                            "description", ts->why, "value", (double)correct / ts->n, "correct",
                            correct, "n", ts->n, "max_tokens", ts->max_tokens, "seconds",
                            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec),
                            "generations", gen_path);
    free(g.buf);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    lt_adapter_delta_free(delta);
    lt_adapter_free(ad);
    lt_tokenizer_free(tok);
    lt_model_free(m);
    return st;
}
