/* gbnf.c -- llama.cpp's GBNF grammar text -> sl_grammar.
 *
 *   rule     ::= name "::=" alternatives          (one per line; `root` starts)
 *   alts     ::= sequence ("|" sequence)*         (a newline may follow "|")
 *   sequence ::= (item quantifier?)*
 *   item     ::= "literal" | [class] | [^class] | . | name | ( alts )
 *   quant    ::= * | + | ? | {m} | {m,} | {m,n}
 *
 * Literals and classes take escapes \n \r \t \\ \" \[ \] \- \/ and \xHH,
 * \uHHHH, \UHHHHHHHH, which name code points (as in llama.cpp: "\xE9" is
 * U+00E9, two bytes in UTF-8). Other source characters in literals are
 * taken byte for byte; in classes they are decoded as UTF-8 code points.
 * `.` is any code point. `#` starts a comment to the end of the line.
 * Inside parentheses, newlines count as spaces. A quantifier after a
 * literal applies to the whole literal.
 *
 * Recursive descent over the text; every error names the line and column
 * where parsing stopped. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "grammar/grammar.h"

#define GBNF_MAX_DEPTH 200 /* nested parentheses */

typedef struct gbnf {
    const char *s;
    size_t n, pos;
    sl_grammar *g;
    int depth;
    sl_err *err;
} gbnf;

static int fail_at(gbnf *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_at(gbnf *p, size_t pos, const char *fmt, ...) {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos && i < p->n; i++) {
        if (p->s[i] == '\n') line++, col = 1;
        else col++;
    }
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sl_err_set(p->err, SL_EINVAL, "grammar: line %d, column %d: %s", line, col, what);
}

static int peek(const gbnf *p) { return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1; }

static bool is_name_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips blanks and comments; newlines too when newline_ok. */
static void skip_space(gbnf *p, bool newline_ok) {
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || ((c == '\n' || c == '\r') && newline_ok)) p->pos++;
        else if (c == '#')
            while (p->pos < p->n && p->s[p->pos] != '\n') p->pos++;
        else break;
    }
}

/* ---- characters ---------------------------------------------------------- */

static int hex_digit(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int parse_hex(gbnf *p, int digits, uint32_t *cp) {
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int d = hex_digit(peek(p));
        if (d < 0) return fail_at(p, p->pos, "expected %d hex digits in an escape", digits);
        v = v * 16 + (uint32_t)d;
        p->pos++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail_at(p, p->pos, "escape names U+%X, which is not a Unicode scalar value", v);
    *cp = v;
    return 0;
}

/* After a backslash: the code point it names. */
static int parse_escape(gbnf *p, uint32_t *cp) {
    int c = peek(p);
    p->pos++;
    switch (c) {
    case 'x': return parse_hex(p, 2, cp);
    case 'u': return parse_hex(p, 4, cp);
    case 'U': return parse_hex(p, 8, cp);
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case '\\': case '"': case '[': case ']': case '-': case '/': *cp = (uint32_t)c; return 0;
    default: return fail_at(p, p->pos - 1, "unknown escape '\\%c'", c < 0 ? '?' : c);
    }
}

/* One UTF-8 encoded code point from the source. */
static int parse_utf8(gbnf *p, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)p->s + p->pos;
    size_t left = p->n - p->pos;
    int len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || (size_t)len > left) return fail_at(p, p->pos, "invalid UTF-8 in a character class");
    uint32_t v = len == 1 ? s[0] : s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return fail_at(p, p->pos, "invalid UTF-8 in a character class");
        v = v << 6 | (s[i] & 0x3F);
    }
    p->pos += (size_t)len;
    *cp = v;
    return 0;
}

/* A class member: an escape or a source code point. */
static int parse_class_char(gbnf *p, uint32_t *cp) {
    if (p->pos >= p->n || p->s[p->pos] == '\n') return fail_at(p, p->pos, "unterminated character class (expected ']')");
    if (p->s[p->pos] == '\\') {
        p->pos++;
        return parse_escape(p, cp);
    }
    return parse_utf8(p, cp);
}

/* ---- items ---------------------------------------------------------------- */

static int parse_literal(gbnf *p, sl_gseq *seq) {
    size_t start = p->pos++;
    int rc = 0;
    while (!rc) {
        if (p->pos >= p->n || p->s[p->pos] == '\n') return fail_at(p, start, "unterminated literal");
        uint8_t c = (uint8_t)p->s[p->pos];
        if (c == '"') break;
        uint8_t buf[4];
        int len = 1;
        buf[0] = c;
        p->pos++;
        if (c == '\\') {
            uint32_t cp = 0;
            rc = parse_escape(p, &cp);
            len = sl_grammar_utf8_encode(cp, buf);
        }
        if (!rc) rc = sl_grammar_push_literal(p->g, seq, buf, (size_t)len, p->err);
    }
    p->pos++;
    return rc;
}

#define GBNF_MAX_CLASS_RANGES 1024

static int parse_class(gbnf *p, sl_gseq *seq) {
    size_t start = p->pos++;
    bool negate = peek(p) == '^';
    if (negate) p->pos++;
    uint32_t ranges[2 * GBNF_MAX_CLASS_RANGES];
    size_t n = 0;
    int rc = 0;
    while (!rc && peek(p) != ']') {
        if (n == GBNF_MAX_CLASS_RANGES)
            return fail_at(p, p->pos, "character class with more than %d ranges", GBNF_MAX_CLASS_RANGES);
        uint32_t lo = 0, hi;
        rc = parse_class_char(p, &lo);
        hi = lo;
        if (!rc && peek(p) == '-' && p->pos + 1 < p->n && p->s[p->pos + 1] != ']') {
            p->pos++;
            rc = parse_class_char(p, &hi);
            if (!rc && hi < lo) rc = fail_at(p, p->pos, "range end U+%X below its start U+%X", hi, lo);
        }
        ranges[2 * n] = lo;
        ranges[2 * n++ + 1] = hi;
        if (!rc && (p->pos >= p->n || p->s[p->pos] == '\n'))
            rc = fail_at(p, start, "unterminated character class (expected ']')");
    }
    if (rc) return rc;
    p->pos++;
    sl_gelem e;
    rc = sl_grammar_codepoints(p->g, ranges, n, negate, &e, p->err);
    return rc ? rc : sl_gseq_push(seq, e, p->err);
}

static int parse_alternatives(gbnf *p, uint32_t rule, bool nested);

static int parse_group(gbnf *p, sl_gseq *seq) {
    size_t start = p->pos++;
    if (p->depth >= GBNF_MAX_DEPTH) return fail_at(p, start, "parentheses nested deeper than %d", GBNF_MAX_DEPTH);
    p->depth++;
    uint32_t r;
    int rc = sl_grammar_rule_new(p->g, "group", &r, p->err);
    if (!rc) rc = parse_alternatives(p, r, true);
    if (!rc && peek(p) != ')') rc = fail_at(p, p->pos, "expected ')' to close the '(' at offset %zu", start);
    p->pos++;
    p->depth--;
    return rc ? rc : sl_gseq_push(seq, (sl_gelem){.kind = SL_GELEM_RULE, .value = r}, p->err);
}

static int parse_ref(gbnf *p, sl_gseq *seq) {
    size_t start = p->pos;
    while (is_name_char(peek(p))) p->pos++;
    uint32_t r;
    int rc = sl_grammar_rule(p->g, p->s + start, p->pos - start, (uint32_t)start, &r, p->err);
    return rc ? rc : sl_gseq_push(seq, (sl_gelem){.kind = SL_GELEM_RULE, .value = r}, p->err);
}

static int parse_number(gbnf *p, uint32_t *v) {
    if (peek(p) < '0' || peek(p) > '9') return fail_at(p, p->pos, "expected a number in a {m,n} repetition");
    uint64_t x = 0;
    while (peek(p) >= '0' && peek(p) <= '9') {
        x = x * 10 + (uint64_t)(peek(p) - '0');
        if (x > SL_GRAMMAR_MAX_REPEAT) return fail_at(p, p->pos, "repetition count above %d", SL_GRAMMAR_MAX_REPEAT);
        p->pos++;
    }
    *v = (uint32_t)x;
    return 0;
}

/* {m}, {m,}, {m,n} after the '{'. */
static int parse_braces(gbnf *p, uint32_t *min, uint32_t *max) {
    skip_space(p, false);
    int rc = parse_number(p, min);
    skip_space(p, false);
    *max = *min;
    if (!rc && peek(p) == ',') {
        p->pos++;
        skip_space(p, false);
        *max = UINT32_MAX;
        if (peek(p) != '}') rc = parse_number(p, max);
        skip_space(p, false);
        if (!rc && *max < *min) rc = fail_at(p, p->pos, "repetition {%u,%u} has max below min", *min, *max);
    }
    if (!rc && peek(p) != '}') rc = fail_at(p, p->pos, "expected '}' to close a repetition");
    p->pos++;
    return rc;
}

/* Applies a quantifier (if one follows) to seq[last..]. */
static int parse_quantifier(gbnf *p, sl_gseq *seq, uint32_t last) {
    int c = peek(p);
    uint32_t min = 0, max = 0;
    int rc = 0;
    if (c == '*') min = 0, max = UINT32_MAX, p->pos++;
    else if (c == '+') min = 1, max = UINT32_MAX, p->pos++;
    else if (c == '?') min = 0, max = 1, p->pos++;
    else if (c == '{') p->pos++, rc = parse_braces(p, &min, &max);
    else return 0;
    if (rc) return rc;
    if (last == seq->n) return fail_at(p, p->pos - 1, "quantifier '%c' follows nothing", c);
    sl_gelem e;
    rc = sl_grammar_repeat(p->g, seq->v + last, seq->n - last, min, max, &e, p->err);
    seq->n = last;
    return rc ? rc : sl_gseq_push(seq, e, p->err);
}

static int parse_item(gbnf *p, sl_gseq *seq) {
    int c = peek(p);
    if (c == '"') return parse_literal(p, seq);
    if (c == '[') return parse_class(p, seq);
    if (c == '(') return parse_group(p, seq);
    if (c == '.') {
        p->pos++;
        sl_gelem e;
        int rc = sl_grammar_codepoints(p->g, NULL, 0, true, &e, p->err);
        return rc ? rc : sl_gseq_push(seq, e, p->err);
    }
    return parse_ref(p, seq);
}

static int parse_sequence(gbnf *p, sl_gseq *seq, bool nested) {
    for (;;) {
        skip_space(p, nested);
        int c = peek(p);
        if (c != '"' && c != '[' && c != '(' && c != '.' && !is_name_char(c)) return 0;
        uint32_t last = seq->n;
        int rc = parse_item(p, seq);
        if (!rc) skip_space(p, nested);
        if (!rc) rc = parse_quantifier(p, seq, last);
        if (rc) return rc;
    }
}

static int parse_alternatives(gbnf *p, uint32_t rule, bool nested) {
    for (;;) {
        sl_gseq seq = {0};
        int rc = parse_sequence(p, &seq, nested);
        if (!rc) rc = sl_grammar_add_alt(p->g, rule, seq.v, seq.n, p->err);
        sl_gseq_free(&seq);
        if (rc) return rc;
        skip_space(p, nested);
        if (peek(p) != '|') return 0;
        p->pos++;
        skip_space(p, true);
    }
}

static int parse_rule(gbnf *p) {
    size_t start = p->pos;
    while (is_name_char(peek(p))) p->pos++;
    if (p->pos == start) return fail_at(p, start, "expected a rule name");
    uint32_t r;
    int rc = sl_grammar_rule(p->g, p->s + start, p->pos - start, (uint32_t)start, &r, p->err);
    if (rc) return rc;
    if (p->g->rules[r].defined) return fail_at(p, start, "rule '%s' is defined twice", p->g->rules[r].name);
    p->g->rules[r].defined = true;
    skip_space(p, false);
    if (p->n - p->pos < 3 || memcmp(p->s + p->pos, "::=", 3) != 0)
        return fail_at(p, p->pos, "expected '::=' after rule name '%s'", p->g->rules[r].name);
    p->pos += 3;
    skip_space(p, true);
    rc = parse_alternatives(p, r, false);
    if (rc) return rc;
    skip_space(p, false);
    if (p->pos < p->n && p->s[p->pos] != '\n' && p->s[p->pos] != '\r')
        return fail_at(p, p->pos, "unexpected '%c' (expected a newline after the rule)", p->s[p->pos]);
    return 0;
}

static int check_defined(gbnf *p) {
    for (uint32_t i = 0; i < p->g->n_rules; i++) {
        const sl_grule *r = &p->g->rules[i];
        if (!r->defined) return fail_at(p, r->ref_pos, "rule '%s' is used but never defined", r->name);
    }
    for (uint32_t i = 0; i < p->g->n_rules; i++)
        if (strcmp(p->g->rules[i].name, "root") == 0) return 0;
    return sl_err_set(p->err, SL_EINVAL, "grammar: no rule named 'root' (the start rule)");
}

int sl_grammar_parse_gbnf(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err) {
    *out = NULL;
    gbnf p = {.s = text, .n = n_bytes, .err = err};
    int rc = sl_grammar_create(&p.g, err);
    if (rc) return rc;
    while (!rc) {
        skip_space(&p, true);
        if (p.pos >= p.n) break;
        rc = parse_rule(&p);
    }
    if (!rc) rc = check_defined(&p);
    if (!rc) rc = sl_grammar_finalize(p.g, "root", err);
    if (rc) {
        sl_grammar_free(p.g);
        return rc;
    }
    *out = p.g;
    return 0;
}
