/* gemm_bench.c -- the CPU matmul kernel alone, over the shapes of the
 * default model (SmolLM2-135M: hidden 576, MLP 1536, vocabulary 49152),
 * bf16 weights: GB/s of weights streamed for decode (one token) and GFLOP/s
 * for prefill (512 tokens). Run peak_flops beside it for the ceiling.
 * Usage: [SHARDLM_MATMUL_PRECISION=medium] gemm_bench [ROWS COLS TOKENS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu/kernels.h"

static cpu_scratch g_scratch; /* reused by every call */
static cpu_pool *g_pool;      /* OMP_NUM_THREADS threads, else all cores */
static int g_bf16_inputs;     /* SHARDLM_MATMUL_PRECISION=medium: x rounded to bf16 */
#include "util/progress.h"

static void run(int rows, int cols, int n) {
    size_t nw = (size_t)rows * (size_t)cols;
    uint16_t *w = malloc(nw * 2);
    float *x = malloc(sizeof(float) * (size_t)cols * (size_t)n), *out = malloc(sizeof(float) * (size_t)rows * (size_t)n);
    if (!w || !x || !out) return;
    for (size_t i = 0; i < nw; i++) w[i] = (uint16_t)(0x3f80 + (i & 7));
    for (int i = 0; i < cols * n; i++) x[i] = 0.01f * (float)(i % 13);
    sl_weight wt;
    /* in huge pages, as the CPU backend keeps weights */
    const size_t huge = (size_t)2 << 20, n_bytes = (cpu_packed_bytes(SL_DTYPE_BF16, rows, cols) + huge - 1) / huge * huge;
    void *packed = NULL;
    if (posix_memalign(&packed, huge, n_bytes)) return;
    madvise(packed, n_bytes, MADV_HUGEPAGE);
    cpu_weight_pack(g_pool, packed, &wt, w, SL_DTYPE_BF16, rows, cols, cols);
    sl_proj p = {out, &wt, NULL, 0};
    cpu_matmul(g_pool, &p, 1, x, n, g_bf16_inputs, &g_scratch);
    int reps = (int)(4e9 / (2.0 * nw * n + 1e6)) + 3;
    double t0 = sl_now_s();
    for (int r = 0; r < reps; r++) cpu_matmul(g_pool, &p, 1, x, n, g_bf16_inputs, &g_scratch);
    double dt = (sl_now_s() - t0) / reps;
    printf("%6d x %5d, %3d tokens: %8.3f ms  %6.1f GB/s of weights  %6.1f GFLOP/s  (%d threads%s)\n", rows, cols, n,
           dt * 1e3, (double)nw * 2 / dt / 1e9, 2.0 * (double)nw * n / dt / 1e9, cpu_pool_n_threads(g_pool), g_bf16_inputs ? ", bf16 inputs" : "");
    free(packed);
    free(w);
    free(x);
    free(out);
}

int main(int argc, char **argv) {
    sl_err err = {0};
    const char *precision = getenv("SHARDLM_MATMUL_PRECISION");
    g_bf16_inputs = precision && strcmp(precision, "medium") == 0;
    if (cpu_pool_create(0, &g_pool, &err)) {
        fprintf(stderr, "gemm_bench: %s\n", err.msg);
        return 1;
    }
    if (argc == 4) {
        run(atoi(argv[1]), atoi(argv[2]), atoi(argv[3]));
        cpu_pool_destroy(g_pool);
        return 0;
    }
    run(1536, 576, 1);    /* gate/up: fits in cache */
    run(49152, 576, 1);   /* LM head: streams from memory */
    run(1536, 576, 512);  /* prefill */
    run(49152, 576, 64);  /* LM head, 64 sequences */
    free(g_scratch.floats);
    cpu_pool_destroy(g_pool);
    return 0;
}
