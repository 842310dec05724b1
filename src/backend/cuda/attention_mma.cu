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
 * A block is 8 warps; warp w owns rows [16w, 16w + 16), one mma's M: 128
 * rows share each chunk of keys the block copies (on an H100 a 2048-token
 * prefill of the 8B shape ran 1.03x, an 8192-token one 1.05x the speed of
 * 64-row tiles of 4 warps; up to 222 registers a thread leave one block per
 * SM). Keys come
 * in chunks of CHUNK (64) through shared memory, copied by cp.async from the
 * paged cache ([block][kv head][slot][head_dim], 16-byte pieces), in
 * `stages` stages (3 where the device lets a block have that much shared
 * memory, else 2: sm_89 allows 99 KB, 3 stages of head_dim 128 take 102): the
 * copies of chunk i + stages - 1 fly while chunk i computes, with one barrier
 * a chunk; K and V rows sit as in the
 * cache, one row per key, padded by 16 bytes: a row is an odd number of
 * 16-byte units, so the 8 rows one ldmatrix phase reads fall in 8 different
 * bank quads (no conflicts, no swizzle). Keys past the tile's range are zeros.
 *
 * Per warp, all with mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}:
 *   - Q: the warp's 16 rows x head_dim, read once from global memory, kept in
 *     registers as A fragments for the whole tile: qa[kk] covers features
 *     [16kk, 16kk + 16). Queries of the cache's type T (the activation type of
 *     a 16-bit model) go in as they are and q_scale (softmax scale * log2 e,
 *     as attention.cu) enters the exponent in float32, one fused multiply-add
 *     a score ("raw" Q); others (float32, or the other 16-bit type) are
 *     multiplied by q_scale and rounded to T.
 *   - S = Q K^T, 16 rows x 64 keys: 8 accumulators of m16n8 (keys [8jb, 8jb + 8)).
 *     K is the "col" operand B (k = feature, n = key): a key row in shared
 *     memory is exactly a column of B, so plain ldmatrix of 8 keys x 8
 *     features gives B's register (lane l: key l/4, features 2(l%4), +1).
 *   - online softmax in float32 and base 2 (the bare ex2.approx: act.cuh's
 *     exp2_approx), each row's max reduced over the 4 lanes that hold it;
 *     masked scores are -inf and weigh 0. The reference the weights are
 *     taken against moves up only when a score passes it by 2^8 (lazy
 *     rescaling, as FlashAttention-4): most chunks skip rescaling the output.
 *   - P = 2^(S - ref) (at most 2^8) rounded to T; the m16n8 accumulator layout of two
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
 * instance raises its shared-memory limit past 48 KB where needed. sm_80+. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <math.h>
#include <type_traits>

#include "backend/cuda/act.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

namespace {

constexpr int THREADS = 256; /* 8 warps */
constexpr int ROWS = 128;    /* query rows of a tile: 16 per warp */
constexpr int CHUNK = 64;    /* keys per online-softmax step */
constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float RESCALE_BITS = 8.0f; /* weights up to 2^8 before the online softmax rescales */

/* Shapes fixed by head_dim D (elements are 2 bytes). */
template <int D> struct mma_cfg {
    static constexpr int ROW_BYTES = D * 2;
    static constexpr int PIECES = ROW_BYTES / 16;     /* 16-byte pieces per key row */
    static constexpr int STRIDE = ROW_BYTES + 16;     /* a row in shared memory: an odd number of 16-byte units */
    static constexpr int FEAT_STEPS = D / 16;         /* k-steps of S = Q K^T */
    static constexpr int OUT_BLOCKS = D / 8;          /* n-blocks of O */
    static constexpr int KEY_BLOCKS = CHUNK / 8;      /* n-blocks of S */
    static constexpr int KEY_STEPS = CHUNK / 16;      /* k-steps of O += P V */
    static constexpr int STAGE_BYTES = 2 * CHUNK * STRIDE; /* K rows, then V rows */
    static constexpr int MAX_STAGES = 3;
    static constexpr int KEY_THREADS = THREADS / CHUNK;                          /* threads copying one key row */
    static constexpr int LOAD_STEPS = (PIECES + KEY_THREADS - 1) / KEY_THREADS;  /* pieces a thread copies */

    static_assert(D % 16 == 0 && D >= 64 && D <= 128, "head_dim: 64, 80, 96 or 128");
    static_assert((STRIDE / 16) % 2 == 1, "padded rows: ldmatrix phases conflict-free");
    static_assert(THREADS % CHUNK == 0, "whole threads per key row");
};

/* What every block of a launch shares. */
struct mma_params {
    void *out;                 /* [n_tokens][n_heads][head_dim] of act */
    const void *q;             /* the same */
    sl_dtype act;              /* (the kernel's Q: how queries of this type go in) */
    const unsigned char *k_cache, *v_cache;
    const int32_t *query_start, *context_len, *block_tables;
    int max_blocks, block_size, n_kv_heads, n_heads, group;
    uint32_t block_mul, block_shift; /* key / block_size as ((umulhi(key, block_mul) + key) >> block_shift) */
    size_t block_bytes;        /* a cache block: n_kv_heads * block_size rows */
    int decode_tokens;         /* sequences with at most this many query tokens are attention_decode's */
    int passes, heads, tokens; /* head plan: `passes` of `heads` heads, `tokens` query tokens per tile */
    int stages;                /* chunks in shared memory at once: 2 or 3 */
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
    size_t head_bytes;    /* the tile's KV head's first row in a cache block, in bytes */
    int kv_head, head0, heads;
    int token0, pos0;     /* the step index and position of its first query token */
    int rows, key_end;
};

/* Starts copying keys [j0, j0 + CHUNK) of the tile's KV head and their values into a stage (K rows,
 * then V rows); rows past key_end are zeroed instead. KEY_THREADS consecutive threads copy one key row,
 * each every KEY_THREADS-th 16-byte piece (together 64 contiguous bytes at a time), so a thread finds its
 * row's place in the paged cache once a chunk: the block from a multiply-high, not a division. */
template <int D>
__device__ __forceinline__ void load_chunk(const mma_params &p, const mma_tile &tl, unsigned char *stage, int j0) {
    using Cfg = mma_cfg<D>;
    const int c = threadIdx.x / Cfg::KEY_THREADS, first = threadIdx.x % Cfg::KEY_THREADS, j = j0 + c;
    unsigned char *kd = stage + c * Cfg::STRIDE + first * 16, *vd = kd + CHUNK * Cfg::STRIDE;
    constexpr int STEP = Cfg::KEY_THREADS * 16; /* bytes between a thread's pieces */
    auto mine = [first](int it) { return first + it * Cfg::KEY_THREADS < Cfg::PIECES; }; /* head_dim 80: 10 pieces */
    if (j < tl.key_end) {
        const uint32_t b = (__umulhi((uint32_t)j, p.block_mul) + (uint32_t)j) >> p.block_shift;
        const size_t at = (size_t)tl.table[b] * p.block_bytes + tl.head_bytes +
                          (unsigned)((j - (int)b * p.block_size) * Cfg::ROW_BYTES + first * 16);
        const unsigned char *ks = p.k_cache + at, *vs = p.v_cache + at;
#pragma unroll
        for (int it = 0; it < Cfg::LOAD_STEPS; it++)
            if (mine(it)) {
                __pipeline_memcpy_async(kd + it * STEP, ks + it * STEP, 16);
                __pipeline_memcpy_async(vd + it * STEP, vs + it * STEP, 16);
            }
    } else {
#pragma unroll
        for (int it = 0; it < Cfg::LOAD_STEPS; it++)
            if (mine(it)) {
                *reinterpret_cast<uint4 *>(kd + it * STEP) = make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4 *>(vd + it * STEP) = make_uint4(0, 0, 0, 0);
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

/* Elements d, d + 1 of the query row at element `row` as a word of two T: as they are (Q_RAW), or times
 * q_scale rounded to T; zeros for no row (-1). */
template <typename T, q_kind Q>
__device__ inline uint32_t query_pair(const mma_params &p, int64_t row, int d) {
    if (row < 0) return 0;
    if constexpr (Q == Q_RAW) {
        return __ldg(reinterpret_cast<const uint32_t *>(static_cast<const T *>(p.q) + row + d));
    } else {
        float2 x;
        if constexpr (Q == Q_F32)
            x = __ldg(reinterpret_cast<const float2 *>(static_cast<const float *>(p.q) + row + d));
        else
            x = widen_act_pair(__ldg(reinterpret_cast<const uint32_t *>(static_cast<const uint16_t *>(p.q) + row + d)),
                               p.act);
        return narrow_pair<T>(x.x * p.q_scale, x.y * p.q_scale);
    }
}

/* One warp's state over the tile: its rows g and g + 8 (h = 0, 1) of this lane. */
template <int D> struct warp_state {
    uint32_t qa[mma_cfg<D>::FEAT_STEPS][4]; /* Q as A fragments */
    float o[mma_cfg<D>::OUT_BLOCKS][4];     /* unnormalized output, C layout */
    float ref[2];                           /* the weights' reference (base 2), the same in the row's 4 lanes */
    float sum[2];                           /* this lane's part of the row's sum of weights */
    int limit[2];                           /* the first key the row may not see */
};

/* Scores of the warp's rows against a chunk's keys, weights, and O += P V, for chunk keys [j0, j0 + CHUNK)
 * in the stage at shared address kv (K rows at kv, V rows CHUNK rows further). With raw queries q_scale
 * multiplies the scores in the exponent (else the queries were). */
template <typename T, int D, q_kind Q>
__device__ __forceinline__ void attend_chunk(warp_state<D> &w, uint32_t kv, int j0, bool masked, float q_scale,
                                             int lane) {
    using Cfg = mma_cfg<D>;
    const int t = lane % 4;

    /* S = Q K^T. Matrix i of an ldmatrix: keys 8 * (i / 2) + [0, 8) of the pair of key blocks,
     * features 8 * (i % 2) + [0, 8) of the k-step: registers {0, 1} are B of key block 2kb,
     * {2, 3} of key block 2kb + 1. */
    float s[Cfg::KEY_BLOCKS][4];
#pragma unroll
    for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) s[jb][0] = s[jb][1] = s[jb][2] = s[jb][3] = 0.0f;
    const uint32_t k_lane = kv + ((lane & 7) + (lane >> 4) * 8) * Cfg::STRIDE + ((lane >> 3) & 1) * 16;
#pragma unroll
    for (int kb = 0; kb < Cfg::KEY_BLOCKS / 2; kb++)
#pragma unroll
        for (int kk = 0; kk < Cfg::FEAT_STEPS; kk++) {
            uint32_t b[4];
            ldmatrix_x4(b, k_lane + kb * 16 * Cfg::STRIDE + kk * 32);
            mma16816<T>(s[2 * kb], w.qa[kk], b[0], b[1]);
            mma16816<T>(s[2 * kb + 1], w.qa[kk], b[2], b[3]);
        }

    /* the causal limit: s[jb][e] is key j0 + 8jb + 2t + (e & 1) of row h = e / 2 */
    if (masked) {
#pragma unroll
        for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (j0 + 8 * jb + 2 * t + (e & 1) >= w.limit[e >> 1]) s[jb][e] = -INFINITY;
    }

    /* online softmax, rescaling lazily: each row's weights are 2^(s * scale - ref), ref the largest score
     * seen (in base-2 units) when the row's reference last moved. It moves, and the earlier sum and outputs
     * are multiplied by what they are worth at the new one, only when a score exceeds it by more than
     * RESCALE_BITS, in any row of the warp (the vote keeps the branch uniform); else weights up to
     * 2^RESCALE_BITS go in as they are (16-bit P keeps its relative precision at any size, the sums are
     * float32), and past the first chunks the multiplies over the whole output are mostly skipped. Raw
     * scores are scaled here (the order is kept: q_scale > 0). */
    const float scale = Q == Q_RAW ? q_scale : 1.0f;
    float top[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float m = -INFINITY;
#pragma unroll
        for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) m = fmaxf(m, fmaxf(s[jb][2 * h], s[jb][2 * h + 1]));
        m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, 1));
        m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, 2));
        top[h] = m * scale;
    }
    if (__any_sync(FULL_MASK, top[0] > w.ref[0] + RESCALE_BITS || top[1] > w.ref[1] + RESCALE_BITS)) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float ref = fmaxf(w.ref[h], top[h]);
            const float alpha = ref == -INFINITY ? 1.0f : exp2_approx(w.ref[h] - ref); /* 0 from -inf */
            w.ref[h] = ref;
            w.sum[h] *= alpha;
#pragma unroll
            for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++) w.o[nb][2 * h] *= alpha, w.o[nb][2 * h + 1] *= alpha;
        }
    }
    float base[2]; /* a row that has seen no key yet: every weight 0 */
#pragma unroll
    for (int h = 0; h < 2; h++) base[h] = w.ref[h] == -INFINITY ? 0.0f : w.ref[h];

    /* P as A fragments: key blocks 2ks and 2ks + 1 make k-step ks (a0 a1 from the first, a2 a3 from the second) */
    uint32_t pa[Cfg::KEY_STEPS][4];
#pragma unroll
    for (int jb = 0; jb < Cfg::KEY_BLOCKS; jb++) {
        const uint32_t lo = narrow_pair<T>(exp2_approx(fmaf(s[jb][0], scale, -base[0])),
                                           exp2_approx(fmaf(s[jb][1], scale, -base[0])));
        const uint32_t hi = narrow_pair<T>(exp2_approx(fmaf(s[jb][2], scale, -base[1])),
                                           exp2_approx(fmaf(s[jb][3], scale, -base[1])));
        w.sum[0] += pair_sum<T>(lo);
        w.sum[1] += pair_sum<T>(hi);
        pa[jb / 2][(jb & 1) * 2] = lo;
        pa[jb / 2][(jb & 1) * 2 + 1] = hi;
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
            mma16816<T>(w.o[2 * nb], pa[ks], b[0], b[1]);
            mma16816<T>(w.o[2 * nb + 1], pa[ks], b[2], b[3]);
        }
}

/* Block (query tile, kv head x head pass, seq): p.tokens query tokens of a sequence with more than
 * p.decode_tokens, over keys [0, the tile's last position]. The last tiles come first. */
template <typename T, int D, q_kind Q>
__global__ void __launch_bounds__(THREADS, 1) attention_prefill_mma(mma_params p) {
    wait_previous_kernel();
    using Cfg = mma_cfg<D>;
    extern __shared__ __align__(16) unsigned char smem[];
    const int seq = blockIdx.z, q0 = p.query_start[seq], q_len = p.query_start[seq + 1] - q0;
    const int t0 = (gridDim.x - 1 - blockIdx.x) * p.tokens, pass = blockIdx.y % p.passes;
    mma_tile tl;
    tl.kv_head = blockIdx.y / p.passes;
    tl.head_bytes = (size_t)tl.kv_head * p.block_size * Cfg::ROW_BYTES;
    tl.head0 = tl.kv_head * p.group + pass * p.heads;
    tl.heads = min(p.heads, p.group - pass * p.heads);
    if (q_len <= p.decode_tokens || t0 >= q_len || tl.heads <= 0) return;
    const int n = min(p.tokens, q_len - t0);
    tl.table = p.block_tables + (size_t)seq * p.max_blocks;
    tl.token0 = q0 + t0, tl.pos0 = p.context_len[seq] - q_len + t0;
    tl.rows = n * tl.heads, tl.key_end = tl.pos0 + n;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const bool active = warp * 16 < tl.rows; /* a warp whose rows are all past tl.rows only helps load */
    const int n_chunks = (tl.key_end + CHUNK - 1) / CHUNK;
    const int first_masked = tl.pos0 / CHUNK; /* earlier chunks hold only keys < pos0, which every row sees */

    for (int c = 0; c + 1 < p.stages; c++) { /* chunks 0 .. stages - 2, a commit group each */
        if (c < n_chunks) load_chunk<D>(p, tl, smem + c * Cfg::STAGE_BYTES, c * CHUNK);
        __pipeline_commit();
    }

    warp_state<D> w;
    const int r0 = warp * 16 + g; /* this lane's rows: r0 and r0 + 8 */
    {
        const int64_t lo = query_row<D>(p, tl, r0), hi = query_row<D>(p, tl, r0 + 8);
#pragma unroll
        for (int kk = 0; kk < Cfg::FEAT_STEPS; kk++) {
            w.qa[kk][0] = query_pair<T, Q>(p, lo, 16 * kk + 2 * t);
            w.qa[kk][1] = query_pair<T, Q>(p, hi, 16 * kk + 2 * t);
            w.qa[kk][2] = query_pair<T, Q>(p, lo, 16 * kk + 2 * t + 8);
            w.qa[kk][3] = query_pair<T, Q>(p, hi, 16 * kk + 2 * t + 8);
        }
    }
#pragma unroll
    for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++) w.o[nb][0] = w.o[nb][1] = w.o[nb][2] = w.o[nb][3] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int last_key = tl.pos0 + (r0 + 8 * h) / tl.heads + 1; /* rows past tl.rows: junk, never written */
        w.ref[h] = -INFINITY, w.sum[h] = 0.0f;
        w.limit[h] = last_key < tl.key_end ? last_key : tl.key_end;
    }

    /* Chunk i sits in stage i % stages. One barrier a chunk: past it, chunk i's copies are every thread's
     * and visible, and every warp is done with chunk i - 1, whose stage then takes chunk i + stages - 1.
     * The commit groups go one a chunk, so all but the newest stages - 2 are done when chunk i is. */
    const uint32_t smem_at = (uint32_t)__cvta_generic_to_shared(smem);
    for (int i = 0, stage = 0; i < n_chunks; i++, stage = stage + 1 == p.stages ? 0 : stage + 1) {
        if (p.stages == 3) __pipeline_wait_prior(1);
        else __pipeline_wait_prior(0);
        __syncthreads();
        if (i + p.stages - 1 < n_chunks) {
            const int freed = stage == 0 ? p.stages - 1 : stage - 1; /* chunk i - 1's: (i + stages - 1) % stages */
            load_chunk<D>(p, tl, smem + freed * Cfg::STAGE_BYTES, (i + p.stages - 1) * CHUNK);
        }
        __pipeline_commit();
        if (active)
            attend_chunk<T, D, Q>(w, smem_at + stage * Cfg::STAGE_BYTES, i * CHUNK, i >= first_masked, p.q_scale,
                                  lane);
    }
    if (!active) return;

#pragma unroll
    for (int h = 0; h < 2; h++) {
        float sum = w.sum[h];
        sum += __shfl_xor_sync(FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(FULL_MASK, sum, 2);
        const int r = r0 + 8 * h;
        if (r >= tl.rows) continue;
        const float f = 1.0f / sum;
        const int64_t row = query_row<D>(p, tl, r);
        if constexpr (Q == Q_F32) {
            float *dst = static_cast<float *>(p.out) + row;
#pragma unroll
            for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++)
                *reinterpret_cast<float2 *>(dst + 8 * nb + 2 * t) =
                    make_float2(w.o[nb][2 * h] * f, w.o[nb][2 * h + 1] * f);
        } else {
            uint32_t *dst = reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(p.out) + row);
#pragma unroll
            for (int nb = 0; nb < Cfg::OUT_BLOCKS; nb++) {
                const float a = w.o[nb][2 * h] * f, b = w.o[nb][2 * h + 1] * f;
                dst[4 * nb + t] = Q == Q_RAW                ? narrow_pair<T>(a, b)
                                  : p.act == SL_DTYPE_BF16 ? narrow_pair<__nv_bfloat16>(a, b)
                                                           : narrow_pair<__half>(a, b);
            }
        }
    }
}

/* ---- launching ---- */

template <typename T, int D, q_kind Q>
void launch_prefill_mma(cudaStream_t s, mma_params p, const sl_attn_batch *b) {
    using Cfg = mma_cfg<D>;
    static const int stages = [] { /* what the device's shared memory allows; past 48 KB asks first; once */
        const int n = Cfg::MAX_STAGES * Cfg::STAGE_BYTES <=
                              device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>() ? Cfg::MAX_STAGES : 2;
        if (n * Cfg::STAGE_BYTES > 48 * 1024)
            cudaFuncSetAttribute(attention_prefill_mma<T, D, Q>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 n * Cfg::STAGE_BYTES);
        return n;
    }();
    p.stages = stages;
    const int tiles = (b->max_query_len + p.tokens - 1) / p.tokens;
    launch(attention_prefill_mma<T, D, Q>, dim3(tiles, p.n_kv_heads * p.passes, b->n_seqs), THREADS,
           stages * Cfg::STAGE_BYTES, s, p);
}

template <typename T, q_kind Q>
bool launch_for_head_dim(cudaStream_t s, const mma_params &p, const sl_attn_batch *b, int head_dim) {
    switch (head_dim) {
    case 64: launch_prefill_mma<T, 64, Q>(s, p, b); return true;
    case 80: launch_prefill_mma<T, 80, Q>(s, p, b); return true;
    case 96: launch_prefill_mma<T, 96, Q>(s, p, b); return true;
    case 128: launch_prefill_mma<T, 128, Q>(s, p, b); return true;
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
    p.block_shift = 0; /* Granlund and Montgomery's magic number for keys < 2^31 */
    while ((1u << p.block_shift) < (uint32_t)kv->block_size) p.block_shift++;
    p.block_mul = (uint32_t)(((1ull << 32) * ((1ull << p.block_shift) - kv->block_size)) / kv->block_size + 1);
    p.block_bytes = (size_t)kv->n_kv_heads * kv->block_size * kv->head_dim * 2;
    p.n_kv_heads = kv->n_kv_heads, p.n_heads = n_heads, p.group = n_heads / kv->n_kv_heads;
    p.decode_tokens = decode_tokens;
    p.passes = (p.group + ROWS - 1) / ROWS; /* attention.cu's plan_heads for a tile of ROWS rows */
    p.heads = (p.group + p.passes - 1) / p.passes;
    p.tokens = ROWS / p.heads;
    p.q_scale = scale * LOG2E;
    if (kv->dtype == SL_DTYPE_BF16) return launch_for_act<__nv_bfloat16>(s, p, b, kv->head_dim);
    return launch_for_act<__half>(s, p, b, kv->head_dim);
}
