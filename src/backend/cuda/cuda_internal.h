/* cuda_internal.h -- the CUDA backend's state, shared by cuda_backend.c and matmul.c.
 *
 * One context per rank: its GPU, one stream every op is issued on, the
 * cuBLASLt handle with its workspace and plans, and the scratch memory the
 * ops use (the matmul's converted input and float32 output, attention's split
 * partials), and the CUDA graphs of step shapes (graph.c). Ops return
 * nothing (the backend interface's habit): the first failure is kept here and
 * returned by the next synchronize, with where it happened. */
#ifndef SL_BACKEND_CUDA_CUDA_INTERNAL_H
#define SL_BACKEND_CUDA_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"

#define CUDA_GEMM_PLANS 512
#define CUDA_GRAPHS 512

/* One step shape's CUDA graph (graph.c). */
typedef struct cuda_graph {
    uint64_t key;                   /* 0: an empty slot */
    int runs;                       /* calls before the graph was recorded */
    cudaGraphExec_t exec;           /* NULL until recorded, and after the graphs were dropped */
} cuda_graph;

/* One GEMM shape's cuBLASLt descriptors and the algorithm its heuristic chose. */
typedef struct cuda_gemm_plan {
    int64_t m, n, k;                /* m = 0: an empty slot */
    int batch;                      /* 1, or 2: a pair of weights over one input (matmul.c's gemm_pair) */
    sl_dtype dtype;                 /* of the weights (and the input, converted to it where it is not) */
    sl_dtype out_dtype;             /* of D: the weights' type or float32 */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} cuda_gemm_plan;

typedef struct cuda_ctx {
    int device;
    struct cudaDeviceProp prop;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    cuda_gemm_plan plans[CUDA_GEMM_PLANS];   /* open addressing by shape */
    int no_gemm_pairs;              /* cuBLASLt had no batched GEMM for a pair: two GEMMs from then on */
    long n_gemm_pairs;              /* pairs run as one GEMM so far (tests ask) */
    void *cast;                     /* a matmul's input converted to the weights' type; grows to the largest step's */
    size_t cast_bytes;
    void *gemm_out;                 /* a GEMM's float32 output where D cannot be the activation type; grows too */
    size_t gemm_out_bytes;
    void *attn_workspace;           /* attention's split-context partials */
    size_t attn_workspace_bytes;
    void *staging[2];               /* pinned buffers weights go through on their way up */
    cudaEvent_t staged[2];          /* the copy out of each staging buffer has finished */
    size_t staging_bytes;
    int next_staging;               /* the buffer the next piece goes through */
    cuda_graph graphs[CUDA_GRAPHS]; /* open addressing by key */
    int n_recorded;                 /* graphs recorded so far (dropped ones included) */
    int enforce_eager;              /* replay never records */
    int capturing;                  /* record runs under stream capture: nothing may allocate */
    int failed;                     /* an op failed: err holds the first failure */
    sl_err err;
} cuda_ctx;

/* Keeps the first failure of an op (a CUDA call's status) for the next synchronize. */
void cuda__fail(cuda_ctx *c, cudaError_t e, const char *what);
/* Records a failure of the last launch, if any. */
void cuda__check_launch(cuda_ctx *c, const char *what);

void cuda__matmul(cuda_ctx *c, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act);
void cuda__gemm_plans_destroy(cuda_ctx *c);

/* backend.h's replay (graph.c). */
int cuda__replay(cuda_ctx *c, uint64_t key, int (*record)(void *arg, sl_err *err), void *arg, sl_err *err);
/* Destroys every recorded graph (their keys record again on their next call). */
void cuda__graphs_drop(cuda_ctx *c);

#endif
