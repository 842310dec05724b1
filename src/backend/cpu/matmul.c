/* matmul.c -- out = x * W^T over packed bf16 or f32 weights, float32 math.
 *
 * Weights are repacked once at load (cpu_weight_pack) into panels of 64
 * rows: for each pair of columns (k, k+1), the panel holds 4 vectors of 16
 * rows with both columns of each row side by side. A step of the kernel
 * loads one such slice, turns it into the weights of column k and of column
 * k+1 for 64 rows, and multiplies them by x[t][k] and x[t][k+1] broadcast,
 * accumulating 64 outputs per token in 4 vector registers: no horizontal
 * sums, and a decode step reads each panel as one contiguous stream. (Without
 * AVX-512, narrower vectors and fewer rows at once: see KL below.)
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
 * Where the CPU has AMX (Sapphire Rapids and later) and Linux grants it,
 * bf16 pairs against bf16 weights go through the tile unit instead: the
 * panel layout is already what `tdpbf16ps` reads as its B operand (16 column
 * pairs of 16 rows, one pair 256 bytes after the last), x rows are its A
 * operand, and one instruction does 16 tokens x 16 rows x 32 columns. A
 * weight takes that path when its width is a whole number of 32-column
 * tiles (every real model's is); SHARDLM_CPU_AMX=0 turns it off. Fewer
 * than 4 tokens, which the unit would compute 16 at a time, go through FMAs
 * that sum in the unit's own order (amx_order_tile).
 *
 * Each output is one chain of FMAs over k in order, whichever tile computes
 * it (4 tokens, or the 1-3 left over), or on the AMX path one chain of
 * tdpbf16ps steps or of their FMA twins, so a token's logits do not depend
 * on what else is in the batch: batched and one-at-a-time results are
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
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX 1
#endif
#endif

#define VECS 4                        /* vectors of 16 rows per panel */
#define PANEL_ROWS (LANES * VECS)     /* 64 */
#define TILE_TOKENS 4                 /* tokens per tile: 16 accumulators */
#define AMX_TOKENS 16                 /* tokens per AMX tile; it computes two side by side */
#define AMX_OVERREAD (AMX_TOKENS - 1) /* x rows the AMX kernel may read past the last token */

/* The FMA kernel's vectors are a register wide, and it takes a panel's rows
 * in passes of as many as a tile's accumulators and a column pair fit in the
 * registers: with AVX-512 16 floats and all 64 rows at once (16 + 8 of 32
 * zmm); else two vectors of rows a pass (8 + 4 of 16 ymm or xmm) of 8 floats
 * (AVX2) or 4 (SSE), but one token's 64 rows at once (a decode step's stream
 * stays sequential). Each output is the same chain of FMAs either way. (The
 * 16-float vectors of util/simd.h went through the stack on AVX2 under GCC:
 * prefill 10x slower.) */
#if defined(__AVX512F__)
#define KL 16
#define PASS_ROWS 64
#elif defined(__AVX__)
#define KL 8
#define PASS_ROWS 16
#else
#define KL 4
#define PASS_ROWS 8
#endif
#define PANEL_VECS (PANEL_ROWS / KL)
typedef float kvf __attribute__((vector_size(KL * sizeof(float))));
typedef uint32_t kvu __attribute__((vector_size(KL * sizeof(uint32_t))));

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

/* Columns k and k+1 of the panel's rows [r0, r0 + KL * n_vecs), KL rows a vector: a bf16 pair slice is 64
 * words in row order; an f32 one is, per 16 rows, their column k then their column k+1. */
static inline void load_pass(const char *p, sl_dtype dtype, int r0, int n_vecs, kvf col_k[PANEL_VECS],
                             kvf col_k1[PANEL_VECS]) {
    for (int j = 0; j < n_vecs; j++) {
        const int r = r0 + j * KL;
        if (dtype == SL_DTYPE_BF16) {
            kvu u;
            memcpy(&u, p + (size_t)r * 4, sizeof u);
            col_k[j] = (kvf)(u << 16);
            col_k1[j] = (kvf)(u & 0xffff0000u);
        } else {
            const float *f = (const float *)p + r / LANES * LANES * 2 + r % LANES;
            memcpy(&col_k[j], f, sizeof col_k[j]);
            memcpy(&col_k1[j], f + LANES, sizeof col_k1[j]);
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
    const int pass_rows = T == 1 ? PANEL_ROWS : PASS_ROWS, n_vecs = pass_rows / KL;
    for (int r0 = 0; r0 < n_rows; r0 += pass_rows) {
        kvf acc[TILE_TOKENS][PANEL_VECS];
        for (int t = 0; t < T; t++)
            for (int j = 0; j < n_vecs; j++) acc[t][j] = (kvf){0};
        for (int64_t p = 0; p < pairs; p++) {
            kvf col_k[PANEL_VECS], col_k1[PANEL_VECS];
            load_pass(panel + (size_t)p * pair_bytes(dtype), dtype, r0, n_vecs, col_k, col_k1);
            for (int t = 0; t < T; t++) {
                const float *xt = (const float *)(x + t * x_row_bytes);
                const float xk = xt[2 * p], xk1 = xt[2 * p + 1];
                for (int j = 0; j < n_vecs; j++) {
                    acc[t][j] += col_k[j] * xk;
                    acc[t][j] += col_k1[j] * xk1;
                }
            }
        }
        const int left = n_rows - r0;
        store_tile(out + r0, ldo, acc, T, left < pass_rows ? left : pass_rows);
    }
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

#ifdef HAVE_AMX
/* ---- the AMX kernel ---- */

#define AMX_PAIRS 16  /* rows of a B tile: column pairs (32 columns) */
#define AMX_TILE_BYTES 64
#define AMX_MIN_TOKENS 4 /* fewer go through amx_order_tokens */
#define AMX_PREFETCH_BLOCKS 4 /* weights fetched into L2 this many 16-pair blocks ahead */
#define ARCH_REQ_XCOMP_PERM 0x1023 /* arch_prctl: ask Linux for an xsave feature */
#define XFEATURE_XTILEDATA 18

static bool g_amx_granted;
static bool amx_order_matches(void);
static void amx_request(void) {
    const char *env = getenv("SHARDLM_CPU_AMX");
    if (env && strcmp(env, "0") == 0) return;
    g_amx_granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 && amx_order_matches();
}

static bool amx_granted(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, amx_request);
    return g_amx_granted;
}

/* Whether bf16 weights of this width take the AMX kernel. */
static bool amx_for(const sl_weight *w) {
    return amx_granted() && w->dtype == SL_DTYPE_BF16 && n_pairs(w->cols) % AMX_PAIRS == 0;
}

/* Tiles 0-3 accumulate (2 x 16 tokens) x (2 x 16 rows), 4-5 hold x, 6-7 weights;
 * every tile is 16 rows of 64 bytes. The configuration is per thread. */
static void amx_configure_thread(void) {
    static _Thread_local bool configured;
    if (configured) return;
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg = {.palette = 1,
             .colsb = {AMX_TILE_BYTES, AMX_TILE_BYTES, AMX_TILE_BYTES, AMX_TILE_BYTES, AMX_TILE_BYTES, AMX_TILE_BYTES,
                       AMX_TILE_BYTES, AMX_TILE_BYTES},
             .rows = {16, 16, 16, 16, 16, 16, 16, 16}};
    __asm__ volatile("" : : "r"(&cfg) : "memory"); /* gcc 12 drops the stores ldtilecfg reads */
    _tile_loadconfig(&cfg);
    configured = true;
}

/* Accumulator tile C (constant) to out[t][r] for the tokens and rows that exist. */
#define AMX_STORE(C, out, ldo, n_tok, n_rows)                                                    \
    do {                                                                                         \
        if ((n_tok) >= AMX_TOKENS && (n_rows) >= LANES) {                                        \
            _tile_stored(C, (out), (ldo) * (long)sizeof(float));                                 \
        } else if ((n_tok) > 0 && (n_rows) > 0) {                                                \
            float tile_[AMX_TOKENS * LANES];                                                     \
            _tile_stored(C, tile_, LANES * sizeof(float));                                       \
            for (int t_ = 0; t_ < (n_tok) && t_ < AMX_TOKENS; t_++)                              \
                memcpy((out) + t_ * (ldo), tile_ + t_ * LANES,                                   \
                       sizeof(float) * (size_t)((n_rows) < LANES ? (n_rows) : LANES));           \
        }                                                                                        \
    } while (0)

/* The weights of 16-pair block p + AMX_PREFETCH_BLOCKS of a panel into L2:
 * they stream from memory, and the tile loads would wait for them. */
static inline void amx_prefetch_weights(const char *panel, int64_t p) {
    const char *ahead = panel + (size_t)(p + AMX_PREFETCH_BLOCKS * AMX_PAIRS) * pair_bytes(SL_DTYPE_BF16);
    for (int line = 0; line < AMX_PAIRS * 4; line++) _mm_prefetch(ahead + line * 64, _MM_HINT_T1);
}

/* 32 tokens x 32 rows (v, v + 1) of a panel: tiles 0-3 accumulate, x in 4-5,
 * weights in 6-7. `first` is the panel's first block: it fetches the weights. */
static void amx_block_32x32(float *out, int64_t ldo, int n_tok, int n_rows, const char *x, size_t x_row_bytes,
                            const char *panel, int v, bool first, int64_t pairs) {
    const size_t b_stride = pair_bytes(SL_DTYPE_BF16);
    const char *b = panel + (size_t)v * AMX_TILE_BYTES;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t p = 0; p < pairs; p += AMX_PAIRS) {
        if (first) amx_prefetch_weights(panel, p);
        _tile_loadd(4, x + p * 4, (long)x_row_bytes);
        _tile_loadd(5, x + AMX_TOKENS * x_row_bytes + p * 4, (long)x_row_bytes);
        _tile_loadd(6, b + (size_t)p * b_stride, (long)b_stride);
        _tile_loadd(7, b + (size_t)p * b_stride + AMX_TILE_BYTES, (long)b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    AMX_STORE(0, out, ldo, n_tok, n_rows);
    AMX_STORE(1, out + LANES, ldo, n_tok, n_rows - LANES);
    AMX_STORE(2, out + AMX_TOKENS * ldo, ldo, n_tok - AMX_TOKENS, n_rows);
    AMX_STORE(3, out + AMX_TOKENS * ldo + LANES, ldo, n_tok - AMX_TOKENS, n_rows - LANES);
}

/* Up to 16 tokens x the panel's 64 rows: four accumulators on one x tile keep
 * the unit busy when there are few tokens (the weights rotate through 5-7). */
static void amx_block_16x64(float *out, int64_t ldo, int n_tok, int n_rows, const char *x, size_t x_row_bytes,
                            const char *b, bool first, int64_t pairs) {
    const size_t b_stride = pair_bytes(SL_DTYPE_BF16);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t p = 0; p < pairs; p += AMX_PAIRS) {
        const char *bp = b + (size_t)p * b_stride;
        if (first) amx_prefetch_weights(b, p);
        _tile_loadd(4, x + p * 4, (long)x_row_bytes);
        _tile_loadd(5, bp, (long)b_stride);
        _tile_loadd(6, bp + AMX_TILE_BYTES, (long)b_stride);
        _tile_loadd(7, bp + 2 * AMX_TILE_BYTES, (long)b_stride);
        _tile_dpbf16ps(0, 4, 5);
        _tile_dpbf16ps(1, 4, 6);
        _tile_dpbf16ps(2, 4, 7);
        _tile_loadd(5, bp + 3 * AMX_TILE_BYTES, (long)b_stride);
        _tile_dpbf16ps(3, 4, 5);
    }
    AMX_STORE(0, out, ldo, n_tok, n_rows);
    AMX_STORE(1, out + LANES, ldo, n_tok, n_rows - LANES);
    AMX_STORE(2, out + 2 * LANES, ldo, n_tok, n_rows - 2 * LANES);
    AMX_STORE(3, out + 3 * LANES, ldo, n_tok, n_rows - 3 * LANES);
}

/* What tdpbf16ps computes, with FMAs, for the few tokens the tile unit would
 * mostly waste (it computes 16 at once, and a decode step has one): within
 * each block of 16 column pairs, the products of the even columns are summed
 * in order, those of the odd columns likewise, and their sum is added to the
 * output. Each product of two bf16 is exact in float32, so the FMAs round as
 * the unit's adds do; denormals are flushed as the unit flushes them.
 * amx_order_matches checks at start that this CPU's unit agrees bit for bit:
 * a token's outputs must not depend on which of the two computed them. */
static inline __attribute__((always_inline)) void amx_order_tile(float *out, int64_t ldo, int n_rows, const char *x,
                                                                 size_t x_row_bytes, const char *panel, int64_t pairs,
                                                                 int T) {
    vf acc[2][VECS];
    memset(acc, 0, sizeof acc);
    for (int64_t p0 = 0; p0 < pairs; p0 += AMX_PAIRS) {
        vf even[2][VECS], odd[2][VECS];
        memset(even, 0, sizeof even);
        memset(odd, 0, sizeof odd);
        for (int64_t p = p0; p < p0 + AMX_PAIRS; p++) {
            kvf col_k[PANEL_VECS], col_k1[PANEL_VECS]; /* AMX builds have AVX-512: KL 16, PANEL_VECS = VECS */
            load_pass(panel + (size_t)p * pair_bytes(SL_DTYPE_BF16), SL_DTYPE_BF16, 0, PANEL_VECS, col_k, col_k1);
            for (int t = 0; t < T; t++) {
                uint32_t pair;
                memcpy(&pair, x + t * x_row_bytes + (size_t)p * sizeof pair, sizeof pair);
                const float xk = sl_bf16_to_f32((uint16_t)pair), xk1 = sl_bf16_to_f32((uint16_t)(pair >> 16));
                for (int v = 0; v < VECS; v++) {
                    even[t][v] += col_k[v] * xk;
                    odd[t][v] += col_k1[v] * xk1;
                }
            }
        }
        for (int t = 0; t < T; t++)
            for (int v = 0; v < VECS; v++) acc[t][v] += even[t][v] + odd[t][v];
    }
    store_tile(out, ldo, acc, T, n_rows);
}

/* Tokens [0, n) of a panel through amx_order_tile, two at a time. */
static void amx_order_tokens(float *out, int64_t ldo, int n_rows, const char *x, size_t x_row_bytes, int n,
                             const char *panel, int64_t pairs) {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* flush-to-zero and denormals-are-zero, as the tile unit */
    int t = 0;
    for (; t + 2 <= n; t += 2) amx_order_tile(out + t * ldo, ldo, n_rows, x + t * x_row_bytes, x_row_bytes, panel, pairs, 2);
    if (t < n) amx_order_tile(out + t * ldo, ldo, n_rows, x + t * x_row_bytes, x_row_bytes, panel, pairs, 1);
    _mm_setcsr(csr);
}

/* Two tokens of random bf16 through the tile unit and through amx_order_tokens. */
static bool amx_order_matches(void) {
    enum { PAIRS = 2 * AMX_PAIRS, N = 2 };
    static uint32_t panel[PAIRS * PANEL_ROWS], x[AMX_TOKENS * PAIRS]; /* x: the unit reads 16 rows */
    static float by_unit[N * PANEL_ROWS], by_fma[N * PANEL_ROWS];
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < PAIRS * PANEL_ROWS + N * PAIRS; i++) {
        uint32_t word = 0;
        for (int half = 0; half < 2; half++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            const float f = (float)((double)(rng >> 11) / 9007199254740992.0 * 4.0 - 2.0);
            word |= (uint32_t)sl_f32_to_bf16(f) << (16 * half);
        }
        if (i < PAIRS * PANEL_ROWS) panel[i] = word;
        else x[i - PAIRS * PANEL_ROWS] = word;
    }
    amx_configure_thread();
    amx_block_16x64(by_unit, PANEL_ROWS, N, PANEL_ROWS, (const char *)x, PAIRS * 4, (const char *)panel, false, PAIRS);
    amx_order_tokens(by_fma, PANEL_ROWS, PANEL_ROWS, (const char *)x, PAIRS * 4, N, (const char *)panel, PAIRS);
    return memcmp(by_unit, by_fma, sizeof by_unit) == 0;
}

/* out[t][0..n_rows) for tokens [0, n) against one panel: 32-token blocks,
 * then one of 16 or fewer, then (under AMX_MIN_TOKENS left) the FMA twin.
 * Every output is the same chain of tdpbf16ps over k whichever computes it.
 * Up to AMX_OVERREAD x rows past n are read (the input scratch has them) and
 * their results dropped: a tile's rows do not mix. */
static void panel_amx(float *out, int64_t ldo, int n_rows, const char *x, size_t x_row_bytes, int n,
                      const char *panel, int64_t pairs) {
    amx_configure_thread();
    int t = 0;
    for (; n - t > AMX_TOKENS; t += 2 * AMX_TOKENS)
        for (int v = 0; v < VECS; v += 2)
            amx_block_32x32(out + t * ldo + v * LANES, ldo, n - t, n_rows - v * LANES, x + (size_t)t * x_row_bytes,
                            x_row_bytes, panel, v, t == 0 && v == 0, pairs);
    if (n - t >= AMX_MIN_TOKENS)
        amx_block_16x64(out + t * ldo, ldo, n - t, n_rows, x + (size_t)t * x_row_bytes, x_row_bytes, panel, t == 0,
                        pairs);
    else if (t < n) amx_order_tokens(out + t * ldo, ldo, n_rows, x + (size_t)t * x_row_bytes, x_row_bytes, n - t, panel, pairs);
}
#endif

typedef struct matmul_args {
    const sl_proj *proj;
    const int64_t *first_panel; /* [n_proj + 1]: projection i owns panels [first_panel[i], first_panel[i + 1]) */
    const char *x;              /* the input as the kernel reads it (input_for) */
    size_t x_row_bytes;
    bool bf16_pairs;            /* x is bf16 pairs: bf16 weights use KERNEL_BF16_PAIRS (or AMX) */
    bool amx;                   /* ... and the AMX kernel, 16-token tiles */
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
    float *out = (float *)pr->out + (int64_t)t0 * w->rows + r0;
    if (w->dtype == SL_DTYPE_F32) panel_all_tokens(KERNEL_F32, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
#ifdef HAVE_AMX
    else if (a->amx) panel_amx(out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
#endif
#ifdef HAVE_DPBF16
    else if (a->bf16_pairs)
        panel_all_tokens(KERNEL_BF16_PAIRS, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
#endif
    else panel_all_tokens(KERNEL_BF16, out, w->rows, n_rows, x, a->x_row_bytes, n, data, pairs);
    if (!pr->bias) return;
    for (int t = t0; t < t1; t++)
        for (int r = 0; r < n_rows; r++) ((float *)pr->out)[(int64_t)t * w->rows + r0 + r] += pr->bias[r0 + r];
}

/* First token of group g: group boundaries fall on whole tiles. */
static int group_start(const matmul_args *a, int g) {
    const int64_t tile = a->amx ? 2 * AMX_TOKENS : TILE_TOKENS;
    const int t = (int)(((int64_t)a->n * g / a->token_groups + tile - 1) / tile * tile);
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
 * seen, then reused: nothing is allocated in steady state). Zeroed when it
 * grows, so what lies past an input is earlier inputs or zeros. */
static float *scratch_floats(cpu_scratch *scratch, size_t n_floats) {
    if (n_floats > scratch->n_floats) {
        free(scratch->floats);
        scratch->floats = calloc(n_floats, sizeof(float));
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
    const size_t rows = (size_t)m->n + (m->amx ? AMX_OVERREAD : 0);
    if (!(a.dst = (char *)scratch_floats(scratch, rows * a.dst_row_bytes / sizeof(float)))) return false;
    cpu_pool_for(pool, m->n, 16, input_range, &a);
    m->x = a.dst;
    return true;
}

const char *cpu_matmul_unit(int bf16_inputs) {
    if (!bf16_inputs) return "float32 FMAs";
#ifdef HAVE_AMX
    if (amx_granted()) return "bf16 inputs on AMX tiles";
#endif
#ifdef HAVE_DPBF16
    return "bf16 inputs with vdpbf16ps";
#else
    return "bf16-rounded inputs with float32 FMAs";
#endif
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
#ifdef HAVE_AMX
    a.amx = bf16_x && amx_for(proj[0].w);
#endif
    if (!input_for(pool, &a, x, proj[0].w->cols, bf16_x, scratch)) return; /* out of memory: outputs unchanged */
    cpu_pool_for(pool, total * a.token_groups, 2, matmul_range, &a);
}
