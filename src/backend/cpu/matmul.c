/* matmul.c -- out = x * W^T over bf16, f16 or f32 weights, float32 math.
 *
 * W is [rows][cols] as torch.nn.Linear stores it, so each output is a dot
 * product of two unit-stride vectors. The kernels use 16-lane vectors (GCC
 * vector extensions; the compiler maps them to AVX-512, AVX2 or SSE) and
 * fused multiply-adds. Every output is reduced the same way whichever tile
 * computes it (lane sums in a fixed order, then the tail), so a token's
 * logits do not depend on what else is in the batch: batched and
 * one-at-a-time results are bit-identical.
 *
 * bf16 is the common case and is read without a conversion pass: 32 weights
 * are loaded as 16 32-bit words; `word << 16` is the even weights as
 * floats, `word & 0xffff0000` the odd ones. The activations are rearranged
 * once per call to match (each 32-chunk as its 16 even then 16 odd values),
 * so a step is one load, a shift, an and and two FMAs per row.
 *
 * Tiles: 4 weight rows x 4 tokens (16 accumulators: each weight loaded once
 * for 4 tokens, each activation once for 4 rows) and rows one by one for
 * decode, which reads each weight once and is bound by memory bandwidth. Threads split the
 * row tiles of all the projections of one input in one parallel region. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/half.h"

#define TILE 4
#define LANES 16

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));

static inline vf load_f(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vf as_float(vu u) {
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- one step of a dot product: STEP_<dtype> elements of k ---- */

#define STEP_f32 16
#define STEP_bf16 32
#define STEP_f16 16

static inline vf step_f32(vf acc, const void *w, int64_t k, const float *x) {
    return acc + load_f((const float *)w + k) * load_f(x + k);
}

static inline vf step_bf16(vf acc, const void *w, int64_t k, const float *x) {
    vu u;
    memcpy(&u, (const uint16_t *)w + k, sizeof u);
    const vu hi = {0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u,
                   0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};
    acc += as_float(u << 16) * load_f(x + k);          /* even weights x even activations */
    return acc + as_float(u & hi) * load_f(x + k + 16); /* odd weights x odd activations */
}

static inline vf step_f16(vf acc, const void *w, int64_t k, const float *x) {
    float f[LANES];
    for (int i = 0; i < LANES; i++) f[i] = sl_f16_to_f32(((const uint16_t *)w)[k + i]);
    return acc + load_f(f) * load_f(x + k);
}

static inline float scalar_f32(const void *w, int64_t k) { return ((const float *)w)[k]; }
static inline float scalar_bf16(const void *w, int64_t k) { return sl_bf16_to_f32(((const uint16_t *)w)[k]); }
static inline float scalar_f16(const void *w, int64_t k) { return sl_f16_to_f32(((const uint16_t *)w)[k]); }

/* The fixed-order reduction every output goes through: lanes, then the tail. */
static inline float finish(vf acc, float tail) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += acc[i];
    return s + tail;
}

#define DEFINE_MATMUL(SUFFIX)                                                                          \
    /* 4 rows x 4 tokens: out[t][r] for t, r < 4 */                                                    \
    static void tile4x4_##SUFFIX(float *out, int64_t ldo, const float *x, const char *w, int64_t k_n,   \
                                 size_t row_bytes) {                                                   \
        const int64_t k_vec = k_n / STEP_##SUFFIX * STEP_##SUFFIX;                                     \
        vf acc[TILE][TILE];                                                                            \
        memset(acc, 0, sizeof acc);                                                                    \
        for (int64_t k = 0; k < k_vec; k += STEP_##SUFFIX)                                             \
            for (int t = 0; t < TILE; t++)                                                             \
                for (int r = 0; r < TILE; r++)                                                         \
                    acc[t][r] = step_##SUFFIX(acc[t][r], w + r * row_bytes, k, x + t * k_n);           \
        for (int t = 0; t < TILE; t++)                                                                 \
            for (int r = 0; r < TILE; r++) {                                                           \
                float tail = 0.0f;                                                                     \
                for (int64_t k = k_vec; k < k_n; k++) tail += scalar_##SUFFIX(w + r * row_bytes, k) * x[t * k_n + k]; \
                out[t * ldo + r] = finish(acc[t][r], tail);                                            \
            }                                                                                          \
    }                                                                                                  \
    /* n_rows (<= 4) rows x 1 token; inlined with n_rows = 4 so the accumulators stay in registers */ \
    static inline __attribute__((always_inline)) void tile_rows_##SUFFIX(                              \
        float *out, const float *x, const char *w, int64_t k_n, size_t row_bytes, int n_rows) {        \
        const int64_t k_vec = k_n / STEP_##SUFFIX * STEP_##SUFFIX;                                     \
        vf acc[TILE];                                                                                  \
        memset(acc, 0, sizeof acc);                                                                    \
        /* row after row, one memory stream per thread, prefetching 8 rows ahead: 13 -> 20 GB/s */    \
        for (int r = 0; r < n_rows; r++)                                                               \
            for (int64_t k = 0; k < k_vec; k += STEP_##SUFFIX) {                                       \
                __builtin_prefetch(w + (size_t)(r + 8) * row_bytes + (size_t)k * (row_bytes / (size_t)k_n), 0, 0); \
                acc[r] = step_##SUFFIX(acc[r], w + r * row_bytes, k, x);                               \
            }                                                                                          \
        for (int r = 0; r < n_rows; r++) {                                                             \
            float tail = 0.0f;                                                                         \
            for (int64_t k = k_vec; k < k_n; k++) tail += scalar_##SUFFIX(w + r * row_bytes, k) * x[k]; \
            out[r] = finish(acc[r], tail);                                                             \
        }                                                                                              \
    }                                                                                                  \
    /* rows [r0, r0 + 4) of one weight (fewer at the end), every token */                            \
    static void row_tile_##SUFFIX(float *out, const float *x, const void *w, size_t elem, int64_t rows,  \
                                  int64_t k_n, int n, int64_t r0) {                                   \
        const size_t row_bytes = (size_t)k_n * elem;                                                   \
        const int n_rows = rows - r0 < TILE ? (int)(rows - r0) : TILE;                                 \
        const char *wr = (const char *)w + (size_t)r0 * row_bytes;                                     \
        int t = 0;                                                                                     \
        if (n_rows == TILE) {                                                                          \
            for (; t + TILE <= n; t += TILE)                                                           \
                tile4x4_##SUFFIX(out + (int64_t)t * rows + r0, rows, x + (int64_t)t * k_n, wr, k_n, row_bytes); \
            for (; t < n; t++)                                                                         \
                tile_rows_##SUFFIX(out + (int64_t)t * rows + r0, x + (int64_t)t * k_n, wr, k_n, row_bytes, TILE); \
        }                                                                                              \
        for (; t < n; t++)                                                                             \
            tile_rows_##SUFFIX(out + (int64_t)t * rows + r0, x + (int64_t)t * k_n, wr, k_n, row_bytes, n_rows); \
    }

DEFINE_MATMUL(f32)
DEFINE_MATMUL(bf16)
DEFINE_MATMUL(f16)

static void row_tile(const sl_proj *p, const float *x, const float *x_bf16, int n, int64_t r0) {
    const sl_weight *w = p->w;
    switch (w->dtype) {
    case SL_DTYPE_F32: row_tile_f32(p->out, x, w->data, 4, w->rows, w->cols, n, r0); break;
    case SL_DTYPE_BF16: row_tile_bf16(p->out, x_bf16, w->data, 2, w->rows, w->cols, n, r0); break;
    case SL_DTYPE_F16: row_tile_f16(p->out, x, w->data, 2, w->rows, w->cols, n, r0); break;
    default: return;
    }
    if (!p->bias) return;
    const int64_t end = r0 + TILE < w->rows ? r0 + TILE : w->rows;
    for (int t = 0; t < n; t++)
        for (int64_t r = r0; r < end; r++) p->out[(int64_t)t * w->rows + r] += p->bias[r];
}

/* x with every full 32-chunk of each row as its even then its odd values
 * (step_bf16's order); the tail stays as it is. */
static void arrange_for_bf16(float *dst, const float *x, int n, int64_t k_n) {
    const int64_t k_vec = k_n / STEP_bf16 * STEP_bf16;
    for (int t = 0; t < n; t++) {
        const float *src = x + (int64_t)t * k_n;
        float *d = dst + (int64_t)t * k_n;
        for (int64_t k = 0; k < k_vec; k += STEP_bf16)
            for (int i = 0; i < 16; i++) {
                d[k + i] = src[k + 2 * i];
                d[k + 16 + i] = src[k + 2 * i + 1];
            }
        memcpy(d + k_vec, src + k_vec, sizeof(float) * (size_t)(k_n - k_vec));
    }
}

/* x rearranged for bf16 weights, in the caller's scratch (grown to the
 * largest input seen, then reused: nothing is allocated in steady state). */
static const float *arranged_input(const sl_proj *proj, int n_proj, const float *x, int n, cpu_scratch *scratch) {
    bool any_bf16 = false;
    for (int i = 0; i < n_proj; i++) any_bf16 |= proj[i].w->dtype == SL_DTYPE_BF16;
    if (!any_bf16) return x;
    size_t need = (size_t)n * (size_t)proj[0].w->cols;
    if (need > scratch->n_floats) {
        free(scratch->floats);
        scratch->floats = malloc(sizeof(float) * need);
        scratch->n_floats = scratch->floats ? need : 0;
        if (!scratch->floats) return NULL;
    }
    arrange_for_bf16(scratch->floats, x, n, proj[0].w->cols);
    return scratch->floats;
}

/* The row tiles of every projection form one pool of work for the threads:
 * one parallel region (one barrier) however many projections share x. */
void cpu_matmul(const sl_proj *proj, int n_proj, const float *x, int n, cpu_scratch *scratch) {
    int64_t first_tile[SL_MAX_PROJ + 1], n_tiles = 0;
    if (n_proj > SL_MAX_PROJ) n_proj = SL_MAX_PROJ;
    for (int i = 0; i < n_proj; i++) {
        first_tile[i] = n_tiles;
        n_tiles += (proj[i].w->rows + TILE - 1) / TILE;
    }
    first_tile[n_proj] = n_tiles;
    const float *x_bf16 = arranged_input(proj, n_proj, x, n, scratch);
    if (!x_bf16) return; /* out of memory: the caller's buffers stay as they were */
#pragma omp parallel for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; tile++) {
        int i = 0;
        while (tile >= first_tile[i + 1]) i++;
        row_tile(&proj[i], x, x_bf16, n, (tile - first_tile[i]) * TILE);
    }
}
