/* json_file.c - lt_json_load_file: whole-file read, jansson parse, a message with the position. */
#include "core/json_file.h"

#include <stdlib.h>

lt_status lt_json_load_file(const char *path, size_t flags, json_t **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_file_read_all(path, &text, &len);
    if (st) return st;
    json_error_t err;
    json_t *root = json_loadb(text, len, flags, &err);
    free(text);
    if (!root)
        return lt_error(LT_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s", path, err.line,
                        err.column, err.text);
    *out = root;
    return LT_OK;
}
