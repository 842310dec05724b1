/* attention_bench.c -- the CPU attention kernel alone, over the default
 * model's shapes (SmolLM2-135M: 9 query heads, 3 KV heads of 64, 30 layers),
 * each layer its own paged cache with the blocks scattered, as a server's
 * pool leaves them.
 *
 * decode: SEQS sequences of CONTEXT tokens, one query each per layer: the
 * KV cache is read once per step, so the figure that matters is GB/s of KV
 * read, printed beside a plain sum over a buffer of the same size (the
 * memory's limit on this machine, same threads). prefill: SEQS prompts of
 * CONTEXT new tokens each: GFLOP/s of QK and PV products.
 * Usage: attention_bench [float32|float16|bfloat16] [SEQS] [CONTEXT] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu/kernels.h"
#include "util/progress.h"

enum { LAYERS = 30, HEADS = 9, KV_HEADS = 3, HEAD_DIM = 64, BLOCK = 16 };

static cpu_pool *g_pool;

static void *huge_alloc(size_t n_bytes) {
    void *p = mmap(NULL, n_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, n_bytes, MADV_HUGEPAGE);
    memset(p, 1, n_bytes); /* touched: no first-touch faults in the timing */
    return p;
}

typedef struct sum_args {
    const float *x;
    double *partial; /* per thread */
} sum_args;

static void sum_range(void *varg, int64_t begin, int64_t end, int thread) {
    sum_args *a = varg;
    float acc[16] = {0};
    for (int64_t i = begin * 16; i < end * 16; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a->x[i + l];
    double s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    a->partial[thread] += s;
}

/* Best of 5 sums over n_bytes, as GB/s: what the memory gives these threads. */
static double sum_bandwidth(const void *buf, size_t n_bytes) {
    double partial[256] = {0}, best = 0;
    sum_args a = {buf, partial};
    for (int r = 0; r < 5; r++) {
        double t0 = sl_now_s();
        cpu_pool_for(g_pool, (int64_t)(n_bytes / 64), 1, sum_range, &a);
        double gbs = (double)n_bytes / (sl_now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    if (partial[0] == 12345.0) printf(" "); /* keep the sums */
    return best;
}

int main(int argc, char **argv) {
    const char *dtype_name = argc > 1 ? argv[1] : "float16";
    const int seqs = argc > 2 ? atoi(argv[2]) : 64, context = argc > 3 ? atoi(argv[3]) : 192;
    const sl_dtype dtype = strcmp(dtype_name, "float32") == 0 ? SL_DTYPE_F32
                           : strcmp(dtype_name, "bfloat16") == 0 ? SL_DTYPE_BF16 : SL_DTYPE_F16;
    sl_err err = {0};
    if (seqs < 1 || context < 1 || cpu_pool_create(0, &g_pool, &err)) {
        fprintf(stderr, "usage: attention_bench [float32|float16|bfloat16] [SEQS] [CONTEXT] %s\n", err.msg);
        return 1;
    }
    const int blocks_per_seq = (context + BLOCK - 1) / BLOCK, n_blocks = seqs * blocks_per_seq;
    sl_kv_cache kv[LAYERS];
    size_t cache_bytes = 0;
    for (int l = 0; l < LAYERS; l++) {
        kv[l] = (sl_kv_cache){.dtype = dtype, .block_size = BLOCK, .n_kv_heads = KV_HEADS, .head_dim = HEAD_DIM};
        kv[l].k = huge_alloc((size_t)n_blocks * sl_kv_block_bytes(&kv[l]));
        kv[l].v = huge_alloc((size_t)n_blocks * sl_kv_block_bytes(&kv[l]));
        if (!kv[l].k || !kv[l].v) return 1;
        cache_bytes += 2 * (size_t)n_blocks * sl_kv_block_bytes(&kv[l]);
    }
    /* scattered block tables: a shuffled pool */
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) tables[i] = i;
    uint64_t rng = 88172645463325252ull;
    for (int i = n_blocks - 1; i > 0; i--) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        int j = (int)(rng % (uint64_t)(i + 1)), t = tables[i];
        tables[i] = tables[j], tables[j] = t;
    }
    const int q_dim = HEADS * HEAD_DIM, max_tokens = seqs * context;
    float *q = malloc(sizeof(float) * (size_t)max_tokens * q_dim), *out = malloc(sizeof(float) * (size_t)max_tokens * q_dim);
    for (int64_t i = 0; i < (int64_t)max_tokens * q_dim; i++) q[i] = 0.01f * (float)(i % 17);
    int32_t *qs = malloc(sizeof(int32_t) * (size_t)(seqs + 1)), *ctx = malloc(sizeof(int32_t) * (size_t)seqs);
    const float scale = 1.0f / sqrtf((float)HEAD_DIM);

    /* decode: one query per sequence at the end of its context */
    for (int s = 0; s <= seqs; s++) qs[s] = s;
    for (int s = 0; s < seqs; s++) ctx[s] = context;
    sl_attn_batch b = {.n_seqs = seqs, .max_blocks = blocks_per_seq, .max_context_len = context, .query_start = qs,
                       .context_len = ctx, .block_tables = tables};
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        double t0 = sl_now_s();
        for (int l = 0; l < LAYERS; l++) cpu_attention(g_pool, out, q, &kv[l], &b, HEADS, scale);
        double dt = sl_now_s() - t0;
        if (dt < best) best = dt;
    }
    const double kv_read = (double)seqs * context * LAYERS * 2.0 * KV_HEADS * HEAD_DIM * (double)sl_dtype_n_bytes(dtype);
    /* the memory's limit: one pass over a buffer as large as the whole cache */
    void *flat = huge_alloc(cache_bytes);
    const double mem = flat ? sum_bandwidth(flat, cache_bytes) : 0;
    printf("decode  %s, %d sequences x %d tokens, %d layers: %.2f ms per step, %.1f GB/s of KV (%.0f%% of the %.1f GB/s "
           "a sum over %.0f MB reaches), %d threads\n",
           dtype_name, seqs, context, LAYERS, best * 1e3, kv_read / best / 1e9, 100.0 * kv_read / best / 1e9 / mem, mem,
           cache_bytes / 1e6, cpu_pool_n_threads(g_pool));

    /* prefill: every sequence's CONTEXT tokens new */
    for (int s = 0; s <= seqs; s++) qs[s] = s * context;
    best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = sl_now_s();
        for (int l = 0; l < LAYERS; l++) cpu_attention(g_pool, out, q, &kv[l], &b, HEADS, scale);
        double dt = sl_now_s() - t0;
        if (dt < best) best = dt;
    }
    const double flops = (double)seqs * LAYERS * HEADS * 4.0 * HEAD_DIM * ((double)context * (context + 1) / 2);
    printf("prefill %s, %d prompts of %d tokens, %d layers: %.2f ms, %.1f GFLOP/s of QK and PV\n", dtype_name, seqs,
           context, LAYERS, best * 1e3, flops / best / 1e9);
    for (int l = 0; l < LAYERS; l++)
        munmap(kv[l].k, (size_t)n_blocks * sl_kv_block_bytes(&kv[l])), munmap(kv[l].v, (size_t)n_blocks * sl_kv_block_bytes(&kv[l]));
    if (flat) munmap(flat, cache_bytes);
    free(tables), free(q), free(out), free(qs), free(ctx);
    cpu_pool_destroy(g_pool);
    return 0;
}
