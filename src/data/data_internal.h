/* data_internal.h - what the data layer's files share (not public).
 *
 * data_read.c turns a file into records (one jansson object each, with the line it starts on),
 * data.c validates records into conversations, tokenizes them and keeps the splits,
 * batcher.c cuts a split into lt_batch micro-batches. */
#ifndef LT_DATA_INTERNAL_H
#define LT_DATA_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "loratune/chat.h"
#include "loratune/data.h"

/* ---- reading records (data_read.c) ---------------------------------------------------- */
typedef struct {
    const char *path; /* as given, for messages (borrowed) */
    char *buf;        /* the whole file (owned) */
    size_t len;
    size_t pos;
    int64_t line; /* line of buf[pos] (1-based) */
    int is_list;  /* a JSON list of objects (else JSON Lines) */
    json_t *list; /* the parsed list (is_list) */
    size_t list_i;
    int64_t n_records; /* records returned so far */
} lt_data_reader;

/* Reads path, checks UTF-8 (errors name FILE:LINE and the column), and tells JSON Lines from a
 * JSON list (first non-blank byte '['). An empty file is LT_ERR_FORMAT. */
lt_status lt_data_reader_open(const char *path, lt_data_reader *r);
/* The next record: *rec a new reference (a JSON object), *line its first line. Returns LT_OK
 * with *rec == NULL at the end. Errors name FILE:LINE (and the column for invalid JSON). Blank
 * lines of JSON Lines are skipped. */
lt_status lt_data_reader_next(lt_data_reader *r, json_t **rec, int64_t *line);
void lt_data_reader_close(lt_data_reader *r);

/* "a string", "a number", "an object", "a list", "true", "false", "null". */
const char *lt_json_type_desc(const json_t *v);

/* ---- shuffling (batcher.c) -------------------------------------------------------------- */
/* perm[0..n) = a permutation of 0..n-1 that is a pure function of (seed, stream). */
void lt_data_permute(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream);

#endif
