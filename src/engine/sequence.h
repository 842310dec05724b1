/* sequence.h -- one sequence of tokens the engine is generating: a prompt
 * and one choice of its continuation, with its KV block table.
 *
 * Invariant: tokens[0..n_tokens) are known; the KV cache holds
 * tokens[0..n_computed). A step computes tokens[n_computed..n_computed+k);
 * when that reaches n_tokens the step's last logits give the next token.
 * Preemption frees the blocks and sets n_computed back to 0: the sequence
 * is recomputed later, prompt and output alike, with the same random stream. */
#ifndef SL_ENGINE_SEQUENCE_H
#define SL_ENGINE_SEQUENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/guide.h"
#include "engine/sampler.h"
#include "shardlm.h"
#include "tokenizer/tokenizer.h"

typedef enum { SL_SEQ_WAITING, SL_SEQ_RUNNING, SL_SEQ_FINISHED } sl_seq_state;

struct sl_req;

typedef struct sl_seq {
    struct sl_req *req;
    int index;                   /* choice index within the request */
    sl_seq_state state;
    int32_t *tokens;             /* [cap] prompt then output */
    int n_tokens, n_prompt, cap;
    int n_computed;              /* tokens whose K/V are in the cache */
    int32_t *blocks;             /* block table [max_blocks] */
    int n_blocks;
    int n_published;             /* leading full blocks published for prefix reuse */
    uint64_t last_hash;          /* hash of block n_published - 1 */
    int n_cached;                /* prompt tokens that came from the prefix cache */
    bool prefix_counted;         /* its first admission was counted in the prefix-cache stats */
    sl_rng rng;
    int32_t *output_counts;      /* [vocab] for frequency/presence/repetition penalties, or NULL */
    sl_detokenizer *detok;       /* NULL without a tokenizer */
    char *text;                  /* decoded output not yet sent (held back while it may start a stop string) */
    size_t text_len, text_cap;
    bool fork_pending;           /* a later choice waiting for choice 0's prompt to be computed */
    sl_finish_reason finish;
    const char *stop_reason;     /* points into the request's stop strings */
    int32_t stop_token;
    int step_slot;               /* the in-flight step computing it (engine.steps index), or -1 */
    sl_guide_state guide;        /* structured output: grammar state and next mask (matcher NULL: none) */
} sl_seq;

#endif
