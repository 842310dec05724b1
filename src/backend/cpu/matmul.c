/* matmul.c -- out = x * W^T over packed bf16 or f32 weights, float32 math.
 *
 * Weights are repacked once at load (cpu_weight_pack) into panels of 64
 * rows: for each pair of columns (k, k+1), the panel holds 4 vectors of 16
 * rows with both columns of each row side by side. A step of the kernel
 * loads one such slice, turns it into the weights of column k and of column
 * k+1 for 64 rows, and multiplies them by x[t][k] and x[t][k+1] broadcast,
 * accumulating 64 outputs per token in 4 vector registers: no horizontal
 * sums, and a decode step reads each panel as one contiguous stream.
 *
 * bf16 is stored as 32-bit words holding (row r, column k+1) in the high
 * half and (row r, column k) in the low half: `word << 16` is column k as
 * floats, `word & 0xffff0000` column k+1, so a bf16 step is one load, a
 * shift, an and and two FMAs per 16 rows. f16 weights are widened to f32 at
 * packing (x86 has no cheap f16 arithmetic in C; they take twice the memory).
 *
 * With bf16 inputs (--matmul-precision medium) x is rounded to bf16 pairs
 * once per call, and a step is one `vdpbf16ps` per 16 rows: both products
 * of a pair, summed in float32, at twice the FMA rate (AVX512_BF16; other
 * builds compute the same products with the shift and the and).
 *
 * Each output is one chain of FMAs over k in order, whichever tile computes
 * it (4 tokens, or the 1-3 left over), so a token's logits do not depend on
 * what else is in the batch: batched and one-at-a-time results are
 * bit-identical. Threads split the panels of all the projections of one
 * input: one call to the pool however many projections share x. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/half.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_DPBF16 1
#endif

#define LANES 16
#define VECS 4                        /* vectors of 16 rows per panel */
#define PANEL_ROWS (LANES * VECS)     /* 64 */
#define TILE_TOKENS 4                 /* tokens per tile: 16 accumulators */

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

/* ---- the packed layout ---- */

static int64_t n_panels(int64_t rows) { return (rows + PANEL_ROWS - 1) / PANEL_ROWS; }
static int64_t n_pairs(int64_t cols) { return (cols + 1) / 2; }

/* Bytes of one column pair of one panel. */
static size_t pair_bytes(sl_dtype packed) { return packed == SL_DTYPE_BF16 ? PANEL_ROWS * 4 : PANEL_ROWS * 8; }

sl_dtype cpu_packed_dtype(sl_dtype file_dtype) { return file_dtype == SL_DTYPE_BF16 ? SL_DTYPE_BF16 : SL_DTYPE_F32; }

size_t cpu_packed_bytes(sl_dtype file_dtype, int64_t rows, int64_t cols) {
    return (size_t)n_panels(rows) * (size_t)n_pairs(cols) * pair_bytes(cpu_packed_dtype(file_dtype));
}

/* Where (row r, column k) lives, in elements of the packed dtype from w->data. */
static size_t packed_index(const sl_weight *w, int64_t r, int64_t k) {
    const int64_t panel = r / PANEL_ROWS, v = r % PANEL_ROWS / LANES, lane = r % LANES;
    const size_t pair = (size_t)(panel * n_pairs(w->cols) + k / 2) * (PANEL_ROWS * 2) + (size_t)v * LANES * 2;
    if (w->dtype == SL_DTYPE_BF16) return pair + (size_t)lane * 2 + (size_t)(k % 2); /* word = (k+1) << 16 | k */
    return pair + (size_t)(k % 2) * LANES + (size_t)lane;                          /* 16 of column k, then k+1 */
}

float cpu_weight_at(const sl_weight *w, int64_t r, int64_t k) {
    size_t i = packed_index(w, r, k);
    return w->dtype == SL_DTYPE_BF16 ? sl_bf16_to_f32(((const uint16_t *)w->data)[i]) : ((const float *)w->data)[i];
}

static float file_elem(const void *src, sl_dtype dtype, size_t i) {
    switch (dtype) {
    case SL_DTYPE_BF16: return sl_bf16_to_f32(((const uint16_t *)src)[i]);
    case SL_DTYPE_F16: return sl_f16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

typedef struct pack_args {
    const sl_weight *w;
    const void *src;
    sl_dtype file_dtype;
    int64_t src_row_stride;
} pack_args;

/* Panels [begin, end): zeros first (padding rows and column), then the file's rows. */
static void pack_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const pack_args *a = varg;
    const sl_weight *w = a->w;
    const size_t panel_bytes = (size_t)n_pairs(w->cols) * pair_bytes(w->dtype);
    memset((char *)w->data + (size_t)begin * panel_bytes, 0, (size_t)(end - begin) * panel_bytes);
    const int64_t r_end = end * PANEL_ROWS < w->rows ? end * PANEL_ROWS : w->rows;
    for (int64_t r = begin * PANEL_ROWS; r < r_end; r++)
        for (int64_t k = 0; k < w->cols; k++) {
            size_t from = (size_t)(r * a->src_row_stride + k), to = packed_index(w, r, k);
            if (w->dtype == SL_DTYPE_BF16) ((uint16_t *)w->data)[to] = ((const uint16_t *)a->src)[from];
            else ((float *)w->data)[to] = file_elem(a->src, a->file_dtype, from);
        }
}

void cpu_weight_pack(cpu_pool *pool, void *dst, sl_weight *w, const void *src, sl_dtype dtype, int64_t rows,
                     int64_t cols, int64_t src_row_stride) {
    *w = (sl_weight){.data = dst, .dtype = cpu_packed_dtype(dtype), .rows = rows, .cols = cols};
    pack_args a = {w, src, dtype, src_row_stride};
    cpu_pool_for(pool, n_panels(rows), 1, pack_range, &a);
}

/* ---- the kernel ---- */

/* T tokens' accumulators (64 floats each, as vectors) to out[t][0..n_rows). */
static inline void store_tile(float *out, int64_t ldo, const void *acc, int T, int n_rows) {
    for (int t = 0; t < T; t++)
        memcpy(out + t * ldo, (const char *)acc + (size_t)t * PANEL_ROWS * sizeof(float), sizeof(float) * (size_t)n_rows);
}

/* Columns k and k+1 of a panel's 64 rows. */
static inline void load_pair(const char *p, sl_dtype dtype, vf col_k[VECS], vf col_k1[VECS]) {
    for (int v = 0; v < VECS; v++) {
        if (dtype == SL_DTYPE_BF16) {
            vu u;
            memcpy(&u, p + v * LANES * 4, sizeof u);
            col_k[v] = as_float(u << 16);
            col_k1[v] = as_float(u & 0xffff0000u);
        } else {
            col_k[v] = load_f((const float *)p + v * LANES * 2);
            col_k1[v] = load_f((const float *)p + v * LANES * 2 + LANES);
        }
    }
}

/* out[t][0..n_rows) for T tokens of x (rows ldx apart) against one panel;
 * inlined with constant T and dtype so the accumulators live in registers. */
static inline __attribute__((always_inline)) void panel_tile(float *out, int64_t ldo, int n_rows, const float *x,
                                                             int64_t ldx, const char *panel, int64_t pairs,
                                                             sl_dtype dtype, int T) {
    const size_t step = pair_bytes(dtype);
    vf acc[TILE_TOKENS][VECS];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < pairs; p++) {
        vf col_k[VECS], col_k1[VECS];
        load_pair(panel + (size_t)p * step, dtype, col_k, col_k1);
        for (int t = 0; t < T; t++) {
            const float xk = x[t * ldx + 2 * p], xk1 = x[t * ldx + 2 * p + 1];
            for (int v = 0; v < VECS; v++) {
                acc[t][v] += col_k[v] * xk;
                acc[t][v] += col_k1[v] * xk1;
            }
        }
    }
    store_tile(out, ldo, acc, T, n_rows);
}

/* The same over bf16 weights with x as bf16 pairs (xw: one 32-bit word per column pair). */
static inline __attribute__((always_inline)) void panel_tile_bf16_inputs(float *out, int64_t ldo, int n_rows,
                                                                         const uint32_t *xw, int64_t ldx,
                                                                         const char *panel, int64_t pairs, int T) {
    const size_t step = pair_bytes(SL_DTYPE_BF16);
#ifdef HAVE_DPBF16
    __m512 acc[TILE_TOKENS][VECS];
    for (int t = 0; t < T; t++)
        for (int v = 0; v < VECS; v++) acc[t][v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh w[VECS];
        for (int v = 0; v < VECS; v++) w[v] = (__m512bh)_mm512_loadu_si512(panel + (size_t)p * step + v * LANES * 4);
        for (int t = 0; t < T; t++) {
            const __m512bh xb = (__m512bh)_mm512_set1_epi32((int)xw[t * ldx + p]);
            for (int v = 0; v < VECS; v++) acc[t][v] = _mm512_dpbf16_ps(acc[t][v], w[v], xb);
        }
    }
#else
    vf acc[TILE_TOKENS][VECS];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < pairs; p++) {
        vf col_k[VECS], col_k1[VECS];
        load_pair(panel + (size_t)p * step, SL_DTYPE_BF16, col_k, col_k1);
        for (int t = 0; t < T; t++) {
            const uint32_t pair = xw[t * ldx + p];
            const float xk = sl_bf16_to_f32((uint16_t)pair), xk1 = sl_bf16_to_f32((uint16_t)(pair >> 16));
            for (int v = 0; v < VECS; v++) {
                acc[t][v] += col_k[v] * xk;
                acc[t][v] += col_k1[v] * xk1;
            }
        }
    }
#endif
    store_tile(out, ldo, acc, T, n_rows);
}

static void panel_bf16_inputs(float *out, int64_t ldo, int n_rows, const uint32_t *xw, int64_t ldx, int n,
                              const char *panel, int64_t pairs) {
    int t = 0;
    for (; t + TILE_TOKENS <= n; t += TILE_TOKENS)
        panel_tile_bf16_inputs(out + t * ldo, ldo, n_rows, xw + t * ldx, ldx, panel, pairs, TILE_TOKENS);
    switch (n - t) {
    case 3: panel_tile_bf16_inputs(out + t * ldo, ldo, n_rows, xw + t * ldx, ldx, panel, pairs, 3); break;
    case 2: panel_tile_bf16_inputs(out + t * ldo, ldo, n_rows, xw + t * ldx, ldx, panel, pairs, 2); break;
    case 1: panel_tile_bf16_inputs(out + t * ldo, ldo, n_rows, xw + t * ldx, ldx, panel, pairs, 1); break;
    default: break;
    }
}

#define DEFINE_PANEL(SUFFIX, DTYPE)                                                                       \
    static void panel_##SUFFIX(float *out, int64_t ldo, int n_rows, const float *x, int64_t ldx, int n,  \
                               const char *panel, int64_t pairs) {                                    \
        int t = 0;                                                                                     \
        for (; t + TILE_TOKENS <= n; t += TILE_TOKENS)                                                 \
            panel_tile(out + t * ldo, ldo, n_rows, x + t * ldx, ldx, panel, pairs, DTYPE, TILE_TOKENS); \
        switch (n - t) {                                                                               \
        case 3: panel_tile(out + t * ldo, ldo, n_rows, x + t * ldx, ldx, panel, pairs, DTYPE, 3); break; \
        case 2: panel_tile(out + t * ldo, ldo, n_rows, x + t * ldx, ldx, panel, pairs, DTYPE, 2); break; \
        case 1: panel_tile(out + t * ldo, ldo, n_rows, x + t * ldx, ldx, panel, pairs, DTYPE, 1); break; \
        default: break;                                                                                \
        }                                                                                              \
    }

DEFINE_PANEL(bf16, SL_DTYPE_BF16)
DEFINE_PANEL(f32, SL_DTYPE_F32)

typedef struct matmul_args {
    const sl_proj *proj;
    const int64_t *first_panel; /* [n_proj + 1]: projection i owns panels [first_panel[i], first_panel[i + 1]) */
    const float *x;
    int64_t ldx;                /* floats per token of x */
    const uint32_t *xw;         /* x as bf16 pairs ([n][pairs]) for bf16 weights, or NULL */
    int n;
} matmul_args;

/* Rows [64 * panel, +64) of one projection, every token. */
static void project_panel(const sl_proj *pr, const matmul_args *a, int64_t panel) {
    const sl_weight *w = pr->w;
    const int64_t r0 = panel * PANEL_ROWS, pairs = n_pairs(w->cols);
    const int n = a->n, n_rows = w->rows - r0 < PANEL_ROWS ? (int)(w->rows - r0) : PANEL_ROWS;
    const char *data = (const char *)w->data + (size_t)(panel * pairs) * pair_bytes(w->dtype);
    if (w->dtype == SL_DTYPE_BF16 && a->xw) panel_bf16_inputs(pr->out + r0, w->rows, n_rows, a->xw, pairs, n, data, pairs);
    else if (w->dtype == SL_DTYPE_BF16) panel_bf16(pr->out + r0, w->rows, n_rows, a->x, a->ldx, n, data, pairs);
    else panel_f32(pr->out + r0, w->rows, n_rows, a->x, a->ldx, n, data, pairs);
    if (!pr->bias) return;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < n_rows; r++) pr->out[(int64_t)t * w->rows + r0 + r] += pr->bias[r0 + r];
}

static void matmul_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const matmul_args *a = varg;
    int i = 0;
    for (int64_t panel = begin; panel < end; panel++) {
        while (panel >= a->first_panel[i + 1]) i++;
        project_panel(&a->proj[i], a, panel - a->first_panel[i]);
    }
}

/* The caller's scratch holds at least n_floats (grown to the largest input
 * seen, then reused: nothing is allocated in steady state). */
static float *scratch_floats(cpu_scratch *scratch, size_t n_floats) {
    if (n_floats > scratch->n_floats) {
        free(scratch->floats);
        scratch->floats = malloc(sizeof(float) * n_floats);
        scratch->n_floats = scratch->floats ? n_floats : 0;
    }
    return scratch->floats;
}

/* A kernel step reads x in column pairs: an odd width gets a zero column. */
static const float *padded_input(const float *x, int n, int64_t cols, cpu_scratch *scratch) {
    if (cols % 2 == 0) return x;
    if (!scratch_floats(scratch, (size_t)n * (size_t)(cols + 1))) return NULL;
    for (int t = 0; t < n; t++) {
        memcpy(scratch->floats + (size_t)t * (size_t)(cols + 1), x + (size_t)t * (size_t)cols, sizeof(float) * (size_t)cols);
        scratch->floats[(size_t)t * (size_t)(cols + 1) + (size_t)cols] = 0.0f;
    }
    return scratch->floats;
}

/* x rounded to bf16, a 32-bit word per column pair: (x[k+1] << 16) | x[k], a zero past an odd width. */
typedef struct pairs_args {
    uint32_t *xw;
    const float *x;
    int64_t cols;
} pairs_args;

static void bf16_pairs_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const pairs_args *a = varg;
    const int64_t cols = a->cols, pairs = n_pairs(cols);
    for (int64_t t = begin; t < end; t++) {
        const float *xt = a->x + t * cols;
        uint32_t *w = a->xw + t * pairs;
        for (int64_t p = 0; p < pairs; p++) {
            uint32_t hi = 2 * p + 1 < cols ? sl_f32_to_bf16(xt[2 * p + 1]) : 0;
            w[p] = hi << 16 | sl_f32_to_bf16(xt[2 * p]);
        }
    }
}

static const uint32_t *bf16_pairs(cpu_pool *pool, const float *x, int n, int64_t cols, cpu_scratch *scratch) {
    pairs_args a = {(uint32_t *)scratch_floats(scratch, (size_t)n * (size_t)n_pairs(cols)), x, cols};
    if (a.xw) cpu_pool_for(pool, n, 16, bf16_pairs_range, &a);
    return a.xw;
}

void cpu_matmul(cpu_pool *pool, const sl_proj *proj, int n_proj, const float *x, int n, int bf16_inputs,
                cpu_scratch *scratch) {
    int64_t first_panel[SL_MAX_PROJ + 1], total = 0;
    if (n_proj > SL_MAX_PROJ) n_proj = SL_MAX_PROJ;
    for (int i = 0; i < n_proj; i++) {
        first_panel[i] = total;
        total += n_panels(proj[i].w->rows);
    }
    first_panel[n_proj] = total;
    const int64_t cols = proj[0].w->cols;
    bool bf16_weights = false;
    for (int i = 0; i < n_proj; i++) bf16_weights |= proj[i].w->dtype == SL_DTYPE_BF16;
    matmul_args a = {proj, first_panel, x, cols + cols % 2, NULL, n};
    if (bf16_inputs && bf16_weights) a.xw = bf16_pairs(pool, x, n, cols, scratch);
    else a.x = padded_input(x, n, cols, scratch);
    if (!a.x || (bf16_inputs && bf16_weights && !a.xw)) return; /* out of memory: the outputs stay as they were */
    cpu_pool_for(pool, total, 2, matmul_range, &a);
}
