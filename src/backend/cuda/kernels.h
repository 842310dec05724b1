/* kernels.h -- the CUDA backend's kernels, as C launchers on a stream.
 *
 * Each launcher keeps the name and argument order of the CPU reference it
 * mirrors (src/backend/cpu/kernels.h), with the stream first and the
 * activation dtype `act` after the CPU's arguments; pointers are device
 * memory. As in backend.h, the residual stream (embed's output, the x of add
 * and add_rmsnorm, rmsnorm's input) and the logits are float32, the other
 * activations of type `act` (float32, bfloat16 or float16: act.cuh), weights
 * and the KV cache in their own dtype; every sum is float32. Launchers only
 * enqueue work: they never allocate, copy to the host or synchronize.
 *
 * The KV cache layout inside one block is [n_kv_heads][block_size][head_dim]
 * for K and for V alike: one head's keys of a block are contiguous, which is
 * what the attention kernels stream. */
#ifndef SL_BACKEND_CUDA_KERNELS_H
#define SL_BACKEND_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- launch.cu ---- */
/* Programmatic dependent launch (launch.cuh) from now on where the device's compute capability major is 9 or more
 * unless SHARDLM_PDL is 0; called when a backend opens its device. */
void cuda_set_dependent_launch(int compute_major);
/* Whether a kernel launched on s now goes with it: only when the newest work on s is a kernel of launch()'s
 * (which waits for its predecessor in-kernel); notes that s's newest work is now such a kernel. */
int cuda_dependent_launch_after(cudaStream_t s);
/* Work other than launch()'s kernels was enqueued on s (a copy, a memset, cuBLASLt, a graph, NCCL): the next
 * kernel there waits for it the ordinary way. */
void cuda_enqueued_other(cudaStream_t s);

/* ---- elementwise.cu ---- */
/* out[t] = table[ids[t] - row_offset] (as float32) when that row is in the table, else zeros; out is float32. */
void cuda_embed(cudaStream_t s, float *out, const void *table, sl_dtype dtype, int64_t table_rows, int64_t dim,
                const int32_t *ids, int n_tokens, int64_t row_offset);
/* out[t] = x[t] / rms(x[t]) * weight, one block per row; x float32, out of act. */
void cuda_rmsnorm(cudaStream_t s, void *out, const float *x, const float *weight, int n_tokens, int dim, float eps,
                  sl_dtype act);
/* x[t] += y[t], then out[t] = x[t] / rms(x[t]) * weight, one block per row; x float32, y and out of act; out may
 * be y. */
void cuda_add_rmsnorm(cudaStream_t s, void *out, float *x, const void *y, const float *weight, int n_tokens, int dim,
                      float eps, sl_dtype act);
/* out[i] = silu(gate[i]) * up[i], all of act */
void cuda_swiglu(cudaStream_t s, void *out, const void *gate, const void *up, int64_t n_elems, sl_dtype act);
/* x[i] += y[i]; x float32, y of act */
void cuda_add(cudaStream_t s, float *x, const void *y, int64_t n_elems, sl_dtype act);
/* out[i] = x[rows[i]], rows of dim elements of act, copied as they are */
void cuda_gather_rows(cudaStream_t s, void *out, const void *x, const int32_t *rows, int n_rows, int dim,
                      sl_dtype act);
/* out[i] = x[i] converted from x_dtype to out_dtype (rounded to nearest even where narrower), for a GEMM's input
 * in the weights' type or its output in the activations'; the dtypes differ. */
void cuda_cast(cudaStream_t s, void *out, sl_dtype out_dtype, const void *x, sl_dtype x_dtype, int64_t n_elems);
/* out[t][j] += bias[j] over n rows of cols, out of dtype (float32 or 16-bit), bias float32 */
void cuda_add_bias(cudaStream_t s, void *out, sl_dtype dtype, const float *bias, int n, int64_t cols);

/* ---- gemv.cu ---- */
/* The projections of one input x[n][cols] of act with n <= CUDA_GEMV_MAX_N, all in one launch:
 * out[t][r] = sum_c x[t][c] * w[r][c] (+ bias[r]), weights bfloat16 or float16 (all of one type), row-major
 * [rows][cols], cols a multiple of 8, x 16-byte aligned; x is rounded to the weights' type where act is
 * another (what the GEMM path's cast does); each out of act, or float32 where the projection's f32_out.
 * Bound by reading the weights once. */
#define CUDA_GEMV_MAX_N 8
void cuda_gemv(cudaStream_t s, const sl_proj *proj, int n_proj, const void *x, int n, sl_dtype act);

/* ---- attention.cu ---- */
/* transformers' rotate_half RoPE of q ([n_tokens][n_heads * head_dim]) and k in place (of act, rounded after the
 * rotation), then the step's K and V rows ([n_tokens][n_kv_heads * head_dim], of act) into the cache, token t at
 * slot slots[t] (block slots[t] / block_size, row slots[t] % block_size), the rotated k rounded from float32 to
 * the cache's dtype: one launch. */
void cuda_rope_kv_store(cudaStream_t s, void *q, void *k, const void *v, const sl_kv_cache *kv, const int32_t *pos,
                        const int32_t *slots, const float *inv_freq, int n_tokens, int n_heads, sl_dtype act);
/* Causal attention over the paged cache (sl_attn_batch, backend.h): out and q are [n_tokens][n_heads * head_dim]
 * of act; query token i of sequence s (i in [0, q_len)) sits at position context_len[s] - q_len + i and sees
 * keys [0, that position]. workspace (workspace_bytes of device memory, owned by the backend) holds the
 * float32 partial results when long contexts are split over several blocks (flash-decoding). */
void cuda_attention(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                    int n_heads, float scale, sl_dtype act, void *workspace, size_t workspace_bytes);

/* ---- attention_mma.cu ---- */
/* cuda_attention's prefill part (the sequences with more than decode_tokens query tokens) on tensor cores,
 * for bfloat16 and float16 caches of head_dim 64, 80, 96 or 128: 1 when it is this kernel's (enqueued),
 * 0 when not (nothing enqueued; attention.cu's float32 prefill kernel takes it). */
int cuda_attention_prefill_mma(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv,
                               const sl_attn_batch *b, int n_heads, float scale, sl_dtype act, int decode_tokens);

/* ---- attention_plain.cu ---- */
/* Whether cuda_attention's tiled kernels are built for this head size (16, 32, 64, 80, 96, 128, 256). */
int cuda_attention_tiled_head_dim(int head_dim);
/* The same attention, one warp per (query token, head), for any head_dim <= 256: the test fixtures' small heads. */
void cuda_attention_plain(cudaStream_t s, void *out, const void *q, const sl_kv_cache *kv, const sl_attn_batch *b,
                          int n_heads, float scale, sl_dtype act);

/* ---- sample.cu ---- */
/* tokens[i] = backend/sample.h's pick from logits row i ([n_rows][vocab]) with rows[i] and its mask among
 * masks ([n_masks][sl_sample_mask_words(vocab)]), one block per row. */
void cuda_sample(cudaStream_t s, int32_t *tokens, const float *logits, const sl_sample_row *rows,
                 const uint32_t *masks, int n_rows, int vocab);

#ifdef __cplusplus
}
#endif

#endif
