/* cmd_plan.c -- `shardlm plan MODEL --gpus N --gpu-memory GB`: the smallest
 * layout that fits, from config.json alone (nothing is loaded).
 *
 * Prints, for each device count up to --gpus, the best layout's largest
 * rank: its weights, workspace, the KV cache one max-model-len sequence
 * needs, and how many KV tokens the rest of the device holds; then one
 * sentence naming the smallest layout that fits, or what would: a shorter
 * --max-model-len when the weights fit but a full-length sequence does not,
 * more or larger devices when the weights alone do not. Without --gpus and
 * --gpu-memory it plans for the GPUs this machine has, where it has any. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "model/memory_plan.h"
#include "util/fs.h"

static int load_config(const char *model, sl_model_config *cfg, sl_err *err) {
    if (sl_path_is_dir(model)) return sl_model_config_load(model, cfg, err);
    if (!sl_path_exists(model))
        return sl_err_set(err, SL_ENOTFOUND, "%s: no such folder or config.json (plan reads a model folder's "
                          "config.json, or a config.json file)", model);
    char *text;
    int rc = sl_file_read_all(model, &text, NULL, err);
    if (!rc) rc = sl_model_config_parse(text, model, cfg, err);
    free(text);
    return rc;
}

int sl_cmd_plan(int argc, char **argv) {
    int gpus = 0, per_node = 8, max_model_len = 0;
    double gpu_memory_gb = 0, utilization = 0.9;
    const char *kv_dtype = "auto";
    const sl_flag flags[] = {
        {"--gpus", SL_FLAG_INT, &gpus, "Plan", "devices available (this machine's GPUs, else 8)", "N"},
        {"--gpus-per-node", SL_FLAG_INT, &per_node, "Plan", "devices per machine; tensor parallelism stays inside one (8)", "N"},
        {"--gpu-memory", SL_FLAG_FLOAT, &gpu_memory_gb, "Plan", "memory of one device in GB (this machine's GPU, else 80)", "GB"},
        {"--gpu-memory-utilization", SL_FLAG_FLOAT, &utilization, "Plan", "share of it shardlm may use (0.9)", NULL},
        {"--max-model-len", SL_FLAG_INT, &max_model_len, "Plan", "context length to plan for (the model's)", NULL},
        {"--kv-cache-dtype", SL_FLAG_STRING, &kv_dtype, "Plan", "auto (bfloat16), bfloat16, float16 or float32", NULL},
    };
    const int n_flags = (int)(sizeof flags / sizeof flags[0]);
    const char *positional[1];
    int n_pos, help;
    sl_err err = {0};
    int rc = sl_flags_parse(flags, n_flags, argc, argv, positional, 1, &n_pos, &help, &err);
    if (!rc && help) {
        sl_flags_print_help(stdout, "shardlm plan MODEL|config.json [--gpus N] [--gpu-memory GB]", flags, n_flags);
        return 0;
    }
    if (!rc && n_pos != 1) rc = sl_err_set(&err, SL_EINVAL, "give a model folder or a config.json");
    int kv_bytes = 2;
    if (!rc && strcmp(kv_dtype, "float32") == 0) kv_bytes = 4;
    else if (!rc && strcmp(kv_dtype, "auto") != 0 && strcmp(kv_dtype, "bfloat16") != 0 && strcmp(kv_dtype, "float16") != 0)
        rc = sl_err_set(&err, SL_EINVAL, "--kv-cache-dtype must be auto, bfloat16, float16 or float32, not \"%s\"", kv_dtype);
    const char *where = "given";
    if (!rc && gpus == 0 && gpu_memory_gb == 0) { /* the GPUs of this machine, where it has any */
        int count;
        size_t total;
        sl_backend_gpus(&count, &total);
        if (count > 0) gpus = count, gpu_memory_gb = (double)total / 1e9, where = "this machine's";
    }
    if (gpus == 0 || gpu_memory_gb == 0) where = "assumed";
    if (gpus == 0) gpus = 8;
    if (gpu_memory_gb == 0) gpu_memory_gb = 80;
    if (!rc && (gpus < 1 || per_node < 1 || gpu_memory_gb <= 0 || utilization <= 0 || utilization > 1))
        rc = sl_err_set(&err, SL_EINVAL, "--gpus, --gpus-per-node and --gpu-memory must be positive, utilization in (0, 1]");
    sl_model_config cfg;
    if (!rc) rc = load_config(positional[0], &cfg, &err);
    if (rc) {
        fprintf(stderr, "shardlm plan: %s\n", err.msg);
        return 2;
    }
    const double gb = 1e9, device = gpu_memory_gb * gb * utilization;
    const sl_mem_limits lim = {.max_model_len = max_model_len, .kv_bytes_per_elem = kv_bytes};
    const int len = max_model_len > 0 ? max_model_len : cfg.max_position_embeddings;
    printf("%s: %.2f B parameters, %s: %.1f GB of weights; context %d tokens\n", positional[0],
           sl_model_config_n_params(&cfg) / 1e9, sl_dtype_name(cfg.dtype), sl_mem_total_weight_bytes(&cfg) / gb, len);
    printf("%d %s device%s of %.0f GB x %.2f = %.1f GB usable each; KV cache in %d-byte elements\n\n", gpus, where,
           gpus == 1 ? "" : "s", gpu_memory_gb, utilization, device / gb, kv_bytes);
    printf("%-22s %12s %12s %14s %14s  %s\n", "layout", "weights/dev", "workspace", "KV for 1 seq", "KV tokens/dev", "fits");
    for (int n = 1; n <= gpus; n++)
        for (int tp = n < per_node ? n : per_node; tp >= 1; tp--) {
            if (n % tp || n / tp > cfg.n_layers) continue;
            sl_mem_layout l;
            sl_mem_layout_eval(&cfg, tp, n / tp, &lim, &l);
            if (!l.valid) continue;
            double free_kv = device - l.weight_bytes - l.workspace_bytes;
            char name[32];
            snprintf(name, sizeof name, "tp=%d pp=%d", tp, n / tp);
            printf("%-22s %9.1f GB %9.1f GB %11.1f GB %14.0f  %s\n", name, l.weight_bytes / gb, l.workspace_bytes / gb,
                   l.min_kv_bytes / gb, free_kv > 0 ? free_kv / l.kv_bytes_per_token : 0,
                   l.need_bytes <= device ? "yes" : "no");
            break; /* the best layout of n devices */
        }
    sl_mem_layout fit;
    if (sl_mem_smallest_layout(&cfg, gpus, per_node, device, &lim, &fit)) {
        printf("\nsmallest layout that fits: --tensor-parallel-size %d --pipeline-parallel-size %d "
               "(%.1f GB of weights per device, room for %.0f KV tokens per device)\n",
               fit.tp, fit.pp, fit.weight_bytes / gb, (device - fit.weight_bytes - fit.workspace_bytes) / fit.kv_bytes_per_token);
        return 0;
    }
    /* nothing holds a full-length sequence: does some layout hold the weights, with a shorter context? */
    if (sl_mem_smallest_layout_any_context(&cfg, gpus, per_node, device, &lim, &fit)) {
        printf("\nno layout of up to %d device%s of %.0f GB holds a %d-token sequence; --tensor-parallel-size %d "
               "--pipeline-parallel-size %d does with --max-model-len %d or less, or add devices\n", gpus,
               gpus == 1 ? "" : "s", gpu_memory_gb, len, fit.tp, fit.pp, sl_mem_max_model_len(&fit, device));
    } else {
        printf("\nthe weights alone exceed every layout of up to %d device%s of %.0f GB: add devices or use larger "
               "ones (a shorter --max-model-len cannot help)\n", gpus, gpus == 1 ? "" : "s", gpu_memory_gb);
    }
    return 1;
}
