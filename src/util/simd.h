/* simd.h -- 16-float vectors (GCC/clang vector extensions) and the math the
 * kernels need beyond + and *: exp, lane sums and maxima.
 *
 * One zmm register with AVX-512, several narrower ones in generic builds, the
 * same arithmetic either way. Every function works lane by lane, so an
 * element's result never depends on which lane or vector carried it (the CPU
 * kernels' batch invariance rests on this). Used by the CPU backend
 * (src/backend/cpu/vec.h adds its element loaders) and by the sampler. */
#ifndef SL_UTIL_SIMD_H
#define SL_UTIL_SIMD_H

#include <stdint.h>
#include <string.h>

#define LANES 16

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

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
