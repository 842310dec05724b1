/* test_block_pool.c -- KV blocks: reference counts, the LRU free queue,
 * prefix publication and claims, and a random walk checked after every
 * operation against a plain model of what each block should be. */
#include "engine/block_pool.h"
#include "test.h"

static void test_alloc_release_lru(void) {
    sl_block_pool *p;
    sl_err err = {0};
    CHECK_EQ_INT(sl_block_pool_create(4, 2, true, &p, &err), 0);
    int32_t a = sl_block_pool_alloc(p), b = sl_block_pool_alloc(p);
    CHECK(a == 0 && b == 1);
    CHECK_EQ_INT(sl_block_pool_n_free(p), 2);
    int32_t toks[4] = {7, 8, 9, 10};
    uint64_t h0 = sl_block_hash(0, toks, 2), h1 = sl_block_hash(h0, toks + 2, 2);
    sl_block_pool_publish(p, a, h0, 0, toks);
    sl_block_pool_publish(p, b, h1, h0, toks + 2);
    sl_block_pool_release(p, b); /* b then a join the tail: b is evicted first */
    sl_block_pool_release(p, a);
    CHECK_EQ_INT(sl_block_pool_check(p, &err), 0);
    int32_t got[2];
    uint64_t last;
    CHECK_EQ_INT(sl_block_pool_claim_prefix(p, toks, 4, 2, got, &last), 2);
    CHECK(got[0] == a && got[1] == b && last == h1);
    CHECK_EQ_INT(sl_block_pool_refcount(p, a), 1);
    /* a different second block only matches the first */
    int32_t other[4] = {7, 8, 1, 2};
    sl_block_pool_release(p, a);
    sl_block_pool_release(p, b);
    CHECK_EQ_INT(sl_block_pool_claim_prefix(p, other, 4, 2, got, &last), 1);
    sl_block_pool_release(p, got[0]);
    /* allocating all four evicts the published ones, oldest released first */
    for (int i = 0; i < 4; i++) CHECK(sl_block_pool_alloc(p) >= 0);
    CHECK_EQ_INT(sl_block_pool_alloc(p), -1);
    CHECK_EQ_INT(sl_block_pool_check(p, &err), 0);
    for (int32_t i = 0; i < 4; i++) sl_block_pool_release(p, i);
    CHECK_EQ_INT(sl_block_pool_claim_prefix(p, toks, 4, 2, got, &last), 0); /* evicted: forgotten */
    sl_block_pool_destroy(p);
}

static void test_collision_safe(void) {
    sl_block_pool *p;
    sl_err err = {0};
    CHECK_EQ_INT(sl_block_pool_create(2, 2, true, &p, &err), 0);
    int32_t a = sl_block_pool_alloc(p), toks[2] = {1, 2}, other[2] = {3, 4};
    sl_block_pool_publish(p, a, 42, 0, toks); /* claimed under a hash its tokens do not give */
    int32_t got[1];
    uint64_t last;
    /* lookups recompute the hash from the tokens, and compare tokens too */
    CHECK_EQ_INT(sl_block_pool_claim_prefix(p, other, 2, 1, got, &last), 0);
    sl_block_pool_release(p, a);
    sl_block_pool_destroy(p);
}

static void test_random_walk(void) {
    enum { BLOCKS = 32, BS = 4, STEPS = 20000 };
    sl_block_pool *p;
    sl_err err = {0};
    CHECK_EQ_INT(sl_block_pool_create(BLOCKS, BS, true, &p, &err), 0);
    int32_t held[256];
    int n_held = 0, expect_ref[BLOCKS] = {0};
    uint64_t x = 99;
    for (int step = 0; step < STEPS; step++) {
        x = x * 6364136223846793005ull + 1;
        int op = (int)((x >> 40) % 4);
        if (op == 0) {
            int32_t b = sl_block_pool_alloc(p);
            if (b >= 0) {
                CHECK_EQ_INT(expect_ref[b], 0);
                expect_ref[b] = 1;
                if (n_held < 256) held[n_held++] = b;
                else sl_block_pool_release(p, b), expect_ref[b] = 0;
            }
        } else if (op == 1 && n_held) {
            int i = (int)((x >> 20) % (uint64_t)n_held);
            sl_block_pool_release(p, held[i]);
            expect_ref[held[i]]--;
            held[i] = held[--n_held];
        } else if (op == 2 && n_held) {
            int32_t b = held[(x >> 20) % (uint64_t)n_held], toks[BS];
            for (int i = 0; i < BS; i++) toks[i] = (int32_t)((x >> (8 * i)) % 3);
            sl_block_pool_publish(p, b, sl_block_hash(0, toks, BS), 0, toks);
        } else if (n_held < 250) {
            int32_t toks[BS], got[1];
            uint64_t last;
            for (int i = 0; i < BS; i++) toks[i] = (int32_t)((x >> (8 * i)) % 3);
            if (sl_block_pool_claim_prefix(p, toks, BS, 1, got, &last) == 1) {
                expect_ref[got[0]]++;
                held[n_held++] = got[0];
            }
        }
        if (sl_block_pool_check(p, &err)) {
            fprintf(stderr, "step %d: %s\n", step, err.msg);
            CHECK(0);
            break;
        }
        for (int32_t b = 0; b < BLOCKS; b++) CHECK_EQ_INT(sl_block_pool_refcount(p, b), expect_ref[b]);
    }
    while (n_held) sl_block_pool_release(p, held[--n_held]);
    CHECK_EQ_INT(sl_block_pool_n_free(p), BLOCKS);
    sl_block_pool_destroy(p);
}

int main(void) {
    TEST_RUN(test_alloc_release_lru);
    TEST_RUN(test_collision_safe);
    TEST_RUN(test_random_walk);
    TEST_EXIT();
}
