/* executor.h -- runs a step on every rank of the model.
 *
 * One process: the step is the model's forward pass. Several ranks: rank 0
 * (the scheduler) hands the step's plan (the flattened batch) to its stage;
 * each stage passes it on to the next with its hidden states, and the last
 * stage returns the logits to rank 0. With pipeline stages rank 0 keeps
 * several steps (micro-batches) in flight: sl_executor_submit runs rank 0's
 * stage of a step and hands it on, sl_executor_complete waits for that
 * step's logits; steps complete in the order they were submitted. Workers
 * sit in sl_executor_worker_loop answering rank 0's commands: a step, a
 * ping (a health check all ranks must answer), or stop. */
#ifndef SL_ENGINE_EXECUTOR_H
#define SL_ENGINE_EXECUTOR_H

#include "parallel/dist.h"
#include "model/model.h"

typedef struct sl_executor {
    sl_model *model;     /* this rank's shard (borrowed) */
    sl_dist *dist;       /* NULL: one process (borrowed) */
    int32_t *wire;       /* the packed plan */
    size_t wire_cap;     /* in int32 */
} sl_executor;

/* A submitted step's pending part: the receive of its logits, posted before
 * the step was sent (empty when the logits are already in place). */
typedef struct sl_exec_ticket {
    sl_comm_request logits;
} sl_exec_ticket;

/* Rank 0: starts a step. Its logits [n_logits][vocab] land in `logits`, which
 * must stay untouched until sl_executor_complete(t) returns; with one
 * process or one pipeline stage they are there when this returns. */
int sl_executor_submit(sl_executor *x, const sl_batch *b, float *logits, sl_exec_ticket *t, sl_err *err);
/* Rank 0: waits (within the communication deadline) for the step of t. */
int sl_executor_complete(sl_executor *x, sl_exec_ticket *t, sl_err *err);
/* Rank 0: gives up a submitted step after a failure (the job is ending). */
void sl_executor_abandon(sl_executor *x, sl_exec_ticket *t);
/* Rank 0: every rank answers within the communication deadline, or an error names the failure. */
int sl_executor_ping(sl_executor *x, sl_err *err);
/* Rank 0: tells the workers to leave their loop. */
int sl_executor_stop(sl_executor *x, sl_err *err);
/* Workers: run steps until rank 0 says stop (0) or a failure (its code). */
int sl_executor_worker_loop(sl_executor *x, sl_err *err);
void sl_executor_destroy(sl_executor *x);

#endif
