/* task_metric.h - `loratune compare`'s task metric: greedy generation on the data's test split,
 * scored as the task defines it (docs/TUNE.md, "The task metric").
 *
 *   wikisql  exact match of the SQL: text records "...\nA: SELECT ..."; the prompt is the text
 *            through the last "\nA:", the reference what follows it (trimmed); the prediction
 *            is the generated text up to its first newline (trimmed); correct when equal.
 *   gsm8k    final-answer accuracy: text records "...\nA: <solution>\n#### N"; the reference is
 *            N; the prediction is the number after the first "####" in the generated text,
 *            else its last number (lm-evaluation-harness's strict, then flexible, extraction);
 *            commas and '$' dropped, compared as numbers.
 * Records: text ("...\nA: answer", as above), completions {"prompt", "completion"} and chat
 * {"messages": [...]} (the format detected from the first record's keys as the data layer does,
 * or given by --data-format). A completions record's prompt is the chat template's rendering of
 * [{user: prompt}] with the generation prompt, its answer the completion; a chat record's
 * prompt is the rendering of every message but the last (which must be the assistant's) with
 * the generation prompt, its answer that last message's content: the prompt the training data
 * put before the tokens it trained on (docs/DATA.md). The answer then decides the task as for
 * text records (an SQL SELECT: wikisql; a last line "#### N": gsm8k).
 * Other data (alpaca, sharegpt, records with tools, a chat record without a chat template, any
 * other answer, or a folder without test.jsonl): no task metric (loss only), with the reason
 * in words.
 *
 * Generation is what `loratune generate --temp 0 --prompt PROMPT [--adapter A]` does (the
 * prompt encoded with BOS, the model mapped lazily, 8-bit activations for quantized weights,
 * greedy), cut short once the answer is complete (wikisql: a newline; gsm8k: a newline after
 * "####"), so each text is a prefix of that command's output. Chat-rendered prompts are encoded
 * as `generate --chat` encodes them (no BOS added: the template writes it; special tokens
 * parsed) and generation also stops at the end-of-turn tokens `generate --chat` stops at. */
#ifndef LT_APPS_TASK_METRIC_H
#define LT_APPS_TASK_METRIC_H

#include <jansson.h>

#include "loratune/core.h"
#include "loratune/data.h"

struct lt_chat_template;

typedef enum { TASK_NONE = 0, TASK_WIKISQL, TASK_GSM8K } task_kind;

typedef struct {
    task_kind kind;
    int chat;         /* 1: prompts are chat-template renderings (completions / chat records) */
    char why[1400];   /* TASK_NONE: why there is no metric; else what the metric is */
    char path[1100];  /* the test file read */
    int n;            /* examples kept (the first n of the file) */
    char **prompt;    /* [n] owned */
    char **reference; /* [n] owned: the SQL, or the final answer's number */
    long *line;       /* [n] 1-based line in path */
    int max_tokens;   /* new tokens per example */
} task_set;

/* Reads the test split of data (a folder with test.jsonl). want: "auto", "wikisql", "gsm8k" or
 * "none"; limit: the first `limit` records at most (0: all); max_tokens 0: the task's default
 * (wikisql 64, gsm8k 256). fmt: the data's format (LT_DATA_AUTO: from the first record's keys);
 * tpl: the model's chat template (NULL: none; completions / chat records then have no metric).
 * Returns 0 with ts->kind TASK_NONE and ts->why when the data has no task metric under auto;
 * LT_ERR_FORMAT naming FILE:LINE when a task was asked for and a record does not fit it (or
 * the file is not JSONL). */
lt_status task_set_load(const char *data, const char *want, int limit, int max_tokens,
                        lt_data_format fmt, const struct lt_chat_template *tpl, task_set *ts);
void task_set_free(task_set *ts);

/* Generates for every example with model (+ adapter: a PEFT folder, or NULL) and scores it.
 * tokenizer: "" or NULL = from the model. Writes gen_path (JSONL: line, prompt, reference,
 * generated, prediction, correct) and returns *result {"name", "description", "value",
 * "correct", "n", "max_tokens", "seconds", "generations"}. */
lt_status task_eval(const task_set *ts, const char *model, const char *tokenizer,
                    const char *adapter, const char *gen_path, json_t **result);

/* The scoring rules alone (the tests recompute them in Python): 1 when generated scores as
 * correct against reference; *pred (malloc'd, caller frees) the extracted prediction. */
int task_score(task_kind k, const char *generated, const char *reference, char **pred);

const char *task_name(task_kind k); /* "none", "wikisql", "gsm8k" */

#endif
