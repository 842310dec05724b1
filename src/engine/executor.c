/* executor.c -- the step plan on the wire, and the workers' loop.
 *
 * A command is a fixed header ({cmd, n_tokens, n_seqs, max_blocks,
 * n_logits}); a step's header is followed by every int32 array of the batch
 * packed end to end (the plan). Commands travel the way hidden states do:
 * rank 0 broadcasts them over stage 0's tensor-parallel group, and every
 * rank of stage s > 0 receives them from its peer in stage s - 1 (the rank
 * its hidden states come from) and passes them on to its peer in stage
 * s + 1 before its hidden states, without waiting for that peer, which may
 * still be computing the previous micro-batch. So stages work on different
 * steps at once and nothing is broadcast over the whole job. With one stage
 * this is the broadcast of old over the one group.
 *
 * Rank 0 keeps several steps in flight. Before sending a step it posts the
 * receive of that step's logits from the last stage's root into the step's
 * own buffer: the last stage, blocked sending logits, can then never wait on
 * rank 0, which may be blocked sending it the next micro-batch. Logits of
 * steps A then B come from the same rank with the same tag, so they match
 * the receives in the order they were posted (MPI's non-overtaking rule):
 * completion order is submission order.
 *
 * A ping goes down the same path; every stage checks its tensor-parallel
 * group with a barrier and the last stage's root answers rank 0, which waits
 * for the answer within the communication deadline.
 *
 * This file holds the control side of the pipeline (commands, plans, logits,
 * pings: host memory over comm.h, tags 12-14); the hidden states a command's
 * step produces go from stage to stage through the model's tensor
 * communicator (parallel/tensor_comm.h; over MPI it uses tag 11), sent after the
 * command that announces them, so a stage always receives the plan first. */
#include "engine/executor.h"

#include <stdlib.h>
#include <string.h>

enum { CMD_STEP = 1, CMD_PING = 2, CMD_STOP = 3 };
enum { HDR_CMD, HDR_TOKENS, HDR_SEQS, HDR_MAX_BLOCKS, HDR_LOGITS, HDR_LEN = 8 };
#define TAG_LOGITS 12
#define TAG_COMMAND 13 /* a header, then a step's plan, from the stage before */
#define TAG_PING_ACK 14

static size_t wire_len(const int32_t *h) {
    if (h[HDR_CMD] != CMD_STEP) return 0;
    return (size_t)h[HDR_TOKENS] * 3 + (size_t)h[HDR_SEQS] * 2 + 1 + (size_t)h[HDR_SEQS] * (size_t)h[HDR_MAX_BLOCKS] +
           (size_t)h[HDR_LOGITS];
}

static int reserve(sl_executor *x, size_t n, sl_err *err) {
    if (n <= x->wire_cap) return SL_OK;
    int32_t *grown = realloc(x->wire, n * sizeof *grown);
    if (!grown) return sl_err_set(err, SL_ENOMEM, "out of memory for the step plan");
    x->wire = grown;
    x->wire_cap = n;
    return SL_OK;
}

/* The batch's arrays in wire order, pointing into x->wire (unpack) or copied there (pack). */
static void layout(sl_executor *x, const int32_t *h, sl_batch *b) {
    int32_t *p = x->wire;
    const int n = h[HDR_TOKENS], s = h[HDR_SEQS];
    *b = (sl_batch){.n_tokens = n, .n_seqs = s, .max_blocks = h[HDR_MAX_BLOCKS], .n_logits = h[HDR_LOGITS]};
    b->tokens = p, p += n;
    b->positions = p, p += n;
    b->slots = p, p += n;
    b->query_start = p, p += s + 1;
    b->context_len = p, p += s;
    b->block_tables = p, p += (size_t)s * (size_t)h[HDR_MAX_BLOCKS];
    b->logits_rows = p;
}

static void pack(sl_executor *x, const int32_t *h, const sl_batch *in) {
    sl_batch w;
    layout(x, h, &w);
    memcpy((void *)w.tokens, in->tokens, sizeof(int32_t) * (size_t)in->n_tokens);
    memcpy((void *)w.positions, in->positions, sizeof(int32_t) * (size_t)in->n_tokens);
    memcpy((void *)w.slots, in->slots, sizeof(int32_t) * (size_t)in->n_tokens);
    memcpy((void *)w.query_start, in->query_start, sizeof(int32_t) * (size_t)(in->n_seqs + 1));
    memcpy((void *)w.context_len, in->context_len, sizeof(int32_t) * (size_t)in->n_seqs);
    memcpy((void *)w.block_tables, in->block_tables, sizeof(int32_t) * (size_t)in->n_seqs * (size_t)in->max_blocks);
    memcpy((void *)w.logits_rows, in->logits_rows, sizeof(int32_t) * (size_t)in->n_logits);
}

/* n_bytes of buf reach this rank: stage 0 by broadcast from rank 0 over its
 * tensor-parallel group (rank 0 is the root: it sends), a later stage from
 * its peer one stage up. */
static int take(sl_executor *x, void *buf, size_t n_bytes, sl_err *err) {
    const sl_dist *d = x->dist;
    if (d->prev_stage >= 0) return d->world.iface->recv(d->world.ctx, buf, n_bytes, d->prev_stage, TAG_COMMAND, err);
    if (d->tp_size > 1) return d->tp.iface->broadcast(d->tp.ctx, buf, n_bytes, 0, err);
    return SL_OK;
}

/* Every rank's part of a step whose header is h and plan is in x->wire. */
static int run_plan(sl_executor *x, const int32_t *h, float *logits, sl_err *err) {
    sl_batch b;
    layout(x, h, &b);
    int rc = sl_model_forward(x->model, &b, logits, err);
    const sl_dist *d = x->dist;
    if (rc || b.n_logits == 0 || d->last_stage_root == 0 || d->world.rank != d->last_stage_root) return rc;
    size_t n_bytes = (size_t)b.n_logits * (size_t)x->model->config.vocab_size * sizeof(float);
    return d->world.iface->send(d->world.ctx, logits, n_bytes, 0, TAG_LOGITS, err);
}

/* A ping on this rank: its tensor-parallel group answers together, then the last stage's root tells rank 0. */
static int answer_ping(sl_executor *x, sl_err *err) {
    const sl_dist *d = x->dist;
    int rc = d->tp_size > 1 ? d->tp.iface->barrier(d->tp.ctx, err) : SL_OK;
    if (rc || d->last_stage_root == 0 || d->world.rank != d->last_stage_root) return rc;
    int32_t ack = CMD_PING;
    return d->world.iface->send(d->world.ctx, &ack, sizeof ack, 0, TAG_PING_ACK, err);
}

/* Every rank's part of a command whose header h it already holds: the plan
 * reaches this stage, header and plan leave for the next stage while this
 * one computes, then this stage's work. */
static int follow(sl_executor *x, int32_t *h, float *logits, sl_err *err) {
    const sl_dist *d = x->dist;
    const sl_comm *w = &d->world;
    const size_t plan_bytes = wire_len(h) * sizeof(int32_t);
    int rc = reserve(x, wire_len(h), err);
    if (!rc && plan_bytes) rc = take(x, x->wire, plan_bytes, err);
    sl_comm_request onward[2] = {{0}, {0}};
    if (!rc && d->next_stage >= 0) {
        rc = w->iface->isend(w->ctx, h, HDR_LEN * sizeof(int32_t), d->next_stage, TAG_COMMAND, &onward[0], err);
        if (!rc && plan_bytes) rc = w->iface->isend(w->ctx, x->wire, plan_bytes, d->next_stage, TAG_COMMAND, &onward[1], err);
    }
    if (!rc && h[HDR_CMD] == CMD_STEP) rc = run_plan(x, h, logits, err);
    else if (!rc && h[HDR_CMD] == CMD_PING) rc = answer_ping(x, err);
    for (int i = 0; i < 2; i++) {
        if (rc) w->iface->cancel(w->ctx, &onward[i]);
        else rc = w->iface->wait(w->ctx, &onward[i], err);
    }
    return rc;
}

int sl_executor_submit(sl_executor *x, const sl_batch *b, float *logits, sl_exec_ticket *t, sl_err *err) {
    t->logits = (sl_comm_request){0};
    if (!x->dist) return sl_model_forward(x->model, b, logits, err);
    int32_t h[HDR_LEN] = {[HDR_CMD] = CMD_STEP, [HDR_TOKENS] = b->n_tokens, [HDR_SEQS] = b->n_seqs,
                          [HDR_MAX_BLOCKS] = b->max_blocks, [HDR_LOGITS] = b->n_logits};
    int rc = reserve(x, wire_len(h), err);
    if (rc) return rc;
    pack(x, h, b);
    const sl_dist *d = x->dist;
    const sl_comm *w = &d->world;
    if (b->n_logits > 0 && d->last_stage_root != 0) {
        size_t n_bytes = (size_t)b->n_logits * (size_t)x->model->config.vocab_size * sizeof(float);
        if ((rc = w->iface->irecv(w->ctx, logits, n_bytes, d->last_stage_root, TAG_LOGITS, &t->logits, err))) return rc;
    }
    if ((rc = take(x, h, sizeof h, err)) || (rc = follow(x, h, logits, err))) {
        sl_executor_abandon(x, t);
        return sl_err_wrap(err, rc, "running a step: ");
    }
    return SL_OK;
}

int sl_executor_complete(sl_executor *x, sl_exec_ticket *t, sl_err *err) {
    if (!t->logits.impl) return SL_OK;
    const sl_comm *w = &x->dist->world;
    int rc = w->iface->wait(w->ctx, &t->logits, err);
    return rc ? sl_err_wrap(err, rc, "waiting for a step's logits from the last pipeline stage: ") : SL_OK;
}

void sl_executor_abandon(sl_executor *x, sl_exec_ticket *t) {
    if (x->dist) x->dist->world.iface->cancel(x->dist->world.ctx, &t->logits);
}

static int command(sl_executor *x, int cmd, sl_err *err) {
    if (!x->dist) return SL_OK;
    int32_t h[HDR_LEN] = {[HDR_CMD] = cmd};
    const sl_dist *d = x->dist;
    int rc = take(x, h, sizeof h, err);
    if (!rc) rc = follow(x, h, NULL, err);
    if (!rc && cmd == CMD_PING && d->last_stage_root != 0) {
        int32_t ack;
        rc = d->world.iface->recv(d->world.ctx, &ack, sizeof ack, d->last_stage_root, TAG_PING_ACK, err);
        if (rc) sl_err_wrap(err, rc, "health check: no answer through the pipeline: ");
    }
    return rc;
}

int sl_executor_ping(sl_executor *x, sl_err *err) { return command(x, CMD_PING, err); }
int sl_executor_stop(sl_executor *x, sl_err *err) { return command(x, CMD_STOP, err); }

int sl_executor_worker_loop(sl_executor *x, sl_err *err) {
    const sl_model *m = x->model;
    float *logits = NULL;
    if (x->dist->world.rank == x->dist->last_stage_root &&
        !(logits = malloc(sizeof(float) * (size_t)m->limits.max_seqs * (size_t)m->config.vocab_size)))
        return sl_err_set(err, SL_ENOMEM, "out of memory for logits");
    int rc = SL_OK;
    for (;;) {
        int32_t h[HDR_LEN];
        if ((rc = take(x, h, sizeof h, err))) {
            sl_err_wrap(err, rc, "waiting for the next command: ");
            break;
        }
        if ((rc = follow(x, h, logits, err)) || h[HDR_CMD] == CMD_STOP) break;
    }
    free(logits);
    return rc;
}

void sl_executor_destroy(sl_executor *x) {
    free(x->wire);
    x->wire = NULL;
    x->wire_cap = 0;
}
