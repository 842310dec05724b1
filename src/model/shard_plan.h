/* shard_plan.h -- which part of the model one rank holds.
 *
 * Tensor parallelism splits attention by KV-head groups (each rank keeps
 * whole groups of query heads with their KV head, or a share of one group's
 * query heads when KV heads are replicated), the MLP by intermediate
 * columns in the same proportion, and the vocabulary evenly. Pipeline
 * parallelism gives each stage a contiguous range of layers. With tp = pp = 1
 * the plan is the whole model. */
#ifndef SL_MODEL_SHARD_PLAN_H
#define SL_MODEL_SHARD_PLAN_H

#include "model/config.h"
#include "util/error.h"

typedef struct sl_shard_plan {
    int tp_rank, tp_size, pp_rank, pp_size;
    int layer_begin, layer_end;        /* [begin, end) of this pipeline stage */
    int q_head_begin, q_head_end;      /* query heads on this rank */
    int kv_head_begin, kv_head_end;    /* KV heads on this rank */
    int ffn_begin, ffn_end;            /* intermediate columns on this rank */
    int vocab_begin, vocab_end;        /* embedding / LM-head rows on this rank */
} sl_shard_plan;

/* The plan of rank (tp_rank, pp_rank) in a tp_size x pp_size layout. An
 * impossible layout is an error that lists the sizes that work. */
int sl_shard_plan_make(const sl_model_config *cfg, int tp_rank, int tp_size, int pp_rank, int pp_size,
                       sl_shard_plan *plan, sl_err *err);

/* The vocabulary rows [begin, end) of tensor-parallel rank tp_rank (an even deal,
 * the first ranks one row more): what every rank's plan holds, without making one. */
void sl_shard_plan_vocab_slice(int vocab_size, int tp_size, int tp_rank, int *begin, int *end);

static inline int sl_shard_plan_n_layers(const sl_shard_plan *p) { return p->layer_end - p->layer_begin; }
static inline int sl_shard_plan_n_heads(const sl_shard_plan *p) { return p->q_head_end - p->q_head_begin; }
static inline int sl_shard_plan_n_kv_heads(const sl_shard_plan *p) { return p->kv_head_end - p->kv_head_begin; }

#endif
