/* test_grammar.c -- the grammar engine: GBNF parsing and its errors, the
 * matcher on JSON / arithmetic / choice / regex / JSON-schema grammars,
 * fill_mask (plain and cached) against brute force on a synthetic vocabulary
 * over random states, the cached mask against the plain walk on many states
 * of eight grammars (a full cache, two threads sharing one); random GBNF
 * texts, schemas and bytes must not crash. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "grammar_test_util.h"
#include "test.h"

static sl_grammar *gbnf(const char *text) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (sl_grammar_parse_gbnf(text, strlen(text), &g, &err)) fprintf(stderr, "gbnf: %s\n", err.msg);
    return g;
}

/* 1: s is a complete sentence, 0: a live prefix, -1: rejected. */
static int match(const sl_grammar *g, const char *s) {
    sl_matcher *m;
    if (sl_matcher_create(g, 0, &m, NULL)) return -2;
    int rc = sl_matcher_accept(m, (const uint8_t *)s, strlen(s), NULL);
    int r = rc != 1 ? -1 : sl_matcher_is_accepting(m) ? 1 : 0;
    sl_matcher_free(m);
    return r;
}

static sl_grammar *schema(const char *json) {
    json_error_t je;
    json_t *s = json_loads(json, JSON_DECODE_ANY, &je);
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (!s) fprintf(stderr, "bad test schema: %s\n", je.text);
    else if (sl_grammar_from_json_schema(s, &g, &err)) fprintf(stderr, "schema: %s\n", err.msg);
    json_decref(s);
    return g;
}

static void schema_error(const char *json, const char *needle) {
    json_t *s = json_loads(json, JSON_DECODE_ANY, NULL);
    sl_err err = {0};
    sl_grammar *g = NULL;
    CHECK(s != NULL);
    CHECK(sl_grammar_from_json_schema(s, &g, &err) != 0);
    CHECK(g == NULL);
    CHECK_CONTAINS(err.msg, needle);
    sl_grammar_free(g);
    json_decref(s);
}

/* ---- GBNF ------------------------------------------------------------------ */

static void gbnf_error(const char *text, const char *needle) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    CHECK(sl_grammar_parse_gbnf(text, strlen(text), &g, &err) != 0);
    CHECK(g == NULL);
    CHECK_CONTAINS(err.msg, needle);
}

static void test_gbnf_errors(void) {
    gbnf_error("root ::= \"a\" b\n", "line 1, column 14: rule 'b' is used but never defined");
    gbnf_error("root ::= \"a\"\nx ::= \"unterminated\n", "line 2, column 7: unterminated literal");
    gbnf_error("root ::= [a-\n", "line 1, column 13: unterminated character class");
    gbnf_error("root ::= (\"a\" | \"b\"\n", "expected ')'");
    gbnf_error("root ::= \"a\"{3,2}\n", "line 1, column 17: repetition {3,2} has max below min");
    gbnf_error("root = \"a\"\n", "line 1, column 6: expected '::='");
    gbnf_error("a ::= \"x\"\n", "no rule named 'root'");
    gbnf_error("root ::= \"\\q\"\n", "line 1, column 12: unknown escape");
    gbnf_error("root ::= \"a\"\nroot ::= \"b\"\n", "line 2, column 1: rule 'root' is defined twice");
    gbnf_error("root ::= * \"a\"\n", "line 1, column 10");
    gbnf_error("root ::= \"a\" ) \n", "line 1, column 14: unexpected ')'");
    gbnf_error("root ::= [z-a]\n", "below its start");
    gbnf_error("root ::= x\nx ::= x \"a\"\n", "matches no finite string");
    gbnf_error("root ::= \"\\u12\"\n", "expected 4 hex digits");
    gbnf_error("root ::= \"a\"{99999}\n", "repetition count above");
}

static void test_gbnf_match(void) {
    sl_grammar *g = gbnf("# arithmetic\n"
                         "root ::= expr\n"
                         "expr ::= term ( [-+] term )*\n"
                         "term ::= factor ( [*/] factor )*\n"
                         "factor ::= [0-9]+ | \"(\" expr \")\"  # a comment\n");
    CHECK(g != NULL);
    CHECK_EQ_INT(match(g, "1+2*(3-4)/5"), 1);
    CHECK_EQ_INT(match(g, "((12))"), 1);
    CHECK_EQ_INT(match(g, "1+"), 0);
    CHECK_EQ_INT(match(g, "(1"), 0);
    CHECK_EQ_INT(match(g, "1)"), -1);
    CHECK_EQ_INT(match(g, "a"), -1);
    sl_grammar_free(g);

    g = gbnf("root ::= \"ab\"{2,3} x? [^a-c\\n]\n"
             "x ::=\n  \"\\x41\" |\n  \"\\u00e9\" | ( \"[\" [\\]] )\n");
    CHECK(g != NULL);
    CHECK_EQ_INT(match(g, "ababd"), 1);
    CHECK_EQ_INT(match(g, "abababAz"), 1);
    CHECK_EQ_INT(match(g, "abab\xc3\xa9\xe4\xb8\xad"), 1); /* é then 中 (any non a-c) */
    CHECK_EQ_INT(match(g, "ab[]z"), -1);
    CHECK_EQ_INT(match(g, "abab[]z"), 1);
    CHECK_EQ_INT(match(g, "ababa"), 0);
    CHECK_EQ_INT(match(g, "abababab"), -1);
    CHECK_EQ_INT(match(g, "ababc"), -1);
    CHECK_EQ_INT(match(g, "abab\n"), -1);
    CHECK_EQ_INT(match(g, "abab\xed\xa0\x80"), -1); /* a surrogate is not a character */
    CHECK_EQ_INT(match(g, "abab\xff"), -1);
    sl_grammar_free(g);

    g = gbnf("root ::= ( \"a\" | ) \".\" .* \"!\"{0,}\n"); /* empty alternative; . is any char */
    CHECK(g != NULL);
    CHECK_EQ_INT(match(g, "."), 1);
    CHECK_EQ_INT(match(g, "a.\xf0\x9f\x98\x80!!"), 1);
    CHECK_EQ_INT(match(g, "a.\xf0\x9f\x98"), 0);
    sl_grammar_free(g);
}

static void test_json_object(void) {
    sl_grammar *g = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(sl_grammar_json_object(&g, &err), 0);
    CHECK_EQ_INT(match(g, "{\"a\": [1, -2.5e3, true, null, {\"b\": \"\\u00e9\\n\"}], \"c\":{}}"), 1);
    CHECK_EQ_INT(match(g, "{\n  \"k\" : \"v\"\n}"), 1);
    CHECK_EQ_INT(match(g, "{}"), 1);
    CHECK_EQ_INT(match(g, "[]"), -1);      /* the top level is an object */
    CHECK_EQ_INT(match(g, "{\"a\":01}"), -1);
    CHECK_EQ_INT(match(g, "{\"a\":\"\x01\"}"), -1);
    CHECK_EQ_INT(match(g, "{\"a\":1,}"), -1);
    CHECK_EQ_INT(match(g, "{                      }"), -1); /* whitespace is bounded */
    CHECK_EQ_INT(match(g, "{\"a\":1} "), -1);
    sl_grammar_free(g);
}

static void test_choices_and_regex(void) {
    const char *choices[] = {"yes", "no", "maybe \"so\""};
    sl_grammar *g = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(sl_grammar_from_choices(choices, 3, &g, &err), 0);
    CHECK_EQ_INT(match(g, "yes"), 1);
    CHECK_EQ_INT(match(g, "maybe \"so\""), 1);
    CHECK_EQ_INT(match(g, "ye"), 0);
    CHECK_EQ_INT(match(g, "yess"), -1);
    sl_grammar_free(g);

    const char *re = "^(\\d{3}-\\d{4}|[A-Z][a-z]+ (?:x|y)*\\.?)$";
    CHECK_EQ_INT(sl_grammar_from_regex(re, strlen(re), &g, &err), 0);
    CHECK_EQ_INT(match(g, "555-1234"), 1);
    CHECK_EQ_INT(match(g, "Hello xyxy."), 1);
    CHECK_EQ_INT(match(g, "Hello "), 1);
    CHECK_EQ_INT(match(g, "55-1234"), -1);
    CHECK_EQ_INT(match(g, "hello "), -1);
    sl_grammar_free(g);

    re = "[^\\s\\d]\\w*.a+?";
    CHECK_EQ_INT(sl_grammar_from_regex(re, strlen(re), &g, &err), 0);
    CHECK_EQ_INT(match(g, "_x9\xc3\xa9" "aa"), 1);
    CHECK_EQ_INT(match(g, "9x"), -1);
    CHECK_EQ_INT(match(g, "xa\na"), -1);
    sl_grammar_free(g);

    static const struct { const char *re, *needle; } bad[] = {
        {"(a)\\1", "backreferences"}, {"(?=a)", "lookaround"}, {"a\\bc", "word boundaries"},
        {"*a", "nothing to repeat"}, {"a{x}", "not a repetition"}, {"a++", "possessive"}, {"a^b", "anchors"},
        {"(a", "expected ')'"}, {"a)", "unbalanced"}, {"[a", "unterminated class"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g = NULL;
        CHECK(sl_grammar_from_regex(bad[i].re, strlen(bad[i].re), &g, &err) == SL_ENOTSUP);
        CHECK_CONTAINS(err.msg, bad[i].needle);
    }
}

/* ---- JSON schema ------------------------------------------------------------ */

static void test_schema_match(void) {
    sl_grammar *g = schema("{\"type\":\"object\",\"properties\":{"
                           "\"name\":{\"type\":\"string\",\"maxLength\":5},"
                           "\"age\":{\"type\":\"integer\"},"
                           "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",1]},\"minItems\":1,\"maxItems\":2},"
                           "\"kind\":{\"const\":\"k\"}},"
                           "\"required\":[\"name\",\"kind\"],\"additionalProperties\":false}");
    CHECK(g != NULL);
    CHECK_EQ_INT(match(g, "{\"name\":\"bob\",\"kind\":\"k\"}"), 1);
    CHECK_EQ_INT(match(g, "{ \"name\": \"bob\", \"age\": -3, \"tags\": [\"a\", 1], \"kind\": \"k\" }"), 1);
    CHECK_EQ_INT(match(g, "{\"name\":\"bob\",\"age\":3}"), -1);           /* kind is required */
    CHECK_EQ_INT(match(g, "{\"age\":3,\"name\":\"bob\",\"kind\":\"k\"}"), -1); /* schema order */
    CHECK_EQ_INT(match(g, "{\"name\":\"bobbyb\""), -1);                   /* maxLength */
    CHECK_EQ_INT(match(g, "{\"name\":\"b\",\"tags\":[],"), -1);            /* minItems */
    CHECK_EQ_INT(match(g, "{\"name\":\"b\",\"tags\":[1,1,1"), -1);         /* maxItems */
    CHECK_EQ_INT(match(g, "{\"name\":\"b\",\"age\":1.5"), -1);
    CHECK_EQ_INT(match(g, "{\"name\":\"b\",\"x\":1"), -1);
    sl_grammar_free(g);

    g = schema("{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":[\"number\",\"null\"]},"
               "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"]}},"
               "\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"string\",\"format\":\"date\"},"
               "{\"type\":\"string\",\"pattern\":\"^a\\\"[0-9]+\\\\\\\\$\"}]}");
    CHECK(g != NULL);
    CHECK_EQ_INT(match(g, "{\"v\":1,\"kids\":[{\"v\":null},{\"v\":2e5,\"kids\":[]}]}"), 1);
    CHECK_EQ_INT(match(g, "\"2024-02-29\""), 1);
    CHECK_EQ_INT(match(g, "\"2024-13-01\""), -1);
    CHECK_EQ_INT(match(g, "\"a\\\"12\\\\\""), 1); /* the JSON text of a"12\ */
    CHECK_EQ_INT(match(g, "\"a\"12"), -1);
    sl_grammar_free(g);

    g = schema("{\"type\":\"string\",\"format\":\"date-time\"}");
    CHECK_EQ_INT(match(g, "\"2024-01-02T03:04:05.123Z\""), 1);
    sl_grammar_free(g);
    g = schema("{\"type\":\"string\",\"format\":\"uuid\"}");
    CHECK_EQ_INT(match(g, "\"123e4567-e89b-12d3-a456-426614174000\""), 1);
    sl_grammar_free(g);
    g = schema("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"}}");
    CHECK_EQ_INT(match(g, "{\"x\": true, \"y\": false}"), 1);
    CHECK_EQ_INT(match(g, "{\"x\": 1"), -1);
    sl_grammar_free(g);
    g = schema("true");
    CHECK_EQ_INT(match(g, "[1,\"a\"]"), 1);
    sl_grammar_free(g);
}

static void test_schema_errors(void) {
    schema_error("{\"type\":\"integer\",\"multipleOf\":3}", "the keyword 'multipleOf' at '#' is not supported");
    schema_error("{\"properties\":{\"a\":{\"oneOf\":[{}]}}}", "'oneOf' at '#/properties/a'");
    schema_error("{\"type\":\"string\",\"format\":\"uri\"}", "the string format 'uri'");
    schema_error("{\"$ref\":\"#/$defs/missing\"}", "$ref '#/$defs/missing'");
    schema_error("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", "backreferences");
    schema_error("{\"type\":\"frob\"}", "unknown type 'frob'");
    schema_error("{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "required property 'b'");
    schema_error("{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}", "maxItems below minItems");
    schema_error("false", "matches nothing");
    schema_error("{\"type\":\"array\",\"items\":[{}]}", "tuple");
}

/* ---- masks vs brute force --------------------------------------------------- */

static const char *const MASK_GRAMMARS[] = {
    "root ::= expr\nexpr ::= term ( [-+] term )*\nterm ::= [0-9]+ | \"(\" expr \")\"\n",
    "root ::= \"a\" ( \"b\" | \"\\u4e2d\" )* [^a]? \"\\n\"?\n",
};

/* Masks from random states of g equal brute force, plain and cached. */
static void check_masks(const sl_grammar *g, const vocab *v, const sl_token_trie *t, int n_states, uint64_t seed) {
    sl_matcher *m, *scratch;
    sl_mask_cache *cache;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_create(g, 0, &scratch, NULL), 0);
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    uint32_t words = (v->n + 31) / 32;
    uint32_t *mask = calloc(words, 4), *want = calloc(words, 4), *cached = calloc(words, 4);
    uint64_t rng = seed;
    uint8_t buf[4096];
    size_t total_bytes = 0, total_allowed = 0;
    for (int s = 0; s < n_states; s++) {
        sl_matcher_rollback(m, sl_matcher_len(m));
        size_t n = 0;
        CHECK(random_walk(m, &rng, rng_below(&rng, 200), 0.02, buf, &n) >= 0);
        CHECK_EQ_INT(sl_matcher_fill_mask(m, t, mask, NULL), 0);
        CHECK_EQ_INT(sl_matcher_len(m), n); /* the walk left the state alone */
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, cached, NULL), 0);
        CHECK_EQ_INT(sl_matcher_len(m), n);
        brute_mask(m, scratch, v, want);
        CHECK(memcmp(cached, want, words * 4) == 0);
        total_bytes += n;
        for (uint32_t id = 0; id < v->n; id++) total_allowed += (want[id >> 5] >> (id & 31)) & 1;
        int diff = memcmp(mask, want, words * 4) != 0;
        CHECK(!diff);
        if (diff) {
            for (uint32_t id = 0; id < v->n; id++)
                if (((mask[id >> 5] ^ want[id >> 5]) >> (id & 31)) & 1)
                    fprintf(stderr, "  state %d (%zu bytes): token %u mask %d brute %d\n", s, n, id,
                            (mask[id >> 5] >> (id & 31)) & 1, (want[id >> 5] >> (id & 31)) & 1);
            break;
        }
    }
    fprintf(stderr, "  %d states, %.1f bytes and %.1f allowed tokens on average\n", n_states,
            (double)total_bytes / n_states, (double)total_allowed / n_states);
    CHECK(total_allowed > 0);
    free(mask);
    free(want);
    free(cached);
    sl_mask_cache_free(cache);
    sl_matcher_free(m);
    sl_matcher_free(scratch);
}

static void test_masks_synthetic(void) {
    vocab v;
    vocab_synthetic(&v, 3000, 7);
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v.tok, v.n, &v.eos, 1, &t, NULL), 0);
    for (size_t i = 0; i < sizeof MASK_GRAMMARS / sizeof MASK_GRAMMARS[0]; i++) {
        sl_grammar *g = gbnf(MASK_GRAMMARS[i]);
        check_masks(g, &v, t, 40, 100 + i);
        sl_grammar_free(g);
    }
    sl_grammar *g = NULL;
    CHECK_EQ_INT(sl_grammar_json_object(&g, NULL), 0);
    check_masks(g, &v, t, 60, 3);
    sl_grammar_free(g);
    g = schema("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"n\":{\"type\":\"array\","
               "\"items\":{\"type\":\"number\"}},\"e\":{\"enum\":[\"x\",\"é\",null]}},\"required\":[\"name\"]}");
    check_masks(g, &v, t, 60, 4);
    sl_grammar_free(g);
    sl_token_trie_free(t);
    vocab_free(&v);
}

/* ---- cached masks vs the plain walk ------------------------------------------ */

/* Grammars for the cached masks: JSON schema (string lengths, a pattern, a
 * format, an integer range, nesting, recursion through $ref), json_object, regexes, choices,
 * GBNF with nested, left-, right- and middle-recursive, nullable, shared and
 * ambiguous rules. */
static sl_grammar *cached_grammar(int i) {
    static const char *const schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":6},"
        "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{3}(-[a-z]+)?$\"},\"when\":{\"type\":\"string\","
        "\"format\":\"date\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":3},"
        "\"n\":{\"type\":[\"number\",\"null\"]},\"age\":{\"type\":\"integer\",\"minimum\":-5,\"maximum\":1200},\"e\":{\"enum\":[\"x\",\"é\",null,1]}},\"required\":[\"name\"]}",
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"string\"},"
        "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"]}},"
        "\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"string\",\"maxLength\":3}]}",
    };
    static const char *const regexes[] = {"[A-Z][a-z]{1,8}( [a-z]+)*\\.", "(ab|a)*b?[^ab\\n]{0,3}(\\d+|x)"};
    static const char *const gbnfs[] = {
        "root ::= stmt+\nstmt ::= ident ws \"=\" ws expr \";\" \"\\n\"?\n"
        "expr ::= term ( ws [-+] ws term )*\nterm ::= ident | [0-9]+ | \"(\" expr \")\" | str\n"
        "str ::= \"'\" [^'\\n]* \"'\"\nident ::= [a-z_] [a-z_0-9]*\nws ::= \" \"?\n",
        "root ::= list \"!\"?\nlist ::= list \",\" item | item\nitem ::= \"[\" inner \"]\" | word\n"
        "inner ::= | item inner\nword ::= [a-z]+ | [a-c]+ [x-z]* | \"\\u00e9\"+\n",
    };
    static const char *const choices[] = {"yes", "no", "maybe \"so\"", "y"};
    sl_grammar *g = NULL;
    if (i < 2) g = schema(schemas[i]);
    else if (i == 2) sl_grammar_json_object(&g, NULL);
    else if (i < 5) sl_grammar_from_regex(regexes[i - 3], strlen(regexes[i - 3]), &g, NULL);
    else if (i < 7) g = gbnf(gbnfs[i - 5]);
    else sl_grammar_from_choices(choices, 4, &g, NULL);
    return g;
}
#define N_CACHED_GRAMMARS 8

/* n_states random states of g: the cached mask equals the plain walk; two
 * matchers share the cache, and each state is asked twice (built, then warm).
 * Returns the number of mismatches. */
static int cached_vs_plain(const sl_grammar *g, const sl_token_trie *t, sl_mask_cache *cache, int n_states,
                           uint64_t seed) {
    sl_matcher *m[2];
    if (sl_matcher_create(g, 0, &m[0], NULL) || sl_matcher_create(g, 0, &m[1], NULL)) return -1;
    uint32_t words = (t->n_tokens + 31) / 32;
    uint32_t *want = calloc(words, 4), *got = calloc(words, 4);
    uint64_t rng = seed;
    uint8_t buf[4096];
    int bad = 0;
    for (int s = 0; s < n_states; s++) {
        sl_matcher *mm = m[s & 1];
        size_t n;
        if (random_state(mm, &rng, 300, 0.02, buf, &n) < 0) bad++;
        if (sl_matcher_fill_mask(mm, t, want, NULL)) bad++;
        for (int r = 0; r < 2; r++) {
            if (sl_matcher_fill_mask_cached(mm, cache, got, NULL) || sl_matcher_len(mm) != n) bad++;
            else if (memcmp(got, want, words * 4) != 0) {
                if (!bad) fprintf(stderr, "  state %d (%zu bytes '%.*s'): cached mask differs\n", s, n, (int)n, buf);
                bad++;
            }
        }
    }
    free(want);
    free(got);
    sl_matcher_free(m[0]);
    sl_matcher_free(m[1]);
    return bad;
}

static void test_masks_cached(void) {
    vocab v;
    vocab_synthetic(&v, 3000, 11);
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v.tok, v.n, &v.eos, 1, &t, NULL), 0);
    for (int i = 0; i < N_CACHED_GRAMMARS; i++) {
        sl_grammar *g = cached_grammar(i);
        CHECK(g != NULL);
        if (!g) continue;
        sl_mask_cache *cache, *tiny;
        CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
        CHECK_EQ_INT(sl_mask_cache_create(g, t, 4096, &tiny, NULL), 0); /* fills up: the plain walk after */
        CHECK_EQ_INT(cached_vs_plain(g, t, cache, 300, 500 + i), 0);
        CHECK_EQ_INT(cached_vs_plain(g, t, tiny, 100, 600 + i), 0);
        uint32_t n_entries;
        size_t n_bytes;
        bool full;
        sl_mask_cache_usage(cache, &n_entries, &n_bytes, &full);
        fprintf(stderr, "  grammar %d: %u entries, %zu bytes\n", i, n_entries, n_bytes);
        CHECK(n_entries > 0 && !full);
        sl_mask_cache_usage(tiny, &n_entries, &n_bytes, &full);
        CHECK(n_bytes <= 4096);
        sl_mask_cache_free(cache);
        sl_mask_cache_free(tiny);
        sl_grammar_free(g);
    }
    sl_token_trie_free(t);
    vocab_free(&v);
}

typedef struct cached_job {
    const sl_grammar *g;
    const sl_token_trie *t;
    sl_mask_cache *cache;
    uint64_t seed;
    int bad;
} cached_job;

static void *cached_thread(void *arg) {
    cached_job *j = arg;
    j->bad = cached_vs_plain(j->g, j->t, j->cache, 150, j->seed);
    return NULL;
}

/* Matchers on two threads fill masks from one cache while it grows. */
static void test_masks_cached_threads(void) {
    vocab v;
    vocab_synthetic(&v, 3000, 12);
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v.tok, v.n, &v.eos, 1, &t, NULL), 0);
    sl_grammar *g = cached_grammar(2);
    sl_mask_cache *cache;
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    cached_job jobs[2] = {{g, t, cache, 1, 0}, {g, t, cache, 2, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) CHECK_EQ_INT(pthread_create(&th[i], NULL, cached_thread, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK_EQ_INT(jobs[0].bad, 0);
    CHECK_EQ_INT(jobs[1].bad, 0);
    /* A matcher of another grammar is refused. */
    sl_grammar *other = cached_grammar(3);
    sl_matcher *m;
    sl_err err = {0};
    uint32_t *mask = calloc((v.n + 31) / 32, 4);
    CHECK_EQ_INT(sl_matcher_create(other, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, mask, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "not the cache's");
    free(mask);
    sl_matcher_free(m);
    sl_grammar_free(other);
    sl_mask_cache_free(cache);
    sl_grammar_free(g);
    sl_token_trie_free(t);
    vocab_free(&v);
}

/* ---- state operations, bound -------------------------------------------------- */

static void test_state_ops(void) {
    sl_grammar *g = gbnf("root ::= \"ab\" \"c\"*\n");
    sl_matcher *m, *c;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_create(g, 0, &c, NULL), 0);
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"ab", 2, NULL), 1);
    CHECK(sl_matcher_is_accepting(m));
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"cx", 2, NULL), 0); /* dead: state unchanged */
    CHECK_EQ_INT(sl_matcher_len(m), 2);
    CHECK_EQ_INT(sl_matcher_copy(c, m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_accept(c, (const uint8_t *)"ccc", 3, NULL), 1);
    CHECK_EQ_INT(sl_matcher_len(m), 2);
    sl_matcher_rollback(c, 4);
    CHECK_EQ_INT(sl_matcher_len(c), 1);
    CHECK(!sl_matcher_is_accepting(c));
    sl_matcher_free(m);
    sl_matcher_free(c);
    sl_grammar_free(g);

    /* An ambiguous grammar runs into the item bound and says so. */
    g = gbnf("root ::= x*\nx ::= \"a\" | \"a\" \"a\" | x x\n");
    sl_err err = {0};
    CHECK_EQ_INT(sl_matcher_create(g, 2000, &m, NULL), 0);
    uint8_t a[400];
    memset(a, 'a', sizeof a);
    CHECK_EQ_INT(sl_matcher_accept(m, a, sizeof a, &err), SL_ENOSPACE);
    CHECK_CONTAINS(err.msg, "Earley items");
    CHECK_EQ_INT(sl_matcher_len(m), 0);
    sl_matcher_free(m);
    sl_grammar_free(g);
}

/* ---- robustness ---------------------------------------------------------------- */

static void test_random_inputs(void) {
    static const char *atoms[] = {"root", " ::= ", "x", "::=", "\"a\"", "\"\\x41\"", "[a-z]", "[^\\n]", "(", ")",
                                  "|", "*", "+", "?", "{2,3}", "{1,}", ".", "\n", "# c\n", " ", "\"", "[", "\\",
                                  "{", "x ::= ", "\"\\u00e9\"", "{0}", "-"};
    uint64_t rng = 99;
    int parsed = 0;
    for (int i = 0; i < 3000; i++) {
        char text[256];
        size_t n = 0;
        if (rng_below(&rng, 2)) n += (size_t)snprintf(text, sizeof text, "root ::= ");
        for (int k = (int)rng_below(&rng, 12); k > 0; k--) {
            const char *a = atoms[rng_below(&rng, sizeof atoms / sizeof atoms[0])];
            if (n + strlen(a) >= sizeof text) break;
            memcpy(text + n, a, strlen(a));
            n += strlen(a);
        }
        sl_grammar *g = NULL;
        sl_err err = {0};
        if (sl_grammar_parse_gbnf(text, n, &g, &err) != 0) continue;
        parsed++;
        sl_matcher *m;
        if (sl_matcher_create(g, 20000, &m, NULL) == 0) {
            uint8_t bytes[32];
            for (int j = 0; j < 32; j++) bytes[j] = (uint8_t)"ax(|\xc3\xa9)"[rng_below(&rng, 7)];
            sl_matcher_accept(m, bytes, rng_below(&rng, 32), NULL);
            sl_matcher_free(m);
        }
        sl_grammar_free(g);
    }
    CHECK(parsed > 100);
    /* Random schemas from keyword soup. */
    static const char *frags[] = {"{\"type\":\"object\",\"properties\":{\"a\":%s,\"b\":%s},\"required\":[\"a\"]}",
                                  "{\"type\":\"array\",\"items\":%s,\"maxItems\":%s}", "{\"anyOf\":[%s,%s]}",
                                  "{\"enum\":[1,\"x\",null]}", "{\"type\":[\"string\",\"null\"]}", "{\"minimum\":%s}",
                                  "{\"$ref\":\"#\"}", "{\"type\":\"string\",\"pattern\":\"a[b-d]*\"}", "true", "3"};
    for (int i = 0; i < 500; i++) {
        char a[2048] = "{}", b[2048];
        for (int d = 0; d < 4; d++) {
            const char *f = frags[rng_below(&rng, sizeof frags / sizeof frags[0])];
            snprintf(b, sizeof b, f, a, a);
            memcpy(a, b, sizeof a);
        }
        json_t *s = json_loads(a, JSON_DECODE_ANY, NULL);
        sl_grammar *g = NULL;
        if (s && sl_grammar_from_json_schema(s, &g, NULL) == 0) {
            sl_matcher *m;
            if (sl_matcher_create(g, 0, &m, NULL) == 0) {
                uint8_t buf[512];
                size_t n = 0;
                CHECK(random_walk(m, &rng, 300, 0.1, buf, &n) >= 0);
                sl_matcher_free(m);
            }
        }
        sl_grammar_free(g);
        json_decref(s);
    }
}

int main(void) {
    TEST_RUN(test_gbnf_errors);
    TEST_RUN(test_gbnf_match);
    TEST_RUN(test_json_object);
    TEST_RUN(test_choices_and_regex);
    TEST_RUN(test_schema_match);
    TEST_RUN(test_schema_errors);
    TEST_RUN(test_state_ops);
    TEST_RUN(test_masks_synthetic);
    TEST_RUN(test_masks_cached);
    TEST_RUN(test_masks_cached_threads);
    TEST_RUN(test_random_inputs);
    TEST_EXIT();
}
