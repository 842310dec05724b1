/* sampler.c -- temperature, top-k, top-p, min-p and penalties over a logits
 * row, and the per-request random stream (xoshiro256**, seeded through
 * splitmix64, as its authors recommend).
 *
 * The filters are defined on probabilities in descending order (ties by id):
 * top-k keeps a prefix, top-p the shortest prefix whose mass reaches p, min-p
 * the prefix whose probability is at least min_p times the largest; the draw
 * is over the survivors, renormalised. Nothing is sorted: top-k and top-p are
 * linear-time selections (by count, then by mass), min-p a threshold, and the
 * draw walks the survivors in whatever order the selections left them (the
 * same order for the same logits, so seeded draws repeat). The exponentials
 * are computed 16 at a time. */
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

/* Moves to order[0..m) the ids of the shortest prefix of order[0..n)'s
 * descending order whose mass reaches `target`, unsorted, and returns m: a
 * quickselect that follows the mass instead of a count, O(n). */
static int select_mass(int32_t *order, int n, double target, const float *probs) {
    int lo = 0, hi = n; /* the last id kept lies in [lo, hi); order[0..lo) is kept, with mass `kept` */
    double kept = 0;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        const int32_t pivot = order[mid];
        order[mid] = order[hi - 1], order[hi - 1] = pivot;
        int i = lo;
        double mass_before = 0;
        for (int k = lo; k < hi - 1; k++)
            if (before(probs, order[k], pivot)) {
                const int32_t t = order[i];
                order[i++] = order[k], order[k] = t;
                mass_before += probs[order[i - 1]];
            }
        order[hi - 1] = order[i], order[i] = pivot;
        if (kept + mass_before >= target) {
            hi = i;
        } else if (kept + mass_before + probs[pivot] >= target) {
            return i + 1;
        } else {
            kept += mass_before + probs[pivot];
            lo = i + 1;
        }
    }
    return lo + 1 < n ? lo + 1 : n;
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
    /* probs stay unnormalised: every filter and the draw are ratios */
    for (int i = 0; i < vocab; i++) s->order[i] = i;
    int n = vocab; /* the candidates: order[0..n), in no particular order */
    if (p->top_k > 0 && p->top_k < vocab) {
        select_first_k(s->order, vocab, p->top_k, s->probs);
        n = p->top_k;
    }
    if (p->top_p < 1.0f) { /* shortest prefix with mass >= top_p, renormalised over the top-k survivors */
        double total = 0;
        for (int i = 0; i < n; i++) total += s->probs[s->order[i]];
        n = select_mass(s->order, n, p->top_p * total, s->probs);
    }
    if (p->min_p > 0.0f) { /* at least min_p times the most probable */
        float top = 0;
        for (int i = 0; i < n; i++) top = s->probs[s->order[i]] > top ? s->probs[s->order[i]] : top;
        int keep = 0;
        for (int i = 0; i < n; i++)
            if (s->probs[s->order[i]] >= p->min_p * top) s->order[keep++] = s->order[i];
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->probs[s->order[i]];
    const double u = sl_rng_uniform(rng) * total;
    double acc = 0;
    for (int i = 0; i < n; i++)
        if (u < (acc += s->probs[s->order[i]])) return s->order[i];
    return s->order[n - 1];
}
