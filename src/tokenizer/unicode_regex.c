/* unicode_regex.c -- the regexes of tokenizer.json, run with PCRE2 the way
 * `tokenizers` runs them with Oniguruma.
 *
 * Patterns are compiled in UTF + UCP mode and JIT-compiled once at load;
 * matching uses per-call match data (sl_tok_scratch), so one compiled
 * pattern serves all threads. Two Oniguruma habits are reproduced:
 *   - `\s` is Unicode White_Space (it includes U+0085, which PCRE2's \s
 *     lacks), so \s and \S are rewritten to explicit classes;
 *   - Oniguruma knows a newer Unicode than PCRE2 10.42 (Unicode 14), so
 *     \p{X}, \P{X} and \d get the newly assigned code points of their
 *     category added (unicode_tables.h, generated from `tokenizers`);
 *   - find_iter: after an empty match at the end of the previous match the
 *     search moves on one character, and each match is reported as
 *     `tokenizers`' find_matches segments (matched / not matched). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode_tables.h"

#define WS_MEMBERS "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static const char *category_extra(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof sl_tok_category_extras / sizeof *sl_tok_category_extras; i++)
        if (strlen(sl_tok_category_extras[i].cat) == len && !memcmp(sl_tok_category_extras[i].cat, name, len))
            return *sl_tok_category_extras[i].extra ? sl_tok_category_extras[i].extra : NULL;
    return NULL;
}

/* \p{X} / \pX / \P{X} / \d at p[i] (after the backslash): writes the
 * widened class and returns the bytes consumed, or 0 to copy as is. */
static size_t widen_category(const char *p, size_t len, size_t i, bool in_class, sl_tok_buf *out, int *rc) {
    char kind = p[i];
    const char *name = "Nd";
    size_t name_len = 2, used = 1;
    if (kind == 'p' || kind == 'P') {
        if (i + 1 >= len) return 0;
        if (p[i + 1] == '{') {
            const char *end = memchr(p + i + 2, '}', len - i - 2);
            if (!end) return 0;
            name = p + i + 2;
            name_len = (size_t)(end - name);
            used = name_len + 3;
        } else {
            name = p + i + 1;
            name_len = 1;
            used = 2;
        }
    } else if (kind != 'd') {
        return 0;
    }
    const char *extra = category_extra(name, name_len);
    bool negated = kind == 'P';
    if (!extra || (negated && in_class)) return 0;
    const char *open = in_class ? "" : negated ? "[^" : "[";
    *rc = sl_tok_buf_append(out, open, strlen(open));
    if (!*rc) *rc = sl_tok_buf_append(out, "\\p{", 3);
    if (!*rc) *rc = sl_tok_buf_append(out, name, name_len);
    if (!*rc) *rc = sl_tok_buf_append(out, "}", 1);
    if (!*rc) *rc = sl_tok_buf_append(out, extra, strlen(extra));
    if (!*rc && !in_class) *rc = sl_tok_buf_append(out, "]", 1);
    return used;
}

/* Rewrites \s / \S to Unicode White_Space classes and widens categories. */
static int translate(const char *p, size_t len, sl_tok_buf *out) {
    bool in_class = false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < len) {
            int rc = SL_OK;
            size_t used = widen_category(p, len, i + 1, in_class, out, &rc);
            if (rc) return rc;
            if (used) {
                i += used;
                continue;
            }
            char n = p[++i];
            if (n == 's') rc = in_class ? sl_tok_buf_append(out, WS_MEMBERS, strlen(WS_MEMBERS))
                                        : sl_tok_buf_append(out, "[" WS_MEMBERS "]", strlen(WS_MEMBERS) + 2);
            else if (n == 'S' && !in_class) rc = sl_tok_buf_append(out, "[^" WS_MEMBERS "]", strlen(WS_MEMBERS) + 3);
            else rc = sl_tok_buf_append(out, p + i - 1, 2);
            if (rc) return rc;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            size_t j = i + 1;
            if (j < len && p[j] == '^') j++;
            if (j < len && p[j] == ']') j++; /* a leading ] is literal */
            if (sl_tok_buf_append(out, p + i, j - i)) return SL_ENOMEM;
            i = j - 1;
            continue;
        }
        if (in_class && c == '[' && i + 1 < len && p[i + 1] == ':') { /* [:alpha:] */
            const char *end = strstr(p + i, ":]");
            size_t j = end ? (size_t)(end - p) + 2 : i + 1;
            if (sl_tok_buf_append(out, p + i, j - i)) return SL_ENOMEM;
            i = j - 1;
            continue;
        }
        if (in_class && c == ']') in_class = false;
        if (sl_tok_buf_append(out, &c, 1)) return SL_ENOMEM;
    }
    return SL_OK;
}

int sl_tok_regex_compile(sl_tok_regex *re, const char *pattern, size_t len, bool literal,
                         const char *where, sl_err *err) {
    re->code = NULL;
    if (literal && len == 0) return SL_OK;
    sl_tok_buf t = {0};
    const char *src = pattern;
    size_t n = len;
    uint32_t opts = PCRE2_UTF;
    if (literal) {
        opts |= PCRE2_LITERAL;
    } else {
        opts |= PCRE2_UCP;
        if (translate(pattern, len, &t) || sl_tok_buf_append(&t, "", 0)) {
            sl_tok_buf_free(&t);
            return sl_err_set(err, SL_ENOMEM, "%s: out of memory compiling the pattern", where);
        }
        src = t.p;
        n = t.n;
    }
    int ecode;
    PCRE2_SIZE eoff;
    re->code = pcre2_compile((PCRE2_SPTR)src, n, opts, &ecode, &eoff, NULL);
    sl_tok_buf_free(&t);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return sl_err_set(err, SL_EFORMAT, "%s: pattern /%.*s/ does not compile: %s", where,
                          (int)(len > 200 ? 200 : len), pattern, (const char *)msg);
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return SL_OK;
}

void sl_tok_regex_free(sl_tok_regex *re) {
    if (re->code) pcre2_code_free(re->code);
    re->code = NULL;
}

int sl_tok_pattern_parse(const json_t *j, sl_tok_regex *re, const char *where, sl_err *err) {
    re->code = NULL;
    if (!json_is_object(j))
        return sl_err_set(err, SL_EFORMAT, "%s: expected {\"String\": ...} or {\"Regex\": ...}", where);
    const json_t *s = json_object_get(j, "String");
    const json_t *r = json_object_get(j, "Regex");
    const json_t *v = s ? s : r;
    if (!v || !json_is_string(v))
        return sl_err_set(err, SL_EFORMAT, "%s: expected {\"String\": ...} or {\"Regex\": ...} with a string", where);
    return sl_tok_regex_compile(re, json_string_value(v), json_string_length(v), s != NULL, where, err);
}

void sl_tok_scratch_init(sl_tok_scratch *sc) { memset(sc, 0, sizeof *sc); }

/* PCRE2's match state, made at a scratch's first match: a decode whose decoders match no regex (ByteLevel's,
 * a token at a time while streaming) makes none, and so maps and unmaps no JIT stack. */
static int match_state(sl_tok_scratch *sc, sl_err *err) {
    if (sc->md) return SL_OK;
    sc->md = pcre2_match_data_create(1, NULL);
    sc->mctx = pcre2_match_context_create(NULL);
    sc->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!sc->md || !sc->mctx || !sc->jit_stack) {
        if (sc->md) pcre2_match_data_free(sc->md);
        if (sc->mctx) pcre2_match_context_free(sc->mctx);
        if (sc->jit_stack) pcre2_jit_stack_free(sc->jit_stack);
        sc->md = NULL, sc->mctx = NULL, sc->jit_stack = NULL;
        return sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory for regex match data");
    }
    pcre2_jit_stack_assign(sc->mctx, NULL, sc->jit_stack);
    return SL_OK;
}

void sl_tok_scratch_free(sl_tok_scratch *sc) {
    if (sc->md) pcre2_match_data_free(sc->md);
    if (sc->mctx) pcre2_match_context_free(sc->mctx);
    if (sc->jit_stack) pcre2_jit_stack_free(sc->jit_stack);
    free(sc->segs.v);
    sl_tok_buf_free(&sc->tmp[0]);
    sl_tok_buf_free(&sc->tmp[1]);
    memset(sc, 0, sizeof *sc);
}

/* Oniguruma's find_iter state. */
typedef struct match_iter {
    size_t last_end;
    size_t last_match_end; /* SIZE_MAX: none yet */
} match_iter;

/* 1 = match in [*ms, *me), 0 = done, <0 = error. */
static int next_match(const sl_tok_regex *re, const char *s, size_t len, match_iter *it,
                      sl_tok_scratch *sc, size_t *ms, size_t *me, sl_err *err) {
    if (!re->code) return 0;
    int state = match_state(sc, err);
    if (state) return state;
    for (;;) {
        if (it->last_end > len) return 0;
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, it->last_end, PCRE2_NO_UTF_CHECK, sc->md, sc->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sl_err_set(err, SL_EINTERNAL, "tokenizer: regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        size_t a = ov[0], b = ov[1];
        if (a == b && it->last_match_end == b) {
            it->last_end += it->last_end < len ? (size_t)sl_tok_utf8_len((unsigned char)s[it->last_end]) : 1;
            continue;
        }
        it->last_end = b;
        it->last_match_end = b;
        *ms = a;
        *me = b;
        return 1;
    }
}

int sl_tok_regex_segments(const sl_tok_regex *re, const char *s, size_t len, sl_tok_scratch *sc,
                          sl_err *err) {
    sc->segs.n = 0;
    if (len == 0) return sl_tok_segs_push(&sc->segs, 0, 0, false);
    match_iter it = {0, SIZE_MAX};
    size_t prev = 0, a = 0, b = 0;
    int rc;
    while ((rc = next_match(re, s, len, &it, sc, &a, &b, err)) == 1) {
        if (prev != a && sl_tok_segs_push(&sc->segs, (uint32_t)prev, (uint32_t)a, false)) return SL_ENOMEM;
        if (sl_tok_segs_push(&sc->segs, (uint32_t)a, (uint32_t)b, true)) return SL_ENOMEM;
        prev = b;
    }
    if (rc < 0) return rc;
    if (prev != len && sl_tok_segs_push(&sc->segs, (uint32_t)prev, (uint32_t)len, false)) return SL_ENOMEM;
    return SL_OK;
}

int sl_tok_regex_replace(const sl_tok_regex *re, const char *s, size_t len, const char *content,
                         size_t content_len, sl_tok_scratch *sc, sl_tok_buf *out, sl_err *err) {
    match_iter it = {0, SIZE_MAX};
    size_t prev = 0, a = 0, b = 0;
    int rc;
    while ((rc = next_match(re, s, len, &it, sc, &a, &b, err)) == 1) {
        if (sl_tok_buf_append(out, s + prev, a - prev) || sl_tok_buf_append(out, content, content_len))
            return SL_ENOMEM;
        prev = b;
    }
    if (rc < 0) return rc;
    return sl_tok_buf_append(out, s + prev, len - prev);
}
