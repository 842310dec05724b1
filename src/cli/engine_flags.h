/* engine_flags.h -- the flags every engine-opening subcommand shares
 * (serve, generate, bench), with vLLM's names and groups. */
#ifndef SL_CLI_ENGINE_FLAGS_H
#define SL_CLI_ENGINE_FLAGS_H

#include "cli/flags.h"
#include "shardlm.h"

/* Engine flags whose values land in o (and in the small holders below);
 * appends them to out[0..max) and returns how many, or -1 if max is too small.
 * Call sl_engine_flags_finish after parsing. */
typedef struct sl_engine_flag_values {
    const char *model; /* --model */
    double gpu_memory_utilization;
    const char *dtype;
    const char *device;
    int enable_prefix_caching;
    int enable_chunked_prefill; /* -1: not given; 0 is refused (prompts are always prefilled in chunks) */
    /* counts, moved into o when given (INT_MIN: not given): each at least 1, since 0 in o means "the default" */
    int max_model_len, block_size, max_num_seqs, max_num_batched_tokens, threads;
} sl_engine_flag_values;

int sl_engine_flags(sl_engine_options *o, sl_engine_flag_values *v, sl_flag *out, int max);
/* Checks what the parse left and moves it into o; the model is the
 * positional MODEL (NULL: none) or --model. */
int sl_engine_flags_finish(sl_engine_options *o, const sl_engine_flag_values *v, const char *positional_model,
                           sl_err *err);

/* After the engine is open: warns of flags given that have no effect on its device
 * (--gpu-memory-utilization on the CPU). */
void sl_engine_flags_warn(const sl_engine_flag_values *v, sl_engine *e);

#endif
