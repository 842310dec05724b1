/* vec.h -- the CPU kernels' vectors (util/simd.h) and their loads of the
 * element types weights and KV caches come in: float16 and bfloat16 widened
 * to float32 as loaded, float32 rounded to bf16 for matmul inputs. */
#ifndef SL_BACKEND_CPU_VEC_H
#define SL_BACKEND_CPU_VEC_H

#include <stdint.h>
#include <string.h>

#include "util/dtype.h"
#include "util/simd.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef uint16_t vu16 __attribute__((vector_size(LANES * sizeof(uint16_t))));

/* 16 IEEE halves widened (exact: normals, subnormals, inf and NaN). */
static inline vf widen_f16(vu16 h16) {
#if defined(__AVX512F__)
    __m256i h;
    memcpy(&h, &h16, sizeof h);
    return (vf)_mm512_cvtph_ps(h);
#else
    const vu h = __builtin_convertvector(h16, vu), em = h & 0x7fffu;
    const vu scaled = as_bits(as_float(em << 13) * 0x1p112f); /* rebias the exponent; subnormals too */
    const vu special = (em << 13) | 0x7f800000u;               /* inf and NaN */
    return as_float(((h & 0x8000u) << 16) | (vu)select_f((vi)(em >= 0x7c00u), as_float(special), as_float(scaled)));
#endif
}

/* Rounded to bf16 (nearest even, NaN kept quiet), as 16 halves. */
static inline vu16 narrow_bf16(vf x) {
    const vu u = as_bits(x), is_nan = (vu)((u & 0x7fffffffu) > 0x7f800000u);
    const vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet = (u >> 16) | 0x40u;
    return __builtin_convertvector((rounded & ~is_nan) | (quiet & is_nan), vu16);
}

static inline vf widen_bf16(vu16 h16) { return as_float(__builtin_convertvector(h16, vu) << 16); }

/* Elements [i, i + 16) of an array of `dtype` (float32, float16 or bfloat16) as floats. */
static inline __attribute__((always_inline)) vf load_as_f(sl_dtype dtype, const void *base, int64_t i) {
    if (dtype == SL_DTYPE_F32) return load_f((const float *)base + i);
    vu16 h;
    memcpy(&h, (const uint16_t *)base + i, sizeof h);
    return dtype == SL_DTYPE_F16 ? widen_f16(h) : widen_bf16(h);
}

/* The first n (< 16) of them, the other lanes 0. */
static inline vf load_part_as_f(sl_dtype dtype, const void *base, int64_t i, int n) {
    const size_t elem = sl_dtype_n_bytes(dtype);
    unsigned char part[LANES * sizeof(float)] = {0};
    memcpy(part, (const char *)base + (size_t)i * elem, (size_t)n * elem);
    return load_as_f(dtype, part, 0);
}

#endif
