/* sampler.c -- a request's sampling parameters, penalties over a logits
 * row, and the per-request random stream (xoshiro256**, seeded through
 * splitmix64, as its authors recommend). The rule that turns a row into a
 * token is the backends' (backend/sample.h); a request's parameters and one
 * draw of its stream make the row's settings. */
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>


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

float sl_rng_uniform_float(sl_rng *rng) { return (float)(rng_next(rng) >> 40) * 0x1p-24f; }

sl_sample_row sl_sample_row_of(const sl_sampling_params *p, sl_rng *rng) {
    const bool greedy = p->temperature < SL_SAMPLE_GREEDY_BELOW;
    return (sl_sample_row){.temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p, .min_p = p->min_p,
                           .u = greedy ? 0.0f : sl_rng_uniform_float(rng), .mask = SL_SAMPLE_NO_MASK};
}

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

int32_t sl_sampler_sample(sl_sampler *s, const sl_sampling_params *p, float *logits, sl_rng *rng) {
    const sl_sample_row row = sl_sample_row_of(p, rng);
    return sl_sample_pick(logits, s->vocab, &row, NULL, s->probs, s->order);
}
