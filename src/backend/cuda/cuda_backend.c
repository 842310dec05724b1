/* cuda_backend.c -- the CUDA backend: one GPU, one stream, kernels and cuBLASLt
 * behind the backend interface.
 *
 * Every op is issued on the context's stream in the order the forward pass
 * calls it, so the ops need no fences between them; `download` and
 * `synchronize` are the host's only waits. Device memory is taken at start:
 * weights (kept in their file's dtype), the model's run state and KV cache
 * (through alloc), cuBLASLt's workspace and attention's partials here. The
 * buffers that grow are the matmul's converted input and float32 output
 * (matmul.c; used only where the activations' type is not the weights'),
 * which reach their largest size in the first full-sized step.
 *
 * Activations other than the residual stream and the logits are of the ops'
 * `act` type (backend.h); activation_dtype gives the weights' own 16-bit type
 * for 16-bit weights, so a bf16 model's matmuls read their inputs as they are
 * and its activations move half the bytes of float32.
 *
 * Weights go up through two pinned staging buffers in turn: while the GPU
 * copies one, the host fills the other from the mapped safetensors file, so
 * loading runs at the speed the file's pages can be read.
 *
 * Decode steps run as CUDA graphs, one per step shape (graph.c).
 *
 * Ops cannot return errors (the interface's ops are void): a failed launch or
 * library call is kept in the context and returned by the next synchronize,
 * and every op after it is skipped. */
#include "backend/cuda/cuda_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/kernels.h"

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)     /* what cuBLASLt asks for on Hopper */
#define ATTN_WORKSPACE_BYTES ((size_t)64 << 20)
#define STAGING_BYTES ((size_t)64 << 20)

void cuda__fail(cuda_ctx *c, cudaError_t e, const char *what) {
    if (c->failed) return;
    c->failed = 1;
    sl_err_set(&c->err, e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EINTERNAL, "CUDA error in %s on GPU %d: %s",
               what, c->device, cudaGetErrorString(e));
}

void cuda__check_launch(cuda_ctx *c, const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) cuda__fail(c, e, what);
}

/* A CUDA call's failure as the caller's error. */
static int cuda_error(sl_err *err, cudaError_t e, const char *what, int device) {
    return sl_err_set(err, e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EINTERNAL, "CUDA error %s on GPU %d: %s",
                      what, device, cudaGetErrorString(e));
}

int sl_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error to keep */
        return 0;
    }
    return n;
}

size_t sl_cuda_device_memory(int device) {
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return prop.totalGlobalMem;
}

static void cuda_destroy(void *ctx) {
    cuda_ctx *c = ctx;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    cuda__graphs_drop(c);
    cuda__gemm_plans_destroy(c);
    if (c->lt) cublasLtDestroy(c->lt);
    cudaFree(c->lt_workspace);
    cudaFree(c->cast);
    cudaFree(c->gemm_out);
    cudaFree(c->attn_workspace);
    for (int i = 0; i < 2; i++) {
        if (c->staged[i]) cudaEventDestroy(c->staged[i]);
        cudaFreeHost(c->staging[i]);
    }
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static void cuda_describe(void *ctx, char *buf, size_t n) {
    const cuda_ctx *c = ctx;
    snprintf(buf, n, "GPU %d: %s, %d SMs, %.1f GiB; matmuls: cuBLASLt, 16-bit inputs, float32 sums; activations: "
             "the weights' 16-bit type", c->device, c->prop.name, c->prop.multiProcessorCount,
             (double)c->prop.totalGlobalMem / 1073741824.0);
}

/* 16-bit weights run activations of their type; float32 weights (the test fixtures) float32 ones. */
static sl_dtype cuda_activation_dtype(void *ctx, sl_dtype weights) {
    (void)ctx;
    return weights == SL_DTYPE_BF16 || weights == SL_DTYPE_F16 ? weights : SL_DTYPE_F32;
}

static int cuda_memory(void *ctx, size_t *free_bytes, size_t *total_bytes, sl_err *err) {
    const cuda_ctx *c = ctx;
    cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
    return e == cudaSuccess ? SL_OK : cuda_error(err, e, "reading the free memory", c->device);
}

/* ---- memory ---- */

static int cuda_alloc(void *ctx, size_t n_bytes, void **out, sl_err *err) {
    cuda_ctx *c = ctx;
    *out = NULL;
    cudaError_t e = cudaMalloc(out, n_bytes ? n_bytes : 1);
    if (e == cudaSuccess) e = cudaMemsetAsync(*out, 0, n_bytes, c->stream);
    cuda_enqueued_other(c->stream);
    if (e == cudaSuccess) return SL_OK;
    cudaFree(*out);
    *out = NULL;
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation) {
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        return sl_err_set(err, SL_ENOMEM, "out of GPU memory: %.2f GiB asked for, %.2f GiB of %.2f GiB free on GPU %d",
                          (double)n_bytes / 1073741824.0, (double)free_bytes / 1073741824.0,
                          (double)total / 1073741824.0, c->device);
    }
    return cuda_error(err, e, "allocating GPU memory", c->device);
}

static void cuda_free(void *ctx, void *ptr) {
    (void)ctx;
    if (ptr) cudaFree(ptr);
}

static int cuda_alloc_host(void *ctx, size_t n_bytes, void **out, sl_err *err) {
    cuda_ctx *c = ctx;
    cudaError_t e = cudaMallocHost(out, n_bytes ? n_bytes : 1);
    if (e == cudaSuccess) return SL_OK;
    *out = NULL;
    return cuda_error(err, e, "allocating pinned host memory", c->device);
}

static void cuda_free_host(void *ctx, void *ptr) {
    (void)ctx;
    if (ptr) cudaFreeHost(ptr);
}

static int cuda_upload(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err) {
    cuda_ctx *c = ctx;
    cudaError_t e = cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyHostToDevice, c->stream);
    cuda_enqueued_other(c->stream);
    return e == cudaSuccess ? SL_OK : cuda_error(err, e, "copying to the GPU", c->device);
}

static int cuda_synchronize(void *ctx, sl_err *err) {
    cuda_ctx *c = ctx;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) cuda__fail(c, e, "a step");
    if (!c->failed) return SL_OK;
    *err = c->err;
    return c->err.code;
}

static int cuda_download(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err) {
    cuda_ctx *c = ctx;
    cudaError_t e = cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToHost, c->stream);
    cuda_enqueued_other(c->stream);
    if (e != cudaSuccess) cuda__fail(c, e, "copying from the GPU");
    return cuda_synchronize(ctx, err);
}

/* Rows [r0, r1) of a strided host matrix into staging buffer i, once the GPU has finished reading it. */
static cudaError_t stage_rows(cuda_ctx *c, int i, const char *src, size_t row_bytes, size_t src_stride, int64_t r0,
                              int64_t r1) {
    cudaError_t e = cudaEventSynchronize(c->staged[i]);
    if (e != cudaSuccess) return e;
    char *dst = c->staging[i];
    if (row_bytes == src_stride) memcpy(dst, src + (size_t)r0 * src_stride, (size_t)(r1 - r0) * row_bytes);
    else
        for (int64_t r = r0; r < r1; r++) memcpy(dst + (size_t)(r - r0) * row_bytes, src + (size_t)r * src_stride, row_bytes);
    return cudaSuccess;
}

static int cuda_weight_load(void *ctx, sl_weight *dst, const void *src, sl_dtype dtype, int64_t rows, int64_t cols,
                            int64_t src_row_stride, sl_err *err) {
    cuda_ctx *c = ctx;
    const size_t elem = sl_dtype_n_bytes(dtype), row_bytes = (size_t)cols * elem;
    if (dtype != SL_DTYPE_BF16 && dtype != SL_DTYPE_F16 && dtype != SL_DTYPE_F32)
        return sl_err_set(err, SL_ENOTSUP, "the CUDA backend runs bfloat16, float16 and float32 weights, not %s",
                          sl_dtype_name(dtype));
    if (row_bytes > c->staging_bytes)
        return sl_err_set(err, SL_ENOTSUP, "a weight row of %zu bytes is larger than the staging buffer", row_bytes);
    void *mem;
    int rc = cuda_alloc(ctx, (size_t)rows * row_bytes, &mem, err);
    if (rc) return rc;
    const int64_t rows_per_chunk = (int64_t)(c->staging_bytes / row_bytes);
    cudaError_t e = cudaSuccess;
    for (int64_t r0 = 0; r0 < rows && e == cudaSuccess; r0 += rows_per_chunk) {
        const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
        const int i = c->next_staging;
        c->next_staging ^= 1;
        e = stage_rows(c, i, src, row_bytes, (size_t)src_row_stride * elem, r0, r1);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync((char *)mem + (size_t)r0 * row_bytes, c->staging[i], (size_t)(r1 - r0) * row_bytes,
                                cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaEventRecord(c->staged[i], c->stream);
    }
    cuda_enqueued_other(c->stream);
    if (e != cudaSuccess) {
        cudaFree(mem);
        return cuda_error(err, e, "uploading a weight", c->device);
    }
    *dst = (sl_weight){.data = mem, .dtype = dtype, .rows = rows, .cols = cols, .owned = mem};
    return SL_OK;
}

static void cuda_weight_free(void *ctx, sl_weight *w) {
    (void)ctx;
    if (w->owned) cudaFree(w->owned);
    memset(w, 0, sizeof *w);
}

/* ---- ops: the kernels of kernels.h on the stream ---- */

/* Whether an op should run: nothing has failed and act is a type the kernels have (else that is the failure). */
static int op_ready(cuda_ctx *c, sl_dtype act, const char *what) {
    if (c->failed) return 0;
    if (act == SL_DTYPE_F32 || act == SL_DTYPE_BF16 || act == SL_DTYPE_F16) return 1;
    c->failed = 1;
    sl_err_set(&c->err, SL_EINVAL, "the CUDA backend's %s got activations of type %s (float32, bfloat16 or float16)",
               what, sl_dtype_name(act));
    return 0;
}

static void op_embed(void *ctx, float *out, const sl_weight *t, const int32_t *ids, int n, int64_t off) {
    cuda_ctx *c = ctx;
    if (c->failed) return;
    cuda_embed(c->stream, out, t->data, t->dtype, t->rows, t->cols, ids, n, off);
    cuda__check_launch(c, "embed");
}
static void op_matmul(void *ctx, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act) {
    if (op_ready(ctx, act, "matmul")) cuda__matmul(ctx, proj, n_proj, x, n, act);
}
static void op_rmsnorm(void *ctx, void *out, const float *x, const float *w, int n, int dim, float eps, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "rmsnorm")) return;
    cuda_rmsnorm(c->stream, out, x, w, n, dim, eps, act);
    cuda__check_launch(c, "rmsnorm");
}
static void op_rope_kv_store(void *ctx, void *q, void *k, const void *v, const sl_kv_cache *kv, const int32_t *pos,
                             const int32_t *slots, const float *inv_freq, int n, int heads, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "rope_kv_store")) return;
    cuda_rope_kv_store(c->stream, q, k, v, kv, pos, slots, inv_freq, n, heads, act);
    cuda__check_launch(c, "rope_kv_store");
}
static void op_attention(void *ctx, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                         int n_heads, float scale, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "attention")) return;
    if (cuda_attention_tiled_head_dim(kv->head_dim))
        cuda_attention(c->stream, out, q, kv, b, n_heads, scale, act, c->attn_workspace, c->attn_workspace_bytes);
    else
        cuda_attention_plain(c->stream, out, q, kv, b, n_heads, scale, act);
    cuda__check_launch(c, "attention");
}
static void op_swiglu(void *ctx, void *out, const void *g, const void *u, int64_t n, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "swiglu")) return;
    cuda_swiglu(c->stream, out, g, u, n, act);
    cuda__check_launch(c, "swiglu");
}
static void op_add(void *ctx, float *x, const void *y, int64_t n, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "add")) return;
    cuda_add(c->stream, x, y, n, act);
    cuda__check_launch(c, "add");
}
static void op_add_rmsnorm(void *ctx, void *out, float *x, const void *y, const float *w, int n, int dim, float eps,
                           sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "add_rmsnorm")) return;
    cuda_add_rmsnorm(c->stream, out, x, y, w, n, dim, eps, act);
    cuda__check_launch(c, "add_rmsnorm");
}
static void op_gather_rows(void *ctx, void *out, const void *x, const int32_t *rows, int n, int dim, sl_dtype act) {
    cuda_ctx *c = ctx;
    if (!op_ready(c, act, "gather_rows")) return;
    cuda_gather_rows(c->stream, out, x, rows, n, dim, act);
    cuda__check_launch(c, "gather_rows");
}

static void op_sample(void *ctx, int32_t *tokens, const float *logits, const sl_sample_row *rows,
                      const uint32_t *masks, int n, int vocab) {
    cuda_ctx *c = ctx;
    if (c->failed) return;
    cuda_sample(c->stream, tokens, logits, rows, masks, n, vocab);
    cuda__check_launch(c, "sample");
}

static int op_replay(void *ctx, uint64_t key, int (*record)(void *arg, sl_err *err), void *arg, sl_err *err) {
    return cuda__replay(ctx, key, record, arg, err);
}

static const sl_backend_iface k_cuda_iface = {
    .name = "cuda",
    .device_kind = "GPU",
    .shares_host_memory = 0,
    .host_memory = 0,
    .destroy = cuda_destroy,
    .describe = cuda_describe,
    .memory = cuda_memory,
    .activation_dtype = cuda_activation_dtype,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .alloc_host = cuda_alloc_host,
    .free_host = cuda_free_host,
    .upload = cuda_upload,
    .download = cuda_download,
    .weight_load = cuda_weight_load,
    .weight_free = cuda_weight_free,
    .embed = op_embed,
    .matmul = op_matmul,
    .rmsnorm = op_rmsnorm,
    .rope_kv_store = op_rope_kv_store,
    .attention = op_attention,
    .swiglu = op_swiglu,
    .add = op_add,
    .add_rmsnorm = op_add_rmsnorm,
    .gather_rows = op_gather_rows,
    .sample = op_sample,
    .synchronize = cuda_synchronize,
    .replay = op_replay,
};

/* The GPU of this rank: its index among the machine's ranks, round robin over the GPUs, or the
 * local rank the launcher tells. */
static int pick_device(int asked, int n_devices) {
    if (asked >= 0) return asked % n_devices;
    const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v) % n_devices;
    }
    return 0;
}

static int setup(cuda_ctx *c, sl_err *err) {
    cudaError_t e;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess || (e = cudaGetDeviceProperties(&c->prop, c->device)) != cudaSuccess)
        return cuda_error(err, e, "opening the device", c->device);
    cuda_set_dependent_launch(c->prop.major);
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return cuda_error(err, e, "creating a stream", c->device);
    cublasStatus_t st = cublasLtCreate(&c->lt);
    if (st != CUBLAS_STATUS_SUCCESS)
        return sl_err_set(err, SL_EINTERNAL, "cuBLASLt did not start on GPU %d: %s", c->device, cublasLtGetStatusString(st));
    c->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    c->attn_workspace_bytes = ATTN_WORKSPACE_BYTES;
    c->staging_bytes = STAGING_BYTES;
    int rc = cuda_alloc(c, c->lt_workspace_bytes, &c->lt_workspace, err);
    if (!rc) rc = cuda_alloc(c, c->attn_workspace_bytes, &c->attn_workspace, err);
    for (int i = 0; i < 2 && !rc; i++) {
        if ((e = cudaMallocHost(&c->staging[i], c->staging_bytes)) != cudaSuccess ||
            (e = cudaEventCreateWithFlags(&c->staged[i], cudaEventDisableTiming)) != cudaSuccess)
            rc = cuda_error(err, e, "allocating the pinned staging buffers", c->device);
    }
    return rc;
}

int sl_cuda_backend_create(const sl_backend_options *o, sl_backend *out, sl_err *err) {
    const int n = sl_cuda_device_count();
    if (n == 0)
        return sl_err_set(err, SL_ENOTFOUND, "--device cuda: no GPU is visible to this process (check nvidia-smi and "
                          "CUDA_VISIBLE_DEVICES), or use --device cpu");
    const int device = pick_device(o->device_index, n);
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return sl_err_set(err, SL_ENOMEM, "out of memory");
    c->device = device;
    c->enforce_eager = o->enforce_eager;
    int rc = setup(c, err);
    if (rc) {
        cuda_destroy(c);
        return rc;
    }
    *out = (sl_backend){.iface = &k_cuda_iface, .ctx = c};
    return SL_OK;
}

cudaStream_t sl_cuda_backend_stream(const sl_backend *b) { return ((const cuda_ctx *)b->ctx)->stream; }

void sl_cuda_backend_enqueued(const sl_backend *b) { cuda_enqueued_other(((const cuda_ctx *)b->ctx)->stream); }

long sl_cuda_backend_gemm_pairs(const sl_backend *b) { return ((const cuda_ctx *)b->ctx)->n_gemm_pairs; }
