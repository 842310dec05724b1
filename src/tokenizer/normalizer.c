/* normalizer.c -- tokenizer.json "normalizer": NFC/NFD/NFKC/NFKD,
 * Lowercase, Strip, Prepend, Replace and Sequence, string in -> string out.
 *
 * Unicode normalization is utf8proc's; Lowercase is Rust's per-char
 * char::to_lowercase (simple mapping plus the one unconditional special
 * case, U+0130 -> "i\u0307"); Strip trims Unicode White_Space. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer_internal.h"

static const char *const norm_names[] = {"Sequence", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "Prepend", "Replace"};

int sl_tok_normalizer_parse(const json_t *j, const char *where, sl_tok_normalizer **out, sl_err *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return SL_OK;
    int k;
    int rc = sl_tok_json_name(j, "type", where, "normalizer type", norm_names, sizeof norm_names / sizeof *norm_names,
                              &k, err);
    if (rc) return rc;
    sl_tok_normalizer *n = calloc(1, sizeof *n);
    if (!n) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    n->kind = (sl_tok_norm_kind)k;
    char sub[512];
    const char *s = NULL;
    switch (n->kind) {
    case SL_NORM_SEQUENCE: {
        const json_t *arr = json_object_get(j, "normalizers");
        if (!json_is_array(arr)) {
            rc = sl_err_set(err, SL_EFORMAT, "%s.normalizers: expected an array", where);
            break;
        }
        n->subs = calloc(json_array_size(arr) + 1, sizeof *n->subs);
        if (!n->subs) {
            rc = sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
            break;
        }
        for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
            sl_tok_normalizer *c;
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            rc = sl_tok_normalizer_parse(json_array_get(arr, i), sub, &c, err);
            if (!rc && !c) rc = sl_err_set(err, SL_EFORMAT, "%s: expected an object", sub);
            if (!rc) {
                n->subs[n->n_subs++] = *c;
                free(c);
            }
        }
        break;
    }
    case SL_NORM_STRIP:
        n->left = n->right = true;
        if (!(rc = sl_tok_json_bool(j, "strip_left", where, &n->left, err)))
            rc = sl_tok_json_bool(j, "strip_right", where, &n->right, err);
        break;
    case SL_NORM_PREPEND:
    case SL_NORM_REPLACE:
        rc = sl_tok_json_str(j, n->kind == SL_NORM_PREPEND ? "prepend" : "content", where, true, &s, err);
        if (!rc && !(n->str = strdup(s))) rc = sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        if (!rc) n->str_len = strlen(s);
        if (!rc && n->kind == SL_NORM_REPLACE) {
            snprintf(sub, sizeof sub, "%s.pattern", where);
            rc = sl_tok_pattern_parse(json_object_get(j, "pattern"), &n->re, sub, err);
        }
        break;
    default:
        break;
    }
    if (rc) {
        sl_tok_normalizer_free(n);
        return rc;
    }
    *out = n;
    return SL_OK;
}

static void normalizer_clear(sl_tok_normalizer *n) {
    for (size_t i = 0; i < n->n_subs; i++) normalizer_clear(&n->subs[i]);
    free(n->subs);
    free(n->str);
    sl_tok_regex_free(&n->re);
}

void sl_tok_normalizer_free(sl_tok_normalizer *n) {
    if (!n) return;
    normalizer_clear(n);
    free(n);
}

static bool all_below(const char *s, size_t len, unsigned char limit) {
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= limit) return false;
    return true;
}

static int unicode_normalize(sl_tok_norm_kind kind, const char *s, size_t len, sl_tok_buf *out, sl_err *err) {
    /* Below U+0300 everything is already NFC/NFD-stable except precomposed
     * Latin letters for NFD; ASCII is stable under all four forms. */
    if (all_below(s, len, 0x80) || (kind == SL_NORM_NFC && all_below(s, len, 0xCC)))
        return sl_tok_buf_append(out, s, len);
    int opts = UTF8PROC_STABLE;
    if (kind == SL_NORM_NFC || kind == SL_NORM_NFKC) opts |= UTF8PROC_COMPOSE;
    else opts |= UTF8PROC_DECOMPOSE;
    if (kind == SL_NORM_NFKC || kind == SL_NORM_NFKD) opts |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, (utf8proc_option_t)opts);
    if (n < 0) return sl_err_set(err, SL_EINVAL, "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(n));
    int rc = sl_tok_buf_append(out, dst, (size_t)n);
    free(dst);
    return rc;
}

static int lowercase(const char *s, size_t len, sl_tok_buf *out) {
    if (sl_tok_buf_reserve(out, len)) return SL_ENOMEM;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int n = sl_tok_utf8_next(s + i, len - i, &cp);
        i += (size_t)n;
        char enc[8];
        int m;
        if (cp < 0x80) {
            enc[0] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
            m = 1;
        } else if (cp == 0x130) {
            memcpy(enc, "i\xCC\x87", 3);
            m = 3;
        } else {
            m = sl_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        }
        if (sl_tok_buf_append(out, enc, (size_t)m)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int strip(const sl_tok_normalizer *n, const char *s, size_t len, sl_tok_buf *out, bool *at_start) {
    size_t a = 0, b = len;
    while (n->left && a < b) {
        uint32_t cp;
        int k = sl_tok_utf8_next(s + a, b - a, &cp);
        if (!sl_tok_is_whitespace(cp)) break;
        a += (size_t)k;
    }
    while (n->right && b > a) {
        size_t c = b - 1;
        while (c > a && ((unsigned char)s[c] & 0xC0) == 0x80) c--;
        uint32_t cp;
        sl_tok_utf8_next(s + c, b - c, &cp);
        if (!sl_tok_is_whitespace(cp)) break;
        b = c;
    }
    if (a > 0) *at_start = false;
    return sl_tok_buf_append(out, s + a, b - a);
}

int sl_tok_normalize(const sl_tok_normalizer *n, const char *s, size_t len, sl_tok_buf *out,
                     bool *at_start, sl_tok_scratch *sc, sl_err *err) {
    out->n = 0;
    switch (n->kind) {
    case SL_NORM_SEQUENCE: {
        if (n->n_subs == 0) return sl_tok_buf_append(out, s, len);
        sl_tok_buf a = {0}, b = {0};
        int rc = sl_tok_buf_append(&a, s, len);
        for (size_t i = 0; i < n->n_subs && !rc; i++) {
            rc = sl_tok_normalize(&n->subs[i], a.p, a.n, &b, at_start, sc, err);
            sl_tok_buf t = a;
            a = b;
            b = t;
        }
        if (!rc) rc = sl_tok_buf_append(out, a.p, a.n);
        sl_tok_buf_free(&a);
        sl_tok_buf_free(&b);
        return rc == SL_ENOMEM ? sl_err_set(err, rc, "tokenizer: out of memory normalizing") : rc;
    }
    case SL_NORM_NFC: case SL_NORM_NFD: case SL_NORM_NFKC: case SL_NORM_NFKD:
        return unicode_normalize(n->kind, s, len, out, err);
    case SL_NORM_LOWERCASE:
        return lowercase(s, len, out);
    case SL_NORM_STRIP:
        return strip(n, s, len, out, at_start);
    case SL_NORM_PREPEND:
        if (len && sl_tok_buf_append(out, n->str, n->str_len)) return SL_ENOMEM;
        return sl_tok_buf_append(out, s, len);
    case SL_NORM_REPLACE:
        /* deleting the first chars moves the piece off the text's start */
        if (n->str_len == 0 && len && sl_tok_regex_segments(&n->re, s, len, sc, err) == SL_OK &&
            sc->segs.n && sc->segs.v[0].match && sc->segs.v[0].end > 0)
            *at_start = false;
        return sl_tok_regex_replace(&n->re, s, len, n->str, n->str_len, sc, out, err);
    }
    return sl_err_set(err, SL_EINTERNAL, "tokenizer: unknown normalizer kind");
}
