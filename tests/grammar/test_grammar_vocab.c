/* test_grammar_vocab.c -- masks on a real vocabulary (argv[1]: a byte-level
 * tokenizer.json, the default model's when present) against brute force, at
 * random states of a JSON-schema grammar, and the time per mask.
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

static void test_vocab_masks(void) {
    const vocab *v = &g_vocab;
    double t0 = sl_now_s() * 1e6;
    sl_token_trie *t;
    CHECK_EQ_INT(sl_token_trie_create(v->tok, v->n, &v->eos, 1, &t, NULL), 0);
    fprintf(stderr, "trie: %u tokens, %u nodes, built in %.1f ms\n", v->n, t->n_nodes, (sl_now_s() * 1e6 - t0) / 1e3);
    json_t *s = json_loads(SCHEMA, 0, NULL);
    sl_grammar *g = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(sl_grammar_from_json_schema(s, &g, &err), 0);
    sl_matcher *m, *scratch;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    CHECK_EQ_INT(sl_matcher_create(g, 0, &scratch, NULL), 0);
    uint32_t words = (v->n + 31) / 32;
    uint32_t *mask = calloc(words, 4), *want = calloc(words, 4);
    uint64_t rng = 2024;
    uint8_t buf[4096];
    double total_us = 0;
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
        double a = sl_now_s() * 1e6;
        for (int r = 0; r < 5; r++) CHECK_EQ_INT(sl_matcher_fill_mask(m, t, mask, NULL), 0);
        double us = (sl_now_s() * 1e6 - a) / 5;
        total_us += us;
        n_masks++;
        brute_mask(m, scratch, v, want);
        uint32_t allowed = 0;
        for (uint32_t id = 0; id < v->n; id++) allowed += (mask[id >> 5] >> (id & 31)) & 1;
        json_t *tail = json_stringn((const char *)buf + (n > 30 ? n - 30 : 0), n > 30 ? 30 : n);
        char *shown = tail ? json_dumps(tail, JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "state %d: %zu bytes, ending %s: %u tokens allowed, %.0f us per mask\n", st, n,
                shown ? shown : "(cut inside a character)", allowed, us);
        free(shown);
        json_decref(tail);
        CHECK(memcmp(mask, want, words * 4) == 0);
    }
    fprintf(stderr, "mask: %.0f us on average over %d states (%u-token vocabulary)\n", total_us / n_masks, n_masks,
            v->n);
    free(mask);
    free(want);
    sl_matcher_free(m);
    sl_matcher_free(scratch);
    sl_grammar_free(g);
    json_decref(s);
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
    vocab_free(&g_vocab);
    sl_tokenizer_free(tok);
    TEST_EXIT();
}
