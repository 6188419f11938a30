/* data_read.c - records out of a data file: JSON Lines (one object per line; blank lines
 * skipped) or a JSON list of objects, in UTF-8 (a leading BOM is skipped).
 *
 * Every error names the file and the line (and the column for invalid JSON / UTF-8), as a
 * user would look it up in an editor. For a JSON list the whole file is parsed once by jansson
 * (so its errors carry file coordinates) and a small scanner finds the line each element starts
 * on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

const char *lt_json_type_desc(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}

/* Length of the UTF-8 sequence at s[0..n) (strict: no overlongs, surrogates or > U+10FFFF),
 * 0 if invalid. */
static size_t u8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return k;
}

static lt_status check_utf8(const char *path, const char *buf, size_t len, size_t start) {
    const unsigned char *s = (const unsigned char *)buf;
    int64_t line = 1;
    size_t line_start = 0;
    long col = 1;
    for (size_t i = start; i < len;) {
        if (s[i] == '\n') {
            line++;
            line_start = i + 1;
            col = 1;
            i++;
            continue;
        }
        size_t k = u8_len(s + i, len - i);
        if (!k)
            return lt_error(LT_ERR_FORMAT,
                            "%s:%lld: invalid UTF-8 at column %ld (byte 0x%02x, byte %zu of "
                            "the line): expected UTF-8 text",
                            path, (long long)line, col, s[i], i - line_start + 1);
        i += k;
        col++;
    }
    return LT_OK;
}

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skips a JSON value that is known to be valid, from buf[*pos]; counts newlines into *line. */
static void skip_value(const char *b, size_t len, size_t *pos, int64_t *line) {
    size_t i = *pos;
    int depth = 0;
    do {
        if (i >= len) break;
        char c = b[i];
        if (c == '"') {
            for (i++; i < len && b[i] != '"'; i++)
                if (b[i] == '\\') i++;
            i++;
        } else if (c == '{' || c == '[') {
            depth++;
            i++;
        } else if (c == '}' || c == ']') {
            depth--;
            i++;
        } else if (depth > 0) {
            if (c == '\n') (*line)++;
            i++;
        } else {
            while (i < len && !is_ws(b[i]) && b[i] != ',' && b[i] != ']')
                i++;
        }
    } while (depth > 0);
    *pos = i;
}

static void skip_ws(const char *b, size_t len, size_t *pos, int64_t *line) {
    while (*pos < len && is_ws(b[*pos])) {
        if (b[*pos] == '\n') (*line)++;
        (*pos)++;
    }
}

lt_status lt_data_reader_open(const char *path, lt_data_reader *r) {
    memset(r, 0, sizeof *r);
    r->path = path;
    lt_status st = lt_file_read_all(path, &r->buf, &r->len);
    if (st) return st;
    r->line = 1;
    if (r->len >= 3 && !memcmp(r->buf, "\xEF\xBB\xBF", 3)) r->pos = 3;
    if ((st = check_utf8(path, r->buf, r->len, r->pos))) goto fail;
    size_t p = r->pos;
    int64_t line = 1;
    skip_ws(r->buf, r->len, &p, &line);
    if (p >= r->len) {
        st = lt_error(LT_ERR_FORMAT,
                      "%s: empty file: expected JSON Lines (one JSON object per line) or a "
                      "JSON list of objects",
                      path);
        goto fail;
    }
    if (r->buf[p] == '[') {
        json_error_t e;
        r->is_list = 1;
        r->list = json_loadb(r->buf + r->pos, r->len - r->pos, JSON_REJECT_DUPLICATES, &e);
        if (!r->list) {
            st = lt_error(LT_ERR_FORMAT, "%s:%d: invalid JSON at column %d: %s", path, e.line,
                          e.column, e.text);
            goto fail;
        }
        if (json_array_size(r->list) == 0) {
            st = lt_error(LT_ERR_FORMAT, "%s: an empty list: expected at least one record", path);
            goto fail;
        }
        r->pos = p + 1; /* after '[' */
        r->line = line;
    }
    return LT_OK;
fail:
    lt_data_reader_close(r);
    return st;
}

lt_status lt_data_reader_next(lt_data_reader *r, json_t **rec, int64_t *line) {
    *rec = NULL;
    *line = 0;
    if (r->is_list) {
        if (r->list_i >= json_array_size(r->list)) return LT_OK;
        skip_ws(r->buf, r->len, &r->pos, &r->line);
        if (r->list_i > 0 && r->pos < r->len && r->buf[r->pos] == ',') {
            r->pos++;
            skip_ws(r->buf, r->len, &r->pos, &r->line);
        }
        *line = r->line;
        skip_value(r->buf, r->len, &r->pos, &r->line);
        json_t *v = json_array_get(r->list, r->list_i++);
        if (!json_is_object(v))
            return lt_error(LT_ERR_FORMAT, "%s:%lld: list item %zu is %s: expected a JSON object",
                            r->path, (long long)*line, r->list_i - 1, lt_json_type_desc(v));
        *rec = json_incref(v);
        return LT_OK;
    }
    for (;;) {
        if (r->pos >= r->len) return LT_OK;
        const char *s = r->buf + r->pos;
        const char *nl = memchr(s, '\n', r->len - r->pos);
        size_t n = nl ? (size_t)(nl - s) : r->len - r->pos;
        int64_t ln = r->line;
        r->pos += n + (nl ? 1 : 0);
        r->line++;
        size_t k = 0;
        while (k < n && is_ws(s[k]))
            k++;
        if (k == n) continue; /* blank line */
        json_error_t e;
        json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
        if (!v) {
            lt_status st = lt_error(LT_ERR_FORMAT, "%s:%lld: invalid JSON at column %d: %s",
                                    r->path, (long long)ln, e.column, e.text);
            if (!r->n_records) { /* a pretty-printed object instead of JSON Lines? */
                json_error_t e2;
                size_t bom = r->len >= 3 && !memcmp(r->buf, "\xEF\xBB\xBF", 3) ? 3 : 0;
                json_t *all = json_loadb(r->buf + bom, r->len - bom, JSON_REJECT_DUPLICATES, &e2);
                if (all && json_is_object(all))
                    st = lt_error(LT_ERR_FORMAT,
                                  "%s: the file is one JSON object over several lines: expected "
                                  "JSON Lines (one object per line) or a JSON list [...] of "
                                  "objects",
                                  r->path);
                json_decref(all);
            }
            return st;
        }
        r->n_records++;
        if (!json_is_object(v)) {
            lt_status st = lt_error(LT_ERR_FORMAT,
                                    "%s:%lld: the line holds %s: expected a JSON object (one "
                                    "record per line)",
                                    r->path, (long long)ln, lt_json_type_desc(v));
            json_decref(v);
            return st;
        }
        *rec = v;
        *line = ln;
        return LT_OK;
    }
}

void lt_data_reader_close(lt_data_reader *r) {
    if (!r) return;
    json_decref(r->list);
    free(r->buf);
    memset(r, 0, sizeof *r);
}
