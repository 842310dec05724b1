/* test_grammar_repeat.c -- counted repetition (x{m,n} as one rule whose
 * matcher items carry a count; grammar.c, matcher.c, mask_cache.c):
 *
 *   language  GBNF x{m,n} accepts, as a prefix and whole, exactly what its
 *             written-out expansion (x x | x x x | ...) does, for bodies that
 *             are classes, literals, UTF-8 classes, nullable, ambiguous and
 *             themselves counted, in and out of context
 *   bounds    JSON-schema strings (minLength / maxLength over 1- to 4-byte
 *             characters and escapes), arrays (minItems / maxItems) and regex
 *             counts at each count from 0 to max + 2: min and max accepted,
 *             max + 1 refused at the byte that passes it
 *   large     maxLength / minItems / regex / GBNF counts of 10000 compile to
 *             a grammar no bigger than with a count of 2, and count exactly
 *   work      inside a bounded string, as counted work (the trie nodes a
 *             cached mask walks, the mask cache entries a whole string
 *             builds), not wall time: neither grows with the bound; and the
 *             cached mask equals the plain walk (and brute force) at every
 *             position near a bound */
#include <stdio.h>

#include "grammar/matcher_internal.h"
#include "grammar_test_util.h"
#include "test.h"

static sl_grammar *gbnf(const char *text) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (sl_grammar_parse_gbnf(text, strlen(text), &g, &err)) fprintf(stderr, "gbnf: %s\n%s", err.msg, text);
    return g;
}

static sl_grammar *schema(const char *json) {
    json_t *s = json_loads(json, JSON_DECODE_ANY, NULL);
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (!s) fprintf(stderr, "bad test schema %s\n", json);
    else if (sl_grammar_from_json_schema(s, &g, &err)) fprintf(stderr, "schema: %s\n", err.msg);
    json_decref(s);
    return g;
}

/* 1: s (n bytes) is a complete sentence, 0: a live prefix, -1: refused. */
static int match_n(sl_matcher *m, const char *s, size_t n) {
    sl_matcher_rollback(m, sl_matcher_len(m));
    int rc = sl_matcher_accept(m, (const uint8_t *)s, n, NULL);
    return rc != 1 ? -1 : sl_matcher_is_accepting(m) ? 1 : 0;
}

static int match(sl_matcher *m, const char *s) { return match_n(m, s, strlen(s)); }

/* ---- the language ------------------------------------------------------------ */

static const char *const BODIES[] = {
    "\"a\"", "[ab]", "\"ab\"", "( \"a\" | \"aa\" )", "( \"a\"? )", "( \"a\" \"b\"? )", "\"\\u00e9\"", "[^<>]",
    "( \"a\"{1,2} )", "( \"b\" | \"a\"{2} )",
};
static const struct { unsigned min, max; } COUNTS[] = {
    {0, 0}, {0, 1}, {1, 1}, {0, 2}, {2, 2}, {1, 3}, {2, 5}, {0, 6}, {3, 3}, {0, ~0u}, {1, ~0u}, {2, ~0u}, {4, ~0u},
};
static const char *const CONTEXTS[][2] = {{"", ""}, {"\"<\" ", " \">\""}, {"", " \"a\"*"}, {"\"b\"? ", " [ab]?"}};

/* The body written out k times. */
static void copies(char *out, size_t cap, const char *body, unsigned k) {
    size_t n = strlen(out);
    for (unsigned i = 0; i < k; i++) n += (size_t)snprintf(out + n, cap - n, "%s ", body);
}

/* Strings for the comparison: random ones over pieces the bodies use, and
 * runs of 'a', "ab" and 'é' of every length up to 9, bare and in <>. */
static size_t test_string(uint64_t *rng, int i, char *s, size_t cap) {
    static const char *pieces[] = {"a", "b", "<", ">", "\xc3\xa9", "aa", "ab", "c"};
    static const char *runs[] = {"a", "ab", "\xc3\xa9", "b"};
    size_t n = 0;
    if (i < 80) {
        int k = i % 10, wrap = (i / 10) % 2;
        const char *r = runs[(i / 20) % 4];
        if (wrap) s[n++] = '<';
        for (int j = 0; j < k; j++) n += (size_t)snprintf(s + n, cap - n, "%s", r);
        if (wrap) s[n++] = '>';
        return n;
    }
    for (int k = (int)rng_below(rng, 14); k > 0; k--) {
        const char *p = pieces[rng_below(rng, 8)];
        if (n + strlen(p) >= cap) break;
        n += (size_t)snprintf(s + n, cap - n, "%s", p);
    }
    return n;
}

static void test_repeat_language(void) {
    uint64_t rng = 41;
    int n_pairs = 0, n_compared = 0;
    for (size_t b = 0; b < sizeof BODIES / sizeof BODIES[0]; b++)
        for (size_t c = 0; c < sizeof COUNTS / sizeof COUNTS[0]; c++)
            for (size_t x = 0; x < sizeof CONTEXTS / sizeof CONTEXTS[0]; x++) {
                const char *body = BODIES[b];
                unsigned min = COUNTS[c].min, max = COUNTS[c].max;
                char counted[512], expanded[2048] = "";
                if (max == ~0u) snprintf(counted, sizeof counted, "root ::= %s%s{%u,}%s\n", CONTEXTS[x][0], body, min, CONTEXTS[x][1]);
                else snprintf(counted, sizeof counted, "root ::= %s%s{%u,%u}%s\n", CONTEXTS[x][0], body, min, max, CONTEXTS[x][1]);
                size_t n = (size_t)snprintf(expanded, sizeof expanded, "root ::= %sr%s\nr ::= ", CONTEXTS[x][0], CONTEXTS[x][1]);
                if (max == ~0u) {
                    copies(expanded, sizeof expanded, body, min);
                    n = strlen(expanded);
                    snprintf(expanded + n, sizeof expanded - n, "s\ns ::= | s %s\n", body);
                } else {
                    for (unsigned k = min; k <= max; k++) {
                        n = strlen(expanded);
                        n += (size_t)snprintf(expanded + n, sizeof expanded - n, k > min ? "| " : "");
                        if (k == 0) snprintf(expanded + n, sizeof expanded - n, "\"\" ");
                        copies(expanded, sizeof expanded, body, k);
                    }
                    n = strlen(expanded);
                    snprintf(expanded + n, sizeof expanded - n, "\n");
                }
                sl_grammar *gc = gbnf(counted), *ge = gbnf(expanded);
                CHECK(gc && ge);
                sl_matcher *mc = NULL, *me = NULL;
                if (gc) CHECK_EQ_INT(sl_matcher_create(gc, 0, &mc, NULL), 0);
                if (ge) CHECK_EQ_INT(sl_matcher_create(ge, 0, &me, NULL), 0);
                int bad = 0;
                for (int i = 0; mc && me && i < 240 && bad < 3; i++) {
                    char s[64];
                    size_t len = test_string(&rng, i, s, sizeof s);
                    int want = match_n(me, s, len), got = match_n(mc, s, len);
                    n_compared++;
                    if (want != got) {
                        fprintf(stderr, "  %s  '%.*s': counted %d, written out %d\n", counted, (int)len, s, got, want);
                        bad++;
                    }
                }
                CHECK_EQ_INT(bad, 0);
                n_pairs++;
                sl_matcher_free(mc);
                sl_matcher_free(me);
                sl_grammar_free(gc);
                sl_grammar_free(ge);
            }
    fprintf(stderr, "  %d grammars, %d strings compared\n", n_pairs, n_compared);
}

/* A counted repetition is one rule with one alternative, however large its count. */
static void test_repeat_structure(void) {
    sl_grammar *g = gbnf("root ::= [a-z]{2,7} \"x\"{3}\n");
    CHECK(g != NULL);
    if (!g) return;
    int n_repeat = 0;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        if (!g->rules[r].repeat) continue;
        n_repeat++;
        CHECK_EQ_INT(g->rules[r].n_alts, 1);
        CHECK_EQ_INT(g->alts[g->rules[r].first_alt].n_elems, 1);
    }
    CHECK_EQ_INT(n_repeat, 2);
    sl_grammar_free(g);
}

/* ---- at and around the bounds ------------------------------------------------- */

/* A JSON string of k characters cycling through 1- to 4-byte characters and escapes (closed when close). */
static void json_chars(char *out, size_t cap, unsigned k, int close) {
    static const char *chars[] = {"a", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\\n", "\\u00e9", "\\\"", " "};
    size_t n = (size_t)snprintf(out, cap, "\"");
    for (unsigned i = 0; i < k; i++) n += (size_t)snprintf(out + n, cap - n, "%s", chars[i % 8]);
    if (close) snprintf(out + n, cap - n, "\"");
}

/* {BODY,"minWHAT":min,"maxWHAT":max} (no max where max < 0). */
static void bounded_schema(char *out, size_t cap, const char *body, const char *what, int min, int max) {
    int n = snprintf(out, cap, "{%s,\"min%s\":%d", body, what, min);
    if (max >= 0) n += snprintf(out + n, cap - (size_t)n, ",\"max%s\":%d", what, max);
    snprintf(out + n, cap - (size_t)n, "}");
}

static void test_repeat_bounds(void) {
    static const struct { int min, max; } strs[] = {{0, 0}, {0, 3}, {2, 5}, {5, 5}, {3, -1}, {1, 40}, {0, 1}, {1, 1}};
    char text[4096], sch[160];
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        bounded_schema(sch, sizeof sch, "\"type\":\"string\"", "Length", strs[i].min, strs[i].max);
        sl_grammar *g = schema(sch);
        sl_matcher *m;
        CHECK(g != NULL);
        if (!g || sl_matcher_create(g, 0, &m, NULL)) continue;
        int top = strs[i].max >= 0 ? strs[i].max + 2 : strs[i].min + 6, bad = 0;
        for (int k = 0; k <= top; k++) {
            int in = k >= strs[i].min && (strs[i].max < 0 || k <= strs[i].max);
            json_chars(text, sizeof text, (unsigned)k, 1);
            if (match(m, text) != (in ? 1 : -1)) bad++, fprintf(stderr, "  %s: %d characters %s\n", sch, k, in ? "refused" : "accepted");
            json_chars(text, sizeof text, (unsigned)k, 0); /* open: live up to max, refused past it */
            if (match(m, text) != (strs[i].max < 0 || k <= strs[i].max ? 0 : -1)) bad++, fprintf(stderr, "  %s: %d open\n", sch, k);
        }
        CHECK_EQ_INT(bad, 0);
        sl_matcher_free(m);
        sl_grammar_free(g);
    }

    static const struct { int min, max; } arrs[] = {{0, 0}, {0, 2}, {1, 1}, {2, 4}, {3, -1}, {0, 1}};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        bounded_schema(sch, sizeof sch, "\"type\":\"array\",\"items\":{\"type\":\"integer\"}", "Items", arrs[i].min,
                       arrs[i].max);
        sl_grammar *g = schema(sch);
        sl_matcher *m;
        CHECK(g != NULL);
        if (!g || sl_matcher_create(g, 0, &m, NULL)) continue;
        int top = arrs[i].max >= 0 ? arrs[i].max + 2 : arrs[i].min + 5, bad = 0;
        for (int k = 0; k <= top; k++) {
            int in = k >= arrs[i].min && (arrs[i].max < 0 || k <= arrs[i].max);
            size_t len = (size_t)snprintf(text, sizeof text, "[");
            for (int j = 0; j < k; j++) len += (size_t)snprintf(text + len, sizeof text - len, j ? ", %d" : "%d", j * 7);
            snprintf(text + len, sizeof text - len, "]");
            if (match(m, text) != (in ? 1 : -1)) bad++, fprintf(stderr, "  %s: %s %s\n", sch, text, in ? "refused" : "accepted");
            if (k > 0 && arrs[i].max >= 0 && k == arrs[i].max) { /* the comma after the last item allowed is refused */
                snprintf(text + len, sizeof text - len, ",");
                if (match(m, text) != -1) bad++, fprintf(stderr, "  %s: %s live\n", sch, text);
            }
        }
        CHECK_EQ_INT(bad, 0);
        sl_matcher_free(m);
        sl_grammar_free(g);
    }

    /* regexes: (ab){2,3}c?, \d{3,}, [a-c]{0,2}x, (a|bc){1,3}$ */
    static const struct { const char *re, *piece, *tail; int min, max; } res[] = {
        {"^(ab){2,3}c?$", "ab", "c", 2, 3}, {"\\d{3,}", "7", "", 3, -1}, {"[a-c]{0,2}x", "b", "x", 0, 2},
        {"(a|bc){1,3}$", "bc", "", 1, 3}, {"(?:\\s|-){4}!", "-", "!", 4, 4}};
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        sl_grammar *g = NULL;
        sl_matcher *m;
        CHECK_EQ_INT(sl_grammar_from_regex(res[i].re, strlen(res[i].re), &g, NULL), 0);
        if (!g || sl_matcher_create(g, 0, &m, NULL)) continue;
        int top = res[i].max >= 0 ? res[i].max + 2 : res[i].min + 5, bad = 0;
        for (int k = 0; k <= top; k++) {
            int in = k >= res[i].min && (res[i].max < 0 || k <= res[i].max);
            size_t len = 0;
            for (int j = 0; j < k; j++) len += (size_t)snprintf(text + len, sizeof text - len, "%s", res[i].piece);
            snprintf(text + len, sizeof text - len, "%s", res[i].tail);
            if ((match(m, text) == 1) != in) bad++, fprintf(stderr, "  /%s/: '%s' %s\n", res[i].re, text, in ? "refused" : "accepted");
        }
        CHECK_EQ_INT(bad, 0);
        sl_matcher_free(m);
        sl_grammar_free(g);
    }
}

/* ---- large counts ------------------------------------------------------------- */

static void test_repeat_large(void) {
    sl_grammar *small = schema("{\"type\":\"string\",\"maxLength\":2}");
    sl_grammar *big = schema("{\"type\":\"string\",\"maxLength\":10000}");
    sl_grammar *exact = schema("{\"type\":\"string\",\"minLength\":10000,\"maxLength\":10000}");
    sl_grammar *arr = schema("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":9999,\"maxItems\":10000}");
    CHECK(small && big && exact && arr);
    if (!small || !big || !exact || !arr) return;
    fprintf(stderr, "  maxLength 2: %u elements, %u rules; maxLength 10000: %u elements, %u rules\n", small->n_elems,
            small->n_rules, big->n_elems, big->n_rules);
    CHECK_EQ_INT(big->n_elems, small->n_elems); /* the bound is a number in a rule, not rules */
    CHECK_EQ_INT(big->n_rules, small->n_rules);
    CHECK(exact->n_elems <= small->n_elems + 8);
    CHECK(arr->n_elems <= small->n_elems + 64);

    size_t cap = 10003 * 4 + 16;
    char *text = malloc(cap);
    sl_matcher *m;
    CHECK_EQ_INT(sl_matcher_create(big, 0, &m, NULL), 0);
    text[0] = '"';
    memset(text + 1, 'a', 10001);
    text[10001] = '"';
    CHECK_EQ_INT(match_n(m, text, 10002), 1);      /* 10000 characters */
    text[10001] = 'a';
    CHECK_EQ_INT(match_n(m, text, 10002), -1);     /* the 10001st is refused */
    text[10000] = '"';
    CHECK_EQ_INT(match_n(m, text, 10001), 1);      /* 9999 */
    sl_matcher_free(m);

    CHECK_EQ_INT(sl_matcher_create(exact, 0, &m, NULL), 0);
    memset(text + 1, 'a', 10001);
    text[10000] = '"';
    CHECK_EQ_INT(match_n(m, text, 10001), -1);     /* 9999: the quote is refused */
    CHECK_EQ_INT(match_n(m, text, 10000), 0);
    text[10000] = 'a';
    text[10001] = '"';
    CHECK_EQ_INT(match_n(m, text, 10002), 1);
    sl_matcher_free(m);

    CHECK_EQ_INT(sl_matcher_create(arr, 0, &m, NULL), 0);
    size_t n = 0;
    text[n++] = '[';
    for (int i = 0; i < 10001; i++) text[n++] = '1', text[n++] = ',';
    text[2 * 9999] = ']'; /* 9999 items */
    CHECK_EQ_INT(match_n(m, text, 2 * 9999 + 1), 1);
    text[2 * 9999] = ',';
    text[2 * 10000] = ']';
    CHECK_EQ_INT(match_n(m, text, 2 * 10000 + 1), 1);
    text[2 * 10000] = ',';
    CHECK_EQ_INT(match_n(m, text, 2 * 10000 + 1), -1); /* a 10001st item */
    text[2 * 9998] = ']';
    CHECK_EQ_INT(match_n(m, text, 2 * 9998 + 1), -1); /* 9998 */
    sl_matcher_free(m);

    sl_grammar *re = NULL;
    CHECK_EQ_INT(sl_grammar_from_regex("[a-z]{10000}", 12, &re, NULL), 0);
    sl_grammar *gb = gbnf("root ::= ( \"ab\" | \"c\" ){0,10000} \"!\"\n");
    CHECK(re && gb);
    if (re && gb) {
        CHECK(re->n_elems < 64 && gb->n_elems < 64);
        CHECK_EQ_INT(sl_matcher_create(re, 0, &m, NULL), 0);
        memset(text, 'q', 10001);
        CHECK_EQ_INT(match_n(m, text, 10000), 1);
        CHECK_EQ_INT(match_n(m, text, 10001), -1);
        CHECK_EQ_INT(match_n(m, text, 9999), 0);
        sl_matcher_free(m);
        CHECK_EQ_INT(sl_matcher_create(gb, 0, &m, NULL), 0);
        for (int i = 0; i < 5000; i++) memcpy(text + 3 * i, "abc", 3); /* 10000 copies in 15000 bytes */
        text[15000] = '!';
        CHECK_EQ_INT(match_n(m, text, 15001), 1);
        text[15000] = 'c';
        text[15001] = '!';
        CHECK_EQ_INT(match_n(m, text, 15002), -1);
        sl_matcher_free(m);
    }
    sl_grammar_free(re);
    sl_grammar_free(gb);
    free(text);
    sl_grammar_free(small);
    sl_grammar_free(big);
    sl_grammar_free(exact);
    sl_grammar_free(arr);
}

/* ---- mask work inside bounded strings ------------------------------------------ */

typedef struct walk_stats {
    uint64_t far_nodes;  /* trie nodes of a warm cached mask at positions far from both bounds (all equal) */
    uint64_t max_nodes;  /* the most at any position, warm */
    uint32_t entries;    /* mask cache entries after the whole string */
    uint32_t first;      /* ... after the first position's mask: one per waiting item */
    int far_differ;      /* far positions whose warm walk took another number of nodes */
    int mismatches;      /* cached masks unlike the plain walk */
} walk_stats;

/* Decodes a string of max characters under minLength min, maxLength max,
 * character by character, filling the cached mask at each position (twice:
 * first use, warm) and the plain one near the bounds and at every 37th
 * position; brute force too every 5th position near max when brute. */
static walk_stats walk_string(const vocab *v, const sl_token_trie *t, int min, int max, bool brute) {
    walk_stats st = {0};
    char sch[128];
    snprintf(sch, sizeof sch, "{\"type\":\"string\",\"minLength\":%d,\"maxLength\":%d}", min, max);
    sl_grammar *g = schema(sch);
    sl_matcher *m, *scratch;
    sl_mask_cache *cache;
    CHECK(g != NULL);
    if (!g) return st;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_create(g, 0, &scratch, NULL), 0);
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    uint32_t words = (t->n_tokens + 31) / 32, L = t->max_depth;
    uint32_t *want = calloc(words, 4), *got = calloc(words, 4);
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"\"", 1, NULL), 1);
    static const char *chars[] = {"a", " ", "\xc3\xa9", "b", "\\n", "x"};
    for (int pos = 0; pos <= max; pos++) {
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
        if (pos == 0) {
            size_t n_bytes;
            bool full;
            sl_mask_cache_usage(cache, &st.first, &n_bytes, &full);
        }
        uint64_t before = sl__matcher_walk_nodes(m);
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
        uint64_t nodes = sl__matcher_walk_nodes(m) - before;
        if (pos + (int)L + 1 <= max && pos >= min) { /* far from max, min reached: one class */
            if (!st.far_nodes) st.far_nodes = nodes;
            st.far_differ += nodes != st.far_nodes;
        }
        if (nodes > st.max_nodes) st.max_nodes = nodes;
        int near = pos <= (int)L + 3 || pos + (int)L + 3 >= max || (pos + (int)L + 3 >= min && pos <= min + (int)L + 3);
        if (near || pos % 37 == 0) {
            CHECK_EQ_INT(sl_matcher_fill_mask(m, t, want, NULL), 0);
            if (memcmp(got, want, words * 4) != 0) {
                if (!st.mismatches) fprintf(stderr, "  %s: cached mask unlike the plain walk at %d\n", sch, pos);
                st.mismatches++;
            }
            if (brute && pos % 5 == 0 && pos + (int)L + 3 >= max) { /* and like brute force near the max */
                brute_mask(m, scratch, v, want);
                st.mismatches += memcmp(got, want, words * 4) != 0;
            }
        }
        if (pos < max) {
            const char *c = chars[pos % 6];
            CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)c, strlen(c), NULL), 1);
        }
    }
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"a", 1, NULL), 0); /* max + 1 */
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"\"", 1, NULL), 1);
    CHECK(sl_matcher_is_accepting(m));
    size_t n_bytes;
    bool full;
    sl_mask_cache_usage(cache, &st.entries, &n_bytes, &full);
    CHECK(!full);
    free(want);
    free(got);
    sl_mask_cache_free(cache);
    sl_matcher_free(m);
    sl_matcher_free(scratch);
    sl_grammar_free(g);
    return st;
}

static void test_repeat_mask_work(void) {
    vocab v;
    vocab_synthetic(&v, 3000, 21);
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v.tok, v.n, &v.eos, 1, &t, NULL), 0);
    uint32_t L = t->max_depth;
    fprintf(stderr, "  synthetic vocabulary: %u tokens, the longest %u bytes\n", v.n, L);
    /* maxLength N: far positions cost the same small walk and share entries, whatever N */
    static const int maxes[] = {300, 3000, 10000};
    walk_stats s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = walk_string(&v, t, 0, maxes[i], i == 0);
        fprintf(stderr, "  maxLength %5d: warm cached mask %llu trie nodes far from the bound (%d positions differ), "
                "at most %llu; %u cache entries (%u at the first position)\n", maxes[i], (unsigned long long)s[i].far_nodes,
                s[i].far_differ, (unsigned long long)s[i].max_nodes, s[i].entries, s[i].first);
        CHECK_EQ_INT(s[i].mismatches, 0);
        CHECK_EQ_INT(s[i].far_differ, 0);
        CHECK_EQ_INT(s[i].far_nodes, s[0].far_nodes);
        CHECK_EQ_INT(s[i].max_nodes, s[0].max_nodes);
        CHECK_EQ_INT(s[i].entries, s[0].entries);
    }
    CHECK(s[0].far_nodes > 0 && s[0].max_nodes < t->n_nodes / 10); /* a few paths, not the trie */
    CHECK(s[0].entries <= s[0].first * (L + 3)); /* the far class, and the L + 1 counts next to max */
    /* minLength too: counts near min are exact, far ones shared */
    static const int mins[][2] = {{150, 300}, {1500, 3000}, {5000, 10000}};
    for (int i = 0; i < 3; i++) {
        s[i] = walk_string(&v, t, mins[i][0], mins[i][1], false);
        fprintf(stderr, "  minLength %5d maxLength %5d: far %llu nodes, at most %llu; %u cache entries\n", mins[i][0],
                mins[i][1], (unsigned long long)s[i].far_nodes, (unsigned long long)s[i].max_nodes, s[i].entries);
        CHECK_EQ_INT(s[i].mismatches, 0);
        CHECK_EQ_INT(s[i].far_differ, 0);
        CHECK_EQ_INT(s[i].far_nodes, s[0].far_nodes);
        CHECK_EQ_INT(s[i].max_nodes, s[0].max_nodes);
        CHECK_EQ_INT(s[i].entries, s[0].entries);
    }
    CHECK(s[0].entries <= s[0].first * (2 * L + 5)); /* and the L or so below min */
    sl_token_trie_free(t);
    vocab_free(&v);
}

int main(void) {
    TEST_RUN(test_repeat_structure);
    TEST_RUN(test_repeat_language);
    TEST_RUN(test_repeat_bounds);
    TEST_RUN(test_repeat_large);
    TEST_RUN(test_repeat_mask_work);
    TEST_EXIT();
}
