/* block_pool.h -- the paged KV cache's blocks: who holds which, and which
 * full blocks can be reused by a later prompt with the same prefix.
 *
 * Blocks are numbered 0..n_blocks-1; the model's KV storage is indexed by
 * these numbers. A block is held by reference count. A full block may be
 * published with a hash of its tokens and of every token before it; a later
 * sequence whose prompt starts the same way takes it instead of recomputing.
 * Blocks nobody holds sit in one free queue, least recently used first: a
 * published block there can still be claimed until it is handed out again
 * (its hash is forgotten then), which is LRU eviction for free. */
#ifndef SL_ENGINE_BLOCK_POOL_H
#define SL_ENGINE_BLOCK_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef struct sl_block_pool sl_block_pool;

int sl_block_pool_create(int n_blocks, int block_size, bool prefix_caching, sl_block_pool **out, sl_err *err);
void sl_block_pool_destroy(sl_block_pool *p);

int sl_block_pool_n_free(const sl_block_pool *p);   /* in the free queue (incl. published) */
int sl_block_pool_n_blocks(const sl_block_pool *p);
int sl_block_pool_block_size(const sl_block_pool *p);

/* Takes a block off the head of the free queue (forgetting its hash);
 * -1 when none is free. */
int32_t sl_block_pool_alloc(sl_block_pool *p);
/* One more holder for a held block (a forked sequence shares it). */
void sl_block_pool_ref(sl_block_pool *p, int32_t block);
/* Drops one holder; at zero the block joins the tail of the free queue. */
void sl_block_pool_release(sl_block_pool *p, int32_t block);

/* Chained hash of a full block: its tokens and the previous block's hash. */
uint64_t sl_block_hash(uint64_t prev_hash, const int32_t *tokens, int block_size);

/* Publishes a full block held by the caller under `hash` (tokens are kept to
 * rule out collisions). A no-op when prefix caching is off or the hash is
 * already published. */
void sl_block_pool_publish(sl_block_pool *p, int32_t block, uint64_t hash, uint64_t prev_hash, const int32_t *tokens);

/* Claims the longest run of published blocks matching tokens[0..n) block by
 * block, at most max_blocks; each claimed block gains a holder. Returns how
 * many, with their ids in out and the last hash in *last_hash. */
int sl_block_pool_claim_prefix(sl_block_pool *p, const int32_t *tokens, int n_tokens, int max_blocks, int32_t *out,
                               uint64_t *last_hash);

/* Checks every internal invariant (refcounts vs queue membership, hash
 * index vs blocks); for tests. Returns 0 or SL_EINTERNAL with a message. */
int sl_block_pool_check(const sl_block_pool *p, sl_err *err);
/* Holders of a block; for tests. */
int sl_block_pool_refcount(const sl_block_pool *p, int32_t block);

#endif
