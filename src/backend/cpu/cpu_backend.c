/* cpu_backend.c -- the CPU backend: host memory, OpenMP threads, and the
 * reference kernels of kernels.h behind the backend interface.
 *
 * Weights whose rows are contiguous in the mapped safetensors file are used
 * in place (zero copy: the page cache is the only copy); slices with a row
 * stride (row-parallel shards) are copied once at load. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"

typedef struct cpu_ctx {
    int n_threads;
    cpu_scratch scratch; /* the matmul's rearranged activations */
} cpu_ctx;

static void cpu_destroy(void *ctx) {
    free(((cpu_ctx *)ctx)->scratch.floats);
    free(ctx);
}

static int cpu_alloc(void *ctx, size_t n_bytes, void **out, sl_err *err) {
    (void)ctx;
    *out = NULL;
    if (n_bytes == 0) n_bytes = 64;
    if (posix_memalign(out, 64, (n_bytes + 63) & ~(size_t)63) != 0)
        return sl_err_set(err, SL_ENOMEM, "out of host memory allocating %zu bytes", n_bytes);
    return SL_OK;
}

static void cpu_free(void *ctx, void *ptr) {
    (void)ctx;
    free(ptr);
}

static int cpu_copy(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err) {
    (void)ctx;
    (void)err;
    memcpy(dst, src, n_bytes);
    return SL_OK;
}

static int cpu_weight_load(void *ctx, sl_weight *dst, const void *src, sl_dtype dtype, int64_t rows, int64_t cols,
                           int64_t src_row_stride, sl_err *err) {
    *dst = (sl_weight){.data = src, .dtype = dtype, .rows = rows, .cols = cols};
    if (src_row_stride == cols) return SL_OK;
    size_t elem = sl_dtype_n_bytes(dtype), row_bytes = (size_t)cols * elem;
    void *copy;
    int rc = cpu_alloc(ctx, (size_t)rows * row_bytes, &copy, err);
    if (rc) return rc;
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)copy + r * row_bytes, (const char *)src + (size_t)(r * src_row_stride) * elem, row_bytes);
    dst->data = dst->owned = copy;
    return SL_OK;
}

static void cpu_weight_free(void *ctx, sl_weight *w) {
    cpu_free(ctx, w->owned);
    memset(w, 0, sizeof *w);
}

static void op_embed(void *ctx, float *out, const sl_weight *t, const int32_t *ids, int n, int64_t off) {
    (void)ctx;
    cpu_embed(out, t, ids, n, off);
}
static void op_matmul(void *ctx, const sl_proj *proj, int n_proj, const float *x, int n) {
    cpu_matmul(proj, n_proj, x, n, &((cpu_ctx *)ctx)->scratch);
}
static void op_rmsnorm(void *ctx, float *out, const float *x, const float *w, int n, int dim, float eps) {
    (void)ctx;
    cpu_rmsnorm(out, x, w, n, dim, eps);
}
static void op_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int heads, int hd) {
    (void)ctx;
    cpu_rope(x, pos, inv_freq, n, heads, hd);
}
static void op_kv_store(void *ctx, float *kc, float *vc, const float *k, const float *v, const int32_t *slots,
                        int n, int kv_dim) {
    (void)ctx;
    cpu_kv_store(kc, vc, k, v, slots, n, kv_dim);
}
static void op_attention(void *ctx, float *out, const float *q, const float *kc, const float *vc,
                         const sl_attn_batch *b, const sl_attn_shape *s) {
    (void)ctx;
    cpu_attention(out, q, kc, vc, b, s);
}
static void op_swiglu(void *ctx, float *out, const float *g, const float *u, int64_t n) {
    (void)ctx;
    cpu_swiglu(out, g, u, n);
}
static void op_add(void *ctx, float *x, const float *y, int64_t n) {
    (void)ctx;
    cpu_add(x, y, n);
}
static void op_gather_rows(void *ctx, float *out, const float *x, const int32_t *rows, int n, int dim) {
    (void)ctx;
    cpu_gather_rows(out, x, rows, n, dim);
}
static int cpu_synchronize(void *ctx, sl_err *err) {
    (void)ctx;
    (void)err;
    return SL_OK;
}

static const sl_backend_iface k_cpu_iface = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .weight_load = cpu_weight_load,
    .weight_free = cpu_weight_free,
    .embed = op_embed,
    .matmul = op_matmul,
    .rmsnorm = op_rmsnorm,
    .rope = op_rope,
    .kv_store = op_kv_store,
    .attention = op_attention,
    .swiglu = op_swiglu,
    .add = op_add,
    .gather_rows = op_gather_rows,
    .synchronize = cpu_synchronize,
};

int sl_cpu_backend_create(int n_threads, sl_backend *out, sl_err *err) {
    cpu_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return sl_err_set(err, SL_ENOMEM, "out of memory");
    if (n_threads > 0) omp_set_num_threads(n_threads);
    ctx->n_threads = omp_get_max_threads();
    *out = (sl_backend){.iface = &k_cpu_iface, .ctx = ctx};
    return SL_OK;
}

int sl_cpu_backend_n_threads(const sl_backend *b) { return ((const cpu_ctx *)b->ctx)->n_threads; }
