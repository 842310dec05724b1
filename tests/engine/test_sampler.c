/* test_sampler.c -- the sampler against a reference written the plain way:
 * softmax in double, the whole vocabulary sorted (probability descending,
 * ties by id), top-k, top-p and min-p applied to that order, renormalised.
 * Many seeded draws must never leave the reference's surviving set, must
 * draw every likely id of it, and must follow its probabilities (total
 * variation over groups of ids of equal mass), on a small vocabulary
 * with ties and on SmolLM2's 49152 ids with a peaked distribution (where the
 * sampler sorts only the head of the order). */
#include <math.h>

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

static void check(const char *what, const float *logits, int vocab, sl_sampling_params p, int draws) {
    sl_sampler s;
    CHECK(sl_sampler_init(&s, vocab, &(sl_err){0}) == 0);
    double *want = malloc(sizeof(double) * (size_t)vocab), *got = calloc((size_t)vocab, sizeof(double));
    float *row = malloc(sizeof(float) * (size_t)vocab);
    reference(logits, vocab, &p, want);
    sl_rng rng;
    sl_rng_seed(&rng, 1234);
    int outside = 0, missing = 0;
    for (int d = 0; d < draws; d++) {
        memcpy(row, logits, sizeof(float) * (size_t)vocab);
        int32_t t = sl_sampler_sample(&s, &p, row, &rng);
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
    free(want), free(got), free(row);
    sl_sampler_destroy(&s);
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

int main(void) {
    TEST_RUN(test_small_vocabulary_with_ties);
    TEST_RUN(test_large_peaked_vocabulary);
    TEST_EXIT();
}
