/* attention.c -- causal attention of a step's queries over the paged KV cache.
 *
 * A work item is one query token and one KV head with all the query heads
 * that share it (grouped-query attention): each key and value row is read
 * once for the whole group, not once per query head. At 64 sequences a
 * decode step reads more KV cache than weights, so this is the difference
 * between streaming the cache once and three times.
 *
 * Keys are visited in chunks of ATTN_CHUNK with an online softmax (running
 * max and sum, as flash attention does), so no buffer grows with the context
 * and nothing is allocated. Token j of a sequence is read from its block
 * table, which is how every backend sees the cache: the engine owns which
 * blocks a sequence holds. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"

#define ATTN_CHUNK 64
#define MAX_HEAD_DIM 512
#define PREFETCH_ROWS 6 /* keys ahead */
#define MAX_GROUP 8 /* query heads computed together; larger groups go in several passes */

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

/* One query token, `g` query heads over one KV head. */
typedef struct attn_group {
    float *out;               /* g rows of head_dim, head_dim apart */
    const float *q;           /* likewise */
    int g;
    const float *k_cache, *v_cache;
    const int32_t *table;
    int block_size, n_keys, kv_dim, kv_off, head_dim;
    float scale;
} attn_group;

/* Offsets (in floats) of keys [j0, j0 + n) of the sequence in the cache. */
static void row_offsets(const attn_group *a, int j0, int n, int64_t *off) {
    int block = j0 / a->block_size, within = j0 % a->block_size;
    for (int j = 0; j < n; j++) {
        off[j] = ((int64_t)a->table[block] * a->block_size + within) * a->kv_dim + a->kv_off;
        if (++within == a->block_size) within = 0, block++;
    }
}

typedef float vf __attribute__((vector_size(16 * sizeof(float))));

static inline vf load_v(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Sum of the 16 lanes as a tree (4 shuffles and adds, not 15 dependent adds). */
static inline float lane_sum(vf v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}

/* q . k over head_dim floats: 16 lanes at a time, then the tail. */
static inline float dot(const float *q, const float *k, int head_dim) {
    const int vec = head_dim / 16 * 16;
    vf acc = {0};
    for (int d = 0; d < vec; d += 16) acc += load_v(q + d) * load_v(k + d);
    float s = lane_sum(acc);
    for (int d = vec; d < head_dim; d++) s += q[d] * k[d];
    return s;
}

/* acc[0..head_dim) += sum over the chunk's keys j of p[j] * v_j, 64 features
 * at a time held in registers across the keys. */
static void accumulate_values(float *acc, const float *p, const float *v_cache, const int64_t *off, int n,
                              int head_dim) {
    int d0 = 0;
    for (; d0 + 64 <= head_dim; d0 += 64) {
        vf a0 = load_v(acc + d0), a1 = load_v(acc + d0 + 16), a2 = load_v(acc + d0 + 32), a3 = load_v(acc + d0 + 48);
        for (int j = 0; j < n; j++) {
            const float *v = v_cache + off[j] + d0;
            a0 += p[j] * load_v(v), a1 += p[j] * load_v(v + 16), a2 += p[j] * load_v(v + 32), a3 += p[j] * load_v(v + 48);
        }
        memcpy(acc + d0, &a0, sizeof a0), memcpy(acc + d0 + 16, &a1, sizeof a1);
        memcpy(acc + d0 + 32, &a2, sizeof a2), memcpy(acc + d0 + 48, &a3, sizeof a3);
    }
    for (int j = 0; j < n; j++) {
        const float *v = v_cache + off[j];
        for (int d = d0; d < head_dim; d++) acc[d] += p[j] * v[d];
    }
}

/* Rows of a block are kv_dim apart, blocks anywhere: ask for a row's cache lines ahead of use. */
static inline void prefetch_row(const float *row, int head_dim) {
    for (int d = 0; d < head_dim; d += 16) __builtin_prefetch(row + d, 0, 1);
}

static void attend_group(const attn_group *a) {
    const int hd = a->head_dim, g = a->g;
    float acc[MAX_GROUP][MAX_HEAD_DIM];
    float running_max[MAX_GROUP], running_sum[MAX_GROUP];
    for (int h = 0; h < g; h++) {
        running_max[h] = -FLT_MAX, running_sum[h] = 0.0f;
        for (int d = 0; d < hd; d++) acc[h][d] = 0.0f;
    }
    for (int j0 = 0; j0 < a->n_keys; j0 += ATTN_CHUNK) {
        const int n = a->n_keys - j0 < ATTN_CHUNK ? a->n_keys - j0 : ATTN_CHUNK;
        int64_t off[ATTN_CHUNK];
        float scores[MAX_GROUP][ATTN_CHUNK];
        row_offsets(a, j0, n, off);
        for (int j = 0; j < n; j++) {
            const float *k = a->k_cache + off[j];
            if (j + PREFETCH_ROWS < n) prefetch_row(a->k_cache + off[j + PREFETCH_ROWS], hd);
            prefetch_row(a->v_cache + off[j], hd); /* used after the chunk's scores */
            for (int h = 0; h < g; h++) scores[h][j] = dot(a->q + h * hd, k, hd) * a->scale;
        }
        for (int h = 0; h < g; h++) {
            float chunk_max = -FLT_MAX;
            for (int j = 0; j < n; j++) chunk_max = scores[h][j] > chunk_max ? scores[h][j] : chunk_max;
            const float new_max = chunk_max > running_max[h] ? chunk_max : running_max[h];
            const float rescale = expf(running_max[h] - new_max);
            running_sum[h] *= rescale;
            for (int d = 0; d < hd; d++) acc[h][d] *= rescale;
            for (int j = 0; j < n; j++) {
                scores[h][j] = expf(scores[h][j] - new_max);
                running_sum[h] += scores[h][j];
            }
            running_max[h] = new_max;
        }
        for (int h = 0; h < g; h++) accumulate_values(acc[h], scores[h], a->v_cache, off, n, hd);
    }
    for (int h = 0; h < g; h++) {
        const float inv = 1.0f / running_sum[h];
        for (int d = 0; d < hd; d++) a->out[h * hd + d] = acc[h][d] * inv;
    }
}

typedef struct attention_args {
    float *out;
    const float *q, *k_cache, *v_cache;
    const sl_attn_batch *b;
    const sl_attn_shape *sh;
    int passes;               /* per KV head: ceil(group / MAX_GROUP) */
} attention_args;

/* Items are (token, KV head, pass), token-major. */
static void attention_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const attention_args *a = varg;
    const sl_attn_batch *b = a->b;
    const sl_attn_shape *sh = a->sh;
    const int group = sh->n_heads / sh->n_kv_heads, per_token = sh->n_kv_heads * a->passes;
    const int q_dim = sh->n_heads * sh->head_dim, kv_dim = sh->n_kv_heads * sh->head_dim;
    for (int64_t item = begin; item < end; item++) {
        const int t = (int)(item / per_token), kvh = (int)(item % per_token) / a->passes;
        const int pass = (int)(item % a->passes), h0 = kvh * group + pass * MAX_GROUP;
        const int s = seq_of_token(b->query_start, b->n_seqs, t);
        const int n_query = b->query_start[s + 1] - b->query_start[s];
        const int pos = b->context_len[s] - n_query + (t - b->query_start[s]);
        const int64_t row = (int64_t)t * q_dim + (int64_t)h0 * sh->head_dim;
        attn_group g = {
            .out = a->out + row,
            .q = a->q + row,
            .g = group - pass * MAX_GROUP < MAX_GROUP ? group - pass * MAX_GROUP : MAX_GROUP,
            .k_cache = a->k_cache,
            .v_cache = a->v_cache,
            .table = b->block_tables + (int64_t)s * b->max_blocks,
            .block_size = b->block_size,
            .n_keys = pos + 1,
            .kv_dim = kv_dim,
            .kv_off = kvh * sh->head_dim,
            .head_dim = sh->head_dim,
            .scale = sh->scale,
        };
        attend_group(&g);
    }
}

void cpu_attention(cpu_pool *pool, float *out, const float *q, const float *k_cache, const float *v_cache,
                   const sl_attn_batch *b, const sl_attn_shape *sh) {
    const int group = sh->n_heads / sh->n_kv_heads, passes = (group + MAX_GROUP - 1) / MAX_GROUP;
    const int64_t n_items = (int64_t)b->query_start[b->n_seqs] * sh->n_kv_heads * passes;
    /* an item reads up to max_context_len keys: split when the step has a few hundred thousand flops */
    const int64_t item_work = (int64_t)b->max_context_len * sh->head_dim * group, min_work = 1 << 15;
    attention_args a = {out, q, k_cache, v_cache, b, sh, passes};
    cpu_pool_for_dynamic(pool, n_items, 1, (min_work + item_work - 1) / item_work, attention_range, &a);
}
