/* memory_plan.h -- what one rank of a layout needs, from config.json alone.
 *
 * For a tp x pp layout: the weights each rank holds (its heads, MLP columns,
 * vocabulary slice and layers, at cfg->dtype: the checkpoint's, or the one
 * --dtype converts to, which the engine puts there), the activation
 * workspace of one step, and the KV cache of one max_model_len sequence (the
 * least that lets a request of full length run). The largest rank decides
 * whether a layout fits a device. Used before loading (every rank checks
 * its own share) and by `shardlm plan`, which loads nothing. */
#ifndef SL_MODEL_MEMORY_PLAN_H
#define SL_MODEL_MEMORY_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/config.h"

typedef struct sl_mem_limits {
    int max_model_len;            /* 0: the model's max_position_embeddings */
    int max_num_batched_tokens;   /* 0: 2048 */
    int max_num_seqs;             /* 0: 256 */
    int kv_bytes_per_elem;        /* of --kv-cache-dtype; 0: 2 (bf16 or f16) */
    int act_bytes_per_elem;       /* of the backend's activation dtype (backend.h); 0: 4 (float32) */
} sl_mem_limits;

typedef struct sl_mem_layout {
    int tp, pp;
    bool valid;                   /* the shard plan accepts this layout */
    double weight_bytes;          /* the largest rank's */
    double workspace_bytes;
    double min_kv_bytes;          /* one max_model_len sequence on the largest rank */
    double kv_bytes_per_token;    /* on the largest rank */
    double need_bytes;            /* weights + workspace + min KV of the largest rank */
} sl_mem_layout;

double sl_mem_total_weight_bytes(const sl_model_config *cfg);
void sl_mem_layout_eval(const sl_model_config *cfg, int tp, int pp, const sl_mem_limits *lim, sl_mem_layout *out);

/* The smallest layout of at most max_devices devices whose largest rank fits
 * in device_bytes (tensor parallelism first, up to devices_per_node, then
 * pipeline stages); false when none does. */
bool sl_mem_smallest_layout(const sl_model_config *cfg, int max_devices, int devices_per_node, double device_bytes,
                            const sl_mem_limits *lim, sl_mem_layout *out);

/* The smallest layout whose largest rank holds the weights and workspace with a
 * one-token context (its figures evaluated at lim's context); false when none does. */
bool sl_mem_smallest_layout_any_context(const sl_model_config *cfg, int max_devices, int devices_per_node,
                                        double device_bytes, const sl_mem_limits *lim, sl_mem_layout *out);

/* The longest context whose KV cache fits beside a layout's weights and
 * workspace on its largest rank (0: the weights and workspace alone do not fit). */
int sl_mem_max_model_len(const sl_mem_layout *l, double device_bytes);

/* Whether some layout of up to max_devices holds its largest rank's weights,
 * leaving out the step's workspace and the KV cache. */
bool sl_mem_weights_fit(const sl_model_config *cfg, int max_devices, int devices_per_node, double device_bytes,
                        const sl_mem_limits *lim);

/* One sentence for a layout that does not fit: what the model needs, what a
 * device has, and what would fit: a shorter --max-model-len on the same layout
 * when only the KV cache is short, the smallest layout of more devices, or
 * what exceeds every layout of up to max_devices: the weights alone, or the
 * weights with one step's workspace (then naming the flags that size it). */
void sl_mem_advice(char *buf, size_t n, const char *model_name, const sl_model_config *cfg, const sl_mem_layout *tried,
                   double device_bytes, const char *device, int max_devices, const sl_mem_limits *lim);

#endif
