/* gemv.cu -- few-token matmuls over 16-bit weights, bound by reading them once.
 *
 * A decode step multiplies a handful of activation rows by every weight of
 * the model: the weights' bytes are the whole cost, and cuBLAS's GEMM tiles
 * read them at about half the memory's speed at one token. Here one warp owns
 * one weight row: its lanes stream the row in 16-byte pieces (8 weights), four
 * pieces in flight per lane, multiply them by each of the n tokens' inputs
 * (in the activation type, float32, bfloat16 or float16, read through the
 * cache 8 at a time and rounded to the weights' type first where they are of
 * another, so the result is the one the GEMM path gives), and sum over the
 * warp with shuffles in float32. Lane 0 writes the row's n outputs, rounded to
 * the activation type or float32 where the projection asks (the LM head's
 * logits). The inputs are a few KB re-read from L1 by every warp; the weights
 * are the traffic. The projections of one input (q/k/v, gate/up) are one
 * launch: the grid runs over their rows end to end. (The SwiGLU after
 * gate/up inside this kernel, a pair of warps a row, ran the decode step
 * 0.7-2.6% slower on an H100 than this kernel and elementwise.cu's: see
 * bench/RESULTS.md.) A warp asks for its first weights before it waits for
 * the kernel before it (launch.cuh). */
#include <type_traits>

#include "backend/cuda/act.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

#define WARPS 8     /* rows per block */
#define UNROLL 4    /* 16-byte loads in flight per lane */

typedef struct gemv_args {
    int n_proj;
    int64_t cols;
    const void *x;                  /* [n][cols] of the activation type */
    void *out[SL_MAX_PROJ];         /* [n][rows] of the activation type, or float32 where f32_out */
    int f32_out[SL_MAX_PROJ];
    const void *w[SL_MAX_PROJ];
    const float *bias[SL_MAX_PROJ];
    int64_t rows[SL_MAX_PROJ];
    int64_t row_end[SL_MAX_PROJ];   /* rows of projections 0..p, end to end */
} gemv_args;

__device__ static float rounded(float v, __nv_bfloat16) { return __bfloat162float(__float2bfloat16_rn(v)); }
__device__ static float rounded(float v, __half) { return __half2float(__float2half_rn(v)); }

/* The 8 16-bit values of a 16-byte piece (weights, or 16-bit inputs) as floats. */
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

/* The 8 inputs at p (16-byte aligned) as floats, rounded to the weights' type T unless they are of it. */
template <typename T, typename A> __device__ static void inputs8(const A *p, float *x) {
    if constexpr (std::is_same_v<A, float>) {
        const float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    } else {
        unpack8(__ldg((const uint4 *)p), A(), x);
    }
    if constexpr (!std::is_same_v<A, T>)
        for (int i = 0; i < 8; i++) x[i] = rounded(x[i], T());
}

/* acc[t] += w . x[t][c..c+8) for each token t. */
template <int N, typename T, typename A>
__device__ static void dot8(float (&acc)[N], const float *w, const A *x, int64_t cols, int64_t c) {
    for (int t = 0; t < N; t++) {
        float xs[8];
        inputs8<T>(x + t * cols + c, xs);
        for (int i = 0; i < 8; i++) acc[t] = fmaf(w[i], xs[i], acc[t]);
    }
}

template <int N, typename T, typename A>
__global__ void __launch_bounds__(WARPS * 32) gemv_kernel(gemv_args a) {
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= a.row_end[a.n_proj - 1]) return; /* a warp past the last row touches no memory */
    int p = 0;
    while (row >= a.row_end[p]) p++;
    const int64_t r = row - (a.row_end[p] - a.rows[p]);
    const uint4 *wrow = (const uint4 *)((const T *)a.w[p] + r * a.cols);
    const int64_t pieces = a.cols / 8;
    const A *x = (const A *)a.x;
    float acc[N];
    for (int t = 0; t < N; t++) acc[t] = 0.0f;
    /* The first pieces of the row are asked for before waiting for the kernel before this one (launch.cuh):
     * no kernel writes weights, so they fly while that one finishes; the inputs come after the wait. */
    uint4 piece[UNROLL];
    if (lane + 32 * (UNROLL - 1) < pieces)
        for (int u = 0; u < UNROLL; u++) piece[u] = __ldg(wrow + lane + 32 * u);
    wait_previous_kernel();
    int64_t i = lane;
    for (; i + 32 * (UNROLL - 1) < pieces; i += 32 * UNROLL) {
        if (i != lane)
            for (int u = 0; u < UNROLL; u++) piece[u] = __ldg(wrow + i + 32 * u);
        for (int u = 0; u < UNROLL; u++) {
            float w[8];
            unpack8(piece[u], T(), w);
            dot8<N, T>(acc, w, x, a.cols, (i + 32 * u) * 8);
        }
    }
    for (; i < pieces; i += 32) {
        float w[8];
        unpack8(__ldg(wrow + i), T(), w);
        dot8<N, T>(acc, w, x, a.cols, i * 8);
    }
    for (int t = 0; t < N; t++)
        for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
    if (lane != 0) return;
    const float b = a.bias[p] ? a.bias[p][r] : 0.0f;
    if (a.f32_out[p])
        for (int t = 0; t < N; t++) ((float *)a.out[p])[t * a.rows[p] + r] = acc[t] + b;
    else
        for (int t = 0; t < N; t++) act_store((A *)a.out[p] + t * a.rows[p] + r, acc[t] + b);
}

template <typename T, typename A>
static void launch_gemv(cudaStream_t s, const gemv_args *a, int n) {
    const unsigned int grid = (unsigned int)((a->row_end[a->n_proj - 1] + WARPS - 1) / WARPS);
    switch (n) {
    case 1: launch(gemv_kernel<1, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 2: launch(gemv_kernel<2, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 3: launch(gemv_kernel<3, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 4: launch(gemv_kernel<4, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 5: launch(gemv_kernel<5, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 6: launch(gemv_kernel<6, T, A>, grid, WARPS * 32, 0, s, *a); break;
    case 7: launch(gemv_kernel<7, T, A>, grid, WARPS * 32, 0, s, *a); break;
    default: launch(gemv_kernel<8, T, A>, grid, WARPS * 32, 0, s, *a); break;
    }
}

void cuda_gemv(cudaStream_t s, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act) {
    gemv_args a;
    a.n_proj = n_proj;
    a.cols = proj[0].w->cols;
    a.x = x;
    int64_t end = 0;
    for (int p = 0; p < n_proj; p++) {
        a.out[p] = proj[p].out;
        a.f32_out[p] = proj[p].f32_out;
        a.w[p] = proj[p].w->data;
        a.bias[p] = proj[p].bias;
        a.rows[p] = proj[p].w->rows;
        a.row_end[p] = end += proj[p].w->rows;
    }
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        if (proj[0].w->dtype == SL_DTYPE_BF16) launch_gemv<__nv_bfloat16, A>(s, &a, n);
        else launch_gemv<__half, A>(s, &a, n);
    });
}
