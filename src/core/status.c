/* status.c - thread-local error message behind lt_status codes. */
#include "loratune/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LT_ERRMSG_MAX 1024
static _Thread_local char g_errmsg[LT_ERRMSG_MAX];

const char *lt_errmsg(void) { return g_errmsg; }

lt_status lt_error(lt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    va_end(ap);
    return code;
}

lt_status lt_error_wrap(lt_status code, const char *prefix) {
    char tmp[LT_ERRMSG_MAX];
    size_t pl = strlen(prefix);
    if (pl > LT_ERRMSG_MAX / 2) pl = LT_ERRMSG_MAX / 2;
    memcpy(tmp, prefix, pl);
    tmp[pl] = ':';
    tmp[pl + 1] = ' ';
    size_t ml = strnlen(g_errmsg, LT_ERRMSG_MAX - pl - 3);
    memcpy(tmp + pl + 2, g_errmsg, ml);
    tmp[pl + 2 + ml] = 0;
    memcpy(g_errmsg, tmp, sizeof tmp);
    return code;
}

const char *lt_status_name(lt_status s) {
    switch (s) {
    case LT_OK: return "ok";
    case LT_ERR_IO: return "I/O error";
    case LT_ERR_FORMAT: return "format error";
    case LT_ERR_NOMEM: return "out of memory";
    case LT_ERR_ARG: return "invalid argument";
    case LT_ERR_UNSUPPORTED: return "unsupported";
    case LT_ERR_NOTFOUND: return "not found";
    case LT_ERR_INTERNAL: return "internal error";
    case LT_ERR_BUSY: return "busy";
    case LT_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}
