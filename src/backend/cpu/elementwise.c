/* elementwise.c -- the small per-token kernels: embedding lookup, RMSNorm,
 * rotary embedding, SwiGLU, residual add, row gather. Each is one
 * loop nest, vectorized inside and split over the pool's threads by tokens
 * (or elements) only when there is enough work: for a decode step one
 * thread finishes these before the others would have started. */
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec.h"

#define PARALLEL_MIN_ELEMS 32768 /* below this, one thread is faster than sharing the loop */

/* The smallest item count worth splitting, for items of `elems_per_item` floats. */
static int64_t min_items(int64_t elems_per_item) {
    return elems_per_item > 0 ? (PARALLEL_MIN_ELEMS + elems_per_item - 1) / elems_per_item : 1;
}

/* ---- embedding ---- */

typedef struct embed_args {
    float *out;
    const sl_weight *table;
    const int32_t *ids;
    int64_t row_offset;
} embed_args;

static void embed_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const embed_args *a = varg;
    const int64_t dim = a->table->cols;
    for (int64_t t = begin; t < end; t++) {
        float *o = a->out + t * dim;
        int64_t r = (int64_t)a->ids[t] - a->row_offset;
        if (r < 0 || r >= a->table->rows) {
            memset(o, 0, (size_t)dim * sizeof *o);
            continue;
        }
        for (int64_t k = 0; k < dim; k++) o[k] = cpu_weight_at(a->table, r, k);
    }
}

void cpu_embed(cpu_pool *pool, float *out, const sl_weight *table, const int32_t *ids, int n_tokens, int64_t row_offset) {
    embed_args a = {out, table, ids, row_offset};
    cpu_pool_for(pool, n_tokens, min_items(table->cols), embed_range, &a);
}

/* ---- RMSNorm ---- */

typedef struct rmsnorm_args {
    float *out;
    const float *x, *weight;
    int dim;
    float eps;
} rmsnorm_args;

static void rmsnorm_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const rmsnorm_args *a = varg;
    const int dim = a->dim;
    for (int64_t t = begin; t < end; t++) {
        const float *xt = a->x + t * dim;
        float *ot = a->out + t * dim;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < dim; i++) ss += xt[i] * xt[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + a->eps);
#pragma omp simd
        for (int i = 0; i < dim; i++) ot[i] = a->weight[i] * (xt[i] * inv);
    }
}

void cpu_rmsnorm(cpu_pool *pool, float *out, const float *x, const float *weight, int n_tokens, int dim, float eps) {
    rmsnorm_args a = {out, x, weight, dim, eps};
    cpu_pool_for(pool, n_tokens, min_items(dim), rmsnorm_range, &a);
}

/* ---- rotary embedding ---- */

typedef struct rope_args {
    float *x;
    const int32_t *pos;
    const float *inv_freq;
    int n_heads, head_dim;
} rope_args;

static void rope_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const rope_args *a = varg;
    const int half = a->head_dim / 2;
    for (int64_t t = begin; t < end; t++) {
        float c[256], s[256]; /* head_dim <= 512 */
        for (int i = 0; i < half; i++) {
            float angle = (float)a->pos[t] * a->inv_freq[i];
            c[i] = cosf(angle);
            s[i] = sinf(angle);
        }
        for (int h = 0; h < a->n_heads; h++) {
            float *v = a->x + (t * a->n_heads + h) * a->head_dim;
            for (int i = 0; i < half; i++) {
                float p = v[i], q = v[i + half];
                v[i] = p * c[i] - q * s[i];
                v[i + half] = q * c[i] + p * s[i];
            }
        }
    }
}

void cpu_rope(cpu_pool *pool, float *x, const int32_t *pos, const float *inv_freq, int n_tokens, int n_heads,
              int head_dim) {
    rope_args a = {x, pos, inv_freq, n_heads, head_dim};
    cpu_pool_for(pool, n_tokens, min_items((int64_t)n_heads * head_dim), rope_range, &a);
}

/* ---- the rest: memory moves and one-line loops ---- */

typedef struct binary_args {
    float *out;
    const float *a, *b;
} binary_args;

static inline vf silu_times(vf g, vf u) { return g / (1.0f + vexp(-g)) * u; }

/* Whole vectors, then the tail through the same vector code (an element's
 * value must not depend on where the range split the loop). */
static void swiglu_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const binary_args *a = varg;
    int64_t i = begin;
    for (; i + LANES <= end; i += LANES) store_f(a->out + i, silu_times(load_f(a->a + i), load_f(a->b + i)));
    if (i < end) {
        float g[LANES] = {0}, u[LANES] = {0}, o[LANES];
        memcpy(g, a->a + i, sizeof(float) * (size_t)(end - i));
        memcpy(u, a->b + i, sizeof(float) * (size_t)(end - i));
        store_f(o, silu_times(load_f(g), load_f(u)));
        memcpy(a->out + i, o, sizeof(float) * (size_t)(end - i));
    }
}

void cpu_swiglu(cpu_pool *pool, float *out, const float *gate, const float *up, int64_t n_elems) {
    binary_args a = {out, gate, up};
    cpu_pool_for(pool, n_elems, PARALLEL_MIN_ELEMS, swiglu_range, &a);
}

static void add_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const binary_args *a = varg;
#pragma omp simd
    for (int64_t i = begin; i < end; i++) a->out[i] += a->b[i];
}

void cpu_add(cpu_pool *pool, float *x, const float *y, int64_t n_elems) {
    binary_args a = {x, NULL, y};
    cpu_pool_for(pool, n_elems, PARALLEL_MIN_ELEMS, add_range, &a);
}

void cpu_gather_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim) {
    for (int i = 0; i < n_rows; i++)
        memcpy(out + (int64_t)i * dim, x + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
}
