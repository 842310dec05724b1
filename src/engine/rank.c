/* rank.c -- open one rank's shard in agreement with the other ranks.
 *
 * The order of collective calls is the same on every rank: the KV block
 * count (minimum over ranks), the step limits rank 0 settles from it, and
 * whether every rank loaded its shard. A rank that fails still takes part in
 * these calls, so the others learn of it instead of waiting forever. */
#include "engine/rank.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "model/memory_plan.h"
#include "util/log.h"

int sl_rank_share_setup(sl_dist *d, sl_rank_setup *s, sl_err *err) {
    return d->world.iface->broadcast(d->world.ctx, s, sizeof *s, 0, err);
}

static int agree_min(sl_dist *d, int64_t *v, sl_err *err) {
    return d ? d->world.iface->all_reduce_min_i64(d->world.ctx, v, err) : SL_OK;
}

/* Ranks of this machine that share one GPU: 1 unless the machine runs more ranks than it has GPUs. */
static int ranks_per_gpu(const sl_rank *r) {
    int gpus = 0;
    size_t unused;
    sl_backend_gpus(&gpus, &unused);
    const int local = r->dist ? r->dist->local_size : 1;
    return gpus > 0 && local > gpus ? (local + gpus - 1) / gpus : 1;
}

/* Memory of one rank's device: given, or what its backend reports (a GPU's total, shared by
 * the ranks on it; the machine's available RAM shared by the job's ranks there). */
static int device_bytes(const sl_rank *r, const sl_rank_setup *s, double *out, sl_err *err) {
    if (s->device_memory > 0) {
        *out = (double)s->device_memory;
        return SL_OK;
    }
    size_t free_bytes, total;
    int rc = r->backend.iface->memory(r->backend.ctx, &free_bytes, &total, err);
    if (rc) return rc;
    *out = r->backend.iface->shares_host_memory ? (double)free_bytes / (r->dist ? r->dist->local_size : 1)
                                                : (double)total / ranks_per_gpu(r);
    return SL_OK;
}

/* Headroom on a GPU beyond the planned weights and activations: the matmul's
 * 16-bit input copy, cuBLASLt's and attention's workspaces, fragmentation. */
#define GPU_HEADROOM_BYTES (512.0 * 1048576.0)

static sl_mem_limits mem_limits(const sl_rank *r, const sl_rank_setup *s) {
    const sl_dtype act = r->backend.iface->activation_dtype(r->backend.ctx, r->config.dtype);
    return (sl_mem_limits){.max_model_len = r->max_model_len, .max_num_batched_tokens = s->max_num_batched_tokens,
                           .max_num_seqs = s->max_num_seqs, .kv_bytes_per_elem = (int)sl_dtype_n_bytes(s->kv_dtype),
                           .act_bytes_per_elem = (int)sl_dtype_n_bytes(act)};
}

/* The CPU's KV cache: --kv-cache-memory, or 1 GiB, within what the rank's
 * memory (--device-memory, or its share of the available RAM) leaves beside
 * its weights and step workspace: a larger request is refused with the
 * largest that fits, where the system would otherwise give it and kill the
 * process once the pages are touched; the default shrinks to fit. */
static int host_kv_budget(const sl_rank *r, const sl_rank_setup *s, int64_t *out, sl_err *err) {
    double device;
    int rc = device_bytes(r, s, &device, err);
    if (rc) return rc;
    const sl_mem_limits lim = mem_limits(r, s);
    sl_mem_layout l;
    sl_mem_layout_eval(&r->config, s->tp, s->pp, &lim, &l);
    const double room = device - l.weight_bytes - l.workspace_bytes, gib = 1073741824.0;
    const double want = s->kv_cache_memory > 0 ? (double)s->kv_cache_memory : gib;
    if (l.need_bytes > device) { /* not even one sequence's cache fits: check_memory says what does not */
        *out = (int64_t)want;
        return SL_OK;
    }
    if (s->kv_cache_memory > 0 && want > room)
        return sl_err_set(err, SL_ENOSPACE, "--kv-cache-memory %.2f GiB does not fit: this rank has %.2f GiB%s, of "
                          "which its weights and one step's workspace take %.2f GiB; give --kv-cache-memory %.2f GiB "
                          "or less", (double)s->kv_cache_memory / gib, device / gib,
                          s->device_memory > 0 ? " (--device-memory)" : " of the available RAM",
                          (l.weight_bytes + l.workspace_bytes) / gib, room / gib);
    *out = (int64_t)(want < room ? want : room);
    return SL_OK;
}

/* Bytes for this rank's KV cache: --kv-cache-memory when given (checked
 * against the RAM on the CPU); on a GPU what --gpu-memory-utilization of it
 * leaves after what is in use already (the CUDA context, other processes),
 * this rank's weights and its step's workspace (vLLM's meaning), divided
 * between the ranks that share the GPU; on the CPU 1 GiB, or what fits. */
static int kv_budget(const sl_rank *r, const sl_rank_setup *s, int64_t *out, sl_err *err) {
    if (r->backend.iface->shares_host_memory) return host_kv_budget(r, s, out, err);
    if (s->kv_cache_memory > 0) {
        *out = s->kv_cache_memory;
        return SL_OK;
    }
    size_t free_bytes, total;
    int rc = r->backend.iface->memory(r->backend.ctx, &free_bytes, &total, err);
    if (rc) return rc;
    const sl_mem_limits lim = mem_limits(r, s);
    sl_mem_layout l;
    sl_mem_layout_eval(&r->config, s->tp, s->pp, &lim, &l);
    /* ranks sharing one GPU split its share between them; what the others are allocating meanwhile is
     * theirs, so only a GPU of its own counts memory in use */
    const int sharing = ranks_per_gpu(r);
    const double in_use = sharing > 1 ? 0.0 : (double)(total - free_bytes);
    const double budget = (double)total * s->memory_utilization / sharing - in_use - l.weight_bytes -
                          l.workspace_bytes - GPU_HEADROOM_BYTES;
    *out = budget > 0 ? (int64_t)budget : 0;
    return SL_OK;
}

/* Before anything is loaded: does the largest rank's share fit its device
 * (on a GPU, the --gpu-memory-utilization share of it; on the CPU all of
 * --device-memory, or of the available RAM: the flag is the GPU's alone)?
 * If not, one sentence with the numbers and the layout that would fit. */
static int check_memory(const sl_rank *r, const sl_rank_setup *s, sl_err *err) {
    const sl_mem_limits lim = mem_limits(r, s);
    sl_mem_layout l;
    sl_mem_layout_eval(&r->config, s->tp, s->pp, &lim, &l);
    double device;
    int rc = device_bytes(r, s, &device, err);
    if (rc) return rc;
    const double usable = r->backend.iface->shares_host_memory ? device : device * s->memory_utilization;
    if (l.need_bytes <= usable) return SL_OK;
    const char *slash = strrchr(s->model_dir, '/');
    char msg[SL_ERR_MSG_MAX];
    sl_mem_advice(msg, sizeof msg, slash && slash[1] ? slash + 1 : s->model_dir, &r->config, &l, usable,
                  r->backend.iface->device_kind, 8, &lim);
    return sl_err_set(err, SL_ENOSPACE, "%s", msg);
}

/* Rank 0 settles max_model_len and the block count from the smallest pool. */
static int settle_limits(sl_rank *r, const sl_rank_setup *s, int64_t blocks, sl_err *err) {
    const int bs = s->block_size;
    r->max_model_len = s->max_model_len > 0 ? s->max_model_len : r->config.max_position_embeddings;
    int rc = check_memory(r, s, err);
    if (rc) return rc;
    int need = (r->max_model_len + bs - 1) / bs;
    size_t block_bytes = sl_model_kv_block_bytes(&r->config, &r->plan, bs, s->kv_dtype);
    if (blocks < need) {
        if (s->max_model_len_explicit)
            return sl_err_set(err, SL_ENOSPACE, "a KV cache of %.2f GiB per rank holds %lld tokens, fewer than "
                              "--max-model-len %d: raise --kv-cache-memory%s to at least %.2f GiB of KV or lower "
                              "--max-model-len", (double)blocks * (double)block_bytes / 1073741824.0,
                              (long long)(blocks * bs), r->max_model_len,
                              r->backend.iface->shares_host_memory ? "" : " or --gpu-memory-utilization",
                              (double)need * (double)block_bytes / 1073741824.0);
        if (blocks < 1 && (s->kv_cache_memory > 0 || r->backend.iface->shares_host_memory))
            return sl_err_set(err, SL_ENOSPACE, "--kv-cache-memory is too small for one KV block (%zu bytes)", block_bytes);
        if (blocks < 1)
            return sl_err_set(err, SL_ENOSPACE, "no room on the GPU for one KV block after the weights and what is in "
                              "use already: raise --gpu-memory-utilization or free the GPU");
        SL_WARN("max_model_len lowered from %d to %lld tokens: what a %.2f GiB KV cache holds", r->max_model_len,
                (long long)(blocks * bs), (double)blocks * (double)block_bytes / 1073741824.0);
        r->max_model_len = (int)(blocks * bs);
    }
    r->n_blocks = blocks > (1 << 30) ? 1 << 30 : (int)blocks;
    return SL_OK;
}

static int create_backend(sl_rank *r, const sl_rank_setup *s, sl_err *err) {
    int threads = s->n_threads;
    if (threads <= 0) { /* share the cores this process may use between the node's ranks */
        cpu_set_t set;
        int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
        int per_node = r->dist ? r->dist->local_size : 1; /* this machine's ranks, not the job's */
        threads = cores / per_node > 0 ? cores / per_node : 1;
    }
    r->n_threads = threads;
    sl_backend_options bo = {.n_threads = threads, .matmul_bf16_inputs = s->matmul_bf16_inputs,
                             .device_index = r->dist ? r->dist->local_rank : -1, .enforce_eager = s->enforce_eager};
    return sl_backend_create(s->backend, &bo, &r->backend, err);
}

static int open_shard(sl_rank *r, const sl_rank_setup *s, sl_err *err) {
    sl_model_limits limits = {.max_tokens = s->max_num_batched_tokens, .max_seqs = s->max_num_seqs,
                              .max_model_len = r->max_model_len, .block_size = s->block_size, .n_blocks = r->n_blocks,
                              .kv_dtype = s->kv_dtype, .convert_weights = s->weight_dtype != SL_DTYPE_OTHER,
                              .weight_dtype = s->weight_dtype};
    int rc = sl_model_open(&r->model, s->model_dir, &r->backend, &r->plan, &limits, r->dist, err);
    r->exec = (sl_executor){.model = &r->model, .dist = r->dist};
    return rc;
}

int sl_rank_open(sl_rank *r, const sl_rank_setup *s, sl_dist *dist, sl_err *err) {
    memset(r, 0, sizeof *r);
    r->dist = dist;
    const int tp_rank = dist ? dist->tp_rank : 0, pp_rank = dist ? dist->pp_rank : 0;
    int rc = sl_model_config_load(s->model_dir, &r->config, err);
    if (!rc && s->weight_dtype != SL_DTYPE_OTHER) r->config.dtype = s->weight_dtype; /* what memory plans count */
    if (!rc) rc = sl_shard_plan_make(&r->config, tp_rank, s->tp, pp_rank, s->pp, &r->plan, err);
    if (!rc) rc = create_backend(r, s, err);
    r->max_model_len = s->max_model_len > 0 ? s->max_model_len : r->config.max_position_embeddings;
    /* 1. the KV pool: as many blocks as the smallest rank holds */
    int64_t budget = 0;
    if (!rc) rc = kv_budget(r, s, &budget, err);
    int64_t blocks = rc ? 0 : budget / (int64_t)sl_model_kv_block_bytes(&r->config, &r->plan, s->block_size, s->kv_dtype);
    int arc = agree_min(dist, &blocks, err);
    if (!rc) rc = arc;
    /* 2. rank 0 settles the limits and tells the others (0 blocks: give up) */
    int64_t settled[2] = {0, 0};
    if (!rc && (!dist || dist->world.rank == 0)) {
        rc = settle_limits(r, s, blocks, err);
        if (!rc) settled[0] = r->n_blocks, settled[1] = r->max_model_len;
    }
    if (dist && (arc = dist->world.iface->broadcast(dist->world.ctx, settled, sizeof settled, 0, err)) && !rc) rc = arc;
    if (!rc && settled[0] == 0) rc = sl_err_set(err, SL_EABORT, "rank 0 could not size the KV cache (see its error)");
    r->n_blocks = (int)settled[0];
    r->max_model_len = (int)settled[1];
    /* 3. every rank loads its shard; all succeed or all fail */
    if (!rc) rc = open_shard(r, s, err);
    int64_t ok = rc == 0;
    if ((arc = agree_min(dist, &ok, err)) && !rc) rc = arc;
    if (!rc && !ok) rc = sl_err_set(err, SL_EABORT, "another rank failed to load its shard (its error is in its log)");
    if (rc) {
        sl_model_close(&r->model);
        if (r->backend.iface) sl_backend_destroy(&r->backend);
        r->dist = NULL; /* the caller still owns dist on failure */
        return rc;
    }
    if (dist) SL_DEBUG("rank %d: tp %d/%d pp %d/%d, layers [%d, %d), %d heads, vocab [%d, %d)", dist->world.rank,
                       tp_rank, s->tp, pp_rank, s->pp, r->plan.layer_begin, r->plan.layer_end,
                       sl_shard_plan_n_heads(&r->plan), r->plan.vocab_begin, r->plan.vocab_end);
    return SL_OK;
}

void sl_rank_close(sl_rank *r) {
    if (r->dist && r->dist->world.rank == 0 && !sl_dist_failed()) { /* a failed job takes no stop command */
        sl_err err = {0};
        if (sl_executor_stop(&r->exec, &err)) SL_WARN("stopping the workers: %s", err.msg);
    }
    sl_executor_destroy(&r->exec);
    sl_model_close(&r->model);
    if (r->backend.iface) sl_backend_destroy(&r->backend);
    sl_dist_destroy(r->dist);
    memset(r, 0, sizeof *r);
}
