/* attention.c -- causal attention of a step's queries over the paged KV cache.
 *
 * One (query token, head) pair per work item. Keys are visited in chunks of
 * ATTN_CHUNK with an online softmax (running max and sum, as flash attention
 * does), so no buffer grows with the context and nothing is allocated.
 * Token j of a sequence is read from its block table, which is how every
 * backend sees the cache: the engine owns which blocks a sequence holds. */
#include <float.h>
#include <math.h>

#include "backend/cpu/kernels.h"

#define ATTN_CHUNK 64
#define MAX_HEAD_DIM 512

/* The sequence that owns step token t: the last s with query_start[s] <= t. */
static int seq_of_token(const int32_t *query_start, int n_seqs, int t) {
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (query_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static inline const float *kv_row(const float *cache, const int32_t *table, int block_size, int j, int kv_dim) {
    int64_t slot = (int64_t)table[j / block_size] * block_size + j % block_size;
    return cache + slot * kv_dim;
}

static void attend_one(float *out, const float *q, const float *k_cache, const float *v_cache, const int32_t *table,
                       int block_size, int n_keys, int kv_dim, int kv_off, int head_dim, float scale) {
    float acc[MAX_HEAD_DIM];
    for (int d = 0; d < head_dim; d++) acc[d] = 0.0f;
    float running_max = -FLT_MAX, running_sum = 0.0f;
    for (int j0 = 0; j0 < n_keys; j0 += ATTN_CHUNK) {
        int n = n_keys - j0 < ATTN_CHUNK ? n_keys - j0 : ATTN_CHUNK;
        float scores[ATTN_CHUNK], chunk_max = -FLT_MAX;
        for (int j = 0; j < n; j++) {
            const float *k = kv_row(k_cache, table, block_size, j0 + j, kv_dim) + kv_off;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int d = 0; d < head_dim; d++) s += q[d] * k[d];
            scores[j] = s * scale;
            if (scores[j] > chunk_max) chunk_max = scores[j];
        }
        float new_max = chunk_max > running_max ? chunk_max : running_max;
        float rescale = expf(running_max - new_max);
        running_sum *= rescale;
        for (int d = 0; d < head_dim; d++) acc[d] *= rescale;
        for (int j = 0; j < n; j++) {
            float p = expf(scores[j] - new_max);
            running_sum += p;
            const float *v = kv_row(v_cache, table, block_size, j0 + j, kv_dim) + kv_off;
#pragma omp simd
            for (int d = 0; d < head_dim; d++) acc[d] += p * v[d];
        }
        running_max = new_max;
    }
    float inv = 1.0f / running_sum;
    for (int d = 0; d < head_dim; d++) out[d] = acc[d] * inv;
}

typedef struct attention_args {
    float *out;
    const float *q, *k_cache, *v_cache;
    const sl_attn_batch *b;
    const sl_attn_shape *sh;
} attention_args;

/* Items are (token, head) pairs, token-major. */
static void attention_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const attention_args *a = varg;
    const sl_attn_batch *b = a->b;
    const sl_attn_shape *sh = a->sh;
    const int group = sh->n_heads / sh->n_kv_heads;
    const int q_dim = sh->n_heads * sh->head_dim, kv_dim = sh->n_kv_heads * sh->head_dim;
    for (int64_t item = begin; item < end; item++) {
        int t = (int)(item / sh->n_heads), h = (int)(item % sh->n_heads);
        int s = seq_of_token(b->query_start, b->n_seqs, t);
        int n_query = b->query_start[s + 1] - b->query_start[s];
        int pos = b->context_len[s] - n_query + (t - b->query_start[s]);
        attend_one(a->out + (int64_t)t * q_dim + h * sh->head_dim, a->q + (int64_t)t * q_dim + h * sh->head_dim,
                   a->k_cache, a->v_cache, b->block_tables + (int64_t)s * b->max_blocks, b->block_size, pos + 1,
                   kv_dim, (h / group) * sh->head_dim, sh->head_dim, sh->scale);
    }
}

void cpu_attention(cpu_pool *pool, float *out, const float *q, const float *k_cache, const float *v_cache,
                   const sl_attn_batch *b, const sl_attn_shape *sh) {
    const int64_t n_items = (int64_t)b->query_start[b->n_seqs] * sh->n_heads;
    /* an item reads up to max_context_len keys: split when the step has a few hundred thousand flops */
    const int64_t item_work = (int64_t)b->max_context_len * sh->head_dim, min_work = 1 << 15;
    attention_args a = {out, q, k_cache, v_cache, b, sh};
    cpu_pool_for_dynamic(pool, n_items, 2, (min_work + item_work - 1) / item_work, attention_range, &a);
}
