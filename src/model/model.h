/* model.h -- a decoder-only transformer (Llama / Qwen2 / Mistral) on a backend.
 *
 * Three plain structs, as in llama2.c: the config (config.h), the weights of
 * this rank's shard (pointers into backend memory, each with its shape), and
 * the run state (activations for one step, the paged KV storage). The
 * forward pass (forward.c) reads top to bottom against the backend
 * interface; it knows shapes and blocks, not requests. */
#ifndef SL_MODEL_MODEL_H
#define SL_MODEL_MODEL_H

#include <stdint.h>

#include "backend/backend.h"
#include "parallel/dist.h"
#include "parallel/tensor_comm.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/shard_plan.h"

typedef struct sl_layer_weights {
    float *attn_norm;            /* [hidden] */
    sl_weight wq, wk, wv;        /* [q_dim | kv_dim][hidden], this rank's heads */
    float *bq, *bk, *bv;         /* [q_dim | kv_dim] or NULL (Qwen2 / attention_bias) */
    sl_weight wo;                /* [hidden][q_dim], this rank's input columns */
    float *bo;                   /* [hidden] or NULL (Llama's attention_bias); added on tp rank 0 only */
    float *mlp_norm;             /* [hidden] */
    sl_weight w_gate, w_up;      /* [ffn][hidden] */
    float *b_gate, *b_up;        /* [ffn] or NULL (mlp_bias) */
    sl_weight w_down;            /* [hidden][ffn] */
    float *b_down;               /* [hidden] or NULL; added on tp rank 0 only */
    sl_kv_cache kv;              /* this layer's paged K and V, this rank's KV heads */
} sl_layer_weights;

/* One forward step's input, in host memory: the flattened batch. Step token
 * t belongs to the sequence whose [query_start[s], query_start[s+1]) holds
 * it; it sits at positions[t] and writes its K/V to slots[t]. Logits are
 * computed for the rows logits_rows[0..n_logits). */
typedef struct sl_batch {
    int n_tokens;
    const int32_t *tokens, *positions, *slots;      /* [n_tokens] */
    int n_seqs, max_blocks;
    const int32_t *query_start;                    /* [n_seqs + 1] */
    const int32_t *context_len;                    /* [n_seqs] */
    const int32_t *block_tables;                   /* [n_seqs][max_blocks] */
    int n_logits;
    const int32_t *logits_rows;                    /* [n_logits] */
    /* Sampling on this rank's backend (one process holding the whole model):
     * logits row i becomes the token sampled[i] by the settings sample[i],
     * and only the rows listed in full_rows come back whole. NULL: every row
     * comes back whole, for the caller to sample. */
    const sl_sample_row *sample;                   /* [n_logits] */
    int32_t *sampled;                              /* [n_logits], host memory */
    int n_full_rows;
    const int32_t *full_rows;                      /* [n_full_rows] indices of logits rows */
    /* The masks the rows' sample[i].mask name (n_masks > 0): the forward pass
     * calls fill_masks(fill_masks_arg, masks, vocab) once it has issued the
     * step's layers and before it samples, to write them to host memory
     * masks[n_masks][sl_sample_mask_words(vocab)], so the caller may still be
     * computing them while the backend runs the layers. */
    int n_masks;
    void (*fill_masks)(void *arg, uint32_t *masks, int vocab);
    void *fill_masks_arg;
} sl_batch;

/* Limits of one step; activations are sized from them at open. */
typedef struct sl_model_limits {
    int max_tokens;      /* tokens per step */
    int max_seqs;        /* sequences per step */
    int max_model_len;   /* tokens per sequence */
    int block_size;      /* tokens per KV block */
    int n_blocks;        /* KV blocks in the pool */
    sl_dtype kv_dtype;   /* element type of the KV cache */
    int convert_weights; /* 1: matrices become weight_dtype at load (--dtype); 0: they keep the file's */
    sl_dtype weight_dtype;
} sl_model_limits;

typedef struct sl_model {
    sl_model_config config;
    sl_shard_plan plan;
    sl_model_limits limits;
    sl_backend backend;            /* borrowed */
    const sl_dist *dist;           /* borrowed; NULL when one rank holds the whole model */
    sl_safetensors *st;            /* owned; weights may point into it */
    int q_dim, kv_dim, ffn;        /* this rank's widths */
    sl_weight embed;               /* [vocab_slice][hidden] */
    sl_weight lm_head;             /* [vocab_slice][hidden]; same data as embed when tied */
    float *final_norm;             /* [hidden] */
    float *inv_freq;               /* [head_dim / 2] */
    sl_layer_weights *layers;      /* this stage's layers */
    /* run state (backend memory): the residual stream x and the logits in float32, the rest in `act`
     * (backend.h: float32 on the CPU, the weights' 16-bit type on a GPU) */
    sl_dtype act;
    float *x, *logits;
    void *xb, *q, *k, *v, *att, *gate, *up, *logits_in;
    float *host_gather;            /* [max_seqs][vocab] all-gathered logits slices (tp > 1, last stage), host */
    sl_tensor_comm tensors;        /* owned; all-reduces, the vocabulary gather, hidden states (dist only) */
    int32_t *h_step, *d_step;      /* a step's int32 arrays packed end to end: host (pinned) and backend copies */
    int32_t *d_tokens, *d_positions, *d_slots, *d_query_start, *d_context_len, *d_block_tables, *d_logits_rows;
    const sl_sample_row *d_sample; /* the step's arrays inside d_step (set by each forward) */
    int32_t *d_sampled;            /* [max_seqs] the tokens the backend sampled */
    int pad_block;                 /* -1, or the KV block past the pool that padding rows write and read
                                      (decode steps padded to a graph's size, forward.c) */
    uint32_t *h_masks, *d_masks;   /* [max_seqs][mask words] the step's token masks: host (pinned) and backend
                                      copies; one process only (the layout that samples on its backend) */
    void **converted;              /* [n_converted] owned: --dtype copies of matrices the backend points into */
    int n_converted;
    size_t weight_bytes, kv_bytes, workspace_bytes;
    int n_unused_tensors;          /* tensors of the files this shard should have read but did not */
} sl_model;

/* Block-table row length: blocks needed by a max_model_len sequence. */
static inline int sl_model_max_blocks(const sl_model_limits *l) {
    return (l->max_model_len + l->block_size - 1) / l->block_size;
}

/* Loads this rank's shard of model_dir onto the backend and allocates the
 * run state and a KV pool of limits->n_blocks blocks. dist (NULL for one
 * rank) must match the plan's layout. */
int sl_model_open(sl_model *m, const char *model_dir, const sl_backend *backend, const sl_shard_plan *plan,
                  const sl_model_limits *limits, const sl_dist *dist, sl_err *err);
void sl_model_close(sl_model *m);

/* Bytes of weights a decode step reads on this rank: all of them but the embedding table, of which it
 * reads a row a token (unless the table is also the LM head). */
size_t sl_model_step_read_bytes(const sl_model *m);

/* Bytes of one KV block on this rank (all layers, K and V). */
size_t sl_model_kv_block_bytes(const sl_model_config *cfg, const sl_shard_plan *plan, int block_size, sl_dtype kv_dtype);

/* Runs this rank's part of one step. Every rank of the job calls it with
 * the same batch. The last pipeline stage's tensor-parallel rank 0 writes
 * the full logits [n_logits][vocab] to host memory (with batch->sample, the
 * sampled tokens and only the full_rows); other ranks leave `logits`
 * untouched (it may be NULL there). */
int sl_model_forward(sl_model *m, const sl_batch *batch, float *logits, sl_err *err);

#endif
