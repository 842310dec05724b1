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
 * - Bodies are read whole, checked as UTF-8, parsed with jansson, then
 *   routed. Every failure is an OpenAI-shaped error (reply.c).
 * - With an API key, every /v1 route needs `Authorization: Bearer KEY`,
 *   compared in constant time; /health, /metrics, /version, /tokenize and
 *   /detokenize stay open (as in vLLM).
 * - Stop: quiesce the listening socket, abort every engine request, give
 *   the connections a moment to send their last bytes, resume whatever
 *   still sleeps, then stop the daemon. */
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
};

/* One HTTP request (libmicrohttpd's per-request pointer). */
typedef struct sl_conn {
    route_id route;
    int replied;           /* an answer is queued; ignore what else arrives */
    sl_server_buf body;
    double t_arrival;
    sl_gen *gen;           /* the generation this request waits on */
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

static enum MHD_Result dispatch_post(sl_server *s, struct MHD_Connection *c, sl_conn *cs) {
    if (cs->body.len == 0) return sl_server_reply_error(s, c, 400, NULL, "the request body is empty: send a JSON object");
    long bad = utf8_invalid_at((const unsigned char *)cs->body.data, cs->body.len);
    if (bad >= 0) return sl_server_reply_error(s, c, 400, NULL, "the request body is not valid UTF-8 (byte %ld)", bad);
    json_error_t jerr;
    json_t *body = json_loadb(cs->body.data, cs->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return sl_server_reply_error(s, c, 400, NULL, "Invalid JSON in the request body: %s (line %d, column %d)",
                                     jerr.text, jerr.line, jerr.column);
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

/* First call for a request: route, method, auth, declared size. Returns
 * MHD_YES with cs->replied set when it answered already. */
static enum MHD_Result on_headers(sl_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                  sl_conn *cs) {
    int path_known = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0) continue;
        path_known = 1;
        if (strcmp(method, routes[i].method) == 0) cs->route = routes[i].id;
    }
    cs->replied = 1;
    if (!path_known) return sl_server_reply_error(s, c, 404, NULL, "Not Found: no route %s %.200s", method, url);
    if (cs->route == ROUTE_NONE) return sl_server_reply_error(s, c, 405, NULL, "Method Not Allowed: %s %.200s", method, url);
    if (s->api_key && strncmp(url, "/v1/", 4) == 0 && !authorized(s, c))
        return sl_server_reply_error(s, c, 401, NULL, "Unauthorized: send the API key as `Authorization: Bearer KEY`");
    if (atomic_load(&s->stopping) && cs->route != ROUTE_HEALTH && cs->route != ROUTE_METRICS)
        return sl_server_reply_error(s, c, 503, NULL, "the server is shutting down");
    const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (len && strtoull(len, NULL, 10) > s->max_body_bytes)
        return sl_server_reply_error(s, c, 413, NULL, "the request body is larger than the limit of %zu bytes",
                                     s->max_body_bytes);
    cs->replied = 0;
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
        enum MHD_Result r = on_headers(s, c, url, method, cs);
        if (cs->replied || cs->route == ROUTE_COMPLETIONS || cs->route == ROUTE_CHAT || cs->route == ROUTE_TOKENIZE ||
            cs->route == ROUTE_DETOKENIZE)
            return r;
        cs->replied = 1;
        return dispatch_get(s, c, cs->route);
    }
    if (cs->replied) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->body.len + n > s->max_body_bytes) {
            cs->replied = 1;
            return sl_server_reply_error(s, c, 413, NULL, "the request body is larger than the limit of %zu bytes",
                                         s->max_body_bytes);
        }
        if (sl_server_buf_append(&cs->body, upload_data, n)) {
            cs->replied = 1;
            return sl_server_reply_error(s, c, 500, NULL, "out of memory reading the request body");
        }
        return MHD_YES;
    }
    if (cs->gen) return sl_server_finish_gen(s, c, cs->gen); /* resumed: the generation is done */
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
    *o = (sl_server_options){.host = "0.0.0.0", .port = 8000};
}

static int start_daemon(sl_server *s, const sl_server_options *o, sl_err *err) {
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(o->host && *o->host ? o->host : NULL, port, &hints, &res);
    if (gai != 0)
        return sl_err_set(err, SL_EINVAL, "--host %s: cannot resolve it (%s)", o->host ? o->host : "", gai_strerror(gai));
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
    sl_server *s = calloc(1, sizeof *s);
    if (!s) return sl_err_set(err, SL_ENOMEM, "out of memory");
    s->engine = engine;
    sl_engine_get_info(engine, &s->info);
    s->tok = sl_engine_tokenizer(engine);
    s->tmpl = sl_engine_chat_template(engine);
    const char *name = o->served_model_name ? o->served_model_name : s->info.model_name ? s->info.model_name : "model";
    s->model_name = strdup(name);
    s->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    s->max_body_bytes = o->max_body_bytes ? o->max_body_bytes : (size_t)32 << 20;
    s->max_n = o->max_n > 0 ? o->max_n : 128;
    s->created = time(NULL);
    s->watch_fd = s->wake_fd = -1;
    pthread_mutex_init(&s->live_mu, NULL);
    sl_server_metrics_init(&s->metrics);
    int rc = !s->model_name || (o->api_key && *o->api_key && !s->api_key) ? sl_err_set(err, SL_ENOMEM, "out of memory")
                                                                          : SL_OK;
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
    free(s->model_name);
    free(s->api_key);
    free(s);
}
