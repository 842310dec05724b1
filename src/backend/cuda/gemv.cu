/* gemv.cu -- few-token matmuls over 16-bit weights, bound by reading them once.
 *
 * A decode step multiplies a handful of activation rows by every weight of
 * the model: the weights' bytes are the whole cost, and cuBLAS's GEMM tiles
 * read them at about half the memory's speed at one token. Here one warp owns
 * one weight row: its lanes stream the row in 16-byte pieces (8 weights), four
 * pieces in flight per lane, multiply them by each of the n tokens' inputs
 * (float32 read through the cache, rounded to the weights' type first so the
 * result is the one the GEMM path gives), and sum over the warp with shuffles.
 * The projections of one input (q/k/v, gate/up) are one launch: the grid runs
 * over their rows end to end. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/kernels.h"

#define WARPS 8     /* rows per block */
#define UNROLL 4    /* 16-byte loads in flight per lane */

typedef struct gemv_args {
    int n_proj;
    int64_t cols;
    const float *x;
    float *out[SL_MAX_PROJ];
    const void *w[SL_MAX_PROJ];
    const float *bias[SL_MAX_PROJ];
    int64_t rows[SL_MAX_PROJ];
    int64_t row_end[SL_MAX_PROJ];   /* rows of projections 0..p, end to end */
} gemv_args;

__device__ static float rounded(float v, __nv_bfloat16) { return __bfloat162float(__float2bfloat16_rn(v)); }
__device__ static float rounded(float v, __half) { return __half2float(__float2half_rn(v)); }

/* The 8 weights of a 16-byte piece as floats. */
__device__ static void unpack8(uint4 p, __nv_bfloat16, float *w) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&p;
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        w[2 * i] = f.x;
        w[2 * i + 1] = f.y;
    }
}
__device__ static void unpack8(uint4 p, __half, float *w) {
    const __half2 *h = (const __half2 *)&p;
    for (int i = 0; i < 4; i++) {
        float2 f = __half22float2(h[i]);
        w[2 * i] = f.x;
        w[2 * i + 1] = f.y;
    }
}

/* acc[t] += w . x[t][c..c+8) for each token t. */
template <int N, typename T>
__device__ static void dot8(float (&acc)[N], const float *w, const float *x, int64_t cols, int64_t c) {
    for (int t = 0; t < N; t++) {
        const float4 *xp = (const float4 *)(x + t * cols + c);
        const float4 a = __ldg(xp), b = __ldg(xp + 1);
        const float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        for (int i = 0; i < 8; i++) acc[t] = fmaf(w[i], rounded(xs[i], T()), acc[t]);
    }
}

template <int N, typename T>
__global__ void __launch_bounds__(WARPS * 32) gemv_kernel(gemv_args a) {
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.row_end[a.n_proj - 1]) return;
    int p = 0;
    while (row >= a.row_end[p]) p++;
    const int64_t r = row - (a.row_end[p] - a.rows[p]);
    const uint4 *wrow = (const uint4 *)((const T *)a.w[p] + r * a.cols);
    const int64_t pieces = a.cols / 8;
    float acc[N];
    for (int t = 0; t < N; t++) acc[t] = 0.0f;
    int64_t i = lane;
    for (; i + 32 * (UNROLL - 1) < pieces; i += 32 * UNROLL) {
        uint4 piece[UNROLL];
        for (int u = 0; u < UNROLL; u++) piece[u] = __ldg(wrow + i + 32 * u);
        for (int u = 0; u < UNROLL; u++) {
            float w[8];
            unpack8(piece[u], T(), w);
            dot8<N, T>(acc, w, a.x, a.cols, (i + 32 * u) * 8);
        }
    }
    for (; i < pieces; i += 32) {
        float w[8];
        unpack8(__ldg(wrow + i), T(), w);
        dot8<N, T>(acc, w, a.x, a.cols, i * 8);
    }
    for (int t = 0; t < N; t++)
        for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
    if (lane != 0) return;
    const float b = a.bias[p] ? a.bias[p][r] : 0.0f;
    for (int t = 0; t < N; t++) a.out[p][t * a.rows[p] + r] = acc[t] + b;
}

template <typename T>
static void launch(cudaStream_t s, const gemv_args *a, int n) {
    const unsigned int grid = (unsigned int)((a->row_end[a->n_proj - 1] + WARPS - 1) / WARPS);
    switch (n) {
    case 1: gemv_kernel<1, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 2: gemv_kernel<2, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 3: gemv_kernel<3, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 4: gemv_kernel<4, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 5: gemv_kernel<5, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 6: gemv_kernel<6, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    case 7: gemv_kernel<7, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    default: gemv_kernel<8, T><<<grid, WARPS * 32, 0, s>>>(*a); break;
    }
}

void cuda_gemv(cudaStream_t s, const sl_proj *proj, int n_proj, const float *x, int n) {
    gemv_args a;
    a.n_proj = n_proj;
    a.cols = proj[0].w->cols;
    a.x = x;
    int64_t end = 0;
    for (int p = 0; p < n_proj; p++) {
        a.out[p] = proj[p].out;
        a.w[p] = proj[p].w->data;
        a.bias[p] = proj[p].bias;
        a.rows[p] = proj[p].w->rows;
        a.row_end[p] = end += proj[p].w->rows;
    }
    if (proj[0].w->dtype == SL_DTYPE_BF16) launch<__nv_bfloat16>(s, &a, n);
    else launch<__half>(s, &a, n);
}
