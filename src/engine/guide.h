/* guide.h -- structured output in the engine: grammars compiled once and
 * cached by their text, one matcher per choice, and each step's token masks
 * computed on worker threads while the forward pass runs.
 *
 * sl_guides belongs to the engine. Submitting threads compile (under its
 * lock; the vocabulary's token trie is built at the first grammar); the
 * engine thread owns the matchers and the workers. A request holds a
 * reference to its compiled grammar until it is freed; up to
 * GUIDE_CACHE_UNUSED grammars no request holds stay cached for the next
 * request with the same text.
 *
 * Workers: SHARDLM_GUIDE_THREADS (read by sl_guides_create; a count from 1
 * to 256), else min(8, online CPUs - 1), at least 1; they start with the
 * first guided step and end in sl_guides_free. The rows of a step are
 * shared out among them one at a time (each row's mask is independent);
 * with more than one worker, the thread waiting for the masks takes rows
 * too. One worker fills them in row order while the waiting thread waits.
 *
 * Per step: sl_guides_begin_masks hands the step's guided rows to the
 * workers before the step is submitted; sl_guides_wait_masks waits for them
 * before the first guided row is sampled: by the backend's sample op, once
 * the forward pass has issued the step's layers (sl_guide_copy_mask gives it
 * the mask), or on the host from the whole row (sl_guide_apply_mask). A
 * row's mask leaves the tokens the grammar can take next (and EOS when the
 * output is complete); the rest of the row counts as -inf, LM-head rows past
 * the tokenizer's vocabulary included. */
#ifndef SL_ENGINE_GUIDE_H
#define SL_ENGINE_GUIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "grammar/matcher.h"
#include "shardlm.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

typedef struct sl_guides sl_guides;
typedef struct sl_guide_grammar sl_guide_grammar;

/* One choice's grammar state and the mask of its next token. */
typedef struct sl_guide_state {
    sl_matcher *matcher;
    sl_mask_cache *masks; /* its grammar's (borrowed) */
    uint32_t *mask;      /* [ceil(vocab / 32)] bits of allowed ids */
    int mask_rc;         /* the workers' result for this step's mask */
    int n_allowed;       /* ids the mask allows below the LM head's rows; 0 (a dead end) when mask_rc failed */
} sl_guide_state;

/* tok may be NULL (a model without tokenizer.json: every guided request is refused). */
int sl_guides_create(const sl_tokenizer *tok, const int32_t *eos_ids, int n_eos, int vocab, sl_guides **out,
                     sl_err *err);
void sl_guides_free(sl_guides *gs);

/* The compiled grammar of spec (a new reference); errors name what is wrong
 * with it (SL_EINVAL, SL_ENOTSUP). */
int sl_guides_compile(sl_guides *gs, const sl_guide *spec, sl_guide_grammar **out, sl_err *err);
void sl_guides_release(sl_guides *gs, sl_guide_grammar *gg);

int sl_guide_state_init(sl_guides *gs, sl_guide_grammar *gg, sl_guide_state *st, sl_err *err);
void sl_guide_state_destroy(sl_guide_state *st);

/* Starts computing the masks of states[0..n) on the workers (the states stay
 * untouched by the caller until sl_guides_wait_masks), after waiting for the
 * step before. Engine thread only (it starts the workers). */
int sl_guides_begin_masks(sl_guides *gs, sl_guide_state *const *states, int n, sl_err *err);
void sl_guides_wait_masks(sl_guides *gs);

/* Sets logits[id] = -inf for every id the state's mask leaves out. */
void sl_guide_apply_mask(const sl_guides *gs, const sl_guide_state *st, float *logits, int vocab);
/* The state's mask over vocab ids (the LM head's rows) as backend/sample.h
 * lays masks out: sl_sample_mask_words(vocab) words into dst. */
void sl_guide_copy_mask(const sl_guides *gs, const sl_guide_state *st, uint32_t *dst, int vocab);
/* Advances the state by token tok (EOS ids leave it as it is): 1 accepted, 0
 * the grammar cannot take it, or a negative code (the state's bound). */
int sl_guide_accept(const sl_guides *gs, sl_guide_state *st, int32_t tok, sl_err *err);
/* The output so far is a complete sentence of the grammar. */
bool sl_guide_complete(const sl_guide_state *st);

#endif
