/* sampler.c -- temperature, top-k, top-p, min-p and penalties over a logits
 * row, and the per-request random stream (xoshiro256**, seeded through
 * splitmix64, as its authors recommend).
 *
 * The filters work on probabilities in descending order (ties by id): top-k
 * keeps a prefix, top-p the shortest prefix whose mass reaches p, min-p the
 * prefix whose probability is at least min_p times the largest, and the draw
 * walks the survivors. Nothing sorts the whole vocabulary: the descending
 * order is built a block at a time (a linear-time selection of the next most
 * probable ids, then a sort of just those), only as far as the filters and
 * the draw look, which for a peaked distribution is a few hundred ids of
 * 49152; with no filter on, the draw walks the ids in turn and nothing is
 * ordered. The exponentials are computed 16 at a time. */
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util/simd.h"

/* ---- random stream ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sl_rng_seed(sl_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

uint64_t sl_rng_random_seed(void) {
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) == (ssize_t)sizeof seed) return seed;
    return (uint64_t)time(NULL) ^ (uint64_t)clock();
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(sl_rng *r) {
    uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sl_rng_uniform(sl_rng *rng) { return (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0); }

/* ---- parameters ---- */

sl_sampling_params sl_sampling_params_default(void) {
    return (sl_sampling_params){.temperature = 1.0f, .top_p = 1.0f, .top_k = 0, .min_p = 0.0f,
                                .repetition_penalty = 1.0f};
}

int sl_sampling_params_check(const sl_sampling_params *p, sl_err *err) {
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return sl_err_set(err, SL_EINVAL, "temperature must be >= 0 (got %g)", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return sl_err_set(err, SL_EINVAL, "top_p must be in (0, 1] (got %g)", p->top_p);
    if (p->top_k < -1) return sl_err_set(err, SL_EINVAL, "top_k must be -1 (off) or >= 0 (got %d)", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return sl_err_set(err, SL_EINVAL, "min_p must be in [0, 1] (got %g)", p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return sl_err_set(err, SL_EINVAL, "repetition_penalty must be > 0 (got %g)", p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return sl_err_set(err, SL_EINVAL, "presence_penalty must be in [-2, 2] (got %g)", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return sl_err_set(err, SL_EINVAL, "frequency_penalty must be in [-2, 2] (got %g)", p->frequency_penalty);
    return SL_OK;
}

/* ---- sampler ---- */

int sl_sampler_init(sl_sampler *s, int vocab, sl_err *err) {
    s->vocab = vocab;
    s->probs = malloc(sizeof *s->probs * (size_t)vocab);
    s->order = malloc(sizeof *s->order * (size_t)vocab);
    if (!s->probs || !s->order) {
        sl_sampler_destroy(s);
        return sl_err_set(err, SL_ENOMEM, "out of memory for the sampler");
    }
    return SL_OK;
}

void sl_sampler_destroy(sl_sampler *s) {
    free(s->probs);
    free(s->order);
    s->probs = NULL;
    s->order = NULL;
}

int32_t sl_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

void sl_sampler_apply_penalties(const sl_sampling_params *p, const sl_token_history *h, float *logits, int vocab) {
    if (!h) return;
    bool rep = p->repetition_penalty != 1.0f, add = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !add) return;
    for (int i = 0; i < vocab; i++) {
        int32_t count = h->output_counts ? h->output_counts[i] : 0;
        bool seen = count > 0 || (h->prompt_mask && h->prompt_mask[i]);
        if (rep && seen) logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty : logits[i] * p->repetition_penalty;
        if (add && count > 0) logits[i] -= p->frequency_penalty * (float)count + p->presence_penalty;
    }
}

/* Descending by probability, ties by id: a total order, so the descending
 * order is the same however it is built. */
static inline bool before(const float *probs, int32_t x, int32_t y) {
    return probs[x] > probs[y] || (probs[x] == probs[y] && x < y);
}

static int cmp_desc(const void *a, const void *b, void *probs) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return before(probs, x, y) ? -1 : before(probs, y, x) ? 1 : 0;
}

/* Moves the k ids of order[0..n) that come first in the total order to
 * order[0..k) (unsorted), in O(n): quickselect. */
static void select_first_k(int32_t *order, int n, int k, const float *probs) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int32_t pivot = order[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(probs, order[i], pivot)) i++;
            while (before(probs, pivot, order[j])) j--;
            if (i <= j) {
                int32_t t = order[i];
                order[i++] = order[j];
                order[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* The candidates order[0..n) with a sorted prefix order[0..sorted). */
typedef struct ranking {
    int32_t *order;
    const float *probs;
    int n, sorted;
} ranking;

/* The id at rank i (< n), sorting the next block first when the prefix ends before it. */
static int32_t rank_at(ranking *r, int i) {
    if (i >= r->sorted) {
        int want = r->sorted * 8 > i + 1 ? r->sorted * 8 : i + 1;
        if (want < 64) want = 64;
        if (want > r->n) want = r->n;
        select_first_k(r->order + r->sorted, r->n - r->sorted, want - r->sorted, r->probs);
        qsort_r(r->order + r->sorted, (size_t)(want - r->sorted), sizeof *r->order, cmp_desc, (void *)r->probs);
        r->sorted = want;
    }
    return r->order[i];
}

/* probs[i] = e^((logits[i] - max) / temperature), 16 at a time; returns their sum. */
static double scaled_exp(float *probs, const float *logits, int vocab, float max, float temperature) {
    const float inv_t = 1.0f / temperature;
    double sum = 0;
    int i = 0;
    for (; i + LANES <= vocab; i += LANES) {
        const vf e = vexp((load_f(logits + i) - max) * inv_t);
        store_f(probs + i, e);
        sum += lane_sum(e);
    }
    for (; i < vocab; i++) { /* the tail through the same code */
        const vf e = vexp(splat((logits[i] - max) * inv_t));
        probs[i] = e[0];
        sum += e[0];
    }
    return sum;
}

int32_t sl_sampler_sample(sl_sampler *s, const sl_sampling_params *p, float *logits, sl_rng *rng) {
    const int vocab = s->vocab;
    if (p->temperature < 1e-5f) return sl_argmax(logits, vocab);
    const double sum = scaled_exp(s->probs, logits, vocab, logits[sl_argmax(logits, vocab)], p->temperature);
    if ((p->top_k <= 0 || p->top_k >= vocab) && p->top_p >= 1.0f && p->min_p <= 0.0f) {
        /* nothing filtered: the draw needs no order, ids in turn will do */
        const double u = sl_rng_uniform(rng) * sum;
        double acc = 0;
        for (int i = 0; i < vocab; i++)
            if (u < (acc += s->probs[i])) return i;
        return sl_argmax(s->probs, vocab);
    }
    for (int i = 0; i < vocab; i++) {
        s->probs[i] = (float)(s->probs[i] / sum);
        s->order[i] = i;
    }
    ranking r = {s->order, s->probs, vocab, 0};
    if (p->top_k > 0 && p->top_k < vocab) {
        select_first_k(s->order, vocab, p->top_k, s->probs);
        r.n = p->top_k;
    }
    int n = r.n;
    if (p->top_p < 1.0f) { /* shortest prefix with mass >= top_p, renormalised over the top-k survivors */
        double mass = 0, total = 0;
        for (int i = 0; i < n; i++) total += s->probs[s->order[i]];
        int keep = 0;
        while (keep < n && mass < p->top_p * total) mass += s->probs[rank_at(&r, keep++)];
        n = keep > 0 ? keep : 1;
    }
    if (p->min_p > 0.0f) {
        const float floor_p = p->min_p * s->probs[rank_at(&r, 0)];
        int keep = 1;
        while (keep < n && s->probs[rank_at(&r, keep)] >= floor_p) keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->probs[s->order[i]];
    const double u = sl_rng_uniform(rng) * total;
    double acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->probs[rank_at(&r, i)];
        if (u < acc) return s->order[i];
    }
    return rank_at(&r, n - 1);
}
