/* mask_cache.c -- token masks from token sets computed once per grammar
 * position and its context (issue 18; XGrammar's adaptive token mask cache
 * and llguidance rest on the same observation).
 *
 * The plain mask walks the vocabulary trie through the Earley state at every
 * step: ~7 ms on a 49k vocabulary inside a JSON string, where almost every
 * token fits. Most of that answer depends only on which items wait for the
 * next byte and on a few rules around each, not on the rest of the state.
 *
 * The key is an item's chain (matcher_internal.h): its dot, then the dots of
 * up to three parents, followed through the Earley sets while each rule has
 * exactly one parent (its own left recursion aside, which every state that
 * predicted the rule has), each with its count (below). Until the chain's
 * top rule completes, any state holding the chain parses bytes exactly like
 * a matcher seeded with the chain alone, so one trie walk with that matcher
 * sorts the tokens for the key:
 *   accepted   it takes all their bytes: allowed in every state with the chain;
 *   uncertain  it refuses them after a prefix at which the top completed:
 *              the answer depends on what waits above the top;
 *   rejected   the rest: nothing this item starts can take them.
 * Every derivation of a token begins with one waiting item, so a mask is the
 * union of the items' accepted sets, plus the tokens of the union of their
 * uncertain sets that the plain walk allows -- walking only the trie paths
 * that lead to them. Inside a JSON string the items are the character
 * classes of json-char's UTF-8 helper, three rules below json-string, whose
 * end is the closing quote: the uncertain tokens are those that close the
 * string and go on (about a hundred of SmolLM2's 49k). Deeper chains would
 * tell apart every place a string is used, building an entry for each; an
 * entry costs one trie walk when first needed (the string's: ~7 ms there).
 *
 * Counts. An item inside a counted repetition x{min,max} (grammar.c) carries
 * the copies c it has read, and only two things depend on c: after the j-th
 * further copy the item may read another while c + j < max, and the
 * repetition may end once c + j >= min. A token of at most L bytes (the
 * trie's depth) reads at most L further copies, each taking a byte, so two
 * counts give the same walk when, for every j in 1..L, both tests agree:
 * when both are at least L + 1 below max and both are at least min - 1 or
 * both at most min - L - 1. The key holds such a count as one count of its
 * class (min - 1, or min - L - 1; counts near a bound stay as they are), so
 * the positions of a maxLength 10000 string share one entry but for the L
 * or so next to each bound, and every entry stays exact: a string near its
 * bound refuses the long tokens outright instead of leaving them to a walk.
 * (Nested optionals, which bounded counts were before, made each position
 * its own entry, and near the bound the chain's top completed inside every
 * long token, so those tokens were uncertain at every step: 8.7 ms a mask
 * inside a maxLength 20 string on SmolLM2's vocabulary.)
 *
 * Memory: 4 bytes per grammar element (the rule of each position), then the
 * entries and their hash slots, at most max_bytes: the first entry that would
 * pass it is dropped and no more are built (states that need one use the
 * plain walk). An entry's sets are bitsets or sorted lists, whichever is
 * smaller: at most (n_tokens + n_trie_tokens) / 8 bytes, 12 KiB on SmolLM2.
 *
 * Threads: the cache may serve matchers on several threads; one mutex guards
 * the table. Entries are built outside it (two threads may build the same
 * one; the second is dropped) and never change or move once inserted, so the
 * fill reads them without the lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/matcher.h"
#include "grammar/matcher_internal.h"

/* Token ids or trie positions: a bitset (n_words words) or n sorted members
 * (n_words 0), whichever is smaller. */
typedef struct idset {
    uint32_t n;
    uint32_t n_words;
    uint32_t *v;
} idset;

typedef struct entry {
    sl__chain key;   /* the chain, counts as the class's least (see the top comment) */
    idset accepted;  /* token ids */
    idset uncertain; /* trie positions (t->ids order) */
} entry;

struct sl_mask_cache {
    const sl_grammar *g;
    const sl_token_trie *t;
    uint32_t *rule_of;         /* per element of g: the rule of its alternative */
    pthread_mutex_t lock;      /* guards the fields below */
    entry **slots;             /* open addressing; a power of two, at most half full */
    uint32_t cap_slots, n_entries;
    size_t n_bytes, max_bytes; /* entries and slots */
    bool full;                 /* an entry did not fit: build no more */
};

/* ---- token sets --------------------------------------------------------- */

/* s takes bits (n_words words), keeping them or its members as a list. */
static int idset_from_bits(idset *s, uint32_t *bits, uint32_t n_words, sl_err *err) {
    uint32_t n = 0;
    for (uint32_t k = 0; k < n_words; k++) n += (uint32_t)__builtin_popcount(bits[k]);
    *s = (idset){.n = n};
    if (n >= n_words) {
        s->n_words = n_words;
        s->v = bits;
        return 0;
    }
    s->v = n ? malloc(n * sizeof *s->v) : NULL;
    if (n && !s->v) {
        free(bits);
        return sl_err_set(err, SL_ENOMEM, "grammar mask cache: out of memory");
    }
    for (uint32_t k = 0, j = 0; k < n_words; k++)
        for (uint32_t w = bits[k]; w; w &= w - 1) s->v[j++] = (k << 5) + (uint32_t)__builtin_ctz(w);
    free(bits);
    return 0;
}

static void idset_or(const idset *s, uint32_t *bits) {
    for (uint32_t k = 0; k < s->n_words; k++) bits[k] |= s->v[k];
    if (s->n_words) return;
    for (uint32_t j = 0; j < s->n; j++) bits[s->v[j] >> 5] |= 1u << (s->v[j] & 31);
}

static size_t idset_bytes(const idset *s) { return (s->n_words ? s->n_words : s->n) * sizeof *s->v; }

static void entry_free(entry *e) {
    if (!e) return;
    free(e->accepted.v);
    free(e->uncertain.v);
    free(e);
}

/* ---- building an entry ---------------------------------------------------- */

/* One trie walk of a matcher seeded with the chain (see the top comment). */
static int build_entry(const sl_mask_cache *c, const sl__chain *chain, entry **out, sl_err *err) {
    const sl_token_trie *t = c->t;
    uint32_t tok_words = (t->n_tokens + 31) / 32, pos_words = (t->n_ids + 31) / 32;
    entry *e = calloc(1, sizeof *e);
    uint32_t *acc = calloc(tok_words + 1, sizeof *acc), *unc = calloc(pos_words + 1, sizeof *unc);
    sl_matcher *seeded = NULL;
    int rc = e && acc && unc ? sl__matcher_create_chain(c->g, c->rule_of, chain, &seeded, err)
                             : sl_err_set(err, SL_ENOMEM, "grammar mask cache: out of memory");
    if (!rc) rc = sl__matcher_walk(seeded, t, NULL, acc, unc, err);
    sl_matcher_free(seeded);
    if (!rc) {
        e->key = *chain;
        rc = idset_from_bits(&e->accepted, acc, tok_words, err);
        acc = NULL;
    }
    if (!rc) {
        rc = idset_from_bits(&e->uncertain, unc, pos_words, err);
        unc = NULL;
    }
    free(acc);
    free(unc);
    if (rc) {
        entry_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

/* ---- the table (under the lock) ----------------------------------------- */

static uint32_t key_hash(const sl__chain *key) {
    uint64_t h = key->n;
    for (uint32_t i = 0; i < key->n; i++) h = (h ^ key->dot[i] ^ (uint64_t)key->count[i] << 32) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

static bool key_equal(const sl__chain *a, const sl__chain *b) {
    if (a->n != b->n) return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->dot[i] != b->dot[i] || a->count[i] != b->count[i]) return false;
    return true;
}

/* The slot holding key, or the empty slot where it would go. */
static uint32_t find_slot(const sl_mask_cache *c, const sl__chain *key) {
    uint32_t mask = c->cap_slots - 1, i = key_hash(key) & mask;
    for (const entry *e; (e = c->slots[i]); i = (i + 1) & mask)
        if (key_equal(&e->key, key)) return i;
    return i;
}

/* Doubles the slots (when the budget allows); false when it does not. */
static bool grow_slots(sl_mask_cache *c) {
    uint32_t cap = c->cap_slots * 2;
    size_t extra = (size_t)c->cap_slots * sizeof *c->slots;
    entry **slots = c->n_bytes + extra <= c->max_bytes ? calloc(cap, sizeof *slots) : NULL;
    if (!slots) return false;
    entry **old = c->slots;
    uint32_t old_cap = c->cap_slots;
    c->slots = slots;
    c->cap_slots = cap;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i]) c->slots[find_slot(c, &old[i]->key)] = old[i];
    free(old);
    c->n_bytes += extra;
    return true;
}

/* *out: the entry already there for e's key, else e when it fits within
 * the budget (c then owns it), else NULL, and the cache is full. Returns
 * whether c took e. */
static bool insert(sl_mask_cache *c, entry *e, const entry **out) {
    *out = c->slots[find_slot(c, &e->key)];
    if (*out) return false;
    size_t bytes = sizeof *e + idset_bytes(&e->accepted) + idset_bytes(&e->uncertain);
    if ((c->n_entries + 1) * 2 > c->cap_slots && !grow_slots(c)) c->full = true;
    if (!c->full && c->n_bytes + bytes > c->max_bytes) c->full = true;
    if (c->full) return false;
    c->slots[find_slot(c, &e->key)] = e;
    c->n_entries++;
    c->n_bytes += bytes;
    *out = e;
    return true;
}

/* The count of its class (see the top comment) for count c of an item
 * inside the counted repetition r, tokens being at most max_depth bytes. */
static uint32_t canonical_count(const sl_grule *r, uint32_t c, uint32_t max_depth) {
    const uint64_t far = (uint64_t)max_depth + 1;
    if (r->rep_max != UINT32_MAX && (uint64_t)r->rep_max - c < far) return c; /* near max */
    if ((uint64_t)c + 1 >= r->rep_min) return r->rep_min ? r->rep_min - 1 : 0;
    if (r->rep_min - c >= far) return (uint32_t)(r->rep_min - far);
    return c; /* near min */
}

/* The chain's entry, built on first use; *out is NULL once the cache is full. */
static int cache_get(sl_mask_cache *c, sl__chain *chain, const entry **out, sl_err *err) {
    for (uint32_t i = 0; i < chain->n; i++) {
        const sl_grule *r = &c->g->rules[c->rule_of[chain->dot[i]]];
        if (r->repeat) chain->count[i] = canonical_count(r, chain->count[i], c->t->max_depth);
    }
    pthread_mutex_lock(&c->lock);
    *out = c->slots[find_slot(c, chain)];
    bool full = c->full;
    pthread_mutex_unlock(&c->lock);
    if (*out || full) return 0;
    entry *e;
    int rc = build_entry(c, chain, &e, err);
    if (rc) return rc;
    pthread_mutex_lock(&c->lock);
    bool taken = insert(c, e, out);
    pthread_mutex_unlock(&c->lock);
    if (!taken) entry_free(e);
    return 0;
}

/* ---- public ------------------------------------------------------------- */

int sl_mask_cache_create(const sl_grammar *g, const sl_token_trie *t, size_t max_bytes, sl_mask_cache **out,
                         sl_err *err) {
    *out = NULL;
    if (!g->finalized) return sl_err_set(err, SL_EINVAL, "grammar mask cache: the grammar is not finalized");
    sl_mask_cache *c = calloc(1, sizeof *c);
    if (!c) return sl_err_set(err, SL_ENOMEM, "grammar mask cache: out of memory");
    c->g = g;
    c->t = t;
    c->max_bytes = max_bytes ? max_bytes : SL_MASK_CACHE_DEFAULT_BYTES;
    c->cap_slots = 64;
    c->n_bytes = c->cap_slots * sizeof *c->slots;
    c->rule_of = malloc((g->n_elems ? g->n_elems : 1) * sizeof *c->rule_of);
    c->slots = calloc(c->cap_slots, sizeof *c->slots);
    if (!c->rule_of || !c->slots || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->rule_of);
        free(c->slots);
        free(c);
        return sl_err_set(err, SL_ENOMEM, "grammar mask cache: out of memory");
    }
    for (uint32_t a = 0; a < g->n_alts; a++)
        for (uint32_t e = 0; e <= g->alts[a].n_elems; e++) c->rule_of[g->alts[a].first_elem + e] = g->alts[a].rule;
    *out = c;
    return 0;
}

void sl_mask_cache_free(sl_mask_cache *c) {
    if (!c) return;
    for (uint32_t i = 0; i < c->cap_slots; i++) entry_free(c->slots[i]);
    free(c->slots);
    free(c->rule_of);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void sl_mask_cache_usage(sl_mask_cache *c, uint32_t *n_entries, size_t *n_bytes, bool *full) {
    pthread_mutex_lock(&c->lock);
    *n_entries = c->n_entries;
    *n_bytes = c->n_bytes;
    *full = c->full;
    pthread_mutex_unlock(&c->lock);
}

int sl_matcher_fill_mask_cached(sl_matcher *m, sl_mask_cache *c, uint32_t *bitmask, sl_err *err) {
    if (sl__matcher_grammar(m) != c->g)
        return sl_err_set(err, SL_EINVAL, "grammar mask cache: the matcher's grammar is not the cache's");
    const sl_token_trie *t = c->t;
    uint32_t *uncertain = sl__matcher_scratch(m, (t->n_ids + 31) / 32, err);
    if (!uncertain) return SL_ENOMEM;
    sl__matcher_mask_begin(m, t, bitmask);
    sl__chain chain;
    uint32_t cursor = 0;
    while (sl__matcher_next_chain(m, c->rule_of, &cursor, &chain)) {
        const entry *e;
        int rc = cache_get(c, &chain, &e, err);
        if (rc) return rc;
        if (!e) return sl__matcher_walk(m, t, NULL, bitmask, NULL, err); /* full: the plain walk */
        idset_or(&e->accepted, bitmask);
        idset_or(&e->uncertain, uncertain);
    }
    return sl__matcher_walk(m, t, uncertain, bitmask, NULL, err);
}
