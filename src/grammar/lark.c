/* lark.c -- Lark grammar text -> sl_grammar: the subset of Lark that LLM
 * clients send as a structured-output grammar (vLLM hands Lark grammars to
 * its guidance / outlines backends), and sl_grammar_parse_any, which tells
 * GBNF from Lark.
 *
 *   definition  name: alts             a rule (lowercase name); `start` starts
 *               NAME: alts             a terminal (uppercase); rules and terminals may use it
 *               ?name !name ?!name     tree-shaping prefixes: accepted, no effect here
 *               name.N: NAME.N:        priorities: accepted, ignored
 *   alts        alt ("|" alt)*         a "|" may begin a continuation line; "-> alias" ignored
 *   alt         (item quantifier?)*
 *   item        "text"  "text"i  /regex/flags  "a".."z"  NAME  name  ( alts )  [ alts ]
 *   quantifier  ?  *  +  ~ n  ~ n..m   (n, m at most SL_GRAMMAR_MAX_REPEAT)
 *   directive   %import common.NAME [-> ALIAS]   %import common (NAME, ...)   %ignore alts
 *   comments    // or # to the end of the line; a backslash before a newline joins lines
 *
 * Each definition and directive begins a line (indenting is fine). Strings
 * take Python's escapes, as Lark does: \\ \" \n \t \r \f \xHH \uHHHH
 * \UHHHHHHHH (code points, written as UTF-8); a backslash before anything
 * else stands for itself. The i flag folds ASCII letters only. Regexes are
 * compiled by regex.c (its subset: no lookaround, backreferences or (?...)
 * groups) and copied in; flags i (ASCII folding), s ('.' takes newlines) and
 * u (no effect) are supported, m, x and l refused. `%import common` offers
 * the terminals of Lark's common.lark, written out in LIB_COMMON below for a
 * grammar over bytes (ESCAPED_STRING and C_COMMENT spell out what Lark gets
 * from lazy regexes and a lookbehind).
 *
 * %ignore. Lark's lexer drops the ignored terminals (usually whitespace)
 * wherever they appear between tokens. A decoder has no lexer: it writes
 * the text byte by byte, so the grammar must say where ignored text may go.
 * Here: an optional run of ignored terminals (IGN*) before every token of
 * a rule -- each string, range, regex or terminal reference in a rule's
 * alternative, at any nesting, so also before each copy of a repeated one
 * -- and never inside a terminal (terminals are lexical units). Ignored
 * text may so come between any two tokens and before the first, as Lark
 * reads it, but not after the last (a decoder could pad the end forever).
 * One run per gap between tokens, rather than one between every two
 * elements: runs side by side (around an absent optional part) would let
 * the matcher split a gap every possible way, work quadratic in its length
 * (2000 spaces passed the matcher's item bound). For the same reason a run
 * never reads an x+ terminal twice in a row (ignore_finish).
 *
 * Terminals are languages here (any way of splitting the text counts), not
 * the longest matches of Lark's standard lexer, so adjacent terminals that
 * can run together (WORD WORD with nothing ignored between) also split the
 * way only Lark's Earley parser with lexer="dynamic_complete" finds. Even
 * that lexer takes an ignored terminal greedily, so outputs parse in Lark
 * only where no ignored terminal can stop short of a longer match before a
 * token: whitespace, C_COMMENT and comments that take their newline
 * are fine; %ignore SH_COMMENT (a # comment could end mid-line, the rest
 * then read as tokens) and a literal an ignored terminal also matches
 * (" " under %ignore WS) are not.
 *
 * Refused with SL_ENOTSUP, naming the construct and its line: templates
 * (name{...}), %declare, %override, %extend, imports from anything but
 * `common`, regex flags m x l. More lenient than Lark: a newline inside ( )
 * or [ ] counts as a space; terminals may be recursive.
 *
 * Recursive descent straight into the sl_grammar, like gbnf.c; every error
 * names the line and column where parsing stopped. A first scan of the text
 * only looks for %ignore, so rules read before it know to refer to IGN*. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"

#define LARK_MAX_DEPTH 200 /* nested ( ) and [ ] */
#define LARK_MAX_NAME 128  /* bytes in a rule or terminal name */

typedef struct lark {
    const char *s;
    size_t n, pos;
    const char *what;   /* error prefix: "lark grammar" or the built-in library */
    const char *prefix; /* prepended to every name ("common." in the library) */
    sl_grammar *g;
    bool in_terminal;   /* in a terminal or %ignore: no IGN* before tokens */
    bool ignoring;      /* the text has %ignore: tokens of rules follow IGN* */
    uint32_t ign_run;   /* rule IGN*, its alternatives made once all %ignore are read */
    uint32_t *ignored;  /* one helper rule per %ignore directive */
    uint32_t n_ignored, cap_ignored;
    bool common_loaded;
    int depth;
    sl_err *err;
} lark;

/* Lark's common.lark (the terminals `%import common.X` offers), for a
 * grammar over bytes; parsed, when first imported, under names "common.X". */
static const char LIB_COMMON[] =
    "DIGIT: \"0\"..\"9\"\n"
    "HEXDIGIT: \"a\"..\"f\" | \"A\"..\"F\" | DIGIT\n"
    "INT: DIGIT+\n"
    "SIGNED_INT: [\"+\" | \"-\"] INT\n"
    "DECIMAL: INT \".\" INT? | \".\" INT\n"
    "_EXP: (\"e\" | \"E\") SIGNED_INT\n"
    "FLOAT: INT _EXP | DECIMAL _EXP?\n"
    "SIGNED_FLOAT: [\"+\" | \"-\"] FLOAT\n"
    "NUMBER: FLOAT | INT\n"
    "SIGNED_NUMBER: [\"+\" | \"-\"] NUMBER\n"
    "_STRING_ESC_INNER: /([^\"\\\\\\n]|\\\\[^\\n])*/\n" /* Lark: a lazy .* and a lookbehind */
    "ESCAPED_STRING: \"\\\"\" _STRING_ESC_INNER \"\\\"\"\n"
    "LCASE_LETTER: \"a\"..\"z\"\n"
    "UCASE_LETTER: \"A\"..\"Z\"\n"
    "LETTER: UCASE_LETTER | LCASE_LETTER\n"
    "WORD: LETTER+\n"
    "CNAME: (\"_\" | LETTER) (\"_\" | LETTER | DIGIT)*\n"
    "WS_INLINE: (\" \" | /\\t/)+\n"
    "WS: /[ \\t\\f\\r\\n]/+\n"
    "CR: /\\r/\n"
    "LF: /\\n/\n"
    "NEWLINE: (CR? LF)+\n"
    "SH_COMMENT: /#[^\\n]*/\n"
    "CPP_COMMENT: /\\/\\/[^\\n]*/\n"
    "C_COMMENT: /\\/\\*([^*]|\\*+[^*\\/])*\\*+\\//\n" /* Lark: a lazy (.|\n)* between the delimiters */
    "SQL_COMMENT: /--[^\\n]*/\n";

/* ---- errors and characters ---------------------------------------------- */

static void line_col(const lark *p, size_t pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < pos && i < p->n; i++) {
        if (p->s[i] == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

static int fail_at(lark *p, size_t pos, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(lark *p, size_t pos, int code, const char *fmt, ...) {
    int line, col;
    line_col(p, pos, &line, &col);
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sl_err_set(p->err, code, "%s: line %d, column %d: %s", p->what, line, col, what);
}

static int peek(const lark *p) { return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1; }
static int peek_at(const lark *p, size_t k) { return p->pos + k < p->n ? (unsigned char)p->s[p->pos + k] : -1; }

static bool at(const lark *p, const char *lit) {
    size_t l = strlen(lit);
    return p->n - p->pos >= l && memcmp(p->s + p->pos, lit, l) == 0;
}

/* The character at pos, printable, for "unexpected ..." errors. */
static const char *char_name(const lark *p, size_t pos, char buf[8]) {
    int c = pos < p->n ? (unsigned char)p->s[pos] : -1;
    if (c < 0) return "the end of the text";
    if (c > 0x20 && c < 0x7F) snprintf(buf, 8, "'%c'", c);
    else snprintf(buf, 8, "\\x%02X", (unsigned)c);
    return buf;
}

static bool is_lower(int c) { return c >= 'a' && c <= 'z'; }
static bool is_upper(int c) { return c >= 'A' && c <= 'Z'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_name_char(int c) { return is_lower(c) || is_upper(c) || is_digit(c) || c == '_'; }

static int hex_digit(int c) {
    return is_digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A backslash, spaces, then a newline: Lark joins the two lines. */
static size_t line_join(const lark *p) {
    size_t i = p->pos + 1;
    while (i < p->n && p->s[i] == ' ') i++;
    if (i < p->n && p->s[i] == '\r') i++;
    return i < p->n && p->s[i] == '\n' ? i + 1 - p->pos : 0;
}

/* Skips blanks, comments and line joins; newlines too when newline_ok. */
static void skip_space(lark *p, bool newline_ok) {
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        size_t join;
        if (c == ' ' || c == '\t' || c == '\r' || (c == '\n' && newline_ok)) p->pos++;
        else if (c == '#' || (c == '/' && peek_at(p, 1) == '/'))
            while (p->pos < p->n && p->s[p->pos] != '\n') p->pos++;
        else if (c == '\\' && (join = line_join(p)) > 0) p->pos += join;
        else break;
    }
}

/* ---- names ---------------------------------------------------------------- */

/* A rule or terminal name at pos: lowercase names rules, uppercase
 * terminals, either after leading underscores. */
static int scan_name(lark *p, size_t *start, size_t *len, bool *terminal) {
    *start = p->pos;
    while (is_name_char(peek(p))) p->pos++;
    *len = p->pos - *start;
    const char *s = p->s + *start;
    size_t i = 0;
    while (i < *len && s[i] == '_') i++;
    if (i == *len || is_digit(s[i])) {
        char buf[8];
        return fail_at(p, *start, SL_EINVAL, "expected a rule or terminal name, found %s", char_name(p, *start + i, buf));
    }
    *terminal = is_upper(s[i]);
    for (; i < *len; i++)
        if (*terminal ? is_lower(s[i]) : is_upper(s[i]))
            return fail_at(p, *start, SL_EINVAL, "'%.*s' mixes cases (rule names are lowercase, terminal names uppercase)",
                           (int)*len, s);
    if (*len > LARK_MAX_NAME) return fail_at(p, *start, SL_EINVAL, "a name longer than %d bytes", LARK_MAX_NAME);
    return 0;
}

/* The grammar rule of a Lark name (with the parser's prefix). */
static int name_rule(lark *p, const char *name, size_t len, size_t pos, uint32_t *rule) {
    char full[LARK_MAX_NAME + 16];
    int n = snprintf(full, sizeof full, "%s%.*s", p->prefix, (int)len, name);
    return sl_grammar_rule(p->g, full, (size_t)n, (uint32_t)pos, rule, p->err);
}

static uint32_t find_rule(const sl_grammar *g, const char *name) {
    for (uint32_t i = 0; i < g->n_rules; i++)
        if (strcmp(g->rules[i].name, name) == 0) return i;
    return UINT32_MAX;
}

/* Whether the common library defines name (a line "NAME: ..."). */
static bool lib_has(const char *name, size_t len) {
    for (const char *l = LIB_COMMON; *l; l = strchr(l, '\n') + 1)
        if (strncmp(l, name, len) == 0 && l[len] == ':') return true;
    return false;
}

/* The library's public names, comma-separated, into buf. */
static void lib_names(char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = '\0';
    for (const char *l = LIB_COMMON; *l; l = strchr(l, '\n') + 1) {
        size_t len = strcspn(l, ":");
        if (l[0] == '_') continue;
        int w = snprintf(buf + at, cap - at, "%s%.*s", at ? ", " : "", (int)len, l);
        if (w < 0 || (size_t)w >= cap - at) return;
        at += (size_t)w;
    }
}

/* ---- strings ----------------------------------------------------------------- */

/* Reads HEX digits after an escape into *cp (a Unicode scalar value). */
static int string_hex(lark *p, int digits, uint32_t *cp) {
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int d = hex_digit(peek(p));
        if (d < 0) return fail_at(p, p->pos, SL_EINVAL, "expected %d hex digits in an escape", digits);
        v = v * 16 + (uint32_t)d;
        p->pos++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail_at(p, p->pos, SL_EINVAL, "escape names U+%X, which is not a Unicode scalar value", v);
    *cp = v;
    return 0;
}

/* After a backslash in a string: appends what the escape stands for. */
static int string_escape(lark *p, uint8_t *b, size_t *k) {
    int c = peek(p);
    uint32_t cp = 0;
    int rc = 0;
    switch (c) {
    case '\\': case '"': cp = (uint32_t)c; p->pos++; break;
    case 'n': cp = '\n'; p->pos++; break;
    case 't': cp = '\t'; p->pos++; break;
    case 'r': cp = '\r'; p->pos++; break;
    case 'f': cp = '\f'; p->pos++; break;
    case 'x': p->pos++; rc = string_hex(p, 2, &cp); break;
    case 'u': p->pos++; rc = string_hex(p, 4, &cp); break;
    case 'U': p->pos++; rc = string_hex(p, 8, &cp); break;
    default: b[(*k)++] = '\\'; return 0; /* Python keeps "\d" as backslash, d */
    }
    if (!rc) *k += (size_t)sl_grammar_utf8_encode(cp, b + *k);
    return rc;
}

/* A "..." literal at pos: its bytes (malloc'd) and length; pos ends after
 * the closing quote. Lark strings end on their line. */
static int scan_string(lark *p, uint8_t **out, size_t *len) {
    size_t start = p->pos++, end = p->pos;
    while (end < p->n && p->s[end] != '"' && p->s[end] != '\n')
        end += p->s[end] == '\\' && end + 1 < p->n && p->s[end + 1] != '\n' ? 2 : 1;
    if (end >= p->n || p->s[end] != '"') return fail_at(p, start, SL_EINVAL, "unterminated string (strings end on their line)");
    uint8_t *b = malloc(end - p->pos + 1); /* an escape never takes more bytes than its source */
    if (!b) return sl_err_set(p->err, SL_ENOMEM, "lark grammar: out of memory");
    size_t k = 0;
    int rc = 0;
    while (!rc && p->pos < end) {
        char c = p->s[p->pos++];
        if (c == '\\') rc = string_escape(p, b, &k);
        else b[k++] = (uint8_t)c;
    }
    p->pos = end + 1;
    if (!rc && k == 0) rc = fail_at(p, start, SL_EINVAL, "an empty string (Lark refuses empty terminals)");
    if (rc) free(b);
    else *out = b, *len = k;
    return rc;
}

/* The one UTF-8 code point of b[0..n), or -1. */
static int64_t single_code_point(const uint8_t *b, size_t n) {
    int len = b[0] < 0x80 ? 1 : (b[0] & 0xE0) == 0xC0 ? 2 : (b[0] & 0xF0) == 0xE0 ? 3 : (b[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || (size_t)len != n) return -1;
    uint32_t v = len == 1 ? b[0] : b[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((b[i] & 0xC0) != 0x80) return -1;
        v = v << 6 | (b[i] & 0x3F);
    }
    return v;
}

static void fold_class(sl_gclass *c) {
    for (unsigned b = 'a'; b <= 'z'; b++)
        if (sl_gclass_has(c, (uint8_t)b) || sl_gclass_has(c, (uint8_t)(b - 32))) {
            sl_gclass_add_range(c, b, b);
            sl_gclass_add_range(c, b - 32, b - 32);
        }
}

/* Appends the bytes as one-byte classes, both cases of ASCII letters when fold. */
static int push_bytes(lark *p, sl_gseq *seq, const uint8_t *b, size_t n, bool fold) {
    if (!fold) return sl_grammar_push_literal(p->g, seq, b, n, p->err);
    for (size_t i = 0; i < n; i++) {
        sl_gclass c = {0};
        sl_gclass_add_range(&c, b[i], b[i]);
        fold_class(&c);
        sl_gelem e;
        int rc = sl_grammar_class(p->g, &c, &e, p->err);
        if (!rc) rc = sl_gseq_push(seq, e, p->err);
        if (rc) return rc;
    }
    return 0;
}

/* "a".."z" after the first string (lo, its bytes): one code point in the range. */
static int parse_range(lark *p, size_t start, const uint8_t *lo_b, size_t lo_n, sl_gseq *seq) {
    p->pos += 2;
    skip_space(p, false);
    if (peek(p) != '"') return fail_at(p, p->pos, SL_EINVAL, "expected a string after '..'");
    uint8_t *hi_b;
    size_t hi_n;
    int rc = scan_string(p, &hi_b, &hi_n);
    if (rc) return rc;
    int64_t lo = single_code_point(lo_b, lo_n), hi = single_code_point(hi_b, hi_n);
    free(hi_b);
    if (lo < 0 || hi < 0) return fail_at(p, start, SL_EINVAL, "a range \"a\"..\"z\" takes strings of one character each");
    if (hi < lo) return fail_at(p, start, SL_EINVAL, "range end U+%X below its start U+%X", (unsigned)hi, (unsigned)lo);
    uint32_t r[2] = {(uint32_t)lo, (uint32_t)hi};
    sl_gelem e;
    rc = sl_grammar_codepoints(p->g, r, 1, false, &e, p->err);
    return rc ? rc : sl_gseq_push(seq, e, p->err);
}

/* "text", "text"i or "a".."z". */
static int parse_string(lark *p, sl_gseq *seq) {
    size_t start = p->pos;
    uint8_t *b;
    size_t n;
    int rc = scan_string(p, &b, &n);
    if (rc) return rc;
    bool fold = peek(p) == 'i';
    if (fold) p->pos++;
    skip_space(p, false);
    if (at(p, "..")) rc = fold ? fail_at(p, start, SL_EINVAL, "a range takes no 'i' flag")
                               : parse_range(p, start, b, n, seq);
    else rc = push_bytes(p, seq, b, n, fold);
    free(b);
    return rc;
}

/* ---- regexes ------------------------------------------------------------------ */

/* re with every '.' outside a class spelled [\s\S] (the s flag); malloc'd. */
static char *regex_dotall(const char *re, size_t n, size_t *out_n) {
    char *o = malloc(6 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            o[k++] = c;
            o[k++] = re[++i];
            continue;
        }
        if (!in_class && c == '.') {
            memcpy(o + k, "[\\s\\S]", 6);
            k += 6;
            continue;
        }
        o[k++] = c;
        if (in_class && c == ']') in_class = false;
        else if (!in_class && c == '[') { /* a ']' first in a class is a member, as in regex.c */
            in_class = true;
            if (i + 1 < n && re[i + 1] == '^') o[k++] = re[++i];
            if (i + 1 < n && re[i + 1] == ']') o[k++] = re[++i];
        }
    }
    *out_n = k;
    return o;
}

/* Copies every rule of sub (a finalized grammar) into p's grammar as fresh
 * helpers (counted repetitions with their counts), folding ASCII case in its
 * classes when fold; *out is sub's root. */
static int import_grammar(lark *p, const sl_grammar *sub, bool fold, sl_gelem *out) {
    uint32_t *map = malloc((sub->n_rules ? sub->n_rules : 1) * sizeof *map);
    if (!map) return sl_err_set(p->err, SL_ENOMEM, "lark grammar: out of memory");
    int rc = 0;
    for (uint32_t r = 0; r < sub->n_rules && !rc; r++) {
        rc = sl_grammar_rule_new(p->g, "regex", &map[r], p->err);
        if (rc || !sub->rules[r].repeat) continue; /* a counted repetition keeps its counts */
        p->g->rules[map[r]].repeat = true;
        p->g->rules[map[r]].rep_min = sub->rules[r].rep_min;
        p->g->rules[map[r]].rep_max = sub->rules[r].rep_max;
    }
    sl_gseq seq = {0};
    for (uint32_t a = 0; a < sub->n_alts && !rc; a++) {
        const sl_galt *alt = &sub->alts[a];
        seq.n = 0;
        for (uint32_t i = 0; i < alt->n_elems && !rc; i++) {
            sl_gelem e = sub->elems[alt->first_elem + i];
            if (e.kind == SL_GELEM_RULE) {
                rc = sl_gseq_push(&seq, (sl_gelem){.kind = SL_GELEM_RULE, .value = map[e.value]}, p->err);
                continue;
            }
            sl_gclass c = sub->classes[e.value];
            if (fold) fold_class(&c);
            rc = sl_grammar_class(p->g, &c, &e, p->err);
            if (!rc) rc = sl_gseq_push(&seq, e, p->err);
        }
        if (!rc) rc = sl_grammar_add_alt(p->g, map[alt->rule], seq.v, seq.n, p->err);
    }
    *out = (sl_gelem){.kind = SL_GELEM_RULE, .value = map[sub->root]};
    sl_gseq_free(&seq);
    free(map);
    return rc;
}

/* Regex flags after the closing '/'. */
static int regex_flags(lark *p, bool *fold, bool *dotall) {
    *fold = *dotall = false;
    for (;;) {
        int c = peek(p);
        if (c == 'i') *fold = true;
        else if (c == 's') *dotall = true;
        else if (c == 'm' || c == 'x' || c == 'l')
            return fail_at(p, p->pos, SL_ENOTSUP, "the regex flag '%c' is not supported (only i, s and u are)", c);
        else if (c != 'u') return 0;
        p->pos++;
    }
}

/* /regex/flags: compiled by regex.c, copied in as helper rules. */
static int parse_regex(lark *p, sl_gseq *seq) {
    size_t start = p->pos++, body = p->pos;
    while (peek(p) != '/') {
        int c = peek(p), next = peek_at(p, 1);
        if (c < 0 || c == '\n' || (c == '\\' && (next < 0 || next == '\n')))
            return fail_at(p, start, SL_EINVAL, "unterminated regex (a regex ends on its line; the x flag is not supported)");
        p->pos += c == '\\' ? 2 : 1;
    }
    size_t body_n = p->pos++ - body;
    bool fold, dotall;
    int rc = regex_flags(p, &fold, &dotall);
    if (rc) return rc;
    const char *re = p->s + body;
    char *rewritten = NULL;
    if (dotall && !(re = rewritten = regex_dotall(re, body_n, &body_n)))
        return sl_err_set(p->err, SL_ENOMEM, "lark grammar: out of memory");
    sl_err sub_err = {0};
    sl_grammar *sub = NULL;
    rc = sl_grammar_from_regex(re, body_n, &sub, &sub_err);
    free(rewritten);
    if (rc) return fail_at(p, start, rc, "in this regex: %s", sub_err.msg);
    sl_gelem e;
    rc = import_grammar(p, sub, fold, &e);
    sl_grammar_free(sub);
    return rc ? rc : sl_gseq_push(seq, e, p->err);
}

/* ---- items, quantifiers, alternatives -------------------------------------- */

static int parse_alternatives(lark *p, uint32_t rule, bool nested);

/* ( alts ) or [ alts ] (optional). */
static int parse_group(lark *p, sl_gseq *seq) {
    size_t start = p->pos;
    char close = p->s[p->pos++] == '(' ? ')' : ']';
    if (p->depth >= LARK_MAX_DEPTH)
        return fail_at(p, start, SL_EINVAL, "parentheses and brackets nested deeper than %d", LARK_MAX_DEPTH);
    p->depth++;
    uint32_t r;
    int rc = sl_grammar_rule_new(p->g, "group", &r, p->err);
    if (!rc) rc = parse_alternatives(p, r, true);
    if (!rc && peek(p) != close) {
        int line, col;
        char buf[8];
        line_col(p, start, &line, &col);
        rc = fail_at(p, p->pos, SL_EINVAL, "expected '%c' to close the '%c' at line %d, column %d, found %s", close,
                     p->s[start], line, col, char_name(p, p->pos, buf));
    }
    p->pos++;
    p->depth--;
    sl_gelem e = {.kind = SL_GELEM_RULE, .value = r};
    if (!rc && close == ']') rc = sl_grammar_repeat(p->g, &e, 1, 0, 1, &e, p->err);
    return rc ? rc : sl_gseq_push(seq, e, p->err);
}

/* A reference to a rule or terminal. */
static int parse_ref(lark *p, sl_gseq *seq) {
    size_t start, len;
    bool terminal;
    int rc = scan_name(p, &start, &len, &terminal);
    if (rc) return rc;
    if (peek(p) == '{')
        return fail_at(p, start, SL_ENOTSUP, "templates ('%.*s{...}') are not supported", (int)len, p->s + start);
    if (p->in_terminal && !terminal)
        return fail_at(p, start, SL_EINVAL, "'%.*s' is a rule; terminals and %%ignore may use only terminals",
                       (int)len, p->s + start);
    uint32_t r;
    rc = name_rule(p, p->s + start, len, start, &r);
    return rc ? rc : sl_gseq_push(seq, (sl_gelem){.kind = SL_GELEM_RULE, .value = r}, p->err);
}

/* Whether the item at pos is a token: a string, range, regex or terminal. */
static bool at_token(const lark *p) {
    int c = peek(p);
    size_t i = p->pos;
    if (c == '"' || c == '/') return true;
    while (i < p->n && p->s[i] == '_') i++;
    return i < p->n && is_upper((unsigned char)p->s[i]);
}

/* One item; in a rule, a token comes after IGN* (see the top comment). */
static int parse_item(lark *p, sl_gseq *item) {
    int c = peek(p), rc = 0;
    if (p->ignoring && !p->in_terminal && at_token(p))
        rc = sl_gseq_push(item, (sl_gelem){.kind = SL_GELEM_RULE, .value = p->ign_run}, p->err);
    if (rc) return rc;
    if (c == '"') return parse_string(p, item);
    if (c == '/') return parse_regex(p, item);
    if (c == '(' || c == '[') return parse_group(p, item);
    return parse_ref(p, item);
}

static bool is_item_start(int c) { return c == '"' || c == '/' || c == '(' || c == '[' || is_name_char(c); }

static int parse_count(lark *p, uint32_t *v) {
    skip_space(p, false);
    if (!is_digit(peek(p))) return fail_at(p, p->pos, SL_EINVAL, "expected a number after '~'");
    uint64_t x = 0;
    while (is_digit(peek(p))) {
        x = x * 10 + (uint64_t)(peek(p) - '0');
        if (x > SL_GRAMMAR_MAX_REPEAT)
            return fail_at(p, p->pos, SL_EINVAL, "repetition count above %d", SL_GRAMMAR_MAX_REPEAT);
        p->pos++;
    }
    *v = (uint32_t)x;
    return 0;
}

/* Applies a quantifier, if one follows, to the item (which becomes one element). */
static int parse_quantifier(lark *p, sl_gseq *item) {
    skip_space(p, false);
    int c = peek(p), rc = 0;
    uint32_t min = 0, max = 0;
    if (c == '?') min = 0, max = 1;
    else if (c == '*') min = 0, max = UINT32_MAX;
    else if (c == '+') min = 1, max = UINT32_MAX;
    else if (c != '~') return 0;
    size_t start = p->pos++;
    if (c == '~') {
        rc = parse_count(p, &min);
        max = min;
        skip_space(p, false);
        if (!rc && at(p, "..")) {
            p->pos += 2;
            rc = parse_count(p, &max);
            if (!rc && max < min) rc = fail_at(p, start, SL_EINVAL, "repetition ~ %u..%u has max below min", min, max);
        }
        if (rc) return rc;
    }
    sl_gelem e;
    rc = sl_grammar_repeat(p->g, item->v, item->n, min, max, &e, p->err);
    item->n = 0;
    return rc ? rc : sl_gseq_push(item, e, p->err);
}

static int parse_sequence(lark *p, sl_gseq *seq, bool nested) {
    for (;;) {
        skip_space(p, nested);
        if (!is_item_start(peek(p))) return 0;
        sl_gseq item = {0};
        int rc = parse_item(p, &item);
        if (!rc) rc = parse_quantifier(p, &item);
        for (uint32_t i = 0; i < item.n && !rc; i++) rc = sl_gseq_push(seq, item.v[i], p->err);
        sl_gseq_free(&item);
        if (rc) return rc;
    }
}

/* "-> alias" after an alternative: names a tree node, nothing to match. */
static int skip_alias(lark *p, bool nested) {
    skip_space(p, nested);
    if (!at(p, "->")) return 0;
    p->pos += 2;
    skip_space(p, false);
    size_t start, len;
    bool terminal;
    return scan_name(p, &start, &len, &terminal);
}

/* At a newline that ends an alternative: whether a later line (after blank
 * and comment lines) begins with "|"; if so, moves past it. */
static bool continues(lark *p) {
    size_t save = p->pos;
    skip_space(p, true);
    if (peek(p) == '|') {
        p->pos++;
        return true;
    }
    p->pos = save;
    return false;
}

static int parse_alternatives(lark *p, uint32_t rule, bool nested) {
    for (;;) {
        sl_gseq seq = {0};
        int rc = parse_sequence(p, &seq, nested);
        if (!rc) rc = skip_alias(p, nested);
        if (!rc) rc = sl_grammar_add_alt(p->g, rule, seq.v, seq.n, p->err);
        sl_gseq_free(&seq);
        if (rc) return rc;
        skip_space(p, nested);
        if (peek(p) == '|') p->pos++;
        else if (nested || !continues(p)) return 0;
    }
}

/* ---- definitions and directives ------------------------------------------- */

/* The optional ".N" priority after a definition's name (ignored). */
static int skip_priority(lark *p) {
    skip_space(p, false);
    if (peek(p) != '.') return 0;
    p->pos++;
    skip_space(p, false);
    if (peek(p) == '+' || peek(p) == '-') p->pos++;
    if (!is_digit(peek(p))) return fail_at(p, p->pos, SL_EINVAL, "expected a number after '.' (a priority)");
    while (is_digit(peek(p))) p->pos++;
    return 0;
}

/* name: alts, NAME: alts, with ?/! prefixes and .N priorities. */
static int parse_definition(lark *p) {
    size_t start = p->pos;
    while (peek(p) == '?' || peek(p) == '!') p->pos++;
    bool prefixed = p->pos > start;
    size_t name, len;
    bool terminal;
    int rc = scan_name(p, &name, &len, &terminal);
    if (rc) return rc;
    if (prefixed && terminal)
        return fail_at(p, start, SL_EINVAL, "'?' and '!' apply to rules, not to the terminal '%.*s'", (int)len, p->s + name);
    if (peek(p) == '{')
        return fail_at(p, name, SL_ENOTSUP, "templates ('%.*s{...}: ...') are not supported", (int)len, p->s + name);
    rc = skip_priority(p);
    if (rc) return rc;
    skip_space(p, false);
    if (peek(p) != ':') {
        char buf[8];
        return fail_at(p, p->pos, SL_EINVAL, "expected ':' after '%.*s', found %s", (int)len, p->s + name,
                       char_name(p, p->pos, buf));
    }
    p->pos++;
    uint32_t r;
    rc = name_rule(p, p->s + name, len, name, &r);
    if (rc) return rc;
    if (p->g->rules[r].defined) return fail_at(p, start, SL_EINVAL, "'%.*s' is defined twice", (int)len, p->s + name);
    p->g->rules[r].defined = true;
    p->in_terminal = terminal;
    rc = parse_alternatives(p, r, false);
    p->in_terminal = false;
    return rc;
}

static int parse_statements(lark *p);

/* Parses LIB_COMMON into the grammar (once), under names "common.X". */
static int load_common(lark *p) {
    if (p->common_loaded) return 0;
    p->common_loaded = true;
    lark lib = {.s = LIB_COMMON, .n = sizeof LIB_COMMON - 1, .what = "lark grammar: the built-in common library",
                .prefix = "common.", .g = p->g, .err = p->err};
    return parse_statements(&lib);
}

/* Defines local (a terminal name) as common.NAME. */
static int import_name(lark *p, size_t name, size_t name_len, size_t local, size_t local_len) {
    size_t at = p->pos, start, len;
    bool terminal;
    p->pos = name;
    int rc = scan_name(p, &start, &len, &terminal);
    p->pos = at;
    if (rc) return rc;
    if (!terminal)
        return fail_at(p, name, SL_EINVAL, "'%.*s': the common library has only terminals (uppercase names)", (int)len,
                       p->s + name);
    char full[LARK_MAX_NAME + 16];
    snprintf(full, sizeof full, "common.%.*s", (int)name_len, p->s + name);
    uint32_t src = find_rule(p->g, full), r;
    if (src == UINT32_MAX || !p->g->rules[src].defined) {
        char names[1024];
        lib_names(names, sizeof names);
        return fail_at(p, name, SL_EINVAL, "'%.*s' is not in the built-in common library (it has %s)", (int)name_len,
                       p->s + name, names);
    }
    rc = name_rule(p, p->s + local, local_len, local, &r);
    if (rc) return rc;
    if (p->g->rules[r].defined) return fail_at(p, local, SL_EINVAL, "'%.*s' is defined twice", (int)local_len, p->s + local);
    p->g->rules[r].defined = true;
    return sl_grammar_add_alt(p->g, r, &(sl_gelem){.kind = SL_GELEM_RULE, .value = src}, 1, p->err);
}

/* A terminal name for an import (the library has only terminals). */
static int scan_import_name(lark *p, size_t *start, size_t *len) {
    bool terminal;
    skip_space(p, false);
    int rc = scan_name(p, start, len, &terminal);
    if (!rc && !terminal)
        rc = fail_at(p, *start, SL_EINVAL, "'%.*s': the common library has only terminals (uppercase names)", (int)*len,
                     p->s + *start);
    return rc;
}

/* %import common (A, B, ...), after the '('. */
static int import_list(lark *p) {
    for (;;) {
        size_t name, len;
        int rc = scan_import_name(p, &name, &len);
        if (!rc) rc = import_name(p, name, len, name, len);
        if (rc) return rc;
        skip_space(p, true);
        int c = peek(p);
        p->pos++;
        if (c == ')') return 0;
        if (c != ',') {
            char buf[8];
            return fail_at(p, p->pos - 1, SL_EINVAL, "expected ',' or ')' in an import list, found %s",
                           char_name(p, p->pos - 1, buf));
        }
        skip_space(p, true);
    }
}

/* %import common.NAME [-> ALIAS] or %import common (NAME, ...). */
static int parse_import(lark *p, size_t start) {
    skip_space(p, false);
    if (peek(p) == '.') return fail_at(p, start, SL_ENOTSUP, "relative imports (%%import .file) are not supported");
    size_t path = p->pos, last = p->pos;
    while (is_name_char(peek(p)) || (peek(p) == '.' && is_name_char(peek_at(p, 1)))) {
        if (peek(p) == '.') last = p->pos + 1;
        p->pos++;
    }
    size_t path_end = p->pos;
    skip_space(p, false);
    bool list = peek(p) == '(';
    if (path_end == path || (!list && last == path))
        return fail_at(p, start, SL_EINVAL, "expected a module and a name, as in %%import common.NUMBER");
    size_t module_end = list ? path_end : last > path ? last - 1 : path;
    if (module_end - path != 6 || memcmp(p->s + path, "common", 6) != 0)
        return fail_at(p, start, SL_ENOTSUP, "%%import from '%.*s' is not supported (only Lark's common library is built in)",
                       (int)(module_end - path), p->s + path);
    int rc = load_common(p);
    if (rc) return rc;
    if (list) {
        p->pos++;
        return import_list(p);
    }
    size_t local = last, local_len = path_end - last;
    if (at(p, "->")) {
        p->pos += 2;
        rc = scan_import_name(p, &local, &local_len);
    }
    return rc ? rc : import_name(p, last, path_end - last, local, local_len);
}

/* %ignore alts: each alternative becomes one of the ignored terminals. */
static int parse_ignore(lark *p, size_t start) {
    if (!p->ignoring) return fail_at(p, start, SL_EINTERNAL, "%%ignore missed by the first scan");
    if (p->n_ignored == p->cap_ignored) {
        uint32_t cap = p->cap_ignored ? 2 * p->cap_ignored : 4;
        uint32_t *v = realloc(p->ignored, cap * sizeof *v);
        if (!v) return sl_err_set(p->err, SL_ENOMEM, "lark grammar: out of memory");
        p->ignored = v, p->cap_ignored = cap;
    }
    uint32_t r;
    int rc = sl_grammar_rule_new(p->g, "ignore", &r, p->err);
    if (rc) return rc;
    p->ignored[p->n_ignored++] = r;
    p->in_terminal = true;
    rc = parse_alternatives(p, r, false);
    p->in_terminal = false;
    return rc;
}

static int parse_directive(lark *p) {
    size_t start = p->pos++, word = p->pos;
    while (is_name_char(peek(p))) p->pos++;
    int len = (int)(p->pos - word);
    const char *w = p->s + word;
    if (len == 6 && !memcmp(w, "ignore", 6)) return parse_ignore(p, start);
    if (len == 6 && !memcmp(w, "import", 6)) return parse_import(p, start);
    if ((len == 7 && !memcmp(w, "declare", 7)) || (len == 8 && !memcmp(w, "override", 8)) ||
        (len == 6 && !memcmp(w, "extend", 6)))
        return fail_at(p, start, SL_ENOTSUP, "%%%.*s is not supported", len, w);
    return fail_at(p, start, SL_EINVAL, "unknown directive '%%%.*s'", len, w);
}

static int parse_statements(lark *p) {
    for (;;) {
        skip_space(p, true);
        if (p->pos >= p->n) return 0;
        int rc = peek(p) == '%' ? parse_directive(p) : parse_definition(p);
        if (rc) return rc;
        skip_space(p, false);
        if (p->pos < p->n && peek(p) != '\n') {
            char buf[8];
            return fail_at(p, p->pos, SL_EINVAL, "unexpected %s (expected the end of the line)", char_name(p, p->pos, buf));
        }
    }
}

/* ---- the whole text ---------------------------------------------------------- */

/* Whether some line begins with %ignore (the first scan; see the top comment). */
static bool text_has_ignore(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) i++;
        if (n - i >= 7 && memcmp(s + i, "%ignore", 7) == 0) return true;
        while (i < n && s[i] != '\n') i++;
    }
    return false;
}

/* The alternatives of rule r (up to max of them) into out; returns how many there are. */
static uint32_t rule_alts(const sl_grammar *g, uint32_t r, const sl_galt **out, uint32_t max) {
    uint32_t n = 0;
    for (uint32_t a = 0; a < g->n_alts; a++)
        if (g->alts[a].rule == r && n++ < max) out[n - 1] = &g->alts[a];
    return n;
}

/* Whether rule r is x+ as sl_grammar_repeat builds it (r ::= x S and
 * S ::= <empty> | S x), once rules that are a single reference to another
 * are followed; then r r derives only what r does. */
static bool derives_plus(const sl_grammar *g, uint32_t r) {
    const sl_galt *a[2];
    for (int hops = 0; hops < 64; hops++) {
        if (rule_alts(g, r, a, 2) != 1) return false;
        const sl_gelem *e = g->elems + a[0]->first_elem;
        if (a[0]->n_elems == 1 && e[0].kind == SL_GELEM_RULE) {
            r = e[0].value;
            continue;
        }
        if (a[0]->n_elems != 2 || e[1].kind != SL_GELEM_RULE) return false;
        const sl_galt *s[2];
        uint32_t star = e[1].value;
        if (rule_alts(g, star, s, 2) != 2 || s[0]->n_elems != 0 || s[1]->n_elems != 2) return false;
        const sl_gelem *f = g->elems + s[1]->first_elem;
        return f[0].kind == SL_GELEM_RULE && f[0].value == star && f[1].kind == e[0].kind && f[1].value == e[0].value;
    }
    return false;
}

/* IGN*, a rule the tokens of rules refer to, made before anything is read. */
static int ignore_init(lark *p) {
    p->ignoring = true;
    return sl_grammar_rule_new(p->g, "ignored", &p->ign_run, p->err);
}

/* IGN*'s alternatives, once every %ignore is read: with T_1..T_k ignored,
 *   IGN* ::= <empty> | E_1 | ... | E_k     E_i: a run ending with T_i
 *   E_i  ::= T_i | E_j T_i                  for each j, except j = i when T_i is some x+
 * T_i T_i adds nothing when T_i is x+ (WS, WS_INLINE, /\s+/), and
 * refusing that split keeps a run of whitespace from being read every
 * possible way: the matcher's work stays linear in its length. */
static int ignore_finish(lark *p) {
    uint32_t k = p->n_ignored, *ends = malloc((k ? k : 1) * sizeof *ends);
    if (!ends) return sl_err_set(p->err, SL_ENOMEM, "lark grammar: out of memory");
    int rc = sl_grammar_add_alt(p->g, p->ign_run, NULL, 0, p->err);
    for (uint32_t i = 0; i < k && !rc; i++) rc = sl_grammar_rule_new(p->g, "ignored-run", &ends[i], p->err);
    for (uint32_t i = 0; i < k && !rc; i++) {
        sl_gelem t = {.kind = SL_GELEM_RULE, .value = p->ignored[i]}, end = {.kind = SL_GELEM_RULE, .value = ends[i]};
        bool plus = derives_plus(p->g, p->ignored[i]);
        rc = sl_grammar_add_alt(p->g, p->ign_run, &end, 1, p->err);
        if (!rc) rc = sl_grammar_add_alt(p->g, ends[i], &t, 1, p->err);
        for (uint32_t j = 0; j < k && !rc; j++) {
            sl_gelem alt[2] = {{.kind = SL_GELEM_RULE, .value = ends[j]}, t};
            if (j != i || !plus) rc = sl_grammar_add_alt(p->g, ends[i], alt, 2, p->err);
        }
    }
    free(ends);
    return rc;
}

static int check_defined(lark *p) {
    for (uint32_t i = 0; i < p->g->n_rules; i++) {
        const sl_grule *r = &p->g->rules[i];
        if (r->defined) continue;
        if (lib_has(r->name, strlen(r->name)))
            return fail_at(p, r->ref_pos, SL_EINVAL, "'%s' is used but never defined (add %%import common.%s)", r->name,
                           r->name);
        return fail_at(p, r->ref_pos, SL_EINVAL, "'%s' is used but never defined", r->name);
    }
    uint32_t start = find_rule(p->g, "start");
    if (start == UINT32_MAX)
        return sl_err_set(p->err, SL_EINVAL, "%s: no rule named 'start' (Lark's start rule)", p->what);
    return 0;
}

int sl_grammar_parse_lark(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err) {
    *out = NULL;
    lark p = {.s = text, .n = n_bytes, .what = "lark grammar", .prefix = "", .err = err};
    int rc = sl_grammar_create(&p.g, err);
    if (rc) return rc;
    if (text_has_ignore(text, n_bytes)) rc = ignore_init(&p);
    if (!rc) rc = parse_statements(&p);
    if (!rc) rc = check_defined(&p);
    if (!rc && p.ignoring) rc = ignore_finish(&p);
    free(p.ignored);
    if (!rc) rc = sl_grammar_finalize(p.g, "start", err);
    if (rc) {
        sl_grammar_free(p.g);
        return rc;
    }
    *out = p.g;
    return 0;
}

/* ---- GBNF or Lark ------------------------------------------------------------- */

static bool is_gbnf_name_char(char c) { return is_name_char((unsigned char)c) || c == '-'; }

/* Whether some line begins with a GBNF rule definition, "name ::=". */
static bool has_gbnf_rule(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) i++;
        size_t name = i;
        while (i < n && is_gbnf_name_char(s[i])) i++;
        if (i > name) {
            while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
            if (n - i >= 3 && memcmp(s + i, "::=", 3) == 0) return true;
        }
        while (i < n && s[i] != '\n') i++;
    }
    return false;
}

int sl_grammar_parse_any(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err) {
    if (has_gbnf_rule(text, n_bytes)) {
        int rc = sl_grammar_parse_gbnf(text, n_bytes, out, err);
        return rc ? sl_err_wrap(err, rc, "read as GBNF (a line defines a rule with '::='): ") : 0;
    }
    int rc = sl_grammar_parse_lark(text, n_bytes, out, err);
    return rc ? sl_err_wrap(err, rc, "read as Lark (no line defines a rule with '::=', so not GBNF): ") : 0;
}
