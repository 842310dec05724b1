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
 * builds round x to bf16 values and compute the same products with FMAs).
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
#include "backend/cpu/vec.h"
#include "util/half.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_DPBF16 1
#endif

#define VECS 4                        /* vectors of 16 rows per panel */
#define PANEL_ROWS (LANES * VECS)     /* 64 */
#define TILE_TOKENS 4                 /* tokens per tile: 16 accumulators */

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

/* What a panel step computes: float32 x against f32 or bf16 weights, or
 * (AVX512_BF16 builds) x as bf16 pairs against bf16 weights. */
typedef enum { KERNEL_F32, KERNEL_BF16, KERNEL_BF16_PAIRS } kernel_kind;

/* out[t][0..n_rows) for T tokens of x (rows x_row_bytes apart) against one
 * panel; inlined with constant kind and T so the accumulators live in registers. */
static inline __attribute__((always_inline)) void panel_tile(kernel_kind kind, float *out, int64_t ldo, int n_rows,
                                                             const char *x, size_t x_row_bytes, const char *panel,
                                                             int64_t pairs, int T) {
#ifdef HAVE_DPBF16
    if (kind == KERNEL_BF16_PAIRS) {
        __m512 acc[TILE_TOKENS][VECS];
        for (int t = 0; t < T; t++)
            for (int v = 0; v < VECS; v++) acc[t][v] = _mm512_setzero_ps();
        for (int64_t p = 0; p < pairs; p++) {
            __m512bh w[VECS];
            for (int v = 0; v < VECS; v++)
                w[v] = (__m512bh)_mm512_loadu_si512(panel + (size_t)p * pair_bytes(SL_DTYPE_BF16) + v * LANES * 4);
            for (int t = 0; t < T; t++) {
                uint32_t pair;
                memcpy(&pair, x + t * x_row_bytes + (size_t)p * sizeof pair, sizeof pair);
                const __m512bh xb = (__m512bh)_mm512_set1_epi32((int)pair);
                for (int v = 0; v < VECS; v++) acc[t][v] = _mm512_dpbf16_ps(acc[t][v], w[v], xb);
            }
        }
        store_tile(out, ldo, acc, T, n_rows);
        return;
    }
#endif
    const sl_dtype dtype = kind == KERNEL_F32 ? SL_DTYPE_F32 : SL_DTYPE_BF16;
    vf acc[TILE_TOKENS][VECS];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < pairs; p++) {
        vf col_k[VECS], col_k1[VECS];
        load_pair(panel + (size_t)p * pair_bytes(dtype), dtype, col_k, col_k1);
        for (int t = 0; t < T; t++) {
            const float *xt = (const float *)(x + t * x_row_bytes);
            const float xk = xt[2 * p], xk1 = xt[2 * p + 1];
            for (int v = 0; v < VECS; v++) {
                acc[t][v] += col_k[v] * xk;
                acc[t][v] += col_k1[v] * xk1;
            }
        }
    }
    store_tile(out, ldo, acc, T, n_rows);
}

/* Every token against one panel: tiles of TILE_TOKENS, then the 1-3 left over. */
static inline __attribute__((always_inline)) void panel_all_tokens(kernel_kind kind, float *out, int64_t ldo,
                                                                   int n_rows, const char *x, size_t x_row_bytes,
                                                                   int n, const char *panel, int64_t pairs) {
    int t = 0;
    for (; t + TILE_TOKENS <= n; t += TILE_TOKENS)
        panel_tile(kind, out + t * ldo, ldo, n_rows, x + t * x_row_bytes, x_row_bytes, panel, pairs, TILE_TOKENS);
    const char *xt = x + t * x_row_bytes;
    switch (n - t) {
    case 3: panel_tile(kind, out + t * ldo, ldo, n_rows, xt, x_row_bytes, panel, pairs, 3); break;
    case 2: panel_tile(kind, out + t * ldo, ldo, n_rows, xt, x_row_bytes, panel, pairs, 2); break;
    case 1: panel_tile(kind, out + t * ldo, ldo, n_rows, xt, x_row_bytes, panel, pairs, 1); break;
    default: break;
    }
}

typedef struct matmul_args {
    const sl_proj *proj;
    const int64_t *first_panel; /* [n_proj + 1]: projection i owns panels [first_panel[i], first_panel[i + 1]) */
    const char *x;              /* the input as the kernel reads it (input_for) */
    size_t x_row_bytes;
    bool bf16_pairs;            /* x is bf16 pairs: bf16 weights use KERNEL_BF16_PAIRS */
    int n;
    int token_groups;           /* items are (panel, group of tokens), panel-major */
} matmul_args;

/* Rows [64 * panel, +64) of one projection, tokens [t0, t1). */
static void project_panel(const sl_proj *pr, const matmul_args *a, int64_t panel, int t0, int t1) {
    const sl_weight *w = pr->w;
    const int64_t r0 = panel * PANEL_ROWS, pairs = n_pairs(w->cols);
    const int n = t1 - t0, n_rows = w->rows - r0 < PANEL_ROWS ? (int)(w->rows - r0) : PANEL_ROWS;
    const char *data = (const char *)w->data + (size_t)(panel * pairs) * pair_bytes(w->dtype);
    const char *x = a->x + (size_t)t0 * a->x_row_bytes;
    float *out = pr->out + (int64_t)t0 * w->rows + r0;
    if (w->dtype == SL_DTYPE_F32) panel_all_tokens(KERNEL_F32, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
#ifdef HAVE_DPBF16
    else if (a->bf16_pairs)
        panel_all_tokens(KERNEL_BF16_PAIRS, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
#endif
    else panel_all_tokens(KERNEL_BF16, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
    if (!pr->bias) return;
    for (int t = t0; t < t1; t++)
        for (int r = 0; r < n_rows; r++) pr->out[(int64_t)t * w->rows + r0 + r] += pr->bias[r0 + r];
}

/* First token of group g: group boundaries fall on whole tiles. */
static int group_start(const matmul_args *a, int g) {
    const int t = (int)(((int64_t)a->n * g / a->token_groups + TILE_TOKENS - 1) / TILE_TOKENS * TILE_TOKENS);
    return t < a->n ? t : a->n;
}

static void matmul_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const matmul_args *a = varg;
    int i = 0;
    for (int64_t item = begin; item < end; item++) {
        const int64_t panel = item / a->token_groups;
        const int g = (int)(item % a->token_groups);
        while (panel >= a->first_panel[i + 1]) i++;
        project_panel(&a->proj[i], a, panel - a->first_panel[i], group_start(a, g), group_start(a, g + 1));
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

/* x as the kernel reads it, in column pairs with a zero past an odd width:
 * the caller's floats when nothing changes, else rows in the scratch, made by
 * the threads: padded floats, bf16 values as floats (bf16 inputs without
 * AVX512_BF16: the same products), or bf16 pairs, one 32-bit word
 * (x[k+1] << 16) | x[k] per pair (bf16 inputs with it). */
typedef struct input_args {
    char *dst;
    size_t dst_row_bytes;
    const float *x;
    int64_t cols;
    bool round_to_bf16, pairs;
} input_args;

/* 16 inputs [k, k + 16) of a row as the kernel reads them. */
static inline void convert_inputs(const input_args *a, char *row, int64_t k, vf x) {
    if (a->pairs) {
        const vu16 h = narrow_bf16(x);
        memcpy(row + (size_t)k * sizeof(uint16_t), &h, sizeof h);
    } else {
        if (a->round_to_bf16) x = widen_bf16(narrow_bf16(x));
        memcpy(row + (size_t)k * sizeof(float), &x, sizeof x);
    }
}

static void input_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const input_args *a = varg;
    const int64_t cols = a->cols, n_padded = cols + cols % 2;
    for (int64_t t = begin; t < end; t++) {
        const float *xt = a->x + t * cols;
        char *row = a->dst + (size_t)t * a->dst_row_bytes;
        int64_t k = 0;
        for (; k + LANES <= cols; k += LANES) convert_inputs(a, row, k, load_f(xt + k));
        if (k < n_padded) { /* the tail, zero-padded, through the same code */
            float tail[LANES] = {0};
            unsigned char out[LANES * sizeof(float)];
            memcpy(tail, xt + k, sizeof(float) * (size_t)(cols - k));
            convert_inputs(a, (char *)out, 0, load_f(tail));
            memcpy(row + (size_t)k * (a->pairs ? sizeof(uint16_t) : sizeof(float)), out,
                   (size_t)(n_padded - k) * (a->pairs ? sizeof(uint16_t) : sizeof(float)));
        }
    }
}

static bool input_for(cpu_pool *pool, matmul_args *m, const float *x, int64_t cols, bool bf16_inputs,
                      cpu_scratch *scratch) {
#ifdef HAVE_DPBF16
    const bool pairs = bf16_inputs;
#else
    const bool pairs = false;
#endif
    input_args a = {.x = x, .cols = cols, .round_to_bf16 = bf16_inputs && !pairs, .pairs = pairs};
    a.dst_row_bytes = pairs ? (size_t)n_pairs(cols) * sizeof(uint32_t) : (size_t)(cols + cols % 2) * sizeof(float);
    m->x = (const char *)x;
    m->x_row_bytes = a.dst_row_bytes;
    m->bf16_pairs = pairs;
    if (cols % 2 == 0 && !bf16_inputs) return true;
    if (!(a.dst = (char *)scratch_floats(scratch, (size_t)m->n * a.dst_row_bytes / sizeof(float)))) return false;
    cpu_pool_for(pool, m->n, 16, input_range, &a);
    m->x = a.dst;
    return true;
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
    /* bf16 inputs apply to bf16 weights; the projections of one input share a dtype (one file) */
    const bool bf16_x = bf16_inputs && proj[0].w->dtype == SL_DTYPE_BF16;
    /* Panels that do not split evenly between the threads (9 of them for a 576-wide
     * output on 2 threads) leave one waiting for a whole panel: with enough tokens,
     * each panel is split into token groups too, one per thread, so every thread
     * gets the same share. A thread takes a panel's groups in turn while it sits in
     * its cache, and each output is the same FMA chain whichever tile computes it. */
    const int threads = cpu_pool_n_threads(pool);
    const bool uneven = total % threads != 0 && n >= 2 * TILE_TOKENS * threads;
    matmul_args a = {.proj = proj, .first_panel = first_panel, .n = n, .token_groups = uneven ? threads : 1};
    if (!input_for(pool, &a, x, proj[0].w->cols, bf16_x, scratch)) return; /* out of memory: outputs unchanged */
    cpu_pool_for(pool, total * a.token_groups, 2, matmul_range, &a);
}
