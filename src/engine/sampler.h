/* sampler.h -- a request's sampling: its parameters, its random stream, and
 * the penalties over a logits row.
 *
 * The order is vLLM's: penalties, temperature, top-k, top-p, min-p, then a
 * draw from the request's own random stream (so a seeded request gives the
 * same tokens whatever else shares its batch). Temperature 0 is greedy. The
 * penalties apply on the host; the rest is backend/sample.h's rule, which
 * either the backend's sample op or sl_sampler_sample computes. */
#ifndef SL_ENGINE_SAMPLER_H
#define SL_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/sample.h"
#include "util/error.h"

typedef struct sl_rng {
    uint64_t s[4]; /* xoshiro256** state */
} sl_rng;

void sl_rng_seed(sl_rng *rng, uint64_t seed);
/* A seed from the OS, for requests that gave none. */
uint64_t sl_rng_random_seed(void);
/* Uniform in [0, 1). */
double sl_rng_uniform(sl_rng *rng);
/* Uniform in [0, 1) with 24 bits: a sample row's draw. */
float sl_rng_uniform_float(sl_rng *rng);

typedef struct sl_sampling_params {
    float temperature;          /* 0: greedy */
    float top_p;                /* 1: off */
    int top_k;                  /* 0 or -1: off */
    float min_p;                /* 0: off */
    float repetition_penalty;   /* 1: off; prompt and output tokens */
    float presence_penalty;     /* 0: off; output tokens */
    float frequency_penalty;    /* 0: off; output tokens */
} sl_sampling_params;

/* Defaults of the OpenAI API / vLLM: temperature 1, everything else off. */
sl_sampling_params sl_sampling_params_default(void);
/* Checks ranges; the message names the parameter and its allowed range. */
int sl_sampling_params_check(const sl_sampling_params *p, sl_err *err);

/* Scratch for one vocabulary; one per engine thread, reused every step. */
typedef struct sl_sampler {
    int vocab;
    float *probs;       /* [vocab] */
    int32_t *order;     /* [vocab] */
} sl_sampler;

int sl_sampler_init(sl_sampler *s, int vocab, sl_err *err);
void sl_sampler_destroy(sl_sampler *s);

/* Token counts a sequence has seen, for the penalties (NULL when none apply):
 * prompt_mask[id] != 0 for ids in the prompt, output_counts[id] = times
 * generated. */
typedef struct sl_token_history {
    const uint8_t *prompt_mask;
    const int32_t *output_counts;
} sl_token_history;

/* Applies the penalties to logits in place, before temperature. Logprobs
 * are reported from the raw logits, as vLLM does by default: callers read
 * them before this. */
void sl_sampler_apply_penalties(const sl_sampling_params *p, const sl_token_history *h, float *logits, int vocab);

/* The row settings of p with the next draw of rng (none when greedy), without a mask. */
sl_sample_row sl_sample_row_of(const sl_sampling_params *p, sl_rng *rng);

/* Picks a token from logits on the host, drawing from rng as sl_sample_row_of. */
int32_t sl_sampler_sample(sl_sampler *s, const sl_sampling_params *p, float *logits, sl_rng *rng);

#endif
