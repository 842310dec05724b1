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
 * The step is written into the flattened arrays the model reads (sl_batch).
 * With pipeline parallelism up to pp steps (micro-batches) are in flight:
 * a new one takes only sequences that are in none of them, never preempts
 * them, and takes a 1/pp share (rounded up) of the running and admissible
 * sequences and of the token budget, so consecutive micro-batches carry
 * similar work. A
 * sequence removed while its step is in flight keeps its blocks until that
 * step completes. */
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
    if (s->step_slot < 0) release_blocks(e, s); /* else the step in flight still writes them */
}

/* ---- the step ---- */

static void add_to_step(sl_engine *e, sl_step *st, sl_seq *s, int n) {
    const int row = st->n_seqs++, bs = e->block_size;
    st->seqs[row] = s;
    st->n_new[row] = n;
    st->query_start[row] = st->n_tokens;
    for (int j = s->n_computed; j < s->n_computed + n; j++) {
        int t = st->n_tokens++;
        st->tokens[t] = s->tokens[j];
        st->positions[t] = j;
        st->slots[t] = s->blocks[j / bs] * bs + j % bs;
    }
    st->context_len[row] = s->n_computed + n;
    memcpy(st->tables + (size_t)row * (size_t)e->max_blocks_per_seq, s->blocks, sizeof(int32_t) * (size_t)s->n_blocks);
    if (s->n_computed + n == s->n_tokens) {
        st->logits_rows[st->n_logits] = st->n_tokens - 1;
        st->logit_seqs[st->n_logits++] = s;
    }
}

/* The newest running sequence that no in-flight step holds; running[0] when
 * every newer one is in flight (it is then the one being scheduled). */
static sl_seq *preemption_victim(sl_engine *e) {
    for (int i = e->n_running - 1; i > 0; i--)
        if (e->running[i]->step_slot < 0) return e->running[i];
    return e->running[0];
}

/* Schedules running sequences; returns false if one had to be preempted. */
static bool schedule_running(sl_engine *e, sl_step *st, int *budget, int max_seqs) {
    bool preempted = false;
    for (int i = 0; i < e->n_running && *budget > 0 && st->n_seqs < max_seqs;) {
        sl_seq *s = e->running[i];
        if (e->n_in_flight > 0 && s->step_slot >= 0) {
            i++;
            continue;
        }
        int n = s->n_tokens - s->n_computed;
        if (n > *budget) n = *budget;
        bool self_preempted = false;
        while (!ensure_blocks(e, s, s->n_computed + n)) {
            sl_seq *victim = preemption_victim(e); /* s itself at worst: it is in no step */
            sl_sched_preempt(e, victim);
            preempted = true;
            if (victim == s) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted) continue; /* running[i] is now the next sequence */
        add_to_step(e, st, s, n);
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

static void schedule_waiting(sl_engine *e, sl_step *st, int *budget, int max_seqs) {
    for (int i = 0; i < e->n_waiting && *budget > 0 && e->n_running < e->opts.max_num_seqs && st->n_seqs < max_seqs;) {
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
        add_to_step(e, st, s, n);
        *budget -= n;
    }
}

/* The rows were written max_blocks_per_seq apart; they move to table_width
 * apart (the most blocks a row holds, rounded up to a power of two so steps
 * of one shape share it), zero past each row's blocks, so the plan and the
 * upload carry n_seqs x table_width entries (a 131072-token max_model_len has
 * 8192 blocks a row; a step of 512 sequences of ~700 tokens needs 64). Row r
 * moves to r * width <= r * max_blocks_per_seq: front to back never
 * overwrites a row still to move. */
static void pack_tables(const sl_engine *e, sl_step *st) {
    int most = 0, width = 1;
    for (int row = 0; row < st->n_seqs; row++) most = st->seqs[row]->n_blocks > most ? st->seqs[row]->n_blocks : most;
    while (width < most) width *= 2;
    st->table_width = width < e->max_blocks_per_seq ? width : e->max_blocks_per_seq;
    const size_t w = (size_t)st->table_width;
    for (int row = 0; row < st->n_seqs; row++) {
        const size_t n = (size_t)st->seqs[row]->n_blocks;
        int32_t *to = st->tables + (size_t)row * w;
        memmove(to, st->tables + (size_t)row * (size_t)e->max_blocks_per_seq, n * sizeof *to);
        memset(to + n, 0, (w - n) * sizeof *to);
    }
}

bool sl_sched_build_step(sl_engine *e, sl_step *st) {
    st->n_seqs = st->n_tokens = st->n_logits = 0;
    int budget = e->opts.max_num_batched_tokens, max_seqs = e->opts.max_num_seqs;
    if (e->n_slots > 1) { /* a micro-batch's share: with 8 sequences and 2 slots, two of 4 alternate */
        int n = e->n_running + e->n_waiting < max_seqs ? e->n_running + e->n_waiting : max_seqs;
        max_seqs = (n + e->n_slots - 1) / e->n_slots;
        budget = (budget + e->n_slots - 1) / e->n_slots;
    }
    if (schedule_running(e, st, &budget, max_seqs)) schedule_waiting(e, st, &budget, max_seqs);
    st->query_start[st->n_seqs] = st->n_tokens;
    pack_tables(e, st);
    return st->n_seqs > 0;
}

/* ---- invariants (debug_checks) ---- */

static int count_holders(sl_seq *const *list, int n, int32_t block) {
    int c = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < list[i]->n_blocks; j++) c += list[i]->blocks[j] == block;
    return c;
}

/* In-flight steps: each sequence in exactly one of them (once), running or
 * finished (an abort waiting for the step), none of its blocks free. */
static int check_in_flight(sl_engine *e, sl_err *err) {
    int n = 0;
    for (int k = 0; k < e->n_slots; k++) {
        const sl_step *st = &e->steps[k];
        if (!st->in_flight) continue;
        n++;
        for (int i = 0; i < st->n_seqs; i++) {
            const sl_seq *s = st->seqs[i];
            int copies = 0;
            for (int k2 = 0; k2 < e->n_slots; k2++)
                for (int j = 0; e->steps[k2].in_flight && j < e->steps[k2].n_seqs; j++) copies += e->steps[k2].seqs[j] == s;
            if (copies != 1 || s->step_slot != k || s->state == SL_SEQ_WAITING)
                return sl_err_set(err, SL_EINTERNAL, "sequence of request %llu is in %d in-flight steps (state %d)",
                                  (unsigned long long)s->req->id, copies, (int)s->state);
            for (int j = 0; j < s->n_blocks; j++)
                if (sl_block_pool_refcount(e->pool, s->blocks[j]) < 1)
                    return sl_err_set(err, SL_EINTERNAL, "block %d of an in-flight sequence of request %llu is free",
                                      s->blocks[j], (unsigned long long)s->req->id);
        }
    }
    if (n != e->n_in_flight) return sl_err_set(err, SL_EINTERNAL, "%d steps in flight, counted %d", n, e->n_in_flight);
    return SL_OK;
}

/* Holders of a block outside the running list: finished sequences whose step is still in flight. */
static int count_deferred_holders(const sl_engine *e, int32_t block) {
    int c = 0;
    for (int k = 0; k < e->n_slots; k++)
        for (int i = 0; e->steps[k].in_flight && i < e->steps[k].n_seqs; i++)
            if (e->steps[k].seqs[i]->state == SL_SEQ_FINISHED) c += count_holders(&e->steps[k].seqs[i], 1, block);
    return c;
}

int sl_sched_check(sl_engine *e, const sl_step *st, sl_err *err) {
    int rc = sl_block_pool_check(e->pool, err);
    if (rc || (rc = check_in_flight(e, err))) return rc;
    if (st->n_tokens > e->opts.max_num_batched_tokens || st->n_seqs > e->opts.max_num_seqs ||
        e->n_running > e->opts.max_num_seqs)
        return sl_err_set(err, SL_EINTERNAL, "step over budget: %d tokens, %d seqs, %d running", st->n_tokens,
                          st->n_seqs, e->n_running);
    for (int i = 0; i < st->n_seqs; i++)
        if (st->seqs[i]->step_slot >= 0)
            return sl_err_set(err, SL_EINTERNAL, "a sequence of request %llu is in two steps at once",
                              (unsigned long long)st->seqs[i]->req->id);
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
        int holders = count_holders(e->running, e->n_running, b) + (e->n_in_flight ? count_deferred_holders(e, b) : 0);
        if (holders != sl_block_pool_refcount(e->pool, b))
            return sl_err_set(err, SL_EINTERNAL, "block %d: %d holders, refcount %d", b, holders,
                              sl_block_pool_refcount(e->pool, b));
    }
    return SL_OK;
}
