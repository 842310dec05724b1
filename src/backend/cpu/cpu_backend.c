/* cpu_backend.c -- the CPU backend: host memory, a thread pool, and the
 * reference kernels of kernels.h behind the backend interface.
 *
 * Matmul weights are repacked once at load into the kernels' panel layout
 * (matmul.c), in chunks of anonymous memory that ask for transparent huge
 * pages: streaming a few hundred MB per decode step through 4 KB pages costs
 * a TLB miss per page, and the hardware prefetcher stops at each page edge.
 * Small weights share a chunk; a chunk is unmapped when its last weight is
 * freed. The mapped safetensors file is only read while packing (its pages
 * stay as clean page cache the kernel may drop). */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"

#define HUGE_PAGE ((size_t)2 << 20)
#define CHUNK_BYTES ((size_t)64 << 20) /* weights above half of this get a chunk of their own */

/* A mapping holding packed weights: [header | weights...]. */
typedef struct weight_chunk {
    struct weight_chunk *next;
    size_t size, used;
    int n_live;                    /* weights not yet freed */
} weight_chunk;

typedef struct cpu_ctx {
    cpu_pool *pool;
    cpu_scratch scratch;           /* the matmul's padded or bf16 activations */
    int bf16_inputs;               /* sl_backend_options.matmul_bf16_inputs */
    weight_chunk *chunks;          /* the newest first; only it takes new small weights */
    float *sample_probs;           /* the sampler's scratch, [threads][vocab] each; grows to the vocabulary once */
    int32_t *sample_order;
    int sample_vocab;
    sl_err failure;                /* an op that could not run (code 0: none), for the next synchronize */
} cpu_ctx;

static void cpu_destroy(void *ctx) {
    cpu_ctx *c = ctx;
    cpu_pool_destroy(c->pool);
    free(c->scratch.floats);
    free(c->sample_probs);
    free(c->sample_order);
    for (weight_chunk *k = c->chunks, *next; k; k = next) {
        next = k->next;
        munmap(k, k->size);
    }
    free(c);
}

/* A chunk for at least at_least bytes: a shared one becomes the newest; one
 * of its own (a large weight) goes behind it, so the shared chunk keeps
 * taking the small weights that follow. */
static weight_chunk *new_chunk(cpu_ctx *c, size_t at_least) {
    const bool own = at_least > CHUNK_BYTES / 2;
    size_t size = own ? (at_least + sizeof(weight_chunk) + 64 + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE : CHUNK_BYTES;
    weight_chunk *k = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (k == MAP_FAILED) return NULL;
    madvise(k, size, MADV_HUGEPAGE); /* advice: without THP the weights still work, from 4 KB pages */
    *k = (weight_chunk){.size = size, .used = (sizeof *k + 63) & ~(size_t)63};
    weight_chunk **link = own && c->chunks ? &c->chunks->next : &c->chunks;
    k->next = *link;
    *link = k;
    return k;
}

/* 64-byte aligned memory for one packed weight; *chunk is its owner. */
static void *weight_memory(cpu_ctx *c, size_t n_bytes, weight_chunk **chunk) {
    n_bytes = (n_bytes + 63) & ~(size_t)63;
    weight_chunk *k = c->chunks;
    if (!k || n_bytes > CHUNK_BYTES / 2 || k->size - k->used < n_bytes) k = new_chunk(c, n_bytes);
    if (!k) return NULL;
    void *p = (char *)k + k->used;
    k->used += n_bytes;
    k->n_live++;
    *chunk = k;
    return p;
}

/* What alloc hands out: this header, then the caller's 64-byte aligned,
 * zero-filled bytes. Buffers of MAPPED_ALLOC or more (the KV cache above all)
 * are mappings of their own in huge pages: a decode step reads blocks all
 * over the cache, and with 4 KB pages each block would cost a TLB miss. The
 * rest comes from the heap, where the sanitizers watch it.
 *
 * A mapping is committed at once, both threads asking the kernel for its
 * pages, as vLLM's and llama.cpp's start-up commit their KV caches: a server
 * that cannot have its cache fails at start, not in its first busy minute,
 * and no step stalls on the kernel zeroing fresh pages (on a virtual machine
 * that cost a 64-request run 7%, one thread faulting while the other waited). */
#define MAPPED_ALLOC ((size_t)1 << 20)
typedef struct alloc_header {
    size_t mapped_bytes;          /* the mapping's size, or 0 for heap memory */
    char pad[64 - sizeof(size_t)];
} alloc_header;

typedef struct commit_args {
    char *base;
    size_t n_bytes;
    atomic_bool failed;
} commit_args;

/* Pages of huge-page-sized pieces [begin, end) of the mapping, now. */
static void commit_range(void *varg, int64_t begin, int64_t end, int thread) {
    (void)thread;
    commit_args *a = varg;
    for (int64_t i = begin; i < end && !atomic_load(&a->failed); i++) {
        char *p = a->base + (size_t)i * HUGE_PAGE;
        const size_t n = a->n_bytes - (size_t)i * HUGE_PAGE < HUGE_PAGE ? a->n_bytes - (size_t)i * HUGE_PAGE : HUGE_PAGE;
#ifdef MADV_POPULATE_WRITE
        if (madvise(p, n, MADV_POPULATE_WRITE) == 0) continue;
        if (errno != EINVAL) { /* EINVAL: a kernel before 5.14, touch instead */
            atomic_store(&a->failed, true);
            return;
        }
#endif
        for (size_t o = 0; o < n; o += 4096) ((volatile char *)p)[o] = 0;
    }
}

static int cpu_alloc(void *ctx, size_t n_bytes, void **out, sl_err *err) {
    cpu_ctx *c = ctx;
    *out = NULL;
    const size_t total = sizeof(alloc_header) + ((n_bytes + 63) & ~(size_t)63);
    alloc_header *h = NULL;
    if (total >= MAPPED_ALLOC) {
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return sl_err_set(err, SL_ENOMEM, "out of host memory allocating %zu bytes", n_bytes);
        madvise(m, total, MADV_HUGEPAGE); /* advice only */
        commit_args a = {.base = m, .n_bytes = total};
        cpu_pool_for(c->pool, (int64_t)((total + HUGE_PAGE - 1) / HUGE_PAGE), 2, commit_range, &a);
        if (atomic_load(&a.failed)) {
            munmap(m, total);
            return sl_err_set(err, SL_ENOMEM, "out of host memory committing %zu bytes", n_bytes);
        }
        h = m;
        h->mapped_bytes = total;
    } else if (posix_memalign((void **)&h, 64, total) == 0) {
        memset(h, 0, total);
    } else {
        h = NULL;
    }
    if (!h) return sl_err_set(err, SL_ENOMEM, "out of host memory allocating %zu bytes", n_bytes);
    *out = h + 1;
    return SL_OK;
}

static void cpu_free(void *ctx, void *ptr) {
    (void)ctx;
    if (!ptr) return;
    alloc_header *h = (alloc_header *)ptr - 1;
    if (h->mapped_bytes) munmap(h, h->mapped_bytes);
    else free(h);
}

static int cpu_alloc_host(void *ctx, size_t n_bytes, void **out, sl_err *err) {
    (void)ctx;
    *out = malloc(n_bytes ? n_bytes : 1);
    return *out ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of host memory allocating %zu bytes", n_bytes);
}

static void cpu_free_host(void *ctx, void *ptr) {
    (void)ctx;
    free(ptr);
}

/* The host's available and total RAM (/proc/meminfo), shared by the node's ranks. */
static int cpu_memory(void *ctx, size_t *free_bytes, size_t *total_bytes, sl_err *err) {
    (void)ctx;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return sl_err_set(err, SL_EIO, "cannot read /proc/meminfo to size the host's memory (give --device-memory)");
    long long avail = 0, total = 0, kb;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = kb;
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) total = kb;
    }
    fclose(f);
    *free_bytes = (size_t)avail * 1024;
    *total_bytes = (size_t)total * 1024;
    return SL_OK;
}

static int cpu_copy(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err) {
    (void)ctx;
    (void)err;
    memcpy(dst, src, n_bytes);
    return SL_OK;
}

static int cpu_weight_load(void *ctx, sl_weight *dst, const void *src, sl_dtype dtype, int64_t rows, int64_t cols,
                           int64_t src_row_stride, sl_err *err) {
    const size_t n_bytes = cpu_packed_bytes(dtype, rows, cols);
    weight_chunk *chunk;
    void *mem = weight_memory(ctx, n_bytes, &chunk);
    if (!mem) return sl_err_set(err, SL_ENOMEM, "out of host memory for a %lld x %lld weight (%zu bytes)",
                                (long long)rows, (long long)cols, n_bytes);
    cpu_weight_pack(((cpu_ctx *)ctx)->pool, mem, dst, src, dtype, rows, cols, src_row_stride);
    dst->owned = chunk;
    return SL_OK;
}

static void cpu_weight_free(void *ctx, sl_weight *w) {
    cpu_ctx *c = ctx;
    weight_chunk *chunk = w->owned;
    memset(w, 0, sizeof *w);
    if (!chunk || --chunk->n_live > 0) return;
    for (weight_chunk **p = &c->chunks; *p; p = &(*p)->next)
        if (*p == chunk) {
            *p = chunk->next;
            break;
        }
    munmap(chunk, chunk->size);
}

/* The ops: activations are float32 here (activation_dtype), so `act` is always SL_DTYPE_F32. */
static sl_dtype cpu_activation_dtype(void *ctx, sl_dtype weights) {
    (void)ctx, (void)weights;
    return SL_DTYPE_F32;
}
static void op_embed(void *ctx, float *out, const sl_weight *t, const int32_t *ids, int n, int64_t off) {
    cpu_embed(((cpu_ctx *)ctx)->pool, out, t, ids, n, off);
}
static void op_matmul(void *ctx, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act) {
    cpu_ctx *c = ctx;
    (void)act;
    cpu_matmul(c->pool, proj, n_proj, x, n, c->bf16_inputs, &c->scratch);
}
static void op_rmsnorm(void *ctx, void *out, const float *x, const float *w, int n, int dim, float eps, sl_dtype act) {
    (void)act;
    cpu_rmsnorm(((cpu_ctx *)ctx)->pool, out, x, w, n, dim, eps);
}
static void op_rope_kv_store(void *ctx, void *q, void *k, const void *v, const sl_kv_cache *kv, const int32_t *pos,
                             const int32_t *slots, const float *inv_freq, int n, int heads, sl_dtype act) {
    cpu_pool *pool = ((cpu_ctx *)ctx)->pool;
    (void)act;
    if (heads > 0) cpu_rope(pool, q, pos, inv_freq, n, heads, kv->head_dim);
    cpu_rope(pool, k, pos, inv_freq, n, kv->n_kv_heads, kv->head_dim);
    cpu_kv_store(pool, kv, k, v, slots, n);
}
static void op_attention(void *ctx, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                         int n_heads, float scale, sl_dtype act) {
    (void)act;
    cpu_attention(((cpu_ctx *)ctx)->pool, out, q, kv, b, n_heads, scale);
}
static void op_swiglu(void *ctx, void *out, const void *g, const void *u, int64_t n, sl_dtype act) {
    (void)act;
    cpu_swiglu(((cpu_ctx *)ctx)->pool, out, g, u, n);
}
static void op_add(void *ctx, float *x, const void *y, int64_t n, sl_dtype act) {
    (void)act;
    cpu_add(((cpu_ctx *)ctx)->pool, x, y, n);
}
static void op_add_rmsnorm(void *ctx, void *out, float *x, const void *y, const float *w, int n, int dim, float eps,
                           sl_dtype act) {
    cpu_pool *pool = ((cpu_ctx *)ctx)->pool;
    (void)act;
    cpu_add(pool, x, y, (int64_t)n * dim);
    cpu_rmsnorm(pool, out, x, w, n, dim, eps);
}
static void op_gather_rows(void *ctx, void *out, const void *x, const int32_t *rows, int n, int dim, sl_dtype act) {
    (void)ctx, (void)act;
    cpu_gather_rows(out, x, rows, n, dim);
}

typedef struct sample_job {
    cpu_ctx *c;
    int32_t *tokens;
    const float *logits;
    const sl_sample_row *rows;
    const uint32_t *masks;
    int vocab;
} sample_job;

static void sample_range(void *arg, int64_t begin, int64_t end, int thread) {
    const sample_job *j = arg;
    float *probs = j->c->sample_probs + (size_t)thread * (size_t)j->vocab;
    int32_t *order = j->c->sample_order + (size_t)thread * (size_t)j->vocab;
    for (int64_t r = begin; r < end; r++) {
        const sl_sample_row *p = &j->rows[r];
        const uint32_t *mask = p->mask >= 0 ? j->masks + (size_t)p->mask * sl_sample_mask_words(j->vocab) : NULL;
        j->tokens[r] = sl_sample_pick(j->logits + (size_t)r * (size_t)j->vocab, j->vocab, p, mask, probs, order);
    }
}

/* Rows in parallel, each thread with its own scratch (the first call sizes
 * it; without memory for it the step fails at the next synchronize). */
static void op_sample(void *ctx, int32_t *tokens, const float *logits, const sl_sample_row *rows,
                      const uint32_t *masks, int n, int vocab) {
    cpu_ctx *c = ctx;
    if (c->sample_vocab < vocab) {
        const size_t n_elems = (size_t)cpu_pool_n_threads(c->pool) * (size_t)vocab;
        free(c->sample_probs);
        free(c->sample_order);
        c->sample_probs = malloc(n_elems * sizeof(float));
        c->sample_order = malloc(n_elems * sizeof(int32_t));
        c->sample_vocab = c->sample_probs && c->sample_order ? vocab : 0;
    }
    if (c->sample_vocab < vocab) {
        if (!c->failure.code)
            sl_err_set(&c->failure, SL_ENOMEM, "out of memory for the sampler's scratch (%d threads x %d ids)",
                       cpu_pool_n_threads(c->pool), vocab);
        return;
    }
    sample_job job = {.c = c, .tokens = tokens, .logits = logits, .rows = rows, .masks = masks, .vocab = vocab};
    cpu_pool_for_dynamic(c->pool, n, 1, 2, sample_range, &job);
}

static int cpu_synchronize(void *ctx, sl_err *err) {
    cpu_ctx *c = ctx;
    if (!c->failure.code) return SL_OK;
    *err = c->failure;
    c->failure = (sl_err){0};
    return err->code;
}

static void cpu_describe(void *ctx, char *buf, size_t n) {
    const cpu_ctx *c = ctx;
    snprintf(buf, n, "%d threads, matmuls: %s", cpu_pool_n_threads(c->pool), cpu_matmul_unit(c->bf16_inputs));
}

static const sl_backend_iface k_cpu_iface = {
    .name = "cpu",
    .device_kind = "CPU rank",
    .shares_host_memory = 1,
    .host_memory = 1,
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .memory = cpu_memory,
    .activation_dtype = cpu_activation_dtype,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .alloc_host = cpu_alloc_host,
    .free_host = cpu_free_host,
    .upload = cpu_copy,
    .download = cpu_copy,
    .weight_load = cpu_weight_load,
    .weight_free = cpu_weight_free,
    .embed = op_embed,
    .matmul = op_matmul,
    .rmsnorm = op_rmsnorm,
    .rope_kv_store = op_rope_kv_store,
    .attention = op_attention,
    .swiglu = op_swiglu,
    .add = op_add,
    .add_rmsnorm = op_add_rmsnorm,
    .gather_rows = op_gather_rows,
    .sample = op_sample,
    .synchronize = cpu_synchronize,
};

int sl_cpu_backend_create(const sl_backend_options *o, sl_backend *out, sl_err *err) {
    cpu_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return sl_err_set(err, SL_ENOMEM, "out of memory");
    ctx->bf16_inputs = o->matmul_bf16_inputs;
    int rc = cpu_pool_create(o->n_threads, &ctx->pool, err);
    if (rc) {
        free(ctx);
        return rc;
    }
    *out = (sl_backend){.iface = &k_cpu_iface, .ctx = ctx};
    return SL_OK;
}

