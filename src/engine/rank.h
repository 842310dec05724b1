/* rank.h -- one rank's share of a model: its backend, its shard of the
 * weights and KV cache, and the executor that runs steps on it.
 *
 * Rank 0 fills an sl_rank_setup (the resolved model folder, the layout, the
 * step limits, the KV memory budget) and, with several ranks, broadcasts it;
 * every rank then opens its shard with sl_rank_open, which agrees with the
 * others on the KV block count (the smallest any rank can hold) and on
 * whether every rank loaded, so that all succeed or all fail together. */
#ifndef SL_ENGINE_RANK_H
#define SL_ENGINE_RANK_H

#include <stdbool.h>

#include "backend/backend.h"
#include "parallel/dist.h"
#include "engine/executor.h"
#include "model/model.h"

typedef struct sl_rank_setup {
    char model_dir[4096];
    char backend[16];
    int tp, pp, n_threads;
    int matmul_bf16_inputs;       /* --matmul-precision medium */
    int enforce_eager;            /* --enforce-eager: no CUDA graphs */
    sl_dtype kv_dtype;            /* --kv-cache-dtype */
    sl_dtype weight_dtype;        /* --dtype: matrices converted to it at load; SL_DTYPE_OTHER: the file's */
    int max_model_len;            /* 0: the model's max_position_embeddings */
    int max_model_len_explicit;   /* the user asked for max_model_len: too little KV is an error, not a cap */
    int block_size, max_num_seqs, max_num_batched_tokens;
    int64_t kv_cache_memory;      /* bytes per rank */
    int64_t device_memory;        /* bytes of one rank's device; 0: detect */
    double memory_utilization;    /* share of a GPU's device_memory shardlm may use (the CPU uses all of it) */
} sl_rank_setup;

typedef struct sl_rank {
    sl_dist *dist;                /* NULL for one process; owned */
    sl_backend backend;
    sl_model model;
    sl_executor exec;
    sl_model_config config;
    sl_shard_plan plan;
    int max_model_len, n_blocks;  /* as agreed by all ranks */
    int n_threads;                /* CPU threads this rank computes with */
} sl_rank;

/* Opens this rank's shard. With dist (owned by r from here on), every rank
 * of the job must call it with the same setup. */
int sl_rank_open(sl_rank *r, const sl_rank_setup *s, sl_dist *dist, sl_err *err);
/* Rank 0 stops the workers (if any), then every rank frees its part. */
void sl_rank_close(sl_rank *r);

/* Sends / receives the setup over the job (rank 0 to all). */
int sl_rank_share_setup(sl_dist *d, sl_rank_setup *s, sl_err *err);

#endif
