/* test_kernels.c -- every CPU kernel against a naive double-precision
 * reference, over shapes that exercise the tiles' edges (rows and tokens not
 * multiples of 4) and every weight dtype. */
#include <math.h>
#include <stdatomic.h>
#include <time.h>

#include "backend/cpu/kernels.h"

static cpu_scratch g_scratch; /* reused by every call */
static cpu_pool *g_pool;      /* the kernels' threads; 1 or 3 of them */
#include "test.h"
#include "util/half.h"

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) { /* xorshift64, uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void fill(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = frand(); }

/* IEEE half of a float in [-1, 1], rounded to nearest even (normal and subnormal). */
static uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    float a = fabsf(f);
    if (a < 6.103515625e-05f) /* subnormal half: a multiple of 2^-24 */
        return (uint16_t)(sign | (uint16_t)nearbyintf(a * 16777216.0f));
    int e;
    float m = frexpf(a, &e);                                   /* a = m * 2^e, m in [0.5, 1) */
    uint32_t mant = (uint32_t)nearbyintf((m * 2.0f - 1.0f) * 1024.0f); /* 10 bits, may round up to 1024 */
    uint32_t exp = (uint32_t)(e - 1 + 15);
    if (mant == 1024) mant = 0, exp++;
    return (uint16_t)(sign | (exp << 10) | mant);
}

/* The weight as the backend keeps it (packed at load); free the returned memory. */
static void *packed(sl_weight *w, const void *src, sl_dtype dtype, int64_t rows, int64_t cols, int64_t stride) {
    void *mem = malloc(cpu_packed_bytes(dtype, rows, cols));
    cpu_weight_pack(g_pool, mem, w, src, dtype, rows, cols, stride);
    return mem;
}

static double rel_err(double got, double want) { return fabs(got - want) / (1.0 + fabs(want)); }

/* bf16_inputs: the reference rounds x to bf16 too (--matmul-precision medium). */
static void check_matmul(sl_dtype dtype, int rows, int cols, int n, int with_bias, int bf16_inputs) {
    float *x = malloc(sizeof(float) * (size_t)(n * cols)), *wf = malloc(sizeof(float) * (size_t)(rows * cols));
    float *bias = malloc(sizeof(float) * (size_t)rows), *out = malloc(sizeof(float) * (size_t)(n * rows));
    uint16_t *wh = malloc(2 * (size_t)(rows * cols));
    fill(x, (int64_t)n * cols);
    fill(wf, (int64_t)rows * cols);
    fill(bias, rows);
    for (int i = 0; i < rows * cols; i++) {
        if (dtype == SL_DTYPE_BF16) {
            wh[i] = sl_f32_to_bf16(wf[i]);
            wf[i] = sl_bf16_to_f32(wh[i]);
        } else if (dtype == SL_DTYPE_F16) {
            wh[i] = f32_to_f16(wf[i]);
            wf[i] = sl_f16_to_f32(wh[i]);
        }
    }
    sl_weight w;
    void *mem = packed(&w, dtype == SL_DTYPE_F32 ? (void *)wf : (void *)wh, dtype, rows, cols, cols);
    cpu_matmul(g_pool, &(sl_proj){out, &w, with_bias ? bias : NULL}, 1, x, n, bf16_inputs, &g_scratch);
    free(mem);
    if (bf16_inputs && dtype == SL_DTYPE_BF16)
        for (int i = 0; i < n * cols; i++) x[i] = sl_bf16_to_f32(sl_f32_to_bf16(x[i]));
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double ref = with_bias ? bias[r] : 0;
            for (int k = 0; k < cols; k++) ref += (double)x[t * cols + k] * wf[r * cols + k];
            double e = rel_err(out[t * rows + r], ref);
            if (e > worst) worst = e;
        }
    if (worst > 1e-5)
        fprintf(stderr, "matmul %s%s %dx%d n=%d: rel err %g\n", sl_dtype_name(dtype), bf16_inputs ? " (bf16 inputs)" : "",
                rows, cols, n, worst);
    CHECK(worst <= 1e-5);
    free(x), free(wf), free(bias), free(out), free(wh);
}

static void test_matmul_shapes(void) {
    const int shapes[][3] = {{48, 48, 8}, {80, 48, 92}, {7, 33, 1}, {13, 64, 5}, {64, 576, 3}, {5, 1536, 17}, {512, 64, 2}, {130, 33, 6}};
    for (int threads = 1; threads <= 3; threads += 2) {
        cpu_pool_destroy(g_pool);
        CHECK(cpu_pool_create(threads, &g_pool, &(sl_err){0}) == 0);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int d = 0; d < 3; d++)
                for (int bf16_inputs = 0; bf16_inputs < 2; bf16_inputs++)
                    check_matmul((sl_dtype[]){SL_DTYPE_F32, SL_DTYPE_BF16, SL_DTYPE_F16}[d], shapes[i][0], shapes[i][1],
                                 shapes[i][2], (int)(i % 2), bf16_inputs);
    }
}

/* A token's outputs are bit-identical whether it is computed alone or in a
 * batch (the engine's batched == one-at-a-time guarantee rests on this). */
static void test_matmul_batch_invariant(void) {
    enum { ROWS = 37, COLS = 200, N = 9 };
    float x[N * COLS], w[ROWS * COLS], batched[N * ROWS], alone[ROWS];
    uint16_t wh[ROWS * COLS];
    fill(x, N * COLS);
    fill(w, ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++) wh[i] = sl_f32_to_bf16(w[i]);
    for (int d = 0; d < 2; d++) {
        sl_weight wt;
        void *mem = d ? packed(&wt, wh, SL_DTYPE_BF16, ROWS, COLS, COLS) : packed(&wt, w, SL_DTYPE_F32, ROWS, COLS, COLS);
        for (int bf16_inputs = 0; bf16_inputs < 2; bf16_inputs++) {
            cpu_matmul(g_pool, &(sl_proj){batched, &wt, NULL}, 1, x, N, bf16_inputs, &g_scratch);
            for (int t = 0; t < N; t++) {
                cpu_matmul(g_pool, &(sl_proj){alone, &wt, NULL}, 1, x + t * COLS, 1, bf16_inputs, &g_scratch);
                CHECK(memcmp(alone, batched + t * ROWS, sizeof alone) == 0);
            }
        }
        free(mem);
    }
}

/* Packing a slice (rows of a wider matrix, as a row-parallel shard reads
 * them) keeps every element where cpu_weight_at and the embedding find it. */
static void test_pack_slice_and_embed(void) {
    enum { ROWS = 70, FULL = 21, COLS = 13, OFF = 5 };
    uint16_t src[ROWS * FULL];
    float f[ROWS * FULL];
    fill(f, ROWS * FULL);
    for (int i = 0; i < ROWS * FULL; i++) src[i] = sl_f32_to_bf16(f[i]);
    sl_weight w;
    void *mem = packed(&w, src + OFF, SL_DTYPE_BF16, ROWS, COLS, FULL);
    for (int r = 0; r < ROWS; r++)
        for (int k = 0; k < COLS; k++) CHECK(cpu_weight_at(&w, r, k) == sl_bf16_to_f32(src[r * FULL + OFF + k]));
    int32_t ids[3] = {69, 100, 3}; /* row 69, a row past this shard (zeros), row 3 */
    float out[3 * COLS];
    cpu_embed(g_pool, out, &w, ids, 3, 0);
    for (int k = 0; k < COLS; k++) {
        CHECK(out[k] == sl_bf16_to_f32(src[69 * FULL + OFF + k]));
        CHECK(out[COLS + k] == 0.0f);
        CHECK(out[2 * COLS + k] == sl_bf16_to_f32(src[3 * FULL + OFF + k]));
    }
    free(mem);
}

/* Attention over a scattered block table against dense causal softmax. */
static void check_attention(const int NH, const int NKV) {
    enum { BS = 4, N_BLOCKS = 16, HD = 8 };
    const int KVD = NKV * HD, QD = NH * HD;
    float *k_cache = malloc(sizeof(float) * N_BLOCKS * BS * KVD), *v_cache = malloc(sizeof(float) * N_BLOCKS * BS * KVD);
    float *q = malloc(sizeof(float) * 9 * QD), *out = malloc(sizeof(float) * 9 * QD);
    fill(k_cache, N_BLOCKS * BS * KVD);
    fill(v_cache, N_BLOCKS * BS * KVD);
    /* two sequences: 9 tokens of context with 3 new, 6 tokens all new */
    int32_t qs[3] = {0, 3, 9}, ctx[2] = {9, 6};
    int32_t tables[2 * 4] = {5, 2, 11, 0, 7, 3, 0, 0};
    fill(q, 9 * QD);
    sl_attn_batch b = {.n_seqs = 2, .max_blocks = 4, .block_size = BS, .max_context_len = 9,
                       .query_start = qs, .context_len = ctx, .block_tables = tables};
    sl_attn_shape sh = {.n_heads = NH, .n_kv_heads = NKV, .head_dim = HD, .scale = 1.0f / sqrtf(HD)};
    cpu_attention(g_pool, out, q, k_cache, v_cache, &b, &sh);
    double worst = 0;
    for (int s = 0; s < 2; s++) {
        int n_q = qs[s + 1] - qs[s];
        for (int i = 0; i < n_q; i++) {
            int t = qs[s] + i, pos = ctx[s] - n_q + i;
            for (int h = 0; h < NH; h++) {
                int kvh = h / (NH / NKV);
                double scores[16], mx = -1e30, sum = 0;
                for (int j = 0; j <= pos; j++) {
                    const float *k = k_cache + (tables[s * 4 + j / BS] * BS + j % BS) * KVD + kvh * HD;
                    double d = 0;
                    for (int e = 0; e < HD; e++) d += (double)q[t * QD + h * HD + e] * k[e];
                    scores[j] = d / sqrt(HD);
                    if (scores[j] > mx) mx = scores[j];
                }
                for (int j = 0; j <= pos; j++) sum += exp(scores[j] - mx);
                for (int e = 0; e < HD; e++) {
                    double acc = 0;
                    for (int j = 0; j <= pos; j++)
                        acc += exp(scores[j] - mx) / sum *
                               v_cache[(tables[s * 4 + j / BS] * BS + j % BS) * KVD + kvh * HD + e];
                    double err = rel_err(out[t * QD + h * HD + e], acc);
                    if (err > worst) worst = err;
                }
            }
        }
    }
    if (worst >= 1e-5) fprintf(stderr, "attention %d heads / %d KV heads: rel err %g\n", NH, NKV, worst);
    CHECK(worst < 1e-5);
    free(k_cache), free(v_cache), free(q), free(out);
}

/* Groups of 2 query heads per KV head, and of 10 (more than one pass of MAX_GROUP). */
static void test_attention_paged(void) {
    check_attention(6, 3);
    check_attention(20, 2);
}

static void test_rmsnorm_rope_swiglu(void) {
    enum { N = 3, D = 16 };
    float x[N * D], w[D], out[N * D];
    fill(x, N * D);
    fill(w, D);
    cpu_rmsnorm(g_pool, out, x, w, N, D, 1e-5f);
    for (int t = 0; t < N; t++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[t * D + i] * x[t * D + i];
        double inv = 1.0 / sqrt(ss / D + 1e-5);
        for (int i = 0; i < D; i++) CHECK(rel_err(out[t * D + i], w[i] * x[t * D + i] * inv) < 1e-6);
    }
    /* rope: rotate_half pairs (i, i + D/2) of each head by pos * inv_freq[i] */
    float r[N * 2 * D], orig[N * 2 * D], inv_freq[D / 2];
    int32_t pos[N] = {0, 5, 1000};
    fill(r, N * 2 * D);
    memcpy(orig, r, sizeof r);
    for (int i = 0; i < D / 2; i++) inv_freq[i] = powf(10000.0f, -(float)(2 * i) / D);
    cpu_rope(g_pool, r, pos, inv_freq, N, 2, D);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < D / 2; i++) {
                double a = (double)pos[t] * inv_freq[i], x0 = orig[(t * 2 + h) * D + i], x1 = orig[(t * 2 + h) * D + i + D / 2];
                CHECK(fabs(r[(t * 2 + h) * D + i] - (x0 * cos(a) - x1 * sin(a))) < 1e-4);
                CHECK(fabs(r[(t * 2 + h) * D + i + D / 2] - (x1 * cos(a) + x0 * sin(a))) < 1e-4);
            }
    float g[D], u[D], o[D];
    fill(g, D);
    fill(u, D);
    cpu_swiglu(g_pool, o, g, u, D);
    for (int i = 0; i < D; i++) CHECK(rel_err(o[i], g[i] / (1 + exp(-(double)g[i])) * u[i]) < 1e-6);
}

/* Every item of a loop is computed exactly once, by static and dynamic
 * splits, for sizes around the thread count, including after the workers
 * have gone to sleep. */
typedef struct count_args {
    atomic_int hits[1000];
} count_args;

static void count_range(void *varg, int64_t begin, int64_t end, int thread) {
    count_args *a = varg;
    CHECK(thread >= 0 && thread < 3);
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&a->hits[i], 1);
}

static void test_thread_pool(void) {
    static count_args a;
    const int sizes[] = {1, 2, 3, 4, 7, 64, 999, 1000};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int dynamic = 0; dynamic < 2; dynamic++) {
                memset(&a, 0, sizeof a);
                if (dynamic) cpu_pool_for_dynamic(g_pool, sizes[i], 3, 1, count_range, &a);
                else cpu_pool_for(g_pool, sizes[i], 1, count_range, &a);
                for (int k = 0; k < 1000; k++) CHECK_EQ_INT(atomic_load(&a.hits[k]), k < sizes[i] ? 1 : 0);
            }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL); /* past the spin: workers sleep */
    }
}

int main(void) {
    CHECK(cpu_pool_create(3, &g_pool, &(sl_err){0}) == 0);
    TEST_RUN(test_thread_pool);
    TEST_RUN(test_matmul_shapes);
    TEST_RUN(test_matmul_batch_invariant);
    TEST_RUN(test_pack_slice_and_embed);
    TEST_RUN(test_attention_paged);
    TEST_RUN(test_rmsnorm_rope_swiglu);
    free(g_scratch.floats);
    cpu_pool_destroy(g_pool);
    TEST_EXIT();
}
