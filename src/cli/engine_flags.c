/* engine_flags.c -- the engine's flags, grouped as vLLM's --help groups them
 * (ModelConfig, ParallelConfig, CacheConfig, SchedulerConfig, DeviceConfig). */
#include "cli/engine_flags.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#include "util/log.h"

int sl_engine_flags(sl_engine_options *o, sl_engine_flag_values *v, sl_flag *out, int max) {
    *v = (sl_engine_flag_values){.gpu_memory_utilization = NAN, .enable_prefix_caching = -1, .max_model_len = INT_MIN,
                                 .block_size = INT_MIN, .max_num_seqs = INT_MIN, .max_num_batched_tokens = INT_MIN,
                                 .threads = INT_MIN, .enable_chunked_prefill = -1};
    const sl_flag flags[] = {
        {"--model", SL_FLAG_STRING, &v->model, "ModelConfig", "the model, as the positional MODEL (either may be given)", "MODEL"},
        {"--revision", SL_FLAG_STRING, &o->revision, "ModelConfig", "hub revision (branch, tag or commit) of the model", "REV"},
        {"--download-dir", SL_FLAG_STRING, &o->download_dir, "ModelConfig", "Hugging Face cache folder to use and fill", "DIR"},
        {"--max-model-len", SL_FLAG_INT, &v->max_model_len, "ModelConfig", "context length (prompt + output); default: the model's", NULL},
        {"--dtype", SL_FLAG_STRING, &v->dtype, "ModelConfig", "weight dtype: auto (the file's), bfloat16, float16 (half) or float32 (float), converted at load", "DTYPE"},
        {"--chat-template", SL_FLAG_STRING, &o->chat_template, "ModelConfig", "Jinja chat template file replacing the model's", "FILE"},
        {"--generation-config", SL_FLAG_STRING, &o->generation_config, "ModelConfig",
         "sampling defaults: auto (the model's generation_config.json), vllm (none), or a folder", "SRC"},
        {"--seed", SL_FLAG_INT64, &o->seed, "ModelConfig",
         "random seed: requests without a seed of their own draw one from it in submission order, so runs repeat", NULL},
        {"--tensor-parallel-size", SL_FLAG_INT, &o->tensor_parallel_size, "ParallelConfig", "ranks each layer is split over", NULL},
        {"--pipeline-parallel-size", SL_FLAG_INT, &o->pipeline_parallel_size, "ParallelConfig", "stages the layers are split into", NULL},
        {"--block-size", SL_FLAG_INT, &v->block_size, "CacheConfig", "tokens per KV cache block (16)", NULL},
        {"--gpu-memory-utilization", SL_FLAG_FLOAT, &v->gpu_memory_utilization, "CacheConfig",
         "share of GPU memory for weights, activations and KV cache (0.9); no effect on the CPU, whose KV cache is "
         "--kv-cache-memory", NULL},
        {"--kv-cache-memory", SL_FLAG_BYTES, &o->kv_cache_memory, "CacheConfig",
         "KV cache per rank, e.g. 2G or 2GiB (CPU default 1GiB; GPU: what --gpu-memory-utilization leaves)", NULL},
        {"--kv-cache-dtype", SL_FLAG_STRING, &o->kv_cache_dtype, "CacheConfig",
         "KV cache elements: auto (float32 on the CPU), float32, bfloat16 or float16 (half the memory and reads)", "DTYPE"},
        {"--enable-prefix-caching", SL_FLAG_BOOL, &v->enable_prefix_caching, "CacheConfig", "reuse KV blocks of shared prompt prefixes (on)", NULL},
        {"--max-num-seqs", SL_FLAG_INT, &v->max_num_seqs, "SchedulerConfig", "sequences per step (512 on a GPU of 70 GB or more, else 256)", NULL},
        {"--max-num-batched-tokens", SL_FLAG_INT, &v->max_num_batched_tokens, "SchedulerConfig", "tokens per step; long prompts are prefilled in chunks (8192 offline on a GPU of 70 GB or more, else 2048)", NULL},
        {"--enable-chunked-prefill", SL_FLAG_BOOL, &v->enable_chunked_prefill, "SchedulerConfig",
         "prompts longer than a step's token budget are prefilled in chunks alongside the decodes (always on, as in vLLM V1)", NULL},
        {"--device", SL_FLAG_STRING, &v->device, "DeviceConfig", "cpu or cuda (default: cuda where this build has it and a GPU is visible, else cpu)", "DEV"},
        {"--threads", SL_FLAG_INT, &v->threads, "DeviceConfig", "CPU threads per rank (the node's cores / its ranks)", NULL},
        {"--matmul-precision", SL_FLAG_STRING, &o->matmul_precision, "DeviceConfig",
         "highest (float32 activations) or medium (bfloat16 activations, float32 sums: faster on AVX512_BF16 CPUs)",
         "P"},
        {"--enforce-eager", SL_FLAG_BOOL, &o->enforce_eager, "DeviceConfig",
         "launch every GPU kernel as issued: no CUDA graphs for decode steps (slower; for debugging)", NULL},
        {"--device-memory", SL_FLAG_BYTES, &o->device_memory, "DeviceConfig",
         "memory of one device, e.g. 48G, 48GB or 44.7GiB (GPU: detected; CPU: available RAM / ranks)", NULL},
    };
    int n = (int)(sizeof flags / sizeof flags[0]);
    if (n > max) return -1;
    memcpy(out, flags, sizeof flags);
    return n;
}

int sl_engine_flags_finish(sl_engine_options *o, const sl_engine_flag_values *v, const char *positional_model,
                           sl_err *err) {
    if (sl_model_arg(positional_model, v->model, &o->model, err)) return err->code;
    const struct {
        const char *name;
        int given, *dest;
    } counts[] = {
        {"--max-model-len", v->max_model_len, &o->max_model_len},
        {"--block-size", v->block_size, &o->block_size},
        {"--max-num-seqs", v->max_num_seqs, &o->max_num_seqs},
        {"--max-num-batched-tokens", v->max_num_batched_tokens, &o->max_num_batched_tokens},
        {"--threads", v->threads, &o->n_threads},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (counts[i].given == INT_MIN) continue;
        if (counts[i].given < 1) /* leave it out for the default */
            return sl_err_set(err, SL_EINVAL, "%s must be at least 1, got %d", counts[i].name, counts[i].given);
        *counts[i].dest = counts[i].given;
    }
    if (!isnan(v->gpu_memory_utilization)) {
        if (!(v->gpu_memory_utilization > 0 && v->gpu_memory_utilization <= 1))
            return sl_err_set(err, SL_EINVAL, "--gpu-memory-utilization must be in (0, 1], got %g", v->gpu_memory_utilization);
        o->gpu_memory_utilization = v->gpu_memory_utilization;
    }
    if (v->enable_prefix_caching >= 0) o->enable_prefix_caching = v->enable_prefix_caching;
    if (v->enable_chunked_prefill == 0)
        return sl_err_set(err, SL_EINVAL,
                          "--no-enable-chunked-prefill: shardlm always prefills long prompts in chunks of "
                          "--max-num-batched-tokens; raise that to prefill a prompt in one step");
    if (v->device) {
        if (strcmp(v->device, "cpu") != 0 && strcmp(v->device, "cuda") != 0)
            return sl_err_set(err, SL_EINVAL, "--device must be cpu or cuda, got \"%s\"", v->device);
        o->backend = v->device;
    }
    if (v->dtype) o->dtype = v->dtype; /* sl_engine_open checks the name before it loads anything */
    if (o->tensor_parallel_size < 1 || o->pipeline_parallel_size < 1)
        return sl_err_set(err, SL_EINVAL, "--tensor-parallel-size and --pipeline-parallel-size must be >= 1");
    return SL_OK;
}

void sl_engine_flags_warn(const sl_engine_flag_values *v, sl_engine *e) {
    sl_engine_info info;
    sl_engine_get_info(e, &info);
    if (!isnan(v->gpu_memory_utilization) && strcmp(info.device, "cpu") == 0)
        SL_WARN("--gpu-memory-utilization has no effect on the CPU: its KV cache is --kv-cache-memory (default 1GiB)");
}
