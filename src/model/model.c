/* model.c -- load this rank's shard of a model and allocate its run state.
 *
 * Tensor names are transformers' (model.layers.N.self_attn.q_proj.weight...).
 * Matrices stay in their file's dtype, or with --dtype are converted once to
 * the one asked for (a copy the model owns while the backend points into it,
 * else freed once loaded); a rank's slice is rows of the file
 * (column-parallel: q/k/v, gate/up, vocab) or a column range (row-parallel:
 * o_proj, down_proj). Norm weights and biases are small and become float32.
 * Every tensor is checked against the shape config.json implies, so a
 * mismatched file is an error naming the tensor, never a wrong answer. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/memory_plan.h"
#include "util/half.h"
#include "util/log.h"
#include "util/progress.h"

/* n elements of a file row as float32, and back to a dtype (round to nearest even). */
static void row_to_f32(float *dst, const void *src, sl_dtype dtype, int64_t n) {
    const uint16_t *h = src;
    if (dtype == SL_DTYPE_F32) memcpy(dst, src, (size_t)n * sizeof(float));
    else if (dtype == SL_DTYPE_BF16) for (int64_t i = 0; i < n; i++) dst[i] = sl_bf16_to_f32(h[i]);
    else for (int64_t i = 0; i < n; i++) dst[i] = sl_f16_to_f32(h[i]);
}

static void f32_to_row(void *dst, const float *src, sl_dtype dtype, int64_t n) {
    uint16_t *h = dst;
    if (dtype == SL_DTYPE_F32) memcpy(dst, src, (size_t)n * sizeof(float));
    else if (dtype == SL_DTYPE_BF16) for (int64_t i = 0; i < n; i++) h[i] = sl_f32_to_bf16(src[i]);
    else for (int64_t i = 0; i < n; i++) h[i] = sl_f32_to_f16(src[i]);
}

/* The slice [r0, r1) x [c0, c1) of t ([rows][cols]) as a packed copy in dtype to (malloc'd), or NULL. */
static void *convert_slice(const sl_st_tensor *t, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                           sl_dtype to) {
    const int64_t n_cols = c1 - c0;
    const size_t in_elem = sl_dtype_n_bytes(t->dtype), out_elem = sl_dtype_n_bytes(to);
    char *out = malloc((size_t)((r1 - r0) * n_cols) * out_elem + 1);
    float *row = malloc((size_t)n_cols * sizeof *row + 1);
    if (!out || !row) {
        free(out);
        free(row);
        return NULL;
    }
    for (int64_t r = r0; r < r1; r++) {
        row_to_f32(row, (const char *)t->data + (size_t)(r * cols + c0) * in_elem, t->dtype, n_cols);
        f32_to_row(out + (size_t)((r - r0) * n_cols) * out_elem, row, to, n_cols);
    }
    free(row);
    return out;
}

/* Keeps a converted copy the backend's weight points into until the model closes. */
static int keep_converted(sl_model *m, void *copy, sl_err *err) {
    void **grown = realloc(m->converted, sizeof *grown * (size_t)(m->n_converted + 1));
    if (!grown) return sl_err_set(err, SL_ENOMEM, "out of memory");
    m->converted = grown;
    m->converted[m->n_converted++] = copy;
    return SL_OK;
}

/* Loads a slice of a file's matrix in the file's dtype, or converted to --dtype's. */
static int load_matrix(sl_model *m, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                       int64_t c0, int64_t c1, sl_weight *out, sl_err *err) {
    const sl_st_tensor *t;
    int rc = sl_safetensors_get(m->st, name, 2, (int64_t[]){rows, cols}, &t, err);
    if (rc) return rc;
    const sl_dtype to = m->limits.convert_weights ? m->limits.weight_dtype : t->dtype;
    const void *src = (const char *)t->data + (size_t)(r0 * cols + c0) * sl_dtype_n_bytes(t->dtype);
    void *copy = NULL;
    if (to != t->dtype && !(src = copy = convert_slice(t, cols, r0, r1, c0, c1, to)))
        return sl_err_set(err, SL_ENOMEM, "out of memory converting %s to %s", name, sl_dtype_name(to));
    rc = m->backend.iface->weight_load(m->backend.ctx, out, src, to, r1 - r0, c1 - c0, copy ? c1 - c0 : cols, err);
    if (!rc && copy && !out->owned && !(rc = keep_converted(m, copy, err))) copy = NULL; /* read in place */
    free(copy);
    if (rc) return sl_err_wrap(err, rc, "loading %s: ", name);
    m->weight_bytes += (size_t)((r1 - r0) * (c1 - c0)) * sl_dtype_n_bytes(to);
    return SL_OK;
}

static int alloc_buf(sl_model *m, size_t n_bytes, void **out, sl_err *err) {
    int rc = m->backend.iface->alloc(m->backend.ctx, n_bytes, out, err);
    if (rc) return sl_err_wrap(err, rc, "allocating %zu bytes on the %s backend: ", n_bytes, m->backend.iface->name);
    return SL_OK;
}

/* A vector slice [begin, end) as float32 in backend memory. */
static int load_vector(sl_model *m, const char *name, int64_t n, int64_t begin, int64_t end, float **out, sl_err *err) {
    const sl_st_tensor *t;
    int rc = sl_safetensors_get(m->st, name, 1, (int64_t[]){n}, &t, err);
    if (rc) return rc;
    int64_t len = end - begin;
    float *host = malloc((size_t)(len > 0 ? len : 1) * sizeof *host);
    if (!host) return sl_err_set(err, SL_ENOMEM, "out of memory loading %s", name);
    for (int64_t i = 0; i < len; i++) {
        const uint8_t *p = (const uint8_t *)t->data + (size_t)(begin + i) * sl_dtype_n_bytes(t->dtype);
        uint16_t h;
        memcpy(&h, p, 2);
        if (t->dtype == SL_DTYPE_F32) memcpy(&host[i], p, 4);
        else host[i] = t->dtype == SL_DTYPE_BF16 ? sl_bf16_to_f32(h) : sl_f16_to_f32(h);
    }
    rc = alloc_buf(m, (size_t)len * sizeof(float), (void **)out, err);
    if (!rc) rc = m->backend.iface->upload(m->backend.ctx, *out, host, (size_t)len * sizeof(float), err);
    free(host);
    m->weight_bytes += (size_t)len * sizeof(float);
    return rc;
}

static int load_layer(sl_model *m, int layer, sl_layer_weights *L, sl_err *err) {
    const sl_model_config *c = &m->config;
    const sl_shard_plan *p = &m->plan;
    const int64_t h = c->hidden_size, hd = c->head_dim, q_all = (int64_t)c->n_heads * hd,
                  kv_all = (int64_t)c->n_kv_heads * hd, ffn_all = c->intermediate_size;
    const int64_t q0 = p->q_head_begin * hd, q1 = p->q_head_end * hd, k0 = p->kv_head_begin * hd,
                  k1 = p->kv_head_end * hd;
    char name[160];
    int rc = SL_OK;
#define NAME(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix), name)
    if ((rc = load_vector(m, NAME("input_layernorm.weight"), h, 0, h, &L->attn_norm, err)) ||
        (rc = load_matrix(m, NAME("self_attn.q_proj.weight"), q_all, h, q0, q1, 0, h, &L->wq, err)) ||
        (rc = load_matrix(m, NAME("self_attn.k_proj.weight"), kv_all, h, k0, k1, 0, h, &L->wk, err)) ||
        (rc = load_matrix(m, NAME("self_attn.v_proj.weight"), kv_all, h, k0, k1, 0, h, &L->wv, err)) ||
        (rc = load_matrix(m, NAME("self_attn.o_proj.weight"), h, q_all, 0, h, q0, q1, &L->wo, err)) ||
        (rc = load_vector(m, NAME("post_attention_layernorm.weight"), h, 0, h, &L->mlp_norm, err)) ||
        (rc = load_matrix(m, NAME("mlp.gate_proj.weight"), ffn_all, h, p->ffn_begin, p->ffn_end, 0, h, &L->w_gate, err)) ||
        (rc = load_matrix(m, NAME("mlp.up_proj.weight"), ffn_all, h, p->ffn_begin, p->ffn_end, 0, h, &L->w_up, err)) ||
        (rc = load_matrix(m, NAME("mlp.down_proj.weight"), h, ffn_all, 0, h, p->ffn_begin, p->ffn_end, &L->w_down, err)))
        return rc;
    if (c->attention_bias &&
        ((rc = load_vector(m, NAME("self_attn.q_proj.bias"), q_all, q0, q1, &L->bq, err)) ||
         (rc = load_vector(m, NAME("self_attn.k_proj.bias"), kv_all, k0, k1, &L->bk, err)) ||
         (rc = load_vector(m, NAME("self_attn.v_proj.bias"), kv_all, k0, k1, &L->bv, err))))
        return rc;
    if (c->o_proj_bias && p->tp_rank == 0 && (rc = load_vector(m, NAME("self_attn.o_proj.bias"), h, 0, h, &L->bo, err)))
        return rc;
    if (c->mlp_bias &&
        ((rc = load_vector(m, NAME("mlp.gate_proj.bias"), ffn_all, p->ffn_begin, p->ffn_end, &L->b_gate, err)) ||
         (rc = load_vector(m, NAME("mlp.up_proj.bias"), ffn_all, p->ffn_begin, p->ffn_end, &L->b_up, err)) ||
         (p->tp_rank == 0 && (rc = load_vector(m, NAME("mlp.down_proj.bias"), h, 0, h, &L->b_down, err)))))
        return rc;
#undef NAME
    return SL_OK;
}

static int load_weights(sl_model *m, sl_err *err) {
    const sl_model_config *c = &m->config;
    const sl_shard_plan *p = &m->plan;
    const int64_t h = c->hidden_size, v = c->vocab_size;
    /* a bar on rank 0 where loading takes long enough to wonder about (over 2 GB per rank) */
    const double rank_bytes = sl_mem_total_weight_bytes(c) / (double)(p->tp_size * p->pp_size);
    const bool show = rank_bytes > 2e9 && (!m->dist || m->dist->world.rank == 0);
    sl_progress bar;
    if (show) sl_progress_start(&bar, stderr, "loading weights", (uint64_t)rank_bytes, "B");
    int rc = load_matrix(m, "model.embed_tokens.weight", v, h, p->vocab_begin, p->vocab_end, 0, h, &m->embed, err);
    if (rc) return rc;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        m->lm_head.owned = NULL; /* freed once, through embed */
    } else if ((rc = load_matrix(m, "lm_head.weight", v, h, p->vocab_begin, p->vocab_end, 0, h, &m->lm_head, err))) {
        return rc;
    }
    if ((rc = load_vector(m, "model.norm.weight", h, 0, h, &m->final_norm, err))) return rc;
    m->layers = calloc((size_t)sl_shard_plan_n_layers(p), sizeof *m->layers);
    if (!m->layers) return sl_err_set(err, SL_ENOMEM, "out of memory");
    for (int l = p->layer_begin; l < p->layer_end; l++) {
        if (show) sl_progress_update(&bar, m->weight_bytes);
        if ((rc = load_layer(m, l, &m->layers[l - p->layer_begin], err))) return rc;
    }
    if (show) {
        bar.total = m->weight_bytes; /* the estimate counted norms at the file's width, not float32 */
        sl_progress_update(&bar, m->weight_bytes);
        sl_progress_finish(&bar);
    }
    return SL_OK;
}

/* A tensor of the files that no part of the model read means the config and
 * the weights disagree (a bias the architecture does not expect...): warn
 * with its name. Layers of other pipeline stages are not ours to read. */
static int count_unused_tensors(const sl_model *m) {
    int n = 0;
    for (size_t i = 0; i < sl_safetensors_count(m->st); i++) {
        const sl_st_tensor *t = sl_safetensors_at(m->st, i);
        int layer;
        if (t->used || strstr(t->name, "rotary_emb.inv_freq")) continue;
        if (sscanf(t->name, "model.layers.%d.", &layer) == 1 &&
            (layer < m->plan.layer_begin || layer >= m->plan.layer_end))
            continue;
        if (strcmp(t->name, "lm_head.weight") == 0 && m->config.tie_word_embeddings) continue;
        SL_WARN("%s: tensor \"%s\" is not used by %s as config.json describes it", t->file, t->name,
                m->config.arch_name);
        n++;
    }
    return n;
}

size_t sl_model_step_read_bytes(const sl_model *m) {
    const sl_weight *e = &m->embed;
    if (!e->data || m->config.tie_word_embeddings) return m->weight_bytes;
    return m->weight_bytes - (size_t)(e->rows * e->cols) * sl_dtype_n_bytes(e->dtype);
}

size_t sl_model_kv_block_bytes(const sl_model_config *cfg, const sl_shard_plan *plan, int block_size, sl_dtype kv_dtype) {
    const sl_kv_cache kv = {.dtype = kv_dtype, .block_size = block_size, .n_kv_heads = sl_shard_plan_n_kv_heads(plan),
                            .head_dim = cfg->head_dim};
    return 2 * sl_kv_block_bytes(&kv) * (size_t)sl_shard_plan_n_layers(plan);
}

/* The dtype of the matrices as loaded: the first layer's (they share one), else the model's. */
static sl_dtype matrix_dtype(const sl_model *m) {
    return sl_shard_plan_n_layers(&m->plan) > 0 ? m->layers[0].wq.dtype : m->config.dtype;
}

static int alloc_run_state(sl_model *m, sl_err *err) {
    const sl_model_limits *lim = &m->limits;
    const size_t T = (size_t)lim->max_tokens, f = sizeof(float), a = sl_dtype_n_bytes(m->act), i32 = sizeof(int32_t);
    const size_t h = (size_t)m->config.hidden_size, vocab = (size_t)(m->plan.vocab_end - m->plan.vocab_begin);
    /* tokens, positions, slots; query_start, context_len, block tables, logits rows, sample rows */
    const size_t step_ints = 3 * T + (size_t)(lim->max_seqs + 1) +
                             (size_t)lim->max_seqs * (2 + (size_t)sl_model_max_blocks(lim)) +
                             (size_t)lim->max_seqs * (sizeof(sl_sample_row) / i32);
    int rc = m->backend.iface->alloc_host(m->backend.ctx, step_ints * i32, (void **)&m->h_step, err);
    if (rc) return rc;
    struct { void **p; size_t n_bytes; } bufs[] = {
        {(void **)&m->x, T * h * f},           {&m->xb, T * h * a},
        {&m->q, T * (size_t)m->q_dim * a},     {&m->k, T * (size_t)m->kv_dim * a},
        {&m->v, T * (size_t)m->kv_dim * a},    {&m->att, T * (size_t)m->q_dim * a},
        {&m->gate, T * (size_t)m->ffn * a},    {&m->up, T * (size_t)m->ffn * a},
        {&m->logits_in, (size_t)lim->max_seqs * h * a},
        {(void **)&m->logits, (size_t)lim->max_seqs * vocab * f},
        {(void **)&m->d_step, step_ints * i32},
        {(void **)&m->d_sampled, (size_t)lim->max_seqs * i32},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if ((rc = alloc_buf(m, bufs[i].n_bytes, bufs[i].p, err))) return rc;
        m->workspace_bytes += bufs[i].n_bytes;
    }
    if (!m->dist) {
        const size_t mask_bytes = (size_t)lim->max_seqs * sl_sample_mask_words(m->config.vocab_size) * i32;
        if ((rc = m->backend.iface->alloc_host(m->backend.ctx, mask_bytes, (void **)&m->h_masks, err)) ||
            (rc = alloc_buf(m, mask_bytes, (void **)&m->d_masks, err)))
            return rc;
        m->workspace_bytes += mask_bytes;
    }
    if (m->plan.tp_size > 1 && m->plan.pp_rank == m->plan.pp_size - 1) {
        size_t full = (size_t)lim->max_seqs * (size_t)m->config.vocab_size * f;
        if (!(m->host_gather = malloc(full))) return sl_err_set(err, SL_ENOMEM, "out of memory for the logits gather");
    }
    if (m->dist) { /* the largest tensor between ranks: a step's hidden states, or its logits slice */
        const size_t hidden = T * h, slice = (size_t)lim->max_seqs * vocab;
        if ((rc = sl_tensor_comm_open(m->dist, &m->backend, (hidden > slice ? hidden : slice) * f, &m->tensors, err)))
            return rc;
    }
    /* decode steps padded to a graph's size (forward.c) where the backend keeps graphs: one process only */
    const char *pad = getenv("SHARDLM_DEBUG_PAD_DECODE");
    const bool padded = !m->dist && (m->backend.iface->replay || (pad && strcmp(pad, "1") == 0));
    m->pad_block = padded ? lim->n_blocks : -1;
    for (int l = 0; l < sl_shard_plan_n_layers(&m->plan); l++) {
        sl_kv_cache *kv = &m->layers[l].kv;
        *kv = (sl_kv_cache){.dtype = lim->kv_dtype, .block_size = lim->block_size,
                            .n_kv_heads = sl_shard_plan_n_kv_heads(&m->plan), .head_dim = m->config.head_dim};
        const size_t per_layer = (size_t)lim->n_blocks * sl_kv_block_bytes(kv);
        const size_t pad_bytes = padded ? sl_kv_block_bytes(kv) : 0;
        rc = alloc_buf(m, per_layer + pad_bytes, &kv->k, err);
        if (!rc) rc = alloc_buf(m, per_layer + pad_bytes, &kv->v, err);
        if (rc) return sl_err_wrap(err, rc, "KV cache of %d blocks: ", lim->n_blocks);
        m->kv_bytes += 2 * per_layer;
        m->workspace_bytes += 2 * pad_bytes;
    }
    return SL_OK;
}

static int upload_inv_freq(sl_model *m, sl_err *err) {
    int half = m->config.head_dim / 2;
    float host[256];
    if (half > 256) return sl_err_set(err, SL_ENOTSUP, "head_dim %d is larger than 512", m->config.head_dim);
    sl_model_config_rope_inv_freq(&m->config, host);
    int rc = alloc_buf(m, (size_t)half * sizeof(float), (void **)&m->inv_freq, err);
    return rc ? rc : m->backend.iface->upload(m->backend.ctx, m->inv_freq, host, (size_t)half * sizeof(float), err);
}

int sl_model_open(sl_model *m, const char *model_dir, const sl_backend *backend, const sl_shard_plan *plan,
                  const sl_model_limits *limits, const sl_dist *dist, sl_err *err) {
    memset(m, 0, sizeof *m);
    m->backend = *backend;
    m->limits = *limits;
    m->dist = dist;
    int rc = sl_model_config_load(model_dir, &m->config, err);
    if (rc) return rc;
    if (limits->convert_weights) m->config.dtype = limits->weight_dtype;
    m->plan = *plan;
    if ((plan->tp_size > 1 || plan->pp_size > 1) &&
        (!dist || dist->tp_size != plan->tp_size || dist->pp_size != plan->pp_size))
        return sl_err_set(err, SL_EINTERNAL, "a %d x %d shard plan needs a job of the same layout", plan->tp_size, plan->pp_size);
    if (limits->max_tokens < 1 || limits->max_seqs < 1 || limits->block_size < 1 || limits->n_blocks < 1 ||
        limits->max_model_len < 1)
        return sl_err_set(err, SL_EINVAL, "model limits must be positive (tokens %d, seqs %d, block %d, blocks %d, len %d)",
                          limits->max_tokens, limits->max_seqs, limits->block_size, limits->n_blocks, limits->max_model_len);
    m->q_dim = sl_shard_plan_n_heads(plan) * m->config.head_dim;
    m->kv_dim = sl_shard_plan_n_kv_heads(plan) * m->config.head_dim;
    m->ffn = plan->ffn_end - plan->ffn_begin;
    if (!(rc = sl_safetensors_open(model_dir, &m->st, err)) && !(rc = load_weights(m, err)))
        m->act = backend->iface->activation_dtype(backend->ctx, matrix_dtype(m));
    if (rc || (rc = upload_inv_freq(m, err)) || (rc = alloc_run_state(m, err))) {
        sl_model_close(m);
        return rc;
    }
    m->n_unused_tensors = count_unused_tensors(m);
    SL_DEBUG("model %s: %.1f MB of weights, %.1f MB KV, %.1f MB workspace", model_dir, m->weight_bytes / 1e6,
             m->kv_bytes / 1e6, m->workspace_bytes / 1e6);
    return SL_OK;
}

void sl_model_close(sl_model *m) {
    const sl_backend_iface *b = m->backend.iface;
    if (!b) return;
    void *ctx = m->backend.ctx;
    if (m->layers) {
        for (int l = 0; l < sl_shard_plan_n_layers(&m->plan); l++) {
            sl_layer_weights *L = &m->layers[l];
            sl_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) b->weight_free(ctx, ws[i]);
            void *vs[] = {L->attn_norm, L->mlp_norm, L->bq, L->bk, L->bv, L->bo, L->b_gate, L->b_up, L->b_down,
                          L->kv.k, L->kv.v};
            for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) b->free(ctx, vs[i]);
        }
        free(m->layers);
    }
    b->weight_free(ctx, &m->embed);
    b->weight_free(ctx, &m->lm_head);
    free(m->host_gather);
    if (m->h_step) b->free_host(ctx, m->h_step);
    if (m->h_masks) b->free_host(ctx, m->h_masks);
    sl_tensor_comm_close(&m->tensors);
    void *bufs[] = {m->final_norm, m->inv_freq, m->x, m->xb, m->q, m->k, m->v, m->att, m->gate, m->up,
                    m->logits_in, m->logits, m->d_step, m->d_sampled, m->d_masks};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) b->free(ctx, bufs[i]);
    sl_safetensors_close(m->st); /* after the weights: a backend may point into the mapping */
    for (int i = 0; i < m->n_converted; i++) free(m->converted[i]);
    free(m->converted);
    memset(m, 0, sizeof *m);
}
