/* kernels.h -- the CPU reference kernels, one function per computation.
 *
 * C over float32 activations: 16-float vectors (vec.h) where the layout is
 * the kernel's own (matmul panels, the KV cache, SwiGLU), plain loops that
 * gcc and clang vectorize elsewhere, split across cores by the backend's
 * thread pool. Each kernel computes exactly what the backend interface
 * documents for its op (src/backend/backend.h). */
#ifndef SL_BACKEND_CPU_KERNELS_H
#define SL_BACKEND_CPU_KERNELS_H

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

/* Working memory a kernel may grow and reuse; owned by the backend context. */
typedef struct cpu_scratch {
    float *floats;
    size_t n_floats;
} cpu_scratch;

/* Matmul weights are repacked at load into the kernel's layout (matmul.c):
 * cpu_packed_bytes of memory, filled by cpu_weight_pack from rows of the
 * file (row r at src + r * src_row_stride elements); f16 becomes f32. */
size_t cpu_packed_bytes(sl_dtype file_dtype, int64_t rows, int64_t cols);
void cpu_weight_pack(cpu_pool *pool, void *dst, sl_weight *w, const void *src, sl_dtype dtype, int64_t rows,
                     int64_t cols, int64_t src_row_stride);
/* Element (r, k) of a packed weight (the embedding reads its rows this way). */
float cpu_weight_at(const sl_weight *w, int64_t r, int64_t k);

/* bf16_inputs: over bf16 weights, x is rounded to bf16 first (products summed in float32). */
void cpu_matmul(cpu_pool *pool, const sl_proj *proj, int n_proj, const float *x, int n, int bf16_inputs,
                cpu_scratch *scratch);
/* How matmuls over bf16 weights are computed, in words ("bf16 inputs on AMX tiles"). */
const char *cpu_matmul_unit(int bf16_inputs);
/* The KV cache's layout inside a block is attention.c's: these two are all that touch it. */
void cpu_kv_store(cpu_pool *pool, const sl_kv_cache *kv, const float *k, const float *v, const int32_t *slots,
                  int n_tokens);
void cpu_attention(cpu_pool *pool, float *out, const float *q, const sl_kv_cache *kv, const sl_attn_batch *batch,
                   int n_heads, float scale);
void cpu_embed(cpu_pool *pool, float *out, const sl_weight *table, const int32_t *ids, int n_tokens, int64_t row_offset);
void cpu_rmsnorm(cpu_pool *pool, float *out, const float *x, const float *weight, int n_tokens, int dim, float eps);
void cpu_rope(cpu_pool *pool, float *x, const int32_t *pos, const float *inv_freq, int n_tokens, int n_heads, int head_dim);
void cpu_swiglu(cpu_pool *pool, float *out, const float *gate, const float *up, int64_t n_elems);
void cpu_add(cpu_pool *pool, float *x, const float *y, int64_t n_elems);
void cpu_gather_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim);

#endif
