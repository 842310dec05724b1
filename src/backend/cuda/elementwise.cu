/* elementwise.cu -- the CUDA backend's row-wise and elementwise kernels.
 *
 * Each mirrors the CPU reference of the same name (src/backend/cpu/elementwise.c)
 * and computes the same formula in float32: embed, rmsnorm, add_rmsnorm, swiglu,
 * add, gather_rows; cast and add_bias serve the matmul (matmul.c). Rows are one
 * block each where a row needs a reduction (rmsnorm); the rest are flat grids
 * of 256 threads. Nothing here allocates or waits. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/kernels.h"

#define THREADS 256

static unsigned int n_blocks(int64_t n_elems) { return (unsigned int)((n_elems + THREADS - 1) / THREADS); }

__device__ static float to_float(float v) { return v; }
__device__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ static float to_float(__half v) { return __half2float(v); }

/* ---- embedding ---- */

template <typename T>
__global__ void embed_kernel(float *out, const T *table, int64_t table_rows, int64_t dim, const int32_t *ids,
                             int64_t row_offset) {
    const int t = blockIdx.x;
    const int64_t r = (int64_t)ids[t] - row_offset;
    float *o = out + (int64_t)t * dim;
    const bool here = r >= 0 && r < table_rows;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = here ? to_float(table[r * dim + i]) : 0.0f;
}

void cuda_embed(cudaStream_t s, float *out, const void *table, sl_dtype dtype, int64_t table_rows, int64_t dim,
                const int32_t *ids, int n_tokens, int64_t row_offset) {
    if (n_tokens <= 0) return;
    if (dtype == SL_DTYPE_BF16)
        embed_kernel<<<n_tokens, THREADS, 0, s>>>(out, (const __nv_bfloat16 *)table, table_rows, dim, ids, row_offset);
    else if (dtype == SL_DTYPE_F16)
        embed_kernel<<<n_tokens, THREADS, 0, s>>>(out, (const __half *)table, table_rows, dim, ids, row_offset);
    else
        embed_kernel<<<n_tokens, THREADS, 0, s>>>(out, (const float *)table, table_rows, dim, ids, row_offset);
}

/* ---- RMSNorm ---- */

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024). */
__device__ static float block_sum(float v) {
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < n_warps ? warp_sums[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void rmsnorm_kernel(float *out, const float *x, const float *weight, int dim, float eps) {
    const float *xt = x + (int64_t)blockIdx.x * dim;
    float *ot = out + (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xt[i] * xt[i];
    const float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ot[i] = weight[i] * (xt[i] * inv);
}

static int rmsnorm_threads(int dim) { return dim >= 4096 ? 1024 : dim >= 1024 ? 512 : 128; }

void cuda_rmsnorm(cudaStream_t s, float *out, const float *x, const float *weight, int n_tokens, int dim, float eps) {
    if (n_tokens <= 0) return;
    rmsnorm_kernel<<<n_tokens, rmsnorm_threads(dim), 0, s>>>(out, x, weight, dim, eps);
}

/* x += y, then the norm: each thread reads y[i] before it writes out[i], so out may be y. */
__global__ void add_rmsnorm_kernel(float *out, float *x, const float *y, const float *weight, int dim, float eps) {
    const int64_t row = (int64_t)blockIdx.x * dim;
    float *xt = x + row, *ot = out + row;
    const float *yt = y + row;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xt[i] + yt[i];
        xt[i] = v;
        ss += v * v;
    }
    const float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ot[i] = weight[i] * (xt[i] * inv);
}

void cuda_add_rmsnorm(cudaStream_t s, float *out, float *x, const float *y, const float *weight, int n_tokens, int dim,
                      float eps) {
    if (n_tokens <= 0) return;
    add_rmsnorm_kernel<<<n_tokens, rmsnorm_threads(dim), 0, s>>>(out, x, y, weight, dim, eps);
}

/* ---- flat loops ---- */

__global__ void swiglu_kernel(float *out, const float *gate, const float *up, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cuda_swiglu(cudaStream_t s, float *out, const float *gate, const float *up, int64_t n_elems) {
    if (n_elems > 0) swiglu_kernel<<<n_blocks(n_elems), THREADS, 0, s>>>(out, gate, up, n_elems);
}

__global__ void add_kernel(float *x, const float *y, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

void cuda_add(cudaStream_t s, float *x, const float *y, int64_t n_elems) {
    if (n_elems > 0) add_kernel<<<n_blocks(n_elems), THREADS, 0, s>>>(x, y, n_elems);
}

__global__ void gather_rows_kernel(float *out, const float *x, const int32_t *rows, int dim) {
    const float *src = x + (int64_t)rows[blockIdx.x] * dim;
    float *dst = out + (int64_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

void cuda_gather_rows(cudaStream_t s, float *out, const float *x, const int32_t *rows, int n_rows, int dim) {
    if (n_rows > 0) gather_rows_kernel<<<n_rows, THREADS, 0, s>>>(out, x, rows, dim);
}

template <typename T>
__global__ void cast_kernel(T *out, const float *x, int64_t n);
template <>
__global__ void cast_kernel(__nv_bfloat16 *out, const float *x, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(x[i]);
}
template <>
__global__ void cast_kernel(__half *out, const float *x, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half_rn(x[i]);
}

void cuda_cast(cudaStream_t s, void *out, sl_dtype dtype, const float *x, int64_t n_elems) {
    if (n_elems <= 0) return;
    if (dtype == SL_DTYPE_BF16) cast_kernel<<<n_blocks(n_elems), THREADS, 0, s>>>((__nv_bfloat16 *)out, x, n_elems);
    else cast_kernel<<<n_blocks(n_elems), THREADS, 0, s>>>((__half *)out, x, n_elems);
}

__global__ void add_bias_kernel(float *out, const float *bias, int64_t n, int64_t cols) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += bias[i % cols];
}

void cuda_add_bias(cudaStream_t s, float *out, const float *bias, int n, int64_t cols) {
    const int64_t total = (int64_t)n * cols;
    if (total > 0) add_bias_kernel<<<n_blocks(total), THREADS, 0, s>>>(out, bias, total, cols);
}
