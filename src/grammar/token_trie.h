/* token_trie.h -- a vocabulary's byte strings as a trie, for grammar masks.
 *
 * Built once per vocabulary from each token's raw bytes (byte-level
 * decoding is the tokenizer's job). Nodes are stored in depth-first
 * preorder with the index just past each subtree, so a mask walk visits
 * nodes in array order and skips a whole subtree by one jump when the
 * grammar cannot take its first byte.
 *
 * Special tokens and empty tokens are never placed in the trie (a grammar
 * never allows them); the EOS ids given at creation are allowed by the
 * matcher only when its state is accepting. Immutable once built: shared
 * by every matcher and thread. */
#ifndef SL_GRAMMAR_TOKEN_TRIE_H
#define SL_GRAMMAR_TOKEN_TRIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef struct sl_token_bytes {
    const uint8_t *bytes;
    uint32_t n_bytes;
    bool special; /* control/added special token: never inside a grammar */
} sl_token_bytes;

typedef struct sl_trie_node {
    uint32_t skip;      /* index of the first node after this subtree */
    uint32_t tok_first; /* tokens ending here: ids[tok_first .. +n_tok) */
    uint32_t n_tok;
    uint16_t depth;     /* 1 for a child of the root (the root itself is 0) */
    uint8_t byte;       /* the byte leading to this node */
} sl_trie_node;

typedef struct sl_token_trie {
    sl_trie_node *nodes; /* nodes[0] is the root */
    uint32_t n_nodes;
    int32_t *ids;        /* token ids in node order */
    uint32_t n_ids;
    uint32_t n_tokens;   /* vocabulary size (mask bits) */
    uint32_t max_depth;  /* the longest token, in bytes */
    int32_t *eos_ids;
    uint32_t n_eos;
    uint8_t *bytes;      /* every token's bytes, by id: bytes[off[id] .. off[id+1]) */
    uint32_t *off;
} sl_token_trie;

int sl_token_trie_create(const sl_token_bytes *tokens, uint32_t n_tokens, const int32_t *eos_ids,
                         uint32_t n_eos, sl_token_trie **out, sl_err *err);
void sl_token_trie_free(sl_token_trie *t);

/* A token's bytes as given at creation (special tokens included). */
static inline const uint8_t *sl_token_trie_bytes(const sl_token_trie *t, int32_t id, uint32_t *n_bytes) {
    *n_bytes = t->off[id + 1] - t->off[id];
    return t->bytes + t->off[id];
}

#endif
