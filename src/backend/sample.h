/* sample.h -- the sampling rule every backend's `sample` op computes, and
 * its reference on the host.
 *
 * A row of logits becomes one token: temperature 0 is greedy (the lowest id
 * among the largest logits, as torch.argmax); otherwise the probabilities
 * e^((logit - max) / temperature) are filtered in vLLM's order -- top-k keeps
 * the k first in descending order (ties by id), top-p the shortest such
 * prefix whose mass reaches top_p of what top-k kept, min-p those at least
 * min_p times the largest -- and the row's uniform draw u picks from the
 * survivors, renormalised, walking them in ascending id order: the token is
 * the first kept id whose running mass exceeds u times the kept mass. Every
 * filter keeps a prefix of one total order, so the survivors are the ids that
 * come no later than a cutoff id; a backend may find that cutoff any way it
 * likes (the host by linear-time selection, the GPU by bisection) and pick
 * the same token, up to the rounding of the sums.
 *
 * A row may carry a mask of the ids it allows (structured output: the
 * grammar's next tokens): ids whose bit is clear count as logits of -inf
 * before everything above, greedy included, so they are never picked and
 * the largest allowed logit is the maximum; a mask that allows no id gives
 * -1. Masks are rows of ceil(vocab / 32) words, bit i % 32 of word i / 32
 * standing for id i.
 *
 * u comes from the request's own random stream (engine/sampler.h), drawn by
 * the engine when it plans the step: a seeded request gives the same tokens
 * whatever shares its batch and whichever backend samples. */
#ifndef SL_BACKEND_SAMPLE_H
#define SL_BACKEND_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* One logits row's settings; every field is 4 bytes, so rows travel packed
 * among a step's int32 arrays. */
typedef struct sl_sample_row {
    float temperature;   /* < 1e-5: greedy */
    int32_t top_k;       /* <= 0 or >= vocab: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float u;             /* the draw, in [0, 1) */
    int32_t mask;        /* the row's allowed ids: its index among the step's masks, or SL_SAMPLE_NO_MASK */
} sl_sample_row;

#define SL_SAMPLE_GREEDY_BELOW 1e-5f
#define SL_SAMPLE_NO_MASK (-1)

/* Words of one mask over vocab ids. */
static inline size_t sl_sample_mask_words(int vocab) { return ((size_t)vocab + 31) / 32; }

/* The index of the largest value (lowest index on ties, as torch.argmax). */
int32_t sl_argmax(const float *x, int n);

/* The token the rule picks from logits[vocab] (left unchanged), with the
 * row's mask (NULL: every id allowed; p->mask is not read). probs and order
 * are scratch of vocab elements each. */
int32_t sl_sample_pick(const float *logits, int vocab, const sl_sample_row *p, const uint32_t *mask, float *probs,
                       int32_t *order);

#endif
