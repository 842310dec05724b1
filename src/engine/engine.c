/* engine.c -- the public engine API (include/shardlm.h) and the engine loop.
 *
 * sl_engine_open resolves the model (folder, or hub id through the Hugging
 * Face cache), loads config, tokenizer, chat template and generation
 * defaults, sizes the KV cache from the memory it is given and prints what
 * fits, then starts the loop thread. The loop is the only owner of
 * scheduling state: other threads hand it work through one mutex-guarded
 * inbox (new requests, abort ids) and one condition variable, never by
 * touching its lists. Each turn it takes the inbox, builds a step
 * (scheduler.c), runs the model, and turns logits into outputs (output.c).
 * With pipeline stages a turn starts a step (a micro-batch) in a free slot
 * and completes the oldest one only when all pp slots are in flight or
 * nothing new can start, so every stage works on a different micro-batch.
 * A failing step kills the engine loudly: every request gets an error, new
 * ones are refused, and sl_engine_get_stats shows it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine_impl.h"
#include "engine/worker_exe.h"
#include "hub/hub.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/progress.h"

#ifndef SHARDLM_DEFAULT_MODEL_DIR
#define SHARDLM_DEFAULT_MODEL_DIR "models/SmolLM2-135M-Instruct"
#endif
#define MAX_N_CHOICES 128
#define MAX_STOP_STRINGS 16

static int fail(char *buf, size_t n, const sl_err *err) {
    if (buf && n) snprintf(buf, n, "%s", err->msg);
    return err->code ? err->code : SL_EINTERNAL;
}

/* ==================== options and defaults ==================== */

void sl_engine_options_init(sl_engine_options *o) {
    memset(o, 0, sizeof *o);
    o->backend = NULL; /* copy_options: cuda where built and a GPU is visible, else cpu */
    o->tensor_parallel_size = 1;
    o->pipeline_parallel_size = 1;
    o->enable_prefix_caching = 1;
    o->generation_config = "auto";
    o->seed = SL_UNSET;
}

void sl_request_init(sl_request *r) {
    memset(r, 0, sizeof *r);
    r->add_special_tokens = 1;
    sl_sampling *p = &r->params;
    p->temperature = p->top_p = p->min_p = NAN;
    p->repetition_penalty = p->presence_penalty = p->frequency_penalty = NAN;
    p->top_k = SL_UNSET;
    p->seed = SL_UNSET;
    p->n = 1;
    p->max_tokens = SL_UNSET;
    p->logprobs = -1;
    p->skip_special_tokens = 1;
}

const char *sl_version(void) { return SHARDLM_VERSION; }
void sl_free(void *p) { free(p); }

/* generation_config.json: sampling defaults and extra EOS ids. */
static int load_generation_config(sl_engine *e, sl_err *err) {
    sl_sampling *d = &e->defaults;
    d->temperature = 1.0f;
    d->top_p = 1.0f;
    d->top_k = 0;
    d->min_p = 0.0f;
    d->repetition_penalty = 1.0f;
    d->max_tokens = SL_UNSET;
    const char *src = e->opts.generation_config;
    if (src && strcmp(src, "vllm") == 0) return SL_OK;
    const char *dir = (!src || strcmp(src, "auto") == 0) ? e->model_dir : src;
    char *path = sl_path_join(dir, "generation_config.json");
    if (!path) return sl_err_set(err, SL_ENOMEM, "out of memory");
    json_t *g = NULL;
    int rc = sl_path_exists(path) ? sl_json_load_file(path, &g, err) : SL_OK;
    if (g) {
        double v;
        int64_t k;
        const char *w = path;
        if (!rc && (v = NAN, !(rc = sl_json_get_number(g, "temperature", &v, w, err))) && !isnan(v)) d->temperature = (float)v;
        if (!rc && (v = NAN, !(rc = sl_json_get_number(g, "top_p", &v, w, err))) && !isnan(v)) d->top_p = (float)v;
        if (!rc && (v = NAN, !(rc = sl_json_get_number(g, "min_p", &v, w, err))) && !isnan(v)) d->min_p = (float)v;
        if (!rc && (v = NAN, !(rc = sl_json_get_number(g, "repetition_penalty", &v, w, err))) && !isnan(v))
            d->repetition_penalty = (float)v;
        if (!rc && (k = INT64_MIN, !(rc = sl_json_get_int(g, "top_k", &k, w, err))) && k != INT64_MIN) d->top_k = (int)k;
        if (!rc && (k = INT64_MIN, !(rc = sl_json_get_int(g, "max_new_tokens", &k, w, err))) && k > 0) d->max_tokens = (int)k;
        const json_t *eos = json_object_get(g, "eos_token_id");
        size_t i;
        const json_t *x;
        if (json_is_integer(eos) && e->n_eos_ids < 16) e->eos_ids[e->n_eos_ids++] = (int32_t)json_integer_value(eos);
        json_array_foreach(eos, i, x) if (json_is_integer(x) && e->n_eos_ids < 16) e->eos_ids[e->n_eos_ids++] = (int32_t)json_integer_value(x);
        json_decref(g);
    }
    free(path);
    return rc;
}

static void add_eos(sl_engine *e, int32_t id) {
    if (id < 0 || id >= e->vocab || e->n_eos_ids >= 16) return;
    for (int i = 0; i < e->n_eos_ids; i++)
        if (e->eos_ids[i] == id) return;
    e->eos_ids[e->n_eos_ids++] = id;
}

/* ==================== open ==================== */

static int resolve_model(sl_engine *e, sl_err *err) {
    const char *model = e->opts.model;
    if (!model || !*model) {
        const char *env = getenv("SHARDLM_DEFAULT_MODEL");
        model = env && *env ? env : SHARDLM_DEFAULT_MODEL_DIR;
        if (!sl_path_is_dir(model))
            return sl_err_set(err, SL_ENOTFOUND, "the default model SmolLM2-135M-Instruct is not at %s: run "
                              "tools/get-default-model.sh from the shardlm source folder, or name a model folder or hub id",
                              model);
    }
    if (sl_path_is_dir(model)) {
        e->model_dir = strdup(model);
    } else if (sl_hub_looks_like_repo_id(model)) {
        sl_hub_options ho = {.revision = e->opts.revision, .cache_dir = e->opts.download_dir, .offline = -1};
        int rc = sl_hub_resolve(model, &ho, &e->model_dir, err);
        if (rc) return rc;
    } else {
        return sl_err_set(err, SL_ENOTFOUND, "model \"%s\" is neither a folder nor a hub id (org/name)", model);
    }
    const char *slash = strrchr(model, '/');
    e->model_name = strdup(sl_hub_looks_like_repo_id(model) && !sl_path_is_dir(model) ? model
                           : (slash && slash[1] ? slash + 1 : model));
    return e->model_dir && e->model_name ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
}

/* Tokenizer (optional: fixture models have none), chat template (the
 * --chat-template file, else the model's; base models have none) and the
 * bos/eos strings templates use. */
static int load_text_side(sl_engine *e, sl_err *err) {
    char *tok_path = sl_path_join(e->model_dir, "tokenizer.json");
    int rc = SL_OK;
    if (tok_path && sl_path_exists(tok_path)) rc = sl_tokenizer_load(e->model_dir, &e->tok, err);
    else if (!e->opts.quiet) SL_INFO("%s has no tokenizer.json: prompts must be token ids", e->model_dir);
    free(tok_path);
    if (rc) return rc;
    char *src = NULL, *bos = NULL, *eos = NULL;
    rc = sl_chat_template_load_source(e->model_dir, NULL, &src, &bos, &eos, err);
    if (rc == SL_ENOTFOUND) rc = SL_OK;
    if (!rc && e->opts.chat_template) {
        free(src);
        src = NULL;
        rc = sl_file_read_all(e->opts.chat_template, &src, NULL, err);
    }
    if (!rc && src) {
        rc = sl_chat_template_compile(src, strlen(src), &e->chat_template, err);
        if (rc) sl_err_wrap(err, rc, "chat template of %s: ", e->opts.chat_template ? e->opts.chat_template : e->model_dir);
    }
    e->bos_token = bos ? bos : strdup(e->tok && sl_tokenizer_bos_token(e->tok) ? sl_tokenizer_bos_token(e->tok) : "");
    e->eos_token = eos ? eos : strdup(e->tok && sl_tokenizer_eos_token(e->tok) ? sl_tokenizer_eos_token(e->tok) : "");
    free(src);
    return rc;
}

/* Micro-batch slots: pp of them (one per pipeline stage), else one. A
 * one-process engine with debug checks takes $SHARDLM_DEBUG_MICROBATCHES
 * slots: the pipelined scheduler, tested without ranks (the forward runs at
 * submission, completion comes later). */
static int n_step_slots(const sl_engine *e) {
    const char *sim = getenv("SHARDLM_DEBUG_MICROBATCHES");
    if (!e->rank.dist && e->opts.debug_checks && sim && atoi(sim) > 1) return atoi(sim) < 8 ? atoi(sim) : 8;
    return e->rank.model.plan.pp_size > 1 ? e->rank.model.plan.pp_size : 1;
}

/* Logits come back from the backend into memory it copies to at full speed (pinned on a GPU). */
static int alloc_step(sl_engine *e, sl_step *st) {
    const size_t T = (size_t)e->opts.max_num_batched_tokens, S = (size_t)e->opts.max_num_seqs;
    const sl_backend *b = &e->rank.backend;
    sl_err ignored = {0};
    if (b->iface->alloc_host(b->ctx, sizeof(float) * S * (size_t)e->vocab, (void **)&st->logits, &ignored))
        st->logits = NULL;
    if (b->iface->alloc_host(b->ctx, sizeof(int32_t) * S, (void **)&st->sampled, &ignored)) st->sampled = NULL;
    st->sample = malloc(sizeof(sl_sample_row) * S);
    st->full_rows = malloc(sizeof(int32_t) * S);
    st->tokens = malloc(sizeof(int32_t) * T);
    st->positions = malloc(sizeof(int32_t) * T);
    st->slots = malloc(sizeof(int32_t) * T);
    st->query_start = malloc(sizeof(int32_t) * (S + 1));
    st->context_len = malloc(sizeof(int32_t) * S);
    st->tables = malloc(sizeof(int32_t) * S * (size_t)e->max_blocks_per_seq);
    st->logits_rows = malloc(sizeof(int32_t) * S);
    st->seqs = malloc(sizeof(sl_seq *) * S);
    st->n_new = malloc(sizeof(int) * S);
    st->logit_seqs = malloc(sizeof(sl_seq *) * S);
    st->guided = malloc(sizeof(sl_guide_state *) * S);
    st->masked = malloc(sizeof(sl_guide_state *) * S);
    st->guides = e->guides;
    return st->logits && st->sampled && st->sample && st->full_rows && st->tokens && st->positions && st->slots &&
                   st->query_start && st->context_len && st->tables && st->logits_rows && st->seqs && st->n_new &&
                   st->logit_seqs && st->guided && st->masked
               ? SL_OK
               : SL_ENOMEM;
}

static void free_step(const sl_engine *e, sl_step *st) {
    if (st->logits) e->rank.backend.iface->free_host(e->rank.backend.ctx, st->logits);
    if (st->sampled) e->rank.backend.iface->free_host(e->rank.backend.ctx, st->sampled);
    void *bufs[] = {st->sample, st->full_rows, st->tokens, st->positions, st->slots, st->query_start, st->context_len,
                    st->tables, st->logits_rows, st->seqs, st->n_new, st->logit_seqs, st->guided, st->masked};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static int alloc_step_buffers(sl_engine *e, sl_err *err) {
    e->n_slots = n_step_slots(e);
    e->steps = calloc((size_t)e->n_slots, sizeof *e->steps);
    e->raw_row = malloc(sizeof(float) * (size_t)e->vocab);
    if (!e->steps || !e->raw_row) return sl_err_set(err, SL_ENOMEM, "out of memory for step buffers");
    for (int k = 0; k < e->n_slots; k++)
        if (alloc_step(e, &e->steps[k])) return sl_err_set(err, SL_ENOMEM, "out of memory for step buffers");
    return sl_sampler_init(&e->sampler, e->vocab, err);
}

static void print_summary(const sl_engine *e) {
    if (e->opts.quiet) return;
    const sl_model *m = &e->rank.model;
    int64_t tokens = (int64_t)sl_block_pool_n_blocks(e->pool) * e->block_size;
    const sl_backend *b = &e->rank.backend;
    char unit[128] = "";
    if (b->iface->describe) b->iface->describe(b->ctx, unit, sizeof unit);
    fprintf(stderr, "shardlm: %s (%s) on %s%s%s%s, tp=%d pp=%d: %.1f MB of weights\n", e->model_name,
            m->config.arch_name, b->iface->name, *unit ? " (" : "", unit, *unit ? ")" : "", m->plan.tp_size,
            m->plan.pp_size, m->weight_bytes / 1e6);
    fprintf(stderr, "shardlm: KV cache %.2f GiB of %s = %d blocks of %d tokens = %lld tokens; max_model_len %d; "
            "maximum concurrency at %d tokens per request: %.2fx\n",
            m->kv_bytes / 1073741824.0, e->opts.kv_cache_dtype, sl_block_pool_n_blocks(e->pool), e->block_size, (long long)tokens,
            e->max_model_len, e->max_model_len, (double)tokens / e->max_model_len);
}

static void *engine_loop(void *arg);

/* The KV cache element type named by --kv-cache-dtype, or SL_DTYPE_OTHER. */
static sl_dtype kv_dtype(const char *name) {
    const sl_dtype known[] = {SL_DTYPE_F32, SL_DTYPE_BF16, SL_DTYPE_F16};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(name, sl_dtype_name(known[i])) == 0) return known[i];
    return SL_DTYPE_OTHER;
}

/* The weight dtype --dtype names, vLLM's names and aliases; SL_DTYPE_OTHER for
 * auto (the checkpoint's). False for a name it does not know. */
static bool weight_dtype(const char *name, sl_dtype *out) {
    static const struct { const char *name; sl_dtype dtype; } names[] = {
        {"auto", SL_DTYPE_OTHER}, {"bfloat16", SL_DTYPE_BF16}, {"bf16", SL_DTYPE_BF16}, {"float16", SL_DTYPE_F16},
        {"half", SL_DTYPE_F16},   {"fp16", SL_DTYPE_F16},      {"float32", SL_DTYPE_F32}, {"float", SL_DTYPE_F32},
        {"fp32", SL_DTYPE_F32},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].dtype;
            return true;
        }
    return false;
}

static int make_setup(const sl_engine *e, sl_rank_setup *s, sl_err *err) {
    const sl_engine_options *o = &e->opts;
    memset(s, 0, sizeof *s);
    if (strlen(e->model_dir) >= sizeof s->model_dir || strlen(o->backend) >= sizeof s->backend)
        return sl_err_set(err, SL_EINVAL, "model path or backend name too long");
    strcpy(s->model_dir, e->model_dir);
    strcpy(s->backend, o->backend);
    s->tp = o->tensor_parallel_size;
    s->pp = o->pipeline_parallel_size;
    s->n_threads = o->n_threads;
    s->matmul_bf16_inputs = strcmp(o->matmul_precision, "medium") == 0;
    s->enforce_eager = o->enforce_eager != 0;
    s->kv_dtype = kv_dtype(o->kv_cache_dtype);
    weight_dtype(o->dtype, &s->weight_dtype); /* checked by copy_options */
    s->max_model_len = o->max_model_len;
    s->max_model_len_explicit = o->max_model_len > 0;
    s->block_size = o->block_size;
    s->max_num_seqs = o->max_num_seqs;
    s->max_num_batched_tokens = o->max_num_batched_tokens;
    s->kv_cache_memory = o->kv_cache_memory; /* 0: the rank sizes it from its device (rank.c) */
    s->device_memory = o->device_memory;
    s->memory_utilization = o->gpu_memory_utilization > 0 ? o->gpu_memory_utilization : 0.9;
    return SL_OK;
}

#ifndef SHARDLM_BUILT_EXE
#define SHARDLM_BUILT_EXE "shardlm"
#endif

/* Rank 0: joins the job a launcher started, or starts the workers itself,
 * after finding and trying their program (worker_exe.c), so that a missing
 * or broken one is an error now, not a spawn that never returns. */
static int start_job(const sl_rank_setup *setup, sl_dist **dist, sl_err *err) {
    char exe[4096] = "";
    if (!sl_dist_launched_by_launcher()) {
        int rc = sl_worker_exe_resolve(SHARDLM_BUILT_EXE, exe, sizeof exe, err);
        if (!rc && *exe) rc = sl_worker_exe_check(exe, err);
        if (rc) return rc;
    }
    return sl_dist_init_root(setup->tp, setup->pp, *exe ? exe : NULL, sl_comm_timeout_s(), dist, err);
}

/* A --max-model-len past the model's max_position_embeddings is refused, as vLLM refuses it,
 * unless SHARDLM_ALLOW_LONG_MAX_MODEL_LEN (or vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN) is 1 or true. */
static bool long_max_model_len_allowed(void) {
    static const char *names[] = {"SHARDLM_ALLOW_LONG_MAX_MODEL_LEN", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        if (v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0)) return true;
    }
    return false;
}

static int check_max_model_len(const sl_engine_options *o, const sl_model_config *cfg, sl_err *err) {
    const int limit = cfg->max_position_embeddings;
    if (o->max_model_len <= limit) return SL_OK;
    if (!long_max_model_len_allowed())
        return sl_err_set(err, SL_EINVAL,
                          "--max-model-len %d exceeds the model's max_position_embeddings %d: lower it, or set "
                          "SHARDLM_ALLOW_LONG_MAX_MODEL_LEN=1 to allow it (positions past %d may give wrong outputs)",
                          o->max_model_len, limit, limit);
    SL_WARN("--max-model-len %d exceeds the model's max_position_embeddings %d (SHARDLM_ALLOW_LONG_MAX_MODEL_LEN): "
            "positions past %d may give wrong outputs",
            o->max_model_len, limit, limit);
    return SL_OK;
}

/* This process's shard: alone, or as rank 0 of a job it starts or joins. */
static int open_rank(sl_engine *e, sl_err *err) {
    sl_rank_setup setup;
    int rc = make_setup(e, &setup, err);
    if (rc) return rc;
    sl_dist *dist = NULL;
    sl_model_config cfg;
    sl_shard_plan plan;
    /* a layout the model cannot take is refused before any worker starts */
    if ((rc = sl_model_config_load(setup.model_dir, &cfg, err)) || (rc = check_max_model_len(&e->opts, &cfg, err)) ||
        (rc = sl_shard_plan_make(&cfg, 0, setup.tp, 0, setup.pp, &plan, err)))
        return rc;
    if (setup.tp * setup.pp > 1 || sl_dist_launched_by_launcher()) {
        if ((rc = start_job(&setup, &dist, err))) return rc;
        if ((rc = sl_rank_share_setup(dist, &setup, err)) || (rc = sl_dist_set_layout(dist, setup.tp, setup.pp, err))) {
            sl_dist_destroy(dist);
            return rc;
        }
    }
    rc = sl_rank_open(&e->rank, &setup, dist, err);
    if (rc) sl_dist_destroy(dist);
    return rc;
}

static int open_engine(sl_engine *e, sl_err *err) {
    int rc = resolve_model(e, err);
    if (rc || (rc = open_rank(e, err))) return rc;
    const sl_model_config *cfg = &e->rank.config;
    e->vocab = cfg->vocab_size;
    e->block_size = e->opts.block_size;
    e->max_model_len = e->rank.max_model_len;
    e->max_blocks_per_seq = (e->max_model_len + e->block_size - 1) / e->block_size;
    if ((rc = load_text_side(e, err)) || (rc = load_generation_config(e, err)) ||
        (rc = sl_block_pool_create(e->rank.n_blocks, e->block_size, e->opts.enable_prefix_caching, &e->pool, err)))
        return rc;
    for (int i = 0; i < cfg->n_eos_token_ids; i++) add_eos(e, cfg->eos_token_ids[i]);
    if (e->tok) add_eos(e, sl_tokenizer_eos_id(e->tok));
    if ((rc = sl_guides_create(e->tok, e->eos_ids, e->n_eos_ids, e->vocab, &e->guides, err)) ||
        (rc = alloc_step_buffers(e, err)))
        return rc;
    e->stats.n_kv_blocks_total = e->rank.n_blocks;
    e->stats.healthy = 1;
    if (e->opts.seed != SL_UNSET) sl_rng_seed(&e->seed_rng, (uint64_t)e->opts.seed);
    print_summary(e);
    return SL_OK;
}

void sl_engine_step_defaults(const char *backend, int serving, int *max_num_seqs, int *max_num_batched_tokens) {
    if (*max_num_seqs > 0 && *max_num_batched_tokens > 0) return; /* nothing to fill: no GPU query */
    int gpus = 0;
    size_t bytes = 0;
    if (!backend) backend = sl_backend_default_name();
    if (strcmp(backend, "cpu") != 0) sl_backend_gpus(&gpus, &bytes);
    const bool large = gpus > 0 && (double)bytes >= 70.0 * 1073741824.0;
    if (*max_num_seqs <= 0) *max_num_seqs = large ? 512 : 256;
    if (*max_num_batched_tokens <= 0) *max_num_batched_tokens = large && !serving ? 8192 : 2048;
}

static int copy_options(sl_engine *e, const sl_engine_options *o, sl_err *err) {
    e->opts = *o;
    sl_engine_options *c = &e->opts;
    if (!c->backend) c->backend = sl_backend_default_name();
    if (c->block_size <= 0) c->block_size = 16;
    sl_engine_step_defaults(c->backend, 0, &c->max_num_seqs, &c->max_num_batched_tokens);
    if (c->max_num_batched_tokens < c->max_num_seqs) c->max_num_batched_tokens = c->max_num_seqs;
    if (c->tensor_parallel_size <= 0) c->tensor_parallel_size = 1;
    if (c->pipeline_parallel_size <= 0) c->pipeline_parallel_size = 1;
    if (c->block_size > 1024) return sl_err_set(err, SL_EINVAL, "--block-size must be at most 1024");
    if (!c->matmul_precision) c->matmul_precision = "highest";
    if (strcmp(c->matmul_precision, "highest") != 0 && strcmp(c->matmul_precision, "medium") != 0)
        return sl_err_set(err, SL_EINVAL, "--matmul-precision must be \"highest\" or \"medium\", not \"%s\"",
                          c->matmul_precision);
    /* auto: float32 on the CPU (its activations' type), bfloat16 on a GPU (vLLM's auto for bf16 models) */
    if (!c->kv_cache_dtype || strcmp(c->kv_cache_dtype, "auto") == 0)
        c->kv_cache_dtype = strcmp(c->backend, "cpu") == 0 ? "float32" : "bfloat16";
    if (kv_dtype(c->kv_cache_dtype) == SL_DTYPE_OTHER)
        return sl_err_set(err, SL_EINVAL, "--kv-cache-dtype must be auto, float32, bfloat16 or float16, not \"%s\"",
                          c->kv_cache_dtype);
    sl_dtype wd;
    if (!c->dtype) c->dtype = "auto";
    if (!weight_dtype(c->dtype, &wd))
        return sl_err_set(err, SL_EINVAL, "--dtype must be auto, bfloat16 (bf16), float16 (half) or float32 (float), "
                          "not \"%s\"", c->dtype);
    c->dtype = wd == SL_DTYPE_OTHER ? "auto" : sl_dtype_name(wd);
    return SL_OK;
}

int sl_engine_open(const sl_engine_options *o, sl_engine **out, char *errbuf, size_t errlen) {
    *out = NULL;
    sl_err err = {0};
    sl_engine *e = calloc(1, sizeof *e);
    if (!e) return fail(errbuf, errlen, &(sl_err){SL_ENOMEM, "out of memory"});
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->polled, NULL);
    e->next_id = 1;
    int rc = copy_options(e, o, &err);
    if (!rc) rc = open_engine(e, &err);
    if (!rc && pthread_create(&e->thread, NULL, engine_loop, e) != 0)
        rc = sl_err_set(&err, SL_ENOMEM, "cannot start the engine thread");
    if (rc) {
        sl_engine_close(e);
        return fail(errbuf, errlen, &err);
    }
    e->thread_started = true;
    *out = e;
    return SL_OK;
}

/* ==================== close ==================== */

static void free_streams(sl_engine *e) {
    for (sl_stream *st = e->streams, *next; st; st = next) {
        next = st->next;
        for (sl_poll_item *it = st->head, *n2; it; it = n2) {
            n2 = it->next;
            free(it->out);
            free(it);
        }
        free(st);
    }
    e->streams = NULL;
}

void sl_engine_close(sl_engine *e) {
    if (!e) return;
    if (e->dead && e->rank.dist) { /* a rank failed: the job cannot shut down in order */
        SL_ERROR("leaving the failed job of ranks (%s); the other ranks end at their next communication",
                 e->dead_reason);
        sl_dist_fail(e->rank.dist);
    }
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_broadcast(&e->wake);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* requests still queued or running end as aborted */
    for (sl_req *r = e->incoming, *next; r; r = next) {
        next = r->next;
        r->next = e->active;
        e->active = r;
        sl_sched_add_request(e, r);
    }
    for (sl_req *r = e->active, *next; r; r = next) {
        next = r->next;
        sl_output_abort_request(e, r, "the engine was shut down");
        sl_req_free(e, r);
    }
    free_streams(e);
    sl_guides_free(e->guides); /* after the requests: they hold its grammars */
    sl_block_pool_destroy(e->pool);
    sl_sampler_destroy(&e->sampler);
    for (int k = 0; e->steps && k < e->n_slots; k++) free_step(e, &e->steps[k]); /* before the backend goes */
    sl_rank_close(&e->rank);
    sl_tokenizer_free(e->tok);
    sl_chat_template_free(e->chat_template);
    void *bufs[] = {e->steps, e->raw_row, e->running, e->waiting, e->aborts, e->model_dir, e->model_name,
                    e->bos_token, e->eos_token};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->polled);
    free(e);
}

/* ==================== submit ==================== */

static float pick_f(float v, float dflt) { return isnan(v) ? dflt : v; }

/* Fills every unset parameter from generation_config.json, else OpenAI's defaults. */
static void resolve_params(const sl_engine *e, const sl_sampling *in, int n_prompt, sl_sampling *p) {
    const sl_sampling *d = &e->defaults;
    *p = *in;
    p->temperature = pick_f(in->temperature, d->temperature);
    p->top_p = pick_f(in->top_p, d->top_p);
    p->min_p = pick_f(in->min_p, d->min_p);
    p->repetition_penalty = pick_f(in->repetition_penalty, d->repetition_penalty);
    p->presence_penalty = pick_f(in->presence_penalty, 0.0f);
    p->frequency_penalty = pick_f(in->frequency_penalty, 0.0f);
    if (in->top_k == SL_UNSET) p->top_k = d->top_k;
    if (p->top_k < 0) p->top_k = 0;
    if (in->max_tokens == SL_UNSET)
        p->max_tokens = d->max_tokens != SL_UNSET && d->max_tokens < e->max_model_len - n_prompt ? d->max_tokens
                                                                                                : e->max_model_len - n_prompt;
    if (in->min_tokens == SL_UNSET) p->min_tokens = 0;
}

static int check_request(const sl_engine *e, const sl_sampling *p, const int32_t *ids, int n_prompt, sl_err *err) {
    if (n_prompt <= 0) return sl_err_set(err, SL_EINVAL, "the prompt is empty");
    for (int i = 0; i < n_prompt; i++)
        if (ids[i] < 0 || ids[i] >= e->vocab)
            return sl_err_set(err, SL_EINVAL, "prompt token %d at position %d is outside the vocabulary [0, %d)", ids[i], i, e->vocab);
    if (p->n < 1 || p->n > MAX_N_CHOICES) return sl_err_set(err, SL_EINVAL, "n must be between 1 and %d (got %d)", MAX_N_CHOICES, p->n);
    if (p->max_tokens < 1) return sl_err_set(err, SL_EINVAL, "max_tokens must be at least 1 (got %d)", p->max_tokens);
    if (n_prompt >= e->max_model_len || n_prompt + p->max_tokens > e->max_model_len)
        return sl_err_set(err, SL_EINVAL, "This model's maximum context length is %d tokens. However, you requested %d "
                          "tokens (%d in the messages, %d in the completion). Please reduce the length of the messages "
                          "or completion.", e->max_model_len, n_prompt + p->max_tokens, n_prompt, p->max_tokens);
    if (p->min_tokens < 0 || p->min_tokens > p->max_tokens)
        return sl_err_set(err, SL_EINVAL, "min_tokens must be between 0 and max_tokens (%d), got %d", p->max_tokens, p->min_tokens);
    if (p->logprobs > 20) return sl_err_set(err, SL_EINVAL, "logprobs (top_logprobs) must be at most 20 (got %d)", p->logprobs);
    if (p->n_stop < 0 || p->n_stop > MAX_STOP_STRINGS) return sl_err_set(err, SL_EINVAL, "at most %d stop strings", MAX_STOP_STRINGS);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !*p->stop[i]) return sl_err_set(err, SL_EINVAL, "stop strings must not be empty");
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= e->vocab)
            return sl_err_set(err, SL_EINVAL, "stop_token_ids holds %d, outside the vocabulary", p->stop_token_ids[i]);
    sl_sampling_params sp = {p->temperature, p->top_p, p->top_k, p->min_p, p->repetition_penalty,
                             p->presence_penalty, p->frequency_penalty};
    return sl_sampling_params_check(&sp, err);
}

static int init_seq(sl_engine *e, sl_req *r, int i, const int32_t *ids, int n_prompt, sl_err *err) {
    sl_seq *s = &r->seqs[i];
    s->req = r;
    s->index = i;
    s->state = SL_SEQ_WAITING;
    s->cap = n_prompt + r->params.max_tokens;
    s->tokens = malloc(sizeof(int32_t) * (size_t)s->cap);
    s->blocks = malloc(sizeof(int32_t) * (size_t)e->max_blocks_per_seq);
    s->stop_token = -1;
    s->step_slot = -1;
    s->fork_pending = i > 0;
    bool penalties = r->sp.repetition_penalty != 1.0f || r->sp.presence_penalty != 0.0f || r->sp.frequency_penalty != 0.0f;
    if (penalties) s->output_counts = calloc((size_t)e->vocab, sizeof(int32_t));
    if (!s->tokens || !s->blocks || (penalties && !s->output_counts)) return sl_err_set(err, SL_ENOMEM, "out of memory");
    memcpy(s->tokens, ids, sizeof(int32_t) * (size_t)n_prompt);
    s->n_tokens = s->n_prompt = n_prompt;
    uint64_t seed = r->seeded ? (uint64_t)r->params.seed + (uint64_t)i * 0x9e3779b97f4a7c15ull : sl_rng_random_seed();
    sl_rng_seed(&s->rng, seed);
    if (r->grammar) {
        int rc = sl_guide_state_init(e->guides, r->grammar, &s->guide, err);
        if (rc) return rc;
    }
    if (e->tok) {
        int rc = sl_detokenizer_create(e->tok, r->params.skip_special_tokens, &s->detok, err);
        if (rc) return rc;
        /* the prompt is context for the first output token's text (leading spaces...) */
        rc = sl_detokenizer_prime(s->detok, ids, (size_t)n_prompt, err);
        if (rc) return rc;
    }
    return SL_OK;
}

/* The seed of a request that has none of its own under an engine seed
 * (--seed): the next draw of the engine's generator, so the same engine seed
 * and the same submissions in the same order sample the same tokens. */
static int64_t next_request_seed(sl_engine *e) {
    pthread_mutex_lock(&e->mu);
    const int64_t seed = (int64_t)(sl_rng_uniform(&e->seed_rng) * 0x1p53);
    pthread_mutex_unlock(&e->mu);
    return seed;
}

static int build_request(sl_engine *e, const sl_request *in, const int32_t *ids, int n_prompt, sl_req **out, sl_err *err) {
    sl_req *r = calloc(1, sizeof *r);
    if (!r) return sl_err_set(err, SL_ENOMEM, "out of memory");
    *out = r;
    resolve_params(e, &in->params, n_prompt, &r->params);
    int rc = check_request(e, &r->params, ids, n_prompt, err);
    if (rc) return rc;
    if (r->params.seed == SL_UNSET && e->opts.seed != SL_UNSET) r->params.seed = next_request_seed(e);
    const sl_sampling *p = &r->params;
    r->sp = (sl_sampling_params){p->temperature, p->top_p, p->top_k, p->min_p, p->repetition_penalty,
                                 p->presence_penalty, p->frequency_penalty};
    r->seeded = p->seed != SL_UNSET;
    r->params.stop = NULL;
    r->params.stop_token_ids = NULL;
    r->params.guide = (sl_guide){.kind = p->guide.kind}; /* the caller's strings are not kept */
    if (p->guide.kind != SL_GUIDE_NONE && (rc = sl_guides_compile(e->guides, &in->params.guide, &r->grammar, err)))
        return rc;
    r->stop = calloc((size_t)p->n_stop + 1, sizeof(char *));
    r->stop_ids = malloc(sizeof(int32_t) * ((size_t)p->n_stop_token_ids + 1));
    r->seqs = calloc((size_t)p->n, sizeof(sl_seq));
    if (!r->stop || !r->stop_ids || !r->seqs) return sl_err_set(err, SL_ENOMEM, "out of memory");
    for (int i = 0; i < p->n_stop; i++) {
        if (!(r->stop[i] = strdup(in->params.stop[i]))) return sl_err_set(err, SL_ENOMEM, "out of memory");
        r->n_stop++;
        int len = (int)strlen(r->stop[i]);
        if (len > r->max_stop_len) r->max_stop_len = len;
    }
    if (p->n_stop_token_ids) memcpy(r->stop_ids, in->params.stop_token_ids, sizeof(int32_t) * (size_t)p->n_stop_token_ids);
    r->n_stop_ids = p->n_stop_token_ids;
    if (r->sp.repetition_penalty != 1.0f) {
        if (!(r->prompt_mask = calloc((size_t)e->vocab, 1))) return sl_err_set(err, SL_ENOMEM, "out of memory");
        for (int i = 0; i < n_prompt; i++) r->prompt_mask[ids[i]] = 1;
    }
    for (int i = 0; i < p->n; i++)
        if ((rc = init_seq(e, r, i, ids, n_prompt, err))) return rc;
    return SL_OK;
}

int sl_engine_submit(sl_engine *e, const sl_request *in, sl_output_fn fn, void *user, uint64_t *request_id, char *errbuf,
                     size_t errlen) {
    sl_err err = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = SL_OK;
    if (in->prompt) {
        if (!e->tok) rc = sl_err_set(&err, SL_EINVAL, "this model has no tokenizer.json: send prompt token ids");
        else rc = sl_tokenizer_encode(e->tok, in->prompt, strlen(in->prompt), in->add_special_tokens != 0, &ids, &n_ids, &err);
    } else if (in->n_prompt_ids > 0 && in->prompt_ids) {
        ids = malloc(sizeof(int32_t) * (size_t)in->n_prompt_ids);
        if (ids) memcpy(ids, in->prompt_ids, sizeof(int32_t) * (size_t)in->n_prompt_ids);
        n_ids = (size_t)in->n_prompt_ids;
        if (!ids) rc = sl_err_set(&err, SL_ENOMEM, "out of memory");
    }
    sl_req *r = NULL;
    sl_stream *st = NULL;
    if (!rc && n_ids > (size_t)e->max_model_len * 4) rc = sl_err_set(&err, SL_EINVAL, "the prompt has %zu tokens, far over "
                                                                      "the maximum context length %d", n_ids, e->max_model_len);
    if (!rc) rc = build_request(e, in, ids, (int)n_ids, &r, &err);
    free(ids);
    if (!rc && !fn && !(st = calloc(1, sizeof *st))) rc = sl_err_set(&err, SL_ENOMEM, "out of memory");
    if (!rc) {
        r->fn = fn;
        r->user = user;
        pthread_mutex_lock(&e->mu);
        if (e->dead || e->stopping) {
            rc = sl_err_set(&err, SL_EIO, "the engine is not running: %s", e->dead ? e->dead_reason : "shutting down");
        } else {
            r->id = e->next_id++;
            r->arrival = (int64_t)r->id;
            if (st) {
                st->id = r->id;
                st->n_choices = r->params.n;
                st->next = e->streams;
                e->streams = st;
                st = NULL;
            }
            if (e->incoming_tail) e->incoming_tail->next = r;
            else e->incoming = r;
            e->incoming_tail = r;
            e->stats.prompt_tokens += (int64_t)r->seqs[0].n_prompt;
            if (request_id) *request_id = r->id;
            r = NULL;
            pthread_cond_signal(&e->wake);
        }
        pthread_mutex_unlock(&e->mu);
    }
    free(st);
    if (r) sl_req_free(e, r);
    return rc ? fail(errbuf, errlen, &err) : SL_OK;
}

void sl_engine_abort(sl_engine *e, uint64_t request_id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_aborts == e->cap_aborts) {
        int cap = e->cap_aborts ? e->cap_aborts * 2 : 64;
        uint64_t *grown = realloc(e->aborts, sizeof *grown * (size_t)cap);
        if (grown) {
            e->aborts = grown;
            e->cap_aborts = cap;
        }
    }
    if (e->n_aborts < e->cap_aborts) e->aborts[e->n_aborts++] = request_id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
}

/* ==================== poll ==================== */

static sl_stream *find_stream(sl_engine *e, uint64_t id, sl_stream ***link) {
    for (sl_stream **p = &e->streams; *p; p = &(*p)->next)
        if ((*p)->id == id) {
            if (link) *link = p;
            return *p;
        }
    return NULL;
}

int sl_engine_poll(sl_engine *e, uint64_t id, int timeout_ms, sl_output **out) {
    *out = NULL;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->mu);
    sl_stream **link, *st = find_stream(e, id, &link);
    int rc = st ? SL_OK : SL_ENOTFOUND;
    while (st && !st->head && rc == SL_OK) {
        if (timeout_ms == 0) rc = SL_ETIMEDOUT;
        else if (timeout_ms < 0) pthread_cond_wait(&e->polled, &e->mu);
        else if (pthread_cond_timedwait(&e->polled, &e->mu, &deadline) == ETIMEDOUT) rc = SL_ETIMEDOUT;
        st = find_stream(e, id, &link);
        if (!st) rc = SL_ENOTFOUND;
    }
    if (rc == SL_OK) {
        sl_poll_item *it = st->head;
        st->head = it->next;
        if (!st->head) st->tail = NULL;
        *out = it->out;
        free(it);
        if ((*out)->finished && ++st->n_choices_done == st->n_choices) { /* the stream is drained */
            *link = st->next;
            free(st);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void sl_output_free(sl_output *out) { free(out); }

/* ==================== info, stats, text ==================== */

void sl_engine_get_info(const sl_engine *e, sl_engine_info *info) {
    *info = (sl_engine_info){
        .model_path = e->model_dir,
        .model_name = e->model_name,
        .vocab_size = e->vocab,
        .max_model_len = e->max_model_len,
        .block_size = e->block_size,
        .n_kv_blocks = sl_block_pool_n_blocks(e->pool),
        .kv_cache_tokens = (int64_t)sl_block_pool_n_blocks(e->pool) * e->block_size,
        .max_concurrency = sl_block_pool_n_blocks(e->pool) * e->block_size / e->max_model_len,
        .tensor_parallel_size = e->rank.model.plan.tp_size,
        .pipeline_parallel_size = e->rank.model.plan.pp_size,
        .weight_bytes = (int64_t)e->rank.model.weight_bytes,
        .kv_cache_bytes = (int64_t)e->rank.model.kv_bytes,
        .kv_cache_dtype = e->opts.kv_cache_dtype,
        .device = e->opts.backend,
        .n_threads = e->rank.n_threads,
        .step_read_bytes = (int64_t)sl_model_step_read_bytes(&e->rank.model),
    };
}

void sl_engine_get_stats(sl_engine *e, sl_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}

const sl_tokenizer *sl_engine_tokenizer(const sl_engine *e) { return e->tok; }
const sl_chat_template *sl_engine_chat_template(const sl_engine *e) { return e->chat_template; }
const char *sl_engine_bos_token(const sl_engine *e) { return e->bos_token; }
const char *sl_engine_eos_token(const sl_engine *e) { return e->eos_token; }

int sl_engine_apply_chat_template(sl_engine *e, const char *messages_json, const char *kwargs_json, char **prompt,
                                  char *errbuf, size_t errlen) {
    sl_err err = {0};
    *prompt = NULL;
    if (!e->chat_template)
        return fail(errbuf, errlen, &(sl_err){SL_EINVAL, "this model has no chat template: start the engine with "
                                                          "--chat-template FILE"});
    json_error_t jerr;
    json_t *messages = json_loads(messages_json, 0, &jerr);
    json_t *kwargs = kwargs_json ? json_loads(kwargs_json, 0, &jerr) : json_object();
    json_t *ctx = json_object();
    int rc = SL_OK;
    if (!json_is_array(messages)) rc = sl_err_set(&err, SL_EINVAL, "messages must be a JSON array");
    else if (!json_is_object(kwargs)) rc = sl_err_set(&err, SL_EINVAL, "template arguments must be a JSON object");
    if (!rc) {
        json_object_set(ctx, "messages", messages);
        json_object_set_new(ctx, "add_generation_prompt", json_true());
        json_object_set_new(ctx, "bos_token", json_string(e->bos_token));
        json_object_set_new(ctx, "eos_token", json_string(e->eos_token));
        json_object_update(ctx, kwargs);
        size_t n;
        rc = sl_chat_template_render(e->chat_template, ctx, prompt, &n, &err);
    }
    json_decref(messages);
    json_decref(kwargs);
    json_decref(ctx);
    return rc ? fail(errbuf, errlen, &err) : SL_OK;
}

int sl_engine_tokenize(sl_engine *e, const char *text, int add_special_tokens, int32_t **ids, int *n_ids, char *errbuf,
                       size_t errlen) {
    sl_err err = {0};
    size_t n = 0;
    *ids = NULL;
    *n_ids = 0;
    if (!e->tok) return fail(errbuf, errlen, &(sl_err){SL_EINVAL, "this model has no tokenizer.json"});
    int rc = sl_tokenizer_encode(e->tok, text, strlen(text), add_special_tokens != 0, ids, &n, &err);
    *n_ids = (int)n;
    return rc ? fail(errbuf, errlen, &err) : SL_OK;
}

int sl_engine_detokenize(sl_engine *e, const int32_t *ids, int n_ids, int skip_special_tokens, char **text, char *errbuf,
                         size_t errlen) {
    sl_err err = {0};
    size_t n;
    *text = NULL;
    if (!e->tok) return fail(errbuf, errlen, &(sl_err){SL_EINVAL, "this model has no tokenizer.json"});
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= (int32_t)sl_tokenizer_vocab_size(e->tok))
            return fail(errbuf, errlen, &(sl_err){SL_EINVAL, "token id outside the vocabulary"});
    int rc = sl_tokenizer_decode(e->tok, ids, (size_t)n_ids, skip_special_tokens != 0, text, &n, &err);
    return rc ? fail(errbuf, errlen, &err) : SL_OK;
}

/* ==================== the loop ==================== */

#define PING_INTERVAL_S 5 /* an idle job checks that every rank still answers */

/* Moves the inbox into the loop's own lists; returns false when stopping.
 * *idle is set when the loop waited PING_INTERVAL_S with nothing to do. */
static bool take_inbox(sl_engine *e, uint64_t **aborts, int *n_aborts, bool *idle) {
    pthread_mutex_lock(&e->mu);
    *idle = false;
    while (!e->stopping && !e->incoming && !e->n_aborts && e->n_running + e->n_waiting + e->n_in_flight == 0 && !*idle) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += PING_INTERVAL_S;
        *idle = pthread_cond_timedwait(&e->wake, &e->mu, &deadline) == ETIMEDOUT && e->rank.dist && !e->dead;
    }
    bool go = !e->stopping;
    sl_req *in = e->incoming;
    e->incoming = e->incoming_tail = NULL;
    *n_aborts = e->n_aborts;
    *aborts = NULL;
    if (e->n_aborts) {
        *aborts = malloc(sizeof(uint64_t) * (size_t)e->n_aborts);
        if (*aborts) memcpy(*aborts, e->aborts, sizeof(uint64_t) * (size_t)e->n_aborts);
        else *n_aborts = 0;
        e->n_aborts = 0;
    }
    pthread_mutex_unlock(&e->mu);
    for (sl_req *r = in, *next; r; r = next) {
        next = r->next;
        r->next = e->active;
        e->active = r;
        if (sl_sched_add_request(e, r)) sl_output_abort_request(e, r, "out of memory queuing the request");
    }
    return go;
}

static void apply_aborts(sl_engine *e, const uint64_t *ids, int n) {
    for (int i = 0; i < n; i++)
        for (sl_req *r = e->active; r; r = r->next)
            if (r->id == ids[i] && r->n_finished < r->params.n) sl_output_abort_request(e, r, NULL);
}

static bool req_in_flight(const sl_engine *e, const sl_req *r) {
    for (int i = 0; e->n_in_flight && i < r->params.n; i++)
        if (r->seqs[i].step_slot >= 0) return true;
    return false;
}

/* Frees finished requests; one with a sequence in an in-flight step waits for the step. */
static void reap_finished(sl_engine *e) {
    for (sl_req **p = &e->active; *p;) {
        sl_req *r = *p;
        if (r->n_finished == r->params.n && !req_in_flight(e, r)) {
            *p = r->next;
            sl_req_free(e, r);
        } else {
            p = &r->next;
        }
    }
}

/* A step and its sequences enter or leave flight together. */
static void set_in_flight(sl_engine *e, sl_step *st, bool in_flight) {
    st->in_flight = in_flight;
    for (int i = 0; i < st->n_seqs; i++) st->seqs[i]->step_slot = in_flight ? (int)(st - e->steps) : -1;
}

/* A step failed: nothing the engine computes can be trusted any more. */
static void die(sl_engine *e, const sl_err *err) {
    SL_ERROR("engine step failed: %s; aborting every request", err->msg);
    pthread_mutex_lock(&e->mu);
    e->dead = true;
    e->stats.healthy = 0;
    snprintf(e->dead_reason, sizeof e->dead_reason, "%s", err->msg);
    pthread_mutex_unlock(&e->mu);
    for (int k = 0; k < e->n_slots; k++) { /* steps in flight never complete: their blocks go with their requests */
        sl_step *st = &e->steps[k];
        if (!st->in_flight) continue;
        sl_executor_abandon(&e->rank.exec, &st->ticket);
        set_in_flight(e, st, false);
        for (int i = 0; i < st->n_seqs; i++)
            if (st->seqs[i]->state == SL_SEQ_FINISHED) sl_sched_remove(e, st->seqs[i]); /* aborted earlier */
    }
    e->n_in_flight = 0;
    for (sl_req *r = e->active; r; r = r->next)
        if (r->n_finished < r->params.n) sl_output_abort_request(e, r, e->dead_reason);
}

static void publish_stats(sl_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->stats.comm_seconds = sl_dist_comm_seconds(e->rank.dist);
    e->stats.n_running = e->n_running;
    e->stats.n_waiting = e->n_waiting;
    e->stats.n_kv_blocks_used = sl_block_pool_n_blocks(e->pool) - sl_block_pool_n_free(e->pool);
    pthread_mutex_unlock(&e->mu);
}

static sl_step *free_slot(sl_engine *e) {
    for (int k = 0; k < e->n_slots; k++)
        if (!e->steps[k].in_flight) return &e->steps[k];
    return NULL;
}

/* Starts the step built in st: this rank's stage runs, the rest follows on the other ranks. */
static int submit(sl_engine *e, sl_step *st, sl_err *err) {
    sl_batch b = {
        .n_tokens = st->n_tokens,
        .tokens = st->tokens,
        .positions = st->positions,
        .slots = st->slots,
        .n_seqs = st->n_seqs,
        .max_blocks = st->table_width,
        .query_start = st->query_start,
        .context_len = st->context_len,
        .block_tables = st->tables,
        .n_logits = st->n_logits,
        .logits_rows = st->logits_rows,
    };
    /* one process samples on its backend; across ranks the logits come to this one, which samples them */
    st->backend_samples = !e->rank.dist;
    int rc = sl_output_begin_masks(e, st, err);
    if (rc) return rc;
    if (st->backend_samples) {
        sl_output_plan_sampling(e, st);
        b.sample = st->sample;
        b.sampled = st->sampled;
        b.n_full_rows = st->n_full_rows;
        b.full_rows = st->full_rows;
        b.n_masks = st->n_masked;
        b.fill_masks = sl_output_fill_masks;
        b.fill_masks_arg = st;
    }
    double t0 = sl_now_s();
    rc = sl_executor_submit(&e->rank.exec, &b, st->logits, &st->ticket, err);
    e->stats.step_seconds += sl_now_s() - t0;
    if (rc) return rc;
    set_in_flight(e, st, true);
    st->order = e->n_submitted++;
    e->n_in_flight++;
    return SL_OK;
}

/* Waits for the oldest step in flight and turns its logits into outputs. */
static int complete_oldest(sl_engine *e, sl_err *err) {
    sl_step *st = NULL;
    for (int k = 0; k < e->n_slots; k++)
        if (e->steps[k].in_flight && (!st || e->steps[k].order < st->order)) st = &e->steps[k];
    double t0 = sl_now_s();
    int rc = sl_executor_complete(&e->rank.exec, &st->ticket, err);
    e->stats.step_seconds += sl_now_s() - t0;
    if (rc) return rc;
    set_in_flight(e, st, false);
    e->n_in_flight--;
    t0 = sl_now_s();
    sl_output_process_step(e, st);
    e->stats.output_seconds += sl_now_s() - t0;
    e->stats.n_steps++;
    return SL_OK;
}

/* One turn: a new step into a free slot if there is work for it, then the
 * oldest step completes when every slot is in flight or nothing new could
 * start. With one slot that is build, run, outputs: nothing stays in flight. */
static void advance(sl_engine *e) {
    sl_err err = {0};
    sl_step *st = free_slot(e);
    bool started = false;
    if (st && sl_sched_build_step(e, st)) {
        if ((e->opts.debug_checks && sl_sched_check(e, st, &err)) || submit(e, st, &err)) {
            die(e, &err);
            return;
        }
        started = true;
    }
    if (e->n_in_flight > 0 && (e->n_in_flight == e->n_slots || !started)) {
        if (complete_oldest(e, &err)) die(e, &err);
    } else if (!started && e->n_waiting > 0 && e->n_running == 0) {
        /* cannot happen while the pool holds a max_model_len sequence; never spin */
        sl_output_abort_request(e, e->waiting[0]->req, "the request does not fit in the KV cache");
    }
}

static void *engine_loop(void *arg) {
    sl_engine *e = arg;
    uint64_t *aborts;
    int n_aborts;
    bool idle;
    while (take_inbox(e, &aborts, &n_aborts, &idle)) {
        apply_aborts(e, aborts, n_aborts);
        free(aborts);
        sl_err err = {0};
        if (idle && sl_executor_ping(&e->rank.exec, &err)) die(e, &err);
        if (!e->dead) advance(e);
        reap_finished(e);
        publish_stats(e);
    }
    sl_err err = {0};
    while (!e->dead && e->n_in_flight > 0) /* the workers finish what they hold before they are stopped */
        if (complete_oldest(e, &err)) die(e, &err);
    reap_finished(e);
    return NULL;
}

/* ==================== workers ==================== */

int sl_launched_as_worker(void) { return sl_dist_launched_as_worker(); }

int sl_worker_main(char *errbuf, size_t errlen) {
    sl_err err = {0};
    sl_dist *dist;
    int rc = sl_dist_init_worker(sl_comm_timeout_s(), &dist, &err);
    sl_rank_setup setup;
    if (rc) return fail(errbuf, errlen, &err);
    if ((rc = sl_rank_share_setup(dist, &setup, &err)) || (rc = sl_dist_set_layout(dist, setup.tp, setup.pp, &err))) {
        sl_dist_destroy(dist);
        return fail(errbuf, errlen, &err);
    }
    sl_rank rank;
    if ((rc = sl_rank_open(&rank, &setup, dist, &err))) {
        sl_dist_destroy(dist);
        return fail(errbuf, errlen, &err);
    }
    rc = sl_executor_worker_loop(&rank.exec, &err);
    if (rc) { /* rank 0 vanished or a peer stalled: leave the job; the caller exits non-zero, naming this rank */
        sl_err_wrap(&err, rc, "rank %d: ", dist->world.rank);
        sl_dist_fail(dist);
    }
    sl_rank_close(&rank);
    return rc ? fail(errbuf, errlen, &err) : SL_OK;
}
