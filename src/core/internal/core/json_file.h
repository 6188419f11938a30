/* json_file.h - read a JSON file with jansson (internal: the public headers don't expose
 * jansson). One place for the read + parse + error message every JSON-reading module needs. */
#ifndef LT_JSON_FILE_H
#define LT_JSON_FILE_H

#include <jansson.h>

#include "loratune/core.h"

/* Reads and parses path with jansson `flags` (e.g. JSON_REJECT_DUPLICATES). On success *out is
 * a new reference (json_decref it). Errors: LT_ERR_IO naming the file when it can't be read,
 * LT_ERR_FORMAT "PATH: line L column C: invalid JSON: WHY" when it doesn't parse. */
lt_status lt_json_load_file(const char *path, size_t flags, json_t **out);

#endif
