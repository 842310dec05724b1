/* jinja_builtins.c -- Jinja2's filters and tests, the Python str/list/dict
 * methods templates call, and the globals transformers installs.
 *
 * Each builtin follows its Jinja2 (3.1) or CPython definition, including
 * argument order (tojson's first positional argument is ensure_ascii, as in
 * transformers' override), case-insensitive sort/unique defaults, and the
 * immutable sandbox: list.append, dict.update and the other mutating methods
 * resolve to an "unsafe" undefined whose call raises, as Jinja2's
 * ImmutableSandboxedEnvironment does. str methods work on code points
 * (utf8proc gives case mappings and categories); upper/lower use simple case
 * mappings, so the few characters whose Python mapping expands (German
 * sharp s) differ. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "template/jinja.h"

/* ---- arguments ---- */

const jv *jinja_arg(const jinja_args *a, size_t i, const char *name) {
    if (i < a->npos) return &a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (!strcmp(a->kwnames[k], name)) return &a->kwvals[k];
    return NULL;
}

void jinja_check_args(jinja_render *r, const jinja_args *a, const char *what, size_t max_pos,
                      const char *const *kw) {
    if (a->npos > max_pos) jinja_fail(r, "%s() takes at most %zu positional argument(s) (%zu given)", what, max_pos, a->npos);
    for (size_t k = 0; k < a->nkw; k++) {
        bool ok = false;
        for (size_t i = 0; kw && kw[i]; i++)
            if (!strcmp(kw[i], a->kwnames[k])) {
                ok = true;
                if (i < a->npos) jinja_fail(r, "%s() got multiple values for argument '%s'", what, kw[i]);
            }
        if (!ok) jinja_fail(r, "%s() got an unexpected keyword argument '%s'", what, a->kwnames[k]);
    }
}

static jv arg_or(const jinja_args *a, size_t i, const char *name, jv def) {
    const jv *v = jinja_arg(a, i, name);
    return v ? *v : def;
}

static jv need_str(jinja_render *r, jv v, const char *what) {
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (v.type != JV_STR) jinja_fail(r, "%s must be str, not %s", what, jv_type_name(v));
    return v;
}

static int64_t need_int(jinja_render *r, jv v, const char *what) {
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (v.type == JV_BOOL) return v.u.b;
    if (v.type != JV_INT) jinja_fail(r, "%s: '%s' object cannot be interpreted as an integer", what, jv_type_name(v));
    return v.u.i;
}

static jv make_method(jinja_render *r, jv self, const char *name, jinja_builtin_fn fn) {
    jinja_func *f = jinja_alloc(r, sizeof *f);
    memset(f, 0, sizeof *f);
    f->kind = JF_BUILTIN;
    f->name = name;
    f->fn = fn;
    f->self = self;
    f->caller = jv_undef();
    jv v = {.type = JV_FUNC};
    v.u.fn = f;
    return v;
}

/* ---- string helpers (code points) ---- */

typedef struct strbuild {
    char *p;
    size_t n;
} strbuild;

static strbuild sb_new(jinja_render *r, size_t cap) {
    strbuild b = {jinja_alloc(r, cap + 1), 0};
    return b;
}
static void sb_put(strbuild *b, const char *p, size_t n) {
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static jv sb_done(strbuild *b) {
    b->p[b->n] = 0;
    return jv_str(b->p, b->n);
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE } case_kind;

static uint32_t map_case(uint32_t c, case_kind k) {
    if (c < 0x80) {
        if (k == CASE_LOWER) return c >= 'A' && c <= 'Z' ? c + 32 : c;
        return c >= 'a' && c <= 'z' ? c - 32 : c;
    }
    utf8proc_int32_t cp = (utf8proc_int32_t)c;
    return (uint32_t)(k == CASE_LOWER ? utf8proc_tolower(cp) : k == CASE_UPPER ? utf8proc_toupper(cp) : utf8proc_totitle(cp));
}

static bool is_cased(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

static bool is_alnum_cp(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

/* Python's full case mappings that expand to several characters
 * (SpecialCasing.txt) for the Latin characters text commonly holds. */
static const struct {
    uint32_t cp;
    const char *upper, *title, *lower;
} special_cases[] = {
    {0x00DF, "SS", "Ss", NULL},      {0xFB00, "FF", "Ff", NULL},   {0xFB01, "FI", "Fi", NULL},
    {0xFB02, "FL", "Fl", NULL},      {0xFB03, "FFI", "Ffi", NULL}, {0xFB04, "FFL", "Ffl", NULL},
    {0xFB05, "ST", "St", NULL},      {0xFB06, "ST", "St", NULL},   {0x0149, "\u02BCN", "\u02BCN", NULL},
    {0x0130, NULL, NULL, "i\u0307"},
};

static const char *special_case(uint32_t c, case_kind k) {
    if (c < 0xDF) return NULL;
    for (size_t i = 0; i < sizeof special_cases / sizeof special_cases[0]; i++)
        if (special_cases[i].cp == c)
            return k == CASE_UPPER ? special_cases[i].upper : k == CASE_TITLE ? special_cases[i].title : special_cases[i].lower;
    return NULL;
}

/* mode: 0 = map all with k; 1 = str.title; 2 = str.capitalize */
static jv change_case(jinja_render *r, jv s, case_kind k, int mode) {
    strbuild b = sb_new(r, s.u.s.n * 3);
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t c;
        i += jinja_utf8_decode(s.u.s.p + i, s.u.s.n - i, &c);
        case_kind kind = k;
        if (mode == 1) {
            kind = prev_cased ? CASE_LOWER : CASE_TITLE;
            prev_cased = is_cased(c);
        } else if (mode == 2) {
            kind = first ? CASE_TITLE : CASE_LOWER;
        }
        first = false;
        const char *expanded = special_case(c, kind);
        if (expanded) {
            sb_put(&b, expanded, strlen(expanded));
            continue;
        }
        char enc[4];
        sb_put(&b, enc, sl_utf8_encode(map_case(c, kind), enc));
    }
    return sb_done(&b);
}

static bool in_chars(uint32_t c, jv chars) {
    if (chars.type != JV_STR) return jinja_is_space(c);
    for (size_t i = 0; i < chars.u.s.n;) {
        uint32_t d;
        i += jinja_utf8_decode(chars.u.s.p + i, chars.u.s.n - i, &d);
        if (c == d) return true;
    }
    return false;
}

/* str.strip family: left/right, chars None = whitespace. */
static jv strip(jinja_render *r, jv s, jv chars, bool left, bool right) {
    if (chars.type != JV_NONE && chars.type != JV_STR) jinja_fail(r, "strip arg must be None or str");
    size_t b = 0, e = s.u.s.n;
    while (left && b < e) {
        uint32_t c;
        size_t used = jinja_utf8_decode(s.u.s.p + b, e - b, &c);
        if (!in_chars(c, chars)) break;
        b += used;
    }
    while (right && e > b) {
        size_t start = e - 1;
        while (start > b && ((unsigned char)s.u.s.p[start] & 0xC0) == 0x80) start--;
        uint32_t c;
        jinja_utf8_decode(s.u.s.p + start, e - start, &c);
        if (!in_chars(c, chars)) break;
        e = start;
    }
    return jv_str(s.u.s.p + b, e - b);
}

static size_t space_len(const char *p, size_t n) {
    uint32_t c;
    size_t used = jinja_utf8_decode(p, n, &c);
    return jinja_is_space(c) ? used : 0;
}

/* str.split / str.rsplit. */
static jv split(jinja_render *r, jv s, jv sep, int64_t maxsplit, bool from_right) {
    jv out = jv_list_new(r, 4, JL_LIST);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (sep.type == JV_STR && !sep.u.s.n) jinja_fail(r, "empty separator");
    if (sep.type == JV_STR && !from_right) {
        size_t start = 0;
        while (maxsplit < 0 || (int64_t)out.u.l->n < maxsplit) {
            const char *hit = memmem(p + start, n - start, sep.u.s.p, sep.u.s.n);
            if (!hit) break;
            jv_list_push(r, out, jv_str(p + start, (size_t)(hit - p) - start));
            start = (size_t)(hit - p) + sep.u.s.n;
        }
        jv_list_push(r, out, jv_str(p + start, n - start));
        return out;
    }
    if (sep.type == JV_STR) { /* rsplit with a separator: collect from the right, then reverse */
        size_t end = n;
        while (maxsplit < 0 || (int64_t)out.u.l->n < maxsplit) {
            const char *hit = NULL;
            for (size_t i = end; i >= sep.u.s.n; i--)
                if (memcmp(p + i - sep.u.s.n, sep.u.s.p, sep.u.s.n) == 0) { hit = p + i - sep.u.s.n; break; }
            if (!hit) break;
            jv_list_push(r, out, jv_str(hit + sep.u.s.n, end - (size_t)(hit - p) - sep.u.s.n));
            end = (size_t)(hit - p);
        }
        jv_list_push(r, out, jv_str(p, end));
    } else if (!from_right) { /* whitespace runs */
        size_t i = 0;
        for (;;) {
            size_t k;
            while (i < n && (k = space_len(p + i, n - i))) i += k;
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)out.u.l->n >= maxsplit) {
                size_t e = n;
                jv rest = strip(r, jv_str(p + i, e - i), jv_none(), false, true);
                jv_list_push(r, out, rest);
                break;
            }
            size_t start = i;
            while (i < n && !space_len(p + i, n - i)) {
                uint32_t c;
                i += jinja_utf8_decode(p + i, n - i, &c);
            }
            jv_list_push(r, out, jv_str(p + start, i - start));
        }
        return out;
    } else {
        jv stripped = strip(r, s, jv_none(), false, true);
        jv parts = split(r, stripped, jv_none(), -1, false);
        size_t total = parts.u.l->n;
        if (maxsplit < 0 || (size_t)maxsplit + 1 >= total) return parts;
        /* keep the first total-maxsplit words joined as in the original text */
        size_t keep = total - (size_t)maxsplit;
        const jv *last_kept = &parts.u.l->items[keep - 1];
        size_t head_len = (size_t)(last_kept->u.s.p + last_kept->u.s.n - stripped.u.s.p);
        jv head = strip(r, jv_str(stripped.u.s.p, head_len), jv_none(), true, false);
        jv res = jv_list_new(r, (size_t)maxsplit + 1, JL_LIST);
        jv_list_push(r, res, head);
        for (size_t i = keep; i < total; i++) jv_list_push(r, res, parts.u.l->items[i]);
        return res;
    }
    /* reverse what rsplit collected */
    jinja_list *l = out.u.l;
    for (size_t i = 0; i < l->n / 2; i++) {
        jv t = l->items[i];
        l->items[i] = l->items[l->n - 1 - i];
        l->items[l->n - 1 - i] = t;
    }
    return out;
}

static jv replace(jinja_render *r, jv s, jv old, jv new_, int64_t count) {
    size_t hits = 0;
    jv pieces = old.u.s.n ? split(r, s, old, count, false) : jinja_iterate(r, s);
    hits = old.u.s.n ? pieces.u.l->n - 1 : pieces.u.l->n + 1;
    if (!old.u.s.n && count >= 0 && (size_t)count < hits) hits = (size_t)count;
    strbuild b = sb_new(r, s.u.s.n + hits * new_.u.s.n);
    if (old.u.s.n) {
        for (size_t i = 0; i < pieces.u.l->n; i++) {
            if (i) sb_put(&b, new_.u.s.p, new_.u.s.n);
            sb_put(&b, pieces.u.l->items[i].u.s.p, pieces.u.l->items[i].u.s.n);
        }
        return sb_done(&b);
    }
    size_t done = 0; /* empty `old`: insert before each character and at the end */
    for (size_t i = 0; i <= pieces.u.l->n; i++) {
        if (done < hits) { sb_put(&b, new_.u.s.p, new_.u.s.n); done++; }
        if (i < pieces.u.l->n) sb_put(&b, pieces.u.l->items[i].u.s.p, pieces.u.l->items[i].u.s.n);
    }
    return sb_done(&b);
}

static bool has_affix(jv s, jv affix, bool prefix) {
    if (affix.u.s.n > s.u.s.n) return false;
    const char *at = prefix ? s.u.s.p : s.u.s.p + s.u.s.n - affix.u.s.n;
    return memcmp(at, affix.u.s.p, affix.u.s.n) == 0;
}

static bool affix_match(jinja_render *r, jv s, jv arg, bool prefix) {
    if (arg.type == JV_LIST && arg.u.l->kind == JL_TUPLE) {
        for (size_t i = 0; i < arg.u.l->n; i++)
            if (has_affix(s, need_str(r, arg.u.l->items[i], "tuple item"), prefix)) return true;
        return false;
    }
    if (arg.type != JV_STR)
        jinja_fail(r, "%s first arg must be str or a tuple of str, not %s", prefix ? "startswith" : "endswith", jv_type_name(arg));
    return has_affix(s, arg, prefix);
}

/* Python str.splitlines boundaries. */
static size_t line_break_len(const char *p, size_t n) {
    uint32_t c;
    size_t used = jinja_utf8_decode(p, n, &c);
    if (c == '\r') return n > 1 && p[1] == '\n' ? 2 : 1;
    if (c == '\n' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029)
        return used;
    return 0;
}

static jv splitlines(jinja_render *r, jv s, bool keepends) {
    jv out = jv_list_new(r, 4, JL_LIST);
    size_t start = 0, i = 0, n = s.u.s.n;
    while (i < n) {
        size_t k = line_break_len(s.u.s.p + i, n - i);
        if (!k) {
            uint32_t c;
            i += jinja_utf8_decode(s.u.s.p + i, n - i, &c);
            continue;
        }
        jv_list_push(r, out, jv_str(s.u.s.p + start, (keepends ? i + k : i) - start));
        i += k;
        start = i;
    }
    if (start < n) jv_list_push(r, out, jv_str(s.u.s.p + start, n - start));
    return out;
}

static jv join_strs(jinja_render *r, jv sep, jv items, bool convert) {
    size_t total = 0;
    jinja_list *l = items.u.l;
    jv *parts = jinja_alloc(r, (l->n ? l->n : 1) * sizeof *parts);
    for (size_t i = 0; i < l->n; i++) {
        parts[i] = l->items[i];
        if (convert) parts[i] = jv_to_str(r, parts[i]);
        else if (parts[i].type != JV_STR)
            jinja_fail(r, "sequence item %zu: expected str instance, %s found", i, jv_type_name(parts[i]));
        total += parts[i].u.s.n + sep.u.s.n;
    }
    strbuild b = sb_new(r, total);
    for (size_t i = 0; i < l->n; i++) {
        if (i) sb_put(&b, sep.u.s.p, sep.u.s.n);
        sb_put(&b, parts[i].u.s.p, parts[i].u.s.n);
    }
    return sb_done(&b);
}

static int64_t char_index(jv s, size_t byte_off) { return (int64_t)jinja_utf8_len(s.u.s.p, byte_off); }

/* ---- str methods ---- */

#define STR_METHOD(name) static jv m_##name(jinja_render *r, jv self, const jinja_args *a)

STR_METHOD(strip) { jinja_check_args(r, a, "strip", 1, NULL); return strip(r, self, arg_or(a, 0, NULL, jv_none()), true, true); }
STR_METHOD(lstrip) { jinja_check_args(r, a, "lstrip", 1, NULL); return strip(r, self, arg_or(a, 0, NULL, jv_none()), true, false); }
STR_METHOD(rstrip) { jinja_check_args(r, a, "rstrip", 1, NULL); return strip(r, self, arg_or(a, 0, NULL, jv_none()), false, true); }

static jv do_split(jinja_render *r, jv self, const jinja_args *a, bool right) {
    static const char *const kw[] = {"sep", "maxsplit", NULL};
    jinja_check_args(r, a, right ? "rsplit" : "split", 2, kw);
    jv sep = arg_or(a, 0, "sep", jv_none());
    if (sep.type != JV_NONE) need_str(r, sep, "separator");
    int64_t maxsplit = need_int(r, arg_or(a, 1, "maxsplit", jv_int(-1)), "maxsplit");
    return split(r, self, sep, maxsplit, right);
}
STR_METHOD(split) { return do_split(r, self, a, false); }
STR_METHOD(rsplit) { return do_split(r, self, a, true); }
STR_METHOD(splitlines) {
    jinja_check_args(r, a, "splitlines", 1, (const char *const[]){"keepends", NULL});
    return splitlines(r, self, jv_truthy(arg_or(a, 0, "keepends", jv_bool(false))));
}
STR_METHOD(startswith) {
    jinja_check_args(r, a, "startswith", 1, NULL);
    if (!a->npos) jinja_fail(r, "startswith() takes at least 1 argument (0 given)");
    return jv_bool(affix_match(r, self, a->pos[0], true));
}
STR_METHOD(endswith) {
    jinja_check_args(r, a, "endswith", 1, NULL);
    if (!a->npos) jinja_fail(r, "endswith() takes at least 1 argument (0 given)");
    return jv_bool(affix_match(r, self, a->pos[0], false));
}
STR_METHOD(replace) {
    jinja_check_args(r, a, "replace", 3, NULL);
    if (a->npos < 2) jinja_fail(r, "replace expected at least 2 arguments, got %zu", a->npos);
    return replace(r, self, need_str(r, a->pos[0], "replace() argument 1"), need_str(r, a->pos[1], "replace() argument 2"),
                   need_int(r, arg_or(a, 2, NULL, jv_int(-1)), "replace() count"));
}
STR_METHOD(upper) { jinja_check_args(r, a, "upper", 0, NULL); return change_case(r, self, CASE_UPPER, 0); }
STR_METHOD(lower) { jinja_check_args(r, a, "lower", 0, NULL); return change_case(r, self, CASE_LOWER, 0); }
STR_METHOD(title) { jinja_check_args(r, a, "title", 0, NULL); return change_case(r, self, CASE_TITLE, 1); }
STR_METHOD(capitalize) { jinja_check_args(r, a, "capitalize", 0, NULL); return change_case(r, self, CASE_TITLE, 2); }

static jv find(jinja_render *r, jv self, const jinja_args *a, bool right, bool raise) {
    jinja_check_args(r, a, "find", 1, NULL);
    if (!a->npos) jinja_fail(r, "find() takes at least 1 argument (0 given)");
    jv sub = need_str(r, a->pos[0], "find() argument");
    const char *hit = NULL;
    if (!right) hit = memmem(self.u.s.p, self.u.s.n, sub.u.s.p, sub.u.s.n);
    else
        for (size_t i = self.u.s.n + 1; i-- > sub.u.s.n;)
            if (memcmp(self.u.s.p + i - sub.u.s.n, sub.u.s.p, sub.u.s.n) == 0) { hit = self.u.s.p + i - sub.u.s.n; break; }
    if (!hit) {
        if (raise) jinja_fail(r, "substring not found");
        return jv_int(-1);
    }
    return jv_int(char_index(self, (size_t)(hit - self.u.s.p)));
}
STR_METHOD(find) { return find(r, self, a, false, false); }
STR_METHOD(rfind) { return find(r, self, a, true, false); }
STR_METHOD(sindex) { return find(r, self, a, false, true); }
STR_METHOD(scount) {
    jinja_check_args(r, a, "count", 1, NULL);
    if (!a->npos) jinja_fail(r, "count() takes at least 1 argument (0 given)");
    jv sub = need_str(r, a->pos[0], "count() argument");
    if (!sub.u.s.n) return jv_int((int64_t)jinja_utf8_len(self.u.s.p, self.u.s.n) + 1);
    return jv_int((int64_t)split(r, self, sub, -1, false).u.l->n - 1);
}
STR_METHOD(join) {
    jinja_check_args(r, a, "join", 1, NULL);
    if (!a->npos) jinja_fail(r, "join() takes exactly one argument (0 given)");
    return join_strs(r, self, jinja_iterate(r, a->pos[0]), false);
}

static jv str_pred(jv self, int kind) {
    if (!self.u.s.n) return jv_bool(false);
    bool any_cased = false;
    for (size_t i = 0; i < self.u.s.n;) {
        uint32_t c;
        i += jinja_utf8_decode(self.u.s.p + i, self.u.s.n - i, &c);
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
        switch (kind) {
        case 0: if (cat != UTF8PROC_CATEGORY_ND) return jv_bool(false); break;
        case 1: if (!(cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO)) return jv_bool(false); break;
        case 2: if (!is_alnum_cp(c)) return jv_bool(false); break;
        case 3: if (!jinja_is_space(c)) return jv_bool(false); break;
        case 4:
            if (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return jv_bool(false);
            any_cased |= cat == UTF8PROC_CATEGORY_LU;
            break;
        default:
            if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) return jv_bool(false);
            any_cased |= cat == UTF8PROC_CATEGORY_LL;
            break;
        }
    }
    return jv_bool(kind < 4 || any_cased);
}
STR_METHOD(isdigit) { jinja_check_args(r, a, "isdigit", 0, NULL); return str_pred(self, 0); }
STR_METHOD(isalpha) { jinja_check_args(r, a, "isalpha", 0, NULL); return str_pred(self, 1); }
STR_METHOD(isalnum) { jinja_check_args(r, a, "isalnum", 0, NULL); return str_pred(self, 2); }
STR_METHOD(isspace) { jinja_check_args(r, a, "isspace", 0, NULL); return str_pred(self, 3); }
STR_METHOD(isupper) { jinja_check_args(r, a, "isupper", 0, NULL); return str_pred(self, 4); }
STR_METHOD(islower) { jinja_check_args(r, a, "islower", 0, NULL); return str_pred(self, 5); }

STR_METHOD(removeprefix) {
    jinja_check_args(r, a, "removeprefix", 1, NULL);
    jv p = need_str(r, arg_or(a, 0, NULL, jv_undef_msg(r, "removeprefix() takes exactly one argument")), "prefix");
    return has_affix(self, p, true) ? jv_str(self.u.s.p + p.u.s.n, self.u.s.n - p.u.s.n) : self;
}
STR_METHOD(removesuffix) {
    jinja_check_args(r, a, "removesuffix", 1, NULL);
    jv p = need_str(r, arg_or(a, 0, NULL, jv_undef_msg(r, "removesuffix() takes exactly one argument")), "suffix");
    return has_affix(self, p, false) && p.u.s.n ? jv_str(self.u.s.p, self.u.s.n - p.u.s.n) : self;
}

/* str.format with "{}", "{0}" and "{name}" fields (no format specs). */
STR_METHOD(format) {
    size_t mark = r->out.n, auto_idx = 0;
    const char *p = self.u.s.p, *end = p + self.u.s.n;
    while (p < end) {
        if (*p == '{' && p + 1 < end && p[1] == '{') { jinja_buf_putc(r, &r->out, '{'); p += 2; continue; }
        if (*p == '}' && p + 1 < end && p[1] == '}') { jinja_buf_putc(r, &r->out, '}'); p += 2; continue; }
        if (*p == '}') jinja_fail(r, "Single '}' encountered in format string");
        if (*p != '{') { jinja_buf_putc(r, &r->out, *p++); continue; }
        const char *close = memchr(p, '}', (size_t)(end - p));
        if (!close) jinja_fail(r, "Single '{' encountered in format string");
        const char *field = p + 1;
        size_t flen = (size_t)(close - field);
        if (memchr(field, ':', flen) || memchr(field, '!', flen) || memchr(field, '.', flen) || memchr(field, '[', flen))
            jinja_fail(r, "str.format: format specs and conversions are not supported");
        const jv *v = NULL;
        if (!flen) {
            v = jinja_arg(a, auto_idx++, NULL);
        } else if (field[0] >= '0' && field[0] <= '9') {
            v = jinja_arg(a, (size_t)atoi(field), NULL);
        } else {
            for (size_t k = 0; k < a->nkw; k++)
                if (strlen(a->kwnames[k]) == flen && !memcmp(a->kwnames[k], field, flen)) v = &a->kwvals[k];
        }
        if (!v) jinja_fail(r, "str.format: no argument for field '{%.*s}'", (int)flen, field);
        jv_write_str(r, &r->out, *v);
        p = close + 1;
    }
    jv s = jv_str_copy(r, r->out.p + mark, r->out.n - mark);
    r->out.n = mark;
    return s;
}

/* ---- list / dict methods ---- */

STR_METHOD(lindex) {
    jinja_check_args(r, a, "index", 1, NULL);
    if (!a->npos) jinja_fail(r, "index expected at least 1 argument, got 0");
    for (size_t i = 0; i < self.u.l->n; i++)
        if (jv_equal(self.u.l->items[i], a->pos[0])) return jv_int((int64_t)i);
    jinja_fail(r, "value is not in list");
}
STR_METHOD(lcount) {
    jinja_check_args(r, a, "count", 1, NULL);
    if (!a->npos) jinja_fail(r, "count() takes exactly one argument (0 given)");
    int64_t c = 0;
    for (size_t i = 0; i < self.u.l->n; i++) c += jv_equal(self.u.l->items[i], a->pos[0]);
    return jv_int(c);
}
STR_METHOD(lcopy) {
    jinja_check_args(r, a, "copy", 0, NULL);
    jv out = jv_list_new(r, self.u.l->n, JL_LIST);
    for (size_t i = 0; i < self.u.l->n; i++) out.u.l->items[out.u.l->n++] = self.u.l->items[i];
    return out;
}

static jv dict_view(jinja_render *r, jv d, int kind) {
    jv out = jv_list_new(r, d.u.d->n, kind);
    for (size_t i = 0; i < d.u.d->n; i++) {
        jv item;
        if (kind == JL_KEYS) item = d.u.d->keys[i];
        else if (kind == JL_VALUES) item = d.u.d->vals[i];
        else {
            item = jv_list_new(r, 2, JL_TUPLE);
            item.u.l->items[0] = d.u.d->keys[i];
            item.u.l->items[1] = d.u.d->vals[i];
            item.u.l->n = 2;
        }
        out.u.l->items[out.u.l->n++] = item;
    }
    return out;
}
STR_METHOD(keys) { jinja_check_args(r, a, "keys", 0, NULL); return dict_view(r, self, JL_KEYS); }
STR_METHOD(values) { jinja_check_args(r, a, "values", 0, NULL); return dict_view(r, self, JL_VALUES); }
STR_METHOD(items) { jinja_check_args(r, a, "items", 0, NULL); return dict_view(r, self, JL_ITEMS); }
STR_METHOD(get) {
    jinja_check_args(r, a, "get", 2, NULL);
    if (!a->npos) jinja_fail(r, "get expected at least 1 argument, got 0");
    if (a->pos[0].type == JV_LIST && a->pos[0].u.l->kind != JL_TUPLE) jinja_fail(r, "unhashable type: 'list'");
    const jv *v = jv_dict_get(self, a->pos[0]);
    return v ? *v : arg_or(a, 1, NULL, jv_none());
}
STR_METHOD(dcopy) {
    jinja_check_args(r, a, "copy", 0, NULL);
    jv out = jv_dict_new(r, self.u.d->n);
    for (size_t i = 0; i < self.u.d->n; i++) jv_dict_set(r, out, self.u.d->keys[i], self.u.d->vals[i]);
    return out;
}
STR_METHOD(cycle) {
    if (!a->npos) jinja_fail(r, "no items for cycling given");
    return a->pos[self.u.loop->i % a->npos];
}

typedef struct method_entry {
    const char *name;
    jinja_builtin_fn fn; /* NULL: a mutating method the immutable sandbox refuses */
} method_entry;

static const method_entry str_methods[] = {
    {"strip", m_strip}, {"lstrip", m_lstrip}, {"rstrip", m_rstrip}, {"split", m_split}, {"rsplit", m_rsplit},
    {"splitlines", m_splitlines}, {"startswith", m_startswith}, {"endswith", m_endswith}, {"replace", m_replace},
    {"upper", m_upper}, {"lower", m_lower}, {"title", m_title}, {"capitalize", m_capitalize}, {"find", m_find},
    {"rfind", m_rfind}, {"index", m_sindex}, {"count", m_scount}, {"join", m_join}, {"isdigit", m_isdigit},
    {"isalpha", m_isalpha}, {"isalnum", m_isalnum}, {"isspace", m_isspace}, {"isupper", m_isupper},
    {"islower", m_islower}, {"removeprefix", m_removeprefix}, {"removesuffix", m_removesuffix},
    {"format", m_format}, {NULL, NULL}};
static const method_entry list_methods[] = {
    {"index", m_lindex}, {"count", m_lcount}, {"copy", m_lcopy}, {"append", NULL}, {"extend", NULL},
    {"insert", NULL}, {"pop", NULL}, {"remove", NULL}, {"reverse", NULL}, {"sort", NULL}, {"clear", NULL},
    {NULL, NULL}};
static const method_entry dict_methods[] = {
    {"keys", m_keys}, {"values", m_values}, {"items", m_items}, {"get", m_get}, {"copy", m_dcopy},
    {"clear", NULL}, {"pop", NULL}, {"popitem", NULL}, {"setdefault", NULL}, {"update", NULL}, {NULL, NULL}};
static const method_entry loop_methods[] = {{"cycle", m_cycle}, {NULL, NULL}};

jv jinja_method(jinja_render *r, jv obj, const char *name, bool *found) {
    const method_entry *table = obj.type == JV_STR ? str_methods
                                : obj.type == JV_DICT ? dict_methods
                                : obj.type == JV_LOOP ? loop_methods
                                : obj.u.l->kind <= JL_TUPLE ? list_methods : NULL;
    *found = false;
    for (size_t i = 0; table && table[i].name; i++) {
        if (strcmp(table[i].name, name) != 0) continue;
        if (obj.type == JV_LIST && obj.u.l->kind == JL_TUPLE && !table[i].fn) break; /* tuples lack them */
        *found = true;
        if (table[i].fn) return make_method(r, obj, table[i].name, table[i].fn);
        jv u = jv_undef_msg(r, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(obj));
        u.flag = 1;
        return u;
    }
    return jv_undef();
}

/* ---- filters ---- */

#define FILTER(name) static jv f_##name(jinja_render *r, jv v, const jinja_args *a)

static jv soft_str(jinja_render *r, jv v) { return jv_to_str(r, v); }

static int64_t py_len(jinja_render *r, jv v) {
    switch (v.type) {
    case JV_UNDEF: return 0;
    case JV_STR: return v.flag ? (int64_t)v.u.s.n : (int64_t)jinja_utf8_len(v.u.s.p, v.u.s.n);
    case JV_LIST: return (int64_t)v.u.l->n;
    case JV_DICT: return (int64_t)v.u.d->n;
    default: jinja_fail(r, "object of type '%s' has no len()", jv_type_name(v));
    }
}

FILTER(length) { jinja_check_args(r, a, "length", 0, NULL); return jv_int(py_len(r, v)); }
FILTER(string) { jinja_check_args(r, a, "string", 0, NULL); return soft_str(r, v); }
FILTER(safe) { jinja_check_args(r, a, "safe", 0, NULL); return soft_str(r, v); }
FILTER(upper) { jinja_check_args(r, a, "upper", 0, NULL); return change_case(r, soft_str(r, v), CASE_UPPER, 0); }
FILTER(lower) { jinja_check_args(r, a, "lower", 0, NULL); return change_case(r, soft_str(r, v), CASE_LOWER, 0); }
FILTER(capitalize) { jinja_check_args(r, a, "capitalize", 0, NULL); return change_case(r, soft_str(r, v), CASE_TITLE, 2); }

/* Jinja2's title filter: capitalizes after '-', whitespace and opening brackets. */
FILTER(title) {
    jinja_check_args(r, a, "title", 0, NULL);
    jv s = soft_str(r, v);
    strbuild b = sb_new(r, s.u.s.n * 3);
    bool word_start = true;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t c;
        i += jinja_utf8_decode(s.u.s.p + i, s.u.s.n - i, &c);
        bool boundary = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || jinja_is_space(c);
        case_kind kind = word_start ? CASE_UPPER : CASE_LOWER;
        const char *expanded = boundary ? NULL : special_case(c, kind);
        uint32_t m = boundary ? c : map_case(c, kind);
        word_start = boundary;
        char enc[4];
        if (expanded) sb_put(&b, expanded, strlen(expanded));
        else sb_put(&b, enc, sl_utf8_encode(m, enc));
    }
    return sb_done(&b);
}

FILTER(trim) {
    jinja_check_args(r, a, "trim", 1, (const char *const[]){"chars", NULL});
    return strip(r, soft_str(r, v), arg_or(a, 0, "chars", jv_none()), true, true);
}

FILTER(replace) {
    jinja_check_args(r, a, "replace", 3, (const char *const[]){"old", "new", "count", NULL});
    const jv *old = jinja_arg(a, 0, "old"), *new_ = jinja_arg(a, 1, "new");
    if (!old || !new_) jinja_fail(r, "replace filter needs 'old' and 'new'");
    jv count = arg_or(a, 2, "count", jv_none());
    return replace(r, soft_str(r, v), soft_str(r, *old), soft_str(r, *new_),
                   count.type == JV_NONE ? -1 : need_int(r, count, "replace count"));
}

FILTER(default) {
    jinja_check_args(r, a, "default", 2, (const char *const[]){"default_value", "boolean", NULL});
    jv def = arg_or(a, 0, "default_value", jv_str("", 0));
    bool boolean = jv_truthy(arg_or(a, 1, "boolean", jv_bool(false)));
    if (v.type == JV_UNDEF || (boolean && !jv_truthy(v))) return def;
    return v;
}

static jv list_of(jinja_render *r, jv v) {
    jv it = jinja_iterate(r, v);
    jv out = jv_list_new(r, it.u.l->n, JL_LIST);
    for (size_t i = 0; i < it.u.l->n; i++) out.u.l->items[out.u.l->n++] = it.u.l->items[i];
    return out;
}

FILTER(list) { jinja_check_args(r, a, "list", 0, NULL); return list_of(r, v); }

FILTER(first) {
    jinja_check_args(r, a, "first", 0, NULL);
    jv it = jinja_iterate(r, v);
    return it.u.l->n ? it.u.l->items[0] : jv_undef_msg(r, "No first item, sequence was empty.");
}

FILTER(last) {
    jinja_check_args(r, a, "last", 0, NULL);
    jv it = jinja_iterate(r, v);
    return it.u.l->n ? it.u.l->items[it.u.l->n - 1] : jv_undef_msg(r, "No last item, sequence was empty.");
}

FILTER(reverse) {
    jinja_check_args(r, a, "reverse", 0, NULL);
    if (v.type == JV_STR) {
        jv chars = jinja_iterate(r, v);
        strbuild b = sb_new(r, v.u.s.n);
        for (size_t i = chars.u.l->n; i-- > 0;) sb_put(&b, chars.u.l->items[i].u.s.p, chars.u.l->items[i].u.s.n);
        return sb_done(&b);
    }
    jv it = jinja_iterate(r, v);
    jv out = jv_list_new(r, it.u.l->n, JL_LIST);
    for (size_t i = it.u.l->n; i-- > 0;) out.u.l->items[out.u.l->n++] = it.u.l->items[i];
    return out;
}

/* Dotted attribute path ("a.b.0") looked up with getitem, as make_attrgetter. */
static jv attr_path(jinja_render *r, jv item, jv path) {
    if (path.type == JV_INT) return jinja_getitem(r, item, path);
    need_str(r, path, "attribute");
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t len = dot ? (size_t)(dot - p) : (size_t)(end - p);
        bool digits = len > 0;
        for (size_t i = 0; i < len; i++)
            if (p[i] < '0' || p[i] > '9') digits = false;
        jv key = digits ? jv_int(strtoll(p, NULL, 10)) : jv_str(p, len);
        item = jinja_getitem(r, item, key);
        if (!dot) break;
        p = dot + 1;
    }
    return item;
}

FILTER(join) {
    jinja_check_args(r, a, "join", 2, (const char *const[]){"d", "attribute", NULL});
    jv sep = soft_str(r, arg_or(a, 0, "d", jv_str("", 0)));
    jv items = jinja_iterate(r, v);
    const jv *attr = jinja_arg(a, 1, "attribute");
    if (attr) {
        jv mapped = jv_list_new(r, items.u.l->n, JL_LIST);
        for (size_t i = 0; i < items.u.l->n; i++) mapped.u.l->items[mapped.u.l->n++] = attr_path(r, items.u.l->items[i], *attr);
        items = mapped;
    }
    return join_strs(r, sep, items, true);
}

static jv call_filter_by_name(jinja_render *r, jv name, jv value, const jv *extra, size_t nextra) {
    need_str(r, name, "filter name");
    jinja_filter_fn fn = jinja_find_filter(name.u.s.p);
    if (!fn) jinja_fail(r, "No filter named '%.*s'.", (int)name.u.s.n, name.u.s.p);
    jinja_args a = {.pos = (jv *)extra, .npos = nextra};
    return fn(r, value, &a);
}

FILTER(map) {
    jv items = jinja_iterate(r, v);
    jv out = jv_list_new(r, items.u.l->n, JL_LIST);
    const jv *attr = NULL, *def = NULL;
    if (!a->npos) {
        jinja_check_args(r, a, "map", 0, (const char *const[]){"attribute", "default", NULL});
        attr = jinja_arg(a, 0, "attribute");
        def = jinja_arg(a, 99, "default");
        if (!attr) jinja_fail(r, "map requires a filter name or attribute=");
    } else if (a->nkw) {
        jinja_fail(r, "map: keyword arguments to the mapped filter are not supported");
    }
    for (size_t i = 0; i < items.u.l->n; i++) {
        jv item = items.u.l->items[i], res;
        if (attr) {
            res = attr_path(r, item, *attr);
            if (def && res.type == JV_UNDEF) res = *def;
        } else {
            res = call_filter_by_name(r, a->pos[0], item, a->pos + 1, a->npos - 1);
        }
        out.u.l->items[out.u.l->n++] = res;
    }
    return out;
}

static bool run_test_by_name(jinja_render *r, jv name, jv value, const jv *extra, size_t nextra) {
    need_str(r, name, "test name");
    jinja_test_fn fn = jinja_find_test(name.u.s.p);
    if (!fn) jinja_fail(r, "No test named '%.*s'.", (int)name.u.s.n, name.u.s.p);
    jinja_args a = {.pos = (jv *)extra, .npos = nextra};
    return fn(r, value, &a);
}

/* select / reject / selectattr / rejectattr */
static jv select_items(jinja_render *r, jv v, const jinja_args *a, bool by_attr, bool keep_when) {
    if (a->nkw) jinja_fail(r, "keyword arguments to select/reject filters are not supported");
    size_t first_test = by_attr ? 1 : 0;
    if (by_attr && !a->npos) jinja_fail(r, "selectattr/rejectattr need an attribute name");
    jv items = jinja_iterate(r, v);
    jv out = jv_list_new(r, items.u.l->n, JL_LIST);
    for (size_t i = 0; i < items.u.l->n; i++) {
        jv item = items.u.l->items[i];
        jv probe = by_attr ? attr_path(r, item, a->pos[0]) : item;
        bool pass = a->npos > first_test
                        ? run_test_by_name(r, a->pos[first_test], probe, a->pos + first_test + 1, a->npos - first_test - 1)
                        : jv_truthy(probe);
        if (pass == keep_when) out.u.l->items[out.u.l->n++] = item;
    }
    return out;
}
FILTER(select) { return select_items(r, v, a, false, true); }
FILTER(reject) { return select_items(r, v, a, false, false); }
FILTER(selectattr) { return select_items(r, v, a, true, true); }
FILTER(rejectattr) { return select_items(r, v, a, true, false); }

FILTER(tojson) {
    static const char *const kw[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    jinja_check_args(r, a, "tojson", 4, kw);
    bool ensure_ascii = jv_truthy(arg_or(a, 0, "ensure_ascii", jv_bool(false)));
    jv indent_v = arg_or(a, 1, "indent", jv_none());
    jv seps = arg_or(a, 2, "separators", jv_none());
    bool sort_keys = jv_truthy(arg_or(a, 3, "sort_keys", jv_bool(false)));
    const char *indent = NULL;
    if (indent_v.type == JV_INT || indent_v.type == JV_BOOL) {
        int64_t n = indent_v.type == JV_BOOL ? indent_v.u.b : indent_v.u.i;
        if (n > 64) jinja_fail(r, "tojson indent too large");
        char *sp = jinja_alloc(r, (size_t)(n > 0 ? n : 0) + 1);
        memset(sp, ' ', (size_t)(n > 0 ? n : 0));
        sp[n > 0 ? n : 0] = 0;
        indent = sp;
    } else if (indent_v.type == JV_STR) {
        indent = jv_str_copy(r, indent_v.u.s.p, indent_v.u.s.n).u.s.p;
    } else if (indent_v.type != JV_NONE) {
        jinja_fail(r, "tojson indent must be an int or a string");
    }
    const char *item_sep = indent ? "," : ", ", *key_sep = ": ";
    if (seps.type != JV_NONE) {
        if (seps.type != JV_LIST || seps.u.l->n != 2 || seps.u.l->items[0].type != JV_STR ||
            seps.u.l->items[1].type != JV_STR)
            jinja_fail(r, "tojson separators must be a pair of strings");
        item_sep = jv_str_copy(r, seps.u.l->items[0].u.s.p, seps.u.l->items[0].u.s.n).u.s.p;
        key_sep = jv_str_copy(r, seps.u.l->items[1].u.s.p, seps.u.l->items[1].u.s.n).u.s.p;
    }
    size_t mark = r->out.n;
    jv_write_json(r, &r->out, v, ensure_ascii, indent, item_sep, key_sep, sort_keys, 0);
    jv s = jv_str_copy(r, r->out.p + mark, r->out.n - mark);
    r->out.n = mark;
    return s;
}

/* Python int(str, base) accepting spaces, sign and underscores. */
static bool parse_py_int(const char *p, size_t n, int base, int64_t *out) {
    char buf[128];
    size_t k = 0;
    size_t b = 0, e = n;
    while (b < e && jinja_is_space((unsigned char)p[b])) b++;
    while (e > b && jinja_is_space((unsigned char)p[e - 1])) e--;
    if (b == e || e - b >= sizeof buf) return false;
    for (size_t i = b; i < e; i++) {
        if (p[i] == '_') {
            if (i == b || i + 1 == e || p[i - 1] == '_' || p[i + 1] == '_') return false;
            continue;
        }
        buf[k++] = p[i];
    }
    buf[k] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, base);
    if (*end || errno || end == buf || buf[0] == ' ' || (k > 1 && (buf[1] == 'x' || buf[1] == 'X') && base != 16))
        return false;
    *out = v;
    return true;
}

/* Python float(str): spaces, sign, underscores, inf/nan; no hex. */
static bool parse_py_float(jv s, double *out) {
    char buf[128];
    size_t b = 0, e = s.u.s.n;
    while (b < e && jinja_is_space((unsigned char)s.u.s.p[b])) b++;
    while (e > b && jinja_is_space((unsigned char)s.u.s.p[e - 1])) e--;
    if (b == e || e - b >= sizeof buf) return false;
    size_t k = 0;
    for (size_t i = b; i < e; i++) {
        char c = s.u.s.p[i];
        if (c == 'x' || c == 'X' || c == '(' || c == 'p' || c == 'P') return false;
        if (c != '_') buf[k++] = c;
    }
    buf[k] = 0;
    char *end;
    *out = strtod(buf, &end);
    return *end == 0 && end != buf;
}

FILTER(int) {
    jinja_check_args(r, a, "int", 2, (const char *const[]){"default", "base", NULL});
    jv def = arg_or(a, 0, "default", jv_int(0));
    int64_t base = need_int(r, arg_or(a, 1, "base", jv_int(10)), "int base");
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (v.type == JV_INT) return v;
    if (v.type == JV_BOOL) return jv_int(v.u.b);
    if (v.type == JV_FLOAT) {
        if (!isfinite(v.u.f)) return def;
        if (fabs(v.u.f) >= 9.2e18) jinja_fail(r, "integer overflow: values beyond 64 bits are not supported");
        return jv_int((int64_t)v.u.f);
    }
    if (v.type == JV_STR) {
        int64_t i;
        if (base >= 2 && base <= 36 && parse_py_int(v.u.s.p, v.u.s.n, (int)base, &i)) return jv_int(i);
        double d;
        if (parse_py_float(v, &d) && isfinite(d) && fabs(d) < 9.2e18) return jv_int((int64_t)d);
    }
    return def;
}

FILTER(float) {
    jinja_check_args(r, a, "float", 1, (const char *const[]){"default", NULL});
    jv def = arg_or(a, 0, "default", jv_float(0.0));
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (jv_is_number(v)) return jv_float(jv_as_double(v));
    double d;
    if (v.type == JV_STR && parse_py_float(v, &d)) return jv_float(d);
    return def;
}

FILTER(abs) {
    jinja_check_args(r, a, "abs", 0, NULL);
    if (v.type == JV_FLOAT) return jv_float(fabs(v.u.f));
    if (v.type == JV_INT || v.type == JV_BOOL) {
        int64_t i = v.type == JV_BOOL ? v.u.b : v.u.i;
        if (i == INT64_MIN) jinja_fail(r, "integer overflow: values beyond 64 bits are not supported");
        return jv_int(i < 0 ? -i : i);
    }
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    jinja_fail(r, "bad operand type for abs(): '%s'", jv_type_name(v));
}

FILTER(round) {
    jinja_check_args(r, a, "round", 2, (const char *const[]){"precision", "method", NULL});
    int64_t prec = need_int(r, arg_or(a, 0, "precision", jv_int(0)), "round precision");
    jv method = arg_or(a, 1, "method", jv_str("common", 6));
    need_str(r, method, "round method");
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (!jv_is_number(v)) jinja_fail(r, "type %s doesn't define __round__ method", jv_type_name(v));
    if (prec < -300 || prec > 300) jinja_fail(r, "round precision out of range");
    double x = jv_as_double(v), scale = pow(10.0, (double)prec);
    if (!strcmp(method.u.s.p, "common")) {
        if (v.type != JV_FLOAT && prec >= 0) return jv_int(v.type == JV_BOOL ? v.u.b : v.u.i);
        if (!isfinite(x)) return v;
        char buf[400];
        if (prec >= 0) {
            snprintf(buf, sizeof buf, "%.*f", (int)prec, x); /* correctly rounded, ties to even on exact halves */
            return jv_float(strtod(buf, NULL));
        }
        return jv_float(nearbyint(x * scale) / scale);
    }
    if (!strcmp(method.u.s.p, "floor")) return jv_float(floor(x * scale) / scale);
    if (!strcmp(method.u.s.p, "ceil")) return jv_float(ceil(x * scale) / scale);
    jinja_fail(r, "method must be common, ceil or floor");
}

FILTER(indent) {
    jinja_check_args(r, a, "indent", 3, (const char *const[]){"width", "first", "blank", NULL});
    jv width = arg_or(a, 0, "width", jv_int(4));
    bool first = jv_truthy(arg_or(a, 1, "first", jv_bool(false)));
    bool blank = jv_truthy(arg_or(a, 2, "blank", jv_bool(false)));
    jv ind;
    if (width.type == JV_STR) {
        ind = width;
    } else {
        int64_t w = need_int(r, width, "indent width");
        if (w > 4096) jinja_fail(r, "indent width too large");
        char *sp = jinja_alloc(r, (size_t)(w > 0 ? w : 0) + 1);
        memset(sp, ' ', (size_t)(w > 0 ? w : 0));
        ind = jv_str(sp, (size_t)(w > 0 ? w : 0));
    }
    jv s = soft_str(r, v);
    strbuild tmp = sb_new(r, s.u.s.n + 1); /* Jinja2 appends "\n" before splitlines */
    sb_put(&tmp, s.u.s.p, s.u.s.n);
    sb_put(&tmp, "\n", 1);
    jv lines = splitlines(r, sb_done(&tmp), false);
    size_t total = s.u.s.n + (lines.u.l->n + 1) * (ind.u.s.n + 1);
    strbuild b = sb_new(r, total);
    if (first) sb_put(&b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < lines.u.l->n; i++) {
        jv line = lines.u.l->items[i];
        if (i) {
            sb_put(&b, "\n", 1);
            if (blank || line.u.s.n) sb_put(&b, ind.u.s.p, ind.u.s.n);
        }
        sb_put(&b, line.u.s.p, line.u.s.n);
    }
    return sb_done(&b);
}

FILTER(escape) {
    jinja_check_args(r, a, "escape", 0, NULL);
    jv s = soft_str(r, v);
    strbuild b = sb_new(r, s.u.s.n * 5);
    for (size_t i = 0; i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': sb_put(&b, "&amp;", 5); break;
        case '<': sb_put(&b, "&lt;", 4); break;
        case '>': sb_put(&b, "&gt;", 4); break;
        case '"': sb_put(&b, "&#34;", 5); break;
        case '\'': sb_put(&b, "&#39;", 5); break;
        default: sb_put(&b, s.u.s.p + i, 1);
        }
    }
    return sb_done(&b);
}

FILTER(items) {
    jinja_check_args(r, a, "items", 0, NULL);
    if (v.type == JV_UNDEF) return jv_list_new(r, 0, JL_LIST);
    if (v.type != JV_DICT) jinja_fail(r, "Can only get item pairs from a mapping.");
    jv out = dict_view(r, v, JL_ITEMS);
    out.u.l->kind = JL_LIST;
    return out;
}

/* Sort key: lowercased strings unless case-sensitive. */
static jv sort_key(jinja_render *r, jv item, const jv *attr, bool case_sensitive) {
    jv k = attr ? attr_path(r, item, *attr) : item;
    if (!case_sensitive && k.type == JV_STR) k = change_case(r, k, CASE_LOWER, 0);
    return k;
}

/* Stable merge sort of items by keys (Python's sorted is stable). */
static void merge_sort(jinja_render *r, jv *items, jv *keys, size_t n, jv *tmp_i, jv *tmp_k) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(r, items, keys, h, tmp_i, tmp_k);
    merge_sort(r, items + h, keys + h, n - h, tmp_i, tmp_k);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        bool take_right = jv_compare(r, keys[j], keys[i], "<") < 0;
        tmp_i[k] = take_right ? items[j] : items[i];
        tmp_k[k++] = take_right ? keys[j++] : keys[i++];
    }
    while (i < h) { tmp_i[k] = items[i]; tmp_k[k++] = keys[i++]; }
    while (j < n) { tmp_i[k] = items[j]; tmp_k[k++] = keys[j++]; }
    memcpy(items, tmp_i, n * sizeof *items);
    memcpy(keys, tmp_k, n * sizeof *keys);
}

/* Stable sort of items[0..n) by keys (Python's sorted), then reversed when asked. */
static void sort_by_keys(jinja_render *r, jv *items, jv *keys, size_t n, bool reverse) {
    jv *ti = jinja_alloc(r, (n ? n : 1) * sizeof *ti), *tk = jinja_alloc(r, (n ? n : 1) * sizeof *tk);
    merge_sort(r, items, keys, n, ti, tk);
    if (reverse)
        for (size_t i = 0; i < n / 2; i++) {
            jv t = items[i];
            items[i] = items[n - 1 - i];
            items[n - 1 - i] = t;
        }
}

static jv sorted(jinja_render *r, jv items, const jv *attr, bool case_sensitive, bool reverse, bool by_value) {
    size_t n = items.u.l->n;
    jv out = jv_list_new(r, n, JL_LIST);
    jv *keys = jinja_alloc(r, (n ? n : 1) * sizeof *keys);
    for (size_t i = 0; i < n; i++) {
        jv item = items.u.l->items[i];
        out.u.l->items[out.u.l->n++] = item;
        jv k = by_value ? item.u.l->items[1] : item;
        keys[i] = sort_key(r, k, attr, case_sensitive);
    }
    if (reverse) { /* sorted(reverse=True) keeps stability: sort the reversed list, then reverse */
        for (size_t i = 0; i < n / 2; i++) {
            jv t = out.u.l->items[i]; out.u.l->items[i] = out.u.l->items[n - 1 - i]; out.u.l->items[n - 1 - i] = t;
            t = keys[i]; keys[i] = keys[n - 1 - i]; keys[n - 1 - i] = t;
        }
    }
    sort_by_keys(r, out.u.l->items, keys, n, reverse);
    return out;
}

FILTER(sort) {
    jinja_check_args(r, a, "sort", 3, (const char *const[]){"reverse", "case_sensitive", "attribute", NULL});
    bool reverse = jv_truthy(arg_or(a, 0, "reverse", jv_bool(false)));
    bool cs = jv_truthy(arg_or(a, 1, "case_sensitive", jv_bool(false)));
    return sorted(r, jinja_iterate(r, v), jinja_arg(a, 2, "attribute"), cs, reverse, false);
}

FILTER(dictsort) {
    jinja_check_args(r, a, "dictsort", 3, (const char *const[]){"case_sensitive", "by", "reverse", NULL});
    if (v.type != JV_DICT) jinja_fail(r, "dictsort needs a mapping");
    bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
    jv by = arg_or(a, 1, "by", jv_str("key", 3));
    bool reverse = jv_truthy(arg_or(a, 2, "reverse", jv_bool(false)));
    bool by_value = by.type == JV_STR && !strcmp(by.u.s.p, "value");
    if (!by_value && !(by.type == JV_STR && !strcmp(by.u.s.p, "key")))
        jinja_fail(r, "You can only sort by either \"key\" or \"value\"");
    jv items = dict_view(r, v, JL_ITEMS);
    /* sort by element 0 or 1 of each (key, value) pair */
    size_t n = items.u.l->n;
    jv out = jv_list_new(r, n, JL_LIST);
    jv *keys = jinja_alloc(r, (n ? n : 1) * sizeof *keys);
    for (size_t i = 0; i < n; i++) {
        out.u.l->items[out.u.l->n++] = items.u.l->items[i];
        keys[i] = sort_key(r, items.u.l->items[i].u.l->items[by_value ? 1 : 0], NULL, cs);
    }
    sort_by_keys(r, out.u.l->items, keys, n, reverse);
    return out;
}

FILTER(unique) {
    jinja_check_args(r, a, "unique", 2, (const char *const[]){"case_sensitive", "attribute", NULL});
    bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
    const jv *attr = jinja_arg(a, 1, "attribute");
    jv items = jinja_iterate(r, v);
    jv out = jv_list_new(r, items.u.l->n, JL_LIST);
    jv seen = jv_list_new(r, items.u.l->n, JL_LIST);
    for (size_t i = 0; i < items.u.l->n; i++) {
        jv k = sort_key(r, items.u.l->items[i], attr, cs);
        bool dup = false;
        for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = jv_equal(seen.u.l->items[j], k);
        if (dup) continue;
        seen.u.l->items[seen.u.l->n++] = k;
        out.u.l->items[out.u.l->n++] = items.u.l->items[i];
    }
    return out;
}

static jv min_max(jinja_render *r, jv v, const jinja_args *a, bool want_max) {
    jinja_check_args(r, a, want_max ? "max" : "min", 2, (const char *const[]){"case_sensitive", "attribute", NULL});
    bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
    const jv *attr = jinja_arg(a, 1, "attribute");
    jv items = jinja_iterate(r, v);
    if (!items.u.l->n) return jv_undef_msg(r, "No aggregated item, sequence was empty.");
    size_t best = 0;
    jv best_key = sort_key(r, items.u.l->items[0], attr, cs);
    for (size_t i = 1; i < items.u.l->n; i++) {
        jv k = sort_key(r, items.u.l->items[i], attr, cs);
        int c = jv_compare(r, k, best_key, want_max ? ">" : "<");
        if (want_max ? c > 0 : c < 0) { best = i; best_key = k; }
    }
    return items.u.l->items[best];
}
FILTER(max) { return min_max(r, v, a, true); }
FILTER(min) { return min_max(r, v, a, false); }

FILTER(sum) {
    jinja_check_args(r, a, "sum", 2, (const char *const[]){"attribute", "start", NULL});
    const jv *attr = jinja_arg(a, 0, "attribute");
    jv total = arg_or(a, 1, "start", jv_int(0));
    jv items = jinja_iterate(r, v);
    for (size_t i = 0; i < items.u.l->n; i++) {
        jv x = attr ? attr_path(r, items.u.l->items[i], *attr) : items.u.l->items[i];
        if (!jv_is_number(x) || !jv_is_number(total))
            jinja_fail(r, "unsupported operand type(s) for +: '%s' and '%s'", jv_type_name(total), jv_type_name(x));
        if (total.type == JV_FLOAT || x.type == JV_FLOAT) total = jv_float(jv_as_double(total) + jv_as_double(x));
        else {
            int64_t s;
            int64_t tx = total.type == JV_BOOL ? total.u.b : total.u.i, xx = x.type == JV_BOOL ? x.u.b : x.u.i;
            if (__builtin_add_overflow(tx, xx, &s)) jinja_fail(r, "integer overflow: values beyond 64 bits are not supported");
            total = jv_int(s);
        }
    }
    return total;
}

FILTER(center) {
    jinja_check_args(r, a, "center", 1, (const char *const[]){"width", NULL});
    int64_t width = need_int(r, arg_or(a, 0, "width", jv_int(80)), "center width");
    jv s = soft_str(r, v);
    int64_t len = (int64_t)jinja_utf8_len(s.u.s.p, s.u.s.n);
    if (width > 65536) jinja_fail(r, "center width too large");
    if (width <= len) return s;
    int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
    strbuild b = sb_new(r, s.u.s.n + (size_t)pad);
    for (int64_t i = 0; i < left; i++) sb_put(&b, " ", 1);
    sb_put(&b, s.u.s.p, s.u.s.n);
    for (int64_t i = 0; i < pad - left; i++) sb_put(&b, " ", 1);
    return sb_done(&b);
}

FILTER(wordcount) {
    jinja_check_args(r, a, "wordcount", 0, NULL);
    jv s = soft_str(r, v);
    int64_t count = 0;
    bool in_word = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t c;
        i += jinja_utf8_decode(s.u.s.p + i, s.u.s.n - i, &c);
        bool w = c == '_' || is_alnum_cp(c);
        if (w && !in_word) count++;
        in_word = w;
    }
    return jv_int(count);
}

FILTER(attr) {
    jinja_check_args(r, a, "attr", 1, NULL);
    if (!a->npos) jinja_fail(r, "attr filter needs an attribute name");
    jv name = need_str(r, a->pos[0], "attribute name");
    return jinja_getattr(r, v, name.u.s.p, name.u.s.n);
}

FILTER(format) {
    if (a->nkw) jinja_fail(r, "format filter with keyword arguments is not supported");
    jv fmt = soft_str(r, v);
    jv tuple = jv_list_new(r, a->npos, JL_TUPLE);
    for (size_t i = 0; i < a->npos; i++) tuple.u.l->items[tuple.u.l->n++] = a->pos[i];
    return jinja_format_percent(r, fmt, tuple);
}

FILTER(batch) {
    jinja_check_args(r, a, "batch", 2, (const char *const[]){"linecount", "fill_with", NULL});
    int64_t size = need_int(r, arg_or(a, 0, "linecount", jv_undef_msg(r, "batch needs linecount")), "batch linecount");
    if (size <= 0) jinja_fail(r, "batch linecount must be positive");
    const jv *fill = jinja_arg(a, 1, "fill_with");
    jv items = jinja_iterate(r, v);
    jv out = jv_list_new(r, 4, JL_LIST);
    jv cur = jv_undef();
    for (size_t i = 0; i < items.u.l->n; i++) {
        if (i % (size_t)size == 0) {
            cur = jv_list_new(r, (size_t)size < 64 ? (size_t)size : 64, JL_LIST);
            jv_list_push(r, out, cur);
        }
        jv_list_push(r, cur, items.u.l->items[i]);
    }
    if (fill && cur.type == JV_LIST)
        while (cur.u.l->n < (size_t)size) jv_list_push(r, cur, *fill);
    return out;
}

typedef struct filter_entry {
    const char *name;
    jinja_filter_fn fn;
} filter_entry;

static const filter_entry filters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"forceescape", f_escape}, {"format", f_format},
    {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last},
    {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min},
    {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
    {"round", f_round}, {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string}, {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim},
    {"unique", f_unique}, {"upper", f_upper}, {"wordcount", f_wordcount}, {NULL, NULL}};

jinja_filter_fn jinja_find_filter(const char *name) {
    for (size_t i = 0; filters[i].name; i++)
        if (!strcmp(filters[i].name, name)) return filters[i].fn;
    return NULL;
}

/* ---- tests ---- */

#define TEST(name) static bool t_##name(jinja_render *r, jv v, const jinja_args *a)

static jv test_arg(jinja_render *r, const jinja_args *a, const char *test) {
    if (a->nkw || a->npos != 1) jinja_fail(r, "test '%s' takes exactly one argument", test);
    return a->pos[0];
}
static void no_args(jinja_render *r, const jinja_args *a, const char *test) {
    if (a->nkw || a->npos) jinja_fail(r, "test '%s' takes no arguments", test);
}

TEST(defined) { no_args(r, a, "defined"); return v.type != JV_UNDEF; }
TEST(undefined) { no_args(r, a, "undefined"); return v.type == JV_UNDEF; }
TEST(none) { no_args(r, a, "none"); return v.type == JV_NONE; }
TEST(boolean) { no_args(r, a, "boolean"); return v.type == JV_BOOL; }
TEST(true) { no_args(r, a, "true"); return v.type == JV_BOOL && v.u.b; }
TEST(false) { no_args(r, a, "false"); return v.type == JV_BOOL && !v.u.b; }
TEST(integer) { no_args(r, a, "integer"); return v.type == JV_INT; }
TEST(float) { no_args(r, a, "float"); return v.type == JV_FLOAT; }
TEST(number) { no_args(r, a, "number"); return jv_is_number(v); }
TEST(string) { no_args(r, a, "string"); return v.type == JV_STR; }
TEST(mapping) { no_args(r, a, "mapping"); return v.type == JV_DICT; }
TEST(iterable) { no_args(r, a, "iterable"); return v.type == JV_STR || v.type == JV_LIST || v.type == JV_DICT || v.type == JV_UNDEF; }
TEST(sequence) {
    no_args(r, a, "sequence");
    return v.type == JV_STR || v.type == JV_DICT || v.type == JV_UNDEF || (v.type == JV_LIST && v.u.l->kind <= JL_TUPLE);
}
TEST(callable) { no_args(r, a, "callable"); return v.type == JV_FUNC || v.type == JV_UNDEF; }

static int64_t int_for_test(jinja_render *r, jv v, const char *test, double *f, bool *is_float) {
    if (v.type == JV_UNDEF) jinja_fail(r, "%.*s", (int)v.u.s.n, v.u.s.p);
    if (!jv_is_number(v)) jinja_fail(r, "test '%s' needs a number, got %s", test, jv_type_name(v));
    *is_float = v.type == JV_FLOAT;
    *f = jv_as_double(v);
    return v.type == JV_BOOL ? v.u.b : v.type == JV_INT ? v.u.i : 0;
}
TEST(even) {
    no_args(r, a, "even");
    double f; bool fl;
    int64_t i = int_for_test(r, v, "even", &f, &fl);
    return fl ? fmod(f, 2.0) == 0 : i % 2 == 0;
}
TEST(odd) {
    no_args(r, a, "odd");
    double f; bool fl;
    int64_t i = int_for_test(r, v, "odd", &f, &fl);
    return fl ? fabs(fmod(f, 2.0)) == 1 : i % 2 != 0;
}
TEST(divisibleby) {
    jv d = test_arg(r, a, "divisibleby");
    double f, g; bool fl, gl;
    int64_t i = int_for_test(r, v, "divisibleby", &f, &fl), j = int_for_test(r, d, "divisibleby", &g, &gl);
    if ((gl ? g : (double)j) == 0) jinja_fail(r, "integer division or modulo by zero");
    if (fl || gl) return fmod(fl ? f : (double)i, gl ? g : (double)j) == 0;
    return j == -1 || i % j == 0;
}
TEST(eq) { return jv_equal(v, test_arg(r, a, "eq")); }
TEST(ne) { return !jv_equal(v, test_arg(r, a, "ne")); }
TEST(lt) { return jv_compare(r, v, test_arg(r, a, "lt"), "<") < 0; }
TEST(le) { return jv_compare(r, v, test_arg(r, a, "le"), "<=") <= 0; }
TEST(gt) { return jv_compare(r, v, test_arg(r, a, "gt"), ">") > 0; }
TEST(ge) { return jv_compare(r, v, test_arg(r, a, "ge"), ">=") >= 0; }
TEST(in) {
    jv seq = test_arg(r, a, "in");
    if (seq.type == JV_STR) {
        if (v.type != JV_STR) jinja_fail(r, "'in <string>' requires string as left operand, not %s", jv_type_name(v));
        return !v.u.s.n || memmem(seq.u.s.p, seq.u.s.n, v.u.s.p, v.u.s.n);
    }
    if (seq.type == JV_DICT) return jv_dict_get(seq, v) != NULL;
    jv items = jinja_iterate(r, seq);
    for (size_t i = 0; i < items.u.l->n; i++)
        if (jv_equal(v, items.u.l->items[i])) return true;
    return false;
}
TEST(sameas) {
    jv o = test_arg(r, a, "sameas");
    if (v.type != o.type) return false;
    switch (v.type) {
    case JV_NONE: case JV_UNDEF: return v.type == JV_NONE;
    case JV_BOOL: return v.u.b == o.u.b;
    case JV_INT: return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython's small-int cache */
    case JV_STR: return v.u.s.p == o.u.s.p && v.u.s.n == o.u.s.n;
    case JV_LIST: return v.u.l == o.u.l;
    case JV_DICT: case JV_NS: return v.u.d == o.u.d;
    case JV_FUNC: return v.u.fn == o.u.fn;
    default: return false;
    }
}
TEST(lower) { no_args(r, a, "lower"); return jv_truthy(str_pred(jv_to_str(r, v), 5)); }
TEST(upper) { no_args(r, a, "upper"); return jv_truthy(str_pred(jv_to_str(r, v), 4)); }
TEST(escaped) { no_args(r, a, "escaped"); (void)v; return false; }
TEST(filter) { no_args(r, a, "filter"); return v.type == JV_STR && jinja_find_filter(v.u.s.p) != NULL; }
TEST(test) { no_args(r, a, "test"); return v.type == JV_STR && jinja_find_test(v.u.s.p) != NULL; }

typedef struct test_entry {
    const char *name;
    jinja_test_fn fn;
} test_entry;

static const test_entry tests[] = {
    {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby},
    {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"escaped", t_escaped}, {"even", t_even}, {"false", t_false},
    {"float", t_float}, {"ge", t_ge}, {">=", t_ge}, {"gt", t_gt}, {">", t_gt}, {"greaterthan", t_gt},
    {"in", t_in}, {"integer", t_integer}, {"iterable", t_iterable}, {"le", t_le}, {"<=", t_le},
    {"lower", t_lower}, {"lt", t_lt}, {"<", t_lt}, {"lessthan", t_lt}, {"mapping", t_mapping}, {"ne", t_ne},
    {"!=", t_ne}, {"none", t_none}, {"number", t_number}, {"odd", t_odd}, {"sameas", t_sameas},
    {"sequence", t_sequence}, {"string", t_string}, {"true", t_true}, {"undefined", t_undefined},
    {"upper", t_upper}, {"test", t_test}, {"filter", t_filter}, {NULL, NULL}};

jinja_test_fn jinja_find_test(const char *name) {
    for (size_t i = 0; tests[i].name; i++)
        if (!strcmp(tests[i].name, name)) return tests[i].fn;
    return NULL;
}

/* ---- globals ---- */

static jv g_range(jinja_render *r, jv self, const jinja_args *a) {
    (void)self;
    jinja_check_args(r, a, "range", 3, NULL);
    if (!a->npos) jinja_fail(r, "range expected at least 1 argument, got 0");
    int64_t start = 0, stop, stepv = 1;
    if (a->npos == 1) stop = need_int(r, a->pos[0], "range");
    else {
        start = need_int(r, a->pos[0], "range");
        stop = need_int(r, a->pos[1], "range");
        if (a->npos == 3) stepv = need_int(r, a->pos[2], "range");
    }
    if (!stepv) jinja_fail(r, "range() arg 3 must not be zero");
    double count = stepv > 0 ? ceil(((double)stop - (double)start) / (double)stepv)
                             : ceil(((double)start - (double)stop) / (double)-stepv);
    if (count < 0) count = 0;
    if (count > JINJA_MAX_RANGE)
        jinja_fail(r, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", JINJA_MAX_RANGE);
    jv out = jv_list_new(r, (size_t)count, JL_LIST);
    for (int64_t i = 0; i < (int64_t)count; i++) out.u.l->items[out.u.l->n++] = jv_int(start + i * stepv);
    return out;
}

/* dict(mapping_or_pairs, **kwargs) -- also the contents of namespace(). */
static jv build_dict(jinja_render *r, const jinja_args *a, const char *what) {
    if (a->npos > 1) jinja_fail(r, "%s expected at most 1 argument, got %zu", what, a->npos);
    jv d = jv_dict_new(r, a->nkw + 4);
    if (a->npos) {
        jv src = a->pos[0];
        if (src.type == JV_DICT || src.type == JV_NS) {
            for (size_t i = 0; i < src.u.d->n; i++) jv_dict_set(r, d, src.u.d->keys[i], src.u.d->vals[i]);
        } else {
            jv pairs = jinja_iterate(r, src);
            for (size_t i = 0; i < pairs.u.l->n; i++) {
                jv p = jinja_iterate(r, pairs.u.l->items[i]);
                if (p.u.l->n != 2)
                    jinja_fail(r, "dictionary update sequence element #%zu has length %zu; 2 is required", i, p.u.l->n);
                jv_dict_set(r, d, p.u.l->items[0], p.u.l->items[1]);
            }
        }
    }
    for (size_t k = 0; k < a->nkw; k++) jv_dict_set(r, d, jv_str(a->kwnames[k], strlen(a->kwnames[k])), a->kwvals[k]);
    return d;
}

static jv g_dict(jinja_render *r, jv self, const jinja_args *a) {
    (void)self;
    return build_dict(r, a, "dict");
}

static jv g_namespace(jinja_render *r, jv self, const jinja_args *a) {
    (void)self;
    jv d = build_dict(r, a, "namespace");
    for (size_t i = 0; i < d.u.d->n; i++) {
        jv k = d.u.d->keys[i];
        if (k.type == JV_STR && k.u.s.n && k.u.s.p[0] == '_')
            jinja_fail(r, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '%.*s'. "
                          "Please rename the attribute.", (int)k.u.s.n, k.u.s.p);
    }
    d.type = JV_NS;
    return d;
}

static jv g_raise_exception(jinja_render *r, jv self, const jinja_args *a) {
    (void)self;
    jinja_check_args(r, a, "raise_exception", 1, (const char *const[]){"message", NULL});
    const jv *msg = jinja_arg(a, 0, "message");
    if (!msg) jinja_fail(r, "raise_exception() missing 1 required positional argument: 'message'");
    jv s = jv_to_str(r, *msg);
    jinja_raise_user(r, s.u.s.p, s.u.s.n);
}

static jv g_strftime_now(jinja_render *r, jv self, const jinja_args *a) {
    (void)self;
    jinja_check_args(r, a, "strftime_now", 1, (const char *const[]){"format", NULL});
    const jv *fmt = jinja_arg(a, 0, "format");
    if (!fmt) jinja_fail(r, "strftime_now() missing 1 required positional argument: 'format'");
    need_str(r, *fmt, "strftime_now format");
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char buf[512];
    size_t n = fmt->u.s.n ? strftime(buf, sizeof buf, jv_str_copy(r, fmt->u.s.p, fmt->u.s.n).u.s.p, &tm) : 0;
    if (fmt->u.s.n && !n) jinja_fail(r, "strftime_now: format produced no output or is too long");
    return jv_str_copy(r, buf, n);
}

jv jinja_global(jinja_render *r, const char *name) {
    static const struct {
        const char *name;
        jinja_builtin_fn fn;
    } globals[] = {{"range", g_range}, {"dict", g_dict}, {"namespace", g_namespace},
                   {"raise_exception", g_raise_exception}, {"strftime_now", g_strftime_now}, {NULL, NULL}};
    for (size_t i = 0; globals[i].name; i++)
        if (!strcmp(globals[i].name, name)) return make_method(r, jv_undef(), globals[i].name, globals[i].fn);
    return jv_undef();
}
