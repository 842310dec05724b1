/* gen.c -- one HTTP request's generation: the engine requests behind it,
 * the queue their outputs land in, and the suspend/resume hand-off with
 * libmicrohttpd.
 *
 * The engine calls on_output on its own thread; on_output copies the output
 * into the generation's queue, updates the latency histograms and, when the
 * HTTP side sleeps on this generation (its connection is suspended), resumes
 * the connection. It never formats JSON and never waits on HTTP. The HTTP
 * side suspends its connection under the generation's mutex only after
 * seeing nothing to do, so no wake-up is lost.
 *
 * A suspended connection is out of libmicrohttpd's poll set and would not
 * notice its client leaving. The hang-up watcher thread polls the sockets
 * of generating requests for EPOLLRDHUP and aborts their engine requests at
 * once, so a client that goes away frees its KV blocks immediately. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "server/server_internal.h"
#include "util/log.h"
#include "util/progress.h"

/* ---- lifecycle ------------------------------------------------------------------ */

sl_gen *sl_server_gen_new(sl_server *s, sl_gen_kind kind, int n_subs, int n_per) {
    sl_gen *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->subs = calloc((size_t)n_subs, sizeof *g->subs);
    g->choices = calloc((size_t)n_subs * (size_t)n_per, sizeof *g->choices);
    if (!g->subs || !g->choices) {
        free(g->subs);
        free(g->choices);
        free(g);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->srv = s;
    g->refs = 1;
    g->kind = kind;
    g->n_subs = n_subs;
    g->n_per = n_per;
    g->logprobs = -1;
    g->watch_sock = -1;
    g->ev_tail = &g->ev_head;
    g->created = time(NULL);
    g->t_arrival = sl_now_s();
    sl_server_make_id(g->id, sizeof g->id, kind == SL_GEN_CHAT ? "chatcmpl-" : "cmpl-");
    for (int i = 0; i < n_subs; i++) g->subs[i] = (sl_gen_sub){.gen = g, .index = i};
    for (int i = 0; i < n_subs * n_per; i++) g->choices[i].stop_token = -1;
    pthread_mutex_lock(&s->live_mu);
    g->cancelled = atomic_load(&s->stopping); /* a request racing the shutdown never sleeps */
    g->key = ++s->next_key;
    g->live_next = s->live_head;
    if (s->live_head) s->live_head->live_prev = g;
    s->live_head = g;
    pthread_mutex_unlock(&s->live_mu);
    return g;
}

static void event_free(sl_gen_event *e) { free(e); }

static void gen_free(sl_gen *g) {
    sl_server *s = g->srv;
    pthread_mutex_lock(&s->live_mu);
    if (g->live_prev) g->live_prev->live_next = g->live_next;
    else s->live_head = g->live_next;
    if (g->live_next) g->live_next->live_prev = g->live_prev;
    pthread_mutex_unlock(&s->live_mu);
    for (sl_gen_event *e = g->ev_head, *next; e; e = next) {
        next = e->next;
        event_free(e);
    }
    for (int i = 0; i < g->n_subs; i++) {
        free(g->subs[i].prompt_ids);
        free(g->subs[i].echo_text);
        free(g->subs[i].log_text);
    }
    for (int i = 0; i < g->n_subs * g->n_per; i++) {
        sl_server_buf_free(&g->choices[i].text);
        json_decref(g->choices[i].lp);
        free(g->choices[i].stop_reason);
        sl_tool_stream_free(g->choices[i].tool_stream);
    }
    sl_server_tools_free(&g->tools);
    free(g->subs);
    free(g->choices);
    free(g->error);
    free(g->role);
    sl_server_buf_free(&g->out);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void sl_server_gen_release(sl_gen *g) {
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) gen_free(g);
}

/* ---- the engine side ----------------------------------------------------------------- */

/* One allocation holding the output and copies of its arrays. */
static sl_gen_event *event_copy(const sl_output *o, int choice) {
    size_t nt = o->n_tokens > 0 ? (size_t)o->n_tokens : 0, ntop = o->top_ids ? nt * (size_t)o->n_top : 0;
    size_t n_stop = o->stop_reason ? strlen(o->stop_reason) + 1 : 0, n_error = o->error ? strlen(o->error) + 1 : 0;
    size_t n_bytes = sizeof(sl_gen_event) + nt * sizeof(int32_t) + (o->logprobs ? nt * sizeof(float) : 0) +
                     ntop * (sizeof(int32_t) + sizeof(float)) + o->text_len + 1 + n_stop + n_error;
    sl_gen_event *e = calloc(1, n_bytes);
    if (!e) return NULL;
    char *p = (char *)(e + 1);
    /* arrays of 4-byte elements first, then the strings */
    e->ids = (int32_t *)p;
    if (nt) memcpy(e->ids, o->token_ids, nt * sizeof(int32_t));
    p += nt * sizeof(int32_t);
    if (o->logprobs) {
        e->logprobs = (float *)p;
        memcpy(e->logprobs, o->logprobs, nt * sizeof(float));
        p += nt * sizeof(float);
    }
    if (ntop) {
        e->top_ids = (int32_t *)p;
        memcpy(e->top_ids, o->top_ids, ntop * sizeof(int32_t));
        p += ntop * sizeof(int32_t);
        e->top_logprobs = (float *)p;
        memcpy(e->top_logprobs, o->top_logprobs, ntop * sizeof(float));
        p += ntop * sizeof(float);
        e->n_top = o->n_top;
    }
    e->text = p;
    if (o->text_len) memcpy(p, o->text, o->text_len);
    p[o->text_len] = '\0';
    e->text_len = o->text_len;
    p += o->text_len + 1;
    if (n_stop) {
        e->stop_reason = p;
        memcpy(p, o->stop_reason, n_stop);
        p += n_stop;
    }
    if (n_error) {
        e->error = p;
        memcpy(p, o->error, n_error);
    }
    e->choice = choice;
    e->n_tokens = (int)nt;
    e->finished = o->finished;
    e->finish_reason = o->finish_reason;
    e->stop_token = o->stop_token;
    e->n_prompt_tokens = o->n_prompt_tokens;
    e->n_output_tokens = o->n_output_tokens;
    e->n_cached_tokens = o->n_cached_tokens;
    return e;
}

static void observe_latency(sl_gen_sub *sub, const sl_output *o, double now) {
    sl_server *s = sub->gen->srv;
    if (o->n_tokens > 0 && o->index == 0) {
        if (!sub->got_first) {
            sub->got_first = 1;
            sl_server_metrics_observe(&s->metrics, &s->metrics.ttft, now - sub->gen->t_arrival);
        } else {
            double gap = (now - sub->t_last_token) / o->n_tokens;
            for (int i = 0; i < o->n_tokens; i++) sl_server_metrics_observe(&s->metrics, &s->metrics.itl, gap);
        }
        sub->t_last_token = now;
    }
    if (o->finished) {
        int r = o->error ? 0 : (int)o->finish_reason;
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.finished[r >= 0 && r < 4 ? r : 0]++;
        pthread_mutex_unlock(&s->metrics.mu);
        sl_server_metrics_observe(&s->metrics, &s->metrics.gen_len, o->n_output_tokens);
        if (o->index == 0) {
            sl_server_metrics_observe(&s->metrics, &s->metrics.e2e, now - sub->gen->t_arrival);
            sl_server_metrics_observe(&s->metrics, &s->metrics.prompt_len, sub->n_prompt);
        }
    }
}

static void on_output(const sl_output *o, void *user) {
    sl_gen_sub *sub = user;
    sl_gen *g = sub->gen;
    if (o->index < 0 || o->index >= g->n_per) return; /* not ours: never index out of the choices */
    observe_latency(sub, o, sl_now_s());
    sl_gen_event *e = event_copy(o, sub->index * g->n_per + o->index);
    pthread_mutex_lock(&g->mu);
    if (e) {
        *g->ev_tail = e;
        g->ev_tail = &e->next;
    } else {
        g->lost = 1;
    }
    int release = 0;
    if (o->finished) {
        g->n_open--;
        release = --sub->n_open == 0;
    }
    if (g->suspended && !g->conn_gone && (g->stream || g->n_open == 0)) {
        g->suspended = 0;
        MHD_resume_connection(g->conn);
    }
    int last = release && --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) gen_free(g);
}

static const char *const guide_names[] = {"none", "json", "json_object", "regex", "choice", "grammar"};

/* A text prompt in the request log: its first max_len characters (all: -1) as a JSON string, and how many
 * characters more it has. */
static void log_prompt_text(sl_server_buf *b, const char *text, int max_len) {
    size_t cut = strlen(text), chars = 0; /* cut: where character max_len starts (past it: hidden) */
    for (size_t i = 0; text[i]; i++)
        if (((unsigned char)text[i] & 0xC0) != 0x80 && max_len >= 0 && chars++ == (size_t)max_len) cut = i;
    json_t *shown = json_stringn(text, cut);
    char *quoted = shown ? json_dumps(shown, JSON_ENCODE_ANY) : NULL;
    sl_server_buf_printf(b, " %s", quoted ? quoted : "\"\"");
    if (max_len >= 0 && chars > (size_t)max_len) sl_server_buf_printf(b, " (+%zu characters)", chars - (size_t)max_len);
    sl_server_buf_puts(b, ",");
    free(quoted);
    json_decref(shown);
}

/* --enable-log-requests: the request as it went to the engine, one line (vLLM's "Received request"): each
 * prompt's text (a text prompt, or a chat's rendered one) and its token count and ids, the first
 * --max-log-len of each, then the sampling parameters the request set (the rest come from the model's
 * generation config). */
static void log_received(const sl_gen *g, const sl_sampling *p) {
    const sl_server *s = g->srv;
    sl_server_buf b = {0};
    sl_server_buf_printf(&b, "Received request %s:", g->id);
    for (int i = 0; i < g->n_subs; i++) {
        const sl_gen_sub *sub = &g->subs[i];
        const int shown = s->max_log_len < 0 || sub->n_prompt < s->max_log_len ? sub->n_prompt : s->max_log_len;
        sl_server_buf_printf(&b, "%s prompt %d:", i ? ";" : "", i);
        if (sub->log_text) log_prompt_text(&b, sub->log_text, s->max_log_len);
        sl_server_buf_printf(&b, " %d tokens [", sub->n_prompt);
        for (int j = 0; j < shown; j++) sl_server_buf_printf(&b, j ? ", %d" : "%d", (int)sub->prompt_ids[j]);
        if (shown < sub->n_prompt) sl_server_buf_printf(&b, ", ... %d more", sub->n_prompt - shown);
        sl_server_buf_puts(&b, "]");
    }
    sl_server_buf_printf(&b, "; params: n=%d", p->n);
    if (!isnan(p->temperature)) sl_server_buf_printf(&b, ", temperature=%g", p->temperature);
    if (!isnan(p->top_p)) sl_server_buf_printf(&b, ", top_p=%g", p->top_p);
    if (p->top_k != SL_UNSET) sl_server_buf_printf(&b, ", top_k=%d", p->top_k);
    if (!isnan(p->min_p)) sl_server_buf_printf(&b, ", min_p=%g", p->min_p);
    if (!isnan(p->repetition_penalty)) sl_server_buf_printf(&b, ", repetition_penalty=%g", p->repetition_penalty);
    if (!isnan(p->presence_penalty)) sl_server_buf_printf(&b, ", presence_penalty=%g", p->presence_penalty);
    if (!isnan(p->frequency_penalty)) sl_server_buf_printf(&b, ", frequency_penalty=%g", p->frequency_penalty);
    if (p->seed != SL_UNSET) sl_server_buf_printf(&b, ", seed=%lld", (long long)p->seed);
    if (p->max_tokens != SL_UNSET) sl_server_buf_printf(&b, ", max_tokens=%d", p->max_tokens);
    if (p->min_tokens > 0) sl_server_buf_printf(&b, ", min_tokens=%d", p->min_tokens);
    if (p->n_stop) sl_server_buf_printf(&b, ", stop strings=%d", p->n_stop);
    if (p->include_stop_str_in_output) sl_server_buf_printf(&b, ", include_stop_str_in_output=true");
    if (p->n_stop_token_ids) sl_server_buf_printf(&b, ", stop_token_ids=%d", p->n_stop_token_ids);
    if (p->ignore_eos) sl_server_buf_printf(&b, ", ignore_eos=true");
    if (p->logprobs >= 0) sl_server_buf_printf(&b, ", logprobs=%d", p->logprobs);
    if (p->guide.kind > SL_GUIDE_NONE && p->guide.kind <= SL_GUIDE_GRAMMAR)
        sl_server_buf_printf(&b, ", guided=%s", guide_names[p->guide.kind]);
    sl_server_buf_printf(&b, ", stream=%s", g->stream ? "true" : "false");
    if (b.data) SL_INFO("%s", b.data); /* (the buffer keeps a NUL after its bytes) */
    sl_server_buf_free(&b);
}

int sl_server_gen_submit(sl_gen *g, const sl_sampling *params, sl_err *err, int *http_status) {
    sl_server *s = g->srv;
    for (int i = 0; i < g->n_subs; i++) {
        sl_gen_sub *sub = &g->subs[i];
        sl_request r;
        sl_request_init(&r);
        r.prompt_ids = sub->prompt_ids;
        r.n_prompt_ids = sub->n_prompt;
        r.add_special_tokens = 0; /* the server tokenized already */
        r.params = *params;
        pthread_mutex_lock(&g->mu);
        g->refs++;
        g->n_open += g->n_per;
        sub->n_open = g->n_per;
        sub->submitted = 1;
        pthread_mutex_unlock(&g->mu);
        char msg[512] = "";
        int rc = sl_engine_submit(s->engine, &r, on_output, sub, &sub->engine_id, msg, sizeof msg);
        if (rc == SL_OK) continue;
        pthread_mutex_lock(&g->mu);
        g->refs--;
        g->n_open -= g->n_per;
        sub->n_open = 0;
        sub->submitted = 0;
        pthread_mutex_unlock(&g->mu);
        sl_server_gen_abort(g);
        int client_fault = rc == SL_EINVAL || rc == SL_ENOSPACE || rc == SL_ENOTSUP || rc == SL_ENOTFOUND;
        if (!client_fault && rc != SL_ENOMEM) atomic_store(&s->engine_failed, 1);
        *http_status = client_fault ? 400 : 503;
        return sl_err_set(err, rc, "%s", msg[0] ? msg : sl_strerror(rc));
    }
    if (s->log_requests) log_received(g, params);
    return SL_OK;
}

void sl_server_gen_abort(sl_gen *g) {
    for (int i = 0; i < g->n_subs; i++)
        if (g->subs[i].submitted) sl_engine_abort(g->srv->engine, g->subs[i].engine_id);
}

/* ---- the HTTP side ------------------------------------------------------------------- */

int sl_server_gen_wait(sl_gen *g, int wake_on_every_event) {
    pthread_mutex_lock(&g->mu);
    int ready = g->cancelled || g->n_open == 0 || (wake_on_every_event && g->ev_head);
    if (!ready) {
        g->suspended = 1;
        MHD_suspend_connection(g->conn);
    }
    pthread_mutex_unlock(&g->mu);
    return !ready;
}

void sl_server_gen_cancel_all(sl_server *s) {
    pthread_mutex_lock(&s->live_mu);
    for (sl_gen *g = s->live_head; g; g = g->live_next) {
        pthread_mutex_lock(&g->mu);
        g->cancelled = 1;
        if (g->suspended && !g->conn_gone) {
            g->suspended = 0;
            MHD_resume_connection(g->conn);
        }
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_unlock(&s->live_mu);
}

int sl_server_gen_count_live(sl_server *s) {
    int n = 0;
    pthread_mutex_lock(&s->live_mu);
    for (sl_gen *g = s->live_head; g; g = g->live_next) n++;
    pthread_mutex_unlock(&s->live_mu);
    return n;
}

/* ---- hang-up watcher -------------------------------------------------------------------- */

/* Aborts the generation with this key, if it is still live. The engine ids
 * are collected under the list lock and aborted outside it. */
static void abort_by_key(sl_server *s, uint64_t key) {
    uint64_t *ids = NULL;
    int n = 0, open = 0;
    char id[sizeof ((sl_gen *)0)->id] = "";
    pthread_mutex_lock(&s->live_mu);
    for (sl_gen *g = s->live_head; g; g = g->live_next) {
        if (g->key != key) continue;
        memcpy(id, g->id, sizeof id);
        pthread_mutex_lock(&g->mu); /* after live_mu, as everywhere */
        open = g->n_open;
        pthread_mutex_unlock(&g->mu);
        ids = malloc((size_t)g->n_subs * sizeof *ids);
        for (int i = 0; ids && i < g->n_subs; i++)
            if (g->subs[i].submitted) ids[n++] = g->subs[i].engine_id;
        break;
    }
    pthread_mutex_unlock(&s->live_mu);
    if (open) sl_log(s->log_requests ? SL_LOG_INFO : SL_LOG_DEBUG, "Aborted request %s: the client hung up", id);
    for (int i = 0; i < n; i++) sl_engine_abort(s->engine, ids[i]);
    free(ids);
}

static void *watch_main(void *arg) {
    sl_server *s = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(s->watch_fd, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            SL_ERROR("hang-up watcher: epoll_wait failed: %s", strerror(errno));
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) return NULL; /* the wake-up eventfd: stop */
            abort_by_key(s, evs[i].data.u64);
        }
    }
}

int sl_server_watcher_start(sl_server *s, sl_err *err) {
    s->watch_fd = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (s->watch_fd < 0 || s->wake_fd < 0)
        return sl_err_set(err, SL_EIO, "creating the hang-up watcher: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(s->watch_fd, EPOLL_CTL_ADD, s->wake_fd, &ev) != 0 ||
        pthread_create(&s->watcher, NULL, watch_main, s) != 0)
        return sl_err_set(err, SL_EIO, "starting the hang-up watcher: %s", strerror(errno));
    s->watcher_started = 1;
    return SL_OK;
}

void sl_server_watcher_stop(sl_server *s) {
    if (s->watcher_started) {
        uint64_t one = 1;
        if (write(s->wake_fd, &one, sizeof one) != (ssize_t)sizeof one) SL_WARN("waking the hang-up watcher failed");
        pthread_join(s->watcher, NULL);
        s->watcher_started = 0;
    }
    if (s->watch_fd >= 0) close(s->watch_fd);
    if (s->wake_fd >= 0) close(s->wake_fd);
    s->watch_fd = s->wake_fd = -1;
}

void sl_server_watch(sl_gen *g) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(g->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || g->srv->watch_fd < 0) return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = g->key};
    if (epoll_ctl(g->srv->watch_fd, EPOLL_CTL_ADD, ci->connect_fd, &ev) == 0) {
        g->watched = 1;
        g->watch_sock = ci->connect_fd;
    }
}

void sl_server_unwatch(sl_gen *g) {
    if (!g->watched) return;
    epoll_ctl(g->srv->watch_fd, EPOLL_CTL_DEL, g->watch_sock, NULL);
    g->watched = 0;
}
