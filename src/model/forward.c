/* forward.c -- one step of the transformer over a flattened batch.
 *
 * Reads top to bottom as the model computes (transformers' LlamaModel):
 *   x = embed(tokens)                        or x from the previous pipeline stage
 *   for each layer of this stage:
 *       x += o_proj(attention(rope(q), rope(k), v))   over rmsnorm(x)
 *       x += down(silu(gate) * up)                    over rmsnorm(x)
 *   x to the next stage, or logits = lm_head(rmsnorm(x)) for the rows that need them
 * Each residual add and the norm after it are one op (add_rmsnorm: xb holds
 * the normed x the next block reads), and RoPE goes with the K/V store.
 * The residual stream x stays float32; what the blocks compute from it is
 * in the backend's activation dtype m->act (bf16 on a GPU, backend.h).
 * Every op goes through the backend table; this file never touches a
 * number itself. K/V of the step go to the paged cache at their slots
 * before attention reads the whole context through the block tables.
 *
 * Tensor parallelism (Megatron): this rank holds some heads and MLP columns,
 * so o_proj and down_proj give partial sums, completed by one all-reduce
 * each; the embedding holds a vocabulary slice (rows outside it embed to
 * zero, the all-reduce fills them) and so does the LM head (the slices are
 * all-gathered into full rows).
 *
 * Tensors between ranks go through the model's tensor communicator
 * (parallel/tensor_comm.h), in order with the backend's ops.
 *
 * The ops from the embedding to the logits are one unit (issue_step),
 * which a backend may keep as a graph and replay for later steps of the
 * same shape: decode steps of one process (graph_key), padded with rows of
 * their own up to a few sizes (padded_rows), so a handful of graphs serve
 * every batch size. Their arguments then depend on the step's sizes only:
 * the step's arrays sit at offsets fixed by its sizes, and attention gets
 * the block-table width as its bound on the context instead of the longest
 * context itself.
 *
 * Sampling on the backend follows the unit (sample_rows): the structured-
 * output masks of its rows are only asked of the caller then, so they are
 * computed while the backend runs the layers (on a GPU the host has issued
 * them all and waits for nothing), then go up from pinned memory into one
 * fixed buffer before the sample op. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "model/model.h"


#define SAMPLE_ROW_INTS (sizeof(sl_sample_row) / sizeof(int32_t))

/* Block-table width of a step: the blocks its longest context needs, rounded up
 * to a power of two (so that steps of one shape share a width, see graph_key),
 * at most the batch's own row length. */
static int table_width(const sl_model *m, const sl_batch *b, int max_context) {
    const int needed = (max_context + m->limits.block_size - 1) / m->limits.block_size;
    int w = 1;
    while (w < needed) w *= 2;
    return w < b->max_blocks ? w : b->max_blocks;
}

/* A decode step's size rounded up to the sizes graphs are kept for (vLLM's
 * capture sizes: 1, 2, 4, then multiples of 8 up to 256 and of 16 beyond),
 * so that a few graphs serve every batch size: n itself where the model
 * keeps none (pad_block < 0), for other steps, and past the limits. */
static int padded_rows(const sl_model *m, const sl_batch *b) {
    const int n = b->n_seqs;
    if (m->pad_block < 0 || b->n_tokens != n || b->n_logits != n) return n;
    const int p = n <= 2 ? n : n <= 4 ? 4 : n <= 256 ? (n + 7) / 8 * 8 : (n + 15) / 16 * 16;
    return p <= m->limits.max_seqs && p <= m->limits.max_tokens ? p : n;
}

/* Where a step array in backend memory is staged in the pinned host buffer. */
static int32_t *staged(sl_model *m, const int32_t *dev) { return m->h_step + (dev - m->d_step); }

/* The step's int32 arrays go up in one copy: packed end to end into the
 * pinned host buffer (block-table rows cut to `width` entries), then pointed
 * at where they land in device memory. Offsets depend on the step's sizes
 * only. `pad` rows follow a decode step's own (padded_rows): token 0 at
 * position 0 of a sequence of its own, with logits, in the pad block that no
 * sequence owns, which each of them writes and reads alone. */
static int upload_batch(sl_model *m, const sl_batch *b, int width, int pad, sl_err *err) {
    const struct { int32_t **dev; const int32_t *src; size_t n, n_pad; } parts[] = {
        {&m->d_tokens, b->tokens, (size_t)b->n_tokens, pad},
        {&m->d_positions, b->positions, (size_t)b->n_tokens, pad},
        {&m->d_slots, b->slots, (size_t)b->n_tokens, pad},
        {&m->d_query_start, b->query_start, (size_t)b->n_seqs + 1, pad},
        {&m->d_context_len, b->context_len, (size_t)b->n_seqs, pad},
        {&m->d_block_tables, NULL, (size_t)b->n_seqs * (size_t)width, (size_t)pad * (size_t)width},
        {&m->d_logits_rows, b->logits_rows, (size_t)b->n_logits, pad},
        {(int32_t **)&m->d_sample, (const int32_t *)b->sample, b->sample ? (size_t)b->n_logits * SAMPLE_ROW_INTS : 0, 0},
    };
    size_t at = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (parts[i].src && parts[i].n) memcpy(m->h_step + at, parts[i].src, parts[i].n * sizeof(int32_t));
        *parts[i].dev = m->d_step + at;
        at += parts[i].n + parts[i].n_pad;
    }
    for (int s = 0; s < b->n_seqs; s++)
        memcpy(staged(m, m->d_block_tables) + (size_t)s * (size_t)width,
               b->block_tables + (size_t)s * (size_t)b->max_blocks, (size_t)width * sizeof(int32_t));
    for (int i = 0; i < pad; i++) {
        const int row = b->n_seqs + i; /* = its token's index: a decode step has a token a sequence */
        staged(m, m->d_tokens)[row] = 0;
        staged(m, m->d_positions)[row] = 0;
        staged(m, m->d_slots)[row] = m->pad_block * m->limits.block_size;
        staged(m, m->d_query_start)[row + 1] = row + 1;
        staged(m, m->d_context_len)[row] = 1;
        for (int j = 0; j < width; j++) staged(m, m->d_block_tables)[(size_t)row * (size_t)width + j] = m->pad_block;
        staged(m, m->d_logits_rows)[b->n_logits + i] = row;
    }
    return m->backend.iface->upload(m->backend.ctx, m->d_step, m->h_step, at * sizeof(int32_t), err);
}

static int check_batch(const sl_model *m, const sl_batch *b, sl_err *err) {
    const sl_model_limits *l = &m->limits;
    if (b->n_tokens < 1 || b->n_tokens > l->max_tokens || b->n_seqs < 1 || b->n_seqs > l->max_seqs ||
        b->n_logits < 0 || b->n_logits > l->max_seqs || b->max_blocks > sl_model_max_blocks(l) ||
        b->query_start[0] != 0 || b->query_start[b->n_seqs] != b->n_tokens || (b->sample && m->dist) ||
        b->n_masks < 0 || b->n_masks > b->n_logits || (b->n_masks && (!b->sample || !b->fill_masks)))
        return sl_err_set(err, SL_EINTERNAL, "step batch out of limits (%d tokens, %d seqs, %d logits, %d masks)",
                          b->n_tokens, b->n_seqs, b->n_logits, b->n_masks);
    return SL_OK;
}

/* Completes partial sums over the tensor-parallel group. */
static int tp_all_reduce(sl_model *m, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    if (!m->dist || m->dist->tp_size == 1) return SL_OK;
    return m->tensors.iface->all_reduce_sum(m->tensors.ctx, buf, n, dtype, err);
}

/* The residual add after a block, and the norm of the block that follows
 * (next_norm NULL: the stage ends here and x goes on as it is). */
static void residual(sl_model *m, const float *next_norm, int n) {
    const sl_backend_iface *be = m->backend.iface;
    const sl_model_config *c = &m->config;
    if (next_norm)
        be->add_rmsnorm(m->backend.ctx, m->xb, m->x, m->xb, next_norm, n, c->hidden_size, c->rms_norm_eps, m->act);
    else be->add(m->backend.ctx, m->x, m->xb, (int64_t)n * c->hidden_size, m->act);
}

/* xb holds rmsnorm(x) on entry, rmsnorm(x) for the MLP on return. */
static int attention_block(sl_model *m, sl_layer_weights *L, const sl_batch *b, const sl_attn_batch *ab, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const sl_model_config *c = &m->config;
    const int n = b->n_tokens;
    const int n_heads = sl_shard_plan_n_heads(&m->plan);
    const sl_proj qkv[3] = {{m->q, &L->wq, L->bq, 0}, {m->k, &L->wk, L->bk, 0}, {m->v, &L->wv, L->bv, 0}};
    be->matmul(ctx, qkv, 3, m->xb, n, m->act);
    be->rope_kv_store(ctx, m->q, m->k, m->v, &L->kv, m->d_positions, m->d_slots, m->inv_freq, n, n_heads, m->act);
    be->attention(ctx, m->att, m->q, &L->kv, ab, n_heads, 1.0f / sqrtf((float)c->head_dim), m->act);
    be->matmul(ctx, &(sl_proj){m->xb, &L->wo, L->bo, 0}, 1, m->att, n, m->act);
    int rc = tp_all_reduce(m, m->xb, (int64_t)n * c->hidden_size, m->act, err);
    if (!rc) residual(m, L->mlp_norm, n);
    return rc;
}

/* xb holds rmsnorm(x) on entry, next_norm's norm of x on return. */
static int mlp_block(sl_model *m, sl_layer_weights *L, const float *next_norm, int n, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const sl_model_config *c = &m->config;
    const sl_proj gate_up[2] = {{m->gate, &L->w_gate, L->b_gate, 0}, {m->up, &L->w_up, L->b_up, 0}};
    be->matmul(ctx, gate_up, 2, m->xb, n, m->act);
    be->swiglu(ctx, m->gate, m->gate, m->up, (int64_t)n * m->ffn, m->act);
    be->matmul(ctx, &(sl_proj){m->xb, &L->w_down, L->b_down, 0}, 1, m->gate, n, m->act);
    int rc = tp_all_reduce(m, m->xb, (int64_t)n * c->hidden_size, m->act, err);
    if (!rc) residual(m, next_norm, n);
    return rc;
}

/* The residual stream enters this stage: embedded here, or from the stage before. */
static int stage_input(sl_model *m, const sl_batch *b, sl_err *err) {
    if (m->dist && m->dist->prev_stage >= 0)
        return m->tensors.iface->recv_prev(m->tensors.ctx, m->x, (int64_t)b->n_tokens * m->config.hidden_size,
                                           SL_DTYPE_F32, err);
    m->backend.iface->embed(m->backend.ctx, m->x, &m->embed, m->d_tokens, b->n_tokens, m->plan.vocab_begin);
    return tp_all_reduce(m, m->x, (int64_t)b->n_tokens * m->config.hidden_size, SL_DTYPE_F32, err);
}

/* Sampled tokens come back, and the rows the caller samples itself come back whole. */
static int download_sampled(sl_model *m, const sl_batch *b, float *logits, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const size_t vocab = (size_t)m->config.vocab_size;
    int rc = be->download(ctx, b->sampled, m->d_sampled, sizeof(int32_t) * (size_t)b->n_logits, err);
    for (int j = 0; j < b->n_full_rows && !rc; j++) {
        const size_t row = (size_t)b->full_rows[j];
        rc = be->download(ctx, logits + row * vocab, m->logits + row * vocab, sizeof(float) * vocab, err);
    }
    return rc ? rc : be->synchronize(ctx, err);
}

/* The logits of this rank's vocabulary slice (m->logits) to the host:
 * all-gathered into full rows when the vocabulary is split. */
static int logits_to_host(sl_model *m, const sl_batch *b, float *logits, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const sl_model_config *c = &m->config;
    const int64_t slice = m->plan.vocab_end - m->plan.vocab_begin;
    if (b->sample) return download_sampled(m, b, logits, err);
    if (m->plan.tp_size == 1)
        return be->download(ctx, logits, m->logits, (size_t)b->n_logits * (size_t)slice * sizeof(float), err);
    /* rank r's block holds [n_logits][slice_r]; rows are rebuilt from the blocks */
    const sl_dist *d = m->dist;
    int64_t counts[64];
    int begin[64], end[64];
    for (int r = 0; r < d->tp_size && r < 64; r++) {
        sl_shard_plan_vocab_slice(c->vocab_size, d->tp_size, r, &begin[r], &end[r]);
        counts[r] = (int64_t)b->n_logits * (end[r] - begin[r]);
    }
    int rc = m->tensors.iface->gather_to_host(m->tensors.ctx, m->logits, (int64_t)b->n_logits * slice, m->host_gather,
                                              counts, SL_DTYPE_F32, err);
    if (rc || d->tp_rank != 0) return rc;
    const float *block = m->host_gather;
    for (int r = 0; r < d->tp_size; r++) {
        const int64_t w = end[r] - begin[r];
        for (int i = 0; i < b->n_logits; i++)
            memcpy(logits + (size_t)i * (size_t)c->vocab_size + begin[r], block + (size_t)i * (size_t)w,
                   (size_t)w * sizeof(float));
        block += (size_t)b->n_logits * (size_t)w;
    }
    return SL_OK;
}

/* A step's ops on this rank, from the residual stream's entry to the logits
 * of its slice: what the backend may keep as one graph (backend.h's replay). */
typedef struct step_ops {
    sl_model *m;
    const sl_batch *b;
    const sl_attn_batch *ab;
} step_ops;

static int issue_step(void *arg, sl_err *err) {
    const step_ops *s = arg;
    sl_model *m = s->m;
    const sl_batch *b = s->b;
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const sl_model_config *c = &m->config;
    int rc = stage_input(m, b, err);
    if (rc) return rc;
    const int n_layers = sl_shard_plan_n_layers(&m->plan);
    const bool last_stage = !m->dist || m->dist->next_stage < 0;
    be->rmsnorm(ctx, m->xb, m->x, m->layers[0].attn_norm, b->n_tokens, c->hidden_size, c->rms_norm_eps, m->act);
    for (int l = 0; l < n_layers && !rc; l++) {
        const float *next_norm = l + 1 < n_layers ? m->layers[l + 1].attn_norm : last_stage ? m->final_norm : NULL;
        rc = attention_block(m, &m->layers[l], b, s->ab, err);
        if (!rc) rc = mlp_block(m, &m->layers[l], next_norm, b->n_tokens, err);
    }
    if (rc || !last_stage || b->n_logits == 0) return rc;
    /* the LM head over the rows of xb (the final norm of x) that need logits */
    be->gather_rows(ctx, m->logits_in, m->xb, m->d_logits_rows, b->n_logits, c->hidden_size, m->act);
    be->matmul(ctx, &(sl_proj){.out = m->logits, .w = &m->lm_head, .f32_out = 1}, 1, m->logits_in, b->n_logits, m->act);
    return SL_OK;
}

/* The key a step's ops are kept under (0: not kept): decode steps of one
 * process, which issue the same ops with the same arguments whenever their
 * sizes and block-table width agree. */
static uint64_t graph_key(const sl_model *m, const sl_batch *b, int width) {
    if (m->dist || b->n_tokens != b->n_seqs || b->n_tokens >= (1 << 20) || width >= (1 << 22)) return 0;
    return (uint64_t)b->n_tokens << 43 | (uint64_t)b->n_logits << 23 | (uint64_t)width;
}

/* The logits rows to tokens on the backend, after the step's other ops: the
 * caller fills the rows' masks now, and they go up before the sample op. */
static int sample_rows(sl_model *m, const sl_batch *b, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    const int vocab = m->config.vocab_size;
    if (b->n_masks > 0) {
        b->fill_masks(b->fill_masks_arg, m->h_masks, vocab);
        const size_t n_bytes = (size_t)b->n_masks * sl_sample_mask_words(vocab) * sizeof(uint32_t);
        int rc = be->upload(ctx, m->d_masks, m->h_masks, n_bytes, err);
        if (rc) return rc;
    }
    be->sample(ctx, m->d_sampled, m->logits, m->d_sample, m->d_masks, b->n_logits, vocab);
    return SL_OK;
}

int sl_model_forward(sl_model *m, const sl_batch *b, float *logits, sl_err *err) {
    const sl_backend_iface *be = m->backend.iface;
    void *ctx = m->backend.ctx;
    int rc = check_batch(m, b, err);
    if (rc) return rc;
    int max_query = 0, max_context = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->query_start[s + 1] - b->query_start[s] > max_query) max_query = b->query_start[s + 1] - b->query_start[s];
        if (b->context_len[s] > max_context) max_context = b->context_len[s];
    }
    const int width = table_width(m, b, max_context), pad = padded_rows(m, b) - b->n_seqs;
    if ((rc = upload_batch(m, b, width, pad, err))) return rc;
    /* the step as its ops see it, padding rows included; sampling and the host see b's rows only */
    sl_batch ops_batch = *b;
    ops_batch.n_tokens += pad, ops_batch.n_seqs += pad, ops_batch.n_logits += pad;
    const int cap = width * m->limits.block_size;
    const sl_attn_batch ab = {
        .n_seqs = ops_batch.n_seqs,
        .n_tokens = ops_batch.n_tokens,
        .max_query_len = max_query,
        .max_blocks = width,
        .max_context_len = cap < m->limits.max_model_len ? cap : m->limits.max_model_len, /* a bound, by width */
        .query_start = m->d_query_start,
        .context_len = m->d_context_len,
        .block_tables = m->d_block_tables,
    };
    step_ops ops = {m, &ops_batch, &ab};
    const uint64_t key = graph_key(m, &ops_batch, width);
    rc = key && be->replay ? be->replay(ctx, key, issue_step, &ops, err) : issue_step(&ops, err);
    if (!rc && b->sample && b->n_logits > 0) rc = sample_rows(m, b, err);
    if (!rc && m->dist && m->dist->next_stage >= 0)
        rc = m->tensors.iface->send_next(m->tensors.ctx, m->x, (int64_t)b->n_tokens * m->config.hidden_size,
                                         SL_DTYPE_F32, err);
    /* the step's communication within its deadline, before anything waits on the backend without one */
    if (!rc && m->dist) rc = sl_tensor_comm_wait(&m->tensors, err);
    if (rc || (m->dist && m->dist->next_stage >= 0)) return rc;
    if (b->n_logits == 0) return be->synchronize(ctx, err);
    return logits_to_host(m, b, logits, err);
}
