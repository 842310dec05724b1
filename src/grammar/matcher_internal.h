/* matcher_internal.h -- what the mask cache (mask_cache.c) needs from the
 * Earley matcher (matcher.c): the chain of parents above a waiting item, a
 * matcher seeded with one such chain, and the trie walk with its options.
 *
 * A chain is item 0 = an item waiting for a byte class, then item j = the
 * one item that waits on the rule holding item j - 1 (the rule's own left
 * recursion aside, which is always there); each is its dot and its count
 * (copies read, for an item inside a counted repetition; else 0); the rule
 * holding item n - 1 is the chain's top. rule_of[dot] is the rule whose
 * alternative holds elems[dot]. */
#ifndef SL_GRAMMAR_MATCHER_INTERNAL_H
#define SL_GRAMMAR_MATCHER_INTERNAL_H

#include "grammar/matcher.h"

#define SL__CHAIN_MAX 4 /* items in a chain: the item and up to 3 parents */

typedef struct sl__chain {
    uint32_t dot[SL__CHAIN_MAX];   /* past n: 0 */
    uint32_t count[SL__CHAIN_MAX]; /* past n: 0 */
    uint32_t n;
} sl__chain;

const sl_grammar *sl__matcher_grammar(const sl_matcher *m);

/* The chain of the next item of the current set that waits for a byte class,
 * from item *cursor on (start at 0): false when there is none left. */
bool sl__matcher_next_chain(const sl_matcher *m, const uint32_t *rule_of, uint32_t *cursor, sl__chain *chain);

/* A matcher whose only live item is the chain's item 0, inside exactly the
 * parents of the chain, with their counts: a byte string it accepts is
 * accepted by every state holding the chain, and the chain's top completes
 * with origin 0. */
int sl__matcher_create_chain(const sl_grammar *g, const uint32_t *rule_of, const sl__chain *chain, sl_matcher **out,
                             sl_err *err);

/* bitmask cleared, then EOS set when the state is accepting. */
void sl__matcher_mask_begin(const sl_matcher *m, const sl_token_trie *t, uint32_t *bitmask);

/* The trie walk: sets in bitmask every token whose bytes the state takes.
 * only (NULL: everything): a bitset over trie positions (t->ids order); only
 * subtrees holding one of them are visited. uncertain (NULL: not wanted):
 * gets the positions of tokens the state refuses after a prefix at which
 * some item completed with origin 0 (the top of a chain matcher). */
int sl__matcher_walk(sl_matcher *m, const sl_token_trie *t, const uint32_t *only, uint32_t *bitmask,
                     uint32_t *uncertain, sl_err *err);

/* Trie nodes the matcher's mask walks have visited, all walks together (the
 * work a mask costs, for tests: nodes whose byte the state took). */
uint64_t sl__matcher_walk_nodes(const sl_matcher *m);

/* A zeroed per-matcher bitset of n_words words (the cached fill's scratch). */
uint32_t *sl__matcher_scratch(sl_matcher *m, uint32_t n_words, sl_err *err);

#endif
