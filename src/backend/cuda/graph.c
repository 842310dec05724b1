/* graph.c -- the CUDA backend's replay: a step's ops kept as CUDA graphs.
 *
 * A decode step issues a few hundred small kernels; launched one by one,
 * the host's launch time, not the GPU, sets the step's pace at small batch
 * sizes. replay keeps the ops of a step shape (the caller's key) as a CUDA
 * graph and launches the whole step at once from then on:
 *
 *   first call of a key    record runs as it is: cuBLASLt plans, the matmul's
 *                          input buffer and kernel attributes are made here,
 *                          outside any capture
 *   second call            record runs under stream capture; the graph is
 *                          instantiated and launched
 *   later calls            the graph is launched; record is not called
 *
 * The graphs point at the buffers they were recorded with, so when the
 * matmul's input buffer grows (matmul.c) every graph is dropped and
 * recorded again on its key's next call. The table holds CUDA_GRAPHS keys;
 * keys past that run as they are. */
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/kernels.h"
#include "util/log.h"

static cuda_graph *slot_of(cuda_ctx *c, uint64_t key) {
    const uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (int probe = 0; probe < 16; probe++) {
        cuda_graph *g = &c->graphs[(h + (uint64_t)probe) % CUDA_GRAPHS];
        if (g->key == key) return g;
        if (g->key == 0) {
            g->key = key;
            return g;
        }
    }
    return NULL;
}

void cuda__graphs_drop(cuda_ctx *c) {
    for (int i = 0; i < CUDA_GRAPHS; i++)
        if (c->graphs[i].exec) {
            cudaGraphExecDestroy(c->graphs[i].exec);
            c->graphs[i].exec = NULL;
        }
}

static int launch(cuda_ctx *c, cuda_graph *g, sl_err *err) {
    cudaError_t e = cudaGraphLaunch(g->exec, c->stream);
    cuda_enqueued_other(c->stream);
    if (e == cudaSuccess) return SL_OK;
    cuda__fail(c, e, "launching a step's CUDA graph");
    *err = c->err;
    return err->code;
}

/* Runs record under stream capture, then launches what it issued. */
static int capture(cuda_ctx *c, cuda_graph *g, int (*record)(void *arg, sl_err *err), void *arg, sl_err *err) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        cuda__fail(c, e, "starting to record a CUDA graph");
        *err = c->err;
        return err->code;
    }
    c->capturing = 1;
    int rc = record(arg, err);
    c->capturing = 0;
    e = cudaStreamEndCapture(c->stream, &graph);
    if (!rc && !c->failed && e == cudaSuccess) e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (rc) return rc;
    if (e != cudaSuccess) cuda__fail(c, e, "recording a step as a CUDA graph (--enforce-eager runs without graphs)");
    if (c->failed) {
        *err = c->err;
        return err->code;
    }
    SL_DEBUG("CUDA graph %d recorded, for step key %#llx", ++c->n_recorded, (unsigned long long)g->key);
    return launch(c, g, err);
}

int cuda__replay(cuda_ctx *c, uint64_t key, int (*record)(void *arg, sl_err *err), void *arg, sl_err *err) {
    cuda_graph *g = key && !c->enforce_eager && !c->failed ? slot_of(c, key) : NULL;
    if (!g) return record(arg, err);
    if (g->exec) return launch(c, g, err);
    if (g->runs++ == 0) return record(arg, err);
    return capture(c, g, record, arg, err);
}
