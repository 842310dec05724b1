/* matmul.c -- out = x * W^T over bf16, f16 or f32 weights, float32 math.
 *
 * W is [rows][cols] as torch.nn.Linear stores it, so each output is a dot
 * product of two unit-stride vectors. The kernels hold 16-lane vectors (GCC
 * vector extensions; the compiler maps them to AVX-512, AVX2 or SSE): a lane
 * sums every 16th product, then the lanes are added in a fixed order. Each
 * (row, token) output is therefore computed the same way whichever tile it
 * lands in, so a token's logits do not depend on what else is in the batch
 * (batched and one-at-a-time results are bit-identical).
 *
 * Tiles: 4 weight rows x 4 tokens (16 accumulators; each weight vector is
 * converted once and used 4 times, each activation vector loaded once for 4
 * rows), 4 x 1 for the decode case, which reads each weight once and is
 * bound by memory bandwidth. Threads split the rows. */
#include <stdint.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/half.h"

#define TILE 4
#define LANES 16

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint16_t vh __attribute__((vector_size(LANES * sizeof(uint16_t))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));

static inline vf load_x(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* 16 weights starting at element k, as floats. */
static inline vf load_w_f32(const void *w, int64_t k) { return load_x((const float *)w + k); }
static inline vf load_w_bf16(const void *w, int64_t k) {
    vh h;
    memcpy(&h, (const uint16_t *)w + k, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline vf load_w_f16(const void *w, int64_t k) {
    float f[LANES];
    for (int i = 0; i < LANES; i++) f[i] = sl_f16_to_f32(((const uint16_t *)w)[k + i]);
    return load_x(f);
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
    static void tile4x4_##SUFFIX(float *out, int64_t ldo, const float *x, const char *w, int64_t k_n,   \
                                 size_t row_bytes) {                                                   \
        const int64_t k_vec = k_n / LANES * LANES;                                                     \
        vf acc[TILE][TILE];                                                                            \
        memset(acc, 0, sizeof acc);                                                                    \
        for (int64_t k = 0; k < k_vec; k += LANES) {                                                   \
            vf a[TILE];                                                                                \
            for (int r = 0; r < TILE; r++) a[r] = load_w_##SUFFIX(w + r * row_bytes, k);               \
            for (int t = 0; t < TILE; t++) {                                                           \
                vf b = load_x(x + t * k_n + k);                                                        \
                for (int r = 0; r < TILE; r++) acc[t][r] += a[r] * b;                                  \
            }                                                                                          \
        }                                                                                              \
        for (int t = 0; t < TILE; t++)                                                                 \
            for (int r = 0; r < TILE; r++) {                                                           \
                float tail = 0.0f;                                                                     \
                for (int64_t k = k_vec; k < k_n; k++) tail += scalar_##SUFFIX(w + r * row_bytes, k) * x[t * k_n + k]; \
                out[t * ldo + r] = finish(acc[t][r], tail);                                            \
            }                                                                                          \
    }                                                                                                  \
    /* n_rows (<= 4) rows x 1 token */                                                                 \
    static void tile_rows_##SUFFIX(float *out, const float *x, const char *w, int64_t k_n, size_t row_bytes, \
                                   int n_rows) {                                                       \
        const int64_t k_vec = k_n / LANES * LANES;                                                     \
        vf acc[TILE];                                                                                  \
        memset(acc, 0, sizeof acc);                                                                    \
        for (int64_t k = 0; k < k_vec; k += LANES) {                                                   \
            vf b = load_x(x + k);                                                                      \
            for (int r = 0; r < n_rows; r++) acc[r] += load_w_##SUFFIX(w + r * row_bytes, k) * b;      \
        }                                                                                              \
        for (int r = 0; r < n_rows; r++) {                                                             \
            float tail = 0.0f;                                                                         \
            for (int64_t k = k_vec; k < k_n; k++) tail += scalar_##SUFFIX(w + r * row_bytes, k) * x[k]; \
            out[r] = finish(acc[r], tail);                                                             \
        }                                                                                              \
    }                                                                                                  \
    /* rows [r0, r0 + n_rows) of one weight, every token */                                        \
    static void row_tile_##SUFFIX(float *out, const float *x, const void *w, size_t elem, int64_t rows,  \
                                  int64_t k_n, int n, int64_t r0) {                                   \
        const size_t row_bytes = (size_t)k_n * elem;                                                   \
        const int n_rows = rows - r0 < TILE ? (int)(rows - r0) : TILE;                                 \
        const char *wr = (const char *)w + (size_t)r0 * row_bytes;                                     \
        int t = 0;                                                                                     \
        if (n_rows == TILE)                                                                            \
            for (; t + TILE <= n; t += TILE)                                                           \
                tile4x4_##SUFFIX(out + (int64_t)t * rows + r0, rows, x + (int64_t)t * k_n, wr, k_n, row_bytes); \
        for (; t < n; t++)                                                                             \
            tile_rows_##SUFFIX(out + (int64_t)t * rows + r0, x + (int64_t)t * k_n, wr, k_n, row_bytes, n_rows); \
    }

DEFINE_MATMUL(f32)
DEFINE_MATMUL(bf16)
DEFINE_MATMUL(f16)

static void row_tile(const sl_proj *p, const float *x, int n, int64_t r0) {
    const sl_weight *w = p->w;
    switch (w->dtype) {
    case SL_DTYPE_F32: row_tile_f32(p->out, x, w->data, 4, w->rows, w->cols, n, r0); break;
    case SL_DTYPE_BF16: row_tile_bf16(p->out, x, w->data, 2, w->rows, w->cols, n, r0); break;
    case SL_DTYPE_F16: row_tile_f16(p->out, x, w->data, 2, w->rows, w->cols, n, r0); break;
    default: return;
    }
    if (!p->bias) return;
    const int64_t end = r0 + TILE < w->rows ? r0 + TILE : w->rows;
    for (int t = 0; t < n; t++)
        for (int64_t r = r0; r < end; r++) p->out[(int64_t)t * w->rows + r] += p->bias[r];
}

/* The row tiles of every projection form one pool of work for the threads:
 * one parallel region (one barrier) however many projections share x. */
void cpu_matmul(const sl_proj *proj, int n_proj, const float *x, int n) {
    int64_t first_tile[SL_MAX_PROJ + 1], n_tiles = 0;
    if (n_proj > SL_MAX_PROJ) n_proj = SL_MAX_PROJ;
    for (int i = 0; i < n_proj; i++) {
        first_tile[i] = n_tiles;
        n_tiles += (proj[i].w->rows + TILE - 1) / TILE;
    }
    first_tile[n_proj] = n_tiles;
#pragma omp parallel for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; tile++) {
        int i = 0;
        while (tile >= first_tile[i + 1]) i++;
        row_tile(&proj[i], x, n, (tile - first_tile[i]) * TILE);
    }
}
