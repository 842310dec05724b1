/* buf.h -- the server's growable byte buffer: what the formatting code, the
 * request log and the tool-call reader write into. data always ends with a
 * NUL past len (once anything was written); doubling growth from 256 bytes. */
#ifndef SL_SERVER_BUF_H
#define SL_SERVER_BUF_H

#include <stddef.h>

typedef struct sl_server_buf {
    char *data;
    size_t len, cap;
} sl_server_buf;

/* Each returns SL_OK, or an error (SL_ENOMEM; a format printf cannot write) with the buffer as it was. */
int sl_server_buf_append(sl_server_buf *b, const void *p, size_t n);
int sl_server_buf_puts(sl_server_buf *b, const char *s);
int sl_server_buf_printf(sl_server_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_server_buf_free(sl_server_buf *b);

#endif
