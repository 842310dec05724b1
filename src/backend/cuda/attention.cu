/* attention.cu -- the CUDA backend's KV cache: kv_store, and causal
 * attention of a step's queries over the paged cache.
 *
 * The layout (kernels.h): inside a block, for K and for V alike,
 *     [n_kv_heads][block_size][head_dim]   one row per token
 * so element (block, h, row, d) sits at ((block * n_kv_heads + h) * block_size
 * + row) * head_dim + d, float32, float16 or bfloat16 (rounded to nearest
 * even when stored, widened to float32 when read). One head's keys of a block
 * are one contiguous run: the attention kernels copy whole rows into shared
 * memory with 16-byte cp.async, in chunks of CHUNK keys (32; 16 for rows of
 * 512 bytes or more; 64 in attention_mma.cu), double-buffered where shared
 * memory allows.
 *
 * A thread block (4 warps) computes a tile: the query rows of one KV head of
 * one sequence, a row being one (query token, query head of the group) pair,
 * so each key and value is read once for the whole group (GQA). Queries and
 * outputs are of the activation type (float32, bfloat16 or float16: `act`,
 * a kernel argument: one branch per row, not per key). Query rows
 * sit in shared memory as float32, prescaled by scale * log2(e); scores,
 * running max and sum stay float32 (online softmax in base 2, exp2f). Warp w
 * owns rows [w * ROWS/4, (w+1) * ROWS/4): it scores them against the chunk's
 * keys (each lane a few rows x a few keys, the row's max and sum reduced by
 * shuffles), writes the weights to shared memory and adds weights x values
 * into float32 accumulators in registers (each lane a few rows x 16-byte
 * pieces of the value row; when the rows are few, lanes also split the keys
 * and are summed at the end). Keys past a row's position, or past the range
 * the tile covers, weigh exactly 0. Two kernels run this tile body:
 *
 *   attention_decode  grid (n_seqs, n_kv_heads * head passes, splits): tiles of
 *       DECODE_ROWS (8) rows, all of a sequence's query tokens at once; takes the
 *       sequences with q_len <= decode tokens (8 / heads per pass: 1 for a group
 *       of 8, 8 without GQA). Bound by reading the cache: each K/V byte is read
 *       once per step. When n_seqs * n_kv_heads leaves the GPU idle (under two
 *       blocks per SM), the context is split into `splits` ranges (flash-decoding,
 *       ranges of multiples of SPLIT_ALIGN keys, as many as fit the workspace at
 *       splits x n_seqs x decode tokens x n_heads x (head_dim + 2) floats): each
 *       writes its rows' partial (max, sum, unnormalized output) there, and
 *   attention_combine grid (n_seqs, n_heads) merges them; a sequence short
 *       enough for one range is written directly and skipped by the combine.
 *       (Merging in the block that finishes last instead, counted in at an
 *       atomic, ran batch-1 decode 1.5% slower on an H100: bench/RESULTS.md.)
 *   attention_prefill grid (query tiles, n_kv_heads * head passes, n_seqs):
 *       tiles of 64 rows (32 for head_dim 256), i.e. rows / heads-per-pass
 *       consecutive query tokens; takes the sequences with more query tokens
 *       than decode takes. Reads keys up to the tile's last position only (the
 *       causal diagonal); tiles later in a sequence, which read more keys, get
 *       the lower block indices so they start first. Launched only when
 *       max_query_len exceeds the decode tokens, and only for float32 caches
 *       and the head sizes attention_mma.cu has no tensor-core kernel for:
 *   attention_prefill_mma (attention_mma.cu) takes tiles of the same kind, of
 *       128 rows, for bfloat16 and float16 caches of head_dim 64, 80, 96 and 128,
 *       FlashAttention-2 style: Q K^T and P V on tensor cores (mma.sync), Q
 *       and the weights in the cache's 16-bit type, float32 sums.
 *
 * Each sequence of a step is computed by exactly one of decode and prefill, so
 * a step mixing a long prompt with many decodes runs both, each at its shape.
 * Query heads beyond a tile's rows (groups over 8 in decode, over 64 in
 * prefill, over 128 on tensor cores) go in several head passes. Grid limits: n_seqs <= 65535 when a
 * prefill runs (grid z), n_kv_heads * passes <= 65535.
 *
 * A row's arithmetic does not depend on the other rows of its tile, but the
 * kernels group the sums differently and the split count follows the step's
 * shape, so unlike the CPU reference a token's output is the same alone or
 * batched only to float32 rounding, not bit for bit; and where the tensor-core
 * prefill takes a token (16-bit caches), to the 16-bit rounding of its query
 * and weights (about 2^-8 relative for bfloat16, 2^-11 for float16).
 *
 * head_dim is dispatched over 16, 32, 64, 80, 96, 128 and 256 (template
 * instances, cuda_attention_tiled_head_dim); for any other size the launcher
 * enqueues nothing (the backend sends those to attention_plain.cu). Pointers
 * are 16-byte aligned (the backend's allocations; rows are multiples of 16
 * elements). The split partials in the workspace are float32 whatever the
 * activation type. rope_kv_store reads q, k and v of the activation type,
 * writes the rotated q and k back in it (rounded once, after the rotation)
 * and the rotated k, from float32, into the cache. The launchers only
 * enqueue kernels (no allocation, copy or
 * synchronization; graph-capture safe); the first launch of a head size also
 * raises its kernels' shared memory limit past 48 KB where needed, and the
 * first call caches the SM count of the current device. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <math.h>
#include <type_traits>

#include "backend/cuda/act.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

namespace {

constexpr int THREADS = 128;                 /* per attention block: 4 warps */
constexpr int WARPS = THREADS / 32;
constexpr int DECODE_ROWS = 8;               /* query rows of a decode tile */
constexpr int DECODE_SMEM = 48 * 1024;       /* decode keeps the default limit: more blocks per SM */
constexpr int DECODE_MIN_BLOCKS = 4;         /* blocks per SM that shared memory allows, for the register budget */
constexpr int PREFILL_SMEM = 72 * 1024;      /* blocks per SM: 3 on sm_90 (228 KB), 2 on sm_80, 1 on sm_89 */
constexpr int PREFILL_MIN_BLOCKS = 3;
constexpr int SPLIT_ALIGN = 64;              /* split ranges start at multiples of this many keys */
constexpr int MIN_SPLIT_KEYS = 64;           /* keys per split at least (one range of SPLIT_ALIGN): batch-1
                                                decode of the 8B shape on an H100 at 128-384 keys ran 1.04x
                                                with 64 against 256, a 4096-key context the same */
constexpr int MAX_SPLITS = 128;
constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr float LOG2E = 1.4426950408889634f;

/* ---- elements ---- */

/* The 16 bytes at u as 16 / sizeof(T) floats. */
template <typename T> __device__ inline void widen16(uint4 u, float *f) {
    if constexpr (sizeof(T) == 4) {
        f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
    } else {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 x = widen_pair<T>(w[i]);
            f[2 * i] = x.x, f[2 * i + 1] = x.y;
        }
    }
}

/* Four floats stored as four elements at p. */
template <typename T> __device__ inline void store4(T *p, float4 x) {
    if constexpr (sizeof(T) == 4)
        *reinterpret_cast<float4 *>(p) = x;
    else
        *reinterpret_cast<uint2 *>(p) = make_uint2(narrow_pair<T>(x.x, x.y), narrow_pair<T>(x.z, x.w));
}

/* N consecutive floats of shared memory, N = 1, 2 or a multiple of 4 (aligned to its vector). */
template <int N> __device__ inline void load_floats(const float *p, float *x) {
    if constexpr (N == 1) {
        x[0] = p[0];
    } else if constexpr (N == 2) {
        const float2 v = *reinterpret_cast<const float2 *>(p);
        x[0] = v.x, x[1] = v.y;
    } else {
        static_assert(N % 4 == 0, "rows per lane: 1, 2 or a multiple of 4");
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const float4 v = *reinterpret_cast<const float4 *>(p + i);
            x[i] = v.x, x[i + 1] = v.y, x[i + 2] = v.z, x[i + 3] = v.w;
        }
    }
}

template <int N> __device__ inline void store_floats(float *p, const float *x) {
    if constexpr (N == 1) {
        p[0] = x[0];
    } else if constexpr (N == 2) {
        *reinterpret_cast<float2 *>(p) = make_float2(x[0], x[1]);
    } else {
        static_assert(N % 4 == 0, "rows per lane: 1, 2 or a multiple of 4");
#pragma unroll
        for (int i = 0; i < N; i += 4) *reinterpret_cast<float4 *>(p + i) = make_float4(x[i], x[i + 1], x[i + 2], x[i + 3]);
    }
}

/* ---- rope_kv_store: RoPE of q and k, and the step's K/V into the cache ---- */

/* Block (token, group of `heads` heads): heads [0, n_heads) are q's, the next n_kv_heads k's; ROPE_LANES
 * threads a head, each rotating the pairs (i + e, i + e + head_dim / 2), e < 8, of i = 8 * lane (then
 * i + 8 * ROPE_LANES...), as load8 / store8 vectors where `vec` (else element by element). The block first
 * puts the token's cos and sin of every frequency in shared memory (one sincosf each, not one per head). A k
 * head also writes its rotated row and the token's v row to the cache. T: the cache's element type; A: the
 * activations'. */
constexpr int ROPE_LANES = 16; /* threads a head (8 pairs each: one pass up to head_dim 256) */

template <typename T, typename A>
__global__ void rope_kv_store(T *k_cache, T *v_cache, A *q, A *k, const A *v, const int32_t *pos,
                              const int32_t *slots, const float *inv_freq, int n_heads, int n_kv_heads, int head_dim,
                              int block_size, int heads, bool vec) {
    wait_previous_kernel();
    extern __shared__ float2 cos_sin[]; /* [head_dim / 2] */
    const int t = blockIdx.x, half = head_dim / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf((float)pos[t] * inv_freq[i], &sn, &cs);
        cos_sin[i] = make_float2(cs, sn);
    }
    __syncthreads();
    const int hh = blockIdx.y * heads + threadIdx.x / ROPE_LANES;
    if (hh >= n_heads + n_kv_heads) return;
    const bool is_k = hh >= n_heads;
    const int h = is_k ? hh - n_heads : hh;
    A *x = is_k ? k + ((int64_t)t * n_kv_heads + h) * head_dim : q + ((int64_t)t * n_heads + h) * head_dim;
    const A *vr = v + ((int64_t)t * n_kv_heads + h) * head_dim;
    const int slot = is_k ? slots[t] : 0;
    const int64_t at = (((int64_t)(slot / block_size) * n_kv_heads + h) * block_size + slot % block_size) * head_dim;
    for (int i = threadIdx.x % ROPE_LANES * 8; i < half; i += ROPE_LANES * 8) {
        const int count = min(8, half - i);
        float a[8], b[8];
        load_n(x + i, count, vec, a);
        load_n(x + i + half, count, vec, b);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float2 c = e < count ? cos_sin[i + e] : make_float2(0.0f, 0.0f);
            const float ra = a[e] * c.x - b[e] * c.y, rb = b[e] * c.x + a[e] * c.y;
            a[e] = ra, b[e] = rb;
        }
        store_n(x + i, count, vec, a);
        store_n(x + i + half, count, vec, b);
        if (!is_k) continue;
        store_n(k_cache + at + i, count, vec, a);
        store_n(k_cache + at + i + half, count, vec, b);
        load_n(vr + i, count, vec, a);
        load_n(vr + i + half, count, vec, b);
        store_n(v_cache + at + i, count, vec, a);
        store_n(v_cache + at + i + half, count, vec, b);
    }
}

/* ---- queries and outputs of the activation type ---- */

/* Four consecutive activations at element i of a (of type act; 8-byte aligned for 16-bit) as floats. */
__device__ inline float4 load4_act(const void *a, sl_dtype act, size_t i) {
    if (act == SL_DTYPE_F32) return __ldg(reinterpret_cast<const float4 *>(static_cast<const float *>(a) + i));
    const uint2 u = __ldg(reinterpret_cast<const uint2 *>(static_cast<const uint16_t *>(a) + i));
    const float2 lo = act == SL_DTYPE_BF16 ? widen_pair<__nv_bfloat16>(u.x) : widen_pair<__half>(u.x);
    const float2 hi = act == SL_DTYPE_BF16 ? widen_pair<__nv_bfloat16>(u.y) : widen_pair<__half>(u.y);
    return make_float4(lo.x, lo.y, hi.x, hi.y);
}

/* x stored as four activations at element i of a, rounded to nearest even where 16-bit. */
__device__ inline void store4_act(void *a, sl_dtype act, size_t i, float4 x) {
    if (act == SL_DTYPE_F32) store4(static_cast<float *>(a) + i, x);
    else if (act == SL_DTYPE_BF16) store4(static_cast<__nv_bfloat16 *>(a) + i, x);
    else store4(static_cast<__half *>(a) + i, x);
}

/* ---- the tile's shape ---- */

constexpr int pow2_at_least(int n) {
    int p = 1;
    while (p < n) p *= 2;
    return p;
}

/* Rows per lane when scoring: as many as 4 while the warp's rows x lanes still cover the chunk's keys. */
constexpr int score_rows_per_lane(int rows_per_warp, int chunk) {
    return rows_per_warp % 4 == 0 && 32 / (rows_per_warp / 4) <= chunk   ? 4
           : rows_per_warp % 2 == 0 && 32 / (rows_per_warp / 2) <= chunk ? 2
                                                                         : 1;
}

/* Everything a tile of ROWS query rows over T elements of head_dim D fixes at compile time. */
template <typename T_, int D_, int ROWS_, int SMEM_BUDGET> struct tile_cfg {
    using T = T_;
    static constexpr int D = D_, ROWS = ROWS_;
    static constexpr int VEC = 16 / (int)sizeof(T);        /* elements per 16-byte piece */
    static constexpr int ROW_BYTES = D * (int)sizeof(T);   /* one key's (or value's) row */
    static constexpr int PIECES = D / VEC;                 /* 16-byte pieces per row */
    static constexpr int CHUNK = ROW_BYTES >= 512 ? 16 : 32; /* keys per online-softmax step */
    static constexpr int KV_STRIDE = ROW_BYTES + 16;       /* a row in shared memory, padded: rows start 4 banks apart */
    static constexpr int RPW = ROWS / WARPS;               /* rows per warp */

    /* scoring: lane = (row lane, key lane); rows r0 + [0, SR), keys kl + KL * [0, SC) */
    static constexpr int SR = score_rows_per_lane(RPW, CHUNK);
    static constexpr int RL = RPW / SR, KL = 32 / RL, SC = CHUNK / KL;

    /* values: lane = (key group, row lane, piece lane); rows r0 + [0, OR), pieces pl + PL * [0, NP),
     * keys kg + KG * [0, CHUNK / KG), key groups summed at the end */
    static constexpr int PL = pow2_at_least(PIECES) < 32 ? pow2_at_least(PIECES) : 32;
    static constexpr int NP = (PIECES + PL - 1) / PL;
    static constexpr int OR = RPW <= 8 ? RPW : (RPW / (32 / PL) > 8 ? RPW / (32 / PL) : 8);
    static constexpr int OL = RPW / OR, KG = 32 / PL / OL;

    /* shared memory: [STAGES][K rows, V rows] of CHUNK rows, queries [ROWS][Q_STRIDE],
     * weights [CHUNK][P_STRIDE] (row-minor: one key's rows side by side), then alpha, max, sum [ROWS] */
    static constexpr int Q_STRIDE = D + 4, P_STRIDE = ROWS + 4;
    static constexpr int KV_BYTES = 2 * CHUNK * KV_STRIDE; /* one stage */
    static constexpr int FIXED_BYTES = (ROWS * Q_STRIDE + CHUNK * P_STRIDE + 3 * ROWS) * (int)sizeof(float);
    static constexpr int STAGES = 2 * KV_BYTES + FIXED_BYTES <= SMEM_BUDGET ? 2 : 1;
    static constexpr int SMEM = STAGES * KV_BYTES + FIXED_BYTES;

    static_assert(D % 16 == 0 && D <= 256, "head_dim: a multiple of 16 up to 256");
    static_assert(ROWS % WARPS == 0 && ROWS % 4 == 0, "rows split evenly over the warps; weight rows in float4s");
    static_assert(RL * SR == RPW && RL * KL == 32 && KL * SC == CHUNK, "scoring lanes cover rows x keys");
    static_assert(OL * OR == RPW && KG >= 1 && KG * OL * PL == 32 && CHUNK % KG == 0, "value lanes cover rows x pieces");
    static_assert(THREADS % CHUNK == 0, "loading: threads split evenly over a chunk's keys");
    static_assert(SMEM <= SMEM_BUDGET, "shared memory within budget");
};

template <typename T, int D> using decode_cfg = tile_cfg<T, D, DECODE_ROWS, DECODE_SMEM>;
template <typename T, int D> using prefill_cfg = tile_cfg<T, D, D <= 128 ? 64 : 32, PREFILL_SMEM>;

/* ---- one tile ---- */

/* What every attention block of a step shares (kernel arguments). */
struct attn_params {
    void *out;                   /* [n_tokens][n_heads][head_dim] of act */
    const void *q;               /* the same */
    sl_dtype act;
    const unsigned char *k_cache, *v_cache;
    const int32_t *query_start, *context_len, *block_tables;
    float *ws_acc;  /* partials: [splits][n_seqs][decode_tokens][n_heads][head_dim], unnormalized */
    float2 *ws_ml;  /* [splits][n_seqs][decode_tokens][n_heads] (max in base 2, sum) */
    int n_seqs, max_blocks, block_size, n_kv_heads, n_heads, group;
    int n_splits, decode_tokens; /* decode: context ranges, and the most query tokens of a sequence it takes */
    float q_scale;               /* scale * log2(e) */
};

/* How a group's query heads go into tiles: `passes` of `heads` heads, `tokens` query tokens per tile. */
struct head_plan {
    int passes, heads, tokens;
};

/* One block's work: rows r = token * heads + head of [0, rows), keys [key_begin, key_end). */
struct tile {
    const int32_t *table; /* the sequence's block table */
    int seq, kv_head, head0, heads;
    int token0, pos0;     /* the step index and position of its first query token */
    int rows, key_begin, key_end;
    int split;            /* this range's partial index, or -1: the output itself */
};

/* Keys per split range for a context of ctx keys: a multiple of SPLIT_ALIGN (the decode and combine kernels agree). */
__device__ inline int split_keys(int ctx, int n_splits) {
    const int per = (ctx + n_splits - 1) / n_splits;
    return (per + SPLIT_ALIGN - 1) / SPLIT_ALIGN * SPLIT_ALIGN;
}

__device__ inline size_t partial_slot(const attn_params &p, int split, int seq, int token, int head) {
    return (((size_t)split * p.n_seqs + seq) * p.decode_tokens + token) * p.n_heads + head;
}

/* Shared memory of a tile, carved from the dynamic allocation. */
template <class Cfg> struct tile_smem {
    unsigned char *kv; /* [STAGES][2 * CHUNK][KV_STRIDE]: K rows then V rows */
    float *q, *p, *alpha, *max, *sum;

    __device__ explicit tile_smem(unsigned char *base)
        : kv(base), q(reinterpret_cast<float *>(base + Cfg::STAGES * Cfg::KV_BYTES)), p(q + Cfg::ROWS * Cfg::Q_STRIDE),
          alpha(p + Cfg::CHUNK * Cfg::P_STRIDE), max(alpha + Cfg::ROWS), sum(max + Cfg::ROWS) {}
    __device__ unsigned char *keys(int stage) const { return kv + stage * Cfg::KV_BYTES; }
    __device__ unsigned char *values(int stage) const { return keys(stage) + Cfg::CHUNK * Cfg::KV_STRIDE; }
};

/* Starts copying keys [j0, j0 + CHUNK) of the tile's KV head (and their values) into a stage; the rows
 * past key_end are zeroed instead. THREADS / CHUNK threads share a key, each its pieces sub + that * i. */
template <class Cfg> __device__ void load_chunk(const attn_params &p, const tile &tl, const tile_smem<Cfg> &sm, int stage,
                                                int j0) {
    constexpr int PER_KEY = THREADS / Cfg::CHUNK;
    const int c = threadIdx.x / PER_KEY, sub = threadIdx.x % PER_KEY, j = j0 + c;
    unsigned char *kd = sm.keys(stage) + c * Cfg::KV_STRIDE, *vd = sm.values(stage) + c * Cfg::KV_STRIDE;
    if (j < tl.key_end) {
        const size_t block = (size_t)tl.table[j / p.block_size];
        const size_t at = ((block * p.n_kv_heads + tl.kv_head) * p.block_size + j % p.block_size) * Cfg::ROW_BYTES;
        for (int i = sub; i < Cfg::PIECES; i += PER_KEY) {
            __pipeline_memcpy_async(kd + i * 16, p.k_cache + at + i * 16, 16);
            __pipeline_memcpy_async(vd + i * 16, p.v_cache + at + i * 16, 16);
        }
    } else {
        for (int i = sub; i < Cfg::PIECES; i += PER_KEY) {
            *reinterpret_cast<uint4 *>(kd + i * 16) = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4 *>(vd + i * 16) = make_uint4(0, 0, 0, 0);
        }
    }
}

/* The tile's query rows, prescaled, into shared memory; rows past tl.rows are zero. */
template <class Cfg> __device__ void load_queries(const attn_params &p, const tile &tl, float *qs) {
    constexpr int QUADS = Cfg::D / 4;
    for (int i = threadIdx.x; i < Cfg::ROWS * QUADS; i += THREADS) {
        const int r = i / QUADS, d = i % QUADS * 4;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < tl.rows) {
            const size_t row = (size_t)(tl.token0 + r / tl.heads) * p.n_heads + tl.head0 + r % tl.heads;
            x = load4_act(p.q, p.act, row * Cfg::D + d);
            x.x *= p.q_scale, x.y *= p.q_scale, x.z *= p.q_scale, x.w *= p.q_scale;
        }
        *reinterpret_cast<float4 *>(qs + r * Cfg::Q_STRIDE + d) = x;
    }
}

/* A scoring lane's rows: running max (base 2) and sum, and the first key each may not see. */
template <class Cfg> struct row_state {
    float max[Cfg::SR], sum[Cfg::SR];
    int limit[Cfg::SR];
};

template <int LANES> __device__ inline float group_max(float x) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

template <int LANES> __device__ inline float group_sum(float x) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o /= 2) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

/* Scores of the lane's rows x keys against the chunk's keys (base 2: queries are prescaled). */
template <class Cfg>
__device__ void score_keys(const float *qs, const unsigned char *keys, int r0, int kl, float (&s)[Cfg::SR][Cfg::SC]) {
#pragma unroll
    for (int i = 0; i < Cfg::SR; i++)
#pragma unroll
        for (int jj = 0; jj < Cfg::SC; jj++) s[i][jj] = 0.0f;
#pragma unroll 4
    for (int v = 0; v < Cfg::PIECES; v++) {
        float k[Cfg::SC][Cfg::VEC];
#pragma unroll
        for (int jj = 0; jj < Cfg::SC; jj++)
            widen16<typename Cfg::T>(
                *reinterpret_cast<const uint4 *>(keys + (kl + jj * Cfg::KL) * Cfg::KV_STRIDE + v * 16), k[jj]);
#pragma unroll
        for (int i = 0; i < Cfg::SR; i++) {
            float q[Cfg::VEC];
            load_floats<Cfg::VEC>(qs + (r0 + i) * Cfg::Q_STRIDE + v * Cfg::VEC, q);
#pragma unroll
            for (int jj = 0; jj < Cfg::SC; jj++)
#pragma unroll
                for (int e = 0; e < Cfg::VEC; e++) s[i][jj] = fmaf(q[e], k[jj][e], s[i][jj]);
        }
    }
}

/* Scores the warp's rows against chunk keys [j0, j0 + CHUNK) and turns them into weights
 * 2^(s - max): updates each row's max and sum, writes the weights to sm.p and, per row,
 * what the earlier accumulators are worth now to sm.alpha. A row that has seen no key yet
 * keeps max -inf and weights against 0, so its weights and alpha are exactly 0. */
template <class Cfg>
__device__ void weigh_chunk(const tile_smem<Cfg> &sm, const unsigned char *keys, int j0, row_state<Cfg> &st, int warp,
                            int lane) {
    const int kl = lane % Cfg::KL, r0 = warp * Cfg::RPW + lane / Cfg::KL * Cfg::SR;
    float s[Cfg::SR][Cfg::SC];
    score_keys<Cfg>(sm.q, keys, r0, kl, s);
#pragma unroll
    for (int i = 0; i < Cfg::SR; i++) {
        float chunk_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < Cfg::SC; jj++) {
            if (j0 + kl + jj * Cfg::KL >= st.limit[i]) s[i][jj] = -INFINITY;
            chunk_max = fmaxf(chunk_max, s[i][jj]);
        }
        const float new_max = fmaxf(st.max[i], group_max<Cfg::KL>(chunk_max));
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        const float alpha = exp2f(st.max[i] - base);
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < Cfg::SC; jj++) {
            s[i][jj] = exp2f(s[i][jj] - base);
            sum += s[i][jj];
        }
        st.sum[i] = st.sum[i] * alpha + group_sum<Cfg::KL>(sum);
        st.max[i] = new_max;
        if (kl == 0) sm.alpha[r0 + i] = alpha;
    }
#pragma unroll
    for (int jj = 0; jj < Cfg::SC; jj++) {
        float w[Cfg::SR];
#pragma unroll
        for (int i = 0; i < Cfg::SR; i++) w[i] = s[i][jj];
        store_floats<Cfg::SR>(sm.p + (kl + jj * Cfg::KL) * Cfg::P_STRIDE + r0, w);
    }
}

/* A value lane's place: its rows r0 + [0, OR), its pieces pl + PL * [0, NP), its key group. */
template <class Cfg> struct value_lane {
    int r0, pl, kg;
    __device__ value_lane(int warp, int lane)
        : r0(warp * Cfg::RPW + lane / Cfg::PL % Cfg::OL * Cfg::OR), pl(lane % Cfg::PL), kg(lane / (Cfg::PL * Cfg::OL)) {}
    __device__ bool has_piece(int n) const { return Cfg::PIECES % Cfg::PL == 0 || pl + n * Cfg::PL < Cfg::PIECES; }
};

template <class Cfg> using accumulators = float[Cfg::OR][Cfg::NP * Cfg::VEC];

/* acc = acc * alpha + weights x values over the chunk's keys of the lane's key group. */
template <class Cfg>
__device__ void add_values(const tile_smem<Cfg> &sm, const unsigned char *values, const value_lane<Cfg> &vl,
                           accumulators<Cfg> &acc) {
    float alpha[Cfg::OR];
    load_floats<Cfg::OR>(sm.alpha + vl.r0, alpha);
#pragma unroll
    for (int o = 0; o < Cfg::OR; o++)
#pragma unroll
        for (int e = 0; e < Cfg::NP * Cfg::VEC; e++) acc[o][e] *= alpha[o];
#pragma unroll 4
    for (int it = 0; it < Cfg::CHUNK / Cfg::KG; it++) {
        const int c = vl.kg + it * Cfg::KG;
        float w[Cfg::OR];
        load_floats<Cfg::OR>(sm.p + c * Cfg::P_STRIDE + vl.r0, w);
#pragma unroll
        for (int n = 0; n < Cfg::NP; n++) {
            if (!vl.has_piece(n)) continue;
            float x[Cfg::VEC];
            widen16<typename Cfg::T>(
                *reinterpret_cast<const uint4 *>(values + c * Cfg::KV_STRIDE + (vl.pl + n * Cfg::PL) * 16), x);
#pragma unroll
            for (int o = 0; o < Cfg::OR; o++)
#pragma unroll
                for (int e = 0; e < Cfg::VEC; e++) acc[o][n * Cfg::VEC + e] = fmaf(w[o], x[e], acc[o][n * Cfg::VEC + e]);
        }
    }
}

/* Sums the key groups' accumulators and writes the warp's valid rows: normalized into out, or as a
 * partial (unnormalized, with max and sum) into the workspace. */
template <class Cfg>
__device__ void write_rows(const attn_params &p, const tile &tl, const tile_smem<Cfg> &sm, const value_lane<Cfg> &vl,
                           accumulators<Cfg> &acc) {
#pragma unroll
    for (int o = 0; o < Cfg::OR; o++)
#pragma unroll
        for (int e = 0; e < Cfg::NP * Cfg::VEC; e++)
#pragma unroll
            for (int off = Cfg::PL * Cfg::OL; off < 32; off *= 2) acc[o][e] += __shfl_xor_sync(FULL_MASK, acc[o][e], off);
    if (vl.kg != 0) return;
#pragma unroll
    for (int o = 0; o < Cfg::OR; o++) {
        const int r = vl.r0 + o, token = r / tl.heads, head = tl.head0 + r % tl.heads;
        if (r >= tl.rows) break;
        const bool to_out = tl.split < 0;
        size_t at; /* the row's first element: in out (of act), or in the float32 workspace */
        float f = 1.0f;
        if (to_out) {
            at = ((size_t)(tl.token0 + token) * p.n_heads + head) * Cfg::D;
            f = 1.0f / sm.sum[r];
        } else {
            const size_t slot = partial_slot(p, tl.split, tl.seq, token, head);
            at = slot * Cfg::D;
            if (vl.pl == 0) p.ws_ml[slot] = make_float2(sm.max[r], sm.sum[r]);
        }
#pragma unroll
        for (int n = 0; n < Cfg::NP; n++) {
            if (!vl.has_piece(n)) continue;
#pragma unroll
            for (int e = 0; e < Cfg::VEC; e += 4) {
                const float4 x = make_float4(acc[o][n * Cfg::VEC + e] * f, acc[o][n * Cfg::VEC + e + 1] * f,
                                             acc[o][n * Cfg::VEC + e + 2] * f, acc[o][n * Cfg::VEC + e + 3] * f);
                const size_t i = at + (vl.pl + n * Cfg::PL) * Cfg::VEC + e;
                if (to_out) store4_act(p.out, p.act, i, x);
                else *reinterpret_cast<float4 *>(p.ws_acc + i) = x;
            }
        }
    }
}

/* One tile: chunks of keys stream through shared memory (the next one copying while this one
 * computes when two stages fit); warps whose rows are all past tl.rows only help load. */
template <class Cfg> __device__ void attend_tile(const attn_params &p, const tile &tl) {
    extern __shared__ __align__(16) unsigned char smem[];
    const tile_smem<Cfg> sm(smem);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bool active = warp * Cfg::RPW < tl.rows;
    const int n_chunks = (tl.key_end - tl.key_begin + Cfg::CHUNK - 1) / Cfg::CHUNK;

    load_chunk<Cfg>(p, tl, sm, 0, tl.key_begin);
    __pipeline_commit();
    load_queries<Cfg>(p, tl, sm.q);
    row_state<Cfg> st;
#pragma unroll
    for (int i = 0; i < Cfg::SR; i++) {
        const int r = warp * Cfg::RPW + lane / Cfg::KL * Cfg::SR + i; /* rows past tl.rows: junk, never written */
        const int last_key = tl.pos0 + r / tl.heads + 1;
        st.max[i] = -INFINITY, st.sum[i] = 0.0f;
        st.limit[i] = last_key < tl.key_end ? last_key : tl.key_end;
    }
    const value_lane<Cfg> vl(warp, lane);
    accumulators<Cfg> acc;
#pragma unroll
    for (int o = 0; o < Cfg::OR; o++)
#pragma unroll
        for (int e = 0; e < Cfg::NP * Cfg::VEC; e++) acc[o][e] = 0.0f;

    for (int i = 0; i < n_chunks; i++) {
        const int j0 = tl.key_begin + i * Cfg::CHUNK, stage = Cfg::STAGES == 2 ? i & 1 : 0;
        if (Cfg::STAGES == 2 && i + 1 < n_chunks) load_chunk<Cfg>(p, tl, sm, stage ^ 1, j0 + Cfg::CHUNK);
        __pipeline_commit();
        __pipeline_wait_prior(Cfg::STAGES - 1); /* this chunk's copies are done, the next one's may fly */
        __syncthreads();
        if (active) {
            weigh_chunk<Cfg>(sm, sm.keys(stage), j0, st, warp, lane);
            __syncwarp(); /* a warp reads only the weights and alphas of its own rows */
            add_values<Cfg>(sm, sm.values(stage), vl, acc);
        }
        __syncthreads(); /* the stage is free for the copies that follow */
        if (Cfg::STAGES == 1 && i + 1 < n_chunks) load_chunk<Cfg>(p, tl, sm, 0, j0 + Cfg::CHUNK);
    }
    if (!active) return;
    if (lane % Cfg::KL == 0)
#pragma unroll
        for (int i = 0; i < Cfg::SR; i++) {
            const int r = warp * Cfg::RPW + lane / Cfg::KL * Cfg::SR + i;
            sm.max[r] = st.max[i], sm.sum[r] = st.sum[i];
        }
    __syncwarp();
    write_rows<Cfg>(p, tl, sm, vl, acc);
}

/* The heads of head pass `pass` of KV head kv_head; false when the pass is empty. */
__device__ inline bool tile_heads(const attn_params &p, const head_plan &hp, int y, tile &tl) {
    const int pass = y % hp.passes;
    tl.kv_head = y / hp.passes;
    tl.head0 = tl.kv_head * p.group + pass * hp.heads;
    tl.heads = min(hp.heads, p.group - pass * hp.heads);
    return tl.heads > 0;
}

/* ---- the kernels ---- */

/* Block (seq, kv head x head pass, split): all query tokens of a sequence with q_len <= decode_tokens,
 * over keys of its context range `split`. */
template <typename T, int D>
__global__ void __launch_bounds__(THREADS, DECODE_MIN_BLOCKS) attention_decode(attn_params p, head_plan hp) {
    wait_previous_kernel();
    const int seq = blockIdx.x, q0 = p.query_start[seq], q_len = p.query_start[seq + 1] - q0;
    if (q_len < 1 || q_len > p.decode_tokens) return;
    const int ctx = p.context_len[seq], per_split = split_keys(ctx, p.n_splits);
    tile tl;
    tl.key_begin = blockIdx.z * per_split;
    if (tl.key_begin >= ctx || !tile_heads(p, hp, blockIdx.y, tl)) return;
    tl.table = p.block_tables + (size_t)seq * p.max_blocks;
    tl.seq = seq, tl.token0 = q0, tl.pos0 = ctx - q_len, tl.rows = q_len * tl.heads;
    tl.key_end = min(tl.key_begin + per_split, ctx);
    tl.split = per_split >= ctx ? -1 : (int)blockIdx.z;
    attend_tile<decode_cfg<T, D>>(p, tl);
}

/* Block (query tile, kv head x head pass, seq): hp.tokens query tokens of a sequence with more than
 * p.decode_tokens, over keys [0, the tile's last position]. The last tiles come first. */
template <typename T, int D>
__global__ void __launch_bounds__(THREADS, PREFILL_MIN_BLOCKS) attention_prefill(attn_params p, head_plan hp) {
    wait_previous_kernel();
    const int seq = blockIdx.z, q0 = p.query_start[seq], q_len = p.query_start[seq + 1] - q0;
    const int t0 = (gridDim.x - 1 - blockIdx.x) * hp.tokens;
    tile tl;
    if (q_len <= p.decode_tokens || t0 >= q_len || !tile_heads(p, hp, blockIdx.y, tl)) return;
    const int n = min(hp.tokens, q_len - t0);
    tl.table = p.block_tables + (size_t)seq * p.max_blocks;
    tl.seq = seq, tl.token0 = q0 + t0, tl.pos0 = p.context_len[seq] - q_len + t0, tl.rows = n * tl.heads;
    tl.key_begin = 0, tl.key_end = tl.pos0 + n, tl.split = -1;
    attend_tile<prefill_cfg<T, D>>(p, tl);
}

/* Block (seq, head), a thread per 4 features: merges the partials of the split decode sequences,
 * out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i, M the largest max (finite: range 0 holds key 0). */
__global__ void attention_combine(attn_params p, int head_dim) {
    wait_previous_kernel();
    const int seq = blockIdx.x, head = blockIdx.y, d = threadIdx.x * 4;
    const int q0 = p.query_start[seq], q_len = p.query_start[seq + 1] - q0;
    if (q_len < 1 || q_len > p.decode_tokens || d >= head_dim) return;
    const int ctx = p.context_len[seq], per_split = split_keys(ctx, p.n_splits);
    if (per_split >= ctx) return; /* one range: written by attention_decode */
    const int used = (ctx + per_split - 1) / per_split;
    for (int t = 0; t < q_len; t++) {
        float m = -INFINITY;
        for (int i = 0; i < used; i++) m = fmaxf(m, p.ws_ml[partial_slot(p, i, seq, t, head)].x);
        float sum = 0.0f;
        float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int i = 0; i < used; i++) {
            const size_t slot = partial_slot(p, i, seq, t, head);
            const float2 ml = p.ws_ml[slot];
            const float w = exp2f(ml.x - m);
            const float4 a = *reinterpret_cast<const float4 *>(p.ws_acc + slot * head_dim + d);
            sum += w * ml.y;
            o.x += w * a.x, o.y += w * a.y, o.z += w * a.z, o.w += w * a.w;
        }
        const float f = 1.0f / sum;
        store4_act(p.out, p.act, ((size_t)(q0 + t) * p.n_heads + head) * head_dim + d,
                   make_float4(o.x * f, o.y * f, o.z * f, o.w * f));
    }
}

/* ---- launching ---- */

/* The launcher's arguments. */
struct attention_call {
    cudaStream_t stream;
    void *out;
    const void *q;
    const sl_kv_cache *kv;
    const sl_attn_batch *b;
    int n_heads;
    float scale;
    sl_dtype act;
    void *workspace;
    size_t workspace_bytes;
};

/* The current device's SM count (1 if it cannot be read). */
int sm_count() {
    const int n = device_attribute<cudaDevAttrMultiProcessorCount>();
    return n > 0 ? n : 1;
}

head_plan plan_heads(int group, int rows) {
    head_plan h;
    h.passes = (group + rows - 1) / rows;
    h.heads = (group + h.passes - 1) / h.passes;
    h.tokens = rows / h.heads;
    return h;
}

/* Context ranges per decode sequence: enough blocks for about 4 per SM when the step has fewer than
 * 2 per SM, at least MIN_SPLIT_KEYS keys each in the longest context, and partials that fit the
 * workspace. Depends on host values only (graph replays keep it; any context length stays correct). */
int choose_splits(const attention_call &c, const head_plan &dh) {
    const int64_t blocks = (int64_t)c.b->n_seqs * c.kv->n_kv_heads * dh.passes, sms = sm_count();
    if (blocks >= 2 * sms) return 1;
    const int64_t want = (4 * sms + blocks - 1) / blocks;
    const int64_t by_len = c.b->max_context_len / MIN_SPLIT_KEYS;
    const size_t per_split =
        (size_t)c.b->n_seqs * dh.tokens * c.n_heads * (size_t)(c.kv->head_dim + 2) * sizeof(float);
    const int64_t by_space = c.workspace ? (int64_t)(c.workspace_bytes / per_split) : 0;
    int64_t n = want < by_len ? want : by_len;
    if (n > by_space) n = by_space;
    if (n > MAX_SPLITS) n = MAX_SPLITS;
    return n > 1 ? (int)n : 1;
}

/* Lets both kernels of a head size use their shared memory (past 48 KB asks first); once per instance. */
template <typename T, int D> void allow_shared_memory() {
    static const bool done = [] {
        if (decode_cfg<T, D>::SMEM > 48 * 1024)
            cudaFuncSetAttribute(attention_decode<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 decode_cfg<T, D>::SMEM);
        if (prefill_cfg<T, D>::SMEM > 48 * 1024)
            cudaFuncSetAttribute(attention_prefill<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 prefill_cfg<T, D>::SMEM);
        return true;
    }();
    (void)done;
}

template <typename T, int D> void launch_attention(const attention_call &c) {
    const sl_attn_batch *b = c.b;
    const int n_kv = c.kv->n_kv_heads, group = c.n_heads / n_kv;
    const head_plan dh = plan_heads(group, decode_cfg<T, D>::ROWS), ph = plan_heads(group, prefill_cfg<T, D>::ROWS);
    attn_params p;
    p.out = c.out, p.q = c.q, p.act = c.act;
    p.k_cache = static_cast<const unsigned char *>(c.kv->k), p.v_cache = static_cast<const unsigned char *>(c.kv->v);
    p.query_start = b->query_start, p.context_len = b->context_len, p.block_tables = b->block_tables;
    p.n_seqs = b->n_seqs, p.max_blocks = b->max_blocks, p.block_size = c.kv->block_size;
    p.n_kv_heads = n_kv, p.n_heads = c.n_heads, p.group = group;
    p.n_splits = choose_splits(c, dh), p.decode_tokens = dh.tokens;
    p.ws_acc = static_cast<float *>(c.workspace);
    p.ws_ml = p.n_splits > 1 ? reinterpret_cast<float2 *>(p.ws_acc + (size_t)p.n_splits * b->n_seqs * dh.tokens *
                                                                          c.n_heads * D)
                             : nullptr;
    p.q_scale = c.scale * LOG2E;
    allow_shared_memory<T, D>();

    launch(attention_decode<T, D>, dim3(b->n_seqs, n_kv * dh.passes, p.n_splits), THREADS, decode_cfg<T, D>::SMEM,
           c.stream, p, dh);
    if (p.n_splits > 1) launch(attention_combine, dim3(b->n_seqs, c.n_heads), D / 4, 0, c.stream, p, D);
    if (b->max_query_len > dh.tokens &&
        (sizeof(T) != 2 ||
         !cuda_attention_prefill_mma(c.stream, c.out, c.q, c.kv, b, c.n_heads, c.scale, c.act, dh.tokens))) {
        const int tiles = (b->max_query_len + ph.tokens - 1) / ph.tokens;
        launch(attention_prefill<T, D>, dim3(tiles, n_kv * ph.passes, b->n_seqs), THREADS, prefill_cfg<T, D>::SMEM,
               c.stream, p, ph);
    }
}

/* head_dim dispatch; other sizes are not instantiated (see the top of the file). */
template <typename T> void launch_for_head_dim(const attention_call &c) {
    switch (c.kv->head_dim) {
    case 16: launch_attention<T, 16>(c); break;
    case 32: launch_attention<T, 32>(c); break;
    case 64: launch_attention<T, 64>(c); break;
    case 80: launch_attention<T, 80>(c); break;
    case 96: launch_attention<T, 96>(c); break;
    case 128: launch_attention<T, 128>(c); break;
    case 256: launch_attention<T, 256>(c); break;
    default: break;
    }
}

template <typename T>
void launch_rope_kv_store(cudaStream_t s, void *q, void *k, const void *v, const sl_kv_cache *kv, const int32_t *pos,
                          const int32_t *slots, const float *inv_freq, int n_tokens, int n_heads, sl_dtype act) {
    const int heads = 128 / ROPE_LANES, groups = (n_heads + kv->n_kv_heads + heads - 1) / heads;
    /* vectors of 8 where every row and both halves start 16-byte aligned: head_dim a multiple of 16 */
    const bool vec = kv->head_dim % 16 == 0 && act_aligned(q, k, v) && act_aligned(kv->k, kv->v);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(rope_kv_store<T, A>, dim3(n_tokens, groups), heads * ROPE_LANES, sizeof(float2) * (kv->head_dim / 2), s,
            static_cast<T *>(kv->k), static_cast<T *>(kv->v), static_cast<A *>(q), static_cast<A *>(k),
            static_cast<const A *>(v), pos, slots, inv_freq, n_heads, kv->n_kv_heads, kv->head_dim, kv->block_size,
            heads, vec);
    });
}

} /* namespace */

extern "C" void cuda_rope_kv_store(cudaStream_t s, void *q, void *k, const void *v, const sl_kv_cache *kv,
                                   const int32_t *pos, const int32_t *slots, const float *inv_freq, int n_tokens,
                                   int n_heads, sl_dtype act) {
    if (n_tokens <= 0) return;
    switch (kv->dtype) {
    case SL_DTYPE_F16:
        launch_rope_kv_store<__half>(s, q, k, v, kv, pos, slots, inv_freq, n_tokens, n_heads, act);
        break;
    case SL_DTYPE_BF16:
        launch_rope_kv_store<__nv_bfloat16>(s, q, k, v, kv, pos, slots, inv_freq, n_tokens, n_heads, act);
        break;
    default: launch_rope_kv_store<float>(s, q, k, v, kv, pos, slots, inv_freq, n_tokens, n_heads, act); break;
    }
}

extern "C" void cuda_attention(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv,
                               const sl_attn_batch *b, int n_heads, float scale, sl_dtype act, void *workspace,
                               size_t workspace_bytes) {
    if (b->n_seqs <= 0 || b->n_tokens <= 0) return;
    const attention_call c = {s, out, q, kv, b, n_heads, scale, act, workspace, workspace_bytes};
    switch (kv->dtype) {
    case SL_DTYPE_F16: launch_for_head_dim<__half>(c); break;
    case SL_DTYPE_BF16: launch_for_head_dim<__nv_bfloat16>(c); break;
    default: launch_for_head_dim<float>(c); break;
    }
}
