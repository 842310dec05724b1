/* server_internal.h -- what the server's files share: the server, one HTTP
 * request's state, one generation (the engine requests behind one HTTP
 * request and the queue their outputs land in), metrics and the JSON/SSE
 * formatting helpers. Nothing outside src/server/ includes this.
 *
 * Threads: libmicrohttpd's worker threads run the routes; the engine thread
 * runs sl_server_gen_on_output, which only copies the output into the
 * generation's queue and resumes the suspended connection. A generation is
 * reference-counted: one reference for the HTTP request, one for a
 * streaming response body, one per engine request still producing. */
#ifndef SL_SERVER_INTERNAL_H
#define SL_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "engine/engine.h"
#include "server/buf.h"
#include "server/server.h"
#include "server/tool_parser.h"
#include "shardlm.h"
#include "util/error.h"

/* ---- CORS (cors.c) --------------------------------------------------------- */
typedef struct sl_cors {
    int any_origin, any_method, any_header, credentials;
    char **origins, **methods, **headers; /* of n_origins, n_methods, n_headers */
    int n_origins, n_methods, n_headers;
    char *allow_methods, *allow_headers;  /* a preflight answer's lists ("a, b"); allow_headers NULL: any */
} sl_cors;
int sl_cors_init(sl_cors *c, const sl_server_options *o, sl_err *err);
void sl_cors_free(sl_cors *c);
/* A preflight: OPTIONS with Origin and Access-Control-Request-Method. */
int sl_cors_is_preflight(struct MHD_Connection *conn, const char *method);
/* Access-Control-Allow-Origin (and -Credentials) on a reply to a request with an allowed Origin. */
void sl_cors_add_headers(const sl_cors *c, struct MHD_Connection *conn, struct MHD_Response *r);

/* ---- metrics ------------------------------------------------------------- */
typedef struct sl_server_histogram {
    const double *bounds; /* upper bounds, ascending; +Inf implied */
    int n_bounds;
    uint64_t counts[32];  /* per bucket (not cumulative), last is +Inf */
    double sum;
    uint64_t count;
} sl_server_histogram;

typedef struct sl_server_metrics {
    pthread_mutex_t mu;
    sl_server_histogram ttft, itl, e2e, prompt_len, gen_len;
    uint64_t finished[4];      /* by sl_finish_reason: none(error), stop, length, abort */
    uint64_t http_by_status[6]; /* 2xx 3xx(unused) 4xx... indexed by status/100 */
} sl_server_metrics;

void sl_server_metrics_init(sl_server_metrics *m);
void sl_server_metrics_destroy(sl_server_metrics *m);
void sl_server_metrics_observe(sl_server_metrics *m, sl_server_histogram *h, double v);
void sl_server_metrics_count_status(sl_server_metrics *m, unsigned status);
/* Prometheus text exposition; malloc'd, the caller frees. */
char *sl_server_metrics_render(struct sl_server *s);

/* ---- the server ------------------------------------------------------------ */
struct sl_gen;

struct sl_server {
    sl_engine *engine;
    sl_engine_info info;
    const sl_tokenizer *tok;        /* NULL: prompt ids only */
    const sl_chat_template *tmpl;   /* NULL: chat needs a request chat_template */
    char *model_name;               /* the name in responses and /v1/models */
    int name_given;                 /* --served-model-name: "model" must be exactly it */
    char *api_key;                  /* NULL: open */
    size_t max_body_bytes;
    int max_n;
    time_t created;
    struct MHD_Daemon *daemon;
    int port;

    /* hang-up watcher: EPOLLRDHUP on the sockets of generating requests */
    int watch_fd, wake_fd;
    pthread_t watcher;
    int watcher_started;

    pthread_mutex_t live_mu;        /* the list of live generations */
    struct sl_gen *live_head;
    uint64_t next_key;

    int auto_tools;                 /* --enable-auto-tool-choice (with a --tool-call-parser) */
    int log_requests, max_log_len;  /* --enable-log-requests, --max-log-len (sl_server_options) */
    char *response_role;            /* --response-role */
    sl_cors cors;
    sl_tool_format tool_format;     /* --tool-call-parser, for tool_choice "auto" */

    atomic_int stopping;
    atomic_int engine_failed;       /* set when the engine refused work as broken */
    sl_server_metrics metrics;
};
typedef struct sl_server sl_server;

/* ---- tool calls (tools.c) ---------------------------------------------------------- */
typedef enum { SL_TOOLS_NONE, SL_TOOLS_AUTO, SL_TOOLS_REQUIRED, SL_TOOLS_NAMED } sl_tools_mode;

/* How a chat request's output holds tool calls. */
typedef struct sl_server_tools {
    sl_tools_mode mode;             /* NONE: plain text, no calls read */
    sl_tool_format format;          /* how calls are read out of the output */
    int first_only;                 /* parallel_tool_calls false: the first call only (tool_parser.h) */
    char *function;                 /* NAMED: the function's name (owned) */
} sl_server_tools;

/* ---- one generation ---------------------------------------------------------- */
typedef enum { SL_GEN_COMPLETION, SL_GEN_CHAT } sl_gen_kind;

/* A copied sl_output, queued for the HTTP side. */
typedef struct sl_gen_event {
    struct sl_gen_event *next;
    int choice;                     /* global choice index */
    char *text;
    size_t text_len;
    int32_t *ids;
    float *logprobs;                /* [n_tokens] or NULL */
    int32_t *top_ids;               /* [n_tokens * n_top] */
    float *top_logprobs;
    int n_tokens, n_top;
    int finished;
    sl_finish_reason finish_reason;
    char *stop_reason;
    int32_t stop_token;
    int n_prompt_tokens, n_output_tokens, n_cached_tokens;
    char *error;
} sl_gen_event;

/* One engine request: one prompt with its n choices. */
typedef struct sl_gen_sub {
    struct sl_gen *gen;
    int index;                      /* prompt index */
    uint64_t engine_id;
    int submitted;
    int32_t *prompt_ids;            /* owned */
    int n_prompt;
    char *echo_text;                /* what `echo` puts first (the prompt; chat: the final message), set only when asked */
    char *log_text;                 /* the prompt's text for --enable-log-requests (a text prompt), or NULL */
    int n_open;                     /* choices not yet finished (engine side) */
    double t_last_token;            /* engine side: inter-token latency */
    int got_first;                  /* engine side */
    int n_cached;                   /* HTTP side: prompt tokens from the prefix cache */
} sl_gen_sub;

/* HTTP-side accumulation of one choice. */
typedef struct sl_gen_choice {
    sl_server_buf text;
    json_t *lp;                     /* logprobs accumulated (non-streaming) */
    size_t text_offset;             /* code points so far (completions logprobs) */
    int finished;
    sl_finish_reason finish_reason;
    char *stop_reason;
    int32_t stop_token;
    int n_output;
    int echoed;
    sl_tool_stream *tool_stream;    /* streaming with tools: the calls read so far */
} sl_gen_choice;

typedef struct sl_gen {
    pthread_mutex_t mu;             /* guards the fields marked (mu) */
    sl_server *srv;
    struct MHD_Connection *conn;
    int refs;                       /* (mu) */
    struct sl_gen *live_prev, *live_next;
    uint64_t key;                   /* for the hang-up watcher */
    int watched;                    /* socket registered with the watcher */
    int watch_sock;

    sl_gen_kind kind;
    int stream, include_usage, continuous_usage;
    int logprobs;                   /* -1: none; k: top k (completions) or top_logprobs (chat) */
    int echo;
    sl_server_tools tools;          /* chat: how tool calls are read out of the output */
    char *role;                     /* chat: the reply's role (sl_server_chat_render) */
    char id[48];
    time_t created;
    double t_arrival;

    int n_subs, n_per;
    sl_gen_sub *subs;
    sl_gen_choice *choices;         /* n_subs * n_per */

    sl_gen_event *ev_head, **ev_tail; /* (mu) outputs not yet taken */
    int n_open;                     /* (mu) choices not finished, engine side */
    int suspended;                  /* (mu) the connection waits for us */
    int conn_gone;                  /* (mu) the HTTP request completed */
    int cancelled;                  /* (mu) forced end (server stopping) */
    int lost;                       /* (mu) an output could not be queued (out of memory) */

    /* HTTP side only */
    int n_done;                     /* choices finished as seen by the HTTP side */
    char *error;                    /* an engine error to report */
    sl_server_buf out;              /* SSE bytes not yet handed to MHD */
    size_t out_pos;
    int stream_started, stream_ended;
} sl_gen;

/* Creates a generation with n_subs prompts of n_per choices (refs: 1, the
 * HTTP request's) and puts it on the live list. */
sl_gen *sl_server_gen_new(sl_server *s, sl_gen_kind kind, int n_subs, int n_per);
void sl_server_gen_release(sl_gen *g);
/* Submits every sub's prompt with params; on failure aborts what went out. */
int sl_server_gen_submit(sl_gen *g, const sl_sampling *params, sl_err *err, int *http_status);
/* Aborts the engine requests that are still running. */
void sl_server_gen_abort(sl_gen *g);
/* Moves queued events into the choices; returns 1 when every choice is done. */
int sl_server_gen_drain(sl_gen *g);
/* Suspends the connection unless events wait (or all is done); returns 1
 * if it suspended. Call from the MHD callbacks only. */
int sl_server_gen_wait(sl_gen *g, int wake_on_every_event);
/* Resumes every suspended connection and marks generations cancelled. */
void sl_server_gen_cancel_all(sl_server *s);
int sl_server_gen_count_live(sl_server *s);
/* Streaming body reader for MHD_create_response_from_callback. */
ssize_t sl_server_gen_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void sl_server_gen_stream_free(void *cls);
/* Builds the final non-streaming body (chat.completion / text_completion). */
json_t *sl_server_gen_final_json(sl_gen *g);
/* The hang-up watcher thread, and registration with it (the request's
 * socket hanging up aborts its engine requests). */
int sl_server_watcher_start(sl_server *s, sl_err *err);
void sl_server_watcher_stop(sl_server *s);
void sl_server_watch(sl_gen *g);
void sl_server_unwatch(sl_gen *g);

/* ---- structured output (structured.c) ------------------------------------------- */
/* The request's one constraint on its output. */
typedef struct sl_server_guide {
    sl_guide guide;                 /* for sl_sampling.guide; its strings are this struct's or the body's */
    const char *field;              /* the request field that set it, for errors */
    char *text;                     /* owned: schema JSON, regex or grammar text */
    const char **choices;           /* owned array of the body's strings */
} sl_server_guide;

/* Reads response_format, structured_outputs, guided_* and llama.cpp's
 * json_schema / grammar into g (zeroed first by the caller). 0 or a 400's
 * code, *param naming the field. */
int sl_server_guide_parse(const json_t *body, sl_server_guide *g, sl_err *err, const char **param);
/* A JSON schema constraint from field (tool_choice); a 400 when g has one. */
int sl_server_guide_set_schema(sl_server_guide *g, const char *field, const json_t *schema, sl_err *err,
                               const char **param);
void sl_server_guide_free(sl_server_guide *g);

/* ---- request parsing (params.c) ---------------------------------------------- */
typedef struct sl_server_params {
    sl_sampling sampling;           /* stop strings borrowed from the request JSON */
    sl_server_guide guide;          /* sampling.guide points into it */
    sl_server_tools tools;          /* chat */
    const char **stop;              /* owned array */
    int32_t *stop_ids;              /* owned */
    int64_t max_tokens_given;       /* max_tokens (or max_completion_tokens) as sent (sampling's is capped); 0: unset */
    int stream, include_usage, continuous_usage, echo;
    int logprobs;                   /* -1: none */
    int add_special_tokens;         /* -1: the route's default */
    int n;
} sl_server_params;

/* Parses and checks the sampling fields of a completions/chat body;
 * *param names the offending field. Returns 0 or SL_EINVAL. */
int sl_server_params_parse(const sl_server *s, const json_t *body, sl_gen_kind kind, sl_server_params *p,
                           sl_err *err, const char **param);
void sl_server_params_free(sl_server_params *p);
/* A body jansson refused for an integer past 64 bits, decoded again with
 * integers as reals: the 400 naming the field that holds it (the field's
 * range where it is a sampling field); 0 when none is found. */
int sl_server_params_too_big(const sl_server *s, const json_t *body, sl_gen_kind kind, sl_err *err,
                             const char **param);
/* Checks the model field: 0, or SL_ENOTFOUND with vLLM's message. */
int sl_server_check_model(const sl_server *s, const json_t *body, sl_err *err);

/* Reads tools and tool_choice of a chat body into p->tools (a forced call
 * into p->guide; "auto" may keep special tokens in p->sampling). */
int sl_server_tools_parse(const sl_server *s, const json_t *body, sl_server_params *p, sl_err *err,
                          const char **param);
void sl_server_tools_free(sl_server_tools *t);

/* ---- chat (chat.c) ---------------------------------------------------------------- */
/* Renders body's messages (with tools, chat_template, chat_template_kwargs,
 * add_generation_prompt, continue_final_message) into *prompt (malloc'd);
 * with role, also the role the reply is given, as vLLM gives it (malloc'd):
 * --response-role after a generation prompt, else the final message's role
 * (the reply continues that message or follows it without a prompt); and
 * with echo, the final message's content when its role is the reply's (what
 * vLLM's `echo` puts before the reply), else NULL. */
int sl_server_chat_render(const sl_server *s, const json_t *body, char **prompt, char **role, char **echo,
                          sl_err *err, const char **param);

/* ---- tokens ------------------------------------------------------------------------ */
/* Token ids of text (the caller frees *ids). */
int sl_server_tokenize(const sl_server *s, const char *text, int add_special, int32_t **ids, int *n_ids,
                       sl_err *err);
/* A token's text as vLLM shows it in logprobs (malloc'd). */
char *sl_server_token_text(const sl_server *s, int32_t id);

/* ---- replies (reply.c) ----------------------------------------------------------- */
enum MHD_Result sl_server_reply_json(sl_server *s, struct MHD_Connection *c, unsigned status, json_t *body);
/* The answer to a CORS preflight (cors.c). */
enum MHD_Result sl_cors_reply_preflight(sl_server *s, struct MHD_Connection *conn);
enum MHD_Result sl_server_reply_text(sl_server *s, struct MHD_Connection *c, unsigned status, const char *type,
                                     const char *text, size_t n);
/* {"error": {"message", "type", "param", "code"}} with the status's type. */
enum MHD_Result sl_server_reply_error(sl_server *s, struct MHD_Connection *c, unsigned status, const char *param,
                                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
json_t *sl_server_error_json(unsigned status, const char *param, const char *message);
/* An sl_err code mapped to an HTTP status. */
unsigned sl_server_status_of(int code);
/* "chatcmpl-<32 hex>" etc. */
void sl_server_make_id(char *out, size_t n, const char *prefix);
/* Logprob clamped to a finite value (JSON has no -inf). */
double sl_server_finite_logprob(float lp);

/* ---- routes (routes.c) -------------------------------------------------------------- */
enum MHD_Result sl_server_route_completions(sl_server *s, struct MHD_Connection *c, json_t *body, sl_gen_kind kind,
                                            sl_gen **gen_out, double t_arrival);
enum MHD_Result sl_server_route_tokenize(sl_server *s, struct MHD_Connection *c, json_t *body);
enum MHD_Result sl_server_route_detokenize(sl_server *s, struct MHD_Connection *c, json_t *body);
enum MHD_Result sl_server_route_models(sl_server *s, struct MHD_Connection *c);
/* Answers a suspended non-streaming generation once it is done. */
enum MHD_Result sl_server_finish_gen(sl_server *s, struct MHD_Connection *c, sl_gen *g);

#endif
