/* test_cuda_ops.c -- every op of the CUDA backend against the CPU reference.
 *
 * The same random inputs go through both backends' tables (each keeping its
 * own weight and KV layouts: weights and K/V enter through weight_load and
 * rope_kv_store, as the model gives them) and the outputs must agree: elementwise
 * ops to float32 rounding, matmuls to the order of float32 sums (the CPU one
 * with --matmul-precision medium, the same 16-bit rounding of inputs), and
 * attention over paged caches of mixed steps: decode beside prefill, chunked
 * prefill over an earlier context, GQA and MHA, long contexts that the GPU
 * splits over several blocks, every KV dtype and a few block sizes, the
 * tensor-core prefill of 16-bit caches held to a tolerance of its own rounding
 * (tensor_core_tolerance), the float32 kernels to float32 sums; and
 * sampling, token for token against the host reference of the rule, with
 * and without token masks (structured output); and
 * replay (CUDA graphs): replayed ops read their buffers' new contents.
 *
 * Activations (backend.h): the float32 cases above run both backends with
 * act = float32. The GPU also runs its ops on bfloat16 (and some float16)
 * activations -- matmuls through the GEMV and the GEMM, 16-bit and float32
 * outputs, norms, SwiGLU, residual adds, gathers, RoPE and attention -- held
 * to the CPU run in float32 on the same inputs rounded to that type: the
 * float32 case's tolerance plus what rounding the output (and, where stated,
 * an intermediate) to a unit roundoff u costs (act_tolerance).
 * Skips (exit 77) where no GPU is visible. */
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "test.h"
#include "util/half.h"

static sl_backend g_cpu, g_gpu;
static uint64_t g_rng = 0x243F6A8885A308D3ull;

static float uniform(void) { /* in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static float *random_floats(int64_t n, float scale) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = uniform() * scale;
    return x;
}

/* A host array copied into a backend's memory. */
static void *put(sl_backend *b, const void *host, size_t n_bytes) {
    void *p = NULL;
    sl_err err = {0};
    if (b->iface->alloc(b->ctx, n_bytes, &p, &err) || b->iface->upload(b->ctx, p, host, n_bytes, &err)) {
        fprintf(stderr, "%s: %s\n", b->iface->name, err.msg);
        exit(1);
    }
    return p;
}

static void *zeros(sl_backend *b, size_t n_bytes) {
    void *p = NULL;
    sl_err err = {0};
    if (b->iface->alloc(b->ctx, n_bytes, &p, &err)) {
        fprintf(stderr, "%s: %s\n", b->iface->name, err.msg);
        exit(1);
    }
    return p;
}

static float *get(sl_backend *b, const void *dev, int64_t n) {
    float *host = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    sl_err err = {0};
    if (b->iface->download(b->ctx, host, dev, sizeof(float) * (size_t)n, &err)) {
        fprintf(stderr, "%s: %s\n", b->iface->name, err.msg);
        exit(1);
    }
    return host;
}

/* Both outputs agree within atol + rtol * |cpu|; prints the worst element. */
static int agree(const char *what, const float *cpu, const float *gpu, int64_t n, double atol, double rtol) {
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < n; i++) {
        double excess = fabs((double)cpu[i] - gpu[i]) - (atol + rtol * fabs(cpu[i]));
        if (!(excess <= worst)) worst = isnan(excess) ? INFINITY : excess, at = i;
    }
    if (at < 0) return 1;
    fprintf(stderr, "%s: element %lld: cpu %.7g, gpu %.7g\n", what, (long long)at, cpu[at], gpu[at]);
    return 0;
}

/* ---- activations of 16 bits ---- */

/* Unit roundoff of an activation type, the largest relative error of rounding to it: 2^-8 for bfloat16 (8
 * significant bits), 2^-11 for float16, 0 for float32 (the reference's own type). */
static double unit_roundoff(sl_dtype t) {
    return t == SL_DTYPE_BF16 ? 1.0 / 256 : t == SL_DTYPE_F16 ? 1.0 / 2048 : 0.0;
}

/* x's values rounded to t, in place (nothing for float32). */
static void round_to(sl_dtype t, float *x, int64_t n) {
    for (int64_t i = 0; t == SL_DTYPE_BF16 && i < n; i++) x[i] = sl_bf16_to_f32(sl_f32_to_bf16(x[i]));
    for (int64_t i = 0; t == SL_DTYPE_F16 && i < n; i++) x[i] = sl_f16_to_f32(sl_f32_to_f16(x[i]));
}

/* n floats as n elements of t, in new host memory. */
static void *as_dtype(const float *x, int64_t n, sl_dtype t) {
    if (t == SL_DTYPE_F32) {
        float *f = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        memcpy(f, x, sizeof(float) * (size_t)n);
        return f;
    }
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) h[i] = t == SL_DTYPE_BF16 ? sl_f32_to_bf16(x[i]) : sl_f32_to_f16(x[i]);
    return h;
}

/* n elements of t in a backend's memory, widened to floats. */
static float *get_as(sl_backend *b, const void *dev, int64_t n, sl_dtype t) {
    if (t == SL_DTYPE_F32) return get(b, dev, n);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    float *f = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    sl_err err = {0};
    if (b->iface->download(b->ctx, h, dev, sizeof(uint16_t) * (size_t)n, &err)) {
        fprintf(stderr, "%s: %s\n", b->iface->name, err.msg);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) f[i] = t == SL_DTYPE_BF16 ? sl_bf16_to_f32(h[i]) : sl_f16_to_f32(h[i]);
    free(h);
    return f;
}

/* The tolerance of a float32 comparison (atol, rtol) for a GPU output rounded to t instead: the rounding
 * moves it by at most u |exact| <= u (|cpu| + atol), so rtol grows by u (u atol is negligible); `extra`
 * more roundings of intermediates of about the output's size (a bias added to a rounded matmul output)
 * add u each. */
static void act_tolerance(sl_dtype t, int extra, double *rtol) { *rtol += (1 + extra) * unit_roundoff(t); }

/* Runs one op on both backends: OP(b, args) names the backend b. */
typedef struct twin { void *cpu, *gpu; } twin;

static twin twin_put(const void *host, size_t n_bytes) {
    return (twin){put(&g_cpu, host, n_bytes), put(&g_gpu, host, n_bytes)};
}
static twin twin_zeros(size_t n_bytes) { return (twin){zeros(&g_cpu, n_bytes), zeros(&g_gpu, n_bytes)}; }
static void twin_free(twin t) {
    g_cpu.iface->free(g_cpu.ctx, t.cpu);
    g_gpu.iface->free(g_gpu.ctx, t.gpu);
}
static int twin_agree(const char *what, twin t, int64_t n, double atol, double rtol) {
    float *a = get(&g_cpu, t.cpu, n), *b = get(&g_gpu, t.gpu, n);
    int ok = agree(what, a, b, n, atol, rtol);
    free(a);
    free(b);
    return ok;
}

/* Values of act (x already rounded to it) on both: float32 on the CPU, elements of act on the GPU. */
static twin twin_act(const float *x, int64_t n, sl_dtype act) {
    void *h = as_dtype(x, n, act);
    twin t = {put(&g_cpu, x, sizeof(float) * (size_t)n), put(&g_gpu, h, sl_dtype_n_bytes(act) * (size_t)n)};
    free(h);
    return t;
}

/* The CPU's float32 output against the GPU's of act. */
static int twin_agree_act(const char *what, twin t, int64_t n, sl_dtype act, double atol, double rtol) {
    float *a = get(&g_cpu, t.cpu, n), *b = get_as(&g_gpu, t.gpu, n, act);
    int ok = agree(what, a, b, n, atol, rtol);
    free(a);
    free(b);
    return ok;
}

/* The elementwise ops on n rows of dim, with activations of act (the residual stream x float32); RoPE and
 * the KV store where dim holds 8 heads of 128. */
static void check_elementwise(int n, int dim, sl_dtype act) {
    const int heads = 8, hd = 128;
    const int64_t ne = (int64_t)n * dim;
    char what[128];
    const char *an = sl_dtype_name(act);
    float *x = random_floats(ne, 3.0f), *y = random_floats(ne, 2.0f), *w = random_floats(dim, 1.5f);
    float *g = malloc(sizeof(float) * (size_t)ne); /* x's values as activations (SwiGLU's gate, q) */
    memcpy(g, x, sizeof(float) * (size_t)ne);
    round_to(act, g, ne);
    round_to(act, y, ne);
    twin tx = twin_put(x, sizeof(float) * (size_t)ne), ty = twin_act(y, ne, act), tg = twin_act(g, ne, act);
    twin tw = twin_put(w, sizeof(float) * (size_t)dim), out = twin_zeros(sizeof(float) * (size_t)ne);
    double rtol;

    g_cpu.iface->rmsnorm(g_cpu.ctx, out.cpu, tx.cpu, tw.cpu, n, dim, 1e-5f, SL_DTYPE_F32);
    g_gpu.iface->rmsnorm(g_gpu.ctx, out.gpu, tx.gpu, tw.gpu, n, dim, 1e-5f, act);
    rtol = 1e-5, act_tolerance(act, 0, &rtol);
    snprintf(what, sizeof what, "rmsnorm %s dim %d", an, dim);
    CHECK(twin_agree_act(what, out, ne, act, 1e-5, rtol));

    g_cpu.iface->swiglu(g_cpu.ctx, out.cpu, tg.cpu, ty.cpu, ne, SL_DTYPE_F32);
    g_gpu.iface->swiglu(g_gpu.ctx, out.gpu, tg.gpu, ty.gpu, ne, act);
    rtol = 1e-5, act_tolerance(act, 0, &rtol);
    snprintf(what, sizeof what, "swiglu %s, %lld elements", an, (long long)ne);
    CHECK(twin_agree_act(what, out, ne, act, 1e-6, rtol));

    /* float32 x plus the same y values: exactly the same sums */
    g_cpu.iface->add(g_cpu.ctx, tx.cpu, ty.cpu, ne, SL_DTYPE_F32);
    g_gpu.iface->add(g_gpu.ctx, tx.gpu, ty.gpu, ne, act);
    snprintf(what, sizeof what, "add %s, %lld elements", an, (long long)ne);
    CHECK(twin_agree(what, tx, ne, 0, 0));

    const int32_t rows[3] = {n - 1, 0, n / 2};
    twin trows = twin_put(rows, sizeof rows);
    g_cpu.iface->gather_rows(g_cpu.ctx, out.cpu, tg.cpu, trows.cpu, 3, dim, SL_DTYPE_F32);
    g_gpu.iface->gather_rows(g_gpu.ctx, out.gpu, tg.gpu, trows.gpu, 3, dim, act);
    snprintf(what, sizeof what, "gather_rows %s dim %d", an, dim);
    CHECK(twin_agree_act(what, out, 3 * (int64_t)dim, act, 0, 0));

    /* the residual add and the norm after it, in place over y as the model calls it (out = y) */
    g_cpu.iface->add_rmsnorm(g_cpu.ctx, ty.cpu, tx.cpu, ty.cpu, tw.cpu, n, dim, 1e-5f, SL_DTYPE_F32);
    g_gpu.iface->add_rmsnorm(g_gpu.ctx, ty.gpu, tx.gpu, ty.gpu, tw.gpu, n, dim, 1e-5f, act);
    snprintf(what, sizeof what, "add_rmsnorm %s dim %d: x", an, dim);
    CHECK(twin_agree(what, tx, ne, 0, 0));
    rtol = 1e-5, act_tolerance(act, 0, &rtol);
    snprintf(what, sizeof what, "add_rmsnorm %s dim %d: out", an, dim);
    CHECK(twin_agree_act(what, ty, ne, act, 1e-5, rtol));

    /* RoPE at positions up to 100k with Llama-3-like frequencies (theta 500000), q with 8 heads, k with 2,
     * k and v stored into a cache of 4-token blocks (attention reads it back in test_attention) */
    const int kv_heads = 2;
    if (n == 5 && dim >= kv_heads * hd && dim >= heads * hd) {
        int32_t pos[5] = {0, 1, 77, 8191, 100000}, slots[5] = {3, 9, 0, 4, 17};
        float inv_freq[64];
        for (int i = 0; i < hd / 2; i++) inv_freq[i] = powf(500000.0f, -2.0f * (float)i / (float)hd);
        twin tpos = twin_put(pos, sizeof pos), tfreq = twin_put(inv_freq, sizeof inv_freq);
        twin tslots = twin_put(slots, sizeof slots);
        const int nk = n * kv_heads * hd;
        float *k = malloc(sizeof(float) * (size_t)nk), *v = malloc(sizeof(float) * (size_t)nk);
        for (int i = 0; i < nk; i++) k[i] = y[i], v[i] = w[i % dim];
        round_to(act, k, nk);
        round_to(act, v, nk);
        twin tk = twin_act(k, nk, act), tv = twin_act(v, nk, act);
        sl_kv_cache kv = {.dtype = SL_DTYPE_BF16, .block_size = 4, .n_kv_heads = kv_heads, .head_dim = hd};
        twin tkc = twin_zeros(5 * sl_kv_block_bytes(&kv)), tvc = twin_zeros(5 * sl_kv_block_bytes(&kv));
        sl_kv_cache kv_cpu = kv, kv_gpu = kv;
        kv_cpu.k = tkc.cpu, kv_cpu.v = tvc.cpu, kv_gpu.k = tkc.gpu, kv_gpu.v = tvc.gpu;
        g_cpu.iface->rope_kv_store(g_cpu.ctx, tg.cpu, tk.cpu, tv.cpu, &kv_cpu, tpos.cpu, tslots.cpu, tfreq.cpu, n,
                                   heads, SL_DTYPE_F32);
        g_gpu.iface->rope_kv_store(g_gpu.ctx, tg.gpu, tk.gpu, tv.gpu, &kv_gpu, tpos.gpu, tslots.gpu, tfreq.gpu, n,
                                   heads, act);
        /* angles of 1e5 radians: cos/sin of the same float angle, up to their implementations' last bits;
         * q and k are rotated in float32 and rounded once */
        rtol = 2e-5, act_tolerance(act, 0, &rtol);
        snprintf(what, sizeof what, "rope_kv_store %s: q", an);
        CHECK(twin_agree_act(what, tg, (int64_t)n * heads * hd, act, 2e-5, rtol));
        snprintf(what, sizeof what, "rope_kv_store %s: k", an);
        CHECK(twin_agree_act(what, tk, nk, act, 2e-5, rtol));
        twin_free(tslots), twin_free(tk), twin_free(tv), twin_free(tkc), twin_free(tvc), twin_free(tpos),
            twin_free(tfreq);
        free(k), free(v);
    }

    twin_free(tx), twin_free(ty), twin_free(tg), twin_free(tw), twin_free(out), twin_free(trows);
    free(x), free(y), free(w), free(g);
}

static void test_elementwise(void) {
    check_elementwise(5, 4096, SL_DTYPE_F32);
    check_elementwise(5, 4096, SL_DTYPE_BF16);
    check_elementwise(5, 4096, SL_DTYPE_F16);
    /* rows of an odd number of 16-bit elements: the kernels' element-by-element paths and a flat tail */
    check_elementwise(3, 100, SL_DTYPE_BF16);
    check_elementwise(3, 100, SL_DTYPE_F32);
}

/* A [rows][cols] weight of dtype on both backends, from the same random values. */
typedef struct twin_weight { sl_weight cpu, gpu; } twin_weight;

static twin_weight weight_pair(int64_t rows, int64_t cols, sl_dtype dtype) {
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(rows * cols));
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) {
        float v = uniform() * 0.1f;
        h[i] = dtype == SL_DTYPE_BF16 ? sl_f32_to_bf16(v) : sl_f32_to_f16(v);
        f[i] = v;
    }
    const void *src = dtype == SL_DTYPE_F32 ? (const void *)f : (const void *)h;
    twin_weight w;
    sl_err err = {0};
    if (g_cpu.iface->weight_load(g_cpu.ctx, &w.cpu, src, dtype, rows, cols, cols, &err) ||
        g_gpu.iface->weight_load(g_gpu.ctx, &w.gpu, src, dtype, rows, cols, cols, &err)) {
        fprintf(stderr, "weight_load: %s\n", err.msg);
        exit(1);
    }
    free(h);
    free(f);
    return w;
}

/* q, k, v-shaped projections of one input of act, with a bias on the first, n tokens; the last writes
 * float32 (f32_out, as the LM head's logits), the others act. */
static void check_matmul(int n, int64_t cols, sl_dtype dtype, sl_dtype act) {
    const int64_t rows[3] = {256, 64, 72};
    twin_weight w[3];
    for (int p = 0; p < 3; p++) w[p] = weight_pair(rows[p], cols, dtype);
    float *x = random_floats((int64_t)n * cols, 2.0f), *bias = random_floats(rows[0], 1.0f);
    /* The CPU rounds inputs to 16 bits for bf16 weights only; the GPU rounds them to the weights' type:
     * inputs already float16 values make the two the same product. Both get the same values of act. */
    if (dtype == SL_DTYPE_F16) round_to(SL_DTYPE_F16, x, (int64_t)n * cols);
    round_to(act, x, (int64_t)n * cols);
    twin tx = twin_act(x, (int64_t)n * cols, act), tb = twin_put(bias, sizeof(float) * (size_t)rows[0]);
    twin out[3];
    sl_proj pc[3], pg[3];
    for (int p = 0; p < 3; p++) {
        out[p] = twin_zeros(sizeof(float) * (size_t)(n * rows[p]));
        pc[p] = (sl_proj){.out = out[p].cpu, .w = &w[p].cpu, .bias = p == 0 ? tb.cpu : NULL, .f32_out = p == 2};
        pg[p] = (sl_proj){.out = out[p].gpu, .w = &w[p].gpu, .bias = p == 0 ? tb.gpu : NULL, .f32_out = p == 2};
    }
    g_cpu.iface->matmul(g_cpu.ctx, pc, 3, tx.cpu, n, SL_DTYPE_F32);
    g_gpu.iface->matmul(g_gpu.ctx, pg, 3, tx.gpu, n, act);
    char what[128];
    for (int p = 0; p < 3; p++) {
        const sl_dtype out_dtype = p == 2 ? SL_DTYPE_F32 : act;
        snprintf(what, sizeof what, "matmul %s weights, %s activations, n=%d cols=%lld proj %d (%s out)",
                 sl_dtype_name(dtype), sl_dtype_name(act), n, (long long)cols, p, sl_dtype_name(out_dtype));
        /* float32 sums of cols products of about 0.1: their order moves the last bits. A 16-bit output is
         * rounded once more (u |out|); with the bias (|bias| <= 1) added to a 16-bit D the sum before the
         * bias is rounded too: u |out - bias| <= u (|out| + 1), so u more in atol and in rtol. */
        double atol = 2e-4 * sqrt((double)cols) * 0.1, rtol = 1e-4;
        act_tolerance(out_dtype, p == 0 && out_dtype != SL_DTYPE_F32, &rtol);
        if (p == 0) atol += unit_roundoff(out_dtype);
        CHECK(twin_agree_act(what, out[p], n * rows[p], out_dtype, atol, rtol));
        twin_free(out[p]);
        g_cpu.iface->weight_free(g_cpu.ctx, &w[p].cpu);
        g_gpu.iface->weight_free(g_gpu.ctx, &w[p].gpu);
    }
    twin_free(tx), twin_free(tb);
    free(x), free(bias);
}

/* A pair of projections of one shape (k and v, gate and up), each with a bias: the GPU runs them as one
 * batched GEMM (its weights and outputs at any distance; `reversed` allocates the second first, so it
 * usually lies below the first). */
static void check_matmul_pair(int n, int64_t cols, sl_dtype dtype, sl_dtype act, int reversed) {
    const int64_t rows = 192;
    twin_weight w[2];
    twin out[2];
    for (int i = 0; i < 2; i++) {
        const int p = reversed ? 1 - i : i;
        w[p] = weight_pair(rows, cols, dtype);
        out[p] = twin_zeros(sizeof(float) * (size_t)(n * rows));
    }
    float *x = random_floats((int64_t)n * cols, 2.0f), *bias = random_floats(2 * rows, 1.0f);
    if (dtype == SL_DTYPE_F16) round_to(SL_DTYPE_F16, x, (int64_t)n * cols);
    round_to(act, x, (int64_t)n * cols);
    twin tx = twin_act(x, (int64_t)n * cols, act), tb = twin_put(bias, sizeof(float) * (size_t)(2 * rows));
    sl_proj pc[2], pg[2];
    for (int p = 0; p < 2; p++) {
        pc[p] = (sl_proj){.out = out[p].cpu, .w = &w[p].cpu, .bias = (const float *)tb.cpu + p * rows};
        pg[p] = (sl_proj){.out = out[p].gpu, .w = &w[p].gpu, .bias = (const float *)tb.gpu + p * rows};
    }
    g_cpu.iface->matmul(g_cpu.ctx, pc, 2, tx.cpu, n, SL_DTYPE_F32);
    g_gpu.iface->matmul(g_gpu.ctx, pg, 2, tx.gpu, n, act);
    char what[160];
    for (int p = 0; p < 2; p++) {
        snprintf(what, sizeof what, "matmul pair %s weights, %s activations, n=%d cols=%lld proj %d%s",
                 sl_dtype_name(dtype), sl_dtype_name(act), n, (long long)cols, p, reversed ? " (reversed)" : "");
        double atol = 2e-4 * sqrt((double)cols) * 0.1 + unit_roundoff(act), rtol = 1e-4;
        act_tolerance(act, act != SL_DTYPE_F32, &rtol);
        CHECK(twin_agree_act(what, out[p], n * rows, act, atol, rtol));
        twin_free(out[p]);
        g_cpu.iface->weight_free(g_cpu.ctx, &w[p].cpu);
        g_gpu.iface->weight_free(g_gpu.ctx, &w[p].gpu);
    }
    twin_free(tx), twin_free(tb);
    free(x), free(bias);
}

static void test_matmul(void) {
    const int ns[] = {1, 2, 3, 8, 9, 64, 300};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        check_matmul(ns[i], 512, SL_DTYPE_BF16, SL_DTYPE_F32);
        check_matmul(ns[i], 4096, SL_DTYPE_BF16, SL_DTYPE_F32);
    }
    check_matmul(1, 1024, SL_DTYPE_F16, SL_DTYPE_F32);
    check_matmul(33, 1024, SL_DTYPE_F16, SL_DTYPE_F32);
    check_matmul(5, 64, SL_DTYPE_F32, SL_DTYPE_F32);
    /* bf16 activations over bf16 weights: the GEMV (n <= 8) and the GEMM read them as they are */
    const int bn[] = {1, 3, 8, 9, 300};
    for (size_t i = 0; i < sizeof bn / sizeof bn[0]; i++) {
        check_matmul(bn[i], 512, SL_DTYPE_BF16, SL_DTYPE_BF16);
        check_matmul(bn[i], 4096, SL_DTYPE_BF16, SL_DTYPE_BF16);
    }
    check_matmul(2, 1024, SL_DTYPE_F16, SL_DTYPE_F16);
    check_matmul(33, 1024, SL_DTYPE_F16, SL_DTYPE_F16);
    /* activations of another type than the weights: converted first, the GEMM's D float32 then converted */
    check_matmul(3, 512, SL_DTYPE_BF16, SL_DTYPE_F16);
    check_matmul(40, 512, SL_DTYPE_BF16, SL_DTYPE_F16);
    check_matmul(5, 64, SL_DTYPE_F32, SL_DTYPE_BF16);
    /* cols not a multiple of 8: the GEMM even for 3 tokens */
    check_matmul(3, 100, SL_DTYPE_BF16, SL_DTYPE_BF16);
    /* pairs of one shape: one batched GEMM past the GEMV's token counts (10 of the 12 cases) */
    const long pairs_before = sl_cuda_backend_gemm_pairs(&g_gpu);
    for (int reversed = 0; reversed < 2; reversed++) {
        check_matmul_pair(9, 512, SL_DTYPE_BF16, SL_DTYPE_BF16, reversed);
        check_matmul_pair(300, 4096, SL_DTYPE_BF16, SL_DTYPE_BF16, reversed);
        check_matmul_pair(300, 512, SL_DTYPE_BF16, SL_DTYPE_F32, reversed);
        check_matmul_pair(33, 1024, SL_DTYPE_F16, SL_DTYPE_F16, reversed);
        check_matmul_pair(17, 64, SL_DTYPE_F32, SL_DTYPE_F32, reversed);
        check_matmul_pair(3, 512, SL_DTYPE_BF16, SL_DTYPE_BF16, reversed); /* the GEMV's */
    }
    CHECK(sl_cuda_backend_gemm_pairs(&g_gpu) - pairs_before == 10);
}

/* 16-bit weights run activations of their own type on the GPU, float32 weights float32 ones. */
static void test_activation_dtype(void) {
    CHECK_EQ_INT(g_gpu.iface->activation_dtype(g_gpu.ctx, SL_DTYPE_BF16), SL_DTYPE_BF16);
    CHECK_EQ_INT(g_gpu.iface->activation_dtype(g_gpu.ctx, SL_DTYPE_F16), SL_DTYPE_F16);
    CHECK_EQ_INT(g_gpu.iface->activation_dtype(g_gpu.ctx, SL_DTYPE_F32), SL_DTYPE_F32);
}

static void test_embed(void) {
    const int64_t rows = 100, dim = 256;
    twin_weight t = weight_pair(rows, dim, SL_DTYPE_BF16);
    const int32_t ids[6] = {0, 99, 150, 149, 50, 51}; /* offset 50: rows 50..149 are here, the others embed to 0 */
    twin tids = twin_put(ids, sizeof ids), out = twin_zeros(sizeof(float) * 6 * dim);
    g_cpu.iface->embed(g_cpu.ctx, out.cpu, &t.cpu, tids.cpu, 6, 50);
    g_gpu.iface->embed(g_gpu.ctx, out.gpu, &t.gpu, tids.gpu, 6, 50);
    CHECK(twin_agree("embed", out, 6 * dim, 0, 0));
    twin_free(tids), twin_free(out);
    g_cpu.iface->weight_free(g_cpu.ctx, &t.cpu);
    g_gpu.iface->weight_free(g_gpu.ctx, &t.gpu);
}

/* One attention step: sequence s has context ctx[s] tokens of which the last
 * q_len[s] are this step's queries. Every context token's K/V is stored first
 * (scattered over a shuffled pool), then attention runs over the step. */
typedef struct attn_case {
    const char *name;
    int n_seqs;
    const int *q_len, *ctx;
    int n_heads, n_kv_heads, head_dim, block_size;
    sl_dtype kv_dtype;
    sl_dtype act;   /* of q, k, v and out on the GPU; the CPU runs float32 on the same values */
} attn_case;

/* Whether the CUDA backend puts a sequence of q_len queries on its tensor-core prefill (attention_mma.cu):
 * a 16-bit cache, head_dim 64, 80, 96 or 128, and more query tokens than decode takes (8 / the heads of a
 * decode pass). Every other sequence goes through float32 kernels. */
static int on_tensor_cores(const attn_case *c, int q_len) {
    if (c->kv_dtype != SL_DTYPE_BF16 && c->kv_dtype != SL_DTYPE_F16) return 0;
    if (c->head_dim != 64 && c->head_dim != 80 && c->head_dim != 96 && c->head_dim != 128) return 0;
    const int group = c->n_heads / c->n_kv_heads, passes = (group + 7) / 8, heads = (group + passes - 1) / passes;
    return q_len > 8 / heads;
}

/* Tolerances against the CPU's float32 reference, per sequence by the kernel that computes it.
 * The float32 kernels: 2e-5 + 2e-4 |x|, the order of float32 sums in another grouping.
 * The tensor-core prefill rounds two more things to the cache's type, of unit roundoff u (2^-8
 * bfloat16, 2^-11 float16): the prescaled query, so score j (log2 units) moves by delta_j, at most
 * u sum_i |q_i k_ji| and in practice a random-signed sum over the features; and each weight
 * 2^(s_j - ref) (ref the lazily moved reference, so at most 2^8), by a relative eps_j <= u. With eta_j = ln 2 delta_j + eps_j the output
 * o = sum_j w_j v_j / sum_j w_j (sums of the rounded weights) moves by about
 * sum_j w_j (eta_j - mean eta) (v_j - o), so by at most 2 max|eta| max|v - o|: of order u, as
 * |v| <= 1 here; the rows that see 2 or 3 keys move most. That rounding emulated on the host on
 * these inputs (tools/attention_mma_check.py: head_dim 64 to 128, 300-token prompts, 200 queries
 * over 3000 keys; ctest attention_mma_check) moved outputs by at most 0.8 u; we allow 3u + 3u |x| (bfloat16 1.2e-2, float16
 * 1.5e-3), a margin near 4 that is still well below what a wrong fragment, key or mask costs (order
 * 0.1 to 1). With activations of the cache's type the query goes in unrounded (its values are already
 * of that type), which only removes a term. A 16-bit output adds its own rounding: u_act |x| more
 * in rtol (act_tolerance), for every kernel. */
static void tensor_core_tolerance(sl_dtype kv_dtype, double *atol, double *rtol) {
    const double u = kv_dtype == SL_DTYPE_BF16 ? 1.0 / 256 : 1.0 / 2048;
    *atol = 3 * u, *rtol = 3 * u;
}

static void check_attention(const attn_case *c) {
    const int S = c->n_seqs, hd = c->head_dim, bs = c->block_size, kv_dim = c->n_kv_heads * hd, q_dim = c->n_heads * hd;
    int max_blocks = 0, total_ctx = 0, n_tokens = 0, max_ctx = 0, max_q = 0;
    for (int s = 0; s < S; s++) {
        int nb = (c->ctx[s] + bs - 1) / bs;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        max_ctx = c->ctx[s] > max_ctx ? c->ctx[s] : max_ctx;
        max_q = c->q_len[s] > max_q ? c->q_len[s] : max_q;
        total_ctx += c->ctx[s];
        n_tokens += c->q_len[s];
    }
    const int n_blocks = S * max_blocks + 3;
    /* a shuffled pool: block b of sequence s is perm[s * max_blocks + b] */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)((uniform() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)(S * max_blocks)), *slots = malloc(sizeof(int32_t) * (size_t)total_ctx);
    int32_t *qs = malloc(sizeof(int32_t) * (size_t)(S + 1)), *ctx = malloc(sizeof(int32_t) * (size_t)S);
    int32_t *positions = calloc((size_t)total_ctx, sizeof(int32_t)); /* all 0: see the cache's filling below */
    for (int s = 0, t = 0, q = 0; s < S; s++) {
        for (int b = 0; b < max_blocks; b++) tables[s * max_blocks + b] = perm[s * max_blocks + b];
        for (int j = 0; j < c->ctx[s]; j++, t++) slots[t] = tables[s * max_blocks + j / bs] * bs + j % bs;
        qs[s] = q;
        q += c->q_len[s];
        ctx[s] = c->ctx[s];
    }
    qs[S] = n_tokens;
    float *k = random_floats((int64_t)total_ctx * kv_dim, 1.0f), *v = random_floats((int64_t)total_ctx * kv_dim, 1.0f);
    float *q = random_floats((int64_t)n_tokens * q_dim, 1.0f);
    round_to(c->act, k, (int64_t)total_ctx * kv_dim);
    round_to(c->act, v, (int64_t)total_ctx * kv_dim);
    round_to(c->act, q, (int64_t)n_tokens * q_dim);
    twin tk = twin_act(k, (int64_t)total_ctx * kv_dim, c->act), tv = twin_act(v, (int64_t)total_ctx * kv_dim, c->act);
    twin tq = twin_act(q, (int64_t)n_tokens * q_dim, c->act);
    twin tslots = twin_put(slots, sizeof(int32_t) * (size_t)total_ctx);
    twin ttables = twin_put(tables, sizeof(int32_t) * (size_t)(S * max_blocks)), tqs = twin_put(qs, sizeof(int32_t) * (size_t)(S + 1));
    twin tctx = twin_put(ctx, sizeof(int32_t) * (size_t)S), out = twin_zeros(sizeof(float) * (size_t)n_tokens * q_dim);
    sl_kv_cache kv = {.dtype = c->kv_dtype, .block_size = bs, .n_kv_heads = c->n_kv_heads, .head_dim = hd};
    const size_t pool = (size_t)n_blocks * sl_kv_block_bytes(&kv);
    twin tkc = twin_zeros(pool), tvc = twin_zeros(pool);
    sl_kv_cache kv_cpu = kv, kv_gpu = kv;
    kv_cpu.k = tkc.cpu, kv_cpu.v = tvc.cpu, kv_gpu.k = tkc.gpu, kv_gpu.v = tvc.gpu;
    /* The cache is filled as the model fills it, through rope_kv_store (no query heads here), but at position
     * 0 (cos 1, sin 0: keys stored as they are, rounded to the cache's type alike on both sides). Rotating
     * random keys adds nothing here, and rope_kv_store is held to the reference in test_rope: a rotated key
     * near a rounding tie of a 16-bit cache may round one unit apart on the two sides (sincosf and
     * contracted multiply-adds differ in float32's last bit), which moves a float32 kernel's output by about
     * u times that key's weight (5e-5 seen in bfloat16), beyond the tolerance held here. */
    float *inv_freq = malloc(sizeof(float) * (size_t)(hd / 2));
    for (int i = 0; i < hd / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * (float)i / (float)hd);
    twin tpos = twin_put(positions, sizeof(int32_t) * (size_t)total_ctx);
    twin tfreq = twin_put(inv_freq, sizeof(float) * (size_t)(hd / 2));
    g_cpu.iface->rope_kv_store(g_cpu.ctx, NULL, tk.cpu, tv.cpu, &kv_cpu, tpos.cpu, tslots.cpu, tfreq.cpu, total_ctx, 0,
                               SL_DTYPE_F32);
    g_gpu.iface->rope_kv_store(g_gpu.ctx, NULL, tk.gpu, tv.gpu, &kv_gpu, tpos.gpu, tslots.gpu, tfreq.gpu, total_ctx, 0,
                               c->act);
    sl_attn_batch b = {.n_seqs = S, .n_tokens = n_tokens, .max_query_len = max_q, .max_blocks = max_blocks,
                       .max_context_len = max_ctx};
    sl_attn_batch bc = b, bg = b;
    bc.query_start = tqs.cpu, bc.context_len = tctx.cpu, bc.block_tables = ttables.cpu;
    bg.query_start = tqs.gpu, bg.context_len = tctx.gpu, bg.block_tables = ttables.gpu;
    const float scale = 1.0f / sqrtf((float)hd) * 2.0f; /* sharper than usual: softmax weights far from uniform */
    g_cpu.iface->attention(g_cpu.ctx, out.cpu, tq.cpu, &kv_cpu, &bc, c->n_heads, scale, SL_DTYPE_F32);
    g_gpu.iface->attention(g_gpu.ctx, out.gpu, tq.gpu, &kv_gpu, &bg, c->n_heads, scale, c->act);
    float *o_cpu = get(&g_cpu, out.cpu, (int64_t)n_tokens * q_dim);
    float *o_gpu = get_as(&g_gpu, out.gpu, (int64_t)n_tokens * q_dim, c->act);
    double worst_mma = 0;
    int n_mma = 0;
    for (int s = 0; s < S; s++) {
        const int64_t at = (int64_t)qs[s] * q_dim, n = (int64_t)c->q_len[s] * q_dim;
        double atol = 2e-5, rtol = 2e-4;
        char what[160];
        snprintf(what, sizeof what, "%s, sequence %d (%d of %d)", c->name, s, c->q_len[s], c->ctx[s]);
        if (on_tensor_cores(c, c->q_len[s])) {
            tensor_core_tolerance(c->kv_dtype, &atol, &rtol);
            n_mma++;
            for (int64_t i = at; i < at + n; i++) {
                const double d = fabs((double)o_cpu[i] - o_gpu[i]);
                if (!(d <= worst_mma)) worst_mma = isnan(d) ? INFINITY : d;
            }
        }
        act_tolerance(c->act, 0, &rtol);
        CHECK(agree(what, o_cpu + at, o_gpu + at, n, atol, rtol));
    }
    if (n_mma)
        printf("%s: %d of %d sequences on the tensor-core prefill, largest difference %.3g\n", c->name, n_mma, S,
               worst_mma);
    free(o_cpu), free(o_gpu);
    twin ts[] = {tk, tv, tq, tslots, ttables, tqs, tctx, out, tkc, tvc, tpos, tfreq};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) twin_free(ts[i]);
    free(perm), free(tables), free(slots), free(qs), free(ctx), free(k), free(v), free(q), free(positions), free(inv_freq);
}

static void test_attention(void) {
    /* decode: every sequence one query, contexts from 1 to 5000 (the long ones split on the GPU) */
    const int dq[] = {1, 1, 1, 1, 1}, dc[] = {1, 17, 100, 1000, 5000};
    /* prefill beside decode and a chunk over an earlier context */
    const int mq[] = {300, 1, 37, 5}, mc[] = {300, 50, 137, 5};
    /* batch 1, long context: the split path */
    const int lq[] = {1}, lc[] = {8000};
    /* a 2048-token prompt in one step */
    const int pq[] = {2048}, pc[] = {2048};
    /* the tensor-core prefill: a prompt (130: not whole tiles), decode over 900 keys, chunks over earlier
     * contexts (65 over 935; 200 over 2800, to 3000 keys), a 2-token chunk */
    const int gq[] = {130, 1, 65, 200, 2}, gc[] = {130, 900, 1000, 3000, 40};
    /* a 513-token chunk over 2487 earlier keys */
    const int cq[] = {513}, cc[] = {3000};
    /* head passes: a prompt beside a decode */
    const int hq[] = {70, 1}, hc[] = {100, 20};
    const attn_case cases[] = {
        {"decode gqa bf16", 5, dq, dc, 8, 2, 128, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"decode gqa f32", 5, dq, dc, 32, 8, 128, 16, SL_DTYPE_F32, SL_DTYPE_F32},
        {"mixed mha f32", 4, mq, mc, 4, 4, 64, 16, SL_DTYPE_F32, SL_DTYPE_F32},
        {"mixed gqa f16 block 32", 4, mq, mc, 14, 2, 64, 32, SL_DTYPE_F16, SL_DTYPE_F32},
        {"mixed fixtures' head_dim 16, block 5", 4, mq, mc, 4, 2, 16, 5, SL_DTYPE_F32, SL_DTYPE_F32},
        {"long decode f16", 1, lq, lc, 32, 8, 128, 16, SL_DTYPE_F16, SL_DTYPE_F32},
        {"prefill 2048 bf16", 1, pq, pc, 32, 8, 128, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"decode head_dim 80", 5, dq, dc, 8, 8, 80, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mixed head_dim 256", 4, mq, mc, 8, 4, 256, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mixed head_dim 8 (the plain kernel)", 4, mq, mc, 6, 3, 8, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        /* the tensor-core prefill (attention_mma.cu), beside decodes in the same step */
        {"mma mha bf16 head_dim 128, block 24", 4, mq, mc, 4, 4, 128, 24, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mma gqa 8 f16 head_dim 128, 5 lengths", 5, gq, gc, 32, 4, 128, 16, SL_DTYPE_F16, SL_DTYPE_F32},
        {"mma gqa 4 bf16 head_dim 64, 3000 keys, block 48", 1, cq, cc, 8, 2, 64, 48, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mma mha f16 head_dim 64, 5 lengths", 5, gq, gc, 4, 4, 64, 16, SL_DTYPE_F16, SL_DTYPE_F32},
        {"mma idle warps (group 80) bf16 head_dim 64", 2, hq, hc, 160, 2, 64, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mma idle warps (group 96) f16 head_dim 128", 2, hq, hc, 96, 1, 128, 16, SL_DTYPE_F16, SL_DTYPE_F32},
        {"mma head passes (group 160) bf16 head_dim 64", 2, hq, hc, 160, 1, 64, 16, SL_DTYPE_BF16, SL_DTYPE_F32},
        {"mma gqa 2 f16 head_dim 80", 4, mq, mc, 8, 4, 80, 16, SL_DTYPE_F16, SL_DTYPE_F32},
        {"mma gqa 4 bf16 head_dim 96, block 5", 4, mq, mc, 8, 2, 96, 5, SL_DTYPE_BF16, SL_DTYPE_F32},
        /* 16-bit activations: q, k, v and out of act; decode (split over long contexts, combined) and the
         * tensor-core prefill with queries of the cache's type, the float32 kernels, the plain one */
        {"decode gqa bf16, bf16 activations", 5, dq, dc, 32, 8, 128, 16, SL_DTYPE_BF16, SL_DTYPE_BF16},
        {"mma gqa 4 bf16 head_dim 128, bf16 activations, 5 lengths", 5, gq, gc, 32, 8, 128, 16, SL_DTYPE_BF16,
         SL_DTYPE_BF16},
        {"long decode bf16, bf16 activations", 1, lq, lc, 32, 8, 128, 16, SL_DTYPE_BF16, SL_DTYPE_BF16},
        {"mma mha f16 head_dim 64, f16 activations", 4, mq, mc, 4, 4, 64, 16, SL_DTYPE_F16, SL_DTYPE_F16},
        {"mma gqa 4 f16 cache, bf16 activations", 4, mq, mc, 8, 2, 64, 16, SL_DTYPE_F16, SL_DTYPE_BF16},
        {"mixed f32 cache, bf16 activations", 4, mq, mc, 8, 2, 64, 16, SL_DTYPE_F32, SL_DTYPE_BF16},
        {"mixed head_dim 8 (the plain kernel), bf16 activations", 4, mq, mc, 6, 3, 8, 16, SL_DTYPE_BF16,
         SL_DTYPE_BF16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_attention(&cases[i]);
}

/* ---- sampling ---- */

/* The GPU's token must be the reference's for the row's draw u, or, where u
 * falls within 1e-5 of a boundary between two ids (the sums' rounding differs),
 * the reference's for u nudged by that much. Rows with rows[i].mask >= 0 have
 * that mask of masks ([n_masks][mask words]) on both sides. */
static void check_sample(const char *what, const float *logits, int n_rows, int vocab, const sl_sample_row *rows,
                         const uint32_t *masks, int n_masks) {
    const size_t words = sl_sample_mask_words(vocab);
    twin l = twin_put(logits, sizeof(float) * (size_t)n_rows * (size_t)vocab);
    twin r = twin_put(rows, sizeof(sl_sample_row) * (size_t)n_rows);
    twin t = twin_zeros(sizeof(int32_t) * (size_t)n_rows);
    twin m = n_masks ? twin_put(masks, sizeof(uint32_t) * words * (size_t)n_masks) : (twin){NULL, NULL};
    g_gpu.iface->sample(g_gpu.ctx, t.gpu, l.gpu, r.gpu, m.gpu, n_rows, vocab);
    int32_t *got = malloc(sizeof(int32_t) * (size_t)n_rows);
    sl_err err = {0};
    CHECK_EQ_INT(g_gpu.iface->download(g_gpu.ctx, got, t.gpu, sizeof(int32_t) * (size_t)n_rows, &err), 0);
    CHECK_EQ_INT(g_gpu.iface->synchronize(g_gpu.ctx, &err), 0);
    float *probs = malloc(sizeof(float) * (size_t)vocab);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)vocab);
    int exact = 0, bad = 0;
    for (int i = 0; i < n_rows; i++) {
        const float *row = logits + (size_t)i * (size_t)vocab;
        const uint32_t *mask = rows[i].mask >= 0 ? masks + (size_t)rows[i].mask * words : NULL;
        sl_sample_row lo = rows[i], hi = rows[i];
        lo.u = fmaxf(0.0f, lo.u - 1e-5f), hi.u = fminf(0.99999994f, hi.u + 1e-5f);
        const int32_t want = sl_sample_pick(row, vocab, &rows[i], mask, probs, order);
        exact += got[i] == want;
        if (got[i] != want && got[i] != sl_sample_pick(row, vocab, &lo, mask, probs, order) &&
            got[i] != sl_sample_pick(row, vocab, &hi, mask, probs, order)) {
            if (bad++ < 5)
                fprintf(stderr, "%s: row %d (temperature %g, top_k %d, top_p %g, min_p %g, u %.7f, mask %d): gpu %d, "
                        "cpu %d\n", what, i, rows[i].temperature, rows[i].top_k, rows[i].top_p, rows[i].min_p,
                        rows[i].u, rows[i].mask, got[i], want);
        }
    }
    fprintf(stderr, "%s: %d of %d rows the reference's token exactly, %d wrong\n", what, exact, n_rows, bad);
    CHECK_EQ_INT(bad, 0);
    free(got), free(probs), free(order);
    twin_free(l), twin_free(r), twin_free(t);
    if (n_masks) twin_free(m);
}

/* Masks for two rows in three (stored in reverse row order, so a row's mask index is not its row): most
 * ids, 1 in 200 (a grammar between JSON keys), one id, or none (the op gives -1); never the row's
 * largest logit, so the allowed maximum is another id. Returns [n_masks][mask words]. */
static uint32_t *mask_rows(const float *logits, int vocab, sl_sample_row *rows, int n_rows, int *n_masks) {
    const size_t words = sl_sample_mask_words(vocab);
    uint32_t *masks = calloc(words * (size_t)n_rows, sizeof *masks);
    const int n = n_rows - (n_rows + 2) / 3;
    *n_masks = 0;
    for (int i = 0; i < n_rows; i++) {
        if (i % 3 == 0) continue;
        const int kind = (i / 3) % 4;
        uint32_t *mask = masks + (size_t)(n - 1 - *n_masks) * words;
        rows[i].mask = n - 1 - (*n_masks)++;
        if (kind == 2) {
            const int id = (int)((uniform() + 1.0f) * 0.5f * (float)(vocab - 1));
            mask[id >> 5] |= 1u << (id & 31);
        }
        for (int id = 0; id < vocab && kind < 2; id++)
            if ((uniform() + 1.0f) * 0.5f < (kind == 0 ? 0.7f : 0.005f)) mask[id >> 5] |= 1u << (id & 31);
        const int top = sl_argmax(logits + (size_t)i * (size_t)vocab, vocab);
        if (kind != 2) mask[top >> 5] &= ~(1u << (top & 31));
    }
    return masks;
}

static void test_sample(void) {
    const sl_sample_row kinds[] = {
        {.temperature = 0, .top_p = 1},        {.temperature = 1, .top_p = 1},
        {.temperature = 0.6f, .top_p = 0.9f},   {.temperature = 1, .top_k = 1, .top_p = 1},
        {.temperature = 1, .top_k = 20, .top_p = 1}, {.temperature = 0.8f, .top_p = 0.6f},
        {.temperature = 1, .top_p = 1, .min_p = 0.1f}, {.temperature = 1.3f, .top_k = 50, .top_p = 0.9f, .min_p = 0.05f},
    };
    const int n_kinds = (int)(sizeof kinds / sizeof kinds[0]);
    /* a small vocabulary with logits on a grid of 0.25 (many ties), and a Llama 3 sized one, peaked */
    const struct { const char *what, *masked; int vocab, n_rows; float grid; } cases[] = {
        {"sample, 300 ids with ties", "sample, 300 ids with ties, masked", 300, 256, 0.25f},
        {"sample, 128256 ids", "sample, 128256 ids, masked", 128256, 64, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int vocab = cases[c].vocab, n = cases[c].n_rows;
        float *logits = malloc(sizeof(float) * (size_t)n * (size_t)vocab);
        for (size_t i = 0; i < (size_t)n * (size_t)vocab; i++) {
            const float x = (uniform() + 1.0f) * 3.0f;
            logits[i] = cases[c].grid > 0 ? floorf(x / cases[c].grid) * cases[c].grid
                                          : 2.0f * x + (uniform() > 0.98f ? 8.0f : 0.0f);
        }
        sl_sample_row *rows = malloc(sizeof(sl_sample_row) * (size_t)n);
        for (int i = 0; i < n; i++) {
            rows[i] = kinds[i % n_kinds];
            rows[i].u = (uniform() + 1.0f) * 0.5f;
            rows[i].mask = SL_SAMPLE_NO_MASK;
        }
        check_sample(cases[c].what, logits, n, vocab, rows, NULL, 0);
        int n_masks;
        uint32_t *masks = mask_rows(logits, vocab, rows, n, &n_masks);
        check_sample(cases[c].masked, logits, n, vocab, rows, masks, n_masks);
        free(logits), free(rows), free(masks);
    }
}

/* backend.h's replay: ops run as issued on a key's first call, recorded on its second, replayed after;
 * a replay reads its buffers' new contents, and a matmul input buffer that grows (a larger step between
 * two replays) drops the graphs, which record again. */
typedef struct replay_ops {
    sl_backend *b;
    sl_proj proj;
    const float *x, *y;
    int n, calls;
} replay_ops;

static int issue_replay_ops(void *arg, sl_err *err) {
    (void)err;
    replay_ops *r = arg;
    r->calls++;
    r->b->iface->matmul(r->b->ctx, &r->proj, 1, r->x, r->n, SL_DTYPE_F32);
    r->b->iface->add(r->b->ctx, r->proj.out, r->y, r->n * r->proj.w->rows, SL_DTYPE_F32);
    return SL_OK;
}

static void check_replay(int n) {
    static int64_t big = 4096; /* tokens of the larger step: past every earlier test's */
    const int64_t rows = 256, cols = 512;
    big *= 2;
    twin_weight w = weight_pair(rows, cols, SL_DTYPE_BF16);
    twin tx = twin_zeros(sizeof(float) * (size_t)(n * cols)), ty = twin_zeros(sizeof(float) * (size_t)(n * rows));
    twin out = twin_zeros(sizeof(float) * (size_t)(n * rows));
    replay_ops rc = {&g_cpu, {.out = out.cpu, .w = &w.cpu}, tx.cpu, ty.cpu, n, 0};
    replay_ops rg = {&g_gpu, {.out = out.gpu, .w = &w.gpu}, tx.gpu, ty.gpu, n, 0};
    sl_err err = {0};
    for (int call = 0; call < 6; call++) {
        float *x = random_floats((int64_t)n * cols, 2.0f), *y = random_floats((int64_t)n * rows, 1.0f);
        CHECK_EQ_INT(g_cpu.iface->upload(g_cpu.ctx, tx.cpu, x, sizeof(float) * (size_t)(n * cols), &err), 0);
        CHECK_EQ_INT(g_gpu.iface->upload(g_gpu.ctx, tx.gpu, x, sizeof(float) * (size_t)(n * cols), &err), 0);
        CHECK_EQ_INT(g_cpu.iface->upload(g_cpu.ctx, ty.cpu, y, sizeof(float) * (size_t)(n * rows), &err), 0);
        CHECK_EQ_INT(g_gpu.iface->upload(g_gpu.ctx, ty.gpu, y, sizeof(float) * (size_t)(n * rows), &err), 0);
        if (call == 3) { /* a larger step grows the matmul's input buffer */
            void *bx = zeros(&g_gpu, sizeof(float) * (size_t)(big * cols)), *bo = zeros(&g_gpu, sizeof(float) * (size_t)(big * rows));
            g_gpu.iface->matmul(g_gpu.ctx, &(sl_proj){.out = bo, .w = &w.gpu}, 1, bx, (int)big, SL_DTYPE_F32);
            CHECK_EQ_INT(g_gpu.iface->synchronize(g_gpu.ctx, &err), 0);
            g_gpu.iface->free(g_gpu.ctx, bx), g_gpu.iface->free(g_gpu.ctx, bo);
        }
        issue_replay_ops(&rc, &err);
        CHECK_EQ_INT(g_gpu.iface->replay(g_gpu.ctx, 1000 + (uint64_t)n, issue_replay_ops, &rg, &err), 0);
        char what[64];
        snprintf(what, sizeof what, "replay n=%d call %d", n, call);
        CHECK(twin_agree(what, out, n * rows, 2e-4 * sqrt((double)cols) * 0.1, 1e-4));
        free(x), free(y);
    }
    /* run, record, replay, replay; dropped; record, replay */
    CHECK_EQ_INT(rg.calls, 3);
    twin_free(tx), twin_free(ty), twin_free(out);
    g_cpu.iface->weight_free(g_cpu.ctx, &w.cpu);
    g_gpu.iface->weight_free(g_gpu.ctx, &w.gpu);
}

static void test_replay(void) {
    check_replay(3);  /* the GEMV */
    check_replay(40); /* cuBLASLt over the rounded input */
}

int main(void) {
    if (sl_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no GPU visible: the CUDA backend's ops are not compared with the CPU's\n");
        return 77;
    }
    sl_err err = {0};
    if (sl_backend_create("cpu", &(sl_backend_options){.matmul_bf16_inputs = 1}, &g_cpu, &err) ||
        sl_backend_create("cuda", &(sl_backend_options){.device_index = -1}, &g_gpu, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    TEST_RUN(test_activation_dtype);
    TEST_RUN(test_elementwise);
    TEST_RUN(test_embed);
    TEST_RUN(test_matmul);
    TEST_RUN(test_attention);
    TEST_RUN(test_sample);
    TEST_RUN(test_replay);
    CHECK_EQ_INT(g_gpu.iface->synchronize(g_gpu.ctx, &err), 0);
    sl_backend_destroy(&g_gpu);
    sl_backend_destroy(&g_cpu);
    TEST_EXIT();
}
