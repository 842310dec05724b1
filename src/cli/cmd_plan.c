/* cmd_plan.c -- `shardlm plan MODEL --gpus N --gpu-memory GB`: the smallest
 * layout that fits, from config.json alone (nothing is loaded).
 *
 * Prints, for each device count up to --gpus, the best layout's largest
 * rank: its weights, workspace, the KV cache one max-model-len sequence
 * needs, and how many KV tokens the rest of the device holds; then one
 * sentence naming the smallest layout that fits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int gpus = 8, per_node = 8, max_model_len = 0;
    double gpu_memory_gb = 80, utilization = 0.9;
    const sl_flag flags[] = {
        {"--gpus", SL_FLAG_INT, &gpus, "Plan", "devices available (8)", "N"},
        {"--gpus-per-node", SL_FLAG_INT, &per_node, "Plan", "devices per machine; tensor parallelism stays inside one (8)", "N"},
        {"--gpu-memory", SL_FLAG_FLOAT, &gpu_memory_gb, "Plan", "memory of one device in GB (80)", "GB"},
        {"--gpu-memory-utilization", SL_FLAG_FLOAT, &utilization, "Plan", "share of it shardlm may use (0.9)", NULL},
        {"--max-model-len", SL_FLAG_INT, &max_model_len, "Plan", "context length to plan for (the model's)", NULL},
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
    if (!rc && (gpus < 1 || per_node < 1 || gpu_memory_gb <= 0 || utilization <= 0 || utilization > 1))
        rc = sl_err_set(&err, SL_EINVAL, "--gpus, --gpus-per-node and --gpu-memory must be positive, utilization in (0, 1]");
    sl_model_config cfg;
    if (!rc) rc = load_config(positional[0], &cfg, &err);
    if (rc) {
        fprintf(stderr, "shardlm plan: %s\n", err.msg);
        return 2;
    }
    const double gb = 1e9, device = gpu_memory_gb * gb * utilization;
    const sl_mem_limits lim = {.max_model_len = max_model_len, .kv_bytes_per_elem = 2};
    const int len = max_model_len > 0 ? max_model_len : cfg.max_position_embeddings;
    printf("%s: %.2f B parameters, %s: %.1f GB of weights; context %d tokens\n", positional[0],
           sl_model_config_n_params(&cfg) / 1e9, sl_dtype_name(cfg.dtype), sl_mem_total_weight_bytes(&cfg) / gb, len);
    printf("one device: %.0f GB x %.2f = %.1f GB usable\n\n", gpu_memory_gb, utilization, device / gb);
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
    printf("\nno layout of up to %d devices of %.0f GB fits; lower --max-model-len or add devices\n", gpus, gpu_memory_gb);
    return 1;
}
