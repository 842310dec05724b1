/* format.c -- generation outputs as OpenAI-shaped JSON: the final
 * chat.completion / text_completion bodies, the Server-Sent Events of a
 * streaming response (chat.completion.chunk / text_completion chunks ending
 * in `data: [DONE]`), usage, and both logprobs formats:
 *
 *   chat:        {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}
 *   completions: {"tokens", "token_logprobs", "top_logprobs": [{tok: lp}], "text_offset"}
 *
 * With tools (tools.c) a chat message carries the calls read out of its
 * text (tool_parser.c): `tool_calls` with ids, `content` the text outside
 * them (null when none), finish_reason "tool_calls"; streamed, each piece
 * of content or of a call is a delta (a call's first delta has its index,
 * id, type, name and "" arguments; later ones pieces of the arguments).
 *
 * All of it runs on the HTTP threads, over events the engine callback
 * queued (gen.c). */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

/* ---- token strings ------------------------------------------------------------------- */

char *sl_server_token_text(const sl_server *s, int32_t id) {
    char *text = NULL;
    size_t n = 0;
    if (s->tok && sl_tokenizer_decode(s->tok, &id, 1, false, &text, &n, NULL) == SL_OK) return text;
    free(text);
    char buf[32];
    snprintf(buf, sizeof buf, "token_id:%d", id);
    return strdup(buf);
}

static size_t utf8_code_points(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static json_t *token_bytes(const char *t) {
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)t; a && *p; p++) json_array_append_new(a, json_integer(*p));
    return a;
}

static json_t *chat_entry(const sl_server *s, int32_t id, float lp) {
    char *t = sl_server_token_text(s, id);
    json_t *e = t ? json_pack("{s:s, s:f, s:o}", "token", t, "logprob", sl_server_finite_logprob(lp), "bytes",
                              token_bytes(t))
                  : NULL;
    free(t);
    return e;
}

/* Appends the event's tokens to lp (created on first use). */
static void append_logprobs(sl_gen *g, sl_gen_choice *c, const sl_gen_event *e, json_t **lp) {
    const sl_server *s = g->srv;
    if (!e->logprobs || e->n_tokens == 0) return;
    int k = g->logprobs < e->n_top ? g->logprobs : e->n_top;
    if (g->kind == SL_GEN_CHAT) {
        if (!*lp) *lp = json_pack("{s:[]}", "content");
        json_t *content = json_object_get(*lp, "content");
        for (int i = 0; i < e->n_tokens; i++) {
            json_t *entry = chat_entry(s, e->ids[i], e->logprobs[i]);
            if (!entry) continue;
            json_t *top = json_array();
            for (int j = 0; j < k; j++)
                json_array_append_new(top, chat_entry(s, e->top_ids[i * e->n_top + j],
                                                      e->top_logprobs[i * e->n_top + j]));
            json_object_set_new(entry, "top_logprobs", top);
            json_array_append_new(content, entry);
        }
        return;
    }
    if (!*lp)
        *lp = json_pack("{s:[], s:[], s:[], s:[]}", "text_offset", "token_logprobs", "tokens", "top_logprobs");
    json_t *offsets = json_object_get(*lp, "text_offset"), *lps = json_object_get(*lp, "token_logprobs");
    json_t *tokens = json_object_get(*lp, "tokens"), *tops = json_object_get(*lp, "top_logprobs");
    for (int i = 0; i < e->n_tokens; i++) {
        char *t = sl_server_token_text(s, e->ids[i]);
        if (!t) continue;
        json_array_append_new(offsets, json_integer((json_int_t)c->text_offset));
        json_array_append_new(lps, json_real(sl_server_finite_logprob(e->logprobs[i])));
        json_array_append_new(tokens, json_string(t));
        c->text_offset += utf8_code_points(t);
        json_t *top = json_object();
        for (int j = 0; j < k; j++) {
            char *tt = sl_server_token_text(s, e->top_ids[i * e->n_top + j]);
            if (tt && !json_object_get(top, tt))
                json_object_set_new(top, tt, json_real(sl_server_finite_logprob(e->top_logprobs[i * e->n_top + j])));
            free(tt);
        }
        /* as vLLM: the sampled token is always among the top entries */
        if (!json_object_get(top, t)) json_object_set_new(top, t, json_real(sl_server_finite_logprob(e->logprobs[i])));
        free(t);
        json_array_append_new(tops, top);
    }
}

/* ---- choice state ---------------------------------------------------------------------- */

static const char *finish_name(sl_finish_reason r) {
    switch (r) {
    case SL_FINISH_STOP: return "stop";
    case SL_FINISH_LENGTH: return "length";
    case SL_FINISH_ABORT: return "abort";
    default: return NULL;
    }
}

static json_t *stop_reason_json(const sl_gen *g, const sl_gen_choice *c) {
    if (c->stop_reason) return json_string(c->stop_reason);
    int32_t eos = g->srv->tok ? sl_tokenizer_eos_id(g->srv->tok) : -1;
    if (c->stop_token >= 0 && c->stop_token != eos) return json_integer(c->stop_token);
    return json_null();
}

/* Applies what every mode needs: counts, finish, errors. */
static void apply_event(sl_gen *g, const sl_gen_event *e) {
    sl_gen_choice *c = &g->choices[e->choice];
    c->n_output += e->n_tokens;
    if (e->n_output_tokens > c->n_output) c->n_output = e->n_output_tokens;
    sl_gen_sub *sub = &g->subs[e->choice / g->n_per];
    if (e->n_cached_tokens > sub->n_cached) sub->n_cached = e->n_cached_tokens;
    if (e->error && !g->error) g->error = strdup(e->error);
    if (e->finished && !c->finished) {
        c->finished = 1;
        c->finish_reason = e->finish_reason;
        c->stop_token = e->stop_token;
        if (e->stop_reason) c->stop_reason = strdup(e->stop_reason);
        g->n_done++;
    }
}

static sl_gen_event *take_events(sl_gen *g) {
    pthread_mutex_lock(&g->mu);
    sl_gen_event *list = g->ev_head;
    g->ev_head = NULL;
    g->ev_tail = &g->ev_head;
    if (g->lost && !g->error) g->error = strdup("out of memory while queueing the output");
    pthread_mutex_unlock(&g->mu);
    return list;
}

int sl_server_gen_drain(sl_gen *g) {
    for (sl_gen_event *e = take_events(g), *next; e; e = next) {
        next = e->next;
        sl_gen_choice *c = &g->choices[e->choice];
        sl_server_buf_append(&c->text, e->text, e->text_len);
        if (g->logprobs >= 0) append_logprobs(g, c, e, &c->lp);
        apply_event(g, e);
        free(e);
    }
    return g->n_done == g->n_subs * g->n_per;
}

static json_t *usage_json(const sl_gen *g) {
    int prompt = 0, completion = 0, cached = 0;
    for (int i = 0; i < g->n_subs; i++) {
        prompt += g->subs[i].n_prompt;
        cached += g->subs[i].n_cached;
    }
    for (int i = 0; i < g->n_subs * g->n_per; i++) completion += g->choices[i].n_output;
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", prompt, "total_tokens", prompt + completion,
                     "completion_tokens", completion, "prompt_tokens_details", "cached_tokens", cached);
}

/* ---- tool calls ------------------------------------------------------------------------------ */

/* "tool_calls" when the model called tools of its own accord or as
 * "required" asked (a named function keeps the engine's reason, as vLLM). */
static const char *chat_finish_name(const sl_gen *g, const sl_gen_choice *c, int called) {
    if (called && (g->tools.mode == SL_TOOLS_AUTO || g->tools.mode == SL_TOOLS_REQUIRED)) return "tool_calls";
    return finish_name(c->finish_reason);
}

static json_t *tool_call_json(const sl_tool_call *call) {
    return json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", call->id, "type", "function", "function", "name", call->name,
                     "arguments", call->arguments);
}

/* A message's content: text (NULL: none), after echo where the request asked for it (vLLM's chat `echo`:
 * echo + (content or "")). */
static json_t *content_json(const char *echo, const char *text, size_t len) {
    if (!echo) return text ? json_stringn(text, len) : json_null();
    sl_server_buf b = {0};
    sl_server_buf_puts(&b, echo);
    if (text) sl_server_buf_append(&b, text, len);
    json_t *j = json_stringn(b.data ? b.data : "", b.len);
    sl_server_buf_free(&b);
    return j;
}

/* The reply message of a finished choice: its content (after echo, the final message's content where the
 * request asked for it and the roles match; else NULL), and the tool calls read out of it (*called: how
 * many). */
static json_t *chat_message(const sl_gen *g, const sl_gen_choice *c, const char *echo, int *called) {
    const char *text = c->text.data ? c->text.data : "";
    *called = 0;
    if (g->tools.mode == SL_TOOLS_NONE)
        return json_pack("{s:s, s:o, s:[]}", "role", g->role, "content", content_json(echo, text, c->text.len),
                         "tool_calls");
    sl_tool_result r;
    if (sl_tool_parse(g->tools.format, g->tools.function, g->tools.first_only, text, c->text.len, &r)) return NULL;
    json_t *calls = json_array();
    for (int i = 0; calls && i < r.n_calls; i++) json_array_append_new(calls, tool_call_json(&r.calls[i]));
    json_t *content = content_json(echo, r.content, r.content_len);
    *called = r.n_calls;
    sl_tool_result_free(&r);
    return json_pack("{s:s, s:o, s:o}", "role", g->role, "content", content, "tool_calls", calls);
}

/* One streamed piece of content or of a tool call, as a chat delta. */
static json_t *tool_delta_json(const sl_tool_delta *d) {
    switch (d->kind) {
    case SL_TOOL_DELTA_CONTENT: return json_pack("{s:s#}", "content", d->text, d->n);
    case SL_TOOL_DELTA_CALL:
        return json_pack("{s:[{s:i, s:s, s:s, s:{s:s#, s:s}}]}", "tool_calls", "index", d->call, "id", d->id, "type",
                         "function", "function", "name", d->text, d->n, "arguments", "");
    case SL_TOOL_DELTA_ARGS:
        return json_pack("{s:[{s:i, s:{s:s#}}]}", "tool_calls", "index", d->call, "function", "arguments", d->text,
                         d->n);
    }
    return NULL;
}

/* ---- the final body ------------------------------------------------------------------------ */

json_t *sl_server_gen_final_json(sl_gen *g) {
    json_t *choices = json_array();
    for (int i = 0; i < g->n_subs * g->n_per; i++) {
        sl_gen_choice *c = &g->choices[i];
        const char *fr = finish_name(c->finish_reason);
        json_t *lp = c->lp ? json_incref(c->lp) : json_null();
        json_t *choice;
        if (g->kind == SL_GEN_CHAT) {
            int called;
            json_t *message = chat_message(g, c, g->subs[i / g->n_per].echo_text, &called);
            choice = json_pack("{s:i, s:o, s:o, s:s?, s:o}", "index", i, "message", message, "logprobs", lp,
                               "finish_reason", chat_finish_name(g, c, called), "stop_reason", stop_reason_json(g, c));
        } else {
            sl_server_buf text = {0};
            const char *echo = g->echo ? g->subs[i / g->n_per].echo_text : NULL;
            if (echo) sl_server_buf_puts(&text, echo);
            sl_server_buf_append(&text, c->text.data ? c->text.data : "", c->text.len);
            choice = json_pack("{s:i, s:s#, s:o, s:s?, s:o, s:n}", "index", i, "text", text.data ? text.data : "",
                               text.len, "logprobs", lp, "finish_reason", fr, "stop_reason", stop_reason_json(g, c),
                               "prompt_logprobs");
            sl_server_buf_free(&text);
        }
        json_array_append_new(choices, choice);
    }
    json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", g->id, "object",
                             g->kind == SL_GEN_CHAT ? "chat.completion" : "text_completion", "created",
                             (json_int_t)g->created, "model", g->srv->model_name, "choices", choices, "usage",
                             usage_json(g));
    if (body && g->kind == SL_GEN_CHAT) json_object_set_new(body, "prompt_logprobs", json_null());
    return body;
}

/* ---- streaming ------------------------------------------------------------------------------- */

static json_t *chunk_base(const sl_gen *g) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", g->id, "object",
                     g->kind == SL_GEN_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)g->created, "model", g->srv->model_name);
}

static void sse_put(sl_gen *g, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) return;
    sl_server_buf_puts(&g->out, "data: ");
    sl_server_buf_puts(&g->out, text);
    sl_server_buf_puts(&g->out, "\n\n");
    free(text);
}

static void put_chunk(sl_gen *g, json_t *choice) {
    json_t *chunk = chunk_base(g);
    json_object_set_new(chunk, "choices", json_pack("[o]", choice));
    if (g->continuous_usage) json_object_set_new(chunk, "usage", usage_json(g));
    sse_put(g, chunk);
}

static void stream_start(sl_gen *g) {
    for (int i = 0; i < g->n_subs * g->n_per; i++) {
        if (g->kind == SL_GEN_CHAT && g->tools.mode != SL_TOOLS_NONE) /* NULL (out of memory): plain text */
            g->choices[i].tool_stream = sl_tool_stream_new(g->tools.format, g->tools.function, g->tools.first_only);
        if (g->kind == SL_GEN_CHAT) {
            put_chunk(g, json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", i, "delta", "role", g->role,
                                   "content", "", "logprobs", "finish_reason"));
        } else if (g->echo && g->subs[i / g->n_per].echo_text) {
            put_chunk(g, json_pack("{s:i, s:s, s:n, s:n, s:n}", "index", i, "text", g->subs[i / g->n_per].echo_text,
                                   "logprobs", "finish_reason", "stop_reason"));
        }
    }
    /* chat's echo (vLLM's order): every choice's role first, then every choice's echoed content */
    const char *echo = g->kind == SL_GEN_CHAT ? g->subs[0].echo_text : NULL; /* set only when asked for */
    for (int i = 0; echo && *echo && i < g->n_subs * g->n_per; i++)
        put_chunk(g, json_pack("{s:i, s:{s:s}, s:n, s:n}", "index", i, "delta", "content", echo, "logprobs",
                               "finish_reason"));
    g->stream_started = 1;
}

/* With tools, a chat event's text goes through the choice's tool reader:
 * one chunk per piece of content or of a call, then the finish. */
static void stream_tool_event(sl_gen *g, sl_gen_choice *c, const sl_gen_event *e, json_t *lp) {
    const sl_tool_delta *d;
    int n = 0;
    if (sl_tool_stream_feed(c->tool_stream, e->text, e->text_len, e->finished, &d, &n))
        sse_put(g, sl_server_error_json(500, NULL, "out of memory reading tool calls"));
    for (int i = 0; i < n; i++) {
        put_chunk(g, json_pack("{s:i, s:o, s:o, s:n}", "index", e->choice, "delta", tool_delta_json(&d[i]), "logprobs",
                               lp ? lp : json_null(), "finish_reason"));
        lp = NULL; /* the event's logprobs go with its first chunk */
    }
    if (!e->finished && !lp) return;
    const char *fr = e->finished ? chat_finish_name(g, c, sl_tool_stream_calls(c->tool_stream)) : NULL;
    json_t *choice = json_pack("{s:i, s:{}, s:o, s:s?}", "index", e->choice, "delta", "logprobs",
                               lp ? lp : json_null(), "finish_reason", fr);
    if (choice && e->finished) json_object_set_new(choice, "stop_reason", stop_reason_json(g, c));
    put_chunk(g, choice);
}

static void stream_event(sl_gen *g, const sl_gen_event *e) {
    sl_gen_choice *c = &g->choices[e->choice];
    json_t *lp = NULL;
    if (g->logprobs >= 0) append_logprobs(g, c, e, &lp);
    apply_event(g, e);
    if (e->error) {
        sse_put(g, sl_server_error_json(500, NULL, e->error));
        json_decref(lp);
        return;
    }
    if (c->tool_stream) {
        stream_tool_event(g, c, e, lp);
        return;
    }
    if (e->text_len == 0 && !e->finished && !lp) return;
    const char *fr = e->finished ? finish_name(c->finish_reason) : NULL;
    json_t *choice;
    if (g->kind == SL_GEN_CHAT) {
        json_t *delta = e->text_len ? json_pack("{s:s#}", "content", e->text, e->text_len) : json_object();
        choice = json_pack("{s:i, s:o, s:o, s:s?}", "index", e->choice, "delta", delta, "logprobs",
                           lp ? lp : json_null(), "finish_reason", fr);
    } else {
        choice = json_pack("{s:i, s:s#, s:o, s:s?}", "index", e->choice, "text", e->text, e->text_len, "logprobs",
                           lp ? lp : json_null(), "finish_reason", fr);
    }
    if (choice && (e->finished || g->kind == SL_GEN_COMPLETION))
        json_object_set_new(choice, "stop_reason", e->finished ? stop_reason_json(g, c) : json_null());
    put_chunk(g, choice);
}

static void stream_end(sl_gen *g, int complete) {
    if (!complete) sse_put(g, sl_server_error_json(503, NULL, "the server is shutting down; the request was aborted"));
    if (g->include_usage) {
        json_t *chunk = chunk_base(g);
        json_object_set_new(chunk, "choices", json_array());
        json_object_set_new(chunk, "usage", usage_json(g));
        sse_put(g, chunk);
    }
    sl_server_buf_puts(&g->out, "data: [DONE]\n\n");
    g->stream_ended = 1;
}

/* Formats what is queued into g->out; returns 1 when every choice is done. */
static int stream_drain(sl_gen *g) {
    for (sl_gen_event *e = take_events(g), *next; e; e = next) {
        next = e->next;
        stream_event(g, e);
        free(e);
    }
    return g->n_done == g->n_subs * g->n_per;
}

ssize_t sl_server_gen_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    sl_gen *g = cls;
    (void)pos;
    for (;;) {
        if (g->out_pos < g->out.len) {
            size_t n = g->out.len - g->out_pos < max ? g->out.len - g->out_pos : max;
            memcpy(buf, g->out.data + g->out_pos, n);
            g->out_pos += n;
            if (g->out_pos == g->out.len) g->out.len = g->out_pos = 0;
            return (ssize_t)n;
        }
        if (g->stream_ended) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!g->stream_started) {
            stream_start(g);
            continue;
        }
        int done = stream_drain(g);
        if (g->out.len) continue;
        pthread_mutex_lock(&g->mu);
        int cancelled = g->cancelled;
        pthread_mutex_unlock(&g->mu);
        if (done || cancelled) {
            stream_end(g, done);
            continue;
        }
        if (sl_server_gen_wait(g, 1)) return 0;
    }
}

void sl_server_gen_stream_free(void *cls) { sl_server_gen_release(cls); }
