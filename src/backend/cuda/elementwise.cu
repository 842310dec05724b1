/* elementwise.cu -- the CUDA backend's row-wise and elementwise kernels.
 *
 * Each mirrors the CPU reference of the same name (src/backend/cpu/elementwise.c)
 * and computes the same formula in float32: embed, rmsnorm, add_rmsnorm, swiglu,
 * add, gather_rows; cast and add_bias serve the matmul (matmul.c). The residual
 * stream (embed's output, the x of add / add_rmsnorm, rmsnorm's input) is
 * float32; the other activations are of the op's `act` type (float32, bfloat16
 * or float16, act.cuh), read as float32 and rounded to nearest even once, when
 * stored. Rows are one block each where a row needs a reduction (rmsnorm); the
 * rest are flat grids of 256 threads, a thread per group of 8 elements, read
 * and written as 16-byte vectors where sizes and pointers allow (act.cuh),
 * element by element otherwise. Nothing here allocates or waits. */
#include "backend/cuda/act.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kernels.h"

#define THREADS 256

/* Blocks of THREADS threads for a thread per group of 8 of n_elems. */
static unsigned int n_blocks8(int64_t n_elems) {
    const int64_t groups = (n_elems + 7) / 8;
    return (unsigned int)((groups + THREADS - 1) / THREADS);
}

/* The first element of this thread's group of 8, and how many of the 8 there are (0: none). */
__device__ static int group8(int64_t n, int64_t *i) {
    *i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    return *i >= n ? 0 : n - *i < 8 ? (int)(n - *i) : 8;
}

/* ---- embedding ---- */

template <typename T>
__global__ void embed_kernel(float *out, const T *table, int64_t table_rows, int64_t dim, const int32_t *ids,
                             int64_t row_offset) {
    wait_previous_kernel();
    const int t = blockIdx.x;
    const int64_t r = (int64_t)ids[t] - row_offset;
    float *o = out + (int64_t)t * dim;
    const bool here = r >= 0 && r < table_rows;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = here ? act_load(table + r * dim + i) : 0.0f;
}

void cuda_embed(cudaStream_t s, float *out, const void *table, sl_dtype dtype, int64_t table_rows, int64_t dim,
                const int32_t *ids, int n_tokens, int64_t row_offset) {
    if (n_tokens <= 0) return;
    act_dispatch(dtype, [&](auto *tag) {
        using T = ACT_TYPE(tag);
        launch(embed_kernel<T>, n_tokens, THREADS, 0, s, out, (const T *)table, table_rows, dim, ids, row_offset);
    });
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

/* out = weight * (x * inv) over a row, x float32 (already updated), out of A; with vec a thread takes
 * groups of 8 (the same groups as the sum of squares before it). */
template <typename A>
__device__ static void norm_row(A *ot, const float *xt, const float *weight, int dim, float inv, bool vec) {
    if (vec) {
        for (int i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) {
            float v[8], w[8], o[8];
            load8(xt + i, v);
            load8(weight + i, w);
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] = w[e] * (v[e] * inv);
            store8(ot + i, o);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) act_store(ot + i, weight[i] * (xt[i] * inv));
    }
}

template <typename A>
__global__ void rmsnorm_kernel(A *out, const float *x, const float *weight, int dim, float eps, bool vec) {
    wait_previous_kernel();
    const float *xt = x + (int64_t)blockIdx.x * dim;
    A *ot = out + (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (vec) {
        for (int i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) {
            float v[8];
            load8(xt + i, v);
#pragma unroll
            for (int e = 0; e < 8; e++) ss += v[e] * v[e];
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xt[i] * xt[i];
    }
    const float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    norm_row(ot, xt, weight, dim, inv, vec);
}

/* Threads per row: a group of 8 each (vec) or about 4 to 8 elements each, a multiple of 32 up to 1024. */
static int rmsnorm_threads(int dim, bool vec) {
    if (!vec) return dim >= 4096 ? 1024 : dim >= 1024 ? 512 : 128;
    const int groups = (dim / 8 + 31) / 32 * 32;
    return groups < 32 ? 32 : groups > 1024 ? 1024 : groups;
}

void cuda_rmsnorm(cudaStream_t s, void *out, const float *x, const float *weight, int n_tokens, int dim, float eps,
                  sl_dtype act) {
    if (n_tokens <= 0) return;
    const bool vec = dim % 8 == 0 && act_aligned(out, x, weight);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(rmsnorm_kernel<A>, n_tokens, rmsnorm_threads(dim, vec), 0, s, (A *)out, x, weight, dim, eps, vec);
    });
}

/* x += y, then the norm. out may be y: each thread reads its elements of y before it writes the same
 * elements of out (both loops give a thread the same indices), and no thread touches another's. */
template <typename A>
__global__ void add_rmsnorm_kernel(A *out, float *x, const A *y, const float *weight, int dim, float eps, bool vec) {
    wait_previous_kernel();
    const int64_t row = (int64_t)blockIdx.x * dim;
    float *xt = x + row;
    A *ot = out + row;
    const A *yt = y + row;
    float ss = 0.0f;
    if (vec) {
        for (int i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) {
            float v[8], d[8];
            load8(xt + i, v);
            load8(yt + i, d);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] += d[e];
                ss += v[e] * v[e];
            }
            store8(xt + i, v);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = xt[i] + act_load(yt + i);
            xt[i] = v;
            ss += v * v;
        }
    }
    const float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    norm_row(ot, xt, weight, dim, inv, vec);
}

void cuda_add_rmsnorm(cudaStream_t s, void *out, float *x, const void *y, const float *weight, int n_tokens, int dim,
                      float eps, sl_dtype act) {
    if (n_tokens <= 0) return;
    const bool vec = dim % 8 == 0 && act_aligned(out, x, y, weight);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(add_rmsnorm_kernel<A>, n_tokens, rmsnorm_threads(dim, vec), 0, s, (A *)out, x, (const A *)y, weight,
               dim, eps, vec);
    });
}

/* ---- flat loops: a thread per group of 8 ---- */

template <typename A> __global__ void swiglu_kernel(A *out, const A *gate, const A *up, int64_t n, bool vec) {
    wait_previous_kernel();
    int64_t i;
    const int count = group8(n, &i);
    if (count == 0) return;
    float g[8], u[8], o[8];
    load_n(gate + i, count, vec, g);
    load_n(up + i, count, vec, u);
#pragma unroll
    for (int e = 0; e < 8; e++) o[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
    store_n(out + i, count, vec, o);
}

void cuda_swiglu(cudaStream_t s, void *out, const void *gate, const void *up, int64_t n_elems, sl_dtype act) {
    if (n_elems <= 0) return;
    const bool vec = act_aligned(out, gate, up);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(swiglu_kernel<A>, n_blocks8(n_elems), THREADS, 0, s, (A *)out, (const A *)gate, (const A *)up, n_elems,
               vec);
    });
}

template <typename A> __global__ void add_kernel(float *x, const A *y, int64_t n, bool vec) {
    wait_previous_kernel();
    int64_t i;
    const int count = group8(n, &i);
    if (count == 0) return;
    float a[8], b[8];
    load_n(x + i, count, vec, a);
    load_n(y + i, count, vec, b);
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] += b[e];
    store_n(x + i, count, vec, a);
}

void cuda_add(cudaStream_t s, float *x, const void *y, int64_t n_elems, sl_dtype act) {
    if (n_elems <= 0) return;
    const bool vec = act_aligned(x, y);
    act_dispatch(act, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(add_kernel<A>, n_blocks8(n_elems), THREADS, 0, s, x, (const A *)y, n_elems, vec);
    });
}

/* Rows copied as they are: E is a storage type of the element's size; 16-byte pieces when a row is a
 * whole number of them and the pointers are aligned. */
template <typename E> __global__ void gather_rows_kernel(E *out, const E *x, const int32_t *rows, int dim, bool vec) {
    wait_previous_kernel();
    const E *src = x + (int64_t)rows[blockIdx.x] * dim;
    E *dst = out + (int64_t)blockIdx.x * dim;
    if (vec) {
        const int pieces = dim * (int)sizeof(E) / 16;
        for (int i = threadIdx.x; i < pieces; i += blockDim.x)
            reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
    }
}

void cuda_gather_rows(cudaStream_t s, void *out, const void *x, const int32_t *rows, int n_rows, int dim,
                      sl_dtype act) {
    if (n_rows <= 0) return;
    const size_t elem = sl_dtype_n_bytes(act) == 2 ? 2 : 4;
    const bool vec = dim * elem % 16 == 0 && act_aligned(out, x);
    if (elem == 2)
        launch(gather_rows_kernel<uint16_t>, n_rows, THREADS, 0, s, (uint16_t *)out, (const uint16_t *)x, rows, dim,
               vec);
    else
        launch(gather_rows_kernel<uint32_t>, n_rows, THREADS, 0, s, (uint32_t *)out, (const uint32_t *)x, rows, dim,
               vec);
}

/* ---- for the matmul ---- */

template <typename O, typename I> __global__ void cast_kernel(O *out, const I *x, int64_t n, bool vec) {
    wait_previous_kernel();
    int64_t i;
    const int count = group8(n, &i);
    if (count == 0) return;
    float v[8];
    load_n(x + i, count, vec, v);
    store_n(out + i, count, vec, v);
}

void cuda_cast(cudaStream_t s, void *out, sl_dtype out_dtype, const void *x, sl_dtype x_dtype, int64_t n_elems) {
    if (n_elems <= 0) return;
    const bool vec = act_aligned(out, x);
    act_dispatch(out_dtype, [&](auto *out_tag) {
        act_dispatch(x_dtype, [&](auto *x_tag) {
            using O = ACT_TYPE(out_tag);
            using I = ACT_TYPE(x_tag);
            launch(cast_kernel<O, I>, n_blocks8(n_elems), THREADS, 0, s, (O *)out, (const I *)x, n_elems, vec);
        });
    });
}

/* With vec, cols is a multiple of 8, so a group of 8 never crosses a row. */
template <typename A> __global__ void add_bias_kernel(A *out, const float *bias, int64_t n, int64_t cols, bool vec) {
    wait_previous_kernel();
    int64_t i;
    const int count = group8(n, &i);
    if (count == 0) return;
    float o[8];
    load_n(out + i, count, vec, o);
    if (vec && count == 8) {
        float b[8];
        load8(bias + i % cols, b);
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] += b[e];
    } else {
        for (int e = 0; e < count; e++) o[e] += bias[(i + e) % cols];
    }
    store_n(out + i, count, vec, o);
}

void cuda_add_bias(cudaStream_t s, void *out, sl_dtype dtype, const float *bias, int n, int64_t cols) {
    const int64_t total = (int64_t)n * cols;
    if (total <= 0) return;
    const bool vec = cols % 8 == 0 && act_aligned(out, bias);
    act_dispatch(dtype, [&](auto *tag) {
        using A = ACT_TYPE(tag);
        launch(add_bias_kernel<A>, n_blocks8(total), THREADS, 0, s, (A *)out, bias, total, cols, vec);
    });
}
