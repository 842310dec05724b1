/* matmul.c -- the CUDA backend's matmul: cuBLASLt GEMMs, a GEMV for few tokens.
 *
 * out[n][rows] = x[n][cols] * w^T with w as torch.nn.Linear stores it
 * (row-major [rows][cols]). In cuBLASLt's column-major terms that is
 * D(rows x n) = op(A) * B with A the weight read transposed (A is cols x rows,
 * leading dimension cols) and B the input (cols x n, leading dimension cols):
 * the "TN" GEMM, the layout Hopper's kernels prefer.
 *
 * The input is of the activation type `act` (backend.h) and the GEMM's B of
 * the weights' type: the two are the same in the common case (a bf16 model
 * runs bf16 activations) and the input goes in as it is; otherwise (float32
 * activations over 16-bit weights, as --matmul-precision medium does on the
 * CPU; float16 over bfloat16; 16-bit over float32 weights) cuda_cast converts
 * it into a scratch buffer first. Sums are float32 (CUBLAS_COMPUTE_32F; for
 * float32 weights a plain float32 GEMM, no TF32). D is of the output's type
 * (`act`, or float32 where the projection's f32_out: the LM head's logits)
 * when cuBLASLt has that combination -- D of the weights' 16-bit type or
 * float32 -- and otherwise float32 into a scratch buffer, converted after. A
 * bias is added to D afterwards (cuda_add_bias; on a 16-bit D that rounds
 * twice, within one more unit of the 16-bit type).
 * Up to CUDA_GEMV_MAX_N tokens over 16-bit weights go to gemv.cu instead,
 * which reads the weights at close to the memory's speed; the two paths sum in
 * different orders, so a token's logits can differ in the last bits between a
 * step of few tokens and one of many.
 *
 * A shape's descriptors and the heuristic's algorithm are made once and kept
 * in a table (cuda_ctx.plans) keyed by (rows, n, cols, batch, weights' dtype,
 * D's dtype); a full table makes the plan per call, which only costs time. All
 * projections of one call share the weights' dtype and cols. Two projections
 * of a call with the same shape (k and v, gate and up) are one strided-batched
 * GEMM of two (gemm_pair): the weights' and outputs' distances are the batch
 * strides, the input's is 0. k and v of the 8B shape have 1024 rows each, too
 * few tiles to fill an H100 alone. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/kernels.h"

static cudaDataType data_type(sl_dtype t) {
    return t == SL_DTYPE_BF16 ? CUDA_R_16BF : t == SL_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static void plan_destroy(cuda_gemm_plan *p) {
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

void cuda__gemm_plans_destroy(cuda_ctx *c) {
    for (int i = 0; i < CUDA_GEMM_PLANS; i++)
        if (c->plans[i].m) plan_destroy(&c->plans[i]);
}

/* A batch of two: batch count 2 on every matrix, B's stride 0 (one input); A's and D's strides are set per call
 * (gemm_pair), here to what two adjacent matrices would have. */
static cublasStatus_t set_batch(cuda_gemm_plan *p) {
    const int32_t count = 2;
    const int64_t stride_a = p->m * p->k, stride_b = 0, stride_d = p->m * p->n;
    cublasLtMatrixLayout_t layouts[3] = {p->a, p->b, p->d};
    const int64_t strides[3] = {stride_a, stride_b, stride_d};
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i < 3 && st == CUBLAS_STATUS_SUCCESS; i++) {
        st = cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                  sizeof strides[i]);
    }
    return st;
}

/* A shape's plan into *p; where cuBLASLt has none, the error is the context's (a batch of two only says so:
 * its caller runs two GEMMs instead). */
static int plan_make(cuda_ctx *c, cuda_gemm_plan *p, int64_t m, int64_t n, int64_t k, int batch, sl_dtype dtype,
                     sl_dtype out_dtype) {
    const cudaDataType t = data_type(dtype);
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    *p = (cuda_gemm_plan){.m = m, .n = n, .k = k, .batch = batch, .dtype = dtype, .out_dtype = out_dtype};
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    const size_t ws = c->lt_workspace_bytes;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p->a, t, (uint64_t)k, (uint64_t)m, k);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p->b, t, (uint64_t)k, (uint64_t)n, k);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->d, data_type(out_dtype), (uint64_t)m, (uint64_t)n, m);
    if (st == CUBLAS_STATUS_SUCCESS && batch == 2) st = set_batch(p);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        if (batch == 1 && !c->failed) {
            sl_err_set(&c->err, SL_ENOTSUP, "cuBLASLt has no GEMM for %lld x %lld x %lld in %s to %s (%s)",
                       (long long)m, (long long)n, (long long)k, sl_dtype_name(dtype), sl_dtype_name(out_dtype),
                       cublasLtGetStatusString(st));
            c->failed = 1;
        }
        plan_destroy(p);
        return -1;
    }
    p->algo = result.algo;
    return 0;
}

/* The plan of a shape: kept in the table, or made into *spare when the table is full. */
static cuda_gemm_plan *plan_for(cuda_ctx *c, int64_t m, int64_t n, int64_t k, int batch, sl_dtype dtype,
                                sl_dtype out_dtype, cuda_gemm_plan *spare) {
    uint64_t h = ((uint64_t)m * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full) ^
                 ((uint64_t)k * 0x165667B19E3779F9ull) ^ (uint64_t)dtype ^ ((uint64_t)out_dtype << 8) ^
                 ((uint64_t)batch << 16);
    for (int probe = 0; probe < 16; probe++) {
        cuda_gemm_plan *p = &c->plans[(h + (uint64_t)probe) % CUDA_GEMM_PLANS];
        if (p->m == m && p->n == n && p->k == k && p->batch == batch && p->dtype == dtype && p->out_dtype == out_dtype)
            return p;
        if (p->m == 0) return plan_make(c, p, m, n, k, batch, dtype, out_dtype) ? NULL : p;
    }
    return plan_make(c, spare, m, n, k, batch, dtype, out_dtype) ? NULL : spare;
}

/* out (of out_dtype: the weights' type or float32) = x (of the weights' type) * w^T. */
static void gemm(cuda_ctx *c, void *out, sl_dtype out_dtype, const sl_weight *w, const void *x, int n) {
    cuda_gemm_plan spare = {0}, *p = plan_for(c, w->rows, n, w->cols, 1, w->dtype, out_dtype, &spare);
    if (!p) return;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasLtMatmul(c->lt, p->op, &one, w->data, p->a, x, p->b, &zero, out, p->d, out, p->d,
                                       &p->algo, c->lt_workspace, c->lt_workspace_bytes, c->stream);
    cuda_enqueued_other(c->stream);
    if (st != CUBLAS_STATUS_SUCCESS && !c->failed) {
        sl_err_set(&c->err, SL_EINTERNAL, "cuBLASLt GEMM %lld x %d x %lld failed: %s", (long long)w->rows, n,
                   (long long)w->cols, cublasLtGetStatusString(st));
        c->failed = 1;
    }
    if (p == &spare) plan_destroy(&spare);
}

/* The distance from a to b in elements of `size` bytes, when it is a whole number of 256-byte units (what
 * every algorithm's alignment allows) and at least `span` elements either way (the two do not overlap); else 0. */
static int64_t batch_stride(const void *a, const void *b, size_t size, int64_t span) {
    const int64_t bytes = (int64_t)((const char *)b - (const char *)a);
    if (bytes % 256 != 0) return 0;
    const int64_t elems = bytes / (int64_t)size;
    return elems >= span || elems <= -span ? elems : 0;
}

/* p0's and p1's outputs (D of d_dtype, theirs) = x * their weights^T as one GEMM of a batch of two, where
 * their weights and outputs lie at distances it can take; false where it did not (the caller runs two). */
static bool gemm_pair(cuda_ctx *c, const sl_proj *p0, const sl_proj *p1, sl_dtype d_dtype, const void *x, int n) {
    const sl_weight *w0 = p0->w, *w1 = p1->w;
    if (c->no_gemm_pairs || w1->rows != w0->rows) return false;
    const size_t w_size = sl_dtype_n_bytes(w0->dtype), d_size = sl_dtype_n_bytes(d_dtype);
    int64_t stride_a = batch_stride(w0->data, w1->data, w_size, w0->rows * w0->cols);
    int64_t stride_d = batch_stride(p0->out, p1->out, d_size, w0->rows * (int64_t)n);
    if (stride_a == 0 || stride_d == 0 || (stride_a > 0) != (stride_d > 0)) return false;
    const void *a = w0->data;
    void *d = p0->out;
    if (stride_a < 0) a = w1->data, d = p1->out, stride_a = -stride_a, stride_d = -stride_d; /* the lower first */
    cuda_gemm_plan spare = {0}, *p = plan_for(c, w0->rows, n, w0->cols, 2, w0->dtype, d_dtype, &spare);
    if (!p) {
        c->no_gemm_pairs = 1;
        return false;
    }
    cublasStatus_t st = cublasLtMatrixLayoutSetAttribute(p->a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride_a,
                                                         sizeof stride_a);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutSetAttribute(p->d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride_d,
                                              sizeof stride_d);
    const float one = 1.0f, zero = 0.0f;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmul(c->lt, p->op, &one, a, p->a, x, p->b, &zero, d, p->d, d, p->d, &p->algo, c->lt_workspace,
                            c->lt_workspace_bytes, c->stream);
    cuda_enqueued_other(c->stream);
    if (st != CUBLAS_STATUS_SUCCESS && !c->failed) {
        sl_err_set(&c->err, SL_EINTERNAL, "cuBLASLt GEMM of two %lld x %d x %lld failed: %s", (long long)w0->rows, n,
                   (long long)w0->cols, cublasLtGetStatusString(st));
        c->failed = 1;
    }
    if (p == &spare) plan_destroy(&spare);
    c->n_gemm_pairs++;
    return true;
}

/* A scratch buffer (the converted input, the float32 output) holds n_bytes: grown (after the stream has
 * drained) when a step needs more; the graphs recorded with the old one go. A graph's first call has grown
 * it before it is recorded. */
static int reserve(cuda_ctx *c, void **buf, size_t *have, size_t n_bytes, const char *what) {
    if (n_bytes <= *have) return 0;
    char msg[128];
    if (c->capturing) {
        snprintf(msg, sizeof msg, "recording a graph: %s is too small", what);
        cuda__fail(c, cudaErrorStreamCaptureUnsupported, msg);
        return -1;
    }
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) {
        cuda__graphs_drop(c);
        cudaFree(*buf);
        *buf = NULL;
        *have = 0;
        e = cudaMalloc(buf, n_bytes);
    }
    if (e != cudaSuccess) {
        snprintf(msg, sizeof msg, "growing %s", what);
        cuda__fail(c, e, msg);
        return -1;
    }
    *have = n_bytes;
    return 0;
}

/* What D of a GEMM over weights of dtype can be for an output of out_dtype: itself where cuBLASLt has the
 * combination (D of the weights' type, or float32), else float32 (converted after). */
static sl_dtype gemm_out_dtype(sl_dtype dtype, sl_dtype out_dtype) {
    return out_dtype == dtype ? dtype : SL_DTYPE_F32;
}

void cuda__matmul(cuda_ctx *c, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act) {
    const sl_dtype dtype = proj[0].w->dtype;
    const int64_t cols = proj[0].w->cols;
    if (n <= 0 || c->failed) return;
    if (dtype != SL_DTYPE_F32 && n <= CUDA_GEMV_MAX_N && cols % 8 == 0 && ((uintptr_t)x & 15u) == 0) {
        cuda_gemv(c->stream, proj, n_proj, x, n, act);
        cuda__check_launch(c, "gemv");
        return;
    }
    /* the scratch buffers first: growing one waits for the stream */
    size_t out_bytes = 0;
    for (int p = 0; p < n_proj; p++) {
        const sl_dtype out_dtype = proj[p].f32_out ? SL_DTYPE_F32 : act;
        const size_t bytes = (size_t)n * (size_t)proj[p].w->rows * sizeof(float);
        if (gemm_out_dtype(dtype, out_dtype) != out_dtype && bytes > out_bytes) out_bytes = bytes;
    }
    if (act != dtype && reserve(c, &c->cast, &c->cast_bytes, (size_t)n * (size_t)cols * sl_dtype_n_bytes(dtype),
                                "the matmul's input buffer"))
        return;
    if (out_bytes && reserve(c, &c->gemm_out, &c->gemm_out_bytes, out_bytes, "the matmul's output buffer")) return;

    const void *input = x;
    if (act != dtype) {
        cuda_cast(c->stream, c->cast, dtype, x, act, (int64_t)n * cols);
        input = c->cast;
    }
    for (int p = 0; p < n_proj; p++) {
        const int64_t rows = proj[p].w->rows;
        const sl_dtype out_dtype = proj[p].f32_out ? SL_DTYPE_F32 : act, d_dtype = gemm_out_dtype(dtype, out_dtype);
        void *d = d_dtype == out_dtype ? proj[p].out : c->gemm_out;
        /* a pair written where it goes (no float32 scratch between): one GEMM, then each bias */
        if (d == proj[p].out && p + 1 < n_proj && proj[p + 1].f32_out == proj[p].f32_out &&
            gemm_pair(c, &proj[p], &proj[p + 1], d_dtype, input, n)) {
            for (int q = p; q <= p + 1; q++)
                if (proj[q].bias) cuda_add_bias(c->stream, proj[q].out, d_dtype, proj[q].bias, n, rows);
            p++;
            continue;
        }
        gemm(c, d, d_dtype, proj[p].w, input, n);
        if (proj[p].bias) cuda_add_bias(c->stream, d, d_dtype, proj[p].bias, n, rows);
        if (d != proj[p].out) cuda_cast(c->stream, proj[p].out, out_dtype, d, d_dtype, (int64_t)n * rows);
    }
    cuda__check_launch(c, "matmul");
}
