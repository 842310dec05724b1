/* elementwise.c -- the small per-token kernels: embedding lookup, RMSNorm,
 * rotary embedding, KV store, SwiGLU, residual add, row gather. Each is one
 * loop nest, vectorized inside and parallel over tokens (or elements) only
 * when there is enough work: for a decode step a thread team costs more
 * than the loop (the `if` clauses). */
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/half.h"

#define PARALLEL_MIN_ELEMS 32768 /* below this, one thread is faster than waking a team */

void cpu_embed(float *out, const sl_weight *table, const int32_t *ids, int n_tokens, int64_t row_offset) {
    const int64_t dim = table->cols;
#pragma omp parallel for schedule(static) if ((int64_t)n_tokens * dim >= PARALLEL_MIN_ELEMS)
    for (int t = 0; t < n_tokens; t++) {
        float *o = out + t * dim;
        int64_t r = (int64_t)ids[t] - row_offset;
        if (r < 0 || r >= table->rows) {
            memset(o, 0, (size_t)dim * sizeof *o);
            continue;
        }
        if (table->dtype == SL_DTYPE_F32) {
            memcpy(o, (const float *)table->data + r * dim, (size_t)dim * sizeof *o);
        } else {
            const uint16_t *row = (const uint16_t *)table->data + r * dim;
            if (table->dtype == SL_DTYPE_BF16)
                for (int64_t i = 0; i < dim; i++) o[i] = sl_bf16_to_f32(row[i]);
            else
                for (int64_t i = 0; i < dim; i++) o[i] = sl_f16_to_f32(row[i]);
        }
    }
}

void cpu_rmsnorm(float *out, const float *x, const float *weight, int n_tokens, int dim, float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)n_tokens * dim >= PARALLEL_MIN_ELEMS)
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (int64_t)t * dim;
        float *ot = out + (int64_t)t * dim;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < dim; i++) ss += xt[i] * xt[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
#pragma omp simd
        for (int i = 0; i < dim; i++) ot[i] = weight[i] * (xt[i] * inv);
    }
}

void cpu_rope(float *x, const int32_t *pos, const float *inv_freq, int n_tokens, int n_heads, int head_dim) {
    const int half = head_dim / 2;
#pragma omp parallel for schedule(static) if ((int64_t)n_tokens * n_heads * head_dim >= PARALLEL_MIN_ELEMS)
    for (int t = 0; t < n_tokens; t++) {
        float c[256], s[256]; /* head_dim <= 512 */
        for (int i = 0; i < half; i++) {
            float angle = (float)pos[t] * inv_freq[i];
            c[i] = cosf(angle);
            s[i] = sinf(angle);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void cpu_kv_store(float *k_cache, float *v_cache, const float *k, const float *v, const int32_t *slots,
                  int n_tokens, int kv_dim) {
    for (int t = 0; t < n_tokens; t++) {
        memcpy(k_cache + (int64_t)slots[t] * kv_dim, k + (int64_t)t * kv_dim, (size_t)kv_dim * sizeof(float));
        memcpy(v_cache + (int64_t)slots[t] * kv_dim, v + (int64_t)t * kv_dim, (size_t)kv_dim * sizeof(float));
    }
}

void cpu_swiglu(float *out, const float *gate, const float *up, int64_t n_elems) {
#pragma omp parallel for schedule(static) if (n_elems >= PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n_elems; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cpu_add(float *x, const float *y, int64_t n_elems) {
#pragma omp parallel for simd schedule(static) if (n_elems >= PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n_elems; i++) x[i] += y[i];
}

void cpu_gather_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim) {
    for (int i = 0; i < n_rows; i++)
        memcpy(out + (int64_t)i * dim, x + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
}
