/* shardlm.h -- the public C API of libshardlm.
 *
 * An engine serves one model: it loads it (a local Hugging Face folder or a
 * hub id), owns its KV cache, and runs a loop on its own thread that batches
 * every submitted request into forward steps (continuous batching over a
 * paged KV cache). Any thread may submit, abort or poll; outputs stream back
 * through a callback (called on the engine thread: keep it short) or are
 * queued for sl_engine_poll.
 *
 *     sl_engine_options o;
 *     sl_engine_options_init(&o);
 *     o.model = "models/SmolLM2-135M-Instruct";
 *     sl_engine *e;
 *     char err[512];
 *     if (sl_engine_open(&o, &e, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
 *     sl_request r;
 *     sl_request_init(&r);
 *     r.prompt = "The capital of France is";
 *     r.params.max_tokens = 16;
 *     uint64_t id;
 *     sl_engine_submit(e, &r, NULL, NULL, &id, err, sizeof err);
 *     for (sl_output *out; sl_engine_poll(e, id, -1, &out) == 0;) {
 *         fwrite(out->text, 1, out->text_len, stdout);
 *         int done = out->finished;
 *         sl_output_free(out);
 *         if (done) break;
 *     }
 *     sl_engine_close(e);
 *
 * Functions return 0 on success or a negative code (SL_E* in the library's
 * util/error.h; sl_strerror names them) and write a one-line message into
 * the caller's buffer. */
#ifndef SHARDLM_H
#define SHARDLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_API __attribute__((visibility("default")))

/* A parameter left at SL_UNSET takes the model's generation_config.json
 * value when it has one, else the OpenAI/vLLM default. */
#define SL_UNSET (-2147483647 - 1)

typedef struct sl_engine sl_engine;

typedef struct sl_engine_options {
    const char *model;                /* folder or hub id org/name[@revision]; NULL: the default model */
    const char *backend;              /* "cpu" or "cuda"; NULL: cuda where built and a GPU is visible, else cpu */
    int tensor_parallel_size;         /* 1 */
    int pipeline_parallel_size;       /* 1 */
    int max_model_len;                /* 0: the model's max_position_embeddings */
    int max_num_seqs;                 /* sequences per step; 0: 512 on a GPU of 70 GB or more, else 256 */
    int max_num_batched_tokens;       /* tokens per step (chunked prefill); 0: 8192 on a GPU of 70 GB or more
                                         (`shardlm serve`: 2048), else 2048 */
    int block_size;                   /* tokens per KV block; 0: 16 */
    double gpu_memory_utilization;    /* share of device memory for weights + KV; 0: 0.9 */
    int64_t kv_cache_memory;          /* bytes for the KV cache; 0: from gpu_memory_utilization, or 1 GiB on the CPU */
    int64_t device_memory;            /* bytes of one device (per rank); 0: detect (CPU: available RAM / ranks) */
    int enable_prefix_caching;        /* 1 on (default), 0 off */
    int n_threads;                    /* CPU threads per rank; 0: this process's cores over the job's ranks on this machine */
    const char *chat_template;        /* a Jinja file overriding the model's template, or NULL */
    const char *generation_config;    /* "auto" (the model's, default), "vllm" (ignore it), or a folder */
    const char *revision;             /* hub revision, or NULL */
    const char *download_dir;         /* hub cache folder, or NULL */
    int quiet;                        /* 1: no load progress or summary on stderr */
    int debug_checks;                 /* 1: verify scheduler and KV invariants after every step (tests) */
    /* Inputs of matmuls over bf16 weights, as torch.set_float32_matmul_precision names them:
     * "highest" (default): float32 activations; "medium": activations rounded to bfloat16,
     * products summed in float32 (as llama.cpp computes bf16 models; about twice the
     * arithmetic rate on CPUs with AVX512_BF16, logprobs then differ by ~1e-2). */
    const char *matmul_precision;
    /* Element type of the KV cache, as vLLM's --kv-cache-dtype: "auto" (default: the
     * activations' float32 on the CPU), "float32", "bfloat16" or "float16". 16-bit
     * caches hold twice the tokens and halve what attention reads (as llama.cpp's
     * default f16 cache); K and V are rounded once, when stored. */
    const char *kv_cache_dtype;
    /* Weight dtype, as vLLM's --dtype: "auto" or NULL (default: the checkpoint's),
     * "bfloat16" ("bf16"), "float16" ("half") or "float32" ("float"). Matrices are
     * converted once, at load, when the checkpoint's differs. */
    const char *dtype;
    /* Engine-wide random seed (vLLM's --seed): a request without a seed of its own
     * takes one drawn from a generator seeded with it, in submission order, so the
     * same seed and the same submissions give the same samples. SL_UNSET: none
     * (such requests draw fresh random seeds). */
    int64_t seed;
    /* 1: run every step's kernels as issued, never as recorded CUDA graphs (vLLM's
     * --enforce-eager); 0 (default): decode steps replay a graph per step shape. */
    int enforce_eager;
} sl_engine_options;

SL_API void sl_engine_options_init(sl_engine_options *o);
SL_API int sl_engine_open(const sl_engine_options *o, sl_engine **out, char *err, size_t err_size);
/* Aborts what is still running, joins the engine thread, frees everything.
 * After a failed job of ranks (a rank died or stalled) it returns too, never
 * aborting the process; that process cannot start another multi-rank engine. */
SL_API void sl_engine_close(sl_engine *e);

/* What the engine holds, for logs, /metrics and /v1/models. */
typedef struct sl_engine_info {
    const char *model_path;           /* resolved folder */
    const char *model_name;           /* folder name or hub id */
    int vocab_size, max_model_len, block_size;
    int n_kv_blocks;                  /* in the pool */
    int64_t kv_cache_tokens;          /* n_kv_blocks * block_size */
    int max_concurrency;              /* sequences of max_model_len that fit at once */
    int tensor_parallel_size, pipeline_parallel_size;
    int64_t weight_bytes, kv_cache_bytes;
    int n_threads;                    /* CPU threads per rank */
    const char *kv_cache_dtype;       /* "float32", "bfloat16" or "float16" */
    const char *device;               /* "cpu" or "cuda" */
    int64_t step_read_bytes;          /* weights a decode step reads: all but the embedding's unread rows */
} sl_engine_info;
SL_API void sl_engine_get_info(const sl_engine *e, sl_engine_info *info);

/* Structured output (vLLM's structured_outputs, the OpenAI API's response_format): the
 * output must be a sentence of one grammar. Tokens the grammar cannot take next are
 * masked before sampling (with every sampling setting); EOS is allowed once the output
 * is complete, and a grammar that admits nothing longer ends the choice there. */
typedef enum {
    SL_GUIDE_NONE = 0,
    SL_GUIDE_JSON,                    /* text: a JSON schema, as JSON text */
    SL_GUIDE_JSON_OBJECT,             /* any JSON object (response_format json_object) */
    SL_GUIDE_REGEX,                   /* text: a regular expression the whole output matches */
    SL_GUIDE_CHOICE,                  /* choices: exactly one of them */
    SL_GUIDE_GRAMMAR                  /* text: a grammar in GBNF (llama.cpp's syntax), start rule `root` */
} sl_guide_kind;

typedef struct sl_guide {
    sl_guide_kind kind;
    const char *text;
    const char *const *choices;
    int n_choices;
} sl_guide;

typedef struct sl_sampling {
    float temperature, top_p, min_p;  /* NaN: unset */
    int top_k;
    float repetition_penalty, presence_penalty, frequency_penalty;
    int64_t seed;                     /* SL_UNSET: a random stream */
    int n;                            /* choices for one prompt (share its KV blocks); 1 */
    int max_tokens;                   /* SL_UNSET: up to max_model_len */
    int min_tokens;                   /* 0 */
    const char *const *stop;          /* stop strings (not included in the text unless asked below) */
    int n_stop;
    int include_stop_str_in_output;   /* 0; 1: the text ends with the stop string it matched */
    const int32_t *stop_token_ids;
    int n_stop_token_ids;
    int ignore_eos;                   /* 0 */
    int logprobs;                     /* -1: none; k >= 0: the chosen token's logprob and the top k */
    int skip_special_tokens;          /* 1 */
    sl_guide guide;                   /* SL_GUIDE_NONE; an invalid or unsupported grammar fails the submit (SL_EINVAL / SL_ENOTSUP, naming it) */
} sl_sampling;

typedef struct sl_request {
    const char *prompt;               /* text, tokenized with the model's tokenizer, or NULL */
    const int32_t *prompt_ids;        /* or ids (when prompt is NULL) */
    int n_prompt_ids;
    int add_special_tokens;           /* 1: BOS etc. as the tokenizer's post-processor says */
    sl_sampling params;
} sl_request;

/* Leaves every sampling parameter unset (floats NaN, ints SL_UNSET) except n = 1, logprobs = -1. */
SL_API void sl_request_init(sl_request *r);

typedef enum { SL_FINISH_NONE = 0, SL_FINISH_STOP, SL_FINISH_LENGTH, SL_FINISH_ABORT } sl_finish_reason;

/* One piece of a request's stream. In a callback it is valid only during
 * the call; from sl_engine_poll the caller frees it with sl_output_free. */
typedef struct sl_output {
    uint64_t request_id;
    int index;                        /* choice index, 0..n-1 */
    const char *text;                 /* new text since the previous output of this choice */
    size_t text_len;
    const int32_t *token_ids;         /* new tokens */
    int n_tokens;
    const float *logprobs;            /* [n_tokens] of the chosen tokens, or NULL */
    const int32_t *top_ids;           /* [n_tokens][n_top], or NULL */
    const float *top_logprobs;        /* [n_tokens][n_top] */
    int n_top;
    int finished;                     /* this choice is done */
    sl_finish_reason finish_reason;
    const char *stop_reason;          /* the stop string matched, or NULL */
    int32_t stop_token;               /* the stop token id matched, or -1 */
    int n_prompt_tokens, n_output_tokens; /* totals so far, for usage */
    int n_cached_tokens;              /* prompt tokens served from the prefix cache */
    const char *error;                /* why a request was aborted by the engine, or NULL */
} sl_output;

typedef void (*sl_output_fn)(const sl_output *out, void *user);

/* Queues a request. With fn, outputs go to fn(out, user) on the engine
 * thread; with fn NULL they queue for sl_engine_poll. Fails at once (nothing
 * queued) on an invalid parameter or a prompt longer than max_model_len. */
SL_API int sl_engine_submit(sl_engine *e, const sl_request *r, sl_output_fn fn, void *user, uint64_t *request_id,
                            char *err, size_t err_size);
/* Stops a request; its KV blocks are freed at the next step and a final
 * output with finish_reason ABORT follows. Unknown ids are ignored. */
SL_API void sl_engine_abort(sl_engine *e, uint64_t request_id);
/* Next queued output of a request submitted without a callback; waits up to
 * timeout_ms (-1: forever). Returns 0, or a negative code on timeout or an
 * unknown/finished id. */
SL_API int sl_engine_poll(sl_engine *e, uint64_t request_id, int timeout_ms, sl_output **out);
SL_API void sl_output_free(sl_output *out);

/* Counters for /metrics and tests. */
typedef struct sl_engine_stats {
    int n_running, n_waiting;
    int n_kv_blocks_used, n_kv_blocks_total;
    int64_t prefix_cache_queries, prefix_cache_hits;  /* tokens */
    int64_t prompt_tokens, generation_tokens;
    int64_t n_preemptions, n_steps;
    int64_t requests_finished;
    int healthy;                      /* 0 once a step or a rank failed: requests are refused */
    double comm_seconds;              /* rank 0's time in communication with the other ranks */
    double step_seconds;              /* time in forward steps (communication included) */
    double output_seconds;            /* time turning logits into outputs: sampling, detokenizing, stops */
} sl_engine_stats;
SL_API void sl_engine_get_stats(sl_engine *e, sl_engine_stats *s);

/* Renders the model's chat template (or the engine's --chat-template) over
 * messages_json (a JSON array of {role, content, ...}) with extra template
 * variables from kwargs_json (a JSON object, or NULL): add_generation_prompt
 * defaults to true. *prompt is malloc'd; the caller frees it. */
SL_API int sl_engine_apply_chat_template(sl_engine *e, const char *messages_json, const char *kwargs_json,
                                         char **prompt, char *err, size_t err_size);

/* Tokenizer access for bindings: ids malloc'd, text malloc'd; caller frees with sl_free. */
SL_API int sl_engine_tokenize(sl_engine *e, const char *text, int add_special_tokens, int32_t **ids, int *n_ids,
                              char *err, size_t err_size);
SL_API int sl_engine_detokenize(sl_engine *e, const int32_t *ids, int n_ids, int skip_special_tokens, char **text,
                                char *err, size_t err_size);
SL_API void sl_free(void *p);

SL_API const char *sl_version(void);

/* Several ranks (--tensor-parallel-size x --pipeline-parallel-size > 1):
 * rank 0 is the process that opens the engine; the other ranks run
 * sl_worker_main. They are started by rank 0 itself or by a launcher
 * (mpirun, srun), in which case every rank runs the same command and the
 * ones for which sl_launched_as_worker() is true must call sl_worker_main
 * instead. Rank 0 starts workers from: $SHARDLM_WORKER_EXE (a path, or a
 * name looked up on PATH); this process when it is the `shardlm` command;
 * the `shardlm` built beside this library; `shardlm` on PATH. Where none is
 * an executable file, sl_engine_open fails at once, saying where it looked. */
SL_API int sl_launched_as_worker(void);
/* Serves rank 0's steps until it shuts down; 0, or a failure code with its message. */
SL_API int sl_worker_main(char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
