/* scheduler.c -- what each forward step computes.
 *
 * Continuous batching with chunked prefill, as vLLM's scheduler does it:
 *   1. Running sequences first, oldest first: a decode takes one token of
 *      the step's budget, an unfinished prefill as many as are left.
 *   2. When the KV pool runs dry, the newest running sequence is preempted:
 *      its blocks go back to the pool and it waits to be recomputed (oldest
 *      requests keep making progress; nothing starves forever).
 *   3. Then waiting sequences in arrival order, while the token budget and
 *      --max-num-seqs allow: each first claims the published blocks that
 *      match its prompt (prefix caching), then computes the rest in chunks.
 * Choices 1..n-1 of a request wait until choice 0 has computed the prompt,
 * then share its full prompt blocks and compute only the tail.
 * The step is written into the flattened arrays the model reads (sl_batch). */
#include <string.h>

#include "engine/engine_impl.h"

/* ---- ordered lists of sequences (arrival, then choice index) ---- */

static bool before(const sl_seq *a, const sl_seq *b) {
    if (a->req->arrival != b->req->arrival) return a->req->arrival < b->req->arrival;
    return a->index < b->index;
}

static void list_insert(sl_seq **list, int *n, sl_seq *s) {
    int i = *n;
    while (i > 0 && before(s, list[i - 1])) {
        list[i] = list[i - 1];
        i--;
    }
    list[i] = s;
    (*n)++;
}

static bool list_remove(sl_seq **list, int *n, sl_seq *s) {
    for (int i = 0; i < *n; i++) {
        if (list[i] != s) continue;
        memmove(list + i, list + i + 1, sizeof *list * (size_t)(*n - i - 1));
        (*n)--;
        return true;
    }
    return false;
}

/* ---- blocks ---- */

static void release_blocks(sl_engine *e, sl_seq *s) {
    for (int i = 0; i < s->n_blocks; i++) sl_block_pool_release(e->pool, s->blocks[i]);
    s->n_blocks = 0;
    s->n_computed = 0;
    s->n_published = 0;
    s->last_hash = 0;
}

/* Holds enough blocks for n_total tokens; false (holding what it had) when the pool is short. */
static bool ensure_blocks(sl_engine *e, sl_seq *s, int n_total) {
    int need = (n_total + e->block_size - 1) / e->block_size - s->n_blocks;
    if (need <= 0) return true;
    if (need > sl_block_pool_n_free(e->pool)) return false;
    while (need-- > 0) s->blocks[s->n_blocks++] = sl_block_pool_alloc(e->pool);
    return true;
}

void sl_sched_publish_blocks(sl_engine *e, sl_seq *s) {
    const int bs = e->block_size;
    while ((s->n_published + 1) * bs <= s->n_computed) {
        const int32_t *toks = s->tokens + (size_t)s->n_published * (size_t)bs;
        uint64_t h = sl_block_hash(s->last_hash, toks, bs);
        sl_block_pool_publish(e->pool, s->blocks[s->n_published], h, s->last_hash, toks);
        s->last_hash = h;
        s->n_published++;
    }
}

/* ---- list membership ---- */

int sl_sched_add_request(sl_engine *e, sl_req *r) {
    int n = r->params.n;
    if (e->n_waiting + e->n_running + n > e->cap_seqs) {
        int cap = e->cap_seqs * 2 > e->n_waiting + e->n_running + n ? e->cap_seqs * 2 : e->n_waiting + e->n_running + n + 64;
        sl_seq **w = realloc(e->waiting, sizeof *w * (size_t)cap), **run;
        if (!w) return SL_ENOMEM;
        e->waiting = w;
        run = realloc(e->running, sizeof *run * (size_t)cap);
        if (!run) return SL_ENOMEM;
        e->running = run;
        e->cap_seqs = cap;
    }
    for (int i = 0; i < n; i++) list_insert(e->waiting, &e->n_waiting, &r->seqs[i]);
    return SL_OK;
}

void sl_sched_preempt(sl_engine *e, sl_seq *s) {
    list_remove(e->running, &e->n_running, s);
    release_blocks(e, s);
    s->state = SL_SEQ_WAITING;
    list_insert(e->waiting, &e->n_waiting, s);
    e->stats.n_preemptions++;
}

void sl_sched_remove(sl_engine *e, sl_seq *s) {
    if (!list_remove(e->running, &e->n_running, s)) list_remove(e->waiting, &e->n_waiting, s);
    release_blocks(e, s);
}

/* ---- the step ---- */

static void add_to_step(sl_engine *e, sl_seq *s, int n) {
    const int row = e->b_n_seqs++, bs = e->block_size;
    e->b_seqs[row] = s;
    e->b_n_new[row] = n;
    e->b_query_start[row] = e->b_n_tokens;
    for (int j = s->n_computed; j < s->n_computed + n; j++) {
        int t = e->b_n_tokens++;
        e->b_tokens[t] = s->tokens[j];
        e->b_positions[t] = j;
        e->b_slots[t] = s->blocks[j / bs] * bs + j % bs;
    }
    e->b_context_len[row] = s->n_computed + n;
    int32_t *table = e->b_tables + (size_t)row * (size_t)e->max_blocks_per_seq;
    memcpy(table, s->blocks, sizeof *table * (size_t)s->n_blocks);
    memset(table + s->n_blocks, 0, sizeof *table * (size_t)(e->max_blocks_per_seq - s->n_blocks));
    if (s->n_computed + n == s->n_tokens) {
        e->b_logits_rows[e->b_n_logits] = e->b_n_tokens - 1;
        e->b_logit_seqs[e->b_n_logits++] = s;
    }
}

/* Schedules running sequences; returns false if one had to be preempted. */
static bool schedule_running(sl_engine *e, int *budget) {
    bool preempted = false;
    for (int i = 0; i < e->n_running && *budget > 0;) {
        sl_seq *s = e->running[i];
        int n = s->n_tokens - s->n_computed;
        if (n > *budget) n = *budget;
        bool self_preempted = false;
        while (!ensure_blocks(e, s, s->n_computed + n)) {
            sl_seq *victim = e->running[e->n_running - 1];
            sl_sched_preempt(e, victim);
            preempted = true;
            if (victim == s) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted) continue; /* running[i] is now the next sequence */
        add_to_step(e, s, n);
        *budget -= n;
        i++;
    }
    return !preempted;
}

/* Choice k > 0 shares choice 0's full prompt blocks once they are computed. */
static bool fork_ready(sl_engine *e, sl_seq *s) {
    sl_seq *first = &s->req->seqs[0];
    if (first->state == SL_SEQ_FINISHED || first->n_computed >= first->n_prompt) {
        int k = (s->n_prompt - 1) / e->block_size;
        if (first->state == SL_SEQ_FINISHED || first->n_blocks < k) k = 0;
        for (int i = 0; i < k; i++) {
            s->blocks[i] = first->blocks[i];
            sl_block_pool_ref(e->pool, first->blocks[i]);
            s->last_hash = sl_block_hash(s->last_hash, s->tokens + (size_t)i * (size_t)e->block_size, e->block_size);
        }
        s->n_blocks = s->n_published = k;
        s->n_computed = k * e->block_size;
        s->fork_pending = false;
        return true;
    }
    return false;
}

static void claim_prefix(sl_engine *e, sl_seq *s) {
    int max_blocks = (s->n_tokens - 1) / e->block_size; /* always compute the last token */
    uint64_t last_hash;
    int k = sl_block_pool_claim_prefix(e->pool, s->tokens, s->n_tokens, max_blocks, s->blocks, &last_hash);
    s->n_blocks = s->n_published = k;
    s->last_hash = last_hash;
    s->n_computed = k * e->block_size;
    if (!s->prefix_counted) { /* the first admission is what a prefix-cache query is */
        s->prefix_counted = true;
        s->n_cached = s->n_computed < s->n_prompt ? s->n_computed : s->n_prompt;
        e->stats.prefix_cache_queries += s->n_prompt;
        e->stats.prefix_cache_hits += s->n_cached;
    }
}

static void schedule_waiting(sl_engine *e, int *budget) {
    for (int i = 0; i < e->n_waiting && *budget > 0 && e->n_running < e->opts.max_num_seqs;) {
        sl_seq *s = e->waiting[i];
        if (s->fork_pending && !fork_ready(e, s)) {
            i++;
            continue;
        }
        if (s->n_blocks == 0) claim_prefix(e, s);
        int n = s->n_tokens - s->n_computed;
        if (n > *budget) n = *budget;
        if (!ensure_blocks(e, s, s->n_computed + n)) {
            release_blocks(e, s); /* give back what it claimed: first come, first served */
            break;
        }
        list_remove(e->waiting, &e->n_waiting, s);
        s->state = SL_SEQ_RUNNING;
        list_insert(e->running, &e->n_running, s);
        add_to_step(e, s, n);
        *budget -= n;
    }
}

bool sl_sched_build_step(sl_engine *e) {
    e->b_n_seqs = e->b_n_tokens = e->b_n_logits = 0;
    int budget = e->opts.max_num_batched_tokens;
    if (schedule_running(e, &budget)) schedule_waiting(e, &budget);
    e->b_query_start[e->b_n_seqs] = e->b_n_tokens;
    return e->b_n_seqs > 0;
}

/* ---- invariants (debug_checks) ---- */

static int count_holders(sl_seq **list, int n, int32_t block) {
    int c = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < list[i]->n_blocks; j++) c += list[i]->blocks[j] == block;
    return c;
}

int sl_sched_check(sl_engine *e, sl_err *err) {
    int rc = sl_block_pool_check(e->pool, err);
    if (rc) return rc;
    if (e->b_n_tokens > e->opts.max_num_batched_tokens || e->b_n_seqs > e->opts.max_num_seqs ||
        e->n_running > e->opts.max_num_seqs)
        return sl_err_set(err, SL_EINTERNAL, "step over budget: %d tokens, %d seqs, %d running", e->b_n_tokens,
                          e->b_n_seqs, e->n_running);
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        if (s->state != SL_SEQ_RUNNING || s->n_computed > s->n_tokens ||
            s->n_blocks * e->block_size < s->n_computed || s->n_blocks > e->max_blocks_per_seq)
            return sl_err_set(err, SL_EINTERNAL, "running sequence of request %llu is inconsistent",
                              (unsigned long long)s->req->id);
    }
    for (int i = 0; i < e->n_waiting; i++)
        if (e->waiting[i]->state != SL_SEQ_WAITING || e->waiting[i]->n_blocks != 0)
            return sl_err_set(err, SL_EINTERNAL, "a waiting sequence holds blocks");
    for (int32_t b = 0; b < sl_block_pool_n_blocks(e->pool); b++) {
        int holders = count_holders(e->running, e->n_running, b);
        if (holders != sl_block_pool_refcount(e->pool, b))
            return sl_err_set(err, SL_EINTERNAL, "block %d: %d holders, refcount %d", b, holders,
                              sl_block_pool_refcount(e->pool, b));
    }
    return SL_OK;
}
