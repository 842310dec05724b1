/* test_grammar_vocab.c -- masks on a real vocabulary (argv[1]: a byte-level
 * tokenizer.json, the default model's when present): the plain walk and the
 * cached mask against brute force at states of a JSON-schema grammar, the
 * cached mask against the plain walk at random states of four grammars and
 * along a bounded string (minLength / maxLength), and the time of each (the
 * cached one warm and at first use).
 *
 * The token bytes come from the tokenizer's token strings through the GPT-2
 * byte<->char table (vocab_from_tokenizer); exits 77 (skip) when the file is
 * missing or the vocabulary is not byte-level. */
#include <stdio.h>

#include "grammar_test_util.h"
#include "test.h"
#include "util/progress.h"

static vocab g_vocab; /* the tokenizer's, loaded by main */

static const char SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":4},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"[0-9]{5}\"}},\"required\":[\"city\"]},"
    "\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]}},"
    "\"required\":[\"name\",\"age\",\"role\"],\"additionalProperties\":false}";

static double now_us(void) { return sl_now_s() * 1e6; }

static uint32_t count_bits(const uint32_t *mask, uint32_t n) {
    uint32_t k = 0;
    for (uint32_t id = 0; id < n; id++) k += (mask[id >> 5] >> (id & 31)) & 1;
    return k;
}

static void print_usage(sl_mask_cache *c) {
    uint32_t n_entries;
    size_t n_bytes;
    bool full;
    sl_mask_cache_usage(c, &n_entries, &n_bytes, &full);
    fprintf(stderr, "  mask cache: %u entries, %.0f KiB%s\n", n_entries, n_bytes / 1024.0, full ? " (full)" : "");
}

/* Ten states of SCHEMA (two inside a string, eight random): the plain walk
 * against brute force, then the cached mask against it -- first use (which
 * builds the entries the state needs) and warm. */
static void test_vocab_masks(void) {
    const vocab *v = &g_vocab;
    double t0 = now_us();
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v->tok, v->n, &v->eos, 1, &t, NULL), 0);
    fprintf(stderr, "trie: %u tokens, %u nodes, built in %.1f ms\n", v->n, t->n_nodes, (now_us() - t0) / 1e3);
    json_t *s = json_loads(SCHEMA, 0, NULL);
    sl_grammar *g = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(sl_grammar_from_json_schema(s, &g, &err), 0);
    sl_matcher *m, *scratch;
    sl_mask_cache *cache;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_create(g, 0, &scratch, NULL), 0);
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    uint32_t words = (v->n + 31) / 32;
    uint32_t *mask = calloc(words, 4), *want = calloc(words, 4), *cached = calloc(words, 4);
    uint64_t rng = 2024;
    uint8_t buf[4096];
    double plain_sum = 0, cached_sum = 0, cached_max = 0;
    int n_masks = 0;
    for (int st = 0; st < 10; st++) {
        sl_matcher_rollback(m, sl_matcher_len(m));
        size_t n = 0;
        if (st < 2) { /* inside a string value, the widest mask */
            const char *p = st == 0 ? "{\"name\": \"Jo" : "{\"name\":\"x\",\"age\":1,\"email\":\"a@b.c";
            n = strlen(p);
            memcpy(buf, p, n);
            CHECK_EQ_INT(sl_matcher_accept(m, buf, n, NULL), 1);
        } else {
            CHECK(random_walk(m, &rng, 10 + rng_below(&rng, 150), 0.0, buf, &n) >= 0);
        }
        double a = now_us();
        for (int r = 0; r < 5; r++) CHECK_EQ_INT(sl_matcher_fill_mask(m, t, mask, NULL), 0);
        double plain = (now_us() - a) / 5;
        a = now_us();
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, cached, NULL), 0);
        double first = now_us() - a;
        a = now_us();
        for (int r = 0; r < 5; r++) CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, cached, NULL), 0);
        double warm = (now_us() - a) / 5;
        plain_sum += plain;
        cached_sum += warm;
        cached_max = warm > cached_max ? warm : cached_max;
        n_masks++;
        brute_mask(m, scratch, v, want);
        json_t *tail = json_stringn((const char *)buf + (n > 30 ? n - 30 : 0), n > 30 ? 30 : n);
        char *shown = tail ? json_dumps(tail, JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "state %d: %zu bytes, ending %s: %u tokens allowed; plain %.0f us, cached %.0f us "
                "(first use %.0f us)\n", st, n, shown ? shown : "(cut inside a character)", count_bits(mask, v->n),
                plain, warm, first);
        free(shown);
        json_decref(tail);
        CHECK(memcmp(mask, want, words * 4) == 0);
        CHECK(memcmp(cached, want, words * 4) == 0);
    }
    fprintf(stderr, "mask: plain %.0f us, cached %.1f us on average (at most %.1f) over %d states (%u tokens)\n",
            plain_sum / n_masks, cached_sum / n_masks, cached_max, n_masks, v->n);
    print_usage(cache);
    free(mask);
    free(want);
    free(cached);
    sl_mask_cache_free(cache);
    sl_matcher_free(m);
    sl_matcher_free(scratch);
    sl_grammar_free(g);
    json_decref(s);
    sl_token_trie_free(t);
}

/* Cached masks equal the plain walk at random states of g (freed after);
 * prints the time of each (the cached one warm: each state's mask twice). */
static void check_cached_random(const char *name, sl_grammar *g, const sl_token_trie *t, int n_states,
                                uint64_t seed) {
    sl_matcher *m;
    sl_mask_cache *cache;
    CHECK(g != NULL);
    if (!g) return;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    uint32_t words = (t->n_tokens + 31) / 32;
    uint32_t *want = calloc(words, 4), *got = calloc(words, 4);
    uint64_t rng = seed;
    uint8_t buf[4096];
    double plain_sum = 0, first_sum = 0, warm_sum = 0, warm_max = 0;
    int mismatches = 0;
    for (int s = 0; s < n_states; s++) {
        size_t n;
        CHECK(random_state(m, &rng, 400, 0.01, buf, &n) >= 0);
        double a = now_us();
        CHECK_EQ_INT(sl_matcher_fill_mask(m, t, want, NULL), 0);
        double b = now_us();
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
        double c = now_us();
        mismatches += memcmp(got, want, words * 4) != 0;
        CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
        double d = now_us();
        mismatches += memcmp(got, want, words * 4) != 0;
        plain_sum += b - a;
        first_sum += c - b;
        warm_sum += d - c;
        warm_max = d - c > warm_max ? d - c : warm_max;
    }
    CHECK_EQ_INT(mismatches, 0);
    fprintf(stderr, "%s: %d random states: plain %.0f us, cached first %.0f us, warm %.1f us (at most %.1f)\n", name,
            n_states, plain_sum / n_states, first_sum / n_states, warm_sum / n_states, warm_max);
    print_usage(cache);
    free(want);
    free(got);
    sl_mask_cache_free(cache);
    sl_matcher_free(m);
    sl_grammar_free(g);
}

static void test_vocab_cached_random(void) {
    const vocab *v = &g_vocab;
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v->tok, v->n, &v->eos, 1, &t, NULL), 0);
    json_t *s = json_loads(SCHEMA, 0, NULL);
    sl_grammar *g = NULL;
    CHECK_EQ_INT(sl_grammar_from_json_schema(s, &g, NULL), 0);
    json_decref(s);
    check_cached_random("schema", g, t, 60, 1);
    g = NULL;
    CHECK_EQ_INT(sl_grammar_json_object(&g, NULL), 0);
    check_cached_random("json_object", g, t, 60, 2);
    const char *re = "[A-Z][a-z]{1,12}( [A-Z][a-z]+)* <[a-z0-9.]+@[a-z]+\\.(com|org)>";
    g = NULL;
    CHECK_EQ_INT(sl_grammar_from_regex(re, strlen(re), &g, NULL), 0);
    check_cached_random("regex", g, t, 60, 3);
    static const char GBNF[] = "root ::= stmt+\n"
                               "stmt ::= ident ws \"=\" ws expr \";\" \"\\n\"\n"
                               "expr ::= term ( ws [-+] ws term )*\n"
                               "term ::= ident | [0-9]+ | \"(\" expr \")\" | string\n"
                               "string ::= \"'\" [^'\\n]* \"'\"\n"
                               "ident ::= [a-z_] [a-z_0-9]*\n"
                               "ws ::= \" \"?\n";
    g = NULL;
    CHECK_EQ_INT(sl_grammar_parse_gbnf(GBNF, strlen(GBNF), &g, NULL), 0);
    check_cached_random("gbnf", g, t, 60, 4);
    sl_token_trie_free(t);
}

/* A bounded string on the real vocabulary (its longest token is L bytes: a
 * count within L + 1 of a bound is its own cache entry, one further away
 * shares the far class's): at every third position of a string of
 * minLength 120, maxLength 400, and at each of the last L + 3, the cached
 * mask equals the plain walk; prints the warm cached time near and far from
 * the bounds. */
static void test_vocab_bounded_string(void) {
    const vocab *v = &g_vocab;
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v->tok, v->n, &v->eos, 1, &t, NULL), 0);
    const int min = 120, max = 400, L = (int)t->max_depth;
    json_t *s = json_loads("{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"minLength\":120,"
                           "\"maxLength\":400}},\"required\":[\"s\"]}", 0, NULL);
    sl_grammar *g = NULL;
    CHECK_EQ_INT(sl_grammar_from_json_schema(s, &g, NULL), 0);
    json_decref(s);
    sl_matcher *m;
    sl_mask_cache *cache;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_mask_cache_create(g, t, 0, &cache, NULL), 0);
    uint32_t words = (v->n + 31) / 32;
    uint32_t *want = calloc(words, 4), *got = calloc(words, 4);
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"{\"s\": \"", 7, NULL), 1);
    static const char *chars[] = {"a", " ", "\xc3\xa9", "-", "\\n", "Z", "\xe4\xb8\xad"};
    double far_sum = 0, near_sum = 0, far_max = 0, near_max = 0;
    int n_far = 0, n_near = 0, mismatches = 0;
    for (int pos = 0; pos <= max; pos++) {
        if (pos % 3 == 0 || pos + L + 3 >= max) {
            CHECK_EQ_INT(sl_matcher_fill_mask(m, t, want, NULL), 0);
            CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
            double a = now_us();
            CHECK_EQ_INT(sl_matcher_fill_mask_cached(m, cache, got, NULL), 0);
            double us = now_us() - a;
            if (memcmp(got, want, words * 4) != 0) {
                if (!mismatches) fprintf(stderr, "  cached mask unlike the plain walk at %d\n", pos);
                mismatches++;
            }
            bool far = pos + L + 1 <= max && (pos >= min || pos + L + 1 <= min);
            if (far) far_sum += us, n_far++, far_max = us > far_max ? us : far_max;
            else near_sum += us, n_near++, near_max = us > near_max ? us : near_max;
        }
        if (pos < max) CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)chars[pos % 7], strlen(chars[pos % 7]), NULL), 1);
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"a", 1, NULL), 0);
    CHECK_EQ_INT(sl_matcher_accept(m, (const uint8_t *)"\"}", 2, NULL), 1);
    CHECK(sl_matcher_is_accepting(m));
    fprintf(stderr, "bounded string (L = %d): warm cached mask far from the bounds %.1f us (at most %.1f, %d positions), "
            "near them %.1f us (at most %.1f, %d positions)\n", L, n_far ? far_sum / n_far : 0, far_max, n_far,
            n_near ? near_sum / n_near : 0, near_max, n_near);
    print_usage(cache);
    free(want);
    free(got);
    sl_mask_cache_free(cache);
    sl_matcher_free(m);
    sl_grammar_free(g);
    sl_token_trie_free(t);
}

int main(int argc, char **argv) {
    const char *tok_path = argc > 1 ? argv[1] : "";
    sl_tokenizer *tok;
    sl_err err = {0};
    if (sl_tokenizer_load_file(tok_path, &tok, &err)) {
        printf("SKIP: no tokenizer at %s (%s)\n", tok_path, err.msg);
        return 77;
    }
        if (vocab_from_tokenizer(&g_vocab, tok)) {
        printf("SKIP: %s is not a byte-level vocabulary\n", tok_path);
        vocab_free(&g_vocab);
        sl_tokenizer_free(tok);
        return 77;
    }
    fprintf(stderr, "tokenizer: %s (eos %d)\n", tok_path, g_vocab.eos);
    TEST_RUN(test_vocab_masks);
    TEST_RUN(test_vocab_cached_random);
    TEST_RUN(test_vocab_bounded_string);
    vocab_free(&g_vocab);
    sl_tokenizer_free(tok);
    TEST_EXIT();
}
