/* sample.cu -- backend/sample.h's rule on the GPU: one block per logits row.
 *
 * The host reference finds the kept prefix by selection over an index array;
 * a block cannot afford a 128k-entry array per row, so it describes the kept
 * set by its cutoff instead: the weights w = e^((logit - max) / temperature)
 * are non-negative floats, whose bit patterns order as the values do, and the
 * kept ids are those whose key is above the cutoff key, or equal to it with
 * an id no later than the cutoff id (ties go by id, as on the host). Top-k
 * and top-p each find their cutoff by bisection over the key (how many, or
 * how much mass, lies at or above it), then among the ids at the cutoff key
 * by bisection over the id. Every pass recomputes w from the logits, which
 * stay in L2 while the block works on its row; nothing is written but the
 * token. Sums are in double, as on the host. A row's mask (structured
 * output) gives the ids it leaves out the weight 0, what a logit of -inf
 * gives, and keeps them out of the maximum. */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

#define SAMPLE_THREADS 1024
#define WARPS (SAMPLE_THREADS / 32)
#define KEY_ONE 0x3f800000u /* the key of w = 1, the largest weight */

/* ---- block-wide reductions (every thread gets the result) ---- */

template <typename T>
__device__ static T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ static T block_sum(T v) {
    __shared__ T part[WARPS];
    v = warp_sum(v);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < WARPS; w++) total += part[w];
    __syncthreads();
    return total;
}

__device__ static int block_max_int(int v) {
    __shared__ int part[WARPS];
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    int best = part[0];
    for (int w = 1; w < WARPS; w++) best = max(best, part[w]);
    __syncthreads();
    return best;
}

/* The largest value and its lowest index. */
__device__ static void block_argmax(float *value, int *index) {
    __shared__ float pv[WARPS];
    __shared__ int pi[WARPS];
    float v = *value;
    int i = *index;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
    }
    if (threadIdx.x % 32 == 0) pv[threadIdx.x / 32] = v, pi[threadIdx.x / 32] = i;
    __syncthreads();
    v = pv[0], i = pi[0];
    for (int w = 1; w < WARPS; w++)
        if (pv[w] > v || (pv[w] == v && pi[w] < i)) v = pv[w], i = pi[w];
    __syncthreads();
    *value = v, *index = i;
}

/* ---- one row ---- */

typedef struct row_view {
    const float *logits;
    const uint32_t *mask; /* the ids the row allows, or NULL: all */
    int vocab;
    float max, inv_t, min_p;
    uint32_t cut_key;  /* kept: key > cut_key, or key == cut_key and id <= cut_id */
    int cut_id;
} row_view;

__device__ static bool allowed(const uint32_t *mask, int i) { return !mask || (mask[i >> 5] >> (i & 31)) & 1u; }

__device__ static float weight(const row_view *r, int i) {
    return allowed(r->mask, i) ? expf((r->logits[i] - r->max) * r->inv_t) : 0.0f;
}

__device__ static bool kept(const row_view *r, uint32_t key, int i, float w) {
    return (key > r->cut_key || (key == r->cut_key && i <= r->cut_id)) && w >= r->min_p;
}

/* Over the kept ids: how many (count) or how much mass has key >= at_least. */
__device__ static double kept_at_least(const row_view *r, uint32_t at_least, bool mass) {
    double acc = 0;
    for (int i = threadIdx.x; i < r->vocab; i += SAMPLE_THREADS) {
        const float w = weight(r, i);
        const uint32_t key = __float_as_uint(w);
        if (key >= at_least && kept(r, key, i, w)) acc += mass ? (double)w : 1.0;
    }
    return block_sum(acc);
}

/* How many kept ids have key == k and id <= last. */
__device__ static int kept_ties_through(const row_view *r, uint32_t k, int last) {
    int n = 0;
    for (int i = threadIdx.x; i <= last && i < r->vocab; i += SAMPLE_THREADS) {
        const float w = weight(r, i);
        const uint32_t key = __float_as_uint(w);
        n += key == k && kept(r, key, i, w);
    }
    return block_sum(n);
}

/* Narrows the kept set to its first ids in the descending order: as many as
 * `target` counts (mass false) or the shortest prefix whose mass reaches
 * `target` (mass true). */
__device__ static void keep_prefix(row_view *r, double target, bool mass) {
    uint32_t lo = 0, hi = KEY_ONE; /* the largest key whose kept amount at or above reaches target, in [lo, hi] */
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        if (kept_at_least(r, mid, mass) >= target) lo = mid;
        else hi = mid - 1;
    }
    /* at weight 0 (ids a mask leaves out, or whose weight underflows), which is never drawn, the ids
     * kept make no difference: all stay */
    if (lo == 0) return;
    /* ties at key lo: the first ids among them, until the target is met */
    const double above = kept_at_least(r, lo + 1, mass);
    const int n_ties = kept_ties_through(r, lo, r->vocab - 1);
    const double each = mass ? (double)__uint_as_float(lo) : 1.0;
    int need = each > 0 ? (int)ceil((target - above) / each) : n_ties;
    need = need < 1 ? 1 : need > n_ties ? n_ties : need;
    if (need == n_ties) { /* every kept tie stays: the cutoff id changes only where the key does */
        if (lo != r->cut_key) r->cut_id = r->vocab - 1;
        r->cut_key = lo;
        return;
    }
    int id_lo = 0, id_hi = r->vocab - 1; /* the smallest id through which `need` ties are kept */
    while (id_lo < id_hi) {
        const int mid = id_lo + (id_hi - id_lo) / 2;
        if (kept_ties_through(r, lo, mid) >= need) id_hi = mid;
        else id_lo = mid + 1;
    }
    r->cut_key = lo;
    r->cut_id = id_lo;
}

/* The first kept id whose running mass, in ascending id order, exceeds target:
 * each thread walks a contiguous range of ids after an exclusive scan of the
 * ranges' masses. */
__device__ static int draw(const row_view *r, double target) {
    __shared__ double warp_total[WARPS];
    __shared__ int picked;
    const int per = (r->vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int begin = threadIdx.x * per, end = min(begin + per, r->vocab);
    double mine = 0;
    int last = -1; /* this range's last kept id that can be drawn */
    for (int i = begin; i < end; i++) {
        const float w = weight(r, i);
        if (kept(r, __float_as_uint(w), i, w) && w > 0) mine += w, last = i;
    }
    double incl = mine;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 1; o < 32; o <<= 1) {
        const double up = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += up;
    }
    if (lane == 31) warp_total[warp] = incl;
    if (threadIdx.x == 0) picked = INT_MAX;
    __syncthreads();
    double before = incl - mine;
    for (int w = 0; w < warp; w++) before += warp_total[w];
    if (mine > 0 && target >= before && target < before + mine) { /* rounding may let two ranges claim it */
        double acc = before;
        int mine_pick = last; /* the walk's own rounding */
        for (int i = begin; i < end; i++) {
            const float w = weight(r, i);
            if (kept(r, __float_as_uint(w), i, w) && target < (acc += w)) {
                mine_pick = i;
                break;
            }
        }
        atomicMin(&picked, mine_pick);
    }
    __syncthreads();
    if (picked != INT_MAX) return picked;
    return block_max_int(last); /* the draw fell past the end by rounding */
}

__global__ void sample_kernel(int32_t *tokens, const float *logits, const sl_sample_row *rows, const uint32_t *masks,
                              int vocab) {
    wait_previous_kernel();
    const sl_sample_row p = rows[blockIdx.x];
    row_view r = {.logits = logits + (int64_t)blockIdx.x * vocab,
                  .mask = p.mask >= 0 ? masks + (int64_t)p.mask * ((vocab + 31) / 32) : NULL,
                  .vocab = vocab};
    /* the largest allowed logit, lowest id first (a thread takes its first allowed id whatever its value) */
    float best = -INFINITY;
    int best_id = vocab; /* none */
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS)
        if (allowed(r.mask, i) && (best_id == vocab || r.logits[i] > best)) best = r.logits[i], best_id = i;
    block_argmax(&best, &best_id);
    if (best_id == vocab || p.temperature < SL_SAMPLE_GREEDY_BELOW) { /* no allowed id: -1 */
        if (threadIdx.x == 0) tokens[blockIdx.x] = best_id < vocab ? best_id : -1;
        return;
    }
    r.max = best;
    r.inv_t = 1.0f / p.temperature;
    r.min_p = 0.0f;
    r.cut_key = 0, r.cut_id = vocab - 1; /* everything kept */
    if (p.top_k > 0 && p.top_k < vocab) keep_prefix(&r, (double)p.top_k, false);
    if (p.top_p < 1.0f) keep_prefix(&r, (double)p.top_p * kept_at_least(&r, 0, true), true);
    if (p.min_p > 0.0f) r.min_p = p.min_p; /* the largest weight is 1, and always kept */
    const int tok = draw(&r, (double)p.u * kept_at_least(&r, 0, true));
    if (threadIdx.x == 0) tokens[blockIdx.x] = tok;
}

void cuda_sample(cudaStream_t s, int32_t *tokens, const float *logits, const sl_sample_row *rows,
                 const uint32_t *masks, int n_rows, int vocab) {
    if (n_rows > 0) launch(sample_kernel, n_rows, SAMPLE_THREADS, 0, s, tokens, logits, rows, masks, vocab);
}
