/* kernels.h -- the CPU reference kernels, one function per computation.
 *
 * Plain C loops over float32 activations, written so that gcc and clang
 * vectorize them (`omp simd` reductions, unit-stride inner loops) and split
 * across cores with OpenMP. Each kernel computes exactly what the backend
 * interface documents for its op (src/backend/backend.h). */
#ifndef SL_BACKEND_CPU_KERNELS_H
#define SL_BACKEND_CPU_KERNELS_H

#include "backend/backend.h"

/* Working memory a kernel may grow and reuse; owned by the backend context. */
typedef struct cpu_scratch {
    float *floats;
    size_t n_floats;
} cpu_scratch;

void cpu_matmul(const sl_proj *proj, int n_proj, const float *x, int n, cpu_scratch *scratch);
void cpu_attention(float *out, const float *q, const float *k_cache, const float *v_cache,
                   const sl_attn_batch *batch, const sl_attn_shape *shape);
void cpu_embed(float *out, const sl_weight *table, const int32_t *ids, int n_tokens, int64_t row_offset);
void cpu_rmsnorm(float *out, const float *x, const float *weight, int n_tokens, int dim, float eps);
void cpu_rope(float *x, const int32_t *pos, const float *inv_freq, int n_tokens, int n_heads, int head_dim);
void cpu_kv_store(float *k_cache, float *v_cache, const float *k, const float *v, const int32_t *slots,
                  int n_tokens, int kv_dim);
void cpu_swiglu(float *out, const float *gate, const float *up, int64_t n_elems);
void cpu_add(float *x, const float *y, int64_t n_elems);
void cpu_gather_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim);

#endif
