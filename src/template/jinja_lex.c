/* jinja_lex.c -- turns template source into tokens the way Jinja2's lexer does.
 *
 * transformers compiles chat templates with trim_blocks=True and
 * lstrip_blocks=True, and the exact whitespace a template emits depends on
 * the lexer's rules, so they are reproduced one for one: newlines are
 * normalized to "\n" and one trailing newline dropped (keep_trailing_newline
 * is off); `{%-`/`{{-`/`{#-` strip all whitespace before the tag; `-%}` etc.
 * strip all whitespace after; a block or comment end eats one following
 * newline unless written `+%}`; a block or comment start that is alone on its
 * line (only spaces and tabs before it) drops that indentation unless written
 * `{%+`. String literals are decoded as Python's unicode-escape codec after
 * backslash-replacing non-ASCII, which is what Jinja2 does. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"

typedef struct lexer {
    const char *s; /* normalized source */
    size_t n, pos;
    jinja_arena *arena;
    jinja_tokens *out;
    sl_err *err;
    jmp_buf fail;
    bool line_starting;
    size_t mark, mark_line, mark_line_start; /* line cursor: tokens come in order */
} lexer;

static void position(lexer *lx, size_t at, int *line, int *col) {
    if (at > lx->n) at = lx->n;
    if (at < lx->mark) lx->mark = lx->mark_line_start = 0, lx->mark_line = 1;
    for (size_t i = lx->mark; i < at; i++)
        if (lx->s[i] == '\n') { lx->mark_line++; lx->mark_line_start = i + 1; }
    lx->mark = at;
    *line = (int)lx->mark_line;
    *col = (int)(at - lx->mark_line_start + 1);
}

__attribute__((format(printf, 3, 4))) _Noreturn static void lex_fail(lexer *lx, size_t at,
                                                                      const char *fmt, ...) {
    int line, col;
    position(lx, at, &line, &col);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_err_set(lx->err, SL_EINVAL, "chat template line %d, column %d: %s", line, col, msg);
    longjmp(lx->fail, 1);
}

static void *lx_alloc(lexer *lx, size_t n) {
    void *p = jinja_arena_alloc(lx->arena, n);
    if (!p) {
        sl_err_set(lx->err, SL_ENOMEM, "chat template: out of memory while tokenizing");
        longjmp(lx->fail, 1);
    }
    return p;
}

static jinja_token *emit(lexer *lx, jinja_tok_type type, size_t at, const char *p, size_t n) {
    jinja_tokens *t = lx->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        jinja_token *v = lx_alloc(lx, cap * sizeof *v);
        if (t->n) memcpy(v, t->v, t->n * sizeof *v);
        t->v = v;
        t->cap = cap;
    }
    jinja_token *tok = &t->v[t->n++];
    memset(tok, 0, sizeof *tok);
    tok->type = type;
    position(lx, at, &tok->line, &tok->col);
    tok->p = p;
    tok->n = n;
    return tok;
}

/* Python's \s on str: Unicode whitespace. Returns bytes of a whitespace
 * character at p, or 0. */
static size_t space_at(const char *p, size_t n) {
    if (!n) return 0;
    uint32_t cp;
    size_t used = jinja_utf8_decode(p, n, &cp);
    return jinja_is_space(cp) ? used : 0;
}

static size_t skip_spaces(const char *s, size_t n, size_t pos) {
    size_t k;
    while (pos < n && (k = space_at(s + pos, n - pos))) pos += k;
    return pos;
}

/* Length of text after stripping trailing Unicode whitespace (str.rstrip). */
static size_t rstrip_len(const char *p, size_t n) {
    size_t end = n, i = 0, last_non_space = 0;
    while (i < end) {
        size_t k = space_at(p + i, end - i);
        if (k) { i += k; continue; }
        uint32_t cp;
        i += jinja_utf8_decode(p + i, end - i, &cp);
        last_non_space = i;
    }
    return last_non_space;
}

/* Emits the text before a tag, applying `-` or lstrip_blocks. */
static void emit_text(lexer *lx, size_t start, size_t end, char sign, bool is_variable) {
    const char *text = lx->s + start;
    size_t n = end - start;
    if (sign == '-') {
        n = rstrip_len(text, n);
    } else if (sign != '+' && !is_variable) {
        size_t l_pos = 0;
        for (size_t i = n; i > 0; i--)
            if (text[i - 1] == '\n') { l_pos = i; break; }
        if ((l_pos > 0 || lx->line_starting) && l_pos < n && skip_spaces(text, n, l_pos) == n)
            n = l_pos;
    }
    if (n) emit(lx, JT_DATA, start, text, n);
}

/* Decodes a string literal body as Python's unicode-escape would after
 * Jinja2 backslash-replaced its non-ASCII characters. */
static void decode_string(lexer *lx, size_t at, const char *p, size_t n, jinja_token *tok) {
    char *o = lx_alloc(lx, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] != '\\' || i + 1 >= n) { o[k++] = p[i++]; continue; }
        char c = p[i + 1];
        uint32_t cp;
        int digits = 0;
        static const char from[] = "\\'\"abfnrtv\n";
        static const char to[] = "\\'\"\a\b\f\n\r\t\v";
        const char *simple = c ? strchr(from, c) : NULL;
        if (simple) {
            size_t idx = (size_t)(simple - from);
            if (c != '\n') o[k++] = to[idx]; /* backslash-newline is a continuation */
            i += 2;
            continue;
        }
        if (c >= '0' && c <= '7') {
            cp = 0;
            size_t j = i + 1;
            while (j < n && j < i + 4 && p[j] >= '0' && p[j] <= '7') cp = cp * 8 + (uint32_t)(p[j++] - '0');
            k += sl_utf8_encode(cp, o + k);
            i = j;
            continue;
        }
        if (c == 'x') digits = 2;
        else if (c == 'u') digits = 4;
        else if (c == 'U') digits = 8;
        else if ((unsigned char)c >= 0x80) {
            lex_fail(lx, at, "string escape of a non-ASCII character is not supported");
        } else if (c == 'N') {
            lex_fail(lx, at, "\\N{...} escapes in string literals are not supported");
        }
        if (!digits) { o[k++] = p[i++]; continue; } /* unknown escape: kept as written */
        cp = 0;
        for (int d = 0; d < digits; d++) {
            char h = i + 2 + (size_t)d < n ? p[i + 2 + d] : 0;
            int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (v < 0) lex_fail(lx, at, "truncated \\%c escape in a string literal", c);
            cp = cp * 16 + (uint32_t)v;
        }
        if (cp > 0x10FFFF) lex_fail(lx, at, "illegal Unicode character in a string literal");
        k += sl_utf8_encode(cp, o + k);
        i += 2 + (size_t)digits;
    }
    o[k] = 0;
    tok->p = o;
    tok->n = k;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Digits with single underscores between them: returns end or start if none. */
static size_t scan_digits(const char *s, size_t n, size_t pos) {
    size_t i = pos;
    if (i >= n || !is_digit(s[i])) return pos;
    while (i < n) {
        if (is_digit(s[i])) i++;
        else if (s[i] == '_' && i + 1 < n && is_digit(s[i + 1])) i++;
        else break;
    }
    return i;
}

static char *strip_underscores(lexer *lx, const char *p, size_t n) {
    char *o = lx_alloc(lx, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != '_') o[k++] = p[i];
    o[k] = 0;
    return o;
}

/* Number at pos: float (needs a fraction or exponent) else integer. */
static size_t lex_number(lexer *lx, size_t pos) {
    const char *s = lx->s;
    size_t n = lx->n;
    size_t int_end = scan_digits(s, n, pos);
    size_t end = int_end;
    bool is_float = false;
    bool after_dot = pos > 0 && s[pos - 1] == '.';
    if (!after_dot) {
        if (end < n && s[end] == '.' && scan_digits(s, n, end + 1) > end + 1) {
            end = scan_digits(s, n, end + 1);
            is_float = true;
        }
        if (end < n && (s[end] == 'e' || s[end] == 'E')) {
            size_t e = end + 1;
            if (e < n && (s[e] == '+' || s[e] == '-')) e++;
            size_t e_end = scan_digits(s, n, e);
            if (e_end > e) { end = e_end; is_float = true; }
        }
    }
    if (is_float) {
        jinja_token *t = emit(lx, JT_FLOAT, pos, s + pos, end - pos);
        t->f = strtod(strip_underscores(lx, s + pos, end - pos), NULL);
        return end;
    }
    /* integers: 0b / 0o / 0x prefixes, or decimal without leading zeros */
    int base = 10;
    size_t digits_at = pos;
    if (s[pos] == '0' && pos + 1 < n && strchr("bBoOxX", s[pos + 1]) && s[pos + 1]) {
        char b = (char)(s[pos + 1] | 0x20);
        base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
        digits_at = pos + 2;
        end = digits_at;
        while (end < n) {
            char c = (char)(s[end] | 0x20);
            bool ok = c == '_' || (base == 16 ? (is_digit(s[end]) || (c >= 'a' && c <= 'f'))
                                              : (s[end] >= '0' && s[end] < '0' + base));
            if (!ok) break;
            end++;
        }
        if (end == digits_at) lex_fail(lx, pos, "invalid integer literal");
    } else if (s[pos] == '0') {
        end = pos + 1;
        while (end < n && (s[end] == '0' || (s[end] == '_' && end + 1 < n && s[end + 1] == '0'))) end++;
    }
    jinja_token *t = emit(lx, JT_INT, pos, s + pos, end - pos);
    char *digits = strip_underscores(lx, s + digits_at, end - digits_at);
    errno = 0;
    unsigned long long v = strtoull(digits, NULL, base);
    if (errno || v > INT64_MAX) lex_fail(lx, pos, "integer literal out of the supported 64-bit range");
    t->i = (int64_t)v;
    return end;
}

static const char *const two_char_ops[] = {"//", "**", "==", "!=", ">=", "<=", NULL};
static const char one_char_ops[] = "+-/*%~[](){}><=.:|,;";

/* Tokens inside {% %} or {{ }} up to and including the end tag. */
static void lex_tag(lexer *lx, bool is_block, size_t tag_at) {
    const char *s = lx->s;
    size_t n = lx->n;
    int balance = 0;
    for (;;) {
        size_t pos = lx->pos;
        if (pos >= n) lex_fail(lx, tag_at, "unexpected end of template: missing '%s'", is_block ? "%}" : "}}");
        if (balance == 0) {
            const char *end = is_block ? "%}" : "}}";
            size_t k = 0;
            if (s[pos] == '-' || (is_block && s[pos] == '+')) k = 1;
            if (pos + k + 2 <= n && memcmp(s + pos + k, end, 2) == 0) {
                emit(lx, is_block ? JT_BLOCK_END : JT_VAR_END, pos, s + pos, k + 2);
                size_t after = pos + k + 2;
                if (k && s[pos] == '-') after = skip_spaces(s, n, after);
                else if (!k && is_block && after < n && s[after] == '\n') after++;
                lx->pos = after;
                lx->line_starting = after > 0 && s[after - 1] == '\n';
                return;
            }
        }
        size_t sp = space_at(s + pos, n - pos);
        if (sp) { lx->pos = skip_spaces(s, n, pos); continue; }
        char c = s[pos];
        if (is_digit(c)) { lx->pos = lex_number(lx, pos); continue; }
        if (is_name_start(c)) {
            size_t e = pos + 1;
            while (e < n && (is_name_start(s[e]) || is_digit(s[e]))) e++;
            emit(lx, JT_NAME, pos, s + pos, e - pos);
            lx->pos = e;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t e = pos + 1;
            while (e < n && s[e] != c) e += s[e] == '\\' ? 2 : 1;
            if (e >= n) lex_fail(lx, pos, "unexpected end of string literal");
            jinja_token *t = emit(lx, JT_STRING, pos, NULL, 0);
            decode_string(lx, pos, s + pos + 1, e - pos - 1, t);
            lx->pos = e + 1;
            continue;
        }
        size_t len = 0;
        for (int i = 0; two_char_ops[i]; i++)
            if (pos + 2 <= n && memcmp(s + pos, two_char_ops[i], 2) == 0) len = 2;
        if (!len && strchr(one_char_ops, c) && c) len = 1;
        if (!len) lex_fail(lx, pos, "unexpected character '%c'", c);
        if (c == '(' || c == '[' || c == '{') balance++;
        else if (len == 1 && (c == ')' || c == ']' || c == '}')) {
            if (balance == 0) lex_fail(lx, pos, "unexpected '%c'", c);
            balance--;
        }
        emit(lx, JT_OP, pos, s + pos, len);
        lx->pos = pos + len;
    }
}

/* After `{#`: skips to the end of the comment. */
static void lex_comment(lexer *lx, size_t tag_at) {
    const char *s = lx->s;
    const char *end = memmem(s + lx->pos, lx->n - lx->pos, "#}", 2);
    if (!end) lex_fail(lx, tag_at, "missing end of comment tag");
    size_t at = (size_t)(end - s);
    size_t after = at + 2;
    char before = at > lx->pos ? s[at - 1] : 0;
    if (before == '-') after = skip_spaces(s, lx->n, after);
    else if (before != '+' && after < lx->n && s[after] == '\n') after++;
    lx->pos = after;
    lx->line_starting = after > 0 && s[after - 1] == '\n';
}

/* `{%[-+]? raw %}` at pos? Returns the end of the opening tag or 0. */
static size_t raw_open_end(const lexer *lx, size_t pos) {
    const char *s = lx->s;
    size_t n = lx->n, i = pos + 2;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    i = skip_spaces(s, n, i);
    if (i + 3 > n || memcmp(s + i, "raw", 3) != 0) return 0;
    i = skip_spaces(s, n, i + 3);
    if (i + 3 <= n && memcmp(s + i, "-%}", 3) == 0) return skip_spaces(s, n, i + 3);
    if (i + 2 <= n && memcmp(s + i, "%}", 2) == 0) return i + 2;
    return 0;
}

/* Finds `{%[-+]? endraw [-+]?%}` from pos; fills its span. */
static bool find_endraw(const lexer *lx, size_t pos, size_t *tag, size_t *sign_at, size_t *after) {
    const char *s = lx->s;
    size_t n = lx->n;
    for (size_t i = pos; i + 2 <= n; i++) {
        if (s[i] != '{' || s[i + 1] != '%') continue;
        size_t j = i + 2;
        *sign_at = j;
        if (j < n && (s[j] == '-' || s[j] == '+')) j++;
        j = skip_spaces(s, n, j);
        if (j + 6 > n || memcmp(s + j, "endraw", 6) != 0) continue;
        j = skip_spaces(s, n, j + 6);
        if (j + 3 <= n && (s[j] == '+' || s[j] == '-') && memcmp(s + j + 1, "%}", 2) == 0) {
            *after = s[j] == '-' ? skip_spaces(s, n, j + 3) : j + 3;
        } else if (j + 2 <= n && memcmp(s + j, "%}", 2) == 0) {
            *after = j + 2 < n && s[j + 2] == '\n' ? j + 3 : j + 2;
        } else {
            continue;
        }
        *tag = i;
        return true;
    }
    return false;
}

static void lex_raw(lexer *lx, size_t tag_at, size_t body_at) {
    size_t tag, sign_at, after;
    if (!find_endraw(lx, body_at, &tag, &sign_at, &after))
        lex_fail(lx, tag_at, "missing end of raw directive");
    lx->line_starting = body_at > 0 && lx->s[body_at - 1] == '\n';
    char sign = lx->s[sign_at] == '-' || lx->s[sign_at] == '+' ? lx->s[sign_at] : 0;
    emit_text(lx, body_at, tag, sign, false);
    lx->pos = after;
    lx->line_starting = after > 0 && lx->s[after - 1] == '\n';
}

static void lex_root(lexer *lx) {
    const char *s = lx->s;
    size_t n = lx->n;
    while (lx->pos < n) {
        size_t start = lx->pos, at = start;
        while (at + 1 < n && !(s[at] == '{' && (s[at + 1] == '{' || s[at + 1] == '%' || s[at + 1] == '#')))
            at++;
        if (at + 1 >= n) {
            emit(lx, JT_DATA, start, s + start, n - start);
            lx->pos = n;
            return;
        }
        char kind = s[at + 1];
        char sign = at + 2 < n && (s[at + 2] == '-' || s[at + 2] == '+') ? s[at + 2] : 0;
        emit_text(lx, start, at, sign, kind == '{');
        size_t body = at + 2 + (sign ? 1 : 0);
        size_t raw_end = kind == '%' ? raw_open_end(lx, at) : 0;
        if (raw_end) {
            lex_raw(lx, at, raw_end);
        } else if (kind == '#') {
            lx->pos = body;
            lex_comment(lx, at);
        } else {
            emit(lx, kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, at, s + at, body - at);
            lx->pos = body;
            lex_tag(lx, kind == '%', at);
        }
    }
}

/* Newlines to "\n", and the one trailing newline dropped, as Jinja2. */
static char *normalize(lexer *lx, const char *src, size_t n, size_t *out_n) {
    char *o = lx_alloc(lx, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            o[k++] = src[i];
        }
    }
    if (k && o[k - 1] == '\n') k--;
    o[k] = 0;
    *out_n = k;
    return o;
}

int jinja_lex(const char *source, size_t n, jinja_arena *arena, jinja_tokens *out, sl_err *err) {
    lexer lx = {.arena = arena, .out = out, .err = err, .line_starting = true, .mark_line = 1};
    memset(out, 0, sizeof *out);
    if (setjmp(lx.fail)) return err ? err->code : SL_EINVAL;
    if (memchr(source, 0, n)) {
        sl_err_set(err, SL_EINVAL, "chat template: contains a NUL byte");
        return SL_EINVAL;
    }
    lx.s = normalize(&lx, source, n, &lx.n);
    lex_root(&lx);
    emit(&lx, JT_EOF, lx.n, lx.s + lx.n, 0);
    return 0;
}
