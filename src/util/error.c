/* error.c -- sl_err: the one-line error messages every layer returns. */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sl_err_set(sl_err *err, int code, const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int sl_err_wrap(sl_err *err, int code, const char *fmt, ...) {
    if (!err) return code;
    if (err->code == 0) err->code = code;
    char prefix[SL_ERR_MSG_MAX], old[SL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    memcpy(err->msg, prefix, n);
    size_t room = sizeof err->msg - 1 - n, m = strnlen(old, room);
    memcpy(err->msg + n, old, m);
    err->msg[n + m] = '\0';
    return err->code;
}

const char *sl_strerror(int code) {
    switch (code) {
    case SL_OK: return "ok";
    case SL_EINVAL: return "invalid argument";
    case SL_ENOMEM: return "out of memory";
    case SL_EIO: return "I/O error";
    case SL_EFORMAT: return "malformed file";
    case SL_ENOTSUP: return "not supported";
    case SL_ENOTFOUND: return "not found";
    case SL_ETIMEDOUT: return "timed out";
    case SL_EPERM: return "permission denied";
    case SL_ENOSPACE: return "does not fit";
    case SL_EABORT: return "aborted";
    case SL_EINTERNAL: return "internal error";
    default: return "unknown error";
    }
}
