/* executor.h -- runs a step on every rank of the model.
 *
 * One process: the step is the model's forward pass. Several ranks: rank 0
 * (the scheduler) broadcasts the step's plan (the flattened batch), every
 * rank runs its shard on it, and the logits come back to rank 0 from the
 * last pipeline stage. Workers sit in sl_executor_worker_loop answering
 * rank 0's commands: a step, a ping (a health check all ranks must answer),
 * or stop. */
#ifndef SL_ENGINE_EXECUTOR_H
#define SL_ENGINE_EXECUTOR_H

#include "dist/dist.h"
#include "model/model.h"

typedef struct sl_executor {
    sl_model *model;     /* this rank's shard (borrowed) */
    sl_dist *dist;       /* NULL: one process (borrowed) */
    int32_t *wire;       /* the packed plan */
    size_t wire_cap;     /* in int32 */
} sl_executor;

/* Rank 0: one step; logits [n_logits][vocab] land in host memory. */
int sl_executor_step(sl_executor *x, const sl_batch *b, float *logits, sl_err *err);
/* Rank 0: every rank answers within the communication deadline, or an error names the failure. */
int sl_executor_ping(sl_executor *x, sl_err *err);
/* Rank 0: tells the workers to leave their loop. */
int sl_executor_stop(sl_executor *x, sl_err *err);
/* Workers: run steps until rank 0 says stop (0) or a failure (its code). */
int sl_executor_worker_loop(sl_executor *x, sl_err *err);
void sl_executor_destroy(sl_executor *x);

#endif
