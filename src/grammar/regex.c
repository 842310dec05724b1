/* regex.c -- a practical regex subset -> GBNF, for `regex` requests and
 * JSON schema `pattern`.
 *
 * Supported: literals (UTF-8), escapes \d \D \w \W \s \S \n \t \r \f \v \0
 * \xHH \uHHHH and escaped punctuation, classes [...] / [^...] with ranges and
 * the escapes above, `.` (any character but newline), alternation, groups
 * (...) and (?:...), quantifiers * + ? {m} {m,} {m,n} (a lazy `?` after them
 * changes nothing for a recognizer), and ^ / $ at the very ends (ignored:
 * the whole output must match). Errors name what is not supported:
 * backreferences, lookaround and other (?...) groups, word boundaries,
 * possessive quantifiers.
 *
 * Every atom becomes one GBNF item: a class written as \U ranges after
 * negation is resolved, or a parenthesized group; quantifiers are copied.
 * In JSON-string mode a class loses '"', '\' and control characters and gains
 * the JSON escapes for '"', '\', \n, \t, \r, \b, \f where the class had them
 * (other control characters are left out: the strings stay valid, a subset). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/json_schema.h"

#define RX_MAX_RANGES 512
#define RX_MAX_DEPTH 200

typedef struct rx {
    const char *s;
    size_t n, pos;
    int json;
    int depth;
    sl_gtext *out;
    sl_err *err;
} rx;

/* A set of code points as ranges [r[2i], r[2i+1]]. */
typedef struct cpset {
    uint32_t r[2 * RX_MAX_RANGES + 2];
    size_t n;
} cpset;

static int rx_fail(rx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rx_fail(rx *x, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sl_err_set(x->err, SL_ENOTSUP, "regex: at offset %zu: %s", x->pos, what);
}

static int peek(const rx *x) { return x->pos < x->n ? (unsigned char)x->s[x->pos] : -1; }

static int set_add(rx *x, cpset *s, uint32_t lo, uint32_t hi) {
    if (s->n == RX_MAX_RANGES) return rx_fail(x, "a class with more than %d ranges", RX_MAX_RANGES);
    s->r[2 * s->n] = lo;
    s->r[2 * s->n++ + 1] = hi;
    return 0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t p = *(const uint32_t *)a, q = *(const uint32_t *)b;
    return (p > q) - (p < q);
}

/* Sorted, merged, complemented when negate. */
static void set_normalize(cpset *s, int negate) {
    qsort(s->r, s->n, 2 * sizeof(uint32_t), cmp_u32);
    size_t m = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (m && s->r[2 * i] <= s->r[2 * m - 1] + 1) {
            if (s->r[2 * i + 1] > s->r[2 * m - 1]) s->r[2 * m - 1] = s->r[2 * i + 1];
        } else {
            s->r[2 * m] = s->r[2 * i];
            s->r[2 * m++ + 1] = s->r[2 * i + 1];
        }
    }
    s->n = m;
    if (!negate) return;
    cpset c = {.n = 0};
    uint32_t next = 0;
    for (size_t i = 0; i < m; i++) {
        if (s->r[2 * i] > next) c.r[2 * c.n] = next, c.r[2 * c.n++ + 1] = s->r[2 * i] - 1;
        next = s->r[2 * i + 1] + 1;
    }
    if (next <= 0x10FFFF) c.r[2 * c.n] = next, c.r[2 * c.n++ + 1] = 0x10FFFF;
    *s = c;
}

static int set_has(const cpset *s, uint32_t cp) {
    for (size_t i = 0; i < s->n; i++)
        if (s->r[2 * i] <= cp && cp <= s->r[2 * i + 1]) return 1;
    return 0;
}

static void emit_class(rx *x, const cpset *s, uint32_t min_cp) {
    sl_gtext_printf(x->out, "[");
    for (size_t i = 0; i < s->n; i++) {
        uint32_t lo = s->r[2 * i] < min_cp ? min_cp : s->r[2 * i], hi = s->r[2 * i + 1];
        if (x->json && lo <= '\\' && hi >= '"') { /* split around '"' and '\' */
            if (lo < '"') sl_gtext_printf(x->out, "\\U%08X-\\U%08X", lo, (uint32_t)'"' - 1);
            if (hi > '"' && lo < '\\') sl_gtext_printf(x->out, "\\U%08X-\\U%08X", lo > '"' ? lo : '"' + 1, hi < '\\' ? hi : '\\' - 1);
            if (hi > '\\') sl_gtext_printf(x->out, "\\U%08X-\\U%08X", lo > '\\' ? lo : '\\' + 1, hi);
        } else if (lo <= hi) {
            sl_gtext_printf(x->out, "\\U%08X-\\U%08X", lo, hi);
        }
    }
    sl_gtext_printf(x->out, "]");
}

/* Writes the set as one GBNF item. */
static void emit_set(rx *x, cpset *s, int negate) {
    set_normalize(s, negate);
    if (!x->json) {
        emit_class(x, s, 0);
        return;
    }
    static const struct { uint32_t cp; const char *esc; } escapes[] = {
        {'"', "\\\\\\\""}, {'\\', "\\\\\\\\"}, {'\n', "\\\\n"}, {'\t', "\\\\t"}, {'\r', "\\\\r"}, {'\b', "\\\\b"}, {'\f', "\\\\f"}};
    sl_gtext_printf(x->out, "(");
    emit_class(x, s, 0x20);
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++)
        if (set_has(s, escapes[i].cp)) sl_gtext_printf(x->out, " | \"%s\"", escapes[i].esc);
    sl_gtext_printf(x->out, ")");
}

/* ---- escapes -------------------------------------------------------------- */

static int add_class_escape(rx *x, cpset *s, int c, int *handled) {
    static const uint32_t digit[] = {'0', '9'}, word[] = {'0', '9', 'A', 'Z', '_', '_', 'a', 'z'},
                          space[] = {'\t', '\r', ' ', ' '};
    const uint32_t *r = NULL;
    size_t n = 0;
    int neg = 0;
    switch (c) {
    case 'D': neg = 1; /* fall through */
    case 'd': r = digit, n = 1; break;
    case 'W': neg = 1; /* fall through */
    case 'w': r = word, n = 4; break;
    case 'S': neg = 1; /* fall through */
    case 's': r = space, n = 2; break;
    default: *handled = 0; return 0;
    }
    *handled = 1;
    cpset t = {.n = 0};
    for (size_t i = 0; i < n; i++) t.r[2 * i] = r[2 * i], t.r[2 * i + 1] = r[2 * i + 1];
    t.n = n;
    set_normalize(&t, neg);
    for (size_t i = 0; i < t.n; i++) {
        int rc = set_add(x, s, t.r[2 * i], t.r[2 * i + 1]);
        if (rc) return rc;
    }
    return 0;
}

static int parse_hex(rx *x, int digits, uint32_t *cp) {
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int c = peek(x);
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return rx_fail(x, "expected %d hex digits", digits);
        v = v * 16 + (uint32_t)d;
        x->pos++;
    }
    *cp = v;
    return 0;
}

/* After a backslash, a single code point escape. */
static int parse_char_escape(rx *x, int c, uint32_t *cp) {
    switch (c) {
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case '0': *cp = 0; return 0;
    case 'x': return parse_hex(x, 2, cp);
    case 'u': return parse_hex(x, 4, cp);
    }
    if (c >= '1' && c <= '9') return rx_fail(x, "backreferences (\\%c) are not supported", c);
    if (c == 'b' || c == 'B') return rx_fail(x, "word boundaries (\\%c) are not supported", c);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c < 0)
        return rx_fail(x, "the escape \\%c is not supported", c < 0 ? '?' : c);
    *cp = (uint32_t)c;
    return 0;
}

static int parse_utf8(rx *x, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)x->s + x->pos;
    size_t left = x->n - x->pos;
    int len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || (size_t)len > left) return rx_fail(x, "invalid UTF-8");
    uint32_t v = len == 1 ? s[0] : s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return rx_fail(x, "invalid UTF-8");
        v = v << 6 | (s[i] & 0x3F);
    }
    x->pos += (size_t)len;
    *cp = v;
    return 0;
}

/* One member of a class or one literal: a code point, or a class escape
 * added to s (then *single is 0). */
static int parse_member(rx *x, cpset *s, uint32_t *cp, int *single) {
    *single = 1;
    if (peek(x) != '\\') return parse_utf8(x, cp);
    x->pos++;
    int c = peek(x);
    x->pos++;
    int handled = 0;
    int rc = add_class_escape(x, s, c, &handled);
    if (rc || handled) {
        *single = 0;
        return rc;
    }
    return parse_char_escape(x, c, cp);
}

/* ---- structure ------------------------------------------------------------- */

static int parse_class(rx *x) {
    x->pos++;
    int negate = peek(x) == '^';
    if (negate) x->pos++;
    cpset s = {.n = 0};
    int first = 1;
    while (peek(x) != ']' || first) {
        if (x->pos >= x->n) return rx_fail(x, "unterminated class (expected ']')");
        first = 0;
        uint32_t lo, hi;
        int single, rc = parse_member(x, &s, &lo, &single);
        if (rc) return rc;
        if (!single) continue;
        hi = lo;
        if (peek(x) == '-' && x->pos + 1 < x->n && x->s[x->pos + 1] != ']') {
            x->pos++;
            rc = parse_member(x, &s, &hi, &single);
            if (!rc && (!single || hi < lo)) rc = rx_fail(x, "bad range in a class");
            if (rc) return rc;
        }
        rc = set_add(x, &s, lo, hi);
        if (rc) return rc;
    }
    x->pos++;
    emit_set(x, &s, negate);
    return 0;
}

static int parse_alt(rx *x);

static int parse_group(rx *x) {
    x->pos++;
    if (peek(x) == '?') {
        if (x->pos + 1 < x->n && x->s[x->pos + 1] == ':') x->pos += 2;
        else return rx_fail(x, "(?...) groups (lookaround, named groups, flags) are not supported");
    }
    if (x->depth >= RX_MAX_DEPTH) return rx_fail(x, "groups nested deeper than %d", RX_MAX_DEPTH);
    x->depth++;
    int rc = parse_alt(x);
    x->depth--;
    if (!rc && peek(x) != ')') rc = rx_fail(x, "expected ')'");
    x->pos++;
    return rc;
}

static int parse_atom(rx *x) {
    int c = peek(x);
    if (c == '(') return parse_group(x);
    if (c == '[') return parse_class(x);
    if (c == '*' || c == '+' || c == '?' || c == '{') return rx_fail(x, "'%c' has nothing to repeat", c);
    cpset s = {.n = 0};
    if (c == '.') {
        x->pos++;
        set_add(x, &s, '\n', '\n');
        emit_set(x, &s, 1);
        return 0;
    }
    uint32_t cp;
    int single, rc = parse_member(x, &s, &cp, &single);
    if (!rc && single) rc = set_add(x, &s, cp, cp);
    if (!rc) emit_set(x, &s, 0);
    return rc;
}

static int parse_count(rx *x, unsigned *v) {
    if (peek(x) < '0' || peek(x) > '9') return rx_fail(x, "a '{' that is not a repetition {m,n}; escape it as \\{");
    unsigned long long n = 0;
    while (peek(x) >= '0' && peek(x) <= '9') {
        n = n * 10 + (unsigned)(peek(x) - '0');
        if (n > SL_GRAMMAR_MAX_REPEAT) return rx_fail(x, "repetition count above %d", SL_GRAMMAR_MAX_REPEAT);
        x->pos++;
    }
    *v = (unsigned)n;
    return 0;
}

static int parse_quantifier(rx *x) {
    int c = peek(x);
    if (c == '*' || c == '+' || c == '?') {
        x->pos++;
        sl_gtext_printf(x->out, "%c", c);
    } else if (c == '{') {
        x->pos++;
        unsigned m, n = 0;
        int rc = parse_count(x, &m), open = 0;
        if (!rc && peek(x) == ',') {
            x->pos++;
            open = peek(x) == '}';
            if (!open) rc = parse_count(x, &n);
        } else n = m;
        if (!rc && peek(x) != '}') rc = rx_fail(x, "expected '}'");
        if (rc) return rc;
        x->pos++;
        if (open) sl_gtext_printf(x->out, "{%u,}", m);
        else sl_gtext_printf(x->out, "{%u,%u}", m, n);
    } else return 0;
    if (peek(x) == '?') x->pos++; /* lazy: same language */
    if (peek(x) == '+') return rx_fail(x, "possessive quantifiers are not supported");
    return 0;
}

static int parse_seq(rx *x) {
    while (x->pos < x->n && peek(x) != '|' && peek(x) != ')') {
        if (peek(x) == '^' && x->pos == 0) {
            x->pos++;
            continue;
        }
        if (peek(x) == '$' && x->pos + 1 == x->n) {
            x->pos++;
            continue;
        }
        if (peek(x) == '^' || peek(x) == '$') return rx_fail(x, "anchors are supported only at the ends");
        sl_gtext_printf(x->out, " ");
        int rc = parse_atom(x);
        if (!rc) rc = parse_quantifier(x);
        if (rc) return rc;
    }
    return 0;
}

static int parse_alt(rx *x) {
    sl_gtext_printf(x->out, "(");
    int rc = parse_seq(x);
    while (!rc && peek(x) == '|') {
        x->pos++;
        sl_gtext_printf(x->out, " |");
        rc = parse_seq(x);
    }
    sl_gtext_printf(x->out, " )");
    return rc;
}

int sl_regex_to_gbnf(const char *re, size_t n, int json_string, sl_gtext *out, sl_err *err) {
    rx x = {.s = re, .n = n, .json = json_string, .out = out, .err = err};
    int rc = parse_alt(&x);
    if (!rc && x.pos < x.n) rc = rx_fail(&x, "unbalanced ')'");
    if (!rc && out->failed) rc = sl_err_set(err, SL_ENOMEM, "regex: out of memory");
    return rc;
}

int sl_grammar_from_regex(const char *re, size_t n, sl_grammar **out, sl_err *err) {
    *out = NULL;
    sl_gtext t = {0};
    sl_gtext_printf(&t, "root ::= ");
    int rc = sl_regex_to_gbnf(re, n, 0, &t, err);
    sl_gtext_printf(&t, "\n");
    if (!rc && t.failed) rc = sl_err_set(err, SL_ENOMEM, "regex: out of memory");
    if (!rc) rc = sl_grammar_parse_gbnf(t.s, t.n, out, err);
    sl_gtext_free(&t);
    return rc;
}
