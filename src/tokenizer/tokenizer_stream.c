/* tokenizer_stream.c -- incremental detokenization for streaming output.
 *
 * The method of Hugging Face's text-generation servers and vLLM: keep the
 * ids of the stream and two offsets. prefix_offset..read_offset are ids
 * whose text was already emitted; on each push decode ids[prefix_offset..]
 * and ids[prefix_offset..read_offset] and emit the difference once it is
 * longer and does not end in U+FFFD (an incomplete character from byte
 * tokens). Decoding a window that starts a few tokens back, instead of just
 * the new id, keeps decoders that look at neighbours (Metaspace and Strip
 * at the start, ByteFallback and ByteLevel byte runs) consistent with the
 * full decode. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

/* Ids before prefix_offset are dropped once this many have piled up. */
#define KEEP_BEHIND 256
/* Context tokens prime pushes: a window starts where the last text ended that
 * was not an incomplete character (at most a character's 4 bytes back in any
 * valid text), so earlier ones never reach a decode. */
#define PRIME_TOKENS 32

struct sl_detokenizer {
    const sl_tokenizer *t;
    bool skip_special;
    int32_t *ids;
    size_t n_ids, cap_ids;
    size_t prefix_offset, read_offset;
    sl_tok_buf prefix_text, text, piece;
};

int sl_detokenizer_create(const sl_tokenizer *t, bool skip_special_tokens, sl_detokenizer **out, sl_err *err) {
    sl_detokenizer *d = calloc(1, sizeof *d);
    *out = d;
    if (!d) return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory creating a detokenizer");
    d->t = t;
    d->skip_special = skip_special_tokens;
    return SL_OK;
}

void sl_detokenizer_free(sl_detokenizer *d) {
    if (!d) return;
    free(d->ids);
    sl_tok_buf_free(&d->prefix_text);
    sl_tok_buf_free(&d->text);
    sl_tok_buf_free(&d->piece);
    free(d);
}

static bool ends_incomplete(const sl_tok_buf *b) {
    return b->n >= 3 && !memcmp(b->p + b->n - 3, "\xEF\xBF\xBD", 3);
}

/* Decodes the window; true when text extends prefix_text. */
static int decode_window(sl_detokenizer *d, bool *extends, sl_err *err) {
    const int32_t *w = d->ids + d->prefix_offset;
    int rc = sl_tok_decode_ids(d->t, w, d->n_ids - d->prefix_offset, d->skip_special, &d->text, err);
    if (!rc) rc = sl_tok_decode_ids(d->t, w, d->read_offset - d->prefix_offset, d->skip_special, &d->prefix_text, err);
    *extends = !rc && d->text.n > d->prefix_text.n &&
               (d->prefix_text.n == 0 || !memcmp(d->text.p, d->prefix_text.p, d->prefix_text.n));
    return rc;
}

static int set_piece(sl_detokenizer *d, bool emit, char **piece, size_t *n_bytes, sl_err *err) {
    d->piece.n = 0;
    if ((emit && sl_tok_buf_append(&d->piece, d->text.p + d->prefix_text.n, d->text.n - d->prefix_text.n)) ||
        sl_tok_buf_append(&d->piece, "", 0))
        return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory streaming text");
    *piece = d->piece.p;
    *n_bytes = d->piece.n;
    return SL_OK;
}

int sl_detokenizer_push(sl_detokenizer *d, int32_t id, char **piece, size_t *n_bytes, sl_err *err) {
    *piece = NULL;
    *n_bytes = 0;
    if (id < 0) return sl_err_set(err, SL_EINVAL, "tokenizer: detokenizer: id %d is negative", (int)id);
    if (d->prefix_offset > KEEP_BEHIND) {
        memmove(d->ids, d->ids + d->prefix_offset, (d->n_ids - d->prefix_offset) * sizeof *d->ids);
        d->n_ids -= d->prefix_offset;
        d->read_offset -= d->prefix_offset;
        d->prefix_offset = 0;
    }
    if (d->n_ids == d->cap_ids) {
        size_t c = d->cap_ids ? d->cap_ids * 2 : 64;
        int32_t *p = realloc(d->ids, c * sizeof *p);
        if (!p) return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory streaming text");
        d->ids = p;
        d->cap_ids = c;
    }
    d->ids[d->n_ids++] = id;
    bool extends;
    int rc = decode_window(d, &extends, err);
    if (rc) return rc;
    bool emit = extends && !ends_incomplete(&d->text);
    if ((rc = set_piece(d, emit, piece, n_bytes, err))) return rc;
    if (emit) {
        d->prefix_offset = d->read_offset;
        d->read_offset = d->n_ids;
    }
    return SL_OK;
}

int sl_detokenizer_prime(sl_detokenizer *d, const int32_t *ids, size_t n, sl_err *err) {
    char *piece;
    size_t n_bytes;
    for (size_t i = n > PRIME_TOKENS ? n - PRIME_TOKENS : 0; i < n; i++) {
        int rc = sl_detokenizer_push(d, ids[i], &piece, &n_bytes, err);
        if (rc) return rc;
    }
    return SL_OK;
}

int sl_detokenizer_finish(sl_detokenizer *d, char **piece, size_t *n_bytes, sl_err *err) {
    *piece = NULL;
    *n_bytes = 0;
    bool extends;
    int rc = decode_window(d, &extends, err);
    if (!rc) rc = set_piece(d, extends, piece, n_bytes, err);
    d->n_ids = d->prefix_offset = d->read_offset = 0;
    return rc;
}
