/* matmul.c -- the CUDA backend's matmul: cuBLASLt GEMMs, a GEMV for few tokens.
 *
 * out[n][rows] = x[n][cols] * w^T with w as torch.nn.Linear stores it
 * (row-major [rows][cols]). In cuBLASLt's column-major terms that is
 * D(rows x n) = op(A) * B with A the weight read transposed (A is cols x rows,
 * leading dimension cols) and B the input (cols x n, leading dimension cols):
 * the "TN" GEMM, the layout Hopper's kernels prefer.
 *
 * 16-bit weights multiply the input rounded to their type, summing in float32
 * into a float32 output (what --matmul-precision medium does on the CPU);
 * float32 weights (small test models) run a plain float32 GEMM, no TF32.
 * Up to CUDA_GEMV_MAX_N tokens over 16-bit weights go to gemv.cu instead,
 * which reads the weights at close to the memory's speed; the two paths sum in
 * different orders, so a token's logits can differ in the last bits between a
 * step of few tokens and one of many.
 *
 * A shape's descriptors and the heuristic's algorithm are made once and kept
 * in a table (cuda_ctx.plans) keyed by (rows, n, cols, dtype); a full table
 * makes the plan per call, which only costs time. */
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

static int plan_make(cuda_ctx *c, cuda_gemm_plan *p, int64_t m, int64_t n, int64_t k, sl_dtype dtype) {
    const cudaDataType t = data_type(dtype);
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    *p = (cuda_gemm_plan){.m = m, .n = n, .k = k, .dtype = dtype};
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
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, (uint64_t)m, (uint64_t)n, m);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        if (!c->failed) {
            sl_err_set(&c->err, SL_ENOTSUP, "cuBLASLt has no GEMM for %lld x %lld x %lld in %s (%s)", (long long)m,
                       (long long)n, (long long)k, sl_dtype_name(dtype), cublasLtGetStatusString(st));
            c->failed = 1;
        }
        plan_destroy(p);
        return -1;
    }
    p->algo = result.algo;
    return 0;
}

/* The plan of a shape: kept in the table, or made into *spare when the table is full. */
static cuda_gemm_plan *plan_for(cuda_ctx *c, int64_t m, int64_t n, int64_t k, sl_dtype dtype, cuda_gemm_plan *spare) {
    uint64_t h = ((uint64_t)m * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full) ^
                 ((uint64_t)k * 0x165667B19E3779F9ull) ^ (uint64_t)dtype;
    for (int probe = 0; probe < 16; probe++) {
        cuda_gemm_plan *p = &c->plans[(h + (uint64_t)probe) % CUDA_GEMM_PLANS];
        if (p->m == m && p->n == n && p->k == k && p->dtype == dtype) return p;
        if (p->m == 0) return plan_make(c, p, m, n, k, dtype) ? NULL : p;
    }
    return plan_make(c, spare, m, n, k, dtype) ? NULL : spare;
}

static void gemm(cuda_ctx *c, float *out, const sl_weight *w, const void *x, int n) {
    cuda_gemm_plan spare = {0}, *p = plan_for(c, w->rows, n, w->cols, w->dtype, &spare);
    if (!p) return;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasLtMatmul(c->lt, p->op, &one, w->data, p->a, x, p->b, &zero, out, p->d, out, p->d,
                                       &p->algo, c->lt_workspace, c->lt_workspace_bytes, c->stream);
    if (st != CUBLAS_STATUS_SUCCESS && !c->failed) {
        sl_err_set(&c->err, SL_EINTERNAL, "cuBLASLt GEMM %lld x %d x %lld failed: %s", (long long)w->rows, n,
                   (long long)w->cols, cublasLtGetStatusString(st));
        c->failed = 1;
    }
    if (p == &spare) plan_destroy(&spare);
}

/* The rounded-input buffer holds n_bytes: grown (after the stream has drained) when a step needs more;
 * the graphs recorded with the old one go. A graph's first call has grown it before it is recorded. */
static int reserve_cast(cuda_ctx *c, size_t n_bytes) {
    if (n_bytes <= c->cast_bytes) return 0;
    if (c->capturing) {
        cuda__fail(c, cudaErrorStreamCaptureUnsupported, "recording a graph: the matmul's input buffer is too small");
        return -1;
    }
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) {
        cuda__graphs_drop(c);
        cudaFree(c->cast);
        c->cast = NULL;
        c->cast_bytes = 0;
        e = cudaMalloc(&c->cast, n_bytes);
    }
    if (e != cudaSuccess) {
        cuda__fail(c, e, "growing the matmul's input buffer");
        return -1;
    }
    c->cast_bytes = n_bytes;
    return 0;
}

void cuda__matmul(cuda_ctx *c, const sl_proj *proj, int n_proj, const float *x, int n) {
    const sl_dtype dtype = proj[0].w->dtype;
    const int64_t cols = proj[0].w->cols;
    if (n <= 0 || c->failed) return;
    if (dtype != SL_DTYPE_F32 && n <= CUDA_GEMV_MAX_N && cols % 8 == 0) {
        cuda_gemv(c->stream, proj, n_proj, x, n);
        cuda__check_launch(c, "gemv");
        return;
    }
    const void *input = x;
    if (dtype != SL_DTYPE_F32) {
        if (reserve_cast(c, (size_t)n * (size_t)cols * 2)) return;
        cuda_cast(c->stream, c->cast, dtype, x, (int64_t)n * cols);
        input = c->cast;
    }
    for (int p = 0; p < n_proj; p++) {
        gemm(c, proj[p].out, proj[p].w, input, n);
        if (proj[p].bias) cuda_add_bias(c->stream, proj[p].out, proj[p].bias, n, proj[p].w->rows);
    }
    cuda__check_launch(c, "matmul");
}
