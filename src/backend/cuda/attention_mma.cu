/* attention_mma.cu -- prefill attention on tensor cores (mma.sync) for 16-bit
 * KV caches: FlashAttention-2's loop over attention.cu's prefill tiles.
 *
 * What it computes is attention_prefill's (attention.cu): a block takes a tile
 * of ROWS (128) query rows of one KV head of one sequence, a row being one
 * (query token, query head of the group) pair ordered token-major, so each
 * key and value is read once for the whole GQA group; keys [0, the tile's last
 * position], row r seeing keys < pos0 + r / heads + 1; the last tiles of a
 * sequence first; query heads beyond 128 in several head passes. Only the
 * arithmetic differs, and only for bfloat16 / float16 caches and head sizes
 * 64, 80, 96 and 128 (the others stay on attention.cu's float32 kernel: 256
 * would not fit its output in registers).
 *
 * A block is 4 warps; warp w owns rows [32w, 32w + 32), two mma M tiles of
 * 16 that share every K and V fragment it reads from shared memory (half the
 * shared-memory reads a FLOP of one tile a warp, FlashAttention-2's split),
 * and two blocks fit an SM (at most 255 registers a thread). Keys come in
 * chunks of CHUNK (64) through shared memory, copied by cp.async from the
 * paged cache ([block][kv head][slot][head_dim], 16-byte pieces), two stages
 * so the next chunk flies while this one computes; K and V rows sit as in the
 * cache, one row per key, padded by 16 bytes: a row is an odd number of
 * 16-byte units, so the 8 rows one ldmatrix phase reads fall in 8 different
 * bank quads (no conflicts, no swizzle). Keys past the tile's range are zeros.
 * A chunk is attended in two steps of STEP (32) keys, which keeps a step's
 * scores in registers beside the output without spilling.
 *
 * Per warp, all with mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}:
 *   - Q: the tile's 128 rows x head_dim, read once from global memory into
 *     shared memory (rows padded as K's), taken as A fragments by ldmatrix
 *     at each feature step kk (features [16kk, 16kk + 16)). Queries of the
 *     cache's type T (the activation type of a 16-bit model) go in as they
 *     are and the scores are multiplied by q_scale (softmax scale * log2 e,
 *     as attention.cu) in float32 after the mma ("raw" Q); others (float32,
 *     or the other 16-bit type) are multiplied by q_scale and rounded to T.
 *   - S = Q K^T, per M tile 16 rows x 32 keys: 4 accumulators of m16n8 (keys
 *     [8jb, 8jb + 8)). K is the "col" operand B (k = feature, n = key): a key
 *     row in shared memory is exactly a column of B, so plain ldmatrix of 8
 *     keys x 8 features gives B's register (lane l: key l/4, features
 *     2(l%4), +1).
 *   - online softmax in float32 and base 2 (exp2f), each row's max reduced
 *     over the 4 lanes that hold it; masked scores are -inf and weigh 0.
 *   - P = 2^(S - max) rounded to T; the m16n8 accumulator layout of two
 *     adjacent key blocks is the m16n8k16 A layout, so P stays in registers.
 *     The row sums add the rounded weights, so the output is a true weighted
 *     mean of value rows.
 *   - O += P V: V is B with k = key, n = feature, i.e. a value row is a row
 *     of B; ldmatrix.trans hands each lane keys 2(l%4), +1 of feature l/4.
 *   - at the end O / sum, written to out[token][head][head_dim] in the
 *     activation type (rounded to nearest even where 16-bit).
 *
 * Fragments (PTX ISA, mma.m16n8k16 with .bf16/.f16; g = lane / 4, t = lane % 4;
 * a register holds two 16-bit elements, the lower column / k index in the
 * low half):
 *     A (16 x 16, row):  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
 *     B (16 x 8, col):   b0 (k 2t..2t+1, n g)              b1 (k 2t+8..2t+9, n g)
 *     C (16 x 8, f32):   c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
 * ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i, register i
 * receives matrix i (lane l: row l/4, columns 2(l%4), +1; with .trans the
 * transpose: stored rows 2(l%4), +1 of stored column l/4).
 *
 * Rounding: P goes to 16 bits (relative error 2^-8 for bfloat16, 2^-11 for
 * float16), and so does the prescaled Q unless it comes raw (its 16-bit
 * values are then exact), where the float32 kernel keeps them float32; K and
 * V are the cache's own 16-bit values in both. tests/backend/test_cuda_ops.c holds the
 * difference to the CPU's float32 reference (see its tolerance's comment).
 *
 * The launcher only enqueues (graph-capture safe); the first launch of an
 * instance raises its shared-memory limit past 48 KB where needed. sm_80+;
 * where a block's shared memory (104 KB at head_dim 128) is more than the
 * device lets a block have (sm_86, sm_89), the float32 kernel runs instead. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <math.h>
#include <type_traits>

#include "backend/cuda/act.cuh"
#include "backend/cuda/kernels.h"

namespace {

constexpr int THREADS = 128; /* 4 warps */
constexpr int ROWS = 128;    /* query rows of a tile: 32 per warp, two mma M tiles of 16 */
constexpr int TILES = 2;     /* M tiles a warp */
constexpr int CHUNK = 64;    /* keys a stage of shared memory holds */
constexpr int STEP = 32;     /* keys per online-softmax step: two a chunk */
constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr float LOG2E = 1.4426950408889634f;

/* Shapes fixed by head_dim D (elements are 2 bytes). */
template <int D> struct mma_cfg {
    static constexpr int ROW_BYTES = D * 2;
    static constexpr int PIECES = ROW_BYTES / 16;     /* 16-byte pieces per key row */
    static constexpr int STRIDE = ROW_BYTES + 16;     /* a row in shared memory: an odd number of 16-byte units */
    static constexpr int FEAT_STEPS = D / 16;         /* k-steps of S = Q K^T */
    static constexpr int OUT_BLOCKS = D / 8;          /* n-blocks of O */
    static constexpr int KEY_BLOCKS = STEP / 8;       /* n-blocks of S */
    static constexpr int KEY_STEPS = STEP / 16;       /* k-steps of O += P V */
    static constexpr int STAGE_BYTES = 2 * CHUNK * STRIDE; /* K rows, then V rows */
    static constexpr int Q_BYTES = ROWS * STRIDE;           /* the tile's queries, rows as K's */
    static constexpr int SMEM = Q_BYTES + 2 * STAGE_BYTES;
    static constexpr int LOAD_STEPS = (CHUNK * PIECES + THREADS - 1) / THREADS; /* pieces a thread copies */

    static_assert(D % 16 == 0 && D >= 64 && D <= 128, "head_dim: 64, 80, 96 or 128");
    static_assert((STRIDE / 16) % 2 == 1, "padded rows: ldmatrix phases conflict-free");
};

/* What every block of a launch shares. */
struct mma_params {
    void *out;                 /* [n_tokens][n_heads][head_dim] of act */
    const void *q;             /* the same */
    sl_dtype act;              /* (the kernel's Q: how queries of this type go in) */
    const unsigned char *k_cache, *v_cache;
    const int32_t *query_start, *context_len, *block_tables;
    int max_blocks, block_size, n_kv_heads, n_heads, group;
    int decode_tokens;         /* sequences with at most this many query tokens are attention_decode's */
    int passes, heads, tokens; /* head plan: `passes` of `heads` heads, `tokens` query tokens per tile */
    float q_scale;             /* scale * log2(e) */
};

/* ---- 16-bit pairs and the tensor-core instructions ---- */

/* The sum of a word's two T as floats. */
template <typename T> __device__ inline float pair_sum(uint32_t w) {
    const float2 x = widen_pair<T>(w);
    return x.x + x.y;
}

/* c += A B for one m16n8k16: A four words, B two, C four floats (layouts at the top of the file). */
template <typename T> __device__ inline void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same_v<T, __half>)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 matrices of 16-bit elements from shared memory (this lane's row address: addr). */
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* The same, each matrix transposed. */
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* ---- a tile ---- */

/* One block's work: rows r = token * heads + head of [0, rows), keys [0, key_end). */
struct mma_tile {
    const int32_t *table; /* the sequence's block table */
    int kv_head, head0, heads;
    int token0, pos0;     /* the step index and position of its first query token */
    int rows, key_end;
};

/* Starts copying keys [j0, j0 + CHUNK) of the tile's KV head and their values into a stage (K rows,
 * then V rows); rows past key_end are zeroed instead. Consecutive threads copy consecutive pieces. */
template <int D>
__device__ __forceinline__ void load_chunk(const mma_params &p, const mma_tile &tl, unsigned char *stage, int j0) {
    using Cfg = mma_cfg<D>;
#pragma unroll
    for (int it = 0; it < Cfg::LOAD_STEPS; it++) {
        const int i = threadIdx.x + it * THREADS, c = i / Cfg::PIECES, piece = i % Cfg::PIECES, j = j0 + c;
        if ((CHUNK * Cfg::PIECES) % THREADS != 0 && i >= CHUNK * Cfg::PIECES) break;
        unsigned char *kd = stage + c * Cfg::STRIDE + piece * 16, *vd = kd + CHUNK * Cfg::STRIDE;
        if (j < tl.key_end) {
            const size_t block = (size_t)tl.table[j / p.block_size];
            const size_t at =
                ((block * p.n_kv_heads + tl.kv_head) * p.block_size + j % p.block_size) * Cfg::ROW_BYTES + piece * 16;
            __pipeline_memcpy_async(kd, p.k_cache + at, 16);
            __pipeline_memcpy_async(vd, p.v_cache + at, 16);
        } else {
            *reinterpret_cast<uint4 *>(kd) = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4 *>(vd) = make_uint4(0, 0, 0, 0);
        }
    }
}

/* Tile row r's first element in q and out, or -1 past the tile's rows. */
template <int D> __device__ inline int64_t query_row(const mma_params &p, const mma_tile &tl, int r) {
    if (r >= tl.rows) return -1;
    return (int64_t)((size_t)(tl.token0 + r / tl.heads) * p.n_heads + tl.head0 + r % tl.heads) * D;
}

/* Two 16-bit elements of a word as floats, of type act (bfloat16 or float16). */
__device__ inline float2 widen_act_pair(uint32_t w, sl_dtype act) {
    if (act == SL_DTYPE_BF16) return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
    return __half22float2(__halves2half2(__ushort_as_half((unsigned short)(w & 0xffffu)),
                                         __ushort_as_half((unsigned short)(w >> 16))));
}

/* How the queries (and outputs) of a launch are typed: of the cache's T (they go in as they are, "raw"),
 * float32, or the other 16-bit type (p.act says which). A template argument: one kernel instance each. */
enum q_kind { Q_RAW, Q_F32, Q_OTHER };

/* The tile's query rows into shared memory at qs as T, a row every STRIDE bytes as K's: as they are
 * (Q_RAW: copied by cp.async, in the copy group of the first chunk), or times q_scale rounded to T; zeros
 * past the tile's rows. Consecutive threads take consecutive 16-byte pieces (8 elements). */
template <typename T, int D, q_kind Q>
__device__ __forceinline__ void load_queries(const mma_params &p, const mma_tile &tl, unsigned char *qs) {
    using Cfg = mma_cfg<D>;
    for (int i = threadIdx.x; i < ROWS * Cfg::PIECES; i += THREADS) {
        const int r = i / Cfg::PIECES, d = i % Cfg::PIECES * 8;
        const int64_t row = query_row<D>(p, tl, r);
        unsigned char *dst = qs + r * Cfg::STRIDE + d * 2;
        if constexpr (Q == Q_RAW) {
            if (row >= 0) __pipeline_memcpy_async(dst, static_cast<const T *>(p.q) + row + d, 16);
            else *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
            continue;
        }
        float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (row >= 0) {
            if constexpr (Q == Q_F32) {
                const float4 *f = reinterpret_cast<const float4 *>(static_cast<const float *>(p.q) + row + d);
                const float4 lo = __ldg(f), hi = __ldg(f + 1);
                x[0] = lo.x, x[1] = lo.y, x[2] = lo.z, x[3] = lo.w, x[4] = hi.x, x[5] = hi.y, x[6] = hi.z, x[7] = hi.w;
            } else {
                const uint4 u = __ldg(reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(p.q) + row + d));
                const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float2 f = widen_act_pair(words[e], p.act);
                    x[2 * e] = f.x, x[2 * e + 1] = f.y;
                }
            }
        }
        const float c = p.q_scale;
        *reinterpret_cast<uint4 *>(dst) =
            make_uint4(narrow_pair<T>(x[0] * c, x[1] * c), narrow_pair<T>(x[2] * c, x[3] * c),
                       narrow_pair<T>(x[4] * c, x[5] * c), narrow_pair<T>(x[6] * c, x[7] * c));
    }
}

/* One warp's state over the tile: of its M tile m, rows g and g + 8 (h = 0, 1) of this lane. */
template <int D> struct warp_state {
    float o[TILES][mma_cfg<D>::OUT_BLOCKS][4]; /* unnormalized output, C layout */
    float max[TILES][2];                       /* running max (base 2), the same in the row's 4 lanes */
    float sum[TILES][2];                       /* this lane's part of the row's sum of weights */
    int limit[TILES][2];                       /* the first key the row may not see */
};

/* Scores of the warp's rows against STEP keys, weights, and O += P V, for keys [j0, j0 + STEP) at shared
 * address kv in a stage (K rows at kv, V rows CHUNK rows further); the warp's queries at
 * shared address q (its first row). Each K and V fragment read serves both M tiles. With raw queries the
 * scores are multiplied by q_scale after the mma (else the queries were). */
template <typename T, int D, q_kind Q>
__device__ __forceinline__ void attend_step(warp_state<D> &w, uint32_t kv, uint32_t q, int j0, bool masked,
                                             float q_scale, int lane) {
    using Cfg = mma_cfg<D>;
    const int t = lane % 4;

    /* S = Q K^T, feature step by feature step. Q's A fragment of M tile m by an ldmatrix of its 16 rows:
     * matrix i holds rows 8 * (i % 2) + [0, 8), features 8 * (i / 2) + [0, 8) (registers a0..a3 in order).
     * Matrix i of K's ldmatrix: keys 8 * (i / 2) + [0, 8) of the pair of key blocks, features 8 * (i % 2)
     * + [0, 8) of the step: registers {0, 1} are B of key block 2kb, {2, 3} of key block 2kb + 1. */
    float s[TILES][Cfg::KEY_BLOCKS][4];
#pragma unroll
    for (int m = 0; m < TILES; m++)
#pragma unroll
        for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) s[m][jb][0] = s[m][jb][1] = s[m][jb][2] = s[m][jb][3] = 0.0f;
    const uint32_t q_lane = q + ((lane & 7) + ((lane >> 3) & 1) * 8) * Cfg::STRIDE + (lane >> 4) * 16;
    const uint32_t k_lane = kv + ((lane & 7) + (lane >> 4) * 8) * Cfg::STRIDE + ((lane >> 3) & 1) * 16;
#pragma unroll
    for (int kk = 0; kk < Cfg::FEAT_STEPS; kk++) {
        uint32_t qa[TILES][4];
#pragma unroll
        for (int m = 0; m < TILES; m++) ldmatrix_x4(qa[m], q_lane + m * 16 * Cfg::STRIDE + kk * 32);
#pragma unroll
        for (int kb = 0; kb < Cfg::KEY_BLOCKS / 2; kb++) {
            uint32_t b[4];
            ldmatrix_x4(b, k_lane + kb * 16 * Cfg::STRIDE + kk * 32);
#pragma unroll
            for (int m = 0; m < TILES; m++) {
                mma16816<T>(s[m][2 * kb], qa[m], b[0], b[1]);
                mma16816<T>(s[m][2 * kb + 1], qa[m], b[2], b[3]);
            }
        }
    }

    /* per M tile: the causal limit, the online softmax, P as A fragments */
    uint32_t pa[TILES][Cfg::KEY_STEPS][4];
#pragma unroll
    for (int m = 0; m < TILES; m++) {
        if constexpr (Q == Q_RAW) {
#pragma unroll
            for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[m][jb][e] *= q_scale;
        }
        /* s[m][jb][e] is key j0 + 8jb + 2t + (e & 1) of row h = e / 2 */
        if (masked) {
#pragma unroll
            for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (j0 + 8 * jb + 2 * t + (e & 1) >= w.limit[m][e >> 1]) s[m][jb][e] = -INFINITY;
        }
        /* the new max of each row over its 4 lanes, what the earlier sums are worth now */
        float base[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float mx = w.max[m][h];
#pragma unroll
            for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) mx = fmaxf(mx, fmaxf(s[m][jb][2 * h], s[m][jb][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            base[h] = mx == -INFINITY ? 0.0f : mx; /* a row that has seen no key yet: weights and alpha 0 */
            const float alpha = exp2f(w.max[m][h] - base[h]);
            w.max[m][h] = mx;
            w.sum[m][h] *= alpha;
#pragma unroll
            for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++) w.o[m][nb][2 * h] *= alpha, w.o[m][nb][2 * h + 1] *= alpha;
        }
        /* key blocks 2ks and 2ks + 1 make k-step ks of P (a0 a1 from the first, a2 a3 from the second) */
#pragma unroll
        for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) {
            const uint32_t lo = narrow_pair<T>(exp2f(s[m][jb][0] - base[0]), exp2f(s[m][jb][1] - base[0]));
            const uint32_t hi = narrow_pair<T>(exp2f(s[m][jb][2] - base[1]), exp2f(s[m][jb][3] - base[1]));
            w.sum[m][0] += pair_sum<T>(lo);
            w.sum[m][1] += pair_sum<T>(hi);
            pa[m][jb / 2][(jb & 1) * 2] = lo;
            pa[m][jb / 2][(jb & 1) * 2 + 1] = hi;
        }
    }

    /* O += P V. Matrix i of an ldmatrix.trans: keys 8 * (i % 2) + [0, 8) of the k-step, features
     * 8 * (i / 2) + [0, 8) of the pair of output blocks: registers {0, 1} are B of output block 2nb,
     * {2, 3} of output block 2nb + 1. */
    const uint32_t v_lane =
        kv + CHUNK * Cfg::STRIDE + ((lane & 7) + ((lane >> 3) & 1) * 8) * Cfg::STRIDE + (lane >> 4) * 16;
#pragma unroll
    for (int ks = 0; ks < Cfg::KEY_STEPS; ks++)
#pragma unroll
        for (int nb = 0; nb < Cfg::OUT_BLOCKS / 2; nb++) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, v_lane + ks * 16 * Cfg::STRIDE + nb * 32);
#pragma unroll
            for (int m = 0; m < TILES; m++) {
                mma16816<T>(w.o[m][2 * nb], pa[m][ks], b[0], b[1]);
                mma16816<T>(w.o[m][2 * nb + 1], pa[m][ks], b[2], b[3]);
            }
        }
}

/* Block (query tile, kv head x head pass, seq): p.tokens query tokens of a sequence with more than
 * p.decode_tokens, over keys [0, the tile's last position]. The last tiles come first. */
template <typename T, int D, q_kind Q>
__global__ void __launch_bounds__(THREADS, 2) attention_prefill_mma(mma_params p) {
    using Cfg = mma_cfg<D>;
    extern __shared__ __align__(16) unsigned char smem[];
    const int seq = blockIdx.z, q0 = p.query_start[seq], q_len = p.query_start[seq + 1] - q0;
    const int t0 = (gridDim.x - 1 - blockIdx.x) * p.tokens, pass = blockIdx.y % p.passes;
    mma_tile tl;
    tl.kv_head = blockIdx.y / p.passes;
    tl.head0 = tl.kv_head * p.group + pass * p.heads;
    tl.heads = min(p.heads, p.group - pass * p.heads);
    if (q_len <= p.decode_tokens || t0 >= q_len || tl.heads <= 0) return;
    const int n = min(p.tokens, q_len - t0);
    tl.table = p.block_tables + (size_t)seq * p.max_blocks;
    tl.token0 = q0 + t0, tl.pos0 = p.context_len[seq] - q_len + t0;
    tl.rows = n * tl.heads, tl.key_end = tl.pos0 + n;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const bool active = warp * 32 < tl.rows; /* a warp whose rows are all past tl.rows only helps load */
    const int n_chunks = (tl.key_end + CHUNK - 1) / CHUNK;
    const int first_masked = tl.pos0 / CHUNK; /* earlier chunks hold only keys < pos0, which every row sees */

    /* shared memory: the queries, then two stages of K and V */
    unsigned char *stages = smem + Cfg::Q_BYTES;
    load_queries<T, D, Q>(p, tl, smem);
    load_chunk<D>(p, tl, stages, 0);
    __pipeline_commit();

    warp_state<D> w;
    const int r0 = warp * 32 + g; /* this lane's rows: r0 + 16m + 8h of M tile m */
#pragma unroll
    for (int m = 0; m < TILES; m++) {
#pragma unroll
        for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++)
            w.o[m][nb][0] = w.o[m][nb][1] = w.o[m][nb][2] = w.o[m][nb][3] = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            /* rows past tl.rows: junk, never written */
            const int last_key = tl.pos0 + (r0 + 16 * m + 8 * h) / tl.heads + 1;
            w.max[m][h] = -INFINITY, w.sum[m][h] = 0.0f;
            w.limit[m][h] = last_key < tl.key_end ? last_key : tl.key_end;
        }
    }

    const uint32_t q_at = (uint32_t)__cvta_generic_to_shared(smem) + warp * 32 * Cfg::STRIDE;
    const uint32_t stages_at = (uint32_t)__cvta_generic_to_shared(stages);
    for (int i = 0; i < n_chunks; i++) {
        const int j0 = i * CHUNK, stage = i & 1;
        if (i + 1 < n_chunks) load_chunk<D>(p, tl, stages + (stage ^ 1) * Cfg::STAGE_BYTES, j0 + CHUNK);
        __pipeline_commit();
        __pipeline_wait_prior(1); /* this chunk's copies (and the queries') are done, the next one's may fly */
        __syncthreads();
        if (active)
#pragma unroll 1
            for (int k = 0; k < CHUNK / STEP; k++)
                attend_step<T, D, Q>(w, stages_at + stage * Cfg::STAGE_BYTES + k * STEP * Cfg::STRIDE, q_at,
                                     j0 + k * STEP, i >= first_masked, p.q_scale, lane);
        __syncthreads(); /* the stage is free for the copies that follow */
    }
    if (!active) return;

#pragma unroll
    for (int m = 0; m < TILES; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float sum = w.sum[m][h];
            sum += __shfl_xor_sync(FULL_MASK, sum, 1);
            sum += __shfl_xor_sync(FULL_MASK, sum, 2);
            const int r = r0 + 16 * m + 8 * h;
            if (r >= tl.rows) continue;
            const float f = 1.0f / sum;
            const int64_t row = query_row<D>(p, tl, r);
            if constexpr (Q == Q_F32) {
                float *dst = static_cast<float *>(p.out) + row;
#pragma unroll
                for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++)
                    *reinterpret_cast<float2 *>(dst + 8 * nb + 2 * t) =
                        make_float2(w.o[m][nb][2 * h] * f, w.o[m][nb][2 * h + 1] * f);
            } else {
                uint32_t *dst = reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(p.out) + row);
#pragma unroll
                for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++) {
                    const float a = w.o[m][nb][2 * h] * f, b = w.o[m][nb][2 * h + 1] * f;
                    dst[4 * nb + t] = Q == Q_RAW                ? narrow_pair<T>(a, b)
                                      : p.act == SL_DTYPE_BF16 ? narrow_pair<__nv_bfloat16>(a, b)
                                                               : narrow_pair<__half>(a, b);
                }
            }
        }
}

/* ---- launching ---- */

/* The shared memory a block may opt into on the current device (99 KB on sm_86 / sm_89, 227 KB on sm_90):
 * asked once per process, which drives one GPU. */
int max_block_smem() {
    static const int bytes = [] {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        return v;
    }();
    return bytes;
}

template <typename T, int D, q_kind Q>
bool launch_prefill_mma(cudaStream_t s, const mma_params &p, const sl_attn_batch *b) {
    using Cfg = mma_cfg<D>;
    if (Cfg::SMEM > max_block_smem()) return false;
    static const bool allowed = [] { /* past 48 KB of shared memory asks first, and all of it for two blocks an SM */
        if (Cfg::SMEM > 48 * 1024)
            cudaFuncSetAttribute(attention_prefill_mma<T, D, Q>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 Cfg::SMEM);
        cudaFuncSetAttribute(attention_prefill_mma<T, D, Q>, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
        return true;
    }();
    (void)allowed;
    const int tiles = (b->max_query_len + p.tokens - 1) / p.tokens;
    attention_prefill_mma<T, D, Q><<<dim3(tiles, p.n_kv_heads * p.passes, b->n_seqs), THREADS, Cfg::SMEM, s>>>(p);
    return true;
}

/* false where the head size has no instance or its block does not fit the device (attention.cu's float32
 * kernel takes the tile then). */
template <typename T, q_kind Q>
bool launch_for_head_dim(cudaStream_t s, const mma_params &p, const sl_attn_batch *b, int head_dim) {
    switch (head_dim) {
    case 64: return launch_prefill_mma<T, 64, Q>(s, p, b);
    case 80: return launch_prefill_mma<T, 80, Q>(s, p, b);
    case 96: return launch_prefill_mma<T, 96, Q>(s, p, b);
    case 128: return launch_prefill_mma<T, 128, Q>(s, p, b);
    default: return false;
    }
}

/* The instances for a cache of T by the queries' type. */
template <typename T> bool launch_for_act(cudaStream_t s, const mma_params &p, const sl_attn_batch *b, int head_dim) {
    const sl_dtype t = std::is_same_v<T, __half> ? SL_DTYPE_F16 : SL_DTYPE_BF16;
    if (p.act == t) return launch_for_head_dim<T, Q_RAW>(s, p, b, head_dim);
    if (p.act == SL_DTYPE_F32) return launch_for_head_dim<T, Q_F32>(s, p, b, head_dim);
    return launch_for_head_dim<T, Q_OTHER>(s, p, b, head_dim);
}

} /* namespace */

extern "C" int cuda_attention_prefill_mma(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv,
                                          const sl_attn_batch *b, int n_heads, float scale, sl_dtype act,
                                          int decode_tokens) {
    if (kv->dtype != SL_DTYPE_BF16 && kv->dtype != SL_DTYPE_F16) return 0;
    if (kv->head_dim != 64 && kv->head_dim != 80 && kv->head_dim != 96 && kv->head_dim != 128) return 0;
    if (b->n_seqs <= 0 || b->max_query_len <= decode_tokens) return 1; /* no sequence of prefill's */
    mma_params p;
    p.out = out, p.q = q, p.act = act;
    p.k_cache = static_cast<const unsigned char *>(kv->k), p.v_cache = static_cast<const unsigned char *>(kv->v);
    p.query_start = b->query_start, p.context_len = b->context_len, p.block_tables = b->block_tables;
    p.max_blocks = b->max_blocks, p.block_size = kv->block_size;
    p.n_kv_heads = kv->n_kv_heads, p.n_heads = n_heads, p.group = n_heads / kv->n_kv_heads;
    p.decode_tokens = decode_tokens;
    p.passes = (p.group + ROWS - 1) / ROWS; /* attention.cu's plan_heads for a tile of ROWS rows */
    p.heads = (p.group + p.passes - 1) / p.passes;
    p.tokens = ROWS / p.heads;
    p.q_scale = scale * LOG2E;
    if (kv->dtype == SL_DTYPE_BF16) return launch_for_act<__nv_bfloat16>(s, p, b, kv->head_dim);
    return launch_for_act<__half>(s, p, b, kv->head_dim);
}
