/* buf.c -- sl_server_buf (buf.h). */
#include "server/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* Room for n more bytes and a NUL. */
static int reserve(sl_server_buf *b, size_t n) {
    if (b->len + n + 1 <= b->cap) return SL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return SL_ENOMEM;
    b->data = d;
    b->cap = cap;
    return SL_OK;
}

int sl_server_buf_append(sl_server_buf *b, const void *p, size_t n) {
    if (reserve(b, n)) return SL_ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return SL_OK;
}

int sl_server_buf_puts(sl_server_buf *b, const char *s) { return sl_server_buf_append(b, s, strlen(s)); }

int sl_server_buf_printf(sl_server_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return SL_EINVAL;
    if (reserve(b, (size_t)n)) return SL_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SL_OK;
}

void sl_server_buf_free(sl_server_buf *b) {
    free(b->data);
    *b = (sl_server_buf){0};
}
