/* data.h - fine-tuning data: JSONL / JSON in the shapes mlx-lm and TRL accept, validated with
 * errors naming file, line and field, tokenized with the model's chat template into examples
 * with a loss mask, and cut into lt_batch micro-batches (padding or packing, seeded shuffling).
 *
 * Formats (lt_data_format):
 *   text        {"text": "..."}                                   loss on every token
 *   completions {"prompt": "...", "completion": "..."}            loss on the completion
 *   chat        {"messages": [{"role","content"}...], "tools"?}   loss on assistant turns
 *   alpaca      {"instruction", "input"?, "output", "system"?}     loss on output
 *   sharegpt    {"conversations": [{"from","value"}...]}           loss on gpt turns
 * in JSONL (one object per line) or a JSON file holding a list of such objects. AUTO detects
 * the format from the first record's keys; every record must then have that shape.
 *
 * Where the data lives: a folder with train.jsonl and optional valid.jsonl / test.jsonl (the
 * mlx-lm convention; .json accepted too), or one file, split into train / valid by a seeded
 * shuffle (valid_fraction).
 *
 * Ownership: everything lt_data_* returns is owned by the returned object; the tokenizer and
 * template are borrowed for the lt_data_open call only. */
#ifndef LORATUNE_DATA_H
#define LORATUNE_DATA_H

#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lt_tokenizer;
struct lt_chat_template;

typedef enum {
    LT_DATA_AUTO = 0,
    LT_DATA_TEXT,
    LT_DATA_COMPLETIONS,
    LT_DATA_CHAT,
    LT_DATA_ALPACA,
    LT_DATA_SHAREGPT,
} lt_data_format;
/* "auto", "text", "completions", "chat", "alpaca", "sharegpt" */
const char *lt_data_format_name(lt_data_format f);
/* Also accepts "prompt-completion" for completions and "messages" for chat; LT_ERR_ARG naming
 * the value and the accepted names otherwise. */
lt_status lt_data_format_parse(const char *s, lt_data_format *out);

/* A record whose text (every string that is tokenized: text, prompt, completion, message
 * contents, system) is longer than lt_data_record_limit(max_seq_len) bytes is refused with
 * FILE:LINE, its size and the limit: the whole record would be tokenized before truncation,
 * costing time and memory for tokens that are thrown away. The limit is
 * max(LT_DATA_RECORD_MIN_LIMIT, LT_DATA_RECORD_BYTES_PER_TOKEN * max_seq_len): far above what
 * max_seq_len tokens take (about 4 bytes a token in English). */
#define LT_DATA_RECORD_MIN_LIMIT (4 << 20)
#define LT_DATA_RECORD_BYTES_PER_TOKEN 64
int64_t lt_data_record_limit(int max_seq_len);

typedef struct {
    lt_data_format format; /* AUTO: detect */
    int max_seq_len;       /* examples longer than this are truncated (counted in the summary) */
    int train_on_prompt;   /* 1: loss on every token, not only completions / assistant turns */
    double valid_fraction; /* single-file input: fraction held out for validation (default 0.1;
                              at least 1 example when the file has >= 2) */
    uint64_t seed;         /* the single-file split */
    /* Optional progress hook: called after each record is read (and tokenized) with the
       records read so far, on the calling thread; a non-zero return stops reading and
       lt_data_open fails with LT_ERR_CANCELLED. */
    int (*progress)(void *ctx, int64_t records);
    void *progress_ctx;
} lt_data_opts;
void lt_data_opts_default(lt_data_opts *o); /* AUTO, 2048, 0, 0.1, 42 */

/* One tokenized example: n tokens, mask[i] = 1 when token i is a loss target (predicted from
 * the tokens before it). */
typedef struct {
    int32_t *tokens;
    uint8_t *mask;
    int n;
    int n_orig;        /* length before truncation (n < n_orig when truncated) */
    int64_t line;      /* 1-based line of the record in its source file (JSON lists: where the
                          object starts) */
    int mask_fallback; /* 1: a token straddles a turn boundary; the mask's boundaries come from
                          prefix tokenizations (docs/DATA.md) */
} lt_example;

typedef enum { LT_SPLIT_TRAIN = 0, LT_SPLIT_VALID, LT_SPLIT_TEST, LT_SPLIT_COUNT } lt_split;
const char *lt_split_name(lt_split s); /* "train", "valid", "test" */

typedef struct {
    lt_data_format format; /* detected or given */
    int64_t n_examples;
    int64_t n_tokens;      /* after truncation */
    int64_t n_loss_tokens; /* tokens counted in the loss */
    int64_t n_truncated;   /* examples longer than max_seq_len */
    int min_len, max_len;  /* before truncation */
    double mean_len;
    int64_t hist[16]; /* examples per length bucket [hist_edges[i], hist_edges[i+1]) */
    int hist_edges[17];
    int n_buckets;
    char source[512];  /* the file the split came from (and "(split of ...)" when split) */
    int counts_tokens; /* 1: lengths are tokens; 0: structure-only check (tok == NULL), lengths
                          are characters (code points) of the text fields */
    int64_t n_no_loss; /* examples with no loss token left (e.g. the answer truncated away) */
    int64_t n_mask_fallback; /* chat-shaped examples whose turns could not be tokenized apart
                               (a token straddles a turn boundary): mask from prefix
                               tokenizations instead, see docs/DATA.md */
} lt_data_summary;

typedef struct lt_data lt_data;

/* Reads, validates and tokenizes path (a folder or one file). Errors name the first bad
 * record: LT_ERR_FORMAT "FILE:LINE: 'messages' must be a list of {role, content}, got a string"
 * (also invalid JSON / UTF-8 with the column, a record of another format, empty strings,
 * unknown roles, an empty file), LT_ERR_NOTFOUND for a folder without train.jsonl, LT_ERR_IO
 * when the path can't be read, LT_ERR_UNSUPPORTED for what is valid but not supported (tool
 * calls; tools on a template that can't render them; chat-shaped data when tpl is NULL).
 * tpl may be NULL: only text data then. tok may be NULL for a structure-only check: records
 * are validated and counted (lt_data_count), lengths are characters, lt_data_example returns
 * NULL, no batcher can be made. Chat-shaped data: loss masks and tools as docs/DATA.md says.
 * *out is new. */
lt_status lt_data_open(const char *path, const struct lt_tokenizer *tok,
                       const struct lt_chat_template *tpl, const lt_data_opts *o, lt_data **out);
void lt_data_free(lt_data *d); /* safe on NULL */
/* The format detected (or given) for the data. */
lt_data_format lt_data_get_format(const lt_data *d);
int64_t lt_data_count(const lt_data *d, lt_split s); /* 0 when the split is absent */
const lt_example *lt_data_example(const lt_data *d, lt_split s, int64_t i);
lt_status lt_data_summary_get(const lt_data *d, lt_split s, lt_data_summary *out);
/* Prints a human summary of every present split (examples, tokens, length histogram,
 * truncated examples) to f (a FILE *). */
void lt_data_summary_print(const lt_data *d, void *f);

/* ---- batches --------------------------------------------------------------------------- */
/* One micro-batch. tokens/targets[B*T] (target LT_IGNORE_INDEX = -100: not counted; targets
 * are already shifted: targets[t] is what position t must predict); pos[B*T] per-token
 * positions (NULL: 0..T-1 in each row); seq[B*T] sequence ids (NULL: one sequence per row;
 * tokens attend only to earlier tokens of the same id in their row). What the
 * trainer takes (train.h): B <= its config's batch_size, T <= its seq_len. */
typedef struct {
    int B, T;
    const int32_t *tokens;
    const int32_t *targets;
    const int32_t *pos;
    const int32_t *seq;
} lt_batch;
/* Targets != -100 in the batch (to build the step's normaliser). */
int64_t lt_batch_count(const lt_batch *b);

typedef struct lt_batcher lt_batcher;
typedef struct {
    int batch_size; /* rows per micro-batch */
    int seq_len;    /* the longest row (use max_seq_len; give the trainer this seq_len). An
                       example of n tokens fills min(n - 1, seq_len) positions: its last token
                       is only a target. Each batch is cut to its longest row (b->T <= seq_len) */
    int pack;       /* 1: several examples per row, with their own positions and sequence ids */
    int shuffle;    /* 1: seeded order, reshuffled every epoch; 0: file order (evaluation) */
    uint64_t seed;
} lt_batcher_opts;

/* Batches of split s. Targets are shifted (targets[t] = tokens[t+1] when that token is a loss
 * target, else LT_IGNORE_INDEX); padding (token 0) has target LT_IGNORE_INDEX; packed rows
 * never predict across examples. A batch has batch_size rows except the epoch's last one
 * (fewer: every example appears exactly once per epoch). pos / seq are set only when packing
 * (positions restart at 0 for every example; seq ids 0, 1, ... per example in the row) and are
 * NULL otherwise. d is borrowed and must outlive the batcher. *out is new. */
lt_status lt_batcher_create(const lt_data *d, lt_split s, const lt_batcher_opts *o,
                            lt_batcher **out);
void lt_batcher_free(lt_batcher *b); /* safe on NULL */
/* Micro-batches in one pass over the split (the current epoch's: with packing the count
 * depends on the epoch's order). */
int64_t lt_batcher_epoch_batches(const lt_batcher *b);
/* The next micro-batch; after the last one of an epoch the next call starts a new epoch
 * (reshuffled). b's arrays belong to the batcher and stay valid until the next call. */
lt_status lt_batcher_next(lt_batcher *bt, lt_batch *b);
/* Position (for checkpoints): epoch number and batches already taken in it. The order of
 * every epoch is a pure function of (seed, epoch), so set_state resumes exactly. */
void lt_batcher_get_state(const lt_batcher *b, int64_t *epoch, int64_t *index);
lt_status lt_batcher_set_state(lt_batcher *b, int64_t epoch, int64_t index);

#ifdef __cplusplus
}
#endif
#endif
