/* backend.h -- the one seam between the model and the hardware.
 *
 * A backend is {iface, ctx}: a small table of function pointers and the
 * state they share (thread pool, CUDA stream, cuBLASLt handle...). The
 * forward pass in src/model/ calls only these, so the same model code runs
 * on the CPU reference and on the GPU. Pointers handed to the ops are
 * backend memory (host memory for the CPU backend, device memory for CUDA);
 * weights keep the dtype of their file unless --dtype names another (the model
 * converts them at load).
 *
 * Activations come in two types. The residual stream (what embed writes, add
 * and add_rmsnorm accumulate into, rmsnorm reads, and pipeline stages pass
 * on) and the logits are float32 everywhere. Every other activation -- what a
 * matmul reads and writes, the norms' outputs, q/k/v, attention's output,
 * SwiGLU, the all-reduced partial sums -- is in the step's activation dtype,
 * the `act` argument of the ops: float32 on the CPU, the weights' 16-bit type
 * on a GPU (activation_dtype says which), so that those tensors move half the
 * bytes there. Sums inside an op are float32 whatever the dtype.
 *
 * Ops take their output first (llama2.c's habit) and never allocate: the
 * caller sized every buffer at start (the one exception: the CPU's sample
 * sizes its scratch to the vocabulary on its first call). Ops are asynchronous with respect to
 * the host unless stated; `synchronize` waits for all of them. */
#ifndef SL_BACKEND_BACKEND_H
#define SL_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend/sample.h"
#include "util/dtype.h"
#include "util/error.h"

/* A matrix of `rows` x `cols` as torch.nn.Linear stores it (out x in), in
 * backend memory, laid out as the backend's kernels want it (weight_load
 * decides: the CPU backend repacks into panels, dtype then being the packed
 * one); only the backend reads `data`. */
typedef struct sl_weight {
    const void *data;
    sl_dtype dtype;
    int64_t rows, cols;
    void *owned; /* backend allocation to free, or NULL when data points into a mapping */
} sl_weight;

/* One layer's paged KV cache on this rank: K and V of n_blocks blocks, each
 * of block_size tokens x n_kv_heads heads x head_dim elements of `dtype`,
 * sl_kv_block_bytes apart. Where a token's features sit inside a block is
 * the backend's choice: only its kv_store writes the cache and only its
 * attention reads it (the CPU backend keeps keys transposed, see
 * src/backend/cpu/attention.c); the engine owns which blocks a sequence holds. */
typedef struct sl_kv_cache {
    void *k, *v;
    sl_dtype dtype;           /* float32, float16 or bfloat16 */
    int block_size, n_kv_heads, head_dim;
} sl_kv_cache;

/* Bytes of one block of K (or of V). */
static inline size_t sl_kv_block_bytes(const sl_kv_cache *kv) {
    return (size_t)kv->block_size * (size_t)kv->n_kv_heads * (size_t)kv->head_dim * sl_dtype_n_bytes(kv->dtype);
}

/* Where attention reads K/V: the flattened batch layout of one step.
 * Sequence s owns query tokens [query_start[s], query_start[s+1]) of the
 * step; after the step its KV holds context_len[s] tokens, the step's
 * tokens being the last ones. Token j of sequence s lives in slot
 * j % block_size of block block_tables[s * max_blocks + j / block_size].
 * All arrays are in backend memory. */
typedef struct sl_attn_batch {
    int n_seqs;
    int n_tokens;             /* query_start[n_seqs], known on the host */
    int max_query_len;        /* max over the sequences' query lengths, for grid sizing */
    int max_blocks;           /* row length of block_tables */
    int max_context_len;      /* max over context_len, for scratch sizing */
    const int32_t *query_start;  /* [n_seqs + 1] */
    const int32_t *context_len;  /* [n_seqs] */
    const int32_t *block_tables; /* [n_seqs][max_blocks] */
} sl_attn_batch;

/* One projection of a shared input: out[n][w->rows] = x[n][w->cols] * w^T (+ bias). */
#define SL_MAX_PROJ 8
typedef struct sl_proj {
    void *out;           /* in the activation dtype, or float32 with f32_out */
    const sl_weight *w;
    const float *bias;   /* [w->rows] or NULL */
    int f32_out;         /* 1: out is float32 (the LM head's logits) */
} sl_proj;


typedef struct sl_backend_iface {
    const char *name;
    /* What one rank's memory is called in messages ("CPU rank", "GPU"), and whether the node's
     * ranks share it (host RAM) or each has its own (a GPU). */
    const char *device_kind;
    int shares_host_memory;
    /* Its memory is host memory: the communicator (MPI) reads and writes it as it is. */
    int host_memory;
    void (*destroy)(void *ctx);
    /* What computes, in words, for the start-up summary ("2 threads, matmuls: float32 FMAs"). */
    void (*describe)(void *ctx, char *buf, size_t n);
    /* Free and total bytes of the memory alloc draws from (the GPU's; the host's available and total RAM). */
    int (*memory)(void *ctx, size_t *free_bytes, size_t *total_bytes, sl_err *err);
    /* The activation dtype the ops should get for matrices of this dtype: float32, or the weights' own
     * 16-bit type where the backend computes in it (a GPU). */
    sl_dtype (*activation_dtype)(void *ctx, sl_dtype weights);

    /* ---- memory ---- */
    /* Zero-filled backend memory. */
    int (*alloc)(void *ctx, size_t n_bytes, void **out, sl_err *err);
    void (*free)(void *ctx, void *ptr);
    /* Host memory the backend copies from and to at full speed (pinned on a GPU), not zeroed. */
    int (*alloc_host)(void *ctx, size_t n_bytes, void **out, sl_err *err);
    void (*free_host)(void *ctx, void *ptr);
    /* host -> backend, in order with the ops. From alloc_host memory the copy may still be running
     * on return: that memory stays unchanged until the next synchronize. From other host memory
     * src may be reused at once. */
    int (*upload)(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err);
    /* backend -> host, after every op issued before it; dst holds the data on return. */
    int (*download)(void *ctx, void *dst, const void *src, size_t n_bytes, sl_err *err);
    /* Makes a weight from host memory: `rows` rows of `cols` elements, row r
     * starting at src + r * src_row_stride elements. The backend may keep
     * pointing at src (which outlives the weight) or copy it into its own
     * layout. The embedding table is such a weight too (embed reads it). */
    int (*weight_load)(void *ctx, sl_weight *dst, const void *src, sl_dtype dtype, int64_t rows, int64_t cols,
                       int64_t src_row_stride, sl_err *err);
    void (*weight_free)(void *ctx, sl_weight *w);

    /* ---- ops ---- */
    /* Below, `act` is the activation dtype (see the top of this file): x, out, q, k, v, gate, up and y are
     * in it unless they are named float32. */
    /* out[t] = table[ids[t] - row_offset] when that row is on this rank, else zeros; out is float32. */
    void (*embed)(void *ctx, float *out, const sl_weight *table, const int32_t *ids, int n_tokens, int64_t row_offset);
    /* The n_proj projections of one input x[n][cols] (q/k/v, gate/up), in one
     * launch: out[n][w.rows] = x * w^T (+ bias). All weights have x's cols;
     * n_proj <= SL_MAX_PROJ. */
    void (*matmul)(void *ctx, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act);
    /* out[t] = x[t] / rms(x[t]) * weight; dim elements per row; x is float32. */
    void (*rmsnorm)(void *ctx, void *out, const float *x, const float *weight, int n_tokens, int dim, float eps,
                    sl_dtype act);
    /* Rotates q ([n_tokens][n_heads * head_dim]) and k ([n_tokens][kv->n_kv_heads * head_dim]) in place,
     * transformers' rotate_half layout, angle = pos[t] * inv_freq[i] for i < head_dim / 2 (head_dim is
     * kv->head_dim); then writes the rotated k and v into the cache, token t at slot slots[t] (block
     * slots[t] / block_size), rounded to its dtype. */
    void (*rope_kv_store)(void *ctx, void *q, void *k, const void *v, const sl_kv_cache *kv, const int32_t *pos,
                          const int32_t *slots, const float *inv_freq, int n_tokens, int n_heads, sl_dtype act);
    /* Causal attention over the paged cache: out, q are [n_tokens][n_heads * head_dim],
     * n_heads a multiple of kv->n_kv_heads; scores are scaled by `scale`. */
    void (*attention)(void *ctx, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *batch,
                      int n_heads, float scale, sl_dtype act);
    /* out[i] = silu(gate[i]) * up[i]; gate and up are [n_tokens][dim]. */
    void (*swiglu)(void *ctx, void *out, const void *gate, const void *up, int64_t n_elems, sl_dtype act);
    /* x[i] += y[i]; x is float32 (the residual stream). */
    void (*add)(void *ctx, float *x, const void *y, int64_t n_elems, sl_dtype act);
    /* x[t] += y[t], then out[t] = x[t] / rms(x[t]) * weight: a residual add and the norm after it, in one
     * pass; x is float32; out may be y. */
    void (*add_rmsnorm)(void *ctx, void *out, float *x, const void *y, const float *weight, int n_tokens, int dim,
                        float eps, sl_dtype act);
    /* out[i] = x[rows[i]], rows of dim elements. */
    void (*gather_rows)(void *ctx, void *out, const void *x, const int32_t *rows, int n_rows, int dim, sl_dtype act);
    /* tokens[i] = the token backend/sample.h's rule picks from float32 logits row i ([n_rows][vocab]) with the
     * settings rows[i] and, where rows[i].mask >= 0, the allowed ids masks[rows[i].mask]
     * ([n_masks][sl_sample_mask_words(vocab)]; may be NULL when no row has a mask); logits stay unchanged. */
    void (*sample)(void *ctx, int32_t *tokens, const float *logits, const sl_sample_row *rows, const uint32_t *masks,
                   int n_rows, int vocab);
    /* Waits until every op issued so far has finished. */
    int (*synchronize)(void *ctx, sl_err *err);

    /* ---- graphs (NULL where the backend has none: callers then call record themselves) ---- */
    /* Issues the ops record(arg) issues -- ops only: no upload, download, synchronize or communication --
     * as one unit the backend may keep under `key`: the first call of a key runs record as it is, the
     * second records what record issues as a graph (a CUDA graph), and later calls replay that graph
     * without calling record. Every call of one key must therefore issue the same ops with the same
     * arguments (pointers, sizes, host values); only the memory they point at may differ. key 0, or a
     * backend opened with enforce_eager, runs record every time. */
    int (*replay)(void *ctx, uint64_t key, int (*record)(void *arg, sl_err *err), void *arg, sl_err *err);
} sl_backend_iface;

typedef struct sl_backend {
    const sl_backend_iface *iface;
    void *ctx;
} sl_backend;

typedef struct sl_backend_options {
    int n_threads;            /* CPU threads; 0: the cores this process may use */
    int matmul_bf16_inputs;   /* matmuls over bf16 weights round their inputs to bf16 (sums stay float32) */
    int device_index;         /* this rank's index among its machine's ranks: GPU device_index % visible GPUs;
                                 -1: from the launcher's local rank, else GPU 0 */
    int enforce_eager;        /* replay never keeps graphs (vLLM's --enforce-eager) */
} sl_backend_options;

/* Creates a backend by name ("cpu", "cuda"). */
int sl_backend_create(const char *name, const sl_backend_options *o, sl_backend *out, sl_err *err);
/* "cuda" where this build has the CUDA backend and a GPU is visible, else "cpu". */
const char *sl_backend_default_name(void);
/* The GPUs this process sees and the memory of the first (0 and 0 where there are none). */
void sl_backend_gpus(int *count, size_t *total_bytes);
void sl_backend_destroy(sl_backend *b);

#endif
