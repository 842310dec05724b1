/* grammar.c -- building and laying out byte-level context-free grammars.
 *
 * Owns the sl_grammar arrays (classes, elements, alternatives, rules) and the
 * constructions every front end shares: literals, Unicode code point sets as
 * UTF-8 byte sequences, repetition, and the final layout the matcher reads.
 *
 * Code point sets: a set of ranges is split by UTF-8 length, then each range
 * is split until every byte position varies independently (the classic
 * "UTF-8 ranges" construction), so [lo, hi] becomes a few alternatives of
 * byte classes, e.g. U+0080..U+07FF -> [C2-DF][80-BF].
 *
 * Repetition: X* is S ::= <empty> | S X (left recursion: the Earley matcher
 * completes it in constant work per item, where right recursion would chain),
 * X+ is X S, X? is O ::= <empty> | X. Any other count, X{m,n}, is one counted
 * repetition rule R whose one alternative is X, flagged with (m, n): the
 * matcher's item waiting on X inside R carries how many copies it has read
 * (matcher.c). Nesting optionals instead (X O_{n-1}, ...) would spend n rules
 * on a bound and give every position of a bounded string its own grammar
 * position, so its own mask cache entries; a count lets the mask cache treat
 * counts far from both bounds alike (mask_cache.c).
 *
 * Finalize drops alternatives that can never match (a rule that derives no
 * finite string, an empty class), so every state the matcher keeps can still
 * reach the end; the mask relies on this to call a byte allowed as soon as
 * one item can scan it. */
#include "grammar/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arrays ------------------------------------------------------------- */

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem_bytes, sl_err *err) {
    if (need <= *cap) return 0;
    uint32_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) cap2 *= 2;
    void *q = realloc(*p, (size_t)cap2 * elem_bytes);
    if (!q) return sl_err_set(err, SL_ENOMEM, "grammar: out of memory growing to %u entries", cap2);
    *p = q;
    *cap = cap2;
    return 0;
}

int sl_gseq_push(sl_gseq *s, sl_gelem e, sl_err *err) {
    int rc = grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v, err);
    if (rc) return rc;
    s->v[s->n++] = e;
    return 0;
}

void sl_gseq_free(sl_gseq *s) {
    free(s->v);
    *s = (sl_gseq){0};
}

int sl_grammar_create(sl_grammar **out, sl_err *err) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : sl_err_set(err, SL_ENOMEM, "grammar: out of memory");
}

void sl_grammar_free(sl_grammar *g) {
    if (!g) return;
    for (uint32_t i = 0; i < g->n_rules; i++) free(g->rules[i].name);
    free(g->classes);
    free(g->elems);
    free(g->alts);
    free(g->rules);
    free(g);
}

/* ---- rules, alternatives, classes --------------------------------------- */

static int rule_add(sl_grammar *g, const char *name, size_t name_len, uint32_t *rule, sl_err *err) {
    int rc = grow((void **)&g->rules, &g->cap_rules, g->n_rules + 1, sizeof *g->rules, err);
    if (rc) return rc;
    char *copy = strndup(name, name_len);
    if (!copy) return sl_err_set(err, SL_ENOMEM, "grammar: out of memory");
    g->rules[g->n_rules] = (sl_grule){.name = copy};
    *rule = g->n_rules++;
    return 0;
}

int sl_grammar_rule(sl_grammar *g, const char *name, size_t name_len, uint32_t pos, uint32_t *rule,
                    sl_err *err) {
    for (uint32_t i = 0; i < g->n_rules; i++) {
        if (strlen(g->rules[i].name) == name_len && memcmp(g->rules[i].name, name, name_len) == 0) {
            *rule = i;
            return 0;
        }
    }
    int rc = rule_add(g, name, name_len, rule, err);
    if (rc == 0) g->rules[*rule].ref_pos = pos;
    return rc;
}

int sl_grammar_rule_new(sl_grammar *g, const char *base, uint32_t *rule, sl_err *err) {
    char name[96]; /* '#' cannot appear in a GBNF name, so helpers never clash */
    int n = snprintf(name, sizeof name, "%.64s#%u", base, g->n_helpers++);
    int rc = rule_add(g, name, (size_t)n, rule, err);
    if (rc == 0) g->rules[*rule].defined = true;
    return rc;
}

int sl_grammar_add_alt(sl_grammar *g, uint32_t rule, const sl_gelem *elems, uint32_t n, sl_err *err) {
    if ((uint64_t)g->n_elems + n > SL_GRAMMAR_MAX_ELEMS)
        return sl_err_set(err, SL_ENOSPACE,
                          "grammar: more than %u elements after expanding repetitions; "
                          "use smaller repetition counts or a simpler schema", SL_GRAMMAR_MAX_ELEMS);
    int rc = grow((void **)&g->elems, &g->cap_elems, g->n_elems + n, sizeof *g->elems, err);
    if (!rc) rc = grow((void **)&g->alts, &g->cap_alts, g->n_alts + 1, sizeof *g->alts, err);
    if (rc) return rc;
    if (n) memcpy(g->elems + g->n_elems, elems, n * sizeof *elems);
    g->alts[g->n_alts++] = (sl_galt){.rule = rule, .first_elem = g->n_elems, .n_elems = n};
    g->n_elems += n;
    return 0;
}

int sl_grammar_class(sl_grammar *g, const sl_gclass *c, sl_gelem *out, sl_err *err) {
    int rc = grow((void **)&g->classes, &g->cap_classes, g->n_classes + 1, sizeof *g->classes, err);
    if (rc) return rc;
    g->classes[g->n_classes] = *c;
    *out = (sl_gelem){.kind = SL_GELEM_CLASS, .value = g->n_classes++};
    return 0;
}

int sl_grammar_push_literal(sl_grammar *g, sl_gseq *seq, const uint8_t *s, size_t n, sl_err *err) {
    for (size_t i = 0; i < n; i++) {
        sl_gclass c = {0};
        sl_gclass_add_range(&c, s[i], s[i]);
        sl_gelem e;
        int rc = sl_grammar_class(g, &c, &e, err);
        if (!rc) rc = sl_gseq_push(seq, e, err);
        if (rc) return rc;
    }
    return 0;
}

/* ---- code point sets as UTF-8 ------------------------------------------- */

int sl_grammar_utf8_encode(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) { b[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { b[0] = (uint8_t)(0xC0 | cp >> 6); b[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* The alternatives being collected for one code point set. */
typedef struct cp_build {
    sl_grammar *g;
    uint32_t rule;      /* helper rule for multi-byte sequences, UINT32_MAX until needed */
    sl_gclass ascii;    /* all one-byte sequences merged */
    sl_err *err;
} cp_build;

static int cp_emit(cp_build *b, uint32_t lo, uint32_t hi) {
    uint8_t l[4], h[4];
    int n = sl_grammar_utf8_encode(lo, l);
    sl_grammar_utf8_encode(hi, h);
    if (n == 1) {
        sl_gclass_add_range(&b->ascii, l[0], h[0]);
        return 0;
    }
    int rc = b->rule == UINT32_MAX ? sl_grammar_rule_new(b->g, "utf8", &b->rule, b->err) : 0;
    sl_gelem seq[4];
    for (int i = 0; i < n && !rc; i++) {
        sl_gclass c = {0};
        sl_gclass_add_range(&c, l[i], h[i]);
        rc = sl_grammar_class(b->g, &c, &seq[i], b->err);
    }
    return rc ? rc : sl_grammar_add_alt(b->g, b->rule, seq, (uint32_t)n, b->err);
}

/* lo..hi have the same UTF-8 length; split until each byte varies alone. */
static int cp_split(cp_build *b, uint32_t lo, uint32_t hi) {
    for (int i = 1; i < 4; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) == (hi & ~m)) continue;
        if ((lo & m) != 0) {
            int rc = cp_split(b, lo, lo | m);
            return rc ? rc : cp_split(b, (lo | m) + 1, hi);
        }
        if ((hi & m) != m) {
            int rc = cp_split(b, lo, (hi & ~m) - 1);
            return rc ? rc : cp_split(b, hi & ~m, hi);
        }
    }
    return cp_emit(b, lo, hi);
}

static int cp_range(cp_build *b, uint32_t lo, uint32_t hi) {
    static const uint32_t bounds[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    for (int i = 0; i < 4 && lo <= hi; i++) {
        if (lo > bounds[i]) continue;
        uint32_t top = hi < bounds[i] ? hi : bounds[i];
        int rc = cp_split(b, lo, top);
        if (rc) return rc;
        lo = top + 1;
    }
    return 0;
}

/* Emits one range of code points, leaving out the surrogates. */
static int cp_emit_range(cp_build *b, uint32_t lo, uint32_t hi) {
    int rc = 0;
    if (lo < 0xD800 && hi >= 0xD800) {
        rc = cp_range(b, lo, 0xD7FF);
        lo = 0xD800;
    }
    if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
    return rc || lo > hi ? rc : cp_range(b, lo, hi);
}

static int cmp_range(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Sorts and merges the ranges, complements them when negate, and emits
 * each resulting range. */
static int cp_walk(cp_build *b, const uint32_t *ranges, size_t n_ranges, bool negate) {
    uint32_t *r = malloc((n_ranges ? n_ranges : 1) * 2 * sizeof *r);
    if (!r) return sl_err_set(b->err, SL_ENOMEM, "grammar: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < n_ranges; i++) {
        uint32_t lo = ranges[2 * i], hi = ranges[2 * i + 1] > 0x10FFFF ? 0x10FFFF : ranges[2 * i + 1];
        if (lo > hi) continue;
        r[2 * n] = lo;
        r[2 * n++ + 1] = hi;
    }
    qsort(r, n, 2 * sizeof *r, cmp_range);
    size_t m = 0; /* merged count */
    for (size_t i = 0; i < n; i++) {
        if (m && r[2 * i] <= r[2 * (m - 1) + 1] + 1) {
            if (r[2 * i + 1] > r[2 * (m - 1) + 1]) r[2 * (m - 1) + 1] = r[2 * i + 1];
        } else {
            r[2 * m] = r[2 * i];
            r[2 * m++ + 1] = r[2 * i + 1];
        }
    }
    int rc = 0;
    uint32_t next = 0; /* first code point not yet covered (negate) */
    for (size_t i = 0; i < m && !rc; i++) {
        if (!negate) rc = cp_emit_range(b, r[2 * i], r[2 * i + 1]);
        else if (r[2 * i] > next) rc = cp_emit_range(b, next, r[2 * i] - 1);
        next = r[2 * i + 1] + 1;
    }
    if (!rc && negate && next <= 0x10FFFF) rc = cp_emit_range(b, next, 0x10FFFF);
    free(r);
    return rc;
}

int sl_grammar_codepoints(sl_grammar *g, const uint32_t *ranges, size_t n_ranges, bool negate,
                          sl_gelem *out, sl_err *err) {
    cp_build b = {.g = g, .rule = UINT32_MAX, .err = err};
    int rc = cp_walk(&b, ranges, n_ranges, negate);
    if (rc) return rc;
    if (b.rule == UINT32_MAX) return sl_grammar_class(g, &b.ascii, out, err);
    sl_gelem a;
    bool any_ascii = b.ascii.bits[0] | b.ascii.bits[1];
    if (any_ascii) rc = sl_grammar_class(g, &b.ascii, &a, err);
    if (!rc && any_ascii) rc = sl_grammar_add_alt(g, b.rule, &a, 1, err);
    *out = (sl_gelem){.kind = SL_GELEM_RULE, .value = b.rule};
    return rc;
}

/* ---- repetition --------------------------------------------------------- */

static int wrap_rule(sl_grammar *g, const char *base, const sl_gelem *seq, uint32_t n, sl_gelem *out,
                     sl_err *err) {
    uint32_t r;
    int rc = sl_grammar_rule_new(g, base, &r, err);
    if (!rc) rc = sl_grammar_add_alt(g, r, seq, n, err);
    *out = (sl_gelem){.kind = SL_GELEM_RULE, .value = r};
    return rc;
}

/* S ::= <empty> | S x */
static int star(sl_grammar *g, sl_gelem x, sl_gelem *out, sl_err *err) {
    uint32_t r;
    int rc = sl_grammar_rule_new(g, "star", &r, err);
    sl_gelem alt[2] = {{.kind = SL_GELEM_RULE, .value = r}, x};
    if (!rc) rc = sl_grammar_add_alt(g, r, NULL, 0, err);
    if (!rc) rc = sl_grammar_add_alt(g, r, alt, 2, err);
    *out = alt[0];
    return rc;
}

/* O ::= <empty> | x */
static int optional(sl_grammar *g, sl_gelem x, sl_gelem *out, sl_err *err) {
    uint32_t r;
    int rc = sl_grammar_rule_new(g, "opt", &r, err);
    if (!rc) rc = sl_grammar_add_alt(g, r, NULL, 0, err);
    if (!rc) rc = sl_grammar_add_alt(g, r, &x, 1, err);
    *out = (sl_gelem){.kind = SL_GELEM_RULE, .value = r};
    return rc;
}

/* R ::= x, read min..max times (the matcher counts) */
static int counted(sl_grammar *g, sl_gelem x, uint32_t min, uint32_t max, sl_gelem *out, sl_err *err) {
    uint32_t r;
    int rc = sl_grammar_rule_new(g, "rep", &r, err);
    if (!rc) rc = sl_grammar_add_alt(g, r, &x, 1, err);
    if (rc) return rc;
    g->rules[r].repeat = true;
    g->rules[r].rep_min = min;
    g->rules[r].rep_max = max;
    *out = (sl_gelem){.kind = SL_GELEM_RULE, .value = r};
    return 0;
}

int sl_grammar_repeat(sl_grammar *g, const sl_gelem *seq, uint32_t n, uint32_t min, uint32_t max,
                      sl_gelem *out, sl_err *err) {
    if (min > SL_GRAMMAR_MAX_REPEAT || (max != UINT32_MAX && max > SL_GRAMMAR_MAX_REPEAT))
        return sl_err_set(err, SL_ENOTSUP, "grammar: repetition count above %d is not supported",
                          SL_GRAMMAR_MAX_REPEAT);
    if (max < min) return sl_err_set(err, SL_EINVAL, "grammar: repetition {%u,%u} has max below min", min, max);
    if (max == 0) return wrap_rule(g, "rep", NULL, 0, out, err); /* x{0}: the empty string */
    sl_gelem x;
    int rc = n == 1 ? (x = seq[0], 0) : wrap_rule(g, "group", seq, n, &x, err);
    if (rc) return rc;
    if (max == 1) return min == 1 ? (*out = x, 0) : optional(g, x, out, err);
    if (max != UINT32_MAX || min >= 2) return counted(g, x, min, max, out, err);
    sl_gelem tail;
    rc = star(g, x, &tail, err);
    if (rc || min == 0) return *out = tail, rc;
    sl_gelem body[2] = {x, tail}; /* x+ */
    return wrap_rule(g, "rep", body, 2, out, err);
}

/* ---- finalize ----------------------------------------------------------- */

static bool elem_productive(const sl_grammar *g, sl_gelem e) {
    if (e.kind == SL_GELEM_RULE) return g->rules[e.value].productive;
    const sl_gclass *c = &g->classes[e.value];
    return (c->bits[0] | c->bits[1] | c->bits[2] | c->bits[3]) != 0;
}

static bool alt_productive(const sl_grammar *g, const sl_galt *a) {
    for (uint32_t i = 0; i < a->n_elems; i++)
        if (!elem_productive(g, g->elems[a->first_elem + i])) return false;
    return true;
}

static bool alt_nullable(const sl_grammar *g, const sl_galt *a) {
    for (uint32_t i = 0; i < a->n_elems; i++) {
        sl_gelem e = g->elems[a->first_elem + i];
        if (e.kind != SL_GELEM_RULE || !g->rules[e.value].nullable) return false;
    }
    return true;
}

/* Fixpoints: which rules derive some string, which derive the empty one. */
static void compute_flags(sl_grammar *g) {
    for (uint32_t r = 0; r < g->n_rules; r++) /* x{0,n} derives the empty string whatever x is */
        if (g->rules[r].repeat && g->rules[r].rep_min == 0) g->rules[r].nullable = g->rules[r].productive = true;
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t i = 0; i < g->n_alts; i++) {
            sl_grule *r = &g->rules[g->alts[i].rule];
            if (!r->productive && alt_productive(g, &g->alts[i])) r->productive = changed = true;
            if (!r->nullable && alt_nullable(g, &g->alts[i])) r->nullable = changed = true;
        }
    }
}

/* Rewrites elems/alts: productive alternatives grouped by rule (in their
 * order of definition), each followed by an END element. */
static int layout(sl_grammar *g, sl_err *err) {
    uint32_t n_keep = 0, n_elems = 0;
    for (uint32_t r = 0; r < g->n_rules; r++) g->rules[r].n_alts = 0;
    for (uint32_t i = 0; i < g->n_alts; i++) {
        if (!alt_productive(g, &g->alts[i])) continue;
        n_keep++;
        n_elems += g->alts[i].n_elems + 1;
        g->rules[g->alts[i].rule].n_alts++;
    }
    sl_galt *alts = malloc((n_keep ? n_keep : 1) * sizeof *alts);
    sl_gelem *elems = malloc((n_elems ? n_elems : 1) * sizeof *elems);
    if (!alts || !elems) {
        free(alts);
        free(elems);
        return sl_err_set(err, SL_ENOMEM, "grammar: out of memory laying out %u elements", n_elems);
    }
    uint32_t at = 0;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        g->rules[r].first_alt = at;
        at += g->rules[r].n_alts;
        g->rules[r].n_alts = 0;
    }
    uint32_t e = 0;
    for (uint32_t i = 0; i < g->n_alts; i++) {
        const sl_galt *a = &g->alts[i];
        if (!alt_productive(g, a)) continue;
        sl_grule *r = &g->rules[a->rule];
        alts[r->first_alt + r->n_alts++] = (sl_galt){.rule = a->rule, .first_elem = e, .n_elems = a->n_elems};
        if (a->n_elems) memcpy(elems + e, g->elems + a->first_elem, a->n_elems * sizeof *elems);
        e += a->n_elems;
        elems[e++] = (sl_gelem){.kind = SL_GELEM_END, .value = a->rule};
    }
    free(g->alts);
    free(g->elems);
    g->alts = alts;
    g->elems = elems;
    g->n_alts = g->cap_alts = n_keep;
    g->n_elems = g->cap_elems = n_elems;
    return 0;
}

int sl_grammar_finalize(sl_grammar *g, const char *root, sl_err *err) {
    if (g->finalized) return sl_err_set(err, SL_EINTERNAL, "grammar: finalized twice");
    for (uint32_t i = 0; i < g->n_rules; i++)
        if (!g->rules[i].defined)
            return sl_err_set(err, SL_EINVAL, "grammar: rule '%s' is used but never defined", g->rules[i].name);
    uint32_t r;
    int rc = sl_grammar_rule(g, root, strlen(root), 0, &r, err);
    if (rc) return rc;
    if (!g->rules[r].defined)
        return sl_err_set(err, SL_EINVAL, "grammar: no rule named '%s' (the start rule)", root);
    compute_flags(g);
    if (!g->rules[r].productive)
        return sl_err_set(err, SL_EINVAL, "grammar: rule '%s' matches no finite string", root);
    g->root = r;
    rc = layout(g, err);
    if (rc == 0) g->finalized = true;
    return rc;
}
