/* executor.c -- the step plan on the wire, and the workers' loop.
 *
 * A command is a fixed header broadcast from rank 0 ({cmd, n_tokens,
 * n_seqs, max_blocks, n_logits}); a step is followed by one broadcast of
 * every int32 array of the batch packed end to end. Every rank then runs
 * sl_model_forward on the same batch; the model moves hidden states between
 * stages and reduces inside tensor-parallel groups. */
#include "engine/executor.h"

#include <stdlib.h>
#include <string.h>

enum { CMD_STEP = 1, CMD_PING = 2, CMD_STOP = 3 };
enum { HDR_CMD, HDR_TOKENS, HDR_SEQS, HDR_MAX_BLOCKS, HDR_LOGITS, HDR_LEN = 8 };
#define TAG_LOGITS 12

static size_t wire_len(const int32_t *h) {
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

static int broadcast(sl_executor *x, void *buf, size_t n_bytes, sl_err *err) {
    const sl_comm *w = &x->dist->world;
    return w->iface->broadcast(w->ctx, buf, n_bytes, 0, err);
}

/* Every rank's part of a step whose header is h and plan is in x->wire. */
static int run_plan(sl_executor *x, const int32_t *h, float *logits, sl_err *err) {
    sl_batch b;
    layout(x, h, &b);
    int rc = sl_model_forward(x->model, &b, logits, err);
    if (rc || b.n_logits == 0 || x->dist->last_stage_root == 0) return rc;
    const sl_comm *w = &x->dist->world;
    size_t n_bytes = (size_t)b.n_logits * (size_t)x->model->config.vocab_size * sizeof(float);
    if (w->rank == x->dist->last_stage_root) return w->iface->send(w->ctx, logits, n_bytes, 0, TAG_LOGITS, err);
    if (w->rank == 0) return w->iface->recv(w->ctx, logits, n_bytes, x->dist->last_stage_root, TAG_LOGITS, err);
    return SL_OK;
}

int sl_executor_step(sl_executor *x, const sl_batch *b, float *logits, sl_err *err) {
    if (!x->dist) return sl_model_forward(x->model, b, logits, err);
    int32_t h[HDR_LEN] = {[HDR_CMD] = CMD_STEP, [HDR_TOKENS] = b->n_tokens, [HDR_SEQS] = b->n_seqs,
                          [HDR_MAX_BLOCKS] = b->max_blocks, [HDR_LOGITS] = b->n_logits};
    int rc = reserve(x, wire_len(h), err);
    if (rc) return rc;
    pack(x, h, b);
    if ((rc = broadcast(x, h, sizeof h, err)) || (rc = broadcast(x, x->wire, wire_len(h) * sizeof(int32_t), err)))
        return sl_err_wrap(err, rc, "sending a step to the workers: ");
    return run_plan(x, h, logits, err);
}

static int command(sl_executor *x, int cmd, sl_err *err) {
    if (!x->dist) return SL_OK;
    int32_t h[HDR_LEN] = {[HDR_CMD] = cmd};
    int rc = broadcast(x, h, sizeof h, err);
    if (!rc && cmd == CMD_PING) rc = x->dist->world.iface->barrier(x->dist->world.ctx, err);
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
        if ((rc = broadcast(x, h, sizeof h, err))) {
            sl_err_wrap(err, rc, "waiting for rank 0: ");
            break;
        }
        if (h[HDR_CMD] == CMD_STOP) break;
        if (h[HDR_CMD] == CMD_PING) {
            if ((rc = x->dist->world.iface->barrier(x->dist->world.ctx, err))) break;
            continue;
        }
        if ((rc = reserve(x, wire_len(h), err)) || (rc = broadcast(x, x->wire, wire_len(h) * sizeof(int32_t), err)) ||
            (rc = run_plan(x, h, logits, err)))
            break;
    }
    free(logits);
    return rc;
}

void sl_executor_destroy(sl_executor *x) {
    free(x->wire);
    x->wire = NULL;
    x->wire_cap = 0;
}
