/* server.c -- the HTTP daemon: libmicrohttpd setup, routing, request
 * bodies, authentication, and an orderly shutdown.
 *
 * Design notes
 * - libmicrohttpd runs a small pool of epoll threads (one per core); a
 *   connection waiting on the engine is suspended (MHD_suspend_connection),
 *   so thousands of open generations cost no threads and no polling. The
 *   engine callback resumes it (gen.c).
 * - Limits: a connection cap, an idle timeout (suspended connections do not
 *   time out: they are generating), a per-connection memory pool for
 *   headers, and a request-body limit answered with 413.
 * - Every answer waits until its request has been read whole, an unused
 *   body read and dropped (for up to DRAIN_SECONDS: a lingering close):
 *   libmicrohttpd closes a connection answered earlier, and clients that
 *   send before they read would see a reset instead of the answer (see
 *   DRAIN_SECONDS).
 * - Bodies are read whole, checked as UTF-8, parsed with jansson, then
 *   routed. Every failure is an OpenAI-shaped error (reply.c).
 * - With an API key, every /v1 route needs `Authorization: Bearer KEY`,
 *   compared in constant time; /health, /metrics, /version, /tokenize and
 *   /detokenize stay open (as in vLLM).
 * - Stop: quiesce the listening socket, abort every engine request, give
 *   the connections a moment to send their last bytes, resume whatever
 *   still sleeps, then stop the daemon. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server_internal.h"
#include "util/log.h"
#include "util/progress.h"

/* ---- routes -------------------------------------------------------------------------- */

typedef enum {
    ROUTE_NONE,
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_TOKENIZE,
    ROUTE_DETOKENIZE,
    ROUTE_MODELS,
    ROUTE_HEALTH,
    ROUTE_VERSION,
    ROUTE_METRICS,
} route_id;

static const struct {
    const char *path, *method;
    route_id id;
} routes[] = {
    {"/v1/completions", "POST", ROUTE_COMPLETIONS}, {"/v1/chat/completions", "POST", ROUTE_CHAT},
    {"/tokenize", "POST", ROUTE_TOKENIZE},          {"/detokenize", "POST", ROUTE_DETOKENIZE},
    {"/v1/models", "GET", ROUTE_MODELS},            {"/health", "GET", ROUTE_HEALTH},
    {"/version", "GET", ROUTE_VERSION},             {"/metrics", "GET", ROUTE_METRICS},
    {"/ping", "GET", ROUTE_HEALTH},                 {"/ping", "POST", ROUTE_HEALTH}, /* vLLM's, for SageMaker */
};

/* An over-limit body, or the body of a request answered before it was
 * read, is read and dropped until it ends, for up to DRAIN_SECONDS after the
 * request arrived (a lingering close bounded by time: a client that sends
 * within it reads its answer); past that it is answered at once and the
 * connection closes. A declared length more than DRAIN_DECLARED_BYTES over
 * the limit is answered at once instead: a client that declares such a
 * body and waits before sending it would otherwise wait for the idle
 * timeout, and it could not be sent in that time anyway. */
#define DRAIN_SECONDS 10.0
#define DRAIN_DECLARED_BYTES ((unsigned long long)1 << 30)
#define TOO_LARGE_FMT                                                                                                  \
    "the request body is larger than the limit of %zu bytes: send a smaller body, or start the server with a larger " \
    "--max-request-body"

/* One HTTP request (libmicrohttpd's per-request pointer). */
typedef struct sl_conn {
    route_id route;
    int replied;           /* an answer is queued; ignore what else arrives */
    unsigned early_status; /* an answer decided before the body was read (0: none) */
    json_t *early;         /* its error body, sent once the body is read and dropped */
    sl_server_buf body;
    double t_arrival;
    sl_gen *gen;           /* the generation this request waits on */
    int preflight;         /* a CORS preflight: answered by cors.c once read, whatever the path */
} sl_conn;

/* ---- helpers ----------------------------------------------------------------------------- */

static int key_matches(const char *given, const char *key) {
    size_t n = strlen(given), m = strlen(key);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)(key[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

static int authorized(const sl_server *s, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(h, s->api_key);
}

/* Offset of the first byte that breaks UTF-8, or -1 when valid. */
static long utf8_invalid_at(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return (long)i;
        unsigned cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return (long)i;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return (long)i;
        i += len;
    }
    return -1;
}

static enum MHD_Result reply_health(sl_server *s, struct MHD_Connection *c) {
    if (atomic_load(&s->stopping)) return sl_server_reply_error(s, c, 503, NULL, "the server is shutting down");
    sl_engine_stats st;
    sl_engine_get_stats(s->engine, &st); /* healthy: every rank answered its last step or ping */
    if (atomic_load(&s->engine_failed) || !st.healthy)
        return sl_server_reply_error(s, c, 503, NULL, "the engine failed and no longer takes requests; restart the server");
    return sl_server_reply_text(s, c, 200, NULL, "", 0);
}

static enum MHD_Result reply_metrics(sl_server *s, struct MHD_Connection *c) {
    char *text = sl_server_metrics_render(s);
    if (!text) return sl_server_reply_error(s, c, 500, NULL, "out of memory");
    enum MHD_Result r = sl_server_reply_text(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
    return r;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static enum MHD_Result dispatch_get(sl_server *s, struct MHD_Connection *c, route_id r) {
    switch (r) {
    case ROUTE_MODELS: return sl_server_route_models(s, c);
    case ROUTE_HEALTH: return reply_health(s, c);
    case ROUTE_VERSION: return sl_server_reply_json(s, c, 200, json_pack("{s:s}", "version", sl_version()));
    case ROUTE_METRICS: return reply_metrics(s, c);
    default: return sl_server_reply_error(s, c, 500, NULL, "unrouted GET");
    }
}

static enum MHD_Result reply_bad_json(sl_server *s, struct MHD_Connection *c, const json_error_t *jerr) {
    return sl_server_reply_error(s, c, 400, NULL, "Invalid JSON in the request body: %s (line %d, column %d)",
                                 jerr->text, jerr->line, jerr->column);
}

/* jansson refuses an integer past 64 bits as invalid JSON; decoded again
 * with integers as reals, the field that holds it gets a 400 naming it. */
static enum MHD_Result reply_too_big(sl_server *s, struct MHD_Connection *c, sl_conn *cs, const json_error_t *first) {
    json_error_t jerr;
    json_t *body = json_loadb(cs->body.data, cs->body.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    sl_err err = {0};
    const char *param = NULL;
    sl_gen_kind kind = cs->route == ROUTE_CHAT ? SL_GEN_CHAT : SL_GEN_COMPLETION;
    int rc = json_is_object(body) ? sl_server_params_too_big(s, body, kind, &err, &param) : SL_OK;
    enum MHD_Result r = rc ? sl_server_reply_error(s, c, sl_server_status_of(rc), param, "%s", err.msg)
                           : reply_bad_json(s, c, first);
    json_decref(body);
    return r;
}

static enum MHD_Result dispatch_post(sl_server *s, struct MHD_Connection *c, sl_conn *cs) {
    if (cs->body.len == 0) return sl_server_reply_error(s, c, 400, NULL, "the request body is empty: send a JSON object");
    long bad = utf8_invalid_at((const unsigned char *)cs->body.data, cs->body.len);
    if (bad >= 0) return sl_server_reply_error(s, c, 400, NULL, "the request body is not valid UTF-8 (byte %ld)", bad);
    json_error_t jerr;
    json_t *body = json_loadb(cs->body.data, cs->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body && strncmp(jerr.text, "too big ", 8) == 0) return reply_too_big(s, c, cs, &jerr); /* [negative] integer */
    if (!body) return reply_bad_json(s, c, &jerr);
    enum MHD_Result ret;
    switch (cs->route) {
    case ROUTE_COMPLETIONS: ret = sl_server_route_completions(s, c, body, SL_GEN_COMPLETION, &cs->gen, cs->t_arrival); break;
    case ROUTE_CHAT: ret = sl_server_route_completions(s, c, body, SL_GEN_CHAT, &cs->gen, cs->t_arrival); break;
    case ROUTE_TOKENIZE: ret = sl_server_route_tokenize(s, c, body); break;
    case ROUTE_DETOKENIZE: ret = sl_server_route_detokenize(s, c, body); break;
    default: ret = sl_server_reply_error(s, c, 500, NULL, "unrouted POST"); break;
    }
    json_decref(body);
    return ret;
}

/* ---- early answers ----------------------------------------------------------------------
 * libmicrohttpd closes a connection answered before its request was read
 * whole: one answered from the first (headers) call, or in the middle of
 * its body. So answers wait for the end of the body (a GET's is empty),
 * and a body that will not be used is read and dropped, within bounds: a
 * client that sends all before reading then gets the answer, not a reset. */

static void defer_error(sl_conn *cs, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void defer_error(sl_conn *cs, unsigned status, const char *fmt, ...) {
    char msg[SL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_decref(cs->early);
    cs->early = sl_server_error_json(status, NULL, msg); /* NULL: answered as out of memory */
    cs->early_status = status;
}

static enum MHD_Result reply_early(sl_server *s, struct MHD_Connection *c, sl_conn *cs) {
    json_t *body = cs->early;
    cs->early = NULL;
    cs->replied = 1;
    return sl_server_reply_json(s, c, cs->early_status, body);
}

/* First call for a request: route, method, auth, declared size. An error
 * found here is answered at once only when the client waits for
 * "100 Continue" (it then sends no body) or declares a body past
 * DRAIN_DECLARED_BYTES over the limit; otherwise after the body (see
 * on_body_bytes). */
static enum MHD_Result on_headers(sl_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                  sl_conn *cs) {
    if (sl_cors_is_preflight(c, method)) { /* before routing and the API key, as vLLM's middleware */
        cs->preflight = 1;
        return MHD_YES;
    }
    int path_known = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0) continue;
        path_known = 1;
        if (strcmp(method, routes[i].method) == 0) cs->route = routes[i].id;
    }
    const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long n_declared = len ? strtoull(len, NULL, 10) : 0;
    if (!path_known) defer_error(cs, 404, "Not Found: no route %s %.200s", method, url);
    else if (cs->route == ROUTE_NONE) defer_error(cs, 405, "Method Not Allowed: %s %.200s", method, url);
    else if (s->api_key && strncmp(url, "/v1/", 4) == 0 && !authorized(s, c))
        defer_error(cs, 401, "Unauthorized: send the API key as `Authorization: Bearer KEY`");
    else if (atomic_load(&s->stopping) && cs->route != ROUTE_HEALTH && cs->route != ROUTE_METRICS)
        defer_error(cs, 503, "the server is shutting down");
    else if (n_declared > s->max_body_bytes) defer_error(cs, 413, TOO_LARGE_FMT, s->max_body_bytes);
    if (!cs->early_status) return MHD_YES;
    const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if ((expect && strcasecmp(expect, "100-continue") == 0) || n_declared > s->max_body_bytes + DRAIN_DECLARED_BYTES)
        return reply_early(s, c, cs);
    return MHD_YES;
}

/* Body bytes: kept up to the limit; past it, or once an early answer is
 * decided, dropped until the body ends (then answered by on_access) or
 * DRAIN_SECONDS run out (answered now; the connection then closes). */
static enum MHD_Result on_body_bytes(sl_server *s, struct MHD_Connection *c, sl_conn *cs, const char *data,
                                     size_t *n_bytes) {
    size_t n = *n_bytes;
    *n_bytes = 0;
    if (!cs->early_status && cs->body.len + n > s->max_body_bytes) {
        sl_server_buf_free(&cs->body);
        defer_error(cs, 413, TOO_LARGE_FMT, s->max_body_bytes);
    }
    if (!cs->early_status && sl_server_buf_append(&cs->body, data, n)) {
        sl_server_buf_free(&cs->body);
        defer_error(cs, 500, "out of memory reading the request body");
    }
    if (!cs->early_status) return MHD_YES;
    if (sl_now_s() - cs->t_arrival > DRAIN_SECONDS) return reply_early(s, c, cs);
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    sl_server *s = cls;
    sl_conn *cs = *con_cls;
    (void)version;
    if (!cs) {
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        cs->t_arrival = sl_now_s();
        *con_cls = cs;
        return on_headers(s, c, url, method, cs);
    }
    if (cs->replied) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) return on_body_bytes(s, c, cs, upload_data, upload_data_size);
    /* the request has been read whole */
    if (cs->preflight) {
        cs->replied = 1;
        return sl_cors_reply_preflight(s, c);
    }
    if (cs->early_status) return reply_early(s, c, cs);
    if (cs->gen) return sl_server_finish_gen(s, c, cs->gen); /* resumed: the generation is done */
    if (cs->route != ROUTE_COMPLETIONS && cs->route != ROUTE_CHAT && cs->route != ROUTE_TOKENIZE &&
        cs->route != ROUTE_DETOKENIZE) {
        cs->replied = 1;
        return dispatch_get(s, c, cs->route);
    }
    enum MHD_Result r = dispatch_post(s, c, cs);
    if (!cs->gen) cs->replied = 1;
    sl_server_buf_free(&cs->body);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    sl_conn *cs = *con_cls;
    (void)cls;
    (void)c;
    if (!cs) return;
    sl_gen *g = cs->gen;
    if (g) {
        sl_server_unwatch(g);
        pthread_mutex_lock(&g->mu);
        g->conn_gone = 1;
        int open = g->n_open;
        pthread_mutex_unlock(&g->mu);
        if (open > 0) {
            SL_DEBUG("request %s ended (%d) with %d choice(s) running: aborting", g->id, (int)why, open);
            sl_server_gen_abort(g);
        }
        sl_server_gen_release(g);
    }
    json_decref(cs->early);
    sl_server_buf_free(&cs->body);
    free(cs);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    SL_DEBUG("http: %s", line);
}

/* ---- start / stop ----------------------------------------------------------------------------- */

void sl_server_options_init(sl_server_options *o) {
    *o = (sl_server_options){.host = "0.0.0.0", .port = 8000, .max_log_len = 32};
}

int sl_server_check_options(const sl_server_options *o, sl_err *err) {
    sl_tool_format f;
    if (o->tool_call_parser && sl_tool_format_from_name(o->tool_call_parser, &f) != 0)
        return sl_err_set(err, SL_EINVAL, "--tool-call-parser: unknown parser \"%s\" (known: " SL_TOOL_PARSER_NAMES ")",
                          o->tool_call_parser);
    if (o->enable_auto_tool_choice && !o->tool_call_parser)
        return sl_err_set(err, SL_EINVAL, "--enable-auto-tool-choice requires --tool-call-parser (" SL_TOOL_PARSER_NAMES
                                          ", the one the model's chat template writes)");
    sl_cors cors; /* the CORS lists read */
    int rc = sl_cors_init(&cors, o, err);
    if (!rc) sl_cors_free(&cors);
    return rc;
}

static int resolve_listen(const sl_server_options *o, struct addrinfo **res, sl_err *err) {
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(o->host && *o->host ? o->host : NULL, port, &hints, res);
    if (gai != 0)
        return sl_err_set(err, SL_EINVAL, "--host %s: cannot resolve it (%s)", o->host ? o->host : "", gai_strerror(gai));
    return SL_OK;
}

/* Binds a throwaway socket as libmicrohttpd will bind its own
 * (SO_REUSEADDR; IPv6 only for an IPv6 address), so a taken port is
 * reported before the engine spends minutes loading a model. */
int sl_server_check_listen(const sl_server_options *o, sl_err *err) {
    if (o->port == 0) return SL_OK;
    struct addrinfo *res = NULL;
    int rc = resolve_listen(o, &res, err);
    if (rc) return rc;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol), one = 1, e = 0;
    if (fd < 0) e = errno;
    else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
             (res->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one)) ||
             bind(fd, res->ai_addr, res->ai_addrlen))
        e = errno;
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    const char *host = o->host && *o->host ? o->host : "0.0.0.0";
    switch (e) {
    case 0: return SL_OK;
    case EADDRINUSE:
        return sl_err_set(err, SL_EIO, "%s:%d is already in use (another server?): stop it, or pick another --port",
                          host, o->port);
    case EACCES:
        return sl_err_set(err, SL_EPERM, "not allowed to listen on %s:%d (ports below 1024 need privileges): pick "
                          "another --port", host, o->port);
    case EADDRNOTAVAIL:
        return sl_err_set(err, SL_EINVAL, "cannot listen on %s:%d: %s is not an address of this machine: pick "
                          "another --host", host, o->port, host);
    default:
        return sl_err_set(err, SL_EIO, "cannot listen on %s:%d (%s): pick another --host or --port", host, o->port,
                          strerror(e));
    }
}

static int start_daemon(sl_server *s, const sl_server_options *o, sl_err *err) {
    struct addrinfo *res = NULL;
    int rc = resolve_listen(o, &res, err);
    if (rc) return rc;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = o->http_threads > 0 ? (unsigned)o->http_threads : cores > 2 ? (unsigned)cores : 2;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (res->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, res->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_connections > 0 ? o->max_connections : 4096),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(o->idle_timeout_s > 0 ? o->idle_timeout_s : 60),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    freeaddrinfo(res);
    if (!s->daemon)
        return sl_err_set(err, SL_EIO, "cannot listen on %s:%d (port in use, or not allowed?): pick another --port",
                          o->host ? o->host : "", o->port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    return SL_OK;
}

int sl_server_start(sl_engine *engine, const sl_server_options *o, sl_server **out, sl_err *err) {
    int rc = sl_server_check_options(o, err);
    if (rc) return rc;
    sl_server *s = calloc(1, sizeof *s);
    if (!s) return sl_err_set(err, SL_ENOMEM, "out of memory");
    s->auto_tools = o->enable_auto_tool_choice && o->tool_call_parser;
    if (o->tool_call_parser) sl_tool_format_from_name(o->tool_call_parser, &s->tool_format);
    s->engine = engine;
    sl_engine_get_info(engine, &s->info);
    s->tok = sl_engine_tokenizer(engine);
    s->tmpl = sl_engine_chat_template(engine);
    const char *name = o->served_model_name ? o->served_model_name : s->info.model_name ? s->info.model_name : "model";
    s->model_name = strdup(name);
    s->name_given = o->served_model_name != NULL;
    s->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    s->max_body_bytes = o->max_body_bytes ? o->max_body_bytes : (size_t)32 << 20;
    s->max_n = o->max_n > 0 ? o->max_n : 128;
    s->log_requests = o->log_requests;
    s->max_log_len = o->max_log_len;
    s->response_role = strdup(o->response_role ? o->response_role : "assistant");
    s->created = time(NULL);
    s->watch_fd = s->wake_fd = -1;
    pthread_mutex_init(&s->live_mu, NULL);
    sl_server_metrics_init(&s->metrics);
    const bool no_memory = !s->model_name || !s->response_role || (o->api_key && *o->api_key && !s->api_key);
    rc = no_memory ? sl_err_set(err, SL_ENOMEM, "out of memory") : SL_OK;
    if (!rc) rc = sl_cors_init(&s->cors, o, err);
    if (!rc) rc = sl_server_watcher_start(s, err);
    if (!rc) rc = start_daemon(s, o, err);
    if (rc) {
        sl_server_stop(s);
        sl_server_free(s);
        return rc;
    }
    *out = s;
    return SL_OK;
}

int sl_server_port(const sl_server *s) { return s->port; }

static void abort_all(sl_server *s) {
    pthread_mutex_lock(&s->live_mu);
    size_t n = 0, cap = 0;
    uint64_t *ids = NULL;
    for (sl_gen *g = s->live_head; g; g = g->live_next)
        for (int i = 0; i < g->n_subs; i++) {
            if (!g->subs[i].submitted) continue;
            if (n == cap) {
                uint64_t *grown = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ids);
                if (!grown) break;
                ids = grown;
            }
            ids[n++] = g->subs[i].engine_id;
        }
    pthread_mutex_unlock(&s->live_mu);
    for (size_t i = 0; i < n; i++) sl_engine_abort(s->engine, ids[i]);
    free(ids);
}

void sl_server_stop(sl_server *s) {
    if (atomic_exchange(&s->stopping, 1)) return;
    if (s->daemon) {
        MHD_socket listen = MHD_quiesce_daemon(s->daemon);
        if (listen != MHD_INVALID_SOCKET) close(listen);
        int live = sl_server_gen_count_live(s);
        if (live) SL_INFO("stopping: aborting %d in-flight request(s)", live);
        abort_all(s);
        for (double t0 = sl_now_s(); sl_server_gen_count_live(s) > 0 && sl_now_s() - t0 < 3.0;) usleep(10 * 1000);
        sl_server_gen_cancel_all(s);
        usleep(50 * 1000); /* let resumed connections send their last bytes */
        MHD_stop_daemon(s->daemon);
        s->daemon = NULL;
    }
    sl_server_watcher_stop(s);
}

void sl_server_free(sl_server *s) {
    if (!s) return;
    /* generations the engine never finished (it was closed first) */
    while (s->live_head) {
        sl_gen *g = s->live_head;
        pthread_mutex_lock(&g->mu);
        g->refs = 1;
        pthread_mutex_unlock(&g->mu);
        sl_server_gen_release(g);
    }
    sl_server_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->live_mu);
    sl_cors_free(&s->cors);
    free(s->model_name);
    free(s->api_key);
    free(s->response_role);
    free(s);
}
