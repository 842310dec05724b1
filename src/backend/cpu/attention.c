/* attention.c -- the CPU backend's KV cache: its layout, kv_store, and
 * causal attention of a step's queries over it.
 *
 * Inside a block, for each KV head, keys are stored transposed and values
 * as rows:
 *     K: [head][head_dim][block_size]   feature d of the block's tokens side by side
 *     V: [head][block_size][head_dim]   one row per token
 * so 16 keys are scored against a query by head_dim FMAs of 16 lanes (q[d]
 * broadcast times feature d of the 16 keys), with no horizontal sums, and
 * one head's share of a block is one contiguous run for the prefetcher.
 * Elements are float32, float16 or bfloat16 (--kv-cache-dtype), widened to
 * float32 as loaded: at 64 sequences a decode step reads more KV cache than
 * weights, and 16-bit elements halve it.
 *
 * A work item is a tile of up to MAX_ROWS query rows sharing one KV head:
 * the query heads of its group for consecutive tokens of one sequence (one
 * token in decode, several of a prompt in prefill). Each key and value
 * vector is loaded and widened once for all the tile's rows. Keys go by
 * chunks of CHUNK with an online softmax (running max and sum, as flash
 * attention does); nothing is allocated.
 *
 * A row's arithmetic does not depend on its tile: chunks start at fixed key
 * positions, and keys past a row's position score -inf and weigh exactly 0,
 * so a token's output is the same decoded alone, batched, or prefilled
 * beside other tokens (the engine's batched = one-at-a-time guarantee). */
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec.h"
#include "util/half.h"

#define CHUNK 64           /* keys per online-softmax step */
#define MAX_ROWS 16        /* query rows per tile: accumulators kept in registers */
_Static_assert(MAX_ROWS <= LANES, "softmax_chunk keeps one lane per row");
#define MAX_HEAD_DIM 512

/* ---- the layout ---- */

/* Element index of feature d of the key in slot i of block `block`, head h. */
static inline int64_t k_index(const sl_kv_cache *kv, int64_t block, int h, int d, int i) {
    return ((block * kv->n_kv_heads + h) * kv->head_dim + d) * kv->block_size + i;
}

/* Element index of the value row in slot i of block `block`, head h. */
static inline int64_t v_index(const sl_kv_cache *kv, int64_t block, int h, int i) {
    return ((block * kv->n_kv_heads + h) * kv->block_size + i) * kv->head_dim;
}

static inline void store_as(sl_dtype dtype, void *base, int64_t i, float x) {
    if (dtype == SL_DTYPE_F16) ((uint16_t *)base)[i] = sl_f32_to_f16(x);
    else if (dtype == SL_DTYPE_BF16) ((uint16_t *)base)[i] = sl_f32_to_bf16(x);
    else ((float *)base)[i] = x;
}

typedef struct kv_store_args {
    const sl_kv_cache *kv;
    const float *k, *v;
    const int32_t *slots;
} kv_store_args;

static void kv_store_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const kv_store_args *a = varg;
    const sl_kv_cache *kv = a->kv;
    const int hd = kv->head_dim, kv_dim = kv->n_kv_heads * hd;
    for (int64_t t = begin; t < end; t++) {
        const int64_t block = a->slots[t] / kv->block_size;
        const int i = a->slots[t] % kv->block_size;
        const float *k = a->k + t * kv_dim, *v = a->v + t * kv_dim;
        for (int h = 0; h < kv->n_kv_heads; h++)
            for (int d = 0; d < hd; d++) {
                store_as(kv->dtype, kv->k, k_index(kv, block, h, d, i), k[h * hd + d]);
                store_as(kv->dtype, kv->v, v_index(kv, block, h, i) + d, v[h * hd + d]);
            }
    }
}

void cpu_kv_store(cpu_pool *pool, const sl_kv_cache *kv, const float *k, const float *v, const int32_t *slots,
                  int n_tokens) {
    kv_store_args a = {kv, k, v, slots};
    cpu_pool_for(pool, n_tokens, 16, kv_store_range, &a);
}

/* ---- one tile ---- */

/* Query rows sharing one KV head of one sequence. */
typedef struct tile {
    const sl_kv_cache *kv;
    const int32_t *table;        /* the sequence's block table */
    const float *q[MAX_ROWS];    /* row r's query */
    float *out[MAX_ROWS];
    int pos[MAX_ROWS];           /* row r attends to keys [0, pos[r]] */
    int n_rows, kv_head, max_pos;
    float scale;
} tile;

typedef float score_rows[MAX_ROWS][CHUNK + LANES]; /* a chunk's scores, then weights; room for a last full vector */
typedef float query_cols[MAX_HEAD_DIM][MAX_ROWS];  /* the tile's queries transposed: q[r][d] at [d][r] */

/* How many independent pieces (of keys, or of value features) a tile of R
 * rows works on at once. Each row's sum over d (or over keys) is one FMA
 * chain; a decode tile has 3 rows, and 3 chains leave the FMA units waiting
 * on their latency, so several pieces go side by side: P * R chains. */
static inline int pieces_for(int R) { return R <= 4 ? 4 : R <= 8 ? 2 : 1; }

/* Scores of P pieces of 16 keys (piece p: feature rows from kt[p], block_size
 * apart) into columns [j + 16 p, j + 16 p + 16) of s; `width` < 16 (P = 1
 * then) when the block ends first: the other lanes are junk that the next
 * piece or the mask replaces. The queries come from one transposed array, so
 * each broadcast is an FMA operand at a fixed offset shared by the pieces. */
static inline __attribute__((always_inline)) void score_pieces(sl_dtype dt, const int R, const int P, const tile *a,
                                                               const query_cols qt, const void *const *kt, int width,
                                                               score_rows s, int j) {
    const int hd = a->kv->head_dim, bs = a->kv->block_size;
    vf acc[4][MAX_ROWS];
    for (int p = 0; p < P; p++)
        for (int r = 0; r < R; r++) acc[p][r] = splat(0.0f);
    for (int d = 0; d < hd; d++) {
        vf k[4];
        for (int p = 0; p < P; p++)
            k[p] = width == LANES ? load_as_f(dt, kt[p], (int64_t)d * bs) : load_part_as_f(dt, kt[p], (int64_t)d * bs, width);
        for (int r = 0; r < R; r++)
            for (int p = 0; p < P; p++) acc[p][r] += qt[d][r] * k[p];
    }
    for (int p = 0; p < P; p++)
        for (int r = 0; r < R; r++) store_f(s[r] + j + p * LANES, acc[p][r] * a->scale);
}

/* Value features [d0, d0 + 16 P) of acc[r] = acc[r] * rescale[r] + sum over
 * the chunk's n keys of w[r][j] * v_j; `width` < 16 (P = 1) for a last part. */
static inline __attribute__((always_inline)) void add_value_part(sl_dtype dt, const int R, const int P, const tile *a,
                                                                 float (*acc)[MAX_HEAD_DIM + LANES],
                                                                 const float *rescale, score_rows w,
                                                                 const int64_t *v_at, int n, int d0, int width) {
    vf sum[4][MAX_ROWS];
    for (int r = 0; r < R; r++)
        for (int p = 0; p < P; p++) sum[p][r] = load_f(acc[r] + d0 + p * LANES) * rescale[r];
    for (int j = 0; j < n; j++) {
        vf v[4];
        for (int p = 0; p < P; p++)
            v[p] = width == LANES ? load_as_f(dt, a->kv->v, v_at[j] + d0 + p * LANES)
                                  : load_part_as_f(dt, a->kv->v, v_at[j] + d0, width);
        for (int r = 0; r < R; r++)
            for (int p = 0; p < P; p++) sum[p][r] += w[r][j] * v[p];
    }
    for (int r = 0; r < R; r++)
        for (int p = 0; p < P; p++) store_f(acc[r] + d0 + p * LANES, sum[p][r]);
}

/* The scores of one chunk's pieces, in order of key, P full pieces at a time. */
static inline __attribute__((always_inline)) void score_chunk(sl_dtype dt, const int R, const tile *a,
                                                              const query_cols qt, const void *const *kt,
                                                              const int *width, const int *col, int n_pieces,
                                                              score_rows s) {
    const int P = pieces_for(R);
    int i = 0;
    while (i < n_pieces) {
        int run = 0;
        while (run < P && i + run < n_pieces && width[i + run] == LANES) run++;
        if (run == P) score_pieces(dt, R, P, a, qt, kt + i, LANES, s, col[i]);
        else score_pieces(dt, R, 1, a, qt, kt + i, width[i], s, col[i]), run = 1;
        i += run;
    }
}

static inline __attribute__((always_inline)) void add_values(sl_dtype dt, const int R, const tile *a,
                                                             float (*acc)[MAX_HEAD_DIM + LANES],
                                                             const float *rescale, score_rows w,
                                                             const int64_t *v_at, int n) {
    const int hd = a->kv->head_dim, P = pieces_for(R);
    int d0 = 0;
    for (; d0 + P * LANES <= hd; d0 += P * LANES) add_value_part(dt, R, P, a, acc, rescale, w, v_at, n, d0, LANES);
    for (; d0 < hd; d0 += LANES)
        add_value_part(dt, R, 1, a, acc, rescale, w, v_at, n, d0, hd - d0 < LANES ? hd - d0 : LANES);
}

/* Scores of keys [j0, j0 + n) to weights e^(s - max), updating each row's
 * running max and sum; rescale[r] is what the row's earlier sums are worth
 * now. The rows go side by side (their max and sum chains are independent),
 * each row's arithmetic as if alone. */
static inline __attribute__((always_inline)) void softmax_chunk(const int R, const tile *a, score_rows s, int j0,
                                                                int n, float *run_max, float *run_sum,
                                                                float *rescale) {
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const int n_vec = (n + LANES - 1) / LANES;
    vf chunk_max[MAX_ROWS], sum[MAX_ROWS];
    for (int r = 0; r < R; r++) chunk_max[r] = splat(-INFINITY), sum[r] = splat(0.0f);
    for (int g = 0; g < n_vec; g++) {
        const vi key = lane + (j0 + g * LANES);
        for (int r = 0; r < R; r++) {
            const vf x = select_f(key <= a->pos[r], load_f(s[r] + g * LANES), splat(-INFINITY));
            store_f(s[r] + g * LANES, x);
            chunk_max[r] = vmax(chunk_max[r], x);
        }
    }
    float new_max[MAX_ROWS], drop[LANES] = {0};
    for (int r = 0; r < R; r++) {
        const float m = lane_max(chunk_max[r]);
        new_max[r] = m > run_max[r] ? m : run_max[r];
        drop[r] = run_max[r] - new_max[r];
    }
    store_f(rescale, vexp(load_f(drop))); /* lane r: e^(old max - new max) of row r */
    for (int g = 0; g < n_vec; g++)
        for (int r = 0; r < R; r++) {
            const vf w = vexp(load_f(s[r] + g * LANES) - new_max[r]);
            store_f(s[r] + g * LANES, w);
            sum[r] += w;
        }
    for (int r = 0; r < R; r++) {
        run_sum[r] = run_sum[r] * rescale[r] + lane_sum(sum[r]);
        run_max[r] = new_max[r];
    }
}

/* Asks for head h's share of a block (keys from slot i on, their values) ahead of use. */
static void prefetch_piece(const sl_kv_cache *kv, int h, int64_t block, int i, int width) {
    const size_t elem = sl_dtype_n_bytes(kv->dtype);
    const char *k = (const char *)kv->k + (size_t)k_index(kv, block, h, 0, i) * elem;
    const char *v = (const char *)kv->v + (size_t)v_index(kv, block, h, i) * elem;
    const size_t k_stride = (size_t)kv->block_size * elem, v_bytes = (size_t)width * kv->head_dim * elem;
    for (int d = 0; d < kv->head_dim; d += k_stride >= 64 ? 1 : (int)(64 / k_stride))
        __builtin_prefetch(k + d * k_stride, 0, 1);
    for (size_t b = 0; b < v_bytes; b += 64) __builtin_prefetch(v + b, 0, 1);
}

/* One tile of R rows, its element type and row count constants. */
static inline __attribute__((always_inline)) void attend_tile_as(sl_dtype dt, const int R, const tile *a) {
    const sl_kv_cache *kv = a->kv;
    const int hd = kv->head_dim, bs = kv->block_size;
    const size_t elem = sl_dtype_n_bytes(dt);
    float acc[MAX_ROWS][MAX_HEAD_DIM + LANES];
    query_cols qt;
    score_rows s;
    float run_max[MAX_ROWS], run_sum[MAX_ROWS], rescale[LANES];
    int64_t v_at[CHUNK];
    const void *kt[CHUNK]; /* the chunk's pieces of keys */
    int width[CHUNK], col[CHUNK]; /* each piece's keys, and its first column of s */
    for (int r = 0; r < R; r++) {
        run_max[r] = -INFINITY, run_sum[r] = 0.0f;
        memset(acc[r], 0, sizeof(float) * (size_t)((hd + LANES - 1) / LANES * LANES));
        for (int d = 0; d < hd; d++) qt[d][r] = a->q[r][d];
    }
    for (int j0 = 0; j0 <= a->max_pos; j0 += CHUNK) {
        const int n = a->max_pos + 1 - j0 < CHUNK ? a->max_pos + 1 - j0 : CHUNK;
        int n_pieces = 0;
        for (int j = 0; j < n; n_pieces++) {
            const int64_t block = a->table[(j0 + j) / bs];
            const int i = (j0 + j) % bs;
            width[n_pieces] = bs - i < LANES ? bs - i : LANES;
            col[n_pieces] = j;
            const int next = j0 + j + CHUNK; /* the same piece of the next chunk */
            if (next <= a->max_pos) prefetch_piece(kv, a->kv_head, a->table[next / bs], next % bs, width[n_pieces]);
            kt[n_pieces] = (const char *)kv->k + (size_t)k_index(kv, block, a->kv_head, 0, i) * elem;
            for (int u = 0; u < width[n_pieces] && j < n; u++, j++) v_at[j] = v_index(kv, block, a->kv_head, i + u);
        }
        score_chunk(dt, R, a, qt, kt, width, col, n_pieces, s);
        softmax_chunk(R, a, s, j0, n, run_max, run_sum, rescale);
        add_values(dt, R, a, acc, rescale, s, v_at, n);
    }
    for (int r = 0; r < R; r++) {
        const float inv = 1.0f / run_sum[r];
        for (int d = 0; d < hd; d++) a->out[r][d] = acc[r][d] * inv;
    }
}

/* The first chunk of a tile that comes next, while this one computes. */
static void prefetch_first_chunk(const sl_kv_cache *kv, int h, const int32_t *table, int n_keys) {
    const int bs = kv->block_size, n = n_keys < CHUNK ? n_keys : CHUNK;
    for (int j = 0; j < n; j += bs < LANES ? bs : LANES)
        prefetch_piece(kv, h, table[j / bs], j % bs, bs - j % bs < LANES ? bs - j % bs : LANES);
}

#define ROW_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)

/* Dispatch on the row count, for one element type. */
static inline __attribute__((always_inline)) void attend_tile_rows(sl_dtype dt, const tile *a) {
    switch (a->n_rows) {
#define CASE(R) case R: attend_tile_as(dt, R, a); break;
        ROW_CASES(CASE)
#undef CASE
    default: break;
    }
}

static void attend_tile(const tile *a) {
    switch (a->kv->dtype) {
    case SL_DTYPE_F16: attend_tile_rows(SL_DTYPE_F16, a); break;
    case SL_DTYPE_BF16: attend_tile_rows(SL_DTYPE_BF16, a); break;
    default: attend_tile_rows(SL_DTYPE_F32, a); break;
    }
}

/* ---- the step ---- */

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

typedef struct attention_args {
    float *out;
    const float *q;
    const sl_kv_cache *kv;
    const sl_attn_batch *b;
    int n_heads, heads_per_pass, passes, tile_tokens;
    float scale;
} attention_args;

/* Items are (step tokens [i * tile_tokens, ...), KV head, pass of heads); the
 * tokens of an item that belong to different sequences are separate tiles. */
static void attention_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const attention_args *a = varg;
    const sl_attn_batch *b = a->b;
    const int n_kv = a->kv->n_kv_heads, hd = a->kv->head_dim, group = a->n_heads / n_kv;
    const int q_dim = a->n_heads * hd, n_tokens = b->query_start[b->n_seqs];
    for (int64_t item = begin; item < end; item++) {
        const int pass = (int)(item % a->passes), kvh = (int)(item / a->passes % n_kv);
        const int first = (int)(item / a->passes / n_kv) * a->tile_tokens;
        const int last = first + a->tile_tokens < n_tokens ? first + a->tile_tokens : n_tokens;
        const int h0 = kvh * group + pass * a->heads_per_pass;
        const int heads = group - pass * a->heads_per_pass < a->heads_per_pass ? group - pass * a->heads_per_pass
                                                                                : a->heads_per_pass;
        for (int t = first; t < last;) {
            const int s = seq_of_token(b->query_start, b->n_seqs, t);
            const int stop = b->query_start[s + 1] < last ? b->query_start[s + 1] : last;
            if (stop < last) { /* the next sequence of this item */
                const int s1 = s + 1;
                prefetch_first_chunk(a->kv, kvh, b->block_tables + (int64_t)s1 * b->max_blocks, b->context_len[s1]);
            }
            const int pos0 = b->context_len[s] - (b->query_start[s + 1] - b->query_start[s]) + (t - b->query_start[s]);
            tile tl = {.kv = a->kv, .table = b->block_tables + (int64_t)s * b->max_blocks, .n_rows = 0,
                       .kv_head = kvh, .max_pos = pos0 + (stop - t) - 1, .scale = a->scale};
            for (int u = t; u < stop; u++)
                for (int h = h0; h < h0 + heads; h++, tl.n_rows++) {
                    tl.q[tl.n_rows] = a->q + (int64_t)u * q_dim + (int64_t)h * hd;
                    tl.out[tl.n_rows] = a->out + (int64_t)u * q_dim + (int64_t)h * hd;
                    tl.pos[tl.n_rows] = pos0 + (u - t);
                }
            attend_tile(&tl);
            t = stop;
        }
    }
}

void cpu_attention(cpu_pool *pool, float *out, const float *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                   int n_heads, float scale) {
    const int group = n_heads / kv->n_kv_heads, passes = (group + MAX_ROWS - 1) / MAX_ROWS;
    const int heads_per_pass = (group + passes - 1) / passes;
    attention_args a = {out, q, kv, b, n_heads, heads_per_pass, passes, MAX_ROWS / heads_per_pass, scale};
    const int n_tokens = b->query_start[b->n_seqs];
    const int64_t n_items = (int64_t)(n_tokens + a.tile_tokens - 1) / a.tile_tokens * kv->n_kv_heads * passes;
    /* an item reads up to max_context_len keys: split when the step has a few hundred thousand flops */
    const int64_t item_work = (int64_t)b->max_context_len * kv->head_dim * MAX_ROWS, min_work = 1 << 15;
    cpu_pool_for_dynamic(pool, n_items, 1, (min_work + item_work - 1) / item_work, attention_range, &a);
}
