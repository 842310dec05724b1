/* test_sampler.c -- the sampler against a reference written the plain way:
 * softmax in double, the whole vocabulary sorted (probability descending,
 * ties by id), top-k, top-p and min-p applied to that order, renormalised.
 * Many seeded draws must never leave the reference's surviving set, must
 * draw every likely id of it, and must follow its probabilities (total
 * variation over groups of ids of equal mass), on a small vocabulary
 * with ties and on SmolLM2's 49152 ids with a peaked distribution (where the
 * sampler sorts only the head of the order).
 *
 * Masks (structured output): a row with a mask picks exactly the token its
 * logits with -inf at the masked ids pick (greedy and every filter, masks of
 * many ids, one id, none: -1), follows the reference over those logits, and
 * the CPU backend's sample op gives sl_sample_pick's token for each row of a
 * batch where some rows have masks. */
#include <math.h>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "test.h"

static uint64_t g_rng = 88172645463325252ull;
static double urand(void) { /* xorshift64, uniform in [0, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

static const double *g_ref; /* for the qsort comparator */
static int by_prob_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (g_ref[x] != g_ref[y]) return g_ref[x] > g_ref[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* want[id]: the reference's probability of drawing id. */
static void reference(const float *logits, int vocab, const sl_sampling_params *p, double *want) {
    double *probs = malloc(sizeof(double) * (size_t)vocab), mx = -INFINITY, sum = 0;
    int *order = malloc(sizeof(int) * (size_t)vocab);
    for (int i = 0; i < vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < vocab; i++) sum += probs[i] = exp((logits[i] - mx) / p->temperature);
    for (int i = 0; i < vocab; i++) probs[i] /= sum, order[i] = i;
    g_ref = probs;
    qsort(order, (size_t)vocab, sizeof *order, by_prob_desc);
    int n = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab;
    if (p->top_p < 1.0f) {
        double total = 0, mass = 0;
        for (int i = 0; i < n; i++) total += probs[order[i]];
        int keep = 0;
        while (keep < n && mass < p->top_p * total) mass += probs[order[keep++]];
        n = keep;
    }
    if (p->min_p > 0.0f) {
        int keep = 1;
        while (keep < n && probs[order[keep]] >= p->min_p * probs[order[0]]) keep++;
        n = keep;
    }
    double kept = 0;
    for (int i = 0; i < n; i++) kept += probs[order[i]];
    for (int i = 0; i < vocab; i++) want[i] = 0;
    for (int i = 0; i < n; i++) want[order[i]] = probs[order[i]] / kept;
    free(probs), free(order);
}

/* Total variation between the draws and the reference over BUCKETS groups of
 * ids of about equal reference mass (in reference order): per-id frequencies
 * of a few thousand draws over hundreds of ids would be mostly noise. */
enum { BUCKETS = 20 };
static double bucketed_tv(const double *want, const double *got, int vocab) {
    int *order = malloc(sizeof(int) * (size_t)vocab);
    for (int i = 0; i < vocab; i++) order[i] = i;
    g_ref = want;
    qsort(order, (size_t)vocab, sizeof *order, by_prob_desc);
    double w[BUCKETS] = {0}, g[BUCKETS] = {0}, mass = 0, tv = 0;
    for (int i = 0; i < vocab; i++) {
        int b = (int)(mass * BUCKETS);
        b = b < BUCKETS ? b : BUCKETS - 1;
        w[b] += want[order[i]], g[b] += got[order[i]], mass += want[order[i]];
    }
    for (int b = 0; b < BUCKETS; b++) tv += fabs(w[b] - g[b]) / 2;
    free(order);
    return tv;
}

static bool allowed(const uint32_t *mask, int id) { return (mask[id >> 5] >> (id & 31)) & 1u; }

/* logits with -inf at the ids the mask leaves out (NULL: a copy). */
static float *minus_inf_outside(const float *logits, int vocab, const uint32_t *mask) {
    float *row = malloc(sizeof(float) * (size_t)vocab);
    for (int i = 0; i < vocab; i++) row[i] = !mask || allowed(mask, i) ? logits[i] : -INFINITY;
    return row;
}

/* Draws through sl_sampler_sample, or, with a mask, sl_sample_pick with it; the
 * reference sees the logits with -inf outside the mask. */
static void check_masked(const char *what, const float *logits, int vocab, sl_sampling_params p, int draws,
                         const uint32_t *mask) {
    sl_sampler s;
    CHECK(sl_sampler_init(&s, vocab, &(sl_err){0}) == 0);
    double *want = malloc(sizeof(double) * (size_t)vocab), *got = calloc((size_t)vocab, sizeof(double));
    float *row = malloc(sizeof(float) * (size_t)vocab), *masked = minus_inf_outside(logits, vocab, mask);
    reference(masked, vocab, &p, want);
    sl_rng rng;
    sl_rng_seed(&rng, 1234);
    int outside = 0, missing = 0;
    for (int d = 0; d < draws; d++) {
        int32_t t;
        if (mask) {
            const sl_sample_row r = sl_sample_row_of(&p, &rng);
            t = sl_sample_pick(logits, vocab, &r, mask, s.probs, s.order);
        } else {
            memcpy(row, logits, sizeof(float) * (size_t)vocab);
            t = sl_sampler_sample(&s, &p, row, &rng);
        }
        if (t < 0 || t >= vocab || want[t] == 0) outside++;
        else got[t] += 1.0 / draws;
    }
    for (int i = 0; i < vocab; i++) missing += want[i] * draws >= 20 && got[i] == 0; /* expected 20 times, never drawn */
    /* three times what sampling noise alone gives at most: 0.5 * sqrt(BUCKETS / draws) */
    const double tv = bucketed_tv(want, got, vocab), tv_limit = 1.5 * sqrt((double)BUCKETS / draws);
    if (outside || missing || tv > tv_limit)
        fprintf(stderr, "%s: %d draws outside the kept set, %d likely ids never drawn, total variation %.4f\n", what,
                outside, missing, tv);
    CHECK_EQ_INT(outside, 0);
    CHECK_EQ_INT(missing, 0);
    CHECK(tv < tv_limit);
    free(want), free(got), free(row), free(masked);
    sl_sampler_destroy(&s);
}

static void check(const char *what, const float *logits, int vocab, sl_sampling_params p, int draws) {
    check_masked(what, logits, vocab, p, draws, NULL);
}

static sl_sampling_params params(float temperature, int top_k, float top_p, float min_p) {
    sl_sampling_params p = sl_sampling_params_default();
    p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
    return p;
}

/* 300 ids, logits on a grid of 0.25 (many ties). */
static void test_small_vocabulary_with_ties(void) {
    enum { V = 300 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)(int)(urand() * 24) * 0.25f - 3.0f;
    check("plain", logits, V, params(1.0f, 0, 1.0f, 0.0f), 30000);
    check("temperature 0.5", logits, V, params(0.5f, 0, 1.0f, 0.0f), 30000);
    check("top_k 20", logits, V, params(1.0f, 20, 1.0f, 0.0f), 30000);
    check("top_p 0.6", logits, V, params(0.8f, 0, 0.6f, 0.0f), 30000);
    check("min_p 0.2", logits, V, params(1.0f, 0, 1.0f, 0.2f), 30000);
    check("top_k 50, top_p 0.9, min_p 0.05", logits, V, params(1.3f, 50, 0.9f, 0.05f), 30000);
}

/* A language model's shape: 49152 ids, a few hundred likely ones. */
static void test_large_peaked_vocabulary(void) {
    enum { V = 49152 };
    float *logits = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) logits[i] = (float)(urand() * 4.0) + (urand() < 0.01 ? 8.0f : 0.0f);
    check("49152 ids, plain", logits, V, params(1.0f, 0, 1.0f, 0.0f), 3000);
    check("49152 ids, top_p 0.95", logits, V, params(0.8f, 0, 0.95f, 0.0f), 3000);
    check("49152 ids, min_p 0.1", logits, V, params(1.0f, 0, 1.0f, 0.1f), 3000);
    free(logits);
}

/* ---- masks ---- */

/* A mask allowing each id with probability `density`. */
static uint32_t *random_mask(int vocab, double density) {
    uint32_t *mask = calloc(sl_sample_mask_words(vocab), sizeof *mask);
    for (int i = 0; i < vocab; i++)
        if (urand() < density) mask[i >> 5] |= 1u << (i & 31);
    return mask;
}

static uint32_t *one_id_mask(int vocab, int id) {
    uint32_t *mask = calloc(sl_sample_mask_words(vocab), sizeof *mask);
    mask[id >> 5] |= 1u << (id & 31);
    return mask;
}

static const sl_sample_row KINDS[] = {
    {.temperature = 0, .top_p = 1, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 1, .top_p = 1, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 0.6f, .top_p = 0.9f, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 1, .top_k = 1, .top_p = 1, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 1, .top_k = 20, .top_p = 1, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 0.8f, .top_p = 0.6f, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 1, .top_p = 1, .min_p = 0.1f, .mask = SL_SAMPLE_NO_MASK},
    {.temperature = 1.3f, .top_k = 50, .top_p = 0.9f, .min_p = 0.05f, .mask = SL_SAMPLE_NO_MASK},
};
enum { N_KINDS = sizeof KINDS / sizeof KINDS[0] };

/* Every kind of row, many draws: the masked pick is the pick over -inf outside the mask, bit for bit. */
static void check_same_as_minus_inf(const char *what, const float *logits, int vocab, const uint32_t *mask) {
    float *masked = minus_inf_outside(logits, vocab, mask), *probs = malloc(sizeof(float) * (size_t)vocab);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)vocab);
    int differ = 0;
    for (int k = 0; k < N_KINDS; k++)
        for (int d = 0; d < 40; d++) {
            sl_sample_row r = KINDS[k];
            r.u = (float)urand();
            const int32_t got = sl_sample_pick(logits, vocab, &r, mask, probs, order);
            const int32_t want = sl_sample_pick(masked, vocab, &r, NULL, probs, order);
            if (got != want && differ++ < 5)
                fprintf(stderr, "%s: kind %d, u %.7f: masked %d, -inf %d\n", what, k, r.u, got, want);
            CHECK(got >= 0 && got < vocab && allowed(mask, got));
        }
    CHECK_EQ_INT(differ, 0);
    free(masked), free(probs), free(order);
}

static void test_masks_act_as_minus_inf(void) {
    const int vocabs[] = {300, 1031, 49152}; /* 1031: a tail past the last 16 and 32 ids */
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++) {
        const int vocab = vocabs[v];
        float *logits = malloc(sizeof(float) * (size_t)vocab);
        for (int i = 0; i < vocab; i++) /* ties on a grid; the largest logits mostly masked out below */
            logits[i] = (float)(int)(urand() * 24) * 0.25f - 3.0f + (urand() < 0.01 ? 8.0f : 0.0f);
        const double densities[] = {0.9, 0.3, 0.01};
        for (size_t d = 0; d < sizeof densities / sizeof densities[0]; d++) {
            uint32_t *mask = random_mask(vocab, densities[d]);
            mask[0] |= 1u; /* at least one id */
            char what[64];
            snprintf(what, sizeof what, "%d ids, density %.2f", vocab, densities[d]);
            check_same_as_minus_inf(what, logits, vocab, mask);
            free(mask);
        }
        uint32_t *one = one_id_mask(vocab, vocab - 1); /* the last id, in the tail */
        check_same_as_minus_inf("one id allowed", logits, vocab, one);
        sl_sample_row r = KINDS[7];
        r.u = 0.999f;
        float *probs = malloc(sizeof(float) * (size_t)vocab);
        int32_t *order = malloc(sizeof(int32_t) * (size_t)vocab);
        CHECK_EQ_INT(sl_sample_pick(logits, vocab, &r, one, probs, order), vocab - 1);
        memset(one, 0, sl_sample_mask_words(vocab) * sizeof *one); /* nothing allowed: -1 */
        CHECK_EQ_INT(sl_sample_pick(logits, vocab, &r, one, probs, order), -1);
        CHECK_EQ_INT(sl_sample_pick(logits, vocab, &KINDS[0], one, probs, order), -1);
        free(one), free(probs), free(order), free(logits);
    }
}

/* Draws with a mask follow the reference over the allowed ids. */
static void test_masked_draws_follow_the_reference(void) {
    enum { V = 300 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)(int)(urand() * 24) * 0.25f - 3.0f;
    uint32_t *mask = random_mask(V, 0.3);
    check_masked("masked, plain", logits, V, params(1.0f, 0, 1.0f, 0.0f), 30000, mask);
    check_masked("masked, top_k 20", logits, V, params(1.0f, 20, 1.0f, 0.0f), 30000, mask);
    check_masked("masked, top_p 0.6", logits, V, params(0.8f, 0, 0.6f, 0.0f), 30000, mask);
    check_masked("masked, top_k 50, top_p 0.9, min_p 0.05", logits, V, params(1.3f, 50, 0.9f, 0.05f), 30000, mask);
    free(mask);
}

/* The CPU backend's op: rows with and without masks in one batch, each sl_sample_pick's token. */
static void test_cpu_sample_op(void) {
    enum { V = 1031, ROWS = 48 };
    sl_backend b;
    sl_err err = {0};
    CHECK_EQ_INT(sl_backend_create("cpu", &(sl_backend_options){.n_threads = 2}, &b, &err), 0);
    const size_t words = sl_sample_mask_words(V);
    float *logits = malloc(sizeof(float) * V * ROWS), *probs = malloc(sizeof(float) * V);
    uint32_t *masks = calloc(words * ROWS, sizeof *masks);
    int32_t tokens[ROWS], *order = malloc(sizeof(int32_t) * V);
    sl_sample_row rows[ROWS];
    int n_masks = 0;
    for (int i = 0; i < V * ROWS; i++) logits[i] = (float)(urand() * 6.0) + (urand() < 0.02 ? 6.0f : 0.0f);
    for (int r = 0; r < ROWS; r++) {
        rows[r] = KINDS[r % N_KINDS];
        rows[r].u = (float)urand();
        if (r % 3 == 0) continue; /* two rows in three masked, their masks in reverse row order */
        uint32_t *m = r % 9 == 1 ? one_id_mask(V, (int)(urand() * V)) : random_mask(V, 0.05);
        if (r == ROWS - 1) memset(m, 0, words * sizeof *m); /* nothing allowed */
        rows[r].mask = ROWS - 1 - n_masks++;
        memcpy(masks + (size_t)rows[r].mask * words, m, words * sizeof *m);
        free(m);
    }
    b.iface->sample(b.ctx, tokens, logits, rows, masks, ROWS, V);
    CHECK_EQ_INT(b.iface->synchronize(b.ctx, &err), 0);
    for (int r = 0; r < ROWS; r++) {
        const uint32_t *m = rows[r].mask >= 0 ? masks + (size_t)rows[r].mask * words : NULL;
        CHECK_EQ_INT(tokens[r], sl_sample_pick(logits + (size_t)r * V, V, &rows[r], m, probs, order));
    }
    CHECK_EQ_INT(tokens[ROWS - 1], -1);
    free(logits), free(probs), free(masks), free(order);
    sl_backend_destroy(&b);
}

int main(void) {
    TEST_RUN(test_small_vocabulary_with_ties);
    TEST_RUN(test_large_peaked_vocabulary);
    TEST_RUN(test_masks_act_as_minus_inf);
    TEST_RUN(test_masked_draws_follow_the_reference);
    TEST_RUN(test_cpu_sample_op);
    TEST_EXIT();
}
