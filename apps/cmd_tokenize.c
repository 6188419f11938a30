/* cmd_tokenize.c - `loratune tokenize`: text <-> token ids, one input line at a time.
 *
 * Encode (default): each stdin line (without its "\n"; a trailing "\r" is kept as text) is
 * one text; prints its ids space-separated on one line. With --json each stdin line is a
 * JSON string ("a\nb") so texts may hold newlines. Decode (--decode): each stdin line is
 * space-separated ids; prints the text raw followed by "\n" (ambiguous if the text holds
 * newlines), or with --json as one JSON string per line (only " \\ and control characters
 * escaped; other bytes written as they are). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: loratune tokenize (--model MODEL | --tokenizer FILE) [--decode] [--json]\n"
        "                         [--no-special] [--no-add-special] [--no-parse-special]\n"
        "                         [--skip-special]\n\n"
        "Reads stdin line by line. Encode: prints the token ids of each line, space-separated.\n"
        "Decode (--decode): each line holds ids; prints the text.\n\n"
        "  --model MODEL       a model folder (tokenizer.json or tokenizer.model inside) or a "
        ".gguf\n"
        "  --tokenizer FILE    a tokenizer.json, tokenizer.model, llama2.c .bin or .gguf\n"
        "  --json              encode: each input line is a JSON string; decode: print each\n"
        "                      text as a JSON string\n"
        "  --no-add-special    do not add BOS/EOS (default: as the tokenizer's post-processor,\n"
        "                      i.e. Hugging Face encode(add_special_tokens=True))\n"
        "  --no-parse-special  special tokens written in the text are plain text (Hugging Face\n"
        "                      encode_special_tokens=True; non-special added tokens still match)\n"
        "  --skip-special      decode: drop special tokens (skip_special_tokens=True)\n"
        "  --no-special        all three of the above\n");
}

static void put_json_string(const char *s, size_t n, FILE *f) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            fputs("\\\"", f);
        else if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void put_ids(const int32_t *ids, size_t n, FILE *f) {
    char tmp[16];
    for (size_t i = 0; i < n; i++) {
        int k = (int)sizeof tmp;
        uint32_t v = (uint32_t)ids[i]; /* ids are never negative */
        do {
            tmp[--k] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (i) fputc(' ', f);
        fwrite(tmp + k, 1, sizeof tmp - (size_t)k, f);
    }
    fputc('\n', f);
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tokfile = NULL;
    int decode = 0, json = 0, add_special = 1, parse_special = 1, skip_special = 0;
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--model") || !strcmp(a, "--tokenizer")) && i + 1 < argc) {
            if (!strcmp(a, "--model"))
                model = argv[++i];
            else
                tokfile = argv[++i];
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--no-add-special")) {
            add_special = 0;
        } else if (!strcmp(a, "--no-parse-special")) {
            parse_special = 0;
        } else if (!strcmp(a, "--skip-special")) {
            skip_special = 1;
        } else if (!strcmp(a, "--no-special")) {
            add_special = parse_special = 0;
            skip_special = 1;
        } else {
            fprintf(stderr, "loratune tokenize: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model == !tokfile) {
        fprintf(stderr, "loratune tokenize: give exactly one of --model or --tokenizer\n\n");
        usage(stderr);
        return 2;
    }
    lt_tokenizer *tok = NULL;
    const char *path = model ? model : tokfile;
    if (lt_tokenizer_load(path, &tok) != LT_OK) {
        fprintf(stderr, "loratune tokenize: %s\n", lt_errmsg());
        return 1;
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    int32_t *idbuf = NULL;
    size_t idcap = 0;
    while ((got = getline(&line, &lcap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n') len--;
        if (!decode) {
            const char *text = line;
            size_t tlen = len;
            json_t *js = NULL;
            if (json) {
                json_error_t err;
                js = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
                if (!js || !json_is_string(js)) {
                    fprintf(stderr,
                            "loratune tokenize: stdin line %ld: expected a JSON string%s%s\n",
                            lineno, js ? "" : ": ", js ? "" : err.text);
                    json_decref(js);
                    rc = 1;
                    break;
                }
                text = json_string_value(js);
                tlen = json_string_length(js);
            }
            int32_t *ids = NULL;
            size_t n = 0;
            lt_status st =
                lt_tokenizer_encode(tok, text, tlen, add_special, parse_special, &ids, &n);
            json_decref(js);
            if (st != LT_OK) {
                fprintf(stderr, "loratune tokenize: stdin line %ld: %s\n", lineno, lt_errmsg());
                rc = 1;
                break;
            }
            put_ids(ids, n, stdout);
            free(ids);
        } else {
            size_t n = 0;
            char *p = line, *end = line + len;
            int bad = 0;
            while (p < end) {
                while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == ','))
                    p++;
                if (p >= end) break;
                char *q;
                long v = strtol(p, &q, 10);
                if (q == p || v < 0 || v > INT32_MAX) {
                    bad = 1;
                    break;
                }
                if (n == idcap) {
                    size_t nc = idcap ? idcap * 2 : 256;
                    int32_t *t = realloc(idbuf, nc * sizeof(int32_t));
                    if (!t) {
                        bad = 1;
                        break;
                    }
                    idbuf = t;
                    idcap = nc;
                }
                idbuf[n++] = (int32_t)v;
                p = q;
            }
            if (bad) {
                fprintf(stderr,
                        "loratune tokenize: stdin line %ld: expected token ids (integers)\n",
                        lineno);
                rc = 1;
                break;
            }
            char *text = NULL;
            size_t tlen = 0;
            if (lt_tokenizer_decode(tok, idbuf, n, skip_special, &text, &tlen) != LT_OK) {
                fprintf(stderr, "loratune tokenize: stdin line %ld: %s\n", lineno, lt_errmsg());
                rc = 1;
                break;
            }
            if (json)
                put_json_string(text, tlen, stdout);
            else
                fwrite(text, 1, tlen, stdout);
            putchar('\n');
            free(text);
        }
    }
    free(line);
    free(idbuf);
    lt_tokenizer_free(tok);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "loratune tokenize: writing stdout failed\n");
        rc = 1;
    }
    return rc;
}
