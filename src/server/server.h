/* server.h -- the OpenAI-compatible HTTP server over one engine.
 *
 * sl_server_start binds the socket and serves on libmicrohttpd's threads
 * until sl_server_stop; the engine stays the caller's: open it first, stop
 * the server, close the engine, then free the server.
 *
 *     sl_server *s;
 *     if (sl_server_start(engine, &opts, &s, &err)) ...;
 *     ... wait for SIGINT/SIGTERM ...
 *     sl_server_stop(s);      -- stops accepting, aborts in-flight requests
 *     sl_engine_close(engine);
 *     sl_server_free(s);
 *
 * Routes (vLLM's): GET /v1/models, POST /v1/completions,
 * POST /v1/chat/completions, POST /tokenize, POST /detokenize, GET /health,
 * GET /version, GET /metrics. With an API key set, every /v1 route needs
 * `Authorization: Bearer KEY`. Structured output (response_format,
 * guided_*) and tool calls (tools, tool_choice; "auto" with a
 * tool_call_parser) as vLLM serves them. */
#ifndef SL_SERVER_SERVER_H
#define SL_SERVER_SERVER_H

#include <stddef.h>

#include "shardlm.h"
#include "util/error.h"

typedef struct sl_server sl_server;

typedef struct sl_server_options {
    const char *host;              /* address to bind; "0.0.0.0" */
    int port;                      /* 8000; 0: any free port (see sl_server_port) */
    const char *api_key;           /* NULL: no authentication */
    const char *served_model_name; /* the only name served; NULL: the engine's model name (and its folder) */
    size_t max_body_bytes;         /* larger request bodies get 413; 0: 32 MiB */
    int max_connections;           /* open connections at once; 0: 4096 */
    int http_threads;              /* HTTP worker threads; 0: one per core, at least 2 */
    int idle_timeout_s;            /* idle (not generating) connections close after it; 0: 60 */
    int max_n;                     /* largest `n` a request may ask; 0: 128 */
    int enable_auto_tool_choice;   /* tool_choice "auto" allowed (needs tool_call_parser), as vLLM */
    const char *tool_call_parser;  /* how "auto" reads calls: hermes, llama3_json, mistral or pythonic; NULL: none */
    int log_requests;              /* log each request's arrival (id, prompt, parameters) and a client's hang-up */
    int max_log_len;               /* prompt token ids a logged request shows (32); -1: all */
    const char *response_role;     /* the role of a chat reply that follows the generation prompt; NULL: "assistant" */
    /* CORS (cors.c), vLLM's flags: JSON lists of strings, NULL: ["*"] */
    const char *allowed_origins, *allowed_methods, *allowed_headers;
    int allow_credentials;
} sl_server_options;

void sl_server_options_init(sl_server_options *o);
/* Checks the options that need no socket or engine (the tool-call flags):
 * 0, or an error naming the flag. sl_server_start checks them too. */
int sl_server_check_options(const sl_server_options *o, sl_err *err);
/* Checks that o's host:port can be listened on, before the engine opens:
 * 0, or an error with one sentence naming host:port and what to do. */
int sl_server_check_listen(const sl_server_options *o, sl_err *err);
int sl_server_start(sl_engine *engine, const sl_server_options *o, sl_server **out, sl_err *err);
/* The port actually bound (useful with port 0). */
int sl_server_port(const sl_server *s);
/* Stops accepting, aborts in-flight requests, closes every connection.
 * Safe to call once; the engine keeps running. */
void sl_server_stop(sl_server *s);
/* Frees what is left; call after sl_engine_close. */
void sl_server_free(sl_server *s);

#endif
