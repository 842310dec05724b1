/* matcher.c -- an Earley recognizer over bytes, and token masks from it.
 *
 * Item (dot, origin, count): dot indexes the finalized grammar's elems[]
 * (the element after the parse position; an END element means the
 * alternative is complete), origin is the set where the alternative started.
 * Set k holds the items after k bytes; all sets are kept (completion looks
 * back at the origin set, rollback just truncates).
 *
 * Counted repetitions (grammar.c: a rule R flagged (min, max) whose one
 * alternative is x): the item waiting on x inside R also carries count, the
 * copies of x read since its origin. Once x is read (scanned or completed),
 * the item goes back to wait for another copy with count + 1 while that is
 * below max, and R completes once count + 1 reaches min; with no max the
 * count stops at min. An empty x moves the item to R's end only: the item
 * with one more copy would sit in the same set and allow less. Every other
 * item has count 0.
 *
 * Building a set: scan (items of the previous set whose class holds the
 * byte move past it), then close it: an item before a rule reference
 * predicts the rule's alternatives (once per set) and, when the rule is
 * nullable, also moves past it right away (Aycock-Horspool, so an empty
 * completion never has to look back at an unfinished set); a complete item
 * of rule A from an earlier set moves every item of that set waiting on A.
 * Duplicates (same dot, origin and count) are found through per-dot chains
 * stamped with the set's epoch.
 *
 * Because finalize removed everything that cannot match, every item can
 * still reach the end: a byte is allowed exactly when some item's class holds
 * it. fill_mask walks the token trie in preorder: a node whose byte is not
 * allowed skips its subtree; a token is allowed when every byte on its path
 * was; a node with children pushes its byte to get the next allowed set,
 * and leaves need no push at all.
 *
 * For the mask cache (mask_cache.c, matcher_internal.h) the walk can visit
 * only the subtrees holding chosen tokens, and can report the tokens refused
 * after a prefix at which a rule begun at set 0 completed; a waiting item's
 * chain of parents is read off the sets, and a matcher can be seeded with
 * just that chain. */
#include "grammar/matcher.h"
#include "grammar/matcher_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct item {
    uint32_t dot;    /* index into g->elems */
    uint32_t origin; /* set where the alternative began */
    uint32_t count;  /* copies read, for an item waiting inside a counted repetition; else 0 */
    uint32_t next;   /* the previous item of the set with the same dot (dedup chain) */
} item;

struct sl_matcher {
    const sl_grammar *g;
    item *items;          /* all sets, back to back */
    uint32_t n_items, cap_items, max_items;
    uint32_t *sets;       /* sets[k]: index of set k's first item */
    uint32_t n_sets, cap_sets;
    uint32_t *dot_stamp;  /* per element: epoch of the set whose chain dot_head holds */
    uint32_t *dot_head;
    uint32_t *rule_stamp; /* per rule: epoch of the set that predicted it */
    uint32_t epoch;       /* of the set being built */
    sl_gclass *allowed;   /* fill_mask scratch: allowed bytes per trie depth */
    uint32_t cap_allowed;
    uint32_t *scratch;    /* sl__matcher_scratch */
    uint32_t cap_scratch;
    sl_err *err;          /* where add() reports, during one public call */
    uint64_t walk_nodes;  /* trie nodes the mask walks took (sl__matcher_walk_nodes) */
};

#define NO_ITEM UINT32_MAX

/* ---- items and sets ------------------------------------------------------- */

static uint32_t set_end(const sl_matcher *m, uint32_t k) {
    return k + 1 < m->n_sets ? m->sets[k + 1] : m->n_items;
}

static int grow_items(sl_matcher *m) {
    if (m->n_items >= m->max_items)
        return sl_err_set(m->err, SL_ENOSPACE,
                          "grammar matcher: more than %u Earley items after %u bytes; the grammar is too "
                          "ambiguous or the output too long for the state bound", m->max_items, m->n_sets - 1);
    uint32_t cap = m->cap_items * 2 < m->max_items ? m->cap_items * 2 : m->max_items;
    item *p = realloc(m->items, (size_t)cap * sizeof *p);
    if (!p) return sl_err_set(m->err, SL_ENOMEM, "grammar matcher: out of memory for %u items", cap);
    m->items = p;
    m->cap_items = cap;
    return 0;
}

/* Adds (dot, origin, count) to the set being built unless it is there already. */
static int add(sl_matcher *m, uint32_t dot, uint32_t origin, uint32_t count) {
    if (m->dot_stamp[dot] != m->epoch) {
        m->dot_stamp[dot] = m->epoch;
        m->dot_head[dot] = NO_ITEM;
    }
    for (uint32_t i = m->dot_head[dot]; i != NO_ITEM; i = m->items[i].next)
        if (m->items[i].origin == origin && m->items[i].count == count) return 0;
    if (m->n_items == m->cap_items) {
        int rc = grow_items(m);
        if (rc) return rc;
    }
    m->items[m->n_items] = (item){.dot = dot, .origin = origin, .count = count, .next = m->dot_head[dot]};
    m->dot_head[dot] = m->n_items++;
    return 0;
}

/* Item it has read the element at its dot: the item past it, or inside a
 * counted repetition the next copy and / or the repetition's end. */
static int advance(sl_matcher *m, item it) {
    sl_gelem after = m->g->elems[it.dot + 1];
    if (after.kind != SL_GELEM_END || !m->g->rules[after.value].repeat) return add(m, it.dot + 1, it.origin, 0);
    const sl_grule *r = &m->g->rules[after.value];
    uint32_t count = it.count + 1;
    if (r->rep_max == UINT32_MAX && count > r->rep_min) count = r->rep_min;
    int rc = count < r->rep_max ? add(m, it.dot, it.origin, count) : 0;
    if (!rc && count >= r->rep_min) rc = add(m, it.dot + 1, it.origin, 0);
    return rc;
}

/* Starts set n_sets (empty) under a fresh epoch. */
static int open_set(sl_matcher *m) {
    if (m->n_sets == m->cap_sets) {
        uint32_t cap = m->cap_sets * 2;
        uint32_t *p = realloc(m->sets, (size_t)cap * sizeof *p);
        if (!p) return sl_err_set(m->err, SL_ENOMEM, "grammar matcher: out of memory for %u sets", cap);
        m->sets = p;
        m->cap_sets = cap;
    }
    if (++m->epoch == 0) { /* wrapped: forget every stamp */
        memset(m->dot_stamp, 0, m->g->n_elems * sizeof *m->dot_stamp);
        memset(m->rule_stamp, 0, m->g->n_rules * sizeof *m->rule_stamp);
        m->epoch = 1;
    }
    m->sets[m->n_sets++] = m->n_items;
    return 0;
}

static void truncate_sets(sl_matcher *m, uint32_t n_sets) {
    if (n_sets >= m->n_sets) return;
    m->n_items = m->sets[n_sets];
    m->n_sets = n_sets;
}

static int predict(sl_matcher *m, uint32_t rule, uint32_t k) {
    if (m->rule_stamp[rule] == m->epoch) return 0;
    m->rule_stamp[rule] = m->epoch;
    const sl_grule *r = &m->g->rules[rule];
    for (uint32_t a = 0; a < r->n_alts; a++) {
        int rc = add(m, m->g->alts[r->first_alt + a].first_elem, k, 0);
        if (rc) return rc;
    }
    return 0;
}

/* Items of set `origin` waiting on rule move past it. */
static int complete(sl_matcher *m, uint32_t rule, uint32_t origin) {
    for (uint32_t i = m->sets[origin], end = set_end(m, origin); i < end; i++) {
        sl_gelem e = m->g->elems[m->items[i].dot];
        if (e.kind != SL_GELEM_RULE || e.value != rule) continue;
        int rc = advance(m, m->items[i]);
        if (rc) return rc;
    }
    return 0;
}

/* Predicts and completes until set k (the last one) stops growing. */
static int close_set(sl_matcher *m, uint32_t k) {
    for (uint32_t i = m->sets[k]; i < m->n_items; i++) {
        item it = m->items[i];
        sl_gelem e = m->g->elems[it.dot];
        int rc = 0;
        if (e.kind == SL_GELEM_RULE) {
            rc = predict(m, e.value, k);
            /* an empty e: past it (in a counted repetition, to its end: see the top comment) */
            if (!rc && m->g->rules[e.value].nullable) rc = add(m, it.dot + 1, it.origin, 0);
        } else if (e.kind == SL_GELEM_END && it.origin != k) {
            rc = complete(m, e.value, it.origin);
        }
        if (rc) return rc;
    }
    return 0;
}

/* Builds the set after byte b: 1 when it is not empty, 0 when b is
 * rejected, or an error; on 0 and errors the state is as before. */
static int push_byte(sl_matcher *m, uint8_t b) {
    uint32_t k = m->n_sets - 1, start = m->sets[k], end = m->n_items;
    int rc = open_set(m);
    if (rc) return rc;
    for (uint32_t i = start; !rc && i < end; i++) {
        sl_gelem e = m->g->elems[m->items[i].dot];
        if (e.kind == SL_GELEM_CLASS && sl_gclass_has(&m->g->classes[e.value], b)) rc = advance(m, m->items[i]);
    }
    if (!rc && m->n_items == m->sets[k + 1]) {
        truncate_sets(m, k + 1);
        return 0;
    }
    if (!rc) rc = close_set(m, k + 1);
    if (rc) truncate_sets(m, k + 1);
    return rc ? rc : 1;
}

/* ---- public operations ---------------------------------------------------- */

/* A matcher with no sets yet. */
static int matcher_alloc(const sl_grammar *g, uint32_t max_items, sl_matcher **out, sl_err *err) {
    *out = NULL;
    if (!g->finalized) return sl_err_set(err, SL_EINVAL, "grammar matcher: the grammar is not finalized");
    sl_matcher *m = calloc(1, sizeof *m);
    if (!m) return sl_err_set(err, SL_ENOMEM, "grammar matcher: out of memory");
    m->g = g;
    m->max_items = max_items ? max_items : SL_MATCHER_DEFAULT_MAX_ITEMS;
    m->cap_items = m->max_items < 1024 ? m->max_items : 1024;
    m->cap_sets = 256;
    m->items = malloc(m->cap_items * sizeof *m->items);
    m->sets = malloc(m->cap_sets * sizeof *m->sets);
    m->dot_stamp = calloc(g->n_elems ? g->n_elems : 1, sizeof *m->dot_stamp);
    m->dot_head = calloc(g->n_elems ? g->n_elems : 1, sizeof *m->dot_head);
    m->rule_stamp = calloc(g->n_rules ? g->n_rules : 1, sizeof *m->rule_stamp);
    if (!m->items || !m->sets || !m->dot_stamp || !m->dot_head || !m->rule_stamp) {
        sl_matcher_free(m);
        return sl_err_set(err, SL_ENOMEM, "grammar matcher: out of memory");
    }
    *out = m;
    return 0;
}

int sl_matcher_create(const sl_grammar *g, uint32_t max_items, sl_matcher **out, sl_err *err) {
    sl_matcher *m;
    int rc = matcher_alloc(g, max_items, &m, err);
    if (rc) return rc;
    m->err = err;
    rc = open_set(m);
    if (!rc) rc = predict(m, g->root, 0);
    if (!rc) rc = close_set(m, 0);
    m->err = NULL;
    if (rc) {
        sl_matcher_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void sl_matcher_free(sl_matcher *m) {
    if (!m) return;
    free(m->items);
    free(m->sets);
    free(m->dot_stamp);
    free(m->dot_head);
    free(m->rule_stamp);
    free(m->allowed);
    free(m->scratch);
    free(m);
}

int sl_matcher_accept(sl_matcher *m, const uint8_t *bytes, size_t n, sl_err *err) {
    uint32_t n_sets = m->n_sets;
    int rc = 1;
    m->err = err;
    for (size_t i = 0; i < n && rc == 1; i++) rc = push_byte(m, bytes[i]);
    if (rc != 1) truncate_sets(m, n_sets);
    m->err = NULL;
    return rc;
}

size_t sl_matcher_len(const sl_matcher *m) { return m->n_sets - 1; }

void sl_matcher_rollback(sl_matcher *m, size_t n_bytes) {
    if (n_bytes > m->n_sets - 1) n_bytes = m->n_sets - 1;
    truncate_sets(m, m->n_sets - (uint32_t)n_bytes);
}

int sl_matcher_copy(sl_matcher *dst, const sl_matcher *src, sl_err *err) {
    if (dst->g != src->g) return sl_err_set(err, SL_EINVAL, "grammar matcher: copy between different grammars");
    if (dst->cap_items < src->n_items) {
        item *it = realloc(dst->items, (size_t)src->cap_items * sizeof *it);
        if (!it) return sl_err_set(err, SL_ENOMEM, "grammar matcher: out of memory copying a state");
        dst->items = it;
        dst->cap_items = src->cap_items;
    }
    if (dst->cap_sets < src->n_sets) {
        uint32_t *s = realloc(dst->sets, (size_t)src->cap_sets * sizeof *s);
        if (!s) return sl_err_set(err, SL_ENOMEM, "grammar matcher: out of memory copying a state");
        dst->sets = s;
        dst->cap_sets = src->cap_sets;
    }
    memcpy(dst->items, src->items, (size_t)src->n_items * sizeof *src->items);
    memcpy(dst->sets, src->sets, (size_t)src->n_sets * sizeof *src->sets);
    dst->n_items = src->n_items;
    dst->n_sets = src->n_sets;
    dst->max_items = src->max_items;
    return 0;
}

bool sl_matcher_is_accepting(const sl_matcher *m) {
    uint32_t k = m->n_sets - 1;
    for (uint32_t i = m->sets[k], end = set_end(m, k); i < end; i++) {
        sl_gelem e = m->g->elems[m->items[i].dot];
        if (e.kind == SL_GELEM_END && e.value == m->g->root && m->items[i].origin == 0) return true;
    }
    return false;
}

void sl_matcher_next_bytes(const sl_matcher *m, sl_gclass *out) {
    *out = (sl_gclass){0};
    uint32_t k = m->n_sets - 1;
    for (uint32_t i = m->sets[k], end = set_end(m, k); i < end; i++) {
        sl_gelem e = m->g->elems[m->items[i].dot];
        if (e.kind != SL_GELEM_CLASS) continue;
        for (int w = 0; w < 4; w++) out->bits[w] |= m->g->classes[e.value].bits[w];
    }
}

size_t sl_matcher_next_classes(const sl_matcher *m, sl_gclass *out, size_t max) {
    size_t n = 0;
    uint32_t k = m->n_sets - 1;
    for (uint32_t i = m->sets[k], end = set_end(m, k); i < end; i++) {
        sl_gelem e = m->g->elems[m->items[i].dot];
        if (e.kind != SL_GELEM_CLASS) continue;
        if (n < max) out[n] = m->g->classes[e.value];
        n++;
    }
    return n;
}

/* ---- masks ---------------------------------------------------------------- */

static int ensure_allowed(sl_matcher *m, uint32_t depth) {
    if (depth < m->cap_allowed) return 0;
    sl_gclass *p = realloc(m->allowed, ((size_t)depth + 1) * sizeof *p);
    if (!p) return sl_err_set(m->err, SL_ENOMEM, "grammar matcher: out of memory for mask scratch");
    m->allowed = p;
    m->cap_allowed = depth + 1;
    return 0;
}

static void mark_tokens(const sl_token_trie *t, const sl_trie_node *nd, uint32_t *bitmask) {
    for (uint32_t j = 0; j < nd->n_tok; j++) {
        uint32_t id = (uint32_t)t->ids[nd->tok_first + j];
        bitmask[id >> 5] |= 1u << (id & 31);
    }
}

/* The trie positions of node i's subtree are [tok_first, subtree_end). */
static uint32_t subtree_end(const sl_token_trie *t, uint32_t i) {
    uint32_t s = t->nodes[i].skip;
    return s < t->n_nodes ? t->nodes[s].tok_first : t->n_ids;
}

static uint32_t next_set_bit(const uint32_t *w, uint32_t from, uint32_t n_bits) {
    if (from >= n_bits) return n_bits;
    uint32_t k = from >> 5, n_words = (n_bits + 31) / 32, bits = w[k] & (~0u << (from & 31));
    while (!bits) {
        if (++k == n_words) return n_bits;
        bits = w[k];
    }
    return (k << 5) + (uint32_t)__builtin_ctz(bits);
}

static void set_range(uint32_t *w, uint32_t from, uint32_t to) {
    for (uint32_t b = from; b < to; b++) w[b >> 5] |= 1u << (b & 31);
}

/* Whether node i's subtree holds a position set in only. *next is the first
 * set position at or after the previous node asked about; preorder only moves
 * forward, so a whole walk scans the bitset once. */
static bool subtree_wanted(const sl_token_trie *t, const uint32_t *only, uint32_t i, uint32_t *next) {
    if (*next < t->nodes[i].tok_first) *next = next_set_bit(only, t->nodes[i].tok_first, t->n_ids);
    return *next < subtree_end(t, i);
}

/* An item of the newest set completes a rule begun at set 0. */
static bool top_completes(const sl_matcher *m) {
    for (uint32_t i = m->sets[m->n_sets - 1]; i < m->n_items; i++)
        if (m->items[i].origin == 0 && m->g->elems[m->items[i].dot].kind == SL_GELEM_END) return true;
    return false;
}

/* The trie walk (see the top comment and sl__matcher_walk); the state is
 * back at base after. `crossed` is the depth after which the top completed
 * on the current path. */
static int walk_trie(sl_matcher *m, const sl_token_trie *t, const uint32_t *only, uint32_t *bitmask,
                     uint32_t *uncertain) {
    uint32_t base = m->n_sets, next = only ? next_set_bit(only, 0, t->n_ids) : 0, crossed = UINT32_MAX;
    int rc = 0;
    sl_matcher_next_bytes(m, &m->allowed[0]);
    for (uint32_t i = 1; i < t->n_nodes;) {
        const sl_trie_node *nd = &t->nodes[i];
        if (m->n_sets > base + nd->depth - 1) truncate_sets(m, base + nd->depth - 1);
        if (crossed >= nd->depth) crossed = UINT32_MAX;
        bool take = sl_gclass_has(&m->allowed[nd->depth - 1], nd->byte);
        if (!take && uncertain && crossed != UINT32_MAX) set_range(uncertain, nd->tok_first, subtree_end(t, i));
        if (!take || (only && !subtree_wanted(t, only, i, &next))) {
            i = nd->skip;
            continue;
        }
        mark_tokens(t, nd, bitmask);
        m->walk_nodes++;
        if (nd->skip != i + 1) { /* has children: take the byte */
            rc = push_byte(m, nd->byte);
            if (rc < 0) break;
            sl_matcher_next_bytes(m, &m->allowed[nd->depth]);
            if (uncertain && crossed == UINT32_MAX && top_completes(m)) crossed = nd->depth;
        }
        i++;
    }
    truncate_sets(m, base);
    return rc < 0 ? rc : 0;
}

void sl__matcher_mask_begin(const sl_matcher *m, const sl_token_trie *t, uint32_t *bitmask) {
    memset(bitmask, 0, ((t->n_tokens + 31) / 32) * sizeof *bitmask);
    if (sl_matcher_is_accepting(m))
        for (uint32_t i = 0; i < t->n_eos; i++) bitmask[t->eos_ids[i] >> 5] |= 1u << (t->eos_ids[i] & 31);
}

int sl__matcher_walk(sl_matcher *m, const sl_token_trie *t, const uint32_t *only, uint32_t *bitmask,
                     uint32_t *uncertain, sl_err *err) {
    m->err = err;
    int rc = ensure_allowed(m, t->max_depth);
    if (!rc) rc = walk_trie(m, t, only, bitmask, uncertain);
    m->err = NULL;
    return rc;
}

int sl_matcher_fill_mask(sl_matcher *m, const sl_token_trie *t, uint32_t *bitmask, sl_err *err) {
    sl__matcher_mask_begin(m, t, bitmask);
    return sl__matcher_walk(m, t, NULL, bitmask, NULL, err);
}

uint64_t sl__matcher_walk_nodes(const sl_matcher *m) { return m->walk_nodes; }

uint32_t *sl__matcher_scratch(sl_matcher *m, uint32_t n_words, sl_err *err) {
    if (n_words > m->cap_scratch) {
        uint32_t *p = realloc(m->scratch, (size_t)n_words * sizeof *p);
        if (!p) {
            sl_err_set(err, SL_ENOMEM, "grammar matcher: out of memory for mask scratch");
            return NULL;
        }
        m->scratch = p;
        m->cap_scratch = n_words;
    }
    if (n_words) memset(m->scratch, 0, (size_t)n_words * sizeof *m->scratch);
    return m->scratch;
}

/* ---- chains (for the mask cache) ------------------------------------------- */

const sl_grammar *sl__matcher_grammar(const sl_matcher *m) { return m->g; }

/* The item at dot waits on rule: is it rule's own left recursion (an
 * alternative of rule that begins with rule)? Predicting rule adds those. */
static bool left_recursion(const sl_grammar *g, const uint32_t *rule_of, uint32_t dot, uint32_t rule) {
    return rule_of[dot] == rule && (dot == 0 || g->elems[dot - 1].kind == SL_GELEM_END);
}

/* The one item of set k that waits on rule, left recursion aside; NO_ITEM
 * when there is none or more than one. */
static uint32_t sole_parent(const sl_matcher *m, const uint32_t *rule_of, uint32_t rule, uint32_t k) {
    uint32_t found = NO_ITEM;
    for (uint32_t i = m->sets[k], end = set_end(m, k); i < end; i++) {
        uint32_t dot = m->items[i].dot;
        sl_gelem e = m->g->elems[dot];
        if (e.kind != SL_GELEM_RULE || e.value != rule || left_recursion(m->g, rule_of, dot, rule)) continue;
        if (found != NO_ITEM) return NO_ITEM;
        found = i;
    }
    return found;
}

bool sl__matcher_next_chain(const sl_matcher *m, const uint32_t *rule_of, uint32_t *cursor, sl__chain *chain) {
    uint32_t k = m->n_sets - 1, i = m->sets[k] + *cursor, end = set_end(m, k);
    while (i < end && m->g->elems[m->items[i].dot].kind != SL_GELEM_CLASS) i++;
    if (i >= end) return false;
    *cursor = i + 1 - m->sets[k];
    item it = m->items[i];
    uint32_t n = 0;
    chain->dot[n] = it.dot;
    chain->count[n++] = it.count;
    for (uint32_t p; n < SL__CHAIN_MAX && (p = sole_parent(m, rule_of, rule_of[it.dot], it.origin)) != NO_ITEM;) {
        it = m->items[p];
        chain->dot[n] = it.dot;
        chain->count[n++] = it.count;
    }
    for (uint32_t j = n; j < SL__CHAIN_MAX; j++) chain->dot[j] = chain->count[j] = 0;
    chain->n = n;
    return true;
}

/* Set k gets rule's left recursion: its alternatives that begin with rule. */
static int add_left_recursion(sl_matcher *m, uint32_t rule, uint32_t k) {
    const sl_grule *r = &m->g->rules[rule];
    for (uint32_t a = 0; a < r->n_alts; a++) {
        uint32_t dot = m->g->alts[r->first_alt + a].first_elem;
        sl_gelem e = m->g->elems[dot];
        int rc = e.kind == SL_GELEM_RULE && e.value == rule ? add(m, dot, k, 0) : 0;
        if (rc) return rc;
    }
    return 0;
}

/* Set j < n holds the chain's item n - j (begun at set j - 1, with its
 * count; none in set 0) and the left recursion of the rule it waits on; set
 * n holds item 0. Nothing else: rules complete into exactly the chain, and
 * the top's completion has nothing to move in set 0 but its own left
 * recursion. */
int sl__matcher_create_chain(const sl_grammar *g, const uint32_t *rule_of, const sl__chain *chain, sl_matcher **out,
                             sl_err *err) {
    sl_matcher *m;
    int rc = matcher_alloc(g, 0, &m, err);
    if (rc) return rc;
    m->err = err;
    const uint32_t n = chain->n;
    for (uint32_t j = 0; !rc && j <= n; j++) {
        rc = open_set(m);
        if (!rc && j > 0) rc = add(m, chain->dot[n - j], j - 1, chain->count[n - j]);
        if (!rc && j < n) rc = add_left_recursion(m, rule_of[chain->dot[n - 1 - j]], j);
    }
    m->err = NULL;
    if (rc) {
        sl_matcher_free(m);
        return rc;
    }
    *out = m;
    return 0;
}
