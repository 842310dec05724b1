/* vec.h -- 16-float vectors for the CPU kernels, and what they need beyond
 * + and *: loads that widen float16/bfloat16, exp, lane sums and maxima.
 *
 * GCC/clang vector extensions: one zmm register with AVX-512, several
 * narrower ones in generic builds, the same arithmetic either way. Every
 * function works lane by lane, so an element's result never depends on which
 * lane or vector carried it (the kernels' batch invariance rests on this). */
#ifndef SL_BACKEND_CPU_VEC_H
#define SL_BACKEND_CPU_VEC_H

#include <stdint.h>
#include <string.h>

#include "util/dtype.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define LANES 16

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
typedef uint16_t vu16 __attribute__((vector_size(LANES * sizeof(uint16_t))));

static inline vf load_f(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_f(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf as_float(vu u) {
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline vu as_bits(vf f) {
    vu u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Lanes of a where mask is all ones, else of b (mask from a vector comparison). */
static inline vf select_f(vi mask, vf a, vf b) { return as_float((as_bits(a) & (vu)mask) | (as_bits(b) & ~(vu)mask)); }

static inline vf splat(float x) { return (vf){0} + x; }

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

/* e^x to about 1 ulp (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r,
 * times 2^n); 0 below -86.6 (e^x < 2.4e-38), inf above 88.72, NaN for NaN. */
static inline vf vexp(vf x) {
    const float lo = -86.6f, hi = 88.7228391f, magic = 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    const vi below = x < lo, above = x > hi;
    x = select_f(below, splat(lo), select_f(above, splat(hi), x));
    const vf t = x * 1.44269504088896341f + magic, n = t - magic;
    const vf r = x - n * 0.693359375f - n * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const vu two_n_minus_1 = (as_bits(t) - as_bits(splat(magic)) + 126u) << 23; /* n >= -125 after the clamp */
    const vf e = p * as_float(two_n_minus_1) * 2.0f;
    return select_f(below, splat(0.0f), select_f(above, splat(__builtin_inff()), e));
}

/* Sum of the 16 lanes as a tree (4 shuffles and adds, not 15 dependent adds). */
static inline float lane_sum(vf v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}

static inline vf vmax(vf a, vf b) { return select_f(a > b, a, b); }

static inline float lane_max(vf v) {
    v = vmax(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
    v = vmax(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
    v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    v = vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
    return v[0];
}

#endif
