/* jinja_eval.c -- walks the AST and writes the prompt.
 *
 * Owns scoping (a chain of frames: the context, then one frame per loop
 * iteration, macro call or with-block, as Jinja2 scopes `set`), operators
 * with Python's semantics (int/float arithmetic with floor division and
 * modulo as Python, str/list concatenation and repetition, comparison
 * chains, `in`), attribute and item access with Jinja2's sandboxed lookup
 * order and Undefined results, slicing, loops with `loop.*`, macros and call
 * blocks. Limits (depth, steps, memory, output) turn runaway templates into
 * errors instead of crashes. Errors unwind to jinja_render_template with
 * longjmp; every allocation is in the render's arena, so nothing leaks. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"

typedef struct jinja_var {
    const char *name;
    size_t n;
    jv v;
} jinja_var;

struct jinja_frame {
    jinja_frame *parent;
    jinja_var *vars;
    size_t n, cap;
    bool captured; /* a macro or caller closes over it: never reuse */
};

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

static jv eval(jinja_render *r, const jinja_node *n, jinja_frame *f);
static int exec_body(jinja_render *r, const jinja_nodes *body, jinja_frame *f);

/* ---- errors ---- */

void jinja_fail(jinja_render *r, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->at)
        sl_err_set(r->err, SL_EINVAL, "%s (chat template line %d, column %d)", msg, r->at->line, r->at->col);
    else
        sl_err_set(r->err, SL_EINVAL, "%s", msg);
    longjmp(r->fail, 1);
}

void jinja_raise_user(jinja_render *r, const char *msg, size_t n) {
    sl_err_set(r->err, SL_EINVAL, "%.*s", (int)(n < SL_ERR_MSG_MAX ? n : SL_ERR_MSG_MAX - 1), msg);
    longjmp(r->fail, 1);
}

_Noreturn static void fail_undefined(jinja_render *r, jv v) { jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p); }

/* Work budget: loop iterations, calls and items walked by filters. */
static void charge(jinja_render *r, size_t n) {
    r->steps += (long)n;
    if (r->steps > JINJA_MAX_STEPS)
        jinja_fail(r, "the template ran too long (more than %ld loop iterations, calls and items processed)",
                   JINJA_MAX_STEPS);
}

static void step(jinja_render *r) { charge(r, 1); }

/* ---- frames ---- */

static jinja_frame *frame_new(jinja_render *r, jinja_frame *parent) {
    jinja_frame *f = jinja_alloc(r, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static jv *frame_find(jinja_frame *f, const char *name, size_t n) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (f->vars[i].n == n && memcmp(f->vars[i].name, name, n) == 0) return &f->vars[i].v;
    return NULL;
}

/* A fresh child of parent, reusing *slot when nothing captured it, so that
 * long loops do not allocate a frame per iteration. */
static jinja_frame *frame_reuse(jinja_render *r, jinja_frame **slot, jinja_frame *parent) {
    if (!*slot || (*slot)->captured) *slot = frame_new(r, parent);
    (*slot)->n = 0;
    return *slot;
}

static void frame_set(jinja_render *r, jinja_frame *f, const char *name, size_t n, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (f->vars[i].n == n && memcmp(f->vars[i].name, name, n) == 0) { f->vars[i].v = v; return; }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        jinja_var *vars = jinja_alloc(r, cap * sizeof *vars);
        if (f->n) memcpy(vars, f->vars, f->n * sizeof *vars);
        f->vars = vars;
        f->cap = cap;
    }
    f->vars[f->n].name = name;
    f->vars[f->n].n = n;
    f->vars[f->n].v = v;
    f->n++;
}

/* ---- arithmetic ---- */

static int64_t int_of(jv v) { return v.type == JV_BOOL ? v.u.b : v.u.i; }
static bool is_intlike(jv v) { return v.type == JV_INT || v.type == JV_BOOL; }

_Noreturn static void overflow(jinja_render *r) {
    jinja_fail(r, "integer overflow: values beyond 64 bits are not supported");
}

_Noreturn static void unsupported_operands(jinja_render *r, const char *op, jv a, jv b) {
    jinja_fail(r, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

static jv concat_lists(jinja_render *r, jv a, jv b) {
    jv out = jv_list_new(r, a.u.l->n + b.u.l->n, a.u.l->kind);
    for (size_t i = 0; i < a.u.l->n; i++) out.u.l->items[out.u.l->n++] = a.u.l->items[i];
    for (size_t i = 0; i < b.u.l->n; i++) out.u.l->items[out.u.l->n++] = b.u.l->items[i];
    return out;
}

static jv repeat(jinja_render *r, jv seq, int64_t times) {
    if (times < 0) times = 0;
    if ((seq.type == JV_STR && !seq.u.s.n) || (seq.type == JV_LIST && !seq.u.l->n)) times = 0;
    if (seq.type == JV_STR) {
        if (seq.u.s.n && (uint64_t)times > JINJA_MAX_OUTPUT / seq.u.s.n) jinja_fail(r, "string repetition too large");
        size_t total = seq.u.s.n * (size_t)times;
        char *p = jinja_alloc(r, total + 1);
        for (int64_t i = 0; i < times; i++) memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.p, seq.u.s.n);
        p[total] = 0;
        return jv_str(p, total);
    }
    if (seq.u.l->n && (uint64_t)times > (JINJA_MAX_OUTPUT / 16) / seq.u.l->n) jinja_fail(r, "list repetition too large");
    jv out = jv_list_new(r, seq.u.l->n * (size_t)times, seq.u.l->kind);
    for (int64_t t = 0; t < times; t++)
        for (size_t i = 0; i < seq.u.l->n; i++) out.u.l->items[out.u.l->n++] = seq.u.l->items[i];
    return out;
}

static jv concat_strs(jinja_render *r, jv a, jv b) {
    char *p = jinja_alloc(r, a.u.s.n + b.u.s.n + 1);
    memcpy(p, a.u.s.p, a.u.s.n);
    memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
    p[a.u.s.n + b.u.s.n] = 0;
    jv v = jv_str(p, a.u.s.n + b.u.s.n);
    return v;
}

static double float_floordiv(double vx, double wx, double *mod_out) {
    double mod = fmod(vx, wx), div = (vx - mod) / wx, floordiv;
    if (mod != 0.0) {
        if ((wx < 0) != (mod < 0)) { mod += wx; div -= 1.0; }
    } else {
        mod = copysign(0.0, wx);
    }
    if (div != 0.0) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    *mod_out = mod;
    return floordiv;
}

static jv arith(jinja_render *r, jinja_op op, jv a, jv b) {
    static const char *const names[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (a.type == JV_UNDEF) fail_undefined(r, a);
    if (b.type == JV_UNDEF) fail_undefined(r, b);
    if (op == JOP_ADD) {
        if (a.type == JV_STR && b.type == JV_STR) return concat_strs(r, a, b);
        if (a.type == JV_LIST && b.type == JV_LIST && a.u.l->kind == b.u.l->kind &&
            (a.u.l->kind == JL_LIST || a.u.l->kind == JL_TUPLE))
            return concat_lists(r, a, b);
        if (a.type == JV_STR && !jv_is_number(b))
            jinja_fail(r, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
        if (a.type == JV_LIST && a.u.l->kind == JL_LIST && b.type != JV_LIST)
            jinja_fail(r, "can only concatenate list (not \"%s\") to list", jv_type_name(b));
    }
    if (op == JOP_MUL) {
        if ((a.type == JV_STR || (a.type == JV_LIST && a.u.l->kind <= JL_TUPLE)) && is_intlike(b))
            return repeat(r, a, int_of(b));
        if ((b.type == JV_STR || (b.type == JV_LIST && b.u.l->kind <= JL_TUPLE)) && is_intlike(a))
            return repeat(r, b, int_of(a));
    }
    if (op == JOP_MOD && a.type == JV_STR) return jinja_format_percent(r, a, b);
    if (!jv_is_number(a) || !jv_is_number(b)) unsupported_operands(r, op == JOP_POW ? "** or pow()" : names[op], a, b);
    bool ints = a.type != JV_FLOAT && b.type != JV_FLOAT;
    if (ints) {
        int64_t x = int_of(a), y = int_of(b), z;
        switch (op) {
        case JOP_ADD: if (__builtin_add_overflow(x, y, &z)) overflow(r); return jv_int(z);
        case JOP_SUB: if (__builtin_sub_overflow(x, y, &z)) overflow(r); return jv_int(z);
        case JOP_MUL: if (__builtin_mul_overflow(x, y, &z)) overflow(r); return jv_int(z);
        case JOP_DIV:
            if (!y) jinja_fail(r, "division by zero");
            return jv_float((double)x / (double)y);
        case JOP_FLOORDIV: case JOP_MOD: {
            if (!y) jinja_fail(r, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) overflow(r);
            int64_t q = x / y, m = x % y;
            if (m && ((m < 0) != (y < 0))) { q--; m += y; }
            return jv_int(op == JOP_MOD ? m : q);
        }
        case JOP_POW: {
            if (y < 0) {
                if (!x) jinja_fail(r, "0.0 cannot be raised to a negative power");
                return jv_float(pow((double)x, (double)y));
            }
            int64_t result = 1, base = x;
            while (y) {
                if (y & 1 && __builtin_mul_overflow(result, base, &result)) overflow(r);
                y >>= 1;
                if (y && __builtin_mul_overflow(base, base, &base)) overflow(r);
            }
            return jv_int(result);
        }
        default: break;
        }
    }
    double x = jv_as_double(a), y = jv_as_double(b), m;
    switch (op) {
    case JOP_ADD: return jv_float(x + y);
    case JOP_SUB: return jv_float(x - y);
    case JOP_MUL: return jv_float(x * y);
    case JOP_DIV:
        if (y == 0) jinja_fail(r, "float division by zero");
        return jv_float(x / y);
    case JOP_FLOORDIV: case JOP_MOD: {
        if (y == 0) jinja_fail(r, "float floor division by zero");
        double q = float_floordiv(x, y, &m);
        return jv_float(op == JOP_MOD ? m : q);
    }
    case JOP_POW:
        if (x == 0 && y < 0) jinja_fail(r, "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y)) jinja_fail(r, "complex results are not supported");
        return jv_float(pow(x, y));
    default: jinja_fail(r, "internal error: bad operator");
    }
}

/* printf-style `'%s' % x` for the conversions templates use. */
jv jinja_format_percent(jinja_render *r, jv fmt, jv args) {
    const jv *items = &args;
    size_t nargs = 1, used = 0;
    if (args.type == JV_LIST && args.u.l->kind == JL_TUPLE) {
        items = args.u.l->items;
        nargs = args.u.l->n;
    }
    size_t mark = r->out.n;
    const char *p = fmt.u.s.p, *end = p + fmt.u.s.n;
    while (p < end) {
        if (*p != '%') { jinja_buf_putc(r, &r->out, *p++); continue; }
        p++;
        if (p < end && *p == '%') { jinja_buf_putc(r, &r->out, '%'); p++; continue; }
        int prec = -1;
        if (p < end && *p == '.') {
            prec = 0;
            for (p++; p < end && *p >= '0' && *p <= '9'; p++) prec = prec * 10 + (*p - '0');
        }
        if (p >= end || !strchr("sdirf", *p)) jinja_fail(r, "unsupported format string in '%%' formatting");
        if (used >= nargs) jinja_fail(r, "not enough arguments for format string");
        jv v = items[used++];
        char conv = *p++;
        if (conv == 's') jv_write_str(r, &r->out, v);
        else if (conv == 'r') jv_write_repr(r, &r->out, v);
        else {
            if (!jv_is_number(v)) jinja_fail(r, "%%%c format: a real number is required, not %s", conv, jv_type_name(v));
            char num[64];
            if (conv == 'f') snprintf(num, sizeof num, "%.*f", prec < 0 ? 6 : prec, jv_as_double(v));
            else snprintf(num, sizeof num, "%lld", v.type == JV_FLOAT ? (long long)jv_as_double(v) : (long long)int_of(v));
            jinja_buf_put(r, &r->out, num, strlen(num));
        }
    }
    if (used < nargs) jinja_fail(r, "not all arguments converted during string formatting");
    jv s = jv_str_copy(r, r->out.p + mark, r->out.n - mark);
    r->out.n = mark;
    return s;
}

/* ---- containers ---- */

static bool contains(jinja_render *r, jv needle, jv hay) {
    switch (hay.type) {
    case JV_UNDEF: return false;
    case JV_STR:
        if (needle.type != JV_STR)
            jinja_fail(r, "'in <string>' requires string as left operand, not %s", jv_type_name(needle));
        if (!needle.u.s.n) return true;
        return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case JV_LIST:
        if (hay.u.l->kind == JL_KEYS || hay.u.l->kind == JL_ITEMS || hay.u.l->kind == JL_VALUES ||
            hay.u.l->kind <= JL_TUPLE) {
            for (size_t i = 0; i < hay.u.l->n; i++)
                if (jv_equal(needle, hay.u.l->items[i])) return true;
        }
        return false;
    case JV_DICT:
        if (needle.type == JV_LIST || needle.type == JV_DICT) jinja_fail(r, "unhashable type: '%s'", jv_type_name(needle));
        return jv_dict_get(hay, needle) != NULL;
    default:
        jinja_fail(r, "argument of type '%s' is not iterable", jv_type_name(hay));
    }
}

jv jinja_iterate(jinja_render *r, jv v) {
    charge(r, v.type == JV_LIST ? v.u.l->n : v.type == JV_DICT ? v.u.d->n : v.type == JV_STR ? v.u.s.n : 0);
    switch (v.type) {
    case JV_LIST: return v;
    case JV_UNDEF: return jv_list_new(r, 0, JL_LIST);
    case JV_DICT: {
        jv l = jv_list_new(r, v.u.d->n, JL_LIST);
        for (size_t i = 0; i < v.u.d->n; i++) l.u.l->items[l.u.l->n++] = v.u.d->keys[i];
        return l;
    }
    case JV_STR: {
        jv l = jv_list_new(r, v.u.s.n, JL_LIST);
        for (size_t i = 0; i < v.u.s.n;) {
            uint32_t cp;
            size_t used = jinja_utf8_decode(v.u.s.p + i, v.u.s.n - i, &cp);
            l.u.l->items[l.u.l->n++] = jv_str(v.u.s.p + i, used);
            i += used;
        }
        return l;
    }
    default: jinja_fail(r, "'%s' object is not iterable", jv_type_name(v));
    }
}

/* Python slice bounds (PySlice_AdjustIndices). */
static size_t slice_indices(int64_t len, const jv *bounds[3], int64_t *start, int64_t *step) {
    *step = bounds[2] ? int_of(*bounds[2]) : 1;
    int64_t s = bounds[0] ? int_of(*bounds[0]) : (*step < 0 ? INT64_MAX : 0);
    int64_t e = bounds[1] ? int_of(*bounds[1]) : (*step < 0 ? INT64_MIN : INT64_MAX);
    if (s < 0) { s += len; if (s < 0) s = *step < 0 ? -1 : 0; }
    else if (s >= len) s = *step < 0 ? len - 1 : len;
    if (e < 0) { if (e != INT64_MIN) e += len; else e = -1; if (e < 0) e = *step < 0 ? -1 : 0; }
    else if (e >= len) e = *step < 0 ? len - 1 : len;
    *start = s;
    if (*step < 0) return e < s ? (size_t)((s - e - 1) / (-*step) + 1) : 0;
    return s < e ? (size_t)((e - s - 1) / *step + 1) : 0;
}

/* Byte offsets of each code point (and the end) of a non-ASCII string. */
static size_t *char_offsets(jinja_render *r, jv s, size_t *count) {
    size_t n = jinja_utf8_len(s.u.s.p, s.u.s.n), k = 0;
    size_t *off = jinja_alloc(r, (n + 1) * sizeof *off);
    for (size_t i = 0; i < s.u.s.n; i++)
        if (((unsigned char)s.u.s.p[i] & 0xC0) != 0x80) off[k++] = i;
    off[k] = s.u.s.n;
    *count = k;
    return off;
}

static jv slice(jinja_render *r, jv obj, const jinja_node *n, jinja_frame *f) {
    jv vals[3];
    const jv *bounds[3] = {0};
    const jinja_node *parts[3] = {n->a, n->b, n->c};
    for (int i = 0; i < 3; i++) {
        if (!parts[i]) continue;
        vals[i] = eval(r, parts[i], f);
        if (vals[i].type == JV_NONE) continue;
        if (!is_intlike(vals[i])) return jv_undef_msg(r, "slice indices must be integers or None");
        bounds[i] = &vals[i];
    }
    if (bounds[2] && int_of(*bounds[2]) == 0) jinja_fail(r, "slice step cannot be zero");
    if (obj.type == JV_UNDEF) fail_undefined(r, obj);
    int64_t start, stp;
    if (obj.type == JV_LIST && obj.u.l->kind <= JL_TUPLE) {
        size_t count = slice_indices((int64_t)obj.u.l->n, bounds, &start, &stp);
        jv out = jv_list_new(r, count, obj.u.l->kind);
        for (size_t i = 0; i < count; i++) out.u.l->items[out.u.l->n++] = obj.u.l->items[start + (int64_t)i * stp];
        return out;
    }
    if (obj.type == JV_STR) {
        size_t nchars = obj.u.s.n, *off = NULL;
        if (!obj.flag) off = char_offsets(r, obj, &nchars);
        size_t count = slice_indices((int64_t)nchars, bounds, &start, &stp);
        if (stp == 1 && count) {
            size_t b = off ? off[start] : (size_t)start, e = off ? off[start + (int64_t)count] : (size_t)start + count;
            return jv_str(obj.u.s.p + b, e - b);
        }
        char *p = jinja_alloc(r, obj.u.s.n + 1);
        size_t k = 0;
        for (size_t i = 0; i < count; i++) {
            size_t c = (size_t)(start + (int64_t)i * stp);
            size_t b = off ? off[c] : c, e = off ? off[c + 1] : c + 1;
            memcpy(p + k, obj.u.s.p + b, e - b);
            k += e - b;
        }
        p[k] = 0;
        return jv_str(p, k);
    }
    return jv_undef_msg(r, "'%s' object is not subscriptable", jv_type_name(obj));
}

/* ---- attribute and item access (Jinja2 sandbox order) ---- */

static const char *object_repr(jv v) {
    switch (v.type) {
    case JV_NONE: return "None";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    case JV_LIST: return v.u.l->kind == JL_TUPLE ? "tuple object" : "list object";
    case JV_DICT: return "dict object";
    case JV_NS: return "Namespace object";
    default: return "object";
    }
}

static jv loop_attr(jinja_render *r, jinja_loop *lp, const char *name, bool *found) {
    *found = true;
    int64_t i = (int64_t)lp->i, n = (int64_t)lp->n;
    if (!strcmp(name, "index")) return jv_int(i + 1);
    if (!strcmp(name, "index0")) return jv_int(i);
    if (!strcmp(name, "revindex")) return jv_int(n - i);
    if (!strcmp(name, "revindex0")) return jv_int(n - i - 1);
    if (!strcmp(name, "first")) return jv_bool(i == 0);
    if (!strcmp(name, "last")) return jv_bool(i == n - 1);
    if (!strcmp(name, "length")) return jv_int(n);
    if (!strcmp(name, "depth")) return jv_int(lp->depth);
    if (!strcmp(name, "depth0")) return jv_int(lp->depth - 1);
    if (!strcmp(name, "previtem"))
        return i > 0 ? lp->items[i - 1] : jv_undef_msg(r, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? lp->items[i + 1] : jv_undef_msg(r, "there is no next item");
    *found = false;
    return jv_undef();
}

jv jinja_getattr(jinja_render *r, jv obj, const char *name, size_t n) {
    if (obj.type == JV_UNDEF) fail_undefined(r, obj);
    if (n >= 4 && name[0] == '_' && name[1] == '_' && name[n - 1] == '_' && name[n - 2] == '_') {
        jv u = jv_undef_msg(r, "access to attribute '%.*s' of '%s' object is unsafe.", (int)n, name, jv_type_name(obj));
        u.flag = 1;
        return u;
    }
    bool found = false;
    if (obj.type == JV_LOOP) {
        jv v = loop_attr(r, obj.u.loop, name, &found);
        if (found) return v;
    }
    if (obj.type == JV_STR || obj.type == JV_LIST || obj.type == JV_DICT || obj.type == JV_LOOP) {
        jv m = jinja_method(r, obj, name, &found);
        if (found) return m;
    }
    if (obj.type == JV_DICT || obj.type == JV_NS) {
        const jv *v = jv_dict_get_str(obj, name, n);
        if (v) return *v;
    }
    return jv_undef_msg(r, "'%s' has no attribute '%.*s'", object_repr(obj), (int)n, name);
}

static jv index_list(jinja_render *r, jv obj, int64_t i) {
    int64_t len = (int64_t)obj.u.l->n;
    int64_t k = i < 0 ? i + len : i;
    if (k < 0 || k >= len) return jv_undef_msg(r, "%s has no element %lld", object_repr(obj), (long long)i);
    return obj.u.l->items[k];
}

static jv index_str(jinja_render *r, jv obj, int64_t i) {
    size_t nchars = obj.u.s.n, *off = NULL;
    if (!obj.flag) off = char_offsets(r, obj, &nchars);
    int64_t k = i < 0 ? i + (int64_t)nchars : i;
    if (k < 0 || k >= (int64_t)nchars) return jv_undef_msg(r, "str object has no element %lld", (long long)i);
    if (!off) return jv_str(obj.u.s.p + k, 1);
    return jv_str(obj.u.s.p + off[k], off[k + 1] - off[k]);
}

jv jinja_getitem(jinja_render *r, jv obj, jv key) {
    if (obj.type == JV_UNDEF) fail_undefined(r, obj);
    if (is_intlike(key)) {
        if (obj.type == JV_LIST && obj.u.l->kind <= JL_TUPLE) return index_list(r, obj, int_of(key));
        if (obj.type == JV_STR) return index_str(r, obj, int_of(key));
    }
    if (obj.type == JV_DICT) {
        if (key.type == JV_LIST && key.u.l->kind != JL_TUPLE) jinja_fail(r, "unhashable type: '%s'", jv_type_name(key));
        const jv *v = jv_dict_get(obj, key);
        if (v) return *v;
    }
    if (key.type == JV_STR) {
        bool found = false;
        if (obj.type == JV_STR || obj.type == JV_LIST || obj.type == JV_DICT || obj.type == JV_LOOP) {
            jv m = jinja_method(r, obj, key.u.s.p, &found);
            if (found) return m;
        }
        if (obj.type == JV_NS || obj.type == JV_LOOP) return jinja_getattr(r, obj, key.u.s.p, key.u.s.n);
        return jv_undef_msg(r, "'%s' has no attribute '%.*s'", object_repr(obj), (int)key.u.s.n, key.u.s.p);
    }
    size_t mark = r->out.n;
    jv_write_repr(r, &r->out, key);
    jv u = jv_undef_msg(r, "%s has no element %.*s", object_repr(obj), (int)(r->out.n - mark), r->out.p + mark);
    r->out.n = mark;
    return u;
}

/* ---- calls ---- */

static void eval_args(jinja_render *r, const jinja_node *n, jinja_frame *f, jinja_args *a, size_t extra_front) {
    a->npos = n->items.n + extra_front;
    a->pos = jinja_alloc(r, (a->npos ? a->npos : 1) * sizeof *a->pos);
    for (size_t i = 0; i < n->items.n; i++) a->pos[extra_front + i] = eval(r, n->items.v[i], f);
    a->nkw = n->kwvals.n;
    a->kwnames = n->kwnames;
    a->kwvals = jinja_alloc(r, (a->nkw ? a->nkw : 1) * sizeof *a->kwvals);
    for (size_t i = 0; i < a->nkw; i++) a->kwvals[i] = eval(r, n->kwvals.v[i], f);
    a->frame = f;
}

/* Captures the output of body (run in frame f) as a string. */
static jv capture(jinja_render *r, const jinja_nodes *body, jinja_frame *f) {
    size_t mark = r->out.n;
    exec_body(r, body, f);
    jv s = jv_str_copy(r, r->out.p + mark, r->out.n - mark);
    r->out.n = mark;
    return s;
}

static jv call_macro(jinja_render *r, const jinja_func *fn, const jinja_args *a) {
    const jinja_node *m = fn->node;
    if (++r->depth > JINJA_MAX_DEPTH) jinja_fail(r, "macro calls nested too deeply (limit %d)", JINJA_MAX_DEPTH);
    step(r);
    jinja_frame *f = frame_new(r, fn->closure);
    if (a->npos > m->params.n)
        jinja_fail(r, "macro '%s' takes not more than %zu argument(s)", fn->name, m->params.n);
    jv caller = fn->caller;
    for (size_t k = 0; k < a->nkw; k++) {
        bool known = false;
        for (size_t i = 0; i < m->params.n; i++)
            if (!strcmp(m->params.v[i]->str, a->kwnames[k])) known = true;
        if (!strcmp(a->kwnames[k], "caller") && fn->kind == JF_MACRO) { caller = a->kwvals[k]; known = true; }
        if (!known) jinja_fail(r, "macro '%s' takes no keyword argument '%s'", fn->name, a->kwnames[k]);
    }
    for (size_t i = 0; i < m->params.n; i++) {
        const jinja_node *p = m->params.v[i];
        jv v;
        const jv *given = jinja_arg(a, i, p->str);
        if (given) v = *given;
        else if (m->defaults.v[i]) v = eval(r, m->defaults.v[i], f);
        else v = jv_undef_msg(r, "parameter '%s' was not provided", p->str);
        frame_set(r, f, p->str, p->str_n, v);
    }
    if (fn->kind == JF_MACRO && caller.type != JV_UNDEF) frame_set(r, f, "caller", 6, caller);
    jv out = capture(r, &m->body, f);
    r->depth--;
    return out;
}

jv jinja_call_value(jinja_render *r, jv callee, const jinja_args *a) {
    if (callee.type == JV_UNDEF) fail_undefined(r, callee);
    if (callee.type != JV_FUNC) jinja_fail(r, "'%s' object is not callable", jv_type_name(callee));
    const jinja_func *fn = callee.u.fn;
    if (fn->kind == JF_BUILTIN) {
        step(r);
        return fn->fn(r, fn->self, a);
    }
    return call_macro(r, fn, a);
}

static jv eval_call(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    jv callee = eval(r, n->a, f);
    jinja_args a;
    eval_args(r, n, f, &a, 0);
    r->at = n;
    return jinja_call_value(r, callee, &a);
}

/* Filter node applied to input (its operand, or *input for filter blocks). */
static jv eval_filter(jinja_render *r, const jinja_node *n, jinja_frame *f, const jv *input) {
    jv value;
    if (n->a) value = n->a->kind == JN_FILTER ? eval_filter(r, n->a, f, input) : eval(r, n->a, f);
    else value = *input;
    jinja_args a;
    eval_args(r, n, f, &a, 0);
    r->at = n;
    return ((jinja_filter_fn)n->fn)(r, value, &a);
}

static jv eval_compare(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    static const char *const names[] = {[JOP_LT] = "<", [JOP_LE] = "<=", [JOP_GT] = ">", [JOP_GE] = ">="};
    jv left = eval(r, n->a, f);
    for (size_t i = 0; i < n->items.n; i++) {
        jv right = eval(r, n->items.v[i], f);
        jinja_op op = n->ops[i];
        bool ok;
        r->at = n;
        switch (op) {
        case JOP_EQ: ok = jv_equal(left, right); break;
        case JOP_NE: ok = !jv_equal(left, right); break;
        case JOP_IN: ok = contains(r, left, right); break;
        case JOP_NOTIN: ok = !contains(r, left, right); break;
        default: {
            if ((jv_is_number(left) && jv_is_number(right)) &&
                (isnan(jv_as_double(left)) || isnan(jv_as_double(right)))) {
                ok = false;
                break;
            }
            int c = jv_compare(r, left, right, names[op]);
            ok = op == JOP_LT ? c < 0 : op == JOP_LE ? c <= 0 : op == JOP_GT ? c > 0 : c >= 0;
        }
        }
        if (!ok) return jv_bool(false);
        left = right;
    }
    return jv_bool(true);
}

static jv eval_concat(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    jv *parts = jinja_alloc(r, n->items.n * sizeof *parts);
    size_t total = 0;
    for (size_t i = 0; i < n->items.n; i++) {
        parts[i] = jv_to_str(r, eval(r, n->items.v[i], f));
        total += parts[i].u.s.n;
    }
    char *p = jinja_alloc(r, total + 1);
    size_t k = 0;
    for (size_t i = 0; i < n->items.n; i++) {
        memcpy(p + k, parts[i].u.s.p, parts[i].u.s.n);
        k += parts[i].u.s.n;
    }
    p[k] = 0;
    return jv_str(p, k);
}

static jv eval_seq(jinja_render *r, const jinja_node *n, jinja_frame *f, int kind) {
    jv l = jv_list_new(r, n->items.n, kind);
    for (size_t i = 0; i < n->items.n; i++) l.u.l->items[l.u.l->n++] = eval(r, n->items.v[i], f);
    return l;
}

static jv eval_dict(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    jv d = jv_dict_new(r, n->items.n);
    for (size_t i = 0; i < n->items.n; i++) {
        jv k = eval(r, n->items.v[i], f);
        if (k.type == JV_LIST && k.u.l->kind != JL_TUPLE) jinja_fail(r, "unhashable type: 'list'");
        if (k.type == JV_DICT) jinja_fail(r, "unhashable type: 'dict'");
        jv_dict_set(r, d, k, eval(r, n->defaults.v[i], f));
    }
    return d;
}

static jv eval_node(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    r->at = n;
    switch (n->kind) {
    case JN_CONST: return n->value;
    case JN_NAME: {
        const jv *v = frame_find(f, n->str, n->str_n);
        if (v) return *v;
        jv g = jinja_global(r, n->str);
        if (g.type != JV_UNDEF) return g;
        return jv_undef_msg(r, "'%s' is undefined", n->str);
    }
    case JN_TUPLE: return eval_seq(r, n, f, JL_TUPLE);
    case JN_LIST: return eval_seq(r, n, f, JL_LIST);
    case JN_DICT: return eval_dict(r, n, f);
    case JN_GETATTR: {
        jv obj = eval(r, n->a, f);
        r->at = n;
        return jinja_getattr(r, obj, n->str, n->str_n);
    }
    case JN_GETITEM: {
        jv obj = eval(r, n->a, f);
        if (n->b->kind == JN_SLICE) return slice(r, obj, n->b, f);
        jv key = eval(r, n->b, f);
        r->at = n;
        return jinja_getitem(r, obj, key);
    }
    case JN_CALL: return eval_call(r, n, f);
    case JN_FILTER: return eval_filter(r, n, f, NULL);
    case JN_TEST: {
        jv value = eval(r, n->a, f);
        jinja_args a;
        eval_args(r, n, f, &a, 0);
        r->at = n;
        return jv_bool(((jinja_test_fn)n->fn)(r, value, &a));
    }
    case JN_BINOP: {
        jv a = eval(r, n->a, f), b = eval(r, n->b, f);
        r->at = n;
        return arith(r, n->op, a, b);
    }
    case JN_NEG: case JN_POS: {
        jv v = eval(r, n->a, f);
        r->at = n;
        if (v.type == JV_UNDEF) fail_undefined(r, v);
        if (!jv_is_number(v)) jinja_fail(r, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jv_type_name(v));
        if (n->kind == JN_POS) return v.type == JV_BOOL ? jv_int(v.u.b) : v;
        if (v.type == JV_FLOAT) return jv_float(-v.u.f);
        if (int_of(v) == INT64_MIN) overflow(r);
        return jv_int(-int_of(v));
    }
    case JN_NOT: return jv_bool(!jv_truthy(eval(r, n->a, f)));
    case JN_AND: {
        jv a = eval(r, n->a, f);
        return jv_truthy(a) ? eval(r, n->b, f) : a;
    }
    case JN_OR: {
        jv a = eval(r, n->a, f);
        return jv_truthy(a) ? a : eval(r, n->b, f);
    }
    case JN_COMPARE: return eval_compare(r, n, f);
    case JN_COND:
        if (jv_truthy(eval(r, n->a, f))) return eval(r, n->b, f);
        if (n->c) return eval(r, n->c, f);
        return jv_undef_msg(r, "the inline if-expression on line %d evaluated to false and no else section was defined.", n->line);
    case JN_CONCAT: return eval_concat(r, n, f);
    default: jinja_fail(r, "internal error: statement used as an expression");
    }
}

/* Expression trees can be deep (a + b + c ...): bound the recursion. */
static jv eval(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    if (++r->edepth > JINJA_MAX_EXPR_DEPTH) jinja_fail(r, "expression nested too deeply (limit %d)", JINJA_MAX_EXPR_DEPTH);
    jv v = eval_node(r, n, f);
    r->edepth--;
    return v;
}

/* ---- statements ---- */

static void assign(jinja_render *r, const jinja_node *target, jv v, jinja_frame *f) {
    if (target->kind == JN_NAME) {
        frame_set(r, f, target->str, target->str_n, v);
        return;
    }
    jv items = jinja_iterate(r, v);
    size_t want = target->items.n;
    if (items.u.l->n != want)
        jinja_fail(r, "%s values to unpack (expected %zu, got %zu)", items.u.l->n < want ? "not enough" : "too many",
                   want, items.u.l->n);
    for (size_t i = 0; i < want; i++) assign(r, target->items.v[i], items.u.l->items[i], f);
}

static void exec_set(jinja_render *r, const jinja_node *n, jinja_frame *f, jv v) {
    if (n->a->kind != JN_NSREF) {
        assign(r, n->a, v, f);
        return;
    }
    jv *ns = frame_find(f, n->a->str, n->a->str_n);
    if (!ns || ns->type != JV_NS) jinja_fail(r, "cannot assign attribute on non-namespace object");
    if (n->a->str2[0] == '_')
        jinja_fail(r, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'. "
                      "Please rename the attribute.", n->a->str2);
    jv key = jv_str(n->a->str2, strlen(n->a->str2));
    jv_dict_set(r, *ns, key, v);
}

static int exec_for(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    jv seq = jinja_iterate(r, eval(r, n->b, f));
    const jv *items = seq.u.l->items;
    size_t count = seq.u.l->n;
    if (n->c) { /* `for x in y if cond`: filter first, loop.* counts what is left */
        jv kept = jv_list_new(r, count, JL_LIST);
        jinja_frame *tf = NULL;
        for (size_t i = 0; i < count; i++) {
            frame_reuse(r, &tf, f);
            assign(r, n->a, items[i], tf);
            step(r);
            if (jv_truthy(eval(r, n->c, tf))) kept.u.l->items[kept.u.l->n++] = items[i];
        }
        items = kept.u.l->items;
        count = kept.u.l->n;
    }
    const jv *outer = frame_find(f, "loop", 4);
    jinja_loop *lp = jinja_alloc(r, sizeof *lp);
    lp->items = items;
    lp->n = count;
    lp->depth = outer && outer->type == JV_LOOP ? outer->u.loop->depth + 1 : 1;
    jv loop_v = {.type = JV_LOOP};
    loop_v.u.loop = lp;
    jinja_frame *it = NULL;
    for (size_t i = 0; i < count; i++) {
        step(r);
        lp->i = i;
        frame_reuse(r, &it, f);
        assign(r, n->a, items[i], it);
        frame_set(r, it, "loop", 4, loop_v);
        if (exec_body(r, &n->body, it) == FLOW_BREAK) break;
    }
    if (!count && n->orelse.n) exec_body(r, &n->orelse, frame_new(r, f));
    return FLOW_NORMAL;
}

static jv make_func(jinja_render *r, int kind, const jinja_node *n, jinja_frame *closure, const char *name) {
    jinja_func *fn = jinja_alloc(r, sizeof *fn);
    memset(fn, 0, sizeof *fn);
    fn->kind = kind;
    fn->name = name;
    fn->node = n;
    fn->closure = closure;
    closure->captured = true;
    fn->caller = jv_undef();
    jv v = {.type = JV_FUNC};
    v.u.fn = fn;
    return v;
}

static void exec_call_block(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    jv caller = make_func(r, JF_CALLER, n, f, "caller");
    const jinja_node *call = n->a;
    jv callee = eval(r, call->a, f);
    jinja_args a;
    eval_args(r, call, f, &a, 0);
    r->at = n;
    jv result;
    if (callee.type == JV_FUNC && callee.u.fn->kind == JF_MACRO) {
        jinja_func copy = *callee.u.fn;
        copy.caller = caller;
        result = call_macro(r, &copy, &a);
    } else {
        result = jinja_call_value(r, callee, &a);
    }
    jv_write_str(r, &r->out, result);
}

static int exec_node(jinja_render *r, const jinja_node *n, jinja_frame *f) {
    r->at = n;
    switch (n->kind) {
    case JN_DATA: jinja_buf_put(r, &r->out, n->str, n->str_n); break;
    case JN_OUTPUT: {
        jv v = eval(r, n->a, f);
        r->at = n;
        jv_write_str(r, &r->out, v);
        break;
    }
    case JN_IF:
        if (jv_truthy(eval(r, n->a, f))) return exec_body(r, &n->body, f);
        return exec_body(r, &n->orelse, f);
    case JN_FOR: return exec_for(r, n, f);
    case JN_SET: exec_set(r, n, f, eval(r, n->b, f)); break;
    case JN_SET_BLOCK: {
        jv v = capture(r, &n->body, f);
        if (n->c) v = eval_filter(r, n->c, f, &v);
        exec_set(r, n, f, v);
        break;
    }
    case JN_MACRO: frame_set(r, f, n->str, n->str_n, make_func(r, JF_MACRO, n, f, n->str)); break;
    case JN_CALL_BLOCK: exec_call_block(r, n, f); break;
    case JN_FILTER_BLOCK: {
        jv v = capture(r, &n->body, frame_new(r, f));
        jv_write_str(r, &r->out, eval_filter(r, n->c, f, &v));
        break;
    }
    case JN_WITH: {
        jinja_frame *inner = frame_new(r, f);
        for (size_t i = 0; i < n->params.n; i++) assign(r, n->params.v[i], eval(r, n->defaults.v[i], f), inner);
        return exec_body(r, &n->body, inner);
    }
    case JN_SCOPE: return exec_body(r, &n->body, f);
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    default: jinja_fail(r, "internal error: expression used as a statement");
    }
    return FLOW_NORMAL;
}

static int exec_body(jinja_render *r, const jinja_nodes *body, jinja_frame *f) {
    if (++r->depth > JINJA_MAX_DEPTH) jinja_fail(r, "template nested too deeply");
    int flow = FLOW_NORMAL;
    for (size_t i = 0; i < body->n && flow == FLOW_NORMAL; i++) flow = exec_node(r, body->v[i], f);
    r->depth--;
    return flow;
}

int jinja_render_template(const jinja_nodes *body, const json_t *context, char **out, size_t *n, sl_err *err) {
    jinja_render *r = calloc(1, sizeof *r);
    if (!r) return sl_err_set(err, SL_ENOMEM, "chat template: out of memory");
    sl_err scratch;
    r->err = err ? err : &scratch;
    r->arena.limit = JINJA_MAX_MEMORY;
    int rc = 0;
    if (setjmp(r->fail)) {
        rc = r->err->code ? r->err->code : SL_EINVAL;
        free(r->out.p);
    } else {
        jinja_buf_put(r, &r->out, "", 0); /* captures slice r->out.p: make it non-NULL */
        jinja_frame *top = frame_new(r, NULL);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)context, key, val) frame_set(r, top, key, strlen(key), jv_from_json(r, val));
        exec_body(r, body, top);
        r->out.p[r->out.n] = 0; /* jinja_buf_put keeps one spare byte */
        *out = r->out.p;
        if (n) *n = r->out.n;
    }
    jinja_arena_free(&r->arena);
    free(r);
    return rc;
}
