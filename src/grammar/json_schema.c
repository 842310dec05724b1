/* json_schema.c -- JSON schema (OpenAI structured-outputs subset), any JSON
 * object, and choice lists -> GBNF -> sl_grammar.
 *
 * One GBNF rule per schema node ("s<n>"), memoized by node so $ref cycles
 * (recursive schemas) become recursive rules. Supported: type (one or a
 * list), properties / required / additionalProperties, items / minItems /
 * maxItems, enum, const, anyOf, allOf with one member, $ref to "#",
 * "#/$defs/x" or "#/definitions/x", string formats date, time, date-time,
 * email, uuid, pattern (regex.c, in JSON-string mode), minLength /
 * maxLength, minimum / maximum / exclusiveMinimum / exclusiveMaximum on
 * integers (exact ranges, below) and minimum 0 on numbers; annotations (title, description, default, examples, $schema,
 * $id, $comment, deprecated, readOnly, writeOnly) are ignored. Any other
 * keyword is an SL_ENOTSUP error naming it and its place in the schema.
 *
 * Objects: properties come in the schema's order, required ones always,
 * optional ones maybe (rules F_i / T_i below keep the commas right).
 * Without additionalProperties: false extra properties are still not
 * generated -- every output is valid, just a subset of what the schema
 * allows; an additionalProperties schema is supported only without
 * properties (a map). oneOf is refused (exclusivity cannot be enforced).
 *
 * Whitespace: between JSON tokens at most JSON_MAX_WS bytes of space, tab
 * or newline (the `ws` rule) -- enough for pretty printing a few levels
 * deep, and bounded so a model cannot loop on whitespace forever; none
 * before or after the top-level value. */
#include "grammar/json_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_WS 20
#define SCHEMA_MAX_DEPTH 64

/* ---- text buffer ------------------------------------------------------------ */

void sl_gtext_printf(sl_gtext *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->s && b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap <= b->n + (size_t)n) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

void sl_gtext_literal(sl_gtext *b, const char *s, size_t n) {
    sl_gtext_printf(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') sl_gtext_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7F) sl_gtext_printf(b, "\\x%02X", c);
        else sl_gtext_printf(b, "%c", c);
    }
    sl_gtext_printf(b, "\"");
}

void sl_gtext_free(sl_gtext *b) {
    free(b->s);
    *b = (sl_gtext){0};
}

/* ---- shared rules ----------------------------------------------------------- */

static const char JSON_BASE_RULES[] =
    "ws ::= [ \\t\\n]{0," "20" "}\n"
    "json-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
    "json-string ::= \"\\\"\" json-char* \"\\\"\"\n"
    "json-int ::= \"-\"? ( \"0\" | [1-9] [0-9]* )\n"
    "json-number ::= json-int ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?\n"
    "json-value ::= json-object | json-array | json-string | json-number | \"true\" | \"false\" | \"null\"\n"
    "json-member ::= json-string ws \":\" ws json-value ws\n"
    "json-object ::= \"{\" ws ( json-member ( \",\" ws json-member )* )? \"}\"\n"
    "json-array ::= \"[\" ws ( json-value ws ( \",\" ws json-value ws )* )? \"]\"\n"
    "fmt-hex ::= [0-9a-fA-F]\n"
    /* dates that exist: years 0001-9999, days per month, February 29 in leap years */
    "fmt-year ::= [0-9]{3} [1-9] | [0-9]{2} [1-9] \"0\" | [0-9] [1-9] \"00\" | [1-9] \"000\"\n"
    "fmt-leap4 ::= \"0\" [48] | [2468] [048] | [13579] [26]\n"
    "fmt-leap ::= [0-9]{2} fmt-leap4 | fmt-leap4 \"00\"\n"
    "fmt-md ::= ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] ) "
    "| ( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" ) "
    "| \"02-\" ( \"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] )\n"
    "fmt-date ::= fmt-year \"-\" fmt-md | fmt-leap \"-02-29\"\n"
    "fmt-time ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? "
    "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )\n"
    "fmt-date-time ::= fmt-date \"T\" fmt-time\n"
    "fmt-uuid ::= fmt-hex{8} \"-\" fmt-hex{4} \"-\" fmt-hex{4} \"-\" fmt-hex{4} \"-\" fmt-hex{12}\n"
    "fmt-email ::= [a-zA-Z0-9._%+-]+ \"@\" [a-zA-Z0-9-]+ ( \".\" [a-zA-Z0-9-]+ )+\n";

_Static_assert(JSON_MAX_WS == 20, "JSON_BASE_RULES spells the whitespace bound");

/* ---- the schema compiler ---------------------------------------------------- */

typedef struct memo {
    const json_t *node;
    unsigned id;
} memo;

typedef struct compiler {
    const json_t *root;
    sl_gtext rules; /* finished rules */
    sl_gtext out;   /* the rules of the node being compiled */
    memo *memo;
    size_t n_memo, cap_memo;
    unsigned next_id;
    int depth;
    char path[512]; /* JSON pointer of the node being compiled, for errors */
    sl_err *err;
} compiler;

static int compile(compiler *c, const json_t *s, unsigned *id);

static int unsupported(compiler *c, const char *what) {
    return sl_err_set(c->err, SL_ENOTSUP, "json schema: %s at '%s' is not supported", what,
                      c->path);
}

static int invalid(compiler *c, const char *what) {
    return sl_err_set(c->err, SL_EINVAL, "json schema: %s at '%s'", what, c->path);
}

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs",
                                          "definitions", NULL};
static const char *const KEYWORDS[] = {"type", "properties", "required", "additionalProperties", "items",
                                       "minItems", "maxItems", "enum", "const", "anyOf", "allOf", "$ref",
                                       "format", "pattern", "minLength", "maxLength", "minimum", "maximum",
                                       "exclusiveMinimum", "exclusiveMaximum", NULL};

static int in_list(const char *const *list, const char *key) {
    for (; *list; list++)
        if (strcmp(*list, key) == 0) return 1;
    return 0;
}

static int check_keywords(compiler *c, const json_t *s) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)s, key, v) {
        (void)v;
        if (in_list(ANNOTATIONS, key) || in_list(KEYWORDS, key)) continue;
        char what[300];
        snprintf(what, sizeof what, "the keyword '%.200s'", key);
        return unsupported(c, what);
    }
    return 0;
}

/* Rule text "<name> ::= " for node id. */
static void rule_head(compiler *c, unsigned id) { sl_gtext_printf(&c->out, "s%u ::= ", id); }

static void emit_json_literal(compiler *c, const json_t *v) {
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        c->out.failed = 1;
        return;
    }
    sl_gtext_literal(&c->out, text, strlen(text));
    free(text);
}

static int compile_enum(compiler *c, const json_t *values) {
    if (!json_is_array(values) || json_array_size(values) == 0) return invalid(c, "enum must be a non-empty array");
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v) {
        if (i) sl_gtext_printf(&c->out, " | ");
        emit_json_literal(c, v);
    }
    return 0;
}

/* Compiles each member of a child keyword; path gets "/key/i". */
static int compile_child(compiler *c, const json_t *s, const char *suffix, unsigned *id) {
    size_t len = strlen(c->path);
    snprintf(c->path + len, sizeof c->path - len, "/%s", suffix);
    int rc = compile(c, s, id);
    c->path[len] = 0;
    return rc;
}

static int compile_anyof(compiler *c, const json_t *list) {
    if (!json_is_array(list) || json_array_size(list) == 0) return invalid(c, "anyOf must be a non-empty array");
    unsigned *ids = calloc(json_array_size(list), sizeof *ids);
    if (!ids) return sl_err_set(c->err, SL_ENOMEM, "json schema: out of memory");
    size_t i;
    json_t *v;
    int rc = 0;
    json_array_foreach(list, i, v) {
        char sfx[32];
        snprintf(sfx, sizeof sfx, "anyOf/%zu", i);
        if (!rc) rc = compile_child(c, v, sfx, &ids[i]);
    }
    for (i = 0; !rc && i < json_array_size(list); i++) sl_gtext_printf(&c->out, "%ss%u", i ? " | " : "", ids[i]);
    free(ids);
    return rc;
}

static int get_count(compiler *c, const json_t *s, const char *key, long long dflt, long long *v) {
    const json_t *x = json_object_get(s, key);
    *v = dflt;
    if (!x) return 0;
    if (!json_is_integer(x) || json_integer_value(x) < 0) {
        char what[64];
        snprintf(what, sizeof what, "%s must be a non-negative integer", key);
        return invalid(c, what);
    }
    *v = json_integer_value(x);
    if (*v > SL_GRAMMAR_MAX_REPEAT) {
        char what[96];
        snprintf(what, sizeof what, "%s above %d", key, SL_GRAMMAR_MAX_REPEAT);
        return unsupported(c, what);
    }
    return 0;
}

/* {m,n} text for counts (n < 0: no bound). */
static void emit_count(compiler *c, long long m, long long n) {
    if (n < 0) sl_gtext_printf(&c->out, "{%lld,}", m);
    else sl_gtext_printf(&c->out, "{%lld,%lld}", m, n);
}

static int compile_string(compiler *c, const json_t *s) {
    const json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    long long min, max;
    int rc = get_count(c, s, "minLength", 0, &min);
    if (!rc) rc = get_count(c, s, "maxLength", -1, &max);
    if (rc) return rc;
    int has_len = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if ((fmt || pat) && has_len) return unsupported(c, "minLength/maxLength together with format or pattern");
    if (fmt && pat) return unsupported(c, "format together with pattern");
    if (max >= 0 && max < min) return invalid(c, "maxLength below minLength");
    if (pat) {
        if (!json_is_string(pat)) return invalid(c, "pattern must be a string");
        sl_gtext_printf(&c->out, "\"\\\"\" ");
        rc = sl_regex_to_gbnf(json_string_value(pat), json_string_length(pat), 1, &c->out, c->err);
        if (rc) return sl_err_wrap(c->err, rc, "json schema: pattern at '%s': ", c->path);
        sl_gtext_printf(&c->out, " \"\\\"\"");
        return 0;
    }
    if (fmt) {
        static const char *const formats[] = {"date", "time", "date-time", "email", "uuid", NULL};
        if (!json_is_string(fmt)) return invalid(c, "format must be a string");
        if (!in_list(formats, json_string_value(fmt))) {
            char what[300];
            snprintf(what, sizeof what, "the string format '%.200s'", json_string_value(fmt));
            return unsupported(c, what);
        }
        sl_gtext_printf(&c->out, "\"\\\"\" fmt-%s \"\\\"\"", json_string_value(fmt));
        return 0;
    }
    if (!has_len) {
        sl_gtext_printf(&c->out, "json-string");
        return 0;
    }
    sl_gtext_printf(&c->out, "\"\\\"\" json-char");
    emit_count(c, min, max);
    sl_gtext_printf(&c->out, " \"\\\"\"");
    return 0;
}

static int compile_array(compiler *c, const json_t *s) {
    long long min, max;
    int rc = get_count(c, s, "minItems", 0, &min);
    if (!rc) rc = get_count(c, s, "maxItems", -1, &max);
    if (rc) return rc;
    if (max >= 0 && max < min) return invalid(c, "maxItems below minItems");
    const json_t *items = json_object_get(s, "items");
    unsigned item = 0;
    if (items && json_is_array(items)) return unsupported(c, "items as an array (tuple validation)");
    if (items) rc = compile_child(c, items, "items", &item);
    if (rc) return rc;
    char it[32];
    if (items) snprintf(it, sizeof it, "s%u", item);
    else snprintf(it, sizeof it, "json-value");
    if (max == 0) {
        sl_gtext_printf(&c->out, "\"[\" ws \"]\"");
        return 0;
    }
    sl_gtext_printf(&c->out, "\"[\" ws %s( %s ws ( \",\" ws %s ws )", min == 0 ? "( " : "", it, it);
    emit_count(c, min ? min - 1 : 0, max < 0 ? -1 : max - 1);
    sl_gtext_printf(&c->out, " )%s \"]\"", min == 0 ? " )?" : "");
    return 0;
}

/* A map: additionalProperties is a schema (or true) and there are no properties. */
static int compile_map(compiler *c, const json_t *extra) {
    unsigned v = 0;
    char val[32] = "json-value";
    if (json_is_object(extra)) {
        int rc = compile_child(c, extra, "additionalProperties", &v);
        if (rc) return rc;
        snprintf(val, sizeof val, "s%u", v);
    }
    sl_gtext_printf(&c->out, "\"{\" ws ( json-string ws \":\" ws %s ws ( \",\" ws json-string ws \":\" ws %s ws )* )? \"}\"",
                    val, val);
    return 0;
}

static int is_required(const json_t *required, const char *name) {
    size_t i;
    json_t *v;
    json_array_foreach(required, i, v) if (json_is_string(v) && strcmp(json_string_value(v), name) == 0) return 1;
    return 0;
}

static int check_required(compiler *c, const json_t *props, const json_t *required) {
    if (!required) return 0;
    if (!json_is_array(required)) return invalid(c, "required must be an array of names");
    size_t i;
    json_t *v;
    json_array_foreach(required, i, v) {
        if (!json_is_string(v)) return invalid(c, "required must be an array of names");
        if (!json_object_get(props, json_string_value(v))) {
            char what[300];
            snprintf(what, sizeof what, "required property '%.200s' is not in properties", json_string_value(v));
            return invalid(c, what);
        }
    }
    return 0;
}

/* Objects with properties p_0..p_{n-1} (member rules m[i]):
 *   F_i ::= m_i T_{i+1} | F_{i+1} (the second only when p_i is optional)  -- first member
 *   T_i ::= "," ws m_i T_{i+1} | T_{i+1} (ditto)                          -- members after it
 *   F_n ::= T_n ::= <empty>;  object ::= "{" ws F_0 "}" */
static int compile_properties(compiler *c, unsigned self, const json_t *props, const json_t *required) {
    size_t n = json_object_size(props);
    unsigned *m = calloc(n ? n : 1, sizeof *m);
    int *req = calloc(n ? n : 1, sizeof *req);
    if (!m || !req) {
        free(m);
        free(req);
        return sl_err_set(c->err, SL_ENOMEM, "json schema: out of memory");
    }
    const char *key;
    json_t *v;
    size_t i = 0;
    int rc = 0;
    json_object_foreach((json_t *)props, key, v) {
        char sfx[300];
        snprintf(sfx, sizeof sfx, "properties/%.250s", key);
        if (!rc) rc = compile_child(c, v, sfx, &m[i]);
        req[i++] = required && is_required(required, key);
    }
    if (!rc) {
        sl_gtext_printf(&c->out, "\"{\" ws s%u-f0 \"}\"\n", self);
        i = 0;
        json_object_foreach((json_t *)props, key, v) {
            sl_gtext_printf(&c->out, "s%u-m%zu ::= ", self, i);
            json_t *name = json_string(key);
            if (name) emit_json_literal(c, name);
            else c->out.failed = 1;
            json_decref(name);
            sl_gtext_printf(&c->out, " ws \":\" ws s%u ws\n", m[i]);
            sl_gtext_printf(&c->out, "s%u-f%zu ::= s%u-m%zu s%u-t%zu", self, i, self, i, self, i + 1);
            if (!req[i]) sl_gtext_printf(&c->out, " | s%u-f%zu", self, i + 1);
            sl_gtext_printf(&c->out, "\ns%u-t%zu ::= \",\" ws s%u-m%zu s%u-t%zu", self, i, self, i, self, i + 1);
            if (!req[i]) sl_gtext_printf(&c->out, " | s%u-t%zu", self, i + 1);
            sl_gtext_printf(&c->out, "\n");
            i++;
        }
        sl_gtext_printf(&c->out, "s%u-f%zu ::= \"\"\ns%u-t%zu ::= \"\"", self, n, self, n);
    }
    free(m);
    free(req);
    return rc;
}

static int compile_object(compiler *c, unsigned self, const json_t *s) {
    const json_t *props = json_object_get(s, "properties"), *required = json_object_get(s, "required");
    const json_t *extra = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return invalid(c, "properties must be an object");
    if (extra && !json_is_boolean(extra) && !json_is_object(extra))
        return invalid(c, "additionalProperties must be a boolean or a schema");
    int rc = check_required(c, props, required);
    if (rc) return rc;
    if (!props || json_object_size(props) == 0) {
        if (required && json_array_size(required)) return invalid(c, "required names properties that are not defined");
        if (json_is_false(extra)) {
            sl_gtext_printf(&c->out, "\"{\" ws \"}\"");
            return 0;
        }
        return compile_map(c, extra);
    }
    if (extra && json_is_object(extra) && json_object_size(extra))
        return unsupported(c, "additionalProperties as a schema together with properties");
    return compile_properties(c, self, props, required);
}

/* ---- numbers with bounds -----------------------------------------------------
 *
 * An integer range [lo, hi] becomes alternatives over decimal strings without
 * leading zeros: "-" and the magnitudes of its negative part, and its
 * non-negative part split by digit count; a range of one length is a digit
 * class when its bounds differ only in the first digit's span, else the
 * first digit of each bound followed by the rest of that bound's range and
 * a class for the first digits strictly between. An unbounded side allows
 * any longer number. */

#define RANGE_LIMIT 1000000000000000000ll /* bounds beyond 1e18 are refused */

/* The range of same-length digit strings lo..hi (n digits, lo <= hi). */
static void emit_same_length(sl_gtext *o, const char *lo, const char *hi, int n) {
    while (n > 0 && lo[0] == hi[0]) {
        sl_gtext_printf(o, "\"%c\" ", lo[0]);
        lo++, hi++, n--;
    }
    if (n == 0) return;
    int lo_rest_min = 1, hi_rest_max = 1;
    for (int i = 1; i < n; i++) lo_rest_min &= lo[i] == '0', hi_rest_max &= hi[i] == '9';
    char zeros[24], nines[24];
    memset(zeros, '0', sizeof zeros);
    memset(nines, '9', sizeof nines);
    int first = lo[0], last = hi[0], alts = 0;
    sl_gtext_printf(o, "( ");
    if (!lo_rest_min) {
        sl_gtext_printf(o, "\"%c\" ", lo[0]);
        emit_same_length(o, lo + 1, nines, n - 1);
        first++, alts++;
    }
    if (first <= (hi_rest_max ? last : last - 1)) {
        sl_gtext_printf(o, "%s[%c-%c]", alts++ ? "| " : "", first, hi_rest_max ? last : last - 1);
        if (n > 1) sl_gtext_printf(o, " [0-9]{%d}", n - 1);
        sl_gtext_printf(o, " ");
    }
    if (!hi_rest_max) {
        sl_gtext_printf(o, "%s\"%c\" ", alts++ ? "| " : "", hi[0]);
        emit_same_length(o, zeros, hi + 1, n - 1);
    }
    sl_gtext_printf(o, ") ");
}

/* Non-negative integers a..b (b < 0: no upper bound) as alternatives. */
static void emit_nonneg_range(sl_gtext *o, long long a, long long b) {
    char as[24], bs[24];
    const int la = snprintf(as, sizeof as, "%lld", a), lb = b < 0 ? la : snprintf(bs, sizeof bs, "%lld", b);
    long long pow = 1;
    for (int i = 1; i < la; i++) pow *= 10;
    for (int len = la; len <= lb; len++, pow *= 10) {
        const long long lo = len == la ? a : pow, hi = b >= 0 && len == lb ? b : pow * 10 - 1;
        char los[24], his[24];
        snprintf(los, sizeof los, "%lld", lo);
        snprintf(his, sizeof his, "%lld", hi);
        sl_gtext_printf(o, "%s", len > la ? "| " : "");
        emit_same_length(o, los, his, len);
    }
    if (b < 0) sl_gtext_printf(o, "| [1-9] [0-9]{%d,} ", la);
}

/* bound as an integer: the smallest integer >= it (ceil) or largest <= it; exclusive moves one further. */
static int integer_bound(compiler *c, const json_t *s, const char *key, int upper, long long *out, int *has) {
    const json_t *v = json_object_get(s, key);
    if (!v) return 0;
    if (!json_is_number(v)) {
        char what[80];
        snprintf(what, sizeof what, "%s must be a number", key);
        return invalid(c, what);
    }
    const double d = json_number_value(v);
    if (d > (double)RANGE_LIMIT || d < -(double)RANGE_LIMIT) {
        char what[80];
        snprintf(what, sizeof what, "%s beyond 1e18", key);
        return unsupported(c, what);
    }
    const int exclusive = strncmp(key, "exclusive", 9) == 0;
    long long b = upper ? (long long)floor(d) : (long long)ceil(d);
    if (exclusive && (double)b == d) b += upper ? -1 : 1;
    if (!*has || (upper ? b < *out : b > *out)) *out = b;
    *has = 1;
    return 0;
}

static int compile_integer(compiler *c, const json_t *s) {
    long long lo = 0, hi = 0;
    int has_lo = 0, has_hi = 0, rc;
    if ((rc = integer_bound(c, s, "minimum", 0, &lo, &has_lo)) || (rc = integer_bound(c, s, "exclusiveMinimum", 0, &lo, &has_lo)) ||
        (rc = integer_bound(c, s, "maximum", 1, &hi, &has_hi)) || (rc = integer_bound(c, s, "exclusiveMaximum", 1, &hi, &has_hi)))
        return rc;
    if (!has_lo && !has_hi) return sl_gtext_printf(&c->out, "json-int"), 0;
    if (has_lo && has_hi && lo > hi) return invalid(c, "the integer bounds leave no value");
    sl_gtext *o = &c->out;
    int alts = 0;
    if (!has_lo || lo < 0) { /* "-" then magnitudes max(1, -hi) .. -lo */
        sl_gtext_printf(o, "\"-\" ( ");
        emit_nonneg_range(o, has_hi && hi < 0 ? -hi : 1, has_lo ? -lo : -1);
        sl_gtext_printf(o, ") ");
        alts++;
    }
    if (!has_hi || hi >= 0) {
        sl_gtext_printf(o, "%s( ", alts ? "| " : "");
        emit_nonneg_range(o, has_lo && lo > 0 ? lo : 0, has_hi ? hi : -1);
        sl_gtext_printf(o, ")");
    }
    return 0;
}

/* Numbers: bounds only as minimum 0 (no sign), the common "non-negative". */
static int compile_number(compiler *c, const json_t *s) {
    const json_t *min = json_object_get(s, "minimum");
    if (json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum") ||
        (min && (!json_is_number(min) || json_number_value(min) != 0)))
        return unsupported(c, "a bound on a number other than minimum 0");
    if (!min) return sl_gtext_printf(&c->out, "json-number"), 0;
    sl_gtext_printf(&c->out, "( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?");
    return 0;
}

static int compile_type(compiler *c, unsigned self, const json_t *s, const char *type) {
    if (strcmp(type, "string") == 0) return compile_string(c, s);
    if (strcmp(type, "integer") == 0) return compile_integer(c, s);
    if (strcmp(type, "number") == 0) return compile_number(c, s);
    if (strcmp(type, "boolean") == 0) return sl_gtext_printf(&c->out, "\"true\" | \"false\""), 0;
    if (strcmp(type, "null") == 0) return sl_gtext_printf(&c->out, "\"null\""), 0;
    if (strcmp(type, "array") == 0) return compile_array(c, s);
    if (strcmp(type, "object") == 0) return compile_object(c, self, s);
    char what[300];
    snprintf(what, sizeof what, "unknown type '%.200s'", type);
    return invalid(c, what);
}

/* type as a list: one sub-rule per type ("s<self>-type<i>"). */
static int compile_type_list(compiler *c, unsigned self, const json_t *s, const json_t *types) {
    size_t n = json_array_size(types), i;
    json_t *t;
    if (n == 0) return invalid(c, "type must be a string or a non-empty array");
    for (i = 0; i < n; i++) sl_gtext_printf(&c->out, "%ss%u-type%zu", i ? " | " : "", self, i);
    json_array_foreach(types, i, t) {
        if (!json_is_string(t)) return invalid(c, "type must be a string or a non-empty array");
        sl_gtext_printf(&c->out, "\ns%u-type%zu ::= ", self, i);
        int rc = compile_type(c, self, s, json_string_value(t));
        if (rc) return rc;
    }
    return 0;
}

/* No type: from the keywords present, or any value. */
static int compile_untyped(compiler *c, unsigned self, const json_t *s) {
    if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
        json_object_get(s, "required"))
        return compile_object(c, self, s);
    if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems"))
        return compile_array(c, s);
    if (json_object_get(s, "pattern") || json_object_get(s, "format") || json_object_get(s, "minLength") ||
        json_object_get(s, "maxLength"))
        return compile_string(c, s);
    if (json_object_get(s, "minimum") || json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") ||
        json_object_get(s, "exclusiveMaximum"))
        return compile_number(c, s);
    sl_gtext_printf(&c->out, "json-value");
    return 0;
}

static int resolve_ref(compiler *c, const json_t *ref, const json_t **target) {
    if (!json_is_string(ref)) return invalid(c, "$ref must be a string");
    const char *r = json_string_value(ref);
    if (strcmp(r, "#") == 0) {
        *target = c->root;
        return 0;
    }
    const char *prefixes[] = {"#/$defs/", "#/definitions/"};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(r, prefixes[i], n) != 0) continue;
        const json_t *defs = json_object_get(c->root, i == 0 ? "$defs" : "definitions");
        *target = defs ? json_object_get(defs, r + n) : NULL;
        if (*target) return 0;
    }
    char what[300];
    snprintf(what, sizeof what, "the $ref '%.200s' (only '#', '#/$defs/<name>' and '#/definitions/<name>' "
             "that exist are supported)", r);
    return unsupported(c, what);
}

/* The body of node s's rule (after "s<self> ::= "). */
static int compile_body(compiler *c, unsigned self, const json_t *s) {
    if (json_is_true(s)) return sl_gtext_printf(&c->out, "json-value"), 0;
    if (json_is_false(s)) return invalid(c, "the schema false matches nothing");
    if (!json_is_object(s)) return invalid(c, "a schema must be an object or a boolean");
    int rc = check_keywords(c, s);
    if (rc) return rc;
    const json_t *v;
    if ((v = json_object_get(s, "$ref"))) {
        const json_t *target;
        unsigned id;
        rc = resolve_ref(c, v, &target);
        if (!rc) rc = compile_child(c, target, "$ref", &id);
        if (!rc) sl_gtext_printf(&c->out, "s%u", id);
        return rc;
    }
    if ((v = json_object_get(s, "const"))) return emit_json_literal(c, v), 0;
    if ((v = json_object_get(s, "enum"))) return compile_enum(c, v);
    if ((v = json_object_get(s, "anyOf"))) return compile_anyof(c, v);
    if ((v = json_object_get(s, "allOf"))) {
        unsigned id;
        if (!json_is_array(v) || json_array_size(v) != 1) return unsupported(c, "allOf with other than one member");
        rc = compile_child(c, json_array_get(v, 0), "allOf/0", &id);
        if (!rc) sl_gtext_printf(&c->out, "s%u", id);
        return rc;
    }
    if ((v = json_object_get(s, "type"))) {
        if (json_is_string(v)) return compile_type(c, self, s, json_string_value(v));
        if (json_is_array(v)) return compile_type_list(c, self, s, v);
        return invalid(c, "type must be a string or a non-empty array");
    }
    return compile_untyped(c, self, s);
}

static int memo_add(compiler *c, const json_t *s, unsigned id) {
    if (c->n_memo == c->cap_memo) {
        size_t cap = c->cap_memo ? c->cap_memo * 2 : 32;
        memo *p = realloc(c->memo, cap * sizeof *p);
        if (!p) return sl_err_set(c->err, SL_ENOMEM, "json schema: out of memory");
        c->memo = p;
        c->cap_memo = cap;
    }
    c->memo[c->n_memo++] = (memo){.node = s, .id = id};
    return 0;
}

/* The rule id for schema node s, compiled on first use. A node's rules are
 * written to their own buffer and moved to c->rules when complete, so a
 * child compiled halfway through its parent's line never lands inside it. */
static int compile(compiler *c, const json_t *s, unsigned *id) {
    for (size_t i = 0; i < c->n_memo; i++)
        if (c->memo[i].node == s) return *id = c->memo[i].id, 0;
    if (c->depth >= SCHEMA_MAX_DEPTH) return unsupported(c, "nesting deeper than 64 levels");
    *id = c->next_id++;
    int rc = memo_add(c, s, *id);
    if (rc) return rc;
    sl_gtext outer = c->out;
    c->out = (sl_gtext){0};
    c->depth++;
    rule_head(c, *id);
    rc = compile_body(c, *id, s);
    sl_gtext_printf(&c->out, "\n");
    c->depth--;
    sl_gtext inner = c->out;
    c->out = outer;
    if (inner.failed) c->rules.failed = 1;
    else sl_gtext_printf(&c->rules, "%s", inner.s);
    sl_gtext_free(&inner);
    return rc;
}

int sl_json_schema_to_gbnf(const json_t *schema, char **gbnf, sl_err *err) {
    *gbnf = NULL;
    compiler c = {.root = schema, .path = "#", .err = err};
    sl_gtext_printf(&c.rules, "root ::= s0\n%s", JSON_BASE_RULES);
    unsigned id;
    int rc = compile(&c, schema, &id);
    free(c.memo);
    if (!rc && c.rules.failed) rc = sl_err_set(err, SL_ENOMEM, "json schema: out of memory");
    if (rc) {
        sl_gtext_free(&c.rules);
        return rc;
    }
    *gbnf = c.rules.s;
    return 0;
}

int sl_grammar_from_json_schema(const json_t *schema, sl_grammar **out, sl_err *err) {
    *out = NULL;
    char *text;
    int rc = sl_json_schema_to_gbnf(schema, &text, err);
    if (rc) return rc;
    rc = sl_grammar_parse_gbnf(text, strlen(text), out, err);
    if (rc) sl_err_wrap(err, SL_EINTERNAL, "json schema: the generated grammar did not parse (a bug): ");
    free(text);
    return rc ? SL_EINTERNAL : 0;
}

int sl_grammar_json_object(sl_grammar **out, sl_err *err) {
    sl_gtext t = {0};
    sl_gtext_printf(&t, "root ::= json-object\n%s", JSON_BASE_RULES);
    int rc = t.failed ? sl_err_set(err, SL_ENOMEM, "json object grammar: out of memory")
                      : sl_grammar_parse_gbnf(t.s, t.n, out, err);
    sl_gtext_free(&t);
    return rc;
}

int sl_grammar_from_choices(const char *const *choices, size_t n_choices, sl_grammar **out, sl_err *err) {
    *out = NULL;
    if (n_choices == 0) return sl_err_set(err, SL_EINVAL, "choice: the list of choices is empty");
    sl_gtext t = {0};
    sl_gtext_printf(&t, "root ::= ");
    for (size_t i = 0; i < n_choices; i++) {
        if (i) sl_gtext_printf(&t, " | ");
        sl_gtext_literal(&t, choices[i], strlen(choices[i]));
    }
    sl_gtext_printf(&t, "\n");
    int rc = t.failed ? sl_err_set(err, SL_ENOMEM, "choice: out of memory") : sl_grammar_parse_gbnf(t.s, t.n, out, err);
    sl_gtext_free(&t);
    return rc;
}
