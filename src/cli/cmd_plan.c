/* cmd_plan.c -- `shardlm plan MODEL --gpus N --gpu-memory GB`: the smallest
 * layout that fits, from config.json alone (nothing is loaded).
 *
 * Prints, for each device count up to --gpus, the best layout's largest
 * rank: its weights, workspace, the KV cache one max-model-len sequence
 * needs, and how many KV tokens the rest of the device holds; then one
 * sentence naming the smallest layout that fits, or what would: a shorter
 * --max-model-len when the weights fit but a full-length sequence does not,
 * more or larger devices when the weights alone do not, with the smallest
 * layout of more such devices that fits. Without --gpus and --gpu-memory it
 * plans for the GPUs this machine has, where it has any; without a model,
 * for the default model, as the other commands. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "model/memory_plan.h"
#include "util/fs.h"

/* How far past --gpus to look for a layout that fits: 8 machines (the search grows as its square). */
#define BEYOND_NODES 8

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

/* --gpu-memory: a size as every size flag reads it (48G, 48GB, 44.7GiB), or a bare number of GB. */
static int parse_gpu_memory(const char *s, double *gb, sl_err *err) {
    int64_t bytes;
    if (sl_parse_bytes(s, &bytes))
        return sl_err_set(err, SL_EINVAL, "--gpu-memory expects a size like 48G, 48GB or 44.7GiB (a bare number is GB), "
                          "got \"%s\"", s);
    const bool bare = strspn(s, "0123456789.") == strlen(s);
    *gb = bare ? strtod(s, NULL) : (double)bytes / 1e9;
    return SL_OK;
}

static void print_layout_flags(const sl_mem_layout *l) {
    printf("--tensor-parallel-size %d --pipeline-parallel-size %d", l->tp, l->pp);
}

/* When nothing of up to --gpus devices holds a full-length sequence: the smallest layout of more
 * devices of the same size that does, or at least holds the weights. */
static void print_more_devices(const sl_model_config *cfg, int gpus, int per_node, double gpu_memory_gb, double device,
                               const sl_mem_limits *lim) {
    sl_mem_layout fit, weights_fit;
    const int most = per_node * BEYOND_NODES;
    if (most <= gpus) return;
    /* the weights first: where no layout holds them, none holds a sequence either */
    if (!sl_mem_smallest_layout_any_context(cfg, most, per_node, device, lim, &weights_fit)) {
        printf("; no layout of up to %d devices of %.0f GB holds the weights", most, gpu_memory_gb);
    } else if (sl_mem_smallest_layout(cfg, most, per_node, device, lim, &fit)) {
        printf("; with more devices of %.0f GB, the smallest layout that fits is ", gpu_memory_gb);
        print_layout_flags(&fit);
        printf(" (%d devices, %.1f GB of weights per device)", fit.tp * fit.pp, fit.weight_bytes / 1e9);
    } else {
        printf("; with more devices of %.0f GB, ", gpu_memory_gb);
        print_layout_flags(&weights_fit);
        printf(" (%d devices) fits with --max-model-len %d or less", weights_fit.tp * weights_fit.pp,
               sl_mem_max_model_len(&weights_fit, device));
    }
}

/* The last sentence: the smallest layout that fits, else what would; returns the exit status. */
static int print_verdict(const sl_model_config *cfg, int gpus, int per_node, double gpu_memory_gb, double device,
                         const sl_mem_limits *lim, int len) {
    const double gb = 1e9;
    sl_mem_layout fit;
    if (sl_mem_smallest_layout(cfg, gpus, per_node, device, lim, &fit)) {
        printf("\nsmallest layout that fits: ");
        print_layout_flags(&fit);
        printf(" (%.1f GB of weights per device, room for %.0f KV tokens per device)\n", fit.weight_bytes / gb,
               (device - fit.weight_bytes - fit.workspace_bytes) / fit.kv_bytes_per_token);
        return 0;
    }
    /* nothing holds a full-length sequence: does some layout hold the weights, with a shorter context? */
    if (sl_mem_smallest_layout_any_context(cfg, gpus, per_node, device, lim, &fit)) {
        printf("\nno layout of up to %d device%s of %.0f GB holds a %d-token sequence; ", gpus, gpus == 1 ? "" : "s",
               gpu_memory_gb, len);
        print_layout_flags(&fit);
        printf(" does with --max-model-len %d or less, or add devices", sl_mem_max_model_len(&fit, device));
    } else {
        printf("\nthe weights alone exceed every layout of up to %d device%s of %.0f GB: add devices or use larger "
               "ones (a shorter --max-model-len cannot help)", gpus, gpus == 1 ? "" : "s", gpu_memory_gb);
    }
    print_more_devices(cfg, gpus, per_node, gpu_memory_gb, device, lim);
    printf("\n");
    return 1;
}

int sl_cmd_plan(int argc, char **argv) {
    int gpus = 0, per_node = 8, max_model_len = 0;
    double gpu_memory_gb = 0, utilization = 0.9;
    const char *kv_dtype = "auto", *gpu_memory = NULL, *model_flag = NULL, *model = NULL;
    const sl_flag flags[] = {
        {"--model", SL_FLAG_STRING, &model_flag, "Plan", "the model folder or config.json, as the positional MODEL", "MODEL"},
        {"--gpus", SL_FLAG_INT, &gpus, "Plan", "devices available (this machine's GPUs, else 8)", "N"},
        {"--gpus-per-node", SL_FLAG_INT, &per_node, "Plan", "devices per machine; tensor parallelism stays inside one (8)", "N"},
        {"--gpu-memory", SL_FLAG_STRING, &gpu_memory, "Plan",
         "memory of one device: 48G, 48GB or 44.7GiB; a bare number is GB (this machine's GPU, else 80G)", "SIZE"},
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
        sl_flags_print_help(stdout, "shardlm plan [MODEL|config.json] [--gpus N] [--gpu-memory SIZE]\n\n"
                            "Without MODEL: the default model, SmolLM2-135M-Instruct.", flags, n_flags);
        return 0;
    }
    if (!rc) rc = sl_model_arg(n_pos ? positional[0] : NULL, model_flag, &model, &err);
    if (!rc && !model) model = sl_model_default_dir();
    if (!rc && gpu_memory) rc = parse_gpu_memory(gpu_memory, &gpu_memory_gb, &err);
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
    if (!rc) rc = load_config(model, &cfg, &err);
    if (rc) {
        fprintf(stderr, "shardlm plan: %s\n", err.msg);
        return 2;
    }
    const double gb = 1e9, device = gpu_memory_gb * gb * utilization;
    /* GPUs compute in the weights' 16-bit type (backend.h) */
    const sl_mem_limits lim = {.max_model_len = max_model_len, .kv_bytes_per_elem = kv_bytes,
                               .act_bytes_per_elem = (int)sl_dtype_n_bytes(cfg.dtype)};
    const int len = max_model_len > 0 ? max_model_len : cfg.max_position_embeddings;
    printf("%s: %.2f B parameters, %s: %.1f GB of weights; context %d tokens\n", model,
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
    return print_verdict(&cfg, gpus, per_node, gpu_memory_gb, device, &lim, len);
}
