/* grammar_test_util.h -- helpers the grammar tests and driver share:
 * a seeded RNG, random walks and states of a matcher, token vocabularies (a
 * synthetic one, and a real tokenizer's raw token bytes), and the
 * brute-force mask every fill_mask result is checked against. */
#ifndef SL_TEST_GRAMMAR_UTIL_H
#define SL_TEST_GRAMMAR_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "grammar/token_trie.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

static inline uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint32_t rng_below(uint64_t *s, uint32_t n) { return n ? (uint32_t)(rng_next(s) % n) : 0; }

/* A random byte of the class (which must not be empty). */
static inline uint8_t class_pick(const sl_gclass *c, uint64_t *rng) {
    int n = 0;
    for (int b = 0; b < 256; b++) n += sl_gclass_has(c, (uint8_t)b);
    int k = (int)rng_below(rng, (uint32_t)n);
    for (int b = 0; b < 256; b++)
        if (sl_gclass_has(c, (uint8_t)b) && k-- == 0) return (uint8_t)b;
    return 0;
}

/* Walks from the matcher's state: each step picks a random waiting item
 * and a random byte of its class; once accepting, stops with probability
 * p_stop per step. Returns 1 when it ended accepting, 0 when max_len was
 * reached first, <0 on an error. The bytes walked are appended to out. */
static inline int random_walk(sl_matcher *m, uint64_t *rng, size_t max_len, double p_stop, uint8_t *out,
                              size_t *n_out) {
    sl_gclass cls[512];
    for (size_t step = 0; step < max_len; step++) {
        int acc = sl_matcher_is_accepting(m);
        size_t n = sl_matcher_next_classes(m, cls, 512);
        if (acc && (n == 0 || (double)rng_below(rng, 1000000) / 1e6 < p_stop)) return 1;
        if (n == 0) return -1; /* neither accepting nor able to continue: a bug */
        if (n > 512) n = 512;
        uint8_t b = class_pick(&cls[rng_below(rng, (uint32_t)n)], rng);
        int rc = sl_matcher_accept(m, &b, 1, NULL);
        if (rc != 1) return -2; /* a byte of a waiting class was refused: a bug */
        out[(*n_out)++] = b;
    }
    return sl_matcher_is_accepting(m);
}

/* A random point of a random output: from the start, walks (random_walk,
 * ending with probability p_stop per step once accepting) and rolls back a
 * random number of the bytes walked; *n_out is the bytes kept. */
static inline int random_state(sl_matcher *m, uint64_t *rng, size_t max_len, double p_stop, uint8_t *out,
                               size_t *n_out) {
    sl_matcher_rollback(m, sl_matcher_len(m));
    *n_out = 0;
    int rc = random_walk(m, rng, max_len, p_stop, out, n_out);
    size_t back = rng_below(rng, (uint32_t)*n_out + 1);
    sl_matcher_rollback(m, back);
    *n_out -= back;
    return rc;
}

/* ---- vocabularies ------------------------------------------------------ */

typedef struct vocab {
    sl_token_bytes *tok;
    uint8_t **owned;
    uint32_t n;
    int32_t eos;
} vocab;

static inline void vocab_free(vocab *v) {
    for (uint32_t i = 0; i < v->n; i++) free(v->owned[i]);
    free(v->owned);
    free(v->tok);
    memset(v, 0, sizeof *v);
}

static inline void vocab_set(vocab *v, uint32_t id, const uint8_t *b, uint32_t n, bool special) {
    v->owned[id] = malloc(n ? n : 1);
    if (n) memcpy(v->owned[id], b, n);
    v->tok[id] = (sl_token_bytes){.bytes = v->owned[id], .n_bytes = n, .special = special};
}

/* id 0 "<eos>" (special), ids 1..256 every single byte, then random
 * concatenations of JSON-ish pieces (incl. multi-byte and partial UTF-8). */
static inline void vocab_synthetic(vocab *v, uint32_t n, uint64_t seed) {
    static const char *pieces[] = {"{", "}", "[", "]", "\"", ":", ",", " ", "\n", "  ", "true", "false", "null",
                                   "0", "1", "12", "-", ".", "e", "+", "a", "b", "name", "age", "x", "\\",
                                   "\\n", "\\u00", "é", "中", "\xe4\xb8", "\xad", "\xf0\x9f\x98", "\x80",
                                   "(", ")", "*", "/", "id", "ok", "-0", "\t", "{\"", "\":", "\", \"", "\"}"};
    uint64_t rng = seed;
    v->n = n;
    v->eos = 0;
    v->tok = calloc(n, sizeof *v->tok);
    v->owned = calloc(n, sizeof *v->owned);
    vocab_set(v, 0, (const uint8_t *)"<eos>", 5, true);
    for (uint32_t b = 0; b < 256 && b + 1 < n; b++) {
        uint8_t c = (uint8_t)b;
        vocab_set(v, b + 1, &c, 1, false);
    }
    for (uint32_t id = 257; id < n; id++) {
        uint8_t buf[64];
        uint32_t len = 0, k = 1 + rng_below(&rng, 4);
        for (uint32_t j = 0; j < k; j++) {
            const char *p = pieces[rng_below(&rng, sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(p);
            if (len + pl > sizeof buf) break;
            memcpy(buf + len, p, pl);
            len += (uint32_t)pl;
        }
        vocab_set(v, id, buf, len, false);
    }
}

/* A byte-level (GPT-2 style) tokenizer's raw token bytes: each token's
 * string mapped back through the byte<->char table. This is what the
 * server will do once the tokenizer exports a token -> bytes call. */
static inline int vocab_from_tokenizer(vocab *v, const sl_tokenizer *t) {
    const sl_tok_bytelevel *bl = sl_tok_bytelevel_table();
    v->n = (uint32_t)sl_tokenizer_vocab_size(t);
    v->eos = sl_tokenizer_eos_id(t);
    v->tok = calloc(v->n, sizeof *v->tok);
    v->owned = calloc(v->n, sizeof *v->owned);
    for (uint32_t id = 0; id < v->n; id++) {
        const char *s = sl_tokenizer_id_to_token(t, (int32_t)id);
        uint8_t buf[1024];
        uint32_t len = 0;
        bool special = !s || sl_tokenizer_is_special(t, (int32_t)id);
        for (size_t i = 0; s && !special && s[i] && len < sizeof buf;) {
            uint32_t cp;
            int l = sl_tok_utf8_next(s + i, strlen(s + i), &cp);
            if (cp >= 324 || bl->dec[cp] < 0) return -1; /* not a byte-level vocabulary */
            buf[len++] = (uint8_t)bl->dec[cp];
            i += (size_t)l;
        }
        vocab_set(v, id, buf, special ? 0 : len, special);
    }
    return 0;
}

/* ---- brute force -------------------------------------------------------- */

/* Mask by trying every token on a copy of m; scratch is a matcher of the same grammar. */
static inline void brute_mask(const sl_matcher *m, sl_matcher *scratch, const vocab *v, uint32_t *mask) {
    memset(mask, 0, ((v->n + 31) / 32) * 4);
    for (uint32_t id = 0; id < v->n; id++) {
        bool ok;
        if (v->tok[id].special || v->tok[id].n_bytes == 0) ok = (int32_t)id == v->eos && sl_matcher_is_accepting(m);
        else {
            sl_matcher_copy(scratch, m, NULL);
            ok = sl_matcher_accept(scratch, v->tok[id].bytes, v->tok[id].n_bytes, NULL) == 1;
        }
        if (ok) mask[id >> 5] |= 1u << (id & 31);
    }
}

#endif
