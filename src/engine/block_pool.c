/* block_pool.c -- reference-counted KV blocks, a free queue in LRU order, and
 * an open-addressing index from prefix hash to block.
 *
 * Every block is in exactly one of two states: held (refcount > 0, not in
 * the queue) or free (refcount 0, in the queue). A published block carries
 * its hash, its tokens and its predecessor's hash; the index maps the hash to
 * it while it is published, whichever state it is in. Claiming a free
 * published block unlinks it from the queue in O(1). */
#include "engine/block_pool.h"

#include <stdlib.h>
#include <string.h>

#define EMPTY_SLOT (-1)

typedef struct block {
    int32_t refcount;
    int32_t prev, next;       /* free queue links, -1 at the ends */
    bool published;
    uint64_t hash, prev_hash;
} block;

struct sl_block_pool {
    int n_blocks, block_size, n_free;
    bool prefix_caching;
    block *blocks;
    int32_t *tokens;          /* [n_blocks][block_size] of published blocks */
    int32_t head, tail;       /* free queue: allocate from head, release to tail */
    int32_t *index;           /* hash table of block ids, open addressing */
    uint32_t index_mask;
};

/* ---- free queue ---- */

static void queue_push_tail(sl_block_pool *p, int32_t b) {
    p->blocks[b].prev = p->tail;
    p->blocks[b].next = -1;
    if (p->tail >= 0) p->blocks[p->tail].next = b;
    else p->head = b;
    p->tail = b;
    p->n_free++;
}

static void queue_unlink(sl_block_pool *p, int32_t b) {
    block *x = &p->blocks[b];
    if (x->prev >= 0) p->blocks[x->prev].next = x->next;
    else p->head = x->next;
    if (x->next >= 0) p->blocks[x->next].prev = x->prev;
    else p->tail = x->prev;
    x->prev = x->next = -1;
    p->n_free--;
}

/* ---- hash index (linear probing, backward-shift deletion) ---- */

static uint32_t slot_of(const sl_block_pool *p, uint64_t hash) { return (uint32_t)(hash ^ (hash >> 32)) & p->index_mask; }

static int32_t index_find(const sl_block_pool *p, uint64_t hash, uint64_t prev_hash, const int32_t *tokens) {
    for (uint32_t s = slot_of(p, hash);; s = (s + 1) & p->index_mask) {
        int32_t b = p->index[s];
        if (b == EMPTY_SLOT) return -1;
        const block *x = &p->blocks[b];
        if (x->hash == hash && x->prev_hash == prev_hash &&
            memcmp(p->tokens + (size_t)b * (size_t)p->block_size, tokens, sizeof(int32_t) * (size_t)p->block_size) == 0)
            return b;
    }
}

static void index_insert(sl_block_pool *p, int32_t b) {
    uint32_t s = slot_of(p, p->blocks[b].hash);
    while (p->index[s] != EMPTY_SLOT) s = (s + 1) & p->index_mask;
    p->index[s] = b;
}

static void index_remove(sl_block_pool *p, int32_t b) {
    uint32_t s = slot_of(p, p->blocks[b].hash);
    while (p->index[s] != b) s = (s + 1) & p->index_mask;
    p->index[s] = EMPTY_SLOT;
    /* shift later members of the probe run back so lookups still find them */
    for (uint32_t j = (s + 1) & p->index_mask; p->index[j] != EMPTY_SLOT; j = (j + 1) & p->index_mask) {
        int32_t moved = p->index[j];
        uint32_t home = slot_of(p, p->blocks[moved].hash);
        /* moved may go to s if s lies cyclically in [home, j) */
        if (((j - home) & p->index_mask) >= ((j - s) & p->index_mask)) {
            p->index[s] = moved;
            p->index[j] = EMPTY_SLOT;
            s = j;
        }
    }
}

/* ---- public ---- */

int sl_block_pool_create(int n_blocks, int block_size, bool prefix_caching, sl_block_pool **out, sl_err *err) {
    *out = NULL;
    if (n_blocks < 1 || block_size < 1) return sl_err_set(err, SL_EINVAL, "a KV pool needs blocks (%d x %d)", n_blocks, block_size);
    sl_block_pool *p = calloc(1, sizeof *p);
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)n_blocks) cap <<= 1;
    if (p) {
        p->blocks = calloc((size_t)n_blocks, sizeof *p->blocks);
        p->tokens = prefix_caching ? malloc(sizeof(int32_t) * (size_t)n_blocks * (size_t)block_size) : NULL;
        p->index = malloc(sizeof(int32_t) * cap);
    }
    if (!p || !p->blocks || !p->index || (prefix_caching && !p->tokens)) {
        sl_block_pool_destroy(p);
        return sl_err_set(err, SL_ENOMEM, "out of memory for %d KV blocks", n_blocks);
    }
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->prefix_caching = prefix_caching;
    p->index_mask = cap - 1;
    memset(p->index, 0xff, sizeof(int32_t) * cap); /* EMPTY_SLOT */
    p->head = p->tail = -1;
    for (int32_t b = 0; b < n_blocks; b++) queue_push_tail(p, b);
    *out = p;
    return SL_OK;
}

void sl_block_pool_destroy(sl_block_pool *p) {
    if (!p) return;
    free(p->blocks);
    free(p->tokens);
    free(p->index);
    free(p);
}

int sl_block_pool_n_free(const sl_block_pool *p) { return p->n_free; }
int sl_block_pool_n_blocks(const sl_block_pool *p) { return p->n_blocks; }
int sl_block_pool_block_size(const sl_block_pool *p) { return p->block_size; }
int sl_block_pool_refcount(const sl_block_pool *p, int32_t b) { return p->blocks[b].refcount; }

int32_t sl_block_pool_alloc(sl_block_pool *p) {
    int32_t b = p->head;
    if (b < 0) return -1;
    queue_unlink(p, b);
    if (p->blocks[b].published) {
        index_remove(p, b);
        p->blocks[b].published = false;
    }
    p->blocks[b].refcount = 1;
    return b;
}

void sl_block_pool_ref(sl_block_pool *p, int32_t b) { p->blocks[b].refcount++; }

void sl_block_pool_release(sl_block_pool *p, int32_t b) {
    if (--p->blocks[b].refcount == 0) queue_push_tail(p, b);
}

uint64_t sl_block_hash(uint64_t prev_hash, const int32_t *tokens, int block_size) {
    uint64_t h = prev_hash ^ 0x9e3779b97f4a7c15ull; /* FNV-1a over the ids, mixed */
    for (int i = 0; i < block_size; i++) {
        h ^= (uint32_t)tokens[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

void sl_block_pool_publish(sl_block_pool *p, int32_t b, uint64_t hash, uint64_t prev_hash, const int32_t *tokens) {
    if (!p->prefix_caching || p->blocks[b].published) return;
    if (index_find(p, hash, prev_hash, tokens) >= 0) return; /* an identical block is already published */
    block *x = &p->blocks[b];
    x->published = true;
    x->hash = hash;
    x->prev_hash = prev_hash;
    memcpy(p->tokens + (size_t)b * (size_t)p->block_size, tokens, sizeof(int32_t) * (size_t)p->block_size);
    index_insert(p, b);
}

int sl_block_pool_claim_prefix(sl_block_pool *p, const int32_t *tokens, int n_tokens, int max_blocks, int32_t *out,
                               uint64_t *last_hash) {
    *last_hash = 0;
    if (!p->prefix_caching) return 0;
    int n = 0;
    uint64_t prev = 0;
    while (n < max_blocks && (n + 1) * p->block_size <= n_tokens) {
        const int32_t *blk = tokens + (size_t)n * (size_t)p->block_size;
        uint64_t h = sl_block_hash(prev, blk, p->block_size);
        int32_t b = index_find(p, h, prev, blk);
        if (b < 0) break;
        if (p->blocks[b].refcount++ == 0) queue_unlink(p, b);
        out[n++] = b;
        prev = h;
    }
    *last_hash = prev;
    return n;
}

int sl_block_pool_check(const sl_block_pool *p, sl_err *err) {
    int in_queue = 0;
    for (int32_t b = p->head, prev = -1; b >= 0; prev = b, b = p->blocks[b].next, in_queue++) {
        if (p->blocks[b].refcount != 0) return sl_err_set(err, SL_EINTERNAL, "block %d is queued but held", b);
        if (p->blocks[b].prev != prev) return sl_err_set(err, SL_EINTERNAL, "free queue broken at block %d", b);
        if (in_queue > p->n_blocks) return sl_err_set(err, SL_EINTERNAL, "free queue has a cycle");
    }
    if (in_queue != p->n_free) return sl_err_set(err, SL_EINTERNAL, "free count %d, queue holds %d", p->n_free, in_queue);
    int free_blocks = 0, published = 0, indexed = 0;
    for (int32_t b = 0; b < p->n_blocks; b++) {
        if (p->blocks[b].refcount < 0) return sl_err_set(err, SL_EINTERNAL, "block %d has refcount < 0", b);
        free_blocks += p->blocks[b].refcount == 0;
        if (p->blocks[b].published) {
            published++;
            if (index_find(p, p->blocks[b].hash, p->blocks[b].prev_hash, p->tokens + (size_t)b * (size_t)p->block_size) != b)
                return sl_err_set(err, SL_EINTERNAL, "published block %d is not indexed", b);
        }
    }
    for (uint32_t s = 0; s <= p->index_mask; s++) indexed += p->index[s] != EMPTY_SLOT;
    if (free_blocks != p->n_free) return sl_err_set(err, SL_EINTERNAL, "%d blocks at refcount 0, %d queued", free_blocks, p->n_free);
    if (indexed != published) return sl_err_set(err, SL_EINTERNAL, "%d indexed, %d published", indexed, published);
    return SL_OK;
}
