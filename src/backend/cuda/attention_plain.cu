/* attention_plain.cu -- causal paged attention for the head sizes the tiled
 * kernels of attention.cu are not built for (the test fixtures' 8, say).
 *
 * One warp per (query token, query head): it finds the token's sequence in
 * query_start, walks the sequence's keys one at a time through the block
 * table (its lanes splitting the head's features, the dot product summed with
 * shuffles), keeps an online softmax, and writes the normalised output. q and
 * out are of the activation type A, the cache of its own T; sums are float32.
 * The formula is attention.cu's; the speed is not, and needs not be: real
 * models' head sizes all go to the tiled kernels (cuda_attention_tiled_head_dim). */
#include "backend/cuda/act.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

#define MAX_PER_LANE 8 /* head_dim <= 256 */

__device__ static float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, typename A>
__global__ void attention_plain_kernel(A *out, const A *q, const T *k_cache, const T *v_cache,
                                       const int32_t *query_start, const int32_t *context_len,
                                       const int32_t *block_tables, int n_seqs, int max_blocks, int n_heads,
                                       int n_kv_heads, int head_dim, int block_size, float scale) {
    wait_previous_kernel();
    const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
    int lo = 0, hi = n_seqs - 1; /* the last sequence whose queries start at or before t */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (query_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    const int s = lo, q_len = query_start[s + 1] - query_start[s];
    const int pos = context_len[s] - q_len + (t - query_start[s]);
    const int kvh = h / (n_heads / n_kv_heads);
    const A *qt = q + ((int64_t)t * n_heads + h) * head_dim;
    float qv[MAX_PER_LANE], acc[MAX_PER_LANE];
    for (int i = 0; i < MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? act_load(qt + d) * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, sum = 0.0f;
    for (int j = 0; j <= pos; j++) {
        const int64_t block = block_tables[(int64_t)s * max_blocks + j / block_size];
        const int64_t row = ((block * n_kv_heads + kvh) * block_size + j % block_size) * head_dim;
        float dot = 0.0f;
        for (int i = 0; i < MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) dot += qv[i] * act_load(k_cache + row + d);
        }
        const float score = warp_sum(dot), m_new = fmaxf(m, score);
        const float alpha = expf(m - m_new), p = expf(score - m_new);
        sum = sum * alpha + p;
        for (int i = 0; i < MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * alpha + (d < head_dim ? p * act_load(v_cache + row + d) : 0.0f);
        }
        m = m_new;
    }
    A *ot = out + ((int64_t)t * n_heads + h) * head_dim;
    for (int i = 0; i < MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) act_store(ot + d, acc[i] / sum);
    }
}

int cuda_attention_tiled_head_dim(int head_dim) {
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128 ||
           head_dim == 256;
}

template <typename T>
static void launch(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                   int n_heads, float scale, sl_dtype act) {
    const dim3 grid((unsigned int)b->n_tokens, (unsigned int)n_heads);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(attention_plain_kernel<T, A>, grid, 32, 0, s, (A *)out, (const A *)q, (const T *)kv->k, (const T *)kv->v,
                                                   b->query_start, b->context_len, b->block_tables, b->n_seqs,
                                                   b->max_blocks, n_heads, kv->n_kv_heads, kv->head_dim,
                                                   kv->block_size, scale);
    });
}

void cuda_attention_plain(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                          int n_heads, float scale, sl_dtype act) {
    if (b->n_tokens <= 0) return;
    if (kv->dtype == SL_DTYPE_BF16) launch<__nv_bfloat16>(s, out, q, kv, b, n_heads, scale, act);
    else if (kv->dtype == SL_DTYPE_F16) launch<__half>(s, out, q, kv, b, n_heads, scale, act);
    else launch<float>(s, out, q, kv, b, n_heads, scale, act);
}
