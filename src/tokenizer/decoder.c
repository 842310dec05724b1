/* decoder.c -- tokenizer.json "decoder": ByteLevel, ByteFallback, Fuse,
 * Strip, Replace, Metaspace and Sequence, each a step from a list of token
 * strings to a new list (`tokenizers`' decode_chain), joined at the end.
 *
 * ByteLevel maps each token's chars back to bytes (a token with any char
 * outside the table keeps its raw bytes) and converts the whole with
 * U+FFFD for invalid UTF-8; ByteFallback turns runs of <0xAB> tokens into
 * their bytes, or one U+FFFD per byte when the run is not valid UTF-8;
 * Metaspace drops the replacement char in the first token (unless
 * prepend_scheme is never) and turns it into a space elsewhere. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

static const char *const dec_names[] = {"Sequence", "ByteLevel", "ByteFallback", "Fuse", "Strip", "Replace", "Metaspace"};

static int one_char(const json_t *j, const char *key, const char *where, const char *dflt, uint32_t *out, sl_err *err) {
    const char *s;
    int rc = sl_tok_json_str(j, key, where, dflt == NULL, &s, err);
    if (rc) return rc;
    if (!s) s = dflt;
    if (!*s || (size_t)sl_tok_utf8_len((unsigned char)*s) != strlen(s))
        return sl_err_set(err, SL_EFORMAT, "%s.%s: expected exactly one character", where, key);
    sl_tok_utf8_next(s, strlen(s), out);
    return SL_OK;
}

static int count(const json_t *j, const char *key, const char *where, size_t *out, sl_err *err) {
    const json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return SL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return sl_err_set(err, SL_EFORMAT, "%s.%s: expected a non-negative integer", where, key);
    *out = (size_t)json_integer_value(v);
    return SL_OK;
}

static int parse_body(const json_t *j, const char *where, sl_tok_decoder *d, sl_err *err) {
    char sub[512];
    const char *s;
    int rc = SL_OK;
    switch (d->kind) {
    case SL_DEC_SEQUENCE: {
        const json_t *arr = json_object_get(j, "decoders");
        if (!json_is_array(arr)) return sl_err_set(err, SL_EFORMAT, "%s.decoders: expected an array", where);
        d->subs = calloc(json_array_size(arr) + 1, sizeof *d->subs);
        if (!d->subs) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
            sl_tok_decoder *c;
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
            rc = sl_tok_decoder_parse(json_array_get(arr, i), sub, &c, err);
            if (!rc && !c) rc = sl_err_set(err, SL_EFORMAT, "%s: expected an object", sub);
            if (!rc) {
                d->subs[d->n_subs++] = *c;
                free(c);
            }
        }
        return rc;
    }
    case SL_DEC_STRIP:
        if ((rc = one_char(j, "content", where, NULL, &d->ch, err)) || (rc = count(j, "start", where, &d->start, err)))
            return rc;
        return count(j, "stop", where, &d->stop, err);
    case SL_DEC_REPLACE:
        if ((rc = sl_tok_json_str(j, "content", where, true, &s, err))) return rc;
        if (!(d->content = strdup(s))) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        d->content_len = strlen(s);
        snprintf(sub, sizeof sub, "%s.pattern", where);
        return sl_tok_pattern_parse(json_object_get(j, "pattern"), &d->re, sub, err);
    case SL_DEC_METASPACE:
        if ((rc = one_char(j, "replacement", where, "\xE2\x96\x81", &d->ch, err))) return rc;
        return sl_tok_prepend_scheme_parse(j, where, &d->prepend_scheme, err);
    default:
        return SL_OK;
    }
}

int sl_tok_decoder_parse(const json_t *j, const char *where, sl_tok_decoder **out, sl_err *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return SL_OK;
    int k;
    int rc = sl_tok_json_name(j, "type", where, "decoder type", dec_names, sizeof dec_names / sizeof *dec_names, &k, err);
    if (rc) return rc;
    sl_tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    d->kind = (sl_tok_dec_kind)k;
    if ((rc = parse_body(j, where, d, err))) {
        sl_tok_decoder_free(d);
        return rc;
    }
    *out = d;
    return SL_OK;
}

static void decoder_clear(sl_tok_decoder *d) {
    for (size_t i = 0; i < d->n_subs; i++) decoder_clear(&d->subs[i]);
    free(d->subs);
    free(d->content);
    sl_tok_regex_free(&d->re);
}

void sl_tok_decoder_free(sl_tok_decoder *d) {
    if (!d) return;
    decoder_clear(d);
    free(d);
}

/* ---- steps ------------------------------------------------------------- */

/* Appends bytes to the arena as a new token of out. */
static int add_token(sl_tok_buf *arena, sl_tok_pieces *out, const char *s, size_t n) {
    sl_tok_piece p = {(uint32_t)arena->n, (uint32_t)n, -1, false};
    if (sl_tok_buf_append(arena, s, n)) return SL_ENOMEM;
    return sl_tok_pieces_push(out, p);
}

static int bytelevel_step(sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out, sl_tok_scratch *sc) {
    const sl_tok_bytelevel *bl = sl_tok_bytelevel_table();
    sl_tok_buf *bytes = &sc->tmp[0], *text = &sc->tmp[1];
    bytes->n = text->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = arena->p + in->v[i].off;
        size_t len = in->v[i].len, mark = bytes->n;
        bool ok = true;
        for (size_t k = 0; k < len && ok;) {
            uint32_t cp;
            k += (size_t)sl_tok_utf8_next(s + k, len - k, &cp);
            ok = cp < 324 && bl->dec[cp] >= 0;
            if (ok) {
                char b = (char)bl->dec[cp];
                if (sl_tok_buf_append(bytes, &b, 1)) return SL_ENOMEM;
            }
        }
        if (!ok) {
            bytes->n = mark;
            s = arena->p + in->v[i].off;
            if (sl_tok_buf_append(bytes, s, len)) return SL_ENOMEM;
        }
    }
    if (sl_tok_utf8_lossy(bytes->p ? bytes->p : "", bytes->n, text)) return SL_ENOMEM;
    return add_token(arena, out, text->p ? text->p : "", text->n);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xAB>" token, or -1. */
static int fallback_byte(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int hi = s[3] == '+' ? 0 : hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int flush_bytes(sl_tok_buf *arena, sl_tok_buf *bytes, sl_tok_pieces *out) {
    if (!bytes->n) return SL_OK;
    int rc = SL_OK;
    if (sl_tok_utf8_valid(bytes->p, bytes->n)) rc = add_token(arena, out, bytes->p, bytes->n);
    else
        for (size_t i = 0; i < bytes->n && !rc; i++) rc = add_token(arena, out, "\xEF\xBF\xBD", 3);
    bytes->n = 0;
    return rc;
}

static int bytefallback_step(sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out, sl_tok_scratch *sc) {
    sl_tok_buf *bytes = &sc->tmp[0];
    bytes->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        int b = fallback_byte(arena->p + in->v[i].off, in->v[i].len);
        if (b >= 0) {
            char c = (char)b;
            if (sl_tok_buf_append(bytes, &c, 1)) return SL_ENOMEM;
            continue;
        }
        if (flush_bytes(arena, bytes, out) || sl_tok_pieces_push(out, in->v[i])) return SL_ENOMEM;
    }
    return flush_bytes(arena, bytes, out);
}

static int fuse_step(sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out) {
    size_t total = 0;
    for (size_t i = 0; i < in->n; i++) total += in->v[i].len;
    if (sl_tok_buf_reserve(arena, total)) return SL_ENOMEM;
    sl_tok_piece p = {(uint32_t)arena->n, (uint32_t)total, -1, false};
    for (size_t i = 0; i < in->n; i++) {
        memmove(arena->p + arena->n, arena->p + in->v[i].off, in->v[i].len);
        arena->n += in->v[i].len;
    }
    return sl_tok_pieces_push(out, p);
}

static int strip_step(const sl_tok_decoder *d, const sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out) {
    for (size_t i = 0; i < in->n; i++) {
        const char *s = arena->p + in->v[i].off;
        size_t a = 0, b = in->v[i].len;
        for (size_t k = 0; k < d->start && a < b; k++) {
            uint32_t cp;
            int n = sl_tok_utf8_next(s + a, b - a, &cp);
            if (cp != d->ch) break;
            a += (size_t)n;
        }
        for (size_t k = 0; k < d->stop && b > a; k++) {
            size_t c = b - 1;
            while (c > a && ((unsigned char)s[c] & 0xC0) == 0x80) c--;
            uint32_t cp;
            sl_tok_utf8_next(s + c, b - c, &cp);
            if (cp != d->ch) break;
            b = c;
        }
        sl_tok_piece p = {in->v[i].off + (uint32_t)a, (uint32_t)(b - a), -1, false};
        if (sl_tok_pieces_push(out, p)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int replace_step(const sl_tok_decoder *d, sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out,
                        sl_tok_scratch *sc, sl_err *err) {
    sl_tok_buf *t = &sc->tmp[1];
    for (size_t i = 0; i < in->n; i++) {
        t->n = 0;
        int rc = sl_tok_regex_replace(&d->re, arena->p + in->v[i].off, in->v[i].len, d->content, d->content_len, sc, t, err);
        if (rc) return rc;
        if (add_token(arena, out, t->p ? t->p : "", t->n)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int metaspace_step(const sl_tok_decoder *d, sl_tok_buf *arena, const sl_tok_pieces *in, sl_tok_pieces *out,
                          sl_tok_scratch *sc) {
    sl_tok_buf *t = &sc->tmp[1];
    for (size_t i = 0; i < in->n; i++) {
        t->n = 0;
        const char *s = arena->p + in->v[i].off;
        size_t len = in->v[i].len;
        for (size_t k = 0; k < len;) {
            uint32_t cp;
            int n = sl_tok_utf8_next(s + k, len - k, &cp);
            int rc = SL_OK;
            if (cp != d->ch) rc = sl_tok_buf_append(t, s + k, (size_t)n);
            else if (!(i == 0 && d->prepend_scheme != SL_PREPEND_NEVER)) rc = sl_tok_buf_append(t, " ", 1);
            if (rc) return rc;
            k += (size_t)n;
        }
        if (add_token(arena, out, t->p ? t->p : "", t->n)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int decode_step(const sl_tok_decoder *d, sl_tok_buf *arena, sl_tok_pieces *ps, sl_tok_scratch *sc, sl_err *err) {
    if (d->kind == SL_DEC_SEQUENCE) {
        for (size_t i = 0; i < d->n_subs; i++) {
            int rc = decode_step(&d->subs[i], arena, ps, sc, err);
            if (rc) return rc;
        }
        return SL_OK;
    }
    sl_tok_pieces out = {0};
    int rc = SL_EINTERNAL;
    switch (d->kind) {
    case SL_DEC_BYTELEVEL: rc = bytelevel_step(arena, ps, &out, sc); break;
    case SL_DEC_BYTEFALLBACK: rc = bytefallback_step(arena, ps, &out, sc); break;
    case SL_DEC_FUSE: rc = fuse_step(arena, ps, &out); break;
    case SL_DEC_STRIP: rc = strip_step(d, arena, ps, &out); break;
    case SL_DEC_REPLACE: rc = replace_step(d, arena, ps, &out, sc, err); break;
    case SL_DEC_METASPACE: rc = metaspace_step(d, arena, ps, &out, sc); break;
    case SL_DEC_SEQUENCE: break;
    }
    if (rc) {
        sl_tok_pieces_free(&out);
        return rc == SL_ENOMEM ? sl_err_set(err, rc, "tokenizer: out of memory decoding") : rc;
    }
    sl_tok_pieces_free(ps);
    *ps = out;
    return SL_OK;
}

int sl_tok_decode_tokens(const sl_tok_decoder *d, sl_tok_buf *arena, sl_tok_pieces *ps,
                         sl_tok_buf *out, sl_tok_scratch *sc, sl_err *err) {
    out->n = 0;
    if (d) {
        int rc = decode_step(d, arena, ps, sc, err);
        if (rc) return rc;
    }
    for (size_t i = 0; i < ps->n; i++) {
        if (!d && i > 0 && sl_tok_buf_append(out, " ", 1)) return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory decoding");
        if (sl_tok_buf_append(out, arena->p + ps->v[i].off, ps->v[i].len))
            return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory decoding");
    }
    return sl_tok_buf_append(out, "", 0);
}

/* ---- one token's bytes (for grammars) ------------------------------------ */

typedef struct token_bytes_rule {
    bool bytelevel, bytefallback;
    uint32_t space_ch; /* a Metaspace / Replace(-> " ") character read as a space, 0: none */
} token_bytes_rule;

static void token_bytes_rule_of(const sl_tok_decoder *d, token_bytes_rule *r) {
    if (!d) return;
    if (d->kind == SL_DEC_BYTELEVEL) r->bytelevel = true;
    if (d->kind == SL_DEC_BYTEFALLBACK) r->bytefallback = true;
    if (d->kind == SL_DEC_METASPACE) r->space_ch = d->ch;
    if (d->kind == SL_DEC_REPLACE && d->content_len == 1 && d->content[0] == ' ') r->space_ch = 0x2581;
    for (size_t i = 0; i < d->n_subs; i++) token_bytes_rule_of(&d->subs[i], r);
}

int sl_tok_decoder_token_bytes(const sl_tok_decoder *d, const char *s, size_t len, uint8_t *buf, size_t cap,
                               size_t *n_bytes) {
    token_bytes_rule r = {0};
    token_bytes_rule_of(d, &r);
    const sl_tok_bytelevel *bl = sl_tok_bytelevel_table();
    size_t n = 0;
    int b = r.bytefallback ? fallback_byte(s, len) : -1;
    if (b >= 0) {
        if (cap < 1) return SL_ENOSPACE;
        buf[n++] = (uint8_t)b;
    }
    for (size_t i = 0; b < 0 && i < len;) {
        uint32_t cp;
        int l = sl_tok_utf8_next(s + i, len - i, &cp);
        const bool is_byte = r.bytelevel && cp < 324 && bl->dec[cp] >= 0;
        const bool is_space = r.space_ch && cp == r.space_ch;
        size_t need = is_byte || is_space ? 1 : (size_t)l;
        if (n + need > cap) return SL_ENOSPACE;
        if (is_byte) buf[n] = (uint8_t)bl->dec[cp];
        else if (is_space) buf[n] = ' ';
        else memcpy(buf + n, s + i, (size_t)l);
        n += need;
        i += (size_t)l;
    }
    *n_bytes = n;
    return SL_OK;
}
