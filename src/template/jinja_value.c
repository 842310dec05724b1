/* jinja_value.c -- the interpreter's values behave as the Python objects
 * Jinja2 would hold.
 *
 * A chat template's output depends on Python details: str() of a dict or a
 * list prints its repr with Python's quoting rules, floats print as
 * float.__repr__ ("1.0", "1e+16"), True == 1, an empty list is false, and
 * tojson is json.dumps with transformers' defaults (ensure_ascii=False). This
 * file owns those rules, plus the render arena, the output buffer and the
 * UTF-8 helpers that give strings code-point semantics. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "template/jinja.h"

/* ---- arena ---- */

struct jinja_chunk {
    jinja_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *jinja_arena_alloc(jinja_arena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!n) n = sizeof(max_align_t);
    jinja_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 32768 ? n : 32768;
        if (a->head && a->head->cap >= 32768 && cap < a->head->cap * 2 && a->head->cap * 2 <= (8u << 20))
            cap = a->head->cap * 2;
        if (a->limit && a->total + cap > a->limit) return NULL;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        a->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

void jinja_arena_free(jinja_arena *a) {
    jinja_chunk *c = a->head;
    while (c) {
        jinja_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

void *jinja_alloc(jinja_render *r, size_t n) {
    void *p = jinja_arena_alloc(&r->arena, n);
    if (!p) jinja_fail(r, "the template used more than %u MiB of memory", JINJA_MAX_MEMORY >> 20);
    return p;
}

/* ---- output buffer ---- */

void jinja_buf_put(jinja_render *r, jinja_buf *b, const char *p, size_t n) {
    if (b->n + n > JINJA_MAX_OUTPUT)
        jinja_fail(r, "the rendered prompt exceeds %u MiB", JINJA_MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) jinja_fail(r, "out of memory while rendering");
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

void jinja_buf_putc(jinja_render *r, jinja_buf *b, char c) {
    if (b->n + 2 <= b->cap) b->p[b->n++] = c;
    else jinja_buf_put(r, b, &c, 1);
}

static void buf_puts(jinja_render *r, jinja_buf *b, const char *s) { jinja_buf_put(r, b, s, strlen(s)); }

/* ---- UTF-8 ---- */

size_t jinja_utf8_decode(const char *p, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)p;
    if (s[0] < 0x80 || n < 2) { *cp = s[0]; return 1; }
    int len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 1;
    if (len == 1 || (size_t)len > n) { *cp = s[0]; return 1; }
    uint32_t c = s[0] & (0x3F >> (len - 1));
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = s[0]; return 1; }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return (size_t)len;
}

size_t jinja_utf8_len(const char *p, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) count++;
    return count;
}

bool jinja_is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* ---- constructors ---- */

static bool ascii_only(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80) return false;
    return true;
}

jv jv_str(const char *p, size_t n) {
    jv v = {.type = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    v.flag = ascii_only(p, n);
    return v;
}

jv jv_str_copy(jinja_render *r, const char *p, size_t n) {
    char *s = jinja_alloc(r, n + 1);
    if (n) memcpy(s, p, n);
    s[n] = 0;
    return jv_str(s, n);
}

jv jv_undef_msg(jinja_render *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len < 0) len = 0;
    if ((size_t)len >= sizeof msg) len = sizeof msg - 1;
    jv v = jv_str_copy(r, msg, (size_t)len);
    v.type = JV_UNDEF;
    v.flag = 0;
    return v;
}

jv jv_list_new(jinja_render *r, size_t cap, int kind) {
    jinja_list *l = jinja_alloc(r, sizeof *l);
    l->n = 0;
    l->cap = cap;
    l->kind = kind;
    l->items = cap ? jinja_alloc(r, cap * sizeof *l->items) : NULL;
    jv v = {.type = JV_LIST};
    v.u.l = l;
    return v;
}

void jv_list_push(jinja_render *r, jv list, jv item) {
    jinja_list *l = list.u.l;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *items = jinja_alloc(r, cap * sizeof *items);
        if (l->n) memcpy(items, l->items, l->n * sizeof *items);
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = item;
}

jv jv_dict_new(jinja_render *r, size_t cap) {
    jinja_dict *d = jinja_alloc(r, sizeof *d);
    d->n = 0;
    d->cap = cap;
    d->keys = cap ? jinja_alloc(r, cap * sizeof *d->keys) : NULL;
    d->vals = cap ? jinja_alloc(r, cap * sizeof *d->vals) : NULL;
    jv v = {.type = JV_DICT};
    v.u.d = d;
    return v;
}

const jv *jv_dict_get(jv dict, jv key) {
    const jinja_dict *d = dict.u.d;
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

const jv *jv_dict_get_str(jv dict, const char *key, size_t n) {
    const jinja_dict *d = dict.u.d;
    for (size_t i = 0; i < d->n; i++) {
        const jv *k = &d->keys[i];
        if (k->type == JV_STR && k->u.s.n == n && memcmp(k->u.s.p, key, n) == 0) return &d->vals[i];
    }
    return NULL;
}

void jv_dict_set(jinja_render *r, jv dict, jv key, jv val) {
    jinja_dict *d = dict.u.d;
    jv *slot = (jv *)jv_dict_get(dict, key);
    if (slot) { *slot = val; return; }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *keys = jinja_alloc(r, cap * sizeof *keys);
        jv *vals = jinja_alloc(r, cap * sizeof *vals);
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof *keys);
            memcpy(vals, d->vals, d->n * sizeof *vals);
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
}

jv jv_from_json(jinja_render *r, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv d = jv_dict_new(r, json_object_size(j));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            jinja_dict *dd = d.u.d;
            dd->keys[dd->n] = jv_str(key, strlen(key));
            dd->vals[dd->n] = jv_from_json(r, val);
            dd->n++;
        }
        return d;
    }
    case JSON_ARRAY: {
        jv l = jv_list_new(r, json_array_size(j), JL_LIST);
        for (size_t i = 0; i < json_array_size(j); i++) l.u.l->items[l.u.l->n++] = jv_from_json(r, json_array_get(j, i));
        return l;
    }
    case JSON_STRING: return jv_str(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jv_int(json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(true);
    case JSON_FALSE: return jv_bool(false);
    default: return jv_none();
    }
}

/* ---- Python semantics ---- */

bool jv_truthy(jv v) {
    switch (v.type) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

bool jv_is_number(jv v) { return v.type == JV_BOOL || v.type == JV_INT || v.type == JV_FLOAT; }

double jv_as_double(jv v) {
    return v.type == JV_FLOAT ? v.u.f : v.type == JV_INT ? (double)v.u.i : v.type == JV_BOOL ? v.u.b : 0.0;
}

static int64_t as_int(jv v) { return v.type == JV_BOOL ? v.u.b : v.u.i; }

bool jv_equal(jv a, jv b) {
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.type == JV_FLOAT || b.type == JV_FLOAT) return jv_as_double(a) == jv_as_double(b);
        return as_int(a) == as_int(b);
    }
    if (a.type != b.type) return false;
    switch (a.type) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST: {
        const jinja_list *x = a.u.l, *y = b.u.l;
        bool seq_x = x->kind == JL_LIST || x->kind == JL_TUPLE, seq_y = y->kind == JL_LIST || y->kind == JL_TUPLE;
        if (x->kind != y->kind && (seq_x || seq_y)) return false;
        if (x->kind == JL_VALUES) return x == y;
        if (x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++)
            if (!jv_equal(x->items[i], y->items[i])) return false;
        return true;
    }
    case JV_DICT: {
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            const jv *other = jv_dict_get(b, a.u.d->keys[i]);
            if (!other || !jv_equal(a.u.d->vals[i], *other)) return false;
        }
        return true;
    }
    case JV_NS: return a.u.d == b.u.d;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_LOOP: return a.u.loop == b.u.loop;
    default: return false;
    }
}

const char *jv_type_name(jv v) {
    switch (v.type) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: {
        static const char *const names[] = {"list", "tuple", "dict_keys", "dict_values", "dict_items"};
        return names[v.u.l->kind];
    }
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    default: return v.u.fn->kind == JF_BUILTIN && v.u.fn->self.type != JV_UNDEF ? "builtin_function_or_method"
                                                                               : "Macro";
    }
}

_Noreturn static void undefined_error(jinja_render *r, jv v) {
    jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
}

int jv_compare(jinja_render *r, jv a, jv b, const char *op) {
    if (a.type == JV_UNDEF) undefined_error(r, a);
    if (b.type == JV_UNDEF) undefined_error(r, b);
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.type != JV_FLOAT && b.type != JV_FLOAT) return as_int(a) < as_int(b) ? -1 : as_int(a) > as_int(b);
        double x = jv_as_double(a), y = jv_as_double(b);
        return x < y ? -1 : x > y ? 1 : 0; /* NaN compares as equal-ish: every op but != is false */
    }
    if (a.type == JV_STR && b.type == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = memcmp(a.u.s.p, b.u.s.p, n);
        if (c) return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
    }
    if (a.type == JV_LIST && b.type == JV_LIST && a.u.l->kind == b.u.l->kind &&
        (a.u.l->kind == JL_LIST || a.u.l->kind == JL_TUPLE)) {
        const jinja_list *x = a.u.l, *y = b.u.l;
        for (size_t i = 0; i < x->n && i < y->n; i++)
            if (!jv_equal(x->items[i], y->items[i])) return jv_compare(r, x->items[i], y->items[i], op);
        return x->n < y->n ? -1 : x->n > y->n;
    }
    jinja_fail(r, "'%s' not supported between instances of '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

/* ---- str() and repr() ---- */

void jv_format_float(double f, char out[40]) {
    if (isnan(f)) { strcpy(out, "nan"); return; }
    if (isinf(f)) { strcpy(out, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { strcpy(out, signbit(f) ? "-0.0" : "0.0"); return; }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf is [-]d[.ddd]e[+-]XX: collect the digits and the exponent */
    char digits[24];
    int nd = 0;
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char *o = out;
    if (neg) *o++ = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -exp - 1; i++) *o++ = '0';
            for (int i = 0; i < nd; i++) *o++ = digits[i];
        } else {
            for (int i = 0; i <= exp; i++) *o++ = i < nd ? digits[i] : '0';
            *o++ = '.';
            if (nd > exp + 1) for (int i = exp + 1; i < nd; i++) *o++ = digits[i];
            else *o++ = '0';
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int i = 1; i < nd; i++) *o++ = digits[i];
        }
        snprintf(o, (size_t)(out + 40 - o), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static bool is_printable(uint32_t c) {
    if (c == ' ') return true;
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x7F) return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return false;
    default:
        return true;
    }
}

static void write_str_repr(jinja_render *r, jinja_buf *b, const char *p, size_t n) {
    bool has_single = memchr(p, '\'', n) != NULL, has_double = memchr(p, '"', n) != NULL;
    char quote = has_single && !has_double ? '"' : '\'';
    jinja_buf_putc(r, b, quote);
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t used = jinja_utf8_decode(p + i, n - i, &c);
        char esc[16];
        if (c == (uint32_t)quote || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; jinja_buf_put(r, b, esc, 2); }
        else if (c == '\n') buf_puts(r, b, "\\n");
        else if (c == '\r') buf_puts(r, b, "\\r");
        else if (c == '\t') buf_puts(r, b, "\\t");
        else if (is_printable(c)) jinja_buf_put(r, b, p + i, used);
        else {
            if (c < 0x100) snprintf(esc, sizeof esc, "\\x%02x", c);
            else if (c < 0x10000) snprintf(esc, sizeof esc, "\\u%04x", c);
            else snprintf(esc, sizeof esc, "\\U%08x", c);
            buf_puts(r, b, esc);
        }
        i += used;
    }
    jinja_buf_putc(r, b, quote);
}

static void write_items(jinja_render *r, jinja_buf *b, const jinja_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        if (i) buf_puts(r, b, ", ");
        jv_write_repr(r, b, l->items[i]);
    }
}

static void write_dict_repr(jinja_render *r, jinja_buf *b, const jinja_dict *d) {
    jinja_buf_putc(r, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i) buf_puts(r, b, ", ");
        jv_write_repr(r, b, d->keys[i]);
        buf_puts(r, b, ": ");
        jv_write_repr(r, b, d->vals[i]);
    }
    jinja_buf_putc(r, b, '}');
}

void jv_write_repr(jinja_render *r, jinja_buf *b, jv v) {
    if (++r->depth > JINJA_MAX_DEPTH) jinja_fail(r, "value nested too deeply to print");
    switch (v.type) {
    case JV_UNDEF: buf_puts(r, b, "Undefined"); break;
    case JV_STR: write_str_repr(r, b, v.u.s.p, v.u.s.n); break;
    case JV_LIST: {
        const jinja_list *l = v.u.l;
        switch (l->kind) {
        case JL_TUPLE:
            jinja_buf_putc(r, b, '(');
            write_items(r, b, l);
            buf_puts(r, b, l->n == 1 ? ",)" : ")");
            break;
        case JL_LIST:
            jinja_buf_putc(r, b, '[');
            write_items(r, b, l);
            jinja_buf_putc(r, b, ']');
            break;
        default:
            buf_puts(r, b, jv_type_name(v));
            buf_puts(r, b, "([");
            write_items(r, b, l);
            buf_puts(r, b, "])");
        }
        break;
    }
    case JV_DICT: write_dict_repr(r, b, v.u.d); break;
    case JV_NS:
        buf_puts(r, b, "<Namespace ");
        write_dict_repr(r, b, v.u.d);
        jinja_buf_putc(r, b, '>');
        break;
    default: jv_write_str(r, b, v); break;
    }
    r->depth--;
}

void jv_write_str(jinja_render *r, jinja_buf *b, jv v) {
    char num[40];
    switch (v.type) {
    case JV_UNDEF: break;
    case JV_NONE: buf_puts(r, b, "None"); break;
    case JV_BOOL: buf_puts(r, b, v.u.b ? "True" : "False"); break;
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); buf_puts(r, b, num); break;
    case JV_FLOAT: jv_format_float(v.u.f, num); buf_puts(r, b, num); break;
    case JV_STR: jinja_buf_put(r, b, v.u.s.p, v.u.s.n); break;
    case JV_FUNC:
        jinja_fail(r, "printing a function or macro object ('%s') is not supported", v.u.fn->name);
    case JV_LOOP: {
        char s[64];
        snprintf(s, sizeof s, "<LoopContext %zu/%zu>", v.u.loop->i + 1, v.u.loop->n);
        buf_puts(r, b, s);
        break;
    }
    default: jv_write_repr(r, b, v); break;
    }
}

jv jv_to_str(jinja_render *r, jv v) {
    if (v.type == JV_STR) return v;
    if (v.type == JV_UNDEF) return jv_str("", 0);
    size_t mark = r->out.n; /* the output buffer's tail serves as scratch */
    jv_write_str(r, &r->out, v);
    jv s = jv_str_copy(r, r->out.p + mark, r->out.n - mark);
    r->out.n = mark;
    return s;
}

/* ---- json.dumps ---- */

static void write_json_str(jinja_render *r, jinja_buf *b, const char *p, size_t n, bool ensure_ascii) {
    jinja_buf_putc(r, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)p[i];
        bool plain = ch >= 0x20 && ch != '"' && ch != '\\' && (!ensure_ascii || ch < 0x7F);
        if (plain) { i++; run++; continue; }
        jinja_buf_put(r, b, p + i - run, run);
        run = 0;
        char esc[16];
        uint32_t c;
        size_t used = jinja_utf8_decode(p + i, n - i, &c);
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        default:
            if (c >= 0x10000)
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((c - 0x10000) >> 10),
                         0xDC00 + ((c - 0x10000) & 0x3FF));
            else
                snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        buf_puts(r, b, esc);
        i += used;
    }
    jinja_buf_put(r, b, p + n - run, run);
    jinja_buf_putc(r, b, '"');
}

static void json_newline(jinja_render *r, jinja_buf *b, const char *indent, int level) {
    jinja_buf_putc(r, b, '\n');
    for (int i = 0; i < level; i++) buf_puts(r, b, indent);
}

/* A dict key as json.dumps converts it. */
static jv json_key(jinja_render *r, jv k) {
    char num[40];
    switch (k.type) {
    case JV_STR: return k;
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)k.u.i); return jv_str_copy(r, num, strlen(num));
    case JV_FLOAT: jv_format_float(k.u.f, num); return jv_str_copy(r, num, strlen(num));
    case JV_BOOL: return jv_str(k.u.b ? "true" : "false", k.u.b ? 4 : 5);
    case JV_NONE: return jv_str("null", 4);
    default: jinja_fail(r, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

void jv_write_json(jinja_render *r, jinja_buf *b, jv v, bool ensure_ascii, const char *indent,
                   const char *item_sep, const char *key_sep, bool sort_keys, int level) {
    if (++r->depth > JINJA_MAX_DEPTH) jinja_fail(r, "value nested too deeply for tojson");
    char num[40];
    switch (v.type) {
    case JV_NONE: buf_puts(r, b, "null"); break;
    case JV_BOOL: buf_puts(r, b, v.u.b ? "true" : "false"); break;
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); buf_puts(r, b, num); break;
    case JV_FLOAT:
        if (isnan(v.u.f)) buf_puts(r, b, "NaN");
        else if (isinf(v.u.f)) buf_puts(r, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else { jv_format_float(v.u.f, num); buf_puts(r, b, num); }
        break;
    case JV_STR: write_json_str(r, b, v.u.s.p, v.u.s.n, ensure_ascii); break;
    case JV_LIST: {
        const jinja_list *l = v.u.l;
        if (l->kind != JL_LIST && l->kind != JL_TUPLE)
            jinja_fail(r, "Object of type %s is not JSON serializable", jv_type_name(v));
        if (!l->n) { buf_puts(r, b, "[]"); break; }
        jinja_buf_putc(r, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) buf_puts(r, b, item_sep);
            if (indent) json_newline(r, b, indent, level + 1);
            jv_write_json(r, b, l->items[i], ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
        }
        if (indent) json_newline(r, b, indent, level);
        jinja_buf_putc(r, b, ']');
        break;
    }
    case JV_DICT: {
        const jinja_dict *d = v.u.d;
        if (!d->n) { buf_puts(r, b, "{}"); break; }
        size_t *order = jinja_alloc(r, d->n * sizeof *order);
        jv *keys = jinja_alloc(r, d->n * sizeof *keys);
        for (size_t i = 0; i < d->n; i++) {
            order[i] = i;
            keys[i] = json_key(r, d->keys[i]);
        }
        if (sort_keys) {
            for (size_t i = 0; i < d->n; i++)
                if (d->keys[i].type != JV_STR) jinja_fail(r, "tojson(sort_keys=true) needs string keys");
            /* insertion sort keeps this reentrant-free and dicts are small */
            for (size_t i = 1; i < d->n; i++) {
                size_t cur = order[i], j = i;
                while (j > 0 && jv_compare(r, keys[order[j - 1]], keys[cur], "<") > 0) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = cur;
            }
        }
        jinja_buf_putc(r, b, '{');
        for (size_t k = 0; k < d->n; k++) {
            size_t i = order[k];
            if (k) buf_puts(r, b, item_sep);
            if (indent) json_newline(r, b, indent, level + 1);
            write_json_str(r, b, keys[i].u.s.p, keys[i].u.s.n, ensure_ascii);
            buf_puts(r, b, key_sep);
            jv_write_json(r, b, d->vals[i], ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
        }
        if (indent) json_newline(r, b, indent, level);
        jinja_buf_putc(r, b, '}');
        break;
    }
    default: jinja_fail(r, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
    r->depth--;
}
