/* cmd_serve.c -- `shardlm serve [MODEL] [flags]`: opens the engine, starts
 * the OpenAI-compatible HTTP server on it, and runs until SIGINT/SIGTERM.
 *
 * The signals are blocked before any thread starts (every thread inherits
 * the mask) and taken here with sigwait, so no signal handler runs inside
 * the engine or HTTP threads. On a signal: stop accepting, abort what is in
 * flight, close the engine, exit 0. */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/flags.h"
#include "engine/engine.h"
#include "server/server.h"
#include "shardlm.h"
#include "util/log.h"
#include "util/progress.h"


/* vLLM's periodic stats line (its VLLM_LOG_STATS_INTERVAL is SHARDLM_LOG_STATS_INTERVAL here, seconds, 10):
 * the interval's prompt and generation tokens a second, the sequences running and waiting, the KV cache's
 * share in use and the prefix cache's hit rate over the interval's queries (the last interval that had
 * some). At info while tokens move and for the first quiet interval after, at debug while idle. */
typedef struct stats_log {
    double interval, t_last;
    sl_engine_stats last;
    int was_busy;
    double hit_rate;
} stats_log;

static void stats_log_start(stats_log *l, sl_engine *engine) {
    const char *v = getenv("SHARDLM_LOG_STATS_INTERVAL");
    char *end = NULL;
    const double s = v ? strtod(v, &end) : 10.0;
    const int valid = !v || (end != v && *end == '\0' && s > 0);
    if (!valid) SL_WARN("SHARDLM_LOG_STATS_INTERVAL=\"%s\" is not a positive number of seconds: using 10", v);
    *l = (stats_log){.interval = valid ? s : 10.0, .t_last = sl_now_s()};
    sl_engine_get_stats(engine, &l->last);
}

static void stats_log_tick(stats_log *l, const sl_engine_stats *st) {
    const double now = sl_now_s(), dt = now - l->t_last;
    if (dt < l->interval) return;
    const double prompt = (double)(st->prompt_tokens - l->last.prompt_tokens) / dt;
    const double gen = (double)(st->generation_tokens - l->last.generation_tokens) / dt;
    const int64_t queries = st->prefix_cache_queries - l->last.prefix_cache_queries;
    if (queries > 0) l->hit_rate = 100.0 * (double)(st->prefix_cache_hits - l->last.prefix_cache_hits) / (double)queries;
    const int busy = prompt > 0 || gen > 0;
    sl_log(busy || l->was_busy ? SL_LOG_INFO : SL_LOG_DEBUG,
           "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, Running: %d reqs, "
           "Waiting: %d reqs, KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
           prompt, gen, st->n_running, st->n_waiting,
           st->n_kv_blocks_total ? 100.0 * st->n_kv_blocks_used / st->n_kv_blocks_total : 0.0, l->hit_rate);
    l->was_busy = busy, l->last = *st, l->t_last = now;
}

/* Thousands of connections need thousands of descriptors. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int sl_cmd_serve(int argc, char **argv) {
    sl_engine_options eo;
    sl_engine_options_init(&eo);
    sl_engine_flag_values ev;
    sl_server_options so;
    sl_server_options_init(&so);
    const char *api_key = NULL, *log_level = NULL;
    int64_t max_body = 0;
    int disable_log_requests = 0, disable_log_stats = 0, trust_remote_code = 0, max_log_len = INT_MIN;
    sl_flag flags[64];
    const sl_flag own[] = {
        {"--host", SL_FLAG_STRING, &so.host, "Frontend", "address to listen on (default 0.0.0.0: every interface)", "HOST"},
        {"--port", SL_FLAG_INT, &so.port, "Frontend", "port to listen on (8000; 0 picks a free one)", NULL},
        {"--api-key", SL_FLAG_STRING, &api_key, "Frontend",
         "require `Authorization: Bearer KEY` on the /v1 routes (default: env SHARDLM_API_KEY)", "KEY"},
        {"--log-level", SL_FLAG_STRING, &log_level, "Frontend", "debug, info, warning, error or critical (info)", "LEVEL"},
        {"--max-request-body", SL_FLAG_BYTES, &max_body, "Frontend", "larger request bodies get 413 (32M)", "BYTES"},
        {"--max-connections", SL_FLAG_INT, &so.max_connections, "Frontend", "open connections at once (4096)", NULL},
        {"--timeout-keep-alive", SL_FLAG_INT, &so.idle_timeout_s, "Frontend",
         "seconds an idle connection stays open (60); generating ones never time out", "SECONDS"},
        {"--http-threads", SL_FLAG_INT, &so.http_threads, "Frontend", "HTTP worker threads (one per core)", NULL},
        {"--served-model-name", SL_FLAG_STRING, &so.served_model_name, "ModelConfig",
         "the model name in the API (default: the model folder or hub id)", "NAME"},
        {"--enable-auto-tool-choice", SL_FLAG_BOOL, &so.enable_auto_tool_choice, "Frontend",
         "allow tool_choice \"auto\": the model decides, and --tool-call-parser reads its calls", NULL},
        {"--response-role", SL_FLAG_STRING, &so.response_role, "Frontend",
         "the role of a chat reply after the generation prompt (default assistant)", "ROLE"},
        {"--tool-call-parser", SL_FLAG_STRING, &so.tool_call_parser, "Frontend",
         "how tool calls are read out of the output: hermes (Qwen2.5, Hermes), llama3_json, mistral or pythonic (Llama 3.2, Llama 4)", "NAME"},
        {"--enable-log-requests", SL_FLAG_BOOL, &so.log_requests, "Frontend",
         "log each request as it arrives (id, prompt token ids, sampling parameters) and each client that hangs up", NULL},
        {"--disable-log-requests", SL_FLAG_BOOL, &disable_log_requests, "Frontend",
         "vLLM's older spelling of the default: requests are not logged", NULL},
        {"--max-log-len", SL_FLAG_INT, &max_log_len, "Frontend", "prompt token ids a logged request shows (32; -1: all)", NULL},
        {"--disable-log-stats", SL_FLAG_BOOL, &disable_log_stats, "Frontend",
         "no throughput line every SHARDLM_LOG_STATS_INTERVAL seconds (10) while requests run", NULL},
        {"--allowed-origins", SL_FLAG_STRING, &so.allowed_origins, "Frontend",
         "origins a browser may call the API from (CORS), a JSON list: '[\"https://app.example\"]' (default [\"*\"])",
         "JSON"},
        {"--allowed-methods", SL_FLAG_STRING, &so.allowed_methods, "Frontend",
         "methods a CORS preflight allows, a JSON list (default [\"*\"])", "JSON"},
        {"--allowed-headers", SL_FLAG_STRING, &so.allowed_headers, "Frontend",
         "headers a CORS preflight allows, a JSON list (default [\"*\"])", "JSON"},
        {"--allow-credentials", SL_FLAG_BOOL, &so.allow_credentials, "Frontend",
         "CORS: let browsers send cookies and credentials (the origin is then named, never \"*\")", NULL},
        {"--trust-remote-code", SL_FLAG_BOOL, &trust_remote_code, "ModelConfig",
         "accepted for vLLM command lines; changes nothing: shardlm runs no code from a model repository (its "
         "architectures are built in, and others are refused with or without it)", NULL},
    };
    int n = (int)(sizeof own / sizeof own[0]);
    memcpy(flags, own, sizeof own);
    int m = sl_engine_flags(&eo, &ev, flags + n, (int)(sizeof flags / sizeof flags[0]) - n);
    if (m < 0) {
        fprintf(stderr, "shardlm serve: internal error: flag table too small\n");
        return 1;
    }
    n += m;

    const char *model = NULL;
    int n_pos = 0, help = 0;
    sl_err err = {0};
    if (sl_flags_parse(flags, n, argc, argv, &model, 1, &n_pos, &help, &err)) {
        fprintf(stderr, "shardlm serve: %s\n", err.msg);
        return 2;
    }
    if (help) {
        sl_flags_print_help(stdout, "shardlm serve [MODEL] [flags]\n\nServes MODEL (a Hugging Face folder or hub id; "
                                    "default SmolLM2-135M-Instruct) over an OpenAI-compatible HTTP API.",
                            flags, n);
        return 0;
    }
    if (sl_engine_flags_finish(&eo, &ev, n_pos ? model : NULL, &err)) {
        fprintf(stderr, "shardlm serve: %s\n", err.msg);
        return 2;
    }
    sl_engine_step_defaults(eo.backend, 1, &eo.max_num_seqs, &eo.max_num_batched_tokens); /* a server's, where unset */
    if (log_level) {
        int level = sl_log_parse_level(log_level);
        if (level < 0) {
            fprintf(stderr, "shardlm serve: --log-level must be debug, info, warning, error or critical, got \"%s\"\n",
                    log_level);
            return 2;
        }
        sl_log_set_level((sl_log_level)level);
    }
    if (so.port < 0 || so.port > 65535) {
        fprintf(stderr, "shardlm serve: --port must be in 0..65535, got %d\n", so.port);
        return 2;
    }
    if (sl_server_check_options(&so, &err)) {
        fprintf(stderr, "shardlm serve: %s\n", err.msg);
        return 2;
    }
    if (max_log_len != INT_MIN) {
        if (max_log_len < -1) {
            fprintf(stderr, "shardlm serve: --max-log-len must be -1 (all) or at least 0, got %d\n", max_log_len);
            return 2;
        }
        so.max_log_len = max_log_len;
    }
    so.api_key = api_key ? api_key : getenv("SHARDLM_API_KEY");
    so.max_body_bytes = max_body > 0 ? (size_t)max_body : 0;

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    if (sl_server_check_listen(&so, &err)) { /* before minutes of model loading */
        fprintf(stderr, "shardlm serve: %s\n", err.msg);
        return 1;
    }
    sl_engine *engine = NULL;
    char msg[1024];
    if (sl_engine_open(&eo, &engine, msg, sizeof msg)) {
        fprintf(stderr, "shardlm serve: %s\n", msg);
        return 1;
    }
    sl_engine_flags_warn(&ev, engine);
    sl_server *server = NULL;
    if (sl_server_start(engine, &so, &server, &err)) {
        fprintf(stderr, "shardlm serve: %s\n", err.msg);
        sl_engine_close(engine);
        return 1;
    }
    sl_engine_info info;
    sl_engine_get_info(engine, &info);
    SL_INFO("serving %s on http://%s:%d (max_model_len %d%s)", so.served_model_name ? so.served_model_name : info.model_name,
            so.host, sl_server_port(server), info.max_model_len, so.api_key ? ", API key required" : "");
    fflush(stderr);

    /* wait for SIGINT/SIGTERM, checking every second that the engine (every rank) still works */
    int sig = -1, healthy = 1;
    stats_log stats;
    stats_log_start(&stats, engine);
    while (sig < 0 && healthy) {
        const struct timespec second = {1, 0};
        sig = sigtimedwait(&stop_signals, NULL, &second);
        sl_engine_stats st;
        sl_engine_get_stats(engine, &st);
        healthy = st.healthy;
        if (!disable_log_stats) stats_log_tick(&stats, &st);
    }
    if (healthy) SL_INFO("received signal %d: shutting down", sig);
    else SL_ERROR("the engine failed (see above); shutting down with exit status 1");
    sl_server_stop(server);
    sl_engine_close(engine);
    sl_server_free(server);
    SL_INFO("stopped");
    return healthy ? 0 : 1;
}
