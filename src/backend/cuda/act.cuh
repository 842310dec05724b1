/* act.cuh -- the activation element types in kernels: float32, bfloat16 and
 * float16 read as float32 and written back rounded to nearest even, eight at
 * a time where the memory allows, and the host's dispatch from an sl_dtype
 * to the kernel instance of that type.
 *
 * An activation tensor is float32, bfloat16 or float16 (backend.h's `act`);
 * every sum is float32 whatever the storage. Eight elements are 16 bytes of
 * a 16-bit type or 32 of float32: load8 / store8 read and write them as one
 * or two 16-byte vectors, so the address must be 16-byte aligned; load_n /
 * store_n take the vector path only when told it is safe (`vec`, decided on
 * the host by act_vec_ok) and the whole group of 8 is there, else element by
 * element, so odd sizes and unaligned pointers stay correct. Pairs of 16-bit
 * values in one word (widen_pair / narrow_pair) and the softmax's bare exp2
 * (exp2_approx) serve the tensor-core attention. Included by the .cu files
 * only (C++). */
#ifndef SL_BACKEND_CUDA_ACT_CUH
#define SL_BACKEND_CUDA_ACT_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <type_traits>

#include "util/dtype.h"

/* ---- one element ---- */

__device__ __forceinline__ float act_load(const float *p) { return *p; }
__device__ __forceinline__ float act_load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float act_load(const __half *p) { return __half2float(*p); }

__device__ __forceinline__ void act_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void act_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void act_store(__half *p, float v) { *p = __float2half_rn(v); }

/* ---- eight elements at a 16-byte aligned address ---- */

__device__ __forceinline__ void load8(const float *p, float (&f)[8]) {
    const float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float (&f)[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 x = __bfloat1622float2(h[i]);
        f[2 * i] = x.x, f[2 * i + 1] = x.y;
    }
}
__device__ __forceinline__ void load8(const __half *p, float (&f)[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 x = __half22float2(h[i]);
        f[2 * i] = x.x, f[2 * i + 1] = x.y;
    }
}

__device__ __forceinline__ void store8(float *p, const float (&f)[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}
__device__ __forceinline__ void store8(__half *p, const float (&f)[8]) {
    uint4 u;
    __half2 *h = reinterpret_cast<__half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}

/* ---- up to eight: the vector path when `vec` and all eight are there ---- */

template <typename T> __device__ __forceinline__ void load_n(const T *p, int count, bool vec, float (&f)[8]) {
    if (vec && count == 8) {
        load8(p, f);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) f[e] = e < count ? act_load(p + e) : 0.0f;
}

template <typename T> __device__ __forceinline__ void store_n(T *p, int count, bool vec, const float (&f)[8]) {
    if (vec && count == 8) {
        store8(p, f);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++)
        if (e < count) act_store(p + e, f[e]);
}

/* ---- two 16-bit elements of a 32-bit word (T: __nv_bfloat16 or __half; the lower one first) ---- */

/* The word's two elements as floats. */
template <typename T> __device__ inline float2 widen_pair(uint32_t w) {
    if constexpr (std::is_same_v<T, __half>)
        return __half22float2(__halves2half2(__ushort_as_half((unsigned short)(w & 0xffffu)),
                                             __ushort_as_half((unsigned short)(w >> 16))));
    else
        return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

/* Two floats rounded to nearest even, as a word of two 16-bit elements: one F2FP pack instruction on sm_80+
 * (rounding each with __float2bfloat16_rn and packing the halves took three, two of them on the conversion
 * pipe that exp2 shares). */
template <typename T> __device__ inline uint32_t narrow_pair(float a, float b) {
    if constexpr (std::is_same_v<T, __half>) {
        const __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<const uint32_t *>(&h);
    } else {
        const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<const uint32_t *>(&h);
    }
}

/* ---- softmax ---- */

/* 2^x by the hardware's approximation alone (ex2.approx.ftz: relative error about 2^-22, results below 2^-126
 * flushed to 0): exp2f adds a range check and two multiplies around it for subnormal results, which weigh
 * nothing in a softmax. */
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* ---- the host side ---- */

/* Whether every pointer given is 16-byte aligned (null ones count as aligned): with row lengths that are
 * multiples of 8 elements, the condition for load8 / store8 at every group of 8. */
static inline bool act_aligned(const void *a, const void *b = nullptr, const void *c = nullptr,
                               const void *d = nullptr) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15u) == 0;
}

/* Calls f with a null pointer of the element type of `t` (float for float32 and anything else: callers
 * check the dtype before): act_dispatch(act, [&](auto *tag) { using A = ACT_TYPE(tag); ... }). */
#define ACT_TYPE(tag) std::remove_pointer_t<decltype(tag)>
template <typename F> static inline void act_dispatch(sl_dtype t, F &&f) {
    if (t == SL_DTYPE_BF16) f(static_cast<__nv_bfloat16 *>(nullptr));
    else if (t == SL_DTYPE_F16) f(static_cast<__half *>(nullptr));
    else f(static_cast<float *>(nullptr));
}

#endif
