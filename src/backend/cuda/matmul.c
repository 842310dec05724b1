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
 * in a table (cuda_ctx.plans) keyed by (rows, n, cols, weights' dtype, D's
 * dtype); a full table makes the plan per call, which only costs time. All
 * projections of one call share the weights' dtype and cols. */
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

static int plan_make(cuda_ctx *c, cuda_gemm_plan *p, int64_t m, int64_t n, int64_t k, sl_dtype dtype,
                     sl_dtype out_dtype) {
    const cudaDataType t = data_type(dtype);
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    *p = (cuda_gemm_plan){.m = m, .n = n, .k = k, .dtype = dtype, .out_dtype = out_dtype};
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
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        if (!c->failed) {
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
static cuda_gemm_plan *plan_for(cuda_ctx *c, int64_t m, int64_t n, int64_t k, sl_dtype dtype, sl_dtype out_dtype,
                                cuda_gemm_plan *spare) {
    uint64_t h = ((uint64_t)m * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full) ^
                 ((uint64_t)k * 0x165667B19E3779F9ull) ^ (uint64_t)dtype ^ ((uint64_t)out_dtype << 8);
    for (int probe = 0; probe < 16; probe++) {
        cuda_gemm_plan *p = &c->plans[(h + (uint64_t)probe) % CUDA_GEMM_PLANS];
        if (p->m == m && p->n == n && p->k == k && p->dtype == dtype && p->out_dtype == out_dtype) return p;
        if (p->m == 0) return plan_make(c, p, m, n, k, dtype, out_dtype) ? NULL : p;
    }
    return plan_make(c, spare, m, n, k, dtype, out_dtype) ? NULL : spare;
}

/* out (of out_dtype: the weights' type or float32) = x (of the weights' type) * w^T. */
static void gemm(cuda_ctx *c, void *out, sl_dtype out_dtype, const sl_weight *w, const void *x, int n) {
    cuda_gemm_plan spare = {0}, *p = plan_for(c, w->rows, n, w->cols, w->dtype, out_dtype, &spare);
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
        gemm(c, d, d_dtype, proj[p].w, input, n);
        if (proj[p].bias) cuda_add_bias(c->stream, d, d_dtype, proj[p].bias, n, rows);
        if (d != proj[p].out) cuda_cast(c->stream, proj[p].out, out_dtype, d, d_dtype, (int64_t)n * rows);
    }
    cuda__check_launch(c, "matmul");
}
