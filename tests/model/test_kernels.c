/* test_kernels.c -- every CPU kernel against a naive double-precision
 * reference, over shapes that exercise the tiles' edges (rows and tokens not
 * multiples of 4) and every weight dtype. */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec.h"

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
            wh[i] = sl_f32_to_f16(wf[i]);
            wf[i] = sl_f16_to_f32(wh[i]);
        }
    }
    sl_weight w;
    void *mem = packed(&w, dtype == SL_DTYPE_F32 ? (void *)wf : (void *)wh, dtype, rows, cols, cols);
    cpu_matmul(g_pool, &(sl_proj){out, &w, with_bias ? bias : NULL, 0}, 1, x, n, bf16_inputs, &g_scratch);
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
 * batch (the engine's batched == one-at-a-time guarantee rests on this). 30
 * tokens split into token groups on 3 threads; with AMX, a width of 256 takes
 * the tile unit for the batch (32- and 16-token blocks) and its FMA twin for
 * a token alone, 200 the vector kernels for both. */
static void check_batch_invariant(int cols) {
    enum { ROWS = 37, N = 30, MAX_COLS = 256 };
    float x[N * MAX_COLS], w[ROWS * MAX_COLS], batched[N * ROWS], alone[ROWS];
    uint16_t wh[ROWS * MAX_COLS];
    fill(x, N * cols);
    fill(w, ROWS * cols);
    for (int i = 0; i < ROWS * cols; i++) wh[i] = sl_f32_to_bf16(w[i]);
    for (int d = 0; d < 2; d++) {
        sl_weight wt;
        void *mem = d ? packed(&wt, wh, SL_DTYPE_BF16, ROWS, cols, cols) : packed(&wt, w, SL_DTYPE_F32, ROWS, cols, cols);
        for (int bf16_inputs = 0; bf16_inputs < 2; bf16_inputs++)
            for (int n = N; n >= 8; n -= 11) { /* 30, 19 and 8 tokens: every block size */
                cpu_matmul(g_pool, &(sl_proj){batched, &wt, NULL, 0}, 1, x, n, bf16_inputs, &g_scratch);
                for (int t = 0; t < n; t++) {
                    cpu_matmul(g_pool, &(sl_proj){alone, &wt, NULL, 0}, 1, x + t * cols, 1, bf16_inputs, &g_scratch);
                    CHECK(memcmp(alone, batched + t * ROWS, sizeof alone) == 0);
                }
            }
        free(mem);
    }
}

static void test_matmul_batch_invariant(void) {
    check_batch_invariant(200);
    check_batch_invariant(256);
}

/* Where the build and the CPU have AMX and Linux grants it, the matmul uses
 * it: its start-up check (the FMA twin agrees with the unit bit for bit) must
 * pass, or a broken twin would turn AMX off and the tests above would only
 * see the vector kernels. */
static void test_matmul_amx_taken(void) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__linux__)
    const char *env = getenv("SHARDLM_CPU_AMX");
    const bool off = env && strcmp(env, "0") == 0;
    if (!off && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0)
        CHECK(strstr(cpu_matmul_unit(1), "AMX") != NULL);
    else
        CHECK(strstr(cpu_matmul_unit(1), "AMX") == NULL);
#else
    CHECK(strstr(cpu_matmul_unit(1), "AMX") == NULL);
#endif
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

/* Attention through kv_store and the paged cache against dense causal softmax
 * in double over the same K/V as the cache's dtype rounds them. Two sequences
 * of more than one chunk of keys: 20 new tokens of 150 (a prompt's later
 * chunk: tiles of several tokens) and 70 of 70, blocks scattered. Then one
 * token alone must give bit for bit what it gave among the others. */
enum { CTX0 = 150, NEW0 = 20, CTX1 = 70 };

static float rounded(sl_dtype dtype, float x) {
    if (dtype == SL_DTYPE_F16) return sl_f16_to_f32(sl_f32_to_f16(x));
    if (dtype == SL_DTYPE_BF16) return sl_bf16_to_f32(sl_f32_to_bf16(x));
    return x;
}

static void check_attention(int NH, int NKV, int HD, int BS, sl_dtype dtype) {
    const int KVD = NKV * HD, QD = NH * HD, n_tok = NEW0 + CTX1;
    const int max_blocks = (CTX0 + BS - 1) / BS, n_blocks = 2 * max_blocks;
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) tables[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) { /* scatter the blocks */
        int j = (int)(g_rng % (uint64_t)(i + 1)), t = tables[i];
        g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
        tables[i] = tables[j], tables[j] = t;
    }
    sl_kv_cache kv = {.dtype = dtype, .block_size = BS, .n_kv_heads = NKV, .head_dim = HD};
    kv.k = calloc((size_t)n_blocks, sl_kv_block_bytes(&kv));
    kv.v = calloc((size_t)n_blocks, sl_kv_block_bytes(&kv));
    /* every context token's K/V, stored through the kernel; keys[s][j] as the cache rounds them */
    const int ctx[2] = {CTX0, CTX1};
    float *keys[2], *vals[2];
    for (int s = 0; s < 2; s++) {
        keys[s] = malloc(sizeof(float) * (size_t)ctx[s] * KVD), vals[s] = malloc(sizeof(float) * (size_t)ctx[s] * KVD);
        fill(keys[s], (int64_t)ctx[s] * KVD);
        fill(vals[s], (int64_t)ctx[s] * KVD);
        int32_t *slots = malloc(sizeof(int32_t) * (size_t)ctx[s]);
        for (int j = 0; j < ctx[s]; j++) slots[j] = tables[s * max_blocks + j / BS] * BS + j % BS;
        cpu_kv_store(g_pool, &kv, keys[s], vals[s], slots, ctx[s]);
        for (int i = 0; i < ctx[s] * KVD; i++) keys[s][i] = rounded(dtype, keys[s][i]), vals[s][i] = rounded(dtype, vals[s][i]);
        free(slots);
    }
    float *q = malloc(sizeof(float) * (size_t)n_tok * QD), *out = malloc(sizeof(float) * (size_t)n_tok * QD);
    fill(q, (int64_t)n_tok * QD);
    int32_t qs[3] = {0, NEW0, n_tok}, ctx_len[2] = {CTX0, CTX1};
    sl_attn_batch b = {.n_seqs = 2, .max_blocks = max_blocks, .max_context_len = CTX0, .query_start = qs,
                       .context_len = ctx_len, .block_tables = tables};
    const float scale = 1.0f / sqrtf((float)HD);
    cpu_attention(g_pool, out, q, &kv, &b, NH, scale);
    double worst = 0;
    double *scores = malloc(sizeof(double) * CTX0);
    for (int s = 0; s < 2; s++) {
        const int n_q = qs[s + 1] - qs[s];
        for (int i = 0; i < n_q; i++) {
            const int t = qs[s] + i, pos = ctx[s] - n_q + i;
            for (int h = 0; h < NH; h++) {
                const int kvh = h / (NH / NKV);
                double mx = -1e30, sum = 0;
                for (int j = 0; j <= pos; j++) {
                    double d = 0;
                    for (int e = 0; e < HD; e++) d += (double)q[t * QD + h * HD + e] * keys[s][j * KVD + kvh * HD + e];
                    scores[j] = d * scale;
                    if (scores[j] > mx) mx = scores[j];
                }
                for (int j = 0; j <= pos; j++) sum += exp(scores[j] - mx);
                for (int e = 0; e < HD; e++) {
                    double acc = 0;
                    for (int j = 0; j <= pos; j++) acc += exp(scores[j] - mx) / sum * vals[s][j * KVD + kvh * HD + e];
                    double err = rel_err(out[t * QD + h * HD + e], acc);
                    if (err > worst) worst = err;
                }
            }
        }
    }
    if (worst >= 1e-5)
        fprintf(stderr, "attention %d/%d heads, head_dim %d, block %d, %s: rel err %g\n", NH, NKV, HD, BS,
                sl_dtype_name(dtype), worst);
    CHECK(worst < 1e-5);
    /* token 7 of sequence 0 (position 137) alone: the same bits */
    float *alone = malloc(sizeof(float) * QD);
    int32_t qs1[2] = {0, 1}, ctx1[1] = {CTX0 - NEW0 + 8};
    sl_attn_batch b1 = {.n_seqs = 1, .max_blocks = max_blocks, .max_context_len = ctx1[0], .query_start = qs1,
                        .context_len = ctx1, .block_tables = tables};
    cpu_attention(g_pool, alone, q + 7 * QD, &kv, &b1, NH, scale);
    CHECK(memcmp(alone, out + 7 * QD, sizeof(float) * QD) == 0);
    free(alone), free(scores), free(q), free(out), free(tables), free(kv.k), free(kv.v);
    for (int s = 0; s < 2; s++) free(keys[s]), free(vals[s]);
}

/* Query groups of 3 (SmolLM2's), 10 (more than one tile's rows) and 1; head
 * dims of whole and part vectors; blocks of 16, 4 and 48 slots; each dtype. */
static void test_attention_paged(void) {
    const sl_dtype dtypes[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        check_attention(9, 3, 64, 16, dtypes[i]);
        check_attention(20, 2, 8, 4, dtypes[i]);
        check_attention(4, 4, 24, 48, dtypes[i]);
    }
}

/* vec.h and half.h against the definitions: every half widens as the
 * scalar conversion does and rounds back to itself, a midpoint between two
 * halves rounds to the even one; bf16 narrowing as the scalar rounding; exp
 * within 3 ulp over its range, 0 / inf / NaN at the ends. */
static void test_vector_math(void) {
    int bad_widen = 0, bad_round = 0, bad_mid = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        vu16 v = {0};
        v[h % LANES] = (uint16_t)h;
        const float want = sl_f16_to_f32((uint16_t)h), got = widen_f16(v)[h % LANES];
        if (isnan(want) ? !isnan(got) : memcmp(&want, &got, 4) != 0) bad_widen++;
        if (!isnan(want) && sl_f32_to_f16(want) != h) bad_round++;
        const uint32_t next = h + 1;
        if ((h & 0x7fffu) < 0x7bffu && (h & 0x7fffu) != 0x7fffu) { /* finite neighbours of one sign */
            const float mid = (float)(((double)want + (double)sl_f16_to_f32((uint16_t)next)) / 2);
            if (sl_f32_to_f16(mid) != ((h & 1u) ? next : h)) bad_mid++;
        }
    }
    CHECK(bad_widen == 0);
    CHECK(bad_round == 0);
    CHECK(bad_mid == 0);
    CHECK(sl_f32_to_f16(65520.0f) == 0x7c00 && sl_f32_to_f16(65519.0f) == 0x7bff && sl_f32_to_f16(-1e9f) == 0xfc00);
    const float specials[] = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.005859375f, 3.0e38f, INFINITY, -INFINITY, NAN, 1e-40f};
    for (int i = 0; i < 200; i++) {
        vf x;
        for (int l = 0; l < LANES; l++) x[l] = i < 10 && l == 0 ? specials[i] : frand() * powf(2.0f, (float)(i % 40 - 20));
        const vu16 h = narrow_bf16(x);
        for (int l = 0; l < LANES; l++) CHECK(h[l] == sl_f32_to_bf16(x[l]));
    }
    double worst = 0;
    for (int i = 0; i <= 20000; i++) {
        const float x = -86.0f + 174.0f * (float)i / 20000.0f;
        const double want = exp((double)x), err = fabs(vexp(splat(x))[0] - want) / want;
        if (err > worst) worst = err;
    }
    if (worst >= 3.6e-7) fprintf(stderr, "vexp: relative error %g\n", worst);
    CHECK(worst < 3.6e-7);
    const vf ends = vexp((vf){-INFINITY, -1000.0f, 1000.0f, INFINITY, NAN, 0.0f});
    CHECK(ends[0] == 0.0f && ends[1] == 0.0f && isinf(ends[2]) && isinf(ends[3]) && isnan(ends[4]) && ends[5] == 1.0f);
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
    TEST_RUN(test_matmul_amx_taken);
    TEST_RUN(test_pack_slice_and_embed);
    TEST_RUN(test_attention_paged);
    TEST_RUN(test_vector_math);
    TEST_RUN(test_rmsnorm_rope_swiglu);
    free(g_scratch.floats);
    cpu_pool_destroy(g_pool);
    TEST_EXIT();
}
