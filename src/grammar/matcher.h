/* matcher.h -- the per-sequence grammar state for constrained decoding.
 *
 * An Earley recognizer over bytes: one item set per byte accepted, kept for
 * rollback. accept/rollback/copy move the state; fill_mask walks a token
 * trie to say which token ids may come next; fill_mask_cached gives the same
 * mask from a cache of per-position token sets (one per grammar and
 * vocabulary, shared by its matchers): what the engine calls every step.
 *
 * Memory: at most max_items Earley items (16 bytes each) over the whole
 * sequence plus one set start (4 bytes) per byte accepted; an operation that
 * would pass the bound fails with SL_ENOSPACE and leaves the state as it was.
 * Arrays grow by doubling, so steady decoding allocates nothing.
 *
 * A matcher is used by one thread at a time; the grammar and the trie it
 * reads are immutable and may be shared. */
#ifndef SL_GRAMMAR_MATCHER_H
#define SL_GRAMMAR_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"
#include "grammar/token_trie.h"
#include "util/error.h"

#define SL_MATCHER_DEFAULT_MAX_ITEMS (1u << 22) /* 64 MiB of items */

typedef struct sl_matcher sl_matcher;

/* g must be finalized and outlive the matcher; max_items 0 picks the default. */
int sl_matcher_create(const sl_grammar *g, uint32_t max_items, sl_matcher **out, sl_err *err);
void sl_matcher_free(sl_matcher *m);

/* Feeds bytes: 1 accepted, 0 rejected (the state is as before), or a
 * negative SL_E* code (SL_ENOSPACE: the state bound; the state is as before). */
int sl_matcher_accept(sl_matcher *m, const uint8_t *bytes, size_t n, sl_err *err);
/* Bytes accepted so far. */
size_t sl_matcher_len(const sl_matcher *m);
/* Forgets the last n_bytes accepted bytes (at most all of them). */
void sl_matcher_rollback(sl_matcher *m, size_t n_bytes);
/* dst (a matcher of the same grammar) becomes a copy of src. */
int sl_matcher_copy(sl_matcher *dst, const sl_matcher *src, sl_err *err);

/* The bytes accepted so far form a complete sentence of the grammar. */
bool sl_matcher_is_accepting(const sl_matcher *m);
/* Which bytes may come next (each leads to a state that can still finish). */
void sl_matcher_next_bytes(const sl_matcher *m, sl_gclass *out);
/* The byte classes of the items waiting for a byte, one per item (at most
 * max written; returns how many there are). For random walks in tests. */
size_t sl_matcher_next_classes(const sl_matcher *m, sl_gclass *out, size_t max);

/* bitmask (ceil(n_tokens / 32) words, bit id%32 of word id/32 for token id):
 * set for every token whose bytes the grammar can take next, and for the
 * trie's EOS ids when the state is accepting. The state is unchanged. */
int sl_matcher_fill_mask(sl_matcher *m, const sl_token_trie *t, uint32_t *bitmask, sl_err *err);

/* ---- cached masks (mask_cache.c) ----
 * A mask cache belongs to one grammar and one trie, both of which must
 * outlive it; any number of that grammar's matchers, on any threads, may
 * fill masks from it. It takes 4 bytes per grammar element, then grows by an
 * entry at the first use of each grammar position in its context (one trie
 * walk, about the cost of a plain mask) up to max_bytes; past that it stops
 * growing and states that need a missing entry get the plain walk. A matcher
 * filling from it keeps a bitset of the trie's tokens as scratch. */
typedef struct sl_mask_cache sl_mask_cache;

#define SL_MASK_CACHE_DEFAULT_BYTES ((size_t)64 << 20)

/* max_bytes 0 picks the default. */
int sl_mask_cache_create(const sl_grammar *g, const sl_token_trie *t, size_t max_bytes, sl_mask_cache **out,
                         sl_err *err);
void sl_mask_cache_free(sl_mask_cache *c);
/* Entries held, bytes they take, and whether an entry was refused for lack of room. */
void sl_mask_cache_usage(sl_mask_cache *c, uint32_t *n_entries, size_t *n_bytes, bool *full);
/* The mask sl_matcher_fill_mask(m, c's trie, ...) gives, bit for bit; m's
 * grammar must be c's (else SL_EINVAL). The state is unchanged. */
int sl_matcher_fill_mask_cached(sl_matcher *m, sl_mask_cache *c, uint32_t *bitmask, sl_err *err);

#endif
