/* error.h -- status codes and the error message that travels with them.
 *
 * Every call below main that can fail returns 0 or a negative SL_E* code
 * and, when given an sl_err, fills it with one line saying what failed,
 * where, and what to do. The caller that decides (main, a worker entry point,
 * the HTTP layer) reads err->msg; nothing below it prints or exits. */
#ifndef SL_UTIL_ERROR_H
#define SL_UTIL_ERROR_H

#include <stddef.h>

enum {
    SL_OK = 0,
    SL_EINVAL = -1,     /* bad argument or input the caller can fix */
    SL_ENOMEM = -2,     /* allocation failed */
    SL_EIO = -3,        /* file or network I/O failed */
    SL_EFORMAT = -4,    /* a file's contents are malformed */
    SL_ENOTSUP = -5,    /* well-formed but not supported (yet) */
    SL_ENOTFOUND = -6,  /* a file, tensor, model or id does not exist */
    SL_ETIMEDOUT = -7,  /* a peer or collective did not answer in time */
    SL_EPERM = -8,      /* authentication or access refused */
    SL_ENOSPACE = -9,   /* does not fit (memory, KV cache, context) */
    SL_EABORT = -10,    /* cancelled */
    SL_EINTERNAL = -11, /* a bug: an invariant did not hold */
};

#define SL_ERR_MSG_MAX 1024

typedef struct sl_err {
    int code;
    char msg[SL_ERR_MSG_MAX];
} sl_err;

/* Fill err (if not NULL) with code and a printf-style message; returns code,
 * so a failing path reads `return sl_err_set(err, SL_EIO, "...", ...);`. */
int sl_err_set(sl_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend context ("loading model.safetensors: ") to an existing message;
 * returns err->code (or `code` when err is NULL). */
int sl_err_wrap(sl_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short name for a code: "invalid argument", "I/O error", ... */
const char *sl_strerror(int code);

#endif
